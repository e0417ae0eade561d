//! Event-mode connection calls for protocol servers (issue 9 §1): one C
//! sub-test per feature in tests/c/event_protocols.c, each in its own
//! process with a hard timeout and a fresh temporary directory (see the C
//! file's header for what each checks).

mod common;

common::c_tests! {
    crate::common::run_c_subtest;
    event_protocols {
        pause_resume,
        pause_reset,
        drain,
        shutdown_write,
        abort,
        writev,
        addresses,
        error_conn,
        watch_pipe,
        watch_socket,
    }
}
