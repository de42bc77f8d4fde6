//! Samples: one timestamped reading of one channel.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Where an altitude reading comes from. Barometric altitude is preferred for elevation gain:
/// it is far less noisy than GPS altitude.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AltitudeSource {
    Gps,
    Barometric,
}

/// One reading. Units are in the names: bpm, ms, degrees, metres, m/s, rpm, watts, °C, percent.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum Reading {
    HeartRate {
        bpm: f64,
    },
    /// One beat-to-beat (RR) interval.
    RrInterval {
        ms: f64,
    },
    /// A GPS fix in WGS-84 degrees, with the receiver's horizontal accuracy when it gives one.
    Position {
        lat: f64,
        lon: f64,
        accuracy_m: Option<f64>,
    },
    Altitude {
        m: f64,
        source: AltitudeSource,
    },
    Speed {
        mps: f64,
    },
    /// Cumulative distance from a wheel or foot sensor (or the device's own odometer).
    Distance {
        m: f64,
    },
    Cadence {
        rpm: f64,
    },
    Power {
        w: f64,
    },
    Temperature {
        c: f64,
    },
    Spo2 {
        pct: f64,
    },
}

impl Reading {
    pub fn channel(&self) -> Channel {
        match self {
            Reading::HeartRate { .. } => Channel::HeartRate,
            Reading::RrInterval { .. } => Channel::RrInterval,
            Reading::Position { .. } => Channel::Position,
            Reading::Altitude { .. } => Channel::Altitude,
            Reading::Speed { .. } => Channel::Speed,
            Reading::Distance { .. } => Channel::Distance,
            Reading::Cadence { .. } => Channel::Cadence,
            Reading::Power { .. } => Channel::Power,
            Reading::Temperature { .. } => Channel::Temperature,
            Reading::Spo2 { .. } => Channel::Spo2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub t: Timestamp,
    #[serde(flatten)]
    pub reading: Reading,
}

impl Sample {
    pub fn new(t: Timestamp, reading: Reading) -> Self {
        Self { t, reading }
    }

    pub fn channel(&self) -> Channel {
        self.reading.channel()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    HeartRate,
    RrInterval,
    Position,
    Altitude,
    Speed,
    Distance,
    Cadence,
    Power,
    Temperature,
    Spo2,
}

impl Channel {
    pub const ALL: [Channel; 10] = [
        Channel::HeartRate,
        Channel::RrInterval,
        Channel::Position,
        Channel::Altitude,
        Channel::Speed,
        Channel::Distance,
        Channel::Cadence,
        Channel::Power,
        Channel::Temperature,
        Channel::Spo2,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::HeartRate => "heart_rate",
            Channel::RrInterval => "rr_interval",
            Channel::Position => "position",
            Channel::Altitude => "altitude",
            Channel::Speed => "speed",
            Channel::Distance => "distance",
            Channel::Cadence => "cadence",
            Channel::Power => "power",
            Channel::Temperature => "temperature",
            Channel::Spo2 => "spo2",
        }
    }

    /// Channels that are health data (encrypted at rest, MFA-protected on the server).
    pub fn is_health(self) -> bool {
        matches!(
            self,
            Channel::HeartRate | Channel::RrInterval | Channel::Spo2
        )
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
