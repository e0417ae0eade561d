"""The binding's own tests: the extras (thread pool, event mode), shutdown
from a handler, Ctrl-C, handler errors, misuse, forking from a
multi-threaded process, and callback lifetimes.

Plain unittest (pytest collects it too):
    python3 -m unittest discover -s bindings/python/tests -p 'test_binding.py'
"""

import gc
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if os.environ.get("LIBSOCKETSERVER_FROM_TREE", "1") == "1":
    sys.path.insert(0, os.path.dirname(HERE))

import libsocketserver as socketserver  # noqa: E402

HOST = "127.0.0.1"
TIMEOUT = 10


def serve_in_thread(server, **kw):
    t = threading.Thread(target=server.serve_forever, kwargs=kw, daemon=True)
    t.start()
    return t


def request(addr, data, family=socket.AF_INET):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect(addr)
        chunks = []
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except (ConnectionResetError, BrokenPipeError, OSError) as e:
            if isinstance(e, socket.timeout):
                raise
            # A refused request may be reset (closed with input unread).
        return b"".join(chunks)


class EchoLine(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline())


class ThreadPoolTest(unittest.TestCase):
    def test_pool_threads_and_queue(self):
        # Two workers: two handlers run at once (they meet at a barrier),
        # and no more than two distinct threads ever serve.
        barrier = threading.Barrier(2, timeout=TIMEOUT)
        idents = set()
        lock = threading.Lock()

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                with lock:
                    idents.add(threading.get_ident())
                line = self.rfile.readline()
                if line.startswith(b"pair"):
                    barrier.wait()
                self.wfile.write(line.upper())

        class Server(socketserver.ThreadPoolTCPServer):
            pool_threads = 2
            pool_queue_size = 4

        with Server((HOST, 0), Handler) as server:
            t = serve_in_thread(server)
            results = []

            def client(msg):
                results.append(request(server.server_address, msg))

            clients = [threading.Thread(target=client, args=(b"pair %d\n" % i,))
                       for i in range(2)]
            clients += [threading.Thread(target=client, args=(b"x%d\n" % i,))
                        for i in range(10)]
            for c in clients:
                c.start()
            for c in clients:
                c.join(TIMEOUT)
            self.assertEqual(len(results), 12)
            self.assertEqual(sorted(results)[:2], [b"PAIR 0\n", b"PAIR 1\n"])
            self.assertLessEqual(len(idents), 2)
            self.assertNotIn(threading.get_ident(), idents)
            self.assertEqual(server.queued_requests, 0)
            server.shutdown()
            t.join(TIMEOUT)
            self.assertFalse(t.is_alive())

    def test_bad_pool_settings_raise(self):
        class Server(socketserver.ThreadPoolTCPServer):
            pool_queue_size = 0  # the library refuses 0

        with self.assertRaises(ValueError):
            Server((HOST, 0), EchoLine)


