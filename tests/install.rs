//! `make install` and what users build against an installed copy: each test
//! installs the library with `make install DESTDIR=<temp> PREFIX=/opt/...`
//! (the Makefile's install rules, honouring CARGO_TARGET_DIR and BUILD for
//! this test binary's build), then, from a temporary directory outside the
//! source tree, builds tests/install/echo_check.c (and .cpp) the way a user
//! would: pkg-config against the shared library, pkg-config --static
//! against the static one, CMake find_package(socketserver) with the
//! shared, static and C++ targets. Each program runs a threading-mode echo
//! server on 127.0.0.1 and checks the replies as its own client.
//!
//! Also checked on the installed library: the SONAME, only `ss_*` symbols
//! exported (the same set as the build tree's), no RPATH/RUNPATH; the
//! shared-linked programs load the installed copy with LD_LIBRARY_PATH
//! naming the temporary prefix only; `make uninstall` removes every file
//! it installed. A missing tool (make, cmake, pkg-config, cc, c++, readelf,
//! nm) fails the test that needs it, naming it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{manifest_dir, profile_dir, require_tool, run_with_timeout, show, TempDir};

/// Generous: the first install of a fresh tree builds the library and runs
/// `cargo rustc --print native-static-libs` in a target directory of its own.
const MAKE_TIMEOUT: Duration = Duration::from_secs(400);
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The prefix the library is configured for; files land under DESTDIR.
const PREFIX: &str = "/opt/socketserver-test";

const VERSION: &str = env!("CARGO_PKG_VERSION");
const SONAME: &str = "libsocketserver.so.0";

/// Runs `exe args` with `envs`, panicking with the output unless it succeeds.
fn run_ok(exe: &Path, args: &[&str], envs: &[(&str, &Path)], timeout: Duration) -> Output {
    let out = run_with_timeout(exe, args, envs, timeout);
    assert!(
        out.status.success(),
        "{} {args:?} failed\n{}",
        exe.display(),
        show(&out)
    );
    out
}

/// This test binary's target directory and the Makefile's BUILD for its
/// profile (target/<profile>/deps/install-<hash>).
fn target_and_build() -> (PathBuf, &'static str) {
    let profile = profile_dir();
    let build = match profile.file_name().and_then(|n| n.to_str()) {
        Some("release") => "release",
        Some("debug") => "debug",
        other => panic!("the Makefile builds release or debug, not the profile {other:?}"),
    };
    let target = profile.parent().expect("profile dir has a parent");
    (target.to_path_buf(), build)
}

