//! Per-plugin connection pools.
//!
//! Each plugin connects as its own database role through its own small bb8
//! pool, filled lazily. All plugin pools together draw from one connection
//! budget (a semaphore; a connection holds its permit until it closes), so
//! plugins can never exhaust the server's `max_connections`, and idle
//! connections are reaped. A connection can be *poisoned* — after a cancelled
//! statement, say — and is then closed instead of returned to the pool.
//!
//! The socket under every plugin connection counts what it reads for the
//! current statement: past the statement's byte allowance the read fails, the
//! connection dies, and the host never holds an unbounded result (not even a
//! single 500 MB value, which tokio-postgres would otherwise read whole).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls};

use super::lanes::{BytesPerRead, ReadLanes, Seat};
use super::session::RESET_EVERY_CALLS;
use crate::db::LastConnectError;

/// A pool of one plugin's connections.
///
/// bb8 retries a failing connect in the background until the caller's wait
/// times out, and then reports only "timed out". The pool keeps the last
/// connect error so a call can say *why* (refused, authentication, too many
/// clients, the budget) rather than just that it waited.
///
/// Calls take connections in the order they asked. bb8 alone is not fair: a
/// returned connection wakes one waiter, but a call that asks in the
/// meantime takes it first, so under load a few calls could wait out the
/// whole connect timeout while others went through in a millisecond. A FIFO
/// semaphore with one permit per connection (`turns`) in front of the pool
/// gives the connections out in turn.
#[derive(Clone)]
pub struct SandboxPool {
    pool: bb8::Pool<SandboxManager>,
    turns: Arc<Semaphore>,
    /// Connections shared by reads that run on their own (see [`super::lanes`]).
    lanes: Arc<ReadLanes>,
    last_error: LastConnectError,
    max_connections: u32,
    connect_timeout: Duration,
}

impl std::fmt::Debug for SandboxPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxPool")
            .field("state", &self.pool.state())
            .finish_non_exhaustive()
    }
}

/// Why a plugin's pool gave no connection: what to check, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PoolUnavailable(pub String);

impl SandboxPool {
    /// A connection of the call's own, to hold until it ends (its
    /// transaction); read lanes take no new reads while it waits.
    pub async fn get_exclusive(&self) -> Result<SandboxPooled, PoolUnavailable> {
        self.lanes.writer_waits(self.get_owned()).await
    }

    /// A seat for one read that runs on its own, on a connection it may share
    /// with other such reads of the plugin (see [`super::lanes`]).
    pub async fn read_seat(&self, allowance: BytesPerRead) -> Result<Seat, PoolUnavailable> {
        self.lanes.seat(self, allowance, self.connect_timeout).await
    }

    /// Whether `other` is this same pool (a later version of the plugin took
    /// it over), not merely one alike.
    pub fn is(&self, other: &SandboxPool) -> bool {
        Arc::ptr_eq(&self.turns, &other.turns)
    }

    /// Read lanes open now, and reads on them.
    pub fn lanes(&self) -> (usize, usize) {
        self.lanes.load()
    }

    /// A connection, or why there is none within the connect timeout.
    pub async fn get_owned(&self) -> Result<SandboxPooled, PoolUnavailable> {
        self.get_owned_within(self.connect_timeout).await
    }

    /// A connection if one is free now (waiting, if it must, only for bb8
    /// to open it); `None` if all are taken.
    pub async fn try_get_owned(&self) -> Option<Result<SandboxPooled, PoolUnavailable>> {
        let asked = Instant::now();
        let turn = Arc::clone(&self.turns).try_acquire_owned().ok()?;
        let got = tokio::time::timeout(self.connect_timeout, self.pool.get_owned()).await;
        Some(match got {
            Ok(Ok(conn)) => Ok(SandboxPooled { conn, _turn: turn }),
            Ok(Err(e)) => Err(self.unavailable(e, asked)),
            Err(_) => Err(self.unavailable(bb8::RunError::TimedOut, asked)),
        })
    }

