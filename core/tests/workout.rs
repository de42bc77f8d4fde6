//! The workout aggregate: lifecycle, limits of RULES.md at their boundaries, events, auto-pause,
//! validation reporting, and live metrics agreeing with a recomputation from all samples.

use std::sync::Arc;

use fitedge_core::event::{CancelReason, CompletionReason, DomainEvent};
use fitedge_core::metrics::{self, TimerLog};
use fitedge_core::validation::{Reason, Verdict};
use fitedge_core::workout::{Command, WorkoutConfig};
use fitedge_core::{
    AutoPause, ManualClock, Profile, Reading, Recorder, Sample, Sport, Timestamp, Workout,
    WorkoutError, WorkoutId, WorkoutState,
};
use proptest::prelude::*;

const T0: i64 = 1_700_000_000_000;

fn at(s: f64) -> Timestamp {
    Timestamp(T0 + (s * 1000.0) as i64)
}

fn workout(sport: Option<Sport>) -> Workout {
    let cfg = WorkoutConfig {
        auto_pause: AutoPause::OFF,
        ..WorkoutConfig::for_sport(sport)
    };
    Workout::new(
        WorkoutId::random(),
        sport,
        Profile::default().resolve(),
        cfg,
    )
}

fn names(w: &mut Workout) -> Vec<&'static str> {
    w.take_events().iter().map(DomainEvent::name).collect()
}

#[test]
fn lifecycle_emits_the_rules_events() {
    let mut w = workout(Some(Sport::Running));
    w.start(at(0.0)).unwrap();
    w.pause(at(30.0)).unwrap();
    w.resume(at(40.0)).unwrap();
    w.lap(at(50.0)).unwrap();
    w.update(at(55.0), Some("Morning run".into()), None, None)
        .unwrap();
    let s = w.complete(at(100.0)).unwrap().clone();
    assert_eq!(
        names(&mut w),
        vec![
            "WorkoutStarted",
            "WorkoutPaused",
            "WorkoutResumed",
            "LapCompleted",
            "WorkoutUpdated",
            "WorkoutCompleted"
        ]
    );
    assert_eq!(s.metrics.elapsed_s, 100.0);
    assert_eq!(s.metrics.timer_s, 90.0);
    assert_eq!(s.laps.len(), 2);
    assert_eq!(s.laps[0].timer_s, 40.0);
    assert_eq!(s.laps[1].timer_s, 50.0);
    assert_eq!(s.title.as_deref(), Some("Morning run"));
    assert_eq!(w.state(), WorkoutState::Completed);
}

#[test]
fn illegal_transitions_are_refused_with_a_typed_error() {
    let mut w = workout(None);
    let refused = |r: Result<(), WorkoutError>, cmd| match r {
        Err(WorkoutError::InvalidTransition { command, .. }) => assert_eq!(command, cmd),
        other => panic!("expected refusal of {cmd:?}, got {other:?}"),
    };
    refused(w.pause(at(0.0)), Command::Pause);
    refused(w.resume(at(0.0)), Command::Resume);
    refused(w.cancel(at(0.0)), Command::Cancel);
    assert!(matches!(
        w.complete(at(0.0)),
        Err(WorkoutError::InvalidTransition {
            command: Command::Complete,
            ..
        })
    ));
    assert!(matches!(
        w.record(Sample::new(at(0.0), Reading::HeartRate { bpm: 100.0 })),
        Err(WorkoutError::InvalidTransition {
            command: Command::Record,
            ..
        })
    ));
    w.start(at(0.0)).unwrap();
    refused(w.start(at(1.0)), Command::Start);
    refused(w.resume(at(1.0)), Command::Resume);
    w.pause(at(2.0)).unwrap();
    refused(w.pause(at(3.0)), Command::Pause);
    assert!(matches!(
        w.resume(at(1.0)),
        Err(WorkoutError::TimeWentBackwards { .. })
    ));
    w.resume(at(3.0)).unwrap();
    w.complete(at(100.0)).unwrap();
    assert!(matches!(
        w.complete(at(101.0)),
        Err(WorkoutError::InvalidTransition {
            command: Command::Complete,
            ..
        })
    ));
    refused(w.cancel(at(101.0)), Command::Cancel);
    refused(w.lap(at(101.0)), Command::Lap);
}

