//! The workout aggregate: its lifecycle as a state machine, the samples it takes in, and the
//! events it emits.
//!
//! ```text
//!              start            pause / auto-pause           complete (>= 1 min of timer)
//! NotStarted ────────▶ Active ◀──────────────────▶ Paused ─────────────────────────────▶ Completed
//!                        │        resume / auto-resume │           24 h of elapsed time ──▶ Completed
//!                        └───────────── cancel ────────┴──────────────────────────────▶ Cancelled
//! ```
//! Every command takes the time it happened; [`Recorder`] supplies it from a [`Clock`]. The
//! aggregate does no I/O: samples go in, events and a summary come out, and the buffered samples
//! are drained by whoever stores them.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{CancelReason, CompletionReason, DomainEvent};
use crate::metrics::{LiveMetrics, Metrics, MetricsSummary, TimerLog, Totals};
use crate::profile::ResolvedProfile;
use crate::sample::{Channel, Reading, Sample};
use crate::sport::{AutoPause, Sport};
use crate::time::{Clock, Timestamp};
use crate::validation::{Reason, ValidationReport, Validator, Verdict};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkoutId(pub String);

impl WorkoutId {
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// A stable id derived from content (an imported file's hash and session index), so that
    /// importing the same file twice finds the same workout.
    pub fn derived(namespace: &str, key: &str) -> Self {
        let ns = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, namespace.as_bytes());
        Self(uuid::Uuid::new_v5(&ns, key.as_bytes()).to_string())
    }
}

impl fmt::Display for WorkoutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum WorkoutState {
    NotStarted,
    Active,
    Paused { auto: bool },
    Completed,
    Cancelled,
}

impl fmt::Display for WorkoutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkoutState::NotStarted => "not started",
            WorkoutState::Active => "active",
            WorkoutState::Paused { auto: false } => "paused",
            WorkoutState::Paused { auto: true } => "auto-paused",
            WorkoutState::Completed => "completed",
            WorkoutState::Cancelled => "cancelled",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Start,
    Pause,
    Resume,
    Lap,
    Update,
    Record,
    Complete,
    Cancel,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkoutError {
    #[error("cannot {command:?} a workout that is {state}")]
    InvalidTransition {
        state: WorkoutState,
        command: Command,
    },
    #[error("a workout shorter than 1 minute is not recorded (timer shows {timer_s:.1} s)")]
    TooShort { timer_s: f64 },
    #[error("recording stopped: the 24-hour limit was reached")]
    TimeLimitReached,
    #[error("{command:?} at {at} is earlier than the last change at {last}")]
    TimeWentBackwards {
        command: Command,
        at: Timestamp,
        last: Timestamp,
    },
}

/// How far ahead of the recording's clock a live sample may be dated. Devices synchronised with
/// the phone agree within seconds; a sensor that stamps local time as UTC is off by at least
/// 30 minutes (no time zone is closer to UTC than that). Taken in, such a sample would become
/// its channel's latest, and every real sample after it would be refused as out of order until
/// real time caught up, hours later.
pub const MAX_AHEAD_OF_CLOCK_S: f64 = 120.0;

/// Limits from RULES.md, configurable per deployment.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkoutConfig {
    pub auto_pause: AutoPause,
    /// Shorter workouts are not recorded (RULES.md: 1 minute).
    pub min_timer_s: f64,
    /// Continuous recording stops after this much elapsed time (RULES.md: 24 hours).
    pub max_elapsed_s: f64,
}

impl WorkoutConfig {
    pub const MIN_TIMER_S: f64 = 60.0;
    pub const MAX_ELAPSED_S: f64 = 24.0 * 3600.0;

    pub fn for_sport(sport: Option<Sport>) -> Self {
        Self {
            auto_pause: sport.map_or(AutoPause::OFF, AutoPause::default_for),
            min_timer_s: Self::MIN_TIMER_S,
            max_elapsed_s: Self::MAX_ELAPSED_S,
        }
    }

