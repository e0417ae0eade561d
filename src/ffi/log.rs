//! `ss_set_log_callback`: where the library's own output goes (the default
//! handle_error's lines, the line that counts suppressed ones, a refused
//! ss_server_free, the message of a caught panic) instead of stderr.
//!
//! Process-wide, not per config: some of these lines belong to no server
//! (a free that was refused, a panic), and the rate limit of the default
//! handle_error is process-wide too.
//!
//! The callback and its user data are one heap pair behind an atomic
//! pointer, read without a lock (logging stays safe in a forked child and
//! never waits). Readers count themselves in one of two counters, chosen
//! by an epoch; the setter swaps the pointer, moves the epoch on and waits
//! until the counter of the old epoch is 0, so that when
//! ss_set_log_callback() returns no call of the previous callback is still
//! running and none will start: its user data may be freed. New calls go
//! to the other counter meanwhile, so a setter never waits for callbacks
//! that started after it.

use std::cell::Cell;
use std::ffi::{c_char, c_void, CString};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use super::boundary::guard;
use super::ss_status;
use crate::error::Error;
use crate::sys::LogLevel;

/// How serious a log line is. The numbers are syslog's priorities
/// (LOG_ERR, LOG_WARNING), so a callback may pass them to syslog()
/// directly; more levels may come, with syslog's numbers.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ss_log_level {
    /// A failure: the default handle_error's lines (a failed request, a
    /// server-level error, a caught panic), a refused ss_server_free(), a
    /// panic's message.
    SS_LOG_ERROR = 3,
    /// Not a failure itself, e.g. "socketserver: N similar error messages
    /// suppressed".
    SS_LOG_WARNING = 4,
}

/// A log callback (ss_set_log_callback()): one line, `message` a
/// NUL-terminated UTF-8 string without a trailing newline, borrowed for the
/// call. It may be called from any of the library's threads, several at
/// once, and in forked request children (see the fork notes at
/// SS_FORKING): make it thread-safe, keep it short, and do not call
/// ss_set_log_callback() from it (refused). Library calls it makes that
/// log go to stderr, not back to the callback. Like every callback it must
/// return normally: a C++ exception leaving it aborts the process.
pub type ss_log_fn = Option<
    unsafe extern "C-unwind" fn(
        level: ss_log_level,
        message: *const c_char,
        user_data: *mut c_void,
    ),
>;

type LogFn = unsafe extern "C-unwind" fn(
    level: ss_log_level,
    message: *const c_char,
    user_data: *mut c_void,
);

struct Sink {
    log: LogFn,
    user_data: *mut c_void,
}

/// The callback set, or NULL for stderr. A pointer from Box::into_raw,
/// freed by the setter that replaced it once no reader holds it.
static SINK: AtomicPtr<Sink> = AtomicPtr::new(ptr::null_mut());
static EPOCH: AtomicUsize = AtomicUsize::new(0);
/// Readers inside, by the parity of the epoch they entered in.
static READERS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
/// One setter at a time.
static SETTER: Mutex<()> = Mutex::new(());

thread_local! {
    /// True while this thread runs the log callback.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// A reader counted in: leaves on drop (also when the callback unwinds).
struct Reader(usize);

impl Reader {
    fn enter() -> Reader {
        loop {
            let epoch = EPOCH.load(Ordering::SeqCst);
            let slot = epoch % 2;
            READERS[slot].fetch_add(1, Ordering::SeqCst);
            if EPOCH.load(Ordering::SeqCst) == epoch {
                return Reader(slot);
            }
            // A setter moved the epoch on meanwhile: count in the new one.
            READERS[slot].fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        READERS[self.0].fetch_sub(1, Ordering::SeqCst);
    }
}

struct InCallback;

impl InCallback {
    fn enter() -> InCallback {
        IN_CALLBACK.set(true);
        InCallback
    }
}

impl Drop for InCallback {
    fn drop(&mut self) {
        IN_CALLBACK.set(false);
    }
}

fn in_callback() -> bool {
    // A thread being torn down counts as inside: it logs to stderr.
    IN_CALLBACK.try_with(Cell::get).unwrap_or(true)
}

/// The hook crate::sys::log_line offers every line to: true if the
/// callback took it.
fn dispatch(level: LogLevel, text: &str) -> bool {
    if in_callback() {
        return false;
    }
    let _reader = Reader::enter();
    let sink = SINK.load(Ordering::SeqCst);
    // SAFETY: a non-NULL SINK is a live Box: the setter that replaces it
    // frees it only after every reader counted in before the swap (this
    // one included) has left.
    let Some(sink) = (unsafe { sink.as_ref() }) else {
        return false;
    };
    let message = CString::new(text.replace('\0', " ")).unwrap_or_default();
    let level = match level {
        LogLevel::Error => ss_log_level::SS_LOG_ERROR,
        LogLevel::Warning => ss_log_level::SS_LOG_WARNING,
    };
    let _inside = InCallback::enter();
    // SAFETY: the caller's callback with its own pointer; the message is
    // live for the call.
    unsafe { (sink.log)(level, message.as_ptr(), sink.user_data) };
    true
}

/// The panic message too goes to the callback once one is set (Rust's
/// default hook writes it to stderr); without a callback the previous hook
/// runs as before.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !dispatch(LogLevel::Error, &format!("socketserver: {info}")) {
                previous(info);
            }
        }));
    });
}

