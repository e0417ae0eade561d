//! Concurrency models (Python's mix-ins): where an accepted request runs.
//! `Workers` is the model a server was built for, and holds only what it
//! needs. The blocking modes share one accept loop; their `Model` decides
//! whether a request runs inline (sync), on a new thread (threading), in a
//! forked child (forking) or on a pool worker, and the trackers follow
//! those threads and children so that close can wait for them and no
//! zombie is left behind (hand-offs from a handler use the same trackers in
//! every blocking mode). Event mode is the `Event` variant: the loops of
//! `crate::event`, which need no tracker.

mod forking;
mod pool;
mod threading;

use std::cell::Cell;
use std::sync::Arc;

use socket2::{SockAddr, Socket};

use crate::config::{Concurrency, Config};
use crate::drain::ActiveRequests;
use crate::error::Error;
use crate::event::EventLoops;
use crate::handler::{finish_request, run_request};
use crate::peer_limit::PeerPermit;
use crate::request::{HandOff, HandOffTarget, Request};
use crate::server::Server;

pub(crate) use crate::sys::in_forked_child;
pub(crate) use forking::ChildCloses;
use forking::ChildTracker;
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

/// The concurrency model a server was built for, holding only what that
/// model needs: the server loop drives it (see `Server::serve_forever`).
pub(crate) enum Workers {
    /// The blocking modes: one accept loop, and the request runs where the
    /// model says.
    Blocking(Blocking),
    /// Event mode: requests never leave a loop, so no thread or child is
    /// tracked; this is the loops' shared state (connection count,
    /// mailboxes).
    Event(Arc<EventLoops>),
}

/// Where a blocking mode runs a request. Every blocking mode has the
/// hand-off trackers, `threads` and `children`: ss_request_hand_off may
/// move any request to a thread or a child. Threading mode's threads are
/// tracked by the same `threads`.
pub(crate) struct Blocking {
    model: Model,
    threads: ThreadTracker,
    children: ChildTracker,
}

enum Model {
    Sync,
    Threading,
    Forking,
    Pool(ThreadPool),
}

impl Workers {
    pub(crate) fn new(config: &Config) -> Self {
        let model = match config.concurrency {
            Concurrency::Event => return Workers::Event(Arc::default()),
            Concurrency::Sync => Model::Sync,
            Concurrency::Threading => Model::Threading,
            Concurrency::Forking => Model::Forking,
            Concurrency::ThreadPool => Model::Pool(ThreadPool::new(config)),
        };
        Workers::Blocking(Blocking {
            model,
            threads: ThreadTracker::new(config),
            children: ChildTracker::new(config),
        })
    }

    /// The event loops' shared state, in event mode.
    pub(crate) fn events(&self) -> Option<&Arc<EventLoops>> {
        match self {
            Workers::Event(shared) => Some(shared),
            Workers::Blocking(_) => None,
        }
    }

    /// Takes ownership of an accepted request and gets it handled.
    pub(crate) fn process(&self, server: &Arc<Server>, request: Request) {
        let Workers::Blocking(blocking) = self else {
            // Event mode takes no request through here (handle_request is
            // refused there); inline is the safe answer all the same.
            let _ = run_request(server, request);
            return;
        };
        let target = match &blocking.model {
            Model::Threading => HandOffTarget::Thread,
            Model::Forking => HandOffTarget::Fork,
            Model::Pool(pool) => {
                if let Err(not_started) = pool.submit(request) {
                    report_not_started(server, *not_started);
                }
                return;
            }
            Model::Sync => {
                // A failed request was already reported through handle_error.
                let _ = run_request(server, request);
                return;
            }
        };
        let owner = server.clone();
        blocking.spawn_or_report(server, request, move |r| run_request(&owner, r), target);
    }

    /// SS_FORKING over a stream, when the handler verifies no request:
    /// forks the child for an accepted connection before any Request is
    /// made (see ChildTracker::fork_connection); a failure is reported
    /// and the connection closed (None then too). Elsewhere (or with
    /// verify_request, which runs in the parent on a Request) the
    /// connection comes back, to be made a request and dispatched.
    pub(crate) fn fork_connection(
        &self,
        server: &Arc<Server>,
        conn: Socket,
        peer: &SockAddr,
        permit: Option<PeerPermit>,
    ) -> Option<(Socket, Option<PeerPermit>)> {
        let Workers::Blocking(b) = self else {
            return Some((conn, permit));
        };
        if !matches!(b.model, Model::Forking) || server.handler().verifies_requests() {
            return Some((conn, permit));
        }
        if let Err(not_started) = b.children.fork_connection(server, conn, peer, permit) {
            report_not_started(server, *not_started);
        }
        None
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
        match self {
            Workers::Blocking(blocking) if !in_forked_child() => {
                blocking.spawn_or_report(server, request, rest, target)
            }
            // In a forked child, or (never reached: event requests are
            // not handled through `handle`) in event mode: in place.
            _ => {
                let _ = rest(request);
            }
        }
    }

