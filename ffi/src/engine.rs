//! The `Engine`: one object per app, wrapping the store, the live recording, the sensor hub and
//! the live-metrics listeners. Every method delegates to `fitedge-core` or `fitedge-devices`
//! and maps errors in one place ([`crate::error`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fitedge_core as core;
use fitedge_core::recording::Recording;
use fitedge_core::store::{Cursor, ListFilter, Period, Store};
use fitedge_core::time::{Clock, SystemClock};
use fitedge_devices::gatt::Characteristic;
use fitedge_devices::hub::Dispatch;
use fitedge_devices::transport::TransportEvent;
use fitedge_devices::{DeviceKind, DeviceRegistration, HubError, SensorHub, Source};

use crate::error::FitEdgeError;
use crate::sensors::{Bluetooth, SensorStatus};
use crate::types::*;

/// The time source of an engine. Apps use the system clock (the default); tests and
/// simulations pass their own.
#[uniffi::export(with_foreign)]
pub trait EngineClock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// Receives live metrics during a workout: at most once per second of recording time, and at
/// every start, pause, resume and completion. Called on the thread that fed the sample.
#[uniffi::export(with_foreign)]
pub trait LiveMetricsListener: Send + Sync {
    fn on_live_metrics(&self, metrics: LiveMetrics);
}

/// Receives a health alert the moment a sample breaks a range of the rules: heart rate outside
/// 40 .. the athlete's maximum, or blood oxygen below 90 %. One call when a channel goes out of
/// range; it is called again only after the channel has been back in range. Called on the thread
/// that fed the sample, after the engine has released its lock (it may call back into the
/// engine).
#[uniffi::export(with_foreign)]
pub trait HealthAlertListener: Send + Sync {
    fn on_health_alert(&self, alert: HealthAlert);
}

#[derive(Debug)]
struct ForeignClock(Arc<dyn EngineClock>);

impl Clock for ForeignClock {
    fn now(&self) -> core::Timestamp {
        core::Timestamp(self.0.now_ms())
    }
}

impl std::fmt::Debug for dyn EngineClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineClock")
    }
}

#[derive(Default)]
pub(crate) struct ListenerLists {
    live: Vec<(u64, Arc<dyn LiveMetricsListener>)>,
    alerts: Vec<(u64, Arc<dyn HealthAlertListener>)>,
}

type Listeners = Arc<Mutex<ListenerLists>>;

pub(crate) struct State {
    recording: Option<Recording>,
    hub: SensorHub,
    /// Sample time of the last live-metrics call: the listener is called once per second of
    /// recording, judged by the samples, so feeding a sample never calls back into the app's
    /// clock.
    last_emit_ms: i64,
}

/// Stands in for the recording while none runs, so the hub still decodes a connected sensor's
/// notifications (battery, device information, its counters) and only the readings are refused.
struct NotRecording;

impl core::SampleSink for NotRecording {
    fn record(&mut self, _: core::Sample) -> Result<core::workout::Outcome, core::WorkoutError> {
        Err(core::WorkoutError::InvalidTransition {
            state: core::WorkoutState::NotStarted,
            command: core::workout::Command::Record,
        })
    }
}

impl State {
    /// The one path from a sensor notification to the recording, for notifications the app
    /// feeds and those of the Bluetooth transport alike: the hub decodes it, keeps the readings
    /// of the channels this device wins, records them, and the listeners hear about it.
    fn notify(
        &mut self,
        listeners: &Listeners,
        device: &str,
        source: Source,
        payload: &[u8],
        at: core::Timestamp,
    ) -> Result<(Dispatch, Option<Emission>), HubError> {
        let State { recording, hub, .. } = self;
        let d = match recording.as_mut() {
            Some(rec) => hub.on_notification(device, source, payload, at, rec),
            None => hub.on_notification(device, source, payload, at, &mut NotRecording),
        };
        // Also after a payload that did not decode: that is what queues most events.
        self.drop_device_events();
        Ok((d?, due(listeners, self, false, Some(at.0))))
    }

    /// The hub queues a device event for every connection change and every payload that does
    /// not decode; nothing in the SDK consumes them, and an engine runs for hours, so they are
    /// dropped here. Nothing is lost to the app: the same facts are in each sensor's status
    /// (`connected`, `errors`, `disabled`), which `Engine.sensors()` and a connection's
    /// `SensorListener` report.
    fn drop_device_events(&mut self) {
        let _ = self.hub.take_events();
    }
}

