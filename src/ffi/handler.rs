//! C callbacks as a core `Handler`.

use std::ffi::{c_int, c_void, CString};

use super::boundary::{
    clear_last_error, last_error, last_error_may_be_set, last_os_error, status_of,
};
use super::{ss_conn, ss_request, ss_server, ss_status};
use crate::error::{Error, ErrorKind, Result};
use crate::event::Conn;
use crate::handler::{default_handle_error, EventHandler, Handler};
use crate::request::Request;
use crate::server::Server;

// Every callback type is "C-unwind": a C++ exception thrown through a
// callback is then defined behaviour on the Rust side (it unwinds to the
// nearest catch_unwind, which aborts the process), where through a "C"
// function pointer it would be undefined. The C declaration is the same.

/// A request callback (setup, handle, finish). Return 0 on success; any
/// other value makes the server call handle_error (status SS_ERR_HANDLER)
/// and close the request. `request` is borrowed for the call only.
///
/// Every callback (this and every other ss_*_fn) must return normally:
/// report failure through its return value, never by unwinding or
/// jumping out. A C++ callback must catch every exception itself (wrap its
/// body in `try { ... } catch (...) { return -1; }`): an exception that
/// leaves a callback makes the library abort the process ("Rust cannot
/// catch foreign exceptions"), it is never passed on to the caller of
/// ss_server_serve_forever() or any other function. longjmp() or
/// siglongjmp() out of a callback, and pthread_exit() or thread
/// cancellation inside one, are undefined behaviour: they skip the
/// library's clean-up (locks, descriptors, the request's close).
pub type ss_request_fn =
    Option<unsafe extern "C-unwind" fn(request: *mut ss_request, user_data: *mut c_void) -> c_int>;

/// verify_request: return true to handle the request, false to close it
/// unhandled (setup, handle and finish are then not called).
pub type ss_verify_fn =
    Option<unsafe extern "C-unwind" fn(request: *mut ss_request, user_data: *mut c_void) -> bool>;

/// handle_error: called once for each failed request with the status and a
/// detail message (both borrowed for the call), or with `request` NULL for a
/// server-level error such as a failing accept. The server keeps serving.
pub type ss_error_fn = Option<
    unsafe extern "C-unwind" fn(
        request: *mut ss_request,
        status: ss_status,
        message: *const std::ffi::c_char,
        user_data: *mut c_void,
    ),
>;

/// A server hook (handle_timeout, service_actions); `server` is borrowed.
pub type ss_server_fn =
    Option<unsafe extern "C-unwind" fn(server: *mut ss_server, user_data: *mut c_void)>;

/// SS_EVENT on_open: a new connection. Return 0 to keep it; non-zero
/// closes it (on_close still runs).
pub type ss_open_fn =
    Option<unsafe extern "C-unwind" fn(conn: *mut ss_conn, user_data: *mut c_void) -> c_int>;

/// SS_EVENT on_data: `data`/`len` are all bytes received on `conn` and not
/// yet consumed (borrowed for the call). Store in `*consumed` how many you
/// used (it starts at 0); the rest is presented again, with the next bytes,
/// and at once if you consumed something and room for output remains (so
/// handling one request per call works for pipelined requests), and again
/// after each job posted to the connection, or timer of it, has run (so
/// input held back while waiting for a posted result is not stuck until
/// more arrives). Never called while reading is paused
/// (ss_conn_pause_reading(): held input is presented after
/// ss_conn_resume_reading()). Return 0, or non-zero to close the
/// connection as failed (reported to handle_error with a NULL request).
/// Must not block.
pub type ss_data_fn = Option<
    unsafe extern "C-unwind" fn(
        conn: *mut ss_conn,
        data: *const u8,
        len: usize,
        consumed: *mut usize,
        user_data: *mut c_void,
    ) -> c_int,
>;

/// SS_EVENT on_close: the connection is going away (peer closed or gone,
/// error, idle timeout, request deadline, ss_conn_close() after the output
/// was sent or given up, ss_conn_abort(), a drain (ss_server_drain()), or
/// the server stopping). The last call with this
/// conn: free its user data here. It runs when the connection leaves your
/// view: for a lingering close (ss_config_set_lingering()) when lingering
/// begins, so the socket may still be open, discarding input, for a while
/// afterwards.
pub type ss_close_fn =
    Option<unsafe extern "C-unwind" fn(conn: *mut ss_conn, user_data: *mut c_void)>;

