//! The device's own copies of its Automerge documents, in the local store (schema v3, v4).
//!
//! | table | holds |
//! |---|---|
//! | `sync_docs` | one row per document: id (Base58Check), kind, the workout it describes, the saved bytes, the heads; the heads the read models reflect (`applied`), why not (`problem`), whether another user shared it (`shared`) |
//! | `sync_states` | per (server, document): automerge's persistent sync state (the shared heads) |
//! | `sync_uploaded` | per (server, sha256): blobs the server confirmed |
//! | `sync_blobs` | chunks downloaded for documents made on other devices, by sha256, until they are stored as the workout's sample chunks |
//! | `sync_received` | per workout received from another device: samples stored, records judged |
//!
//! Every stored workout has a workout document, made in the same transaction that stores the
//! workout (metadata, summary, laps, validation counts, and one chunk reference per stored sample
//! chunk with the SHA-256 of the chunk's stored bytes, the blob the server keeps, and its
//! sequence number, which another device needs to open a sealed chunk). The workout document's
//! id is the workout's UUID, so a workout and its document can be found from each other.
//!
//! The profile document is one per user, at an id derived from the server's user id; it is made
//! when the sync client has learned the user ([`Store::set_sync_user`]), from the shared first
//! change plus this device's profile values (ADR 0012).
//!
//! Title and notes are edited through the document ([`Store::set_workout_text`]): Automerge text,
//! so two devices editing offline merge. Whenever a workout document is saved, it is applied to
//! the read models in the same transaction ([`crate::sync::apply`]): the title and notes of a
//! workout recorded here, the whole entry of one recorded elsewhere.
//!
//! Saving never loses anything: [`Store::save_document`] merges what it is given into what is
//! stored, inside one transaction, so a sync round and a local edit that overlap both survive.

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Automerge, ChangeHash, ObjType, ReadDoc, Value, ROOT};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::crypto::StorageKey;
use crate::db::Store;
use crate::error::{Error, Result};
use crate::sample::Channel;
use crate::sync::apply::{self, Applied};
use crate::sync::docs::{
    self, ChunkRef, DocError, DocKind, DocLap, DocSummary, DocValidationCounts, Physiology,
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
    /// Why this document is not (fully) reflected in the history: refused by validation, its
    /// samples unreadable, ... `None` when all is well.
    pub problem: Option<String>,
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

/// A chunk reference with the chunk's sequence number and whether it is sealed.
type PlacedChunk = (ChunkRef, u64, bool);

/// Fills the content address of a workout's chunks that lack one and returns its chunk
/// references in (channel, seq) order.
fn chunk_refs(tx: &Transaction<'_>, workout_id: &str) -> Result<Vec<PlacedChunk>> {
    type Row = (i64, i64, i64, i64, i64, Option<String>, Vec<u8>, bool);
    let rows: Vec<Row> = {
        let mut stmt = tx.prepare_cached(
            "SELECT channel, seq, t_first, t_last, count, sha256, data, sealed FROM sample_chunks
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
                r.get(7)?,
            ))
        })?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    let mut out = Vec::with_capacity(rows.len());
    for (channel, seq, t_first, t_last, count, sha, data, sealed) in rows {
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
        let seq = u64::try_from(seq).map_err(|_| Error::Corrupt(format!("chunk seq {seq}")))?;
        out.push((
            ChunkRef {
                sha256: sha,
                channel: ch,
                start_time: Timestamp(t_first),
                end_time: Timestamp(t_last),
                count: count.unsigned_abs(),
            },
            seq,
            sealed,
        ));
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
    chunks: &[PlacedChunk],
) -> std::result::Result<AutoCommit, DocError> {
    let id = uuid::Uuid::parse_str(&s.id.0).unwrap_or_else(|_| uuid::Uuid::new_v4());
    let mut doc = docs::new_workout(Some(actor), id, s.metrics.sport, s.start_time)?;
    fill_workout(&mut doc, s, chunks)?;
    doc.commit();
    Ok(doc)
}

