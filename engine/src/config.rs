//! Configuration: `assay.toml`, layered with `ASSAY__…` environment variables
//! and `DATABASE_URL`.
//!
//! Every field has a default, so an empty (or missing) `assay.toml` is valid.
//! Environment variables use `__` between levels: `ASSAY__PLUGINS__DIR=/srv/plugins`
//! sets `plugins.dir`. `DATABASE_URL`, when set, wins over `database.url`.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole configuration of one `assay` process.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where results are stored.
    pub database: DatabaseConfig,
    /// Where plugins come from.
    pub plugins: PluginsConfig,
    /// Default limits for every plugin call.
    pub limits: LimitsConfig,
    /// How documents flow through the pipeline.
    pub pipeline: PipelineConfig,
    /// The SQL sandbox of plugins.
    pub sandbox: SandboxConfig,
    /// The HTTP service of `assay up`.
    pub server: ServerConfig,
    /// Language models plugins may use (`inference`, contract 0.2).
    pub inference: InferenceConfig,
}

/// `[server]`: `assay up`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; loopback by default (port 0 picks a free one).
    pub addr: String,
    /// On Ctrl-C or SIGTERM, how long in-flight requests may take to finish;
    /// connections still busy after it are closed and `assay up` stops.
    pub shutdown_grace_ms: u64,
    /// Open client connections at most. Each costs a file descriptor, so a
    /// client opening connections without end would otherwise starve the
    /// engine (no database connection, no plugin file, no `/healthz`). At the
    /// limit the connection idle the longest is closed to make room; only if
    /// every connection has a request in flight is the new one answered 503.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed. This
    /// ends idle keep-alive connections and clients that send their request
    /// headers too slowly (a byte every few seconds), which would otherwise
    /// hold a connection open for ever.
    pub idle_timeout_ms: u64,
    /// A request body must be received in full within this, else 408: a client
    /// trickling its body cannot keep a request (and its connection) in flight.
    pub request_body_timeout_ms: u64,
    /// Further `Host` names the engine answers to, besides its bound address
    /// (and `localhost`/`127.0.0.1`/`[::1]` on a loopback bind): `name` means
    /// `name` at the bound port, `name:port` exactly that. Any other `Host` is
    /// refused, so a web page under a foreign name that resolves to this
    /// address (DNS rebinding) cannot use the API.
    pub allowed_hosts: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:7878".into(),
            shutdown_grace_ms: 30_000,
            max_connections: 512,
            idle_timeout_ms: 30_000,
            request_body_timeout_ms: 30_000,
            allowed_hosts: Vec::new(),
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// A PostgreSQL (≥ 14) connection URL, e.g. `postgres://assay:secret@db.internal/assay`.
    /// When absent (and `DATABASE_URL` is unset), assay runs its own embedded server.
    pub url: Option<String>,
    /// Connections the engine itself keeps for storing runs.
    #[serde(deserialize_with = "above_zero")]
    pub pool_size: u32,
    /// How long to wait for a connection before reporting the database unavailable.
    pub connect_timeout_ms: u64,
    /// Longest the engine waits for the database to store a document or a run
    /// (a server that stopped answering fails the document instead of hanging it).
    pub write_timeout_ms: u64,
    /// The embedded server used when no URL is configured.
    pub embedded: EmbeddedConfig,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            pool_size: 4,
            connect_timeout_ms: 5_000,
            write_timeout_ms: 30_000,
            embedded: EmbeddedConfig::default(),
        }
    }
}

/// `[database.embedded]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Data directory of the embedded server; created (`initdb`) on first use and reused.
    pub data_dir: PathBuf,
    /// Directory holding `initdb`, `pg_ctl` and `postgres`. Found automatically when
    /// absent: `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`, then `PATH`.
    pub bin_dir: Option<PathBuf>,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".assay/postgres"),
            bin_dir: None,
        }
    }
}

