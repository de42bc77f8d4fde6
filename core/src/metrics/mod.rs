//! Workout metrics, computed as samples stream in.
//!
//! [`Metrics`] takes validated samples one at a time (in time order per channel; channels may
//! interleave freely) together with the [`TimerLog`], keeps running state of bounded size, and
//! can show live values at any moment ([`Metrics::live`]) or produce the final
//! [`MetricsSummary`] ([`Metrics::finish`]). [`compute`] does the same from a complete list of
//! samples; a property test checks the two agree.
//!
//! Each formula's source is cited in the module that implements it.

pub mod elevation;
pub mod energy;
pub mod gps;
pub mod heart;
pub mod power;
pub mod timer;
pub mod track;

use serde::{Deserialize, Serialize};

use crate::profile::ResolvedProfile;
use crate::sample::{AltitudeSource, Channel, Reading, Sample};
use crate::sport::Sport;
use crate::validation::{Reason, ValidationReport, Verdict};

use elevation::Elevation;
use energy::{CalorieMethod, EnergyInputs};
use gps::{Fix, TrackEvent, TrackFilter};
use heart::{Heart, HeartZones};
use power::{BestPower, Power};
pub use timer::{Held, TimerLog};
use track::{BestEffort, Split, Track};

/// How long a value holds when its channel falls silent (ms). Past that it is a gap.
pub mod hold {
    /// Smart recording writes heart rate every few seconds; 30 s bridges that but not a
    /// strap that fell off. Within the cap heart rate is interpolated (see
    /// [`super::HeartRateSpan`]).
    pub const HEART_RATE_MS: i64 = 30_000;
    pub const POWER_MS: i64 = 10_000;
    pub const SPEED_MS: i64 = 30_000;
    pub const CADENCE_MS: i64 = 10_000;
}

/// A source that begins measuring this long after the first one (a foot pod that connects
/// late, a barometer that wakes up) does not take over: its figures would miss everything before
/// it began, and the workout's distance, ascent and laps would jump backwards. Within it, the
/// better source wins as if both had begun together.
pub const SOURCE_GRACE_MS: i64 = 60_000;

/// Picks the source to report from `(source, began)` candidates listed best first, where `began`
/// is the sample time from which the source measures (None: not yet). Depends only on those
/// times, so the choice at completion does not depend on the order channels arrived in.
fn pick<S: Copy>(candidates: &[(S, Option<i64>)]) -> Option<S> {
    let first = candidates.iter().filter_map(|c| c.1).min()?;
    candidates
        .iter()
        .find(|c| c.1.is_some_and(|b| b <= first + SOURCE_GRACE_MS))
        .map(|c| c.0)
}

/// Which distance the workout reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistanceSource {
    /// A wheel or foot sensor's cumulative distance.
    Sensor,
    /// The integral of a speed sensor.
    Speed,
    /// The filtered GPS track.
    Gps,
}

/// Cumulative figures at one moment; laps are differences of two of these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub timer_s: f64,
    /// Every distance source's total (sensor, speed, GPS) and the index of the one reported. A
    /// lap is a difference within the source its end reports, so a source that takes over
    /// between two lap marks (possible in the first [`SOURCE_GRACE_MS`]) never makes a lap
    /// negative.
    pub distance_by_source: [f64; 3],
    pub distance_source: Option<usize>,
    pub hr_weighted: f64,
    pub hr_s: f64,
    pub power_j: f64,
    pub power_s: f64,
    /// Ascent by altitude source (barometric, GPS) and the index of the one reported.
    pub ascent_by_source: [f64; 2],
    pub ascent_source: Option<usize>,
}

impl Totals {
    /// Distance covered from `earlier` to `self`, in the source `self` reports.
    pub fn distance_since(&self, earlier: &Totals) -> f64 {
        self.distance_source.map_or(0.0, |i| {
            self.distance_by_source[i] - earlier.distance_by_source[i]
        })
    }

