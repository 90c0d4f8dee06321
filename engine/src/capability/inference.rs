//! The `inference` interface (contract 0.2): chat completion and embeddings
//! through the host.
//!
//! - [`policy`]: what the operator allows each plugin (models, output
//!   tokens, requests per call, request size);
//! - [`openai`]: the OpenAI-compatible HTTP backend;
//! - [`hashing`]: the built-in embedder, used when no embedding model is set;
//! - [`format`]: the check of JSON answers against their format;
//! - [`ledger`]: budgets, the record of every request, and the answer cache,
//!   in PostgreSQL;
//! - [`host`]: the WIT host traits, converting to and from [`types`].
//!
//! A request waits on the model without holding a thread, within the call's
//! deadline, and takes a turn of two bounds separate from call concurrency:
//! `inference.max_in_flight` across the engine and
//! `inference.max_in_flight_per_plugin` per plugin, so a slow model slows
//! only the plugins that use it.

pub mod format;
pub mod hashing;
pub mod host;
pub mod ledger;
pub mod openai;
pub mod policy;
pub mod types;

use std::sync::Arc;

use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use uuid::Uuid;
use wasmtime::component::Linker;

use self::ledger::{Ledger, Record};
use self::openai::OpenAi;
use self::policy::Policy;
use self::types::{
    Completion, CompletionRequest, Embeddings, InferenceError, Message, ResolvedRequest, Role,
    Usage,
};
use super::{Capability, HostState, RegisterError, Registration, Start, StartError};
use crate::config::InferenceConfig;
use crate::runtime::call::{CallCore, CallEnd, CallFailure};
use crate::runtime::plugin::PluginIdentity;

/// The message a completion fails with when no server is configured.
pub const NO_BACKEND: &str = "no model server is configured for completions; an operator can set inference.base_url (and inference.default_model) in assay.toml";

/// The inference capability, set up for the engine.
pub struct Inference {
    shared: Arc<Shared>,
}

/// What every call of every plugin shares.
struct Shared {
    config: InferenceConfig,
    backend: Option<Arc<OpenAi>>,
    ledger: Ledger,
    turns: Arc<Semaphore>,
}

/// What inference keeps for one registered plugin version.
pub struct InferencePlugin {
    identity: Arc<PluginIdentity>,
    policy: Policy,
    turns: Arc<Semaphore>,
    /// Requests, tokens and the models that answered, per run, until the
    /// pipeline takes them for the run's outcome (see
    /// [`InferencePlugin::take_run_usage`]).
    runs: super::per_run::PerRun<RunUsage>,
}

/// What one plugin's call in one run asked of the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunUsage {
    /// Requests made (completions and server embeddings), answered or not.
    pub requests: u32,
    /// Their tokens.
    pub usage: Usage,
    /// Whether a completion failed because no model server is configured:
    /// a call that then fails did not fail on its own account, and the run
    /// records it as skipped.
    pub no_backend: bool,
    /// The models that answered (from the server or the cache).
    pub answered_by: std::collections::BTreeSet<String>,
}

impl InferencePlugin {
    /// The requests made and tokens used by this plugin's call in `run`, now
    /// taken (a second take gives nothing).
    pub fn take_run_usage(&self, run: Uuid) -> RunUsage {
        self.runs.take(run)
    }

    /// Whether `model` answered one of this plugin's requests in `run`.
    pub fn answered_in(&self, run: Uuid, model: &str) -> bool {
        self.runs.peek(run, |usage| {
            usage.is_some_and(|u| u.answered_by.contains(model))
        })
    }

    fn add_run_usage(
        &self,
        run: Option<Uuid>,
        usage: Usage,
        no_backend: bool,
        answered_by: Option<&str>,
    ) {
        self.runs.update(run, |entry| {
            entry.requests = entry.requests.saturating_add(1);
            entry.usage += usage;
            entry.no_backend |= no_backend;
            if let Some(model) = answered_by {
                entry.answered_by.insert(model.to_string());
            }
        });
    }
}

/// One call's inference: the plugin's policy, and how many requests the call has made.
pub struct InferenceCall {
    bound: Option<Bound>,
    deadline: Instant,
    requests: u32,
}

struct Bound {
    shared: Arc<Shared>,
    plugin: Arc<InferencePlugin>,
    run: Option<Uuid>,
    use_cache: bool,
}

