//! The C-level test suite: builds the library, compiles the C programs in
//! tests/c/ against include/socketserver.h and libsocketserver.so with strict
//! warnings, and runs each sub-test in its own process with a hard timeout.
//!
//! Every C program takes the name of one sub-test (or `--list`), runs it
//! over real sockets (127.0.0.1, ::1, Unix paths in a fresh temporary
//! directory given as $SS_TEST_TMPDIR, or @abstract names), and exits 0 on
//! success. The C side also checks that the sub-test left no descriptor and
//! no thread behind; this side checks that it left no file in its directory.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{manifest_dir, show, TempDir, STRICT_C99_FLAGS};

/// How long one C sub-test may run before it is killed and failed.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a compiler command and panics with its output if it fails.
fn assert_compiles(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run the compiler for {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed to compile\n{cmd:?}\n{}",
        show(&out)
    );
}

/// Runs one sub-test of tests/c/<prog>.c, compiled with the strict C99
/// flags alone (the programs set their feature-test macro themselves), and
/// fails unless it exits 0, reports success and leaves its temporary
/// directory ($SS_TEST_TMPDIR) empty.
fn run_c(prog: &str, subtest: &str) {
    common::run_subtest_with(
        &format!("{prog}.c"),
        STRICT_C99_FLAGS,
        subtest,
        "SS_TEST_TMPDIR",
        TIMEOUT,
    );
}

// One #[test] per C sub-test, a module per C program, and
// `every_c_subtest_is_run`.
common::c_tests! {
    super::run_c, list_flags = STRICT_C99_FLAGS;
    transports {
        tcp_ipv4,
        tcp_ipv6,
        udp_ipv4,
        udp_ipv6,
        unix_stream_path,
        unix_stream_abstract,
        unix_dgram_path,
        unix_dgram_abstract,
    }
    address {
        port0_ipv4,
        port0_ipv6,
        localhost,
        buffer_rules,
        unix_path,
        unix_abstract,
        before_bind,
    }
    hooks {
        order,
        handle_fails,
        setup_fails,
        finish_fails,
        handle_and_finish_fail,
        default_handle_error,
        verify_false,
        service_actions_idle,
        service_actions_after_request,
        handle_timeout,
        timeout_zero,
        handle_request_one,
        accept_error,
    }
    shutdown {
        idle_other_thread,
        from_handler,
        from_handler_in_handle_request,
        from_hook,
        from_signal_thread,
        from_signal_process,
        before_serve_forever,
        before_handle_request,
        many_servers,
        handle_request_running,
    }
    close {
        while_serving,
        while_handle_request,
        from_handler,
        twice,
        serve_after_close,
        unix_file_removed,
        unix_file_removed_by_free,
        regular_file_kept,
        replaced_file_kept,
        free_from_handler,
    }
    lifecycle {
        manual_bind_activate,
        manual_datagram,
        already_serving,
        bind_failure_no_fd_leak,
        socket_options,
        reuse_address_time_wait,
    }
    datagram {
        reply_on_finish,
        partial_reply_on_failure,
        no_reply_when_nothing_written,
        reply_immediately,
        too_long_udp,
        too_long_unix,
        unbound_unix_client,
        whole_datagram,
        refused_get_no_reply,
        empty_datagram,
    }
    stream_io {
        readline_cap,
        readline_small_buffer,
        readline_unbuffered,
        read_exact_split,
        read_exact_eof,
        request_timeout_config,
        request_timeout_per_request,
        readline_timeout_keeps_partial_line,
        per_request_timeout_is_per_request,
        huge_timeouts,
        write_timeout,
        unbuffered_write_is_immediate,
        write_buffer,
        write_buffer_full,
        unbuffered_leaves_socket_data,
        write_to_closed_peer,
        flush_to_closed_peer,
        client_address_ipv4,
        client_address_ipv6,
        client_address_unix,
        request_accessors,
        signals_during_io,
    }
    user_data {
        finalizer_on_free,
        finalizer_on_failed_new,
    }
    bad_input {
        null_config,
        null_server,
        null_request,
        null_conn,
        request_args,
        enum_ranges,
        bad_addresses,
        setter_values,
        no_handle_callback,
        status_strings,
        last_error_message,
        free_null,
        version,
    }
    thread_local {
        separate_messages,
        handler_thread_message,
    }
}

