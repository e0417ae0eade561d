//! The per-client-IP connection limit (libmicrohttpd's
//! PER_IP_CONNECTION_LIMIT), shared by every stream mode: a connection
//! takes a permit when it is accepted and gives it back when the permit is
//! dropped, wherever the connection ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use socket2::SockAddr;

/// Open connections per client address, at most `max` each.
#[derive(Debug)]
pub(crate) struct PeerLimit {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its address' count; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct PeerPermit {
    limit: Arc<PeerLimit>,
    ip: IpAddr,
}

impl PeerLimit {
    /// None when there is no limit (`max` 0), so that unlimited servers
    /// pay nothing per connection.
    pub(crate) fn new(max: usize) -> Option<Arc<PeerLimit>> {
        (max > 0).then(|| {
            Arc::new(PeerLimit {
                max,
                open: Mutex::new(HashMap::new()),
            })
        })
    }

    fn open(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        crate::sync::lock(&self.open)
    }

    /// A permit for a connection from `peer`: Ok(None) for a peer without an
    /// IP address (nothing to count), Err(ip) when that address is at the
    /// limit. An IPv4-mapped IPv6 address counts as its IPv4 address.
    pub(crate) fn acquire(self: &Arc<Self>, peer: &SockAddr) -> Result<Option<PeerPermit>, IpAddr> {
        let Some(ip) = peer.as_socket().map(|a| a.ip().to_canonical()) else {
            return Ok(None);
        };
        let mut open = self.open();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return Err(ip);
        }
        *count += 1;
        Ok(Some(PeerPermit {
            limit: self.clone(),
            ip,
        }))
    }

    /// Open connections counted for `ip` (for tests and statistics).
    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        self.open().get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for PeerPermit {
    fn drop(&mut self) {
        let mut open = self.limit.open();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                // Keeps the map as small as the set of connected clients.
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn addr(s: &str) -> SockAddr {
        SockAddr::from(s.parse::<SocketAddr>().unwrap())
    }

    #[test]
    fn counts_per_address_and_frees_on_drop() {
        let limit = PeerLimit::new(2).unwrap();
        let a = limit.acquire(&addr("127.0.0.1:1000")).unwrap().unwrap();
        let b = limit.acquire(&addr("127.0.0.1:1001")).unwrap().unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(limit.acquire(&addr("127.0.0.1:1002")).unwrap_err(), ip);
        // Another address has its own count; a mapped address is the same IP.
        assert!(limit.acquire(&addr("127.0.0.2:1000")).unwrap().is_some());
        assert!(limit.acquire(&addr("[::ffff:127.0.0.1]:1003")).is_err());
        drop(a);
        assert_eq!(limit.count(ip), 1);
        let c = limit.acquire(&addr("127.0.0.1:1004")).unwrap().unwrap();
        drop((b, c));
        assert_eq!(limit.count(ip), 0);
        assert!(limit.open().is_empty());
    }

    #[test]
    fn no_limit_and_no_address() {
        assert!(PeerLimit::new(0).is_none());
        let limit = PeerLimit::new(1).unwrap();
        let unix = SockAddr::unix("/tmp/x").unwrap();
        assert!(limit.acquire(&unix).unwrap().is_none());
    }
}
