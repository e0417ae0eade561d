//! bindings/python, the Python binding (ctypes over libsocketserver.so), in
//! `make test`. Each test runs python3 (missing: the test fails, naming
//! it) in a process group of its own with a time limit, against the
//! library this test binary's profile built:
//!
//! - cpython_suite: CPython's own Lib/test/test_socketserver.py (the copy
//!   vendored for the interpreter's version, unmodified) with
//!   `socketserver` resolving to the binding; bindings/python/tests/
//!   run_cpython_suite.py fails on any failure outside its documented list
//!   (test_all) and on a listed one that passes. Also checks the count.
//! - binding_tests: bindings/python/tests/test_binding.py (thread pool,
//!   event mode, shutdown from a handler, Ctrl-C by SIGINT to a
//!   subprocess, handle_error, misuse, forking while another thread holds
//!   the GIL, a daemon thread outliving the server object).
//! - pip_install_in_fresh_venv: `python3 -m venv`, `pip install
//!   ./bindings/python` (from a copy in a temporary directory, so that the
//!   build leaves nothing in the tree; offline when the venv has setuptools
//!   and wheel, else they come from the package index), then the installed
//!   copy, run from outside the checkout, finds
//!   the library through LIBSOCKETSERVER_PATH, fails to import with a
//!   message naming that variable without it, passes the CPython suite,
//!   and passes the binding's own tests under pytest (installed from the
//!   package index into the venv).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The tests take turns: the suites time real sockets, threads and forks,
/// and the machine running `make test` is busy enough already.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn python3() -> &'static str {
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => "python3",
        _ => panic!(
            "tests/python_binding.rs needs `python3` (Debian package python3), \
             which is not installed"
        ),
    }
}

fn binding_dir() -> PathBuf {
    common::manifest_dir().join("bindings/python")
}

fn run(exe: &Path, args: &[&str], envs: &[(&str, &Path)], secs: u64) -> Output {
    common::run_with_timeout(exe, args, envs, Duration::from_secs(secs))
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        common::show(out)
    );
}

#[test]
fn cpython_suite() {
    let _turn = serial();
    let py = python3();
    let lib = common::setup().shared_library();
    let script = binding_dir().join("tests/run_cpython_suite.py");
    let out = run(
        Path::new(py),
        &[script.to_str().unwrap()],
        &[("LIBSOCKETSERVER_PATH", &lib)],
        120,
    );
    assert_ok(&out, "CPython's test_socketserver against the binding");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("27 run, 26 passed, 1 failed (1 known: test_all), 0 skipped"),
        "unexpected counts:\n{}",
        common::show(&out)
    );
}

#[test]
fn binding_tests() {
    let _turn = serial();
    let py = python3();
    let lib = common::setup().shared_library();
    let script = binding_dir().join("tests/test_binding.py");
    let out = run(
        Path::new(py),
        &[script.to_str().unwrap()],
        &[("LIBSOCKETSERVER_PATH", &lib)],
        120,
    );
    assert_ok(&out, "bindings/python/tests/test_binding.py");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\nOK"),
        "no OK line:\n{}",
        common::show(&out)
    );
}

#[test]
fn pip_install_in_fresh_venv() {
    let _turn = serial();
    let py = python3();
    let lib = common::setup().shared_library();
    let tmp = common::TempDir::new("pyvenv");
    let venv = tmp.path().join("venv");
    let out = run(
        Path::new(py),
        &["-m", "venv", venv.to_str().unwrap()],
        &[],
        120,
    );
    assert_ok(
        &out,
        "python3 -m venv (Debian: the python3-venv package provides it)",
    );
    let vpy = venv.join("bin/python");
    // Offline when the venv has setuptools and wheel already; else pip
    // fetches them from the package index for the isolated build (a fresh
    // venv of Python 3.11 has setuptools but not wheel).
    let has_setuptools = run(&vpy, &["-c", "import setuptools, wheel"], &[], 60)
        .status
        .success();
    let pkg = tmp.path().join("python");
    let out = run(
        Path::new("cp"),
        &["-r", binding_dir().to_str().unwrap(), pkg.to_str().unwrap()],
        &[],
        60,
    );
    assert_ok(&out, "copy bindings/python");
    let mut args = vec!["-m", "pip", "install", "--disable-pip-version-check", "-q"];
    if has_setuptools {
        args.extend(["--no-index", "--no-build-isolation"]);
    }
    args.push(pkg.to_str().unwrap());
    let out = run(&vpy, &args, &[], 240);
    assert_ok(&out, "pip install ./bindings/python");

    // From outside the checkout: the installed copy, not the tree's.
    let probe = "import os, libsocketserver as s; \
                 assert '/site-packages/' in s.__file__, s.__file__; \
                 print(s.library_version(), s._lib.path)";
    let out = run(
        &vpy,
        &["-I", "-c", probe],
        &[("LIBSOCKETSERVER_PATH", &lib)],
        60,
    );
    assert_ok(&out, "import the installed libsocketserver");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("0.1.0 ") && stdout.contains(lib.to_str().unwrap()),
        "{}",
        common::show(&out)
    );
    // Without the variable and outside the tree the import fails, naming
    // the variable (checked only when the system loader does not know the
    // library, i.e. it is not installed system-wide).
    let system_has_it = run(
        &vpy,
        &[
            "-c",
            "import ctypes.util; print(ctypes.util.find_library('socketserver') or '')",
        ],
        &[],
        60,
    );
    if String::from_utf8_lossy(&system_has_it.stdout)
        .trim()
        .is_empty()
    {
        let out = Command::new(&vpy)
            .args(["-I", "-c", "import libsocketserver"])
            .env_remove("LIBSOCKETSERVER_PATH")
            .env_remove("LD_LIBRARY_PATH")
            .current_dir(tmp.path())
            .output()
            .expect("run the venv's python");
        assert!(!out.status.success(), "{}", common::show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("ImportError") && stderr.contains("LIBSOCKETSERVER_PATH"),
            "{}",
            common::show(&out)
        );
    }
    // The CPython suite with the installed package.
    let script = pkg.join("tests/run_cpython_suite.py");
    let out = run(
        &vpy,
        &[script.to_str().unwrap()],
        &[
            ("LIBSOCKETSERVER_PATH", &lib),
            ("LIBSOCKETSERVER_FROM_TREE", Path::new("0")),
        ],
        120,
    );
    assert_ok(&out, "the CPython suite with the installed binding");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("site-packages"), "{}", common::show(&out));

    // The binding's own tests under pytest (from the package index), with
    // the installed package.
    let out = run(
        &vpy,
        &[
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "pytest",
        ],
        &[],
        240,
    );
    assert_ok(&out, "pip install pytest");
    let tests = pkg.join("tests/test_binding.py");
    let out = run(
        &vpy,
        &[
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            tests.to_str().unwrap(),
        ],
        &[
            ("LIBSOCKETSERVER_PATH", &lib),
            ("LIBSOCKETSERVER_FROM_TREE", Path::new("0")),
        ],
        120,
    );
    assert_ok(&out, "pytest bindings/python/tests/test_binding.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(" passed") && !stdout.contains("failed"),
        "{}",
        common::show(&out)
    );
}
