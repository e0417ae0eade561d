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

// ------------------------------------------------ http_hello backpressure

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::example::ExampleProcess;

fn start_http_hello() -> ExampleProcess {
    let mut cmd = Command::new(common::compile_example("http_hello", &[]));
    cmd.args([
        "--mode",
        "event",
        "--address",
        "127.0.0.1:0",
        "--threads",
        "1",
    ]);
    ExampleProcess::start(cmd, Duration::from_secs(15))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// http_hello pauses reading while a response is blocked: a client that
/// pipelines many requests and reads nothing makes the server stop reading
/// (the client's sends stall) with its memory bounded, and once the client
/// reads, every response arrives.
#[test]
fn http_hello_pauses_reading_while_a_response_is_blocked() {
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    const REQUESTS: usize = 1_000_000;
    let mut server = start_http_hello();
    let addr = server.addr().to_string();
    let pid = server.pid() as u32;

    // One response's length.
    let mut probe = TcpStream::connect(&addr).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    probe.write_all(REQUEST).unwrap();
    let mut one = vec![0u8; 4096];
    let n = probe.read(&mut one).unwrap();
    let response = one[..n].to_vec();
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"), "{response:?}");
    assert!(response.ends_with(b"Hello, world!\n"), "{response:?}");
    drop(probe);
    let rss_before = rss_kib(pid);

    let stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        let sent = sent.clone();
        std::thread::spawn(move || {
            let batch = REQUEST.repeat(1000);
            for _ in 0..REQUESTS / 1000 {
                stream.write_all(&batch).expect("send requests");
                sent.fetch_add(batch.len(), Ordering::SeqCst);
            }
        })
    };
    // The server stops reading: the client's sends stall well before all
    // requests are out (nothing here reads the responses).
    let total = REQUEST.len() * REQUESTS;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = usize::MAX;
    let mut still = 0;
    while still < 10 {
        assert!(
            Instant::now() < deadline,
            "the client's sends never stalled"
        );
        std::thread::sleep(Duration::from_millis(50));
        let now = sent.load(Ordering::SeqCst);
        assert!(
            now < total,
            "all {total} bytes of requests were taken unread"
        );
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    let rss_stalled = rss_kib(pid);
    assert!(
        rss_stalled < rss_before + 16 * 1024,
        "server RSS grew from {rss_before} KiB to {rss_stalled} KiB while the client did not read"
    );

    // Now read: every response arrives, in full.
    let mut reader = stream;
    let want = response.len() * REQUESTS;
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let mut peak = rss_stalled;
    while got < want {
        let n = reader.read(&mut buf).expect("read responses");
        assert!(n > 0, "EOF after {got} of {want} bytes");
        got += n;
        if got % (64 << 20) < n {
            peak = peak.max(rss_kib(pid));
        }
    }
    assert_eq!(got, want);
    writer.join().unwrap();
    assert!(
        peak < rss_before + 16 * 1024,
        "server RSS reached {peak} KiB (from {rss_before} KiB)"
    );
    // SIGTERM: it exits 0.
    let (status, stderr) = server.stop(libc::SIGTERM, Duration::from_secs(5));
    assert!(
        status.success(),
        "http_hello exited with {status}; stderr:\n{stderr}"
    );
    eprintln!(
        "http_hello: RSS {rss_before} KiB idle, {rss_stalled} KiB stalled at {last} of {total} bytes sent, \
         peak {peak} KiB; {REQUESTS} responses"
    );
}

/// The stream hot path stays one recv and one send per echoed message,
/// with no epoll_ctl per request (pause/resume, drain and watches added
/// none): echo_server in event mode under strace, 200 round trips.
#[test]
fn echo_hot_path_is_one_recv_and_one_send_per_message() {
    const ROUNDS: usize = 200;
    let exe = common::compile_example("echo_server", &[]);
    let tmp = common::TempDir::new("hotpath");
    let trace = tmp.path().join("strace.out");
    common::require_tool("strace", "strace");
    let mut cmd = Command::new("strace");
    cmd.arg("-f")
        .arg("-qq")
        .args([
            "-e",
            "trace=epoll_ctl,recvfrom,recvmsg,sendto,sendmsg,read,write",
        ])
        .arg("-o")
        .arg(&trace)
        .arg("--")
        .arg(&exe)
        .args(["--transport", "tcp", "--mode", "event"])
        .args(["--address", "127.0.0.1:0", "--threads", "1"]);
    let mut strace = ExampleProcess::start(cmd, Duration::from_secs(15));
    let addr = strace.addr().to_string();
    let children = std::fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        strace.pid(),
        strace.pid()
    ))
    .expect("strace's children");
    let server: libc::pid_t = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the traced echo_server");
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let msg = [b'x'; 64];
    let mut back = [0u8; 64];
    for _ in 0..ROUNDS {
        stream.write_all(&msg).unwrap();
        stream.read_exact(&mut back).unwrap();
    }
    drop(stream);
    // SAFETY: kill(2) on the echo_server strace started for this test
    // (strace, its parent, has not reaped it: it is still running).
    assert_eq!(unsafe { libc::kill(server, libc::SIGINT) }, 0);
    let (status, stderr) = strace.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "strace/echo_server exited with {status}; stderr:\n{stderr}"
    );
    let text = std::fs::read_to_string(&trace).expect("trace");
    let count = |call: &str| {
        text.lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|c| c.starts_with(&format!("{call}(")))
            })
            .count()
    };
    let (ctl, recv, send) = (
        count("epoll_ctl"),
        count("recvfrom") + count("recvmsg"),
        count("sendto") + count("sendmsg"),
    );
    eprintln!("{ROUNDS} echoes: {recv} recv, {send} send, {ctl} epoll_ctl in all");
    // A few of each for start-up, the EOF and shutdown, none per message.
    assert!(ctl <= 12, "{ctl} epoll_ctl calls for {ROUNDS} echoes");
    assert!(recv <= ROUNDS + 4, "{recv} recv calls for {ROUNDS} echoes");
    assert!(send <= ROUNDS + 4, "{send} send calls for {ROUNDS} echoes");
    drop(tmp);
}
