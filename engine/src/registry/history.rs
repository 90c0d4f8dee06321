//! Every plugin version that ever loaded: its bytes kept by content hash, and
//! every load, refusal and unload recorded, so an operator can list versions
//! and roll back to one even after its file is gone.

use std::path::{Path, PathBuf};

use super::PluginSource;
use crate::capability::Plugin;
use crate::db::{Database, DbError};
use crate::runtime::loader::sha256_hex;

/// Records that `plugin` is now the active version of its name (unless it
/// already was), keeping its bytes.
pub async fn record_loaded(
    db: &Database,
    plugin: &Plugin,
    source: &PluginSource,
    bytes: &[u8],
) -> Result<(), DbError> {
    let conn = db.connection().await?;
    let sha = &plugin.identity.sha256;
    let size = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    let known = conn
        .query_opt(
            "SELECT 1 FROM assay.plugin_blobs WHERE content_sha256 = $1",
            &[sha],
        )
        .await
        .map_err(DbError::query("looking up plugin bytes"))?
        .is_some();
    if !known {
        conn.execute(
            "INSERT INTO assay.plugin_blobs (content_sha256, bytes, size) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[sha, &bytes, &size],
        )
        .await
        .map_err(DbError::query("keeping the plugin's bytes"))?;
    }
    conn.execute(
        "INSERT INTO assay.plugin_loads (name, version, content_sha256, size, source, outcome)
         SELECT $1, $2, $3, $4, $5, 'loaded'
         WHERE NOT EXISTS (
             SELECT 1 FROM (SELECT content_sha256, outcome FROM assay.plugin_loads
                            WHERE name = $1 AND outcome <> 'refused' ORDER BY id DESC LIMIT 1) last
             WHERE last.content_sha256 = $3 AND last.outcome = 'loaded')",
        &[
            &plugin.identity.name,
            &plugin.identity.version,
            sha,
            &size,
            &source.to_string(),
        ],
    )
    .await
    .map_err(DbError::query("recording the plugin load"))?;
    Ok(())
}

/// Refusals kept in `assay.plugin_refusals`: the most recent ones. A plugin
/// directory filled with junk must not grow the history without bound.
pub const MAX_KEPT_REFUSALS: i64 = 1_000;

/// A refused component, to be recorded.
#[derive(Debug, Clone)]
pub struct Refusal {
    source: String,
    sha256: String,
    size: i64,
    error: String,
}

impl Refusal {
    /// A refusal of `bytes` (empty when the file could not be read) from `source`.
    pub fn new(source: &PluginSource, bytes: &[u8], error: &str) -> Self {
        Self {
            source: source.to_string(),
            sha256: sha256_hex(bytes),
            size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
            error: error.to_string(),
        }
    }
}

/// Records refused components in one statement: the same file and content
/// refused again counts up its row; only the newest [`MAX_KEPT_REFUSALS`]
/// are kept.
pub async fn record_refused(db: &Database, refusals: &[Refusal]) -> Result<(), DbError> {
    // One row per (source, content): ON CONFLICT may touch a row once per statement.
    let mut unique: std::collections::BTreeMap<(&str, &str), &Refusal> = Default::default();
    for refusal in refusals {
        unique.insert((&refusal.source, &refusal.sha256), refusal);
    }
    let rows: Vec<&Refusal> = unique.into_values().collect();
    let sources: Vec<&str> = rows.iter().map(|r| r.source.as_str()).collect();
    let hashes: Vec<&str> = rows.iter().map(|r| r.sha256.as_str()).collect();
    let sizes: Vec<i64> = rows.iter().map(|r| r.size).collect();
    let errors: Vec<&str> = rows.iter().map(|r| r.error.as_str()).collect();
    // One transaction: no reader ever sees more than the bound kept.
    let mut conn = db.connection().await?;
    let tx = conn
        .transaction()
        .await
        .map_err(DbError::query("recording refused plugin files"))?;
    tx.execute(
        "INSERT INTO assay.plugin_refusals (source, content_sha256, size, error)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[])
         ON CONFLICT (source, content_sha256) DO UPDATE
         SET error = EXCLUDED.error, last_at = now(), times = plugin_refusals.times + 1",
        &[&sources, &hashes, &sizes, &errors],
    )
    .await
    .map_err(DbError::query("recording refused plugin files"))?;
    tx.execute(
        "DELETE FROM assay.plugin_refusals WHERE (source, content_sha256) IN (
             SELECT source, content_sha256 FROM assay.plugin_refusals
             ORDER BY last_at DESC, source OFFSET $1)",
        &[&MAX_KEPT_REFUSALS],
    )
    .await
    .map_err(DbError::query("forgetting old refusals"))?;
    tx.commit()
        .await
        .map_err(DbError::query("recording refused plugin files"))
}

/// Records that the plugin named `name` was unloaded (its file removed).
pub async fn record_unloaded(
    db: &Database,
    name: &str,
    version: &str,
    sha: &str,
    source: &PluginSource,
) -> Result<(), DbError> {
    let conn = db.connection().await?;
    conn.execute(
        "INSERT INTO assay.plugin_loads (name, version, content_sha256, size, source, outcome)
         SELECT $1, $2, $3, size, $4, 'unloaded' FROM assay.plugin_blobs WHERE content_sha256 = $3",
        &[&name, &version, &sha, &source.to_string()],
    )
    .await
    .map_err(DbError::query("recording the unload"))?;
    Ok(())
}

