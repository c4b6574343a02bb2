//! Latency histograms (HDR, nanoseconds, 3 significant digits) shared by many reader
//! tasks, and their summary in milliseconds.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded (larger values are clamped): 10 minutes in ns.
const MAX_NS: u64 = 600_000_000_000;

/// Quantiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[allow(clippy::cast_precision_loss)] // ns values below 2^52
fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl Summary {
    #[must_use]
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// A few histograms behind locks; a reader records a whole batch under one lock.
pub struct Shared {
    parts: Vec<Mutex<Histogram<u64>>>,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("constant bounds are valid")
}

impl Shared {
    #[must_use]
    pub fn new(parts: usize) -> Self {
        Self {
            parts: (0..parts.max(1)).map(|_| Mutex::new(new_hist())).collect(),
        }
    }

    /// Records `values` (ns) into part `slot mod parts`.
    pub fn record(&self, slot: usize, values: &[u64]) {
        if values.is_empty() {
            return;
        }
        let part = &self.parts[slot % self.parts.len()];
        let mut h = part
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for &v in values {
            h.saturating_record(v.clamp(1, MAX_NS));
        }
    }

    /// All parts merged.
    #[must_use]
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = new_hist();
        for p in &self.parts {
            let h = p.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Same bounds on both sides, so adding cannot fail.
            let _ = all.add(&*h);
        }
        all
    }
}
