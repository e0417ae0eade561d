//! `ss_server_*`: creating, running, stopping and freeing a server.

use std::ffi::{c_char, c_int, c_void};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

use super::boundary::{copy_text_out, guard, guard_value, handle_ref, null, str_arg, write_out};
use super::config::ConfigBox;
use super::handler::{ss_free_fn, CHandler};
use super::{ss_config, ss_conn, ss_server, ss_status};
use crate::config::Concurrency;
use crate::error::{Error, Result};
use crate::server::Server;

/// A counted reference to the server behind a handle, for calls that need
/// to hand the server on (to requests and the threads serving them).
///
/// # Safety
/// `server` is NULL or a pointer from ss_server_new() not yet freed.
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

/// The handles not yet freed, so that ss_server_shutdown() and
/// ss_server_post() racing ss_server_free() on another thread (or coming
/// from a signal handler after it) find out without touching freed memory,
/// and so that free waits for a serve_forever / handle_request still
/// returning on another thread (see `serving`).
/// Lock-free, for shutdown's async-signal-safety: a chain of chunks of
/// slots that are never freed (a few bytes per server alive at once; they
/// stay reachable from the static head). A slot holds a handle's address
/// and how many of those calls are inside it; free marks the slot
/// draining, waits for the calls already inside, then empties it. A caller counts itself in, then
/// checks that the slot still holds its handle (both SeqCst: either the
/// caller sees the slot emptied, or free sees the caller's count).
mod live {
    use super::*;

    const SLOTS: usize = 64;

    /// A slot whose handle was removed while calls that found it may
    /// still be inside: no handle (servers are aligned, never at 1), and
    /// not free for a new one until they have left, so that the remover
    /// never waits for a later server's calls.
    const DRAINING: usize = 1;

    struct Slot {
        handle: AtomicUsize,
        calls: AtomicUsize,
    }

    pub(super) struct Chunk {
        slots: [Slot; SLOTS],
        next: AtomicPtr<Chunk>,
    }

    impl Chunk {
        const fn new() -> Chunk {
            Chunk {
                slots: [const {
                    Slot {
                        handle: AtomicUsize::new(0),
                        calls: AtomicUsize::new(0),
                    }
                }; SLOTS],
                next: AtomicPtr::new(ptr::null_mut()),
            }
        }
    }

    static FIRST: Chunk = Chunk::new();