    /// Why a wait for a connection of this pool ran out without one coming.
    pub fn busy(&self) -> PoolUnavailable {
        self.unavailable(bb8::RunError::TimedOut, Instant::now())
    }

    /// A connection, or why there is none within `timeout`.
    pub async fn get_owned_within(
        &self,
        timeout: Duration,
    ) -> Result<SandboxPooled, PoolUnavailable> {
        let asked = Instant::now();
        // One deadline for both waits: for a turn, then for bb8 (which is
        // quick with a turn in hand unless it has to connect).
        let wait = async {
            let turn = Arc::clone(&self.turns)
                .acquire_owned()
                .await
                .map_err(|_| bb8::RunError::TimedOut)?; // never closed
            let conn = self.pool.get_owned().await?;
            Ok(SandboxPooled { conn, _turn: turn })
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result.map_err(|e| self.unavailable(e, asked)),
            Err(_) => Err(self.unavailable(bb8::RunError::TimedOut, asked)),
        }
    }

    /// Why no connection came, for the plugin and the operator.
    fn unavailable(&self, e: bb8::RunError<ConnectError>, asked: Instant) -> PoolUnavailable {
        PoolUnavailable(match e {
            bb8::RunError::User(e) => format!("cannot connect to PostgreSQL: {e}"),
            bb8::RunError::TimedOut => match self.last_error.since(asked) {
                Some(cause) => format!(
                    "cannot connect to PostgreSQL within {} ms (database.connect_timeout_ms): {cause}",
                    self.connect_timeout.as_millis()
                ),
                None => format!(
                    "all {} connections of the plugin (sandbox.connections_per_plugin) stayed busy for {} ms (database.connect_timeout_ms)",
                    self.max_connections,
                    self.connect_timeout.as_millis()
                ),
            },
        })
    }

    /// Connections open and idle.
    pub fn state(&self) -> bb8::State {
        self.pool.state()
    }
}

/// A connection taken from a [`SandboxPool`], with its caller's turn.
pub struct SandboxPooled {
    // Dropped in this order: the connection is back in the pool before the
    // turn passes to the next caller, who therefore finds it idle.
    conn: bb8::PooledConnection<'static, SandboxManager>,
    _turn: OwnedSemaphorePermit,
}

impl std::ops::Deref for SandboxPooled {
    type Target = SandboxConnection;
    fn deref(&self) -> &SandboxConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for SandboxPooled {
    fn deref_mut(&mut self) -> &mut SandboxConnection {
        &mut self.conn
    }
}

/// Why a plugin connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Every connection of the shared plugin budget is in use.
    #[error("the plugin connection budget ({0} connections, sandbox.connection_budget) is used up")]
    BudgetExhausted(u32),
    /// The server could not be reached.
    #[error("cannot reach PostgreSQL: {0}")]
    Io(io::Error),
    /// PostgreSQL refused the connection (authentication, limits, …).
    #[error("{}", crate::db::pg_message(.0))]
    Postgres(tokio_postgres::Error),
    /// Plugin pools connect over TCP only.
    #[error(
        "plugin connections need a TCP host (got a Unix socket path); set the database URL's host to an address"
    )]
    NotTcp,
}

// The causes are not given as sources: the messages above include them, and
// an error chain printed in full would say them twice.
impl From<io::Error> for ConnectError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

impl From<tokio_postgres::Error> for ConnectError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Postgres(error)
    }
}

impl crate::db::ConnectFailure for ConnectError {
    fn told(&self) -> String {
        self.to_string()
    }
}

/// Bytes one statement may read from the server, shared with the socket.
#[derive(Debug, Default)]
pub struct ReadAllowance {
    remaining: AtomicUsize,
    exceeded: AtomicBool,
}

impl ReadAllowance {
    /// Allows `bytes` more until the next call; `usize::MAX` lifts the limit.
    pub fn set(&self, bytes: usize) {
        self.remaining.store(bytes, Ordering::SeqCst);
    }

