//! The panic boundary, the per-thread detail message and pointer checks
//! that every exported function goes through.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::ss_status;
use crate::error::{panic_message, Error, ErrorKind, Result};

thread_local! {
    /// The calling thread's last failure: its kind (so that a handler that
    /// fails right after it can be reported with the real cause) and text.
    static LAST_ERROR: RefCell<Option<(ErrorKind, CString)>> = const { RefCell::new(None) };
    /// The errno behind that failure (0: none), for ss_last_os_error().
    static LAST_OS_ERROR: Cell<i32> = const { Cell::new(0) };
    /// Whether LAST_ERROR or LAST_OS_ERROR may hold something (counted in
    /// THREADS_WITH_ERROR while it does).
    static ERROR_SET: ErrorSet = const { ErrorSet(Cell::new(false)) };
}

struct ErrorSet(Cell<bool>);

impl Drop for ErrorSet {
    /// A thread that ends with an error set leaves the count.
    fn drop(&mut self) {
        if self.0.get() {
            THREADS_WITH_ERROR.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Threads whose last-error slots may hold something. Clearing them is on
/// the hot paths (every ss_conn_write, every on_data call) and usually
/// finds nothing: while this is 0, it is one load of a global instead of
/// thread-local lookups (__tls_get_addr in a shared library), a borrow
/// and a drop, which were 50 of the ~600 instructions per event-mode echo
/// (callgrind). A thread sees its own increments in order (one location),
/// so it never skips a clear it needs.
static THREADS_WITH_ERROR: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn set_last_error(error: &Error) {
    // Interior NULs cannot be represented in a C string: show them as spaces.
    let text = CString::new(error.message().replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = Some((error.kind(), text)));
    let _ = LAST_OS_ERROR.try_with(|slot| slot.set(error.os_error()));
    let _ = ERROR_SET.try_with(|set| {
        if !set.0.replace(true) {
            THREADS_WITH_ERROR.fetch_add(1, Ordering::Relaxed);
        }
    });
}

#[inline]
pub(crate) fn clear_last_error() {
    if last_error_may_be_set() {
        clear_set_error();
    }
}

/// Whether clear_last_error may have something to clear; for hot paths
/// that move the clearing out of line (a call in their fast path would
/// make them save registers).
#[inline]
pub(crate) fn last_error_may_be_set() -> bool {
    THREADS_WITH_ERROR.load(Ordering::Relaxed) != 0
}

#[cold]
fn clear_set_error() {
    let _ = ERROR_SET.try_with(|set| {
        if set.0.replace(false) {
            let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = None);
            let _ = LAST_OS_ERROR.try_with(|slot| slot.set(0));
            THREADS_WITH_ERROR.fetch_sub(1, Ordering::Relaxed);
        }
    });
}

/// The errno of the calling thread's last failure, 0 when it had none
/// (or the last call succeeded).
pub(crate) fn last_os_error() -> i32 {
    LAST_OS_ERROR.try_with(Cell::get).unwrap_or(0)
}

/// The calling thread's detail message, or "" when its last call succeeded.
pub(crate) fn last_error_ptr() -> *const c_char {
    static EMPTY: &CStr = c"";
    LAST_ERROR
        .try_with(|slot| slot.borrow().as_ref().map(|(_, s)| s.as_ptr()))
        .ok()
        .flatten()
        .unwrap_or(EMPTY.as_ptr())
}

/// The last failure's kind and text, for wrapping a handler's failure.
pub(crate) fn last_error() -> Option<(ErrorKind, String)> {
    LAST_ERROR
        .try_with(|slot| {
            slot.borrow()
                .as_ref()
                .map(|(kind, s)| (*kind, s.to_string_lossy().into_owned()))
        })
        .ok()
        .flatten()
}

/// Generates the C side of `crate::error::status_table`: the status of
/// each kind and the static texts. The `ss_status` enum is written out in
/// mod.rs for cbindgen; the exhaustive match and the asserts below make
/// the build fail if it lacks a row's status, has a status without a row,
/// or numbers one differently.
macro_rules! ffi_statuses {
    ($($kind:ident => $status:ident = $number:literal, $text:literal;)*) => {
        $(const _: () = assert!(ss_status::$status as i32 == $number);)*

        pub(crate) fn status_of(kind: ErrorKind) -> ss_status {
            match kind {
                $(ErrorKind::$kind => ss_status::$status,)*
            }
        }

        /// The kind a failure status stands for; None for SS_OK and
        /// numbers that are no status.
        pub(crate) fn kind_of(status: std::ffi::c_int) -> Option<ErrorKind> {
            match status {
                $($number => Some(ErrorKind::$kind),)*
                _ => None,
            }
        }

        /// Every status, in numeric order.
        pub(crate) const ALL_STATUSES: &[ss_status] =
            &[ss_status::SS_OK, $(ss_status::$status,)*];

        /// "NAME: text", static and NUL-terminated.
        pub(crate) fn status_text(status: ss_status) -> &'static CStr {
            let text: &'static str = match status {
                ss_status::SS_OK => "SS_OK: success\0",
                $(ss_status::$status => concat!(stringify!($status), ": ", $text, "\0"),)*
            };
            // The literals above end in their only NUL.
            CStr::from_bytes_with_nul(text.as_bytes()).unwrap_or(c"unknown status")
        }
    };
}
crate::error::status_table!(ffi_statuses);

