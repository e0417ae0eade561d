//! System calls counted while a test drives a running server: `strace -f
//! -c` attached to the server's process (all its threads, and the children
//! it forks meanwhile) for exactly the window the test chooses, so that a
//! test can pin "N requests cost at most K calls of X". Counts, not times:
//! they do not depend on the machine's load (a bound still needs a small
//! margin where the kernel decides, e.g. how often a non-blocking read
//! finds nothing).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::example::lines;
use super::{require_tool, TempDir};

/// How long strace may take to attach, or to detach and write its table.
const STRACE_BOUND: Duration = Duration::from_secs(10);

/// A running `strace -f -c -p PID` (or attach_thread_calls'); see the
/// module comment.
pub struct Strace {
    child: Option<Child>,
    stderr: mpsc::Receiver<String>,
    output: PathBuf,
    /// The traced threads' stat files, for `wait_settled`.
    traced: Traced,
    _dir: TempDir,
}

/// Which threads strace traces (children forked under -f are not listed).
enum Traced {
    Process(i32),
    Thread(i32),
}

/// Calls (and failed calls) per system call name, from strace's table.
#[derive(Debug, Default)]
pub struct SyscallCounts {
    calls: HashMap<String, (u64, u64)>,
}

impl Strace {
    /// Attaches to `pid` and every thread it has; returns once strace
    /// reports the process attached (it then counts every call made from
    /// here on, by its threads and by the children it forks).
    pub fn attach(pid: i32) -> Strace {
        Strace::attach_with(Traced::Process(pid), &["-f", "-c"])
    }

    /// Attaches to thread `pid` alone (no -f: not its other threads, nor
    /// the children it forks) and records each call of the system calls
    /// in `trace` (strace's -e trace=), for finish_calls: for a test that
    /// tells calls apart by their arguments.
    pub fn attach_thread_calls(pid: i32, trace: &str) -> Strace {
        Strace::attach_with(Traced::Thread(pid), &["-e", &format!("trace={trace}")])
    }

    fn attach_with(traced: Traced, options: &[&str]) -> Strace {
        let pid = match traced {
            Traced::Process(pid) | Traced::Thread(pid) => pid,
        };
        let strace = require_tool("strace", "strace");
        let dir = TempDir::new("strace");
        let output = dir.path().join("output.txt");
        let mut child = Command::new(strace)
            .args(options)
            .arg("-o")
            .arg(&output)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strace");
        let stderr = lines(child.stderr.take().expect("strace's stderr"));
        let deadline = Instant::now() + STRACE_BOUND;
        let mut said = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match stderr.recv_timeout(left) {
                Ok(line) if line.contains(&format!("Process {pid} attached")) => break,
                Ok(line) => said.push_str(&line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("strace -p {pid} did not attach within {STRACE_BOUND:?}: {said}");
                }
            }
        }
        Strace {
            child: Some(child),
            stderr,
            output,
            traced,
            _dir: dir,
        }
    }

    /// Waits until no traced thread runs or waits in a tracing stop: each
    /// then sleeps in a system call, or has exited, so that strace has
    /// recorded every call it made before. A call counts at its exit, and
    /// a peer can have what a call sent before the caller reaches that
    /// exit: detached then, strace lost the call (perf_event counted 399
    /// of 400 sendto in CI).
    fn wait_settled(&self) {
        let deadline = Instant::now() + STRACE_BOUND;
        loop {
            let busy: Vec<String> = self
                .traced_stats()
                .into_iter()
                .filter_map(|stat| {
                    let text = std::fs::read_to_string(&stat).ok()?;
                    let state = text[text.rfind(')')? + 1..].split_whitespace().next()?;
                    matches!(state, "R" | "t").then(|| format!("{}: {state}", stat.display()))
                })
                .collect();
            if busy.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "traced threads still busy after {STRACE_BOUND:?}: {busy:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// /proc's stat file of each traced thread (none once gone).
    fn traced_stats(&self) -> Vec<PathBuf> {
        match self.traced {
            Traced::Thread(tid) => vec![PathBuf::from(format!("/proc/{tid}/task/{tid}/stat"))],
            Traced::Process(pid) => std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|tasks| {
                    tasks
                        .filter_map(|t| Some(t.ok()?.path().join("stat")))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Once the traced threads have settled (wait_settled), detaches
    /// (SIGINT, as at a terminal) and returns the counts.
    pub fn finish(self) -> SyscallCounts {
        let (text, said) = self.detach();
        SyscallCounts::parse(&text)
            .unwrap_or_else(|| panic!("strace's table is not as expected:\n{text}\n{said}"))
    }

    /// Detaches and returns the calls recorded (attach_thread_calls), one
    /// line each as strace prints it: `name(args) = result`.
    pub fn finish_calls(self) -> Vec<String> {
        let (text, _) = self.detach();
        text.lines()
            .filter(|l| !l.starts_with("+++") && !l.starts_with("---"))
            .map(str::to_string)
            .collect()
    }

    /// Detaches; strace's output file and what it said on stderr.
    fn detach(mut self) -> (String, String) {
        self.wait_settled();
        let mut child = self.child.take().expect("finish runs once");
        // SAFETY: kill(2) on our own child, not waited for yet.
        let r = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        assert_eq!(r, 0, "kill strace: {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + STRACE_BOUND;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for strace") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("strace did not detach within {STRACE_BOUND:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let said: String = self.stderr.try_iter().collect();
        let text = std::fs::read_to_string(&self.output)
            .unwrap_or_else(|e| panic!("strace wrote no output ({e}; {status}): {said}"));
        (text, said)
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        // A failed test: the tracees are detached when strace exits.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl SyscallCounts {
    /// The rows between the table's two rules: `% time, seconds,
    /// usecs/call, calls, [errors,] syscall`. None if there is no table
    /// (an empty table, no call at all, is a table).
    fn parse(text: &str) -> Option<SyscallCounts> {
        let mut rules = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with("------"));
        let (first, _) = rules.next()?;
        let (second, _) = rules.next()?;
        let mut calls = HashMap::new();
        for line in text.lines().skip(first + 1).take(second - first - 1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (count, errors, name) = match fields[..] {
                [_, _, _, count, errors, name] => (count, errors.parse().ok()?, name),
                [_, _, _, count, name] => (count, 0, name),
                _ => return None,
            };
            calls.insert(name.to_string(), (count.parse().ok()?, errors));
        }
        Some(SyscallCounts { calls })
    }

    /// How many times `name` was called (0 if never).
    pub fn calls(&self, name: &str) -> u64 {
        self.calls.get(name).map_or(0, |c| c.0)
    }

    /// How many of those calls failed.
    pub fn errors(&self, name: &str) -> u64 {
        self.calls.get(name).map_or(0, |c| c.1)
    }

    /// Calls of every system call.
    pub fn total(&self) -> u64 {
        self.calls.values().map(|c| c.0).sum()
    }
}

impl std::fmt::Display for SyscallCounts {
    /// One `name=calls(errors)` per call, most frequent first: for
    /// assertion messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rows: Vec<_> = self.calls.iter().collect();
        rows.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
        for (name, (calls, errors)) in rows {
            write!(f, "{name}={calls}")?;
            if *errors > 0 {
                write!(f, "({errors} failed)")?;
            }
            f.write_str(" ")?;
        }
        Ok(())
    }
}
