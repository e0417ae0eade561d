//! Request I/O for handlers (Python's StreamRequestHandler and
//! DatagramRequestHandler): buffered reads, readline, writes, and the
//! datagram reply sent when the handler finishes.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use socket2::{SockAddr, Socket};

use crate::address::format_sockaddr;
use crate::config::{check_request_timeout, Concurrency};
use crate::error::{Error, ErrorKind, Result};
use crate::peer_limit::PeerPermit;
use crate::server::Server;
use crate::sys::in_forked_child;
use crate::sys::{as_uninit, recv_fd, send_fd, wait_ready};
use crate::transport::{self, has_reply_address};

/// Longest a blocking-mode datagram reply waits for room before it is
/// dropped and reported (SS_ERR_WOULD_BLOCK); shorter if the request
/// timeout or deadline ends sooner. A Unix datagram client that does not
/// read its replies fills its queue, and poll(2) cannot tell when it has
/// room again (it reports an unconnected AF_UNIX socket writable while
/// sendto() fails with EAGAIN), so the wait is a bounded retry.
pub const DATAGRAM_REPLY_WAIT: Duration = Duration::from_millis(50);

/// How far before the request deadline a read's per-operation timeout
/// must end for the kernel to time it (SO_RCVTIMEO counts in jiffies,
/// rounded up: 4 ms at HZ=250); closer to the deadline, poll times it.
const KERNEL_TIMEOUT_SLACK: Duration = Duration::from_millis(10);

/// One request: a stream connection or one datagram, with its client.
/// Small, so that handing it on by value (through the concurrency models
/// to finish and close) moves three words, not its whole state; a
/// datagram request's state box is reused, as is an SS_THREADING
/// connection's (see [`DatagramBuffers`]).
pub struct Request {
    server: Arc<Server>,
    /// A datagram request's socket, the server's: replies go out through
    /// it. Outside `s`, so that a state kept for reuse holds no socket
    /// open. None for a stream (StreamIo owns its socket).
    socket: Option<Arc<Socket>>,
    s: Box<State>,
}

/// A request's state (see [`Request`]).
struct State {
    client: SockAddr,
    /// Formatted when first asked for: most datagram handlers never do.
    client_text: OnceLock<String>,
    /// The per-operation timeout and the request's deadline, kept as the
    /// operations take them (by reference: no copy per call).
    limits: Limits,
    /// Its place among the requests a drain deadline cuts (blocking-mode
    /// streams): declared before `io`, so that it leaves the table before
    /// the socket is closed.
    active: Option<crate::drain::ActiveEntry>,
    io: RequestIo,
    in_handle: bool,
    hand_off: Option<HandOff>,
    /// The handler's own per-request value (a C pointer), opaque here.
    data: usize,
    /// This connection's place in the per-IP limit, freed with the request.
    peer_permit: Option<PeerPermit>,
}

impl State {
    fn new(server: &Server, client: SockAddr, io: RequestIo) -> State {
        State {
            client_text: OnceLock::new(),
            client,
            limits: State::limits_for(server),
            active: None,
            io,
            in_handle: false,
            hand_off: None,
            data: 0,
            peer_permit: None,
        }
    }

    /// Clears what a finished request leaves in its state (its buffers
    /// stay), for the state's reuse by another request. Inline: it is on
    /// every datagram's path.
    #[inline(always)]
    fn reset_for_reuse(&mut self) {
        if self.client_text.get().is_some() {
            self.client_text = OnceLock::new();
        }
        self.active = None;
        self.in_handle = false;
        self.hand_off = None;
        self.data = 0;
        self.peer_permit = None;
    }

    /// A new request's timeout and deadline.
    fn limits_for(server: &Server) -> Limits {
        let config = server.config();
        // Event mode bounds its connections itself; its datagram requests
        // never wait.
        let deadline = config
            .request_deadline
            .filter(|_| config.concurrency != Concurrency::Event)
            .map(|d| (Instant::now() + d, d));
        Limits {
            timeout: config.request_timeout,
            deadline,
        }
    }
}

/// Where a handed-off request continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOffTarget {
    Thread,
    Fork,
}

/// The rest of a request's handling, run after `handle` returns.
pub type Continuation = Box<dyn FnOnce(&mut Request) -> Result<()> + Send>;

pub struct HandOff {
    pub target: HandOffTarget,
    pub continuation: Continuation,
}

enum RequestIo {
    Stream(StreamIo),
    Datagram(DatagramIo),
}

struct StreamIo {
    socket: Socket,
    /// Read buffer; `rbuf[rpos..rend]` holds bytes read but not yet consumed.
    /// Allocated (`rbuf_size` bytes) by the first read that needs it: a
    /// handler whose reads are all as large bypasses it (and in SS_FORKING
    /// the serving parent, which makes the request, never touches it).
    rbuf: Box<[u8]>,
    rbuf_size: usize,
    rpos: usize,
    rend: usize,
    /// Pending output when the server has a write buffer (Python's wbufsize).
    wbuf: Vec<u8>,
    wcap: usize,
    /// Bytes went out since bytes last came in (or none came yet): the
    /// handler has answered what it read, so a read now, with nothing
    /// buffered, waits for the client's next request (a keep-alive
    /// connection between requests, or one not yet used).
    answered: std::cell::Cell<bool>,
    /// Some bytes went out on this connection.
    wrote: std::cell::Cell<bool>,
    /// A read saw the end of the client's stream (or a reset): at close no
    /// input can be pending, so the lingerer need not peek for any.
    ended: std::cell::Cell<bool>,
    /// Set (for a drain to see, crate::drain) while such a read waits.
    between: Option<Between>,
    /// The SO_RCVTIMEO now set on the socket, as asked before rounding to
    /// microseconds (None: none, the kernel's default): a read bounded by the per-operation timeout is then one
    /// blocking recv, which the kernel ends, instead of recv(MSG_DONTWAIT)
    /// + poll + recv. Set when the timeout first differs, not per read.
    rcvtimeo: std::cell::Cell<Option<Duration>>,
    /// The per-operation timeout that SO_RCVTIMEO is now set for (as
    /// recv_kernel_timed sets it, with the slack), if it is: what a read's
    /// fast path compares, with no arithmetic.
    timed_for: std::cell::Cell<Option<Duration>>,
    /// fileno() handed the descriptor out: the handler's own blocking
    /// reads on it must not time out, so no SO_RCVTIMEO is set any more.
    exposed: std::cell::Cell<bool>,
}

/// What a stream request's read between requests needs for a drain.
struct Between {
    /// Set while such a read waits (the drain's table holds it too).
    flag: Arc<std::sync::atomic::AtomicBool>,
    server: Arc<Server>,
    /// SS_SYNC: the serving thread is this one, so the read itself watches
    /// the server's waker for a drain.
    sync: bool,
}

struct DatagramIo {
    /// The datagram is `data[..len]`: an event loop lends its whole
    /// receive buffer, which it takes back after the handler ran.
    data: Vec<u8>,
    len: usize,
    pos: usize,
    /// Collected writes (Python's wfile); sent when the handler finishes if
    /// the handler wrote anything (`wrote`, even zero bytes). Reused: a
    /// blocking mode's buffers come from, and go back to, the server's
    /// [`DatagramBuffers`].
    reply: Vec<u8>,
    wrote: bool,
    /// Event mode: the batch's outgoing replies, lent by the loop, which
    /// sends them all with one sendmmsg after the batch
    /// (crate::event::datagram); None: replies are sent at once.
    outbox: Option<Outbox>,
}