fn panic_error(payload: Box<dyn std::any::Any + Send>) -> Error {
    let what = panic_message(&*payload);
    Error::new(
        ErrorKind::Panic,
        format!("internal error (panic caught): {what}"),
    )
}

/// Runs an exported function's body: clears the detail message, catches any
/// panic, and turns the result into a status (setting the message on error).
#[inline]
pub(crate) fn guard(body: impl FnOnce() -> Result<()>) -> ss_status {
    clear_last_error();
    let result = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|p| Err(panic_error(p)));
    match result {
        Ok(()) => {
            // Callbacks run inside this call may have left their own failures.
            clear_last_error();
            ss_status::SS_OK
        }
        Err(e) => {
            set_last_error(&e);
            status_of(e.kind())
        }
    }
}

/// guard for a body that runs no callback, entered with nothing to clear
/// (`!last_error_may_be_set()`, checked by the caller): neither clear has
/// work to do, and the fast path of ss_conn_write makes no call of its
/// own but the send.
#[inline(always)]
pub(crate) fn guard_cleared(body: impl FnOnce() -> Result<()>) -> ss_status {
    match catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|p| Err(panic_error(p))) {
        Ok(()) => ss_status::SS_OK,
        Err(e) => {
            set_last_error(&e);
            status_of(e.kind())
        }
    }
}

/// For exported functions that return a value instead of a status:
/// `fallback` on error or panic, with the detail message set.
/// Such functions do not clear the message on success: a C caller may
/// free or query objects between a failed call and reading its message.
#[inline]
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> Result<T>) -> T {
    match catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|p| Err(panic_error(p))) {
        Ok(v) => v,
        Err(e) => {
            set_last_error(&e);
            fallback
        }
    }
}

/// Refuses a C buffer length above isize::MAX, which no object can have
/// (a Rust slice of it would be undefined behaviour): SS_ERR_INVALID_ARGUMENT.
#[inline]
pub(crate) fn check_len(len: usize, name: &str) -> Result<()> {
    if isize::try_from(len).is_err() {
        return Err(too_long(len, name));
    }
    Ok(())
}

#[cold]
fn too_long(len: usize, name: &str) -> Error {
    Error::invalid(format!(
        "{name} of {len} bytes is larger than any object (isize::MAX)"
    ))
}

#[cold]
pub(crate) fn null(name: &str) -> Error {
    Error::new(ErrorKind::NullPointer, format!("{name} is NULL"))
}

/// An opaque C handle type (`ss_server`, `ss_config`, ...) and the Rust
/// object its pointers point to, so that one pair of functions turns every
/// handle into a reference.
///
/// # Safety
/// Every non-NULL `*const Self` the library hands to C must be a pointer to
/// a `Self::Target` (the handle types are zero-sized markers).
pub(crate) unsafe trait Handle {
    type Target;
    /// The argument's name in the detail message: "server is NULL".
    const NAME: &'static str;
}

