//! SS_EVENT and SS_THREAD_POOL over real sockets, and the http_hello
//! example.
//!
//! The C programs tests/c/event_core.c, tests/c/event_load.c and
//! tests/c/pool_core.c run one sub-test per process (with a hard timeout,
//! a fresh temporary directory, and checks that no descriptor, thread or
//! file is left behind). The load sub-tests (thousands of connections,
//! slow readers) run alone, not next to the timing-sensitive ones.
//!
//! c_examples/http_hello.c is built with the strict C99 flags and driven
//! in both of its modes with `curl` (when installed) and a raw client that
//! pipelines requests and splits them at every byte.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use common::example::ExampleProcess;

/// How long one C sub-test may run.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Load tests take this exclusively, the others shared.
static LOAD: RwLock<()> = RwLock::new(());

fn shared_slot() -> RwLockReadGuard<'static, ()> {
    LOAD.read().unwrap_or_else(|p| p.into_inner())
}

fn exclusive_slot() -> RwLockWriteGuard<'static, ()> {
    LOAD.write().unwrap_or_else(|p| p.into_inner())
}

/// One #[test] per C sub-test: `c_subtests!(source, exclusive?; names...)`.
macro_rules! c_subtests {
    ($source:expr, $exclusive:expr; $($name:ident),* $(,)?) => {
        pub const SOURCE: &str = $source;
        pub const NAMES: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                if $exclusive {
                    let _slot = super::exclusive_slot();
                    crate::common::run_subtest(SOURCE, stringify!($name), "SS_TEST_TMPDIR", super::TIMEOUT);
                } else {
                    let _slot = super::shared_slot();
                    crate::common::run_subtest(SOURCE, stringify!($name), "SS_TEST_TMPDIR", super::TIMEOUT);
                }
            }
        )*
    };
}

/// Event mode: transports, partial input, pipelining, idle timeout,
/// connection limit, shutdown, posting, failures, limits, the ss_conn API
/// and configuration errors.
mod event_core {
    c_subtests!("event_core.c", false;
        echo_tcp,
        echo_udp,
        echo_unix,
        echo_unixdgram,
        partial_bytes,
        pipelining,
        idle_timeout,
        idle_timeout_counts_output,
        max_connections,
        max_connections_two_loops,
        shutdown_with_connections,
        post,
        on_eof,
        callback_failures,
        input_limit,
        conn_api,
        config_errors,
    );
}

/// Event mode under load: 5,000 connections, slow readers, resets.
mod event_load {
    c_subtests!("event_load.c", true;
        many_connections,
        slow_reader,
        slow_reader_reading,
        reset_peer_error,
    );
}

/// Thread pool mode: transports, failing handlers, backpressure, close.
mod pool_core {
    c_subtests!("pool_core.c", false;
        echo_tcp,
        echo_udp,
        echo_unix,
        echo_unixdgram,
        handler_fails,
        backpressure,
        close_serves_queued,
        close_drops_queued,
        config,
    );
}

/// Every sub-test a C program lists has a #[test] above, and vice versa.
#[test]
fn every_c_subtest_is_run() {
    for (source, names) in [
        (event_core::SOURCE, event_core::NAMES),
        (event_load::SOURCE, event_load::NAMES),
        (pool_core::SOURCE, pool_core::NAMES),
    ] {
        let mut listed = common::list_subtests(source);
        let mut ours: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        listed.sort();
        ours.sort();
        assert_eq!(listed, ours, "{source}: listed sub-tests vs the tests here");
    }
}

// ------------------------------------------------------------ http_hello

/// http_hello built the way the Makefile builds the examples (strict C99,
/// no _GNU_SOURCE: the example must define what it needs itself).
fn http_hello_exe() -> PathBuf {
    common::compile_example("http_hello", &[])
}

/// A running http_hello, killed if the test fails before stopping it.
struct HttpHello(ExampleProcess);

impl HttpHello {
    fn start(mode: &str) -> HttpHello {
        HttpHello::start_with(mode, &[])
    }

    /// With `extra` arguments after the usual ones.
    fn start_with(mode: &str, extra: &[&str]) -> HttpHello {
        let mut cmd = Command::new(http_hello_exe());
        cmd.args(["--mode", mode, "--address", "127.0.0.1:0", "--threads", "2"])
            .args(extra);
        HttpHello(ExampleProcess::start(cmd, Duration::from_secs(10)))
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.0.addr())
    }

    fn connect(&self) -> TcpStream {
        common::tcp_client(self.0.addr(), Duration::from_secs(5))
    }

    /// `signal` (SIGINT or SIGTERM), then it must exit 0 within 5 s.
    fn stop(mut self, signal: libc::c_int) {
        let (status, stderr) = self.0.stop(signal, Duration::from_secs(5));
        assert!(
            status.success(),
            "http_hello exited with {status}; stderr:\n{stderr}"
        );
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (the body by Content-Length, none for HEAD).
fn read_response(reader: &mut impl BufRead, head_request: bool) -> Response {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    assert!(
        line.starts_with("HTTP/1.1 ") && line.ends_with("\r\n"),
        "bad status line {line:?}"
    );
    let status: u16 = line[9..12].parse().expect("status code");
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).expect("header line");
        assert!(h.ends_with("\r\n"), "bad header line {h:?}");
        if h == "\r\n" {
            break;
        }
        let (name, value) = h.trim_end().split_once(':').expect("header colon");
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = response
        .header("Content-Length")
        .expect("Content-Length")
        .parse()
        .expect("a number");
    if !head_request {
        response.body = vec![0; len];
        reader.read_exact(&mut response.body).expect("body");
    }
    response
}

