//! Bluetooth LE GATT characteristic decoders. No I/O: bytes in, a typed value or a
//! [`DecodeError`] out. Every decoder reads only what the flags promise, in the order the
//! Bluetooth SIG specifications give; trailing bytes beyond the last promised field are ignored
//! (the specifications let later versions append fields), except where a field repeats to the
//! end (RR intervals), where a dangling odd byte is a truncation.

use serde::Serialize;
use uuid::Uuid;

use crate::error::{DecodeError, Reader};

/// 16-bit UUIDs of the services and characteristics the drivers understand.
pub mod uuids {
    pub const HEART_RATE_SERVICE: u16 = 0x180D;
    pub const CYCLING_SPEED_CADENCE_SERVICE: u16 = 0x1816;
    pub const CYCLING_POWER_SERVICE: u16 = 0x1818;
    pub const RUNNING_SPEED_CADENCE_SERVICE: u16 = 0x1814;
    pub const FITNESS_MACHINE_SERVICE: u16 = 0x1826;
    pub const PULSE_OXIMETER_SERVICE: u16 = 0x1822;
    pub const BATTERY_SERVICE: u16 = 0x180F;
    pub const DEVICE_INFORMATION_SERVICE: u16 = 0x180A;
    /// The services a fitness scan filters on.
    pub const FITNESS_SERVICES: [u16; 6] = [
        HEART_RATE_SERVICE,
        CYCLING_SPEED_CADENCE_SERVICE,
        CYCLING_POWER_SERVICE,
        RUNNING_SPEED_CADENCE_SERVICE,
        FITNESS_MACHINE_SERVICE,
        PULSE_OXIMETER_SERVICE,
    ];
}

const BASE_UUID_TAIL: u128 = 0x0000_0000_0000_1000_8000_0080_5f9b_34fb;

/// The 16-bit alias of a Bluetooth SIG UUID (one built on the Bluetooth base UUID).
pub fn uuid16(u: &Uuid) -> Option<u16> {
    let v = u.as_u128();
    let short = (v >> 96) as u32;
    (v & ((1u128 << 96) - 1) == BASE_UUID_TAIL && short <= 0xFFFF).then_some(short as u16)
}

/// The full UUID of a 16-bit Bluetooth SIG alias.
pub fn uuid_from16(short: u16) -> Uuid {
    Uuid::from_u128((u128::from(short) << 96) | BASE_UUID_TAIL)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceInfoField {
    ManufacturerName,
    ModelNumber,
    SerialNumber,
    HardwareRevision,
    FirmwareRevision,
    SoftwareRevision,
}

/// The characteristics with a decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Characteristic {
    HeartRateMeasurement,
    BodySensorLocation,
    BatteryLevel,
    CscMeasurement,
    RscMeasurement,
    CyclingPowerMeasurement,
    TreadmillData,
    IndoorBikeData,
    PlxSpotCheck,
    PlxContinuous,
    DeviceInfo(DeviceInfoField),
}

impl Characteristic {
    pub const ALL: [Characteristic; 16] = [
        Characteristic::HeartRateMeasurement,
        Characteristic::BodySensorLocation,
        Characteristic::BatteryLevel,
        Characteristic::CscMeasurement,
        Characteristic::RscMeasurement,
        Characteristic::CyclingPowerMeasurement,
        Characteristic::TreadmillData,
        Characteristic::IndoorBikeData,
        Characteristic::PlxSpotCheck,
        Characteristic::PlxContinuous,
        Characteristic::DeviceInfo(DeviceInfoField::ManufacturerName),
        Characteristic::DeviceInfo(DeviceInfoField::ModelNumber),
        Characteristic::DeviceInfo(DeviceInfoField::SerialNumber),
        Characteristic::DeviceInfo(DeviceInfoField::HardwareRevision),
        Characteristic::DeviceInfo(DeviceInfoField::FirmwareRevision),
        Characteristic::DeviceInfo(DeviceInfoField::SoftwareRevision),
    ];

    pub fn uuid16(self) -> u16 {
        match self {
            Characteristic::HeartRateMeasurement => 0x2A37,
            Characteristic::BodySensorLocation => 0x2A38,
            Characteristic::BatteryLevel => 0x2A19,
            Characteristic::CscMeasurement => 0x2A5B,
            Characteristic::RscMeasurement => 0x2A53,
            Characteristic::CyclingPowerMeasurement => 0x2A63,
            Characteristic::TreadmillData => 0x2ACD,
            Characteristic::IndoorBikeData => 0x2AD2,
            Characteristic::PlxSpotCheck => 0x2A5E,
            Characteristic::PlxContinuous => 0x2A5F,
            Characteristic::DeviceInfo(DeviceInfoField::ManufacturerName) => 0x2A29,
            Characteristic::DeviceInfo(DeviceInfoField::ModelNumber) => 0x2A24,
            Characteristic::DeviceInfo(DeviceInfoField::SerialNumber) => 0x2A25,
            Characteristic::DeviceInfo(DeviceInfoField::HardwareRevision) => 0x2A27,
            Characteristic::DeviceInfo(DeviceInfoField::FirmwareRevision) => 0x2A26,
            Characteristic::DeviceInfo(DeviceInfoField::SoftwareRevision) => 0x2A28,
        }
    }

    pub fn from_uuid16(short: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.uuid16() == short)
    }

    pub fn from_uuid(u: &Uuid) -> Option<Self> {
        uuid16(u).and_then(Self::from_uuid16)
    }

    /// Parses "2A37", "0x2a37" or a full UUID.
    pub fn parse(s: &str) -> Option<Self> {
        let t = s.trim();
        let hex = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        if hex.len() <= 4 {
            return u16::from_str_radix(hex, 16)
                .ok()
                .and_then(Self::from_uuid16);
        }
        Uuid::parse_str(t).ok().and_then(|u| Self::from_uuid(&u))
    }
}

// --- IEEE 11073 SFLOAT -------------------------------------------------------------------------

