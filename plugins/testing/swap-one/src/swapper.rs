// The body shared by swap-one and swap-two; each defines VERSION and LABEL
// and includes this file.

use assay_plugin::types::Stage;
use assay_plugin::analyzer::{Document, Finding, Guest, Manifest, PluginError};

/// The plugin.
pub struct Swapper;

impl Guest for Swapper {
    fn describe() -> Manifest {
        Manifest {
            name: "swapper".into(),
            version: VERSION.into(),
            description: "test plugin for hot swaps".into(),
            stage: Stage::Analysis,
            priority: 0,
            kinds: vec!["swap".into()],
            triggers: vec![],
            migrations: vec![],
        }
    }

    fn analyze(doc: Document) -> Result<Vec<Finding>, PluginError> {
        // A little real work so that a call takes some time.
        let mut sum: u64 = 0;
        for _ in 0..200 {
            for &b in std::hint::black_box(doc.text.as_bytes()) {
                sum = sum.wrapping_mul(31).wrapping_add(u64::from(b));
            }
            sum = std::hint::black_box(sum);
        }
        std::hint::black_box(sum);
        Ok((0..5)
            .map(|i| Finding {
                label: LABEL.into(),
                score: Some(f64::from(i)),
                span: None,
                data: "{}".into(),
            })
            .collect())
    }
}

assay_plugin::export_analyzer!(Swapper);
