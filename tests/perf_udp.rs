//! The datagram paths' system calls (issue 12, lane UDP), counted with
//! strace attached to `echo_server` while real clients on loopback (UDP)
//! or in a temporary directory (Unix datagram) drive it, and the
//! behaviour the batching relies on: each reply goes to its own sender,
//! in order, within a batch of many clients' datagrams; an over-long
//! datagram or a reply that cannot be sent in the middle of a batch costs
//! only that datagram; an unbound Unix sender is still reported.

mod common;

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use common::callgrind::{CallTree, Callgrind};
use common::example::ExampleProcess;
use common::strace::{Strace, SyscallCounts};
use common::TempDir;

const WAIT: Duration = Duration::from_secs(10);

/// echo_server over a datagram transport; in event mode with one loop,
/// which the per-datagram counts here assume.
fn echo_server(transport: &str, mode: &str, address: &str) -> ExampleProcess {
    let one_loop: &[&str] = if mode == "event" {
        &["--threads", "1"]
    } else {
        &[]
    };
    common::start_echo_server(transport, mode, address, one_loop)
}

/// A datagram client of either transport, connected to the server.
enum Client {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Client {
    fn udp(server: &str) -> Client {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.connect(server).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        Client::Udp(s)
    }

    /// Bound to `path` (so that it can be replied to), or unbound.
    fn unix(server: &str, path: Option<&Path>) -> Client {
        let s = match path {
            Some(p) => UnixDatagram::bind(p).expect("bind"),
            None => UnixDatagram::unbound().expect("socket"),
        };
        s.connect(server).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        Client::Unix(s)
    }

    fn send(&self, data: &[u8]) {
        let n = match self {
            Client::Udp(s) => s.send(data),
            Client::Unix(s) => s.send(data),
        }
        .expect("send");
        assert_eq!(n, data.len());
    }

    fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0; 65536];
        let n = match self {
            Client::Udp(s) => s.recv(&mut buf),
            Client::Unix(s) => s.recv(&mut buf),
        }
        .expect("no reply within 10 s");
        buf.truncate(n);
        buf
    }

    /// Nothing more is queued for it (a reply it should not have got).
    fn nothing_pending(&self) -> bool {
        let mut buf = [0u8; 16];
        let r = match self {
            Client::Udp(s) => s.set_nonblocking(true).and_then(|()| s.recv(&mut buf)),
            Client::Unix(s) => s.set_nonblocking(true).and_then(|()| s.recv(&mut buf)),
        };
        matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// `rounds` rounds in which every client sends `per_client` datagrams
/// (all clients' in one burst, so that the server finds many queued),
/// then reads its replies: each must be its own, in order when `ordered`
/// (one serving thread); otherwise (a thread per datagram, whose replies
/// may overtake one another) in any order.
fn bursts(clients: &[Client], rounds: usize, per_client: usize, ordered: bool) -> usize {
    for round in 0..rounds {
        for k in 0..per_client {
            for (c, client) in clients.iter().enumerate() {
                client.send(format!("round {round} client {c} message {k}").as_bytes());
            }
        }
        for (c, client) in clients.iter().enumerate() {
            let mut want: Vec<String> = (0..per_client)
                .map(|k| format!("round {round} client {c} message {k}"))
                .collect();
            let mut got: Vec<String> = (0..per_client)
                .map(|_| String::from_utf8_lossy(&client.recv()).into_owned())
                .collect();
            if !ordered {
                want.sort();
                got.sort();
            }
            assert_eq!(got, want, "client {c}'s replies");
        }
    }
    for client in clients {
        assert!(client.nothing_pending(), "an extra reply");
    }
    rounds * per_client * clients.len()
}

/// Event mode receives and replies in batches: at most one recvmmsg and
/// one sendmmsg per few datagrams, never one recvfrom and one sendto each.
fn assert_batched(counts: &SyscallCounts, datagrams: u64) {
    assert_eq!(counts.calls("recvfrom"), 0, "{counts}");
    assert_eq!(counts.calls("sendto"), 0, "{counts}");
    assert!(
        counts.calls("recvmmsg") <= datagrams / 3,
        "{datagrams} datagrams took {} recvmmsg calls:\n{counts}",
        counts.calls("recvmmsg")
    );
    // One per batch that had replies (none failed here).
    assert!(
        counts.calls("sendmmsg") <= counts.calls("recvmmsg"),
        "{counts}"
    );
    assert_eq!(counts.errors("sendmmsg"), 0, "{counts}");
}

#[test]
fn event_udp_replies_in_batches_to_each_sender_in_order() {
    let server = echo_server("udp", "event", "127.0.0.1:0");
    let clients: Vec<Client> = (0..20).map(|_| Client::udp(server.addr())).collect();
    let strace = Strace::attach(server.pid());
    let datagrams = bursts(&clients, 10, 3, true);
    assert_batched(&strace.finish(), datagrams as u64);
}

#[test]
fn event_unix_datagram_replies_in_batches_to_each_sender_in_order() {
    let dir = TempDir::new("perf-udp");
    let path = dir.path().join("server.sock");
    let server = echo_server("unixdgram", "event", path.to_str().unwrap());
    let clients: Vec<Client> = (0..8)
        .map(|i| Client::unix(server.addr(), Some(&dir.path().join(format!("c{i}.sock")))))
        .collect();
    let strace = Strace::attach(server.pid());
    // The server's queue holds net.unix.max_dgram_qlen datagrams (10 by
    // default): bursts of 8 fit.
    let datagrams = bursts(&clients, 20, 1, true);
    assert_batched(&strace.finish(), datagrams as u64);
}

/// The next stderr line of `server` containing `what`, within 10 s.
fn stderr_with(server: &ExampleProcess, what: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match server.stderr_line(left) {
            Some(line) if line.contains(what) => return line,
            Some(_) => {}
            None => panic!("no stderr line with {what:?} within 10 s"),
        }
    }
}

