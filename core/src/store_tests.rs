//! Tests of the local store that need its crate-private parts (old schema versions).

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;

use crate::crypto::StorageKey;
use crate::db::Store;
use crate::error::Error;
use crate::gear::{AthleteProfile, GearKind};
use crate::recording::Recording;
use crate::sample::{Channel, Reading, Sample};
use crate::store::{v1, ListFilter, Period, WorkoutStats};
use crate::time::{Clock, ManualClock, Timestamp};
use crate::validation::{Reason, Verdict};
use crate::workout::{Workout, WorkoutConfig, WorkoutId};
use crate::{Profile, Sport};

const T0: i64 = 1_763_700_000_000; // 2025-11-21

fn key() -> StorageKey {
    StorageKey::new(&[42u8; 32]).unwrap()
}

/// A finished workout of `minutes` with heart rate, power and positions every second.
fn workout_at(start_ms: i64, minutes: i64, sport: Sport) -> (crate::WorkoutSummary, Vec<Sample>) {
    let mut w = Workout::new(
        WorkoutId::random(),
        Some(sport),
        Profile::default().resolve(),
        WorkoutConfig::import(),
    );
    w.start(Timestamp(start_ms)).unwrap();
    for i in 0..minutes * 60 {
        let t = Timestamp(start_ms + i * 1000);
        w.record(Sample::new(
            t,
            Reading::HeartRate {
                bpm: 120.0 + (i % 30) as f64,
            },
        ))
        .unwrap();
        w.record(Sample::new(
            t,
            Reading::Power {
                w: 150.0 + (i % 17) as f64,
            },
        ))
        .unwrap();
        w.record(Sample::new(
            t,
            Reading::Position {
                lat: 45.0 + i as f64 * 2e-5,
                lon: 7.0,
                accuracy_m: None,
            },
        ))
        .unwrap();
    }
    let s = w
        .complete(Timestamp(start_ms + minutes * 60_000))
        .unwrap()
        .clone();
    (s, w.take_samples())
}

fn schema(path: &Path) -> Vec<String> {
    let c = Connection::open(path).unwrap();
    let mut out = vec![];
    let tables: Vec<(String, String)> = c
        .prepare("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (kind, name) in tables {
        out.push(format!("{kind} {name}"));
        if kind == "table" {
            let cols: Vec<String> = c
                .prepare(&format!("PRAGMA table_xinfo({name})"))
                .unwrap()
                .query_map([], |r| {
                    Ok(format!(
                        "  {} {} notnull={} default={:?} pk={}",
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, i64>(5)?
                    ))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            out.extend(cols);
            let fks: Vec<String> = c
                .prepare(&format!("PRAGMA foreign_key_list({name})"))
                .unwrap()
                .query_map([], |r| {
                    Ok(format!(
                        "  fk {} -> {}",
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(2)?
                    ))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            out.extend(fks);
        }
    }
    out
}

#[test]
fn a_migrated_v1_database_equals_a_fresh_one_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    let (summary, samples) = workout_at(T0, 5, Sport::Cycling);
    {
        let s = Store::open_at_version(&old, None, 1).unwrap();
        assert_eq!(s.schema_version().unwrap(), 1);
        s.write(|tx| {
            tx.execute(
                "INSERT INTO workouts (id, sport, start_time, end_time, timer_s, distance_m, summary_json, created_at)
                 VALUES (?1, 'cycling', ?2, ?3, ?4, ?5, ?6, 0)",
                rusqlite::params![
                    summary.id.0,
                    summary.start_time.0,
                    summary.end_time.0,
                    summary.metrics.timer_s,
                    summary.metrics.distance_m,
                    serde_json::to_string(&summary).unwrap()
                ],
            )?;
            for ch in Channel::ALL {
                let data = v1::encode_channel(ch, &samples);
                if !data.is_empty() {
                    tx.execute(
                        "INSERT INTO samples (workout_id, channel, count, data) VALUES (?1, ?2, 0, ?3)",
                        rusqlite::params![summary.id.0, ch.as_str(), data],
                    )?;
                }
            }
            Ok(())
        })
        .unwrap();
    }
    // Without the key the upgrade cannot seal the heart rate: refused, nothing changed.
    assert!(matches!(Store::open(&old, None), Err(Error::KeyRequired)));
    assert_eq!(
        Store::open_at_version(&old, None, 1)
            .unwrap()
            .schema_version()
            .unwrap(),
        1
    );

    let upgraded = Store::open(&old, Some(key())).unwrap();
    let fresh_path = dir.path().join("fresh.db");
    drop(Store::open(&fresh_path, Some(key())).unwrap());
    assert_eq!(schema(&old), schema(&fresh_path));
    let back = upgraded.samples(&summary.id.0).unwrap();
    assert_eq!(back.len(), samples.len());
    assert_eq!(
        back.iter()
            .filter(|s| s.channel() == Channel::HeartRate)
            .count(),
        300
    );
    let page = upgraded.list(&ListFilter::default(), 10, None).unwrap();
    assert_eq!(page.items[0].calories_kcal, summary.metrics.calories_kcal);
    assert_eq!(upgraded.integrity_check().unwrap(), "ok");
}

#[test]
fn the_raw_file_holds_no_plaintext_heart_rate_and_the_wrong_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enc.db");
    let (summary, samples) = workout_at(T0, 30, Sport::Cycling);
    {
        let store = Store::open(&path, Some(key())).unwrap();
        store
            .save_workout(&summary, &samples, Timestamp(T0))
            .unwrap();
        store.checkpoint().unwrap();
    }
    let raw = std::fs::read(&path).unwrap();
    let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    let plain = |ch: Channel| {
        let mine: Vec<Sample> = samples
            .iter()
            .filter(|s| s.channel() == ch)
            .copied()
            .collect();
        crate::codec::encode(ch, &mine[..crate::store::CHUNK_SAMPLES.min(mine.len())])
    };
    // The detector works: the power chunk (not health data) is in the file as written...
    let power = plain(Channel::Power);
    assert!(
        contains(&power[..16]),
        "power chunk not found: the check would prove nothing"
    );
    // ...and no 12-byte window of the heart-rate chunk's plaintext is.
    let hr = plain(Channel::HeartRate);
    for w in hr.windows(12).step_by(4) {
        assert!(
            !contains(w),
            "plaintext heart-rate bytes found in the database file"
        );
    }
    // Nor the series as text.
    assert!(!contains(b"120,121,122"));

    let wrong = StorageKey::new(&[7u8; 32]).unwrap();
    assert!(matches!(
        Store::open(&path, Some(wrong)),
        Err(Error::WrongKey)
    ));
    let keyless = Store::open(&path, None).unwrap();
    assert!(keyless.summary(&summary.id.0).is_ok());
    assert!(matches!(
        keyless.samples(&summary.id.0),
        Err(Error::KeyRequired)
    ));
    assert_eq!(
        keyless
            .samples_of(&summary.id.0, &[Channel::Power])
            .unwrap()
            .len(),
        1800
    );
}

#[test]
fn a_long_read_can_be_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("i.db"), Some(key())).unwrap());
    let s2 = store.clone();
    let reader = std::thread::spawn(move || {
        s2.read(|c| {
            Ok(c.query_row(
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000000)
                 SELECT COUNT(*) FROM n",
                [],
                |r| r.get::<_, i64>(0),
            )?)
        })
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    store.interrupt_reads();
    assert!(matches!(reader.join().unwrap(), Err(Error::Interrupted)));
    // The store goes on working.
    assert_eq!(store.workout_count().unwrap(), 0);
}

