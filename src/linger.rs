//! Lingering close of stream connections in the blocking modes (nginx's
//! lingering_close, Apache's lingering close). Closing a socket whose
//! receive queue still holds client input makes the kernel send a reset,
//! which destroys the response still in flight to the client. So when a
//! connection closes while the client may still be sending, the write side
//! is shut down (the client sees the end of the response) and the input is
//! read and thrown away until the client closes, no input comes for
//! `lingering_timeout`, or `lingering_time` has passed; only then is the
//! socket closed.
//!
//! The serving thread must not wait for that: one background thread per
//! server, started on the first lingering close, watches every lingering
//! socket with its deadlines. A forked request child lingers itself before
//! it exits (it delays nobody, and it has no such thread). A clean
//! request/response, with no input left unread, closes at once as before.

use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use socket2::Socket;

use crate::sync::lock;
use crate::sys::in_forked_child;
use crate::sys::{as_uninit, poll_fds_until, wait_ready, Waker};

/// At most this many connections linger per server; a close beyond that is
/// immediate (bounded memory and poll set, whatever the clients do).
pub(crate) const MAX_LINGERING: usize = 256;

/// Reads of discarded input per socket per turn, so that one client that
/// keeps sending cannot starve the others.
const DISCARD_READS_PER_TURN: usize = 4;

const DISCARD_CHUNK: usize = 16 * 1024;

/// One socket being closed lingeringly; dropping it closes the socket.
struct Lingering {
    socket: Socket,
    /// lingering_time: the end, whatever the client does.
    until: Instant,
    /// lingering_timeout after the last input.
    quiet_until: Instant,
    timeout: Duration,
}

impl Lingering {
    fn deadline(&self) -> Instant {
        self.until.min(self.quiet_until)
    }