/// The header compiles on its own under the strict C99 flags (plus a few
/// more), and twice in one unit (include guard).
#[test]
fn header_compiles_alone_as_c99() {
    let header = manifest_dir().join("include/socketserver.h");
    let mut cmd = Command::new("cc");
    cmd.args(STRICT_C99_FLAGS)
        .args(["-Wstrict-prototypes", "-Wmissing-prototypes", "-Wshadow"])
        .args(["-fsyntax-only", "-x", "c"])
        .arg(&header);
    assert_compiles(cmd, "include/socketserver.h as C99");

    let tmp = TempDir::new("ctest");
    let unit = tmp.path().join("twice.c");
    std::fs::write(
        &unit,
        "#include \"socketserver.h\"\n#include \"socketserver.h\"\n\
         int main(void) { return ss_version() == 0; }\n",
    )
    .expect("write twice.c");
    let mut cmd = Command::new("cc");
    cmd.args(STRICT_C99_FLAGS)
        .arg("-I")
        .arg(manifest_dir().join("include"))
        .args(["-fsyntax-only"])
        .arg(&unit);
    assert_compiles(cmd, "a unit including the header twice");
}

/// Every function the header declares ends its documentation with a
/// "Thread:" line (where it may be called), and the header speaks to its
/// users: no wording that only makes sense inside this repository.
#[test]
fn header_states_each_functions_thread_rule() {
    let header = std::fs::read_to_string(manifest_dir().join("include/socketserver.h"))
        .expect("read the header");
    let lines: Vec<&str> = header.lines().collect();
    let mut checked = 0;
    let mut missing = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let decl = l.split_once("\") ").map_or(*l, |(_, decl)| decl);
        let is_function = !l.starts_with([' ', '*', '/', '#'])
            && !l.starts_with("typedef")
            && decl.find('(').is_some_and(|open| {
                decl[..open]
                    .rsplit([' ', '*'])
                    .next()
                    .is_some_and(|name| name.starts_with("ss_"))
            });
        if !is_function {
            continue;
        }
        checked += 1;
        // The doc comment right above: from its "/**" down to this line.
        let start = lines[..i].iter().rposition(|d| d.starts_with("/**"));
        let doc = start.map_or(&[][..], |s| &lines[s..i]);
        if !doc.iter().any(|d| d.starts_with(" * Thread: ")) {
            missing.push(decl.to_string());
        }
    }
    assert!(checked > 40, "too few declarations found: {checked}");
    assert!(missing.is_empty(), "no \"Thread:\" line: {missing:#?}");
    let lower = header.to_lowercase();
    for word in [
        "the seed",
        "later model",
        "allocates nothing",
        "issue ",
        "helper",
    ] {
        assert!(!lower.contains(word), "the header says {word:?}");
    }
}

/// The 0.1 names kept as deprecated aliases make the compiler warn, naming
/// the function to use instead; the new names compile cleanly.
#[test]
fn deprecated_aliases_warn() {
    let tmp = TempDir::new("ctest");
    let compile = |name: &str, body: &str| {
        let unit = tmp.path().join(name);
        std::fs::write(
            &unit,
            format!(
                "#include \"socketserver.h\"\n\
                 void *use(struct ss_request *r, struct ss_conn *c);\n\
                 void *use(struct ss_request *r, struct ss_conn *c) {{ {body} }}\n"
            ),
        )
        .expect("write the unit");
        Command::new("cc")
            .args(STRICT_C99_FLAGS)
            .arg("-I")
            .arg(manifest_dir().join("include"))
            .args(["-fsyntax-only"])
            .arg(&unit)
            .output()
            .expect("run cc")
    };
    for (old, new) in [
        ("ss_request_user_data(r)", "ss_request_server_user_data()"),
        ("ss_conn_user_data(c)", "ss_conn_data()"),
        ("ss_conn_set_user_data(c, r) ? c : 0", "ss_conn_set_data()"),
    ] {
        let out = compile("old.c", &format!("(void)r; (void)c; return {old};"));
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && text.contains("deprecated") && text.contains(new),
            "{old}: expected a deprecation error naming {new}\n{}",
            show(&out)
        );
    }
    let out = compile(
        "new.c",
        "(void)ss_conn_set_data(c, r); (void)ss_conn_data(c); \
         return ss_request_server_user_data(r);",
    );
    assert!(out.status.success(), "new names\n{}", show(&out));
}