/// A blocking-mode server's datagram buffers: the receive buffer, and
/// spare buffers for requests' data and replies, which a request takes
/// when it is made and gives back when it is shut down, so that a datagram
/// costs no allocation once the server runs. An SS_THREADING stream
/// server keeps its connections' spare states here too (see
/// [`SpareStream`]).
#[derive(Default)]
pub(crate) struct DatagramBuffers {
    receive: Vec<u8>,
    spares: Vec<SpareState>,
    streams: Vec<SpareStream>,
}

/// A finished SS_THREADING connection's state box and read and write
/// buffers, for the next connection: made on the serving thread, given
/// back by the handler thread, so that a handler thread that serves a
/// connection allocates and frees nothing. glibc sets up a thread's malloc
/// cache on its first malloc or free and tears it down when the thread
/// exits: with the state freed and the write buffer allocated there (and
/// the thread's start box freed, see crate::concurrency::threading), that
/// was ~1,900 of a short connection's ~6,300 instructions. The state's
/// `io` is a placeholder without heap memory meanwhile (the connection's
/// socket is closed).
pub(crate) struct SpareStream {
    state: Box<State>,
    rbuf: Box<[u8]>,
    wbuf: Vec<u8>,
}

/// Spare stream states kept at most: more than a threading server
/// finishes between two accepts under churn; beyond, they are freed.
const MAX_SPARE_STREAMS: usize = 32;

/// A read or write buffer's largest size kept with a spare stream state,
/// so that the spares hold at most 32 x (32 KiB + a state) however large
/// the buffers are configured (the default read buffer, 8 KiB, is kept;
/// a larger buffer is freed, and made again by the connection that needs
/// it).
const MAX_SPARE_BUFFER: usize = 16 * 1024;

/// Spare request states kept at most: enough for the requests in flight
/// of a sync server and a few threads; beyond, they are freed.
const MAX_SPARE_STATES: usize = 8;

impl DatagramBuffers {
    fn take_spare(&mut self) -> Option<SpareState> {
        self.spares.pop()
    }

    fn give_back(&mut self, spare: SpareState) {
        if self.spares.len() < MAX_SPARE_STATES {
            self.spares.push(spare);
        }
    }

    /// A spare stream state, if one was given back. Reserves room for all
    /// spares (here, on the serving thread), so that giving one back
    /// never allocates.
    fn take_stream(&mut self) -> Option<SpareStream> {
        if self.streams.capacity() == 0 {
            self.streams.reserve_exact(MAX_SPARE_STREAMS);
        }
        self.streams.pop()
    }

    /// Keeps `spare` if there is room reserved for it (it is freed, by the
    /// caller, if not).
    fn give_back_stream(&mut self, spare: SpareStream) -> Option<SpareStream> {
        if self.streams.len() < self.streams.capacity() {
            self.streams.push(spare);
            return None;
        }
        Some(spare)
    }
}

/// A finished datagram request's state, kept for the next datagram with
/// its buffers (the datagram's copy, the reply) and nothing else: no
/// socket, server or other request's values.
pub(crate) struct SpareState(Box<State>);

/// Replies queued during a batch of datagrams, back to back in `bytes`;
/// reply `i` ends at `ends[i]`.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) bytes: Vec<u8>,
    pub(crate) ends: Vec<usize>,
}

impl Outbox {
    /// Reply `i`'s bytes.
    pub(crate) fn reply(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        self.ends.push(self.bytes.len());
    }
}

impl Request {
    pub(crate) fn stream(server: Arc<Server>, socket: Socket, client: SockAddr) -> Self {
        let config = server.config();
        let mut spare = None;
        if keeps_spare_streams(&server) {
            if let Ok(mut bufs) = server.datagram_buffers().try_lock() {
                spare = bufs.take_stream();
            }
        }
        let (rbuf, wbuf) = match &mut spare {
            Some(spare) => (
                std::mem::take(&mut spare.rbuf),
                std::mem::take(&mut spare.wbuf),
            ),
            None => Default::default(),
        };
        let io = StreamIo {
            socket,
            rbuf,
            rbuf_size: config.read_buffer_size,
            rpos: 0,
            rend: 0,
            wbuf,
            wcap: config.write_buffer_size,
            // Nothing asked yet, nothing owed: the first read waits for
            // the first request.
            answered: std::cell::Cell::new(true),
            wrote: std::cell::Cell::new(false),
            ended: std::cell::Cell::new(false),
            between: None,
            rcvtimeo: std::cell::Cell::new(None),
            timed_for: std::cell::Cell::new(None),
            exposed: std::cell::Cell::new(false),
        };
        let s = match spare {
            Some(SpareStream { mut state, .. }) => {
                state.client = client;
                state.limits = State::limits_for(&server);
                state.io = RequestIo::Stream(io);
                state
            }
            None => Box::new(State::new(&server, client, RequestIo::Stream(io))),
        };
        Request {
            s,
            server,
            socket: None,
        }
    }

    /// Receives one datagram from `socket` as a request (the blocking
    /// modes' receive path; event mode batches its own), into `out`: the
    /// request is large, and made in place it is not moved through a
    /// return value. The request's data is a copy into one of `bufs`' spare
    /// buffers, as is its reply buffer: it may go to another thread. A
    /// datagram over max_datagram_size is reported to handle_error and
    /// dropped. False when nothing was pending.
    pub(crate) fn receive_datagram(
        server: &Arc<Server>,
        socket: &Arc<Socket>,
        bufs: &mut DatagramBuffers,
        out: &mut Option<Request>,
    ) -> Result<bool> {
        // Grows once; later resizes only set the length back.
        bufs.receive.resize(server.config().max_datagram_size, 0);
        let Some(dgram) = transport::recv_datagram(socket, &mut bufs.receive)? else {
            return Ok(false);
        };
        let too_long = dgram.too_long();
        let mut state = Request::datagram_state(server, bufs.take_spare(), dgram.sender);
        if let RequestIo::Datagram(d) = &mut state.io {
            d.data.clear();
            d.data.extend_from_slice(&bufs.receive[..dgram.len]);
            d.len = dgram.len;
        }
        let request = out.insert(Request {
            server: server.clone(),
            socket: Some(socket.clone()),
            s: state,
        });
        if let Some(err) = too_long {
            server.handler().handle_error(Some(request), &err);
            if let Some(spare) = out.take().and_then(Request::into_spare) {
                bufs.give_back(spare);
            }
        }
        Ok(true)
    }

    /// A received datagram (`data[..len]`) from `sender` as a request, in
    /// `spare`'s state if given (its buffers reused; `data` replaces its
    /// datagram buffer).
    pub(crate) fn datagram(
        server: &Arc<Server>,
        socket: &Arc<Socket>,
        data: Vec<u8>,
        len: usize,
        sender: SockAddr,
        spare: Option<SpareState>,
    ) -> Request {
        let mut state = Request::datagram_state(server, spare, sender);
        if let RequestIo::Datagram(d) = &mut state.io {
            d.data = data;
            d.len = len;
        }
        Request {
            server: server.clone(),
            socket: Some(socket.clone()),
            s: state,
        }
    }

    /// A datagram request's state for `sender`: `spare` (already reset by
    /// [`Request::into_spare`]) or a new one.
    fn datagram_state(server: &Server, spare: Option<SpareState>, sender: SockAddr) -> Box<State> {
        let Some(SpareState(mut state)) = spare else {
            let io = RequestIo::Datagram(DatagramIo::empty());
            return Box::new(State::new(server, sender, io));
        };
        state.client = sender;
        state.limits = State::limits_for(server);
        state
    }

    /// A finished datagram request's state, reset for reuse (its buffers
    /// kept, emptied); None for a stream request.
    pub(crate) fn into_spare(self) -> Option<SpareState> {
        let mut state = self.s;
        let RequestIo::Datagram(d) = &mut state.io else {
            return None;
        };
        d.pos = 0;
        d.len = 0;
        d.wrote = false;
        d.reply.clear();
        d.outbox = None;
        state.reset_for_reuse();
        Some(SpareState(state))
    }

