//! The replay transport: plays a capture file, or notifications synthesised from a FIT
//! recording, at real speed, accelerated, or as fast as possible.
//!
//! Capture files are text, one event per line (`#` starts a comment):
//! ```text
//! <t_ms> connect <device>
//! <t_ms> disconnect <device>
//! <t_ms> gatt <device> <characteristic, e.g. 2A37> <hex payload>
//! <t_ms> ant <device> <hrm|bsc|speed|cadence|power> <hex payload>
//! ```
//!
//! From a FIT recording, each imported session becomes what its sensors would have sent: a
//! heart-rate strap (0x2A37 with RR intervals), a power meter (0x2A63), a speed and cadence
//! sensor (0x2A5B, wheel and crank revolutions with their 1/1024 s event times) or, for
//! running and walking, a foot pod (0x2A53), and a pulse oximeter (0x2A5F). Position, altitude
//! and temperature come from the host's own sensors ([`TransportEvent::Host`]); the device's
//! start, pauses, laps and stop become [`TransportEvent::Control`] events.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use fitedge_core::event::DomainEvent;
use fitedge_core::fit::ImportedSession;
use fitedge_core::workout::WorkoutConfig;
use fitedge_core::{
    Channel, Reading, Sample, Sport, Timestamp, Workout, WorkoutId, WorkoutSummary,
};

use super::{run, ControlAction, RunReport, Transport, TransportEvent};
use crate::ant::AntProfile;
use crate::gatt::{Characteristic, SFloat};
use crate::hub::{DeviceEvent, HubConfig, SensorHub};
use crate::hub::{DeviceKind, DeviceRegistration};
use crate::sensor::Source;

#[derive(Debug)]
pub struct ReplayTransport {
    events: VecDeque<TransportEvent>,
    /// Playback speed: 1.0 real time, 60.0 a minute per second, `None` as fast as possible.
    speed: Option<f64>,
    last: Option<Timestamp>,
}

impl ReplayTransport {
    pub fn new(mut events: Vec<TransportEvent>, speed: Option<f64>) -> Self {
        events.sort_by_key(|e| e.at());
        Self {
            events: events.into(),
            speed: speed.filter(|s| s.is_finite() && *s > 0.0),
            last: None,
        }
    }

    pub fn remaining(&self) -> usize {
        self.events.len()
    }
}

impl Transport for ReplayTransport {
    fn next_event(&mut self) -> impl Future<Output = Option<TransportEvent>> + Send {
        let ev = self.events.pop_front();
        let wait = match (&ev, self.last, self.speed) {
            (Some(e), Some(last), Some(speed)) => {
                let ms = (e.at().0 - last.0).max(0) as f64 / speed;
                Some(Duration::from_micros((ms * 1000.0) as u64))
            }
            _ => None,
        };
        if let Some(e) = &ev {
            self.last = Some(e.at());
        }
        async move {
            if let Some(w) = wait.filter(|w| !w.is_zero()) {
                tokio::time::sleep(w).await;
            }
            ev
        }
    }
}

// --- capture files -----------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("capture line {line}: {message}")]
pub struct CaptureError {
    pub line: usize,
    pub message: String,
}

/// Hex with optional spaces, colons or dashes between bytes.
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !matches!(b, b' ' | b':' | b'-' | b'\t'))
        .collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

pub fn parse_capture(text: &str) -> Result<Vec<TransportEvent>, CaptureError> {
    let mut out = vec![];
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |m: &str| CaptureError {
            line: i + 1,
            message: m.to_string(),
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        let at = f
            .first()
            .and_then(|t| t.parse::<i64>().ok())
            .map(Timestamp)
            .ok_or_else(|| err("expected a time in ms"))?;
        let device = f
            .get(2)
            .ok_or_else(|| err("expected a device id"))?
            .to_string();
        let ev = match f.get(1).copied() {
            Some("connect") => TransportEvent::Connected { device, at },
            Some("disconnect") => TransportEvent::Disconnected { device, at },
            Some(kind @ ("gatt" | "ant")) => {
                let what = f
                    .get(3)
                    .ok_or_else(|| err("expected a characteristic or an ANT+ profile"))?;
                let source = if kind == "gatt" {
                    Source::Gatt(
                        Characteristic::parse(what).ok_or_else(|| err("unknown characteristic"))?,
                    )
                } else {
                    Source::Ant(AntProfile::parse(what).ok_or_else(|| err("unknown ANT+ profile"))?)
                };
                let bytes = parse_hex(&f[4..].concat()).ok_or_else(|| err("bad hex payload"))?;
                TransportEvent::Notification {
                    device,
                    source,
                    bytes,
                    at,
                }
            }
            _ => return Err(err("expected connect, disconnect, gatt or ant")),
        };
        out.push(ev);
    }
    Ok(out)
}