    /// Reads and discards what the client sent. False when the socket is
    /// done with (end of stream or an error): then it is closed.
    fn discard(&mut self, scratch: &mut [u8]) -> bool {
        for _ in 0..DISCARD_READS_PER_TURN {
            match self
                .socket
                .recv_with_flags(as_uninit(scratch), libc::MSG_DONTWAIT)
            {
                Ok(0) => return false,
                Ok(_) => self.quiet_until = Instant::now() + self.timeout,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Lingers on this socket alone, blocking the caller (a forked child).
    /// Never inlined: its 16 KiB buffer would otherwise be in the frame of
    /// every close, whose stack probes touch each page of it (a page
    /// fault apiece on a fresh thread's or child's stack), lingering or not.
    #[inline(never)]
    fn run_alone(mut self) {
        let mut scratch = [0u8; DISCARD_CHUNK];
        while let Ok(true) = wait_ready(
            self.socket.as_fd(),
            PollFlags::POLLIN,
            Some(self.deadline()),
        ) {
            if !self.discard(&mut scratch) {
                return;
            }
        }
    }
}

/// What the serving threads hand to the lingerer thread.
#[derive(Default)]
struct Incoming {
    sockets: Vec<Lingering>,
    /// Sockets the thread is lingering on, as of its last turn.
    lingering: usize,
    stop: bool,
}

struct Shared {
    incoming: Mutex<Incoming>,
    waker: Waker,
}

struct Running {
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    running: Option<Running>,
    /// Set by `stop`: later closes are immediate.
    stopped: bool,
}

/// A server's lingering closes (see the module doc).
pub(crate) struct Lingerer {
    time: Option<Duration>,
    timeout: Duration,
    state: Mutex<State>,
}

impl Lingerer {
    /// `time` None: never linger.
    pub(crate) fn new(time: Option<Duration>, timeout: Duration) -> Self {
        Lingerer {
            time,
            timeout,
            state: Mutex::default(),
        }
    }

    /// Closes a request's connection: shuts down the write side and, when
    /// the client may still be sending (`unread` input left in the
    /// request's buffer, or input waiting in the socket, which is not
    /// looked at when a read already saw the client's end: `ended`),
    /// lingers before the close. Never blocks the caller, except in a
    /// forked request child, which lingers itself.
    pub(crate) fn close(&self, socket: Socket, unread: bool, ended: bool) {
        // Errors such as ENOTCONN (the client is gone) change nothing.
        let _ = socket.shutdown(Shutdown::Write);
        let Some(time) = self.time else { return };
        if !unread && (ended || !input_pending(&socket)) {
            return;
        }
        let now = Instant::now();
        let lingering = Lingering {
            socket,
            until: now + time,
            quiet_until: now + self.timeout,
            timeout: self.timeout,
        };
        if in_forked_child() {
            lingering.run_alone();
            return;
        }
        // Not handed over (stopped, too many, no thread): closed at once.
        let _ = self.hand_over(lingering);
    }

    fn hand_over(&self, lingering: Lingering) -> Result<(), Lingering> {
        let mut st = lock(&self.state);
        if st.stopped {
            return Err(lingering);
        }
        if st.running.is_none() {
            let Ok(waker) = Waker::new() else {
                return Err(lingering);
            };
            let shared = Arc::new(Shared {
                incoming: Mutex::default(),
                waker,
            });
            let thread_shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("ss-linger".into())
                .stack_size(64 * 1024)
                .spawn(move || run(&thread_shared));
            let Ok(thread) = spawned else {
                return Err(lingering);
            };
            st.running = Some(Running { shared, thread });
        }
        let Some(running) = &st.running else {
            return Err(lingering);
        };
        let mut incoming = lock(&running.shared.incoming);
        if incoming.sockets.len() + incoming.lingering >= MAX_LINGERING {
            return Err(lingering);
        }
        incoming.sockets.push(lingering);
        drop(incoming);
        running.shared.waker.notify();
        Ok(())
    }

    /// Connections in a lingering close, not yet closed (as of the
    /// lingerer thread's last turn): a drain waits for them, since closing
    /// them would reset answers still on their way.
    pub(crate) fn lingering(&self) -> usize {
        let st = lock(&self.state);
        st.running.as_ref().map_or(0, |r| {
            let incoming = lock(&r.shared.incoming);
            incoming.sockets.len() + incoming.lingering
        })
    }

    /// Ends every lingering close at once (the sockets are closed) and
    /// joins the thread; later closes are immediate. For server close and
    /// drop, so that nothing of the server outlives them.
    pub(crate) fn stop(&self) {
        let running = {
            let mut st = lock(&self.state);
            st.stopped = true;
            st.running.take()
        };
        if let Some(running) = running {
            lock(&running.shared.incoming).stop = true;
            running.shared.waker.notify();
            let _ = running.thread.join();
        }
    }
}

impl Drop for Lingerer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the client has sent input that nobody read (a close now would
/// reset the connection). End of stream or an error: nothing to wait for.
fn input_pending(socket: &Socket) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        socket.recv_with_flags(as_uninit(&mut byte), libc::MSG_PEEK | libc::MSG_DONTWAIT),
        Ok(n) if n > 0
    )
}

/// The lingerer thread: polls every lingering socket and the waker until
/// asked to stop; dropping a `Lingering` closes its socket.
fn run(shared: &Shared) {
    let mut lingering: Vec<Lingering> = Vec::new();
    let mut scratch = vec![0u8; DISCARD_CHUNK];
    loop {
        let now = Instant::now();
        lingering.retain(|l| l.deadline() > now);
        {
            let mut incoming = lock(&shared.incoming);
            if incoming.stop {
                return;
            }
            lingering.append(&mut incoming.sockets);
            incoming.lingering = lingering.len();
        }
        let deadline = lingering.iter().map(Lingering::deadline).min();
        let ready: Vec<bool> = {
            let mut fds = Vec::with_capacity(lingering.len() + 1);
            fds.push(PollFd::new(shared.waker.as_fd(), PollFlags::POLLIN));
            for l in &lingering {
                fds.push(PollFd::new(l.socket.as_fd(), PollFlags::POLLIN));
            }
            if poll_fds_until(&mut fds, deadline).is_err() {
                // Cannot wait (ENOMEM): give up on lingering rather than spin.
                lingering.clear();
                continue;
            }
            fds.iter()
                .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        if ready[0] {
            shared.waker.drain();
        }
        let mut i = 0;
        lingering.retain_mut(|l| {
            i += 1;
            !ready[i] || l.discard(&mut scratch)
        });
    }
}
