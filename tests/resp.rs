//! c_examples/resp_server.c, the RESP2 (redis protocol) example, driven by
//! redis's own clients and by raw sockets, with 1 and with 2 event loops:
//!
//! - `redis-cli`: every command and its errors (redis's exact texts), a
//!   value with binary bytes and CRLF inside (`-x`), `--pipe` with 20,000
//!   commands, expiry;
//! - `redis-benchmark -t ping,set,get -n 20000 -c 50` at `-P 1` and
//!   `-P 16` (`--csv`): it must succeed, report a rate for every test and
//!   write nothing on stderr;
//! - raw sockets: many requests in one write (multibulk and inline), the
//!   same bytes split at every byte, one byte at a time, concurrent INCRs
//!   from several connections (the table's locking across loops);
//! - hostile input: garbage, huge and negative lengths, oversized
//!   requests, unbalanced quotes, clients that reset or close
//!   mid-request. Each protocol error gets redis's "-ERR Protocol error:
//!   ..." reply and the connection is closed; the server keeps serving.
//!
//! Every server must stop with exit status 0 on SIGINT or SIGTERM, writing
//! nothing on stderr. redis-cli and redis-benchmark (Debian: redis-tools)
//! are required: a test fails, naming the tool, when one is missing.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use socket2::SockRef;

use common::example::ExampleProcess;

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn resp_server_exe() -> PathBuf {
    // The Makefile's flags, optimised: redis-benchmark drives it.
    common::compile_example("resp_server", &["-O2"])
}

/// Fails, naming the tool and its Debian package, unless `tool` is
/// installed.
fn require(tool: &str) {
    common::require_tool(tool, "redis-tools");
}

/// A running resp_server in a process group of its own, killed if the test
/// fails before stopping it.
struct Server {
    process: ExampleProcess,
    addr: String,
    port: String,
}

impl Server {
    fn start(loops: usize) -> Server {
        let threads = loops.to_string();
        let mut cmd = Command::new(resp_server_exe());
        cmd.args(["--address", "127.0.0.1:0", "--threads", &threads]);
        let process = ExampleProcess::start(cmd, Duration::from_secs(15));
        Server {
            addr: process.addr().to_string(),
            port: process.port().to_string(),
            process,
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).expect("connect to resp_server");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    fn alive(&mut self) -> bool {
        self.process.alive()
    }

    /// redis-cli -h 127.0.0.1 -p PORT args... with `input` on its stdin;
    /// returns its stdout. It must exit 0 with nothing on stderr.
    fn cli_with_input(&self, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
        let mut argv = vec!["-h", "127.0.0.1", "-p", &self.port];
        argv.extend_from_slice(args);
        let out = common::run_with_input(
            std::path::Path::new("redis-cli"),
            &argv,
            &[],
            input,
            TOOL_TIMEOUT,
        );
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "redis-cli {args:?}\n{}",
            common::show(&out)
        );
        out.stdout
    }

    fn cli(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.cli_with_input(args, None)).into_owned()
    }

    /// `signal`; the server must exit 0 within 10 s, nothing on stderr.
    fn stop(mut self, signal: libc::c_int) {
        let (status, stderr) = self.process.stop(signal, Duration::from_secs(10));
        assert!(
            status.success() && stderr.is_empty(),
            "resp_server exited with {status} after signal {signal}; stderr:\n{stderr}"
        );
    }
}

/// A request as a RESP array of bulk strings.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

