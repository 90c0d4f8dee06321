//! The transaction of one plugin call.
//!
//! A call takes at most one connection from its plugin's pool, at its first
//! statement. Every statement from the call's first write on (and every
//! `state` write) runs in one transaction, under the `statement_timeout` its
//! connection was opened with; the host commits when the call returns `ok`
//! and rolls back otherwise.
//!
//! Round trips are what a SQL-using call costs, so there are as few as can be:
//! - statements stay prepared on their connection from call to call
//!   ([`super::pool::StatementCache`]);
//! - `BEGIN` goes out with the statement that opens the transaction;
//! - in a *lean* session (the statement gate on, see [`SqlCaps::lean`]) a plain
//!   read before the call's first write runs on its own, in the read-only
//!   implicit transaction every plugin session defaults to: one round trip,
//!   and nothing to commit. A read that turns out to write (a function it
//!   calls, say) is refused by the server without effect (SQLSTATE 25006) and
//!   run again inside the call's transaction;
//! - such a read holds no connection of its own: it takes a seat on a read
//!   lane, a connection it shares, pipelined, with other such reads of the
//!   plugin ([`super::lanes`]; with `shared_reads` off it takes the call's
//!   connection and gives it back as soon as it is answered);
//! - a lean session is not reset after each call: with the gate on, nothing a
//!   plugin can run changes its session (see [`SESSION_RESET`] and
//!   SECURITY.md), and every [`RESET_EVERY_CALLS`] calls it is reset anyway.
//!   Otherwise the end of the transaction and the reset share one round trip.
//!
//! A call that runs one cached read costs one round trip, as the same query
//! issued natively does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, pin_mut};
use tokio_postgres::error::SqlState;

use super::gate;
use super::lanes::BytesPerRead;
use super::pool::{PoolUnavailable, SandboxConnection, SandboxPool, SandboxPooled};
use super::types::{Column, DbError, RowSet, SqlError, Value};
use super::values::{Param, RawCell, readable};
use crate::runtime::steps::HostSteps;

/// Errors after which a cached statement is prepared afresh next time:
/// `feature_not_supported` ("cached plan must not change result type", after
/// a table changed) and `invalid_sql_statement_name` (it was deallocated).
const STALE_STATEMENT_CODES: [&str; 2] = ["0A000", "26000"];

/// What ends every call's session when the statement gate is on, in the same
/// round trip as its COMMIT or ROLLBACK: what `DISCARD ALL` does that a
/// plugin's role could need undone. Left out, each on purpose:
/// - deallocating prepared statements: the host keeps its own for the next
///   call. The gate refuses PREPARE; one prepared another way (inside a
///   function the plugin's migrations define) would only ever be seen by the
///   same plugin on the same connection, and grants nothing;
/// - `DISCARD TEMP`: plugin roles have no TEMP privilege, so they cannot
///   create temporary objects (an attack test checks it);
/// - `SET SESSION AUTHORIZATION DEFAULT`: only a superuser can change it.
///
/// Each statement costs the server time, so none is here without a reason
/// (BENCHMARKS.md has the figures). Every one of them undoes something the gate
/// refuses, so a lean session runs it only as a backstop, every
/// [`RESET_EVERY_CALLS`] calls.
pub const SESSION_RESET: &str =
    "CLOSE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); RESET ALL; DISCARD SEQUENCES";

/// A lean session is reset after this many calls on one connection even
/// though nothing should need it: should the gate ever let through something
/// that changes a session, what it left is bounded by this many calls of the
/// same plugin, on the same connection.
pub const RESET_EVERY_CALLS: u32 = 100;

/// Opens a call's transaction. Plugin sessions are read-only by default (a
/// startup option, see `pool::build_pool`), so the transaction asks to write.
const BEGIN: &str = "BEGIN READ WRITE";

/// SQLSTATE `read_only_sql_transaction`: a write attempted where only reads may run.
const READ_ONLY_TRANSACTION: &str = "25006";

