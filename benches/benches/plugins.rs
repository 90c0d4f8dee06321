//! The runtime's cost, each beside the same work done natively in the same
//! group:
//!
//! - `call_overhead`: instantiate + `describe` + drop of a trivial plugin, and
//!   instantiate + `analyze` (+ drop) of it, beside calling the same Rust
//!   functions directly; and `analyze` in a reused instance (opt-in
//!   `reuse_instances`), reported apart;
//! - `keywords`, `sentiment`, `redact`: each bundled plugin's entry point on
//!   documents of 1 KB, 16 KB and 256 KB through the runtime (a fresh instance
//!   per call, as the engine runs it) beside the same crate compiled natively;
//! - `load`: a component compiled cold beside loaded from the compile cache.
//!
//! `history` is not here: its work is its SQL (see the `database` bench).
//!
//! `cargo bench -p assay-benches --bench plugins`

use std::sync::Arc;

use assay::capability::{self, HostLinker, HostState, Plugin};
use assay::config::Config;
use assay::runtime::Runtime;
use assay::runtime::call::{CallCore, CallLimits};
use assay::runtime::limits::Reuse;
use assay::runtime::plugin::{Document, PluginIdentity};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn document_of(bytes: usize) -> String {
    let sample = include_str!("../../examples/transcripts/northwind-billing-dispute.txt");
    sample.chars().cycle().take(bytes).collect()
}

/// Bytes of a component: a test plugin's from `assay-test-artifacts`, a
/// bundled plugin's from the engine's build.
fn component(file: &str) -> Vec<u8> {
    let path = assay_test_artifacts::path(file).map_or_else(
        || std::path::Path::new(assay::bundled::BUILT_PLUGIN_DIR).join(file),
        std::path::Path::to_path_buf,
    );
    std::fs::read(path).expect("the plugins are built with the engine and the test artifacts")
}

fn host_document(text: &str) -> Document {
    Document {
        id: "00000000-0000-0000-0000-000000000000".into(),
        kind: "transcript".into(),
        text: text.to_string(),
        metadata: "{}".into(),
    }
}

struct Bench {
    rt: tokio::runtime::Runtime,
    runtime: Arc<Runtime>,
    linker: HostLinker,
    limits: CallLimits,
}

impl Bench {
    fn new() -> Self {
        let config = Config::default();
        let runtime = Arc::new(Runtime::new(&config, None).expect("wasmtime runtime"));
        Self {
            rt: tokio::runtime::Runtime::new().expect("tokio runtime"),
            linker: capability::linker(&runtime).expect("link"),
            runtime,
            limits: CallLimits::from_config(&config.limits),
        }
    }

    fn load(&self, file: &str) -> Plugin {
        self.rt
            .block_on(capability::load(
                &self.runtime,
                &self.linker,
                component(file),
                &self.limits,
            ))
            .expect("load plugin")
    }

    /// One call as the engine makes it (these plugins make no SQL calls, so no
    /// database is involved or measured).
    async fn call(&self, plugin: &Plugin, doc: &Document) {
        capability::call_detached(&self.runtime, plugin, &self.limits, doc.clone())
            .await
            .expect("the call succeeds");
    }
}

