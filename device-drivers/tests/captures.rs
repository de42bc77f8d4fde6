//! Notifications and pages from public open-source test suites, decoded to the values those
//! sources state. Each test names its source (repository and file). Payloads are copied as
//! bytes (facts); the expected values are the ones the source asserts.
//!
//! Count: 42 payloads (25 Bluetooth LE notifications, 17 ANT+ pages) from 5 repositories
//! (9 test files). The sources call some of them real device
//! captures ("real response from Volt", "production log"); the others are vectors those
//! projects' tests use. See README.md, "Real captures".

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

use fitedge_core::Timestamp;
use fitedge_devices::ant::{self, AntProfile, HrmDetail, PowerPage};
use fitedge_devices::derive::WheelCrank;
use fitedge_devices::gatt::{self, Characteristic as C, GattValue};
use fitedge_devices::sensor::{SensorDecoder, Source};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn t(s: i64) -> Timestamp {
    Timestamp(s * 1000)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() < tol
}

// --- movisens/SmartGattLib: src/test/java/HeartRateMeasurementTest.java ---------------------

#[test]
fn smartgattlib_heart_rate_measurement() {
    let m = gatt::decode_heart_rate(&hex("16485401EC02")).unwrap();
    assert_eq!(m.heart_rate_bpm, 72);
    assert_eq!(m.sensor_contact, Some(true)); // "Sensor is worn"
    assert_eq!(m.energy_expended_kj, None); // "EE should not be available"
    let secs: Vec<f64> = m
        .rr_intervals_raw
        .iter()
        .map(|r| f64::from(*r) / 1024.0)
        .collect();
    assert_eq!(secs, vec![0.33203125, 0.73046875]);
}

// --- OpenTracksApp/OpenTracks: src/androidTest/java/de/dennisguse/opentracks/sensors/ -------

#[test]
fn opentracks_heart_rate_uint8_and_uint16() {
    // BluetoothHandlerManagerHeartRateTest.java
    assert_eq!(
        gatt::decode_heart_rate(&[0x02, 0x3C])
            .unwrap()
            .heart_rate_bpm,
        60
    );
    assert_eq!(
        gatt::decode_heart_rate(&[0x01, 0x01, 0x01])
            .unwrap()
            .heart_rate_bpm,
        257
    );
}

#[test]
fn opentracks_cycling_speed_cadence() {
    // BluetoothHandlerCyclingDistanceSpeedTest.java
    let crank_only = gatt::decode_csc(&[0x02, 0xC8, 0x00, 0x00, 0x00, 0x06, 0x99]).unwrap();
    assert_eq!(crank_only.wheel_revolutions, None);
    assert_eq!(crank_only.crank_revolutions, Some(200));
    let wheel_only = gatt::decode_csc(&[0x01, 0xFF, 0xFF, 0, 1, 0x45, 0x99]).unwrap();
    assert_eq!(wheel_only.wheel_revolutions, Some(65_535 + 16_777_216));
    assert_eq!(wheel_only.crank_revolutions, None);
    let both = gatt::decode_csc(&[
        0x03, 0xC8, 0x00, 0x00, 0x01, 0x06, 0x99, 0xE1, 0x00, 0x45, 0x99,
    ])
    .unwrap();
    assert_eq!(both.wheel_revolutions, Some(200 + 16_777_216));
    assert_eq!(both.crank_revolutions, Some(225));
}

#[test]
fn opentracks_cycling_power() {
    // BluetoothHandlerCyclingPowerTest.java
    let p = gatt::decode_cycling_power(&[0, 0, 40, 0]).unwrap();
    assert_eq!(p.instantaneous_power_w, 40);
    let p =
        gatt::decode_cycling_power(&[0x2C, 0x00, 0x00, 0x00, 0x9F, 0x00, 0x0C, 0x00, 0xE5, 0x42])
            .unwrap();
    assert_eq!(p.instantaneous_power_w, 0);
    assert_eq!(p.crank_revolutions, Some(12));
    assert_eq!(p.crank.unwrap().event_time, 17125);
}