/// An IEEE-11073 16-bit SFLOAT: a 4-bit exponent and a 12-bit mantissa (both signed), with
/// reserved encodings for "not a number", "not at this resolution" and the infinities.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", untagged)]
pub enum SFloat {
    Value(f64),
    Special(SFloatSpecial),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SFloatSpecial {
    NaN,
    NRes,
    PositiveInfinity,
    NegativeInfinity,
    Reserved,
}

impl SFloat {
    pub fn from_raw(raw: u16) -> Self {
        match raw {
            0x07FF => SFloat::Special(SFloatSpecial::NaN),
            0x0800 => SFloat::Special(SFloatSpecial::NRes),
            0x07FE => SFloat::Special(SFloatSpecial::PositiveInfinity),
            0x0802 => SFloat::Special(SFloatSpecial::NegativeInfinity),
            0x0801 => SFloat::Special(SFloatSpecial::Reserved),
            _ => {
                let exponent = i32::from((raw as i16) >> 12);
                let mantissa = i32::from(((raw & 0x0FFF) << 4) as i16 >> 4);
                SFloat::Value(f64::from(mantissa) * 10f64.powi(exponent))
            }
        }
    }

    /// Encodes an integer-valued or one-decimal value (the shapes pulse oximeters send).
    pub fn encode(value: f64) -> u16 {
        let (m, e) = if (value.fract()).abs() < 1e-9 && value.abs() < 2048.0 {
            (value.round() as i32, 0)
        } else {
            ((value * 10.0).round() as i32, -1)
        };
        let m = m.clamp(-2045, 2045);
        (((e & 0xF) as u16) << 12) | ((m as u16) & 0x0FFF)
    }

    pub fn value(self) -> Option<f64> {
        match self {
            SFloat::Value(v) => Some(v),
            SFloat::Special(_) => None,
        }
    }
}

fn sfloat(r: &mut Reader<'_>, what: &'static str) -> Result<SFloat, DecodeError> {
    Ok(SFloat::from_raw(r.u16(what)?))
}

// --- Heart rate --------------------------------------------------------------------------------

/// Heart Rate Measurement (0x2A37).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeartRateMeasurement {
    pub heart_rate_bpm: u16,
    /// `None` when the strap does not support contact detection.
    pub sensor_contact: Option<bool>,
    pub energy_expended_kj: Option<u16>,
    /// RR intervals in milliseconds (sent in 1/1024 s).
    pub rr_intervals_ms: Vec<f64>,
    /// The same intervals in the strap's 1/1024 s ticks.
    #[serde(skip)]
    pub rr_intervals_raw: Vec<u16>,
}

pub fn decode_heart_rate(bytes: &[u8]) -> Result<HeartRateMeasurement, DecodeError> {
    let mut r = Reader::new(bytes);
    let flags = r.u8("flags")?;
    let heart_rate_bpm = if flags & 0x01 != 0 {
        r.u16("heart rate (uint16)")?
    } else {
        u16::from(r.u8("heart rate (uint8)")?)
    };
    let sensor_contact = (flags & 0x04 != 0).then_some(flags & 0x02 != 0);
    let energy_expended_kj = if flags & 0x08 != 0 {
        Some(r.u16("energy expended (uint16)")?)
    } else {
        None
    };
    let mut raw = Vec::new();
    if flags & 0x10 != 0 {
        raw.reserve(r.remaining() / 2);
        while r.remaining() > 0 {
            raw.push(r.u16("RR interval (uint16)")?);
        }
    }
    Ok(HeartRateMeasurement {
        heart_rate_bpm,
        sensor_contact,
        energy_expended_kj,
        rr_intervals_ms: raw
            .iter()
            .map(|v| f64::from(*v) * 1000.0 / 1024.0)
            .collect(),
        rr_intervals_raw: raw,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BodySensorLocation {
    Other,
    Chest,
    Wrist,
    Finger,
    Hand,
    EarLobe,
    Foot,
}

pub fn decode_body_sensor_location(bytes: &[u8]) -> Result<BodySensorLocation, DecodeError> {
    let mut r = Reader::new(bytes);
    let v = r.u8("body sensor location")?;
    Ok(match v {
        0 => BodySensorLocation::Other,
        1 => BodySensorLocation::Chest,
        2 => BodySensorLocation::Wrist,
        3 => BodySensorLocation::Finger,
        4 => BodySensorLocation::Hand,
        5 => BodySensorLocation::EarLobe,
        6 => BodySensorLocation::Foot,
        _ => return Err(DecodeError::invalid(0, "a location 0..=6", v)),
    })
}

pub fn decode_battery_level(bytes: &[u8]) -> Result<u8, DecodeError> {
    let mut r = Reader::new(bytes);
    let v = r.u8("battery level")?;
    if v > 100 {
        return Err(DecodeError::invalid(0, "a percentage 0..=100", v));
    }
    Ok(v)
}

// --- Cycling speed and cadence, cycling power, running ------------------------------------------

/// Cumulative revolutions and the time of the last revolution event, in the sensor's ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RevolutionData {
    pub revolutions: u32,
    pub event_time: u16,
}

/// CSC Measurement (0x2A5B). Event times are in 1/1024 s.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CscMeasurement {
    pub wheel_revolutions: Option<u32>,
    pub wheel_event_time_s: Option<f64>,
    pub crank_revolutions: Option<u16>,
    pub crank_event_time_s: Option<f64>,
    #[serde(skip)]
    pub wheel: Option<RevolutionData>,
    #[serde(skip)]
    pub crank: Option<RevolutionData>,
}

pub const CSC_TICKS_PER_S: f64 = 1024.0;
/// The Cycling Power service times wheel events in 1/2048 s (crank events in 1/1024 s).
pub const CPS_WHEEL_TICKS_PER_S: f64 = 2048.0;

pub fn decode_csc(bytes: &[u8]) -> Result<CscMeasurement, DecodeError> {
    let mut r = Reader::new(bytes);
    let flags = r.u8("flags")?;
    let wheel = if flags & 0x01 != 0 {
        Some(RevolutionData {
            revolutions: r.u32("cumulative wheel revolutions (uint32)")?,
            event_time: r.u16("last wheel event time (uint16)")?,
        })
    } else {
        None
    };
    let crank = if flags & 0x02 != 0 {
        Some(RevolutionData {
            revolutions: u32::from(r.u16("cumulative crank revolutions (uint16)")?),
            event_time: r.u16("last crank event time (uint16)")?,
        })
    } else {
        None
    };
    Ok(CscMeasurement {
        wheel_revolutions: wheel.map(|w| w.revolutions),
        wheel_event_time_s: wheel.map(|w| f64::from(w.event_time) / CSC_TICKS_PER_S),
        crank_revolutions: crank.map(|c| c.revolutions as u16),
        crank_event_time_s: crank.map(|c| f64::from(c.event_time) / CSC_TICKS_PER_S),
        wheel,
        crank,
    })
}

/// Cycling Power Measurement (0x2A63), every optional field.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CyclingPowerMeasurement {
    pub instantaneous_power_w: i16,
    pub pedal_power_balance_pct: Option<f64>,
    /// Whether the balance is the left pedal's share (else unknown which).
    pub pedal_power_balance_left: bool,
    pub accumulated_torque_nm: Option<f64>,
    /// Accumulated torque source: crank (true) or wheel (false).
    pub accumulated_torque_crank_based: bool,
    pub wheel_revolutions: Option<u32>,
    /// In 1/2048 s on the wire.
    pub wheel_event_time_s: Option<f64>,
    pub crank_revolutions: Option<u16>,
    pub crank_event_time_s: Option<f64>,
    pub max_force_n: Option<i16>,
    pub min_force_n: Option<i16>,
    pub max_torque_nm: Option<f64>,
    pub min_torque_nm: Option<f64>,
    pub max_angle_deg: Option<u16>,
    pub min_angle_deg: Option<u16>,
    pub top_dead_spot_angle_deg: Option<u16>,
    pub bottom_dead_spot_angle_deg: Option<u16>,
    pub accumulated_energy_kj: Option<u16>,
    pub offset_compensation_indicator: bool,
    #[serde(skip)]
    pub wheel: Option<RevolutionData>,
    #[serde(skip)]
    pub crank: Option<RevolutionData>,
}

