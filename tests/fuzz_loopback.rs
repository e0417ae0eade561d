//! Loopback fuzz of the example servers, driven as a user's clients would:
//! c_examples/echo_server (TCP, in every mode) and c_examples/http_hello
//! (event and threading) each get FUZZ_CONNECTIONS hostile connections from
//! FUZZ_THREADS threads — random bytes (for http_hello also mutated HTTP
//! requests), then a plain close, a half-close (shutdown(SHUT_WR), then
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
//! `make valgrind` and `make sanitize` reuse it: $SS_FUZZ_WRAPPER is a
//! command line put in front of each server (e.g. `valgrind ...`),
//! $SS_FUZZ_PROGRAM_DIR a directory holding the example programs to run
//! instead of compiling them (e.g. built with -fsanitize=thread against a
//! sanitized library), and $SS_FUZZ_CONNECTIONS lowers the connection
//! count for a slow server.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use socket2::SockRef;

/// Hostile connections per server, spread over FUZZ_THREADS threads
/// ($SS_FUZZ_CONNECTIONS overrides).
const FUZZ_CONNECTIONS: u64 = 2000;
const FUZZ_THREADS: u64 = 4;
/// The fuzzers stop early once this much time has passed.
const FUZZ_TIME: Duration = Duration::from_secs(5);
/// Read/write timeout of every client socket: a reply slower than this is
/// a failure (a hang, not a slow machine).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
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

/// A server process in a process group of its own; killed with its group
/// on drop.
struct Server {
    child: Child,
    pgid: Pid,
    addr: SocketAddr,
    stderr: Option<JoinHandle<Vec<u8>>>,
    what: String,
}

impl Server {
    fn start(program: &str, args: &[&str]) -> Server {
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
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} (wrapper {wrap:?}): {e}", exe.display()));
        let pgid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in pid_t"));
        let mut err = child.stderr.take().expect("stderr");
        let stderr = Some(std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        }));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut server = Server {
            child,
            pgid,
            addr: "0.0.0.0:0".parse().unwrap(),
            stderr,
            what,
        };
        let line = rx.recv_timeout(STARTUP_TIMEOUT).unwrap_or_default();
        match line
            .trim_end()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
        {
            Some(addr) => server.addr = addr,
            None => {
                let err = server.kill_and_stderr();
                panic!(
                    "{} did not print \"listening on ADDR\" (got {line:?})\n--- stderr ---\n{err}",
                    server.what
                );
            }
        }
        server
    }

    fn kill_and_stderr(&mut self) -> String {
        let _ = killpg(self.pgid, Signal::SIGKILL);
        let _ = self.child.wait();
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM; the server must exit 0 within EXIT_TIMEOUT and leave no
    /// process of its group behind (forked children included).
    fn stop(mut self) {
        kill(self.pgid, Signal::SIGTERM).expect("SIGTERM the server");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                break status;
            }
            if start.elapsed() > EXIT_TIMEOUT {
                let err = self.kill_and_stderr();
                panic!(
                    "{} still running {EXIT_TIMEOUT:?} after SIGTERM\n--- stderr ---\n{err}",
                    self.what
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // Children reparented to init are reaped by it: wait for the group
        // to empty.
        let group_gone = loop {
            if killpg(self.pgid, None).is_err() {
                break true;
            }
            if start.elapsed() > EXIT_TIMEOUT {
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = killpg(self.pgid, Signal::SIGKILL);
        let _ = self.child.wait();
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