/// `make -C <tree> TARGET VARIABLE=VALUE...` with this binary's target
/// directory and profile; the outer make's MAKEFLAGS (e.g. variables given
/// to `make test`) are not passed on.
fn make(target: &str, vars: &[String]) -> Output {
    let make = require_tool("make", "make");
    let (target_dir, build) = target_and_build();
    let tree = manifest_dir().display().to_string();
    let mut args: Vec<String> = vec![
        "--no-print-directory".into(),
        "-C".into(),
        tree,
        target.into(),
        format!("BUILD={build}"),
        format!("CARGO={}", env!("CARGO")),
    ];
    args.extend(vars.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let empty = Path::new("");
    run_ok(
        &make,
        &args,
        &[
            ("CARGO_TARGET_DIR", &target_dir),
            ("MAKEFLAGS", empty),
            ("MFLAGS", empty),
            ("MAKELEVEL", empty),
        ],
        MAKE_TIMEOUT,
    )
}

/// An installed copy: DESTDIR and the staged prefix (DESTDIR + PREFIX).
struct Installed {
    dir: TempDir,
    stage: PathBuf,
    prefix: PathBuf,
}

impl Installed {
    /// `make install DESTDIR=<temp>/stage PREFIX=/opt/... extra...`.
    fn new(tag: &str, extra: &[String]) -> Installed {
        let dir = TempDir::new(tag);
        let stage = dir.path().join("stage");
        let mut vars = vec![
            format!("DESTDIR={}", stage.display()),
            format!("PREFIX={PREFIX}"),
        ];
        vars.extend(extra.iter().cloned());
        make("install", &vars);
        let prefix = stage.join(PREFIX.trim_start_matches('/'));
        Installed { dir, stage, prefix }
    }

    fn libdir(&self) -> PathBuf {
        self.prefix.join("lib")
    }

    /// Environment for pkg-config: only this copy's .pc files, with
    /// DESTDIR as the sysroot so that -I and -L point into the stage.
    fn pkg_config_env(&self) -> Vec<(&'static str, PathBuf)> {
        let pcdir = self.libdir().join("pkgconfig");
        vec![
            ("PKG_CONFIG_LIBDIR", pcdir.clone()),
            ("PKG_CONFIG_PATH", pcdir),
            ("PKG_CONFIG_SYSROOT_DIR", self.stage.clone()),
        ]
    }

    fn pkg_config(&self, args: &[&str]) -> Vec<String> {
        let pkg_config = require_tool("pkg-config", "pkg-config");
        let env = self.pkg_config_env();
        let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
        let out = run_ok(&pkg_config, args, &env, TOOL_TIMEOUT);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// A copy of tests/install/ outside the source tree, to build from.
    fn project(&self) -> PathBuf {
        let dir = self.dir.path().join("project");
        std::fs::create_dir_all(&dir).expect("mkdir project");
        for name in ["echo_check.c", "echo_check.cpp", "CMakeLists.txt"] {
            std::fs::copy(
                manifest_dir().join("tests/install").join(name),
                dir.join(name),
            )
            .unwrap_or_else(|e| panic!("copy tests/install/{name}: {e}"));
        }
        dir
    }
}

/// Every file and symlink under `root`, as "path" or "path -> target",
/// relative to `root`.
fn listing(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("readlink");
                out.insert(format!("{rel} -> {}", target.display()));
            } else if meta.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// The headers the tree ships: include/*.h and include/*.hpp.
fn tree_headers() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(manifest_dir().join("include"))
        .expect("read include/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".h") || n.ends_with(".hpp"))
        .collect();
    names.sort();
    names
}

/// `readelf -d FILE` output.
fn dynamic_section(file: &Path) -> String {
    let readelf = require_tool("readelf", "binutils");
    let arg = file.display().to_string();
    String::from_utf8_lossy(&run_ok(&readelf, &["-d", &arg], &[], TOOL_TIMEOUT).stdout).into_owned()
}

/// The defined dynamic symbols of a shared library (nm -D --defined-only),
/// without version suffixes and absolute (version node) symbols.
fn exported_symbols(so: &Path) -> BTreeSet<String> {
    let nm = require_tool("nm", "binutils");
    let arg = so.display().to_string();
    let out = run_ok(&nm, &["-D", "--defined-only", &arg], &[], TOOL_TIMEOUT);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (kind, name) = match fields.as_slice() {
                [_, kind, name] | [kind, name] => (*kind, *name),
                _ => return None,
            };
            (kind != "A").then(|| name.split('@').next().unwrap_or(name).to_string())
        })
        .collect()
}

/// Runs a program built against the installed copy with LD_LIBRARY_PATH
/// naming `libdir` only (not cargo's target directories), and checks its
/// output; returns the path of the object ss_version() was found in.
fn run_echo_check(program: &Path, libdir: &Path) -> String {
    let out = run_ok(program, &[], &[("LD_LIBRARY_PATH", libdir)], RUN_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.lines().next() == Some("echo ok: 3 replies") && out.stderr.is_empty(),
        "{} did not get its 3 echoes\n{}",
        program.display(),
        show(&out)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("library: "))
        .unwrap_or_else(|| panic!("no library: line\n{}", show(&out)))
        .to_string()
}

/// The shared library the program loaded must be the installed one.
fn assert_loads_installed(program: &Path, installed: &Installed) {
    let loaded = run_echo_check(program, &installed.libdir());
    let expected = installed.libdir().join(SONAME);
    assert_eq!(
        Path::new(&loaded),
        expected,
        "{} loaded {loaded}, not the installed copy",
        program.display()
    );
}

