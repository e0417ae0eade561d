//! `ss_config_*`: building a server configuration.

use std::ffi::c_int;

use super::boundary::{guard, guard_value, handle_mut, write_out};
use super::handler::ss_drain_fn;
use super::handler::{
    ss_close_fn, ss_data_fn, ss_datagram_fn, ss_eof_fn, ss_error_fn, ss_open_fn, ss_request_fn,
    ss_server_fn, ss_verify_fn, Callbacks,
};
use super::timer::{ss_loop_timer_fn, CTimer};
use super::{ss_config, ss_status};
use crate::config::{timeout_from_ms, Concurrency, Config, Transport};
use crate::error::{Error, Result};

/// What an `ss_config *` points to.
pub(crate) struct ConfigBox {
    pub(crate) config: Config,
    pub(crate) callbacks: Callbacks,
}

fn transport_from(value: c_int) -> Result<Transport> {
    Ok(match value {
        0 => Transport::Tcp,
        1 => Transport::Udp,
        2 => Transport::UnixStream,
        3 => Transport::UnixDatagram,
        _ => {
            return Err(Error::invalid(format!(
                "transport {value} is not an ss_transport value (0 to 3)"
            )))
        }
    })
}

fn concurrency_from(value: c_int) -> Result<Concurrency> {
    Ok(match value {
        0 => Concurrency::Sync,
        1 => Concurrency::Threading,
        2 => Concurrency::Forking,
        3 => Concurrency::ThreadPool,
        4 => Concurrency::Event,
        _ => {
            return Err(Error::invalid(format!(
                "concurrency {value} is not an ss_concurrency value (0 to 4)"
            )))
        }
    })
}

/// Applies `change` to a config: the shape of every setter.
///
/// # Safety
/// `config` is NULL or a live ss_config used by this thread only.
unsafe fn update(
    config: *mut ss_config,
    change: impl FnOnce(&mut ConfigBox) -> Result<()>,
) -> ss_status {
    // SAFETY: forwarded contract.
    guard(|| change(unsafe { handle_mut(config) }?))
}

/// Creates a configuration with every default (listed at each setter) for
/// `transport` (an ss_transport value) and `concurrency` (an ss_concurrency
/// value). On success `*out_config` receives a new config that the caller
/// owns and frees with ss_config_free(); on failure it is not written.
/// Errors: SS_ERR_NULL_POINTER, SS_ERR_INVALID_ARGUMENT (value out of range).
///
/// Thread: any thread.
#[no_mangle]
pub unsafe extern "C" fn ss_config_new(
    transport: c_int,
    concurrency: c_int,
    out_config: *mut *mut ss_config,
) -> ss_status {
    guard(|| {
        if out_config.is_null() {
            return Err(super::boundary::null("out_config"));
        }
        let config = Config::new(transport_from(transport)?, concurrency_from(concurrency)?)?;
        let boxed = Box::new(ConfigBox {
            config,
            callbacks: Callbacks::default(),
        });
        // SAFETY: checked non-NULL above; writable per the contract.
        unsafe {
            write_out(
                out_config,
                "out_config",
                Box::into_raw(boxed).cast::<ss_config>(),
            )
        }
    })
}

/// Frees a config made by ss_config_new(). NULL is a no-op. Servers already
/// made from it keep their own copy. Must not be called twice on a pointer.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_free(config: *mut ss_config) {
    guard_value((), || {
        if !config.is_null() {
            // SAFETY: a pointer from ss_config_new, freed once per the contract.
            drop(unsafe { Box::from_raw(config.cast::<ConfigBox>()) });
        }
        Ok(())
    });
}

/// SO_REUSEADDR before bind. Default: false (as Python). Servers that are
/// restarted often want true, to rebind while old connections are in TIME_WAIT.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_reuse_address(
    config: *mut ss_config,
    on: bool,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.config.set_reuse_address(on);
            Ok(())
        })
    }
}

/// SO_REUSEPORT before bind (Python 3.11's allow_reuse_port). Default: false.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_reuse_port(config: *mut ss_config, on: bool) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.config.set_reuse_port(on);
            Ok(())
        })
    }
}

/// listen() backlog for stream transports, 1 to INT_MAX. Default: SOMAXCONN
/// (Python 3.15's default; Python up to 3.14 used 5, which drops bursts).
/// SS_ERR_UNSUPPORTED for datagram transports.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_backlog(config: *mut ss_config, backlog: i64) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_backlog(backlog)) }
}

