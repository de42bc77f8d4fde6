//! Damaged GPX and TCX input never panics the importers: truncations and byte flips of
//! documents with several tracks, and the committed fuzz regressions
//! (core/fuzz/regressions/xml_import/), are refused or imported.

// Test helpers may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use fitedge_core::formats::{import, Format};
use fitedge_core::Profile;
use proptest::prelude::*;

fn time(s: i64) -> String {
    fitedge_core::Timestamp(1_714_521_600_000 + s * 1000).to_rfc3339()
}

fn gpx() -> String {
    let mut x = String::from(
        r#"<?xml version="1.0"?><gpx version="1.1" creator="t" xmlns="http://www.topografix.com/GPX/1/1" xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v1">"#,
    );
    for (k, sport) in ["running", "cycling"].iter().enumerate() {
        x.push_str(&format!("<trk><type>{sport}</type><trkseg>"));
        for i in 0..40 {
            let t = k as i64 * 7200 + i * 5;
            x.push_str(&format!(
                r#"<trkpt lat="{:.6}" lon="7.0"><ele>{}</ele><time>{}</time><extensions><gpxtpx:TrackPointExtension><gpxtpx:hr>{}</gpxtpx:hr><gpxtpx:cad>80</gpxtpx:cad></gpxtpx:TrackPointExtension></extensions></trkpt>"#,
                45.0 + i as f64 * 0.0001,
                100 + i,
                time(t),
                120 + i
            ));
        }
        x.push_str("</trkseg></trk>");
    }
    x + "</gpx>"
}

fn tcx() -> String {
    let mut x = String::from(
        r#"<TrainingCenterDatabase xmlns="http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2"><Activities>"#,
    );
    for (k, sport) in ["Running", "Biking"].iter().enumerate() {
        let t0 = k as i64 * 7200;
        x.push_str(&format!(
            r#"<Activity Sport="{sport}"><Id>{0}</Id><Lap StartTime="{0}"><TotalTimeSeconds>195</TotalTimeSeconds><DistanceMeters>400</DistanceMeters><AverageHeartRateBpm><Value>140</Value></AverageHeartRateBpm><Track>"#,
            time(t0)
        ));
        for i in 0..40 {
            x.push_str(&format!(
                "<Trackpoint><Time>{}</Time><Position><LatitudeDegrees>{:.6}</LatitudeDegrees><LongitudeDegrees>7.0</LongitudeDegrees></Position><DistanceMeters>{}</DistanceMeters><HeartRateBpm><Value>{}</Value></HeartRateBpm></Trackpoint>",
                time(t0 + i * 5),
                45.0 + i as f64 * 0.0001,
                i * 10,
                120 + i
            ));
        }
        x.push_str("</Track></Lap></Activity>");
    }
    x + "</Activities></TrainingCenterDatabase>"
}

fn import_must_not_panic(bytes: &[u8]) {
    for format in [Format::Gpx, Format::Tcx] {
        match import(format, bytes, Profile::default(), "fuzz") {
            Ok(sessions) => {
                assert!(!sessions.is_empty());
                for s in &sessions {
                    let m = &s.summary.metrics;
                    assert!(m.elapsed_s.is_finite() && m.elapsed_s >= 0.0);
                    assert!(m.calories_kcal.is_finite());
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

#[test]
fn the_documents_import_as_two_workouts_each() {
    for (format, doc) in [(Format::Gpx, gpx()), (Format::Tcx, tcx())] {
        let sessions = import(format, doc.as_bytes(), Profile::default(), "k").unwrap();
        assert_eq!(sessions.len(), 2, "{format:?}");
    }
}

#[test]
fn every_truncation_is_handled() {
    for doc in [gpx(), tcx()] {
        let bytes = doc.as_bytes();
        for len in (0..bytes.len()).step_by(7) {
            import_must_not_panic(&bytes[..len]);
        }
    }
}

#[test]
fn committed_fuzz_regressions_replay() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/fuzz/regressions/xml_import");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        import_must_not_panic(&bytes);
        n += 1;
    }
    assert!(n > 0, "no regression inputs in {}", dir.display());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn flipped_bytes_are_refused_or_imported(tcx_doc in any::<bool>(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = if tcx_doc { tcx() } else { gpx() }.into_bytes();
        for (i, v) in flips {
            let k = i.index(bytes.len());
            bytes[k] = v;
        }
        import_must_not_panic(&bytes);
    }
}
