//! The Rust-side cost of feeding samples through the Engine (no FFI in between), for comparison
//! with the Kotlin figure of scripts/bench-ffi: `cargo run --release -p fitedge-ffi --example feed_cost`.
#![allow(clippy::print_stdout, clippy::unwrap_used)]
use fitedge_ffi::*;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// The recording's clock follows the samples, as a live clock would: a sample more than two
/// minutes ahead of the clock is rejected (`ahead_of_clock`), which would measure the wrong path.
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
        let mut refused = 0u64;
        let t = std::time::Instant::now();
        if batch == 1 {
            for s in &samples {
                clock.0.store(s.timestamp_ms, Ordering::Relaxed);
                if e.record_sample(*s).unwrap() != SampleVerdict::Accepted {
                    refused += 1;
                }
            }
        } else {
            for c in samples.chunks(batch) {
                if let Some(last) = c.last() {
                    clock.0.store(last.timestamp_ms, Ordering::Relaxed);
                }
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
