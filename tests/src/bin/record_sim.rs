//! Test support for the durability test: records a workout into a database as fast as it can
//! (one heart-rate and one power sample per 250 ms of recording time), resuming the recording it
//! finds there, and prints the time of every sample the recorder acknowledged. The test kills
//! it with SIGKILL at random moments.
//!
//! `record_sim DB run` records until killed; `record_sim DB finish` resumes and completes.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::sync::Arc;

use fitedge_core::crypto::StorageKey;
use fitedge_core::recording::Recording;
use fitedge_core::store::Store;
use fitedge_core::workout::WorkoutConfig;
use fitedge_core::{Clock, ManualClock, Profile, Reading, Sample, Sport, Timestamp};

const T0: i64 = 1_763_700_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (db, mode) = match args.as_slice() {
        [_, db, mode] => (db.clone(), mode.clone()),
        _ => return Err("usage: record_sim DB run|finish".into()),
    };
    let store = Arc::new(Store::open(
        std::path::Path::new(&db),
        Some(StorageKey::new(&[5u8; 32])?),
    )?);
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let mut found = Recording::recover(store.clone(), clock.clone())?;
    let mut rec = match found.pop() {
        Some(r) => {
            // Go on after the last stored sample.
            let last = store
                .samples_of(&r.id().0, &[fitedge_core::Channel::Power])?
                .last()
                .map_or(T0, |s| s.t.0);
            clock.set(Timestamp(last + 250));
            r
        }
        None => Recording::start(
            store.clone(),
            clock.clone(),
            Some(Sport::Cycling),
            Profile::default().resolve(),
            WorkoutConfig::import(),
        )?,
    };
    let out = std::io::stdout();
    let mut out = out.lock();
    writeln!(out, "ready {}", rec.id())?;
    out.flush()?;
    if mode == "finish" {
        let s = rec.complete()?;
        writeln!(out, "completed {} {}", s.metrics.timer_s, s.samples)?;
        return Ok(());
    }
    loop {
        let t = clock.now();
        rec.record(Sample::new(
            t,
            Reading::Power {
                w: 200.0 + (t.0 / 250 % 50) as f64,
            },
        ))?;
        rec.record(Sample::new(
            t,
            Reading::HeartRate {
                bpm: 120.0 + (t.0 / 1000 % 40) as f64,
            },
        ))?;
        writeln!(out, "{}", t.0)?;
        out.flush()?;
        clock.advance_secs(0.25);
    }
}