// --- synthesis from a FIT session --------------------------------------------------------------

pub const HRM: &str = "replay-hrm";
pub const POWER: &str = "replay-power";
pub const CSC: &str = "replay-csc";
pub const FOOTPOD: &str = "replay-footpod";
pub const OXIMETER: &str = "replay-oximeter";

/// The devices a synthesised replay uses.
pub fn devices(circumference_m: f64) -> Vec<DeviceRegistration> {
    let mut v = vec![
        DeviceRegistration::new(HRM, DeviceKind::HeartRate, 10),
        DeviceRegistration::new(POWER, DeviceKind::CyclingPower, 10),
        DeviceRegistration::new(CSC, DeviceKind::SpeedCadence, 10),
        DeviceRegistration::new(FOOTPOD, DeviceKind::RunningSpeedCadence, 10),
        DeviceRegistration::new(OXIMETER, DeviceKind::PulseOximeter, 10),
    ];
    for d in &mut v {
        d.wheel_circumference_m = circumference_m;
    }
    v
}

fn hr_payload(bpm: Option<f64>, rr_ms: &[f64]) -> Vec<u8> {
    let bpm = bpm.map_or(0, |b| b.round().clamp(0.0, 65_535.0) as u16);
    let mut flags = if rr_ms.is_empty() { 0 } else { 0x10 };
    let mut b = vec![0];
    if bpm > 255 {
        flags |= 0x01;
        b.extend_from_slice(&bpm.to_le_bytes());
    } else {
        b.push(bpm as u8);
    }
    for ms in rr_ms {
        let raw = (ms * 1.024).round().clamp(0.0, 65_535.0) as u16;
        b.extend_from_slice(&raw.to_le_bytes());
    }
    b[0] = flags;
    b
}

/// Cumulative revolutions with the time of the last whole one, for synthesised sensors.
#[derive(Debug, Default)]
struct Revs {
    total: f64,
    last_event_ms: f64,
}

impl Revs {
    /// Advances to `revs` total at `t_ms`, from `prev` at `prev_ms`; interpolates the time of
    /// the last whole revolution.
    fn advance(&mut self, revs: f64, t_ms: f64, prev_ms: f64) {
        let (r0, r1) = (self.total, revs.max(self.total));
        if r1.floor() > r0.floor() && r1 > r0 {
            let frac = (r1.floor() - r0) / (r1 - r0);
            self.last_event_ms = prev_ms + frac * (t_ms - prev_ms);
        }
        self.total = r1;
    }

    fn data(&self) -> (u32, u16) {
        let ticks = (self.last_event_ms * 1.024).floor() as i64;
        (self.total.floor() as u32, ticks.rem_euclid(65_536) as u16)
    }
}

fn control_events(session: &ImportedSession) -> Vec<(Timestamp, u8, ControlAction)> {
    // Ranks at equal times follow the importer's: resume, samples (1), lap, pause, stop.
    let mut v = vec![];
    for e in &session.events {
        match e {
            DomainEvent::WorkoutStarted { at, .. } => v.push((*at, 0, ControlAction::Start)),
            DomainEvent::WorkoutResumed { at, .. } => v.push((*at, 0, ControlAction::Resume)),
            DomainEvent::LapCompleted { at, .. } => v.push((*at, 2, ControlAction::Lap)),
            DomainEvent::WorkoutPaused { at, .. } => v.push((*at, 3, ControlAction::Pause)),
            _ => {}
        }
    }
    v.push((session.summary.end_time, 4, ControlAction::Stop));
    v
}

