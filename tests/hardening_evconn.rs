//! Regression tests for the life cycle of event-mode connections (issue
//! 7): one C sub-test per defect in tests/c/hardening_evconn.c, each run in
//! its own process with a hard timeout and a fresh temporary directory
//! ($SS_TEST_TMPDIR). The C side checks that a sub-test left no descriptor,
//! thread or child process behind; this side checks that it left no file in
//! its directory and no process running in its process group.
//!
//! - eof_hup: a connection held by on_eof whose peer closes or resets ends
//!   (on_close once, count drops) and the loop does not spin.
//! - held_input: held input is presented again after a posted job ran.
//! - fork_eof: close reaches the peer while a forked child holds the fd.
//! - linger: a large response then close with unread client input arrives
//!   whole (lingering close).
//! - drain: a closing connection whose peer never reads ends after
//!   lingering_timeout; serve_forever returns promptly after shutdown.
//! - deadline: the request deadline closes a dribbling client only.
//!
//! See each sub-test's comment in the C file for the old behaviour.
//!
//! And one Rust test, `a_panicked_loop_releases_its_connections_and_jobs`:
//! a Rust handler can panic on a loop thread (a C callback cannot), which
//! used to lose that loop's connections (no on_close, still counted) and
//! its posted jobs.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use socketserver::event::Conn;
use socketserver::{
    Concurrency, Config, EventHandler, Handler, Request, Result, Server, Transport,
};

// One #[test] per C sub-test, and `every_c_subtest_is_run`.
common::c_tests! {
    crate::common::run_c_subtest;
    hardening_evconn {
        eof_hup,
        held_input,
        fork_eof,
        linger,
        drain,
        deadline,
    }
}

#[derive(Default)]
struct Panicky {
    server: OnceLock<Arc<Server>>,
    opens: AtomicUsize,
    closes: AtomicUsize,
    quiet_conn: AtomicU64,
    /// on_data calls for the quiet connection (its id may be 0).
    quiet_data: AtomicUsize,
    jobs_without_conn: Arc<AtomicUsize>,
}

impl Handler for Panicky {
    fn handle(&self, _request: &mut Request) -> Result<()> {
        unreachable!("event mode")
    }

    fn event_handler(&self) -> Option<&dyn EventHandler> {
        Some(self)
    }
}

impl EventHandler for Panicky {
    fn on_open(&self, _conn: &mut Conn) -> Result<()> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn on_data(&self, conn: &mut Conn, data: &[u8]) -> Result<usize> {
        if data == b"panic" {
            // A job waiting in the mailbox when the loop dies.
            let count = self.jobs_without_conn.clone();
            let job = Box::new(move |conn: Option<&mut Conn>| {
                if conn.is_none() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            });
            let server = self.server.get().expect("server set");
            server
                .event_loops()
                .expect("event mode")
                .post(self.quiet_conn.load(Ordering::SeqCst), job)
                .expect("post");
            panic!("a bug in the handler");
        }
        self.quiet_conn.store(conn.id(), Ordering::SeqCst);
        self.quiet_data.fetch_add(1, Ordering::SeqCst);
        Ok(data.len())
    }

    fn on_close(&self, _conn: &mut Conn) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_panicked_loop_releases_its_connections_and_jobs() {
    let mut config = Config::new(Transport::Tcp, Concurrency::Event).unwrap();
    config.set_threads(1).unwrap();
    config.set_poll_interval(Duration::from_millis(50)).unwrap();
    let handler = Arc::new(Panicky::default());
    struct Shared(Arc<Panicky>);
    impl Handler for Shared {
        fn handle(&self, r: &mut Request) -> Result<()> {
            self.0.handle(r)
        }
        fn handle_error(&self, _r: Option<&mut Request>, _e: &socketserver::Error) {}

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
    let server = Server::new(&config, "127.0.0.1:0", Box::new(Shared(handler.clone()))).unwrap();
    handler.server.set(server.clone()).ok().unwrap();
    let serving = {
        let server = server.clone();
        std::thread::spawn(move || server.serve_forever())
    };
    let addr = format!("127.0.0.1:{}", server.port().unwrap());
    let mut quiet = TcpStream::connect(&addr).unwrap();
    quiet.write_all(b"hello").unwrap();
    wait_until("the quiet connection's data", || {
        handler.quiet_data.load(Ordering::SeqCst) == 1
    });
    let mut bad = TcpStream::connect(&addr).unwrap();
    bad.write_all(b"panic").unwrap();

    wait_until("on_close for both connections of the panicked loop", || {
        handler.closes.load(Ordering::SeqCst) == 2
    });
    wait_until("the count to drop", || {
        server.event_loops().unwrap().connections() == 0
    });
    wait_until("the posted job to run without its connection", || {
        handler.jobs_without_conn.load(Ordering::SeqCst) == 1
    });
    server.shutdown();
    serving.join().unwrap().unwrap();
    assert_eq!(handler.closes.load(Ordering::SeqCst), 2);
    server.close().unwrap();
    drop((quiet, bad));
}
