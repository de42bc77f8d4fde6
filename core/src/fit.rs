//! FIT import (through the `fitparser` crate).
//!
//! A FIT activity is replayed through the same [`Workout`] aggregate a live recording uses:
//! the session's start starts it, the device's timer events pause and resume it, its laps mark
//! laps, and every record becomes samples. So an imported workout is judged and computed by
//! exactly the live rules. The device's own session totals are kept beside the engine's figures
//! ([`DeviceTotals`]), never in their place.
//!
//! Damaged files: messages are decoded one at a time, and decoding stops at the first damaged
//! byte (where the framing is lost). What was decoded before it is kept when it holds an
//! activity, and the loss is reported ([`FitImport::warnings`]); a file with nothing usable is
//! refused. A message that is framed correctly but whose fields cannot be decoded is skipped
//! and counted, and decoding goes on with the next one.
//!
//! Nothing is dropped silently: samples outside every session, and samples past a workout's
//! 24-hour limit, are counted in a warning too.

use std::collections::HashMap;

use fitparser::de::{FitObject, FitStreamProcessor};
use fitparser::profile::MesgNum;
use fitparser::{FitDataRecord, Value};
use serde::{Deserialize, Serialize};

use crate::event::DomainEvent;
use crate::profile::{Profile, Sex};
use crate::sample::{AltitudeSource, Reading, Sample};
use crate::sport::Sport;
use crate::time::Timestamp;
use crate::workout::{Workout, WorkoutConfig, WorkoutError, WorkoutId, WorkoutSummary};

/// The device's own session figures, as the file states them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceTotals {
    pub sport: Option<String>,
    pub sub_sport: Option<String>,
    pub start_time: Option<String>,
    pub elapsed_s: Option<f64>,
    pub timer_s: Option<f64>,
    pub distance_m: Option<f64>,
    pub ascent_m: Option<f64>,
    pub descent_m: Option<f64>,
    pub calories_kcal: Option<f64>,
    pub avg_hr: Option<f64>,
    pub max_hr: Option<f64>,
    pub avg_power_w: Option<f64>,
    pub max_power_w: Option<f64>,
    pub normalized_power_w: Option<f64>,
    pub tss: Option<f64>,
    pub threshold_power_w: Option<f64>,
}

/// One workout made from one session of a file.
#[derive(Clone, Debug)]
pub struct ImportedSession {
    pub index: usize,
    /// The engine's figures for the session.
    pub summary: WorkoutSummary,
    /// Why the session is not recorded as a workout, if it is not (RULES.md: a workout under
    /// one minute is not recorded). Its figures are still computed and shown.
    pub not_recorded: Option<WorkoutError>,
    pub device: DeviceTotals,
    pub samples: Vec<Sample>,
    pub events: Vec<DomainEvent>,
    /// The profile the engine used (overrides, then the file's, then defaults).
    pub profile: Profile,
}

#[derive(Clone, Debug)]
pub struct FitImport {
    pub sessions: Vec<ImportedSession>,
    /// Losses and oddities a person should know about (damaged bytes, missing sessions).
    pub warnings: Vec<String>,
    /// The file's own athlete profile, where it has one.
    pub file_profile: Profile,
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("not a FIT file: {0}")]
    NotFit(String),
    #[error("damaged FIT file with nothing recoverable: {0}")]
    Damaged(String),
    #[error("the FIT file holds no activity records (file type: {0})")]
    NoActivity(String),
}

// --- decoding ---------------------------------------------------------------------------------

struct Decoded {
    messages: Vec<FitDataRecord>,
    /// Where and why decoding stopped before the end of the file.
    damage: Option<String>,
    /// How many messages were skipped because their fields could not be decoded, and the first
    /// error.
    skipped: Option<String>,
}

fn decode(bytes: &[u8]) -> Result<Decoded, FitError> {
    if bytes.len() < 12 || bytes.get(8..12) != Some(b".FIT") {
        return Err(FitError::NotFit(
            "missing the \".FIT\" signature in the header".into(),
        ));
    }
    let mut p = FitStreamProcessor::new();
    // Keep the raw compressed speed/distance field: fitparser 0.11 accumulates its distance
    // component wrongly (it sums the rolling counter's values instead of their deltas), so we
    // expand it ourselves in `record_readings`.
    p.add_option(fitparser::de::DecodeOption::KeepCompositeFields);
    let mut messages = Vec::new();
    let mut buf = bytes;
    let mut damage = None;
    // Messages whose bytes were read but whose fields could not be decoded (e.g. an enum field
    // declared with a string type): the framing is intact, so the next message is read.
    let mut skipped = 0usize;
    let mut first_skip: Option<String> = None;
    // Where the current file's messages end (absolute offset), from its header. fitparser
    // reads a header at the start, after each CRC (chained files), and whenever a message ran
    // past that end.
    let mut data_end: Option<usize> = None;
    while !buf.is_empty() {
        let offset = bytes.len() - buf.len();
        let header_next = data_end.is_none_or(|end| offset > end);
        if header_next && buf.len() < 12 {
            // fitparser 0.11 computes the bytes it still needs for a short header as
            // `first byte - bytes left`, which overflows (a panic in debug builds) when the
            // first byte is the smaller: found by `fit_robustness` with a flipped byte.
            damage = Some(format!(
                "{} bytes after byte {offset} are too few for a FIT header",
                buf.len()
            ));
            break;
        }
        // fitparser is third-party code fed arbitrary bytes: a panic inside it (like the one
        // above, found by fuzzing) ends the decoding as damage at this offset instead of
        // unwinding through the import. The processor is not used again after one.
        let next =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.deserialize_next(buf)));
        let Ok(next) = next else {
            damage = Some(format!(
                "the FIT decoder failed at byte {offset} of {}",
                bytes.len()
            ));
            break;
        };
        match next {
            Ok((rest, obj)) => {
                match obj {
                    FitObject::Crc(..) => {
                        p.reset();
                        data_end = None;
                    }
                    FitObject::DataMessage(m) => {
                        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            p.decode_message(m)
                        })) {
                            Ok(Ok(r)) => messages.push(r),
                            Err(_) => {
                                damage = Some(format!("the FIT decoder failed at byte {offset}"));
                                break;
                            }
                            Ok(Err(e)) => {
                                skipped += 1;
                                first_skip.get_or_insert_with(|| {
                                    format!("the first at byte {offset}: {e}")
                                });
                            }
                        }
                    }
                    FitObject::Header(h) => {
                        data_end = Some(
                            offset
                                .saturating_add(usize::from(h.header_size()))
                                .saturating_add(h.data_size() as usize),
                        );
                    }
                    FitObject::DefinitionMessage(_) => {}
                }
                buf = rest;
            }
            Err(e) => {
                damage = Some(format!("damaged at byte {offset} of {}: {e}", bytes.len()));
                break;
            }
        }
    }
    let skipped = first_skip.map(|first| {
        format!("{skipped} message(s) could not be decoded and were skipped ({first})")
    });
    Ok(Decoded {
        messages,
        damage,
        skipped,
    })
}

// --- field access -----------------------------------------------------------------------------

fn num(v: &Value) -> Option<f64> {
    let x = match *v {
        Value::Byte(x) | Value::Enum(x) | Value::UInt8(x) | Value::UInt8z(x) => f64::from(x),
        Value::SInt8(x) => f64::from(x),
        Value::SInt16(x) => f64::from(x),
        Value::UInt16(x) | Value::UInt16z(x) => f64::from(x),
        Value::SInt32(x) => f64::from(x),
        Value::UInt32(x) | Value::UInt32z(x) => f64::from(x),
        Value::Float32(x) => f64::from(x),
        Value::Float64(x) => x,
        Value::SInt64(x) => x as f64,
        Value::UInt64(x) | Value::UInt64z(x) => x as f64,
        _ => return None,
    };
    x.is_finite().then_some(x)
}

