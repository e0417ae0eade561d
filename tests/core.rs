//! Tests of the safe Rust core, without the C layer: a Rust `Handler`
//! served over real loopback sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socketserver::event::Conn;
use socketserver::{
    Concurrency, Config, ErrorKind, EventHandler, Handler, Request, Result, Server, Transport,
};

/// Echoes one line per request and records what the server did.
#[derive(Default)]
struct LineEcho {
    log: Mutex<Vec<String>>,
    errors: AtomicUsize,
    /// Event mode: how many bytes the last on_data call was presented.
    presented: AtomicUsize,
}

impl Handler for LineEcho {
    fn setup(&self, _request: &mut Request) -> Result<()> {
        self.log.lock().unwrap().push("setup".into());
        Ok(())
    }

    fn handle(&self, request: &mut Request) -> Result<()> {
        let mut line = [0u8; 256];
        let n = request.readline(&mut line)?;
        request.write(&line[..n])
    }

    fn finish(&self, _request: &mut Request) -> Result<()> {
        self.log.lock().unwrap().push("finish".into());
        Ok(())
    }

    fn handle_error(&self, _request: Option<&mut Request>, _error: &socketserver::Error) {
        self.errors.fetch_add(1, Ordering::SeqCst);
    }

    fn event_handler(&self) -> Option<&dyn EventHandler> {
        Some(self)
    }
}

impl EventHandler for LineEcho {
    fn on_data(&self, conn: &mut Conn, data: &[u8]) -> Result<usize> {
        self.presented.store(data.len(), Ordering::SeqCst);
        // Complete lines only: a partial one waits for more bytes.
        match data.iter().rposition(|&b| b == b'\n') {
            Some(end) => {
                conn.write(&data[..=end])?;
                Ok(end + 1)
            }
            None => Ok(0),
        }
    }

    fn on_datagram(&self, request: &mut Request) -> Result<()> {
        let data = request.datagram_data().unwrap_or_default().to_vec();
        request.reply(&data)
    }
}

fn config(transport: Transport, mode: Concurrency) -> Config {
    let mut c = Config::new(transport, mode).unwrap();
    c.set_poll_interval(Duration::from_millis(10)).unwrap();
    c
}

fn serve_in_thread(server: &Arc<Server>) -> thread::JoinHandle<Result<()>> {
    let s = server.clone();
    thread::spawn(move || s.serve_forever())
}

/// As [`serve_in_thread`], and returns once serve_forever is blocked in its
/// wait for a request. Nothing the server calls marks that moment (the
/// hooks run after a wait, not before), so the serving thread's state is
/// read from /proc: its current system call is poll (bounded wait).
fn serve_in_thread_until_waiting(server: &Arc<Server>) -> thread::JoinHandle<Result<()>> {
    let s = server.clone();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let serving = thread::spawn(move || {
        // SAFETY: gettid(2) has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        s.serve_forever()
    });
    let tid = tid_rx.recv().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !blocked_in_poll(tid) {
        assert!(
            Instant::now() < deadline,
            "serve_forever never blocked in poll (thread {tid})"
        );
        thread::sleep(Duration::from_millis(1));
    }
    serving
}

/// Whether thread `tid` of this process is blocked in poll(2) or ppoll(2)
/// (/proc/self/task/<tid>/syscall starts with the system call's number).
fn blocked_in_poll(tid: libc::pid_t) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
        return false;
    };
    let Some(nr) = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<libc::c_long>().ok())
    else {
        return false;
    };
    #[cfg(target_arch = "x86_64")]
    if nr == libc::SYS_poll {
        return true;
    }
    nr == libc::SYS_ppoll
}

fn tcp_round_trip(address: &str, message: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(message).unwrap();
    let mut reply = Vec::new();
    BufReader::new(stream)
        .read_until(b'\n', &mut reply)
        .unwrap();
    reply
}

#[test]
fn every_stream_mode_echoes_a_line_over_tcp() {
    for mode in [
        Concurrency::Sync,
        Concurrency::Threading,
        Concurrency::Forking,
        Concurrency::ThreadPool,
        Concurrency::Event,
    ] {
        let handler = Arc::new(LineEcho::default());
        let server = Server::new(
            &config(Transport::Tcp, mode),
            "127.0.0.1:0",
            Box::new(Forward(handler.clone())),
        )
        .unwrap();
        let address = server.address().unwrap();
        let serving = serve_in_thread(&server);
        for _ in 0..3 {
            assert_eq!(
                tcp_round_trip(&address, b"hello world\n"),
                b"hello world\n",
                "{mode:?}"
            );
        }
        server.shutdown();
        serving.join().unwrap().unwrap();
        server.close().unwrap();
        assert_eq!(server.fileno(), -1);
        assert_eq!(server.live_workers().unwrap(), (0, 0), "{mode:?}");
        if matches!(
            mode,
            Concurrency::Sync | Concurrency::Threading | Concurrency::ThreadPool
        ) {
            // Forking runs hooks in the children; event mode has no setup.
            let log = handler.log.lock().unwrap();
            assert_eq!(log.len(), 6, "{mode:?}: {log:?}");
        }
        assert_eq!(handler.errors.load(Ordering::SeqCst), 0, "{mode:?}");
    }
}

