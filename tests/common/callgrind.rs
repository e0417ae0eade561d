//! A server process's user-space work under valgrind's callgrind, counted
//! only over a window the test chooses (instrumentation switched on and
//! off with callgrind_control): instructions and calls per function, the
//! same whatever the machine's load.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::example::ExampleProcess;
use super::{require_tool, TempDir};

/// A program started under callgrind with instrumentation off.
pub struct Callgrind {
    server: ExampleProcess,
    control: PathBuf,
    annotate: PathBuf,
    out: PathBuf,
    _dir: TempDir,
}

/// What callgrind counted: user-space instructions and the call tree.
pub struct Profile {
    pub instructions: u64,
    /// callgrind_annotate --tree=caller.
    pub tree: String,
    /// callgrind_annotate --inclusive=yes: each function with its callees.
    pub inclusive: String,
}

impl Callgrind {
    /// Starts `program args...` under callgrind (as an ExampleProcess:
    /// it prints "listening on ADDR").
    pub fn start(program: &std::path::Path, args: &[&str]) -> Callgrind {
        require_tool("valgrind", "valgrind");
        let control = require_tool("callgrind_control", "valgrind");
        let annotate = require_tool("callgrind_annotate", "valgrind");
        let dir = TempDir::new("callgrind");
        let out = dir.path().join("callgrind.out");
        let mut cmd = Command::new("valgrind");
        cmd.arg("--tool=callgrind")
            .arg("--instr-atstart=no")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(program)
            .args(args);
        let server = ExampleProcess::start(cmd, Duration::from_secs(60));
        Callgrind {
            server,
            control,
            annotate,
            out,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> &str {
        self.server.addr()
    }

    /// Switches counting on or off.
    pub fn instrument(&self, on: bool) {
        let on = if on { "on" } else { "off" };
        let st = Command::new(&self.control)
            .args(["-i", on, &self.server.pid().to_string()])
            .output()
            .expect("callgrind_control");
        assert!(st.status.success(), "callgrind_control -i {on}");
    }

    /// Stops the program (SIGTERM, exit status 0 expected) and reads what
    /// was counted.
    pub fn finish(mut self) -> Profile {
        let (status, stderr) = self.server.stop(libc::SIGTERM, Duration::from_secs(60));
        assert!(status.success(), "the program under callgrind: {stderr}");
        let text = std::fs::read_to_string(&self.out).expect("callgrind output");
        let instructions = text
            .lines()
            .find_map(|l| l.strip_prefix("totals: "))
            .and_then(|t| t.trim().parse().ok())
            .expect("a totals line");
        let tree = Command::new(&self.annotate)
            .args(["--tree=caller", "--threshold=100"])
            .arg(&self.out)
            .output()
            .expect("callgrind_annotate");
        let inclusive = Command::new(&self.annotate)
            .args(["--inclusive=yes", "--threshold=100"])
            .arg(&self.out)
            .output()
            .expect("callgrind_annotate");
        Profile {
            instructions,
            tree: String::from_utf8_lossy(&tree.stdout).into_owned(),
            inclusive: String::from_utf8_lossy(&inclusive.stdout).into_owned(),
        }
    }
}

impl Profile {
    /// Instructions in the function whose annotated name contains
    /// `function` (e.g. ":ss_request_readline ["), its callees included.
    pub fn inclusive(&self, function: &str) -> u64 {
        self.inclusive
            .lines()
            .filter(|l| l.contains(function))
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|n| n.replace(',', "").parse::<u64>().ok())
            .sum()
    }

    /// Calls to the function whose annotated name contains `function`
    /// (e.g. ":malloc ["): the "(Nx)" of each of its callers.
    pub fn calls(&self, function: &str) -> u64 {
        let mut calls = 0;
        let mut callers = Vec::new();
        for line in self.tree.lines() {
            // "  1,234 (0.5%)  < file:caller (56x) [object]", then the
            // callee's own "  9,999 (2.0%)  *  file:function [object]".
            if line.contains("%)  < ") {
                callers.push(line);
                continue;
            }
            if line.contains("%)  *  ") && line.contains(function) {
                for caller in &callers {
                    let count = caller
                        .rsplit_once(" (")
                        .and_then(|(_, rest)| rest.split_once("x)"))
                        .and_then(|(n, _)| n.replace(',', "").parse::<u64>().ok());
                    calls += count.unwrap_or(0);
                }
            }
            callers.clear();
        }
        calls
    }
}
