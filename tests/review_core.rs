//! Regression tests for defects found in review of the core (server,
//! concurrency models, FFI): one C sub-test per defect in
//! tests/c/review_core.c, each run in its own process with a hard timeout
//! and a fresh temporary directory ($SS_TEST_TMPDIR). The C side checks
//! that a sub-test left no descriptor, thread or child process behind; this
//! side checks that it left no file in its directory and no process running
//! in its process group.
//!
//! - free_while_serving: free while serve_forever runs on another thread:
//!   the user-data finalizer has run when free returns.
//! - close_from_close: close and free called from a handle_error that close
//!   itself runs are refused; the outer close returns.
//! - spawn_fails: a handler thread that cannot start (EAGAIN) is reported
//!   as SS_ERR_IO, not SS_ERR_TIMEOUT; counts and serving recover.
//! - event_spawn_fails: the same for an event loop thread (serve_forever
//!   returns SS_ERR_IO).
//!
//! See each sub-test's comment in the C file for the old behaviour.

mod common;

// One #[test] per C sub-test, and `every_c_subtest_is_run`.
common::c_tests! {
    crate::common::run_c_subtest;
    review_core {
        free_while_serving,
        close_from_close,
        spawn_fails,
        event_spawn_fails,
    }
}