/// Writes a stored workout's content into its document: title and notes when it has them,
/// laps and chunk references (replacing any earlier lists), and the completed summary.
fn fill_workout(
    doc: &mut AutoCommit,
    s: &WorkoutSummary,
    chunks: &[PlacedChunk],
) -> std::result::Result<(), DocError> {
    let doc_has = |doc: &AutoCommit, key: &str| {
        doc.get(ROOT, key)
            .ok()
            .flatten()
            .is_some_and(|(_, id)| doc.length(&id) > 0)
    };
    // A fresh document has empty lists; a revived one gets new ones (its old chunks are gone).
    for list in ["laps", "chunks"] {
        if doc_has(doc, list) {
            doc.put_object(ROOT, list, ObjType::List)?;
        }
    }
    if let Some(t) = &s.title {
        docs::set_text(doc, "title", t)?;
    }
    if let Some(n) = &s.notes {
        docs::set_text(doc, "notes", n)?;
    }
    for lap in &s.laps {
        docs::push_lap(
            doc,
            &DocLap {
                start_time: lap.start_time,
                end_time: lap.end_time,
                timer_s: lap.timer_s,
                distance_m: lap.distance_m,
            },
        )?;
    }
    for (c, seq, sealed) in chunks {
        docs::push_chunk_at(doc, c, *seq, *sealed)?;
    }
    docs::set_sport_detected(doc, s.metrics.sport_detected)?;
    let m = &s.metrics;
    // The recorder can report a GPS average speed with a maximum of 0 (no speed sensor); the
    // document's validator (rightly) refuses an average above the maximum, so a maximum below
    // its average is written as unknown rather than as a contradiction.
    let max = |avg: Option<f64>, max: Option<f64>| match (avg, max) {
        (Some(a), Some(x)) if x < a => None,
        _ => max,
    };
    docs::complete_workout(
        doc,
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
    Ok(())
}

/// Makes the workout document of a workout just stored (its chunks already written), in the
/// caller's transaction. A workout that already has one keeps it, revived if it was cancelled
/// ([`revive_workout_doc`]).
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
    if let Some(doc_id) = exists {
        return revive_workout_doc(tx, &doc_id, s, now);
    }
    let chunks = chunk_refs(tx, &s.id.0)?;
    let actor = device_actor(tx)?;
    let mut doc = workout_document(actor, s, &chunks).map_err(doc_error)?;
    let heads = doc.get_heads();
    // The read model is the workout itself: applied at these heads.
    let heads = heads_text(&heads);
    tx.execute(
        "INSERT INTO sync_docs (doc_id, kind, workout_id, bytes, heads, updated_at, applied)
         VALUES (?1, 'workout', ?2, ?3, ?4, ?5, ?4)",
        params![
            doc_id_of_workout(&s.id.0).to_string(),
            s.id.0,
            doc.save(),
            heads,
            now.0
        ],
    )?;
    Ok(())
}

/// A workout stored again after it was deleted (the same file imported again: the same id)
/// brings its `cancelled` document back as completed, with the new chunks, so the other devices
/// get it back at the next sync. A document in any other state is left alone.
fn revive_workout_doc(
    tx: &Transaction<'_>,
    doc_id: &str,
    s: &WorkoutSummary,
    now: Timestamp,
) -> Result<()> {
    let bytes: Vec<u8> = tx.query_row(
        "SELECT bytes FROM sync_docs WHERE doc_id = ?1",
        [doc_id],
        |r| r.get(0),
    )?;
    if bytes.is_empty() {
        return Ok(());
    }
    let mut doc =
        AutoCommit::load(&bytes).map_err(|e| Error::Corrupt(format!("automerge document: {e}")))?;
    let state = doc
        .get(ROOT, "state")
        .ok()
        .flatten()
        .and_then(|(v, _)| v.into_string().ok());
    if state.as_deref() != Some(docs::WorkoutDocState::Cancelled.as_str()) {
        return Ok(());
    }
    doc.set_actor(device_actor(tx)?);
    let chunks = chunk_refs(tx, &s.id.0)?;
    fill_workout(&mut doc, s, &chunks).map_err(doc_error)?;
    // What the deleted workout had and the stored one does not: the document says what is
    // stored now (the workout row has no title after a re-import, so neither does the document).
    (|| -> std::result::Result<(), DocError> {
        doc.put(ROOT, "sport", s.metrics.sport.as_str())?;
        doc.put(ROOT, "startTime", s.start_time.as_millis())?;
        for (key, value) in [("title", &s.title), ("notes", &s.notes)] {
            if value.is_none() {
                docs::set_text(&mut doc, key, "")?;
            }
        }
        Ok(())
    })()
    .map_err(doc_error)?;
    doc.commit();
    let heads = heads_text(&doc.get_heads());
    tx.execute(
        "UPDATE sync_docs SET bytes = ?1, heads = ?2, applied = ?2, problem = NULL, updated_at = ?3
         WHERE doc_id = ?4",
        params![doc.save(), heads, now.0, doc_id],
    )?;
    Ok(())
}

