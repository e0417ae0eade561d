# scripts/listening.sh: the one way our scripts start a server in the
# background and wait for it to say where it listens. Sourced, not run.
#
#   launch OUT ERR CMD...
#       runs CMD in the background, stdout to the file OUT and stderr to ERR,
#       and sets LAUNCHED_PID. Both files are emptied here, before CMD runs:
#       the shell's child opens its redirections only once it is scheduled,
#       and until then a poll of a reused OUT finds the last server's line
#       (the demo once connected to the previous server's port that way).
#
#   listening_address OUT PID SECONDS
#       waits (SECONDS at most) until the file OUT holds a complete line
#       "listening on ADDRESS" and prints ADDRESS: status 0. Status 1 if PID
#       exits first, 2 if the time runs out. OUT need not exist yet (a
#       server started other than with launch may not have opened it), and
#       a line still being written (no newline yet) is not taken.

launch() {
    local out=$1 err=$2
    shift 2
    : >"$out"
    : >"$err"
    "$@" >>"$out" 2>>"$err" &
    LAUNCHED_PID=$!
}

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
