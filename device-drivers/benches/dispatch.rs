//! Decoding plus hub dispatch of one notification (the target is under 1 µs on average).

// Benchmarks may unwrap.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use fitedge_core::validation::Verdict;
use fitedge_core::{Sample, SampleSink, Timestamp, WorkoutError};
use fitedge_devices::gatt::{self, Characteristic};
use fitedge_devices::hub::{DeviceKind, DeviceRegistration};
use fitedge_devices::{SensorHub, Source};

struct Count(u64);
impl SampleSink for Count {
    fn record(&mut self, s: Sample) -> Result<Verdict, WorkoutError> {
        self.0 += 1;
        black_box(s);
        Ok(Verdict::Accepted)
    }
}

fn bench(c: &mut Criterion) {
    let hr = [0x16u8, 0x48, 0x54, 0x01, 0xEC, 0x02];
    c.bench_function("decode 0x2A37 (HR + 2 RR)", |b| {
        b.iter(|| gatt::decode_heart_rate(black_box(&hr)).unwrap())
    });
    let mut hub = SensorHub::default();
    hub.register(DeviceRegistration::new("strap", DeviceKind::HeartRate, 10));
    hub.register(DeviceRegistration::new("watch", DeviceKind::HeartRate, 5));
    hub.register(DeviceRegistration::new("pm", DeviceKind::CyclingPower, 10));
    for d in ["strap", "watch", "pm"] {
        hub.connected(d, Timestamp(0)).unwrap();
    }
    let mut sink = Count(0);
    let mut t = 0i64;
    c.bench_function("decode + hub dispatch 0x2A37 (HR + 2 RR)", |b| {
        b.iter(|| {
            t += 1000;
            hub.on_notification(
                "strap",
                Source::Gatt(Characteristic::HeartRateMeasurement),
                black_box(&hr),
                Timestamp(t),
                &mut sink,
            )
            .unwrap()
        })
    });
    // Cycling power with crank data: derives cadence across notifications.
    let mut n = 0u16;
    c.bench_function("decode + hub dispatch 0x2A63 (power + crank)", |b| {
        b.iter(|| {
            t += 1000;
            n = n.wrapping_add(1);
            let ticks = n.wrapping_mul(700);
            let mut p = [0x20u8, 0, 250, 0, 0, 0, 0, 0];
            p[4..6].copy_from_slice(&n.to_le_bytes());
            p[6..8].copy_from_slice(&ticks.to_le_bytes());
            hub.on_notification(
                "pm",
                Source::Gatt(Characteristic::CyclingPowerMeasurement),
                black_box(&p),
                Timestamp(t),
                &mut sink,
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
