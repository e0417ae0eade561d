//! Server configuration: transport, concurrency model and socket options,
//! each checked when it is set.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::event::{LoopTimer, LoopTimerFn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    UnixStream,
    UnixDatagram,
}

impl Transport {
    pub fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp | Transport::UnixStream)
    }

    pub fn is_unix(self) -> bool {
        matches!(self, Transport::UnixStream | Transport::UnixDatagram)
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::UnixStream => "unix stream",
            Transport::UnixDatagram => "unix datagram",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    Sync,
    Threading,
    Forking,
    ThreadPool,
    Event,
}

impl Concurrency {
    pub fn name(self) -> &'static str {
        match self {
            Concurrency::Sync => "sync",
            Concurrency::Threading => "threading",
            Concurrency::Forking => "forking",
            Concurrency::ThreadPool => "thread pool",
            Concurrency::Event => "event",
        }
    }
}

/// Largest datagram size accepted by [`Config::set_max_datagram_size`]: a Unix
/// datagram can be larger than UDP's 65507 bytes, but 16 MiB bounds the
/// per-request buffer.
pub(crate) const MAX_DATAGRAM_LIMIT: usize = 16 * 1024 * 1024;

/// Largest read or write buffer accepted.
pub(crate) const MAX_BUFFER_SIZE: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) transport: Transport,
    pub(crate) concurrency: Concurrency,
    pub(crate) reuse_address: bool,
    pub(crate) reuse_port: bool,
    pub(crate) backlog: i32,
    pub(crate) ipv6_only: Option<bool>,
    pub(crate) bind_and_activate: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) tcp_nodelay: bool,
    pub(crate) read_buffer_size: usize,
    pub(crate) write_buffer_size: usize,
    pub(crate) max_datagram_size: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) daemon_threads: bool,
    pub(crate) block_on_close: bool,
    pub(crate) max_threads: usize,
    pub(crate) thread_stack_size: usize,
    pub(crate) max_children: usize,
    /// Pool workers or event loops; 0 = one per core.
    pub(crate) threads: usize,
    pub(crate) queue_size: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_connections: usize,
    pub(crate) output_high_water: usize,
    pub(crate) input_limit: usize,
    /// Stream transports, every mode: how long a closing connection whose
    /// client still sends keeps reading and discarding (nginx's
    /// lingering_time); None = no lingering close (close at once).
    pub(crate) lingering_time: Option<Duration>,
    /// Within that, how long to wait for more client input before closing
    /// (nginx's lingering_timeout).
    pub(crate) lingering_timeout: Duration,
    /// Every mode: bound on a whole request (blocking modes: from accept to
    /// the end of handle; event mode: how long a connection may hold
    /// unconsumed input, slowloris' partial request). None = no bound.
    pub(crate) request_deadline: Option<Duration>,
    /// TCP, every mode: open connections per client IP address (0 = no limit).
    pub(crate) max_connections_per_ip: usize,
    /// Event mode: periodic timers every loop runs.
    pub(crate) loop_timers: Vec<LoopTimer>,
    /// Event mode: queued output at or below which a connection that
    /// reached the high-water mark gets its on_drain call (0: fully
    /// flushed). Used as at most output_high_water - 1.
    pub(crate) output_low_water: usize,
}

/// Stack of handler threads: glibc's usual pthread default (from `ulimit -s`),
/// which C handlers are written for, rather than Rust's 2 MiB.
pub(crate) const DEFAULT_THREAD_STACK: usize = 8 * 1024 * 1024;
const MIN_THREAD_STACK: usize = 64 * 1024;

/// nginx's defaults for lingering_time and lingering_timeout.
pub(crate) const DEFAULT_LINGERING_TIME: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_LINGERING_TIMEOUT: Duration = Duration::from_secs(5);