/// SQLSTATE `in_failed_sql_transaction`, and the server's own words for it.
const IN_FAILED_TRANSACTION: (&str, &str) = (
    "25P02",
    "current transaction is aborted, commands ignored until end of transaction block",
);

/// Longest statement text a plugin may send. Values belong in parameters;
/// text this long is a mistake or an attempt to make the host parse megabytes.
pub const MAX_STATEMENT_BYTES: usize = 256 * 1024;

/// Room for protocol overhead on top of a result's byte cap when limiting reads.
const WIRE_OVERHEAD: usize = 1024 * 1024;

/// Caps on what one call may ask of the database.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlCaps {
    /// Server-side `statement_timeout` of each statement.
    pub statement_timeout: Duration,
    /// Most rows one `query` may return.
    pub max_rows: usize,
    /// Most bytes one `query` may return.
    pub max_bytes: usize,
    /// Most statements one call may run.
    pub max_statements: u32,
    /// Whether the statement gate checks statements before they are sent.
    pub gate: bool,
    /// Whether the session is *lean*: plain reads before a call's first write
    /// run outside its transaction, and the session is not reset after every
    /// call (see the module docs). Only with the gate on, and only for a
    /// plugin whose role owns no function (one made while the gate was off
    /// could change the session unseen); otherwise every call ends with
    /// `DISCARD ALL` or [`SESSION_RESET`].
    pub lean: bool,
    /// Whether reads that run on their own (in a lean session) share the
    /// plugin's connections on read lanes (see [`super::lanes`]).
    pub shared_reads: bool,
}

impl Default for SqlCaps {
    fn default() -> Self {
        Self::from_config(
            &crate::config::SandboxConfig::default(),
            Duration::from_secs(5),
        )
    }
}

impl SqlCaps {
    /// Caps from the `[sandbox]` configuration.
    pub fn from_config(
        sandbox: &crate::config::SandboxConfig,
        statement_timeout: Duration,
    ) -> Self {
        Self {
            statement_timeout,
            max_rows: sandbox.max_rows,
            max_bytes: sandbox.max_result_bytes,
            max_statements: sandbox.max_statements,
            gate: sandbox.statement_gate,
            lean: sandbox.statement_gate,
            shared_reads: sandbox.shared_reads,
        }
    }
}

/// Why a call's transaction was not committed when its plugin returned `ok`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotCommitted(pub String);

/// One call's (lazily opened) transaction.
pub struct SqlSession {
    pool: Option<SandboxPool>,
    caps: SqlCaps,
    /// The gate's verdicts on the plugin's statements, shared by its calls.
    verdicts: Arc<gate::Verdicts>,
    conn: Option<SandboxPooled>,
    statements: u32,
    /// The call's transaction has begun on `conn`.
    in_transaction: bool,
    /// A statement failed on the server, so the server has aborted the
    /// transaction (or, for a read run on its own, would have), or failed in
    /// a way that leaves the server's side in doubt (a deadline, a result past
    /// the caps, the connection lost): later statements are refused alike,
    /// and the call's transaction can only roll back. A statement the host
    /// refused before sending it (the gate, a parameter that does not
    /// encode) aborts nothing, as on the server.
    aborted: bool,
    /// Why the database was unavailable to this call, if it was.
    unavailable: Option<String>,
    /// Where the call's SQL time went (see `crate::runtime::steps`).
    steps: HostSteps,
}

impl SqlSession {
    /// A session that connects from the plugin's `pool` on first use; `None`
    /// when the call may not use the database (e.g. `describe`).
    pub fn new(pool: Option<SandboxPool>, caps: SqlCaps, verdicts: Arc<gate::Verdicts>) -> Self {
        Self {
            pool,
            caps,
            verdicts,
            conn: None,
            statements: 0,
            in_transaction: false,
            aborted: false,
            unavailable: None,
            steps: HostSteps::default(),
        }
    }

