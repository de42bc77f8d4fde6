//! Scanning and connecting Bluetooth LE sensors through btleplug (cargo feature `ble`, ADR 11).
//!
//! The exported API is the same with and without the feature, so the generated bindings do not
//! depend on how the library was built: without it, `scan_sensors` and `connect_sensors` fail
//! with `InvalidState` saying so, and the app feeds notifications from its own Bluetooth stack
//! through `feed_notification`. With it, a connection's notifications go through the same hub
//! path as fed ones ([`crate::engine::SensorSide`]) into the workout being recorded.

// Without the feature nothing connects: the pump and the scan mapping are then used by the
// tests only.
#![cfg_attr(not(feature = "ble"), allow(dead_code))]

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fitedge_devices::gatt::{uuid16, uuids};
use fitedge_devices::hub::DeviceStatus;
use fitedge_devices::transport::Transport;
use fitedge_devices::DeviceKind;
use uuid::Uuid;

use crate::engine::{lock, Engine, SensorSide};
use crate::error::FitEdgeError;

#[cfg(feature = "ble")]
pub(crate) use crate::bluetooth::Bluetooth;

/// What a sensor measures, from the services it offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum SensorKind {
    HeartRate,
    CyclingPower,
    /// Cycling speed and cadence (wheel and crank revolutions).
    SpeedCadence,
    /// Running speed and cadence (a foot pod).
    RunningSpeedCadence,
    /// A treadmill or an indoor bike (FTMS).
    FitnessMachine,
    PulseOximeter,
    Other,
}

impl From<DeviceKind> for SensorKind {
    fn from(k: DeviceKind) -> Self {
        match k {
            DeviceKind::HeartRate => SensorKind::HeartRate,
            DeviceKind::CyclingPower => SensorKind::CyclingPower,
            DeviceKind::SpeedCadence => SensorKind::SpeedCadence,
            DeviceKind::RunningSpeedCadence => SensorKind::RunningSpeedCadence,
            DeviceKind::FitnessMachine => SensorKind::FitnessMachine,
            DeviceKind::PulseOximeter => SensorKind::PulseOximeter,
            DeviceKind::Other => SensorKind::Other,
        }
    }
}

/// A sensor that answered a scan.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FoundSensor {
    /// The platform's id for it (a MAC address on Linux, a UUID on iOS and macOS): pass it to
    /// `connect_sensors`.
    pub id: String,
    /// The name it advertises, if any.
    pub name: Option<String>,
    /// Signal strength of its last advertisement in dBm, when the platform reports one.
    pub rssi: Option<i16>,
    /// The services it advertises, as full UUIDs ("0000180d-0000-1000-8000-00805f9b34fb").
    pub services: Vec<String>,
    /// What the engine can read from it, from those services (empty: nothing it decodes).
    pub kinds: Vec<SensorKind>,
}

/// What the engine knows about one sensor: connected by `connect_sensors` or fed by the app.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SensorStatus {
    pub id: String,
    pub kind: SensorKind,
    pub connected: bool,
    /// The last battery level it reported (0x2A19), percent.
    pub battery_pct: Option<u8>,
    /// Notifications received from it.
    pub notifications: u64,
    /// Notifications that did not decode.
    pub errors: u64,
    /// Switched off for too many errors: its readings are ignored.
    pub disabled: bool,
}

impl From<&DeviceStatus> for SensorStatus {
    fn from(d: &DeviceStatus) -> Self {
        Self {
            id: d.registration.id.clone(),
            kind: d.registration.kind.into(),
            connected: d.connected,
            battery_pct: d.battery_pct,
            notifications: d.notifications,
            errors: d.errors,
            disabled: d.disabled,
        }
    }
}

/// Hears a connection's sensors connect, drop, reconnect, report a new battery level or get
/// disabled. Called on the engine's Bluetooth thread: return quickly.
#[uniffi::export(with_foreign)]
pub trait SensorListener: Send + Sync {
    fn on_sensor_status(&self, status: SensorStatus);
}

impl std::fmt::Debug for dyn SensorListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SensorListener")
    }
}

type Stop = Box<dyn FnOnce() + Send>;