pub fn decode_cycling_power(bytes: &[u8]) -> Result<CyclingPowerMeasurement, DecodeError> {
    let mut r = Reader::new(bytes);
    let flags = r.u16("flags (uint16)")?;
    let mut m = CyclingPowerMeasurement {
        instantaneous_power_w: r.i16("instantaneous power (sint16)")?,
        pedal_power_balance_left: flags & 0x0002 != 0,
        accumulated_torque_crank_based: flags & 0x0008 != 0,
        offset_compensation_indicator: flags & 0x1000 != 0,
        ..Default::default()
    };
    if flags & 0x0001 != 0 {
        m.pedal_power_balance_pct = Some(f64::from(r.u8("pedal power balance (uint8)")?) / 2.0);
    }
    if flags & 0x0004 != 0 {
        m.accumulated_torque_nm = Some(f64::from(r.u16("accumulated torque (uint16)")?) / 32.0);
    }
    if flags & 0x0010 != 0 {
        let w = RevolutionData {
            revolutions: r.u32("cumulative wheel revolutions (uint32)")?,
            event_time: r.u16("last wheel event time (uint16)")?,
        };
        m.wheel_revolutions = Some(w.revolutions);
        m.wheel_event_time_s = Some(f64::from(w.event_time) / CPS_WHEEL_TICKS_PER_S);
        m.wheel = Some(w);
    }
    if flags & 0x0020 != 0 {
        let c = RevolutionData {
            revolutions: u32::from(r.u16("cumulative crank revolutions (uint16)")?),
            event_time: r.u16("last crank event time (uint16)")?,
        };
        m.crank_revolutions = Some(c.revolutions as u16);
        m.crank_event_time_s = Some(f64::from(c.event_time) / CSC_TICKS_PER_S);
        m.crank = Some(c);
    }
    if flags & 0x0040 != 0 {
        m.max_force_n = Some(r.i16("maximum force magnitude (sint16)")?);
        m.min_force_n = Some(r.i16("minimum force magnitude (sint16)")?);
    }
    if flags & 0x0080 != 0 {
        m.max_torque_nm = Some(f64::from(r.i16("maximum torque magnitude (sint16)")?) / 32.0);
        m.min_torque_nm = Some(f64::from(r.i16("minimum torque magnitude (sint16)")?) / 32.0);
    }
    if flags & 0x0100 != 0 {
        let v = r.u24("extreme angles (2 x uint12)")?;
        m.max_angle_deg = Some((v & 0x0FFF) as u16);
        m.min_angle_deg = Some((v >> 12) as u16);
    }
    if flags & 0x0200 != 0 {
        m.top_dead_spot_angle_deg = Some(r.u16("top dead spot angle (uint16)")?);
    }
    if flags & 0x0400 != 0 {
        m.bottom_dead_spot_angle_deg = Some(r.u16("bottom dead spot angle (uint16)")?);
    }
    if flags & 0x0800 != 0 {
        m.accumulated_energy_kj = Some(r.u16("accumulated energy (uint16)")?);
    }
    Ok(m)
}

/// RSC Measurement (0x2A53).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RscMeasurement {
    /// Sent in 1/256 m/s.
    pub speed_mps: f64,
    /// Steps (or strides, per the sensor) per minute.
    pub cadence_per_min: u8,
    pub stride_length_m: Option<f64>,
    pub total_distance_m: Option<f64>,
    pub running: bool,
}

pub fn decode_rsc(bytes: &[u8]) -> Result<RscMeasurement, DecodeError> {
    let mut r = Reader::new(bytes);
    let flags = r.u8("flags")?;
    let speed_mps = f64::from(r.u16("instantaneous speed (uint16)")?) / 256.0;
    let cadence_per_min = r.u8("instantaneous cadence (uint8)")?;
    let stride_length_m = if flags & 0x01 != 0 {
        Some(f64::from(r.u16("instantaneous stride length (uint16)")?) / 100.0)
    } else {
        None
    };
    let total_distance_m = if flags & 0x02 != 0 {
        Some(f64::from(r.u32("total distance (uint32)")?) / 10.0)
    } else {
        None
    };
    Ok(RscMeasurement {
        speed_mps,
        cadence_per_min,
        stride_length_m,
        total_distance_m,
        running: flags & 0x04 != 0,
    })
}