    /// Event mode: lends the batch's outbox to this datagram request, so
    /// that its replies are queued there rather than sent at once.
    pub(crate) fn lend_outbox(&mut self, outbox: Outbox) {
        if let RequestIo::Datagram(d) = &mut self.s.io {
            d.outbox = Some(outbox);
        }
    }

    /// The outbox lent by [`Request::lend_outbox`] (an empty one if none).
    pub(crate) fn take_outbox(&mut self) -> Outbox {
        match &mut self.s.io {
            RequestIo::Datagram(d) => d.outbox.take().unwrap_or_default(),
            RequestIo::Stream(_) => Outbox::default(),
        }
    }

    /// The receive buffer a datagram request was lent (empty for others).
    pub(crate) fn take_datagram_buffer(&mut self) -> Vec<u8> {
        match &mut self.s.io {
            RequestIo::Datagram(d) => std::mem::take(&mut d.data),
            RequestIo::Stream(_) => Vec::new(),
        }
    }

    /// Enters the request in the table a drain cuts (see crate::drain):
    /// its stream marks when it waits for the client's next request.
    pub(crate) fn set_active(&mut self, entry: crate::drain::ActiveEntry) {
        if let RequestIo::Stream(s) = &mut self.s.io {
            s.between = Some(Between {
                flag: entry.waiting_flag(),
                server: self.server.clone(),
                sync: self.server.config().concurrency == Concurrency::Sync,
            });
        }
        self.s.active = Some(entry);
    }

    /// The size of a request's state (its one allocation), for SS_FORKING's
    /// parent to leave a free block of in its malloc cache.
    pub(crate) fn state_size() -> usize {
        std::mem::size_of::<State>()
    }

    /// The request deadline counted from `accepted` (when the connection
    /// was accepted): SS_FORKING makes the request in its child, after fork.
    pub(crate) fn deadline_from(&mut self, accepted: Instant) {
        if let Some((_, length)) = self.s.limits.deadline {
            self.s.limits.deadline = Some((accepted + length, length));
        }
    }

    pub(crate) fn set_peer_permit(&mut self, permit: Option<PeerPermit>) {
        self.s.peer_permit = permit;
    }

    /// For SS_FORKING: the parent keeps the permit until the child ends.
    pub(crate) fn take_peer_permit(&mut self) -> Option<PeerPermit> {
        self.s.peer_permit.take()
    }

    /// The handler's own value for this request, set by `set_data`.
    pub fn data(&self) -> usize {
        self.s.data
    }

    pub fn set_data(&mut self, value: usize) {
        self.s.data = value;
    }

    pub(crate) fn set_in_handle(&mut self, on: bool) {
        self.s.in_handle = on;
    }

    pub(crate) fn take_hand_off(&mut self) -> Option<HandOff> {
        self.s.hand_off.take()
    }

    /// Asks for the rest of this request to run, once `handle` returns
    /// successfully, as `continuation` on a new thread or in a forked child,
    /// followed by finish and close there; the server moves on at once
    /// (the seed's "finish processing in a forked child"). Only from
    /// inside `handle`, once per request.
    pub fn hand_off(&mut self, target: HandOffTarget, continuation: Continuation) -> Result<()> {
        if !self.s.in_handle {
            return Err(Error::wrong_state(
                "a request can only be handed off from inside its handle callback",
            ));
        }
        if self.s.hand_off.is_some() {
            return Err(Error::wrong_state("this request is already handed off"));
        }
        self.s.hand_off = Some(HandOff {
            target,
            continuation,
        });
        Ok(())
    }

    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    pub fn client_address(&self) -> &str {
        self.s
            .client_text
            .get_or_init(|| format_sockaddr(&self.s.client))
    }

    pub fn client_sockaddr(&self) -> &SockAddr {
        &self.s.client
    }

    pub fn is_datagram(&self) -> bool {
        matches!(self.s.io, RequestIo::Datagram(_))
    }

    /// The connection's fd, or the server socket's for a datagram.
    pub fn fileno(&self) -> RawFd {
        match &self.s.io {
            RequestIo::Stream(s) => {
                s.expose();
                s.socket.as_raw_fd()
            }
            RequestIo::Datagram(_) => self.socket.as_ref().map_or(-1, |s| s.as_raw_fd()),
        }
    }

    /// The received datagram, whole; None for a stream request.
    pub fn datagram_data(&self) -> Option<&[u8]> {
        match &self.s.io {
            RequestIo::Datagram(d) => Some(&d.data[..d.len]),
            RequestIo::Stream(_) => None,
        }
    }