/// What a session's sensors would have sent.
pub fn synthesize(session: &ImportedSession, circumference_m: f64) -> Vec<TransportEvent> {
    let sport = session.summary.metrics.sport;
    let foot = matches!(sport, Sport::Running | Sport::Walking | Sport::Hiking);
    let start = session.summary.start_time;
    // Group the samples by time.
    let mut times: Vec<(Timestamp, Vec<Reading>)> = vec![];
    for s in &session.samples {
        match times.last_mut() {
            Some((t, v)) if *t == s.t => v.push(s.reading),
            _ => times.push((s.t, vec![s.reading])),
        }
    }
    let mut ranked: Vec<(Timestamp, u8, TransportEvent)> = vec![];
    for dev in [HRM, POWER, if foot { FOOTPOD } else { CSC }, OXIMETER] {
        ranked.push((
            start,
            0,
            TransportEvent::Connected {
                device: dev.to_string(),
                at: start,
            },
        ));
    }
    for (at, rank, action) in control_events(session) {
        ranked.push((at, rank, TransportEvent::Control { action, at }));
    }
    let mut wheel = Revs::default();
    let mut crank = Revs::default();
    let (mut last_dist, mut last_t, mut last_cad): (Option<f64>, f64, Option<f64>) =
        (None, start.0 as f64, None);
    let mut last_speed = 0.0;
    let mut integrated = 0.0;
    let has_distance = session
        .samples
        .iter()
        .any(|s| s.channel() == Channel::Distance);
    let note = |dev: &str, c: Characteristic, bytes: Vec<u8>, at: Timestamp| {
        (
            at,
            1u8,
            TransportEvent::Notification {
                device: dev.to_string(),
                source: Source::Gatt(c),
                bytes,
                at,
            },
        )
    };
    for (at, readings) in &times {
        let t_ms = at.0 as f64;
        let mut hr = None;
        let mut rr = vec![];
        let (mut power, mut speed, mut dist, mut cad, mut spo2) = (None, None, None, None, None);
        for r in readings {
            match *r {
                Reading::HeartRate { bpm } => hr = Some(bpm),
                Reading::RrInterval { ms } => rr.push(ms),
                Reading::Power { w } => power = Some(w),
                Reading::Speed { mps } => speed = Some(mps),
                Reading::Distance { m } => dist = Some(m),
                Reading::Cadence { rpm } => cad = Some(rpm),
                Reading::Spo2 { pct } => spo2 = Some(pct),
                Reading::Position { .. }
                | Reading::Altitude { .. }
                | Reading::Temperature { .. } => {
                    ranked.push((*at, 1, TransportEvent::Host(Sample::new(*at, *r))));
                }
            }
        }
        if hr.is_some() || !rr.is_empty() {
            for chunk in rr.chunks(8).chain(rr.is_empty().then_some(&[][..])) {
                ranked.push(note(
                    HRM,
                    Characteristic::HeartRateMeasurement,
                    hr_payload(hr, chunk),
                    *at,
                ));
            }
        }
        if let Some(w) = power {
            let mut b = vec![0, 0];
            b.extend_from_slice(&(w.round().clamp(-32_768.0, 32_767.0) as i16).to_le_bytes());
            ranked.push(note(POWER, Characteristic::CyclingPowerMeasurement, b, *at));
        }
        if let Some(pct) = spo2 {
            let mut b = vec![0];
            b.extend_from_slice(&SFloat::encode(pct).to_le_bytes());
            b.extend_from_slice(&0x07FFu16.to_le_bytes()); // pulse rate: NaN (the strap gives HR)
            ranked.push(note(OXIMETER, Characteristic::PlxContinuous, b, *at));
        }
        // Distance: the file's own, else integrated speed.
        if let Some(s) = speed {
            integrated += last_speed * (t_ms - last_t).max(0.0) / 1000.0;
            last_speed = s;
        }
        let d = if has_distance {
            dist
        } else {
            speed.map(|_| integrated)
        };
        if foot {
            if d.is_some() || speed.is_some() || cad.is_some() {
                let d = d.or(last_dist);
                let mut b = vec![if d.is_some() { 0x02 } else { 0x00 }];
                let mps = speed.unwrap_or(last_speed);
                b.extend_from_slice(
                    &((mps * 256.0).round().clamp(0.0, 65_535.0) as u16).to_le_bytes(),
                );
                b.push(cad.or(last_cad).unwrap_or(0.0).round().clamp(0.0, 255.0) as u8);
                if let Some(m) = d {
                    b.extend_from_slice(&((m * 10.0).round().clamp(0.0, 4e9) as u32).to_le_bytes());
                }
                ranked.push(note(FOOTPOD, Characteristic::RscMeasurement, b, *at));
            }
        } else {
            if let Some(m) = d {
                wheel.advance(m / circumference_m, t_ms, last_t);
            }
            if let Some(rpm) = cad.or(last_cad) {
                let prev = last_cad.unwrap_or(rpm);
                crank.advance(
                    crank.total + (prev + rpm) / 2.0 / 60.0 * (t_ms - last_t).max(0.0) / 1000.0,
                    t_ms,
                    last_t,
                );
            }
            if d.is_some() || cad.is_some() {
                let mut flags = 0;
                let mut b = vec![0];
                if d.is_some() || last_dist.is_some() {
                    flags |= 0x01;
                    let (n, ticks) = wheel.data();
                    b.extend_from_slice(&n.to_le_bytes());
                    b.extend_from_slice(&ticks.to_le_bytes());
                }
                if cad.is_some() {
                    flags |= 0x02;
                    let (n, ticks) = crank.data();
                    b.extend_from_slice(&(n as u16).to_le_bytes());
                    b.extend_from_slice(&ticks.to_le_bytes());
                }
                b[0] = flags;
                ranked.push(note(CSC, Characteristic::CscMeasurement, b, *at));
            }
        }
        if d.is_some() {
            last_dist = d;
        }
        if cad.is_some() {
            last_cad = cad;
        }
        last_t = t_ms;
    }
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().map(|(_, _, e)| e).collect()
}

