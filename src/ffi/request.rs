//! `ss_request_*`: what a handler can do with its request. A request is not
//! thread-safe: each function's "Thread:" line (which reaches the header,
//! where these module docs do not) says it belongs to the callback that
//! received it, or to the hand-off continuation that took it over.
//!
//! Time limits are documented on ss_request_read: the request timeout
//! bounds each wait, the request deadline the whole request.

use std::ffi::{c_char, c_int, c_void};

use super::boundary::{
    check_len, clear_last_error, copy_sockaddr_out, copy_text_out, guard, guard_cleared,
    guard_value, handle_mut, handle_ref, null, write_out,
};
use super::handler::{call_request_fn, ss_request_fn};
use super::server::{server_ptr, user_data_of};
use super::{ss_request, ss_server, ss_status};
use crate::config::timeout_from_ms;
use crate::error::{Error, ErrorKind, Result};
use crate::request::{HandOffTarget, Request};

/// `guard` for the stream I/O calls, which run no callback: the detail
/// message is cleared before the body only (nothing can set one after),
/// and the body is instantiated once, inline, so that each call is one
/// frame down to the syscall.
#[inline(always)]
fn guard_io(body: impl FnOnce() -> Result<()>) -> ss_status {
    clear_last_error();
    guard_cleared(body)
}

/// A caller's byte buffer; NULL is allowed only with length 0.
///
/// # Safety
/// A non-NULL `buf` must be writable for `len` bytes.
unsafe fn out_bytes<'a>(buf: *mut c_void, len: usize) -> Result<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if buf.is_null() {
        return Err(null("buf"));
    }
    check_len(len, "buffer")?;
    // SAFETY: non-NULL and writable for `len` (<= isize::MAX) bytes per the
    // contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) })
}

/// # Safety
/// A non-NULL `buf` must be readable for `len` bytes.
unsafe fn in_bytes<'a>(buf: *const c_void, len: usize) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if buf.is_null() {
        return Err(null("buf"));
    }
    check_len(len, "buffer")?;
    // SAFETY: non-NULL and readable for `len` (<= isize::MAX) bytes per the
    // contract.
    Ok(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) })
}

/// Reads up to `len` bytes into `buf` and stores the count in `*out_read`:
/// 0 means the client closed the connection (or the datagram is used up).
/// Stream reads are buffered (ss_config_set_read_buffer_size) and block
/// until at least one byte arrives or a time limit passes (SS_ERR_TIMEOUT).
/// A datagram request reads from the received datagram (Python's
/// `rfile = BytesIO(packet)`). `*out_read` is written only on success.
///
/// Time limits of every ss_request_* read and write, in the blocking modes:
/// - the request timeout (ss_config_set_request_timeout(),
///   ss_request_set_timeout()) bounds each wait: a call fails with
///   SS_ERR_TIMEOUT when no byte could be read or sent for that long. It
///   bounds silence only: a client that sends one byte per timeout keeps
///   its request (and, in SS_SYNC, SS_FORKING's child or an SS_THREAD_POOL
///   worker, the thread serving it) for as long as it likes.
/// - the request deadline (ss_config_set_request_deadline()) bounds the
///   whole request, counted from accept (or the datagram's arrival, and
///   including time queued for a pool worker): each wait ends at the
///   earlier of the timeout and the deadline, and once the deadline has
///   passed every read and write of the request fails at once with
///   SS_ERR_TIMEOUT (the message says which limit it was). Use it to bound
///   how long one slow client can hold a worker.
///
/// Without either, reads and writes block as long as the client makes
/// them. A read or write never fails with SS_ERR_TIMEOUT before its limit,
/// and never blocks past it by more than about 10 ms, even when another
/// thread reads the same socket: a read bounded by the timeout alone is
/// one blocking recv that the socket's receive timeout (SO_RCVTIMEO, set
/// 10 ms above it, so that the kernel's coarser timer never ends it early)
/// ends, without reading the clock; a signal caught during that wait
/// starts the timeout again, once.
///
/// SS_ERR_INVALID_ARGUMENT for `len` above PTRDIFF_MAX.
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
pub unsafe extern "C" fn ss_request_read(
    request: *mut ss_request,
    buf: *mut c_void,
    len: usize,
    out_read: *mut usize,
) -> ss_status {
    guard_io(|| {
        // SAFETY: forwarded contracts.
        let req = unsafe { handle_mut(request) }?;
        if out_read.is_null() {
            return Err(null("out_read"));
        }
        // SAFETY: forwarded contract.
        let n = req.read(unsafe { out_bytes(buf, len) }?)?;
        // SAFETY: checked non-NULL.
        unsafe { write_out(out_read, "out_read", n) }
    })
}

