#!/usr/bin/env bash
# The benchmarks (`make bench`): libsocketserver's event mode against a
# plain-C epoll echo server (benches/ref_epoll_echo.c), on TCP 127.0.0.1,
# driven by the closed-loop load generator benches/loadgen.c, which
# verifies every echoed byte.
#
#   (a) 1 server thread:  ref_epoll_echo --threads 1  vs  echo_server --mode event --threads 1
#   (b) 2 server threads: ref_epoll_echo --threads 2 --balance exclusive
#                         vs  echo_server --mode event --threads 2
#       (both loops watch one listening socket with EPOLLEXCLUSIVE, as the
#       event mode does, so both spread connections the same way)
#   (c) for context, one run each: ref_epoll_echo --threads 2 with
#       SO_REUSEPORT listeners, echo_server --mode threading, --mode pool
#   (d) for context, one run each with large messages (200000 bytes, 8
#       connections): ref_epoll_echo vs echo_server --mode event, 1 thread
#   memory: VmRSS of the idle server, then with BENCH_IDLE idle connections
#       (each proven accepted by a one-byte echo), in KiB per connection
#   http: wrk -t1 -c50 against build/http_hello in event and threading
#       mode (skipped with a note when wrk or build/http_hello is missing)
#   resp: build/resp_server --threads 1 vs redis-server (no persistence, its
#       own temporary directory) under redis-benchmark -t ping,set,get -c 50
#       -q, at -P 1 and -P 16, alternating servers round by round
#       (BENCH_RESP_ROUNDS, default 3; BENCH_RESP_REQUESTS per test, default
#       50000 at -P 1 and 4x that at -P 16), then one run of resp_server
#       --threads 2 for context; the ratios ours/redis of requests/s per
#       test (goal >= 1.0); about 25 s (skipped with a note when
#       redis-benchmark or redis-server is missing)
#
# In (a) and (b) the servers alternate (ref, ours, ref, ours, ...), each
# run on a freshly started server; the median of the runs is reported for
# each, then the ratios ours/ref of requests/s and of p99 latency, against
# the goals: event mode >= 0.95x the reference's requests/s and <= 1.2x its
# p99 at the same number of server threads; <= 1 KiB per idle connection.
#
# The machine's cores are shared by the load generator (one client
# thread) and the server; nothing is pinned. Each run also reports the
# server's CPU time per request (robust against other load on the
# machine, unlike req/s), and for multi-threaded servers how that CPU time
# split between the server's busiest threads (how evenly the kernel spread
# the connections over the loops).
#
# Knobs (environment): BENCH_DURATION (s per run, default 3),
# BENCH_WARMUP (s, default 1), BENCH_ROUNDS (runs per server, default 4),
# BENCH_CONNECTIONS (default 50), BENCH_SIZE (bytes, default 64),
# BENCH_IDLE (idle connections, default 10000), BENCH_ONLY (a
# space-separated subset of "a b c d memory http resp"), BENCH_BIG_SIZE (bytes
# per message in (d), default 200000), BENCH_STRICT=1 (exit 1
# when a goal is missed; by default only failures — a wrong echo, a
# server that dies or does not exit 0 — make the exit status non-zero).
#
# Builds what is missing: the library (cargo build --release) if absent,
# build/echo_server if older than the library, and the bench programs
# (cc -O2) if older than their sources. Every wait is bounded; every
# process started here is stopped, and its temporary files removed,
# however the script ends. Traffic goes to 127.0.0.1 only.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

DURATION=${BENCH_DURATION:-3}
WARMUP=${BENCH_WARMUP:-1}
ROUNDS=${BENCH_ROUNDS:-4}
CONNS=${BENCH_CONNECTIONS:-50}
SIZE=${BENCH_SIZE:-64}
IDLE=${BENCH_IDLE:-10000}
ONLY=${BENCH_ONLY:-a b c d memory http resp}
STRICT=${BENCH_STRICT:-0}
CC=${CC:-cc}
NOFILE=65536

# The library's directory: the Makefile passes its own (BUILD,
# CARGO_TARGET_DIR) as SS_LIB_DIR.
LIB_DIR=${SS_LIB_DIR:-target/release}
LIB=$LIB_DIR/libsocketserver.so
ECHO=build/echo_server
REF=build/ref_epoll_echo
LOADGEN=build/loadgen
IDLER=build/idle_conns
HTTP=build/http_hello

wanted() { [[ " $ONLY " == *" $1 "* ]]; }

# ------------------------------------------------------------------ build

