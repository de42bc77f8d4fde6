//! Workouts in the local database: samples as sealed, compressed columnar chunks; summaries;
//! personal records; and the read models of RULES.md (WorkoutSummary, WorkoutDetails,
//! WorkoutList, WorkoutStats, WorkoutRouteMap), streaks. The connection layer (one writer,
//! readers, pragmas, migrations) is [`crate::db`].

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::crypto::StorageKey;
pub use crate::db::{Store, SCHEMA_VERSION};
use crate::error::{Error, Result};
use crate::event::DomainEvent;
use crate::fit::{DeviceTotals, ImportedSession};
use crate::records::{self, PersonalRecord};
use crate::route::RouteMap;
use crate::sample::{Channel, Sample};
use crate::sport::Sport;
use crate::time::Timestamp;
use crate::workout::WorkoutSummary;

/// Samples per chunk once a workout is complete (about an hour of a 1 Hz channel).
pub const CHUNK_SAMPLES: usize = 4096;

/// What saving one imported session did.
#[derive(Debug, Clone, PartialEq)]
pub enum Saved {
    Stored {
        events: Vec<DomainEvent>,
    },
    /// The same session of the same file is already in the database.
    AlreadyImported,
    /// Not a recordable workout (e.g. under one minute); nothing stored.
    NotRecorded,
}

// --- chunks ------------------------------------------------------------------------------------

/// The associated data a sealed chunk is bound to: its workout, channel and sequence number.
/// Another device of the user opens a received chunk with the same (the workout document's
/// chunk reference carries the sequence number, see [`crate::sync::docs`]).
pub(crate) fn chunk_aad(workout: &str, channel: Channel, seq: i64) -> Vec<u8> {
    format!("fitedge/chunk/v1/{workout}/{}/{seq}", channel.as_str()).into_bytes()
}

/// Writes one chunk; health channels are sealed with the storage key.
pub(crate) fn put_chunk(
    tx: &Transaction<'_>,
    key: Option<&StorageKey>,
    workout: &str,
    channel: Channel,
    seq: i64,
    samples: &[Sample],
) -> Result<()> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Ok(());
    };
    let plain = codec::encode(channel, samples);
    let (sealed, data) = if channel.is_health() {
        let key = key.ok_or(Error::KeyRequired)?;
        (true, key.seal(&chunk_aad(workout, channel, seq), &plain)?)
    } else {
        (false, plain)
    };
    tx.prepare_cached(
        "INSERT OR REPLACE INTO sample_chunks
            (workout_id, channel, seq, t_first, t_last, count, sealed, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        workout,
        channel.index() as i64,
        seq,
        first.t.0,
        last.t.0,
        samples.len() as i64,
        sealed,
        data
    ])?;
    Ok(())
}

/// Writes a workout's samples as full-size chunks, channel by channel, from sequence `seq0`.
pub(crate) fn put_samples(
    tx: &Transaction<'_>,
    key: Option<&StorageKey>,
    workout: &str,
    samples: &[Sample],
    seq0: i64,
) -> Result<()> {
    for ch in Channel::ALL {
        let mine: Vec<Sample> = samples
            .iter()
            .filter(|s| s.channel() == ch)
            .copied()
            .collect();
        for (i, part) in mine.chunks(CHUNK_SAMPLES).enumerate() {
            put_chunk(tx, key, workout, ch, seq0 + i as i64, part)?;
        }
    }
    Ok(())
}

fn open_chunk(
    key: Option<&StorageKey>,
    workout: &str,
    ch: Channel,
    seq: i64,
    sealed: bool,
    data: Vec<u8>,
) -> Result<Vec<Sample>> {
    let plain = if sealed {
        let key = key.ok_or(Error::KeyRequired)?;
        key.open(&chunk_aad(workout, ch, seq), &data)
            .map_err(|e| match e {
                crate::crypto::CryptoError::Authentication => Error::WrongKey,
                e => Error::Crypto(e),
            })?
    } else {
        data
    };
    let (got, samples) = codec::decode(&plain)?;
    if got != ch {
        return Err(Error::Corrupt(format!("chunk of {ch} holds {got}")));
    }
    Ok(samples)
}

