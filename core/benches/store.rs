//! Store benchmarks (a bench binary: `cargo bench -p fitedge-core --bench store [-- NAME]`).
//!
//! - `ingest`: a mixed live stream (heart rate, GPS, altitude and cadence at 1 Hz, power at 4 Hz)
//!   through validation, live metrics and the store, against a plain baseline measured in the
//!   same run: one prepared INSERT per sample in one transaction.
//! - `day`: a simulated 24-hour recording on the recording clock (a flush every second of
//!   recording): resident memory at hour 1 and hour 24, and the time to complete it.
//! - `history`: 10,000 stored workouts: the stats query and a list page.
//! - `corpus`: bytes stored for the shared FIT corpus against the files' own size.
//!
//! Figures go to BENCHMARKS.md with the date.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fitedge_core::crypto::StorageKey;
use fitedge_core::recording::Recording;
use fitedge_core::store::{ListFilter, Period, Store};
use fitedge_core::time::{Clock, ManualClock, SystemClock};
use fitedge_core::workout::WorkoutConfig;
use fitedge_core::{AltitudeSource, Profile, Reading, Sample, Sport, Timestamp};

const T0: i64 = 1_763_700_000_000;

fn key() -> StorageKey {
    StorageKey::new(&[9u8; 32]).unwrap()
}

