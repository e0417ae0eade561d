//! Hardening of request I/O in the blocking modes (issue 7: defects 7, 13,
//! 15 and parts of 17): one C sub-test per case in
//! tests/c/hardening_blockio.c, each run in its own process with a hard
//! timeout and a fresh temporary directory ($SS_TEST_TMPDIR); the C side
//! checks that a sub-test left no descriptor, thread or child process
//! behind, this side that it left no file and no process. Plus
//! c_examples/line_server driven as a user would.
//!
//! - linger_sync, linger_threading, linger_forking: a handler writes 8 MiB and returns
//!   while the client has sent input nobody read and reads slowly: the
//!   client gets every byte and a clean end of stream (no ECONNRESET), and
//!   the next client is served at once meanwhile.
//! - linger_clean: a clean request/response starts no lingerer thread.
//! - linger_close: server close ends a lingering close at once: no thread
//!   or descriptor left, the port closed and free to bind again.
//! - dgram_flood_sync, dgram_flood_pool, dgram_flood_forking: a Unix
//!   datagram client that floods and never reads its replies does not
//!   stall the server: others are served, the stuck replies are dropped
//!   and reported (SS_ERR_WOULD_BLOCK), CPU goes back to idle, no child is
//!   left running.
//! - deadline_sync, deadline_threading, deadline_forking, deadline_pool: a
//!   client trickling a byte every 100 ms (within the request timeout) is
//!   cut at the request deadline, and the next client is served.
//! - deadline_timeout_still: the per-operation timeout still cuts a silent
//!   client when a deadline is set.
//! - timed_recv_steal: a timed read never blocks past its timeout when
//!   another reader takes the data poll announced (a race: it guards the
//!   behaviour, it could not be made to fail on the old code for sure).
//! - timed_recv_oob: nor when poll announces an out-of-band byte that recv
//!   does not return (a Unix stream client's MSG_OOB).
//! - readline_nul: ss_request_readline leaves a C string in the buffer
//!   when it fails.
//! - huge_len: buffer lengths above PTRDIFF_MAX are refused
//!   (SS_ERR_INVALID_ARGUMENT).
//! - line_server_deadline: line_server --request-deadline cuts a trickling
//!   client, and the four clients queued behind it are served.
//! - line_server_usage: the usage text shows --request-deadline.
//! - cxx_exception_aborts: a C++ exception thrown out of a callback aborts
//!   the process with the library's message (tests/c/hardening_blockio_cxx.cpp),
//!   after the callback's destructors ran; it never reaches the caller.
//!
//! See each sub-test's comment in the C file for the old behaviour.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// One #[test] per C sub-test, and `every_c_subtest_is_run`.
common::c_tests! {
    crate::common::run_c_subtest;
    hardening_blockio {
        linger_sync,
        linger_threading,
        linger_forking,
        linger_clean,
        linger_close,
        dgram_flood_sync,
        dgram_flood_pool,
        dgram_flood_forking,
        deadline_sync,
        deadline_threading,
        deadline_forking,
        deadline_pool,
        deadline_timeout_still,
        timed_recv_steal,
        timed_recv_oob,
        readline_nul,
        huge_len,
    }
}

/// line_server running with `args`; killed on drop.
struct LineServer {
    child: Child,
    address: String,
}

impl LineServer {
    fn start(args: &[&str]) -> LineServer {
        let exe = common::compile_example("line_server", &[]);
        let mut child = Command::new(&exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read line_server's first line");
        let address = line
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("line_server printed {line:?}"))
            .to_string();
        LineServer { child, address }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.address).expect("connect to line_server");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

impl Drop for LineServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line)
        .expect("read a line from line_server");
    line
}

/// Old: line_server had no --request-deadline (usage error, exit 2), and
/// with --idle-timeout 500 alone a client trickling one byte every 300 ms
/// held the server for ever: 0 of 4 other clients served.
#[test]
fn line_server_deadline() {
    let server = LineServer::start(&["--idle-timeout", "500", "--request-deadline", "1000"]);
    let mut trickler = BufReader::new(server.connect());
    assert!(read_line(&mut trickler).starts_with("HELLO"));
    // Four clients queue up behind it (SS_SYNC serves one at a time).
    let others: Vec<TcpStream> = (0..4).map(|_| server.connect()).collect();
    let start = Instant::now();
    let stream = trickler.get_mut();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut cut = false;
    let mut reply = Vec::new();
    while start.elapsed() < Duration::from_secs(8) {
        if stream.write_all(b"U").is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(0) => {
                cut = true;
                break;
            }
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    assert!(
        cut,
        "a client trickling a byte every 300 ms was not cut within 8 s"
    );
    println!(
        "trickling client cut after {:?}; it read {:?}",
        start.elapsed(),
        String::from_utf8_lossy(&reply)
    );
    for (i, other) in others.into_iter().enumerate() {
        let mut other = BufReader::new(other);
        assert!(read_line(&mut other).starts_with("HELLO"), "client {i}");
        other.get_mut().write_all(b"UPPER served\n").unwrap();
        assert_eq!(read_line(&mut other), "SERVED\n", "client {i}");
        other.get_mut().write_all(b"QUIT\n").unwrap();
        assert_eq!(read_line(&mut other), "BYE\n", "client {i}");
    }
}

#[test]
fn line_server_usage() {
    let exe = common::compile_example("line_server", &[]);
    // --help: the usage on stdout, exit 0 (tests/hygiene.rs checks every example).
    let out = common::run_with_timeout(&exe, &["--help"], &[], Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", common::show(&out));
    assert!(
        stdout.contains("--request-deadline MS"),
        "usage does not show --request-deadline:\n{stdout}"
    );
    let bad = common::run_with_timeout(
        &exe,
        &["--request-deadline", "0"],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(bad.status.code(), Some(2), "{}", common::show(&bad));
}

#[test]
fn cxx_exception_aborts() {
    use std::os::unix::process::ExitStatusExt;
    let exe = common::compile("hardening_blockio_cxx.cpp");
    let out = common::run_with_timeout(&exe, &[], &[], Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "expected an abort\n{}",
        common::show(&out)
    );
    assert!(
        stderr.contains("destructor in the callback ran")
            && stderr.contains("Rust cannot catch foreign exceptions"),
        "{}",
        common::show(&out)
    );
}