    fn chunks() -> impl Iterator<Item = &'static Chunk> {
        std::iter::successors(Some(&FIRST), |c| {
            // SAFETY: chunks are leaked when linked, so live for ever.
            unsafe { c.next.load(Ordering::Acquire).as_ref() }
        })
    }

    fn find(handle: usize) -> Option<&'static Slot> {
        chunks()
            .flat_map(|c| c.slots.iter())
            .find(|s| s.handle.load(Ordering::SeqCst) == handle)
    }

    /// Registers a new handle.
    pub(super) fn insert(handle: usize) {
        let mut chunk = &FIRST;
        loop {
            if chunk.slots.iter().any(|s| {
                s.handle
                    .compare_exchange(0, handle, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            }) {
                return;
            }
            let mut next = chunk.next.load(Ordering::Acquire);
            if next.is_null() {
                let fresh = Box::into_raw(Box::new(Chunk::new()));
                match chunk.next.compare_exchange(
                    ptr::null_mut(),
                    fresh,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => next = fresh,
                    Err(linked) => {
                        // SAFETY: `fresh` was never published.
                        drop(unsafe { Box::from_raw(fresh) });
                        next = linked;
                    }
                }
            }
            // SAFETY: linked chunks are never freed.
            chunk = unsafe { &*next };
        }
    }

    /// Unregisters a handle about to be freed, and waits until no call
    /// that found it is still inside.
    pub(super) fn remove(handle: usize) {
        if let Some(slot) = find(handle) {
            // Only free removes, once per handle: the slot is still ours.
            slot.handle.store(DRAINING, Ordering::SeqCst);
            while slot.calls.load(Ordering::SeqCst) != 0 {
                std::thread::yield_now();
            }
            slot.handle.store(0, Ordering::SeqCst);
        }
    }

    /// A call inside a live handle; leaves on drop.
    pub(super) struct Entered(&'static Slot);

    impl Drop for Entered {
        fn drop(&mut self) {
            self.0.calls.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Enters `handle` if it is still live (not freed, or being freed).
    /// Async-signal-safe: atomics only.
    pub(super) fn enter(handle: usize) -> Option<Entered> {
        if handle <= DRAINING {
            return None;
        }
        let slot = find(handle)?;
        slot.calls.fetch_add(1, Ordering::SeqCst);
        let entered = Entered(slot);
        // Freed (and maybe the slot reused) between find and the count.
        (slot.handle.load(Ordering::SeqCst) == handle).then_some(entered)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::sync::mpsc;
        use std::time::Duration;

        /// A free waiting for a call inside its handle is not held up by a
        /// server registered meanwhile (which used to take the same slot
        /// and share its count: the free then waited for that server's
        /// serve_forever too).
        #[test]
        fn remove_waits_only_for_its_own_calls() {
            // Not addresses of real servers, nor 0 or DRAINING.
            let (old, new) = (0x5eed_0010, 0x5eed_0020);
            insert(old);
            let serving = enter(old).expect("registered");
            let (done_tx, done) = mpsc::channel();
            let remover = std::thread::spawn(move || {
                remove(old);
                done_tx.send(()).unwrap();
            });
            // The remover has taken `old` out of the table and waits.
            while let Some(probe) = enter(old) {
                drop(probe);
                std::thread::yield_now();
            }
            insert(new);
            let new_serving = enter(new).expect("registered");
            drop(serving);
            let finished = done.recv_timeout(Duration::from_secs(5));
            drop(new_serving);
            remover.join().unwrap();
            remove(new);
            assert!(
                finished.is_ok(),
                "free waited for a call inside a server registered after it"
            );
        }
    }
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
/// (the socket is closed).
///
/// Errors: SS_ERR_NULL_POINTER, SS_ERR_INVALID_ARGUMENT (no handle
/// callback), SS_ERR_ADDRESS (unparsable or unresolvable address), SS_ERR_IO
/// (socket, bind or listen failed; e.g. "bind 127.0.0.1:80: Permission
/// denied (os error 13)").
///
/// Thread: any thread.
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
        let handler = CHandler::new(user_data, free_user_data);
        // SAFETY: a live ss_config, read only.
        let boxed = unsafe { handle_ref(config) }?;
        // SAFETY: NUL-terminated string per the contract.
        let address = unsafe { str_arg(address, "address") }?;
        let handler = constructor_handler(boxed, handler, out_server)?;
        let server = Server::new(&boxed.config, address, handler)?;
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { publish(server, out_server) }
    })
}

/// The checks both constructors make once the handler holds the user data
/// (so that every error releases it): an out-pointer, the callbacks the
/// mode needs; then the handler with those callbacks.
fn constructor_handler(
    boxed: &ConfigBox,
    mut handler: CHandler,
    out_server: *mut *mut ss_server,
) -> Result<Box<CHandler>> {
    if out_server.is_null() {
        return Err(null("out_server"));
    }
    check_callbacks(boxed)?;
    handler.set_callbacks(boxed.callbacks);
    Ok(Box::new(handler))
}

/// Hands a new server to C: registers its handle among the live ones and
/// writes it to `*out_server`.
///
/// # Safety
/// `out_server` is non-NULL and writable.
unsafe fn publish(server: Arc<Server>, out_server: *mut *mut ss_server) -> Result<()> {
    let handle = Arc::into_raw(server) as *mut ss_server;
    live::insert(handle as usize);
    // SAFETY: forwarded contract.
    unsafe { write_out(out_server, "out_server", handle) }
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
///
/// Thread: any one thread at a time for this server (see Thread safety).
#[no_mangle]
pub unsafe extern "C" fn ss_server_bind(server: *mut ss_server) -> ss_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { handle_ref(server) }?.bind())
}

