//! The C API. This module and its children are the only place with
//! `extern "C"`, `#[no_mangle]` and raw pointers from C; everything here is a
//! thin wrapper that checks its arguments, calls the safe core inside the
//! panic boundary, and returns an `ss_status`.

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)] // The safety contract is in each doc comment, for C readers.

mod activation;
mod boundary;
mod config;
mod conn;
mod handler;
mod log;
mod report;
mod request;
mod server;
mod timer;

use std::ffi::{c_char, c_int};

pub use activation::*;
pub use config::*;
pub use conn::*;
pub use handler::{
    ss_close_fn, ss_data_fn, ss_datagram_fn, ss_eof_fn, ss_error_fn, ss_free_fn, ss_open_fn,
    ss_request_fn, ss_server_fn, ss_verify_fn,
};
pub use handler::{ss_drain_fn, ss_watch_fn};
pub use log::*;
pub use report::*;
pub use request::*;
pub use server::*;
pub use timer::*;

// Written out because cbindgen reads no macros; the list is
// crate::error::status_table, and boundary.rs fails the build if this enum
// differs from it.
/// Result of every function that can fail. `SS_OK` is 0; the numbers are
/// fixed and a retired number is never reused. After a failure,
/// `ss_last_error_message()` gives the details.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ss_status {
    /// Success.
    SS_OK = 0,
    /// A required pointer argument was NULL.
    SS_ERR_NULL_POINTER = 1,
    /// An argument was out of range or malformed (including enum values).
    SS_ERR_INVALID_ARGUMENT = 2,
    /// An address could not be parsed or resolved, or a reply has no address to go to.
    SS_ERR_ADDRESS = 3,
    /// A system call failed; the detail message names the call and the OS error.
    SS_ERR_IO = 4,
    /// A timeout passed: handle_request with no request, or a request read/write.
    SS_ERR_TIMEOUT = 5,
    /// The server is closed.
    SS_ERR_CLOSED = 6,
    /// The call is not allowed in the object's current state (e.g. serving
    /// before activation, binding twice, closing from the server's own loop).
    SS_ERR_WRONG_STATE = 7,
    /// The option or mode does not apply to this transport, or is not
    /// implemented in this version.
    SS_ERR_UNSUPPORTED = 8,
    /// An internal error was caught at the API boundary; the library state
    /// touched by that call may be unusable, but the process is intact.
    SS_ERR_PANIC = 9,
    /// The peer closed the connection (or the datagram ended) before the
    /// requested data arrived.
    SS_ERR_EOF = 10,
    /// A datagram was larger than the configured maximum datagram size.
    SS_ERR_MESSAGE_TOO_LONG = 11,
    /// A caller's buffer was too small; the needed length was reported.
    SS_ERR_BUFFER_TOO_SMALL = 12,
    /// A handler callback returned non-zero (reported to handle_error).
    SS_ERR_HANDLER = 13,
    /// The call returned because ss_server_shutdown() was called.
    SS_ERR_SHUT_DOWN = 14,
    /// An event-mode connection's queued output is at its high-water mark:
    /// the write was refused; try again once the peer has read (the
    /// pending output, ss_conn_pending_output(), went down).
    SS_ERR_WOULD_BLOCK = 15,
}

/// Transport: Python's TCPServer, UDPServer, UnixStreamServer and
/// UnixDatagramServer. Passed to ss_config_new() as an int.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ss_transport {
    /// TCP over IPv4 or IPv6 (chosen by the address).
    SS_TCP = 0,
    /// UDP over IPv4 or IPv6 (chosen by the address).
    SS_UDP = 1,
    /// Unix stream socket: a filesystem path, or `@name` (Linux abstract).
    SS_UNIX_STREAM = 2,
    /// Unix datagram socket: a filesystem path, or `@name` (Linux abstract).
    SS_UNIX_DATAGRAM = 3,
}