mkdir -p build
if [[ ! -f $LIB ]]; then
    echo "bench: building the library (cargo build --release)"
    cargo build --release
fi
if [[ ! -x $ECHO || $ECHO -ot $LIB || $ECHO -ot c_examples/echo_server.c ]]; then
    echo "bench: building $ECHO"
    "$CC" -O2 -std=c99 -Iinclude c_examples/echo_server.c -L"$LIB_DIR" \
        -lsocketserver -Wl,-rpath,"$(cd "$LIB_DIR" && pwd)" -o "$ECHO"
fi
build_bench() { # NAME: benches/NAME.c -> build/NAME
    local src=benches/$1.c out=build/$1
    if [[ ! -x $out || $out -ot $src ]]; then
        echo "bench: building $out"
        "$CC" -O2 -Wall -Wextra -pthread "$src" -o "$out"
    fi
}
build_bench loadgen
build_bench ref_epoll_echo
build_bench idle_conns
# http_hello, when its source exists and `make` has not built it (a failed
# build only skips the http part).
if [[ -f c_examples/http_hello.c ]] && [[ ! -x $HTTP || $HTTP -ot $LIB || $HTTP -ot c_examples/http_hello.c ]]; then
    echo "bench: building $HTTP"
    "$CC" -O2 -std=c99 -Iinclude c_examples/http_hello.c -L"$LIB_DIR" \
        -lsocketserver -lpthread -Wl,-rpath,"$(cd "$LIB_DIR" && pwd)" -o "$HTTP" ||
        echo "bench: $HTTP did not build; the http part will be skipped" >&2
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