    /// Whether a read ran past the allowance (the connection is then dead).
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::SeqCst)
    }
}

/// A TCP stream that fails reads beyond its [`ReadAllowance`].
struct LimitedStream {
    inner: TcpStream,
    allowance: Arc<ReadAllowance>,
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled().len() - before;
            let allowance = &self.allowance;
            let previous = allowance
                .remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| {
                    Some(r.saturating_sub(read))
                })
                .unwrap_or(0);
            if read > previous {
                allowance.exceeded.store(true, Ordering::SeqCst);
                return Poll::Ready(Err(io::Error::other(
                    "the result exceeds the plugin's byte limit",
                )));
            }
        }
        polled
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One plugin connection.
pub struct SandboxConnection {
    /// The client, logged in as the plugin's role.
    pub client: Client,
    /// Set when the connection must not be reused (closed on return).
    pub poisoned: bool,
    /// The socket's read allowance for the current statement.
    pub allowance: Arc<ReadAllowance>,
    /// Where the server is, for cancel requests.
    pub server: (String, u16),
    /// Statements this connection has prepared, by SQL text.
    pub statements: StatementCache,
    /// Times a call gave this connection back (at its end, or after a read
    /// that ran on its own), and reads it carried on a lane, since its
    /// session was last reset: see [`Self::count_use`].
    uses_since_reset: AtomicU32,
    /// Reads sharing it on a read lane now (0 when a call holds it alone),
    /// set by the lanes alone; its I/O [`Driver`] reads it.
    pub sharing: Arc<AtomicUsize>,
    _permit: OwnedSemaphorePermit,
}

impl SandboxConnection {
    /// Counts one more use of the session since its last reset; whether it
    /// is now due its backstop reset (`session::RESET_EVERY_CALLS`).
    pub fn count_use(&self) -> bool {
        self.uses_since_reset.fetch_add(1, Ordering::Relaxed) + 1 >= RESET_EVERY_CALLS
    }

    /// Whether one more use would make the session due its reset.
    pub fn next_use_due(&self) -> bool {
        self.uses_since_reset.load(Ordering::Relaxed) + 1 >= RESET_EVERY_CALLS
    }

    /// The session was just reset.
    pub fn was_reset(&self) {
        self.uses_since_reset.store(0, Ordering::Relaxed);
    }

    /// Asks the server to cancel whatever this connection is running, and marks
    /// the connection so it is closed rather than reused.
    pub async fn cancel(&mut self) {
        self.poisoned = true;
        let token = self.client.cancel_token();
        let (host, port) = self.server.clone();
        // Best effort: the connection is discarded either way, which ends the
        // statement on the server side once it notices.
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                token.cancel_query_raw(stream, NoTls),
            )
            .await;
        }
    }
}

/// Statements prepared on one connection, by SQL text, so a plugin that runs
/// the same statement call after call pays for parsing and planning once per
/// connection, not once per call. Connections belong to one plugin's role, so
/// nothing is shared between plugins. Bounded: when full it starts over.
#[derive(Debug, Default)]
pub struct StatementCache(
    std::sync::Mutex<std::collections::HashMap<String, tokio_postgres::Statement>>,
);

/// Statements kept per connection.
pub const CACHED_STATEMENTS: usize = 256;

impl StatementCache {
    /// The prepared statement for `sql`, if this connection has one.
    pub fn get(&self, sql: &str) -> Option<tokio_postgres::Statement> {
        crate::sync::lock(&self.0).get(sql).cloned()
    }

    /// Keeps `statement` for `sql`.
    pub fn insert(&self, sql: &str, statement: tokio_postgres::Statement) {
        let mut cache = crate::sync::lock(&self.0);
        if cache.len() >= CACHED_STATEMENTS {
            cache.clear();
        }
        cache.insert(sql.to_string(), statement);
    }

    /// Forgets `sql` (its statement failed in a way re-preparing may fix).
    pub fn evict(&self, sql: &str) {
        crate::sync::lock(&self.0).remove(sql);
    }

