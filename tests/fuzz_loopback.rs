//! Loopback fuzz of the example servers, driven as a user's clients would:
//! c_examples/echo_server (TCP, in every mode), c_examples/http_hello
//! (event and threading) and c_examples/resp_server (two event loops) each
//! get FUZZ_CONNECTIONS hostile connections from
//! FUZZ_THREADS threads — random bytes (for http_hello also mutated HTTP
//! requests, for resp_server mutated RESP requests), then a plain close, a half-close (shutdown(SHUT_WR), then
//! reading to EOF) or a reset (SO_LINGER 0, then close) at a random point —
//! while a well-behaved client checks, in parallel, that correct replies
//! keep coming (every one of its exchanges must succeed). At the end the
//! server must still answer, exit with status 0 within EXIT_TIMEOUT of
//! SIGTERM, and leave no process of its group running.
//!
//! Bounded: a fixed number of connections, each with socket timeouts, and
//! a time cap (FUZZ_TIME) after which the fuzzers stop early. Seeded: the
//! seed is printed; $SS_FUZZ_SEED replays a run.
//!
//! survive_*: echo_server in every mode, TCP, with the options a user
//! facing hostile clients gives it (--idle-timeout, --request-deadline),
//! keeps giving a well-behaved client correct echoes within GOOD_BOUND
//! while dribblers (a byte every 100-300 ms), non-readers (send, never
//! read) and the fuzzers above press it at once; and, with RLIMIT_NOFILE
//! 64 and its defaults, out of descriptors it does not spin (CPU time from
//! /proc), keeps its listener and serves again once the hostile clients
//! close.
//!
//! `make valgrind` and `make sanitize` reuse it: $SS_FUZZ_WRAPPER is a
//! command line put in front of each server (e.g. `valgrind ...`),
//! $SS_FUZZ_PROGRAM_DIR a directory holding the example programs to run
//! instead of compiling them (e.g. built with -fsanitize=thread against a
//! sanitized library), and $SS_FUZZ_CONNECTIONS lowers the connection
//! count for a slow server.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::SockRef;

use common::example::ExampleProcess;

/// Hostile connections per server, spread over FUZZ_THREADS threads
/// ($SS_FUZZ_CONNECTIONS overrides).
const FUZZ_CONNECTIONS: u64 = 2000;
const FUZZ_THREADS: u64 = 4;
/// The fuzzers stop early once this much time has passed.
const FUZZ_TIME: Duration = Duration::from_secs(5);
/// Read/write timeout of every client socket: a reply slower than this is
/// a failure (a hang, not a slow machine).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// xorshift64*: the same sequence everywhere for one seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(2685821657736338717)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    env_u64("SS_FUZZ_SEED", 20261201)
}