/// Reads exactly `len` bytes into `buf`. SS_ERR_EOF if the data ends first
/// (what was read is then lost), SS_ERR_TIMEOUT per read as for ss_request_read.
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
pub unsafe extern "C" fn ss_request_read_exact(
    request: *mut ss_request,
    buf: *mut c_void,
    len: usize,
) -> ss_status {
    guard_io(|| {
        // SAFETY: forwarded contracts.
        let req = unsafe { handle_mut(request) }?;
        // SAFETY: forwarded contract.
        req.read_exact(unsafe { out_bytes(buf, len) }?)
    })
}

/// Reads one line like fgets(): at most `cap - 1` bytes, stopping after the
/// first '\n' (kept), and always NUL-terminates `buf`. If it fails (e.g.
/// SS_ERR_TIMEOUT), the partial line stays buffered and a retry gets it
/// whole (except a line longer than the read buffer, or in unbuffered mode). The byte count
/// (without the NUL) goes to `*out_len` (optional): 0 at end of data; a
/// count of `cap - 1` without a trailing '\n' means the line was longer
/// and the rest is still to be read. Data after the line stays buffered for
/// the next read. On any failure `buf` holds "" (when `cap` > 0 and `buf` is
/// not NULL), so it is always a C string. SS_ERR_INVALID_ARGUMENT if `cap`
/// is 0 or above PTRDIFF_MAX.
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
pub unsafe extern "C" fn ss_request_readline(
    request: *mut ss_request,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> ss_status {
    // A C string whatever happens below, even before any check.
    if cap > 0 && !buf.is_null() {
        // SAFETY: `buf` is writable for `cap` > 0 bytes per the contract.
        unsafe { buf.write(0) };
    }
    guard_io(|| {
        // SAFETY: forwarded contracts.
        let req = unsafe { handle_mut(request) }?;
        if cap == 0 {
            return Err(Error::invalid("cap must be at least 1 (room for the NUL)"));
        }
        // SAFETY: forwarded contract; cap > 0 so buf is checked for NULL.
        let bytes = unsafe { out_bytes(buf.cast(), cap) }?;
        let n = match req.readline(&mut bytes[..cap - 1]) {
            Ok(n) => n,
            Err(e) => {
                // Bytes of a long line may have been copied: cut them off.
                bytes[0] = 0;
                return Err(e);
            }
        };
        bytes[n] = 0;
        if !out_len.is_null() {
            // SAFETY: non-NULL and writable per the contract.
            unsafe { out_len.write(n) };
        }
        Ok(())
    })
}

/// Writes all `len` bytes. A stream request sends them before returning
/// (unless a write buffer is configured, then they may wait for
/// ss_request_flush() or the end of the handler); SS_ERR_IO if the client
/// has gone (never SIGPIPE); SS_ERR_TIMEOUT as for ss_request_read(). A
/// datagram request collects them: one reply datagram with everything
/// written goes to the client when the handler finishes (Python's wfile),
/// even if handle failed. Nothing is sent if the handler never writes.
/// In the blocking modes, a datagram reply that finds the client's queue
/// (or the socket's send buffer) full is retried for at most 50 ms (less if
/// the request timeout or deadline ends sooner), then dropped and reported
/// to handle_error as SS_ERR_WOULD_BLOCK; further replies to a client whose
/// queue stayed full are dropped at once until one gets through, so a
/// client that floods requests without reading the answers never stalls
/// the server. SS_EVENT drops at once. Applies to ss_request_reply() too.
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
pub unsafe extern "C" fn ss_request_write(
    request: *mut ss_request,
    buf: *const c_void,
    len: usize,
) -> ss_status {
    guard_io(|| {
        // SAFETY: forwarded contracts.
        let req = unsafe { handle_mut(request) }?;
        // SAFETY: forwarded contract.
        req.write(unsafe { in_bytes(buf, len) }?)
    })
}

/// Sends a stream request's buffered output now. No-op for datagrams.
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
pub unsafe extern "C" fn ss_request_flush(request: *mut ss_request) -> ss_status {
    // SAFETY: forwarded contract.
    guard_io(|| unsafe { handle_mut(request) }?.flush())
}

/// Sends `len` bytes to the client at once: for a datagram request one
/// datagram, apart from the reply collected by ss_request_write(); for a
/// stream, flushes then sends. SS_ERR_ADDRESS when the sender of a Unix
/// datagram has no address to reply to (an unbound client socket). In
/// SS_EVENT a datagram reply is queued instead: the loop takes datagrams
/// in batches (one recvmmsg) and sends the batch's replies together (one
/// sendmmsg), in order, once on_datagram has run on each; a reply that
/// fails then is dropped and reported to handle_error with its request.
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
pub unsafe extern "C" fn ss_request_reply(
    request: *mut ss_request,
    buf: *const c_void,
    len: usize,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contracts.
        let req = unsafe { handle_mut(request) }?;
        // SAFETY: forwarded contract.
        req.reply(unsafe { in_bytes(buf, len) }?)
    })
}