#[test]
fn list_pages_filters_and_stats_need_five_workouts() {
    let store = Store::open_in_memory(Some(key())).unwrap();
    let day = 86_400_000;
    for i in 0..4 {
        let sport = if i % 2 == 0 {
            Sport::Cycling
        } else {
            Sport::Running
        };
        let (s, samples) = workout_at(T0 + i * day, 2, sport);
        store.save_workout(&s, &samples, Timestamp(T0)).unwrap();
    }
    assert_eq!(
        store.stats(Period::Week, None, 0).unwrap(),
        WorkoutStats::NotEnoughData {
            workouts: 4,
            needed: 5
        }
    );
    let (s, samples) = workout_at(T0 + 4 * day, 2, Sport::Cycling);
    store.save_workout(&s, &samples, Timestamp(T0)).unwrap();
    match store.stats(Period::Month, None, 0).unwrap() {
        WorkoutStats::Ok { workouts, periods } => {
            assert_eq!(workouts, 5);
            assert_eq!(periods.iter().map(|p| p.workouts).sum::<u64>(), 5);
            assert!((periods[0].avg_timer_s - 120.0).abs() < 1e-9);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.stats(Period::Year, Some(Sport::Running), 0).unwrap(),
        WorkoutStats::NotEnoughData { workouts: 2, .. }
    ));

    let p1 = store.list(&ListFilter::default(), 2, None).unwrap();
    assert_eq!(p1.items.len(), 2);
    assert!(p1.items[0].start_time > p1.items[1].start_time);
    let p2 = store
        .list(&ListFilter::default(), 2, p1.next.as_ref())
        .unwrap();
    let p3 = store
        .list(&ListFilter::default(), 2, p2.next.as_ref())
        .unwrap();
    assert_eq!(p3.items.len(), 1);
    assert!(p3.next.is_none());
    let cycling = ListFilter {
        sport: Some(Sport::Cycling),
        ..ListFilter::default()
    };
    assert_eq!(store.list(&cycling, 10, None).unwrap().items.len(), 3);
    let window = ListFilter {
        from: Some(Timestamp(T0 + day)),
        to: Some(Timestamp(T0 + 3 * day)),
        ..ListFilter::default()
    };
    assert_eq!(store.list(&window, 10, None).unwrap().items.len(), 2);

    let streaks = store
        .streaks(Timestamp(T0 + 4 * day + 3_600_000), 0)
        .unwrap();
    assert_eq!((streaks.current_days, streaks.longest_days), (5, 5));
    let later = store
        .streaks(Timestamp(T0 + 6 * day + 3_600_000), 0)
        .unwrap();
    assert_eq!((later.current_days, later.longest_days), (0, 5));

    let route = store.route(&s.id.0, 5.0).unwrap();
    assert_eq!(route.segments, 1);
    assert!(route.points_out < route.points_in);
    assert!(!route.polyline.is_empty());
    // The id prefix works, and an unknown id is "not found".
    assert_eq!(store.summary(&s.id.0[..8]).unwrap().id, s.id);
    assert!(matches!(store.summary("ffffffff"), Err(Error::NotFound(_))));
}