#[test]
fn event_udp_over_long_datagram_in_a_batch_is_dropped_alone() {
    let server = echo_server("udp", "event", "127.0.0.1:0");
    let client = Client::udp(server.addr());
    let other = Client::udp(server.addr());
    for round in 0..5 {
        // Back to back: the server takes them in one batch or a few.
        client.send(format!("{round} before").as_bytes());
        other.send(format!("{round} other").as_bytes());
        client.send(&vec![b'x'; 9000]); // over the default 8192
        client.send(format!("{round} after").as_bytes());
        for want in ["before", "after"] {
            assert_eq!(client.recv(), format!("{round} {want}").into_bytes());
        }
        assert_eq!(other.recv(), format!("{round} other").into_bytes());
        let line = stderr_with(&server, "exceeds the maximum datagram size");
        assert!(line.contains("datagram of 9000 bytes"), "{line}");
    }
    assert!(client.nothing_pending() && other.nothing_pending());
}

/// Replies to a client whose queue is full fail (EAGAIN) in the middle of
/// the batch: each is reported, and the other client's replies of the
/// same batch, before and after it, still go out.
#[test]
fn event_unix_failed_reply_in_a_batch_costs_only_that_reply() {
    let dir = TempDir::new("perf-udp");
    let path = dir.path().join("server.sock");
    let server = echo_server("unixdgram", "event", path.to_str().unwrap());
    // Never reads, and is not connected to the server, so that its queue
    // is bounded by max_dgram_qlen (a socket connected to the server takes
    // replies until the server's send buffer is full).
    let deaf = UnixDatagram::bind(dir.path().join("deaf.sock")).expect("bind");
    let reader = Client::unix(server.addr(), Some(&dir.path().join("reader.sock")));
    for i in 0..40 {
        reader.send(format!("{i} a").as_bytes());
        deaf.send_to(b"unread", server.addr()).expect("send");
        reader.send(format!("{i} b").as_bytes());
        assert_eq!(reader.recv(), format!("{i} a").into_bytes());
        assert_eq!(reader.recv(), format!("{i} b").into_bytes());
    }
    // Its queue holds at most max_dgram_qlen (10 by default) of the 40.
    let line = stderr_with(&server, "reply dropped");
    assert!(line.contains("deaf.sock"), "{line}");
    assert!(reader.nothing_pending());
}

