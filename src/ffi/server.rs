//! `ss_server_*`: creating, running, stopping and freeing a server.

use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;

use super::boundary::{borrow, copy_text_out, guard, guard_value, null, str_arg, write_out};
use super::config::ConfigBox;
use super::handler::{ss_free_fn, CHandler};
use super::{ss_config, ss_conn, ss_server, ss_status};
use crate::config::Concurrency;
use crate::error::{Error, Result};
use crate::server::Server;

/// Borrows the server behind a handle.
///
/// # Safety
/// `server` is NULL or a pointer from ss_server_new() not yet freed.
pub(crate) unsafe fn server_ref<'a>(server: *const ss_server) -> Result<&'a Server> {
    // SAFETY: ss_server pointers are `Arc::into_raw` of a Server.
    unsafe { borrow(server.cast::<Server>(), "server") }
}

/// A counted reference to the server behind a handle, for calls that need
/// to hand the server on (to requests, and to threads in later models).
///
/// # Safety
/// As for `server_ref`.
unsafe fn server_arc(server: *const ss_server) -> Result<Arc<Server>> {
    if server.is_null() {
        return Err(null("server"));
    }
    let raw = server.cast::<Server>();
    // SAFETY: `raw` came from Arc::into_raw and the handle still holds its
    // count, so adding one and taking it back as an Arc is balanced.
    unsafe {
        Arc::increment_strong_count(raw);
        Ok(Arc::from_raw(raw))
    }
}

pub(crate) fn server_ptr(server: &Arc<Server>) -> *mut ss_server {
    Arc::as_ptr(server) as *mut ss_server
}

/// Creates a server from `config` for `address` ("127.0.0.1:8080",
/// "[::1]:0", "localhost:0", a Unix socket path, or "@name" for a Linux
/// abstract Unix name), a NUL-terminated UTF-8 string (a path that is not
/// valid UTF-8 is refused with SS_ERR_INVALID_ARGUMENT). A host name is
/// resolved with the system resolver; when it has IPv4 and IPv6 addresses
/// the IPv4 one is used, as Python's TCPServer would. Unless the config turned bind_and_activate off, it
/// binds and listens before returning.
///
/// Ownership: `config` is only read (copied; free it when you like).
/// `user_data` passes to the server even if an error is returned: the
/// server hands it to every callback and calls `free_user_data(user_data)`
/// (when non-NULL) exactly once, when the server is freed and no request
/// still uses it, or before this function returns if it fails. On success
/// `*out_server` receives a server that the caller frees with
/// ss_server_free(); on failure it is not written and nothing is leaked
/// (the socket is closed). Thread-safe.
///
/// Errors: SS_ERR_NULL_POINTER, SS_ERR_INVALID_ARGUMENT (no handle
/// callback), SS_ERR_ADDRESS (unparsable or unresolvable address), SS_ERR_IO
/// (socket, bind or listen failed; e.g. "bind 127.0.0.1:80: Permission
/// denied (os error 13)").
#[no_mangle]
pub unsafe extern "C" fn ss_server_new(
    config: *const ss_config,
    address: *const c_char,
    user_data: *mut c_void,
    free_user_data: ss_free_fn,
    out_server: *mut *mut ss_server,
) -> ss_status {
    guard(|| {
        // Taken first, so that every error path below releases user_data.
        let mut handler = CHandler::new(user_data, free_user_data);
        // SAFETY: a live ss_config, read only.
        let boxed = unsafe { borrow(config.cast::<ConfigBox>(), "config") }?;
        // SAFETY: NUL-terminated string per the contract.
        let address = unsafe { str_arg(address, "address") }?;
        if out_server.is_null() {
            return Err(null("out_server"));
        }
        check_callbacks(boxed)?;
        handler.set_callbacks(boxed.callbacks);
        let server = Server::new(&boxed.config, address, Box::new(handler))?;
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe {
            write_out(
                out_server,
                "out_server",
                Arc::into_raw(server) as *mut ss_server,
            )
        }
    })
}

