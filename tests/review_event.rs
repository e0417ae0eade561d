//! Regression tests from the review of the event loops (issue 7/8 work).
//! Rust tests: both need a Rust handler (a panic, or a handler whose
//! timing the test drives closely).
//!
//! - pipelined_requests_do_not_trip_the_request_deadline: a client that
//!   keeps one partial request in flight behind each complete one (a
//!   pipelining client whose bytes never end on a request boundary) was
//!   closed by the request deadline although every request completed
//!   quickly: the clock ran from the moment input became non-empty until
//!   it was empty again, not from the last progress.
//! - a_panic_in_on_open_leaves_no_connection_counted: a Rust handler
//!   panicking in on_open killed its loop with the new connection counted
//!   for ever (the connection was not yet in its slot, so the panicked
//!   loop's recovery could not find it).
//! - a_panic_in_on_close_leaves_no_connection_counted: likewise for a
//!   panicking on_close: the connection was out of its slot and still
//!   counted (released only after on_close returned), and its slot's
//!   generation was not advanced, so a connection of the next run of
//!   serve_forever got the same id.
//! - a_lingering_connection_frees_its_per_ip_place: the header says an
//!   SS_EVENT connection holds its max_connections_per_ip place until
//!   on_close, but a lingering one held it until the lingering ended (up
//!   to lingering_time): the client's next connection was refused.
//! - watching_a_reused_descriptor_number_watches_the_new_file: watch_fd on
//!   a number the connection already watched, but which the caller had
//!   closed and reused for another file, changed the old watch: the loop
//!   kept watching the old file (through its duplicate), and the new one's
//!   readiness never reached the callback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socketserver::event::Conn;
use socketserver::{
    Concurrency, Config, Error, EventHandler, Handler, Request, Result, Server, Transport,
};

/// Echoes complete lines; holds a partial line until its newline comes.
#[derive(Default)]
struct LineEcho {
    errors: AtomicUsize,
    opens: AtomicUsize,
    closes: AtomicUsize,
    panic_on_open: bool,
    panic_on_first_close: bool,
    ids: std::sync::Mutex<Vec<u64>>,
}

impl Handler for LineEcho {
    fn handle(&self, _request: &mut Request) -> Result<()> {
        unreachable!("event mode")
    }

    fn handle_error(&self, _request: Option<&mut Request>, _error: &Error) {
        self.errors.fetch_add(1, Ordering::SeqCst);
    }

    fn event_handler(&self) -> Option<&dyn EventHandler> {
        Some(self)
    }
}

impl EventHandler for LineEcho {
    fn on_open(&self, conn: &mut Conn) -> Result<()> {
        self.ids.lock().unwrap().push(conn.id());
        self.opens.fetch_add(1, Ordering::SeqCst);
        if self.panic_on_open {
            panic!("a bug in on_open");
        }
        Ok(())
    }

    fn on_data(&self, conn: &mut Conn, data: &[u8]) -> Result<usize> {
        let Some(end) = data.iter().rposition(|&b| b == b'\n') else {
            return Ok(0);
        };
        conn.write(&data[..=end])?;
        Ok(end + 1)
    }

    fn on_close(&self, _conn: &mut Conn) {
        let before = self.closes.fetch_add(1, Ordering::SeqCst);
        if self.panic_on_first_close && before == 0 {
            panic!("a bug in on_close");
        }
    }
}

struct Shared(Arc<LineEcho>);

impl Handler for Shared {
    fn handle(&self, r: &mut Request) -> Result<()> {
        self.0.handle(r)
    }
    fn handle_error(&self, r: Option<&mut Request>, e: &Error) {
        self.0.handle_error(r, e)
    }
    fn event_handler(&self) -> Option<&dyn EventHandler> {
        Some(self)
    }
}

impl EventHandler for Shared {
    fn on_open(&self, c: &mut Conn) -> Result<()> {
        self.0.on_open(c)
    }
    fn on_data(&self, c: &mut Conn, d: &[u8]) -> Result<usize> {
        self.0.on_data(c, d)
    }
    fn on_close(&self, c: &mut Conn) {
        self.0.on_close(c)
    }
}

