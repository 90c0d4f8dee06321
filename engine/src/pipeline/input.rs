//! Reading documents: files, directories (recursively), or standard input.
//!
//! `.txt` and `.md` files are plain text. A `.json` file is an object with
//! either a `"text"` string or a `"messages"` array (a chat: each message an
//! object with `"from"`/`"role"` and `"text"`/`"content"`), and optionally its own
//! `"kind"` and `"metadata"` object.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Largest document accepted, in bytes: plugins get a copy in their own memory.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
/// Longest `source` accepted, in bytes. It is part of the document's identity
/// and of a unique index, which PostgreSQL cannot build over arbitrarily long
/// keys; a path or URL is far shorter.
pub const MAX_SOURCE_BYTES: usize = 2048;
/// Extensions picked up when walking a directory.
pub const DOCUMENT_EXTENSIONS: &[&str] = &["txt", "md", "json"];

/// A document ready for the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentInput {
    /// Where it came from: a path, or `-` for standard input.
    pub source: String,
    /// Its kind (`transcript`, `chat`, …).
    pub kind: String,
    /// Caller metadata.
    pub metadata: Map<String, Value>,
    /// The text.
    pub text: String,
}

/// An input that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProblem {
    /// The path (or `-`).
    pub source: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for InputProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

impl DocumentInput {
    /// Checks everything PostgreSQL would refuse to store, so that a caller's
    /// mistake is reported as such (HTTP 400, a skipped input) rather than as
    /// a failed write. The message names the field and what to do.
    pub fn validate(&self) -> Result<(), InvalidDocument> {
        let invalid = |m: String| Err(InvalidDocument(m));
        if self.source.is_empty() {
            return invalid("source is empty; name where the document comes from".into());
        }
        if self.source.len() > MAX_SOURCE_BYTES {
            return invalid(format!(
                "source is {} bytes; at most {MAX_SOURCE_BYTES} are accepted (it names where the document comes from)",
                self.source.len()
            ));
        }
        if self.source.contains('\0') {
            return invalid("source contains a NUL character".into());
        }
        if !valid_kind(&self.kind) {
            return invalid(format!(
                "kind {:?} is not valid: {}",
                self.kind,
                crate::runtime::plugin::KIND_RULE
            ));
        }
        if self.text.trim().is_empty() {
            return invalid("text is empty; there is nothing to analyse".into());
        }
        if self.text.len() > MAX_DOCUMENT_BYTES {
            return invalid(format!(
                "text is {} bytes, larger than {MAX_DOCUMENT_BYTES} bytes, the most a document may have; split it",
                self.text.len()
            ));
        }
        if self.text.contains('\0') {
            return invalid(
                "text contains NUL characters; it looks like binary data, not a document".into(),
            );
        }
        if let Some(path) = crate::db::nul_in_object(&self.metadata, "metadata") {
            return invalid(format!(
                "{path} contains a NUL character (\\u0000), which PostgreSQL cannot store in JSON; remove it"
            ));
        }
        Ok(())
    }
}

/// What is wrong with a document, naming the field and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDocument(pub String);

pub use crate::db::nul_in_json;
pub use crate::runtime::plugin::valid_kind;

/// Parses `key=value` pairs into a metadata object.
pub fn parse_meta(pairs: &[String]) -> Result<Map<String, Value>, InvalidDocument> {
    let mut map = Map::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| InvalidDocument(format!("--meta {pair:?} must look like key=value")))?;
        if key.trim().is_empty() {
            return Err(InvalidDocument(format!("--meta {pair:?} has an empty key")));
        }
        map.insert(key.trim().to_string(), Value::String(value.to_string()));
    }
    Ok(map)
}

/// Reads every document named by `paths`; what cannot be read is reported, not fatal.
pub fn collect(
    paths: &[PathBuf],
    kind: &str,
    meta: &Map<String, Value>,
) -> (Vec<DocumentInput>, Vec<InputProblem>) {
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    let mut results: Vec<(String, Result<DocumentInput, String>)> = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let result = read_bounded(std::io::stdin().lock())
                .map_err(|e| format!("cannot read standard input: {e}"))
                .and_then(|bytes| document("-", None, bytes, kind, meta));
            results.push(("-".into(), result));
        } else if path.is_dir() {
            for file in walk(path, &mut problems) {
                let source = file.display().to_string();
                let result = read(&file)
                    .and_then(|bytes| document(&source, file.extension(), bytes, kind, meta));
                results.push((source, result));
            }
        } else {
            let source = path.display().to_string();
            let result =
                read(path).and_then(|bytes| document(&source, path.extension(), bytes, kind, meta));
            results.push((source, result));
        }
    }
    for (source, result) in results {
        match result {
            Ok(doc) => docs.push(doc),
            Err(message) => problems.push(InputProblem { source, message }),
        }
    }
    (docs, problems)
}

