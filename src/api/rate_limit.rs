//! Per-app token buckets for `POST /v1/messages`: `rate` pushes per second with a burst of one
//! second's worth. Kept in memory (a restart refills the buckets). The std mutex is held only
//! for one map lookup and a little arithmetic.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Most apps tracked; buckets idle for a while are dropped when the map is full.
const MAX_BUCKETS: usize = 100_000;

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Takes one token from the app's bucket, or says how many whole seconds until one is
    /// there (always 1: the bucket refills one token within 1/rate seconds).
    pub fn take(&self, app: &str, rate_per_sec: u32) -> Result<(), u64> {
        let rate = f64::from(rate_per_sec.max(1));
        let now = Instant::now();
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_BUCKETS && !map.contains_key(app) {
            // Full buckets carry no state worth keeping.
            map.retain(|_, b| now.duration_since(b.last).as_secs_f64() * rate < rate);
        }
        let bucket = map.entry(app.to_owned()).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        let elapsed = now.duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            // A token comes back within 1/rate seconds, never more than one second:
            // Retry-After is in whole seconds, so that is 1.
            Err(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_second_passes_then_the_next_is_refused_with_a_retry_time() {
        let r = RateLimiter::default();
        for _ in 0..5 {
            assert!(r.take("a", 5).is_ok());
        }
        assert_eq!(r.take("a", 5), Err(1));
        assert!(r.take("b", 5).is_ok(), "apps have separate buckets");
    }
}
