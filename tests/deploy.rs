//! Deployment (issue 9 §3): adopting a socket, systemd socket activation
//! and several processes on one port.
//!
//! C sub-tests (tests/c/deploy.c), one process each: ss_server_new_from_fd
//! in every transport and mode, its refusals, a stream socket not yet
//! listening, an adopted Unix path left in place; ss_listen_fds with
//! crafted LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES.

mod common;

common::c_tests! {
    crate::common::run_c_subtest;
    deploy {
        adopt_tcp,
        adopt_tcp6,
        adopt_udp,
        adopt_unix_stream,
        adopt_unix_datagram,
        adopt_not_listening,
        adopt_refusals,
        listen_fds_none,
        listen_fds_garbage,
        listen_fds_names,
    }
}
