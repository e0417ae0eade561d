//! Event mode: the model Python's docs describe but do not ship — "an
//! explicit table of partially finished requests", driven by epoll — on
//! several cores. Each loop thread has its own epoll and its own
//! connections. The thread that called serve_forever only coordinates: it
//! runs service_actions and stops the loops on shutdown or close.
//!
//! Balancing: every loop watches the one listening socket with
//! EPOLLEXCLUSIVE, and whichever loop the kernel wakes accepts; it hands
//! each connection to the next loop in turn (round robin through that
//! loop's `incoming` queue and eventfd), so every loop gets its share
//! whoever accepted. Measured with 200 connections, sequential (one at a
//! time, each kept open) and burst (all at once), per loop:
//! - before, the waking loop kept all it accepted (batch of 64): 200/0 and
//!   200/0 over 2 loops, 200/0/0/0 and 196/4/0/0 over 4 (TCP; Unix alike):
//!   the kernel wakes the same idle loop again and again;
//! - the same with an accept batch of 1: 200/0, 200/0, 1/199/0/0,
//!   195/3/2/0 (TCP), unix burst 130/14/56/0: a smaller batch does not help
//!   sequential connects at all;
//! - one SO_REUSEPORT listener per loop (measured outside the library):
//!   113/87 and 79/121 over 2, 45/54/48/53 over 4: only as even as the hash
//!   of the client's port, not available for Unix sockets, and a listener
//!   closing between serve_forever runs drops the connections queued on it;
//! - round robin: 100/100 and 50/50/50/50 for both patterns, TCP and Unix,
//!   at the cost of one eventfd wake-up per connection handed over (an
//!   accepting loop keeps its own turns without one).
//!
//! The stream hot path allocates nothing: one read buffer per loop, bytes
//! handed to the handler straight from it, replies sent straight from the
//! handler's buffer; a connection gets buffers of its own only while it has
//! unconsumed input or unsent output. Datagrams come in batches (`datagram`:
//! one recvmmsg, then one sendmmsg for the batch's replies), each into one
//! of the loop's receive buffers, lent to its Request and taken back after
//! the batch: no copy. What still allocates per datagram, only if the
//! handler asks for it: the sender's text (formatted on the first
//! client_address call) and the collected reply of `write` calls.
//!
//! Closing: a connection is shut down before its descriptor is closed (a
//! forked child may hold a copy), lingers while its client may still be
//! sending (see `end_conn`), and every wait on a peer is bounded: timers
//! are swept a few times per shortest timeout (`expire_idle`), with one
//! tick field per connection instead of a timer structure. The timers
//! handlers set (connection and loop timers) are in `timer`: one heap per
//! loop, whose nearest deadline bounds epoll_wait (`wait_timeout`), run
//! after each batch of events (`run_timers`).

mod conn;
mod context;
mod datagram;
mod graceful;
mod timer;
mod watch;

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::handler::{catch_reported, report_panic, EventHandler};
use crate::sync::lock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use socket2::{SockAddr, Socket};

pub use conn::Conn;
pub use context::failing_conn;
pub use timer::{LoopTimer, LoopTimerFn, TimerId};
pub use watch::{WatchFn, WATCH_ERROR, WATCH_HANGUP, WATCH_READ, WATCH_WRITE};

use crate::address::describe_peer;
use crate::concurrency::{set_current_worker, WorkerKind};
use crate::error::{Error, ErrorKind, Result};
use crate::peer_limit::PeerPermit;
use crate::server::Server;
use crate::sys::Waker;
use crate::transport::{self, Accepted};

/// Work posted to a connection from another thread; it gets `None` if the
/// connection is gone by the time its loop runs it.
pub type Job = Box<dyn FnOnce(Option<&mut Conn>) + Send>;

/// An event-mode server's loops, as its users see them (through
/// `Server::event_loops`): post jobs to a connection, count connections.
/// Also what all loops of the server share.
#[derive(Default)]
pub struct EventLoops {
    loops: Mutex<Vec<Arc<LoopShared>>>,
    connections: AtomicUsize,
    /// Each loop index's slot generations, kept from one run of
    /// serve_forever to the next so that ids never repeat (see SlotIds).
    generations: Mutex<Vec<SlotIds>>,
    /// Loops that stopped watching the listener at max_connections.
    paused: AtomicUsize,
    /// Round robin: accepted connections handed out so far.
    next_loop: AtomicUsize,
}

struct LoopShared {
    waker: Waker,
    stop: AtomicBool,
    mailbox: Mutex<Vec<(u64, Job)>>,
    /// Connections another loop accepted for this one.
    incoming: Mutex<Vec<Incoming>>,
    /// During a drain: this loop has no connection left (see graceful).
    drained: AtomicBool,
}

/// An accepted connection on its way to the loop that will own it.
struct Incoming {
    socket: Socket,
    peer: SockAddr,
    permit: Option<PeerPermit>,
}

impl EventLoops {
    /// Runs `job` on the loop thread that owns connection `conn_id`, with
    /// the connection, or with None if it has closed by then. Fails,
    /// without running `job`, when the loops are not running.
    pub fn post(&self, conn_id: u64, job: Job) -> Result<()> {
        if crate::sys::in_forked_child() {
            return Err(Error::wrong_state(
                "post called in a forked request child; the server belongs to the parent process",
            ));
        }
        let loops = lock(&self.loops);
        let target = loops
            .get((conn_id >> ID_LOOP_SHIFT) as usize)
            .ok_or_else(|| {
                Error::wrong_state(
                    "the server is not serving in event mode (or the id is not a connection's)",
                )
            })?;
        let mut mailbox = lock(&target.mailbox);
        // Checked under the mailbox lock: a loop that stopped has emptied
        // its mailbox for the last time, and a job left there would never
        // run.
        if target.stop.load(Ordering::SeqCst) {
            return Err(Error::wrong_state("the event loop has stopped"));
        }
        mailbox.push((conn_id, job));
        drop(mailbox);
        target.waker.notify();
        Ok(())
    }

    /// A connection has left the count.
    fn release_connection(&self) {
        self.connections.fetch_sub(1, Ordering::SeqCst);
        self.wake_paused_loops();
    }

    fn wake_paused_loops(&self) {
        if self.paused.load(Ordering::SeqCst) > 0 {
            for l in lock(&self.loops).iter() {
                l.waker.notify();
            }
        }
    }