/// The engine's sensor side, shared with a Bluetooth connection that runs on the engine's
/// Bluetooth thread. It holds no runtime, so the last copy may be dropped on any thread.
#[derive(Clone)]
pub(crate) struct SensorSide {
    state: Arc<Mutex<State>>,
    listeners: Listeners,
}

impl std::fmt::Debug for SensorSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorSide").finish_non_exhaustive()
    }
}

// Without the `ble` feature only the tests connect sensors.
#[cfg_attr(not(feature = "ble"), allow(dead_code))]
impl SensorSide {
    /// Registers a sensor before it connects, so it feeds its channels at the priority of the
    /// app's own devices. A sensor the hub already knows keeps its calibration and serial number.
    pub(crate) fn register(&self, id: &str, kind: DeviceKind) {
        let mut st = lock(&self.state);
        if st.hub.device(id).is_none() {
            st.hub.register(DeviceRegistration::new(id, kind, 1));
        }
    }

    /// Applies one transport event and returns the device's status after it. Nothing is applied
    /// once `stopped` is set: it is read under the same lock the canceller takes to mark the
    /// devices disconnected, so a late event cannot connect them again.
    pub(crate) fn apply(
        &self,
        ev: TransportEvent,
        stopped: &std::sync::atomic::AtomicBool,
    ) -> Option<SensorStatus> {
        let mut emission = None;
        let mut st = lock(&self.state);
        if stopped.load(Ordering::SeqCst) {
            return None;
        }
        let device = match ev {
            TransportEvent::Connected { device, at } => {
                let _ = st.hub.connected(&device, at);
                device
            }
            TransportEvent::Disconnected { device, at } => {
                let _ = st.hub.disconnected(&device, at);
                device
            }
            TransportEvent::Notification {
                device,
                source,
                bytes,
                at,
            } => {
                // A payload that does not decode is counted against the device by the hub.
                if let Ok((_, e)) = st.notify(&self.listeners, &device, source, &bytes, at) {
                    emission = e;
                }
                device
            }
            // Radio transports carry no host samples or workout commands.
            TransportEvent::Host(_) | TransportEvent::Control { .. } => return None,
        };
        st.drop_device_events();
        let status = st.hub.device(&device).map(SensorStatus::from);
        drop(st);
        deliver(emission);
        status
    }

    /// Marks sensors disconnected (their connection was cancelled).
    pub(crate) fn disconnected(&self, ids: &[String], at: core::Timestamp) {
        let mut st = lock(&self.state);
        for id in ids {
            let _ = st.hub.disconnected(id, at);
        }
        st.drop_device_events();
    }

    pub(crate) fn statuses(&self) -> Vec<SensorStatus> {
        lock(&self.state)
            .hub
            .devices()
            .map(SensorStatus::from)
            .collect()
    }
}

#[derive(uniffi::Object)]
pub struct Engine {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    state: Arc<Mutex<State>>,
    listeners: Listeners,
    next_listener: AtomicU64,
    /// Made on the first sync call (see [`crate::sync`]).
    runtime: crate::sync::SyncRuntime,
    /// Trust anchors for the sync server besides the public CAs (`set_sync_root_certificates`).
    sync_roots: Mutex<Option<String>>,
    /// The btleplug transport (feature `ble`; without it, its calls say so).
    bluetooth: Bluetooth,
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Dropping a tokio runtime waits for its tasks, which tokio forbids (by panicking)
        // inside async code; a Rust host may well drop its last engine there. The sync runtime
        // runs nothing between calls, so letting it go in the background loses nothing.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// A live-metrics subscription; cancel it (or drop it) to stop the calls.
#[derive(uniffi::Object)]
pub struct Subscription {
    id: u64,
    listeners: Listeners,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish()
    }
}

