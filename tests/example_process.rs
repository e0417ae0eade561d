//! The harness itself (tests/common/example.rs): each check that the
//! example tests rely on fails when it should, driven with `sh -c` scripts
//! standing in for a server.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::example::ExampleProcess;

fn sh(script: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    cmd
}

/// The panic message of `f`, which must panic.
fn panic_of(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let err = std::panic::catch_unwind(f).expect_err("should have failed");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Group `pid` empties within 10 s: its leader was reaped, and orphans
/// (killed with it) are reaped by init.
fn assert_group_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::group_alive(pid) {
        assert!(Instant::now() < deadline, "group {pid} still alive");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn address_stderr_and_exit_status() {
    let mut p = ExampleProcess::start(
        sh("echo 'listening on 127.0.0.1:4242'; echo oops >&2; read x; exit 3"),
        Duration::from_secs(10),
    );
    assert_eq!(p.addr(), "127.0.0.1:4242");
    assert_eq!(p.port(), 4242);
    // stdin is /dev/null: `read` ends at once, and so does the script.
    let (status, stderr) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(3));
    assert_eq!(stderr, "oops\n");
    assert!(!p.alive());
}

#[test]
fn a_missing_address_line_fails_with_stderr() {
    let msg = panic_of(|| {
        ExampleProcess::start(sh("echo hello; echo why >&2"), Duration::from_secs(10));
    });
    assert!(
        msg.contains("did not print \"listening on ADDR\"")
            && msg.contains("\"hello\\n\"")
            && msg.contains("why"),
        "{msg}"
    );
    let started = Instant::now();
    let msg = panic_of(|| {
        ExampleProcess::start(sh("sleep 30"), Duration::from_millis(200));
    });
    assert!(msg.contains("within 200ms"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "killed at once"
    );
}

#[test]
fn more_on_stdout_fails() {
    let msg = panic_of(|| {
        let mut p = ExampleProcess::start(
            sh("echo 'listening on x:1'; echo more"),
            Duration::from_secs(10),
        );
        p.wait_exit(Duration::from_secs(10));
    });
    assert!(
        msg.contains("printed more on stdout") && msg.contains("more\\n"),
        "{msg}"
    );
}

#[test]
fn stop_signals_and_a_slow_exit_fails() {
    let mut p = ExampleProcess::start(
        sh("trap 'exit 0' TERM; echo 'listening on x:1'; while :; do sleep 0.05; done"),
        Duration::from_secs(10),
    );
    let (status, _) = p.stop(libc::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));

    let p = ExampleProcess::start(
        sh("trap '' TERM; echo 'listening on x:1'; while :; do sleep 0.05; done"),
        Duration::from_secs(10),
    );
    let pid = p.pid();
    let mut p = std::panic::AssertUnwindSafe(p);
    let msg = panic_of(move || {
        p.stop(libc::SIGTERM, Duration::from_millis(300));
    });
    assert!(msg.contains("did not exit within 300ms"), "{msg}");
    assert_group_gone(pid);
}

#[test]
fn drop_kills_the_group() {
    let mut p = ExampleProcess::start(
        sh("sleep 60 & echo 'listening on x:1'; wait"),
        Duration::from_secs(10),
    );
    assert_eq!(p.wait_timeout(Duration::from_millis(100)), None);
    let pid = p.pid();
    assert!(common::group_alive(pid));
    drop(p);
    assert_group_gone(pid);
}

#[test]
fn require_tool_names_the_tool_and_package() {
    assert!(common::require_tool("sh", "dash").is_file());
    let msg = panic_of(|| {
        common::require_tool("no-such-tool-here", "no-such-package");
    });
    assert_eq!(
        msg,
        "`no-such-tool-here` is not installed (Debian package no-such-package): this test needs it"
    );
}

/// A process left behind holding stderr: wait_exit returns 5 s after the
/// exit, saying so in the stderr it returns, instead of hanging.
#[test]
fn stderr_held_open_is_reported() {
    let mut p = ExampleProcess::start(
        sh("echo 'listening on x:1'; sleep 30 >/dev/null & echo bye >&2"),
        Duration::from_secs(10),
    );
    let pid = p.pid();
    let started = Instant::now();
    let (status, stderr) = p.wait_exit(Duration::from_secs(10));
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(9));
    assert_eq!(stderr, "bye\n<stderr still open 5s after the exit>");
    drop(p);
    assert_group_gone(pid);
}

/// tests/common/strace.rs counts exactly the calls made between attach and
/// finish, by the process and the children it forks: five `/bin/true` run
/// after attaching are five execve (the shell's own came before).
#[test]
fn strace_counts_calls_of_the_window_and_its_children() {
    use std::io::Write;
    let mut shell = sh("while read line; do /bin/true; done")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let strace = common::strace::Strace::attach(shell.id() as i32);
    let mut input = shell.stdin.take().expect("stdin");
    input.write_all(b"1\n2\n3\n4\n5\n").expect("write");
    drop(input);
    assert!(shell.wait().expect("wait").success());
    let counts = strace.finish();
    assert_eq!(counts.calls("execve"), 5, "{counts}");
    assert!(counts.calls("read") >= 6, "{counts}");
    assert!(counts.total() > counts.calls("execve"), "{counts}");
}

/// finish counts the calls a traced process makes after the test has seen
/// its last output, while it is still running: the shell says "ready",
/// computes in user space for a while, then calls chdir and waits. (It
/// detached at once before, and counted no chdir.)
#[test]
fn strace_counts_the_calls_still_under_way_at_finish() {
    use std::io::{BufRead, Write};
    let mut shell = sh(
        "read line; echo ready; i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; cd /; read line; true",
    )
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .spawn()
    .expect("spawn sh");
    let strace = common::strace::Strace::attach(shell.id() as i32);
    let mut input = shell.stdin.take().expect("stdin");
    input.write_all(b"go\n").expect("write");
    let mut ready = String::new();
    std::io::BufReader::new(shell.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("read");
    assert_eq!(ready, "ready\n");
    let counts = strace.finish();
    drop(input);
    assert!(shell.wait().expect("wait").success());
    assert_eq!(counts.calls("chdir"), 1, "{counts}");
}