    /// Forgets everything (after `DISCARD ALL`, which deallocates them all).
    pub fn clear(&self) {
        crate::sync::lock(&self.0).clear();
    }
}

/// Makes connections for one plugin's pool.
pub struct SandboxManager {
    config: tokio_postgres::Config,
    budget: Arc<Semaphore>,
    budget_size: u32,
}

impl bb8::ManageConnection for SandboxManager {
    type Connection = SandboxConnection;
    type Error = ConnectError;

    async fn connect(&self) -> Result<SandboxConnection, ConnectError> {
        let permit = Arc::clone(&self.budget)
            .try_acquire_owned()
            .map_err(|_| ConnectError::BudgetExhausted(self.budget_size))?;
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            Some(Host::Unix(_)) => return Err(ConnectError::NotTcp),
            None => "localhost".to_string(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let server = (host.clone(), port);
        let connect = TcpStream::connect((host.as_str(), port));
        let tcp = match self.config.get_connect_timeout() {
            Some(timeout) => tokio::time::timeout(*timeout, connect)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting timed out"))??,
            None => connect.await?,
        };
        tcp.set_nodelay(true)?;
        let allowance = Arc::new(ReadAllowance::default());
        allowance.set(usize::MAX);
        let stream = LimitedStream {
            inner: tcp,
            allowance: Arc::clone(&allowance),
        };
        let (client, connection) = self.config.connect_raw(stream, NoTls).await?;
        let sharing = Arc::new(AtomicUsize::new(0));
        // Errors surface on the client (closed connection); nothing to add here.
        tokio::spawn(Driver {
            connection,
            sharing: Arc::clone(&sharing),
            deferred: false,
        });
        Ok(SandboxConnection {
            client,
            poisoned: false,
            allowance,
            server,
            statements: StatementCache::default(),
            uses_since_reset: AtomicU32::new(0),
            sharing,
            _permit: permit,
        })
    }

    async fn is_valid(&self, conn: &mut SandboxConnection) -> Result<(), ConnectError> {
        conn.client
            .simple_query("")
            .await
            .map(|_| ())
            .map_err(ConnectError::from)
    }

    fn has_broken(&self, conn: &mut SandboxConnection) -> bool {
        conn.poisoned || conn.client.is_closed()
    }
}

/// Settings of a plugin pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections the plugin may hold.
    pub max_connections: u32,
    /// How long a call waits for a connection.
    pub connect_timeout: Duration,
    /// Idle connections are closed after this long.
    pub idle_timeout: Duration,
    /// `statement_timeout` of every session (a startup option, so `RESET ALL`
    /// at the end of a call restores it).
    pub statement_timeout: Duration,
    /// The plugin's schema, its whole `search_path` (also a startup option).
    pub search_path: String,
}

/// Builds the pool of one plugin, connecting as `role` with `password`.
pub fn build_pool(
    server: &tokio_postgres::Config,
    role: &str,
    password: &str,
    budget: &Arc<Semaphore>,
    budget_size: u32,
    settings: &PoolSettings,
) -> SandboxPool {
    let mut config = server.clone();
    config
        .user(role)
        .password(password)
        .application_name(format!("assay plugin {role}"))
        // Startup options, not role settings: they outrank whatever the role's
        // own session defaults say (a role may change those for itself), and
        // `RESET ALL` returns to them. standard_conforming_strings is fixed so
        // that the statement gate and the server read string literals the same
        // way. Sessions are read-only unless a call opens its transaction with
        // `BEGIN READ WRITE`, so a statement run on its own cannot write (see
        // `session`). (Schema names are `[a-z0-9_]`: no quoting needed.)
        .options(format!(
            "-c statement_timeout={} -c search_path={} -c standard_conforming_strings=on -c default_transaction_read_only=on",
            settings.statement_timeout.as_millis(),
            settings.search_path,
        ))
        .connect_timeout(settings.connect_timeout);
    let last_error = LastConnectError::default();
    let max_connections = settings.max_connections.max(1);
    let pool = bb8::Pool::builder()
        .max_size(max_connections)
        .min_idle(None)
        .connection_timeout(settings.connect_timeout)
        .idle_timeout(Some(settings.idle_timeout))
        .reaper_rate(settings.idle_timeout.min(Duration::from_secs(30)))
        // A broken connection shows on first use and is then discarded; testing
        // every checkout would cost a round trip per call.
        .test_on_check_out(false)
        .error_sink(Box::new(last_error.clone()))
        .build_unchecked(SandboxManager {
            config,
            budget: Arc::clone(budget),
            budget_size,
        });
    SandboxPool {
        pool,
        turns: Arc::new(Semaphore::new(max_connections as usize)),
        lanes: Arc::new(ReadLanes::new(max_connections)),
        last_error,
        max_connections,
        connect_timeout: settings.connect_timeout,
    }
}

