//! libsocketserver: Python's `socketserver` design in Rust, exported as a C
//! library. The safe core (address, config, transport, request, handler,
//! server, concurrency) knows nothing of C; `ffi` is the only layer that
//! deals in raw pointers and `extern "C"`.

pub mod address;
mod concurrency;
pub mod config;
pub mod error;
pub mod event;
pub mod ffi;
pub mod handler;
mod linger;
mod peer_limit;
pub mod request;
pub mod server;
mod sync;
pub(crate) mod sys;
pub mod transport;

pub use config::{Concurrency, Config, Transport};
pub use error::{Error, ErrorKind, Result};
pub use handler::{EventHandler, Handler};
pub use request::Request;
pub use server::Server;