fn walk(dir: &Path, problems: &mut Vec<InputProblem>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        // Hidden files and folders (`.git`, `.assay`, editor swap files) are not
        // documents; nor is a prompt tree found below (its marker file says so).
        .filter_entry(|e| {
            e.depth() == 0
                || !(e.file_name().to_string_lossy().starts_with('.')
                    || (e.file_type().is_dir()
                        && e.path().join(crate::prompts::tree::TREE_MARKER).exists()))
        });
    for entry in walker {
        match entry {
            Ok(entry) if entry.file_type().is_dir() => {}
            Ok(entry) => {
                let wanted = entry
                    .path()
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| {
                        DOCUMENT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                    });
                if !wanted {
                    continue;
                }
                if entry.file_type().is_file() {
                    files.push(entry.into_path());
                } else {
                    // Named like a document but not one: a link is not
                    // followed (it may point anywhere, or loop), a FIFO not
                    // opened (that would wait for a writer).
                    problems.push(InputProblem {
                        source: entry.path().display().to_string(),
                        message: format!(
                            "is {}; in a directory only regular files are read (name it on the command line to read it)",
                            crate::fsread::describe(entry.file_type())
                        ),
                    });
                }
            }
            Err(e) => problems.push(InputProblem {
                source: e
                    .path()
                    .map_or_else(|| dir.display().to_string(), |p| p.display().to_string()),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    files
}

/// Reads at most one byte more than a document may have: whatever the input
/// is (a pipe that never ends, `/dev/zero`, a huge file), no more than that is
/// ever held. Too long is then refused by [`document`].
fn read_bounded(input: impl std::io::Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input
        .take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::File::open(path)
        .and_then(read_bounded)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied; check the file's permissions".to_string()
            }
            _ => format!("cannot read: {e}"),
        })
}

