//! Latency by second of a run, coarse: how the slow samples of a long run are spread over
//! it. A p99 over minutes says how many samples were slow, not when; this tells an even
//! tail (every second a little slow) from bursts (a few seconds very slow, e.g. at the
//! store's checkpoints), which point at different causes. Next to each second's latencies it
//! keeps the machine's stolen CPU time in that second, when sampled: on a shared virtual
//! machine the hypervisor's pauses are one such cause, and not the program's.
//!
//! Each second keeps counts in fixed buckets ([`BOUNDS_MS`]) and its largest sample, so a
//! series costs under a hundred bytes per second whatever the rate. The number of seconds
//! is fixed when the series is made; samples past it count in its last second. Counters
//! are atomic: every receiving task records into one series.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use std::fmt::Write as _;

use serde::Serialize;

/// Upper bounds of the buckets, in milliseconds; one more bucket holds everything above.
pub const BOUNDS_MS: [f64; 11] = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0, 50.0];
const BUCKETS: usize = BOUNDS_MS.len() + 1;
/// The bucket bound samples are compared with for [`SecondTail::over_3ms`].
const OVER_MS: f64 = 3.0;

#[derive(Debug, Default)]
struct Second {
    counts: [AtomicU32; BUCKETS],
    max_ns: AtomicU64,
    /// Stolen CPU in tenths of a percent, plus one (0: not sampled).
    steal: AtomicU32,
}

/// Per-second bucket counts over a fixed number of seconds.
#[derive(Debug)]
pub struct BySecond {
    seconds: Vec<Second>,
}

/// One second of a [`BySecond`], as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondTail {
    /// Seconds since the measured window began (by the sample's start).
    pub second: usize,
    pub count: u64,
    /// The bucket bound the second's p99 falls under (`None`: above the last bound).
    pub p99_ms_at_most: Option<f64>,
    /// Samples above 3 ms.
    pub over_3ms: u64,
    pub max_ms: f64,
    /// Percent of the machine's CPU time stolen by the hypervisor in this second.
    pub steal_pct: Option<f64>,
}

fn bucket(ns: u64) -> usize {
    #[allow(clippy::cast_precision_loss)] // latencies far below 2^52 ns
    let ms = ns as f64 / 1e6;
    BOUNDS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(BOUNDS_MS.len())
}

impl BySecond {
    /// A series of `seconds` seconds (at least one).
    #[must_use]
    pub fn new(seconds: usize) -> Self {
        Self {
            seconds: std::iter::repeat_with(Second::default)
                .take(seconds.max(1))
                .collect(),
        }
    }

    /// Records a sample that started `at_ns` into the window and took `latency_ns`.
    pub fn record(&self, at_ns: u64, latency_ns: u64) {
        let last = self.seconds.len() - 1;
        let i = usize::try_from(at_ns / 1_000_000_000).map_or(last, |i| i.min(last));
        let s = &self.seconds[i];
        // A u32 per bucket and second holds over 4 billion samples: no run comes near.
        s.counts[bucket(latency_ns)].fetch_add(1, Ordering::Relaxed);
        s.max_ns.fetch_max(latency_ns, Ordering::Relaxed);
    }

    /// Notes the machine's stolen CPU in `second` (ignored past the series' end).
    pub fn note_steal(&self, second: usize, pct: f64) {
        if let Some(s) = self.seconds.get(second) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 0..=1000
            let tenths = (pct.clamp(0.0, 100.0) * 10.0).round() as u32;
            s.steal.store(tenths + 1, Ordering::Relaxed);
        }
    }

    /// The seconds that have samples, in order.
    #[must_use]
    pub fn report(&self) -> Vec<SecondTail> {
        // Samples above 3 ms: the buckets after the one bounded by 3 ms.
        let over_from = bucket(3_000_000) + 1;
        self.seconds
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let counts = s
                    .counts
                    .each_ref()
                    .map(|c| u64::from(c.load(Ordering::Relaxed)));
                let count: u64 = counts.iter().sum();
                (count > 0).then(|| {
                    // The first bucket by which 99 % of the second's samples are counted.
                    let need = count - count / 100;
                    let mut seen = 0u64;
                    let p99 = counts.iter().position(|c| {
                        seen += c;
                        seen >= need
                    });
                    #[allow(clippy::cast_precision_loss)]
                    SecondTail {
                        second: i,
                        count,
                        p99_ms_at_most: p99.and_then(|b| BOUNDS_MS.get(b).copied()),
                        over_3ms: counts[over_from..].iter().sum(),
                        max_ms: super::stats::round3(s.max_ns.load(Ordering::Relaxed) as f64 / 1e6),
                        steal_pct: match s.steal.load(Ordering::Relaxed) {
                            0 => None,
                            t => Some(f64::from(t - 1) / 10.0),
                        },
                    }
                })
            })
            .collect()
    }
}

