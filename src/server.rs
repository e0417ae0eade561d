//! The server (Python's BaseServer and its socket subclasses): life cycle,
//! the serve loop, handle_request, shutdown and close.
//!
//! Where this differs from Python, on purpose:
//! - shutdown only asks; it never blocks, so it is safe from a handler on the
//!   serving thread and from a signal handler, and it wakes the loop at once
//!   through an eventfd instead of after the poll interval;
//! - a shutdown asked for while no loop runs is kept, and the next
//!   serve_forever or handle_request consumes it and returns at once;
//! - close from another thread stops a running loop and waits for it, so
//!   nothing polls a closed descriptor; it is single-flight: concurrent
//!   callers never both wait for each other's threads;
//! - in a forked request child, the calls that would take a lock another
//!   parent thread may have held at fork time are refused before locking,
//!   and the address is readable without a lock (set once, at bind).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use socket2::{SockAddr, Socket};

use crate::address::{format_sockaddr, ServerAddress};
use crate::concurrency::{current_worker_is, in_forked_child, ChildCloses, WorkerKind, Workers};
use crate::config::{Concurrency, Config};
use crate::drain::{ActiveRequests, DrainPipe, DrainState};
use crate::error::{Error, ErrorKind, Result};
use crate::handler::{EventHandler, Handler};
use crate::linger::Lingerer;
use crate::request::Request;
use crate::sys::{poll_fds_until, Waker};
use crate::transport::{self, Accepted, UnixFile};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Bound,
    Active,
    Closed,
}

/// How far close has got: only one caller does the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseProgress {
    NotStarted,
    /// By this thread: a call from a callback that close runs there (a
    /// handle_error for a reaped child) must not wait for itself.
    Running(ThreadId),
    Done,
}

struct State {
    phase: Phase,
    /// The socket's entry among the descriptors request children close:
    /// declared before `socket`, so that it is dropped first.
    socket_in_children: Option<ChildCloses>,
    socket: Option<Arc<Socket>>,
    unix_file: Option<UnixFile>,
    /// The thread inside serve_forever or handle_request, if any.
    serving: Option<ThreadId>,
    close: CloseProgress,
}

pub struct Server {
    config: Config,
    address: ServerAddress,
    handler: Box<dyn Handler>,
    workers: Workers,
    /// As `socket_in_children`, for the waker (dropped before it).
    waker_in_children: ChildCloses,
    /// Whether the socket got a place among the descriptors children
    /// close (readable without the state lock).
    socket_registered: bool,
    /// The listener came from ss_server_new_from_fd: it may be shared with
    /// systemd or a parent process, so a drain must not shut it down.
    adopted: bool,
    waker: Waker,
    shutdown_requested: AtomicBool,
    closing: AtomicBool,
    fileno: AtomicI32,
    state: Mutex<State>,
    loop_exited: Condvar,
    /// Signalled when close's work is done, for concurrent closers.
    close_done: Condvar,
    /// The bound address: written once by bind, then read without a lock
    /// (a forked child may read it whatever the parent's threads held).
    bound: OnceLock<SockAddr>,
    datagram_buffers: Mutex<crate::request::DatagramBuffers>,
    /// Blocking datagram receive (see BlockingReceive): made on its first
    /// use, kept for the server's life (a signal handler may be sending on
    /// it), and closed in forked children.
    receive_waker: OnceLock<Option<ReceiveWaker>>,
    /// Its descriptor while serve_forever blocks in recvfrom (-1 when it
    /// does not): shutdown, drain and close then send it a wake-up.
    blocked_receive: AtomicI32,
    lingerer: Lingerer,
    acceptor: transport::Acceptor,
    /// ss_server_drain: asked for, under way, done (crate::drain).
    drain: DrainState,
    /// Blocking-mode stream requests open in this process, which the
    /// drain deadline cuts.
    active: Arc<ActiveRequests>,
    /// Made with the server in SS_FORKING, else before the first fork hand-off
    /// (crate::drain::DrainPipe): how forked children learn of a drain.
    /// None inside: no pipe could be made.
    drain_pipe: OnceLock<Option<DrainPipe>>,
}

/// While the thread cap or max_children is reached the loop does not
/// accept; it looks again this often (a finishing thread also wakes it).
const CAPACITY_RECHECK: Duration = Duration::from_millis(20);

/// A blocking-mode datagram server under load finds its next datagram
/// already queued when it is done with one: it then reads it at once
/// (recvfrom with MSG_DONTWAIT) rather than polling first, one system call
/// fewer per request. When the queue was empty, the read was a call for
/// nothing (at a single client, every time): the next such tries wait for
/// 1, 3, 7 ... up to MAX_SKIP requests taken through poll.
///
/// The same for a stream listener in SS_THREADING and SS_FORKING, whose
/// serving thread only accepts (the request runs elsewhere): under load
/// the next connection is already in the backlog when the last one has
/// been handed over, and the non-blocking listener's accept4 takes it
/// without the poll (EAGAIN when there is none).
struct QueuedDatagrams {
    enabled: bool,
    skip: u32,
    backoff: u32,
}

const MAX_SKIP: u32 = 63;