fn bulk(data: &[u8]) -> Vec<u8> {
    let mut v = format!("${}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

/// At most 200 bytes around `at` of `b`, for failure messages.
fn excerpt(b: &[u8], at: usize) -> String {
    let start = at.saturating_sub(100);
    let end = (at + 100).min(b.len());
    format!(
        "{}{:?}{}",
        if start > 0 { "..." } else { "" },
        String::from_utf8_lossy(&b[start..end]),
        if end < b.len() { "..." } else { "" }
    )
}

/// Reads exactly `expect.len()` bytes and compares them.
fn expect_bytes(s: &mut TcpStream, expect: &[u8], what: &str) {
    let mut got = vec![0u8; expect.len()];
    if let Err(e) = s.read_exact(&mut got) {
        panic!(
            "{what}: reading {} bytes of reply: {e}; expected {}",
            expect.len(),
            excerpt(expect, 0)
        );
    }
    if let Some(at) = got.iter().zip(expect).position(|(a, b)| a != b) {
        panic!(
            "{what}: the reply differs at byte {at} of {}: got {}, expected {}",
            expect.len(),
            excerpt(&got, at),
            excerpt(expect, at)
        );
    }
}

/// The server closes: EOF (or a reset, if input was left unread).
fn expect_eof(s: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!(
            "{what}: expected the connection to close, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: expected the connection to close, got {e}"),
    }
}

/// One connection: send, read the exact reply.
fn exchange(server: &Server, send: &[u8], expect: &[u8], what: &str) {
    let mut s = server.connect();
    s.write_all(send).expect("write");
    expect_bytes(&mut s, expect, what);
}

// ------------------------------------------------------------ redis-cli

/// (arguments, redis-cli's raw output: an error or a nil is followed by an
/// empty line, an empty array is an empty line): the same as redis-server
/// 7.0's replies to the same commands, except that resp_server has 10
/// commands, no command docs and no CONFIG subcommand but GET.
const CLI_CASES: &[(&[&str], &str)] = &[
    (&["PING"], "PONG\n"),
    (&["ping", "hello world"], "hello world\n"),
    (
        &["ping", "a", "b"],
        "ERR wrong number of arguments for 'ping' command\n\n",
    ),
    (&["ECHO", "a b"], "a b\n"),
    (
        &["echo"],
        "ERR wrong number of arguments for 'echo' command\n\n",
    ),
    (&["GET", "k"], "\n"),
    (&["SET", "k", "v1"], "OK\n"),
    (&["get", "k"], "v1\n"),
    (&["SET", "k", "v2", "XX"], "OK\n"),
    (&["SET", "k", "v3", "NX"], "\n"),
    (&["get", "k"], "v2\n"),
    (&["SET", "fresh", "x", "XX"], "\n"),
    (&["SET", "fresh", "x", "NX"], "OK\n"),
    (&["SET", "k", "v", "NX", "XX"], "ERR syntax error\n\n"),
    (&["SET", "k", "v", "bogus"], "ERR syntax error\n\n"),
    (&["SET", "k", "v", "EX"], "ERR syntax error\n\n"),
    (
        &["SET", "k", "v", "EX", "1", "PX", "5"],
        "ERR syntax error\n\n",
    ),
    (
        &["SET", "k", "v", "EX", "x"],
        "ERR value is not an integer or out of range\n\n",
    ),
    (
        &["SET", "k", "v", "EX", "0"],
        "ERR invalid expire time in 'set' command\n\n",
    ),
    (
        &["SET", "k", "v", "PX", "-1"],
        "ERR invalid expire time in 'set' command\n\n",
    ),
    (
        &["SET", "k", "v", "EX", "9223372036854775807"],
        "ERR invalid expire time in 'set' command\n\n",
    ),
    (
        &["SET", "k"],
        "ERR wrong number of arguments for 'set' command\n\n",
    ),
    (&["get", "k"], "v2\n"),
    (&["EXISTS", "k", "k", "nokey", "fresh"], "3\n"),
    (
        &["exists"],
        "ERR wrong number of arguments for 'exists' command\n\n",
    ),
    (&["DEL", "k", "k", "nokey", "fresh"], "2\n"),
    (&["EXISTS", "k"], "0\n"),
    (
        &["del"],
        "ERR wrong number of arguments for 'del' command\n\n",
    ),
    (&["INCR", "counter"], "1\n"),
    (&["incr", "counter"], "2\n"),
    (&["SET", "n", "-9223372036854775808"], "OK\n"),
    (&["INCR", "n"], "-9223372036854775807\n"),
    (&["SET", "n", "9223372036854775807"], "OK\n"),
    (
        &["INCR", "n"],
        "ERR increment or decrement would overflow\n\n",
    ),
    (&["SET", "n", "abc"], "OK\n"),
    (
        &["INCR", "n"],
        "ERR value is not an integer or out of range\n\n",
    ),
    (&["SET", "n", "007"], "OK\n"),
    (
        &["INCR", "n"],
        "ERR value is not an integer or out of range\n\n",
    ),
    (&["SET", "n", " 1"], "OK\n"),
    (
        &["INCR", "n"],
        "ERR value is not an integer or out of range\n\n",
    ),
    (&["SET", "n", "-0"], "OK\n"),
    (
        &["INCR", "n"],
        "ERR value is not an integer or out of range\n\n",
    ),
    (
        &["INCR"],
        "ERR wrong number of arguments for 'incr' command\n\n",
    ),
    (
        &["FOO", "a", "b"],
        "ERR unknown command 'FOO', with args beginning with: 'a' 'b' \n\n",
    ),
    (
        &["foo"],
        "ERR unknown command 'foo', with args beginning with: \n\n",
    ),
    (
        &["foo", "x\r\ny"],
        "ERR unknown command 'foo', with args beginning with: 'x  y' \n\n",
    ),
    (&["CONFIG", "GET", "save"], "save\n\n"),
    (&["config", "get", "appendonly"], "appendonly\nno\n"),
    (&["config", "get", "nosuch"], "\n"),
    (
        &["CONFIG"],
        "ERR wrong number of arguments for 'config' command\n\n",
    ),
    (
        &["CONFIG", "GET"],
        "ERR wrong number of arguments for 'config|get' command\n\n",
    ),
    (
        &["CONFIG", "RESETSTAT"],
        "ERR unknown subcommand 'RESETSTAT'. Try CONFIG HELP.\n\n",
    ),
    (&["COMMAND", "COUNT"], "10\n"),
    (&["COMMAND", "DOCS"], "\n"),
    (
        &["COMMAND", "bogus"],
        "ERR unknown subcommand 'bogus'. Try COMMAND HELP.\n\n",
    ),
    (&["QUIT"], "OK\n"),
];

fn redis_cli_commands(loops: usize) {
    require("redis-cli");
    let server = Server::start(loops);
    for (args, expect) in CLI_CASES {
        assert_eq!(server.cli(args), *expect, "redis-cli {args:?}");
    }
    // COMMAND lists every command; COMMAND INFO describes one.
    let all = server.cli(&["COMMAND"]);
    for name in [
        "ping", "echo", "get", "set", "del", "exists", "incr", "config",
    ] {
        assert!(
            all.lines().any(|l| l == name),
            "COMMAND does not list {name}:\n{all}"
        );
    }
    assert!(
        server
            .cli(&["COMMAND", "INFO", "get"])
            .starts_with("get\n2\n"),
        "COMMAND INFO get"
    );

    // A value with binary bytes, CR, LF and NUL inside: redis-cli -x
    // sends its stdin whole (trailing newline included) as the last
    // argument; --raw prints it back, then a newline.
    let value: &[u8] = b"a\r\nb\x00c\xff\r\n$3\r\n*1\r\nend\n";
    assert_eq!(
        server.cli_with_input(&["-x", "SET", "bin"], Some(value)),
        b"OK\n"
    );
    let mut printed = value.to_vec();
    printed.push(b'\n');
    assert_eq!(
        server.cli_with_input(&["--raw", "GET", "bin"], None),
        printed
    );
    // The exact bytes on the wire.
    exchange(
        &server,
        &resp(&[b"GET", b"bin"]),
        &bulk(value),
        "GET of a binary value",
    );

    // Interactive-style input on stdin (redis-cli asks COMMAND DOCS first).
    let out = server.cli_with_input(&[], Some(b"SET piped 5\nINCR piped\nGET piped\n"));
    assert_eq!(String::from_utf8_lossy(&out), "OK\n6\n6\n");

    // Expiry: there at once, gone after its time.
    exchange(
        &server,
        &[
            resp(&[b"SET", b"short", b"x", b"PX", b"500"]),
            resp(&[b"SET", b"long", b"y", b"EX", b"1000"]),
            resp(&[b"GET", b"short"]),
        ]
        .concat(),
        b"+OK\r\n+OK\r\n$1\r\nx\r\n",
        "SET with an expiry",
    );
    let start = Instant::now();
    while server.cli(&["EXISTS", "short"]) != "0\n" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a key set with PX 500 still exists after 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.cli(&["GET", "short"]), "\n");
    assert_eq!(server.cli(&["GET", "long"]), "y\n");
    server.stop(libc::SIGINT);
}