/// SS_EVENT on_eof: the peer shut down its sending side (no more on_data
/// calls). With this callback set the connection then stays open, for
/// output written now or later (e.g. a result posted with
/// ss_server_post()), until you call ss_conn_close() (or an error or the
/// idle timeout closes it, or the peer goes away entirely: a Unix peer
/// closes, a TCP peer resets). Without it, the connection closes as soon
/// as its queued output is sent.
pub type ss_eof_fn =
    Option<unsafe extern "C-unwind" fn(conn: *mut ss_conn, user_data: *mut c_void)>;

/// SS_EVENT on_datagram (datagram transports): one datagram, borrowed for
/// the call. Reply with ss_request_reply(), or with ss_request_write()
/// (sent when the callback returns). Return 0, or non-zero to report the
/// request to handle_error. Must not block.
pub type ss_datagram_fn = Option<
    unsafe extern "C-unwind" fn(
        request: *mut ss_request,
        data: *const u8,
        len: usize,
        user_data: *mut c_void,
    ) -> c_int,
>;

/// SS_EVENT on_drain (ss_config_set_on_drain()): the connection's queued
/// output, having reached the high-water mark
/// (ss_config_set_output_high_water(): a write was refused with
/// SS_ERR_WOULD_BLOCK, or a write left that much queued), has fallen to the
/// low-water mark (ss_config_set_output_low_water(), default 0: all sent).
/// Called once per such crossing, on the connection's loop: never for a
/// connection whose output never reached the high-water mark, and not
/// after ss_conn_close() or ss_conn_abort(). Write more here, or resume
/// reading (ss_conn_resume_reading()). `conn` is borrowed for the call.
pub type ss_drain_fn =
    Option<unsafe extern "C-unwind" fn(conn: *mut ss_conn, user_data: *mut c_void)>;

/// A watched descriptor is ready (ss_conn_watch_fd()): `fd` is the
/// descriptor as you gave it, `events` what is ready (ss_watch_events
/// bits: SS_WATCH_READ, SS_WATCH_WRITE, SS_WATCH_HANGUP, SS_WATCH_ERROR),
/// `data` the pointer given to ss_conn_watch_fd() (not the server's user
/// data). Runs on the connection's loop, with `conn` borrowed for the call;
/// every ss_conn_* call may be used on it. Level-triggered: called again
/// while the descriptor stays ready, so read or write until EAGAIN, or
/// unwatch. A call reporting SS_WATCH_HANGUP or SS_WATCH_ERROR is the
/// last: the watch is removed when it returns (read what is left during
/// that call). Return 0, or non-zero to close the connection as failed
/// (handle_error, as for on_data). Must not block.
pub type ss_watch_fn = Option<
    unsafe extern "C-unwind" fn(
        conn: *mut ss_conn,
        fd: c_int,
        events: c_int,
        data: *mut c_void,
    ) -> c_int,
>;

/// Releases the server's user data; called exactly once.
pub type ss_free_fn = Option<unsafe extern "C-unwind" fn(user_data: *mut c_void)>;

#[derive(Clone, Copy, Default)]
pub(crate) struct Callbacks {
    pub setup: ss_request_fn,
    pub handle: ss_request_fn,
    pub finish: ss_request_fn,
    pub verify_request: ss_verify_fn,
    pub handle_error: ss_error_fn,
    pub handle_timeout: ss_server_fn,
    pub service_actions: ss_server_fn,
    pub on_open: ss_open_fn,
    pub on_data: ss_data_fn,
    pub on_close: ss_close_fn,
    pub on_eof: ss_eof_fn,
    pub on_datagram: ss_datagram_fn,
    pub on_drain: ss_drain_fn,
}

/// The C handler: callbacks plus the user pointer, whose finalizer runs
/// exactly once when the last reference to the server goes away.
pub(crate) struct CHandler {
    callbacks: Callbacks,
    pub(crate) user_data: *mut c_void,
    free_user_data: ss_free_fn,
}

