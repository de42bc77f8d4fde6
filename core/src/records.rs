//! Personal records: the best efforts of a finished workout against the athlete's bests.
//!
//! RULES.md: personal records are updated only from validated data. An effort counts only if
//! the channel it was measured on came through validation clean (no sample rejected, flagged
//! or excluded), and only if the sport was not guessed.

use serde::{Deserialize, Serialize};

use crate::event::DomainEvent;
use crate::metrics::DistanceSource;
use crate::sample::Channel;
use crate::sport::Sport;
use crate::workout::WorkoutSummary;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersonalRecord {
    pub sport: Sport,
    /// "1km", "5km", ... (seconds, lower is better) or "power_5s", "power_20min", ... (watts,
    /// higher is better).
    pub record: String,
    pub value: f64,
    pub workout_id: String,
    pub achieved_at: crate::time::Timestamp,
}

impl PersonalRecord {
    pub fn lower_is_better(&self) -> bool {
        !self.record.starts_with("power_")
    }
}

/// The records a workout sets, each paired with the value it beat (if any), and the events.
pub fn new_records(
    summary: &WorkoutSummary,
    current: &[PersonalRecord],
) -> (Vec<(PersonalRecord, Option<f64>)>, Vec<DomainEvent>) {
    let m = &summary.metrics;
    if m.sport_detected {
        return (vec![], vec![]);
    }
    let v = &summary.validation;
    let distance_clean = match m.distance_source {
        Some(DistanceSource::Sensor) => v.channel_clean(Channel::Distance),
        Some(DistanceSource::Speed) => v.channel_clean(Channel::Speed),
        Some(DistanceSource::Gps) => v.channel_clean(Channel::Position),
        None => false,
    };
    let mut candidates = vec![];
    if distance_clean {
        for e in &m.best_efforts {
            candidates.push((e.name.clone(), e.duration_s));
        }
    }
    if v.channel_clean(Channel::Power) {
        for p in &m.best_powers {
            candidates.push((format!("power_{}", p.name), p.watts));
        }
    }
    let mut out = vec![];
    let mut events = vec![];
    for (record, value) in candidates {
        let rec = PersonalRecord {
            sport: m.sport,
            record: record.clone(),
            value,
            workout_id: summary.id.0.clone(),
            achieved_at: summary.end_time,
        };
        let previous = current
            .iter()
            .find(|r| r.sport == m.sport && r.record == record)
            .map(|r| r.value);
        let better = match previous {
            None => true,
            Some(p) if rec.lower_is_better() => value < p,
            Some(p) => value > p,
        };
        if better {
            events.push(DomainEvent::PersonalRecordAchieved {
                workout_id: summary.id.clone(),
                at: summary.end_time,
                sport: m.sport,
                record,
                value,
                previous,
            });
            out.push((rec, previous));
        }
    }
    (out, events)
}
