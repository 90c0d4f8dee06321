//! Reading a prompt tree from disk: all of it or nothing.
//!
//! The layout is fixed, `<scenario>/<report type>/<building type>/part<N>/<name>.txt`
//! (`<name>.json.txt` for a prompt whose answer must be JSON), and anything
//! else in it is a problem reported with its path: a name that is not a
//! lowercase slug, a file where a directory belongs or the other way round,
//! `part01` (parts are `part1` … `part99`), two files for one prompt
//! (`x.txt` and `x.json.txt`), a symlink, a FIFO or device, a file that is
//! not UTF-8 text, empty, or larger than [`MAX_PROMPT_BYTES`]. Names starting
//! with `.` (editor swap files, `.git`) are skipped. A tree with any problem
//! is refused whole, every problem listed, so an import never stores half a
//! tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::PromptKey;
use crate::fsread::{FileError, describe, read_regular};

/// A file whose presence marks a directory as a prompt tree: `assay analyze`
/// of a directory above it then does not take its prompts for documents.
/// (Like every name starting with `.`, the tree reader skips it.)
pub const TREE_MARKER: &str = ".assay-prompt-tree";

/// Largest prompt file read.
pub const MAX_PROMPT_BYTES: u64 = 256 * 1024;
/// Most prompts one tree may hold.
pub const MAX_PROMPTS_PER_TREE: usize = 10_000;
/// Most problems listed (the rest are counted).
const MAX_PROBLEMS_LISTED: usize = 50;

/// One prompt file of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptFile {
    /// Where it belongs.
    pub key: PromptKey,
    /// Whether its answer must be JSON (`.json.txt`).
    pub json_answer: bool,
    /// Its text.
    pub text: String,
    /// Its path below the tree's root.
    pub source: String,
}

/// Why a tree was refused.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The root cannot be read as a directory.
    #[error("cannot read the prompt tree {path}: {message}")]
    Root {
        /// The root given.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Something in the tree is wrong; nothing of it is stored.
    #[error("the prompt tree {root} is refused, nothing of it is stored:\n{}", list(.problems, *.more))]
    Malformed {
        /// The root given.
        root: String,
        /// Each problem, path first.
        problems: Vec<String>,
        /// Problems beyond those listed.
        more: usize,
    },
}

fn list(problems: &[String], more: usize) -> String {
    let mut out: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    if more > 0 {
        out.push(format!("  … and {more} more"));
    }
    out.join("\n")
}

/// Whether `name` is a library name: a lowercase ASCII slug of 1 to 64
/// characters (letters, digits, `-`, `_`), starting with a letter or digit.
pub fn is_slug(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The run part a directory name `part<N>` stands for (1 to 99, no leading zero).
pub fn run_part(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("part")?;
    if digits.is_empty() || digits.starts_with('0') || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| (1..=99).contains(n))
}

const LEVELS: [&str; 4] = ["scenario", "report type", "building type", "run part"];

struct Walk {
    root: PathBuf,
    files: Vec<PromptFile>,
    problems: Vec<String>,
}

impl Walk {
    fn problem(&mut self, path: &Path, what: impl Into<String>) {
        let shown = path.strip_prefix(&self.root).unwrap_or(path);
        self.problems
            .push(format!("{}: {}", shown.display(), what.into()));
    }

