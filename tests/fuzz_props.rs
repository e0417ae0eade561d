//! Property tests (proptest) of the safe core's input checks:
//!
//! - address_*: `ServerAddress::parse` never panics on any text, accepts
//!   exactly the documented forms, and `format_sockaddr` is its inverse for
//!   every IPv4/IPv6 socket address, Unix path (1 to 107 bytes) and
//!   abstract name; longer Unix names fail with `ErrorKind::Address`. Inputs
//!   that would go to the system resolver are not generated (no DNS
//!   lookups, whatever the machine's network).
//! - config_*: every `Config` setter, in every transport and mode, given
//!   random values, either stores the value (read back through the
//!   `Debug` form, the only view an integration test has of the crate's
//!   fields) or fails with a documented kind (`InvalidArgument` or
//!   `Unsupported`) and leaves the configuration as it was; never panics.
//!   Where the documented rule is short, the outcome is checked against it.
//!
//! Bounded: CASES cases per property (a fixed count, seconds in all).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config as RunnerConfig;
use socketserver::address::{format_sockaddr, ServerAddress};
use socketserver::{Concurrency, Config, ErrorKind, Transport};

/// Cases per property: enough to hit every branch, small enough for seconds.
const CASES: u32 = 512;

fn runner() -> RunnerConfig {
    RunnerConfig {
        cases: CASES,
        // No persistence files in the source tree; failures print the input.
        failure_persistence: None,
        ..RunnerConfig::default()
    }
}

// ---------------------------------------------------------------- addresses

/// IPv6 addresses without a scope id or flow label: the forms `parse`
/// accepts (a scope id, `[fe80::1%2]`, is not an address it parses).
fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<u128>(), any::<u16>()).prop_map(|(ip, port)| {
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
        }),
    ]
}

/// Text that `parse(text, false)` rejects or accepts before any name
/// lookup: no ':' at all, an IPv6 bracket form, or an IP literal with a
/// random port text.
fn inet_text_without_lookup() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^:]{0,40}",
        "\\[[^\\]]{0,40}\\][^\\]]{0,10}",
        (socket_addr(), "[-+0-9a-z ]{0,8}").prop_map(|(a, port)| format!("{}:{port}", a.ip())),
        (socket_addr(), "[-+0-9]{0,8}").prop_map(|(a, port)| match a {
            SocketAddr::V6(v6) => format!("[{}]:{port}", v6.ip()),
            SocketAddr::V4(v4) => format!("{}:{port}", v4.ip()),
        }),
    ]
}

/// What std's `SocketAddr` parser gives for `text`, except that a port
/// may start with '+' (`u16::from_str`, which `parse` uses, accepts it:
/// lenient, harmless, kept).
fn std_socket_addr(text: &str) -> Option<SocketAddr> {
    let text = match text.rsplit_once(":+") {
        Some((host, port)) if !port.starts_with(['+', '-']) => format!("{host}:{port}"),
        _ => text.to_string(),
    };
    text.parse().ok()
}