#[test]
fn opentracks_running_speed_cadence() {
    // BluetoothConnectionRunningSpeedAndCadenceTest.java
    let r = gatt::decode_rsc(&[2, 0, 5, 80, 0xFF, 0xFF, 0, 1]).unwrap();
    assert_eq!(r.speed_mps, 5.0);
    assert_eq!(r.cadence_per_min, 80);
    assert!(close(
        r.total_distance_m.unwrap(),
        6553.5 + 1_677_721.6,
        1e-6
    ));
}

// --- incyclist/devices: src/ble/characteristics/csc/measurement.unit.test.ts ---------------

#[test]
fn incyclist_csc_speed_and_cadence_sequence() {
    // The source's parser uses a 2.1 m wheel and asserts with toBeCloseTo (1 digit for speed in
    // m/s: |x - e| < 0.05; 0 digits for cadence: |x - e| < 0.5).
    let mut d = SensorDecoder::new(2.1);
    let src = Source::Gatt(C::CscMeasurement);
    d.decode(src, &hex("03d9000000770c01000098"), t(0)).unwrap();
    let (_, r1) = d.decode(src, &hex("01db0000001812"), t(1)).unwrap();
    assert!(close(r1.speed_mps.unwrap(), 3.0, 0.05), "{r1:?}");
    assert_eq!(r1.cadence_rpm, None);
    let (_, r2) = d.decode(src, &hex("03dc000000911403004e9f"), t(2)).unwrap();
    assert!(close(r2.speed_mps.unwrap(), 3.4, 0.05), "{r2:?}");
    assert!(close(r2.cadence_rpm.unwrap(), 66.0, 0.5), "{r2:?}");
}

#[test]
fn incyclist_csc_crank_only_sensor() {
    // the "defect" case: a crank-only sensor
    let mut d = SensorDecoder::new(2.1);
    let src = Source::Gatt(C::CscMeasurement);
    d.decode(src, &hex("02f70050c1"), t(0)).unwrap();
    let (_, r) = d.decode(src, &hex("02f8006bc3"), t(1)).unwrap();
    assert_eq!(r.speed_mps, None);
    assert!(close(r.cadence_rpm.unwrap(), 114.0, 0.5), "{r:?}");
}

// --- incyclist/devices: src/ble/csc/sensor.unit.test.ts (production log 2026-08-20) --------

#[test]
fn incyclist_counter_reset_after_reconnect_never_gives_negative_speed() {
    let mut hub = fitedge_devices::SensorHub::default();
    let mut sink = Vec::<fitedge_core::Sample>::new();
    let mut rec = |s| {
        sink.push(s);
    };
    let mut w = Collect(&mut rec);
    let src = Source::Gatt(C::CscMeasurement);
    hub.connected("csc", t(0)).unwrap();
    hub.on_notification("csc", src, &hex("016b0d0000e282"), t(0), &mut w)
        .unwrap();
    hub.on_notification("csc", src, &hex("016b0d0000e282"), t(1), &mut w)
        .unwrap();
    hub.disconnected("csc", t(2)).unwrap();
    hub.connected("csc", t(3)).unwrap();
    hub.on_notification("csc", src, &hex("01000000000000"), t(3), &mut w)
        .unwrap();
    assert!(sink.iter().all(|s| match s.reading {
        fitedge_core::Reading::Speed { mps } => mps >= 0.0,
        _ => true,
    }));
}

struct Collect<'a>(&'a mut dyn FnMut(fitedge_core::Sample));
impl fitedge_core::SampleSink for Collect<'_> {
    fn record(
        &mut self,
        s: fitedge_core::Sample,
    ) -> Result<fitedge_core::validation::Verdict, fitedge_core::WorkoutError> {
        (self.0)(s);
        Ok(fitedge_core::validation::Verdict::Accepted)
    }
}