impl CallEnd for InferenceCall {
    async fn abandon(&mut self) {}

    async fn finish(&mut self, _keep: bool) -> Result<(), CallFailure> {
        // Requests are accounted as they end; a failed call's tokens are
        // spent all the same.
        Ok(())
    }
}

impl Capability for Inference {
    type Plugin = Arc<InferencePlugin>;
    type Call = InferenceCall;

    async fn start(start: &Start<'_>) -> Result<Self, StartError> {
        let config = start.config.inference.clone();
        let backend =
            OpenAi::from_config(&config).map_err(|e| StartError::Refused(e.to_string()))?;
        if backend.is_none() {
            // The default, not a fault: said once, at info.
            tracing::info!(
                "inference: {NO_BACKEND}; embeddings use the built-in hashing embedder ({})",
                hashing::MODEL
            );
        }
        let turns = Arc::new(Semaphore::new(config.max_in_flight.max(1) as usize));
        Ok(Inference {
            shared: Arc::new(Shared {
                backend,
                ledger: Ledger::new(Arc::clone(start.db)),
                turns,
                config,
            }),
        })
    }

    async fn register(
        &self,
        plugin: &Registration<'_>,
    ) -> Result<Arc<InferencePlugin>, RegisterError> {
        let config = &self.shared.config;
        Ok(Arc::new(InferencePlugin {
            identity: Arc::new(plugin.identity.clone()),
            policy: Policy::for_plugin(config, &plugin.identity.name),
            turns: Arc::new(Semaphore::new(
                config.max_in_flight_per_plugin.max(1) as usize
            )),
            runs: Default::default(),
        }))
    }

    fn call(&self, plugin: &Arc<InferencePlugin>, call: &CallCore) -> InferenceCall {
        InferenceCall {
            bound: Some(Bound {
                shared: Arc::clone(&self.shared),
                plugin: Arc::clone(plugin),
                run: call.context().run,
                use_cache: !call.context().no_cache,
            }),
            ..Self::detached(call)
        }
    }

    fn detached(call: &CallCore) -> InferenceCall {
        InferenceCall {
            bound: None,
            deadline: call.deadline(),
            requests: 0,
        }
    }

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        host::link(linker)
    }
}

/// How the host asks again when a JSON answer did not check.
fn second_try(answer: &str, problem: &str) -> [Message; 2] {
    [
        Message {
            role: Role::Assistant,
            content: answer.to_string(),
        },
        Message {
            role: Role::User,
            content: format!(
                "That answer cannot be used: {problem}. Answer again with only the corrected JSON."
            ),
        },
    ]
}

/// The cache key of `plugin`'s request: SHA-256 of the plugin's name and
/// the request's canonical JSON. Per plugin, so that a cache hit never tells
/// one plugin what another asked.
fn cache_key(plugin: &str, request: &ResolvedRequest) -> String {
    let json = serde_json::to_vec(request).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(plugin.as_bytes());
    hasher.update([0]);
    hasher.update(&json);
    hex::encode(hasher.finalize())
}

/// A rough count of a request's input tokens, for its reservation: a token
/// is about four bytes of English; the reservation is settled to what the
/// server reports.
fn estimated_input_tokens(request: &ResolvedRequest) -> u64 {
    let bytes: usize = request.messages.iter().map(|m| m.content.len() + 8).sum();
    (bytes as u64).div_ceil(4)
}

fn micros_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

impl InferenceCall {
    /// Counts a request's usage for the call and its run, and records it.
    async fn account(&self, shared: &Shared, plugin: &InferencePlugin, record: Record<'_>) {
        let no_backend = record.kind == "complete"
            && record.outcome == "unavailable"
            && shared.backend.is_none();
        let answered_by = (record.outcome == "ok").then_some(record.model);
        plugin.add_run_usage(record.run, record.usage, no_backend, answered_by);
        shared.ledger.record(record).await;
    }

    fn bound(&self) -> Result<&Bound, InferenceError> {
        self.bound.as_ref().ok_or_else(|| {
            InferenceError::Unavailable(
                "inference is only available in calls of a registered plugin (not while it loads)"
                    .into(),
            )
        })
    }

