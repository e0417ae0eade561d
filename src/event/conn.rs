//! One connection of the event mode: its socket, the bytes received but not
//! yet consumed (the "table of partially finished requests" of Python's
//! docs), and the output not yet sent. Buffers exist only while they hold
//! data, so an idle connection costs a few hundred bytes.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{SockAddr, Socket};

use super::watch::Watch;

use crate::address::format_sockaddr;
use crate::error::{Error, ErrorKind, Result};

/// One non-blocking recv on a connected stream socket (by syscall(2), see
/// [`crate::sys::recv_fd`]).
#[inline(always)]
pub(crate) fn recv_now(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    crate::sys::recv_fd(fd, buf, libc::MSG_DONTWAIT)
}

/// One non-blocking send without SIGPIPE (see [`crate::sys::send_fd`]).
#[inline(always)]
fn send_now(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    crate::sys::send_fd(fd, data, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
}

/// A peer address in as little memory as an idle connection can afford:
/// an IP address inline (sockaddr_storage would take 128 bytes), an
/// unnamed Unix client as nothing at all, a named one (rare) boxed. Kept
/// raw, as accept gave it, for ss_conn_peer_sockaddr.
enum Peer {
    Inet(std::net::SocketAddr),
    UnnamedUnix,
    Other(Box<SockAddr>),
}

impl From<&SockAddr> for Peer {
    fn from(addr: &SockAddr) -> Self {
        match addr.as_socket() {
            Some(inet) => Peer::Inet(inet),
            None if addr.is_unnamed()
                || addr.len() as usize <= std::mem::size_of::<libc::sa_family_t>() =>
            {
                Peer::UnnamedUnix
            }
            None => Peer::Other(Box::new(addr.clone())),
        }
    }
}

/// The states of a connection that the loop and ss_conn_write test on
/// every request, side by side in eight bytes: "none of these" (the usual
/// case) is then one load and compare (`States::any`) instead of a load
/// and branch per flag (callgrind counted ~40 instructions per echo for
/// the separate tests).
#[derive(Default)]
#[repr(C)]
pub(crate) struct States {
    /// Ask to close once the output is flushed.
    pub(crate) close_requested: bool,
    /// The peer shut down its side (or the socket failed): no more reads.
    pub(crate) read_done: bool,
    /// Sending failed: the connection is beyond saving.
    pub(crate) broken: bool,
    /// Closed for the user (on_close has run), write side shut down: the
    /// loop only reads and discards until the peer closes (lingering close).
    pub(crate) lingering: bool,
    /// ss_conn_pause_reading: not read, on_data not called, until resumed.
    pub(crate) paused: bool,
    /// Resumed with input held: the loop presents it soon (see settle).
    pub(crate) resume_feed: bool,
    /// Paused, and the peer hung up (EPOLLHUP without an error): the socket
    /// is parked (EPOLLONESHOT, spent) so that the level-triggered hang-up
    /// does not wake the loop again; resuming reads what is left.
    pub(crate) hung_up: bool,
    /// ss_conn_shutdown_write: shut the write side down once the queued
    /// output is sent (`write_shut` once done).
    pub(crate) shut_write_requested: bool,
}

impl States {
    /// The eight flags as one word: a byte each, in field order.
    #[inline(always)]
    fn bits(&self) -> u64 {
        u64::from_ne_bytes([
            u8::from(self.close_requested),
            u8::from(self.read_done),
            u8::from(self.broken),
            u8::from(self.lingering),
            u8::from(self.paused),
            u8::from(self.resume_feed),
            u8::from(self.hung_up),
            u8::from(self.shut_write_requested),
        ])
    }

    /// Any of the flags is set.
    #[inline(always)]
    pub(crate) fn any(&self) -> bool {
        self.bits() != 0
    }

    /// Closing, failed or paused: on_data is not called.
    #[inline(always)]
    pub(crate) fn stops_input(&self) -> bool {
        const STOPS_INPUT: u64 = u64::from_ne_bytes([1, 0, 1, 0, 1, 0, 0, 0]);
        self.bits() & STOPS_INPUT != 0
    }

    /// Closing, failed or its write side shut: writes are refused.
    #[inline(always)]
    fn stops_output(&self) -> bool {
        const STOPS_OUTPUT: u64 = u64::from_ne_bytes([1, 0, 1, 0, 0, 0, 0, 1]);
        self.bits() & STOPS_OUTPUT != 0
    }
}

pub struct Conn {
    socket: Socket,
    /// Kept from accept: a reset peer can no longer be asked for it.
    peer: Peer,
    id: u64,
    /// Received bytes the handler has not consumed yet.
    pub(crate) input: Vec<u8>,
    /// Queued output: `output[sent..]` is still to be sent.
    output: Vec<u8>,
    sent: usize,
    high_water: usize,
    user_data: usize,
    /// The states the hot path looks at on every request.
    pub(crate) st: States,
    /// The handler took the end of input: stay open until it closes.
    pub(crate) held_after_eof: bool,
    /// What epoll watches now, to skip needless epoll_ctl calls.
    pub(crate) registered: nix::sys::epoll::EpollFlags,
    /// Loop-local tick of the last activity, for the idle timeout.
    pub(crate) last_active: u64,
    /// Bytes went out since the loop last looked: activity too.
    pub(crate) sent_since_check: bool,
    /// Loop tick + 1 (0 = none): while serving, when unconsumed input
    /// appeared or on_data last consumed some (for the request deadline);
    /// while lingering, when lingering began (for lingering_time). One
    /// field for both keeps idle connections small.
    pub(crate) timer_start: u64,
    /// The place in the per-IP limit, freed when the connection closes or
    /// starts lingering; boxed so that a server without a limit pays one
    /// pointer per connection.
    pub(crate) peer_permit: Option<Box<crate::peer_limit::PeerPermit>>,
    /// The newest of its pending timers (0 = none), the head of a list
    /// kept in its loop's timer heap (see timer.rs).
    pub(crate) timers: u64,
    /// Its timers were cancelled for the close: no more can be set.
    pub(crate) timers_closed: bool,
    /// Pending output reached the high-water mark: on_drain is due when it
    /// falls to the low-water mark.
    pub(crate) drain_armed: bool,
    pub(crate) write_shut: bool,
    /// ss_conn_abort: reset (SO_LINGER 0), no shutdown, no lingering.
    pub(crate) aborted: bool,
    /// Descriptors watched for this connection (ss_conn_watch_fd); boxed so
    /// that a connection without any pays one pointer (a Vec would take
    /// three words from every idle connection).
    #[allow(clippy::box_collection)]
    pub(crate) watches: Option<Box<Vec<Watch>>>,
    /// Some input has arrived: a drain gives a connection that has sent
    /// nothing yet a moment before taking it for idle (its first request
    /// may be on its way).
    pub(crate) received: bool,
    /// ss_conn_set_busy: an answer is on its way from elsewhere.
    pub(crate) busy: bool,
}

impl Conn {
    pub(crate) fn new(
        socket: Socket,
        peer: &SockAddr,
        id: u64,
        high_water: usize,
        now: u64,
    ) -> Self {
        Conn {
            socket,
            peer: Peer::from(peer),
            id,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            high_water,
            user_data: 0,
            st: States::default(),
            held_after_eof: false,
            registered: nix::sys::epoll::EpollFlags::empty(),
            last_active: now,
            sent_since_check: false,
            timer_start: 0,
            peer_permit: None,
            timers: 0,
            timers_closed: false,
            drain_armed: false,
            write_shut: false,
            aborted: false,
            watches: None,
            received: false,
            busy: false,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    pub(crate) fn socket(&self) -> &Socket {
        &self.socket
    }

    /// The peer's address as a string ("" for an unnamed Unix socket).
    pub fn peer_address(&self) -> String {
        match &self.peer {
            Peer::Inet(addr) => addr.to_string(),
            Peer::UnnamedUnix => String::new(),
            Peer::Other(addr) => format_sockaddr(addr),
        }
    }

    /// The peer's raw address, as accept gave it (an unnamed Unix client:
    /// the family alone, as accept reports it).
    pub fn peer_sockaddr(&self) -> SockAddr {
        match &self.peer {
            Peer::Inet(addr) => SockAddr::from(*addr),
            Peer::UnnamedUnix => SockAddr::unix("").expect("an empty Unix path always fits"),
            Peer::Other(addr) => (**addr).clone(),
        }
    }

    /// The connection's own address (getsockname).
    pub fn local_sockaddr(&self) -> Result<SockAddr> {
        self.socket
            .local_addr()
            .map_err(|e| Error::io("getsockname", e))
    }

    pub fn user_data(&self) -> usize {
        self.user_data
    }

    pub fn set_user_data(&mut self, value: usize) {
        self.user_data = value;
    }

    /// Bytes queued and not yet sent.
    pub fn pending_output(&self) -> usize {
        self.output.len() - self.sent
    }

    /// At or over the high-water mark: further writes are refused until the
    /// peer reads, and the connection is not read meanwhile.
    pub fn output_full(&self) -> bool {
        self.pending_output() >= self.high_water
    }

    /// Queues `data` (copied) and sends what the socket takes now, without
    /// blocking; the rest goes out when the socket is writable. Inlined
    /// into ss_conn_write: one call layer less on every reply.
    #[inline(always)]
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.check_writable()?;
        let mut rest = data;
        if self.pending_output() == 0 {
            match self.send(rest) {
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(e) => {
                    self.st.broken = true;
                    return Err(e);
                }
            }
        }
        if !rest.is_empty() {
            self.queue(rest);
        }
        Ok(())
    }

    /// As `write`, for several buffers in order: one sendmsg for all of
    /// them when nothing is queued, the rest copied into the queue.
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<()> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(());
        }
        self.check_writable()?;
        let mut skip = 0;
        if self.pending_output() == 0 {
            match self.send_vectored(bufs) {
                Ok(n) => skip = n,
                Err(e) => {
                    self.st.broken = true;
                    return Err(e);
                }
            }
        }
        let mut rest = bufs.iter().filter_map(|b| {
            if skip >= b.len() {
                skip -= b.len();
                None
            } else {
                let part = &b[skip..];
                skip = 0;
                Some(part)
            }
        });
        for part in rest.by_ref() {
            self.queue(part);
        }
        Ok(())
    }

    /// Why a write is refused now, if it is: closing, write side shut
    /// down, or the output at its high-water mark (which arms on_drain).
    #[inline]
    fn check_writable(&mut self) -> Result<()> {
        if self.st.stops_output() || self.output_full() {
            return Err(self.refusal());
        }
        Ok(())
    }

    #[cold]
    fn refusal(&mut self) -> Error {
        if self.st.close_requested || self.st.broken {
            return Error::new(ErrorKind::Closed, "the connection is closing");
        }
        if self.st.shut_write_requested {
            return Error::new(
                ErrorKind::Closed,
                "the write side is shut down (ss_conn_shutdown_write)",
            );
        }
        self.drain_armed = true;
        Error::new(
            ErrorKind::WouldBlock,
            format!(
                "{} bytes are waiting to be sent (high-water mark {}): wait until the peer reads",
                self.pending_output(),
                self.high_water
            ),
        )
    }

    /// Appends what the socket did not take to the queue.
    #[inline(never)]
    fn queue(&mut self, part: &[u8]) {
        if part.is_empty() {
            return;
        }
        // Drop what was sent once it is at least half the buffer, so the
        // buffer stays within about twice the pending output however
        // much passes through it (amortised: each byte moves once).
        if self.sent > 0 && self.sent >= self.output.len() - self.sent {
            self.output.drain(..self.sent);
            self.sent = 0;
        }
        self.output.extend_from_slice(part);
        if self.output_full() {
            self.drain_armed = true;
        }
    }

    /// One non-blocking send; 0 when the socket is full.
    #[inline(always)]
    fn send(&mut self, data: &[u8]) -> Result<usize> {
        match send_now(self.fd(), data) {
            Ok(n) => {
                self.sent_since_check |= n > 0;
                Ok(n)
            }
            Err(e) => self.send_failed(data, e),
        }
    }

    /// A send that failed: retried after a signal, 0 when the socket is
    /// full, else the error.
    #[cold]
    fn send_failed(&mut self, data: &[u8], mut error: io::Error) -> Result<usize> {
        loop {
            match error.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(Error::io("send", error)),
            }
            match send_now(self.fd(), data) {
                Ok(n) => {
                    self.sent_since_check |= n > 0;
                    return Ok(n);
                }
                Err(e) => error = e,
            }
        }
    }

    /// One non-blocking sendmsg of several buffers; 0 when the socket is
    /// full.
    fn send_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize> {
        loop {
            match self
                .socket
                .send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
            {
                Ok(n) => {
                    self.sent_since_check |= n > 0;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(Error::io("sendmsg", e)),
            }
        }
    }

    /// Sends queued output while the socket takes it. The buffer is freed
    /// once empty (and a write shutdown asked for happens then).
    pub(crate) fn flush(&mut self) -> Result<()> {
        while self.pending_output() > 0 {
            let pending = std::mem::take(&mut self.output);
            let result = self.send(&pending[self.sent..]);
            self.output = pending;
            let n = match result {
                Ok(n) => n,
                Err(e) => {
                    self.st.broken = true;
                    return Err(e);
                }
            };
            if n == 0 {
                return Ok(());
            }
            self.sent += n;
        }
        self.output = Vec::new();
        self.sent = 0;
        self.shut_write_if_flushed();
        Ok(())
    }

    /// Stops reading: no recv, no on_data, until resume_reading.
    pub fn pause_reading(&mut self) {
        self.st.paused = true;
    }

    /// Reads again; input already held is presented to on_data by the
    /// loop soon (after the current callback returns), before more is
    /// read.
    pub fn resume_reading(&mut self) {
        if self.st.paused {
            self.st.paused = false;
            self.st.resume_feed = !self.input.is_empty();
        }
    }

    pub fn reading_paused(&self) -> bool {
        self.st.paused
    }

    /// Half-close: shuts the write side down (FIN) once the queued output
    /// is sent; reading goes on. Refused once closing.
    pub fn shutdown_write(&mut self) -> Result<()> {
        if self.st.close_requested || self.st.broken {
            return Err(Error::new(ErrorKind::Closed, "the connection is closing"));
        }
        self.st.shut_write_requested = true;
        self.shut_write_if_flushed();
        Ok(())
    }

    fn shut_write_if_flushed(&mut self) {
        if self.st.shut_write_requested && !self.write_shut && self.pending_output() == 0 {
            self.shutdown(std::net::Shutdown::Write);
            self.write_shut = true;
        }
    }

    /// Abortive close: queued output and held input are dropped and the
    /// socket is closed with SO_LINGER 0 (a TCP peer gets a reset) as soon
    /// as the callback returns; no shutdown, no lingering. on_close runs
    /// (once) unless it is running already.
    pub fn abort(&mut self) {
        let _ = self.socket.set_linger(Some(std::time::Duration::ZERO));
        self.output = Vec::new();
        self.sent = 0;
        self.input = Vec::new();
        self.drain_armed = false;
        self.aborted = true;
        self.st.broken = true;
    }

    /// Marks the connection busy for a drain (see crate::event::graceful).
    pub fn set_busy(&mut self, busy: bool) {
        self.busy = busy;
    }

    /// Closes once the queued output has been sent.
    pub fn close(&mut self) {
        self.st.close_requested = true;
    }

    /// Shuts down `how` (errors ignored: the peer may be gone already).
    /// Unlike close, this reaches the peer even while a forked child holds
    /// a copy of the descriptor.
    pub(crate) fn shutdown(&self, how: std::net::Shutdown) {
        let _ = self.socket.shutdown(how);
    }

    /// Leaves the user's view for a lingering close: drops what is queued
    /// either way (the output was flushed, or it is given up), sends FIN
    /// after what the kernel still holds, and from now on only discards.
    /// Its per-IP place is freed now, as the header promises (at on_close)
    /// and as the blocking modes do when they hand a socket to lingering.
    pub(crate) fn start_lingering(&mut self, tick: u64) {
        self.peer_permit = None;
        self.input = Vec::new();
        self.output = Vec::new();
        self.sent = 0;
        if !self.aborted {
            self.shutdown(std::net::Shutdown::Write);
        }
        self.st.lingering = true;
        self.timer_start = tick + 1;
        self.last_active = tick;
    }

    /// Whether the loop should close the connection now.
    pub(crate) fn finished(&self) -> bool {
        let done = self.st.close_requested || (self.st.read_done && !self.held_after_eof);
        self.st.broken || (done && self.pending_output() == 0)
    }
}
