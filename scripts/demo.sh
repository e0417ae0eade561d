#!/usr/bin/env bash
# The demo: build/echo_server (SS_SYNC mode) over each of the four transports,
# driven by build/echo_client. For each transport it starts the server on a
# free address, reads its "listening on" line, sends a message and checks the
# echo, then stops the server with SIGINT and checks it exits with status 0.
# Then the other concurrency modes over TCP, three clients at once each
# (skipping any mode echo_server refuses with status 2: not implemented yet).
#
# Builds nothing: run it through `make demo`, which builds first.
# Exit status 0 iff every step passed. Every wait is bounded, and the servers
# are killed and the temporary files removed however the script ends.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/listening.sh
source scripts/listening.sh
SERVER=build/echo_server
CLIENT=build/echo_client
for prog in "$SERVER" "$CLIENT"; do
    if [[ ! -x $prog ]]; then
        echo "demo: $prog is missing: run 'make demo' (or 'make' first)" >&2
        exit 1
    fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/socketserver-demo.XXXXXX")
declare -a PIDS=()

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

fail() {
    echo "FAILED: $*" >&2
    local f
    for f in "$TMP"/*.err; do
        if [[ -s $f ]]; then
            echo "--- $(basename "$f" .err) stderr:" >&2
            cat "$f" >&2
        fi
    done
    exit 1
}

# forget PID: the server has exited; cleanup no longer needs to kill it.
forget() {
    local pid keep=()
    for pid in "${PIDS[@]}"; do
        [[ $pid == "$1" ]] || keep+=("$pid")
    done
    PIDS=("${keep[@]}")
}

# start_server TRANSPORT ADDRESS [MODE]: starts echo_server in the background
# (mode sync unless given), waits at most 10 s for its "listening on" line
# and sets SERVER_PID and BOUND. Returns 2 if the server refused the mode
# (exit status 2: not implemented in this build); any other failure ends
# the demo.
start_server() {
    local transport=$1 address=$2 mode=${3:-sync} out="$TMP/$1.out" status=0
    launch "$out" "$TMP/$transport.err" \
        "$SERVER" --transport "$transport" --mode "$mode" --address "$address" --threads 4
    SERVER_PID=$LAUNCHED_PID
    PIDS+=("$SERVER_PID")
    BOUND=$(listening_address "$out" "$SERVER_PID" 10) || status=$?
    case $status in
    0) ;;
    1)
        status=0
        wait "$SERVER_PID" || status=$?
        forget "$SERVER_PID"
        [[ $status -eq 2 ]] && return 2
        fail "echo_server --mode $mode over $transport exited with status $status before listening"
        ;;
    *) fail "echo_server over $transport did not say 'listening on' within 10 s" ;;
    esac
}

# stop_server TRANSPORT: SIGINT, then wait (at most 10 s) for exit status 0.
stop_server() {
    local transport=$1 status=0
    kill -INT "$SERVER_PID"
    for _ in $(seq 200); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        fail "echo_server over $transport still running 10 s after SIGINT"
    fi
    wait "$SERVER_PID" || status=$?
    forget "$SERVER_PID"
    [[ $status -eq 0 ]] || fail "echo_server over $transport exited with status $status after SIGINT"
    echo "  server: SIGINT -> exit status 0"
}

demo() {
    local transport=$1 address=$2 message="hello over $1" reply
    echo "== $transport: echo_server --transport $transport --mode sync --address $address"
    start_server "$transport" "$address"
    echo "  server: listening on $BOUND"
    echo "  client: echo_client --transport $transport --address $BOUND '$message'"
    reply=$(timeout 15 "$CLIENT" --transport "$transport" --address "$BOUND" --timeout 5000 "$message" \
        2>"$TMP/$transport-client.err") || fail "echo_client over $transport: $(cat "$TMP/$transport-client.err")"
    echo "  client: got back '$reply'"
    [[ $reply == "$message" ]] || fail "echo over $transport: sent '$message', got '$reply'"
    stop_server "$transport"
    if [[ $transport == unix* ]]; then
        [[ ! -e $BOUND ]] || fail "the server left its socket file $BOUND behind"
        echo "  server: removed its socket file on close"
    fi
    echo "  ok"
}

# modes: the other concurrency models over TCP, each with three clients at
# once; a model this build does not implement yet is skipped.
modes() {
    local mode i status
    echo "== other concurrency modes, over tcp with three clients at once"
    for mode in threading forking pool event; do
        status=0
        start_server tcp 127.0.0.1:0 "$mode" || status=$?
        if [[ $status -eq 2 ]]; then
            echo "  $mode: not implemented in this build (echo_server exits with status 2): skipped"
            continue
        fi
        local -a clients=()
        for i in 1 2 3; do
            timeout 15 "$CLIENT" --transport tcp --address "$BOUND" "client $i, $mode mode" \
                >"$TMP/$mode-$i.out" 2>"$TMP/$mode-$i-client.err" &
            clients+=("$!")
        done
        for i in 1 2 3; do
            wait "${clients[$((i - 1))]}" || fail "echo_client $i in $mode mode: $(cat "$TMP/$mode-$i-client.err")"
        done
        echo "  $mode: listening on $BOUND; 3 clients at once got back: $(cat "$TMP/$mode"-[123].out | paste -sd '/' -)"
        stop_server tcp
    done
}

echo "libsocketserver demo: echo_server over the four transports (sync mode), then the other modes"
demo tcp 127.0.0.1:0
demo udp 127.0.0.1:0
demo unix "$TMP/echo.sock"
demo unixdgram "$TMP/echo-dgram.sock"
modes
echo "demo passed: echo_server answered over tcp, udp, unix and unixdgram and in every implemented mode, and stopped cleanly on SIGINT each time"