#[test]
fn one_minute_of_timer_is_the_shortest_recorded_workout() {
    let mut w = workout(None);
    w.start(at(0.0)).unwrap();
    match w.complete(at(59.999)) {
        Err(WorkoutError::TooShort { timer_s }) => assert!((timer_s - 59.999).abs() < 1e-9),
        other => panic!("{other:?}"),
    }
    // Refused, not ended: the athlete can go on, or cancel.
    assert_eq!(w.state(), WorkoutState::Active);
    assert!(w.complete(at(60.0)).is_ok());

    // Paused time does not count.
    let mut w = workout(None);
    w.start(at(0.0)).unwrap();
    w.pause(at(30.0)).unwrap();
    w.resume(at(600.0)).unwrap();
    assert!(matches!(
        w.complete(at(629.0)),
        Err(WorkoutError::TooShort { .. })
    ));
    assert!(w.complete(at(630.0)).is_ok());
}

#[test]
fn recording_stops_at_24_hours() {
    let day = 24.0 * 3600.0;
    let mut w = workout(Some(Sport::Walking));
    w.start(at(0.0)).unwrap();
    let hr = |s| Sample::new(at(s), Reading::HeartRate { bpm: 100.0 });
    assert_eq!(w.record(hr(day - 0.001)), Ok(Verdict::Accepted));
    assert_eq!(w.state(), WorkoutState::Active);
    assert_eq!(w.record(hr(day)), Err(WorkoutError::TimeLimitReached));
    assert_eq!(w.state(), WorkoutState::Completed);
    let s = w.summary().unwrap();
    assert_eq!(s.completion, CompletionReason::TimeLimit);
    assert_eq!(s.metrics.elapsed_s, day);
    assert!(names(&mut w).contains(&"WorkoutCompleted"));
}

#[test]
fn a_sample_a_day_after_the_last_is_a_damaged_timestamp_not_the_end() {
    let day = 24.0 * 3600.0;
    let mut w = workout(Some(Sport::Walking));
    w.start(at(0.0)).unwrap();
    let hr = |s| Sample::new(at(s), Reading::HeartRate { bpm: 100.0 });
    assert_eq!(w.record(hr(10.0)), Ok(Verdict::Accepted));
    // Just outside: more than a day after the last sample used (a sensor clock read as 2085).
    assert_eq!(
        w.record(hr(10.0 + day + 0.001)),
        Ok(Verdict::Rejected(Reason::TimestampJump))
    );
    assert_eq!(w.state(), WorkoutState::Active, "the workout goes on");
    assert_eq!(w.record(hr(70.0)), Ok(Verdict::Accepted));
    let s = w.preview(at(120.0)).unwrap();
    assert_eq!(s.metrics.elapsed_s, 120.0);
    let hr_report = &s.validation.channels[&fitedge_core::Channel::HeartRate];
    assert_eq!(hr_report.rejected[&Reason::TimestampJump], 1);
    // Just inside: exactly a day after the last sample used is a moment of this timeline, and
    // past the limit, so the workout ends there.
    assert_eq!(
        w.record(hr(70.0 + day)),
        Err(WorkoutError::TimeLimitReached)
    );
    assert_eq!(w.summary().unwrap().completion, CompletionReason::TimeLimit);
}

/// A live recorder of `sport` (its default auto-pause) on `clock`.
fn recorder(sport: Sport, clock: &Arc<ManualClock>) -> Recorder {
    Recorder::new(
        Some(sport),
        Profile::default().resolve(),
        WorkoutConfig::for_sport(Some(sport)),
        clock.clone(),
    )
}

/// A strap stamping local time as UTC (hours ahead of the clock) must not become its channel's
/// latest sample, or every real sample after it would be refused as out of order.
#[test]
fn a_sample_dated_ahead_of_the_clock_is_rejected_and_does_not_block_its_channel() {
    use fitedge_core::workout::MAX_AHEAD_OF_CLOCK_S;
    let clock = Arc::new(ManualClock::new(at(0.0)));
    let mut r = recorder(Sport::Running, &clock);
    r.start().unwrap();
    clock.advance_secs(10.0);
    let hr = |s| Sample::new(at(s), Reading::HeartRate { bpm: 120.0 });
    // Just inside the allowance: a device a little ahead of the phone.
    assert_eq!(
        r.record(hr(10.0 + MAX_AHEAD_OF_CLOCK_S)),
        Ok(Verdict::Accepted)
    );
    // Just outside.
    assert_eq!(
        r.record(hr(10.0 + MAX_AHEAD_OF_CLOCK_S + 0.001)),
        Ok(Verdict::Rejected(Reason::AheadOfClock))
    );
    // The real case, three hours ahead; then the channel goes on.
    let mut w = workout(Some(Sport::Running));
    w.start(at(0.0)).unwrap();
    assert_eq!(
        w.record_live(hr(3.0 * 3600.0), at(10.0)),
        Ok(Verdict::Rejected(Reason::AheadOfClock))
    );
    // The channel goes on with the real samples.
    assert_eq!(w.record_live(hr(11.0), at(11.0)), Ok(Verdict::Accepted));
    assert_eq!(w.record_live(hr(12.0), at(12.0)), Ok(Verdict::Accepted));
    let s = w.preview(at(100.0)).unwrap();
    let report = &s.validation.channels[&fitedge_core::Channel::HeartRate];
    assert_eq!(report.rejected[&Reason::AheadOfClock], 1);
    assert_eq!(s.rejected, 1);
}

