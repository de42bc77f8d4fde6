//! ANT+ data pages (8-byte broadcast payloads) for heart rate, bike speed and cadence and bike
//! power, and the state needed to derive values across pages. No I/O.

use serde::Serialize;

use fitedge_core::Timestamp;

use crate::derive::{CountWidth, Derived, RateConfig, RevolutionRate, WheelCrank};
use crate::error::DecodeError;
use crate::gatt::RevolutionData;

/// The ANT+ device profiles the drivers understand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AntProfile {
    /// Heart rate monitor, device type 120.
    Hrm,
    /// Combined bike speed and cadence, device type 121.
    Bsc,
    /// Bike speed only, device type 123.
    Speed,
    /// Bike cadence only, device type 122.
    Cadence,
    /// Bike power, device type 11.
    Power,
}

impl AntProfile {
    pub fn device_type(self) -> u8 {
        match self {
            AntProfile::Hrm => 120,
            AntProfile::Bsc => 121,
            AntProfile::Speed => 123,
            AntProfile::Cadence => 122,
            AntProfile::Power => 11,
        }
    }

    /// Channel period in 1/32768 s, as the profiles specify.
    pub fn channel_period(self) -> u16 {
        match self {
            AntProfile::Hrm => 8070,
            AntProfile::Bsc => 8086,
            AntProfile::Speed => 8118,
            AntProfile::Cadence => 8102,
            AntProfile::Power => 8182,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hrm" => AntProfile::Hrm,
            "bsc" => AntProfile::Bsc,
            "speed" => AntProfile::Speed,
            "cadence" => AntProfile::Cadence,
            "power" => AntProfile::Power,
            _ => return None,
        })
    }
}

fn page8(bytes: &[u8]) -> Result<&[u8; 8], DecodeError> {
    match bytes.len() {
        n if n < 8 => Err(DecodeError::Truncated {
            offset: n,
            expected: "an 8-byte ANT+ data page",
            needed: 8 - n,
        }),
        8 => Ok(bytes.try_into().unwrap_or(&[0; 8])),
        n => Err(DecodeError::invalid(
            8,
            "an 8-byte ANT+ data page",
            format!("{n} bytes"),
        )),
    }
}

