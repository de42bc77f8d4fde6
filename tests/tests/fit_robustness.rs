//! Damaged FIT input never panics the importer: truncations and byte flips of real recordings,
//! and the committed fuzz regressions (core/fuzz/regressions/), are refused or recovered.

// Test helpers may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use fitedge_core::fit;
use fitedge_core::Profile;
use proptest::prelude::*;

fn corpus() -> Vec<Vec<u8>> {
    let Some(dir) = fitedge_tests::fit_dir() else {
        return vec![];
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "fit"))
        .collect();
    files.sort();
    // The small files keep the test fast; they cover every message type that matters.
    files
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .filter(|b| b.len() < 90_000)
        .collect()
}

fn import_must_not_panic(bytes: &[u8]) {
    match fit::import(bytes, Profile::default(), "fuzz") {
        Ok(imp) => {
            for s in &imp.sessions {
                let m = &s.summary.metrics;
                assert!(m.elapsed_s.is_finite() && m.elapsed_s >= 0.0);
                assert!(m.calories_kcal.is_finite());
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[test]
fn every_truncation_of_a_small_file_is_handled() {
    let files = corpus();
    let Some(small) = files.iter().min_by_key(|b| b.len()) else {
        return;
    };
    for len in 0..small.len() {
        import_must_not_panic(&small[..len]);
    }
}

#[test]
fn committed_fuzz_regressions_replay() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/fuzz/regressions/fit_import");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        import_must_not_panic(&bytes);
        n += 1;
    }
    assert!(n > 0, "no regression inputs in {}", dir.display());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]

    #[test]
    fn flipped_bytes_are_refused_or_recovered(file in any::<prop::sample::Index>(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let files = corpus();
        prop_assume!(!files.is_empty());
        let mut bytes = file.get(&files).clone();
        for (i, v) in flips {
            let k = i.index(bytes.len());
            bytes[k] = v;
        }
        import_must_not_panic(&bytes);
    }
}

/// The Strava recording is damaged: its last readable record is dated 2085. That record is
/// reported and left out, so the workout ends with the real records instead of being stretched
/// to the 24-hour limit.
#[test]
fn a_damaged_timestamp_decades_later_is_left_out_and_reported() {
    // Without the recordings, fit_dir has said so loudly (or failed).
    let Some(dir) = fitedge_tests::fit_dir() else {
        return;
    };
    let bytes = std::fs::read(dir.join("strava-android-app-201.10-b1218918.fit")).unwrap();
    let imp = fit::import(&bytes, Profile::default(), "strava").unwrap();
    assert_eq!(imp.sessions.len(), 1);
    let m = &imp.sessions[0].summary.metrics;
    assert!(m.elapsed_s < 3600.0, "elapsed {} s", m.elapsed_s);
    assert!(m.timer_s < 3600.0, "timer {} s", m.timer_s);
    assert!(
        imp.warnings
            .iter()
            .any(|w| w.contains("1 record(s) not used") && w.contains("2085-12-21")),
        "{:?}",
        imp.warnings
    );
}
