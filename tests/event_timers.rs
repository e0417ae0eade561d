//! Event-mode timers (issue 9 §1): connection timers and loop timers over
//! real sockets, one C sub-test per process in tests/c/event_timers.c (see
//! each sub-test's comment there), and a Rust handler's timer callback that
//! panics.
//!
//! - order: timers fire once, by deadline then by the order set, never
//!   before their delay and within a bounded slack; delay 0 runs after the
//!   callback that set it; callbacks write to the connection.
//! - cancel_reset: cancel, reset, twice, id 0; a callback cancelling a
//!   timer due at the same moment.
//! - close_from_timer: a timer that writes and closes; the connection's
//!   other timer never runs; calls after close and in on_close.
//! - cancelled_at_close: timers pending when the peer closes or the server
//!   stops never run.
//! - many: 10,000 timers across 1,000 connections on 2 loops, each once
//!   and in order, with the loops asleep while they are pending.
//! - loop_timers, loop_timer_shutdown, loop_timer_skips: periodic on every
//!   loop, never early, stopped at shutdown even while a loop drains, a
//!   timer that shuts the server down, missed periods skipped.
//! - hostile: NULL, huge delays, another connection's id, calls off the
//!   loop thread, config errors.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socketserver::event::Conn;
use socketserver::{
    Concurrency, Config, Error, EventHandler, Handler, Request, Result, Server, Transport,
};

common::c_tests! {
    crate::common::run_c_subtest;
    event_timers {
        order,
        cancel_reset,
        close_from_timer,
        cancelled_at_close,
        many,
        loop_timers,
        loop_timer_shutdown,
        loop_timer_skips,
        hostile,
    }
}

/// What the handler saw, shared with the test.
#[derive(Default)]
struct Seen {
    panics_reported: AtomicUsize,
    loop_ticks: AtomicUsize,
}

/// On each byte: a timer that panics, then one that answers.
struct PanickyTimers(Arc<Seen>);

impl Handler for PanickyTimers {
    fn handle(&self, _request: &mut Request) -> Result<()> {
        unreachable!("event mode")
    }

    fn handle_error(&self, _request: Option<&mut Request>, error: &Error) {
        assert!(
            error.message().contains("timer callback panicked"),
            "unexpected handle_error: {error}"
        );
        self.0.panics_reported.fetch_add(1, Ordering::SeqCst);
    }

    fn event_handler(&self) -> Option<&dyn EventHandler> {
        Some(self)
    }
}

impl EventHandler for PanickyTimers {
    fn on_data(&self, conn: &mut Conn, data: &[u8]) -> Result<usize> {
        conn.set_timer(0, |_, _| panic!("timer callback panicked"))?;
        conn.set_timer(5, |conn, _| {
            conn.write(b"after\n").expect("write");
        })?;
        Ok(data.len())
    }
}

/// A Rust timer callback that panics is reported (handle_error) and the
/// loop, the connection and its other timers carry on; a loop timer runs.
#[test]
fn a_panicking_timer_is_reported_and_the_loop_lives_on() {
    let seen = Arc::new(Seen::default());
    let mut config = Config::new(Transport::Tcp, Concurrency::Event).unwrap();
    config.set_threads(1).unwrap();
    let ticks = seen.clone();
    config
        .add_loop_timer(
            5,
            Arc::new(move |_server: &Server, index: usize| {
                assert_eq!(index, 0);
                ticks.loop_ticks.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
    let handler = Box::new(PanickyTimers(seen.clone()));
    let server = Server::new(&config, "127.0.0.1:0", handler).unwrap();
    let serving = {
        let server = server.clone();
        std::thread::spawn(move || server.serve_forever())
    };
    let mut client = TcpStream::connect(server.address().unwrap()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for _ in 0..3 {
        client.write_all(b"x").unwrap();
        let mut line = [0u8; 6];
        client.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"after\n");
    }
    assert_eq!(seen.panics_reported.load(Ordering::SeqCst), 3);
    assert!(seen.loop_ticks.load(Ordering::SeqCst) > 0);
    server.shutdown();
    serving.join().unwrap().unwrap();
    server.close().unwrap();
}
