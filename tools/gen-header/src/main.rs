//! Writes include/socketserver.h from src/ffi with cbindgen. The header is
//! committed, so a plain build of the library needs neither this tool nor
//! cbindgen's ~30 crates; `make header` runs it after a change to src/ffi,
//! and `make check-header` (CI) runs it and fails if the committed header
//! changed.
//!
//!   cargo run --release -p socketserver-gen-header [-- CRATE_DIR]
//!
//! CRATE_DIR defaults to the library's directory (two levels above this
//! tool's own).

use std::path::{Path, PathBuf};

/// The `version = "..."` of the `[package]` table of the library's
/// Cargo.toml, the one place the version is written.
fn package_version(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest)
        .unwrap_or_else(|e| panic!("read {}: {e}", manifest.display()));
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(value) = line.strip_prefix("version") {
                if let Some(value) = value.trim_start().strip_prefix('=') {
                    return value.trim().trim_matches('"').to_string();
                }
            }
        }
    }
    panic!("{} has no [package] version", manifest.display());
}

fn main() {
    let crate_dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    };
    let crate_dir = crate_dir
        .canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", crate_dir.display()));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let version = package_version(&crate_dir.join("Cargo.toml"));
    // MAJOR.MINOR.PATCH, without a pre-release or build suffix (as cargo's
    // CARGO_PKG_VERSION_PATCH).
    let core = version.split(['-', '+']).next().unwrap_or(&version);
    let parts: Vec<&str> = core.split('.').collect();
    let [major, minor, patch] = parts[..] else {
        panic!("version {version} is not MAJOR.MINOR.PATCH");
    };
    let number = |part: &str| -> u32 {
        part.parse()
            .unwrap_or_else(|_| panic!("version {version}: {part} is not a decimal number"))
    };
    let (major, minor, patch) = (number(major), number(minor), number(patch));
    assert!(
        minor < 100 && patch < 100,
        "SS_VERSION_NUMBER needs minor and patch below 100"
    );
    let version_macros = format!(
        "\n/** The version of the library this header belongs to (from Cargo.toml); compare with ss_version(). */\n\
         #define SS_VERSION_STRING \"{version}\"\n#define SS_VERSION_MAJOR {major}\n#define SS_VERSION_MINOR {minor}\n#define SS_VERSION_PATCH {patch}\n\
         /**\n * The version as one number for #if checks: MAJOR * 10000 + MINOR * 100 +\n * PATCH (0.1.0 is 100, 1.2.3 is 10203); compare with ss_version_number().\n */\n\
         #define SS_VERSION_NUMBER {}\n\
         /** The SS_VERSION_NUMBER of version major.minor.patch: `#if SS_VERSION_NUMBER >= SS_VERSION_OF(0, 2, 0)`. */\n\
         #define SS_VERSION_OF(major, minor, patch) ((major) * 10000 + (minor) * 100 + (patch))\n",
        major * 10000 + minor * 100 + patch,
    );
    // Marks the deprecated aliases (cbindgen.toml [fn] deprecated_with_note),
    // so that callers get a compiler warning naming the new function.
    let deprecated_macro =
        "\n/** Marks a deprecated function: GCC and Clang warn where it is called. */\n\
         #if defined(__GNUC__) || defined(__clang__)\n\
         #define SS_DEPRECATED(note) __attribute__((deprecated(note)))\n\
         #else\n\
         #define SS_DEPRECATED(note)\n\
         #endif\n";
    let version_macros = version_macros + deprecated_macro;
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .with_after_include(version_macros)
        .generate()
        .expect("cbindgen can read src/ffi");
    // write_to_file leaves the file untouched when the content is the same,
    // so a run does not dirty the tree or touch the header's timestamp.
    let header = crate_dir.join("include/socketserver.h");
    let changed = bindings.write_to_file(&header);
    println!(
        "{} {}",
        header.display(),
        if changed { "rewritten" } else { "unchanged" }
    );
}
