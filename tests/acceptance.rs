//! Acceptance suite: CPython's Lib/test/test_socketserver.py ported to C
//! programs over real sockets (tests/c/acceptance_*.c), plus checks for
//! what the library adds (real concurrency, shutdown and close while
//! handlers run, max_children / max_threads, hand-off, no zombie, fd or
//! thread leaks).
//!
//! Each C program takes one sub-test name (or `--list`), runs it in its own
//! process with a hard timeout, and after the sub-test checks that it left
//! no descriptor, thread or child process behind. This side checks that the
//! sub-test left no file in its temporary directory ($SS_ACCEPT_TMPDIR)
//! and no process running in its process group. The programs:
//!
//! - acceptance_servers: SocketServerTest's 12 server tests (TCP, Unix
//!   stream, UDP, Unix datagram × sync, threading, forking), IPv6 TCP/UDP
//!   in every mode, and the four transports in SS_THREAD_POOL mode.
//! - acceptance_misc: test_shutdown, test_close_immediately,
//!   test_tcpserver_bind_leak, test_context_manager, test_threads_reaped.
//! - acceptance_verify: test_shutdown_request_called_if_verify_request_false
//!   and "one shutdown_request per request" (close/shutdown interposed).
//! - acceptance_errors: ErrorHandlerTest, crashing forked handlers, writes
//!   to a client that has gone.
//! - acceptance_writer: SocketWriterTest (unflushed write delivered, 16 MiB
//!   write interrupted by SIGUSR1).
//! - acceptance_concurrency: real concurrency, shutdown/close while
//!   handlers run, block_on_close / daemon threads, max_children,
//!   max_threads, no per-request growth.
//! - acceptance_handoff: ss_request_hand_off to a thread or a child.
//!
//! Plus, on this side: every listed C sub-test is run, and the exported
//! symbols match the header (MiscTestCase.test_all).
//! See each C file's header comment for what its sub-tests check.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::DEFAULT_TIMEOUT;

/// Runs sub-test `subtest` of tests/c/<prog>.c.
fn run(prog: &str, subtest: &str) {
    common::run_subtest(
        &format!("{prog}.c"),
        subtest,
        "SS_ACCEPT_TMPDIR",
        DEFAULT_TIMEOUT,
    );
}

// One #[test] per C sub-test, a module per C program, and
// `every_c_subtest_is_run`.
common::c_tests! {
    super::run;
    acceptance_servers {
        tcp_sync,
        tcp_threading,
        tcp_forking,
        unix_stream_sync,
        unix_stream_threading,
        unix_stream_forking,
        udp_sync,
        udp_threading,
        udp_forking,
        unix_dgram_sync,
        unix_dgram_threading,
        unix_dgram_forking,
        tcp6_sync,
        tcp6_threading,
        tcp6_forking,
        udp6_sync,
        udp6_threading,
        udp6_forking,
        tcp_pool,
        unix_stream_pool,
        udp_pool,
        unix_dgram_pool,
    }
    acceptance_misc {
        shutdown_many,
        close_immediately,
        bind_leak,
        context_manager,
        threads_reaped,
    }
    acceptance_verify {
        verify_false_sync,
        verify_false_threading,
        verify_false_forking,
        handled_closed_once_sync,
        handled_closed_once_threading,
        handled_closed_once_forking,
    }
    acceptance_errors {
        sync_handled,
        threading_handled,
        forking_handled,
        forking_crash_segv,
        forking_crash_abort,
        gone_client_threading,
        gone_client_forking,
    }
    acceptance_writer {
        basics,
        write_sync,
        write_threading,
    }
    acceptance_concurrency {
        concurrent_threading,
        concurrent_forking,
        concurrent_pool,
        concurrent_sync_control,
        shutdown_while_handlers_run,
        close_no_block_on_close,
        close_daemon_threads,
        max_children,
        max_threads,
        max_children_handle_request,
        free_while_daemon_handler_runs,
        no_growth_forking,
        no_growth_threading,
    }
    acceptance_handoff {
        handoff_fork,
        handoff_thread,
        handoff_fork_from_threading,
        handoff_thread_from_threading,
        handoff_fork_from_forking,
        handoff_thread_from_forking,
        handoff_thread_udp,
        handoff_wrong_state,
        handoff_dropped_on_failure,
    }
}

/// The `ss_` functions declared in include/socketserver.h: identifiers
/// starting with `ss_` directly followed by `(` outside comments (so
/// function-pointer typedefs such as `(*ss_request_fn)(...)` are skipped).
fn header_functions() -> BTreeSet<String> {
    let path = common::manifest_dir().join("include/socketserver.h");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    // Drop /* ... */ comments and // comments first.
    let mut code = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("/*") {
        code.push_str(&rest[..start]);
        match rest[start..].find("*/") {
            Some(end) => rest = &rest[start + end + 2..],
            None => {
                rest = "";
                break;
            }
        }
    }
    code.push_str(rest);
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = code.as_bytes();
    let mut names = BTreeSet::new();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while let Some(pos) = code[i..].find("ss_") {
        let start = i + pos;
        i = start + 3;
        if start > 0 && is_ident(bytes[start - 1]) {
            continue;
        }
        let mut end = start;
        while end < bytes.len() && is_ident(bytes[end]) {
            end += 1;
        }
        if bytes.get(end) == Some(&b'(') {
            names.insert(code[start..end].to_string());
        }
        i = end;
    }
    names
}

/// MiscTestCase.test_all, for C: the library exports exactly the `ss_`
/// functions the header declares, and nothing else.
#[test]
fn exported_symbols_match_header() {
    let so = common::setup().shared_library();
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
        .expect("run nm (binutils)");
    assert!(out.status.success(), "nm failed\n{}", common::show(&out));
    let mut exported = BTreeSet::new();
    let mut others = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (kind, name) = match fields.as_slice() {
            [_, kind, name] => (*kind, *name),
            [kind, name] => (*kind, *name),
            _ => continue,
        };
        // Versioned names look like name@@VERSION.
        let name = name.split('@').next().unwrap_or(name);
        if name.starts_with("ss_") {
            assert_eq!(
                kind, "T",
                "{name} is exported but is not a function ({kind})"
            );
            exported.insert(name.to_string());
        } else if kind != "A" {
            others.push(format!("{kind} {name}"));
        }
    }
    let declared = header_functions();
    assert!(
        declared.len() >= 50,
        "parsed only {} functions from the header: {declared:?}",
        declared.len()
    );
    let missing: Vec<_> = declared.difference(&exported).collect();
    let undeclared: Vec<_> = exported.difference(&declared).collect();
    assert!(
        missing.is_empty(),
        "declared in include/socketserver.h but not exported by {}: {missing:?} \
         (run `make header` after changing src/ffi)",
        so.display()
    );
    assert!(
        undeclared.is_empty(),
        "exported by {} but not declared in include/socketserver.h: {undeclared:?} \
         (a plain build no longer regenerates the header: run `make header`)",
        so.display()
    );
    assert!(
        others.is_empty(),
        "{} exports symbols outside the ss_ namespace: {others:?}",
        so.display()
    );
}