/// Borrows the object behind a C handle after a NULL check.
///
/// # Safety
/// A non-NULL `handle` must be one the library made and still live for the
/// returned lifetime.
pub(crate) unsafe fn handle_ref<'a, H: Handle>(handle: *const H) -> Result<&'a H::Target> {
    // SAFETY: handles point to their Target (the trait's contract); non-NULL
    // is checked; liveness is the caller's contract.
    unsafe { handle.cast::<H::Target>().as_ref() }.ok_or_else(|| null(H::NAME))
}

/// Mutably borrows the object behind a C handle after a NULL check.
///
/// # Safety
/// As for `handle_ref`, and nothing else may access the object for the
/// returned lifetime.
pub(crate) unsafe fn handle_mut<'a, H: Handle>(handle: *mut H) -> Result<&'a mut H::Target> {
    // SAFETY: as for `handle_ref`, plus exclusivity from the caller.
    unsafe { handle.cast::<H::Target>().as_mut() }.ok_or_else(|| null(H::NAME))
}

/// Reads a NUL-terminated UTF-8 string argument.
///
/// # Safety
/// A non-NULL `ptr` must point to a NUL-terminated string.
pub(crate) unsafe fn str_arg<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(null(name));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| Error::invalid(format!("{name} is not valid UTF-8")))
}

/// Writes `*out = value` after a NULL check.
///
/// # Safety
/// A non-NULL `out` must be valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, name: &str, value: T) -> Result<()> {
    if out.is_null() {
        return Err(null(name));
    }
    // SAFETY: non-NULL and writable per the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}

/// Copies `text` into a caller's buffer of `cap` bytes, NUL-terminated, and
/// stores its length (without the NUL) in `*out_len` when that is non-NULL.
/// When it does not fit, nothing is copied, `*out_len` receives the length
/// needed (without the NUL) and `BufferTooSmall` is returned; `cap == 0` with
/// a NULL `buf` is the way to ask for the length.
///
/// # Safety
/// A non-NULL `buf` must be writable for `cap` bytes; a non-NULL `out_len`
/// must be writable.
pub(crate) unsafe fn copy_text_out(
    text: &str,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Result<()> {
    if buf.is_null() && cap > 0 {
        return Err(null("buf"));
    }
    if !out_len.is_null() {
        // SAFETY: non-NULL and writable per the contract.
        unsafe { out_len.write(text.len()) };
    }
    if text.len() >= cap {
        return Err(Error::new(
            ErrorKind::BufferTooSmall,
            format!(
                "buffer of {cap} bytes is too small: {} needed",
                text.len() + 1
            ),
        ));
    }
    // SAFETY: `buf` is writable for `cap > text.len()` bytes and cannot
    // overlap `text`, which Rust owns.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        buf.add(text.len()).write(0);
    }
    Ok(())
}

/// Copies a raw socket address into a caller's buffer the way
/// getpeername() does: at most `*inout_len` bytes into `out`, and
/// `*inout_len` set to the address's full length (`out` may be NULL when
/// `*inout_len` is 0, to ask for the length).
///
/// # Safety
/// `inout_len` is NULL or readable and writable; `out` is NULL or writable
/// for `*inout_len` bytes.
pub(crate) unsafe fn copy_sockaddr_out(
    addr: &socket2::SockAddr,
    out: *mut libc::sockaddr,
    inout_len: *mut libc::socklen_t,
) -> Result<()> {
    if inout_len.is_null() {
        return Err(null("inout_len"));
    }
    // SAFETY: non-NULL, readable and writable per the contract.
    let room = unsafe { inout_len.read() } as usize;
    if out.is_null() && room > 0 {
        return Err(null("out"));
    }
    let len = addr.len() as usize;
    // SAFETY: `out` is writable for `room` bytes and the copy is at most
    // that long; the source is the SockAddr's own storage.
    unsafe {
        std::ptr::copy_nonoverlapping(addr.as_ptr().cast::<u8>(), out.cast::<u8>(), len.min(room));
        inout_len.write(addr.len());
    }
    Ok(())
}
