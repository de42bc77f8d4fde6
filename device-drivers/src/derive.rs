//! Values derived across notifications: speed and cadence from cumulative revolution counts
//! and the time of the last revolution event.
//!
//! The rules (each one has a property test below):
//! - Event times are 16-bit tick counters (1/1024 s, or 1/2048 s for the Cycling Power
//!   service's wheel) and wrap: the delta is taken modulo 2^16.
//! - 16-bit counts (crank revolutions, ANT+ counts) wrap the same way. A 32-bit count (the
//!   GATT wheel count) never wraps in practice: when it drops, the sensor was reset (a battery
//!   change, a reconnect) and the pair becomes a new baseline, not a huge delta.
//! - A repeated event (same count, same time) means no new revolution: the previous value is
//!   held for a short grace, then 0 is reported (coasting, or the rider stopped).
//! - When more wall time passed between two notifications than one rollover period of the
//!   tick counter (64 s at 1/1024 s), the delta is ambiguous and is discarded.

use serde::Serialize;

use fitedge_core::Timestamp;

use crate::gatt::RevolutionData;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountWidth {
    /// A 16-bit counter that wraps.
    Wrap16,
    /// An 8-bit counter that wraps (ANT+ event counts).
    Wrap8,
    /// A 32-bit counter: a drop is a reset.
    Reset32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateConfig {
    pub ticks_per_s: f64,
    pub count: CountWidth,
    /// How long a repeated event holds the last value before 0 is reported.
    pub coast_grace_s: f64,
}

impl RateConfig {
    pub const DEFAULT_GRACE_S: f64 = 3.0;

    pub fn new(ticks_per_s: f64, count: CountWidth) -> Self {
        Self {
            ticks_per_s,
            count,
            coast_grace_s: Self::DEFAULT_GRACE_S,
        }
    }

    /// Wall time after which the 16-bit event time has certainly wrapped at least once.
    pub fn rollover_s(&self) -> f64 {
        65_536.0 / self.ticks_per_s
    }
}

/// What one update did.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "rps")]
pub enum RateStep {
    /// The first pair: nothing to compare with yet.
    Baseline,
    /// A new rate, revolutions per second.
    Rate(f64),
    /// No new event yet; the last rate is held (within the grace).
    Holding(Option<f64>),
    /// No new event for longer than the grace: 0.
    Coasting,
    /// The 32-bit count dropped: the sensor was reset; new baseline.
    Reset,
    /// Too long since the last notification to know how often the counters wrapped.
    Ambiguous,
    /// Revolutions without time, or a notification older than the last one.
    Discarded,
}

impl RateStep {
    /// The rate to report, if any.
    pub fn rps(self) -> Option<f64> {
        match self {
            RateStep::Rate(r) => Some(r),
            RateStep::Holding(r) => r,
            RateStep::Coasting => Some(0.0),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Last {
    count: u32,
    time: u16,
    arrival: Timestamp,
    event_arrival: Timestamp,
}

/// A rate from a cumulative count and an event time.
#[derive(Clone, Debug)]
pub struct RevolutionRate {
    cfg: RateConfig,
    last: Option<Last>,
    last_rate: Option<f64>,
}

impl RevolutionRate {
    pub fn new(cfg: RateConfig) -> Self {
        Self {
            cfg,
            last: None,
            last_rate: None,
        }
    }

    pub fn config(&self) -> RateConfig {
        self.cfg
    }

    /// Forgets the baseline (after a disconnect: the sensor's counters may restart).
    pub fn reset(&mut self) {
        self.last = None;
        self.last_rate = None;
    }

    fn rebase(&mut self, count: u32, time: u16, at: Timestamp) {
        self.last = Some(Last {
            count,
            time,
            arrival: at,
            event_arrival: at,
        });
        self.last_rate = None;
    }

    pub fn update(&mut self, count: u32, time: u16, at: Timestamp) -> RateStep {
        let Some(l) = self.last else {
            self.rebase(count, time, at);
            return RateStep::Baseline;
        };
        let gap_s = at.secs_since(l.arrival);
        if gap_s < 0.0 {
            return RateStep::Discarded;
        }
        if gap_s >= self.cfg.rollover_s() {
            self.rebase(count, time, at);
            return RateStep::Ambiguous;
        }
        let d = match self.cfg.count {
            CountWidth::Reset32 if count < l.count => {
                self.rebase(count, time, at);
                return RateStep::Reset;
            }
            CountWidth::Reset32 => count - l.count,
            CountWidth::Wrap16 => count.wrapping_sub(l.count) & 0xFFFF,
            CountWidth::Wrap8 => count.wrapping_sub(l.count) & 0xFF,
        };
        let dt = u32::from(time.wrapping_sub(l.time));
        if dt == 0 {
            if d != 0 {
                self.rebase(count, time, at);
                return RateStep::Discarded;
            }
            self.last = Some(Last { arrival: at, ..l });
            return if at.secs_since(l.event_arrival) > self.cfg.coast_grace_s {
                self.last_rate = Some(0.0);
                RateStep::Coasting
            } else {
                RateStep::Holding(self.last_rate)
            };
        }
        let rate = f64::from(d) * self.cfg.ticks_per_s / f64::from(dt);
        self.last = Some(Last {
            count,
            time,
            arrival: at,
            event_arrival: at,
        });
        self.last_rate = Some(rate);
        RateStep::Rate(rate)
    }
}

/// Speed, cadence and distance from wheel and crank revolution data (CSC, Cycling Power,
/// ANT+ speed and cadence).
#[derive(Clone, Debug)]
pub struct WheelCrank {
    pub wheel: RevolutionRate,
    pub crank: RevolutionRate,
    pub circumference_m: f64,
}

/// Values derived from one notification and the ones before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Derived {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_mps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cadence_rpm: Option<f64>,
    /// The sensor's own odometer: cumulative wheel revolutions times the circumference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heart_rate_bpm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rr_interval_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spo2_pct: Option<f64>,
}

impl WheelCrank {
    /// A typical 700x25c road wheel.
    pub const DEFAULT_CIRCUMFERENCE_M: f64 = 2.105;

    /// For the CSC service: both event times in 1/1024 s, 32-bit wheel and 16-bit crank counts.
    pub fn csc(circumference_m: f64) -> Self {
        Self {
            wheel: RevolutionRate::new(RateConfig::new(1024.0, CountWidth::Reset32)),
            crank: RevolutionRate::new(RateConfig::new(1024.0, CountWidth::Wrap16)),
            circumference_m,
        }
    }

    /// For the Cycling Power service: wheel events in 1/2048 s.
    pub fn cycling_power(circumference_m: f64) -> Self {
        Self {
            wheel: RevolutionRate::new(RateConfig::new(2048.0, CountWidth::Reset32)),
            ..Self::csc(circumference_m)
        }
    }

    /// For ANT+ speed and cadence sensors: 16-bit counts and 1/1024 s times.
    pub fn ant(circumference_m: f64) -> Self {
        Self {
            wheel: RevolutionRate::new(RateConfig::new(1024.0, CountWidth::Wrap16)),
            ..Self::csc(circumference_m)
        }
    }

    pub fn reset(&mut self) {
        self.wheel.reset();
        self.crank.reset();
    }

    pub fn update(
        &mut self,
        wheel: Option<RevolutionData>,
        crank: Option<RevolutionData>,
        at: Timestamp,
    ) -> Derived {
        let mut d = Derived::default();
        if let Some(w) = wheel {
            d.speed_mps = self
                .wheel
                .update(w.revolutions, w.event_time, at)
                .rps()
                .map(|r| r * self.circumference_m);
            if self.wheel.config().count == CountWidth::Reset32 {
                d.distance_m = Some(f64::from(w.revolutions) * self.circumference_m);
            }
        }
        if let Some(c) = crank {
            d.cadence_rpm = self
                .crank
                .update(c.revolutions, c.event_time, at)
                .rps()
                .map(|r| r * 60.0);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    #[test]
    fn wraps_of_time_and_16_bit_counts() {
        let mut c = RevolutionRate::new(RateConfig::new(1024.0, CountWidth::Wrap16));
        assert_eq!(c.update(65_535, 65_000, t(0)), RateStep::Baseline);
        // one revolution later the count wrapped to 0 and the time to 488: 1024 ticks = 1 s
        assert_eq!(c.update(0, 488, t(1000)), RateStep::Rate(1.0));
    }

    #[test]
    fn a_32_bit_drop_is_a_reset_not_a_wrap() {
        let mut w = RevolutionRate::new(RateConfig::new(1024.0, CountWidth::Reset32));
        w.update(5_000, 100, t(0));
        assert_eq!(w.update(3, 200, t(1000)), RateStep::Reset);
        assert_eq!(w.update(5, 1224, t(2000)), RateStep::Rate(2.0));
    }

    #[test]
    fn coasting_after_the_grace() {
        let mut w = RevolutionRate::new(RateConfig::new(1024.0, CountWidth::Reset32));
        w.update(10, 0, t(0));
        assert_eq!(w.update(12, 1024, t(1000)), RateStep::Rate(2.0));
        assert_eq!(w.update(12, 1024, t(2000)), RateStep::Holding(Some(2.0)));
        assert_eq!(w.update(12, 1024, t(4000)), RateStep::Holding(Some(2.0)));
        assert_eq!(w.update(12, 1024, t(4001)), RateStep::Coasting);
        assert_eq!(w.update(13, 2048, t(4500)), RateStep::Rate(1.0));
    }

    #[test]
    fn a_gap_longer_than_a_rollover_is_ambiguous() {
        let mut w = RevolutionRate::new(RateConfig::new(2048.0, CountWidth::Reset32));
        w.update(10, 0, t(0));
        // 1/2048 s ticks roll over every 32 s
        assert_eq!(w.update(40, 100, t(32_000)), RateStep::Ambiguous);
        assert_eq!(w.update(41, 2148, t(33_000)), RateStep::Rate(1.0));
    }

    #[test]
    fn revolutions_without_time_are_discarded() {
        let mut w = RevolutionRate::new(RateConfig::new(1024.0, CountWidth::Reset32));
        w.update(10, 500, t(0));
        assert_eq!(w.update(11, 500, t(500)), RateStep::Discarded);
        assert_eq!(w.update(12, 500, t(400)), RateStep::Discarded);
    }

    proptest! {
        /// A steady wheel seen through wrapping 16-bit times (and a 32-bit count) gives back
        /// its speed, within one tick of quantisation, from the second notification on.
        #[test]
        fn steady_speed_is_recovered(
            start_count in 0u32..4_000_000_000,
            start_ticks in 0u16..=u16::MAX,
            rps in 0.5f64..40.0,
            n in 2usize..60,
            period_ms in 250i64..2000,
        ) {
            let mut w = WheelCrank::csc(2.0);
            let mut last_speed = None;
            for i in 0..n {
                let secs = i as f64 * period_ms as f64 / 1000.0;
                let revs = (secs * rps).floor();
                let event_s = revs / rps; // time of the last whole revolution
                let ticks = (f64::from(start_ticks) + (event_s * 1024.0).floor()) as u64 % 65_536;
                let d = w.update(
                    Some(RevolutionData { revolutions: start_count + revs as u32, event_time: ticks as u16 }),
                    None,
                    t(i as i64 * period_ms),
                );
                if let Some(s) = d.speed_mps { last_speed = Some(s); }
            }
            if let Some(s) = last_speed {
                // Either the true speed (tick quantisation allows a few per cent at high
                // rates and short periods), or 0 after a grace when no revolution happened.
                prop_assert!(s == 0.0 || (s - rps * 2.0).abs() <= rps * 2.0 * 0.05 + 0.05, "{s} vs {}", rps * 2.0);
            }
        }

        /// 16-bit crank counts wrap; the cadence never jumps to an absurd value at the wrap.
        #[test]
        fn crank_wrap_is_continuous(start in 65_000u32..65_536, rpm in 30f64..150.0) {
            let mut c = RevolutionRate::new(RateConfig::new(1024.0, CountWidth::Wrap16));
            let period = 60.0 / rpm;
            for i in 0..20u32 {
                let ticks = ((f64::from(i) * period * 1024.0).round() as u64 % 65_536) as u16;
                let step = c.update((start + i) & 0xFFFF, ticks, t((f64::from(i) * period * 1000.0) as i64));
                if i > 0 {
                    let r = step.rps().unwrap_or(-1.0) * 60.0;
                    prop_assert!((r - rpm).abs() < rpm * 0.02, "{r} vs {rpm}");
                }
            }
        }

        /// A drop of the 32-bit wheel count never yields a speed; the next pair does.
        #[test]
        fn drops_never_give_speed(before in 1u32..u32::MAX, after_frac in 0.0f64..1.0) {
            let after = (f64::from(before) * after_frac) as u32;
            let mut w = RevolutionRate::new(RateConfig::new(1024.0, CountWidth::Reset32));
            w.update(before, 0, t(0));
            prop_assert_eq!(w.update(after, 1024, t(1000)), RateStep::Reset);
        }

        /// Any gap of at least one rollover period is discarded, whatever the counters say.
        #[test]
        fn long_gaps_are_discarded(gap_ms in 64_000i64..10_000_000, c in any::<u32>(), tk in any::<u16>()) {
            let mut w = RevolutionRate::new(RateConfig::new(1024.0, CountWidth::Wrap16));
            w.update(0, 0, t(0));
            prop_assert_eq!(w.update(c & 0xFFFF, tk, t(gap_ms)), RateStep::Ambiguous);
        }

        /// Repeats hold the last rate for the grace, then report 0; never anything else.
        #[test]
        fn repeats_hold_then_coast(repeat_ms in proptest::collection::vec(1i64..2000, 1..20)) {
            let mut w = RevolutionRate::new(RateConfig::new(1024.0, CountWidth::Reset32));
            w.update(0, 0, t(0));
            w.update(1, 512, t(500));
            let mut now = 500;
            for dt in repeat_ms {
                now += dt;
                let s = w.update(1, 512, t(now));
                if (now - 500) as f64 / 1000.0 > 3.0 {
                    prop_assert_eq!(s, RateStep::Coasting);
                } else {
                    prop_assert_eq!(s, RateStep::Holding(Some(2.0)));
                }
            }
        }
    }
}
