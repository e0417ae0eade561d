//! The benchmark harness's parts, cheaply (`make bench` in full is not run
//! by the tests):
//!
//! - every reference server under benches/ (C: epoll over TCP and Unix,
//!   thread / fork / iterative blocking echo, the recvfrom/sendto UDP loop,
//!   libevent; Python: each socketserver class of benches/py_echo.py)
//!   builds, prints "listening on ADDR", answers benches/loadgen.c (which
//!   verifies every echoed byte: persistent, --churn with --sources, --udp,
//!   --unix) and exits 0 on SIGTERM;
//! - `echo_server --mode forking --max-children 60` serves 50 persistent
//!   clients at once (loadgen's starved= counts clients that got no echo),
//!   where the default cap (Python's max_children = 40) starves 10 of them;
//! - benches/shutdown_latency.c runs and reports every mode;
//! - scripts/bench.sh's instr case (callgrind counts) fills its table.
//!
//! Needs cc, python3, valgrind and libevent-dev (pkg-config libevent); a
//! missing one fails the test naming it.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{manifest_dir, run_with_timeout, setup, show, TempDir};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Compiles benches/<name>.c with `cc -O2 -Wall -Wextra -Werror -pthread`
/// (then `libs`) into target/<profile>/ctests/bench-<name>.
fn build_bench(name: &str, libs: &[String]) -> PathBuf {
    let setup = setup();
    let out = setup.out_dir.join(format!("bench-{name}"));
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let result = Command::new("cc")
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-I"])
        .arg(manifest_dir().join("include"))
        .arg(manifest_dir().join(format!("benches/{name}.c")))
        .arg("-o")
        .arg(&tmp)
        .arg("-L")
        .arg(&setup.lib_dir)
        .arg(format!("-Wl,-rpath,{}", setup.lib_dir.display()))
        .args(libs)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cc (is it installed?): {e}"));
    assert!(
        result.status.success(),
        "benches/{name}.c failed to compile\n{}",
        show(&result)
    );
    std::fs::rename(&tmp, &out).expect("rename the program");
    out
}

fn loadgen() -> PathBuf {
    static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    EXE.get_or_init(|| build_bench("loadgen", &[])).clone()
}

/// A server started in a process group of its own, whose first stdout line
/// is "listening on ADDR"; killed (with its group) if the test fails first.
struct Server {
    child: Option<Child>,
    addr: String,
    name: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    fn start(program: &Path, args: &[&str]) -> Server {
        let name = format!("{} {}", program.display(), args.join(" "));
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {name} (is it installed?): {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        });
        let mut server = Server {
            child: Some(child),
            addr: String::new(),
            name,
            stderr: Some(stderr),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| panic!("{} did not print its address", server.name));
        server.addr = line
            .strip_suffix('\n')
            .and_then(|l| l.strip_prefix("listening on "))
            .unwrap_or_else(|| panic!("{}: unexpected first line {line:?}", server.name))
            .to_string();
        server
    }

    /// SIGTERM: the server must exit 0 within 10 s.
    fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        let pid = child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if start.elapsed() > Duration::from_secs(10) {
                common::kill_group(pid);
                let _ = child.wait();
                panic!("{} did not exit within 10 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // Forked children (fork models) die with their parent.
        common::kill_group(pid);
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM; stderr:\n{stderr}",
            self.name
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            common::kill_group(child.id() as i32);
            let _ = child.wait();
        }
    }
}

