//! Records and enums that cross the FFI, in the units and names an app developer expects.
//! Times are milliseconds since the Unix epoch (UTC); distances metres; speeds m/s; durations
//! seconds; heart rate bpm; power watts; energy kcal.

use fitedge_core as core;

/// The sport of a workout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Sport {
    Running,
    Walking,
    Hiking,
    Cycling,
    Swimming,
    Rowing,
    Transition,
    Other,
}

impl From<Sport> for core::Sport {
    fn from(s: Sport) -> Self {
        match s {
            Sport::Running => core::Sport::Running,
            Sport::Walking => core::Sport::Walking,
            Sport::Hiking => core::Sport::Hiking,
            Sport::Cycling => core::Sport::Cycling,
            Sport::Swimming => core::Sport::Swimming,
            Sport::Rowing => core::Sport::Rowing,
            Sport::Transition => core::Sport::Transition,
            Sport::Other => core::Sport::Other,
        }
    }
}

impl From<core::Sport> for Sport {
    fn from(s: core::Sport) -> Self {
        match s {
            core::Sport::Running => Sport::Running,
            core::Sport::Walking => Sport::Walking,
            core::Sport::Hiking => Sport::Hiking,
            core::Sport::Cycling => Sport::Cycling,
            core::Sport::Swimming => Sport::Swimming,
            core::Sport::Rowing => Sport::Rowing,
            core::Sport::Transition => Sport::Transition,
            core::Sport::Other => Sport::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Sex {
    Male,
    Female,
}

/// The athlete's profile. Unknown values are null; the engine uses documented defaults.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct AthleteProfile {
    pub weight_kg: Option<f64>,
    pub sex: Option<Sex>,
    pub birth_year: Option<i32>,
    /// A measured maximum heart rate; when known it replaces 220 - age.
    pub hr_max_bpm: Option<u16>,
    pub hr_rest_bpm: Option<u16>,
    /// Functional threshold power, for intensity factor and TSS.
    pub ftp_w: Option<u16>,
}

impl AthleteProfile {
    pub(crate) fn to_core(&self) -> core::gear::AthleteProfile {
        core::gear::AthleteProfile {
            weight_kg: self.weight_kg,
            sex: self.sex.map(|s| match s {
                Sex::Male => core::Sex::Male,
                Sex::Female => core::Sex::Female,
            }),
            birth_year: self.birth_year,
            hr_max_bpm: self.hr_max_bpm,
            hr_rest_bpm: self.hr_rest_bpm,
            ftp_w: self.ftp_w,
            ..core::gear::AthleteProfile::default()
        }
    }

    pub(crate) fn from_core(p: &core::gear::AthleteProfile) -> Self {
        Self {
            weight_kg: p.weight_kg,
            sex: p.sex.map(|s| match s {
                core::Sex::Male => Sex::Male,
                core::Sex::Female => Sex::Female,
            }),
            birth_year: p.birth_year,
            hr_max_bpm: p.hr_max_bpm,
            hr_rest_bpm: p.hr_rest_bpm,
            ftp_w: p.ftp_w,
        }
    }
}

/// One sensor reading.
#[derive(Debug, Clone, Copy, PartialEq, uniffi::Enum)]
pub enum Reading {
    HeartRate {
        bpm: f64,
    },
    /// One beat-to-beat interval, milliseconds.
    RrInterval {
        ms: f64,
    },
    /// WGS-84 degrees; horizontal accuracy in metres when the receiver gives one.
    Position {
        latitude: f64,
        longitude: f64,
        accuracy_m: Option<f64>,
    },
    Altitude {
        metres: f64,
        barometric: bool,
    },
    Speed {
        metres_per_second: f64,
    },
    /// Cumulative distance from a wheel or foot sensor, metres.
    Distance {
        metres: f64,
    },
    Cadence {
        rpm: f64,
    },
    Power {
        watts: f64,
    },
    Temperature {
        celsius: f64,
    },
    Spo2 {
        percent: f64,
    },
}

/// A reading and when it was taken (ms since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, uniffi::Record)]
pub struct Sample {
    pub timestamp_ms: i64,
    pub reading: Reading,
}

impl From<Sample> for core::Sample {
    fn from(s: Sample) -> Self {
        let r = match s.reading {
            Reading::HeartRate { bpm } => core::Reading::HeartRate { bpm },
            Reading::RrInterval { ms } => core::Reading::RrInterval { ms },
            Reading::Position {
                latitude,
                longitude,
                accuracy_m,
            } => core::Reading::Position {
                lat: latitude,
                lon: longitude,
                accuracy_m,
            },
            Reading::Altitude { metres, barometric } => core::Reading::Altitude {
                m: metres,
                source: if barometric {
                    core::AltitudeSource::Barometric
                } else {
                    core::AltitudeSource::Gps
                },
            },
            Reading::Speed { metres_per_second } => core::Reading::Speed {
                mps: metres_per_second,
            },
            Reading::Distance { metres } => core::Reading::Distance { m: metres },
            Reading::Cadence { rpm } => core::Reading::Cadence { rpm },
            Reading::Power { watts } => core::Reading::Power { w: watts },
            Reading::Temperature { celsius } => core::Reading::Temperature { c: celsius },
            Reading::Spo2 { percent } => core::Reading::Spo2 { pct: percent },
        };
        core::Sample::new(core::Timestamp(s.timestamp_ms), r)
    }
}

/// How the engine judged a sample.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SampleVerdict {
    Accepted,
    /// Kept, but outside a range of the rules (e.g. heart rate above 220 - age).
    Flagged {
        reason: String,
    },
    /// Physically impossible: kept out of every figure.
    Rejected {
        reason: String,
    },
}

impl From<core::validation::Verdict> for SampleVerdict {
    fn from(v: core::validation::Verdict) -> Self {
        match v {
            core::validation::Verdict::Accepted => SampleVerdict::Accepted,
            core::validation::Verdict::Flagged(r) => SampleVerdict::Flagged {
                reason: r.as_str().into(),
            },
            core::validation::Verdict::Rejected(r) => SampleVerdict::Rejected {
                reason: r.as_str().into(),
            },
        }
    }
}

/// A sample broke a health range of the rules (see `HealthAlertListener`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct HealthAlert {
    pub workout_id: String,
    /// The sample's time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// "heart_rate" or "spo2".
    pub channel: String,
    /// The sample's value: bpm or percent.
    pub value: f64,
    /// "heart_rate_above_range", "heart_rate_below_range" or "spo2_below_range".
    pub reason: String,
}