    /// Whether the loop may take another request now (the thread cap, the
    /// pool's queue and max_children); when false the loop stops accepting
    /// for a moment.
    pub(crate) fn has_capacity(&self, server: &Server) -> bool {
        let Workers::Blocking(b) = self else {
            return true;
        };
        // max_children counts fork hand-offs in every blocking mode: at the
        // cap the loop stops accepting, as in forking mode. Reaped here only
        // at the cap: the loop reaps at the end of its turns anyway
        // (Workers::reap_turn).
        if !b.children.has_capacity() {
            b.children.reap(server, false);
            if !b.children.has_capacity() {
                return false;
            }
        }
        match &b.model {
            Model::Threading => b.threads.has_capacity(),
            Model::Pool(pool) => pool.has_capacity(),
            Model::Sync | Model::Forking => true,
        }
    }

    /// Reaps finished children without blocking: on handle_request's
    /// timeout (Python's collect_children; serve_forever's turns reap
    /// through reap_turn).
    pub(crate) fn reap(&self, server: &Server) {
        if let Workers::Blocking(b) = self {
            b.children.reap(server, false);
        }
    }

    /// serve_forever's reaping at the end of a turn: every turn that
    /// waited in poll (or timed out), as `reap`; while turns find their
    /// request already queued (a busy listener) only every
    /// `forking::REAP_EVERY`th (see ChildTracker::reap_turn).
    pub(crate) fn reap_turn(&self, server: &Server, polled: bool) {
        if let Workers::Blocking(b) = self {
            b.children.reap_turn(server, polled);
        }
    }

    /// Server close: with block_on_close, wait for every child and every
    /// non-daemon thread; otherwise only reap the children already done.
    pub(crate) fn close(&self, server: &Server, block_on_close: bool) {
        let Workers::Blocking(b) = self else {
            return;
        };
        if let Model::Pool(pool) = &b.model {
            pool.close(server, block_on_close);
        }
        // Threads before children: a thread still running may yet fork a
        // hand-off child, which close must then wait for too.
        if block_on_close {
            b.threads.wait_idle(server);
        }
        b.children.reap(server, block_on_close);
    }

    /// What a drain still waits for: handler threads (threading mode and
    /// hand-off threads, daemon ones too), pool requests queued or running,
    /// and child processes (reaped first). 0 in event mode.
    pub(crate) fn in_flight(&self, server: &Server) -> usize {
        let Workers::Blocking(b) = self else {
            return 0;
        };
        b.children.reap(server, false);
        let pool = match &b.model {
            Model::Pool(pool) => pool.queued() + pool.running(),
            _ => 0,
        };
        b.threads.live() + b.children.live() + pool
    }

    /// The drain deadline: cuts what is still in flight, and says how
    /// much. Pool requests not yet started are closed unserved; every
    /// stream request open in this process is shut down (both ways), so
    /// that its handler's blocked read sees the end and its writes fail;
    /// child processes are killed (SIGKILL) and reaped.
    pub(crate) fn cut(&self, server: &Server, active: &ActiveRequests) -> usize {
        let Workers::Blocking(b) = self else {
            return 0;
        };
        let mut cut = 0;
        if let Model::Pool(pool) = &b.model {
            cut += pool.drop_queued();
        }
        cut += active.cut_all();
        cut += b.children.kill_all();
        b.children.reap(server, true);
        cut
    }

    /// Live threads and children, for tests and statistics.
    pub(crate) fn live(&self) -> (usize, usize) {
        match self {
            Workers::Blocking(b) => (b.threads.live(), b.children.live()),
            Workers::Event(_) => (0, 0),
        }
    }

    /// Requests waiting in the thread pool's queue.
    pub(crate) fn queued(&self) -> usize {
        match self {
            Workers::Blocking(Blocking {
                model: Model::Pool(pool),
                ..
            }) => pool.queued(),
            _ => 0,
        }
    }
}

impl Blocking {
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
            report_not_started(server, *not_started);
        }
    }
}

/// A request that got no thread or child: reported and closed.
#[cold]
#[inline(never)]
fn report_not_started(server: &Server, (mut request, error): (Request, Error)) {
    server.handler().handle_error(Some(&mut request), &error);
    request.shutdown();
}