#[test]
fn redis_cli_commands_one_loop() {
    redis_cli_commands(1);
}

#[test]
fn redis_cli_commands_two_loops() {
    redis_cli_commands(2);
}

/// redis-cli --pipe: 20,000 commands in one stream, every reply counted.
fn redis_cli_pipe(loops: usize) {
    require("redis-cli");
    let server = Server::start(loops);
    let mut input = Vec::new();
    for i in 0..10_000 {
        input.extend(resp(&[
            b"SET",
            format!("key:{i}").as_bytes(),
            format!("value:{i}").as_bytes(),
        ]));
        input.extend(resp(&[b"INCR", b"pipe-counter"]));
    }
    let out =
        String::from_utf8_lossy(&server.cli_with_input(&["--pipe"], Some(&input))).into_owned();
    assert!(
        out.contains("errors: 0, replies: 20000"),
        "redis-cli --pipe:\n{out}"
    );
    assert_eq!(server.cli(&["GET", "pipe-counter"]), "10000\n");
    assert_eq!(server.cli(&["GET", "key:9999"]), "value:9999\n");
    assert_eq!(
        server.cli(&["EXISTS", "key:0", "key:5000", "key:10000"]),
        "2\n"
    );
    server.stop(libc::SIGTERM);
}

#[test]
fn redis_cli_pipe_one_loop() {
    redis_cli_pipe(1);
}