/// The peer closes: reading gives EOF (or a reset).
fn expect_eof(reader: &mut impl Read) {
    let mut buf = [0u8; 64];
    match reader.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, got {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF, got {e}"),
    }
}

fn check_hello(r: &Response) {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"Hello, world!\n");
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
}

const THREE: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n\
GET /missing HTTP/1.1\r\nHost: t\r\nUser-Agent: split\r\n\r\n\
GET /?q=1 HTTP/1.1\r\nHost: t\r\n\r\n";

fn check_three(reader: &mut impl BufRead, what: &str) {
    let a = read_response(reader, false);
    let b = read_response(reader, false);
    let c = read_response(reader, false);
    check_hello(&a);
    assert_eq!(b.status, 404, "{what}: {b:?}");
    assert_eq!(b.body, b"Not Found\n");
    check_hello(&c);
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}\n{}",
        common::show(&out)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn curl_checks(server: &HttpHello) {
    // A missing tool fails the test: a silent skip would hide a gap.
    common::require_tool("curl", "curl");
    let (body, _) = curl(&[&server.url("/")]);
    assert_eq!(body, "Hello, world!\n");
    let (code, _) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &server.url("/nope"),
    ]);
    assert_eq!(code, "404");
    // Two URLs in one invocation: the second reuses the connection.
    let (body, verbose) = curl(&["-v", &server.url("/"), &server.url("/")]);
    assert_eq!(body, "Hello, world!\nHello, world!\n");
    assert!(
        verbose.contains("Re-using existing connection"),
        "curl did not reuse the connection:\n{verbose}"
    );
    // HEAD: headers only.
    let (head, _) = curl(&["-I", &server.url("/")]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
    assert!(head.contains("Content-Length: 14\r\n"), "{head:?}");
    assert!(!head.contains("Hello"), "{head:?}");
    // HTTP/1.0: closed after the response.
    let (body, verbose) = curl(&["-v", "-0", &server.url("/")]);
    assert_eq!(body, "Hello, world!\n");
    assert!(verbose.contains("Connection: close"), "{verbose}");
}