/// Starts listening, for stream transports (Python's server_activate); a
/// datagram server only records that it is ready. Call after
/// ss_server_bind(). Errors: SS_ERR_WRONG_STATE (not bound yet, or already
/// active), SS_ERR_CLOSED, SS_ERR_IO.
///
/// Thread: any one thread at a time for this server (see Thread safety).
#[no_mangle]
pub unsafe extern "C" fn ss_server_activate(server: *mut ss_server) -> ss_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { handle_ref(server) }?.activate())
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
/// that stays readable. After each connection closed it takes the spare
/// back and accepts again: once descriptors are free, the connection
/// accepted then is served, not closed. It keeps its listener and serves
/// normally again as soon as descriptors are free. If another thread took the descriptor the
/// spare freed, the next connection accepted while the spare cannot be
/// reopened is closed at once to take the spare back. This is reported to handle_error (status
/// SS_ERR_IO, NULL request) at most once a second, with a count of the
/// failures since the last report. Connections refused by
/// ss_config_set_max_connections_per_ip() do not count as requests: they
/// do not make ss_server_handle_request() return.
///
/// Thread: any one thread at a time for this server (see Thread safety).
#[no_mangle]
pub unsafe extern "C" fn ss_server_serve_forever(server: *mut ss_server) -> ss_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { serving(server, |s| s.serve_forever()) })
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
///
/// Thread: any one thread at a time for this server (see Thread safety).
#[no_mangle]
pub unsafe extern "C" fn ss_server_handle_request(server: *mut ss_server) -> ss_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { serving(server, |s| s.handle_request()) })
}

/// Runs serve_forever or handle_request with a counted reference to the
/// server, inside the live table: close only waits for the loop to end,
/// and this thread still holds its reference for a moment after that;
/// ss_server_free waits for the calls inside before releasing the
/// handle's reference, so that the last one (and the user data's
/// finalizer) is free's, not this thread's after free returned.
///
/// # Safety
/// `server` is NULL or a pointer from ss_server_new() not yet freed.
unsafe fn serving(
    server: *mut ss_server,
    run: impl FnOnce(&Arc<Server>) -> Result<()>,
) -> Result<()> {
    if server.is_null() {
        return Err(null("server"));
    }
    // Declared before the reference, so dropped after it.
    let _inside = live::enter(server as usize).ok_or_else(freed)?;
    // SAFETY: forwarded contract.
    let server = unsafe { server_arc(server) }?;
    run(&server)
}

fn freed() -> Error {
    Error::new(
        crate::error::ErrorKind::Closed,
        "the server was freed (or is being freed)",
    )
}

/// Asks serve_forever (or handle_request) to return, and returns at once;
/// the loop wakes immediately, not after a poll interval. If no loop is
/// running, the next one returns at once. Does not close the socket.
/// SS_EVENT: serve_forever then stops accepting and reading, closes every
/// connection (on_close runs; no lingering), giving output still queued
/// at most lingering_timeout (ss_config_set_lingering(), default 5 s) to be
/// sent, and returns: within about that bound even if peers do not read.
///
/// Safe from any thread, from inside a handler or hook of this server
/// (Python deadlocks there), and from a signal handler: it is
/// async-signal-safe (an atomic store and one write(2)), and leaves `errno`
/// as it found it. For that reason it never sets the detail message.
/// Returns SS_ERR_NULL_POINTER for NULL, and SS_ERR_WRONG_STATE in a forked
/// request child (SS_FORKING or a fork hand-off), whose copy of the server
/// cannot stop the parent's loop.
///
/// A call racing ss_server_free() on another thread, or made after it (a
/// signal handler holding a stale pointer), returns SS_ERR_CLOSED without
/// touching freed memory: the library keeps a lock-free table of live
/// handles, and free waits for the calls already inside. The one case it
/// cannot tell apart: once ss_server_new() has returned a new server at the
/// same address, a stale pointer reaches that server. So still clear the
/// pointer a signal handler reads (set it to NULL before
/// ss_server_free(); NULL is refused harmlessly).
///
/// Thread: any thread, any callback, or a signal handler
/// (async-signal-safe).
#[no_mangle]
pub unsafe extern "C" fn ss_server_shutdown(server: *mut ss_server) -> ss_status {
    // No panic boundary or detail message on purpose: neither is
    // async-signal-safe, and nothing here can panic.
    if server.is_null() {
        return ss_status::SS_ERR_NULL_POINTER;
    }
    if crate::sys::in_forked_child() {
        return ss_status::SS_ERR_WRONG_STATE;
    }
    let Some(_inside) = live::enter(server as usize) else {
        return ss_status::SS_ERR_CLOSED;
    };
    // SAFETY: a registered handle, which free cannot release while
    // `_inside` counts this call.
    unsafe { &*server.cast::<Server>() }.shutdown();
    ss_status::SS_OK
}