#[test]
fn redis_cli_pipe_two_loops() {
    redis_cli_pipe(2);
}

// ------------------------------------------------------ redis-benchmark

/// redis-benchmark -t ping,set,get -n 20000 -c 50 -P `pipeline` --csv:
/// exit 0, nothing on stderr, a positive rate for each of its four tests.
fn benchmark(server: &Server, pipeline: &str) {
    let out = common::run_with_timeout(
        std::path::Path::new("redis-benchmark"),
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &server.port,
            "-t",
            "ping,set,get",
            "-n",
            "20000",
            "-c",
            "50",
            "-P",
            pipeline,
            "--csv",
        ],
        &[],
        TOOL_TIMEOUT,
    );
    let what = format!("redis-benchmark -P {pipeline}\n{}", common::show(&out));
    assert!(out.status.success(), "{what}");
    assert!(out.stderr.is_empty(), "{what}");
    let text = String::from_utf8_lossy(&out.stdout);
    for test in ["PING_INLINE", "PING_MBULK", "SET", "GET"] {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("\"{test}\",")))
            .unwrap_or_else(|| panic!("no {test} row: {what}"));
        let rps: f64 = row
            .split(',')
            .nth(1)
            .map(|f| f.trim_matches('"'))
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("{test}: no rate in {row:?}: {what}"));
        assert!(rps > 0.0, "{test}: rate {rps}: {what}");
    }
}