/// IPV6_V6ONLY for an IPv6 address: true serves IPv6 only, false also
/// accepts IPv4 on `[::]`. Default: the system's setting (Linux: false), as
/// Python. Ignored for IPv4 addresses; SS_ERR_UNSUPPORTED for Unix transports.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_ipv6_only(config: *mut ss_config, on: bool) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_ipv6_only(on)) }
}

/// Whether ss_server_new() binds and activates (listens). Default: true.
/// With false (Python's bind_and_activate=False) call ss_server_bind() and
/// ss_server_activate() yourself, e.g. to set socket options on
/// ss_server_fileno() first.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_bind_and_activate(
    config: *mut ss_config,
    on: bool,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.config.set_bind_and_activate(on);
            Ok(())
        })
    }
}

/// How long ss_server_handle_request() waits for a request before calling
/// handle_timeout and returning SS_ERR_TIMEOUT, in milliseconds; negative
/// means wait for ever; 0 means only take a request already waiting.
/// Default: -1 (Python's timeout=None). serve_forever ignores it, as Python.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_timeout(
    config: *mut ss_config,
    timeout_ms: i64,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.config.set_timeout(timeout_from_ms(timeout_ms));
            Ok(())
        })
    }
}

/// Timeout of each read and write on a request (Python's
/// StreamRequestHandler.timeout), in milliseconds; negative means none.
/// A read or write that waits longer fails with SS_ERR_TIMEOUT. 0 is
/// refused (SS_ERR_INVALID_ARGUMENT). Default: -1. Handlers can change it
/// per request with ss_request_set_timeout().
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_request_timeout(
    config: *mut ss_config,
    timeout_ms: i64,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.config.set_request_timeout(timeout_from_ms(timeout_ms))
        })
    }
}

/// TCP_NODELAY on accepted connections (Python's disable_nagle_algorithm).
/// Default: false. SS_ERR_UNSUPPORTED for other transports (Python fails
/// later, inside every request, instead).
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_tcp_nodelay(config: *mut ss_config, on: bool) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_tcp_nodelay(on)) }
}

/// Read buffer of a stream request, in bytes (Python's rbufsize); 0 reads
/// unbuffered (readline then reads one byte at a time). Default: 8192.
/// At most 64 MiB.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_read_buffer_size(
    config: *mut ss_config,
    size: usize,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_read_buffer_size(size)) }
}

/// Write buffer of a stream request, in bytes (Python's wbufsize). Default:
/// 0, unbuffered: every ss_request_write() sends at once. With a buffer,
/// output goes out when it is full, on ss_request_flush(), and when the
/// handler finishes. At most 64 MiB.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_write_buffer_size(
    config: *mut ss_config,
    size: usize,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_write_buffer_size(size)) }
}

/// Largest datagram accepted, in bytes, 1 to 16 MiB (Python's
/// max_packet_size). Default: 8192. Unlike Python, which silently cuts a
/// longer datagram, a longer one is dropped and reported to handle_error
/// with SS_ERR_MESSAGE_TOO_LONG. SS_ERR_UNSUPPORTED for stream transports.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_max_datagram_size(
    config: *mut ss_config,
    size: usize,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_max_datagram_size(size)) }
}

/// How often serve_forever calls service_actions when idle, in milliseconds
/// (Python's poll_interval), at least 1. Default: 500. Unlike Python, it
/// does not delay shutdown, which wakes the loop at once.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_poll_interval(
    config: *mut ss_config,
    interval_ms: i64,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            let ms = u64::try_from(interval_ms)
                .map_err(|_| Error::invalid("poll interval must not be negative"))?;
            c.config
                .set_poll_interval(std::time::Duration::from_millis(ms))
        })
    }
}

/// The handle callback (Python's RequestHandler.handle): required before
/// ss_server_new(). NULL clears it. Callbacks must return normally (no C++
/// exception, longjmp or thread exit out of them): see ss_request_fn.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_handle(
    config: *mut ss_config,
    handle: ss_request_fn,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.callbacks.handle = handle;
            Ok(())
        })
    }
}

/// The setup callback, run before handle. If it fails, neither handle nor
/// finish runs. Default (NULL): nothing.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_setup(
    config: *mut ss_config,
    setup: ss_request_fn,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.callbacks.setup = setup;
            Ok(())
        })
    }
}

