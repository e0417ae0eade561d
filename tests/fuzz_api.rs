//! Hostile calls to every export of the C API: tests/c/fuzz_api.c, one
//! sub-test per process with a hard timeout and a fresh temporary directory
//! ($SS_TEST_TMPDIR); the C side checks that every call returns a valid
//! status and leaves no descriptor or thread behind, this side that no file
//! or process is left. The random sub-tests print their seed (fixed by
//! default; $SS_FUZZ_SEED and $SS_FUZZ_ITERS change it and the count).
//!
//! - null_args: NULL for every pointer of every export, out-of-range enums.
//! - config_fuzz: random transports, modes and values for every setter.
//! - server_states: random and over-long addresses; wrong-state calls
//!   (serve before bind, bind and activate twice, every call after close).
//! - request_hostile: every ss_request_* call with hostile arguments from
//!   setup, handle and finish, in sync, threading and pool mode, and from a
//!   UDP handler; the requests are still answered.
//! - conn_hostile: every ss_conn_* call with hostile arguments from event
//!   callbacks; ss_server_post with random ids and NULL jobs meanwhile.
//! - every_export_is_fuzzed: fuzz_api.c calls every function that
//!   include/socketserver.h declares (names the missing ones otherwise).

mod common;

use std::collections::BTreeSet;

common::c_tests! {
    crate::common::run_c_subtest;
    fuzz_api {
        null_args,
        config_fuzz,
        server_states,
        request_hostile,
        conn_hostile,
    }
}

/// Names `ss_xxx` directly followed by `(` in `text`, outside comments.
fn called_names(text: &str) -> BTreeSet<String> {
    // Comments removed first: a name mentioned in prose is not a call.
    let mut code = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        code.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    code.push_str(rest);
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = code.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(off) = code[i..].find("ss_") {
        let start = i + off;
        let word_start =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start + 3;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if word_start && end < bytes.len() && bytes[end] == b'(' {
            names.insert(code[start..end].to_string());
        }
        i = end;
    }
    names
}

/// The C driver uses every function the header declares: a new export
/// must get its hostile calls in tests/c/fuzz_api.c.
#[test]
fn every_export_is_fuzzed() {
    let root = common::manifest_dir();
    let header = std::fs::read_to_string(root.join("include/socketserver.h")).expect("header");
    let declared = called_names(&header);
    assert!(
        declared.len() > 50,
        "too few declarations found: {declared:?}"
    );
    let source = std::fs::read_to_string(root.join("tests/c/fuzz_api.c")).expect("fuzz_api.c");
    // Setters called through a table (`{"name", ss_config_set_name}`) count.
    let mut used = called_names(&source);
    for name in &declared {
        if source.contains(&format!(", {name}}}")) {
            used.insert(name.clone());
        }
    }
    let missing: Vec<&String> = declared.difference(&used).collect();
    assert!(
        missing.is_empty(),
        "tests/c/fuzz_api.c does not call these exports of include/socketserver.h: {missing:?}; \
         add hostile calls for them (NULL pointers, out-of-range values, wrong state)"
    );
}