#[test]
fn the_clock_enforces_the_limit_without_samples() {
    let clock = Arc::new(ManualClock::new(at(0.0)));
    let mut r = recorder(Sport::Cycling, &clock);
    r.start().unwrap();
    clock.advance_secs(24.0 * 3600.0 - 1.0);
    assert!(!r.tick());
    clock.advance_secs(1.0);
    assert!(r.tick());
    assert_eq!(r.workout().state(), WorkoutState::Completed);
    assert!(matches!(
        r.pause(),
        Err(WorkoutError::InvalidTransition { .. })
    ));
}

/// RULES: under 1 minute is not recorded, however recording ends. A 10-second workout left
/// paused for a day stops at the limit as too short, not completed.
#[test]
fn a_workout_stopped_by_the_limit_under_a_minute_is_not_recorded() {
    let day = 24.0 * 3600.0;
    for (timer_s, stored) in [(59.999, false), (60.0, true)] {
        let mut w = workout(Some(Sport::Walking));
        w.start(at(0.0)).unwrap();
        w.pause(at(timer_s)).unwrap();
        names(&mut w);
        assert!(w.tick(at(day)), "timer {timer_s}");
        if stored {
            assert_eq!(w.state(), WorkoutState::Completed);
            assert_eq!(w.summary().unwrap().completion, CompletionReason::TimeLimit);
        } else {
            assert_eq!(w.state(), WorkoutState::Cancelled);
            assert!(w.summary().is_none());
            assert!(w.take_events().iter().any(|e| matches!(
                e,
                DomainEvent::WorkoutCancelled {
                    reason: CancelReason::TooShort,
                    ..
                }
            )));
        }
    }
}

/// A command that arrives after the limit (no tick in between) finds recording stopped at the
/// limit: a lap there would run backwards, a pause or resume would change a finished timer.
#[test]
fn commands_after_the_limit_find_it_stopped() {
    let day = 24.0 * 3600.0;
    type Cmd = fn(&mut Workout, Timestamp) -> Result<(), WorkoutError>;
    let cmds: [(&str, Cmd); 3] = [
        ("lap", |w, t| w.lap(t)),
        ("pause", |w, t| w.pause(t)),
        ("resume", |w, t| {
            w.pause(at(120.0))?;
            w.resume(t)
        }),
    ];
    for (name, cmd) in cmds {
        // Just inside: a moment before the limit is still recording.
        let mut w = workout(Some(Sport::Running));
        w.start(at(0.0)).unwrap();
        assert_eq!(cmd(&mut w, at(day - 0.001)), Ok(()), "{name}");
        // At the limit and past it: refused, the workout completed at the limit.
        let mut w = workout(Some(Sport::Running));
        w.start(at(0.0)).unwrap();
        assert_eq!(
            cmd(&mut w, at(day + 60.0)),
            Err(WorkoutError::TimeLimitReached),
            "{name}"
        );
        let s = w.summary().unwrap();
        assert_eq!(s.completion, CompletionReason::TimeLimit, "{name}");
        assert_eq!(s.end_time, at(day), "{name}");
        assert!(
            s.laps.iter().all(|l| l.timer_s >= 0.0),
            "{name}: {:?}",
            s.laps
        );
    }
    // Completing after the limit completes at the limit, with the limit as the reason.
    let mut w = workout(Some(Sport::Running));
    w.start(at(0.0)).unwrap();
    let s = w.complete(at(day + 120.0)).unwrap();
    assert_eq!(s.completion, CompletionReason::TimeLimit);
    assert_eq!(s.end_time, at(day));
}