/// `[plugins]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Every WebAssembly component (`*.wasm`) in this directory is loaded. Created when missing.
    pub dir: PathBuf,
    /// Also load the plugins built into the `assay` binary (`redact`,
    /// `keywords`, `sentiment`, `history`, `audit-report`, `ask-sql`,
    /// `similar`). A component in `dir` whose manifest has the same name
    /// replaces the bundled one.
    pub bundled: bool,
    /// What each plugin may read or write outside its own schema, by plugin name:
    /// `[plugins.grants.history] read = ["assay.documents"]`. Applied as real
    /// GRANT/REVOKE on every load; anything not listed is revoked.
    pub grants: std::collections::BTreeMap<String, PluginGrants>,
    /// Compiled plugins are kept here (owned by the engine; never shared).
    pub cache_dir: PathBuf,
    /// Longest a plugin may take to validate and compile before it is refused.
    pub load_timeout_ms: u64,
    /// How long the plugin directory must be quiet before changes are loaded
    /// (editors write in bursts; the last write wins).
    pub watch_debounce_ms: u64,
    /// How often the plugin directory is compared with what the watcher
    /// last saw (each file's size, modification time and inode), so that a
    /// change whose event was lost (an overflowing event queue, a network
    /// file system) is still loaded; 0 turns it off. Never less than twice
    /// `watch_debounce_ms` (shorter is taken as that).
    pub rescan_interval_ms: u64,
    /// Largest plugin file read, in bytes. Only regular files are read, and
    /// never more than this: a huge or endless file (a sparse file, a symlink
    /// to `/dev/zero`) is refused without being read.
    pub max_component_bytes: u64,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(".assay/plugins"),
            bundled: true,
            grants: Default::default(),
            cache_dir: PathBuf::from(".assay/cache"),
            load_timeout_ms: 30_000,
            watch_debounce_ms: 200,
            rescan_interval_ms: 10_000,
            max_component_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[plugins.grants.NAME]`: tables or views, as `schema.name`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PluginGrants {
    /// SELECT.
    pub read: Vec<String>,
    /// SELECT, INSERT, UPDATE and DELETE.
    pub write: Vec<String>,
}

/// `[sandbox]`: what plugin SQL may do and use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Refuse, before they reach the server, statements no plugin needs (SET,
    /// COPY, transaction control, …). Defense in depth: the plugin's database
    /// role is the wall, and holds with this off.
    pub statement_gate: bool,
    /// Connections all plugin pools together may hold open; must stay below the
    /// server's `max_connections` minus the engine's own pool.
    pub connection_budget: u32,
    /// Connections one plugin may hold (so: its concurrent SQL-using calls).
    pub connections_per_plugin: u32,
    /// Idle plugin connections are closed after this long.
    pub idle_timeout_ms: u64,
    /// Most rows one query may return.
    pub max_rows: usize,
    /// Most bytes one query's result may hold.
    pub max_result_bytes: usize,
    /// Most statements one call may run.
    pub max_statements: u32,
    /// Most temporary file space one plugin statement may use (sorts and
    /// hashes spilled to disk), in MiB: the `temp_file_limit` of every plugin
    /// role, which a plugin cannot raise. Needs a superuser engine (the
    /// embedded server's is); with another, the server's own setting applies.
    pub temp_file_limit_mib: u64,
    /// Reads a plugin runs on their own (plain reads before a call's first
    /// write, with the gate on) share the plugin's connections, several in
    /// flight on one, instead of holding one each: more reads per second
    /// under concurrency, at the price of one plugin's concurrent reads
    /// queueing behind each other on the server. Never shared between
    /// plugins. See SECURITY.md.
    pub shared_reads: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            statement_gate: true,
            connection_budget: 64,
            connections_per_plugin: 4,
            idle_timeout_ms: 30_000,
            max_rows: 10_000,
            max_result_bytes: 16 * 1024 * 1024,
            max_statements: 1_000,
            temp_file_limit_mib: 1024,
            shared_reads: true,
        }
    }
}

/// `[limits]`: defaults for every plugin call, and overrides per plugin.
///
/// Every limit a call can exceed fails that call (never the engine) with an
/// error naming the setting and its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Wall-clock deadline of one plugin call, including its SQL and any time
    /// it spends waiting in host calls.
    #[serde(deserialize_with = "above_zero")]
    pub call_timeout_ms: u64,
    /// Server-side `statement_timeout` of each SQL statement a plugin runs.
    pub statement_timeout_ms: u64,
    /// Maximum linear memory of one plugin instance, in MiB.
    #[serde(deserialize_with = "memory_mib")]
    pub memory_mib: u64,
    /// Most elements one wasm table may hold (function tables grow with code size).
    pub table_elements: u32,
    /// Most core module instances one call may create (a component is several).
    #[serde(deserialize_with = "above_zero")]
    pub instances: u32,
    /// Maximum findings one call may return.
    pub max_findings: usize,
    /// Most bytes one call may hand back: finding labels and data, plus the
    /// text a prompt plugin returns. In KiB.
    pub max_output_kib: u64,
    /// Calls of one plugin running at the same time; more wait (see `queue_timeout_ms`).
    #[serde(deserialize_with = "above_zero")]
    pub concurrent_calls: u32,
    /// Calls of all plugins running at the same time. Also sizes the pool of
    /// pre-reserved instance slots, so it is fixed for the life of the process.
    #[serde(deserialize_with = "above_zero")]
    pub max_concurrent_calls: u32,
    /// How long a call, or a document, waits for a free slot before it fails as
    /// `overloaded`.
    pub queue_timeout_ms: u64,
    /// Maximum wasm call stack, in KiB. One value for all plugins: the runtime
    /// fixes it per process, not per instance.
    pub wasm_stack_kib: u64,
    /// Keep a plugin's instance for its next call instead of starting each
    /// call in a fresh one. Off by default; meant to be turned on per plugin
    /// (`[limits.plugins.NAME] reuse_instances = true`): what one call
    /// leaves in the plugin's memory, the next call of the same plugin sees.
    pub reuse_instances: bool,
    /// With `reuse_instances`, how many calls one instance serves before it is
    /// replaced by a fresh one, so nothing a plugin keeps grows for ever.
    pub calls_per_instance: u32,
    /// Instances kept between calls, all plugins together. Reserved as
    /// instance slots on top of `max_concurrent_calls`, so it is fixed for the
    /// life of the process.
    pub warm_instances: u32,
    /// Overrides by plugin name: `[limits.plugins.history] call_timeout_ms = 30000`.
    pub plugins: std::collections::BTreeMap<String, PluginLimitsOverride>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            call_timeout_ms: 10_000,
            statement_timeout_ms: 5_000,
            memory_mib: 128,
            table_elements: 20_000,
            instances: 16,
            max_findings: 10_000,
            max_output_kib: 16 * 1024,
            concurrent_calls: 16,
            max_concurrent_calls: 256,
            queue_timeout_ms: 1_000,
            wasm_stack_kib: 512,
            reuse_instances: false,
            calls_per_instance: 1_000,
            warm_instances: 64,
            plugins: Default::default(),
        }
    }
}

/// `[limits.plugins.NAME]`: any per-call limit, for one plugin. Unset fields
/// take the `[limits]` value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimitsOverride {
    /// See [`LimitsConfig::call_timeout_ms`].
    #[serde(deserialize_with = "above_zero_if_set")]
    pub call_timeout_ms: Option<u64>,
    /// See [`LimitsConfig::statement_timeout_ms`].
    pub statement_timeout_ms: Option<u64>,
    /// See [`LimitsConfig::memory_mib`].
    #[serde(deserialize_with = "memory_mib_if_set")]
    pub memory_mib: Option<u64>,
    /// See [`LimitsConfig::table_elements`].
    pub table_elements: Option<u32>,
    /// See [`LimitsConfig::instances`].
    #[serde(deserialize_with = "above_zero_if_set")]
    pub instances: Option<u32>,
    /// See [`LimitsConfig::max_findings`].
    pub max_findings: Option<usize>,
    /// See [`LimitsConfig::max_output_kib`].
    pub max_output_kib: Option<u64>,
    /// See [`LimitsConfig::concurrent_calls`].
    #[serde(deserialize_with = "above_zero_if_set")]
    pub concurrent_calls: Option<u32>,
    /// See [`LimitsConfig::reuse_instances`].
    pub reuse_instances: Option<bool>,
    /// See [`LimitsConfig::calls_per_instance`].
    pub calls_per_instance: Option<u32>,
}

/// `[pipeline]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Documents `assay analyze` works on at the same time.
    #[serde(deserialize_with = "above_zero")]
    pub concurrency: usize,
    /// Documents being analysed at once across all callers (HTTP requests
    /// included). Past it a document waits up to `limits.queue_timeout_ms`, then
    /// is refused as overloaded (HTTP 503 with `Retry-After`) with nothing stored.
    #[serde(deserialize_with = "above_zero")]
    pub max_in_flight: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            max_in_flight: 64,
        }
    }
}

