//! `ss_conn_*`: what SS_EVENT callbacks can do with their connection. Every
//! function must be called on the connection's loop thread, inside a
//! callback that received it (on_open, on_data, on_eof, on_close, a posted
//! job); each function's "Thread:" line says so in the header, where these
//! module docs do not reach.

use std::ffi::{c_char, c_int, c_void};
use std::io::IoSlice;
use std::os::fd::BorrowedFd;

use super::boundary::{
    check_len, clear_last_error, copy_sockaddr_out, copy_text_out, guard, guard_cleared,
    guard_value, handle_mut, handle_ref, last_error_may_be_set, null,
};
use super::handler::{callback_failed, conn_ptr, ss_watch_fn};
use super::server::server_ptr;
use super::{ss_conn, ss_server, ss_status};
use crate::error::Error;
use crate::error::Result;
use crate::event::{Conn, WATCH_ERROR, WATCH_HANGUP, WATCH_READ, WATCH_WRITE};

/// Queues `len` bytes of `buf` (copied) for the peer and sends what the
/// socket takes at once, without blocking; the rest goes out when the
/// socket is writable. SS_ERR_WOULD_BLOCK (nothing queued) while the
/// pending output is at the high-water mark (ss_config_set_output_high_water);
/// SS_ERR_CLOSED after ss_conn_close(), ss_conn_abort() or
/// ss_conn_shutdown_write(); SS_ERR_IO when the peer has gone (the
/// connection then closes; never SIGPIPE); SS_ERR_INVALID_ARGUMENT for
/// `len` above PTRDIFF_MAX. Reaching the high-water mark (refused, or
/// left that much queued) arms on_drain (ss_config_set_on_drain()); for
/// several buffers in one call see ss_conn_writev().
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_write(
    conn: *mut ss_conn,
    buf: *const c_void,
    len: usize,
) -> ss_status {
    // Every event-mode reply goes through here: with no last error to
    // clear (the usual case) nothing is called but the send.
    if last_error_may_be_set() {
        // SAFETY: forwarded contract.
        return unsafe { conn_write_clearing(conn, buf, len) };
    }
    // SAFETY: forwarded contract.
    guard_cleared(|| unsafe { conn_write(conn, buf, len) })
}

/// ss_conn_write when a last error may need clearing: as `guard` does.
#[inline(never)]
unsafe fn conn_write_clearing(conn: *mut ss_conn, buf: *const c_void, len: usize) -> ss_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { conn_write(conn, buf, len) })
}

/// ss_conn_write's body (it runs no callback).
///
/// # Safety
/// As ss_conn_write.
#[inline(always)]
unsafe fn conn_write(conn: *mut ss_conn, buf: *const c_void, len: usize) -> Result<()> {
    // SAFETY: forwarded contract.
    let conn = unsafe { handle_mut(conn) }?;
    if len == 0 {
        return Ok(());
    }
    if buf.is_null() {
        return Err(null("buf"));
    }
    check_len(len, "len")?;
    // SAFETY: readable for `len` bytes per the contract, and `len` is at
    // most isize::MAX.
    conn.write(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) })
}

/// Closes the connection once its queued output has been sent (on_close
/// runs then). No more on_data calls after this. If the peer takes none of
/// the queued output for lingering_timeout (ss_config_set_lingering(),
/// default 5 s), the rest is dropped, the connection closes and
/// handle_error gets SS_ERR_TIMEOUT: a peer that stopped reading cannot
/// keep it open. Then the connection lingers (see
/// ss_config_set_lingering()) unless the peer has already ended its
/// input.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_close(conn: *mut ss_conn) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe { handle_mut(conn) }?.close();
        Ok(())
    })
}

/// Bytes queued and not yet sent; 0 for NULL.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_pending_output(conn: *const ss_conn) -> usize {
    // SAFETY: forwarded contract.
    guard_value(0, || Ok(unsafe { handle_ref(conn) }?.pending_output()))
}

/// True while the pending output is at the high-water mark (writes are
/// refused and the connection is not read until the peer catches up).
/// False for NULL.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_output_full(conn: *const ss_conn) -> bool {
    // SAFETY: forwarded contract.
    guard_value(false, || Ok(unsafe { handle_ref(conn) }?.output_full()))
}