/// An import longer than 24 hours: the replay stops at the limit; what was recorded up to it
/// is the workout (before, the completed workout was refused a second completion and the
/// import stored nothing).
#[test]
fn an_import_past_the_limit_keeps_the_first_24_hours() {
    let day = 24.0 * 3600.0;
    let mut w = workout(Some(Sport::Running));
    w.start(at(0.0)).unwrap();
    let mut t = 0.0;
    while t <= 25.0 * 3600.0 {
        let r = w.record(Sample::new(at(t), Reading::HeartRate { bpm: 120.0 }));
        if t < day {
            assert!(r.is_ok());
        }
        t += 60.0;
    }
    let (s, err) = w.complete_or_preview(at(25.0 * 3600.0)).unwrap();
    assert_eq!(err, None);
    assert_eq!(s.completion, CompletionReason::TimeLimit);
    assert_eq!(s.metrics.elapsed_s, day);
    assert_eq!(w.state(), WorkoutState::Completed);

    // The same under a minute of timer: not recorded, with the figures up to the limit.
    let mut w = workout(Some(Sport::Running));
    w.start(at(0.0)).unwrap();
    w.pause(at(30.0)).unwrap();
    let _ = w.record(Sample::new(
        at(day + 10.0),
        Reading::HeartRate { bpm: 120.0 },
    ));
    let (s, err) = w.complete_or_preview(at(day + 20.0)).unwrap();
    assert!(
        matches!(err, Some(WorkoutError::TooShort { .. })),
        "{err:?}"
    );
    assert_eq!(s.metrics.elapsed_s, day);
}

#[test]
fn cancel_discards_the_samples() {
    let mut w = workout(None);
    w.start(at(0.0)).unwrap();
    w.record(Sample::new(at(1.0), Reading::Power { w: 100.0 }))
        .unwrap();
    w.cancel(at(2.0)).unwrap();
    assert!(w.take_samples().is_empty());
    assert_eq!(names(&mut w), vec!["WorkoutStarted", "WorkoutCancelled"]);
}

#[test]
fn health_alerts_fire_on_entering_the_critical_range() {
    let p = Profile {
        age_years: Some(40),
        ..Profile::default()
    };
    let mut w = Workout::new(
        WorkoutId::random(),
        None,
        p.resolve(),
        WorkoutConfig::import(),
    );
    w.start(at(0.0)).unwrap();
    let hr = |s, bpm| Sample::new(at(s), Reading::HeartRate { bpm });
    assert_eq!(w.record(hr(1.0, 180.0)), Ok(Verdict::Accepted));
    assert_eq!(
        w.record(hr(2.0, 181.0)),
        Ok(Verdict::Flagged(Reason::HeartRateAboveRange))
    );
    assert_eq!(
        w.record(hr(3.0, 185.0)),
        Ok(Verdict::Flagged(Reason::HeartRateAboveRange))
    );
    assert_eq!(w.record(hr(4.0, 170.0)), Ok(Verdict::Accepted));
    assert_eq!(
        w.record(hr(5.0, 39.0)),
        Ok(Verdict::Flagged(Reason::HeartRateBelowRange))
    );
    assert_eq!(
        w.record(hr(6.0, 0.0)),
        Ok(Verdict::Rejected(Reason::Impossible))
    );
    let spo2 = Sample::new(at(7.0), Reading::Spo2 { pct: 89.0 });
    assert_eq!(w.record(spo2), Ok(Verdict::Flagged(Reason::Spo2BelowRange)));
    let alerts: Vec<_> = w
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, DomainEvent::CriticalAlertTriggered { .. }))
        .collect();
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    let s = w.preview(at(100.0)).unwrap();
    let hr_report = &s.validation.channels[&fitedge_core::Channel::HeartRate];
    assert_eq!(hr_report.received, 6);
    assert_eq!(hr_report.rejected[&Reason::Impossible], 1);
    assert_eq!(hr_report.flagged[&Reason::HeartRateAboveRange], 2);
    assert_eq!(s.rejected, 1);
    // Flagged values are kept: the maximum is 185.
    assert_eq!(s.metrics.max_hr_bpm, Some(185.0));
}