/// Lets a test keep a reference to the handler it gives the server.
struct Forward(Arc<LineEcho>);

impl Handler for Forward {
    fn setup(&self, r: &mut Request) -> Result<()> {
        self.0.setup(r)
    }
    fn handle(&self, r: &mut Request) -> Result<()> {
        self.0.handle(r)
    }
    fn finish(&self, r: &mut Request) -> Result<()> {
        self.0.finish(r)
    }
    fn handle_error(&self, r: Option<&mut Request>, e: &socketserver::Error) {
        self.0.handle_error(r, e)
    }

    fn event_handler(&self) -> Option<&dyn EventHandler> {
        Some(self)
    }
}

impl EventHandler for Forward {
    fn on_data(&self, c: &mut Conn, d: &[u8]) -> Result<usize> {
        self.0.on_data(c, d)
    }
    fn on_datagram(&self, r: &mut Request) -> Result<()> {
        self.0.on_datagram(r)
    }
}

#[test]
fn udp_datagrams_are_answered_in_sync_and_event_mode() {
    for mode in [Concurrency::Sync, Concurrency::Event] {
        let server = Server::new(
            &config(Transport::Udp, mode),
            "127.0.0.1:0",
            Box::new(LineEcho::default()),
        )
        .unwrap();
        let address = server.address().unwrap();
        let serving = serve_in_thread(&server);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.send_to(b"ping\n", &address).unwrap();
        let mut buf = [0u8; 64];
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping\n", "{mode:?}");
        server.shutdown();
        serving.join().unwrap().unwrap();
        server.close().unwrap();
    }
}

#[test]
fn event_mode_keeps_partial_input_until_the_line_is_complete() {
    let echo = Arc::new(LineEcho::default());
    let server = Server::new(
        &config(Transport::Tcp, Concurrency::Event),
        "127.0.0.1:0",
        Box::new(Forward(echo.clone())),
    )
    .unwrap();
    let address = server.address().unwrap();
    let serving = serve_in_thread(&server);
    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let line = b"one byte at a time\n";
    for (sent, byte) in line.iter().enumerate().map(|(i, b)| (i + 1, b)) {
        stream.write_all(&[*byte]).unwrap();
        if sent == line.len() {
            break;
        }
        // Each byte reaches on_data on its own, with the partial line kept
        // before it (polled: the callback's counter is the only sign).
        let deadline = Instant::now() + Duration::from_secs(10);
        while echo.presented.load(Ordering::SeqCst) != sent {
            assert!(
                Instant::now() < deadline,
                "on_data never saw the first {sent} bytes together"
            );
            thread::sleep(Duration::from_millis(1));
        }
    }
    let mut reply = [0u8; 19];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"one byte at a time\n");
    drop(stream);
    server.shutdown();
    serving.join().unwrap().unwrap();
    server.close().unwrap();
    assert_eq!(server.event_loops().unwrap().connections(), 0);
}

#[test]
fn shutdown_wakes_the_loop_at_once_and_close_stops_it_from_another_thread() {
    let mut c = config(Transport::Tcp, Concurrency::Sync);
    c.set_poll_interval(Duration::from_secs(30)).unwrap();
    let server = Server::new(&c, "127.0.0.1:0", Box::new(LineEcho::default())).unwrap();
    let serving = serve_in_thread_until_waiting(&server);
    let asked = Instant::now();
    server.shutdown();
    serving.join().unwrap().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "shutdown waited for the poll interval"
    );

    let serving = serve_in_thread_until_waiting(&server);
    server.close().unwrap();
    let err = serving.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert_eq!(
        server.serve_forever().unwrap_err().kind(),
        ErrorKind::Closed
    );
}

#[test]
fn a_shutdown_before_serving_is_consumed_by_the_next_loop() {
    let mut c = config(Transport::Tcp, Concurrency::Sync);
    c.set_timeout(Some(Duration::from_millis(20)));
    let server = Server::new(&c, "127.0.0.1:0", Box::new(LineEcho::default())).unwrap();
    server.shutdown();
    server.serve_forever().unwrap();
    // Consumed: the next handle_request waits for its timeout as usual.
    assert_eq!(
        server.handle_request().unwrap_err().kind(),
        ErrorKind::Timeout
    );
    server.shutdown();
    assert_eq!(
        server.handle_request().unwrap_err().kind(),
        ErrorKind::ShutDown
    );
}

