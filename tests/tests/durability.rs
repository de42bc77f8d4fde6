//! Durability: a recording process is killed with SIGKILL at random moments, 25 times. After
//! each kill the database passes `PRAGMA integrity_check`, the interrupted recording is found
//! and resumed, and at most the last second of acknowledged samples is lost.

// Test helpers may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fitedge_core::crypto::StorageKey;
use fitedge_core::recording::Recording;
use fitedge_core::store::Store;
use fitedge_core::{Channel, ManualClock, Timestamp};

const KILLS: u32 = 25;

fn open(db: &std::path::Path) -> Arc<Store> {
    Arc::new(Store::open(db, Some(StorageKey::new(&[5u8; 32]).unwrap())).unwrap())
}

#[test]
fn sigkill_at_random_moments_loses_at_most_the_last_second() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("durable.db");
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut id = None;
    let mut total_lines = 0u64;
    for round in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_record_sim"))
            .arg(&db)
            .arg("run")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().unwrap().unwrap();
        let this_id = ready.strip_prefix("ready ").unwrap().to_string();
        assert_eq!(
            id.get_or_insert(this_id.clone()),
            &this_id,
            "round {round}: the same recording resumes"
        );
        // Kill after a pseudo-random 20-250 ms of recording.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = Duration::from_millis(20 + seed % 230);
        let started = Instant::now();
        let mut last_acked = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            last_acked = Some(line.parse::<i64>().unwrap());
            total_lines += 1;
            if started.elapsed() >= wait {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Anything it printed before dying was acknowledged too.
        for line in lines {
            if let Ok(t) = line.unwrap().parse::<i64>() {
                last_acked = Some(t);
            }
        }
        let last_acked = last_acked.expect("the recorder acknowledged samples before the kill");

        let store = open(&db);
        assert_eq!(store.integrity_check().unwrap(), "ok", "round {round}");
        let found =
            Recording::recover(store.clone(), Arc::new(ManualClock::new(Timestamp(0)))).unwrap();
        assert_eq!(
            found.len(),
            1,
            "round {round}: the interrupted recording is found"
        );
        assert_eq!(found[0].state(), fitedge_core::WorkoutState::Active);
        let power = store.samples_of(&this_id, &[Channel::Power]).unwrap();
        let newest = power.last().map_or(0, |s| s.t.0);
        assert!(
            last_acked - newest <= 1000,
            "round {round}: acknowledged up to {last_acked}, stored up to {newest}: lost {} ms",
            last_acked - newest
        );
        // No sample stored twice across resumptions.
        let mut ts: Vec<i64> = power.iter().map(|s| s.t.0).collect();
        let n = ts.len();
        ts.dedup();
        assert_eq!(ts.len(), n, "round {round}: duplicate samples");
    }
    assert!(
        total_lines > u64::from(KILLS) * 10,
        "the recorder made too little progress to mean anything"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_record_sim"))
        .arg(&db)
        .arg("finish")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("completed"), "{text}");
    let store = open(&db);
    assert!(
        Recording::recover(store.clone(), Arc::new(ManualClock::new(Timestamp(0))))
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.workout_count().unwrap(), 1);
}
