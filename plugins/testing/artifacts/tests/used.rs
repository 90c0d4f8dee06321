//! Every test component is used by some test or benchmark: a test plugin
//! nothing loads is a build cost with no test behind it. A component counts as
//! used when a source under `engine/tests/` or `benches/` names its file
//! (`"faulty.wasm"`) or its constant (`FAULTY`).

use std::path::{Path, PathBuf};

/// The `.rs` files under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether `text` holds `word` with no identifier character on either side.
fn has_word(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        !text[..i].chars().next_back().is_some_and(ident)
            && !text[i + word.len()..].chars().next().is_some_and(ident)
    })
}

#[test]
fn every_test_component_is_used() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let mut files = Vec::new();
    for dir in ["engine/tests", "benches"] {
        sources(&root.join(dir), &mut files);
    }
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect();
    assert!(
        !texts.is_empty(),
        "no test sources under {}",
        root.display()
    );

    let unused: Vec<&str> = assay_test_artifacts::ALL
        .iter()
        .filter(|(file, name, _)| {
            let quoted = format!("\"{file}\"");
            !texts
                .iter()
                .any(|text| text.contains(&quoted) || has_word(text, name))
        })
        .map(|(file, _, _)| *file)
        .collect();
    assert!(
        unused.is_empty(),
        "test components no test or benchmark uses (remove their plugin or add a test): {unused:?}"
    );
}

#[test]
fn words_are_whole() {
    assert!(has_word("artifacts::FAULTY)", "FAULTY"));
    assert!(!has_word("FAULTY_TWO", "FAULTY"));
    assert!(!has_word("NOT_FAULTY", "FAULTY"));
}
