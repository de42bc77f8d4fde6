//! `fitedge list`, `summary`, `stats`, `records`, `export` and `gear`: the stored history.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use fitedge_core::formats::{self, Format};
use fitedge_core::gear::GearKind;
use fitedge_core::store::{Cursor, ListFilter, Period, WorkoutStats};
use fitedge_core::{Clock, Sport, SystemClock, Timestamp};
use serde_json::json;

use crate::open_store;

fn parse_day(s: &str) -> Result<Timestamp, String> {
    if let Some(t) = Timestamp::parse_rfc3339(s) {
        return Ok(t);
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| Timestamp(dt.and_utc().timestamp_millis()))
        .ok_or_else(|| format!("{s:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"))
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    sport: Option<Sport>,
    /// From this day (UTC, YYYY-MM-DD) or time (RFC 3339), inclusive.
    #[arg(long, value_parser = parse_day)]
    from: Option<Timestamp>,
    /// Up to this day or time, exclusive.
    #[arg(long, value_parser = parse_day)]
    to: Option<Timestamp>,
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Continue after this cursor (printed at the end of a page).
    #[arg(long)]
    after: Option<String>,
    #[arg(long)]
    json: bool,
}

fn fmt_duration(s: f64) -> String {
    let s = s.round() as i64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

fn fmt_pace(s: f64) -> String {
    let s = s.round() as i64;
    format!("{}:{:02}", s / 60, s % 60)
}

/// The snake_case name a value serializes to (the same word the JSON output uses).
fn name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn list(db: &Path, a: &ListArgs) -> Result<()> {
    let store = open_store(db)?;
    let after = a
        .after
        .as_deref()
        .map(|c| -> Result<Cursor> {
            let (t, id) = c
                .split_once('/')
                .context("a cursor looks like 1700000000000/<id>")?;
            Ok(Cursor {
                start_time: Timestamp(t.parse().context("bad cursor time")?),
                id: id.to_string(),
            })
        })
        .transpose()?;
    let filter = ListFilter {
        sport: a.sport,
        from: a.from,
        to: a.to,
    };
    let page = store.list(&filter, a.limit, after.as_ref())?;
    let cursor = page
        .next
        .as_ref()
        .map(|c| format!("{}/{}", c.start_time.0, c.id));
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"items": page.items, "next": cursor}))?
        );
        return Ok(());
    }
    if page.items.is_empty() {
        outln!("no workouts");
    }
    for w in &page.items {
        outln!(
            "{}  {}  {:<10} {:>8.2} km  {}  {:>5.0} kcal{}",
            &w.id[..8],
            w.start_time,
            w.sport.as_str(),
            w.distance_m.unwrap_or(0.0) / 1000.0,
            fmt_duration(w.timer_s),
            w.calories_kcal,
            w.title
                .as_deref()
                .map(|t| format!("  {t}"))
                .unwrap_or_default()
        );
    }
    if let Some(c) = cursor {
        outln!("more: fitedge list --after {c}");
    }
    Ok(())
}

pub fn summary(db: &Path, id: &str, as_json: bool) -> Result<()> {
    let store = open_store(db)?;
    let s = store.summary(id)?;
    let device = store.device_totals(&s.id.0)?;
    if as_json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"summary": s, "device": device}))?
        );
        return Ok(());
    }
    let m = &s.metrics;
    outln!(
        "{}  {}{}",
        s.id,
        m.sport,
        if m.sport_detected { " (detected)" } else { "" }
    );
    outln!("  start      {}", s.start_time);
    outln!(
        "  elapsed    {}   timer {}   moving {}",
        fmt_duration(m.elapsed_s),
        fmt_duration(m.timer_s),
        fmt_duration(m.moving_s)
    );
    if let Some(d) = m.distance_m {
        outln!(
            "  distance   {:.2} km ({})",
            d / 1000.0,
            m.distance_source.map(|s| name(&s)).unwrap_or_default()
        );
    }
    if let Some(p) = m.avg_pace_s_per_km {
        outln!(
            "  pace       {}/km   speed {:.1} km/h",
            fmt_pace(p),
            m.avg_speed_mps.unwrap_or(0.0) * 3.6
        );
    }
    if let (Some(a), Some(d)) = (m.ascent_m, m.descent_m) {
        outln!("  climb      +{a:.0} m / -{d:.0} m");
    }
    outln!(
        "  energy     {:.0} kcal ({})",
        m.calories_kcal,
        name(&m.calories_method)
    );
    if let (Some(a), Some(x)) = (m.avg_hr_bpm, m.max_hr_bpm) {
        outln!(
            "  heart      avg {a:.0} bpm, max {x:.0} bpm, TRIMP {:.0}",
            m.trimp.unwrap_or(0.0)
        );
    }
    if let Some(p) = m.avg_power_w {
        outln!(
            "  power      avg {p:.0} W, NP {}, IF {}, TSS {}",
            m.normalized_power_w
                .map_or("-".into(), |v| format!("{v:.0} W")),
            m.intensity_factor.map_or("-".into(), |v| format!("{v:.2}")),
            m.tss.map_or("-".into(), |v| format!("{v:.0}"))
        );
    }
    if let Some(v) = m.vo2max_estimate {
        outln!("  VO2max     ~{v:.0} ml/kg/min (estimate)");
    }
    for e in &m.best_efforts {
        outln!("  best       {:<14} {}", e.name, fmt_duration(e.duration_s));
    }
    for p in &m.best_powers {
        outln!("  best power {:<14} {:.0} W", p.name, p.watts);
    }
    outln!(
        "  laps       {}   samples {} ({} rejected, {} flagged)",
        s.laps.len(),
        s.samples,
        s.rejected,
        s.flagged
    );
    Ok(())
}

