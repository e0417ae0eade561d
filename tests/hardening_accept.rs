//! Hardening of the accept paths and of error reporting: one C sub-test
//! per behaviour in tests/c/hardening_accept.c, each run in its own
//! process with a hard timeout and a fresh temporary directory
//! ($SS_TEST_TMPDIR). The C side checks that a sub-test left no
//! descriptor, thread or child process behind; this side checks that it
//! left no file in its directory and no process running in its process
//! group.
//!
//! - balance_tcp, balance_unix: event mode gives every loop at least 60 %
//!   of its fair share of 200 connections, sequential and burst, over 2
//!   and 4 loops (was 194/6 and 197/3/0/0).
//! - emfile_sync, emfile_threading, emfile_forking, emfile_pool,
//!   emfile_event: out of descriptors (EMFILE), a pending connection is
//!   accepted and closed at once with the spare descriptor, the server
//!   does not spin, reports without flooding, keeps its listener and
//!   serves again once descriptors are free (was: the client hung).
//! - emfile_spare_sync, emfile_spare_event: the spare's descriptor taken
//!   by something else while it was free, the next connection is closed
//!   to take the spare back (was: served in the last descriptor, and the
//!   client after it hung with no spare to close it).
//! - per_ip_sync, per_ip_threading, per_ip_forking, per_ip_pool,
//!   per_ip_event: with max_connections_per_ip 2 a third connection from
//!   127.0.0.1 is closed at once and reported (SS_ERR_WOULD_BLOCK), one
//!   from 127.0.0.2 is served, and a place comes free when a connection
//!   ends (was: the limit was ignored).
//! - log_flood: the default handle_error prints at most 20 lines a second
//!   plus one "suppressed" line (was one line per failed datagram).
//! - ev_error_cause: a failing on_open, on_data or on_datagram is reported
//!   with "(last error: ...)" (was only "callback returned -1").
//! - stderr_sigpipe: the default handle_error writing to a closed pipe
//!   does not kill the host with SIGPIPE.
//!
//! See each sub-test's comment in the C file for the old behaviour.

mod common;

// One #[test] per C sub-test, and `every_c_subtest_is_run`.
common::c_tests! {
    crate::common::run_c_subtest;
    hardening_accept {
        balance_tcp,
        balance_unix,
        emfile_sync,
        emfile_threading,
        emfile_forking,
        emfile_pool,
        emfile_event,
        emfile_spare_sync,
        emfile_spare_event,
        emfile_came_free_sync,
        emfile_came_free_event,
        per_ip_sync,
        per_ip_threading,
        per_ip_forking,
        per_ip_pool,
        per_ip_event,
        log_flood,
        ev_error_cause,
        stderr_sigpipe,
    }
}