/// `[inference]`: the model server plugins reach through the host, and what
/// each plugin may ask of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceConfig {
    /// An OpenAI-compatible server's API root, e.g. `https://api.openai.com/v1`
    /// or `http://127.0.0.1:8080/v1` (llama.cpp, vLLM, Ollama). Unset: no
    /// completion backend (completion calls fail `unavailable`, naming this
    /// setting), and `embed` uses the built-in hashing embedder.
    pub base_url: Option<String>,
    /// The environment variable holding the API key, e.g. `OPENAI_API_KEY`;
    /// read once at start-up, sent as a bearer token, never logged or stored.
    /// Unset: no key is sent (local servers).
    pub api_key_env: Option<String>,
    /// The model a request that names none gets; the only model a plugin may
    /// use unless its `[inference.plugins.NAME] models` lists more.
    pub default_model: Option<String>,
    /// The server's embedding model. Unset: `embed` uses the built-in hashing
    /// embedder even when `base_url` is set.
    pub embedding_model: Option<String>,
    /// The name of the answer-length field sent: `max_tokens` (understood by
    /// every OpenAI-compatible server) or `max_completion_tokens` (OpenAI's
    /// newer name, required by some of its models).
    pub max_tokens_field: MaxTokensField,
    /// Longest wait for a connection to the server.
    pub connect_timeout_ms: u64,
    /// Longest one request may take (never past the plugin call's deadline).
    pub request_timeout_ms: u64,
    /// Retries of a request the server refused for now (429, 5xx, no
    /// connection), honouring `Retry-After`, with jittered backoff, never
    /// past the call's deadline.
    pub max_retries: u32,
    /// Model requests in flight across the engine; more wait for a turn.
    pub max_in_flight: u32,
    /// Model requests in flight per plugin: a plugin with slow requests
    /// cannot take every turn.
    pub max_in_flight_per_plugin: u32,
    /// Largest request a plugin may send (its messages, or texts to embed), in bytes.
    pub max_request_bytes: usize,
    /// Largest answer read from the server, in bytes; a larger one is a bad response.
    pub max_response_bytes: usize,
    /// Most output tokens one request may ask for (also what a request that
    /// names no limit gets).
    pub max_output_tokens: u32,
    /// Most model requests (completions and server embeddings) one call may make.
    pub requests_per_call: u32,
    /// Tokens (input and output) one plugin may use per clock hour (UTC); 0: no limit.
    pub tokens_per_hour: u64,
    /// Tokens (input and output) one plugin may use per day (UTC); 0: no limit.
    pub tokens_per_day: u64,
    /// Per plugin: more models, and other limits than the ones above.
    pub plugins: std::collections::BTreeMap<String, PluginInferencePolicy>,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            api_key_env: None,
            default_model: None,
            embedding_model: None,
            max_tokens_field: MaxTokensField::MaxTokens,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 60_000,
            max_retries: 2,
            max_in_flight: 16,
            max_in_flight_per_plugin: 4,
            max_request_bytes: 1024 * 1024,
            max_response_bytes: 4 * 1024 * 1024,
            max_output_tokens: 1024,
            requests_per_call: 16,
            tokens_per_hour: 0,
            tokens_per_day: 0,
            plugins: Default::default(),
        }
    }
}

