//! Graceful drain (ss_server_drain): stop accepting at once, let what is in
//! flight finish, cut what is left at a deadline, then serve_forever
//! returns. This module holds what every mode shares: the request, kept in
//! atomics so that it can come from a signal handler (as shutdown), and
//! the table of blocking-mode stream requests in flight, which the deadline
//! cuts with shutdown(2). The modes' own parts live with them: the
//! blocking accept loop's in `Server::drain_blocking`, the event loops' in
//! `crate::event::graceful`.
//!
//! As nginx (SIGQUIT) and Go's http.Server.Shutdown do, the listener stops
//! at once: a stream listener is shut down (connections still in the
//! kernel's backlog are reset, new ones are refused) so that a successor
//! process may bind the port (with SO_REUSEADDR, as the listener's state is
//! no longer LISTEN); its descriptor stays open until close.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sync::lock;

/// No drain asked for (or no deadline).
const NONE: u64 = u64::MAX;

/// CLOCK_MONOTONIC in milliseconds. Async-signal-safe (clock_gettime).
pub(crate) fn monotonic_ms() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64)
            .saturating_mul(1000)
            .saturating_add(ts.tv_nsec() as u64 / 1_000_000),
        // CLOCK_MONOTONIC cannot fail on Linux; "now" as 0 only delays.
        Err(_) => 0,
    }
}

/// A server's drain: asked for (and when it must end), under way, done.
#[derive(Default)]
pub(crate) struct DrainState {
    requested: AtomicBool,
    /// Absolute CLOCK_MONOTONIC milliseconds; NONE until asked for. A
    /// second call can bring it forward, never push it back.
    deadline: DeadlineMs,
    /// The drain has begun (the listener is no longer served).
    active: AtomicBool,
    /// A drain has finished: the listener is shut down, nothing serves
    /// again.
    finished: AtomicBool,
    /// Requests and connections the last drain cut at its deadline.
    cut: AtomicUsize,
}

struct DeadlineMs(AtomicU64);

impl Default for DeadlineMs {
    fn default() -> Self {
        DeadlineMs(AtomicU64::new(NONE))
    }
}

impl DrainState {
    /// Asks for a drain ending at most `within` from now. Async-signal-safe:
    /// clock_gettime and atomics.
    pub(crate) fn request(&self, within: Duration) {
        let within = within.as_millis().min(u128::from(NONE - 1)) as u64;
        let at = monotonic_ms().saturating_add(within).min(NONE - 1);
        self.deadline.0.fetch_min(at, Ordering::SeqCst);
        self.requested.store(true, Ordering::SeqCst);
    }

    pub(crate) fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// The deadline in CLOCK_MONOTONIC milliseconds (u64::MAX: none).
    pub(crate) fn deadline_ms(&self) -> u64 {
        self.deadline.0.load(Ordering::SeqCst)
    }

    /// Whether the deadline has passed.
    pub(crate) fn overdue(&self) -> bool {
        monotonic_ms() >= self.deadline_ms()
    }

    /// Milliseconds left until the deadline (0 once passed).
    pub(crate) fn remaining_ms(&self) -> u64 {
        self.deadline_ms().saturating_sub(monotonic_ms())
    }

    /// Ends the drain now, as if its deadline had passed (shutdown during
    /// a drain).
    pub(crate) fn expire_now(&self) {
        self.deadline.0.fetch_min(monotonic_ms(), Ordering::SeqCst);
    }

    /// Marks the drain under way; true for the first caller. (The cut
    /// count is not reset: a server drains once, and event loops may count
    /// cuts before the serving thread gets here.)
    pub(crate) fn begin(&self) -> bool {
        !self.active.swap(true, Ordering::SeqCst)
    }

    pub(crate) fn add_cut(&self, n: usize) {
        self.cut.fetch_add(n, Ordering::SeqCst);
    }

    pub(crate) fn cut(&self) -> usize {
        self.cut.load(Ordering::SeqCst)
    }

    /// The drain is over: the serving loop returns.
    pub(crate) fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
        self.active.store(false, Ordering::SeqCst);
    }

    pub(crate) fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }
}

/// The stream requests of a blocking mode that are open in this process
/// (queued in the pool, running on a thread, handed off to a thread), by
/// descriptor, so that the drain deadline can cut them: shutdown(2) makes
/// the handler's blocked read see the end and its writes fail, so it
/// returns. An entry leaves the table before its descriptor is closed, and
/// the cut holds the table's lock while it shuts descriptors down, so it
/// never touches a closed (or reused) number.
#[derive(Default)]
pub(crate) struct ActiveRequests {
    table: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    /// Descriptor (-1: free slot) and whether its handler waits for the
    /// client's next request (see `Request::set_active`).
    fds: Vec<(RawFd, Arc<AtomicBool>)>,
    free: Vec<usize>,
}

/// A request's place in the table; dropped (before the request's socket
/// is closed) it leaves.
pub(crate) struct ActiveEntry {
    /// None: in no table (see `detached`).
    table: Option<Arc<ActiveRequests>>,
    slot: usize,
    between: Arc<AtomicBool>,
}

