//! Findings that say which prompt and model made them are held to it.
//!
//! A finding made with a prompt names the prompt's version in its data
//! (`"prompt_version"`, an `assay.prompt_versions.id`, as the contract's
//! `prompts` interface asks), and may name its hash (`"prompt_sha256"`) and
//! the model that answered (`"model"`). The host knows what the call was
//! given: the versions its `prompts.lookup` returned and the models that
//! answered its `inference` requests. A finding naming anything else is
//! invalid output, and the call fails as such: what is stored traces to the
//! exact prompt text and model, never to what a plugin claims.

use uuid::Uuid;

use crate::registry::RegisteredPlugin;
use crate::runtime::call::CallFailure;
use crate::runtime::plugin::Finding;

/// The data key naming a prompt version.
pub const PROMPT_VERSION: &str = "prompt_version";

/// Checks `found` against what `plugin`'s call in `run` was given, and lets
/// go of what was kept for the check.
pub fn check(
    plugin: &RegisteredPlugin,
    run: Option<Uuid>,
    found: &[Finding],
) -> Result<(), CallFailure> {
    let Some(run) = run else {
        // A question outside a run (`Pipeline::ask`): nothing is stored.
        return Ok(());
    };
    let looked_up = plugin.capabilities.prompts.take_run_lookups(run);
    let invalid = |i: usize, f: &Finding, what: String| {
        Err(CallFailure::InvalidOutput(format!(
            "finding {i} ({}) {what}",
            f.label
        )))
    };
    for (i, finding) in found.iter().enumerate() {
        // Cheap before parsing: most findings name no prompt.
        if !finding.data.contains(PROMPT_VERSION) {
            continue;
        }
        let Ok(serde_json::Value::Object(data)) = serde_json::from_str(&finding.data) else {
            continue; // finding_records refuses data that is not JSON
        };
        let Some(named) = data.get(PROMPT_VERSION) else {
            continue;
        };
        let Some(version) = named.as_i64() else {
            return invalid(
                i,
                finding,
                format!("names prompt version {named}, which is not a version id"),
            );
        };
        let Some(sha256) = looked_up.get(&version) else {
            return invalid(
                i,
                finding,
                format!(
                    "names prompt version {version}, which this call did not look up in the prompt library"
                ),
            );
        };
        if let Some(claimed) = data.get("prompt_sha256")
            && claimed.as_str() != Some(sha256)
        {
            return invalid(
                i,
                finding,
                format!(
                    "names prompt hash {claimed} for version {version}, whose hash is {sha256}"
                ),
            );
        }
        if let Some(model) = data.get("model") {
            let answered = model
                .as_str()
                .is_some_and(|m| plugin.capabilities.inference.answered_in(run, m));
            if !answered {
                return invalid(
                    i,
                    finding,
                    format!("names model {model}, which answered none of this call's requests"),
                );
            }
        }
    }
    Ok(())
}
