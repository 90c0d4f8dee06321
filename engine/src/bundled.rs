//! The example plugins built into the binary by `build.rs` from `plugins/`.

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