#[test]
fn event_unix_unbound_sender_is_reported_and_the_batch_goes_on() {
    let dir = TempDir::new("perf-udp");
    let path = dir.path().join("server.sock");
    let server = echo_server("unixdgram", "event", path.to_str().unwrap());
    let unbound = Client::unix(server.addr(), None);
    let bound = Client::unix(server.addr(), Some(&dir.path().join("bound.sock")));
    for i in 0..5 {
        bound.send(format!("{i} first").as_bytes());
        unbound.send(b"no address to reply to");
        bound.send(format!("{i} second").as_bytes());
        assert_eq!(bound.recv(), format!("{i} first").into_bytes());
        assert_eq!(bound.recv(), format!("{i} second").into_bytes());
        stderr_with(&server, "the sender has no address");
    }
    assert!(bound.nothing_pending());
}

/// The blocking modes take a datagram already queued without polling
/// first (SS_SYNC waits in recvfrom itself, the others try a recvfrom
/// before polling): under bursts from many clients, far fewer polls than
/// datagrams (one each before), and few reads that find nothing.
#[test]
fn blocking_modes_take_queued_datagrams_without_a_poll_each() {
    for mode in ["sync", "threading"] {
        queued_datagrams_without_a_poll_each(mode);
    }
}

fn queued_datagrams_without_a_poll_each(mode: &str) {
    let server = echo_server("udp", mode, "127.0.0.1:0");
    let clients: Vec<Client> = (0..20).map(|_| Client::udp(server.addr())).collect();
    let threads = thread_count(server.pid());
    let strace = Strace::attach(server.pid());
    let datagrams = bursts(&clients, 10, 3, mode != "threading") as u64;
    // A client can have its reply before the handler thread that sent it
    // has had its sendto reported (at the call's exit): once those
    // threads are gone, every call of theirs is counted.
    let end = Instant::now() + WAIT;
    while thread_count(server.pid()) > threads && Instant::now() < end {
        std::thread::yield_now();
    }
    let counts = strace.finish();
    assert!(
        counts.calls("poll") <= datagrams / 4,
        "{mode}: {datagrams} datagrams took {} polls:\n{counts}",
        counts.calls("poll")
    );
    // A read that found nothing is followed by a few taken through poll
    // before the next try.
    assert!(
        counts.errors("recvfrom") <= datagrams / 4,
        "{mode}: {counts}"
    );
    // One reply per datagram (a recvfrom under way when strace detaches
    // may be counted as one more call).
    assert_eq!(counts.calls("sendto"), datagrams, "{mode}: {counts}");
}

/// The sync loop no longer polls before a datagram, and under a flood its
/// wake-up is one datagram among many: it must look at the shutdown flag
/// before every receive. SIGTERM (ss_server_shutdown in echo_server's
/// handler) ends it after the request under way.
#[test]
fn sync_udp_shuts_down_under_a_flood() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut server = echo_server("udp", "sync", "127.0.0.1:0");
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
            client.connect(server.addr()).expect("connect");
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // ECONNREFUSED once the server is gone: go on until told.
                    if client.send(b"flood").is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
        })
        .collect();
    // The flood is under way and served: a probe of its own is answered
    // (sent again while the full queue drops it).
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
    probe.connect(server.addr()).expect("connect");
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 64];
    loop {
        assert!(
            Instant::now() < deadline,
            "the flooded server never answered"
        );
        probe.send(b"probe").expect("send");
        if matches!(probe.recv(&mut buf), Ok(5)) && &buf[..5] == b"probe" {
            break;
        }
    }
    // Traced, the server is much slower than the flooders: its queue
    // never empties, so it would not poll again. It stops after the
    // request under way (more may come between the attach and the
    // signal: tens, over a hundred when this thread is descheduled on a
    // loaded machine), not when it next finds the queue empty (thousands
    // later).
    let strace = Strace::attach(server.pid());
    server.signal(libc::SIGTERM);
    let (status, _stderr) = server.wait_exit(WAIT);
    let counts = strace.finish();
    assert!(counts.calls("sendto") <= 400, "{counts}");
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = flooders
        .into_iter()
        .map(|t| t.join().expect("flooder"))
        .sum();
    assert!(status.success(), "{status:?}");
    assert!(sent > 0);
}

