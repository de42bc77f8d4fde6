//! Domain events (RULES.md, Workouts and Health). The aggregate queues them; the host drains
//! them with [`crate::Workout::take_events`] and delivers them (store, sync, UI).

use serde::{Deserialize, Serialize};

use crate::sample::Channel;
use crate::sport::Sport;
use crate::time::Timestamp;
use crate::validation::Reason;
use crate::workout::WorkoutId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompletionReason {
    /// The athlete (or the importer) completed it.
    Completed,
    /// Continuous recording reached the 24-hour limit.
    TimeLimit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    UserCancelled,
    /// Recording stopped at the 24-hour limit with less than a minute on the timer, which the
    /// rules do not record.
    TooShort,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DomainEvent {
    WorkoutStarted {
        workout_id: WorkoutId,
        at: Timestamp,
        sport: Option<Sport>,
    },
    WorkoutUpdated {
        workout_id: WorkoutId,
        at: Timestamp,
        title: Option<String>,
        notes: Option<String>,
        sport: Option<Sport>,
    },
    WorkoutPaused {
        workout_id: WorkoutId,
        at: Timestamp,
        auto: bool,
    },
    WorkoutResumed {
        workout_id: WorkoutId,
        at: Timestamp,
        auto: bool,
    },
    LapCompleted {
        workout_id: WorkoutId,
        at: Timestamp,
        lap: u32,
    },
    WorkoutCompleted {
        workout_id: WorkoutId,
        at: Timestamp,
        reason: CompletionReason,
        sport: Sport,
        timer_s: f64,
        distance_m: Option<f64>,
    },
    WorkoutCancelled {
        workout_id: WorkoutId,
        at: Timestamp,
        reason: CancelReason,
    },
    PersonalRecordAchieved {
        workout_id: WorkoutId,
        at: Timestamp,
        sport: Sport,
        record: String,
        value: f64,
        previous: Option<f64>,
    },
    /// Gear wear was recomputed after a workout was assigned to it (RULES.md, Gear).
    WearLevelCalculated {
        gear_id: String,
        at: Timestamp,
        distance_m: f64,
        wear_pct: Option<f64>,
        replace_recommended: bool,
    },
    /// A health reading crossed a critical limit; the app must show it and have the user
    /// acknowledge it. Raised once when a channel enters the critical range, not per sample.
    CriticalAlertTriggered {
        workout_id: WorkoutId,
        at: Timestamp,
        channel: Channel,
        value: f64,
        reason: Reason,
    },
}

impl DomainEvent {
    pub fn name(&self) -> &'static str {
        match self {
            DomainEvent::WorkoutStarted { .. } => "WorkoutStarted",
            DomainEvent::WorkoutUpdated { .. } => "WorkoutUpdated",
            DomainEvent::WorkoutPaused { .. } => "WorkoutPaused",
            DomainEvent::WorkoutResumed { .. } => "WorkoutResumed",
            DomainEvent::LapCompleted { .. } => "LapCompleted",
            DomainEvent::WorkoutCompleted { .. } => "WorkoutCompleted",
            DomainEvent::WorkoutCancelled { .. } => "WorkoutCancelled",
            DomainEvent::PersonalRecordAchieved { .. } => "PersonalRecordAchieved",
            DomainEvent::CriticalAlertTriggered { .. } => "CriticalAlertTriggered",
            DomainEvent::WearLevelCalculated { .. } => "WearLevelCalculated",
        }
    }
}
