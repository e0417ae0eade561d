//! Forking mode (Python's ForkingMixIn): a child process per request. The
//! child runs the request and leaves with `_exit` (0 on success, 1 after a
//! handler error, 2 after a caught panic); the parent closes its copy of the
//! connection at once and reaps its own children, never with waitpid(-1),
//! so children the host program forked itself are left alone.
//!
//! Each child is reaped through a pidfd opened right after fork, not by
//! pid: if the host reaps our child itself (a SIGCHLD handler calling
//! waitpid(-1)) and the kernel gives the pid to a new child of the host,
//! waiting by pid would wait for, and reap, the host's child. A pidfd keeps
//! naming our (gone) child, and waitid on it reports ECHILD. What remains:
//! the pidfd is opened just after fork, so a child reaped by the host and
//! its pid reused within those few microseconds (the whole pid space would
//! have to wrap meanwhile) is still mistaken; and on a kernel without
//! pidfd_open or waitid(P_PIDFD) (before Linux 5.4) reaping falls back to
//! the pid.
//!
//! max_children bounds these children and fork hand-offs together, in every
//! mode: a slot is reserved before fork, so racing handler threads cannot
//! overshoot it.
//!
//! The parent's writes are kept few: after every fork, each page the parent
//! writes before the next fork is a copy-on-write fault (a page copied)
//! while a child still shares it. An SS_FORKING connection is forked before
//! its request is made (fork_connection: the child makes it, unless
//! verify_request must run on it in the parent first), and what the parent
//! writes per child (the count, the record, the lock) lives on one page
//! (`Hot`).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use socket2::{SockAddr, Socket};

use crate::config::Config;
use crate::drain::ActiveEntry;
use crate::error::{Error, ErrorKind};
use crate::peer_limit::PeerPermit;
use crate::request::Request;
use crate::server::Server;

use crate::handler::{catch_reported, run_request};

/// How many descriptors of live servers (listening sockets, loop eventfds)
/// a request child can close for the whole process; more are left open in
/// children (the child's own server's are closed anyway).
const INHERITED_SLOTS: usize = 64;

/// Descriptors that belong to the parent's servers, which a request child
/// closes right after fork: a lock-free table, since a child may not take
/// locks. A slot is cleared before its descriptor is closed, so the table
/// never names a closed (or reused) number at fork time.
static INHERITED: [AtomicI32; INHERITED_SLOTS] = [const { AtomicI32::new(-1) }; INHERITED_SLOTS];

/// Set in a forked child once the parent's entries are cleared from the
/// table (ChildCloses::register).
static STALE_FORGOTTEN: AtomicBool = AtomicBool::new(false);

/// A descriptor's place in the table; dropping it (before the descriptor
/// is closed) takes it out.
#[derive(Debug)]
pub(crate) struct ChildCloses {
    slot: Option<usize>,
}

impl ChildCloses {
    /// Registers `fd` to be closed in every request child (if a slot is
    /// free).
    pub(crate) fn register(fd: RawFd) -> Self {
        // A forked child's table still names the parent's descriptors
        // (close_inherited only reads it), which the child has closed and
        // may reuse: before the child's own first entry (a server it makes
        // and forks from), they are forgotten.
        if crate::sys::in_forked_child() && !STALE_FORGOTTEN.swap(true, Ordering::SeqCst) {
            for slot in &INHERITED {
                slot.store(-1, Ordering::SeqCst);
            }
        }
        let slot = INHERITED.iter().position(|s| {
            s.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        ChildCloses { slot }
    }

    pub(crate) fn is_registered(&self) -> bool {
        self.slot.is_some()
    }
}

impl Drop for ChildCloses {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            INHERITED[slot].store(-1, Ordering::SeqCst);
        }
    }
}

/// In a request child: closes every registered descriptor but `keep` (a
/// datagram server's socket, which its request replies through). Once per
/// child, right after fork. The table is only read: a write would copy its
/// page (copy-on-write) in every child.
fn close_inherited(keep: RawFd) {
    for slot in &INHERITED {
        let fd = slot.load(Ordering::SeqCst);
        if fd >= 0 && fd != keep {
            crate::sys::close_raw(fd);
        }
    }
}