    /// Imports replay what the device decided (its own pauses): no auto-pause.
    pub fn import() -> Self {
        Self {
            auto_pause: AutoPause::OFF,
            ..Self::for_sport(None)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LapSummary {
    pub index: u32,
    pub start_time: Timestamp,
    pub end_time: Timestamp,
    pub timer_s: f64,
    pub distance_m: f64,
    pub avg_hr_bpm: Option<f64>,
    pub avg_power_w: Option<f64>,
    pub ascent_m: f64,
}

impl LapSummary {
    fn between(index: u32, start: (Timestamp, Totals), end: (Timestamp, Totals)) -> Self {
        let (a, b) = (start.1, end.1);
        let hr_s = b.hr_s - a.hr_s;
        let p_s = b.power_s - a.power_s;
        LapSummary {
            index,
            start_time: start.0,
            end_time: end.0,
            timer_s: b.timer_s - a.timer_s,
            distance_m: b.distance_since(&a),
            avg_hr_bpm: (hr_s > 0.0).then(|| (b.hr_weighted - a.hr_weighted) / hr_s),
            avg_power_w: (p_s > 0.0).then(|| (b.power_j - a.power_j) / p_s),
            ascent_m: b.ascent_since(&a),
        }
    }
}

/// Everything known about a finished workout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkoutSummary {
    pub id: WorkoutId,
    pub title: Option<String>,
    pub notes: Option<String>,
    pub start_time: Timestamp,
    pub end_time: Timestamp,
    pub completion: CompletionReason,
    #[serde(flatten)]
    pub metrics: MetricsSummary,
    pub laps: Vec<LapSummary>,
    pub validation: ValidationReport,
    /// Samples received on every channel.
    pub samples: u64,
    /// Samples rejected as impossible (kept out of every metric).
    pub rejected: u64,
    /// Samples flagged (kept) for breaking a range of RULES.md.
    pub flagged: u64,
    pub profile: ResolvedProfile,
}

#[derive(Debug, Clone)]
struct Running {
    start: Timestamp,
    timer: TimerLog,
    metrics: Metrics,
    lap_start: (Timestamp, Totals),
}

#[derive(Debug, Clone)]
pub struct Workout {
    id: WorkoutId,
    sport: Option<Sport>,
    title: Option<String>,
    notes: Option<String>,
    profile: ResolvedProfile,
    config: WorkoutConfig,
    state: WorkoutState,
    last_change: Option<Timestamp>,
    run: Option<Running>,
    validator: Validator,
    report: ValidationReport,
    laps: Vec<LapSummary>,
    events: Vec<DomainEvent>,
    alerting: [bool; Channel::ALL.len()],
    slow_since: Option<i64>,
    last_fix: Option<(i64, f64, f64)>,
    seen_speed_sensor: bool,
    /// The latest time of a sample the workout used.
    last_used_t: Option<Timestamp>,
    samples: Vec<Sample>,
    summary: Option<WorkoutSummary>,
}

/// Rejected samples per channel and reason.
pub type RejectedCounts =
    std::collections::BTreeMap<Channel, std::collections::BTreeMap<Reason, u64>>;

/// What [`Workout::record`] did with a sample.
pub type Outcome = Verdict;

impl Workout {
    pub fn new(
        id: WorkoutId,
        sport: Option<Sport>,
        profile: ResolvedProfile,
        config: WorkoutConfig,
    ) -> Self {
        Self {
            id,
            sport,
            title: None,
            notes: None,
            profile,
            config,
            state: WorkoutState::NotStarted,
            last_change: None,
            run: None,
            validator: Validator::new(profile),
            report: ValidationReport::default(),
            laps: vec![],
            events: vec![],
            alerting: [false; Channel::ALL.len()],
            slow_since: None,
            last_fix: None,
            seen_speed_sensor: false,
            last_used_t: None,
            samples: vec![],
            summary: None,
        }
    }

    pub fn id(&self) -> &WorkoutId {
        &self.id
    }

    pub fn state(&self) -> WorkoutState {
        self.state
    }

    pub fn sport(&self) -> Option<Sport> {
        self.sport
    }

    pub fn report(&self) -> &ValidationReport {
        &self.report
    }

    pub fn summary(&self) -> Option<&WorkoutSummary> {
        self.summary.as_ref()
    }

    pub fn start_time(&self) -> Option<Timestamp> {
        self.run.as_ref().map(|r| r.start)
    }

    /// Drains the queued domain events.
    pub fn take_events(&mut self) -> Vec<DomainEvent> {
        std::mem::take(&mut self.events)
    }

    /// Drains the buffered usable samples (accepted and flagged) for storage.
    pub fn take_samples(&mut self) -> Vec<Sample> {
        std::mem::take(&mut self.samples)
    }

    fn refuse(&self, command: Command) -> WorkoutError {
        WorkoutError::InvalidTransition {
            state: self.state,
            command,
        }
    }

    fn check_time(&self, command: Command, at: Timestamp) -> Result<(), WorkoutError> {
        match self.last_change {
            Some(last) if at < last => Err(WorkoutError::TimeWentBackwards { command, at, last }),
            _ => Ok(()),
        }
    }

    pub fn start(&mut self, at: Timestamp) -> Result<(), WorkoutError> {
        if self.state != WorkoutState::NotStarted {
            return Err(self.refuse(Command::Start));
        }
        let metrics = Metrics::new(self.sport, self.profile, at.0);
        let timer = TimerLog::new(at.0);
        let totals = metrics.totals(at.0, &timer);
        self.run = Some(Running {
            start: at,
            timer,
            metrics,
            lap_start: (at, totals),
        });
        self.state = WorkoutState::Active;
        self.last_change = Some(at);
        self.events.push(DomainEvent::WorkoutStarted {
            workout_id: self.id.clone(),
            at,
            sport: self.sport,
        });
        Ok(())
    }

    fn set_timer(&mut self, at: Timestamp, running: bool) {
        if let Some(r) = self.run.as_mut() {
            r.timer.set(at.0, running);
        }
    }

    pub fn pause(&mut self, at: Timestamp) -> Result<(), WorkoutError> {
        match self.state {
            WorkoutState::Active | WorkoutState::Paused { auto: true } => {}
            _ => return Err(self.refuse(Command::Pause)),
        }
        self.check_time(Command::Pause, at)?;
        self.stop_if_past_limit(at)?;
        self.do_pause(at, false);
        Ok(())
    }

    fn do_pause(&mut self, at: Timestamp, auto: bool) {
        self.set_timer(at, false);
        self.state = WorkoutState::Paused { auto };
        self.last_change = Some(at);
        self.events.push(DomainEvent::WorkoutPaused {
            workout_id: self.id.clone(),
            at,
            auto,
        });
    }

    pub fn resume(&mut self, at: Timestamp) -> Result<(), WorkoutError> {
        if !matches!(self.state, WorkoutState::Paused { .. }) {
            return Err(self.refuse(Command::Resume));
        }
        self.check_time(Command::Resume, at)?;
        self.stop_if_past_limit(at)?;
        self.do_resume(at, false);
        Ok(())
    }

    fn do_resume(&mut self, at: Timestamp, auto: bool) {
        self.set_timer(at, true);
        self.state = WorkoutState::Active;
        self.last_change = Some(at);
        self.slow_since = None;
        self.events.push(DomainEvent::WorkoutResumed {
            workout_id: self.id.clone(),
            at,
            auto,
        });
    }

    pub fn lap(&mut self, at: Timestamp) -> Result<(), WorkoutError> {
        if !matches!(
            self.state,
            WorkoutState::Active | WorkoutState::Paused { .. }
        ) {
            return Err(self.refuse(Command::Lap));
        }
        self.check_time(Command::Lap, at)?;
        self.stop_if_past_limit(at)?;
        self.close_lap(at);
        self.last_change = Some(at);
        self.events.push(DomainEvent::LapCompleted {
            workout_id: self.id.clone(),
            at,
            lap: self.laps.len() as u32,
        });
        Ok(())
    }

    fn close_lap(&mut self, at: Timestamp) {
        if let Some(r) = self.run.as_mut() {
            let now = (at, r.metrics.totals(at.0, &r.timer));
            let lap = LapSummary::between(self.laps.len() as u32 + 1, r.lap_start, now);
            r.lap_start = now;
            self.laps.push(lap);
        }
    }

    /// UpdateWorkout: title, notes and sport may change at any time before cancellation.
    pub fn update(
        &mut self,
        at: Timestamp,
        title: Option<String>,
        notes: Option<String>,
        sport: Option<Sport>,
    ) -> Result<(), WorkoutError> {
        if self.state == WorkoutState::Cancelled {
            return Err(self.refuse(Command::Update));
        }
        if title.is_some() {
            self.title.clone_from(&title);
        }
        if notes.is_some() {
            self.notes.clone_from(&notes);
        }
        if let Some(s) = sport {
            self.sport = Some(s);
            if self.summary.is_none() {
                if let Some(r) = self.run.as_mut() {
                    r.metrics.set_sport(s);
                }
            }
            if let Some(sum) = self.summary.as_mut() {
                sum.metrics.sport = s;
                sum.metrics.sport_detected = false;
            }
        }
        if let Some(sum) = self.summary.as_mut() {
            sum.title.clone_from(&self.title);
            sum.notes.clone_from(&self.notes);
        }
        self.events.push(DomainEvent::WorkoutUpdated {
            workout_id: self.id.clone(),
            at,
            title,
            notes,
            sport,
        });
        Ok(())
    }

    /// Takes one sample. Returns how it was judged; a rejected sample is counted, not an error.
    /// Errors only when the workout is not recording, or when the sample lies past the 24-hour
    /// limit (the workout is then completed at the limit). A sample dated more than 24 hours
    /// after the last one the workout used (or its start) is rejected as a
    /// [`Reason::TimestampJump`] instead: no moment of one workout lies that far from another,
    /// so it is a sensor clock that jumped (a recovered file's record read as 2085), and ending
    /// the workout on it would make a 24-hour workout of a short one. The clock ([`Self::tick`])
    /// still ends a workout that really reaches the limit.
    pub fn record(&mut self, s: Sample) -> Result<Outcome, WorkoutError> {
        let Some(start) = self.run.as_ref().map(|r| r.start) else {
            return Err(self.refuse(Command::Record));
        };
        if !matches!(
            self.state,
            WorkoutState::Active | WorkoutState::Paused { .. }
        ) {
            return Err(self.refuse(Command::Record));
        }
        let ch = s.channel();
        if s.t.secs_since(self.last_used_t.unwrap_or(start)) > self.config.max_elapsed_s {
            let verdict = Verdict::Rejected(Reason::TimestampJump);
            self.report.record(ch, verdict);
            return Ok(verdict);
        }
        self.stop_if_past_limit(s.t)?;
        let verdict = if s.t < start {
            Verdict::Rejected(Reason::OutOfOrder)
        } else {
            self.validator.check(&s)
        };
        self.report.record(ch, verdict);
        if !verdict.usable() {
            return Ok(verdict);
        }
        self.last_used_t = self.last_used_t.max(Some(s.t));
        self.alerts(&s, verdict);
        self.auto_pause(&s);
        if let Some(r) = self.run.as_mut() {
            r.metrics.push(&s, verdict, &r.timer, &mut self.report);
        }
        self.samples.push(s);
        Ok(verdict)
    }

    /// Rejected-sample counts per channel and reason: what a recording saves, since rejected
    /// samples are never stored.
    pub fn rejected_counts(&self) -> RejectedCounts {
        self.report
            .channels
            .iter()
            .filter(|(_, r)| !r.rejected.is_empty())
            .map(|(ch, r)| (*ch, r.rejected.clone()))
            .collect()
    }

    /// Recovery after a crash: the counts a recording saved replace the rejections of the replay
    /// of its stored samples, which cannot see the samples that were rejected.
    pub fn restore_rejected(&mut self, saved: &RejectedCounts) {
        let channels: Vec<Channel> = self
            .report
            .channels
            .keys()
            .chain(saved.keys())
            .copied()
            .collect();
        for ch in channels {
            let r = self.report.channels.entry(ch).or_default();
            let replayed: u64 = r.rejected.values().sum();
            let kept = saved.get(&ch).cloned().unwrap_or_default();
            r.received = r.received.saturating_sub(replayed) + kept.values().sum::<u64>();
            r.rejected = kept;
        }
    }

    /// [`Self::record`] for a live sample, where `now` is the recording clock's time: a sample
    /// dated more than [`MAX_AHEAD_OF_CLOCK_S`] after `now` is rejected as
    /// [`Reason::AheadOfClock`] (counted, kept out of every metric) instead of being taken in.
    pub fn record_live(&mut self, s: Sample, now: Timestamp) -> Result<Outcome, WorkoutError> {
        if s.t.secs_since(now) > MAX_AHEAD_OF_CLOCK_S && self.recording() {
            let verdict = Verdict::Rejected(Reason::AheadOfClock);
            self.report.record(s.channel(), verdict);
            return Ok(verdict);
        }
        self.record(s)
    }

    fn alerts(&mut self, s: &Sample, verdict: Verdict) {
        let i = s.channel().index();
        match verdict {
            Verdict::Flagged(
                reason @ (Reason::HeartRateAboveRange
                | Reason::HeartRateBelowRange
                | Reason::Spo2BelowRange),
            ) if !self.alerting[i] => {
                self.alerting[i] = true;
                let value = match s.reading {
                    Reading::HeartRate { bpm } => bpm,
                    Reading::Spo2 { pct } => pct,
                    _ => f64::NAN,
                };
                self.events.push(DomainEvent::CriticalAlertTriggered {
                    workout_id: self.id.clone(),
                    at: s.t,
                    channel: s.channel(),
                    value,
                    reason,
                });
            }
            Verdict::Accepted => self.alerting[i] = false,
            _ => {}
        }
    }

    fn auto_pause(&mut self, s: &Sample) {
        let ap = self.config.auto_pause;
        if !ap.enabled {
            return;
        }
        let speed = match s.reading {
            Reading::Speed { mps } => {
                self.seen_speed_sensor = true;
                Some(mps)
            }
            Reading::Position { lat, lon, .. } if !self.seen_speed_sensor => {
                let prev = self.last_fix.replace((s.t.0, lat, lon));
                prev.and_then(|(pt, plat, plon)| {
                    let dt = (s.t.0 - pt) as f64 / 1000.0;
                    (dt > 0.0)
                        .then(|| crate::metrics::gps::geodesic_m((plat, plon), (lat, lon)) / dt)
                })
            }
            _ => None,
        };
        let Some(v) = speed else { return };
        if self.last_change.is_some_and(|l| s.t < l) {
            return;
        }
        // Channels may arrive in chunks (heart rate up to 110 s, then speed from 100 s): the
        // metrics have already counted the later samples under the running timer, so the
        // timer changes just after the latest sample used, never behind counted data.
        let change_at = match self.last_used_t {
            Some(l) if l > s.t => Timestamp(l.0 + 1),
            _ => s.t,
        };
        match self.state {
            WorkoutState::Active if v < ap.below_mps => {
                let since = *self.slow_since.get_or_insert(s.t.0);
                if (s.t.0 - since) as f64 / 1000.0 >= ap.after_s {
                    self.do_pause(change_at, true);
                }
            }
            WorkoutState::Active => self.slow_since = None,
            WorkoutState::Paused { auto: true } if v >= ap.below_mps => {
                self.do_resume(change_at, true);
            }
            _ => {}
        }
    }

    /// Live values for the app.
    pub fn live(&self, now: Timestamp) -> Option<LiveMetrics> {
        let r = self.run.as_ref()?;
        let end = match self.summary.as_ref() {
            Some(s) => s.end_time,
            None => now,
        };
        Some(r.metrics.live(end.0, &r.timer))
    }

    /// Enforces the 24-hour limit when no samples arrive. Returns true if it stopped recording
    /// (completed at the limit, or cancelled there as [`CancelReason::TooShort`]).
    pub fn tick(&mut self, now: Timestamp) -> bool {
        self.stop_if_past_limit(now).is_err()
    }

    fn recording(&self) -> bool {
        matches!(
            self.state,
            WorkoutState::Active | WorkoutState::Paused { .. }
        )
    }

    /// The instant recording stops: 24 hours after the start.
    fn limit(&self) -> Option<Timestamp> {
        Some(self.start_time()?.plus_secs(self.config.max_elapsed_s))
    }

    fn timer_s_at(&self, at: Timestamp) -> f64 {
        self.run
            .as_ref()
            .map_or(0.0, |r| r.timer.timer_ms(at.0) as f64 / 1000.0)
    }

    /// Every command and sample passes here first: at or past the 24-hour limit recording
    /// stops at the limit, whatever arrives (a late tick, a lap, a sample). The workout is
    /// completed there, unless its timer holds less than the minimum: a workout under a minute
    /// is not recorded however it ends (a 10-second workout left paused for a day), so it is
    /// cancelled as too short. `Err(TimeLimitReached)` when it stopped.
    fn stop_if_past_limit(&mut self, at: Timestamp) -> Result<(), WorkoutError> {
        let Some(limit) = self.limit() else {
            return Ok(());
        };
        if !self.recording() || at < limit {
            return Ok(());
        }
        if self.timer_s_at(limit) < self.config.min_timer_s {
            self.discard(limit, CancelReason::TooShort);
        } else {
            self.finish(limit, CompletionReason::TimeLimit);
        }
        Err(WorkoutError::TimeLimitReached)
    }

    pub fn complete(&mut self, at: Timestamp) -> Result<&WorkoutSummary, WorkoutError> {
        if !matches!(
            self.state,
            WorkoutState::Active | WorkoutState::Paused { .. }
        ) {
            return Err(self.refuse(Command::Complete));
        }
        self.check_time(Command::Complete, at)?;
        if self.stop_if_past_limit(at).is_err() {
            // Completing after the limit completes at the limit, with that reason.
            return match &self.summary {
                Some(s) if self.state == WorkoutState::Completed => Ok(s),
                _ => Err(WorkoutError::TooShort {
                    timer_s: self.limit().map_or(0.0, |l| self.timer_s_at(l)),
                }),
            };
        }
        let timer_s = self.timer_s_at(at);
        if timer_s < self.config.min_timer_s {
            return Err(WorkoutError::TooShort { timer_s });
        }
        self.finish(at, CompletionReason::Completed);
        self.summary
            .as_ref()
            .ok_or(WorkoutError::InvalidTransition {
                state: self.state,
                command: Command::Complete,
            })
    }

    fn finish(&mut self, at: Timestamp, reason: CompletionReason) {
        self.close_lap(at);
        let Some(r) = self.run.as_mut() else { return };
        r.timer.set(at.0, false);
        let Some(summary) = self.build_summary(at, reason) else {
            return;
        };
        self.events.push(DomainEvent::WorkoutCompleted {
            workout_id: self.id.clone(),
            at,
            reason,
            sport: summary.metrics.sport,
            timer_s: summary.metrics.timer_s,
            distance_m: summary.metrics.distance_m,
        });
        self.summary = Some(summary);
        self.state = WorkoutState::Completed;
        self.last_change = Some(at);
    }

    /// Completes an imported workout at `at`; one the rules do not record (under a minute) is
    /// cancelled instead, and its figures are still returned with the reason. `None` only for a
    /// workout that never started.
    pub fn complete_or_preview(
        &mut self,
        at: Timestamp,
    ) -> Option<(WorkoutSummary, Option<WorkoutError>)> {
        // Stopped at the 24-hour limit while the samples were replayed: what was recorded up
        // to the limit stands, completed or (under a minute) not recorded.
        let at = self.limit().map_or(at, |l| at.min(l));
        match self.state {
            WorkoutState::Completed => return Some((self.summary.clone()?, None)),
            WorkoutState::Cancelled => {
                let preview = self.preview(at)?;
                let timer_s = preview.metrics.timer_s;
                return Some((preview, Some(WorkoutError::TooShort { timer_s })));
            }
            _ => {}
        }
        match self.complete(at) {
            Ok(s) => Some((s.clone(), None)),
            Err(e) => {
                let preview = self.preview(at)?;
                let _ = self.cancel(at);
                Some((preview, Some(e)))
            }
        }
    }

    /// What completing at `at` would produce, without completing: used to show the figures of a
    /// workout that is too short to be recorded.
    pub fn preview(&self, at: Timestamp) -> Option<WorkoutSummary> {
        let mut w = self.clone();
        w.events.clear();
        w.close_lap(at);
        w.set_timer(at, false);
        w.build_summary(at, CompletionReason::Completed)
    }

    fn build_summary(&self, at: Timestamp, reason: CompletionReason) -> Option<WorkoutSummary> {
        let r = self.run.as_ref()?;
        let mut report = self.report.clone();
        let metrics = r.metrics.clone().finish(at.0, &r.timer, &mut report);
        Some(WorkoutSummary {
            id: self.id.clone(),
            title: self.title.clone(),
            notes: self.notes.clone(),
            start_time: r.start,
            end_time: at,
            completion: reason,
            metrics,
            laps: self.laps.clone(),
            samples: report.total_received(),
            rejected: report.total_rejected(),
            flagged: report.total_flagged(),
            validation: report,
            profile: self.profile,
        })
    }

    pub fn cancel(&mut self, at: Timestamp) -> Result<(), WorkoutError> {
        if !matches!(
            self.state,
            WorkoutState::Active | WorkoutState::Paused { .. }
        ) {
            return Err(self.refuse(Command::Cancel));
        }
        self.check_time(Command::Cancel, at)?;
        self.discard(at, CancelReason::UserCancelled);
        Ok(())
    }

    fn discard(&mut self, at: Timestamp, reason: CancelReason) {
        self.state = WorkoutState::Cancelled;
        self.last_change = Some(at);
        self.samples.clear();
        self.events.push(DomainEvent::WorkoutCancelled {
            workout_id: self.id.clone(),
            at,
            reason,
        });
    }

    /// The timer log (for tests and for recomputation from stored samples).
    pub fn timer(&self) -> Option<&TimerLog> {
        self.run.as_ref().map(|r| &r.timer)
    }
}

/// Where live samples go. Sensor drivers (the `fitedge-devices` hub) feed a recording through
/// this trait, so `core` never depends on them.
pub trait SampleSink {
    fn record(&mut self, sample: Sample) -> Result<Outcome, WorkoutError>;
}

impl SampleSink for Workout {
    fn record(&mut self, sample: Sample) -> Result<Outcome, WorkoutError> {
        Workout::record(self, sample)
    }
}

impl SampleSink for Recorder {
    fn record(&mut self, sample: Sample) -> Result<Outcome, WorkoutError> {
        Recorder::record(self, sample)
    }
}

/// A live recording: a [`Workout`] driven by a clock, for apps that do not timestamp commands.
#[derive(Debug)]
pub struct Recorder {
    workout: Workout,
    clock: Arc<dyn Clock>,
}

impl Recorder {
    pub fn new(
        sport: Option<Sport>,
        profile: ResolvedProfile,
        config: WorkoutConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            workout: Workout::new(WorkoutId::random(), sport, profile, config),
            clock,
        }
    }

    pub fn workout(&self) -> &Workout {
        &self.workout
    }

    pub fn workout_mut(&mut self) -> &mut Workout {
        &mut self.workout
    }

    pub fn start(&mut self) -> Result<(), WorkoutError> {
        self.workout.start(self.clock.now())
    }

    pub fn pause(&mut self) -> Result<(), WorkoutError> {
        self.workout.pause(self.clock.now())
    }

    pub fn resume(&mut self) -> Result<(), WorkoutError> {
        self.workout.resume(self.clock.now())
    }

    pub fn lap(&mut self) -> Result<(), WorkoutError> {
        self.workout.lap(self.clock.now())
    }

    pub fn cancel(&mut self) -> Result<(), WorkoutError> {
        self.workout.cancel(self.clock.now())
    }

    /// Records a reading taken now.
    pub fn record_now(&mut self, reading: Reading) -> Result<Outcome, WorkoutError> {
        self.workout.record(Sample::new(self.clock.now(), reading))
    }

    /// Records a sample with its own time; one dated well ahead of the clock is rejected
    /// (see [`Workout::record_live`]).
    pub fn record(&mut self, sample: Sample) -> Result<Outcome, WorkoutError> {
        self.workout.record_live(sample, self.clock.now())
    }

    pub fn tick(&mut self) -> bool {
        self.workout.tick(self.clock.now())
    }

    pub fn live(&self) -> Option<LiveMetrics> {
        self.workout.live(self.clock.now())
    }

    pub fn complete(&mut self) -> Result<WorkoutSummary, WorkoutError> {
        let now = self.clock.now();
        self.workout.complete(now).cloned()
    }
}

/// The metrics summary recomputed from a finished workout's samples, for checking.
pub fn recompute(
    sport: Option<Sport>,
    profile: ResolvedProfile,
    samples: &[Sample],
    timer: &TimerLog,
    end: Timestamp,
) -> MetricsSummary {
    crate::metrics::compute(sport, profile, samples, timer, end.0).0
}