    /// Ascent from `earlier` to `self`, in the source `self` reports.
    pub fn ascent_since(&self, earlier: &Totals) -> f64 {
        self.ascent_source.map_or(0.0, |i| {
            self.ascent_by_source[i] - earlier.ascent_by_source[i]
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveMetrics {
    pub elapsed_s: f64,
    pub timer_s: f64,
    pub moving_s: f64,
    pub distance_m: f64,
    pub speed_mps: Option<f64>,
    pub avg_speed_mps: Option<f64>,
    /// Seconds per km at the current speed.
    pub pace_s_per_km: Option<f64>,
    pub heart_rate_bpm: Option<f64>,
    pub avg_heart_rate_bpm: Option<f64>,
    pub max_heart_rate_bpm: Option<f64>,
    pub power_w: Option<f64>,
    pub avg_power_w: Option<f64>,
    pub normalized_power_w: Option<f64>,
    pub cadence_rpm: Option<f64>,
    pub ascent_m: f64,
    pub descent_m: f64,
    pub calories_kcal: f64,
}

/// Final figures of a workout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsSummary {
    pub sport: Sport,
    /// True when the sport was guessed by the engine.
    pub sport_detected: bool,
    pub elapsed_s: f64,
    pub timer_s: f64,
    pub moving_s: f64,
    pub distance_m: Option<f64>,
    pub distance_source: Option<DistanceSource>,
    pub avg_speed_mps: Option<f64>,
    pub max_speed_mps: Option<f64>,
    pub avg_pace_s_per_km: Option<f64>,
    pub ascent_m: Option<f64>,
    pub descent_m: Option<f64>,
    pub min_altitude_m: Option<f64>,
    pub max_altitude_m: Option<f64>,
    pub altitude_source: Option<AltitudeSource>,
    pub calories_kcal: f64,
    pub calories_method: CalorieMethod,
    pub calories_clamped: bool,
    pub avg_hr_bpm: Option<f64>,
    pub max_hr_bpm: Option<f64>,
    pub hr_zones: Option<HeartZones>,
    pub trimp: Option<f64>,
    pub avg_power_w: Option<f64>,
    pub max_power_w: Option<f64>,
    pub normalized_power_w: Option<f64>,
    pub intensity_factor: Option<f64>,
    pub tss: Option<f64>,
    pub work_kj: Option<f64>,
    pub avg_cadence_rpm: Option<f64>,
    pub max_cadence_rpm: Option<f64>,
    pub avg_temperature_c: Option<f64>,
    pub min_spo2_pct: Option<f64>,
    /// Root mean square of successive RR differences (ms), a standard HRV figure.
    pub rmssd_ms: Option<f64>,
    pub vo2max_estimate: Option<f64>,
    pub splits_km: Vec<Split>,
    pub splits_mile: Vec<Split>,
    pub best_efforts: Vec<BestEffort>,
    pub best_powers: Vec<BestPower>,
}

#[derive(Clone, Debug)]
struct DistanceSensor {
    last: Option<(i64, f64)>,
    track: Track,
}

/// The streaming accumulator.
#[derive(Clone, Debug)]
pub struct Metrics {
    sport: Option<Sport>,
    profile: ResolvedProfile,
    start: i64,
    last_t: i64,
    heart: Heart,
    hr_held: Held,
    hr_current: Option<f64>,
    power: Power,
    power_held: Held,
    cadence_held: Held,
    cadence_sum: f64,
    cadence_s: f64,
    cadence_max: Option<f64>,
    temp_sum: f64,
    temp_n: u64,
    spo2_min: Option<f64>,
    rr_last: Option<f64>,
    rr_sq_sum: f64,
    rr_pairs: u64,
    speed_held: Held,
    /// Speed samples taken (the track counts only running intervals, which pauses move).
    speed_samples: u64,
    speed_track: Track,
    speed_max: Option<f64>,
    sensor: DistanceSensor,
    gps: TrackFilter,
    gps_track: Track,
    gps_last_fix: Option<Fix>,
    baro: Elevation,
    gps_alt: Elevation,
    /// When each source began measuring (sample time): distance sources at their second point
    /// (a distance needs two), altitude sources at their first sample.
    began: Began,
}

#[derive(Clone, Copy, Debug, Default)]
struct Began {
    sensor: Option<i64>,
    speed: Option<i64>,
    gps: Option<i64>,
    baro: Option<i64>,
    gps_alt: Option<i64>,
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// How one held heart-rate value is weighted up to the next sample (or the end).
///
/// Smart recording stores a point only where a value changes its course ("records key points
/// where you change direction, speed, or heart rate", Garmin Edge 820 manual, Data Recording),
/// so between two samples no more than [`hold::HEART_RATE_MS`] apart the heart rate is taken to
/// change linearly and the interval is weighted by the straight line between them (the
/// trapezoidal rule); sample-and-hold would bias the average toward the earlier value on every
/// rise or fall. A longer silence is a gap: the last value holds for the cap, as before. Dense
/// (1 Hz) recordings get practically the same figure either way. The rule looks at the
/// heart-rate channel alone, so it does not depend on how channels interleave.
#[derive(Clone, Copy, Debug)]
struct HeartRateSpan {
    /// Weighted up to here (ms).
    until: i64,
    /// The straight line from `(t0, v0)` to `(t1, v1)`, when the next value is connected.
    line: Option<(i64, i64, f64)>,
}

impl HeartRateSpan {
    /// The span of the last value `last` up to `t`, where `next` is the next value (None: the
    /// end of the workout, where the last value holds).
    fn new(last: Option<(i64, f64)>, t: i64, next: Option<f64>) -> Self {
        match last {
            Some((pt, _)) if t - pt <= hold::HEART_RATE_MS => HeartRateSpan {
                until: t,
                line: next.filter(|_| t > pt).map(|v| (pt, t, v)),
            },
            Some((pt, _)) => HeartRateSpan {
                until: pt + hold::HEART_RATE_MS,
                line: None,
            },
            None => HeartRateSpan {
                until: t,
                line: None,
            },
        }
    }

    /// Feeds `f(bpm, seconds)` for the part of the running interval `[a, b)` of value `v`
    /// inside the span; on a line, the bpm is the line's mean over the part (its midpoint).
    fn apply(&self, a: i64, b: i64, v: f64, mut f: impl FnMut(f64, f64)) {
        let b = b.min(self.until);
        if b <= a {
            return;
        }
        let bpm = match self.line {
            Some((t0, t1, v1)) => {
                let mid = (a + b) as f64 / 2.0;
                v + (v1 - v) * (mid - t0 as f64) / (t1 - t0) as f64
            }
            None => v,
        };
        f(bpm, secs(b - a));
    }
}

impl Metrics {
    /// `sport` is what the app said (None: detect it). Plausible GPS speed uses the sport.
    pub fn new(sport: Option<Sport>, profile: ResolvedProfile, start_ms: i64) -> Self {
        let s = sport.unwrap_or(Sport::Other);
        let th = s.moving_threshold_mps();
        Self {
            sport,
            profile,
            start: start_ms,
            last_t: start_ms,
            heart: Heart::default(),
            hr_held: Held::new(hold::HEART_RATE_MS),
            hr_current: None,
            power: Power::default(),
            power_held: Held::new(hold::POWER_MS),
            cadence_held: Held::new(hold::CADENCE_MS),
            cadence_sum: 0.0,
            cadence_s: 0.0,
            cadence_max: None,
            temp_sum: 0.0,
            temp_n: 0,
            spo2_min: None,
            rr_last: None,
            rr_sq_sum: 0.0,
            rr_pairs: 0,
            speed_held: Held::new(hold::SPEED_MS),
            speed_samples: 0,
            speed_track: Track::new(th),
            speed_max: None,
            sensor: DistanceSensor {
                last: None,
                track: Track::new(th),
            },
            gps: TrackFilter::new(s.max_speed_mps()),
            gps_track: Track::new(th),
            gps_last_fix: None,
            baro: Elevation::new(AltitudeSource::Barometric),
            gps_alt: Elevation::new(AltitudeSource::Gps),
            began: Began::default(),
        }
    }

    /// The sport changed during the workout (UpdateWorkout): calories, best efforts and the
    /// VO2max estimate are computed for the new sport. The GPS speed limit and moving thresholds
    /// chosen at the start stay, so samples already judged are not judged again differently.
    pub fn set_sport(&mut self, sport: Sport) {
        self.sport = Some(sport);
    }

    /// Notes when each source began measuring, after a sample at `t` fed it.
    fn note_began(&mut self, t: i64) {
        let b = &mut self.began;
        for (slot, measuring) in [
            (&mut b.sensor, self.sensor.track.points_seen >= 2),
            (&mut b.speed, self.speed_samples >= 2),
            (&mut b.gps, self.gps_track.points_seen >= 2),
            (&mut b.baro, self.baro.samples > 0),
            (&mut b.gps_alt, self.gps_alt.samples > 0),
        ] {
            if measuring && slot.is_none() {
                *slot = Some(t);
            }
        }
    }

    /// Feeds one sample that the validator did not reject. GPS decisions made here are added
    /// to `report`.
    pub fn push(
        &mut self,
        s: &Sample,
        verdict: Verdict,
        timer: &TimerLog,
        report: &mut ValidationReport,
    ) {
        if !verdict.usable() {
            return;
        }
        let t = s.t.0;
        self.last_t = self.last_t.max(t);
        let active = timer.is_active(t);
        let p = self.profile;
        match s.reading {
            Reading::HeartRate { bpm } => {
                let heart = &mut self.heart;
                let span = HeartRateSpan::new(self.hr_held.last(), t, Some(bpm));
                self.hr_held.push(t, bpm, timer, |a, b, v| {
                    span.apply(a, b, v, |bpm, s| heart.interval(bpm, s, &p));
                });
                self.hr_current = Some(bpm);
                if active {
                    self.heart.peak(bpm);
                }
            }
            Reading::Power { w } => {
                let power = &mut self.power;
                self.power_held
                    .push(t, w, timer, |a, b, v| power.interval(a, b, v));
                if active {
                    self.power.peak(w);
                }
            }
            Reading::Cadence { rpm } => {
                let (sum, n) = (&mut self.cadence_sum, &mut self.cadence_s);
                self.cadence_held.push(t, rpm, timer, |a, b, v| {
                    *sum += v * secs(b - a);
                    *n += secs(b - a);
                });
                if active {
                    self.cadence_max = Some(self.cadence_max.map_or(rpm, |m| m.max(rpm)));
                }
            }
            Reading::Temperature { c } => {
                self.temp_sum += c;
                self.temp_n += 1;
            }
            Reading::Spo2 { pct } => {
                self.spo2_min = Some(self.spo2_min.map_or(pct, |m| m.min(pct)));
            }
            Reading::RrInterval { ms } => {
                if let Some(prev) = self.rr_last {
                    self.rr_sq_sum += (ms - prev).powi(2);
                    self.rr_pairs += 1;
                }
                self.rr_last = Some(ms);
            }
            Reading::Speed { mps } => {
                self.speed_samples += 1;
                let track = &mut self.speed_track;
                self.speed_held.push(t, mps, timer, |a, b, v| {
                    track.advance(secs(timer.timer_ms(b)), v * secs(b - a));
                });
                if active {
                    self.speed_max = Some(self.speed_max.map_or(mps, |m| m.max(mps)));
                }
            }
            Reading::Distance { m } => self.distance_sensor(t, m, timer, report),
            Reading::Position { lat, lon, .. } => {
                if verdict == Verdict::Flagged(Reason::PoorAccuracy) {
                    report.exclude(Channel::Position, Reason::PoorAccuracy);
                    return;
                }
                let fix = Fix { t, lat, lon };
                let (track, last_fix) = (&mut self.gps_track, &mut self.gps_last_fix);
                self.gps.push(fix, &mut |e| {
                    gps_event(e, timer, track, last_fix, report);
                });
            }
            Reading::Altitude { m, source } => match source {
                AltitudeSource::Barometric => self.baro.push(t, m, timer),
                AltitudeSource::Gps => self.gps_alt.push(t, m, timer),
            },
        }
        // Only these readings feed a distance or altitude source; heart rate and power (most
        // samples) skip the bookkeeping.
        if matches!(
            s.reading,
            Reading::Speed { .. }
                | Reading::Distance { .. }
                | Reading::Position { .. }
                | Reading::Altitude { .. }
        ) {
            self.note_began(t);
        }
    }

    fn distance_sensor(&mut self, t: i64, m: f64, timer: &TimerLog, report: &mut ValidationReport) {
        let sport = self.sport.unwrap_or(Sport::Other);
        let delta = match self.sensor.last {
            None => {
                // The first reading counts from zero only if it could have been covered since
                // the start; otherwise the counter carries an earlier total (a multisport file,
                // a sensor that was not reset) and becomes the baseline.
                let since = secs(t - self.start).max(0.0) + 1.0;
                if m <= sport.max_speed_mps() * since {
                    m * if timer.is_active(t) { 1.0 } else { 0.0 }
                } else {
                    0.0
                }
            }
            Some((_, prev)) if m < prev => {
                report.exclude(Channel::Distance, Reason::CounterReset);
                0.0
            }
            Some((pt, prev)) => {
                let span = t - pt;
                let frac = if span > 0 {
                    secs(timer.active_ms(pt, t)) / secs(span)
                } else if timer.is_active(t) {
                    1.0
                } else {
                    0.0
                };
                (m - prev) * frac
            }
        };
        self.sensor.last = Some((t, m));
        self.sensor.track.advance(secs(timer.timer_ms(t)), delta);
    }

    /// The distance source: a sensor's distance, else a speed sensor's integral, else GPS, among
    /// the sources that began measuring within [`SOURCE_GRACE_MS`] of the first.
    fn primary(&self) -> Option<(DistanceSource, &Track)> {
        let b = self.began;
        let source = pick(&[
            (DistanceSource::Sensor, b.sensor),
            (DistanceSource::Speed, b.speed),
            (DistanceSource::Gps, b.gps),
        ])?;
        Some((
            source,
            match source {
                DistanceSource::Sensor => &self.sensor.track,
                DistanceSource::Speed => &self.speed_track,
                DistanceSource::Gps => &self.gps_track,
            },
        ))
    }

    /// Barometric altitude when it began with GPS altitude (within the grace), else GPS.
    fn elevation(&self) -> Option<(AltitudeSource, &Elevation)> {
        let b = self.began;
        let source = pick(&[
            (AltitudeSource::Barometric, b.baro),
            (AltitudeSource::Gps, b.gps_alt),
        ])?;
        Some((
            source,
            match source {
                AltitudeSource::Barometric => &self.baro,
                AltitudeSource::Gps => &self.gps_alt,
            },
        ))
    }

    /// Cumulative figures up to the last processed sample (for lap boundaries).
    pub fn totals(&self, at: i64, timer: &TimerLog) -> Totals {
        Totals {
            timer_s: secs(timer.timer_ms(at)),
            distance_by_source: [
                self.sensor.track.total_m(),
                self.speed_track.total_m(),
                self.gps_track.total_m(),
            ],
            distance_source: self.primary().map(|(s, _)| match s {
                DistanceSource::Sensor => 0,
                DistanceSource::Speed => 1,
                DistanceSource::Gps => 2,
            }),
            hr_weighted: self.heart.average_bpm().unwrap_or(0.0) * self.heart.seconds(),
            hr_s: self.heart.seconds(),
            power_j: self.power.work_j,
            power_s: self.power.seconds,
            ascent_by_source: [self.baro.gain_m(), self.gps_alt.gain_m()],
            ascent_source: self.elevation().map(|(s, _)| match s {
                AltitudeSource::Barometric => 0,
                AltitudeSource::Gps => 1,
            }),
        }
    }

    fn sport_now(&self) -> (Sport, bool) {
        match self.sport {
            Some(s) => (s, false),
            None => {
                let speed = self
                    .primary()
                    .and_then(|(_, t)| (t.moving_s > 0.0).then(|| t.total_m() / t.moving_s));
                let climb = self.elevation().map_or(0.0, |(_, e)| e.gain_m());
                let hours = self.primary().map_or(0.0, |(_, t)| t.moving_s / 3600.0);
                let rate = if hours > 0.0 { climb / hours } else { 0.0 };
                (
                    energy::detect_sport(self.power.seconds > 0.0, speed, rate),
                    true,
                )
            }
        }
    }

    fn energy_inputs(&self, timer_s: f64) -> EnergyInputs {
        let primary = self.primary().map(|(_, t)| t);
        EnergyInputs {
            timer_s,
            moving_s: primary.map_or(0.0, |t| t.moving_s),
            power_work_j: (self.power.seconds > 0.0).then_some(self.power.work_j),
            power_s: self.power.seconds,
            hr_s: self.heart.seconds(),
            keytel_kcal: self.heart.keytel_kcal,
            walk_m: primary.map_or(0.0, |t| t.walk_m),
            run_m: primary.map_or(0.0, |t| t.run_m),
            ascent_m: self.elevation().map_or(0.0, |(_, e)| e.gain_m()),
            descent_m: self.elevation().map_or(0.0, |(_, e)| e.loss_m()),
            v3_integral: primary.map_or(0.0, |t| t.v3_integral),
            has_distance: primary.is_some_and(|t| t.total_m() > 0.0),
        }
    }

    /// What the app shows during the workout. Does not change any state.
    pub fn live(&self, now: i64, timer: &TimerLog) -> LiveMetrics {
        let timer_s = secs(timer.timer_ms(now));
        let primary = self.primary().map(|(_, t)| t);
        let distance = primary.map_or(0.0, |t| t.total_m());
        let moving = primary.map_or(timer_s, |t| t.moving_s);
        let current_speed = self
            .speed_held
            .last()
            .map(|(_, v)| v)
            .or_else(|| primary.map(|t| t.current_speed_mps));
        let (sport, _) = self.sport_now();
        let cal = energy::calories(sport, &self.profile, &self.energy_inputs(timer_s));
        let (asc, desc) = self
            .elevation()
            .map_or((0.0, 0.0), |(_, e)| (e.gain_m(), e.loss_m()));
        LiveMetrics {
            elapsed_s: secs(now - self.start),
            timer_s,
            moving_s: moving,
            distance_m: distance,
            speed_mps: current_speed,
            avg_speed_mps: (moving > 0.0 && distance > 0.0).then(|| distance / moving),
            pace_s_per_km: current_speed.filter(|v| *v > 0.1).map(|v| 1000.0 / v),
            heart_rate_bpm: self.hr_current,
            avg_heart_rate_bpm: self.heart.average_bpm(),
            max_heart_rate_bpm: self.heart.max_bpm,
            power_w: self.power_held.last().map(|(_, v)| v),
            avg_power_w: self.power.average_w(),
            normalized_power_w: self.power.normalized_w(),
            cadence_rpm: self.cadence_held.last().map(|(_, v)| v),
            ascent_m: asc,
            descent_m: desc,
            calories_kcal: cal.kcal,
        }
    }

    /// Closes every open hold at `end` and computes the final figures.
    pub fn finish(
        mut self,
        end: i64,
        timer: &TimerLog,
        report: &mut ValidationReport,
    ) -> MetricsSummary {
        let p = self.profile;
        {
            let heart = &mut self.heart;
            let span = HeartRateSpan::new(self.hr_held.last(), end, None);
            self.hr_held.flush(end, timer, |a, b, v| {
                span.apply(a, b, v, |bpm, s| heart.interval(bpm, s, &p));
            });
            let power = &mut self.power;
            self.power_held
                .flush(end, timer, |a, b, v| power.interval(a, b, v));
            power.finish();
            let (sum, n) = (&mut self.cadence_sum, &mut self.cadence_s);
            self.cadence_held.flush(end, timer, |a, b, v| {
                *sum += v * secs(b - a);
                *n += secs(b - a);
            });
            let track = &mut self.speed_track;
            self.speed_held.flush(end, timer, |a, b, v| {
                track.advance(secs(timer.timer_ms(b)), v * secs(b - a));
            });
            let (track, last_fix) = (&mut self.gps_track, &mut self.gps_last_fix);
            self.gps
                .finish(&mut |e| gps_event(e, timer, track, last_fix, report));
        }
        self.note_began(end);
        let timer_s = secs(timer.timer_ms(end));
        let (sport, detected) = self.sport_now();
        let primary = self.primary();
        let distance = primary.map(|(_, t)| t.total_m());
        let moving = primary.map_or(timer_s, |(_, t)| t.moving_s.min(timer_s));
        let elev = self.elevation();
        let e_in = self.energy_inputs(timer_s);
        let cal = energy::calories(sport, &p, &e_in);
        let avg_hr = self.heart.average_bpm();
        let avg_power = self.power.average_w();
        let np = self.power.normalized_w();
        let ftp = p.ftp_w.filter(|f| *f > 0.0);
        let dist_total = e_in.walk_m + e_in.run_m;
        let run_share = if dist_total > 0.0 {
            e_in.run_m / dist_total
        } else {
            0.0
        };
        let avg_speed = distance.filter(|_| moving > 0.0).map(|d| d / moving);
        let max_speed = self
            .speed_max
            .or_else(|| primary.map(|(_, t)| t.max_speed_mps));
        let has_hr = self.heart.seconds() > 0.0;
        MetricsSummary {
            sport,
            sport_detected: detected,
            elapsed_s: secs(end - self.start),
            timer_s,
            moving_s: moving,
            distance_m: distance,
            distance_source: primary.map(|(s, _)| s),
            avg_speed_mps: avg_speed,
            max_speed_mps: max_speed,
            avg_pace_s_per_km: avg_speed.filter(|v| *v > 0.0).map(|v| 1000.0 / v),
            ascent_m: elev.map(|(_, e)| e.gain_m()),
            descent_m: elev.map(|(_, e)| e.loss_m()),
            min_altitude_m: elev.and_then(|(_, e)| e.min_m),
            max_altitude_m: elev.and_then(|(_, e)| e.max_m),
            altitude_source: elev.map(|(s, _)| s),
            calories_kcal: cal.kcal,
            calories_method: cal.method,
            calories_clamped: cal.clamped,
            avg_hr_bpm: avg_hr,
            max_hr_bpm: self.heart.max_bpm,
            hr_zones: has_hr.then(|| self.heart.zones.clone()),
            trimp: has_hr.then_some(self.heart.trimp),
            avg_power_w: avg_power,
            max_power_w: self.power.max_w,
            normalized_power_w: np,
            intensity_factor: np.zip(ftp).map(|(np, f)| power::intensity_factor(np, f)),
            tss: np.zip(ftp).map(|(np, f)| power::tss(timer_s, np, f)),
            work_kj: (self.power.seconds > 0.0).then(|| self.power.work_j / 1000.0),
            avg_cadence_rpm: (self.cadence_s > 0.0).then(|| self.cadence_sum / self.cadence_s),
            max_cadence_rpm: self.cadence_max,
            avg_temperature_c: (self.temp_n > 0).then(|| self.temp_sum / self.temp_n as f64),
            min_spo2_pct: self.spo2_min,
            rmssd_ms: (self.rr_pairs > 0).then(|| (self.rr_sq_sum / self.rr_pairs as f64).sqrt()),
            vo2max_estimate: energy::vo2max_estimate(
                sport,
                &p,
                avg_hr,
                moving,
                distance,
                run_share,
                e_in.ascent_m,
                avg_power,
            ),
            splits_km: primary.map_or(vec![], |(_, t)| t.km_splits().to_vec()),
            splits_mile: primary.map_or(vec![], |(_, t)| t.mile_splits().to_vec()),
            best_efforts: if sport.on_foot() {
                primary.map_or(vec![], |(_, t)| t.best_efforts())
            } else {
                vec![]
            },
            best_powers: self.power.best_powers(),
        }
    }
}

fn gps_event(
    e: TrackEvent,
    timer: &TimerLog,
    track: &mut Track,
    last_fix: &mut Option<Fix>,
    report: &mut ValidationReport,
) {
    match e {
        TrackEvent::Step { from, to, metres } => {
            let span = to.t - from.t;
            // Two fixes stamped with the same second (2 Hz logging at second resolution) cover
            // ground too: counted when the timer runs, as for a distance sensor.
            let frac = if span > 0 {
                secs(timer.active_ms(from.t, to.t)) / secs(span)
            } else if timer.is_active(to.t) {
                1.0
            } else {
                0.0
            };
            track.advance(secs(timer.timer_ms(to.t)), metres * frac);
            *last_fix = Some(to);
        }
        TrackEvent::Excluded { why, .. } => report.exclude(Channel::Position, why),
        TrackEvent::NewSegment { at } => {
            track.advance(secs(timer.timer_ms(at.t)), 0.0);
            *last_fix = Some(at);
        }
    }
}

/// Computes the final metrics from a whole workout at once: the samples (any order across
/// channels), the timer, and the end. Used by importers and to check the streaming path.
pub fn compute(
    sport: Option<Sport>,
    profile: ResolvedProfile,
    samples: &[Sample],
    timer: &TimerLog,
    end: i64,
) -> (MetricsSummary, ValidationReport) {
    let start = timer.start_ms().unwrap_or(end);
    let mut sorted: Vec<&Sample> = samples.iter().collect();
    sorted.sort_by_key(|s| s.t);
    let mut validator = crate::validation::Validator::new(profile);
    let mut report = ValidationReport::default();
    let mut m = Metrics::new(sport, profile, start);
    for s in sorted {
        let v = validator.check(s);
        report.record(s.channel(), v);
        m.push(s, v, timer, &mut report);
    }
    let summary = m.finish(end, timer, &mut report);
    (summary, report)
}

#[cfg(test)]
mod source_tests {
    use super::*;

    #[test]
    fn a_source_beginning_within_the_grace_of_the_first_wins_by_rank() {
        let g = SOURCE_GRACE_MS;
        assert_eq!(
            pick(&[("sensor", Some(1_000 + g)), ("gps", Some(1_000))]),
            Some("sensor")
        );
        assert_eq!(
            pick(&[("sensor", Some(1_001 + g)), ("gps", Some(1_000))]),
            Some("gps")
        );
        assert_eq!(pick(&[("sensor", None), ("gps", Some(1_000))]), Some("gps"));
        assert_eq!(pick::<&str>(&[("sensor", None), ("gps", None)]), None);
    }
}

#[cfg(test)]
mod heart_rate_span_tests {
    use super::*;

    fn weigh(last: (i64, f64), t: i64, next: Option<f64>) -> (f64, f64) {
        let span = HeartRateSpan::new(Some(last), t, next);
        let (mut sum, mut secs_) = (0.0, 0.0);
        span.apply(last.0, t, last.1, |bpm, s| {
            sum += bpm * s;
            secs_ += s;
        });
        (sum, secs_)
    }

    #[test]
    fn samples_within_the_cap_are_joined_by_a_straight_line() {
        let (sum, s) = weigh((0, 100.0), hold::HEART_RATE_MS, Some(160.0));
        assert_eq!(s, 30.0);
        assert!((sum / s - 130.0).abs() < 1e-9);
    }

    #[test]
    fn past_the_cap_the_last_value_holds_for_the_cap_only() {
        let (sum, s) = weigh((0, 100.0), hold::HEART_RATE_MS + 1, Some(160.0));
        assert_eq!((sum, s), (3000.0, 30.0));
    }

    #[test]
    fn the_last_value_holds_to_the_end_within_the_cap() {
        assert_eq!(weigh((0, 100.0), 20_000, None), (2000.0, 20.0));
        assert_eq!(weigh((0, 100.0), 45_000, None), (3000.0, 30.0));
    }

    #[test]
    fn a_part_of_the_interval_takes_the_line_at_its_midpoint() {
        let span = HeartRateSpan::new(Some((0, 100.0)), 20_000, Some(140.0));
        let mut got = vec![];
        span.apply(10_000, 20_000, 100.0, |bpm, s| got.push((bpm, s)));
        assert_eq!(got, vec![(130.0, 10.0)]);
    }
}