// --- Fitness machine ---------------------------------------------------------------------------

/// Fields shared by the Fitness Machine data characteristics.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EnergyFields {
    pub total_energy_kcal: Option<u16>,
    pub energy_per_hour_kcal: Option<u16>,
    pub energy_per_minute_kcal: Option<u8>,
}

fn energy(r: &mut Reader<'_>) -> Result<EnergyFields, DecodeError> {
    Ok(EnergyFields {
        total_energy_kcal: Some(r.u16("total energy (uint16)")?),
        energy_per_hour_kcal: Some(r.u16("energy per hour (uint16)")?),
        energy_per_minute_kcal: Some(r.u8("energy per minute (uint8)")?),
    })
}

/// FTMS Treadmill Data (0x2ACD). Flag bit 0 ("more data") is inverted: 0 means the
/// instantaneous speed field is present.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TreadmillData {
    pub more_data: bool,
    pub speed_kmh: Option<f64>,
    pub average_speed_kmh: Option<f64>,
    pub total_distance_m: Option<u32>,
    pub inclination_pct: Option<f64>,
    pub ramp_angle_deg: Option<f64>,
    pub positive_elevation_gain_m: Option<f64>,
    pub negative_elevation_gain_m: Option<f64>,
    /// km/min, 0.1 resolution.
    pub instantaneous_pace_km_per_min: Option<f64>,
    pub average_pace_km_per_min: Option<f64>,
    #[serde(flatten)]
    pub energy: EnergyFields,
    pub heart_rate_bpm: Option<u8>,
    pub metabolic_equivalent: Option<f64>,
    pub elapsed_time_s: Option<u16>,
    pub remaining_time_s: Option<u16>,
    pub force_on_belt_n: Option<i16>,
    pub power_output_w: Option<i16>,
}

pub fn decode_treadmill(bytes: &[u8]) -> Result<TreadmillData, DecodeError> {
    let mut r = Reader::new(bytes);
    let f = r.u16("flags (uint16)")?;
    let mut d = TreadmillData {
        more_data: f & 0x0001 != 0,
        ..Default::default()
    };
    if f & 0x0001 == 0 {
        d.speed_kmh = Some(f64::from(r.u16("instantaneous speed (uint16)")?) / 100.0);
    }
    if f & 0x0002 != 0 {
        d.average_speed_kmh = Some(f64::from(r.u16("average speed (uint16)")?) / 100.0);
    }
    if f & 0x0004 != 0 {
        d.total_distance_m = Some(r.u24("total distance (uint24)")?);
    }
    if f & 0x0008 != 0 {
        d.inclination_pct = Some(f64::from(r.i16("inclination (sint16)")?) / 10.0);
        d.ramp_angle_deg = Some(f64::from(r.i16("ramp angle setting (sint16)")?) / 10.0);
    }
    if f & 0x0010 != 0 {
        d.positive_elevation_gain_m =
            Some(f64::from(r.u16("positive elevation gain (uint16)")?) / 10.0);
        d.negative_elevation_gain_m =
            Some(f64::from(r.u16("negative elevation gain (uint16)")?) / 10.0);
    }
    if f & 0x0020 != 0 {
        d.instantaneous_pace_km_per_min =
            Some(f64::from(r.u8("instantaneous pace (uint8)")?) / 10.0);
    }
    if f & 0x0040 != 0 {
        d.average_pace_km_per_min = Some(f64::from(r.u8("average pace (uint8)")?) / 10.0);
    }
    if f & 0x0080 != 0 {
        d.energy = energy(&mut r)?;
    }
    if f & 0x0100 != 0 {
        d.heart_rate_bpm = Some(r.u8("heart rate (uint8)")?);
    }
    if f & 0x0200 != 0 {
        d.metabolic_equivalent = Some(f64::from(r.u8("metabolic equivalent (uint8)")?) / 10.0);
    }
    if f & 0x0400 != 0 {
        d.elapsed_time_s = Some(r.u16("elapsed time (uint16)")?);
    }
    if f & 0x0800 != 0 {
        d.remaining_time_s = Some(r.u16("remaining time (uint16)")?);
    }
    if f & 0x1000 != 0 {
        d.force_on_belt_n = Some(r.i16("force on belt (sint16)")?);
        d.power_output_w = Some(r.i16("power output (sint16)")?);
    }
    Ok(d)
}

/// FTMS Indoor Bike Data (0x2AD2). Flag bit 0 ("more data") is inverted: 0 means the
/// instantaneous speed field is present. Field order checked against real trainer captures
/// (see tests/captures.rs): cadence (bit 2) comes before total distance (bit 4), resistance
/// (bit 5) before power (bit 6).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IndoorBikeData {
    pub more_data: bool,
    pub speed_kmh: Option<f64>,
    pub average_speed_kmh: Option<f64>,
    pub cadence_rpm: Option<f64>,
    pub average_cadence_rpm: Option<f64>,
    pub total_distance_m: Option<u32>,
    pub resistance_level: Option<i16>,
    pub instantaneous_power_w: Option<i16>,
    pub average_power_w: Option<i16>,
    #[serde(flatten)]
    pub energy: EnergyFields,
    pub heart_rate_bpm: Option<u8>,
    pub metabolic_equivalent: Option<f64>,
    pub elapsed_time_s: Option<u16>,
    pub remaining_time_s: Option<u16>,
}

