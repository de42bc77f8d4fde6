//! The typed sync documents: a valid document at every validator boundary, one step over it
//! refused, migration from schema version 1, and merge behaviour of the writers.
// Tests unwrap on purpose: a failure should stop the test with the value that broke it.
#![allow(clippy::unwrap_used)]

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc, ROOT};
use fitedge_core::sample::Channel;
use fitedge_core::sync::docs::*;
use fitedge_core::{Sport, Timestamp};

const START: i64 = 1_700_000_000_000;
const NOW: Timestamp = Timestamp(1_800_000_000_000);

fn ctx() -> ValidationContext {
    ValidationContext { now: NOW }
}

fn sha(n: u8) -> String {
    format!("{:064x}", n)
}

fn summary(elapsed_s: f64) -> DocSummary {
    DocSummary {
        elapsed_s,
        timer_s: elapsed_s,
        moving_s: elapsed_s - 10.0,
        calories_kcal: 400.0,
        distance_m: Some(10_000.0),
        ascent_m: Some(50.0),
        avg_speed_mps: Some(3.0),
        max_speed_mps: Some(5.0),
        avg_hr_bpm: Some(150.0),
        max_hr_bpm: Some(180.0),
        avg_power_w: None,
        max_power_w: None,
        avg_cadence_rpm: Some(85.0),
        max_cadence_rpm: Some(95.0),
        min_spo2_pct: None,
    }
}

/// A completed one-hour run with two laps and two chunks.
fn workout() -> AutoCommit {
    let id = uuid::Uuid::new_v4();
    let mut doc = new_workout(None, id, Sport::Running, Timestamp(START)).unwrap();
    set_text(&mut doc, "title", "Morning run").unwrap();
    push_lap(
        &mut doc,
        &DocLap {
            start_time: Timestamp(START),
            end_time: Timestamp(START + 1_800_000),
            timer_s: 1800.0,
            distance_m: 5000.0,
        },
    )
    .unwrap();
    push_lap(
        &mut doc,
        &DocLap {
            start_time: Timestamp(START + 1_800_000),
            end_time: Timestamp(START + 3_600_000),
            timer_s: 1800.0,
            distance_m: 5000.0,
        },
    )
    .unwrap();
    for (i, ch) in [Channel::HeartRate, Channel::Position]
        .into_iter()
        .enumerate()
    {
        push_chunk(
            &mut doc,
            &ChunkRef {
                sha256: sha(i as u8),
                channel: ch,
                start_time: Timestamp(START),
                end_time: Timestamp(START + 3_600_000),
                count: 3600,
            },
        )
        .unwrap();
    }
    complete_workout(
        &mut doc,
        Timestamp(START + 3_600_000),
        &summary(3600.0),
        DocValidationCounts {
            samples: 7200,
            rejected: 3,
            flagged: 2,
        },
    )
    .unwrap();
    doc.commit();
    doc
}

fn problems(r: Result<Validated, DocError>) -> Vec<String> {
    match r {
        Ok(_) => Vec::new(),
        Err(DocError::Invalid { problems, .. }) => problems.into_iter().map(|p| p.path).collect(),
        Err(e) => vec![e.to_string()],
    }
}

fn check(doc: &AutoCommit) -> Vec<String> {
    problems(validate(doc, &ctx()))
}

fn summary_obj(doc: &AutoCommit) -> automerge::ObjId {
    doc.get(ROOT, "summary").unwrap().unwrap().1
}

#[test]
fn a_complete_workout_is_valid_and_reads_back() {
    let doc = workout();
    let Validated::Workout(w) = validate(&doc, &ctx()).unwrap() else {
        panic!("not a workout")
    };
    assert_eq!(w.title.as_deref(), Some("Morning run"));
    assert_eq!(w.laps.len(), 2);
    assert_eq!(w.chunks.len(), 2);
    assert_eq!(w.state, WorkoutDocState::Completed);
    assert_eq!(w.summary.unwrap().avg_hr_bpm, Some(150.0));
}