class EventModeTest(unittest.TestCase):
    def test_line_protocol_and_post(self):
        events = []

        class Lines(socketserver.EventHandler):
            def on_open(self):
                events.append("open")
                self.conn.write(b"hello\n")

            def on_data(self, data):
                # Consume whole lines only; a partial line comes again.
                end = data.rfind(b"\n") + 1
                for line in data[:end].splitlines():
                    if line == b"later":
                        conn_id = self.conn.id
                        threading.Thread(target=self.server.post, args=(
                            conn_id, lambda conn: conn.write(b"posted\n"))).start()
                    else:
                        self.conn.write(line[::-1] + b"\n")
                return end

            def on_close(self):
                events.append("close")

        with socketserver.EventTCPServer((HOST, 0), Lines, threads=2) as server:
            t = serve_in_thread(server)
            with socket.create_connection(server.server_address, timeout=TIMEOUT) as s:
                f = s.makefile("rb")
                self.assertEqual(f.readline(), b"hello\n")
                s.sendall(b"ab")
                time.sleep(0.05)
                s.sendall(b"c\nxy")
                self.assertEqual(f.readline(), b"cba\n")
                s.sendall(b"z\nlater\n")
                self.assertEqual(f.readline(), b"zyx\n")
                self.assertEqual(f.readline(), b"posted\n")
                self.assertEqual(server.connections, 1)
                f.close()
            deadline = time.monotonic() + TIMEOUT
            while "close" not in events and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(events, ["open", "close"])
            server.shutdown()
            t.join(TIMEOUT)
            self.assertFalse(t.is_alive())

    def test_exception_in_on_data_closes_connection(self):
        errors = []

        class Bad(socketserver.EventHandler):
            def on_data(self, data):
                raise ValueError("bad input")

        class Server(socketserver.EventTCPServer):
            def handle_error(self, request, client_address):
                errors.append((sys.exc_info()[0], client_address))

        with Server((HOST, 0), Bad, threads=1) as server:
            t = serve_in_thread(server)
            with socket.create_connection(server.server_address, timeout=TIMEOUT) as s:
                s.sendall(b"x")
                self.assertEqual(s.recv(10), b"")  # closed by the server
            self.assertEqual(errors[0][0], ValueError)
            self.assertEqual(errors[0][1][0], HOST)
            server.shutdown()
            t.join(TIMEOUT)

    def test_datagrams(self):
        class Upper(socketserver.EventDatagramHandler):
            def on_datagram(self, data):
                if data == b"bad":
                    raise ValueError(data)
                self.reply(data.upper())

        errors = []

        class Server(socketserver.EventUDPServer):
            def handle_error(self, request, client_address):
                errors.append(sys.exc_info()[0])

        with Server((HOST, 0), Upper, threads=1) as server:
            t = serve_in_thread(server)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(TIMEOUT)
                s.sendto(b"bad", server.server_address)
                s.sendto(b"hello", server.server_address)
                data, addr = s.recvfrom(100)
                self.assertEqual(data, b"HELLO")
            self.assertEqual(errors, [ValueError])
            server.shutdown()
            t.join(TIMEOUT)

    def test_no_handle_request(self):
        with socketserver.EventTCPServer((HOST, 0), socketserver.EventHandler) as server:
            with self.assertRaises(RuntimeError):
                server.handle_request()


class HooksTest(unittest.TestCase):
    def test_overridden_hooks_are_called_in_order(self):
        for base in (socketserver.TCPServer, socketserver.ThreadingTCPServer,
                     socketserver.ThreadPoolTCPServer):
            calls = []
            done = threading.Event()

            class Server(base):
                def process_request(self, req, addr):
                    calls.append("process_request")
                    super().process_request(req, addr)

                def finish_request(self, req, addr):
                    calls.append("finish_request")
                    super().finish_request(req, addr)

                def shutdown_request(self, req):
                    calls.append("shutdown_request")
                    super().shutdown_request(req)

                def close_request(self, req):
                    calls.append("close_request")
                    super().close_request(req)
                    done.set()

                def service_actions(self):
                    if "service_actions" not in calls:
                        calls.append("service_actions")

            with Server((HOST, 0), EchoLine) as server:
                t = serve_in_thread(server, poll_interval=0.01)
                self.assertEqual(request(server.server_address, b"a\n"), b"a\n")
                self.assertTrue(done.wait(TIMEOUT))
                deadline = time.monotonic() + TIMEOUT
                while "service_actions" not in calls and time.monotonic() < deadline:
                    time.sleep(0.01)
                server.shutdown()
                t.join(TIMEOUT)
            requests = [c for c in calls if c != "service_actions"]
            self.assertEqual(requests, ["process_request", "finish_request",
                                        "shutdown_request", "close_request"], base.__name__)
            self.assertIn("service_actions", calls, base.__name__)


class StandardLibraryTest(unittest.TestCase):
    def test_http_server_on_the_binding(self):
        # http.server's handlers (built on the standard module's
        # StreamRequestHandler) served by the binding's threading server.
        import functools
        import http.server
        import urllib.request

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        with tempfile.TemporaryDirectory() as root:
            with open(os.path.join(root, "hello.txt"), "wb") as f:
                f.write(b"hello from libsocketserver\n")

            class Quiet(http.server.SimpleHTTPRequestHandler):
                def log_message(self, *args):
                    pass

            handler = functools.partial(Quiet, directory=root)
            with Server((HOST, 0), handler) as server:
                t = serve_in_thread(server)
                url = "http://%s:%d/hello.txt" % server.server_address
                for _ in range(3):
                    with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
                        self.assertEqual(r.read(), b"hello from libsocketserver\n")
                with self.assertRaises(urllib.error.HTTPError) as cm:
                    urllib.request.urlopen(url + ".missing", timeout=TIMEOUT)
                self.assertEqual(cm.exception.code, 404)
                cm.exception.close()
                server.shutdown()
                t.join(TIMEOUT)