/// Concurrency model: Python's mix-ins and beyond. Passed to ss_config_new()
/// as an int. One ss_server type covers every transport × model pair
/// (Python needs a class for each).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ss_concurrency {
    /// One request at a time, on the thread that calls serve_forever or
    /// handle_request.
    SS_SYNC = 0,
    /// One thread per request (Python's ThreadingMixIn): setup, handle and
    /// finish run on a new thread, so callbacks and the user data must be
    /// thread-safe. Threads are detached and counted, not listed, so memory
    /// stays flat however many requests are served. See
    /// ss_config_set_daemon_threads(), ss_config_set_block_on_close(),
    /// ss_config_set_max_threads(), ss_config_set_thread_stack_size().
    SS_THREADING = 1,
    /// One child process per request (Python's ForkingMixIn): the child runs
    /// setup, handle, finish and handle_error, then leaves with _exit (status
    /// 0 on success, 1 after a failed request, 2 after an internal error);
    /// the parent closes its copy of the connection at once, reaps its own
    /// children every loop turn that waited for a connection (while
    /// connections queue up, every 8th turn, unless a per-IP limit is set),
    /// on handle_request's timeout, at max_children and on close (never
    /// waitpid(-1): your own children are left alone), and
    /// reports a child killed by a signal through handle_error (request
    /// NULL). A crashing child does not disturb the server. See
    /// ss_config_set_max_children().
    ///
    /// fork() in a multi-threaded process: the child has only the thread
    /// that forked. A handler in the child must not use locks that other
    /// threads of the parent may have held (including stdio's and any of
    /// your own), nor start threads that must outlive the request; plain
    /// request I/O, malloc, and async-signal-safe calls are fine. Writes to
    /// shared state stay in the child (Python's note: use threads for that).
    ///
    /// What a request child (here, or of a fork hand-off in any mode) may
    /// call: the ss_request_* functions on its request, ss_server_address(),
    /// ss_server_port(), ss_server_fileno(), ss_server_user_data(),
    /// ss_server_connections(), ss_last_error_message(), ss_status_str()
    /// and ss_version(). Every other call on that server is refused there
    /// before it takes any lock (SS_ERR_WRONG_STATE, or SS_ERR_UNSUPPORTED
    /// where the mode rules it out first), so none can hang on a lock
    /// another parent thread held at fork time (ss_server_free() is
    /// reported on stderr and ignored). Right after fork the child closes
    /// its copies of the listening sockets and wake-up eventfds of the
    /// process's servers (of its own server in any case, of the others as
    /// long as fewer than 32 servers are alive), so that ss_server_close()
    /// in the parent frees a port while children still run. A datagram
    /// child keeps its own server's socket, which its reply goes through;
    /// a stream child's ss_server_fileno() gives -1. Event loops' epoll
    /// descriptors and other requests' connections stay open in the child
    /// until it exits. Children are counted against
    /// ss_config_set_max_children() and reaped through a pidfd, so a child
    /// that the host reaped itself and whose pid the host reused is not
    /// waited for (only a reuse within microseconds of the fork, before the
    /// pidfd is open, could still be mistaken; before Linux 5.4, reaping
    /// falls back to the pid).
    SS_FORKING = 2,
    /// A fixed pool of worker threads (ss_config_set_threads(), default one
    /// per core) running the same blocking callbacks as SS_THREADING, fed by
    /// a bounded queue (ss_config_set_queue_size()): when it is full the
    /// server stops accepting. A failing handler does not end its worker.
    /// close with block_on_close serves the queued requests and joins the
    /// workers; without, queued requests are closed unserved.
    SS_THREAD_POOL = 3,
    /// Non-blocking callbacks driven by epoll: Python's "explicit table of
    /// partially finished requests", on several cores. Stream transports:
    /// on_open, on_data (given every byte received and not yet consumed;
    /// returns how many it consumed, the rest is presented again with the
    /// next bytes) and on_close (ss_config_set_on_open(), ...), with
    /// ss_conn_write() to queue output. Datagram transports: on_datagram.
    /// ss_config_set_threads() event loops (default one per core), each with
    /// its own epoll, share the listening socket; the thread in
    /// serve_forever runs service_actions and stops them on shutdown or
    /// close. Callbacks must not block: they run on a loop thread that
    /// serves many connections; the library never blocks there either (a
    /// datagram reply that does not fit the socket's buffer is dropped and
    /// reported with SS_ERR_WOULD_BLOCK). When the peer shuts down its
    /// sending side, the connection closes as soon as its queued output is
    /// sent (input not consumed by then is dropped), unless an on_eof
    /// callback is set (ss_config_set_on_eof()): then it stays open until
    /// ss_conn_close(). A close always shuts the socket down first, so the
    /// peer sees it even while a forked child holds a copy of the socket;
    /// see ss_config_set_lingering() for lingering close and
    /// ss_conn_close() for how long a close may take. handle_request is not
    /// available (SS_ERR_UNSUPPORTED).
    SS_EVENT = 4,
}