/// A statically linked program needs no libsocketserver.so and finds
/// ss_version() in itself.
fn assert_static(program: &Path) {
    let dynamic = dynamic_section(program);
    assert!(
        !dynamic.contains("libsocketserver"),
        "{} is not linked statically:\n{dynamic}",
        program.display()
    );
    let loaded = run_echo_check(program, Path::new("/nonexistent"));
    assert!(
        !loaded.contains("libsocketserver"),
        "{} found ss_version in {loaded}",
        program.display()
    );
}

/// Compiles echo_check.c in `project` with `flags` (compiler, then link
/// flags) into `name`.
fn cc(project: &Path, name: &str, flags: &[String]) -> PathBuf {
    let cc = require_tool("cc", "gcc");
    let exe = project.join(name);
    let src = project.join("echo_check.c").display().to_string();
    let exe_arg = exe.display().to_string();
    let mut args: Vec<&str> = vec![
        "-std=c99",
        "-Wall",
        "-Wextra",
        "-Wpedantic",
        "-Werror",
        &src,
        "-o",
        &exe_arg,
    ];
    args.extend(flags.iter().map(String::as_str));
    args.push("-lpthread");
    run_ok(&cc, &args, &[], TOOL_TIMEOUT);
    exe
}

/// Configures and builds the CMake project with CMAKE_PREFIX_PATH naming
/// the installed copy (and nothing else found on the system: the package
/// registry is off); returns the build directory.
fn cmake_build(installed: &Installed, project: &Path, build: &str, extra: &[&str]) -> PathBuf {
    let cmake = require_tool("cmake", "cmake");
    require_tool("c++", "g++");
    let build_dir = project.join(build);
    let src = project.display().to_string();
    let bin = build_dir.display().to_string();
    let prefix = format!("-DCMAKE_PREFIX_PATH={}", installed.prefix.display());
    let mut args = vec![
        "-S",
        &src,
        "-B",
        &bin,
        &prefix,
        "-DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF",
        "-DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF",
    ];
    args.extend_from_slice(extra);
    run_ok(&cmake, &args, &[], TOOL_TIMEOUT);
    run_ok(&cmake, &["--build", &bin, "-j", "2"], &[], TOOL_TIMEOUT);
    build_dir
}

#[test]
fn installed_files_and_uninstall() {
    // Non-default directories, to check that each variable is honoured.
    let extra = [
        format!("LIBDIR={PREFIX}/lib64"),
        format!("INCLUDEDIR={PREFIX}/include/socketserver"),
    ];
    let installed = Installed::new("install-files", &extra);
    let mut expected: BTreeSet<String> = [
        format!("lib64/libsocketserver.so.{VERSION}"),
        format!("lib64/{SONAME} -> libsocketserver.so.{VERSION}"),
        format!("lib64/libsocketserver.so -> {SONAME}"),
        "lib64/libsocketserver.a".to_string(),
        "lib64/pkgconfig/socketserver.pc".to_string(),
        "lib64/pkgconfig/socketserver-static.pc".to_string(),
        "lib64/cmake/socketserver/socketserverConfig.cmake".to_string(),
        "lib64/cmake/socketserver/socketserverConfigVersion.cmake".to_string(),
    ]
    .into_iter()
    .collect();
    for header in tree_headers() {
        expected.insert(format!("include/socketserver/{header}"));
    }
    let prefix = &installed.prefix;
    assert_eq!(
        listing(&installed.stage),
        expected
            .iter()
            .map(|p| format!("{}/{p}", PREFIX.trim_start_matches('/')))
            .collect(),
        "make install did not install exactly these files"
    );
    for header in tree_headers() {
        let ours = std::fs::read(manifest_dir().join("include").join(&header)).unwrap();
        let theirs = std::fs::read(prefix.join("include/socketserver").join(&header)).unwrap();
        assert!(
            ours == theirs,
            "installed {header} differs from include/{header}"
        );
    }
    // The .pc files name the real prefix (not DESTDIR) and the chosen dirs.
    let pc = std::fs::read_to_string(prefix.join("lib64/pkgconfig/socketserver.pc")).unwrap();
    for line in [
        format!("prefix={PREFIX}"),
        "libdir=${prefix}/lib64".to_string(),
        "includedir=${prefix}/include/socketserver".to_string(),
        format!("Version: {VERSION}"),
    ] {
        assert!(
            pc.lines().any(|l| l == line),
            "socketserver.pc lacks {line:?}:\n{pc}"
        );
    }
    assert!(
        !pc.contains(&installed.stage.display().to_string()),
        "socketserver.pc names DESTDIR:\n{pc}"
    );
    // Paths in the CMake package are relative to it.
    let config =
        std::fs::read_to_string(prefix.join("lib64/cmake/socketserver/socketserverConfig.cmake"))
            .unwrap();
    assert!(
        config.contains("\"${CMAKE_CURRENT_LIST_DIR}/../..\"")
            && config.contains("\"${CMAKE_CURRENT_LIST_DIR}/../../../include/socketserver\""),
        "socketserverConfig.cmake does not locate lib64/ and include/socketserver/ relative to itself:\n{config}"
    );

    let mut vars = vec![
        format!("DESTDIR={}", installed.stage.display()),
        format!("PREFIX={PREFIX}"),
    ];
    vars.extend(extra.iter().cloned());
    make("uninstall", &vars);
    let left = listing(&installed.stage);
    assert!(left.is_empty(), "make uninstall left {left:?}");
    assert!(
        !prefix.join("lib64/cmake/socketserver").exists(),
        "make uninstall left the package's own directory lib64/cmake/socketserver"
    );
}