/// SS_SYNC datagram serving as the C loop does it: one blocking
/// recvfrom per datagram (SO_RCVTIMEO bounding it) instead of a poll and a
/// recvfrom, while serve_forever runs with capacity. What the poll also
/// waited for, shutdown, drain and close, each send an empty datagram from
/// the server's receive waker (transport::receive_waker), which ends the
/// recvfrom and is recognised by its sender and dropped; the flags are
/// looked at before every receive. Not for an adopted socket (another
/// process may share it and take the wake-up, which would then be seen
/// only after the poll interval, as it would if the program itself forked
/// more readers of the socket) nor one SO_REUSEPORT shares; those, and
/// servers whose waker could not be made, poll.
struct BlockingReceive<'a> {
    server: &'a Server,
    socket: &'a Socket,
    /// Sender of the wake-ups.
    waker: &'a SockAddr,
}

/// What one blocking turn did.
enum Turn {
    /// A datagram was handled, or the receive timed out or was woken.
    Served,
    Stop(Wake),
    /// At the cap of workers: take the poll loop's turn.
    Capped,
}

impl<'a> BlockingReceive<'a> {
    /// Switches the socket to blocking receives, if this server can.
    fn enter(server: &'a Arc<Server>, socket: &'a Socket) -> Option<Self> {
        // SS_SYNC only (the goal measured): the other blocking modes keep
        // their serving thread's wait in poll, where tests look for it.
        if server.config.transport.is_stream()
            || server.config.concurrency != Concurrency::Sync
            || server.adopted
        {
            return None;
        }
        let waker = server
            .receive_waker
            .get_or_init(|| ReceiveWaker::new(socket))
            .as_ref()?;
        // As long as the poll loop's waits (service_actions runs as
        // often); at least 1 ms: a timeval of zero means no timeout.
        let wait = server.config.poll_interval.max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait)).ok()?;
        let receive = BlockingReceive {
            server,
            socket,
            waker: &waker.address,
        };
        // From here on Drop puts the socket back as it was.
        socket.set_nonblocking(false).ok()?;
        server
            .blocked_receive
            .store(waker.socket.as_raw_fd(), Ordering::SeqCst);
        Some(receive)
    }

    fn turn(&self, server: &Arc<Server>, socket: &Arc<Socket>, next_service: &mut Instant) -> Turn {
        // After `blocked_receive` was set: a stop asked for before that
        // is seen here, one asked for after sends a wake-up.
        if let Some(wake) = server.asked_to_stop() {
            return Turn::Stop(wake);
        }
        if !server.workers.has_capacity(server) {
            return Turn::Capped;
        }
        let served = match server.take_datagram(socket, Some(self.waker)) {
            Ok(true) => true,
            Ok(false) => {
                // Timed out (or woken): service_actions every poll
                // interval, as the poll loop runs it.
                if Instant::now() < *next_service {
                    return Turn::Served;
                }
                false
            }
            Err(e) => {
                server.handler.handle_error(None, &e);
                server.pause_after_error();
                false
            }
        };
        server.handler.service_actions(server);
        server.workers.reap(server);
        // A datagram served is followed by service_actions anyway (as in
        // Python's loop): the clock is read only for the idle case, not
        // once per datagram.
        if !served {
            *next_service = Instant::now() + server.config.poll_interval;
        }
        Turn::Served
    }
}

impl Drop for BlockingReceive<'_> {
    fn drop(&mut self) {
        self.server.blocked_receive.store(-1, Ordering::SeqCst);
        let _ = self.socket.set_nonblocking(true);
        let _ = self.socket.set_read_timeout(None);
    }
}

/// The server's own socket that wakes a blocking receive (see
/// BlockingReceive), closed in forked request children.
struct ReceiveWaker {
    socket: Socket,
    /// Its address, as the server sees it as a sender.
    address: SockAddr,
    _in_children: ChildCloses,
}

impl ReceiveWaker {
    fn new(server: &Socket) -> Option<ReceiveWaker> {
        let (socket, address) = transport::receive_waker(server)?;
        let in_children = ChildCloses::register(socket.as_raw_fd());
        Some(ReceiveWaker {
            socket,
            address,
            _in_children: in_children,
        })
    }
}

/// What a turn without a poll found.
enum Queued {
    /// A request, taken and dispatched (or an error, reported).
    Taken,
    /// Shutdown, close or a drain was asked for.
    Stop(Wake),
    /// Nothing (or not tried): wait with poll.
    Empty,
}

impl QueuedDatagrams {
    fn new(enabled: bool) -> Self {
        QueuedDatagrams {
            enabled,
            skip: 0,
            backoff: 0,
        }
    }

