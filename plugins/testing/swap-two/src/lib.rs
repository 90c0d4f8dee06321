//! One of two versions of the same analysis plugin (`swapper`), used by the
//! swap-under-load test. `swap-one` and `swap-two` differ only in `VERSION` and
//! `LABEL`, so a test can tell from a finding which version answered a call.

const VERSION: &str = "2.0.0";
const LABEL: &str = "swap:v2";

include!("../../swap-one/src/swapper.rs");
