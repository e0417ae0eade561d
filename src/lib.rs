//! libsocketserver: Python's `socketserver` design in Rust, exported as a C
//! library. The safe core knows nothing of C; `ffi` is the only layer that
//! deals in raw pointers from C and exports `extern "C"` functions. Below
//! it, `unsafe` is confined to system calls the typed wrappers lack or make
//! dear, each with its SAFETY comment: `sys` (among them recv/send by
//! syscall(2), without glibc's cancellation-point bookkeeping, for the
//! event loop and the blocking request I/O), fork/_exit/pidfd_open
//! (`concurrency::forking`), handler threads started by pthread_create with
//! a C-ABI entry (`concurrency::threading`: std's per-thread extras were
//! most of a short connection's cost), the event loop's recvmmsg/sendmmsg
//! (`event::datagram`), and shutdown(2)/recv(2) on descriptors `drain`
//! holds.
//!
//! # Module map
//!
//! From the bottom up; "calls" lists the crate modules each one uses
//! (its `use crate::` lines), and nothing lower calls anything above it
//! except where said.
//!
//! - `error`: the error type, one kind per C `ss_status`, and the text of a
//!   caught panic. Calls nothing.
//! - `sync`: poison-tolerant locks, and why ignoring poison is sound.
//!   Calls nothing.
//! - `sys`: system-call helpers over nix: poll with a deadline, the eventfd
//!   `Waker`, byte views for socket2, recv/send by syscall(2), lock-free
//!   stderr lines (and the log hook ss_set_log_callback installs in front
//!   of them), the rate limiter, and the forked-child flag (process state
//!   the lowest layers read). Calls `error`.
//! - `activation`: systemd socket activation (sd_listen_fds): the
//!   descriptors passed in LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES. Calls
//!   `error`, `sys`.
//! - `address`, `config`: parsing and formatting addresses; the checked
//!   configuration and its defaults. Call `error`; `config` also names
//!   `event`'s `LoopTimer` type (the loop timers it carries) and calls
//!   nothing of it but its constructor.
//! - `peer_limit`: the per-IP connection limit. Calls `sync`.
//! - `transport`: sockets for each transport, the shared `Acceptor` (spare
//!   descriptor, transient errno list, pause after an accept error, per-IP
//!   limit) and datagram receive. Calls `address`, `config`, `error`,
//!   `peer_limit`, `sync`, `sys`, and `handler` only to report through
//!   handle_error.
//! - `linger`: lingering close of blocking-mode connections on one thread.
//!   Calls `sync`, `sys`.
//! - `request`: one request (stream or datagram): buffered I/O with
//!   timeouts and the request deadline, the datagram reply, hand-off
//!   bookkeeping, close. Calls `address`, `config`, `error`, `linger`,
//!   `peer_limit`, `sys`, `transport`, and `server`: a request belongs to
//!   its server (`Request::server`, which ss_request_server returns) and
//!   reads its config, lingerer and handle_error. That back edge stays: a
//!   handle type lower down would have to carry the same three things and
//!   still give the `Server` back to C.
//! - `handler`: the interfaces `Handler` (blocking callbacks + server
//!   hooks) and `EventHandler` (event callbacks), the default
//!   handle_error, the fixed order a blocking request runs through them,
//!   and catching and reporting a panic of user code. Calls `address`,
//!   `error`, `event` (the `Conn` type), `request`, `sys`, and `server`
//!   (hand-off goes to the server's model).
//! - `concurrency`: `Workers`, the model a server was built for and only
//!   what it needs: `Blocking` (sync, threading, forking or pool, plus the
//!   thread and child trackers hand-offs use) or `Event` (the `EventLoops`).
//!   Calls `config`, `error`, `event` (that type), `handler`, `peer_limit`,
//!   `request`, `server`, `sync`, `sys`.
//! - `event`: event mode: epoll loops with their connections (`Conn`),
//!   posted jobs and timers (`event::timer`: one timer heap per loop for
//!   connection and loop timers), descriptors watched for a connection
//!   (`event::watch`) and what a loop thread knows of itself for calls
//!   from its callbacks (`event::context`); `EventLoops` (post, connection
//!   count). Calls
//!   `address`, `concurrency` (which worker a thread is), `error`,
//!   `handler`, `peer_limit`, `request`, `server`, `sync`, `sys`,
//!   `transport`.
//! - `server`: `Server`: bind/activate/close, the blocking accept loop, and
//!   serve_forever, which hands the loop to the model (event mode runs
//!   `event::serve`). Calls every core module above but `peer_limit`.
//! - `drain`: graceful drain (ss_server_drain): the request, in atomics
//!   (signal-safe), and the table of blocking-mode requests in flight that
//!   its deadline cuts. Calls `sync`, `sys`.
//! - `ffi`: the C API over the core; calls `activation`, `config`, `error`, `event`,
//!   `handler`, `request`, `server`, `sys`.
//!
//! The cycles that remain are the ones between `server` and what it runs
//! (`request`, `handler`, `concurrency`, `event`): each holds an
//! `Arc<Server>` to reach the config and handler of the server it serves.

pub mod activation;
pub mod address;
mod concurrency;
pub mod config;
mod drain;
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