    /// The entries of `dir` that are not skipped, sorted, as (name, path).
    fn entries(&mut self, dir: &Path) -> Vec<(String, PathBuf)> {
        let read = match std::fs::read_dir(dir) {
            Ok(read) => read,
            Err(e) => {
                self.problem(dir, format!("cannot be read: {e}"));
                return Vec::new();
            }
        };
        let mut entries = Vec::new();
        for entry in read {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    self.problem(dir, format!("cannot be read: {e}"));
                    continue;
                }
            };
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(String::from) else {
                self.problem(&path, "the name is not UTF-8");
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            entries.push((name, path));
        }
        entries.sort();
        entries
    }

    /// Walks a directory at `depth` (0 = scenarios) with the names above it.
    fn dir(&mut self, dir: &Path, depth: usize, names: &mut Vec<String>) {
        for (name, path) in self.entries(dir) {
            // Never followed: a symlink could lead out of the tree or in a loop.
            let file_type = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta.file_type(),
                Err(e) => {
                    self.problem(&path, format!("cannot be read: {e}"));
                    continue;
                }
            };
            if depth < LEVELS.len() {
                if !file_type.is_dir() {
                    self.problem(
                        &path,
                        format!(
                            "is {}; a {} directory belongs here (the layout is \
                             <scenario>/<report type>/<building type>/part<N>/<name>.txt)",
                            describe_entry(file_type),
                            LEVELS[depth]
                        ),
                    );
                    continue;
                }
                let valid = if depth == 3 {
                    run_part(&name).is_some()
                } else {
                    is_slug(&name)
                };
                if !valid {
                    let rule = if depth == 3 {
                        "a run part is named part1 … part99 (no leading zero)"
                    } else {
                        "names are lowercase ASCII letters, digits, - and _ (at most 64, starting with a letter or digit)"
                    };
                    self.problem(
                        &path,
                        format!("{name:?} is not a {} name: {rule}", LEVELS[depth]),
                    );
                    continue;
                }
                names.push(name);
                self.dir(&path, depth + 1, names);
                names.pop();
            } else {
                self.prompt(&path, &name, file_type, names);
            }
        }
    }

    fn prompt(&mut self, path: &Path, name: &str, file_type: std::fs::FileType, names: &[String]) {
        if !file_type.is_file() {
            self.problem(
                path,
                format!(
                    "is {}; only prompt files (.txt) belong in a run part",
                    describe_entry(file_type)
                ),
            );
            return;
        }
        let (stem, json_answer) = match (name.strip_suffix(".json.txt"), name.strip_suffix(".txt"))
        {
            (Some(stem), _) => (stem, true),
            (None, Some(stem)) => (stem, false),
            _ => {
                self.problem(path, "is not a prompt file: name it <name>.txt, or <name>.json.txt for a JSON answer");
                return;
            }
        };
        if !is_slug(stem) {
            self.problem(
                path,
                format!("{stem:?} is not a prompt name: lowercase ASCII letters, digits, - and _ (at most 64)"),
            );
            return;
        }
        if self.files.len() >= MAX_PROMPTS_PER_TREE {
            self.problem(
                path,
                format!("the tree holds more than {MAX_PROMPTS_PER_TREE} prompts"),
            );
            return;
        }
        let bytes = match read_regular(path, MAX_PROMPT_BYTES) {
            Ok(bytes) => bytes,
            Err(FileError::TooLarge { size, max }) => {
                self.problem(path, format!("is {size} bytes; a prompt is at most {max}"));
                return;
            }
            Err(e) => {
                self.problem(path, e.to_string());
                return;
            }
        };
        let text = match String::from_utf8(bytes) {
            Ok(text) if text.contains('\0') => {
                self.problem(path, "contains a NUL character");
                return;
            }
            Ok(text) if text.trim().is_empty() => {
                self.problem(path, "is empty");
                return;
            }
            Ok(text) => text,
            Err(_) => {
                self.problem(path, "is not UTF-8 text");
                return;
            }
        };
        let source = path
            .strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string();
        self.files.push(PromptFile {
            key: PromptKey {
                scenario: names[0].clone(),
                report_type: names[1].clone(),
                building_type: names[2].clone(),
                run_part: run_part(&names[3]).unwrap_or(0),
                name: stem.to_string(),
            },
            json_answer,
            text,
            source,
        });
    }
}

fn describe_entry(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_file() {
        "a file"
    } else {
        describe(file_type)
    }
}

/// Reads the prompt tree at `root`, or says everything that is wrong with it.
pub fn read_tree(root: &Path) -> Result<Vec<PromptFile>, TreeError> {
    let shown = root.display().to_string();
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(meta) => {
            return Err(TreeError::Root {
                path: shown,
                message: format!(
                    "it is {}, not a directory",
                    describe_entry(meta.file_type())
                ),
            });
        }
        Err(e) => {
            return Err(TreeError::Root {
                path: shown,
                message: e.to_string(),
            });
        }
    }
    let mut walk = Walk {
        root: root.to_path_buf(),
        files: Vec::new(),
        problems: Vec::new(),
    };
    walk.dir(root, 0, &mut Vec::new());
    // One prompt, two files: `x.txt` and `x.json.txt`.
    let mut seen: BTreeMap<&PromptKey, &str> = BTreeMap::new();
    let mut twice = Vec::new();
    for file in &walk.files {
        if let Some(first) = seen.insert(&file.key, &file.source) {
            twice.push(format!(
                "{}: the same prompt as {first} (one prompt is one file: <name>.txt or <name>.json.txt)",
                file.source
            ));
        }
    }
    walk.problems.extend(twice);
    if walk.files.is_empty() && walk.problems.is_empty() {
        walk.problems.push(format!(
            "{shown}: holds no prompts (the layout is <scenario>/<report type>/<building type>/part<N>/<name>.txt)"
        ));
    }
    if walk.problems.is_empty() {
        return Ok(walk.files);
    }
    let more = walk.problems.len().saturating_sub(MAX_PROBLEMS_LISTED);
    walk.problems.truncate(MAX_PROBLEMS_LISTED);
    Err(TreeError::Malformed {
        root: shown,
        problems: walk.problems,
        more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parts_have_one_spelling() {
        for good in ["hotel", "design-audit", "a", "health_centre", "2026"] {
            assert!(is_slug(good), "{good}");
        }
        for bad in [
            "",
            "Hotel",
            "hôtel",
            "design audit",
            "-x",
            "_x",
            "x/y",
            "x.txt",
            "ｈotel",
            &"a".repeat(65),
        ] {
            assert!(!is_slug(bad), "{bad:?}");
        }
        assert_eq!(run_part("part1"), Some(1));
        assert_eq!(run_part("part99"), Some(99));
        for bad in [
            "part0", "part01", "part100", "Part1", "part", "part1a", "part-1", "part１",
        ] {
            assert_eq!(run_part(bad), None, "{bad:?}");
        }
    }
}