/// The connection's id for ss_server_post() from any thread. It names this
/// connection only: no other connection of this server, in this run of
/// serve_forever or a later one, ever gets the same id (a lingering
/// connection no longer answers to it either). 0 for NULL (a live
/// connection may also have id 0).
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_id(conn: *const ss_conn) -> u64 {
    // SAFETY: forwarded contract.
    guard_value(0, || Ok(unsafe { handle_ref(conn) }?.id()))
}

/// Sets the connection's own pointer (initially NULL), e.g. per-connection
/// state allocated in on_open. The library never dereferences or frees it:
/// free it in on_close. Not the server's user data, which every callback
/// receives as its last argument.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_set_data(conn: *mut ss_conn, data: *mut c_void) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe { handle_mut(conn) }?.set_user_data(data as usize);
        Ok(())
    })
}

/// The connection's own pointer (see ss_conn_set_data()); NULL for NULL.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_data(conn: *const ss_conn) -> *mut c_void {
    // SAFETY: forwarded contract.
    guard_value(std::ptr::null_mut(), || {
        Ok(unsafe { handle_ref(conn) }?.user_data() as *mut c_void)
    })
}

/// Deprecated alias of ss_conn_set_data(), which does the same: it sets
/// the connection's own pointer, not the server's user data. Removed in 0.2.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
#[deprecated(note = "use ss_conn_set_data(); removed in 0.2")]
pub unsafe extern "C" fn ss_conn_set_user_data(
    conn: *mut ss_conn,
    user_data: *mut c_void,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { ss_conn_set_data(conn, user_data) }
}

/// Deprecated alias of ss_conn_data(), which returns the same pointer: the
/// connection's own, not the server's user data. Removed in 0.2.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
#[deprecated(note = "use ss_conn_data(); removed in 0.2")]
pub unsafe extern "C" fn ss_conn_user_data(conn: *const ss_conn) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { ss_conn_data(conn) }
}

/// The connection's fd (owned by the library: do not close it, do not
/// read from it); -1 for NULL.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_fileno(conn: *const ss_conn) -> c_int {
    // SAFETY: forwarded contract.
    guard_value(-1, || Ok(unsafe { handle_ref(conn) }?.fd()))
}

/// Copies the peer's address as a string into `buf`, with the same buffer
/// rules as ss_server_address().
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_peer_address(
    conn: *const ss_conn,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let text = unsafe { handle_ref(conn) }?.peer_address();
        // SAFETY: buffer contract as documented.
        unsafe { copy_text_out(&text, buf, cap, out_len) }
    })
}

/// Stops reading the connection: no more recv and no on_data calls until
/// ss_conn_resume_reading() (input already received stays held). Use it
/// while a request waits for something else (a backend, a response that
/// cannot be queued yet). The kernel's receive buffer fills and TCP flow
/// control then slows the peer; memory stays bounded. No system call when
/// called: the loop stops watching the socket for input (one epoll_ctl)
/// only if it was watching it. Pausing twice is the same as once.
///
/// While paused: a peer's orderly end of input (FIN) is noticed only after
/// resuming, once the input before it has been presented (then on_eof or
/// the close, as usual); a peer that resets the connection (or any socket
/// error) ends it at once (on_close runs, held input is dropped); a
/// hang-up without an error (a Unix peer closed, or both directions are
/// shut) does not end it: resuming reads what is left, then the end. The
/// idle timeout and request deadline (if set) go on running. Output is
/// still sent, and on_drain still called.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_pause_reading(conn: *mut ss_conn) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe { handle_mut(conn) }?.pause_reading();
        Ok(())
    })
}

/// Reads the connection again after ss_conn_pause_reading(). Input held
/// (received and not consumed) is presented to on_data first, by the loop,
/// soon after the calling callback returns (never from inside this call,
/// nor recursively inside the on_data that called it), then the socket is
/// read again. A no-op when not paused.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_resume_reading(conn: *mut ss_conn) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe { handle_mut(conn) }?.resume_reading();
        Ok(())
    })
}

/// True while reading is paused (ss_conn_pause_reading()); false for NULL.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_reading_paused(conn: *const ss_conn) -> bool {
    // SAFETY: forwarded contract.
    guard_value(false, || Ok(unsafe { handle_ref(conn) }?.reading_paused()))
}

/// Half-close: shuts the connection's write side down (the peer reads
/// end-of-file) once the output queued so far has been sent (at once if
/// none is). Reading goes on: on_data still gets what the peer sends, until
/// the peer ends its side too (then the connection closes, or on_eof is
/// called if set) or ss_conn_close(). Further ss_conn_write() and
/// ss_conn_writev() calls fail with SS_ERR_CLOSED. Calling it twice is the
/// same as once; SS_ERR_CLOSED after ss_conn_close() or ss_conn_abort().
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_shutdown_write(conn: *mut ss_conn) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe { handle_mut(conn) }?.shutdown_write()
    })
}

