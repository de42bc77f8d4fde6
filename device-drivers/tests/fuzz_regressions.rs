//! Replays every input committed under fuzz/regressions/<target>/ through the decoder its fuzz
//! target drives: crashers found by `cargo fuzz` (named crash-*) and hand-picked edge cases
//! (seed-*). Each must decode or give a typed error inside the payload, never panic.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use fitedge_core::validation::Verdict;
use fitedge_core::{Sample, SampleSink, Timestamp, WorkoutError};
use fitedge_devices::ant::AntProfile;
use fitedge_devices::error::DecodeError;
use fitedge_devices::gatt::Characteristic;
use fitedge_devices::{ant, ant_usb, gatt, SensorHub, Source};

fn check<T>(r: Result<T, DecodeError>, len: usize) {
    if let Err(e) = r {
        assert!(e.offset() <= len, "{e}");
    }
}

struct Null;
impl SampleSink for Null {
    fn record(&mut self, _: Sample) -> Result<Verdict, WorkoutError> {
        Ok(Verdict::Accepted)
    }
}

/// The same walk as fuzz_targets/hub_stream.rs.
fn hub_stream(data: &[u8]) {
    const ANT: [AntProfile; 5] = [
        AntProfile::Hrm,
        AntProfile::Bsc,
        AntProfile::Speed,
        AntProfile::Cadence,
        AntProfile::Power,
    ];
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
        let (payload, tail) = rest.split_at(len.min(rest.len()));
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
            0 => drop(hub.connected(id, Timestamp(t))),
            1 => drop(hub.disconnected(id, Timestamp(t))),
            _ => drop(hub.on_notification(id, source, payload, Timestamp(t), &mut Null)),
        }
    }
}

fn run(target: &str, d: &[u8]) {
    let n = d.len();
    match target {
        "gatt_heart_rate" => check(gatt::decode_heart_rate(d), n),
        "gatt_body_sensor_location" => check(gatt::decode_body_sensor_location(d), n),
        "gatt_battery_level" => check(gatt::decode_battery_level(d), n),
        "gatt_csc" => check(gatt::decode_csc(d), n),
        "gatt_rsc" => check(gatt::decode_rsc(d), n),
        "gatt_cycling_power" => check(gatt::decode_cycling_power(d), n),
        "gatt_treadmill" => check(gatt::decode_treadmill(d), n),
        "gatt_indoor_bike" => check(gatt::decode_indoor_bike(d), n),
        "gatt_plx_spot_check" => check(gatt::decode_plx_spot_check(d), n),
        "gatt_plx_continuous" => check(gatt::decode_plx_continuous(d), n),
        "gatt_device_info" => check(gatt::decode_device_info_string(d), n),
        "ant_hrm" => check(ant::decode_hrm(d), n),
        "ant_bsc" => check(ant::decode_bsc(d), n),
        "ant_speed_cadence" => check(ant::decode_rev_page(d), n),
        "ant_power" => check(ant::decode_power(d), n),
        "ant_usb_frame" => {
            check(ant_usb::decode(d), n);
            let mut r = ant_usb::FrameReader::default();
            r.push(d);
            while r.next_frame().is_some() {}
        }
        "hub_stream" => hub_stream(d),
        other => panic!("fuzz/regressions/{other}: no fuzz target of that name"),
    }
}

#[test]
fn committed_fuzz_inputs_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let targets = std::fs::read_dir(root.join("fuzz_targets")).unwrap();
    let mut replayed = 0;
    for t in targets {
        let name = t
            .unwrap()
            .path()
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let dir = root.join("regressions").join(&name);
        assert!(
            dir.is_dir(),
            "every fuzz target has a regressions directory: {}",
            dir.display()
        );
        for f in std::fs::read_dir(&dir).unwrap() {
            let path = f.unwrap().path();
            run(&name, &std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    assert!(replayed >= 17, "only {replayed} inputs replayed");
}