/// The finish callback, run after handle even when handle failed (as
/// Python's try/finally). Default (NULL): nothing.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_finish(
    config: *mut ss_config,
    finish: ss_request_fn,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.callbacks.finish = finish;
            Ok(())
        })
    }
}

/// The verify_request hook, run before setup; false closes the request
/// unhandled. Default (NULL): accept every request.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_verify_request(
    config: *mut ss_config,
    verify: ss_verify_fn,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.callbacks.verify_request = verify;
            Ok(())
        })
    }
}

/// The handle_error hook. Default (NULL): one line on stderr naming the
/// client and the error, e.g. "socketserver: error processing request from
/// 127.0.0.1:50312: handle callback returned -1". The default prints at
/// most 20 lines a second for the whole process (a flooding client must not
/// flood the log); the next line printed after a pause then says how many
/// were suppressed ("socketserver: N similar error messages suppressed").
/// Its write to stderr never raises SIGPIPE, even when stderr is a pipe or
/// socket whose reader is gone. A callback (setup, handle, finish, on_open,
/// on_data, on_datagram) that returns non-zero right after a library call
/// failed is reported with that call's status and text: "handle callback
/// returned -1 (last error: ...)". Server-level events that can repeat
/// quickly (accept failing for lack of descriptors, connections over
/// ss_config_set_max_connections_per_ip()) reach handle_error at most once
/// a second each, with the number of events since the last report; a
/// custom hook gets those, and every failed request, without a limit.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_handle_error(
    config: *mut ss_config,
    handle_error: ss_error_fn,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.callbacks.handle_error = handle_error;
            Ok(())
        })
    }
}

/// The handle_timeout hook, called by ss_server_handle_request() when its
/// timeout passes with no request. Default (NULL): nothing.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_handle_timeout(
    config: *mut ss_config,
    handle_timeout: ss_server_fn,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.callbacks.handle_timeout = handle_timeout;
            Ok(())
        })
    }
}

/// The service_actions hook, called by serve_forever once per loop turn:
/// after each request, and every poll interval when idle. Default (NULL):
/// nothing.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_service_actions(
    config: *mut ss_config,
    service_actions: ss_server_fn,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.callbacks.service_actions = service_actions;
            Ok(())
        })
    }
}

/// Python's ThreadingMixIn.daemon_threads: when true, ss_server_close() does
/// not wait for handler threads (and hand-off threads) still running.
/// Default: false. (A C process ends all its threads at exit either way.)
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_daemon_threads(
    config: *mut ss_config,
    on: bool,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.config.set_daemon_threads(on);
            Ok(())
        })
    }
}

/// Python's block_on_close: when true, ss_server_close() waits for every
/// non-daemon handler thread and every child process to finish (called
/// from a handler thread it waits for all but that thread); when false it
/// returns at once, reaping only children already done. Default: true.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_block_on_close(
    config: *mut ss_config,
    on: bool,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.config.set_block_on_close(on);
            Ok(())
        })
    }
}

/// SS_THREADING only: at most this many handler threads at once; while
/// that many run, the server stops accepting (connections wait in the
/// backlog) instead of failing. 0 = no cap (Python's behaviour, the
/// default). SS_ERR_UNSUPPORTED in other modes.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_max_threads(
    config: *mut ss_config,
    max_threads: usize,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_max_threads(max_threads)) }
}

/// Stack size in bytes of the threads the library starts (handler and
/// hand-off threads), 64 KiB to 1 GiB; 0 restores the default, 8 MiB
/// (the usual pthread default, which C code expects; it is virtual memory,
/// only touched pages cost).
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_thread_stack_size(
    config: *mut ss_config,
    size: usize,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_thread_stack_size(size)) }
}

/// Python's max_children: at most this many child processes of this
/// server at once, SS_FORKING children and fork hand-offs
/// (ss_request_hand_off() with SS_HAND_OFF_FORK) together, in every mode
/// but SS_EVENT (SS_ERR_UNSUPPORTED there). While that many run, the
/// server stops accepting until one exits (unlike Python, handle_request
/// honours it too). A fork hand-off that still finds no room once children
/// that have exited are reaped (other handler threads of SS_THREADING or
/// SS_THREAD_POOL took it meanwhile) is refused:
/// handle_error gets SS_ERR_WRONG_STATE ("max_children ... reached") and the
/// connection is closed; finish is not called. At least 1; default 40.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_max_children(
    config: *mut ss_config,
    max_children: usize,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_max_children(max_children)) }
}

