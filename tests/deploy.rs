//! Deployment (issue 9 §3): adopting a socket, systemd socket activation
//! and several processes on one port.
//!
//! C sub-tests (tests/c/deploy.c), one process each: ss_server_new_from_fd
//! in every transport and mode, its refusals, a stream socket not yet
//! listening, an adopted Unix path left in place; ss_listen_fds with
//! crafted LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES.

mod common;

common::c_tests! {
    crate::common::run_c_subtest;
    deploy {
        adopt_tcp,
        adopt_tcp6,
        adopt_udp,
        adopt_unix_stream,
        adopt_unix_datagram,
        adopt_not_listening,
        adopt_refusals,
        adopt_listen_fails,
        listen_fds_none,
        listen_fds_garbage,
        listen_fds_names,
    }
}

// ------------------------------------------------------------ processes
//
// echo_server as a user deploys it:
// - under systemd-socket-activate (Debian package systemd; the test fails
//   naming it if missing): TCP, a Unix stream path, UDP and a Unix datagram
//   path (-d), in event and threading mode. The server echoes, reports the
//   passed socket's address (LISTEN_PID in /proc/PID/environ was its
//   own pid: the manager execs it in its own process), leaves the manager's Unix socket file in place, and exits 0 on
//   SIGTERM; without a passed socket, or one of another transport, it
//   refuses with a message and exit status 1.
// - two echo_server --reuse-port processes on one port: both serve (each
//   connection is traced to the process holding it through /proc/net/tcp
//   and /proc/PID/fd); one is stopped with SIGTERM while clients keep
//   exchanging on their connections to the other without a single error;
//   every new connection then goes to the survivor.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::example::ExampleProcess;
use common::TempDir;

const SSA: &str = "systemd-socket-activate";
const STARTUP: Duration = Duration::from_secs(15);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn echo_server() -> PathBuf {
    common::compile_example("echo_server", &["-O2"])
}

/// Fails the test, naming the package, if systemd-socket-activate is missing.
fn require_ssa() {
    common::require_tool(SSA, "systemd");
}

/// `program args...` in a process group of its own (see ExampleProcess).
fn spawn(program: &str, args: &[&str]) -> ExampleProcess {
    let mut cmd = Command::new(program);
    cmd.args(args);
    ExampleProcess::spawn(cmd)
}