/// One child of ours, until reaped.
struct Child {
    pid: Pid,
    /// None when pidfd_open is not available: reaped by pid then.
    pidfd: Option<OwnedFd>,
    /// The connection's place in the per-IP limit: the parent keeps it
    /// until the child is reaped, since the child serves the connection.
    _peer_permit: Option<PeerPermit>,
    /// Killed by a drain deadline: its death by SIGKILL is no crash to
    /// report.
    killed: bool,
    /// Set by a non-blocking reap's poll: it may have exited.
    exited: bool,
}

impl Child {
    /// A free place in ChildTable's array (no process, no descriptor).
    const VACANT: Child = Child {
        pid: Pid::from_raw(0),
        pidfd: None,
        _peer_permit: None,
        killed: false,
        exited: false,
    };
}

pub(crate) struct ChildTracker {
    /// What the parent writes per child, on a page of its own.
    hot: Box<Hot>,
    /// Whether reap_turn may skip busy turns: only in SS_FORKING over a
    /// stream, where the serving thread alone forks (reaping at the cap
    /// first), and not with a per-IP limit, whose places children hold
    /// until reaped (a client at its limit would be refused for a child
    /// already gone).
    batch_reaps: bool,
    max_children: usize,
}

/// Everything the parent writes per child (the place, the record, the
/// lock, the reaping), on one page: after each fork every page the parent
/// writes before the next is a copy-on-write fault (a page copied) while
/// a child still shares it, so the per-connection writes are kept to this
/// page (and the stack).
#[repr(C, align(4096))]
struct Hot {
    /// Children not yet reaped plus forks under way: what max_children
    /// bounds.
    slots: AtomicUsize,
    /// Busy turns (see reap_turn) since the last reap.
    unreaped_turns: AtomicUsize,
    children: Mutex<ChildTable>,
    /// fork_connection has primed the malloc cache (prime_malloc_cache).
    primed: AtomicBool,
}

// The page holds it all (size_of rounds up to the 4096 alignment).
const _: () = assert!(std::mem::size_of::<Hot>() == 4096);

/// Children recorded on Hot's page itself: as many as fit beside the rest.
const INLINE: usize = (4096 - 128) / std::mem::size_of::<Child>();

/// The children not yet reaped: the first INLINE in place (`inline[..len]`,
/// the rest vacant), more (a max_children above INLINE) in `spill`.
struct ChildTable {
    inline: [Child; INLINE],
    len: usize,
    spill: Vec<Child>,
}

