//! The local SQLite store (first shape; the local-store issue adds chunked, compressed and
//! encrypted samples, read models, gear and the crash-recovery path).
//!
//! One connection, one writer. Pragmas, each with its reason:
//! - `journal_mode = WAL`: readers never block the writer and a crash mid-write leaves the
//!   database intact (the WAL is replayed or discarded on open);
//! - `synchronous = FULL`: a committed transaction survives power loss; a workout the app was
//!   told is saved must not disappear (costs one extra fsync per commit, irrelevant at our rate);
//! - `foreign_keys = ON`: samples and records cannot outlive their workout;
//! - `busy_timeout = 5000`: another process holding the write lock briefly is waited for, not
//!   reported as an error.
//!
//! Migrations: [`SCHEMA_VERSION`] in `PRAGMA user_version`, an upgrade ladder in [`migrate`];
//! a database from a newer build is refused rather than damaged.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::error::{Error, Result};
use crate::event::DomainEvent;
use crate::fit::{DeviceTotals, ImportedSession};
use crate::records::{self, PersonalRecord};
use crate::sample::{AltitudeSource, Channel, Reading, Sample};
use crate::sport::Sport;
use crate::time::Timestamp;
use crate::workout::WorkoutSummary;

pub const SCHEMA_VERSION: i64 = 1;

const MIGRATIONS: &[&str] = &[
    // v1
    "CREATE TABLE workouts (
        id TEXT PRIMARY KEY,
        sport TEXT NOT NULL,
        start_time INTEGER NOT NULL,
        end_time INTEGER NOT NULL,
        timer_s REAL NOT NULL,
        distance_m REAL,
        source_file TEXT,
        source_hash TEXT,
        source_session INTEGER,
        summary_json TEXT NOT NULL,
        device_json TEXT,
        created_at INTEGER NOT NULL
     );
     CREATE INDEX workouts_start ON workouts(start_time);
     CREATE INDEX workouts_sport_start ON workouts(sport, start_time);
     CREATE UNIQUE INDEX workouts_source ON workouts(source_hash, source_session);
     CREATE TABLE samples (
        workout_id TEXT NOT NULL REFERENCES workouts(id) ON DELETE CASCADE,
        channel TEXT NOT NULL,
        count INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (workout_id, channel)
     );
     CREATE TABLE personal_records (
        sport TEXT NOT NULL,
        record TEXT NOT NULL,
        value REAL NOT NULL,
        workout_id TEXT NOT NULL REFERENCES workouts(id) ON DELETE CASCADE,
        achieved_at INTEGER NOT NULL,
        previous REAL
     );
     CREATE INDEX personal_records_key ON personal_records(sport, record, achieved_at);",
];

#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

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

fn configure(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_millis(5000))?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let tx = conn.transaction()?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    tx.commit()?;
    Ok(())
}

impl Store {
    /// Opens (creating it and its directory if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut conn = Connection::open(path)?;
        configure(&conn)?;
        migrate(&mut conn)?;
        Ok(Self { conn })
    }

    pub fn open_in_memory() -> Result<Self> {
        let mut conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Self { conn })
    }

    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Stores every recordable session of one imported file in one transaction: either all of
    /// them are stored or none is.
    pub fn save_import(
        &mut self,
        file_name: &str,
        hash: &str,
        sessions: &[ImportedSession],
        now: Timestamp,
    ) -> Result<Vec<Saved>> {
        let tx = self.conn.transaction()?;
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
            if exists.is_some() {
                out.push(Saved::AlreadyImported);
                continue;
            }
            let events = insert_workout(
                &tx,
                &s.summary,
                Some(&s.device),
                &s.samples,
                Some((file_name, hash, s.index)),
                now,
            )?;
            out.push(Saved::Stored { events });
        }
        tx.commit()?;
        Ok(out)
    }

    /// Stores one finished workout (from a live recording) with its samples.
    pub fn save_workout(
        &mut self,
        summary: &WorkoutSummary,
        samples: &[Sample],
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>> {
        let tx = self.conn.transaction()?;
        let events = insert_workout(&tx, summary, None, samples, None, now)?;
        tx.commit()?;
        Ok(events)
    }

    pub fn workout_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM workouts", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    pub fn summary(&self, id: &str) -> Result<WorkoutSummary> {
        let json: String = self
            .conn
            .query_row(
                "SELECT summary_json FROM workouts WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("workout {id}")))?;
        serde_json::from_str(&json).map_err(|e| Error::Corrupt(format!("workout {id}: {e}")))
    }

    pub fn device_totals(&self, id: &str) -> Result<Option<DeviceTotals>> {
        let json: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT device_json FROM workouts WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        match json {
            None => Err(Error::NotFound(format!("workout {id}"))),
            Some(None) => Ok(None),
            Some(Some(j)) => serde_json::from_str(&j)
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("workout {id}: {e}"))),
        }
    }

    /// Every stored sample of a workout, in time order.
    pub fn samples(&self, id: &str) -> Result<Vec<Sample>> {
        let mut stmt = self
            .conn
            .prepare("SELECT channel, data FROM samples WHERE workout_id = ?1")?;
        let mut out = vec![];
        let rows = stmt.query_map([id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        for row in rows {
            let (channel, data) = row?;
            let ch = Channel::ALL
                .into_iter()
                .find(|c| c.as_str() == channel)
                .ok_or_else(|| Error::Corrupt(format!("unknown channel {channel}")))?;
            decode_channel(ch, &data, &mut out)?;
        }
        out.sort_by_key(|s| s.t);
        Ok(out)
    }

    pub fn personal_records(&self) -> Result<Vec<PersonalRecord>> {
        current_records(&self.conn)
    }
}

fn current_records(conn: &Connection) -> Result<Vec<PersonalRecord>> {
    // The current record is the latest one set for each (sport, record): later rows only exist
    // when they beat the earlier ones.
    let mut stmt = conn.prepare(
        "SELECT sport, record, value, workout_id, achieved_at FROM personal_records p
         WHERE achieved_at = (SELECT MAX(achieved_at) FROM personal_records q
                              WHERE q.sport = p.sport AND q.record = p.record)",
    )?;
    let rows = stmt.query_map([], |r| {
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
        let sport: Sport = sport.parse().map_err(Error::Corrupt)?;
        out.push(PersonalRecord {
            sport,
            record,
            value,
            workout_id,
            achieved_at: Timestamp(at),
        });
    }
    Ok(out)
}

fn insert_workout(
    tx: &Transaction<'_>,
    s: &WorkoutSummary,
    device: Option<&DeviceTotals>,
    samples: &[Sample],
    source: Option<(&str, &str, usize)>,
    now: Timestamp,
) -> Result<Vec<DomainEvent>> {
    tx.execute(
        "INSERT INTO workouts (id, sport, start_time, end_time, timer_s, distance_m, source_file,
            source_hash, source_session, summary_json, device_json, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            s.id.0,
            s.metrics.sport.as_str(),
            s.start_time.0,
            s.end_time.0,
            s.metrics.timer_s,
            s.metrics.distance_m,
            source.map(|x| x.0),
            source.map(|x| x.1),
            source.map(|x| x.2 as i64),
            to_json(s)?,
            device.map(to_json).transpose()?,
            now.0,
        ],
    )?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO samples (workout_id, channel, count, data) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for ch in Channel::ALL {
        let (count, data) = encode_channel(ch, samples);
        if count > 0 {
            stmt.execute(params![s.id.0, ch.as_str(), count as i64, data])?;
        }
    }
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

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Corrupt(e.to_string()))
}

