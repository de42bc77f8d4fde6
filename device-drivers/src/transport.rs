//! Transports: where notifications come from. Each one is an async source of
//! [`TransportEvent`]s behind the [`Transport`] trait; [`run`] pumps one through the
//! [`SensorHub`] into a recording.
//!
//! - [`ByoBluetooth`]: "bring your own Bluetooth". The host app (iOS, Android, a watch) owns
//!   the radio and passes `(device id, service uuid, characteristic uuid, bytes, timestamp)`
//!   through a [`ByoHandle`].
//! - [`replay::ReplayTransport`]: plays a capture file, or notifications synthesised from a FIT
//!   recording, at real or accelerated speed (tokio time, so tests run it with paused time).
//! - [`reconnect::supervise`]: the connect / subscribe / reconnect-with-backoff loop shared by
//!   the radio transports; `ble` (btleplug, feature `ble`) and `ant_serial` (feature `ant-usb`)
//!   plug a link into it.

use std::future::Future;

use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use fitedge_core::workout::WorkoutError;
use fitedge_core::{Sample, SampleSink, Timestamp, Workout};

use crate::gatt::Characteristic;
use crate::hub::{HubError, SensorHub};
use crate::sensor::Source;

pub mod reconnect;
pub mod replay;

#[cfg(feature = "ble")]
pub mod ble;

#[cfg(feature = "ant-usb")]
pub mod ant_serial;

/// A workout command carried by a replay (the athlete's own start, pauses and laps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    Start,
    Pause,
    Resume,
    Lap,
    Stop,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TransportEvent {
    Connected {
        device: String,
        at: Timestamp,
    },
    Disconnected {
        device: String,
        at: Timestamp,
    },
    Notification {
        device: String,
        source: Source,
        bytes: Vec<u8>,
        at: Timestamp,
    },
    /// A reading from the host's own sensors (the phone's GPS or barometer), passed through.
    Host(Sample),
    Control {
        action: ControlAction,
        at: Timestamp,
    },
}

impl TransportEvent {
    pub fn at(&self) -> Timestamp {
        match self {
            TransportEvent::Connected { at, .. }
            | TransportEvent::Disconnected { at, .. }
            | TransportEvent::Notification { at, .. }
            | TransportEvent::Control { at, .. } => *at,
            TransportEvent::Host(s) => s.t,
        }
    }
}

/// An async source of transport events. `None` means the transport is finished.
pub trait Transport {
    fn next_event(&mut self) -> impl Future<Output = Option<TransportEvent>> + Send;
}

/// A recording the transports can drive: samples plus the workout commands a replay carries.
pub trait Recording: SampleSink {
    fn control(&mut self, action: ControlAction, at: Timestamp) -> Result<(), WorkoutError>;
}

impl Recording for Workout {
    fn control(&mut self, action: ControlAction, at: Timestamp) -> Result<(), WorkoutError> {
        match action {
            ControlAction::Start => self.start(at),
            ControlAction::Pause => self.pause(at),
            ControlAction::Resume => self.resume(at),
            ControlAction::Lap => self.lap(at),
            ControlAction::Stop => self.complete(at).map(|_| ()),
        }
    }
}

/// What [`run`] saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunReport {
    pub notifications: u64,
    pub decode_errors: u64,
    pub recorded: u64,
    pub standby: u64,
    pub refused: u64,
    pub host_samples: u64,
    /// Workout commands that failed (a repeat stop, a pause while paused...).
    pub control_errors: Vec<String>,
}

/// Pumps a transport through the hub into `rec` until the transport ends.
pub async fn run<T: Transport, R: Recording>(
    transport: &mut T,
    hub: &mut SensorHub,
    rec: &mut R,
) -> RunReport {
    let mut report = RunReport::default();
    while let Some(ev) = transport.next_event().await {
        dispatch(ev, hub, rec, &mut report);
    }
    report
}

