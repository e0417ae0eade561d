//! Watching another descriptor on a connection's loop (ss_conn_watch_fd):
//! a pipe, a connection to a backend. The watch belongs to the connection:
//! its callback runs on the connection's loop with the connection, and the
//! watch ends when the connection closes (at on_close).
//!
//! Tokens: connections are registered with their slot (< 2^24), the
//! listener and the waker with u64::MAX and u64::MAX - 1; a watch with
//! WATCH_TAG | serial << 24 | the connection's slot (bit 63 clear, so it
//! never meets the two fixed tokens). The serial, per loop run, tells a
//! stale event (for a watch removed earlier in the same epoll_wait batch)
//! from a newer watch of a connection in the same slot.
//!
//! The library registers a duplicate of the caller's descriptor (its own,
//! close-on-exec): closing the caller's descriptor before unwatching then
//! cannot make the loop remove, or watch, whatever file reuses that
//! number. Readiness is that of the open file, which both share.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};

use super::conn::Conn;
use super::context::of_conn;
use super::{report_conn_error, EventLoop, MAX_SLOTS};
use crate::error::{Error, ErrorKind, Result};

/// Bit 62: a watch token (see the module doc).
pub(crate) const WATCH_TAG: u64 = 1 << 62;
const SERIAL_MASK: u64 = (1 << 38) - 1;

/// Readiness bits, the values of the C enum ss_watch_events.
pub const WATCH_READ: u32 = 1;
pub const WATCH_WRITE: u32 = 2;
pub const WATCH_HANGUP: u32 = 4;
pub const WATCH_ERROR: u32 = 8;

/// A watch's callback: the connection, the caller's descriptor and what
/// is ready (WATCH_* bits). An error closes the connection as failed.
pub type WatchFn = Box<dyn FnMut(&mut Conn, RawFd, u32) -> Result<()> + Send>;

pub(crate) struct Watch {
    /// The caller's number for it, as given and as passed back.
    fd: RawFd,
    /// The duplicate epoll watches.
    dup: OwnedFd,
    token: u64,
    /// Taken out while it runs.
    callback: Option<WatchFn>,
}

fn epoll_flags(events: u32) -> EpollFlags {
    let mut flags = EpollFlags::empty();
    if events & WATCH_READ != 0 {
        flags |= EpollFlags::EPOLLIN;
    }
    if events & WATCH_WRITE != 0 {
        flags |= EpollFlags::EPOLLOUT;
    }
    flags
}

fn ready_bits(flags: EpollFlags) -> u32 {
    let mut ready = 0;
    if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLPRI) {
        ready |= WATCH_READ;
    }
    if flags.contains(EpollFlags::EPOLLOUT) {
        ready |= WATCH_WRITE;
    }
    if flags.contains(EpollFlags::EPOLLHUP) {
        ready |= WATCH_HANGUP;
    }
    if flags.contains(EpollFlags::EPOLLERR) {
        ready |= WATCH_ERROR;
    }
    ready
}

fn epoll_error(what: &str, e: nix::errno::Errno) -> Error {
    match e {
        nix::errno::Errno::EPERM => Error::new(
            ErrorKind::Unsupported,
            format!("{what}: epoll cannot watch this kind of file (a regular file or directory)"),
        ),
        e => Error::io(what, e.into()),
    }
}

impl Conn {
    /// Watches `fd` for `events` (WATCH_READ and/or WATCH_WRITE) on this
    /// connection's loop; `callback` runs there, level-triggered, with what
    /// is ready. Watching a descriptor this connection already watches
    /// changes its events and callback (a number closed without unwatching
    /// and reused for another file is watched anew: the old watch ends).
    /// Must be called on the connection's loop thread.
    pub fn watch_fd(&mut self, fd: BorrowedFd<'_>, events: u32, callback: WatchFn) -> Result<()> {
        use std::os::fd::AsRawFd;
        if events == 0 || events & !(WATCH_READ | WATCH_WRITE) != 0 {
            return Err(Error::invalid(format!(
                "watch events {events:#x}: give SS_WATCH_READ and/or SS_WATCH_WRITE"
            )));
        }
        if self.st.close_requested || self.st.broken || self.st.lingering {
            return Err(Error::new(ErrorKind::Closed, "the connection is closing"));
        }
        let raw = fd.as_raw_fd();
        if raw == self.fd() {
            return Err(Error::invalid(
                "a connection's own socket is watched by the library already",
            ));
        }
        let context = of_conn(self).ok_or_else(|| {
            Error::wrong_state("ss_conn_watch_fd must be called on the connection's loop thread")
        })?;
        let slot = self.id() & (MAX_SLOTS as u64 - 1);
        let watches = self.watches.get_or_insert_with(Default::default);
        // A watch under this number whose duplicate is another file: the
        // caller closed the number without unwatching and it was reused.
        // Changing that watch would go on watching the old file; it is
        // dropped instead and the new file watched.
        if let Some(i) = watches
            .iter()
            .position(|w| w.fd == raw && !same_file(w.dup.as_fd(), fd))
        {
            remove(&context.epoll, watches.swap_remove(i));
        }
        if let Some(watch) = watches.iter_mut().find(|w| w.fd == raw) {
            let mut event = EpollEvent::new(epoll_flags(events), watch.token);
            context
                .epoll
                .modify(&watch.dup, &mut event)
                .map_err(|e| epoll_error("epoll_ctl(EPOLL_CTL_MOD)", e))?;
            watch.callback = Some(callback);
            return Ok(());
        }
        let dup = fd
            .try_clone_to_owned()
            .map_err(|e| Error::io("fcntl(F_DUPFD_CLOEXEC)", e))?;
        let serial = context.next_watch.get();
        context.next_watch.set(serial.wrapping_add(1));
        let token = WATCH_TAG | ((serial & SERIAL_MASK) << 24) | slot;
        if let Err(e) = context
            .epoll
            .add(&dup, EpollEvent::new(epoll_flags(events), token))
        {
            if watches.is_empty() {
                self.watches = None;
            }
            return Err(epoll_error("epoll_ctl(EPOLL_CTL_ADD)", e));
        }
        watches.push(Watch {
            fd: raw,
            dup,
            token,
            callback: Some(callback),
        });
        Ok(())
    }