#[test]
fn personal_records_keep_their_history() {
    let store = Store::open_in_memory(Some(key())).unwrap();
    let (a, sa) = workout_at(T0, 10, Sport::Cycling);
    let ev = store.save_workout(&a, &sa, Timestamp(T0)).unwrap();
    assert!(ev.iter().any(|e| e.name() == "PersonalRecordAchieved"));
    let (b, sb) = workout_at(T0 + 86_400_000, 10, Sport::Cycling);
    // Same power profile: nothing beaten, no event.
    let ev = store.save_workout(&b, &sb, Timestamp(T0)).unwrap();
    assert!(!ev.iter().any(|e| e.name() == "PersonalRecordAchieved"));
    let recs = store.personal_records().unwrap();
    assert!(recs.iter().any(|r| r.record == "power_5s"));
    assert_eq!(
        store
            .record_history(Sport::Cycling, "power_5s")
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn gear_wear_recommends_replacement_at_seventy_percent() {
    let store = Store::open_in_memory(Some(key())).unwrap();
    let shoes = store
        .add_gear(GearKind::Shoes, "Trail shoes", None, Timestamp(T0))
        .unwrap();
    assert_eq!(shoes.service_life_km, Some(800.0));
    assert!(store
        .add_gear(GearKind::Shoes, "x", Some(799.0), Timestamp(T0))
        .is_err());
    assert!(store
        .add_gear(GearKind::Shoes, "x", Some(1000.0), Timestamp(T0))
        .is_ok());
    assert!(store
        .add_gear(GearKind::Shoes, "x", Some(1000.1), Timestamp(T0))
        .is_err());
    // Workouts of a known distance: set the row's distance directly (the wear rule is the
    // subject here, not the metrics).
    let mut ids = vec![];
    for i in 0..2 {
        let (s, samples) = workout_at(T0 + i * 86_400_000, 2, Sport::Running);
        store.save_workout(&s, &samples, Timestamp(T0)).unwrap();
        ids.push(s.id.0);
    }
    let set = |id: &str, m: f64| {
        store
            .write(|tx| {
                Ok(tx.execute(
                    "UPDATE workouts SET distance_m = ?2 WHERE id = ?1",
                    rusqlite::params![id, m],
                )?)
            })
            .unwrap();
    };
    set(&ids[0], 559_999.0);
    set(&ids[1], 0.0);
    let ev = store
        .assign_gear(&ids[0], Some(&shoes.id), Timestamp(T0))
        .unwrap();
    match &ev[..] {
        [crate::DomainEvent::WearLevelCalculated {
            replace_recommended,
            wear_pct,
            ..
        }] => {
            assert!(!replace_recommended);
            assert!(wear_pct.unwrap() < 70.0);
        }
        other => panic!("{other:?}"),
    }
    set(&ids[1], 1.0);
    let ev = store
        .assign_gear(&ids[1], Some(&shoes.id), Timestamp(T0))
        .unwrap();
    assert!(matches!(
        &ev[..],
        [crate::DomainEvent::WearLevelCalculated {
            replace_recommended: true,
            ..
        }]
    ));
    let g = store.gear(&shoes.id).unwrap();
    assert_eq!(g.workouts, 2);
    assert_eq!(g.distance_m, 560_000.0);
    store.retire_gear(&shoes.id).unwrap();
    assert!(store
        .list_gear(false)
        .unwrap()
        .iter()
        .all(|g| g.id != shoes.id));
}

#[test]
fn profile_edits_use_optimistic_locking() {
    let store = Store::open_in_memory(None).unwrap();
    let (p, v) = store.profile().unwrap();
    assert_eq!(v, 0);
    let mine = AthleteProfile {
        weight_kg: Some(70.0),
        birth_year: Some(1990),
        ..p.clone()
    };
    let v1 = store.update_profile(0, &mine).unwrap();
    assert_eq!(v1, 1);
    // A second device, still on version 0, loses the race with a clear conflict.
    let theirs = AthleteProfile {
        weight_kg: Some(71.0),
        ..p
    };
    assert!(matches!(
        store.update_profile(0, &theirs),
        Err(Error::Conflict(_))
    ));
    assert_eq!(store.profile().unwrap().0.weight_kg, Some(70.0));
    assert!(matches!(
        store.update_profile(
            1,
            &AthleteProfile {
                weight_kg: Some(19.9),
                ..AthleteProfile::default()
            }
        ),
        Err(Error::Invalid(_))
    ));
    let age = store
        .profile()
        .unwrap()
        .0
        .to_profile(Timestamp(T0))
        .age_years;
    assert_eq!(age, Some(35));
}

/// A recording of `sport` started at [`T0`] on a manual clock, in a fresh encrypted database file
/// (keep the directory; the path is for reopening the store as an app restart would).
fn start_recording(
    sport: Sport,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<ManualClock>,
    Arc<Store>,
    Recording,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.db");
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let store = Arc::new(Store::open(&path, Some(key())).unwrap());
    let rec = Recording::start(
        store.clone(),
        clock.clone(),
        Some(sport),
        Profile::default().resolve(),
        WorkoutConfig::import(),
    )
    .unwrap();
    (dir, path, clock, store, rec)
}

#[test]
fn an_interrupted_recording_is_found_and_resumed_losing_at_most_a_second() {
    let (_dir, path, clock, store, mut rec) = start_recording(Sport::Cycling);
    // 10 minutes at 4 Hz power and 1 Hz heart rate, a pause in the middle.
    for q in 0..2400 {
        let t = clock.now();
        rec.record(Sample::new(t, Reading::Power { w: 200.0 }))
            .unwrap();
        if q % 4 == 0 {
            rec.record(Sample::new(t, Reading::HeartRate { bpm: 140.0 }))
                .unwrap();
        }
        if q == 1200 {
            rec.pause().unwrap();
        }
        if q == 1240 {
            rec.resume().unwrap();
        }
        clock.advance_secs(0.25);
    }
    let last_t = clock.now().0 - 250;
    // The app dies: whatever was buffered is gone.
    drop(rec);
    drop(store);
    let store = Arc::new(Store::open(&path, Some(key())).unwrap());
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let mut found = Recording::recover(store.clone(), clock.clone()).unwrap();
    assert_eq!(found.len(), 1);
    let mut rec = found.pop().unwrap();
    assert_eq!(rec.state(), crate::WorkoutState::Active);
    let stored = store
        .read(|c| crate::store::get_samples(c, store.key(), &rec.id().0, &[]))
        .unwrap();
    let newest = stored.iter().map(|s| s.t.0).max().unwrap();
    assert!(last_t - newest <= 1000, "lost {} ms", last_t - newest);
    // The recovered recording goes on and completes.
    for _ in 0..40 {
        rec.record(Sample::new(clock.now(), Reading::Power { w: 200.0 }))
            .unwrap();
        clock.advance_secs(0.25);
    }
    let summary = rec.complete().unwrap();
    assert!(
        (summary.metrics.timer_s - (610.0 - 10.0)).abs() < 1.5,
        "{}",
        summary.metrics.timer_s
    );
    assert!(Recording::recover(store.clone(), clock.clone())
        .unwrap()
        .is_empty());
    let chunks: i64 = store
        .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM sample_chunks", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(chunks, 2, "one chunk per channel after compaction");
    assert_eq!(
        store.samples(&summary.id.0).unwrap().len(),
        stored.len() + 40
    );
}

/// Rejected samples are never stored, so their counts are saved with the recording: a crash
/// must not turn a channel with impossible readings into a clean one (the personal-record check
/// trusts clean channels only).
#[test]
fn a_recovered_recording_keeps_its_rejected_counts() {
    let (_dir, path, clock, store, mut rec) = start_recording(Sport::Running);
    let hr = |t: Timestamp, bpm: f64| Sample::new(t, Reading::HeartRate { bpm });
    for s in 0..30 {
        // Impossible every 10 s; above 220 - age once (an alert before the crash).
        let bpm = match s % 10 {
            5 => 400.0,
            7 if s < 10 => 210.0,
            _ => 140.0,
        };
        rec.record(hr(clock.now(), bpm)).unwrap();
        clock.advance_secs(1.0);
    }
    // After the last flush of samples, only rejected ones come: saved on the next look at the
    // clock all the same.
    rec.record(hr(clock.now(), 500.0)).unwrap();
    clock.advance_secs(1.5);
    rec.maybe_flush().unwrap();
    let before = rec.workout().report().clone();
    assert_eq!(before.total_rejected(), 4);
    drop(rec);
    drop(store);

    let store = Arc::new(Store::open(&path, Some(key())).unwrap());
    let mut rec = Recording::recover(store.clone(), clock.clone())
        .unwrap()
        .pop()
        .unwrap();
    // The replay raised nothing new: the app heard the start before the crash.
    assert!(rec.take_events().is_empty());
    let hr_report = &rec.workout().report().channels[&Channel::HeartRate];
    assert_eq!(hr_report.rejected[&Reason::Impossible], 4);
    assert_eq!(hr_report.received, 31);
    assert!(!rec.workout().report().channel_clean(Channel::HeartRate));
    for _ in 0..40 {
        rec.record(hr(clock.now(), 140.0)).unwrap();
        clock.advance_secs(1.0);
    }
    let summary = rec.complete().unwrap();
    assert_eq!(summary.rejected, 4);
    assert_eq!(summary.samples, 71);
}

#[test]
fn a_sample_from_a_jumped_clock_does_not_delay_the_next_flush() {
    let (_dir, path, clock, store, mut rec) = start_recording(Sport::Cycling);
    let hr = |t: Timestamp| Sample::new(t, Reading::HeartRate { bpm: 140.0 });
    rec.record(hr(clock.now())).unwrap();
    // A strap whose clock jumped to 2085: rejected, and it must not move the flush schedule.
    let jumped = Timestamp(T0 + 60 * 365 * 86_400_000);
    assert!(!rec.record(hr(jumped)).unwrap().usable());
    for _ in 0..30 {
        clock.advance_secs(1.0);
        rec.record(hr(clock.now())).unwrap();
    }
    let last_t = clock.now().0;
    drop(rec);
    drop(store);
    let store = Arc::new(Store::open(&path, Some(key())).unwrap());
    let rec = Recording::recover(store.clone(), clock.clone())
        .unwrap()
        .pop()
        .unwrap();
    let stored = store
        .read(|c| crate::store::get_samples(c, store.key(), &rec.id().0, &[]))
        .unwrap();
    let newest = stored.iter().map(|s| s.t.0).max().unwrap();
    assert!(last_t - newest <= 1000, "lost {} ms", last_t - newest);
}

#[test]
fn a_recording_rejects_a_sample_from_hours_ahead_and_keeps_its_channel() {
    let (_dir, _path, clock, _store, mut rec) = start_recording(Sport::Cycling);
    let hr = |t: i64| Sample::new(Timestamp(t), Reading::HeartRate { bpm: 140.0 });
    rec.record(hr(T0)).unwrap();
    // A strap stamping local time (UTC+3) as UTC.
    assert_eq!(
        rec.record(hr(T0 + 3 * 3_600_000)).unwrap(),
        Verdict::Rejected(Reason::AheadOfClock)
    );
    let mut verdicts = vec![];
    for _ in 0..90 {
        clock.advance_secs(1.0);
        verdicts.push(rec.record(hr(clock.now().0)).unwrap());
    }
    assert!(
        verdicts.iter().all(|v| *v == Verdict::Accepted),
        "{verdicts:?}"
    );
    let batch = rec
        .record_batch([hr(T0 + 90_000), hr(T0 + 5 * 3_600_000)])
        .unwrap();
    assert_eq!(
        batch,
        [Verdict::Accepted, Verdict::Rejected(Reason::AheadOfClock)]
    );
    let s = rec.complete().unwrap();
    assert_eq!(s.rejected, 2);
    assert_eq!(s.metrics.elapsed_s, 90.0);
}

/// A recording stopped by the 24-hour limit: stored when its timer holds a minute, deleted
/// (nothing stored, nothing left to recover) when it holds less; a lap after the limit is
/// refused and still stores what was recorded.
#[test]
fn a_recording_at_the_limit_is_stored_or_discarded_by_its_timer() {
    let day = 24.0 * 3600.0;
    for (timer_s, stored, late_lap) in [
        (59.0, false, false),
        (61.0, true, false),
        (61.0, true, true),
    ] {
        let (_dir, _path, clock, store, mut rec) = start_recording(Sport::Walking);
        rec.record(Sample::new(clock.now(), Reading::HeartRate { bpm: 90.0 }))
            .unwrap();
        clock.advance_secs(timer_s);
        rec.pause().unwrap();
        clock.advance_secs(day);
        if late_lap {
            assert!(matches!(
                rec.lap(),
                Err(Error::Workout(
                    crate::workout::WorkoutError::TimeLimitReached
                ))
            ));
        } else {
            rec.maybe_flush().unwrap();
        }
        let case = format!("timer {timer_s} s, late lap {late_lap}");
        let workouts: i64 = store
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM workouts", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(workouts, i64::from(stored), "{case}");
        assert!(
            Recording::recover(store.clone(), clock.clone())
                .unwrap()
                .is_empty(),
            "{case}"
        );
        let chunks: i64 = store
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM sample_chunks", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(chunks > 0, stored, "{case}");
        // Stopped: later calls change nothing and do not store it twice.
        rec.maybe_flush().unwrap();
        assert!(rec.complete().is_err(), "{case}");
    }
}

#[test]
fn a_v2_database_migrates_to_v4_with_a_document_per_workout() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("v2.db");
    let (summary, samples) = workout_at(T0, 5, Sport::Cycling);
    {
        let s = Store::open_at_version(&old, Some(key()), 2).unwrap();
        assert_eq!(s.schema_version().unwrap(), 2);
        s.write(|tx| {
            crate::store::put_samples(tx, Some(&key()), &summary.id.0, &samples, 0)?;
            tx.execute(
                "INSERT INTO workouts (id, sport, start_time, end_time, timer_s, distance_m,
                    created_at, status, title)
                 VALUES (?1, 'cycling', ?2, ?3, ?4, ?5, 0, 'completed', 'Old ride')",
                rusqlite::params![
                    summary.id.0,
                    summary.start_time.0,
                    summary.end_time.0,
                    summary.metrics.timer_s,
                    summary.metrics.distance_m,
                ],
            )?;
            let mut with_title = summary.clone();
            with_title.title = Some("Old ride".into());
            tx.execute(
                "INSERT INTO workout_docs (workout_id, summary_json) VALUES (?1, ?2)",
                rusqlite::params![summary.id.0, serde_json::to_string(&with_title).unwrap()],
            )?;
            tx.execute(
                "INSERT INTO profile (id, version, json) VALUES (1, 1, ?1)",
                [serde_json::to_string(&AthleteProfile {
                    weight_kg: Some(71.5),
                    ..AthleteProfile::default()
                })
                .unwrap()],
            )?;
            Ok(())
        })
        .unwrap();
    }
    let upgraded = Store::open(&old, Some(key())).unwrap();
    assert_eq!(
        upgraded.schema_version().unwrap(),
        crate::db::SCHEMA_VERSION
    );
    let fresh_path = dir.path().join("fresh.db");
    drop(Store::open(&fresh_path, Some(key())).unwrap());
    assert_eq!(schema(&old), schema(&fresh_path));

    // The workout's document; the profile's waits for the user to be known (ADR 0012).
    let docs = upgraded.documents().unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].kind, crate::sync::local::LocalKind::Workout);
    let ctx = crate::sync::docs::ValidationContext {
        now: Timestamp(T0 + 86_400_000),
    };
    let profile_id = upgraded
        .set_sync_user("user-1", Timestamp(T0 + 86_400_000))
        .unwrap();
    let p = upgraded.load_document(&profile_id).unwrap();
    let p = crate::sync::docs::ProfileDoc::read(&p, &ctx).unwrap();
    assert_eq!(p.physiology.weight_kg, Some(71.5));

    let id = upgraded.workout_document_id(&summary.id.0).unwrap();
    let doc = upgraded.load_document(&id).unwrap();
    let w = crate::sync::docs::WorkoutDoc::read(&doc, &ctx).unwrap();
    assert_eq!(w.title.as_deref(), Some("Old ride"));
    assert_eq!(w.start_time, summary.start_time);
    assert_eq!(w.end_time, Some(summary.end_time));
    // One reference per stored chunk, addressed by the SHA-256 of its stored bytes.
    let stored: Vec<(String, Vec<u8>, u64, bool)> = Connection::open(&old)
        .unwrap()
        .prepare("SELECT sha256, data, seq, sealed FROM sample_chunks ORDER BY channel, seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), 3, "heart rate, position, power");
    assert_eq!(w.chunks.len(), stored.len());
    for ((c, place), (sha, data, seq, sealed)) in w.chunks.iter().zip(&w.chunk_places).zip(&stored)
    {
        assert_eq!(&c.sha256, sha);
        assert_eq!((place.seq, place.sealed), (Some(*seq), *sealed));
        assert_eq!(&crate::sync::local::sha256_hex(data), sha);
        assert_eq!(
            upgraded.blob(sha).unwrap().as_deref(),
            Some(data.as_slice())
        );
    }
    // Opening again changes nothing.
    let docs = upgraded.documents().unwrap();
    drop(upgraded);
    let again = Store::open(&old, Some(key())).unwrap();
    assert_eq!(again.documents().unwrap(), docs);
    assert_eq!(again.integrity_check().unwrap(), "ok");
}