# start_server LABEL CMD...: starts CMD in the background, waits (5 s at
# most) for its "listening on ADDR" line; sets SERVER_PID, SERVER_ADDR.
SERVER_PID=
SERVER_ADDR=
SERVER_LABEL=
start_server() {
    SERVER_LABEL=$1
    shift
    local out=$TMP/server.out err=$TMP/server.err
    : >"$out"
    : >"$err"
    "${WRAP[@]}" "$@" >"$out" 2>"$err" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local i
    for ((i = 0; i < 100; i++)); do
        if grep -q '^listening on ' "$out"; then
            SERVER_ADDR=$(sed -n 's/^listening on //p' "$out" | head -n1)
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            break
        fi
        sleep 0.05
    done
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
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# thread_split PID: "  split A/B": the shares (%) of the two busiest
# threads in their CPU time together, for servers with several loops
# (50/50: the connections were spread evenly; 100/0: one loop served all).
thread_split() {
    local f
    for f in /proc/"$1"/task/*/stat; do
        awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "$f" 2>/dev/null || true
    done | sort -rn | head -n2 | awk '{ v[NR] = $1 } END {
        if (NR == 2 && v[1] + v[2] > 0)
            printf "  split %.0f/%.0f", 100 * v[1] / (v[1] + v[2]), 100 * v[2] / (v[1] + v[2]) }'
}

# run_load KEY LABEL CMD...: one run: fresh server, loadgen, stop (KEY
# ending in 2: a two-loop server, whose CPU split is shown). Appends
# "KEY rps p50 p99 cpu_us_per_request" to $TMP/results and prints the
# run's figures. The server's CPU time per request (the server's CPU time
# over the whole loadgen run, divided by every request it served, warm-up
# included) is much less sensitive than req/s to other load on the machine.
run_load() {
    local key=$1 label=$2
    shift 2
    start_server "$label" "$@" || {
        FAILED=1
        return 0
    }
    local line rc=0 t0 t1
    t0=$(cpu_ticks "$SERVER_PID")
    line=$(timeout $((${DURATION%.*} + ${WARMUP%.*} + 20)) "$LOADGEN" --address "$SERVER_ADDR" \
        --connections "$CONNS" --size "$SIZE" --duration "$DURATION" --warmup "$WARMUP" \
        --threads 1 2>"$TMP/loadgen.err") || rc=$?
    line=${line%%$'\n'*}
    t1=$(cpu_ticks "$SERVER_PID")
    local split=
    [[ $key != *2 ]] || split=$(thread_split "$SERVER_PID")
    stop_server
    if ((rc != 0)) || [[ -z $line ]]; then
        echo "bench: loadgen against $label failed (status $rc):" >&2
        sed 's/^/    /' "$TMP/loadgen.err" >&2
        FAILED=1
        return 0
    fi
    local rps p50 p99 cpu
    rps=$(field "$line" rps)
    p50=$(field "$line" p50_us)
    p99=$(field "$line" p99_us)
    cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$(field "$line" all_requests)" \
        'BEGIN { printf "%.2f", (n > 0 ? d * 1e6 / hz / n : 0) }')
    echo "$key $rps $p50 $p99 $cpu" >>"$TMP/results"
    printf '  %-44s %7s req/s  p50 %6s us  p99 %7s us  CPU %5s us/req%s\n' \
        "$label" "$rps" "$p50" "$p99" "$cpu" "$split"
}

# summary KEY: "rps p50 p99 cpu" medians over KEY's runs.
summary() {
    local rps=() p50=() p99=() cpu=() k a b c d
    while read -r k a b c d; do
        [[ $k == "$1" ]] || continue
        rps+=("$a")
        p50+=("$b")
        p99+=("$c")
        cpu+=("$d")
    done <"$TMP/results"
    if ((${#rps[@]} == 0)); then
        echo "nan nan nan nan"
        return
    fi
    echo "$(median "${rps[@]}") $(median "${p50[@]}") $(median "${p99[@]}") $(median "${cpu[@]}")"
}

GOALS_MISSED=0
# compare TITLE REFKEY OURSKEY: the medians and the ratios.
compare() {
    local title=$1 r o
    read -r -a r <<<"$(summary "$2")"
    read -r -a o <<<"$(summary "$3")"
    echo
    echo "$title: median of $ROUNDS runs each"
    printf '  %-20s %10s %10s %10s %16s\n' "" "req/s" "p50 us" "p99 us" "CPU us/request"
    printf '  %-20s %10s %10s %10s %16s\n' "ref_epoll_echo" "${r[0]}" "${r[1]}" "${r[2]}" "${r[3]}"
    printf '  %-20s %10s %10s %10s %16s\n' "echo_server event" "${o[0]}" "${o[1]}" "${o[2]}" "${o[3]}"
    if [[ ${r[0]} == nan || ${o[0]} == nan ]]; then
        echo "  ratios: not available (failed runs)"
        GOALS_MISSED=1
        return
    fi
    awk -v rr="${r[0]}" -v ro="${o[0]}" -v pr="${r[2]}" -v po="${o[2]}" \
        -v lr="${r[1]}" -v lo="${o[1]}" -v cr="${r[3]}" -v co="${o[3]}" 'BEGIN {
        q = ro / rr; l = po / pr
        printf "  ours/ref: req/s %.3f (goal >= 0.95: %s)   p99 %.3f (goal <= 1.2: %s)\n",
            q, (q >= 0.95 ? "met" : "MISSED"), l, (l <= 1.2 ? "met" : "MISSED")
        printf "            p50 %.3f   server CPU per request %s\n", lo / lr,
            (cr > 0 ? sprintf("%.3f", co / cr) : "n/a")
        exit (q >= 0.95 && l <= 1.2) ? 0 : 1 }' || GOALS_MISSED=1
}

: >"$TMP/results"
# Other load on the machine makes every figure noisy: say so.
busy=$(
    read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ </proc/stat
    sleep 1
    read -r _ u2 n2 s2 i2 w2 q2 sq2 st2 _ </proc/stat
    total=$(((u2 + n2 + s2 + i2 + w2 + q2 + sq2 + st2) - (u1 + n1 + s1 + i1 + w1 + q1 + sq1 + st1)))
    echo $((total > 0 ? 100 * (total - (i2 - i1) - (w2 - w1)) / total : 0))
)
if ((busy > 10)); then
    echo "bench: WARNING: other processes keep the CPUs ${busy}% busy before the runs:" \
        "req/s and latency will be noisy (the server CPU per request much less so)"
fi
echo "bench: TCP 127.0.0.1, $CONNS connections, $SIZE-byte messages, ${DURATION}s runs" \
    "(+${WARMUP}s warm-up), loadgen with 1 client thread; $(nproc) cores, shared"

# ------------------------------------------------------------ (a) and (b)

for threads in 1 2; do
    scenario=$([[ $threads == 1 ]] && echo a || echo b)
    wanted "$scenario" || continue
    echo
    echo "($scenario) $threads server thread(s), alternating:"
    for ((round = 1; round <= ROUNDS; round++)); do
        balance=$([[ $threads == 1 ]] || echo " --balance exclusive")
        run_load "ref$threads" "ref_epoll_echo --threads $threads$balance" \
            "$REF" --address 127.0.0.1:0 --threads "$threads" --balance exclusive
        run_load "ours$threads" "echo_server event --threads $threads" \
            "$ECHO" --transport tcp --mode event --address 127.0.0.1:0 --threads "$threads"
    done
done

# ---------------------------------------------------------------- (c)

if wanted c; then
    echo
    echo "(c) for context, one run each: the reference with one SO_REUSEPORT listener per"
    echo "    loop (the kernel spreads connections by hash), then blocking handlers with a"
    echo "    thread per connection:"
    run_load reuseport2 "ref_epoll_echo --threads 2 --balance reuseport" \
        "$REF" --address 127.0.0.1:0 --threads 2 --balance reuseport
    run_load threading "echo_server threading" \
        "$ECHO" --transport tcp --mode threading --address 127.0.0.1:0
    pool_threads=$((CONNS + 14))
    run_load pool "echo_server pool --threads $pool_threads" \
        "$ECHO" --transport tcp --mode pool --address 127.0.0.1:0 --threads "$pool_threads"
fi

# ---------------------------------------------------------------- (d)

# run_big LABEL CMD...: one run with large messages; prints the tail.
run_big() {
    local label=$1
    shift
    start_server "$label" "$@" || {
        FAILED=1
        return 0
    }
    local line rc=0
    line=$(timeout 30 "$LOADGEN" --address "$SERVER_ADDR" --connections "$BIG_CONNS" \
        --size "$BIG_SIZE" --duration 2 --warmup 0.5 --threads 1 2>"$TMP/loadgen.err") || rc=$?
    line=${line%%$'\n'*}
    stop_server
    if ((rc != 0)) || [[ -z $line ]]; then
        echo "bench: loadgen against $label failed (status $rc):" >&2
        sed 's/^/    /' "$TMP/loadgen.err" >&2
        FAILED=1
        return 0
    fi
    printf '  %-32s %6s req/s  p50 %7s us  p99 %8s us  p99.9 %8s us  max %8s us\n' "$label" \
        "$(field "$line" rps)" "$(field "$line" p50_us)" "$(field "$line" p99_us)" \
        "$(field "$line" p999_us)" "$(field "$line" max_us)"
}

BIG_SIZE=${BENCH_BIG_SIZE:-200000}
BIG_CONNS=8
if wanted d; then
    echo
    echo "(d) for context, large messages: $BIG_SIZE bytes, $BIG_CONNS connections, 2 s, one run each"
    echo "    (a tail near 40 ms would be Nagle's algorithm meeting the client's delayed"
    echo "    ACK: both servers set TCP_NODELAY to avoid it)"
    run_big "ref_epoll_echo --threads 1" "$REF" --address 127.0.0.1:0 --threads 1
    run_big "echo_server event --threads 1" \
        "$ECHO" --transport tcp --mode event --address 127.0.0.1:0 --threads 1
fi

wanted a && compare "(a) 1 server thread" ref1 ours1
wanted b && compare "(b) 2 server threads (one shared listener, EPOLLEXCLUSIVE)" ref2 ours2

# -------------------------------------------------------------- memory

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# memory LABEL CMD...: KiB of VmRSS per idle connection (also left in
# MEM_PER_CONN; empty on failure).
MEM_PER_CONN=
memory() {
    MEM_PER_CONN=
    local label=$1
    shift
    start_server "$label" "$@" || {
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
    local released=
    if ((ready)); then
        sleep 0.3
        released=$(rss_kib "$SERVER_PID")
    fi
    stop_server
    if ((!ready)); then
        echo "bench: the $IDLE idle connections to $label failed:" >&2
        sed 's/^/    /' "$TMP/idle.err" >&2
        FAILED=1
        return 0
    fi
    awk -v l="$label" -v b="$before" -v a="$after" -v r="$released" -v n="$IDLE" 'BEGIN {
        per = (a - b) / n
        printf "  %-34s idle %6d KiB, with %d connections %7d KiB: %.3f KiB (%.0f bytes) per connection; %d KiB after they closed\n",
            l, b, n, a, per, per * 1024, r }'
    MEM_PER_CONN=$(awk -v b="$before" -v a="$after" -v n="$IDLE" 'BEGIN { printf "%.3f", (a - b) / n }')
}

if wanted memory; then
    echo
    echo "memory: VmRSS before and after $IDLE idle connections (each echoed one byte), 1 server thread:"
    memory "ref_epoll_echo --threads 1" "$REF" --address 127.0.0.1:0 --threads 1
    memory "echo_server event --threads 1" \
        "$ECHO" --transport tcp --mode event --address 127.0.0.1:0 --threads 1
    if [[ -n $MEM_PER_CONN ]]; then
        awk -v per="$MEM_PER_CONN" 'BEGIN {
            printf "  event mode: %.3f KiB per idle connection (goal <= 1 KiB: %s)\n", per, (per <= 1 ? "met" : "MISSED")
            exit per <= 1 ? 0 : 1 }' || GOALS_MISSED=1
    else
        GOALS_MISSED=1
    fi
fi

# ---------------------------------------------------------------- http

if wanted http; then
    echo
    if ! command -v wrk >/dev/null 2>&1; then
        echo "http: skipped: wrk is not installed (apt-get install wrk)"
    elif [[ ! -x $HTTP ]]; then
        echo "http: skipped: $HTTP is missing (run 'make' first)"
    else
        echo "http: wrk -t1 -c50 -d${DURATION}s GET / against $HTTP:"
        for mode in event threading; do
            if ! start_server "http_hello $mode" "$HTTP" --mode "$mode" --address 127.0.0.1:0; then
                FAILED=1
                continue
            fi
            out=$(timeout $((${DURATION%.*} + 20)) wrk -t1 -c50 -d"${DURATION}s" \
                "http://$SERVER_ADDR/" 2>&1) || true
            stop_server
            rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
            lat=$(awk '/^ +Latency/ { print $2 }' <<<"$out")
            bad=$(awk '/Non-2xx|Socket errors/ { print }' <<<"$out")
            printf '  %-24s %10s req/s   mean latency %s\n' "http_hello $mode" "${rps:-?}" "${lat:-?}"
            [[ -z $bad ]] || echo "    wrk: $bad"
        done
    fi
fi

# ---------------------------------------------------------------- resp

RESP=build/resp_server
RESP_ROUNDS=${BENCH_RESP_ROUNDS:-3}
RESP_N=${BENCH_RESP_REQUESTS:-50000}

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
    median $(awk -v k="$1" -v t="$2" '$1 == k && $2 == t { print $3 }' "$TMP/resp")
}

if wanted resp; then
    echo
    if ! command -v redis-benchmark >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1; then
        echo "resp: skipped: redis-benchmark and redis-server are needed (apt-get install redis-tools redis-server)"
    else
        if [[ -f c_examples/resp_server.c ]] && [[ ! -x $RESP || $RESP -ot $LIB || $RESP -ot c_examples/resp_server.c ]]; then
            echo "bench: building $RESP"
            "$CC" -O2 -std=c99 -Iinclude c_examples/resp_server.c -L"$ROOT/target/release" \
                -lsocketserver -lpthread -Wl,-rpath,"$ROOT/target/release" -o "$RESP" ||
                echo "bench: $RESP did not build" >&2
        fi
        if [[ ! -x $RESP ]]; then
            echo "resp: FAILED: $RESP is missing"
            FAILED=1
        else
            : >"$TMP/resp"
            echo "resp: redis-benchmark -t ping,set,get -c 50 -q (-n $RESP_N at -P 1, $((RESP_N * 4)) at -P 16),"
            echo "      resp_server --threads 1 vs redis-server, alternating, $RESP_ROUNDS rounds:"
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
            echo
            echo "resp: median req/s of $RESP_ROUNDS rounds; ratio resp_server/redis-server (goal >= 1.0):"
            printf '  %-12s %12s %12s %7s   %12s %12s %7s\n' "" "redis -P 1" "ours -P 1" "ratio" \
                "redis -P 16" "ours -P 16" "ratio"
            for test in PING_INLINE PING_MBULK SET GET; do
                row=$(printf '  %-12s' "$test")
                for pipeline in 1 16; do
                    r=$(resp_median "redis$pipeline" "$test")
                    o=$(resp_median "ours$pipeline" "$test")
                    ratio=$(awk -v r="$r" -v o="$o" 'BEGIN { if (r > 0 && o > 0) printf "%.3f", o / r; else print "n/a" }')
                    awk -v q="$ratio" 'BEGIN { exit (q != "n/a" && q >= 1.0) ? 0 : 1 }' || GOALS_MISSED=1
                    row+=$(printf ' %12s %12s %7s  ' "$r" "$o" "$ratio")
                done
                echo "$row"
            done
            row=$(printf '  %-12s' "CPU us/req")
            for pipeline in 1 16; do
                r=$(resp_median "redis$pipeline" CPU)
                o=$(resp_median "ours$pipeline" CPU)
                ratio=$(awk -v r="$r" -v o="$o" 'BEGIN { if (r > 0 && o > 0) printf "%.3f", o / r; else print "n/a" }')
                row+=$(printf ' %12s %12s %7s  ' "$r" "$o" "$ratio")
            done
            echo "$row  (server CPU time per request, lower is better)"
        fi
    fi
fi

echo
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