/// Sensors connected by `connect_sensors`. Cancel it (or drop it) to disconnect them.
#[derive(uniffi::Object)]
pub struct SensorConnection {
    ids: Vec<String>,
    stop: Mutex<Option<Stop>>,
}

impl std::fmt::Debug for SensorConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorConnection")
            .field("ids", &self.ids)
            .finish_non_exhaustive()
    }
}

impl SensorConnection {
    pub(crate) fn new(ids: Vec<String>, stop: impl FnOnce() + Send + 'static) -> Arc<Self> {
        Arc::new(Self {
            ids,
            stop: Mutex::new(Some(Box::new(stop))),
        })
    }
}

#[uniffi::export]
impl SensorConnection {
    /// Stops recording these sensors and disconnects them. Returns at once: they show as
    /// disconnected in `Engine.sensors()` when it returns, and the radio links close in the
    /// background. Safe to call more than once.
    pub fn cancel(&self) {
        let stop = lock(&self.stop).take();
        if let Some(stop) = stop {
            stop();
        }
    }

    /// The ids of the sensors this connection holds.
    pub fn sensor_ids(&self) -> Vec<String> {
        self.ids.clone()
    }
}

impl Drop for SensorConnection {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Whether this build can scan and connect sensors itself (the cargo feature `ble`). Without it,
/// feed notifications from the platform's Bluetooth stack to `Engine.feed_notification`.
#[uniffi::export]
pub fn has_bluetooth_transport() -> bool {
    cfg!(feature = "ble")
}

pub(crate) fn kind_of_service(service: &Uuid) -> Option<DeviceKind> {
    Some(match uuid16(service)? {
        uuids::HEART_RATE_SERVICE => DeviceKind::HeartRate,
        uuids::CYCLING_POWER_SERVICE => DeviceKind::CyclingPower,
        uuids::CYCLING_SPEED_CADENCE_SERVICE => DeviceKind::SpeedCadence,
        uuids::RUNNING_SPEED_CADENCE_SERVICE => DeviceKind::RunningSpeedCadence,
        uuids::FITNESS_MACHINE_SERVICE => DeviceKind::FitnessMachine,
        uuids::PULSE_OXIMETER_SERVICE => DeviceKind::PulseOximeter,
        _ => return None,
    })
}

/// The hub kind of a sensor: that of the first service it advertises that the engine decodes.
pub(crate) fn kind_of_services(services: &[Uuid]) -> DeviceKind {
    services
        .iter()
        .find_map(kind_of_service)
        .unwrap_or(DeviceKind::Other)
}

pub(crate) fn found_sensor(
    id: String,
    name: Option<String>,
    rssi: Option<i16>,
    services: &[Uuid],
) -> FoundSensor {
    let mut kinds: Vec<SensorKind> = vec![];
    for k in services.iter().filter_map(kind_of_service) {
        if !kinds.contains(&k.into()) {
            kinds.push(k.into());
        }
    }
    FoundSensor {
        id,
        name,
        rssi,
        services: services.iter().map(Uuid::to_string).collect(),
        kinds,
    }
}

/// Whether the listener should hear of this status: a change of connection, battery or
/// disabling (the counters change with every notification and are read with `sensors()`).
fn worth_telling(before: Option<&SensorStatus>, now: &SensorStatus) -> bool {
    before.is_none_or(|b| {
        (b.connected, b.battery_pct, b.disabled) != (now.connected, now.battery_pct, now.disabled)
    })
}

/// Pumps a transport's events through the engine's hub into the recording until `stop` fires or
/// the transport ends, telling `listener` of status changes.
pub(crate) async fn pump<T: Transport>(
    mut transport: T,
    side: SensorSide,
    listener: Option<Arc<dyn SensorListener>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    stopped: Arc<AtomicBool>,
) {
    let mut told: HashMap<String, SensorStatus> = HashMap::new();
    loop {
        let ev = tokio::select! {
            biased;
            _ = &mut stop => return,
            ev = transport.next_event() => ev,
        };
        let Some(ev) = ev else { return };
        let Some(status) = side.apply(ev, &stopped) else {
            continue;
        };
        if !worth_telling(told.get(&status.id), &status) {
            continue;
        }
        told.insert(status.id.clone(), status.clone());
        if let Some(l) = &listener {
            // An exception thrown by the app's listener must not end the recording of its
            // sensors; the listener simply misses this status.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| l.on_sensor_status(status)));
        }
    }
}

/// Why a build without the feature cannot scan, with what to do instead.
#[cfg_attr(feature = "ble", allow(dead_code))]
pub(crate) fn no_transport() -> FitEdgeError {
    FitEdgeError::InvalidState(
        "this build has no Bluetooth transport (fitedge-ffi was built without the `ble` \
         feature): scan and connect with the platform's Bluetooth API and pass each \
         notification to feedNotification / feed_notification"
            .into(),
    )
}

/// The stand-in without the `ble` feature: same calls, each refused with [`no_transport`].
// Braced so that both builds make it with `Bluetooth::default()`.
#[cfg(not(feature = "ble"))]
#[derive(Debug, Default)]
pub(crate) struct Bluetooth {}

#[cfg(not(feature = "ble"))]
impl Bluetooth {
    pub(crate) fn scan(&self, _scan_for: Duration) -> Result<Vec<FoundSensor>, FitEdgeError> {
        Err(no_transport())
    }