#[test]
fn end_time_boundaries() {
    // 24 hours exactly is allowed (with the elapsed figure to match)...
    let mut doc = workout();
    doc.put(ROOT, "endTime", START + 86_400_000).unwrap();
    let s = summary_obj(&doc);
    doc.put(&s, "elapsedS", 86_400.0).unwrap();
    assert_eq!(check(&doc), Vec::<String>::new());
    // ...one millisecond more is not.
    doc.put(ROOT, "endTime", START + 86_400_001).unwrap();
    assert!(check(&doc).contains(&"endTime".to_string()));
    // End before start.
    let mut doc = workout();
    doc.put(ROOT, "endTime", START - 1).unwrap();
    assert!(check(&doc).contains(&"endTime".to_string()));
}

#[test]
fn elapsed_must_match_the_times_within_a_second() {
    let mut doc = workout();
    let s = summary_obj(&doc);
    doc.put(&s, "elapsedS", 3601.0).unwrap();
    doc.put(&s, "timerS", 3600.0).unwrap();
    assert_eq!(check(&doc), Vec::<String>::new());
    doc.put(&s, "elapsedS", 3601.5).unwrap();
    assert_eq!(check(&doc), vec!["summary.elapsedS".to_string()]);
}

#[test]
fn timer_and_moving_times_are_ordered() {
    let mut doc = workout();
    let s = summary_obj(&doc);
    doc.put(&s, "timerS", 3602.0).unwrap();
    assert!(check(&doc).contains(&"summary.timerS".to_string()));
    let mut doc = workout();
    let s = summary_obj(&doc);
    doc.put(&s, "timerS", 3000.0).unwrap();
    doc.put(&s, "movingS", 3001.0).unwrap();
    assert_eq!(check(&doc), Vec::<String>::new());
    doc.put(&s, "movingS", 3001.5).unwrap();
    assert_eq!(check(&doc), vec!["summary.movingS".to_string()]);
}

#[test]
fn a_completed_workout_lasts_a_minute() {
    let mut doc = workout();
    doc.put(ROOT, "endTime", START + 60_000).unwrap();
    let laps: automerge::ObjId = doc.get(ROOT, "laps").unwrap().unwrap().1;
    doc.delete(&laps, 1).unwrap();
    doc.delete(&laps, 0).unwrap();
    let chunks: automerge::ObjId = doc.get(ROOT, "chunks").unwrap().unwrap().1;
    doc.delete(&chunks, 1).unwrap();
    doc.delete(&chunks, 0).unwrap();
    let s = summary_obj(&doc);
    for k in ["elapsedS", "timerS"] {
        doc.put(&s, k, 60.0).unwrap();
    }
    doc.put(&s, "movingS", 50.0).unwrap();
    doc.put(&s, "caloriesKcal", 10.0).unwrap();
    assert_eq!(check(&doc), Vec::<String>::new());
    doc.put(&s, "timerS", 59.9).unwrap();
    assert_eq!(check(&doc), vec!["summary.timerS".to_string()]);
}

#[test]
fn heart_rate_limits_and_order() {
    let mut doc = workout();
    let s = summary_obj(&doc);
    doc.put(&s, "maxHrBpm", 300.0).unwrap();
    assert_eq!(check(&doc), Vec::<String>::new());
    doc.put(&s, "maxHrBpm", 300.5).unwrap();
    assert_eq!(check(&doc), vec!["summary.maxHrBpm".to_string()]);
    doc.put(&s, "maxHrBpm", 140.0).unwrap();
    assert_eq!(check(&doc), vec!["summary.avgHrBpm".to_string()]);
    doc.put(&s, "maxHrBpm", 180.0).unwrap();
    doc.put(&s, "avgHrBpm", 19.0).unwrap();
    assert_eq!(check(&doc), vec!["summary.avgHrBpm".to_string()]);
}

#[test]
fn numbers_must_be_finite_numbers() {
    let mut doc = workout();
    let s = summary_obj(&doc);
    doc.put(&s, "distanceM", f64::NAN).unwrap();
    assert_eq!(check(&doc), vec!["summary.distanceM".to_string()]);
    doc.put(&s, "distanceM", "far").unwrap();
    assert_eq!(check(&doc), vec!["summary.distanceM".to_string()]);
    // Integers are accepted where floats are expected (other libraries write them).
    doc.put(&s, "distanceM", 10_000_i64).unwrap();
    assert_eq!(check(&doc), Vec::<String>::new());
}