fn start(
    config: &Config,
    handler: &Arc<LineEcho>,
) -> (Arc<Server>, std::thread::JoinHandle<Result<()>>, String) {
    let server = Server::new(config, "127.0.0.1:0", Box::new(Shared(handler.clone()))).unwrap();
    let serving = {
        let server = server.clone();
        std::thread::spawn(move || server.serve_forever())
    };
    let addr = format!("127.0.0.1:{}", server.port().unwrap());
    (server, serving, addr)
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn pipelined_requests_do_not_trip_the_request_deadline() {
    const DEADLINE: Duration = Duration::from_millis(200);
    let mut config = Config::new(Transport::Tcp, Concurrency::Event).unwrap();
    config.set_threads(1).unwrap();
    config.set_request_deadline(Some(DEADLINE)).unwrap();
    config.set_poll_interval(Duration::from_millis(50)).unwrap();
    let handler = Arc::new(LineEcho::default());
    let (server, serving, addr) = start(&config, &handler);

    let mut client = TcpStream::connect(&addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Each write completes the previous request and starts the next, so
    // the server always holds a partial one; each request is answered
    // within a few ms. Kept up for several deadlines.
    client.write_all(b"r").unwrap();
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < DEADLINE * 4 {
        client.write_all(b"\nr").unwrap();
        let mut line = [0u8; 2];
        client
            .read_exact(&mut line)
            .unwrap_or_else(|e| panic!("request {answered}: no answer ({e})"));
        assert_eq!(&line, b"r\n");
        answered += 1;
        // Pace the client (not ordering): each request stays well within
        // the deadline, the run spans several.
        std::thread::sleep(DEADLINE / 10);
    }
    assert_eq!(handler.errors.load(Ordering::SeqCst), 0);
    assert_eq!(handler.closes.load(Ordering::SeqCst), 0);

    // A partial request that makes no progress is still cut off.
    client.write_all(b"partial").unwrap();
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    wait_until("the stalled request's timeout", || {
        handler.errors.load(Ordering::SeqCst) == 1
    });

    server.shutdown();
    serving.join().unwrap().unwrap();
    server.close().unwrap();
}

#[test]
fn a_panic_in_on_open_leaves_no_connection_counted() {
    let mut config = Config::new(Transport::Tcp, Concurrency::Event).unwrap();
    config.set_threads(1).unwrap();
    config.set_poll_interval(Duration::from_millis(50)).unwrap();
    let handler = Arc::new(LineEcho {
        panic_on_open: true,
        ..LineEcho::default()
    });
    let (server, serving, addr) = start(&config, &handler);

    let mut client = TcpStream::connect(&addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The loop dies; the connection ends.
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    assert_eq!(handler.opens.load(Ordering::SeqCst), 1);
    wait_until("the connection to leave the count", || {
        server.event_loops().unwrap().connections() == 0
    });
    // Like an on_open that fails, a panicking one is followed by on_close.
    assert_eq!(handler.closes.load(Ordering::SeqCst), 1);

    server.shutdown();
    serving.join().unwrap().unwrap();
    server.close().unwrap();
}

#[test]
fn a_panic_in_on_close_leaves_no_connection_counted() {
    let mut config = Config::new(Transport::Tcp, Concurrency::Event).unwrap();
    config.set_threads(1).unwrap();
    config.set_poll_interval(Duration::from_millis(50)).unwrap();
    let handler = Arc::new(LineEcho {
        panic_on_first_close: true,
        ..LineEcho::default()
    });
    let (server, serving, addr) = start(&config, &handler);

    // `first` takes the loop's first slot, which the next run reuses.
    let first = TcpStream::connect(&addr).unwrap();
    wait_until("the first connection", || {
        handler.opens.load(Ordering::SeqCst) == 1
    });
    let mut other = TcpStream::connect(&addr).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Both are open (the echo answers on `other` once both were taken).
    other.write_all(b"x\n").unwrap();
    let mut line = [0u8; 2];
    other.read_exact(&mut line).unwrap();
    wait_until("both connections", || {
        handler.opens.load(Ordering::SeqCst) == 2
    });
    // Its on_close panics and kills the loop; the recovery closes `other`.
    drop(first);
    let mut rest = Vec::new();
    let _ = other.read_to_end(&mut rest);
    wait_until("on_close for both", || {
        handler.closes.load(Ordering::SeqCst) == 2
    });
    wait_until("both connections to leave the count", || {
        server.event_loops().unwrap().connections() == 0
    });
    server.shutdown();
    serving.join().unwrap().unwrap();

    // The next run's connections get ids never given before.
    let serving = {
        let server = server.clone();
        std::thread::spawn(move || server.serve_forever())
    };
    let mut again = TcpStream::connect(&addr).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    again.write_all(b"y\n").unwrap();
    again.read_exact(&mut line).unwrap();
    let ids = handler.ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 3);
    assert!(!ids[..2].contains(&ids[2]), "id repeated: {ids:?}");

    server.shutdown();
    serving.join().unwrap().unwrap();
    server.close().unwrap();
}

#[test]
fn a_lingering_connection_frees_its_per_ip_place() {
    let mut config = Config::new(Transport::Tcp, Concurrency::Event).unwrap();
    config.set_threads(1).unwrap();
    config.set_max_connections_per_ip(1).unwrap();
    config
        .set_idle_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    config.set_poll_interval(Duration::from_millis(50)).unwrap();
    let handler = Arc::new(LineEcho::default());
    let (server, serving, addr) = start(&config, &handler);

    // A partial request, then silence: the idle timeout closes it while
    // its input has not ended, so it lingers (on_close runs at once).
    let mut first = TcpStream::connect(&addr).unwrap();
    first.write_all(b"partial").unwrap();
    wait_until("on_close of the idle connection", || {
        handler.closes.load(Ordering::SeqCst) == 1
    });
    // The client has not closed: the server is still lingering on it.
    let mut next = TcpStream::connect(&addr).unwrap();
    next.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    next.write_all(b"x\n").unwrap();
    let mut line = [0u8; 2];
    next.read_exact(&mut line)
        .expect("the next connection from the same address is served");
    assert_eq!(&line, b"x\n");

    drop((first, next));
    server.shutdown();
    serving.join().unwrap().unwrap();
    server.close().unwrap();
}

/// Watches: on_open watches pipe A's read end as descriptor `n`, then
/// (without unwatching) makes `n` another file, pipe B's read end
/// (dup2: close and reuse in one step), and watches `n` again. The second
/// watch_fd found the first watch by its number alone and only changed its
/// events and callback: the loop kept watching pipe A through its
/// duplicate, and B's data never reached the callback.
struct ReusedWatch {
    /// The write end of pipe B, kept for the test to write into.
    writer: std::sync::Mutex<Option<std::os::fd::OwnedFd>>,
    /// Pipe A's write end, kept open (A never hangs up).
    keep: std::sync::Mutex<Vec<std::os::fd::OwnedFd>>,
}

impl Handler for ReusedWatch {
    fn handle(&self, _request: &mut Request) -> Result<()> {
        unreachable!("event mode")
    }
    fn event_handler(&self) -> Option<&dyn EventHandler> {
        Some(self)
    }
}

fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors, which become ours.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: just created, owned by nobody else.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

impl EventHandler for ReusedWatch {
    fn on_open(&self, conn: &mut Conn) -> Result<()> {
        use socketserver::event::WATCH_READ;
        use std::os::fd::{AsFd, AsRawFd};
        let (a_read, a_write) = pipe();
        let (b_read, b_write) = pipe();
        conn.watch_fd(
            a_read.as_fd(),
            WATCH_READ,
            Box::new(|conn, _, _| conn.write(b"pipe A\n")),
        )?;
        // SAFETY: both descriptors are ours; dup2 closes a_read's old file
        // and makes its number refer to pipe B's read end.
        assert!(unsafe { libc::dup2(b_read.as_raw_fd(), a_read.as_raw_fd()) } >= 0);
        conn.watch_fd(
            a_read.as_fd(),
            WATCH_READ,
            Box::new(|conn, fd, _| {
                let mut byte = [0u8; 1];
                // SAFETY: reads one byte into a local buffer.
                unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
                conn.unwatch_fd(fd)?;
                conn.write(b"pipe B\n")
            }),
        )?;
        self.keep.lock().unwrap().extend([a_read, a_write, b_read]);
        *self.writer.lock().unwrap() = Some(b_write);
        Ok(())
    }
    fn on_data(&self, _conn: &mut Conn, data: &[u8]) -> Result<usize> {
        Ok(data.len())
    }
}

#[test]
fn watching_a_reused_descriptor_number_watches_the_new_file() {
    use std::os::fd::AsRawFd;
    let mut config = Config::new(Transport::Tcp, Concurrency::Event).unwrap();
    config.set_threads(1).unwrap();
    let handler = Arc::new(ReusedWatch {
        writer: Default::default(),
        keep: Default::default(),
    });
    struct H(Arc<ReusedWatch>);
    impl Handler for H {
        fn handle(&self, r: &mut Request) -> Result<()> {
            self.0.handle(r)
        }
        fn event_handler(&self) -> Option<&dyn EventHandler> {
            Some(&*self.0)
        }
    }
    let server = Server::new(&config, "127.0.0.1:0", Box::new(H(handler.clone()))).unwrap();
    let serving = {
        let server = server.clone();
        std::thread::spawn(move || server.serve_forever())
    };
    let mut client = TcpStream::connect(("127.0.0.1", server.port().unwrap())).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    wait_until("on_open", || handler.writer.lock().unwrap().is_some());
    let writer = handler.writer.lock().unwrap().take().unwrap();
    // SAFETY: one byte from a local buffer into our pipe's write end.
    assert_eq!(
        unsafe { libc::write(writer.as_raw_fd(), b"x".as_ptr().cast(), 1) },
        1
    );
    let mut line = [0u8; 7];
    let got = client.read_exact(&mut line);
    server.shutdown();
    serving.join().unwrap().unwrap();
    got.expect("pipe B's data reached the second watch's callback");
    assert_eq!(&line, b"pipe B\n");
}