/// One line on a series: the median and worst second's p99 bound, and how many seconds'
/// p99 was above 3 ms.
#[must_use]
pub fn line(tails: &[SecondTail]) -> Option<String> {
    if tails.is_empty() {
        return None;
    }
    let bound = |t: &SecondTail| t.p99_ms_at_most.unwrap_or(f64::INFINITY);
    let mut p99s: Vec<f64> = tails.iter().map(bound).collect();
    p99s.sort_by(f64::total_cmp);
    let worst = tails.iter().max_by(|a, b| bound(a).total_cmp(&bound(b)))?;
    let slow = tails.iter().filter(|t| bound(t) > OVER_MS).count();
    let stolen = tails
        .iter()
        .filter(|t| bound(t) > OVER_MS && t.steal_pct.is_some_and(|p| p > 0.0))
        .count();
    let show = |ms: f64| {
        if ms.is_finite() {
            format!("≤ {ms} ms")
        } else {
            format!("> {} ms", BOUNDS_MS[BOUNDS_MS.len() - 1])
        }
    };
    let mut line = format!(
        "p99 by second: median {}, worst {} (second {}, max {:.3} ms); {slow} of {} seconds above {OVER_MS} ms",
        show(p99s[p99s.len() / 2]),
        show(bound(worst)),
        worst.second,
        worst.max_ms,
        tails.len()
    );
    if tails.iter().any(|t| t.steal_pct.is_some()) {
        let _ = write!(line, ", {stolen} of them with CPU stolen by the host");
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    #[test]
    fn a_slow_second_stands_out_from_even_ones() {
        let a = BySecond::new(3);
        for i in 0..1000 {
            a.record(i * MS, MS / 2); // second 0: all 0.5 ms
            a.record(S + i * MS, if i < 50 { 8 * MS } else { MS }); // second 1: 5 % at 8 ms
        }
        a.record(99 * S, 60 * MS); // past the end: counts in the last second
        a.note_steal(1, 4.25);
        a.note_steal(2, 0.0);
        a.note_steal(7, 50.0); // past the end: dropped
        let r = a.report();
        let steal: Vec<_> = r.iter().map(|t| t.steal_pct).collect();
        assert_eq!(steal, [None, Some(4.3), Some(0.0)]);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(
            (r[0].count, r[0].p99_ms_at_most, r[0].over_3ms),
            (1000, Some(0.5), 0)
        );
        assert_eq!(
            (r[1].count, r[1].p99_ms_at_most, r[1].over_3ms),
            (1000, Some(10.0), 50)
        );
        assert!((r[1].max_ms - 8.0).abs() < 1e-9);
        assert_eq!(
            (r[2].second, r[2].p99_ms_at_most, r[2].over_3ms),
            (2, None, 1)
        );
        let line = line(&r).unwrap_or_default();
        assert!(line.contains("worst > 50 ms (second 2"), "{line}");
        assert!(
            line.contains("2 of 3 seconds above 3 ms, 1 of them with CPU stolen"),
            "{line}"
        );
    }

    #[test]
    fn an_empty_series_reports_nothing() {
        assert!(BySecond::new(0).report().is_empty());
        assert_eq!(line(&[]), None);
    }
}