/// A session replayed through synthesised notifications, the hub and a fresh recording.
#[derive(Debug)]
pub struct Replayed {
    /// The recording's summary (a preview when the session is too short to be recorded).
    pub summary: Option<WorkoutSummary>,
    pub report: RunReport,
    pub device_events: Vec<DeviceEvent>,
}

/// Replays one imported session: synthesises its sensors' notifications and drives them
/// through a [`SensorHub`] into a new [`Workout`] with the importer's settings (the device's
/// own pauses, no auto-pause).
pub async fn replay_session(
    session: &ImportedSession,
    circumference_m: f64,
    speed: Option<f64>,
) -> Replayed {
    let m = &session.summary.metrics;
    let sport = (!m.sport_detected).then_some(m.sport);
    let mut w = Workout::new(
        WorkoutId::random(),
        sport,
        session.profile.resolve(),
        WorkoutConfig::import(),
    );
    let mut hub = SensorHub::new(HubConfig::default());
    for d in devices(circumference_m) {
        hub.register(d);
    }
    let mut t = ReplayTransport::new(synthesize(session, circumference_m), speed);
    let report = run(&mut t, &mut hub, &mut w).await;
    let summary = match w.summary() {
        Some(s) => Some(s.clone()),
        None => w.preview(session.summary.end_time),
    };
    Replayed {
        summary,
        report,
        device_events: hub.take_events(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_files_parse_and_name_bad_lines() {
        let text = "# a strap\n1000 connect hrm\n1500 gatt hrm 2A37 16:48:54:01:EC:02\n2000 ant pm power 10 01 ff 5a 00 00 c8 00\n3000 disconnect hrm\n";
        let ev = parse_capture(text).unwrap();
        assert_eq!(ev.len(), 4);
        assert!(matches!(&ev[1], TransportEvent::Notification { bytes, .. } if bytes.len() == 6));
        let e = parse_capture("1000 gatt hrm 2A99 00").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(parse_capture("x connect hrm").is_err());
        assert!(parse_capture("1 gatt hrm 2A37 0").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn plays_at_the_requested_speed() {
        let ev = parse_capture("0 connect a\n60000 disconnect a\n").unwrap();
        let mut r = ReplayTransport::new(ev, Some(60.0));
        let t0 = tokio::time::Instant::now();
        r.next_event().await;
        r.next_event().await;
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        assert!(r.next_event().await.is_none());
    }

    #[test]
    fn synthetic_revolutions_interpolate_the_last_event() {
        let mut w = Revs::default();
        w.advance(2.5, 1000.0, 0.0);
        // the second whole revolution was at 2/2.5 of the way
        assert_eq!(w.data(), (2, (800.0f64 * 1.024).floor() as u16));
        assert_eq!(
            hr_payload(Some(300.0), &[1000.0]),
            vec![0x11, 0x2C, 0x01, 0x00, 0x04]
        );
    }
}
