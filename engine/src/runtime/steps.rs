//! Where a call's time goes, by step, from the engine's own clocks: the
//! instance, the plugin's code, each capability's host calls and round trips,
//! the end of the call. Every call is timed (a handful of clock reads, well
//! under a microsecond against the tens a call costs) and added to the
//! runtime's [`StepTotals`]; `assay bench query` reports the mean per call
//! of each step beside its throughput.
//!
//! These are wall-clock times as the call lived them: under concurrency they
//! include time the call's task waited for a core. Which instructions a step
//! spends its time in is `perf`'s business (BENCHMARKS.md "Profiling").

use std::ops::{AddAssign, Sub};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// What a capability's host functions spent in one call, as the capability
/// timed them (see `CallEnd::host_steps`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HostSteps {
    /// Host functions the plugin called.
    pub calls: u64,
    /// Time inside them, everything below included.
    pub in_host: Duration,
    /// Of which, checking a request before it is sent (the statement gate).
    pub checking: Duration,
    /// Of which, waiting for a shared resource (a pooled connection).
    pub waiting: Duration,
    /// Requests sent to a server for the plugin (a statement, with a `BEGIN`
    /// pipelined in front of it counted in the same one).
    pub round_trips: u64,
    /// Of which, waiting on those requests' answers.
    pub on_server: Duration,
    /// Round trips made to end the call (commit or roll back, reset),
    /// outside any host function.
    pub ending_round_trips: u64,
}

impl AddAssign for HostSteps {
    fn add_assign(&mut self, other: Self) {
        self.calls += other.calls;
        self.in_host += other.in_host;
        self.checking += other.checking;
        self.waiting += other.waiting;
        self.round_trips += other.round_trips;
        self.on_server += other.on_server;
        self.ending_round_trips += other.ending_round_trips;
    }
}

/// One call, step by step.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallSteps {
    /// From the call's start to its end, ending included.
    pub total: Duration,
    /// Making the instance; `None` when the call ran in a reused one.
    pub instantiate: Option<Duration>,
    /// The export call itself: lowering the document, the plugin's code, its
    /// host calls, lifting what it returned.
    pub call: Duration,
    /// Ending the call (keeping or undoing its effects).
    pub ending: Duration,
    /// The host calls, as the capabilities timed them.
    pub host: HostSteps,
}

/// Every call's steps added up since the runtime started; lock-free, shared by
/// every call. Read with [`StepTotals::snapshot`] and subtract two snapshots
/// for a span of time.
#[derive(Debug, Default)]
pub struct StepTotals {
    calls: AtomicU64,
    instantiated: AtomicU64,
    total_ns: AtomicU64,
    instantiate_ns: AtomicU64,
    call_ns: AtomicU64,
    ending_ns: AtomicU64,
    host_calls: AtomicU64,
    in_host_ns: AtomicU64,
    checking_ns: AtomicU64,
    waiting_ns: AtomicU64,
    round_trips: AtomicU64,
    on_server_ns: AtomicU64,
    ending_round_trips: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl StepTotals {
    /// Adds one call.
    pub fn record(&self, steps: &CallSteps) {
        let add = |counter: &AtomicU64, value: u64| {
            counter.fetch_add(value, Ordering::Relaxed);
        };
        add(&self.calls, 1);
        if let Some(instantiate) = steps.instantiate {
            add(&self.instantiated, 1);
            add(&self.instantiate_ns, nanos(instantiate));
        }
        add(&self.total_ns, nanos(steps.total));
        add(&self.call_ns, nanos(steps.call));
        add(&self.ending_ns, nanos(steps.ending));
        let host = &steps.host;
        add(&self.host_calls, host.calls);
        add(&self.in_host_ns, nanos(host.in_host));
        add(&self.checking_ns, nanos(host.checking));
        add(&self.waiting_ns, nanos(host.waiting));
        add(&self.round_trips, host.round_trips);
        add(&self.on_server_ns, nanos(host.on_server));
        add(&self.ending_round_trips, host.ending_round_trips);
    }

    /// The sums so far.
    pub fn snapshot(&self) -> StepSums {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StepSums {
            calls: get(&self.calls),
            instantiated: get(&self.instantiated),
            total_ns: get(&self.total_ns),
            instantiate_ns: get(&self.instantiate_ns),
            call_ns: get(&self.call_ns),
            ending_ns: get(&self.ending_ns),
            host_calls: get(&self.host_calls),
            in_host_ns: get(&self.in_host_ns),
            checking_ns: get(&self.checking_ns),
            waiting_ns: get(&self.waiting_ns),
            round_trips: get(&self.round_trips),
            on_server_ns: get(&self.on_server_ns),
            ending_round_trips: get(&self.ending_round_trips),
        }
    }
}

/// A reading of [`StepTotals`] (or the difference of two).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StepSums {
    /// Calls made.
    pub calls: u64,
    /// Of which, in a new instance.
    pub instantiated: u64,
    total_ns: u64,
    instantiate_ns: u64,
    call_ns: u64,
    ending_ns: u64,
    host_calls: u64,
    in_host_ns: u64,
    checking_ns: u64,
    waiting_ns: u64,
    round_trips: u64,
    on_server_ns: u64,
    ending_round_trips: u64,
}

