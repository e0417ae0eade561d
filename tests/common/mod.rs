//! Shared harness for the test binaries that drive C programs against
//! libsocketserver.so: build the library once per test binary (for the
//! profile the test binary was built with), compile C programs from
//! tests/c/ with strict flags, give each run a fresh temporary directory,
//! and run programs with a hard timeout.
//!
//! [`example::ExampleProcess`] runs an example program as a server process
//! (`listening on ADDR`, a signal, a bounded wait); [`require_tool`] fails a
//! test, naming the tool and its Debian package, when a tool is missing;
//! [`strace::Strace`] counts a running server's system calls over a window
//! the test chooses.
//!
//! Use it from a test file with `mod common;`. Not every test binary uses
//! every helper, hence the `dead_code` and `unused_macros` allowances.

#![allow(dead_code, unused_macros)]

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod callgrind;
pub mod example;
pub mod strace;

/// Default hard timeout for one run of a C program.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// `$std` plus the warnings every build here treats as errors, debug
/// information, and any `$extra` flags.
macro_rules! strict_flags {
    ($std:literal $(, $extra:literal)*) => {
        &[$std, "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-g" $(, $extra)*]
    };
}

/// Strict C99 and nothing more: what the header must compile with, and how
/// the Makefile builds the examples.
pub const STRICT_C99_FLAGS: &[&str] = strict_flags!("-std=c99");

/// The flags the C test programs are compiled with by default.
pub const C_FLAGS: &[&str] = strict_flags!("-std=c99", "-D_GNU_SOURCE");

/// The strict flags for C++ test programs (`.cpp` sources).
pub const CXX_FLAGS: &[&str] = strict_flags!("-std=c++11");

/// `c_tests!(run [, list_flags = FLAGS]; prog { subtest, ... } ...)`: one
/// `#[test]` per C sub-test, in a module per C program (tests/c/<prog>.c),
/// each calling `run("prog", "subtest")`; the table `C_SUBTESTS` of
/// (program, sub-tests); and the test `every_c_subtest_is_run`, which
/// compares that table with each program's `--list` (compiled with FLAGS,
/// default: the programs' own), so that a new C sub-test cannot be
/// forgotten.
macro_rules! c_tests {
    ($run:path $(, list_flags = $flags:expr)?; $($prog:ident { $($sub:ident),* $(,)? })*) => {
        $(
            mod $prog {
                $(
                    #[test]
                    fn $sub() {
                        $run(stringify!($prog), stringify!($sub));
                    }
                )*
            }
        )*
        const C_SUBTESTS: &[(&str, &[&str])] = &[$((stringify!($prog), &[$(stringify!($sub)),*])),*];

        #[test]
        fn every_c_subtest_is_run() {
            let flags: Option<&[&str]> = None $(.or(Some($flags)))?;
            crate::common::assert_every_c_subtest_is_run(C_SUBTESTS, flags, file!());
        }
    };
}
#[allow(unused_imports)] // not every test binary declares C sub-tests
pub(crate) use c_tests;

/// The crate root (where Cargo.toml is).
pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// target/<profile>/, from this test binary's own path
/// (target/<profile>/deps/<name>-<hash>).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("the test binary has a directory");
    assert_eq!(
        deps.file_name().and_then(|n| n.to_str()),
        Some("deps"),
        "unexpected test binary location {}",
        exe.display()
    );
    deps.parent().expect("deps has a parent").to_path_buf()
}

/// Where the library was built and where compiled C programs go.
pub struct Setup {
    /// target/<profile>/, holding libsocketserver.so.
    pub lib_dir: PathBuf,
    /// target/<profile>/ctests/.
    pub out_dir: PathBuf,
}

impl Setup {
    /// The shared library the C programs link against.
    pub fn shared_library(&self) -> PathBuf {
        self.lib_dir.join("libsocketserver.so")
    }
}

/// Runs `cargo build --lib` (with the profile of this test binary) once
/// per test binary and creates target/<profile>/ctests/. Panics with
/// cargo's output if the build fails.
pub fn setup() -> &'static Setup {
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