/// Worker threads of SS_THREAD_POOL (at most 1024), or event loops of
/// SS_EVENT (at most 255); 0 (the default) means one per core.
/// SS_ERR_UNSUPPORTED in other modes. SS_EVENT spreads connections evenly
/// over its loops: whichever loop accepts a connection, it goes to the next
/// loop in turn (round robin), for TCP and Unix sockets, however the
/// clients connect (one at a time or in bursts); on_open and every later
/// callback of a connection run on that loop.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_threads(
    config: *mut ss_config,
    threads: usize,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_threads(threads)) }
}

/// SS_THREAD_POOL only: how many accepted requests may wait for a free
/// worker, 1 to 1048576; default 128. While the queue is full the server
/// stops accepting (connections wait in the listen backlog), so memory
/// stays bounded. SS_ERR_UNSUPPORTED in other modes.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_queue_size(
    config: *mut ss_config,
    size: usize,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_queue_size(size)) }
}

/// Requires SS_EVENT mode for an event callback, checked when it is set.
fn require_event(c: &ConfigBox, what: &str) -> Result<()> {
    if c.config.concurrency() != Concurrency::Event {
        return Err(crate::error::Error::new(
            crate::error::ErrorKind::Unsupported,
            format!("{what} applies to SS_EVENT mode only"),
        ));
    }
    Ok(())
}

/// SS_EVENT: the on_open callback (see ss_open_fn). Default (NULL): accept.
/// SS_ERR_UNSUPPORTED in other modes.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_on_open(
    config: *mut ss_config,
    on_open: ss_open_fn,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            require_event(c, "on_open")?;
            c.callbacks.on_open = on_open;
            Ok(())
        })
    }
}

/// SS_EVENT, stream transports: the on_data callback (see ss_data_fn),
/// required before ss_server_new(). SS_ERR_UNSUPPORTED in other modes.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_on_data(
    config: *mut ss_config,
    on_data: ss_data_fn,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            require_event(c, "on_data")?;
            c.callbacks.on_data = on_data;
            Ok(())
        })
    }
}

/// SS_EVENT: the on_close callback (see ss_close_fn). Default (NULL):
/// nothing. SS_ERR_UNSUPPORTED in other modes.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_on_close(
    config: *mut ss_config,
    on_close: ss_close_fn,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            require_event(c, "on_close")?;
            c.callbacks.on_close = on_close;
            Ok(())
        })
    }
}

/// SS_EVENT: the on_eof callback (see ss_eof_fn): set it to keep a
/// connection open after the peer half-closes, until ss_conn_close().
/// Default (NULL): such a connection closes once its output is sent.
/// SS_ERR_UNSUPPORTED in other modes.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_on_eof(
    config: *mut ss_config,
    on_eof: ss_eof_fn,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            require_event(c, "on_eof")?;
            c.callbacks.on_eof = on_eof;
            Ok(())
        })
    }
}

/// SS_EVENT, datagram transports: the on_datagram callback (see
/// ss_datagram_fn), required before ss_server_new(). SS_ERR_UNSUPPORTED in
/// other modes.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_on_datagram(
    config: *mut ss_config,
    on_datagram: ss_datagram_fn,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            require_event(c, "on_datagram")?;
            c.callbacks.on_datagram = on_datagram;
            Ok(())
        })
    }
}

/// SS_EVENT: close a connection that has neither received nor sent
/// anything for this many milliseconds (on_close runs); negative = never
/// (the default); 0 is refused. SS_ERR_UNSUPPORTED in other modes.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_idle_timeout(
    config: *mut ss_config,
    timeout_ms: i64,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.config.set_idle_timeout(timeout_from_ms(timeout_ms))
        })
    }
}

/// SS_EVENT: at most this many open connections across all loops; at the
/// limit the loops stop accepting (clients wait in the backlog) until one
/// closes. 0 = no limit (the default). SS_ERR_UNSUPPORTED in other modes.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_max_connections(
    config: *mut ss_config,
    max: usize,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_max_connections(max)) }
}

