//! A replay of shared FIT recordings through synthesised notifications, the sensor hub and the
//! recorder gives the same summary as importing the file, within the tolerances of the core's
//! accuracy test (tests/tests/accuracy.rs).

// Tests may unwrap and print: a failure is the point, and the table is for people.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use fitedge_core::fit;
use fitedge_core::metrics::DistanceSource;
use fitedge_core::Profile;
use fitedge_devices::derive::WheelCrank;
use fitedge_devices::transport::replay::replay_session;

fn within_pct(a: f64, b: f64, pct: f64) -> bool {
    if a == 0.0 {
        return b.abs() < 1e-6;
    }
    ((b - a) / a).abs() * 100.0 <= pct
}

const FILES: [&str; 6] = [
    "Edge810-Vector-2013-08-16-15-35-10.fit",
    "garmin-fenix-5-run.fit",
    "garmin-edge-820-bike.fit",
    "hrv-activity.fit",
    "2019-02-17-062644-ELEMNT-297E-195-0.fit",
    "activity-small-fenix2-run.fit",
];

#[tokio::test]
async fn replay_gives_the_import_summary() {
    let Some(dir) = fitedge_tests::fit_dir() else {
        return;
    };
    let mut failures = vec![];
    let mut compared = 0;
    println!(
        "\n{:<42} {:>2} {:<18} {:>11} {:>11}  ok",
        "file", "s", "metric", "import", "replay"
    );
    for file in FILES {
        let bytes = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let imp = fit::import(&bytes, Profile::default(), file).unwrap();
        for (i, s) in imp.sessions.iter().enumerate() {
            let r = replay_session(s, WheelCrank::DEFAULT_CIRCUMFERENCE_M, None).await;
            assert!(r.report.notifications > 0, "{file}/{i}: nothing replayed");
            let Some(rep) = r.summary else {
                failures.push(format!(
                    "{file}/{i}: replay gave no summary ({:?})",
                    r.report.control_errors
                ));
                continue;
            };
            let (a, b) = (&s.summary.metrics, &rep.metrics);
            let gps = a.distance_source == Some(DistanceSource::Gps);
            let dist_tol = if gps { 3.0 } else { 1.0 };
            let checks: Vec<(&str, Option<f64>, Option<f64>, bool)> = {
                let pair =
                    |x: Option<f64>, y: Option<f64>, ok: &dyn Fn(f64, f64) -> bool| match (x, y) {
                        (Some(x), Some(y)) => ok(x, y),
                        (None, None) => true,
                        _ => false,
                    };
                vec![
                    (
                        "distance_m",
                        a.distance_m,
                        b.distance_m,
                        pair(a.distance_m, b.distance_m, &|x, y| {
                            within_pct(x, y, dist_tol) || (x - y).abs() < 5.0
                        }),
                    ),
                    (
                        "elapsed_s",
                        Some(a.elapsed_s),
                        Some(b.elapsed_s),
                        (a.elapsed_s - b.elapsed_s).abs() <= 1.0,
                    ),
                    (
                        "timer_s",
                        Some(a.timer_s),
                        Some(b.timer_s),
                        within_pct(a.timer_s, b.timer_s, 1.0),
                    ),
                    (
                        "avg_hr",
                        a.avg_hr_bpm,
                        b.avg_hr_bpm,
                        pair(a.avg_hr_bpm, b.avg_hr_bpm, &|x, y| (x - y).abs() <= 1.0),
                    ),
                    (
                        "max_hr",
                        a.max_hr_bpm,
                        b.max_hr_bpm,
                        pair(a.max_hr_bpm, b.max_hr_bpm, &|x, y| (x - y).abs() < 0.5),
                    ),
                    (
                        "ascent_m",
                        a.ascent_m,
                        b.ascent_m,
                        pair(a.ascent_m, b.ascent_m, &|x, y| {
                            (x - y).abs() <= (x * 0.2).max(10.0)
                        }),
                    ),
                    (
                        "calories_kcal",
                        Some(a.calories_kcal),
                        Some(b.calories_kcal),
                        within_pct(a.calories_kcal, b.calories_kcal, 25.0),
                    ),
                    (
                        "normalized_power_w",
                        a.normalized_power_w,
                        b.normalized_power_w,
                        pair(a.normalized_power_w, b.normalized_power_w, &|x, y| {
                            within_pct(x, y, 3.0)
                        }),
                    ),
                    (
                        "tss",
                        a.tss,
                        b.tss,
                        pair(a.tss, b.tss, &|x, y| within_pct(x, y, 3.0)),
                    ),
                ]
            };
            for (metric, x, y, ok) in checks {
                compared += 1;
                let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
                println!(
                    "{file:<42} {i:>2} {metric:<18} {:>11} {:>11}  {}",
                    f(x),
                    f(y),
                    if ok { "ok" } else { "FAIL" }
                );
                if !ok {
                    failures.push(format!("{file}/{i} {metric}: import {x:?}, replay {y:?}"));
                }
            }
        }
    }
    println!(
        "\n{compared} comparisons, {} outside tolerance",
        failures.len()
    );
    assert!(compared > 0);
    assert!(failures.is_empty(), "{failures:#?}");
}