/// $SS_FUZZ_WRAPPER split on whitespace: the command that runs the server.
fn wrapper() -> Vec<String> {
    std::env::var("SS_FUZZ_WRAPPER")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// How long a server may take to start: 15 s, or 60 s under a wrapper
/// (valgrind starts a program 20-50 times slower, more on a busy machine).
fn startup_timeout() -> Duration {
    Duration::from_secs(if wrapper().is_empty() { 15 } else { 60 })
}

/// A server process in a process group of its own (see ExampleProcess);
/// killed with its group on drop.
struct Server {
    process: ExampleProcess,
    addr: SocketAddr,
    what: String,
}

impl Server {
    fn start(program: &str, args: &[&str]) -> Server {
        Server::start_with_nofile(program, args, None)
    }

    /// Like `start`, with RLIMIT_NOFILE's soft limit set to `nofile` in
    /// the server (and its wrapper, if any) before it runs.
    fn start_with_nofile(program: &str, args: &[&str], nofile: Option<u64>) -> Server {
        let exe: PathBuf = match std::env::var_os("SS_FUZZ_PROGRAM_DIR") {
            Some(dir) => PathBuf::from(dir).join(program),
            None => common::compile_example(program, &["-O2"]),
        };
        let what = format!("{program} {}", args.join(" "));
        let wrap = wrapper();
        let mut cmd = match wrap.split_first() {
            Some((tool, tool_args)) => {
                let mut c = Command::new(tool);
                c.args(tool_args).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        if std::env::var_os("SS_FUZZ_PROGRAM_DIR").is_some() {
            // Prebuilt programs bring their own library (e.g. a sanitized
            // one): not the one cargo's LD_LIBRARY_PATH points to.
            cmd.env_remove("LD_LIBRARY_PATH");
        }
        if let Some(limit) = nofile {
            let hard = nofile_hard_limit();
            // SAFETY: the closure runs in the forked child before exec and
            // only calls setrlimit, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd.args(args);
        let mut process = ExampleProcess::start(cmd, startup_timeout());
        let addr = match process.addr().parse() {
            Ok(addr) => addr,
            Err(e) => {
                let err = process.kill_and_stderr();
                panic!(
                    "{what}: \"listening on {}\": {e}\n--- stderr ---\n{err}",
                    process.addr()
                );
            }
        };
        Server {
            process,
            addr,
            what,
        }
    }

    fn kill_and_stderr(&mut self) -> String {
        self.process.kill_and_stderr()
    }

    fn alive(&mut self) -> bool {
        self.process.alive()
    }

    /// SIGTERM; the server must exit 0 within EXIT_TIMEOUT and leave no
    /// process of its group behind (forked children included).
    fn stop(mut self) {
        self.process.signal(libc::SIGTERM);
        let start = Instant::now();
        let Some(status) = self.process.wait_timeout(EXIT_TIMEOUT) else {
            let err = self.kill_and_stderr();
            panic!(
                "{} still running {EXIT_TIMEOUT:?} after SIGTERM\n--- stderr ---\n{err}",
                self.what
            );
        };
        // Children reparented to init are reaped by it: wait for the group
        // to empty.
        let group_gone = self
            .process
            .wait_group_gone(EXIT_TIMEOUT.saturating_sub(start.elapsed()));
        let err = self.kill_and_stderr();
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM\n--- stderr ---\n{err}",
            self.what
        );
        assert!(
            group_gone,
            "{}: processes of its group still ran {EXIT_TIMEOUT:?} after SIGTERM\n--- stderr ---\n{err}",
            self.what
        );
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Reads until EOF or an error (a reset is a fine end for a fuzzer).
fn drain_to_eof(s: &mut TcpStream) {
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// The protocol under fuzz: what a hostile client sends, and one
/// well-behaved exchange.
#[derive(Clone, Copy)]
enum Protocol {
    Echo,
    Http,
    Resp,
}

const HTTP_GOOD: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
const HTTP_PIECES: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"/ ",
    b"/x?y ",
    b"HTTP/1.1\r\n",
    b"HTTP/1.0\r\n",
    b"Host: t\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 99999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b":",
    b" ",
];

const RESP_PIECES: &[&[u8]] = &[
    b"*",
    b"*1\r\n",
    b"*3\r\n",
    b"*0\r\n",
    b"*-1\r\n",
    b"*99999\r\n",
    b"$",
    b"$3\r\n",
    b"$-1\r\n",
    b"$1048577\r\n",
    b"$2000000000\r\n",
    b"SET",
    b"GET",
    b"INCR",
    b"DEL",
    b"EXISTS",
    b"ECHO",
    b"PING",
    b"COMMAND",
    b"QUIT",
    b"\r\n",
    b"\n",
    b"\"",
    b"'",
    b"\\x4",
    b" ",
    b"k",
    b"\0",
];

/// A RESP request: an array of bulk strings.
fn resp_request(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

impl Protocol {
    fn hostile_bytes(self, rng: &mut Rng) -> Vec<u8> {
        // At most 16 KiB: a sync echo server writes it back while this
        // client may not read, and must not block on a full socket.
        let random = rng.below(16 * 1024) as usize;
        match (self, rng.below(3)) {
            (Protocol::Http, 0) => {
                let mut out = Vec::new();
                for _ in 0..rng.below(30) {
                    out.extend_from_slice(
                        HTTP_PIECES[rng.below(HTTP_PIECES.len() as u64) as usize],
                    );
                }
                out
            }
            (Protocol::Resp, 0) => {
                let mut out = Vec::new();
                for _ in 0..rng.below(40) {
                    out.extend_from_slice(
                        RESP_PIECES[rng.below(RESP_PIECES.len() as u64) as usize],
                    );
                }
                out
            }
            (Protocol::Resp, 1) => {
                let mut out = Vec::new();
                for _ in 0..1 + rng.below(5) {
                    let len = rng.below(64) as usize;
                    let value = rng.bytes(len);
                    out.extend(resp_request(&[b"SET", b"fuzz", &value]));
                    out.extend(resp_request(&[b"INCR", b"fuzz:n"]));
                    out.extend_from_slice(b"GET fuzz\r\n");
                }
                for _ in 0..rng.below(4) {
                    let i = rng.below(out.len() as u64) as usize;
                    out[i] = rng.next() as u8;
                }
                out.truncate(rng.below(out.len() as u64 + 1) as usize);
                out
            }
            (Protocol::Http, 1) => {
                let mut out = HTTP_GOOD.repeat(1 + rng.below(5) as usize);
                for _ in 0..rng.below(4) {
                    let i = rng.below(out.len() as u64) as usize;
                    out[i] = rng.next() as u8;
                }
                out.truncate(rng.below(out.len() as u64 + 1) as usize);
                out
            }
            _ => rng.bytes(random),
        }
    }

    /// One exchange that must succeed; Err says what went wrong.
    fn check(self, addr: SocketAddr, rng: &mut Rng) -> Result<(), String> {
        let mut s = connect(addr).map_err(|e| format!("connect: {e}"))?;
        match self {
            Protocol::Echo => {
                let len = 1 + rng.below(8192) as usize;
                let msg = rng.bytes(len);
                s.write_all(&msg).map_err(|e| format!("write: {e}"))?;
                s.shutdown(Shutdown::Write)
                    .map_err(|e| format!("shutdown: {e}"))?;
                let mut got = Vec::new();
                s.read_to_end(&mut got)
                    .map_err(|e| format!("read after {} of {len} bytes: {e}", got.len()))?;
                if got != msg {
                    return Err(format!(
                        "echo of {len} bytes came back as {} bytes, different",
                        got.len()
                    ));
                }
            }
            Protocol::Http => {
                s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .map_err(|e| format!("write: {e}"))?;
                let mut got = Vec::new();
                s.read_to_end(&mut got)
                    .map_err(|e| format!("read after {} bytes: {e}", got.len()))?;
                let text = String::from_utf8_lossy(&got);
                if !text.starts_with("HTTP/1.1 200 OK\r\n")
                    || !text.ends_with("\r\n\r\nHello, world!\n")
                {
                    return Err(format!("unexpected response {text:?}"));
                }
            }
            Protocol::Resp => {
                // A key of its own (the fuzzers write to "fuzz"), a value
                // with any bytes, then QUIT: the server closes.
                let key = format!("check:{}", rng.next());
                let len = rng.below(8192) as usize;
                let value = rng.bytes(len);
                let mut req = resp_request(&[b"SET", key.as_bytes(), &value]);
                req.extend(resp_request(&[b"GET", key.as_bytes()]));
                req.extend(resp_request(&[b"DEL", key.as_bytes()]));
                req.extend_from_slice(b"QUIT\r\n");
                s.write_all(&req).map_err(|e| format!("write: {e}"))?;
                let mut expect = b"+OK\r\n".to_vec();
                expect.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
                expect.extend_from_slice(&value);
                expect.extend_from_slice(b"\r\n:1\r\n+OK\r\n");
                let mut got = Vec::new();
                s.read_to_end(&mut got)
                    .map_err(|e| format!("read after {} bytes: {e}", got.len()))?;
                if got != expect {
                    return Err(format!(
                        "SET/GET/DEL/QUIT of a {}-byte value: {} bytes of replies, expected {}: {:?}",
                        value.len(),
                        got.len(),
                        expect.len(),
                        String::from_utf8_lossy(&got[..got.len().min(200)])
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One hostile connection: send, then end it in a random way.
fn fuzz_once(addr: SocketAddr, protocol: Protocol, rng: &mut Rng) {
    let Ok(mut s) = connect(addr) else {
        return; // a refused connection is the server's right under load
    };
    let data = protocol.hostile_bytes(rng);
    let cut = rng.below(data.len() as u64 + 1) as usize;
    let _ = s.write_all(&data[..cut]);
    match rng.below(4) {
        0 => {
            // Half-close, then read what comes back until the server ends.
            let _ = s.write_all(&data[cut..]);
            let _ = s.shutdown(Shutdown::Write);
            drain_to_eof(&mut s);
        }
        1 => {
            // Reset: SO_LINGER 0 makes close send RST.
            let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
        2 => {
            // Read a little of the reply, then a plain close.
            let _ = s.write_all(&data[cut..]);
            s.set_read_timeout(Some(Duration::from_millis(20))).ok();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
        }
        _ => {
            // Plain close with the rest unsent, maybe unread replies.
        }
    }
}

/// Fuzzes `program args` with `protocol` while a checker runs.
fn fuzz_server(program: &str, args: &[&str], protocol: Protocol) {
    let seed = seed();
    let mut server = Server::start(program, args);
    let addr = server.addr;
    println!(
        "{}: seed {seed} (SS_FUZZ_SEED to replay), {addr}",
        server.what
    );
    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();

    let checker = {
        let stop = stop.clone();
        let checked = checked.clone();
        std::thread::spawn(move || -> Result<(), String> {
            let mut rng = Rng(seed ^ 0x5eed);
            while !stop.load(Ordering::SeqCst) {
                protocol
                    .check(addr, &mut rng)
                    .map_err(|e| format!("exchange {}: {e}", checked.load(Ordering::SeqCst) + 1))?;
                checked.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        })
    };
    let per_thread = env_u64("SS_FUZZ_CONNECTIONS", FUZZ_CONNECTIONS) / FUZZ_THREADS;
    let fuzzers: Vec<JoinHandle<u64>> = (0..FUZZ_THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng(seed.wrapping_add(t + 1).wrapping_mul(0x9e3779b97f4a7c15) | 1);
                let mut n = 0;
                while n < per_thread && start.elapsed() < FUZZ_TIME {
                    fuzz_once(addr, protocol, &mut rng);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let fuzzed: u64 = fuzzers.into_iter().map(|f| f.join().expect("fuzzer")).sum();
    stop.store(true, Ordering::SeqCst);
    let checker_result = checker.join().expect("checker thread");
    let alive = server.alive();
    if let Err(e) = checker_result.and_then(|()| {
        if alive {
            Ok(())
        } else {
            Err("the server died".to_string())
        }
    }) {
        let err = server.kill_and_stderr();
        panic!(
            "{} (seed {seed}) after {fuzzed} hostile connections: {e}\n--- stderr ---\n{err}",
            server.what
        );
    }
    // Still up and answering once the storm is over.
    let mut rng = Rng(seed);
    for i in 0..3 {
        if let Err(e) = protocol.check(addr, &mut rng) {
            let err = server.kill_and_stderr();
            panic!(
                "{} (seed {seed}): final exchange {i} failed: {e}\n--- stderr ---\n{err}",
                server.what
            );
        }
    }
    println!(
        "{}: {fuzzed} hostile connections, {} good exchanges in {:.1} s",
        server.what,
        checked.load(Ordering::SeqCst),
        start.elapsed().as_secs_f64()
    );
    assert!(
        checked.load(Ordering::SeqCst) > 0,
        "{}: no exchange completed",
        server.what
    );
    server.stop();
}

fn echo(mode: &str) {
    fuzz_server(
        "echo_server",
        &[
            "--transport",
            "tcp",
            "--mode",
            mode,
            "--address",
            "127.0.0.1:0",
        ],
        Protocol::Echo,
    );
}

fn http(mode: &str) {
    // --threads: two event loops; threading mode keeps its default (no cap).
    let mut args = vec!["--mode", mode, "--address", "127.0.0.1:0"];
    if mode == "event" {
        args.extend(["--threads", "2"]);
    }
    fuzz_server("http_hello", &args, Protocol::Http);
}

/// resp_server with two event loops (so that the table's locks are used).
#[test]
fn resp_event() {
    fuzz_server(
        "resp_server",
        &["--address", "127.0.0.1:0", "--threads", "2"],
        Protocol::Resp,
    );
}

#[test]
fn echo_sync() {
    echo("sync");
}

#[test]
fn echo_threading() {
    echo("threading");
}

#[test]
fn echo_forking() {
    echo("forking");
}

#[test]
fn echo_pool() {
    echo("pool");
}

#[test]
fn echo_event() {
    echo("event");
}

#[test]
fn http_event() {
    http("event");
}

#[test]
fn http_threading() {
    http("threading");
}

/// RLIMIT_NOFILE's hard limit of this process (kept for the server: only
/// its soft limit is lowered).
fn nofile_hard_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we pass, nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    lim.rlim_max
}

// ---------------------------------------------------------------------
// Survival: echo_server in every mode, with the options a user facing
// hostile clients gives it, keeps serving well-behaved clients while slow
// clients (dribblers and non-readers), the fuzzers above (garbage, resets,
// half-closes) and fd exhaustion press it.
// ---------------------------------------------------------------------

/// echo_server's options against slow clients: a silence (or a client not
/// reading its echo) of --idle-timeout ends the connection, and
/// --request-deadline bounds a whole connection in the blocking modes (a
/// dribbler is never idle) and an output that stays full in event mode.
const SURVIVE_IDLE_MS: u64 = 500;
const SURVIVE_DEADLINE_MS: u64 = 1000;
/// Hostile slow clients of each kind, each reconnecting once cut off.
const DRIBBLERS: usize = 3;
const NON_READERS: usize = 3;
/// How long the hostile clients press the server.
const SURVIVE_WINDOW: Duration = Duration::from_secs(4);
/// Longest a well-behaved exchange may take while hostile clients press:
/// a sync server serves one connection at a time, so a good client may
/// wait behind every hostile one (each cut off at the latest after the
/// deadline), plus slack for a loaded machine. A starvation bound, not a
/// speed measure.
const GOOD_BOUND: Duration =
    Duration::from_millis((DRIBBLERS + NON_READERS + 2) as u64 * SURVIVE_DEADLINE_MS + 2000);

/// How much the slow-client tests stretch their time limits (the server's
/// and their own) when a wrapper runs a concurrent server: valgrind runs
/// it 20-50x slower, and a well-behaved exchange must still fit in the
/// request deadline while the window still outlasts it. 1 natively, and
/// in SS_SYNC, where the good client waits behind every hostile one and a
/// longer deadline would outlast its own read timeout (IO_TIMEOUT).
fn survive_scale(mode: &str) -> u32 {
    if wrapper().is_empty() || mode == "sync" {
        1
    } else {
        2
    }
}

fn survive_args(mode: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "--transport",
        "tcp",
        "--mode",
        mode,
        "--address",
        "127.0.0.1:0",
        "--idle-timeout",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push((SURVIVE_IDLE_MS * u64::from(survive_scale(mode))).to_string());
    args.push("--request-deadline".into());
    args.push((SURVIVE_DEADLINE_MS * u64::from(survive_scale(mode))).to_string());
    match mode {
        "pool" => args.extend(["--threads".into(), "8".into()]),
        "event" => args.extend(["--threads".into(), "2".into()]),
        _ => {}
    }
    args
}

/// A slowloris client: one byte every 100-300 ms, never the end of a
/// message; reconnects whenever the server ends the connection. Returns
/// how many connections the server cut off.
fn dribbler(addr: SocketAddr, stop: &AtomicBool, rng: &mut Rng) -> u64 {
    let mut cut = 0;
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut s) = connect(addr) else {
            continue;
        };
        let mut buf = [0u8; 256];
        loop {
            if stop.load(Ordering::SeqCst) {
                return cut;
            }
            if s.write_all(b"x").is_err() {
                cut += 1;
                break;
            }
            // The pause between bytes is a read: an EOF or reset from the
            // server ends it at once.
            let pause = Duration::from_millis(100 + rng.below(201));
            s.set_read_timeout(Some(pause)).ok();
            let until = Instant::now() + pause;
            let ended = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(_) if Instant::now() < until => continue,
                    Ok(_) => break false,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break false
                    }
                    Err(_) => break true,
                }
            };
            if ended {
                cut += 1;
                break;
            }
        }
    }
    cut
}

/// A client that sends a lot and never reads its echo, so that the
/// server's output to it fills. It cannot see the server give up (the FIN
/// waits behind the unread echo): it writes until the window ends or the
/// connection is reset, then connects again. Returns how many connections
/// it opened.
fn non_reader(addr: SocketAddr, stop: &AtomicBool) -> u64 {
    let chunk = vec![b'y'; 64 * 1024];
    let mut opened = 0;
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut s) = connect(addr) else {
            continue;
        };
        opened += 1;
        s.set_write_timeout(Some(Duration::from_millis(100))).ok();
        while !stop.load(Ordering::SeqCst) {
            match s.write(&chunk) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    }
    opened
}

/// Slow clients and the fuzzers at once against `mode`; a well-behaved
/// client must get every echo right and within GOOD_BOUND meanwhile.
fn survive_slow_clients(mode: &str) {
    let args = survive_args(mode);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let seed = seed();
    let mut server = Server::start("echo_server", &argv);
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let mut hostile: Vec<JoinHandle<(&'static str, u64)>> = Vec::new();
    for i in 0..DRIBBLERS {
        let stop = stop.clone();
        hostile.push(std::thread::spawn(move || {
            let mut rng = Rng(seed.wrapping_add(100 + i as u64) | 1);
            ("dribbler", dribbler(addr, &stop, &mut rng))
        }));
    }
    for _ in 0..NON_READERS {
        let stop = stop.clone();
        hostile.push(std::thread::spawn(move || {
            ("non-reader", non_reader(addr, &stop))
        }));
    }
    {
        let stop = stop.clone();
        hostile.push(std::thread::spawn(move || {
            let mut rng = Rng(seed.wrapping_mul(0x9e3779b97f4a7c15) | 1);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                fuzz_once(addr, Protocol::Echo, &mut rng);
                n += 1;
            }
            ("fuzz", n)
        }));
    }
    let (window, good_bound) = (
        SURVIVE_WINDOW * survive_scale(mode),
        GOOD_BOUND * survive_scale(mode),
    );
    let start = Instant::now();
    let mut rng = Rng(seed ^ 0x600d);
    let mut good = 0u64;
    let mut slowest = Duration::ZERO;
    let mut failure = None;
    while start.elapsed() < window {
        let t = Instant::now();
        let result = Protocol::Echo.check(addr, &mut rng);
        let took = t.elapsed();
        slowest = slowest.max(took);
        match result {
            Err(e) => {
                failure = Some(format!("exchange {}: {e} after {took:?}", good + 1));
                break;
            }
            Ok(()) if took > good_bound => {
                failure = Some(format!(
                    "exchange {} took {took:?}, over the bound {good_bound:?}",
                    good + 1
                ));
                break;
            }
            Ok(()) => good += 1,
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut counts = std::collections::BTreeMap::new();
    for h in hostile {
        let (kind, n) = h.join().expect("hostile client");
        *counts.entry(kind).or_insert(0) += n;
    }
    let alive = server.alive();
    if failure.is_none() && !alive {
        failure = Some("the server died".into());
    }
    if let Some(e) = failure {
        let err = server.kill_and_stderr();
        panic!(
            "{} (seed {seed}): {e}; hostile: {counts:?}\n--- stderr ---\n{err}",
            server.what
        );
    }
    println!(
        "{}: {good} good exchanges in {window:?}, slowest {slowest:?}; \
         hostile (dribbler connections cut, non-reader connections, fuzz connections): {counts:?}",
        server.what
    );
    assert!(good > 0, "{}: no good exchange", server.what);
    // A dribbler is never idle: in the blocking modes only the deadline
    // cuts it off (event mode echoes each byte at once and lets it be).
    if mode != "event" {
        assert!(
            counts.get("dribbler").copied().unwrap_or(0) > 0,
            "{}: no dribbler was cut off (--request-deadline)",
            server.what
        );
    }
    server.stop();
}

#[test]
fn survive_slow_clients_sync() {
    survive_slow_clients("sync");
}

#[test]
fn survive_slow_clients_threading() {
    survive_slow_clients("threading");
}

#[test]
fn survive_slow_clients_forking() {
    survive_slow_clients("forking");
}

#[test]
fn survive_slow_clients_pool() {
    survive_slow_clients("pool");
}

#[test]
fn survive_slow_clients_event() {
    survive_slow_clients("event");
}

/// The server's descriptor limit in the fd-exhaustion tests.
const LOW_NOFILE: u64 = 64;
/// Hostile connections opened against it: enough to exhaust it.
const EXHAUST_CONNECTIONS: usize = 3 * LOW_NOFILE as usize;
/// Out of descriptors, the server is watched this long...
const EXHAUST_WINDOW: Duration = Duration::from_secs(1);
/// ...and may use at most this much CPU meanwhile (a spin uses it all).
const EXHAUST_MAX_CPU: Duration = Duration::from_millis(250);

/// User plus system CPU time of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 1..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

fn live_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits (at most startup_timeout()) until `pid`'s thread count has not
/// changed for 200 ms.
fn settle_threads(pid: u32) {
    let start = Instant::now();
    let mut last = live_threads(pid);
    let mut stable_since = Instant::now();
    while start.elapsed() < startup_timeout() && stable_since.elapsed() < Duration::from_millis(200)
    {
        std::thread::sleep(Duration::from_millis(20));
        let now = live_threads(pid);
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Whether a TCP socket listens on `port` (IPv4, /proc/net/tcp state 0A).
fn listening(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
    })
}

/// fd exhaustion: echo_server with RLIMIT_NOFILE 64 and its default
/// options (no timeout: hostile connections stay as long as they like)
/// gets connections until it runs out. It must not spin, must keep its
/// listener, and must serve a new client once the hostile ones close.
fn survive_fd_exhaustion(mode: &str) {
    let mut args = vec![
        "--transport",
        "tcp",
        "--mode",
        mode,
        "--address",
        "127.0.0.1:0",
    ];
    match mode {
        "pool" => args.extend(["--threads", "8"]),
        "event" => args.extend(["--threads", "2"]),
        _ => {}
    }
    let mut server = Server::start_with_nofile("echo_server", &args, Some(LOW_NOFILE));
    let addr = server.addr;
    let pid = server.process.pid() as u32;
    let mut rng = Rng(seed());
    if let Err(e) = Protocol::Echo.check(addr, &mut rng) {
        let err = server.kill_and_stderr();
        panic!(
            "{}: first exchange: {e}\n--- stderr ---\n{err}",
            server.what
        );
    }
    let idle_fds = open_fds(pid);
    let mut hostile = Vec::new();
    let mut refused = 0;
    for _ in 0..EXHAUST_CONNECTIONS {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => hostile.push(s),
            Err(_) => refused += 1,
        }
    }
    // Out of descriptors, a server that accepts them all (not sync, which
    // serves one connection at a time, nor forking, whose connections live
    // in its children) sheds the pending ones: wait for it to get there.
    let all_in_process = matches!(mode, "threading" | "pool" | "event");
    let exhausted = !all_in_process || {
        let start = Instant::now();
        loop {
            if open_fds(pid) as u64 >= LOW_NOFILE - 1 {
                break true;
            }
            if start.elapsed() > startup_timeout() {
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let full_fds = open_fds(pid);
    // Threads started for the accepted connections cost CPU while they
    // start (much of it under valgrind): measure once their number holds.
    settle_threads(pid);
    // Meanwhile new clients keep knocking: each must be served or closed
    // or left waiting in the backlog, never make the server spin.
    let knock_stop = Arc::new(AtomicBool::new(false));
    let knocker = {
        let stop = knock_stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    s.set_read_timeout(Some(Duration::from_millis(100))).ok();
                    let _ = s.write_all(b"knock");
                    let mut buf = [0u8; 16];
                    let _ = s.read(&mut buf);
                }
                n += 1;
            }
            n
        })
    };
    let cpu_before = cpu_time(pid);
    let window_start = Instant::now();
    while window_start.elapsed() < EXHAUST_WINDOW {
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    knock_stop.store(true, Ordering::SeqCst);
    let knocks = knocker.join().expect("knocker");
    let still_listening = listening(addr.port());
    let alive = server.alive();
    drop(hostile);
    // The connections the hostile clients left queued are worked through
    // first (in forking mode a child each, slow to start and to exit under
    // valgrind): the first exchange may wait for them, the next must not.
    let patience = if wrapper().is_empty() { 1 } else { 6 };
    let until = Instant::now() + patience * IO_TIMEOUT;
    let mut served_after = loop {
        match Protocol::Echo.check(addr, &mut rng) {
            Err(_) if Instant::now() < until => {}
            first => break first,
        }
    };
    for _ in 0..2 {
        served_after = served_after.and_then(|()| Protocol::Echo.check(addr, &mut rng));
    }
    println!(
        "{}: RLIMIT_NOFILE {LOW_NOFILE}: {idle_fds} fds idle, {full_fds} with hostile \
         connections ({refused} of {EXHAUST_CONNECTIONS} connects failed); CPU {cpu:?} in \
         {EXHAUST_WINDOW:?} while {knocks} more clients knocked; listening: {still_listening}",
        server.what
    );
    let failure = if !alive {
        Some("the server died".to_string())
    } else if !exhausted {
        Some(format!("never ran out of descriptors ({full_fds} open)"))
    } else if cpu > EXHAUST_MAX_CPU {
        Some(format!(
            "used {cpu:?} of CPU in {EXHAUST_WINDOW:?} out of descriptors (spinning)"
        ))
    } else if !still_listening {
        Some("dropped its listener".to_string())
    } else if let Err(e) = served_after {
        Some(format!("after the hostile clients closed: {e}"))
    } else {
        None
    };
    if let Some(e) = failure {
        let err = server.kill_and_stderr();
        panic!("{}: {e}\n--- stderr ---\n{err}", server.what);
    }
    server.stop();
}

#[test]
fn survive_fd_exhaustion_sync() {
    survive_fd_exhaustion("sync");
}

#[test]
fn survive_fd_exhaustion_threading() {
    survive_fd_exhaustion("threading");
}

#[test]
fn survive_fd_exhaustion_forking() {
    survive_fd_exhaustion("forking");
}

#[test]
fn survive_fd_exhaustion_pool() {
    survive_fd_exhaustion("pool");
}

#[test]
fn survive_fd_exhaustion_event() {
    survive_fd_exhaustion("event");
}