struct Fields<'a>(HashMap<&'a str, &'a Value>);

impl<'a> Fields<'a> {
    fn of(r: &'a FitDataRecord) -> Self {
        Self(r.fields().iter().map(|f| (f.name(), f.value())).collect())
    }
    fn num(&self, name: &str) -> Option<f64> {
        self.0.get(name).and_then(|v| num(v))
    }
    fn text(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Timestamp(_) | Value::Array(_) | Value::Invalid => None,
            v => Some(v.to_string()),
        }
    }
    fn time(&self, name: &str) -> Option<Timestamp> {
        match self.0.get(name)? {
            Value::Timestamp(t) => Some(Timestamp(t.timestamp_millis())),
            _ => None,
        }
    }
    /// Enhanced fields (32-bit) win over their 16-bit originals.
    fn num_enhanced(&self, name: &str) -> Option<f64> {
        self.num(&format!("enhanced_{name}"))
            .or_else(|| self.num(name))
    }
    fn array(&self, name: &str) -> Vec<f64> {
        match self.0.get(name) {
            Some(Value::Array(items)) => items.iter().filter_map(num).collect(),
            Some(v) => num(v).into_iter().collect(),
            None => vec![],
        }
    }
}

const SEMICIRCLE_TO_DEG: f64 = 180.0 / 2_147_483_648.0;

/// FIT sport (and sub-sport) to ours; `None` where the device did not know (generic), so the
/// engine detects it.
pub fn map_sport(sport: &str, sub_sport: Option<&str>) -> Option<Sport> {
    match (sport, sub_sport.unwrap_or("")) {
        ("running", _) => Some(Sport::Running),
        ("cycling", _) | ("e_biking", _) => Some(Sport::Cycling),
        (_, "indoor_cycling") | (_, "spin") => Some(Sport::Cycling),
        ("walking", _) => Some(Sport::Walking),
        ("hiking", _) | ("mountaineering", _) => Some(Sport::Hiking),
        ("swimming", _) => Some(Sport::Swimming),
        ("rowing", _) | (_, "indoor_rowing") => Some(Sport::Rowing),
        ("transition", _) => Some(Sport::Transition),
        ("generic", _) | ("all", _) | ("", _) => None,
        _ => Some(Sport::Other),
    }
}

fn file_profile(messages: &[FitDataRecord]) -> Profile {
    let mut p = Profile::default();
    let positive = |v: Option<f64>| v.filter(|x| *x > 0.0);
    for m in messages {
        match m.kind() {
            MesgNum::UserProfile => {
                let f = Fields::of(m);
                p.weight_kg = p.weight_kg.or(positive(f.num("weight")));
                p.age_years = p
                    .age_years
                    .or(positive(f.num("age")).map(|a| a.round() as u32));
                p.sex = p
                    .sex
                    .or(f.text("gender").and_then(|g| g.parse::<Sex>().ok()));
                p.hr_rest_bpm = p
                    .hr_rest_bpm
                    .or(positive(f.num("resting_heart_rate")).map(|h| h.round() as u16));
                p.hr_max_bpm = p
                    .hr_max_bpm
                    .or(positive(f.num("default_max_heart_rate")).map(|h| h.round() as u16));
            }
            MesgNum::ZonesTarget => {
                let f = Fields::of(m);
                // The zones' maximum is the one the athlete set; it wins over the default.
                if let Some(h) = positive(f.num("max_heart_rate")) {
                    p.hr_max_bpm = Some(h.round() as u16);
                }
                p.ftp_w = p
                    .ftp_w
                    .or(positive(f.num("functional_threshold_power")).map(|w| w.round() as u16));
            }
            _ => {}
        }
    }
    p
}

fn device_name(messages: &[FitDataRecord]) -> Option<String> {
    let m = messages.iter().find(|m| m.kind() == MesgNum::FileId)?;
    let f = Fields::of(m);
    let maker = f.text("manufacturer")?;
    let product = f.text("garmin_product").or_else(|| f.text("product"));
    Some(match product {
        Some(p) => format!("{maker} {p}"),
        None => maker,
    })
}

struct SessionInfo {
    start: Option<Timestamp>,
    /// When the device closed the session (its `timestamp`). Only an upper bound: a device may
    /// write it when the file is saved, long after the end.
    closed: Option<Timestamp>,
    /// The session's laps as the file indexes them (`first_lap_index`, `num_laps`), if it does.
    laps: Option<(usize, usize)>,
    sport: Option<Sport>,
    device: DeviceTotals,
}

/// One lap message: when it started and when it was closed.
#[derive(Clone, Copy, Debug)]
struct LapInfo {
    start: Option<Timestamp>,
    end: Option<Timestamp>,
}

fn session_info(m: &FitDataRecord) -> SessionInfo {
    let f = Fields::of(m);
    let sport = f.text("sport");
    let sub = f.text("sub_sport");
    let mapped = sport.as_deref().and_then(|s| map_sport(s, sub.as_deref()));
    let start = f.time("start_time");
    let laps = match (f.num("first_lap_index"), f.num("num_laps")) {
        (Some(first), Some(n)) if first >= 0.0 && n >= 1.0 => Some((first as usize, n as usize)),
        _ => None,
    };
    SessionInfo {
        start,
        closed: f.time("timestamp"),
        laps,
        sport: mapped,
        device: DeviceTotals {
            sport,
            sub_sport: sub,
            start_time: start.map(Timestamp::to_rfc3339),
            elapsed_s: f.num("total_elapsed_time"),
            timer_s: f.num("total_timer_time"),
            distance_m: f.num("total_distance"),
            ascent_m: f.num("total_ascent"),
            descent_m: f.num("total_descent"),
            calories_kcal: f.num("total_calories"),
            avg_hr: f.num("avg_heart_rate"),
            max_hr: f.num("max_heart_rate"),
            avg_power_w: f.num("avg_power"),
            max_power_w: f.num("max_power"),
            normalized_power_w: f.num("normalized_power"),
            tss: f.num("training_stress_score"),
            threshold_power_w: f.num("threshold_power"),
        },
    }
}

/// Heart rate stored beat by beat in "hr" messages (straps that record while out of contact,
/// e.g. swimming). A message with a single full `event_timestamp` anchors the strap's event
/// clock (1/1024 s ticks) to the file's time (`timestamp` + `fractional_timestamp`); the others
/// carry up to eight beats whose event times are packed 12-bit rolling tick counts
/// (`event_timestamp_12`, wrapping every 4 s), unrolled against the previous beat as the FIT
/// SDK's HR-to-record merge does. fitparser 0.11 mis-accumulates the expanded field, so the raw
/// bytes are decoded here.
#[derive(Debug, Default)]
struct HrMessages {
    /// (anchor event ticks, anchor time in ms)
    anchor: Option<(i64, f64)>,
    last_ticks: Option<i64>,
}

fn unpack_12bit(bytes: &[f64]) -> Vec<i64> {
    let b: Vec<u32> = bytes.iter().map(|v| *v as u32 & 0xFF).collect();
    let mut out = Vec::with_capacity(b.len() * 2 / 3);
    let mut bit = 0usize;
    while bit + 12 <= b.len() * 8 {
        let (i, shift) = (bit / 8, bit % 8);
        let lo = b[i] >> shift;
        let hi = b.get(i + 1).copied().unwrap_or(0) << (8 - shift);
        out.push(i64::from((lo | hi) & 0xFFF));
        bit += 12;
    }
    out
}

