//! The device's own copies of its Automerge documents, in the local store (schema v3).
//!
//! | table | holds |
//! |---|---|
//! | `sync_docs` | one row per document: id (Base58Check), kind, the workout it describes, the saved bytes, the heads |
//! | `sync_states` | per (server, document): automerge's persistent sync state (the shared heads) |
//! | `sync_uploaded` | per (server, sha256): blobs the server confirmed |
//! | `sync_blobs` | chunks downloaded for documents made on other devices, by sha256 |
//!
//! Every stored workout has a workout document, made in the same transaction that stores the
//! workout (metadata, summary, laps, validation counts, and one chunk reference per stored sample
//! chunk with the SHA-256 of the chunk's stored bytes, the blob the server keeps). The workout
//! document's id is the workout's UUID, so a workout and its document can be found from each
//! other. The store makes one profile document from the stored profile the first time
//! [`Store::ensure_documents`] runs.
//!
//! Title and notes are edited through the document ([`Store::set_workout_text`]): Automerge text,
//! so two devices editing offline merge. The `workouts.title` column and the summary's title and
//! notes are a projection of the document, refreshed whenever the document is saved.
//!
//! Saving never loses anything: [`Store::save_document`] merges what it is given into what is
//! stored, inside one transaction, so a sync round and a local edit that overlap both survive.

use automerge::{ActorId, AutoCommit, Automerge, ChangeHash, ObjType, ReadDoc, Value, ROOT};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::crypto::StorageKey;
use crate::db::Store;
use crate::error::{Error, Result};
use crate::sample::Channel;
use crate::sync::docs::{
    self, ChunkRef, DocError, DocKind, DocLap, DocSummary, DocValidationCounts,
};
use crate::sync::protocol::DocumentId;
use crate::time::Timestamp;
use crate::workout::WorkoutSummary;

/// What a stored document is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalKind {
    Profile,
    Workout,
    /// Untyped, or not received yet (a tracked id with no content).
    Other,
}

impl LocalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LocalKind::Profile => "profile",
            LocalKind::Workout => "workout",
            LocalKind::Other => "other",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "profile" => LocalKind::Profile,
            "workout" => LocalKind::Workout,
            _ => LocalKind::Other,
        }
    }

    fn of(doc: &Automerge) -> Self {
        match docs::kind_of(doc) {
            Ok((DocKind::Profile, _)) => LocalKind::Profile,
            Ok((DocKind::Workout, _)) => LocalKind::Workout,
            _ => LocalKind::Other,
        }
    }
}

/// One stored document, as listed by [`Store::documents`]. Plain data (FFI-friendly).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocInfo {
    /// Base58Check document id (`automerge:` + this is its URL).
    pub doc_id: String,
    pub kind: LocalKind,
    pub workout_id: Option<String>,
    /// Hex change hashes; empty while the document is only tracked (not received yet).
    pub heads: Vec<String>,
    pub updated_at: Timestamp,
}

/// A document error as the store reports it: the edit or document is invalid.
fn doc_error(e: DocError) -> Error {
    Error::Invalid(e.to_string())
}

pub(crate) fn heads_text(heads: &[ChangeHash]) -> String {
    let mut h: Vec<String> = heads.iter().map(ToString::to_string).collect();
    h.sort();
    h.join(",")
}

fn doc_id_of_workout(workout_id: &str) -> DocumentId {
    match uuid::Uuid::parse_str(workout_id) {
        Ok(u) => DocumentId::from_bytes(*u.as_bytes()),
        // Ids are UUIDs; should an old one not be, the workout still gets a document.
        Err(_) => DocumentId::random(),
    }
}

/// This device's Automerge actor, made once and kept in `meta`.
fn device_actor(tx: &Transaction<'_>) -> Result<ActorId> {
    let found: Option<Vec<u8>> = tx
        .query_row("SELECT value FROM meta WHERE key = 'sync_actor'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(bytes) = found {
        return Ok(ActorId::from(bytes));
    }
    let bytes = uuid::Uuid::new_v4().as_bytes().to_vec();
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('sync_actor', ?1)",
        [&bytes],
    )?;
    Ok(ActorId::from(bytes))
}

