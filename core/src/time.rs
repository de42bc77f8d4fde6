//! Time: a millisecond UTC timestamp and an injectable clock.
//!
//! Everything in the engine that depends on "now" takes a [`Clock`], so tests of limits
//! (the 24-hour cap, auto-pause delays) advance a [`ManualClock`] instead of sleeping.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub fn from_secs_f64(s: f64) -> Self {
        Self((s * 1000.0).round() as i64)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Seconds from `earlier` to `self` (negative when `self` is earlier).
    pub fn secs_since(self, earlier: Timestamp) -> f64 {
        (self.0 - earlier.0) as f64 / 1000.0
    }

    pub fn plus_secs(self, s: f64) -> Self {
        Self(self.0 + (s * 1000.0).round() as i64)
    }

    /// RFC 3339 in UTC, with milliseconds only when they are not zero.
    pub fn to_rfc3339(self) -> String {
        match chrono::DateTime::<chrono::Utc>::from_timestamp_millis(self.0) {
            Some(dt) if self.0 % 1000 == 0 => dt.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            Some(dt) => dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            None => format!("@{}ms", self.0),
        }
    }

    /// Parses RFC 3339 (any offset).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| Self(d.timestamp_millis()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp(chrono::Utc::now().timestamp_millis())
    }
}

/// A clock that only moves when told to; for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(AtomicI64::new(start.0))
    }

    pub fn advance_secs(&self, s: f64) {
        self.0
            .fetch_add((s * 1000.0).round() as i64, Ordering::SeqCst);
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::parse_rfc3339("2013-02-06T12:11:14Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2013-02-06T12:11:14Z");
        assert_eq!(t.plus_secs(0.5).to_rfc3339(), "2013-02-06T12:11:14.500Z");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp(1_000));
        assert_eq!(c.now(), Timestamp(1_000));
        c.advance_secs(2.5);
        assert_eq!(c.now(), Timestamp(3_500));
    }
}
