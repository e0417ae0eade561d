"""Benchmark: the binding's ThreadingTCPServer against the standard module's
on the same echo handler, and shutdown() latency.

    python3 bindings/python/bench.py [--seconds S] [--clients N]

Echo: N client threads (a separate process, so that the clients do not
share the server's GIL), each with its own connection sending a 64-byte
line and reading it back, closed loop, for S seconds; requests/s per
server, alternating binding / standard module twice. (Both run the same
Python handler: StreamRequestHandler reading a line and writing it back.)

shutdown(): serve_forever(poll_interval=0.5) running idle on a thread,
time from calling shutdown() until serve_forever has returned (the
standard module waits for its poll interval: up to 0.5 s; the library's
loop wakes at once).
"""

import argparse
import os
import socket
import socketserver as std
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import libsocketserver as lib  # noqa: E402

CLIENT = r"""
import socket, sys, threading, time
port, clients, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
line = b"x" * 63 + b"\n"
counts = [0] * clients
start = threading.Event()
def run(i):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    start.wait()
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        s.sendall(line)
        if f.readline() != line:
            raise SystemExit("bad echo")
        n += 1
    counts[i] = n
    s.close()
threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
for t in threads: t.start()
time.sleep(0.2)
start.set()
for t in threads: t.join()
print(sum(counts) / seconds)
"""


def make_handler(module):
    class Echo(module.StreamRequestHandler):
        disable_nagle_algorithm = True

        def handle(self):
            for line in self.rfile:
                self.wfile.write(line)
    return Echo


def echo_rate(module, clients, seconds):
    server = module.ThreadingTCPServer(("127.0.0.1", 0), make_handler(module))
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        out = subprocess.run(
            [sys.executable, "-c", CLIENT, str(server.server_address[1]),
             str(clients), str(seconds)],
            check=True, capture_output=True, text=True, timeout=seconds + 30)
        return float(out.stdout.strip())
    finally:
        server.shutdown()
        t.join()
        server.server_close()


def shutdown_latency(module, rounds=5):
    times = []
    for _ in range(rounds):
        server = module.TCPServer(("127.0.0.1", 0), module.BaseRequestHandler)
        t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5})
        t.start()
        time.sleep(0.1)
        start = time.perf_counter()
        server.shutdown()
        t.join()
        times.append(time.perf_counter() - start)
        server.server_close()
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    print("python bench: %s, libsocketserver %s (%s)"
          % (sys.version.split()[0], lib.library_version(), lib._lib.path))
    rates = {"binding": [], "stdlib": []}
    for _ in range(2):
        rates["binding"].append(echo_rate(lib, args.clients, args.seconds))
        rates["stdlib"].append(echo_rate(std, args.clients, args.seconds))
    b, s = statistics.mean(rates["binding"]), statistics.mean(rates["stdlib"])
    print("python echo (ThreadingTCPServer, %d clients, 64-byte lines): binding %.0f req/s, "
          "stdlib %.0f req/s, ratio %.2fx" % (args.clients, b, s, b / s))
    lb, ls = shutdown_latency(lib), shutdown_latency(std)
    print("python shutdown() latency (median of 5, poll_interval 0.5): binding %.2f ms, "
          "stdlib %.2f ms" % (lb * 1000, ls * 1000))


if __name__ == "__main__":
    main()
