//! Graceful drain (ss_server_drain) in every mode, over real sockets: the C
//! sub-tests of tests/c/drain.c (see its header comment for what each
//! checks), each in its own process with a hard timeout, and http_hello
//! draining on SIGTERM: a pipeline of answers in flight when the signal comes
//! reaches its client whole, and the process exits 0 within a bounded
//! time.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::example::ExampleProcess;

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
        idle_sync_keepalive,
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
        busy_mark_event,
        handoff_thread,
        handoff_fork,
        unix_busy_event,
        unix_busy_threading,
        udp_threading,
        pool_queued_run,
        pool_queued_cut,
        api_args,
        before_serve,
        after_shutdown,
        second_call_shortens,
        shutdown_cuts,
        deadline_zero,
        adopted_threading,
        adopted_event2,
    }
}

/// A running http_hello (killed if the test fails first) and its address.
struct HttpHello {
    process: ExampleProcess,
    addr: String,
}

impl HttpHello {
    fn start(mode: &str) -> HttpHello {
        let mut cmd = Command::new(common::compile_example("http_hello", &[]));
        cmd.args(["--mode", mode, "--address", "127.0.0.1:0", "--threads", "2"]);
        let process = ExampleProcess::start(cmd, Duration::from_secs(10));
        HttpHello {
            addr: process.addr().to_string(),
            process,
        }
    }

    /// A client with a small receive buffer, so that a large answer stays
    /// in flight (queued in the server) until it reads.
    fn connect(&self) -> TcpStream {
        let addr: std::net::SocketAddr = self.addr.parse().unwrap();
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        socket.connect(&addr.into()).expect("connect to http_hello");
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    fn signal(&self, signal: libc::c_int) -> Instant {
        self.process.signal(signal);
        Instant::now()
    }

    /// Waits until it exits, within `bound` of `start`: status 0.
    fn wait_exit(&mut self, start: Instant, bound: Duration) -> Duration {
        let (status, stderr) = self
            .process
            .wait_exit(bound.saturating_sub(start.elapsed()));
        assert!(
            status.success(),
            "http_hello exited with {status}; stderr:\n{stderr}"
        );
        start.elapsed()
    }
}

/// Bytes the kernel holds for `s` to read (FIONREAD).
fn unread(s: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer given.
    assert_eq!(
        unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) },
        0
    );
    n as usize
}

const PIPELINED: usize = 200_000;
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

/// One connection pipelining PIPELINED requests. One thread writes and
/// reads, never blocking in either, so that the server never finds the
/// connection idle (every request read and answered) while requests are
/// still to come: a drain closes an idle connection, and a sender thread
/// kept off the processor after its first batch got 1000 answers of
/// 200000 (CI's failure). Once the server cannot keep up, its unread input
/// only shrinks as answers are read here, a little per turn, and each turn
/// writes more where there is room.
struct Pipeline {
    stream: TcpStream,
    requests: Vec<u8>,
    sent: usize,
    answers: Vec<u8>,
}

impl Pipeline {
    /// Writes requests, reading nothing, until all are written or the
    /// kernel takes no more (here the kernel's buffers take all 3.6 MB):
    /// the server then has requests unread and answers it cannot send (the
    /// client's small receive buffer is full), about 16 MB in all, so most
    /// are in flight; returns once answers have arrived.
    fn start(server: &HttpHello) -> Pipeline {
        let stream = server.connect();
        stream.set_nonblocking(true).unwrap();
        let mut pipeline = Pipeline {
            stream,
            requests: REQUEST.repeat(PIPELINED),
            sent: 0,
            answers: Vec::new(),
        };
        while pipeline.sent < pipeline.requests.len() && pipeline.write_some() {}
        // The server is serving this connection (not just holding it in the
        // listen queue, which a drain would reset) once answers pile up.
        let start = Instant::now();
        while unread(&pipeline.stream) < 32 * 1024 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no answers arrived"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        pipeline
    }

    /// One non-blocking write; false when the kernel takes nothing.
    fn write_some(&mut self) -> bool {
        match self.stream.write(&self.requests[self.sent..]) {
            Ok(n) => {
                self.sent += n;
                n > 0
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            // The server closed (threading mode stops between requests):
            // nothing more goes out.
            Err(_) => {
                self.sent = self.requests.len();
                false
            }
        }
    }

    /// Reads every answer until the server closes, writing the rest of the
    /// requests meanwhile; the answers, checked whole (see count_answers).
    fn finish(mut self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let want_write = self.sent < self.requests.len();
            let mut poll = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&self.stream),
                events: libc::POLLIN | if want_write { libc::POLLOUT } else { 0 },
                revents: 0,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the answers did not end within 10 s");
            // SAFETY: one valid pollfd, for the duration of the call.
            let ready = unsafe { libc::poll(&mut poll, 1, left.as_millis() as libc::c_int) };
            if ready < 0 {
                assert_eq!(
                    std::io::Error::last_os_error().kind(),
                    std::io::ErrorKind::Interrupted
                );
                continue;
            }
            if poll.revents & libc::POLLOUT != 0 {
                self.write_some();
            }
            if poll.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                match self.stream.read(&mut chunk) {
                    Ok(0) => return count_answers(&self.answers),
                    Ok(n) => self.answers.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("read the answers: {e}"),
                }
            }
        }
    }
}

/// The answers, split at response boundaries (each must be the whole hello
/// response).
fn count_answers(all: &[u8]) -> usize {
    let head_end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole response head")
        + 4;
    let one = &all[..head_end + "Hello, world!\n".len()];
    assert!(one.starts_with(b"HTTP/1.1 200 OK\r\n"), "{one:?}");
    assert_eq!(
        all.len() % one.len(),
        0,
        "the answers end inside a response"
    );
    assert!(all.chunks(one.len()).all(|c| c == one), "an answer differs");
    all.len() / one.len()
}

/// SIGTERM drains: every pipelined request is answered whole (the answers
/// in flight complete, and the requests the server has yet to read are
/// served), then the connection closes and the process exits 0 well within
/// the drain deadline (10 s).
#[test]
fn http_hello_sigterm_drains_event() {
    let mut server = HttpHello::start("event");
    let pipeline = Pipeline::start(&server);
    let start = server.signal(libc::SIGTERM);
    // Refused at once, while the answers are still in flight.
    assert!(
        TcpStream::connect(&server.addr).is_err() || {
            std::thread::sleep(Duration::from_millis(200));
            TcpStream::connect(&server.addr).is_err()
        }
    );
    assert_eq!(pipeline.finish(), PIPELINED);
    let took = server.wait_exit(start, Duration::from_secs(9));
    eprintln!("http_hello (event) drained {PIPELINED} answers and exited in {took:?}");
    // New connections are refused once it has exited (and already during
    // the drain: the listener closes at once).
    assert!(TcpStream::connect(&server.addr).is_err());
}

/// Threading mode: the request being answered when SIGTERM comes is
/// answered whole, then the handler stops between requests (the rest of a
/// pipeline is not served during a drain); the process exits 0.
#[test]
fn http_hello_sigterm_drains_threading() {
    let mut server = HttpHello::start("threading");
    let pipeline = Pipeline::start(&server);
    let start = server.signal(libc::SIGTERM);
    let answered = pipeline.finish();
    assert!((1..PIPELINED).contains(&answered), "{answered} answers");
    server.wait_exit(start, Duration::from_secs(9));
}
