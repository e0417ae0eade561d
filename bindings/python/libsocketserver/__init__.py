"""Python's ``socketserver`` on top of libsocketserver (a C library in Rust).

Use it in place of the standard module::

    import libsocketserver as socketserver

The classes have the standard module's names, class attributes and
overridable methods. The library does the accepting, the datagram
receiving, the threads (one per request, or a pool), the forks, and
shutdown; the request handlers are plain Python, as in the standard module.

Where a hook runs (see README.md for the details):

* ``verify_request``: on the serving thread, called by the library before
  the request goes to its thread or child (only set when overridden).
* ``process_request``: where the library runs the request, i.e. on the
  serving thread (TCPServer, ...), on the request's thread (ThreadingMixIn,
  ThreadPoolMixIn) or in the request's child process (ForkingMixIn), not
  on the serving thread as in the standard module. ``finish_request``,
  ``handle_error`` and ``shutdown_request`` are called from there as the
  standard module calls them.
* ``service_actions``: by the library's loop, after requests and at least
  every ``poll_interval`` seconds when idle.
* ``handle_timeout``: by ``handle_request`` when ``timeout`` passes.

Extras: ``shutdown()`` returns at once when called from a handler or hook
of the server (the standard module deadlocks there), ``ThreadPoolMixIn``
(a fixed pool of threads fed by a bounded queue) and the event-mode
servers ``EventTCPServer`` / ``EventUnixStreamServer`` (non-blocking
``on_data`` callbacks on the library's epoll loops).
"""

import atexit
import contextlib
import functools
import ctypes
import io
import itertools
import os
import select
import signal
import socket
import sys
import threading
import time
import weakref

from . import _lib
from ._lib import (
    SS_OK, SS_ERR_TIMEOUT, SS_ERR_SHUT_DOWN, SS_ERR_CLOSED, SS_ERR_HANDLER,
    SS_ERR_INVALID_ARGUMENT, SS_ERR_WRONG_STATE, SS_ERR_UNSUPPORTED,
    SS_ERR_NULL_POINTER, SS_ERR_IO, SS_ERR_ADDRESS,
    SS_TCP, SS_UDP, SS_UNIX_STREAM, SS_UNIX_DATAGRAM,
    SS_SYNC, SS_THREADING, SS_FORKING, SS_THREAD_POOL, SS_EVENT,
)

__version__ = "0.1.0"

__all__ = ["BaseServer", "TCPServer", "UDPServer",
           "ThreadingUDPServer", "ThreadingTCPServer",
           "BaseRequestHandler", "StreamRequestHandler",
           "DatagramRequestHandler", "ThreadingMixIn",
           "ThreadPoolMixIn", "ThreadPoolTCPServer", "ThreadPoolUDPServer",
           "EventTCPServer", "EventConnection", "EventHandler", "Error",
           "EventUDPServer", "EventDatagramHandler",
           "library_version"]
if hasattr(os, "fork"):
    __all__.extend(["ForkingUDPServer", "ForkingTCPServer", "ForkingMixIn"])
if hasattr(socket, "AF_UNIX"):
    __all__.extend(["UnixStreamServer", "UnixDatagramServer",
                    "ThreadingUnixStreamServer",
                    "ThreadingUnixDatagramServer",
                    "ThreadPoolUnixStreamServer",
                    "EventUnixStreamServer", "EventUnixDatagramServer"])
    if hasattr(os, "fork"):
        __all__.extend(["ForkingUnixStreamServer", "ForkingUnixDatagramServer"])

# How often the library's loop returns to Python when idle (service_actions,
# and the moment a Ctrl-C is noticed), in milliseconds.
_LOOP_TURN_MS = 50


def library_version():
    """The loaded library's version string, e.g. "0.1.0"."""
    return _lib.ss_version().decode()


class Error(OSError):
    """A library call failed. ``status`` is the library's ss_status code
    (a number), ``errno`` the OS error when a system call failed."""

    def __init__(self, status, message, errno_=0):
        if errno_:
            super().__init__(errno_, message)
        else:
            super().__init__(message)
        self.status = status


def _raise_status(status, what):
    message = "%s: %s" % (what, _lib.last_error() or _lib.status_str(status))
    if status in (SS_ERR_INVALID_ARGUMENT, SS_ERR_NULL_POINTER):
        raise ValueError(message)
    if status in (SS_ERR_WRONG_STATE, SS_ERR_UNSUPPORTED):
        raise RuntimeError(message)
    if status == SS_ERR_TIMEOUT:
        raise TimeoutError(message)
    errno_ = _lib.ss_last_os_error() if status == SS_ERR_IO else 0
    raise Error(status, message, errno_)


def _check(status, what):
    if status != SS_OK:
        _raise_status(status, what)


