//! Rate limits per client address and per account: token buckets in memory, on the injected
//! clock. Each node limits on its own (a deployment of N nodes allows up to N times the rate per
//! client when its balancer spreads one client across nodes); the limits are configuration.

use std::collections::HashMap;
use std::sync::Mutex;

use fitedge_core::time::Timestamp;

use crate::config::Rate;

/// Buckets unused this long are forgotten (they would be full again anyway).
const IDLE_FORGET_MS: i64 = 3_600_000;
/// Forget idle buckets whenever the map grows past this.
const SWEEP_AT: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: i64,
}

#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; `Err(seconds)` says how long until one is available.
    pub fn check(&self, key: &str, now: Timestamp) -> Result<(), u64> {
        self.take(key, now)
            .map_err(|wait_ms| wait_ms.div_ceil(1000))
    }

    /// [`RateLimiter::check`] with the wait in milliseconds (at least 1), for callers that wait
    /// rather than answer 429.
    pub fn take(&self, key: &str, now: Timestamp) -> Result<(), u64> {
        let capacity = f64::from(self.rate.requests);
        let per_ms = capacity / (f64::from(self.rate.per_secs) * 1000.0);
        let now = now.as_millis();
        let mut map = match self.buckets.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if map.len() > SWEEP_AT {
            map.retain(|_, b| now - b.updated < IDLE_FORGET_MS);
        }
        let b = map.entry(key.to_string()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = (now - b.updated).max(0) as f64;
        b.tokens = (b.tokens + elapsed * per_ms).min(capacity);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = (1.0 - b.tokens) / per_ms;
            Err(wait_ms.ceil().max(1.0) as u64)
        }
    }

    /// Forgets a key (an account that was deleted).
    pub fn forget(&self, key: &str) {
        if let Ok(mut m) = self.buckets.lock() {
            m.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_refuses_then_refills() {
        let rl = RateLimiter::new(Rate {
            requests: 3,
            per_secs: 60,
        });
        let t = Timestamp(0);
        for _ in 0..3 {
            assert!(rl.check("a", t).is_ok());
        }
        assert_eq!(rl.check("a", t), Err(20));
        assert!(rl.check("b", t).is_ok(), "keys are independent");
        assert!(rl.check("a", Timestamp(19_999)).is_err());
        assert!(rl.check("a", Timestamp(20_010)).is_ok());
    }

    #[test]
    fn take_tells_the_wait_in_milliseconds() {
        let rl = RateLimiter::new(Rate {
            requests: 10,
            per_secs: 1,
        });
        for _ in 0..10 {
            assert!(rl.take("a", Timestamp(0)).is_ok());
        }
        // One token per 100 ms.
        assert_eq!(rl.take("a", Timestamp(0)), Err(100));
        assert_eq!(rl.take("a", Timestamp(40)), Err(60));
        assert!(rl.take("a", Timestamp(100)).is_ok());
    }
}