/// The samples of one channel's chunks with sequence numbers in `from..to`, in order.
pub(crate) fn get_chunk_range(
    conn: &Connection,
    key: Option<&StorageKey>,
    workout: &str,
    ch: Channel,
    from: i64,
    to: i64,
) -> Result<Vec<Sample>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, sealed, data FROM sample_chunks
         WHERE workout_id = ?1 AND channel = ?2 AND seq >= ?3 AND seq < ?4 ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![workout, ch.index() as i64, from, to], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, bool>(1)?,
            r.get::<_, Vec<u8>>(2)?,
        ))
    })?;
    let mut out = vec![];
    for row in rows {
        let (seq, sealed, data) = row?;
        out.append(&mut open_chunk(key, workout, ch, seq, sealed, data)?);
    }
    Ok(out)
}

/// Reads and opens chunks of a workout, in time order. `channels` empty means all.
pub(crate) fn get_samples(
    conn: &Connection,
    key: Option<&StorageKey>,
    workout: &str,
    channels: &[Channel],
) -> Result<Vec<Sample>> {
    let mut stmt = conn.prepare_cached(
        "SELECT channel, seq, sealed, data FROM sample_chunks WHERE workout_id = ?1
         ORDER BY channel, seq",
    )?;
    let rows = stmt.query_map([workout], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, bool>(2)?,
            r.get::<_, Vec<u8>>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (code, seq, sealed, data) = row?;
        let ch = *Channel::ALL
            .get(code as usize)
            .ok_or_else(|| Error::Corrupt(format!("unknown channel code {code}")))?;
        if !channels.is_empty() && !channels.contains(&ch) {
            continue;
        }
        out.append(&mut open_chunk(key, workout, ch, seq, sealed, data)?);
    }
    out.sort_by_key(|s| s.t);
    Ok(out)
}

// --- the v1 -> v2 data step: per-channel blobs become sealed chunks ----------------------------

