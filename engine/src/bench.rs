//! `assay bench`: throughput and latency measured the same way every time,
//! each figure beside what the same work costs without assay.
//!
//! - [`query`]: a parameterized query through the `bench-query` plugin, and the
//!   identical query straight through tokio-postgres, at several concurrency
//!   levels, in one invocation;
//! - [`pipeline`]: documents per second through the whole pipeline, stored.
//!
//! Nothing here is estimated: every figure is computed from what was timed.

pub mod pipeline;
pub mod query;

use std::time::Duration;

use serde::Serialize;

/// Latency figures from every timed request.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile, milliseconds.
    pub p95_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Mean, milliseconds.
    pub mean_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
}

impl Latency {
    /// Exact percentiles (nearest rank) of `samples`; all zero when empty.
    pub fn of(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return Self {
                p50_ms: 0.0,
                p95_ms: 0.0,
                p99_ms: 0.0,
                mean_ms: 0.0,
                max_ms: 0.0,
            };
        }
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
        let rank = |p: f64| {
            let index = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples[index.clamp(1, samples.len()) - 1]
        };
        let total: Duration = samples.iter().sum();
        Self {
            p50_ms: ms(rank(50.0)),
            p95_ms: ms(rank(95.0)),
            p99_ms: ms(rank(99.0)),
            mean_ms: ms(total) / samples.len() as f64,
            max_ms: ms(samples[samples.len() - 1]),
        }
    }
}

/// How long a run lasts: a fixed time, or a fixed number of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// Requests are issued until this much time has passed.
    Duration(Duration),
    /// Exactly this many requests are issued.
    Requests(u64),
}

impl Span {
    /// Part `index` of this span cut into `parts` (time evenly; requests as
    /// evenly as whole requests go, the first parts taking what is left).
    pub fn part(self, index: u32, parts: u32) -> Self {
        let parts = parts.max(1);
        match self {
            Span::Duration(d) => Span::Duration(d / parts),
            Span::Requests(n) => {
                let (each, left) = (n / u64::from(parts), n % u64::from(parts));
                Span::Requests(each + u64::from(u64::from(index) < left))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let latency = Latency::of(&mut samples);
        assert_eq!(latency.p50_ms, 50.0);
        assert_eq!(latency.p95_ms, 95.0);
        assert_eq!(latency.p99_ms, 99.0);
        assert_eq!(latency.max_ms, 100.0);
        assert!((latency.mean_ms - 50.5).abs() < 1e-9);
        let mut one = vec![Duration::from_millis(7)];
        assert_eq!(Latency::of(&mut one).p99_ms, 7.0);
        assert_eq!(Latency::of(&mut []).p50_ms, 0.0);
    }

    #[test]
    fn a_span_cut_into_rounds_adds_up_to_itself() {
        let parts: Vec<Span> = (0..3).map(|i| Span::Requests(10).part(i, 3)).collect();
        assert_eq!(
            parts,
            [Span::Requests(4), Span::Requests(3), Span::Requests(3)]
        );
        assert_eq!(
            Span::Duration(Duration::from_secs(5)).part(4, 5),
            Span::Duration(Duration::from_secs(1))
        );
        assert_eq!(Span::Requests(7).part(0, 0), Span::Requests(7));
    }
}
