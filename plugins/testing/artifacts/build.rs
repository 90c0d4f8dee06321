//! Builds the plugins in `plugins/testing/` as WebAssembly components and
//! writes the path of each into the crate (see `src/lib.rs`).

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

use assay_component_build::{build, built, rerun_if_changed, workspace_root};

/// Plugins only tests and benchmarks use (misbehaving on purpose, trivial, or
/// not plugins at all): (crate in `plugins/testing/`, file name of the component).
const TESTING: &[(&str, &str)] = &[
    ("faulty", "faulty.wasm"),
    ("trivial", "trivial.wasm"),
    ("attacker", "attacker.wasm"),
    ("swap-one", "swap_one.wasm"),
    ("swap-two", "swap_two.wasm"),
    ("bad-describe", "bad_describe.wasm"),
    ("future-wit", "future_wit.wasm"),
    ("asker", "asker.wasm"),
    ("legacy-v0-1", "legacy_v0_1.wasm"),
    ("not-a-plugin", "not-a-plugin.wasm"),
];

fn main() {
    let root = workspace_root(3);
    rerun_if_changed(
        &root,
        TESTING
            .iter()
            .map(|(krate, _)| format!("plugins/testing/{krate}"))
            .chain(["plugins/sdk", "wit", "Cargo.lock"].map(String::from)),
    );

    let crates: Vec<&str> = TESTING.iter().map(|(krate, _)| *krate).collect();
    let out_dir = build(&root, &crates);
    let mut code = String::new();
    let mut all = String::from(
        "/// Every test component: (file name, constant name, path).\npub const ALL: &[(&str, &str, &str)] = &[\n",
    );
    for (krate, file) in TESTING {
        let path = built(&out_dir, file).display().to_string();
        let name = krate.to_uppercase().replace('-', "_");
        writeln!(
            code,
            "/// Path of `{file}`, the component of `plugins/testing/{krate}`.\npub const {name}: &str = {path:?};"
        )
        .expect("write to string");
        writeln!(all, "    ({file:?}, {name:?}, {name}),").expect("write to string");
    }
    all.push_str("];\n");
    code.push_str(&all);
    let generated =
        PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("artifacts.rs");
    std::fs::write(&generated, code).expect("write artifacts.rs");
}