/// A C++ program includes the header (extern "C" guards), links against the
/// library and calls into it.
#[test]
fn header_works_from_cplusplus() {
    let exe = common::compile("header_cxx.cpp");
    let tmp = TempDir::new("ctest");
    let out = common::run_with_timeout(&exe, &[], &[("SS_TEST_TMPDIR", tmp.path())], TIMEOUT);
    assert!(out.status.success(), "header_cxx\n{}", show(&out));
}

/// The functions the header declares are exactly the ss_* symbols the
/// shared library exports, and bad_input.c exercises every one of them.
#[test]
fn header_matches_exported_symbols() {
    let header = std::fs::read_to_string(manifest_dir().join("include/socketserver.h"))
        .expect("read the header");
    let mut declared: Vec<String> = header
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('*') && !l.starts_with("typedef"))
        .filter_map(|l| {
            // A deprecated alias starts with SS_DEPRECATED("note").
            let l = l.split_once("\") ").map_or(l, |(_, decl)| decl);
            let open = l.find('(')?;
            let name = l[..open].rsplit([' ', '*']).next()?;
            name.starts_with("ss_").then(|| name.to_string())
        })
        .collect();
    declared.sort();
    declared.dedup();
    assert!(
        declared.len() > 40,
        "too few declarations found: {declared:?}"
    );

    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(common::setup().shared_library())
        .output()
        .expect("run nm");
    assert!(out.status.success(), "nm\n{}", show(&out));
    let mut exported: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| s.starts_with("ss_"))
        .map(str::to_string)
        .collect();
    exported.sort();
    exported.dedup();
    assert_eq!(
        declared, exported,
        "header declarations vs exported symbols"
    );

    let bad_input = std::fs::read_to_string(manifest_dir().join("tests/c/bad_input.c"))
        .expect("read bad_input.c");
    let missing: Vec<&String> = declared
        .iter()
        .filter(|f| !bad_input.contains(&format!("{f}(")))
        .collect();
    assert!(missing.is_empty(), "bad_input.c does not call {missing:?}");
}

/// testutil.h's `--fork-each` (what scripts/valgrind.sh runs the C tests
/// with): each named sub-test runs in a forked child of its own, and the
/// runner reports each one's exit status the way timeout(1) would (1 for a
/// failure or a leaked descriptor, 124 for one killed at its time limit, 2
/// for an unknown name), with its pid, temporary directory and duration.
#[test]
fn fork_each_runs_each_subtest_in_a_child_of_its_own() {
    let exe = common::compile("harness/fork_each.c");
    let logs = TempDir::new("forkeach");
    let prefix = logs.path().join("fe");
    let prefix = prefix.to_str().expect("utf-8 path");
    let names = [
        "passes", "fails", "hangs", "leaks_fd", "isolated", "nosuch", "isolated",
    ];
    let mut args = vec!["--fork-each", "1", prefix];
    args.extend(names);
    let out = common::run_with_timeout(&exe, &args, &[], Duration::from_secs(30));
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = stdout.lines();
    let runner: i32 = lines
        .next()
        .and_then(|l| l.strip_prefix("runner "))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no 'runner PID' line first\n{}", show(&out)));
    let results: Vec<Vec<&str>> = lines.map(|l| l.split(' ').collect()).collect();
    assert_eq!(
        results.len(),
        names.len(),
        "one line per sub-test\n{stdout}"
    );
    let mut pids = Vec::new();
    let mut dirs = Vec::new();
    for (fields, name) in results.iter().zip(names) {
        assert_eq!(fields.len(), 5, "SUBTEST PID STATUS TMPDIR MS: {fields:?}");
        assert_eq!(fields[0], name, "in the order given");
        let expected = match name {
            "passes" | "isolated" => "0",
            "fails" | "leaks_fd" => "1",
            "hangs" => "124",
            _ => "2",
        };
        assert_eq!(fields[2], expected, "status of {name}\n{stdout}");
        if name == "nosuch" {
            assert_eq!(&fields[1..], ["0", "2", "-", "0"]);
            continue;
        }
        let pid: i32 = fields[1].parse().expect("pid");
        assert!(
            pid != runner && !pids.contains(&pid),
            "a child of its own: {stdout}"
        );
        pids.push(pid);
        let dir = std::path::PathBuf::from(fields[3]);
        assert!(
            dir.is_dir(),
            "the runner leaves {} to its caller",
            dir.display()
        );
        dirs.push(dir);
        let ms: u64 = fields[4].parse().expect("milliseconds");
        if name == "hangs" {
            assert!(ms >= 1000, "killed at its 1 s limit, not before: {ms} ms");
        }
    }
    let output = |name: &str| std::fs::read_to_string(format!("{prefix}.{name}.out")).unwrap();
    assert!(output("passes").contains("ok passes"));
    assert!(output("fails").contains("failing on purpose"));
    assert!(output("leaks_fd").contains("leaked file descriptors"));
    // Both runs of "isolated" checked their own group, stdin and empty
    // directory; the second one's output replaced the first one's.
    assert!(
        output("isolated").contains(&format!("ppid {runner} dir {}", dirs[5].display())),
        "{}",
        output("isolated")
    );
    assert_ne!(dirs[4], dirs[5], "a fresh directory per sub-test");
    for dir in dirs {
        std::fs::remove_dir_all(dir).expect("remove a sub-test's directory");
    }
}

