#!/usr/bin/env bash
# The benchmarks (`make bench`): every concurrency mode of libsocketserver
# (c_examples/echo_server, http_hello, resp_server) beside its hand-written
# C equivalent and beside Python's socketserver, on loopback only, and one
# table of ratios ours/reference at the end, also written with the
# machine's description to benches/results/<date>.md.
#
# The references (benches/, see benches/README.md):
#   epoll1/epoll2   ref_epoll_echo: single-threaded non-blocking epoll echo
#                   (--threads 2 --balance exclusive: two loops on one
#                   listener with EPOLLEXCLUSIVE, as the event mode does);
#                   TCP or --unix
#   libevent        ref_libevent_echo: libevent bufferevent echo (built when
#                   `pkg-config libevent` finds libevent-dev; otherwise its
#                   rows say it was skipped)
#   cthread/cfork/citer  ref_blocking_echo --model thread|fork|iterative:
#                   a thread / a process per connection, one at a time
#   cfork-lib       cfork with libsocketserver.so (and so libgcc_s) loaded
#                   by LD_PRELOAD but never called: what a process per
#                   connection costs more when its program maps the library
#   cudp            ref_udp_echo: blocking recvfrom/sendto loop
#   py-*            benches/py_echo.py: TCPServer, ThreadingTCPServer,
#                   ForkingTCPServer (max_children 100), UDPServer,
#                   ThreadingUnixStreamServer, ThreadingHTTPServer
#   nginx/nginx2    one / two workers returning a fixed body (its own
#                   temporary prefix, config, pid and logs)
#   redis-server    no persistence, its own temporary directory
#
# Cases (BENCH_ONLY takes a space-separated subset of these names):
#   tcp50      TCP, 50 persistent connections, 64 B: event 1 and 2 loops,
#              threading, forking (--max-children 60) vs their references
#   tcp50pin   the same, client pinned to the last CPU (taskset): event 1
#              and 2 loops, C epoll 1 loop and 2 loops on SO_REUSEPORT
#   churn      TCP, a new connection per request, 50 at once, client source
#              addresses spread over 127.0.0.1-127.0.0.32
#   tcp500     TCP, 500 persistent connections, event vs epoll
#   big        TCP, 64 KiB messages, 16 connections, event vs epoll
#   udp1 udp50 UDP at 1 and 50 clients: sync and event vs the C loop
#   unix50     Unix stream, 50 persistent: event vs epoll, threading vs Python
#   unixchurn  Unix stream, a new connection per request: event vs epoll
#   http       wrk -t1 -c50 --latency: http_hello event 1 and 2 loops and
#              threading vs nginx (1 worker; 2 loops also vs 2 workers)
#              and ThreadingHTTPServer
#   resp       resp_server vs redis-server under redis-benchmark -t
#              ping,set,get -c 50, at -P 1 and -P 16
#   instr      user-space instructions per request under callgrind
#              (tcp50: event and threading; udp50: event and sync), each
#              beside its C reference
#   memory     RSS bytes per idle connection, BENCH_IDLE (10000) of them,
#              event mode vs the epoll reference
#   shutdown   ss_server_shutdown() to serve_forever returning, per mode
#              (benches/shutdown_latency.c)
#
# Within a case the servers alternate round by round (BENCH_ROUNDS rounds:
# every server once per round, each run on a freshly started server), so
# that drift in the machine's load hits all alike; the table gives the
# median of the rounds. Every run also records the server's CPU time per
# request (user + system of the whole process; robust against other load
# on the machine, unlike req/s): the table's CPU ratio (not for forking
# servers, whose children's time is not all accounted to the parent).
#
# Knobs (environment): BENCH_ROUNDS (3), BENCH_DURATION (s per run, 1.5),
# BENCH_WARMUP (s, 0.5), BENCH_IDLE (10000), BENCH_RESP_ROUNDS (3),
# BENCH_RESP_REQUESTS (50000 at -P 1, 4x at -P 16), BENCH_ONLY (cases),
# BENCH_QUICK=1 (1 round of 0.5 s, fewer idle connections and requests: a
# smoke test of the harness, figures meaningless), BENCH_RESULTS (where to
# write the table; default benches/results/<UTC date>.md for a full run,
# build/bench-results.md for a partial or quick one), BENCH_STRICT=1 (exit
# 1 when a goal is missed; by default only failures — a wrong echo, a
# server that dies or does not exit 0 on SIGTERM — do).
#
# Builds what is missing or stale. Every wait and every run is bounded
# (timeout); every process started here is stopped, and its temporary
# files removed, however the script ends. About 7 minutes on 2 cores.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/listening.sh
source scripts/listening.sh
ROOT=$PWD

QUICK=${BENCH_QUICK:-0}
if ((QUICK)); then
    DURATION=${BENCH_DURATION:-0.5}
    WARMUP=${BENCH_WARMUP:-0.2}
    ROUNDS=${BENCH_ROUNDS:-1}
    IDLE=${BENCH_IDLE:-2000}
    RESP_ROUNDS=${BENCH_RESP_ROUNDS:-1}
    RESP_N=${BENCH_RESP_REQUESTS:-10000}
    SHUTDOWN_ROUNDS=5
else
    DURATION=${BENCH_DURATION:-1.5}
    WARMUP=${BENCH_WARMUP:-0.5}
    ROUNDS=${BENCH_ROUNDS:-3}
    IDLE=${BENCH_IDLE:-10000}
    RESP_ROUNDS=${BENCH_RESP_ROUNDS:-3}
    RESP_N=${BENCH_RESP_REQUESTS:-50000}
    SHUTDOWN_ROUNDS=20
fi
ALL_CASES="tcp50 tcp50pin churn tcp500 big udp1 udp50 unix50 unixchurn instr http resp memory shutdown"
ONLY=${BENCH_ONLY:-$ALL_CASES}
STRICT=${BENCH_STRICT:-0}
CC=${CC:-cc}
NOFILE=65536
if [[ -n ${BENCH_RESULTS:-} ]]; then
    RESULTS=$BENCH_RESULTS
elif ((QUICK)) || [[ $ONLY != "$ALL_CASES" ]]; then
    RESULTS=build/bench-results.md
else
    RESULTS=benches/results/$(date -u +%Y-%m-%d).md
