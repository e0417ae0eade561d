//! Request I/O for handlers (Python's StreamRequestHandler and
//! DatagramRequestHandler): buffered reads, readline, writes, and the
//! datagram reply sent when the handler finishes.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockAddr, Socket};

use crate::address::format_sockaddr;
use crate::config::{check_request_timeout, Concurrency};
use crate::error::{Error, ErrorKind, Result};
use crate::peer_limit::PeerPermit;
use crate::server::Server;
use crate::sys::{as_uninit, wait_ready};
use crate::transport::has_reply_address;

/// One request: a stream connection or one datagram, with its client.
pub struct Request {
    server: Arc<Server>,
    client: SockAddr,
    client_text: String,
    timeout: Option<Duration>,
    io: RequestIo,
    in_handle: bool,
    hand_off: Option<HandOff>,
    /// The handler's own per-request value (a C pointer), opaque here.
    data: usize,
    /// This connection's place in the per-IP limit, freed with the request.
    peer_permit: Option<PeerPermit>,
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
    rbuf: Box<[u8]>,
    rpos: usize,
    rend: usize,
    /// Pending output when the server has a write buffer (Python's wbufsize).
    wbuf: Vec<u8>,
    wcap: usize,
}

struct DatagramIo {
    /// The server's socket, shared: replies go out through it.
    socket: Arc<Socket>,
    data: Vec<u8>,
    pos: usize,
    /// Collected writes (Python's wfile); sent when the handler finishes if
    /// the handler wrote anything.
    reply: Option<Vec<u8>>,
}

impl Request {
    pub(crate) fn stream(server: Arc<Server>, socket: Socket, client: SockAddr) -> Self {
        let config = server.config();
        let io = StreamIo {
            socket,
            rbuf: vec![0; config.read_buffer_size].into_boxed_slice(),
            rpos: 0,
            rend: 0,
            wbuf: Vec::new(),
            wcap: config.write_buffer_size,
        };
        Request::new(server, client, RequestIo::Stream(io))
    }

    pub(crate) fn datagram(
        server: Arc<Server>,
        socket: Arc<Socket>,
        data: Vec<u8>,
        client: SockAddr,
    ) -> Self {
        let io = DatagramIo {
            socket,
            data,
            pos: 0,
            reply: None,
        };
        Request::new(server, client, RequestIo::Datagram(io))
    }

    fn new(server: Arc<Server>, client: SockAddr, io: RequestIo) -> Self {
        let timeout = server.config().request_timeout;
        Request {
            client_text: format_sockaddr(&client),
            server,
            client,
            timeout,
            io,
            in_handle: false,
            hand_off: None,
            data: 0,
            peer_permit: None,
        }
    }

    pub(crate) fn set_peer_permit(&mut self, permit: Option<PeerPermit>) {
        self.peer_permit = permit;
    }

    /// For SS_FORKING: the parent keeps the permit until the child ends.
    pub(crate) fn take_peer_permit(&mut self) -> Option<PeerPermit> {
        self.peer_permit.take()
    }

    /// The handler's own value for this request, set by `set_data`.
    pub fn data(&self) -> usize {
        self.data
    }

    pub fn set_data(&mut self, value: usize) {
        self.data = value;
    }

    pub(crate) fn set_in_handle(&mut self, on: bool) {
        self.in_handle = on;
    }

    pub(crate) fn take_hand_off(&mut self) -> Option<HandOff> {
        self.hand_off.take()
    }

    /// Asks for the rest of this request to run, once `handle` returns
    /// successfully, as `continuation` on a new thread or in a forked child,
    /// followed by finish and close there; the server moves on at once
    /// (the seed's "finish processing in a forked child"). Only from
    /// inside `handle`, once per request.
    pub fn hand_off(&mut self, target: HandOffTarget, continuation: Continuation) -> Result<()> {
        if !self.in_handle {
            return Err(Error::wrong_state(
                "a request can only be handed off from inside its handle callback",
            ));
        }
        if self.hand_off.is_some() {
            return Err(Error::wrong_state("this request is already handed off"));
        }
        self.hand_off = Some(HandOff {
            target,
            continuation,
        });
        Ok(())
    }

    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    pub fn client_address(&self) -> &str {
        &self.client_text
    }

    pub fn client_sockaddr(&self) -> &SockAddr {
        &self.client
    }

    pub fn is_datagram(&self) -> bool {
        matches!(self.io, RequestIo::Datagram(_))
    }

    /// The connection's fd, or the server socket's for a datagram.
    pub fn fileno(&self) -> RawFd {
        match &self.io {
            RequestIo::Stream(s) => s.socket.as_raw_fd(),
            RequestIo::Datagram(d) => d.socket.as_raw_fd(),
        }
    }

    /// The received datagram, whole; None for a stream request.
    pub fn datagram_data(&self) -> Option<&[u8]> {
        match &self.io {
            RequestIo::Datagram(d) => Some(&d.data),
            RequestIo::Stream(_) => None,
        }
    }

