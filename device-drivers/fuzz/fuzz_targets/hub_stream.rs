#![no_main]
//! A stream of notifications of any characteristic or ANT+ profile, at arbitrary times, from a
//! few devices, through the hub (decoders plus the state derived across notifications).
//! Input: repeated [selector, device, dt_ms, len, payload...].

use fitedge_core::validation::Verdict;
use fitedge_core::{Sample, SampleSink, Timestamp, WorkoutError};
use fitedge_devices::ant::AntProfile;
use fitedge_devices::gatt::Characteristic;
use fitedge_devices::{SensorHub, Source};
use libfuzzer_sys::fuzz_target;

struct Null;
impl SampleSink for Null {
    fn record(&mut self, s: Sample) -> Result<Verdict, WorkoutError> {
        assert!(!matches!(s.reading, fitedge_core::Reading::Speed { mps } if mps.is_nan()));
        Ok(Verdict::Accepted)
    }
}

const ANT: [AntProfile; 5] = [
    AntProfile::Hrm,
    AntProfile::Bsc,
    AntProfile::Speed,
    AntProfile::Cadence,
    AntProfile::Power,
];

fuzz_target!(|data: &[u8]| {
    let mut hub = SensorHub::default();
    let mut t = 0i64;
    let mut rest = data;
    while rest.len() >= 4 {
        let (sel, dev, dt, len) = (
            rest[0],
            rest[1] % 3,
            i64::from(rest[2]) * 37,
            usize::from(rest[3] % 24),
        );
        rest = &rest[4..];
        let n = len.min(rest.len());
        let (payload, tail) = rest.split_at(n);
        rest = tail;
        t += dt - 500;
        let id = ["a", "b", "c"][usize::from(dev)];
        let all = Characteristic::ALL;
        let source = if usize::from(sel) < all.len() * 2 {
            Source::Gatt(all[usize::from(sel) % all.len()])
        } else {
            Source::Ant(ANT[usize::from(sel) % ANT.len()])
        };
        match sel % 17 {
            0 => {
                let _ = hub.connected(id, Timestamp(t));
            }
            1 => {
                let _ = hub.disconnected(id, Timestamp(t));
            }
            _ => {
                let _ = hub.on_notification(id, source, payload, Timestamp(t), &mut Null);
            }
        }
    }
    let _ = hub.take_events();
});