fn redis_benchmark(loops: usize) {
    require("redis-benchmark");
    let server = Server::start(loops);
    benchmark(&server, "1");
    benchmark(&server, "16");
    // What it stored is there.
    exchange(
        &server,
        &resp(&[b"GET", b"key:__rand_int__"]),
        &bulk(b"VXK"),
        "GET after redis-benchmark",
    );
    server.stop(libc::SIGTERM);
}

#[test]
fn redis_benchmark_one_loop() {
    redis_benchmark(1);
}

#[test]
fn redis_benchmark_two_loops() {
    redis_benchmark(2);
}

// ------------------------------------------------------- raw clients

/// Requests of every shape and their exact replies, in order, and where
/// the request with a 100 KB argument starts.
fn script() -> (Vec<u8>, Vec<u8>, usize) {
    let mut send = Vec::new();
    let mut expect = Vec::new();
    let mut add = |req: Vec<u8>, reply: &[u8]| {
        send.extend(req);
        expect.extend_from_slice(reply);
    };
    add(resp(&[b"PING"]), b"+PONG\r\n");
    add(b"PING\r\n".to_vec(), b"+PONG\r\n");
    add(b"ping inline\n".to_vec(), b"$6\r\ninline\r\n");
    add(b"\r\n".to_vec(), b""); // an empty inline line: ignored
    add(b"*0\r\n*-1\r\n".to_vec(), b""); // empty arrays: ignored
    add(resp(&[b"DEL", b"raw", b"raw:n"]), b":0\r\n");
    add(resp(&[b"SET", b"raw", b"x\r\ny\x00z"]), b"+OK\r\n");
    add(resp(&[b"GET", b"raw"]), b"$6\r\nx\r\ny\x00z\r\n");
    add(b"set raw \"q \\\"uoted\\x41\\n\" \r\n".to_vec(), b"+OK\r\n");
    add(b"get 'raw'\r\n".to_vec(), b"$10\r\nq \"uotedA\n\r\n");
    add(resp(&[b"INCR", b"raw:n"]), b":1\r\n");
    add(b"INCR raw:n\r\n".to_vec(), b":2\r\n");
    add(resp(&[b"EXISTS", b"raw", b"raw:n", b"none"]), b":2\r\n");
    add(
        resp(&[b"nosuch", b"arg"]),
        b"-ERR unknown command 'nosuch', with args beginning with: 'arg' \r\n",
    );
    add(resp(&[b"DEL", b"raw", b"raw:n"]), b":2\r\n");
    let big_start = send.len();
    let big = vec![b'b'; 100_000];
    send.extend(resp(&[b"ECHO", &big]));
    expect.extend(bulk(&big));
    send.extend(b"PING\r\n");
    expect.extend(b"+PONG\r\n");
    (send, expect, big_start)
}