    /// Per-operation timeout for the request's reads and writes (None: block).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        check_request_timeout(timeout)?;
        self.s.limits.timeout = timeout;
        Ok(())
    }

    /// Reads up to `buf.len()` bytes; 0 means end of stream (or of the datagram).
    ///
    /// Inline, as are readline, write and flush, with their usual case
    /// (bytes buffered, room in the write buffer, one syscall doing it all)
    /// inline below them: each C call is then one frame down to the
    /// syscall, the general paths out of line (issue 12: ss_request_read
    /// cost 222 instructions per echo through five frames).
    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let State { io, limits, .. } = &mut *self.s;
        limits.check_deadline("read")?;
        if buf.is_empty() {
            return Ok(0);
        }
        match io {
            RequestIo::Datagram(d) => {
                Ok(d.take(buf.len(), |src| buf[..src.len()].copy_from_slice(src)))
            }
            RequestIo::Stream(s) => s.read(buf, limits),
        }
    }

    /// Reads exactly `buf.len()` bytes, or fails with `Eof` if the peer
    /// closes first (the bytes read so far are then lost).
    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.read(&mut buf[filled..])?;
            if n == 0 {
                return Err(Error::new(
                    ErrorKind::Eof,
                    format!("end of data after {filled} of {} bytes", buf.len()),
                ));
            }
            filled += n;
        }
        Ok(())
    }

    /// Reads one line, newline included, but at most `limit` bytes (Python's
    /// `readline(limit)`). Returns the number of bytes put in `buf`; 0 at end.
    #[inline]
    pub fn readline(&mut self, buf: &mut [u8]) -> Result<usize> {
        let State { io, limits, .. } = &mut *self.s;
        limits.check_deadline("readline")?;
        match io {
            RequestIo::Datagram(d) => {
                let rest = &d.data[d.pos..d.len];
                let limit = buf.len().min(rest.len());
                let n = find_newline(&rest[..limit]).map_or(limit, |i| i + 1);
                Ok(d.take(n, |src| buf[..n].copy_from_slice(src)))
            }
            RequestIo::Stream(s) => s.readline(buf, limits),
        }
    }

    /// Writes all of `data` (a stream sends it unless a write buffer is set;
    /// a datagram request collects it for the reply).
    #[inline]
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let State { io, limits, .. } = &mut *self.s;
        limits.check_deadline("write")?;
        match io {
            RequestIo::Datagram(d) => {
                d.reply.extend_from_slice(data);
                d.wrote = true;
                Ok(())
            }
            RequestIo::Stream(s) => s.write(data, limits),
        }
    }

    /// Sends buffered output (a no-op for datagrams, which reply on finish,
    /// and when nothing is buffered).
    #[inline]
    pub fn flush(&mut self) -> Result<()> {
        let State { io, limits, .. } = &mut *self.s;
        match io {
            RequestIo::Stream(s) if !s.wbuf.is_empty() => {
                limits.check_deadline("flush")?;
                s.flush(limits)
            }
            _ => Ok(()),
        }
    }

    /// Sends `data` to the client at once: one datagram, or bytes on the
    /// stream. In event mode a datagram reply is queued in the batch's
    /// outbox, sent with the batch's other replies when the batch ends.
    pub fn reply(&mut self, data: &[u8]) -> Result<()> {
        let State {
            io, limits, client, ..
        } = &mut *self.s;
        limits.check_deadline("reply")?;
        match io {
            // Event mode: no limits to copy, nothing sent yet.
            RequestIo::Datagram(DatagramIo {
                outbox: Some(outbox),
                ..
            }) => {
                check_reply_address(client)?;
                outbox.push(data);
                Ok(())
            }
            RequestIo::Datagram(_) => match &self.socket {
                Some(socket) => {
                    let wait = reply_wait(&self.server, *limits);
                    send_datagram(socket, data, client, wait)
                }
                None => Err(Error::wrong_state("a datagram request without its socket")),
            },
            RequestIo::Stream(s) => s.reply(data, limits),
        }
    }

    /// What the server does once the handler is done: send the collected
    /// datagram reply, or flush a stream's buffered output.
    pub(crate) fn complete(&mut self) -> Result<()> {
        let reply = match &mut self.s.io {
            RequestIo::Datagram(d) if d.wrote => {
                d.wrote = false;
                std::mem::take(&mut d.reply)
            }
            RequestIo::Datagram(_) => return Ok(()),
            RequestIo::Stream(_) => return self.flush(),
        };
        let result = self.reply(&reply);
        // Kept for the buffer's reuse (see Request::shutdown).
        if let RequestIo::Datagram(d) = &mut self.s.io {
            d.reply = reply;
        }
        result
    }

    /// Python's shutdown_request: SHUT_WR then close for a stream (errors
    /// such as ENOTCONN ignored), lingering first if the client may still
    /// be sending (see crate::linger); nothing for a datagram, whose socket
    /// is the server's.
    pub(crate) fn shutdown(mut self) {
        // Out of the drain's table before the socket can close.
        drop(self.s.active.take());
        if self.socket.is_some() {
            // A datagram's state goes back for the next datagram; try_lock
            // only: a busy lock (the serving thread receiving) frees it.
            let server = self.server.clone();
            if let Ok(mut bufs) = server.datagram_buffers().try_lock() {
                if let Some(spare) = self.into_spare() {
                    bufs.give_back(spare);
                }
            }
            return;
        }
        let Request {
            server,
            s: mut state,
            ..
        } = self;
        let placeholder = RequestIo::Datagram(DatagramIo::empty());
        let RequestIo::Stream(s) = std::mem::replace(&mut state.io, placeholder) else {
            return;
        };
        let unread = s.rpos != s.rend;
        let ended = s.ended.get();
        let StreamIo {
            socket,
            mut rbuf,
            mut wbuf,
            ..
        } = s;
        server.lingerer().close(socket, unread, ended);
        if !keeps_spare_streams(&server) {
            return;
        }
        state.reset_for_reuse();
        if rbuf.len() > MAX_SPARE_BUFFER {
            rbuf = Box::default();
        }
        if wbuf.capacity() > MAX_SPARE_BUFFER {
            wbuf = Vec::new();
        }
        wbuf.clear();
        let spare = SpareStream { state, rbuf, wbuf };
        // try_lock only, as for datagrams: a busy lock frees the spare.
        let unkept = match server.datagram_buffers().try_lock() {
            Ok(mut bufs) => bufs.give_back_stream(spare),
            Err(_) => Some(spare),
        };
        // Freed, if not kept, after the lock is let go.
        drop(unkept);
    }
}

/// Whether `server`'s stream requests reuse spare states (see
/// [`SpareStream`]): SS_THREADING's, whose handler threads are new for
/// each connection. Elsewhere a request is freed where such memory is
/// reused anyway (a sync server's thread, a pool's workers), or in a
/// forked child (a forking parent's stream states then stay its own).
fn keeps_spare_streams(server: &Server) -> bool {
    server.config().concurrency == Concurrency::Threading && !in_forked_child()
}

/// The bounds on one operation's waits: `timeout` without progress (a
/// byte sent or received), and the request's absolute deadline.
#[derive(Clone, Copy)]
struct Limits {
    timeout: Option<Duration>,
    /// The whole request's deadline (config.request_deadline from accept or
    /// arrival) and its length, for the message; blocking modes only.
    deadline: Option<(Instant, Duration)>,
}

/// When a wait that starts now must end, and why.
#[derive(Clone, Copy)]
struct WaitEnd {
    at: Option<Instant>,
    /// The length of the per-operation timeout, or of the deadline when
    /// that ends the wait first.
    by_deadline: bool,
    length: Duration,
    /// The request's deadline, if it has one (whether or not it ends this
    /// wait).
    deadline: Option<Instant>,
}

impl Limits {
    /// Fails once the request's deadline has passed (no clock read without
    /// one).
    #[inline]
    fn check_deadline(&self, what: &str) -> Result<()> {
        match self.deadline {
            Some((at, length)) if Instant::now() >= at => Err(deadline_passed(what, length)),
            _ => Ok(()),
        }
    }

    /// No bound at all: plain blocking calls.
    fn unbounded(&self) -> bool {
        self.timeout.is_none() && self.deadline.is_none()
    }

    /// The end of a wait starting now: min(now + timeout, deadline).
    fn wait_end(&self) -> WaitEnd {
        let op = self.timeout.map(|t| (Instant::now() + t, t));
        let deadline = self.deadline.map(|(d, _)| d);
        match (op, self.deadline) {
            (Some((at, t)), Some((d, _))) if at <= d => WaitEnd {
                at: Some(at),
                by_deadline: false,
                length: t,
                deadline,
            },
            (_, Some((d, length))) => WaitEnd {
                at: Some(d),
                by_deadline: true,
                length,
                deadline,
            },
            (op, None) => WaitEnd {
                at: op.map(|(at, _)| at),
                by_deadline: false,
                length: op.map_or(Duration::ZERO, |(_, t)| t),
                deadline,
            },
        }
    }
}

impl WaitEnd {
    fn error(&self, what: &str) -> Error {
        if self.by_deadline {
            deadline_passed(what, self.length)
        } else {
            timed_out(what, self.length)
        }
    }

    /// Waits for `events` on `fd` until this end; SS_ERR_TIMEOUT after it.
    fn wait(&self, fd: &Socket, events: PollFlags, what: &str) -> Result<()> {
        match wait_ready(fd.as_fd(), events, self.at) {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.error(what)),
            Err(e) => Err(Error::io(what, e)),
        }
    }
}

/// poll(2)'s timeout for `timeout`, rounded up to whole milliseconds.
fn poll_ms(timeout: Duration) -> nix::poll::PollTimeout {
    let ms = timeout
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(timeout.subsec_nanos().div_ceil(1_000_000)));
    nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX)
}

#[cold]
fn timed_out(what: &str, timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("{what}: timed out after {} ms", timeout.as_millis()),
    )
}

#[cold]
fn deadline_passed(what: &str, length: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!(
            "{what}: the request deadline of {} ms has passed",
            length.as_millis()
        ),
    )
}

impl DatagramIo {
    /// No datagram, and no heap memory (a spare stream state's placeholder).
    fn empty() -> DatagramIo {
        DatagramIo {
            data: Vec::new(),
            len: 0,
            pos: 0,
            reply: Vec::new(),
            wrote: false,
            outbox: None,
        }
    }

    /// Consumes up to `n` unread bytes, handing them to `copy`.
    fn take(&mut self, n: usize, copy: impl FnOnce(&[u8])) -> usize {
        let n = n.min(self.len - self.pos);
        // The read after the last byte (a handler's loop to end of data)
        // copies nothing: no memcpy call for it.
        if n > 0 {
            copy(&self.data[self.pos..self.pos + n]);
        }
        self.pos += n;
        n
    }
}

