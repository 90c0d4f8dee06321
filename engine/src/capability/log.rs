//! The `log` interface: plugin log lines go to `tracing`, tagged with the plugin's
//! name and version.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::{Capability, HostState, RegisterError, Registration, Start, StartError};
use crate::runtime::call::{CallCore, CallEnd, CallFailure};
use crate::runtime::plugin::PluginIdentity;
use crate::runtime::wit::{since_v0_1, since_v0_2};

/// Longest message kept; longer ones are cut (a plugin cannot flood the log with one line).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Lines one call may log; later ones are dropped, so a plugin cannot flood
/// the log with many lines either.
pub const MAX_LINES_PER_CALL: u32 = 1_000;

/// The message with every control character escaped (`\n`, `\r`, `\t`,
/// `\u{1b}`, …): a plugin's line stays one line of the engine's log, so it
/// cannot forge lines that look like the engine's own, nor send terminal
/// escape sequences to whoever reads the log.
pub fn printable(message: &str) -> String {
    if !message
        .chars()
        .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
    {
        return message.to_string();
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Line and paragraph separators end lines for some log viewers.
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&c.escape_unicode().to_string())
            }
            c => out.push(c),
        }
    }
    out
}

/// A log line's level (the capability's own; each contract version converts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Trace.
    Trace,
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
}

/// The log capability, set up for the engine: nothing to set up.
pub struct Log;

/// One call's log: whose lines they are, and how many it has logged.
pub struct LogCall {
    plugin: Arc<PluginIdentity>,
    lines: u32,
}

impl CallEnd for LogCall {
    async fn abandon(&mut self) {}

    async fn finish(&mut self, _keep: bool) -> Result<(), CallFailure> {
        // Lines are written as they come; there is nothing to keep or undo.
        Ok(())
    }
}

impl Capability for Log {
    type Plugin = ();
    type Call = LogCall;

    async fn start(_start: &Start<'_>) -> Result<Self, StartError> {
        Ok(Log)
    }

    async fn register(&self, _plugin: &Registration<'_>) -> Result<(), RegisterError> {
        Ok(())
    }

    fn call(&self, _plugin: &(), call: &CallCore) -> LogCall {
        Self::detached(call)
    }

    fn detached(call: &CallCore) -> LogCall {
        LogCall {
            plugin: Arc::clone(call.plugin()),
            lines: 0,
        }
    }

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        since_v0_1::log::add_to_linker::<HostState, HasSelf<LogCall>>(linker, |state| {
            &mut state.caps.log
        })?;
        since_v0_2::log::add_to_linker::<HostState, HasSelf<LogCall>>(linker, |state| {
            &mut state.caps.log
        })
    }
}

/// The host trait of one version's `log` module (every version so far has
/// 0.1's interface).
macro_rules! log_version {
    ($v:ident) => {
        impl $v::Host for LogCall {
            async fn log(&mut self, level: $v::Level, message: String) -> wasmtime::Result<()> {
                let level = match level {
                    $v::Level::Trace => Level::Trace,
                    $v::Level::Debug => Level::Debug,
                    $v::Level::Info => Level::Info,
                    $v::Level::Warn => Level::Warn,
                    $v::Level::Error => Level::Error,
                };
                self.log(level, message);
                Ok(())
            }
        }
    };
}

mod v0_1 {
    use super::*;
    use crate::runtime::wit::since_v0_1::log as version;
    log_version!(version);
}

mod v0_2 {
    use super::*;
    use crate::runtime::wit::since_v0_2::log as version;
    log_version!(version);
}

impl LogCall {
    /// Logs one line of the plugin's (escaped, cut, counted).
    pub fn log(&mut self, level: Level, message: String) {
        self.lines = self.lines.saturating_add(1);
        if self.lines > MAX_LINES_PER_CALL {
            if self.lines == MAX_LINES_PER_CALL + 1 {
                tracing::warn!(
                    target: "assay::plugin",
                    plugin = %self.plugin.name,
                    "more than {MAX_LINES_PER_CALL} log lines in one call; the rest of this call's lines are dropped"
                );
            }
            return;
        }
        let mut message = printable(&message);
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
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_cannot_forge_log_lines() {
        assert_eq!(printable("plain words"), "plain words");
        assert_eq!(
            printable("ok\n2026-12-01T00:00:00Z  INFO assay: forged\r\x1b[2J"),
            "ok\\n2026-12-01T00:00:00Z  INFO assay: forged\\r\\u{1b}[2J"
        );
        assert!(!printable("a\u{85}b\u{7f}").chars().any(char::is_control));
        assert_eq!(printable("a\u{2028}b"), "a\\u{2028}b");
    }
}