    pub(crate) fn connect(
        &self,
        _ids: Vec<String>,
        _side: SensorSide,
        _clock: Arc<dyn fitedge_core::time::Clock>,
        _listener: Option<Arc<dyn SensorListener>>,
    ) -> Result<Arc<SensorConnection>, FitEdgeError> {
        Err(no_transport())
    }
}

#[uniffi::export]
impl Engine {
    /// Scans for Bluetooth LE fitness sensors (heart rate, cycling power, speed and cadence,
    /// foot pods, treadmills and indoor bikes, pulse oximeters) for `timeout_ms` and returns
    /// those that answered, for `connect_sensors`.
    ///
    /// Blocks for `timeout_ms` (at most 10 s more while the adapter starts): call it from a
    /// background thread, never the UI thread.
    ///
    /// Errors: `InvalidState` when this build has no Bluetooth transport (built without the
    /// `ble` feature: feed notifications from the platform's stack instead), when Bluetooth is
    /// unavailable (no adapter, powered off, permission refused, no Bluetooth service), or when
    /// called from async code.
    pub fn scan_sensors(&self, timeout_ms: u32) -> Result<Vec<FoundSensor>, FitEdgeError> {
        self.bluetooth()
            .scan(Duration::from_millis(u64::from(timeout_ms)))
    }

    /// Connects the sensors with these ids (from the last `scan_sensors`) and records their
    /// notifications into the workout being recorded, exactly as `feed_notification` does:
    /// the same decoders, the same choice of device per channel. A sensor that drops is
    /// reconnected (1 s, 2 s, 4 s ... up to 30 s apart) and subscribed again. Battery and
    /// connection state are kept while no workout runs; readings are recorded only during one.
    /// `listener` hears each sensor connect, drop, report a new battery level or get disabled.
    ///
    /// Returns at once; keep the connection and cancel it (or drop it) to disconnect.
    ///
    /// Errors: `InvalidInput` (no ids, or an id twice), `NotFound` (an id the last scan did not
    /// see: scan again), `InvalidState` (no Bluetooth transport in this build; a sensor already
    /// held by another connection).
    #[uniffi::method(default(listener = None))]
    pub fn connect_sensors(
        &self,
        ids: Vec<String>,
        listener: Option<Arc<dyn SensorListener>>,
    ) -> Result<Arc<SensorConnection>, FitEdgeError> {
        self.bluetooth()
            .connect(ids, self.sensor_side(), self.clock_ref().clone(), listener)
    }

