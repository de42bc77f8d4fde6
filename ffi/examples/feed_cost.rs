//! The Rust-side cost of feeding samples through the Engine (no FFI in between), for comparison
//! with the Kotlin figure of scripts/bench-ffi: `cargo run --release -p fitedge-ffi --example feed_cost`.
#![allow(clippy::print_stdout, clippy::unwrap_used)]
use fitedge_ffi::*;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// The recording's clock. It stands at the start when the workout starts, then at the last
/// sample's time while the samples are fed: no sample is ahead of it (one more than two minutes
/// ahead would be rejected as `ahead_of_clock`, another path), and it does not move while they
/// are fed, so the one flush a live second would bring does not come every four samples of this
/// fast-forward (the store's own benchmark measures flushing).
struct Follow(AtomicI64);
impl EngineClock for Follow {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("fitedge-feed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t0 = 1_763_700_000_000i64;
    let clock = Arc::new(Follow(AtomicI64::new(t0)));
    let e = Engine::open_with_clock(
        dir.join("f.db").display().to_string(),
        vec![7; 32],
        None,
        clock.clone(),
    )
    .unwrap();
    let n = 100_000i64;
    let samples: Vec<Sample> = (0..n)
        .map(|i| Sample {
            timestamp_ms: t0 + i * 250,
            reading: Reading::Power {
                watts: 150.0 + (i % 100) as f64,
            },
        })
        .collect();
    for batch in [1usize, 100] {
        clock.0.store(t0, Ordering::Relaxed);
        e.start_workout(Some(Sport::Cycling)).unwrap();
        clock.0.store(t0 + (n - 1) * 250, Ordering::Relaxed);
        let mut refused = 0u64;
        let t = std::time::Instant::now();
        if batch == 1 {
            for s in &samples {
                if e.record_sample(*s).unwrap() != SampleVerdict::Accepted {
                    refused += 1;
                }
            }
        } else {
            for c in samples.chunks(batch) {
                let r = e.record_samples(c.to_vec()).unwrap();
                refused += u64::from(r.rejected + r.flagged);
            }
        }
        assert_eq!(refused, 0, "every sample must take the accepted path");
        println!(
            "batch {batch:>3}: {:.0} ns per sample",
            t.elapsed().as_nanos() as f64 / n as f64
        );
        e.cancel_workout().unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}
