//! Read lanes: lone reads of one plugin's calls sharing its connections.
//!
//! In a lean session a plain read before the call's first write runs on its
//! own, in an implicit transaction of its own (see [`super::session`]). Such
//! a read needs nothing of the connection but the plugin's role and its
//! session defaults, which are the same on every connection of the plugin's
//! pool (the gate refuses whatever would change a session). So these reads
//! need not hold a connection each: they share one, *pipelined* — each sent
//! as soon as it is ready, behind those already in flight, every one with its
//! own `Sync`, so each still runs and commits (or fails) on its own.
//!
//! Why: a connection held per read waits out every round trip, and each read
//! wakes a server process that went back to sleep after the last one. With
//! several calls reading at once, reads that share a connection go out
//! together and are answered together, and the server process works through
//! them without sleeping in between (BENCHMARKS.md has the figures). To
//! make "together" more likely, a shared connection's I/O task lets the
//! other ready tasks run once before it writes (`pool::Driver`): calls just
//! answered queue their next reads meanwhile, and they go out in one write.
//!
//! A *lane* is one connection taken from the plugin's pool (with its turn,
//! as any call takes one) and shared by up to [`LANE_DEPTH`] reads at once.
//! A read first waits its turn for a seat (first come, first served: there
//! are [`LANE_DEPTH`] per connection of the pool), then joins the fullest
//! lane that has room and is *moving* (it answered a read within
//! [`STALL_AFTER`], so nobody queues long behind a slow statement); with
//! none, it opens a new lane, waiting for a connection like any call (or
//! until a lane has room and moves again). A lane
//! gives its connection back when its last read is done. Reads never starve
//! calls that write: while one waits for a connection, no lane takes new
//! reads, so lanes drain and give theirs back.
//!
//! What it costs: reads of *the same plugin* that share a lane queue behind
//! each other on the server, and a read whose result runs so far past the
//! byte cap that the socket's allowance is exceeded kills the connection
//! under the others (they fail as too large, saying it may have been another
//! read's result). A read that is abandoned (its call's deadline passed) or
//! stops reading a result past the caps is not cancelled on the server: a
//! cancel request stops whatever the server process runs at that moment,
//! possibly another call's read. Its lane is closed to new reads instead and
//! its connection closed, not given back, once the reads on it are done.
//! Nothing is ever shared with another plugin: lanes are per plugin pool.
//! `sandbox.shared_reads = false` turns lanes off.
//!
//! A lane counts its reads towards its connection's backstop reset, like
//! the calls that hold one (see `session::RESET_EVERY_CALLS`): once due, it
//! takes no new reads, and the last one out resets the session.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::pool::{PoolUnavailable, SandboxConnection, SandboxPool, SandboxPooled};

/// Most reads one lane carries at once. Deeper means more reads answered per
/// wake-up of the server process, and a longer queue behind a slow one.
pub const LANE_DEPTH: usize = 16;

/// A lane that answered nothing for this long while reads wait on it is
/// taken to be working on something slow: new reads go elsewhere.
pub const STALL_AFTER: Duration = Duration::from_millis(2);

/// The lanes of one plugin pool.
pub struct ReadLanes {
    open: Mutex<Vec<LaneEntry>>,
    /// One per read that may be on a lane at once, given out in the order
    /// asked, so a read that waits is never overtaken by later ones.
    seats: Arc<Semaphore>,
    /// Calls waiting for a connection of their own (to write): while there
    /// are any, lanes take no new reads.
    writers_waiting: AtomicUsize,
    /// Reads waiting for a connection to open a lane on, and the signal
    /// that a lane may have room for them after all (a read left one, one
    /// opened, the writers got their connections).
    readers_waiting: AtomicUsize,
    room: Notify,
}

impl std::fmt::Debug for ReadLanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadLanes")
            .field("open", &crate::sync::lock(&self.open).len())
            .finish_non_exhaustive()
    }
}

/// One lane as the pool keeps it.
struct LaneEntry {
    lane: Arc<Lane>,
    /// When it last took its first read or answered one.
    progress: Instant,
    /// Takes no new reads (its session is due a reset, or it is poisoned).
    closing: bool,
}

impl LaneEntry {
    /// Reads on it now: its connection's count, which only the lanes change,
    /// under their lock (its I/O driver reads it too, see `pool::Driver`).
    fn reads(&self) -> usize {
        self.lane.conn.sharing.load(Ordering::Relaxed)
    }
}

/// A connection carrying reads.
pub struct Lane {
    conn: SandboxPooled,
    /// Close the connection rather than give it back: a read on it was
    /// abandoned or stopped reading, or a reset that was due did not run.
    poisoned: AtomicBool,
}