/// Where ss_request_hand_off() continues a request. Passed as an int.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ss_hand_off {
    /// On a new thread of this process.
    SS_HAND_OFF_THREAD = 0,
    /// In a forked child process (see the fork notes at SS_FORKING).
    SS_HAND_OFF_FORK = 1,
}

/// Opaque: a server configuration, made by ss_config_new() and released by
/// ss_config_free(). A template: ss_server_new() copies it.
pub struct ss_config {
    _private: [u8; 0],
}

/// Opaque: a server, made by ss_server_new() and released by ss_server_free().
pub struct ss_server {
    _private: [u8; 0],
}

/// Opaque: one request (a stream connection or one datagram). Borrowed: it is
/// valid only inside the callback it was passed to.
pub struct ss_request {
    _private: [u8; 0],
}

/// Opaque: one connection of SS_EVENT mode. Borrowed: valid only inside the
/// callback it was passed to; to reach it later (from another thread too)
/// keep its ss_conn_id() and use ss_server_post().
pub struct ss_conn {
    _private: [u8; 0],
}

// What each handle points to (boundary::handle_ref/handle_mut).
// SAFETY: ss_config pointers come from Box::into_raw of a ConfigBox
// (ss_config_new), ss_server pointers from Arc::into_raw of a Server
// (ss_server_new), and ss_request/ss_conn pointers are casts of the
// Request/Conn a callback is given (handler.rs).
unsafe impl boundary::Handle for ss_config {
    type Target = config::ConfigBox;
    const NAME: &'static str = "config";
}
// SAFETY: see above.
unsafe impl boundary::Handle for ss_server {
    type Target = crate::server::Server;
    const NAME: &'static str = "server";
}
// SAFETY: see above.
unsafe impl boundary::Handle for ss_request {
    type Target = crate::request::Request;
    const NAME: &'static str = "request";
}
// SAFETY: see above.
unsafe impl boundary::Handle for ss_conn {
    type Target = crate::event::Conn;
    const NAME: &'static str = "conn";
}