fn document(
    source: &str,
    extension: Option<&std::ffi::OsStr>,
    bytes: Vec<u8>,
    kind: &str,
    meta: &Map<String, Value>,
) -> Result<DocumentInput, String> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        // Reading stopped there, so the real size is unknown.
        return Err(format!(
            "is larger than {MAX_DOCUMENT_BYTES} bytes, the most a document may have; split it"
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "is not valid UTF-8 (first bad byte at offset {}); convert it, e.g. `iconv -f latin1 -t utf-8`",
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.contains('\0') {
        return Err("contains NUL bytes; it looks like a binary file, not a document".into());
    }
    let is_json = extension.is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let mut doc = if is_json {
        json_document(source, &text, kind)?
    } else {
        DocumentInput {
            source: source.to_string(),
            kind: kind.to_string(),
            metadata: Map::new(),
            text,
        }
    };
    if doc.text.trim().is_empty() {
        return Err("is empty; there is nothing to analyse".into());
    }
    // The path's `key=value` folders, then the document's own, then --meta.
    for (key, value) in path_metadata(source) {
        doc.metadata.entry(key).or_insert(Value::String(value));
    }
    doc.metadata
        .extend(meta.iter().map(|(k, v)| (k.clone(), v.clone())));
    doc.validate().map_err(|InvalidDocument(m)| m)?;
    Ok(doc)
}

/// Metadata from the folders of a document's path named `key=value`, e.g.
/// `audits/scenario=design-audit/building_type=hotel/lobby.md` gives
/// `scenario` and `building_type` (keys are lowercase ASCII letters, digits
/// and `_`, starting with a letter; the file's own name never counts). A
/// document's own metadata and `--meta` win over them.
pub fn path_metadata(source: &str) -> Vec<(String, String)> {
    let path = Path::new(source);
    let Some(folders) = path.parent() else {
        return Vec::new();
    };
    folders
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .filter_map(|folder| folder.split_once('='))
        .filter(|(key, value)| {
            let mut chars = key.chars();
            key.len() <= 64
                && chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !value.trim().is_empty()
        })
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn json_document(source: &str, text: &str, default_kind: &str) -> Result<DocumentInput, String> {
    let shape = "expected a JSON object with a \"text\" string or a \"messages\" array";
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("is not valid JSON ({e}); {shape}"))?;
    let Value::Object(object) = value else {
        return Err(format!("is JSON but not an object; {shape}"));
    };
    let kind = match object.get("kind") {
        None => default_kind.to_string(),
        Some(Value::String(k)) => k.clone(),
        Some(_) => return Err("\"kind\" must be a string".into()),
    };
    let metadata = match object.get("metadata") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err("\"metadata\" must be an object".into()),
    };
    let text = match (object.get("text"), object.get("messages")) {
        (Some(Value::String(t)), _) => t.clone(),
        (_, Some(Value::Array(messages))) => {
            let mut lines = Vec::with_capacity(messages.len());
            for (i, message) in messages.iter().enumerate() {
                let field = |names: &[&str]| {
                    names
                        .iter()
                        .find_map(|n| message.get(*n).and_then(Value::as_str))
                };
                let body = field(&["text", "content"]).ok_or_else(|| {
                    format!("message {i} has no \"text\" (or \"content\") string")
                })?;
                match field(&["from", "role", "author"]) {
                    Some(who) => lines.push(format!("{who}: {body}")),
                    None => lines.push(body.to_string()),
                }
            }
            lines.join("\n")
        }
        _ => return Err(shape.into()),
    };
    Ok(DocumentInput {
        source: source.to_string(),
        kind,
        metadata,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_folders_of_the_path_are_metadata() {
        assert_eq!(
            path_metadata(
                "audits/scenario=design-audit/building_type=hotel/report_type=summary/lobby.md"
            ),
            [
                ("scenario".to_string(), "design-audit".to_string()),
                ("building_type".to_string(), "hotel".to_string()),
                ("report_type".to_string(), "summary".to_string()),
            ]
        );
        assert!(
            path_metadata("a=b.txt").is_empty(),
            "the file's own name never counts"
        );
        assert!(path_metadata("Key=x/ =y/k=/1k=z/doc.txt").is_empty());
        assert!(path_metadata("-").is_empty());
    }

    fn doc(ext: &str, text: &[u8]) -> Result<DocumentInput, String> {
        document(
            "t",
            Some(std::ffi::OsStr::new(ext)),
            text.to_vec(),
            "transcript",
            &Map::new(),
        )
    }

    #[test]
    fn plain_text_and_bad_bytes() {
        assert_eq!(doc("txt", b"hello").map(|d| d.text), Ok("hello".into()));
        let err = doc("txt", b"caf\xe9").expect_err("latin1 is not utf-8");
        assert!(err.contains("UTF-8") && err.contains("offset 3"), "{err}");
        assert!(doc("txt", b"  \n ").expect_err("blank").contains("empty"));
        assert!(doc("txt", b"a\0b").expect_err("nul").contains("NUL"));
    }

    #[test]
    fn json_documents_and_chats() {
        let d = doc("json", br#"{"kind":"chat","metadata":{"group":"g"},"messages":[{"from":"customer","text":"hi"},{"role":"agent","content":"hello"}]}"#)
            .expect("valid chat");
        assert_eq!(d.kind, "chat");
        assert_eq!(d.text, "customer: hi\nagent: hello");
        assert_eq!(d.metadata.get("group"), Some(&Value::String("g".into())));
        assert!(
            doc("json", b"[1,2]")
                .expect_err("array")
                .contains("not an object")
        );
        assert!(
            doc("json", b"{\"x\":1}")
                .expect_err("no text")
                .contains("\"text\"")
        );
        assert!(
            doc("json", b"{nope")
                .expect_err("bad json")
                .contains("not valid JSON")
        );
        assert!(
            doc("json", br#"{"text":"x","kind":"bad kind!"}"#)
                .expect_err("kind")
                .contains("kind")
        );
    }

    /// In a directory, only regular files are read; a symlink, a FIFO or a
    /// socket named like a document is skipped with a message naming it (a
    /// FIFO is never opened, so the walk cannot block on it).
    #[test]
    fn a_walk_names_what_it_skips() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.txt"), "hello").expect("write");
        std::os::unix::fs::symlink(dir.path().join("a.txt"), dir.path().join("b.txt"))
            .expect("symlink");
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("c.txt")).expect("symlink");
        nix::unistd::mkfifo(
            &dir.path().join("d.md"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("fifo");
        // Not named like a document: not a document, not a problem.
        nix::unistd::mkfifo(
            &dir.path().join("e.sock"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("fifo");
        let (docs, problems) = collect(&[dir.path().to_path_buf()], "transcript", &Map::new());
        assert_eq!(docs.len(), 1, "{problems:?}");
        let named: Vec<_> = problems
            .iter()
            .map(|p| {
                let file = Path::new(&p.source).file_name().expect("a file name");
                (file.to_string_lossy().into_owned(), p.message.clone())
            })
            .collect();
        assert_eq!(named.len(), 3, "{named:?}");
        assert!(
            named[0].0 == "b.txt" && named[0].1.contains("symbolic link"),
            "{named:?}"
        );
        assert!(
            named[1].0 == "c.txt" && named[1].1.contains("symbolic link"),
            "{named:?}"
        );
        assert!(
            named[2].0 == "d.md" && named[2].1.contains("FIFO"),
            "{named:?}"
        );
    }

    #[test]
    fn meta_pairs() {
        let m = parse_meta(&["group=acme".into(), "a=b=c".into()]).expect("valid");
        assert_eq!(m.get("a"), Some(&Value::String("b=c".into())));
        assert!(parse_meta(&["novalue".into()]).is_err());
        assert!(parse_meta(&["=x".into()]).is_err());
    }
}