/// Heart rate arrives in a chunk up to 110 s, then speed from 100 s says the athlete stopped:
/// the auto-pause must not be placed behind heart-rate seconds already counted as running, or
/// the live figures differ from a recomputation over the final timer.
#[test]
fn auto_pause_is_not_placed_behind_samples_already_counted() {
    let cfg = WorkoutConfig::for_sport(Some(Sport::Running));
    let ap = cfg.auto_pause;
    let mut w = Workout::new(
        WorkoutId::random(),
        Some(Sport::Running),
        Profile::default().resolve(),
        cfg,
    );
    w.start(at(0.0)).unwrap();
    let mut all = vec![];
    let mut feed = |w: &mut Workout, s: Sample| {
        all.push(s);
        let _ = w.record(s);
    };
    for s in 0..100 {
        feed(
            &mut w,
            Sample::new(at(f64::from(s)), Reading::Speed { mps: 3.0 }),
        );
        feed(
            &mut w,
            Sample::new(at(f64::from(s)), Reading::HeartRate { bpm: 150.0 }),
        );
    }
    for s in 100..=110 {
        feed(
            &mut w,
            Sample::new(
                at(f64::from(s)),
                Reading::HeartRate {
                    bpm: 100.0 + f64::from(s),
                },
            ),
        );
    }
    for s in 100..=110 {
        feed(
            &mut w,
            Sample::new(at(f64::from(s)), Reading::Speed { mps: 0.0 }),
        );
    }
    assert_eq!(w.state(), WorkoutState::Paused { auto: true });
    assert!(ap.after_s < 10.0);
    let end = at(130.0);
    let live = w.complete(end).unwrap().clone();
    let (batch, report) = metrics::compute(
        Some(Sport::Running),
        Profile::default().resolve(),
        &all,
        w.timer().unwrap(),
        end.0,
    );
    assert_eq!(live.validation, report);
    assert_eq!(
        serde_json::to_value(&live.metrics).unwrap(),
        serde_json::to_value(&batch).unwrap()
    );
}

#[test]
fn auto_pause_stops_and_restarts_the_timer() {
    let cfg = WorkoutConfig::for_sport(Some(Sport::Running));
    let ap = cfg.auto_pause;
    assert!(ap.enabled);
    let mut w = Workout::new(
        WorkoutId::random(),
        Some(Sport::Running),
        Profile::default().resolve(),
        cfg,
    );
    w.start(at(0.0)).unwrap();
    let v = |s, mps| Sample::new(at(s), Reading::Speed { mps });
    for s in 0..60 {
        w.record(v(f64::from(s), 3.0)).unwrap();
    }
    // Slow for just under the delay: still running.
    w.record(v(60.0, ap.below_mps - 0.01)).unwrap();
    w.record(v(60.0 + ap.after_s - 0.1, 0.0)).unwrap();
    assert_eq!(w.state(), WorkoutState::Active);
    w.record(v(60.0 + ap.after_s, 0.0)).unwrap();
    assert_eq!(w.state(), WorkoutState::Paused { auto: true });
    for s in 64..120 {
        w.record(v(f64::from(s), 0.0)).unwrap();
    }
    assert_eq!(w.state(), WorkoutState::Paused { auto: true });
    w.record(v(120.0, ap.below_mps)).unwrap();
    assert_eq!(w.state(), WorkoutState::Active);
    for s in 121..200 {
        w.record(v(f64::from(s), 3.0)).unwrap();
    }
    let s = w.complete(at(200.0)).unwrap().clone();
    let paused = 120.0 - (60.0 + ap.after_s);
    assert!(
        (s.metrics.timer_s - (200.0 - paused)).abs() < 1e-6,
        "{}",
        s.metrics.timer_s
    );
    let ev = names(&mut w);
    assert!(ev.contains(&"WorkoutPaused") && ev.contains(&"WorkoutResumed"));
    // A manual pause is not undone by movement.
    let mut w = Workout::new(
        WorkoutId::random(),
        Some(Sport::Running),
        Profile::default().resolve(),
        cfg,
    );
    w.start(at(0.0)).unwrap();
    w.pause(at(1.0)).unwrap();
    w.record(v(2.0, 5.0)).unwrap();
    assert_eq!(w.state(), WorkoutState::Paused { auto: false });
}

/// Two fixes a second stamped at second resolution (2 Hz logging): the second fix of each
/// pair used to count no distance, halving the track.
#[test]
fn fixes_sharing_a_second_count_their_distance() {
    let mut w = workout(Some(Sport::Running));
    w.start(at(0.0)).unwrap();
    // North at 3 m/s: 1.5 m per half second, both halves stamped with the whole second.
    let deg_per_m = 1.0 / 111_200.0;
    for i in 0..240 {
        let t = at(f64::from(i / 2));
        let lat = 45.0 + f64::from(i) * 1.5 * deg_per_m;
        w.record(Sample::new(
            t,
            Reading::Position {
                lat,
                lon: 7.0,
                accuracy_m: None,
            },
        ))
        .unwrap();
    }
    let s = w.complete(at(120.0)).unwrap();
    let d = s.metrics.distance_m.unwrap();
    assert!((d - 239.0 * 1.5).abs() < 5.0, "distance {d}");
}

