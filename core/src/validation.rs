//! Judging each sample on arrival.
//!
//! Three outcomes: a physically impossible value is **rejected** (kept out of every metric);
//! a possible value that breaks a RULES.md range is **flagged** (kept, counted, and for health
//! channels raises a critical alert); everything else is accepted. GPS fixes are judged again
//! against their neighbours by the track filter in [`crate::metrics::gps`], which reports into
//! the same [`ValidationReport`]. Every decision is counted: nothing disappears silently.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::profile::ResolvedProfile;
use crate::sample::{Channel, Reading, Sample};

/// Why a sample was rejected or flagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// NaN or infinite.
    NotFinite,
    /// Outside what the human body or the physical world allows.
    Impossible,
    /// Older than the previous sample of the same channel.
    OutOfOrder,
    /// Latitude or longitude outside -90..90 / -180..180.
    OutOfRange,
    /// Exactly (0, 0): a receiver with no fix.
    NullIsland,
    /// Horizontal accuracy worse than [`MAX_GPS_ACCURACY_M`].
    PoorAccuracy,
    /// Implies a speed no athlete of the sport reaches; excluded from distance.
    ImpossibleSpeed,
    /// A consistent jump: the track continues from the new place in a new segment.
    Jump,
    /// Heart rate below 40 bpm.
    HeartRateBelowRange,
    /// Heart rate above 220 - age (or above the measured maximum).
    HeartRateAboveRange,
    /// Blood oxygen below 90 %.
    Spo2BelowRange,
    /// A cumulative distance counter went backwards: a sensor reset, counted from its new value.
    CounterReset,
    /// Dated more than a workout's whole life (24 h) after the last sample the workout used:
    /// a sensor clock that jumped, not a moment of this workout.
    TimestampJump,
    /// Dated further ahead of the recording's clock than [`crate::workout::MAX_AHEAD_OF_CLOCK_S`]
    /// allows: a sensor stamping local time as UTC, not a moment that has happened yet.
    AheadOfClock,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotFinite => "not_finite",
            Reason::Impossible => "impossible",
            Reason::OutOfOrder => "out_of_order",
            Reason::OutOfRange => "out_of_range",
            Reason::NullIsland => "null_island",
            Reason::PoorAccuracy => "poor_accuracy",
            Reason::ImpossibleSpeed => "impossible_speed",
            Reason::Jump => "jump",
            Reason::HeartRateBelowRange => "heart_rate_below_range",
            Reason::HeartRateAboveRange => "heart_rate_above_range",
            Reason::Spo2BelowRange => "spo2_below_range",
            Reason::CounterReset => "counter_reset",
            Reason::TimestampJump => "timestamp_jump",
            Reason::AheadOfClock => "ahead_of_clock",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Flagged(Reason),
    Rejected(Reason),
}

impl Verdict {
    pub fn usable(self) -> bool {
        !matches!(self, Verdict::Rejected(_))
    }
}

/// Fixes reporting a horizontal accuracy worse than this (m) are kept out of distance.
pub const MAX_GPS_ACCURACY_M: f64 = 50.0;

/// Physical limits. A value outside is rejected, not flagged. Each bound is generous on purpose:
/// flagging is for the unusual, rejection only for the impossible.
pub mod limits {
    /// Lowest and highest heart rates recorded in humans are ~25 and ~300 bpm.
    pub const HR_BPM: (f64, f64) = (20.0, 300.0);
    /// RR intervals matching 300 bpm .. 20 bpm.
    pub const RR_MS: (f64, f64) = (200.0, 3000.0);
    /// Dead Sea shore (-430 m) with margin, to above Everest.
    pub const ALTITUDE_M: (f64, f64) = (-500.0, 9000.0);
    /// Faster than any human-powered vehicle on land (~40 m/s).
    pub const SPEED_MPS: (f64, f64) = (0.0, 100.0);
    pub const CADENCE_RPM: (f64, f64) = (0.0, 300.0);
    /// Track sprinters peak near 2,500 W.
    pub const POWER_W: (f64, f64) = (0.0, 3000.0);
    pub const TEMPERATURE_C: (f64, f64) = (-90.0, 70.0);
    /// Oximeters do not report below 50 %, and 100 % is the ceiling.
    pub const SPO2_PCT: (f64, f64) = (50.0, 100.0);
    /// A cumulative odometer cannot exceed twice the Earth's circumference in one workout.
    pub const DISTANCE_M: (f64, f64) = (0.0, 80_000_000.0);
    /// Critical blood oxygen (RULES.md, Health).
    pub const SPO2_CRITICAL_PCT: f64 = 90.0;
}

