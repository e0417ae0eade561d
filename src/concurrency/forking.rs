//! Forking mode (Python's ForkingMixIn): a child process per request. The
//! child runs the request and leaves with `_exit` (0 on success, 1 after a
//! handler error, 2 after a caught panic); the parent closes its copy of the
//! connection at once and reaps its own children by pid, never with
//! waitpid(-1), so children the host program forked itself are left alone.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::peer_limit::PeerPermit;
use crate::request::Request;
use crate::server::Server;

use super::threading::report_panic;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A list cannot be left half-updated by a panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// True in a child forked by this library (set right after fork).
static IN_FORKED_CHILD: AtomicBool = AtomicBool::new(false);

pub(crate) fn in_forked_child() -> bool {
    IN_FORKED_CHILD.load(Ordering::Relaxed)
}

pub(crate) struct ChildTracker {
    pids: Mutex<Vec<libc::pid_t>>,
    max_children: usize,
    /// Per-IP places of the children's connections, freed when the child
    /// is reaped: the parent's copy of the request is gone at fork.
    permits: Mutex<Vec<(libc::pid_t, PeerPermit)>>,
}

impl ChildTracker {
    pub(crate) fn new(config: &Config) -> Self {
        ChildTracker {
            pids: Mutex::new(Vec::new()),
            max_children: config.max_children,
            permits: Mutex::new(Vec::new()),
        }
    }

    fn pids(&self) -> MutexGuard<'_, Vec<libc::pid_t>> {
        // A list of pids cannot be left half-updated by a panic.
        self.pids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `work(request)` in a new child process. The parent's copy of the
    /// request is dropped, which closes its fd without shutting the
    /// connection down (the child does that). On failure the request comes
    /// back with the error.
    pub(crate) fn fork(
        &self,
        mut request: Request,
        work: impl FnOnce(Request) -> Result<(), Error> + Send + 'static,
    ) -> Result<(), super::NotStarted> {
        // Taken before fork: the child never drops it (it leaves by _exit).
        let permit = request.take_peer_permit();
        // SAFETY: fork has no memory-safety preconditions. In the child only
        // this thread exists; it runs the request and leaves with `_exit`,
        // never returning into code that might wait for the other threads'
        // locks held at fork time (what remains unsafe is documented for C
        // handlers in the header).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Box::new((request, Error::last_os("fork"))));
        }
        if pid == 0 {
            IN_FORKED_CHILD.store(true, Ordering::Relaxed);
            let server = request.server().clone();
            let status = match catch_unwind(AssertUnwindSafe(|| work(request))) {
                Ok(Ok(())) => 0,
                // Already reported through handle_error, in this child.
                Ok(Err(_)) => 1,
                Err(panic) => {
                    report_panic(&server, panic);
                    2
                }
            };
            // SAFETY: `_exit` ends the child without running atexit handlers
            // or flushing stdio buffers inherited from the parent (Python's
            // os._exit), so nothing of the parent's runs twice.
            unsafe { libc::_exit(status) }
        }
        self.pids().push(pid);
        if let Some(permit) = permit {
            lock(&self.permits).push((pid, permit));
        }
        drop(request);
        Ok(())
    }

    pub(crate) fn has_capacity(&self) -> bool {
        self.pids().len() < self.max_children
    }

    pub(crate) fn live(&self) -> usize {
        self.pids().len()
    }

    /// Reaps finished children (all of them, waiting, when `block`), and
    /// reports a child that a signal killed through handle_error.
    pub(crate) fn reap(&self, server: &Server, block: bool) {
        let mut pids = self.pids();
        let mut crashed = Vec::new();
        pids.retain(|&pid| {
            let mut status = 0;
            loop {
                let flags = if block { 0 } else { libc::WNOHANG };
                // SAFETY: waits for one of our own children; `status` is a
                // live local.
                let r = unsafe { libc::waitpid(pid, &mut status, flags) };
                if r == 0 {
                    return true; // still running
                }
                if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                // Reaped (or ECHILD: someone else reaped it; either way gone).
                if r == pid && libc::WIFSIGNALED(status) {
                    crashed.push((pid, libc::WTERMSIG(status)));
                }
                return false;
            }
        });
        lock(&self.permits).retain(|(pid, _)| pids.contains(pid));
        drop(pids);
        for (pid, signal) in crashed {
            let error = Error::new(
                ErrorKind::Handler,
                format!("request child process {pid} was killed by signal {signal}"),
            );
            server.handler().handle_error(None, &error);
        }
    }
}