/// Closes the server (Python's server_close): stops a serve_forever or
/// handle_request running in another thread and waits for it to return,
/// closes the socket, and removes the Unix socket file this server created
/// (only if the path still holds that same socket; anything else at the path
/// is left alone). Afterwards ss_server_fileno() returns -1 and serving
/// returns SS_ERR_CLOSED. Then, with block_on_close (the default), waits
/// for handler threads (not daemon ones), the other pool workers and child
/// processes still running; see ss_config_set_block_on_close().
///
/// Closing twice is fine, and close is single-flight: the first caller
/// does the work. A call while that close runs waits until it has finished
/// and then returns SS_OK, except when it comes from one of this server's
/// own handler threads (SS_THREADING, hand-off threads) or pool workers:
/// that call returns SS_OK at once, without waiting, because the first
/// close may be waiting for that very thread; the close is then still in
/// progress. A call after the close has finished returns SS_OK; from any
/// other thread it first waits, as the first close did (block_on_close),
/// for what that close could not wait for when a handler thread or pool
/// worker made it: that thread itself, which goes on with its request.
/// So after a close from a handler, a close from the main thread returns
/// once every handler has ended, as Python's server_close joins the
/// threads left on every call.
///
/// Refused with SS_ERR_WRONG_STATE from inside this server's own loop (a
/// handler or hook on the serving thread, or an SS_EVENT callback): call
/// ss_server_shutdown() there instead. Also refused from a callback that
/// close itself runs on the closing thread (handle_error reporting a child
/// reaped by close), and, before taking any
/// lock, in a forked request child (SS_FORKING or a fork hand-off), which
/// has a copy of the server, not the server.
/// The server's memory stays until ss_server_free().
///
/// Thread: any thread except this server's own loop and a callback that
/// close runs (see above).
#[no_mangle]
pub unsafe extern "C" fn ss_server_close(server: *mut ss_server) -> ss_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { handle_ref(server) }?.close())
}

/// Closes the server if needed and releases the caller's reference. NULL is
/// a no-op. The user data's finalizer runs once no request uses the server
/// any more: when close waited for every request (block_on_close, no daemon
/// threads), it has run exactly once, on this thread, by the time this
/// returns; requests left running (daemon threads, block_on_close off, a
/// free from a handler thread) run it when the last of them ends.
///
/// Must be called exactly once per server. Only ss_server_shutdown() and
/// ss_server_post() may race it or come after it: they return
/// SS_ERR_CLOSED (free waits for those already inside; see
/// ss_server_shutdown() for the one limit). Every other call must have
/// returned before free starts and must not follow it: the memory is
/// released here. Where
/// ss_server_close() is refused (on the serving thread, in an SS_EVENT
/// callback, in a callback close runs, in a forked child) this is reported on stderr (or to the
/// log callback, ss_set_log_callback()) and ignored,
/// leaking the server rather than freeing memory still in use. From a
/// handler thread of SS_THREADING or SS_THREAD_POOL it works: the memory
/// stays until that request ends, but the pointer must not be used for
/// new calls afterwards except through ss_request_server().
///
/// Thread: any thread except this server's own loop; once, after every other
/// call on this server (but shutdown and post) has returned.
#[no_mangle]
pub unsafe extern "C" fn ss_server_free(server: *mut ss_server) {
    guard_value((), || {
        if server.is_null() {
            return Ok(());
        }
        // SAFETY: a live server per the contract.
        if let Err(e) = unsafe { handle_ref(server) }?.close() {
            crate::sys::log_line(
                crate::sys::LogLevel::Error,
                &format!("socketserver: ss_server_free ignored: {e}"),
            );
            return Err(e);
        }
        // From here on shutdown and post refuse the handle; those already
        // inside finish first.
        live::remove(server as usize);
        // SAFETY: gives back the reference ss_server_new handed out; the
        // contract says this happens once.
        drop(unsafe { Arc::from_raw(server.cast::<Server>()) });
        Ok(())
    });
}