impl HrMessages {
    const TICKS_PER_S: f64 = 1024.0;

    fn next(&mut self, f: &Fields<'_>) -> Vec<(Timestamp, f64)> {
        let bpms = f.array("filtered_bpm");
        let mut out = vec![];
        let full = f.array("event_timestamp");
        if let (Some(ts), [full]) = (f.time("timestamp"), full.as_slice()) {
            let Some((ticks, t_ms)) = Self::anchor(ts, *full, f.num("fractional_timestamp")) else {
                // An implausible anchor (a crafted or damaged field): the beats that follow
                // cannot be placed in time, so they are not used until the next good anchor.
                self.anchor = None;
                self.last_ticks = None;
                return out;
            };
            self.anchor = Some((ticks, t_ms));
            self.last_ticks = Some(ticks);
            if let Some(bpm) = bpms.first() {
                out.push((Timestamp(t_ms.round() as i64), *bpm));
            }
            return out;
        }
        let (Some((anchor_ticks, anchor_ms)), Some(mut last)) = (self.anchor, self.last_ticks)
        else {
            return out;
        };
        for (bpm, v) in bpms
            .iter()
            .zip(unpack_12bit(&f.array("event_timestamp_12")))
        {
            // `v` is 12 bits and `last` starts within a uint32 (the anchor is checked), so this
            // cannot overflow in any real file; a crafted one ends the run of beats instead.
            let Some(next) = last.checked_add((v - (last & 0xFFF)) & 0xFFF) else {
                break;
            };
            last = next;
            let t = anchor_ms + (last - anchor_ticks) as f64 * 1000.0 / Self::TICKS_PER_S;
            out.push((Timestamp(t.round() as i64), *bpm));
        }
        self.last_ticks = Some(last);
        out
    }

    /// The FIT profile's `event_timestamp` is a uint32 of 1/1024 s; anything outside that range
    /// (or a `fractional_timestamp`, a uint16 of 1/32768 s, outside [0, 2)) comes from a field
    /// declared with another type in a crafted or damaged file and anchors nothing.
    const MAX_EVENT_S: f64 = 4_294_967_295.0 / Self::TICKS_PER_S;

    fn anchor(ts: Timestamp, full_s: f64, fraction_s: Option<f64>) -> Option<(i64, f64)> {
        let fraction = fraction_s.unwrap_or(0.0);
        if !(0.0..=Self::MAX_EVENT_S).contains(&full_s) || !(0.0..2.0).contains(&fraction) {
            return None;
        }
        let ticks = (full_s * Self::TICKS_PER_S).round() as i64;
        Some((ticks, ts.0 as f64 + fraction * 1000.0))
    }
}

/// What happens at one moment of the replay. The order at equal times matters: a resume comes
/// before the samples it lets in, a pause after the samples it closes.
#[derive(Clone, Debug)]
enum Step {
    Resume,
    Sample(Reading),
    Lap,
    Pause,
}

impl Step {
    fn rank(&self) -> u8 {
        match self {
            Step::Resume => 0,
            Step::Sample(_) => 1,
            Step::Lap => 2,
            Step::Pause => 3,
        }
    }
}

/// The FIT "compressed_speed_distance" field: 3 bytes, little-endian; speed in the low 12 bits
/// (1/100 m/s), distance in the high 12 bits (1/16 m) as a rolling counter that wraps at 256 m.
#[derive(Debug, Default)]
struct CompressedDistance {
    last_counter: Option<u32>,
    total_m: f64,
}

impl CompressedDistance {
    fn next(&mut self, raw: &[f64]) -> Option<(f64, f64)> {
        let [b0, b1, b2] = raw else { return None };
        // Each value is one byte; a crafted file may declare the field with a wider type, so
        // only the low byte of each counts (the counter then stays within its 12 bits).
        let byte = |x: f64| x as u32 & 0xFF;
        let v = byte(*b0) | (byte(*b1) << 8) | (byte(*b2) << 16);
        let speed = f64::from(v & 0xFFF) / 100.0;
        let counter = (v >> 12) & 0xFFF;
        if let Some(prev) = self.last_counter {
            self.total_m += f64::from(counter.wrapping_sub(prev) & 0xFFF) / 16.0;
        }
        self.last_counter = Some(counter);
        Some((speed, self.total_m))
    }
}

fn record_readings(f: &Fields<'_>, compressed: &mut CompressedDistance, out: &mut Vec<Reading>) {
    let compressed = compressed.next(&f.array("compressed_speed_distance"));
    if let Some(bpm) = f.num("heart_rate") {
        out.push(Reading::HeartRate { bpm });
    }
    if let (Some(lat), Some(lon)) = (f.num("position_lat"), f.num("position_long")) {
        out.push(Reading::Position {
            lat: lat * SEMICIRCLE_TO_DEG,
            lon: lon * SEMICIRCLE_TO_DEG,
            accuracy_m: None,
        });
    }
    // FIT does not say where altitude came from; devices write their best altitude, which is
    // barometric on every device that has a barometer. GPS-only devices' altitude is noisier,
    // and the barometric hysteresis will simply count a little more of its noise.
    if let Some(m) = f.num_enhanced("altitude") {
        out.push(Reading::Altitude {
            m,
            source: AltitudeSource::Barometric,
        });
    }
    if let Some((mps, m)) = compressed {
        out.push(Reading::Speed { mps });
        out.push(Reading::Distance { m });
    } else {
        if let Some(mps) = f.num_enhanced("speed") {
            out.push(Reading::Speed { mps });
        }
        if let Some(m) = f.num("distance") {
            out.push(Reading::Distance { m });
        }
    }
    if let Some(rpm) = f.num("cadence") {
        let frac = f.num("fractional_cadence").unwrap_or(0.0);
        out.push(Reading::Cadence { rpm: rpm + frac });
    }
    if let Some(w) = f.num("power") {
        out.push(Reading::Power { w });
    }
    if let Some(c) = f.num("temperature") {
        out.push(Reading::Temperature { c });
    }
    if let Some(pct) = f.num("saturated_hemoglobin_percent") {
        out.push(Reading::Spo2 { pct });
    }
}