/// A v3 database as the v3 build left it: a workout recorded here whose document's chunk
/// references lack `seq` (another device could not open its heart rate), a profile document
/// under a random id never synced, and one that was synced.
#[test]
fn a_v3_database_migrates_to_v4_and_its_workouts_open_on_another_device() {
    use crate::sync::docs;
    use crate::sync::protocol::DocumentId;
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("v3.db");
    let (summary, samples) = workout_at(T0, 5, Sport::Cycling);
    let (synced_profile, unsynced_profile) = (DocumentId::random(), DocumentId::random());
    {
        let s = Store::open_at_version(&old, Some(key()), 3).unwrap();
        assert_eq!(s.schema_version().unwrap(), 3);
        s.write(|tx| {
            crate::store::put_samples(tx, Some(&key()), &summary.id.0, &samples, 0)?;
            tx.execute(
                "INSERT INTO workouts (id, sport, start_time, end_time, timer_s, distance_m,
                    created_at, status, title)
                 VALUES (?1, 'cycling', ?2, ?3, ?4, ?5, 0, 'completed', 'Old ride')",
                rusqlite::params![
                    summary.id.0,
                    summary.start_time.0,
                    summary.end_time.0,
                    summary.metrics.timer_s,
                    summary.metrics.distance_m,
                ],
            )?;
            tx.execute(
                "INSERT INTO workout_docs (workout_id, summary_json) VALUES (?1, ?2)",
                rusqlite::params![summary.id.0, serde_json::to_string(&summary).unwrap()],
            )?;
            // The document the v3 build made: references without `seq` or `sealed`.
            let chunks: Vec<(i64, String, i64, i64, i64)> = tx
                .prepare(
                    "SELECT channel, lower(hex(data)), t_first, t_last, count FROM sample_chunks
                     WHERE workout_id = ?1 ORDER BY channel, seq",
                )?
                .query_map([&summary.id.0], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<Result<_, _>>()?;
            let id = uuid::Uuid::parse_str(&summary.id.0).unwrap();
            let mut doc = docs::new_workout(None, id, Sport::Cycling, summary.start_time).unwrap();
            for (ch, hex, t0, t1, n) in chunks {
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                let sha = crate::sync::local::sha256_hex(&bytes);
                tx.execute(
                    "UPDATE sample_chunks SET sha256 = ?1 WHERE workout_id = ?2 AND channel = ?3",
                    rusqlite::params![sha, summary.id.0, ch],
                )?;
                docs::push_chunk(
                    &mut doc,
                    &docs::ChunkRef {
                        sha256: sha,
                        channel: Channel::ALL[ch as usize],
                        start_time: Timestamp(t0),
                        end_time: Timestamp(t1),
                        count: n as u64,
                    },
                )
                .unwrap();
            }
            let m = &summary.metrics;
            docs::complete_workout(
                &mut doc,
                summary.end_time,
                &docs::DocSummary {
                    elapsed_s: m.elapsed_s,
                    timer_s: m.timer_s,
                    moving_s: m.moving_s,
                    calories_kcal: m.calories_kcal,
                    distance_m: m.distance_m,
                    avg_hr_bpm: m.avg_hr_bpm,
                    max_hr_bpm: m.max_hr_bpm,
                    avg_power_w: m.avg_power_w,
                    max_power_w: m.max_power_w,
                    ..docs::DocSummary::default()
                },
                docs::DocValidationCounts {
                    samples: summary.samples,
                    ..docs::DocValidationCounts::default()
                },
            )
            .unwrap();
            doc.commit();
            tx.execute(
                "INSERT INTO sync_docs (doc_id, kind, workout_id, bytes, heads, updated_at)
                 VALUES (?1, 'workout', ?2, ?3, '', 0)",
                rusqlite::params![
                    DocumentId::from_bytes(*id.as_bytes()).to_string(),
                    summary.id.0,
                    doc.save()
                ],
            )?;
            for p in [synced_profile, unsynced_profile] {
                let mut d = docs::new_profile(None).unwrap();
                tx.execute(
                    "INSERT INTO sync_docs (doc_id, kind, workout_id, bytes, heads, updated_at)
                     VALUES (?1, 'profile', NULL, ?2, '', 0)",
                    rusqlite::params![p.to_string(), d.save()],
                )?;
            }
            tx.execute(
                "INSERT INTO sync_states (server, doc_id, state) VALUES ('s', ?1, x'00')",
                [synced_profile.to_string()],
            )?;
            Ok(())
        })
        .unwrap();
    }
    let upgraded = Store::open(&old, Some(key())).unwrap();
    assert_eq!(
        upgraded.schema_version().unwrap(),
        crate::db::SCHEMA_VERSION
    );
    let fresh_path = dir.path().join("fresh.db");
    drop(Store::open(&fresh_path, Some(key())).unwrap());
    assert_eq!(schema(&old), schema(&fresh_path));
    let held: Vec<String> = upgraded
        .documents()
        .unwrap()
        .into_iter()
        .map(|d| d.doc_id)
        .collect();
    assert!(held.contains(&synced_profile.to_string()));
    assert!(!held.contains(&unsynced_profile.to_string()));

    // The workout's document now says where each chunk sits and that the sport was chosen.
    let now = Timestamp(T0 + 86_400_000);
    let doc_id = upgraded.workout_document_id(&summary.id.0).unwrap();
    let doc = upgraded.load_document(&doc_id).unwrap();
    let w = docs::WorkoutDoc::read(&doc, &docs::ValidationContext { now }).unwrap();
    assert!(w.chunk_places.iter().all(|p| p.seq == Some(0)));
    assert_eq!(
        w.chunk_places.iter().map(|p| p.sealed).collect::<Vec<_>>(),
        [true, false, false],
        "heart rate sealed; position and power not"
    );
    assert_eq!(w.sport_detected, Some(false));
    // Recorded here: applied already, nothing pending.
    assert_eq!(upgraded.apply_documents(now).unwrap(), vec![]);

    // Another device of the user (same key) given the document and the blobs opens them all.
    let other = Store::open_in_memory(Some(key())).unwrap();
    for sha in crate::sync::local::chunk_shas(&doc) {
        other
            .put_blob(&sha, &upgraded.blob(&sha).unwrap().unwrap())
            .unwrap();
    }
    other.save_document(&doc_id, &doc, now).unwrap();
    assert_eq!(
        other.samples(&summary.id.0).unwrap(),
        upgraded.samples(&summary.id.0).unwrap()
    );
    assert_eq!(
        other.summary(&summary.id.0).unwrap().metrics.hr_zones,
        summary.metrics.hr_zones
    );
    assert_eq!(upgraded.integrity_check().unwrap(), "ok");
}