    /// Where the call's SQL time went so far.
    pub fn steps(&self) -> HostSteps {
        self.steps
    }

    /// Adds a host function's call and its time to the session's steps.
    pub(crate) fn count_host_call(&mut self, took: Duration) {
        self.steps.calls += 1;
        self.steps.in_host += took;
    }

    /// The call's connection, taken from the pool on first use.
    async fn checkout(&mut self) -> Result<&mut SandboxConnection, SqlError> {
        if self.conn.is_none() {
            let pool = self.pool()?;
            let waiting = Instant::now();
            let got = pool.get_exclusive().await;
            self.steps.waiting += waiting.elapsed();
            match got {
                Ok(conn) => self.conn = Some(conn),
                Err(PoolUnavailable(message)) => {
                    self.unavailable = Some(message.clone());
                    return Err(SqlError::Unavailable(message));
                }
            }
        }
        self.conn
            .as_deref_mut()
            .ok_or_else(|| SqlError::Unavailable("no connection".into()))
    }

    /// The plugin's pool, if the call may use the database.
    fn pool(&self) -> Result<&SandboxPool, SqlError> {
        self.pool
            .as_ref()
            .ok_or_else(|| SqlError::Denied("the database is not available in this call".into()))
    }

    /// Runs `work` on the call's connection: on its own when it is a
    /// `plain_read` in a lean session before the call's first write (on a
    /// read lane with `shared_reads`), else in the call's transaction. The
    /// statement that opens the transaction has `BEGIN` pipelined with it:
    /// both go out before either answer is read, so opening the transaction
    /// costs no round trip of its own.
    async fn on_connection<T>(
        &mut self,
        statement: &str,
        plain_read: bool,
        // Copy, so it can run again: it captures only references.
        work: impl AsyncFnOnce(On<'_>) -> Result<T, SqlError> + Copy,
    ) -> Result<T, SqlError> {
        if self.aborted {
            // A statement failed: what follows fails as it would in the
            // call's transaction, which the server (or the host) has aborted.
            // That holds for a read that ran on its own and failed on the
            // server, and for a failure the server never saw (a result past
            // the caps, a deadline, no connection to be had): the plugin is
            // not told that a later write worked when the call's transaction
            // can only roll back.
            let (code, message) = IN_FAILED_TRANSACTION;
            return Err(SqlError::Db(DbError {
                code: code.into(),
                message: message.into(),
                detail: None,
            }));
        }
        let mut lone = plain_read && self.caps.lean && !self.in_transaction;
        let mut round_trips = 1;
        if lone && self.caps.shared_reads {
            match self.on_lane(statement, work).await {
                Some(done) => return done,
                // It wrote after all: below, in the transaction.
                None => {
                    lone = false;
                    round_trips += 1;
                }
            }
        }
        let in_transaction = self.in_transaction;
        let conn: &SandboxConnection = self.checkout().await?;
        let refused = AtomicBool::new(false);
        let on = On {
            conn,
            refused: &refused,
            shared: false,
        };
        let sent = Instant::now();
        let (began, result) = if lone {
            match work(on).await {
                Err(SqlError::Db(db)) if db.code == READ_ONLY_TRANSACTION => {
                    // It wrote after all, and the server refused it with no
                    // effect: run it again where writes belong.
                    round_trips += 1;
                    (true, begin_with(on, work).await)
                }
                done => (false, done),
            }
        } else if in_transaction {
            (false, work(on).await)
        } else {
            (true, begin_with(on, work).await)
        };
        let on_server = sent.elapsed();
        if stale(&result) {
            conn.statements.evict(statement);
        }
        self.steps.on_server += on_server;
        self.steps.round_trips += round_trips;
        if began {
            self.in_transaction = true;
        }
        self.abort_if_refused(&result, &refused);
        if lone && !began && result.is_ok() {
            self.give_back_after_lone_read();
        }
        result
    }

    /// Runs a read that runs on its own on a read lane (see
    /// [`super::lanes`]); `None` when it turned out to write, so the server
    /// refused it without effect (SQLSTATE 25006), and it is to run again in
    /// the call's transaction.
    async fn on_lane<T>(
        &mut self,
        statement: &str,
        work: impl AsyncFnOnce(On<'_>) -> Result<T, SqlError>,
    ) -> Option<Result<T, SqlError>> {
        let allowance = BytesPerRead(self.caps.max_bytes.saturating_add(WIRE_OVERHEAD));
        let waiting = Instant::now();
        let seat = match self.pool() {
            Ok(pool) => pool.read_seat(allowance).await,
            Err(denied) => return Some(Err(denied)),
        };
        self.steps.waiting += waiting.elapsed();
        let seat = match seat {
            Ok(seat) => seat,
            Err(PoolUnavailable(message)) => {
                self.unavailable = Some(message.clone());
                return Some(Err(SqlError::Unavailable(message)));
            }
        };
        let refused = AtomicBool::new(false);
        let sent = Instant::now();
        let result = work(On {
            conn: &seat,
            refused: &refused,
            shared: true,
        })
        .await;
        self.steps.on_server += sent.elapsed();
        self.steps.round_trips += 1;
        if stale(&result) {
            seat.statements.evict(statement);
        }
        if matches!(result, Err(SqlError::TooLarge(_))) {
            // The rest of the result is still coming on the shared connection.
            seat.poison();
        }
        seat.leave(self.caps.statement_timeout).await;
        match result {
            Err(SqlError::Db(db)) if db.code == READ_ONLY_TRANSACTION => None,
            done => {
                self.abort_if_refused(&done, &refused);
                Some(done)
            }
        }
    }

    /// A statement the server refused aborts the call's transaction.
    fn abort_if_refused<T>(&mut self, result: &Result<T, SqlError>, refused: &AtomicBool) {
        if matches!(result, Err(SqlError::Db(_))) && refused.load(Ordering::Relaxed) {
            self.aborted = true;
        }
    }

    /// A read that ran on its own is over, its implicit transaction with it:
    /// nothing of the call is left on the connection, so it goes back to the
    /// pool now rather than when the call ends. The plugin's own code (taking
    /// in the rows, working on them, returning) then runs without holding one
    /// of its plugin's few connections, as a native client's would; a later
    /// statement of the call takes a connection again, possibly another one
    /// of the same pool (SECURITY.md: what a plugin's sessions keep). Kept
    /// instead when this use is the one after which the session is due its
    /// backstop reset, which [`Self::finish`] does.
    fn give_back_after_lone_read(&mut self) {
        if let Some(conn) = self.conn.as_deref()
            && !conn.next_use_due()
        {
            conn.count_use();
            self.conn = None;
        }
    }

    /// Admits a plugin statement (size, what the client can carry, the
    /// statement cap, the gate); whether the gate found it a plain read.
    fn admit(&mut self, statement: &str) -> Result<bool, SqlError> {
        let checking = Instant::now();
        let admitted = self.admit_untimed(statement);
        self.steps.checking += checking.elapsed();
        admitted
    }

    fn admit_untimed(&mut self, statement: &str) -> Result<bool, SqlError> {
        if statement.len() > MAX_STATEMENT_BYTES {
            return Err(SqlError::Denied(format!(
                "the statement is {} bytes; at most {MAX_STATEMENT_BYTES} are accepted (pass large values as parameters)",
                statement.len()
            )));
        }
        carriable(statement, self.caps.gate)?;
        self.statements += 1;
        if self.statements > self.caps.max_statements {
            return Err(SqlError::Denied(format!(
                "a call may run at most {} statements (sandbox.max_statements)",
                self.caps.max_statements
            )));
        }
        if !self.caps.gate {
            return Ok(false);
        }
        let inspected = self
            .verdicts
            .inspect(statement)
            .map_err(|d| SqlError::Denied(d.0))?;
        Ok(inspected.plain_read)
    }

    /// Runs a query, streaming rows so a result past the caps is refused (and the
    /// statement cancelled) without being buffered whole.
    pub async fn query(&mut self, statement: &str, params: Vec<Value>) -> Result<RowSet, SqlError> {
        let plain_read = self.admit(statement)?;
        self.run_query(statement, params, plain_read).await
    }

    /// Runs one of the host's own statements (the `state` interface's, a
    /// plugin migration's bookkeeping) in the call's transaction, as the
    /// plugin's role and under the same caps on what it returns, but neither
    /// counted against the plugin's statements nor checked by the gate: the
    /// host wrote it.
    pub async fn host_query(
        &mut self,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<RowSet, SqlError> {
        self.run_query(statement, params, false).await
    }

    async fn run_query(
        &mut self,
        statement: &str,
        params: Vec<Value>,
        plain_read: bool,
    ) -> Result<RowSet, SqlError> {
        let caps = self.caps.clone();
        let result = self
            .on_connection(statement, plain_read, async |conn| {
                let prepared = prepared(conn, statement).await?;
                check_params(&prepared, &params)?;
                let columns: Vec<Column> = prepared
                    .columns()
                    .iter()
                    .map(|c| Column {
                        name: c.name().to_string(),
                        type_name: c.type_().name().to_string(),
                    })
                    .collect();
                if let Some(bad) = prepared.columns().iter().find(|c| !readable(c.type_())) {
                    return Err(SqlError::Denied(format!(
                        "column `{}` has type {}, which plugins cannot read yet; cast it in the query (e.g. `{}::text`)",
                        bad.name(),
                        bad.type_().name(),
                        bad.name()
                    )));
                }
                let params: Vec<Param> = params.iter().map(Param).collect();
                // A read lane keeps the allowance of all its reads itself.
                if !conn.shared {
                    conn.allowance.set(caps.max_bytes.saturating_add(WIRE_OVERHEAD));
                }
                let rows = read_rows(conn, &prepared, params, &caps).await;
                if !conn.shared {
                    conn.allowance.set(usize::MAX);
                }
                Ok(RowSet { columns, rows: rows? })
            })
            .await;
        if matches!(result, Err(SqlError::TooLarge(_)))
            && let Some(conn) = self.conn.as_deref_mut()
        {
            // The rest of the result is still coming: stop the server sending it.
            conn.cancel().await;
        }
        self.note(&result);
        result
    }

    /// Runs a statement and returns the number of rows it affected.
    pub async fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<u64, SqlError> {
        self.admit(statement)?;
        // Through `execute` even a plain read runs in the transaction: it is
        // how plugins run what they mean to have effects.
        self.host_execute(statement, params).await
    }

    /// [`Self::execute`] for the host's own statements (see [`Self::host_query`]).
    pub async fn host_execute(
        &mut self,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<u64, SqlError> {
        let result = self
            .on_connection(statement, false, async |conn| {
                let prepared = prepared(conn, statement).await?;
                check_params(&prepared, &params)?;
                let params: Vec<Param> = params.iter().map(Param).collect();
                conn.client
                    .execute_raw(&prepared, params.iter())
                    .await
                    .map_err(|e| conn.sql_error(e))
            })
            .await;
        self.note(&result);
        result
    }

    /// The call's time ran out while a statement was running: cancel it on the
    /// server and make sure the connection is not reused.
    pub async fn abandon_statement(&mut self) {
        self.aborted = true;
        if let Some(conn) = self.conn.as_deref_mut() {
            conn.cancel().await;
        }
    }

    /// The caps this session runs under.
    pub fn caps(&self) -> &SqlCaps {
        &self.caps
    }

    /// Why the database was unavailable during the call (a connection that
    /// could not be made, or was lost), if it was.
    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// Records the outcome of a statement run outside [`Self::query`] and
    /// [`Self::execute`] (the `state` interface's own statements).
    pub fn note<T>(&mut self, result: &Result<T, SqlError>) {
        if let Err(SqlError::Unavailable(m)) = result
            && self.unavailable.is_none()
        {
            self.unavailable = Some(m.clone());
        }
        // (Errors of the server abort where they are told apart from the
        // host's own: see `abort_if_refused`.)
        if matches!(
            result,
            Err(SqlError::Timeout | SqlError::TooLarge(_) | SqlError::Unavailable(_))
        ) {
            self.aborted = true;
        }
    }

    /// Ends the call's transaction: commit when `commit` and nothing failed,
    /// otherwise roll back; then reset the session. Returns why a requested
    /// commit did not happen.
    pub async fn finish(&mut self, commit: bool) -> Result<(), NotCommitted> {
        let Some(mut conn) = self.conn.take() else {
            // Nothing to end or undo (no statement, or only reads that ran on
            // their own). But a call that lost the database is not an answer
            // to keep, whatever the plugin made of it.
            return match (&self.unavailable, commit) {
                (Some(cause), true) => Err(NotCommitted(cause.clone())),
                _ => Ok(()),
            };
        };
        if conn.poisoned {
            // A statement was cancelled (and the plugin told so); dropping the
            // connection closes it and the server rolls the transaction back.
            if commit {
                tracing::warn!(
                    "a plugin returned ok after a cancelled statement; its transaction was rolled back"
                );
            }
            return Ok(());
        }
        if commit && self.aborted {
            tracing::warn!(
                "a plugin returned ok after one of its statements failed; its transaction was rolled back"
            );
        }
        let end = match (self.in_transaction, commit && !self.aborted) {
            (false, _) => None,
            (true, true) => Some("COMMIT"),
            (true, false) => Some("ROLLBACK"),
        };
        // With the gate off a plugin may PREPARE statements of its own: then
        // everything goes, the host's cached statements too.
        let due = conn.count_use();
        let reset = if !self.caps.gate {
            conn.statements.clear();
            Some("DISCARD ALL")
        } else if !self.caps.lean || due {
            Some(SESSION_RESET)
        } else {
            None
        };
        if reset.is_some() {
            conn.was_reset();
        }
        if end.is_none() && reset.is_none() {
            // Only reads that ran on their own: nothing to end or undo. But a
            // call that lost the database is not an answer to keep, whatever
            // the plugin made of it (as a transaction's COMMIT would fail).
            return match (&self.unavailable, commit) {
                (Some(cause), true) => Err(NotCommitted(cause.clone())),
                _ => Ok(()),
            };
        }
        // Pipelined: both go out before either answer comes back. Bounded: a
        // server that stopped answering must not hold the call (or, returned
        // with a transaction still open, the next one).
        let client = &conn.client;
        let run = async |statement: Option<&str>| match statement {
            Some(statement) => client.batch_execute(statement).await,
            None => Ok(()),
        };
        let ending = async { futures::join!(run(end), run(reset)) };
        // Pipelined, so one round trip for both.
        self.steps.ending_round_trips += 1;
        let Ok((ended, discarded)) =
            tokio::time::timeout(self.caps.statement_timeout, ending).await
        else {
            conn.poisoned = true;
            let message = format!(
                "the database did not answer {} within {} ms",
                end.or(reset).unwrap_or_default(),
                self.caps.statement_timeout.as_millis()
            );
            self.unavailable.get_or_insert_with(|| message.clone());
            return if commit {
                Err(NotCommitted(message))
            } else {
                Ok(())
            };
        };
        if discarded.is_err() || ended.is_err() {
            conn.poisoned = true;
        }
        match ended {
            Err(e) if commit => {
                let message = format!("its SQL transaction could not be committed: {e}");
                if let SqlError::Unavailable(_) = to_sql_error(e) {
                    self.unavailable.get_or_insert_with(|| message.clone());
                }
                Err(NotCommitted(message))
            }
            _ => Ok(()),
        }
    }
}

/// What the host's client cannot carry, refused whether the gate is on or off,
/// with the statement's own error rather than a lost connection: a NUL byte
/// (the protocol ends the statement text at one) and `COPY … FROM STDIN` or
/// `TO STDOUT` (they switch the connection into a copy mode the host does not
/// speak). With the gate on, it refuses any COPY first, with its own reason;
/// with it off, COPY to or from files and programs reaches the server, whose
/// privileges refuse it.
fn carriable(statement: &str, gate_on: bool) -> Result<(), SqlError> {
    let refused = |code: &str, message: &str| {
        Err(SqlError::Db(DbError {
            code: code.into(),
            message: message.into(),
            detail: None,
        }))
    };
    if statement.contains('\0') {
        // character_not_in_repertoire, what PostgreSQL says of a NUL in text.
        return refused(
            "22021",
            "the statement contains a NUL byte, which PostgreSQL cannot take in SQL text; pass such data as a bytes parameter",
        );
    }
    let lower = statement.to_ascii_lowercase();
    // Conservative: a mere mention of STDIN or STDOUT (in a comment, say) is
    // enough to refuse a COPY here, never to let one through.
    if !gate_on
        && gate::leading_keyword(statement).as_deref() == Some("copy")
        && (lower.contains("stdin") || lower.contains("stdout"))
    {
        return refused(
            "0A000",
            "COPY FROM STDIN and COPY TO STDOUT cannot run through sql.query or sql.execute (the host speaks the extended query protocol only); use INSERT … SELECT or SELECT instead",
        );
    }
    Ok(())
}

impl Drop for SqlSession {
    /// A session dropped before [`SqlSession::finish`] (its call was cancelled:
    /// a client went away mid-request, the engine is shutting down) still has
    /// its transaction open on the server. Its connection must never be reused
    /// (the next call would run inside that transaction and commit it): closing
    /// it makes the server roll the transaction back.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_deref_mut() {
            conn.poisoned = true;
        }
    }
}

/// The connection one statement runs on, as the statement sees it.
#[derive(Clone, Copy)]
struct On<'a> {
    conn: &'a SandboxConnection,
    /// Set when the statement failed because the server refused it (rather
    /// than the host, before sending it: a parameter that does not encode,
    /// say). Per statement, since a read lane's connection carries several.
    refused: &'a AtomicBool,
    /// A read lane's, shared with other reads of the plugin.
    shared: bool,
}

impl std::ops::Deref for On<'_> {
    type Target = SandboxConnection;
    fn deref(&self) -> &SandboxConnection {
        self.conn
    }
}

