//! Regression tests for the server life cycle (issue 7: close, free,
//! forking and threads): one C sub-test per defect in
//! tests/c/hardening_lifecycle.c, each run in its own process with a hard
//! timeout and a fresh temporary directory ($SS_TEST_TMPDIR). The C side
//! checks that a sub-test left no descriptor, thread or child process
//! behind; this side checks that it left no file in its directory and no
//! process running in its process group.
//!
//! - close_race: two handler threads closing at once both return (close
//!   is single-flight).
//! - child_listener: a forked request child closes the listening sockets
//!   and eventfds of the process's servers: after close a connect is
//!   refused and the port can be bound again while the child runs.
//! - child_getters: calls a forked child makes answer (or are refused)
//!   without hanging on a lock another parent thread held at fork time.
//! - handoff_cap: max_children bounds fork hand-offs in SS_THREADING.
//! - finalizer_once: after close + free the user-data finalizer has run
//!   exactly once (2000 server lifecycles).
//! - pool_close_join: close from a pool worker joins the other workers.
//! - pid_reuse: close neither waits for nor reaps a host child that reused
//!   the pid of a library child the host had reaped.
//! - shutdown_errno: shutdown from a signal handler and a handler thread
//!   works and leaves errno alone.
//! - free_race: post and shutdown racing free, or after it, return
//!   SS_ERR_CLOSED (200 server lifecycles).
//!
//! See each sub-test's comment in the C file for the old behaviour.

mod common;

// One #[test] per C sub-test, and `every_c_subtest_is_run`.
common::c_tests! {
    crate::common::run_c_subtest;
    hardening_lifecycle {
        close_race,
        child_listener,
        child_getters,
        handoff_cap,
        finalizer_once,
        pool_close_join,
        pid_reuse,
        shutdown_errno,
        free_race,
    }
}