fn within(v: f64, (lo, hi): (f64, f64)) -> bool {
    v >= lo && v <= hi
}

/// Judges single samples. Stateless apart from the per-channel ordering check.
#[derive(Debug, Clone)]
pub struct Validator {
    profile: ResolvedProfile,
    last_t: [Option<i64>; Channel::ALL.len()],
}

impl Validator {
    pub fn new(profile: ResolvedProfile) -> Self {
        Self {
            profile,
            last_t: [None; Channel::ALL.len()],
        }
    }

    pub fn check(&mut self, s: &Sample) -> Verdict {
        let slot = &mut self.last_t[s.channel().index()];
        if let Some(last) = *slot {
            if s.t.0 < last {
                return Verdict::Rejected(Reason::OutOfOrder);
            }
        }
        let v = judge(&self.profile, &s.reading);
        if v.usable() {
            *slot = Some(s.t.0);
        }
        v
    }
}

/// The single-sample rules, without ordering.
pub fn judge(profile: &ResolvedProfile, r: &Reading) -> Verdict {
    use Reason::*;
    let finite = match *r {
        Reading::Position {
            lat,
            lon,
            accuracy_m,
        } => lat.is_finite() && lon.is_finite() && accuracy_m.is_none_or(|a| !a.is_nan()),
        Reading::HeartRate { bpm: v }
        | Reading::RrInterval { ms: v }
        | Reading::Altitude { m: v, .. }
        | Reading::Speed { mps: v }
        | Reading::Distance { m: v }
        | Reading::Cadence { rpm: v }
        | Reading::Power { w: v }
        | Reading::Temperature { c: v }
        | Reading::Spo2 { pct: v } => v.is_finite(),
    };
    if !finite {
        return Verdict::Rejected(NotFinite);
    }
    let impossible = |v, range| !within(v, range);
    match *r {
        Reading::HeartRate { bpm } => {
            if impossible(bpm, limits::HR_BPM) {
                return Verdict::Rejected(Impossible);
            }
            let (lo, hi) = profile.hr_valid_range();
            if bpm < lo {
                Verdict::Flagged(HeartRateBelowRange)
            } else if bpm > hi {
                Verdict::Flagged(HeartRateAboveRange)
            } else {
                Verdict::Accepted
            }
        }
        Reading::RrInterval { ms } if impossible(ms, limits::RR_MS) => {
            Verdict::Rejected(Impossible)
        }
        Reading::Position {
            lat,
            lon,
            accuracy_m,
        } => {
            if !within(lat, (-90.0, 90.0)) || !within(lon, (-180.0, 180.0)) {
                Verdict::Rejected(OutOfRange)
            } else if lat == 0.0 && lon == 0.0 {
                Verdict::Rejected(NullIsland)
            } else if accuracy_m.is_some_and(|a| !(0.0..=MAX_GPS_ACCURACY_M).contains(&a)) {
                Verdict::Flagged(PoorAccuracy)
            } else {
                Verdict::Accepted
            }
        }
        Reading::Altitude { m, .. } if impossible(m, limits::ALTITUDE_M) => {
            Verdict::Rejected(Impossible)
        }
        Reading::Speed { mps } if impossible(mps, limits::SPEED_MPS) => {
            Verdict::Rejected(Impossible)
        }
        Reading::Distance { m } if impossible(m, limits::DISTANCE_M) => {
            Verdict::Rejected(Impossible)
        }
        Reading::Cadence { rpm } if impossible(rpm, limits::CADENCE_RPM) => {
            Verdict::Rejected(Impossible)
        }
        Reading::Power { w } if impossible(w, limits::POWER_W) => Verdict::Rejected(Impossible),
        Reading::Temperature { c } if impossible(c, limits::TEMPERATURE_C) => {
            Verdict::Rejected(Impossible)
        }
        Reading::Spo2 { pct } => {
            if impossible(pct, limits::SPO2_PCT) {
                Verdict::Rejected(Impossible)
            } else if pct < limits::SPO2_CRITICAL_PCT {
                Verdict::Flagged(Spo2BelowRange)
            } else {
                Verdict::Accepted
            }
        }
        _ => Verdict::Accepted,
    }
}

