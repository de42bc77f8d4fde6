//! The sensor hub: priority and failover, calibration per user, automatic disabling, events,
//! and the bring-your-own-Bluetooth transport feeding it.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

use fitedge_core::validation::Verdict;
use fitedge_core::{Channel, Reading, Sample, SampleSink, Timestamp, WorkoutError};
use fitedge_devices::gatt::{uuid_from16, Characteristic as C};
use fitedge_devices::hub::{
    DeviceEvent, DeviceKind, DeviceRegistration, HubConfig, HubError, SensorHub,
};
use fitedge_devices::transport::{self, ByoHandle, ControlAction, Recording};
use fitedge_devices::Source;

#[derive(Default)]
struct Collect(Vec<Sample>);

impl SampleSink for Collect {
    fn record(&mut self, s: Sample) -> Result<Verdict, WorkoutError> {
        self.0.push(s);
        Ok(Verdict::Accepted)
    }
}

impl Recording for Collect {
    fn control(&mut self, _: ControlAction, _: Timestamp) -> Result<(), WorkoutError> {
        Ok(())
    }
}

impl Collect {
    fn hr(&self) -> Vec<(i64, f64)> {
        self.0
            .iter()
            .filter_map(|s| match s.reading {
                Reading::HeartRate { bpm } => Some((s.t.0, bpm)),
                _ => None,
            })
            .collect()
    }
}

const HR: Source = Source::Gatt(C::HeartRateMeasurement);

#[test]
fn higher_priority_heart_rate_wins_and_the_other_takes_over_on_disconnect() {
    let mut hub = SensorHub::new(HubConfig::default());
    hub.register(DeviceRegistration::new("strap", DeviceKind::HeartRate, 10));
    hub.register(DeviceRegistration::new("watch", DeviceKind::HeartRate, 5));
    let mut sink = Collect::default();
    hub.connected("strap", Timestamp(0)).unwrap();
    hub.connected("watch", Timestamp(0)).unwrap();
    // Both notify every second, offset by 300 ms. The strap (150 bpm) drops at 10.5 s and is
    // back (its reconnect took 5 s) at 15.5 s.
    for i in 0..30i64 {
        let strap_t = Timestamp(i * 1000);
        let watch_t = Timestamp(i * 1000 + 300);
        let strap_up = !(11..=15).contains(&i);
        if i == 11 {
            hub.disconnected("strap", Timestamp(10_500)).unwrap();
        }
        if i == 16 {
            hub.connected("strap", Timestamp(15_500)).unwrap();
        }
        if strap_up {
            hub.on_notification("strap", HR, &[0, 150], strap_t, &mut sink)
                .unwrap();
        }
        hub.on_notification("watch", HR, &[0, 140], watch_t, &mut sink)
            .unwrap();
    }
    let hr = sink.hr();
    // Before the drop: only the strap.
    assert!(hr
        .iter()
        .filter(|(t, _)| *t < 10_500)
        .all(|(_, b)| *b == 150.0));
    // While it is gone: the watch, from its first notification after the drop.
    let gone: Vec<_> = hr
        .iter()
        .filter(|(t, _)| (10_500..16_000).contains(t))
        .collect();
    assert!(
        !gone.is_empty() && gone.iter().all(|(_, b)| *b == 140.0),
        "{gone:?}"
    );
    assert_eq!(gone[0].0, 10_300 + 1000);
    // Back: the strap again, and never both at once.
    assert!(hr
        .iter()
        .filter(|(t, _)| *t >= 16_000)
        .all(|(_, b)| *b == 150.0));
    // No gap in the heart-rate stream longer than the time from the strap's last beat to the
    // watch's next notification (1.3 s here): far shorter than the strap's 5 s reconnect.
    let max_gap = hr.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap();
    assert!(max_gap <= 1300, "gap {max_gap} ms");
    assert!(max_gap < 5000);
    let ev = hub.take_events();
    assert!(ev
        .iter()
        .any(|e| matches!(e, DeviceEvent::DeviceDisconnected { device, .. } if device == "strap")));
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, DeviceEvent::DeviceConnected { .. }))
            .count(),
        3
    );
}

#[test]
fn a_silent_winner_yields_after_the_stale_time() {
    let mut hub = SensorHub::default();
    hub.register(DeviceRegistration::new("strap", DeviceKind::HeartRate, 10));
    hub.register(DeviceRegistration::new("watch", DeviceKind::HeartRate, 5));
    hub.connected("strap", Timestamp(0)).unwrap();
    hub.connected("watch", Timestamp(0)).unwrap();
    let mut sink = Collect::default();
    hub.on_notification("strap", HR, &[0, 150], Timestamp(0), &mut sink)
        .unwrap();
    let d = hub
        .on_notification("watch", HR, &[0, 140], Timestamp(2000), &mut sink)
        .unwrap();
    assert_eq!(d.standby, 1);
    let d = hub
        .on_notification("watch", HR, &[0, 140], Timestamp(3500), &mut sink)
        .unwrap();
    assert_eq!(d.recorded, 1);
    assert_eq!(
        hub.winner(Channel::HeartRate, Timestamp(3500)),
        Some("watch")
    );
}