proptest! {
    #![proptest_config(runner())]

    /// Any text at all as a Unix address: a value or an Address error.
    #[test]
    fn address_unix_any_text(text in any::<String>()) {
        match ServerAddress::parse(&text, true) {
            Ok(ServerAddress::UnixPath(p)) => {
                prop_assert!(!text.starts_with('@'));
                prop_assert!(!text.is_empty() && text.len() <= 107 && !text.contains('\0'));
                prop_assert_eq!(p.as_os_str().len(), text.len());
            }
            Ok(ServerAddress::UnixAbstract(name)) => {
                prop_assert_eq!(format!("@{}", String::from_utf8_lossy(&name)), text.clone());
                prop_assert!(!name.is_empty() && name.len() <= 107);
            }
            Ok(other) => prop_assert!(false, "{text:?} parsed as {other:?}"),
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::Address, "{:?}: {}", text, e.message());
                let too_long = if text.starts_with('@') { text.len() > 108 } else { text.len() > 107 };
                prop_assert!(text.is_empty() || text.contains('\0') || text == "@" || too_long,
                    "{text:?} refused: {}", e.message());
            }
        }
    }

    /// Text for an IP transport that needs no lookup: a value (equal to
    /// what std parses) or an Address error, never a panic.
    #[test]
    fn address_inet_no_lookup(text in inet_text_without_lookup()) {
        match ServerAddress::parse(&text, false) {
            Ok(ServerAddress::Inet(a)) => {
                prop_assert_eq!(Some(a), std_socket_addr(&text), "{:?}", text);
            }
            Ok(other) => prop_assert!(false, "{text:?} parsed as {other:?}"),
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::Address, "{:?}: {}", text, e.message());
                prop_assert!(std_socket_addr(&text).is_none(), "{text:?} refused: {}", e.message());
            }
        }
    }

    /// format_sockaddr(parse(format(a))) == format(a) for every IP socket address.
    #[test]
    fn address_inet_round_trip(addr in socket_addr()) {
        let text = addr.to_string();
        let parsed = ServerAddress::parse(&text, false)
            .map_err(|e| TestCaseError::fail(format!("{text:?}: {}", e.message())))?;
        prop_assert_eq!(&parsed, &ServerAddress::Inet(addr));
        let sockaddr = parsed.to_sockaddr()
            .map_err(|e| TestCaseError::fail(format!("{text:?}: {}", e.message())))?;
        prop_assert_eq!(format_sockaddr(&sockaddr), text);
    }

    /// Unix paths and abstract names of 1 to 107 bytes round-trip through
    /// the kernel's sockaddr_un; 108 and more are Address errors.
    #[test]
    fn address_unix_round_trip(name in "[^\\x00@][^\\x00]{0,120}", abstract_ in any::<bool>()) {
        let text = if abstract_ { format!("@{name}") } else { name.clone() };
        let len = if abstract_ { name.len() } else { text.len() };
        match ServerAddress::parse(&text, true) {
            Ok(parsed) => {
                prop_assert!(len <= 107, "{len}-byte name accepted: {text:?}");
                let sockaddr = parsed.to_sockaddr()
                    .map_err(|e| TestCaseError::fail(format!("{text:?}: {}", e.message())))?;
                prop_assert_eq!(format_sockaddr(&sockaddr), text);
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::Address);
                prop_assert!(len > 107, "{len}-byte name refused: {text:?}: {}", e.message());
            }
        }
    }
}

// ---------------------------------------------------------------- config

const TRANSPORTS: [Transport; 4] = [
    Transport::Tcp,
    Transport::Udp,
    Transport::UnixStream,
    Transport::UnixDatagram,
];
const MODES: [Concurrency; 5] = [
    Concurrency::Sync,
    Concurrency::Threading,
    Concurrency::Forking,
    Concurrency::ThreadPool,
    Concurrency::Event,
];

fn fresh_config() -> impl Strategy<Value = Config> {
    (0..TRANSPORTS.len(), 0..MODES.len())
        .prop_map(|(t, m)| Config::new(TRANSPORTS[t], MODES[m]).expect("Config::new"))
}

/// The `Debug` text of one field, e.g. `Some(5ms)` for `timeout`.
fn field(config: &Config, name: &str) -> String {
    let text = format!("{config:?}");
    let start = [format!("{{ {name}: "), format!(", {name}: ")]
        .iter()
        .find_map(|p| text.find(p.as_str()).map(|i| i + p.len()))
        .unwrap_or_else(|| panic!("no field {name} in {text}"));
    // The value ends at the next ", " or " }" outside brackets.
    let rest = &text[start..];
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth > 0 => depth -= 1,
            ',' | ' ' if depth == 0 => return rest[..i].to_string(),
            _ => {}
        }
    }
    rest.to_string()
}