impl On<'_> {
    /// What the plugin is told of `e`, noting whether the server refused.
    fn sql_error(&self, e: tokio_postgres::Error) -> SqlError {
        self.refused
            .store(e.as_db_error().is_some(), Ordering::Relaxed);
        to_sql_error(e)
    }
}

/// Whether `result` says the statement's cached preparation went stale.
fn stale<T>(result: &Result<T, SqlError>) -> bool {
    matches!(result, Err(SqlError::Db(db)) if STALE_STATEMENT_CODES.contains(&db.code.as_str()))
}

/// Runs `work` as the first statement of the call's transaction, with `BEGIN`
/// queued before it on the connection (`join!` polls in order), so that both
/// go out before either answer is read.
async fn begin_with<T>(
    conn: On<'_>,
    work: impl AsyncFnOnce(On<'_>) -> Result<T, SqlError>,
) -> Result<T, SqlError> {
    let (begun, result) = futures::join!(conn.client.batch_execute(BEGIN), work(conn));
    // BEGIN only fails on a connection that is gone, which fails the
    // statement queued after it too.
    begun.map_err(to_sql_error)?;
    result
}

/// The connection's prepared statement for `sql`, prepared now if it has none.
async fn prepared(conn: On<'_>, sql: &str) -> Result<tokio_postgres::Statement, SqlError> {
    if let Some(statement) = conn.statements.get(sql) {
        return Ok(statement);
    }
    let statement = conn
        .client
        .prepare(sql)
        .await
        .map_err(|e| conn.sql_error(e))?;
    conn.statements.insert(sql, statement.clone());
    Ok(statement)
}

async fn read_rows(
    conn: On<'_>,
    prepared: &tokio_postgres::Statement,
    params: Vec<Param<'_>>,
    caps: &SqlCaps,
) -> Result<Vec<Vec<Value>>, SqlError> {
    let too_large = |what: String| SqlError::TooLarge(what);
    let bytes_cap = || {
        too_large(if conn.shared {
            // The connection died under every read on it, and which one's
            // result ran past the cap is not known to each: the result may
            // have come whole in one read of the socket.
            format!(
                "the result of this read, or of another read of the plugin sharing its connection, is larger than {} bytes (sandbox.max_result_bytes); the connection was closed",
                caps.max_bytes
            )
        } else {
            format!(
                "the result is larger than {} bytes (sandbox.max_result_bytes); select fewer or smaller columns",
                caps.max_bytes
            )
        })
    };
    let stream = match conn.client.query_raw(prepared, params.iter()).await {
        Ok(stream) => stream,
        Err(_) if conn.allowance.exceeded() => return Err(bytes_cap()),
        Err(e) => return Err(conn.sql_error(e)),
    };
    pin_mut!(stream);
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = stream.next().await {
        let row = match row {
            Ok(row) => row,
            Err(_) if conn.allowance.exceeded() => return Err(bytes_cap()),
            Err(e) => return Err(conn.sql_error(e)),
        };
        if rows.len() == caps.max_rows {
            return Err(too_large(format!(
                "the result has more than {} rows (sandbox.max_rows); add a LIMIT or aggregate in SQL",
                caps.max_rows
            )));
        }
        let mut values = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            let unreadable = |e: Box<dyn std::error::Error + Sync + Send>| {
                SqlError::Db(DbError {
                    code: "22000".into(),
                    message: format!("cannot read column `{}`: {e}", row.columns()[i].name()),
                    detail: None,
                })
            };
            let raw = row
                .try_get::<_, RawCell>(i)
                .map_err(|e| unreadable(e.into()))?;
            // Counted before it is decoded: what decoding would make must fit
            // the cap first.
            bytes = bytes.saturating_add(raw.decoded_size());
            if bytes > caps.max_bytes {
                return Err(bytes_cap());
            }
            values.push(raw.decode().map_err(unreadable)?);
        }
        rows.push(values);
    }
    Ok(rows)
}

