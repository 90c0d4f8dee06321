//! Reading the plugin directory without trusting what is in it.
//!
//! Anyone who can write the plugin directory can put anything there: a FIFO
//! (whose `open` blocks until a writer appears), a device (`/dev/zero` never
//! ends), a sparse file of many gigabytes, a directory named `x.wasm`, a
//! symlink to any of these. So only regular files (or symlinks to them) are
//! ever opened, opened without blocking, and read up to
//! `plugins.max_component_bytes`; everything else is refused with what it is.
//! Reads run on a blocking thread under a deadline, so even a file on a stalled
//! file system delays nothing but itself.

use std::collections::BTreeMap;
use std::fs::OpenOptions;

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fsread::FileError;

/// Longest one plugin file may take to read before it is given up on (a
/// regular file on a healthy disk takes milliseconds).
pub const READ_DEADLINE: Duration = Duration::from_secs(10);

/// Why a plugin file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It is not there (removed, or a symlink to nothing).
    #[error("no such file (removed, or a symlink pointing nowhere)")]
    Missing,
    /// It is not a regular file.
    #[error("is {0}, not a regular file; only regular files (or symlinks to them) are loaded")]
    NotRegular(&'static str),
    /// It is larger than allowed.
    #[error(
        "is {size} bytes; plugin files are limited to {max} bytes (plugins.max_component_bytes)"
    )]
    TooLarge {
        /// Its size, or what was read before giving up.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Reading failed.
    #[error("cannot read the file: {0}")]
    Io(std::io::Error),
    /// A precompiled artifact: native code, never loaded.
    #[error("{}", PRECOMPILED_REFUSED)]
    Precompiled,
    /// Reading did not finish in time.
    #[error(
        "reading it took longer than {} s; is it on a stalled file system?",
        READ_DEADLINE.as_secs()
    )]
    Stalled,
}

/// Why a precompiled artifact in the plugin directory is refused.
pub const PRECOMPILED_REFUSED: &str = "precompiled artifacts (.cwasm) are never loaded: they are native code \
     that would run unchecked; place the .wasm component instead";

/// Reads a plugin file: a regular file of at most `max` bytes. Blocking, but
/// never on the file's account: see the module docs and [`crate::fsread`].
pub fn read_component(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    crate::fsread::read_regular(path, max).map_err(|e| match e {
        FileError::Missing => ReadError::Missing,
        FileError::NotRegular(what) => ReadError::NotRegular(what),
        FileError::TooLarge { size, max } => ReadError::TooLarge { size, max },
        FileError::Io(e) => ReadError::Io(e),
    })
}

/// [`read_component`] on a blocking thread, given up after [`READ_DEADLINE`].
pub async fn read_component_async(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let owned: PathBuf = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || read_component(&owned, max));
    match tokio::time::timeout(READ_DEADLINE, read).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(ReadError::Io(std::io::Error::other(join.to_string()))),
        // The thread stays stuck in its read; nothing waits for it.
        Err(_) => Err(ReadError::Stalled),
    }
}

/// Puts `bytes` at `target` (in the plugin directory `dir`) atomically: written
/// to a new file of a random name there, then renamed over `target`. The
/// scratch file is created exclusively and never through a symlink, so
/// nothing planted in the directory (a symlink to a file elsewhere, a FIFO
/// under a name the engine would use) can redirect or stall the write; the
/// rename replaces whatever `target` is (a symlink itself, not what it points
/// to). Blocking.
pub fn write_into(dir: &Path, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let token: u64 = rand::random();
    let scratch = dir.join(format!(".assay-write-{token:016x}"));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&scratch)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&scratch, target));
    if written.is_err() {
        let _ = std::fs::remove_file(&scratch);
    }
    written
}

/// Whether a directory entry named `name` is a plugin file to look at: a
/// `.wasm` component, or a `.cwasm` (listed so that it can be refused).
/// Hidden files are skipped: editors and deploy tools write their temporary
/// copies under such names before renaming them into place.
pub fn is_plugin_file_name(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    !name.starts_with('.') && (name.ends_with(".wasm") || name.ends_with(".cwasm"))
}

/// Whether `path` names a precompiled artifact (refused, never read).
pub fn is_precompiled(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "cwasm")
}

/// The plugin directory, created if missing, as an absolute path with every
/// symlink resolved: the one spelling of it that the registry, the watcher
/// (which reports absolute paths) and rollback all agree on, whatever the
/// configuration says (`.assay/plugins` by default, relative to the working
/// directory).
pub fn resolve_dir(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::fs::canonicalize(dir)
}

/// Plugin files of the (resolved) directory, sorted, whatever their type:
/// anything that is not a regular file is refused when read, with the reason.
pub fn plugin_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if is_plugin_file_name(&entry.file_name()) {
            files.push(dir.join(entry.file_name()));
        }
    }
    files.sort();
    Ok(files)
}

/// What tells one version of a file from another without reading it.
pub type Fingerprint = (u64, i64, i64, u64, u64);

/// `path`'s fingerprint now, if it is there.
pub fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path)
        .or_else(|_| std::fs::symlink_metadata(path))
        .ok()?;
    Some((
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino(),
        meta.dev(),
    ))
}

/// Each plugin file of `dir` and its fingerprint (`stat` only: a FIFO or a
/// device is never opened here).
/// A directory that cannot be listed (moved away, out of descriptors) is
/// an error, never "no files": that would unload every plugin.
pub fn fingerprints(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, Fingerprint>> {
    Ok(plugin_files(dir)?
        .into_iter()
        .filter_map(|path| fingerprint(&path).map(|print| (path, print)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bounded_regular_files_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.wasm");
        std::fs::write(&file, b"0123456789").expect("write");
        assert_eq!(read_component(&file, 10).expect("fits"), b"0123456789");
        assert!(matches!(
            read_component(&file, 9),
            Err(ReadError::TooLarge { size: 10, max: 9 })
        ));
        let sub = dir.path().join("d.wasm");
        std::fs::create_dir(&sub).expect("mkdir");
        assert!(matches!(
            read_component(&sub, 10),
            Err(ReadError::NotRegular("a directory"))
        ));
        let fifo = dir.path().join("f.wasm");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        assert!(matches!(
            read_component(&fifo, 10),
            Err(ReadError::NotRegular("a FIFO (named pipe)"))
        ));
        let zero = dir.path().join("z.wasm");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        assert!(matches!(
            read_component(&zero, 10),
            Err(ReadError::NotRegular("a character device"))
        ));
        let dangling = dir.path().join("gone.wasm");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).expect("symlink");
        assert!(matches!(
            read_component(&dangling, 10),
            Err(ReadError::Missing)
        ));
        let linked = dir.path().join("l.wasm");
        std::os::unix::fs::symlink(&file, &linked).expect("symlink");
        assert_eq!(
            read_component(&linked, 10).expect("a symlink to a file"),
            b"0123456789"
        );
    }

    #[test]
    fn names_that_are_looked_at() {
        for (name, wanted) in [
            ("a.wasm", true),
            ("a.cwasm", true),
            (".a.wasm", false),
            ("a.wasm~", false),
            ("a.wasm.partial", false),
            ("a.txt", false),
        ] {
            assert_eq!(is_plugin_file_name(name.as_ref()), wanted, "{name}");
        }
    }
}