    /// Every sensor the engine knows, connected by `connect_sensors` or fed through
    /// `feed_notification`: connection, battery, notification and error counts.
    pub fn sensors(&self) -> Vec<SensorStatus> {
        self.sensor_side().statuses()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use fitedge_core::Timestamp;
    use fitedge_devices::gatt::{uuid_from16, Characteristic};
    use fitedge_devices::transport::{channel, TransportEvent};
    use fitedge_devices::Source;

    use super::*;
    use crate::test_support::{engine, T0};

    #[derive(Default)]
    struct Heard(Mutex<Vec<SensorStatus>>);

    impl SensorListener for Heard {
        fn on_sensor_status(&self, status: SensorStatus) {
            self.0.lock().unwrap().push(status);
        }
    }

    fn notification(device: &str, c: Characteristic, bytes: &[u8], t: i64) -> TransportEvent {
        TransportEvent::Notification {
            device: device.into(),
            source: Source::Gatt(c),
            bytes: bytes.to_vec(),
            at: Timestamp(t),
        }
    }

    #[test]
    fn services_map_to_what_the_engine_reads() {
        let f = found_sensor(
            "AA:BB".into(),
            Some("KICKR".into()),
            Some(-61),
            &[
                uuid_from16(0x180F), // battery: not a kind
                uuid_from16(0x1818),
                uuid_from16(0x1826),
                uuid_from16(0x1818),
                Uuid::from_u128(0x6e40_0001_b5a3_f393_e0a9_e50e_24dc_ca9e), // vendor
            ],
        );
        assert_eq!(
            f.kinds,
            vec![SensorKind::CyclingPower, SensorKind::FitnessMachine]
        );
        assert_eq!(f.services.len(), 5);
        assert_eq!(f.services[0], "0000180f-0000-1000-8000-00805f9b34fb");
        assert_eq!((f.rssi, f.name.as_deref()), (Some(-61), Some("KICKR")));
        let all = [
            (0x180D, DeviceKind::HeartRate),
            (0x1818, DeviceKind::CyclingPower),
            (0x1816, DeviceKind::SpeedCadence),
            (0x1814, DeviceKind::RunningSpeedCadence),
            (0x1826, DeviceKind::FitnessMachine),
            (0x1822, DeviceKind::PulseOximeter),
        ];
        for (s, k) in all {
            assert_eq!(kind_of_services(&[uuid_from16(s)]), k, "{s:04X}");
        }
        assert_eq!(kind_of_services(&[uuid_from16(0x180A)]), DeviceKind::Other);
        assert_eq!(kind_of_services(&[]), DeviceKind::Other);
    }

    #[cfg(not(feature = "ble"))]
    #[test]
    fn without_the_ble_feature_scan_and_connect_say_so() {
        let (_dir, _clock, e) = engine();
        assert!(!has_bluetooth_transport());
        let started = std::time::Instant::now();
        for r in [
            e.scan_sensors(5_000).map(|_| ()),
            e.connect_sensors(vec!["AA:BB".into()], None).map(|_| ()),
        ] {
            match r {
                Err(FitEdgeError::InvalidState(m)) => {
                    assert!(m.contains("no Bluetooth transport"), "{m}");
                    assert!(m.contains("feed_notification"), "{m}");
                }
                other => panic!("{other:?}"),
            }
        }
        // Refused at once, not after the scan time.
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// With the feature, on a machine without a Bluetooth adapter or service (CI), a scan is
    /// an error within its bound, never a hang; with an adapter it is a list.
    #[cfg(feature = "ble")]
    #[test]
    fn scanning_without_an_adapter_is_an_error_not_a_hang() {
        let (_dir, _clock, e) = engine();
        assert!(has_bluetooth_transport());
        let started = std::time::Instant::now();
        let r = e.scan_sensors(500);
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(500 + 10_000 + 1_000),
            "{took:?}"
        );
        match r {
            Ok(_) => {} // a machine with an adapter
            Err(FitEdgeError::InvalidState(m)) => assert!(m.starts_with("Bluetooth"), "{m}"),
            Err(other) => panic!("{other:?}"),
        }
        // Connecting a sensor no scan saw.
        let r = e.connect_sensors(vec!["AA:BB".into()], None);
        assert!(matches!(r, Err(FitEdgeError::NotFound(_))), "{r:?}");
    }

    #[test]
    fn scanning_from_async_code_is_refused_not_a_panic() {
        let (_dir, _clock, e) = engine();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = rt.block_on(async { e.scan_sensors(100) });
        assert!(matches!(r, Err(FitEdgeError::InvalidState(_))), "{r:?}");
    }

    #[test]
    fn a_connection_is_cancelled_once_and_on_drop() {
        let calls = Arc::new(AtomicI64::new(0));
        let c = calls.clone();
        let conn = SensorConnection::new(vec!["a".into()], move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(conn.sensor_ids(), vec!["a".to_string()]);
        conn.cancel();
        conn.cancel();
        drop(conn);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let c = calls.clone();
        drop(SensorConnection::new(vec![], move || {
            c.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// The pump a Bluetooth connection runs, driven by a channel instead of a radio: status
    /// before the workout, readings into the workout through the hub, the listener told of
    /// changes only, and nothing applied after the stop.
    #[test]
    fn pumped_events_reach_the_hub_and_the_recording() {
        let (_dir, clock, e) = engine();
        let side = e.sensor_side();
        side.register("strap", DeviceKind::HeartRate);
        let (tx, transport) = channel();
        let heard = Arc::new(Heard::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let stopped = Arc::new(AtomicBool::new(false));
        let send = |ev| tx.send(ev).unwrap();

        // Before the workout: connected, battery read once at subscribe.
        send(TransportEvent::Connected {
            device: "strap".into(),
            at: Timestamp(T0),
        });
        send(notification(
            "strap",
            Characteristic::BatteryLevel,
            &[87],
            T0,
        ));
        send(notification(
            "strap",
            Characteristic::HeartRateMeasurement,
            &[0, 120],
            T0,
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let task = rt.spawn(pump(
            transport,
            side.clone(),
            Some(heard.clone() as Arc<dyn SensorListener>),
            stop_rx,
            stopped.clone(),
        ));
        let settle = |rt: &tokio::runtime::Runtime| {
            rt.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await })
        };
        settle(&rt);
        let s = &e.sensors()[0];
        assert_eq!(
            (s.id.as_str(), s.kind, s.connected, s.battery_pct),
            ("strap", SensorKind::HeartRate, true, Some(87))
        );
        assert_eq!(s.notifications, 2);
        assert!(e.live_metrics().is_none(), "no workout yet");

        // During a workout the readings are recorded, as fed notifications are.
        e.start_workout(Some(crate::Sport::Running)).unwrap();
        for i in 0..5 {
            send(notification(
                "strap",
                Characteristic::HeartRateMeasurement,
                &[0, 150],
                T0 + 1000 * i,
            ));
        }
        send(notification(
            "strap",
            Characteristic::HeartRateMeasurement,
            &[0x01],
            T0 + 5000,
        ));
        send(notification(
            "strap",
            Characteristic::BatteryLevel,
            &[86],
            T0 + 5000,
        ));
        settle(&rt);
        assert_eq!(e.live_metrics().unwrap().heart_rate_bpm, Some(150.0));
        let s = &e.sensors()[0];
        assert_eq!((s.errors, s.battery_pct), (1, Some(86)), "{s:?}");

        send(TransportEvent::Disconnected {
            device: "strap".into(),
            at: Timestamp(T0 + 6000),
        });
        settle(&rt);
        assert!(!e.sensors()[0].connected);
        let told: Vec<(bool, Option<u8>)> = heard
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|s| (s.connected, s.battery_pct))
            .collect();
        assert_eq!(
            told,
            vec![
                (true, None),
                (true, Some(87)),
                (true, Some(86)),
                (false, Some(86))
            ]
        );

        // After the stop flag nothing is applied, and the stop ends the pump.
        stopped.store(true, Ordering::SeqCst);
        send(TransportEvent::Connected {
            device: "strap".into(),
            at: Timestamp(T0 + 7000),
        });
        settle(&rt);
        assert!(!e.sensors()[0].connected);
        stop_tx.send(()).unwrap();
        rt.block_on(task).unwrap();
        clock.0.store(T0 + 120_000, Ordering::SeqCst);
        assert!(e.complete_workout().unwrap().avg_heart_rate_bpm.is_some());
    }

    #[test]
    fn fed_sensors_are_listed_with_their_battery() {
        let (_dir, _clock, e) = engine();
        assert!(e.sensors().is_empty());
        e.start_workout(None).unwrap();
        e.feed_notification("strap".into(), "180F".into(), "2A19".into(), vec![64], T0)
            .unwrap();
        let s = e.sensors();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].kind, s[0].connected, s[0].battery_pct),
            (SensorKind::Other, true, Some(64))
        );
    }
}
