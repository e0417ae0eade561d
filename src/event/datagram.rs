//! Event mode's datagrams, in batches: one recvmmsg takes up to
//! `slots` datagrams (each into a receive buffer of max_datagram_size, lent
//! to its request: no copy), on_datagram runs on each, and the replies of
//! the whole batch, queued in an outbox lent to each request in turn
//! (crate::request::Outbox), leave with one sendmmsg after it. Syscalls
//! per datagram fall from two (recvfrom, sendto) to two per batch.
//!
//! A reply that fails (the client's queue or the send buffer full, any
//! other send error) is dropped and reported to handle_error with its
//! request, which is kept until the batch's replies have gone; sendmmsg
//! stops at the first failing message, so the rest are sent by the next
//! call. libc rather than nix's recvmmsg/sendmmsg: nix's reusable headers
//! hold raw pointers (not Send, so a loop could not keep them: an
//! allocation per batch), and its addresses would still need converting
//! to socket2's SockAddr with unsafe code.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use socket2::{SockAddr, SockAddrStorage, Socket};

use crate::error::Error;
use crate::request::{reply_failed, reply_sent, Outbox, Request, SpareState};
use crate::server::Server;
use crate::transport::datagram_too_long;

/// Most datagrams one recvmmsg takes.
const MAX_SLOTS: usize = 32;
/// Receive buffers of a batch, in all: fewer slots for larger datagrams
/// (max_datagram_size goes up to 16 MiB), never fewer than one.
const SLOTS_BUDGET: usize = 256 * 1024;
/// Fewest datagrams a recvmmsg asks for.
const MIN_ASK: usize = 8;
/// Most replies one sendmmsg sends.
const MAX_SEND: usize = 64;

/// How many datagrams one batch takes for this maximum size.
fn slots_for(max_datagram_size: usize) -> usize {
    (SLOTS_BUDGET / max_datagram_size.max(1)).clamp(1, MAX_SLOTS)
}

/// One datagram of a batch.
struct Batched {
    request: Request,
    /// Its length before the cut to max_datagram_size (MSG_TRUNC).
    real_len: usize,
}

/// One loop's batch state, reused from batch to batch.
#[derive(Default)]
pub(super) struct DatagramBatch {
    /// Receive buffers, max_datagram_size long each; `bufs[i]` is lent to
    /// the request of the batch's i-th datagram until the batch ends.
    bufs: Vec<Vec<u8>>,
    /// Where recvmmsg writes each sender's address (MAX_SLOTS of them,
    /// made once).
    names: Vec<SockAddrStorage>,
    /// The batch's datagrams as requests, in order, kept until their
    /// replies have gone (a failed reply is reported with its request).
    requests: Vec<Batched>,
    /// The batch's replies, and for each, the index in `requests` of the
    /// request that sent it.
    outbox: Outbox,
    owners: Vec<usize>,
    /// How many datagrams the next recvmmsg asks for.
    want: usize,
    /// The last batch's request states, reset, for the next batch's
    /// requests: no allocation per datagram (their reply buffers too).
    spares: Vec<SpareState>,
}

impl DatagramBatch {
    /// Takes what is pending on `socket`, up to `limit` datagrams (in
    /// batches), handling each and sending the replies after each batch.
    /// Returns once the socket has nothing more, or after `limit`.
    pub(super) fn serve(&mut self, server: &Arc<Server>, socket: &Arc<Socket>, limit: usize) {
        let slots = slots_for(server.config().max_datagram_size);
        let mut taken = 0;
        while taken < limit {
            // As many as last time, twice that if it filled all it asked
            // for, at least MIN_ASK: setting up slots that stay empty is
            // what a batch costs at a single client.
            let count = self.want.max(MIN_ASK).min(slots).min(limit - taken);
            let got = match self.receive(server, socket, count) {
                Ok(got) => got,
                Err(e) => {
                    server
                        .handler()
                        .handle_error(None, &Error::io("recvmmsg", e));
                    return;
                }
            };
            if got == 0 {
                return;
            }
            taken += got;
            self.want = if got == count { got * 2 } else { got };
            self.handle(server);
            self.send_replies(server, socket);
            self.finish();
            // Fewer than asked for: the queue was empty (level-triggered
            // epoll reports anything that came since).
            if got < count {
                return;
            }
        }
    }