/// How a datagram reply to a request of `server` within `limits` waits
/// (see [`ReplyWait`]).
fn reply_wait(server: &Server, limits: Limits) -> ReplyWait {
    if server.config().concurrency == Concurrency::Event {
        ReplyWait::Never
    } else {
        ReplyWait::Upto(limits)
    }
}

/// How a datagram reply waits when the socket's send buffer (or a Unix
/// client's queue) is full: a bounded retry for blocking handlers (at most
/// DATAGRAM_REPLY_WAIT, less if the request's limits end sooner); not at
/// all in event mode, where a loop thread must never block. Either way the
/// reply is then dropped and reported.
#[derive(Clone, Copy)]
enum ReplyWait {
    Upto(Limits),
    Never,
}

/// Clients whose last reply was dropped for a full queue: a further reply
/// to one of them is tried once and dropped at once, without waiting, until
/// one gets through, so that a client flooding requests it never reads the
/// answers to costs one bounded wait, not one per request. Few entries: the
/// oldest is forgotten first.
static STALLED_PEERS: Mutex<Vec<SockAddr>> = Mutex::new(Vec::new());
/// Entries in STALLED_PEERS, so that a reply that got through looks at
/// the list only when there is something to clear.
static STALLED_COUNT: AtomicUsize = AtomicUsize::new(0);
const MAX_STALLED_PEERS: usize = 64;

/// Records (`stalled`) or clears a peer's stalled mark; says whether it was
/// marked. Only try_lock: never blocks, so it cannot deadlock in a forked
/// child whose parent held the lock at fork time (a busy lock just means
/// no memory this time).
fn stalled_mark(to: &SockAddr, stalled: Option<bool>) -> bool {
    if in_forked_child() {
        // A child's memory dies with it: do not bother.
        return false;
    }
    let Ok(mut peers) = STALLED_PEERS.try_lock() else {
        return false;
    };
    let found = peers.iter().position(|p| p == to);
    match (stalled, found) {
        (Some(true), None) => {
            if peers.len() >= MAX_STALLED_PEERS {
                peers.remove(0);
            }
            peers.push(to.clone());
        }
        (Some(false), Some(i)) => {
            peers.remove(i);
        }
        _ => {}
    }
    STALLED_COUNT.store(peers.len(), Ordering::Relaxed);
    found.is_some()
}

/// SS_ERR_ADDRESS for a sender that cannot be replied to.
fn check_reply_address(to: &SockAddr) -> Result<()> {
    if has_reply_address(to) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Address,
        "cannot reply: the sender has no address (an unbound Unix datagram socket)",
    ))
}

fn reply_dropped(to: &SockAddr, why: &str) -> Error {
    Error::new(
        ErrorKind::WouldBlock,
        format!("sendto {}: {why}; reply dropped", format_sockaddr(to)),
    )
}

/// A reply to `to` got through: its stalled mark, if any, goes.
pub(crate) fn reply_sent(to: &SockAddr) {
    if STALLED_COUNT.load(Ordering::Relaxed) > 0 {
        stalled_mark(to, Some(false));
    }
}

/// The error for a reply to `to` that failed without waiting (event
/// mode): the same as a blocking reply's.
pub(crate) fn reply_failed(to: &SockAddr, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        reply_dropped(to, "the send buffer is full")
    } else {
        Error::io(format!("sendto {}", format_sockaddr(to)), e)
    }
}

fn send_datagram(socket: &Socket, data: &[u8], to: &SockAddr, wait: ReplyWait) -> Result<()> {
    check_reply_address(to)?;
    // Computed once: retries never extend the wait.
    let mut give_up: Option<Instant> = None;
    let mut pause = Duration::from_millis(1);
    loop {
        match socket.send_to_with_flags(data, to, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) {
            Ok(_) => {
                reply_sent(to);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let ReplyWait::Upto(limits) = wait else {
                    return Err(reply_failed(to, e));
                };
                let end = *give_up.get_or_insert_with(|| {
                    let now = Instant::now();
                    let bound = now + DATAGRAM_REPLY_WAIT;
                    if stalled_mark(to, None) {
                        now // known to be full: no wait
                    } else {
                        limits.wait_end().at.map_or(bound, |at| at.min(bound))
                    }
                });
                let now = Instant::now();
                if now >= end {
                    stalled_mark(to, Some(true));
                    return Err(reply_dropped(
                        to,
                        "the client's queue (or the send buffer) is full",
                    ));
                }
                // poll(POLLOUT) cannot be trusted here (see
                // DATAGRAM_REPLY_WAIT): pause, doubling up to 8 ms.
                std::thread::sleep(pause.min(end - now));
                pause = (pause * 2).min(Duration::from_millis(8));
            }
            Err(e) => return Err(reply_failed(to, e)),
        }
    }
}

impl StreamIo {
    /// One recv into `buf` (not empty), never blocking past the limits.
    /// Usually one blocking recv as the socket stands (see
    /// [`StreamIo::plain_recv`]), with the between-requests mark around it
    /// when it waits for the next request; otherwise, or when that recv
    /// fails, the general path ([`StreamIo::recv_general`]).
    #[inline(always)]
    fn recv(&self, buf: &mut [u8], limits: &Limits, fresh: bool) -> Result<usize> {
        if !self.plain_recv(limits) {
            return self.recv_general(buf, *limits, fresh);
        }
        let mark = self.mark_between(fresh);
        // What wait_between would do anything about: a forked child's
        // first read, SS_SYNC watching its waker, a drain under way (looked
        // at after the mark is set, as a drain sets its flag before it
        // looks at the marks).
        if mark.as_ref().is_some_and(|m| {
            in_forked_child() || (m.0.sync && self.wrote.get()) || m.0.server.draining()
        }) {
            drop(mark);
            return self.recv_general(buf, *limits, fresh);
        }
        let got = match recv_fd(self.socket.as_raw_fd(), buf, 0) {
            Ok(n) => Ok(n),
            // The mark stays set for the retry, if any.
            Err(e) => self.plain_recv_failed(e, buf, limits),
        };
        drop(mark);
        self.received(&got, buf);
        got
    }

    /// Whether a read can be one blocking recv with the socket as it is:
    /// no limit and no SO_RCVTIMEO, or the per-operation timeout alone and
    /// SO_RCVTIMEO set for it already (see recv_kernel_timed).
    #[inline(always)]
    fn plain_recv(&self, limits: &Limits) -> bool {
        match (limits.timeout, limits.deadline) {
            (None, None) => self.rcvtimeo.get().is_none(),
            (Some(t), None) => !self.exposed.get() && self.timed_for.get() == Some(t),
            _ => false,
        }
    }

    /// What a plain recv's failure `e` means, as recv_kernel_timed and
    /// recv_polled take it: a reset is the end of the stream, EAGAIN the
    /// timeout passed, and after a signal the read goes on with poll.
    #[cold]
    #[inline(never)]
    fn plain_recv_failed(&self, e: io::Error, buf: &mut [u8], limits: &Limits) -> Result<usize> {
        if e.raw_os_error() == Some(libc::ECONNRESET) {
            return Ok(0);
        }
        match (e.kind(), limits.timeout) {
            (io::ErrorKind::WouldBlock, Some(timeout)) => Err(timed_out("recv", timeout)),
            (io::ErrorKind::Interrupted, Some(_)) => self.recv_polled(buf, Some(limits.wait_end())),
            (io::ErrorKind::Interrupted, None) => self.recv_polled(buf, None),
            _ => Err(Error::io("recv", e)),
        }
    }

