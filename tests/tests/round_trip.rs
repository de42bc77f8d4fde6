//! GPX and TCX round trips: a real recording imported from FIT, stored, exported and imported
//! again keeps distance, time and heart rate within the recording engine's tolerances.

// Test helpers may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use fitedge_core::crypto::StorageKey;
use fitedge_core::formats::{self, Format};
use fitedge_core::store::{Saved, Store};
use fitedge_core::{fit, Profile, Timestamp};

fn check(file: &str, session: usize, format: Format) {
    let Some(dir) = fitedge_tests::fit_dir() else {
        return;
    };
    let bytes = std::fs::read(dir.join(file)).unwrap();
    let imp = fit::import(&bytes, Profile::default(), file).unwrap();
    let store = Store::open_in_memory(Some(StorageKey::new(&[1; 32]).unwrap())).unwrap();
    let saved = store
        .save_import(file, file, &imp.sessions, Timestamp(0))
        .unwrap();
    assert!(matches!(saved[session], Saved::Stored { .. }));
    let id = imp.sessions[session].summary.id.0.clone();
    let original = store.summary(&id).unwrap().metrics;
    let samples = store.samples(&id).unwrap();
    let text = formats::export(format, &store.summary(&id).unwrap(), &samples).unwrap();
    let mut back = formats::import(format, text.as_bytes(), Profile::default(), "rt").unwrap();
    assert_eq!(
        back.len(),
        1,
        "one workout exports as one track or activity"
    );
    let m = back.remove(0).summary.metrics;
    let label = format!("{file} #{session} via {format:?}");
    let (d0, d1) = (original.distance_m.unwrap(), m.distance_m.unwrap());
    // TCX carries the distance channel (±1 %); GPX only the track (±3 %, GPS-only tolerance).
    let tol = if format == Format::Tcx { 0.01 } else { 0.03 };
    assert!(
        (d1 - d0).abs() <= d0 * tol,
        "{label}: distance {d0} -> {d1}"
    );
    assert!(
        (m.elapsed_s - original.elapsed_s).abs() <= 1.0,
        "{label}: elapsed {} -> {}",
        original.elapsed_s,
        m.elapsed_s
    );
    assert!(
        (m.timer_s - original.timer_s).abs() <= original.timer_s * 0.01,
        "{label}: timer"
    );
    let (h0, h1) = (original.avg_hr_bpm.unwrap(), m.avg_hr_bpm.unwrap());
    assert!((h1 - h0).abs() <= 1.0, "{label}: avg HR {h0} -> {h1}");
    assert_eq!(original.max_hr_bpm, m.max_hr_bpm, "{label}: max HR");
    assert_eq!(m.sport, original.sport, "{label}: sport");
}

#[test]
fn edge810_ride_round_trips_through_gpx_and_tcx() {
    check("Edge810-Vector-2013-08-16-15-35-10.fit", 0, Format::Gpx);
    check("Edge810-Vector-2013-08-16-15-35-10.fit", 0, Format::Tcx);
}

#[test]
fn a_run_round_trips_through_gpx_and_tcx() {
    check("2013-02-06-12-11-14.fit", 0, Format::Gpx);
    check("2013-02-06-12-11-14.fit", 0, Format::Tcx);
    check("sample_mulitple_header.fit", 4, Format::Tcx);
}

#[test]
fn an_indoor_ride_has_no_gpx_but_round_trips_through_tcx() {
    let Some(dir) = fitedge_tests::fit_dir() else {
        return;
    };
    let bytes = std::fs::read(dir.join("hrv-activity.fit")).unwrap();
    let imp = fit::import(&bytes, Profile::default(), "x").unwrap();
    let s = &imp.sessions[0];
    let e = formats::export(Format::Gpx, &s.summary, &s.samples).unwrap_err();
    assert!(e.to_string().contains("no GPS track"));
    check("hrv-activity.fit", 0, Format::Tcx);
}