# ---------------------------------------------------------------------------
# User data and callback lifetimes.
#
# Each server's ctypes callbacks (CFUNCTYPE objects: freeing one while the
# library can still call it would crash) are kept in _KEEP under an integer
# key, passed to ss_server_new() as the user data. The library calls
# _free_user_data(key) exactly once, when no request uses the server any more
# (after ss_server_free(), and after the last daemon thread's request), and
# only then are the callbacks released. The callbacks reach the Python server
# through a weak reference, so an unclosed server can still be collected
# (its __del__ frees the C server).
_KEEP = {}
_KEEP_LOCK = threading.Lock()
_KEYS = itertools.count(1)


def _free_user_data_py(key):
    with _KEEP_LOCK:
        _KEEP.pop(key or 0, None)


_free_user_data = _lib.FREE_FN(_free_user_data_py)

# Servers whose C server is alive, closed at interpreter exit (see
# _close_all_at_exit).
_LIVE = weakref.WeakSet()


def _close_all_at_exit():
    """At interpreter exit (atexit runs before the interpreter starts
    refusing threads): close every server still open, which stops its loops
    (a serve_forever left running in a daemon thread) and waits for its
    non-daemon requests, so that no library thread calls into Python while
    the interpreter is finalizing (a thread entering Python then is ended
    with pthread_exit, which aborts the process inside the library's Rust
    frames). Requests on daemon_threads servers are not waited for: one
    still running Python code at exit can still end the process that way."""
    for server in list(_LIVE):
        ptr = server._ss_ptr
        if ptr and not server._ss_closed:
            # Only the library's close: a loop it stops returns normally
            # (and does not free the server, which may not race the close).
            _lib.ss_server_close(ptr)


atexit.register(_close_all_at_exit)

# Which servers' callbacks the current thread is running (shutdown() does
# not wait for the loop from inside one of them).
_tls = threading.local()


@contextlib.contextmanager
def _in_callback(server):
    stack = getattr(_tls, "servers", None)
    if stack is None:
        stack = _tls.servers = []
    # The push inside the try: a KeyboardInterrupt raised right after it
    # (the SIGINT handler raises inside callbacks) must not leave it behind.
    try:
        stack.append(server)
        yield
    finally:
        if stack and stack[-1] is server:
            stack.pop()


def _never_raises(failed):
    """Decorates a ctypes callback (its first argument the server's weak
    reference): an exception raised while it enters or leaves its
    _in_callback block, outside its own try (a KeyboardInterrupt from the
    SIGINT handler), stops the loop and reaches the caller of serve_forever
    instead of being printed and dropped by ctypes; `failed` is returned."""
    def wrap(callback):
        @functools.wraps(callback)
        def guarded(ref, *args):
            try:
                return callback(ref, *args)
            except BaseException as e:
                server = ref()
                if server is not None:
                    _stop_with(server, e)
                return failed
        return guarded
    return wrap


def _inside_callback_of(server):
    return any(s is server for s in getattr(_tls, "servers", ()))


# ---------------------------------------------------------------------------
# Addresses.

def _address_string(family, address):
    """Python's server_address -> the library's address string."""
    if family == getattr(socket, "AF_UNIX", None):
        if isinstance(address, (bytes, bytearray)):
            address = bytes(address)
            if address.startswith(b"\0"):
                return "@" + address[1:].decode("utf-8", "surrogateescape")
            address = os.fsdecode(address)
        address = os.fspath(address)
        if not isinstance(address, str):
            raise TypeError("a Unix socket address must be str or bytes")
        if address.startswith("\0"):
            return "@" + address[1:]
        if address.startswith("@"):
            # A file whose name starts with '@', not an abstract name.
            return "./" + address
        if not address:
            raise ValueError("empty Unix socket path")
        return address
    if not isinstance(address, tuple) or len(address) < 2:
        raise TypeError("%s address must be a tuple (host, port)"
                        % ("AF_INET6" if family == socket.AF_INET6 else "AF_INET"))
    host, port = address[0], address[1]
    if not isinstance(port, int):
        raise TypeError("'%s' object cannot be interpreted as an integer"
                        % type(port).__name__)
    if not 0 <= port <= 65535:
        raise OverflowError("bind(): port must be 0-65535.")
    if isinstance(host, bytes):
        host = host.decode("idna")
    if not isinstance(host, str):
        raise TypeError("str, bytes or bytearray expected, not %s" % type(host).__name__)
    if host == "":
        host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    elif host == "<broadcast>":
        host = "255.255.255.255"
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


