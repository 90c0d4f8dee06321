//! Reading a file someone else may have planted, without trusting it.
//!
//! Whoever can write a directory the engine reads (plugins, a prompt tree)
//! can put anything there: a FIFO (whose `open` blocks until a writer
//! appears), a device (`/dev/zero` never ends), a sparse file of many
//! gigabytes, a directory named like a file. So only regular files are
//! opened, opened without blocking, and read up to a limit; anything else is
//! refused with what it is.

use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It is not there (removed, or a symlink to nothing).
    #[error("no such file (removed, or a symlink pointing nowhere)")]
    Missing,
    /// It is not a regular file.
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    /// It is larger than allowed.
    #[error("is {size} bytes; at most {max} are read")]
    TooLarge {
        /// Its size, or what was read before giving up.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Reading failed.
    #[error("cannot read the file: {0}")]
    Io(std::io::Error),
}

/// What kind of non-regular file `file_type` is, in words.
pub fn describe(file_type: FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn check(meta: &Metadata, max: u64) -> Result<(), FileError> {
    if !meta.is_file() {
        return Err(FileError::NotRegular(describe(meta.file_type())));
    }
    if meta.len() > max {
        return Err(FileError::TooLarge {
            size: meta.len(),
            max,
        });
    }
    Ok(())
}

/// Whether `path` (following symlinks) is a regular file of at most `max`
/// bytes, for a reader that opens it itself; it is not opened.
pub fn check_regular(path: &Path, max: u64) -> Result<(), FileError> {
    check(&std::fs::metadata(path).map_err(io_error)?, max)
}

/// A failed look or read: the file gone, or why it could not be read.
fn io_error(e: std::io::Error) -> FileError {
    match e.kind() {
        std::io::ErrorKind::NotFound => FileError::Missing,
        _ => FileError::Io(e),
    }
}

/// Reads `path` (following symlinks) if it is a regular file of at most
/// `max` bytes. Blocking, but never on the file's account.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    // Looked at before opening: a FIFO or a device is never opened at all.
    check_regular(path, max)?;
    // O_NONBLOCK: should the path be swapped for a FIFO between the look and
    // the open, the open still returns at once (and the check below refuses it).
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io_error)?;
    let meta = file.metadata().map_err(io_error)?;
    check(&meta, max)?;
    // Bounded even if the file grows while it is read.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge {
            size: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
}