/// Applies one event (the synchronous core of [`run`], for hosts that pump events themselves).
pub fn dispatch<R: Recording>(
    ev: TransportEvent,
    hub: &mut SensorHub,
    rec: &mut R,
    report: &mut RunReport,
) {
    match ev {
        TransportEvent::Connected { device, at } => {
            let _ = hub.connected(&device, at);
        }
        TransportEvent::Disconnected { device, at } => {
            let _ = hub.disconnected(&device, at);
        }
        TransportEvent::Notification {
            device,
            source,
            bytes,
            at,
        } => {
            report.notifications += 1;
            match hub.on_notification(&device, source, &bytes, at, rec) {
                Ok(d) => {
                    report.recorded += u64::from(d.recorded);
                    report.standby += u64::from(d.standby);
                    report.refused += u64::from(d.refused);
                }
                Err(HubError::Decode { .. } | HubError::Disabled(_)) => report.decode_errors += 1,
                Err(_) => {}
            }
        }
        TransportEvent::Host(s) => {
            report.host_samples += 1;
            if rec.record(s).is_err() {
                report.refused += 1;
            }
        }
        TransportEvent::Control { action, at } => {
            if let Err(e) = rec.control(action, at) {
                report
                    .control_errors
                    .push(format!("{action:?} at {at}: {e}"));
            }
        }
    }
}

/// A transport fed through a channel (by a [`ByoHandle`] or by supervised radio links).
#[derive(Debug)]
pub struct ChannelTransport {
    rx: mpsc::UnboundedReceiver<TransportEvent>,
}

impl Transport for ChannelTransport {
    fn next_event(&mut self) -> impl Future<Output = Option<TransportEvent>> + Send {
        self.rx.recv()
    }
}

pub fn channel() -> (mpsc::UnboundedSender<TransportEvent>, ChannelTransport) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, ChannelTransport { rx })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByoError {
    #[error("characteristic {0} has no decoder")]
    UnsupportedCharacteristic(Uuid),
    #[error("the transport was dropped")]
    Closed,
}

/// "Bring your own Bluetooth": the host app's native stack hands notifications over.
pub type ByoBluetooth = ChannelTransport;

/// The host's side of [`ByoBluetooth`]. Cheap to clone; usable from any thread.
#[derive(Debug, Clone)]
pub struct ByoHandle {
    tx: mpsc::UnboundedSender<TransportEvent>,
}

impl ByoHandle {
    pub fn new() -> (ByoHandle, ByoBluetooth) {
        let (tx, t) = channel();
        (ByoHandle { tx }, t)
    }

    fn send(&self, ev: TransportEvent) -> Result<(), ByoError> {
        self.tx.send(ev).map_err(|_| ByoError::Closed)
    }

    /// One notification (or read) as the native stack delivered it.
    pub fn notify(
        &self,
        device: &str,
        _service: Uuid,
        characteristic: Uuid,
        bytes: &[u8],
        at: Timestamp,
    ) -> Result<(), ByoError> {
        let c = Characteristic::from_uuid(&characteristic)
            .ok_or(ByoError::UnsupportedCharacteristic(characteristic))?;
        self.send(TransportEvent::Notification {
            device: device.to_string(),
            source: Source::Gatt(c),
            bytes: bytes.to_vec(),
            at,
        })
    }

    pub fn connected(&self, device: &str, at: Timestamp) -> Result<(), ByoError> {
        self.send(TransportEvent::Connected {
            device: device.to_string(),
            at,
        })
    }

    pub fn disconnected(&self, device: &str, at: Timestamp) -> Result<(), ByoError> {
        self.send(TransportEvent::Disconnected {
            device: device.to_string(),
            at,
        })
    }

    /// A reading from the host's own sensors (GPS, barometer).
    pub fn host_sample(&self, s: Sample) -> Result<(), ByoError> {
        self.send(TransportEvent::Host(s))
    }
}