    /// Notes what a read into `buf` got: the end of the stream, or bytes
    /// (the client asked something).
    #[inline(always)]
    fn received(&self, got: &Result<usize>, buf: &[u8]) {
        match got {
            Ok(0) if !buf.is_empty() => self.ended.set(true),
            Ok(n) if *n > 0 => self.answered.set(false),
            _ => {}
        }
    }

    /// [`StreamIo::recv`]'s general path: a blocking recv that SO_RCVTIMEO
    /// ends when the per-operation timeout bounds it, else MSG_DONTWAIT and
    /// poll (see recv_inner), after the waits a read between requests may
    /// need (see wait_between).
    #[inline(never)]
    fn recv_general(&self, buf: &mut [u8], limits: Limits, fresh: bool) -> Result<usize> {
        let between = self.mark_between(fresh);
        let mut early = None;
        if let Some(mark) = &between {
            // A forked child's first read: the request has usually come
            // while the child started, and reading it at once saves the
            // poll of wait_between (which also would not wait then).
            if in_forked_child() && !self.wrote.get() {
                early = self.recv_ready(buf)?;
            }
            if early.is_none() && !self.wait_between(mark, limits)? {
                // Draining, and the client has not started a request.
                return Ok(0);
            }
        }
        let got = match early {
            Some(n) => Ok(n),
            None => self.recv_inner(buf, limits),
        };
        self.received(&got, buf);
        got
    }