/// Sets this request's read/write timeout in milliseconds (negative: none),
/// overriding ss_config_set_request_timeout() (see ss_request_read() for
/// what it bounds); the request deadline still applies. 0 is refused
/// (SS_ERR_INVALID_ARGUMENT).
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
pub unsafe extern "C" fn ss_request_set_timeout(
    request: *mut ss_request,
    timeout_ms: i64,
) -> ss_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { handle_mut(request) }?.set_timeout(timeout_from_ms(timeout_ms)))
}

/// Copies the client's address as a string ("127.0.0.1:50312", "[::1]:50312",
/// a socket path, "@name", or "" for an unnamed Unix socket) into `buf`, with
/// the same buffer rules as ss_server_address().
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
pub unsafe extern "C" fn ss_request_client_address(
    request: *const ss_request,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contracts.
        let req = unsafe { handle_ref(request) }?;
        // SAFETY: buffer contract as documented.
        unsafe { copy_text_out(req.client_address(), buf, cap, out_len) }
    })
}

/// Copies the client's raw address (as accept/recvfrom gave it) into `out`,
/// at most `*inout_len` bytes, and sets `*inout_len` to its full length, as
/// getpeername() does; a `struct sockaddr_storage` always fits. A length of
/// 0 means the client has no address (unbound Unix datagram sender).
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
pub unsafe extern "C" fn ss_request_client_sockaddr(
    request: *const ss_request,
    out: *mut libc::sockaddr,
    inout_len: *mut libc::socklen_t,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contracts.
        let req = unsafe { handle_ref(request) }?;
        // SAFETY: buffer contract as documented.
        unsafe { copy_sockaddr_out(req.client_sockaddr(), out, inout_len) }
    })
}

/// The received datagram, whole: `*out_data` points into the request
/// (borrowed until the callback returns) and `*out_len` is its size. Reading
/// it this way does not consume it for ss_request_read. SS_ERR_UNSUPPORTED
/// for stream requests.
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
pub unsafe extern "C" fn ss_request_datagram(
    request: *const ss_request,
    out_data: *mut *const u8,
    out_len: *mut usize,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contracts.
        let req = unsafe { handle_ref(request) }?;
        if out_data.is_null() || out_len.is_null() {
            return Err(null(if out_data.is_null() {
                "out_data"
            } else {
                "out_len"
            }));
        }
        let data = req.datagram_data().ok_or_else(|| {
            Error::new(ErrorKind::Unsupported, "a stream request has no datagram")
        })?;
        // SAFETY: both checked non-NULL; writable per the contract.
        unsafe {
            out_data.write(data.as_ptr());
            out_len.write(data.len());
        }
        Ok(())
    })
}

/// The request's file descriptor: the connection for a stream request, the
/// server socket for a datagram request; -1 for NULL. Owned by the library:
/// do not close it. A stream connection is blocking, and from this call on
/// has no receive timeout (SO_RCVTIMEO, which the library's timed reads
/// otherwise use): your own reads on it block as long as they must.
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
pub unsafe extern "C" fn ss_request_fileno(request: *const ss_request) -> c_int {
    // SAFETY: forwarded contract.
    guard_value(-1, || Ok(unsafe { handle_ref(request) }?.fileno()))
}