impl ChildTable {
    fn new() -> Self {
        ChildTable {
            inline: [const { Child::VACANT }; INLINE],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.len + self.spill.len()
    }

    fn push(&mut self, child: Child) {
        if self.len < INLINE {
            self.inline[self.len] = child;
            self.len += 1;
        } else {
            self.spill.push(child);
        }
    }

    /// The records, as (at most) two slices.
    fn parts(&mut self) -> [&mut [Child]; 2] {
        [&mut self.inline[..self.len], &mut self.spill[..]]
    }

    /// Drops the records `keep` says no to (in any order; the rest may
    /// move).
    fn retain(&mut self, mut keep: impl FnMut(&mut Child) -> bool) {
        let mut i = 0;
        while i < self.len {
            if keep(&mut self.inline[i]) {
                i += 1;
            } else {
                // The last record takes its place, looked at next.
                self.len -= 1;
                self.inline.swap(i, self.len);
                self.inline[self.len] = Child::VACANT;
            }
        }
        self.spill.retain_mut(&mut keep);
        while self.len < INLINE {
            let Some(child) = self.spill.pop() else {
                break;
            };
            self.inline[self.len] = child;
            self.len += 1;
        }
    }
}

/// How many serve loop turns that found their request queued pass
/// between two reaps (ChildTracker::reap_turn).
pub(crate) const REAP_EVERY: usize = 8;

/// Children whose pidfds one poll(2) looks at: a bit mask each, and an
/// array on the stack, so that a loop turn allocates nothing (in SS_FORKING
/// every heap write the parent makes is a copy-on-write fault while a
/// child shares the page).
const POLL_CHUNK: usize = 64;

/// Sets `exited` on each child that may have exited: those whose pidfd
/// polls readable (the child is a zombie), without waiting; those without
/// a pidfd, and all of them if poll fails, are to be asked by waitid.
fn mark_exited(children: &mut [Child]) {
    for chunk in children.chunks_mut(POLL_CHUNK) {
        let ready = poll_exited(chunk);
        for (i, child) in chunk.iter_mut().enumerate() {
            child.exited = child.pidfd.is_none() || ready & (1 << i) != 0;
        }
    }
}

/// Bit i set: `chunk[i]`'s pidfd polled readable (every bit when poll
/// failed). A child without a pidfd takes another's place in the array;
/// its bit is not looked at.
fn poll_exited(chunk: &[Child]) -> u64 {
    let Some(filler) = chunk.iter().find_map(|child| child.pidfd.as_ref()) else {
        return u64::MAX;
    };
    let mut fds: [PollFd<'_>; POLL_CHUNK] = std::array::from_fn(|i| {
        let fd = chunk.get(i).and_then(|child| child.pidfd.as_ref());
        PollFd::new(fd.unwrap_or(filler).as_fd(), PollFlags::POLLIN)
    });
    let fds = &mut fds[..chunk.len()];
    loop {
        match poll(fds, PollTimeout::ZERO) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(_) => return u64::MAX,
        }
    }
    fds.iter().enumerate().fold(0, |mask, (i, fd)| {
        if fd.revents().is_some_and(|r| !r.is_empty()) {
            mask | (1 << i)
        } else {
            mask
        }
    })
}

