//! Accuracy against real devices: every session of every shared FIT recording, compared with
//! the device's own totals in MANIFEST.json, with the tolerances of the recording-engine issue.
//! Prints the whole table so anyone can see where the engine stands, and fails when any metric
//! passes on fewer sessions than the recorded floor.

use std::collections::BTreeMap;

use fitedge_core::fit;
use fitedge_core::metrics::DistanceSource;
use fitedge_core::Profile;
use serde_json::Value;

struct Row {
    file: String,
    session: usize,
    metric: &'static str,
    device: f64,
    engine: Option<f64>,
    tolerance: String,
    ok: bool,
    /// How the engine got its figure, where it has a choice (the calorie method).
    note: String,
}

fn within_pct(device: f64, engine: f64, pct: f64) -> bool {
    if device == 0.0 {
        return engine.abs() < 1e-6;
    }
    ((engine - device) / device).abs() * 100.0 <= pct
}

#[test]
fn engine_matches_devices_within_tolerance() {
    let Some(dir) = fitedge_tests::fit_dir() else {
        return;
    };
    let manifest: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("MANIFEST.json")).unwrap()).unwrap();
    let mut rows: Vec<Row> = vec![];
    let mut refused = vec![];
    for entry in &manifest {
        let file = entry["file"].as_str().unwrap().to_string();
        let bytes = std::fs::read(dir.join(&file)).unwrap();
        let Some(sessions) = entry["sessions"].as_array() else {
            // The reference decoder could not read it: ours must not panic, and must either
            // refuse with an error or report what it recovered.
            match fit::import(&bytes, Profile::default(), &file) {
                Ok(imp) => refused.push(format!(
                    "{file}: recovered {} session(s); warnings: {:?}",
                    imp.sessions.len(),
                    imp.warnings
                )),
                Err(e) => refused.push(format!("{file}: refused: {e}")),
            }
            continue;
        };
        let imp = fit::import(&bytes, Profile::default(), &file)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(imp.sessions.len(), sessions.len(), "{file}: session count");
        let channels: Vec<&str> = entry["record_channels"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let sensor_distance = channels.contains(&"distance") || channels.contains(&"speed");
        for (i, (dev, ours)) in sessions.iter().zip(&imp.sessions).enumerate() {
            let summary = Some(ours.summary.clone());
            // Sessions under a minute are computed but not recorded; the comparison uses the
            // figures the engine computed for them anyway (see fit::ImportedSession).
            let m = summary.as_ref().map(|s| &s.metrics);
            let get = |k: &str| dev.get(k).and_then(Value::as_f64);
            let mut add = |metric: &'static str,
                           device: Option<f64>,
                           engine: Option<f64>,
                           tol: String,
                           ok: &dyn Fn(f64, f64) -> bool| {
                if let Some(d) = device {
                    let ok_ = engine.is_some_and(|e| ok(d, e));
                    rows.push(Row {
                        file: file.clone(),
                        session: i,
                        metric,
                        device: d,
                        engine,
                        tolerance: tol,
                        ok: ok_,
                        note: match (metric, m) {
                            ("calories_kcal", Some(m)) => format!("{:?}", m.calories_method),
                            _ => String::new(),
                        },
                    });
                }
            };
            let gps_only = m.is_some_and(|m| m.distance_source == Some(DistanceSource::Gps))
                && !sensor_distance;
            let dist_tol = if gps_only { 3.0 } else { 1.0 };
            add(
                "distance_m",
                get("total_distance"),
                m.and_then(|m| m.distance_m.or(Some(0.0))),
                format!("±{dist_tol}%"),
                &|d, e| within_pct(d, e, dist_tol),
            );
            add(
                "elapsed_s",
                get("total_elapsed_time"),
                m.map(|m| m.elapsed_s),
                "±1 s".into(),
                &|d, e| (d - e).abs() <= 1.0,
            );
            add(
                "timer_s",
                get("total_timer_time"),
                m.map(|m| m.timer_s),
                "±1%".into(),
                &|d, e| within_pct(d, e, 1.0),
            );
            // A device total of 0 bpm means no heart-rate sensor: nothing to compare.
            let hr = |k| get(k).filter(|v| *v > 0.0);
            add(
                "avg_hr",
                hr("avg_heart_rate"),
                m.and_then(|m| m.avg_hr_bpm),
                "±1 bpm".into(),
                &|d, e| (d - e).abs() <= 1.0,
            );
            add(
                "max_hr",
                hr("max_heart_rate"),
                m.and_then(|m| m.max_hr_bpm),
                "exact".into(),
                &|d, e| (d - e).abs() < 0.5,
            );
            add(
                "ascent_m",
                get("total_ascent"),
                m.map(|m| m.ascent_m.unwrap_or(0.0)),
                "±20% or ±10 m".into(),
                &|d, e| (d - e).abs() <= (d * 0.2).max(10.0),
            );
            // 0 kcal from a device means it did not compute calories.
            add(
                "calories_kcal",
                get("total_calories").filter(|c| *c > 0.0),
                m.map(|m| m.calories_kcal),
                "±25%".into(),
                &|d, e| within_pct(d, e, 25.0),
            );
            if get("threshold_power").is_some() {
                add(
                    "normalized_power_w",
                    get("normalized_power"),
                    m.and_then(|m| m.normalized_power_w),
                    "±3%".into(),
                    &|d, e| within_pct(d, e, 3.0),
                );
                add(
                    "tss",
                    get("training_stress_score"),
                    m.and_then(|m| m.tss),
                    "±3%".into(),
                    &|d, e| within_pct(d, e, 3.0),
                );
            }
        }
    }

    println!(
        "\n{:<42} {:>2} {:<19} {:>11} {:>11} {:>8}  {:<14} {:<4} {}",
        "file", "s", "metric", "device", "engine", "error", "tolerance", "ok", "how"
    );
    for r in &rows {
        let (eng, err) = match r.engine {
            Some(e) if r.device != 0.0 => (
                format!("{e:.1}"),
                format!("{:+.1}%", (e - r.device) / r.device * 100.0),
            ),
            Some(e) => (format!("{e:.1}"), format!("{:+.1}", e - r.device)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<42} {:>2} {:<19} {:>11.1} {:>11} {:>8}  {:<14} {:<4} {}",
            r.file,
            r.session,
            r.metric,
            r.device,
            eng,
            err,
            r.tolerance,
            if r.ok { "ok" } else { "FAIL" },
            r.note
        );
    }
    let mut per_metric: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for r in &rows {
        let e = per_metric.entry(r.metric).or_default();
        e.1 += 1;
        if r.ok {
            e.0 += 1;
        }
    }
    println!("\nper metric (within tolerance / compared; target 90 %):");
    let mut regressed = vec![];
    let mut below_target = vec![];
    for (metric, (ok, n)) in &per_metric {
        let pct = *ok as f64 / *n as f64 * 100.0;
        let floor = FLOOR
            .iter()
            .find(|(m, _)| m == metric)
            .map_or(*n, |(_, f)| *f);
        let mark = if pct >= 90.0 {
            ""
        } else {
            "  << BELOW THE 90 % TARGET"
        };
        println!("  {metric:<19} {ok:>3}/{n:<3} {pct:5.1}%  (floor {floor}){mark}");
        if *ok < floor {
            regressed.push(format!("{metric}: {ok}/{n}, was {floor}"));
        }
        if pct < 90.0 {
            below_target.push(format!("{metric} {pct:.1}%"));
        }
    }
    println!("\nfiles the reference decoder could not read:");
    for r in &refused {
        println!("  {r}");
    }
    if !below_target.is_empty() {
        println!(
            "\n!!! NOT YET AT THE 90 % TARGET: {} !!!",
            below_target.join(", ")
        );
    }
    assert!(regressed.is_empty(), "accuracy regressed: {regressed:?}");
}

/// The pass counts measured on 2026-12-06 (see BENCHMARKS.md). A ratchet: raise a floor when
/// the engine improves; never lower one to make a change pass. Metrics below the 90 % target
/// are listed in the note with the reasons.
const FLOOR: [(&str, usize); 9] = [
    ("ascent_m", 24),
    ("avg_hr", 18),
    ("calories_kcal", 21),
    ("distance_m", 29),
    ("elapsed_s", 23),
    ("max_hr", 18),
    ("normalized_power_w", 4),
    ("timer_s", 27),
    ("tss", 4),
];