    /// Stops watching `fd` (SS_ERR_INVALID_ARGUMENT if this connection
    /// does not watch it).
    pub fn unwatch_fd(&mut self, fd: RawFd) -> Result<()> {
        let context = of_conn(self).ok_or_else(|| {
            Error::wrong_state("ss_conn_unwatch_fd must be called on the connection's loop thread")
        })?;
        let found = self
            .watches
            .as_mut()
            .and_then(|w| w.iter().position(|w| w.fd == fd).map(|i| w.swap_remove(i)));
        let Some(watch) = found else {
            return Err(Error::invalid(format!(
                "descriptor {fd} is not watched by this connection"
            )));
        };
        remove(&context.epoll, watch);
        if self.watches.as_ref().is_some_and(|w| w.is_empty()) {
            self.watches = None;
        }
        Ok(())
    }

    /// Descriptors this connection watches.
    pub fn watched_fds(&self) -> usize {
        self.watches.as_ref().map_or(0, |w| w.len())
    }
}

/// Whether two descriptors refer to the same file (device and inode; a
/// pipe or socket has an inode of its own). A failing fstat counts as
/// not the same.
fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    match (nix::sys::stat::fstat(a), nix::sys::stat::fstat(b)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}

/// Deregistered explicitly before the duplicate is closed: a forked child
/// holding a copy would otherwise keep the registration alive.
fn remove(epoll: &Epoll, watch: Watch) {
    let _ = epoll.delete(watch.dup.as_fd());
}

/// Ends every watch of a connection that is leaving the user's view.
pub(crate) fn unwatch_all(epoll: &Epoll, conn: &mut Conn) {
    for watch in conn.watches.take().map(|w| *w).unwrap_or_default() {
        remove(epoll, watch);
    }
}

impl EventLoop {
    /// A watched descriptor is ready: its callback runs with the
    /// connection, then the connection settles (the callback may have
    /// written, closed, resumed reading). A hang-up or error is the
    /// watch's last call: it is removed once the callback returns (read
    /// what is left in that call), so a level-triggered hang-up cannot
    /// make the loop spin.
    pub(super) fn on_watch_event(&mut self, token: u64, flags: EpollFlags) {
        let slot = (token & (MAX_SLOTS as u64 - 1)) as usize;
        let Some(conn) = self.slots.get_mut(slot).and_then(|s| s.as_deref_mut()) else {
            return;
        };
        if conn.st.lingering {
            return;
        }
        let Some(watch) = conn
            .watches
            .as_mut()
            .and_then(|w| w.iter_mut().find(|w| w.token == token))
        else {
            return; // stale: removed earlier in this batch
        };
        let fd = watch.fd;
        let Some(mut callback) = watch.callback.take() else {
            return;
        };
        let ready = ready_bits(flags);
        let result = callback(conn, fd, ready);
        let last = ready & (WATCH_HANGUP | WATCH_ERROR) != 0;
        // Put back unless the callback unwatched or replaced it.
        let position = conn
            .watches
            .as_ref()
            .and_then(|w| w.iter().position(|w| w.token == token));
        if let Some(i) = position {
            let watches = conn.watches.as_mut().expect("found above");
            if last {
                let watch = watches.swap_remove(i);
                remove(&self.epoll, watch);
                if watches.is_empty() {
                    conn.watches = None;
                }
            } else if watches[i].callback.is_none() {
                watches[i].callback = Some(callback);
            }
        }
        if let Err(e) = result {
            report_conn_error(&self.server, conn, &e);
            conn.st.broken = true;
        }
        self.settle(slot);
    }
}