pub fn decode_indoor_bike(bytes: &[u8]) -> Result<IndoorBikeData, DecodeError> {
    let mut r = Reader::new(bytes);
    let f = r.u16("flags (uint16)")?;
    let mut d = IndoorBikeData {
        more_data: f & 0x0001 != 0,
        ..Default::default()
    };
    if f & 0x0001 == 0 {
        d.speed_kmh = Some(f64::from(r.u16("instantaneous speed (uint16)")?) / 100.0);
    }
    if f & 0x0002 != 0 {
        d.average_speed_kmh = Some(f64::from(r.u16("average speed (uint16)")?) / 100.0);
    }
    if f & 0x0004 != 0 {
        d.cadence_rpm = Some(f64::from(r.u16("instantaneous cadence (uint16)")?) / 2.0);
    }
    if f & 0x0008 != 0 {
        d.average_cadence_rpm = Some(f64::from(r.u16("average cadence (uint16)")?) / 2.0);
    }
    if f & 0x0010 != 0 {
        d.total_distance_m = Some(r.u24("total distance (uint24)")?);
    }
    if f & 0x0020 != 0 {
        d.resistance_level = Some(r.i16("resistance level (sint16)")?);
    }
    if f & 0x0040 != 0 {
        d.instantaneous_power_w = Some(r.i16("instantaneous power (sint16)")?);
    }
    if f & 0x0080 != 0 {
        d.average_power_w = Some(r.i16("average power (sint16)")?);
    }
    if f & 0x0100 != 0 {
        d.energy = energy(&mut r)?;
    }
    if f & 0x0200 != 0 {
        d.heart_rate_bpm = Some(r.u8("heart rate (uint8)")?);
    }
    if f & 0x0400 != 0 {
        d.metabolic_equivalent = Some(f64::from(r.u8("metabolic equivalent (uint8)")?) / 10.0);
    }
    if f & 0x0800 != 0 {
        d.elapsed_time_s = Some(r.u16("elapsed time (uint16)")?);
    }
    if f & 0x1000 != 0 {
        d.remaining_time_s = Some(r.u16("remaining time (uint16)")?);
    }
    Ok(d)
}

// --- Pulse oximeter ----------------------------------------------------------------------------

/// PLX Spot-check Measurement (0x2A5E).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlxSpotCheck {
    pub spo2_pct: SFloat,
    pub pulse_rate_bpm: SFloat,
    /// "YYYY-MM-DDTHH:MM:SS" as the oximeter's clock gave it.
    pub timestamp: Option<String>,
    pub measurement_status: Option<u16>,
    pub device_and_sensor_status: Option<u32>,
    pub pulse_amplitude_index_pct: Option<SFloat>,
    pub device_clock_not_set: bool,
}

pub fn decode_plx_spot_check(bytes: &[u8]) -> Result<PlxSpotCheck, DecodeError> {
    let mut r = Reader::new(bytes);
    let flags = r.u8("flags")?;
    let spo2_pct = sfloat(&mut r, "SpO2 (SFLOAT)")?;
    let pulse_rate_bpm = sfloat(&mut r, "pulse rate (SFLOAT)")?;
    let timestamp = if flags & 0x01 != 0 {
        let at = r.pos();
        let year = r.u16("timestamp year (uint16)")?;
        let b = r.take(5, "timestamp month, day, hours, minutes, seconds")?;
        let (mo, d, h, mi, s) = (b[0], b[1], b[2], b[3], b[4]);
        if mo > 12 || d > 31 || h > 23 || mi > 59 || s > 59 {
            return Err(DecodeError::invalid(
                at,
                "a date-time (month <= 12, day <= 31, h < 24, m < 60, s < 60)",
                format!("{year}-{mo}-{d} {h}:{mi}:{s}"),
            ));
        }
        Some(format!("{year:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}"))
    } else {
        None
    };
    let measurement_status = if flags & 0x02 != 0 {
        Some(r.u16("measurement status (uint16)")?)
    } else {
        None
    };
    let device_and_sensor_status = if flags & 0x04 != 0 {
        Some(r.u24("device and sensor status (uint24)")?)
    } else {
        None
    };
    let pulse_amplitude_index_pct = if flags & 0x08 != 0 {
        Some(sfloat(&mut r, "pulse amplitude index (SFLOAT)")?)
    } else {
        None
    };
    Ok(PlxSpotCheck {
        spo2_pct,
        pulse_rate_bpm,
        timestamp,
        measurement_status,
        device_and_sensor_status,
        pulse_amplitude_index_pct,
        device_clock_not_set: flags & 0x10 != 0,
    })
}

/// PLX Continuous Measurement (0x2A5F).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlxContinuous {
    pub spo2_pct: SFloat,
    pub pulse_rate_bpm: SFloat,
    pub spo2_fast_pct: Option<SFloat>,
    pub pulse_rate_fast_bpm: Option<SFloat>,
    pub spo2_slow_pct: Option<SFloat>,
    pub pulse_rate_slow_bpm: Option<SFloat>,
    pub measurement_status: Option<u16>,
    pub device_and_sensor_status: Option<u32>,
    pub pulse_amplitude_index_pct: Option<SFloat>,
}

pub fn decode_plx_continuous(bytes: &[u8]) -> Result<PlxContinuous, DecodeError> {
    let mut r = Reader::new(bytes);
    let flags = r.u8("flags")?;
    let spo2_pct = sfloat(&mut r, "SpO2PR-Normal SpO2 (SFLOAT)")?;
    let pulse_rate_bpm = sfloat(&mut r, "SpO2PR-Normal pulse rate (SFLOAT)")?;
    let mut m = PlxContinuous {
        spo2_pct,
        pulse_rate_bpm,
        spo2_fast_pct: None,
        pulse_rate_fast_bpm: None,
        spo2_slow_pct: None,
        pulse_rate_slow_bpm: None,
        measurement_status: None,
        device_and_sensor_status: None,
        pulse_amplitude_index_pct: None,
    };
    if flags & 0x01 != 0 {
        m.spo2_fast_pct = Some(sfloat(&mut r, "SpO2PR-Fast SpO2 (SFLOAT)")?);
        m.pulse_rate_fast_bpm = Some(sfloat(&mut r, "SpO2PR-Fast pulse rate (SFLOAT)")?);
    }
    if flags & 0x02 != 0 {
        m.spo2_slow_pct = Some(sfloat(&mut r, "SpO2PR-Slow SpO2 (SFLOAT)")?);
        m.pulse_rate_slow_bpm = Some(sfloat(&mut r, "SpO2PR-Slow pulse rate (SFLOAT)")?);
    }
    if flags & 0x04 != 0 {
        m.measurement_status = Some(r.u16("measurement status (uint16)")?);
    }
    if flags & 0x08 != 0 {
        m.device_and_sensor_status = Some(r.u24("device and sensor status (uint24)")?);
    }
    if flags & 0x10 != 0 {
        m.pulse_amplitude_index_pct = Some(sfloat(&mut r, "pulse amplitude index (SFLOAT)")?);
    }
    Ok(m)
}