class VerifyRequestTest(unittest.TestCase):
    def test_verify_request_in_every_mode(self):
        # verify_request runs on the serving thread with the socket the
        # handler then gets; refused requests are shut down (EOF); no
        # descriptor is left behind in this process.
        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline().strip()
                self.wfile.write(b"%s %d\n" % (line, id(self.request) in seen_ids))

        fds_before = len(os.listdir("/proc/self/fd"))
        modes = [socketserver.TCPServer, socketserver.ThreadingTCPServer,
                 socketserver.ThreadPoolTCPServer]
        if hasattr(os, "fork"):
            modes.append(socketserver.ForkingTCPServer)
        for base in modes:
            seen_ids = set()
            serving = []

            class Server(base):
                def verify_request(self, req, client_address):
                    serving.append(threading.get_ident())
                    seen_ids.add(id(req))
                    return client_address[0] == HOST and len(serving) % 2 == 1

            with Server((HOST, 0), Handler) as server:
                t = serve_in_thread(server, poll_interval=0.05)
                out = [request(server.server_address, b"r%d\n" % i) for i in range(4)]
                server.shutdown()
                t.join(TIMEOUT)
            self.assertEqual(out, [b"r0 1\n", b"", b"r2 1\n", b""], base.__name__)
            self.assertEqual(set(serving), {t.ident}, base.__name__)
        self.assertEqual(len(os.listdir("/proc/self/fd")), fds_before)


class ShutdownTest(unittest.TestCase):
    def test_shutdown_from_handler(self):
        # The standard module deadlocks here; the binding returns at once
        # and serve_forever ends after the request.
        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.server.shutdown()
                self.wfile.write(b"bye\n")

        with socketserver.TCPServer((HOST, 0), Handler) as server:
            t = serve_in_thread(server)
            self.assertEqual(request(server.server_address, b""), b"bye\n")
            t.join(TIMEOUT)
            self.assertFalse(t.is_alive())

    def test_shutdown_latency(self):
        with socketserver.ThreadingTCPServer((HOST, 0), EchoLine) as server:
            t = serve_in_thread(server, poll_interval=5)
            time.sleep(0.05)
            start = time.monotonic()
            server.shutdown()  # waits for the loop, as the standard module
            self.assertLess(time.monotonic() - start, 1.0)
            self.assertFalse(t.is_alive())

    def test_shutdown_from_signal_handler_on_the_serving_thread(self):
        # A signal handler calling shutdown() runs on the main thread, which
        # is the one serving: shutdown() must not wait for itself.
        if threading.current_thread() is not threading.main_thread():
            self.skipTest("needs the main thread")
        with socketserver.ThreadingTCPServer((HOST, 0), EchoLine) as server:
            previous = signal.signal(signal.SIGUSR1, lambda *a: server.shutdown())
            try:
                main = threading.get_ident()
                timer = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGUSR1))
                timer.start()
                start = time.monotonic()
                server.serve_forever()
                self.assertLess(time.monotonic() - start, 5)
                timer.join()
            finally:
                signal.signal(signal.SIGUSR1, previous)

    def test_no_stale_shutdown_after_handle_request_raised(self):
        # SystemExit from a handler under handle_request reaches the caller
        # and leaves no shutdown pending: serve_forever then serves.
        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline()
                if line == b"exit\n":
                    raise SystemExit(3)
                self.wfile.write(line)

        with socketserver.TCPServer((HOST, 0), Handler) as server:
            c = threading.Thread(target=request, args=(server.server_address, b"exit\n"))
            c.start()
            with self.assertRaises(SystemExit):
                server.handle_request()
            c.join(TIMEOUT)
            t = serve_in_thread(server)
            self.assertEqual(request(server.server_address, b"again\n"), b"again\n")
            self.assertTrue(t.is_alive())
            server.shutdown()
            t.join(TIMEOUT)

    def test_server_close_from_a_handler_thread(self):
        # Allowed on a handler thread: the loop in the other thread returns,
        # and the C server is freed once it has.
        closed = threading.Event()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                self.server.server_close()
                closed.set()

        server = socketserver.ThreadingTCPServer((HOST, 0), Handler)
        t = serve_in_thread(server)
        request(server.server_address, b"")
        self.assertTrue(closed.wait(TIMEOUT))
        t.join(TIMEOUT)
        self.assertFalse(t.is_alive())
        self.assertIsNone(server._ss_ptr)
        self.assertEqual(server.fileno(), -1)
        with self.assertRaises(ValueError):
            server.serve_forever()

    def test_server_close_from_handler_refused(self):
        seen = []

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                try:
                    self.server.server_close()
                except RuntimeError as e:
                    seen.append(str(e))
                self.server.shutdown()

        with socketserver.TCPServer((HOST, 0), Handler) as server:
            t = serve_in_thread(server)
            request(server.server_address, b"")
            t.join(TIMEOUT)
        self.assertEqual(len(seen), 1)
        self.assertIn("server_close", seen[0])


