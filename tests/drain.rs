//! Graceful drain (ss_server_drain) in every mode, over real sockets: the C
//! sub-tests of tests/c/drain.c (see its header comment for what each
//! checks), each in its own process with a hard timeout, and http_hello
//! draining on SIGTERM: a large response in flight when the signal comes
//! reaches its client whole, and the process exits 0 within a bounded
//! time.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// One #[test] per C sub-test, and `every_c_subtest_is_run`.
common::c_tests! {
    crate::common::run_c_subtest;
    drain {
        busy_sync,
        busy_threading,
        busy_forking,
        busy_pool,
        busy_event1,
        busy_event2,
        idle_sync,
        idle_threading,
        idle_forking,
        idle_pool,
        idle_event1,
        idle_event2,
        deadline_threading,
        deadline_forking,
        deadline_pool,
        deadline_event1,
        deadline_event2,
        signal_event,
        signal_threading,
        pool_queued_run,
        pool_queued_cut,
        api_args,
        before_serve,
        second_call_shortens,
        shutdown_cuts,
        deadline_zero,
    }
}
