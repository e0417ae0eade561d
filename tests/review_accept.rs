//! Review of the accept-first / batched reaping change: in SS_THREADING,
//! fork hand-offs run on handler threads. ChildTracker::fork counts
//! children that have exited but are not reaped yet against max_children;
//! with the serve loop reaping only now and then, such zombies made
//! hand-offs fail ("max_children ... already run", 1-16 per 2,000
//! connections here) although far fewer children ran. A fork at the cap
//! now reaps first, and only SS_FORKING's stream loop batches its reaps.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socketserver::request::HandOffTarget;
use socketserver::{
    Concurrency, Config, Error, ErrorKind, Handler, Request, Result, Server, Transport,
};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const CLIENTS: usize = 6;
const MAX_CHILDREN: usize = 8;

struct ForkEcho {
    refused: Arc<AtomicUsize>,
    max_slots: Arc<AtomicUsize>,
}

impl Handler for ForkEcho {
    fn handle(&self, request: &mut Request) -> Result<()> {
        request.hand_off(
            HandOffTarget::Fork,
            Box::new(|r: &mut Request| {
                let mut byte = [0u8; 1];
                r.read_exact(&mut byte)?;
                r.write(&byte)?;
                Ok(())
            }),
        )
    }

    fn service_actions(&self, server: &Server) {
        if let Ok((_, children)) = server.live_workers() {
            self.max_slots.fetch_max(children, Ordering::SeqCst);
        }
    }

    fn handle_error(&self, _request: Option<&mut Request>, error: &Error) {
        if error.kind() == ErrorKind::WrongState {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// At most CLIENTS children ever run at once (each client waits for its
/// echo and the end of the stream, and a child exits right after
/// closing), under max_children: no fork hand-off should be refused.
#[test]
fn threading_fork_hand_offs_are_not_refused_for_unreaped_children() {
    let refused = Arc::new(AtomicUsize::new(0));
    let mut config = Config::new(Transport::Tcp, Concurrency::Threading).unwrap();
    config.set_max_children(MAX_CHILDREN).unwrap();
    let max_slots = Arc::new(AtomicUsize::new(0));
    let handler = ForkEcho {
        refused: refused.clone(),
        max_slots: max_slots.clone(),
    };
    let server: Arc<Server> = Server::new(&config, "127.0.0.1:0", Box::new(handler)).unwrap();
    let address = server.address().unwrap();
    let serving = {
        let server = server.clone();
        thread::spawn(move || server.serve_forever())
    };
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (address, stop, served, failed) = (
                address.clone(),
                stop.clone(),
                served.clone(),
                failed.clone(),
            );
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let mut s = TcpStream::connect(&address).expect("connect");
                    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                    s.set_nodelay(true).unwrap();
                    // The echo, then the end of the stream: the child has
                    // closed the connection, on its way out.
                    let mut echo = Vec::new();
                    if s.write_all(b"x").is_ok() && s.read_to_end(&mut echo).is_ok() && echo == b"x"
                    {
                        served.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while served.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) < 2000
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    server.shutdown();
    serving.join().unwrap().unwrap();
    server.close().unwrap();
    let (served, failed, refused) = (
        served.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst),
    );
    eprintln!(
        "served {served}, failed {failed}, hand-offs refused {refused}, most children unreaped {}",
        max_slots.load(Ordering::SeqCst)
    );
    assert_eq!(
        refused, 0,
        "{refused} fork hand-offs refused at max_children {MAX_CHILDREN} with at most \
         {CLIENTS} children running (served {served}, failed {failed})"
    );
}