class ErrorsTest(unittest.TestCase):
    def test_handle_error_gets_the_exception(self):
        got = []

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                if self.rfile.readline() == b"boom\n":
                    raise KeyError("boom")
                self.wfile.write(b"ok\n")

        class Server(socketserver.ThreadingTCPServer):
            def handle_error(self, req, client_address):
                got.append((sys.exc_info()[0], client_address[0],
                            isinstance(req, socket.socket)))

        with Server((HOST, 0), Handler) as server:
            t = serve_in_thread(server)
            self.assertEqual(request(server.server_address, b"boom\n"), b"")
            self.assertEqual(request(server.server_address, b"fine\n"), b"ok\n")
            server.shutdown()
            t.join(TIMEOUT)
        self.assertEqual(got, [(KeyError, HOST, True)])

    def test_exception_from_sync_handle_error_reaches_caller(self):
        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                raise ValueError("in handle")

        class Server(socketserver.TCPServer):
            def handle_error(self, req, client_address):
                self.close_request(req)
                raise RuntimeError("from handle_error")

        with Server((HOST, 0), Handler) as server:
            t = threading.Thread(target=request, args=(server.server_address, b""))
            t.start()
            with self.assertRaisesRegex(RuntimeError, "from handle_error"):
                server.serve_forever()
            t.join(TIMEOUT)

    def test_misuse_raises(self):
        server = socketserver.TCPServer((HOST, 0), EchoLine)
        addr = server.server_address
        with self.assertRaises(OSError) as cm:
            socketserver.TCPServer(addr, EchoLine)
        self.assertEqual(cm.exception.errno, __import__("errno").EADDRINUSE)
        server.server_close()
        server.server_close()  # twice is fine
        with self.assertRaises(ValueError):
            server.serve_forever()
        with self.assertRaises(ValueError):
            server.handle_request()
        server.shutdown()  # harmless after close
        with self.assertRaises(OverflowError):
            socketserver.UDPServer((HOST, 70000), socketserver.DatagramRequestHandler)
        with self.assertRaises(TypeError):
            socketserver.TCPServer("not a tuple", EchoLine)
        with self.assertRaises(OSError):
            socketserver.TCPServer(("no-such-host.invalid", 0), EchoLine)
        with self.assertRaises(TypeError):
            socketserver.BaseServer((HOST, 0), EchoLine)._ss_create()

    def test_serving_twice_raises(self):
        with socketserver.TCPServer((HOST, 0), EchoLine) as server:
            t = serve_in_thread(server)
            deadline = time.monotonic() + TIMEOUT
            while server._ss_serving is None and time.monotonic() < deadline:
                time.sleep(0.01)
            with self.assertRaises(RuntimeError):
                server.serve_forever()
            # The first loop still serves, and shutdown() still waits for it.
            self.assertEqual(request(server.server_address, b"x\n"), b"x\n")
            server.shutdown()
            self.assertFalse(t.is_alive())

    def test_bind_and_activate_false(self):
        server = socketserver.TCPServer((HOST, 0), EchoLine, bind_and_activate=False)
        try:
            server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.server_bind()
            server.server_activate()
            self.assertEqual(server.server_address, server.socket.getsockname())
            t = threading.Thread(target=server.handle_request)
            t.start()
            self.assertEqual(request(server.server_address, b"hi\n"), b"hi\n")
            t.join(TIMEOUT)
        finally:
            server.server_close()

    def test_handle_request_timeout(self):
        calls = []

        class Server(socketserver.TCPServer):
            timeout = 0.05

            def handle_timeout(self):
                calls.append(1)

        with Server((HOST, 0), EchoLine) as server:
            start = time.monotonic()
            server.handle_request()
            self.assertGreaterEqual(time.monotonic() - start, 0.04)
        self.assertEqual(calls, [1])


