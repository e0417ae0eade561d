#!/usr/bin/env python3
"""The Python references: echo servers on the standard library's socketserver.

    py_echo.py --server tcp|threading|forking|udp|unix-threading|http --address ADDR

tcp: TCPServer; threading: ThreadingTCPServer; forking: ForkingTCPServer
(max_children raised to 100, so that 50 persistent clients are served at
once); udp: UDPServer; unix-threading: ThreadingUnixStreamServer (ADDR is a
path, removed at exit); http: http.server.ThreadingHTTPServer answering
GET / with 200 "Hello, world!\n" (text/plain, HTTP/1.1 keep-alive), as
c_examples/http_hello does. ADDR is HOST:PORT for the others (port 0: any). A
stream handler echoes what each recv() returns until EOF; the datagram
handler sends each datagram back. TCP_NODELAY on TCP connections.

Prints "listening on ADDR" (flushed), like c_examples/echo_server, and
exits 0 on SIGINT/SIGTERM (server.shutdown() from a helper thread).
"""
import argparse
import http.server
import os
import signal
import socket
import socketserver
import sys
import threading


class StreamEcho(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionError:
                return
            if not data:
                return
            try:
                sock.sendall(data)
            except ConnectionError:
                return


class DatagramEcho(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The headers and the body go out in two writes: without TCP_NODELAY,
    # Nagle's algorithm and the client's delayed ACK cost 40 ms a request.
    disable_nagle_algorithm = True
    BODY = b"Hello, world!\n"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        self.wfile.write(self.BODY)

    def log_message(self, format, *args):
        pass


class Forking(socketserver.ForkingTCPServer):
    max_children = 100


SERVERS = {
    "tcp": (socketserver.TCPServer, StreamEcho),
    "threading": (socketserver.ThreadingTCPServer, StreamEcho),
    "forking": (Forking, StreamEcho),
    "udp": (socketserver.UDPServer, DatagramEcho),
    "unix-threading": (socketserver.ThreadingUnixStreamServer, StreamEcho),
    "http": (http.server.ThreadingHTTPServer, Hello),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, choices=sorted(SERVERS))
    parser.add_argument("--address", required=True)
    args = parser.parse_args()
    cls, handler = SERVERS[args.server]
    if args.server.startswith("unix"):
        address = args.address
        if os.path.exists(address):
            os.unlink(address)
    else:
        host, _, port = args.address.rpartition(":")
        address = (host.strip("[]"), int(port))
    cls.allow_reuse_address = True
    cls.daemon_threads = True
    server = cls(address, handler)
    if args.server.startswith("unix"):
        shown = address
    else:
        shown = "%s:%d" % server.server_address[:2]

    def stop(signo, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print("listening on " + shown, flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()
        if args.server.startswith("unix"):
            try:
                os.unlink(address)
            except FileNotFoundError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
