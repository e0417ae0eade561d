# scripts/lib.sh: what scripts/soak_threading.sh and scripts/forking_zombies.sh
# share. Sourced (not run) from the repository root, after `set -euo pipefail`:
#
#   lib_init NAME          checks for build/echo_server and python3, makes
#                          $TMP and sets the traps that clean up (the server
#                          is killed, $TMP removed) however the script ends;
#                          NAME prefixes every message
#   fail MESSAGE...        prints the message and the server's stderr, exit 1
#   start_server MODE      starts `echo_server --transport tcp --mode MODE
#                          --address 127.0.0.1:0` in the background and waits
#                          (10 s at most) for its "listening on" line; sets
#                          SERVER_PID, ADDRESS and PORT
#   check_client STATUS    fails unless the client's exit status (from
#                          `timeout $TIME_LIMIT python3 ...`) is 0
#   stop_server            SIGTERM; fails unless the server exits 0 within
#                          10 s without having written to stderr

# shellcheck source=scripts/listening.sh
source scripts/listening.sh

SERVER=build/echo_server
SERVER_PID=""

lib_init() {
    NAME=$1
    if [[ ! -x $SERVER ]]; then
        echo "$NAME: $SERVER is missing: run 'make' first" >&2
        exit 1
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        echo "$NAME: python3 is needed for the client" >&2
        exit 1
    fi
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/socketserver-$NAME.XXXXXX")
    trap lib_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

lib_cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}

fail() {
    echo "$NAME: FAILED: $*" >&2
    if [[ -s $TMP/server.err ]]; then
        echo "--- echo_server stderr:" >&2
        cat "$TMP/server.err" >&2
    fi
    exit 1
}

start_server() {
    local mode=$1 status=0
    launch "$TMP/server.out" "$TMP/server.err" \
        "$SERVER" --transport tcp --mode "$mode" --address 127.0.0.1:0
    SERVER_PID=$LAUNCHED_PID
    ADDRESS=$(listening_address "$TMP/server.out" "$SERVER_PID" 10) || status=$?
    case $status in
    0) ;;
    1) fail "echo_server exited before listening" ;;
    *) fail "echo_server did not say 'listening on' within 10 s" ;;
    esac
    PORT=${ADDRESS##*:}
}

check_client() {
    local status=$1
    if ((status == 124 || status == 137)); then
        fail "the client did not finish within ${TIME_LIMIT} s"
    elif ((status != 0)); then
        fail "the client failed (status $status)"
    fi
}

stop_server() {
    local status=0
    kill -TERM "$SERVER_PID"
    for _ in $(seq 200); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$SERVER_PID" 2>/dev/null && fail "echo_server still running 10 s after SIGTERM"
    wait "$SERVER_PID" || status=$?
    SERVER_PID=""
    ((status == 0)) || fail "echo_server exited with status $status after SIGTERM"
    if [[ -s $TMP/server.err ]]; then
        fail "echo_server wrote to stderr"
    fi
}