def _parse_sockaddr(raw):
    """A raw struct sockaddr (bytes) -> the address as Python's socket
    module gives it (a tuple for IP, a str or bytes for Unix, None for an
    unbound Unix datagram sender)."""
    if len(raw) < 2:
        return None
    family = int.from_bytes(raw[:2], sys.byteorder)
    if family == socket.AF_INET:
        port = int.from_bytes(raw[2:4], "big")
        return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    if family == socket.AF_INET6:
        port = int.from_bytes(raw[2:4], "big")
        flowinfo = int.from_bytes(raw[4:8], "big")
        scope = int.from_bytes(raw[24:28], sys.byteorder)
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope)
    if family == getattr(socket, "AF_UNIX", -1):
        path = raw[2:]
        if path.startswith(b"\0"):
            return path  # Linux abstract name, as bytes (as Python)
        return os.fsdecode(path.split(b"\0", 1)[0])
    return raw


def _request_client_address(req):
    buf = ctypes.create_string_buffer(128)
    n = ctypes.c_uint32(128)
    _check(_lib.ss_request_client_sockaddr(req, buf, ctypes.byref(n)),
           "ss_request_client_sockaddr")
    if n.value == 0:
        return None
    return _parse_sockaddr(buf.raw[:min(n.value, 128)])


def _conn_peer_address(conn):
    buf = ctypes.create_string_buffer(128)
    n = ctypes.c_uint32(128)
    if _lib.ss_conn_peer_sockaddr(conn, buf, ctypes.byref(n)) != SS_OK:
        return None
    return _parse_sockaddr(buf.raw[:min(n.value, 128)])


def _socket_from_fd(fd):
    """A socket.socket of our own (a duplicate of the library's descriptor):
    closing it, as shutdown_request does, never closes the library's."""
    sock = socket.socket(fileno=os.dup(fd))
    timeout = socket.getdefaulttimeout()
    sock.settimeout(timeout)
    return sock


# ---------------------------------------------------------------------------
# Servers.

