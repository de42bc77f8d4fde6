#![no_main]
//! Arbitrary bytes through one decoder: it returns a value or a typed error whose offset lies
//! within the payload (a truncation may point just past it), and never panics. Crashers go
//! into ../regressions/gatt_body_sensor_location/, which `cargo test -p fitedge-devices --test fuzz_regressions`
//! replays.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = fitedge_devices::gatt::decode_body_sensor_location(data) {
        assert!(e.offset() <= data.len());
    }
});