    /// One completion, accounted.
    pub async fn complete(
        &mut self,
        request: CompletionRequest,
    ) -> Result<Completion, InferenceError> {
        let started = Instant::now();
        let bound = self.bound()?;
        let (shared, plugin) = (Arc::clone(&bound.shared), Arc::clone(&bound.plugin));
        let (run, use_cache) = (bound.run, bound.use_cache);
        let asked_model = request
            .model
            .clone()
            .or_else(|| plugin.policy.default_model.clone());
        let cacheable = request.cache || request.temperature == Some(0.0);
        let outcome = self
            .complete_inner(&shared, &plugin, request, cacheable, use_cache)
            .await;
        let (usage, from_cache, model, outcome_name) = match &outcome {
            Ok(c) => (c.usage, c.from_cache, c.model.clone(), "ok"),
            Err((e, used)) => (*used, false, asked_model.unwrap_or_default(), e.outcome()),
        };
        self.account(
            &shared,
            &plugin,
            Record {
                plugin: &plugin.identity,
                run,
                kind: "complete",
                model: &model,
                usage,
                latency_us: micros_since(started),
                outcome: outcome_name,
                from_cache,
            },
        )
        .await;
        outcome.map_err(|(e, _)| e)
    }

    async fn complete_inner(
        &mut self,
        shared: &Shared,
        plugin: &InferencePlugin,
        request: CompletionRequest,
        cacheable: bool,
        read_cache: bool,
    ) -> Result<Completion, (InferenceError, Usage)> {
        let nothing = |e| (e, Usage::default());
        plugin
            .policy
            .admit_request(self.requests)
            .map_err(nothing)?;
        self.requests += 1;
        // Before the policy's checks: with no server there is nothing to ask,
        // whatever model the request names (or, with no default model, fails
        // to name), and the plugin is skipped with the setting to set.
        let Some(backend) = &shared.backend else {
            return Err(nothing(InferenceError::Unavailable(NO_BACKEND.into())));
        };
        let request = plugin.policy.resolve(request).map_err(nothing)?;
        // A deterministic answer is kept even when the caller bypasses the
        // cache (`--no-cache` asks afresh; the fresh answer serves later runs).
        let key = cacheable.then(|| cache_key(&plugin.identity.name, &request));
        if let Some(key) = key.as_ref().filter(|_| read_cache)
            && let Some(hit) = shared.ledger.cached(key).await.map_err(nothing)?
        {
            return Ok(hit);
        }
        // The most the request can cost: twice when a JSON answer is asked again.
        let tries: u64 = if request.format == types::ResponseFormat::Text {
            1
        } else {
            2
        };
        let most = tries * (estimated_input_tokens(&request) + u64::from(request.max_tokens));
        let reservation = shared
            .ledger
            .reserve(
                &plugin.identity.name,
                most,
                plugin.policy.tokens_per_hour,
                plugin.policy.tokens_per_day,
            )
            .await
            .map_err(nothing)?;
        let answered = self.ask(shared, plugin, backend, &request).await;
        let used = match &answered {
            Ok(c) => c.usage,
            Err((_, used)) => *used,
        };
        shared
            .ledger
            .settle(&plugin.identity.name, reservation, used)
            .await;
        let completion = answered?;
        if let Some(key) = &key {
            shared.ledger.keep(key, &completion).await;
        }
        Ok(completion)
    }

    /// Sends the request (and, for a JSON answer that does not check, once
    /// more with what was wrong); on failure, also what was used.
    async fn ask(
        &self,
        shared: &Shared,
        plugin: &InferencePlugin,
        backend: &OpenAi,
        request: &ResolvedRequest,
    ) -> Result<Completion, (InferenceError, Usage)> {
        let _turns = self
            .take_turns(shared, plugin)
            .await
            .map_err(|e| (e, Usage::default()))?;
        let first = backend
            .complete(request, &[], self.deadline)
            .await
            .map_err(|e| (e, Usage::default()))?;
        let Some(problem) = format::problem(&request.format, &first.text) else {
            return Ok(first);
        };
        let extra = second_try(&first.text, &problem);
        let mut second = backend
            .complete(request, &extra, self.deadline)
            .await
            .map_err(|e| (e, first.usage))?;
        let mut usage = first.usage;
        usage += second.usage;
        second.usage = usage;
        match format::problem(&request.format, &second.text) {
            None => Ok(second),
            Some(problem) => Err((
                InferenceError::BadResponse(format!("asked twice, {problem}")),
                usage,
            )),
        }
    }

