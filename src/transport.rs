//! Socket setup for the four transports (Python's TCPServer, UDPServer,
//! UnixStreamServer, UnixDatagramServer): create, bind, activate, and the
//! calls that take the next request off the socket.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use crate::address::{format_sockaddr, ServerAddress};
use crate::config::{Config, Transport};
use crate::error::{Error, ErrorKind, Result};
use crate::handler::Handler;
use crate::peer_limit::{PeerLimit, PeerPermit};
use crate::sys::{as_uninit, RateLimiter};

/// Creates the server socket, non-blocking and close-on-exec, with the
/// options that must be set before bind.
pub fn create_socket(config: &Config, address: &ServerAddress) -> Result<Socket> {
    let ty = if config.transport.is_stream() {
        Type::STREAM
    } else {
        Type::DGRAM
    };
    let socket = Socket::new(address.domain(), ty.nonblocking().cloexec(), None)
        .map_err(|e| Error::io("socket", e))?;
    if config.reuse_address {
        socket
            .set_reuse_address(true)
            .map_err(|e| Error::io("setsockopt SO_REUSEADDR", e))?;
    }
    if config.reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(|e| Error::io("setsockopt SO_REUSEPORT", e))?;
    }
    if let (Some(only), ServerAddress::Inet(std::net::SocketAddr::V6(_))) =
        (config.ipv6_only, address)
    {
        socket
            .set_only_v6(only)
            .map_err(|e| Error::io("setsockopt IPV6_V6ONLY", e))?;
    }
    Ok(socket)
}

