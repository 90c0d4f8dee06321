//! The `prompts` interface (contract 0.2): the operator's prompt library,
//! read-only, through the engine's own connection (a plugin's role is
//! granted nothing on the library's tables; what it reads is what the
//! library holds, never its SQL).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use wasmtime::component::{HasSelf, Linker};

use super::per_run::PerRun;
use super::{Capability, HostState, RegisterError, Registration, Start, StartError};
use crate::db::Database;
use crate::prompts::store;
use crate::runtime::call::{CallCore, CallEnd, CallFailure};
use crate::runtime::wit::since_v0_2::prompts as v0_2;

/// Most prompts one lookup returns.
pub const MAX_PROMPTS_PER_LOOKUP: usize = 1_000;
/// Most bytes of prompt text one lookup returns.
pub const MAX_LOOKUP_BYTES: usize = 8 * 1024 * 1024;

/// The prompts capability, set up for the engine.
pub struct Prompts {
    db: Arc<Database>,
}

/// What the capability keeps per plugin version: which prompt versions each
/// run's call looked up, so that the pipeline can check the findings that
/// name one (a finding may only name a version its call was given).
#[derive(Debug, Default)]
pub struct PromptsPlugin {
    looked_up: PerRun<BTreeMap<i64, String>>,
}

impl PromptsPlugin {
    /// The prompt versions (id, content hash) this plugin's call in `run`
    /// looked up, now taken.
    pub fn take_run_lookups(&self, run: Uuid) -> BTreeMap<i64, String> {
        self.looked_up.take(run)
    }
}

/// One call's view of the library.
pub struct PromptsCall {
    db: Option<Arc<Database>>,
    plugin: Option<Arc<PromptsPlugin>>,
    run: Option<Uuid>,
    deadline: Instant,
}

impl CallEnd for PromptsCall {
    async fn abandon(&mut self) {}

    async fn finish(&mut self, _keep: bool) -> Result<(), CallFailure> {
        // Read-only: nothing to keep or undo.
        Ok(())
    }
}

impl Capability for Prompts {
    type Plugin = Arc<PromptsPlugin>;
    type Call = PromptsCall;

    async fn start(start: &Start<'_>) -> Result<Self, StartError> {
        Ok(Prompts {
            db: Arc::clone(start.db),
        })
    }

    async fn register(
        &self,
        _plugin: &Registration<'_>,
    ) -> Result<Arc<PromptsPlugin>, RegisterError> {
        Ok(Arc::default())
    }

    fn call(&self, plugin: &Arc<PromptsPlugin>, call: &CallCore) -> PromptsCall {
        PromptsCall {
            db: Some(Arc::clone(&self.db)),
            plugin: Some(Arc::clone(plugin)),
            run: call.context().run,
            deadline: call.deadline(),
        }
    }

    fn detached(call: &CallCore) -> PromptsCall {
        PromptsCall {
            db: None,
            plugin: None,
            run: None,
            deadline: call.deadline(),
        }
    }

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        v0_2::add_to_linker::<HostState, HasSelf<PromptsCall>>(linker, |state| {
            &mut state.caps.prompts
        })
    }
}

impl v0_2::Host for PromptsCall {
    async fn lookup(
        &mut self,
        scenario: String,
        report_type: String,
        building_type: String,
    ) -> wasmtime::Result<Result<Vec<v0_2::Prompt>, v0_2::PromptsError>> {
        let Some(db) = &self.db else {
            return Ok(Err(v0_2::PromptsError::Unavailable(
                "the prompt library is only available in calls of a registered plugin".into(),
            )));
        };
        let filter = store::Filter {
            scenario: Some(scenario),
            report_type: Some(report_type),
            building_type: Some(building_type),
        };
        let listed = tokio::time::timeout_at(self.deadline.into(), store::list(db, &filter)).await;
        let prompts = match listed {
            Err(_) => {
                return Ok(Err(v0_2::PromptsError::Unavailable(
                    "the prompt library did not answer before the call's deadline".into(),
                )));
            }
            Ok(Err(e)) => {
                return Ok(Err(v0_2::PromptsError::Unavailable(format!(
                    "the prompt library cannot be read: {e}"
                ))));
            }
            Ok(Ok(prompts)) => prompts,
        };
        let bytes: usize = prompts.iter().map(|p| p.text.len()).sum();
        if prompts.len() > MAX_PROMPTS_PER_LOOKUP || bytes > MAX_LOOKUP_BYTES {
            return Ok(Err(v0_2::PromptsError::TooLarge(format!(
                "{} prompts of {bytes} bytes; one lookup returns at most {MAX_PROMPTS_PER_LOOKUP} \
                 prompts and {MAX_LOOKUP_BYTES} bytes",
                prompts.len()
            ))));
        }
        if let Some(plugin) = &self.plugin {
            plugin.looked_up.update(self.run, |seen| {
                for p in &prompts {
                    seen.insert(p.version_id, p.content_sha256.clone());
                }
            });
        }
        Ok(Ok(prompts
            .into_iter()
            .map(|p| v0_2::Prompt {
                scenario: p.key.scenario,
                report_type: p.key.report_type,
                building_type: p.key.building_type,
                run_part: p.key.run_part,
                name: p.key.name,
                version_id: p.version_id,
                version: u32::try_from(p.version).unwrap_or(0),
                json_answer: p.json_answer,
                text: p.text,
                content_sha256: p.content_sha256,
            })
            .collect()))
    }
}