/// How the answer-length limit is named in a chat completion request.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MaxTokensField {
    /// `max_tokens`.
    MaxTokens,
    /// `max_completion_tokens`.
    MaxCompletionTokens,
}

/// `[inference.plugins.NAME]`: one plugin's inference policy. Unset fields
/// take the `[inference]` value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PluginInferencePolicy {
    /// Models it may use besides `inference.default_model`.
    pub models: Vec<String>,
    /// See [`InferenceConfig::max_output_tokens`].
    pub max_output_tokens: Option<u32>,
    /// See [`InferenceConfig::requests_per_call`].
    pub requests_per_call: Option<u32>,
    /// See [`InferenceConfig::tokens_per_hour`].
    pub tokens_per_hour: Option<u64>,
    /// See [`InferenceConfig::tokens_per_day`].
    pub tokens_per_day: Option<u64>,
}

/// Deserializes a count, size or time that means nothing at zero (a call
/// timeout of 0 ms fails every call, a pool of 0 connections serves none).
/// Refused here, figment's error names the key and where the value came from.
fn above_zero<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default + PartialEq,
{
    not_zero(T::deserialize(deserializer)?)
}

/// [`above_zero`] for a per-plugin override, which may be left unset.
fn above_zero_if_set<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default + PartialEq,
{
    Option::<T>::deserialize(deserializer)?
        .map(not_zero)
        .transpose()
}