class BaseServer:
    """Base class for server classes (Python's BaseServer).

    The library needs a transport, so instantiate TCPServer, UDPServer,
    UnixStreamServer, UnixDatagramServer (or a mix-in combination)."""

    timeout = None

    # The library's concurrency model; the mix-ins change it.
    _ss_concurrency = SS_SYNC

    def __init__(self, server_address, RequestHandlerClass):
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        self._ss_ptr = None
        self._ss_key = None
        self._ss_pending = None       # BaseException to re-raise in the caller
        self._ss_loop_done = threading.Event()
        self._ss_loop_done.set()
        self._ss_stop = False         # the Python-level loop's shutdown flag
        self._ss_wake = None          # its wake-up pipe
        self._ss_requests = {}        # request key -> (request, client_address)
        self._ss_req_keys = itertools.count(1)
        self._ss_taken = 0
        self._ss_last_service = 0.0
        self._ss_poll_interval = 0.5
        self._ss_pid = os.getpid()
        self._ss_closed = False
        # The thread running the library's serve_forever loop, if any, and
        # the thread running the Python-level loop (ForkingMixIn), if any.
        self._ss_serving = None
        self._ss_python_loop = None

    # -- the C server ----------------------------------------------------

    def _ss_transport(self):
        raise TypeError("%s has no transport: use TCPServer, UDPServer, "
                        "UnixStreamServer or UnixDatagramServer"
                        % type(self).__name__)

    def _ss_configure(self, cfg):
        """Mode-specific settings (the mix-ins extend it)."""

    def _ss_create(self):
        transport = self._ss_transport()
        address = _address_string(self.address_family, self.server_address)
        cfg = ctypes.c_void_p()
        _check(_lib.ss_config_new(transport, self._ss_concurrency, ctypes.byref(cfg)),
               "ss_config_new")
        ref = weakref.ref(self)
        stream = transport in (SS_TCP, SS_UNIX_STREAM)
        callbacks = {}
        try:
            c = cfg.value
            _check(_lib.ss_config_set_bind_and_activate(c, False), "bind_and_activate")
            if stream:
                _check(_lib.ss_config_set_backlog(c, max(1, int(self.request_queue_size))),
                       "request_queue_size")
            else:
                _check(_lib.ss_config_set_max_datagram_size(c, int(self.max_packet_size)),
                       "max_packet_size")
            # handle_request waits in Python (see handle_request), then takes
            # the request that is waiting.
            _check(_lib.ss_config_set_timeout(c, 0), "timeout")
            _check(_lib.ss_config_set_poll_interval(c, _LOOP_TURN_MS), "poll interval")
            self._ss_set_request_callbacks(c, ref, callbacks)
            callbacks["error"] = _lib.ERROR_FN(
                lambda req, status, msg, ud: _on_library_error(ref, req, status, msg))
            _check(_lib.ss_config_set_handle_error(c, callbacks["error"]), "handle_error")
            callbacks["service"] = _lib.SERVER_FN(lambda srv, ud: _on_service(ref))
            _check(_lib.ss_config_set_service_actions(c, callbacks["service"]),
                   "service_actions")
            self._ss_configure(c)
            key = next(_KEYS)
            with _KEEP_LOCK:
                _KEEP[key] = callbacks
            out = ctypes.c_void_p()
            status = _lib.ss_server_new(c, address.encode("utf-8", "surrogateescape"),
                                        key, _free_user_data, ctypes.byref(out))
            _check(status, "ss_server_new(%r)" % (address,))
            self._ss_ptr = out.value
            self._ss_key = key
            _LIVE.add(self)
        finally:
            _lib.ss_config_free(cfg)
        # Our own duplicate of the library's socket (closing it never closes
        # the library's). Its blocking mode is left as the library set it
        # (non-blocking: the library's loops need that), so gettimeout()
        # says 0.0; handle_request reads that as "no timeout".
        self.socket = socket.socket(fileno=os.dup(_lib.ss_server_fileno(self._ss_ptr)))

    def _ss_set_request_callbacks(self, c, ref, callbacks):
        callbacks["handle"] = _lib.REQUEST_FN(lambda req, ud: _on_request(ref, req))
        _check(_lib.ss_config_set_handle(c, callbacks["handle"]), "handle")
        if type(self).verify_request is not BaseServer.verify_request:
            callbacks["verify"] = _lib.VERIFY_FN(lambda req, ud: _on_verify(ref, req))
            _check(_lib.ss_config_set_verify_request(c, callbacks["verify"]), "verify")

    def _ss_free(self):
        ptr, self._ss_ptr = self._ss_ptr, None
        if ptr:
            _lib.ss_server_free(ptr)

    def __del__(self):
        try:
            if self._ss_ptr and not _inside_callback_of(self):
                self._ss_free()
        except Exception:
            pass

    # -- serving ---------------------------------------------------------

    def serve_forever(self, poll_interval=0.5):
        """Handle requests until shutdown() (Python's serve_forever).

        The library's loop runs the requests; it returns to Python after
        each request and every 50 ms when idle to call service_actions
        (at most every ``poll_interval`` seconds when idle) and to let
        signal handlers run: Ctrl-C on the main thread raises
        KeyboardInterrupt here, with the loop stopped."""
        self._ss_require_open()
        self._ss_require_idle()
        self._ss_poll_interval = poll_interval
        self._ss_loop_done.clear()
        self._ss_serving = threading.get_ident()
        try:
            with self._ss_interrupt_guard():
                status = _lib.ss_server_serve_forever(self._ss_ptr)
        finally:
            self._ss_serving = None
            self._ss_loop_done.set()
            if self._ss_closed and not _inside_callback_of(self):
                self._ss_free()
        self._ss_reraise()
        if status not in (SS_OK, SS_ERR_CLOSED):
            _raise_status(status, "serve_forever")

    def shutdown(self):
        """Stop the serve_forever loop.

        Unlike the standard module it never deadlocks: called from a
        handler or hook of this server it asks the loop to stop and returns
        at once; from another thread it also waits until a serve_forever
        that is running has returned (as the standard module does)."""
        self._ss_stop = True
        if self._ss_wake is not None:
            try:
                os.write(self._ss_wake[1], b"x")
            except OSError:
                pass
        if self._ss_ptr:
            _lib.ss_server_shutdown(self._ss_ptr)
        # Not from the serving thread itself (a handler, a hook, or a signal
        # handler running there): the loop stops once it returns.
        me = threading.get_ident()
        if (not _inside_callback_of(self) and self._ss_serving != me
                and self._ss_python_loop != me):
            self._ss_loop_done.wait()

    def service_actions(self):
        """Called by the serve_forever loop (after requests, and every
        poll_interval when idle). Override it."""

    def handle_request(self):
        """Handle one request, waiting at most ``timeout`` (then
        handle_timeout() is called)."""
        self._ss_require_open()
        timeout = self.socket.gettimeout()
        if timeout == 0.0:
            timeout = None  # the library's non-blocking socket (see _ss_create)
        if timeout is None:
            timeout = self.timeout
        elif self.timeout is not None:
            timeout = min(timeout, self.timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            # Waiting here is plain Python: Ctrl-C raises KeyboardInterrupt.
            ready, _, _ = select.select([self.fileno()], [], [], remaining)
            if ready:
                with self._ss_interrupt_guard():
                    status = self._ss_take_one()
                self._ss_reraise()
                if status in (SS_OK, SS_ERR_CLOSED):
                    return
                if status not in (SS_ERR_TIMEOUT, SS_ERR_SHUT_DOWN, SS_ERR_IO):
                    _raise_status(status, "handle_request")
                # Not taken (at a concurrency cap, or taken by another
                # process): wait a little and look again.
                time.sleep(0.005)
            if deadline is not None and time.monotonic() >= deadline:
                return self.handle_timeout()

    def _ss_take_one(self):
        """Takes the request waiting (the library's handle_request with a
        0 timeout)."""
        return _lib.ss_server_handle_request(self._ss_ptr)

    def handle_timeout(self):
        """Called by handle_request when ``timeout`` passes. Override it."""

    def verify_request(self, request, client_address):
        """Return False to refuse the request (it is shut down unhandled)."""
        return True

    def process_request(self, request, client_address):
        """finish_request then shutdown_request (the mix-ins override it)."""
        self.finish_request(request, client_address)
        self.shutdown_request(request)

    def server_close(self):
        """Clean up the server (Python's server_close)."""
        self._ss_closed = True

    def finish_request(self, request, client_address):
        """Finish one request by instantiating RequestHandlerClass."""
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request):
        """Called to shutdown and close an individual request."""
        self.close_request(request)

    def close_request(self, request):
        """Called to clean up an individual request."""

    def handle_error(self, request, client_address):
        """Handle an error gracefully (prints the traceback to stderr, as
        the standard module)."""
        print('-' * 40, file=sys.stderr)
        print('Exception occurred during processing of request from',
              client_address, file=sys.stderr)
        import traceback
        traceback.print_exc()
        print('-' * 40, file=sys.stderr)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.server_close()

    # -- helpers ---------------------------------------------------------

    def _ss_require_open(self):
        if not self._ss_ptr or self._ss_closed:
            raise ValueError("the server is closed")

    def _ss_require_idle(self):
        if self._ss_serving is not None or self._ss_python_loop is not None:
            raise RuntimeError("serve_forever: the server is already serving")

    def _ss_stop_library_loop(self):
        """Stop the library's serve_forever loop, if one runs (a shutdown
        asked for while none runs would stop the next one at once)."""
        if self._ss_python_loop is not None:
            self._ss_stop = True
            if self._ss_wake is not None:
                try:
                    os.write(self._ss_wake[1], b"x")
                except OSError:
                    pass
        if self._ss_ptr and self._ss_serving is not None:
            _lib.ss_server_shutdown(self._ss_ptr)

    def _ss_reraise(self):
        exc, self._ss_pending = self._ss_pending, None
        if exc is not None:
            try:
                raise exc
            finally:
                exc = None

    @contextlib.contextmanager
    def _ss_interrupt_guard(self):
        """On the main thread with Python's default SIGINT handler: a
        Ctrl-C while the library's loop runs stops the loop and raises
        KeyboardInterrupt in the caller.

        The default handler raises wherever the main thread next runs
        Python code, which may be the first instruction of a ctypes
        callback, before any try block (ctypes would then print and drop
        the exception). This handler raises only inside a handler or hook
        (where the callback's own try block catches it); otherwise it
        records the interrupt and asks the loop to stop."""
        if (threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
            yield
            return
        server = self

        def on_sigint(signum, frame):
            if _inside_callback_of(server):
                raise KeyboardInterrupt
            if server._ss_pending is None:
                server._ss_pending = KeyboardInterrupt()
            server._ss_stop_library_loop()

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _ss_request_objects(self, req):
        """(request, client_address) for a library request."""
        client_address = _request_client_address(req)
        if self._ss_stream:
            request = _socket_from_fd(_lib.ss_request_fileno(req))
        else:
            data = ctypes.c_void_p()
            n = ctypes.c_size_t()
            _check(_lib.ss_request_datagram(req, ctypes.byref(data), ctypes.byref(n)),
                   "ss_request_datagram")
            packet = ctypes.string_at(data.value, n.value) if n.value else b""
            request = (packet, self.socket)
        return request, client_address


# The library's callbacks. Each runs with the GIL (ctypes takes it) on the
# thread the library chose, catches everything (an exception must never
# unwind into C) and reports through the server's Python hooks.

@_never_raises(False)
def _on_verify(ref, req):
    server = ref()
    if server is None:
        return False
    with _in_callback(server):
        try:
            request, client_address = server._ss_request_objects(req)
            server._ss_taken += 1
            try:
                ok = server.verify_request(request, client_address)
            except BaseException:
                server.shutdown_request(request)
                raise
            if not ok:
                server.shutdown_request(request)
                return False
            key = next(server._ss_req_keys)
            server._ss_requests[key] = (request, client_address)
            _check(_lib.ss_request_set_data(req, key), "ss_request_set_data")
            return True
        except BaseException as e:
            _stop_with(server, e)
            return False


@_never_raises(0)
def _on_request(ref, req):
    server = ref()
    if server is None:
        return 1
    mode = server._ss_concurrency
    with _in_callback(server):
        try:
            key = _lib.ss_request_data(req)
            if key:
                request, client_address = server._ss_requests.pop(key)
            else:
                request, client_address = server._ss_request_objects(req)
                server._ss_taken += 1
            if mode == SS_SYNC:
                try:
                    server.process_request(request, client_address)
                except Exception:
                    server.handle_error(request, client_address)
                    server.shutdown_request(request)
                except BaseException:
                    server.shutdown_request(request)
                    raise
            else:
                # The mix-in's process_request handles Exception itself.
                server.process_request(request, client_address)
            return 0
        except BaseException as e:
            if mode == SS_SYNC:
                _stop_with(server, e)
                return 0
            if mode == SS_FORKING:
                return 1
            # A handler thread: as an exception leaving a Python thread.
            try:
                args = threading.ExceptHookArgs(
                    (type(e), e, e.__traceback__, threading.current_thread()))
                threading.excepthook(args)
            except BaseException:
                pass
            return 0


@_never_raises(None)
def _on_service(ref):
    server = ref()
    if server is None:
        return
    with _in_callback(server):
        try:
            now = time.monotonic()
            taken = server._ss_taken
            interval = server._ss_poll_interval or 0
            if taken != getattr(server, "_ss_taken_seen", 0) or \
                    now - server._ss_last_service >= interval:
                server._ss_taken_seen = taken
                server._ss_last_service = now
                server.service_actions()
        except BaseException as e:
            _stop_with(server, e)


def _on_library_error(ref, req, status, message):
    if status == SS_ERR_HANDLER:
        return  # a failure our own callbacks already reported
    try:
        text = message.decode("utf-8", "replace") if message else _lib.status_str(status)
        print("socketserver: %s" % text, file=sys.stderr)
    except BaseException:
        pass


def _stop_with(server, exc):
    """An exception that must reach the caller of serve_forever /
    handle_request: keep it and stop the loop."""
    if server._ss_pending is None:
        server._ss_pending = exc
    server._ss_stop_library_loop()


class TCPServer(BaseServer):
    """A TCP server (Python's TCPServer); address_family AF_INET6 for IPv6."""

    address_family = socket.AF_INET
    socket_type = socket.SOCK_STREAM
    request_queue_size = 5
    allow_reuse_address = False
    allow_reuse_port = False
    max_packet_size = 8192  # datagram subclasses only

    def __init__(self, server_address, RequestHandlerClass, bind_and_activate=True):
        BaseServer.__init__(self, server_address, RequestHandlerClass)
        self._ss_create()
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                self.server_close()
                raise

    @property
    def _ss_stream(self):
        return self.socket_type == socket.SOCK_STREAM

    def _ss_transport(self):
        unix = self.address_family == getattr(socket, "AF_UNIX", None)
        if self.socket_type == socket.SOCK_STREAM:
            return SS_UNIX_STREAM if unix else SS_TCP
        if self.socket_type == socket.SOCK_DGRAM:
            return SS_UNIX_DATAGRAM if unix else SS_UDP
        raise ValueError("unsupported socket_type %r" % (self.socket_type,))

    def server_bind(self):
        """Bind the socket (SO_REUSEADDR / SO_REUSEPORT first if asked);
        server_address becomes the bound address."""
        if self.allow_reuse_address and hasattr(socket, "SO_REUSEADDR"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.allow_reuse_port and hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._ss_require_open()
        _check(_lib.ss_server_bind(self._ss_ptr), "server_bind")
        self.server_address = self.socket.getsockname()

    def server_activate(self):
        """Listen (request_queue_size is the backlog)."""
        self._ss_require_open()
        _check(_lib.ss_server_activate(self._ss_ptr), "server_activate")

    def server_close(self):
        """Close the server: stop a loop running in another thread, close
        the socket, and (mix-ins, block_on_close) wait for the requests
        still running."""
        BaseServer.server_close(self)
        if self._ss_ptr:
            # Refused (RuntimeError) on the serving thread inside a handler
            # or hook: shutdown() is the call to make there.
            status = _lib.ss_server_close(self._ss_ptr)
            if status != SS_OK:
                _raise_status(status, "server_close")
            # ss_server_free must follow every other call on the server: a
            # loop still returning in another thread (close from a handler
            # thread does not wait for it) frees it when it has returned.
            if (self._ss_serving is None and self._ss_python_loop is None
                    and not _inside_callback_of(self)):
                self._ss_free()
        self.socket.close()
        if self._ss_wake is not None:
            for fd in self._ss_wake:
                os.close(fd)
            self._ss_wake = None

    def fileno(self):
        """The socket's file descriptor (for select)."""
        return self.socket.fileno()

    def get_request(self):
        """Not used: the library takes the requests."""
        raise NotImplementedError("libsocketserver takes requests itself")

    def shutdown_request(self, request):
        """Shut down the write side of the connection and close it."""
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.close_request(request)

    def close_request(self, request):
        """Close the request's socket."""
        request.close()


class UDPServer(TCPServer):
    """A UDP server (Python's UDPServer)."""

    allow_reuse_address = False
    allow_reuse_port = False
    socket_type = socket.SOCK_DGRAM
    max_packet_size = 8192

    def server_activate(self):
        self._ss_require_open()
        _check(_lib.ss_server_activate(self._ss_ptr), "server_activate")

    def shutdown_request(self, request):
        self.close_request(request)

    def close_request(self, request):
        pass


if hasattr(os, "fork"):
    class ForkingMixIn:
        """One child process per request, forked by the library.

        The library forks while the serving thread holds the GIL (requests
        are taken through a GIL-holding call, after waiting for them in
        Python), and in the child, before any Python code runs, the
        interpreter's after-fork reset runs (PyOS_AfterFork_Child, as after
        os.fork(): other threads' states dropped, the threading module and
        os.register_at_fork(after_in_child=...) hooks run). The parent runs
        PyOS_BeforeFork / PyOS_AfterFork_Parent around each call that may
        fork, so the "before" and "after_in_parent" hooks also run when it
        took no request. ``active_children`` is the number of live children (an int,
        not a set of pids); the library reaps them."""

        timeout = 300
        max_children = 40
        block_on_close = True
        _ss_concurrency = SS_FORKING

        def _ss_configure(self, cfg):
            super()._ss_configure(cfg)
            _check(_lib.ss_config_set_max_children(cfg, max(1, int(self.max_children))),
                   "max_children")
            _check(_lib.ss_config_set_block_on_close(cfg, bool(self.block_on_close)),
                   "block_on_close")
            # In each child, before any Python code: the interpreter's
            # after-fork reset (see _lib.child_setup).
            _check(_lib.ss_config_set_setup(cfg, _lib.child_setup), "setup")

        @property
        def active_children(self):
            if not self._ss_ptr:
                return 0
            children = ctypes.c_size_t()
            if _lib.ss_server_live_workers(self._ss_ptr, None, ctypes.byref(children)) != SS_OK:
                return 0
            return children.value

        @active_children.setter
        def active_children(self, value):
            pass  # the library keeps the count

        def collect_children(self, *, blocking=False):
            """The library reaps the children; nothing to do."""

        def handle_timeout(self):
            self.collect_children()

        def service_actions(self):
            self.collect_children()

        def process_request(self, request, client_address):
            """In the request's child: finish_request, handle_error on an
            exception, shutdown_request; the library then ends the child."""
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

        def _ss_take_one(self):
            # The GIL stays held through accept and fork (see the class doc),
            # between the interpreter's before-fork and parent-side
            # after-fork steps, as os.fork() has them (also when no fork
            # happened: they pair up either way).
            try:
                _lib.before_fork()
                try:
                    return _lib.handle_request_holding_gil(self._ss_ptr)
                finally:
                    _lib.after_fork_parent()
            finally:
                # In the parent: close its copies of the requests handed to
                # children (the standard module's close_request in the parent).
                while self._ss_requests:
                    _, (request, _) = self._ss_requests.popitem()
                    self.close_request(request)

        def serve_forever(self, poll_interval=0.5):
            """The loop runs in Python (select on the socket, then the
            library takes the request and forks), so that each fork happens
            with the GIL held."""
            self._ss_require_open()
            self._ss_require_idle()
            if self._ss_wake is None:
                self._ss_wake = os.pipe()
            self._ss_poll_interval = poll_interval
            self._ss_loop_done.clear()
            self._ss_python_loop = threading.get_ident()
            try:
                while not self._ss_stop:
                    # Plain Python: Ctrl-C raises KeyboardInterrupt here.
                    ready, _, _ = select.select(
                        [self.fileno(), self._ss_wake[0]], [], [], poll_interval)
                    if self._ss_stop:
                        break
                    if self._ss_wake[0] in ready:
                        os.read(self._ss_wake[0], 512)
                    # Takes a waiting request, or (none waiting) reaps children.
                    with self._ss_interrupt_guard():
                        status = self._ss_take_one()
                    self._ss_reraise()
                    if status == SS_ERR_CLOSED:
                        break
                    self.service_actions()
            finally:
                self._ss_stop = False
                self._ss_python_loop = None
                self._ss_loop_done.set()
                if self._ss_closed and not _inside_callback_of(self):
                    self._ss_free()


class ThreadingMixIn:
    """One thread per request, started by the library (Python's
    ThreadingMixIn). ``_threads`` has the number of live handler threads
    as its len() (the standard module keeps a list of Thread objects)."""

    daemon_threads = False
    block_on_close = True
    _ss_concurrency = SS_THREADING

    def _ss_configure(self, cfg):
        super()._ss_configure(cfg)
        _check(_lib.ss_config_set_daemon_threads(cfg, bool(self.daemon_threads)),
               "daemon_threads")
        _check(_lib.ss_config_set_block_on_close(cfg, bool(self.block_on_close)),
               "block_on_close")

    def process_request_thread(self, request, client_address):
        """On the request's thread: finish_request, handle_error on an
        exception, then shutdown_request."""
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def process_request(self, request, client_address):
        """Runs on the thread the library started for the request."""
        self.process_request_thread(request, client_address)

    @property
    def _threads(self):
        return _LiveThreads(self)


class _LiveThreads:
    """len() is the number of the server's live handler threads."""

    def __init__(self, server):
        self._server = server

    def __len__(self):
        ptr = self._server._ss_ptr
        if not ptr:
            return 0
        threads = ctypes.c_size_t()
        if _lib.ss_server_live_workers(ptr, ctypes.byref(threads), None) != SS_OK:
            return 0
        return threads.value


class ThreadPoolMixIn:
    """Extra: a fixed pool of ``pool_threads`` worker threads (0: one per
    core) fed by a queue of at most ``pool_queue_size`` accepted requests;
    while the queue is full the server stops accepting. Requests run as
    with ThreadingMixIn (process_request on the worker thread)."""

    pool_threads = 0
    pool_queue_size = 128
    block_on_close = True
    _ss_concurrency = SS_THREAD_POOL

    def _ss_configure(self, cfg):
        super()._ss_configure(cfg)
        _check(_lib.ss_config_set_threads(cfg, int(self.pool_threads)), "pool_threads")
        _check(_lib.ss_config_set_queue_size(cfg, int(self.pool_queue_size)),
               "pool_queue_size")
        _check(_lib.ss_config_set_block_on_close(cfg, bool(self.block_on_close)),
               "block_on_close")

    def process_request(self, request, client_address):
        """Runs on a pool worker."""
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    @property
    def queued_requests(self):
        """Accepted requests waiting for a free worker."""
        if not self._ss_ptr:
            return 0
        n = ctypes.c_size_t()
        _check(_lib.ss_server_queued_requests(self._ss_ptr, ctypes.byref(n)),
               "queued_requests")
        return n.value


if hasattr(os, "fork"):
    class ForkingUDPServer(ForkingMixIn, UDPServer): pass
    class ForkingTCPServer(ForkingMixIn, TCPServer): pass

class ThreadingUDPServer(ThreadingMixIn, UDPServer): pass
class ThreadingTCPServer(ThreadingMixIn, TCPServer): pass
class ThreadPoolUDPServer(ThreadPoolMixIn, UDPServer): pass
class ThreadPoolTCPServer(ThreadPoolMixIn, TCPServer): pass

if hasattr(socket, "AF_UNIX"):

    class UnixStreamServer(TCPServer):
        address_family = socket.AF_UNIX

    class UnixDatagramServer(UDPServer):
        address_family = socket.AF_UNIX

    class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer): pass
    class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer): pass
    class ThreadPoolUnixStreamServer(ThreadPoolMixIn, UnixStreamServer): pass

    if hasattr(os, "fork"):
        class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer): pass
        class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer): pass


