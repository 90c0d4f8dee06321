//! Staged execution of plugins over one document.
//!
//! Prompt-stage plugins transform the document one after another in priority
//! order, each seeing the previous one's output. Analysis plugins then run
//! concurrently on the result. A plugin runs only for the kinds and trigger
//! patterns its manifest names. The whole run — document, run, what each plugin
//! did, every finding — is then stored in one transaction.
//!
//! If a prompt-stage plugin fails, the analysis stage is skipped for that
//! document: analysis must never see text a prompt plugin (say, `redact`) was
//! supposed to transform but did not.

pub mod admission;
pub mod failures;
pub mod input;
pub mod provenance;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use uuid::Uuid;

use crate::db::{Database, DbError};
use arc_swap::ArcSwap;

use crate::registry::{RegisteredPlugin, Registry};
use crate::runtime::Runtime;
use crate::runtime::call::{CallContext, CallFailure, CallLimits};
use crate::runtime::failure::FailureKind;
use crate::runtime::loader::stage_name;
use crate::runtime::plugin::{CallOutput, Document, Finding, PluginIdentity, Stage};

pub use input::DocumentInput;

/// Longest finding label accepted.
pub const MAX_LABEL_CHARS: usize = 200;
/// Characters of span text shown as an excerpt.
pub const EXCERPT_CHARS: usize = 60;

/// A finding as stored and reported.
#[derive(Debug, Clone, Serialize)]
pub struct FindingRecord {
    /// Plugin name.
    pub plugin: String,
    /// Plugin version string.
    pub plugin_version: String,
    /// SHA-256 of the plugin component.
    pub plugin_sha256: String,
    /// `prompt` or `analysis`.
    pub stage: &'static str,
    /// Label given by the plugin.
    pub label: String,
    /// Score, if any.
    pub score: Option<f64>,
    /// Byte range in the text the plugin saw (analysis) or produced (prompt).
    pub span: Option<[u32; 2]>,
    /// The span's text, whitespace collapsed and cut to a readable length.
    pub excerpt: Option<String>,
    /// Plugin-defined detail.
    pub data: serde_json::Value,
    /// `assay.plugin_versions.id` of the plugin version that reported it.
    #[serde(skip)]
    pub version_id: i64,
    /// Its position in what the plugin returned.
    #[serde(skip)]
    pub ordinal: i32,
}

/// What became of one plugin in a run (`assay.run_plugins.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It ran and its result was kept.
    Ok,
    /// It ran and failed (see its failure kind).
    Failed,
    /// It did not run (its kinds or triggers did not match, or an earlier
    /// prompt plugin failed).
    Skipped,
}

