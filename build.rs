//! Writes include/socketserver.h from src/ffi with cbindgen. The header is
//! committed; CI regenerates it and fails if it changed.

use std::path::PathBuf;

fn main() {
    let crate_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=Cargo.toml");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let version = |part: &str| {
        std::env::var(format!("CARGO_PKG_VERSION{part}")).expect("cargo sets the version")
    };
    let number = |part: &str| -> u32 {
        version(part)
            .parse()
            .expect("version parts are decimal numbers")
    };
    let (major, minor, patch) = (number("_MAJOR"), number("_MINOR"), number("_PATCH"));
    assert!(
        minor < 100 && patch < 100,
        "SS_VERSION_NUMBER needs minor and patch below 100"
    );
    let version_macros = format!(
        "\n/** The version of the library this header belongs to (from Cargo.toml); compare with ss_version(). */\n\
         #define SS_VERSION_STRING \"{}\"\n#define SS_VERSION_MAJOR {major}\n#define SS_VERSION_MINOR {minor}\n#define SS_VERSION_PATCH {patch}\n\
         /**\n * The version as one number for #if checks: MAJOR * 10000 + MINOR * 100 +\n * PATCH (0.1.0 is 100, 1.2.3 is 10203); compare with ss_version_number().\n */\n\
         #define SS_VERSION_NUMBER {}\n\
         /** The SS_VERSION_NUMBER of version major.minor.patch: `#if SS_VERSION_NUMBER >= SS_VERSION_OF(0, 2, 0)`. */\n\
         #define SS_VERSION_OF(major, minor, patch) ((major) * 10000 + (minor) * 100 + (patch))\n",
        version(""),
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
    // so builds do not dirty the tree.
    bindings.write_to_file(crate_dir.join("include/socketserver.h"));
}
