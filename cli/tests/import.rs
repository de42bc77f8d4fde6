//! The `fitedge import` command, run as a user runs it.

// Test helpers may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fitedge(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fitedge"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("run fitedge")
}

fn json(out: &Output) -> Vec<Value> {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn workouts(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT COUNT(*) FROM workouts", [], |r| r.get(0))
        .unwrap()
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

const KEYS: [&str; 18] = [
    "file",
    "sport",
    "start_time",
    "elapsed_s",
    "timer_s",
    "moving_s",
    "distance_m",
    "ascent_m",
    "descent_m",
    "calories_kcal",
    "avg_hr",
    "max_hr",
    "avg_power_w",
    "normalized_power_w",
    "tss",
    "samples",
    "rejected",
    "device",
];

#[test]
fn json_has_one_object_per_session_in_file_order_with_the_documented_keys() {
    let Some(fit) = fitedge_tests::fit_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("f.db");
    let files = [
        file(&fit, "activity-large-fenxi2-multisport.fit"),
        file(&fit, "Edge810-Vector-2013-08-16-15-35-10.fit"),
    ];
    let out = fitedge(&db, &["import", "--json", &files[0], &files[1]]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = json(&out);
    assert_eq!(rows.len(), 8);
    for (i, r) in rows.iter().enumerate() {
        for k in KEYS {
            assert!(r.get(k).is_some(), "row {i} lacks {k}: {r}");
        }
        for k in ["distance_m", "timer_s", "calories_kcal", "max_power_w"] {
            assert!(r["device"].get(k).is_some(), "device lacks {k}");
        }
        assert!(r["start_time"].as_str().unwrap().ends_with('Z'));
    }
    assert!(rows[..7].iter().all(|r| r["file"] == files[0].as_str()));
    assert_eq!(rows[7]["file"], files[1].as_str());
    let sessions: Vec<i64> = rows[..7]
        .iter()
        .map(|r| r["session"].as_i64().unwrap())
        .collect();
    assert_eq!(sessions, vec![0, 1, 2, 3, 4, 5, 6]);
    // The 4-second transition is computed and shown but not stored.
    assert_eq!(rows[3]["stored"], false);
    assert_eq!(workouts(&db), 7);
    // The engine's own figure, with the device's beside it, not copied from it.
    let np = rows[7]["normalized_power_w"].as_f64().unwrap();
    assert!((np - 301.0).abs() <= 301.0 * 0.03);
    assert_eq!(
        rows[7]["device"]["normalized_power_w"].as_f64(),
        Some(301.0)
    );
    // The device's maximum power beside the engine's (the session's max_power is 619 W).
    assert_eq!(rows[7]["device"]["max_power_w"].as_f64(), Some(619.0));
    assert!(rows[7]["max_power_w"].as_f64().is_some());
}

/// A GPX file of heart-rate points every 10 s for `minutes` minutes from midnight (UTC) of
/// May `day`, 2024, written to `dir/name`.
fn gpx_file(dir: &Path, name: &str, day: u32, minutes: u32) -> String {
    let mut x = String::from(
        r#"<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1" xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v1"><trk><type>running</type><trkseg>"#,
    );
    for i in 0..=minutes * 6 {
        let s = i * 10;
        x.push_str(&format!(
            r#"<trkpt lat="45.0" lon="7.0"><time>2024-05-{:02}T{:02}:{:02}:{:02}Z</time><extensions><gpxtpx:TrackPointExtension><gpxtpx:hr>110</gpxtpx:hr></gpxtpx:TrackPointExtension></extensions></trkpt>"#,
            day + s / 86_400,
            s / 3600 % 24,
            s / 60 % 60,
            s % 60
        ));
    }
    x.push_str("</trkseg></trk></gpx>");
    let path = dir.join(name);
    std::fs::write(&path, x).unwrap();
    path.display().to_string()
}

/// Before the fix the command returned 4 at the failing file without printing the array, so
/// a script could not tell which files were stored, and the files after it were not tried.
#[test]
fn a_file_that_cannot_be_stored_is_reported_and_the_others_still_import() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("f.db");
    let files = [
        gpx_file(tmp.path(), "a.gpx", 1, 5),
        gpx_file(tmp.path(), "refused.gpx", 2, 5),
        gpx_file(tmp.path(), "c.gpx", 3, 5),
    ];
    // Create the database, then make it refuse one file's workout as a failing disk would.
    assert_eq!(fitedge(&db, &["list"]).status.code(), Some(0));
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON workouts
             WHEN NEW.source_file LIKE '%refused.gpx'
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
    let out = fitedge(&db, &["import", "--json", &files[0], &files[1], &files[2]]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = json(&out);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0]["stored"], true);
    assert_eq!(rows[1]["file"], files[1].as_str());
    let e = rows[1]["error"].as_str().unwrap();
    assert!(e.starts_with("could not store: "), "{e}");
    assert!(e.contains("refused by the test"), "{e}");
    assert_eq!(rows[2]["stored"], true);
    assert_eq!(workouts(&db), 2);

    // Without --json: one line on stderr for the refused file, the others still printed.
    let d = gpx_file(tmp.path(), "d.gpx", 4, 5);
    let refused_again = gpx_file(tmp.path(), "x-refused.gpx", 5, 5);
    let out = fitedge(&db, &["import", &refused_again, &d]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("x-refused.gpx: could not store: "), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("d.gpx"));
    assert_eq!(workouts(&db), 3);

    // The database code wins over an unreadable file.
    let junk = tmp.path().join("junk.fit");
    std::fs::write(&junk, b"not a FIT file").unwrap();
    let refused_once_more = gpx_file(tmp.path(), "y-refused.gpx", 6, 5);
    let out = fitedge(
        &db,
        &[
            "import",
            "--json",
            &junk.display().to_string(),
            &refused_once_more,
        ],
    );
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(json(&out).len(), 2);
}

/// Before the fix the exit code was the largest of the files' codes, so an unreadable file
/// (1) beside a partly used one (3) exited 3 and hid the unreadable file.
#[test]
fn an_unreadable_file_wins_over_a_partly_used_one_in_the_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("f.db");
    // 25 hours: the points past the 24-hour limit are not used (exit 3 on its own).
    let long = gpx_file(tmp.path(), "long.gpx", 1, 25 * 60);
    let out = fitedge(&db, &["import", "--json", &long]);
    assert_eq!(out.status.code(), Some(3));
    let rows = json(&out);
    let w = rows[0]["warnings"][0].as_str().unwrap();
    assert!(w.contains("24-hour limit"), "{w}");
    // The last hour's 361 points (10 s apart, both ends included), two samples each.
    assert!(
        w.contains("722 sample(s) (from 2024-05-02T00:00:00Z to 2024-05-02T01:00:00Z)"),
        "{w}"
    );

    let junk = tmp.path().join("junk.fit");
    std::fs::write(&junk, b"not a FIT file").unwrap();
    let junk = junk.display().to_string();
    for files in [[&long, &junk], [&junk, &long]] {
        let out = fitedge(&db, &["import", "--json", files[0], files[1]]);
        assert_eq!(out.status.code(), Some(1), "{files:?}");
        assert_eq!(json(&out).len(), 2);
    }
}