class ForkingTest(unittest.TestCase):
    @unittest.skipUnless(hasattr(os, "fork"), "needs fork")
    def test_fork_while_other_threads_hold_the_gil(self):
        # A thread busy in Python code holds the GIL most of the time: the
        # library's forks must still give working children (the GIL is held
        # by the forking thread, and the child resets the interpreter).
        stop = threading.Event()

        def spin():
            n = 0
            while not stop.is_set():
                n += 1

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline()
                threading.Thread(target=lambda: None).start()  # threads work in the child
                self.wfile.write(b"%d %s" % (os.getpid(), line))

        spinner = threading.Thread(target=spin, daemon=True)
        spinner.start()
        # A tiny switch interval: the spinner asks for the GIL within
        # microseconds of waiting, so such a request is usually pending when
        # the library forks (a child then hung at its first bytecode before
        # the after-fork reset ran first).
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        self.addCleanup(sys.setswitchinterval, interval)
        try:
            with socketserver.ForkingTCPServer((HOST, 0), Handler) as server:
                t = serve_in_thread(server, poll_interval=0.05)
                pids = set()
                for i in range(30):
                    pid, rest = request(server.server_address, b"n%d\n" % i).split(b" ", 1)
                    self.assertEqual(rest, b"n%d\n" % i)
                    pids.add(int(pid))
                self.assertEqual(len(pids), 30)
                self.assertNotIn(os.getpid(), pids)
                server.shutdown()
                t.join(TIMEOUT)
            self.assertEqual(server.active_children, 0)
        finally:
            stop.set()
            spinner.join()


class LifetimeTest(unittest.TestCase):
    def test_daemon_thread_outlives_server_object(self):
        # server_close does not wait for daemon threads; the server object
        # is dropped while a handler still runs. The handler's callbacks
        # stay alive until the library releases the user data.
        release = threading.Event()
        started = threading.Event()
        finished = threading.Event()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                started.set()
                release.wait(TIMEOUT)
                self.request.sendall(b"late\n")

            def finish(self):
                finished.set()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True

        server = Server((HOST, 0), Handler)
        addr = server.server_address
        t = serve_in_thread(server)
        s = socket.create_connection(addr, timeout=TIMEOUT)
        self.assertTrue(started.wait(TIMEOUT))
        server.shutdown()
        t.join(TIMEOUT)
        server.server_close()  # returns at once (daemon thread)
        del server
        gc.collect()
        release.set()
        self.assertTrue(finished.wait(TIMEOUT))
        self.assertEqual(s.recv(10), b"late\n")
        s.close()


EXIT_SCRIPT = textwrap.dedent(r"""
    import socket, sys, threading, time
    sys.path.insert(0, sys.argv[1])
    import libsocketserver as socketserver
    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            time.sleep(0.2)
            self.wfile.write(b"x")
    server = getattr(socketserver, sys.argv[2])(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = socket.create_connection(server.server_address)
    time.sleep(0.05)
    class SlowFinalizer:
        # Runs while the interpreter finalizes, with the GIL released: any
        # library thread still calling into Python then would be ended.
        def __del__(self):
            time.sleep(0.3)
    slow = SlowFinalizer()
    print("exiting", flush=True)
""")