/// The library's version, "MAJOR.MINOR.PATCH" (static; never free it).
/// Compare with SS_VERSION_STRING to detect a header/library mismatch.
///
/// Thread: any thread; async-signal-safe.
#[no_mangle]
pub extern "C" fn ss_version() -> *const c_char {
    // The header's SS_VERSION_* macros come from the same Cargo.toml field (tools/gen-header).
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

/// The library's version as one number, MAJOR * 10000 + MINOR * 100 +
/// PATCH (0.1.0 is 100, 1.2.3 is 10203), for comparisons: the same number
/// as the header's SS_VERSION_NUMBER when header and library agree, and
/// `ss_version_number() >= SS_VERSION_OF(0, 2, 0)` asks for 0.2.0 or
/// later at run time. Minor and patch stay below 100 (the build fails
/// otherwise).
///
/// Thread: any thread; async-signal-safe.
#[no_mangle]
pub extern "C" fn ss_version_number() -> u32 {
    VERSION_NUMBER
}

/// MAJOR * 10000 + MINOR * 100 + PATCH from Cargo.toml's version, the
/// same computation as build.rs's SS_VERSION_NUMBER.
const VERSION_NUMBER: u32 = {
    const fn decimal(text: &str) -> u32 {
        let bytes = text.as_bytes();
        let mut value = 0;
        let mut i = 0;
        while i < bytes.len() {
            assert!(bytes[i].is_ascii_digit(), "version parts are decimal");
            value = value * 10 + (bytes[i] - b'0') as u32;
            i += 1;
        }
        value
    }
    let minor = decimal(env!("CARGO_PKG_VERSION_MINOR"));
    let patch = decimal(env!("CARGO_PKG_VERSION_PATCH"));
    assert!(
        minor < 100 && patch < 100,
        "SS_VERSION_NUMBER needs minor and patch below 100"
    );
    decimal(env!("CARGO_PKG_VERSION_MAJOR")) * 10000 + minor * 100 + patch
};

/// A static, human-readable name for a status code ("SS_ERR_TIMEOUT: timed
/// out"); never NULL, never to be freed. Unknown values give "unknown status".
///
/// Thread: any thread; async-signal-safe.
#[no_mangle]
pub extern "C" fn ss_status_str(status: c_int) -> *const c_char {
    boundary::ALL_STATUSES
        .iter()
        .find(|s| **s as c_int == status)
        .map_or(c"unknown status", |s| boundary::status_text(*s))
        .as_ptr()
}

/// The detail message of the calling thread's last failed call, e.g.
/// "bind 127.0.0.1:80: Permission denied (os error 13)"; "" when that call
/// succeeded. Never NULL. Owned by the library and valid until this thread's
/// next call that returns an ss_status (functions returning no status, such
/// as the _free functions, leave it alone unless they fail).
///
/// Thread: any thread; each thread reads its own message.
#[no_mangle]
pub extern "C" fn ss_last_error_message() -> *const c_char {
    boundary::last_error_ptr()
}

/// The errno of the calling thread's last failed call (what
/// ss_last_error_message() describes), e.g. EADDRINUSE (98) for a bind
/// whose message ends in "(os error 98)", so that bindings need not parse
/// the text; 0 when that failure was not an OS error (a bad argument, a
/// timeout the library measured itself, ...) or when the call succeeded.
/// Set and cleared together with the detail message, by the same calls.
///
/// Thread: any thread; each thread reads its own value.
#[no_mangle]
pub extern "C" fn ss_last_os_error() -> c_int {
    boundary::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn version_matches_cargo_and_header() {
        // SAFETY: ss_version returns a static NUL-terminated string.
        let runtime = unsafe { CStr::from_ptr(ss_version()) };
        assert_eq!(runtime.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
        let header = include_str!("../../include/socketserver.h");
        let expect = format!(
            "#define SS_VERSION_STRING \"{}\"",
            env!("CARGO_PKG_VERSION")
        );
        assert!(header.contains(&expect), "header lacks {expect}");
        let major = format!(
            "#define SS_VERSION_MAJOR {}",
            env!("CARGO_PKG_VERSION_MAJOR")
        );
        assert!(header.contains(&major), "header lacks {major}");
        let number = format!("#define SS_VERSION_NUMBER {}", ss_version_number());
        assert!(header.contains(&number), "header lacks {number}");
        let parts: Vec<u32> = runtime
            .to_str()
            .unwrap()
            .split('.')
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(
            ss_version_number(),
            parts[0] * 10000 + parts[1] * 100 + parts[2]
        );
    }

    #[test]
    fn every_status_has_its_own_text() {
        let statuses = boundary::ALL_STATUSES;
        for (i, s) in statuses.iter().enumerate() {
            assert_eq!(
                *s as usize, i,
                "statuses are numbered 0, 1, 2, ... in order"
            );
        }
        let texts: Vec<_> = statuses
            .iter()
            // SAFETY: static NUL-terminated strings.
            .map(|s| unsafe { CStr::from_ptr(ss_status_str(*s as c_int)) }.to_owned())
            .collect();
        for (s, t) in statuses.iter().zip(&texts) {
            assert!(
                t.to_str().unwrap().starts_with(&format!("{s:?}: ")),
                "{s:?}: {t:?}"
            );
            assert!(texts.iter().filter(|o| *o == t).count() == 1);
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(ss_status_str(statuses.len() as c_int)) };
        assert_eq!(unknown.to_str().unwrap(), "unknown status");
    }
}
