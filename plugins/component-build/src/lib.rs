//! Builds plugin crates of this workspace as WebAssembly components, for the
//! build scripts that need them: the engine's (the bundled and tool plugins it
//! embeds) and `assay-test-artifacts`' (the plugins only tests use).
//!
//! The plugins are built by a second cargo, for `wasm32-wasip2`, with the
//! `plugin` profile (size-optimised), into `target/plugins/`: a target
//! directory of their own, so the second cargo never waits on the lock of the
//! build that runs the script. Both build scripts use the same directory, so
//! what their plugins share (this workspace's plugin SDK, the bindings
//! generator) is compiled once.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target the plugins are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";
/// The cargo profile the plugins are built with.
pub const PROFILE: &str = "plugin";

/// The workspace root, from the manifest directory of a crate `depth` folders
/// below it (1 for `engine`, 3 for `plugins/testing/artifacts`).
pub fn workspace_root(depth: usize) -> PathBuf {
    let mut root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    for _ in 0..depth {
        assert!(root.pop(), "the crate lives inside the workspace");
    }
    root
}

/// Tells cargo to run the build script again when any of `paths` (relative
/// to `root`) changes.
pub fn rerun_if_changed<P: AsRef<Path>>(root: &Path, paths: impl IntoIterator<Item = P>) {
    for path in paths {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
}

/// Builds the plugin crates `crates` of the workspace at `root` and returns
/// the directory holding the components.
pub fn build(root: &Path, crates: &[&str]) -> PathBuf {
    ensure_wasm_target();
    let target_dir = root.join("target").join("plugins");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--quiet",
            "--target",
            WASM_TARGET,
            "--profile",
            PROFILE,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    for krate in crates {
        cmd.args(["-p", krate]);
    }
    scrub_env(&mut cmd);
    let output = cmd.output().expect("run cargo to build the plugins");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        for line in stderr.lines() {
            println!("cargo:warning={line}");
        }
        panic!("building the plugins {crates:?} for {WASM_TARGET} failed:\n{stderr}");
    }
    target_dir.join(WASM_TARGET).join(PROFILE)
}

/// The path of a component the plugin build must have produced.
pub fn built(out_dir: &Path, file: &str) -> PathBuf {
    let path = out_dir.join(file);
    assert!(
        path.is_file(),
        "plugin build did not produce {}",
        path.display()
    );
    path
}

/// The outer build's settings (flags for the host target, clippy's wrapper,
/// cargo's own bookkeeping) must not leak into the wasm build.
fn scrub_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = matches!(key, "CARGO_HOME" | "CARGO_NET_OFFLINE")
            || key.starts_with("CARGO_REGISTRIES_")
            || key.starts_with("CARGO_HTTP_")
            || key.starts_with("CARGO_NET_");
        let drop = (key.starts_with("CARGO_") && !keep)
            || matches!(
                key,
                "RUSTFLAGS"
                    | "RUSTC"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTDOC"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "RUSTC_LINKER"
            );
        if drop {
            cmd.env_remove(key);
        }
    }
}

/// The wasm target comes with `rust-toolchain.toml`, but rustup only installs
/// listed targets when it installs the toolchain itself; add it if missing.
fn ensure_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = sysroot.is_some_and(|s| s.join("lib/rustlib").join(WASM_TARGET).is_dir());
    if installed {
        return;
    }
    println!(
        "cargo:warning=installing the {WASM_TARGET} target with rustup (needed to build the plugins)"
    );
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", WASM_TARGET]);
    if let Ok(toolchain) = env::var("RUSTUP_TOOLCHAIN") {
        cmd.args(["--toolchain", &toolchain]);
    }
    let status = cmd.status();
    if !status.is_ok_and(|s| s.success()) {
        panic!(
            "the {WASM_TARGET} Rust target is missing and `rustup target add {WASM_TARGET}` failed; \
             install it by hand and build again"
        );
    }
}