/// Imports a FIT file. `overrides` win over the file's own profile, which wins over defaults.
/// `key` names the file for stable workout ids (its content hash).
pub fn import(bytes: &[u8], overrides: Profile, key: &str) -> Result<FitImport, FitError> {
    let Decoded {
        messages,
        damage,
        skipped,
    } = decode(bytes)?;
    let mut warnings = Vec::new();
    let file_type = messages
        .iter()
        .find(|m| m.kind() == MesgNum::FileId)
        .and_then(|m| Fields::of(m).text("type"))
        .unwrap_or_else(|| "unknown".into());

    let file_profile = file_profile(&messages);
    let sessions: Vec<SessionInfo> = messages
        .iter()
        .filter(|m| m.kind() == MesgNum::Session)
        .map(session_info)
        .collect();
    let file_sport = messages
        .iter()
        .find(|m| m.kind() == MesgNum::Sport)
        .map(Fields::of)
        .and_then(|f| {
            let s = f.text("sport")?;
            map_sport(&s, f.text("sub_sport").as_deref())
        });

    // The timeline: every record's readings, RR intervals, timer events and lap ends.
    let mut steps: Vec<(Timestamp, Step)> = Vec::new();
    let mut last_t: Option<Timestamp> = None;
    // Records dated more than a workout's longest life after the record before them, with no
    // session starting in between: damaged timestamps (a recovered file's last record read as
    // 2085), which would otherwise stretch the workout to the 24-hour limit.
    let session_starts_in_file: Vec<Timestamp> = sessions.iter().filter_map(|s| s.start).collect();
    let mut far_records = 0usize;
    let mut first_far: Option<Timestamp> = None;
    let mut readings = Vec::with_capacity(8);
    let mut records = 0usize;
    let mut compressed = CompressedDistance::default();
    let mut beats = HrMessages::default();
    let mut laps: Vec<LapInfo> = Vec::new();
    for m in &messages {
        match m.kind() {
            MesgNum::Record => {
                let f = Fields::of(m);
                let Some(t) = f.time("timestamp") else {
                    continue;
                };
                if let Some(prev) = last_t {
                    if t.secs_since(prev) > WorkoutConfig::MAX_ELAPSED_S
                        && !session_starts_in_file.iter().any(|s| *s > prev && *s <= t)
                    {
                        far_records += 1;
                        first_far.get_or_insert(t);
                        continue;
                    }
                }
                records += 1;
                last_t = Some(t);
                readings.clear();
                record_readings(&f, &mut compressed, &mut readings);
                steps.extend(readings.iter().map(|r| (t, Step::Sample(*r))));
            }
            MesgNum::Hrv => {
                // HRV messages carry no timestamp: they belong to the record before them.
                if let Some(t) = last_t {
                    let f = Fields::of(m);
                    for s in f.array("time") {
                        steps.push((t, Step::Sample(Reading::RrInterval { ms: s * 1000.0 })));
                    }
                }
            }
            MesgNum::Hr => {
                for (t, bpm) in beats.next(&Fields::of(m)) {
                    steps.push((t, Step::Sample(Reading::HeartRate { bpm })));
                }
            }
            MesgNum::Event => {
                let f = Fields::of(m);
                if f.text("event").as_deref() != Some("timer") {
                    continue;
                }
                let Some(t) = f.time("timestamp") else {
                    continue;
                };
                match f.text("event_type").as_deref() {
                    Some("start") => steps.push((t, Step::Resume)),
                    Some("stop" | "stop_all" | "stop_disable" | "stop_disable_all") => {
                        steps.push((t, Step::Pause));
                    }
                    _ => {}
                }
            }
            MesgNum::Lap => {
                let f = Fields::of(m);
                let end = f.time("timestamp");
                laps.push(LapInfo {
                    start: f.time("start_time"),
                    end,
                });
                if let Some(t) = end {
                    steps.push((t, Step::Lap));
                }
            }
            _ => {}
        }
    }
    if records == 0 {
        return Err(match damage {
            Some(d) => FitError::Damaged(d),
            None => FitError::NoActivity(file_type),
        });
    }
    if let Some(d) = &damage {
        warnings.push(format!(
            "{d}; recovered {records} records and {} session(s) decoded before the damage",
            sessions.len()
        ));
    }
    if let Some(s) = skipped {
        warnings.push(s);
    }
    if let Some(first) = first_far {
        warnings.push(format!(
            "{far_records} record(s) not used: dated more than 24 hours after the record before \
             them with no session starting in between (the first at {}), a damaged timestamp",
            first.to_rfc3339()
        ));
    }
    steps.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.rank().cmp(&b.1.rank())));

    // Session windows: from each session's start to the next one's.
    let mut infos = sessions;
    if infos.is_empty() {
        warnings
            .push("the file has no session message; one workout was made from its records".into());
        infos.push(SessionInfo {
            start: steps.first().map(|s| s.0),
            closed: None,
            laps: None,
            sport: file_sport,
            device: DeviceTotals::default(),
        });
    }
    let starts = session_starts(&infos, &laps, steps.first().map(|s| s.0));
    // A damaged file whose sessions are written after their records (summary last) lost the
    // sessions after the damage, not their records: samples dated after the last decoded
    // session closed belong to a lost session. They are counted, not absorbed into that session
    // (which would stretch it over every leg that followed).
    let last_session_at = messages.iter().rposition(|m| m.kind() == MesgNum::Session);
    let summary_last =
        last_session_at.is_some_and(|p| messages[..p].iter().any(|m| m.kind() == MesgNum::Record));
    let lost_from = match (&damage, infos.last().and_then(|i| i.closed)) {
        (Some(_), Some(closed)) if summary_last => steps
            .iter()
            .find(|(t, s)| {
                matches!(s, Step::Sample(_)) && t.0 > closed.0 + STOP_NEAR_LAST_SAMPLE_MS
            })
            .map(|(t, _)| *t),
        _ => None,
    };

    // Samples no session uses: before the first session's start, and after a session's end
    // (before the next one's start, or after the last session). Counted, never silently lost.
    let mut outside = Vec::new();
    let before = Span::of(
        steps
            .iter()
            .filter(|(t, s)| *t < starts[0] && matches!(s, Step::Sample(_)))
            .map(|(t, _)| *t),
    );
    if before.n > 0 {
        outside.push(format!("{} before session 0", before.describe()));
    }
    let mut after_limit = Vec::new();

    let mut out = Vec::with_capacity(infos.len());
    for (i, info) in infos.into_iter().enumerate() {
        let from = starts[i];
        // A record at the next session's start is that session's first (FIT devices write it
        // as the new session opens, e.g. with its distance counter reset), so the window is
        // half-open.
        let last = i + 1 == starts.len();
        let next = starts.get(i + 1).copied().or(lost_from.filter(|_| last));
        let window: Vec<&(Timestamp, Step)> = steps
            .iter()
            .filter(|(t, _)| *t >= from && next.is_none_or(|n| *t < n))
            .collect();
        let bound = next.map(|next| SessionBound {
            next,
            closed: info.closed,
        });
        let mut profile = overrides.or(file_profile);
        if overrides.ftp_w.is_none() {
            if let Some(ftp) = info.device.threshold_power_w.filter(|w| *w > 0.0) {
                profile.ftp_w = Some(ftp.round() as u16);
            }
        }
        let id = WorkoutId::derived(key, &i.to_string());
        let (session, unused) = replay(i, id, info, profile, from, bound, &window);
        match session {
            Some(s) => out.push(s),
            None => warnings.push(format!("session {i} could not be replayed and was skipped")),
        }
        if unused.past_end.n > 0 {
            outside.push(format!(
                "{} after session {i} ended",
                unused.past_end.describe()
            ));
        }
        if unused.after_limit.n > 0 {
            after_limit.push(format!("{} in session {i}", unused.after_limit.describe()));
        }
    }
    if let Some(from) = lost_from {
        let lost = Span::of(
            steps
                .iter()
                .filter(|(t, s)| *t >= from && matches!(s, Step::Sample(_)))
                .map(|(t, _)| *t),
        );
        outside.push(format!(
            "{} after the last decoded session ({}) closed, from a session lost in the damage",
            lost.describe(),
            starts.len().saturating_sub(1)
        ));
    }
    if !after_limit.is_empty() {
        warnings.push(format!(
            "the 24-hour limit of a workout was reached; the samples after it were not used: {}",
            after_limit.join("; ")
        ));
    }
    if !outside.is_empty() {
        warnings.push(format!(
            "samples outside every session were not used: {}",
            outside.join("; ")
        ));
    }
    Ok(FitImport {
        sessions: out,
        warnings,
        file_profile,
        device: device_name(&messages),
    })
}