/// Sends the library's own output — the lines the default handle_error
/// writes (failed requests, server-level errors, caught panics), the line
/// counting the ones its rate limit suppressed, a refused ss_server_free(),
/// and the message of a panic caught inside the library — to `log(level,
/// message, user_data)` instead of stderr, for the whole process (one
/// setting, not per config: some of these lines belong to no server).
/// NULL `log` restores the default, stderr (`user_data` is then ignored).
/// The default handle_error's limit of 20 lines a second applies whatever
/// the destination; a handle_error of your own replaces those lines
/// altogether.
///
/// Ownership: `user_data` stays the caller's; the library only passes it
/// to `log`. When this returns, no call of the previous callback is
/// running any more and none will start (it waits for calls in progress
/// on other threads), so the previous user data may be freed. Because it
/// waits for those calls, do not call it while holding a lock that the
/// callback takes.
///
/// Errors: SS_ERR_WRONG_STATE from inside the log callback (on that
/// thread) and in a forked request child.
///
/// Thread: any thread, also while servers run; not from inside the log
/// callback. The callback itself may run on any thread, concurrently (see
/// ss_log_fn).
#[no_mangle]
pub unsafe extern "C" fn ss_set_log_callback(log: ss_log_fn, user_data: *mut c_void) -> ss_status {
    guard(|| {
        if crate::sys::in_forked_child() {
            return Err(Error::wrong_state(
                "ss_set_log_callback in a forked request child",
            ));
        }
        if in_callback() {
            return Err(Error::wrong_state(
                "ss_set_log_callback from inside the log callback",
            ));
        }
        crate::sys::set_log_hook(dispatch);
        if log.is_some() {
            install_panic_hook();
        }
        let new = log.map_or(ptr::null_mut(), |log| {
            Box::into_raw(Box::new(Sink { log, user_data }))
        });
        let _one = SETTER.lock().unwrap_or_else(|p| p.into_inner());
        let old = SINK.swap(new, Ordering::SeqCst);
        let epoch = EPOCH.fetch_add(1, Ordering::SeqCst);
        // Readers that may hold `old` counted in under `epoch`; later ones
        // count under the next epoch and load `new`.
        let mut spins = 0u32;
        while READERS[epoch % 2].load(Ordering::SeqCst) != 0 {
            if spins < 100 {
                spins += 1;
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        if !old.is_null() {
            // SAFETY: `old` came from Box::into_raw above (an earlier call)
            // and no reader holds it any more.
            drop(unsafe { Box::from_raw(old) });
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    static LINES: Mutex<Vec<(ss_log_level, String)>> = Mutex::new(Vec::new());

    unsafe extern "C-unwind" fn keep(level: ss_log_level, message: *const c_char, _: *mut c_void) {
        // SAFETY: the library passes a NUL-terminated line.
        let text = unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned();
        LINES.lock().unwrap().push((level, text));
    }

    /// A panic caught inside the library (here caught by the test, as the
    /// boundary would) reaches the log callback instead of stderr.
    #[test]
    fn a_panic_message_goes_to_the_callback() {
        // SAFETY: a valid callback; NULL user data is never dereferenced.
        assert_eq!(
            unsafe { ss_set_log_callback(Some(keep), ptr::null_mut()) },
            ss_status::SS_OK
        );
        let caught = std::panic::catch_unwind(|| panic!("a panic for the log"));
        // SAFETY: NULL restores stderr.
        assert_eq!(
            unsafe { ss_set_log_callback(None, ptr::null_mut()) },
            ss_status::SS_OK
        );
        assert!(caught.is_err());
        let lines = LINES.lock().unwrap();
        assert!(
            lines
                .iter()
                .any(|(level, text)| *level == ss_log_level::SS_LOG_ERROR
                    && text.starts_with("socketserver: ")
                    && text.contains("a panic for the log")),
            "{lines:?}"
        );
    }
}
