//! `fitedge import`.

use std::io::IsTerminal;
use std::path::Path;

use fitedge_core::fit::{self, DeviceTotals, FitImport, ImportedSession};
use fitedge_core::formats::{self, Format};
use fitedge_core::store::Saved;
use fitedge_core::Profile;
use fitedge_core::{Clock, SystemClock};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::ImportArgs;

pub const AFTER_HELP: &str = "\
Every figure printed is the engine's own computation from the file's samples; the device's own
totals are shown beside them under \"device\". Sessions shorter than one minute are computed
and shown but not stored (a workout under a minute is not recorded). Importing the same file
again stores nothing new.

Exit codes: 0 ok; 1 a file could not be read; 2 bad usage; 3 part of a file was not used (a
damaged file only partly recovered, or samples outside its sessions or past the 24-hour limit;
each loss is reported as a warning); 4 database error. When several files end differently, the
most serious wins: 4, then 1, then 3 (an unreadable file is never hidden behind a partly used
one). A file that cannot be stored is reported (\"error\": \"could not store: ...\" in JSON)
and the remaining files are still imported; the command then exits 4.";

const EXIT_UNREADABLE: u8 = 1;
const EXIT_PARTIAL: u8 = 3;
const EXIT_DATABASE: u8 = 4;

/// How serious an exit code is: database error, then unreadable file, then partly used file.
fn severity(code: u8) -> u8 {
    match code {
        EXIT_DATABASE => 3,
        EXIT_UNREADABLE => 2,
        EXIT_PARTIAL => 1,
        _ => 0,
    }
}

/// The exit code of a run from the codes of its files: the most serious one.
fn worst(a: u8, b: u8) -> u8 {
    if severity(b) > severity(a) {
        b
    } else {
        a
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn round(v: Option<f64>, places: i32) -> Value {
    match v {
        Some(x) if x.is_finite() => {
            let k = 10f64.powi(places);
            json!((x * k).round() / k)
        }
        _ => Value::Null,
    }
}

fn device_json(d: &DeviceTotals) -> Value {
    json!({
        "sport": d.sport,
        "sub_sport": d.sub_sport,
        "start_time": d.start_time,
        "elapsed_s": d.elapsed_s,
        "timer_s": d.timer_s,
        "distance_m": d.distance_m,
        "ascent_m": d.ascent_m,
        "descent_m": d.descent_m,
        "calories_kcal": d.calories_kcal,
        "avg_hr": d.avg_hr,
        "max_hr": d.max_hr,
        "avg_power_w": d.avg_power_w,
        "max_power_w": d.max_power_w,
        "normalized_power_w": d.normalized_power_w,
        "tss": d.tss,
    })
}

fn session_json(
    file: &str,
    s: &ImportedSession,
    saved: Option<&Saved>,
    warnings: &[String],
) -> Value {
    let w = &s.summary;
    let m = &w.metrics;
    let (stored, note) = match (saved, &s.not_recorded) {
        (_, Some(e)) => (false, Some(e.to_string())),
        (Some(Saved::AlreadyImported), _) => (false, Some("already imported".to_string())),
        (Some(Saved::Stored { .. }), _) => (true, None),
        _ => (false, None),
    };
    let pr: Vec<Value> = match saved {
        Some(Saved::Stored { events }) => events
            .iter()
            .filter_map(|e| match e {
                fitedge_core::DomainEvent::PersonalRecordAchieved {
                    record,
                    value,
                    previous,
                    ..
                } => Some(json!({"record": record, "value": value, "previous": previous})),
                _ => None,
            })
            .collect(),
        _ => vec![],
    };
    json!({
        "file": file,
        "session": s.index,
        "workout_id": w.id.0,
        "sport": m.sport,
        "sport_detected": m.sport_detected,
        "start_time": w.start_time.to_rfc3339(),
        "elapsed_s": round(Some(m.elapsed_s), 1),
        "timer_s": round(Some(m.timer_s), 1),
        "moving_s": round(Some(m.moving_s), 1),
        "distance_m": round(m.distance_m, 1),
        "distance_source": m.distance_source,
        "avg_speed_mps": round(m.avg_speed_mps, 3),
        "ascent_m": round(m.ascent_m, 1),
        "descent_m": round(m.descent_m, 1),
        "calories_kcal": round(Some(m.calories_kcal), 0),
        "calories_method": m.calories_method,
        "avg_hr": round(m.avg_hr_bpm, 1),
        "max_hr": round(m.max_hr_bpm, 0),
        "avg_power_w": round(m.avg_power_w, 1),
        "max_power_w": round(m.max_power_w, 0),
        "normalized_power_w": round(m.normalized_power_w, 1),
        "intensity_factor": round(m.intensity_factor, 3),
        "tss": round(m.tss, 1),
        "trimp": round(m.trimp, 1),
        "vo2max_estimate": round(m.vo2max_estimate, 1),
        "samples": w.samples,
        "rejected": w.rejected,
        "flagged": w.flagged,
        "validation": w.validation,
        "laps": w.laps.len(),
        "stored": stored,
        "note": note,
        "personal_records": pr,
        "warnings": warnings,
        "device": device_json(&s.device),
    })
}

fn fmt_duration(s: f64) -> String {
    let s = s.round() as i64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

fn print_human(file: &str, imp: &FitImport, saved: &[Saved]) {
    outln!(
        "{file}{}",
        imp.device
            .as_ref()
            .map(|d| format!("  ({d})"))
            .unwrap_or_default()
    );
    for w in &imp.warnings {
        outln!("  warning: {w}");
    }
    for (i, s) in imp.sessions.iter().enumerate() {
        let m = &s.summary.metrics;
        let status = match (&s.not_recorded, saved.get(i)) {
            (Some(e), _) => format!("not stored: {e}"),
            (_, Some(Saved::AlreadyImported)) => "already imported".into(),
            (_, Some(Saved::Stored { .. })) => "stored".into(),
            _ => String::new(),
        };
        outln!(
            "  #{} {}{} {}  {}  {:.2} km  {} timer  ↑{:.0} m  {:.0} kcal  HR {}/{}  NP {}  [{}]",
            s.index,
            m.sport,
            if m.sport_detected { " (detected)" } else { "" },
            s.summary.start_time,
            fmt_duration(m.elapsed_s),
            m.distance_m.unwrap_or(0.0) / 1000.0,
            fmt_duration(m.timer_s),
            m.ascent_m.unwrap_or(0.0),
            m.calories_kcal,
            m.avg_hr_bpm.map_or("-".into(), |v| format!("{v:.0}")),
            m.max_hr_bpm.map_or("-".into(), |v| format!("{v:.0}")),
            m.normalized_power_w
                .map_or("-".into(), |v| format!("{v:.0} W")),
            status,
        );
        if s.summary.rejected > 0 || s.summary.flagged > 0 {
            outln!(
                "     {} samples, {} rejected, {} flagged",
                s.summary.samples,
                s.summary.rejected,
                s.summary.flagged
            );
        }
    }
}

pub fn run(db: &Path, args: &ImportArgs) -> u8 {
    let store = match crate::open_store(db) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fitedge: {e:#}");
            return EXIT_DATABASE;
        }
    };
    let clock = SystemClock;
    let overrides = args.profile();
    let bar = if std::io::stderr().is_terminal() && args.files.len() > 1 {
        let b = ProgressBar::new(args.files.len() as u64);
        b.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut exit = 0u8;
    let mut out: Vec<Value> = vec![];
    for path in &args.files {
        let name = path.display().to_string();
        bar.set_message(name.clone());
        let result = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let hash = sha256_hex(&bytes);
                let ext = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase);
                let result = match ext.as_deref().and_then(|e| e.parse::<Format>().ok()) {
                    Some(format) => formats::import_with_warnings(format, &bytes, overrides, &hash)
                        .map(|(sessions, warnings)| FitImport {
                            sessions,
                            warnings,
                            file_profile: Profile::default(),
                            device: None,
                        }),
                    None => fit::import(&bytes, overrides, &hash),
                };
                result.map(|imp| (imp, hash)).map_err(|e| e.to_string())
            });
        bar.inc(1);
        let (imp, hash) = match result {
            Ok(x) => x,
            Err(e) => {
                exit = worst(exit, EXIT_UNREADABLE);
                if args.json {
                    out.push(json!({"file": name, "error": e}));
                } else {
                    bar.suspend(|| eprintln!("fitedge: {name}: {e}"));
                }
                continue;
            }
        };
        if !imp.warnings.is_empty() {
            exit = worst(exit, EXIT_PARTIAL);
        }
        // The file's sessions are stored in one transaction: a failure stores none of them.
        // The other files are still tried (each says whether it was stored), so a script sees
        // exactly what is in the database; the command exits with the database code.
        let saved = match store.save_import(&name, &hash, &imp.sessions, clock.now()) {
            Ok(s) => s,
            Err(e) => {
                exit = worst(exit, EXIT_DATABASE);
                let e = format!("could not store: {e}");
                if args.json {
                    out.push(json!({"file": name, "error": e}));
                } else {
                    bar.suspend(|| eprintln!("fitedge: {name}: {e}"));
                }
                continue;
            }
        };
        if args.json {
            for (i, s) in imp.sessions.iter().enumerate() {
                out.push(session_json(&name, s, saved.get(i), &imp.warnings));
            }
        } else {
            bar.suspend(|| print_human(&name, &imp, &saved));
        }
    }
    bar.finish_and_clear();
    if args.json {
        match serde_json::to_string_pretty(&out) {
            Ok(s) => outln!("{s}"),
            Err(e) => {
                eprintln!("fitedge: {e}");
                return EXIT_DATABASE;
            }
        }
    }
    exit
}
