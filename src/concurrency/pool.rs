//! Thread pool mode: a fixed number of worker threads take accepted
//! requests from a bounded queue and run the same blocking handlers as
//! threading mode. When the queue is full the server stops accepting
//! (connections wait in the kernel's backlog), so memory stays bounded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::{current_worker_is, set_current_worker, NotStarted, WorkerKind};
use crate::config::Config;
use crate::error::Error;
use crate::handler::catch_reported;
use crate::handler::run_request;
use crate::request::Request;
use crate::server::Server;

struct PoolState {
    queue: VecDeque<Request>,
    stopping: bool,
}

struct Shared {
    state: Mutex<PoolState>,
    work_ready: Condvar,
    capacity: usize,
    /// Requests a worker has taken and not yet finished (for a drain).
    running: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        crate::sync::lock(&self.state)
    }
}

pub(crate) struct ThreadPool {
    shared: Arc<Shared>,
    size: usize,
    stack_size: usize,
    /// Started on the first request, so a server that never serves costs
    /// no threads.
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl ThreadPool {
    pub(crate) fn new(config: &Config) -> Self {
        ThreadPool {
            shared: Arc::new(Shared {
                state: Mutex::new(PoolState {
                    queue: VecDeque::with_capacity(config.queue_size),
                    stopping: false,
                }),
                work_ready: Condvar::new(),
                capacity: config.queue_size,
                running: AtomicUsize::new(0),
            }),
            size: config.threads(),
            stack_size: config.thread_stack_size,
            workers: Mutex::new(Vec::new()),
        }
    }

    fn start_workers(&self) -> std::io::Result<()> {
        let mut workers = crate::sync::lock(&self.workers);
        while workers.len() < self.size {
            let shared = self.shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ss-pool-{}", workers.len()))
                .stack_size(self.stack_size)
                .spawn(move || work(&shared))?;
            workers.push(handle);
        }
        Ok(())
    }

    /// Queues a request for the workers.
    pub(crate) fn submit(&self, request: Request) -> Result<(), NotStarted> {
        if let Err(e) = self.start_workers() {
            // Serve with the workers that did start; fail only with none.
            if crate::sync::lock(&self.workers).is_empty() {
                return Err(Box::new((
                    request,
                    Error::spawn("starting the worker threads", e),
                )));
            }
        }
        self.shared.lock().queue.push_back(request);
        self.shared.work_ready.notify_one();
        Ok(())
    }

    pub(crate) fn has_capacity(&self) -> bool {
        self.shared.lock().queue.len() < self.shared.capacity
    }

    /// Requests queued and not yet taken by a worker.
    pub(crate) fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Requests taken by a worker and not yet finished.
    pub(crate) fn running(&self) -> usize {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// The drain deadline: closes the queued requests unserved; how many.
    pub(crate) fn drop_queued(&self) -> usize {
        let dropped: Vec<Request> = self.shared.lock().queue.drain(..).collect();
        let n = dropped.len();
        for request in dropped {
            request.shutdown();
        }
        n
    }

    /// Stops the pool. With `block`, the queued requests are still served
    /// and every worker is joined; without, queued requests are closed
    /// unserved and running ones finish on their own.
    pub(crate) fn close(&self, server: &Server, block: bool) {
        let dropped: Vec<Request> = {
            let mut st = self.shared.lock();
            st.stopping = true;
            if block {
                Vec::new()
            } else {
                st.queue.drain(..).collect()
            }
        };
        for request in dropped {
            request.shutdown();
        }
        self.shared.work_ready.notify_all();
        let workers = std::mem::take(&mut *crate::sync::lock(&self.workers));
        if block {
            // A worker closing its own server cannot join itself: its
            // handle is put back, for a later close from another thread to
            // join (it ends on its own once it returns to the empty,
            // stopping queue); it still joins every other worker.
            let me = std::thread::current().id();
            let own = current_worker_is(WorkerKind::PoolWorker, server);
            for worker in workers {
                if own && worker.thread().id() == me {
                    crate::sync::lock(&self.workers).push(worker);
                } else {
                    let _ = worker.join();
                }
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.work_ready.notify_all();
    }
}

fn work(shared: &Shared) {
    loop {
        let (request, was_full) = {
            let mut st = shared.lock();
            loop {
                if let Some(request) = st.queue.pop_front() {
                    // Counted before the lock is released: a drain never
                    // sees the request neither queued nor running.
                    shared.running.fetch_add(1, Ordering::SeqCst);
                    break (request, st.queue.len() + 1 >= shared.capacity);
                }
                if st.stopping {
                    return;
                }
                st = crate::sync::wait(&shared.work_ready, st);
            }
        };
        let server = request.server().clone();
        set_current_worker(WorkerKind::PoolWorker, &server);
        if was_full {
            // The loop may be paused on a full queue: room again.
            server.wake();
        }
        // A failed request was already reported through handle_error; a
        // panic is reported too, and the worker lives on.
        catch_reported(server.handler(), || run_request(&server, request));
        shared.running.fetch_sub(1, Ordering::SeqCst);
        if server.draining() {
            // A drain waits for this: look again now.
            server.wake();
        }
    }
}