fn u16le(b: &[u8; 8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

// --- Heart rate --------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "page_kind", rename_all = "snake_case")]
pub enum HrmDetail {
    /// Page 0 (or a legacy strap, whose byte 0 means nothing).
    Default,
    CumulativeOperatingTime {
        operating_time_s: u32,
    },
    ManufacturerInfo {
        manufacturer_id: u8,
        serial_number_high: u16,
    },
    ProductInfo {
        hardware_version: u8,
        software_version: u8,
        model_number: u8,
    },
    PreviousHeartBeat {
        manufacturer_specific: u8,
        previous_beat_event_time_s: f64,
        #[serde(skip)]
        previous_beat_ticks: u16,
    },
    SwimInterval {
        interval_avg_hr_bpm: u8,
        interval_max_hr_bpm: u8,
        session_avg_hr_bpm: u8,
    },
    Capabilities {
        features_supported: u8,
        features_enabled: u8,
    },
    BatteryStatus {
        battery_level_pct: Option<u8>,
        battery_voltage_v: Option<f64>,
        battery_status: u8,
    },
    Other {
        page: u8,
    },
}

/// One heart-rate page. Bytes 4-7 mean the same on every page.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HrmPage {
    pub page: u8,
    pub page_toggle: bool,
    pub beat_event_time_s: f64,
    #[serde(skip)]
    pub beat_event_ticks: u16,
    pub beat_count: u8,
    pub heart_rate_bpm: u8,
    #[serde(flatten)]
    pub detail: HrmDetail,
}

pub fn decode_hrm(bytes: &[u8]) -> Result<HrmPage, DecodeError> {
    let b = page8(bytes)?;
    let page = b[0] & 0x7F;
    let detail = match page {
        0 => HrmDetail::Default,
        1 => HrmDetail::CumulativeOperatingTime {
            operating_time_s: u32::from_le_bytes([b[1], b[2], b[3], 0]) * 2,
        },
        2 => HrmDetail::ManufacturerInfo {
            manufacturer_id: b[1],
            serial_number_high: u16::from_le_bytes([b[2], b[3]]),
        },
        3 => HrmDetail::ProductInfo {
            hardware_version: b[1],
            software_version: b[2],
            model_number: b[3],
        },
        4 => HrmDetail::PreviousHeartBeat {
            manufacturer_specific: b[1],
            previous_beat_event_time_s: f64::from(u16::from_le_bytes([b[2], b[3]])) / 1024.0,
            previous_beat_ticks: u16::from_le_bytes([b[2], b[3]]),
        },
        5 => HrmDetail::SwimInterval {
            interval_avg_hr_bpm: b[1],
            interval_max_hr_bpm: b[2],
            session_avg_hr_bpm: b[3],
        },
        6 => HrmDetail::Capabilities {
            features_supported: b[2],
            features_enabled: b[3],
        },
        7 => battery(b),
        p => HrmDetail::Other { page: p },
    };
    Ok(HrmPage {
        page,
        page_toggle: b[0] & 0x80 != 0,
        beat_event_time_s: f64::from(u16le(b, 4)) / 1024.0,
        beat_event_ticks: u16le(b, 4),
        beat_count: b[6],
        heart_rate_bpm: b[7],
        detail,
    })
}

fn battery(b: &[u8; 8]) -> HrmDetail {
    let coarse = b[3] & 0x0F;
    HrmDetail::BatteryStatus {
        battery_level_pct: (b[1] != 0xFF).then_some(b[1]),
        battery_voltage_v: (coarse != 0x0F).then(|| f64::from(coarse) + f64::from(b[2]) / 256.0),
        battery_status: (b[3] >> 4) & 0x07,
    }
}

/// Heart-rate state across pages: the page-toggle check (legacy straps never toggle bit 7,
/// and only their bytes 4-7 mean anything), and RR intervals from consecutive beats or from
/// page 4's previous-beat time.
#[derive(Clone, Debug, Default)]
pub struct HrmState {
    seen: u32,
    first_toggle: Option<bool>,
    toggles: bool,
    last: Option<(u8, u16)>,
}

impl HrmState {
    /// Pages to watch for a toggle before calling a strap legacy (it toggles every 4 pages).
    const LEGACY_AFTER: u32 = 5;

    /// Whether the strap is known to be legacy (no page toggle).
    pub fn is_legacy(&self) -> bool {
        !self.toggles && self.seen >= Self::LEGACY_AFTER
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Heart rate and, when a new beat arrived, its RR interval.
    pub fn update(&mut self, p: &HrmPage) -> Derived {
        self.seen = self.seen.saturating_add(1);
        match self.first_toggle {
            None => self.first_toggle = Some(p.page_toggle),
            Some(f) if f != p.page_toggle => self.toggles = true,
            _ => {}
        }
        let mut d = Derived {
            heart_rate_bpm: (p.heart_rate_bpm != 0).then_some(f64::from(p.heart_rate_bpm)),
            ..Default::default()
        };
        let prev = self.last.replace((p.beat_count, p.beat_event_ticks));
        let page4 = match (&p.detail, self.toggles) {
            (
                HrmDetail::PreviousHeartBeat {
                    previous_beat_ticks,
                    ..
                },
                true,
            ) => Some(*previous_beat_ticks),
            _ => None,
        };
        if let Some((count, ticks)) = prev {
            let beats = p.beat_count.wrapping_sub(count);
            let rr_ticks = match (beats, page4) {
                (0, _) => None,
                (_, Some(prev_ticks)) => Some(p.beat_event_ticks.wrapping_sub(prev_ticks)),
                (1, None) => Some(p.beat_event_ticks.wrapping_sub(ticks)),
                _ => None,
            };
            d.rr_interval_ms = rr_ticks
                .filter(|t| *t > 0)
                .map(|t| f64::from(t) * 1000.0 / 1024.0);
        }
        d
    }
}

// --- Bike speed and cadence --------------------------------------------------------------------

/// Combined speed and cadence page (device type 121: no page number).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BscPage {
    pub crank_event_time_s: f64,
    pub crank_revolutions: u16,
    pub wheel_event_time_s: f64,
    pub wheel_revolutions: u16,
    #[serde(skip)]
    pub crank: RevolutionData,
    #[serde(skip)]
    pub wheel: RevolutionData,
}

pub fn decode_bsc(bytes: &[u8]) -> Result<BscPage, DecodeError> {
    let b = page8(bytes)?;
    let crank = RevolutionData {
        event_time: u16le(b, 0),
        revolutions: u32::from(u16le(b, 2)),
    };
    let wheel = RevolutionData {
        event_time: u16le(b, 4),
        revolutions: u32::from(u16le(b, 6)),
    };
    Ok(BscPage {
        crank_event_time_s: f64::from(crank.event_time) / 1024.0,
        crank_revolutions: crank.revolutions as u16,
        wheel_event_time_s: f64::from(wheel.event_time) / 1024.0,
        wheel_revolutions: wheel.revolutions as u16,
        crank,
        wheel,
    })
}

/// A speed-only or cadence-only page: bytes 4-7 are the event time and the revolution count.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RevPage {
    pub page: u8,
    pub page_toggle: bool,
    pub event_time_s: f64,
    pub revolutions: u16,
    /// Page 1: cumulative operating time; page 4: battery; page 5 (speed): stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operating_time_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_voltage_v: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<bool>,
    #[serde(skip)]
    pub rev: RevolutionData,
}

