//! An example program (c_examples/*, or a tool in front of one) run as a
//! server process by a test: spawned in a process group of its own, its
//! first stdout line `listening on ADDR` read with a timeout, stdout and
//! stderr read line by line on threads (so it never blocks on a full
//! pipe), stopped with a signal and awaited with a bound; dropping it
//! kills whatever of its group is still running.
//!
//! The examples print nothing on stdout but that one line:
//! [`ExampleProcess::wait_exit`] fails the test if they printed more.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// How long the rest of a pipe may take to reach its end once the process
/// has exited (a process it left behind may still hold it).
const PIPE_END: Duration = Duration::from_secs(5);

/// A running server process; see the module comment.
pub struct ExampleProcess {
    child: Child,
    pid: i32,
    what: String,
    addr: String,
    /// Lines as read, each with its '\n' (the last one may lack it).
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    status: Option<ExitStatus>,
}

/// Reads `pipe` line by line on a thread, to its end.
pub fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    // Nobody listening any more: keep reading, so that the
                    // process never blocks on (or is killed by) its pipe.
                    let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                }
            }
        }
    });
    rx
}

/// Everything left in `rx` until its writer ends or `bound` passes.
fn rest(rx: &mpsc::Receiver<String>, bound: Duration) -> (String, bool) {
    let deadline = Instant::now() + bound;
    let mut text = String::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => text.push_str(&line),
            Err(RecvTimeoutError::Disconnected) => return (text, true),
            Err(RecvTimeoutError::Timeout) => return (text, false),
        }
    }
}

impl ExampleProcess {
    /// Spawns `cmd` (stdin /dev/null, stdout and stderr piped, a process
    /// group of its own) and waits at most `startup` for its first stdout
    /// line, which must be `listening on ADDR`; otherwise kills it and
    /// fails the test with what it wrote on stderr.
    pub fn start(cmd: Command, startup: Duration) -> ExampleProcess {
        let mut p = ExampleProcess::spawn(cmd);
        p.listening(startup);
        p
    }

    /// Spawns `cmd` as [`start`](Self::start) does, without waiting for
    /// anything (for a process that prints its address later, e.g. one a
    /// socket activation manager execs on the first connection).
    pub fn spawn(mut cmd: Command) -> ExampleProcess {
        let program = std::path::Path::new(cmd.get_program())
            .file_name()
            .unwrap_or(cmd.get_program())
            .to_string_lossy()
            .into_owned();
        let what = std::iter::once(program)
            .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        ExampleProcess {
            pid: i32::try_from(child.id()).expect("pid fits in pid_t"),
            stdout: lines(child.stdout.take().expect("stdout")),
            stderr: lines(child.stderr.take().expect("stderr")),
            child,
            what,
            addr: String::new(),
            status: None,
        }
    }

    /// Waits at most `timeout` for the first stdout line, `listening on
    /// ADDR`; returns ADDR (also [`addr`](Self::addr) from now on).
    /// Otherwise kills the process and fails with its stderr.
    pub fn listening(&mut self, timeout: Duration) -> String {
        let line = self.stdout.recv_timeout(timeout).unwrap_or_default();
        match line
            .strip_suffix('\n')
            .and_then(|l| l.strip_prefix("listening on "))
        {
            Some(addr) if !addr.is_empty() => {
                self.addr = addr.to_string();
                self.addr.clone()
            }
            _ => {
                let err = self.kill_and_stderr();
                panic!(
                    "{} did not print \"listening on ADDR\" within {timeout:?} (got {line:?})\n\
                     --- stderr ---\n{err}",
                    self.what
                );
            }
        }
    }

    /// The address of its `listening on ADDR` line.
    pub fn addr(&self) -> &str {
        assert!(!self.addr.is_empty(), "{}: no address read yet", self.what);
        &self.addr
    }

    /// The port of [`addr`](Self::addr) (after its last ':').
    pub fn port(&self) -> u16 {
        let addr = self.addr();
        addr.rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {addr:?}"))
    }

    /// Its pid, which is also its process group's id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The program's name and arguments, for messages.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The next stderr line (without its '\n') within `timeout`; None if
    /// none came (or stderr ended).
    pub fn stderr_line(&self, timeout: Duration) -> Option<String> {
        self.stderr
            .recv_timeout(timeout)
            .ok()
            .map(|l| l.trim_end_matches('\n').to_string())
    }

