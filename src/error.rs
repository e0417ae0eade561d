//! The core's error type: a kind that maps one-to-one onto the C `ss_status`
//! codes, plus a human-readable detail message.

use std::fmt;
use std::io;

/// The one list of failure kinds. Each row: the core's kind, the C status
/// it becomes (name and number, fixed in the ABI: a retired number is never
/// reused) and the text `ss_status_str()` gives after the name. `ErrorKind`
/// and src/ffi's mapping and texts are generated from it; src/ffi checks
/// its `ss_status` enum (written out there for cbindgen) against it at
/// compile time. `SS_OK` (0) is not a failure and has no row.
macro_rules! status_table {
    ($then:ident) => {
        $then! {
            NullPointer => SS_ERR_NULL_POINTER = 1, "a required pointer was NULL";
            InvalidArgument => SS_ERR_INVALID_ARGUMENT = 2, "invalid argument";
            Address => SS_ERR_ADDRESS = 3, "bad or unusable address";
            Io => SS_ERR_IO = 4, "system call failed";
            Timeout => SS_ERR_TIMEOUT = 5, "timed out";
            Closed => SS_ERR_CLOSED = 6, "server is closed";
            WrongState => SS_ERR_WRONG_STATE = 7, "call not allowed in this state";
            Unsupported => SS_ERR_UNSUPPORTED = 8, "not supported";
            Panic => SS_ERR_PANIC = 9, "internal error caught";
            Eof => SS_ERR_EOF = 10, "end of data";
            MessageTooLong => SS_ERR_MESSAGE_TOO_LONG = 11, "datagram too long";
            BufferTooSmall => SS_ERR_BUFFER_TOO_SMALL = 12, "buffer too small";
            Handler => SS_ERR_HANDLER = 13, "handler callback failed";
            ShutDown => SS_ERR_SHUT_DOWN = 14, "shutdown was requested";
            WouldBlock => SS_ERR_WOULD_BLOCK = 15, "output is at its high-water mark";
        }
    };
}
pub(crate) use status_table;

macro_rules! define_error_kind {
    ($($kind:ident => $status:ident = $number:literal, $text:literal;)*) => {
        /// What went wrong, independent of the message text (one per row of
        /// `status_table`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorKind {
            $($kind,)*
        }
    };
}
status_table!(define_error_kind);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// The errno behind the failure when it came from an OS error
    /// (`io::Error::raw_os_error`), 0 otherwise; `ss_last_os_error()`.
    os_error: i32,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            os_error: 0,
        }
    }

    /// The same failure with `os_error` (an errno, from
    /// `io::Error::raw_os_error`; None or 0: not an OS error).
    pub fn with_os_error(mut self, os_error: Option<i32>) -> Self {
        self.os_error = os_error.unwrap_or(0);
        self
    }

    /// The same kind and OS error with another message, e.g. the original
    /// one with more context around it.
    pub fn with_message(&self, message: impl Into<String>) -> Self {
        Error {
            kind: self.kind,
            message: message.into(),
            os_error: self.os_error,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    pub fn wrong_state(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::WrongState, message)
    }

    /// An OS error with what was being done, e.g. `bind 127.0.0.1:80: Permission denied (os error 13)`.
    /// Timeouts get their own kind so that callers can tell them apart.
    pub fn io(context: impl fmt::Display, err: io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        };
        Error::new(kind, format!("{context}: {err}")).with_os_error(err.raw_os_error())
    }

    /// An OS error from starting a thread or a process: always `Io`, since
    /// EAGAIN there means out of threads, processes or memory, not a wait
    /// that timed out.
    pub fn spawn(context: impl fmt::Display, err: io::Error) -> Self {
        Error::new(ErrorKind::Io, format!("{context}: {err}")).with_os_error(err.raw_os_error())
    }

    /// The OS error of the last failed libc call.
    pub fn last_os(context: impl fmt::Display) -> Self {
        Error::io(context, io::Error::last_os_error())
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The errno of the OS error behind this failure, 0 if there was none.
    pub fn os_error(&self) -> i32 {
        self.os_error
    }
}

/// The text of a caught panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
