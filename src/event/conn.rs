//! One connection of the event mode: its socket, the bytes received but not
//! yet consumed (the "table of partially finished requests" of Python's
//! docs), and the output not yet sent. Buffers exist only while they hold
//! data, so an idle connection costs a few hundred bytes.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use socket2::{SockAddr, Socket};

use crate::address::format_sockaddr;
use crate::error::{Error, ErrorKind, Result};

/// A peer address in as little memory as an idle connection can afford:
/// an IP address inline (sockaddr_storage would take 128 bytes), a Unix
/// name as its text (empty, without allocating, for unnamed clients).
enum Peer {
    Inet(std::net::SocketAddr),
    Other(Box<str>),
}

impl From<&SockAddr> for Peer {
    fn from(addr: &SockAddr) -> Self {
        match addr.as_socket() {
            Some(inet) => Peer::Inet(inet),
            None => Peer::Other(format_sockaddr(addr).into_boxed_str()),
        }
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
    /// Ask to close once the output is flushed.
    pub(crate) close_requested: bool,
    /// The peer shut down its side (or the socket failed): no more reads.
    pub(crate) read_done: bool,
    /// The handler took the end of input: stay open until it closes.
    pub(crate) held_after_eof: bool,
    /// Sending failed: the connection is beyond saving.
    pub(crate) broken: bool,
    /// What epoll watches now, to skip needless epoll_ctl calls.
    pub(crate) registered: nix::sys::epoll::EpollFlags,
    /// Loop-local tick of the last activity, for the idle timeout.
    pub(crate) last_active: u64,
    /// Bytes went out since the loop last looked: activity too.
    pub(crate) sent_since_check: bool,
    /// Closed for the user (on_close has run), write side shut down: the
    /// loop only reads and discards until the peer closes (lingering close).
    pub(crate) lingering: bool,
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
            close_requested: false,
            read_done: false,
            held_after_eof: false,
            broken: false,
            registered: nix::sys::epoll::EpollFlags::empty(),
            last_active: now,
            sent_since_check: false,
            lingering: false,
            timer_start: 0,
            peer_permit: None,
            timers: 0,
            timers_closed: false,
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
            Peer::Other(text) => text.to_string(),
        }
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
    /// blocking; the rest goes out when the socket is writable.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.close_requested || self.broken {
            return Err(Error::new(ErrorKind::Closed, "the connection is closing"));
        }
        if self.output_full() {
            return Err(Error::new(
                ErrorKind::WouldBlock,
                format!(
                    "{} bytes are waiting to be sent (high-water mark {}): wait until the peer reads",
                    self.pending_output(),
                    self.high_water
                ),
            ));
        }
        let mut rest = data;
        if self.pending_output() == 0 {
            match self.send(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            }
        }
        if !rest.is_empty() {
            // Drop what was sent once it is at least half the buffer, so the
            // buffer stays within about twice the pending output however
            // much passes through it (amortised: each byte moves once).
            if self.sent > 0 && self.sent >= self.output.len() - self.sent {
                self.output.drain(..self.sent);
                self.sent = 0;
            }
            self.output.extend_from_slice(rest);
        }
        Ok(())
    }

    /// One non-blocking send; 0 when the socket is full.
    fn send(&mut self, data: &[u8]) -> Result<usize> {
        loop {
            match self
                .socket
                .send_with_flags(data, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
            {
                Ok(n) => {
                    self.sent_since_check |= n > 0;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(Error::io("send", e)),
            }
        }
    }

    /// Sends queued output while the socket takes it. The buffer is freed
    /// once empty.
    pub(crate) fn flush(&mut self) -> Result<()> {
        while self.pending_output() > 0 {
            let pending = std::mem::take(&mut self.output);
            let result = self.send(&pending[self.sent..]);
            self.output = pending;
            let n = match result {
                Ok(n) => n,
                Err(e) => {
                    self.broken = true;
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
        Ok(())
    }

    /// Closes once the queued output has been sent.
    pub fn close(&mut self) {
        self.close_requested = true;
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
        self.shutdown(std::net::Shutdown::Write);
        self.lingering = true;
        self.timer_start = tick + 1;
        self.last_active = tick;
    }

    /// Whether the loop should close the connection now.
    pub(crate) fn finished(&self) -> bool {
        let done = self.close_requested || (self.read_done && !self.held_after_eof);
        self.broken || (done && self.pending_output() == 0)
    }
}