// --- incyclist/devices: src/ble/fm/sensor.unit.test.ts -------------------------------------

#[test]
fn incyclist_indoor_bike_data() {
    let ibd = |h: &str| gatt::decode_indoor_bike(&hex(h)).unwrap();
    // "distance,cadence,power and time"
    let a = ibd("5408e2067e00bb00004d000000");
    assert_eq!(a.speed_kmh, Some(17.62));
    assert_eq!(a.instantaneous_power_w, Some(77));
    assert_eq!(a.cadence_rpm, Some(63.0));
    assert_eq!(a.total_distance_m, Some(187));
    assert_eq!(a.elapsed_time_s, Some(0));
    // "real response from Volt"
    let b = ibd("6402000000001400000000");
    assert_eq!(
        (b.speed_kmh, b.instantaneous_power_w, b.cadence_rpm),
        (Some(0.0), Some(0), Some(0.0))
    );
    assert_eq!((b.heart_rate_bpm, b.resistance_level), (Some(0), Some(20)));
    // "real response from Volt/Mac"
    let c = ibd("6402c108000014001c0000");
    assert_eq!(
        (c.speed_kmh, c.instantaneous_power_w, c.cadence_rpm),
        (Some(22.41), Some(28), Some(0.0))
    );
    assert_eq!((c.heart_rate_bpm, c.resistance_level), (Some(0), Some(20)));
}

// --- antoniokly/BluetoothThing: Tests/BluetoothThingTests/GATT/ ----------------------------

#[test]
fn bluetooththing_cycling_power_measurement() {
    // CyclingPowerMeasurementTests.swift
    let m = gatt::decode_cycling_power(&hex("140049007731550600008F7C")).unwrap();
    assert_eq!(m.pedal_power_balance_pct, None);
    assert!(!m.pedal_power_balance_left);
    assert!(!m.accumulated_torque_crank_based); // wheel based
    assert_eq!(m.instantaneous_power_w, 73);
    assert_eq!(m.accumulated_torque_nm, Some(395.71875));
    assert_eq!(m.wheel_revolutions, Some(1621));
    assert_eq!(m.wheel.unwrap().event_time, 31887);
    assert_eq!(m.crank_revolutions, None);
    assert!(m.max_force_n.is_none() && m.max_torque_nm.is_none() && m.max_angle_deg.is_none());
    assert!(m.top_dead_spot_angle_deg.is_none() && m.accumulated_energy_kj.is_none());
    assert!(!m.offset_compensation_indicator);
}

#[test]
fn bluetooththing_csc_cadence_sequence() {
    // CSCMeasurementTests.swift: four notifications of a crank sensor with a still wheel
    let mut wc = WheelCrank::csc(2.105);
    let payloads = [
        "03424D0000238A3D9542AC",
        "03424D0000238A3E95D5B1",
        "03424D0000238A3F956EB6",
        "03424D0000238A409560BB",
    ];
    let expected = [
        None,
        Some(43.055360896986684),
        Some(52.200509770603226),
        Some(48.53080568720379),
    ];
    for (i, (p, e)) in payloads.iter().zip(expected).enumerate() {
        let m = gatt::decode_csc(&hex(p)).unwrap();
        assert_eq!(m.wheel_revolutions, Some(19778));
        assert_eq!(m.wheel.unwrap().event_time, 35363);
        assert_eq!(m.crank_revolutions, Some(38205 + i as u16));
        let d = wc.update(m.wheel, m.crank, t(i as i64));
        match e {
            Some(rpm) => assert!(close(d.cadence_rpm.unwrap(), rpm, 1e-9), "{d:?}"),
            None => assert_eq!(d.cadence_rpm, None),
        }
    }
    assert_eq!(
        [45525, 46702, 47968].map(|t| f64::from(t) / 1024.0),
        [
            gatt::decode_csc(&hex(payloads[1]))
                .unwrap()
                .crank_event_time_s
                .unwrap(),
            gatt::decode_csc(&hex(payloads[2]))
                .unwrap()
                .crank_event_time_s
                .unwrap(),
            gatt::decode_csc(&hex(payloads[3]))
                .unwrap()
                .crank_event_time_s
                .unwrap(),
        ]
    );
}