#[uniffi::export]
impl Subscription {
    /// Stops the calls. Safe to call more than once.
    pub fn cancel(&self) {
        let mut l = lock(&self.listeners);
        l.live.retain(|(id, _)| *id != self.id);
        l.alerts.retain(|(id, _)| *id != self.id);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.cancel();
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const EMIT_EVERY_MS: i64 = 1000;

/// Live metrics due to the listeners: taken while the engine's state is locked, delivered
/// ([`deliver`]) once it is released, so a listener may call back into the engine (read
/// `live_metrics`, pause the workout, cancel its subscription) without deadlocking.
#[must_use = "deliver it once the engine's state is unlocked"]
pub(crate) struct Emission {
    listeners: Vec<Arc<dyn LiveMetricsListener>>,
    metrics: Option<LiveMetrics>,
    alert_listeners: Vec<Arc<dyn HealthAlertListener>>,
    alerts: Vec<HealthAlert>,
}

/// Calls the listeners of an emission; never with the engine's state or the listener list
/// locked. Alerts first: they are what the athlete must see.
fn deliver(emission: Option<Emission>) {
    if let Some(e) = emission {
        for a in &e.alerts {
            for l in &e.alert_listeners {
                l.on_health_alert(a.clone());
            }
        }
        if let Some(m) = e.metrics {
            for l in e.listeners {
                l.on_live_metrics(m.clone());
            }
        }
    }
}

/// What the listeners are due after the recording took something in: the health alerts it
/// raised, and live metrics now (`force`) or when `sample_t` is a second past the last call.
/// The recording's other domain events are drained too (the engine reports lifecycle changes
/// through the calls' results and live metrics), so they do not pile up over a long workout.
fn due(
    listeners: &Listeners,
    st: &mut State,
    force: bool,
    sample_t: Option<i64>,
) -> Option<Emission> {
    let State {
        recording,
        last_emit_ms,
        ..
    } = st;
    let rec = recording.as_mut()?;
    let alerts: Vec<HealthAlert> = rec
        .take_events()
        .iter()
        .filter_map(HealthAlert::from_event)
        .collect();
    let live_due = force
        || match sample_t {
            Some(t) if t.saturating_sub(*last_emit_ms) >= EMIT_EVERY_MS => {
                *last_emit_ms = t;
                true
            }
            _ => false,
        };
    // The common case, most samples: nothing due, and the listener list is not even locked.
    if !live_due && alerts.is_empty() {
        return None;
    }
    let (live, alert_listeners) = {
        let l = lock(listeners);
        let live: Vec<Arc<dyn LiveMetricsListener>> = if live_due {
            l.live.iter().map(|(_, l)| l.clone()).collect()
        } else {
            vec![]
        };
        let alert_listeners: Vec<Arc<dyn HealthAlertListener>> = if alerts.is_empty() {
            vec![]
        } else {
            l.alerts.iter().map(|(_, l)| l.clone()).collect()
        };
        (live, alert_listeners)
    };
    let metrics = if live.is_empty() {
        None
    } else {
        rec.live()
            .map(|m| LiveMetrics::from_core(&rec.id().0, rec.state(), m))
    };
    if metrics.is_none() && alert_listeners.is_empty() {
        return None;
    }
    Some(Emission {
        listeners: live,
        metrics,
        alert_listeners,
        alerts,
    })
}

fn kind_of(c: Characteristic) -> DeviceKind {
    match c {
        Characteristic::HeartRateMeasurement | Characteristic::BodySensorLocation => {
            DeviceKind::HeartRate
        }
        Characteristic::CyclingPowerMeasurement => DeviceKind::CyclingPower,
        Characteristic::CscMeasurement => DeviceKind::SpeedCadence,
        Characteristic::RscMeasurement => DeviceKind::RunningSpeedCadence,
        Characteristic::TreadmillData | Characteristic::IndoorBikeData => {
            DeviceKind::FitnessMachine
        }
        Characteristic::PlxSpotCheck | Characteristic::PlxContinuous => DeviceKind::PulseOximeter,
        _ => DeviceKind::Other,
    }
}

impl Engine {
    fn open_inner(
        database_path: String,
        storage_key: Vec<u8>,
        profile: Option<AthleteProfile>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, FitEdgeError> {
        let key = core::crypto::StorageKey::new(&storage_key)
            .map_err(|e| FitEdgeError::InvalidInput(e.to_string()))?;
        let store = Arc::new(Store::open(Path::new(&database_path), Some(key))?);
        if let Some(p) = profile {
            let (_, version) = store.profile()?;
            store.update_profile(version, &p.to_core())?;
        }
        // An unfinished recording (the app was killed) is picked up again.
        let recording = Recording::recover(store.clone(), clock.clone())?.pop();
        Ok(Arc::new(Self {
            store,
            clock,
            state: Arc::new(Mutex::new(State {
                recording,
                hub: SensorHub::default(),
                last_emit_ms: i64::MIN,
            })),
            listeners: Arc::new(Mutex::new(ListenerLists::default())),
            next_listener: AtomicU64::new(1),
            runtime: crate::sync::SyncRuntime::new(),
            sync_roots: Mutex::new(None),
            bluetooth: Bluetooth::default(),
        }))
    }

    fn due(&self, st: &mut State, force: bool, sample_t: Option<i64>) -> Option<Emission> {
        due(&self.listeners, st, force, sample_t)
    }

    fn with_recording<T>(
        &self,
        f: impl FnOnce(&mut Recording) -> Result<T, FitEdgeError>,
    ) -> Result<T, FitEdgeError> {
        let mut st = lock(&self.state);
        let rec = st
            .recording
            .as_mut()
            .ok_or_else(|| FitEdgeError::InvalidState("no workout is being recorded".into()))?;
        let out = f(rec)?;
        let e = self.due(&mut st, true, None);
        drop(st);
        deliver(e);
        Ok(out)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn clock_ref(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub(crate) fn runtime(&self) -> &crate::sync::SyncRuntime {
        &self.runtime
    }

    pub(crate) fn sync_roots(&self) -> &Mutex<Option<String>> {
        &self.sync_roots
    }

    pub(crate) fn bluetooth(&self) -> &Bluetooth {
        &self.bluetooth
    }

    pub(crate) fn sensor_side(&self) -> SensorSide {
        SensorSide {
            state: self.state.clone(),
            listeners: self.listeners.clone(),
        }
    }

    fn profile_core(&self) -> Result<core::Profile, FitEdgeError> {
        Ok(self.store.profile()?.0.to_profile(self.clock.now()))
    }
}

#[uniffi::export]
impl Engine {
    /// Opens (creating it if needed) the database at `database_path`. `storage_key` is the
    /// 32-byte key that encrypts health data: keep it in the platform keystore. A given
    /// `profile` replaces the stored one. An interrupted recording is recovered.
    #[uniffi::constructor(default(profile = None))]
    pub fn open(
        database_path: String,
        storage_key: Vec<u8>,
        profile: Option<AthleteProfile>,
    ) -> Result<Arc<Self>, FitEdgeError> {
        Self::open_inner(database_path, storage_key, profile, Arc::new(SystemClock))
    }

    /// Like `open`, with another time source (tests, simulations, replays).
    #[uniffi::constructor]
    pub fn open_with_clock(
        database_path: String,
        storage_key: Vec<u8>,
        profile: Option<AthleteProfile>,
        clock: Arc<dyn EngineClock>,
    ) -> Result<Arc<Self>, FitEdgeError> {
        Self::open_inner(
            database_path,
            storage_key,
            profile,
            Arc::new(ForeignClock(clock)),
        )
    }

    /// Starts recording a workout now. `sport` null: the engine detects it.
    #[uniffi::method(default(sport = None))]
    pub fn start_workout(&self, sport: Option<Sport>) -> Result<String, FitEdgeError> {
        let mut st = lock(&self.state);
        if let Some(r) = &st.recording {
            if matches!(
                r.state(),
                core::WorkoutState::Active | core::WorkoutState::Paused { .. }
            ) {
                return Err(FitEdgeError::InvalidState(format!(
                    "workout {} is already being recorded",
                    r.id()
                )));
            }
        }
        let sport = sport.map(core::Sport::from);
        let profile = self.profile_core()?.resolve();
        let rec = Recording::start(
            self.store.clone(),
            self.clock.clone(),
            sport,
            profile,
            core::workout::WorkoutConfig::for_sport(sport),
        )?;
        let id = rec.id().0.clone();
        st.recording = Some(rec);
        st.last_emit_ms = i64::MIN;
        let e = self.due(&mut st, true, None);
        drop(st);
        deliver(e);
        Ok(id)
    }

    pub fn pause_workout(&self) -> Result<(), FitEdgeError> {
        self.with_recording(|r| Ok(r.pause()?))
    }

    pub fn resume_workout(&self) -> Result<(), FitEdgeError> {
        self.with_recording(|r| Ok(r.resume()?))
    }

    pub fn lap(&self) -> Result<(), FitEdgeError> {
        self.with_recording(|r| Ok(r.lap()?))
    }

    /// Completes and stores the workout. Refused (InvalidState) under one minute of timer.
    pub fn complete_workout(&self) -> Result<WorkoutSummary, FitEdgeError> {
        self.with_recording(|r| Ok(WorkoutSummary::from(&r.complete()?)))
    }

    /// Cancels the workout: nothing of it is kept.
    pub fn cancel_workout(&self) -> Result<(), FitEdgeError> {
        self.with_recording(|r| Ok(r.cancel()?))
    }

    /// The state of the current (or last) workout.
    pub fn workout_state(&self) -> WorkoutState {
        lock(&self.state)
            .recording
            .as_ref()
            .map_or(WorkoutState::NotStarted, |r| r.state().into())
    }

    /// Feeds one sample to the workout being recorded.
    pub fn record_sample(&self, sample: Sample) -> Result<SampleVerdict, FitEdgeError> {
        let mut st = lock(&self.state);
        let rec = st
            .recording
            .as_mut()
            .ok_or_else(|| FitEdgeError::InvalidState("no workout is being recorded".into()))?;
        let v = rec.record(sample.into())?;
        let e = self.due(&mut st, false, Some(sample.timestamp_ms));
        drop(st);
        deliver(e);
        Ok(v.into())
    }

    /// Feeds many samples in one call: much cheaper per sample than `record_sample`.
    pub fn record_samples(&self, samples: Vec<Sample>) -> Result<BatchResult, FitEdgeError> {
        let mut st = lock(&self.state);
        let rec = st
            .recording
            .as_mut()
            .ok_or_else(|| FitEdgeError::InvalidState("no workout is being recorded".into()))?;
        let mut out = BatchResult {
            accepted: 0,
            flagged: 0,
            rejected: 0,
        };
        let last_t = samples.iter().map(|s| s.timestamp_ms).max();
        for v in rec.record_batch(samples.into_iter().map(Into::into))? {
            match v {
                core::validation::Verdict::Accepted => out.accepted += 1,
                core::validation::Verdict::Flagged(_) => out.flagged += 1,
                core::validation::Verdict::Rejected(_) => out.rejected += 1,
            }
        }
        let e = self.due(&mut st, false, last_t);
        drop(st);
        deliver(e);
        Ok(out)
    }

    /// A raw notification from the app's own Bluetooth stack. `characteristic_uuid` is "2A37"
    /// or a full UUID; an unknown device is registered on its first notification.
    pub fn feed_notification(
        &self,
        device_id: String,
        service_uuid: String,
        characteristic_uuid: String,
        payload: Vec<u8>,
        timestamp_ms: i64,
    ) -> Result<(), FitEdgeError> {
        let _ = service_uuid; // the characteristic identifies the decoder
        let c = Characteristic::parse(&characteristic_uuid).ok_or_else(|| {
            FitEdgeError::InvalidInput(format!("unsupported characteristic {characteristic_uuid}"))
        })?;
        let mut st = lock(&self.state);
        if st.recording.is_none() {
            return Err(FitEdgeError::InvalidState(
                "no workout is being recorded".into(),
            ));
        }
        let at = core::Timestamp(timestamp_ms);
        if st.hub.device(&device_id).is_none() {
            // A device the app's stack talks to is connected by definition.
            st.hub
                .register(DeviceRegistration::new(device_id.clone(), kind_of(c), 1));
            st.hub
                .connected(&device_id, at)
                .map_err(|e| FitEdgeError::InvalidInput(e.to_string()))?;
        }
        let (_, e) = st
            .notify(&self.listeners, &device_id, Source::Gatt(c), &payload, at)
            .map_err(|e| FitEdgeError::InvalidInput(e.to_string()))?;
        drop(st);
        deliver(e);
        Ok(())
    }

    /// The live figures of the workout being recorded, if any.
    pub fn live_metrics(&self) -> Option<LiveMetrics> {
        let st = lock(&self.state);
        let rec = st.recording.as_ref()?;
        rec.live()
            .map(|m| LiveMetrics::from_core(&rec.id().0, rec.state(), m))
    }

    /// Calls `listener` with live metrics until the returned subscription is cancelled.
    pub fn subscribe_live_metrics(
        &self,
        listener: Arc<dyn LiveMetricsListener>,
    ) -> Arc<Subscription> {
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        lock(&self.listeners).live.push((id, listener));
        Arc::new(Subscription {
            id,
            listeners: self.listeners.clone(),
        })
    }

    /// Calls `listener` with every health alert of the workouts recorded from now on, until the
    /// returned subscription is cancelled.
    pub fn subscribe_health_alerts(
        &self,
        listener: Arc<dyn HealthAlertListener>,
    ) -> Arc<Subscription> {
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        lock(&self.listeners).alerts.push((id, listener));
        Arc::new(Subscription {
            id,
            listeners: self.listeners.clone(),
        })
    }

    /// History, newest first; pass the returned cursor to get the next page.
    #[uniffi::method(default(sport = None, from_ms = None, to_ms = None, cursor = None))]
    pub fn list_workouts(
        &self,
        limit: u32,
        sport: Option<Sport>,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
        cursor: Option<String>,
    ) -> Result<WorkoutPage, FitEdgeError> {
        let after = cursor
            .map(|c| {
                let (t, id) = c
                    .split_once('/')
                    .ok_or_else(|| FitEdgeError::InvalidInput(format!("bad cursor {c:?}")))?;
                let t = t
                    .parse()
                    .map_err(|_| FitEdgeError::InvalidInput(format!("bad cursor {c:?}")))?;
                Ok::<_, FitEdgeError>(Cursor {
                    start_time: core::Timestamp(t),
                    id: id.to_string(),
                })
            })
            .transpose()?;
        let filter = ListFilter {
            sport: sport.map(Into::into),
            from: from_ms.map(core::Timestamp),
            to: to_ms.map(core::Timestamp),
        };
        let page = self.store.list(&filter, limit as usize, after.as_ref())?;
        Ok(WorkoutPage {
            items: page
                .items
                .into_iter()
                .map(|i| WorkoutListItem {
                    id: i.id,
                    sport: i.sport.into(),
                    start_time_ms: i.start_time.0,
                    title: i.title,
                    timer_s: i.timer_s,
                    distance_m: i.distance_m,
                    calories_kcal: i.calories_kcal,
                })
                .collect(),
            next_cursor: page.next.map(|c| format!("{}/{}", c.start_time.0, c.id)),
        })
    }

    pub fn workout_summary(&self, workout_id: String) -> Result<WorkoutSummary, FitEdgeError> {
        Ok(WorkoutSummary::from(&self.store.summary(&workout_id)?))
    }

    pub fn delete_workout(&self, workout_id: String) -> Result<(), FitEdgeError> {
        let id = self.store.resolve_id(&workout_id)?;
        Ok(self.store.delete_workout(&id)?)
    }

    #[uniffi::method(default(sport = None))]
    pub fn stats(
        &self,
        period: StatsPeriod,
        sport: Option<Sport>,
    ) -> Result<WorkoutStats, FitEdgeError> {
        let p = match period {
            StatsPeriod::Week => Period::Week,
            StatsPeriod::Month => Period::Month,
            StatsPeriod::Year => Period::Year,
        };
        Ok(match self.store.stats(p, sport.map(Into::into), 0)? {
            core::store::WorkoutStats::NotEnoughData { workouts, needed } => {
                WorkoutStats::NotEnoughData { workouts, needed }
            }
            core::store::WorkoutStats::Ok { workouts, periods } => WorkoutStats::Ready {
                workouts,
                periods: periods
                    .into_iter()
                    .map(|p| PeriodStats {
                        period: p.period,
                        workouts: p.workouts,
                        distance_m: p.distance_m,
                        timer_s: p.timer_s,
                        calories_kcal: p.calories_kcal,
                        ascent_m: p.ascent_m,
                        avg_pace_s_per_km: p.avg_pace_s_per_km,
                    })
                    .collect(),
            },
        })
    }

    /// The route for a map, simplified to `tolerance_m` metres.
    #[uniffi::method(default(tolerance_m = 5.0))]
    pub fn route(&self, workout_id: String, tolerance_m: f64) -> Result<RouteMap, FitEdgeError> {
        let r = self.store.route(&workout_id, tolerance_m)?;
        Ok(RouteMap {
            geojson: r.geojson.to_string(),
            polyline: r.polyline,
        })
    }

    pub fn profile(&self) -> Result<AthleteProfile, FitEdgeError> {
        Ok(AthleteProfile::from_core(&self.store.profile()?.0))
    }

    pub fn update_profile(&self, profile: AthleteProfile) -> Result<(), FitEdgeError> {
        let (_, version) = self.store.profile()?;
        self.store.update_profile(version, &profile.to_core())?;
        Ok(())
    }

    #[uniffi::method(default(service_life_km = None))]
    pub fn add_gear(
        &self,
        kind: GearKind,
        name: String,
        service_life_km: Option<f64>,
    ) -> Result<Gear, FitEdgeError> {
        let k = match kind {
            GearKind::Shoes => core::gear::GearKind::Shoes,
            GearKind::Bike => core::gear::GearKind::Bike,
            GearKind::Other => core::gear::GearKind::Other,
        };
        Ok(self
            .store
            .add_gear(k, &name, service_life_km, self.clock.now())?
            .into())
    }

    pub fn gear(&self) -> Result<Vec<Gear>, FitEdgeError> {
        Ok(self
            .store
            .list_gear(false)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Assigns a workout to gear (null: to none) and returns the gear's new wear.
    pub fn assign_gear(
        &self,
        workout_id: String,
        gear_id: Option<String>,
    ) -> Result<Option<Gear>, FitEdgeError> {
        self.store
            .assign_gear(&workout_id, gear_id.as_deref(), self.clock.now())?;
        gear_id.map(|g| Ok(self.store.gear(&g)?.into())).transpose()
    }

    /// Imports a FIT, GPX or TCX file (by extension); returns the workouts stored.
    pub fn import_file(&self, path: String) -> Result<Vec<WorkoutSummary>, FitEdgeError> {
        let bytes =
            std::fs::read(&path).map_err(|e| FitEdgeError::InvalidInput(format!("{path}: {e}")))?;
        let profile = self.profile_core()?;
        let key = format!("{}:{}", path, bytes.len());
        let ext = Path::new(&path)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let sessions = match ext.parse::<core::formats::Format>() {
            Ok(f) => core::formats::import(f, &bytes, profile, &key)?,
            Err(_) => core::fit::import(&bytes, profile, &key)?.sessions,
        };
        let saved = self
            .store
            .save_import(&path, &key, &sessions, self.clock.now())?;
        Ok(sessions
            .iter()
            .zip(saved)
            .filter(|(_, s)| !matches!(s, core::store::Saved::NotRecorded))
            .map(|(s, _)| WorkoutSummary::from(&s.summary))
            .collect())
    }

    /// Writes a stored workout as GPX or TCX to `path`.
    pub fn export_workout(
        &self,
        workout_id: String,
        format: FileFormat,
        path: String,
    ) -> Result<(), FitEdgeError> {
        let f = match format {
            FileFormat::Gpx => core::formats::Format::Gpx,
            FileFormat::Tcx => core::formats::Format::Tcx,
            FileFormat::Fit => {
                return Err(FitEdgeError::InvalidInput(
                    "FIT export is not supported yet; use GPX or TCX".into(),
                ))
            }
        };
        let summary = self.store.summary(&workout_id)?;
        let samples = self.store.samples(&summary.id.0)?;
        let text = core::formats::export(f, &summary, &samples)?;
        std::fs::write(&path, text).map_err(|e| FitEdgeError::Storage(format!("{path}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, OnceLock, Weak};
    use std::time::Duration;

    use super::*;
    use crate::test_support::{engine, T0};

    /// A listener that calls back into the engine from its callback, as an app's UI code may.
    #[derive(Default)]
    struct Reentrant {
        engine: OnceLock<Weak<Engine>>,
        heard: Mutex<Vec<(String, bool, WorkoutState)>>,
    }

    impl LiveMetricsListener for Reentrant {
        fn on_live_metrics(&self, metrics: LiveMetrics) {
            let engine = self.engine.get().and_then(Weak::upgrade).expect("engine");
            let live_again = engine.live_metrics().is_some();
            let state = engine.workout_state();
            lock(&self.heard).push((metrics.workout_id, live_again, state));
        }
    }

    #[test]
    fn device_events_do_not_pile_up_in_a_long_recording() {
        let (_dir, _clock, engine) = engine();
        engine.start_workout(Some(Sport::Running)).unwrap();
        let mut refused = 0;
        for i in 0..2000_i64 {
            // Flags announce a 16-bit heart rate, and the payload ends before it.
            let garbage = vec![0x01];
            let at = T0 + i * 250;
            if engine
                .feed_notification("strap".into(), "180D".into(), "2A37".into(), garbage, at)
                .is_err()
            {
                refused += 1;
            }
        }
        assert_eq!(refused, 2000);
        assert!(lock(&engine.state).hub.take_events().is_empty());
        // What the events said is in the sensor's status.
        let strap = engine
            .sensors()
            .into_iter()
            .find(|s| s.id == "strap")
            .unwrap();
        assert!(strap.errors > 0 && strap.connected, "{strap:?}");
    }

    /// Collects health alerts, reading the engine's state from inside the callback (the engine
    /// must not hold its lock while calling).
    #[derive(Default)]
    struct Alerts {
        engine: OnceLock<Weak<Engine>>,
        heard: Mutex<Vec<HealthAlert>>,
    }

    impl HealthAlertListener for Alerts {
        fn on_health_alert(&self, alert: HealthAlert) {
            let engine = self.engine.get().and_then(Weak::upgrade).expect("engine");
            assert!(engine.live_metrics().is_some());
            lock(&self.heard).push(alert);
        }
    }

    #[test]
    fn health_alerts_reach_the_app_once_per_excursion() {
        let (_dir, clock, engine) = engine();
        let alerts = Arc::new(Alerts::default());
        alerts.engine.set(Arc::downgrade(&engine)).unwrap();
        let sub = engine.subscribe_health_alerts(alerts.clone());
        let id = engine.start_workout(Some(Sport::Running)).unwrap();
        let hr = |t: i64, bpm: f64| Sample {
            timestamp_ms: t,
            reading: Reading::HeartRate { bpm },
        };
        let mut t = T0;
        let mut step = |bpm: f64| {
            t += 1000;
            clock.0.store(t, Ordering::SeqCst);
            engine.record_sample(hr(t, bpm)).unwrap()
        };
        assert_eq!(step(150.0), SampleVerdict::Accepted);
        // Above 220 - age of the default profile: one alert for the whole excursion.
        assert!(matches!(step(215.0), SampleVerdict::Flagged { .. }));
        assert!(matches!(step(216.0), SampleVerdict::Flagged { .. }));
        assert_eq!(lock(&alerts.heard).len(), 1);
        assert_eq!(step(150.0), SampleVerdict::Accepted);
        // Back in range, then out again: a second alert, here from a batch.
        t += 1000;
        clock.0.store(t, Ordering::SeqCst);
        engine
            .record_samples(vec![
                hr(t, 30.0),
                Sample {
                    timestamp_ms: t,
                    reading: Reading::Spo2 { percent: 85.0 },
                },
            ])
            .unwrap();
        let heard = lock(&alerts.heard).clone();
        let got: Vec<(&str, &str, f64)> = heard
            .iter()
            .map(|a| (a.channel.as_str(), a.reason.as_str(), a.value))
            .collect();
        assert_eq!(
            got,
            [
                ("heart_rate", "heart_rate_above_range", 215.0),
                ("heart_rate", "heart_rate_below_range", 30.0),
                ("spo2", "spo2_below_range", 85.0),
            ]
        );
        assert!(heard.iter().all(|a| a.workout_id == id));
        assert_eq!(heard[0].timestamp_ms, T0 + 2000);
        // From a strap's notification too; and nothing once the subscription is cancelled.
        t += 1000;
        clock.0.store(t, Ordering::SeqCst);
        engine
            .feed_notification(
                "strap".into(),
                "180D".into(),
                "2A37".into(),
                vec![0x00, 150],
                t,
            )
            .unwrap();
        engine
            .feed_notification(
                "strap".into(),
                "180D".into(),
                "2A37".into(),
                vec![0x00, 218],
                t + 1000,
            )
            .unwrap();
        assert_eq!(lock(&alerts.heard).len(), 4);
        sub.cancel();
        engine.record_sample(hr(t + 2000, 150.0)).unwrap();
        engine.record_sample(hr(t + 3000, 219.0)).unwrap();
        assert_eq!(lock(&alerts.heard).len(), 4);
    }

    #[test]
    fn a_listener_may_call_back_into_the_engine() {
        let (done_tx, done_rx) = mpsc::channel();
        // Run where a deadlock shows as a timeout instead of a test that never ends.
        std::thread::spawn(move || {
            let (_dir, clock, engine) = engine();
            let listener = Arc::new(Reentrant::default());
            listener.engine.set(Arc::downgrade(&engine)).unwrap();
            let _sub = engine.subscribe_live_metrics(listener.clone());

            let id = engine.start_workout(Some(Sport::Cycling)).unwrap();
            for s in 0..3_i64 {
                let t = T0 + s * 1000;
                clock.0.store(t, Ordering::SeqCst);
                let power = Sample {
                    timestamp_ms: t,
                    reading: Reading::Power { watts: 200.0 },
                };
                engine.record_sample(power).unwrap();
                engine
                    .record_samples(vec![Sample {
                        timestamp_ms: t + 500,
                        reading: Reading::Power { watts: 210.0 },
                    }])
                    .unwrap();
                let hr = vec![0x00, 130];
                engine
                    .feed_notification("strap".into(), "180D".into(), "2A37".into(), hr, t + 900)
                    .unwrap();
            }
            engine.pause_workout().unwrap();
            done_tx.send((id, lock(&listener.heard).clone())).unwrap();
        });
        let (id, heard) = done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a listener calling back into the engine deadlocked it");
        // start, a call per second of samples, pause.
        assert!(heard.len() >= 4, "{heard:?}");
        assert!(
            heard.iter().all(|(w, live, _)| *w == id && *live),
            "{heard:?}"
        );
        assert!(
            matches!(heard.last().unwrap().2, WorkoutState::Paused),
            "{heard:?}"
        );
    }
}