/// Where each session starts: its `start_time`, or the start of its first lap when that is
/// earlier. A session is the summary of its laps (FIT SDK, Activity file: a session message
/// summarises the lap messages `first_lap_index` .. `+ num_laps`, and its `start_time` is that
/// of the first lap), so a session whose stated start is later than its own first lap's start
/// (a fenix2 multisport file states 08:00:01 for a leg whose lap and records begin at 07:14:44)
/// began with the lap. Laps are matched by index when the session gives one, else by time: a
/// lap belongs to the session whose window holds its end. A start is never moved to or before
/// the previous session's, nor before the file's first record or event (a lap start from an
/// unset clock), nor is a lap start later than the stated start ever used.
fn session_starts(
    infos: &[SessionInfo],
    laps: &[LapInfo],
    first_step: Option<Timestamp>,
) -> Vec<Timestamp> {
    let mut stated: Vec<Timestamp> = Vec::with_capacity(infos.len());
    for (i, s) in infos.iter().enumerate() {
        let fallback = if i == 0 {
            first_step
        } else {
            stated.last().copied()
        };
        stated.push(s.start.or(fallback).unwrap_or(Timestamp(0)));
    }
    let mut starts = stated.clone();
    for (i, s) in infos.iter().enumerate() {
        let from = stated[i];
        let next = stated.get(i + 1).copied();
        let own: Vec<&LapInfo> = match s.laps {
            Some((first, n)) => laps.iter().skip(first).take(n).collect(),
            None => laps
                .iter()
                .filter(|l| {
                    l.end
                        .is_some_and(|e| e > from && next.is_none_or(|next| e <= next))
                })
                .collect(),
        };
        let after_floor = |t: Timestamp| match i {
            0 => first_step.is_none_or(|f| t >= f),
            _ => t > starts[i - 1],
        };
        if let Some(lap_start) = own.iter().filter_map(|l| l.start).min() {
            if lap_start < from && after_floor(lap_start) {
                starts[i] = lap_start;
            }
        }
    }
    starts
}

/// A session that another follows: when the next one starts, and when the device closed this
/// one (its `timestamp`).
#[derive(Clone, Copy, Debug)]
struct SessionBound {
    next: Timestamp,
    closed: Option<Timestamp>,
}

/// How far apart the final timer stop and the last sample may be and still be one moment
/// (devices flush a record just before or after the stop).
const STOP_NEAR_LAST_SAMPLE_MS: i64 = 5_000;

/// When the session ended.
///
/// - The timer stopped (its last event in the session is a stop): the device's final timer
///   stop when it closely follows (or precedes) the last sample, else the last sample (a device
///   that wrote its stop only when the file was saved recorded nothing in between).
/// - The timer still ran when the next session began (a multisport transition): the session's
///   own `timestamp`, which in a summary-last file "approximates the end time of the summary
///   message" (FIT SDK, Activity file; Garmin, "Important FIT Activity File Message Change",
///   2023), kept between the last sample and the next session's start (a summary-first file
///   writes the file's creation time there, which the next start bounds).
/// - The last session, with the timer still running: the last sample.
///
/// Lap messages are written when the file is saved and do not count.
fn session_end(
    window: &[&(Timestamp, Step)],
    start: Timestamp,
    bound: Option<SessionBound>,
) -> Timestamp {
    let last_sample = window
        .iter()
        .filter(|(_, s)| matches!(s, Step::Sample(_)))
        .map(|(t, _)| *t)
        .max()
        .unwrap_or(start);
    let last_timer = window
        .iter()
        .rfind(|(_, s)| matches!(s, Step::Pause | Step::Resume))
        .map(|(t, s)| (*t, matches!(s, Step::Pause)));
    let end = match (last_timer, bound) {
        (Some((stop, true)), _) if (stop.0 - last_sample.0).abs() <= STOP_NEAR_LAST_SAMPLE_MS => {
            stop
        }
        (Some((_, true)), _) | (_, None) => last_sample,
        (_, Some(b)) => b
            .closed
            .unwrap_or(b.next)
            .clamp(last_sample.min(b.next), b.next),
    };
    end.max(start)
}

/// How many samples, and over what time, were left unused.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Span {
    pub n: usize,
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
}

impl Span {
    pub(crate) fn add(&mut self, t: Timestamp) {
        self.n += 1;
        self.first = Some(self.first.map_or(t, |f| f.min(t)));
        self.last = Some(self.last.map_or(t, |l| l.max(t)));
    }

    fn of(times: impl Iterator<Item = Timestamp>) -> Self {
        let mut s = Self::default();
        times.for_each(|t| s.add(t));
        s
    }

    /// "N sample(s) (from A to B)".
    pub(crate) fn describe(&self) -> String {
        match (self.first, self.last) {
            (Some(a), Some(b)) => format!(
                "{} sample(s) (from {} to {})",
                self.n,
                a.to_rfc3339(),
                b.to_rfc3339()
            ),
            _ => format!("{} sample(s)", self.n),
        }
    }
}

/// What a replay left unused.
#[derive(Debug, Default)]
struct Unused {
    /// Samples the workout refused because they lie past its 24-hour limit (RULES.md), and
    /// every sample after them.
    after_limit: Span,
    /// Samples in the session's window after its end.
    past_end: Span,
}