/// Formats a finished process's status and output for a failure message.
pub fn show(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The default flags for tests/c/<source>: [`CXX_FLAGS`] for a `.cpp`
/// file, [`C_FLAGS`] otherwise.
fn default_flags(source: &str) -> &'static [&'static str] {
    if source.ends_with(".cpp") {
        CXX_FLAGS
    } else {
        C_FLAGS
    }
}

/// Compiles and links tests/c/<source> with its [`default_flags`] against
/// the library, once per test binary, and returns the executable's path
/// (target/<profile>/ctests/<stem>).
pub fn compile(source: &str) -> PathBuf {
    compile_with(source, default_flags(source))
}

/// How the Makefile links the examples whatever LDFLAGS says: bound at load
/// time, so that a forked child never writes the GOT (a lazy binding).
pub const EXAMPLE_LDFLAGS: &[&str] = &["-Wl,-z,now"];

/// Compiles c_examples/<name>.c the way the Makefile does
/// ([`STRICT_C99_FLAGS`], [`EXAMPLE_LDFLAGS`]), plus `extra` flags, and
/// returns the program.
pub fn compile_example(name: &str, extra: &[&str]) -> PathBuf {
    let flags: Vec<&str> = STRICT_C99_FLAGS
        .iter()
        .chain(EXAMPLE_LDFLAGS)
        .chain(extra)
        .copied()
        .collect();
    // compile_with() takes paths relative to tests/c/.
    compile_with(&format!("../../c_examples/{name}.c"), &flags)
}

/// c_examples/echo_server, built as the Makefile builds it (-O2): the
/// server most tests drive.
pub fn echo_server_program() -> PathBuf {
    compile_example("echo_server", &["-O2"])
}

/// echo_server's arguments for `transport` in `mode` at `address`; a test
/// adds what else it needs (`--threads`, `--max-children`, ...).
pub fn echo_args<'a>(transport: &'a str, mode: &'a str, address: &'a str) -> Vec<&'a str> {
    vec![
        "--transport",
        transport,
        "--mode",
        mode,
        "--address",
        address,
    ]
}

/// A client of a test's TCP server at `address`: connected, `timeout` on
/// every read and write (a stuck server fails the test rather than hanging
/// it), Nagle off (each request goes out at once).
pub fn tcp_client(address: &str, timeout: Duration) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(address)
        .unwrap_or_else(|e| panic!("connect to {address}: {e}"));
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// How long an example server may take to print its address.
pub const EXAMPLE_STARTUP: Duration = Duration::from_secs(15);

/// echo_server ([`echo_server_program`]) with [`echo_args`] and `extra`,
/// started and listening.
pub fn start_echo_server(
    transport: &str,
    mode: &str,
    address: &str,
    extra: &[&str],
) -> example::ExampleProcess {
    let mut cmd = Command::new(echo_server_program());
    cmd.args(echo_args(transport, mode, address)).args(extra);
    example::ExampleProcess::start(cmd, EXAMPLE_STARTUP)
}

/// As [`compile`], with an explicit list of compiler flags (the include
/// directories, the library and the rpath are always added). Programs are
/// cached per (source, flags) for the life of the test binary.
pub fn compile_with(source: &str, flags: &[&str]) -> PathBuf {
    compile_using(None, source, flags)
}