class ExitTest(unittest.TestCase):
    def test_exit_with_a_server_still_serving(self):
        # The interpreter exits while serve_forever runs in a daemon thread
        # and a request is in its handler: the binding's atexit hook closes
        # the server before the interpreter refuses threads (without it, a
        # library thread entering Python during finalization aborted the
        # process in about half of the runs).
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(EXIT_SCRIPT)
        self.addCleanup(os.unlink, f.name)
        for cls in ["ThreadingTCPServer", "ThreadPoolTCPServer", "TCPServer"] * 2:
            proc = subprocess.run(
                [sys.executable, f.name, os.path.dirname(HERE), cls],
                capture_output=True, timeout=TIMEOUT)
            self.assertEqual((proc.returncode, proc.stdout), (0, b"exiting\n"),
                             (cls, proc.stderr.decode()))


INTERRUPT_SCRIPT = textwrap.dedent(r"""
    import os, socket, sys, threading, time
    sys.path.insert(0, sys.argv[1])
    import libsocketserver as socketserver
    where = sys.argv[2]
    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            line = self.rfile.readline()
            if where == "handler":
                print("IN_HANDLER", flush=True)
                self.rfile.readline()  # blocks until Ctrl-C
            self.wfile.write(line)
    cls = {"sync": socketserver.TCPServer, "handler": socketserver.TCPServer,
           "threading": socketserver.ThreadingTCPServer,
           "forking": socketserver.ForkingTCPServer}[where]
    server = cls(("127.0.0.1", 0), Handler)
    print("PORT", server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
    else:
        print("returned without KeyboardInterrupt", flush=True)
    # The loop is stopped: handle_request with no client times out at once
    # (a running loop would refuse it), and the server closes cleanly.
    server.timeout = 0.01
    server.handle_request()
    server.server_close()
    try:  # nothing listens any more
        socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5)
    except ConnectionRefusedError:
        pass
    else:
        raise SystemExit("still listening")
    print("CLOSED", flush=True)
""")


class CallbackPrologueTest(unittest.TestCase):
    """A Ctrl-C handler raises KeyboardInterrupt inside a server's
    callbacks; raised while a callback is still entering (right after it
    counted itself in), it must not escape into ctypes, which would print
    and drop it and leave the loop running for ever."""

    def test_interrupt_while_entering_a_callback_is_kept(self):
        import weakref

        class Interrupting(list):
            def append(self, item):
                super().append(item)
                raise KeyboardInterrupt  # as the SIGINT handler would, here

        server = socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler)
        try:
            socketserver._tls.servers = Interrupting()
            try:
                socketserver._on_service(weakref.ref(server))  # must not raise
                leftover = list(socketserver._tls.servers)
            finally:
                del socketserver._tls.servers
            self.assertEqual(leftover, [])
            self.assertIsInstance(server._ss_pending, KeyboardInterrupt)
        finally:
            server._ss_pending = None
            server.server_close()


class KeyboardInterruptTest(unittest.TestCase):
    def run_interrupted(self, where):
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(INTERRUPT_SCRIPT)
        self.addCleanup(os.unlink, f.name)
        env = dict(os.environ)
        proc = subprocess.Popen(
            [sys.executable, f.name, os.path.dirname(HERE), where],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            port = int(proc.stdout.readline().split()[1])
            # Serving: one request round trip first.
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
                s.sendall(b"ping\n")
                if where == "handler":
                    self.assertEqual(proc.stdout.readline(), b"IN_HANDLER\n")
                else:
                    self.assertEqual(s.recv(10), b"ping\n")
                start = time.monotonic()
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=TIMEOUT)
            elapsed = time.monotonic() - start
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 0, err.decode())
        self.assertEqual(out.decode().split(), ["KeyboardInterrupt", "CLOSED"], err.decode())
        self.assertLess(elapsed, 5)
        return err

    def test_ctrl_c_sync(self):
        self.run_interrupted("sync")

    def test_ctrl_c_in_handler(self):
        self.run_interrupted("handler")

    def test_ctrl_c_threading(self):
        self.run_interrupted("threading")

    @unittest.skipUnless(hasattr(os, "fork"), "needs fork")
    def test_ctrl_c_forking(self):
        self.run_interrupted("forking")


if __name__ == "__main__":
    unittest.main()
