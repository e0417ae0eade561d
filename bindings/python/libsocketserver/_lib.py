"""ctypes declarations of the libsocketserver C API used by the binding.

Every function called from Python is declared here with its argument and
result types (an undeclared pointer result would be truncated to a C int).
Two handles are opened on the same shared library:

* ``lib`` (``ctypes.CDLL``): calls release the GIL, so a blocking call
  (serve_forever, handle_request, close) lets other Python threads run and
  lets the library's own threads call back into Python.
* ``lib_gil`` (``ctypes.PyDLL``): calls keep the GIL. Used only for
  ``ss_server_handle_request`` in forking servers, so that the library's
  fork() happens while the forking thread holds the GIL (see ForkingMixIn).
"""

import ctypes
import ctypes.util
import os

__all__ = []

ENV_VAR = "LIBSOCKETSERVER_PATH"
_SONAMES = ("libsocketserver.so.0", "libsocketserver.so")


def _candidates():
    """Where the library is looked for, in order."""
    env = os.environ.get(ENV_VAR)
    if env:
        if os.path.isdir(env):
            for name in _SONAMES:
                yield os.path.join(env, name)
        else:
            yield env
        return
    # The build tree: this package inside a checkout of the repository
    # (bindings/python/libsocketserver/ -> the repository's root).
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", "..", ".."))
    if os.path.exists(os.path.join(root, "include", "socketserver.h")):
        target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(root, "target")
        for profile in ("release", "debug"):
            yield os.path.join(target, profile, "libsocketserver.so")
    # The system loader (an install prefix in ld.so's path).
    found = ctypes.util.find_library("socketserver")
    if found:
        yield found
    for name in _SONAMES:
        yield name


def _load():
    errors = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            errors.append("%s: not found" % path)
            continue
        try:
            return path, ctypes.CDLL(path), ctypes.PyDLL(path)
        except OSError as e:
            errors.append(str(e))
    raise ImportError(
        "libsocketserver: cannot load libsocketserver.so (set %s to the "
        "library's path, build it with `cargo build --release`, or install "
        "it with `make install`): %s" % (ENV_VAR, "; ".join(errors))
    )


path, lib, lib_gil = _load()

c_int, c_bool, c_size_t, c_char_p, c_void_p = (
    ctypes.c_int, ctypes.c_bool, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p)
c_int64, c_uint16, c_uint32, c_uint64 = (
    ctypes.c_int64, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64)
P = ctypes.POINTER

# Status codes (enum ss_status).
SS_OK = 0
SS_ERR_NULL_POINTER = 1
SS_ERR_INVALID_ARGUMENT = 2
SS_ERR_ADDRESS = 3
SS_ERR_IO = 4
SS_ERR_TIMEOUT = 5
SS_ERR_CLOSED = 6
SS_ERR_WRONG_STATE = 7
SS_ERR_UNSUPPORTED = 8
SS_ERR_PANIC = 9
SS_ERR_EOF = 10
SS_ERR_MESSAGE_TOO_LONG = 11
SS_ERR_BUFFER_TOO_SMALL = 12
SS_ERR_HANDLER = 13
SS_ERR_SHUT_DOWN = 14
SS_ERR_WOULD_BLOCK = 15

SS_TCP, SS_UDP, SS_UNIX_STREAM, SS_UNIX_DATAGRAM = 0, 1, 2, 3
SS_SYNC, SS_THREADING, SS_FORKING, SS_THREAD_POOL, SS_EVENT = 0, 1, 2, 3, 4

# Callback types. The ss_* pointers are passed as c_void_p (opaque).
REQUEST_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p)
VERIFY_FN = ctypes.CFUNCTYPE(c_bool, c_void_p, c_void_p)
ERROR_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_char_p, c_void_p)
SERVER_FN = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)
OPEN_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p)
DATA_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t, P(c_size_t), c_void_p)
CLOSE_FN = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)
DATAGRAM_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t, c_void_p)
FREE_FN = ctypes.CFUNCTYPE(None, c_void_p)
POST_FN = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)


