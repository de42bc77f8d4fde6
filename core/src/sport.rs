//! Sports and the per-sport parameters the engine needs: plausible speeds, moving and
//! auto-pause thresholds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sport {
    Running,
    Walking,
    Hiking,
    Cycling,
    Swimming,
    Rowing,
    /// A multisport transition (T1/T2): on foot, carrying gear.
    Transition,
    /// The recorder was not told, and detection found no clear answer.
    Other,
}

impl Sport {
    pub const ALL: [Sport; 8] = [
        Sport::Running,
        Sport::Walking,
        Sport::Hiking,
        Sport::Cycling,
        Sport::Swimming,
        Sport::Rowing,
        Sport::Transition,
        Sport::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Sport::Running => "running",
            Sport::Walking => "walking",
            Sport::Hiking => "hiking",
            Sport::Cycling => "cycling",
            Sport::Swimming => "swimming",
            Sport::Rowing => "rowing",
            Sport::Transition => "transition",
            Sport::Other => "other",
        }
    }

    /// Sports moved on foot, whose energy cost follows the ACSM walking/running equations.
    pub fn on_foot(self) -> bool {
        matches!(
            self,
            Sport::Running | Sport::Walking | Sport::Hiking | Sport::Transition
        )
    }

    /// The fastest speed a person plausibly reaches in this sport, in m/s. A GPS fix implying a
    /// faster move from the previous one is an outlier. Values sit well above world-record
    /// speeds (sprint 10.4 m/s, downhill road cycling ~30 m/s) so that only impossible moves trip.
    pub fn max_speed_mps(self) -> f64 {
        match self {
            Sport::Running | Sport::Transition => 12.5,
            Sport::Walking | Sport::Hiking => 12.5, // people break into a run
            Sport::Cycling => 35.0,
            Sport::Swimming => 5.0,
            Sport::Rowing => 8.0,
            Sport::Other => 90.0,
        }
    }

    /// Below this speed (m/s) the athlete counts as not moving (moving time, auto-pause).
    pub fn moving_threshold_mps(self) -> f64 {
        match self {
            Sport::Running | Sport::Walking | Sport::Hiking | Sport::Transition => 0.3,
            Sport::Cycling => 1.0,
            Sport::Swimming | Sport::Rowing => 0.1,
            Sport::Other => 0.3,
        }
    }
}

impl fmt::Display for Sport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Sport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sport::ALL
            .into_iter()
            .find(|sp| sp.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Sport::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown sport {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// When the recorder pauses by itself because the athlete stopped.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoPause {
    pub enabled: bool,
    /// Moving slower than this (m/s) counts as stopped.
    pub below_mps: f64,
    /// Stopped for this long (s) before the timer pauses; one faster sample resumes it.
    pub after_s: f64,
}

impl AutoPause {
    pub const OFF: AutoPause = AutoPause {
        enabled: false,
        below_mps: 0.0,
        after_s: 0.0,
    };

    /// Defaults per sport, close to what sports watches ship with. Off for swimming and rowing,
    /// where speed sensors read zero at every wall push or between strokes.
    pub fn default_for(sport: Sport) -> AutoPause {
        match sport {
            Sport::Swimming | Sport::Rowing | Sport::Other => AutoPause::OFF,
            Sport::Cycling => AutoPause {
                enabled: true,
                below_mps: 1.0,
                after_s: 3.0,
            },
            _ => AutoPause {
                enabled: true,
                below_mps: 0.5,
                after_s: 3.0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Sport::ALL {
            assert_eq!(s.as_str().parse::<Sport>().unwrap(), s);
        }
        assert!("curling".parse::<Sport>().unwrap_err().contains("running"));
    }
}