/// A per-device string kept in `meta` (peer id, storage id), made on first use.
pub(crate) fn device_string(tx: &Transaction<'_>, key: &str, prefix: &str) -> Result<String> {
    let found: Option<Vec<u8>> = tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    if let Some(b) = found {
        return String::from_utf8(b).map_err(|e| Error::Corrupt(format!("meta {key}: {e}")));
    }
    let v = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)",
        params![key, v.as_bytes()],
    )?;
    Ok(v)
}

/// Fills the content address of a workout's chunks that lack one and returns its chunk
/// references in (channel, seq) order.
fn chunk_refs(tx: &Transaction<'_>, workout_id: &str) -> Result<Vec<ChunkRef>> {
    type Row = (i64, i64, i64, i64, i64, Option<String>, Vec<u8>);
    let rows: Vec<Row> = {
        let mut stmt = tx.prepare_cached(
            "SELECT channel, seq, t_first, t_last, count, sha256, data FROM sample_chunks
             WHERE workout_id = ?1 ORDER BY channel, seq",
        )?;
        let rows = stmt.query_map([workout_id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    let mut out = Vec::with_capacity(rows.len());
    for (channel, seq, t_first, t_last, count, sha, data) in rows {
        let ch = usize::try_from(channel)
            .ok()
            .and_then(|i| Channel::ALL.get(i).copied())
            .ok_or_else(|| Error::Corrupt(format!("chunk channel {channel}")))?;
        let sha = match sha {
            Some(s) => s,
            None => {
                let s = sha256_hex(&data);
                tx.execute(
                    "UPDATE sample_chunks SET sha256 = ?1
                     WHERE workout_id = ?2 AND channel = ?3 AND seq = ?4",
                    params![s, workout_id, channel, seq],
                )?;
                s
            }
        };
        out.push(ChunkRef {
            sha256: sha,
            channel: ch,
            start_time: Timestamp(t_first),
            end_time: Timestamp(t_last),
            count: count.unsigned_abs(),
        });
    }
    Ok(out)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex_lower(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// The workout document of a stored workout.
fn workout_document(
    actor: ActorId,
    s: &WorkoutSummary,
    chunks: &[ChunkRef],
) -> std::result::Result<AutoCommit, DocError> {
    let id = uuid::Uuid::parse_str(&s.id.0).unwrap_or_else(|_| uuid::Uuid::new_v4());
    let mut doc = docs::new_workout(Some(actor), id, s.metrics.sport, s.start_time)?;
    if let Some(t) = &s.title {
        docs::set_text(&mut doc, "title", t)?;
    }
    if let Some(n) = &s.notes {
        docs::set_text(&mut doc, "notes", n)?;
    }
    for lap in &s.laps {
        docs::push_lap(
            &mut doc,
            &DocLap {
                start_time: lap.start_time,
                end_time: lap.end_time,
                timer_s: lap.timer_s,
                distance_m: lap.distance_m,
            },
        )?;
    }
    for c in chunks {
        docs::push_chunk(&mut doc, c)?;
    }
    let m = &s.metrics;
    // The recorder can report a GPS average speed with a maximum of 0 (no speed sensor); the
    // document's validator (rightly) refuses an average above the maximum, so a maximum below
    // its average is written as unknown rather than as a contradiction.
    let max = |avg: Option<f64>, max: Option<f64>| match (avg, max) {
        (Some(a), Some(x)) if x < a => None,
        _ => max,
    };
    docs::complete_workout(
        &mut doc,
        s.end_time,
        &DocSummary {
            elapsed_s: m.elapsed_s,
            timer_s: m.timer_s,
            moving_s: m.moving_s,
            calories_kcal: m.calories_kcal,
            distance_m: m.distance_m,
            ascent_m: m.ascent_m,
            avg_speed_mps: m.avg_speed_mps,
            max_speed_mps: max(m.avg_speed_mps, m.max_speed_mps),
            avg_hr_bpm: m.avg_hr_bpm,
            max_hr_bpm: max(m.avg_hr_bpm, m.max_hr_bpm),
            avg_power_w: m.avg_power_w,
            max_power_w: max(m.avg_power_w, m.max_power_w),
            avg_cadence_rpm: m.avg_cadence_rpm,
            max_cadence_rpm: max(m.avg_cadence_rpm, m.max_cadence_rpm),
            min_spo2_pct: m.min_spo2_pct,
        },
        DocValidationCounts {
            samples: s.samples,
            rejected: s.rejected,
            flagged: s.flagged,
        },
    )?;
    doc.commit();
    Ok(doc)
}

/// Makes the workout document of a workout just stored (its chunks already written), in the
/// caller's transaction. Does nothing when the workout already has one.
pub(crate) fn create_workout_doc(
    tx: &Transaction<'_>,
    s: &WorkoutSummary,
    now: Timestamp,
) -> Result<()> {
    let exists: Option<String> = tx
        .query_row(
            "SELECT doc_id FROM sync_docs WHERE workout_id = ?1",
            [&s.id.0],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Ok(());
    }
    let chunks = chunk_refs(tx, &s.id.0)?;
    let actor = device_actor(tx)?;
    let mut doc = workout_document(actor, s, &chunks).map_err(doc_error)?;
    let heads = doc.get_heads();
    tx.execute(
        "INSERT INTO sync_docs (doc_id, kind, workout_id, bytes, heads, updated_at)
         VALUES (?1, 'workout', ?2, ?3, ?4, ?5)",
        params![
            doc_id_of_workout(&s.id.0).to_string(),
            s.id.0,
            doc.save(),
            heads_text(&heads),
            now.0
        ],
    )?;
    Ok(())
}

fn create_profile_doc(tx: &Transaction<'_>, now: Timestamp) -> Result<bool> {
    let exists: Option<String> = tx
        .query_row(
            "SELECT doc_id FROM sync_docs WHERE kind = 'profile' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Ok(false);
    }
    let json: Option<String> = tx
        .query_row("SELECT json FROM profile WHERE id = 1", [], |r| r.get(0))
        .optional()?;
    let p: crate::gear::AthleteProfile = match json {
        Some(j) => serde_json::from_str(&j).map_err(|e| Error::Corrupt(format!("profile: {e}")))?,
        None => crate::gear::AthleteProfile::default(),
    };
    let mut doc = docs::new_profile(Some(device_actor(tx)?)).map_err(doc_error)?;
    docs::set_physiology(
        &mut doc,
        &docs::Physiology {
            weight_kg: p.weight_kg,
            birth_year: p.birth_year.map(i64::from),
            hr_max_bpm: p.hr_max_bpm.map(f64::from),
            hr_rest_bpm: p.hr_rest_bpm.map(f64::from),
            ftp_w: p.ftp_w.map(f64::from),
        },
    )
    .map_err(doc_error)?;
    doc.commit();
    let heads = doc.get_heads();
    tx.execute(
        "INSERT INTO sync_docs (doc_id, kind, workout_id, bytes, heads, updated_at)
         VALUES (?1, 'profile', NULL, ?2, ?3, ?4)",
        params![
            DocumentId::random().to_string(),
            doc.save(),
            heads_text(&heads),
            now.0
        ],
    )?;
    Ok(true)
}

/// Creates the documents of every stored workout lacking one, and the profile document.
fn ensure_documents_tx(tx: &Transaction<'_>, now: Timestamp) -> Result<usize> {
    let missing: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT d.summary_json FROM workouts w JOIN workout_docs d ON d.workout_id = w.id
             WHERE w.status = 'completed'
               AND NOT EXISTS (SELECT 1 FROM sync_docs s WHERE s.workout_id = w.id)
             ORDER BY w.start_time, w.id",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    let mut made = 0;
    for json in missing {
        let s: WorkoutSummary = serde_json::from_str(&json)
            .map_err(|e| Error::Corrupt(format!("workout summary: {e}")))?;
        create_workout_doc(tx, &s, now)?;
        made += 1;
    }
    if create_profile_doc(tx, now)? {
        made += 1;
    }
    Ok(made)
}

/// The data step of migration v3: every workout already stored gets its document.
pub(crate) fn migrate_v3_documents(tx: &Transaction<'_>, _key: Option<&StorageKey>) -> Result<()> {
    // A migration has no clock; the documents' `updated_at` is 0 ("before sync existed").
    ensure_documents_tx(tx, Timestamp(0)).map(|_| ())
}

/// Reads a text field leniently (a text object or a plain string).
pub(crate) fn read_text<D: ReadDoc>(doc: &D, key: &str) -> Option<String> {
    match doc.get(ROOT, key).ok()?? {
        (Value::Object(ObjType::Text), id) => doc.text(&id).ok(),
        (Value::Scalar(s), _) => s.as_str().map(str::to_string),
        _ => None,
    }
}

fn load(bytes: &[u8]) -> Result<Automerge> {
    if bytes.is_empty() {
        return Ok(Automerge::new());
    }
    Automerge::load(bytes).map_err(|e| Error::Corrupt(format!("automerge document: {e}")))
}

fn stored_bytes(conn: &Connection, id: &DocumentId) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .query_row(
            "SELECT bytes FROM sync_docs WHERE doc_id = ?1",
            [id.to_string()],
            |r| r.get(0),
        )
        .optional()?)
}

/// Merges `doc` into the stored copy (creating it), refreshes heads, kind and the workout
/// projection. Returns the stored heads after the merge.
pub(crate) fn save_merged(
    tx: &Transaction<'_>,
    id: &DocumentId,
    doc: &Automerge,
    now: Timestamp,
) -> Result<Vec<ChangeHash>> {
    let mut stored = match stored_bytes(tx, id)? {
        Some(b) => load(&b)?,
        None => Automerge::new(),
    };
    let before = stored.get_heads();
    stored
        .merge(&mut doc.clone())
        .map_err(|e| Error::Invalid(format!("document {id}: {e}")))?;
    let heads = stored.get_heads();
    if heads == before && !before.is_empty() {
        return Ok(heads);
    }
    let kind = LocalKind::of(&stored);
    tx.execute(
        "INSERT INTO sync_docs (doc_id, kind, workout_id, bytes, heads, updated_at)
         VALUES (?1, ?2, NULL, ?3, ?4, ?5)
         ON CONFLICT(doc_id) DO UPDATE SET kind = excluded.kind, bytes = excluded.bytes,
            heads = excluded.heads, updated_at = excluded.updated_at",
        params![
            id.to_string(),
            kind.as_str(),
            stored.save(),
            heads_text(&heads),
            now.0
        ],
    )?;
    if kind == LocalKind::Workout {
        project_workout(tx, id, &stored)?;
    }
    Ok(heads)
}

/// Keeps the workout row's title and the summary's title and notes equal to the document's.
fn project_workout(tx: &Transaction<'_>, id: &DocumentId, doc: &Automerge) -> Result<()> {
    let workout_id: Option<String> = match read_text(doc, "id") {
        Some(w) => Some(w),
        None => tx
            .query_row(
                "SELECT workout_id FROM sync_docs WHERE doc_id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )
            .optional()?
            .flatten(),
    };
    let Some(workout_id) = workout_id else {
        return Ok(());
    };
    // Another document may already claim this workout; the first one keeps it.
    tx.execute(
        "UPDATE OR IGNORE sync_docs SET workout_id = ?1 WHERE doc_id = ?2 AND workout_id IS NULL",
        params![workout_id, id.to_string()],
    )?;
    let nonempty = |s: Option<String>| s.filter(|t| !t.is_empty());
    let title = nonempty(read_text(doc, "title"));
    let notes = nonempty(read_text(doc, "notes"));
    tx.execute(
        "UPDATE workouts SET title = ?1 WHERE id = ?2",
        params![title, workout_id],
    )?;
    tx.execute(
        "UPDATE workout_docs SET summary_json = json_set(summary_json, '$.title', ?1, '$.notes', ?2)
         WHERE workout_id = ?3",
        params![title, notes, workout_id],
    )?;
    Ok(())
}

impl Store {
    /// Creates the documents that should exist and do not: one per stored workout (v3 and later
    /// make them as workouts are stored; this catches anything else) and the profile document.
    /// Returns how many it made.
    pub fn ensure_documents(&self, now: Timestamp) -> Result<usize> {
        self.write(|tx| ensure_documents_tx(tx, now))
    }

    /// Every stored document, in id order.
    pub fn documents(&self) -> Result<Vec<DocInfo>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT doc_id, kind, workout_id, heads, updated_at FROM sync_docs ORDER BY doc_id",
            )?;
            let rows = stmt.query_map([], |r| {
                let heads: String = r.get(3)?;
                Ok(DocInfo {
                    doc_id: r.get(0)?,
                    kind: LocalKind::parse(&r.get::<_, String>(1)?),
                    workout_id: r.get(2)?,
                    heads: heads
                        .split(',')
                        .filter(|h| !h.is_empty())
                        .map(str::to_string)
                        .collect(),
                    updated_at: Timestamp(r.get(4)?),
                })
            })?;
            Ok(rows.collect::<std::result::Result<_, _>>()?)
        })
    }

    /// A stored document (an empty one for a tracked id not received yet).
    pub fn load_document(&self, id: &DocumentId) -> Result<Automerge> {
        match self.read(|c| stored_bytes(c, id))? {
            Some(b) => load(&b),
            None => Err(Error::NotFound(format!("document {id}"))),
        }
    }

    /// Merges `doc` into the stored document (creating it) in one transaction; returns the
    /// stored heads afterwards. Merging, not overwriting: nothing stored is ever lost.
    pub fn save_document(
        &self,
        id: &DocumentId,
        doc: &Automerge,
        now: Timestamp,
    ) -> Result<Vec<ChangeHash>> {
        self.write(|tx| save_merged(tx, id, doc, now))
    }

    /// Remembers a document id this device should hold (learned from the server or a shared
    /// link) without content yet; the next sync round asks for it with `request`.
    pub fn track_document(&self, id: &DocumentId, now: Timestamp) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO sync_docs (doc_id, kind, workout_id, bytes, heads, updated_at)
                 VALUES (?1, 'other', NULL, x'', '', ?2)",
                params![id.to_string(), now.0],
            )?;
            Ok(())
        })
    }

    /// The document of a stored workout (full id or unique prefix).
    pub fn workout_document_id(&self, workout_id: &str) -> Result<DocumentId> {
        let full = self
            .resolve_id(workout_id)
            .unwrap_or_else(|_| workout_id.into());
        let id: Option<String> = self.read(|c| {
            Ok(c.query_row(
                "SELECT doc_id FROM sync_docs WHERE workout_id = ?1",
                [&full],
                |r| r.get(0),
            )
            .optional()?)
        })?;
        id.ok_or_else(|| Error::NotFound(format!("document of workout {workout_id}")))?
            .parse()
            .map_err(|e| Error::Corrupt(format!("document id: {e}")))
    }

    /// Applies a local edit to a stored document, in one transaction, as this device's actor.
    /// The edited document must still validate. Returns the new heads.
    pub fn edit_document(
        &self,
        id: &DocumentId,
        now: Timestamp,
        edit: impl FnOnce(&mut AutoCommit) -> std::result::Result<(), DocError>,
    ) -> Result<Vec<ChangeHash>> {
        self.write(|tx| {
            let bytes =
                stored_bytes(tx, id)?.ok_or_else(|| Error::NotFound(format!("document {id}")))?;
            let mut doc = if bytes.is_empty() {
                AutoCommit::new()
            } else {
                AutoCommit::load(&bytes)
                    .map_err(|e| Error::Corrupt(format!("automerge document: {e}")))?
            };
            doc.set_actor(device_actor(tx)?);
            edit(&mut doc).map_err(doc_error)?;
            doc.commit();
            docs::validate(doc.document(), &docs::ValidationContext { now }).map_err(doc_error)?;
            save_merged(tx, id, doc.document(), now)
        })
    }

    /// Sets a workout's title and/or notes through its document (`None` leaves a field alone).
    /// Text is edited with a diff, so concurrent edits on another device merge.
    pub fn set_workout_text(
        &self,
        workout_id: &str,
        title: Option<&str>,
        notes: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<ChangeHash>> {
        let id = self.workout_document_id(workout_id)?;
        self.edit_document(&id, now, |doc| {
            if let Some(t) = title {
                docs::set_text(doc, "title", t)?;
            }
            if let Some(n) = notes {
                docs::set_text(doc, "notes", n)?;
            }
            Ok(())
        })
    }

    /// The kept sync state of a document with a server.
    pub fn sync_state(&self, server: &str, id: &DocumentId) -> Result<Option<Vec<u8>>> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT state FROM sync_states WHERE server = ?1 AND doc_id = ?2",
                params![server, id.to_string()],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    /// Merges a document received from `server` and keeps the sync state with it, in one
    /// transaction: either both are saved or neither.
    pub fn save_synced(
        &self,
        server: &str,
        id: &DocumentId,
        doc: &Automerge,
        state: Option<&[u8]>,
        now: Timestamp,
    ) -> Result<Vec<ChangeHash>> {
        self.write(|tx| {
            let heads = if doc.get_heads().is_empty() {
                Vec::new()
            } else {
                save_merged(tx, id, doc, now)?
            };
            if let Some(s) = state {
                tx.execute(
                    "INSERT INTO sync_states (server, doc_id, state) VALUES (?1, ?2, ?3)
                     ON CONFLICT(server, doc_id) DO UPDATE SET state = excluded.state",
                    params![server, id.to_string(), s],
                )?;
            }
            Ok(heads)
        })
    }

    /// This device's peer id and storage id for the sync protocol (made once, then kept).
    pub fn sync_identity(&self) -> Result<(String, String)> {
        self.write(|tx| {
            Ok((
                device_string(tx, "sync_peer_id", "device-")?,
                device_string(tx, "sync_storage_id", "")?,
            ))
        })
    }

    /// The SHA-256 of the chunk blobs stored workout documents reference, held here and not
    /// yet confirmed by `server`.
    pub fn blobs_to_upload(&self, server: &str) -> Result<Vec<String>> {
        let docs = self.documents()?;
        let mut out = Vec::new();
        for d in docs.iter().filter(|d| d.kind == LocalKind::Workout) {
            let id: DocumentId = d
                .doc_id
                .parse()
                .map_err(|e| Error::Corrupt(format!("document id: {e}")))?;
            let doc = self.load_document(&id)?;
            for sha in chunk_shas(&doc) {
                let (have, sent) = self.read(|c| {
                    let have = local_blob(c, &sha)?.is_some();
                    let sent: Option<i64> = c
                        .query_row(
                            "SELECT 1 FROM sync_uploaded WHERE server = ?1 AND sha256 = ?2",
                            params![server, sha],
                            |r| r.get(0),
                        )
                        .optional()?;
                    Ok((have, sent.is_some()))
                })?;
                if have && !sent && !out.contains(&sha) {
                    out.push(sha);
                }
            }
        }
        Ok(out)
    }

    /// Chunk blobs referenced by stored documents and missing here.
    pub fn blobs_missing(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for d in self
            .documents()?
            .iter()
            .filter(|d| d.kind == LocalKind::Workout)
        {
            let id: DocumentId = d
                .doc_id
                .parse()
                .map_err(|e| Error::Corrupt(format!("document id: {e}")))?;
            for sha in chunk_shas(&self.load_document(&id)?) {
                if self.read(|c| local_blob(c, &sha))?.is_none() && !out.contains(&sha) {
                    out.push(sha);
                }
            }
        }
        Ok(out)
    }

    /// The stored bytes of a blob: a local sample chunk or a downloaded one.
    pub fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        self.read(|c| local_blob(c, sha256))
    }

    /// Keeps a downloaded blob after checking that its SHA-256 is the one asked for.
    pub fn put_blob(&self, sha256: &str, data: &[u8]) -> Result<()> {
        let got = sha256_hex(data);
        if got != sha256 {
            return Err(Error::Corrupt(format!(
                "blob {sha256}: content hashes to {got}"
            )));
        }
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO sync_blobs (sha256, data) VALUES (?1, ?2)",
                params![sha256, data],
            )?;
            Ok(())
        })
    }

    /// Remembers that `server` holds a blob.
    pub fn mark_uploaded(&self, server: &str, sha256: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO sync_uploaded (server, sha256) VALUES (?1, ?2)",
                params![server, sha256],
            )?;
            Ok(())
        })
    }
}

fn local_blob(c: &Connection, sha256: &str) -> Result<Option<Vec<u8>>> {
    let local: Option<Vec<u8>> = c
        .query_row(
            "SELECT data FROM sample_chunks WHERE sha256 = ?1 LIMIT 1",
            [sha256],
            |r| r.get(0),
        )
        .optional()?;
    if local.is_some() {
        return Ok(local);
    }
    Ok(c.query_row(
        "SELECT data FROM sync_blobs WHERE sha256 = ?1",
        [sha256],
        |r| r.get(0),
    )
    .optional()?)
}

/// The sha256 of every chunk a workout document references (lenient: bad entries skipped).
pub fn chunk_shas<D: ReadDoc>(doc: &D) -> Vec<String> {
    let Ok(Some((Value::Object(ObjType::List), list))) = doc.get(ROOT, "chunks") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for i in 0..doc.length(&list) {
        if let Ok(Some((Value::Object(ObjType::Map), m))) = doc.get(&list, i) {
            if let Ok(Some((Value::Scalar(s), _))) = doc.get(&m, "sha256") {
                if let Some(h) = s.as_str().filter(|h| docs::is_sha256_hex(h)) {
                    out.push(h.to_string());
                }
            }
        }
    }
    out
}
