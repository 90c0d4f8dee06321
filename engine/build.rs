//! Builds the bundled and tool plugins in `plugins/` as WebAssembly
//! components and embeds them in the `assay` binary, so a fresh clone runs
//! without a manual plugin build. Plugins only tests use are built by
//! `assay-test-artifacts`, a dev-dependency, so a plain build never compiles them.
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
    ("audit-report", "audit_report.wasm"),
    ("ask-sql", "ask_sql.wasm"),
    ("similar", "similar.wasm"),
];

/// Plugins built into the binary for its tools, never loaded by default.
const TOOLS: &[(&str, &str)] = &[("bench-query", "bench_query.wasm")];

fn main() {
    let root = workspace_root(1);
    let plugins = BUNDLED.iter().chain(TOOLS);
    rerun_if_changed(
        &root,
        plugins
            .clone()
            .map(|(krate, _)| format!("plugins/{krate}"))
            .chain(["plugins/sdk", "wit", "migrations", "Cargo.lock"].map(String::from)),
    );

    let crates: Vec<&str> = plugins.map(|(krate, _)| *krate).collect();
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
        "/// Directory the bundled and tool plugins are built into.\n#[doc(hidden)]\npub const BUILT_PLUGIN_DIR: &str = {:?};",
        out_dir.display().to_string()
    )
    .expect("write to string");
    let generated =
        PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bundled.rs");
    std::fs::write(&generated, code).expect("write bundled.rs");
}
