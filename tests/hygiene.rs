//! What a packager checks before shipping, as tests:
//!
//! - every example in c_examples/ (each file found there, so a new one is
//!   covered without editing this file) answers `--help` with its usage on
//!   stdout and exit status 0, rejects an unknown option with the usage on
//!   stderr and exit status 2, and, when its usage names required
//!   arguments, prints the usage (exit 2) instead of starting a server when
//!   run without any;
//! - `make docs` documents the header with doxygen (its @file block), and
//!   fails naming doxygen when it is not installed;
//! - the LICENSE files match Cargo.toml's `MIT OR Apache-2.0`;
//! - a plain build of the library does not build cbindgen (the header is
//!   committed; `make header` regenerates it);
//! - the Makefile honours BUILD=debug and CARGO_TARGET_DIR, and switching
//!   BUILD relinks every example (C and C++);
//! - scripts/listening.sh, how the demo, the soak scripts and the benchmark
//!   wait for a server's "listening on" line, tolerates an output file the
//!   server's shell has not created yet and a line not yet whole, and its
//!   launch empties a reused output file before the server runs.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{manifest_dir, run_with_timeout, show, TempDir};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The strict flags for a C++ example (C++17, as the C++ header needs).
const CXX17_FLAGS: &[&str] = &[
    "-std=c++17",
    "-Wall",
    "-Wextra",
    "-Wpedantic",
    "-Werror",
    "-g",
];