// SAFETY: the header documents that callbacks and the user pointer may be
// used from whichever thread (or child process) the concurrency model runs
// requests on; making them safe for that is the C caller's contract.
unsafe impl Send for CHandler {}
// SAFETY: as above; the handler holds no Rust state that needs a lock.
unsafe impl Sync for CHandler {}

impl CHandler {
    pub(crate) fn new(user_data: *mut c_void, free_user_data: ss_free_fn) -> Self {
        CHandler {
            callbacks: Callbacks::default(),
            user_data,
            free_user_data,
        }
    }

    pub(crate) fn set_callbacks(&mut self, callbacks: Callbacks) {
        self.callbacks = callbacks;
    }

    fn call_request(&self, stage: &str, cb: ss_request_fn, request: &mut Request) -> Result<()> {
        call_request_fn(stage, cb, request, self.user_data)
    }

    fn call_server(&self, cb: ss_server_fn, server: &Server) {
        if let Some(cb) = cb {
            // SAFETY: the server outlives the call; C gets the same pointer
            // ss_server_new returned.
            unsafe { cb(server as *const Server as *mut ss_server, self.user_data) }
        }
    }
}

/// Calls a C request callback and turns a non-zero return into an error
/// that says which callback failed and, if a library call failed just
/// before, why.
pub(crate) fn call_request_fn(
    stage: &str,
    cb: ss_request_fn,
    request: &mut Request,
    user_data: *mut c_void,
) -> Result<()> {
    let Some(cb) = cb else { return Ok(()) };
    clear_last_error();
    // SAFETY: the C callback gets a pointer to a live request for the
    // duration of the call, as the header documents.
    let rc = unsafe { cb(request_ptr(request), user_data) };
    if rc == 0 {
        return Ok(());
    }
    Err(callback_failed(stage, rc))
}

/// The error for a callback that returned `rc` != 0. If a library call
/// failed just before on this thread, that is the real cause: report its
/// status (e.g. SS_ERR_TIMEOUT) and say so. The caller cleared the last
/// error before the call. Out of line: the callers are on hot paths.
#[cold]
#[inline(never)]
pub(crate) fn callback_failed(stage: &str, rc: c_int) -> Error {
    match last_error().filter(|(_, text)| !text.is_empty()) {
        Some((kind, text)) => Error::new(
            kind,
            format!("{stage} callback returned {rc} (last error: {text})"),
        )
        .with_os_error(Some(last_os_error())),
        None => Error::new(
            ErrorKind::Handler,
            format!("{stage} callback returned {rc}"),
        ),
    }
}

pub(crate) fn request_ptr(request: &mut Request) -> *mut ss_request {
    request as *mut Request as *mut ss_request
}

impl Handler for CHandler {
    fn verify_request(&self, request: &mut Request) -> bool {
        match self.callbacks.verify_request {
            // SAFETY: a live request, borrowed for the call.
            Some(cb) => unsafe { cb(request_ptr(request), self.user_data) },
            None => true,
        }
    }

    fn verifies_requests(&self) -> bool {
        self.callbacks.verify_request.is_some()
    }

    fn setup(&self, request: &mut Request) -> Result<()> {
        self.call_request("setup", self.callbacks.setup, request)
    }

    fn handle(&self, request: &mut Request) -> Result<()> {
        self.call_request("handle", self.callbacks.handle, request)
    }

    fn finish(&self, request: &mut Request) -> Result<()> {
        self.call_request("finish", self.callbacks.finish, request)
    }

    fn handle_error(&self, request: Option<&mut Request>, error: &Error) {
        let Some(cb) = self.callbacks.handle_error else {
            return default_handle_error(request.as_deref(), error);
        };
        let message = CString::new(error.message().replace('\0', " ")).unwrap_or_default();
        let ptr = request.map_or(std::ptr::null_mut(), request_ptr);
        // SAFETY: request (or NULL) and message are live for the call.
        unsafe {
            cb(
                ptr,
                status_of(error.kind()),
                message.as_ptr(),
                self.user_data,
            )
        }
    }

    fn handle_timeout(&self, server: &Server) {
        self.call_server(self.callbacks.handle_timeout, server);
    }