/// The server socket's file descriptor (Python's fileno), for use with your
/// own poll loop or setsockopt; -1 once closed or for NULL (and in a forked
/// request child of a stream server, which closes its copy). The server
/// owns it: do not close it.
///
/// Thread: any thread; also in a forked request child.
#[no_mangle]
pub unsafe extern "C" fn ss_server_fileno(server: *const ss_server) -> c_int {
    // SAFETY: forwarded contract.
    guard_value(-1, || Ok(unsafe { handle_ref(server) }?.fileno()))
}

/// Copies the bound address as a string ("127.0.0.1:40123" with the real
/// port when bound to port 0, "[::1]:40123", the socket path, or "@name")
/// into `buf` (`cap` bytes, NUL-terminated) and its length without the NUL
/// into `*out_len` (optional). If `cap` is too small, nothing is copied,
/// `*out_len` still receives the length needed, and SS_ERR_BUFFER_TOO_SMALL
/// is returned (pass NULL, 0 to ask for the length). SS_ERR_WRONG_STATE
/// before bind. Takes no lock: the address is fixed at bind.
///
/// Thread: any thread; also in a forked request child.
#[no_mangle]
pub unsafe extern "C" fn ss_server_address(
    server: *const ss_server,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let text = unsafe { handle_ref(server) }?.address()?;
        // SAFETY: buffer contract as documented.
        unsafe { copy_text_out(&text, buf, cap, out_len) }
    })
}

/// Writes the bound port (port 0 resolved) to `*out_port`. SS_ERR_UNSUPPORTED
/// for Unix transports, SS_ERR_WRONG_STATE before bind. Takes no lock.
///
/// Thread: any thread; also in a forked request child.
#[no_mangle]
pub unsafe extern "C" fn ss_server_port(server: *const ss_server, out_port: *mut u16) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let port = unsafe { handle_ref(server) }?.port()?;
        // SAFETY: writable per the contract.
        unsafe { write_out(out_port, "out_port", port) }
    })
}

