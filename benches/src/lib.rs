//! criterion benchmarks of assay; each group measures the plugin path beside
//! the same work done natively, in the same run. Run with `cargo bench -p assay-benches`.
