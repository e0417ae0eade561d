//! The threading and forking modes' hot paths, pinned by system-call counts
//! (tests/common/strace.rs: strace -f -c attached to a running server for
//! the window a test chooses) and by the behaviour the optimisations must
//! keep. Counts are upper bounds with a small margin; nothing here times
//! the server's speed.
//!
//! - threading_timed_reads_are_one_recv_each: echo_server's handler reads
//!   with a 200 ms timeout; each read is one blocking recv that
//!   SO_RCVTIMEO bounds, not recv(MSG_DONTWAIT) + poll + recv.
//! - kernel_timed_read_times_out_in_full: such a read still fails with
//!   SS_ERR_TIMEOUT, never before its timeout, and the next one reads.
//! - fileno_hands_out_a_descriptor_without_receive_timeout: after
//!   Request::fileno the socket has no SO_RCVTIMEO (the handler's own
//!   blocking reads must not time out), and timed reads still time out.
//! - threading_churn_reads_the_end_once: a connection that ended (its
//!   end-of-stream was read) is closed without peeking for more input, and
//!   a finishing handler thread makes no futex call when nobody waits.
//! - forked_child_close_touches_no_unused_buffer: a forked child's close
//!   writes no stack page for the 16 KiB buffer only a lingering close
//!   uses (minor faults of the reaped children, from /proc).
//! - forking_reaps_by_one_poll_per_turn: with children alive, a loop turn
//!   waits (waitid) only for the children whose pidfd says they exited.
//! - forking_child_reads_a_waiting_request_at_once: a child's first read
//!   takes the request already there without polling first.
//! - udp_echo_server_asks_no_pid_per_datagram: c_examples/echo_server.c
//!   asks getpid() whether it is a forked child only in forking mode.
//! - threading/forking_accepts_queued_connections_without_poll: with
//!   connections waiting in the backlog, the serving thread accepts the
//!   next one without polling first.
//! - forking_reaps_a_busy_loop_in_batches: while connections queue up, the
//!   children's pidfds are polled every few turns, not every turn, and
//!   every child is still reaped once the loop is idle.
//! - threading/forking_stops_while_accepting_without_poll: a loop that
//!   never polls (clients always waiting) still stops on shutdown.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::fd::BorrowedFd;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::example::ExampleProcess;
use common::strace::{Strace, SyscallCounts};
use socketserver::{Concurrency, Config, ErrorKind, Handler, Request, Result, Server, Transport};

const EXIT: Duration = Duration::from_secs(15);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const MESSAGE: [u8; 64] = [b'x'; 64];

/// One 64-byte message and its whole echo.
fn round_trip(stream: &mut TcpStream) {
    stream.write_all(&MESSAGE).expect("send");
    let mut echo = [0u8; MESSAGE.len()];
    stream.read_exact(&mut echo).expect("echo");
    assert_eq!(echo, MESSAGE);
}

/// `n` connections one after the other, each one message and its echo,
/// closed by the client.
fn churn(address: &str, n: u64) {
    for _ in 0..n {
        let mut stream = common::tcp_client(address, IO_TIMEOUT);
        round_trip(&mut stream);
    }
}

/// Stops `server` with SIGTERM and checks it exits 0.
fn stop(mut server: ExampleProcess) {
    let (status, stderr) = server.stop(libc::SIGTERM, EXIT);
    assert_eq!(status.code(), Some(0), "{status}: {stderr}");
}

fn assert_at_most(counts: &SyscallCounts, call: &str, bound: u64, what: &str) {
    assert!(
        counts.calls(call) <= bound,
        "{what}: {} {call} calls, at most {bound} expected; all: {counts}",
        counts.calls(call)
    );
}