// --- sample encoding ---------------------------------------------------------------------------
//
// One blob per channel: for each sample, the time as a zigzag varint delta (ms) from the
// previous one, then the channel's values as little-endian f64 (position: lat, lon, accuracy or
// NaN; altitude: metres then a source byte). The local-store issue replaces this with
// compressed, encrypted chunks.

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7F) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn get_varint(data: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *data.get(*pos)?;
        *pos += 1;
        if shift >= 64 {
            return None;
        }
        z |= u64::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
        shift += 7;
    }
}

fn get_f64(data: &[u8], pos: &mut usize) -> Option<f64> {
    let bytes: [u8; 8] = data.get(*pos..*pos + 8)?.try_into().ok()?;
    *pos += 8;
    Some(f64::from_le_bytes(bytes))
}

fn encode_channel(ch: Channel, samples: &[Sample]) -> (usize, Vec<u8>) {
    let mut out = Vec::new();
    let mut last = 0i64;
    let mut n = 0;
    for s in samples.iter().filter(|s| s.channel() == ch) {
        put_varint(&mut out, s.t.0 - last);
        last = s.t.0;
        n += 1;
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
                out.push(match source {
                    AltitudeSource::Gps => 0,
                    AltitudeSource::Barometric => 1,
                });
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
    (n, out)
}

fn decode_channel(ch: Channel, data: &[u8], out: &mut Vec<Sample>) -> Result<()> {
    let corrupt = || Error::Corrupt(format!("{ch} samples are truncated"));
    let mut pos = 0;
    let mut t = 0i64;
    while pos < data.len() {
        t += get_varint(data, &mut pos).ok_or_else(corrupt)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_round_trip_through_the_encoding() {
        let samples = vec![
            Sample::new(Timestamp(1_000), Reading::HeartRate { bpm: 120.0 }),
            Sample::new(
                Timestamp(1_000),
                Reading::Position {
                    lat: 59.9,
                    lon: 10.7,
                    accuracy_m: None,
                },
            ),
            Sample::new(
                Timestamp(2_000),
                Reading::Altitude {
                    m: -3.5,
                    source: AltitudeSource::Gps,
                },
            ),
            Sample::new(Timestamp(2_500), Reading::HeartRate { bpm: 121.0 }),
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
            let (_, data) = encode_channel(ch, &samples);
            decode_channel(ch, &data, &mut back).unwrap();
        }
        let mut want = samples.clone();
        want.sort_by_key(|s| (s.channel(), s.t));
        back.sort_by_key(|s| (s.channel(), s.t));
        assert_eq!(back, want);
    }

    #[test]
    fn truncated_blob_is_an_error_not_garbage() {
        let s = [Sample::new(Timestamp(5), Reading::Power { w: 250.0 })];
        let (_, data) = encode_channel(Channel::Power, &s);
        let mut out = vec![];
        assert!(decode_channel(Channel::Power, &data[..data.len() - 1], &mut out).is_err());
    }

    #[test]
    fn migrations_reach_the_current_version_and_refuse_newer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/fitedge.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        drop(store);
        // Reopening is a no-op.
        assert_eq!(
            Store::open(&path).unwrap().schema_version().unwrap(),
            SCHEMA_VERSION
        );
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(&path),
            Err(Error::SchemaTooNew { .. })
        ));
    }
}