/// SS_EVENT: bytes of queued output per connection at which
/// ss_conn_write() and ss_conn_writev() refuse more (SS_ERR_WOULD_BLOCK)
/// and the connection is not read until the peer catches up, so a slow
/// reader cannot make memory grow without bound; on_drain
/// (ss_config_set_on_drain()) tells when output has fallen to the
/// low-water mark again. 1 byte to 64 MiB; default 1 MiB.
/// SS_ERR_UNSUPPORTED in other modes.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_output_high_water(
    config: *mut ss_config,
    bytes: usize,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_output_high_water(bytes)) }
}

/// SS_EVENT: bytes received and not consumed per connection beyond which
/// the connection is closed as failed (SS_ERR_MESSAGE_TOO_LONG to
/// handle_error): bounds a request that never completes. 1 byte to 64 MiB;
/// default 1 MiB. SS_ERR_UNSUPPORTED in other modes.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_input_limit(
    config: *mut ss_config,
    bytes: usize,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_input_limit(bytes)) }
}

/// Lingering close of stream connections, in every mode (nginx's
/// lingering_close): when a connection closes while its client may still be
/// sending, the library shuts down the write side, then reads and discards
/// input until the client closes, no input comes for `timeout_ms`, or
/// `time_ms` have passed in all, and only then closes. Without it, unread
/// input makes the kernel send a reset that can destroy the response still
/// in flight. It never delays the next request: blocking modes hand the
/// socket to a background lingerer, event mode lingers on the loop.
/// SS_EVENT details: a connection lingers when it closes by
/// ss_conn_close() or the idle timeout before the peer ended its input;
/// one closed for a failure (error, input limit, request deadline, a peer
/// not reading at close) or by the server stopping closes at once.
/// on_close runs when lingering begins; a lingering connection no longer
/// counts in ss_server_connections() or against max_connections, and at
/// most max_connections (if set) linger per loop at a time (beyond that,
/// connections close at once). lingering_timeout also bounds how long a
/// closing connection waits for a peer that takes no output, and how long
/// serve_forever drains after ss_server_shutdown().
/// `time_ms` negative turns lingering off; `timeout_ms` must be at least 1.
/// Defaults: 30000 and 5000 (nginx's). SS_ERR_UNSUPPORTED for datagram
/// transports; SS_ERR_INVALID_ARGUMENT for `timeout_ms` < 1.
///
/// Blocking modes: a connection lingers only when input is left unread
/// (in the request's read buffer or the socket); a clean request/response
/// closes at once. One lingerer thread per server, started by the first
/// lingering close, handles at most 256 connections at a time (a close
/// beyond that is immediate). A forked request child (SS_FORKING, fork
/// hand-offs) lingers itself before it exits, and counts against
/// max_children meanwhile. ss_server_close() ends every lingering close at
/// once (closes the sockets) and joins the thread.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_lingering(
    config: *mut ss_config,
    time_ms: i64,
    timeout_ms: i64,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            let timeout = u64::try_from(timeout_ms)
                .ok()
                .filter(|&ms| ms > 0)
                .map(std::time::Duration::from_millis)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "lingering timeout {timeout_ms} ms is out of range (at least 1 ms)"
                    ))
                })?;
            c.config.set_lingering(timeout_from_ms(time_ms), timeout)
        })
    }
}

/// A bound on each whole request, in milliseconds, in every mode; negative
/// means none (the default); 0 is refused (SS_ERR_INVALID_ARGUMENT). Where
/// ss_config_set_request_timeout() bounds each read and write (a client
/// sending one byte per timeout can hold a worker for ever), this bounds
/// the sum (nginx's client_header_timeout). Blocking modes: counted from
/// accept (or from the datagram's arrival); once it has passed, every read
/// and write of the request fails with SS_ERR_TIMEOUT. SS_EVENT: a
/// connection that has held a partial request (unconsumed input, with no
/// progress) for this long is closed, reported to handle_error as SS_ERR_TIMEOUT; the clock
/// starts when input goes from empty to non-empty, starts again whenever
/// on_data consumes some (so a pipelining client is not cut off) and stops
/// when on_data has consumed all of it, independently of the idle timeout.
/// Checked a few times per deadline, so it fires up to a quarter later (at
/// most 1 s).
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_request_deadline(
    config: *mut ss_config,
    deadline_ms: i64,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            c.config.set_request_deadline(timeout_from_ms(deadline_ms))
        })
    }
}

