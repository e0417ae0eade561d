//! Review of the accept-first / batched reaping change: in SS_THREADING,
//! fork hand-offs run on handler threads. ChildTracker::fork counted
//! children that had exited but were not reaped yet against max_children,
//! so a hand-off was refused ("max_children ... already run") for a zombie
//! although no child ran (under churn: 1-16 refusals per 2,000
//! connections once reaping was batched). A fork at the cap now reaps
//! first, and only SS_FORKING's stream loop batches its reaps.
//!
//! Made deterministic here: max_children 1, two connections; the first
//! one's child exits (a zombie, seen in /proc) after the serve loop's last
//! reap, and only then does the second handler hand off.

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socketserver::request::HandOffTarget;
use socketserver::{
    Concurrency, Config, Error, ErrorKind, Handler, Request, Result, Server, Transport,
};

const WAIT: Duration = Duration::from_secs(10);

struct ForkGated {
    /// The second client's address ("" until the test knows it): its
    /// handler waits for `open`, the other hands off at once.
    gated: Arc<std::sync::Mutex<String>>,
    open: Arc<AtomicBool>,
    turns: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let end = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

impl Handler for ForkGated {
    fn handle(&self, request: &mut Request) -> Result<()> {
        let gated = self.gated.clone();
        wait_for("the second client's address", || {
            !gated.lock().unwrap().is_empty()
        });
        if *self.gated.lock().unwrap() == request.client_address() {
            let open = self.open.clone();
            wait_for("the gate", move || open.load(Ordering::SeqCst));
        }
        request.hand_off(
            HandOffTarget::Fork,
            Box::new(|r: &mut Request| {
                // The child's pid, for the test to see it exit.
                r.write(format!("{}\n", std::process::id()).as_bytes())?;
                r.flush()
            }),
        )
    }

    fn service_actions(&self, _server: &Server) {
        self.turns.fetch_add(1, Ordering::SeqCst);
    }

    fn handle_error(&self, _request: Option<&mut Request>, error: &Error) {
        if error.kind() == ErrorKind::WrongState {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Whether process `pid` is a zombie (exited, not reaped).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn read_all(mut s: TcpStream) -> String {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    text
}

#[test]
fn threading_fork_hand_off_reaps_an_exited_child_at_max_children() {
    let mut config = Config::new(Transport::Tcp, Concurrency::Threading).unwrap();
    config.set_max_children(1).unwrap();
    // No periodic turn (and so no reap) while the test sets the scene.
    config.set_poll_interval(Duration::from_secs(30)).unwrap();
    let open = Arc::new(AtomicBool::new(false));
    let turns = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let gated = Arc::new(std::sync::Mutex::new(String::new()));
    let handler = ForkGated {
        gated: gated.clone(),
        open: open.clone(),
        turns: turns.clone(),
        refused: refused.clone(),
    };
    let server: Arc<Server> = Server::new(&config, "127.0.0.1:0", Box::new(handler)).unwrap();
    let address = server.address().unwrap();
    let serving = {
        let server = server.clone();
        thread::spawn(move || server.serve_forever())
    };
    // The clients send nothing: a child closing with unread input would
    // linger before its end of stream.
    let first = TcpStream::connect(&address).expect("connect");
    let second = TcpStream::connect(&address).expect("connect");
    *gated.lock().unwrap() = second.local_addr().unwrap().to_string();
    // Both connections' turns are over (each ends with service_actions,
    // then the loop's reap), so the loop now waits in poll.
    wait_for("two turns", || turns.load(Ordering::SeqCst) >= 2);
    let pid: u32 = read_all(first).trim().parse().expect("the child's pid");
    // A zombie, or already reaped (the loop's last reap came after its
    // exit, under load: then this run does not test the reap at the cap).
    wait_for("the first child to exit", || {
        is_zombie(pid) || !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    open.store(true, Ordering::SeqCst);
    let reply = read_all(second);
    server.shutdown();
    serving.join().unwrap().unwrap();
    server.close().unwrap();
    assert_eq!(
        refused.load(Ordering::SeqCst),
        0,
        "the second hand-off was refused for an exited, unreaped child"
    );
    assert!(
        reply.trim().parse::<u32>().is_ok(),
        "second reply: {reply:?}"
    );
}