impl Config {
    pub fn new(transport: Transport, concurrency: Concurrency) -> Result<Self> {
        Ok(Config {
            transport,
            concurrency,
            reuse_address: false,
            reuse_port: false,
            backlog: libc::SOMAXCONN,
            ipv6_only: None,
            bind_and_activate: true,
            timeout: None,
            request_timeout: None,
            tcp_nodelay: false,
            read_buffer_size: 8192,
            write_buffer_size: 0,
            max_datagram_size: 8192,
            poll_interval: Duration::from_millis(500),
            daemon_threads: false,
            block_on_close: true,
            max_threads: 0,
            thread_stack_size: DEFAULT_THREAD_STACK,
            max_children: 40,
            threads: 0,
            queue_size: 128,
            idle_timeout: None,
            max_connections: 0,
            output_high_water: 1024 * 1024,
            input_limit: 1024 * 1024,
            lingering_time: Some(DEFAULT_LINGERING_TIME),
            lingering_timeout: DEFAULT_LINGERING_TIMEOUT,
            request_deadline: None,
            max_connections_per_ip: 0,
            loop_timers: Vec::new(),
            output_low_water: 0,
        })
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    pub fn concurrency(&self) -> Concurrency {
        self.concurrency
    }

    pub fn set_reuse_address(&mut self, on: bool) {
        self.reuse_address = on;
    }

    pub fn set_reuse_port(&mut self, on: bool) {
        self.reuse_port = on;
    }

    pub fn set_backlog(&mut self, backlog: i64) -> Result<()> {
        if !self.transport.is_stream() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "a listen backlog does not apply to {} servers",
                    self.transport.name()
                ),
            ));
        }
        if !(1..=i64::from(i32::MAX)).contains(&backlog) {
            return Err(Error::invalid(format!(
                "backlog {backlog} is out of range (1 to {})",
                i32::MAX
            )));
        }
        self.backlog = backlog as i32;
        Ok(())
    }

    pub fn set_ipv6_only(&mut self, on: bool) -> Result<()> {
        if self.transport.is_unix() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "IPv6-only does not apply to Unix sockets",
            ));
        }
        self.ipv6_only = Some(on);
        Ok(())
    }

    pub fn set_bind_and_activate(&mut self, on: bool) {
        self.bind_and_activate = on;
    }

    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    pub fn set_request_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        check_request_timeout(timeout)?;
        self.request_timeout = timeout;
        Ok(())
    }

    pub fn set_tcp_nodelay(&mut self, on: bool) -> Result<()> {
        if self.transport != Transport::Tcp {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "TCP_NODELAY does not apply to {} servers",
                    self.transport.name()
                ),
            ));
        }
        self.tcp_nodelay = on;
        Ok(())
    }

    pub fn set_read_buffer_size(&mut self, size: usize) -> Result<()> {
        check_buffer_size("read", size)?;
        self.read_buffer_size = size;
        Ok(())
    }

    pub fn set_write_buffer_size(&mut self, size: usize) -> Result<()> {
        check_buffer_size("write", size)?;
        self.write_buffer_size = size;
        Ok(())
    }

    pub fn set_max_datagram_size(&mut self, size: usize) -> Result<()> {
        if self.transport.is_stream() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "a datagram size does not apply to {} servers",
                    self.transport.name()
                ),
            ));
        }
        if !(1..=MAX_DATAGRAM_LIMIT).contains(&size) {
            return Err(Error::invalid(format!(
                "max datagram size {size} is out of range (1 to {MAX_DATAGRAM_LIMIT})"
            )));
        }
        self.max_datagram_size = size;
        Ok(())
    }

    pub fn set_poll_interval(&mut self, interval: Duration) -> Result<()> {
        if interval.is_zero() {
            return Err(Error::invalid("poll interval must be at least 1 ms"));
        }
        self.poll_interval = interval;
        Ok(())
    }
}

impl Config {
    pub fn set_daemon_threads(&mut self, on: bool) {
        self.daemon_threads = on;
    }

