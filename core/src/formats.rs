//! GPX 1.1 and TCX (Garmin Training Center v2) import and export.
//!
//! Import turns a file into samples and replays them through the [`Workout`] aggregate, like
//! the FIT importer, so every figure is the engine's own. Export writes a stored workout's
//! samples back out: GPX carries the GPS track with heart rate, cadence, power and temperature in
//! the Garmin TrackPointExtension (the extension every platform reads); TCX also carries the
//! distance channel, speed, laps and the sport. Both formats round-trip distance, time and heart
//! rate within the accuracy tolerances of the engine (tested).
//!
//! Neither format has pauses: a workout with pauses exports its samples, and an import of it has
//! no pauses (its timer time equals its elapsed time).

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::fit::{DeviceTotals, FitError, ImportedSession, Span};
use crate::profile::Profile;
use crate::sample::{AltitudeSource, Channel, Reading, Sample};
use crate::sport::Sport;
use crate::time::Timestamp;
use crate::workout::{Workout, WorkoutConfig, WorkoutError, WorkoutId, WorkoutSummary};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Gpx,
    Tcx,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "gpx" => Ok(Format::Gpx),
            "tcx" => Ok(Format::Tcx),
            _ => Err(format!("unknown format {s:?}; expected gpx or tcx")),
        }
    }
}

/// What a parsed file holds, before the engine computes anything.
#[derive(Debug, Default)]
struct Parsed {
    sport: Option<Sport>,
    samples: Vec<Sample>,
    laps: Vec<Timestamp>,
    device: DeviceTotals,
}

fn sport_from_name(s: &str) -> Option<Sport> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "running" | "run" | "trail_running" => Some(Sport::Running),
        "biking" | "cycling" | "ride" | "road_biking" | "mountain_biking" => Some(Sport::Cycling),
        "walking" | "walk" => Some(Sport::Walking),
        "hiking" | "hike" => Some(Sport::Hiking),
        "swimming" | "swim" => Some(Sport::Swimming),
        "rowing" => Some(Sport::Rowing),
        "other" | "" => None,
        other => other.parse().ok(),
    }
}

fn num(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

fn bad(msg: impl Into<String>) -> FitError {
    FitError::NotFit(msg.into())
}

enum Ev<'a> {
    Start(&'a [String], &'a [(String, String)]),
    Text(&'a [String], &'a str),
    End(&'a [String]),
}

/// Walks an XML document and hands every element start, text and end to `on`, with the stack
/// of local names leading to it.
fn walk(xml: &str, mut on: impl FnMut(Ev<'_>)) -> Result<(), FitError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut path: Vec<String> = vec![];
    loop {
        let pos = reader.buffer_position();
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                on(Ev::Start(&path, &attributes(&e)));
            }
            Ok(Event::Empty(e)) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                on(Ev::Start(&path, &attributes(&e)));
                on(Ev::End(&path));
                path.pop();
            }
            Ok(Event::Text(t)) => {
                let text = t
                    .decode()
                    .map_err(|e| bad(format!("bad text at byte {pos}: {e}")))?;
                on(Ev::Text(&path, &text));
            }
            Ok(Event::End(_)) => {
                on(Ev::End(&path));
                path.pop();
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(bad(format!("malformed XML at byte {pos}: {e}"))),
        }
    }
    if !path.is_empty() {
        return Err(bad(format!(
            "the document ends inside <{}>",
            path.join("><")
        )));
    }
    Ok(())
}

