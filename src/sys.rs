//! Small system-call helpers: poll with deadlines and EINTR retry, the eventfd
//! that wakes a server loop, and byte-buffer views for socket2.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};

use crate::error::{Error, ErrorKind, Result};

/// Views an initialised byte buffer as the `MaybeUninit` slice socket2 reads into.
pub fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the socket calls
    // only ever write initialised bytes into it, so `buf` stays initialised.
    unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) }
}

/// Milliseconds for poll(2): -1 for no deadline, rounded up so that a wait
/// never ends before its deadline.
fn poll_ms(deadline: Option<Instant>) -> i32 {
    match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            let ms = left.as_micros().div_ceil(1000);
            ms.min(i32::MAX as u128) as i32
        }
    }
}

/// poll(2) over `fds` until one is ready or `deadline` passes; retries EINTR
/// with the time that is left. Returns the number of ready entries (0 = timed out).
pub fn poll_until(fds: &mut [libc::pollfd], deadline: Option<Instant>) -> io::Result<usize> {
    loop {
        for fd in fds.iter_mut() {
            fd.revents = 0;
        }
        let ms = poll_ms(deadline);
        // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd for
        // the duration of the call, and its length is passed with it.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

pub fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Waits until `fd` is ready for `events` or `timeout` passes (None = no limit).
pub fn wait_ready(
    fd: RawFd,
    events: libc::c_short,
    timeout: Option<Duration>,
    what: &str,
) -> Result<()> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut fds = [pollfd(fd, events)];
    match poll_until(&mut fds, deadline) {
        Ok(0) => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "{what}: timed out after {} ms",
                timeout.unwrap_or_default().as_millis()
            ),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(Error::io(what, e)),
    }
}

/// An eventfd that wakes a loop blocked in poll. `notify` is async-signal-safe:
/// it is a single write(2) and touches no lock and no allocator.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub fn new() -> Result<Self> {
        // SAFETY: eventfd has no pointer arguments; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::last_os("eventfd"));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Waker {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local. The result is ignored on
        // purpose: EAGAIN means the counter is already non-zero (the loop
        // will wake anyway), and nothing else can fail for an open eventfd.
        unsafe {
            libc::write(self.fd(), (&one as *const u64).cast(), 8);
        }
    }

    /// Resets the counter so the next poll blocks again.
    pub fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live local; EAGAIN (already drained)
        // is harmless.
        unsafe {
            libc::read(self.fd(), (&mut value as *mut u64).cast(), 8);
        }
    }
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
        // SAFETY: writes from a live buffer of the given length.
        let n = unsafe { libc::write(libc::STDERR_FILENO, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            rest = &rest[n as usize..];
            continue;
        }
        let err = io::Error::last_os_error();
        if n < 0 && err.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if err.raw_os_error() == Some(libc::EPIPE) {
            quiet.consume_raised();
        }
        return; // stderr closed or full: nothing better to do
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
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: fills a live timespec; CLOCK_MONOTONIC cannot fail (nix's
    // clock_gettime needs its "time" feature, which is not enabled).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64
}