pub fn decode_rev_page(bytes: &[u8]) -> Result<RevPage, DecodeError> {
    let b = page8(bytes)?;
    let page = b[0] & 0x7F;
    let rev = RevolutionData {
        event_time: u16le(b, 4),
        revolutions: u32::from(u16le(b, 6)),
    };
    Ok(RevPage {
        page,
        page_toggle: b[0] & 0x80 != 0,
        event_time_s: f64::from(rev.event_time) / 1024.0,
        revolutions: rev.revolutions as u16,
        operating_time_s: (page == 1).then(|| u32::from_le_bytes([b[1], b[2], b[3], 0]) * 2),
        battery_voltage_v: (page == 4 && b[3] & 0x0F != 0x0F)
            .then(|| f64::from(b[3] & 0x0F) + f64::from(b[2]) / 256.0),
        stopped: (page == 5).then_some(b[1] & 0x01 != 0),
        rev,
    })
}

// --- Bike power --------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "page_kind", rename_all = "snake_case")]
pub enum PowerPage {
    /// Page 0x10, standard power only.
    StandardPower {
        event_count: u8,
        /// Percent of the total from one pedal; `None` when unused (0xFF).
        pedal_power_pct: Option<u8>,
        /// The percentage is the right pedal's (else unknown which).
        pedal_power_right: bool,
        /// `None` when the meter has no cadence (0xFF).
        instantaneous_cadence_rpm: Option<u8>,
        accumulated_power_w: u16,
        instantaneous_power_w: u16,
    },
    /// Common page 0x50.
    ManufacturerInfo {
        hardware_revision: u8,
        manufacturer_id: u16,
        model_number: u16,
    },
    /// Common page 0x51.
    ProductInfo {
        software_revision: u8,
        serial_number: u32,
    },
    /// Common page 0x52.
    BatteryStatus {
        battery_voltage_v: Option<f64>,
        battery_status: u8,
    },
    Other {
        page: u8,
    },
}

pub fn decode_power(bytes: &[u8]) -> Result<PowerPage, DecodeError> {
    let b = page8(bytes)?;
    Ok(match b[0] {
        0x10 => PowerPage::StandardPower {
            event_count: b[1],
            pedal_power_pct: (b[2] != 0xFF).then_some(b[2] & 0x7F),
            pedal_power_right: b[2] != 0xFF && b[2] & 0x80 != 0,
            instantaneous_cadence_rpm: (b[3] != 0xFF).then_some(b[3]),
            accumulated_power_w: u16le(b, 4),
            instantaneous_power_w: u16le(b, 6),
        },
        0x50 => PowerPage::ManufacturerInfo {
            hardware_revision: b[3],
            manufacturer_id: u16le(b, 4),
            model_number: u16le(b, 6),
        },
        0x51 => PowerPage::ProductInfo {
            software_revision: b[3],
            serial_number: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        },
        0x52 => PowerPage::BatteryStatus {
            battery_voltage_v: (b[7] & 0x0F != 0x0F)
                .then(|| f64::from(b[7] & 0x0F) + f64::from(b[6]) / 256.0),
            battery_status: (b[7] >> 4) & 0x07,
        },
        p => PowerPage::Other { page: p },
    })
}

/// Average power over the events since the last page: the accumulated power's delta divided by
/// the event count's delta (both wrap).
#[derive(Clone, Debug, Default)]
pub struct PowerState {
    last: Option<(u8, u16)>,
}

impl PowerState {
    pub fn reset(&mut self) {
        self.last = None;
    }

    pub fn update(&mut self, p: &PowerPage) -> Derived {
        let PowerPage::StandardPower {
            event_count,
            accumulated_power_w,
            instantaneous_cadence_rpm,
            instantaneous_power_w,
            ..
        } = *p
        else {
            return Derived::default();
        };
        let mut d = Derived {
            cadence_rpm: instantaneous_cadence_rpm.map(f64::from),
            ..Default::default()
        };
        match self.last.replace((event_count, accumulated_power_w)) {
            Some((c, acc)) => {
                let events = event_count.wrapping_sub(c);
                if events > 0 {
                    d.power_w =
                        Some(f64::from(accumulated_power_w.wrapping_sub(acc)) / f64::from(events));
                }
            }
            None => d.power_w = Some(f64::from(instantaneous_power_w)),
        }
        d
    }
}

/// Everything needed to decode one ANT+ channel's pages into values.
#[derive(Clone, Debug)]
pub enum AntState {
    Hrm(HrmState),
    Bsc(WheelCrank),
    Speed(RevolutionRate, f64),
    Cadence(RevolutionRate),
    Power(PowerState),
}

