//! Per-app token buckets for `POST /v1/messages`, and the throttles on failed
//! authentication (per address, and per console login name). Buckets: `rate` pushes per second with a burst of one
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
        self.take_n(app, rate_per_sec, 1)
    }

    /// Takes `n` tokens at once (a batch of pushes), or none. A batch larger than one
    /// second's worth can never be taken; the caller refuses it before asking.
    pub fn take_n(&self, app: &str, rate_per_sec: u32, n: u32) -> Result<(), u64> {
        let want = f64::from(n);
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
        if bucket.tokens >= want {
            bucket.tokens -= want;
            Ok(())
        } else {
            // The bucket refills in at most one second (its burst is one second's worth):
            // Retry-After is in whole seconds, so that is 1.
            Err(1)
        }
    }
}

/// Failed authentications per key (an IP address, or a console login name) in the current
/// minute. Past the limit, that key is refused (429) until the minute ends, whatever it
/// presents: guessing keys, tokens or passwords stays slow.
pub struct Throttle<K> {
    failures: Mutex<HashMap<K, (u64, u32)>>,
}

/// Failed authentications per IP address.
pub type AuthThrottle = Throttle<std::net::IpAddr>;

impl<K> Default for Throttle<K> {
    fn default() -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq> Throttle<K> {
    fn minute() -> u64 {
        crate::domain::now_ms() / 60_000
    }

    /// `Err(seconds)` while the key is locked out.
    pub fn check<Q>(&self, key: &Q, limit: u32) -> Result<(), u64>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(key) {
            Some(&(minute, n)) if minute == Self::minute() && n >= limit => {
                let into = crate::domain::now_ms() % 60_000;
                Err((60_000 - into).div_ceil(1000).max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed authentication for the key.
    pub fn failed(&self, key: K) {
        let now = Self::minute();
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_BUCKETS && !map.contains_key(&key) {
            map.retain(|_, (minute, _)| *minute == now);
        }
        let entry = map.entry(key).or_insert((now, 0));
        if entry.0 != now {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
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

    #[test]
    fn an_address_is_locked_out_after_too_many_failures() {
        let t = AuthThrottle::default();
        let ip: std::net::IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..3 {
            assert!(t.check(&ip, 3).is_ok());
            t.failed(ip);
        }
        let wait = t.check(&ip, 3).expect_err("locked out");
        assert!((1..=60).contains(&wait));
        let other: std::net::IpAddr = "10.0.0.2".parse().expect("ip");
        assert!(t.check(&other, 3).is_ok());
    }
}