    /// Per-operation timeout for the request's reads and writes (None: block).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        check_request_timeout(timeout)?;
        self.timeout = timeout;
        Ok(())
    }

    /// Reads up to `buf.len()` bytes; 0 means end of stream (or of the datagram).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let timeout = self.timeout;
        match &mut self.io {
            RequestIo::Datagram(d) => {
                Ok(d.take(buf.len(), |src| buf[..src.len()].copy_from_slice(src)))
            }
            RequestIo::Stream(s) => s.read(buf, timeout),
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
    pub fn readline(&mut self, buf: &mut [u8]) -> Result<usize> {
        let timeout = self.timeout;
        match &mut self.io {
            RequestIo::Datagram(d) => {
                let rest = &d.data[d.pos..];
                let limit = buf.len().min(rest.len());
                let n = rest[..limit]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(limit, |i| i + 1);
                Ok(d.take(n, |src| buf[..n].copy_from_slice(src)))
            }
            RequestIo::Stream(s) => s.readline(buf, timeout),
        }
    }

    /// Writes all of `data` (a stream sends it unless a write buffer is set;
    /// a datagram request collects it for the reply).
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let timeout = self.timeout;
        match &mut self.io {
            RequestIo::Datagram(d) => {
                d.reply.get_or_insert_with(Vec::new).extend_from_slice(data);
                Ok(())
            }
            RequestIo::Stream(s) => s.write(data, timeout),
        }
    }

    /// Sends buffered output (a no-op for datagrams, which reply on finish).
    pub fn flush(&mut self) -> Result<()> {
        let timeout = self.timeout;
        match &mut self.io {
            RequestIo::Datagram(_) => Ok(()),
            RequestIo::Stream(s) => s.flush(timeout),
        }
    }

    /// Sends `data` to the client at once: one datagram, or bytes on the stream.
    pub fn reply(&mut self, data: &[u8]) -> Result<()> {
        let timeout = self.timeout;
        let wait = self.reply_wait();
        match &mut self.io {
            RequestIo::Datagram(d) => send_datagram(&d.socket, data, &self.client, wait),
            RequestIo::Stream(s) => {
                s.flush(timeout)?;
                s.send_all(data, timeout)
            }
        }
    }

    /// What the server does once the handler is done: send the collected
    /// datagram reply, or flush a stream's buffered output.
    pub(crate) fn complete(&mut self) -> Result<()> {
        let timeout = self.timeout;
        let wait = self.reply_wait();
        match &mut self.io {
            RequestIo::Datagram(d) => match d.reply.take() {
                Some(reply) => send_datagram(&d.socket, &reply, &self.client, wait),
                None => Ok(()),
            },
            RequestIo::Stream(s) => s.flush(timeout),
        }
    }

    fn reply_wait(&self) -> ReplyWait {
        if self.server.config().concurrency == Concurrency::Event {
            ReplyWait::Never
        } else {
            ReplyWait::Upto(self.timeout)
        }
    }

    /// Python's shutdown_request: SHUT_WR then close for a stream (errors
    /// such as ENOTCONN ignored); nothing for a datagram, whose socket is the
    /// server's.
    pub(crate) fn shutdown(self) {
        if let RequestIo::Stream(s) = self.io {
            let _ = s.socket.shutdown(std::net::Shutdown::Write);
        }
    }
}

impl DatagramIo {
    /// Consumes up to `n` unread bytes, handing them to `copy`.
    fn take(&mut self, n: usize, copy: impl FnOnce(&[u8])) -> usize {
        let n = n.min(self.data.len() - self.pos);
        copy(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        n
    }
}

/// How a datagram reply waits when the socket's send buffer is full: up to
/// the request timeout for blocking handlers; not at all in event mode,
/// where a loop thread must never block (the reply is dropped and
/// reported instead).
#[derive(Clone, Copy)]
enum ReplyWait {
    Upto(Option<Duration>),
    Never,
}

fn send_datagram(socket: &Socket, data: &[u8], to: &SockAddr, wait: ReplyWait) -> Result<()> {
    if !has_reply_address(to) {
        return Err(Error::new(
            ErrorKind::Address,
            "cannot reply: the sender has no address (an unbound Unix datagram socket)",
        ));
    }
    loop {
        match socket.send_to_with_flags(data, to, libc::MSG_NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // The server socket is non-blocking: wait for room, then retry.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => match wait {
                ReplyWait::Upto(timeout) => {
                    wait_ready(socket.as_raw_fd(), libc::POLLOUT, timeout, "sendto")?
                }
                ReplyWait::Never => {
                    return Err(Error::new(
                        ErrorKind::WouldBlock,
                        format!(
                            "sendto {}: the send buffer is full; reply dropped",
                            format_sockaddr(to)
                        ),
                    ))
                }
            },
            Err(e) => return Err(Error::io(format!("sendto {}", format_sockaddr(to)), e)),
        }
    }
}