    /// Open connections across all loops.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Connection ids: loop index (8 bits), the slot's generation (32 bits)
/// and the slot (24 bits). An id is looked up by slot and compared whole,
/// so a stale id never reaches a later connection in the same slot.
const ID_LOOP_SHIFT: u32 = 56;
const ID_GENERATION_SHIFT: u32 = 24;
const MAX_SLOTS: usize = 1 << ID_GENERATION_SHIFT;

/// The generation of each slot of one loop: bumped when the slot's
/// connection closes, so a slot's ids never repeat. A slot whose generation
/// would wrap is retired for good instead (after 2^32 - 1 connections in
/// one slot), and the table outlives a run of serve_forever, so an id is
/// never given twice for the life of the server. 4 bytes per slot.
#[derive(Default)]
struct SlotIds {
    generations: Vec<u32>,
}

/// Marks a retired slot.
const RETIRED: u32 = u32::MAX;

impl SlotIds {
    /// Whether slot `slot` (new to this run's slot table) may be used.
    fn usable(&mut self, slot: usize) -> bool {
        if slot >= self.generations.len() {
            self.generations.resize(slot + 1, 0);
        }
        self.generations[slot] != RETIRED
    }

    fn id(&self, loop_index: u8, slot: usize) -> u64 {
        (u64::from(loop_index) << ID_LOOP_SHIFT)
            | (u64::from(self.generations[slot]) << ID_GENERATION_SHIFT)
            | slot as u64
    }