/// scripts/ctests_under.sh (what `make valgrind` and `make sanitize` run the
/// C tests with), one process per sub-test and, with $BATCH, several per
/// process through `--fork-each`: the same verdicts either way, and a
/// wrapper's per-process logs (here strace's, %LOG%.st.PID) named after the
/// sub-test whose process wrote them, the batch runner's apart.
#[test]
fn ctests_under_judges_batched_runs_like_single_ones() {
    common::require_tool("strace", "strace");
    let lib_dir = &common::setup().lib_dir;
    let subtests = common::list_subtests("address.c");
    for batch in [None, Some("3")] {
        let out_dir = TempDir::new("ctunder");
        let args = [
            "ctu",
            lib_dir.to_str().expect("utf-8 path"),
            out_dir.path().to_str().expect("utf-8 path"),
            "60",
            "",
            "strace -ff -qq -e trace=none -o %LOG%.st",
            "address",
        ];
        let envs: Vec<(&str, &Path)> = batch.iter().map(|n| ("BATCH", Path::new(n))).collect();
        let out = common::run_with_timeout(
            &manifest_dir().join("scripts/ctests_under.sh"),
            &args,
            &envs,
            Duration::from_secs(120),
        );
        assert!(out.status.success(), "BATCH={batch:?}\n{}", show(&out));
        let summary = format!("ctu: {} sub-tests of 1 programs, 0 failed", subtests.len());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&summary),
            "BATCH={batch:?}: no '{summary}'\n{}",
            show(&out)
        );
        let logs = out_dir.path().join("logs");
        let names: Vec<String> = std::fs::read_dir(&logs)
            .expect("the logs directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        for sub in &subtests {
            let status = std::fs::read_to_string(logs.join(format!("address.{sub}.status")))
                .unwrap_or_else(|e| panic!("BATCH={batch:?}: no status for {sub}: {e}"));
            assert_eq!(status.trim(), "0", "BATCH={batch:?}: {sub}");
            let trace = format!("address.{sub}.st.");
            assert!(
                names.iter().any(|n| n.starts_with(&trace)),
                "BATCH={batch:?}: no {trace}PID among {names:?}"
            );
        }
        let runners = names.iter().filter(|n| n.contains(".runner.st.")).count();
        let expected = if batch.is_some() {
            subtests.len().div_ceil(3)
        } else {
            0
        };
        assert_eq!(
            runners, expected,
            "BATCH={batch:?}: runner logs among {names:?}"
        );
    }
}
