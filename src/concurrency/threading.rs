//! Threading mode (Python's ThreadingMixIn): a thread per request. Threads
//! are detached and only counted, so nothing grows with the number of
//! requests served (CPython's bpo-37193 leaked a list of finished threads).

use crate::handler::catch_reported;
use crate::sync::lock;
use std::sync::{Arc, Condvar, Mutex};

use super::{current_worker_is, set_current_worker, WorkerKind};
use crate::config::Config;
use crate::error::Error;
use crate::request::Request;
use crate::server::Server;

#[derive(Default)]
struct Counts {
    /// Every live thread the library started.
    live: usize,
    /// The live ones close waits for (not daemon threads).
    joinable: usize,
    /// Threads in wait_idle: a finishing thread signals the condition
    /// only when there are some (a notify is a futex call each time).
    waiters: usize,
}

pub(crate) struct ThreadTracker {
    counts: Arc<(Mutex<Counts>, Condvar)>,
    daemon: bool,
    max_threads: usize,
    stack_size: usize,
}

/// Decrements the counts when a handler thread ends, however it ends. It
/// holds the thread's last reference to the server and drops it under the
/// counts lock, before close can see the count go down: so when close and
/// free return, no handler thread still holds the server (and the user
/// data's finalizer has run in free, not later on this thread).
struct Finished {
    counts: Arc<(Mutex<Counts>, Condvar)>,
    joinable: bool,
    server: Option<Arc<Server>>,
    capped: bool,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let waited_for = {
            let mut c = lock(&self.counts.0);
            c.live -= 1;
            if self.joinable {
                c.joinable -= 1;
            }
            if let Some(server) = self.server.take() {
                if self.capped || server.draining() {
                    // The loop may be paused at the cap: let it accept
                    // again now (it looks at the counts after this lock);
                    // a drain waits for the count to reach 0.
                    server.wake();
                }
                // For a daemon thread (not waited for) this may be the
                // last reference: the server is then freed here.
                drop(server);
            }
            c.waiters > 0
        };
        if waited_for {
            self.counts.1.notify_all();
        }
    }
}

impl ThreadTracker {
    pub(crate) fn new(config: &Config) -> Self {
        ThreadTracker {
            counts: Arc::new((Mutex::new(Counts::default()), Condvar::new())),
            daemon: config.daemon_threads,
            max_threads: config.max_threads,
            stack_size: config.thread_stack_size,
        }
    }

    /// Runs `work(request)` on a new thread. On failure the request comes
    /// back with the error, for the caller to report and close.
    pub(crate) fn spawn(
        &self,
        server: &Arc<Server>,
        request: Request,
        work: impl FnOnce(Request) -> Result<(), Error> + Send + 'static,
    ) -> Result<(), super::NotStarted> {
        let joinable = !self.daemon;
        {
            let mut c = lock(&self.counts.0);
            c.live += 1;
            if joinable {
                c.joinable += 1;
            }
        }
        let finished = Finished {
            counts: self.counts.clone(),
            joinable,
            server: Some(server.clone()),
            capped: self.max_threads > 0,
        };
        // The request travels through a slot so that it can be given back
        // if the thread cannot be started.
        let slot = Arc::new(Mutex::new(Some(request)));
        let thread_slot = slot.clone();
        let spawned = std::thread::Builder::new()
            .name("ss-handler".into())
            .stack_size(self.stack_size)
            .spawn(move || {
                let finished = finished;
                // Everything else that refers to the server (the request,
                // `work`'s captures) is used and dropped in this block, so
                // that `finished` holds the thread's last reference.
                {
                    let (thread_slot, work) = (thread_slot, work);
                    let server = finished.server.as_ref().expect("set until drop");
                    if joinable {
                        set_current_worker(WorkerKind::JoinableThread, server);
                    }
                    let request = crate::sync::lock(&thread_slot).take();
                    drop(thread_slot);
                    if let Some(request) = request {
                        // A failed request was already reported through handle_error.
                        catch_reported(server.handler(), || work(request));
                    }
                }
                drop(finished);
            });
        match spawned {
            Ok(_) => Ok(()),
            Err(e) => {
                // `finished` went down with the closure and undid the counts.
                let request = crate::sync::lock(&slot).take();
                let request =
                    request.expect("a thread that never started cannot have taken the request");
                Err(Box::new((
                    request,
                    Error::spawn("starting a handler thread", e),
                )))
            }
        }
    }

    pub(crate) fn has_capacity(&self) -> bool {
        self.max_threads == 0 || lock(&self.counts.0).live < self.max_threads
    }

    /// Waits until no joinable thread of `server` but the caller is left.
    pub(crate) fn wait_idle(&self, server: &Server) {
        let own = usize::from(current_worker_is(WorkerKind::JoinableThread, server));
        let mut c = lock(&self.counts.0);
        c.waiters += 1;
        while c.joinable > own {
            c = crate::sync::wait(&self.counts.1, c);
        }
        c.waiters -= 1;
    }

    pub(crate) fn live(&self) -> usize {
        lock(&self.counts.0).live
    }
}