/// Marks a deleted workout's document `cancelled` (see [`Store::delete_workout`]). The workout
/// row is already gone; the document's `updated_at` is left alone (no clock here).
pub(crate) fn cancel_workout_doc(tx: &Transaction<'_>, workout_id: &str) -> Result<()> {
    let found: Option<(String, Vec<u8>)> = tx
        .query_row(
            "SELECT doc_id, bytes FROM sync_docs WHERE workout_id = ?1",
            [workout_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((doc_id, bytes)) = found else {
        return Ok(());
    };
    if bytes.is_empty() {
        return Ok(());
    }
    let mut doc =
        AutoCommit::load(&bytes).map_err(|e| Error::Corrupt(format!("automerge document: {e}")))?;
    doc.set_actor(device_actor(tx)?);
    doc.put(ROOT, "state", docs::WorkoutDocState::Cancelled.as_str())
        .map_err(|e| Error::Invalid(e.to_string()))?;
    doc.commit();
    let heads = heads_text(&doc.get_heads());
    tx.execute(
        "UPDATE sync_docs SET bytes = ?1, heads = ?2, applied = ?2, problem = NULL
         WHERE doc_id = ?3",
        params![doc.save(), heads, doc_id],
    )?;
    Ok(())
}

fn meta_text(tx: &Connection, key: &str) -> Result<Option<String>> {
    let found: Option<Vec<u8>> = tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    found
        .map(|b| String::from_utf8(b).map_err(|e| Error::Corrupt(format!("meta {key}: {e}"))))
        .transpose()
}

fn put_meta_text(tx: &Transaction<'_>, key: &str, value: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value.as_bytes()],
    )?;
    Ok(())
}

/// This device's profile values (the set ones) written into a profile document. A value the
/// document's validator refuses (the local profile is checked more loosely) is left out rather
/// than making a change the server would refuse.
fn write_local_profile(tx: &Transaction<'_>, doc: &mut AutoCommit, now: Timestamp) -> Result<()> {
    let json: Option<String> = tx
        .query_row("SELECT json FROM profile WHERE id = 1", [], |r| r.get(0))
        .optional()?;
    let p: crate::gear::AthleteProfile = match json {
        Some(j) => serde_json::from_str(&j).map_err(|e| Error::Corrupt(format!("profile: {e}")))?,
        None => return Ok(()),
    };
    let ctx = docs::ValidationContext { now };
    let fields = [
        Physiology {
            weight_kg: p.weight_kg,
            ..Physiology::default()
        },
        Physiology {
            birth_year: p.birth_year.map(i64::from),
            ..Physiology::default()
        },
        Physiology {
            hr_max_bpm: p.hr_max_bpm.map(f64::from),
            ..Physiology::default()
        },
        Physiology {
            hr_rest_bpm: p.hr_rest_bpm.map(f64::from),
            ..Physiology::default()
        },
        Physiology {
            ftp_w: p.ftp_w.map(f64::from),
            ..Physiology::default()
        },
    ];
    for f in fields {
        let mut trial = doc.fork();
        if !docs::put_physiology(&mut trial, &f).map_err(doc_error)? {
            continue;
        }
        trial.commit();
        if docs::validate(trial.document(), &ctx).is_ok() {
            docs::put_physiology(doc, &f).map_err(doc_error)?;
        }
    }
    Ok(())
}

/// Makes the user's profile document here (or merges into the copy already held), once per
/// user: the shared first change, then this device's own profile values as its own change.
/// Does nothing until the sync client has learned the user ([`Store::set_sync_user`]).
fn ensure_user_profile(tx: &Transaction<'_>, now: Timestamp) -> Result<Option<DocumentId>> {
    let Some(user) = meta_text(tx, "sync_user_id")? else {
        return Ok(None);
    };
    let (id, mut doc) = docs::new_user_profile(&user).map_err(doc_error)?;
    if meta_text(tx, "sync_profile_merged")?.as_deref() == Some(user.as_str()) {
        return Ok(Some(id));
    }
    // On top of what is already held (a copy another device made), so this device's values
    // are a later change than the ones it has seen.
    if let Some(b) = stored_bytes(tx, &id)?.filter(|b| !b.is_empty()) {
        let mut held = load(&b)?;
        held.merge(&mut doc.document().clone())
            .map_err(|e| Error::Corrupt(format!("profile document: {e}")))?;
        doc = AutoCommit::load(&held.save())
            .map_err(|e| Error::Corrupt(format!("profile document: {e}")))?;
    }
    doc.set_actor(device_actor(tx)?);
    write_local_profile(tx, &mut doc, now)?;
    doc.commit();
    save_merged(tx, &id, doc.document(), now, None)?;
    put_meta_text(tx, "sync_profile_merged", &user)?;
    Ok(Some(id))
}

/// Creates the documents of every stored workout lacking one, and the user's profile document
/// once the user is known.
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
    let had_profile = match meta_text(tx, "sync_user_id")? {
        Some(u) => stored_bytes(tx, &docs::profile_document_id(&u))?.is_some(),
        None => true,
    };
    if ensure_user_profile(tx, now)?.is_some() && !had_profile {
        made += 1;
    }
    Ok(made)
}

