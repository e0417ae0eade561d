//! Server addresses as strings: `127.0.0.1:8080`, `[::1]:0`, `localhost:0`,
//! a filesystem path for Unix sockets, `@name` for a Linux abstract name.

use std::ffi::OsStr;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use socket2::{Domain, SockAddr};

use crate::error::{Error, ErrorKind, Result};

/// Longest Unix socket path: `sun_path` holds 108 bytes including the NUL.
const UNIX_PATH_MAX: usize = 107;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddress {
    Inet(SocketAddr),
    UnixPath(PathBuf),
    /// The name without the leading `@` (the kernel's leading NUL).
    UnixAbstract(Vec<u8>),
}

fn address_error(text: &str, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Address, format!("address {text:?}: {why}"))
}

impl ServerAddress {
    /// Parses `text` for an IP transport (`unix == false`) or a Unix one.
    ///
    /// Host names are resolved with the system resolver; when a name has both
    /// IPv4 and IPv6 addresses the IPv4 one wins, as Python's `TCPServer`
    /// (`AF_INET`) would pick. Write `[::1]:port` to get IPv6.
    pub fn parse(text: &str, unix: bool) -> Result<Self> {
        if text.is_empty() {
            return Err(address_error(text, "empty address"));
        }
        if unix {
            return Self::parse_unix(text);
        }
        let (host, port) = split_host_port(text)?;
        let port: u16 = port
            .parse()
            .map_err(|_| address_error(text, "port must be a number from 0 to 65535"))?;
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(ServerAddress::Inet(SocketAddr::new(ip, port)));
        }
        if host.is_empty() {
            return Err(address_error(text, "missing host"));
        }
        let resolved: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| address_error(text, format!("cannot resolve host: {e}")))?
            .collect();
        resolved
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| resolved.first())
            .map(|a| ServerAddress::Inet(*a))
            .ok_or_else(|| address_error(text, "host resolves to no address"))
    }

    fn parse_unix(text: &str) -> Result<Self> {
        if text.as_bytes().contains(&0) {
            return Err(address_error(text, "contains a NUL byte"));
        }
        if let Some(name) = text.strip_prefix('@') {
            if name.is_empty() {
                return Err(address_error(text, "abstract name is empty"));
            }
            if name.len() > UNIX_PATH_MAX {
                return Err(address_error(
                    text,
                    "abstract name is longer than 107 bytes",
                ));
            }
            return Ok(ServerAddress::UnixAbstract(name.as_bytes().to_vec()));
        }
        if text.len() > UNIX_PATH_MAX {
            return Err(address_error(
                text,
                "Unix socket path is longer than 107 bytes",
            ));
        }
        Ok(ServerAddress::UnixPath(PathBuf::from(text)))
    }

    /// The address of a bound socket (getsockname); None for an unnamed
    /// Unix socket or another family.
    pub fn from_sockaddr(addr: &SockAddr) -> Option<Self> {
        if let Some(inet) = addr.as_socket() {
            return Some(ServerAddress::Inet(inet));
        }
        if let Some(path) = addr.as_pathname() {
            return Some(ServerAddress::UnixPath(path.to_owned()));
        }
        addr.as_abstract_namespace()
            .map(|name| ServerAddress::UnixAbstract(name.to_vec()))
    }

    pub fn domain(&self) -> Domain {
        match self {
            ServerAddress::Inet(SocketAddr::V4(_)) => Domain::IPV4,
            ServerAddress::Inet(SocketAddr::V6(_)) => Domain::IPV6,
            _ => Domain::UNIX,
        }
    }

    pub fn to_sockaddr(&self) -> Result<SockAddr> {
        match self {
            ServerAddress::Inet(a) => Ok(SockAddr::from(*a)),
            ServerAddress::UnixPath(p) => {
                SockAddr::unix(p).map_err(|e| Error::io(format!("address {}", p.display()), e))
            }
            ServerAddress::UnixAbstract(name) => {
                let mut raw = Vec::with_capacity(name.len() + 1);
                raw.push(0);
                raw.extend_from_slice(name);
                SockAddr::unix(OsStr::from_bytes(&raw))
                    .map_err(|e| Error::io(format!("address {}", format_abstract(name)), e))
            }
        }
    }
}

fn split_host_port(text: &str) -> Result<(&str, &str)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| address_error(text, "missing ']' after IPv6 address"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| address_error(text, "missing ':port' after ']'"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(address_error(text, "not an IPv6 address inside [ ]"));
        }
        return Ok((host, port));
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| address_error(text, "expected HOST:PORT (IPv6 as [ADDR]:PORT)"))?;
    if host.contains(':') {
        return Err(address_error(
            text,
            "IPv6 addresses must be written as [ADDR]:PORT",
        ));
    }
    Ok((host, port))
}

/// A peer's address for messages: unnamed Unix clients have none.
pub fn describe_peer(address: &str) -> &str {
    if address.is_empty() {
        "an unnamed Unix socket"
    } else {
        address
    }
}

fn format_abstract(name: &[u8]) -> String {
    format!("@{}", String::from_utf8_lossy(name))
}

/// The string form of a socket address, the inverse of [`ServerAddress::parse`]:
/// `127.0.0.1:80`, `[::1]:80`, a path, `@name`, or `""` for an unnamed Unix peer.
pub fn format_sockaddr(addr: &SockAddr) -> String {
    if let Some(inet) = addr.as_socket() {
        return inet.to_string();
    }
    if let Some(path) = addr.as_pathname() {
        return path.display().to_string();
    }
    if let Some(name) = addr.as_abstract_namespace() {
        return format_abstract(name);
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_forms() {
        assert_eq!(
            ServerAddress::parse("127.0.0.1:8080", false).unwrap(),
            ServerAddress::Inet("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            ServerAddress::parse("[::1]:0", false).unwrap(),
            ServerAddress::Inet("[::1]:0".parse().unwrap())
        );
        match ServerAddress::parse("localhost:0", false).unwrap() {
            ServerAddress::Inet(a) => assert!(a.ip().is_loopback()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_ip_forms() {
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:70000",
            "127.0.0.1:-1",
            "::1:80",
            "[::1]80",
            "[127.0.0.1]:80",
            ":80",
        ] {
            let err = ServerAddress::parse(bad, false).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Address, "{bad:?}");
        }
    }

    #[test]
    fn parses_unix_forms() {
        assert_eq!(
            ServerAddress::parse("/tmp/x.sock", true).unwrap(),
            ServerAddress::UnixPath("/tmp/x.sock".into())
        );
        assert_eq!(
            ServerAddress::parse("@svc", true).unwrap(),
            ServerAddress::UnixAbstract(b"svc".to_vec())
        );
        assert!(ServerAddress::parse("@", true).is_err());
        assert!(ServerAddress::parse(&"a".repeat(108), true).is_err());
        assert!(ServerAddress::parse(&"a".repeat(107), true).is_ok());
    }

    #[test]
    fn formats_round_trip() {
        for text in ["127.0.0.1:80", "[::1]:443", "/tmp/a.sock", "@abstract"] {
            let unix = !text.contains(':');
            let addr = ServerAddress::parse(text, unix)
                .unwrap()
                .to_sockaddr()
                .unwrap();
            assert_eq!(format_sockaddr(&addr), text);
        }
    }
}
