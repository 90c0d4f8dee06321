//! The plugins only tests and benchmarks use, built as WebAssembly components
//! by this crate's build script: the misbehaving (`faulty`, `bad-describe`),
//! the hostile (`attacker`), the versioned (`swap-one`, `swap-two`,
//! `future-wit`), the least (`trivial`) and one that is not a plugin at all
//! (`not-a-plugin`).
//!
//! Each component's path is a constant named after its crate ([`FAULTY`],
//! [`SWAP_ONE`], …); [`path`] and [`read`] find one by file name. The bundled
//! and tool plugins are not here: the engine builds those itself
//! (`assay::bundled`).
//!
//! Only a dev-dependency: building the engine never builds these.

use std::path::Path;

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// The path of the test component called `file` (e.g. `"faulty.wasm"`), or
/// `None` if no test plugin builds a component of that name.
pub fn path(file: &str) -> Option<&'static Path> {
    ALL.iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, _, path)| Path::new(*path))
}

/// The bytes of the test component called `file` (e.g. `"faulty.wasm"`).
///
/// An unknown name is a [`NotFound`](std::io::ErrorKind::NotFound) error.
pub fn read(file: &str) -> std::io::Result<Vec<u8>> {
    let path = path(file).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no test plugin builds a component named {file}"),
        )
    })?;
    std::fs::read(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_is_found_by_its_file_name() {
        for (file, _, built) in ALL {
            assert_eq!(path(file), Some(Path::new(built)));
            assert!(read(file).is_ok_and(|bytes| bytes.starts_with(b"\0asm")));
        }
        assert_eq!(path("keywords.wasm"), None);
        assert!(read("keywords.wasm").is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound));
    }
}