fn not_zero<E: serde::de::Error, T: Default + PartialEq>(value: T) -> Result<T, E> {
    if value == T::default() {
        return Err(E::invalid_value(
            serde::de::Unexpected::Unsigned(0),
            &"a number above 0",
        ));
    }
    Ok(value)
}

/// The most linear memory a (32-bit) WebAssembly instance can address.
pub const MAX_MEMORY_MIB: u64 = 4096;

/// `memory_mib`: above zero and at most [`MAX_MEMORY_MIB`].
fn memory_mib<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    at_most_4_gib(above_zero(deserializer)?)
}

/// A per-plugin `memory_mib`, which may be left unset.
fn memory_mib_if_set<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    above_zero_if_set(deserializer)?
        .map(at_most_4_gib)
        .transpose()
}

fn at_most_4_gib<E: serde::de::Error>(mib: u64) -> Result<u64, E> {
    if mib > MAX_MEMORY_MIB {
        return Err(E::invalid_value(
            serde::de::Unexpected::Unsigned(mib),
            &"at most 4096 (MiB: a WebAssembly memory addresses 4 GiB)",
        ));
    }
    Ok(mib)
}

/// Why the configuration could not be read.
///
/// The message already names the key and where its value came from, so the
/// figment error is not also given as the source: an error chain printed in
/// full (`{:#}`) would say it twice.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is wrong, or the file is not TOML.
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    /// The configuration file is not a file that can be read: a FIFO, a
    /// device, a directory, or far larger than any configuration.
    #[error(
        "the configuration file {path} {error}; give --config (or ASSAY_CONFIG) a TOML file of at most {MAX_CONFIG_BYTES} bytes",
        path = .path.display()
    )]
    Unreadable {
        /// The path given.
        path: std::path::PathBuf,
        /// What it is instead.
        error: crate::fsread::FileError,
    },
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(error: Box<figment::Error>) -> Self {
        Self::Invalid(error)
    }
}

