//! What the benchmarks that need PostgreSQL share.

use std::os::unix::fs::PermissionsExt as _;

use assay::config::EmbeddedConfig;
use assay::db::embedded::EmbeddedPostgres;

/// `cargo test --benches` runs bench binaries to check they start; these
/// need a server and measure nothing then.
pub fn only_listing() -> bool {
    std::env::args().any(|a| a == "--list" || a == "--test")
}

/// A private PostgreSQL in a temporary directory (the directory goes when the
/// returned guard drops, after the server stops).
pub fn private_server() -> (EmbeddedPostgres, tempfile::TempDir) {
    let root = tempfile::tempdir().expect("temp dir");
    // The server may run as `postgres`, which must be able to enter it.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let server = EmbeddedPostgres::start(&EmbeddedConfig {
        data_dir: root.path().join("pg"),
        bin_dir: None,
    })
    .expect("embedded PostgreSQL");
    (server, root)
}