#[test]
fn calibration_belongs_to_a_user_and_medical_devices_stay_within_two_percent() {
    let mut hub = SensorHub::default();
    hub.register(DeviceRegistration::new("pm", DeviceKind::CyclingPower, 1));
    let mut ox = DeviceRegistration::new("ox", DeviceKind::PulseOximeter, 1);
    ox.medical_grade = true;
    hub.register(ox);
    hub.connected("pm", Timestamp(0)).unwrap();
    hub.connected("ox", Timestamp(0)).unwrap();
    assert_eq!(
        hub.calibrate("pm", 1.1, Timestamp(0)),
        Err(HubError::NoUser)
    );
    hub.set_user("alice");
    hub.calibrate("pm", 1.1, Timestamp(1)).unwrap();
    let mut sink = Collect::default();
    let power = [0u8, 0, 200, 0];
    hub.on_notification(
        "pm",
        Source::Gatt(C::CyclingPowerMeasurement),
        &power,
        Timestamp(2),
        &mut sink,
    )
    .unwrap();
    assert!(
        matches!(sink.0.last().unwrap().reading, Reading::Power { w } if (w - 220.0).abs() < 1e-9)
    );
    // A medical-grade oximeter is held back until calibrated for this user.
    let plx = [0u8, 0x61, 0x00, 0x3C, 0x00]; // SpO2 97, pulse 60
    let d = hub
        .on_notification(
            "ox",
            Source::Gatt(C::PlxContinuous),
            &plx,
            Timestamp(3),
            &mut sink,
        )
        .unwrap();
    assert_eq!(d.uncalibrated, 2);
    hub.calibrate("ox", 1.01, Timestamp(4)).unwrap();
    let d = hub
        .on_notification(
            "ox",
            Source::Gatt(C::PlxContinuous),
            &plx,
            Timestamp(5),
            &mut sink,
        )
        .unwrap();
    assert_eq!(d.recorded, 2);
    // Another user: recalibration is required.
    hub.set_user("bob");
    assert!(hub.device("pm").unwrap().needs_calibration);
    assert!(hub.device("ox").unwrap().needs_calibration);
    hub.on_notification(
        "pm",
        Source::Gatt(C::CyclingPowerMeasurement),
        &power,
        Timestamp(6),
        &mut sink,
    )
    .unwrap();
    assert!(matches!(sink.0.last().unwrap().reading, Reading::Power { w } if w == 200.0));
    // Outside +/-2 % a medical-grade device is faulty: refused and disabled.
    assert!(matches!(
        hub.calibrate("ox", 1.05, Timestamp(7)),
        Err(HubError::CalibrationOutOfRange { .. })
    ));
    assert!(hub.device("ox").unwrap().disabled);
    let ev = hub.take_events();
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, DeviceEvent::DeviceCalibrated { .. }))
            .count(),
        2
    );
    assert!(ev.iter().any(|e| matches!(e, DeviceEvent::DeviceErrorDetected { disabled: true, device, .. } if device == "ox")));
}

#[test]
fn a_device_with_too_many_errors_is_disabled() {
    let mut hub = SensorHub::new(HubConfig {
        error_window: 16,
        max_error_rate: 0.25,
        ..HubConfig::default()
    });
    hub.register(DeviceRegistration::new(
        "flaky",
        DeviceKind::CyclingPower,
        1,
    ));
    hub.connected("flaky", Timestamp(0)).unwrap();
    let mut sink = Collect::default();
    let src = Source::Gatt(C::CyclingPowerMeasurement);
    let mut disabled_at = None;
    for i in 0..40i64 {
        let bytes: &[u8] = if i % 3 == 0 {
            &[0x01, 0x00, 0x10]
        } else {
            &[0, 0, 100, 0]
        };
        match hub.on_notification("flaky", src, bytes, Timestamp(i * 1000), &mut sink) {
            Err(HubError::Disabled(_)) => {
                disabled_at.get_or_insert(i);
            }
            Err(HubError::Decode { error, .. }) => assert!(error.is_truncated()),
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(disabled_at.is_some());
    let ev = hub.take_events();
    let errors: Vec<_> = ev
        .iter()
        .filter(|e| matches!(e, DeviceEvent::DeviceErrorDetected { .. }))
        .collect();
    assert!(matches!(
        errors.last().unwrap(),
        DeviceEvent::DeviceErrorDetected { disabled: true, .. }
    ));
    assert!(errors[..errors.len() - 1].iter().all(|e| matches!(
        e,
        DeviceEvent::DeviceErrorDetected {
            disabled: false,
            ..
        }
    )));
    // a healthy device is never disabled
    hub.register(DeviceRegistration::new("good", DeviceKind::HeartRate, 1));
    for i in 0..100 {
        hub.on_notification("good", HR, &[0, 60], Timestamp(i), &mut sink)
            .unwrap();
    }
}

#[tokio::test]
async fn bring_your_own_bluetooth_feeds_the_hub() {
    let (handle, mut byo) = ByoHandle::new();
    let host = handle.clone();
    let feeder = std::thread::spawn(move || {
        let svc = uuid_from16(0x180D);
        host.connected("phone-strap", Timestamp(0)).unwrap();
        host.notify("phone-strap", svc, uuid_from16(0x2A19), &[77], Timestamp(1))
            .unwrap();
        host.notify(
            "phone-strap",
            svc,
            uuid_from16(0x2A37),
            &[0x10, 64, 0x00, 0x04],
            Timestamp(2),
        )
        .unwrap();
        assert!(host
            .notify("phone-strap", svc, uuid_from16(0x2A99), &[0], Timestamp(3))
            .is_err());
        host.disconnected("phone-strap", Timestamp(4)).unwrap();
    });
    feeder.join().unwrap();
    drop(handle);
    let mut hub = SensorHub::default();
    let mut sink = Collect::default();
    let report = transport::run(&mut byo, &mut hub, &mut sink).await;
    assert_eq!(report.notifications, 2);
    assert_eq!(sink.hr(), vec![(2, 64.0)]);
    assert!(sink
        .0
        .iter()
        .any(|s| matches!(s.reading, Reading::RrInterval { ms } if ms == 1000.0)));
    let status = hub.device("phone-strap").unwrap();
    assert_eq!(status.battery_pct, Some(77));
    assert!(!status.connected);
}