/// The most a configuration file may hold. Real ones are a few kilobytes;
/// the limit is there so that a path to `/dev/zero` or a runaway file is
/// refused at once instead of read until memory runs out.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

impl Config {
    /// Reads `path` (if it exists), then `ASSAY__…` variables, then `DATABASE_URL`.
    ///
    /// Exactly `path` is read: a relative path is taken from the working
    /// directory and never looked up in its parents (figment's `Toml::file`
    /// would search every ancestor, so whoever can write one of them could
    /// switch the statement gate off or point the engine at another database).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        // A missing file is fine (every setting has a default); `file_exact`
        // alone would call it an error.
        if path.exists() {
            // figment opens and reads the file whatever it is; look first, so
            // that a FIFO blocks nothing and a device is not read forever.
            crate::fsread::check_regular(path, MAX_CONFIG_BYTES).map_err(|error| {
                ConfigError::Unreadable {
                    path: path.to_path_buf(),
                    error,
                }
            })?;
            figment = figment.merge(Toml::file_exact(path));
        }
        let mut config: Config = figment
            .merge(Env::prefixed("ASSAY__").split("__"))
            .extract()
            .map_err(Box::new)?;
        if let Ok(url) = std::env::var("DATABASE_URL")
            && !url.trim().is_empty()
        {
            config.database.url = Some(url);
        }
        Ok(config)
    }
}

#[cfg(test)]
// figment's Jail API returns its own (large) error type; that is fine in tests.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_gives_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            let config =
                Config::load(Path::new("does-not-exist.toml")).map_err(|e| e.to_string())?;
            assert_eq!(config, Config::default());
            Ok(())
        });
    }

    #[test]
    fn file_then_env_then_database_url() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "assay.toml",
                "[plugins]\ndir = \"p\"\n[limits]\ncall_timeout_ms = 7\n[database]\nurl = \"postgres://file\"\n",
            )?;
            jail.set_env("ASSAY__LIMITS__CALL_TIMEOUT_MS", "9");
            let config = Config::load(Path::new("assay.toml")).map_err(|e| e.to_string())?;
            assert_eq!(config.plugins.dir, PathBuf::from("p"));
            assert_eq!(config.limits.call_timeout_ms, 9);
            assert_eq!(config.database.url.as_deref(), Some("postgres://file"));
            jail.set_env("DATABASE_URL", "postgres://env");
            let config = Config::load(Path::new("assay.toml")).map_err(|e| e.to_string())?;
            assert_eq!(config.database.url.as_deref(), Some("postgres://env"));
            Ok(())
        });
    }

    /// The configuration reference in the README is real: it parses, and every
    /// value it shows is the default.
    #[test]
    fn the_readme_reference_is_the_defaults() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme
            .find("## Configuration")
            .expect("README has a configuration section")..];
        let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let block = &section[start..start + section[start..].find("```").expect("closed block")];
        let mut config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(block))
            .extract()
            .expect("the README's configuration parses");
        // The example grant and override blocks are illustrative.
        assert!(config.plugins.grants.remove("history").is_some());
        assert!(config.limits.plugins.remove("history").is_some());
        assert!(config.inference.plugins.remove("audit-report").is_some());
        assert_eq!(config, Config::default());
    }

    /// A configuration file in a parent directory is never read.
    #[test]
    fn parent_directories_are_not_searched() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("assay.toml", "[sandbox]\nstatement_gate = false\n")?;
            std::fs::create_dir("below").map_err(|e| e.to_string())?;
            std::env::set_current_dir("below").map_err(|e| e.to_string())?;
            let config = Config::load(Path::new("assay.toml")).map_err(|e| e.to_string())?;
            assert!(
                config.sandbox.statement_gate,
                "the parent's assay.toml must not be read"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("assay.toml", "[plugins]\ndirectory = \"p\"\n")?;
            let err = Config::load(Path::new("assay.toml")).expect_err("unknown key must fail");
            assert!(err.to_string().contains("directory"), "{err}");
            Ok(())
        });
    }
}
