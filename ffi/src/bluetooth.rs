//! The btleplug transport behind `scan_sensors` and `connect_sensors` (cargo feature `ble`).
//!
//! btleplug keeps background tasks alive for as long as its adapter is in use (the D-Bus
//! connection on Linux), and a connection must be pumped while the app's threads do other
//! things, so this runs on a runtime of its own with one worker thread, made on first use.
//! Neither sync's current-thread runtime (it only runs inside a blocking call) nor the caller's
//! thread would keep them going.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fitedge_core::time::Clock;
use fitedge_devices::transport::ble::{self, Found};
use fitedge_devices::transport::reconnect::Backoff;

use crate::engine::{lock, SensorSide};
use crate::error::FitEdgeError;
use crate::sensors::{
    found_sensor, kind_of_services, pump, FoundSensor, SensorConnection, SensorListener,
};

/// How long a scan may take beyond its own duration (the adapter starting, the platform's
/// Bluetooth service answering) before it is given up: a hung stack must not hang the app.
const ADAPTER_GRACE: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(crate) struct Bluetooth {
    runtime: OnceLock<tokio::runtime::Runtime>,
    /// The sensors of the last scan: `connect_sensors` needs their platform handles.
    found: Mutex<Vec<Found>>,
    /// Sensors held by a live connection (two loops on one radio link would fight).
    busy: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for Bluetooth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bluetooth").finish_non_exhaustive()
    }
}

impl Drop for Bluetooth {
    fn drop(&mut self) {
        // Without waiting: the engine may be dropped on any thread, even one inside a runtime,
        // and a worker may be calling into the app (which may hold a lock the dropper holds).
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> FitEdgeError {
    FitEdgeError::InvalidState(format!("Bluetooth is unavailable: {e}"))
}

impl Bluetooth {
    fn runtime(&self) -> Result<&tokio::runtime::Runtime, FitEdgeError> {
        if let Some(rt) = self.runtime.get() {
            return Ok(rt);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fitedge-bluetooth")
            .enable_all()
            .build()
            .map_err(|e| FitEdgeError::Storage(format!("cannot start the runtime: {e}")))?;
        if let Err(lost) = self.runtime.set(rt) {
            // Another thread made one first; this one was never used.
            lost.shutdown_background();
        }
        self.runtime.get().ok_or_else(|| {
            FitEdgeError::InvalidState("the Bluetooth runtime is unavailable".into())
        })
    }

    pub(crate) fn scan(&self, scan_for: Duration) -> Result<Vec<FoundSensor>, FitEdgeError> {
        // Blocking inside an async runtime would panic in tokio: refuse instead.
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(FitEdgeError::InvalidState(
                "scan_sensors blocks: call it from a background thread, not from async code".into(),
            ));
        }
        let rt = self.runtime()?;
        // A task of its own, so a panic in the platform layer (btleplug's Android backend
        // panics when it was not initialised through JNI) comes back as an error.
        let task = rt.spawn(ble::scan(scan_for));
        let abort = task.abort_handle();
        let limit = scan_for + ADAPTER_GRACE;
        // The timer must be made inside the runtime: outside one, tokio panics.
        let found = match rt.block_on(async move { tokio::time::timeout(limit, task).await }) {
            Err(_) => {
                abort.abort();
                return Err(unavailable(format!(
                    "the adapter did not answer within {} s",
                    limit.as_secs()
                )));
            }
            Ok(Err(join)) => return Err(unavailable(format!("the scan failed: {join}"))),
            Ok(Ok(Err(e))) => return Err(unavailable(e)),
            Ok(Ok(Ok(found))) => found,
        };
        let out = found
            .iter()
            .map(|f| found_sensor(f.id.clone(), f.name.clone(), f.rssi, &f.services))
            .collect();
        *lock(&self.found) = found;
        Ok(out)
    }

    pub(crate) fn connect(
        &self,
        ids: Vec<String>,
        side: SensorSide,
        clock: Arc<dyn Clock>,
        listener: Option<Arc<dyn SensorListener>>,
    ) -> Result<Arc<SensorConnection>, FitEdgeError> {
        if ids.is_empty() {
            return Err(FitEdgeError::InvalidInput("no sensor ids given".into()));
        }
        if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
            return Err(FitEdgeError::InvalidInput(format!(
                "a sensor id is given twice: {ids:?}"
            )));
        }
        let found = {
            let last = lock(&self.found);
            ids.iter()
                .map(|id| {
                    last.iter().find(|f| f.id == *id).cloned().ok_or_else(|| {
                        FitEdgeError::NotFound(format!(
                            "sensor {id} was not seen by the last scan_sensors: scan again"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let rt = self.runtime()?;
        {
            let mut busy = lock(&self.busy);
            if let Some(id) = ids.iter().find(|id| busy.contains(*id)) {
                return Err(FitEdgeError::InvalidState(format!(
                    "sensor {id} is already connected: cancel its connection first"
                )));
            }
            busy.extend(ids.iter().cloned());
        }
        for f in &found {
            side.register(&f.id, kind_of_services(&f.services));
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let stopped = Arc::new(AtomicBool::new(false));
        let (pump_side, pump_stopped, pump_clock) = (side.clone(), stopped.clone(), clock.clone());
        rt.spawn(async move {
            // Dropping the transport when the pump ends stops every sensor's reconnect loop,
            // which then disconnects its sensor.
            let transport = ble::start(found, Backoff::default(), pump_clock);
            pump(transport, pump_side, listener, stop_rx, pump_stopped).await;
        });
        let busy = self.busy.clone();
        let held = ids.clone();
        Ok(SensorConnection::new(ids, move || {
            stopped.store(true, Ordering::SeqCst);
            let _ = stop_tx.send(());
            side.disconnected(&held, clock.now());
            lock(&busy).retain(|id| !held.contains(id));
        }))
    }
}