// --- Device information -----------------------------------------------------------------------

/// A Device Information string: UTF-8, trailing NULs (padding some devices send) removed.
pub fn decode_device_info_string(bytes: &[u8]) -> Result<String, DecodeError> {
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    match std::str::from_utf8(&bytes[..end]) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => {
            let at = e.valid_up_to();
            Err(DecodeError::invalid(
                at,
                "UTF-8 text",
                format!("0x{:02X}", bytes.get(at).copied().unwrap_or(0)),
            ))
        }
    }
}

// --- Dispatch ----------------------------------------------------------------------------------

/// Any decoded characteristic value.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "characteristic", rename_all = "snake_case")]
pub enum GattValue {
    HeartRateMeasurement(HeartRateMeasurement),
    BodySensorLocation {
        location: BodySensorLocation,
    },
    BatteryLevel {
        battery_level_pct: u8,
    },
    CscMeasurement(CscMeasurement),
    RscMeasurement(RscMeasurement),
    CyclingPowerMeasurement(CyclingPowerMeasurement),
    TreadmillData(TreadmillData),
    IndoorBikeData(IndoorBikeData),
    PlxSpotCheck(PlxSpotCheck),
    PlxContinuous(PlxContinuous),
    DeviceInfo {
        field: DeviceInfoField,
        value: String,
    },
}