    fn try_now(&mut self) -> bool {
        if !self.enabled {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    fn found(&mut self, found: bool) {
        if found {
            self.backoff = 0;
        } else {
            self.backoff = (self.backoff * 2 + 1).min(MAX_SKIP);
            self.skip = self.backoff;
        }
    }
}

/// Why the loop stopped waiting.
pub(crate) enum Wake {
    Request,
    Timeout,
    ShutDown,
    Closed,
    /// A drain was asked for (ss_server_drain).
    Drain,
}

impl Server {
    /// Creates the server socket and, unless the config says otherwise,
    /// binds and activates it. On failure everything created is released.
    pub fn new(config: &Config, address: &str, handler: Box<dyn Handler>) -> Result<Arc<Server>> {
        check_event_handler(config, &*handler)?;
        let parsed = ServerAddress::parse(address, config.transport.is_unix())?;
        let socket = transport::create_socket(config, &parsed)?;
        let waker = Waker::new()?;
        let server = Server::assemble(config, parsed, handler, socket, waker, false);
        if config.bind_and_activate {
            server.bind()?;
            server.activate()?;
        }
        Ok(server)
    }

    /// Adopts an already bound (and maybe listening) socket, e.g. one
    /// passed by systemd: checks it fits the transport
    /// (transport::inspect_adopted), makes it non-blocking and
    /// close-on-exec, and listens on a stream socket not yet listening
    /// unless the config turned bind_and_activate off (then `activate`
    /// does). The server owns the descriptor from then on and closes it in
    /// close; it never removes a Unix socket file it did not create. On
    /// failure the descriptor is handed back unchanged with the error.
    pub fn from_fd(
        config: &Config,
        fd: OwnedFd,
        handler: Box<dyn Handler>,
    ) -> std::result::Result<Arc<Server>, (Error, OwnedFd)> {
        let adopted = check_event_handler(config, &*handler)
            .and_then(|()| transport::inspect_adopted(config, fd.as_fd()));
        let mut adopted = match adopted {
            Ok(adopted) => adopted,
            Err(e) => return Err((e, fd)),
        };
        let waker = match Waker::new() {
            Ok(waker) => waker,
            Err(e) => return Err((e, fd)),
        };
        let listen = config.bind_and_activate;
        if let Err(e) = transport::prepare_adopted(config, fd.as_fd(), &mut adopted, listen) {
            return Err((e, fd));
        }
        let transport::Adopted {
            bound,
            address,
            listening,
        } = adopted;
        let server = Server::assemble(config, address, handler, Socket::from(fd), waker, true);
        {
            let mut st = server.lock();
            let _ = server.bound.set(bound);
            // No unix_file: the file (if any) is not this server's to remove.
            let ready = if config.transport.is_stream() {
                listening
            } else {
                config.bind_and_activate
            };
            st.phase = if ready { Phase::Active } else { Phase::Bound };
        }
        Ok(server)
    }

    /// The server around a socket not yet bound (phase Created).
    fn assemble(
        config: &Config,
        parsed: ServerAddress,
        handler: Box<dyn Handler>,
        socket: Socket,
        waker: Waker,
        adopted: bool,
    ) -> Arc<Server> {
        let socket_in_children = ChildCloses::register(socket.as_raw_fd());
        let server = Arc::new(Server {
            config: config.clone(),
            address: parsed,
            handler,
            workers: Workers::new(config),
            waker_in_children: ChildCloses::register(waker.fd()),
            waker,
            socket_registered: socket_in_children.is_registered(),
            adopted,
            shutdown_requested: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            fileno: AtomicI32::new(socket.as_raw_fd()),
            state: Mutex::new(State {
                phase: Phase::Created,
                socket_in_children: Some(socket_in_children),
                socket: Some(Arc::new(socket)),
                unix_file: None,
                serving: None,
                close: CloseProgress::NotStarted,
            }),
            loop_exited: Condvar::new(),
            close_done: Condvar::new(),
            bound: OnceLock::new(),
            datagram_buffers: Mutex::new(Default::default()),
            receive_waker: OnceLock::new(),
            blocked_receive: AtomicI32::new(-1),
            lingerer: Lingerer::new(config.lingering_time, config.lingering_timeout),
            acceptor: transport::Acceptor::new(config),
            drain: DrainState::default(),
            active: Arc::default(),
            drain_pipe: OnceLock::new(),
        });
        if config.concurrency == Concurrency::Forking {
            // Made now, not at the first fork, so that the server's
            // descriptors do not change once it serves.
            server.prepare_drain_pipe();
        }
        server
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn handler(&self) -> &dyn Handler {
        &*self.handler
    }

    /// The event callbacks; Server::new made sure an event-mode server has
    /// them, and only event mode calls this.
    pub(crate) fn event_handler(&self) -> &dyn EventHandler {
        match self.handler.event_handler() {
            Some(events) => events,
            None => &NoEventHandler,
        }
    }

    pub(crate) fn workers(&self) -> &Workers {
        &self.workers
    }

    /// Closes request connections, lingering when needed (crate::linger).
    pub(crate) fn lingerer(&self) -> &Lingerer {
        &self.lingerer
    }

    /// The blocking modes' datagram buffers (crate::request::DatagramBuffers).
    pub(crate) fn datagram_buffers(&self) -> &Mutex<crate::request::DatagramBuffers> {
        &self.datagram_buffers
    }

    /// Accepting, shared by the serve loop and the event loops.
    pub(crate) fn acceptor(&self) -> &transport::Acceptor {
        &self.acceptor
    }

    /// Wakes the loop so it looks at its state again (a spurious wake is
    /// harmless).
    pub(crate) fn wake(&self) {
        self.waker.notify();
    }

    /// Requests waiting in the thread pool's queue. Refused in a forked
    /// child (the queue's lock may have been held at fork time).
    pub fn queued_requests(&self) -> Result<usize> {
        refuse_in_forked_child("queued_requests")?;
        Ok(self.workers.queued())
    }

    /// Handler threads and child processes still running. Refused in a
    /// forked child, as queued_requests.
    pub fn live_workers(&self) -> Result<(usize, usize)> {
        refuse_in_forked_child("live_workers")?;
        Ok(self.workers.live())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// The state lock for a public call: refused, before locking, in a
    /// forked child, where another parent thread may have held it at fork
    /// time and nothing would ever release it.
    fn lock_for(&self, what: &str) -> Result<MutexGuard<'_, State>> {
        refuse_in_forked_child(what)?;
        Ok(self.lock())
    }

    /// Right after fork, in the child: closes the child's copies of what
    /// belongs to the serving parent, so that the parent's close really
    /// frees the port while the child still runs (the registered ones are
    /// closed with every other server's by the caller). A datagram request
    /// replies through the server socket, so that one stays open there.
    pub(crate) fn release_in_forked_child(&self) {
        // Read without the state lock, which another parent thread may
        // have held at fork time.
        if self.config.transport.is_stream() {
            let fd = self.fileno.swap(-1, Ordering::SeqCst);
            if fd >= 0 && !self.socket_registered {
                // The Socket in State still names this number, but is never
                // dropped in the child (it leaves with `_exit`).
                crate::sys::close_raw(fd);
            }
        }
        if !self.waker_in_children.is_registered() {
            self.waker.close_in_forked_child();
        }
    }

    /// Python's server_bind: binds and records the real address.
    pub fn bind(&self) -> Result<()> {
        let mut st = self.lock_for("bind")?;
        match st.phase {
            Phase::Created => {}
            Phase::Closed => return Err(closed()),
            _ => return Err(Error::wrong_state("the server is already bound")),
        }
        let socket = st.socket.clone().ok_or_else(closed)?;
        let (bound, file) = transport::bind(&socket, &self.address)?;
        // Phase::Created is left once, under the lock: set only here.
        let _ = self.bound.set(bound);
        st.unix_file = file;
        st.phase = Phase::Bound;
        Ok(())
    }

    /// Python's server_activate: listen for stream transports.
    pub fn activate(&self) -> Result<()> {
        let mut st = self.lock_for("activate")?;
        match st.phase {
            Phase::Bound => {}
            Phase::Created => {
                return Err(Error::wrong_state("bind the server before activating it"))
            }
            Phase::Active => return Err(Error::wrong_state("the server is already activated")),
            Phase::Closed => return Err(closed()),
        }
        let socket = st.socket.clone().ok_or_else(closed)?;
        transport::activate(&socket, &self.config)?;
        st.phase = Phase::Active;
        Ok(())
    }

    /// The server socket's fd, or -1 once closed.
    pub fn fileno(&self) -> RawFd {
        self.fileno.load(Ordering::SeqCst)
    }

    /// The bound address as a string, port 0 resolved. Takes no lock.
    pub fn address(&self) -> Result<String> {
        match self.bound.get() {
            Some(a) => Ok(format_sockaddr(a)),
            None if self.fileno() < 0 => Err(closed()),
            None => Err(Error::wrong_state("the server is not bound yet")),
        }
    }

    pub fn port(&self) -> Result<u16> {
        if self.config.transport.is_unix() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "Unix sockets have no port",
            ));
        }
        self.bound
            .get()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .ok_or_else(|| Error::wrong_state("the server is not bound yet"))
    }

