//! The log hook and the error details bindings read: tests/c/log_hook.c,
//! one sub-test per process ($SS_TEST_TMPDIR a fresh directory).
//!
//! - default_line_to_callback: the default handle_error's line goes to
//!   ss_set_log_callback's callback (SS_LOG_ERROR), nothing to stderr.
//! - restore_stderr: NULL puts the line back on stderr.
//! - suppressed_is_warning: the rate limit's "N similar error messages
//!   suppressed" line arrives as SS_LOG_WARNING.
//! - free_ignored_logged: a refused ss_server_free is logged there too.
//! - swap_while_logging: the callback replaced over and over (old user
//!   data freed at once) while handler threads log: no call of a replaced
//!   callback after ss_set_log_callback returned.
//! - set_inside_refused: ss_set_log_callback from the callback is
//!   SS_ERR_WRONG_STATE, not a deadlock.
//! - last_os_error: EADDRINUSE, ENOENT, 0 after a success or a non-OS
//!   failure.
//! - set_last_error_cause: ss_set_last_error gives a failing callback's
//!   cause (status and text) to handle_error.
//! - report_error: ss_server_report_error reaches the default and a custom
//!   handle_error.
//! - version_number: ss_version_number, SS_VERSION_NUMBER, SS_VERSION_OF
//!   and ss_version agree.

mod common;

common::c_tests! {
    crate::common::run_c_subtest;
    log_hook {
        default_line_to_callback,
        restore_stderr,
        suppressed_is_warning,
        free_ignored_logged,
        swap_while_logging,
        set_inside_refused,
        last_os_error,
        set_last_error_cause,
        report_error,
        version_number,
    }
}