/// Every example program: (name, built executable).
fn examples() -> Vec<(String, PathBuf)> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(manifest_dir().join("c_examples"))
        .expect("read c_examples/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("c" | "cpp")))
        .collect();
    sources.sort();
    assert!(sources.len() >= 5, "found only {sources:?} in c_examples/");
    sources
        .iter()
        .map(|src| {
            let name = src.file_stem().unwrap().to_string_lossy().into_owned();
            let file = src.file_name().unwrap().to_string_lossy().into_owned();
            let exe = if file.ends_with(".cpp") {
                // compile_with() takes paths relative to tests/c/.
                common::compile_with(&format!("../../c_examples/{file}"), CXX17_FLAGS)
            } else {
                common::compile_example(&name, &[])
            };
            (name, exe)
        })
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_example_answers_help() {
    for (name, exe) in examples() {
        let out = run_with_timeout(&exe, &["--help"], &[], TIMEOUT);
        let stdout = text(&out.stdout);
        assert!(
            out.status.code() == Some(0)
                && stdout.starts_with(&format!("usage: {name}"))
                && out.stderr.is_empty(),
            "{name} --help must print its usage (\"usage: {name} ...\") on stdout and exit 0\n{}",
            show(&out)
        );
    }
}

#[test]
fn every_example_rejects_an_unknown_option_with_its_usage() {
    for (name, exe) in examples() {
        let out = run_with_timeout(&exe, &["--no-such-option", "x"], &[], TIMEOUT);
        assert!(
            out.status.code() == Some(2)
                && text(&out.stderr).contains(&format!("usage: {name}"))
                && out.stdout.is_empty(),
            "{name} --no-such-option must print its usage on stderr and exit 2\n{}",
            show(&out)
        );
    }
}

/// The synopsis of a usage text: its first line and the lines continuing
/// it (indented further than the option descriptions, which start with at
/// most 4 spaces), without "usage:" and the program name.
fn synopsis(usage: &str) -> String {
    let mut lines = usage.lines();
    let first = lines.next().unwrap_or("");
    let mut words: Vec<&str> = first.split_whitespace().skip(2).collect();
    for line in lines {
        let indent = line.len() - line.trim_start().len();
        if indent <= 4 || line.trim().is_empty() {
            break;
        }
        words.extend(line.split_whitespace());
    }
    words.join(" ")
}

/// What is left of a synopsis once every [optional] part is removed.
fn required_part(synopsis: &str) -> String {
    let mut depth = 0usize;
    let mut out = String::new();
    for c in synopsis.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

#[test]
fn synopsis_parsing() {
    let usage = "usage: prog --a X\n          [--b Y] --c Z\n  --a X   the a\n       more\n";
    assert_eq!(synopsis(usage), "--a X [--b Y] --c Z");
    assert_eq!(required_part("[--b Y] [--c [Z]]"), "");
    assert_eq!(required_part("--a X [--b Y]"), "--a X");
}

#[test]
fn examples_with_required_arguments_print_usage_without_them() {
    let mut checked = 0;
    for (name, exe) in examples() {
        let help = run_with_timeout(&exe, &["--help"], &[], TIMEOUT);
        let required = required_part(&synopsis(&text(&help.stdout)));
        if required.is_empty() {
            // Every argument is optional: without any it starts a server
            // on its default address, which this test does not do.
            continue;
        }
        let out = run_with_timeout(&exe, &[], &[], TIMEOUT);
        assert!(
            out.status.code() == Some(2)
                && text(&out.stderr).contains(&format!("usage: {name}"))
                && out.stdout.is_empty(),
            "{name} requires `{required}`: without arguments it must print its usage on \
             stderr and exit 2, not start\n{}",
            show(&out)
        );
        checked += 1;
    }
    // echo_server and echo_client have required arguments.
    assert!(
        checked >= 2,
        "only {checked} examples have required arguments"
    );
}

/// Runs `make ARGS` in the tree with `envs`; returns its output.
fn make(args: &[&str], envs: &[(&str, &Path)]) -> std::process::Output {
    let tree = manifest_dir().display().to_string();
    let mut all = vec!["--no-print-directory", "-C", &tree];
    all.extend_from_slice(args);
    let empty = Path::new("");
    let mut env: Vec<(&str, &Path)> = vec![("MAKEFLAGS", empty), ("MAKELEVEL", empty)];
    env.extend_from_slice(envs);
    run_with_timeout(Path::new("make"), &all, &env, Duration::from_secs(120))
}

#[test]
fn header_starts_with_a_doxygen_file_block() {
    let header = std::fs::read_to_string(manifest_dir().join("include/socketserver.h")).unwrap();
    let mut lines = header.lines();
    assert_eq!(
        lines.next(),
        Some("/**"),
        "the header must open with a /** block"
    );
    assert_eq!(
        lines.next().map(str::trim),
        Some("* @file socketserver.h"),
        "the header's first block must be its @file block (cbindgen.toml header)"
    );
}

#[test]
fn make_docs_documents_the_header() {
    common::require_tool("doxygen", "doxygen");
    let dir = TempDir::new("docs");
    let docs = dir.path().join("docs");
    let arg = format!("DOCS_DIR={}", docs.display());
    let out = make(&["docs", &arg], &[]);
    assert!(out.status.success(), "make docs failed\n{}", show(&out));
    assert!(
        !text(&out.stderr).contains("error"),
        "doxygen reported errors\n{}",
        show(&out)
    );
    // The file page exists only because of the @file block.
    let page = docs.join("html/socketserver_8h.html");
    let html = std::fs::read_to_string(&page)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", page.display(), show(&out)));
    for name in [
        "ss_server_new",
        "ss_config_new",
        "SS_VERSION_STRING",
        "ss_status",
    ] {
        assert!(
            html.contains(name),
            "{} does not document {name}",
            page.display()
        );
    }
}

#[test]
fn make_docs_without_doxygen_fails_naming_it() {
    // A PATH with nothing on it: make runs its recipes with /bin/sh, which
    // then finds no doxygen.
    let dir = TempDir::new("nodoxygen");
    let empty_path = dir.path().join("bin");
    std::fs::create_dir(&empty_path).unwrap();
    let make_path = common::require_tool("make", "make");
    let tree = manifest_dir().display().to_string();
    let arg = format!("DOCS_DIR={}", dir.path().join("docs").display());
    let out = run_with_timeout(
        &make_path,
        &["--no-print-directory", "-C", &tree, "docs", &arg],
        &[("PATH", &empty_path), ("MAKEFLAGS", Path::new(""))],
        TIMEOUT,
    );
    assert!(
        !out.status.success() && text(&out.stderr).contains("doxygen"),
        "make docs without doxygen must fail naming it\n{}",
        show(&out)
    );
    assert!(
        !dir.path().join("docs").exists(),
        "make docs wrote output anyway"
    );
}

#[test]
fn license_files_match_cargo_toml() {
    let root = manifest_dir();
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(
        cargo
            .lines()
            .any(|l| l == "license = \"MIT OR Apache-2.0\""),
        "Cargo.toml's license changed: update the LICENSE files and this test"
    );
    let mit = std::fs::read_to_string(root.join("LICENSE-MIT")).expect("LICENSE-MIT");
    assert!(
        mit.starts_with("MIT License") && mit.contains("Copyright (c) the libsocketserver authors")
    );
    assert!(mit.contains("THE SOFTWARE IS PROVIDED \"AS IS\""));
    let apache = std::fs::read_to_string(root.join("LICENSE-APACHE")).expect("LICENSE-APACHE");
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
    assert!(apache.contains("END OF TERMS AND CONDITIONS"));
    let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).expect("CHANGELOG.md");
    assert!(changelog.contains("## [Unreleased]"));
}

#[test]
fn plain_build_does_not_build_cbindgen() {
    // What `cargo build` of the library compiles: its normal and build
    // dependencies, for this platform.
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(manifest_dir())
        .args([
            "tree",
            "-p",
            "socketserver",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree failed\n{}", show(&out));
    let mut crates: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches(" (*)").to_string())
        .collect();
    crates.sort();
    crates.dedup();
    assert!(
        !crates.iter().any(|c| c.starts_with("cbindgen ")),
        "the library build depends on cbindgen again: {crates:?}"
    );
    // 9 today (the library, libc, nix, socket2 and theirs); cbindgen's
    // build brought 39.
    assert!(
        crates.len() <= 12,
        "a plain build compiles {} crates: {crates:?}",
        crates.len()
    );
}

#[test]
fn makefile_honours_build_and_cargo_target_dir() {
    let dir = TempDir::new("targetdir");
    let target = dir.path().join("t");
    // -n -B: print what would run, as if nothing were built.
    let out = make(
        &["-n", "-B", "build/line_server", "BUILD=debug"],
        &[("CARGO_TARGET_DIR", &target)],
    );
    assert!(out.status.success(), "make -n failed\n{}", show(&out));
    let plan = text(&out.stdout);
    let debug_dir = target.join("debug").display().to_string();
    assert!(
        plan.lines()
            .any(|l| l.contains("cargo build") && !l.contains("--release")),
        "BUILD=debug must build cargo's dev profile:\n{plan}"
    );
    assert!(
        plan.contains(&format!("-L{debug_dir}")) && plan.contains(&format!("-rpath,{debug_dir}")),
        "the examples must link against $CARGO_TARGET_DIR/debug:\n{plan}"
    );
    let out = make(&["-n", "-B", "build/line_server"], &[]);
    assert!(
        text(&out.stdout).contains("cargo build --release"),
        "the default build is release\n{}",
        show(&out)
    );
}

/// Switching BUILD relinks every example, the C++ ones too: each pattern
/// rule that builds an example (c_examples/%.c and %.cpp) lists the stamp
/// of the BUILD its programs are linked against. (Without it, the C++
/// example stayed linked against the other profile's library: the newer
/// library of the first BUILD made it look up to date.)
#[test]
fn every_example_rule_relinks_when_build_changes() {
    // -p prints make's rule database; -q with a target that has no rule
    // runs nothing.
    let out = make(&["-pq", "no-such-target-for-the-rule-database"], &[]);
    let rules = text(&out.stdout);
    let example_rules: Vec<&str> = rules
        .lines()
        .filter(|l| l.starts_with("build/%: c_examples/%."))
        .collect();
    assert!(
        example_rules.iter().any(|l| l.contains("c_examples/%.c "))
            && example_rules
                .iter()
                .any(|l| l.contains("c_examples/%.cpp ")),
        "no rule for the C and the C++ examples in make's database:\n{}",
        show(&out)
    );
    for rule in &example_rules {
        assert!(
            rule.contains("build/.linked-against-release"),
            "this example rule does not depend on the BUILD stamp: {rule}"
        );
    }
}

/// Runs `script` under `bash -c` with scripts/listening.sh sourced and the
/// strict options our scripts use, in a fresh temporary directory, and
/// checks that it succeeds printing `expected`.
fn assert_listening_sh_prints(script: &str, expected: &str) {
    let dir = TempDir::new("listening");
    let lib = manifest_dir().join("scripts/listening.sh");
    let full = format!(
        "set -euo pipefail; cd '{}'; source '{}'; {script}",
        dir.path().display(),
        lib.display()
    );
    let out = run_with_timeout(Path::new("bash"), &["-c", &full], &[], TIMEOUT);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(text(&out.stdout).trim(), expected, "{}", show(&out));
}

/// The demo (and so CI) once failed because it polled the server's output
/// file with `head` under `set -e` before the shell's child had created it.
/// `sleep` is shadowed so that the file appears, half a line at a time, only
/// between polls: the first poll finds no file, the second a line without
/// its newline, the third the whole line.
#[test]
fn listening_address_waits_for_a_file_not_created_yet_and_a_whole_line() {
    assert_listening_sh_prints(
        // $(...) is a subshell: the polls are counted in a file.
        "sleep() {
             echo >>polls
             case $(wc -l <polls) in
             1) printf 'listening on 127.0' >out ;;
             2) printf '.0.1:9\\n' >>out ;;
             esac
         }
         command sleep 30 & server=$!
         address=$(listening_address out $server 10); kill $server
         echo \"address=$address polls=$(wc -l <polls)\"",
        "address=127.0.0.1:9 polls=2",
    );
}

