//! Small system-call helpers: poll with deadlines and EINTR retry, the eventfd
//! that wakes a server loop, and byte-buffer views for socket2.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};

use crate::error::{Error, Result};

/// True in a child forked by this library (set right after fork): process
/// state that the lowest layers (the waker, lingering, error lines) look at.
static IN_FORKED_CHILD: AtomicBool = AtomicBool::new(false);

pub(crate) fn in_forked_child() -> bool {
    IN_FORKED_CHILD.load(Ordering::Relaxed)
}

/// Called in the child right after fork.
pub(crate) fn mark_forked_child() {
    IN_FORKED_CHILD.store(true, Ordering::Relaxed);
}

/// Views an initialised byte buffer as the `MaybeUninit` slice socket2 reads into.
pub fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the socket calls
    // only ever write initialised bytes into it, so `buf` stays initialised.
    unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) }
}

/// One recv(2) on a connected socket with `flags`, as
/// `Socket::recv_with_flags(buf, flags)`, but by syscall(2): glibc's recv()
/// is a pthread cancellation point, and switching asynchronous cancellation
/// on and off around it costs two atomic operations and ~30 instructions per
/// call. No thread of the library is cancelled through these calls
/// (cancelling through Rust frames is undefined behaviour anyway). Used by
/// the event loop (MSG_DONTWAIT) and the blocking request I/O.
#[inline(always)]
pub(crate) fn recv_fd(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: recvfrom(2) writes at most `buf.len()` bytes into `buf`,
    // valid and exclusively borrowed for the call; null address pointers
    // ask for no peer address.
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            flags,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One send(2) on a connected socket with `flags` (callers pass
/// MSG_NOSIGNAL), by syscall(2) for the reason given at [`recv_fd`].
#[inline(always)]
pub(crate) fn send_fd(fd: RawFd, data: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: sendto(2) only reads `data.len()` bytes of `data`, valid for
    // the call; a null address is what send(2) passes on a connected socket.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            data.as_ptr(),
            data.len(),
            flags,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// poll(2)'s timeout for `deadline`: none for no deadline, rounded up to
/// whole milliseconds so that a wait never ends before its deadline.
fn poll_timeout(deadline: Option<Instant>) -> PollTimeout {
    match deadline {
        None => PollTimeout::NONE,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            let ms = left.as_micros().div_ceil(1000);
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// poll(2) over `fds` until one is ready or `deadline` passes; retries EINTR
/// with the time that is left. Returns the number of ready entries (0 = timed out).
pub fn poll_fds_until(fds: &mut [PollFd<'_>], deadline: Option<Instant>) -> io::Result<usize> {
    loop {
        match nix::poll::poll(fds, poll_timeout(deadline)) {
            Ok(n) => return Ok(usize::try_from(n).unwrap_or(0)),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until `fd` is ready for `events` or `deadline` passes (None = no
/// limit). Returns false when the deadline passed first. The deadline is
/// the caller's, computed once, so that retries never extend the wait.
pub fn wait_ready(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd, events)];
    Ok(poll_fds_until(&mut fds, deadline)? > 0)
}

/// An eventfd that wakes a loop blocked in poll. `notify` is async-signal-safe:
/// it is a single write(2), touches no lock and no allocator, and leaves
/// `errno` as it found it (a signal handler's caller may be reading it).
#[derive(Debug)]
pub struct Waker {
    fd: EventFd,
}

impl Waker {
    pub fn new() -> Result<Self> {
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| Error::io("eventfd", e.into()))?;
        Ok(Waker { fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn notify(&self) {
        // A forked request child closes its copies of the loops' eventfds
        // (the loops are the parent's): the number may be reused there.
        if in_forked_child() {
            return;
        }
        let saved = Errno::last_raw();
        // The result is ignored on purpose: EAGAIN means the counter is
        // already non-zero (the loop will wake anyway), and nothing else
        // can fail for an open eventfd.
        let _ = self.fd.write(1);
        Errno::set_raw(saved);
    }

    /// Resets the counter so the next poll blocks again.
    pub fn drain(&self) {
        // EAGAIN (already drained) is harmless.
        let _ = self.fd.read();
    }

    /// In a forked child: closes the child's copy of the eventfd, which
    /// belongs to the parent's loop (`notify` does nothing in a child). The
    /// `EventFd` itself is never dropped there (the child leaves with
    /// `_exit`), so the number is not closed twice.
    pub fn close_in_forked_child(&self) {
        close_raw(self.fd());
    }
}

/// Closes a descriptor number whose owner will never be dropped (in a
/// forked child that leaves with `_exit`); errors are of no use there.
pub fn close_raw(fd: RawFd) {
    // The caller's owner of `fd` is never dropped, so the number is not
    // closed twice, and nothing else of the library uses it after.
    let _ = nix::unistd::close(fd);
}

/// Sets FD_CLOEXEC on a descriptor number this process was given but no
/// owner holds yet (socket activation's 3, 4, ...); EBADF if it is not open.
pub fn set_cloexec_raw(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(2) F_GETFD/F_SETFD take a descriptor number and an int
    // and touch no memory of ours; a number that is not open gives EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::FD_CLOEXEC == 0 {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// How serious a line of the library's own output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// A failure: the default handle_error's lines, a refused free.
    Error,
    /// Not a failure itself: e.g. how many error lines were suppressed.
    Warning,
}

/// Where log lines go instead of stderr when it returns true: set once,
/// by the C API's ss_set_log_callback (the hook itself says whether a
/// callback is set). Read without a lock (OnceLock::get is an atomic
/// load), so logging stays safe in a forked child.
static LOG_HOOK: OnceLock<fn(LogLevel, &str) -> bool> = OnceLock::new();

/// Installs the hook `log_line` offers every line to first (once; later
/// calls keep the first hook).
pub(crate) fn set_log_hook(hook: fn(LogLevel, &str) -> bool) {
    let _ = LOG_HOOK.set(hook);
}

/// Everything the library says on its own (not as a status) goes here:
/// to the log hook if one takes it, else one line on stderr
/// ([`write_stderr_line`]).
pub(crate) fn log_line(level: LogLevel, text: &str) {
    if let Some(hook) = LOG_HOOK.get() {
        if hook(level, text) {
            return;
        }
    }
    write_stderr_line(text);
}

/// Writes one line to stderr with write(2) alone: no lock, so it cannot
/// deadlock in a forked child whose parent had another thread printing,
/// and lines from concurrent threads do not interleave. A stderr that is a
/// pipe or socket whose reader is gone must not raise SIGPIPE in the host:
/// SIGPIPE is blocked on this thread for the write and one it raised is
/// consumed (what libcurl and rustls do; MSG_NOSIGNAL exists for sockets
/// only, not for pipes).
pub fn write_stderr_line(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    let quiet = SigpipeBlocked::new();
    let mut rest = line.as_bytes();
    while !rest.is_empty() {
        // The raw descriptor 2, not std's Stderr (its lock and buffer).
        match nix::unistd::write(io::stderr().as_fd(), rest) {
            Ok(n) if n > 0 => rest = &rest[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EPIPE) => {
                quiet.consume_raised();
                return;
            }
            // stderr closed or full: nothing better to do.
            _ => return,
        }
    }
}

/// SIGPIPE blocked on the calling thread while this lives; the previous
/// mask comes back on drop.
struct SigpipeBlocked {
    old: SigSet,
    /// A SIGPIPE already pending before is the host's, never consumed.
    was_pending: bool,
}

impl SigpipeBlocked {
    fn new() -> Self {
        let mut pending = MaybeUninit::<libc::sigset_t>::zeroed();
        // SAFETY: sigpending fills the live sigset_t it is given (nix has
        // no wrapper); zeroed is a valid empty set if it fails.
        let was_pending = unsafe {
            libc::sigpending(pending.as_mut_ptr()) == 0
                && libc::sigismember(pending.as_ptr(), libc::SIGPIPE) == 1
        };
        let mut old = SigSet::empty();
        let _ = pthread_sigmask(
            SigmaskHow::SIG_BLOCK,
            Some(&SigSet::from(Signal::SIGPIPE)),
            Some(&mut old),
        );
        SigpipeBlocked { old, was_pending }
    }

    /// Takes the SIGPIPE the write just raised, so that it is not
    /// delivered when the mask is restored.
    fn consume_raised(&self) {
        if self.was_pending {
            return;
        }
        let set = SigSet::from(Signal::SIGPIPE);
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: sigtimedwait with a zero timeout only polls the pending
        // set; the set and timeout are live locals, and no siginfo is
        // asked for (nix has no wrapper).
        unsafe {
            libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &zero);
        }
    }
}

impl Drop for SigpipeBlocked {
    fn drop(&mut self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// At most `per_second` events admitted per second, counted without a
/// lock (so it is safe in a forked child and from any thread); the ones
/// over the budget are counted, and the first admitted event of a later
/// second learns how many were suppressed, to say so.
pub(crate) struct RateLimiter {
    per_second: u32,
    window: AtomicU64,
    used: AtomicU32,
    suppressed: AtomicU64,
}

impl RateLimiter {
    pub(crate) const fn new(per_second: u32) -> Self {
        RateLimiter {
            per_second,
            window: AtomicU64::new(u64::MAX),
            used: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Some(n) if this event may be reported, n being how many were
    /// suppressed since the last report; None if it is over the budget.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = monotonic_seconds();
        let window = self.window.load(Ordering::Acquire);
        let mut carried = 0;
        if now != window
            && self
                .window
                .compare_exchange(window, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(0, Ordering::Release);
            carried = self.suppressed.swap(0, Ordering::AcqRel);
        }
        if self.used.fetch_add(1, Ordering::AcqRel) < self.per_second {
            Some(carried)
        } else {
            self.suppressed.fetch_add(carried + 1, Ordering::AcqRel);
            None
        }
    }
}

fn monotonic_seconds() -> u64 {
    // CLOCK_MONOTONIC cannot fail; 0 would only merge two seconds' budgets.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| t.tv_sec() as u64)
}
