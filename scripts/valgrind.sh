#!/usr/bin/env bash
# make valgrind: memcheck over the C test programs and the examples under
# traffic. Fails on any invalid read or write (or other memcheck error) in
# any process, and on any byte definitely lost in a program that exits
# normally; suppressions in scripts/valgrind.supp (each says why).
#
# 1. Every sub-test of every tests/c/*.c program (scripts/ctests_under.sh),
#    two at a time, 300 s each at most, logs in build/valgrind/logs/; up to
#    8 sub-tests of a program per valgrind process, each in a forked child
#    (BATCH: valgrind takes about a second to start, a fork milliseconds).
# 2. tests/fuzz_loopback.rs with each example server run under valgrind
#    (fewer hostile connections), logs in build/valgrind/examples/.
#
# Forked children: a child inherits only the forking thread, so memory that
# the parent's other threads referenced (their stacks, thread-locals) is
# unreachable there and memcheck calls it "definitely lost" when the child
# exits. That is the fork, not a leak: in a forked child only memcheck's
# errors count (invalid access, uninitialised values, bad frees), not leaks.
#
# Builds nothing: run it through `make valgrind`, which builds first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v valgrind >/dev/null 2>&1; then
    echo "valgrind: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
fi
OUT=build/valgrind
SUPP=scripts/valgrind.supp
VG=(valgrind --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite
    --num-callers=40 --suppressions="$SUPP")
start=$SECONDS

# Logs found bad by check_logs, shown again at the end (CI shows the tail).
BAD_LOGS=()

# check_logs DIR: every valgrind log in DIR (NAME.vg.PID); a log whose
# parent process also has a log there is a forked child's, unless the parent
# is a batch's runner (NAME.runner.vg.PID: single-threaded, it forks one
# child per sub-test, whose memory is then its own).
check_logs() {
    local dir=$1 bad=0 f pid ppid
    declare -A pids=()
    for f in "$dir"/*.vg.*; do
        [[ -e $f && $f != *.runner.vg.* ]] || continue
        pids[${f##*.}]=1
    done
    for f in "$dir"/*.vg.*; do
        [[ -e $f ]] || continue
        ppid=$(sed -n 's/^==[0-9]*== Parent PID: \([0-9]*\)$/\1/p' "$f")
        if [[ -n $ppid && -n ${pids[$ppid]:-} ]]; then
            # A forked child: errors, not leaks.
            if grep -qE '== (Invalid (read|write|free)|Mismatched free|Conditional jump or move depends on uninitialised|Use of uninitialised|Syscall param|Source and destination overlap|Argument .* of function .* has a fishy)' "$f"; then
                echo "valgrind: memory error in a forked child: $f" >&2
                BAD_LOGS+=("$f")
                bad=1
            fi
        elif ! grep -q '== ERROR SUMMARY: 0 errors' "$f"; then
            if grep -q '== ERROR SUMMARY:' "$f"; then
                echo "valgrind: errors (or definite leaks) in $f" >&2
            else
                # Killed or exec'd before the summary: nothing was checked.
                echo "valgrind: no error summary (the process did not exit normally): $f" >&2
            fi
            BAD_LOGS+=("$f")
            bad=1
        fi
    done
    return $bad
}

status=0
# Upper bounds on durations in the C tests stretch by this (tu_time_scale).
export TU_TIME_SCALE=5
# Not run under valgrind, each for a reason valgrind itself causes:
# - hooks.accept_error counts reports over a 450 ms window, and
#   acceptance_handoff.handoff_thread_from_forking needs a fast request to
#   overtake a slow one by a margin: both measure time, which valgrind's
#   20-50x slowdown distorts.
# - hardening_blockio.dgram_flood_forking needs the server to drain a flood
#   about as fast as a client sends it.
# - hardening_lifecycle.pid_reuse tests reaping through a pidfd, and
#   valgrind 3.19 does not implement pidfd_open ("unhandled syscall: 434"):
#   the library then falls back to reaping by pid, whose limit that test
#   demonstrates.
# - hardening_lifecycle.child_getters calls into the library from forked
#   children while other threads of the parent allocate: valgrind's
#   allocator (like gcc 12's libasan, see scripts/sanitize.sh) is not
#   fork-safe, where glibc's malloc is: a child can hang in it.
# - review_core.spawn_fails and event_spawn_fails lower RLIMIT_AS so that
#   a thread stack cannot be mapped; valgrind's own address-space reservations do not fit it.
# - hardening_accept.emfile_came_free_sync/event catch the shed's close(2)
#   of the pending connection. Under valgrind the kernel's limit is
#   valgrind's, higher than the program's: the first accept succeeds above
#   the program's limit, and valgrind closes that descriptor itself and
#   returns EMFILE. Nothing is left pending for the shed, so the hook never
#   runs.
BATCH=8 SKIP="hardening_accept.emfile_came_free_sync hardening_accept.emfile_came_free_event hooks.accept_error acceptance_handoff.handoff_thread_from_forking hardening_blockio.dgram_flood_forking hardening_lifecycle.pid_reuse hardening_lifecycle.child_getters review_core.spawn_fails review_core.event_spawn_fails" \
    scripts/ctests_under.sh valgrind "${SS_LIB_DIR:-target/release}" "$OUT" 300 "" \
    "${VG[*]} --log-file=%LOG%.vg.%p" \
    $(cd tests/c && ls -- *.c | sed 's/\.c$//') || status=1
check_logs "$OUT/logs" || status=1
echo "valgrind: C tests done at $((SECONDS - start)) s"

rm -rf "$OUT/examples"
mkdir -p "$OUT/examples"
SS_FUZZ_WRAPPER="${VG[*]} --log-file=$PWD/$OUT/examples/server.vg.%p" SS_FUZZ_CONNECTIONS=200 \
    cargo test --release --test fuzz_loopback -- --test-threads=2 || status=1
check_logs "$OUT/examples" || status=1
n=$(find "$OUT/examples" -name 'server.vg.*' | wc -l)
((n > 0)) || { echo "valgrind: no example server ran under valgrind" >&2; status=1; }
echo "valgrind: $n example server processes checked"

# What failed, last: the sub-tests that failed (with their output's tail)
# and the first report of each bad log.
report_failures() {
    local st base f
    for st in "$OUT"/logs/*.status; do
        [[ -e $st && $(cat "$st") != 0 ]] || continue
        base=${st%.status}
        echo "valgrind: sub-test ${base##*/} failed (status $(cat "$st")); its output ends:"
        tail -n 12 "$base.out" | sed 's/^/    /'
    done
    for f in "${BAD_LOGS[@]}"; do
        echo "valgrind: $f:"
        grep -v -E '^==[0-9]+== *$' "$f" | grep -m 1 -A 24 -E '== (Invalid|Mismatched|Conditional|Use of|Syscall param|Source and|Argument|[0-9,]+ bytes in [0-9,]+ blocks are definitely)' |
            sed 's/^/    /' || tail -n 8 "$f" | sed 's/^/    /'
    done
}

if ((status == 0)); then
    echo "valgrind: clean (no memory error, 0 bytes definitely lost) in $((SECONDS - start)) s"
else
    report_failures >&2
    echo "valgrind: FAILED (logs in $OUT/) after $((SECONDS - start)) s" >&2
fi
exit $status
