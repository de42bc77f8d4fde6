//! # fitedge-ffi
//!
//! The FitEdge engine for apps: UniFFI wrappers over `fitedge-core` and `fitedge-devices`, from
//! which the Swift, Kotlin and Python bindings are generated (`bindings/`). Only wrappers live
//! here: each exported method delegates and maps errors to the small public [`FitEdgeError`].

uniffi::setup_scaffolding!();

#[cfg(feature = "ble")]
mod bluetooth;
mod engine;
mod error;
mod sensors;
mod sync;
#[cfg(test)]
mod test_support;
mod types;

pub use engine::{Engine, EngineClock, LiveMetricsListener, Subscription};
pub use error::FitEdgeError;
pub use sensors::{
    has_bluetooth_transport, FoundSensor, SensorConnection, SensorKind, SensorListener,
    SensorStatus,
};
pub use sync::{OutboxCommand, OutboxFlushReport, OutboxStatus, SyncReport};
pub use types::*;