pub(crate) fn migrate_v1_samples(tx: &Transaction<'_>, key: Option<&StorageKey>) -> Result<()> {
    let rows: Vec<(String, String, Vec<u8>)> = {
        let mut stmt = tx.prepare("SELECT workout_id, channel, data FROM samples")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    let mut by_workout: std::collections::BTreeMap<String, Vec<Sample>> = Default::default();
    for (workout, channel, data) in rows {
        let ch = Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == channel)
            .ok_or_else(|| Error::Corrupt(format!("unknown channel {channel}")))?;
        v1::decode_channel(ch, &data, by_workout.entry(workout).or_default())?;
    }
    for (workout, samples) in &by_workout {
        put_samples(tx, key, workout, samples, 0)?;
    }
    tx.execute_batch("DROP TABLE samples;")?;
    // Fill the new aggregate columns from the summaries.
    let summaries: Vec<(String, String)> = {
        let mut stmt = tx.prepare("SELECT workout_id, summary_json FROM workout_docs")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    for (id, json) in summaries {
        let s: WorkoutSummary = serde_json::from_str(&json)
            .map_err(|e| Error::Corrupt(format!("workout {id}: {e}")))?;
        tx.execute(
            "UPDATE workouts SET elapsed_s = ?2, moving_s = ?3, calories_kcal = ?4, ascent_m = ?5,
                avg_hr = ?6, title = ?7 WHERE id = ?1",
            params![
                id,
                s.metrics.elapsed_s,
                s.metrics.moving_s,
                s.metrics.calories_kcal,
                s.metrics.ascent_m,
                s.metrics.avg_hr_bpm,
                s.title
            ],
        )?;
    }
    Ok(())
}

/// The v1 sample encoding, kept only to migrate v1 databases.
pub(crate) mod v1 {
    use crate::codec::get_varint;
    use crate::error::{Error, Result};
    use crate::sample::{AltitudeSource, Channel, Reading, Sample};
    use crate::time::Timestamp;

    fn get_f64(data: &[u8], pos: &mut usize) -> Option<f64> {
        let bytes: [u8; 8] = data.get(*pos..*pos + 8)?.try_into().ok()?;
        *pos += 8;
        Some(f64::from_le_bytes(bytes))
    }

    #[cfg(test)]
    pub fn encode_channel(ch: Channel, samples: &[Sample]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut last = 0i64;
        for s in samples.iter().filter(|s| s.channel() == ch) {
            crate::codec::put_varint(&mut out, s.t.0 - last);
            last = s.t.0;
            let mut f = |v: f64| out.extend_from_slice(&v.to_le_bytes());
            match s.reading {
                Reading::Position {
                    lat,
                    lon,
                    accuracy_m,
                } => {
                    f(lat);
                    f(lon);
                    f(accuracy_m.unwrap_or(f64::NAN));
                }
                Reading::Altitude { m, source } => {
                    f(m);
                    out.push(u8::from(source == AltitudeSource::Barometric));
                }
                Reading::HeartRate { bpm: v }
                | Reading::RrInterval { ms: v }
                | Reading::Speed { mps: v }
                | Reading::Distance { m: v }
                | Reading::Cadence { rpm: v }
                | Reading::Power { w: v }
                | Reading::Temperature { c: v }
                | Reading::Spo2 { pct: v } => f(v),
            }
        }
        out
    }

    pub fn decode_channel(ch: Channel, data: &[u8], out: &mut Vec<Sample>) -> Result<()> {
        let corrupt = || Error::Corrupt(format!("{ch} samples are truncated"));
        let mut pos = 0;
        let mut t = 0i64;
        while pos < data.len() {
            t += get_varint(data, &mut pos).map_err(|_| corrupt())?;
            let mut f = || get_f64(data, &mut pos).ok_or_else(corrupt);
            let reading = match ch {
                Channel::Position => {
                    let (lat, lon, acc) = (f()?, f()?, f()?);
                    Reading::Position {
                        lat,
                        lon,
                        accuracy_m: (!acc.is_nan()).then_some(acc),
                    }
                }
                Channel::Altitude => {
                    let m = f()?;
                    let source = match data.get(pos) {
                        Some(0) => AltitudeSource::Gps,
                        Some(1) => AltitudeSource::Barometric,
                        _ => return Err(corrupt()),
                    };
                    pos += 1;
                    Reading::Altitude { m, source }
                }
                Channel::HeartRate => Reading::HeartRate { bpm: f()? },
                Channel::RrInterval => Reading::RrInterval { ms: f()? },
                Channel::Speed => Reading::Speed { mps: f()? },
                Channel::Distance => Reading::Distance { m: f()? },
                Channel::Cadence => Reading::Cadence { rpm: f()? },
                Channel::Power => Reading::Power { w: f()? },
                Channel::Temperature => Reading::Temperature { c: f()? },
                Channel::Spo2 => Reading::Spo2 { pct: f()? },
            };
            out.push(Sample::new(Timestamp(t), reading));
        }
        Ok(())
    }
}

// --- workouts ----------------------------------------------------------------------------------

pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Corrupt(e.to_string()))
}

