//! The `log` interface: plugin log lines go to `tracing`, tagged with the plugin's
//! name and version.

use crate::runtime::bindings::log::{self, Level};
use crate::runtime::call::CallState;

/// Longest message kept; longer ones are cut (a plugin cannot flood the log with one line).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Lines one call may log; later ones are dropped, so a plugin cannot flood
/// the log with many lines either.
pub const MAX_LINES_PER_CALL: u32 = 1_000;

impl log::Host for CallState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.log_lines = self.log_lines.saturating_add(1);
        if self.log_lines > MAX_LINES_PER_CALL {
            if self.log_lines == MAX_LINES_PER_CALL + 1 {
                tracing::warn!(
                    target: "assay::plugin",
                    plugin = %self.plugin.name,
                    "more than {MAX_LINES_PER_CALL} log lines in one call; the rest of this call's lines are dropped"
                );
            }
            return Ok(());
        }
        let mut message = message;
        if message.len() > MAX_MESSAGE_BYTES {
            let mut cut = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = &self.plugin.name;
        let version = &self.plugin.version;
        match level {
            Level::Trace => {
                tracing::trace!(target: "assay::plugin", %plugin, %version, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "assay::plugin", %plugin, %version, "{message}")
            }
            Level::Info => tracing::info!(target: "assay::plugin", %plugin, %version, "{message}"),
            Level::Warn => tracing::warn!(target: "assay::plugin", %plugin, %version, "{message}"),
            Level::Error => {
                tracing::error!(target: "assay::plugin", %plugin, %version, "{message}")
            }
        }
        Ok(())
    }
}
