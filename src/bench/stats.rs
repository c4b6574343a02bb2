//! Histograms (nanoseconds) and their summaries in milliseconds.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram tracks: 60 s, in nanoseconds (larger values saturate).
const MAX_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits, 1 ns .. 60 s.
///
/// # Panics
/// Never: the bounds are constants that hdrhistogram accepts.
#[must_use]
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds")
}

/// Records one duration, saturating at the histogram's range.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
}

/// Adds `other` into `into` (same bounds, so this cannot fail).
pub fn merge(into: &mut Histogram<u64>, other: &Histogram<u64>) {
    // Both come from `histogram()`; saturate rather than fail on anything out of range.
    if into.add(other).is_err() {
        for v in other.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[allow(clippy::cast_precision_loss)] // nanoseconds well below 2^52 in practice
fn ms(ns: u64) -> f64 {
    round3(ns as f64 / 1e6)
}

/// Rounds to three decimals (µs resolution when the unit is ms).
#[must_use]
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Summary {
    #[must_use]
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                count: 0,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
            };
        }
        Self {
            count: h.len(),
            mean_ms: round3(h.mean() / 1e6),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    /// `p50 0.412 ms  p99 1.203 ms  p999 3.001 ms  max 9.870 ms  (n=…)`
    #[must_use]
    pub fn line(&self) -> String {
        format!(
            "p50 {:.3} ms  p99 {:.3} ms  p999 {:.3} ms  max {:.3} ms  (n={})",
            self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms, self.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_in_milliseconds() {
        let mut h = histogram();
        for i in 1..=1000u64 {
            record(&mut h, Duration::from_micros(i));
        }
        let s = Summary::of(&h);
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 0.5).abs() < 0.002, "{s:?}");
        assert!((s.p99_ms - 0.99).abs() < 0.002, "{s:?}");
        assert!((s.max_ms - 1.0).abs() < 0.002, "{s:?}");
        let mut other = histogram();
        merge(&mut other, &h);
        assert_eq!(other.len(), 1000);
        assert_eq!(Summary::of(&histogram()).count, 0);
    }
}