/// SS_TCP, every mode: at most `max` open connections from one client IP
/// address (libmicrohttpd's PER_IP_CONNECTION_LIMIT); a connection over the
/// limit is accepted and closed at once and reported to handle_error
/// (SS_ERR_WOULD_BLOCK, with a NULL request; at most once a second, with a
/// count of those closed since the last report). A connection holds its
/// place until its request is closed (SS_EVENT: until on_close; SS_FORKING:
/// until its child has exited and been reaped). 0 = no limit (the default).
/// SS_ERR_UNSUPPORTED for other transports.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_max_connections_per_ip(
    config: *mut ss_config,
    max: usize,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_max_connections_per_ip(max)) }
}

/// SS_EVENT: adds a periodic loop timer: every event loop of a server made
/// from this config runs `callback(server, loop_index, data)` (see
/// ss_loop_timer_fn) every `interval_ms` milliseconds (at least 1) while
/// it serves, the first time one interval after the loop starts. Each loop
/// runs its own copy on its own thread, so with N loops (see
/// ss_config_set_threads()) the callback runs N times per interval, once
/// on each; for work done once per interval for the whole server, act only
/// when `loop_index` is 0 (a loop with no connections still runs it).
///
/// No drift: each deadline is the previous deadline plus the interval, not
/// the time the callback ran plus the interval; if a loop falls behind by
/// more than an interval (a slow callback), the periods missed are
/// skipped, not run in a burst. Loop timers stop when serve_forever stops
/// the loops (shutdown or close): none runs while the connections are
/// being closed, nor after serve_forever returns; a later serve_forever
/// starts them again. During a graceful drain (ss_server_drain()) the
/// loops still serve, and their timers (loop and connection timers) still
/// run, until the drain ends. Add as many as you like (one entry each per loop);
/// there is no call to remove one.
///
/// Ownership: the library copies `data` (never dereferences or frees it);
/// it must stay valid for as long as a server made from this config may
/// serve. Errors: SS_ERR_NULL_POINTER (`config` or `callback`),
/// SS_ERR_INVALID_ARGUMENT (`interval_ms` 0), SS_ERR_UNSUPPORTED in other
/// modes.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_add_loop_timer(
    config: *mut ss_config,
    interval_ms: u64,
    callback: ss_loop_timer_fn,
    data: *mut std::ffi::c_void,
) -> ss_status {
    let callback = callback.map(|callback| {
        let timer = CTimer { callback, data };
        let run: crate::event::LoopTimerFn = std::sync::Arc::new(move |server, loop_index| {
            let timer = timer;
            let server = server as *const crate::server::Server as *mut super::ss_server;
            // SAFETY: the caller's callback with the serving server, on a
            // loop thread, as documented.
            unsafe { (timer.callback)(server, loop_index, timer.data) }
        });
        run
    });
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            require_event(c, "a loop timer")?;
            let callback = callback.ok_or_else(|| super::boundary::null("callback"))?;
            c.config.add_loop_timer(interval_ms, callback)
        })
    }
}

/// SS_EVENT: the on_drain callback (see ss_drain_fn): told once each time
/// a connection's queued output, having reached the high-water mark, has
/// fallen to the low-water mark (ss_config_set_output_low_water()).
/// Default (NULL): nothing. SS_ERR_UNSUPPORTED in other modes.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_on_drain(
    config: *mut ss_config,
    on_drain: ss_drain_fn,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe {
        update(config, |c| {
            require_event(c, "on_drain")?;
            c.callbacks.on_drain = on_drain;
            Ok(())
        })
    }
}

/// SS_EVENT: the low-water mark of queued output per connection, in bytes:
/// on_drain is called when output that reached the high-water mark
/// (ss_config_set_output_high_water()) has fallen to this many bytes or
/// fewer. 0 (the default) means once all of it has been sent. 0 to 64 MiB;
/// a value at or above the high-water mark acts as the high-water mark
/// minus 1 (the two may be set in either order). SS_ERR_UNSUPPORTED in
/// other modes.
///
/// Thread: any thread; one thread at a time per config.
#[no_mangle]
pub unsafe extern "C" fn ss_config_set_output_low_water(
    config: *mut ss_config,
    bytes: usize,
) -> ss_status {
    // SAFETY: forwarded contract.
    unsafe { update(config, |c| c.config.set_output_low_water(bytes)) }
}
