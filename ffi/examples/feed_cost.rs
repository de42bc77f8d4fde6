//! The Rust-side cost of feeding samples through the Engine (no FFI in between), for comparison
//! with the Kotlin figure of scripts/bench-ffi: `cargo run --release -p fitedge-ffi --example feed_cost`.
#![allow(clippy::print_stdout, clippy::unwrap_used)]
use fitedge_ffi::*;
use std::sync::Arc;

struct Fixed(i64);
impl EngineClock for Fixed {
    fn now_ms(&self) -> i64 {
        self.0
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("fitedge-feed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t0 = 1_763_700_000_000i64;
    let e = Engine::open_with_clock(
        dir.join("f.db").display().to_string(),
        vec![7; 32],
        None,
        Arc::new(Fixed(t0)),
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
        e.start_workout(Some(Sport::Cycling)).unwrap();
        let t = std::time::Instant::now();
        if batch == 1 {
            for s in &samples {
                e.record_sample(*s).unwrap();
            }
        } else {
            for c in samples.chunks(batch) {
                e.record_samples(c.to_vec()).unwrap();
            }
        }
        println!(
            "batch {batch:>3}: {:.0} ns per sample",
            t.elapsed().as_nanos() as f64 / n as f64
        );
        e.cancel_workout().unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}