#[test]
fn gps_outliers_are_counted_and_kept_out_of_distance() {
    let mut w = workout(Some(Sport::Running));
    w.start(at(0.0)).unwrap();
    let fix = |s: f64, lat: f64, lon: f64| {
        Sample::new(
            at(s),
            Reading::Position {
                lat,
                lon,
                accuracy_m: Some(5.0),
            },
        )
    };
    let step = 3.0e-5; // ~3.3 m of longitude at 1 degree north
    for i in 0..100 {
        let lon = f64::from(i) * step;
        let s = if i == 50 {
            fix(50.0, 1.05, lon)
        } else {
            fix(f64::from(i), 1.0, lon)
        };
        w.record(s).unwrap();
    }
    w.record(fix(100.0, 0.0, 0.0)).unwrap();
    w.record(fix(101.0, 91.0, 0.0)).unwrap();
    w.record(fix(102.0, 1.0, 100.0 * step)).unwrap();
    w.record(Sample::new(
        at(103.0),
        Reading::Position {
            lat: 1.0,
            lon: 101.0 * step,
            accuracy_m: Some(80.0),
        },
    ))
    .unwrap();
    let s = w.complete(at(104.0)).unwrap();
    let d = s.metrics.distance_m.unwrap();
    assert!((d - 100.0 * 3.34).abs() < 3.0, "{d}");
    let pos = &s.validation.channels[&fitedge_core::Channel::Position];
    assert_eq!(pos.excluded[&Reason::ImpossibleSpeed], 1);
    assert_eq!(pos.excluded[&Reason::PoorAccuracy], 1);
    assert_eq!(pos.rejected[&Reason::NullIsland], 1);
    assert_eq!(pos.rejected[&Reason::OutOfRange], 1);
}

// --- live metrics equal a recomputation from all samples -------------------------------------