#[test]
fn the_help_states_the_exit_codes_and_their_precedence() {
    let tmp = tempfile::tempdir().unwrap();
    let out = fitedge(&tmp.path().join("f.db"), &["import", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("most serious wins: 4, then 1, then 3"),
        "{help}"
    );
}

#[test]
fn an_unreadable_file_is_reported_and_stores_nothing_while_others_import() {
    let Some(fit) = fitedge_tests::fit_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("f.db");
    let junk = tmp.path().join("junk.fit");
    std::fs::write(&junk, b"this is not a FIT file at all").unwrap();
    let good = file(&fit, "hrv-activity.fit");
    let missing = tmp.path().join("missing.fit").display().to_string();
    let out = fitedge(
        &db,
        &[
            "import",
            "--json",
            &junk.display().to_string(),
            &good,
            &missing,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let rows = json(&out);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["file"], junk.display().to_string());
    assert!(rows[0]["error"]
        .as_str()
        .unwrap()
        .contains("not a FIT file"));
    assert_eq!(rows[1]["stored"], true);
    assert!(rows[2]["error"].as_str().is_some());
    assert_eq!(workouts(&db), 1);

    // Without --json the error is one line on stderr.
    let out = fitedge(&db, &["import", &junk.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("junk.fit"));
}

#[test]
fn a_damaged_file_is_partly_recovered_and_says_so() {
    let Some(fit) = fitedge_tests::fit_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("f.db");
    let out = fitedge(
        &db,
        &[
            "import",
            "--json",
            &file(&fit, "strava-android-app-201.10-b1218918.fit"),
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    let rows = json(&out);
    assert_eq!(rows.len(), 1);
    let w = rows[0]["warnings"][0].as_str().unwrap();
    assert!(w.contains("damaged at byte"), "{w}");
}

#[test]
fn importing_twice_stores_once() {
    let Some(fit) = fitedge_tests::fit_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("f.db");
    let f = file(&fit, "sample-activity.fit");
    assert_eq!(
        fitedge(&db, &["import", "--json", &f]).status.code(),
        Some(0)
    );
    let out = fitedge(&db, &["import", "--json", &f]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)[0]["note"], "already imported");
    assert_eq!(workouts(&db), 1);
}

#[test]
fn profile_overrides_change_what_depends_on_them() {
    let Some(fit) = fitedge_tests::fit_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let f = file(&fit, "2013-02-06-12-11-14.fit");
    let kcal = |weight: &str| {
        let db: PathBuf = tmp.path().join(format!("{weight}.db"));
        let out = fitedge(&db, &["import", "--json", "--weight", weight, &f]);
        json(&out)[0]["calories_kcal"].as_f64().unwrap()
    };
    let (light, heavy) = (kcal("50"), kcal("100"));
    assert!(heavy > light * 1.5, "{light} vs {heavy}");
    let db = tmp.path().join("x.db");
    let out = fitedge(
        &db,
        &[
            "import",
            "--ftp",
            "250",
            "--json",
            &file(&fit, "sample-activity-indoor-trainer.fit"),
        ],
    );
    let r = &json(&out)[0];
    assert!((r["tss"].as_f64().unwrap() - 52.0).abs() < 5.0, "{r}");
}

#[test]
fn bad_usage_exits_2_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("f.db");
    let out = fitedge(&db, &["import", "--weight", "5000", "x.fit"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside"));
    assert_eq!(fitedge(&db, &["import"]).status.code(), Some(2));
}