impl ActiveEntry {
    /// An entry in no table, for a request made in a forked child
    /// (SS_FORKING): the child's copy of the parent's table is never cut
    /// (the child learns of a drain through the drain pipe), and its lock
    /// may have been held at fork time. The request's reads still mark
    /// the flag between requests.
    pub(crate) fn detached() -> ActiveEntry {
        ActiveEntry {
            table: None,
            slot: 0,
            between: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The flag the request's reads set while they wait for the client's
    /// next request.
    pub(crate) fn waiting_flag(&self) -> Arc<AtomicBool> {
        self.between.clone()
    }
}

impl ActiveRequests {
    pub(crate) fn register(self: &Arc<Self>, fd: RawFd) -> ActiveEntry {
        let mut t = lock(&self.table);
        let (slot, between) = match t.free.pop() {
            // A free slot's flag is reused (no allocation per request): the
            // request that had it left the table, after which it reads no
            // more, so nothing else sets it now.
            Some(slot) => {
                let entry = &mut t.fds[slot];
                entry.0 = fd;
                entry.1.store(false, Ordering::SeqCst);
                (slot, entry.1.clone())
            }
            None => {
                let between = Arc::new(AtomicBool::new(false));
                t.fds.push((fd, between.clone()));
                (t.fds.len() - 1, between)
            }
        };
        drop(t);
        ActiveEntry {
            table: Some(self.clone()),
            slot,
            between,
        }
    }

    /// Ends the reading side of every request whose handler waits for its
    /// client's next request, nothing of which has arrived (peeked): its
    /// read returns end-of-file, so the handler returns, as an idle
    /// keep-alive connection closes in event mode. Only the reading side:
    /// a request that raced in is still answered. How many.
    pub(crate) fn close_idle(&self) -> usize {
        let t = lock(&self.table);
        let mut n = 0;
        for (fd, between) in t.fds.iter().filter(|(fd, _)| *fd >= 0) {
            if !between.load(Ordering::SeqCst) || unread_input(*fd) {
                continue;
            }
            // SAFETY: as in cut_all.
            unsafe { libc::shutdown(*fd, libc::SHUT_RD) };
            n += 1;
        }
        n
    }

    /// Shuts every open request down (both directions); how many.
    pub(crate) fn cut_all(&self) -> usize {
        let t = lock(&self.table);
        let mut n = 0;
        for &(fd, _) in t.fds.iter().filter(|(fd, _)| *fd >= 0) {
            // SAFETY: shutdown(2) on a descriptor the table names, which
            // stays open while the lock is held (see the type's doc); no
            // memory is passed.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            n += 1;
        }
        n
    }
}

impl Drop for ActiveEntry {
    fn drop(&mut self) {
        // In a forked child the lock may have been held at fork time; the
        // child's copy of the table is never used there anyway.
        let Some(table) = &self.table else {
            return;
        };
        if crate::sys::in_forked_child() {
            return;
        }
        let mut t = lock(&table.table);
        t.fds[self.slot].0 = -1;
        t.free.push(self.slot);
    }
}

/// Whether bytes wait to be read on `fd` (peeked, without blocking).
fn unread_input(fd: RawFd) -> bool {
    let mut byte = 0u8;
    loop {
        // SAFETY: a one-byte buffer we own; the descriptor is open (see
        // ActiveRequests).
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        }
        return n > 0;
    }
}

/// How forked request children (SS_FORKING, fork hand-offs) learn that the
/// parent drains: they run on a copy of the server, whose drain state
/// stays as it was at fork time. Each child keeps the read end of this
/// pipe; the write end is the parent's alone (registered among the
/// descriptors a child closes right after fork), and the parent closes it
/// when a drain begins, so that the read end reports end-of-file in every
/// child at once. A child's read between requests watches it (see
/// crate::request), as an SS_SYNC read watches the server's waker.
pub(crate) struct DrainPipe {
    read: std::os::fd::OwnedFd,
    /// The registration first, so that it is dropped before the
    /// descriptor closes (the children's table never names a closed
    /// number).
    write: Mutex<Option<(crate::concurrency::ChildCloses, std::os::fd::OwnedFd)>>,
}

impl DrainPipe {
    /// A new pipe (close-on-exec both ends), or None when none can be made
    /// (out of descriptors: children then learn of a drain only at its
    /// deadline).
    pub(crate) fn new() -> Option<DrainPipe> {
        use std::os::fd::AsRawFd;
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        let registered = crate::concurrency::ChildCloses::register(write.as_raw_fd());
        if !registered.is_registered() {
            // A child would keep the write end open: no end-of-file.
            return None;
        }
        Some(DrainPipe {
            read,
            write: Mutex::new(Some((registered, write))),
        })
    }

    /// The parent begins a drain: every child's read end sees end-of-file.
    pub(crate) fn signal_children(&self) {
        drop(lock(&self.write).take());
    }

    /// The read end, for a child to watch. Lock-free.
    pub(crate) fn read_end(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.read.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_slot_keeps_its_flag_for_the_next_request() {
        let table = Arc::new(ActiveRequests::default());
        let first = table.register(10);
        let flag = first.waiting_flag();
        flag.store(true, Ordering::SeqCst);
        drop(first);
        let second = table.register(11);
        // The same flag, no new allocation, cleared for the new request.
        assert!(Arc::ptr_eq(&flag, &second.waiting_flag()));
        assert!(!second.waiting_flag().load(Ordering::SeqCst));
        // A slot in use is not shared.
        let third = table.register(12);
        assert!(!Arc::ptr_eq(&flag, &third.waiting_flag()));
    }
}
