//! The C-level test suite: builds the library, compiles the C programs in
//! tests/c/ against include/socketserver.h and libsocketserver.so with strict
//! warnings, and runs each sub-test in its own process with a hard timeout.
//!
//! Every C program takes the name of one sub-test (or `--list`), runs it
//! over real sockets (127.0.0.1, ::1, Unix paths in a fresh temporary
//! directory given as $SS_TEST_TMPDIR, or @abstract names), and exits 0 on
//! success. The C side also checks that the sub-test left no descriptor and
//! no thread behind; this side checks that it left no file in its directory.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long one C sub-test may run before it is killed and failed.
const TIMEOUT: Duration = Duration::from_secs(30);

const C_FLAGS: &[&str] = &[
    "-std=c99",
    "-Wall",
    "-Wextra",
    "-Wpedantic",
    "-Werror",
    "-g",
];

const CXX_FLAGS: &[&str] = &[
    "-std=c++11",
    "-Wall",
    "-Wextra",
    "-Wpedantic",
    "-Werror",
    "-g",
];

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// target/<profile>/, from this test binary's own path
/// (target/<profile>/deps/c_api-<hash>).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    assert_eq!(
        deps.file_name().and_then(|n| n.to_str()),
        Some("deps"),
        "unexpected test binary location {}",
        exe.display()
    );
    deps.parent().expect("deps has a parent").to_path_buf()
}

struct Setup {
    lib_dir: PathBuf,
    out_dir: PathBuf,
}