/// Decodes one notification (or read) of `characteristic`.
pub fn decode(characteristic: Characteristic, bytes: &[u8]) -> Result<GattValue, DecodeError> {
    Ok(match characteristic {
        Characteristic::HeartRateMeasurement => {
            GattValue::HeartRateMeasurement(decode_heart_rate(bytes)?)
        }
        Characteristic::BodySensorLocation => GattValue::BodySensorLocation {
            location: decode_body_sensor_location(bytes)?,
        },
        Characteristic::BatteryLevel => GattValue::BatteryLevel {
            battery_level_pct: decode_battery_level(bytes)?,
        },
        Characteristic::CscMeasurement => GattValue::CscMeasurement(decode_csc(bytes)?),
        Characteristic::RscMeasurement => GattValue::RscMeasurement(decode_rsc(bytes)?),
        Characteristic::CyclingPowerMeasurement => {
            GattValue::CyclingPowerMeasurement(decode_cycling_power(bytes)?)
        }
        Characteristic::TreadmillData => GattValue::TreadmillData(decode_treadmill(bytes)?),
        Characteristic::IndoorBikeData => GattValue::IndoorBikeData(decode_indoor_bike(bytes)?),
        Characteristic::PlxSpotCheck => GattValue::PlxSpotCheck(decode_plx_spot_check(bytes)?),
        Characteristic::PlxContinuous => GattValue::PlxContinuous(decode_plx_continuous(bytes)?),
        Characteristic::DeviceInfo(field) => GattValue::DeviceInfo {
            field,
            value: decode_device_info_string(bytes)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_aliases_round_trip() {
        let u = uuid_from16(0x2A37);
        assert_eq!(u.to_string(), "00002a37-0000-1000-8000-00805f9b34fb");
        assert_eq!(uuid16(&u), Some(0x2A37));
        assert_eq!(
            Characteristic::parse("2A37"),
            Some(Characteristic::HeartRateMeasurement)
        );
        assert_eq!(
            Characteristic::parse("0x2ad2"),
            Some(Characteristic::IndoorBikeData)
        );
        assert_eq!(
            Characteristic::parse("00002a63-0000-1000-8000-00805f9b34fb"),
            Some(Characteristic::CyclingPowerMeasurement)
        );
        assert_eq!(uuid16(&Uuid::from_u128(1)), None);
    }

    #[test]
    fn sfloat_special_values_and_signs() {
        assert_eq!(
            SFloat::from_raw(0x07FF),
            SFloat::Special(SFloatSpecial::NaN)
        );
        assert_eq!(
            SFloat::from_raw(0x0800),
            SFloat::Special(SFloatSpecial::NRes)
        );
        assert_eq!(
            SFloat::from_raw(0x07FE),
            SFloat::Special(SFloatSpecial::PositiveInfinity)
        );
        assert_eq!(
            SFloat::from_raw(0x0802),
            SFloat::Special(SFloatSpecial::NegativeInfinity)
        );
        assert_eq!(
            SFloat::from_raw(0x0801),
            SFloat::Special(SFloatSpecial::Reserved)
        );
        // exponent -1, mantissa 975 -> 97.5
        assert_eq!(SFloat::from_raw(0xF3CF), SFloat::Value(97.5));
        // exponent 0, mantissa -1 (0xFFF)
        assert_eq!(SFloat::from_raw(0x0FFF), SFloat::Value(-1.0));
        // exponent +2, mantissa 3 -> 300
        assert_eq!(SFloat::from_raw(0x2003), SFloat::Value(300.0));
        assert_eq!(SFloat::from_raw(SFloat::encode(97.5)).value(), Some(97.5));
        assert_eq!(SFloat::from_raw(SFloat::encode(62.0)).value(), Some(62.0));
    }

    #[test]
    fn heart_rate_every_field() {
        // uint16 HR 0x0105, contact supported and detected, energy 0x0203, two RR.
        let m = decode_heart_rate(&[0x1F, 0x05, 0x01, 0x03, 0x02, 0x00, 0x04, 0x00, 0x02]).unwrap();
        assert_eq!(m.heart_rate_bpm, 261);
        assert_eq!(m.sensor_contact, Some(true));
        assert_eq!(m.energy_expended_kj, Some(0x0203));
        assert_eq!(m.rr_intervals_ms, vec![1000.0, 500.0]);
        // contact supported, not detected
        assert_eq!(
            decode_heart_rate(&[0x04, 60]).unwrap().sensor_contact,
            Some(false)
        );
        // a dangling RR byte is a truncation at its offset
        let e = decode_heart_rate(&[0x10, 60, 0x00, 0x04, 0x01]).unwrap_err();
        assert_eq!(e.offset(), 4);
        assert!(e.is_truncated());
        // energy promised but missing
        let e = decode_heart_rate(&[0x08, 60, 0x01]).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::Truncated {
                    offset: 2,
                    needed: 1,
                    ..
                }
            ),
            "{e}"
        );
        assert!(decode_heart_rate(&[]).unwrap_err().is_truncated());
    }

    #[test]
    fn location_battery_and_strings_refuse_reserved_values() {
        assert_eq!(
            decode_body_sensor_location(&[1]).unwrap(),
            BodySensorLocation::Chest
        );
        let e = decode_body_sensor_location(&[7]).unwrap_err();
        assert!(!e.is_truncated());
        assert_eq!(decode_battery_level(&[100]).unwrap(), 100);
        assert!(!decode_battery_level(&[101]).unwrap_err().is_truncated());
        assert_eq!(decode_device_info_string(b"Polar\0\0").unwrap(), "Polar");
        let e = decode_device_info_string(&[b'A', 0xFF, b'B']).unwrap_err();
        assert_eq!(e.offset(), 1);
    }

    #[test]
    fn cycling_power_every_optional_field() {
        let mut b = vec![];
        b.extend_from_slice(&0x1FFFu16.to_le_bytes()); // every flag incl. offset compensation
        b.extend_from_slice(&250i16.to_le_bytes()); // power
        b.push(101); // balance 50.5 %
        b.extend_from_slice(&(32u16 * 10).to_le_bytes()); // torque 10 Nm
        b.extend_from_slice(&100_000u32.to_le_bytes()); // wheel revs
        b.extend_from_slice(&4096u16.to_le_bytes()); // wheel time 2 s (1/2048)
        b.extend_from_slice(&500u16.to_le_bytes()); // crank revs
        b.extend_from_slice(&1024u16.to_le_bytes()); // crank time 1 s
        b.extend_from_slice(&300i16.to_le_bytes()); // max force
        b.extend_from_slice(&(-20i16).to_le_bytes()); // min force
        b.extend_from_slice(&(64i16).to_le_bytes()); // max torque 2 Nm
        b.extend_from_slice(&(-32i16).to_le_bytes()); // min torque -1 Nm
        b.extend_from_slice(&[0x5A, 0x40, 0x0B]); // max 0x05A = 90 deg, min 0x0B4 = 180 deg
        b.extend_from_slice(&10u16.to_le_bytes()); // TDC
        b.extend_from_slice(&190u16.to_le_bytes()); // BDC
        b.extend_from_slice(&7u16.to_le_bytes()); // energy kJ
        let m = decode_cycling_power(&b).unwrap();
        assert_eq!(m.instantaneous_power_w, 250);
        assert_eq!(m.pedal_power_balance_pct, Some(50.5));
        assert!(m.pedal_power_balance_left && m.accumulated_torque_crank_based);
        assert_eq!(m.accumulated_torque_nm, Some(10.0));
        assert_eq!(m.wheel_revolutions, Some(100_000));
        assert_eq!(m.wheel_event_time_s, Some(2.0));
        assert_eq!(m.crank_revolutions, Some(500));
        assert_eq!(m.crank_event_time_s, Some(1.0));
        assert_eq!((m.max_force_n, m.min_force_n), (Some(300), Some(-20)));
        assert_eq!((m.max_torque_nm, m.min_torque_nm), (Some(2.0), Some(-1.0)));
        assert_eq!((m.max_angle_deg, m.min_angle_deg), (Some(90), Some(180)));
        assert_eq!(m.top_dead_spot_angle_deg, Some(10));
        assert_eq!(m.bottom_dead_spot_angle_deg, Some(190));
        assert_eq!(m.accumulated_energy_kj, Some(7));
        assert!(m.offset_compensation_indicator);
        // Every prefix is a truncation, never a panic, with the offset where it stopped.
        for n in 0..b.len() {
            let e = decode_cycling_power(&b[..n]).unwrap_err();
            assert!(e.is_truncated(), "{n}: {e}");
            assert!(e.offset() <= n);
        }
    }

    #[test]
    fn csc_and_rsc_every_field() {
        let m = decode_csc(&[0x03, 1, 0, 0, 0, 0x00, 0x04, 2, 0, 0x00, 0x08]).unwrap();
        assert_eq!(m.wheel_revolutions, Some(1));
        assert_eq!(m.wheel_event_time_s, Some(1.0));
        assert_eq!(m.crank_revolutions, Some(2));
        assert_eq!(m.crank_event_time_s, Some(2.0));
        let r = decode_rsc(&[0x07, 0x00, 0x03, 90, 0x7D, 0x00, 0x10, 0x27, 0, 0]).unwrap();
        assert_eq!(r.speed_mps, 3.0);
        assert_eq!(r.cadence_per_min, 90);
        assert_eq!(r.stride_length_m, Some(1.25));
        assert_eq!(r.total_distance_m, Some(1000.0));
        assert!(r.running);
        let e = decode_rsc(&[0x02, 0x00, 0x03, 90, 1, 2]).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::Truncated {
                    offset: 4,
                    needed: 2,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn treadmill_every_field() {
        let mut b = vec![];
        b.extend_from_slice(&0x1FFEu16.to_le_bytes()); // all but "more data": speed present
        b.extend_from_slice(&1050u16.to_le_bytes()); // 10.5 km/h
        b.extend_from_slice(&1000u16.to_le_bytes()); // avg 10 km/h
        b.extend_from_slice(&[0x10, 0x27, 0x00]); // 10000 m
        b.extend_from_slice(&(15i16).to_le_bytes()); // 1.5 %
        b.extend_from_slice(&(-5i16).to_le_bytes()); // -0.5 deg
        b.extend_from_slice(&123u16.to_le_bytes()); // +12.3 m
        b.extend_from_slice(&45u16.to_le_bytes()); // -4.5 m
        b.push(2); // pace 0.2 km/min
        b.push(1); // avg pace 0.1 km/min
        b.extend_from_slice(&300u16.to_le_bytes());
        b.extend_from_slice(&600u16.to_le_bytes());
        b.push(10);
        b.push(150); // HR
        b.push(85); // MET 8.5
        b.extend_from_slice(&3600u16.to_le_bytes());
        b.extend_from_slice(&60u16.to_le_bytes());
        b.extend_from_slice(&(40i16).to_le_bytes());
        b.extend_from_slice(&(200i16).to_le_bytes());
        let d = decode_treadmill(&b).unwrap();
        assert_eq!(d.speed_kmh, Some(10.5));
        assert_eq!(d.average_speed_kmh, Some(10.0));
        assert_eq!(d.total_distance_m, Some(10_000));
        assert_eq!(
            (d.inclination_pct, d.ramp_angle_deg),
            (Some(1.5), Some(-0.5))
        );
        assert_eq!(d.positive_elevation_gain_m, Some(12.3));
        assert_eq!(d.negative_elevation_gain_m, Some(4.5));
        assert_eq!(d.instantaneous_pace_km_per_min, Some(0.2));
        assert_eq!(d.average_pace_km_per_min, Some(0.1));
        assert_eq!(d.energy.total_energy_kcal, Some(300));
        assert_eq!(d.energy.energy_per_hour_kcal, Some(600));
        assert_eq!(d.energy.energy_per_minute_kcal, Some(10));
        assert_eq!(d.heart_rate_bpm, Some(150));
        assert_eq!(d.metabolic_equivalent, Some(8.5));
        assert_eq!(
            (d.elapsed_time_s, d.remaining_time_s),
            (Some(3600), Some(60))
        );
        assert_eq!((d.force_on_belt_n, d.power_output_w), (Some(40), Some(200)));
        // "more data" set: no speed field.
        let d = decode_treadmill(&[0x01, 0x00]).unwrap();
        assert!(d.more_data && d.speed_kmh.is_none());
        for n in 0..b.len() {
            assert!(decode_treadmill(&b[..n]).unwrap_err().is_truncated());
        }
    }

    #[test]
    fn indoor_bike_every_field() {
        let mut b = vec![];
        b.extend_from_slice(&0x1FFEu16.to_le_bytes());
        b.extend_from_slice(&2500u16.to_le_bytes()); // 25 km/h
        b.extend_from_slice(&2400u16.to_le_bytes());
        b.extend_from_slice(&181u16.to_le_bytes()); // 90.5 rpm
        b.extend_from_slice(&170u16.to_le_bytes()); // 85 rpm
        b.extend_from_slice(&[0xE8, 0x03, 0x00]); // 1000 m
        b.extend_from_slice(&(12i16).to_le_bytes());
        b.extend_from_slice(&(210i16).to_le_bytes());
        b.extend_from_slice(&(190i16).to_le_bytes());
        b.extend_from_slice(&100u16.to_le_bytes());
        b.extend_from_slice(&700u16.to_le_bytes());
        b.push(12);
        b.push(140);
        b.push(70);
        b.extend_from_slice(&600u16.to_le_bytes());
        b.extend_from_slice(&1200u16.to_le_bytes());
        let d = decode_indoor_bike(&b).unwrap();
        assert_eq!(d.speed_kmh, Some(25.0));
        assert_eq!(d.average_speed_kmh, Some(24.0));
        assert_eq!(d.cadence_rpm, Some(90.5));
        assert_eq!(d.average_cadence_rpm, Some(85.0));
        assert_eq!(d.total_distance_m, Some(1000));
        assert_eq!(d.resistance_level, Some(12));
        assert_eq!(d.instantaneous_power_w, Some(210));
        assert_eq!(d.average_power_w, Some(190));
        assert_eq!(d.energy.total_energy_kcal, Some(100));
        assert_eq!(d.heart_rate_bpm, Some(140));
        assert_eq!(d.metabolic_equivalent, Some(7.0));
        assert_eq!(
            (d.elapsed_time_s, d.remaining_time_s),
            (Some(600), Some(1200))
        );
        for n in 0..b.len() {
            assert!(decode_indoor_bike(&b[..n]).unwrap_err().is_truncated());
        }
    }

    #[test]
    fn plx_every_field() {
        let mut b = vec![0x1F];
        b.extend_from_slice(&SFloat::encode(97.0).to_le_bytes());
        b.extend_from_slice(&SFloat::encode(62.0).to_le_bytes());
        b.extend_from_slice(&2024u16.to_le_bytes());
        b.extend_from_slice(&[5, 17, 8, 30, 0]);
        b.extend_from_slice(&0x0020u16.to_le_bytes());
        b.extend_from_slice(&[0x01, 0x00, 0x00]);
        b.extend_from_slice(&0x07FFu16.to_le_bytes()); // PAI: NaN
        let s = decode_plx_spot_check(&b).unwrap();
        assert_eq!(s.spo2_pct, SFloat::Value(97.0));
        assert_eq!(s.pulse_rate_bpm, SFloat::Value(62.0));
        assert_eq!(s.timestamp.as_deref(), Some("2024-05-17T08:30:00"));
        assert_eq!(s.measurement_status, Some(0x20));
        assert_eq!(s.device_and_sensor_status, Some(1));
        assert_eq!(
            s.pulse_amplitude_index_pct,
            Some(SFloat::Special(SFloatSpecial::NaN))
        );
        assert!(s.device_clock_not_set);
        // month 13 is invalid, at the timestamp's offset
        let mut bad = b.clone();
        bad[7] = 13;
        let e = decode_plx_spot_check(&bad).unwrap_err();
        assert!(matches!(e, DecodeError::Invalid { offset: 5, .. }), "{e}");

        let mut c = vec![0x1F];
        for v in [98.0, 70.0, 97.0, 71.0, 96.0, 72.0] {
            c.extend_from_slice(&SFloat::encode(v).to_le_bytes());
        }
        c.extend_from_slice(&1u16.to_le_bytes());
        c.extend_from_slice(&[2, 0, 0]);
        c.extend_from_slice(&SFloat::encode(5.5).to_le_bytes());
        let m = decode_plx_continuous(&c).unwrap();
        assert_eq!(m.spo2_pct.value(), Some(98.0));
        assert_eq!(m.pulse_rate_slow_bpm.and_then(SFloat::value), Some(72.0));
        assert_eq!(
            m.pulse_amplitude_index_pct.and_then(SFloat::value),
            Some(5.5)
        );
        for n in 0..c.len() {
            assert!(decode_plx_continuous(&c[..n]).unwrap_err().is_truncated());
        }
    }
}