/// The environment block of process `pid` (as laid out at exec).
fn environ(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    raw.split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// SIGTERM, then the exit status (bounded) and the rest of stderr.
fn terminate(p: &mut ExampleProcess) -> (ExitStatus, String) {
    p.stop(libc::SIGTERM, Duration::from_secs(15))
}

/// A loopback port free a moment ago (systemd-socket-activate takes no
/// port 0); the caller retries if it was taken meanwhile.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Starts `echo_server --transport T --mode M --systemd` under
/// systemd-socket-activate listening on `listen` (a `{port}` in it is
/// replaced by a free port, retried if taken), waits for the manager's
/// "Listening on" line; returns it and the address used.
fn start_activated(
    listen: &str,
    datagram: bool,
    transport: &str,
    mode: &str,
) -> (ExampleProcess, String) {
    require_ssa();
    let exe = echo_server();
    let exe = exe.to_str().unwrap();
    for _ in 0..5 {
        let address = listen.replace("{port}", &free_port().to_string());
        let listen_arg = format!("--listen={address}");
        let mut args = vec![listen_arg.as_str()];
        if datagram {
            args.push("--datagram");
        }
        args.extend([exe, "--transport", transport, "--mode", mode, "--systemd"]);
        let p = spawn(SSA, &args);
        let deadline = Instant::now() + STARTUP;
        loop {
            match p.stderr_line(deadline.saturating_duration_since(Instant::now())) {
                Some(line) if line.starts_with("Listening on ") => return (p, address),
                Some(line) if line.contains("in use") => break,
                Some(_) => {}
                None => panic!("{SSA} did not say it was listening on {address}"),
            }
        }
    }
    panic!("{SSA}: no free port in 5 attempts");
}

fn tcp(address: &str) -> TcpStream {
    let s = TcpStream::connect(address).unwrap_or_else(|e| panic!("connect {address}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Sends `msg` and reads its echo, on any stream.
fn echo_on(stream: &mut (impl Read + Write), msg: &[u8]) -> std::io::Result<()> {
    stream.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    stream.read_exact(&mut got)?;
    if got != msg {
        return Err(std::io::Error::other(format!(
            "echo differs: sent {msg:?}, got {got:?}"
        )));
    }
    Ok(())
}

/// The activated server's checks once it runs: its address is the passed
/// socket's, SIGTERM ends it with 0.
///
/// Not checked here: that LISTEN_* are gone from its environment.
/// /proc/PID/environ shows the block the kernel laid out at exec, which
/// unsetenv(3) does not touch (it edits the `environ` array only), so it
/// still lists them after ss_listen_fds() unset them. What unsetting is
/// for, a child not inheriting them, is checked by deploy.c's
/// listen_fds_names: getenv() finds none and an exec'd `env` prints none.
fn check_activated(mut p: ExampleProcess, address: &str) {
    let reported = p.listening(STARTUP);
    assert_eq!(reported, address, "the address of the passed socket");
    let exe = std::fs::read_link(format!("/proc/{}/exe", p.pid())).unwrap();
    assert_eq!(
        exe,
        echo_server(),
        "{SSA} execs echo_server in its own process"
    );
    // The exec-time block (see above): what the manager passed.
    let passed: Vec<_> = environ(p.pid())
        .into_iter()
        .filter(|v| v.starts_with("LISTEN_"))
        .collect();
    assert!(
        passed.contains(&format!("LISTEN_PID={}", p.pid()))
            && passed.contains(&"LISTEN_FDS=1".into()),
        "{SSA} passed one socket to this very process: {passed:?}"
    );
    let (status, stderr) = terminate(&mut p);
    assert_eq!(status.code(), Some(0), "{}: {stderr}", p.what());
}

#[test]
fn systemd_socket_activate_tcp() {
    for mode in ["event", "threading"] {
        let (p, address) = start_activated("127.0.0.1:{port}", false, "tcp", mode);
        // The first connection makes systemd-socket-activate exec the
        // server, which accepts it from the passed listener.
        let mut first = tcp(&address);
        echo_on(&mut first, b"first, while activating\n").expect("echo");
        let mut second = tcp(&address);
        echo_on(&mut second, b"second\n").expect("echo");
        drop((first, second));
        check_activated(p, &address);
    }
}

#[test]
fn systemd_socket_activate_unix_stream() {
    for mode in ["event", "sync"] {
        let tmp = TempDir::new("ssa");
        let path = tmp.path().join("echo.sock");
        let (p, address) = start_activated(path.to_str().unwrap(), false, "unix", mode);
        let mut conn = UnixStream::connect(&path).expect("connect the passed socket");
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        echo_on(&mut conn, b"over a passed Unix socket\n").expect("echo");
        conn.shutdown(Shutdown::Both).unwrap();
        check_activated(p, &address);
        assert!(
            path.exists(),
            "the server removed {}, which the manager created",
            path.display()
        );
    }
}

#[test]
fn systemd_socket_activate_datagrams() {
    for mode in ["event", "threading"] {
        let (p, address) = start_activated("127.0.0.1:{port}", true, "udp", mode);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut buf = [0u8; 64];
        for msg in [&b"one"[..], b"two"] {
            client.send_to(msg, &address).unwrap();
            let (n, from) = client.recv_from(&mut buf).expect("the echo");
            assert_eq!(&buf[..n], msg);
            assert_eq!(from.to_string(), address);
        }
        check_activated(p, &address);
    }
    let tmp = TempDir::new("ssa");
    let path = tmp.path().join("echo.dgram");
    let (p, address) = start_activated(path.to_str().unwrap(), true, "unixdgram", "event");
    let own = tmp.path().join("client.dgram");
    let client = UnixDatagram::bind(&own).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.send_to(b"unix datagram", &path).unwrap();
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).expect("the echo");
    assert_eq!(&buf[..n], b"unix datagram");
    check_activated(p, &address);
}

#[test]
fn systemd_refusals() {
    // Nothing passed.
    let exe = echo_server();
    let mut p = spawn(
        exe.to_str().unwrap(),
        &["--transport", "tcp", "--mode", "sync", "--systemd"],
    );
    let (status, stderr) = p.wait_exit(STARTUP);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no socket was passed"), "{stderr}");
    // A stream socket passed to a UDP server: refused, naming both.
    let (mut p, address) = start_activated("127.0.0.1:{port}", false, "udp", "event");
    let _trigger = TcpStream::connect(&address).unwrap();
    let (status, stderr) = p.wait_exit(STARTUP);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("SS_ERR_INVALID_ARGUMENT") && stderr.contains("type SOCK_STREAM"),
        "{stderr}"
    );
}

// ---------------------------------------------------------- reuse_port

/// The inode of the established TCP socket on 127.0.0.1 from `local_port`
/// to `remote_port`, from /proc/net/tcp.
fn tcp_inode(local_port: u16, remote_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want_local = format!("0100007F:{local_port:04X}");
    let want_remote = format!("0100007F:{remote_port:04X}");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == want_local && f[2] == want_remote && f[3] == "01")
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// Which of `pids` holds the server side of client connection `conn`.
fn holder(conn: &TcpStream, server_port: u16, pids: &[i32]) -> Option<i32> {
    let inode = tcp_inode(server_port, conn.local_addr().unwrap().port())?;
    let link = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .any(|l| l.to_str() == Some(link.as_str()))
            })
            .unwrap_or(false)
    })
}