impl HealthAlert {
    pub(crate) fn from_event(e: &core::DomainEvent) -> Option<Self> {
        match e {
            core::DomainEvent::CriticalAlertTriggered {
                workout_id,
                at,
                channel,
                value,
                reason,
            } => Some(HealthAlert {
                workout_id: workout_id.0.clone(),
                timestamp_ms: at.0,
                channel: channel.as_str().into(),
                value: *value,
                reason: reason.as_str().into(),
            }),
            _ => None,
        }
    }
}

/// Counts for a batch of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct BatchResult {
    pub accepted: u32,
    pub flagged: u32,
    pub rejected: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum WorkoutState {
    NotStarted,
    Active,
    Paused,
    AutoPaused,
    Completed,
    Cancelled,
}

impl From<core::WorkoutState> for WorkoutState {
    fn from(s: core::WorkoutState) -> Self {
        match s {
            core::WorkoutState::NotStarted => WorkoutState::NotStarted,
            core::WorkoutState::Active => WorkoutState::Active,
            core::WorkoutState::Paused { auto: false } => WorkoutState::Paused,
            core::WorkoutState::Paused { auto: true } => WorkoutState::AutoPaused,
            core::WorkoutState::Completed => WorkoutState::Completed,
            core::WorkoutState::Cancelled => WorkoutState::Cancelled,
        }
    }
}

/// What the app shows during a workout.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct LiveMetrics {
    pub workout_id: String,
    pub state: WorkoutState,
    pub elapsed_s: f64,
    pub timer_s: f64,
    pub moving_s: f64,
    pub distance_m: f64,
    pub speed_mps: Option<f64>,
    pub pace_s_per_km: Option<f64>,
    pub heart_rate_bpm: Option<f64>,
    pub avg_heart_rate_bpm: Option<f64>,
    pub max_heart_rate_bpm: Option<f64>,
    pub power_w: Option<f64>,
    pub avg_power_w: Option<f64>,
    pub normalized_power_w: Option<f64>,
    pub cadence_rpm: Option<f64>,
    pub ascent_m: f64,
    pub calories_kcal: f64,
}

