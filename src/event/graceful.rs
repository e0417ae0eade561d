//! Event mode's part of a drain (ss_server_drain; see crate::drain). Once
//! a drain is asked for, each loop, every turn (`drain_turn`):
//! - stops accepting (the listener leaves its epoll; the serving thread
//!   shuts the listener down);
//! - closes each connection that is idle: no unconsumed input, no queued
//!   output, no job posted for it waiting in the mailbox, not held open
//!   after end-of-input by on_eof (an answer on its way), not marked busy
//!   (ss_conn_set_busy: an answer computed elsewhere), and nothing
//!   received and not yet read (peeked). An idle keep-alive connection
//!   thus closes at once and never holds the drain up; a busy one closes
//!   when it becomes idle. A connection that has not sent anything yet is
//!   given FRESH_GRACE_MS from the start of the drain first: its first
//!   request may be on its way (hyper took such a connection for busy
//!   until its first request, which held graceful_shutdown up:
//!   hyperium/hyper#1885, #2730; Go's http.Server.Shutdown gives new
//!   connections 5 s);
//! - at the deadline, closes every connection left (on_close runs),
//!   counting the cut ones;
//! - reports, through `LoopShared::drained`, whether it has no connection
//!   left; the serving thread waits until every loop does and no accepted
//!   connection is still on its way to a loop.

use std::io;
use std::sync::atomic::Ordering;

use super::{EventLoop, EventLoops, LoopShared};
use crate::sync::lock;

/// How long a connection that has sent nothing is given, from the start of
/// the drain, before it counts as idle.
const FRESH_GRACE_MS: u64 = 1000;

/// While connections remain, a draining loop looks at them at least this
/// often (for the grace above and the deadline).
const DRAIN_RECHECK_MS: u64 = 100;

impl EventLoops {
    /// Wakes every loop so that it looks at the drain.
    pub(crate) fn wake_all(&self) {
        for l in lock(&self.loops).iter() {
            l.waker.notify();
        }
    }

    /// Every loop has no connection left, and none is on its way to one.
    pub(crate) fn all_drained(&self) -> bool {
        let loops = lock(&self.loops);
        loops
            .iter()
            .all(|l: &std::sync::Arc<LoopShared>| l.drained.load(Ordering::SeqCst))
            && self.connections() == 0
    }
}

impl EventLoop {
    /// One turn of the drain (see the module doc).
    pub(super) fn drain_turn(&mut self) {
        let started = *self.graceful.get_or_insert(self.tick);
        self.pause_accepting();
        let server = self.server.clone();
        let drain = server.drain_state();
        let overdue = drain.overdue();
        let mut posted: Vec<u64> = Vec::new();
        if !overdue {
            posted = lock(&self.own.mailbox).iter().map(|(id, _)| *id).collect();
            posted.sort_unstable();
        }
        let fresh_until = started + FRESH_GRACE_MS;
        let mut cut = 0;
        for slot in 0..self.slots.len() {
            let Some(conn) = self.slots[slot].as_deref() else {
                continue;
            };
            if overdue {
                cut += usize::from(!conn.st.lingering);
                self.close_conn(slot);
                continue;
            }
            // A lingering connection ends by itself, within lingering_time.
            if conn.st.lingering {
                continue;
            }
            let idle = conn.input.is_empty()
                && conn.pending_output() == 0
                && !conn.held_after_eof
                && !conn.busy
                && posted.binary_search(&conn.id()).is_err()
                && (conn.received || self.tick >= fresh_until)
                && !unread_input(conn);
            if idle {
                self.close_conn(slot);
            }
        }
        if cut > 0 {
            drain.add_cut(cut);
        }
        let done = self.live_conns() == 0 && lock(&self.own.incoming).is_empty();
        if self.own.drained.swap(done, Ordering::SeqCst) != done && done {
            server.wake();
        }
    }

    /// The loop's wait (milliseconds, None: no bound) shortened during a
    /// drain while connections remain, so that the loop sees the deadline
    /// and the end of FRESH_GRACE_MS.
    pub(super) fn drain_wait(&self, wait: Option<u64>) -> Option<u64> {
        if self.graceful.is_none() || self.live_conns() == 0 {
            return wait;
        }
        let bound = self
            .server
            .drain_state()
            .remaining_ms()
            .min(DRAIN_RECHECK_MS);
        Some(wait.map_or(bound, |w| w.min(bound)))
    }
}

/// Whether the peer has sent bytes the loop has not read yet (a request
/// arriving as the drain looks). End-of-input and errors count as none.
fn unread_input(conn: &super::Conn) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    loop {
        match conn
            .socket()
            .recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        {
            Ok(n) => return n > 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}