#[test]
fn saved_workouts_get_documents_and_title_edits_go_through_them() {
    let store = Store::open_in_memory(Some(key())).unwrap();
    let (summary, samples) = workout_at(T0, 3, Sport::Running);
    store
        .save_workout(&summary, &samples, Timestamp(T0))
        .unwrap();
    let id = store.workout_document_id(&summary.id.0).unwrap();
    let before = store.load_document(&id).unwrap().get_heads();
    let heads = store
        .set_workout_text(&summary.id.0, Some("Tempo"), None, Timestamp(T0))
        .unwrap();
    assert_ne!(heads, before);
    assert_eq!(
        store.summary(&summary.id.0).unwrap().title.as_deref(),
        Some("Tempo")
    );
    let page = store.list(&ListFilter::default(), 10, None).unwrap();
    assert_eq!(page.items[0].title.as_deref(), Some("Tempo"));
    // An edit that would break the document is refused and changes nothing.
    let long = "x".repeat(crate::sync::docs::MAX_TITLE_CHARS + 1);
    assert!(store
        .set_workout_text(&summary.id.0, Some(&long), None, Timestamp(T0))
        .is_err());
    assert_eq!(store.load_document(&id).unwrap().get_heads(), heads);
    assert_eq!(
        store.summary(&summary.id.0).unwrap().title.as_deref(),
        Some("Tempo")
    );
    // Saving a document merges: an older copy does not undo the edit.
    let old = automerge::Automerge::load(&store.load_document(&id).unwrap().save()).unwrap();
    store.save_document(&id, &old, Timestamp(T0)).unwrap();
    assert_eq!(store.load_document(&id).unwrap().get_heads(), heads);
}