/// The callbacks the chosen mode cannot do without.
fn check_callbacks(boxed: &ConfigBox) -> Result<()> {
    let config = &boxed.config;
    let cb = &boxed.callbacks;
    let missing = match (config.concurrency(), config.transport().is_stream()) {
        (Concurrency::Event, true) if cb.on_data.is_none() => {
            "SS_EVENT mode needs ss_config_set_on_data()"
        }
        (Concurrency::Event, false) if cb.on_datagram.is_none() => {
            "SS_EVENT mode on a datagram transport needs ss_config_set_on_datagram()"
        }
        (Concurrency::Event, _) => return Ok(()),
        _ if cb.handle.is_none() => {
            "no handle callback: call ss_config_set_handle() before ss_server_new()"
        }
        _ => return Ok(()),
    };
    Err(Error::invalid(missing))
}

/// Binds the socket to the address given to ss_server_new() (Python's
/// server_bind), only when the config turned bind_and_activate off.
/// Errors: SS_ERR_WRONG_STATE (already bound), SS_ERR_CLOSED, SS_ERR_IO.
/// Not thread-safe with other calls on the same server except shutdown,
/// close, fileno and address.
#[no_mangle]
pub unsafe extern "C" fn ss_server_bind(server: *mut ss_server) -> ss_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { server_ref(server) }?.bind())
}

/// Starts listening, for stream transports (Python's server_activate); a
/// datagram server only records that it is ready. Call after
/// ss_server_bind(). Errors: SS_ERR_WRONG_STATE (not bound yet, or already
/// active), SS_ERR_CLOSED, SS_ERR_IO.
#[no_mangle]
pub unsafe extern "C" fn ss_server_activate(server: *mut ss_server) -> ss_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { server_ref(server) }?.activate())
}

/// Handles requests until ss_server_shutdown() (then returns SS_OK) or
/// ss_server_close() from another thread (then returns SS_ERR_CLOSED).
/// Callbacks run on the calling thread in SS_SYNC mode. A shutdown requested
/// while no loop was running makes this return SS_OK at once, consuming the
/// request (Python's behaviour). Errors: SS_ERR_WRONG_STATE (not activated,
/// or another serve_forever/handle_request is running on this server),
/// SS_ERR_CLOSED, SS_ERR_IO (poll failed).
///
/// Out of file descriptors (accept failing with EMFILE or ENFILE), in every
/// mode: the server keeps one spare descriptor (on /dev/null, close-on-exec,
/// for each stream server) and uses it to accept and close at once the
/// connections pending then, so that their clients see the connection
/// closed instead of waiting, and pauses accepting for 100 ms (as after any
/// accept error that is not transient) instead of spinning on a listener
/// that stays readable. It keeps its listener and serves normally again as
/// soon as descriptors are free. This is reported to handle_error (status
/// SS_ERR_IO, NULL request) at most once a second, with a count of the
/// failures since the last report. Connections refused by
/// ss_config_set_max_connections_per_ip() do not count as requests: they
/// do not make ss_server_handle_request() return.
#[no_mangle]
pub unsafe extern "C" fn ss_server_serve_forever(server: *mut ss_server) -> ss_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { server_arc(server) }?.serve_forever())
}

/// Handles at most one request (Python's handle_request); not in SS_EVENT
/// mode (SS_ERR_UNSUPPORTED). Returns SS_OK once
/// a request was taken (whatever the handler returned; failures go to
/// handle_error). Waits at most the configured timeout
/// (ss_config_set_timeout): when it passes, calls handle_timeout and returns
/// SS_ERR_TIMEOUT. Returns SS_ERR_SHUT_DOWN without handling anything when
/// ss_server_shutdown() is called (or was called before, and not yet
/// consumed), SS_ERR_CLOSED when the server is closed from another thread,
/// SS_ERR_IO when taking the request failed (accept or recvfrom, e.g. out
/// of file descriptors; also reported to handle_error).
#[no_mangle]
pub unsafe extern "C" fn ss_server_handle_request(server: *mut ss_server) -> ss_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { server_arc(server) }?.handle_request())
}

