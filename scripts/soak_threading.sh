#!/usr/bin/env bash
# soak_threading.sh: does SS_THREADING stay flat under load? (Python's
# bpo-37193: ThreadingMixIn kept a list of every finished thread.)
#
# Usage: make && scripts/soak_threading.sh
#   Needs build/echo_server (built by `make`) and python3. Starts
#   `build/echo_server --transport tcp --mode threading --address 127.0.0.1:0`
#   and drives it with 100,000 sequential short requests from a python3
#   client on 127.0.0.1 (connect, send 16 bytes, read the echo, close).
#   Every 10,000 requests it prints the server's VmRSS and thread count
#   (from /proc/<pid>/status and /proc/<pid>/task, once the last handler
#   thread has had up to 2 s to end). Fails (exit 1) if the thread count is
#   ever above its idle value, if VmRSS grows by more than the bound between
#   the first sample and the last, if a request fails, or if the run takes
#   too long. Exit 0 when all is well; SIGTERM must stop the server with
#   status 0 too.
#
# Environment (optional):
#   SOAK_REQUESTS        requests to make (default 100000)
#   SOAK_SAMPLE_EVERY    sample interval in requests (default 10000)
#   SOAK_MAX_RSS_GROWTH  allowed VmRSS growth from the first sample to the
#                        last, in KiB (default 4096)
#   SOAK_TIME_LIMIT      seconds the whole run may take (default 600)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
REQUESTS=${SOAK_REQUESTS:-100000}
SAMPLE_EVERY=${SOAK_SAMPLE_EVERY:-10000}
MAX_RSS_GROWTH=${SOAK_MAX_RSS_GROWTH:-4096}
TIME_LIMIT=${SOAK_TIME_LIMIT:-600}

lib_init soak_threading
start_server threading
echo "soak_threading: echo_server --mode threading (pid $SERVER_PID) listening on $ADDRESS"
echo "soak_threading: $REQUESTS requests, VmRSS growth bound ${MAX_RSS_GROWTH} KiB, time limit ${TIME_LIMIT} s"
if [[ $(cat /proc/sys/net/ipv4/tcp_tw_reuse 2>/dev/null || echo 1) == 0 ]]; then
    echo "soak_threading: note: net.ipv4.tcp_tw_reuse is 0; the client waits when it runs out of ports"
fi

status=0
timeout --kill-after=5 "$TIME_LIMIT" python3 - "$SERVER_PID" "$PORT" "$REQUESTS" "$SAMPLE_EVERY" \
    "$MAX_RSS_GROWTH" <<'EOF' || status=$?
import errno, os, socket, sys, time

pid, port, requests, every, max_growth = (int(a) for a in sys.argv[1:6])

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")

def threads():
    return len(os.listdir(f"/proc/{pid}/task"))

def settle(idle):
    # Handler threads are detached: the last one may still be ending.
    deadline = time.monotonic() + 2
    while threads() > idle and time.monotonic() < deadline:
        time.sleep(0.01)
    return threads(), rss_kib()

def request(n):
    msg = b"req %11d\n" % n
    for attempt in range(500):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(("127.0.0.1", port))
            break
        except OSError as e:
            s.close()
            if e.errno != errno.EADDRNOTAVAIL:
                raise
            time.sleep(0.1)  # out of ephemeral ports: wait for TIME_WAIT
    else:
        raise RuntimeError("no ephemeral port for 50 s")
    with s:
        s.sendall(msg)
        echo = b""
        while len(echo) < len(msg):
            chunk = s.recv(len(msg) - len(echo))
            if not chunk:
                raise RuntimeError(f"request {n}: connection closed after {len(echo)} bytes")
            echo += chunk
        if echo != msg:
            raise RuntimeError(f"request {n}: sent {msg!r}, got {echo!r}")
        s.shutdown(socket.SHUT_WR)
        if s.recv(1) != b"":
            raise RuntimeError(f"request {n}: extra bytes after the echo")

idle = threads()
start = time.monotonic()
print(f"  {0:>7} requests: {idle:>3} threads, VmRSS {rss_kib():>7} KiB (idle)", flush=True)
samples = []
for n in range(1, requests + 1):
    request(n)
    if n % every == 0 or n == requests:
        t, rss = settle(idle)
        samples.append((n, t, rss))
        rate = n / (time.monotonic() - start)
        print(f"  {n:>7} requests: {t:>3} threads, VmRSS {rss:>7} KiB  ({rate:.0f} requests/s)",
              flush=True)
        if t > idle:
            print(f"FAIL: {t} threads after {n} requests, {idle} when idle", file=sys.stderr)
            sys.exit(1)

first, last = samples[0], samples[-1]
growth = last[2] - first[2]
peak = max(s[2] for s in samples)
print(f"  VmRSS: {first[2]} KiB after {first[0]} requests, {last[2]} KiB after {last[0]} "
      f"(growth {growth:+d} KiB, peak {peak} KiB, bound {max_growth} KiB); "
      f"threads idle {idle}, at most {max(s[1] for s in samples)} when sampled; "
      f"{requests} requests in {time.monotonic() - start:.1f} s")
if growth > max_growth:
    print(f"FAIL: VmRSS grew by {growth} KiB (bound {max_growth} KiB)", file=sys.stderr)
    sys.exit(1)
EOF
check_client "$status"
stop_server
echo "soak_threading: passed (thread count back to idle, VmRSS flat, SIGTERM -> exit 0)"
