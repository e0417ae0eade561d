//! `ss_conn_*`: what SS_EVENT callbacks can do with their connection. Every
//! function must be called on the connection's loop thread, inside a
//! callback that received it (on_open, on_data, on_eof, on_close, a posted
//! job); each function's "Thread:" line says so in the header, where these
//! module docs do not reach.

use std::ffi::{c_char, c_int, c_void};

use super::boundary::{check_len, copy_text_out, guard, guard_value, handle_mut, handle_ref, null};
use super::{ss_conn, ss_status};

/// Queues `len` bytes of `buf` (copied) for the peer and sends what the
/// socket takes at once, without blocking; the rest goes out when the
/// socket is writable. SS_ERR_WOULD_BLOCK (nothing queued) while the
/// pending output is at the high-water mark (ss_config_set_output_high_water);
/// SS_ERR_CLOSED after ss_conn_close(); SS_ERR_IO when the peer has gone
/// (the connection then closes; never SIGPIPE); SS_ERR_INVALID_ARGUMENT for
/// `len` above PTRDIFF_MAX.
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_write(
    conn: *mut ss_conn,
    buf: *const c_void,
    len: usize,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let conn = unsafe { handle_mut(conn) }?;
        if len == 0 {
            return Ok(());
        }
        if buf.is_null() {
            return Err(null("buf"));
        }
        check_len(len, "len")?;
        // SAFETY: readable for `len` bytes per the contract, and `len` is
        // at most isize::MAX.
        conn.write(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) })
    })
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
