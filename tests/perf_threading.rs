//! Threading mode's cost per connection (a new thread for each), pinned by
//! counts that do not depend on the machine's load: system calls (strace,
//! tests/common/strace.rs) and user-space instructions (valgrind's
//! callgrind, deterministic). Bounds carry a margin; nothing is timed.
//!
//! - threading_churn_thread_start_is_lean: a connection's handler thread
//!   is a bare detached pthread: no prctl(PR_SET_NAME) per connection, and
//!   under 7,700 instructions per connection (about 7,000 now; with
//!   std::thread ~11,400: its name, handle, result packet, spawn hooks and
//!   thread-local guard key, each freed again at thread exit).

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::callgrind::Callgrind;
use common::example::ExampleProcess;
use common::strace::Strace;

const STARTUP: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(60);
const IO_TIMEOUT: Duration = Duration::from_secs(20);
const MESSAGE: [u8; 64] = [b'x'; 64];

/// `n` connections one after the other, each one message and its whole
/// echo, closed by the client.
fn churn(address: &str, n: u64) {
    for _ in 0..n {
        let mut stream = common::tcp_client(address, IO_TIMEOUT);
        stream.write_all(&MESSAGE).expect("send");
        let mut echo = [0u8; MESSAGE.len()];
        stream.read_exact(&mut echo).expect("echo");
        assert_eq!(echo, MESSAGE);
    }
}

fn stop(mut server: ExampleProcess) {
    let (status, stderr) = server.stop(libc::SIGTERM, EXIT);
    assert_eq!(status.code(), Some(0), "{status}: {stderr}");
}

#[test]
fn threading_churn_thread_start_is_lean() {
    const N: u64 = 200;
    // System calls: no thread naming per connection.
    let server = common::start_echo_server("tcp", "threading", "127.0.0.1:0", &[]);
    let strace = Strace::attach(server.pid());
    churn(server.addr(), N);
    let counts = strace.finish();
    assert!(
        counts.calls("prctl") <= N / 10,
        "{} prctl calls for {N} connections; all: {counts}",
        counts.calls("prctl")
    );
    stop(server);

    // Instructions, counted only while the connections are served.
    let callgrind = Callgrind::new();
    let mut cmd = callgrind.command(common::echo_server_program());
    cmd.args(common::echo_args("tcp", "threading", "127.0.0.1:0"));
    let server = ExampleProcess::start(cmd, STARTUP);
    // One connection first: one-time costs (the first thread, lazy
    // initialisation) stay out of the count.
    churn(server.addr(), 1);
    callgrind.count(server.pid(), || churn(server.addr(), N));
    stop(server);
    let total = callgrind.instructions();
    let per = total / N;
    eprintln!("threading churn: {per} instructions per connection");
    const BOUND: u64 = 7_700;
    assert!(
        per <= BOUND,
        "{per} instructions per connection, at most {BOUND} expected"
    );
}