pub fn stats(db: &Path, period: Period, sport: Option<Sport>, as_json: bool) -> Result<()> {
    let store = open_store(db)?;
    let st = store.stats(period, sport, 0)?;
    let streaks = store.streaks(SystemClock.now(), 0)?;
    if as_json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"stats": st, "streaks": streaks}))?
        );
        return Ok(());
    }
    match st {
        WorkoutStats::NotEnoughData { workouts, needed } => {
            outln!("not enough data: {workouts} workout(s), statistics need {needed}");
        }
        WorkoutStats::Ok { periods, .. } => {
            for p in periods {
                outln!(
                    "{:<9} {:>3} workouts  {:>8.1} km  {}  {:>6.0} kcal  +{:.0} m{}",
                    p.period,
                    p.workouts,
                    p.distance_m / 1000.0,
                    fmt_duration(p.timer_s),
                    p.calories_kcal,
                    p.ascent_m,
                    p.avg_pace_s_per_km
                        .map(|v| format!("  {}/km", fmt_pace(v)))
                        .unwrap_or_default()
                );
            }
        }
    }
    outln!(
        "streak: {} day(s) now, longest {} day(s)",
        streaks.current_days,
        streaks.longest_days
    );
    Ok(())
}

pub fn records(db: &Path, as_json: bool) -> Result<()> {
    let store = open_store(db)?;
    let recs = store.personal_records()?;
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&recs)?);
        return Ok(());
    }
    if recs.is_empty() {
        outln!("no personal records yet");
    }
    for r in recs {
        let v = if r.lower_is_better() {
            fmt_duration(r.value)
        } else {
            format!("{:.0} W", r.value)
        };
        outln!(
            "{:<10} {:<14} {:>10}  {}  {}",
            r.sport.as_str(),
            r.record,
            v,
            r.achieved_at,
            &r.workout_id[..8]
        );
    }
    Ok(())
}

pub fn export(db: &Path, id: &str, format: Option<Format>, output: Option<&PathBuf>) -> Result<()> {
    let format = match (format, output) {
        (Some(f), _) => f,
        (None, Some(p)) => p
            .extension()
            .and_then(|e| e.to_str())
            .and_then(|e| e.parse().ok())
            .context("say --format gpx|tcx, or name the output file .gpx or .tcx")?,
        (None, None) => bail!("say --format gpx|tcx (or give -o FILE.gpx / FILE.tcx)"),
    };
    let store = open_store(db)?;
    let summary = store.summary(id)?;
    let samples = store.samples(&summary.id.0)?;
    let text = formats::export(format, &summary, &samples)?;
    match output {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => {
            use std::io::Write as _;
            if std::io::stdout().write_all(text.as_bytes()).is_err() {
                std::process::exit(0);
            }
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum GearCommand {
    /// Add shoes, a bike or other gear.
    Add {
        #[arg(long)]
        kind: GearKind,
        #[arg(long)]
        name: String,
        /// Service life in km (shoes: 800-1000, default 800).
        #[arg(long)]
        life_km: Option<f64>,
    },
    /// List gear with its distance, time and wear.
    List {
        /// Include retired gear.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Assign a workout to gear (or to none with --none).
    Assign {
        workout: String,
        #[arg(required_unless_present = "none")]
        gear: Option<String>,
        #[arg(long)]
        none: bool,
    },
    /// Retire gear: kept with its history, no longer listed.
    Retire { id: String },
}

pub fn gear(db: &Path, cmd: &GearCommand) -> Result<()> {
    let store = open_store(db)?;
    let now = SystemClock.now();
    let show = |g: &fitedge_core::gear::Gear| {
        outln!(
            "{}  {:<6} {:<24} {:>8.1} km  {:>3} workouts  {}{}{}",
            &g.id[..8],
            name(&g.kind),
            g.name,
            g.distance_m / 1000.0,
            g.workouts,
            g.wear_pct
                .map(|w| format!("wear {w:.0} %"))
                .unwrap_or_default(),
            if g.replace_recommended {
                "  REPLACEMENT RECOMMENDED"
            } else {
                ""
            },
            if g.retired { "  (retired)" } else { "" },
        );
    };
    match cmd {
        GearCommand::Add {
            kind,
            name,
            life_km,
        } => show(&store.add_gear(*kind, name, *life_km, now)?),
        GearCommand::List { all, json } => {
            let list = store.list_gear(*all)?;
            if *json {
                outln!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                outln!("no gear: fitedge gear add --kind shoes --name \"Daily trainers\"");
            } else {
                list.iter().for_each(show);
            }
        }
        GearCommand::Assign {
            workout,
            gear,
            none,
        } => {
            let events =
                store.assign_gear(workout, if *none { None } else { gear.as_deref() }, now)?;
            for e in events {
                if let fitedge_core::DomainEvent::WearLevelCalculated { gear_id, .. } = &e {
                    show(&store.gear(gear_id)?);
                }
            }
        }
        GearCommand::Retire { id } => {
            store.retire_gear(id)?;
            outln!("retired {id}");
        }
    }
    Ok(())
}