#[test]
fn calories_are_bounded_by_the_energy_rule() {
    let mut doc = workout();
    let s = summary_obj(&doc);
    // 20 kcal/h/kg x 400 kg x 1 h.
    doc.put(&s, "caloriesKcal", 8000.0).unwrap();
    assert_eq!(check(&doc), Vec::<String>::new());
    doc.put(&s, "caloriesKcal", 8000.5).unwrap();
    assert_eq!(check(&doc), vec!["summary.caloriesKcal".to_string()]);
    doc.put(&s, "caloriesKcal", -1.0).unwrap();
    assert_eq!(check(&doc), vec!["summary.caloriesKcal".to_string()]);
}

#[test]
fn chunk_references_are_sha256_hex_inside_the_workout() {
    let set = |doc: &mut AutoCommit, key: &str, v: automerge::ScalarValue| {
        let chunks: automerge::ObjId = doc.get(ROOT, "chunks").unwrap().unwrap().1;
        let c: automerge::ObjId = doc.get(&chunks, 0).unwrap().unwrap().1;
        doc.put(&c, key, v).unwrap();
    };
    for (bad, expect) in [
        ("a".repeat(63), "chunks[0].sha256"),
        ("a".repeat(65), "chunks[0].sha256"),
        ("A".repeat(64), "chunks[0].sha256"),
        ("g".repeat(64), "chunks[0].sha256"),
        (sha(1), "chunks[1].sha256"), // the second chunk's hash: referenced twice
    ] {
        let mut doc = workout();
        set(&mut doc, "sha256", bad.as_str().into());
        assert_eq!(check(&doc), vec![expect.to_string()], "{bad}");
    }
    let mut doc = workout();
    set(&mut doc, "sha256", "f".repeat(64).as_str().into());
    assert_eq!(check(&doc), Vec::<String>::new());
    set(&mut doc, "startTime", (START - 1).into());
    assert_eq!(check(&doc), vec!["chunks[0]".to_string()]);
    let mut doc = workout();
    set(&mut doc, "channel", "smell".into());
    assert_eq!(check(&doc), vec!["chunks[0].channel".to_string()]);
    let mut doc = workout();
    set(&mut doc, "count", 0_i64.into());
    assert_eq!(check(&doc), vec!["chunks[0].count".to_string()]);
}

#[test]
fn laps_are_ordered_and_inside_the_workout() {
    let mut doc = workout();
    let laps: automerge::ObjId = doc.get(ROOT, "laps").unwrap().unwrap().1;
    let second: automerge::ObjId = doc.get(&laps, 1).unwrap().unwrap().1;
    doc.put(&second, "startTime", START + 1_799_999).unwrap();
    assert_eq!(check(&doc), vec!["laps[1].startTime".to_string()]);
    doc.put(&second, "startTime", START + 1_800_000).unwrap();
    doc.put(&second, "endTime", START + 3_600_001).unwrap();
    assert_eq!(check(&doc), vec!["laps[1]".to_string()]);
    doc.put(&second, "endTime", START + 3_600_000).unwrap();
    doc.put(&second, "distanceM", 5001.0).unwrap();
    assert_eq!(check(&doc), Vec::<String>::new(), "1 m tolerance");
    doc.put(&second, "distanceM", 5001.5).unwrap();
    assert_eq!(check(&doc), vec!["laps".to_string()]);
}

#[test]
fn validation_counts_add_up() {
    let mut doc = workout();
    let v: automerge::ObjId = doc.get(ROOT, "validation").unwrap().unwrap().1;
    doc.put(&v, "rejected", 7198_u64).unwrap();
    assert_eq!(check(&doc), Vec::<String>::new());
    doc.put(&v, "rejected", 7199_u64).unwrap();
    assert_eq!(check(&doc), vec!["validation".to_string()]);
}

