//! What inference costs, kept in PostgreSQL through the engine's own pool:
//! token budgets per plugin and clock window (reserved before a request is
//! sent, settled from the server's usage after), a row per request, and the
//! cache of deterministic answers. See `migrations/V7__inference.sql`.
//!
//! None of it goes through the plugin call's transaction: tokens spent stay
//! spent (and recorded) when the call fails or traps.
//!
//! Windows are UTC clock hours and days, truncated in UTC and a fixed 1 or
//! 24 hours long, so the engine session's time zone (and its daylight
//! saving) never moves them.

use std::sync::Arc;

use uuid::Uuid;

use super::types::{Budget, BudgetExceeded, Completion, InferenceError, Usage};
use crate::db::{Database, DbError};
use crate::runtime::plugin::PluginIdentity;

/// A request's hold on the plugin's budgets, to be settled.
#[derive(Debug)]
pub struct Reservation {
    tokens: i64,
    /// The end of the hour window held (milliseconds since the epoch), which
    /// names it; none when the plugin has no hourly budget.
    hour: Option<i64>,
    /// The same for the day window.
    day: Option<i64>,
}

/// One request, as recorded.
pub struct Record<'a> {
    /// Whose.
    pub plugin: &'a PluginIdentity,
    /// The run the call belonged to.
    pub run: Option<Uuid>,
    /// `complete` or `embed`.
    pub kind: &'static str,
    /// The model asked.
    pub model: &'a str,
    /// What it used.
    pub usage: Usage,
    /// How long it took, in microseconds.
    pub latency_us: u64,
    /// `ok` or the error's outcome.
    pub outcome: &'static str,
    /// Whether the cache answered.
    pub from_cache: bool,
}

/// The budgets, records and cache of one engine's database.
pub struct Ledger {
    db: Arc<Database>,
}

fn unavailable(e: DbError) -> InferenceError {
    InferenceError::Unavailable(format!(
        "the engine cannot reach its database to account for the request: {e}"
    ))
}

fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Ledger {
    /// The ledger in `db`.
    pub fn new(db: Arc<Database>) -> Self {
        Ledger { db }
    }

    /// Reserves `tokens` of `plugin`'s hour and day budgets (limits of 0 are
    /// not kept), or says which one it would exceed and when it resets.
    pub async fn reserve(
        &self,
        plugin: &str,
        tokens_wanted: u64,
        per_hour: u64,
        per_day: u64,
    ) -> Result<Reservation, InferenceError> {
        let wanted = tokens(tokens_wanted);
        let mut reservation = Reservation {
            tokens: wanted,
            hour: None,
            day: None,
        };
        if per_hour == 0 && per_day == 0 {
            return Ok(reservation);
        }
        let mut conn = self.db.connection().await.map_err(unavailable)?;
        let tx = conn
            .transaction()
            .await
            .map_err(DbError::query("begin a budget reservation"))
            .map_err(unavailable)?;
        for (kind, limit, budget) in [
            ("hour", per_hour, Budget::TokensPerHour),
            ("day", per_day, Budget::TokensPerDay),
        ] {
            if limit == 0 {
                continue;
            }
            let limit = tokens(limit);
            // The window's row is taken with a row lock (the upsert), so
            // engines reserving at once queue on it and never both pass.
            let row = tx
                .query_one(
                    "INSERT INTO assay.inference_budgets AS b (plugin, window_kind, window_start, reserved)
                     VALUES ($1, $2, date_trunc($2, now(), 'UTC'), 0)
                     ON CONFLICT (plugin, window_kind, window_start)
                         DO UPDATE SET reserved = b.reserved
                     RETURNING b.used, b.reserved,
                         (extract(epoch FROM b.window_start + (CASE $2 WHEN 'hour' THEN interval '1 hour' ELSE interval '24 hours' END)) * 1000)::bigint",
                    &[&plugin, &kind],
                )
                .await
                .map_err(DbError::query("read a token budget"))
                .map_err(unavailable)?;
            let (used, reserved, resets): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            if used.saturating_add(reserved).saturating_add(wanted) > limit {
                // Dropping the transaction rolls back the other window's hold.
                return Err(InferenceError::BudgetExceeded(BudgetExceeded {
                    budget,
                    limit: limit as u64,
                    used: used.saturating_add(reserved).max(0) as u64,
                    resets_at_ms: Some(resets),
                }));
            }
            tx.execute(
                "UPDATE assay.inference_budgets SET reserved = reserved + $3
                 WHERE plugin = $1 AND window_kind = $2 AND window_start = date_trunc($2, now(), 'UTC')",
                &[&plugin, &kind, &wanted],
            )
            .await
            .map_err(DbError::query("reserve a token budget"))
            .map_err(unavailable)?;
            match kind {
                "hour" => reservation.hour = Some(resets),
                _ => reservation.day = Some(resets),
            }
        }
        tx.commit()
            .await
            .map_err(DbError::query("commit a budget reservation"))
            .map_err(unavailable)?;
        Ok(reservation)
    }

    /// Turns a reservation into what was used. A failure is logged, not
    /// returned: the answer is the plugin's either way, and the hold ends
    /// with its window.
    pub async fn settle(&self, plugin: &str, reservation: Reservation, used: Usage) {
        if reservation.hour.is_none() && reservation.day.is_none() {
            return;
        }
        let used = tokens(used.total());
        let settled = async {
            let conn = self.db.connection().await?;
            for (kind, resets) in [("hour", reservation.hour), ("day", reservation.day)] {
                let Some(resets) = resets else { continue };
                conn.execute(
                    "UPDATE assay.inference_budgets
                     SET reserved = greatest(reserved - $3, 0), used = used + $4
                     WHERE plugin = $1 AND window_kind = $2
                       AND window_start = to_timestamp($5::bigint / 1000.0) - (CASE $2 WHEN 'hour' THEN interval '1 hour' ELSE interval '24 hours' END)",
                    &[&plugin, &kind, &reservation.tokens, &used, &resets],
                )
                .await
                .map_err(DbError::query("settle a token budget"))?;
            }
            Ok::<_, DbError>(())
        };
        if let Err(e) = settled.await {
            tracing::warn!(
                plugin,
                "a model request's tokens could not be counted against its budget: {e}"
            );
        }
    }

    /// Records one request. A failure is logged, not returned.
    pub async fn record(&self, r: Record<'_>) {
        let written = async {
            let conn = self.db.connection().await?;
            conn.execute(
                "INSERT INTO assay.inference_requests
                    (plugin, plugin_version, plugin_sha256, run_id, kind, model,
                     input_tokens, output_tokens, cached_tokens, latency_us, outcome, from_cache)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    &r.plugin.name,
                    &r.plugin.version,
                    &r.plugin.sha256,
                    &r.run,
                    &r.kind,
                    &r.model,
                    &tokens(r.usage.input_tokens),
                    &tokens(r.usage.output_tokens),
                    &tokens(r.usage.cached_tokens),
                    &tokens(r.latency_us),
                    &r.outcome,
                    &r.from_cache,
                ],
            )
            .await
            .map_err(DbError::query("record a model request"))?;
            Ok::<_, DbError>(())
        };
        if let Err(e) = written.await {
            tracing::warn!(plugin = %r.plugin.name, "a model request could not be recorded: {e}");
        }
    }

    /// The cached answer under `key`, if any (counted as a hit).
    pub async fn cached(&self, key: &str) -> Result<Option<Completion>, InferenceError> {
        let conn = self.db.connection().await.map_err(unavailable)?;
        let row = conn
            .query_opt(
                "UPDATE assay.inference_cache SET hits = hits + 1 WHERE key = $1 RETURNING answer",
                &[&key],
            )
            .await
            .map_err(DbError::query("read the inference cache"))
            .map_err(unavailable)?;
        Ok(row.and_then(|row| {
            let answer: serde_json::Value = row.get(0);
            serde_json::from_value::<Completion>(answer)
                .ok()
                .map(|mut c| {
                    c.usage = Usage::default();
                    c.from_cache = true;
                    c
                })
        }))
    }

    /// Keeps `answer` under `key`. A failure is logged, not returned.
    pub async fn keep(&self, key: &str, answer: &Completion) {
        let written = async {
            let value = serde_json::to_value(answer).unwrap_or_default();
            let conn = self.db.connection().await?;
            conn.execute(
                "INSERT INTO assay.inference_cache (key, model, answer) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE SET model = EXCLUDED.model, answer = EXCLUDED.answer,
                     created_at = now()",
                &[&key, &answer.model, &value],
            )
            .await
            .map_err(DbError::query("fill the inference cache"))?;
            Ok::<_, DbError>(())
        };
        if let Err(e) = written.await {
            tracing::warn!("a model answer could not be cached: {e}");
        }
    }
}

/// A plugin's model usage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginUsage {
    /// The plugin.
    pub plugin: String,
    /// Requests in the last hour.
    pub requests_last_hour: u64,
    /// Input and output tokens in the last hour.
    pub tokens_last_hour: u64,
    /// Requests in the last day.
    pub requests_last_day: u64,
    /// Input and output tokens in the last day.
    pub tokens_last_day: u64,
    /// Requests the cache answered in the last day.
    pub cache_hits_last_day: u64,
}

/// Tokens and requests per plugin over the last hour and day, from the
/// record of requests (every engine's on this database).
pub async fn usage_by_plugin(db: &Database) -> Result<Vec<PluginUsage>, DbError> {
    let conn = db.connection().await?;
    let rows = conn
        .query(
            "SELECT plugin,
                    count(*) FILTER (WHERE at > now() - interval '1 hour'),
                    coalesce(sum(input_tokens + output_tokens) FILTER (WHERE at > now() - interval '1 hour'), 0)::bigint,
                    count(*),
                    coalesce(sum(input_tokens + output_tokens), 0)::bigint,
                    count(*) FILTER (WHERE from_cache)
             FROM assay.inference_requests
             WHERE at > now() - interval '1 day'
             GROUP BY plugin ORDER BY plugin",
            &[],
        )
        .await
        .map_err(DbError::query("read model usage"))?;
    Ok(rows
        .iter()
        .map(|row| PluginUsage {
            plugin: row.get(0),
            requests_last_hour: row.get::<_, i64>(1).max(0) as u64,
            tokens_last_hour: row.get::<_, i64>(2).max(0) as u64,
            requests_last_day: row.get::<_, i64>(3).max(0) as u64,
            tokens_last_day: row.get::<_, i64>(4).max(0) as u64,
            cache_hits_last_day: row.get::<_, i64>(5).max(0) as u64,
        })
        .collect())
}
