//! Exponential backoff, without I/O: the reconnect loop of the sync client and the outbox both
//! ask it how long to wait; neither sleeps here. Time comes from the caller (an injectable
//! [`crate::Clock`]) and randomness too (a jitter fraction), so schedules are tested exactly.

/// Delays doubling from `base_ms` up to `max_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    /// Reconnecting to the sync server: 0.5 s, 1 s, 2 s ... capped at one minute.
    pub const RECONNECT: Backoff = Backoff {
        base_ms: 500,
        max_ms: 60_000,
    };

    /// Retrying an outbox command: 2 s, 4 s, 8 s ... capped at one hour.
    pub const OUTBOX: Backoff = Backoff {
        base_ms: 2_000,
        max_ms: 3_600_000,
    };

    /// The longest wait after failed attempt number `attempt` (1 for the first failure):
    /// `min(max, base * 2^(attempt - 1))`. Never overflows.
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(63);
        self.base_ms.saturating_mul(1_u64 << shift).min(self.max_ms)
    }

    /// "Equal jitter": half the ceiling for sure, plus `jitter` (clamped to 0..=1) times the
    /// other half. Many devices losing the server at once then do not come back in step, and
    /// no device retries sooner than half the schedule.
    pub fn delay_ms(&self, attempt: u32, jitter: f64) -> u64 {
        let ceiling = self.ceiling_ms(attempt);
        let half = ceiling / 2;
        let j = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        #[allow(clippy::cast_precision_loss)]
        let extra = ((ceiling - half) as f64 * j).round();
        // `extra` is within 0..=ceiling-half, so the cast is exact enough and cannot overflow.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let extra = extra as u64;
        half + extra.min(ceiling - half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        let b = Backoff::RECONNECT;
        let ceilings: Vec<u64> = (1..=10).map(|n| b.ceiling_ms(n)).collect();
        assert_eq!(
            ceilings,
            [500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
        );
        assert_eq!(b.ceiling_ms(0), 500);
        assert_eq!(b.ceiling_ms(u32::MAX), 60_000);
    }

    #[test]
    fn jitter_stays_between_half_and_the_ceiling() {
        let b = Backoff::RECONNECT;
        for n in 1..=12 {
            let c = b.ceiling_ms(n);
            assert_eq!(b.delay_ms(n, 0.0), c / 2);
            assert_eq!(b.delay_ms(n, 1.0), c);
            assert_eq!(b.delay_ms(n, 7.0), c);
            assert_eq!(b.delay_ms(n, f64::NAN), c / 2);
            let mid = b.delay_ms(n, 0.5);
            assert!(mid > c / 2 && mid < c, "{n}: {mid}");
        }
    }
}