impl LiveMetrics {
    pub(crate) fn from_core(
        id: &str,
        state: core::WorkoutState,
        m: core::metrics::LiveMetrics,
    ) -> Self {
        Self {
            workout_id: id.to_string(),
            state: state.into(),
            elapsed_s: m.elapsed_s,
            timer_s: m.timer_s,
            moving_s: m.moving_s,
            distance_m: m.distance_m,
            speed_mps: m.speed_mps,
            pace_s_per_km: m.pace_s_per_km,
            heart_rate_bpm: m.heart_rate_bpm,
            avg_heart_rate_bpm: m.avg_heart_rate_bpm,
            max_heart_rate_bpm: m.max_heart_rate_bpm,
            power_w: m.power_w,
            avg_power_w: m.avg_power_w,
            normalized_power_w: m.normalized_power_w,
            cadence_rpm: m.cadence_rpm,
            ascent_m: m.ascent_m,
            calories_kcal: m.calories_kcal,
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Lap {
    pub index: u32,
    pub start_time_ms: i64,
    pub end_time_ms: i64,
    pub timer_s: f64,
    pub distance_m: f64,
    pub avg_heart_rate_bpm: Option<f64>,
    pub avg_power_w: Option<f64>,
}

/// A finished workout's figures.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct WorkoutSummary {
    pub id: String,
    pub title: Option<String>,
    pub sport: Sport,
    pub start_time_ms: i64,
    pub end_time_ms: i64,
    pub elapsed_s: f64,
    pub timer_s: f64,
    pub moving_s: f64,
    pub distance_m: Option<f64>,
    pub avg_speed_mps: Option<f64>,
    pub ascent_m: Option<f64>,
    pub descent_m: Option<f64>,
    pub calories_kcal: f64,
    pub avg_heart_rate_bpm: Option<f64>,
    pub max_heart_rate_bpm: Option<f64>,
    pub avg_power_w: Option<f64>,
    pub normalized_power_w: Option<f64>,
    pub training_stress_score: Option<f64>,
    pub vo2max_estimate: Option<f64>,
    pub laps: Vec<Lap>,
    /// Samples received, and how many were rejected or flagged.
    pub samples: u64,
    pub rejected: u64,
    pub flagged: u64,
    /// Every figure as JSON (splits, best efforts, zones, the validation report).
    pub details_json: String,
}

impl From<&core::WorkoutSummary> for WorkoutSummary {
    fn from(s: &core::WorkoutSummary) -> Self {
        let m = &s.metrics;
        Self {
            id: s.id.0.clone(),
            title: s.title.clone(),
            sport: m.sport.into(),
            start_time_ms: s.start_time.0,
            end_time_ms: s.end_time.0,
            elapsed_s: m.elapsed_s,
            timer_s: m.timer_s,
            moving_s: m.moving_s,
            distance_m: m.distance_m,
            avg_speed_mps: m.avg_speed_mps,
            ascent_m: m.ascent_m,
            descent_m: m.descent_m,
            calories_kcal: m.calories_kcal,
            avg_heart_rate_bpm: m.avg_hr_bpm,
            max_heart_rate_bpm: m.max_hr_bpm,
            avg_power_w: m.avg_power_w,
            normalized_power_w: m.normalized_power_w,
            training_stress_score: m.tss,
            vo2max_estimate: m.vo2max_estimate,
            laps: s
                .laps
                .iter()
                .map(|l| Lap {
                    index: l.index,
                    start_time_ms: l.start_time.0,
                    end_time_ms: l.end_time.0,
                    timer_s: l.timer_s,
                    distance_m: l.distance_m,
                    avg_heart_rate_bpm: l.avg_hr_bpm,
                    avg_power_w: l.avg_power_w,
                })
                .collect(),
            samples: s.samples,
            rejected: s.rejected,
            flagged: s.flagged,
            details_json: serde_json::to_string(s).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct WorkoutListItem {
    pub id: String,
    pub sport: Sport,
    pub start_time_ms: i64,
    pub title: Option<String>,
    pub timer_s: f64,
    pub distance_m: Option<f64>,
    pub calories_kcal: f64,
}

/// One page of history; pass `next_cursor` to get the next.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct WorkoutPage {
    pub items: Vec<WorkoutListItem>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum StatsPeriod {
    Week,
    Month,
    Year,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct PeriodStats {
    pub period: String,
    pub workouts: u64,
    pub distance_m: f64,
    pub timer_s: f64,
    pub calories_kcal: f64,
    pub ascent_m: f64,
    pub avg_pace_s_per_km: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum WorkoutStats {
    /// Statistics need at least `needed` workouts.
    NotEnoughData { workouts: u64, needed: u64 },
    Ready {
        workouts: u64,
        periods: Vec<PeriodStats>,
    },
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RouteMap {
    /// A GeoJSON Feature (MultiLineString), simplified for display.
    pub geojson: String,
    /// Google encoded polyline, precision 5.
    pub polyline: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum GearKind {
    Shoes,
    Bike,
    Other,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Gear {
    pub id: String,
    pub kind: GearKind,
    pub name: String,
    pub service_life_km: Option<f64>,
    pub workouts: u64,
    pub distance_m: f64,
    pub wear_percent: Option<f64>,
    pub replace_recommended: bool,
    pub retired: bool,
}

impl From<core::gear::Gear> for Gear {
    fn from(g: core::gear::Gear) -> Self {
        Self {
            id: g.id,
            kind: match g.kind {
                core::gear::GearKind::Shoes => GearKind::Shoes,
                core::gear::GearKind::Bike => GearKind::Bike,
                core::gear::GearKind::Other => GearKind::Other,
            },
            name: g.name,
            service_life_km: g.service_life_km,
            workouts: g.workouts,
            distance_m: g.distance_m,
            wear_percent: g.wear_pct,
            replace_recommended: g.replace_recommended,
            retired: g.retired,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FileFormat {
    Fit,
    Gpx,
    Tcx,
}
