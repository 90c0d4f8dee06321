//! A bundled plugin's `analyze` through the runtime (fresh instance per call,
//! as the engine runs it) beside the same logic compiled natively.
//!
//! `cargo bench -p assay-benches --bench plugins`

use std::sync::Arc;

use assay::capability::sql::{SqlCaps, SqlSession};
use assay::config::LimitsConfig;
use assay::runtime::Runtime;
use assay::runtime::bindings::types::Document;
use assay::runtime::call::{CallLimits, invoke};
use assay::runtime::loader;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn document_of(bytes: usize) -> String {
    let sample = include_str!("../../examples/transcripts/northwind-billing-dispute.txt");
    sample.chars().cycle().take(bytes).collect()
}

fn keywords(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let runtime = Arc::new(Runtime::new().expect("wasmtime runtime"));
    let limits = CallLimits::from_config(&LimitsConfig::default());
    let bytes = assay::bundled::BUNDLED
        .iter()
        .find(|(name, _)| *name == "keywords.wasm")
        .expect("keywords is bundled")
        .1
        .to_vec();
    let plugin = rt
        .block_on(loader::load(&runtime, bytes, &limits))
        .expect("load keywords");

    let mut group = c.benchmark_group("keywords");
    for size in [1024, 16 * 1024, 256 * 1024] {
        let text = document_of(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("native", size), &text, |b, text| {
            b.iter(|| keywords::extract::extract(text, 15))
        });
        let doc = Document {
            id: "00000000-0000-0000-0000-000000000000".into(),
            kind: "transcript".into(),
            text: text.clone(),
            metadata: "{}".into(),
        };
        group.bench_with_input(BenchmarkId::new("plugin", size), &doc, |b, doc| {
            b.to_async(&rt).iter(|| async {
                // `keywords` makes no SQL calls: no database is needed, and none is measured.
                let session = SqlSession::new(None, SqlCaps::default());
                invoke(&runtime, &plugin, session, &limits, doc.clone())
                    .await
                    .expect("keywords succeeds")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, keywords);
criterion_main!(benches);
