//! Threading mode (Python's ThreadingMixIn): a thread per request. Threads
//! are detached and only counted, so nothing grows with the number of
//! requests served (CPython's bpo-37193 leaked a list of finished threads).

use crate::handler::catch_reported;
use crate::sync::lock;
use std::any::Any;
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
    /// Start boxes that handler threads emptied and gave back as they
    /// ended, for new threads (see ThreadTracker::spawn). Room for
    /// MAX_SPENT_STARTS is reserved by spawn, so that giving one back never
    /// allocates; beyond, a thread frees its own.
    spent: Vec<Box<dyn Any + Send>>,
}

/// Emptied start boxes kept at most (each a few dozen bytes).
const MAX_SPENT_STARTS: usize = 64;

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
    /// The thread's start box, emptied, given back with the counts.
    spent: Option<Box<dyn Any + Send>>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let mut unkept = None;
        let waited_for = {
            let mut c = lock(&self.counts.0);
            if let Some(spent) = self.spent.take() {
                if c.spent.len() < c.spent.capacity() {
                    c.spent.push(spent);
                } else {
                    unkept = Some(spent);
                }
            }
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
        drop(unkept);
    }
}

/// What a handler thread is given: moved in whole, one allocation (an
/// `Option` in it, so that the thread can empty the box and give it back:
/// see ThreadTracker::spawn).
struct Start<F> {
    finished: Finished,
    request: Request,
    work: F,
}

/// Hands `value` through unchanged: what crosses to a thread through a
/// raw pointer must be Send, which the compiler checks only here.
fn sendable<T: Send>(value: T) -> T {
    value
}

/// Starts a detached thread running `main(arg)` with a stack of
/// `stack_size` bytes; pthread_create's status (0: started).
///
/// # Safety
/// `main` must be sound to call with `arg` on another thread, which then
/// owns whatever `arg` points to.
unsafe fn start_detached(
    stack_size: usize,
    main: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
    arg: *mut libc::c_void,
) -> libc::c_int {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: pthread_attr_init initialises the attribute object we own;
    // the calls after it use it initialised, and it is destroyed last
    // (pthread_create copies what it needs).
    unsafe {
        let rc = libc::pthread_attr_init(attr.as_mut_ptr());
        if rc != 0 {
            return rc;
        }
        let attr = attr.as_mut_ptr();
        let mut rc = libc::pthread_attr_setdetachstate(attr, libc::PTHREAD_CREATE_DETACHED);
        if rc == 0 {
            rc = libc::pthread_attr_setstacksize(attr, stack_size.max(libc::PTHREAD_STACK_MIN));
        }
        if rc == 0 {
            let mut thread: libc::pthread_t = 0;
            rc = libc::pthread_create(&mut thread, attr, main, arg);
        }
        libc::pthread_attr_destroy(attr);
        rc
    }
}

/// A handler thread's entry (pthread_create's start routine, hence the C
/// ABI): runs the request, then `finished` goes down last, so that it holds
/// the thread's last reference to the server (see `Finished`).
extern "C" fn thread_main<F>(arg: *mut libc::c_void) -> *mut libc::c_void
where
    F: FnOnce(Request) -> Result<(), Error> + Send + 'static,
{
    // SAFETY: `arg` is the `Box<Option<Start<F>>>` ThreadTracker::spawn
    // leaked for this thread, which pthread_create started: nothing else
    // uses it.
    let mut slot = unsafe { Box::from_raw(arg.cast::<Option<Start<F>>>()) };
    // A panic must not unwind out of a C-ABI function (that aborts): the
    // work's panics are reported by catch_reported; this catches the rest
    // (none expected: the counts' lock ignores poison), already printed by
    // the panic hook.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let Some(Start {
            mut finished,
            request,
            work,
        }) = slot.take()
        else {
            return;
        };
        {
            let server = finished.server.as_ref().expect("set until drop");
            if finished.joinable {
                set_current_worker(WorkerKind::JoinableThread, server);
            }
            // A failed request was already reported through handle_error.
            catch_reported(server.handler(), || work(request));
        }
        // Given back for the next thread: this one frees nothing.
        finished.spent = Some(slot);
        drop(finished);
    }));
    std::ptr::null_mut()
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
    ///
    /// The thread is a detached pthread started here rather than a
    /// `std::thread`: per connection, std's name, `Thread` handle, result
    /// packet, spawn hooks and thread-local guard key cost five allocations
    /// freed on the new thread (each one then also freed again from its
    /// malloc cache when the thread exits), a prctl(PR_SET_NAME) and a
    /// pthread key walk at exit: most of a short connection's instructions.
    /// Nothing here needs them: the thread is never joined (close waits on
    /// the counts) and a panic is caught in the thread itself.
    pub(crate) fn spawn<F>(
        &self,
        server: &Arc<Server>,
        request: Request,
        work: F,
    ) -> Result<(), super::NotStarted>
    where
        F: FnOnce(Request) -> Result<(), Error> + Send + 'static,
    {
        let joinable = !self.daemon;
        let spent = {
            let mut c = lock(&self.counts.0);
            c.live += 1;
            if joinable {
                c.joinable += 1;
            }
            if c.spent.capacity() == 0 {
                c.spent.reserve_exact(MAX_SPENT_STARTS);
            }
            // One of this thread's type (a hand-off thread's differs).
            let of_type = c.spent.iter().rposition(|b| b.is::<Option<Start<F>>>());
            of_type.map(|i| c.spent.swap_remove(i))
        };
        // A box an earlier thread emptied, if of this type: a handler
        // thread then frees nothing, and this one allocates nothing (glibc
        // sets up a thread's malloc cache at its first malloc or free and
        // tears it down at its exit; with the request's state reused too,
        // see crate::request::SpareStream: ~1,900 of ~6,300 instructions
        // per connection).
        let mut slot: Box<Option<Start<F>>> = spent
            .and_then(|b| b.downcast().ok())
            .unwrap_or_else(|| Box::new(None));
        *slot = Some(Start {
            finished: Finished {
                counts: self.counts.clone(),
                joinable,
                server: Some(server.clone()),
                capped: self.max_threads > 0,
                spent: None,
            },
            request,
            work,
        });
        let start = Box::into_raw(sendable(slot));
        // SAFETY: thread_main::<F> takes `start` back as the
        // Box<Option<Start<F>>> it is, on the new thread, which then owns it
        // alone (Start<F> is Send: `sendable`); if no thread starts, it
        // stays ours.
        let rc = unsafe { start_detached(self.stack_size, thread_main::<F>, start.cast()) };
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: no thread was started, so the box is still ours alone.
        let Some(Start {
            finished, request, ..
        }) = unsafe { Box::from_raw(start) }.take()
        else {
            unreachable!("the start box was filled above");
        };
        // Undoes the counts.
        drop(finished);
        Err(Box::new((
            request,
            Error::spawn(
                "starting a handler thread",
                std::io::Error::from_raw_os_error(rc),
            ),
        )))
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