fn check_params(statement: &tokio_postgres::Statement, params: &[Value]) -> Result<(), SqlError> {
    let expected = statement.params().len();
    if expected != params.len() {
        return Err(SqlError::Db(DbError {
            code: "08P01".into(),
            message: format!(
                "the statement has {expected} parameters but {} values were passed",
                params.len()
            ),
            detail: None,
        }));
    }
    Ok(())
}

/// Maps a tokio-postgres error to what the plugin sees.
pub fn to_sql_error(e: tokio_postgres::Error) -> SqlError {
    if let Some(db) = e.as_db_error() {
        if db.code() == &SqlState::QUERY_CANCELED {
            return SqlError::Timeout;
        }
        // Class 57P (the server is shutting down, or this backend was
        // terminated) and class 08 (connection exceptions): the connection is
        // gone, whatever the statement was.
        let code = db.code().code();
        if code.starts_with("57P") || code.starts_with("08") {
            return SqlError::Unavailable(format!(
                "the database connection was lost: {} ({code})",
                db.message()
            ));
        }
        return SqlError::Db(DbError {
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
        });
    }
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        return SqlError::Unavailable(format!("the database connection was lost: {e}"));
    }
    // Client-side: a parameter that cannot be encoded for its column, and the like.
    let message = match std::error::Error::source(&e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    };
    SqlError::Db(DbError {
        code: "42804".into(), // datatype_mismatch
        message,
        detail: None,
    })
}
