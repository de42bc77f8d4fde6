//! The sensor hub: registered devices, which one feeds each channel, connection state,
//! battery, calibration per device and user, automatic disabling of faulty devices, and the
//! device events. No I/O: transports hand it notifications, it hands samples to the core's
//! recorder through [`SampleSink`], so `fitedge-core` never depends on this crate.
//!
//! Priority: when two connected devices give the same channel, the one with the higher
//! priority wins; the other's readings of that channel are dropped until the winner
//! disconnects or falls silent on that channel for [`HubConfig::stale_after_s`], and then it
//! takes over at its next notification.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use fitedge_core::{Channel, Reading, Sample, SampleSink, Timestamp};

use crate::derive::WheelCrank;
use crate::error::DecodeError;
use crate::gatt::{DeviceInfoField, GattValue};
use crate::sensor::{self, Decoded, SensorDecoder, Source};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    HeartRate,
    CyclingPower,
    SpeedCadence,
    RunningSpeedCadence,
    FitnessMachine,
    PulseOximeter,
    Other,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceRegistration {
    pub id: String,
    pub serial_number: String,
    pub kind: DeviceKind,
    /// Higher wins when two devices give the same channel.
    pub priority: u8,
    /// Medical-grade devices: calibration must be within +/-2 % (RULES.md) and their readings
    /// are held back until they are calibrated for the current user.
    pub medical_grade: bool,
    pub wheel_circumference_m: f64,
}