/// The server this request came to (borrowed), or NULL for NULL.
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
pub unsafe extern "C" fn ss_request_server(request: *const ss_request) -> *mut ss_server {
    guard_value(std::ptr::null_mut(), || {
        // SAFETY: forwarded contract.
        Ok(server_ptr(unsafe { handle_ref(request) }?.server()))
    })
}

/// The server's user data (as given to ss_server_new(), the same pointer
/// as ss_server_user_data(ss_request_server(request))), or NULL for NULL.
/// For a pointer of this request's own, see ss_request_data().
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
pub unsafe extern "C" fn ss_request_server_user_data(request: *const ss_request) -> *mut c_void {
    guard_value(std::ptr::null_mut(), || {
        // SAFETY: forwarded contract.
        Ok(user_data_of(unsafe { handle_ref(request) }?.server()))
    })
}

/// Deprecated alias of ss_request_server_user_data(), which returns the
/// same pointer: the server's user data, not the request's own pointer
/// (that is ss_request_data()). Removed in 0.2.
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
#[deprecated(note = "use ss_request_server_user_data(); removed in 0.2")]
pub unsafe extern "C" fn ss_request_user_data(request: *const ss_request) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { ss_request_server_user_data(request) }
}

/// A C continuation and its user pointer, moved to the thread or child.
struct CContinuation {
    callback: ss_request_fn,
    user_data: *mut c_void,
}

// SAFETY: the header tells C callers that a continuation runs on another
// thread (or in a child) with the server's user data; making that safe is
// their contract, as for SS_THREADING callbacks.
unsafe impl Send for CContinuation {}

/// From inside the handle callback: once handle returns 0, run the rest of
/// this request as `continuation(request, user_data)` on a new thread
/// (`target` = SS_HAND_OFF_THREAD) or in a forked child (SS_HAND_OFF_FORK),
/// followed there by finish, the datagram reply, handle_error if anything
/// failed, and the close; the server goes on to the next request at once.
/// This is what Python's socketserver documentation suggests doing by hand
/// ("process part of a request synchronously, but to finish processing in
/// a forked child depending on the request data"); it works in every mode
/// (in SS_FORKING the request already has its own process, so it
/// continues there). If handle returns non-zero the hand-off is
/// dropped and the request ends as usual. Hand-off threads count as
/// handler threads for daemon_threads and block_on_close; hand-off children
/// are reaped like SS_FORKING children and count against max_children
/// (ss_config_set_max_children(); at the cap the hand-off is refused and
/// reported to handle_error). Errors: SS_ERR_WRONG_STATE outside
/// handle or when called twice, SS_ERR_INVALID_ARGUMENT for a bad target,
/// SS_ERR_NULL_POINTER.
///
/// Thread: inside the handle callback that received this request.
#[no_mangle]
pub unsafe extern "C" fn ss_request_hand_off(
    request: *mut ss_request,
    target: c_int,
    continuation: ss_request_fn,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let req = unsafe { handle_mut(request) }?;
        let target = match target {
            0 => HandOffTarget::Thread,
            1 => HandOffTarget::Fork,
            _ => {
                return Err(Error::invalid(format!(
                    "target {target} is not an ss_hand_off value (0 or 1)"
                )))
            }
        };
        if continuation.is_none() {
            return Err(null("continuation"));
        }
        let c = CContinuation {
            callback: continuation,
            user_data: user_data_of(req.server()),
        };
        req.hand_off(
            target,
            Box::new(move |r: &mut Request| {
                let c = c;
                call_request_fn("continuation", c.callback, r, c.user_data)
            }),
        )
    })
}

/// Sets this request's own pointer (initially NULL), e.g. state allocated
/// in setup and freed in finish; it follows the request to its thread,
/// child or hand-off continuation. The library never dereferences or frees
/// it.
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
pub unsafe extern "C" fn ss_request_set_data(
    request: *mut ss_request,
    data: *mut c_void,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe { handle_mut(request) }?.set_data(data as usize);
        Ok(())
    })
}

/// This request's own pointer (see ss_request_set_data()); NULL for NULL.
///
/// Thread: inside a callback given this request (or its hand-off continuation).
#[no_mangle]
pub unsafe extern "C" fn ss_request_data(request: *const ss_request) -> *mut c_void {
    // SAFETY: forwarded contract.
    guard_value(std::ptr::null_mut(), || {
        Ok(unsafe { handle_ref(request) }?.data() as *mut c_void)
    })
}
