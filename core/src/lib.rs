//! # fitedge-core
//!
//! The FitEdge recording engine: the workout aggregate and its lifecycle, sample validation,
//! streaming metrics, FIT import and the local SQLite store. No other crate of ours is a
//! dependency; parsers and state machines do no I/O.

pub mod codec;
pub mod crypto;
pub mod db;
pub mod error;
pub mod event;
pub mod fit;
pub mod formats;
pub mod gear;
pub mod metrics;
pub mod profile;
pub mod recording;
pub mod records;
pub mod route;
pub mod sample;
pub mod sport;
pub mod store;
pub mod sync;
pub mod time;
pub mod validation;
pub mod workout;

#[cfg(test)]
mod store_tests;

pub use error::{Error, Result};
pub use event::DomainEvent;
pub use profile::{Profile, ResolvedProfile, Sex};
pub use sample::{AltitudeSource, Channel, Reading, Sample};
pub use sport::{AutoPause, Sport};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
pub use workout::{
    Recorder, SampleSink, Workout, WorkoutError, WorkoutId, WorkoutState, WorkoutSummary,
};