impl StreamIo {
    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// One recv into `buf`, after waiting for data if a timeout is set.
    fn recv(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
        loop {
            if timeout.is_some() {
                wait_ready(self.fd(), libc::POLLIN, timeout, "recv")?;
            }
            match self.socket.recv(as_uninit(buf)) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A vanished peer reads as end of stream, as Python's rfile does.
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => return Ok(0),
                Err(e) => return Err(Error::io("recv", e)),
            }
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.rbuf[self.rpos..self.rend]
    }

    fn consume(&mut self, n: usize) {
        self.rpos += n;
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        }
    }

    /// Refills the empty read buffer; returns the bytes now buffered (0 = EOF).
    fn fill(&mut self, timeout: Option<Duration>) -> Result<usize> {
        debug_assert_eq!(self.rpos, self.rend);
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let n = self.recv(&mut rbuf, timeout);
        self.rbuf = rbuf;
        let n = n?;
        self.rpos = 0;
        self.rend = n;
        Ok(n)
    }

    fn read(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
        if self.rpos == self.rend {
            // Large reads and unbuffered mode bypass the buffer.
            if buf.len() >= self.rbuf.len() {
                return self.recv(buf, timeout);
            }
            if self.fill(timeout)? == 0 {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.rend - self.rpos);
        buf[..n].copy_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
        self.consume(n);
        Ok(n)
    }

    /// Reads a line into `buf` (at most `buf.len()` bytes). The line stays
    /// in the read buffer until it is complete, so a timeout or error loses
    /// nothing and the call can be retried; only a line longer than the
    /// read buffer is handed over in parts (and unbuffered mode reads byte
    /// by byte, so bytes read before an error are lost there).
    fn readline(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
        if self.rbuf.is_empty() {
            return self.readline_unbuffered(buf, timeout);
        }
        let mut filled = 0;
        loop {
            let want = buf.len() - filled;
            let chunk = self.buffered();
            let limit = want.min(chunk.len());
            let newline = chunk[..limit].iter().position(|&b| b == b'\n');
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
                continue;
            }
            // Need more bytes: make room at the end, then read after what is
            // already buffered.
            if self.rend == self.rbuf.len() {
                self.rbuf.copy_within(self.rpos..self.rend, 0);
                self.rend -= self.rpos;
                self.rpos = 0;
            }
            let mut rbuf = std::mem::take(&mut self.rbuf);
            let got = self.recv(&mut rbuf[self.rend..], timeout);
            self.rbuf = rbuf;
            match got? {
                0 => {
                    // End of stream: the last, unterminated line.
                    let chunk = self.buffered();
                    let n = chunk.len().min(want);
                    buf[filled..filled + n].copy_from_slice(&chunk[..n]);
                    self.consume(n);
                    return Ok(filled + n);
                }
                n => self.rend += n,
            }
        }
    }

    fn readline_unbuffered(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            // One byte at a time, so nothing past the line is consumed.
            if self.recv(&mut buf[filled..filled + 1], timeout)? == 0 {
                break;
            }
            filled += 1;
            if buf[filled - 1] == b'\n' {
                break;
            }
        }
        Ok(filled)
    }

    fn send_all(&self, data: &[u8], timeout: Option<Duration>) -> Result<()> {
        self.send_counted(data, timeout, &mut 0)
    }

    /// Sends all of `data`, adding to `*sent` as bytes go out, so that a
    /// caller can keep what a timeout or error left unsent.
    fn send_counted(
        &self,
        mut data: &[u8],
        timeout: Option<Duration>,
        sent: &mut usize,
    ) -> Result<()> {
        // MSG_NOSIGNAL: a vanished peer gives EPIPE, never SIGPIPE in the host.
        // With a timeout the send must not block past it, hence MSG_DONTWAIT
        // after poll says there is room.
        let flags = libc::MSG_NOSIGNAL
            | if timeout.is_some() {
                libc::MSG_DONTWAIT
            } else {
                0
            };
        while !data.is_empty() {
            if timeout.is_some() {
                wait_ready(self.fd(), libc::POLLOUT, timeout, "send")?;
            }
            match self.socket.send_with_flags(data, flags) {
                Ok(n) => {
                    data = &data[n..];
                    *sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && timeout.is_some() => {}
                Err(e) => return Err(Error::io("send", e)),
            }
        }
        Ok(())
    }

    fn write(&mut self, data: &[u8], timeout: Option<Duration>) -> Result<()> {
        if self.wcap == 0 {
            return self.send_all(data, timeout);
        }
        if self.wbuf.len() + data.len() > self.wcap {
            self.flush(timeout)?;
        }
        if data.len() >= self.wcap {
            return self.send_all(data, timeout);
        }
        self.wbuf.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self, timeout: Option<Duration>) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.wbuf);
        let mut sent = 0;
        let result = self.send_counted(&pending, timeout, &mut sent);
        // After a timeout the unsent rest stays buffered for a retry.
        pending.drain(..sent);
        self.wbuf = pending;
        result
    }
}
