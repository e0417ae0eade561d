//! systemd socket activation: the descriptors a service manager passed,
//! as sd_listen_fds(3) and sd_listen_fds_with_names(3) find them.
//!
//! The protocol: the manager binds (and for streams listens on) the
//! sockets, then starts the service with them as descriptors 3, 4, ...
//! and sets `LISTEN_PID` (the service's pid: variables inherited by some
//! other process are not for it), `LISTEN_FDS` (how many) and, optionally,
//! `LISTEN_FDNAMES` (their names, separated by `:`; systemd's
//! FileDescriptorName=, "unknown" when not given).
//!
//! Reading and unsetting the environment is not thread-safe against other
//! threads reading or writing it (getenv/setenv in C): call this at start-up,
//! before the program starts threads.

use std::ffi::OsStr;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;

use crate::error::{Error, Result};

/// The first passed descriptor (systemd's SD_LISTEN_FDS_START).
pub const LISTEN_FDS_START: RawFd = 3;

/// Longest descriptor name systemd accepts (FileDescriptorName=).
pub const MAX_NAME_LEN: usize = 255;

/// The environment variables of the protocol, unset once read.
pub const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// One passed descriptor and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenFd {
    pub fd: RawFd,
    pub name: Vec<u8>,
}

/// The passed descriptors described by the values of `LISTEN_PID`,
/// `LISTEN_FDS` and `LISTEN_FDNAMES` for process `my_pid`, as
/// sd_listen_fds_with_names would find them: none when `LISTEN_PID` or
/// `LISTEN_FDS` is unset or the pid is another process's; InvalidArgument
/// when a value is malformed (a pid or count that is not a number, a count
/// below 1 or past the descriptor range, a name list whose length differs
/// from the count, a name longer than 255 bytes). Reads nothing else.
pub fn parse(
    pid: Option<&OsStr>,
    count: Option<&OsStr>,
    names: Option<&OsStr>,
    my_pid: u32,
) -> Result<Vec<ListenFd>> {
    let Some(pid) = pid else {
        return Ok(Vec::new());
    };
    let pid: u32 = number(pid)
        .filter(|p| *p > 0)
        .ok_or_else(|| malformed("LISTEN_PID", pid, "is not a process id"))?;
    if pid != my_pid {
        return Ok(Vec::new());
    }
    let Some(count) = count else {
        return Ok(Vec::new());
    };
    let n: RawFd = number(count)
        .filter(|n| *n >= 1 && *n <= RawFd::MAX - LISTEN_FDS_START)
        .ok_or_else(|| {
            malformed(
                "LISTEN_FDS",
                count,
                "is not a number of descriptors (at least 1)",
            )
        })?;
    let names: Vec<Vec<u8>> = match names {
        None => vec![b"unknown".to_vec(); n as usize],
        Some(list) => {
            let names: Vec<Vec<u8>> = list
                .as_bytes()
                .split(|b| *b == b':')
                .map(<[u8]>::to_vec)
                .collect();
            if names.len() != n as usize {
                return Err(malformed(
                    "LISTEN_FDNAMES",
                    list,
                    &format!("has {} name(s) for LISTEN_FDS={n}", names.len()),
                ));
            }
            if names.iter().any(|name| name.len() > MAX_NAME_LEN) {
                return Err(malformed(
                    "LISTEN_FDNAMES",
                    list,
                    "has a name longer than 255 bytes",
                ));
            }
            names
        }
    };
    Ok(names
        .into_iter()
        .zip(LISTEN_FDS_START..)
        .map(|(name, fd)| ListenFd { fd, name })
        .collect())
}

/// A decimal number, as systemd's safe_atoi: digits only, no sign or space.
fn number<T: std::str::FromStr>(text: &OsStr) -> Option<T> {
    let text = text.to_str()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn malformed(name: &str, value: &OsStr, why: &str) -> Error {
    Error::invalid(format!(
        "socket activation: {name}={:?} {why}",
        value.to_string_lossy()
    ))
}

/// The descriptors passed to this process (see [`parse`]), each checked
/// open and set close-on-exec as sd_listen_fds does, so that programs this
/// one starts do not inherit them. Leaves the environment alone: see
/// [`unset_environment`]. An unopened descriptor is InvalidArgument.
pub fn listen_fds() -> Result<Vec<ListenFd>> {
    let [pid, count, names] = VARIABLES.map(std::env::var_os);
    let fds = parse(
        pid.as_deref(),
        count.as_deref(),
        names.as_deref(),
        std::process::id(),
    )?;
    for passed in &fds {
        crate::sys::set_cloexec_raw(passed.fd).map_err(|e| {
            Error::invalid(format!(
                "socket activation: LISTEN_FDS={} but descriptor {} cannot be used: {e}",
                fds.len(),
                passed.fd
            ))
        })?;
    }
    Ok(fds)
}

/// Unsets `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`, so that
/// children do not take the descriptors for theirs.
pub fn unset_environment() {
    for name in VARIABLES {
        std::env::remove_var(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn not_for_this_process_or_absent_is_none() {
        assert_eq!(parse(None, os("2"), None, 10), Ok(vec![]));
        assert_eq!(parse(os("11"), os("2"), None, 10), Ok(vec![]));
        assert_eq!(parse(os("10"), None, None, 10), Ok(vec![]));
    }

    #[test]
    fn names_default_to_unknown() {
        let fds = parse(os("10"), os("2"), None, 10).unwrap();
        assert_eq!(
            fds,
            vec![
                ListenFd {
                    fd: 3,
                    name: b"unknown".to_vec()
                },
                ListenFd {
                    fd: 4,
                    name: b"unknown".to_vec()
                }
            ]
        );
        let fds = parse(os("10"), os("2"), os("web:admin"), 10).unwrap();
        assert_eq!(fds[0].name, b"web");
        assert_eq!(fds[1].name, b"admin");
        assert_eq!(fds[1].fd, 4);
    }

    #[test]
    fn malformed_values_are_refused() {
        for (pid, count, names) in [
            ("x", "1", None),
            ("-10", "1", None),
            ("0", "1", None),
            ("10", "0", None),
            ("10", "-1", None),
            ("10", " 1", None),
            ("10", "1x", None),
            ("10", "99999999999", None),
            ("10", "2147483645", None),
            ("10", "2", Some("one")),
            ("10", "1", Some("a:b")),
        ] {
            let names_os = names.map(OsStr::new);
            let err = parse(os(pid), os(count), names_os, 10).unwrap_err();
            assert_eq!(
                err.kind(),
                crate::error::ErrorKind::InvalidArgument,
                "{pid} {count} {names:?}"
            );
            assert!(err.message().starts_with("socket activation: "), "{err}");
        }
        let long = "n".repeat(256);
        assert!(parse(os("10"), os("1"), os(&long), 10).is_err());
        assert!(parse(os("10"), os("1"), os(&long[..255]), 10).is_ok());
    }
}