    /// Asks the running (or next) serve_forever / handle_request to return.
    /// Async-signal-safe: an atomic store and one write(2).
    pub fn shutdown(&self) {
        self.shutdown_requested.store(true, Ordering::SeqCst);
        self.waker.notify();
        self.wake_blocked_receive();
    }

    /// Wakes serve_forever blocked in recvfrom (BlockingReceive), if it
    /// is: an empty datagram from the receive waker. Async-signal-safe,
    /// as Waker::notify: one send(2), no lock, errno kept.
    fn wake_blocked_receive(&self) {
        let fd = self.blocked_receive.load(Ordering::SeqCst);
        if fd < 0 || in_forked_child() {
            return;
        }
        let saved = nix::errno::Errno::last_raw();
        // Ignored on purpose: a full queue means the receive is not
        // blocked (it has datagrams to take, and sees the flags after).
        let _ = nix::sys::socket::send(
            fd,
            &[],
            nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        );
        nix::errno::Errno::set_raw(saved);
    }

    fn take_shutdown(&self) -> bool {
        // Read first: a swap writes the server's page every loop turn (a
        // copy-on-write fault per connection in an SS_FORKING parent).
        self.shutdown_requested.load(Ordering::SeqCst)
            && self.shutdown_requested.swap(false, Ordering::SeqCst)
    }

    /// Asks the running (or next) serve_forever to drain: stop accepting at
    /// once, let what is in flight finish, cut what is left `within` from
    /// now, then return (see crate::drain and ss_server_drain). A second
    /// call may bring the deadline forward, never push it back.
    /// Async-signal-safe: clock_gettime, atomics and one write(2).
    pub fn drain(&self, within: Duration) {
        self.drain.request(within);
        self.waker.notify();
        self.wake_blocked_receive();
    }

    /// Whether a drain has been asked for (for good: a drained server does
    /// not serve again): a keep-alive handler of a blocking mode stops
    /// between requests. Lock-free.
    pub fn draining(&self) -> bool {
        self.drain.requested()
    }

    /// Requests and connections the last drain cut at its deadline.
    pub fn drain_cut(&self) -> usize {
        self.drain.cut()
    }

