//! `ss_listen_fds`: systemd socket activation (crate::activation).

use std::ffi::{c_char, c_int};

use super::boundary::{guard, null};
use super::ss_status;
use crate::activation;
use crate::error::{Error, ErrorKind};

/// Size of ss_listen_fd's `name` (written out in the struct for cbindgen,
/// which exports no constants): the longest name systemd allows
/// (FileDescriptorName=, 255 bytes) and its NUL.
const NAME_SIZE: usize = 256;
const _: () = assert!(NAME_SIZE == activation::MAX_NAME_LEN + 1);
const _: () = assert!(activation::LISTEN_FDS_START == 3);

/// One descriptor passed by socket activation (ss_listen_fds()).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ss_listen_fd {
    /// The descriptor: 3, 4, ... (systemd's SD_LISTEN_FDS_START is 3).
    pub fd: c_int,
    /// Its name from LISTEN_FDNAMES (systemd's FileDescriptorName=, e.g.
    /// the socket unit's name), NUL-terminated; "unknown" when none was
    /// given. At most 255 bytes and the NUL.
    pub name: [c_char; 256],
}

/// systemd socket activation, as sd_listen_fds_with_names(3) (no libsystemd
/// needed): finds the descriptors a service manager passed to this process
/// (systemd, systemd-socket-activate, or anything speaking the protocol)
/// and writes them to `fds` (room for `cap`), in the order the manager
/// passed them, with their names, and their number to `*out_count`. Hand
/// each to ss_server_new_from_fd() with the transport it is for.
///
/// The protocol: descriptors 3 (SD_LISTEN_FDS_START) onwards, `LISTEN_FDS`
/// of them, for the process whose pid is `LISTEN_PID`, named by
/// `LISTEN_FDNAMES` (`:`-separated, optional). Nothing passed, or passed to
/// another process (variables inherited from a parent that did not unset
/// them): SS_OK with `*out_count` 0. Malformed variables (a pid or count
/// that is not a decimal number, a count below 1, a name list whose length
/// differs from the count, a name over 255 bytes) or a listed descriptor
/// that is not open: SS_ERR_INVALID_ARGUMENT.
///
/// As sd_listen_fds does, it sets FD_CLOEXEC on every passed descriptor (so
/// programs you start do not inherit them) and unsets `LISTEN_PID`,
/// `LISTEN_FDS` and `LISTEN_FDNAMES`, so that children do not take the
/// descriptors for theirs; a second call then finds none. The variables
/// are unset whether the call succeeded or not, except on
/// SS_ERR_BUFFER_TOO_SMALL and SS_ERR_NULL_POINTER: `cap` smaller than the
/// number passed writes nothing but that number to `*out_count` and leaves
/// the environment as it was, so the call can be made again with room
/// enough (pass NULL, 0 to ask for the number).
///
/// Ownership: the descriptors are the caller's (the library does not close
/// them) until given to ss_server_new_from_fd(); close any you do not use.
/// `fds` and `out_count` are the caller's; `out_count` is required.
///
/// Thread: call it at start-up, before the program starts threads. It reads
/// and changes the process environment (getenv, unsetenv), which is not
/// safe while another thread reads or changes it (getenv, setenv, putenv,
/// and any library that calls them, e.g. for time zones or locales).
#[no_mangle]
pub unsafe extern "C" fn ss_listen_fds(
    fds: *mut ss_listen_fd,
    cap: usize,
    out_count: *mut usize,
) -> ss_status {
    guard(|| {
        if out_count.is_null() {
            return Err(null("out_count"));
        }
        if fds.is_null() && cap > 0 {
            return Err(null("fds"));
        }
        let passed = match activation::listen_fds() {
            Ok(passed) => passed,
            Err(e) => {
                activation::unset_environment();
                return Err(e);
            }
        };
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { out_count.write(passed.len()) };
        if passed.len() > cap {
            return Err(Error::new(
                ErrorKind::BufferTooSmall,
                format!(
                    "room for {cap} descriptor(s), but {} were passed",
                    passed.len()
                ),
            ));
        }
        for (i, one) in passed.iter().enumerate() {
            let mut entry = ss_listen_fd {
                fd: one.fd,
                name: [0; NAME_SIZE],
            };
            // At most MAX_NAME_LEN bytes (activation::parse): the NUL fits.
            for (dst, src) in entry.name.iter_mut().zip(&one.name) {
                *dst = *src as c_char;
            }
            // SAFETY: `fds` has room for `cap` > i entries per the contract.
            unsafe { fds.add(i).write(entry) };
        }
        activation::unset_environment();
        Ok(())
    })
}