#[test]
fn installed_library_soname_exports_and_no_runpath() {
    let installed = Installed::new("install-elf", &[]);
    let so = installed
        .libdir()
        .join(format!("libsocketserver.so.{VERSION}"));
    let dynamic = dynamic_section(&so);
    assert!(
        dynamic
            .lines()
            .any(|l| l.contains("(SONAME)") && l.contains(&format!("[{SONAME}]"))),
        "{} has no SONAME {SONAME}:\n{dynamic}",
        so.display()
    );
    let paths: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(RPATH)") || l.contains("(RUNPATH)"))
        .collect();
    assert!(
        paths.is_empty(),
        "{} carries a library search path: {paths:?}",
        so.display()
    );

    let exported = exported_symbols(&so);
    let outside: Vec<&String> = exported.iter().filter(|n| !n.starts_with("ss_")).collect();
    assert!(
        outside.is_empty(),
        "the installed library exports symbols outside ss_: {outside:?}"
    );
    assert!(
        exported.len() >= 50,
        "only {} symbols exported: {exported:?}",
        exported.len()
    );
    // The same set as the library the tests build (tests/acceptance.rs
    // checks that one against the header).
    let built = exported_symbols(&common::setup().shared_library());
    assert_eq!(
        exported, built,
        "the installed library exports other symbols than the built one"
    );
}

#[test]
fn c_with_pkg_config_shared() {
    let installed = Installed::new("install-pc", &[]);
    let project = installed.project();
    let flags = installed.pkg_config(&["--cflags", "--libs", "socketserver"]);
    assert!(
        flags.iter().any(|f| f == "-lsocketserver"),
        "pkg-config --libs socketserver: {flags:?}"
    );
    let exe = cc(&project, "echo_pc_shared", &flags);
    let dynamic = dynamic_section(&exe);
    assert!(
        dynamic.contains(&format!("Shared library: [{SONAME}]")),
        "the program does not record the SONAME {SONAME}:\n{dynamic}"
    );
    assert_loads_installed(&exe, &installed);
    assert_eq!(
        installed.pkg_config(&["--modversion", "socketserver"]),
        vec![VERSION.to_string()]
    );
}