/// One version of a plugin, as `assay plugins history` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionRecord {
    /// SHA-256 of the component.
    pub sha256: String,
    /// The plugin's version string.
    pub version: String,
    /// Size in bytes.
    pub size: i32,
    /// First time it loaded.
    pub first_loaded: std::time::SystemTime,
    /// Last time it became active.
    pub last_loaded: std::time::SystemTime,
    /// How many times it became active.
    pub activations: i64,
    /// Whether it is the version most recently activated.
    pub current: bool,
    /// Where it last came from.
    pub source: String,
}

/// Every version of `name` that ever loaded, newest first.
pub async fn versions(db: &Database, name: &str) -> Result<Vec<VersionRecord>, DbError> {
    let conn = db.connection().await?;
    let rows = conn
        .query(
            "WITH loads AS (SELECT * FROM assay.plugin_loads WHERE name = $1 AND outcome = 'loaded'),
                  latest AS (SELECT content_sha256 FROM assay.plugin_loads
                             WHERE name = $1 AND outcome <> 'refused' ORDER BY id DESC LIMIT 1)
             SELECT l.content_sha256, (array_agg(l.version ORDER BY l.id DESC))[1], max(l.size),
                    min(l.at), max(l.at), count(*),
                    EXISTS (SELECT 1 FROM latest WHERE latest.content_sha256 = l.content_sha256),
                    (array_agg(l.source ORDER BY l.id DESC))[1]
             FROM loads l GROUP BY l.content_sha256 ORDER BY max(l.id) DESC",
            &[&name],
        )
        .await
        .map_err(DbError::query("listing plugin versions"))?;
    Ok(rows
        .iter()
        .map(|r| VersionRecord {
            sha256: r.get(0),
            version: r.get(1),
            size: r.get(2),
            first_loaded: r.get(3),
            last_loaded: r.get(4),
            activations: r.get(5),
            current: r.get(6),
            source: r.get(7),
        })
        .collect())
}

/// Fewest hex digits of a hash that name a version (fewer could name any).
pub const MIN_HASH_PREFIX: usize = 4;

/// Why a rollback cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// No version matches.
    #[error("{0}")]
    NoSuchVersion(String),
    /// The name or hash asked for cannot be one (the caller's mistake).
    #[error("{0}")]
    Invalid(String),
    /// Writing the component into the plugin directory failed.
    #[error("cannot write {path}: {cause}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
}

/// A version chosen for rollback.
#[derive(Debug, Clone)]
pub struct Rollback {
    /// Its hash.
    pub sha256: String,
    /// Its version string.
    pub version: String,
    /// The file it was written to.
    pub path: PathBuf,
}

/// Re-activates a version of `name`: the one whose hash starts with `hash`, or
/// by default the version active before the current one. Its bytes are written
/// (atomically) to the file that provides the plugin now, or to `<name>.wasm` in
/// the plugin directory; the watcher of a running engine loads it from there,
/// and so does the next start.
pub async fn rollback(
    db: &Database,
    plugin_dir: &Path,
    name: &str,
    hash: Option<&str>,
) -> Result<Rollback, RollbackError> {
    if !crate::runtime::loader::valid_name(name) {
        return Err(RollbackError::Invalid(format!(
            "{name:?} is not a plugin name (1–50 lowercase letters, digits, `-` and `_`, starting with a letter)"
        )));
    }
    if let Some(prefix) = hash
        && (!(MIN_HASH_PREFIX..=64).contains(&prefix.len())
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err(RollbackError::Invalid(format!(
            "{prefix:?} is not a version: give {MIN_HASH_PREFIX} to 64 lowercase hex digits of its SHA-256 (`assay plugins history {name}` lists them)"
        )));
    }
    let versions = versions(db, name).await?;
    if versions.is_empty() {
        return Err(RollbackError::NoSuchVersion(format!(
            "plugin {name} has never loaded here"
        )));
    }
    let target = match hash {
        Some(prefix) => {
            let matches: Vec<&VersionRecord> = versions
                .iter()
                .filter(|v| v.sha256.starts_with(prefix))
                .collect();
            match matches.as_slice() {
                [one] => *one,
                [] => {
                    return Err(RollbackError::NoSuchVersion(format!(
                        "plugin {name} has no version {prefix}; `assay plugins history {name}` lists them"
                    )));
                }
                _ => {
                    return Err(RollbackError::NoSuchVersion(format!(
                        "{prefix} matches several versions; give more of the hash"
                    )));
                }
            }
        }
        None => versions.iter().find(|v| !v.current).ok_or_else(|| {
            RollbackError::NoSuchVersion(format!("plugin {name} has only ever had one version"))
        })?,
    };
    let conn = db.connection().await?;
    let bytes: Vec<u8> = conn
        .query_one(
            "SELECT bytes FROM assay.plugin_blobs WHERE content_sha256 = $1",
            &[&target.sha256],
        )
        .await
        .map_err(DbError::query("reading the kept plugin bytes"))?
        .get(0);
    drop(conn);
    let current_file = versions
        .iter()
        .find(|v| v.current)
        .map(|v| PathBuf::from(&v.source))
        .filter(|p| p.parent() == Some(plugin_dir) && p.extension().is_some_and(|e| e == "wasm"));
    let path = current_file.unwrap_or_else(|| plugin_dir.join(format!("{name}.wasm")));
    let write_err = |cause| RollbackError::Write {
        path: path.display().to_string(),
        cause,
    };
    // Blocking file work, off the async runtime.
    let (dir, dest) = (plugin_dir.to_path_buf(), path.clone());
    tokio::task::spawn_blocking(move || super::files::write_into(&dir, &dest, &bytes))
        .await
        .map_err(|e| write_err(std::io::Error::other(e.to_string())))?
        .map_err(write_err)?;
    Ok(Rollback {
        sha256: target.sha256.clone(),
        version: target.version.clone(),
        path,
    })
}
