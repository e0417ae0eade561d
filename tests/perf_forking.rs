//! The forking mode's per-child costs that the build decides (the
//! behaviour and system calls are pinned in tests/perf_threads.rs).
//!
//! - examples_are_linked_bind_now: the examples are linked with `-z now`
//!   (the Makefile, and tests/common's compile_example, which the fault
//!   counts in tests/perf_threads.rs use). Lazily bound, an SS_FORKING
//!   child's first call of each function the parent never called writes
//!   the GOT: a copy-on-write fault of that page in every child, about 8
//!   per child in echo_server (forked_child_close_touches_no_unused_buffer
//!   in tests/perf_threads.rs bounds the faults).

mod common;

use std::path::Path;
use std::process::Command;

use common::{manifest_dir, require_tool, show};

/// Fails unless `readelf -d program` shows the BIND_NOW flag (DT_FLAGS
/// BIND_NOW or DT_FLAGS_1 NOW).
fn assert_bind_now(program: &Path) {
    let readelf = require_tool("readelf", "binutils");
    let out = Command::new(readelf)
        .arg("-d")
        .arg(program)
        .output()
        .expect("readelf");
    assert!(out.status.success(), "{}", show(&out));
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let now = dynamic.lines().any(|line| {
        (line.contains("(FLAGS)") && line.contains("BIND_NOW"))
            || (line.contains("(FLAGS_1)") && line.split_whitespace().any(|w| w == "NOW"))
    });
    assert!(now, "{} is bound lazily:\n{dynamic}", program.display());
}

#[test]
fn examples_are_linked_bind_now() {
    assert_bind_now(&common::compile_example("echo_server", &["-O2"]));
    // The Makefile's link command (not run: -n), for every example.
    let make = require_tool("make", "make");
    let out = Command::new(make)
        .current_dir(manifest_dir())
        .args(["-n", "-B", "build/echo_server"])
        .output()
        .expect("make -n");
    assert!(out.status.success(), "{}", show(&out));
    let commands = String::from_utf8_lossy(&out.stdout);
    let link = commands
        .lines()
        .find(|line| line.contains("c_examples/echo_server.c"))
        .unwrap_or_else(|| panic!("no link command for build/echo_server:\n{commands}"));
    assert!(
        link.split_whitespace().any(|w| w == "-Wl,-z,now"),
        "build/echo_server is linked without -Wl,-z,now: {link}"
    );
}