/// A connection that has echoed once (so the server accepted it), and
/// the process holding it (found within a bounded wait).
fn traced_connection(address: &str, port: u16, pids: &[i32]) -> (TcpStream, i32) {
    let mut conn = tcp(address);
    echo_on(&mut conn, b"who are you?\n").expect("echo");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(pid) = holder(&conn, port, pids) {
            return (conn, pid);
        }
        assert!(
            Instant::now() < deadline,
            "no process of {pids:?} holds the server side of {:?}",
            conn.local_addr()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn reuse_port_one_stops(mode: &str) {
    let exe = echo_server();
    let exe = exe.to_str().unwrap();
    let base = ["--transport", "tcp", "--mode", mode, "--reuse-port"];
    let with = |address: &str| {
        let mut args = base.to_vec();
        args.extend(["--address", address]);
        let mut p = spawn(exe, &args);
        let bound = p.listening(STARTUP);
        (p, bound)
    };
    let (mut first, address) = with("127.0.0.1:0");
    let (second, again) = with(&address);
    assert_eq!(again, address, "both processes serve one address");
    let port: u16 = address.rsplit_once(':').unwrap().1.parse().unwrap();
    let pids = [first.pid(), second.pid()];

    // Both serve: connect until each has answered (bounded).
    let mut on_second = Vec::new();
    let mut served = [0usize; 2];
    for _ in 0..400 {
        let (conn, pid) = traced_connection(&address, port, &pids);
        if pid == second.pid() {
            served[1] += 1;
            if on_second.len() < 8 {
                on_second.push(conn);
            }
        } else {
            served[0] += 1;
        }
        if served[0] >= 1 && on_second.len() >= 8 {
            break;
        }
    }
    assert!(
        served[0] >= 1 && on_second.len() >= 8,
        "the kernel should spread connections over both processes: {served:?} \
         (first, second)"
    );
    eprintln!("{mode}: connections served before the stop (first, second): {served:?}");

    // Clients keep exchanging on the second's connections while the first
    // stops; not one exchange may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let exchanges = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = on_second
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let (stop, exchanges) = (stop.clone(), exchanges.clone());
            std::thread::spawn(move || -> Result<usize, String> {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let msg = format!("client {i} message {n}\n");
                    echo_on(&mut conn, msg.as_bytes())
                        .map_err(|e| format!("client {i}, exchange {n}: {e}"))?;
                    n += 1;
                    exchanges.fetch_add(1, Ordering::SeqCst);
                }
                Ok(n)
            })
        })
        .collect();
    let before = exchanges.load(Ordering::SeqCst);
    let (status, stderr) = terminate(&mut first);
    assert_eq!(
        status.code(),
        Some(0),
        "the first server's exit; stderr:\n{stderr}"
    );
    // And on for a while after it is gone.
    let target = exchanges.load(Ordering::SeqCst) + 2000;
    let deadline = Instant::now() + Duration::from_secs(20);
    while exchanges.load(Ordering::SeqCst) < target && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for client in clients {
        total += client
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("a client of the surviving server failed: {e}"));
    }
    assert!(
        exchanges.load(Ordering::SeqCst) >= target,
        "the survivor's clients stalled: {} exchanges",
        exchanges.load(Ordering::SeqCst)
    );
    eprintln!("{mode}: {total} exchanges on the survivor's connections, {before} before the stop");

    // New connections all go to the survivor.
    for _ in 0..50 {
        let (_conn, pid) = traced_connection(&address, port, &[second.pid()]);
        assert_eq!(pid, second.pid());
    }
    let mut second = second;
    let (status, stderr) = terminate(&mut second);
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
}

#[test]
fn reuse_port_two_processes_one_stops_event() {
    reuse_port_one_stops("event");
}

#[test]
fn reuse_port_two_processes_one_stops_threading() {
    reuse_port_one_stops("threading");
}