/// Drives one connection's I/O (tokio-postgres' connection future: writing
/// what its client queued, routing what the server answered).
///
/// While several reads share the connection on a read lane, each time it
/// is woken it first lets the other tasks that are ready run, once: calls
/// answered a moment ago then queue their next reads before it writes, and
/// those go out in one write, to be answered by the server process in one
/// wake-up, rather than one write and one wake-up each. With one read or
/// none in flight there is nothing to gather, and it runs at once (letting
/// others go first costs a lone call a trip through the scheduler).
struct Driver<F> {
    connection: F,
    sharing: Arc<AtomicUsize>,
    /// It let the others go first since it was last woken.
    deferred: bool,
}

impl<F: std::future::Future + Unpin> std::future::Future for Driver<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.deferred && self.sharing.load(Ordering::Relaxed) > 1 {
            self.deferred = true;
            // Woken from its own poll, a tokio task goes to the back of the queue.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.deferred = false;
        Pin::new(&mut self.connection).poll(cx).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    use super::Driver;

    /// A connection future that counts its polls and never finishes.
    struct CountingPolls(Arc<AtomicUsize>);

    impl Future for CountingPolls {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Poll::Pending
        }
    }

    /// A waker that counts how often it was woken.
    struct CountingWakes(AtomicUsize);

    impl Wake for CountingWakes {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Alone, a connection's I/O runs at every wake-up; shared by several
    /// reads, every other poll hands the turn on (waking itself, so it is
    /// polled again after the tasks already ready) and the next one runs it.
    #[test]
    fn the_driver_lets_others_go_first_only_while_reads_share_it() {
        let polls = Arc::new(AtomicUsize::new(0));
        let sharing = Arc::new(AtomicUsize::new(0));
        let mut driver = Driver {
            connection: CountingPolls(Arc::clone(&polls)),
            sharing: Arc::clone(&sharing),
            deferred: false,
        };
        let wakes = Arc::new(CountingWakes(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let mut poll = |driver: &mut Driver<CountingPolls>| {
            assert!(Pin::new(driver).poll(&mut cx).is_pending());
            (
                polls.load(Ordering::Relaxed),
                wakes.0.load(Ordering::Relaxed),
            )
        };

        for sharing_now in [0, 1] {
            sharing.store(sharing_now, Ordering::Relaxed);
            let (before, _) = poll(&mut driver);
            assert_eq!(poll(&mut driver), (before + 1, 0), "runs at once");
        }

        sharing.store(3, Ordering::Relaxed);
        let before = polls.load(Ordering::Relaxed);
        assert_eq!(poll(&mut driver), (before, 1), "defers once, woken");
        assert_eq!(poll(&mut driver), (before + 1, 1), "then runs");
        assert_eq!(poll(&mut driver), (before + 1, 2), "defers again");

        sharing.store(1, Ordering::Relaxed);
        assert_eq!(poll(&mut driver), (before + 2, 2), "alone again: runs");
        assert_eq!(poll(&mut driver), (before + 3, 2));
    }
}
