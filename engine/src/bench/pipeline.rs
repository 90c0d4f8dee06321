//! `assay bench pipeline`: documents per second through the whole pipeline —
//! every loaded plugin, and the run stored — for a corpus repeated to a count.
//!
//! Each repetition is stored as its own document (its source is prefixed
//! `assay-bench-<pid>/<n>/`), so the database does the work it would for new
//! documents; they are deleted afterwards unless asked to keep them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use indicatif::ProgressBar;
use serde::Serialize;

use super::Latency;
use crate::config::Config;
use crate::db::Database;
use crate::pipeline::{Pipeline, input};
use crate::registry::Registry;
use crate::runtime::Runtime;

/// What to measure.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Files or directories of documents (as `assay analyze` takes them).
    pub corpus: Vec<PathBuf>,
    /// Documents to analyse: the corpus repeated (and cut) to this many.
    pub count: usize,
    /// Documents in flight at once.
    pub concurrency: usize,
    /// Keep what was stored instead of deleting it afterwards.
    pub keep: bool,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    /// The PostgreSQL measured against.
    pub server: String,
    /// Plugins that ran.
    pub plugins: Vec<String>,
    /// Distinct documents in the corpus.
    pub corpus_documents: usize,
    /// Documents analysed and stored.
    pub documents: u64,
    /// Documents that could not be stored.
    pub failed_documents: u64,
    /// Plugin calls that failed (their runs were stored as partial).
    pub failed_calls: u64,
    /// Findings stored.
    pub findings: u64,
    /// Documents in flight at once.
    pub concurrency: usize,
    /// Wall-clock time.
    pub seconds: f64,
    /// Stored documents per second.
    pub documents_per_s: f64,
    /// Stored findings per second.
    pub findings_per_s: f64,
    /// Findings per stored document, on average.
    pub findings_per_run: f64,
    /// The time the runs' store transactions took, added up (with several
    /// documents in flight they overlap, so this can exceed `seconds`).
    pub storing_seconds: f64,
    /// Findings over `storing_seconds`: how fast one store transaction puts
    /// findings away, apart from the plugins' time — the figure the
    /// `store_findings` database benchmark measures.
    pub findings_per_storing_s: f64,
    /// Per document, from start to stored.
    pub latency: Latency,
    /// Whether the stored documents were kept.
    pub kept: bool,
}

/// Runs the benchmark over the engine's loaded plugins.
pub async fn run(
    db: &Arc<Database>,
    runtime: &Arc<Runtime>,
    registry: Arc<Registry>,
    config: &Config,
    settings: &PipelineSettings,
    progress: &ProgressBar,
    interrupted: impl Future<Output = ()>,
) -> anyhow::Result<PipelineReport> {
    tokio::pin!(interrupted);
    let (corpus, problems) = input::collect(&settings.corpus, "transcript", &Default::default());
    if corpus.is_empty() {
        bail!(
            "the corpus has no documents ({} inputs could not be used)",
            problems.len()
        );
    }
    if registry.plugins().is_empty() {
        bail!("no plugins are loaded");
    }
    let prefix = format!("assay-bench-{}/", std::process::id());
    // Made as they are taken, so that a large count holds no more than
    // `concurrency` documents at once.
    let documents = (0..settings.count).map(|n| {
        let mut doc = corpus[n % corpus.len()].clone();
        doc.source = format!("{prefix}{}/{}", n / corpus.len(), doc.source);
        doc
    });
    let concurrency = settings.concurrency.max(1);
    let mut config = config.clone();
    config.pipeline.max_in_flight = config.pipeline.max_in_flight.max(concurrency);
    let plugins = registry
        .plugins()
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    let pipeline = Pipeline::new(Arc::clone(runtime), registry, Arc::clone(db), &config);

    let started = Instant::now();
    let mut runs = futures::stream::iter(documents)
        .map(|doc| {
            let pipeline = pipeline.clone();
            async move {
                let doc_started = Instant::now();
                let result = pipeline.run(doc).await;
                (doc_started.elapsed(), result)
            }
        })
        .buffer_unordered(concurrency);
    let mut samples: Vec<Duration> = Vec::new();
    let (mut stored, mut failed, mut failed_calls, mut findings) = (0u64, 0u64, 0u64, 0u64);
    let mut storing = Duration::ZERO;
    let mut first_error = None;
    let mut stopped = false;
    loop {
        let (elapsed, result) = tokio::select! {
            next = runs.next() => match next {
                Some(next) => next,
                None => break,
            },
            () = &mut interrupted => {
                // The runs in flight are dropped, so rolled back.
                stopped = true;
                break;
            }
        };
        samples.push(elapsed);
        match result {
            Ok(report) => {
                stored += 1;
                findings += report.findings.len() as u64;
                storing += report.stored_in;
                failed_calls += report.failures().count() as u64;
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
        progress.inc(1);
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(runs);

    if !settings.keep {
        let conn = db.connection().await?;
        conn.execute(
            "DELETE FROM assay.documents WHERE starts_with(source, $1)",
            &[&prefix],
        )
        .await
        .context("deleting the benchmark's documents")?;
    }
    if stopped {
        bail!(
            "interrupted after {stored} documents; {}",
            if settings.keep {
                "those stored are kept (--keep)"
            } else {
                "those stored are deleted again"
            }
        );
    }
    if stored == 0 {
        bail!(
            "no document could be stored: {}",
            first_error.unwrap_or_default()
        );
    }
    Ok(PipelineReport {
        server: format!("{} (PostgreSQL {})", db.target, db.server_version),
        plugins,
        corpus_documents: corpus.len(),
        documents: stored,
        failed_documents: failed,
        failed_calls,
        findings,
        concurrency,
        seconds,
        documents_per_s: stored as f64 / seconds.max(f64::EPSILON),
        findings_per_s: findings as f64 / seconds.max(f64::EPSILON),
        findings_per_run: findings as f64 / stored as f64,
        storing_seconds: storing.as_secs_f64(),
        findings_per_storing_s: findings as f64 / storing.as_secs_f64().max(f64::EPSILON),
        latency: Latency::of(&mut samples),
        kept: settings.keep,
    })
}