def _declare(handle, name, restype, *argtypes):
    fn = getattr(handle, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


_DECLS = [
    ("ss_version", c_char_p),
    ("ss_status_str", c_char_p, c_int),
    ("ss_last_error_message", c_char_p),
    ("ss_last_os_error", c_int),
    ("ss_config_new", c_int, c_int, c_int, P(c_void_p)),
    ("ss_config_free", None, c_void_p),
    ("ss_config_set_reuse_address", c_int, c_void_p, c_bool),
    ("ss_config_set_backlog", c_int, c_void_p, c_int64),
    ("ss_config_set_bind_and_activate", c_int, c_void_p, c_bool),
    ("ss_config_set_timeout", c_int, c_void_p, c_int64),
    ("ss_config_set_max_datagram_size", c_int, c_void_p, c_size_t),
    ("ss_config_set_poll_interval", c_int, c_void_p, c_int64),
    ("ss_config_set_handle", c_int, c_void_p, REQUEST_FN),
    ("ss_config_set_setup", c_int, c_void_p, REQUEST_FN),
    ("ss_config_set_verify_request", c_int, c_void_p, VERIFY_FN),
    ("ss_config_set_handle_error", c_int, c_void_p, ERROR_FN),
    ("ss_config_set_service_actions", c_int, c_void_p, SERVER_FN),
    ("ss_config_set_daemon_threads", c_int, c_void_p, c_bool),
    ("ss_config_set_block_on_close", c_int, c_void_p, c_bool),
    ("ss_config_set_max_children", c_int, c_void_p, c_size_t),
    ("ss_config_set_threads", c_int, c_void_p, c_size_t),
    ("ss_config_set_queue_size", c_int, c_void_p, c_size_t),
    ("ss_config_set_lingering", c_int, c_void_p, c_int64, c_int64),
    ("ss_config_set_on_open", c_int, c_void_p, OPEN_FN),
    ("ss_config_set_on_data", c_int, c_void_p, DATA_FN),
    ("ss_config_set_on_close", c_int, c_void_p, CLOSE_FN),
    ("ss_config_set_on_datagram", c_int, c_void_p, DATAGRAM_FN),
    ("ss_conn_write", c_int, c_void_p, c_char_p, c_size_t),
    ("ss_conn_close", c_int, c_void_p),
    ("ss_conn_id", c_uint64, c_void_p),
    ("ss_conn_fileno", c_int, c_void_p),
    ("ss_conn_peer_sockaddr", c_int, c_void_p, c_void_p, P(c_uint32)),
    ("ss_request_client_sockaddr", c_int, c_void_p, c_void_p, P(c_uint32)),
    ("ss_request_datagram", c_int, c_void_p, P(c_void_p), P(c_size_t)),
    ("ss_request_fileno", c_int, c_void_p),
    ("ss_request_reply", c_int, c_void_p, c_char_p, c_size_t),
    ("ss_request_set_data", c_int, c_void_p, c_void_p),
    ("ss_request_data", c_void_p, c_void_p),
    ("ss_server_new", c_int, c_void_p, c_char_p, c_void_p, FREE_FN, P(c_void_p)),
    ("ss_server_bind", c_int, c_void_p),
    ("ss_server_activate", c_int, c_void_p),
    ("ss_server_serve_forever", c_int, c_void_p),
    ("ss_server_handle_request", c_int, c_void_p),
    ("ss_server_shutdown", c_int, c_void_p),
    ("ss_server_close", c_int, c_void_p),
    ("ss_server_free", None, c_void_p),
    ("ss_server_fileno", c_int, c_void_p),
    ("ss_server_live_workers", c_int, c_void_p, P(c_size_t), P(c_size_t)),
    ("ss_server_queued_requests", c_int, c_void_p, P(c_size_t)),
    ("ss_server_post", c_int, c_void_p, c_uint64, POST_FN, c_void_p),
    ("ss_server_connections", c_int, c_void_p, P(c_size_t)),
]

for _name, _restype, *_argtypes in _DECLS:
    globals()[_name] = _declare(lib, _name, _restype, *_argtypes)

# The GIL-holding variant (see the module doc).
handle_request_holding_gil = _declare(lib_gil, "ss_server_handle_request", c_int, c_void_p)
# The interpreter's after-fork reset (what os.fork() runs in the child), as
# the setup callback of forking servers: the first thing the library calls
# in a child it forked. It must run before any Python bytecode does: the
# parent's other threads may have asked the GIL's holder to drop it, and
# the first bytecode would then wait for ever for a thread that does not
# exist in the child. So the callback's target is the C function itself,
# not Python code: a ctypes function pointer (ctypes.pythonapi: called
# with the GIL), whose two arguments (request, user data) the C function
# ignores, and whose result is mapped to 0 by a C-level callable.
_after_fork_child = ctypes.pythonapi._FuncPtr(("PyOS_AfterFork_Child", ctypes.pythonapi))
_after_fork_child.argtypes = [c_void_p, c_void_p]
_after_fork_child.restype = (0).__mul__  # void result -> 0, without bytecode
child_setup = REQUEST_FN(_after_fork_child)
# Around a call that may fork (in the parent, with the GIL): what os.fork()
# does before and after fork() there (at-fork hooks, the import lock, and
# from Python 3.13 the runtime's locks, which the child's reset expects
# held).
before_fork = ctypes.pythonapi.PyOS_BeforeFork
before_fork.argtypes = []
before_fork.restype = None
after_fork_parent = ctypes.pythonapi.PyOS_AfterFork_Parent
after_fork_parent.argtypes = []
after_fork_parent.restype = None


def last_error():
    msg = ss_last_error_message()
    return msg.decode("utf-8", "replace") if msg else ""


def status_str(status):
    s = ss_status_str(status)
    return s.decode() if s else "status %d" % status