/// Abortive close, for a client that must get nothing more: queued output
/// and held input are dropped, and as soon as the calling callback returns
/// the socket is closed with SO_LINGER 0, with no shutdown and no
/// lingering: a TCP peer gets a reset (ECONNRESET), a Unix peer end of
/// file (ECONNRESET if it had sent data not yet read). on_close runs once,
/// as for every close (called from on_close itself, the reset replaces a
/// lingering close). Allowed after ss_conn_close() (it cuts a graceful
/// close short); calling it twice is the same as once. A forked child
/// still holding a copy of the socket keeps it open (no reset then).
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_abort(conn: *mut ss_conn) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe { handle_mut(conn) }?.abort();
        Ok(())
    })
}

/// The most buffers one ss_conn_writev() call takes (Linux's IOV_MAX).
const MAX_IOVECS: c_int = 1024;

/// Vectored ss_conn_write(): queues the `iovcnt` buffers of `iov` (a
/// `struct iovec` array from <sys/uio.h>), in order, as if written one
/// after the other in one call, e.g. a header and a body without copying
/// them together first. When nothing is queued they go out in one
/// sendmsg() system call; what the socket does not take is copied into
/// the queue (you may reuse the buffers as soon as this returns). Same
/// rules as ss_conn_write(): SS_ERR_WOULD_BLOCK (nothing queued) while the
/// pending output is at the high-water mark, else all of it is accepted
/// (the queue may go over the mark by this call); SS_ERR_CLOSED after
/// ss_conn_close(), ss_conn_abort() or ss_conn_shutdown_write(); SS_ERR_IO
/// when the peer has gone. `iovcnt` 0 to 1024 (IOV_MAX), else
/// SS_ERR_INVALID_ARGUMENT; `iov` may be NULL when `iovcnt` is 0; an entry
/// with `iov_len` 0 may have a NULL `iov_base`, one with `iov_len` > 0 may
/// not (SS_ERR_INVALID_ARGUMENT, nothing queued), nor may the lengths add
/// up to more than PTRDIFF_MAX. Nothing to write (every length 0) is
/// SS_OK.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_writev(
    conn: *mut ss_conn,
    iov: *const libc::iovec,
    iovcnt: c_int,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let conn = unsafe { handle_mut(conn) }?;
        if !(0..=MAX_IOVECS).contains(&iovcnt) {
            return Err(Error::invalid(format!(
                "iovcnt {iovcnt} is out of range (0 to {MAX_IOVECS})"
            )));
        }
        if iovcnt == 0 {
            return Ok(());
        }
        if iov.is_null() {
            return Err(null("iov"));
        }
        // SAFETY: `iov` points to `iovcnt` readable iovecs per the contract.
        let iovs = unsafe { std::slice::from_raw_parts(iov, iovcnt as usize) };
        let mut total: usize = 0;
        let mut any_null = false;
        for (i, v) in iovs.iter().enumerate() {
            if v.iov_base.is_null() {
                if v.iov_len > 0 {
                    return Err(Error::invalid(format!(
                        "iov[{i}].iov_base is NULL with iov_len {}",
                        v.iov_len
                    )));
                }
                any_null = true;
            }
            total = total
                .checked_add(v.iov_len)
                .filter(|&t| isize::try_from(t).is_ok())
                .ok_or_else(|| {
                    Error::invalid("the iovec lengths add up to more than PTRDIFF_MAX")
                })?;
        }
        if total == 0 {
            return Ok(());
        }
        if !any_null {
            // SAFETY: IoSlice is guaranteed ABI-compatible with iovec on
            // Unix; every base is non-NULL and readable for its length
            // (contract), and the total fits isize.
            let slices =
                unsafe { std::slice::from_raw_parts(iov.cast::<IoSlice<'_>>(), iovs.len()) };
            return conn.write_vectored(slices);
        }
        // Rare: NULL bases (of empty entries) cannot be slices; skip them.
        let slices: Vec<IoSlice<'_>> = iovs
            .iter()
            .filter(|v| !v.iov_base.is_null())
            // SAFETY: non-NULL and readable for iov_len bytes (contract).
            .map(|v| {
                IoSlice::new(unsafe {
                    std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len)
                })
            })
            .collect();
        conn.write_vectored(&slices)
    })
}

