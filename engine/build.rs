//! Builds the plugins in `plugins/` as WebAssembly components and embeds the
//! bundled ones in the `assay` binary, so a fresh clone runs without a manual
//! plugin build.
//!
//! The plugins are built by a second cargo, for `wasm32-wasip2`, with the
//! `plugin` profile (size-optimised), into `target/plugins/` — its own target
//! directory, so it never waits on the lock of the build that runs this script.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugins shipped inside the binary: (crate, file name of the component).
const BUNDLED: &[(&str, &str)] = &[
    ("redact", "redact.wasm"),
    ("keywords", "keywords.wasm"),
    ("sentiment", "sentiment.wasm"),
    ("history", "history.wasm"),
];

/// Plugins built into the binary for its tools, never loaded by default.
const TOOLS: &[(&str, &str)] = &[("bench-query", "bench_query.wasm")];

/// Plugins only tests and benchmarks use (misbehaving on purpose, trivial, or
/// not plugins at all).
const TESTING: &[(&str, &str)] = &[
    ("faulty", "faulty.wasm"),
    ("trivial", "trivial.wasm"),
    ("attacker", "attacker.wasm"),
    ("swap-one", "swap_one.wasm"),
    ("swap-two", "swap_two.wasm"),
    ("bad-describe", "bad_describe.wasm"),
    ("future-wit", "future_wit.wasm"),
    ("not-a-plugin", "not-a-plugin.wasm"),
];

const WASM_TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("the engine crate lives inside the workspace")
        .to_path_buf();
    for watched in ["plugins", "wit", "migrations", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    ensure_wasm_target();
    let target_dir = root.join("target").join("plugins");
    build_plugins(&root, &target_dir);

    let out_dir = target_dir.join(WASM_TARGET).join(PROFILE);
    let mut code = String::from(
        "/// Components built into the binary: (file name, bytes).\npub static BUNDLED: &[(&str, &[u8])] = &[\n",
    );
    for (_, file) in BUNDLED {
        let path = built(&out_dir, file);
        writeln!(
            code,
            "    ({file:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("write to string");
    }
    code.push_str("];\n");
    for (krate, file) in TOOLS {
        let path = built(&out_dir, file);
        writeln!(
            code,
            "/// The `{krate}` plugin, built in for the tool that uses it.\npub static {}: &[u8] = include_bytes!({:?});",
            krate.to_uppercase().replace('-', "_"),
            path.display().to_string()
        )
        .expect("write to string");
    }
    writeln!(
        code,
        "/// Directory holding every component built from `plugins/`, test plugins included.\n#[doc(hidden)]\npub const BUILT_PLUGIN_DIR: &str = {:?};",
        out_dir.display().to_string()
    )
    .expect("write to string");
    let generated =
        PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bundled.rs");
    std::fs::write(&generated, code).expect("write bundled.rs");
}

/// The path of a component the plugin build must have produced.
fn built(out_dir: &Path, file: &str) -> PathBuf {
    let path = out_dir.join(file);
    assert!(
        path.is_file(),
        "plugin build did not produce {}",
        path.display()
    );
    path
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
        "cargo:warning=installing the {WASM_TARGET} target with rustup (needed to build the bundled plugins)"
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

fn build_plugins(root: &Path, target_dir: &Path) {
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
        .arg(target_dir);
    for (krate, _) in BUNDLED.iter().chain(TOOLS).chain(TESTING) {
        cmd.args(["-p", krate]);
    }
    // The outer build's settings (flags for the host target, clippy's wrapper,
    // cargo's own bookkeeping) must not leak into the wasm build.
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
    let output = cmd.output().expect("run cargo to build the plugins");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        for line in stderr.lines() {
            println!("cargo:warning={line}");
        }
        panic!("building the plugins in plugins/ for {WASM_TARGET} failed:\n{stderr}");
    }
}