#[test]
fn bind_and_activate_can_be_separate_steps() {
    let mut c = config(Transport::Tcp, Concurrency::Sync);
    c.set_bind_and_activate(false);
    let server = Server::new(&c, "127.0.0.1:0", Box::new(LineEcho::default())).unwrap();
    assert_eq!(server.address().unwrap_err().kind(), ErrorKind::WrongState);
    assert_eq!(server.activate().unwrap_err().kind(), ErrorKind::WrongState);
    server.bind().unwrap();
    assert_eq!(
        server.serve_forever().unwrap_err().kind(),
        ErrorKind::WrongState
    );
    server.activate().unwrap();
    assert_ne!(server.port().unwrap(), 0);
    assert_eq!(server.bind().unwrap_err().kind(), ErrorKind::WrongState);
}

#[test]
fn unix_socket_file_is_removed_on_close_but_other_files_are_not() {
    let dir = std::env::temp_dir().join(format!("ss-core-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let text = path.to_str().unwrap();
    let server = Server::new(
        &config(Transport::UnixStream, Concurrency::Sync),
        text,
        Box::new(LineEcho::default()),
    )
    .unwrap();
    assert!(path.exists());
    server.close().unwrap();
    assert!(!path.exists());

    std::fs::write(&path, b"keep me").unwrap();
    let err = Server::new(
        &config(Transport::UnixStream, Concurrency::Sync),
        text,
        Box::new(LineEcho::default()),
    )
    .err()
    .unwrap();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Calls close from inside an event callback and records what it returned.
#[derive(Default)]
struct CloseState {
    server: Mutex<Option<Arc<Server>>>,
    result: Mutex<Option<ErrorKind>>,
}

struct CloseFromCallback(Arc<CloseState>);

impl Handler for CloseFromCallback {
    fn handle(&self, _request: &mut Request) -> Result<()> {
        Ok(())
    }

    fn event_handler(&self) -> Option<&dyn EventHandler> {
        Some(self)
    }
}

impl EventHandler for CloseFromCallback {
    fn on_data(&self, conn: &mut Conn, data: &[u8]) -> Result<usize> {
        let server = self.0.server.lock().unwrap().clone().unwrap();
        let kind = server.close().err().map(|e| e.kind());
        *self.0.result.lock().unwrap() = kind;
        conn.write(data)?;
        Ok(data.len())
    }
}

#[test]
fn close_from_an_event_callback_is_refused_instead_of_deadlocking() {
    let handler = Arc::new(CloseState::default());
    let server = Server::new(
        &config(Transport::Tcp, Concurrency::Event),
        "127.0.0.1:0",
        Box::new(CloseFromCallback(handler.clone())),
    )
    .unwrap();
    *handler.server.lock().unwrap() = Some(server.clone());
    let serving = serve_in_thread(&server);
    assert_eq!(tcp_round_trip(&server.address().unwrap(), b"x\n"), b"x\n");
    assert_eq!(*handler.result.lock().unwrap(), Some(ErrorKind::WrongState));
    server.shutdown();
    serving.join().unwrap().unwrap();
    server.close().unwrap();
    handler.server.lock().unwrap().take();
}

/// A blocking-only handler (no event callbacks) is refused for event mode
/// when the server is made, not at the first connection.
#[test]
fn event_mode_needs_a_handler_with_event_callbacks() {
    struct BlockingOnly;
    impl Handler for BlockingOnly {
        fn handle(&self, _request: &mut Request) -> Result<()> {
            Ok(())
        }
    }
    let err = Server::new(
        &config(Transport::Tcp, Concurrency::Event),
        "127.0.0.1:0",
        Box::new(BlockingOnly),
    )
    .err()
    .expect("refused");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

/// A job posted to a connection that is gone runs with None; if it
/// panics, the panic is reported through handle_error like any other
/// caught panic (it used to be dropped silently).
#[test]
fn a_panicking_job_for_a_gone_connection_is_reported() {
    let handler = Arc::new(LineEcho::default());
    let mut c = config(Transport::Tcp, Concurrency::Event);
    c.set_threads(1).unwrap();
    let server = Server::new(&c, "127.0.0.1:0", Box::new(Forward(handler.clone()))).unwrap();
    let serving = serve_in_thread(&server);
    let loops = server.event_loops().unwrap();
    // No connection ever opened: id 0 names no live connection. Posting
    // fails until the loops are running.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let job = Box::new(|conn: Option<&mut Conn>| {
            assert!(conn.is_none());
            panic!("a bug in a posted job");
        });
        if loops.post(0, job).is_ok() {
            break;
        }
        assert!(Instant::now() < until, "the loops never started");
        thread::sleep(Duration::from_millis(2));
    }
    while handler.errors.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < until, "the job's panic was not reported");
        thread::sleep(Duration::from_millis(2));
    }
    server.shutdown();
    serving.join().unwrap().unwrap();
    server.close().unwrap();
    assert_eq!(handler.errors.load(Ordering::SeqCst), 1);
}