fn raw_clients(loops: usize) {
    let server = Server::start(loops);
    let (send, expect, big_start) = script();

    // Everything in one write, then the replies in order.
    exchange(&server, &send, &expect, "the whole script in one write");
    // The same script many times in one write: one big pipeline.
    exchange(
        &server,
        &send.repeat(50),
        &expect.repeat(50),
        "the script 50 times in one write",
    );

    // Split into two writes at every byte of the small requests and of
    // the big one's head (its 100 KB are split at a few places).
    let head_end = big_start + 40;
    let mut splits: Vec<usize> = (1..head_end).collect();
    splits.extend([
        big_start + 50_000,
        send.len() - 9,
        send.len() - 3,
        send.len() - 1,
    ]);
    let mut s = server.connect();
    for &cut in &splits {
        s.write_all(&send[..cut]).expect("write");
        s.write_all(&send[cut..]).expect("write");
        expect_bytes(&mut s, &expect, &format!("split at byte {cut}"));
    }

    // One byte per write.
    let mut s = server.connect();
    for b in &send[..head_end] {
        s.write_all(std::slice::from_ref(b)).expect("write");
    }
    s.write_all(&send[head_end..]).expect("write");
    expect_bytes(&mut s, &expect, "one byte per write");

    // Concurrent INCRs of one key (and SETs of keys in every shard) from
    // 8 connections: none is lost.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).expect("connect");
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                for round in 0..10 {
                    let mut req = Vec::new();
                    let mut reply = Vec::new();
                    for i in 0..100 {
                        req.extend(resp(&[b"INCR", b"shared"]));
                        let key = format!("t{t}:{round}:{i}");
                        req.extend(resp(&[b"SET", key.as_bytes(), key.as_bytes()]));
                        req.extend(resp(&[b"GET", key.as_bytes()]));
                        reply.push(key);
                    }
                    s.write_all(&req).expect("write");
                    let mut r = BufReader::new(&s);
                    for key in reply {
                        let mut line = String::new();
                        r.read_line(&mut line).expect("INCR reply");
                        assert!(line.starts_with(':'), "INCR: {line:?}");
                        line.clear();
                        r.read_line(&mut line).expect("SET reply");
                        assert_eq!(line, "+OK\r\n");
                        let mut got = vec![0u8; bulk(key.as_bytes()).len()];
                        r.read_exact(&mut got).expect("GET reply");
                        assert_eq!(got, bulk(key.as_bytes()));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    exchange(
        &server,
        &resp(&[b"GET", b"shared"]),
        &bulk(b"8000"),
        "8000 concurrent INCRs",
    );
    server.stop(libc::SIGTERM);
}

#[test]
fn raw_clients_one_loop() {
    raw_clients(1);
}

#[test]
fn raw_clients_two_loops() {
    raw_clients(2);
}

// ------------------------------------------------------ hostile input

/// Sends `send`; expects `reply` exactly, then the connection to close.
fn refused(server: &Server, send: &[u8], reply: &[u8], what: &str) {
    let mut s = server.connect();
    // The server may close before it has read everything: a write error
    // then is fine, the reply must still come.
    let _ = s.write_all(send);
    expect_bytes(&mut s, reply, what);
    expect_eof(&mut s, what);
}

fn protocol_error(text: &str) -> Vec<u8> {
    format!("-ERR Protocol error: {text}\r\n").into_bytes()
}

fn hostile_input(loops: usize) {
    let mut server = Server::start(loops);
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        (
            "a huge bulk length",
            b"*1\r\n$2000000000\r\n".to_vec(),
            protocol_error("invalid bulk length"),
        ),
        (
            "a negative bulk length",
            b"*1\r\n$-5\r\nabc\r\n".to_vec(),
            protocol_error("invalid bulk length"),
        ),
        (
            "a bulk length that is no number",
            b"*1\r\n$x\r\n".to_vec(),
            protocol_error("invalid bulk length"),
        ),
        (
            "a bulk of 1 MiB + 1",
            b"*2\r\n$4\r\nECHO\r\n$1048577\r\n".to_vec(),
            protocol_error("invalid bulk length"),
        ),
        (
            "too many arguments",
            b"*1025\r\n".to_vec(),
            protocol_error("invalid multibulk length"),
        ),
        (
            "a count that is no number",
            b"*abc\r\n".to_vec(),
            protocol_error("invalid multibulk length"),
        ),
        (
            "an endless count line",
            format!("*{}", "1".repeat(100)).into_bytes(),
            protocol_error("too big mbulk count string"),
        ),
        (
            "an endless bulk length line",
            format!("*1\r\n${}", "1".repeat(100)).into_bytes(),
            protocol_error("too big bulk count string"),
        ),
        (
            "no '$'",
            b"*1\r\nfoo\r\n".to_vec(),
            protocol_error("expected '$', got 'f'"),
        ),
        (
            "an inline line over 64 KiB",
            vec![b'a'; 70_000],
            protocol_error("too big inline request"),
        ),
        (
            "unbalanced quotes",
            b"echo \"abc\r\n".to_vec(),
            protocol_error("unbalanced quotes in request"),
        ),
        (
            "a quote not ending its argument",
            b"echo 'a'b\r\n".to_vec(),
            protocol_error("unbalanced quotes in request"),
        ),
        (
            "good requests before a bad one, nothing after it",
            [
                b"PING\r\n".to_vec(),
                resp(&[b"ECHO", b"first"]),
                b"*1\r\n$-1\r\n".to_vec(),
                b"PING\r\n".to_vec(),
            ]
            .concat(),
            [
                b"+PONG\r\n".to_vec(),
                bulk(b"first"),
                protocol_error("invalid bulk length"),
            ]
            .concat(),
        ),
        (
            "QUIT closes after its reply",
            b"QUIT\r\nPING\r\n".to_vec(),
            b"+OK\r\n".to_vec(),
        ),
    ];
    for (what, send, reply) in &cases {
        refused(&server, send, reply, what);
    }

    // Arguments of 1 MiB, the most a bulk may hold, are accepted...
    let mb = vec![b'm'; 1024 * 1024];
    exchange(
        &server,
        &[resp(&[b"SET", b"mb", &mb]), resp(&[b"GET", b"mb"])].concat(),
        &[b"+OK\r\n".to_vec(), bulk(&mb)].concat(),
        "a 1 MiB value",
    );
    // ...but not more than 4 MiB of them in one request.
    let mut too_big = b"*6\r\n$4\r\nECHO\r\n".to_vec();
    for _ in 0..4 {
        too_big.extend(bulk(&mb));
    }
    too_big.extend(b"$1\r\n");
    refused(
        &server,
        &too_big,
        &protocol_error("request larger than 4194304 bytes"),
        "a request over 4 MiB",
    );

    // Clients that reset or just close mid-request, and random garbage.
    let partial = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc";
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for i in 0..200 {
        let mut s = server.connect();
        let cut = 1 + i % partial.len();
        let _ = s.write_all(&partial[..cut]);
        if i % 3 == 0 {
            let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
        } else if i % 3 == 1 {
            let _ = s.shutdown(Shutdown::Write);
        } else {
            let garbage: Vec<u8> = (0..1 + i * 37)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = s.write_all(&garbage);
            let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
        drop(s);
    }

    assert!(server.alive(), "resp_server died");
    exchange(
        &server,
        &[resp(&[b"PING"]), b"INCR survived\r\n".to_vec()].concat(),
        b"+PONG\r\n:1\r\n",
        "after the hostile clients",
    );
    // A connection left mid-request does not hold up the exit.
    let mut idle = server.connect();
    idle.write_all(b"*2\r\n$4\r\nECHO\r\n$10\r\nabc").unwrap();
    server.stop(libc::SIGTERM);
}

#[test]
fn hostile_input_one_loop() {
    hostile_input(1);
}

#[test]
fn hostile_input_two_loops() {
    hostile_input(2);
}

// -------------------------------------------------------- command line

#[test]
fn usage() {
    let exe = resp_server_exe();
    let out = common::run_with_timeout(&exe, &["--help"], &[], Duration::from_secs(10));
    assert!(out.status.success(), "{}", common::show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("usage: resp_server"),
        "{}",
        common::show(&out)
    );
    common::assert_rejects_bad_usage(
        &exe,
        "resp_server",
        &[
            &["--threads", "0"],
            &["--threads", "256"],
            &["--threads", "x"],
            &["--bogus", "x"],
            &["--address"],
        ],
    );
}

/// The default loop count (one per core) serves, and SIGINT stops it.
#[test]
fn default_loops() {
    let mut cmd = Command::new(resp_server_exe());
    cmd.args(["--address", "127.0.0.1:0"]);
    let mut server = ExampleProcess::start(cmd, Duration::from_secs(15));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"PING\r\n").unwrap();
    expect_bytes(&mut s, b"+PONG\r\n", "PING");
    let (status, stderr) = server.stop(libc::SIGINT, Duration::from_secs(10));
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
}