    pub fn set_block_on_close(&mut self, on: bool) {
        self.block_on_close = on;
    }

    /// Cap on live handler threads in threading mode; 0 = no cap (Python).
    pub fn set_max_threads(&mut self, max: usize) -> Result<()> {
        self.require_mode(Concurrency::Threading, "a thread cap")?;
        self.max_threads = max;
        Ok(())
    }

    /// Stack size of the threads the library starts; 0 = the default (8 MiB).
    pub fn set_thread_stack_size(&mut self, size: usize) -> Result<()> {
        if size == 0 {
            self.thread_stack_size = DEFAULT_THREAD_STACK;
            return Ok(());
        }
        if !(MIN_THREAD_STACK..=1 << 30).contains(&size) {
            return Err(Error::invalid(format!(
                "thread stack size {size} is out of range ({MIN_THREAD_STACK} to 1 GiB, or 0 for the default)"
            )));
        }
        self.thread_stack_size = size;
        Ok(())
    }

    /// Python's ForkingMixIn.max_children (default 40): bounds forking
    /// mode's children and fork hand-offs in every mode but event mode,
    /// which has no requests to hand off.
    pub fn set_max_children(&mut self, max: usize) -> Result<()> {
        if self.concurrency == Concurrency::Event {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "max_children does not apply to event mode (it has no fork hand-offs)",
            ));
        }
        if max == 0 {
            return Err(Error::invalid("max_children must be at least 1"));
        }
        self.max_children = max;
        Ok(())
    }

    /// Worker threads (pool, at most 1024) or event loops (event, at most
    /// 255); 0 = one per core.
    pub fn set_threads(&mut self, threads: usize) -> Result<()> {
        if !matches!(
            self.concurrency,
            Concurrency::ThreadPool | Concurrency::Event
        ) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "a thread count applies to thread pool and event modes, not {} mode",
                    self.concurrency.name()
                ),
            ));
        }
        // Event loops are numbered in 8 bits of each connection id.
        let max = self.max_threads_for_mode();
        if threads > max {
            return Err(Error::invalid(format!(
                "{threads} threads is more than {max} for {} mode",
                self.concurrency.name()
            )));
        }
        self.threads = threads;
        Ok(())
    }

    fn max_threads_for_mode(&self) -> usize {
        if self.concurrency == Concurrency::Event {
            255
        } else {
            1024
        }
    }

    /// The number of pool workers or event loops to start.
    pub(crate) fn threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(self.max_threads_for_mode()),
            n => n,
        }
    }

    /// Accepted requests that may wait for a pool worker.
    pub fn set_queue_size(&mut self, size: usize) -> Result<()> {
        self.require_mode(Concurrency::ThreadPool, "a request queue")?;
        if !(1..=1 << 20).contains(&size) {
            return Err(Error::invalid(format!(
                "queue size {size} is out of range (1 to 1048576)"
            )));
        }
        self.queue_size = size;
        Ok(())
    }

    /// Event mode: close a connection silent this long (None: never).
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.require_mode(Concurrency::Event, "an idle timeout")?;
        if timeout == Some(Duration::ZERO) {
            return Err(Error::invalid(
                "an idle timeout of 0 ms would close every connection; use -1 for none",
            ));
        }
        self.idle_timeout = timeout;
        Ok(())
    }

    /// Event mode: at most this many connections at once (0: no limit).
    pub fn set_max_connections(&mut self, max: usize) -> Result<()> {
        self.require_mode(Concurrency::Event, "a connection limit")?;
        self.max_connections = max;
        Ok(())
    }

    /// Event mode: queued output per connection at which writes are
    /// refused and reading pauses.
    pub fn set_output_high_water(&mut self, bytes: usize) -> Result<()> {
        self.require_mode(Concurrency::Event, "an output high-water mark")?;
        check_event_buffer("output high-water mark", bytes)?;
        self.output_high_water = bytes;
        Ok(())
    }

    /// Event mode: queued output per connection at or below which a
    /// connection whose output reached the high-water mark is told it has
    /// drained (on_drain). 0 (the default) means fully flushed; a value at
    /// or above the high-water mark acts as the high-water mark - 1.
    pub fn set_output_low_water(&mut self, bytes: usize) -> Result<()> {
        self.require_mode(Concurrency::Event, "an output low-water mark")?;
        if bytes > MAX_BUFFER_SIZE {
            return Err(Error::invalid(format!(
                "output low-water mark {bytes} is out of range (0 to {MAX_BUFFER_SIZE})"
            )));
        }
        self.output_low_water = bytes;
        Ok(())
    }

    /// The low-water mark in effect: below the high-water mark.
    pub(crate) fn effective_low_water(&self) -> usize {
        self.output_low_water
            .min(self.output_high_water.saturating_sub(1))
    }

    /// Event mode: unconsumed input per connection beyond which the
    /// connection is closed as an error.
    pub fn set_input_limit(&mut self, bytes: usize) -> Result<()> {
        self.require_mode(Concurrency::Event, "an input limit")?;
        check_event_buffer("input limit", bytes)?;
        self.input_limit = bytes;
        Ok(())
    }

    /// Lingering close of stream connections (nginx's lingering_time and
    /// lingering_timeout): `time` None turns it off; `timeout` must be at
    /// least 1 ms.
    pub fn set_lingering(&mut self, time: Option<Duration>, timeout: Duration) -> Result<()> {
        if !self.transport.is_stream() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "a lingering close does not apply to {} servers",
                    self.transport.name()
                ),
            ));
        }
        if timeout.is_zero() {
            return Err(Error::invalid(
                "a lingering timeout must be at least 1 ms; turn lingering off with a lingering time of -1",
            ));
        }
        self.lingering_time = time;
        self.lingering_timeout = timeout;
        Ok(())
    }

    /// A bound on each whole request (None: none); 0 is refused.
    pub fn set_request_deadline(&mut self, deadline: Option<Duration>) -> Result<()> {
        if deadline == Some(Duration::ZERO) {
            return Err(Error::invalid(
                "a request deadline of 0 ms would fail every request; use -1 for none",
            ));
        }
        self.request_deadline = deadline;
        Ok(())
    }

    /// TCP: at most this many open connections per client IP (0: no limit).
    pub fn set_max_connections_per_ip(&mut self, max: usize) -> Result<()> {
        if self.transport != Transport::Tcp {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "a per-IP connection limit applies to TCP servers, not {} servers",
                    self.transport.name()
                ),
            ));
        }
        self.max_connections_per_ip = max;
        Ok(())
    }

    /// Event mode: every loop runs `callback` (with the server and its loop
    /// index) every `interval_ms` milliseconds (at least 1), first one
    /// interval after it starts, until it stops; see event/timer.rs.
    pub fn add_loop_timer(&mut self, interval_ms: u64, callback: LoopTimerFn) -> Result<()> {
        self.require_mode(Concurrency::Event, "a loop timer")?;
        self.loop_timers
            .push(LoopTimer::new(interval_ms, callback)?);
        Ok(())
    }

    fn require_mode(&self, mode: Concurrency, what: &str) -> Result<()> {
        if self.concurrency != mode {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{what} applies to {} mode, not {} mode",
                    mode.name(),
                    self.concurrency.name()
                ),
            ));
        }
        Ok(())
    }
}