/// The user data given to ss_server_new() (borrowed), or NULL for NULL.
///
/// Thread: any thread; also in a forked request child.
#[no_mangle]
pub unsafe extern "C" fn ss_server_user_data(server: *const ss_server) -> *mut c_void {
    guard_value(std::ptr::null_mut(), || {
        // SAFETY: forwarded contract.
        Ok(user_data_of(unsafe { handle_ref(server) }?))
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
/// monitoring. SS_ERR_WRONG_STATE in a forked request child (the counts'
/// locks may have been held at fork time).
///
/// Thread: any thread.
#[no_mangle]
pub unsafe extern "C" fn ss_server_live_workers(
    server: *const ss_server,
    out_threads: *mut usize,
    out_children: *mut usize,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let (threads, children) = unsafe { handle_ref(server) }?.live_workers()?;
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
/// free worker (0 in other modes). SS_ERR_WRONG_STATE in a forked request
/// child.
///
/// Thread: any thread.
#[no_mangle]
pub unsafe extern "C" fn ss_server_queued_requests(
    server: *const ss_server,
    out_queued: *mut usize,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let queued = unsafe { handle_ref(server) }?.queued_requests()?;
        // SAFETY: writable per the contract.
        unsafe { write_out(out_queued, "out_queued", queued) }
    })
}

/// A job posted with ss_server_post(): runs on the connection's loop
/// thread with the connection, or with `conn` NULL if it closed first (or
/// the server stopped), so that `arg` can always be released.
pub type ss_post_fn = Option<unsafe extern "C-unwind" fn(conn: *mut ss_conn, arg: *mut c_void)>;

struct PostedJob {
    job: unsafe extern "C-unwind" fn(conn: *mut ss_conn, arg: *mut c_void),
    arg: *mut c_void,
}

// SAFETY: the header tells callers that `arg` is handed to the loop thread.
unsafe impl Send for PostedJob {}

/// SS_EVENT: runs `job(conn, arg)` on the loop thread that owns connection
/// `conn_id` (from ss_conn_id()), soon, with the connection — e.g. to write
/// a result computed on another thread — or with `conn` NULL if the
/// connection closed first. This is how other threads wake a connection.
/// Also from callbacks. A post racing
/// ss_server_free(), or after it, returns SS_ERR_CLOSED (with the limit
/// given at ss_server_shutdown()). Returns SS_ERR_WRONG_STATE when the
/// server is not serving or in a forked request child (the job is then
/// never called and `arg` stays the caller's), SS_ERR_UNSUPPORTED in other
/// modes.
///
/// Thread: any thread.
#[no_mangle]
pub unsafe extern "C" fn ss_server_post(
    server: *const ss_server,
    conn_id: u64,
    job: ss_post_fn,
    arg: *mut c_void,
) -> ss_status {
    guard(|| {
        if server.is_null() {
            return Err(null("server"));
        }
        let _inside = live::enter(server as usize).ok_or_else(freed)?;
        // SAFETY: a registered handle, which free cannot release while
        // `_inside` counts this call.
        let server = unsafe { handle_ref(server) }?;
        let job = job.ok_or_else(|| null("job"))?;
        let posted = PostedJob { job, arg };
        let loops = server.event_loops().ok_or_else(|| {
            Error::new(
                crate::error::ErrorKind::Unsupported,
                "posting to a connection needs event mode",
            )
        })?;
        loops.post(
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
/// count never exceeds ss_config_set_max_connections(). A connection in a
/// lingering close (after its on_close) is not counted.
///
/// Thread: any thread; also in a forked request child.
#[no_mangle]
pub unsafe extern "C" fn ss_server_connections(
    server: *const ss_server,
    out_connections: *mut usize,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let n = unsafe { handle_ref(server) }?
            .event_loops()
            .map_or(0, |e| e.connections());
        // SAFETY: writable per the contract.
        unsafe { write_out(out_connections, "out_connections", n) }
    })
}

/// Creates a server from `config` around `fd`, a socket that is already
/// bound (and maybe listening): one passed by systemd (ss_listen_fds()), a
/// supervisor, or a parent process. `config`'s transport says what it must
/// be, and anything else is refused with SS_ERR_INVALID_ARGUMENT and a
/// message naming the descriptor, what it is and what was wanted: SS_TCP
/// an AF_INET or AF_INET6 SOCK_STREAM socket of protocol TCP, SS_UDP an
/// AF_INET or AF_INET6 SOCK_DGRAM socket of protocol UDP, SS_UNIX_STREAM
/// an AF_UNIX SOCK_STREAM socket and SS_UNIX_DATAGRAM an AF_UNIX
/// SOCK_DGRAM one (checked with fstat and getsockopt SO_DOMAIN, SO_TYPE,
/// SO_PROTOCOL). Also refused: a negative or closed descriptor, one that
/// is not a socket, a socket not bound to an address (an IP port 0, an
/// unnamed Unix socket), and a connected stream socket (an accepted
/// connection rather than a listener). The server sets O_NONBLOCK and
/// FD_CLOEXEC on it itself, and calls listen() with the config's backlog
/// on a stream socket that is not listening yet (SO_ACCEPTCONN); one that
/// is keeps the backlog it has. With bind_and_activate turned off
/// (ss_config_set_bind_and_activate()) that listen() is left to
/// ss_server_activate(). ss_server_address(), ss_server_port() and
/// ss_server_fileno() (which returns `fd`) work as for ss_server_new(),
/// in every mode. Options that only apply before bind (reuse_address,
/// reuse_port, ipv6_only) are the socket's own: the config's are not
/// applied to it; those applied to accepted connections (tcp_nodelay, ...)
/// are.
///
/// Ownership: on success the server owns `fd`: ss_server_close() (or
/// ss_server_free()) closes it; do not close it yourself. A Unix socket
/// file the adopted socket is bound to was not created by this server and
/// is never removed by it (unlike ss_server_new()'s). On failure `fd` is
/// left open, with its flags as they were, and is still the caller's to
/// close (as libuv's uv_tcp_open() and libevent's evconnlistener_new()
/// leave it), except after SS_ERR_PANIC, when it may have been closed.
/// `config` is only read, and `user_data` / `free_user_data` go as for
/// ss_server_new(): the finalizer runs exactly once, before this returns
/// if it fails. `*out_server` is written only on success.
///
/// Errors: SS_ERR_NULL_POINTER, SS_ERR_INVALID_ARGUMENT (a descriptor that
/// does not fit, or no handle callback), SS_ERR_IO (fstat, getsockopt,
/// fcntl, listen or the wake-up eventfd failed).
///
/// Thread: any thread.
#[no_mangle]
pub unsafe extern "C" fn ss_server_new_from_fd(
    config: *const ss_config,
    fd: c_int,
    user_data: *mut c_void,
    free_user_data: ss_free_fn,
    out_server: *mut *mut ss_server,
) -> ss_status {
    guard(|| {
        // Taken first, so that every error path below releases user_data.
        let handler = CHandler::new(user_data, free_user_data);
        // SAFETY: a live ss_config, read only.
        let boxed = unsafe { handle_ref(config) }?;
        let handler = constructor_handler(boxed, handler, out_server)?;
        if fd < 0 {
            return Err(Error::invalid(format!(
                "descriptor {fd} is not a file descriptor"
            )));
        }
        // SAFETY: fcntl(2) F_GETFD takes a number and touches no memory; it
        // tells whether the number is an open descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(Error::invalid(format!(
                "descriptor {fd} is not open: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: `fd` is open (checked just above) and the caller hands it
        // over per the contract; on failure it is given back unclosed.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        match Server::from_fd(&boxed.config, owned, handler) {
            // SAFETY: checked non-NULL; writable per the contract.
            Ok(server) => unsafe { publish(server, out_server) },
            Err((e, owned)) => {
                // Still the caller's: not closed.
                let _ = owned.into_raw_fd();
                Err(e)
            }
        }
    })
}

/// Drains the server gracefully (nginx's SIGQUIT, Go's Server.Shutdown):
/// asks serve_forever to stop accepting at once, let what is in flight
/// finish, close what is left `deadline_ms` milliseconds from now, and
/// return; returns at once itself (it only asks, as ss_server_shutdown()).
///
/// - The listener: a stream listener is shut down at once (shutdown(2);
///   its descriptor stays open until ss_server_close()): new connections
///   are refused, connections the kernel queued but the server had not
///   accepted are reset, and a successor process may bind the same port
///   (with SO_REUSEADDR, ss_config_set_reuse_address()). A datagram
///   socket is only no longer read. A listener adopted with
///   ss_server_new_from_fd() is not shut down, since another process
///   (systemd, a parent) may share it: it is only no longer accepted from,
///   and the connections queued in it wait for whoever accepts next.
/// - SS_EVENT: each connection is closed (on_close runs) as soon as it is
///   idle — no unconsumed input, no queued output, no job posted to it
///   (ss_server_post()) still waiting to run, not marked busy
///   (ss_conn_set_busy()), not held open after
///   end-of-input by on_eof, nothing received and not yet read — so an idle
///   keep-alive connection closes at once and never holds the drain up; a
///   busy one is closed when it becomes idle (a response still being sent
///   is sent whole first). A connection that has sent nothing yet is given
///   1 s from the start of the drain (its first request may be on its
///   way). A handler whose answer comes from another thread (posted later)
///   marks the connection busy meanwhile with ss_conn_set_busy().
/// - Blocking modes: waits until every handler returns: SS_THREADING and
///   hand-off threads (daemon threads too), SS_THREAD_POOL requests queued
///   or running (queued requests still run while the deadline allows),
///   SS_FORKING and hand-off children (until they exit and are reaped),
///   and connections in a lingering close (ss_config_set_lingering(): they
///   end by themselves within lingering_time; closing them would reset an
///   answer still on its way; the deadline leaves them to close). Idle
///   keep-alive connections do not hold the drain up here either: a
///   handler blocked in a read (ss_request_read(), _readline(), ...) that
///   waits for its client's next request — nothing of a request buffered
///   or received, and the handler wrote since it last read (or nothing was
///   received yet) — gets end-of-file at once (its connection's reading
///   side is shut down; SS_SYNC: the read watches the server's waker, once
///   the connection has had an answer: a connection that has sent nothing
///   yet is served when it does, or ends when it closes; in an SS_FORKING
///   or fork hand-off child, which runs on a copy of the server, the read
///   watches a pipe whose write end the parent closes when it drains), and
///   so does such a read started during the drain; a request that raced
///   in is still read and can be answered. A keep-alive handler should
///   also return between requests once ss_server_draining() says so (in a
///   forked child it tells what the parent had asked for at fork time).
///   Out of reach: SS_SYNC's handler runs on the serving thread itself, so
///   nothing cuts a busy one at the deadline: serve_forever drains when it
///   returns (the deadline then bounds hand-offs).
/// - At the deadline: SS_EVENT closes every connection left; blocking
///   modes close the pool requests not yet started unserved, shut down
///   (both ways) every stream request still open in this process, so that
///   its handler's blocked read sees end-of-file and its writes fail, and
///   kill the child processes still running with SIGKILL (not SIGTERM: a
///   child inherits the program's own SIGTERM handler, typically one that
///   drains, which a child cannot) and reap them (not reported to
///   handle_error). serve_forever then returns without waiting for the
///   cut handler threads to return (ss_server_close() waits for them with
///   block_on_close).
///
/// serve_forever returns SS_OK when everything finished before the
/// deadline, SS_ERR_TIMEOUT when the deadline cut something (how much:
/// ss_server_drain_cut()), SS_ERR_CLOSED if the server is closed from
/// another thread meanwhile. ss_server_handle_request() drains the same way
/// and returns SS_ERR_SHUT_DOWN (SS_ERR_TIMEOUT if something was cut).
/// After a drain the server cannot serve again (SS_ERR_WRONG_STATE): close
/// and free it.
///
/// Calling it again during a drain may bring the deadline forward, never
/// push it back. ss_server_shutdown() during a drain ends it at once, as
/// its deadline would. A drain asked for while no loop runs is kept: the
/// next serve_forever drains at once (a shutdown asked for too is consumed
/// first: that serve_forever returns SS_OK at once and the drain stays
/// asked for). `deadline_ms` 0: stop accepting and close (cut) everything
/// at once. Negative: SS_ERR_INVALID_ARGUMENT.
///
/// Ownership: borrows `server`. Async-signal-safe (clock_gettime, atomics,
/// one write(2)), leaves `errno` as it found it, and never sets the detail
/// message; the same limits as ss_server_shutdown() for a call racing or
/// following ss_server_free() (SS_ERR_CLOSED) and for a forked request
/// child (SS_ERR_WRONG_STATE).
///
/// Thread: any thread, any callback, or a signal handler
/// (async-signal-safe).
#[no_mangle]
pub unsafe extern "C" fn ss_server_drain(server: *mut ss_server, deadline_ms: i64) -> ss_status {
    // No panic boundary or detail message on purpose, as
    // ss_server_shutdown: neither is async-signal-safe, and nothing here
    // can panic.
    if server.is_null() {
        return ss_status::SS_ERR_NULL_POINTER;
    }
    let Ok(deadline_ms) = u64::try_from(deadline_ms) else {
        return ss_status::SS_ERR_INVALID_ARGUMENT;
    };
    if crate::sys::in_forked_child() {
        return ss_status::SS_ERR_WRONG_STATE;
    }
    let Some(_inside) = live::enter(server as usize) else {
        return ss_status::SS_ERR_CLOSED;
    };
    let saved = nix::errno::Errno::last_raw();
    // SAFETY: a registered handle, which free cannot release while
    // `_inside` counts this call.
    unsafe { &*server.cast::<Server>() }.drain(std::time::Duration::from_millis(deadline_ms));
    nix::errno::Errno::set_raw(saved);
    ss_status::SS_OK
}

/// Whether a drain (ss_server_drain()) has been asked for: true from the
/// call on, also once the drain is over (a drained server does not serve
/// again); false for NULL. A blocking handler that serves several
/// requests on one connection (keep-alive) checks it between requests and
/// returns, so that the drain need not wait for its client.
///
/// Ownership: borrows `server`. Lock-free.
///
/// Thread: any thread; also in a forked request child (where it tells what
/// the parent had asked for at fork time).
#[no_mangle]
pub unsafe extern "C" fn ss_server_draining(server: *const ss_server) -> bool {
    // SAFETY: forwarded contract.
    guard_value(false, || Ok(unsafe { handle_ref(server) }?.draining()))
}

/// Writes to `*out_cut` how many connections (SS_EVENT) or requests and
/// child processes (blocking modes) the last drain cut at its deadline (0
/// when everything finished in time, or before any drain).
///
/// Ownership: borrows `server`; `out_cut` is written only on success.
///
/// Thread: any thread.
#[no_mangle]
pub unsafe extern "C" fn ss_server_drain_cut(
    server: *const ss_server,
    out_cut: *mut usize,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let cut = unsafe { handle_ref(server) }?.drain_cut();
        // SAFETY: writable per the contract.
        unsafe { write_out(out_cut, "out_cut", cut) }
    })
}