#[test]
fn threading_timed_reads_are_one_recv_each() {
    const N: u64 = 300;
    let server = common::start_echo_server("tcp", "threading", "127.0.0.1:0", &[]);
    let strace = Strace::attach(server.pid());
    let mut stream = common::tcp_client(server.addr(), IO_TIMEOUT);
    round_trip(&mut stream);
    // Every further message is sent once the handler thread waits for it
    // (strace slows the server down: else the next message would often be
    // there before the read, which then needs no wait at all).
    for _ in 1..N {
        wait_for_handler_blocked(server.pid());
        round_trip(&mut stream);
    }
    let counts = strace.finish();
    drop(stream);
    // N reads with data, and a few more (the end of stream, a 200 ms
    // timeout if the machine stalls).
    assert_at_most(&counts, "recvfrom", N + 10, "threading, one connection");
    // The accept loop's waits; none per read.
    assert_at_most(&counts, "poll", 10, "threading, one connection");
    stop(server);
}

/// Returns once a thread of `pid` other than its main thread is blocked in
/// a system call that waits for input (recvfrom, poll, ppoll), as read
/// from /proc/PID/task/TID/syscall.
fn wait_for_handler_blocked(pid: i32) {
    let waiting = [libc::SYS_recvfrom, libc::SYS_poll, libc::SYS_ppoll];
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
        let blocked = tasks.filter_map(|t| t.ok()).any(|task| {
            let tid = task.file_name();
            tid.to_str() != Some(&pid.to_string())
                && std::fs::read_to_string(task.path().join("syscall"))
                    .ok()
                    .and_then(|text| text.split_whitespace().next()?.parse::<libc::c_long>().ok())
                    .is_some_and(|nr| waiting.contains(&nr))
        });
        if blocked {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no handler thread of {pid} blocked in a read"
        );
        thread::sleep(Duration::from_micros(200));
    }
}

/// A handler that reads with a per-operation timeout and reports what the
/// reads gave, and when, to the test.
struct TimedReader {
    timeout: Duration,
    /// Take the descriptor (Request::fileno) after the first read, and
    /// report its SO_RCVTIMEO.
    take_fileno: bool,
    events: Mutex<mpsc::Sender<Event>>,
}

#[derive(Debug)]
enum Event {
    /// A read gave these bytes.
    Read(Vec<u8>),
    /// A read failed with this kind after this long.
    Failed(ErrorKind, Duration),
    /// SO_RCVTIMEO of the descriptor fileno gave.
    ReceiveTimeout(Duration),
}

impl TimedReader {
    fn send(&self, event: Event) {
        let _ = self.events.lock().unwrap().send(event);
    }

    fn timed_read(&self, request: &mut Request) -> bool {
        let mut buf = [0u8; 16];
        let started = Instant::now();
        match request.read(&mut buf) {
            Ok(n) => {
                self.send(Event::Read(buf[..n].to_vec()));
                n > 0
            }
            Err(e) => {
                self.send(Event::Failed(e.kind(), started.elapsed()));
                true
            }
        }
    }
}

impl Handler for TimedReader {
    fn handle(&self, request: &mut Request) -> Result<()> {
        request.set_timeout(Some(self.timeout))?;
        // Data, then a silence that times out, then data again.
        self.timed_read(request);
        if self.take_fileno {
            let fd = request.fileno();
            // SAFETY: the request owns the descriptor and outlives `fd`'s
            // use here.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let t = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout)
                .expect("getsockopt SO_RCVTIMEO");
            let t =
                Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64);
            self.send(Event::ReceiveTimeout(t));
        }
        self.timed_read(request);
        self.timed_read(request);
        Ok(())
    }
}

/// Serves one connection with a [`TimedReader`] in threading mode and
/// returns the handler's events: the client sends "a", waits for the
/// handler's timeout to pass, then sends "b".
fn timed_reads(timeout: Duration, take_fileno: bool) -> Vec<Event> {
    let (tx, rx) = mpsc::channel();
    let handler = TimedReader {
        timeout,
        take_fileno,
        events: Mutex::new(tx),
    };
    let config = Config::new(Transport::Tcp, Concurrency::Threading).unwrap();
    let server: Arc<Server> = Server::new(&config, "127.0.0.1:0", Box::new(handler)).unwrap();
    let address = server.address().unwrap();
    let serving = {
        let server = server.clone();
        thread::spawn(move || server.serve_forever())
    };
    let mut stream = common::tcp_client(&address, IO_TIMEOUT);
    stream.write_all(b"a").unwrap();
    let mut events = Vec::new();
    let next = |events: &mut Vec<Event>| {
        events.push(
            rx.recv_timeout(IO_TIMEOUT)
                .expect("the handler's next event"),
        );
    };
    next(&mut events);
    if take_fileno {
        next(&mut events);
    }
    // The timed-out read.
    next(&mut events);
    stream.write_all(b"b").unwrap();
    next(&mut events);
    drop(stream);
    server.shutdown();
    serving.join().unwrap().unwrap();
    server.close().unwrap();
    events
}