/// A socket file this server created, remembered by inode so that close
/// removes exactly that file and never one somebody put there since.
#[derive(Debug)]
pub struct UnixFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl UnixFile {
    fn identify(path: &Path) -> Option<Self> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        meta.file_type().is_socket().then(|| UnixFile {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Removes the file if it is still the socket that bind created.
    pub fn remove(self) {
        if let Some(now) = UnixFile::identify(&self.path) {
            if now.dev == self.dev && now.ino == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds and returns the bound address (port 0 resolved) and, for a Unix
/// path, the socket file that bind created.
pub fn bind(socket: &Socket, address: &ServerAddress) -> Result<(SockAddr, Option<UnixFile>)> {
    let sockaddr = address.to_sockaddr()?;
    socket.bind(&sockaddr).map_err(|e| {
        let shown = match address {
            ServerAddress::UnixPath(p) => p.display().to_string(),
            _ => format_sockaddr(&sockaddr),
        };
        Error::io(format!("bind {shown}"), e)
    })?;
    let bound = socket
        .local_addr()
        .map_err(|e| Error::io("getsockname", e))?;
    let file = match address {
        ServerAddress::UnixPath(p) => UnixFile::identify(p),
        _ => None,
    };
    Ok((bound, file))
}

pub fn activate(socket: &Socket, config: &Config) -> Result<()> {
    if config.transport.is_stream() {
        socket
            .listen(config.backlog)
            .map_err(|e| Error::io("listen", e))?;
    }
    Ok(())
}

/// What an adopted descriptor turned out to be (see [`inspect_adopted`]).
#[derive(Debug)]
pub struct Adopted {
    /// Its address (getsockname), port 0 never: an unbound socket is refused.
    pub bound: SockAddr,
    pub address: ServerAddress,
    /// A stream socket that listen() was already called on (SO_ACCEPTCONN).
    pub listening: bool,
}

/// The kind of socket `transport` serves, for messages.
fn wanted(transport: Transport) -> &'static str {
    match transport {
        Transport::Tcp => "a TCP socket (AF_INET or AF_INET6, SOCK_STREAM)",
        Transport::Udp => "a UDP socket (AF_INET or AF_INET6, SOCK_DGRAM)",
        Transport::UnixStream => "a Unix stream socket (AF_UNIX, SOCK_STREAM)",
        Transport::UnixDatagram => "a Unix datagram socket (AF_UNIX, SOCK_DGRAM)",
    }
}

fn domain_name(domain: Domain) -> String {
    match domain {
        Domain::IPV4 => "AF_INET".into(),
        Domain::IPV6 => "AF_INET6".into(),
        Domain::UNIX => "AF_UNIX".into(),
        other => format!("address family {}", libc::c_int::from(other)),
    }
}

fn type_name(ty: Type) -> String {
    match ty {
        Type::STREAM => "SOCK_STREAM".into(),
        Type::DGRAM => "SOCK_DGRAM".into(),
        Type::SEQPACKET => "SOCK_SEQPACKET".into(),
        Type::RAW => "SOCK_RAW".into(),
        other => format!("socket type {}", libc::c_int::from(other)),
    }
}

/// Checks, without changing anything, that descriptor `fd` is a socket
/// `config`'s transport can serve: an open socket of the right family,
/// type and protocol, bound to an address, and for a stream transport
/// listening or at least not connected. Every misfit is InvalidArgument
/// with a message naming the descriptor, what it is and what was wanted.
pub fn inspect_adopted(config: &Config, fd: BorrowedFd<'_>) -> Result<Adopted> {
    let raw = fd.as_raw_fd();
    let transport = config.transport;
    let misfit = |what: String| {
        Error::invalid(format!(
            "descriptor {raw} {what}; a {} server needs {}",
            transport.name(),
            wanted(transport)
        ))
    };
    let stat =
        nix::sys::stat::fstat(fd).map_err(|e| Error::io(format!("fstat {raw}"), e.into()))?;
    let file_type =
        nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode) & nix::sys::stat::SFlag::S_IFMT;
    if file_type != nix::sys::stat::SFlag::S_IFSOCK {
        return Err(misfit("is not a socket".into()));
    }
    let socket = SockRef::from(&fd);
    let query = |what: &str, e: io::Error| Error::io(format!("{what} of descriptor {raw}"), e);
    let domain = socket
        .domain()
        .map_err(|e| query("getsockopt SO_DOMAIN", e))?;
    let ty = socket
        .r#type()
        .map_err(|e| query("getsockopt SO_TYPE", e))?;
    let protocol = socket
        .protocol()
        .map_err(|e| query("getsockopt SO_PROTOCOL", e))?;
    let inet = domain == Domain::IPV4 || domain == Domain::IPV6;
    let fits = match transport {
        Transport::Tcp => inet && ty == Type::STREAM && protocol == Some(Protocol::TCP),
        Transport::Udp => inet && ty == Type::DGRAM && protocol == Some(Protocol::UDP),
        Transport::UnixStream => domain == Domain::UNIX && ty == Type::STREAM,
        Transport::UnixDatagram => domain == Domain::UNIX && ty == Type::DGRAM,
    };
    if !fits {
        let proto = match protocol {
            Some(p) if inet && p != Protocol::TCP && p != Protocol::UDP => {
                format!(", protocol {}", libc::c_int::from(p))
            }
            _ => String::new(),
        };
        return Err(misfit(format!(
            "is a socket of family {}, type {}{proto}",
            domain_name(domain),
            type_name(ty)
        )));
    }
    let bound = socket.local_addr().map_err(|e| query("getsockname", e))?;
    let address = match (bound.as_socket(), ServerAddress::from_sockaddr(&bound)) {
        (Some(inet), _) if inet.port() == 0 => None,
        (_, address) => address,
    }
    .ok_or_else(|| misfit("is not bound to an address (bind it first)".into()))?;
    let listening = transport.is_stream()
        && socket
            .is_listener()
            .map_err(|e| query("getsockopt SO_ACCEPTCONN", e))?;
    if transport.is_stream() && !listening {
        if let Ok(peer) = socket.peer_addr() {
            return Err(misfit(format!(
                "is a connection (to {:?}), not a listening socket",
                format_sockaddr(&peer)
            )));
        }
    }
    Ok(Adopted {
        bound,
        address,
        listening,
    })
}

/// Makes an inspected descriptor ready to serve: non-blocking and
/// close-on-exec, and for a stream socket not yet listening, listen() with
/// the config's backlog when `listen` is true. On failure its flags are
/// put back as they were, so the caller gets the descriptor unchanged.
pub fn prepare_adopted(
    config: &Config,
    fd: BorrowedFd<'_>,
    adopted: &mut Adopted,
    listen: bool,
) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg};
    let raw = fd.as_raw_fd();
    let status = fcntl(fd, FcntlArg::F_GETFL)
        .map_err(|e| Error::io(format!("fcntl F_GETFL of descriptor {raw}"), e.into()))?;
    let descriptor = fcntl(fd, FcntlArg::F_GETFD)
        .map_err(|e| Error::io(format!("fcntl F_GETFD of descriptor {raw}"), e.into()))?;
    let restore = || {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(nix::fcntl::OFlag::from_bits_retain(status)),
        );
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFD(nix::fcntl::FdFlag::from_bits_retain(descriptor)),
        );
    };
    let socket = SockRef::from(&fd);
    let prepared = socket
        .set_nonblocking(true)
        .map_err(|e| Error::io(format!("fcntl O_NONBLOCK on descriptor {raw}"), e))
        .and_then(|()| {
            socket
                .set_cloexec(true)
                .map_err(|e| Error::io(format!("fcntl FD_CLOEXEC on descriptor {raw}"), e))
        })
        .and_then(|()| {
            if listen && config.transport.is_stream() && !adopted.listening {
                socket
                    .listen(config.backlog)
                    .map_err(|e| Error::io(format!("listen on descriptor {raw}"), e))?;
                adopted.listening = true;
            }
            Ok(())
        });
    if prepared.is_err() {
        restore();
    }
    prepared
}

