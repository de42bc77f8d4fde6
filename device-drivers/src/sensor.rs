//! One sensor's decoder: the stateless page/characteristic decoders plus the state that
//! derives values across notifications. Shared by the hub and by `fitedge decode`.

use serde::Serialize;

use fitedge_core::{Reading, Timestamp};

use crate::ant::{self, AntPage, AntProfile, AntState};
use crate::derive::{Derived, WheelCrank};
use crate::error::DecodeError;
use crate::gatt::{self, Characteristic, GattValue};

/// Where a payload came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Gatt(Characteristic),
    Ant(AntProfile),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Decoded {
    Gatt(GattValue),
    Ant(AntPage),
}

#[derive(Clone, Debug)]
pub struct SensorDecoder {
    csc: WheelCrank,
    cp: WheelCrank,
    ant: Option<(AntProfile, AntState)>,
    circumference_m: f64,
}

impl SensorDecoder {
    pub fn new(circumference_m: f64) -> Self {
        Self {
            csc: WheelCrank::csc(circumference_m),
            cp: WheelCrank::cycling_power(circumference_m),
            ant: None,
            circumference_m,
        }
    }

    /// Forgets every baseline (after a disconnect the sensor's counters may restart).
    pub fn reset(&mut self) {
        self.csc.reset();
        self.cp.reset();
        if let Some((_, s)) = self.ant.as_mut() {
            s.reset();
        }
    }

    /// Decodes one payload and derives what it and the ones before it give.
    pub fn decode(
        &mut self,
        source: Source,
        bytes: &[u8],
        at: Timestamp,
    ) -> Result<(Decoded, Derived), DecodeError> {
        match source {
            Source::Gatt(c) => {
                let v = gatt::decode(c, bytes)?;
                let d = self.derive_gatt(&v, at);
                Ok((Decoded::Gatt(v), d))
            }
            Source::Ant(profile) => {
                let page = ant::decode(profile, bytes)?;
                let circ = self.circumference_m;
                let state = match &mut self.ant {
                    Some((p, s)) if *p == profile => s,
                    slot => &mut slot.insert((profile, AntState::new(profile, circ))).1,
                };
                let d = state.update(&page, at);
                Ok((Decoded::Ant(page), d))
            }
        }
    }

    fn derive_gatt(&mut self, v: &GattValue, at: Timestamp) -> Derived {
        let kmh = |v: f64| v / 3.6;
        match v {
            GattValue::HeartRateMeasurement(m) => Derived {
                heart_rate_bpm: (m.heart_rate_bpm > 0 && m.sensor_contact != Some(false))
                    .then_some(f64::from(m.heart_rate_bpm)),
                ..Default::default()
            },
            GattValue::CscMeasurement(m) => self.csc.update(m.wheel, m.crank, at),
            GattValue::CyclingPowerMeasurement(m) => Derived {
                power_w: Some(f64::from(m.instantaneous_power_w)),
                ..self.cp.update(m.wheel, m.crank, at)
            },
            GattValue::RscMeasurement(m) => Derived {
                speed_mps: Some(m.speed_mps),
                cadence_rpm: Some(f64::from(m.cadence_per_min)),
                distance_m: m.total_distance_m,
                ..Default::default()
            },
            GattValue::TreadmillData(m) => Derived {
                speed_mps: m.speed_kmh.map(kmh),
                distance_m: m.total_distance_m.map(f64::from),
                power_w: m.power_output_w.map(f64::from),
                heart_rate_bpm: m.heart_rate_bpm.filter(|h| *h > 0).map(f64::from),
                ..Default::default()
            },
            GattValue::IndoorBikeData(m) => Derived {
                speed_mps: m.speed_kmh.map(kmh),
                cadence_rpm: m.cadence_rpm,
                distance_m: m.total_distance_m.map(f64::from),
                power_w: m.instantaneous_power_w.map(f64::from),
                heart_rate_bpm: m.heart_rate_bpm.filter(|h| *h > 0).map(f64::from),
                ..Default::default()
            },
            GattValue::PlxContinuous(m) => Derived {
                spo2_pct: m.spo2_pct.value(),
                heart_rate_bpm: m.pulse_rate_bpm.value(),
                ..Default::default()
            },
            GattValue::PlxSpotCheck(m) => Derived {
                spo2_pct: m.spo2_pct.value(),
                heart_rate_bpm: m.pulse_rate_bpm.value(),
                ..Default::default()
            },
            GattValue::BodySensorLocation { .. }
            | GattValue::BatteryLevel { .. }
            | GattValue::DeviceInfo { .. } => Derived::default(),
        }
    }
}

/// The engine's readings from a decoded payload and what was derived with it.
pub fn readings(decoded: &Decoded, d: &Derived, out: &mut Vec<Reading>) {
    if let Some(bpm) = d.heart_rate_bpm {
        out.push(Reading::HeartRate { bpm });
    }
    match decoded {
        Decoded::Gatt(GattValue::HeartRateMeasurement(m)) => {
            out.extend(
                m.rr_intervals_ms
                    .iter()
                    .map(|ms| Reading::RrInterval { ms: *ms }),
            );
        }
        _ => {
            if let Some(ms) = d.rr_interval_ms {
                out.push(Reading::RrInterval { ms });
            }
        }
    }
    if let Some(w) = d.power_w {
        out.push(Reading::Power { w });
    }
    if let Some(mps) = d.speed_mps {
        out.push(Reading::Speed { mps });
    }
    if let Some(m) = d.distance_m {
        out.push(Reading::Distance { m });
    }
    if let Some(rpm) = d.cadence_rpm {
        out.push(Reading::Cadence { rpm });
    }
    if let Some(pct) = d.spo2_pct {
        out.push(Reading::Spo2 { pct });
    }
}