fn call_overhead(c: &mut Criterion) {
    use assay_plugin::analyzer::Guest as _;
    let bench = Bench::new();
    let plugin = bench.load("trivial.wasm");
    let text = document_of(1024);
    let doc = host_document(&text);
    let native_doc = assay_plugin::types::Document {
        id: doc.id.clone(),
        kind: doc.kind.clone(),
        text: text.clone(),
        metadata: doc.metadata.clone(),
    };

    let mut group = c.benchmark_group("call_overhead");
    group.bench_function("describe/native", |b| b.iter(trivial::Trivial::describe));
    group.bench_function("describe/plugin", |b| {
        b.to_async(&bench.rt).iter(|| async {
            let identity = Arc::new(PluginIdentity {
                name: "trivial".into(),
                version: String::new(),
                sha256: String::new(),
            });
            let core = CallCore::new(&bench.runtime, identity, &bench.limits);
            let mut store = bench.runtime.new_store(HostState::detached(core));
            plugin.code.describe(&mut store).await.expect("describe")
        })
    });
    group.bench_function("analyze/native", |b| {
        b.iter(|| trivial::Trivial::analyze(native_doc.clone()))
    });
    group.bench_function("analyze/plugin", |b| {
        b.to_async(&bench.rt).iter(|| bench.call(&plugin, &doc))
    });
    // Opt-in instance reuse: the instance an earlier call left, no new one.
    let reusing = Bench {
        limits: CallLimits {
            reuse: Reuse::when(true, u32::MAX),
            ..bench.limits.clone()
        },
        ..Bench::new()
    };
    let warm_plugin = reusing.load("trivial.wasm");
    group.bench_function("analyze/plugin-reused", |b| {
        b.to_async(&reusing.rt)
            .iter(|| reusing.call(&warm_plugin, &doc))
    });
    group.finish();
}

/// `native` runs the plugin crate's own entry point, compiled for this machine.
fn per_plugin(c: &mut Criterion, name: &str, file: &str, native: impl Fn(&str) -> usize) {
    let bench = Bench::new();
    let plugin = bench.load(file);
    let mut group = c.benchmark_group(name);
    for size in [1024, 16 * 1024, 256 * 1024] {
        let text = document_of(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("native", size), &text, |b, text| {
            b.iter(|| native(text))
        });
        let doc = host_document(&text);
        group.bench_with_input(BenchmarkId::new("plugin", size), &doc, |b, doc| {
            b.to_async(&bench.rt).iter(|| bench.call(&plugin, doc))
        });
    }
    group.finish();
}

/// Calls a plugin crate's own entry point natively on `text`; the number of
/// findings it returned, so nothing is optimised away.
macro_rules! native_entry {
    ($krate:ident, $plugin:ident, $world:ident, $entry:ident, $findings:expr) => {
        |text: &str| {
            use assay_plugin::$world::Guest as _;
            $krate::$plugin::$entry(assay_plugin::types::Document {
                id: String::new(),
                kind: "transcript".into(),
                text: text.to_string(),
                metadata: "{}".into(),
            })
            .map($findings)
            .unwrap_or(0)
        }
    };
}

fn keywords(c: &mut Criterion) {
    let native = native_entry!(keywords, Keywords, analyzer, analyze, |f| f.len());
    per_plugin(c, "keywords", "keywords.wasm", native);
}

fn sentiment(c: &mut Criterion) {
    let native = native_entry!(sentiment, Sentiment, analyzer, analyze, |f| f.len());
    per_plugin(c, "sentiment", "sentiment.wasm", native);
}

fn redact(c: &mut Criterion) {
    let native = native_entry!(redact, Redact, prompt, process, |p| p.findings.len());
    per_plugin(c, "redact", "redact.wasm", native);
}

fn load(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let config = Config::default();
    let limits = CallLimits::from_config(&config.limits);
    let cold = Arc::new(Runtime::new(&config, None).expect("runtime"));
    let cache = tempfile::tempdir().expect("cache dir");
    let cached = Arc::new(Runtime::new(&config, Some(cache.path())).expect("runtime"));
    let bytes = component("keywords.wasm");
    let cold_linker = capability::linker(&cold).expect("link");
    let cached_linker = capability::linker(&cached).expect("link");
    // Fill the cache once.
    rt.block_on(capability::load(
        &cached,
        &cached_linker,
        bytes.clone(),
        &limits,
    ))
    .expect("load");

    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.bench_function("keywords/compile_cold", |b| {
        b.to_async(&rt)
            .iter(|| capability::load(&cold, &cold_linker, bytes.clone(), &limits))
    });
    group.bench_function("keywords/compile_cache", |b| {
        b.to_async(&rt)
            .iter(|| capability::load(&cached, &cached_linker, bytes.clone(), &limits))
    });
    group.finish();
}

criterion_group!(benches, call_overhead, keywords, sentiment, redact, load);
criterion_main!(benches);