/// How long accepting pauses after an accept error that is not transient
/// (out of descriptors, ENOBUFS, ...), in every mode, so that a listener
/// that stays readable is not polled in a busy loop.
pub(crate) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Pending connections closed per accept failure for lack of descriptors;
/// more wait for the next turn, after the pause.
const SHED_PER_FAILURE: usize = 64;

/// What one accept attempt gave.
pub(crate) enum Accepted {
    /// A connection, with its place in the per-IP limit if there is one.
    Conn(Socket, SockAddr, Option<PeerPermit>),
    /// Nothing is pending: wait for the listener to be readable again.
    Nothing,
    /// Nothing usable this time (the peer gave up before accept, or the
    /// connection was over the per-IP limit and closed): try again now.
    Again,
    /// Accepting failed and was reported: pause ACCEPT_ERROR_PAUSE.
    Pause,
}

/// Errors after which accept is simply tried again: the peer gave up
/// before accept, or a network error that accept(2) passes on from the
/// new connection (its man page says to treat them like EAGAIN).
fn is_transient_accept_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}

/// accept4(2), close-on-exec, non-blocking or not (the accepted socket
/// never inherits the listener's O_NONBLOCK on Linux): one call, where
/// socket2's plain accept would need a second (fcntl) for O_NONBLOCK.
fn accept4(listener: &Socket, nonblocking: bool) -> io::Result<(Socket, SockAddr)> {
    listener.accept4(libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 })
}

fn open_spare() -> io::Result<OwnedFd> {
    std::fs::File::options()
        .read(true)
        .open("/dev/null")
        .map(OwnedFd::from)
}

/// What reopening the spare descriptor found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Spare {
    /// It is there (reopened now, or already).
    Held,
    /// Out of descriptors: none left to take it.
    OutOfFds,
    /// Not known: another loop holds the lock, or open failed otherwise.
    Unknown,
}

/// Accepting for every mode, blocking and event: the descriptor kept spare
/// for running out of descriptors, the per-IP limit, and the rate limits
/// that keep their reports from flooding handle_error.
///
/// Out of descriptors (EMFILE/ENFILE) the pending connection can be
/// neither accepted nor refused, and the listener stays readable: polling
/// it would spin, waiting would leave the client hanging. So, as libuv's
/// `uv__emfile_trick`: close the spare, accept and close what is pending
/// (its clients see the connection closed at once), reopen the spare, and
/// pause accepting briefly.
pub(crate) struct Acceptor {
    /// Accepts hold it shared; using the spare holds it exclusively, so
    /// that another loop's accept cannot take the descriptor it frees.
    spare: RwLock<Option<OwnedFd>>,
    /// The spare could not be reopened (another thread took the freed
    /// descriptor): tried again after the next successful accept.
    spare_missing: AtomicBool,
    /// Event mode's loops accept on several threads; elsewhere the serving
    /// thread alone accepts (one loop at a time) and takes no lock: an
    /// uncontended lock still writes its page, a copy-on-write fault per
    /// connection in an SS_FORKING parent.
    shared: bool,
    peer_limit: Option<Arc<PeerLimit>>,
    max_per_ip: usize,
    failure_reports: RateLimiter,
    over_limit_reports: RateLimiter,
}

impl Acceptor {
    pub(crate) fn new(config: &Config) -> Self {
        let stream = config.transport.is_stream();
        Acceptor {
            spare: RwLock::new(if stream { open_spare().ok() } else { None }),
            spare_missing: AtomicBool::new(false),
            shared: config.concurrency == crate::config::Concurrency::Event,
            peer_limit: PeerLimit::new(config.max_connections_per_ip),
            max_per_ip: config.max_connections_per_ip,
            failure_reports: RateLimiter::new(1),
            over_limit_reports: RateLimiter::new(1),
        }
    }