    /// The stderr lines read so far and not yet taken, without waiting.
    pub fn stderr_now(&self) -> Vec<String> {
        self.stderr
            .try_iter()
            .map(|l| l.trim_end_matches('\n').to_string())
            .collect()
    }

    /// The next stdout line (without its '\n') within `timeout`; None if
    /// none came (or stdout ended).
    pub fn stdout_line(&self, timeout: Duration) -> Option<String> {
        self.stdout
            .recv_timeout(timeout)
            .ok()
            .map(|l| l.trim_end_matches('\n').to_string())
    }

    /// Sends `signal` to the process (not its group). It must not have
    /// been reaped yet (so its pid cannot have been reused).
    pub fn signal(&self, signal: libc::c_int) {
        assert!(
            self.status.is_none(),
            "{}: signal {signal} after it exited",
            self.what
        );
        // SAFETY: kill(2) on our own child, not waited for yet.
        let r = unsafe { libc::kill(self.pid, signal) };
        assert_eq!(
            r,
            0,
            "kill {} {signal}: {}",
            self.pid,
            std::io::Error::last_os_error()
        );
    }

    /// Whether the process is still running (it is reaped if it is not).
    pub fn alive(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("wait for the process");
        }
        self.status.is_none()
    }

    /// Waits at most `limit` for the process to exit and reaps it; None if
    /// it is still running then (it is left running). Waits on the exit
    /// itself (a pidfd becomes readable when its process exits), polling
    /// only where pidfd_open(2) is not available.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let deadline = Instant::now() + limit;
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new
        // descriptor or -1; `pid` is our child, not reaped yet, so it is
        // the process we mean.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) };
        if fd < 0 {
            while self.alive() {
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            return self.status;
        }
        // SAFETY: `fd` is the new descriptor pidfd_open returned; nothing
        // else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(0) if left.is_zero() => return None,
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {
                    self.status = Some(self.child.wait().expect("reap the process"));
                    return self.status;
                }
                Err(e) => panic!("poll a pidfd: {e}"),
            }
        }
    }

    /// Waits at most `limit` for the process to exit; returns its status
    /// and everything it wrote on stderr (not taken by
    /// [`stderr_line`](Self::stderr_line)), up to the pipe's end (with a
    /// note if that has not come 5 s after the exit). Fails the test, after killing
    /// its group, if it is still running then, or if it printed more on
    /// stdout than its address line.
    pub fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, String) {
        let Some(status) = self.wait_timeout(limit) else {
            let err = self.kill_and_stderr();
            panic!(
                "{} did not exit within {limit:?} and was killed\n--- stderr ---\n{err}",
                self.what
            );
        };
        let (mut err, ended) = rest(&self.stderr, PIPE_END);
        if !ended {
            // A process it left behind holds the pipe: say so (a test
            // expecting an empty stderr fails, rather than hangs).
            err.push_str(&format!("<stderr still open {PIPE_END:?} after the exit>"));
        }
        let (out, _) = rest(&self.stdout, PIPE_END);
        assert!(
            out.is_empty(),
            "{} printed more on stdout than its address line: {out:?}\n--- stderr ---\n{err}",
            self.what
        );
        (status, err)
    }

    /// `signal`, then [`wait_exit`](Self::wait_exit)`(limit)`.
    pub fn stop(&mut self, signal: libc::c_int, limit: Duration) -> (ExitStatus, String) {
        self.signal(signal);
        self.wait_exit(limit)
    }

    /// Waits at most `limit` for every process of its group to be gone
    /// (the process itself reaped, children it left reparented and reaped
    /// by init); whether they are.
    pub fn wait_group_gone(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if !self.alive() && !crate::common::group_alive(self.pid) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs its whole group, reaps it, and returns everything it wrote
    /// on stderr (not yet taken), waiting a bounded time for the pipe's end.
    pub fn kill_and_stderr(&mut self) -> String {
        self.kill();
        rest(&self.stderr, PIPE_END).0
    }

    /// SIGKILLs its whole group and reaps the process.
    fn kill(&mut self) {
        crate::common::kill_group(self.pid);
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for ExampleProcess {
    fn drop(&mut self) {
        // Forked children included: a failed test must not leave them.
        self.kill();
    }
}
