//! Refund policy: the share of the price refunded depends on how long before the event's start a
//! user cancels a paid booking.
//!
//! Default (documented in docs/adr/0008-booking-consistency-and-policies.md):
//! - 7 days (168 h) or more before the start: 100 %;
//! - 24 hours or more (and less than 7 days): 50 %;
//! - less than 24 hours, or after the start: nothing.
//!
//! An organizer sets another policy with the event (`refund_policy` on create or update): a list
//! of tiers `{min_hours_before, percent}`; the tier with the largest `min_hours_before` that the
//! cancellation meets applies; none met: 0 %. When the organizer cancels the event, every paid
//! booking is refunded in full whatever the policy.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefundTier {
    /// Applies when the cancellation is at least this many hours before the start.
    pub min_hours_before: i64,
    /// Percent of the price refunded, 0..=100.
    pub percent: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefundPolicy {
    pub tiers: Vec<RefundTier>,
}

impl Default for RefundPolicy {
    fn default() -> Self {
        Self {
            tiers: vec![
                RefundTier {
                    min_hours_before: 168,
                    percent: 100,
                },
                RefundTier {
                    min_hours_before: 24,
                    percent: 50,
                },
            ],
        }
    }
}

const HOUR_MS: i64 = 3_600_000;

impl RefundPolicy {
    pub fn problems(&self) -> Vec<String> {
        let mut p = vec![];
        if self.tiers.len() > 10 {
            p.push("at most 10 tiers".into());
        }
        for t in &self.tiers {
            if !(0..=100).contains(&t.percent) {
                p.push("percent must be between 0 and 100".into());
            }
            if !(0..=24 * 365).contains(&t.min_hours_before) {
                p.push("min_hours_before must be between 0 and 8760".into());
            }
        }
        p
    }

    /// Percent refunded when cancelling at `now_ms` an event starting at `starts_ms`.
    pub fn percent(&self, starts_ms: i64, now_ms: i64) -> i64 {
        let before = starts_ms - now_ms;
        if before < 0 {
            return 0;
        }
        self.tiers
            .iter()
            .filter(|t| before >= t.min_hours_before.saturating_mul(HOUR_MS))
            .max_by_key(|t| t.min_hours_before)
            .map(|t| t.percent)
            .unwrap_or(0)
    }

    /// Cents refunded of `amount_cents` (rounded down).
    pub fn refund_cents(&self, amount_cents: i64, starts_ms: i64, now_ms: i64) -> i64 {
        amount_cents.saturating_mul(self.percent(starts_ms, now_ms)) / 100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_at_its_boundaries() {
        let p = RefundPolicy::default();
        let start = 1_000 * HOUR_MS;
        assert_eq!(p.percent(start, start - 168 * HOUR_MS), 100);
        assert_eq!(p.percent(start, start - 168 * HOUR_MS + 1), 50);
        assert_eq!(p.percent(start, start - 24 * HOUR_MS), 50);
        assert_eq!(p.percent(start, start - 24 * HOUR_MS + 1), 0);
        assert_eq!(p.percent(start, start + 1), 0);
        assert_eq!(p.refund_cents(999, start, start - 30 * HOUR_MS), 499);
    }

    #[test]
    fn organizer_policy_and_validation() {
        let p = RefundPolicy {
            tiers: vec![RefundTier {
                min_hours_before: 2,
                percent: 80,
            }],
        };
        assert_eq!(p.percent(10 * HOUR_MS, 8 * HOUR_MS), 80);
        assert_eq!(p.percent(10 * HOUR_MS, 8 * HOUR_MS + 1), 0);
        assert!(p.problems().is_empty());
        let bad = RefundPolicy {
            tiers: vec![RefundTier {
                min_hours_before: -1,
                percent: 101,
            }],
        };
        assert_eq!(bad.problems().len(), 2);
    }
}