/// The system call thread `tid` of process `pid` is in (from /proc).
/// The process's thread count (/proc/PID/status).
fn thread_count(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn current_syscall(pid: i32, tid: i32) -> Option<libc::c_long> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Sync mode at a single client: it waits for the next request in a
/// blocking recvfrom, as the C loop, not in poll; one recvfrom and one
/// sendto per request.
#[test]
fn sync_udp_one_client_waits_in_recvfrom() {
    let server = echo_server("udp", "sync", "127.0.0.1:0");
    let client = Client::udp(server.addr());
    let strace = Strace::attach(server.pid());
    let requests = 50;
    for i in 0..requests {
        // Each request finds the server waiting (its main thread serves).
        let deadline = Instant::now() + WAIT;
        while current_syscall(server.pid(), server.pid()) != Some(libc::SYS_recvfrom) {
            assert!(
                Instant::now() < deadline,
                "the server does not wait in recvfrom (system call {:?})",
                current_syscall(server.pid(), server.pid())
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let message = format!("request {i}");
        client.send(message.as_bytes());
        assert_eq!(client.recv(), message.into_bytes());
    }
    let counts = strace.finish();
    assert_eq!(counts.calls("poll"), 0, "{counts}");
    // Its default poll interval (500 ms) may end a receive or two.
    assert!(counts.calls("recvfrom") <= requests + 2, "{counts}");
    assert_eq!(counts.calls("sendto"), requests, "{counts}");
}

mod blocking_receive {
    //! The blocking receive, through the Rust API: shutdown, drain and
    //! close from another thread end a serve_forever blocked in recvfrom
    //! at once (its poll interval is 30 s), and the wake-up they send is
    //! never taken for a request.

    use super::{Client, WAIT};
    use socketserver::{
        Concurrency, Config, ErrorKind, Handler, Request, Result, Server, Transport,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::{Duration, Instant};

    /// Echoes each datagram and counts them; a datagram "hold" first
    /// reports itself and waits to be released.
    #[derive(Default)]
    struct Echo {
        handled: AtomicUsize,
        hold: Mutex<Option<(Sender<()>, Receiver<()>)>>,
    }

    impl Handler for Echo {
        fn handle(&self, request: &mut Request) -> Result<()> {
            self.handled.fetch_add(1, Ordering::SeqCst);
            let data = request.datagram_data().unwrap_or_default().to_vec();
            if data == b"hold" {
                if let Some((entered, release)) = &*self.hold.lock().unwrap() {
                    entered.send(()).unwrap();
                    release.recv_timeout(WAIT).unwrap();
                }
            }
            request.write(&data)
        }
    }

    fn start(transport: Transport, dir: &super::TempDir) -> (Arc<Server>, Arc<Echo>) {
        let mut config = Config::new(transport, Concurrency::Sync).unwrap();
        config.set_poll_interval(Duration::from_secs(30)).unwrap();
        let address = match transport {
            Transport::Udp => "127.0.0.1:0".to_string(),
            _ => dir.path().join("server.sock").to_str().unwrap().to_string(),
        };
        let echo = Arc::new(Echo::default());
        let server = Server::new(&config, &address, Box::new(Shared(echo.clone()))).unwrap();
        (server, echo)
    }

    struct Shared(Arc<Echo>);

    impl Handler for Shared {
        fn handle(&self, request: &mut Request) -> Result<()> {
            self.0.handle(request)
        }
    }

    /// A client of the server's transport, bound (a Unix one in `dir`).
    fn client(server: &Server, dir: &super::TempDir) -> Client {
        let address = server.address().unwrap();
        if address.contains('/') {
            Client::unix(&address, Some(&dir.path().join("client.sock")))
        } else {
            Client::udp(&address)
        }
    }

    fn round_trip(client: &Client, message: &[u8]) {
        client.send(message);
        assert_eq!(client.recv(), message);
    }

    /// Serves in a thread; returns once that thread is blocked in
    /// recvfrom (its current system call, from /proc).
    fn serve_until_blocked(server: &Arc<Server>) -> thread::JoinHandle<Result<()>> {
        let s = server.clone();
        let (tid_tx, tid_rx) = channel();
        let serving = thread::spawn(move || {
            // SAFETY: gettid(2) has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            s.serve_forever()
        });
        let tid = tid_rx.recv().unwrap();
        let deadline = Instant::now() + WAIT;
        while !in_recvfrom(tid) {
            assert!(
                Instant::now() < deadline,
                "serve_forever never blocked in recvfrom"
            );
            thread::sleep(Duration::from_millis(1));
        }
        serving
    }

    fn in_recvfrom(tid: libc::pid_t) -> bool {
        super::current_syscall(std::process::id() as i32, tid) == Some(libc::SYS_recvfrom)
    }

    /// serve_forever's thread ends within 10 s (not the 30 s poll
    /// interval).
    fn ends(serving: thread::JoinHandle<Result<()>>) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        while !serving.is_finished() {
            assert!(Instant::now() < deadline, "serve_forever was not woken");
            thread::sleep(Duration::from_millis(1));
        }
        serving.join().unwrap()
    }

    #[test]
    fn shutdown_drain_and_close_wake_it() {
        for transport in [Transport::Udp, Transport::UnixDatagram] {
            let dir = super::TempDir::new("perf-udp");
            let (server, echo) = start(transport, &dir);
            let client = client(&server, &dir);

            let serving = serve_until_blocked(&server);
            round_trip(&client, b"one");
            server.shutdown();
            ends(serving).unwrap();

            let serving = serve_until_blocked(&server);
            round_trip(&client, b"two");
            server.drain(Duration::from_secs(5));
            ends(serving).unwrap();
            assert_eq!(echo.handled.load(Ordering::SeqCst), 2, "{transport:?}");
            server.close().unwrap();

            let dir = super::TempDir::new("perf-udp");
            let (server, _) = start(transport, &dir);
            let serving = serve_until_blocked(&server);
            server.close().unwrap();
            assert_eq!(ends(serving).unwrap_err().kind(), ErrorKind::Closed);
        }
    }

    /// A shutdown while a request is handled leaves its wake-up queued:
    /// the next serve_forever drops it and serves the next datagram.
    #[test]
    fn a_leftover_wake_up_is_not_a_request() {
        for transport in [Transport::Udp, Transport::UnixDatagram] {
            let dir = super::TempDir::new("perf-udp");
            let (server, echo) = start(transport, &dir);
            let (entered_tx, entered) = channel();
            let (release, release_rx) = channel();
            *echo.hold.lock().unwrap() = Some((entered_tx, release_rx));
            let client = client(&server, &dir);

            let serving = serve_until_blocked(&server);
            client.send(b"hold");
            entered.recv_timeout(WAIT).unwrap();
            server.shutdown();
            release.send(()).unwrap();
            ends(serving).unwrap();

            let serving = serve_until_blocked(&server);
            assert_eq!(client.recv(), b"hold"); // held back until the release
            round_trip(&client, b"two");
            server.shutdown();
            ends(serving).unwrap();
            assert_eq!(echo.handled.load(Ordering::SeqCst), 2, "{transport:?}");
            server.close().unwrap();
        }
    }
}

/// What callgrind counted in the server while `datagrams` echoes went
/// through it: user-space instructions, and its call tree.
struct Profile {
    instructions: u64,
    datagrams: u64,
    tree: CallTree,
}

/// `echo_server --transport udp --mode MODE` under callgrind, instrumented
/// only while one client sends `datagrams` 64-byte datagrams, one at a
/// time, each echoed: counts that do not depend on the machine's load.
fn callgrind_profile(mode: &str, datagrams: u64) -> Profile {
    let callgrind = Callgrind::new();
    let mut cmd = callgrind.command(common::echo_server_program());
    cmd.args(common::echo_args("udp", mode, "127.0.0.1:0"));
    if mode == "event" {
        cmd.args(["--threads", "1"]);
    }
    let mut server = ExampleProcess::start(cmd, Duration::from_secs(60));
    let client = Client::udp(server.addr());
    // Warm up first (buffers grown, lazy state made): the counts are of
    // the steady state.
    let payload = [b'x'; 64];
    for _ in 0..20 {
        client.send(&payload);
        assert_eq!(client.recv(), payload);
    }
    callgrind.count(server.pid(), || {
        for _ in 0..datagrams {
            client.send(&payload);
            assert_eq!(client.recv(), payload);
        }
    });
    let (status, stderr) = server.stop(libc::SIGTERM, Duration::from_secs(60));
    assert!(status.success(), "echo_server under callgrind: {stderr}");
    Profile {
        instructions: callgrind.instructions(),
        datagrams,
        tree: callgrind.caller_tree(),
    }
}

impl Profile {
    /// Fails unless `function` (a callgrind call-tree name) was called at
    /// most `bound` times; `what` names those calls.
    fn assert_calls_at_most(&self, function: &str, bound: u64, what: &str) {
        let calls = self.tree.calls(function);
        assert!(
            calls <= bound,
            "{calls} {what} for {} datagrams (at most {bound})",
            self.datagrams
        );
    }
}

/// SS_SYNC over UDP allocates nothing per datagram once it runs: the
/// receive buffer, each request's state with its copy of the datagram and
/// its reply buffer are reused (crate::request::DatagramBuffers).
#[test]
fn sync_udp_allocates_nothing_and_reads_no_clock_per_datagram() {
    let p = callgrind_profile("sync", 500);
    p.assert_calls_at_most(":malloc [", p.datagrams / 10, "calls to malloc");
    // Nor does it read the clock per datagram (service_actions follows
    // each one anyway; the next idle-time call is timed only when idle).
    p.assert_calls_at_most(":clock_gettime", p.datagrams / 10, "clock_gettime calls");
}

/// User-space instructions per datagram that SS_SYNC over UDP costs the
/// server (callgrind; issue 12's instr case, one client here), bounded
/// with a margin of about 10 %: the request is made in place and its
/// buffers reused, not allocated and copied per datagram.
const SYNC_UDP_INSTRUCTIONS_PER_DATAGRAM: u64 = 1700;

#[test]
fn sync_udp_instructions_per_datagram_stay_bounded() {
    let p = callgrind_profile("sync", 500);
    let per = p.instructions / p.datagrams;
    // glibc's memcpy (its x86-64 variants all live in this file): five
    // copies per datagram are the data's own (the sender's address out of
    // recvfrom and into the request, the datagram into the request, out
    // to the handler, into the reply); the request itself moves without
    // one (a few words), and a read at the end of the data copies nothing.
    p.assert_calls_at_most(
        "memmove-vec-unaligned-erms.S:",
        5 * p.datagrams,
        "memcpy calls",
    );
    // Nor is each sender compared with the receive waker's address: only
    // an empty datagram can be the wake-up.
    p.assert_calls_at_most(":__memcmp", p.datagrams / 10, "memcmp calls");
    assert!(
        per <= SYNC_UDP_INSTRUCTIONS_PER_DATAGRAM,
        "{per} instructions per datagram (bound {SYNC_UDP_INSTRUCTIONS_PER_DATAGRAM})"
    );
}
