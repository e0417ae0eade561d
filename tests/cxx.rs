//! include/socketserver.hpp, the C++17 wrapper: tests/c/cxx_api.cpp built
//! with g++ and with clang++ (-std=c++17 -Wall -Wextra -Wpedantic -Werror;
//! a compiler that is not installed fails the test, naming it), each
//! sub-test run in a process of its own over real sockets, and the C++
//! example c_examples/echo_server_cxx.cpp built with both and driven as a
//! server.
//!
//! - raii_callables_freed_once / raii_failed_new_frees_callables: each
//!   server owns one copy of the config's callables, destroyed exactly
//!   once, by the user data's finalizer (on free, and when ss_server_new
//!   fails).
//! - move_semantics: move construction and assignment of config and
//!   server, release(), a moved-from config throwing.
//! - exception_*: a handler throwing std::runtime_error or a non-std type
//!   (sync, threading, pool, forking: caught in the child), setup and
//!   finish throwing, an ss::error
//!   keeping its status: handle_error gets the what() text, the server
//!   serves the next client; without a handle_error the default line
//!   carries it (to the log callback).
//! - event_on_data_throws: that connection fails, another one is unaffected.
//! - void_callbacks_throw / event_on_eof_and_close_throw / event_post:
//!   exceptions from callbacks without a failure return are reported.
//! - hand_off_thread: request::hand_off with the config's continuation
//!   (which may throw too); refused without one.
//! - event_pause_resume_reading: no on_data while paused (input waiting
//!   in the kernel over several loop turns), held input presented first on
//!   resume.
//! - event_on_drain_low_water / event_on_drain_throws: on_drain once, at
//!   the low-water mark, resuming reading there; an exception from it
//!   reaches handle_error naming the connection (ss::error_conn() gives
//!   it) and closes that connection only.
//! - event_shutdown_write_and_abort: half-close (peer reads EOF, the
//!   connection still reads, later writes throw SS_ERR_CLOSED); abort (the
//!   peer gets ECONNRESET); on_close once each.
//! - event_writev: initializer_list, string-view array (stack and heap
//!   paths), iovec; more than 1024 buffers refused.
//! - event_conn_server_and_addresses: conn::server(), peer_sockaddr(),
//!   local_sockaddr() over TCP and an unnamed Unix client;
//!   request_client_sockaddr: request::client_sockaddr().
//! - event_watch_fd_callables / event_watch_throws: watch_fd callables
//!   destroyed exactly once (replaced, unwatched, after the hang-up call,
//!   self-unwatch after the call returns, replaced in place in its last
//!   call, unwatched and watched anew there (kept), at the connection's
//!   close, at once when watch_fd throws); an exception fails that
//!   connection only; event_watch_many_loops: 16 connections at a time on
//!   four loops, each watch's callable (owning its pipe) freed at close.
//! - event_timer_callables / event_timer_close: each conn::set_timer
//!   callable (move-only, holding a probe that counts its destruction) is
//!   destroyed exactly once: after it fired (alive during its call), at
//!   cancel_timer (never called), after a reset and its single run, when
//!   cancelled by another timer due at the same moment, at once when
//!   set_timer throws (empty callable, after close()), and at the close of
//!   a connection with timers still pending (the client leaves, close() in
//!   on_data, the server stops; after on_close); cancel/reset of a timer
//!   no longer pending (its own id inside its call, a fired one) give
//!   false / SS_ERR_INVALID_ARGUMENT. event_timer_many: 8 connections on
//!   two loops with 2100 timers each (half cancelled at once, half fired,
//!   100 left for the close) share the registry; each callable destroyed
//!   once. event_timer_throws: an exception
//!   reaches handle_error naming the connection (error_conn() too) and
//!   closes that connection only.
//! - event_loop_timer: config::add_loop_timer on two loops (each loop's
//!   index), one that throws reported and going on, refused ones
//!   (another mode, interval 0, empty) keeping nothing, the config's and
//!   each server's copy destroyed with them.
//! - event_drain_from_thread / event_drain_from_handler: server::drain()
//!   from the test's thread or inside on_data, with an idle and a busy
//!   connection (conn::set_busy, the answer posted by a worker thread): the
//!   idle one closes at once while the busy one is held, new connections
//!   are refused, the busy client gets its whole 4 MiB answer, then the
//!   end; serve_forever returns by itself; drain_cut() 0; no serving
//!   again. event_drain_deadline_cut: a connection kept busy is cut at the
//!   deadline: serve_forever throws SS_ERR_TIMEOUT, drain_cut() 1; a
//!   negative deadline is refused with a status. threading_drain: the
//!   same in SS_THREADING (the idle handler's blocked read ends, the busy
//!   handler finishes its answer and sees draining()).
//! - server_from_fd_and_listen_fds: server::from_fd adopts a bound socket
//!   (refused: still the caller's), listen_fds() with LISTEN_* variables.
//! - error_carries_status_and_message: ss::error for a bad address (status,
//!   detail, what()), an address in use (os_error() == EADDRINUSE).
//! - log_callback_replaced_and_restored: ss::set_log_callback destroys the
//!   previous callable, nullptr restores stderr, refused from inside.
//! - version_matches: ss::version() / version_number() against the macros.
//! - builds_optimised: cxx_api.cpp also builds with -O2 (g++ warns about
//!   more there) under both compilers, and runs.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CXX17_FLAGS: &[&str] = &[
    "-std=c++17",
    "-Wall",
    "-Wextra",
    "-Wpedantic",
    "-Werror",
    "-g",
];

const COMPILERS: &[&str] = &["g++", "clang++"];

