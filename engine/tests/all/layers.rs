//! The engine's layers, drawn from its own imports: each module imports only
//! from the layers below it, so no layer depends on one above and there is
//! no cycle; and the runtime names no capability.

// Tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The top-level modules of the library, by layer (lower first).
const LAYERS: &[(&str, u32)] = &[
    ("config", 0),
    ("sync", 0),
    ("fsread", 0),
    ("db", 1),
    ("bundled", 1),
    ("prompts", 1),
    ("runtime", 2),
    ("capability", 3),
    ("registry", 4),
    ("pipeline", 5),
    ("engine", 6),
    ("service", 7),
    ("bench", 7),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The library modules `code` names as `crate::NAME` (also inside
/// `crate::{a, b::{c, d}}`, first level only), comments left out.
fn imports(code: &str) -> Vec<String> {
    // A `//` starts a comment at the start of a line or after a space; one
    // inside a string (`"http://…"`) follows a `:`.
    let code: String = code
        .lines()
        .map(|line| {
            let cut = line
                .match_indices("//")
                .find(|(i, _)| *i == 0 || line[..*i].ends_with(char::is_whitespace));
            match cut {
                Some((i, _)) => &line[..i],
                None => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |text: &str| -> String {
        text.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            found.push(ident(rest));
            continue;
        };
        // The names at depth 1 of the group, up to its closing brace.
        let mut depth = 1;
        let mut at_name = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => at_name = true,
                c if at_name && depth == 1 && !c.is_whitespace() => {
                    found.push(ident(&group[i..]));
                    at_name = false;
                }
                _ => {}
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_from_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    let mut seen_modules = std::collections::BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        // The binary (main.rs, cli/) uses the library as `assay::`.
        if matches!(top.as_str(), "main" | "cli" | "lib") {
            continue;
        }
        let Some(&own) = layer.get(top.as_str()) else {
            panic!(
                "{} is in no layer; add its module to LAYERS",
                relative.display()
            );
        };
        seen_modules.insert(top.clone());
        let code = std::fs::read_to_string(file).unwrap();
        for import in imports(&code) {
            if let Some(&theirs) = layer.get(import.as_str())
                && theirs > own
            {
                wrong.push(format!("{} imports crate::{import}", relative.display()));
            }
            if top == "runtime" && import == "capability" {
                wrong.push(format!("{} names a capability", relative.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        seen_modules.len(),
        LAYERS.len(),
        "every layer has code: {seen_modules:?}"
    );
}

#[test]
fn the_check_sees_grouped_and_plain_imports() {
    assert_eq!(
        imports(
            "use crate::a::b;\nuse crate::{c, d::{e, f}, g};\n// crate::h\nlet u = \"http://x\"; crate::i::j();"
        ),
        ["a", "c", "d", "g", "i"]
    );
}