#[test]
fn listening_address_reports_an_exited_server_and_a_timeout() {
    // Status 1 for a server that exits without its line, 0 for one that
    // printed it and then exited, 2 for one still running without it.
    assert_listening_sh_prints(
        "true & gone=$!; wait $gone
         listening_address out $gone 10 && s1=0 || s1=$?
         echo 'listening on x' >printed
         listening_address printed $gone 10 >/dev/null && s2=0 || s2=$?
         sleep 30 & quiet=$!
         listening_address out $quiet 0 && s3=0 || s3=$?; kill $quiet
         echo \"$s1 $s2 $s3\"",
        "1 0 2",
    );
}

/// The demo (and so CI) once took the previous server's "listening on" line
/// from a reused output file: `server >OUT &` empties OUT only once the
/// shell's child runs. Checked right after launch returns, 20 times: with
/// the truncation left to the child the stale line is nearly always there
/// (198 of 200 times when measured).
#[test]
fn launch_empties_a_reused_output_file_before_the_server_runs() {
    assert_listening_sh_prints(
        "stale=0
         for i in $(seq 20); do
             echo 'listening on 127.0.0.1:1' >out; echo old >err
             launch out err sleep 30
             [[ -s out || -s err ]] && stale=$((stale + 1))
             kill $LAUNCHED_PID; wait $LAUNCHED_PID || true
         done
         echo 'listening on 127.0.0.1:1' >out
         launch out err echo 'listening on 127.0.0.1:2'
         address=$(listening_address out $LAUNCHED_PID 10)
         echo \"stale=$stale address=$address\"",
        "stale=0 address=127.0.0.1:2",
    );
}