/// A setter call: its result, and on success the fields it must have
/// stored (name, expected Debug text).
struct Outcome {
    result: socketserver::Result<()>,
    stored: Vec<(&'static str, String)>,
}

/// Random values, small and at the edges, for sizes and counts.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..4,
        0usize..70_000,
        any::<usize>(),
        Just(usize::MAX),
        (0u32..40).prop_map(|s| 1usize << s),
        (0u32..40).prop_map(|s| (1usize << s) + 1),
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        (0u64..10_000).prop_map(Duration::from_millis),
        any::<u64>().prop_map(Duration::from_millis),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn opt_duration() -> impl Strategy<Value = Option<Duration>> {
    prop_oneof![Just(None), duration().prop_map(Some)]
}

#[derive(Debug, Clone)]
enum Call {
    ReuseAddress(bool),
    ReusePort(bool),
    Backlog(i64),
    Ipv6Only(bool),
    BindAndActivate(bool),
    Timeout(Option<Duration>),
    RequestTimeout(Option<Duration>),
    TcpNodelay(bool),
    ReadBufferSize(usize),
    WriteBufferSize(usize),
    MaxDatagramSize(usize),
    PollInterval(Duration),
    DaemonThreads(bool),
    BlockOnClose(bool),
    MaxThreads(usize),
    ThreadStackSize(usize),
    MaxChildren(usize),
    Threads(usize),
    QueueSize(usize),
    IdleTimeout(Option<Duration>),
    MaxConnections(usize),
    OutputHighWater(usize),
    InputLimit(usize),
    Lingering(Option<Duration>, Duration),
    RequestDeadline(Option<Duration>),
    MaxConnectionsPerIp(usize),
    OutputLowWater(usize),
}

/// Every setter of `Config`, with random arguments. A new setter must be
/// added here (and to `apply`).
fn call() -> impl Strategy<Value = Call> {
    let backlog = prop_oneof![
        any::<i64>(),
        -2i64..4,
        Just(i64::from(i32::MAX)),
        Just(i64::from(i32::MAX) + 1),
        Just(i64::MIN),
    ];
    prop_oneof![
        any::<bool>().prop_map(Call::ReuseAddress),
        any::<bool>().prop_map(Call::ReusePort),
        backlog.prop_map(Call::Backlog),
        any::<bool>().prop_map(Call::Ipv6Only),
        any::<bool>().prop_map(Call::BindAndActivate),
        opt_duration().prop_map(Call::Timeout),
        opt_duration().prop_map(Call::RequestTimeout),
        any::<bool>().prop_map(Call::TcpNodelay),
        size().prop_map(Call::ReadBufferSize),
        size().prop_map(Call::WriteBufferSize),
        size().prop_map(Call::MaxDatagramSize),
        duration().prop_map(Call::PollInterval),
        any::<bool>().prop_map(Call::DaemonThreads),
        any::<bool>().prop_map(Call::BlockOnClose),
        size().prop_map(Call::MaxThreads),
        size().prop_map(Call::ThreadStackSize),
        size().prop_map(Call::MaxChildren),
        size().prop_map(Call::Threads),
        size().prop_map(Call::QueueSize),
        opt_duration().prop_map(Call::IdleTimeout),
        size().prop_map(Call::MaxConnections),
        size().prop_map(Call::OutputHighWater),
        size().prop_map(Call::InputLimit),
        (opt_duration(), duration()).prop_map(|(t, o)| Call::Lingering(t, o)),
        opt_duration().prop_map(Call::RequestDeadline),
        size().prop_map(Call::MaxConnectionsPerIp),
        size().prop_map(Call::OutputLowWater),
    ]
}

fn dbg<T: std::fmt::Debug>(v: T) -> String {
    format!("{v:?}")
}

/// Applies `call` to `c`; says which fields a success must have set.
fn apply(c: &mut Config, call: &Call) -> Outcome {
    let (result, stored): (socketserver::Result<()>, Vec<(&'static str, String)>) = match *call {
        Call::ReuseAddress(on) => {
            c.set_reuse_address(on);
            (Ok(()), vec![("reuse_address", dbg(on))])
        }
        Call::ReusePort(on) => {
            c.set_reuse_port(on);
            (Ok(()), vec![("reuse_port", dbg(on))])
        }
        Call::Backlog(n) => (c.set_backlog(n), vec![("backlog", dbg(n))]),
        Call::Ipv6Only(on) => (c.set_ipv6_only(on), vec![("ipv6_only", dbg(Some(on)))]),
        Call::BindAndActivate(on) => {
            c.set_bind_and_activate(on);
            (Ok(()), vec![("bind_and_activate", dbg(on))])
        }
        Call::Timeout(t) => {
            c.set_timeout(t);
            (Ok(()), vec![("timeout", dbg(t))])
        }
        Call::RequestTimeout(t) => (c.set_request_timeout(t), vec![("request_timeout", dbg(t))]),
        Call::TcpNodelay(on) => (c.set_tcp_nodelay(on), vec![("tcp_nodelay", dbg(on))]),
        Call::ReadBufferSize(n) => (
            c.set_read_buffer_size(n),
            vec![("read_buffer_size", dbg(n))],
        ),
        Call::WriteBufferSize(n) => (
            c.set_write_buffer_size(n),
            vec![("write_buffer_size", dbg(n))],
        ),
        Call::MaxDatagramSize(n) => (
            c.set_max_datagram_size(n),
            vec![("max_datagram_size", dbg(n))],
        ),
        Call::PollInterval(d) => (c.set_poll_interval(d), vec![("poll_interval", dbg(d))]),
        Call::DaemonThreads(on) => {
            c.set_daemon_threads(on);
            (Ok(()), vec![("daemon_threads", dbg(on))])
        }
        Call::BlockOnClose(on) => {
            c.set_block_on_close(on);
            (Ok(()), vec![("block_on_close", dbg(on))])
        }
        Call::MaxThreads(n) => (c.set_max_threads(n), vec![("max_threads", dbg(n))]),
        Call::ThreadStackSize(n) => {
            // 0 stores the documented default, 8 MiB.
            let stored = if n == 0 { 8 * 1024 * 1024 } else { n };
            (
                c.set_thread_stack_size(n),
                vec![("thread_stack_size", dbg(stored))],
            )
        }
        Call::MaxChildren(n) => (c.set_max_children(n), vec![("max_children", dbg(n))]),
        Call::Threads(n) => (c.set_threads(n), vec![("threads", dbg(n))]),
        Call::QueueSize(n) => (c.set_queue_size(n), vec![("queue_size", dbg(n))]),
        Call::IdleTimeout(t) => (c.set_idle_timeout(t), vec![("idle_timeout", dbg(t))]),
        Call::MaxConnections(n) => (c.set_max_connections(n), vec![("max_connections", dbg(n))]),
        Call::OutputHighWater(n) => (
            c.set_output_high_water(n),
            vec![("output_high_water", dbg(n))],
        ),
        Call::InputLimit(n) => (c.set_input_limit(n), vec![("input_limit", dbg(n))]),
        Call::Lingering(t, o) => (
            c.set_lingering(t, o),
            vec![("lingering_time", dbg(t)), ("lingering_timeout", dbg(o))],
        ),
        Call::RequestDeadline(t) => (
            c.set_request_deadline(t),
            vec![("request_deadline", dbg(t))],
        ),
        Call::MaxConnectionsPerIp(n) => (
            c.set_max_connections_per_ip(n),
            vec![("max_connections_per_ip", dbg(n))],
        ),
        Call::OutputLowWater(n) => (
            c.set_output_low_water(n),
            vec![("output_low_water", dbg(n))],
        ),
    };
    Outcome { result, stored }
}

/// The documented rule, where it fits on a line: Some(true) = must be
/// accepted, Some(false) = must be refused, None = not modelled here.
fn documented(c: &Config, call: &Call) -> Option<bool> {
    let stream = c.transport().is_stream();
    let mode = c.concurrency();
    const MAX_BUFFER: usize = 64 * 1024 * 1024;
    Some(match *call {
        Call::Backlog(n) => stream && (1..=i64::from(i32::MAX)).contains(&n),
        Call::Ipv6Only(_) => !c.transport().is_unix(),
        Call::TcpNodelay(_) => c.transport() == Transport::Tcp,
        Call::ReadBufferSize(n) | Call::WriteBufferSize(n) => n <= MAX_BUFFER,
        Call::MaxDatagramSize(n) => !stream && (1..=16 * 1024 * 1024).contains(&n),
        Call::PollInterval(d) => !d.is_zero(),
        Call::RequestTimeout(t) | Call::RequestDeadline(t) => t != Some(Duration::ZERO),
        Call::MaxThreads(_) => mode == Concurrency::Threading,
        Call::ThreadStackSize(n) => n == 0 || (64 * 1024..=1 << 30).contains(&n),
        Call::MaxChildren(n) => mode != Concurrency::Event && n >= 1,
        Call::Threads(n) => match mode {
            Concurrency::ThreadPool => n <= 1024,
            Concurrency::Event => n <= 255,
            _ => false,
        },
        Call::QueueSize(n) => mode == Concurrency::ThreadPool && (1..=1 << 20).contains(&n),
        Call::IdleTimeout(t) => mode == Concurrency::Event && t != Some(Duration::ZERO),
        Call::MaxConnections(_) => mode == Concurrency::Event,
        Call::OutputHighWater(n) | Call::InputLimit(n) => {
            mode == Concurrency::Event && (1..=MAX_BUFFER).contains(&n)
        }
        Call::Lingering(_, o) => stream && !o.is_zero(),
        Call::MaxConnectionsPerIp(_) => c.transport() == Transport::Tcp,
        Call::OutputLowWater(n) => mode == Concurrency::Event && n <= MAX_BUFFER,
        _ => return None,
    })
}

proptest! {
    #![proptest_config(runner())]

    /// A sequence of random setter calls on a fresh configuration of a
    /// random transport and mode: each one stores its value or fails with
    /// a documented kind and changes nothing.
    #[test]
    fn config_setters(mut config in fresh_config(), calls in prop::collection::vec(call(), 1..12)) {
        for call in &calls {
            let before = format!("{config:?}");
            let expect = documented(&config, call);
            let outcome = apply(&mut config, call);
            match &outcome.result {
                Ok(()) => {
                    for (name, value) in &outcome.stored {
                        prop_assert_eq!(&field(&config, name), value, "{:?} stored", call);
                    }
                }
                Err(e) => {
                    prop_assert!(
                        matches!(e.kind(), ErrorKind::InvalidArgument | ErrorKind::Unsupported),
                        "{:?} failed with {:?}: {}", call, e.kind(), e.message()
                    );
                    prop_assert!(!e.message().is_empty(), "{:?}: empty message", call);
                    prop_assert_eq!(format!("{config:?}"), before, "{:?} failed but changed the config", call);
                }
            }
            if let Some(accept) = expect {
                prop_assert_eq!(
                    outcome.result.is_ok(), accept,
                    "{:?} on {:?}/{:?}: {:?}", call, config.transport(), config.concurrency(),
                    outcome.result.as_ref().err().map(|e| e.message().to_string())
                );
            }
        }
    }
}

/// The Debug reader itself finds the first and the last fields.
#[test]
fn config_debug_fields_are_readable() {
    let c = Config::new(Transport::Tcp, Concurrency::Sync).unwrap();
    assert_eq!(field(&c, "transport"), "Tcp");
    assert_eq!(field(&c, "max_connections_per_ip"), "0");
    assert_eq!(field(&c, "timeout"), "None");
    assert_eq!(field(&c, "lingering_time"), "Some(30s)");
}