#[test]
fn completed_needs_end_and_summary_and_future_is_refused() {
    let mut doc = workout();
    doc.delete(ROOT, "endTime").unwrap();
    assert!(check(&doc).contains(&"endTime".to_string()));
    let mut doc = workout();
    doc.delete(ROOT, "summary").unwrap();
    assert_eq!(check(&doc), vec!["summary".to_string()]);
    let mut doc = new_workout(None, uuid::Uuid::new_v4(), Sport::Cycling, NOW).unwrap();
    assert_eq!(check(&doc), Vec::<String>::new(), "a recording without end");
    doc.put(ROOT, "startTime", NOW.as_millis() + CLOCK_SKEW_MS + 1)
        .unwrap();
    assert_eq!(check(&doc), vec!["startTime".to_string()]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut doc = workout();
    doc.put(ROOT, "sport", "quidditch").unwrap();
    doc.put(ROOT, "id", "not-a-uuid").unwrap();
    let s = summary_obj(&doc);
    doc.put(&s, "avgPowerW", 3000.5).unwrap();
    let p = check(&doc);
    for expected in ["sport", "id", "summary.avgPowerW"] {
        assert!(p.contains(&expected.to_string()), "{p:?}");
    }
    let err = validate(&doc, &ctx()).unwrap_err().to_string();
    assert!(err.contains("quidditch"), "{err}");
}

// -------------------------------------------------------------------------------- profile

fn profile() -> AutoCommit {
    let mut doc = new_profile(None).unwrap();
    set_physiology(
        &mut doc,
        &Physiology {
            weight_kg: Some(70.0),
            birth_year: Some(1990),
            hr_max_bpm: Some(190.0),
            hr_rest_bpm: Some(50.0),
            ftp_w: Some(250.0),
        },
    )
    .unwrap();
    put_gear(
        &mut doc,
        "shoe-1",
        &GearItem {
            name: "Trail shoes".into(),
            kind: GearKind::Shoes,
            retired: false,
            distance_m: 120_000.0,
        },
    )
    .unwrap();
    doc.commit();
    doc
}

fn physiology(doc: &AutoCommit) -> automerge::ObjId {
    doc.get(ROOT, "physiology").unwrap().unwrap().1
}

#[test]
fn a_profile_is_valid_and_reads_back() {
    let doc = profile();
    let p = ProfileDoc::read(&doc, &ctx()).unwrap();
    assert_eq!(p.physiology.weight_kg, Some(70.0));
    assert_eq!(p.physiology.birth_year, Some(1990));
    assert_eq!(p.gear["shoe-1"].kind, GearKind::Shoes);
    assert_eq!(p.profile_visibility, Visibility::Private);
}

#[test]
fn weight_boundaries() {
    let mut doc = profile();
    let ph = physiology(&doc);
    for (w, ok) in [(20.0, true), (19.9, false), (400.0, true), (400.1, false)] {
        doc.put(&ph, "weightKg", w).unwrap();
        assert_eq!(check(&doc).is_empty(), ok, "{w}");
    }
}

#[test]
fn birth_year_respects_the_minimum_age_on_the_injected_clock() {
    // NOW is in 2027: born 2014 is 13 this year, born 2015 is not.
    let mut doc = profile();
    let ph = physiology(&doc);
    doc.put(&ph, "birthYear", 2014_i64).unwrap();
    assert_eq!(check(&doc), Vec::<String>::new());
    doc.put(&ph, "birthYear", 2015_i64).unwrap();
    assert_eq!(check(&doc), vec!["physiology.birthYear".to_string()]);
    doc.put(&ph, "birthYear", 1899_i64).unwrap();
    assert_eq!(check(&doc), vec!["physiology.birthYear".to_string()]);
    doc.put(&ph, "birthYear", 1990.5).unwrap();
    assert_eq!(check(&doc), vec!["physiology.birthYear".to_string()]);
}

#[test]
fn heart_rates_zones_and_ftp() {
    let mut doc = profile();
    let ph = physiology(&doc);
    doc.put(&ph, "hrRestBpm", 190.0).unwrap();
    assert_eq!(check(&doc), vec!["physiology.hrRestBpm".to_string()]);
    doc.put(&ph, "hrRestBpm", 50.0).unwrap();
    doc.put(&ph, "ftpW", 0.0).unwrap();
    assert_eq!(check(&doc), vec!["physiology.ftpW".to_string()]);
    doc.put(&ph, "ftpW", 250.0).unwrap();
    let zones: automerge::ObjId = doc.get(ROOT, "zones").unwrap().unwrap().1;
    let hr: automerge::ObjId = doc.get(&zones, "hrBpm").unwrap().unwrap().1;
    for (i, z) in [120.0, 140.0, 160.0, 190.0].into_iter().enumerate() {
        doc.insert(&hr, i, z).unwrap();
    }
    assert_eq!(check(&doc), Vec::<String>::new());
    doc.put(&hr, 3, 191.0).unwrap();
    assert_eq!(check(&doc), vec!["zones.hrBpm".to_string()]);
    doc.put(&hr, 3, 150.0).unwrap();
    assert_eq!(check(&doc), vec!["zones.hrBpm[3]".to_string()]);
}

#[test]
fn gear_and_privacy_values_are_checked() {
    let mut doc = profile();
    let privacy: automerge::ObjId = doc.get(ROOT, "privacy").unwrap().unwrap().1;
    doc.put(&privacy, "profileVisibility", "everyone").unwrap();
    assert_eq!(check(&doc), vec!["privacy.profileVisibility".to_string()]);
    let mut doc = profile();
    let gear: automerge::ObjId = doc.get(ROOT, "gear").unwrap().unwrap().1;
    let shoe: automerge::ObjId = doc.get(&gear, "shoe-1").unwrap().unwrap().1;
    doc.put(&shoe, "kind", "skateboard").unwrap();
    doc.put(&shoe, "name", "  ").unwrap();
    assert_eq!(
        check(&doc),
        vec![
            "gear.shoe-1.kind".to_string(),
            "gear.shoe-1.name".to_string()
        ]
    );
}

// ------------------------------------------------------------------------ kinds and updates

#[test]
fn kinds_versions_and_updates() {
    let untyped = AutoCommit::new();
    assert_eq!(validate(&untyped, &ctx()).unwrap(), Validated::Untyped);
    let mut other_app = AutoCommit::new();
    other_app.put(ROOT, "type", "todo-list").unwrap();
    assert_eq!(validate(&other_app, &ctx()).unwrap(), Validated::Untyped);
    let mut unknown = AutoCommit::new();
    unknown.put(ROOT, "type", "fitedge.spaceship").unwrap();
    assert!(matches!(
        validate(&unknown, &ctx()),
        Err(DocError::UnknownType(_))
    ));

    let mut newer = profile();
    newer.put(ROOT, "schemaVersion", 3_u64).unwrap();
    assert!(matches!(
        validate(&newer, &ctx()),
        Err(DocError::TooNew { found: 3, .. })
    ));

    // A workout cannot become untyped or a profile, and its version cannot go down.
    let before = workout();
    let mut retyped = before.clone();
    retyped.delete(ROOT, "type").unwrap();
    assert!(matches!(
        validate_update(Some(&before), &retyped, &ctx()),
        Err(DocError::Transition(_))
    ));
    let mut renamed = before.clone();
    renamed.put(ROOT, "type", PROFILE_TYPE).unwrap();
    assert!(matches!(
        validate_update(Some(&before), &renamed, &ctx()),
        Err(DocError::Transition(_))
    ));
    let mut older = before.clone();
    older.put(ROOT, "schemaVersion", 1_u64).unwrap();
    assert!(matches!(
        validate_update(Some(&before), &older, &ctx()),
        Err(DocError::Transition(_))
    ));
    // An untyped document may become typed, if valid.
    assert!(validate_update(Some(&untyped), &before, &ctx()).is_ok());
    assert!(validate_update(None::<&AutoCommit>, &before, &ctx()).is_ok());
}

// ------------------------------------------------------------------------------- migration

fn profile_v1() -> AutoCommit {
    let mut doc = AutoCommit::new();
    doc.put(ROOT, "type", PROFILE_TYPE).unwrap();
    doc.put(ROOT, "schemaVersion", 1_u64).unwrap();
    doc.put(ROOT, "weightKg", 82.5).unwrap();
    doc.put(ROOT, "birthYear", 1985_i64).unwrap();
    doc.put(ROOT, "hrMaxBpm", 185.0).unwrap();
    doc.commit();
    doc
}

#[test]
fn a_v1_profile_must_be_migrated_and_migrates() {
    let mut doc = profile_v1();
    let err = validate(&doc, &ctx()).unwrap_err().to_string();
    assert!(err.contains("migrated"), "{err}");
    assert_eq!(migrate(&mut doc).unwrap(), Migration::From(1));
    let p = ProfileDoc::read(&doc, &ctx()).unwrap();
    assert_eq!(p.schema_version, PROFILE_SCHEMA_VERSION);
    assert_eq!(p.physiology.weight_kg, Some(82.5));
    assert_eq!(p.physiology.birth_year, Some(1985));
    assert_eq!(p.physiology.hr_max_bpm, Some(185.0));
    assert!(doc.get(ROOT, "weightKg").unwrap().is_none());
    assert_eq!(migrate(&mut doc).unwrap(), Migration::Current);
}

#[test]
fn a_v1_workout_migrates() {
    let mut doc = AutoCommit::new();
    doc.put(ROOT, "type", WORKOUT_TYPE).unwrap();
    doc.put(ROOT, "schemaVersion", 1_u64).unwrap();
    doc.put(ROOT, "id", uuid::Uuid::new_v4().to_string())
        .unwrap();
    doc.put(ROOT, "sport", "running").unwrap();
    doc.put(ROOT, "state", "recording").unwrap();
    doc.put(ROOT, "title", "Old title").unwrap();
    doc.put(ROOT, "start", 1_700_000_000.25).unwrap();
    doc.commit();
    migrate(&mut doc).unwrap();
    let Validated::Workout(w) = validate(&doc, &ctx()).unwrap() else {
        panic!()
    };
    assert_eq!(w.start_time, Timestamp(1_700_000_000_250));
    assert_eq!(w.title.as_deref(), Some("Old title"));
    assert!(matches!(
        doc.get(ROOT, "title").unwrap().unwrap().0,
        automerge::Value::Object(ObjType::Text)
    ));
}

#[test]
fn two_devices_migrating_the_same_state_make_the_same_change() {
    let mut a = profile_v1();
    let mut b = a.fork();
    migrate(&mut a).unwrap();
    migrate(&mut b).unwrap();
    assert_eq!(a.get_heads(), b.get_heads());
    // Merged, there is one physiology map and no conflict on it.
    a.merge(&mut b).unwrap();
    assert_eq!(a.get_all(ROOT, "physiology").unwrap().len(), 1);
    // The device keeps its own actor for later edits.
    assert_ne!(a.get_actor(), b.get_actor());
}

#[test]
fn concurrent_title_edits_merge() {
    let mut a = workout();
    let mut b = a.fork();
    set_text(&mut a, "title", "Morning run in the forest").unwrap();
    set_text(&mut b, "title", "Easy morning run").unwrap();
    a.merge(&mut b).unwrap();
    let title = a.text(a.get(ROOT, "title").unwrap().unwrap().1).unwrap();
    assert!(
        title.contains("forest") && title.contains("Easy"),
        "{title}"
    );
    assert_eq!(check(&a), Vec::<String>::new());
}

#[test]
fn chunk_places_read_back_and_older_references_still_read() {
    // Written before `seq` existed: it reads, with no place, and health channels count as
    // sealed.
    let old = workout();
    let Validated::Workout(w) = validate(&old, &ctx()).unwrap() else {
        panic!("not a workout")
    };
    assert_eq!(
        w.chunk_places,
        vec![
            ChunkPlace {
                seq: None,
                sealed: true
            },
            ChunkPlace {
                seq: None,
                sealed: false
            }
        ]
    );
    assert_eq!(w.sport_detected, None);

    let mut doc = old.clone();
    set_chunk_place(&mut doc, 0, 7, true).unwrap();
    set_chunk_place(&mut doc, 1, 0, false).unwrap();
    set_sport_detected(&mut doc, false).unwrap();
    let c = ChunkRef {
        sha256: sha(9),
        channel: Channel::HeartRate,
        start_time: Timestamp(START + 60_000),
        end_time: Timestamp(START + 120_000),
        count: 60,
    };
    push_chunk_at(&mut doc, &c, 8, true).unwrap();
    doc.commit();
    let Validated::Workout(w) = validate(&doc, &ctx()).unwrap() else {
        panic!("not a workout")
    };
    let seqs: Vec<Option<u64>> = w.chunk_places.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, [Some(7), Some(0), Some(8)]);
    assert_eq!(w.chunks[2], c);
    assert_eq!(w.sport_detected, Some(false));
    // Still schema version 2: the additions are optional.
    assert_eq!(w.schema_version, 2);

    // Two heart-rate chunks in one place, a health chunk stored in the clear, a negative seq.
    let mut twice = doc.clone();
    set_chunk_place(&mut twice, 2, 7, true).unwrap();
    assert_eq!(check(&twice), ["chunks[2].seq"]);
    let mut clear = doc.clone();
    set_chunk_place(&mut clear, 0, 7, false).unwrap();
    assert_eq!(check(&clear), ["chunks[0].sealed"]);
    let mut negative = doc.clone();
    let list = negative.get(ROOT, "chunks").unwrap().unwrap().1;
    let first = negative.get(&list, 0).unwrap().unwrap().1;
    negative.put(&first, "seq", -1_i64).unwrap();
    assert_eq!(check(&negative), ["chunks[0].seq"]);
}