fi

# The library's directory: the Makefile passes its own (BUILD,
# CARGO_TARGET_DIR) as SS_LIB_DIR.
LIB_DIR=${SS_LIB_DIR:-target/release}
LIB=$LIB_DIR/libsocketserver.so
ECHO=build/echo_server
LOADGEN=build/loadgen
IDLER=build/idle_conns
HTTP=build/http_hello
RESP=build/resp_server
PY=${PYTHON:-python3}

wanted() { [[ " $ONLY " == *" $1 "* ]]; }

# What the load generator runs under (see tcp50pin).
CLIENT_WRAP=()

# ------------------------------------------------------------------ build

mkdir -p build
if [[ ! -f $LIB ]]; then
    echo "bench: building the library (cargo build --release)"
    cargo build --release
fi
LIB_ABS=$(cd "$LIB_DIR" && pwd)
# build_example NAME: c_examples/NAME.c -> build/NAME when stale (a
# failed build leaves it missing: its cases then fail, naming it), linked
# with -z now as the Makefile does (no lazy binding in forked children).
build_example() {
    local src=c_examples/$1.c out=build/$1
    if [[ -f $src ]] && [[ ! -x $out || $out -ot $LIB || $out -ot $src ||
        $out -ot ${BASH_SOURCE[0]} ]]; then
        echo "bench: building $out"
        "$CC" -O2 -std=c99 -Iinclude "$src" -L"$LIB_DIR" -lsocketserver -lpthread \
            -Wl,-rpath,"$LIB_ABS" -Wl,-z,now -o "$out" || echo "bench: $out did not build" >&2
    fi
}
build_example echo_server
build_example http_hello
build_example resp_server
# build_bench NAME [FLAGS...]: benches/NAME.c -> build/NAME when stale.
build_bench() {
    local name=$1 src=benches/$1.c out=build/$1
    shift
    if [[ ! -x $out || $out -ot $src ]]; then
        echo "bench: building $out"
        "$CC" -O2 -Wall -Wextra -pthread "$src" "$@" -o "$out"
    fi
}
build_bench loadgen
build_bench ref_epoll_echo
build_bench ref_blocking_echo
build_bench ref_udp_echo
build_bench idle_conns
if [[ ! -x build/shutdown_latency || build/shutdown_latency -ot $LIB ||
    build/shutdown_latency -ot benches/shutdown_latency.c ]]; then
    rm -f build/shutdown_latency
fi
build_bench shutdown_latency -Iinclude -L"$LIB_DIR" -lsocketserver -Wl,-rpath,"$LIB_ABS"
HAVE_LIBEVENT=0
if pkg-config --exists libevent 2>/dev/null; then
    # shellcheck disable=SC2046 # pkg-config prints several flags
    build_bench ref_libevent_echo $(pkg-config --cflags --libs libevent)
    HAVE_LIBEVENT=1
else
    echo "bench: libevent-dev is missing (pkg-config libevent): the libevent rows are skipped"
fi

# ------------------------------------------------------------- processes

TMP=$(mktemp -d "${TMPDIR:-/tmp}/socketserver-bench.XXXXXX")
declare -a PIDS=()
FAILED=0

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget() {
    local pid keep=()
    for pid in "${PIDS[@]}"; do
        [[ $pid == "$1" ]] || keep+=("$pid")
    done
    PIDS=("${keep[@]}")
}

# The servers get room for the idle connections' descriptors (echo_server
# does not raise its own limit). prlimit raises the hard limit too (as
# root); otherwise settle for the current hard limit.
if prlimit --nofile=$NOFILE:$NOFILE true 2>/dev/null; then
    WRAP=(prlimit --nofile=$NOFILE:$NOFILE)
else
    WRAP=(prlimit --nofile="$(ulimit -Hn)")
fi

# start_server LABEL CMD...: starts CMD in the background, waits
# (START_WAIT s, default 5, at most) for its "listening on ADDR" line; sets
# SERVER_PID, SERVER_ADDR.
SERVER_PID=
SERVER_ADDR=
SERVER_LABEL=
start_server() {
    SERVER_LABEL=$1
    shift
    local out=$TMP/server.out err=$TMP/server.err
    launch "$out" "$err" "${WRAP[@]}" "$@"
    SERVER_PID=$LAUNCHED_PID
    PIDS+=("$SERVER_PID")
    if SERVER_ADDR=$(listening_address "$out" "$SERVER_PID" "${START_WAIT:-5}"); then
        return 0
    fi
    echo "bench: $SERVER_LABEL did not start: $*" >&2
    sed 's/^/    /' "$err" >&2
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    forget "$SERVER_PID"
    SERVER_PID=
    return 1
}

# stop_server: SIGTERM, then waits (5 s at most; then SIGKILL) and checks
# that the server exited with status 0.
stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "bench: $SERVER_LABEL did not exit within 5 s of SIGTERM: killed" >&2
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        FAILED=1
    fi
    local rc=0
    wait "$SERVER_PID" 2>/dev/null || rc=$?
    forget "$SERVER_PID"
    if ((rc != 0)); then
        echo "bench: $SERVER_LABEL exited with status $rc" >&2
        sed 's/^/    /' "$TMP/server.err" >&2
        FAILED=1
    fi
    SERVER_PID=
}

# field LINE KEY: the value of KEY=VALUE in LINE.
field() { sed -n "s/.*\\b$2=\\([^ ]*\\).*/\\1/p" <<<"$1"; }

# median VALUES...: the median (mean of the middle two for an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.10g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# cpu_ticks PID: user + system CPU time of the whole process (every
# thread, exited ones included), in clock ticks.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# user_sys_ticks PID: "user system" CPU time of the whole process, in ticks.
user_sys_ticks() { awk '{ sub(/^.*\) /, ""); print $12, $13 }' "/proc/$1/stat" 2>/dev/null || echo 0 0; }
HZ=$(getconf CLK_TCK)