impl Drop for Lane {
    fn drop(&mut self) {
        if *self.poisoned.get_mut() {
            self.conn.poisoned = true;
        }
    }
}

/// Bytes one read may have coming on a connection (its result's cap and the
/// protocol's overhead): a lane allows as many times this as it has reads.
#[derive(Debug, Clone, Copy)]
pub struct BytesPerRead(pub usize);

/// A read's place on a lane. Give it back with [`Seat::leave`]; dropping it
/// before (a call cancelled mid-read) leaves too, and closes the lane's
/// connection once the other reads on it are done.
pub struct Seat {
    lanes: Arc<ReadLanes>,
    lane: Arc<Lane>,
    allowance: BytesPerRead,
    left: bool,
    _turn: OwnedSemaphorePermit,
}

impl std::ops::Deref for Seat {
    type Target = SandboxConnection;
    fn deref(&self) -> &SandboxConnection {
        &self.lane.conn
    }
}

impl ReadLanes {
    /// Lanes over a pool of `connections`.
    pub fn new(connections: u32) -> Self {
        Self {
            open: Mutex::default(),
            seats: Arc::new(Semaphore::new(
                (connections.max(1) as usize).saturating_mul(LANE_DEPTH),
            )),
            writers_waiting: AtomicUsize::new(0),
            readers_waiting: AtomicUsize::new(0),
            room: Notify::new(),
        }
    }

    /// A seat for one read: its turn, then a place on the fullest moving
    /// lane with room, or on a new lane over a connection from `pool`
    /// (waiting for one like any call); within `timeout` for both waits.
    pub async fn seat(
        self: &Arc<Self>,
        pool: &SandboxPool,
        allowance: BytesPerRead,
        timeout: Duration,
    ) -> Result<Seat, PoolUnavailable> {
        let asked = Instant::now();
        let turn =
            match tokio::time::timeout(timeout, Arc::clone(&self.seats).acquire_owned()).await {
                Ok(Ok(turn)) => turn,
                // The semaphore is never closed; a wait that ran out is the pool being busy.
                _ => return Err(pool.busy()),
            };
        let turn = match self.join(allowance, turn) {
            Ok(seat) => return Ok(seat),
            Err(turn) => turn,
        };
        // No moving lane with room: a connection of its own if one is free
        // now, else a wait for one, given up as soon as a lane may have room
        // after all (one answered a read, or opened). Never a place behind a
        // lane that answers nothing: that read may take until its timeout.
        if let Some(conn) = pool.try_get_owned().await {
            return Ok(self.open_lane(conn?, allowance, turn));
        }
        self.readers_waiting.fetch_add(1, Ordering::AcqRel);
        let _done = Decrement(&self.readers_waiting);
        let mut turn = turn;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            turn = match self.join(allowance, turn) {
                Ok(seat) => return Ok(seat),
                Err(turn) => turn,
            };
            let left = timeout.saturating_sub(asked.elapsed());
            if left.is_zero() {
                return Err(pool.busy());
            }
            tokio::select! {
                conn = pool.get_owned_within(left) => {
                    return Ok(self.open_lane(conn?, allowance, turn));
                }
                () = &mut room => {}
            }
        }
    }

    /// Wakes the reads waiting for a connection: a lane may have room.
    fn signal_room(&self) {
        if self.readers_waiting.load(Ordering::Acquire) > 0 {
            self.room.notify_waiters();
        }
    }

    /// A new lane over `conn`, with the read asking for it on it.
    fn open_lane(
        self: &Arc<Self>,
        conn: SandboxPooled,
        allowance: BytesPerRead,
        turn: OwnedSemaphorePermit,
    ) -> Seat {
        let lane = Arc::new(Lane {
            conn,
            poisoned: AtomicBool::new(false),
        });
        let mut open = crate::sync::lock(&self.open);
        open.push(LaneEntry {
            lane: Arc::clone(&lane),
            progress: Instant::now(),
            closing: lane.conn.count_use(),
        });
        lane.conn.allowance.set(allowance.0);
        lane.conn.sharing.store(1, Ordering::Relaxed);
        drop(open);
        self.signal_room();
        Seat {
            lanes: Arc::clone(self),
            lane,
            allowance,
            left: false,
            _turn: turn,
        }
    }

    /// A seat on the fullest open lane that has room and is moving; the turn
    /// back if there is none.
    fn join(
        self: &Arc<Self>,
        allowance: BytesPerRead,
        turn: OwnedSemaphorePermit,
    ) -> Result<Seat, OwnedSemaphorePermit> {
        if self.writers_waiting.load(Ordering::Acquire) > 0 {
            return Err(turn);
        }
        let now = Instant::now();
        let mut open = crate::sync::lock(&self.open);
        let Some(entry) = open
            .iter_mut()
            .filter(|e| {
                !e.closing
                    && e.reads() < LANE_DEPTH
                    && now.saturating_duration_since(e.progress) < STALL_AFTER
            })
            .max_by_key(|e| e.reads())
        else {
            return Err(turn);
        };
        let reads = entry.reads() + 1;
        let conn = &entry.lane.conn;
        conn.allowance.set(allowance.0.saturating_mul(reads));
        conn.sharing.store(reads, Ordering::Relaxed);
        if conn.count_use() {
            entry.closing = true;
        }
        Ok(Seat {
            lanes: Arc::clone(self),
            lane: Arc::clone(&entry.lane),
            allowance,
            left: false,
            _turn: turn,
        })
    }

    /// Counts a call waiting for a connection of its own while `wait` runs.
    pub async fn writer_waits<T>(&self, wait: impl Future<Output = T>) -> T {
        self.writers_waiting.fetch_add(1, Ordering::AcqRel);
        let done = Decrement(&self.writers_waiting);
        let out = wait.await;
        drop(done);
        // Lanes take reads again once no writer waits.
        self.signal_room();
        out
    }

    /// Lanes open now, and reads on them.
    pub fn load(&self) -> (usize, usize) {
        let open = crate::sync::lock(&self.open);
        (open.len(), open.iter().map(LaneEntry::reads).sum())
    }

    /// Takes `seat` off its lane; whether it was the lane's last read and the
    /// lane's session is due its reset.
    fn take_off(&self, seat: &Seat) -> bool {
        let last = {
            let mut open = crate::sync::lock(&self.open);
            let Some(at) = open.iter().position(|e| Arc::ptr_eq(&e.lane, &seat.lane)) else {
                return false;
            };
            let entry = &mut open[at];
            let reads = entry.reads().saturating_sub(1);
            entry.progress = Instant::now();
            let conn = &entry.lane.conn;
            conn.sharing.store(reads, Ordering::Relaxed);
            if reads > 0 {
                conn.allowance.set(seat.allowance.0.saturating_mul(reads));
                None
            } else {
                let closing = entry.closing;
                open.swap_remove(at);
                // Between reads the connection carries only what the host sends.
                seat.lane.conn.allowance.set(usize::MAX);
                Some(closing)
            }
        };
        self.signal_room();
        last.unwrap_or(false)
    }

    /// Closes `seat`'s lane to new reads, and its connection once they are
    /// done, rather than give it back.
    fn poison(&self, seat: &Seat) {
        seat.lane.poisoned.store(true, Ordering::Relaxed);
        let mut open = crate::sync::lock(&self.open);
        if let Some(entry) = open.iter_mut().find(|e| Arc::ptr_eq(&e.lane, &seat.lane)) {
            entry.closing = true;
        }
    }
}

