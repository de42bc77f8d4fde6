//! `fitedge list`, `summary`, `stats`, `records`, `export` and `gear` on a real history.

// Test helpers may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fitedge(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fitedge"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

fn ok_json(out: Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_history_can_be_listed_summarised_counted_exported_and_geared() {
    let Some(fit) = fitedge_tests::fit_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("h.db");
    let files = [
        "2013-02-06-12-11-14.fit",
        "Edge810-Vector-2013-08-16-15-35-10.fit",
        "hrv-activity.fit",
        "sample-activity.fit",
    ];
    let paths: Vec<String> = files
        .iter()
        .map(|f| fit.join(f).display().to_string())
        .collect();
    let mut args = vec!["import", "--json"];
    args.extend(paths.iter().map(String::as_str));
    ok_json(fitedge(&db, &args));
    // The key file was created beside the database, readable by its owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join("fitedge.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Four workouts: statistics need five.
    let st = ok_json(fitedge(&db, &["stats", "--json"]));
    assert_eq!(st["stats"]["status"], "not_enough_data");
    assert_eq!(st["stats"]["workouts"], 4);
    ok_json(fitedge(
        &db,
        &[
            "import",
            "--json",
            &fit.join("garmin-edge-500-activity.fit")
                .display()
                .to_string(),
        ],
    ));
    let st = ok_json(fitedge(&db, &["stats", "--period", "year", "--json"]));
    assert_eq!(st["stats"]["status"], "ok");

    // Paging: two pages of 3 and 2, newest first, without overlap.
    let p1 = ok_json(fitedge(&db, &["list", "--limit", "3", "--json"]));
    let next = p1["next"].as_str().unwrap().to_string();
    let p2 = ok_json(fitedge(
        &db,
        &["list", "--limit", "3", "--after", &next, "--json"],
    ));
    let ids: Vec<&str> = p1["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["items"].as_array().unwrap())
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), 5);
    assert!(p2["next"].is_null());
    let running = ok_json(fitedge(&db, &["list", "--sport", "running", "--json"]));
    assert_eq!(running["items"].as_array().unwrap().len(), 1);
    let run_id = running["items"][0]["id"].as_str().unwrap().to_string();

    // Summary by a unique prefix; an unknown id is one clear line and exit 1.
    let s = ok_json(fitedge(&db, &["summary", &run_id[..8], "--json"]));
    assert_eq!(s["summary"]["id"], run_id.as_str());
    let out = fitedge(&db, &["summary", "ffffffff"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    // Export and import again.
    for ext in ["gpx", "tcx"] {
        let file = tmp.path().join(format!("run.{ext}"));
        let out = fitedge(
            &db,
            &["export", &run_id[..8], "-o", &file.display().to_string()],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let back = ok_json(fitedge(
            &db,
            &["import", "--json", &file.display().to_string()],
        ));
        let d0 = s["summary"]["distance_m"].as_f64().unwrap();
        let d1 = back[0]["distance_m"].as_f64().unwrap();
        assert!((d1 - d0).abs() < d0 * 0.03, "{ext}: {d0} vs {d1}");
    }
    let out = fitedge(&db, &["export", &run_id[..8]]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no format, no output file: refused"
    );

    // Gear.
    let out = fitedge(
        &db,
        &[
            "gear",
            "add",
            "--kind",
            "shoes",
            "--name",
            "Racers",
            "--life-km",
            "900",
        ],
    );
    assert!(out.status.success());
    let gear = ok_json(fitedge(&db, &["gear", "list", "--json"]));
    let gid = gear[0]["id"].as_str().unwrap().to_string();
    assert!(fitedge(&db, &["gear", "assign", &run_id[..8], &gid[..8]])
        .status
        .success());
    let gear = ok_json(fitedge(&db, &["gear", "list", "--json"]));
    assert_eq!(gear[0]["workouts"], 1);
    assert!(gear[0]["distance_m"].as_f64().unwrap() > 4000.0);
    assert_eq!(
        fitedge(
            &db,
            &[
                "gear",
                "add",
                "--kind",
                "shoes",
                "--name",
                "X",
                "--life-km",
                "1200"
            ]
        )
        .status
        .code(),
        Some(1)
    );

    let recs = ok_json(fitedge(&db, &["records", "--json"]));
    assert!(recs
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["record"] == "power_20min"));
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let Some(fit) = fitedge_tests::fit_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("p.db");
    let f = fit
        .join("activity-large-fenxi2-multisport.fit")
        .display()
        .to_string();
    assert!(fitedge(&db, &["import", &f]).status.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_fitedge"))
        .arg("--db")
        .arg(&db)
        .args(["list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}
