//! Builds the plugins in `plugins/` as WebAssembly components and embeds the
//! bundled ones in the `assay` binary, so a fresh clone runs without a manual
//! plugin build.
//!
//! How the plugins are built (a second cargo, its own target directory) is in
//! `assay-component-build`.

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

use assay_component_build::{build, built, rerun_if_changed, workspace_root};

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

fn main() {
    let root = workspace_root(1);
    rerun_if_changed(&root, ["plugins", "wit", "migrations", "Cargo.lock"]);

    let crates: Vec<&str> = BUNDLED
        .iter()
        .chain(TOOLS)
        .chain(TESTING)
        .map(|(krate, _)| *krate)
        .collect();
    let out_dir = build(&root, &crates);
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