/// Decrements a count of waiters, also when the wait is dropped.
struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Seat {
    /// The read left the connection in a state nobody else should inherit
    /// (the rest of a result it stopped reading is still coming): the lane
    /// takes no new reads, and its connection is closed, not given back, once
    /// the reads on it are done. A cancel request is not sent: it would stop
    /// whatever the server process runs then, possibly another call's read.
    pub fn poison(&self) {
        self.lanes.poison(self);
    }

    /// The read is done: off the lane, and if it was the last read of a lane
    /// due its reset, the reset runs now (bounded by `timeout`); a reset that
    /// fails or does not answer closes the connection instead.
    pub async fn leave(mut self, timeout: Duration) {
        self.left = true;
        if !self.lanes.take_off(&self) || self.lane.poisoned.load(Ordering::Relaxed) {
            return;
        }
        // Until the reset has answered, the connection is not to be given
        // back (also should this future be dropped half-way).
        self.lane.poisoned.store(true, Ordering::Relaxed);
        let reset = self
            .lane
            .conn
            .client
            .batch_execute(super::session::SESSION_RESET);
        if let Ok(Ok(())) = tokio::time::timeout(timeout, reset).await {
            self.lane.conn.was_reset();
            self.lane.poisoned.store(false, Ordering::Relaxed);
        }
    }
}

impl Drop for Seat {
    /// A read dropped before it was done (its call cancelled, or its deadline
    /// passed): its statement may still run on the server and its answer is
    /// still coming, so the connection is not given back to anyone.
    fn drop(&mut self) {
        if !self.left {
            self.lanes.poison(self);
            self.lanes.take_off(self);
        }
    }
}