    /// Accepts one connection: blocking (for a handler thread) or not (for
    /// an event loop), with TCP_NODELAY if configured. Failures are
    /// reported to `handler` here, at most once a second each.
    pub(crate) fn accept(
        &self,
        listener: &Socket,
        config: &Config,
        handler: &dyn Handler,
        nonblocking: bool,
    ) -> Accepted {
        let accepted = {
            let _shared = self.shared.then(|| crate::sync::read(&self.spare));
            accept4(listener, nonblocking)
        };
        let (conn, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Accepted::Nothing,
            Err(e) if is_transient_accept_error(&e) => return Accepted::Again,
            Err(e) => {
                let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                let (what, came_free) = if out_of_fds {
                    let (shed, came_free) = self.shed_pending(listener);
                    let then = if came_free.is_some() {
                        "then descriptors came free".to_string()
                    } else {
                        format!("accepting again in {} ms", ACCEPT_ERROR_PAUSE.as_millis())
                    };
                    (
                        format!(
                            "accept: {e}; closed {shed} pending connection(s) with the spare \
                             descriptor, {then}"
                        ),
                        came_free,
                    )
                } else {
                    (
                        format!(
                            "accept: {e}; accepting again in {} ms",
                            ACCEPT_ERROR_PAUSE.as_millis()
                        ),
                        None,
                    )
                };
                report_limited(
                    handler,
                    &self.failure_reports,
                    Error::new(ErrorKind::Io, what).with_os_error(e.raw_os_error()),
                );
                match came_free {
                    Some(accepted) => accepted,
                    None => return Accepted::Pause,
                }
            }
        };
        if self.spare_missing.load(Ordering::Relaxed) && self.reopen_spare() == Spare::OutOfFds {
            // The spare's descriptor was taken (by another thread while
            // it was free) and this connection holds the last one: kept,
            // it would leave the next client hanging, with no spare to
            // close it. The spare goes first: this connection is closed
            // (its client sees it closed at once) and its number reused.
            // Should another thread win the freed number again, the next
            // accept tries once more (spare_missing stays set).
            drop(conn);
            self.reopen_spare();
            report_limited(
                handler,
                &self.failure_reports,
                Error::new(
                    ErrorKind::Io,
                    format!(
                        "accept: out of descriptors with the spare descriptor lost; closed the \
                         connection from {} to take the spare back",
                        format_sockaddr(&peer)
                    ),
                )
                .with_os_error(Some(libc::EMFILE)),
            );
            return Accepted::Again;
        }
        let permit = match &self.peer_limit {
            None => None,
            Some(limit) => match limit.acquire(&peer) {
                Ok(permit) => permit,
                Err(ip) => {
                    drop(conn); // closed at once: the client sees EOF
                    let error = Error::new(
                        ErrorKind::WouldBlock,
                        format!(
                            "connection from {ip} closed: {} connections from that address \
                             are open (max_connections_per_ip)",
                            self.max_per_ip
                        ),
                    );
                    report_limited(handler, &self.over_limit_reports, error);
                    return Accepted::Again;
                }
            },
        };
        if config.tcp_nodelay {
            if let Err(e) = conn.set_tcp_nodelay(true) {
                handler.handle_error(None, &Error::io("setsockopt TCP_NODELAY", e));
                return Accepted::Again;
            }
        }
        Accepted::Conn(conn, peer, permit)
    }

    /// Frees the spare descriptor to accept and close a pending connection,
    /// takes the spare again, and goes on while accepting still finds no
    /// descriptor; how many connections were closed, and the connection
    /// accepted once descriptors came free: one that arrives then is
    /// served, not closed with those pending before (the shed had closed
    /// everything until the queue was empty, a client connecting just
    /// after the table was freed too).
    fn shed_pending(&self, listener: &Socket) -> (usize, Option<(Socket, SockAddr)>) {
        let mut shed = 0;
        while shed < SHED_PER_FAILURE {
            let closed_one = {
                let mut spare = crate::sync::write(&self.spare);
                *spare = None;
                // Closed before the spare is reopened: it holds the
                // descriptor the spare freed.
                let closed_one = loop {
                    match accept4(listener, true) {
                        Ok(conn) => {
                            drop(conn);
                            break true;
                        }
                        Err(e) if is_transient_accept_error(&e) => continue,
                        Err(_) => break false,
                    }
                };
                // Another thread (a handler opening a file) may have taken
                // the freed descriptor: then the spare is taken again later.
                *spare = open_spare().ok();
                self.spare_missing.store(spare.is_none(), Ordering::Relaxed);
                closed_one
            };
            if !closed_one {
                break;
            }
            shed += 1;
            let next = {
                let _shared = self.shared.then(|| crate::sync::read(&self.spare));
                accept4(listener, true)
            };
            match next {
                Ok(accepted) => return (shed, Some(accepted)),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {}
                Err(e) if is_transient_accept_error(&e) => {}
                Err(_) => break,
            }
        }
        (shed, None)
    }