/// Asks serve_forever (or handle_request) to return, and returns at once;
/// the loop wakes immediately, not after a poll interval. If no loop is
/// running, the next one returns at once. Does not close the socket.
///
/// Safe from any thread, from inside a handler or hook of this server
/// (Python deadlocks there), and from a signal handler: it is
/// async-signal-safe (an atomic store and one write(2)). For that reason it
/// never sets the detail message. Returns SS_ERR_NULL_POINTER for NULL, and
/// SS_ERR_WRONG_STATE in a forked request child (SS_FORKING or a fork
/// hand-off), whose copy of the server cannot stop the parent's loop.
#[no_mangle]
pub unsafe extern "C" fn ss_server_shutdown(server: *mut ss_server) -> ss_status {
    // No panic boundary or detail message on purpose: neither is
    // async-signal-safe, and nothing here can panic.
    // SAFETY: NULL or a live server per the contract.
    match unsafe { server.cast::<Server>().as_ref() } {
        Some(_) if crate::concurrency::in_forked_child() => ss_status::SS_ERR_WRONG_STATE,
        Some(s) => {
            s.shutdown();
            ss_status::SS_OK
        }
        None => ss_status::SS_ERR_NULL_POINTER,
    }
}

/// Closes the server (Python's server_close): stops a serve_forever or
/// handle_request running in another thread and waits for it to return,
/// closes the socket, and removes the Unix socket file this server created
/// (only if the path still holds that same socket; anything else at the path
/// is left alone). Afterwards ss_server_fileno() returns -1 and serving
/// returns SS_ERR_CLOSED. Then, with block_on_close (the default), waits
/// for handler threads (not daemon ones) and child processes still running;
/// see ss_config_set_block_on_close(). Closing twice is fine. Thread-safe, but refused
/// with SS_ERR_WRONG_STATE from inside this server's own loop (a handler or
/// hook on the serving thread, or an SS_EVENT callback): call
/// ss_server_shutdown() there instead. Also refused in a forked request
/// child (SS_FORKING or a fork hand-off), which has a copy of the server,
/// not the server.
/// The server's memory stays until ss_server_free().
#[no_mangle]
pub unsafe extern "C" fn ss_server_close(server: *mut ss_server) -> ss_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { server_ref(server) }?.close())
}

/// Closes the server if needed and releases the caller's reference. NULL is
/// a no-op. The user data's finalizer runs once no request uses the server
/// any more (at once in SS_SYNC mode). Must be called exactly once per
/// server, when no other thread is inside a call on it. Where
/// ss_server_close() is refused (on the serving thread, in an SS_EVENT
/// callback, in a forked child) this is reported on stderr and ignored,
/// leaking the server rather than freeing memory still in use. From a
/// handler thread of SS_THREADING or SS_THREAD_POOL it works: the memory
/// stays until that request ends, but the pointer must not be used for
/// new calls afterwards except through ss_request_server().
#[no_mangle]
pub unsafe extern "C" fn ss_server_free(server: *mut ss_server) {
    guard_value((), || {
        if server.is_null() {
            return Ok(());
        }
        // SAFETY: a live server per the contract.
        if let Err(e) = unsafe { server_ref(server) }?.close() {
            crate::sys::write_stderr_line(&format!("socketserver: ss_server_free ignored: {e}"));
            return Err(e);
        }
        // SAFETY: gives back the reference ss_server_new handed out; the
        // contract says this happens once.
        drop(unsafe { Arc::from_raw(server.cast::<Server>()) });
        Ok(())
    });
}

/// The server socket's file descriptor (Python's fileno), for use with your
/// own poll loop or setsockopt; -1 once closed or for NULL. The server owns
/// it: do not close it. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ss_server_fileno(server: *const ss_server) -> c_int {
    // SAFETY: forwarded contract.
    guard_value(-1, || Ok(unsafe { server_ref(server) }?.fileno()))
}

/// Copies the bound address as a string ("127.0.0.1:40123" with the real
/// port when bound to port 0, "[::1]:40123", the socket path, or "@name")
/// into `buf` (`cap` bytes, NUL-terminated) and its length without the NUL
/// into `*out_len` (optional). If `cap` is too small, nothing is copied,
/// `*out_len` still receives the length needed, and SS_ERR_BUFFER_TOO_SMALL
/// is returned (pass NULL, 0 to ask for the length). SS_ERR_WRONG_STATE
/// before bind. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ss_server_address(
    server: *const ss_server,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let text = unsafe { server_ref(server) }?.address()?;
        // SAFETY: buffer contract as documented.
        unsafe { copy_text_out(&text, buf, cap, out_len) }
    })
}