# thread_split PID: "split A/B": the shares (%) of the two busiest threads
# in their CPU time together (50/50: the connections were spread evenly
# over two loops; 100/0: one loop served all).
thread_split() {
    local f
    for f in /proc/"$1"/task/*/stat; do
        awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "$f" 2>/dev/null || true
    done | sort -rn | head -n2 | awk '{ v[NR] = $1 } END {
        if (NR == 2 && v[1] + v[2] > 0)
            printf "  split %.0f/%.0f", 100 * v[1] / (v[1] + v[2]), 100 * v[2] / (v[1] + v[2]) }'
}

# ----------------------------------------------------------- the servers

# server_cmd KEY TRANSPORT ADDR: sets CMD to the command line of server KEY
# (see the header) on TRANSPORT (tcp, udp, unix) at ADDR; returns 1 when
# KEY cannot run here (libevent missing).
declare -a CMD=()
server_cmd() {
    local key=$1 tr=$2 addr=$3 on=(--address "$3")
    [[ $tr != unix ]] || on=(--unix "$addr")
    case $key in
    ev1) CMD=("$ECHO" --transport "$tr" --mode event --address "$addr" --threads 1) ;;
    ev2) CMD=("$ECHO" --transport "$tr" --mode event --address "$addr" --threads 2) ;;
    thr) CMD=("$ECHO" --transport "$tr" --mode threading --address "$addr") ;;
    fork) CMD=("$ECHO" --transport "$tr" --mode forking --address "$addr" --max-children 60) ;;
    sync) CMD=("$ECHO" --transport "$tr" --mode sync --address "$addr") ;;
    epoll1) CMD=(build/ref_epoll_echo "${on[@]}" --threads 1) ;;
    epoll2) CMD=(build/ref_epoll_echo "${on[@]}" --threads 2 --balance exclusive) ;;
    epoll2rp) CMD=(build/ref_epoll_echo "${on[@]}" --threads 2 --balance reuseport) ;;
    libevent)
        ((HAVE_LIBEVENT)) || return 1
        CMD=(build/ref_libevent_echo --address "$addr")
        ;;
    cthread) CMD=(build/ref_blocking_echo "${on[@]}" --model thread) ;;
    cfork) CMD=(build/ref_blocking_echo "${on[@]}" --model fork) ;;
    cfork-lib) CMD=(env LD_PRELOAD="$LIB_ABS/libsocketserver.so" build/ref_blocking_echo "${on[@]}" --model fork) ;;
    citer) CMD=(build/ref_blocking_echo "${on[@]}" --model iterative) ;;
    cudp) CMD=(build/ref_udp_echo --address "$addr") ;;
    py-tcp | py-threading | py-forking | py-udp | py-unix-threading | py-http)
        CMD=("$PY" benches/py_echo.py --server "${key#py-}" --address "$addr")
        ;;
    *)
        echo "bench: unknown server $key" >&2
        return 1
        ;;
    esac
}

# The long names shown in the table.
declare -A NAME=(
    [ev1]="event 1 loop" [ev2]="event 2 loops" [thr]="threading" [fork]="forking"
    [sync]="sync" [epoll1]="C epoll" [epoll2]="C epoll 2 loops"
    [epoll2rp]="C epoll 2 loops reuseport" [libevent]="libevent"
    [cthread]="C thread/conn" [cfork]="C fork/conn" [cfork-lib]="C fork/conn, library mapped" [citer]="C iterative"
    [cudp]="C recvfrom loop" [py-tcp]="Py TCPServer" [py-threading]="Py ThreadingTCPServer"
    [py-forking]="Py ForkingTCPServer" [py-udp]="Py UDPServer"
    [py-unix-threading]="Py ThreadingUnixStreamServer" [py-http]="Py ThreadingHTTPServer"
    [hello-ev1]="http_hello event 1 loop" [hello-ev2]="http_hello event 2 loops"
    [hello-thr]="http_hello threading" [nginx]="nginx 1 worker" [nginx2]="nginx 2 workers"
    [resp1]="resp_server" [redis]="redis-server"
)

: >"$TMP/results"
: >"$TMP/splits"
# run_one CASE KEY TRANSPORT LOADGEN-ARGS...: one run of server KEY
# (fresh) under loadgen; appends "CASE KEY rps p50 p99 cpu starved lost"
# to $TMP/results and prints the run's figures.
run_one() {
    local case=$1 key=$2 tr=$3
    shift 3
    local addr=127.0.0.1:0
    [[ $tr != unix ]] || addr=$TMP/$key.sock
    server_cmd "$key" "$tr" "$addr" || return 0
    start_server "${NAME[$key]}" "${CMD[@]}" || {
        FAILED=1
        return 0
    }
    local target=(--address "$SERVER_ADDR") line rc=0 u0 s0 u1 s1
    [[ $tr != unix ]] || target=(--unix "$SERVER_ADDR")
    [[ $tr != udp ]] || target+=(--udp)
    read -r u0 s0 <<<"$(user_sys_ticks "$SERVER_PID")"
    line=$(timeout $((${DURATION%.*} + ${WARMUP%.*} + 20)) "${CLIENT_WRAP[@]}" "$LOADGEN" "${target[@]}" \
        --duration "$DURATION" --warmup "$WARMUP" --threads 1 "$@" 2>"$TMP/loadgen.err") || rc=$?
    line=${line%%$'\n'*}
    read -r u1 s1 <<<"$(user_sys_ticks "$SERVER_PID")"
    local split=
    if [[ $key == *2 || $key == *2rp ]]; then
        split=$(thread_split "$SERVER_PID")
        echo "$case ${NAME[$key]}|${split#  split }" >>"$TMP/splits"
    fi
    stop_server
    if ((rc != 0)) || [[ -z $line ]]; then
        echo "bench: loadgen against ${NAME[$key]} ($case) failed (status $rc):" >&2
        sed 's/^/    /' "$TMP/loadgen.err" >&2
        FAILED=1
        return 0
    fi
    local rps p50 p99 cpu starved lost ucpu scpu n
    rps=$(field "$line" rps)
    p50=$(field "$line" p50_us)
    p99=$(field "$line" p99_us)
    starved=$(field "$line" starved)
    lost=$(field "$line" lost)
    n=$(field "$line" all_requests)
    cpu=$(awk -v d=$((u1 + s1 - u0 - s0)) -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.2f", (n > 0 ? d * 1e6 / hz / n : 0) }')
    ucpu=$(awk -v d=$((u1 - u0)) -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.2f", (n > 0 ? d * 1e6 / hz / n : 0) }')
    scpu=$(awk -v d=$((s1 - s0)) -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.2f", (n > 0 ? d * 1e6 / hz / n : 0) }')
    echo "$case $key $rps $p50 $p99 $cpu $starved $lost $ucpu $scpu" >>"$TMP/results"
    local note=
    ((starved == 0)) || note+="  STARVED $starved clients"
    ((lost == 0)) || note+="  lost $lost"
    printf '  %-30s %8s req/s  p50 %8s us  p99 %8s us  CPU %6s us/req%s%s\n' \
        "${NAME[$key]}" "$rps" "$p50" "$p99" "$cpu" "$split" "$note"
}

# run_case CASE TRANSPORT "LOADGEN-ARGS" SERVER...: the rounds.
run_case() {
    local case=$1 tr=$2 args=$3 round key
    shift 3
    wanted "$case" || return 0
    echo
    echo "$case: loadgen $args ($tr), $ROUNDS round(s), servers alternating"
    for ((round = 1; round <= ROUNDS; round++)); do
        for key in "$@"; do
            # shellcheck disable=SC2086 # args: several options
            run_one "$case" "$key" "$tr" $args
        done
    done
}

# summary CASE KEY: "rps p50 p99 cpu starved" medians (starved: the most
# of any round) over the rounds, or "nan ...".
summary() {
    awk -v c="$1" -v k="$2" '$1 == c && $2 == k { print $3, $4, $5, $6, $7 }' "$TMP/results" >"$TMP/sum"
    if [[ ! -s $TMP/sum ]]; then
        echo "nan nan nan nan 0"
        return
    fi
    local i out=
    for i in 1 2 3 4; do
        # shellcheck disable=SC2046 # a list of numbers
        out+="$(median $(awk -v i=$i '{ print $i }' "$TMP/sum")) "
    done
    echo "$out$(awk 'BEGIN { m = 0 } $5 > m { m = $5 } END { print m }' "$TMP/sum")"
}

# ------------------------------------------------------------ the table

# One markdown table for every case. row CASE OURS REF RPS-GOAL P99-GOAL
# [CPU]: the medians of OURS and REF in CASE and the ratios ours/ref;
# RPS-GOAL is the least req/s ratio that meets the goal ("-": none),
# P99-GOAL the most p99 ratio ("-": none); CPU "nocpu" leaves out the CPU
# ratio (forking servers).
: >"$TMP/table"
GOALS_MISSED=0
row() {
    local case=$1 ours=$2 ref=$3 grps=$4 gp99=$5 cpuflag=${6:-}
    wanted "$case" || return 0
    if [[ $ref == libevent ]] && ((!HAVE_LIBEVENT)); then
        printf '| %s | %s | %s | skipped: libevent-dev is missing |||||||||\n' \
            "$case" "${NAME[$ours]}" "${NAME[$ref]}" >>"$TMP/table"
        return 0
    fi
    local o r
    read -r -a o <<<"$(summary "$case" "$ours")"
    read -r -a r <<<"$(summary "$case" "$ref")"
    awk -v c="$case" -v on="${NAME[$ours]}" -v rn="${NAME[$ref]}" \
        -v orps="${o[0]}" -v rrps="${r[0]}" -v op99="${o[2]}" -v rp99="${r[2]}" \
        -v ocpu="${o[3]}" -v rcpu="${r[3]}" -v os="${o[4]}" -v rs="${r[4]}" \
        -v grps="$grps" -v gp99="$gp99" -v nocpu="$cpuflag" 'BEGIN {
        if (orps == "nan" || rrps == "nan" || orps + 0 <= 0 || rrps + 0 <= 0) {
            printf "| %s | %s | %s | %s | %s | n/a | | | | | | FAILED runs |\n", c, on, rn, orps, rrps
            exit 1
        }
        q = orps / rrps; l = (rp99 > 0 ? op99 / rp99 : 0)
        cpu = (nocpu == "" && rcpu > 0 && ocpu > 0) ? sprintf("%.2f", ocpu / rcpu) : "-"
        goal = ""; verdict = "-"; ok = 1
        if (grps != "-") { goal = "req/s >= " grps; ok = ok && q >= grps + 0 }
        if (gp99 != "-") { goal = goal (goal == "" ? "" : ", ") "p99 <= " gp99; ok = ok && l <= gp99 + 0 }
        if (goal != "") verdict = ok ? "met" : "MISSED"
        if (os > 0) verdict = verdict " (ours starved " os " clients)"
        if (rs > 0) verdict = verdict " (ref starved " rs " clients)"
        printf "| %s | %s | %s | %.0f | %.0f | **%.2f** | %.0f | %.0f | **%.2f** | %s | %s | %s |\n",
            c, on, rn, orps, rrps, q, op99, rp99, l, cpu, (goal == "" ? "-" : goal), verdict
        exit (verdict ~ /MISSED/) ? 1 : 0 }' >>"$TMP/table" || GOALS_MISSED=1
}

# -------------------------------------------------------- the machine

busy=$(
    read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ </proc/stat
    sleep 1
    read -r _ u2 n2 s2 i2 w2 q2 sq2 st2 _ </proc/stat
    total=$(((u2 + n2 + s2 + i2 + w2 + q2 + sq2 + st2) - (u1 + n1 + s1 + i1 + w1 + q1 + sq1 + st1)))
    echo $((total > 0 ? 100 * (total - (i2 - i1) - (w2 - w1)) / total : 0))
)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
T_START=$SECONDS
echo "bench: $(nproc) cores ($CPU_MODEL), Linux $(uname -r); load average $LOAD_START;"
echo "       CPU busy before starting: $busy %; $ROUNDS round(s) of ${DURATION}s (+${WARMUP}s warm-up)"
if ((busy > 20)); then
    echo "bench: note: the machine was $busy % busy before the benchmarks started:"
    echo "       other load makes every figure noisy (the CPU ratios suffer least)"
fi

# ------------------------------------------------------- the echo cases

run_case tcp50 tcp "--connections 50" \
    epoll1 ev1 epoll2 ev2 libevent cthread thr py-threading cfork fork py-forking
run_case churn tcp "--connections 50 --churn --sources 32" \
    libevent ev1 epoll1 cthread thr cfork fork cfork-lib py-forking citer sync py-tcp
# The same with the client pinned to the last CPU: on 2 cores, two loops
# and an unpinned client are three busy threads on two CPUs, and the
# client, preempted, sets the pace; pinned, the comparison of 1 and 2 loops
# is the servers' own.
CLIENT_WRAP=(taskset -c "$(($(nproc) - 1))")
run_case tcp50pin tcp "--connections 50" ev1 ev2 epoll1 epoll2rp
CLIENT_WRAP=()
run_case tcp500 tcp "--connections 500" epoll1 ev1
run_case big tcp "--connections 16 --size 65536" epoll1 ev1
run_case udp1 udp "--connections 1" cudp ev1 sync py-udp
run_case udp50 udp "--connections 50" cudp ev1 sync py-udp
run_case unix50 unix "--connections 50" epoll1 ev1 thr py-unix-threading
run_case unixchurn unix "--connections 50 --churn" epoll1 ev1

row tcp50 ev1 epoll1 1.0 1.1
row tcp50 ev1 libevent - -
row tcp50 ev2 epoll2 - -
row tcp50 ev2 ev1 0.95 -
row tcp50pin ev2 ev1 0.95 -
row tcp50pin ev2 epoll2rp - -
row tcp50pin epoll2rp epoll1 - -
row tcp50 thr cthread 1.0 -
row tcp50 thr py-threading - -
row tcp50 fork cfork - - nocpu
row tcp50 fork py-forking - - nocpu
row churn ev1 libevent 1.0 -
row churn ev1 epoll1 - -
row churn thr cthread 1.0 -
row churn fork cfork 0.9 - nocpu
row churn fork cfork-lib - - nocpu
row churn cfork-lib cfork - - nocpu
row churn fork py-forking - - nocpu
row churn sync citer - -
row churn sync py-tcp - -
row tcp500 ev1 epoll1 - -
row big ev1 epoll1 - -
row udp1 sync cudp 0.95 -
row udp1 ev1 cudp - -
row udp1 sync py-udp - -
row udp50 sync cudp 0.95 -
row udp50 ev1 cudp 1.3 -
row udp50 sync py-udp - -
row unix50 ev1 epoll1 0.95 -
row unix50 thr py-unix-threading - -
row unixchurn ev1 epoll1 0.95 -

# cpu_split CASE KEY: "user system" medians, us of CPU per request.
cpu_split() {
    # shellcheck disable=SC2046 # lists of numbers
    echo "$(median $(awk -v c="$1" -v k="$2" '$1 == c && $2 == k { print $9 }' "$TMP/results")) \
$(median $(awk -v c="$1" -v k="$2" '$1 == c && $2 == k { print $10 }' "$TMP/results"))"
}
CPU_NOTE=
if wanted tcp50; then
    read -r ou os <<<"$(cpu_split tcp50 ev1)"
    read -r ru rs <<<"$(cpu_split tcp50 epoll1)"
    CPU_NOTE="CPU per request, tcp50 (server process, user + system from /proc, medians):"
    CPU_NOTE+=" event 1 loop user $ou us + system $os us; C epoll user $ru us + system $rs us"
    CPU_NOTE+=" (user ratio $(awk -v o="$ou" -v r="$ru" 'BEGIN { print (r > 0 ? sprintf("%.2f", o / r) : "n/a") }'))."
    if perf stat -e instructions:u -x, true 2>&1 | grep -q '<not supported>'; then
        CPU_NOTE+=" Hardware counters are not available here (perf stat: instructions <not supported>), so no instruction counts."
    fi
fi

# ------------------------------------------------- instructions per request

# run_instr CASE KEY TRANSPORT LOADGEN-ARGS...: server KEY under callgrind,
# instrumented only while loadgen runs for 1 s; appends "CASE KEY
# instructions-per-request" to $TMP/instr. Counts of user-space
# instructions (the server's code and the libraries it calls, not the
# kernel's) are the same whatever else the machine does.
: >"$TMP/instr"
run_instr() {
    local case=$1 key=$2 tr=$3
    shift 3
    server_cmd "$key" "$tr" 127.0.0.1:0 || return 0
    local cg=$TMP/callgrind.$key
    START_WAIT=30 start_server "${NAME[$key]}" valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$cg" "${CMD[@]}" || {
        FAILED=1
        return 0
    }
    local target=(--address "$SERVER_ADDR") line rc=0
    [[ $tr != udp ]] || target+=(--udp)
    callgrind_control -i on "$SERVER_PID" >/dev/null
    line=$(timeout 60 "$LOADGEN" "${target[@]}" --duration 1 --threads 1 "$@" 2>"$TMP/loadgen.err") || rc=$?
    callgrind_control -i off "$SERVER_PID" >/dev/null
    stop_server
    local n total
    n=$(field "${line%%$'\n'*}" all_requests)
    total=$(awk '/^totals:/ { print $2 }' "$cg" 2>/dev/null)
    if ((rc != 0)) || [[ -z $n || -z $total ]] || ((n == 0)); then
        echo "bench: callgrind run of ${NAME[$key]} ($case) failed (status $rc):" >&2
        sed 's/^/    /' "$TMP/loadgen.err" >&2
        FAILED=1
        return 0
    fi
    local per
    per=$(awk -v t="$total" -v n="$n" 'BEGIN { printf "%.0f", t / n }')
    echo "$case $key $per" >>"$TMP/instr"
    printf '  %-30s %8s requests  %8s instructions/request\n' "${NAME[$key]}" "$n" "$per"
}

# instr_row CASE OURS REF GOAL: a row of the instructions table (GOAL: the
# most ratio ours/ref that meets it, or "-").
: >"$TMP/instr_table"
instr_row() {
    local o r
    o=$(awk -v c="$1" -v k="$2" '$1 == c && $2 == k { print $3 }' "$TMP/instr")
    r=$(awk -v c="$1" -v k="$3" '$1 == c && $2 == k { print $3 }' "$TMP/instr")
    awk -v c="$1" -v on="${NAME[$2]}" -v rn="${NAME[$3]}" -v o="$o" -v r="$r" -v g="$4" 'BEGIN {
        if (o == "" || r == "" || r + 0 <= 0) {
            printf "| %s | %s | %s | %s | %s | n/a | | FAILED runs |\n", c, on, rn, o, r
            exit 1
        }
        q = o / r; verdict = "-"
        if (g != "-") verdict = (q <= g + 0) ? "met" : "MISSED"
        printf "| %s | %s | %s | %d | %d | **%.2f** | %s | %s |\n", c, on, rn, o, r, q,
            (g == "-" ? "-" : "<= " g), verdict
        exit (verdict == "MISSED") ? 1 : 0 }' >>"$TMP/instr_table" || GOALS_MISSED=1
}

if wanted instr; then
    echo
    if ! command -v valgrind >/dev/null 2>&1 || ! command -v callgrind_control >/dev/null 2>&1; then
        echo "instr: FAILED: missing: valgrind (apt-get install valgrind)"
        FAILED=1
    else
        echo "instr: user-space instructions per request, callgrind, loadgen 1 s"
        run_instr tcp50 epoll1 tcp --connections 50
        run_instr tcp50 ev1 tcp --connections 50
        run_instr tcp50 cthread tcp --connections 50
        run_instr tcp50 thr tcp --connections 50
        run_instr udp50 cudp udp --connections 50
        run_instr udp50 ev1 udp --connections 50
        run_instr udp50 sync udp --connections 50
        instr_row tcp50 ev1 epoll1 1.5
        instr_row tcp50 thr cthread -
        instr_row udp50 ev1 cudp -
        instr_row udp50 sync cudp -
    fi
fi

# ---------------------------------------------------------------- http

# start_nginx [WORKERS]: nginx with WORKERS (default 1) worker processes
# on a free port of 127.0.0.1 returning http_hello's body, with its own
# prefix, config, pid file and logs under $TMP/nginx; waits (5 s at most)
# until it answers. Sets SERVER_PID, SERVER_ADDR and SERVER_LABEL as
# start_server does.
NGINX=$(command -v nginx || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true)
start_nginx() {
    SERVER_LABEL="nginx"
    local workers=${1:-1}
    local dir=$TMP/nginx try i port
    mkdir -p "$dir"
    for ((try = 0; try < 5; try++)); do
        port=$((20000 + RANDOM % 40000))
        cat >"$dir/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port;
        location / { default_type text/plain; return 200 "Hello, world!\n"; }
    }
}
EOF
        : >"$TMP/server.err"
        "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" \
            >"$TMP/server.out" 2>"$TMP/server.err" &
        SERVER_PID=$!
        PIDS+=("$SERVER_PID")
        for ((i = 0; i < 100; i++)); do
            if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" 2>/dev/null; then
                SERVER_ADDR=127.0.0.1:$port
                return 0
            fi
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        forget "$SERVER_PID"
    done
    echo "bench: nginx did not start:" >&2
    sed 's/^/    /' "$dir/error.log" "$TMP/server.err" >&2 2>/dev/null || true
    SERVER_PID=
    return 1
}

# to_us VALUE-WITH-UNIT: wrk's "1.23ms" in microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") f = 1; else if (u == "ms") f = 1000; else if (u == "s") f = 1e6; else if (u == "m") f = 6e7; else f = 0
        printf "%.0f", n * f }'
}

# run_http KEY: one wrk run against a fresh server KEY.
run_http() {
    local key=$1
    case $key in
    hello-ev1) start_server "${NAME[$key]}" "$HTTP" --mode event --threads 1 --address 127.0.0.1:0 ;;
    hello-ev2) start_server "${NAME[$key]}" "$HTTP" --mode event --threads 2 --address 127.0.0.1:0 ;;
    hello-thr) start_server "${NAME[$key]}" "$HTTP" --mode threading --address 127.0.0.1:0 ;;
    nginx) start_nginx ;;
    nginx2) start_nginx 2 ;;
    py-http)
        server_cmd py-http tcp 127.0.0.1:0
        start_server "${NAME[$key]}" "${CMD[@]}"
        ;;
    esac || {
        FAILED=1
        return 0
    }
    local out rc=0 d
    d=$(awk -v a="$DURATION" -v b="$WARMUP" 'BEGIN { printf "%d", a + b + 0.5 }')
    out=$(timeout $((d + 20)) wrk -t1 -c50 -d"${d}s" --latency "http://$SERVER_ADDR/" 2>&1) || rc=$?
    stop_server
    local rps p50 p99 bad
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    bad=$(awk '/Non-2xx|Socket errors/ { print }' <<<"$out")
    if ((rc != 0)) || [[ -z $rps ]]; then
        echo "bench: wrk against ${NAME[$key]} failed (status $rc):" >&2
        sed 's/^/    /' <<<"$out" >&2
        FAILED=1
        return 0
    fi
    echo "http $key $rps $p50 $p99 0 0 0" >>"$TMP/results"
    printf '  %-30s %8s req/s  p50 %8s us  p99 %8s us\n' "${NAME[$key]}" "$rps" "$p50" "$p99"
    if [[ -n $bad ]]; then
        echo "    wrk: $bad"
        FAILED=1
    fi
}

if wanted http; then
    echo
    missing=
    command -v wrk >/dev/null 2>&1 || missing+=" wrk (apt-get install wrk)"
    [[ -n $NGINX ]] || missing+=" nginx (apt-get install nginx-light)"
    command -v curl >/dev/null 2>&1 || missing+=" curl"
    [[ -x $HTTP ]] || missing+=" $HTTP (run 'make' first)"
    if [[ -n $missing ]]; then
        echo "http: FAILED: missing:$missing"
        FAILED=1
    else
        echo "http: wrk -t1 -c50 --latency GET /, $ROUNDS round(s), servers alternating"
        for ((round = 1; round <= ROUNDS; round++)); do
            for key in nginx hello-ev1 hello-ev2 nginx2 hello-thr py-http; do
                run_http "$key"
            done
        done
    fi
    row http hello-ev1 nginx 1.1 1.0 nocpu
    row http hello-ev2 nginx - - nocpu
    row http hello-ev2 nginx2 - - nocpu
    row http hello-thr nginx 0.8 - nocpu
    row http hello-ev1 py-http 50 - nocpu
fi

# ---------------------------------------------------------------- resp

# start_redis: redis-server on a free port of 127.0.0.1, without
# persistence, in its own directory under $TMP; waits (5 s at most) until it
# answers PING. Sets SERVER_PID, SERVER_ADDR and SERVER_LABEL as
# start_server does, so that stop_server stops it.
start_redis() {
    SERVER_LABEL="redis-server"
    local dir=$TMP/redis try i port
    mkdir -p "$dir"
    for ((try = 0; try < 5; try++)); do
        port=$((20000 + RANDOM % 40000))
        : >"$TMP/server.err"
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --dir "$dir" --daemonize no >"$TMP/server.out" 2>"$TMP/server.err" &
        SERVER_PID=$!
        PIDS+=("$SERVER_PID")
        for ((i = 0; i < 100; i++)); do
            if [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]; then
                SERVER_ADDR=127.0.0.1:$port
                return 0
            fi
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.05
        done
        # Most likely the port was taken: try another.
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        forget "$SERVER_PID"
    done
    echo "bench: redis-server did not start:" >&2
    sed 's/^/    /' "$TMP/server.out" >&2
    SERVER_PID=
    return 1
}

# run_resp KEY PIPELINE: redis-benchmark against the running server;
# appends "KEY TEST rps" for each of its tests to $TMP/resp and prints them.
run_resp() {
    local key=$1 pipeline=$2 n=$RESP_N rc=0 out t0 t1
    ((pipeline == 1)) || n=$((RESP_N * 4))
    t0=$(cpu_ticks "$SERVER_PID")
    out=$(timeout 60 redis-benchmark -h 127.0.0.1 -p "${SERVER_ADDR##*:}" -t ping,set,get \
        -c 50 -n "$n" -P "$pipeline" -q 2>"$TMP/rb.err" | tr '\r' '\n' |
        awk '/ requests per second/ { sub(/:$/, "", $1); print $1, $2 }') || rc=$?
    t1=$(cpu_ticks "$SERVER_PID")
    if ((rc != 0)) || [[ -s $TMP/rb.err ]] || (($(wc -l <<<"$out") != 4)); then
        echo "bench: redis-benchmark -P $pipeline against $SERVER_LABEL failed (status $rc):" >&2
        sed 's/^/    /' "$TMP/rb.err" >&2
        FAILED=1
        return 0
    fi
    local test rps line="" cpu
    while read -r test rps; do
        echo "$key $test $rps" >>"$TMP/resp"
        line+=$(printf ' %s %9s' "$test" "$rps")
    done <<<"$out"
    # The server's CPU time per request over the four tests (much less
    # sensitive than req/s to other load on the machine).
    cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n=$((4 * n)) 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    echo "$key CPU $cpu" >>"$TMP/resp"
    printf '  %-24s -P %-2s%s  CPU %s us/req\n' "$SERVER_LABEL" "$pipeline" "$line" "$cpu"
}

# resp_median KEY TEST: the median requests/s of TEST over KEY's runs.
resp_median() {
    # shellcheck disable=SC2046 # a list of numbers
    median $(awk -v k="$1" -v t="$2" '$1 == k && $2 == t { print $3 }' "$TMP/resp")
}

if wanted resp; then
    echo
    if ! command -v redis-benchmark >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1; then
        echo "resp: FAILED: redis-benchmark and redis-server are needed (apt-get install redis-tools redis-server)"
        FAILED=1
    elif [[ ! -x $RESP ]]; then
        echo "resp: FAILED: $RESP is missing"
        FAILED=1
    else
        : >"$TMP/resp"
        echo "resp: redis-benchmark -t ping,set,get -c 50 -q (-n $RESP_N at -P 1, $((RESP_N * 4)) at -P 16),"
        echo "      resp_server --threads 1 vs redis-server, alternating, $RESP_ROUNDS round(s):"
        for ((round = 1; round <= RESP_ROUNDS; round++)); do
            for pipeline in 1 16; do
                if start_redis; then
                    run_resp "redis$pipeline" "$pipeline"
                    stop_server
                else
                    FAILED=1
                fi
                if start_server "resp_server --threads 1" "$RESP" --address 127.0.0.1:0 --threads 1; then
                    run_resp "ours$pipeline" "$pipeline"
                    stop_server
                else
                    FAILED=1
                fi
            done
        done
        echo "  for context, one run with two event loops:"
        for pipeline in 1 16; do
            if start_server "resp_server --threads 2" "$RESP" --address 127.0.0.1:0 --threads 2; then
                run_resp "two$pipeline" "$pipeline"
                stop_server
            else
                FAILED=1
            fi
        done
        for pipeline in 1 16; do
            for test in PING_INLINE PING_MBULK SET GET; do
                r=$(resp_median "redis$pipeline" "$test")
                o=$(resp_median "ours$pipeline" "$test")
                cr=$(resp_median "redis$pipeline" CPU)
                co=$(resp_median "ours$pipeline" CPU)
                awk -v t="$test -P $pipeline" -v r="$r" -v o="$o" -v cr="$cr" -v co="$co" 'BEGIN {
                    if (!(r > 0 && o > 0)) { printf "| resp %s | resp_server | redis-server | %s | %s | n/a |||||| FAILED runs |\n", t, o, r; exit 1 }
                    q = o / r
                    printf "| resp %s | resp_server | redis-server | %.0f | %.0f | **%.2f** | | | | %s | req/s >= 1.0 | %s |\n",
                        t, o, r, q, (cr > 0 && co > 0 ? sprintf("%.2f", co / cr) : "-"), (q >= 1.0 ? "met" : "MISSED")
                    exit q >= 1.0 ? 0 : 1 }' >>"$TMP/table" || GOALS_MISSED=1
            done
        done
    fi
fi

# -------------------------------------------------------------- memory

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# memory KEY: RSS bytes per idle connection of server KEY (TCP): VmRSS
# before and while $IDLE idle connections (each echoed one byte) are open.
# Sets MEM_PER_CONN (empty on failure).
MEM_PER_CONN=
memory() {
    MEM_PER_CONN=
    local key=$1
    server_cmd "$key" tcp 127.0.0.1:0
    start_server "${NAME[$key]}" "${CMD[@]}" || {
        FAILED=1
        return 0
    }
    sleep 0.2
    local before after idler i ready=0
    before=$(rss_kib "$SERVER_PID")
    "$IDLER" --address "$SERVER_ADDR" --connections "$IDLE" --hold 60 \
        >"$TMP/idle.out" 2>"$TMP/idle.err" &
    idler=$!
    PIDS+=("$idler")
    for ((i = 0; i < 600; i++)); do
        if grep -q '^ready' "$TMP/idle.out"; then
            ready=1
            break
        fi
        kill -0 "$idler" 2>/dev/null || break
        sleep 0.05
    done
    if ((ready)); then
        sleep 0.2
        after=$(rss_kib "$SERVER_PID")
    fi
    kill -TERM "$idler" 2>/dev/null || true
    wait "$idler" 2>/dev/null || true
    forget "$idler"
    stop_server
    if ((!ready)); then
        echo "bench: the $IDLE idle connections to ${NAME[$key]} failed:" >&2
        sed 's/^/    /' "$TMP/idle.err" >&2
        FAILED=1
        return 0
    fi
    MEM_PER_CONN=$(awk -v b="$before" -v a="$after" -v n="$IDLE" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }')
    printf '  %-30s idle %6d KiB, with %d connections %7d KiB: %s bytes per connection\n' \
        "${NAME[$key]}" "$before" "$IDLE" "$after" "$MEM_PER_CONN"
}

if wanted memory; then
    echo
    echo "memory: VmRSS before and with $IDLE idle connections (each echoed one byte first):"
    memory epoll1
    ref_mem=$MEM_PER_CONN
    memory ev1
    ours_mem=$MEM_PER_CONN
    if [[ -n $ours_mem && -n $ref_mem ]]; then
        awk -v o="$ours_mem" -v r="$ref_mem" -v n="$IDLE" 'BEGIN {
            printf "| memory | event 1 loop | C epoll | %s B/conn | %s B/conn | %s | | | | | <= 256 B per idle connection (%d of them) | %s |\n",
                o, r, (r > 0 ? sprintf("**%.2f**", o / r) : "-"), n, (o <= 256 ? "met" : "MISSED")
            exit o <= 256 ? 0 : 1 }' >>"$TMP/table" || GOALS_MISSED=1
    else
        echo "| memory | event 1 loop | C epoll | FAILED runs |||||||||" >>"$TMP/table"
        GOALS_MISSED=1
    fi
fi

# ------------------------------------------------------------ shutdown

if wanted shutdown; then
    echo
    echo "shutdown: ss_server_shutdown() to serve_forever returning, $SHUTDOWN_ROUNDS rounds per mode:"
    if out=$(timeout 60 build/shutdown_latency --rounds "$SHUTDOWN_ROUNDS" 2>"$TMP/sd.err"); then
        sed 's/^/  /' <<<"$out"
        while read -r _ mode _ med p90 max; do
            awk -v m="${mode#mode=}" -v med="${med#median_us=}" -v p90="${p90#p90_us=}" -v max="${max#max_us=}" 'BEGIN {
                printf "| shutdown | %s | - | median %s us | p90 %s us | max %s us | | | | | median <= 1000 us | %s |\n",
                    m, med, p90, max, (med <= 1000 ? "met" : "MISSED")
                exit med <= 1000 ? 0 : 1 }' >>"$TMP/table" || GOALS_MISSED=1
        done <<<"$out"
    else
        echo "bench: shutdown_latency failed:" >&2
        sed 's/^/    /' "$TMP/sd.err" >&2
        FAILED=1
    fi
fi

# --------------------------------------------------------------- report

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$((SECONDS - T_START))
{
    echo "# Benchmarks, $STARTED"
    echo
    echo "Machine: $(nproc) cores, $CPU_MODEL; Linux $(uname -r)."
    echo "Load average: $LOAD_START at the start, $LOAD_END at the end; CPU $busy % busy"
    echo "before the start (other work on the machine makes req/s and p99 noisy; the"
    echo "CPU ratio, server CPU time per request ours/reference, suffers least)."
    echo
    only=
    [[ $ONLY == "$ALL_CASES" ]] || only="BENCH_ONLY=\"$ONLY\", "
    echo "Command: \`${BENCH_CMD:-make bench}\` (${only}$ROUNDS round(s) of"
    echo "${DURATION} s + ${WARMUP} s warm-up per server, servers alternating round by round;"
    echo "medians of the rounds; ${ELAPSED} s in all). 64-byte messages unless noted;"
    echo "loadgen with one client thread; ratios are ours/reference (req/s: higher is"
    echo "better for us; p99 and CPU: lower is). Python's socketserver listens with a"
    echo "backlog of 5 (request_queue_size): of 50 clients connecting at once, the SYNs"
    echo "beyond it are dropped and retried a second later, which shows as starved"
    echo "clients and a p99 near 1 s in its churn and HTTP rows."
    echo
    echo "| case | ours | reference | ours req/s | ref req/s | req/s ratio | ours p99 us | ref p99 us | p99 ratio | CPU ratio | goal | verdict |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
    cat "$TMP/table"
    if [[ -n $CPU_NOTE ]]; then
        echo
        echo "$CPU_NOTE"
    fi
    if [[ -s $TMP/instr_table ]]; then
        echo
        echo "User-space instructions per request (valgrind --tool=callgrind on the server,"
        echo "instrumented only while loadgen runs 1 s; load-independent; 64 B):"
        echo
        echo "| case | ours | reference | ours instr/req | ref instr/req | ratio | goal | verdict |"
        echo "|---|---|---|---:|---:|---:|---|---|"
        cat "$TMP/instr_table"
    fi
    if [[ -s $TMP/splits ]]; then
        echo
        echo "How two loops shared the work (CPU time of the two busiest threads, %, per round;"
        echo "50/50 is even):"
        awk -F'|' '{ v[$1] = v[$1] " " $2; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
            END { for (i = 1; i <= n; i++) printf "- %s:%s\n", order[i], v[order[i]] }' "$TMP/splits"
    fi
} >"$TMP/report.md"
mkdir -p "$(dirname "$RESULTS")"
cp "$TMP/report.md" "$RESULTS"
echo
cat "$TMP/report.md"
echo
echo "bench: the table is in $RESULTS"

if ((FAILED)); then
    echo "bench: FAILED (see the messages above)"
    exit 1
fi
if ((GOALS_MISSED)); then
    echo "bench: done; some goals were missed"
    ((STRICT)) && exit 1
    exit 0
fi
echo "bench: done; every goal met"
