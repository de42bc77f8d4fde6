//! # fitedge-devices
//!
//! Sensor drivers for FitEdge: Bluetooth LE GATT and ANT+ decoders (no I/O), the values derived
//! across notifications (speed and cadence from revolution counters, average power), the ANT
//! USB serial framing, the transports (bring-your-own-Bluetooth, replay, btleplug and the ANT
//! USB stick behind cargo features) and the [`hub::SensorHub`] that feeds the core's recorder
//! through [`fitedge_core::SampleSink`].
//!
//! ```
//! use fitedge_devices::gatt::{decode, Characteristic, GattValue};
//! // A chest strap's notification: 72 bpm, contact detected, two RR intervals.
//! let v = decode(Characteristic::HeartRateMeasurement, &[0x16, 0x48, 0x54, 0x01, 0xEC, 0x02]).unwrap();
//! let GattValue::HeartRateMeasurement(m) = v else { unreachable!() };
//! assert_eq!(m.heart_rate_bpm, 72);
//! assert_eq!(m.rr_intervals_raw, vec![340, 748]);
//! ```

pub mod ant;
pub mod ant_usb;
pub mod derive;
pub mod error;
pub mod gatt;
pub mod hub;
pub mod sensor;
pub mod transport;

pub use error::DecodeError;
pub use hub::{DeviceEvent, DeviceKind, DeviceRegistration, HubConfig, HubError, SensorHub};
pub use sensor::{SensorDecoder, Source};
