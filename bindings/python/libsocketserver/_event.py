"""Extra: event-mode servers (the library's SS_EVENT mode).

Instead of one blocking handler per request, a handler object per
connection gets non-blocking callbacks on the library's epoll loops::

    class Echo(libsocketserver.EventHandler):
        def on_data(self, data):
            self.conn.write(data)
            return len(data)          # bytes consumed (None: all)

    with libsocketserver.EventTCPServer(("127.0.0.1", 0), Echo) as server:
        server.serve_forever()

Callbacks run on the loop threads (``threads`` of them, 0: one per core)
with the GIL, so they must not block. ``conn`` may be used only inside the
callbacks; from another thread use ``server.post(conn.id, function)``,
which runs ``function(conn)`` on the connection's loop (``conn`` None if it
closed first).
"""

import ctypes
import socket
import sys

from . import _lib
from ._lib import SS_OK, SS_ERR_WOULD_BLOCK, SS_EVENT
from . import (TCPServer, UDPServer, _check, _raise_status, _in_callback,
               _conn_peer_address, _request_client_address, _KEYS)

__all__ = ["EventHandler", "EventConnection", "EventTCPServer", "EventUnixStreamServer",
           "EventDatagramHandler", "EventUDPServer", "EventUnixDatagramServer"]


class EventConnection:
    """One connection: write(), close(), id, client_address. Valid inside
    the callbacks of its handler (and posted functions) only."""

    __slots__ = ("_ptr", "id", "client_address", "handler", "__weakref__")

    def __init__(self, ptr):
        self._ptr = ptr
        self.id = _lib.ss_conn_id(ptr)
        self.client_address = _conn_peer_address(ptr)
        self.handler = None

    def _live(self):
        if not self._ptr:
            raise RuntimeError("connection used outside its callbacks "
                               "(use server.post(conn.id, fn) from other threads)")
        return self._ptr

    def write(self, data):
        """Queue bytes for the peer (sent without blocking). Raises
        BlockingIOError when the queued output is at the high-water mark."""
        data = bytes(data)
        status = _lib.ss_conn_write(self._live(), data, len(data))
        if status == SS_ERR_WOULD_BLOCK:
            raise BlockingIOError("output queue full")
        _check(status, "write")

    def close(self):
        """Close once the queued output has been sent (on_close follows)."""
        _check(_lib.ss_conn_close(self._live()), "close")

    def fileno(self):
        """The connection's descriptor (the library's: do not close it)."""
        return _lib.ss_conn_fileno(self._live())


class EventHandler:
    """Per-connection handler of an event-mode server. Override on_open,
    on_data and on_close; ``self.conn`` and ``self.server`` are set."""

    def __init__(self, conn, server):
        self.conn = conn
        self.server = server
        self.client_address = conn.client_address

    def on_open(self):
        """The connection is new."""

    def on_data(self, data):
        """All bytes received and not consumed yet; return how many were
        consumed (None: all). The rest comes again with the next bytes."""
        return None

    def on_close(self):
        """The connection is going away."""


class EventTCPServer(TCPServer):
    """A TCP server in event mode: ``RequestHandlerClass`` is an
    EventHandler subclass, instantiated per connection."""

    threads = 0
    _ss_concurrency = SS_EVENT

    def __init__(self, server_address, RequestHandlerClass, bind_and_activate=True,
                 threads=None):
        if threads is not None:
            self.threads = threads
        self._ss_conns = {}
        TCPServer.__init__(self, server_address, RequestHandlerClass, bind_and_activate)

    def _ss_configure(self, cfg):
        _check(_lib.ss_config_set_threads(cfg, int(self.threads)), "threads")

    def _ss_set_request_callbacks(self, c, ref, callbacks):
        callbacks["open"] = _lib.OPEN_FN(lambda conn, ud: _on_open(ref, conn))
        callbacks["data"] = _lib.DATA_FN(
            lambda conn, data, n, consumed, ud: _on_data(ref, conn, data, n, consumed))
        callbacks["close"] = _lib.CLOSE_FN(lambda conn, ud: _on_close(ref, conn))
        _check(_lib.ss_config_set_on_open(c, callbacks["open"]), "on_open")
        _check(_lib.ss_config_set_on_data(c, callbacks["data"]), "on_data")
        _check(_lib.ss_config_set_on_close(c, callbacks["close"]), "on_close")
        callbacks["post"] = self._ss_post_cb = _lib.POST_FN(
            lambda conn, arg: _on_post(ref, conn, arg))
        self._ss_jobs = {}
        # The request-mode hook is required by the library's config check
        # only in blocking modes; event mode does not call it.

    def handle_request(self):
        raise RuntimeError("event-mode servers have no handle_request: use serve_forever")

    @property
    def connections(self):
        """Open connections across all loops."""
        if not self._ss_ptr:
            return 0
        n = ctypes.c_size_t()
        _check(_lib.ss_server_connections(self._ss_ptr, ctypes.byref(n)), "connections")
        return n.value

    def post(self, conn_id, function):
        """Run ``function(conn)`` on the loop of connection ``conn_id``
        (from any thread); ``conn`` is None if the connection closed first.
        Raises RuntimeError when the server is not serving."""
        self._ss_require_open()
        # One ctypes callback per server (made with the others, released
        # with them by the library's finalizer); the job is found by key.
        key = next(_KEYS)
        self._ss_jobs[key] = function
        status = _lib.ss_server_post(self._ss_ptr, conn_id, self._ss_post_cb, key)
        if status != SS_OK:
            self._ss_jobs.pop(key, None)
            _raise_status(status, "post")