#[test]
fn bluetooththing_indoor_bike_flags() {
    // IndoorBikeDataTests.swift
    let d = gatt::decode_indoor_bike(&hex("D000000000000000000000")).unwrap();
    assert!(!d.more_data);
    assert!(
        d.cadence_rpm.is_none() && d.average_speed_kmh.is_none() && d.average_cadence_rpm.is_none()
    );
    assert!(d.total_distance_m.is_some());
    assert!(d.resistance_level.is_none());
    assert!(d.instantaneous_power_w.is_some() && d.average_power_w.is_some());
    assert!(d.energy.total_energy_kcal.is_none() && d.heart_rate_bpm.is_none());
    assert!(
        d.metabolic_equivalent.is_none()
            && d.elapsed_time_s.is_none()
            && d.remaining_time_s.is_none()
    );
}

// --- StephenHidem/AntPlus: AntPlus.UnitTests/DeviceProfiles/ -------------------------------

#[test]
fn antplus_heart_rate_pages() {
    // HeartRateTests.cs
    let first = ant::decode_hrm(&[0, 0, 0, 0, 0xAA, 0x55, 0x33, 70]).unwrap();
    assert_eq!(first.heart_rate_bpm, 70);
    let mut s = ant::HrmState::default();
    assert_eq!(s.update(&first).rr_interval_ms, None);
    let next = ant::decode_hrm(&[0, 0, 0, 0, 0xAA, 0x59, 0x34, 70]).unwrap();
    assert_eq!(s.update(&next).rr_interval_ms, Some(1000.0));

    let p = |b: [u8; 8]| ant::decode_hrm(&b).unwrap().detail;
    assert_eq!(
        p([0x81, 1, 2, 3, 0xAA, 0x59, 0x34, 70]),
        HrmDetail::CumulativeOperatingTime {
            operating_time_s: 0x030201 * 2
        }
    );
    let HrmDetail::ManufacturerInfo {
        manufacturer_id,
        serial_number_high,
    } = p([0x82, 1, 2, 3, 0xAA, 0x59, 0x34, 70])
    else {
        panic!()
    };
    assert_eq!(
        (manufacturer_id, u32::from(serial_number_high) << 16),
        (1, 0x0302_0000)
    );
    assert_eq!(
        p([0x83, 1, 2, 3, 0xAA, 0x59, 0x34, 70]),
        HrmDetail::ProductInfo {
            hardware_version: 1,
            software_version: 2,
            model_number: 3
        }
    );
    assert_eq!(
        p([0x85, 70, 120, 100, 0xAA, 0x59, 0x34, 70]),
        HrmDetail::SwimInterval {
            interval_avg_hr_bpm: 70,
            interval_max_hr_bpm: 120,
            session_avg_hr_bpm: 100
        }
    );
    let HrmDetail::Capabilities {
        features_supported,
        features_enabled,
    } = p([0x86, 0xFF, 4, 4, 0xAA, 0x59, 0x34, 70])
    else {
        panic!()
    };
    assert_eq!((features_supported, features_enabled), (4, 4)); // swimming
    let HrmDetail::BatteryStatus {
        battery_level_pct,
        battery_voltage_v,
        ..
    } = p([0x87, 70, 0x66, 0x03, 0xAA, 0x59, 0x34, 70])
    else {
        panic!()
    };
    assert_eq!(battery_level_pct, Some(70));
    assert!(close(battery_voltage_v.unwrap(), 3.4, 1.0 / 256.0));
}