    /// One recvmmsg of up to `count` datagrams into the receive buffers,
    /// each made a request (lent its buffer) in `requests`, in order; how
    /// many.
    fn receive(
        &mut self,
        server: &Arc<Server>,
        socket: &Arc<Socket>,
        count: usize,
    ) -> io::Result<usize> {
        let size = server.config().max_datagram_size;
        if self.bufs.len() < count {
            self.bufs.resize_with(count, Vec::new);
        }
        for buf in &mut self.bufs[..count] {
            // Allocates once; afterwards the length is already right.
            if buf.len() != size {
                buf.resize(size, 0);
            }
        }
        if self.names.is_empty() {
            self.names.resize_with(MAX_SLOTS, SockAddrStorage::zeroed);
        }
        // Only the first `count` entries are set and used: no zeroing of
        // the whole arrays per batch.
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_SLOTS];
        let mut headers = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_SLOTS];
        let slots = self.bufs.iter_mut().zip(self.names.iter_mut());
        for ((iov, header), (buf, name)) in iovs.iter_mut().zip(&mut headers).zip(slots).take(count)
        {
            let iov = iov.write(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            });
            // SAFETY: an all-zero mmsghdr is valid (null pointers, zero
            // lengths); the fields used are set below.
            let header = header.write(unsafe { std::mem::zeroed() });
            let hdr = &mut header.msg_hdr;
            hdr.msg_namelen = name.size_of();
            hdr.msg_name = (name as *mut SockAddrStorage).cast();
            hdr.msg_iov = iov;
            hdr.msg_iovlen = 1;
        }
        let got = loop {
            // SAFETY: headers[..count] are initialised, each pointing at
            // one iovec (of a live buffer of iov_len bytes) and at a
            // SockAddrStorage of msg_namelen bytes, all alive and not
            // otherwise used until the call returns; the kernel writes only
            // within them, and count <= MAX_SLOTS, the array's length.
            let rc = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    headers.as_mut_ptr().cast(),
                    count as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        };
        for (slot, header) in headers.iter().take(got).enumerate() {
            // SAFETY: the first `count` (>= got) headers were initialised
            // above.
            let header = unsafe { header.assume_init_ref() };
            // With MSG_TRUNC, msg_len is the datagram's real length.
            let real_len = header.msg_len as usize;
            // SAFETY: the kernel wrote the sender's address into this
            // storage and its length into msg_namelen (as recvfrom does
            // for socket2's own recv_from); the storage is plain bytes, so
            // the copy read leaves it as it was, for the next batch.
            let sender = unsafe {
                SockAddr::new(
                    std::ptr::read(&self.names[slot]),
                    header.msg_hdr.msg_namelen,
                )
            };
            let data = std::mem::take(&mut self.bufs[slot]);
            let spare = self.spares.pop();
            let request =
                Request::datagram(server, socket, data, real_len.min(size), sender, spare);
            self.requests.push(Batched { request, real_len });
        }
        Ok(got)
    }

    /// Runs on_datagram on each datagram of the batch, in order, its
    /// replies queued in the outbox; over-long ones are reported and
    /// dropped.
    fn handle(&mut self, server: &Arc<Server>) {
        for owner in 0..self.requests.len() {
            let Batched { request, real_len } = &mut self.requests[owner];
            let len = request.datagram_data().map_or(0, <[u8]>::len);
            if let Some(error) = datagram_too_long(len, *real_len) {
                server.handler().handle_error(Some(request), &error);
                continue;
            }
            request.lend_outbox(std::mem::take(&mut self.outbox));
            let result = server
                .event_handler()
                .on_datagram(request)
                .and_then(|()| request.complete());
            if let Err(e) = result {
                server.handler().handle_error(Some(request), &e);
            }
            // After handle_error, which may reply too.
            self.outbox = request.take_outbox();
            let queued = self.outbox.ends.len() - self.owners.len();
            self.owners.extend(std::iter::repeat_n(owner, queued));
        }
    }

    /// Sends the outbox's replies, MAX_SEND per sendmmsg; a reply that
    /// fails is dropped and reported with its request.
    fn send_replies(&mut self, server: &Arc<Server>, socket: &Socket) {
        let total = self.owners.len();
        let mut next = 0;
        while next < total {
            let count = (total - next).min(MAX_SEND);
            let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_SEND];
            let mut headers = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_SEND];
            for i in 0..count {
                let reply = self.outbox.reply(next + i);
                // The kernel only reads through these pointers (sendmsg).
                let iov = iovs[i].write(libc::iovec {
                    iov_base: reply.as_ptr().cast_mut().cast(),
                    iov_len: reply.len(),
                });
                let to = self.requests[self.owners[next + i]]
                    .request
                    .client_sockaddr();
                // SAFETY: an all-zero mmsghdr is valid (null pointers, zero
                // lengths); the fields used are set below.
                let header = headers[i].write(unsafe { std::mem::zeroed() });
                let hdr = &mut header.msg_hdr;
                hdr.msg_name = to.as_ptr().cast_mut().cast();
                hdr.msg_namelen = to.len();
                hdr.msg_iov = iov;
                hdr.msg_iovlen = 1;
            }
            // SAFETY: headers[..count] are initialised, each pointing at
            // one iovec (over a reply in the outbox) and at a request's
            // address of msg_namelen bytes, all alive and unchanged until the call
            // returns; sendmmsg only reads them (and writes msg_len), and
            // count <= MAX_SEND, the array's length.
            let rc = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    headers.as_mut_ptr().cast(),
                    count as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if rc > 0 {
                let sent = rc as usize;
                for i in next..next + sent {
                    reply_sent(self.requests[self.owners[i]].request.client_sockaddr());
                }
                next += sent;
                continue;
            }
            let e = io::Error::last_os_error();
            if rc < 0 && e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // sendmmsg fails on the first message it could not send (0
            // sent is not expected for count > 0: treated alike).
            let request = &mut self.requests[self.owners[next]].request;
            let error = reply_failed(request.client_sockaddr(), e);
            server.handler().handle_error(Some(request), &error);
            next += 1;
        }
    }

    /// Takes the receive buffers back from the batch's requests and
    /// empties the outbox for the next batch.
    fn finish(&mut self) {
        for (slot, mut batched) in self.requests.drain(..).enumerate() {
            self.bufs[slot] = batched.request.take_datagram_buffer();
            self.spares.extend(batched.request.into_spare());
        }
        self.outbox.clear();
        self.owners.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_shrink_with_the_datagram_size() {
        assert_eq!(slots_for(8192), 32);
        assert_eq!(slots_for(65536), 4);
        assert_eq!(slots_for(16 * 1024 * 1024), 1);
        assert_eq!(slots_for(1), MAX_SLOTS);
    }
}