impl DeviceRegistration {
    pub fn new(id: impl Into<String>, kind: DeviceKind, priority: u8) -> Self {
        let id = id.into();
        Self {
            serial_number: id.clone(),
            id,
            kind,
            priority,
            medical_grade: false,
            wheel_circumference_m: WheelCrank::DEFAULT_CIRCUMFERENCE_M,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum DeviceEvent {
    DeviceConnected {
        device: String,
        serial_number: String,
        at: Timestamp,
    },
    DeviceDisconnected {
        device: String,
        at: Timestamp,
    },
    DeviceCalibrated {
        device: String,
        user: String,
        factor: f64,
        at: Timestamp,
    },
    DeviceErrorDetected {
        device: String,
        at: Timestamp,
        error: String,
        disabled: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HubConfig {
    /// A winner silent on a channel for this long yields it to the next device.
    pub stale_after_s: f64,
    /// Notifications remembered per device for the error rate.
    pub error_window: u32,
    /// A device is disabled when at least this share of its last `error_window` notifications
    /// failed (checked once the window is full).
    pub max_error_rate: f64,
    /// Devices not registered are added at priority 0 on their first notification.
    pub auto_register: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            stale_after_s: 3.0,
            error_window: 32,
            max_error_rate: 0.25,
            auto_register: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HubError {
    #[error("unknown device {0:?}")]
    UnknownDevice(String),
    #[error("device {0:?} is disabled")]
    Disabled(String),
    #[error("device {device:?}: {error}")]
    Decode { device: String, error: DecodeError },
    #[error("calibration factor {factor} is outside {min}..={max}")]
    CalibrationOutOfRange { factor: f64, min: f64, max: f64 },
    #[error("no user is set: calibration belongs to a user")]
    NoUser,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Calibration {
    pub user: String,
    pub factor: f64,
}

/// What the hub knows about one device, for the app.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceStatus {
    pub registration: DeviceRegistration,
    pub connected: bool,
    pub battery_pct: Option<u8>,
    pub info: BTreeMap<String, String>,
    pub calibration: Option<Calibration>,
    /// Calibrated for someone else (or never, for a medical-grade device): recalibrate.
    pub needs_calibration: bool,
    pub disabled: bool,
    pub notifications: u64,
    pub errors: u64,
}

#[derive(Clone, Debug)]
struct Device {
    status: DeviceStatus,
    decoder: SensorDecoder,
    window_bits: u64,
    window_len: u32,
    last_on: [Option<Timestamp>; Channel::ALL.len()],
}

/// What one notification turned into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Dispatch {
    pub recorded: u32,
    /// Readings of channels another device wins.
    pub standby: u32,
    /// Readings held back from a medical-grade device not calibrated for the current user.
    pub uncalibrated: u32,
    /// Readings the recording refused (not started, finished).
    pub refused: u32,
}

#[derive(Debug, Default)]
pub struct SensorHub {
    config: HubConfig,
    devices: Vec<Device>,
    index: HashMap<String, usize>,
    user: Option<String>,
    events: Vec<DeviceEvent>,
    scratch: Vec<Reading>,
}

fn calibrated_channel(c: Channel) -> bool {
    matches!(
        c,
        Channel::HeartRate | Channel::Power | Channel::Speed | Channel::Distance | Channel::Spo2
    )
}

fn scale(r: Reading, f: f64) -> Reading {
    match r {
        Reading::HeartRate { bpm } => Reading::HeartRate { bpm: bpm * f },
        Reading::Power { w } => Reading::Power { w: w * f },
        Reading::Speed { mps } => Reading::Speed { mps: mps * f },
        Reading::Distance { m } => Reading::Distance { m: m * f },
        Reading::Spo2 { pct } => Reading::Spo2 { pct: pct * f },
        other => other,
    }
}

impl SensorHub {
    pub fn new(config: HubConfig) -> Self {
        Self {
            config,
            ..Default::default()
        }
    }

    pub fn register(&mut self, reg: DeviceRegistration) {
        if let Some(i) = self.index.get(&reg.id) {
            let d = &mut self.devices[*i];
            d.decoder = SensorDecoder::new(reg.wheel_circumference_m);
            d.status.registration = reg;
            return;
        }
        let needs = reg.medical_grade;
        self.index.insert(reg.id.clone(), self.devices.len());
        self.devices.push(Device {
            decoder: SensorDecoder::new(reg.wheel_circumference_m),
            status: DeviceStatus {
                registration: reg,
                connected: false,
                battery_pct: None,
                info: BTreeMap::new(),
                calibration: None,
                needs_calibration: needs,
                disabled: false,
                notifications: 0,
                errors: 0,
            },
            window_bits: 0,
            window_len: 0,
            last_on: [None; Channel::ALL.len()],
        });
    }

    pub fn devices(&self) -> impl Iterator<Item = &DeviceStatus> {
        self.devices.iter().map(|d| &d.status)
    }

    pub fn device(&self, id: &str) -> Option<&DeviceStatus> {
        self.index.get(id).map(|i| &self.devices[*i].status)
    }

    /// Drains the queued device events.
    pub fn take_events(&mut self) -> Vec<DeviceEvent> {
        std::mem::take(&mut self.events)
    }

    fn slot(&mut self, id: &str) -> Result<usize, HubError> {
        if let Some(i) = self.index.get(id) {
            return Ok(*i);
        }
        if !self.config.auto_register {
            return Err(HubError::UnknownDevice(id.to_string()));
        }
        self.register(DeviceRegistration::new(id, DeviceKind::Other, 0));
        Ok(self.devices.len() - 1)
    }

    pub fn connected(&mut self, id: &str, at: Timestamp) -> Result<(), HubError> {
        let i = self.slot(id)?;
        let d = &mut self.devices[i];
        if !d.status.connected {
            d.status.connected = true;
            d.decoder.reset();
            self.events.push(DeviceEvent::DeviceConnected {
                device: id.to_string(),
                serial_number: d.status.registration.serial_number.clone(),
                at,
            });
        }
        Ok(())
    }

    pub fn disconnected(&mut self, id: &str, at: Timestamp) -> Result<(), HubError> {
        let i = self.slot(id)?;
        let d = &mut self.devices[i];
        if d.status.connected {
            d.status.connected = false;
            d.decoder.reset();
            d.last_on = [None; Channel::ALL.len()];
            self.events.push(DeviceEvent::DeviceDisconnected {
                device: id.to_string(),
                at,
            });
        }
        Ok(())
    }

    /// Sets the athlete using the devices. Calibrations made for someone else no longer apply
    /// (RULES.md: recalibration when a device changes user).
    pub fn set_user(&mut self, user: &str) {
        self.user = Some(user.to_string());
        for d in &mut self.devices {
            let ok = d
                .status
                .calibration
                .as_ref()
                .is_some_and(|c| c.user == user);
            d.status.needs_calibration =
                !ok && (d.status.calibration.is_some() || d.status.registration.medical_grade);
        }
    }

    /// Calibrates a device for the current user: its readings are multiplied by `factor`
    /// (reference / measured). Medical-grade devices must be within +/-2 %: outside it the
    /// device is faulty and is disabled.
    pub fn calibrate(&mut self, id: &str, factor: f64, at: Timestamp) -> Result<(), HubError> {
        let user = self.user.clone().ok_or(HubError::NoUser)?;
        let i = self.slot(id)?;
        let medical = self.devices[i].status.registration.medical_grade;
        let (min, max) = if medical { (0.98, 1.02) } else { (0.8, 1.2) };
        if !(factor.is_finite() && (min..=max).contains(&factor)) {
            let err = HubError::CalibrationOutOfRange { factor, min, max };
            if medical {
                self.devices[i].status.disabled = true;
                self.events.push(DeviceEvent::DeviceErrorDetected {
                    device: id.to_string(),
                    at,
                    error: format!("medical-grade device out of tolerance: {err}"),
                    disabled: true,
                });
            }
            return Err(err);
        }
        let d = &mut self.devices[i].status;
        d.calibration = Some(Calibration {
            user: user.clone(),
            factor,
        });
        d.needs_calibration = false;
        self.events.push(DeviceEvent::DeviceCalibrated {
            device: id.to_string(),
            user,
            factor,
            at,
        });
        Ok(())
    }

    /// Re-enables a device disabled for errors (after the user fixed it).
    pub fn enable(&mut self, id: &str) {
        if let Some(i) = self.index.get(id) {
            let d = &mut self.devices[*i];
            d.status.disabled = false;
            d.window_bits = 0;
            d.window_len = 0;
        }
    }

    /// The device that currently feeds `ch`, if any.
    pub fn winner(&self, ch: Channel, at: Timestamp) -> Option<&str> {
        self.winner_index(ch, at)
            .map(|i| self.devices[i].status.registration.id.as_str())
    }

    fn winner_index(&self, ch: Channel, at: Timestamp) -> Option<usize> {
        let stale = self.config.stale_after_s;
        let mut best: Option<(u8, usize)> = None;
        for (i, d) in self.devices.iter().enumerate() {
            let live = d.status.connected || d.status.registration.kind == DeviceKind::Other;
            let fresh = d.last_on[ch.index()].is_some_and(|t| at.secs_since(t) <= stale);
            if live && fresh && !d.status.disabled {
                let p = d.status.registration.priority;
                if best.is_none_or(|(bp, _)| p > bp) {
                    best = Some((p, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    fn note(&mut self, i: usize, ok: bool, at: Timestamp, error: Option<String>) {
        let window = self.config.error_window.clamp(1, 64);
        let d = &mut self.devices[i];
        d.status.notifications += 1;
        d.window_bits = (d.window_bits << 1) | u64::from(!ok);
        if window < 64 {
            d.window_bits &= (1u64 << window) - 1;
        }
        d.window_len = (d.window_len + 1).min(window);
        let Some(error) = error else { return };
        d.status.errors += 1;
        let rate = f64::from(d.window_bits.count_ones()) / f64::from(window);
        let disable = d.window_len >= window && rate >= self.config.max_error_rate;
        if disable {
            d.status.disabled = true;
        }
        self.events.push(DeviceEvent::DeviceErrorDetected {
            device: d.status.registration.id.clone(),
            at,
            error,
            disabled: disable,
        });
    }

    /// Takes one notification: decodes it, derives values, and records the readings this
    /// device wins into `sink`. A payload that does not decode counts against the device.
    pub fn on_notification(
        &mut self,
        id: &str,
        source: Source,
        bytes: &[u8],
        at: Timestamp,
        sink: &mut dyn SampleSink,
    ) -> Result<Dispatch, HubError> {
        let i = self.slot(id)?;
        if self.devices[i].status.disabled {
            return Err(HubError::Disabled(id.to_string()));
        }
        let decoded = self.devices[i].decoder.decode(source, bytes, at);
        let (value, derived) = match decoded {
            Ok(v) => v,
            Err(error) => {
                self.note(i, false, at, Some(error.to_string()));
                return Err(HubError::Decode {
                    device: id.to_string(),
                    error,
                });
            }
        };
        self.note(i, true, at, None);
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        {
            let d = &mut self.devices[i].status;
            match &value {
                Decoded::Gatt(GattValue::BatteryLevel { battery_level_pct }) => {
                    d.battery_pct = Some(*battery_level_pct)
                }
                Decoded::Gatt(GattValue::DeviceInfo { field, value }) => {
                    if *field == DeviceInfoField::SerialNumber {
                        d.registration.serial_number.clone_from(value);
                    }
                    d.info.insert(format!("{field:?}"), value.clone());
                }
                _ => {}
            }
        }
        sensor::readings(&value, &derived, &mut out);
        let mut report = Dispatch::default();
        let factor = {
            let d = &self.devices[i].status;
            match (&d.calibration, &self.user) {
                (Some(c), Some(u)) if c.user == *u => Some(c.factor),
                _ if d.registration.medical_grade => None,
                _ => Some(1.0),
            }
        };
        for r in out.iter() {
            let ch = r.channel();
            self.devices[i].last_on[ch.index()] = Some(at);
            if self.winner_index(ch, at) != Some(i) {
                report.standby += 1;
                continue;
            }
            let reading = match (factor, calibrated_channel(ch)) {
                (_, false) => *r,
                (Some(f), true) => scale(*r, f),
                (None, true) => {
                    report.uncalibrated += 1;
                    continue;
                }
            };
            match sink.record(Sample::new(at, reading)) {
                Ok(_) => report.recorded += 1,
                Err(_) => report.refused += 1,
            }
        }
        self.scratch = out;
        Ok(report)
    }
}