def _on_post(ref, conn_ptr, key):
    server = ref()
    if server is None:
        return
    function = server._ss_jobs.pop(key or 0, None)
    if function is None:
        return
    with _in_callback(server):
        conn = None
        try:
            if conn_ptr:
                conn = server._ss_conns.get(_lib.ss_conn_id(conn_ptr))
                if conn is not None:
                    conn._ptr = conn_ptr
            try:
                function(conn)
            finally:
                if conn is not None:
                    conn._ptr = None
        except BaseException:
            try:
                server.handle_error(conn.handler if conn else None,
                                    conn.client_address if conn else None)
            except BaseException:
                pass


def _with_conn(ref, conn_ptr, fn):
    server = ref()
    if server is None:
        return 1
    with _in_callback(server):
        conn = server._ss_conns.get(_lib.ss_conn_id(conn_ptr))
        if conn is None:
            return 1
        conn._ptr = conn_ptr
        try:
            return fn(server, conn)
        except BaseException:
            try:
                server.handle_error(conn.handler, conn.client_address)
            except BaseException:
                pass
            return 1
        finally:
            conn._ptr = None


def _on_open(ref, conn_ptr):
    server = ref()
    if server is None:
        return 1
    try:
        conn = EventConnection(conn_ptr)
        server._ss_conns[conn.id] = conn
        conn._ptr = None
    except BaseException:
        return 1

    def opened(server, conn):
        conn.handler = server.RequestHandlerClass(conn, server)
        conn.handler.on_open()
        return 0
    return _with_conn(ref, conn_ptr, opened)


def _on_data(ref, conn_ptr, data, n, consumed):
    def received(server, conn):
        chunk = ctypes.string_at(data, n) if n else b""
        used = conn.handler.on_data(chunk)
        used = n if used is None else max(0, min(int(used), n))
        consumed[0] = used
        return 0
    return _with_conn(ref, conn_ptr, received)


def _on_close(ref, conn_ptr):
    def closed(server, conn):
        try:
            if conn.handler is not None:
                conn.handler.on_close()
        finally:
            server._ss_conns.pop(conn.id, None)
        return 0
    _with_conn(ref, conn_ptr, closed)
    server = ref()
    if server is not None:
        server._ss_conns.pop(_lib.ss_conn_id(conn_ptr), None)


if hasattr(socket, "AF_UNIX"):
    class EventUnixStreamServer(EventTCPServer):
        """EventTCPServer over a Unix stream socket."""
        address_family = socket.AF_UNIX


class EventDatagramHandler:
    """Per-datagram handler of an event-mode datagram server: override
    on_datagram(); reply() sends a datagram back to the client at once
    (without blocking: a reply the socket cannot take is dropped)."""

    def __init__(self, request, data, client_address, server):
        self._request = request
        self.packet = data
        self.client_address = client_address
        self.server = server

    def reply(self, data):
        if not self._request:
            raise RuntimeError("reply() outside on_datagram")
        data = bytes(data)
        _check(_lib.ss_request_reply(self._request, data, len(data)), "reply")

    def on_datagram(self, data):
        """One datagram (bytes) from self.client_address."""


class EventUDPServer(UDPServer):
    """A UDP server in event mode: ``RequestHandlerClass`` is an
    EventDatagramHandler subclass, instantiated per datagram on a loop
    thread (``threads`` loops, 0: one per core)."""

    threads = 0
    _ss_concurrency = SS_EVENT

    def __init__(self, server_address, RequestHandlerClass, bind_and_activate=True,
                 threads=None):
        if threads is not None:
            self.threads = threads
        UDPServer.__init__(self, server_address, RequestHandlerClass, bind_and_activate)

    def _ss_configure(self, cfg):
        _check(_lib.ss_config_set_threads(cfg, int(self.threads)), "threads")

    def _ss_set_request_callbacks(self, c, ref, callbacks):
        callbacks["datagram"] = _lib.DATAGRAM_FN(
            lambda req, data, n, ud: _on_datagram(ref, req, data, n))
        _check(_lib.ss_config_set_on_datagram(c, callbacks["datagram"]), "on_datagram")

    def handle_request(self):
        raise RuntimeError("event-mode servers have no handle_request: use serve_forever")


def _on_datagram(ref, req, data, n):
    server = ref()
    if server is None:
        return 1
    with _in_callback(server):
        handler = None
        try:
            packet = ctypes.string_at(data, n) if n else b""
            client_address = _request_client_address(req)
            handler = server.RequestHandlerClass(req, packet, client_address, server)
            try:
                handler.on_datagram(packet)
            finally:
                handler._request = None
            return 0
        except BaseException:
            try:
                server.handle_error(handler, handler.client_address if handler else None)
            except BaseException:
                pass
            return 1


if hasattr(socket, "AF_UNIX"):
    class EventUnixDatagramServer(EventUDPServer):
        """EventUDPServer over a Unix datagram socket."""
        address_family = socket.AF_UNIX
