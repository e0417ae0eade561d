//! User-space instructions (and calls of given functions) a running server
//! spends while a test drives it: the server runs under `valgrind
//! --tool=callgrind --instr-atstart=no`, and instrumentation is switched on
//! with callgrind_control only for the window the test chooses, so that
//! start-up and one-time costs stay out. Counts, not times: they do not
//! depend on the machine's load, so a bound needs only a margin for
//! toolchain drift.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{require_tool, TempDir};

/// One server's callgrind run; see the module comment.
pub struct Callgrind {
    valgrind: PathBuf,
    control: PathBuf,
    out: PathBuf,
    _dir: TempDir,
}

impl Callgrind {
    /// Fails the test, naming the package, if valgrind's tools are missing.
    pub fn new() -> Callgrind {
        let valgrind = require_tool("valgrind", "valgrind");
        let control = require_tool("callgrind_control", "valgrind");
        let dir = TempDir::new("callgrind");
        let out = dir.path().join("callgrind.out");
        Callgrind {
            valgrind,
            control,
            out,
            _dir: dir,
        }
    }

    /// `program` under callgrind, not instrumented until `count` says so;
    /// the caller adds the program's arguments.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(&self.valgrind);
        cmd.arg("--tool=callgrind")
            .arg("--instr-atstart=no")
            .arg(format!("--callgrind-out-file={}", self.out.display()))
            .arg(program);
        cmd
    }

    /// Runs `work` with the server `pid` instrumented, and only then.
    pub fn count<R>(&self, pid: i32, work: impl FnOnce() -> R) -> R {
        self.instrument(pid, "on");
        let result = work();
        self.instrument(pid, "off");
        result
    }

    fn instrument(&self, pid: i32, on: &str) {
        let status = Command::new(&self.control)
            .args(["-i", on, &pid.to_string()])
            .stdout(Stdio::null())
            .status()
            .expect("run callgrind_control");
        assert!(status.success(), "callgrind_control -i {on}: {status}");
    }

    /// Instructions counted, once the server has exited (callgrind writes
    /// its profile then).
    pub fn instructions(&self) -> u64 {
        let profile = std::fs::read_to_string(&self.out).expect("callgrind's output");
        profile
            .lines()
            .find_map(|l| l.strip_prefix("totals:"))
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no totals line in {}", self.out.display()))
    }

    /// callgrind_annotate's caller tree of the profile (functions above
    /// 100 instructions), for counting calls of a function.
    pub fn caller_tree(&self) -> CallTree {
        CallTree(self.annotate("--tree=caller"))
    }

    /// callgrind_annotate's inclusive costs (each function with its
    /// callees).
    pub fn inclusive_costs(&self) -> InclusiveCosts {
        InclusiveCosts(self.annotate("--inclusive=yes"))
    }

    fn annotate(&self, view: &str) -> String {
        let annotate = require_tool("callgrind_annotate", "valgrind");
        let out = Command::new(annotate)
            .args([view, "--threshold=100"])
            .arg(&self.out)
            .output()
            .expect("run callgrind_annotate");
        assert!(out.status.success(), "callgrind_annotate {view}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `callgrind_annotate --inclusive=yes` output.
pub struct InclusiveCosts(pub String);

impl InclusiveCosts {
    /// Instructions in the function whose annotated name contains
    /// `function` (e.g. ":ss_request_readline ["), its callees included.
    pub fn of(&self, function: &str) -> u64 {
        self.0
            .lines()
            .filter(|l| l.contains(function))
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|n| n.replace(',', "").parse::<u64>().ok())
            .sum()
    }
}

/// `callgrind_annotate --tree=caller` output.
pub struct CallTree(pub String);

impl CallTree {
    /// Calls to the function whose annotated name contains `function`
    /// (e.g. ":malloc ["): the "(Nx)" of each of its callers.
    pub fn calls(&self, function: &str) -> u64 {
        let mut calls = 0;
        let mut callers = Vec::new();
        for line in self.0.lines() {
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