#[test]
fn c_with_pkg_config_static() {
    let installed = Installed::new("install-pcs", &[]);
    let project = installed.project();
    // Libs.private: what rustc printed for this build's staticlib, not empty.
    let (target_dir, build) = target_and_build();
    let native = std::fs::read_to_string(target_dir.join(build).join("native-static-libs.txt"))
        .expect("make install leaves native-static-libs.txt beside the library");
    let native: Vec<String> = native.split_whitespace().map(str::to_string).collect();
    assert!(
        native.iter().any(|l| l == "-lc"),
        "native-static-libs.txt: {native:?}"
    );
    let shared_static = installed.pkg_config(&["--static", "--libs", "socketserver"]);
    assert!(
        shared_static.ends_with(&native),
        "pkg-config --static --libs socketserver {shared_static:?} does not end with Libs.private {native:?}"
    );
    let flags = installed.pkg_config(&["--static", "--cflags", "--libs", "socketserver-static"]);
    assert!(
        flags.iter().any(|f| f == "-l:libsocketserver.a") && flags.ends_with(&native),
        "pkg-config --static --libs socketserver-static: {flags:?}"
    );
    let exe = cc(&project, "echo_pc_static", &flags);
    assert_static(&exe);
}

#[test]
fn cmake_find_package_c_shared_static_and_cxx() {
    let installed = Installed::new("install-cmake", &[]);
    let project = installed.project();
    let build = cmake_build(&installed, &project, "build", &[]);
    assert_loads_installed(&build.join("echo_c"), &installed);
    assert_static(&build.join("echo_c_static"));
    assert_loads_installed(&build.join("echo_cxx"), &installed);
}

#[test]
fn cmake_socketserver_static_on() {
    let installed = Installed::new("install-cmakes", &[]);
    let project = installed.project();
    let build = cmake_build(
        &installed,
        &project,
        "build-static",
        &["-DSOCKETSERVER_STATIC=ON"],
    );
    // socketserver::socketserver is now the static library.
    assert_static(&build.join("echo_c"));
    assert_static(&build.join("echo_cxx"));
}

#[test]
fn cmake_version_check_follows_the_abi_rule() {
    let installed = Installed::new("install-cmakev", &[]);
    let cmake = require_tool("cmake", "cmake");
    let version_file = installed
        .libdir()
        .join("cmake/socketserver/socketserverConfigVersion.cmake");
    // (requested version, compatible?) for the installed 0.1.x: a 0.x minor
    // may break the ABI, so only 0.1 requests up to this version match.
    let (major, minor) = {
        let mut it = VERSION.split('.');
        (it.next().unwrap(), it.next().unwrap())
    };
    let same_minor = format!("{major}.{minor}");
    let next_minor = format!("{major}.{}", minor.parse::<u32>().unwrap() + 1);
    let newer_patch = format!("{major}.{minor}.999");
    let cases = [
        ("", true),
        (same_minor.as_str(), true),
        (VERSION, true),
        (next_minor.as_str(), false),
        (newer_patch.as_str(), false),
        ("1", false),
    ];
    let script = installed.dir.path().join("check.cmake");
    for (requested, compatible) in cases {
        let mut parts = requested.split('.');
        let text = format!(
            "set(PACKAGE_FIND_VERSION \"{requested}\")\n\
             set(PACKAGE_FIND_VERSION_MAJOR \"{}\")\n\
             set(PACKAGE_FIND_VERSION_MINOR \"{}\")\n\
             include(\"{}\")\n\
             message(\"compatible=${{PACKAGE_VERSION_COMPATIBLE}}\")\n",
            parts.next().filter(|s| !s.is_empty()).unwrap_or("0"),
            parts.next().unwrap_or("0"),
            version_file.display()
        );
        std::fs::write(&script, text).unwrap();
        let arg = script.display().to_string();
        let out = run_ok(&cmake, &["-P", &arg], &[], TOOL_TIMEOUT);
        let said = String::from_utf8_lossy(&out.stderr);
        let want = if compatible {
            "compatible=TRUE"
        } else {
            "compatible=FALSE"
        };
        assert!(
            said.trim() == want,
            "find_package(socketserver {requested}) against {VERSION}: expected {want}, got {said}"
        );
    }
}