/// As [`compile_with`], with `compiler` (e.g. "g++", "clang++") instead of
/// `cc` / `c++` when it is Some; the program's name then says which. A
/// compiler that is not installed fails the calling test, naming it.
pub fn compile_using(compiler: Option<&str>, source: &str, flags: &[&str]) -> PathBuf {
    type Slot = Arc<OnceLock<Result<PathBuf, String>>>;
    type Key = (Option<String>, String, Vec<String>);
    static PROGRAMS: OnceLock<Mutex<HashMap<Key, Slot>>> = OnceLock::new();
    let key = (
        compiler.map(str::to_string),
        source.to_string(),
        flags.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
    );
    let slot = PROGRAMS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default()
        .clone();
    let result = slot.get_or_init(|| {
        let setup = setup();
        let src = manifest_dir().join("tests/c").join(source);
        let stem = Path::new(source)
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("source file name");
        let cxx = source.ends_with(".cpp");
        // Programs built with other flags or compilers get their own name.
        let exe = if let Some(compiler) = compiler {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            flags.hash(&mut h);
            setup
                .out_dir
                .join(format!("{stem}-{compiler}-{:016x}", h.finish()))
        } else if flags == default_flags(source) {
            setup.out_dir.join(stem)
        } else {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            flags.hash(&mut h);
            setup.out_dir.join(format!("{stem}-{:016x}", h.finish()))
        };
        // Built under a unique name and renamed, so that concurrent test
        // runs never execute a half-written file.
        let tmp = exe.with_extension(format!("tmp{}", std::process::id()));
        let compiler = compiler.unwrap_or(if cxx { "c++" } else { "cc" });
        let mut cmd = Command::new(compiler);
        cmd.args(flags)
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
            .map_err(|e| format!("cannot run the compiler `{compiler}` (is it installed?): {e}"))?;
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

/// A fresh, empty temporary directory (short path, for Unix socket names),
/// removed with its contents on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // /tmp rather than $TMPDIR: Unix socket paths must stay short.
        let base = if Path::new("/tmp").is_dir() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("ss-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Names of the entries left in the directory.
    pub fn leftovers(&self) -> Vec<String> {
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

/// Whether any process of process group `pgid` is still there.
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// SIGKILLs every process of process group `pgid`.
pub fn kill_group(pgid: i32) {
    // SAFETY: the group is the one made for the program under test.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Runs example `exe` (called `name`) with each bad command line in
/// `cases`: each must exit 2 with its usage on stderr and nothing on
/// stdout. Then an address that cannot be bound (TEST-NET-3: nothing is
/// sent) must exit 1 without a "listening on" line.
pub fn assert_rejects_bad_usage(exe: &Path, name: &str, cases: &[&[&str]]) {
    for args in cases {
        let out = run_with_timeout(exe, args, &[], Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("usage: {name}")),
            "{args:?}\n{}",
            show(&out)
        );
        assert!(out.stdout.is_empty(), "{args:?}\n{}", show(&out));
    }
    let out = run_with_timeout(
        exe,
        &["--address", "203.0.113.1:1"],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));
}

/// Runs `exe args...` in a process group of its own, with extra
/// environment variables and a hard timeout, capturing stdout and stderr.
///
/// Panics, with the output so far, if the program is still running after
/// `timeout`, or if processes it started (e.g. forked children) are still
/// running after it ended; the whole group is then killed, so that nothing
/// outlives the test or keeps its pipes open.
pub fn run_with_timeout(
    exe: &Path,
    args: &[&str],
    envs: &[(&str, &Path)],
    timeout: Duration,
) -> Output {
    run_with_input(exe, args, envs, None, timeout)
}

/// As [`run_with_timeout`], with `input` written to the program's stdin,
/// which is then closed (`None`: stdin is /dev/null). `exe` may also be a
/// bare command name, looked up in $PATH.
pub fn run_with_input(
    exe: &Path,
    args: &[&str],
    envs: &[(&str, &Path)],
    input: Option<&[u8]>,
    timeout: Duration,
) -> Output {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    use std::sync::mpsc;

    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let pgid = child.id() as i32;
    // Written on a thread too, so that a program that does not read its
    // input cannot block this side; closed once written.
    let writer = input.map(|data| {
        let mut stdin = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        })
    });
    // Drained on threads so that a chatty program cannot block on a full
    // pipe. Its children inherit the pipes, so the readers finish only
    // when the last of them is gone.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
        rx
    };
    let out_rx = drain(Box::new(child.stdout.take().expect("stdout")));
    let err_rx = drain(Box::new(child.stderr.take().expect("stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the C program") {
            break Some(status);
        }
        if start.elapsed() > timeout {
            kill_group(pgid);
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Once the program ended, its group should empty quickly (orphans are
    // reaped by init); anything still running after a grace period is
    // killed and reported.
    let grace = Instant::now() + Duration::from_secs(3);
    let mut stray = false;
    while group_alive(pgid) {
        if Instant::now() > grace {
            stray = true;
            kill_group(pgid);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let collect = |rx: mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| b"<output pipe still held open>".to_vec())
    };
    let stdout = collect(out_rx);
    let stderr = collect(err_rx);
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match status {
        None => panic!(
            "{} {:?} timed out after {:?} and was killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
            exe.display(),
            args,
            timeout,
            text(&stdout),
            text(&stderr)
        ),
        Some(status) if stray => panic!(
            "{} {:?} ended ({status}) but left processes running in its group \
             (killed after 3 s)\n--- stdout ---\n{}\n--- stderr ---\n{}",
            exe.display(),
            args,
            text(&stdout),
            text(&stderr)
        ),
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
    }
}

/// Runs one sub-test of the C program built from tests/c/<source>:
/// `<exe> <subtest>` with `$<tmp_env>` naming a fresh temporary directory.
/// Fails unless it exits 0, prints the line `ok <subtest>`, and leaves the
/// directory empty.
pub fn run_subtest(source: &str, subtest: &str, tmp_env: &str, timeout: Duration) {
    run_subtest_with(source, default_flags(source), subtest, tmp_env, timeout);
}

/// As [`run_subtest`], with the program compiled with `flags`
/// (see [`compile_with`]).
pub fn run_subtest_with(
    source: &str,
    flags: &[&str],
    subtest: &str,
    tmp_env: &str,
    timeout: Duration,
) {
    let exe = compile_with(source, flags);
    let tmp = TempDir::new("ctest");
    let out = run_with_timeout(&exe, &[subtest], &[(tmp_env, tmp.path())], timeout);
    assert!(
        out.status.success(),
        "C test {source} {subtest} failed\n{}",
        show(&out)
    );
    let expect = format!("ok {subtest}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == expect),
        "C test {source} {subtest} exited 0 without reporting success\n{}",
        show(&out)
    );
    let left = tmp.leftovers();
    assert!(
        left.is_empty(),
        "C test {source} {subtest} left files behind in {}: {left:?}",
        tmp.path().display()
    );
}

/// The sub-test names a C program prints for `--list`, one a line
/// (trimmed, blank lines skipped).
pub fn list_subtests(source: &str) -> Vec<String> {
    list_subtests_with(source, default_flags(source))
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The lines a C program compiled with `flags` prints for `--list`, exactly
/// as printed.
pub fn list_subtests_with(source: &str, flags: &[&str]) -> Vec<String> {
    let exe = compile_with(source, flags);
    let out = run_with_timeout(&exe, &["--list"], &[], Duration::from_secs(10));
    assert!(
        out.status.success(),
        "{source} --list failed\n{}",
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs sub-test `subtest` of tests/c/<prog>.c with the default flags and
/// timeout, in a fresh directory named by $SS_TEST_TMPDIR.
pub fn run_c_subtest(prog: &str, subtest: &str) {
    run_subtest(
        &format!("{prog}.c"),
        subtest,
        "SS_TEST_TMPDIR",
        DEFAULT_TIMEOUT,
    );
}

/// Every sub-test each C program of `table` (a `c_tests!` table) lists with
/// `--list` is run by a #[test] of `test_file`, and the other way round, so
/// that a new C sub-test cannot be forgotten. `flags`: how the programs are
/// compiled, when not with their default flags.
pub fn assert_every_c_subtest_is_run(
    table: &[(&str, &[&str])],
    flags: Option<&[&str]>,
    test_file: &str,
) {
    for (prog, subs) in table {
        let source = format!("{prog}.c");
        let mut listed = match flags {
            Some(flags) => list_subtests_with(&source, flags),
            None => list_subtests(&source),
        };
        let mut run: Vec<String> = subs.iter().map(|s| s.to_string()).collect();
        listed.sort();
        run.sort();
        assert_eq!(
            listed, run,
            "{source} --list differs from the sub-tests run by {test_file}"
        );
    }
}

/// The path of `tool` on $PATH. Fails the test, naming the tool and its
/// Debian package, if it is not installed: a test never passes silently
/// for want of a tool.
#[track_caller]
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    // Not in a closure: the panic names the calling test's line.
    match found {
        Some(p) => p,
        None => panic!("`{tool}` is not installed (Debian package {package}): this test needs it"),
    }
}

/// Waits (10 s at most) until `pid` has no child process left (all reaped).
pub fn wait_children_reaped(pid: i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while children_of(pid) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "children of {pid} not reaped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Child processes of `pid` (its direct children).
pub fn children_of(pid: i32) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .map(|c| c.split_whitespace().count())
        .sum()
}