/// A scratch directory, on tmpfs when there is one: the `day` benchmark measures the engine,
/// not the disk's fsync latency.
fn scratch(tmpfs: bool) -> tempfile::TempDir {
    if tmpfs && Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// `seconds` of the mixed stream: 8 samples per second.
fn mixed(seconds: i64) -> Vec<Sample> {
    let mut out = Vec::with_capacity(seconds as usize * 8);
    let (mut lat, mut alt) = (45.0f64, 300.0f64);
    for s in 0..seconds {
        let t = T0 + s * 1000;
        out.push(Sample::new(
            Timestamp(t),
            Reading::HeartRate {
                bpm: 130.0 + (s % 40) as f64,
            },
        ));
        lat += 6e-5;
        out.push(Sample::new(
            Timestamp(t),
            Reading::Position {
                lat,
                lon: 7.0 + ((s % 100) as f64) * 1e-6,
                accuracy_m: Some(4.0),
            },
        ));
        alt += ((s % 60) as f64 - 30.0) * 0.01;
        out.push(Sample::new(
            Timestamp(t),
            Reading::Altitude {
                m: alt,
                source: AltitudeSource::Barometric,
            },
        ));
        out.push(Sample::new(
            Timestamp(t),
            Reading::Cadence {
                rpm: 85.0 + (s % 7) as f64,
            },
        ));
        for q in 0..4 {
            out.push(Sample::new(
                Timestamp(t + q * 250),
                Reading::Power {
                    w: 180.0 + ((s * 4 + q) % 90) as f64,
                },
            ));
        }
    }
    out
}

fn long_config() -> WorkoutConfig {
    WorkoutConfig {
        max_elapsed_s: 10.0 * 86_400.0,
        ..WorkoutConfig::import()
    }
}

fn ingest() {
    let seconds = 250_000; // 2,000,000 samples
    let samples = mixed(seconds);
    let n = samples.len();
    let mut ours = vec![];
    let mut base = vec![];
    for _ in 0..3 {
        // FitEdge: validation + live metrics + chunked, sealed, compressed storage.
        let dir = scratch(false);
        let store = Arc::new(Store::open(&dir.path().join("b.db"), Some(key())).unwrap());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let start = Instant::now();
        let mut rec = Recording::start(
            store.clone(),
            clock,
            Some(Sport::Cycling),
            Profile::default().resolve(),
            long_config(),
        )
        .unwrap();
        for s in &samples {
            rec.record(*s).unwrap();
        }
        rec.flush().unwrap();
        ours.push(start.elapsed());
        drop(rec);

        // Baseline: one prepared INSERT per sample, one transaction, same pragmas.
        let conn = rusqlite::Connection::open(dir.path().join("base.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.execute_batch("CREATE TABLE s (t INTEGER NOT NULL, channel INTEGER NOT NULL, v REAL NOT NULL, v2 REAL)").unwrap();
        let start = Instant::now();
        let mut conn = conn;
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare("INSERT INTO s (t, channel, v, v2) VALUES (?1, ?2, ?3, ?4)")
                .unwrap();
            for s in &samples {
                let (v, v2) = match s.reading {
                    Reading::Position { lat, lon, .. } => (lat, Some(lon)),
                    Reading::HeartRate { bpm } => (bpm, None),
                    Reading::Altitude { m, .. } => (m, None),
                    Reading::Cadence { rpm } => (rpm, None),
                    Reading::Power { w } => (w, None),
                    _ => (0.0, None),
                };
                stmt.execute(rusqlite::params![s.t.0, s.channel().index() as i64, v, v2])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        base.push(start.elapsed());
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (o, b) = (med(&mut ours), med(&mut base));
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("ingest: {n} samples, median of 3 runs");
    println!(
        "  fitedge (validate + live metrics + store): {:>10.0} samples/s ({:.3} s)",
        rate(o),
        o.as_secs_f64()
    );
    println!(
        "  baseline (prepared INSERT per sample):     {:>10.0} samples/s ({:.3} s)",
        rate(b),
        b.as_secs_f64()
    );
    println!("  ratio: {:.2}x", rate(o) / rate(b));
}

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn day() {
    let dir = scratch(true);
    let store = Arc::new(Store::open(&dir.path().join("day.db"), Some(key())).unwrap());
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let mut rec = Recording::start(
        store.clone(),
        clock.clone(),
        Some(Sport::Cycling),
        Profile::default().resolve(),
        WorkoutConfig::import(),
    )
    .unwrap();
    let hour = 3600;
    let mut rss_h1 = 0;
    let started = Instant::now();
    for h in 0..24 {
        let stream = mixed(hour);
        for s in stream {
            let t = Timestamp(s.t.0 + h * hour * 1000);
            clock.set(t);
            rec.record(Sample::new(t, s.reading)).unwrap();
        }
        if h == 0 {
            rss_h1 = rss_kb();
        }
    }
    let rss_h24 = rss_kb();
    let recorded = started.elapsed();
    clock.set(Timestamp(T0 + 24 * hour * 1000 - 1));
    let t = Instant::now();
    let summary = rec.complete().unwrap();
    let complete = t.elapsed();
    println!(
        "day: 24 h of the mixed stream ({} samples), a flush every recorded second",
        24 * hour * 8
    );
    println!("  recorded in {:.1} s", recorded.as_secs_f64());
    println!(
        "  RSS at hour 1: {rss_h1} kB, at hour 24: {rss_h24} kB, growth {} kB",
        rss_h24 as i64 - rss_h1 as i64
    );
    println!(
        "  complete(): {:.1} ms (timer {:.0} s, distance {:.1} km)",
        complete.as_secs_f64() * 1e3,
        summary.metrics.timer_s,
        summary.metrics.distance_m.unwrap_or(0.0) / 1000.0
    );
}

fn history() {
    let dir = scratch(false);
    let store = Store::open(&dir.path().join("h.db"), Some(key())).unwrap();
    // One real workout, stored 10,000 times under new ids and dates.
    let mut w = fitedge_core::Workout::new(
        fitedge_core::WorkoutId::random(),
        Some(Sport::Running),
        Profile::default().resolve(),
        WorkoutConfig::import(),
    );
    w.start(Timestamp(T0)).unwrap();
    for s in mixed(600) {
        let _ = w.record(s);
    }
    let base = w.complete(Timestamp(T0 + 600_000)).unwrap().clone();
    let started = Instant::now();
    for i in 0..10_000i64 {
        let mut s = base.clone();
        s.id = fitedge_core::WorkoutId::random();
        s.start_time = Timestamp(T0 - i * 3 * 3_600_000);
        s.end_time = Timestamp(s.start_time.0 + 600_000);
        s.metrics.sport = [Sport::Running, Sport::Cycling, Sport::Walking][(i % 3) as usize];
        store.save_workout(&s, &[], Timestamp(T0)).unwrap();
    }
    println!(
        "history: 10,000 workouts stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let time = |f: &dyn Fn()| {
        let mut v: Vec<Duration> = (0..21)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect();
        v.sort();
        v[10]
    };
    for p in [Period::Week, Period::Month, Period::Year] {
        let d = time(&|| {
            store.stats(p, None, 0).unwrap();
        });
        println!(
            "  stats({p:?}) over all workouts: median {:.2} ms",
            d.as_secs_f64() * 1e3
        );
    }
    let d = time(&|| {
        store.stats(Period::Month, Some(Sport::Cycling), 0).unwrap();
    });
    println!(
        "  stats(Month, cycling): median {:.2} ms",
        d.as_secs_f64() * 1e3
    );
    let d = time(&|| {
        store.list(&ListFilter::default(), 50, None).unwrap();
    });
    println!(
        "  list first page of 50: median {:.3} ms",
        d.as_secs_f64() * 1e3
    );
    let mut cursor = None;
    for _ in 0..100 {
        cursor = store
            .list(&ListFilter::default(), 50, cursor.as_ref())
            .unwrap()
            .next;
    }
    let d = time(&|| {
        store
            .list(&ListFilter::default(), 50, cursor.as_ref())
            .unwrap();
    });
    println!(
        "  list page 101 of 50: median {:.3} ms",
        d.as_secs_f64() * 1e3
    );
    let f = ListFilter {
        sport: Some(Sport::Walking),
        ..ListFilter::default()
    };
    let d = time(&|| {
        store.list(&f, 50, None).unwrap();
    });
    println!(
        "  list filtered by sport: median {:.3} ms",
        d.as_secs_f64() * 1e3
    );
}

fn corpus() {
    let shared = std::env::var_os("FITEDGE_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let dir = shared.join("data/fit");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("corpus: SKIPPED, no FIT files at {}", dir.display());
        return;
    };
    let tmp = scratch(false);
    let path = tmp.path().join("c.db");
    let store = Store::open(&path, Some(key())).unwrap();
    let mut fit_bytes = 0u64;
    let mut stored_sessions = 0;
    for e in entries {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "fit") {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        fit_bytes += bytes.len() as u64;
        if let Ok(imp) =
            fitedge_core::fit::import(&bytes, Profile::default(), &p.display().to_string())
        {
            let saved = store
                .save_import(
                    &p.display().to_string(),
                    &p.display().to_string(),
                    &imp.sessions,
                    Timestamp(T0),
                )
                .unwrap();
            stored_sessions += saved
                .iter()
                .filter(|s| matches!(s, fitedge_core::store::Saved::Stored { .. }))
                .count();
        }
    }
    store.checkpoint().unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("VACUUM").unwrap();
    drop(conn);
    let db = std::fs::metadata(&path).unwrap().len();
    let (chunks, summaries): (i64, i64) = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT (SELECT TOTAL(length(data)) FROM sample_chunks), (SELECT TOTAL(length(summary_json)) FROM workout_docs)", [], |r| Ok((r.get::<_, f64>(0)? as i64, r.get::<_, f64>(1)? as i64)))
        .unwrap();
    println!("corpus: {stored_sessions} sessions stored");
    println!(
        "  FIT files: {fit_bytes} bytes; database file after VACUUM: {db} bytes ({:.1} %)",
        db as f64 / fit_bytes as f64 * 100.0
    );
    println!("  of which sample chunks {chunks} bytes, summaries {summaries} bytes");
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = which.is_empty();
    let want = |n: &str| all || which.iter().any(|w| w == n);
    if want("ingest") {
        ingest();
    }
    if want("day") {
        day();
    }
    if want("history") {
        history();
    }
    if want("corpus") {
        corpus();
    }
}