impl StepSums {
    /// Each field of `self` and `other` combined by `f`.
    fn zip_with(self, other: Self, f: impl Fn(u64, u64) -> u64) -> Self {
        Self {
            calls: f(self.calls, other.calls),
            instantiated: f(self.instantiated, other.instantiated),
            total_ns: f(self.total_ns, other.total_ns),
            instantiate_ns: f(self.instantiate_ns, other.instantiate_ns),
            call_ns: f(self.call_ns, other.call_ns),
            ending_ns: f(self.ending_ns, other.ending_ns),
            host_calls: f(self.host_calls, other.host_calls),
            in_host_ns: f(self.in_host_ns, other.in_host_ns),
            checking_ns: f(self.checking_ns, other.checking_ns),
            waiting_ns: f(self.waiting_ns, other.waiting_ns),
            round_trips: f(self.round_trips, other.round_trips),
            on_server_ns: f(self.on_server_ns, other.on_server_ns),
            ending_round_trips: f(self.ending_round_trips, other.ending_round_trips),
        }
    }
}

impl Sub for StepSums {
    type Output = StepSums;

    /// What was added between two readings.
    fn sub(self, earlier: Self) -> Self {
        self.zip_with(earlier, u64::saturating_sub)
    }
}

impl std::ops::AddAssign for StepSums {
    /// Adds another span's sums (for spans measured in several pieces).
    fn add_assign(&mut self, other: Self) {
        *self = self.zip_with(other, u64::saturating_add);
    }
}

impl StepSums {
    /// The mean call, in microseconds per step; `None` if no call was made.
    pub fn per_call(&self) -> Option<StepsPerCall> {
        if self.calls == 0 {
            return None;
        }
        let calls = self.calls as f64;
        let us = |ns: u64| ns as f64 / 1_000.0 / calls;
        let in_plugin = self.call_ns.saturating_sub(self.in_host_ns);
        let in_host_rest = self
            .in_host_ns
            .saturating_sub(self.checking_ns + self.waiting_ns + self.on_server_ns);
        let accounted = self.instantiate_ns + self.call_ns + self.ending_ns;
        Some(StepsPerCall {
            calls: self.calls,
            instantiated: self.instantiated,
            total_us: us(self.total_ns),
            instantiate_us: us(self.instantiate_ns),
            in_plugin_us: us(in_plugin),
            host_calls: self.host_calls as f64 / calls,
            checking_us: us(self.checking_ns),
            waiting_us: us(self.waiting_ns),
            round_trips: self.round_trips as f64 / calls,
            on_server_us: us(self.on_server_ns),
            in_host_rest_us: us(in_host_rest),
            ending_us: us(self.ending_ns),
            ending_round_trips: self.ending_round_trips as f64 / calls,
            other_us: us(self.total_ns.saturating_sub(accounted)),
        })
    }
}

/// The mean call of a span, step by step: times in microseconds, counts per
/// call. The times add up to `total_us`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepsPerCall {
    /// Calls measured.
    pub calls: u64,
    /// Of which, in a new instance (the rest in reused ones).
    pub instantiated: u64,
    /// A whole call.
    pub total_us: f64,
    /// Making instances (averaged over every call, reused ones too).
    pub instantiate_us: f64,
    /// In the export call outside host functions: lowering the document, the
    /// plugin's code, lifting its answer.
    pub in_plugin_us: f64,
    /// Host functions called.
    pub host_calls: f64,
    /// In host functions, checking requests (the statement gate).
    pub checking_us: f64,
    /// In host functions, waiting for a pooled connection.
    pub waiting_us: f64,
    /// Round trips to the server inside host functions.
    pub round_trips: f64,
    /// In host functions, waiting on the server's answers.
    pub on_server_us: f64,
    /// In host functions, everything else (converting values, bookkeeping).
    pub in_host_rest_us: f64,
    /// Ending the call: commit or roll back, reset, the connection returned.
    pub ending_us: f64,
    /// Round trips made to end the call.
    pub ending_round_trips: f64,
    /// Outside all of the above: the store, the deadline, the call's set-up.
    pub other_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_of_a_call_add_up_to_its_total() {
        let totals = StepTotals::default();
        let before = totals.snapshot();
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        totals.record(&CallSteps {
            total: ms(10),
            instantiate: Some(ms(1)),
            call: ms(7),
            ending: ms(1),
            host: HostSteps {
                calls: 2,
                in_host: ms(5),
                checking: us(500),
                waiting: ms(1),
                round_trips: 2,
                on_server: ms(3),
                ending_round_trips: 1,
            },
        });
        totals.record(&CallSteps {
            total: ms(10),
            instantiate: None,
            call: ms(9),
            ending: ms(1),
            host: HostSteps::default(),
        });
        let mean = (totals.snapshot() - before)
            .per_call()
            .expect("two calls were recorded");
        assert_eq!((mean.calls, mean.instantiated), (2, 1));
        assert_eq!(mean.total_us, 10_000.0);
        assert_eq!(mean.instantiate_us, 500.0);
        assert_eq!(mean.in_plugin_us, (2_000.0 + 9_000.0) / 2.0);
        assert_eq!(mean.on_server_us, 1_500.0);
        assert_eq!(mean.in_host_rest_us, 250.0);
        assert_eq!((mean.round_trips, mean.ending_round_trips), (1.0, 0.5));
        let parts = mean.instantiate_us
            + mean.in_plugin_us
            + mean.checking_us
            + mean.waiting_us
            + mean.on_server_us
            + mean.in_host_rest_us
            + mean.ending_us
            + mean.other_us;
        assert!(
            (parts - mean.total_us).abs() < 1e-6,
            "{parts} != {}",
            mean.total_us
        );
        assert_eq!(StepSums::default().per_call(), None);

        // Sums of spans measured in pieces add up to the span's.
        let whole = totals.snapshot() - before;
        let mut pieces = totals.snapshot() - totals.snapshot();
        pieces += whole;
        pieces += StepSums::default();
        assert_eq!(pieces, whole);
        assert_eq!(whole - whole, StepSums::default());
        assert_eq!(before - whole, StepSums::default(), "saturates");
    }
}
