//! What the benchmarks that need PostgreSQL share.

pub use assay_testing::private_server;

/// `cargo test --benches` runs bench binaries to check they start; these
/// need a server and measure nothing then.
pub fn only_listing() -> bool {
    std::env::args().any(|a| a == "--list" || a == "--test")
}