# ---------------------------------------------------------------------------
# Request handlers (plain Python, as the standard module's).

class BaseRequestHandler:
    """Base class for request handlers: setup(), handle(), finish() run
    from the constructor, finish() even if handle() raised."""

    def __init__(self, request, client_address, server):
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self):
        pass

    def handle(self):
        pass

    def finish(self):
        pass


class StreamRequestHandler(BaseRequestHandler):
    """rfile / wfile over the connection (self.request, a socket.socket)."""

    rbufsize = -1
    wbufsize = 0
    timeout = None
    disable_nagle_algorithm = False

    def setup(self):
        self.connection = self.request
        if self.timeout is not None:
            self.connection.settimeout(self.timeout)
        if self.disable_nagle_algorithm:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.rfile = self.connection.makefile('rb', self.rbufsize)
        if self.wbufsize == 0:
            self.wfile = _SocketWriter(self.connection)
        else:
            self.wfile = self.connection.makefile('wb', self.wbufsize)

    def finish(self):
        if not self.wfile.closed:
            try:
                self.wfile.flush()
            except OSError:
                pass  # the client went away; nothing to do
        self.wfile.close()
        self.rfile.close()


class _SocketWriter(io.BufferedIOBase):
    """Unbuffered writes: every write() goes out with sendall()."""

    def __init__(self, sock):
        self._sock = sock

    def writable(self):
        return True

    def write(self, b):
        self._sock.sendall(b)
        with memoryview(b) as view:
            return view.nbytes

    def fileno(self):
        return self._sock.fileno()


class DatagramRequestHandler(BaseRequestHandler):
    """rfile reads the datagram, wfile collects the reply, sent to the
    client by finish()."""

    def setup(self):
        self.packet, self.socket = self.request
        self.rfile = io.BytesIO(self.packet)
        self.wfile = io.BytesIO()

    def finish(self):
        self.socket.sendto(self.wfile.getvalue(), self.client_address)


# ---------------------------------------------------------------------------
# Extra: event mode.

from ._event import (EventConnection, EventHandler, EventTCPServer,  # noqa: E402
                     EventDatagramHandler, EventUDPServer)
if hasattr(socket, "AF_UNIX"):
    from ._event import EventUnixStreamServer, EventUnixDatagramServer  # noqa: E402,F401
