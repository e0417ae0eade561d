//! Concurrency models (Python's mix-ins): where an accepted request runs.
//! The server loop is the same for every model; `Workers` decides whether a
//! request runs inline (sync), on a new thread (threading) or in a forked
//! child (forking), and tracks those threads and children so that close can
//! wait for them and no zombie is left behind. Hand-offs from a handler use
//! the same trackers in every mode.

mod forking;
mod pool;
mod threading;

use std::cell::Cell;
use std::sync::Arc;

use crate::config::{Concurrency, Config};
use crate::error::Error;
use crate::event::EventShared;
use crate::handler::{finish_request, run_request};
use crate::request::{HandOff, HandOffTarget, Request};
use crate::server::Server;

use forking::ChildTracker;
pub(crate) use forking::{in_forked_child, ChildCloses};
use pool::ThreadPool;
use threading::ThreadTracker;

/// What the current thread is to the library, and for which server: close
/// must not wait for the thread calling it (that would wait for itself),
/// but must still wait for the workers of a server it merely touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkerKind {
    None,
    /// A threading-mode or hand-off thread that close waits for.
    JoinableThread,
    PoolWorker,
    EventLoop,
}

thread_local! {
    static CURRENT_WORKER: Cell<(WorkerKind, usize)> = const { Cell::new((WorkerKind::None, 0)) };
}

pub(crate) fn set_current_worker(kind: WorkerKind, server: &Server) {
    CURRENT_WORKER.with(|w| w.set((kind, server as *const Server as usize)));
}

pub(crate) fn current_worker_is(kind: WorkerKind, server: &Server) -> bool {
    CURRENT_WORKER.with(|w| w.get()) == (kind, server as *const Server as usize)
}

/// A request whose thread or child could not be started, and why.
pub(crate) type NotStarted = Box<(Request, Error)>;

pub(crate) struct Workers {
    mode: Concurrency,
    threads: ThreadTracker,
    children: ChildTracker,
    pool: Option<ThreadPool>,
    events: Arc<EventShared>,
}

impl Workers {
    pub(crate) fn new(config: &Config) -> Self {
        Workers {
            mode: config.concurrency,
            threads: ThreadTracker::new(config),
            children: ChildTracker::new(config),
            pool: (config.concurrency == Concurrency::ThreadPool).then(|| ThreadPool::new(config)),
            events: Arc::default(),
        }
    }

    /// Takes ownership of an accepted request and gets it handled.
    pub(crate) fn process(&self, server: &Arc<Server>, request: Request) {
        match self.mode {
            Concurrency::Threading => {
                let owner = server.clone();
                self.spawn_or_report(
                    server,
                    request,
                    move |r| run_request(&owner, r),
                    HandOffTarget::Thread,
                );
            }
            Concurrency::Forking => {
                let owner = server.clone();
                self.spawn_or_report(
                    server,
                    request,
                    move |r| run_request(&owner, r),
                    HandOffTarget::Fork,
                );
            }
            Concurrency::ThreadPool => {
                if let Some(Err(not_started)) = self.pool.as_ref().map(|p| p.submit(request)) {
                    let (mut request, error) = *not_started;
                    server.handler().handle_error(Some(&mut request), &error);
                    request.shutdown();
                }
            }
            _ => {
                // A failed request was already reported through handle_error.
                let _ = run_request(server, request);
            }
        }
    }

    /// Runs the rest of a handed-off request: its continuation, then finish
    /// and close, on a new thread or in a forked child. Inside a forked
    /// child the request already has a process of its own, so it continues
    /// in place (a thread there would die with the child's `_exit`).
    pub(crate) fn hand_off(&self, server: &Arc<Server>, request: Request, hand_off: HandOff) {
        let HandOff {
            target,
            continuation,
        } = hand_off;
        let owner = server.clone();
        let rest = move |mut r: Request| {
            let result = continuation(&mut r);
            finish_request(owner.handler(), r, result)
        };
        if in_forked_child() {
            let _ = rest(request);
            return;
        }
        self.spawn_or_report(server, request, rest, target);
    }

    /// Starts `work` on a thread or in a child; if that fails, the request
    /// is reported to handle_error and closed (Python's process_request
    /// failing inside _handle_request_noblock).
    fn spawn_or_report(
        &self,
        server: &Arc<Server>,
        request: Request,
        work: impl FnOnce(Request) -> Result<(), Error> + Send + 'static,
        target: HandOffTarget,
    ) {
        let failed: Result<(), NotStarted> = match target {
            HandOffTarget::Thread => self.threads.spawn(server, request, work),
            HandOffTarget::Fork => self.children.fork(request, work),
        };
        if let Err(not_started) = failed {
            let (mut request, error) = *not_started;
            server.handler().handle_error(Some(&mut request), &error);
            request.shutdown();
        }
    }

    /// Whether the loop may take another request now (the thread cap, the
    /// pool's queue and max_children); when false the loop stops accepting
    /// for a moment.
    pub(crate) fn has_capacity(&self, server: &Server) -> bool {
        // max_children counts fork hand-offs in every mode: at the cap the
        // loop stops accepting, as in forking mode.
        self.children.reap(server, false);
        if !self.children.has_capacity() {
            return false;
        }
        match self.mode {
            Concurrency::Threading => self.threads.has_capacity(),
            Concurrency::ThreadPool => self.pool.as_ref().is_none_or(|p| p.has_capacity()),
            _ => true,
        }
    }

    /// Reaps finished children without blocking: every loop turn and on
    /// handle_request's timeout (Python's collect_children).
    pub(crate) fn reap(&self, server: &Server) {
        self.children.reap(server, false);
    }

    /// Server close: with block_on_close, wait for every child and every
    /// non-daemon thread; otherwise only reap the children already done.
    pub(crate) fn close(&self, server: &Server, block_on_close: bool) {
        if let Some(pool) = &self.pool {
            pool.close(server, block_on_close);
        }
        // Threads before children: a thread still running may yet fork a
        // hand-off child, which close must then wait for too.
        if block_on_close {
            self.threads.wait_idle(server);
        }
        self.children.reap(server, block_on_close);
    }

    /// Live threads and children, for tests and statistics.
    pub(crate) fn live(&self) -> (usize, usize) {
        (self.threads.live(), self.children.live())
    }

    /// The event loops' shared state (connection count, mailboxes).
    pub(crate) fn events(&self) -> Arc<EventShared> {
        self.events.clone()
    }

    /// Requests waiting in the thread pool's queue.
    pub(crate) fn queued(&self) -> usize {
        self.pool.as_ref().map_or(0, |p| p.queued())
    }
}