fn check_event_buffer(what: &str, bytes: usize) -> Result<()> {
    if !(1..=MAX_BUFFER_SIZE).contains(&bytes) {
        return Err(Error::invalid(format!(
            "{what} {bytes} is out of range (1 to {MAX_BUFFER_SIZE})"
        )));
    }
    Ok(())
}

/// A request's read/write timeout: none, or at least 1 ms.
pub(crate) fn check_request_timeout(timeout: Option<Duration>) -> Result<()> {
    if timeout == Some(Duration::ZERO) {
        return Err(Error::invalid(
            "a request timeout of 0 ms would fail every read; use -1 for no timeout",
        ));
    }
    Ok(())
}

fn check_buffer_size(which: &str, size: usize) -> Result<()> {
    if size > MAX_BUFFER_SIZE {
        return Err(Error::invalid(format!(
            "{which} buffer size {size} is larger than {MAX_BUFFER_SIZE}"
        )));
    }
    Ok(())
}

/// Converts the C convention for timeouts (milliseconds, negative = none).
pub fn timeout_from_ms(ms: i64) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation() {
        let c = Config::new(Transport::Tcp, Concurrency::Sync).unwrap();
        assert_eq!(c.backlog, libc::SOMAXCONN);
        assert!(!c.reuse_address && !c.reuse_port && c.bind_and_activate);
        assert_eq!((c.read_buffer_size, c.write_buffer_size), (8192, 0));
        assert_eq!(c.max_datagram_size, 8192);
        assert_eq!(c.timeout, None);
    }

    #[test]
    fn setters_check_their_input() {
        let mut tcp = Config::new(Transport::Tcp, Concurrency::Sync).unwrap();
        assert_eq!(
            tcp.set_backlog(0).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            tcp.set_max_datagram_size(100).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        let mut unix = Config::new(Transport::UnixDatagram, Concurrency::Sync).unwrap();
        assert_eq!(
            unix.set_tcp_nodelay(true).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        assert_eq!(
            unix.set_max_datagram_size(0).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(unix.set_max_datagram_size(65536).is_ok());
        assert_eq!(timeout_from_ms(-1), None);
        assert_eq!(timeout_from_ms(1500), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn mix_in_knobs_belong_to_their_mode() {
        let mut sync = Config::new(Transport::Tcp, Concurrency::Sync).unwrap();
        // max_children also bounds fork hand-offs, so every blocking mode has it.
        assert!(sync.set_max_children(3).is_ok());
        let mut event = Config::new(Transport::Tcp, Concurrency::Event).unwrap();
        assert_eq!(
            event.set_max_children(3).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        assert_eq!(
            sync.set_max_threads(3).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        let mut forking = Config::new(Transport::Udp, Concurrency::Forking).unwrap();
        assert_eq!(forking.max_children, 40);
        assert_eq!(
            forking.set_max_children(0).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(forking.set_max_children(2).is_ok());
        assert_eq!(
            forking.set_thread_stack_size(1000).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(forking.set_thread_stack_size(0).is_ok());
        assert_eq!(forking.thread_stack_size, DEFAULT_THREAD_STACK);
    }

    #[test]
    fn hardening_knobs_check_their_input() {
        let mut tcp = Config::new(Transport::Tcp, Concurrency::Event).unwrap();
        assert_eq!(tcp.lingering_time, Some(DEFAULT_LINGERING_TIME));
        assert_eq!(tcp.lingering_timeout, DEFAULT_LINGERING_TIMEOUT);
        assert_eq!(
            tcp.set_lingering(None, Duration::ZERO).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(tcp.set_lingering(None, Duration::from_millis(1)).is_ok());
        assert_eq!(tcp.lingering_time, None);
        assert_eq!(
            tcp.set_request_deadline(Some(Duration::ZERO))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidArgument
        );
        assert!(tcp.set_request_deadline(None).is_ok());
        assert!(tcp.set_max_connections_per_ip(4).is_ok());
        let mut udp = Config::new(Transport::Udp, Concurrency::Sync).unwrap();
        assert_eq!(
            udp.set_lingering(None, Duration::from_secs(1))
                .unwrap_err()
                .kind(),
            ErrorKind::Unsupported
        );
        let mut unix = Config::new(Transport::UnixStream, Concurrency::Sync).unwrap();
        assert_eq!(
            unix.set_max_connections_per_ip(1).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
    }
}