/// Counts per channel of what was accepted, flagged and rejected, and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelReport {
    /// Every sample that arrived on the channel.
    pub received: u64,
    /// Samples used by the metrics (accepted + flagged, minus those the track filter excluded).
    pub accepted: u64,
    pub flagged: BTreeMap<Reason, u64>,
    pub rejected: BTreeMap<Reason, u64>,
    /// Kept and stored, but excluded from a metric (GPS outliers out of distance).
    pub excluded: BTreeMap<Reason, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    pub channels: BTreeMap<Channel, ChannelReport>,
}

impl ValidationReport {
    pub fn record(&mut self, ch: Channel, v: Verdict) {
        let r = self.channels.entry(ch).or_default();
        r.received += 1;
        match v {
            Verdict::Accepted => r.accepted += 1,
            Verdict::Flagged(why) => {
                r.accepted += 1;
                *r.flagged.entry(why).or_default() += 1;
            }
            Verdict::Rejected(why) => *r.rejected.entry(why).or_default() += 1,
        }
    }

    /// A usable sample that a later filter kept out of a metric.
    pub fn exclude(&mut self, ch: Channel, why: Reason) {
        let r = self.channels.entry(ch).or_default();
        r.accepted = r.accepted.saturating_sub(1);
        *r.excluded.entry(why).or_default() += 1;
    }

    pub fn total_received(&self) -> u64 {
        self.channels.values().map(|c| c.received).sum()
    }

    pub fn total_rejected(&self) -> u64 {
        self.channels
            .values()
            .flat_map(|c| c.rejected.values())
            .sum()
    }

    pub fn total_flagged(&self) -> u64 {
        self.channels
            .values()
            .flat_map(|c| c.flagged.values())
            .sum()
    }

    pub fn total_excluded(&self) -> u64 {
        self.channels
            .values()
            .flat_map(|c| c.excluded.values())
            .sum()
    }

