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
        for k in ["distance_m", "timer_s", "calories_kcal"] {
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
