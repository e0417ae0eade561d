//! `ss_conn_set_timer` and friends: SS_EVENT timers of a connection (the
//! loop timers are set on the config: ss_config_add_loop_timer, in
//! config.rs). The core is event/timer.rs.

use std::ffi::c_void;

use super::boundary::{guard, handle_mut, null, write_out};
use super::handler::conn_ptr;
use super::{ss_conn, ss_server, ss_status};

/// SS_EVENT: a connection timer's callback (ss_conn_set_timer()). Runs once,
/// on the connection's loop thread, with the connection (borrowed for the
/// call, as in every event callback: write to it, close it, set more
/// timers), the timer's id and the `data` given to ss_conn_set_timer().
/// When it runs, the timer is no longer pending (cancelling or resetting
/// `timer_id` inside it fails with SS_ERR_INVALID_ARGUMENT; set a new one
/// to run again). After it returns, input held back on the connection is
/// presented to on_data again, as after a posted job. Must not block.
pub type ss_conn_timer_fn =
    Option<unsafe extern "C-unwind" fn(conn: *mut ss_conn, timer_id: u64, data: *mut c_void)>;

/// SS_EVENT: a loop timer's callback (ss_config_add_loop_timer()): runs on
/// the event loop thread `loop_index` (0 to the number of loops - 1, see
/// ss_config_set_threads()), with the server (borrowed: call e.g.
/// ss_server_post(), ss_server_connections() or ss_server_shutdown() with
/// it, not ss_server_close() or ss_server_free()) and the `data` given to
/// ss_config_add_loop_timer(). The loops run their timers concurrently:
/// `data` shared by several loops needs your own locking (or index
/// per-loop state by `loop_index`). Must not block.
pub type ss_loop_timer_fn = Option<
    unsafe extern "C-unwind" fn(server: *mut ss_server, loop_index: usize, data: *mut c_void),
>;

/// A C callback and its data, carried to the loop thread.
#[derive(Clone, Copy)]
pub(crate) struct CTimer<F> {
    pub(crate) callback: F,
    pub(crate) data: *mut c_void,
}

// SAFETY: the header says where a timer's callback runs (a loop thread)
// with its `data`; making `data` fit for that is the caller's contract.
unsafe impl<F: Send> Send for CTimer<F> {}
// SAFETY: as above; the library only copies the pointer.
unsafe impl<F: Sync> Sync for CTimer<F> {}

/// SS_EVENT: arms a one-shot timer on the connection: `callback(conn, id, data)`
/// runs once on the connection's loop thread after `delay_ms`
/// milliseconds, unless cancelled first. On success `*out_timer_id`
/// (which may be NULL if you will never cancel or reset it) receives the
/// timer's id: never 0 (so 0 can mean "no timer"), never given to another
/// timer of this loop.
///
/// - Timing: never before `delay_ms` has passed, typically within a
///   millisecond or two after (later if the loop is busy with other
///   callbacks). Timers of one loop run in the order of their deadlines;
///   timers due in the same millisecond, in the order they were set.
/// - Delay 0: runs on the loop's next turn, after the current callback
///   returns (never from inside this call). No limit on `delay_ms`: one too
///   large to reach (e.g. UINT64_MAX) never fires, but stays pending until
///   cancelled or the connection closes.
/// - Cost: one entry (about 80 bytes) in the loop's timer heap, O(log n)
///   to set, reset or cancel; no thread or descriptor per timer, and any
///   number of timers per connection. The loop sleeps in epoll_wait until
///   the nearest deadline.
/// - Close: when the connection closes (for any reason: ss_conn_close(),
///   the peer, an error, a timeout, the server stopping), its pending
///   timers are cancelled before on_close runs: no timer callback ever runs
///   after on_close. A cancelled timer's callback is never called, so
///   `data` is never handed back: free what it owns yourself (e.g. in
///   on_close).
///
/// Errors (`callback` is then never called and `*out_timer_id` not written):
/// SS_ERR_NULL_POINTER (`conn` or `callback` NULL), SS_ERR_CLOSED (after
/// ss_conn_close() or ss_conn_abort(), once the connection failed, or
/// in on_close), SS_ERR_WRONG_STATE (not on the connection's loop thread).
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_set_timer(
    conn: *mut ss_conn,
    delay_ms: u64,
    callback: ss_conn_timer_fn,
    data: *mut c_void,
    out_timer_id: *mut u64,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let conn = unsafe { handle_mut(conn) }?;
        let callback = callback.ok_or_else(|| null("callback"))?;
        let timer = CTimer { callback, data };
        let id = conn.set_timer(delay_ms, move |conn, id| {
            let timer = timer;
            // SAFETY: the caller's callback, with the live connection it
            // was set on, on its loop thread, as documented.
            unsafe { (timer.callback)(conn_ptr(conn), id, timer.data) }
        })?;
        if out_timer_id.is_null() {
            return Ok(());
        }
        // SAFETY: non-NULL and writable per the contract.
        unsafe { write_out(out_timer_id, "out_timer_id", id) }
    })
}

/// SS_EVENT: re-arms pending timer `timer_id` of this connection to run
/// `delay_ms` milliseconds from now instead (same callback, same data, same
/// id), as if it had just been set (e.g. push a deadline back on each
/// sign of life). Cheaper than cancel + set, and the id stays valid.
///
/// Errors: SS_ERR_NULL_POINTER, SS_ERR_INVALID_ARGUMENT (`timer_id` is not
/// pending on this connection: it has run or is running, was cancelled,
/// is 0, or is another connection's; nothing changed), SS_ERR_CLOSED
/// (after ss_conn_close() or ss_conn_abort(), once the connection failed,
/// or in on_close), SS_ERR_WRONG_STATE (not on the connection's loop
/// thread).
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_reset_timer(
    conn: *mut ss_conn,
    timer_id: u64,
    delay_ms: u64,
) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe { handle_mut(conn) }?.reset_timer(timer_id, delay_ms)
    })
}

/// SS_EVENT: cancels pending timer `timer_id` of this connection: its
/// callback will not run. Also from inside a timer callback (cancelling
/// another timer of the connection, even one due at the same moment, stops
/// it from running).
///
/// Errors: SS_ERR_NULL_POINTER, SS_ERR_INVALID_ARGUMENT (`timer_id` is not
/// pending on this connection: it has run or is running, was cancelled
/// already, is 0, or is another connection's; nothing changed, so this is
/// safe to ignore), SS_ERR_WRONG_STATE (not on the connection's loop
/// thread). Allowed after ss_conn_close().
///
/// Thread: the connection's loop thread, in a callback or job given this conn.
#[no_mangle]
pub unsafe extern "C" fn ss_conn_cancel_timer(conn: *mut ss_conn, timer_id: u64) -> ss_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe { handle_mut(conn) }?.cancel_timer(timer_id)
    })
}
