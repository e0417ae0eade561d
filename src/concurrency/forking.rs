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

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::peer_limit::PeerPermit;
use crate::request::Request;
use crate::server::Server;

use crate::handler::catch_reported;

/// How many descriptors of live servers (listening sockets, loop eventfds)
/// a request child can close for the whole process; more are left open in
/// children (the child's own server's are closed anyway).
const INHERITED_SLOTS: usize = 64;

/// Descriptors that belong to the parent's servers, which a request child
/// closes right after fork: a lock-free table, since a child may not take
/// locks. A slot is cleared before its descriptor is closed, so the table
/// never names a closed (or reused) number at fork time.
static INHERITED: [AtomicI32; INHERITED_SLOTS] = [const { AtomicI32::new(-1) }; INHERITED_SLOTS];

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
/// datagram server's socket, which its request replies through).
fn close_inherited(keep: RawFd) {
    for slot in &INHERITED {
        let fd = slot.swap(-1, Ordering::SeqCst);
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

pub(crate) struct ChildTracker {
    children: Mutex<Vec<Child>>,
    /// Busy turns (see reap_turn) since the last reap.
    unreaped_turns: AtomicUsize,
    /// Whether reap_turn may skip busy turns: only in SS_FORKING over a
    /// stream, where the serving thread alone forks (reaping at the cap
    /// first), and not with a per-IP limit, whose places children hold
    /// until reaped (a client at its limit would be refused for a child
    /// already gone).
    batch_reaps: bool,
    /// Children not yet reaped plus forks under way: what max_children
    /// bounds.
    slots: AtomicUsize,
    max_children: usize,
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

impl ChildTracker {
    pub(crate) fn new(config: &Config) -> Self {
        ChildTracker {
            children: Mutex::new(Vec::new()),
            unreaped_turns: AtomicUsize::new(0),
            // Only where the serving thread alone forks (SS_FORKING's
            // stream connections), which reaps at the cap anyway.
            batch_reaps: config.max_connections_per_ip == 0
                && config.concurrency == crate::config::Concurrency::Forking
                && config.transport.is_stream(),
            slots: AtomicUsize::new(0),
            max_children: config.max_children,
        }
    }

    fn children(&self) -> MutexGuard<'_, Vec<Child>> {
        crate::sync::lock(&self.children)
    }

    fn release_slot(&self) {
        self.slots.fetch_sub(1, Ordering::SeqCst);
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
        let reserve = || {
            self.slots
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < self.max_children).then_some(n + 1)
                })
        };
        let mut reserved = reserve();
        if reserved.is_err() {
            // Children that have exited but are not reaped yet hold places
            // until the serve loop's next reap; a hand-off on a handler
            // thread (SS_THREADING) does not wait for that: reap them now.
            self.reap(request.server(), false);
            reserved = reserve();
        }
        if reserved.is_err() {
            let error = Error::wrong_state(format!(
                "max_children ({}) child processes already run: the fork was refused",
                self.max_children
            ));
            return Err(Box::new((request, error)));
        }
        // Before fork: the child keeps the pipe's read end, to learn of a
        // drain.
        request.server().prepare_drain_pipe();
        // Taken before fork: the child never drops it (it leaves by _exit).
        let mut request = request;
        let peer_permit = request.take_peer_permit();
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
                Err(Box::new((request, Error::spawn("fork", e.into()))))
            }
            Ok(ForkResult::Child) => {
                crate::sys::mark_forked_child();
                let server = request.server().clone();
                // The listening sockets and the loops' eventfds are the
                // parent's: a port must close when the parent closes it.
                server.release_in_forked_child();
                close_inherited(server.fileno());
                let status = match catch_reported(server.handler(), || work(request)) {
                    Some(Ok(())) => 0,
                    // Already reported through handle_error, in this child.
                    Some(Err(_)) => 1,
                    // The panic was reported, in this child.
                    None => 2,
                };
                // SAFETY: `_exit` ends the child without running atexit
                // handlers or flushing stdio buffers inherited from the
                // parent (Python's os._exit), so nothing of the parent's runs
                // twice.
                unsafe { libc::_exit(status) }
            }
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
                drop(request);
                Ok(())
            }
        }
    }

    pub(crate) fn has_capacity(&self) -> bool {
        self.slots.load(Ordering::SeqCst) < self.max_children
    }

    /// Children not yet reaped, counted from before fork: a child that
    /// already runs is always counted.
    pub(crate) fn live(&self) -> usize {
        self.slots.load(Ordering::SeqCst)
    }

    /// The drain deadline: SIGKILLs every child not yet reaped (through its
    /// pidfd when there is one, so a reused pid is never hit); how many.
    /// SIGKILL rather than SIGTERM: a child inherits the program's own
    /// SIGTERM handler, typically one that drains the server, which a
    /// child cannot do.
    pub(crate) fn kill_all(&self) -> usize {
        let mut children = self.children();
        for child in children.iter_mut() {
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
        if self.slots.load(Ordering::SeqCst) == 0 {
            return;
        }
        if !polled
            && self.batch_reaps
            && self.unreaped_turns.fetch_add(1, Ordering::Relaxed) + 1 < REAP_EVERY
        {
            return;
        }
        self.unreaped_turns.store(0, Ordering::Relaxed);
        self.reap(server, false);
    }

    /// Reaps finished children (all of them, waiting, when `block`), and
    /// reports a child that a signal killed through handle_error.
    pub(crate) fn reap(&self, server: &Server, block: bool) {
        let mut children = self.children();
        if children.is_empty() {
            return;
        }
        // Without blocking, only the children whose pidfd says they have
        // exited are waited for: one poll for all of them (per 64), rather
        // than a waitid per live child every loop turn.
        if !block {
            mark_exited(&mut children);
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
        self.slots.fetch_sub(reaped, Ordering::SeqCst);
        for (pid, signal) in crashed {
            let error = Error::new(
                ErrorKind::Handler,
                format!("request child process {pid} was killed by signal {signal}"),
            );
            server.handler().handle_error(None, &error);
        }
    }
}