/// The server this connection belongs to (borrowed: the same pointer
/// ss_server_new() returned), or NULL for NULL or when called from a thread
/// that is not the connection's loop (with the reason in
/// ss_last_error_message()).
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_server(conn: *const ss_conn) -> *mut ss_server {
    guard_value(std::ptr::null_mut(), || {
        // SAFETY: forwarded contract.
        let conn = unsafe { handle_ref(conn) }?;
        conn.with_server(server_ptr).ok_or_else(|| {
            Error::wrong_state("ss_conn_server must be called on the connection's loop thread")
        })
    })
}

/// Copies the peer's raw address (as accept() gave it, kept for the
/// connection's life: it is still there after the peer reset) into `out`,
/// at most `*inout_len` bytes, and sets `*inout_len` to its full length, as
/// getpeername() does (the same rules as ss_request_client_sockaddr()); a
/// `struct sockaddr_storage` always fits. An unnamed Unix client gives the
/// family alone (length sizeof(sa_family_t)).
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_peer_sockaddr(
    conn: *const ss_conn,
    out: *mut libc::sockaddr,
    inout_len: *mut libc::socklen_t,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let addr = unsafe { handle_ref(conn) }?.peer_sockaddr();
        // SAFETY: buffer contract as documented.
        unsafe { copy_sockaddr_out(&addr, out, inout_len) }
    })
}

/// Copies the connection's own address (getsockname(): for a TCP server
/// bound to a wildcard address, the address the client reached) into
/// `out`, with the same rules as ss_conn_peer_sockaddr(). SS_ERR_IO if
/// getsockname() fails.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_local_sockaddr(
    conn: *const ss_conn,
    out: *mut libc::sockaddr,
    inout_len: *mut libc::socklen_t,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let addr = unsafe { handle_ref(conn) }?.local_sockaddr()?;
        // SAFETY: buffer contract as documented.
        unsafe { copy_sockaddr_out(&addr, out, inout_len) }
    })
}

/// Inside handle_error called for an SS_EVENT connection's failure (its
/// `request` is NULL): that connection, borrowed until handle_error
/// returns (its on_close has not run yet; it closes after handle_error).
/// Use it to tell which connection failed: ss_conn_id(), ss_conn_data()
/// (your per-connection state), ss_conn_peer_address(). NULL anywhere else
/// (another handle_error, another thread, outside handle_error). The
/// message handle_error gets names the connection too: "connection <id>
/// from <peer>: ...", with <id> as ss_conn_id() gives it.
///
/// Thread: inside handle_error, on the thread running it (a loop thread).
#[no_mangle]
pub extern "C" fn ss_error_conn() -> *mut ss_conn {
    crate::event::failing_conn().map_or(std::ptr::null_mut(), |c| c.as_ptr().cast())
}

/// Readiness bits for ss_conn_watch_fd() and ss_watch_fn, passed as an
/// int.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ss_watch_events {
    /// Readable (or end of file): watch for it, or it is ready.
    SS_WATCH_READ = 1,
    /// Writable: watch for it, or it is ready.
    SS_WATCH_WRITE = 2,
    /// Reported only: the descriptor hung up (a pipe's other end closed, a
    /// socket shut in both directions). The watch's last call.
    SS_WATCH_HANGUP = 4,
    /// Reported only: an error on the descriptor. The watch's last call.
    SS_WATCH_ERROR = 8,
}

const _: () = {
    assert!(ss_watch_events::SS_WATCH_READ as u32 == WATCH_READ);
    assert!(ss_watch_events::SS_WATCH_WRITE as u32 == WATCH_WRITE);
    assert!(ss_watch_events::SS_WATCH_HANGUP as u32 == WATCH_HANGUP);
    assert!(ss_watch_events::SS_WATCH_ERROR as u32 == WATCH_ERROR);
};

/// A C watch callback and its pointer, as the core's callback.
struct CWatch {
    callback: unsafe extern "C-unwind" fn(*mut ss_conn, c_int, c_int, *mut c_void) -> c_int,
    data: *mut c_void,
}

// SAFETY: the watch runs only on the connection's loop thread, the one that
// registered it; the pointer is the caller's, passed back untouched.
unsafe impl Send for CWatch {}