/// The data step of migration v3. It used to make the documents; v4's step does now, so that
/// they are made by the code that knows the v4 columns.
pub(crate) fn migrate_v3_documents(_tx: &Transaction<'_>, _key: Option<&StorageKey>) -> Result<()> {
    Ok(())
}

/// The data step of migration v4. Every workout already stored gets its document; the
/// documents an earlier build made for workouts recorded here get what another device needs to
/// open and judge them (each chunk's `seq` and `sealed`, `sportDetected`); all of them count as
/// applied. A profile document made under a random id and never synced is dropped (the
/// profile document is now one per user, made when the user is known; a synced one stays on
/// the server and is no longer written). Documents received from other devices are applied at
/// the next sync round, which has a clock.
pub(crate) fn migrate_v4_documents(tx: &Transaction<'_>, _key: Option<&StorageKey>) -> Result<()> {
    // A migration has no clock; new documents' `updated_at` is 0 ("before sync existed").
    ensure_documents_tx(tx, Timestamp(0))?;
    let own: Vec<(String, String, Vec<u8>, String)> = {
        let mut stmt = tx.prepare(
            "SELECT d.doc_id, d.workout_id, d.bytes, w.summary_json FROM sync_docs d
             JOIN workout_docs w ON w.workout_id = d.workout_id
             WHERE d.kind = 'workout' ORDER BY d.doc_id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    let actor = device_actor(tx)?;
    for (doc_id, workout_id, bytes, summary_json) in own {
        if bytes.is_empty() {
            continue;
        }
        let mut doc = AutoCommit::load(&bytes)
            .map_err(|e| Error::Corrupt(format!("automerge document {doc_id}: {e}")))?;
        doc.set_actor(actor.clone());
        let mut changed = false;
        for (i, sha) in chunk_list(&doc) {
            let Some(sha) = sha else { continue };
            let place: Option<(i64, bool)> = tx
                .query_row(
                    "SELECT seq, sealed FROM sample_chunks WHERE workout_id = ?1 AND sha256 = ?2",
                    params![workout_id, sha],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((seq, sealed)) = place {
                let seq = u64::try_from(seq).map_err(|_| Error::Corrupt(format!("seq {seq}")))?;
                docs::set_chunk_place(&mut doc, i, seq, sealed).map_err(doc_error)?;
                changed = true;
            }
        }
        if doc.get(ROOT, "sportDetected").ok().flatten().is_none() {
            if let Ok(s) = serde_json::from_str::<WorkoutSummary>(&summary_json) {
                docs::set_sport_detected(&mut doc, s.metrics.sport_detected).map_err(doc_error)?;
                changed = true;
            }
        }
        if changed {
            doc.commit();
        }
        let heads = heads_text(&doc.get_heads());
        tx.execute(
            "UPDATE sync_docs SET bytes = ?1, heads = ?2, applied = ?2 WHERE doc_id = ?3",
            params![doc.save(), heads, doc_id],
        )?;
    }
    tx.execute(
        "DELETE FROM sync_docs WHERE kind = 'profile'
           AND NOT EXISTS (SELECT 1 FROM sync_states s WHERE s.doc_id = sync_docs.doc_id)",
        [],
    )?;
    Ok(())
}

/// The chunk references of a workout document lacking a `seq`: (index, sha256).
fn chunk_list<D: ReadDoc>(doc: &D) -> Vec<(usize, Option<String>)> {
    let Ok(Some((Value::Object(ObjType::List), list))) = doc.get(ROOT, "chunks") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for i in 0..doc.length(&list) {
        if let Ok(Some((Value::Object(ObjType::Map), m))) = doc.get(&list, i) {
            if doc.get(&m, "seq").ok().flatten().is_some() {
                continue;
            }
            let sha = match doc.get(&m, "sha256") {
                Ok(Some((Value::Scalar(s), _))) => s.as_str().map(str::to_string),
                _ => None,
            };
            out.push((i, sha));
        }
    }
    out
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

/// Merges `doc` into the stored copy (creating it), refreshes heads and kind, and applies a
/// workout document to the read models ([`crate::sync::apply`]). Returns the stored heads after
/// the merge, and what applying did (`None` when nothing changed or it is not a workout).
pub(crate) fn save_merged(
    tx: &Transaction<'_>,
    id: &DocumentId,
    doc: &Automerge,
    now: Timestamp,
    key: Option<&StorageKey>,
) -> Result<(Vec<ChangeHash>, Option<Applied>)> {
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
        return Ok((heads, None));
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
    let applied = if kind == LocalKind::Workout {
        Some(apply::apply_workout_doc(tx, id, &stored, now, key, true)?)
    } else {
        None
    };
    Ok((heads, applied))
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
                "SELECT doc_id, kind, workout_id, heads, updated_at, problem FROM sync_docs
                 ORDER BY doc_id",
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
                    problem: r.get(5)?,
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
        let key = self.key();
        self.write(|tx| save_merged(tx, id, doc, now, key).map(|(h, _)| h))
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
            save_merged(tx, id, doc.document(), now, self.key()).map(|(h, _)| h)
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
        self.save_synced_applied(server, id, doc, state, now)
            .map(|(h, _)| h)
    }

    /// [`Store::save_synced`], also saying what applying the document to the read models did.
    pub fn save_synced_applied(
        &self,
        server: &str,
        id: &DocumentId,
        doc: &Automerge,
        state: Option<&[u8]>,
        now: Timestamp,
    ) -> Result<(Vec<ChangeHash>, Option<Applied>)> {
        let key = self.key();
        self.write(|tx| {
            let saved = if doc.get_heads().is_empty() {
                (Vec::new(), None)
            } else {
                save_merged(tx, id, doc, now, key)?
            };
            if let Some(s) = state {
                tx.execute(
                    "INSERT INTO sync_states (server, doc_id, state) VALUES (?1, ?2, ?3)
                     ON CONFLICT(server, doc_id) DO UPDATE SET state = excluded.state",
                    params![server, id.to_string(), s],
                )?;
            }
            Ok(saved)
        })
    }

    /// Remembers the user this database syncs as (the server's user id, from `GET
    /// /api/v1/me`) and makes the user's profile document: one per user, at an id derived from
    /// the user (ADR 0012), with this device's profile values merged in. A database that already
    /// belongs to another user is refused with [`Error::Conflict`]: its workouts must not be
    /// sent to someone else's account. Returns the profile document's id.
    pub fn set_sync_user(&self, user_id: &str, now: Timestamp) -> Result<DocumentId> {
        if user_id.is_empty() || user_id.len() > 200 {
            return Err(Error::Invalid(format!("user id {user_id:?}")));
        }
        self.write(|tx| {
            match meta_text(tx, "sync_user_id")? {
                Some(u) if u != user_id => {
                    return Err(Error::Conflict(format!(
                        "this database syncs as user {u}, not {user_id}"
                    )))
                }
                Some(_) => {}
                None => put_meta_text(tx, "sync_user_id", user_id)?,
            }
            ensure_user_profile(tx, now)?
                .ok_or_else(|| Error::Corrupt("the sync user was not kept".into()))
        })
    }

    /// The user this database syncs as, once a sync round has learned it.
    pub fn sync_user(&self) -> Result<Option<String>> {
        self.read(|c| meta_text(c, "sync_user_id"))
    }

    /// The user's profile document, once the user is known.
    pub fn profile_document_id(&self) -> Result<Option<DocumentId>> {
        Ok(self.sync_user()?.map(|u| docs::profile_document_id(&u)))
    }

    /// Records whether a document belongs to another user who shared it with this one (the
    /// server's listing says so). Shared workouts are not this user's history.
    pub fn set_document_shared(&self, id: &DocumentId, shared: bool) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE sync_docs SET shared = ?1 WHERE doc_id = ?2 AND shared <> ?1",
                params![shared, id.to_string()],
            )?;
            Ok(())
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
            let doc = self.load_document(&id)?;
            // A cancelled workout's samples are gone here and nowhere needed.
            if read_text(&doc, "state").as_deref()
                == Some(docs::WorkoutDocState::Cancelled.as_str())
            {
                continue;
            }
            for sha in chunk_shas(&doc) {
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

pub(crate) fn local_blob(c: &Connection, sha256: &str) -> Result<Option<Vec<u8>>> {
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
