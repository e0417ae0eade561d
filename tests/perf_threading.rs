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
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::example::ExampleProcess;
use common::strace::Strace;
use common::{require_tool, TempDir};

const STARTUP: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(60);
const IO_TIMEOUT: Duration = Duration::from_secs(20);
const MESSAGE: [u8; 64] = [b'x'; 64];

/// `n` connections one after the other, each one message and its whole
/// echo, closed by the client.
fn churn(address: &str, n: u64) {
    for _ in 0..n {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(&MESSAGE).expect("send");
        let mut echo = [0u8; MESSAGE.len()];
        stream.read_exact(&mut echo).expect("echo");
        assert_eq!(echo, MESSAGE);
    }
}

fn echo_server_command(wrapper: &[&str]) -> Command {
    let example = common::compile_example("echo_server", &["-O2"]);
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(example);
            c
        }
        None => Command::new(example),
    };
    cmd.args(["--transport", "tcp", "--mode", "threading"]);
    cmd.args(["--address", "127.0.0.1:0"]);
    cmd
}

fn stop(mut server: ExampleProcess) {
    let (status, stderr) = server.stop(libc::SIGTERM, EXIT);
    assert_eq!(status.code(), Some(0), "{status}: {stderr}");
}

#[test]
fn threading_churn_thread_start_is_lean() {
    const N: u64 = 200;
    // System calls: no thread naming per connection.
    let server = ExampleProcess::start(echo_server_command(&[]), STARTUP);
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
    let valgrind = require_tool("valgrind", "valgrind");
    let control = require_tool("callgrind_control", "valgrind");
    let dir = TempDir::new("callgrind");
    let out = dir.path().join("callgrind.out");
    let out_arg = format!("--callgrind-out-file={}", out.display());
    let valgrind = valgrind.to_string_lossy().into_owned();
    let server = ExampleProcess::start(
        echo_server_command(&[
            &valgrind,
            "--tool=callgrind",
            "--instr-atstart=no",
            &out_arg,
        ]),
        STARTUP,
    );
    let instrument = |on: &str| {
        let st = Command::new(&control)
            .args(["-i", on, &server.pid().to_string()])
            .output()
            .expect("run callgrind_control");
        assert!(st.status.success(), "callgrind_control -i {on}: {st:?}");
    };
    // One connection first: one-time costs (the first thread, lazy
    // initialisation) stay out of the count.
    churn(server.addr(), 1);
    instrument("on");
    churn(server.addr(), N);
    instrument("off");
    stop(server);
    let profile = std::fs::read_to_string(&out).expect("callgrind's output");
    let total: u64 = profile
        .lines()
        .find_map(|l| l.strip_prefix("totals: "))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .expect("a totals line in callgrind's output");
    let per = total / N;
    eprintln!("threading churn: {per} instructions per connection");
    const BOUND: u64 = 7_700;
    assert!(
        per <= BOUND,
        "{per} instructions per connection, at most {BOUND} expected"
    );
}
