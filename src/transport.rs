//! Socket setup for the four transports (Python's TCPServer, UDPServer,
//! UnixStreamServer, UnixDatagramServer): create, bind, activate, and the
//! calls that take the next request off the socket.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use socket2::{SockAddr, Socket, Type};

use crate::address::{format_sockaddr, ServerAddress};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::sys::as_uninit;

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

/// Errors after which the loop simply waits for the next connection:
/// nothing was pending any more, or the peer gave up before accept.
fn is_transient_accept_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EAGAIN | libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM)
    )
}

/// Accepts one connection (blocking mode, close-on-exec), or None when
/// nothing is pending.
pub fn accept(listener: &Socket, config: &Config) -> Result<Option<(Socket, SockAddr)>> {
    match listener.accept() {
        Ok((conn, peer)) => {
            // Linux does not pass O_NONBLOCK on to accepted sockets, but say
            // so explicitly: handlers expect blocking reads.
            conn.set_nonblocking(false)
                .map_err(|e| Error::io("fcntl O_NONBLOCK", e))?;
            if config.tcp_nodelay {
                conn.set_tcp_nodelay(true)
                    .map_err(|e| Error::io("setsockopt TCP_NODELAY", e))?;
            }
            Ok(Some((conn, peer)))
        }
        Err(e) if is_transient_accept_error(&e) => Ok(None),
        Err(e) => Err(Error::io("accept", e)),
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
        (self.real_len > self.len).then(|| {
            Error::new(
                ErrorKind::MessageTooLong,
                format!(
                    "datagram of {} bytes exceeds the maximum datagram size of {} bytes; dropped",
                    self.real_len, self.len
                ),
            )
        })
    }
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
