//! The core's error type: a kind that maps one-to-one onto the C `ss_status`
//! codes, plus a human-readable detail message.

use std::fmt;
use std::io;

/// What went wrong, independent of the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NullPointer,
    InvalidArgument,
    Address,
    Io,
    Timeout,
    Closed,
    WrongState,
    Unsupported,
    Panic,
    Eof,
    MessageTooLong,
    BufferTooSmall,
    Handler,
    ShutDown,
    WouldBlock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
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
        Error::new(kind, format!("{context}: {err}"))
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
