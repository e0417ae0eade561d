#!/usr/bin/env bash
# forking_zombies.sh: does SS_FORKING reap every child it forks?
#
# Usage: make && scripts/forking_zombies.sh
#   Needs build/echo_server (built by `make`) and python3. Starts
#   `build/echo_server --transport tcp --mode forking --address 127.0.0.1:0`,
#   makes 2,000 sequential short requests from a python3 client on
#   127.0.0.1 (connect, send 16 bytes, read the echo, close), counting the
#   server's zombie children (/proc/*/stat: ppid is the server, state Z)
#   every 100 requests. Then it allows three poll intervals (1.5 s) for the
#   last children to be reaped and checks that the server has no child left
#   at all, zombie or not. Exit 1 if a zombie (or any child) remains, if
#   zombies piled up during the run (more than max_children, 40), if a
#   request fails, or if SIGTERM does not stop the server with status 0;
#   exit 0 otherwise.
#
# Environment (optional):
#   ZOMBIE_REQUESTS   requests to make (default 2000)
#   ZOMBIE_TIME_LIMIT seconds the client may take (default 300)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
REQUESTS=${ZOMBIE_REQUESTS:-2000}
TIME_LIMIT=${ZOMBIE_TIME_LIMIT:-300}

lib_init forking_zombies
start_server forking
echo "forking_zombies: echo_server --mode forking (pid $SERVER_PID) listening on $ADDRESS"

status=0
timeout --kill-after=5 "$TIME_LIMIT" python3 - "$SERVER_PID" "$PORT" "$REQUESTS" <<'EOF' || status=$?
import errno, os, socket, sys, time

pid, port, requests = (int(a) for a in sys.argv[1:4])
MAX_CHILDREN = 40        # the library's default max_children
REAP_ALLOWANCE = 1.5     # three poll intervals of 500 ms

def children():
    """(pid, state) of every child of the server, from /proc/*/stat."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone already
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 2 and int(fields[1]) == pid:
            found.append((int(entry), fields[0]))
    return found

def zombies():
    return sum(1 for _, state in children() if state == "Z")

def request(n):
    msg = b"req %11d\n" % n
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
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

start = time.monotonic()
most = 0
for n in range(1, requests + 1):
    request(n)
    if n % 100 == 0:
        most = max(most, zombies())
    if n % 500 == 0 or n == requests:
        print(f"  {n:>6} requests: {len(children())} children, {zombies()} zombies now, "
              f"at most {most} zombies seen so far", flush=True)
elapsed = time.monotonic() - start
right_after = children()
deadline = time.monotonic() + REAP_ALLOWANCE
while children() and time.monotonic() < deadline:
    time.sleep(0.01)
waited = REAP_ALLOWANCE - max(0.0, deadline - time.monotonic())
left = children()
print(f"  {requests} requests in {elapsed:.1f} s; right after the last: {len(right_after)} children "
      f"({sum(1 for _, s in right_after if s == 'Z')} zombies); after {waited:.2f} s: "
      f"{len(left)} children ({sum(1 for _, s in left if s == 'Z')} zombies); "
      f"at most {most} zombies seen during the run")
if left:
    print(f"FAIL: children still there {REAP_ALLOWANCE} s after the last request: {left}",
          file=sys.stderr)
    sys.exit(1)
if most > MAX_CHILDREN:
    print(f"FAIL: {most} zombies at once during the run: reaping does not keep up",
          file=sys.stderr)
    sys.exit(1)
EOF
check_client "$status"
stop_server
echo "forking_zombies: passed (no zombie, no child left, SIGTERM -> exit 0)"
