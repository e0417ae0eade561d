//! Regression tests for bugs found in review and fixed: one C sub-test per
//! bug in tests/c/regressions.c, each run in its own process with a hard
//! timeout and a fresh temporary directory ($SS_TEST_TMPDIR). The C side
//! checks that a sub-test left no descriptor, thread or child process
//! behind; this side checks that it left no file in its directory and no
//! process running in its process group.
//!
//! - ev_dgram_block: an event-mode Unix datagram client that floods and
//!   never reads does not block the loop (replies dropped with
//!   SS_ERR_WOULD_BLOCK, serve_forever returns promptly after shutdown).
//! - ev_stale_id: a connection id from an earlier serve_forever run, or of
//!   a closed connection, never reaches a later connection.
//! - handoff_zombie: close with block_on_close waits for the fork hand-off
//!   child of a handler thread still running; no zombie is left.
//! - xserver_close: a handler of server A closing server B waits for B's
//!   own handler.
//! - child_close: close / free / shutdown in a forked request child are
//!   refused, do not hang, and leave the parent's socket file alone.
//! - ev_fork_spin: no busy loop after an event connection is closed while a
//!   forked child still holds a copy of its fd.
//! - flush_loss: a flush that timed out keeps the unsent bytes for a retry.
//! - stale_msg: a successful serve_forever / handle_request leaves
//!   ss_last_error_message() empty after a callback's failed call.
//! - ev_coord_wake: the idle serving thread of event mode wakes once per
//!   poll interval, not every 20 ms.
//!
//! See each sub-test's comment in the C file for the old behaviour.

mod common;

// One #[test] per C sub-test, and `every_c_subtest_is_run`.
common::c_tests! {
    crate::common::run_c_subtest;
    regressions {
        ev_dgram_block,
        ev_stale_id,
        handoff_zombie,
        xserver_close,
        child_close,
        ev_fork_spin,
        flush_loss,
        stale_msg,
        ev_coord_wake,
    }
}