    fn reopen_spare(&self) -> Spare {
        let Ok(mut spare) = self.spare.try_write() else {
            return Spare::Unknown;
        };
        let found = match spare.as_ref() {
            Some(_) => Spare::Held,
            None => match open_spare() {
                Ok(fd) => {
                    *spare = Some(fd);
                    Spare::Held
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    Spare::OutOfFds
                }
                Err(_) => Spare::Unknown,
            },
        };
        self.spare_missing.store(spare.is_none(), Ordering::Relaxed);
        found
    }
}

/// Reports `error` to handle_error unless its kind was reported less than
/// a second ago; says how many were left out since.
fn report_limited(handler: &dyn Handler, limit: &RateLimiter, error: Error) {
    if let Some(suppressed) = limit.admit() {
        let error = if suppressed > 0 {
            error.with_message(format!(
                "{} (and {suppressed} more like this since the last report)",
                error.message()
            ))
        } else {
            error
        };
        handler.handle_error(None, &error);
    }
}

/// One datagram read from the server socket: its bytes (at most the buffer's
/// size), its real length and its sender.
pub struct Datagram {
    pub len: usize,
    pub real_len: usize,
    pub sender: SockAddr,
}

impl Datagram {
    /// The error for a datagram that did not fit the maximum size: it is
    /// dropped and reported, never handed on cut short.
    pub fn too_long(&self) -> Option<Error> {
        datagram_too_long(self.len, self.real_len)
    }
}

/// The error for a datagram of `real_len` bytes of which only `len` (the
/// maximum size) were received, if it was cut.
pub fn datagram_too_long(len: usize, real_len: usize) -> Option<Error> {
    (real_len > len).then(|| {
        Error::new(
            ErrorKind::MessageTooLong,
            format!(
                "datagram of {real_len} bytes exceeds the maximum datagram size of {len} bytes; dropped"
            ),
        )
    })
}

/// Receives one datagram into `buf`, or None when nothing is pending.
/// `real_len > buf.len()` means the kernel cut it (MSG_TRUNC reports the
/// real size on UDP and, since Linux 3.4, on Unix datagram sockets).
pub fn recv_datagram(socket: &Socket, buf: &mut [u8]) -> Result<Option<Datagram>> {
    loop {
        match socket.recv_from_with_flags(as_uninit(buf), libc::MSG_TRUNC) {
            Ok((real_len, sender)) => {
                return Ok(Some(Datagram {
                    len: real_len.min(buf.len()),
                    real_len,
                    sender,
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(Error::io("recvfrom", e)),
        }
    }
}

/// Whether a datagram sender can be replied to: an unbound Unix datagram
/// client has no address at all.
pub fn has_reply_address(addr: &SockAddr) -> bool {
    addr.as_socket().is_some()
        || addr.as_pathname().is_some()
        || addr.as_abstract_namespace().is_some()
}

/// A socket of the server's own that can wake its serving thread blocked
/// in recvfrom on `server` (crate::server's blocking datagram receive): it
/// is connected to the server's address, and sends it an empty datagram,
/// which the serving thread recognises by its sender, `address`. None when
/// there is no such socket to be had (an address it cannot reach, or one
/// that SO_REUSEPORT shares with other sockets, which could be sent the
/// wake-up instead).
pub fn receive_waker(server: &Socket) -> Option<(Socket, SockAddr)> {
    if server.reuse_port().unwrap_or(true) {
        return None;
    }
    let local = server.local_addr().ok()?;
    let target = match local.as_socket() {
        // Unspecified: the server gets what is sent to loopback.
        Some(SocketAddr::V4(a)) if a.ip().is_unspecified() => {
            SockAddr::from(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port()))
        }
        Some(SocketAddr::V6(a)) if a.ip().is_unspecified() => {
            SockAddr::from(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port()))
        }
        Some(_) => local.clone(),
        None if local.as_pathname().is_some() || local.as_abstract_namespace().is_some() => {
            local.clone()
        }
        None => return None,
    };
    let waker = Socket::new(target.domain(), Type::DGRAM.nonblocking().cloexec(), None).ok()?;
    if target.domain() == Domain::UNIX {
        // An unbound Unix sender has no address to be told apart by: the
        // kernel gives it an abstract name of its own (autobind).
        waker.bind(&SockAddr::unix("").ok()?).ok()?;
    }
    waker.connect(&target).ok()?;
    let address = waker.local_addr().ok()?;
    Some((waker, address))
}