fn channel_streams() -> impl Strategy<Value = Vec<Sample>> {
    // Up to 20 minutes of hr, power, speed, altitude and GPS, with gaps and odd values.
    let n = 30usize..400;
    (n, any::<u64>()).prop_map(|(n, seed)| {
        let mut x = seed | 1;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 10_000) as f64 / 10_000.0
        };
        let mut out = vec![];
        let (mut lat, mut lon, mut alt) = (45.0, 7.0, 500.0);
        let mut t = 0.0;
        for _ in 0..n {
            t += 0.5 + rnd() * 3.0;
            out.push(Sample::new(
                at(t),
                Reading::HeartRate {
                    bpm: 60.0 + rnd() * 150.0,
                },
            ));
            out.push(Sample::new(
                at(t + 0.1),
                Reading::Power { w: rnd() * 500.0 },
            ));
            out.push(Sample::new(
                at(t + 0.2),
                Reading::Speed { mps: rnd() * 12.0 },
            ));
            alt += (rnd() - 0.5) * 4.0;
            out.push(Sample::new(
                at(t + 0.3),
                Reading::Altitude {
                    m: alt,
                    source: fitedge_core::AltitudeSource::Barometric,
                },
            ));
            lat += (rnd() - 0.5) * 1e-4;
            lon += rnd() * 1e-4;
            out.push(Sample::new(
                at(t + 0.4),
                Reading::Position {
                    lat,
                    lon,
                    accuracy_m: None,
                },
            ));
            if rnd() < 0.05 {
                out.push(Sample::new(at(t + 0.5), Reading::HeartRate { bpm: 400.0 }));
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn live_metrics_at_completion_equal_a_recomputation(
        samples in channel_streams(),
        chunk in 1usize..50,
        pause_at in 0.1f64..0.9,
    ) {
        let end_s = samples.iter().map(|s| s.t.0).max().unwrap_or(T0) as f64 / 1000.0 - T0 as f64 / 1000.0 + 5.0;
        let pause = at(end_s * pause_at);
        let resume = at(end_s * pause_at + 20.0);
        let mut w = workout(Some(Sport::Cycling));
        w.start(at(0.0)).unwrap();
        // Channels arrive interleaved in arbitrary chunks; within a channel, in order.
        let mut by_channel: Vec<Vec<Sample>> = fitedge_core::Channel::ALL
            .iter()
            .map(|c| samples.iter().filter(|s| s.channel() == *c).copied().collect())
            .collect();
        let mut paused = false;
        let mut resumed = false;
        let mut round = 0usize;
        while by_channel.iter().any(|c| !c.is_empty()) {
            let ch = round % by_channel.len();
            round += 1;
            let take = chunk.min(by_channel[ch].len());
            for s in by_channel[ch].drain(..take) {
                if !paused && s.t >= pause { w.pause(pause).unwrap(); paused = true; }
                if paused && !resumed && s.t >= resume { w.resume(resume).unwrap(); resumed = true; }
                let _ = w.record(s);
            }
            let _ = w.live(at(end_s));
        }
        if !paused { w.pause(pause.max(at(end_s - 2.0))).unwrap(); }
        if paused && !resumed { w.resume(resume.max(pause)).ok(); }
        let end = at(end_s + 30.0);
        let live = match w.complete(end) {
            Ok(s) => s.clone(),
            Err(WorkoutError::TooShort { .. }) => return Ok(()),
            Err(e) => panic!("{e}"),
        };
        let timer: &TimerLog = w.timer().unwrap();
        let (batch, report) = metrics::compute(Some(Sport::Cycling), Profile::default().resolve(), &samples, timer, end.0);
        prop_assert_eq!(&live.validation, &report);
        let (a, b) = (serde_json::to_value(&live.metrics).unwrap(), serde_json::to_value(&batch).unwrap());
        prop_assert_eq!(a, b);
    }
}

/// A run on GPS from the start, a foot pod (0 m at connection) from `pod_from` s, a
/// barometer from `baro_from` s on a steady climb, and laps at 100 s and 200 s.
fn run_with_late_sources(pod_from: f64, baro_from: f64) -> fitedge_core::WorkoutSummary {
    let mut w = workout(Some(Sport::Running));
    w.start(at(0.0)).expect("start");
    for s in 0..=300 {
        let t = f64::from(s);
        let fix = Reading::Position {
            lat: 45.0 + t * 3.0 / 111_132.0,
            lon: 7.0,
            accuracy_m: Some(5.0),
        };
        w.record(Sample::new(at(t), fix)).expect("recorded");
        w.record(Sample::new(
            at(t),
            Reading::Altitude {
                m: 200.0 + t * 0.2,
                source: fitedge_core::AltitudeSource::Gps,
            },
        ))
        .expect("recorded");
        if t >= baro_from {
            w.record(Sample::new(
                at(t),
                Reading::Altitude {
                    m: 210.0 + t * 0.2,
                    source: fitedge_core::AltitudeSource::Barometric,
                },
            ))
            .expect("recorded");
        }
        if t >= pod_from {
            let m = 3.0 * (t - pod_from);
            w.record(Sample::new(at(t), Reading::Distance { m }))
                .expect("recorded");
        }
        if s == 100 || s == 200 {
            w.lap(at(t)).expect("recorded");
        }
    }
    w.complete(at(300.0)).expect("complete").clone()
}

/// The source measuring from the start keeps the distance and the ascent: a foot pod or a
/// barometer that begins more than a minute in does not replace it (the figures would fall back
/// to what the late source saw, and a lap across the switch would come out negative).
#[test]
fn a_source_that_begins_late_does_not_take_over() {
    use fitedge_core::metrics::{DistanceSource, SOURCE_GRACE_MS};
    let grace = SOURCE_GRACE_MS as f64 / 1000.0;
    // The barometer just outside the grace (GPS altitude begins at 0 s); the pod well outside
    // (GPS distance begins a few fixes in, behind its filter; the boundary itself is tested in
    // the metrics module).
    let s = run_with_late_sources(grace + 30.0, grace + 1.0);
    assert_eq!(s.metrics.distance_source, Some(DistanceSource::Gps));
    let d = s.metrics.distance_m.unwrap();
    assert!((d - 900.0).abs() < 9.0, "distance {d}");
    assert_eq!(
        s.metrics.altitude_source,
        Some(fitedge_core::AltitudeSource::Gps)
    );
    for lap in &s.laps {
        assert!(
            (lap.distance_m - 300.0).abs() < 5.0,
            "lap {} distance {}",
            lap.index,
            lap.distance_m
        );
        assert!(
            lap.ascent_m >= 0.0,
            "lap {} ascent {}",
            lap.index,
            lap.ascent_m
        );
    }
    // Just inside: the better source wins as if both had begun together.
    let s = run_with_late_sources(1.0, grace);
    assert_eq!(s.metrics.distance_source, Some(DistanceSource::Sensor));
    assert_eq!(
        s.metrics.altitude_source,
        Some(fitedge_core::AltitudeSource::Barometric)
    );
    let d = s.metrics.distance_m.unwrap();
    assert!((d - 3.0 * 299.0).abs() < 1.0, "distance {d}");
}

/// A sport corrected during the workout is the sport its figures are computed for: before the
/// fix a run relabelled as a ride kept the running calories and best efforts.
#[test]
fn a_sport_changed_while_recording_sets_the_calorie_model_and_best_efforts() {
    let ride = |start_as: Sport| {
        let mut w = workout(Some(start_as));
        w.start(at(0.0)).unwrap();
        for s in 0..=600 {
            let t = f64::from(s);
            if s == 30 && start_as != Sport::Cycling {
                w.update(at(t), None, None, Some(Sport::Cycling)).unwrap();
            }
            w.record(Sample::new(at(t), Reading::Speed { mps: 6.0 }))
                .unwrap();
            w.record(Sample::new(at(t), Reading::HeartRate { bpm: 140.0 }))
                .unwrap();
        }
        w.complete(at(600.0)).unwrap().clone()
    };
    let (relabelled, ride) = (ride(Sport::Running), ride(Sport::Cycling));
    assert_eq!(relabelled.metrics.sport, Sport::Cycling);
    assert_eq!(
        relabelled.metrics.calories_method,
        ride.metrics.calories_method
    );
    assert_eq!(relabelled.metrics.calories_kcal, ride.metrics.calories_kcal);
    assert!(
        relabelled.metrics.best_efforts.is_empty(),
        "no running efforts on a ride"
    );
}

/// Within the first minute the better source still takes over (a pod connecting 50 s in); a lap
/// closed before that must not come out negative after it.
#[test]
fn a_source_taking_over_within_the_grace_leaves_no_negative_lap() {
    let mut w = workout(Some(Sport::Running));
    w.start(at(0.0)).unwrap();
    for s in 0..=80 {
        let t = f64::from(s);
        let fix = Reading::Position {
            lat: 45.0 + t * 3.0 / 111_132.0,
            lon: 7.0,
            accuracy_m: Some(5.0),
        };
        w.record(Sample::new(at(t), fix)).unwrap();
        if s >= 50 {
            let m = 3.0 * (t - 50.0);
            w.record(Sample::new(at(t), Reading::Distance { m }))
                .unwrap();
        }
        if s == 40 || s == 70 {
            w.lap(at(t)).unwrap();
        }
    }
    let s = w.complete(at(80.0)).unwrap().clone();
    assert_eq!(
        s.metrics.distance_source,
        Some(metrics::DistanceSource::Sensor)
    );
    let laps: Vec<f64> = s.laps.iter().map(|l| l.distance_m).collect();
    assert!(laps.iter().all(|d| *d >= 0.0), "laps {laps:?}");
    // Lap 2 (40-70 s) is the pod's 60 m; lap 3 (70-80 s) its 30 m.
    assert!((laps[1] - 60.0).abs() < 1e-9, "laps {laps:?}");
    assert!((laps[2] - 30.0).abs() < 1e-9, "laps {laps:?}");
}

/// Other devices and the server recompute a workout with a timer that runs from start to end;
/// the distance source must not depend on the pauses.
#[test]
fn the_distance_source_does_not_depend_on_pauses() {
    let mut w = workout(Some(Sport::Cycling));
    w.start(at(0.0)).unwrap();
    for s in 0..=200 {
        let t = f64::from(s);
        if s == 5 {
            w.pause(at(t)).unwrap();
        }
        if s == 100 {
            w.resume(at(t)).unwrap();
        }
        let fix = Reading::Position {
            lat: 45.0 + t * 8.0 / 111_132.0,
            lon: 7.0,
            accuracy_m: Some(5.0),
        };
        w.record(Sample::new(at(t), fix)).unwrap();
        if s >= 30 {
            w.record(Sample::new(at(t), Reading::Speed { mps: 8.0 }))
                .unwrap();
        }
    }
    let live = w.complete(at(200.0)).unwrap().clone();
    let samples = w.take_samples();
    let (plain, _) = metrics::compute(
        Some(Sport::Cycling),
        Profile::default().resolve(),
        &samples,
        &TimerLog::new(at(0.0).0),
        at(200.0).0,
    );
    assert_eq!(live.metrics.distance_source, plain.distance_source);
}