    /// One recv(MSG_DONTWAIT): Some(bytes) when data (or the end of the
    /// stream) was there, None when nothing was (or a signal came).
    fn recv_ready(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        match recv_fd(self.socket.as_raw_fd(), buf, libc::MSG_DONTWAIT) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => Ok(Some(0)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::io("recv", e)),
        }
    }

    /// While a read that starts with nothing of a request buffered
    /// (`fresh`) after an answer waits, marks the request as between
    /// requests, so that a drain closes it (for reading) as it would an
    /// idle keep-alive connection in event mode.
    fn mark_between(&self, fresh: bool) -> Option<BetweenMark<'_>> {
        let between = self.between.as_ref()?;
        if !(fresh && self.answered.get()) {
            return None;
        }
        between.flag.store(true, Ordering::SeqCst);
        Some(BetweenMark(between))
    }

    /// Before a read between requests: false when a drain is under way and
    /// the client has sent nothing (the read then returns end-of-file at
    /// once, as the drain would make it). Where no other thread can end
    /// the read when a drain starts, it also waits for the first byte
    /// while watching what reports the drain: in SS_SYNC the server's
    /// waker, in a forked child the drain pipe (crate::drain::DrainPipe).
    /// An error when the limits pass first.
    fn wait_between(&self, mark: &BetweenMark<'_>, limits: Limits) -> Result<bool> {
        let server = &mark.0.server;
        let child = in_forked_child();
        let drain_seen = |pipe_ready: bool| server.draining() || pipe_ready;
        if drain_seen(false) && !input_waiting(&self.socket) {
            return Ok(false);
        }
        // SS_SYNC: a connection's very first read stays a plain blocking
        // recv (no extra poll per connection): only reads after an answer
        // watch the waker.
        let watch = if child {
            server.drain_pipe_fd()
        } else if mark.0.sync && self.wrote.get() {
            Some(server.waker_fd())
        } else {
            None
        };
        let Some(watch) = watch else {
            return Ok(true);
        };
        let mut fds = [
            nix::poll::PollFd::new(self.socket.as_fd(), PollFlags::POLLIN),
            nix::poll::PollFd::new(watch, PollFlags::POLLIN),
        ];
        let poll_until = |fds: &mut [nix::poll::PollFd<'_>]| {
            let end = limits.wait_end();
            match crate::sys::poll_fds_until(fds, end.at) {
                Ok(0) => Err(end.error("recv")),
                Ok(n) => Ok(n),
                Err(e) => Err(Error::io("poll", e)),
            }
        };
        match (limits.timeout, limits.deadline) {
            // The timeout alone: poll's own relative timeout (never early),
            // no clock read; after a signal, an end counted from then.
            (Some(timeout), None) => match nix::poll::poll(&mut fds, poll_ms(timeout)) {
                Ok(0) => return Err(timed_out("recv", timeout)),
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {
                    poll_until(&mut fds)?;
                }
                Err(e) => return Err(Error::io("poll", e.into())),
            },
            _ => {
                poll_until(&mut fds)?;
            }
        }
        let client_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        // In a child the pipe reports the drain itself (end-of-file).
        let pipe_ready = child && fds[1].revents().is_some_and(|r| !r.is_empty());
        if !client_ready && drain_seen(pipe_ready) && !input_waiting(&self.socket) {
            return Ok(false);
        }
        // The client sent something, or the waker rang for something else
        // (shutdown: left for the serving loop to see once the handler
        // returns): the read proper waits for the client alone.
        Ok(true)
    }

    fn recv_inner(&self, buf: &mut [u8], limits: Limits) -> Result<usize> {
        if limits.unbounded() {
            self.set_rcvtimeo(None)?;
            return self.recv_polled(buf, None);
        }
        if let (Some(timeout), None) = (limits.timeout, limits.deadline) {
            if !self.exposed.get() {
                return self.recv_kernel_timed(buf, timeout, limits);
            }
        }
        // Until some bytes come: computed once, so that a wake-up with
        // nothing to read does not extend the wait.
        let end = limits.wait_end();
        if let Some(timeout) = self.kernel_timeout(&end) {
            self.set_rcvtimeo(Some(timeout))?;
            match recv_fd(self.socket.as_raw_fd(), buf, 0) {
                Ok(n) => return Ok(n),
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => return Ok(0),
                // The kernel's timer counts in jiffies and may end up to
                // one early: the poll below waits out the rest, if any.
                // A signal (EINTR) also goes on there, with the same end.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(Error::io("recv", e)),
            }
        }
        self.recv_polled(buf, Some(end))
    }

    /// A read bounded by the per-operation timeout alone (no deadline): one
    /// blocking recv that SO_RCVTIMEO ends, and no clock read. The option
    /// is the timeout plus KERNEL_TIMEOUT_SLACK, at least a jiffy (HZ >=
    /// 100): the kernel's timer may end up to one jiffy early, so EAGAIN
    /// then means the whole timeout has passed (it ends up to the slack
    /// late instead). A signal (EINTR) goes on with poll, the timeout
    /// counted afresh from then: without a clock read at the start, what
    /// is left of it is not known (a signal can stretch the wait to less
    /// than twice the timeout, once: the poll's end stays fixed).
    fn recv_kernel_timed(
        &self,
        buf: &mut [u8],
        timeout: Duration,
        limits: Limits,
    ) -> Result<usize> {
        self.set_rcvtimeo(Some(timeout.saturating_add(KERNEL_TIMEOUT_SLACK)))?;
        self.timed_for.set(Some(timeout));
        match recv_fd(self.socket.as_raw_fd(), buf, 0) {
            Ok(n) => Ok(n),
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(timed_out("recv", timeout)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                self.recv_polled(buf, Some(limits.wait_end()))
            }
            Err(e) => Err(Error::io("recv", e)),
        }
    }

    /// Reads with MSG_DONTWAIT and waits with poll until `end` (None: a
    /// plain blocking recv), so that the call never blocks past its limit,
    /// even when poll said readable and another reader took the data first.
    fn recv_polled(&self, buf: &mut [u8], end: Option<WaitEnd>) -> Result<usize> {
        let flags = if end.is_some() { libc::MSG_DONTWAIT } else { 0 };
        loop {
            match recv_fd(self.socket.as_raw_fd(), buf, flags) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A vanished peer reads as end of stream, as Python's rfile does.
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match &end {
                    Some(end) => end.wait(&self.socket, PollFlags::POLLIN, "recv")?,
                    None => return Err(Error::io("recv", e)),
                },
                Err(e) => return Err(Error::io("recv", e)),
            }
        }
    }

    /// The SO_RCVTIMEO a read ending at `end` can use, if any: only when
    /// the per-operation timeout ends it (a deadline's remaining time
    /// changes with every read, which would cost a setsockopt each), well
    /// before the deadline (the kernel rounds up to a jiffy), and while
    /// the descriptor is ours alone.
    fn kernel_timeout(&self, end: &WaitEnd) -> Option<Duration> {
        if end.by_deadline || self.exposed.get() || end.length.is_zero() {
            return None;
        }
        if let (Some(at), Some(deadline)) = (end.at, end.deadline) {
            if at + KERNEL_TIMEOUT_SLACK > deadline {
                return None;
            }
        }
        Some(end.length)
    }

    /// Sets SO_RCVTIMEO to `timeout` (rounded up to a microsecond, the
    /// option's unit; None clears it) unless it is set so already.
    fn set_rcvtimeo(&self, timeout: Option<Duration>) -> Result<()> {
        // Compared as asked, so that a read with the option already set
        // does no 128-bit rounding.
        if self.rcvtimeo.get() == timeout {
            return Ok(());
        }
        // Whatever it was set for, it no longer is (recv_kernel_timed sets
        // this again after it).
        self.timed_for.set(None);
        // Rounded up to microseconds in 64 bits: a 128-bit division would
        // pull in __udivti3 (a code page more for each forked child).
        let rounded = timeout.map(|t| {
            Duration::from_micros(
                t.as_secs()
                    .saturating_mul(1_000_000)
                    .saturating_add(u64::from(t.subsec_nanos().div_ceil(1000))),
            )
        });
        self.socket
            .set_read_timeout(rounded)
            .map_err(|e| Error::io("setsockopt SO_RCVTIMEO", e))?;
        self.rcvtimeo.set(timeout);
        Ok(())
    }

    /// The descriptor leaves our hands (fileno): clears SO_RCVTIMEO for
    /// good, so that the handler's own reads block as it expects.
    fn expose(&self) {
        self.exposed.set(true);
        // A failure leaves the option set: reads then fail with EAGAIN
        // after the timeout, which the handler sees; nothing else to do.
        let _ = self.set_rcvtimeo(None);
    }

    #[inline(always)]
    fn consume(&mut self, n: usize) {
        self.rpos += n;
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        }
    }

    /// Refills the empty read buffer; returns the bytes now buffered (0 = EOF).
    fn fill(&mut self, limits: &Limits) -> Result<usize> {
        debug_assert_eq!(self.rpos, self.rend);
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let n = self.recv(&mut rbuf, limits, true);
        self.rbuf = rbuf;
        let n = n?;
        self.rpos = 0;
        self.rend = n;
        Ok(n)
    }

    /// The read buffer, allocated now if it was not yet.
    fn allocate_rbuf(&mut self) {
        if self.rbuf.len() < self.rbuf_size {
            self.rbuf = vec![0; self.rbuf_size].into_boxed_slice();
        }
    }

    /// Reads into `buf` (not empty): buffered bytes, else one recv straight
    /// into `buf` when it is at least as large as the read buffer.
    #[inline(always)]
    fn read(&mut self, buf: &mut [u8], limits: &Limits) -> Result<usize> {
        if self.rpos == self.rend {
            // Large reads and unbuffered mode bypass the buffer.
            if buf.len() >= self.rbuf_size {
                return self.recv(buf, limits, true);
            }
            return self.read_filling(buf, limits);
        }
        Ok(self.take_buffered(buf))
    }

    /// A read smaller than the read buffer with nothing buffered: fills it.
    #[inline(never)]
    fn read_filling(&mut self, buf: &mut [u8], limits: &Limits) -> Result<usize> {
        self.allocate_rbuf();
        if self.fill(limits)? == 0 {
            return Ok(0);
        }
        Ok(self.take_buffered(buf))
    }

    /// Hands over as much of what is buffered as `buf` takes.
    #[inline(always)]
    fn take_buffered(&mut self, buf: &mut [u8]) -> usize {
        let chunk = &self.rbuf[self.rpos..self.rend];
        let n = buf.len().min(chunk.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        self.consume(n);
        n
    }

    /// Reads a line into `buf` (at most `buf.len()` bytes). The line stays
    /// in the read buffer until it is complete, so a timeout or error loses
    /// nothing and the call can be retried; only a line longer than the
    /// read buffer is handed over in parts (and unbuffered mode reads byte
    /// by byte, so bytes read before an error are lost there).
    #[inline(always)]
    fn readline(&mut self, buf: &mut [u8], limits: &Limits) -> Result<usize> {
        // A whole line buffered (the usual case after the first line of a
        // request): handed over at once.
        let chunk = &self.rbuf[self.rpos..self.rend];
        let limit = buf.len().min(chunk.len());
        if let Some(i) = find_newline(&chunk[..limit]) {
            let n = i + 1;
            buf[..n].copy_from_slice(&chunk[..n]);
            self.consume(n);
            return Ok(n);
        }
        // Nothing buffered (a request's first line): one recv into the
        // read buffer, here too, once it has been made (never in
        // unbuffered mode, which has none).
        if chunk.is_empty() && !buf.is_empty() && !self.rbuf.is_empty() {
            let mut rbuf = std::mem::take(&mut self.rbuf);
            let got = self.recv(&mut rbuf, limits, true);
            self.rbuf = rbuf;
            let got = got?;
            if got == 0 {
                return Ok(0);
            }
            (self.rpos, self.rend) = (0, got);
            let limit = buf.len().min(got);
            if let Some(i) = find_newline(&self.rbuf[..limit]) {
                let n = i + 1;
                buf[..n].copy_from_slice(&self.rbuf[..n]);
                self.consume(n);
                return Ok(n);
            }
            return self.readline_reading(buf, limits, limit);
        }
        // The `limit` bytes just scanned hold no newline.
        self.readline_reading(buf, limits, limit)
    }

    /// [`StreamIo::readline`] when no whole line is buffered; the first
    /// `scanned` buffered bytes are known to hold no newline, so that no
    /// byte is scanned twice (a line dribbled in a byte per recv would
    /// otherwise be scanned once per byte).
    #[inline(never)]
    fn readline_reading(
        &mut self,
        buf: &mut [u8],
        limits: &Limits,
        mut scanned: usize,
    ) -> Result<usize> {
        if self.rbuf_size == 0 {
            return self.readline_unbuffered(buf, limits);
        }
        self.allocate_rbuf();
        let mut filled = 0;
        loop {
            let want = buf.len() - filled;
            let chunk = &self.rbuf[self.rpos..self.rend];
            let limit = want.min(chunk.len());
            let newline = find_newline(&chunk[scanned.min(limit)..limit]).map(|i| i + scanned);
            scanned = limit;
            // Hand bytes over only for a finished line, at the caller's
            // limit, or when the read buffer itself is full of one line.
            let take = match newline {
                Some(i) => Some(i + 1),
                None if chunk.len() >= want => Some(want),
                None if self.rpos == 0 && self.rend == self.rbuf.len() => Some(limit),
                None => None,
            };
            if let Some(n) = take {
                buf[filled..filled + n].copy_from_slice(&chunk[..n]);
                self.consume(n);
                filled += n;
                if newline.is_some() || filled == buf.len() {
                    return Ok(filled);
                }
                // What is left was not scanned (all of it was handed over).
                scanned = 0;
                continue;
            }
            // Need more bytes: make room at the end, then read after what is
            // already buffered.
            if self.rend == self.rbuf.len() {
                self.rbuf.copy_within(self.rpos..self.rend, 0);
                self.rend -= self.rpos;
                self.rpos = 0;
            }
            let fresh = filled == 0 && self.rpos == self.rend;
            let mut rbuf = std::mem::take(&mut self.rbuf);
            let got = self.recv(&mut rbuf[self.rend..], limits, fresh);
            self.rbuf = rbuf;
            match got? {
                0 => {
                    // End of stream: the last, unterminated line.
                    let chunk = &self.rbuf[self.rpos..self.rend];
                    let n = chunk.len().min(want);
                    buf[filled..filled + n].copy_from_slice(&chunk[..n]);
                    self.consume(n);
                    return Ok(filled + n);
                }
                n => self.rend += n,
            }
        }
    }

    fn readline_unbuffered(&mut self, buf: &mut [u8], limits: &Limits) -> Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            // One byte at a time, so nothing past the line is consumed.
            if self.recv(&mut buf[filled..filled + 1], limits, filled == 0)? == 0 {
                break;
            }
            filled += 1;
            if buf[filled - 1] == b'\n' {
                break;
            }
        }
        Ok(filled)
    }

    /// send(2)'s flags for a send within `limits`. MSG_NOSIGNAL: a vanished
    /// peer gives EPIPE, never SIGPIPE in the host. With a timeout or
    /// deadline the send must not block past it, hence MSG_DONTWAIT, and a
    /// wait for room when the buffer is full (see send_rest).
    #[inline(always)]
    fn send_flags(limits: &Limits) -> libc::c_int {
        libc::MSG_NOSIGNAL
            | if limits.unbounded() {
                0
            } else {
                libc::MSG_DONTWAIT
            }
    }

    /// Bytes went out.
    #[inline(always)]
    fn sent_some(&self) {
        self.answered.set(true);
        self.wrote.set(true);
    }

    /// Sends all of `data`: usually one send(2); the rest, waits and
    /// errors in [`StreamIo::send_rest`].
    #[inline(always)]
    fn send_all(&self, data: &[u8], limits: &Limits) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let first = send_fd(self.socket.as_raw_fd(), data, Self::send_flags(limits));
        if matches!(first, Ok(n) if n == data.len()) {
            self.sent_some();
            return Ok(());
        }
        self.send_rest(data, limits, &mut 0, first)
    }

    /// Sends the rest of `data` (not empty) after its first send(2) gave
    /// `first`, adding to `*sent` as bytes go out (`first`'s included), so
    /// that a caller can keep what a timeout or error left unsent.
    #[inline(never)]
    fn send_rest(
        &self,
        mut data: &[u8],
        limits: &Limits,
        sent: &mut usize,
        first: io::Result<usize>,
    ) -> Result<()> {
        let bounded = !limits.unbounded();
        let flags = Self::send_flags(limits);
        // The timeout counts from the last progress, the deadline stays.
        let mut end = None;
        let mut got = first;
        loop {
            match got {
                Ok(n) => {
                    data = &data[n..];
                    *sent += n;
                    end = None;
                    if n > 0 {
                        self.sent_some();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if bounded && e.kind() == io::ErrorKind::WouldBlock => end
                    .get_or_insert_with(|| limits.wait_end())
                    .wait(&self.socket, PollFlags::POLLOUT, "send")?,
                Err(e) => return Err(Error::io("send", e)),
            }
            if data.is_empty() {
                return Ok(());
            }
            got = send_fd(self.socket.as_raw_fd(), data, flags);
        }
    }

    /// Sends `data` without a write buffer (Python's default, wbufsize 0);
    /// buffers it if it fits in the write buffer (one copy); otherwise
    /// [`StreamIo::write_through`].
    #[inline(always)]
    fn write(&mut self, data: &[u8], limits: &Limits) -> Result<()> {
        if self.wcap == 0 {
            return self.send_all(data, limits);
        }
        if data.len() < self.wcap && self.wbuf.len() + data.len() <= self.wcap {
            self.wbuf.extend_from_slice(data);
            return Ok(());
        }
        self.write_through(data, limits)
    }

    /// A write that does not fit in the write buffer: what is buffered goes
    /// first, then `data` itself (buffered if it fits then).
    #[inline(never)]
    fn write_through(&mut self, data: &[u8], limits: &Limits) -> Result<()> {
        if self.wbuf.len() + data.len() > self.wcap {
            self.flush(limits)?;
        }
        if data.len() >= self.wcap {
            return self.send_all(data, limits);
        }
        self.wbuf.extend_from_slice(data);
        Ok(())
    }

    /// Sends what is buffered: usually one send(2) takes it all.
    #[inline(always)]
    fn flush(&mut self, limits: &Limits) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let first = send_fd(
            self.socket.as_raw_fd(),
            &self.wbuf,
            Self::send_flags(limits),
        );
        if matches!(first, Ok(n) if n == self.wbuf.len()) {
            self.wbuf.clear();
            self.sent_some();
            return Ok(());
        }
        self.flush_rest(limits, first)
    }

    /// Request::reply on a stream: what is buffered, then `data`. Out of
    /// line, so that the datagram replies (the usual reply) keep a small
    /// frame.
    #[inline(never)]
    fn reply(&mut self, data: &[u8], limits: &Limits) -> Result<()> {
        self.flush(limits)?;
        self.send_all(data, limits)
    }

    /// [`StreamIo::flush`] after a first send(2) that did not take it all.
    #[inline(never)]
    fn flush_rest(&mut self, limits: &Limits, first: io::Result<usize>) -> Result<()> {
        let mut sent = 0;
        let result = self.send_rest(&self.wbuf, limits, &mut sent, first);
        // After a timeout the unsent rest stays buffered for a retry.
        if sent == self.wbuf.len() {
            self.wbuf.clear();
        } else {
            self.wbuf.drain(..sent);
        }
        result
    }
}