    fn service_actions(&self, server: &Server) {
        self.call_server(self.callbacks.service_actions, server);
    }

    fn event_handler(&self) -> Option<&dyn EventHandler> {
        Some(self)
    }
}

impl EventHandler for CHandler {
    fn on_open(&self, conn: &mut Conn) -> Result<()> {
        let Some(cb) = self.callbacks.on_open else {
            return Ok(());
        };
        clear_last_error();
        // SAFETY: a live connection, borrowed for the call.
        match unsafe { cb(conn_ptr(conn), self.user_data) } {
            0 => Ok(()),
            rc => Err(callback_failed("on_open", rc)),
        }
    }

    fn on_data(&self, conn: &mut Conn, data: &[u8]) -> Result<usize> {
        let Some(cb) = self.callbacks.on_data else {
            return Err(no_callback("on_data"));
        };
        if last_error_may_be_set() {
            return self.on_data_clearing(cb, conn, data);
        }
        self.call_on_data(cb, conn, data)
    }

    fn on_eof(&self, conn: &mut Conn) -> bool {
        let Some(cb) = self.callbacks.on_eof else {
            return false;
        };
        // SAFETY: a live connection, borrowed for the call.
        unsafe { cb(conn_ptr(conn), self.user_data) };
        true
    }

    fn on_close(&self, conn: &mut Conn) {
        if let Some(cb) = self.callbacks.on_close {
            // SAFETY: a live connection, borrowed for the call.
            unsafe { cb(conn_ptr(conn), self.user_data) }
        }
    }

    fn on_drain(&self, conn: &mut Conn) {
        if let Some(cb) = self.callbacks.on_drain {
            // SAFETY: a live connection, borrowed for the call.
            unsafe { cb(conn_ptr(conn), self.user_data) }
        }
    }

    fn on_datagram(&self, request: &mut Request) -> Result<()> {
        let Some(cb) = self.callbacks.on_datagram else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "no on_datagram callback",
            ));
        };
        let (data, len) = request
            .datagram_data()
            .map_or((std::ptr::null(), 0), |d| (d.as_ptr(), d.len()));
        clear_last_error();
        // SAFETY: the request and its datagram are live for the call.
        match unsafe { cb(request_ptr(request), data, len, self.user_data) } {
            0 => Ok(()),
            rc => Err(callback_failed("on_datagram", rc)),
        }
    }
}

/// ss_data_fn's function.
type DataFn =
    unsafe extern "C-unwind" fn(*mut ss_conn, *const u8, usize, *mut usize, *mut c_void) -> c_int;

impl CHandler {
    /// on_data's call (every request goes through it: no call before the
    /// callback's, so that nothing needs saving around one).
    #[inline(always)]
    fn call_on_data(&self, cb: DataFn, conn: &mut Conn, data: &[u8]) -> Result<usize> {
        let mut consumed = 0usize;
        // SAFETY: connection, data and `consumed` are live for the call.
        let rc = unsafe {
            cb(
                conn_ptr(conn),
                data.as_ptr(),
                data.len(),
                &mut consumed,
                self.user_data,
            )
        };
        if rc != 0 {
            return Err(callback_failed("on_data", rc));
        }
        Ok(consumed)
    }

    /// on_data when this or another thread may hold a last error: cleared
    /// first, so that a failure is only blamed on a library call made
    /// during the callback.
    #[inline(never)]
    fn on_data_clearing(&self, cb: DataFn, conn: &mut Conn, data: &[u8]) -> Result<usize> {
        clear_last_error();
        self.call_on_data(cb, conn, data)
    }
}

#[cold]
fn no_callback(name: &'static str) -> Error {
    Error::new(ErrorKind::Unsupported, format!("no {name} callback"))
}

pub(crate) fn conn_ptr(conn: &mut Conn) -> *mut ss_conn {
    conn as *mut Conn as *mut ss_conn
}

impl Drop for CHandler {
    fn drop(&mut self) {
        if let Some(free) = self.free_user_data.take() {
            // SAFETY: the finalizer the caller gave for this pointer; `take`
            // makes sure it runs once.
            unsafe { free(self.user_data) }
        }
    }
}