#[test]
fn antplus_heart_rate_previous_beat_page() {
    // HeartRateTests.cs, Parse_PreviousHeartBeat_ExpectedRRInterval: RR 1000 ms from page 4
    let mut s = ant::HrmState::default();
    s.update(&ant::decode_hrm(&[0, 0, 0, 0, 0xAA, 0x55, 0x33, 70]).unwrap());
    let p4 = ant::decode_hrm(&[0x84, 1, 0xFF, 0xFF, 0xFF, 0x03, 0x34, 70]).unwrap();
    let HrmDetail::PreviousHeartBeat {
        manufacturer_specific,
        ..
    } = p4.detail
    else {
        panic!()
    };
    assert_eq!(manufacturer_specific, 1);
    assert!(p4.page_toggle);
    // The toggle changed (0 -> 1): a current strap, so page 4's previous-beat time is used.
    assert_eq!(s.update(&p4).rr_interval_ms, Some(1000.0));
}

#[test]
fn antplus_standard_power_page() {
    // BicyclePower/StandardPowerSensorTests.cs
    let page = |b: [u8; 8]| ant::decode_power(&b).unwrap();
    let PowerPage::StandardPower {
        pedal_power_pct,
        pedal_power_right,
        ..
    } = page([16, 1, 0x32, 0, 0, 0, 0, 0])
    else {
        panic!()
    };
    assert_eq!((pedal_power_pct, pedal_power_right), (Some(50), false));
    let PowerPage::StandardPower {
        pedal_power_pct,
        pedal_power_right,
        ..
    } = page([16, 1, 0xB2, 0, 0, 0, 0, 0])
    else {
        panic!()
    };
    assert_eq!((pedal_power_pct, pedal_power_right), (Some(50), true));
    let PowerPage::StandardPower {
        pedal_power_pct, ..
    } = page([16, 1, 0xFF, 0, 0, 0, 0, 0])
    else {
        panic!()
    };
    assert_eq!(pedal_power_pct, None);
    let PowerPage::StandardPower {
        instantaneous_cadence_rpm,
        ..
    } = page([16, 1, 0, 128, 0, 0, 0, 0])
    else {
        panic!()
    };
    assert_eq!(instantaneous_cadence_rpm, Some(128));
    let PowerPage::StandardPower {
        instantaneous_power_w,
        ..
    } = page([16, 1, 0, 0, 0, 0, 0x11, 0x22])
    else {
        panic!()
    };
    assert_eq!(instantaneous_power_w, 8721);
    let mut s = ant::PowerState::default();
    s.update(&page([16, 0, 0, 0, 0, 0, 0, 0]));
    assert_eq!(
        s.update(&page([16, 1, 0, 0, 0x11, 0x22, 0, 0])).power_w,
        Some(8721.0)
    );
}

#[test]
fn antplus_combined_speed_and_cadence() {
    // BikeSpeedAndCadence/CombinedSpeedAndCadenceSensorTests.cs (the library's default wheel
    // is 2.2 m)
    let mut d = SensorDecoder::new(2.2);
    let src = Source::Ant(AntProfile::Bsc);
    d.decode(src, &[0; 8], t(0)).unwrap();
    let (_, r) = d
        .decode(src, &[0x00, 0x04, 0x02, 0x00, 0x00, 0x04, 0x05, 0x00], t(1))
        .unwrap();
    assert!(close(r.cadence_rpm.unwrap(), 120.0, 1e-9));
    assert!(close(r.speed_mps.unwrap(), 11.0, 1e-9));
}

#[test]
fn every_capture_also_decodes_through_the_dispatcher() {
    for (c, h) in [
        (C::HeartRateMeasurement, "16485401EC02"),
        (C::CscMeasurement, "03424D0000238A3D9542AC"),
        (C::CyclingPowerMeasurement, "140049007731550600008F7C"),
        (C::IndoorBikeData, "5408e2067e00bb00004d000000"),
    ] {
        let v = gatt::decode(c, &hex(h)).unwrap();
        assert!(!matches!(v, GattValue::DeviceInfo { .. }));
    }
}