/// A pidfd for our child `pid`, just forked.
fn open_pidfd(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; no memory is passed. (Neither nix nor libc wraps it.)
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// In the child, right after fork: runs `run(payload)` and leaves with
/// `_exit`. Out of line, as are the failures below, so that the parent's
/// frames between the serve loop and fork stay small: the stack the parent
/// writes per connection then spans fewer pages (each written page is a
/// copy-on-write fault after every fork). Named, with fork_connection (where
/// fork returns) and the rest of the child's path, in build.rs's CHILD_PATH,
/// which lays that code out side by side: a rename must follow there.
#[inline(never)]
fn in_child<T>(server: &Arc<Server>, payload: T, run: impl FnOnce(T) -> Result<(), Error>) -> ! {
    crate::sys::mark_forked_child();
    // The listening sockets and the loops' eventfds are the parent's: a
    // port must close when the parent closes it.
    server.release_in_forked_child();
    close_inherited(server.fileno());
    let status = match catch_reported(server.handler(), || run(payload)) {
        Some(Ok(())) => 0,
        // Already reported through handle_error, in this child.
        Some(Err(_)) => 1,
        // The panic was reported, in this child.
        None => 2,
    };
    // SAFETY: `_exit` ends the child without running atexit handlers or
    // flushing stdio buffers inherited from the parent (Python's os._exit),
    // so nothing of the parent's runs twice.
    unsafe { libc::_exit(status) }
}

/// Once, in the parent: leaves free blocks of a request's state's size and
/// of every small size side by side in the malloc cache (glibc's tcache),
/// which every child inherits. A child's first allocations of those sizes
/// (its request, the small buffers) then come from there, without the
/// allocator's slower path writing the arena's state in the C library's
/// data: a copy-on-write fault in every child.
#[cold]
#[inline(never)]
fn prime_malloc_cache() {
    // Byte vectors: malloc of exactly that many bytes.
    let sizes = std::iter::once(Request::state_size()).chain((16..=256).step_by(16));
    let blocks: Vec<Vec<u8>> = sizes.map(Vec::with_capacity).collect();
    drop(blocks);
}

#[cold]
#[inline(never)]
fn fork_failed(e: Errno) -> Error {
    Error::spawn("fork", e.into())
}

#[cold]
#[inline(never)]
fn refused(max_children: usize) -> Error {
    Error::wrong_state(format!(
        "max_children ({max_children}) child processes already run: the fork was refused"
    ))
}

/// A connection that got no child, made a request to be reported.
#[cold]
#[inline(never)]
fn not_started(
    server: &Arc<Server>,
    conn: Socket,
    peer: &SockAddr,
    permit: Option<PeerPermit>,
    error: Error,
) -> super::NotStarted {
    let mut request = Request::stream(server.clone(), conn, peer.clone());
    request.set_peer_permit(permit);
    Box::new((request, error))
}

impl ChildTracker {
    pub(crate) fn new(config: &Config) -> Self {
        ChildTracker {
            hot: Box::new(Hot {
                slots: AtomicUsize::new(0),
                unreaped_turns: AtomicUsize::new(0),
                children: Mutex::new(ChildTable::new()),
                primed: AtomicBool::new(false),
            }),
            // Only where the serving thread alone forks (SS_FORKING's
            // stream connections), which reaps at the cap anyway.
            batch_reaps: config.max_connections_per_ip == 0
                && config.concurrency == crate::config::Concurrency::Forking
                && config.transport.is_stream(),
            max_children: config.max_children,
        }
    }

    fn children(&self) -> MutexGuard<'_, ChildTable> {
        crate::sync::lock(&self.hot.children)
    }

    fn release_slot(&self) {
        self.hot.slots.fetch_sub(1, Ordering::SeqCst);
    }

    /// Runs `work(request)` in a new child process. The parent's copy of the
    /// request is dropped, which closes its fd without shutting the
    /// connection down (the child does that). On failure (fork failed, or
    /// max_children children already run) the request comes back with the
    /// error.
    pub(crate) fn fork(
        &self,
        request: Request,
        work: impl FnOnce(Request) -> Result<(), Error> + Send + 'static,
    ) -> Result<(), super::NotStarted> {
        if let Err(error) = self.reserve(request.server()) {
            return Err(Box::new((request, error)));
        }
        // Taken before fork: the child never drops it (it leaves by _exit).
        let mut request = request;
        let peer_permit = request.take_peer_permit();
        let server = request.server().clone();
        self.spawn(&server, peer_permit, request, work)
            .map_err(|(request, error)| Box::new((request, error)))
    }

    /// SS_FORKING's connections: forks the child that serves `conn` before
    /// any Request exists, which the child then makes. The parent so
    /// allocates, frees and enters in the drain table nothing per
    /// connection: while children share its pages (copy-on-write after
    /// each fork), every page the parent writes between two forks is a
    /// page fault and a copy. A drain in the child is seen through its
    /// drain pipe, as before (the parent's table entry was removed right
    /// after fork). On failure the request is made (to report it) and
    /// comes back with the error.
    pub(crate) fn fork_connection(
        &self,
        server: &Arc<Server>,
        conn: Socket,
        peer: &SockAddr,
        permit: Option<PeerPermit>,
    ) -> Result<(), super::NotStarted> {
        if let Err(error) = self.reserve(server) {
            return Err(not_started(server, conn, peer, permit, error));
        }
        if !self.hot.primed.load(Ordering::Relaxed) {
            self.hot.primed.store(true, Ordering::Relaxed);
            prime_malloc_cache();
        }
        // The request deadline counts from accept, as in the other modes.
        let accepted = server.config().request_deadline.map(|_| Instant::now());
        // The address stays where it is (the child has its copy of this
        // stack): small frames, see in_child.
        let run = |conn: Socket| {
            let mut request = Request::stream(server.clone(), conn, peer.clone());
            if let Some(accepted) = accepted {
                request.deadline_from(accepted);
            }
            // The child's own drain mark: a drain reaches it through the
            // drain pipe, not the parent's table.
            request.set_active(ActiveEntry::detached());
            run_request(server, request)
        };
        self.spawn(server, permit, conn, run)
            .map_err(|(conn, error)| not_started(server, conn, peer, None, error))
    }

    /// Forks, with a place already reserved: the child runs `run(payload)`
    /// and leaves with `_exit`; the parent follows the child (and keeps
    /// `peer_permit` until it is reaped). If fork fails the place is given
    /// back and `payload` comes back with the error.
    fn spawn<T>(
        &self,
        server: &Arc<Server>,
        peer_permit: Option<PeerPermit>,
        payload: T,
        run: impl FnOnce(T) -> Result<(), Error>,
    ) -> Result<(), (T, Error)> {
        // Before fork: the child keeps the pipe's read end, to learn of a
        // drain.
        server.prepare_drain_pipe();
        // SAFETY: in the child only this thread exists, and locks other
        // parent threads held at fork time stay held for ever. The child
        // therefore runs only the request and leaves with `_exit`, never
        // returning into code that waits for such a lock; the server calls
        // a child may make refuse before locking (in_forked_child), the
        // address is read without a lock, and error lines are written with
        // write(2) alone. What remains unsafe is C handler code's own use of
        // locks, documented in the header at SS_FORKING.
        match unsafe { nix::unistd::fork() } {
            Err(e) => {
                self.release_slot();
                Err((payload, fork_failed(e)))
            }
            Ok(ForkResult::Child) => in_child(server, payload, run),
            Ok(ForkResult::Parent { child }) => {
                let pidfd = open_pidfd(child);
                if pidfd.is_none() && Errno::last() == Errno::ESRCH {
                    // Already exited and reaped by someone else: gone.
                    self.release_slot();
                } else {
                    self.children().push(Child {
                        pid: child,
                        pidfd,
                        _peer_permit: peer_permit,
                        killed: false,
                        exited: false,
                    });
                }
                // The parent's copy (the request, or the connection) is
                // dropped: its descriptor closes without the connection
                // being shut down (the child does that).
                drop(payload);
                Ok(())
            }
        }
    }

    /// A place among max_children for a new child, or the refusal.
    fn reserve(&self, server: &Server) -> Result<(), Error> {
        let reserve = || {
            self.hot
                .slots
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < self.max_children).then_some(n + 1)
                })
        };
        if reserve().is_ok() {
            return Ok(());
        }
        // Children that have exited but are not reaped yet hold places
        // until the serve loop's next reap; a hand-off on a handler thread
        // (SS_THREADING) does not wait for that: reap them now.
        self.reap(server, false);
        reserve()
            .map(|_| ())
            .map_err(|_| refused(self.max_children))
    }
    pub(crate) fn has_capacity(&self) -> bool {
        self.hot.slots.load(Ordering::SeqCst) < self.max_children
    }

    /// Children not yet reaped, counted from before fork: a child that
    /// already runs is always counted.
    pub(crate) fn live(&self) -> usize {
        self.hot.slots.load(Ordering::SeqCst)
    }

    /// The drain deadline: SIGKILLs every child not yet reaped (through its
    /// pidfd when there is one, so a reused pid is never hit); how many.
    /// SIGKILL rather than SIGTERM: a child inherits the program's own
    /// SIGTERM handler, typically one that drains the server, which a
    /// child cannot do.
    pub(crate) fn kill_all(&self) -> usize {
        let mut children = self.children();
        for child in children.parts().into_iter().flatten() {
            let sent = match &child.pidfd {
                // SAFETY: pidfd_send_signal with a pidfd we own, a signal
                // number, no siginfo (NULL) and no flags.
                Some(fd) => unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        fd.as_raw_fd(),
                        libc::SIGKILL,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                },
                None => -1,
            };
            if sent != 0 && child.pidfd.is_none() {
                let _ = nix::sys::signal::kill(child.pid, nix::sys::signal::Signal::SIGKILL);
            }
            child.killed = true;
        }
        children.len()
    }

    /// The serve loop's reaping at the end of a turn (Python's
    /// collect_children in service_actions): after a turn that waited in
    /// poll, at once; after one that found its request already queued, on
    /// every REAP_EVERY-th such turn only. Under load the next connection
    /// is always waiting, and a poll of the pidfds per connection (which
    /// finds about one child exited) costs a system call each; batched,
    /// the poll finds several at once. A finished child stays a zombie for
    /// at most REAP_EVERY busy turns more (an idle loop waits up to the
    /// poll interval before reaping anyway), and max_children still
    /// reaps at the cap first (Workers::has_capacity). With a per-IP
    /// limit, and in the other modes, every turn reaps (see `batch_reaps`).
    pub(crate) fn reap_turn(&self, server: &Server, polled: bool) {
        if self.hot.slots.load(Ordering::SeqCst) == 0 {
            return;
        }
        if !polled
            && self.batch_reaps
            && self.hot.unreaped_turns.fetch_add(1, Ordering::Relaxed) + 1 < REAP_EVERY
        {
            return;
        }
        self.hot.unreaped_turns.store(0, Ordering::Relaxed);
        self.reap(server, false);
    }

    /// Reaps finished children (all of them, waiting, when `block`), and
    /// reports a child that a signal killed through handle_error.
    pub(crate) fn reap(&self, server: &Server, block: bool) {
        let mut children = self.children();
        if children.len() == 0 {
            return;
        }
        // Without blocking, only the children whose pidfd says they have
        // exited are waited for: one poll for all of them (per 64), rather
        // than a waitid per live child every loop turn.
        if !block {
            for part in children.parts() {
                mark_exited(part);
            }
        }
        let mut crashed = Vec::new();
        let before = children.len();
        children.retain(|child| {
            if !block && !child.exited {
                return true;
            }
            let flags = if block {
                WaitPidFlag::WEXITED
            } else {
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG
            };
            loop {
                let by_pid = || waitpid(child.pid, Some(flags - WaitPidFlag::WEXITED));
                let waited = match &child.pidfd {
                    Some(fd) => match waitid(Id::PIDFd(fd.as_fd()), flags) {
                        // Linux 5.3 has pidfd_open but not P_PIDFD.
                        Err(Errno::EINVAL) => by_pid(),
                        other => other,
                    },
                    // waitpid takes no WEXITED (it is implied).
                    None => by_pid(),
                };
                match waited {
                    Ok(WaitStatus::StillAlive) => return true,
                    Err(Errno::EINTR) => continue,
                    Ok(WaitStatus::Signaled(pid, signal, _)) => {
                        if !child.killed {
                            crashed.push((pid, signal as i32));
                        }
                        return false;
                    }
                    // Reaped, or ECHILD: someone else reaped it; gone.
                    _ => return false,
                }
            }
        });
        let reaped = before - children.len();
        drop(children);
        self.hot.slots.fetch_sub(reaped, Ordering::SeqCst);
        for (pid, signal) in crashed {
            let error = Error::new(
                ErrorKind::Handler,
                format!("request child process {pid} was killed by signal {signal}"),
            );
            server.handler().handle_error(None, &error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: i32) -> Child {
        Child {
            pid: Pid::from_raw(pid),
            ..Child::VACANT
        }
    }

    fn pids(table: &mut ChildTable) -> Vec<i32> {
        let mut pids: Vec<i32> = table
            .parts()
            .into_iter()
            .flatten()
            .map(|c| c.pid.as_raw())
            .collect();
        pids.sort_unstable();
        pids
    }

    #[test]
    fn the_child_table_spills_past_its_page_and_refills_it() {
        let mut table = ChildTable::new();
        let n = INLINE as i32 + 10;
        for pid in 1..=n {
            table.push(record(pid));
        }
        assert_eq!(table.len(), n as usize);
        assert_eq!(table.spill.len(), 10);
        // Every other record goes, in the page and in the spill alike.
        table.retain(|c| c.pid.as_raw() % 2 == 0);
        let kept: Vec<i32> = (1..=n).filter(|p| p % 2 == 0).collect();
        assert_eq!(pids(&mut table), kept);
        // The page takes the spilled records back first.
        assert_eq!(table.len, kept.len());
        assert!(table.spill.is_empty());
        assert!(table.inline[table.len..]
            .iter()
            .all(|c| c.pid.as_raw() == 0));
        table.retain(|_| false);
        assert_eq!(table.len(), 0);
    }
}