fn replay(
    index: usize,
    id: WorkoutId,
    info: SessionInfo,
    profile: Profile,
    start: Timestamp,
    bound: Option<SessionBound>,
    window: &[&(Timestamp, Step)],
) -> (Option<ImportedSession>, Unused) {
    // The timer's first start is the real beginning; the session's start_time is rounded.
    let start = window
        .iter()
        .find(|(_, s)| !matches!(s, Step::Sample(_) | Step::Lap))
        .filter(|(t, s)| matches!(s, Step::Resume) && t.0 - start.0 <= STOP_NEAR_LAST_SAMPLE_MS)
        .map_or(start, |(t, _)| *t);
    let end = session_end(window, start, bound);
    let mut unused = Unused {
        past_end: Span::of(
            window
                .iter()
                .filter(|(t, s)| *t > end && matches!(s, Step::Sample(_)))
                .map(|(t, _)| *t),
        ),
        ..Unused::default()
    };
    let mut w = Workout::new(id, info.sport, profile.resolve(), WorkoutConfig::import());
    let mut samples = Vec::new();
    let started = w.start(start);
    debug_assert!(started.is_ok());
    // Commands here can only fail on a repeat (a start while running, a stop while stopped),
    // which devices write routinely; those are no-ops by design. A sample at or past the
    // 24-hour limit completes the workout at the limit: the replay stops there, and that sample
    // and every later one are counted as unused.
    let mut limit_reached = false;
    for (t, step) in window.iter().filter(|(t, _)| *t <= end) {
        if limit_reached {
            if matches!(step, Step::Sample(_)) {
                unused.after_limit.add(*t);
            }
            continue;
        }
        match step {
            Step::Resume => {
                let _ = w.resume(*t);
            }
            Step::Pause if *t < end => {
                let _ = w.pause(*t);
            }
            Step::Pause => {}
            // A lap closed at the session's start is the previous session's last.
            Step::Lap if *t > start && *t < end => {
                let _ = w.lap(*t);
            }
            Step::Lap => {}
            Step::Sample(r) => {
                // Other errors cannot happen while the workout runs; the sample's verdict
                // (rejected, flagged) is in the workout's validation report.
                if let Err(WorkoutError::TimeLimitReached) = w.record(Sample::new(*t, *r)) {
                    limit_reached = true;
                    unused.after_limit.add(*t);
                }
                samples.append(&mut w.take_samples());
            }
        }
    }
    let Some((summary, not_recorded)) = w.complete_or_preview(end) else {
        return (None, unused);
    };
    samples.append(&mut w.take_samples());
    let session = ImportedSession {
        index,
        summary,
        not_recorded,
        device: info.device,
        samples,
        events: w.take_events(),
        profile,
    };
    (Some(session), unused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_fit() {
        assert!(matches!(
            import(b"hello", Profile::default(), "k"),
            Err(FitError::NotFit(_))
        ));
        assert!(matches!(
            import(&[0u8; 64], Profile::default(), "k"),
            Err(FitError::NotFit(_))
        ));
    }

    #[test]
    fn a_bare_header_has_no_activity() {
        // A valid 12-byte header with an empty data section.
        let mut h = vec![12u8, 0x10, 0x5c, 0x08, 0, 0, 0, 0];
        h.extend_from_slice(b".FIT");
        let e = import(&h, Profile::default(), "k").unwrap_err();
        assert!(
            matches!(e, FitError::NoActivity(_) | FitError::Damaged(_)),
            "{e}"
        );
    }

    /// The FIT CRC-16 (the SDK's nibble table).
    fn fit_crc(data: &[u8]) -> u16 {
        const T: [u16; 16] = [
            0x0000, 0xCC01, 0xD801, 0x1400, 0xF001, 0x3C00, 0x2800, 0xE401, 0xA001, 0x6C00, 0x7800,
            0xB401, 0x5000, 0x9C01, 0x8801, 0x4400,
        ];
        let mut crc = 0u16;
        for &b in data {
            for nibble in [b & 0xF, b >> 4] {
                let t = T[usize::from(crc & 0xF)];
                crc = ((crc >> 4) & 0x0FFF) ^ t ^ T[usize::from(nibble)];
            }
        }
        crc
    }

    #[test]
    fn a_few_bytes_after_the_crc_are_damage_not_a_panic() {
        // An empty file, its CRC, then 5 bytes whose first (3) is below their count: fitparser
        // 0.11 subtracts the two to say how much of a header is missing and overflows.
        let mut f = vec![12u8, 0x10, 0x5c, 0x08, 0, 0, 0, 0];
        f.extend_from_slice(b".FIT");
        let crc = fit_crc(&f);
        f.extend_from_slice(&crc.to_le_bytes());
        f.extend_from_slice(&[3, 0, 0, 0, 0]);
        let e = import(&f, Profile::default(), "k").unwrap_err();
        assert!(
            matches!(e, FitError::NoActivity(_) | FitError::Damaged(_)),
            "{e}"
        );
        let d = decode(&f).unwrap();
        assert!(
            d.damage
                .as_deref()
                .unwrap()
                .contains("too few for a FIT header"),
            "{:?}",
            d.damage
        );
    }

    /// A minimal FIT writer: definition and data messages between a 14-byte header and the
    /// file's CRC, enough to build activities the importer must handle.
    struct FitWriter(Vec<u8>);

    /// FIT base types.
    const ENUM: u8 = 0x00;
    const UINT8: u8 = 0x02;
    const STRING: u8 = 0x07;
    const UINT32: u8 = 0x86;

    /// Seconds between the Unix epoch and the FIT epoch (1989-12-31T00:00:00Z).
    const FIT_EPOCH_S: i64 = 631_065_600;

    impl FitWriter {
        fn new() -> Self {
            Self(vec![])
        }
        /// Defines local message `local` as global message `global` with `(field number,
        /// size, base type)` fields, little-endian.
        fn define(&mut self, local: u8, global: u16, fields: &[(u8, u8, u8)]) {
            self.0.extend_from_slice(&[0x40 | local, 0, 0]);
            self.0.extend_from_slice(&global.to_le_bytes());
            self.0.push(fields.len() as u8);
            for (num, size, base) in fields {
                self.0.extend_from_slice(&[*num, *size, *base]);
            }
        }
        fn data(&mut self, local: u8, bytes: &[u8]) {
            self.0.push(local);
            self.0.extend_from_slice(bytes);
        }
        fn finish(self) -> Vec<u8> {
            let mut f = vec![14u8, 0x20];
            f.extend_from_slice(&2132u16.to_le_bytes());
            f.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
            f.extend_from_slice(b".FIT");
            let header_crc = fit_crc(&f);
            f.extend_from_slice(&header_crc.to_le_bytes());
            f.extend_from_slice(&self.0);
            let crc = fit_crc(&f);
            f.extend_from_slice(&crc.to_le_bytes());
            f
        }
    }

    /// A running activity from FIT time `t0` (seconds): a file id, a timer start, one heart
    /// rate record (local message 1: timestamp, heart_rate) every `step_s` seconds for
    /// `records` records, with `between(i, writer)` called after the i-th record, and one
    /// session closed at the last record.
    fn activity(
        t0: u32,
        step_s: u32,
        records: u32,
        mut between: impl FnMut(u32, &mut FitWriter),
    ) -> Vec<u8> {
        let mut w = FitWriter::new();
        w.define(0, 0, &[(0, 1, ENUM)]);
        w.data(0, &[4]); // file type: activity
        w.define(2, 21, &[(253, 4, UINT32), (0, 1, ENUM), (1, 1, ENUM)]);
        let mut ev = t0.to_le_bytes().to_vec();
        ev.extend_from_slice(&[0, 0]); // timer, start
        w.data(2, &ev);
        w.define(1, 20, &[(253, 4, UINT32), (3, 1, UINT8)]);
        for i in 0..records {
            let mut r = (t0 + i * step_s).to_le_bytes().to_vec();
            r.push(120);
            w.data(1, &r);
            between(i, &mut w);
        }
        let end = t0 + (records - 1) * step_s;
        w.define(3, 18, &[(253, 4, UINT32), (2, 4, UINT32), (5, 1, ENUM)]);
        let mut sess = end.to_le_bytes().to_vec();
        sess.extend_from_slice(&t0.to_le_bytes());
        sess.push(1); // running
        w.data(3, &sess);
        w.finish()
    }

    const T0: u32 = 1_000_000_000;

    #[test]
    fn the_writer_makes_an_activity_the_importer_reads() {
        let imp = import(&activity(T0, 1, 120, |_, _| {}), Profile::default(), "k").unwrap();
        assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
        assert_eq!(imp.sessions.len(), 1);
        let s = &imp.sessions[0].summary;
        assert_eq!(s.samples, 120);
        assert_eq!(
            s.start_time,
            Timestamp((i64::from(T0) + FIT_EPOCH_S) * 1000)
        );
        assert_eq!(s.metrics.elapsed_s, 119.0);
    }

    /// Before the fix the replay ignored the workout's refusal at the limit and fed it the
    /// remaining samples, which were neither used nor counted.
    #[test]
    fn samples_past_the_24_hour_limit_are_counted_in_a_warning() {
        // One record a minute for 25 hours: minutes 1440 ..= 1500 are at or past the limit.
        let imp = import(&activity(T0, 60, 1501, |_, _| {}), Profile::default(), "k").unwrap();
        assert_eq!(imp.sessions.len(), 1);
        let limit = imp
            .warnings
            .iter()
            .find(|w| w.contains("24-hour limit"))
            .unwrap_or_else(|| panic!("{:?}", imp.warnings));
        assert!(limit.contains("61 sample(s)"), "{limit}");
        let at = |min: i64| Timestamp((i64::from(T0) + FIT_EPOCH_S + min * 60) * 1000);
        assert!(limit.contains(&at(1440).to_rfc3339()), "{limit}");
        assert!(limit.contains(&at(1500).to_rfc3339()), "{limit}");
        // Every sample before the limit was used.
        assert_eq!(imp.sessions[0].samples.len(), 1440);
        // And the workout is recorded, stopped at the limit.
        assert_eq!(imp.sessions[0].not_recorded, None);
        assert_eq!(imp.sessions[0].summary.metrics.elapsed_s, 24.0 * 3600.0);
    }

    /// Before the fix decoding stopped at the first message it could not decode, and every
    /// record after it was lost (reported as damage).
    #[test]
    fn an_undecodable_message_is_skipped_and_the_rest_is_read() {
        let bytes = activity(T0, 1, 120, |i, w| {
            if i == 9 {
                // A record whose activity_type (an enum) is declared as a string: framed
                // correctly, but its fields cannot be decoded.
                w.define(4, 20, &[(253, 4, UINT32), (42, 4, STRING)]);
                let mut r = (T0 + 9).to_le_bytes().to_vec();
                r.extend_from_slice(b"abc\0");
                w.data(4, &r);
            }
        });
        let imp = import(&bytes, Profile::default(), "k").unwrap();
        assert_eq!(imp.sessions.len(), 1);
        assert_eq!(imp.sessions[0].summary.samples, 120);
        assert_eq!(imp.warnings.len(), 1, "{:?}", imp.warnings);
        assert!(
            imp.warnings[0].contains("1 message(s) could not be decoded and were skipped"),
            "{:?}",
            imp.warnings
        );
    }

    /// Before the fix these samples were dropped without a word.
    #[test]
    fn samples_outside_every_session_are_counted_in_a_warning() {
        // The session starts at T0 + 30 s: the first 30 records lie before it.
        let mut w = FitWriter::new();
        w.define(0, 0, &[(0, 1, ENUM)]);
        w.data(0, &[4]);
        w.define(1, 20, &[(253, 4, UINT32), (3, 1, UINT8)]);
        for i in 0..120u32 {
            let mut r = (T0 + i).to_le_bytes().to_vec();
            r.push(120);
            w.data(1, &r);
        }
        w.define(3, 18, &[(253, 4, UINT32), (2, 4, UINT32)]);
        let mut sess = (T0 + 119).to_le_bytes().to_vec();
        sess.extend_from_slice(&(T0 + 30).to_le_bytes());
        w.data(3, &sess);
        let imp = import(&w.finish(), Profile::default(), "k").unwrap();
        assert_eq!(imp.sessions[0].summary.samples, 90);
        let at = |s: i64| Timestamp((i64::from(T0) + FIT_EPOCH_S + s) * 1000).to_rfc3339();
        let expected = format!(
            "samples outside every session were not used: 30 sample(s) (from {} to {}) before \
             session 0",
            at(0),
            at(29)
        );
        assert_eq!(imp.warnings, vec![expected]);
    }

    /// A two-leg file cut before the second leg's session message: the first leg stays as it
    /// was recorded, and the second leg's records are reported, not stretched into the first.
    #[test]
    fn the_records_of_a_session_lost_in_the_damage_are_counted_not_absorbed() {
        let mut w = FitWriter::new();
        w.define(0, 0, &[(0, 1, ENUM)]);
        w.data(0, &[4]);
        w.define(1, 20, &[(253, 4, UINT32), (3, 1, UINT8)]);
        let record = |w: &mut FitWriter, t: u32| {
            let mut r = t.to_le_bytes().to_vec();
            r.push(130);
            w.data(1, &r);
        };
        for i in 0..120u32 {
            record(&mut w, T0 + i);
        }
        w.define(3, 18, &[(253, 4, UINT32), (2, 4, UINT32), (5, 1, ENUM)]);
        let mut sess = (T0 + 119).to_le_bytes().to_vec();
        sess.extend_from_slice(&T0.to_le_bytes());
        sess.push(1);
        w.data(3, &sess);
        for i in 130..=300u32 {
            record(&mut w, T0 + i);
        }
        let mut bytes = w.finish();
        // Cut mid-record, as a file whose writing stopped.
        bytes.truncate(bytes.len() - 4);
        let imp = import(&bytes, Profile::default(), "k").unwrap();
        assert_eq!(imp.sessions.len(), 1);
        let s = &imp.sessions[0].summary;
        assert_eq!(s.metrics.elapsed_s, 119.0);
        assert_eq!(s.samples, 120);
        let at = |s: i64| Timestamp((i64::from(T0) + FIT_EPOCH_S + s) * 1000).to_rfc3339();
        let lost = imp
            .warnings
            .iter()
            .find(|w| w.contains("lost in the damage"))
            .unwrap_or_else(|| panic!("{:?}", imp.warnings));
        // The cut takes the last record with it: 130 ..= 299.
        assert!(
            lost.contains(&format!("170 sample(s) (from {} to {})", at(130), at(299))),
            "{lost}"
        );
    }

    #[test]
    fn twelve_bit_packing() {
        // Two values 0xABC and 0x123 pack little-endian into BC 3A 12.
        assert_eq!(unpack_12bit(&[188.0, 58.0, 18.0]), vec![0xABC, 0x123]);
        // Real bytes from a strap: first beat 3445/1024 s = 3.364 s, second 182/1024 s.
        assert_eq!(&unpack_12bit(&[117.0, 109.0, 11.0])[..], &[3445, 182]);
    }

    #[test]
    fn compressed_distance_rolls_over_at_256_m() {
        let mut c = CompressedDistance::default();
        let raw = |speed: u32, dist16: u32| {
            let v = speed | (dist16 << 12);
            [
                f64::from(v & 0xFF),
                f64::from((v >> 8) & 0xFF),
                f64::from(v >> 16),
            ]
        };
        assert_eq!(c.next(&raw(354, 4000)), Some((3.54, 0.0)));
        // 4000 -> 96 wraps: (96 + 4096 - 4000) / 16 = 12 m
        assert_eq!(c.next(&raw(300, 96)), Some((3.0, 12.0)));
        assert_eq!(c.next(&[1.0, 2.0]), None);
    }

    /// Before the fix: "attempt to subtract with overflow" (debug builds). A crafted file can
    /// declare the 3-byte field with a wider type, so a "byte" can exceed 255.
    #[test]
    fn compressed_distance_from_wide_crafted_values_does_not_overflow() {
        let mut c = CompressedDistance::default();
        // Only the low byte of each value counts: 65535 reads as 255.
        assert_eq!(c.next(&[0.0, 0.0, 65535.0]), Some((0.0, 0.0)));
        // From counter 0xFF0 (255 << 4) to 0: (0 - 0xFF0) & 0xFFF = 16 / 16 = 1 m.
        assert_eq!(c.next(&[0.0, 0.0, 0.0]), Some((0.0, 1.0)));
        assert!(c.next(&[f64::MAX, -1.0, 1e300]).is_some());
        assert!(c.next(&[0.0, 0.0, 0.0]).is_some());
    }

    fn hr_fields<'a>(values: &'a [(&'static str, Value)]) -> Fields<'a> {
        Fields(values.iter().map(|(k, v)| (*k, v)).collect())
    }

    fn fit_time(s: i64) -> Value {
        use chrono::TimeZone;
        Value::Timestamp(chrono::Local.timestamp_opt(s, 0).unwrap())
    }

    /// Before the fix: "attempt to add with overflow" (debug builds) on the beats after an
    /// anchor of 1e30 s, an event_timestamp declared as a float64 in a crafted file.
    #[test]
    fn an_implausible_event_timestamp_anchors_nothing() {
        let mut hr = HrMessages::default();
        let beats_at = |byte: u8| {
            [
                ("filtered_bpm", Value::Array(vec![Value::UInt8(120); 2])),
                (
                    "event_timestamp_12",
                    Value::Array(vec![Value::Byte(byte); 3]),
                ),
            ]
        };
        // Event times 0 and 0: from an anchor of i64::MAX ticks (0xFFF in its low 12 bits)
        // the first is one tick later, past i64::MAX.
        let beats = beats_at(0);
        for bad in [1e30, f64::MAX, -5.0, f64::from(u32::MAX)] {
            let anchor = [
                ("timestamp", fit_time(1_600_000_000)),
                ("event_timestamp", Value::Float64(bad)),
                ("filtered_bpm", Value::UInt8(120)),
            ];
            assert_eq!(hr.next(&hr_fields(&anchor)), vec![], "{bad}");
            assert_eq!(hr.next(&hr_fields(&beats)), vec![], "{bad}");
        }
        // A fractional timestamp outside its type's range [0, 2) s anchors nothing either.
        let anchor = [
            ("timestamp", fit_time(1_600_000_000)),
            ("event_timestamp", Value::Float64(10.0)),
            ("fractional_timestamp", Value::Float64(1e300)),
            ("filtered_bpm", Value::UInt8(120)),
        ];
        assert_eq!(hr.next(&hr_fields(&anchor)), vec![]);
        assert_eq!(hr.next(&hr_fields(&beats)), vec![]);
        // A plausible anchor still places the beats after it: 0xFFF ticks is 4095/1024 s.
        let anchor = [
            ("timestamp", fit_time(1_600_000_000)),
            ("event_timestamp", Value::Float64(4.0)),
            ("filtered_bpm", Value::UInt8(120)),
        ];
        assert_eq!(
            hr.next(&hr_fields(&anchor)),
            vec![(Timestamp(1_600_000_000_000), 120.0)]
        );
        // 4096 ticks, then 0xFFF in the low 12 bits: 4095 ticks (3999.02 ms) later.
        let placed = hr.next(&hr_fields(&beats_at(0xFF)));
        assert_eq!(
            placed,
            vec![
                (Timestamp(1_600_000_003_999), 120.0),
                (Timestamp(1_600_000_003_999), 120.0)
            ]
        );
    }

    fn session(start_s: i64, closed_s: Option<i64>, laps: Option<(usize, usize)>) -> SessionInfo {
        SessionInfo {
            start: Some(Timestamp(start_s * 1000)),
            closed: closed_s.map(|c| Timestamp(c * 1000)),
            laps,
            sport: None,
            device: DeviceTotals::default(),
        }
    }

    fn lap(start_s: i64, end_s: i64) -> LapInfo {
        LapInfo {
            start: Some(Timestamp(start_s * 1000)),
            end: Some(Timestamp(end_s * 1000)),
        }
    }

    fn secs(ts: &[Timestamp]) -> Vec<i64> {
        ts.iter().map(|t| t.0 / 1000).collect()
    }

    #[test]
    fn a_session_starts_with_an_earlier_first_lap() {
        // Session 0 says 100 s but its lap (ending where session 1 starts) began at 10 s.
        let infos = [session(100, None, None), session(500, None, None)];
        let laps = [lap(10, 500), lap(500, 900)];
        assert_eq!(secs(&session_starts(&infos, &laps, None)), vec![10, 500]);
        // A lap starting later than the stated start never moves it.
        let laps = [lap(101, 500), lap(500, 900)];
        assert_eq!(secs(&session_starts(&infos, &laps, None)), vec![100, 500]);
        // Laps by index when the session gives them.
        let infos = [session(100, None, Some((1, 1))), session(500, None, None)];
        let laps = [lap(5, 50), lap(20, 500), lap(500, 900)];
        assert_eq!(secs(&session_starts(&infos, &laps, None)), vec![20, 500]);
    }

    #[test]
    fn a_lap_never_moves_a_session_before_the_previous_one() {
        let infos = [session(100, None, None), session(500, None, Some((1, 1)))];
        let laps = [lap(100, 500), lap(100, 900)];
        assert_eq!(secs(&session_starts(&infos, &laps, None)), vec![100, 500]);
        let laps = [lap(100, 500), lap(101, 900)];
        assert_eq!(secs(&session_starts(&infos, &laps, None)), vec![100, 101]);
        // Nor before the file's first record or event.
        let infos = [session(100, None, None)];
        let laps = [lap(10, 500)];
        assert_eq!(secs(&session_starts(&infos, &laps, Some(at(10)))), vec![10]);
        assert_eq!(
            secs(&session_starts(&infos, &laps, Some(at(11)))),
            vec![100]
        );
    }

    fn at(s: i64) -> Timestamp {
        Timestamp(s * 1000)
    }

    fn end_of(steps: &[(Timestamp, Step)], bound: Option<SessionBound>) -> i64 {
        let window: Vec<&(Timestamp, Step)> = steps.iter().collect();
        session_end(&window, at(0), bound).0 / 1000
    }

    fn hr(s: i64) -> (Timestamp, Step) {
        (at(s), Step::Sample(Reading::HeartRate { bpm: 120.0 }))
    }

    #[test]
    fn a_running_session_ends_at_its_own_timestamp_within_its_bounds() {
        let steps = [(at(0), Step::Resume), hr(1), hr(97)];
        let bound = |closed: Option<i64>| {
            Some(SessionBound {
                next: at(100),
                closed: closed.map(at),
            })
        };
        assert_eq!(end_of(&steps, bound(Some(99))), 99);
        assert_eq!(end_of(&steps, bound(Some(100))), 100);
        // A summary-first file's timestamp (written at save time) is bounded by the next start.
        assert_eq!(end_of(&steps, bound(Some(101))), 100);
        assert_eq!(end_of(&steps, bound(None)), 100);
        // Never before the session's own last sample.
        assert_eq!(end_of(&steps, bound(Some(96))), 97);
        assert_eq!(end_of(&steps, bound(Some(97))), 97);
        // The last session with the timer running: its last sample.
        assert_eq!(end_of(&steps, None), 97);
    }

    #[test]
    fn a_stopped_session_ends_at_a_stop_near_its_last_sample() {
        let stop = |s| [(at(0), Step::Resume), hr(90), (at(s), Step::Pause)];
        let ms = STOP_NEAR_LAST_SAMPLE_MS / 1000;
        assert_eq!(end_of(&stop(90 + ms), None), 90 + ms);
        assert_eq!(end_of(&stop(90 + ms + 1), None), 90);
        // Also between sessions: the stop, not the session's timestamp.
        let bound = Some(SessionBound {
            next: at(200),
            closed: Some(at(199)),
        });
        assert_eq!(end_of(&stop(92), bound), 92);
    }

    #[test]
    fn sport_mapping() {
        assert_eq!(map_sport("generic", None), None);
        assert_eq!(
            map_sport("fitness_equipment", Some("indoor_rowing")),
            Some(Sport::Rowing)
        );
        assert_eq!(
            map_sport("cycling", Some("virtual_activity")),
            Some(Sport::Cycling)
        );
        assert_eq!(map_sport("tennis", None), Some(Sport::Other));
    }
}
