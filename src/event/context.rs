//! What a loop thread knows about itself while it runs user callbacks, for
//! the connection calls that need more than their `Conn`: the server
//! (ss_conn_server), the loop's epoll (ss_conn_watch_fd), and which
//! connection's failure handle_error is reporting (ss_error_conn).
//! Thread-locals rather than fields of every `Conn`: an idle connection
//! stays small, and a call from a thread that is not the connection's
//! loop finds no context (or another loop's) and is refused.

use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::Arc;

use nix::sys::epoll::Epoll;

use super::conn::Conn;
use super::ID_LOOP_SHIFT;
use crate::server::Server;

pub(crate) struct LoopContext {
    pub(crate) index: u8,
    pub(crate) server: Arc<Server>,
    pub(crate) epoll: Arc<Epoll>,
    /// Serial of the next watch token (see watch.rs).
    pub(crate) next_watch: Cell<u64>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<LoopContext>>> = const { RefCell::new(None) };
    static FAILING: Cell<Option<NonNull<Conn>>> = const { Cell::new(None) };
}

/// The loop's context is set while this lives (the loop thread's whole
/// run, recovery after a panic included).
pub(crate) struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

pub(crate) fn enter(index: u8, server: Arc<Server>, epoll: Arc<Epoll>) -> Entered {
    let context = LoopContext {
        index,
        server,
        epoll,
        next_watch: Cell::new(0),
    };
    CURRENT.with(|c| *c.borrow_mut() = Some(Rc::new(context)));
    Entered(())
}

/// The context of the loop that owns `conn`, if this thread is that loop.
pub(crate) fn of_conn(conn: &Conn) -> Option<Rc<LoopContext>> {
    let index = (conn.id() >> ID_LOOP_SHIFT) as u8;
    CURRENT
        .with(|c| c.borrow().clone())
        .filter(|context| context.index == index)
}

impl Conn {
    /// Calls `f` with the server this connection belongs to, when called on
    /// the connection's loop thread (None elsewhere).
    pub fn with_server<R>(&self, f: impl FnOnce(&Arc<Server>) -> R) -> Option<R> {
        of_conn(self).map(|context| f(&context.server))
    }
}

/// Runs `report` (a handle_error call) with `conn` named as the failing
/// connection (see `failing_conn`).
pub(crate) fn reporting<R>(conn: &mut Conn, report: impl FnOnce() -> R) -> R {
    struct Restore(Option<NonNull<Conn>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FAILING.with(|f| f.set(self.0));
        }
    }
    let _restore = Restore(FAILING.with(|f| f.replace(Some(NonNull::from(conn)))));
    report()
}

/// While handle_error reports an event connection's failure on this
/// thread: that connection (live until handle_error returns; its on_close
/// has not run yet). None otherwise.
pub fn failing_conn() -> Option<NonNull<Conn>> {
    FAILING.with(|f| f.get())
}