    /// The slot's connection closed: whether the slot may be used again.
    fn release(&mut self, slot: usize) -> bool {
        self.generations[slot] += 1;
        self.generations[slot] != RETIRED
    }
}
// Both have watch::WATCH_TAG set, as a watch's token: a connection's slot
// is told from all three by that bit alone (see run).
const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_WAKER: u64 = u64::MAX - 1;
const _: () =
    assert!(TOKEN_LISTENER & watch::WATCH_TAG != 0 && TOKEN_WAKER & watch::WATCH_TAG != 0);
const EVENTS_PER_WAIT: usize = 256;
/// Accepts or datagrams taken per readiness report, so that one loop does
/// not starve its own connections during a burst.
const ACCEPT_BATCH: usize = 64;
const READ_BUFFER: usize = 64 * 1024;

/// serve_forever in event mode: starts the loops, runs service_actions on
/// the calling thread until shutdown or close, then stops and joins them
/// (closing every connection, with on_close).
pub(crate) fn serve(
    server: &Arc<Server>,
    shared: &Arc<EventLoops>,
    listener: &Arc<Socket>,
) -> Result<()> {
    let shared = shared.clone();
    let mut loops = Vec::new();
    let mut threads = Vec::new();
    let started = (|| -> Result<()> {
        // Every loop is created and listed before any runs: round robin
        // hands connections to all of them from the first accept on, and
        // an on_open can already post.
        let mut created = Vec::new();
        for index in 0..server.config().threads() {
            let loop_shared = Arc::new(LoopShared {
                waker: Waker::new()?,
                stop: AtomicBool::new(false),
                mailbox: Mutex::new(Vec::new()),
                incoming: Mutex::new(Vec::new()),
                drained: AtomicBool::new(false),
            });
            created.push(EventLoop::new(
                index as u8,
                server.clone(),
                listener.clone(),
                loop_shared.clone(),
                shared.clone(),
            )?);
            loops.push(loop_shared);
        }
        lock(&shared.loops).extend(loops.iter().cloned());
        for (index, event_loop) in created.into_iter().enumerate() {
            let thread = std::thread::Builder::new()
                .name(format!("ss-event-{index}"))
                .stack_size(server.config().thread_stack_size)
                .spawn(move || run_guarded(event_loop))
                .map_err(|e| Error::spawn("starting an event loop thread", e))?;
            threads.push(thread);
        }
        Ok(())
    })();
    let result = started.and_then(|()| server.coordinate_event_loops());
    lock(&shared.loops).clear();
    for l in &loops {
        l.stop.store(true, Ordering::SeqCst);
        l.waker.notify();
    }
    for thread in threads {
        if let Err(panic) = thread.join() {
            report_panic(server.handler(), panic);
        }
    }
    // A loop that never ran leaves its jobs here: each still gets its call,
    // and connections handed to it leave the count.
    for l in &loops {
        // Taken out first: a guard in the `for` header would stay locked
        // while the jobs (user code) run.
        let jobs = std::mem::take(&mut *lock(&l.mailbox));
        for (_, job) in jobs {
            catch_reported(server.handler(), || job(None));
        }
        let incoming = std::mem::take(&mut *lock(&l.incoming));
        for conn in incoming {
            drop(conn);
            shared.connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
    result
}

/// Runs a loop; if it panics, its connections still get on_close and leave
/// the count, and its posted jobs still run (with no connection), before
/// the panic goes on to serve() to be reported.
fn run_guarded(mut event_loop: EventLoop) {
    event_loop.ids = lock(&event_loop.shared.generations)
        .get_mut(usize::from(event_loop.index))
        .map(std::mem::take)
        .unwrap_or_default();
    let _context = context::enter(
        event_loop.index,
        event_loop.server.clone(),
        event_loop.epoll.clone(),
    );
    // Until the loop has closed its connections (their timers with them).
    let _timers = timer::install(
        event_loop.index,
        event_loop.started,
        &event_loop.server.config().loop_timers,
    );
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| event_loop.run())) {
        event_loop.draining = true;
        event_loop.close_all();
        std::panic::resume_unwind(panic);
    }
}

struct EventLoop {
    index: u8,
    server: Arc<Server>,
    listener: Arc<Socket>,
    own: Arc<LoopShared>,
    shared: Arc<EventLoops>,
    /// Every loop of this run, self included, in index order: the round
    /// robin's targets (taken when the loop starts, after all are listed).
    peers: Vec<Arc<LoopShared>>,
    epoll: Arc<Epoll>,
    slots: Vec<Option<Box<Conn>>>,
    free: Vec<u32>,
    ids: SlotIds,
    /// Slots retired by `ids`: neither free nor live.
    retired: usize,
    read_buffer: Box<[u8]>,
    /// Datagram transports: receive buffers and replies of a batch.
    datagrams: datagram::DatagramBatch,
    listening: bool,
    /// Tick until which accepting is paused after an accept error.
    accept_resume_at: Option<u64>,
    started: Instant,
    /// Milliseconds since `started`, read once per epoll_wait.
    tick: u64,
    /// When expire_idle next sweeps the connections' timers.
    next_idle_check: u64,
    /// Some connection has a timer running (idle timeout, request
    /// deadline, output drain, lingering): the loop must wake to sweep.
    timers_active: bool,
    /// Milliseconds between sweeps: a quarter of the shortest timeout.
    timer_interval: u64,
    /// config.request_deadline is set (read on every settle).
    deadline_set: bool,
    /// Stopping: connections close without lingering, nothing is accepted.
    draining: bool,
    /// Connections of this loop in a lingering close.
    lingering: usize,
    /// During a drain: the tick at which this loop began it.
    graceful: Option<u64>,
}

fn millis(d: std::time::Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

const READ_EVENTS: EpollFlags = EpollFlags::EPOLLIN.union(EpollFlags::EPOLLRDHUP);
const WRITE_EVENTS: EpollFlags = EpollFlags::EPOLLOUT;
/// What makes on_conn_event read (an error or hang-up is read to be seen),
/// and what makes it flush pending output.
const READABLE: EpollFlags = EpollFlags::EPOLLIN
    .union(EpollFlags::EPOLLRDHUP)
    .union(EpollFlags::EPOLLHUP)
    .union(EpollFlags::EPOLLERR);
const WRITABLE: EpollFlags = EpollFlags::EPOLLOUT
    .union(EpollFlags::EPOLLERR)
    .union(EpollFlags::EPOLLHUP);
const LISTEN_EVENTS: EpollFlags = EpollFlags::EPOLLIN.union(EpollFlags::EPOLLEXCLUSIVE);

/// epoll_wait's timeout: none, or `ms` milliseconds (capped).
fn epoll_timeout(ms: Option<u64>) -> PollTimeout {
    ms.map_or(PollTimeout::NONE, |ms| {
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
    })
}

impl EventLoop {
    fn new(
        index: u8,
        server: Arc<Server>,
        listener: Arc<Socket>,
        own: Arc<LoopShared>,
        shared: Arc<EventLoops>,
    ) -> Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Error::io("epoll_create1", e.into()))?;
        epoll
            .add(
                own.waker.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_WAKER),
            )
            .map_err(|e| Error::io("epoll_ctl", e.into()))?;
        epoll
            .add(&*listener, EpollEvent::new(LISTEN_EVENTS, TOKEN_LISTENER))
            .map_err(|e| Error::io("epoll_ctl", e.into()))?;
        // Stream transports read into it; datagrams have their own buffer.
        let read_size = if server.config().transport.is_stream() {
            READ_BUFFER
        } else {
            0
        };
        let config = server.config();
        let shortest = [
            config.idle_timeout,
            config.request_deadline,
            config.lingering_time,
            Some(config.lingering_timeout),
        ]
        .into_iter()
        .flatten()
        .map(millis)
        .min()
        .unwrap_or(1000);
        let timer_interval = (shortest / 4).clamp(5, 1000);
        let timers_active = config.idle_timeout.is_some();
        let deadline_set = config.request_deadline.is_some();
        Ok(EventLoop {
            index,
            server,
            listener,
            own,
            shared,
            peers: Vec::new(),
            epoll: Arc::new(epoll),
            slots: Vec::new(),
            free: Vec::new(),
            // Taken when the loop runs (a loop that never runs keeps none).
            ids: SlotIds::default(),
            retired: 0,
            read_buffer: vec![0; read_size].into_boxed_slice(),
            datagrams: datagram::DatagramBatch::default(),
            listening: true,
            accept_resume_at: None,
            started: Instant::now(),
            tick: 0,
            next_idle_check: 0,
            timers_active,
            timer_interval,
            deadline_set,
            draining: false,
            lingering: 0,
            graceful: None,
        })
    }

    fn run(&mut self) {
        set_current_worker(WorkerKind::EventLoop, &self.server);
        self.peers = lock(&self.shared.loops).clone();
        let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAIT];
        // Held here, so that the handler can be lent to every event.
        let server = self.server.clone();
        let handler = server.event_handler();
        while !self.own.stop.load(Ordering::SeqCst) {
            let n = match self.epoll.wait(&mut events, self.wait_timeout()) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    self.server
                        .handler()
                        .handle_error(None, &Error::io("epoll_wait", e.into()));
                    break;
                }
            };
            self.tick = self.started.elapsed().as_millis() as u64;
            for event in &events[..n] {
                let (token, flags) = (event.data(), event.events());
                // Connections first, with one test: the other tokens all
                // have WATCH_TAG set.
                match token {
                    slot if slot & watch::WATCH_TAG == 0 => {
                        self.on_conn_event(slot as usize, flags, handler)
                    }
                    TOKEN_LISTENER => self.on_listener(),
                    TOKEN_WAKER => {
                        self.run_mailbox();
                        self.take_incoming();
                    }
                    t => self.on_watch_event(t, flags),
                }
            }
            self.run_timers(true);
            self.expire_idle();
            if self.server.drain_state().requested() {
                self.drain_turn();
            } else if !self.listening {
                self.maybe_resume_accepting();
            }
        }
        self.drain(&mut events);
        self.close_all();
    }

    /// After stop: nothing more is accepted or read, every connection is
    /// asked to close, and output still queued gets until the drain bound
    /// (lingering_timeout) to go out; close_all then closes what is left.
    fn drain(&mut self, events: &mut [EpollEvent]) {
        self.pause_accepting();
        self.draining = true;
        for slot in 0..self.slots.len() {
            if let Some(conn) = self.slots[slot].as_deref_mut() {
                conn.st.close_requested = true;
                self.settle(slot);
            }
        }
        let deadline = self.started.elapsed().as_millis() as u64
            + millis(self.server.config().lingering_timeout);
        let server = self.server.clone();
        let handler = server.event_handler();
        while self.live_conns() > 0 {
            let now = self.started.elapsed().as_millis() as u64;
            if now >= deadline {
                return;
            }
            let until = timer::next_deadline().map_or(deadline, |t| t.min(deadline));
            let n = match self
                .epoll
                .wait(events, epoll_timeout(Some(until.saturating_sub(now))))
            {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            self.tick = self.started.elapsed().as_millis() as u64;
            for event in &events[..n] {
                match event.data() {
                    TOKEN_LISTENER => {}
                    TOKEN_WAKER => self.run_mailbox(),
                    t if t & watch::WATCH_TAG != 0 => self.on_watch_event(t, event.events()),
                    slot => self.on_conn_event(slot as usize, event.events(), handler),
                }
            }
            // Connection timers still run; loop timers have stopped.
            self.run_timers(false);
        }
    }

    fn wait_timeout(&self) -> PollTimeout {
        let mut until: Option<u64> = self.accept_resume_at;
        if self.timers_active && self.live_conns() > 0 {
            until = Some(until.map_or(self.next_idle_check, |u| u.min(self.next_idle_check)));
        }
        if let Some(t) = timer::next_deadline() {
            until = Some(until.map_or(t, |u| u.min(t)));
        }
        let wait = until.map(|t| t.saturating_sub(self.started.elapsed().as_millis() as u64));
        epoll_timeout(self.drain_wait(wait))
    }

    fn live_conns(&self) -> usize {
        self.slots.len() - self.free.len() - self.retired
    }

    /// A free slot for a new connection, or None when all MAX_SLOTS are
    /// taken.
    fn take_slot(&mut self) -> Option<usize> {
        if let Some(slot) = self.free.pop() {
            return Some(slot as usize);
        }
        while self.slots.len() < MAX_SLOTS {
            let slot = self.slots.len();
            self.slots.push(None);
            if self.ids.usable(slot) {
                return Some(slot);
            }
            self.retired += 1;
        }
        None
    }

    /// A lingering connection is no longer the user's: posts to it get
    /// None.
    fn conn_by_id(&mut self, id: u64) -> Option<usize> {
        let slot = (id & (MAX_SLOTS as u64 - 1)) as usize;
        let conn = self.slots.get(slot)?.as_ref()?;
        (conn.id() == id && !conn.st.lingering).then_some(slot)
    }

    fn on_listener(&mut self) {
        // A drain stops accepting at once (drain_turn unwatches it).
        if !self.listening || self.server.drain_state().requested() {
            return;
        }
        if self.server.config().transport.is_stream() {
            self.accept_batch();
        } else {
            self.receive_datagrams();
        }
    }

    fn at_max_connections(&self) -> bool {
        let max = self.server.config().max_connections;
        max > 0 && self.shared.connections.load(Ordering::SeqCst) >= max
    }

    fn pause_accepting(&mut self) {
        if self.listening {
            let _ = self.epoll.delete(&*self.listener);
            self.listening = false;
            self.shared.paused.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn maybe_resume_accepting(&mut self) {
        if let Some(at) = self.accept_resume_at {
            if self.tick < at {
                return;
            }
            self.accept_resume_at = None;
        }
        if self.at_max_connections() {
            return;
        }
        if self
            .epoll
            .add(
                &*self.listener,
                EpollEvent::new(LISTEN_EVENTS, TOKEN_LISTENER),
            )
            .is_ok()
        {
            self.listening = true;
            self.shared.paused.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Counts a connection before accepting it, so that loops accepting at
    /// the same time cannot overshoot max_connections together.
    fn reserve_connection(&self) -> bool {
        let max = self.server.config().max_connections;
        self.shared
            .connections
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn release_connection(&self) {
        self.shared.release_connection();
    }

    fn accept_batch(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            if !self.reserve_connection() {
                self.pause_accepting();
                return;
            }
            let server = &self.server;
            let accepted =
                server
                    .acceptor()
                    .accept(&self.listener, server.config(), server.handler(), true);
            match accepted {
                Accepted::Conn(socket, peer, permit) => self.dispatch(socket, peer, permit),
                Accepted::Nothing => {
                    self.release_connection();
                    return;
                }
                Accepted::Again => self.release_connection(),
                Accepted::Pause => {
                    // Reported already; stop accepting for a moment
                    // instead of spinning on the listener.
                    self.release_connection();
                    self.pause_accepting();
                    self.accept_resume_at =
                        Some(self.tick + transport::ACCEPT_ERROR_PAUSE.as_millis() as u64);
                    return;
                }
            }
        }
    }

    /// Hands an accepted connection to the next loop in turn (round robin
    /// over all loops, whichever loop accepted it): see the module doc for
    /// why, with the figures.
    fn dispatch(&mut self, socket: Socket, peer: SockAddr, permit: Option<PeerPermit>) {
        let incoming = Incoming {
            socket,
            peer,
            permit,
        };
        let n = self.peers.len().max(1);
        let index = self.shared.next_loop.fetch_add(1, Ordering::Relaxed) % n;
        let target = self
            .peers
            .get(index)
            .filter(|_| index != self.index as usize)
            .cloned();
        let Some(target) = target else {
            return self.add_conn(incoming);
        };
        let mut queue = lock(&target.incoming);
        // Checked under the queue lock, as post does: a loop that stopped
        // has emptied its queue for the last time.
        if target.stop.load(Ordering::SeqCst) {
            drop(queue);
            return self.add_conn(incoming);
        }
        queue.push(incoming);
        drop(queue);
        target.waker.notify();
    }

    /// Takes the connections other loops handed to this one.
    fn take_incoming(&mut self) {
        let incoming = std::mem::take(&mut *lock(&self.own.incoming));
        for conn in incoming {
            self.add_conn(conn);
        }
    }

    /// Takes a connection already counted by `reserve_connection`.
    fn add_conn(&mut self, incoming: Incoming) {
        let Incoming {
            socket,
            peer,
            permit,
        } = incoming;
        let Some(slot) = self.take_slot() else {
            // 16 million connections on one loop: no slot to give.
            drop(socket);
            self.release_connection();
            return;
        };
        let id = self.ids.id(self.index, slot);
        let high_water = self.server.config().output_high_water;
        let mut conn = Box::new(Conn::new(socket, &peer, id, high_water, self.tick));
        conn.peer_permit = permit.map(Box::new);
        if let Err(e) = self
            .epoll
            .add(conn.socket(), EpollEvent::new(READ_EVENTS, slot as u64))
        {
            self.server
                .handler()
                .handle_error(None, &Error::io("epoll_ctl", e.into()));
            self.free.push(slot as u32);
            self.release_connection();
            return;
        }
        conn.registered = READ_EVENTS;
        // In its slot before on_open: should on_open panic, the loop's
        // recovery (run_guarded) finds it, closes it and uncounts it.
        let conn = self.slots[slot].insert(conn);
        if let Err(e) = self.server.event_handler().on_open(conn) {
            report_conn_error(&self.server, conn, &e);
            conn.st.broken = true;
        }
        self.settle(slot);
    }

    /// A connection's readiness. The hot path of the event mode (one read,
    /// one on_data, one send per request): kept in one function, its rare
    /// branches out of line, because each call layer and each inlined
    /// error path cost instructions on every request (callgrind: ~600 per
    /// echo before, against ~190 for the C epoll reference).
    #[inline(always)]
    ///
    /// `events` is the server's event handler, looked up once per wait.
    fn on_conn_event(&mut self, slot: usize, flags: EpollFlags, events: &dyn EventHandler) {
        let server = &self.server;
        let Some(conn) = self.slots.get_mut(slot).and_then(|s| s.as_deref_mut()) else {
            return;
        };
        if conn.st.any() {
            return self.on_flagged_conn_event(slot, flags);
        }
        // Serving, nothing paused or ending: what follows is the general
        // case (on_flagged_conn_event, then settle) with every flag it
        // tests clear, and the connection looked up once.
        if flags.intersects(READABLE) && !conn.output_full() {
            read_conn(server, events, conn, &mut self.read_buffer, self.tick);
        }
        if flags.intersects(WRITABLE) && conn.pending_output() > 0 {
            on_writable(server, conn, self.tick);
        }
        if conn.st.any() {
            return self.settle_flagged(slot);
        }
        let changed = conn.settled_events(self.tick);
        self.settle_unflagged(slot, changed);
    }

    /// on_conn_event for a connection with one of its States set.
    #[inline(never)]
    fn on_flagged_conn_event(&mut self, slot: usize, flags: EpollFlags) {
        let server = &self.server;
        let Some(conn) = self.slots.get_mut(slot).and_then(|s| s.as_deref_mut()) else {
            return;
        };
        if conn.st.lingering {
            return self.on_lingering_event(slot);
        }
        // Once the input has ended, HUP or ERR means the peer is gone (a
        // Unix peer closed, a TCP peer reset): nothing can be delivered any
        // more. Without this, a connection held by on_eof watches no
        // events, and epoll reports HUP/ERR on every wait: a busy loop.
        if conn.st.read_done && flags.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            conn.st.broken = true;
        }
        if conn.st.paused {
            paused_hangup(conn, flags);
        }
        if flags.intersects(READABLE)
            && !conn.st.read_done
            && !conn.output_full()
            && !conn.st.close_requested
            && !conn.st.paused
        {
            let events = server.event_handler();
            read_conn(server, events, conn, &mut self.read_buffer, self.tick);
        }
        if flags.intersects(WRITABLE) && conn.pending_output() > 0 {
            on_writable(server, conn, self.tick);
        }
        self.settle(slot);
    }

    #[inline(never)]
    fn on_lingering_event(&mut self, slot: usize) {
        let Some(conn) = self.slots[slot].as_deref_mut() else {
            return;
        };
        if discard_input(conn, &mut self.read_buffer, self.tick) {
            self.close_conn(slot);
        }
    }

    /// After anything happened to a connection: close it if it is done,
    /// else make epoll watch what it now needs.
    #[inline(never)]
    fn settle(&mut self, slot: usize) {
        self.settle_inline(slot);
    }

    /// settle, inlined into on_conn_event: what most requests need (no
    /// state set, so nothing to end, no timer but the request deadline's)
    /// is tested first.
    #[inline(always)]
    fn settle_inline(&mut self, slot: usize) {
        let Some(conn) = self.slots[slot].as_deref_mut() else {
            return;
        };
        if conn.st.any() {
            return self.settle_flagged(slot);
        }
        // finished() is false with every state clear.
        let changed = conn.settled_events(self.tick);
        self.settle_unflagged(slot, changed);
    }

    /// The rest of settle for a connection with no States set, once
    /// `Conn::settled_events` has said whether its events changed.
    #[inline(always)]
    fn settle_unflagged(&mut self, slot: usize, changed: Option<EpollFlags>) {
        if self.deadline_set {
            self.settle_timers(slot);
        }
        if let Some(want) = changed {
            self.register(slot, want);
        }
    }

    /// settle for a connection with one of its States set.
    #[inline(never)]
    fn settle_flagged(&mut self, slot: usize) {
        let Some(conn) = self.slots[slot].as_deref_mut() else {
            return;
        };
        if conn.st.resume_feed {
            feed_resumed(&self.server, conn);
        }
        if std::mem::take(&mut conn.sent_since_check) {
            conn.last_active = self.tick;
        }
        if conn.finished() {
            return self.end_conn(slot);
        }
        if self.deadline_set || (conn.st.close_requested && conn.pending_output() > 0) {
            self.settle_timers(slot);
        }
        let Some(conn) = self.slots[slot].as_deref_mut() else {
            return;
        };
        let mut want = EpollFlags::empty();
        if !conn.st.read_done && !conn.output_full() && !conn.st.close_requested && !conn.st.paused
        {
            want |= READ_EVENTS;
        }
        if conn.pending_output() > 0 {
            want |= WRITE_EVENTS;
        }
        let want = park_if_hung_up(conn, want);
        if want != conn.registered {
            self.register(slot, want);
        }
    }

    /// The timers settle starts: the request deadline, which runs while a
    /// partial request is held, from the last time on_data consumed
    /// something; the bounded output drain of a closing connection (see
    /// expire_idle).
    #[inline(never)]
    fn settle_timers(&mut self, slot: usize) {
        let Some(conn) = self.slots[slot].as_deref_mut() else {
            return;
        };
        if self.deadline_set {
            if conn.input.is_empty() {
                conn.timer_start = 0;
            } else if conn.timer_start == 0 {
                conn.timer_start = self.tick + 1;
                self.timers_active = true;
            }
        }
        if conn.st.close_requested && conn.pending_output() > 0 {
            self.timers_active = true;
        }
    }

    /// Makes epoll watch `want` for the connection in `slot`.
    #[inline(never)]
    fn register(&mut self, slot: usize, want: EpollFlags) {
        let Some(conn) = self.slots[slot].as_deref_mut() else {
            return;
        };
        if self
            .epoll
            .modify(conn.socket(), &mut EpollEvent::new(want, slot as u64))
            .is_ok()
        {
            conn.registered = want;
        } else {
            conn.st.broken = true;
            self.close_conn(slot);
        }
    }

    /// Ends a connection that is done. While the client may still be
    /// sending (its input has not ended) and lingering is on, the
    /// connection leaves the user's view (on_close runs now), its write
    /// side is shut down and it lingers: the loop reads and discards until
    /// the peer closes, lingering_timeout passes without input or
    /// lingering_time in all. Closing at once instead would make the
    /// kernel answer unread input with a reset that destroys the response
    /// still in flight. A failed connection (`broken`: socket error, handler
    /// error, input limit, request deadline, drain timeout) and every
    /// connection while the loop stops close at once.
    ///
    /// A lingering connection has left the user's view: it no longer counts
    /// in ss_server_connections or against max_connections (else peers that
    /// keep sending could hold the server at its limit); instead at most
    /// max_connections (if set) linger per loop, beyond that they close at
    /// once.
    fn end_conn(&mut self, slot: usize) {
        let max = self.server.config().max_connections;
        let Some(conn) = self.slots[slot].as_deref_mut() else {
            return;
        };
        let linger = self.server.config().lingering_time.is_some()
            && (max == 0 || self.lingering < max)
            && !self.draining
            && !conn.st.broken
            && !conn.st.read_done
            && !conn.st.lingering;
        if !linger {
            return self.close_conn(slot);
        }
        timer::close_conn_timers(conn);
        self.server.event_handler().on_close(conn);
        watch::unwatch_all(&self.epoll, conn);
        conn.start_lingering(self.tick);
        self.lingering += 1;
        self.release_connection();
        self.timers_active = true;
        let Some(conn) = self.slots[slot].as_deref_mut() else {
            return;
        };
        if conn.aborted {
            // ss_conn_abort in on_close: reset now instead of lingering.
            return self.close_conn(slot);
        }
        if conn.registered != READ_EVENTS {
            if self
                .epoll
                .modify(
                    conn.socket(),
                    &mut EpollEvent::new(READ_EVENTS, slot as u64),
                )
                .is_err()
            {
                return self.close_conn(slot);
            }
            conn.registered = READ_EVENTS;
        }
    }

    /// Closes now: on_close (unless it ran when lingering began), then
    /// shutdown before close, so that the peer sees the end even while a
    /// forked child holds a copy of the descriptor.
    fn close_conn(&mut self, slot: usize) {
        let Some(mut conn) = self.slots[slot].take() else {
            return;
        };
        // The slot's generation advances first, so that its id is never
        // given again even if on_close panics.
        let reusable = self.ids.release(slot);
        // Counted until on_close has run, so that at most max_connections
        // connections are ever between on_open and on_close; released by
        // the guard even if on_close panics (out of its slot, the
        // connection is beyond the panicked loop's recovery).
        let counted = (!conn.st.lingering).then(|| Counted(&self.shared));
        timer::close_conn_timers(&mut conn);
        if counted.is_some() {
            self.server.event_handler().on_close(&mut conn);
        }
        watch::unwatch_all(&self.epoll, &mut conn);
        // An aborted connection is reset by its close (SO_LINGER 0): a
        // shutdown would send FIN first.
        if !conn.aborted {
            conn.shutdown(std::net::Shutdown::Both);
        }
        // Explicitly: a forked child holding a copy of the fd would keep
        // the registration alive after close, and the loop would spin.
        let _ = self.epoll.delete(conn.socket());
        if conn.st.lingering {
            self.lingering -= 1;
        }
        drop(counted);
        drop(conn);
        if reusable {
            self.free.push(slot as u32);
        } else {
            self.retired += 1;
        }
    }

    fn run_mailbox(&mut self) {
        self.own.waker.drain();
        let jobs = std::mem::take(&mut *lock(&self.own.mailbox));
        for (id, job) in jobs {
            match self.conn_by_id(id) {
                Some(slot) => {
                    let conn = self.slots[slot].as_deref_mut();
                    catch_reported(self.server.handler(), || job(conn));
                    self.after_callback(slot);
                }
                None => {
                    catch_reported(self.server.handler(), || job(None));
                }
            }
        }
    }

    /// After a posted job or a timer ran with a connection: the call may be
    /// what the handler waited for (its answer written, state changed), so
    /// input it held back gets another turn now, not only when more
    /// arrives; then the connection settles.
    fn after_callback(&mut self, slot: usize) {
        if let Some(conn) = self.slots[slot].as_deref_mut() {
            if !conn.input.is_empty()
                && !conn.output_full()
                && !conn.st.close_requested
                && !conn.st.broken
                && !conn.st.paused
            {
                feed_input(&self.server, conn, &[]);
            }
        }
        self.settle(slot);
    }

    /// Runs the timers that are due (timer.rs): a connection's with the
    /// connection, then as after a posted job (`after_callback`); loop
    /// timers with the server while `periodic` (not once the loop stops).
    /// Timers set meanwhile are due later (no starvation).
    fn run_timers(&mut self, periodic: bool) {
        // No timer, no clock read: run after every wait.
        if timer::next_deadline().is_none() {
            return;
        }
        let now = timer::now_ms(self.started);
        while let Some(due) = timer::pop_due(now, periodic) {
            match due {
                timer::Due::Conn(fired) => {
                    // Always found: a closing connection's timers are
                    // cancelled before its on_close.
                    let Some(slot) = self.conn_by_id(fired.conn_id) else {
                        continue;
                    };
                    let Some(conn) = self.slots[slot].as_deref_mut() else {
                        continue;
                    };
                    catch_reported(self.server.handler(), || fired.run(conn));
                    self.after_callback(slot);
                }
                timer::Due::Loop(callback) => {
                    let (server, index) = (&self.server, usize::from(self.index));
                    catch_reported(server.handler(), || callback(server, index));
                }
            }
        }
    }

    /// Sweeps the connections' timers, a few times per shortest timeout
    /// (no per-connection timer structure: one tick field each): the idle
    /// timeout, the request deadline (a partial request held too long),
    /// the output drain of a closing connection whose peer takes nothing
    /// for lingering_timeout, and lingering.
    fn expire_idle(&mut self) {
        if !self.timers_active || self.tick < self.next_idle_check {
            return;
        }
        self.next_idle_check = self.tick + self.timer_interval;
        let config = self.server.config();
        let idle = config.idle_timeout.map(millis);
        let deadline = config.request_deadline.map(millis);
        let lingering_time = config.lingering_time.map_or(0, millis);
        let lingering_timeout = millis(config.lingering_timeout);
        // Set again below by any connection still timed (and by end_conn).
        self.timers_active = idle.is_some();
        let now = self.tick;
        for slot in 0..self.slots.len() {
            let Some(conn) = self.slots[slot].as_deref_mut() else {
                continue;
            };
            let quiet = now.saturating_sub(conn.last_active);
            if conn.st.lingering {
                let lingered = (now + 1).saturating_sub(conn.timer_start);
                if quiet >= lingering_timeout || lingered >= lingering_time {
                    self.close_conn(slot);
                } else {
                    self.timers_active = true;
                }
                continue;
            }
            if conn.st.close_requested && conn.pending_output() > 0 {
                if quiet >= lingering_timeout {
                    let error = Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "the peer took no output for {lingering_timeout} ms: \
                             {} queued bytes dropped at close",
                            conn.pending_output()
                        ),
                    );
                    report_conn_error(&self.server, conn, &error);
                    conn.st.broken = true;
                    self.close_conn(slot);
                } else {
                    self.timers_active = true;
                }
                continue;
            }
            if let Some(deadline) = deadline.filter(|_| conn.timer_start > 0) {
                if (now + 1).saturating_sub(conn.timer_start) >= deadline {
                    let error = Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "request not complete after {deadline} ms \
                             ({} bytes received and not consumed)",
                            conn.input.len()
                        ),
                    );
                    report_conn_error(&self.server, conn, &error);
                    conn.st.broken = true;
                    self.close_conn(slot);
                    continue;
                }
                self.timers_active = true;
            }
            if idle.is_some_and(|idle| quiet >= idle) {
                self.end_conn(slot);
            }
        }
    }

    fn receive_datagrams(&mut self) {
        self.datagrams
            .serve(&self.server, &self.listener, ACCEPT_BATCH);
    }

    fn close_all(&mut self) {
        // Closing for good now: what lingers or drains is cut short.
        self.draining = true;
        for slot in 0..self.slots.len() {
            self.close_conn(slot);
        }
        // Stop first, then empty the mailbox: post checks the flag under
        // the same lock, so no job can arrive after this.
        self.own.stop.store(true, Ordering::SeqCst);
        let jobs = std::mem::take(&mut *lock(&self.own.mailbox));
        for (_, job) in jobs {
            catch_reported(self.server.handler(), || job(None));
        }
        // Handed over but never opened: closed without on_close.
        for conn in std::mem::take(&mut *lock(&self.own.incoming)) {
            drop(conn);
            self.release_connection();
        }
        if !self.listening {
            self.shared.paused.fetch_sub(1, Ordering::SeqCst);
        }
        // Kept for the next run of serve_forever, so that its ids differ.
        let mut generations = lock(&self.shared.generations);
        let index = usize::from(self.index);
        if generations.len() <= index {
            generations.resize_with(index + 1, SlotIds::default);
        }
        generations[index] = std::mem::take(&mut self.ids);
    }
}