fn raw_checks(server: &HttpHello) {
    // Three pipelined requests, split in two at every byte boundary.
    for split in 1..THREE.len() {
        let mut s = server.connect();
        s.write_all(&THREE[..split]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
        s.write_all(&THREE[split..]).unwrap();
        let mut reader = BufReader::new(s);
        check_three(&mut reader, &format!("split at {split}"));
    }
    // The same, one byte at a time with pauses.
    {
        let mut s = server.connect();
        for b in THREE {
            s.write_all(std::slice::from_ref(b)).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        check_three(&mut BufReader::new(s), "byte by byte");
    }
    // Keep-alive: many requests one after the other on one connection,
    // then 500 pipelined in one write (more than one batch of responses).
    {
        let s = server.connect();
        let mut w = s.try_clone().unwrap();
        let mut reader = BufReader::new(s);
        for _ in 0..20 {
            w.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            check_hello(&read_response(&mut reader, false));
        }
        let many: Vec<u8> = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(500);
        w.write_all(&many).unwrap();
        for _ in 0..500 {
            check_hello(&read_response(&mut reader, false));
        }
        // Connection: close ends it after the response.
        w.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n")
            .unwrap();
        let r = read_response(&mut reader, false);
        check_hello(&r);
        assert_eq!(r.header("Connection"), Some("close"));
        expect_eof(&mut reader);
    }
    // HTTP/1.0: closed after the response, unless keep-alive is asked for.
    {
        let mut s = server.connect();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut reader = BufReader::new(s);
        let r = read_response(&mut reader, false);
        check_hello(&r);
        assert_eq!(r.header("Connection"), Some("close"));
        expect_eof(&mut reader);

        let s = server.connect();
        let mut w = s.try_clone().unwrap();
        let mut reader = BufReader::new(s);
        for _ in 0..3 {
            w.write_all(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap();
            let r = read_response(&mut reader, false);
            check_hello(&r);
            assert_eq!(r.header("Connection"), Some("keep-alive"));
        }
        w.shutdown(Shutdown::Write).unwrap();
        expect_eof(&mut reader);
    }
    // A request with a body: the body is skipped, the next request served.
    {
        let mut s = server.connect();
        s.write_all(
            b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello worldGET / HTTP/1.1\r\n\r\n",
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let r = read_response(&mut reader, false);
        assert_eq!(r.status, 405, "{r:?}");
        check_hello(&read_response(&mut reader, false));
    }
    // HEAD on the raw socket: no body follows the headers.
    {
        let mut s = server.connect();
        s.write_all(b"HEAD / HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(s);
        let r = read_response(&mut reader, true);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Length"), Some("14"));
        assert_eq!(read_response(&mut reader, false).status, 404);
    }
    // Bad requests: 400, then the connection is closed.
    let bad: Vec<Vec<u8>> = vec![
        b"garbage\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET nopath HTTP/1.1\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        [
            b"GET /".to_vec(),
            vec![b'a'; 10000],
            b" HTTP/1.1\r\n\r\n".to_vec(),
        ]
        .concat(),
        [
            b"GET / HTTP/1.1\r\n".to_vec(),
            b"X-Long: ".to_vec(),
            vec![b'b'; 9000],
            b"\r\n\r\n".to_vec(),
        ]
        .concat(),
    ];
    for request in bad {
        let mut s = server.connect();
        // The server may close before reading all of a long request.
        let _ = s.write_all(&request);
        let mut reader = BufReader::new(s);
        let r = read_response(&mut reader, false);
        assert_eq!(
            r.status,
            400,
            "{:?}",
            String::from_utf8_lossy(&request[..request.len().min(60)])
        );
        assert_eq!(r.header("Connection"), Some("close"));
        expect_eof(&mut reader);
    }
    // A good request before a bad one is still answered.
    {
        let mut s = server.connect();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n\x01\x02junk\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(s);
        check_hello(&read_response(&mut reader, false));
        assert_eq!(read_response(&mut reader, false).status, 400);
        expect_eof(&mut reader);
    }
}

fn http_hello_mode(mode: &str, signal: libc::c_int) {
    let _slot = shared_slot();
    let server = HttpHello::start(mode);
    curl_checks(&server);
    raw_checks(&server);
    // A client left connected does not hold up the exit.
    let _idle = server.connect();
    server.stop(signal);
}

#[test]
fn http_hello_event() {
    http_hello_mode("event", libc::SIGINT);
}

#[test]
fn http_hello_threading() {
    http_hello_mode("threading", libc::SIGTERM);
}

/// http_hello's request deadline (issue 9 §5, a per-connection timer): a
/// client dribbling one valid request's head a byte at a time gets 408
/// and is closed once --header-timeout (1 s here) has passed since its
/// first byte, long before its head would be complete; meanwhile an honest
/// keep-alive client that pauses longer than that between requests, and
/// sends one request in two parts, is served throughout.
#[test]
fn http_hello_header_timeout() {
    let _slot = shared_slot();
    let server = HttpHello::start_with("event", &["--header-timeout", "1000"]);
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: dribble\r\n\r\n";
    const BYTE_EVERY: Duration = Duration::from_millis(100);

    let dribbler = server.connect();
    let mut writer = dribbler.try_clone().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let dribbling = {
        let (sent, stop) = (sent.clone(), stop.clone());
        std::thread::spawn(move || {
            for byte in REQUEST {
                // Until the answer came (a lingering close takes further
                // bytes and discards them).
                if stop.load(Ordering::SeqCst) || writer.write_all(&[*byte]).is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(BYTE_EVERY);
            }
        })
    };
    let answer = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(dribbler);
            let r = read_response(&mut reader, false);
            let (after, sent) = (started.elapsed(), sent.load(Ordering::SeqCst));
            stop.store(true, Ordering::SeqCst);
            expect_eof(&mut reader);
            (r, after, sent)
        })
    };

    // The honest client, at the same time.
    let mut honest = BufReader::new(server.connect());
    let request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    honest.get_mut().write_all(request).unwrap();
    check_hello(&read_response(&mut honest, false));
    // Silent for longer than the header timeout: keep-alive, not a deadline.
    std::thread::sleep(Duration::from_millis(1500));
    honest.get_mut().write_all(request).unwrap();
    check_hello(&read_response(&mut honest, false));
    // One request in two parts, 300 ms apart.
    honest.get_mut().write_all(&request[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    honest.get_mut().write_all(&request[10..]).unwrap();
    check_hello(&read_response(&mut honest, false));

    let (r, after, sent) = answer.join().unwrap();
    dribbling.join().unwrap();
    eprintln!(
        "dribbler: 408 after {after:?}, {sent} of {} bytes sent",
        REQUEST.len()
    );
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(
        after >= Duration::from_millis(1000) && after < Duration::from_millis(2500),
        "408 after {after:?}, want 1 s (+ slack)"
    );
    assert!(
        sent < REQUEST.len(),
        "the whole head went out ({sent} bytes)"
    );

    // The honest client is still served after all that.
    honest.get_mut().write_all(request).unwrap();
    check_hello(&read_response(&mut honest, false));
    drop(honest);
    server.stop(libc::SIGTERM);
}

/// Bad command lines: status 2 and a usage message.
#[test]
fn http_hello_usage() {
    let exe = http_hello_exe();
    common::assert_rejects_bad_usage(
        &exe,
        "http_hello",
        &[
            &["--mode", "forking"],
            &["--threads", "0"],
            &["--header-timeout", "0"],
            &["--header-timeout", "1s"],
            &["--bogus", "x"],
            &["--mode"],
        ],
    );
}