/// Runs loadgen against `server` (`target`: "--address" or "--unix") with
/// `args`; returns its machine-readable line, after checking it exited 0
/// (no connection error, no byte of any echo wrong) and served requests.
fn load(server: &Server, target: &str, args: &[&str]) -> String {
    let mut argv = vec![target, server.addr.as_str()];
    argv.extend_from_slice(args);
    let out = run_with_timeout(&loadgen(), &argv, &[], TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = stdout.lines().next().unwrap_or("").to_string();
    assert!(
        out.status.success() && field(&line, "requests") > 0,
        "loadgen {argv:?} against {}\n{}",
        server.name,
        show(&out)
    );
    line
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

const SHORT: &[&str] = &["--duration", "0.2", "--connections", "4"];

/// Persistent, then one connection per request (TCP: over 4 source
/// addresses).
fn check_stream(server: &Server, target: &str) {
    load(server, target, SHORT);
    let mut churn = SHORT.to_vec();
    churn.push("--churn");
    if target == "--address" {
        churn.extend_from_slice(&["--sources", "4"]);
    }
    load(server, target, &churn);
}

#[test]
fn c_reference_servers_build_and_echo() {
    let tmp = TempDir::new("bench-refs");
    let epoll = build_bench("ref_epoll_echo", &[]);
    for args in [
        &["--address", "127.0.0.1:0"][..],
        &[
            "--address",
            "127.0.0.1:0",
            "--threads",
            "2",
            "--balance",
            "exclusive",
        ][..],
    ] {
        let s = Server::start(&epoll, args);
        check_stream(&s, "--address");
        s.stop();
    }
    let sock = tmp.path().join("epoll.sock");
    let s = Server::start(&epoll, &["--unix", sock.to_str().unwrap()]);
    check_stream(&s, "--unix");
    s.stop();
    assert!(!sock.exists(), "ref_epoll_echo left {}", sock.display());

    let blocking = build_bench("ref_blocking_echo", &[]);
    for model in ["thread", "fork", "iterative"] {
        let s = Server::start(&blocking, &["--address", "127.0.0.1:0", "--model", model]);
        if model == "iterative" {
            // One connection at a time: only a connection per request.
            load(
                &s,
                "--address",
                &["--duration", "0.2", "--connections", "4", "--churn"],
            );
        } else {
            check_stream(&s, "--address");
        }
        s.stop();
    }
    let sock = tmp.path().join("thread.sock");
    let s = Server::start(&blocking, &["--unix", sock.to_str().unwrap()]);
    check_stream(&s, "--unix");
    s.stop();

    let udp = build_bench("ref_udp_echo", &[]);
    let s = Server::start(&udp, &["--address", "127.0.0.1:0"]);
    let mut args = SHORT.to_vec();
    args.push("--udp");
    let line = load(&s, "--address", &args);
    assert_eq!(
        field(&line, "lost"),
        0,
        "datagrams lost on loopback: {line}"
    );
    s.stop();
}

#[test]
fn libevent_reference_builds_and_echoes() {
    let pc = Command::new("pkg-config")
        .args(["--cflags", "--libs", "libevent"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run pkg-config (apt-get install pkg-config): {e}"));
    assert!(
        pc.status.success(),
        "pkg-config does not find libevent: install libevent-dev\n{}",
        show(&pc)
    );
    let libs: Vec<String> = String::from_utf8_lossy(&pc.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let exe = build_bench("ref_libevent_echo", &libs);
    let s = Server::start(&exe, &["--address", "127.0.0.1:0"]);
    check_stream(&s, "--address");
    s.stop();
}

#[test]
fn python_reference_servers_echo() {
    let tmp = TempDir::new("bench-py");
    let script = manifest_dir().join("benches/py_echo.py");
    let script = script.to_str().unwrap();
    let python = Path::new("python3");
    for server in ["tcp", "threading", "forking", "udp", "unix-threading"] {
        let sock = tmp.path().join("py.sock");
        let addr = if server.starts_with("unix") {
            sock.to_str().unwrap().to_string()
        } else {
            "127.0.0.1:0".to_string()
        };
        let s = Server::start(python, &[script, "--server", server, "--address", &addr]);
        match server {
            "udp" => {
                let mut args = SHORT.to_vec();
                args.push("--udp");
                load(&s, "--address", &args);
            }
            // One connection at a time: only a connection per request.
            "tcp" => {
                load(
                    &s,
                    "--address",
                    &["--duration", "0.2", "--connections", "1", "--churn"],
                );
            }
            "unix-threading" => check_stream(&s, "--unix"),
            _ => check_stream(&s, "--address"),
        }
        s.stop();
        assert!(!sock.exists(), "py_echo.py left {}", sock.display());
    }
    // The HTTP reference answers like http_hello.
    let s = Server::start(
        python,
        &[script, "--server", "http", "--address", "127.0.0.1:0"],
    );
    let url = format!("http://{}/", s.addr);
    let out = run_with_timeout(Path::new("curl"), &["-s", "-i", &url], &[], TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success()
            && text.starts_with("HTTP/1.1 200")
            && text.ends_with("\r\n\r\nHello, world!\n"),
        "curl {url}\n{}",
        show(&out)
    );
    s.stop();
}

fn echo_server() -> PathBuf {
    common::compile_example("echo_server", &[])
}

#[test]
fn forking_with_max_children_60_serves_50_persistent_clients_at_once() {
    let args = ["--duration", "1", "--warmup", "0.5", "--connections", "50"];
    let s = Server::start(
        &echo_server(),
        &[
            "--transport",
            "tcp",
            "--mode",
            "forking",
            "--address",
            "127.0.0.1:0",
            "--max-children",
            "60",
        ],
    );
    let line = load(&s, "--address", &args);
    s.stop();
    assert_eq!(
        field(&line, "starved"),
        0,
        "--max-children 60: every one of 50 persistent clients must be served: {line}"
    );
    // Without the flag, Python's max_children = 40 leaves 10 of them
    // waiting in the listen queue the whole time (what the flag is for).
    let s = Server::start(
        &echo_server(),
        &[
            "--transport",
            "tcp",
            "--mode",
            "forking",
            "--address",
            "127.0.0.1:0",
        ],
    );
    let line = load(&s, "--address", &args);
    s.stop();
    assert_eq!(
        field(&line, "starved"),
        10,
        "the default cap of 40 children starves 10 of 50: {line}"
    );
}

#[test]
fn echo_server_rejects_a_bad_max_children() {
    for bad in ["0", "-1", "x", "100001"] {
        let out = run_with_timeout(
            &echo_server(),
            &[
                "--transport",
                "tcp",
                "--mode",
                "forking",
                "--address",
                "127.0.0.1:0",
                "--max-children",
                bad,
            ],
            &[],
            TIMEOUT,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(2) && err.contains("--max-children takes a number"),
            "--max-children {bad}\n{}",
            show(&out)
        );
    }
}

#[test]
fn shutdown_latency_reports_every_mode() {
    let exe = build_bench("shutdown_latency", &["-lsocketserver".to_string()]);
    let out = run_with_timeout(&exe, &["--rounds", "2"], &[], TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", show(&out));
    for mode in ["sync", "threading", "forking", "pool", "event"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("shutdown mode={mode} rounds=2 median_us="))),
            "no figure for {mode}\n{}",
            show(&out)
        );
    }
}

/// scripts/bench.sh with BENCH_ONLY=`case` and the `knobs`, against this
/// build's library; fails unless it succeeds, and returns the table it
/// wrote.
fn bench_table(case: &str, knobs: &[(&str, &str)]) -> String {
    let dir = TempDir::new(&format!("bench-{case}"));
    let results = dir.path().join("results.md");
    let mut env: Vec<(&str, &Path)> = vec![
        ("BENCH_ONLY", Path::new(case)),
        ("BENCH_RESULTS", &results),
        ("SS_LIB_DIR", &setup().lib_dir),
    ];
    env.extend(knobs.iter().map(|&(k, v)| (k, Path::new(v))));
    let out = run_with_timeout(
        &manifest_dir().join("scripts/bench.sh"),
        &[],
        &env,
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", show(&out));
    std::fs::read_to_string(&results).expect("the results file")
}

/// scripts/bench.sh's `instr` case (servers under callgrind, instrumented
/// only while loadgen runs): every row of its table has both counts and a
/// ratio, none failed.
#[test]
fn bench_script_counts_instructions_per_request() {
    common::require_tool("valgrind", "valgrind");
    common::require_tool("callgrind_control", "valgrind");
    let table = bench_table("instr", &[]);
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| tcp50 |") || l.starts_with("| udp50 |"))
        .collect();
    assert_eq!(rows.len(), 4, "{table}");
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let count = |i: usize| cells[i].parse::<u64>().unwrap_or(0);
        assert!(count(4) > 0 && count(5) > 0, "{row}\n{table}");
        assert!(
            cells[6].trim_matches('*').parse::<f64>().is_ok(),
            "{row}\n{table}"
        );
    }
}

/// scripts/bench.sh's churn case (one short round) runs the C fork echo
/// with libsocketserver.so preloaded beside the plain one and ours, and
/// its table has both of that server's rows with figures.
#[test]
fn bench_script_compares_forking_with_the_library_mapped_reference() {
    common::require_tool("python3", "python3");
    let table = bench_table(
        "churn",
        &[
            ("BENCH_QUICK", "1"),
            ("BENCH_DURATION", "0.3"),
            ("BENCH_WARMUP", "0"),
        ],
    );
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| churn |") && l.contains("C fork/conn, library mapped"))
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(
            cells[6]
                .trim_matches('*')
                .parse::<f64>()
                .is_ok_and(|r| r > 0.0),
            "{row}\n{table}"
        );
    }
}