/// A connection in the count: released when dropped.
struct Counted<'a>(&'a EventLoops);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.release_connection();
    }
}

/// Lingering: reads and discards what the peer sends. True when the
/// connection should close now (the peer closed, or the socket failed).
fn discard_input(conn: &mut Conn, buffer: &mut [u8], tick: u64) -> bool {
    // A bounded number of reads per readiness report: a peer that keeps
    // sending cannot starve the other connections (epoll reports it again).
    for _ in 0..16 {
        match conn
            .socket()
            .recv_with_flags(crate::sys::as_uninit(buffer), libc::MSG_DONTWAIT)
        {
            Ok(0) => return true,
            Ok(_) => conn.last_active = tick,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}

/// Output was pending and the socket is writable (or failed): sends what it
/// takes, then on_drain, and input held back while the output was full
/// gets its turn.
#[inline(never)]
fn on_writable(server: &Server, conn: &mut Conn, tick: u64) {
    if let Err(e) = conn.flush() {
        report_conn_error(server, conn, &e);
    } else {
        conn.last_active = tick;
        drained(server, conn);
        if !conn.input.is_empty() && !conn.output_full() && !conn.st.paused {
            feed_input(server, conn, &[]);
        }
    }
}

/// Reads what the socket has and hands it to the handler. Inlined, with
/// what it calls, into on_conn_event (see there).
#[inline(always)]
fn read_conn(
    server: &Server,
    events: &dyn EventHandler,
    conn: &mut Conn,
    buffer: &mut [u8],
    tick: u64,
) {
    loop {
        match conn::recv_now(conn.fd(), buffer) {
            Ok(0) => return read_ended(server, conn),
            Ok(n) => {
                conn.last_active = tick;
                conn.received = true;
                let fresh = &buffer[..n];
                if conn.input.is_empty() {
                    feed_read(server, events, conn, fresh);
                } else {
                    feed_input(server, conn, fresh);
                }
                return;
            }
            Err(e) => {
                if !read_failed(conn, &e) {
                    return;
                }
            }
        }
    }
}

/// The peer ended its input.
#[inline(never)]
fn read_ended(server: &Server, conn: &mut Conn) {
    conn.st.read_done = true;
    // A handler that takes end-of-input keeps the connection open for its
    // answer (e.g. one computed elsewhere and posted), until it closes it.
    conn.held_after_eof = server.event_handler().on_eof(conn);
}

/// A failed read: whether to try again (a signal interrupted it); nothing
/// to read is no failure; any other error (a reset peer) simply ends the
/// connection.
#[cold]
fn read_failed(conn: &mut Conn, error: &io::Error) -> bool {
    match error.kind() {
        io::ErrorKind::Interrupted => true,
        io::ErrorKind::WouldBlock => false,
        _ => {
            conn.st.read_done = true;
            conn.st.broken = true;
            false
        }
    }
}

/// feed_input when nothing was held: the bytes go to on_data straight from
/// the loop's buffer, and only what it leaves is copied.
#[inline(always)]
fn feed_fresh(server: &Server, events: &dyn EventHandler, conn: &mut Conn, fresh: &[u8]) {
    match consume(events, conn, fresh) {
        Ok(used) if used == fresh.len() => {}
        Ok(used) => keep_input(server, conn, fresh.get(used..).unwrap_or_default()),
        Err(e) => feed_failed(server, conn, &e),
    }
}

/// feed_fresh for bytes just read: read_conn reads only a connection that
/// takes input (no state stops it, its output has room), so the first
/// on_data call needs none of consume's checks; the rest of the bytes, if
/// it leaves some, go the general way.
#[inline(always)]
fn feed_read(server: &Server, events: &dyn EventHandler, conn: &mut Conn, fresh: &[u8]) {
    match events.on_data(conn, fresh) {
        Ok(n) if n == fresh.len() => {
            conn.timer_start = 0;
            conn.st.resume_feed = false;
        }
        Ok(n) => feed_read_rest(server, events, conn, fresh, n),
        Err(e) => feed_failed(server, conn, &e),
    }
}

/// feed_read after an on_data call that consumed `n` bytes, not all:
/// consume's loop from there.
#[inline(never)]
fn feed_read_rest(
    server: &Server,
    events: &dyn EventHandler,
    conn: &mut Conn,
    fresh: &[u8],
    n: usize,
) {
    if n > fresh.len() {
        return feed_failed(server, conn, &overconsumed(n, fresh.len()));
    }
    let rest = fresh.get(n..).unwrap_or_default();
    if n == 0 {
        conn.st.resume_feed = false;
        return keep_input(server, conn, rest);
    }
    conn.timer_start = 0;
    match consume(events, conn, rest) {
        Ok(used) if used == rest.len() => {}
        Ok(used) => keep_input(server, conn, rest.get(used..).unwrap_or_default()),
        Err(e) => feed_failed(server, conn, &e),
    }
}

/// Keeps what on_data left of fresh input, within the input limit.
#[inline(never)]
fn keep_input(server: &Server, conn: &mut Conn, rest: &[u8]) {
    conn.input.extend_from_slice(rest);
    check_input_limit(server, conn);
}

/// Fails a connection that holds more unconsumed input than the limit.
fn check_input_limit(server: &Server, conn: &mut Conn) {
    let limit = server.config().input_limit;
    if conn.input.len() > limit {
        let error = Error::new(
            ErrorKind::MessageTooLong,
            format!(
                "{} bytes received and not consumed, over the input limit of {limit}",
                conn.input.len()
            ),
        );
        feed_failed(server, conn, &error);
    }
}

#[cold]
fn feed_failed(server: &Server, conn: &mut Conn, error: &Error) {
    report_conn_error(server, conn, error);
    conn.st.broken = true;
}

/// Presents unconsumed input plus `fresh` bytes to on_data, again and again
/// while it consumes some and has room to answer; what is left is kept for
/// the next bytes.
fn feed_input(server: &Server, conn: &mut Conn, fresh: &[u8]) {
    let events = server.event_handler();
    if conn.input.is_empty() {
        return feed_fresh(server, events, conn, fresh);
    }
    let mut input = std::mem::take(&mut conn.input);
    input.extend_from_slice(fresh);
    match consume(events, conn, &input) {
        Ok(used) => {
            input.drain(..used);
            // An emptied buffer is dropped, not kept: idle connections
            // hold no memory.
            if !input.is_empty() {
                conn.input = input;
                check_input_limit(server, conn);
            }
        }
        Err(e) => feed_failed(server, conn, &e),
    }
}

#[inline(always)]
fn consume(events: &dyn EventHandler, conn: &mut Conn, data: &[u8]) -> Result<usize> {
    let mut used = 0;
    while used < data.len() && !conn.st.stops_input() && !conn.output_full() {
        let given = data.get(used..).unwrap_or_default();
        let n = events.on_data(conn, given)?;
        if n > given.len() {
            return Err(overconsumed(n, given.len()));
        }
        if n == 0 {
            break;
        }
        used += n;
        // Progress: the request deadline restarts for what is left (see
        // settle), so a pipelining client whose bytes never end on a
        // request boundary is not taken for a slow one.
        conn.timer_start = 0;
    }
    // What a resume asked for has happened: the input was presented.
    conn.st.resume_feed = false;
    Ok(used)
}

#[cold]
fn overconsumed(n: usize, given: usize) -> Error {
    Error::invalid(format!(
        "on_data reported {n} bytes consumed of the {given} it was given"
    ))
}

/// handle_error for a connection's failure: the message names the
/// connection ("connection <id> from <peer>: ..."), and ss_error_conn()
/// gives the connection itself during the call.
fn report_conn_error(server: &Server, conn: &mut Conn, error: &Error) {
    let peer = conn.peer_address();
    let error = error.with_message(format!(
        "connection {} from {}: {}",
        conn.id(),
        describe_peer(&peer),
        error.message()
    ));
    context::reporting(conn, || server.handler().handle_error(None, &error));
}

/// A paused connection is not read, so the hang-ups epoll reports whatever
/// is watched are handled here (else, level-triggered, they would wake the
/// loop on every wait): an error (a TCP reset) ends the connection; a
/// hang-up without one (a Unix peer closed, or both directions are shut)
/// parks the socket until resume, which reads what is left.
fn paused_hangup(conn: &mut Conn, flags: EpollFlags) {
    if conn.st.read_done {
        return;
    }
    if flags.contains(EpollFlags::EPOLLERR) {
        conn.st.read_done = true;
        conn.st.broken = true;
    } else if flags.contains(EpollFlags::EPOLLHUP) {
        conn.st.hung_up = true;
    }
}

impl Conn {
    /// settle for a connection with no States set, but for its timers:
    /// output sent counts as activity; what epoll should watch (input while
    /// the output has room, output while some is pending) if that changed.
    #[inline(always)]
    fn settled_events(&mut self, tick: u64) -> Option<EpollFlags> {
        if std::mem::take(&mut self.sent_since_check) {
            self.last_active = tick;
        }
        let mut want = EpollFlags::empty();
        if !self.output_full() {
            want |= READ_EVENTS;
        }
        if self.pending_output() > 0 {
            want |= WRITE_EVENTS;
        }
        (want != self.registered).then_some(want)
    }
}

/// What settle registers for a paused connection whose peer hung up:
/// EPOLLONESHOT alone, which the kernel disarms after one more report (an
/// empty interest set would still report the hang-up on every wait).
fn park_if_hung_up(conn: &mut Conn, want: EpollFlags) -> EpollFlags {
    if !conn.st.paused {
        conn.st.hung_up = false;
        return want;
    }
    if conn.st.hung_up && want.is_empty() {
        return EpollFlags::EPOLLONESHOT;
    }
    want
}

/// Input held while paused, presented after ss_conn_resume_reading (from
/// settle, so never inside the callback that resumed).
fn feed_resumed(server: &Server, conn: &mut Conn) {
    if !std::mem::take(&mut conn.st.resume_feed) {
        return;
    }
    if !conn.input.is_empty()
        && !conn.st.paused
        && !conn.output_full()
        && !conn.st.close_requested
        && !conn.st.broken
    {
        feed_input(server, conn, &[]);
    }
}

/// on_drain, once per crossing: output that reached the high-water mark
/// has fallen to the low-water mark.
fn drained(server: &Server, conn: &mut Conn) {
    if conn.drain_armed
        && conn.pending_output() <= server.config().effective_low_water()
        && !conn.st.close_requested
        && !conn.st.broken
    {
        conn.drain_armed = false;
        server.event_handler().on_drain(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids of one slot differ from one connection to the next, a slot
    /// whose generation would wrap is retired instead of reused, and the
    /// retirement is kept (the table outlives a run of serve_forever).
    #[test]
    fn slot_ids_never_repeat() {
        let mut ids = SlotIds::default();
        assert!(ids.usable(3));
        let first = ids.id(2, 3);
        assert_eq!(first >> ID_LOOP_SHIFT, 2);
        assert_eq!(first & (MAX_SLOTS as u64 - 1), 3);
        assert!(ids.release(3));
        assert_ne!(ids.id(2, 3), first);

        // The last generation before the wrap: its connection may open,
        // but the slot is not given again.
        ids.generations[3] = RETIRED - 1;
        let last = ids.id(2, 3);
        assert!(!ids.release(3));
        assert!(!ids.usable(3));
        assert_ne!(last, first);
        // Other slots are unaffected.
        assert!(ids.usable(4));
    }
}