/// A decoded page of any profile.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "profile", rename_all = "snake_case")]
pub enum AntPage {
    Hrm(HrmPage),
    Bsc(BscPage),
    Speed(RevPage),
    Cadence(RevPage),
    Power(PowerPage),
}

pub fn decode(profile: AntProfile, bytes: &[u8]) -> Result<AntPage, DecodeError> {
    Ok(match profile {
        AntProfile::Hrm => AntPage::Hrm(decode_hrm(bytes)?),
        AntProfile::Bsc => AntPage::Bsc(decode_bsc(bytes)?),
        AntProfile::Speed => AntPage::Speed(decode_rev_page(bytes)?),
        AntProfile::Cadence => AntPage::Cadence(decode_rev_page(bytes)?),
        AntProfile::Power => AntPage::Power(decode_power(bytes)?),
    })
}

impl AntState {
    pub fn new(profile: AntProfile, circumference_m: f64) -> Self {
        let rate = || RevolutionRate::new(RateConfig::new(1024.0, CountWidth::Wrap16));
        match profile {
            AntProfile::Hrm => AntState::Hrm(HrmState::default()),
            AntProfile::Bsc => AntState::Bsc(WheelCrank::ant(circumference_m)),
            AntProfile::Speed => AntState::Speed(rate(), circumference_m),
            AntProfile::Cadence => AntState::Cadence(rate()),
            AntProfile::Power => AntState::Power(PowerState::default()),
        }
    }

    pub fn reset(&mut self) {
        match self {
            AntState::Hrm(s) => s.reset(),
            AntState::Bsc(s) => s.reset(),
            AntState::Speed(s, _) | AntState::Cadence(s) => s.reset(),
            AntState::Power(s) => s.reset(),
        }
    }

    pub fn update(&mut self, page: &AntPage, at: Timestamp) -> Derived {
        match (self, page) {
            (AntState::Hrm(s), AntPage::Hrm(p)) => s.update(p),
            (AntState::Bsc(s), AntPage::Bsc(p)) => s.update(Some(p.wheel), Some(p.crank), at),
            (AntState::Speed(s, circ), AntPage::Speed(p)) => Derived {
                speed_mps: s
                    .update(p.rev.revolutions, p.rev.event_time, at)
                    .rps()
                    .map(|r| r * *circ),
                ..Default::default()
            },
            (AntState::Cadence(s), AntPage::Cadence(p)) => Derived {
                cadence_rpm: s
                    .update(p.rev.revolutions, p.rev.event_time, at)
                    .rps()
                    .map(|r| r * 60.0),
                ..Default::default()
            },
            (AntState::Power(s), AntPage::Power(p)) => s.update(p),
            _ => Derived::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_must_be_eight_bytes() {
        let e = decode_hrm(&[0; 5]).unwrap_err();
        assert!(matches!(
            e,
            DecodeError::Truncated {
                offset: 5,
                needed: 3,
                ..
            }
        ));
        let e = decode_power(&[0; 9]).unwrap_err();
        assert!(matches!(e, DecodeError::Invalid { offset: 8, .. }));
    }

    #[test]
    fn legacy_strap_is_detected_and_still_gives_rr() {
        let mut s = HrmState::default();
        // Byte 0 holds junk that never toggles bit 7 (a legacy strap).
        for i in 0..6u8 {
            let t = 1024u16 * u16::from(i);
            let p = decode_hrm(&[0x04, 0, 0, 0, t as u8, (t >> 8) as u8, i, 60]).unwrap();
            let d = s.update(&p);
            assert_eq!(d.heart_rate_bpm, Some(60.0));
            if i > 0 {
                // page number 4 is ignored on a legacy strap: RR from consecutive beats
                assert_eq!(d.rr_interval_ms, Some(1000.0));
            }
        }
        assert!(s.is_legacy());
    }

    #[test]
    fn toggling_strap_is_not_legacy() {
        let mut s = HrmState::default();
        for i in 0..8u8 {
            let toggle = if (i / 4) % 2 == 1 { 0x80 } else { 0 };
            s.update(&decode_hrm(&[toggle, 0, 0, 0, 0, 0, i, 70]).unwrap());
        }
        assert!(!s.is_legacy());
    }

    #[test]
    fn power_average_wraps() {
        let mut s = PowerState::default();
        let page = |ev: u8, acc: u16| {
            decode_power(&[0x10, ev, 0xFF, 90, acc as u8, (acc >> 8) as u8, 200, 0]).unwrap()
        };
        s.update(&page(254, 65_400));
        // two events, accumulated power wrapped: (65400 -> 264) = 400 W over 2 events
        let d = s.update(&page(0, 264));
        assert_eq!(d.power_w, Some(200.0));
        assert_eq!(d.cadence_rpm, Some(90.0));
    }
}
