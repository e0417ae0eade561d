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
//! The hot path allocates nothing: one read buffer per loop, bytes handed
//! to the handler straight from it, replies sent straight from the
//! handler's buffer; a connection gets buffers of its own only while it has
//! unconsumed input or unsent output.

mod conn;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use socket2::{SockAddr, Socket};

pub use conn::Conn;

use crate::address::describe_peer;
use crate::concurrency::{set_current_worker, WorkerKind};
use crate::error::{Error, ErrorKind, Result};
use crate::peer_limit::PeerPermit;
use crate::request::Request;
use crate::server::Server;
use crate::sys::Waker;
use crate::transport::{self, Accepted};

/// Work posted to a connection from another thread; it gets `None` if the
/// connection is gone by the time its loop runs it.
pub type Job = Box<dyn FnOnce(Option<&mut Conn>) + Send>;

/// What all loops of one server share.
#[derive(Default)]
pub(crate) struct EventShared {
    loops: Mutex<Vec<Arc<LoopShared>>>,
    connections: AtomicUsize,
    serial: std::sync::atomic::AtomicU32,
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
}

/// An accepted connection on its way to the loop that will own it.
struct Incoming {
    socket: Socket,
    peer: SockAddr,
    permit: Option<PeerPermit>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a push, a take or a clone: a panic
    // cannot leave the data half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EventShared {
    /// Queues `job` for the loop that owns connection `conn_id`.
    pub(crate) fn post(&self, conn_id: u64, job: Job) -> Result<()> {
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

    fn wake_paused_loops(&self) {
        if self.paused.load(Ordering::SeqCst) > 0 {
            for l in lock(&self.loops).iter() {
                l.waker.notify();
            }
        }
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Connection ids: loop index (8 bits), a serial number (32 bits) that
/// the server counts across all loops and runs, and the slot (24 bits).
/// An id is looked up by slot and compared whole, so a stale id never
/// reaches a later connection in the same slot.
const ID_LOOP_SHIFT: u32 = 56;
const ID_SERIAL_SHIFT: u32 = 24;
const MAX_SLOTS: usize = 1 << ID_SERIAL_SHIFT;
const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_WAKER: u64 = u64::MAX - 1;
const EVENTS_PER_WAIT: usize = 256;
/// Accepts or datagrams taken per readiness report, so that one loop does
/// not starve its own connections during a burst.
const ACCEPT_BATCH: usize = 64;
const READ_BUFFER: usize = 64 * 1024;

/// serve_forever in event mode: starts the loops, runs service_actions on
/// the calling thread until shutdown or close, then stops and joins them
/// (closing every connection, with on_close).
pub(crate) fn serve(server: &Arc<Server>, listener: &Arc<Socket>) -> Result<()> {
    let shared = server.workers().events();
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
                .spawn(move || event_loop.run())
                .map_err(|e| Error::io("starting an event loop thread", e))?;
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
            crate::concurrency::report_panic(server, panic);
        }
    }
    // Connections handed to a loop whose thread never started.
    for l in &loops {
        for conn in std::mem::take(&mut *lock(&l.incoming)) {
            drop(conn);
            shared.connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
    result
}

struct EventLoop {
    index: u8,
    server: Arc<Server>,
    listener: Arc<Socket>,
    own: Arc<LoopShared>,
    shared: Arc<EventShared>,
    /// Every loop of this run, self included, in index order: the round
    /// robin's targets (taken when the loop starts, after all are listed).
    peers: Vec<Arc<LoopShared>>,
    epoll: OwnedFd,
    slots: Vec<Option<Box<Conn>>>,
    free: Vec<u32>,
    read_buffer: Box<[u8]>,
    listening: bool,
    /// Tick until which accepting is paused after an accept error.
    accept_resume_at: Option<u64>,
    started: Instant,
    /// Milliseconds since `started`, read once per epoll_wait.
    tick: u64,
    next_idle_check: u64,
}

fn epoll_ctl(epoll: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: token };
    // SAFETY: `event` is a live local; the kernel copies it.
    if unsafe { libc::epoll_ctl(epoll, op, fd, &mut event) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const READ_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
const WRITE_EVENTS: u32 = libc::EPOLLOUT as u32;
const LISTEN_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32;

impl EventLoop {
    fn new(
        index: u8,
        server: Arc<Server>,
        listener: Arc<Socket>,
        own: Arc<LoopShared>,
        shared: Arc<EventShared>,
    ) -> Result<Self> {
        // SAFETY: no pointer arguments; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(Error::last_os("epoll_create1"));
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            own.waker.fd(),
            libc::EPOLLIN as u32,
            TOKEN_WAKER,
        )
        .map_err(|e| Error::io("epoll_ctl", e))?;
        epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            listener.as_raw_fd(),
            LISTEN_EVENTS,
            TOKEN_LISTENER,
        )
        .map_err(|e| Error::io("epoll_ctl", e))?;
        let read_size = READ_BUFFER.max(server.config().max_datagram_size);
        Ok(EventLoop {
            index,
            server,
            listener,
            own,
            shared,
            peers: Vec::new(),
            epoll,
            slots: Vec::new(),
            free: Vec::new(),
            read_buffer: vec![0; read_size].into_boxed_slice(),
            listening: true,
            accept_resume_at: None,
            started: Instant::now(),
            tick: 0,
            next_idle_check: 0,
        })
    }

    fn run(mut self) {
        set_current_worker(WorkerKind::EventLoop, &self.server);
        self.peers = lock(&self.shared.loops).clone();
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
        while !self.own.stop.load(Ordering::SeqCst) {
            let timeout = self.wait_timeout();
            // SAFETY: `events` is a live buffer of EVENTS_PER_WAIT entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS_PER_WAIT as i32,
                    timeout,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.server
                    .handler()
                    .handle_error(None, &Error::io("epoll_wait", err));
                break;
            }
            self.tick = self.started.elapsed().as_millis() as u64;
            for event in &events[..n as usize] {
                let (token, flags) = (event.u64, event.events);
                match token {
                    TOKEN_LISTENER => self.on_listener(),
                    TOKEN_WAKER => {
                        self.run_mailbox();
                        self.take_incoming();
                    }
                    slot => self.on_conn_event(slot as usize, flags),
                }
            }
            self.expire_idle();
            if !self.listening {
                self.maybe_resume_accepting();
            }
        }
        self.close_all();
    }

    fn wait_timeout(&self) -> i32 {
        let mut until: Option<u64> = self.accept_resume_at;
        if self.server.config().idle_timeout.is_some() && self.live_conns() > 0 {
            until = Some(until.map_or(self.next_idle_check, |u| u.min(self.next_idle_check)));
        }
        match until {
            None => -1,
            Some(t) => t
                .saturating_sub(self.started.elapsed().as_millis() as u64)
                .min(i32::MAX as u64) as i32,
        }
    }

    fn live_conns(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn new_conn_id(&self, slot: usize) -> u64 {
        let serial = self.shared.serial.fetch_add(1, Ordering::Relaxed);
        (u64::from(self.index) << ID_LOOP_SHIFT)
            | (u64::from(serial) << ID_SERIAL_SHIFT)
            | slot as u64
    }

    fn conn_by_id(&mut self, id: u64) -> Option<usize> {
        let slot = (id & (MAX_SLOTS as u64 - 1)) as usize;
        let conn = self.slots.get(slot)?.as_ref()?;
        (conn.id() == id).then_some(slot)
    }

    fn on_listener(&mut self) {
        if !self.listening {
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
            let _ = epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.listener.as_raw_fd(),
                0,
                0,
            );
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
        if epoll_ctl(
            self.epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            self.listener.as_raw_fd(),
            LISTEN_EVENTS,
            TOKEN_LISTENER,
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
        self.shared.connections.fetch_sub(1, Ordering::SeqCst);
        self.shared.wake_paused_loops();
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
        let slot = match self.free.pop() {
            Some(s) => s as usize,
            None if self.slots.len() < MAX_SLOTS => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => {
                // 16 million connections on one loop: no slot to give.
                drop(socket);
                self.release_connection();
                return;
            }
        };
        let id = self.new_conn_id(slot);
        let high_water = self.server.config().output_high_water;
        let mut conn = Box::new(Conn::new(socket, &peer, id, high_water, self.tick));
        conn.peer_permit = permit.map(Box::new);
        if let Err(e) = epoll_ctl(
            self.epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            conn.fd(),
            READ_EVENTS,
            slot as u64,
        ) {
            self.server
                .handler()
                .handle_error(None, &Error::io("epoll_ctl", e));
            self.free.push(slot as u32);
            self.release_connection();
            return;
        }
        conn.registered = READ_EVENTS;
        if let Err(e) = self.server.handler().on_open(&mut conn) {
            report_conn_error(&self.server, &conn, &e);
            conn.broken = true;
        }
        self.slots[slot] = Some(conn);
        self.settle(slot);
    }

    fn on_conn_event(&mut self, slot: usize, flags: u32) {
        let server = &self.server;
        let Some(conn) = self.slots.get_mut(slot).and_then(|s| s.as_deref_mut()) else {
            return;
        };
        let readable = flags
            & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32
            != 0;
        if readable && !conn.read_done && !conn.output_full() && !conn.close_requested {
            read_conn(server, conn, &mut self.read_buffer, self.tick);
        }
        if flags & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0
            && conn.pending_output() > 0
        {
            if let Err(e) = conn.flush() {
                report_conn_error(server, conn, &e);
            } else {
                conn.last_active = self.tick;
                // Input held back while the output was full gets its turn.
                if !conn.input.is_empty() && !conn.output_full() {
                    feed_input(server, conn, &[]);
                }
            }
        }
        self.settle(slot);
    }

    /// After anything happened to a connection: close it if it is done,
    /// else make epoll watch what it now needs.
    fn settle(&mut self, slot: usize) {
        let Some(conn) = self.slots[slot].as_deref_mut() else {
            return;
        };
        if std::mem::take(&mut conn.sent_since_check) {
            conn.last_active = self.tick;
        }
        if conn.finished() {
            return self.close_conn(slot);
        }
        let mut want = 0;
        if !conn.read_done && !conn.output_full() && !conn.close_requested {
            want |= READ_EVENTS;
        }
        if conn.pending_output() > 0 {
            want |= WRITE_EVENTS;
        }
        if want != conn.registered {
            if epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_MOD,
                conn.fd(),
                want,
                slot as u64,
            )
            .is_ok()
            {
                conn.registered = want;
            } else {
                conn.broken = true;
                self.close_conn(slot);
            }
        }
    }

    fn close_conn(&mut self, slot: usize) {
        let Some(mut conn) = self.slots[slot].take() else {
            return;
        };
        self.server.handler().on_close(&mut conn);
        // Explicitly: a forked child holding a copy of the fd would keep
        // the registration alive after close, and the loop would spin.
        let _ = epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, conn.fd(), 0, 0);
        drop(conn);
        // Counted until on_close has run, so that at most max_connections
        // connections are ever between on_open and on_close.
        self.release_connection();
        self.free.push(slot as u32);
    }

    fn run_mailbox(&mut self) {
        self.own.waker.drain();
        let jobs = std::mem::take(&mut *lock(&self.own.mailbox));
        for (id, job) in jobs {
            match self.conn_by_id(id) {
                Some(slot) => {
                    let conn = self.slots[slot].as_deref_mut();
                    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| job(conn))) {
                        crate::concurrency::report_panic(&self.server, panic);
                    }
                    self.settle(slot);
                }
                None => {
                    let _ = catch_unwind(AssertUnwindSafe(|| job(None)));
                }
            }
        }
    }

    fn expire_idle(&mut self) {
        let Some(timeout) = self.server.config().idle_timeout else {
            return;
        };
        if self.tick < self.next_idle_check {
            return;
        }
        let timeout_ms = timeout.as_millis() as u64;
        self.next_idle_check = self.tick + (timeout_ms / 4).clamp(5, 1000);
        for slot in 0..self.slots.len() {
            let idle = self.slots[slot]
                .as_ref()
                .is_some_and(|c| self.tick.saturating_sub(c.last_active) >= timeout_ms);
            if idle {
                self.close_conn(slot);
            }
        }
    }

    fn receive_datagrams(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            let max = self.server.config().max_datagram_size;
            let dgram = match transport::recv_datagram(&self.listener, &mut self.read_buffer[..max])
            {
                Ok(Some(d)) => d,
                Ok(None) => return,
                Err(e) => {
                    self.server.handler().handle_error(None, &e);
                    return;
                }
            };
            let data = self.read_buffer[..dgram.len].to_vec();
            let too_long = dgram.too_long();
            let mut request = Request::datagram(
                self.server.clone(),
                self.listener.clone(),
                data,
                dgram.sender,
            );
            let handler = self.server.handler();
            if let Some(err) = too_long {
                handler.handle_error(Some(&mut request), &err);
                continue;
            }
            let result = handler
                .on_datagram(&mut request)
                .and_then(|()| request.complete());
            if let Err(e) = result {
                handler.handle_error(Some(&mut request), &e);
            }
        }
    }

    fn close_all(&mut self) {
        for slot in 0..self.slots.len() {
            self.close_conn(slot);
        }
        // Stop first, then empty the mailbox: post checks the flag under
        // the same lock, so no job can arrive after this.
        self.own.stop.store(true, Ordering::SeqCst);
        let jobs = std::mem::take(&mut *lock(&self.own.mailbox));
        for (_, job) in jobs {
            let _ = catch_unwind(AssertUnwindSafe(|| job(None)));
        }
        // Handed over but never opened: closed without on_close.
        for conn in std::mem::take(&mut *lock(&self.own.incoming)) {
            drop(conn);
            self.release_connection();
        }
        if !self.listening {
            self.shared.paused.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Reads what the socket has and hands it to the handler.
fn read_conn(server: &Server, conn: &mut Conn, buffer: &mut [u8], tick: u64) {
    loop {
        match conn
            .socket()
            .recv_with_flags(crate::sys::as_uninit(buffer), libc::MSG_DONTWAIT)
        {
            Ok(0) => {
                conn.read_done = true;
                // A handler that takes end-of-input keeps the connection
                // open for its answer (e.g. one computed elsewhere and
                // posted), until it closes it.
                conn.held_after_eof = server.handler().on_eof(conn);
                return;
            }
            Ok(n) => {
                conn.last_active = tick;
                feed_input(server, conn, &buffer[..n]);
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // A reset peer simply ends the connection.
            Err(_) => {
                conn.read_done = true;
                conn.broken = true;
                return;
            }
        }
    }
}

/// Presents unconsumed input plus `fresh` bytes to on_data, again and again
/// while it consumes some and has room to answer; what is left is kept for
/// the next bytes.
fn feed_input(server: &Server, conn: &mut Conn, fresh: &[u8]) {
    let limit = server.config().input_limit;
    let result = if conn.input.is_empty() {
        consume(server, conn, fresh).map(|used| {
            if used < fresh.len() {
                conn.input.extend_from_slice(&fresh[used..]);
            }
        })
    } else {
        let mut input = std::mem::take(&mut conn.input);
        input.extend_from_slice(fresh);
        consume(server, conn, &input).map(|used| {
            input.drain(..used);
            // An emptied buffer is dropped, not kept: idle connections
            // hold no memory.
            if !input.is_empty() {
                conn.input = input;
            }
        })
    };
    let result = result.and_then(|()| {
        if conn.input.len() > limit {
            return Err(Error::new(
                ErrorKind::MessageTooLong,
                format!(
                    "{} bytes received and not consumed, over the input limit of {limit}",
                    conn.input.len()
                ),
            ));
        }
        Ok(())
    });
    if let Err(e) = result {
        report_conn_error(server, conn, &e);
        conn.broken = true;
    }
}

fn consume(server: &Server, conn: &mut Conn, data: &[u8]) -> Result<usize> {
    let mut used = 0;
    while used < data.len() && !conn.close_requested && !conn.broken && !conn.output_full() {
        let n = server.handler().on_data(conn, &data[used..])?;
        if n > data.len() - used {
            return Err(Error::invalid(format!(
                "on_data reported {n} bytes consumed of the {} it was given",
                data.len() - used
            )));
        }
        if n == 0 {
            break;
        }
        used += n;
    }
    Ok(used)
}

fn report_conn_error(server: &Server, conn: &Conn, error: &Error) {
    let peer = conn.peer_address();
    let error = Error::new(
        error.kind(),
        format!(
            "connection from {}: {}",
            describe_peer(&peer),
            error.message()
        ),
    );
    server.handler().handle_error(None, &error);
}