/// One #[test] per (compiler, sub-test), and the list they cover.
macro_rules! cxx_subtests {
    ($($sub:ident),* $(,)?) => {
        const SUBTESTS: &[&str] = &[$(stringify!($sub)),*];
        mod gxx {
            $(#[test] fn $sub() { super::run("g++", stringify!($sub)); })*
        }
        mod clangxx {
            $(#[test] fn $sub() { super::run("clang++", stringify!($sub)); })*
        }
    };
}

cxx_subtests! {
    raii_callables_freed_once,
    raii_failed_new_frees_callables,
    move_semantics,
    exception_std_sync,
    exception_non_std_sync,
    exception_std_threading,
    exception_non_std_pool,
    exception_std_forking,
    exception_ss_error_keeps_status,
    exception_default_handle_error,
    exception_setup_finish,
    event_on_data_throws,
    void_callbacks_throw,
    event_on_eof_and_close_throw,
    event_post,
    hand_off_thread,
    event_pause_resume_reading,
    event_on_drain_low_water,
    event_on_drain_throws,
    event_shutdown_write_and_abort,
    event_writev,
    event_conn_server_and_addresses,
    request_client_sockaddr,
    event_watch_fd_callables,
    event_watch_many_loops,
    event_watch_throws,
    event_timer_callables,
    event_timer_close,
    event_timer_many,
    event_timer_throws,
    event_loop_timer,
    event_drain_from_thread,
    event_drain_from_handler,
    event_drain_deadline_cut,
    threading_drain,
    server_from_fd_and_listen_fds,
    error_carries_status_and_message,
    log_callback_replaced_and_restored,
    version_matches,
}

fn program(compiler: &str) -> std::path::PathBuf {
    common::compile_using(Some(compiler), "cxx_api.cpp", CXX17_FLAGS)
}

fn run(compiler: &str, subtest: &str) {
    let exe = program(compiler);
    let tmp = common::TempDir::new("cxx");
    let out = common::run_with_timeout(
        &exe,
        &[subtest],
        &[("SS_TEST_TMPDIR", tmp.path())],
        common::DEFAULT_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "cxx_api ({compiler}) {subtest} failed\n{}",
        common::show(&out)
    );
    let expect = format!("ok {subtest}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == expect),
        "cxx_api ({compiler}) {subtest} exited 0 without reporting success\n{}",
        common::show(&out)
    );
    assert!(
        tmp.leftovers().is_empty(),
        "left files behind: {:?}",
        tmp.leftovers()
    );
}

/// The wrapper also builds warning-free optimised (g++ -O2 finds more
/// "may be used uninitialized" cases than -O0 does), and runs.
#[test]
fn builds_optimised() {
    let mut flags = CXX17_FLAGS.to_vec();
    flags.push("-O2");
    for compiler in COMPILERS {
        let exe = common::compile_using(Some(compiler), "cxx_api.cpp", &flags);
        let out = common::run_with_timeout(&exe, &["event_writev"], &[], common::DEFAULT_TIMEOUT);
        assert!(
            out.status.success(),
            "cxx_api -O2 ({compiler}) event_writev failed\n{}",
            common::show(&out)
        );
    }
}

/// A compiler that is not installed fails the test, naming it.
#[test]
#[should_panic(expected = "cannot run the compiler `no-such-c++-compiler`")]
fn missing_compiler_fails_naming_it() {
    common::compile_using(Some("no-such-c++-compiler"), "cxx_api.cpp", CXX17_FLAGS);
}

#[test]
fn every_cxx_subtest_is_run() {
    let exe = program("g++");
    let out = common::run_with_timeout(&exe, &["--list"], &[], Duration::from_secs(10));
    assert!(out.status.success(), "{}", common::show(&out));
    let mut listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let mut run: Vec<String> = SUBTESTS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    run.sort();
    assert_eq!(listed, run, "cxx_api.cpp --list differs from tests/cxx.rs");
}

/// The C++ example, built with each compiler as the Makefile builds it:
/// --help exits 0, a missing argument exits 2 with the usage, and the
/// server echoes over TCP in event and threading mode, then stops on
/// SIGTERM with status 0.
#[test]
fn echo_server_cxx_example() {
    for compiler in COMPILERS {
        let exe = common::compile_using(
            Some(compiler),
            "../../c_examples/echo_server_cxx.cpp",
            CXX17_FLAGS,
        );
        let help = common::run_with_timeout(&exe, &["--help"], &[], Duration::from_secs(10));
        assert!(help.status.success(), "{}", common::show(&help));
        assert!(String::from_utf8_lossy(&help.stdout).contains("usage: echo_server_cxx"));
        let bad =
            common::run_with_timeout(&exe, &["--mode", "event"], &[], Duration::from_secs(10));
        assert_eq!(bad.status.code(), Some(2), "{}", common::show(&bad));
        assert!(String::from_utf8_lossy(&bad.stderr).contains("usage:"));

        for mode in ["event", "threading"] {
            let mut child = Command::new(&exe)
                .args([
                    "--transport",
                    "tcp",
                    "--mode",
                    mode,
                    "--address",
                    "127.0.0.1:0",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start echo_server_cxx");
            let mut stdout = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let address = line
                .trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
                .to_string();
            let mut client = TcpStream::connect(&address).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let message = format!("hello from {compiler} {mode}\n");
            client.write_all(message.as_bytes()).unwrap();
            let mut echoed = vec![0u8; message.len()];
            client.read_exact(&mut echoed).unwrap();
            assert_eq!(echoed, message.as_bytes());
            // SIGTERM with the client still connected: a clean, prompt stop.
            // SAFETY: kill(2) on the child this test started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    panic!("echo_server_cxx ({compiler}, {mode}) ignored SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(
                status.success(),
                "echo_server_cxx ({compiler}, {mode}) exited {status}: {err}"
            );
            drop(client);
        }
    }
}