    /// A turn of the engine's and of the plugin's model requests, waited for
    /// until the deadline.
    async fn take_turns(
        &self,
        shared: &Shared,
        plugin: &InferencePlugin,
    ) -> Result<
        (
            tokio::sync::OwnedSemaphorePermit,
            tokio::sync::OwnedSemaphorePermit,
        ),
        InferenceError,
    > {
        let wait = async {
            let own = Arc::clone(&plugin.turns).acquire_owned().await;
            let engine = Arc::clone(&shared.turns).acquire_owned().await;
            match (own, engine) {
                (Ok(own), Ok(engine)) => Ok((own, engine)),
                _ => Err(InferenceError::Unavailable(
                    "the engine is shutting down".into(),
                )),
            }
        };
        tokio::time::timeout_at(self.deadline.into(), wait)
            .await
            .map_err(|_| InferenceError::Timeout)?
    }

    /// Embeddings: the server's model when one is set, the built-in hashing
    /// embedder otherwise.
    pub async fn embed(
        &mut self,
        texts: Vec<String>,
        model: Option<String>,
    ) -> Result<Embeddings, InferenceError> {
        let started = Instant::now();
        let bound = self.bound()?;
        let (shared, plugin, run) = (
            Arc::clone(&bound.shared),
            Arc::clone(&bound.plugin),
            bound.run,
        );
        plugin.policy.check_texts(&texts)?;
        let server_model = shared
            .config
            .embedding_model
            .clone()
            .filter(|_| shared.backend.is_some());
        let model = match (model.filter(|m| !m.is_empty()), server_model) {
            (None, None) => None,
            (Some(asked), _) if asked == hashing::MODEL => None,
            (Some(asked), Some(server)) if asked == server => Some(Ok(asked)),
            (Some(asked), _) => Some(plugin.policy.model(Some(&asked)).map_err(|e| (e, asked))),
            (None, Some(server)) => Some(Ok(server)),
        };
        let Some(model) = model else {
            // Local and free: neither a request of the call nor recorded.
            return Ok(Embeddings {
                model: hashing::MODEL.into(),
                vectors: texts.iter().map(|t| hashing::embed(t)).collect(),
                usage: Usage::default(),
            });
        };
        let (model_name, outcome) = match model {
            Err((refused, asked)) => (asked, Err(refused)),
            Ok(model) => {
                let outcome = self
                    .embed_with_server(&shared, &plugin, &model, &texts)
                    .await;
                (model, outcome)
            }
        };
        let (usage, outcome_name) = match &outcome {
            Ok(e) => (e.usage, "ok"),
            Err(e) => (Usage::default(), e.outcome()),
        };
        self.account(
            &shared,
            &plugin,
            Record {
                plugin: &plugin.identity,
                run,
                kind: "embed",
                model: &model_name,
                usage,
                latency_us: micros_since(started),
                outcome: outcome_name,
                from_cache: false,
            },
        )
        .await;
        outcome
    }

    async fn embed_with_server(
        &mut self,
        shared: &Shared,
        plugin: &InferencePlugin,
        model: &str,
        texts: &[String],
    ) -> Result<Embeddings, InferenceError> {
        let Some(backend) = &shared.backend else {
            return Err(InferenceError::Unavailable(NO_BACKEND.into()));
        };
        plugin.policy.admit_request(self.requests)?;
        self.requests += 1;
        let bytes: usize = texts.iter().map(String::len).sum();
        let policy = &plugin.policy;
        let reservation = shared
            .ledger
            .reserve(
                &plugin.identity.name,
                (bytes as u64).div_ceil(4),
                policy.tokens_per_hour,
                policy.tokens_per_day,
            )
            .await?;
        let answered = async {
            let _turns = self.take_turns(shared, plugin).await?;
            backend.embed(model, texts, self.deadline).await
        }
        .await;
        let used = answered.as_ref().map(|e| e.usage).unwrap_or_default();
        shared
            .ledger
            .settle(&plugin.identity.name, reservation, used)
            .await;
        answered
    }
}