/// Clears a request's between-requests mark when its read returns.
struct BetweenMark<'a>(&'a Between);

impl Drop for BetweenMark<'_> {
    fn drop(&mut self) {
        self.0.flag.store(false, Ordering::SeqCst);
    }
}

/// The index of the first '\n' in `bytes`. Eight bytes at a time (a
/// byte-wise scan costs ~4 instructions a byte, and a line a few dozen
/// bytes); a zero byte of `word ^ 0x0a0a..` is a '\n', and the lowest
/// byte flagged by `(x - 0x0101..) & !x & 0x8080..` is the first zero
/// (borrows only flag bytes above one).
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut base = 0;
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let x = u64::from_le_bytes(eight) ^ NEWLINES;
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(base + (found.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| base + i)
}

/// Whether the client has sent bytes not read yet (peeked).
fn input_waiting(socket: &Socket) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        socket.recv_with_flags(as_uninit(&mut byte), libc::MSG_PEEK | libc::MSG_DONTWAIT),
        Ok(n) if n > 0
    )
}

#[cfg(test)]
mod tests {
    use super::find_newline;

    #[test]
    fn find_newline_finds_the_first_newline_as_a_bytewise_scan_does() {
        // Every length to 40, a newline at each place (and none), amid
        // bytes that trip a careless word scan: 0x0b and 0x8a (one bit off
        // '\n'), 0x09 (borrows into the next byte), 0x00.
        for len in 0..40 {
            for fill in [b'x', 0x0b, 0x8a, 0x09, 0x00, 0xff] {
                for at in (0..len).map(Some).chain([None]) {
                    let mut bytes = vec![fill; len];
                    if let Some(i) = at {
                        bytes[i] = b'\n';
                        if i + 3 < len {
                            bytes[i + 3] = b'\n';
                        }
                    }
                    let want = bytes.iter().position(|&b| b == b'\n');
                    assert_eq!(find_newline(&bytes), want, "{bytes:?}");
                }
            }
        }
    }
}