/// Builds the library once per test binary, for the profile this binary
/// was built with, and makes the output directory for the C programs.
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Result<Setup, String>> = OnceLock::new();
    let result = SETUP.get_or_init(|| {
        let lib_dir = profile_dir();
        let profile = lib_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("profile directory name")
            .to_string();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(manifest_dir()).args(["build", "--lib"]);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run cargo build: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build --lib failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let so = lib_dir.join("libsocketserver.so");
        if !so.exists() {
            return Err(format!("{} was not built", so.display()));
        }
        let out_dir = lib_dir.join("ctests");
        std::fs::create_dir_all(&out_dir)
            .map_err(|e| format!("mkdir {}: {e}", out_dir.display()))?;
        Ok(Setup { lib_dir, out_dir })
    });
    match result {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

fn show(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a compiler command and panics with its output if it fails.
fn compile(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run the compiler for {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed to compile\n{cmd:?}\n{}",
        show(&out)
    );
}

/// Compiles and links tests/c/<name> (a .c or .cpp file) once per test
/// binary and returns the executable's path.
fn program(source: &str) -> PathBuf {
    type Slot = Arc<OnceLock<Result<PathBuf, String>>>;
    static PROGRAMS: OnceLock<Mutex<HashMap<String, Slot>>> = OnceLock::new();
    let slot = PROGRAMS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(source.to_string())
        .or_default()
        .clone();
    let result = slot.get_or_init(|| {
        let setup = setup();
        let src = manifest_dir().join("tests/c").join(source);
        let stem = Path::new(source)
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("source file name");
        let exe = setup.out_dir.join(stem);
        // Built under a unique name and renamed, so that concurrent test
        // runs never execute a half-written file.
        let tmp = setup
            .out_dir
            .join(format!("{stem}.tmp{}", std::process::id()));
        let cxx = source.ends_with(".cpp");
        let mut cmd = Command::new(if cxx { "c++" } else { "cc" });
        cmd.args(if cxx { CXX_FLAGS } else { C_FLAGS })
            .arg("-I")
            .arg(manifest_dir().join("include"))
            .arg("-I")
            .arg(manifest_dir().join("tests/c"))
            .arg(&src)
            .arg("-o")
            .arg(&tmp)
            .arg("-L")
            .arg(&setup.lib_dir)
            .arg("-lsocketserver")
            .arg(format!("-Wl,-rpath,{}", setup.lib_dir.display()))
            .arg("-lpthread");
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run the compiler: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!(
                "{source} failed to compile\n{cmd:?}\n{}",
                show(&out)
            ));
        }
        std::fs::rename(&tmp, &exe).map_err(|e| format!("rename to {}: {e}", exe.display()))?;
        Ok(exe)
    });
    match result {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// A fresh directory for one sub-test's socket files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("ss-ctest-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the temporary directory");
        TempDir(dir)
    }

    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .map(|it| {
                it.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `exe args...` with a hard timeout, capturing its output.
fn run_with_timeout(exe: &Path, args: &[&str], tmp: &Path) -> Output {
    let mut child = Command::new(exe)
        .args(args)
        .env("SS_TEST_TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    // Drained on threads so that a chatty child cannot block on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let out_reader = drain(Box::new(child.stdout.take().expect("stdout")));
    let err_reader = drain(Box::new(child.stderr.take().expect("stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the C test") {
            break Some(status);
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{} {:?} timed out after {:?} and was killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
            exe.display(),
            args,
            TIMEOUT,
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Runs one sub-test of tests/c/<prog>.c and fails unless it exits 0 and
/// leaves its temporary directory empty.
fn run_c(prog: &str, subtest: &str) {
    let exe = program(&format!("{prog}.c"));
    let tmp = TempDir::new();
    let out = run_with_timeout(&exe, &[subtest], &tmp.0);
    assert!(
        out.status.success(),
        "C test {prog} {subtest} failed\n{}",
        show(&out)
    );
    let expect = format!("ok {subtest}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == expect),
        "C test {prog} {subtest} exited 0 without reporting success\n{}",
        show(&out)
    );
    let left = tmp.leftovers();
    assert!(
        left.is_empty(),
        "C test {prog} {subtest} left files behind in {}: {left:?}",
        tmp.0.display()
    );
}

/// One #[test] per C sub-test, grouped in a module per C program, plus the
/// table that `every_c_subtest_is_run` compares with each program's --list.
macro_rules! c_tests {
    ($($prog:ident { $($sub:ident),* $(,)? })*) => {
        $(
            mod $prog {
                $(
                    #[test]
                    fn $sub() {
                        super::run_c(stringify!($prog), stringify!($sub));
                    }
                )*
            }
        )*
        const C_SUBTESTS: &[(&str, &[&str])] = &[$((stringify!($prog), &[$(stringify!($sub)),*])),*];
    };
}

c_tests! {
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

/// Each program's --list matches its c_tests! entry, so that no C sub-test
/// is left out of `cargo test`.
#[test]
fn every_c_subtest_is_run() {
    let tmp = TempDir::new();
    for (prog, subs) in C_SUBTESTS {
        let exe = program(&format!("{prog}.c"));
        let out = run_with_timeout(&exe, &["--list"], &tmp.0);
        assert!(out.status.success(), "{prog} --list\n{}", show(&out));
        let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let expected: Vec<String> = subs.iter().map(|s| s.to_string()).collect();
        assert_eq!(listed, expected, "sub-tests of {prog}.c vs c_tests!");
    }
}

/// The header compiles on its own under the strict C99 flags (plus a few
/// more), and twice in one unit (include guard).
#[test]
fn header_compiles_alone_as_c99() {
    let header = manifest_dir().join("include/socketserver.h");
    let mut cmd = Command::new("cc");
    cmd.args(C_FLAGS)
        .args(["-Wstrict-prototypes", "-Wmissing-prototypes", "-Wshadow"])
        .args(["-fsyntax-only", "-x", "c"])
        .arg(&header);
    compile(cmd, "include/socketserver.h as C99");

    let tmp = TempDir::new();
    let unit = tmp.0.join("twice.c");
    std::fs::write(
        &unit,
        "#include \"socketserver.h\"\n#include \"socketserver.h\"\n\
         int main(void) { return ss_version() == 0; }\n",
    )
    .expect("write twice.c");
    let mut cmd = Command::new("cc");
    cmd.args(C_FLAGS)
        .arg("-I")
        .arg(manifest_dir().join("include"))
        .args(["-fsyntax-only"])
        .arg(&unit);
    compile(cmd, "a unit including the header twice");
}

/// A C++ program includes the header (extern "C" guards), links against the
/// library and calls into it.
#[test]
fn header_works_from_cplusplus() {
    let exe = program("header_cxx.cpp");
    let tmp = TempDir::new();
    let out = run_with_timeout(&exe, &[], &tmp.0);
    assert!(out.status.success(), "header_cxx\n{}", show(&out));
}

/// The functions the header declares are exactly the ss_* symbols the
/// shared library exports, and bad_input.c exercises every one of them.
#[test]
fn header_matches_exported_symbols() {
    let setup = setup();
    let header = std::fs::read_to_string(manifest_dir().join("include/socketserver.h"))
        .expect("read the header");
    let mut declared: Vec<String> = header
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('*') && !l.starts_with("typedef"))
        .filter_map(|l| {
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
        .arg(setup.lib_dir.join("libsocketserver.so"))
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
