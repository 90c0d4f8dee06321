//! The open client connections of `assay up`: how many there are, which have
//! a request in flight, and since when each has been idle.
//!
//! The accept loop asks the [`Registry`] to admit every new connection; at
//! `server.max_connections` it closes the connection idle the longest to make
//! room, and only when every connection is busy is the new one turned away.
//! Each connection's task watches its own [`Connection`] to close it once it
//! has been idle for `server.idle_timeout_ms` (which also ends clients that
//! send their headers a byte at a time: until hyper has the whole head, no
//! request is in flight).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

/// What one connection is doing.
#[derive(Debug, Clone, Copy)]
struct Activity {
    /// Requests hyper handed to the service that it has not answered yet.
    in_flight: u32,
    /// When `in_flight` last fell to 0, or the connection opened.
    idle_since: Instant,
}

/// One open connection, shared by the registry and the connection's task.
#[derive(Debug)]
pub struct Connection {
    activity: Mutex<Activity>,
    /// Told when the registry closed this connection to make room.
    evicted: Notify,
}

impl Connection {
    fn new() -> Self {
        Self {
            activity: Mutex::new(Activity {
                in_flight: 0,
                idle_since: Instant::now(),
            }),
            evicted: Notify::new(),
        }
    }

    fn activity(&self) -> MutexGuard<'_, Activity> {
        // The counters stay meaningful even if a holder panicked: every
        // update is a single assignment.
        crate::sync::lock(&self.activity)
    }

    /// Counts a request as in flight until the returned guard drops (when the
    /// service has answered, or the request was abandoned).
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.activity().in_flight += 1;
        InFlight(Arc::clone(self))
    }

    /// Since when the connection has had no request in flight; `None` while
    /// it has one.
    pub fn idle_since(&self) -> Option<Instant> {
        let activity = self.activity();
        (activity.in_flight == 0).then_some(activity.idle_since)
    }

    /// Resolves once the registry has closed this connection to make room.
    /// (A notification sent before this is awaited is kept, not lost.)
    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

/// A request in flight on a connection; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight(Arc<Connection>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut activity = self.0.activity();
        activity.in_flight = activity.in_flight.saturating_sub(1);
        if activity.in_flight == 0 {
            activity.idle_since = Instant::now();
        }
    }
}

/// How long a connection must have been idle before it may be closed to make
/// room. A client that has just connected has not had the time to send its
/// request: closing it would answer nothing at all (curl's "empty reply"),
/// where at the limit it should be the newcomer that gets a 503.
pub const EVICTABLE_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Every open connection.
#[derive(Debug)]
pub struct Registry {
    /// `server.max_connections`.
    max: usize,
    /// See [`EVICTABLE_AFTER`].
    evictable_after: std::time::Duration,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    connections: HashMap<u64, Arc<Connection>>,
}

/// The answer to a new connection.
#[derive(Debug)]
pub enum Admission {
    /// Serve it; it stays counted until the registration drops.
    Admitted(Registration),
    /// At the limit and no connection is idle: turn it away.
    Full,
}

impl Registry {
    /// A registry admitting at most `max` connections at once (at least one),
    /// closing one to make room only once it has been idle `evictable_after`.
    pub fn new(max: usize, evictable_after: std::time::Duration) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            evictable_after,
            open: Mutex::new(Open::default()),
        })
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        // A map of handles: still consistent if a holder panicked.
        crate::sync::lock(&self.open)
    }

    /// Admits a new connection. At the limit, the connection idle the longest
    /// is closed (and no longer counted) to make room; if none has been idle
    /// long enough the answer is [`Admission::Full`].
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut open = self.open();
        if open.connections.len() >= self.max {
            let longest_idle = open
                .connections
                .iter()
                .filter_map(|(id, c)| c.idle_since().map(|since| (since, *id)))
                .filter(|(since, _)| since.elapsed() >= self.evictable_after)
                .min();
            let Some((_, id)) = longest_idle else {
                return Admission::Full;
            };
            if let Some(evicted) = open.connections.remove(&id) {
                evicted.evicted.notify_one();
            }
        }
        let id = open.next_id;
        open.next_id += 1;
        let connection = Arc::new(Connection::new());
        open.connections.insert(id, Arc::clone(&connection));
        Admission::Admitted(Registration {
            id,
            connection,
            registry: Arc::clone(self),
        })
    }

    /// Connections counted now.
    pub fn len(&self) -> usize {
        self.open().connections.len()
    }

    /// Whether no connection is counted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An admitted connection; it stops being counted when this drops (its task
/// ended, or was aborted).
#[derive(Debug)]
pub struct Registration {
    id: u64,
    connection: Arc<Connection>,
    registry: Arc<Registry>,
}

impl Registration {
    /// The connection's shared state.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.open().connections.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(registry: &Arc<Registry>) -> Registration {
        match registry.admit() {
            Admission::Admitted(r) => r,
            Admission::Full => panic!("refused below the limit"),
        }
    }

    #[test]
    fn the_longest_idle_connection_makes_room_and_busy_ones_never_do() {
        let registry = Registry::new(2, std::time::Duration::ZERO);
        let first = admitted(&registry);
        let second = admitted(&registry);
        let _busy = second.connection().begin_request();
        // At the limit: the idle one goes.
        let third = admitted(&registry);
        assert_eq!(registry.len(), 2);
        assert!(
            futures::FutureExt::now_or_never(first.connection().evicted()).is_some(),
            "the idle connection was told to close"
        );
        let _busy_too = third.connection().begin_request();
        // Every connection busy: refused.
        assert!(matches!(registry.admit(), Admission::Full));
        drop(first);
        assert_eq!(
            registry.len(),
            2,
            "an evicted connection is not counted twice"
        );
    }

    /// A connection that has only just opened (or just answered) is not
    /// closed for a newcomer: the newcomer is turned away instead.
    #[test]
    fn a_connection_idle_only_a_moment_is_not_closed_to_make_room() {
        let registry = Registry::new(1, std::time::Duration::from_secs(3600));
        let first = admitted(&registry);
        assert!(matches!(registry.admit(), Admission::Full));
        assert!(
            futures::FutureExt::now_or_never(first.connection().evicted()).is_none(),
            "the new connection was left alone"
        );
    }

    #[test]
    fn a_connection_is_idle_again_when_its_last_request_ends() {
        let registry = Registry::new(1, std::time::Duration::ZERO);
        let only = admitted(&registry);
        let connection = Arc::clone(only.connection());
        let one = connection.begin_request();
        let two = connection.begin_request();
        assert!(connection.idle_since().is_none());
        drop(one);
        assert!(connection.idle_since().is_none());
        drop(two);
        assert!(connection.idle_since().is_some());
        drop(only);
        assert!(registry.is_empty());
    }
}