impl Outcome {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

impl PartialEq<&str> for Outcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run went as a whole (`assay.runs.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// No plugin failed.
    Ok,
    /// Some plugin failed; what the others found is kept.
    Partial,
}

impl RunStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
        }
    }
}

impl PartialEq<&str> for RunStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to one plugin in a run.
#[derive(Debug, Clone, Serialize)]
pub struct PluginOutcome {
    /// Plugin name.
    pub plugin: String,
    /// Plugin version string.
    pub plugin_version: String,
    /// `prompt` or `analysis`.
    pub stage: &'static str,
    /// `ok`, `failed` or `skipped`.
    pub outcome: Outcome,
    /// Failure kind (`trap`, `timeout`, …) when failed.
    pub error_kind: Option<FailureKind>,
    /// What went wrong, or why it was skipped.
    pub message: Option<String>,
    /// Findings it produced.
    pub findings: usize,
    /// Wall-clock time of the call, microseconds.
    pub duration_us: u64,
    /// What its model requests used (left out of JSON when it made none).
    #[serde(skip_serializing_if = "ModelUsage::is_empty")]
    pub model: ModelUsage,
    /// `assay.plugin_versions.id` of the version that ran.
    #[serde(skip)]
    pub version_id: i64,
}

impl PluginOutcome {
    /// With the model usage of `plugin`'s call in run `run`.
    /// A call that failed after a completion found no model server
    /// configured is recorded as skipped, with what to set.
    fn with_model_usage(mut self, plugin: &RegisteredPlugin, run: Uuid) -> Self {
        let used = plugin.capabilities.inference.take_run_usage(run);
        self.model = ModelUsage {
            requests: used.requests,
            input_tokens: used.usage.input_tokens,
            output_tokens: used.usage.output_tokens,
            cached_tokens: used.usage.cached_tokens,
        };
        if used.no_backend && self.outcome == Outcome::Failed {
            self.outcome = Outcome::Skipped;
            self.error_kind = None;
            self.message = Some(format!(
                "needs a language model: {}",
                crate::capability::inference::NO_BACKEND
            ));
        }
        self
    }
}

/// Model requests of one plugin call, and their tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ModelUsage {
    /// Requests sent to the model server or answered from the cache.
    pub requests: u32,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens the server had cached.
    pub cached_tokens: u64,
}

impl ModelUsage {
    /// Whether no request was made.
    pub fn is_empty(&self) -> bool {
        *self == ModelUsage::default()
    }
}

/// The result of analysing one document.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// `assay.runs.id`.
    pub run_id: Uuid,
    /// `assay.documents.id`.
    pub document_id: Uuid,
    /// Where the document came from.
    pub source: String,
    /// Document kind.
    pub kind: String,
    /// `ok`, or `partial` when some plugin failed.
    pub status: RunStatus,
    /// Every finding, prompt stage first.
    pub findings: Vec<FindingRecord>,
    /// Every plugin's outcome.
    pub plugins: Vec<PluginOutcome>,
    /// The text after the prompt stage.
    #[serde(skip)]
    pub analyzed_text: String,
    /// How long storing the run took (its one transaction), for `assay bench pipeline`.
    #[serde(skip)]
    pub stored_in: Duration,
}

impl RunReport {
    /// Plugins that failed on this document.
    pub fn failures(&self) -> impl Iterator<Item = &PluginOutcome> {
        self.plugins.iter().filter(|p| p.outcome == Outcome::Failed)
    }
}

/// Why a document could not be analysed at all.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Storing the document or its run failed; nothing of the run was stored.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Too many documents are in flight; nothing was done or stored.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The document cannot be stored as given (the caller's mistake, e.g. a
    /// value PostgreSQL refuses); nothing was done or stored.
    #[error("{0}")]
    Rejected(String),
}

/// Why a plugin was skipped when the document is not for it (its manifest's
/// kinds or triggers).
pub const DOES_NOT_APPLY: &str = "kind or triggers do not match";

/// Why [`Pipeline::ask`] has no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The text or kind cannot be used as a document.
    #[error("{0}")]
    Invalid(String),
    /// No plugin of that name is loaded.
    #[error("no plugin named {0} is loaded")]
    NotLoaded(String),
    /// The plugin's call failed.
    #[error("{0} {1}")]
    Failed(String, CallFailure),
}

/// Runs documents through the loaded plugins and stores the results.
#[derive(Debug, Clone)]
pub struct Pipeline {
    runtime: Arc<Runtime>,
    /// Swapped by hot reload; each run reads it once.
    registry: Arc<ArcSwap<Registry>>,
    db: Arc<Database>,
    limits: Arc<crate::config::LimitsConfig>,
    admission: Arc<admission::Admission>,
    failures: Arc<failures::FailureLog>,
    write_timeout: Duration,
    /// `assay analyze --no-cache`: capabilities answer nothing from caches.
    no_cache: bool,
}

impl Pipeline {
    /// A pipeline over a fixed set of plugins. `config` gives the limits,
    /// admission and write timeout; what each plugin's SQL may do was
    /// resolved when it was registered (see `capability::sql::settings`).
    pub fn new(
        runtime: Arc<Runtime>,
        registry: Arc<Registry>,
        db: Arc<Database>,
        config: &crate::config::Config,
    ) -> Self {
        Self::live(runtime, Arc::new(ArcSwap::new(registry)), db, config)
    }

    /// A pipeline over a plugin set that may be swapped while it runs (hot reload).
    pub fn live(
        runtime: Arc<Runtime>,
        registry: Arc<ArcSwap<Registry>>,
        db: Arc<Database>,
        config: &crate::config::Config,
    ) -> Self {
        Self {
            runtime,
            registry,
            db,
            limits: Arc::new(config.limits.clone()),
            admission: Arc::new(admission::Admission::new(config)),
            failures: Arc::default(),
            write_timeout: Duration::from_millis(config.database.write_timeout_ms),
            no_cache: false,
        }
    }

    /// With `bypass` set, plugin calls answer nothing from caches (the
    /// inference cache): every model request goes to the model.
    pub fn bypass_caches(mut self, bypass: bool) -> Self {
        self.no_cache = bypass;
        self
    }

    /// Failures seen by this pipeline, by plugin and kind.
    pub fn failures(&self) -> &failures::FailureLog {
        &self.failures
    }

    /// Seconds an overloaded caller should wait before retrying.
    pub fn retry_after_s(&self) -> u64 {
        self.admission.retry_after_s()
    }

    /// The plugins new runs use.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    /// Analyses one document and stores the run.
    pub async fn run(&self, input: DocumentInput) -> Result<RunReport, PipelineError> {
        input
            .validate()
            .map_err(|e| PipelineError::Rejected(e.to_string()))?;
        let _turn = self
            .admission
            .document()
            .await
            .map_err(|admission::Overloaded(m)| {
                self.failures.record(failures::ENGINE, "overloaded", &m);
                PipelineError::Overloaded(m)
            })?;
        let report = self.run_admitted(input).await;
        if let Err(PipelineError::Db(e)) = &report {
            self.failures
                .record(failures::ENGINE, "database", &e.to_string());
        }
        report
    }

    /// Calls one analysis plugin with a text that is not stored: no document,
    /// no run, no findings kept (what `assay search` does with `similar`).
    /// The call runs under the plugin's limits and admission like any other;
    /// whatever it writes in its own schema is kept as in a run.
    pub async fn ask(
        &self,
        plugin: &str,
        kind: &str,
        text: &str,
    ) -> Result<Vec<FindingRecord>, AskError> {
        let registry = self.registry.load_full();
        let plugin = registry
            .get(plugin)
            .ok_or_else(|| AskError::NotLoaded(plugin.to_string()))?;
        // Held to what a stored document is held to (size, NUL, kind).
        let as_input = DocumentInput {
            source: "question".into(),
            kind: kind.into(),
            metadata: Default::default(),
            text: text.into(),
        };
        as_input
            .validate()
            .map_err(|input::InvalidDocument(why)| AskError::Invalid(why))?;
        let limits = CallLimits::for_plugin(&self.limits, plugin.name());
        let doc = Document {
            id: Uuid::new_v4().to_string(),
            kind: kind.into(),
            text: text.into(),
            metadata: "{}".into(),
        };
        let context = CallContext {
            run: None,
            no_cache: self.no_cache,
        };
        let failed = |e: CallFailure| AskError::Failed(plugin.name().to_string(), e);
        match self
            .call(plugin, &limits, context, doc)
            .await
            .map_err(failed)?
        {
            CallOutput::Findings(found) => {
                finding_records(plugin, Stage::Analysis, found, text, &limits).map_err(failed)
            }
            CallOutput::Processed(..) => Err(failed(CallFailure::InvalidOutput(
                "a prompt-stage plugin cannot answer a question".into(),
            ))),
        }
    }

    async fn run_admitted(&self, input: DocumentInput) -> Result<RunReport, PipelineError> {
        let started_at = SystemTime::now();
        // The run's id is chosen now, so that what its calls record (model
        // requests) names it before it is stored.
        let run_id = Uuid::new_v4();
        let context = CallContext {
            run: Some(run_id),
            no_cache: self.no_cache,
        };
        // One snapshot for the whole run: a swap while it runs does not mix versions.
        let registry = self.registry.load_full();
        let document_id = self
            .bounded_write(store::document_id(&self.db, &input))
            .await
            .map_err(classify_store_error)?;
        let mut doc = Document {
            id: document_id.to_string(),
            kind: input.kind.clone(),
            text: input.text.clone(),
            metadata: serde_json::Value::Object(input.metadata.clone()).to_string(),
        };
        let mut findings = Vec::new();
        let mut outcomes = Vec::new();
        let mut prompt_failed = false;

        for plugin in registry.stage(Stage::Prompt) {
            if prompt_failed {
                outcomes.push(skipped(plugin, "an earlier prompt-stage plugin failed"));
                continue;
            }
            if !plugin.loaded.applies_to(&doc.kind, &doc.text) {
                outcomes.push(skipped(plugin, DOES_NOT_APPLY));
                continue;
            }
            let started = Instant::now();
            let limits = CallLimits::for_plugin(&self.limits, plugin.name());
            let result = self
                .call(plugin, &limits, context, doc.clone())
                .await
                .and_then(|out| match out {
                    CallOutput::Processed(next, found) => {
                        provenance::check(plugin, context.run, &found)?;
                        let next = checked_document(next, &doc)?;
                        let records =
                            finding_records(plugin, Stage::Prompt, found, &next.text, &limits)?;
                        Ok((next, records))
                    }
                    CallOutput::Findings(_) => Err(CallFailure::InvalidOutput(
                        "a prompt plugin returned findings only".into(),
                    )),
                });
            match result {
                Ok((next, records)) => {
                    outcomes.push(
                        ran(plugin, records.len(), started.elapsed())
                            .with_model_usage(plugin, run_id),
                    );
                    findings.extend(records);
                    doc = next;
                }
                Err(failure) => {
                    prompt_failed = true;
                    outcomes.push(
                        failed(plugin, &failure, started.elapsed())
                            .with_model_usage(plugin, run_id),
                    );
                }
            }
        }

        let mut tasks = tokio::task::JoinSet::new();
        for plugin in registry.stage(Stage::Analysis) {
            if prompt_failed {
                outcomes.push(skipped(
                    plugin,
                    "a prompt-stage plugin failed, so the text was not prepared",
                ));
                continue;
            }
            if !plugin.loaded.applies_to(&doc.kind, &doc.text) {
                outcomes.push(skipped(plugin, DOES_NOT_APPLY));
                continue;
            }
            let this = self.clone();
            let plugin = Arc::clone(plugin);
            let doc = doc.clone();
            tasks.spawn(async move {
                let started = Instant::now();
                let limits = CallLimits::for_plugin(&this.limits, plugin.name());
                let result = this
                    .call(&plugin, &limits, context, doc.clone())
                    .await
                    .and_then(|out| match out {
                        CallOutput::Findings(found) => {
                            provenance::check(&plugin, context.run, &found)?;
                            finding_records(&plugin, Stage::Analysis, found, &doc.text, &limits)
                        }
                        CallOutput::Processed(..) => Err(CallFailure::InvalidOutput(
                            "an analysis plugin returned a document".into(),
                        )),
                    });
                (plugin, result, started.elapsed())
            });
        }
        let mut analysis = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(done) => analysis.push(done),
                // A panic in the host task is a host bug; surface it rather than hide it.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        // Concurrent completion order is arbitrary; report in registry order.
        analysis.sort_by(|a, b| a.0.name().cmp(b.0.name()));
        for (plugin, result, elapsed) in analysis {
            let outcome = match result {
                Ok(records) => {
                    let outcome = ran(&plugin, records.len(), elapsed);
                    findings.extend(records);
                    outcome
                }
                Err(failure) => failed(&plugin, &failure, elapsed),
            };
            outcomes.push(outcome.with_model_usage(&plugin, run_id));
        }

        for failure in outcomes.iter().filter(|o| o.outcome == Outcome::Failed) {
            self.failures.record(
                &failure.plugin,
                failure.error_kind.unwrap_or(FailureKind::Failed).as_str(),
                failure.message.as_deref().unwrap_or(""),
            );
        }
        let status = if outcomes.iter().any(|o| o.outcome == Outcome::Failed) {
            RunStatus::Partial
        } else {
            RunStatus::Ok
        };
        let mut report = RunReport {
            run_id,
            document_id,
            source: input.source.clone(),
            kind: input.kind.clone(),
            status,
            findings,
            plugins: outcomes,
            analyzed_text: doc.text,
            stored_in: Duration::ZERO,
        };
        let storing = Instant::now();
        report.run_id = self
            .bounded_write(store::store_run(
                &self.db,
                &input,
                &report,
                started_at,
                SystemTime::now(),
            ))
            .await
            .map_err(classify_store_error)?;
        report.stored_in = storing.elapsed();
        Ok(report)
    }

    /// A write of the engine's, given up after `database.write_timeout_ms`.
    /// Given up, its connection is dropped with the transaction open, so the
    /// server rolls it back: nothing half-written is kept.
    async fn bounded_write<T>(
        &self,
        write: impl std::future::Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        tokio::time::timeout(self.write_timeout, write)
            .await
            .unwrap_or_else(|_| {
                Err(DbError::Unavailable {
                    target: self.db.target.clone(),
                    message: format!(
                        "no answer within {} ms (database.write_timeout_ms)",
                        self.write_timeout.as_millis()
                    ),
                })
            })
    }

    async fn call(
        &self,
        plugin: &RegisteredPlugin,
        limits: &CallLimits,
        context: CallContext,
        doc: Document,
    ) -> Result<CallOutput, CallFailure> {
        let _turn = self
            .admission
            .call(plugin.name(), limits)
            .await
            .map_err(|admission::Overloaded(m)| CallFailure::Overloaded(m))?;
        plugin.call(&self.runtime, limits, context, doc).await
    }
}

/// A write the server refused because of what was written (a data exception,
/// SQLSTATE class 22, or a value past a server limit, class 54) is the
/// caller's mistake, not the engine's: say so, so that a client does not retry
/// it forever. Documents are validated before they run, so this is the
/// fallback for what the validation does not foresee.
fn classify_store_error(e: DbError) -> PipelineError {
    if let DbError::Query { cause, .. } = &e
        && let Some(code) = cause.code()
        && (code.code().starts_with("22") || code.code().starts_with("54"))
    {
        return PipelineError::Rejected(format!("the document cannot be stored as given: {e}"));
    }
    PipelineError::Db(e)
}

fn identity_fields(plugin: &RegisteredPlugin) -> (&PluginIdentity, &'static str) {
    (
        &plugin.loaded.identity,
        stage_name(plugin.loaded.manifest.stage),
    )
}

fn ran(plugin: &RegisteredPlugin, findings: usize, elapsed: Duration) -> PluginOutcome {
    let (id, stage) = identity_fields(plugin);
    PluginOutcome {
        plugin: id.name.clone(),
        plugin_version: id.version.clone(),
        stage,
        outcome: Outcome::Ok,
        error_kind: None,
        message: None,
        findings,
        duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        model: ModelUsage::default(),
        version_id: plugin.version_id,
    }
}

fn failed(plugin: &RegisteredPlugin, failure: &CallFailure, elapsed: Duration) -> PluginOutcome {
    // What a plugin reports goes into the engine's log one line long.
    tracing::warn!(
        plugin = %plugin.name(),
        version = %plugin.loaded.identity.version,
        "{}",
        crate::capability::log::printable(&failure.to_string())
    );
    PluginOutcome {
        outcome: Outcome::Failed,
        error_kind: Some(failure.failure_kind()),
        message: Some(failure.to_string()),
        findings: 0,
        ..ran(plugin, 0, elapsed)
    }
}

fn skipped(plugin: &RegisteredPlugin, why: &str) -> PluginOutcome {
    PluginOutcome {
        outcome: Outcome::Skipped,
        message: Some(why.to_string()),
        ..ran(plugin, 0, Duration::ZERO)
    }
}

/// A prompt plugin's output keeps the document's identity; only text and metadata may change.
fn checked_document(next: Document, before: &Document) -> Result<Document, CallFailure> {
    let metadata: serde_json::Value = serde_json::from_str(&next.metadata).map_err(|e| {
        CallFailure::InvalidOutput(format!("returned metadata that is not JSON: {e}"))
    })?;
    if !metadata.is_object() {
        return Err(CallFailure::InvalidOutput(
            "returned metadata that is not a JSON object".into(),
        ));
    }
    if next.text.contains('\0') {
        return Err(CallFailure::InvalidOutput(
            "returned text containing a NUL character, which cannot be stored".into(),
        ));
    }
    if let Some(path) = input::nul_in_json(&metadata, "metadata") {
        return Err(CallFailure::InvalidOutput(format!(
            "returned {path} containing a NUL character (\\u0000), which cannot be stored"
        )));
    }
    Ok(Document {
        id: before.id.clone(),
        kind: before.kind.clone(),
        text: next.text,
        metadata: next.metadata,
    })
}

/// Checks what a plugin returned and turns it into records.
fn finding_records(
    plugin: &RegisteredPlugin,
    stage: Stage,
    found: Vec<Finding>,
    text: &str,
    limits: &CallLimits,
) -> Result<Vec<FindingRecord>, CallFailure> {
    if found.len() > limits.max_findings {
        return Err(CallFailure::InvalidOutput(format!(
            "returned {} findings; the limit is {} ({})",
            found.len(),
            limits.max_findings,
            limits.key("max_findings")
        )));
    }
    // What the plugin handed over can never exceed its linear memory (the
    // memory limit bounds it); this bounds what is stored and returned.
    let handed: usize = found
        .iter()
        .map(|f| f.label.len() + f.data.len())
        .sum::<usize>()
        .saturating_add(if stage == Stage::Prompt {
            text.len()
        } else {
            0
        });
    if handed > limits.max_output_bytes {
        return Err(CallFailure::InvalidOutput(format!(
            "returned {} KiB of findings and text; the limit is {} KiB ({})",
            handed.div_ceil(1024),
            limits.max_output_bytes / 1024,
            limits.key("max_output_kib")
        )));
    }
    let id = &plugin.loaded.identity;
    found
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let invalid =
                |m: String| CallFailure::InvalidOutput(format!("finding {i} ({:?}): {m}", f.label));
            if f.label.trim().is_empty() || f.label.chars().count() > MAX_LABEL_CHARS {
                return Err(invalid(format!(
                    "label must be 1 to {MAX_LABEL_CHARS} characters"
                )));
            }
            if f.label.contains('\0') {
                return Err(invalid("label contains a NUL character".into()));
            }
            if f.score.is_some_and(|s| !s.is_finite()) {
                return Err(invalid("score is not a finite number".into()));
            }
            let excerpt = match &f.span {
                Some(span) => {
                    let (start, end) = (span.start as usize, span.end as usize);
                    if start > end || end > text.len() {
                        return Err(invalid(format!(
                            "span {start}..{end} lies outside the text ({} bytes)",
                            text.len()
                        )));
                    }
                    if !text.is_char_boundary(start) || !text.is_char_boundary(end) {
                        return Err(invalid(format!(
                            "span {start}..{end} splits a UTF-8 character"
                        )));
                    }
                    Some(excerpt(&text[start..end]))
                }
                None => None,
            };
            let data = if f.data.trim().is_empty() {
                serde_json::Value::Object(Default::default())
            } else {
                serde_json::from_str(&f.data)
                    .map_err(|e| invalid(format!("data is not valid JSON: {e}")))?
            };
            if let Some(path) = input::nul_in_json(&data, "data") {
                return Err(invalid(format!(
                    "{path} contains a NUL character (\\u0000), which cannot be stored"
                )));
            }
            Ok(FindingRecord {
                plugin: id.name.clone(),
                plugin_version: id.version.clone(),
                plugin_sha256: id.sha256.clone(),
                stage: stage_name(stage),
                label: f.label,
                score: f.score,
                span: f.span.map(|s| [s.start, s.end]),
                excerpt,
                data,
                version_id: plugin.version_id,
                ordinal: i32::try_from(i).unwrap_or(i32::MAX),
            })
        })
        .collect()
}

/// Whitespace collapsed, cut to [`EXCERPT_CHARS`] characters.
pub fn excerpt(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= EXCERPT_CHARS {
        collapsed
    } else {
        let mut cut: String = collapsed.chars().take(EXCERPT_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::excerpt;

    #[test]
    fn excerpts_collapse_and_cut() {
        assert_eq!(excerpt("a\n\n  b\tc"), "a b c");
        let long = "é".repeat(100);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), super::EXCERPT_CHARS);
        assert!(cut.ends_with('…'));
    }
}