impl CWatch {
    fn call(&self, conn: &mut Conn, fd: c_int, ready: u32) -> crate::error::Result<()> {
        clear_last_error();
        // SAFETY: a live connection, borrowed for the call; `data` is the
        // caller's, passed back.
        let rc = unsafe { (self.callback)(conn_ptr(conn), fd, ready as c_int, self.data) };
        match rc {
            0 => Ok(()),
            rc => Err(callback_failed("watch", rc)),
        }
    }
}

/// Watches a descriptor of yours (a pipe, a socket to a backend, an
/// eventfd) on this connection's event loop: `callback` (see ss_watch_fn)
/// runs there, with this connection and `data`, whenever `fd` is ready for
/// `events` (SS_WATCH_READ and/or SS_WATCH_WRITE; hang-ups and errors are
/// always reported). The watch belongs to the connection: it ends when the
/// connection closes (when on_close runs), with ss_conn_unwatch_fd(), or
/// after a call reporting SS_WATCH_HANGUP or SS_WATCH_ERROR. Watching a
/// descriptor this connection already watches replaces its events,
/// callback and data (a number you closed without unwatching, now another
/// file, is watched anew: the old watch ends). Make `fd` non-blocking
/// yourself: callbacks must not block.
///
/// Ownership: `fd` stays yours, and the library never reads, writes or
/// closes it; it watches a duplicate of it (its own descriptor,
/// close-on-exec, closed when the watch ends), so closing `fd` before
/// unwatching cannot disturb the loop, though the file then stays open
/// until the watch ends. Watches are known by the number `fd`: once you
/// have closed `fd`, unwatch it before watching a new descriptor that got
/// the same number, else the call only changes the old watch (of the
/// closed file's duplicate) and the new descriptor is not watched. `data`
/// is never dereferenced or freed.
///
/// Errors: SS_ERR_INVALID_ARGUMENT for `events` other than a non-empty
/// combination of SS_WATCH_READ and SS_WATCH_WRITE, for a descriptor that
/// is not open, or for the connection's own socket; SS_ERR_NULL_POINTER
/// for a NULL `callback`; SS_ERR_UNSUPPORTED for a file epoll cannot watch
/// (regular files, directories); SS_ERR_CLOSED after ss_conn_close() or
/// ss_conn_abort(); SS_ERR_WRONG_STATE from a thread that is not the
/// connection's loop; SS_ERR_IO if a system call fails.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_watch_fd(
    conn: *mut ss_conn,
    fd: c_int,
    events: c_int,
    callback: ss_watch_fn,
    data: *mut c_void,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let conn = unsafe { handle_mut(conn) }?;
        let Some(callback) = callback else {
            return Err(null("callback"));
        };
        // SAFETY: fcntl(F_GETFD) on any number is harmless; it tells
        // whether the descriptor is open before it is borrowed.
        if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(Error::invalid(format!("descriptor {fd} is not open")));
        }
        // SAFETY: open (checked just above) and only borrowed for this call
        // (duplicated, not kept).
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let events = u32::try_from(events).unwrap_or(u32::MAX);
        let c = CWatch { callback, data };
        conn.watch_fd(
            borrowed,
            events,
            Box::new(move |conn: &mut Conn, fd, ready| c.call(conn, fd, ready)),
        )
    })
}

/// Stops watching `fd` (see ss_conn_watch_fd()); its callback is not
/// called again, even for readiness already reported in the current loop
/// turn. SS_ERR_INVALID_ARGUMENT if this connection does not watch it;
/// SS_ERR_WRONG_STATE from a thread that is not the connection's loop.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_unwatch_fd(conn: *mut ss_conn, fd: c_int) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe { handle_mut(conn) }?.unwatch_fd(fd)
    })
}

/// Descriptors this connection watches (ss_conn_watch_fd()); 0 for NULL.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_watched_fds(conn: *const ss_conn) -> usize {
    // SAFETY: forwarded contract.
    guard_value(0, || Ok(unsafe { handle_ref(conn) }?.watched_fds()))
}
/// Marks the connection busy (`busy` true) or not: an answer is on its way
/// from elsewhere (work handed to another thread that will post the answer
/// with ss_server_post()), so that a drain (ss_server_drain()) does not
/// close it as idle: a busy connection is waited for until this is cleared
/// (it is then closed as soon as it is idle) or the drain's deadline.
/// Unconsumed input, queued output, a job already posted and an on_eof
/// hold count as busy by themselves; this is for the gap the library
/// cannot see. Initially false; nothing but this call changes it.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_set_busy(conn: *mut ss_conn, busy: bool) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe { handle_mut(conn) }?.set_busy(busy);
        Ok(())
    })
}
