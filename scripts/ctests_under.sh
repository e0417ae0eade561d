#!/usr/bin/env bash
# scripts/ctests_under.sh: compiles C test programs from tests/c/ against a
# given build of the library and runs every sub-test of each (its --list)
# under a wrapper command, each in a fresh temporary directory with a hard
# timeout, two at a time. What `make valgrind` and `make sanitize` share.
#
#   scripts/ctests_under.sh NAME LIBDIR OUTDIR TIMEOUT "CFLAGS" "WRAPPER" PROG...
#
#   NAME     prefix of every message
#   LIBDIR   directory holding the libsocketserver.so to link and run with
#   OUTDIR   where programs and per-run logs go
#   TIMEOUT  seconds per sub-test
#   CFLAGS   extra compiler flags (e.g. -fsanitize=address)
#   WRAPPER  command put in front of each run ("" for none); "%LOG%" in it
#            is replaced by the run's own log path prefix
#   PROG     program names (tests/c/PROG.c)
#
# $LINK_FLAGS, when set, replaces CFLAGS at link time (with $LINKER, default
# $CC): for a sanitizer runtime other than the compiler's own.
# $SKIP: "PROG.SUBTEST ..." not to run (say why where you set it).
# $BATCH=N: run up to N sub-tests of a program per process (--fork-each in
# tests/c/testutil.h: each in a forked child, judged the same way), for a
# wrapper whose start is slow (valgrind: about a second). A wrapper log
# named from %LOG% is renamed to the sub-test's (PROG.SUBTEST...PID); the
# batch's own is BATCHLOG.runner...PID, where BATCHLOG is
# OUTDIR/logs/PROG.batch-FIRSTSUBTEST.
# Prints one line per failure and a summary; exit status 1 if any sub-test
# failed (its output is in OUTDIR/logs/PROG.SUBTEST.*).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NAME=$1 LIBDIR=$2 OUTDIR=$3 TIMEOUT=$4 EXTRA_CFLAGS=$5 WRAPPER=$6
shift 6
CC=${CC:-cc}
# tests/common/mod.rs's C_FLAGS: the flags the C tests are always built with.
FLAGS=(-std=c99 -Wall -Wextra -Wpedantic -Werror -g -D_GNU_SOURCE)
JOBS=${JOBS:-2}