    /// The waker's descriptor, for an SS_SYNC read that must see a drain
    /// begin (it is on the serving thread; it never drains the waker).
    pub(crate) fn waker_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.waker.as_fd()
    }

    /// Before a fork: makes sure the pipe that tells children of a drain
    /// exists (see crate::drain::DrainPipe).
    pub(crate) fn prepare_drain_pipe(&self) {
        self.drain_pipe.get_or_init(DrainPipe::new);
    }

    /// In a forked child: the read end that reports end-of-file once the
    /// parent drains. Lock-free.
    pub(crate) fn drain_pipe_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.drain_pipe.get()?.as_ref().map(DrainPipe::read_end)
    }

    pub(crate) fn drain_state(&self) -> &DrainState {
        &self.drain
    }

    /// Stops the listener for good: a stream listener is shut down, so that
    /// the kernel refuses new connections (and resets those not yet
    /// accepted) and a successor may bind the port; its descriptor stays
    /// open until close. A datagram socket is only no longer read (handler
    /// threads still reply through it). An adopted listener may be shared
    /// with another process (systemd socket activation, a parent): shut
    /// down it would stop there too, so it only stops being watched, and
    /// the connections queued in it wait for the next process.
    fn shut_listener(&self) {
        if !self.config.transport.is_stream() || self.adopted {
            return;
        }
        let socket = self.lock().socket.clone();
        if let Some(socket) = socket {
            let _ = socket.shutdown(std::net::Shutdown::Read);
        }
    }

    /// Waits until the waker is notified or `until` passes.
    fn wait_wake(&self, until: Instant) -> Result<()> {
        let mut fds = [PollFd::new(self.waker.as_fd(), PollFlags::POLLIN)];
        poll_fds_until(&mut fds, Some(until)).map_err(|e| Error::io("poll", e))?;
        let woken = fds[0].revents().is_some_and(|r| !r.is_empty());
        if woken {
            self.waker.drain();
        }
        Ok(())
    }

    /// The end of a drain: Ok when everything finished, else Timeout
    /// saying how much the deadline cut.
    fn drain_result(&self) -> Result<()> {
        self.drain.finish();
        match self.drain.cut() {
            0 => Ok(()),
            cut => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "the drain deadline passed: {cut} connection(s) or request(s) still open \
                     were cut"
                ),
            )),
        }
    }

    /// A blocking mode's drain, on the serving thread: the listener is no
    /// longer served (nor polled), and the loop waits until no handler
    /// thread, pool request (queued or running) or child process is left,
    /// running service_actions every poll interval; at the deadline (or at
    /// once on shutdown) it cuts what is left (see Workers::cut) and
    /// returns.
    fn drain_blocking(self: &Arc<Self>) -> Result<()> {
        self.drain.begin();
        self.shut_listener();
        if let Some(Some(pipe)) = self.drain_pipe.get() {
            pipe.signal_children();
        }
        let mut next_service = Instant::now() + self.config.poll_interval;
        loop {
            if self.take_shutdown() {
                self.drain.expire_now();
            }
            if self.closing.load(Ordering::SeqCst) {
                self.drain.add_cut(self.workers.cut(self, &self.active));
                self.drain.finish();
                return Err(closed());
            }
            // Handlers waiting for their client's next request return
            // (their read ends), as idle connections close in event mode.
            self.active.close_idle();
            // Lingering closes count too: closing them would reset answers
            // still on their way (the deadline does not cut them; close
            // does).
            if self.workers.in_flight(self) + self.lingerer.lingering() == 0 {
                return self.drain_result();
            }
            if self.drain.overdue() {
                self.drain.add_cut(self.workers.cut(self, &self.active));
                return self.drain_result();
            }
            // Finishing threads and pool requests wake the loop; children
            // are looked at again every CAPACITY_RECHECK.
            let left = Duration::from_millis(self.drain.remaining_ms());
            let until = (Instant::now() + left.min(CAPACITY_RECHECK)).min(next_service);
            self.wait_wake(until)?;
            if Instant::now() >= next_service {
                self.handler.service_actions(self);
                next_service = Instant::now() + self.config.poll_interval;
            }
        }
    }

    /// Event mode's drain, on the serving thread: the loops stop accepting
    /// and close their connections as they go idle (crate::event's
    /// graceful part), cutting what is left at the deadline; this waits
    /// until every loop reports it has no connection left, running
    /// service_actions every poll interval. Shutdown ends the drain at
    /// once (as its deadline would); close stops it (the loops then close
    /// what is left, as on shutdown).
    fn coordinate_drain(&self, events: &crate::event::EventLoops) -> Result<()> {
        self.drain.begin();
        // Loops ignore the listener once a drain is asked for; each takes
        // it out of its epoll on its next turn.
        self.shut_listener();
        events.wake_all();
        loop {
            if self.take_shutdown() {
                self.drain.expire_now();
                events.wake_all();
            }
            if self.closing.load(Ordering::SeqCst) {
                self.drain.finish();
                return Err(closed());
            }
            if events.all_drained() {
                return self.drain_result();
            }
            self.wait_wake(Instant::now() + self.config.poll_interval)?;
            self.handler.service_actions(self);
        }
    }

    fn enter_loop(&self) -> Result<(Arc<Socket>, LoopGuard<'_>)> {
        let mut st = self.lock_for("serving")?;
        match st.phase {
            Phase::Active => {}
            Phase::Closed => return Err(closed()),
            _ => {
                return Err(Error::wrong_state(
                    "the server is not activated: bind and activate it first",
                ))
            }
        }
        if st.serving.is_some() {
            return Err(Error::wrong_state(
                "the server is already serving (serve_forever or handle_request is running)",
            ));
        }
        if self.drain.finished() {
            return Err(Error::wrong_state(
                "the server was drained (ss_server_drain): its listener is shut down; close it",
            ));
        }
        st.serving = Some(thread::current().id());
        let socket = st.socket.clone().ok_or_else(closed)?;
        Ok((socket, LoopGuard { server: self }))
    }

    /// Waits until a request can be taken, `deadline` passes, or shutdown
    /// or close is asked for. While the concurrency model is at its cap the
    /// socket is left unwatched, so connections wait in the backlog.
    fn wait_for_request(&self, socket: Option<&Socket>, deadline: Option<Instant>) -> Result<Wake> {
        loop {
            // At the cap the socket is not watched, and capacity is looked
            // at again soon; without a socket (event mode's coordinator)
            // there is nothing to recheck.
            let capped = socket.is_some() && !self.workers.has_capacity(self);
            let turn_deadline = match (capped, deadline) {
                (false, _) => deadline,
                (true, None) => Some(Instant::now() + CAPACITY_RECHECK),
                (true, Some(d)) => Some(d.min(Instant::now() + CAPACITY_RECHECK)),
            };
            // The waker, and the socket unless capped; an array, not a Vec:
            // no allocation per turn.
            let watched = socket.filter(|_| !capped);
            let second = watched.map_or(self.waker.as_fd(), |s| s.as_fd());
            let mut all = [
                PollFd::new(self.waker.as_fd(), PollFlags::POLLIN),
                PollFd::new(second, PollFlags::POLLIN),
            ];
            let fds = &mut all[..1 + usize::from(watched.is_some())];
            poll_fds_until(fds, turn_deadline).map_err(|e| Error::io("poll", e))?;
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            let woken = ready(&fds[0]);
            let request = fds.get(1).is_some_and(ready);
            if woken {
                self.waker.drain();
            }
            if let Some(wake) = self.asked_to_stop() {
                return Ok(wake);
            }
            if request {
                return Ok(Wake::Request);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Wake::Timeout);
            }
        }
    }

    /// Shutdown, close or a drain asked for, checked before taking a
    /// request (bpo-35017: no request is taken after shutdown was asked
    /// for; a drain stops accepting at once).
    fn asked_to_stop(&self) -> Option<Wake> {
        if self.take_shutdown() {
            return Some(Wake::ShutDown);
        }
        if self.closing.load(Ordering::SeqCst) {
            return Some(Wake::Closed);
        }
        if self.drain.requested() {
            return Some(Wake::Drain);
        }
        None
    }

    /// Python's serve_forever: handles requests until shutdown (returns Ok)
    /// or close from another thread (returns `Closed`). service_actions
    /// runs once per turn: after each request and every poll interval.
    pub fn serve_forever(self: &Arc<Self>) -> Result<()> {
        let (socket, _guard) = self.enter_loop()?;
        if self.take_shutdown() {
            return Ok(());
        }
        // The model drives the loop: event mode runs its own loops; the
        // blocking modes share the accept loop below.
        if let Some(events) = self.workers.events() {
            return crate::event::serve(self, events, &socket);
        }
        let blocking = BlockingReceive::enter(self, &socket);
        let accepts_only = matches!(
            self.config.concurrency,
            Concurrency::Threading | Concurrency::Forking
        );
        let mut queued = QueuedDatagrams::new(!self.config.transport.is_stream() || accepts_only);
        let mut next_service = Instant::now() + self.config.poll_interval;
        loop {
            if let Some(receive) = &blocking {
                match receive.turn(self, &socket, &mut next_service) {
                    Turn::Served => continue,
                    Turn::Stop(Wake::ShutDown) => return Ok(()),
                    Turn::Stop(Wake::Closed) => return Err(closed()),
                    Turn::Stop(_) => {
                        drop(blocking);
                        return self.drain_blocking();
                    }
                    // At the cap: a turn of the poll loop below.
                    Turn::Capped => {}
                }
            }
            let wake = match self.take_queued(&socket, &mut queued) {
                Queued::Taken => None,
                Queued::Stop(wake) => Some(wake),
                Queued::Empty => {
                    let deadline = Instant::now() + self.config.poll_interval;
                    Some(self.wait_for_request(Some(&socket), Some(deadline))?)
                }
            };
            match wake {
                Some(Wake::ShutDown) => return Ok(()),
                Some(Wake::Closed) => return Err(closed()),
                Some(Wake::Drain) => return self.drain_blocking(),
                None | Some(Wake::Timeout) => {}
                Some(Wake::Request) => {
                    if let Err(e) = self.take_request(&socket) {
                        self.handler.handle_error(None, &e);
                        self.pause_after_error();
                    }
                }
            }
            self.handler.service_actions(self);
            // A turn that found its request queued reaps only now and
            // then (Workers::reap_turn).
            self.workers.reap_turn(self, wake.is_some());
        }
    }

    /// A turn without a poll (see QueuedDatagrams): what asks it to stop,
    /// else the next datagram or connection if one is already queued,
    /// handled here.
    fn take_queued(self: &Arc<Self>, socket: &Arc<Socket>, queued: &mut QueuedDatagrams) -> Queued {
        if !queued.try_now() || !self.workers.has_capacity(self) {
            return Queued::Empty;
        }
        if let Some(wake) = self.asked_to_stop() {
            return Queued::Stop(wake);
        }
        match self.take_request(socket) {
            Ok(found) => {
                queued.found(found);
                if found {
                    Queued::Taken
                } else {
                    Queued::Empty
                }
            }
            Err(e) => {
                self.handler.handle_error(None, &e);
                self.pause_after_error();
                Queued::Taken
            }
        }
    }

    /// Python's handle_request: handles one request, waiting at most the
    /// configured timeout. Returns `Timeout` (after calling handle_timeout)
    /// when none came, `ShutDown` when shutdown was asked for.
    pub fn handle_request(self: &Arc<Self>) -> Result<()> {
        if self.workers.events().is_some() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "handle_request does not apply to event mode: use serve_forever",
            ));
        }
        let (socket, _guard) = self.enter_loop()?;
        if self.take_shutdown() {
            return Err(shut_down());
        }
        let deadline = self.config.timeout.map(|t| Instant::now() + t);
        loop {
            match self.wait_for_request(Some(&socket), deadline)? {
                Wake::ShutDown => return Err(shut_down()),
                Wake::Closed => return Err(closed()),
                // Drained as serve_forever would, then as a shutdown.
                Wake::Drain => {
                    return match self.drain_blocking() {
                        Ok(()) => Err(shut_down()),
                        Err(e) => Err(e),
                    }
                }
                Wake::Timeout => {
                    self.handler.handle_timeout(self);
                    self.workers.reap(self);
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "no request within {} ms",
                            self.config.timeout.unwrap_or_default().as_millis()
                        ),
                    ));
                }
                Wake::Request => match self.take_request(&socket) {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(e) => {
                        // Reported as serve_forever does, and returned.
                        self.handler.handle_error(None, &e);
                        return Err(e);
                    }
                },
            }
        }
    }

    /// The serving thread's part in event mode, while the loops run: wait
    /// for shutdown or close, running service_actions every poll interval.
    pub(crate) fn coordinate_event_loops(&self) -> Result<()> {
        loop {
            let deadline = Instant::now() + self.config.poll_interval;
            match self.wait_for_request(None, Some(deadline))? {
                Wake::ShutDown => return Ok(()),
                Wake::Closed => return Err(closed()),
                Wake::Drain => {
                    if let Some(events) = self.workers.events() {
                        return self.coordinate_drain(events);
                    }
                }
                // No socket is watched here: only the poll interval passes.
                Wake::Timeout | Wake::Request => {}
            }
            self.handler.service_actions(self);
            self.workers.reap(self);
        }
    }

    /// Event mode: its loops (post a job to a connection, count open
    /// connections); None in the blocking modes.
    pub fn event_loops(&self) -> Option<&crate::event::EventLoops> {
        self.workers.events().map(|e| &**e)
    }

    /// Takes one request off the socket and dispatches it. Ok(false) when
    /// there was nothing to take after all (another process took it).
    fn take_request(self: &Arc<Self>, socket: &Arc<Socket>) -> Result<bool> {
        let request = if self.config.transport.is_stream() {
            match self
                .acceptor
                .accept(socket, &self.config, &*self.handler, false)
            {
                Accepted::Conn(conn, peer, permit) => {
                    // SS_FORKING forks before making a request, if it can.
                    let Some((conn, permit)) =
                        self.workers.fork_connection(self, conn, &peer, permit)
                    else {
                        return Ok(true);
                    };
                    let fd = conn.as_raw_fd();
                    let mut request = Request::stream(self.clone(), conn, peer);
                    // Cut by a drain deadline while it is open here.
                    request.set_active(self.active.register(fd));
                    // Held until the request is closed (in SS_FORKING,
                    // until its child is reaped).
                    request.set_peer_permit(permit);
                    request
                }
                Accepted::Nothing | Accepted::Again => return Ok(false),
                Accepted::Pause => {
                    // Already reported, at most once a second.
                    self.pause_after_error();
                    return Ok(false);
                }
            }
        } else {
            let waker = self
                .receive_waker
                .get()
                .and_then(|w| w.as_ref())
                .map(|w| &w.address);
            return self.take_datagram(socket, waker);
        };
        self.dispatch(request);
        Ok(true)
    }

    /// Takes one datagram as a request and dispatches it; a wake-up from
    /// `waker` (see BlockingReceive), perhaps left over from an earlier
    /// run, is dropped as nothing taken.
    fn take_datagram(
        self: &Arc<Self>,
        socket: &Arc<Socket>,
        waker: Option<&SockAddr>,
    ) -> Result<bool> {
        // One receive buffer, reused; each request gets a copy in a reused
        // buffer of its own.
        let mut slot = None;
        let mut bufs = crate::sync::lock(&self.datagram_buffers);
        let taken = Request::receive_datagram(self, socket, &mut bufs, &mut slot)?;
        drop(bufs);
        let Some(request) = slot else {
            // Nothing pending, or an over-long datagram dropped.
            return Ok(taken);
        };
        // The wake-up is an empty datagram: the length is looked at first,
        // so that a request's sender is not compared with the waker's
        // address (a memcmp) per datagram.
        let empty = request.datagram_data().is_some_and(<[u8]>::is_empty);
        if empty && waker.is_some_and(|w| w == request.client_sockaddr()) {
            request.shutdown();
            return Ok(false);
        }
        self.dispatch(request);
        Ok(true)
    }

    fn dispatch(self: &Arc<Self>, mut request: Request) {
        // As Python's _handle_request_noblock: verified on the serving
        // thread, before the concurrency model gets the request.
        if !self.handler.verify_request(&mut request) {
            request.shutdown();
            return;
        }
        self.workers.process(self, request);
    }

    fn pause_after_error(&self) {
        let mut fds = [PollFd::new(self.waker.as_fd(), PollFlags::POLLIN)];
        let _ = poll_fds_until(
            &mut fds,
            Some(Instant::now() + transport::ACCEPT_ERROR_PAUSE),
        );
    }

    /// Python's server_close: stops a loop running in another thread, waits
    /// for it, closes the socket and removes the Unix socket file it made.
    /// Idempotent and single-flight: the first caller does the work; a
    /// concurrent caller waits until that is done, except one of this
    /// server's own handler threads or pool workers, which returns at once
    /// (the first caller may be waiting for that very thread). A later
    /// call waits for the threads that close left (wait_closers_workers).
    /// Refused on
    /// the serving thread itself (from a handler or hook), on event loop
    /// threads, where waiting for the loop would deadlock, from a callback
    /// that close itself runs (handle_error for a reaped child), and in a
    /// forked child (before taking any lock).
    pub fn close(&self) -> Result<()> {
        let mut st = self.lock_for("close")?;
        if st.close == CloseProgress::Done {
            drop(st);
            self.wait_closers_workers();
            return Ok(());
        }
        // Waiting for the loop from inside it would wait for itself (and so
        // would waiting for a close that waits for this loop).
        if st.serving == Some(thread::current().id())
            || current_worker_is(WorkerKind::EventLoop, self)
        {
            return Err(Error::wrong_state(
                "close called from inside this server's own loop (a handler, hook or \
                 event callback); call shutdown there and close after serve_forever returns",
            ));
        }
        if let CloseProgress::Running(closer) = st.close {
            if closer == thread::current().id() {
                return Err(Error::wrong_state(
                    "close called from a callback that close itself runs (handle_error); \
                     the close is under way",
                ));
            }
            // The close under way may be waiting for this very thread.
            if current_worker_is(WorkerKind::JoinableThread, self)
                || current_worker_is(WorkerKind::PoolWorker, self)
            {
                return Ok(());
            }
            while st.close != CloseProgress::Done {
                st = crate::sync::wait(&self.close_done, st);
            }
            drop(st);
            self.wait_closers_workers();
            return Ok(());
        }
        st.close = CloseProgress::Running(thread::current().id());
        drop(st);
        // Marks close done and wakes concurrent closers, even on a panic.
        let _done = CloseDone { server: self };
        self.closing.store(true, Ordering::SeqCst);
        self.waker.notify();
        self.wake_blocked_receive();
        let mut st = self.lock();
        while st.serving.is_some() {
            st = crate::sync::wait(&self.loop_exited, st);
        }
        st.phase = Phase::Closed;
        // Out of the children's table, and fileno() no longer naming it,
        // before the descriptor can close: a child forked meanwhile must not
        // close whatever descriptor reuses the number.
        st.socket_in_children = None;
        self.fileno.store(-1, Ordering::SeqCst);
        st.socket = None;
        if let Some(file) = st.unix_file.take() {
            file.remove();
        }
        drop(st);
        self.workers.close(self, self.config.block_on_close);
        // Connections still lingering are closed now: nothing of the
        // server (thread, descriptors) outlives close.
        self.lingerer.stop();
        Ok(())
    }

    /// A close after the first one has finished: waits (block_on_close) for
    /// what that close could not, when it ran on a handler thread or pool
    /// worker of this server: that thread itself, still running after its
    /// close returned. As Python's server_close, which joins the threads
    /// left on every call. A handler thread or pool worker of this server
    /// does not wait: two of them would each wait for the other.
    fn wait_closers_workers(&self) {
        if current_worker_is(WorkerKind::JoinableThread, self)
            || current_worker_is(WorkerKind::PoolWorker, self)
        {
            return;
        }
        self.workers.close(self, self.config.block_on_close);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let st = crate::sync::get_mut(&mut self.state);
        if let Some(file) = st.unix_file.take() {
            file.remove();
        }
    }
}