/// Inserts a completed workout's row and makes its sync document; the caller writes the
/// samples first (the document references the chunks).
pub(crate) fn insert_workout_row(
    tx: &Transaction<'_>,
    s: &WorkoutSummary,
    device: Option<&DeviceTotals>,
    source: Option<(&str, &str, usize)>,
    now: Timestamp,
) -> Result<Vec<DomainEvent>> {
    let m = &s.metrics;
    tx.prepare_cached(
        "INSERT INTO workouts (id, sport, start_time, end_time, timer_s, distance_m, source_file,
            source_hash, source_session, created_at, status, elapsed_s, moving_s, calories_kcal,
            ascent_m, avg_hr, title)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'completed', ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        s.id.0,
        m.sport.as_str(),
        s.start_time.0,
        s.end_time.0,
        m.timer_s,
        m.distance_m,
        source.map(|x| x.0),
        source.map(|x| x.1),
        source.map(|x| x.2 as i64),
        now.0,
        m.elapsed_s,
        m.moving_s,
        m.calories_kcal,
        m.ascent_m,
        m.avg_hr_bpm,
        s.title,
    ])?;
    tx.prepare_cached(
        "INSERT INTO workout_docs (workout_id, summary_json, device_json) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![
        s.id.0,
        to_json(s)?,
        device.map(to_json).transpose()?
    ])?;
    let events = store_records(tx, s)?;
    crate::sync::local::create_workout_doc(tx, s, now)?;
    Ok(events)
}

/// Judges a stored workout's efforts against the current personal records and keeps the ones
/// it beats; returns the events.
pub(crate) fn store_records(tx: &Transaction<'_>, s: &WorkoutSummary) -> Result<Vec<DomainEvent>> {
    let current = current_records(tx)?;
    let (new, events) = records::new_records(s, &current);
    for (r, previous) in new {
        tx.execute(
            "INSERT INTO personal_records (sport, record, value, workout_id, achieved_at, previous)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                r.sport.as_str(),
                r.record,
                r.value,
                r.workout_id,
                r.achieved_at.0,
                previous
            ],
        )?;
    }
    Ok(events)
}

fn current_records(conn: &Connection) -> Result<Vec<PersonalRecord>> {
    // The current record is the latest one set for each (sport, record): a later row exists
    // only because it beat the earlier ones.
    query_records(
        conn,
        "SELECT sport, record, value, workout_id, achieved_at FROM personal_records p
         WHERE achieved_at = (SELECT MAX(achieved_at) FROM personal_records q
                              WHERE q.sport = p.sport AND q.record = p.record)
         ORDER BY sport, record",
        [],
    )
}

fn query_records<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    p: P,
) -> Result<Vec<PersonalRecord>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(p, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, f64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    let mut out = vec![];
    for row in rows {
        let (sport, record, value, workout_id, at) = row?;
        out.push(PersonalRecord {
            sport: sport.parse().map_err(Error::Corrupt)?,
            record,
            value,
            workout_id,
            achieved_at: Timestamp(at),
        });
    }
    Ok(out)
}

/// One row of the history list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkoutListItem {
    pub id: String,
    pub sport: Sport,
    pub start_time: Timestamp,
    pub title: Option<String>,
    pub elapsed_s: f64,
    pub timer_s: f64,
    pub distance_m: Option<f64>,
    pub calories_kcal: f64,
    pub ascent_m: Option<f64>,
    pub avg_hr: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListFilter {
    pub sport: Option<Sport>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

/// Where the next page starts: after this (start_time, id), newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    pub start_time: Timestamp,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub items: Vec<WorkoutListItem>,
    pub next: Option<Cursor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Week,
    Month,
    Year,
}

impl std::str::FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "week" => Ok(Period::Week),
            "month" => Ok(Period::Month),
            "year" => Ok(Period::Year),
            _ => Err(format!(
                "unknown period {s:?}; expected week, month or year"
            )),
        }
    }
}

