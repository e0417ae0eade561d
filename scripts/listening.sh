# scripts/listening.sh: the one way our scripts wait for a server they started
# in the background to say where it listens. Sourced, not run.
#
#   listening_address OUT PID SECONDS
#       waits (SECONDS at most) until the file OUT holds a complete line
#       "listening on ADDRESS" and prints ADDRESS: status 0. Status 1 if PID
#       exits first, 2 if the time runs out. OUT need not exist yet: after
#       `server >OUT &` the shell's child may not have opened OUT by the time
#       the caller polls, and that is not a failure. A line still being
#       written (no newline yet) is not taken.

listening_address() {
    local out=$1 pid=$2 seconds=$3 line i exited=0
    for ((i = 0; i <= seconds * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || exited=1
        if [[ -e $out ]]; then
            while IFS= read -r line; do
                if [[ $line == "listening on "* ]]; then
                    printf '%s\n' "${line#listening on }"
                    return 0
                fi
            done <"$out"
        fi
        # Checked before the read, so that a server that printed its line
        # and then exited is still found.
        ((exited == 0)) || return 1
        ((i == seconds * 20)) || sleep 0.05
    done
    return 2
}
