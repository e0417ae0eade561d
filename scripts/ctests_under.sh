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

# One sub-test: PROG SUBTEST; writes OUTDIR/logs/PROG.SUBTEST.{out,status}.
run_one() {
    local prog=$1 sub=$2 tmp status=0 log wrapper
    log=$OUTDIR/logs/$prog.$sub
    tmp=$(mktemp -d "/tmp/ss-$NAME-XXXXXX")
    wrapper=${WRAPPER//%LOG%/$log}
    # shellcheck disable=SC2086 # the wrapper is a command line
    SS_TEST_TMPDIR=$tmp SS_ACCEPT_TMPDIR=$tmp timeout --kill-after=5 "$TIMEOUT" \
        $wrapper "$OUTDIR/$prog" "$sub" >"$log.out" 2>&1 || status=$?
    if ((status == 0)) && ! grep -qx "ok $sub" "$log.out"; then
        status=97 # exited 0 without reporting success
    fi
    if ((status == 0)) && [[ -n $(ls -A "$tmp") ]]; then
        status=98 # left files behind
    fi
    rm -rf "$tmp"
    echo "$status" >"$log.status"
}
export -f run_one
export NAME OUTDIR TIMEOUT WRAPPER

start=$SECONDS
for prog in "$@"; do
    "$OUTDIR/$prog" --list | sed "s/^/$prog /"
done | while read -r prog sub; do
    [[ " ${SKIP:-} " == *" $prog.$sub "* ]] || echo "$prog $sub"
done | xargs -P "$JOBS" -L 1 bash -c 'run_one "$0" "$1"'

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
        98) why="left files in its temporary directory" ;;
        *) why="exit status $s" ;;
        esac
        echo "$NAME: FAILED ${base##*/} ($why): see $base.out" >&2
    fi
done
echo "$NAME: $runs sub-tests of $# programs, $failed failed, in $((SECONDS - start)) s"
((runs > 0)) || { echo "$NAME: no sub-test ran" >&2; exit 1; }
((failed == 0))