/// RULES.md: statistics need at least 5 workouts.
pub const MIN_WORKOUTS_FOR_STATS: u64 = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodStats {
    /// "2026-W46" (ISO-like week, Monday first), "2026-11" or "2026".
    pub period: String,
    pub workouts: u64,
    pub distance_m: f64,
    pub timer_s: f64,
    pub moving_s: f64,
    pub calories_kcal: f64,
    pub ascent_m: f64,
    pub avg_distance_m: f64,
    pub avg_timer_s: f64,
    /// Seconds per km over the period's moving time.
    pub avg_pace_s_per_km: Option<f64>,
    pub avg_hr: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum WorkoutStats {
    NotEnoughData {
        workouts: u64,
        needed: u64,
    },
    Ok {
        workouts: u64,
        periods: Vec<PeriodStats>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Streaks {
    /// Consecutive days with a workout, ending today or yesterday.
    pub current_days: u32,
    pub longest_days: u32,
    pub longest_ended: Option<String>,
}

/// Everything about one workout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkoutDetails {
    pub summary: WorkoutSummary,
    pub device: Option<DeviceTotals>,
    pub gear_id: Option<String>,
    pub samples: Vec<Sample>,
}

impl Store {
    /// Stores every recordable session of one imported file in one transaction: all of them or
    /// none.
    pub fn save_import(
        &self,
        file_name: &str,
        hash: &str,
        sessions: &[ImportedSession],
        now: Timestamp,
    ) -> Result<Vec<Saved>> {
        let key = self.key();
        self.write(|tx| {
            let earlier: Vec<(i64, i64)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT start_time, end_time FROM workouts WHERE source_hash = ?1",
                )?;
                let rows = stmt.query_map([hash], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<std::result::Result<_, _>>()?
            };
            let mut out = Vec::with_capacity(sessions.len());
            for s in sessions {
                if s.not_recorded.is_some() {
                    out.push(Saved::NotRecorded);
                    continue;
                }
                let exists: Option<String> = tx
                    .query_row(
                        "SELECT id FROM workouts WHERE source_hash = ?1 AND source_session = ?2",
                        params![hash, s.index as i64],
                        |r| r.get(0),
                    )
                    .optional()?;
                // A workout of the same file stored before this import and covering this
                // session's time: the file was imported by a build that split it differently
                // (GPX and TCX files were one workout before each track became its own).
                // Storing it again would count the same time and distance twice.
                let (a, b) = (s.summary.start_time.0, s.summary.end_time.0);
                let covered = earlier.iter().any(|(start, end)| *start < b && *end > a);
                if exists.is_some() || covered {
                    out.push(Saved::AlreadyImported);
                    continue;
                }
                // Chunks first: the workout's document references them.
                put_samples(tx, key, &s.summary.id.0, &s.samples, 0)?;
                let events = insert_workout_row(
                    tx,
                    &s.summary,
                    Some(&s.device),
                    Some((file_name, hash, s.index)),
                    now,
                )?;
                out.push(Saved::Stored { events });
            }
            Ok(out)
        })
    }

    /// Stores one finished workout with its samples (an import of another format, a test).
    pub fn save_workout(
        &self,
        summary: &WorkoutSummary,
        samples: &[Sample],
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>> {
        let key = self.key();
        self.write(|tx| {
            put_samples(tx, key, &summary.id.0, samples, 0)?;
            let events = insert_workout_row(tx, summary, None, None, now)?;
            Ok(events)
        })
    }

    /// Deletes a workout with its samples and records. Its document (if it has one) is kept as
    /// `cancelled`, so the deletion reaches the user's other devices at the next sync and a
    /// later edit made elsewhere cannot bring the workout back.
    pub fn delete_workout(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            if tx.execute("DELETE FROM workouts WHERE id = ?1", [id])? == 0 {
                return Err(Error::NotFound(format!("workout {id}")));
            }
            crate::sync::local::cancel_workout_doc(tx, id)
        })
    }

    pub fn workout_count(&self) -> Result<u64> {
        self.read(|c| {
            Ok(c.query_row("SELECT COUNT(*) FROM workouts", [], |r| r.get::<_, i64>(0))? as u64)
        })
    }

    /// WorkoutSummary. Accepts a unique id prefix, like git.
    pub fn summary(&self, id: &str) -> Result<WorkoutSummary> {
        let id = self.resolve_id(id)?;
        let json: String = self.read(|c| {
            Ok(c.query_row(
                "SELECT summary_json FROM workout_docs WHERE workout_id = ?1",
                [&id],
                |r| r.get(0),
            )?)
        })?;
        serde_json::from_str(&json).map_err(|e| Error::Corrupt(format!("workout {id}: {e}")))
    }

    /// The full id for a unique prefix (at least 4 characters) or a full id, of a stored
    /// workout or of a recording in progress.
    pub fn resolve_id(&self, prefix: &str) -> Result<String> {
        if prefix.len() < 4 || !prefix.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(Error::NotFound(format!("workout {prefix}")));
        }
        let ids: Vec<String> = self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id FROM workouts WHERE id >= ?1 AND id < ?1 || '~'
                 UNION SELECT id FROM recordings WHERE id >= ?1 AND id < ?1 || '~' LIMIT 2",
            )?;
            let rows = stmt.query_map([prefix], |r| r.get(0))?;
            Ok(rows.collect::<std::result::Result<_, _>>()?)
        })?;
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::NotFound(format!("workout {prefix}"))),
            _ => Err(Error::Invalid(format!(
                "{prefix} matches more than one workout"
            ))),
        }
    }

    pub fn device_totals(&self, id: &str) -> Result<Option<DeviceTotals>> {
        let id = self.resolve_id(id)?;
        let json: Option<String> = self.read(|c| {
            Ok(c.query_row(
                "SELECT device_json FROM workout_docs WHERE workout_id = ?1",
                [&id],
                |r| r.get(0),
            )?)
        })?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| Error::Corrupt(format!("workout {id}: {e}")))
        })
        .transpose()
    }

    /// Every stored sample of a workout, in time order. Health channels need the key.
    pub fn samples(&self, id: &str) -> Result<Vec<Sample>> {
        let id = self.resolve_id(id)?;
        self.read(|c| get_samples(c, self.key(), &id, &[]))
    }

    /// Some channels only (e.g. the route needs positions, not the sealed heart rate).
    pub fn samples_of(&self, id: &str, channels: &[Channel]) -> Result<Vec<Sample>> {
        let id = self.resolve_id(id)?;
        self.read(|c| get_samples(c, self.key(), &id, channels))
    }

    /// WorkoutDetails: the summary, the device's totals, gear and every sample.
    pub fn details(&self, id: &str) -> Result<WorkoutDetails> {
        let id = self.resolve_id(id)?;
        let summary = self.summary(&id)?;
        let device = self.device_totals(&id)?;
        let gear_id = self.read(|c| {
            Ok(
                c.query_row("SELECT gear_id FROM workouts WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })?,
            )
        })?;
        let samples = self.samples(&id)?;
        Ok(WorkoutDetails {
            summary,
            device,
            gear_id,
            samples,
        })
    }

    /// WorkoutRouteMap: the GPS track as GeoJSON and an encoded polyline, simplified to
    /// `tolerance_m` for display.
    pub fn route(&self, id: &str, tolerance_m: f64) -> Result<RouteMap> {
        let summary = self.summary(id)?;
        let fixes = self.samples_of(&summary.id.0, &[Channel::Position])?;
        Ok(crate::route::route_map(
            &fixes,
            summary.metrics.sport,
            tolerance_m,
        ))
    }

    /// WorkoutList: newest first, filtered, one page at a time (keyset pagination, so every
    /// page costs the same however deep).
    pub fn list(&self, filter: &ListFilter, limit: usize, after: Option<&Cursor>) -> Result<Page> {
        let limit = limit.clamp(1, 1000);
        // Only the predicates in use, so SQLite can walk (status, [sport,] start_time, id)
        // from the newest end and stop after one page.
        let mut sql = String::from(
            "SELECT id, sport, start_time, title, elapsed_s, timer_s, distance_m, calories_kcal,
                    ascent_m, avg_hr
             FROM workouts WHERE status = 'completed'",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![];
        let mut arg = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(sport) = filter.sport {
            arg(
                &mut sql,
                " AND sport = ?",
                sport.as_str().to_string().into(),
            );
        }
        if let Some(from) = filter.from {
            arg(&mut sql, " AND start_time >= ?", from.0.into());
        }
        if let Some(to) = filter.to {
            arg(&mut sql, " AND start_time < ?", to.0.into());
        }
        if let Some(c) = after {
            arg(
                &mut sql,
                " AND (start_time, id) < (?",
                c.start_time.0.into(),
            );
            arg(&mut sql, ", ?)", c.id.clone().into());
        }
        sql.push_str(" ORDER BY start_time DESC, id DESC LIMIT ");
        sql.push_str(&(limit + 1).to_string());
        let items = self.read(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, f64>(4)?,
                    r.get::<_, f64>(5)?,
                    r.get::<_, Option<f64>>(6)?,
                    r.get::<_, f64>(7)?,
                    r.get::<_, Option<f64>>(8)?,
                    r.get::<_, Option<f64>>(9)?,
                ))
            })?;
            let mut out = vec![];
            for row in rows {
                let (id, sport, start, title, elapsed, timer, distance, kcal, ascent, hr) = row?;
                out.push(WorkoutListItem {
                    id,
                    sport: sport.parse().map_err(Error::Corrupt)?,
                    start_time: Timestamp(start),
                    title,
                    elapsed_s: elapsed,
                    timer_s: timer,
                    distance_m: distance,
                    calories_kcal: kcal,
                    ascent_m: ascent,
                    avg_hr: hr,
                });
            }
            Ok(out)
        })?;
        let mut items = items;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|i| Cursor {
                start_time: i.start_time,
                id: i.id.clone(),
            })
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// WorkoutStats: totals and averages per week, month or year (newest first), in the time
    /// zone given by `utc_offset_s`. Below [`MIN_WORKOUTS_FOR_STATS`] workouts matching the
    /// filter: "not enough data".
    pub fn stats(
        &self,
        period: Period,
        sport: Option<Sport>,
        utc_offset_s: i64,
    ) -> Result<WorkoutStats> {
        let fmt = match period {
            Period::Week => "%Y-W%W",
            Period::Month => "%Y-%m",
            Period::Year => "%Y",
        };
        self.read(|c| {
            let total: i64 = c.query_row(
                "SELECT COUNT(*) FROM workouts WHERE status = 'completed' AND (?1 IS NULL OR sport = ?1)",
                params![sport.map(Sport::as_str)],
                |r| r.get(0),
            )?;
            let total = total as u64;
            if total < MIN_WORKOUTS_FOR_STATS {
                return Ok(WorkoutStats::NotEnoughData {
                    workouts: total,
                    needed: MIN_WORKOUTS_FOR_STATS,
                });
            }
            let mut stmt = c.prepare_cached(
                "SELECT strftime(?1, start_time / 1000 + ?2, 'unixepoch') AS p, COUNT(*),
                        TOTAL(distance_m), TOTAL(timer_s), TOTAL(moving_s), TOTAL(calories_kcal),
                        TOTAL(ascent_m), AVG(avg_hr),
                        TOTAL(CASE WHEN distance_m > 0 THEN moving_s END),
                        TOTAL(CASE WHEN distance_m > 0 THEN distance_m END)
                 FROM workouts
                 WHERE status = 'completed' AND (?3 IS NULL OR sport = ?3)
                 GROUP BY p ORDER BY p DESC",
            )?;
            let rows = stmt.query_map(params![fmt, utc_offset_s, sport.map(Sport::as_str)], |r| {
                let n: i64 = r.get(1)?;
                let n = n as u64;
                let distance: f64 = r.get(2)?;
                let timer: f64 = r.get(3)?;
                let pace_time: f64 = r.get(8)?;
                let pace_dist: f64 = r.get(9)?;
                Ok(PeriodStats {
                    period: r.get(0)?,
                    workouts: n,
                    distance_m: distance,
                    timer_s: timer,
                    moving_s: r.get(4)?,
                    calories_kcal: r.get(5)?,
                    ascent_m: r.get(6)?,
                    avg_distance_m: distance / n as f64,
                    avg_timer_s: timer / n as f64,
                    avg_pace_s_per_km: (pace_dist > 0.0).then(|| pace_time / pace_dist * 1000.0),
                    avg_hr: r.get(7)?,
                })
            })?;
            let periods = rows.collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(WorkoutStats::Ok {
                workouts: total,
                periods,
            })
        })
    }

    /// Daily streaks in the time zone of `utc_offset_s`, as of `today`.
    pub fn streaks(&self, today: Timestamp, utc_offset_s: i64) -> Result<Streaks> {
        let days: Vec<i64> = self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT DISTINCT (start_time / 1000 + ?1) / 86400 AS d FROM workouts
                 WHERE status = 'completed' ORDER BY d",
            )?;
            let rows = stmt.query_map([utc_offset_s], |r| r.get(0))?;
            Ok(rows.collect::<std::result::Result<_, _>>()?)
        })?;
        let today_day = (today.0 / 1000 + utc_offset_s).div_euclid(86400);
        let (mut longest, mut longest_end, mut run) = (0u32, None, 0u32);
        for (i, d) in days.iter().enumerate() {
            run = if i > 0 && days[i - 1] + 1 == *d {
                run + 1
            } else {
                1
            };
            if run > longest {
                longest = run;
                longest_end = Some(*d);
            }
        }
        let current = match days.last() {
            Some(&last) if last == today_day || last + 1 == today_day => run,
            _ => 0,
        };
        Ok(Streaks {
            current_days: current,
            longest_days: longest,
            longest_ended: longest_end.and_then(|d| {
                chrono::DateTime::from_timestamp(d * 86400, 0)
                    .map(|t| t.format("%Y-%m-%d").to_string())
            }),
        })
    }

    /// Current personal records, one per (sport, record).
    pub fn personal_records(&self) -> Result<Vec<PersonalRecord>> {
        self.read(current_records)
    }

    /// Every time a record was set, oldest first.
    pub fn record_history(&self, sport: Sport, record: &str) -> Result<Vec<PersonalRecord>> {
        self.read(|c| {
            query_records(
                c,
                "SELECT sport, record, value, workout_id, achieved_at FROM personal_records
                 WHERE sport = ?1 AND record = ?2 ORDER BY achieved_at",
                params![sport.as_str(), record],
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{AltitudeSource, Reading};

    #[test]
    fn v1_encoding_round_trips_for_the_migration() {
        let samples = vec![
            Sample::new(Timestamp(1_000), Reading::HeartRate { bpm: 120.0 }),
            Sample::new(
                Timestamp(2_000),
                Reading::Altitude {
                    m: -3.5,
                    source: AltitudeSource::Gps,
                },
            ),
            Sample::new(
                Timestamp(900),
                Reading::Position {
                    lat: -1.0,
                    lon: -2.0,
                    accuracy_m: Some(4.0),
                },
            ),
        ];
        let mut back = vec![];
        for ch in Channel::ALL {
            v1::decode_channel(ch, &v1::encode_channel(ch, &samples), &mut back).unwrap();
        }
        assert_eq!(back.len(), 3);
        let data = v1::encode_channel(Channel::HeartRate, &samples);
        assert!(
            v1::decode_channel(Channel::HeartRate, &data[..data.len() - 1], &mut back).is_err()
        );
    }
}
