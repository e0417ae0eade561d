//! Small system-call helpers: poll with deadlines and EINTR retry, the eventfd
//! that wakes a server loop, and byte-buffer views for socket2.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

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
/// and lines from concurrent threads do not interleave.
pub fn write_stderr_line(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    let mut rest = line.as_bytes();
    while !rest.is_empty() {
        // SAFETY: writes from a live buffer of the given length.
        let n = unsafe { libc::write(libc::STDERR_FILENO, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            rest = &rest[n as usize..];
        } else if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        } else {
            return; // stderr closed or full: nothing better to do
        }
    }
}