fn attributes(e: &quick_xml::events::BytesStart<'_>) -> Vec<(String, String)> {
    e.attributes()
        .filter_map(|a| a.ok())
        .map(|a| {
            (
                String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned(),
                a.unescape_value()
                    .map(|v| v.into_owned())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn ends_with(path: &[String], tail: &[&str]) -> bool {
    path.len() >= tail.len()
        && path[path.len() - tail.len()..]
            .iter()
            .zip(tail)
            .all(|(a, b)| a == b)
}

/// One [`Parsed`] per `<trk>`: a GPX file may hold several activities (GPX 1.1: "trk - an
/// ordered list of points describing a path"; exporters write one per activity).
fn parse_gpx(xml: &str) -> Result<Vec<Parsed>, FitError> {
    let mut tracks: Vec<Parsed> = vec![];
    let mut saw_gpx = false;
    let mut point: Option<(f64, f64)> = None;
    let mut t: Option<Timestamp> = None;
    let mut extra: Vec<Reading> = vec![];
    walk(xml, |ev| match ev {
        Ev::Start(path, attrs) => {
            if path.len() == 1 && path[0] == "gpx" {
                saw_gpx = true;
            }
            if path.last().map(String::as_str) == Some("trk") {
                tracks.push(Parsed::default());
            }
            if path.last().map(String::as_str) == Some("trkpt") {
                let get = |k: &str| attrs.iter().find(|(n, _)| n == k).and_then(|(_, v)| num(v));
                point = get("lat").zip(get("lon"));
                t = None;
                extra.clear();
            }
        }
        Ev::Text(path, text) => {
            if ends_with(path, &["trk", "type"]) {
                if let Some(p) = tracks.last_mut() {
                    p.sport = sport_from_name(text);
                }
            } else if ends_with(path, &["trkpt", "time"]) {
                t = Timestamp::parse_rfc3339(text.trim());
            } else if ends_with(path, &["trkpt", "ele"]) {
                if let Some(m) = num(text) {
                    extra.push(Reading::Altitude {
                        m,
                        source: AltitudeSource::Gps,
                    });
                }
            } else if path.iter().any(|p| p == "trkpt") {
                let leaf = path.last().map(String::as_str).unwrap_or("");
                let r = match (leaf, num(text)) {
                    ("hr", Some(bpm)) => Some(Reading::HeartRate { bpm }),
                    ("cad", Some(rpm)) => Some(Reading::Cadence { rpm }),
                    ("power", Some(w)) => Some(Reading::Power { w }),
                    ("atemp", Some(c)) => Some(Reading::Temperature { c }),
                    _ => None,
                };
                extra.extend(r);
            }
        }
        Ev::End(path) => {
            if path.last().map(String::as_str) == Some("trkpt") {
                if let (Some(t), Some(p)) = (t, tracks.last_mut()) {
                    if let Some((lat, lon)) = point {
                        p.samples.push(Sample::new(
                            t,
                            Reading::Position {
                                lat,
                                lon,
                                accuracy_m: None,
                            },
                        ));
                    }
                    p.samples.extend(extra.iter().map(|r| Sample::new(t, *r)));
                }
            }
        }
    })?;
    if !saw_gpx {
        return Err(bad("not a GPX document (no <gpx> root)"));
    }
    Ok(tracks)
}

/// One [`Parsed`] per `<Activity>` (TCX v2: `Activities` holds a list of `Activity`).
fn parse_tcx(xml: &str) -> Result<Vec<Parsed>, FitError> {
    let mut activities: Vec<Parsed> = vec![];
    let mut p = Parsed::default();
    let mut in_activity = false;
    let mut saw_root = false;
    let mut t: Option<Timestamp> = None;
    let (mut lat, mut lon): (Option<f64>, Option<f64>) = (None, None);
    let mut point: Vec<Reading> = vec![];
    let mut lap_starts: Vec<Timestamp> = vec![];
    let mut lap_secs = 0.0;
    let mut hr_sum = (0.0, 0.0);
    let add = |x: &mut Option<f64>, v: Option<f64>| {
        if let Some(v) = v {
            *x = Some(x.unwrap_or(0.0) + v);
        }
    };
    walk(xml, |ev| match ev {
        Ev::Start(path, attrs) => match path.last().map(String::as_str).unwrap_or("") {
            "TrainingCenterDatabase" => saw_root = true,
            "Activity" => {
                p = Parsed::default();
                lap_starts.clear();
                hr_sum = (0.0, 0.0);
                in_activity = true;
                let s = attrs
                    .iter()
                    .find(|(k, _)| k == "Sport")
                    .map(|(_, v)| v.clone());
                p.sport = s.as_deref().and_then(sport_from_name);
                p.device.sport = s;
            }
            "Lap" => {
                if let Some(s) = attrs
                    .iter()
                    .find(|(k, _)| k == "StartTime")
                    .and_then(|(_, v)| Timestamp::parse_rfc3339(v))
                {
                    lap_starts.push(s);
                }
                lap_secs = 0.0;
            }
            "Trackpoint" => {
                t = None;
                (lat, lon) = (None, None);
                point.clear();
            }
            _ => {}
        },
        Ev::Text(path, text) => {
            let leaf = path.last().map(String::as_str).unwrap_or("");
            let v = num(text);
            if path.iter().any(|p| p == "Trackpoint") {
                match leaf {
                    "Time" => t = Timestamp::parse_rfc3339(text.trim()),
                    "LatitudeDegrees" => lat = v,
                    "LongitudeDegrees" => lon = v,
                    "AltitudeMeters" => point.extend(v.map(|m| Reading::Altitude {
                        m,
                        source: AltitudeSource::Gps,
                    })),
                    "DistanceMeters" => point.extend(v.map(|m| Reading::Distance { m })),
                    "Value" if ends_with(path, &["HeartRateBpm", "Value"]) => {
                        point.extend(v.map(|bpm| Reading::HeartRate { bpm }));
                    }
                    "Cadence" | "RunCadence" => point.extend(v.map(|rpm| Reading::Cadence { rpm })),
                    "Speed" => point.extend(v.map(|mps| Reading::Speed { mps })),
                    "Watts" => point.extend(v.map(|w| Reading::Power { w })),
                    _ => {}
                }
            } else if path.iter().any(|p| p == "Lap") {
                let d = &mut p.device;
                match leaf {
                    "TotalTimeSeconds" => {
                        lap_secs = v.unwrap_or(0.0);
                        add(&mut d.timer_s, v);
                    }
                    "DistanceMeters" => add(&mut d.distance_m, v),
                    "Calories" => add(&mut d.calories_kcal, v),
                    "Value" if ends_with(path, &["AverageHeartRateBpm", "Value"]) => {
                        if let Some(v) = v {
                            hr_sum.0 += v * lap_secs;
                            hr_sum.1 += lap_secs;
                        }
                    }
                    "Value" if ends_with(path, &["MaximumHeartRateBpm", "Value"]) => {
                        d.max_hr = match (d.max_hr, v) {
                            (Some(a), Some(b)) => Some(a.max(b)),
                            (a, b) => a.or(b),
                        };
                    }
                    _ => {}
                }
            }
        }
        Ev::End(path) => {
            if path.last().map(String::as_str) == Some("Activity") && in_activity {
                in_activity = false;
                if hr_sum.1 > 0.0 {
                    p.device.avg_hr = Some(hr_sum.0 / hr_sum.1);
                }
                // A lap boundary is where the next lap starts.
                p.laps = lap_starts.iter().skip(1).copied().collect();
                activities.push(std::mem::take(&mut p));
            }
            if path.last().map(String::as_str) == Some("Trackpoint") && in_activity {
                if let Some(t) = t {
                    if let (Some(lat), Some(lon)) = (lat, lon) {
                        p.samples.push(Sample::new(
                            t,
                            Reading::Position {
                                lat,
                                lon,
                                accuracy_m: None,
                            },
                        ));
                    }
                    p.samples.extend(point.iter().map(|r| Sample::new(t, *r)));
                }
            }
        }
    })?;
    if !saw_root {
        return Err(bad("not a TCX document (no <TrainingCenterDatabase> root)"));
    }
    Ok(activities)
}

/// Imports a GPX or TCX document: one session per track (GPX `<trk>`) or activity (TCX
/// `<Activity>`) that has points, in file order. `key` names the file for stable workout ids.
///
/// The same as [`import_with_warnings`] without the warnings.
pub fn import(
    format: Format,
    bytes: &[u8],
    overrides: Profile,
    key: &str,
) -> Result<Vec<ImportedSession>, FitError> {
    import_with_warnings(format, bytes, overrides, key).map(|(s, _)| s)
}

/// Imports a GPX or TCX document, with what a person should know about it: tracks without
/// points, and samples past a workout's 24-hour limit (not used). `key` names the file for
/// stable workout ids (the first session's is the one a single-track file always had).
pub fn import_with_warnings(
    format: Format,
    bytes: &[u8],
    overrides: Profile,
    key: &str,
) -> Result<(Vec<ImportedSession>, Vec<String>), FitError> {
    let xml = std::str::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8 text: {e}")))?;
    let parsed = match format {
        Format::Gpx => parse_gpx(xml)?,
        Format::Tcx => parse_tcx(xml)?,
    };
    let (what, none) = match format {
        Format::Gpx => ("track", "gpx without track points"),
        Format::Tcx => ("activity", "tcx without track points"),
    };
    let mut sessions = vec![];
    let mut after_limit = vec![];
    let mut empty = vec![];
    for (i, p) in parsed.into_iter().enumerate() {
        if p.samples.is_empty() {
            empty.push(i.to_string());
            continue;
        }
        let index = sessions.len();
        let (session, past) = replay(p, index, overrides, key)?;
        if past.n > 0 {
            after_limit.push((index, past));
        }
        sessions.push(session);
    }
    if sessions.is_empty() {
        return Err(FitError::NoActivity(none.into()));
    }
    let mut warnings = vec![];
    if !after_limit.is_empty() {
        let spans: Vec<String> = after_limit
            .iter()
            .map(|(i, span)| {
                if sessions.len() == 1 {
                    span.describe()
                } else {
                    format!("{} in session {i}", span.describe())
                }
            })
            .collect();
        warnings.push(format!(
            "the 24-hour limit of a workout was reached; the samples after it were not used: {}",
            spans.join("; ")
        ));
    }
    if !empty.is_empty() {
        warnings.push(format!(
            "{} {what}(s) without points were skipped (number {} in the file, from 0)",
            empty.len(),
            empty.join(", ")
        ));
    }
    Ok((sessions, warnings))
}

/// Replays one track or activity through the workout aggregate. Returns the session and the
/// samples past the 24-hour limit.
fn replay(
    mut parsed: Parsed,
    index: usize,
    overrides: Profile,
    key: &str,
) -> Result<(ImportedSession, Span), FitError> {
    parsed.samples.sort_by_key(|s| s.t);
    let (Some(first), Some(last)) = (
        parsed.samples.first().map(|s| s.t),
        parsed.samples.last().map(|s| s.t),
    ) else {
        return Err(bad("empty workout"));
    };
    let id = WorkoutId::derived(key, &index.to_string());
    let mut w = Workout::new(
        id,
        parsed.sport,
        overrides.resolve(),
        WorkoutConfig::import(),
    );
    w.start(first).map_err(|e| bad(e.to_string()))?;
    let mut laps = parsed.laps.iter().peekable();
    let mut samples = Vec::with_capacity(parsed.samples.len());
    // A sample at or past the 24-hour limit completes the workout at the limit (RULES.md):
    // that sample and every later one are not used, and are counted in a warning.
    let mut after_limit = Span::default();
    for s in &parsed.samples {
        if after_limit.n > 0 {
            after_limit.add(s.t);
            continue;
        }
        while let Some(l) = laps.next_if(|l| **l <= s.t) {
            let _ = w.lap(*l);
        }
        // Other errors cannot happen while the workout runs; a sample's verdict (rejected,
        // flagged) is in the workout's validation report.
        if let Err(WorkoutError::TimeLimitReached) = w.record(*s) {
            after_limit.add(s.t);
        }
        samples.append(&mut w.take_samples());
    }
    let (summary, not_recorded) = w
        .complete_or_preview(last)
        .ok_or_else(|| bad("empty workout"))?;
    samples.append(&mut w.take_samples());
    let session = ImportedSession {
        index,
        summary,
        not_recorded,
        device: parsed.device,
        samples,
        events: w.take_events(),
        profile: overrides,
    };
    Ok((session, after_limit))
}

// --- export ------------------------------------------------------------------------------------

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// Samples grouped by timestamp, in time order.
fn by_time(samples: &[Sample]) -> Vec<(Timestamp, Vec<Reading>)> {
    let mut sorted: Vec<&Sample> = samples.iter().collect();
    sorted.sort_by_key(|s| s.t);
    let mut out: Vec<(Timestamp, Vec<Reading>)> = vec![];
    for s in sorted {
        match out.last_mut() {
            Some((t, v)) if *t == s.t => v.push(s.reading),
            _ => out.push((s.t, vec![s.reading])),
        }
    }
    out
}

fn find<T>(rs: &[Reading], f: impl Fn(&Reading) -> Option<T>) -> Option<T> {
    rs.iter().find_map(f)
}

pub fn export(
    format: Format,
    summary: &WorkoutSummary,
    samples: &[Sample],
) -> Result<String, FitError> {
    match format {
        Format::Gpx => export_gpx(summary, samples),
        Format::Tcx => Ok(export_tcx(summary, samples)),
    }
}

fn export_gpx(summary: &WorkoutSummary, samples: &[Sample]) -> Result<String, FitError> {
    if !samples.iter().any(|s| s.channel() == Channel::Position) {
        return Err(bad(
            "this workout has no GPS track; GPX needs one (export TCX instead)",
        ));
    }
    let mut out = String::with_capacity(samples.len() * 80);
    out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="FitEdge" xmlns="http://www.topografix.com/GPX/1/1" xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v1">
"#);
    out.push_str(&format!(
        "  <metadata><time>{}</time></metadata>\n  <trk>\n",
        summary.start_time
    ));
    if let Some(t) = &summary.title {
        out.push_str(&format!("    <name>{}</name>\n", esc(t)));
    }
    out.push_str(&format!(
        "    <type>{}</type>\n    <trkseg>\n",
        summary.metrics.sport
    ));
    // Values without a position at their instant ride along on the next track point.
    let mut pending: Vec<Reading> = vec![];
    for (t, rs) in by_time(samples) {
        let Some((lat, lon)) = find(&rs, |r| match *r {
            Reading::Position { lat, lon, .. } => Some((lat, lon)),
            _ => None,
        }) else {
            pending.extend(rs);
            continue;
        };
        let mut all = rs.clone();
        all.extend(
            pending
                .drain(..)
                .filter(|p| !rs.iter().any(|r| r.channel() == p.channel())),
        );
        out.push_str(&format!("      <trkpt lat=\"{lat:.7}\" lon=\"{lon:.7}\">"));
        if let Some(m) = find(&all, |r| match *r {
            Reading::Altitude { m, .. } => Some(m),
            _ => None,
        }) {
            out.push_str(&format!("<ele>{m:.2}</ele>"));
        }
        out.push_str(&format!("<time>{t}</time>"));
        let ext: String = all
            .iter()
            .filter_map(|r| match *r {
                Reading::HeartRate { bpm } => {
                    Some(format!("<gpxtpx:hr>{}</gpxtpx:hr>", bpm.round()))
                }
                Reading::Cadence { rpm } => {
                    Some(format!("<gpxtpx:cad>{}</gpxtpx:cad>", rpm.round()))
                }
                Reading::Temperature { c } => Some(format!("<gpxtpx:atemp>{c:.1}</gpxtpx:atemp>")),
                _ => None,
            })
            .collect();
        let power = find(&all, |r| match *r {
            Reading::Power { w } => Some(w),
            _ => None,
        });
        if !ext.is_empty() || power.is_some() {
            out.push_str("<extensions>");
            if let Some(w) = power {
                out.push_str(&format!("<power>{}</power>", w.round()));
            }
            if !ext.is_empty() {
                out.push_str(&format!(
                    "<gpxtpx:TrackPointExtension>{ext}</gpxtpx:TrackPointExtension>"
                ));
            }
            out.push_str("</extensions>");
        }
        out.push_str("</trkpt>\n");
    }
    out.push_str("    </trkseg>\n  </trk>\n</gpx>\n");
    Ok(out)
}

fn tcx_sport(s: Sport) -> &'static str {
    match s {
        Sport::Running | Sport::Walking | Sport::Hiking | Sport::Transition => "Running",
        Sport::Cycling => "Biking",
        _ => "Other",
    }
}

fn export_tcx(summary: &WorkoutSummary, samples: &[Sample]) -> String {
    let mut out = String::with_capacity(samples.len() * 100);
    out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>
<TrainingCenterDatabase xmlns="http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2" xmlns:ns3="http://www.garmin.com/xmlschemas/ActivityExtension/v2">
  <Activities>
"#);
    out.push_str(&format!(
        "    <Activity Sport=\"{}\">\n      <Id>{}</Id>\n",
        tcx_sport(summary.metrics.sport),
        summary.start_time
    ));
    let points = by_time(samples);
    let laps: Vec<(Timestamp, Timestamp, f64, f64)> = if summary.laps.is_empty() {
        vec![(
            summary.start_time,
            summary.end_time,
            summary.metrics.timer_s,
            summary.metrics.distance_m.unwrap_or(0.0),
        )]
    } else {
        summary
            .laps
            .iter()
            .map(|l| (l.start_time, l.end_time, l.timer_s, l.distance_m))
            .collect()
    };
    let n_laps = laps.len();
    for (i, (start, end, secs, dist)) in laps.into_iter().enumerate() {
        out.push_str(&format!(
            "      <Lap StartTime=\"{start}\">\n        <TotalTimeSeconds>{secs:.3}</TotalTimeSeconds>\n        <DistanceMeters>{dist:.2}</DistanceMeters>\n        <Calories>0</Calories>\n        <Intensity>Active</Intensity>\n        <TriggerMethod>Manual</TriggerMethod>\n        <Track>\n"
        ));
        let last = i + 1 == n_laps;
        for (t, rs) in points
            .iter()
            .filter(|(t, _)| *t >= start && (*t < end || last))
        {
            out.push_str(&format!("          <Trackpoint><Time>{t}</Time>"));
            if let Some((lat, lon)) = find(rs, |r| match *r {
                Reading::Position { lat, lon, .. } => Some((lat, lon)),
                _ => None,
            }) {
                out.push_str(&format!(
                    "<Position><LatitudeDegrees>{lat:.7}</LatitudeDegrees><LongitudeDegrees>{lon:.7}</LongitudeDegrees></Position>"
                ));
            }
            for r in rs {
                match *r {
                    Reading::Altitude { m, .. } => {
                        out.push_str(&format!("<AltitudeMeters>{m:.2}</AltitudeMeters>"))
                    }
                    Reading::Distance { m } => {
                        out.push_str(&format!("<DistanceMeters>{m:.2}</DistanceMeters>"))
                    }
                    Reading::HeartRate { bpm } => out.push_str(&format!(
                        "<HeartRateBpm><Value>{}</Value></HeartRateBpm>",
                        bpm.round()
                    )),
                    Reading::Cadence { rpm } => {
                        out.push_str(&format!("<Cadence>{}</Cadence>", rpm.round()))
                    }
                    _ => {}
                }
            }
            let speed = find(rs, |r| match *r {
                Reading::Speed { mps } => Some(mps),
                _ => None,
            });
            let watts = find(rs, |r| match *r {
                Reading::Power { w } => Some(w),
                _ => None,
            });
            if speed.is_some() || watts.is_some() {
                out.push_str("<Extensions><ns3:TPX>");
                if let Some(v) = speed {
                    out.push_str(&format!("<ns3:Speed>{v:.3}</ns3:Speed>"));
                }
                if let Some(w) = watts {
                    out.push_str(&format!("<ns3:Watts>{}</ns3:Watts>", w.round()));
                }
                out.push_str("</ns3:TPX></Extensions>");
            }
            out.push_str("</Trackpoint>\n");
        }
        out.push_str("        </Track>\n      </Lap>\n");
    }
    out.push_str("    </Activity>\n  </Activities>\n</TrainingCenterDatabase>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPX: &str = r#"<?xml version="1.0"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1" xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v1">
 <trk><type>running</type><trkseg>
  <trkpt lat="45.0" lon="7.0"><ele>100</ele><time>2024-05-01T10:00:00Z</time><extensions><gpxtpx:TrackPointExtension><gpxtpx:hr>120</gpxtpx:hr></gpxtpx:TrackPointExtension></extensions></trkpt>
  <trkpt lat="45.0003" lon="7.0"><ele>101</ele><time>2024-05-01T10:00:10Z</time><extensions><gpxtpx:TrackPointExtension><gpxtpx:hr>130</gpxtpx:hr></gpxtpx:TrackPointExtension></extensions></trkpt>
 </trkseg></trk>
</gpx>"#;

    #[test]
    fn gpx_points_become_samples() {
        let tracks = parse_gpx(GPX).unwrap();
        assert_eq!(tracks.len(), 1);
        let p = &tracks[0];
        assert_eq!(p.sport, Some(Sport::Running));
        assert_eq!(p.samples.len(), 6);
        assert!(p
            .samples
            .iter()
            .any(|s| s.reading == Reading::HeartRate { bpm: 130.0 }));
    }

    /// 2024-05-01T00:00:00Z plus `min` minutes.
    fn minute(min: i64) -> String {
        Timestamp(1_714_521_600_000 + min * 60_000).to_rfc3339()
    }

    /// One heart-rate point a minute for 25 hours (minutes 0 ..= 1500).
    fn gpx_25_hours() -> String {
        let mut x = String::from(
            r#"<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1" xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v1"><trk><type>hiking</type><trkseg>"#,
        );
        for m in 0..=1500 {
            x.push_str(&format!(
                r#"<trkpt lat="45.0" lon="7.0"><time>{}</time><extensions><gpxtpx:TrackPointExtension><gpxtpx:hr>100</gpxtpx:hr></gpxtpx:TrackPointExtension></extensions></trkpt>"#,
                minute(m)
            ));
        }
        x.push_str("</trkseg></trk></gpx>");
        x
    }

    fn tcx_25_hours() -> String {
        let mut x = format!(
            r#"<TrainingCenterDatabase xmlns="http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2"><Activities><Activity Sport="Running"><Id>{0}</Id><Lap StartTime="{0}"><Track>"#,
            minute(0)
        );
        for m in 0..=1500 {
            x.push_str(&format!(
                "<Trackpoint><Time>{}</Time><HeartRateBpm><Value>100</Value></HeartRateBpm></Trackpoint>",
                minute(m)
            ));
        }
        x.push_str("</Track></Lap></Activity></Activities></TrainingCenterDatabase>");
        x
    }

    /// Before the fix the samples the workout refused at the limit, and all after them, were
    /// dropped without a word (the import had no warnings).
    #[test]
    fn samples_past_the_24_hour_limit_are_counted_in_a_warning() {
        // Minutes 1440 ..= 1500 are at or past the limit: 61 points, two samples each in the
        // GPX (position, heart rate), one in the TCX (heart rate).
        for (format, doc, per_point) in [
            (Format::Gpx, gpx_25_hours(), 2),
            (Format::Tcx, tcx_25_hours(), 1),
        ] {
            let (sessions, warnings) =
                import_with_warnings(format, doc.as_bytes(), Profile::default(), "k").unwrap();
            let session = &sessions[0];
            assert_eq!(
                warnings,
                vec![format!(
                    "the 24-hour limit of a workout was reached; the samples after it were not \
                     used: {} sample(s) (from {} to {})",
                    61 * per_point,
                    minute(1440),
                    minute(1500)
                )],
                "{format:?}"
            );
            assert_eq!(session.samples.len(), 1440 * per_point, "{format:?}");
            // And the workout is recorded, stopped at the limit.
            assert_eq!(session.not_recorded, None, "{format:?}");
            assert_eq!(
                session.summary.metrics.elapsed_s,
                24.0 * 3600.0,
                "{format:?}"
            );
        }
        // A file within the limit has no warning.
        let (_, warnings) =
            import_with_warnings(Format::Gpx, GPX.as_bytes(), Profile::default(), "k").unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    /// Before the fix every track's points went into one workout: two runs of a morning and an
    /// evening became one 10-hour workout.
    #[test]
    fn each_track_or_activity_is_its_own_workout() {
        let trk = |sport: &str, from: i64| {
            let mut x = format!("<trk><type>{sport}</type><trkseg>");
            for m in 0..30 {
                x.push_str(&format!(
                    r#"<trkpt lat="{}" lon="7.0"><time>{}</time></trkpt>"#,
                    45.0 + m as f64 * 0.002,
                    minute(from + m)
                ));
            }
            x + "</trkseg></trk>"
        };
        let gpx = format!(
            r#"<gpx version="1.1" creator="t" xmlns="http://www.topografix.com/GPX/1/1">{}<trk><type>walking</type></trk>{}</gpx>"#,
            trk("running", 0),
            trk("cycling", 600)
        );
        let act = |sport: &str, from: i64| {
            let mut x = format!(
                r#"<Activity Sport="{sport}"><Id>{0}</Id><Lap StartTime="{0}"><TotalTimeSeconds>1740</TotalTimeSeconds><Track>"#,
                minute(from)
            );
            for m in 0..30 {
                x.push_str(&format!(
                    "<Trackpoint><Time>{}</Time><HeartRateBpm><Value>{}</Value></HeartRateBpm></Trackpoint>",
                    minute(from + m),
                    if from == 0 { 120 } else { 150 }
                ));
            }
            x + "</Track></Lap></Activity>"
        };
        let tcx = format!(
            r#"<TrainingCenterDatabase xmlns="http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2"><Activities>{}{}</Activities></TrainingCenterDatabase>"#,
            act("Running", 0),
            act("Biking", 600)
        );
        for (format, doc) in [(Format::Gpx, gpx), (Format::Tcx, tcx)] {
            let (sessions, warnings) =
                import_with_warnings(format, doc.as_bytes(), Profile::default(), "k").unwrap();
            assert_eq!(sessions.len(), 2, "{format:?}");
            let sports: Vec<Sport> = sessions.iter().map(|s| s.summary.metrics.sport).collect();
            assert_eq!(sports, [Sport::Running, Sport::Cycling], "{format:?}");
            for (i, s) in sessions.iter().enumerate() {
                assert_eq!(s.index, i);
                assert_eq!(s.summary.metrics.elapsed_s, 29.0 * 60.0, "{format:?} #{i}");
                assert_eq!(s.summary.start_time.to_rfc3339(), minute(600 * i as i64));
            }
            assert_ne!(sessions[0].summary.id, sessions[1].summary.id);
            // The first keeps the id a single-track file always had (re-imports find it).
            assert_eq!(sessions[0].summary.id, WorkoutId::derived("k", "0"));
            if format == Format::Gpx {
                assert_eq!(
                    warnings,
                    ["1 track(s) without points were skipped (number 1 in the file, from 0)"]
                );
            } else {
                assert!(warnings.is_empty(), "{warnings:?}");
                let hr: Vec<Option<f64>> = sessions
                    .iter()
                    .map(|s| s.summary.metrics.avg_hr_bpm)
                    .collect();
                assert_eq!(hr, [Some(120.0), Some(150.0)]);
                assert_eq!(sessions[1].device.timer_s, Some(1740.0));
            }
        }
    }

    #[test]
    fn malformed_documents_are_refused_with_a_position() {
        let e =
            parse_gpx("<gpx><trk><trkseg><trkpt lat=\"1\" lon=\"2\"></trkseg></gpx>").unwrap_err();
        assert!(e.to_string().contains("byte"), "{e}");
        assert!(parse_gpx("<kml></kml>").is_err());
        assert!(parse_tcx("<gpx></gpx>").is_err());
        assert!(import(Format::Gpx, &[0xff, 0xfe], Profile::default(), "k").is_err());
        assert!(matches!(
            import(
                Format::Gpx,
                b"<gpx version=\"1.1\"></gpx>",
                Profile::default(),
                "k"
            ),
            Err(FitError::NoActivity(_))
        ));
    }
}
