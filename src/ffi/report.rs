//! Failures that user code reports itself: `ss_set_last_error` (the cause
//! a failing callback gives for its non-zero return) and
//! `ss_server_report_error` (handle_error from a callback that has no
//! failure return). What socketserver.hpp turns a C++ exception into.

use std::ffi::{c_char, c_int};

use super::boundary::{
    guard, guard_value, handle_mut, handle_ref, kind_of, last_error, set_last_error, status_of,
    str_arg,
};
use super::{ss_request, ss_server, ss_status};
use crate::error::{Error, Result};

fn failure(status: c_int, message: *const c_char) -> Result<Error> {
    let kind = kind_of(status).ok_or_else(|| {
        Error::invalid(format!(
            "status {status} is not a failure status (1 to {})",
            super::boundary::ALL_STATUSES.len() - 1
        ))
    })?;
    // SAFETY: the caller's NUL-terminated string, per the contract.
    let text = unsafe { str_arg(message, "message") }?;
    Ok(Error::new(kind, text))
}

/// Sets the calling thread's detail message and status as a failed library
/// call would, so that a callback (setup, handle, finish, on_open, on_data,
/// on_datagram) returning non-zero right after is reported to handle_error
/// with `status` and "handle callback returned -1 (last error: MESSAGE)",
/// exactly like a callback failing after a library call failed. Meant for
/// bindings and wrappers that turn an exception into a failed return
/// (socketserver.hpp does). `message` is a NUL-terminated UTF-8 string,
/// copied. ss_last_error_message() then gives `message` and
/// ss_last_os_error() 0. Unlike every other function returning a status,
/// success leaves the message set (it is what was asked for).
///
/// Errors: SS_ERR_INVALID_ARGUMENT when `status` is SS_OK or not a status,
/// or `message` is not UTF-8; SS_ERR_NULL_POINTER for a NULL message (these
/// set the message as usual).
///
/// Thread: any thread; it sets that thread's own message.
#[no_mangle]
pub unsafe extern "C" fn ss_set_last_error(status: c_int, message: *const c_char) -> ss_status {
    // A bad argument is reported as usual (guard_value sets the message).
    match guard_value(None, || failure(status, message).map(Some)) {
        Some(error) => {
            set_last_error(&error);
            ss_status::SS_OK
        }
        None => last_error().map_or(ss_status::SS_ERR_PANIC, |(kind, _)| status_of(kind)),
    }
}

/// Calls `server`'s handle_error (yours, or the default line on stderr
/// or to the log callback) with `request` (NULL for a server-level
/// error), `status` and `message`, as the library does for a failed
/// request: for failures of callbacks that return nothing (verify_request,
/// service_actions, handle_timeout, on_close, on_eof, a posted job), e.g.
/// a C++ exception caught there (socketserver.hpp does). Nothing else
/// happens: the request or connection goes on as the callback's return
/// says. `message` is a NUL-terminated UTF-8 string, borrowed for the call.
///
/// Errors: SS_ERR_NULL_POINTER for a NULL server or message,
/// SS_ERR_INVALID_ARGUMENT when `status` is SS_OK or not a status, or
/// `message` is not UTF-8.
///
/// Thread: with a request, inside a callback given that request (or its
/// hand-off continuation); with NULL, any thread while the server lives
/// (between ss_server_new() and ss_server_free()), also in a forked
/// request child. handle_error runs on the calling thread.
#[no_mangle]
pub unsafe extern "C" fn ss_server_report_error(
    server: *const ss_server,
    request: *mut ss_request,
    status: c_int,
    message: *const c_char,
) -> ss_status {
    guard(|| {
        // SAFETY: a live server per the contract.
        let server = unsafe { handle_ref(server) }?;
        let error = failure(status, message)?;
        let request = if request.is_null() {
            None
        } else {
            // SAFETY: a live request, borrowed by this callback, per the contract.
            Some(unsafe { handle_mut(request) }?)
        };
        server.handler().handle_error(request, &error);
        Ok(())
    })
}