/// Marks the loop as left, even when it leaves by a panic, and wakes close.
struct LoopGuard<'a> {
    server: &'a Server,
}

/// Ends a close in progress: concurrent closers may return.
struct CloseDone<'a> {
    server: &'a Server,
}

impl Drop for CloseDone<'_> {
    fn drop(&mut self) {
        self.server.lock().close = CloseProgress::Done;
        self.server.close_done.notify_all();
    }
}

impl Drop for LoopGuard<'_> {
    fn drop(&mut self) {
        self.server.lock().serving = None;
        self.server.loop_exited.notify_all();
    }
}

/// Event mode needs the event callbacks.
fn check_event_handler(config: &Config, handler: &dyn Handler) -> Result<()> {
    if config.concurrency == Concurrency::Event && handler.event_handler().is_none() {
        return Err(Error::invalid(
            "event mode needs a handler with event callbacks (Handler::event_handler)",
        ));
    }
    Ok(())
}

/// What a forked request child may not do: it has a copy of the server,
/// whose locks another parent thread may have held at fork time.
fn refuse_in_forked_child(what: &str) -> Result<()> {
    if in_forked_child() {
        return Err(Error::wrong_state(format!(
            "{what} called in a forked request child; the server belongs to the parent process"
        )));
    }
    Ok(())
}

fn closed() -> Error {
    Error::new(ErrorKind::Closed, "the server is closed")
}

fn shut_down() -> Error {
    Error::new(
        ErrorKind::ShutDown,
        "returned because shutdown was requested",
    )
}

/// What `event_handler` gives for a handler without event callbacks
/// (unreachable: Server::new refuses such a handler in event mode): the
/// defaults, which refuse data.
struct NoEventHandler;

impl EventHandler for NoEventHandler {}