#[test]
fn every_device_makes_the_same_first_change_of_a_users_profile() {
    let user = "7d1e2b7a-5c3f-4e8a-9b1d-2f6a0c4e8d10";
    let (id_a, mut a) = new_user_profile(user).unwrap();
    let (id_b, mut b) = new_user_profile(user).unwrap();
    assert_eq!(id_a, id_b);
    assert_eq!(id_a, profile_document_id(user));
    assert_ne!(id_a, profile_document_id("another user"));
    assert_eq!(a.get_heads(), b.get_heads());
    // Each device then writes as itself; the copies merge field by field.
    a.set_actor(automerge::ActorId::from(&[1u8; 16][..]));
    b.set_actor(automerge::ActorId::from(&[2u8; 16][..]));
    assert!(put_physiology(
        &mut a,
        &Physiology {
            weight_kg: Some(70.0),
            ..Physiology::default()
        }
    )
    .unwrap());
    assert!(put_physiology(
        &mut b,
        &Physiology {
            ftp_w: Some(250.0),
            ..Physiology::default()
        }
    )
    .unwrap());
    // An unset field is left alone, and writing the same value writes nothing.
    assert!(!put_physiology(&mut b, &Physiology::default()).unwrap());
    a.commit();
    b.commit();
    a.merge(&mut b).unwrap();
    let Validated::Profile(p) = validate(&a, &ctx()).unwrap() else {
        panic!("not a profile")
    };
    assert_eq!(p.physiology.weight_kg, Some(70.0));
    assert_eq!(p.physiology.ftp_w, Some(250.0));
    // With independent first changes (the old way) one device's whole map would hide the
    // other's.
    let mut c = new_profile(None).unwrap();
    let mut d = new_profile(None).unwrap();
    put_physiology(
        &mut c,
        &Physiology {
            weight_kg: Some(70.0),
            ..Physiology::default()
        },
    )
    .unwrap();
    put_physiology(
        &mut d,
        &Physiology {
            ftp_w: Some(250.0),
            ..Physiology::default()
        },
    )
    .unwrap();
    c.commit();
    d.commit();
    c.merge(&mut d).unwrap();
    let Validated::Profile(q) = validate(&c, &ctx()).unwrap() else {
        panic!("not a profile")
    };
    assert!(q.physiology.weight_kg.is_none() || q.physiology.ftp_w.is_none());
}