command -v "$CC" >/dev/null 2>&1 || { echo "$NAME: the C compiler '$CC' is not installed" >&2; exit 1; }
[[ -f $LIBDIR/libsocketserver.so ]] || { echo "$NAME: $LIBDIR/libsocketserver.so is missing" >&2; exit 1; }
mkdir -p "$OUTDIR/logs"
rm -f "$OUTDIR"/logs/*

LINK_FLAGS=${LINK_FLAGS-$EXTRA_CFLAGS}
for prog in "$@"; do
    # shellcheck disable=SC2086 # the flags are lists of flags
    "$CC" "${FLAGS[@]}" $EXTRA_CFLAGS -Iinclude -Itests/c -c "tests/c/$prog.c" -o "$OUTDIR/$prog.o"
    # shellcheck disable=SC2086
    "${LINKER:-$CC}" -g "$OUTDIR/$prog.o" -o "$OUTDIR/$prog" $LINK_FLAGS \
        -L"$LIBDIR" -lsocketserver -Wl,-rpath,"$(cd "$LIBDIR" && pwd)" -lpthread
done

# judge LOG SUBTEST STATUS TMPDIR: writes the sub-test's verdict to
# LOG.status (its output is LOG.out) and removes its temporary directory.
judge() {
    local log=$1 sub=$2 status=$3 tmp=$4
    if ((status == 0)) && ! grep -qx "ok $sub" "$log.out"; then
        status=97 # exited 0 without reporting success
    fi
    if ((status == 0)) && [[ -n $(ls -A "$tmp") ]]; then
        status=98 # left files behind
    fi
    [[ $tmp == - ]] || rm -rf "$tmp"
    echo "$status" >"$log.status"
}

# One sub-test: PROG SUBTEST; writes OUTDIR/logs/PROG.SUBTEST.{out,status}.
run_one() {
    local prog=$1 sub=$2 tmp status=0 log wrapper
    log=$OUTDIR/logs/$prog.$sub
    tmp=$(mktemp -d "/tmp/ss-$NAME-XXXXXX")
    wrapper=${WRAPPER//%LOG%/$log}
    # shellcheck disable=SC2086 # the wrapper is a command line
    SS_TEST_TMPDIR=$tmp SS_ACCEPT_TMPDIR=$tmp timeout --kill-after=5 "$TIMEOUT" \
        $wrapper "$OUTDIR/$prog" "$sub" >"$log.out" 2>&1 || status=$?
    judge "$log" "$sub" "$status" "$tmp"
}

# Sub-tests of one program in one process: PROG SUBTEST...; writes what
# run_one does for each.
run_batch() {
    local prog=$1 batch status=0 wrapper sub pid st tmp f
    shift
    batch=$OUTDIR/logs/$prog.batch-$1
    wrapper=${WRAPPER//%LOG%/$batch}
    # shellcheck disable=SC2086 # the wrapper is a command line
    timeout --kill-after=5 $((TIMEOUT * $# + 30)) $wrapper "$OUTDIR/$prog" --fork-each \
        "$TIMEOUT" "$OUTDIR/logs/$prog" "$@" >"$batch.runner.out" 2>&1 || status=$?
    while read -r sub pid st tmp ms; do
        [[ -n $ms ]] || continue # not a result line: the runner's own message
        for f in "$batch".*."$pid"; do
            [[ -e $f ]] || continue
            if [[ $sub == runner ]]; then
                mv "$f" "$batch.runner${f#"$batch"}"
            else
                mv "$f" "$OUTDIR/logs/$prog.$sub${f#"$batch"}"
            fi
        done
        [[ $sub == runner ]] && continue
        judge "$OUTDIR/logs/$prog.$sub" "$sub" "$st" "$tmp"
        echo "$ms" >"$OUTDIR/logs/$prog.$sub.ms"
    done < <(sed -n -e 's/^runner \([0-9]*\)$/runner \1 0 - 0/p' -e t -e '/^[^ ]* [0-9]* [0-9]* [^ ]* [0-9]*$/p' "$batch.runner.out")
    for sub in "$@"; do
        if [[ ! -e $OUTDIR/logs/$prog.$sub.status ]]; then
            echo "the batch's runner ended (status $status) before this sub-test did: see $batch.runner.out" \
                >>"$OUTDIR/logs/$prog.$sub.out"
            echo 96 >"$OUTDIR/logs/$prog.$sub.status"
        fi
    done
}
export -f judge run_one run_batch
export NAME OUTDIR TIMEOUT WRAPPER

start=$SECONDS
for prog in "$@"; do
    "$OUTDIR/$prog" --list | sed "s/^/$prog /"
done | while read -r prog sub; do
    [[ " ${SKIP:-} " == *" $prog.$sub "* ]] || echo "$prog $sub"
done | if [[ -n ${BATCH:-} ]]; then
    # "PROG SUB SUB ..." lines of at most $BATCH sub-tests.
    awk -v n="$BATCH" '$1 != prog || count == n { if (line) print line; line = $1; prog = $1; count = 0 }
        { line = line " " $2; count++ } END { if (line) print line }' |
        xargs -P "$JOBS" -L 1 bash -c 'run_batch "$@"' run_batch
else
    xargs -P "$JOBS" -L 1 bash -c 'run_one "$0" "$1"'
fi

runs=0 failed=0
for st in "$OUTDIR"/logs/*.status; do
    runs=$((runs + 1))
    s=$(cat "$st")
    if [[ $s != 0 ]]; then
        failed=$((failed + 1))
        base=${st%.status}
        case $s in
        124 | 137) why="timed out after ${TIMEOUT}s" ;;
        97) why="exited 0 without printing 'ok'" ;;
        96) why="not run to its end: its batch's runner ended first" ;;
        98) why="left files in its temporary directory" ;;
        *) why="exit status $s" ;;
        esac
        echo "$NAME: FAILED ${base##*/} ($why): see $base.out" >&2
    fi
done
echo "$NAME: $runs sub-tests of $# programs, $failed failed, in $((SECONDS - start)) s"
if [[ -n ${BATCH:-} ]]; then
    # Where the time goes (BATCH's runners time each sub-test).
    for f in "$OUTDIR"/logs/*.ms; do
        [[ -e $f ]] && echo "$(cat "$f") $(basename "$f" .ms)"
    done | sort -rn | awk '{ total += $1 } NR <= 5 { slow = slow sprintf(" %s %.1fs", $2, $1 / 1000) }
        END { printf "'"$NAME"': %.0f s in sub-tests; slowest:%s\n", total / 1000, slow }'
fi
((runs > 0)) || { echo "$NAME: no sub-test ran" >&2; exit 1; }
((failed == 0))