/// A two-track GPX imported by a build that merged its tracks has one stored workout (session 0)
/// spanning both; importing the file again must not add the second track beside it.
#[test]
fn a_file_imported_whole_by_an_older_build_is_not_stored_again_in_parts() {
    use crate::formats::{import, Format};
    let point = |min: i64| {
        format!(
            r#"<trkpt lat="{}" lon="7.0"><time>{}</time></trkpt>"#,
            45.0 + min as f64 * 0.002,
            Timestamp(T0 + min * 60_000).to_rfc3339()
        )
    };
    let track = |minutes: &mut dyn Iterator<Item = i64>| {
        let pts: String = minutes.map(point).collect();
        format!("<trk><type>running</type><trkseg>{pts}</trkseg></trk>")
    };
    let gpx = |body: String| format!(r#"<gpx version="1.1" creator="t">{body}</gpx>"#);
    let merged_doc = gpx(track(&mut (0..30).chain(40..70)));
    let split_doc = gpx(track(&mut (0..30)) + &track(&mut (40..70)));
    let merged = import(Format::Gpx, merged_doc.as_bytes(), Profile::default(), "h").unwrap();
    let split = import(Format::Gpx, split_doc.as_bytes(), Profile::default(), "h").unwrap();
    assert_eq!((merged.len(), split.len()), (1, 2));
    let store = Store::open_in_memory(Some(key())).unwrap();
    let first = store
        .save_import("a.gpx", "h", &merged, Timestamp(T0))
        .unwrap();
    assert!(matches!(first[0], crate::store::Saved::Stored { .. }));
    let again = store
        .save_import("a.gpx", "h", &split, Timestamp(T0))
        .unwrap();
    assert!(
        again
            .iter()
            .all(|s| matches!(s, crate::store::Saved::AlreadyImported)),
        "{again:?}"
    );
    assert_eq!(store.workout_count().unwrap(), 1);
    // Another file with the same tracks (another hash, so other ids) is stored.
    let split = import(
        Format::Gpx,
        split_doc.as_bytes(),
        Profile::default(),
        "other",
    )
    .unwrap();
    let other = store
        .save_import("b.gpx", "other", &split, Timestamp(T0))
        .unwrap();
    assert!(other
        .iter()
        .all(|s| matches!(s, crate::store::Saved::Stored { .. })));
}
