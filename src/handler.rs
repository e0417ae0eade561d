//! The handler interfaces: `Handler` (Python's BaseRequestHandler plus the
//! server hooks every mode calls) and `EventHandler` (event mode's
//! connection and datagram callbacks), and the fixed order in which a
//! blocking-mode request runs through them.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::address::describe_peer;
use crate::error::{panic_message, Error, ErrorKind, Result};
use crate::event::Conn;
use crate::request::Request;
use crate::server::Server;
use crate::sys::{log_line, LogLevel, RateLimiter};

/// Callbacks that serve requests in the blocking modes, and the server
/// hooks (handle_error, handle_timeout, service_actions) that every mode
/// calls. Every method but `handle` has Python's default behaviour. Methods
/// take `&self` because the threading models call them from several
/// threads at once.
pub trait Handler: Any + Send + Sync {
    /// Python's verify_request: false closes the request unhandled.
    fn verify_request(&self, _request: &mut Request) -> bool {
        true
    }

    /// Whether `verify_request` may refuse a request: true unless the
    /// handler says it never does. False lets SS_FORKING fork before the
    /// request is made, so that the parent writes fewer memory pages per
    /// connection (each a copy-on-write fault while children share them);
    /// verify_request is then not called.
    fn verifies_requests(&self) -> bool {
        true
    }

    fn setup(&self, _request: &mut Request) -> Result<()> {
        Ok(())
    }

    fn handle(&self, request: &mut Request) -> Result<()>;

    /// Runs after `handle`, even when `handle` failed (not when `setup` did).
    fn finish(&self, _request: &mut Request) -> Result<()> {
        Ok(())
    }

    /// Called once per failed request, or with `None` for a server-level
    /// error such as a failing accept. The server keeps serving afterwards.
    fn handle_error(&self, request: Option<&mut Request>, error: &Error) {
        default_handle_error(request.as_deref(), error);
    }

    /// Called when handle_request's timeout passes with no request.
    fn handle_timeout(&self, _server: &Server) {}

    /// Called once per serve_forever loop turn.
    fn service_actions(&self, _server: &Server) {}

    /// The event callbacks, for a handler that serves event mode (it
    /// returns `Some(self)`); a server in event mode needs them.
    fn event_handler(&self) -> Option<&dyn EventHandler> {
        None
    }
}

/// Event mode's callbacks, called on the loop thread that owns the
/// connection; errors and panics still go to the `Handler`'s handle_error.
pub trait EventHandler: Send + Sync {
    /// A new connection. An error closes it at once.
    fn on_open(&self, _conn: &mut Conn) -> Result<()> {
        Ok(())
    }

    /// Bytes received and not yet consumed on `conn`. Returns
    /// how many were consumed; the rest is presented again, with whatever
    /// arrives next. Must not block. An error closes the connection.
    fn on_data(&self, _conn: &mut Conn, _data: &[u8]) -> Result<usize> {
        Err(Error::new(
            ErrorKind::Unsupported,
            "no on_data handler for event mode",
        ))
    }

    /// The peer shut down its sending side. Return true to keep the
    /// connection open until the handler closes it; input held back is
    /// presented to on_data again after each job posted to the connection
    /// has run (the job may be what it waited for). False (the default)
    /// closes it once the queued output is sent.
    fn on_eof(&self, _conn: &mut Conn) -> bool {
        false
    }

    /// Queued output that had reached the high-water mark has fallen to the
    /// low-water mark (once per such crossing): write more, resume reading.
    fn on_drain(&self, _conn: &mut Conn) {}

    /// The connection is closing (peer closed, error, idle
    /// timeout, close asked for, or server stopping).
    fn on_close(&self, _conn: &mut Conn) {}

    /// Datagram transports: one datagram. What the handler
    /// writes to the request is sent back when it returns.
    fn on_datagram(&self, _request: &mut Request) -> Result<()> {
        Err(Error::new(
            ErrorKind::Unsupported,
            "no on_datagram handler for event mode",
        ))
    }
}

/// Lines a second the default handle_error prints, for the whole process:
/// a flooding client must not turn into unbounded log output.
pub const DEFAULT_ERROR_LINES_PER_SECOND: u32 = 20;

static DEFAULT_ERROR_LINES: RateLimiter = RateLimiter::new(DEFAULT_ERROR_LINES_PER_SECOND);

/// Python's handle_error in one line on stderr (or to the log callback,
/// ss_set_log_callback): who, and what went wrong.
/// At most DEFAULT_ERROR_LINES_PER_SECOND lines a second; the next line
/// printed after that is preceded by one that counts those suppressed.
pub fn default_handle_error(request: Option<&Request>, error: &Error) {
    let Some(suppressed) = DEFAULT_ERROR_LINES.admit() else {
        return;
    };
    if suppressed > 0 {
        log_line(
            LogLevel::Warning,
            &format!(
                "socketserver: {suppressed} similar error messages suppressed \
                 (at most {DEFAULT_ERROR_LINES_PER_SECOND} a second are printed)"
            ),
        );
    }
    let line = match request {
        Some(r) => format!(
            "socketserver: error processing request from {}: {error}",
            describe_peer(r.client_address())
        ),
        None => format!("socketserver: server error: {error}"),
    };
    // Not eprintln: its lock may be held forever in a forked child.
    log_line(LogLevel::Error, &line);
}

/// Runs one verified request through the handler, then closes it: Python's
/// `finish_request` and `shutdown_request`, with exactly one close per
/// request. A handle that handed the request off returns at once; the rest
/// runs elsewhere.
pub(crate) fn run_request(server: &Arc<Server>, mut request: Request) -> Result<()> {
    let handler = server.handler();
    if let Err(e) = handler.setup(&mut request) {
        handler.handle_error(Some(&mut request), &e);
        request.shutdown();
        return Err(e);
    }
    request.set_in_handle(true);
    let result = handler.handle(&mut request);
    request.set_in_handle(false);
    match request.take_hand_off() {
        Some(hand_off) if result.is_ok() => {
            server.workers().hand_off(server, request, hand_off);
            Ok(())
        }
        _ => finish_request(handler, request, result),
    }
}

/// The end of every request: finish (even after a failed handle), the
/// datagram reply (sent even after a failed handle, as Python's
/// DatagramRequestHandler.finish sends partial output), one handle_error
/// for the first failure, and the close.
pub(crate) fn finish_request(
    handler: &dyn Handler,
    mut request: Request,
    handled: Result<()>,
) -> Result<()> {
    let finished = handler.finish(&mut request);
    let completed = request.complete();
    let result = handled.and(finished).and(completed);
    if let Err(e) = &result {
        handler.handle_error(Some(&mut request), e);
    }
    request.shutdown();
    result
}

/// A panic on a worker thread, a loop or a forked child is reported
/// through handle_error, never passed on: the server and its other
/// requests go on.
pub(crate) fn report_panic(handler: &dyn Handler, panic: Box<dyn std::any::Any + Send>) {
    let what = panic_message(&*panic);
    let error = Error::new(
        ErrorKind::Panic,
        format!("internal error in a handler thread (panic caught): {what}"),
    );
    handler.handle_error(None, &error);
}

/// Runs `f`; a panic is caught and reported (see [`report_panic`]).
/// None if it panicked.
pub(crate) fn catch_reported<R>(handler: &dyn Handler, f: impl FnOnce() -> R) -> Option<R> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|panic| report_panic(handler, panic))
        .ok()
}