    /// True when a channel had any flagged, rejected or excluded sample.
    pub fn channel_clean(&self, ch: Channel) -> bool {
        self.channels
            .get(&ch)
            .is_none_or(|c| c.flagged.is_empty() && c.rejected.is_empty() && c.excluded.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;
    use crate::time::Timestamp;

    fn prof(age: u32) -> ResolvedProfile {
        Profile {
            age_years: Some(age),
            ..Profile::default()
        }
        .resolve()
    }

    fn hr(bpm: f64) -> Reading {
        Reading::HeartRate { bpm }
    }

    #[test]
    fn heart_rate_boundaries() {
        let p = prof(40); // upper limit 180
        assert_eq!(judge(&p, &hr(40.0)), Verdict::Accepted);
        assert_eq!(
            judge(&p, &hr(39.0)),
            Verdict::Flagged(Reason::HeartRateBelowRange)
        );
        assert_eq!(judge(&p, &hr(180.0)), Verdict::Accepted);
        assert_eq!(
            judge(&p, &hr(181.0)),
            Verdict::Flagged(Reason::HeartRateAboveRange)
        );
        assert_eq!(
            judge(&p, &hr(20.0)),
            Verdict::Flagged(Reason::HeartRateBelowRange)
        );
        assert_eq!(judge(&p, &hr(19.9)), Verdict::Rejected(Reason::Impossible));
        assert_eq!(
            judge(&p, &hr(300.0)),
            Verdict::Flagged(Reason::HeartRateAboveRange)
        );
        assert_eq!(judge(&p, &hr(300.1)), Verdict::Rejected(Reason::Impossible));
        assert_eq!(
            judge(&p, &hr(f64::NAN)),
            Verdict::Rejected(Reason::NotFinite)
        );
        assert_eq!(judge(&p, &hr(0.0)), Verdict::Rejected(Reason::Impossible));
    }

    #[test]
    fn measured_max_moves_the_upper_limit() {
        let p = Profile {
            age_years: Some(40),
            hr_max_bpm: Some(195),
            ..Profile::default()
        }
        .resolve();
        assert_eq!(judge(&p, &hr(195.0)), Verdict::Accepted);
        assert_eq!(
            judge(&p, &hr(196.0)),
            Verdict::Flagged(Reason::HeartRateAboveRange)
        );
    }

    fn pos(lat: f64, lon: f64, acc: Option<f64>) -> Reading {
        Reading::Position {
            lat,
            lon,
            accuracy_m: acc,
        }
    }

    #[test]
    fn gps_boundaries() {
        let p = prof(30);
        assert_eq!(judge(&p, &pos(90.0, 180.0, None)), Verdict::Accepted);
        assert_eq!(judge(&p, &pos(-90.0, -180.0, None)), Verdict::Accepted);
        assert_eq!(
            judge(&p, &pos(90.000001, 0.5, None)),
            Verdict::Rejected(Reason::OutOfRange)
        );
        assert_eq!(
            judge(&p, &pos(0.5, -180.000001, None)),
            Verdict::Rejected(Reason::OutOfRange)
        );
        assert_eq!(
            judge(&p, &pos(0.0, 0.0, None)),
            Verdict::Rejected(Reason::NullIsland)
        );
        assert_eq!(judge(&p, &pos(0.0, 0.00001, None)), Verdict::Accepted);
        assert_eq!(judge(&p, &pos(1.0, 1.0, Some(50.0))), Verdict::Accepted);
        assert_eq!(
            judge(&p, &pos(1.0, 1.0, Some(50.1))),
            Verdict::Flagged(Reason::PoorAccuracy)
        );
    }

    #[test]
    fn spo2_boundaries() {
        let p = prof(30);
        let s = |pct| judge(&p, &Reading::Spo2 { pct });
        assert_eq!(s(90.0), Verdict::Accepted);
        assert_eq!(s(89.9), Verdict::Flagged(Reason::Spo2BelowRange));
        assert_eq!(s(50.0), Verdict::Flagged(Reason::Spo2BelowRange));
        assert_eq!(s(49.9), Verdict::Rejected(Reason::Impossible));
        assert_eq!(s(100.0), Verdict::Accepted);
        assert_eq!(s(100.1), Verdict::Rejected(Reason::Impossible));
    }

    #[test]
    fn other_physical_limits() {
        let p = prof(30);
        let cases = [
            (Reading::Power { w: 3000.0 }, true),
            (Reading::Power { w: 3000.5 }, false),
            (Reading::Power { w: -0.1 }, false),
            (Reading::Speed { mps: 100.0 }, true),
            (Reading::Speed { mps: 100.1 }, false),
            (Reading::Cadence { rpm: 300.0 }, true),
            (Reading::Cadence { rpm: 301.0 }, false),
            (Reading::RrInterval { ms: 200.0 }, true),
            (Reading::RrInterval { ms: 199.0 }, false),
            (Reading::RrInterval { ms: 3000.0 }, true),
            (Reading::RrInterval { ms: 3001.0 }, false),
            (Reading::Temperature { c: 70.0 }, true),
            (Reading::Temperature { c: 70.1 }, false),
            (
                Reading::Altitude {
                    m: -500.0,
                    source: crate::sample::AltitudeSource::Gps,
                },
                true,
            ),
            (
                Reading::Altitude {
                    m: 9000.1,
                    source: crate::sample::AltitudeSource::Barometric,
                },
                false,
            ),
            (Reading::Distance { m: -1.0 }, false),
        ];
        for (r, ok) in cases {
            assert_eq!(judge(&p, &r).usable(), ok, "{r:?}");
        }
    }

    #[test]
    fn out_of_order_samples_are_rejected_per_channel() {
        let mut v = Validator::new(prof(30));
        let at = |ms, r| Sample::new(Timestamp(ms), r);
        assert_eq!(v.check(&at(2000, hr(100.0))), Verdict::Accepted);
        assert_eq!(
            v.check(&at(1000, Reading::Power { w: 100.0 })),
            Verdict::Accepted
        );
        assert_eq!(
            v.check(&at(1999, hr(100.0))),
            Verdict::Rejected(Reason::OutOfOrder)
        );
        assert_eq!(v.check(&at(2000, hr(101.0))), Verdict::Accepted);
    }

    #[test]
    fn report_counts_every_decision() {
        let mut r = ValidationReport::default();
        r.record(Channel::HeartRate, Verdict::Accepted);
        r.record(
            Channel::HeartRate,
            Verdict::Flagged(Reason::HeartRateAboveRange),
        );
        r.record(Channel::HeartRate, Verdict::Rejected(Reason::Impossible));
        r.record(Channel::Position, Verdict::Accepted);
        r.exclude(Channel::Position, Reason::ImpossibleSpeed);
        let hr = &r.channels[&Channel::HeartRate];
        assert_eq!((hr.received, hr.accepted), (3, 2));
        assert_eq!(r.total_rejected(), 1);
        assert_eq!(r.total_flagged(), 1);
        assert_eq!(r.total_excluded(), 1);
        assert!(!r.channel_clean(Channel::Position));
        assert!(r.channel_clean(Channel::Power));
    }
}