/// Event `i` is a read that gave `bytes`.
fn assert_read(events: &[Event], i: usize, bytes: &[u8]) {
    assert!(
        matches!(&events[i], Event::Read(b) if b == bytes),
        "event {i} should read {bytes:?}: {events:?}"
    );
}

fn assert_timed_out(event: &Event, timeout: Duration) {
    match event {
        Event::Failed(ErrorKind::Timeout, after) => assert!(
            *after >= timeout && *after < IO_TIMEOUT,
            "the read timed out after {after:?}, its timeout is {timeout:?}"
        ),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn kernel_timed_read_times_out_in_full() {
    // Not a multiple of the kernel's 4 ms jiffy: a timer that rounds its
    // end to a jiffy may fire early, which must not show.
    let timeout = Duration::from_millis(151);
    let events = timed_reads(timeout, false);
    assert_read(&events, 0, b"a");
    assert_timed_out(&events[1], timeout);
    assert_read(&events, 2, b"b");
}

#[test]
fn fileno_hands_out_a_descriptor_without_receive_timeout() {
    let timeout = Duration::from_millis(150);
    let events = timed_reads(timeout, true);
    assert_read(&events, 0, b"a");
    assert!(
        matches!(&events[1], Event::ReceiveTimeout(t) if t.is_zero()),
        "fileno's descriptor must block without a timeout: {events:?}"
    );
    assert_timed_out(&events[2], timeout);
    assert_read(&events, 3, b"b");
}

#[test]
fn threading_churn_reads_the_end_once() {
    const N: u64 = 100;
    let server = common::start_echo_server("tcp", "threading", "127.0.0.1:0", &[]);
    let strace = Strace::attach(server.pid());
    churn(server.addr(), N);
    let counts = strace.finish();
    // Per connection the request and the end of stream; no read to look
    // for input left after the end (the lingering close's peek).
    assert_at_most(&counts, "recvfrom", 2 * N + N / 10, "threading churn");
    // A finishing thread signals close's condition only when close waits
    // (a futex wake each time otherwise); what is left is contention.
    assert_at_most(&counts, "futex", N / 10, "threading churn");
    stop(server);
}

/// Minor page faults of the reaped children of process `pid` so far:
/// /proc/PID/stat's eleventh field (cminflt).
fn children_minor_faults(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // After the command name's closing parenthesis: state is field 3.
    let rest = &stat[stat.rfind(')').expect("(comm)") + 2..];
    let field = rest.split_whitespace().nth(11 - 3);
    field.and_then(|f| f.parse().ok()).expect("cminflt")
}

#[test]
fn forked_child_close_touches_no_unused_buffer() {
    const N: u64 = 200;
    let server = common::start_echo_server("tcp", "forking", "127.0.0.1:0", &[]);
    churn(server.addr(), 20);
    common::wait_children_reaped(server.pid());
    let before = children_minor_faults(server.pid());
    churn(server.addr(), N);
    common::wait_children_reaped(server.pid());
    let faults = children_minor_faults(server.pid()) - before;
    // Each child faults in the pages it writes (copy-on-write) and the
    // code it runs: 27-30 here. The lingering close's 16 KiB discard
    // buffer, inlined into every close, made its stack probes write four
    // more pages in every child, lingering or not; linked without -z now
    // (tests/perf_forking.rs), each child's lazy symbol bindings wrote the
    // GOT (34-39 measured). The count moves by 2-3 with the address-space
    // layout, so the bound leaves room for that above 30. A bound for this
    // machine's toolchain: a new compiler or libc may move it.
    assert!(
        faults <= 34 * N,
        "{:.1} page faults per child",
        faults as f64 / N as f64
    );
    stop(server);
}

#[test]
fn forking_reaps_by_one_poll_per_turn() {
    const ALIVE: usize = 20;
    const N: u64 = 30;
    let server =
        common::start_echo_server("tcp", "forking", "127.0.0.1:0", &["--max-children", "60"]);
    // Children that stay alive through the window: each loop turn used to
    // ask every one of them with a waitid, twice.
    let mut held: Vec<TcpStream> = (0..ALIVE)
        .map(|_| common::tcp_client(server.addr(), IO_TIMEOUT))
        .collect();
    for stream in &mut held {
        round_trip(stream);
    }
    assert!(common::children_of(server.pid()) >= ALIVE);
    let strace = Strace::attach(server.pid());
    churn(server.addr(), N);
    let counts = strace.finish();
    // One waitid per child that exited (the churned ones), a few spare.
    assert_at_most(&counts, "waitid", N + 5, "forking, 20 children alive");
    drop(held);
    stop(server);
}

#[test]
fn forking_child_reads_a_waiting_request_at_once() {
    const N: u64 = 60;
    let server =
        common::start_echo_server("tcp", "forking", "127.0.0.1:0", &["--max-children", "60"]);
    let strace = Strace::attach(server.pid());
    churn(server.addr(), N);
    let counts = strace.finish();
    // Per connection: the parent's wait for it and its one poll of the
    // children's pidfds; the child's wait for the client's end (between
    // requests, watching the drain pipe). The request itself, there before
    // the child runs, is read without a poll.
    assert_at_most(&counts, "poll", 3 * N + N / 10 + 5, "forking churn");
    stop(server);
}

#[test]
fn udp_echo_server_asks_no_pid_per_datagram() {
    const N: u64 = 200;
    let server = common::start_echo_server("udp", "sync", "127.0.0.1:0", &[]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.connect(server.addr()).unwrap();
    let strace = Strace::attach(server.pid());
    let mut echo = [0u8; 64];
    for _ in 0..N {
        client.send(&MESSAGE).unwrap();
        let n = client.recv(&mut echo).expect("echo");
        assert_eq!(&echo[..n], &MESSAGE[..]);
    }
    let counts = strace.finish();
    assert_at_most(&counts, "getpid", 2, "UDP sync echo");
    // The recvfrom the server is already blocked in when strace attaches
    // may go uncounted (seen under load: 199 of 200).
    assert!(counts.calls("recvfrom") >= N - 1, "{counts}");
    stop(server);
}

/// `clients` threads, each churning `per_client` connections at once: a
/// backlog that is rarely empty when the server comes back to accept.
fn concurrent_churn(address: &str, clients: u64, per_client: u64) {
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let address = address.to_owned();
            thread::spawn(move || churn(&address, per_client))
        })
        .collect();
    for worker in workers {
        worker.join().expect("a churning client");
    }
}

/// Churning clients at once, and the connections they make in all.
const CLIENTS: u64 = 8;
const PER_CLIENT: u64 = 40;
const N: u64 = CLIENTS * PER_CLIENT;

/// echo_server in `mode` over TCP, warmed up, and its system calls while
/// CLIENTS clients churn PER_CLIENT connections each.
fn traced_concurrent_churn(mode: &str, extra: &[&str]) -> (ExampleProcess, SyscallCounts) {
    let server = warmed_echo_server(mode, extra);
    let strace = Strace::attach(server.pid());
    concurrent_churn(server.addr(), CLIENTS, PER_CLIENT);
    let counts = strace.finish();
    (server, counts)
}

/// A TCP echo_server in `mode` that has served a few churning clients
/// (its threads, pages and caches in place before a trace starts).
fn warmed_echo_server(mode: &str, extra: &[&str]) -> ExampleProcess {
    let server = common::start_echo_server("tcp", mode, "127.0.0.1:0", extra);
    concurrent_churn(server.addr(), 4, 5);
    server
}

/// accepts_queued_connections_without_poll: in SS_THREADING and
/// SS_FORKING the serving thread only accepts; with connections waiting
/// in the backlog it takes the next one with accept4 at once, without a
/// poll first (one per connection before). `per_conn_polls` is what the
/// rest of the mode polls per connection (a forked child's wait for its
/// client's end, the parent's poll of its children's pidfds).
fn assert_accepts_without_poll(mode: &str, extra: &[&str], per_conn_polls: u64) {
    let (server, counts) = traced_concurrent_churn(mode, extra);
    assert!(counts.calls("accept4") >= N, "{counts}");
    // Polling before every accept was N more; the backlog is empty now
    // and then (the clients are not traced, the server is), when the poll
    // is still needed.
    assert_at_most(
        &counts,
        "poll",
        per_conn_polls * N + N / 3,
        &format!("{mode}, {CLIENTS} clients churning"),
    );
    stop(server);
}

#[test]
fn threading_accepts_queued_connections_without_poll() {
    assert_accepts_without_poll("threading", &[], 0);
}

#[test]
fn forking_accepts_queued_connections_without_poll() {
    assert_accepts_without_poll("forking", &["--max-children", "60"], 2);
}

#[test]
fn forking_reaps_a_busy_loop_in_batches() {
    let server = warmed_echo_server("forking", &["--max-children", "60"]);
    // The serving thread's polls alone, told apart by their timeout: a
    // reap polls the pidfds without waiting (0), a wait for the next
    // connection has the poll interval. How many turns wait depends on
    // the machine's load (and so do the children's polls: echo_server's
    // handler waits 200 ms at a time).
    let strace = Strace::attach_thread_calls(server.pid(), "poll");
    concurrent_churn(server.addr(), CLIENTS, PER_CLIENT);
    let polls = strace.finish_calls();
    let timeout = |call: &String| {
        let args = call.strip_prefix("poll(")?.split(") = ").next()?;
        args.rsplit(", ").next()?.parse::<i64>().ok()
    };
    let reaps = polls.iter().filter(|c| timeout(c) == Some(0)).count() as u64;
    let waits = polls
        .iter()
        .filter(|c| timeout(c).is_some_and(|t| t > 0))
        .count() as u64;
    // A turn that waited reaps at once; of the others, every REAP_EVERY-th
    // (8). It was every turn: N reaps.
    assert!(
        reaps <= waits + N / 8 + 5,
        "{reaps} reaping polls after {waits} waiting ones for {N} connections; \
         at most {} expected: {polls:#?}",
        waits + N / 8 + 5
    );
    // Every child is still reaped, once the loop is idle.
    common::wait_children_reaped(server.pid());
    stop(server);
}

/// While clients keep churning, `mode`'s loop never needs its poll: a
/// SIGTERM (echo_server's shutdown) still stops it, and it exits 0 with
/// its workers done. The clients stop once the server is gone.
fn stops_while_accepting_without_poll(mode: &str, extra: &[&str]) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let server = common::start_echo_server("tcp", mode, "127.0.0.1:0", extra);
    let stop_clients = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (address, stop_clients, served) = (
                server.addr().to_owned(),
                stop_clients.clone(),
                served.clone(),
            );
            thread::spawn(move || {
                while !stop_clients.load(Ordering::SeqCst) {
                    let Ok(mut stream) = TcpStream::connect(&address) else {
                        return;
                    };
                    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                    let mut echo = [0u8; MESSAGE.len()];
                    if stream.write_all(&MESSAGE).is_ok() && stream.read_exact(&mut echo).is_ok() {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + IO_TIMEOUT;
    while served.load(Ordering::SeqCst) < 200 {
        assert!(Instant::now() < deadline, "the clients were not served");
        thread::sleep(Duration::from_millis(2));
    }
    stop(server);
    stop_clients.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().expect("a client");
    }
}

#[test]
fn threading_stops_while_accepting_without_poll() {
    stops_while_accepting_without_poll("threading", &[]);
}

#[test]
fn forking_stops_while_accepting_without_poll() {
    stops_while_accepting_without_poll("forking", &["--max-children", "60"]);
}