/// Writes the bound port (port 0 resolved) to `*out_port`. SS_ERR_UNSUPPORTED
/// for Unix transports, SS_ERR_WRONG_STATE before bind. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ss_server_port(server: *const ss_server, out_port: *mut u16) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let port = unsafe { server_ref(server) }?.port()?;
        // SAFETY: writable per the contract.
        unsafe { write_out(out_port, "out_port", port) }
    })
}

/// The user data given to ss_server_new() (borrowed), or NULL for NULL.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ss_server_user_data(server: *const ss_server) -> *mut c_void {
    guard_value(std::ptr::null_mut(), || {
        // SAFETY: forwarded contract.
        Ok(user_data_of(unsafe { server_ref(server) }?))
    })
}

pub(crate) fn user_data_of(server: &Server) -> *mut c_void {
    let handler: &dyn std::any::Any = server.handler();
    handler
        .downcast_ref::<CHandler>()
        .map_or(std::ptr::null_mut(), |h| h.user_data)
}

/// Writes how many handler threads (SS_THREADING and hand-off threads) and
/// child processes (SS_FORKING and hand-off children, not yet reaped) are
/// live; either out-pointer may be NULL. Python's active_children, for
/// monitoring and tests. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ss_server_live_workers(
    server: *const ss_server,
    out_threads: *mut usize,
    out_children: *mut usize,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let (threads, children) = unsafe { server_ref(server) }?.live_workers();
        // SAFETY: each is NULL or writable per the contract.
        unsafe {
            if !out_threads.is_null() {
                out_threads.write(threads);
            }
            if !out_children.is_null() {
                out_children.write(children);
            }
        }
        Ok(())
    })
}

/// Writes how many accepted requests wait in the SS_THREAD_POOL queue for a
/// free worker (0 in other modes). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ss_server_queued_requests(
    server: *const ss_server,
    out_queued: *mut usize,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let queued = unsafe { server_ref(server) }?.queued_requests();
        // SAFETY: writable per the contract.
        unsafe { write_out(out_queued, "out_queued", queued) }
    })
}

/// A job posted with ss_server_post(): runs on the connection's loop
/// thread with the connection, or with `conn` NULL if it closed first (or
/// the server stopped), so that `arg` can always be released.
pub type ss_post_fn = Option<unsafe extern "C" fn(conn: *mut ss_conn, arg: *mut c_void)>;

struct PostedJob {
    job: unsafe extern "C" fn(conn: *mut ss_conn, arg: *mut c_void),
    arg: *mut c_void,
}

// SAFETY: the header tells callers that `arg` is handed to the loop thread.
unsafe impl Send for PostedJob {}

/// SS_EVENT: runs `job(conn, arg)` on the loop thread that owns connection
/// `conn_id` (from ss_conn_id()), soon, with the connection — e.g. to write
/// a result computed on another thread — or with `conn` NULL if the
/// connection closed first. This is how other threads wake a connection.
/// Thread-safe (from any thread, and from callbacks). Returns
/// SS_ERR_WRONG_STATE when the server is not serving (the job is then
/// never called and `arg` stays the caller's), SS_ERR_UNSUPPORTED in other
/// modes.
#[no_mangle]
pub unsafe extern "C" fn ss_server_post(
    server: *const ss_server,
    conn_id: u64,
    job: ss_post_fn,
    arg: *mut c_void,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let server = unsafe { server_ref(server) }?;
        let job = job.ok_or_else(|| null("job"))?;
        let posted = PostedJob { job, arg };
        server.post(
            conn_id,
            Box::new(move |conn: Option<&mut crate::event::Conn>| {
                let posted = posted;
                let ptr = conn.map_or(std::ptr::null_mut(), super::handler::conn_ptr);
                // SAFETY: the caller's job, with a live connection or NULL.
                unsafe { (posted.job)(ptr, posted.arg) }
            }),
        )
    })
}

/// Writes the number of open SS_EVENT connections across all loops to
/// `*out_connections` (0 in other modes): a connection counts from just
/// before it is accepted (before on_open) until after its on_close, so the
/// count never exceeds ss_config_set_max_connections(). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ss_server_connections(
    server: *const ss_server,
    out_connections: *mut usize,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let n = unsafe { server_ref(server) }?.connections();
        // SAFETY: writable per the contract.
        unsafe { write_out(out_connections, "out_connections", n) }
    })
}
