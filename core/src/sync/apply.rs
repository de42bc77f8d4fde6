//! Workout documents into the store's read models (schema v4).
//!
//! A workout document that arrives from another device of the user (or changes there) becomes
//! a history entry here, in the same transaction that stores the document: the `workouts` row
//! that `list`, `stats` and `streaks` read, the summary `summary` returns, and, once the chunk
//! blobs are here, the sample chunks (`samples`, `route`) and personal records.
//!
//! - **What the figures are.** The recording device is the authority for a workout (design
//!   brief, "What lives where"), so every figure the document carries (times, elapsed, timer and
//!   moving time, distance, ascent, calories, speeds, heart rate, power, cadence, SpO2, laps,
//!   validation counts, title, notes) is shown as the document says. What the document does
//!   not carry (zones, TRIMP, RMSSD, normalized power, splits, best efforts, descent, ...) is
//!   computed here from the opened chunks by the same metrics code, over the document's start
//!   and end with this device's profile. The document carries no pauses, so for a workout that
//!   was paused those derived figures count the paused time as running.
//! - **Idempotent.** The row and summary are upserts keyed by the workout id, the chunks keep
//!   their place (`workout, channel, seq`) and bytes, and records are judged once per workout:
//!   applying a document twice, or a later version of it, updates the entry and never makes a
//!   second one.
//! - **Only the user's own workouts.** A document another user shared with this one (the
//!   server's listing says so, [`Store::set_document_shared`]) is not this user's history.
//! - **Cancelled means gone**: a document in state `cancelled` removes the workout, its
//!   samples and its records from this device, whichever device recorded it
//!   ([`Store::delete_workout`] writes that state, so a deletion travels).
//! - **Refused, and said so.** A document that fails validation is not applied; the read model
//!   keeps what it showed, the reason is kept on the document ([`DocInfo::problem`]) and the
//!   sync round reports it. It is tried again on later rounds (validation depends on the clock).
//! - **Personal records only from validated data** (RULES.md): judged by the same rules as a
//!   local workout ([`crate::records::new_records`]) on the summary computed from the opened
//!   samples, whose validation report comes from this device's own validator; and only when the
//!   document says the sport was chosen (not guessed), no sample was rejected or flagged on the
//!   recording device (the document does not say on which channel) and the workout was not
//!   paused (best efforts are timed on the timer).
//!
//! Workouts recorded on this device keep their own summary; their documents only move the
//! title and notes (and remove them when cancelled).
//!
//! [`DocInfo::problem`]: crate::sync::local::DocInfo::problem

use automerge::{AutoCommit, Automerge};
use rusqlite::{params, OptionalExtension, Transaction};

use crate::codec;
use crate::crypto::{CryptoError, StorageKey};
use crate::db::Store;
use crate::error::{Error, Result};
use crate::event::CompletionReason;
use crate::gear::AthleteProfile;
use crate::metrics::{self, MetricsSummary, TimerLog};
use crate::profile::ResolvedProfile;
use crate::sample::Sample;
use crate::store::{chunk_aad, store_records, to_json};
use crate::sync::docs::{
    self, ChunkPlace, ChunkRef, DocError, DocKind, ValidationContext, WorkoutDoc, WorkoutDocState,
};
use crate::sync::local::{heads_text, read_text};
use crate::sync::protocol::DocumentId;
use crate::time::Timestamp;
use crate::validation::ValidationReport;
use crate::workout::{LapSummary, WorkoutId, WorkoutSummary};

/// What applying a document did to the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing visible changed (not a workout, unchanged, or refused).
    None,
    /// A workout entered the history.
    Added,
    /// A workout's entry changed: an edit made elsewhere, or its samples arrived.
    Updated,
    /// A workout left the history (its document says cancelled, or it is not this user's).
    Removed,
}

/// The outcome of applying one document. Plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub change: Change,
    /// Why the document, or its samples, could not be applied; `None` when all went well or
    /// the samples are still on their way.
    pub problem: Option<String>,
}

impl Applied {
    const NOTHING: Applied = Applied {
        change: Change::None,
        problem: None,
    };
}

/// Where a received workout's samples stand (`sync_received.samples`).
const SAMPLES_WAITING: i64 = 0;
const SAMPLES_STORED: i64 = 1;
/// The chunks are all here but cannot be opened or do not match their references; tried again
/// only when the document changes.
const SAMPLES_UNREADABLE: i64 = 2;

/// Reads a workout document as the current schema version; an older one through a migrated
/// copy (the stored document is left as it is).
fn read_workout(doc: &Automerge, now: Timestamp) -> std::result::Result<WorkoutDoc, DocError> {
    let ctx = ValidationContext { now };
    match docs::kind_of(doc)? {
        (DocKind::Workout, v) if v < docs::WORKOUT_SCHEMA_VERSION => {
            let mut copy = AutoCommit::load(&doc.save())?;
            docs::migrate(&mut copy)?;
            WorkoutDoc::read(copy.document(), &ctx)
        }
        _ => WorkoutDoc::read(doc, &ctx),
    }
}

fn set_problem(tx: &Transaction<'_>, doc_id: &str, problem: Option<&str>) -> Result<()> {
    tx.execute(
        "UPDATE sync_docs SET problem = ?1 WHERE doc_id = ?2",
        params![problem, doc_id],
    )?;
    Ok(())
}

fn mark_applied(tx: &Transaction<'_>, doc_id: &str, heads: &str) -> Result<()> {
    tx.execute(
        "UPDATE sync_docs SET applied = ?1 WHERE doc_id = ?2",
        params![heads, doc_id],
    )?;
    Ok(())
}

/// Applies a stored workout document to the read models, in the caller's transaction. Never
/// fails on the document's content (that is reported in the result); only storage errors fail.
/// `doc_changed` is false when the same heads were applied before (a retry for blobs that
/// arrived since, or for a refusal that may have lapsed).
pub(crate) fn apply_workout_doc(
    tx: &Transaction<'_>,
    id: &DocumentId,
    doc: &Automerge,
    now: Timestamp,
    key: Option<&StorageKey>,
    doc_changed: bool,
) -> Result<Applied> {
    let doc_id = id.to_string();
    let heads = heads_text(&doc.get_heads());
    let row: Option<(Option<String>, bool)> = tx
        .query_row(
            "SELECT workout_id, shared FROM sync_docs WHERE doc_id = ?1",
            [&doc_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((claimed, shared)) = row else {
        return Ok(Applied::NOTHING);
    };
    // The workout a document describes is claimed from its `id` before validation (the first
    // document to name a workout keeps it), so an edit can find the document even while it
    // does not validate.
    let named = read_text(doc, "id").filter(|s| !s.is_empty());
    let workout_id = match (claimed, named) {
        (Some(c), _) => c,
        (None, Some(n)) => {
            tx.execute(
                "UPDATE OR IGNORE sync_docs SET workout_id = ?1 WHERE doc_id = ?2",
                params![n, doc_id],
            )?;
            let got: Option<String> = tx.query_row(
                "SELECT workout_id FROM sync_docs WHERE doc_id = ?1",
                [&doc_id],
                |r| r.get(0),
            )?;
            if got.as_deref() != Some(n.as_str()) {
                let p = format!("not applied: workout {n} is described by another document");
                set_problem(tx, &doc_id, Some(&p))?;
                return Ok(Applied {
                    change: Change::None,
                    problem: Some(p),
                });
            }
            n
        }
        (None, None) => String::new(),
    };
    let w = match read_workout(doc, now) {
        Ok(w) => w,
        Err(e) => {
            let p = format!("not applied: {e}");
            set_problem(tx, &doc_id, Some(&p))?;
            return Ok(Applied {
                change: Change::None,
                problem: Some(p),
            });
        }
    };
    if workout_id != w.id.to_string() {
        let p = format!(
            "not applied: describes workout {}, but this document belongs to workout {workout_id}",
            w.id
        );
        set_problem(tx, &doc_id, Some(&p))?;
        return Ok(Applied {
            change: Change::None,
            problem: Some(p),
        });
    }
    let exists: Option<bool> = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sync_received r WHERE r.workout_id = w.id)
             FROM workouts w WHERE w.id = ?1",
            [&workout_id],
            |r| r.get(0),
        )
        .optional()?;
    let change = match (exists, w.state) {
        // Someone else's workout shared with this user: not this user's history.
        (Some(true), _) if shared => {
            tx.execute("DELETE FROM workouts WHERE id = ?1", [&workout_id])?;
            Applied {
                change: Change::Removed,
                problem: None,
            }
        }
        (_, _) if shared => Applied::NOTHING,
        (Some(_), WorkoutDocState::Cancelled) => {
            tx.execute("DELETE FROM workouts WHERE id = ?1", [&workout_id])?;
            Applied {
                change: Change::Removed,
                problem: None,
            }
        }
        (None, WorkoutDocState::Cancelled | WorkoutDocState::Recording) => Applied::NOTHING,
        // Recorded here: the summary is this device's own; title and notes follow the document.
        (Some(false), _) => {
            project_text(tx, &workout_id, &w)?;
            Applied {
                change: if doc_changed {
                    Change::Updated
                } else {
                    Change::None
                },
                problem: None,
            }
        }
        // A recording elsewhere that went back to `recording` is left as last completed.
        (Some(true), WorkoutDocState::Recording) => Applied::NOTHING,
        (received, WorkoutDocState::Completed) => {
            let mut a = upsert_received(tx, &doc_id, &workout_id, &w, now, key, doc_changed)?;
            if received.is_none() {
                a.change = Change::Added;
            }
            a
        }
    };
    set_problem(tx, &doc_id, change.problem.as_deref())?;
    mark_applied(tx, &doc_id, &heads)?;
    Ok(change)
}

fn nonempty(s: Option<&String>) -> Option<String> {
    s.filter(|t| !t.is_empty()).cloned()
}

fn project_text(tx: &Transaction<'_>, workout_id: &str, w: &WorkoutDoc) -> Result<()> {
    let title = nonempty(w.title.as_ref());
    let notes = nonempty(w.notes.as_ref());
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

/// This device's profile, as the metrics need it.
fn device_profile(tx: &Transaction<'_>, now: Timestamp) -> Result<ResolvedProfile> {
    let json: Option<String> = tx
        .query_row("SELECT json FROM profile WHERE id = 1", [], |r| r.get(0))
        .optional()?;
    let p: AthleteProfile = match json {
        Some(j) => serde_json::from_str(&j).map_err(|e| Error::Corrupt(format!("profile: {e}")))?,
        None => AthleteProfile::default(),
    };
    Ok(p.to_profile(now).resolve())
}

/// The document's figures over whatever was computed.
fn overlay(m: &mut MetricsSummary, w: &WorkoutDoc) {
    m.sport = w.sport;
    m.sport_detected = w.sport_detected.unwrap_or(false);
    if let Some(s) = &w.summary {
        m.elapsed_s = s.elapsed_s;
        m.timer_s = s.timer_s;
        m.moving_s = s.moving_s;
        m.calories_kcal = s.calories_kcal;
        m.distance_m = s.distance_m;
        m.ascent_m = s.ascent_m;
        m.avg_speed_mps = s.avg_speed_mps;
        m.max_speed_mps = s.max_speed_mps;
        m.avg_pace_s_per_km = s.avg_speed_mps.filter(|v| *v > 0.0).map(|v| 1000.0 / v);
        m.avg_hr_bpm = s.avg_hr_bpm;
        m.max_hr_bpm = s.max_hr_bpm;
        m.avg_power_w = s.avg_power_w;
        m.max_power_w = s.max_power_w;
        m.avg_cadence_rpm = s.avg_cadence_rpm;
        m.max_cadence_rpm = s.max_cadence_rpm;
        m.min_spo2_pct = s.min_spo2_pct;
    }
}

/// The timer of a received workout: running from start to end (the document has no pauses).
fn timer_of(w: &WorkoutDoc, end: Timestamp) -> TimerLog {
    let mut t = TimerLog::new(w.start_time.0);
    t.set(end.0, false);
    t
}

fn summary_of(
    w: &WorkoutDoc,
    metrics: MetricsSummary,
    validation: ValidationReport,
    profile: ResolvedProfile,
) -> WorkoutSummary {
    let end = w.end_time.unwrap_or(w.start_time);
    let mut metrics = metrics;
    overlay(&mut metrics, w);
    WorkoutSummary {
        id: WorkoutId(w.id.to_string()),
        title: nonempty(w.title.as_ref()),
        notes: nonempty(w.notes.as_ref()),
        start_time: w.start_time,
        end_time: end,
        completion: CompletionReason::Completed,
        metrics,
        laps: w
            .laps
            .iter()
            .zip(1_u32..)
            .map(|(l, index)| LapSummary {
                index,
                start_time: l.start_time,
                end_time: l.end_time,
                timer_s: l.timer_s,
                distance_m: l.distance_m,
                avg_hr_bpm: None,
                avg_power_w: None,
                ascent_m: 0.0,
            })
            .collect(),
        validation,
        samples: w.validation.samples,
        rejected: w.validation.rejected,
        flagged: w.validation.flagged,
        profile,
    }
}

/// One chunk, fetched and opened.
struct Opened<'a> {
    chunk: &'a ChunkRef,
    seq: u64,
    sealed: bool,
    data: Vec<u8>,
    samples: Vec<Sample>,
}

enum Chunks<'a> {
    /// Some blobs are not here yet (or a reference lacks `seq`, which the recording device
    /// fills in when it next syncs): the reason, if it is worth telling.
    Waiting(Option<String>),
    Unreadable(String),
    Ready(Vec<Opened<'a>>),
}

fn open_chunks<'a>(
    tx: &Transaction<'_>,
    key: Option<&StorageKey>,
    workout_id: &str,
    w: &'a WorkoutDoc,
) -> Result<Chunks<'a>> {
    let mut out = Vec::with_capacity(w.chunks.len());
    for (c, ChunkPlace { seq, sealed }) in w.chunks.iter().zip(&w.chunk_places) {
        let Some(seq) = *seq else {
            return Ok(Chunks::Waiting(Some(format!(
                "samples waiting: chunk {} has no seq yet (the recording device adds it when it syncs with this build)",
                c.sha256
            ))));
        };
        let Some(data) = crate::sync::local::local_blob(tx, &c.sha256)? else {
            return Ok(Chunks::Waiting(None));
        };
        let seq_i = i64::try_from(seq).map_err(|_| Error::Invalid(format!("seq {seq}")))?;
        let plain = if *sealed {
            let Some(key) = key else {
                return Ok(Chunks::Unreadable(
                    "samples not readable: the health channels are sealed and this store has no storage key".into(),
                ));
            };
            match key.open(&chunk_aad(workout_id, c.channel, seq_i), &data) {
                Ok(p) => p,
                Err(CryptoError::Authentication | CryptoError::Truncated) => {
                    return Ok(Chunks::Unreadable(format!(
                        "samples not readable: the {} chunk {} does not open with this device's storage key \
                         (devices of one user must share the key) or was altered",
                        c.channel.as_str(),
                        c.sha256
                    )))
                }
                Err(e) => return Err(Error::Crypto(e)),
            }
        } else {
            data.clone()
        };
        let (got, samples) = match codec::decode(&plain) {
            Ok(x) => x,
            Err(e) => {
                return Ok(Chunks::Unreadable(format!(
                    "samples not readable: chunk {}: {e}",
                    c.sha256
                )))
            }
        };
        let matches = got == c.channel
            && samples.len() as u64 == c.count
            && samples.first().map(|s| s.t) == Some(c.start_time)
            && samples.last().map(|s| s.t) == Some(c.end_time);
        if !matches {
            return Ok(Chunks::Unreadable(format!(
                "samples not readable: chunk {} does not hold what its reference says",
                c.sha256
            )));
        }
        out.push(Opened {
            chunk: c,
            seq,
            sealed: *sealed,
            data,
            samples,
        });
    }
    Ok(Chunks::Ready(out))
}

/// Writes (or refreshes) the entry of a workout recorded elsewhere. `doc_changed` retries
/// samples that could not be read before (the references may have been completed since).
fn upsert_received(
    tx: &Transaction<'_>,
    doc_id: &str,
    workout_id: &str,
    w: &WorkoutDoc,
    now: Timestamp,
    key: Option<&StorageKey>,
    doc_changed: bool,
) -> Result<Applied> {
    let state: Option<(i64, bool)> = tx
        .query_row(
            "SELECT samples, records_judged FROM sync_received WHERE workout_id = ?1",
            [workout_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (samples_state, judged) = state.unwrap_or((SAMPLES_WAITING, false));
    let try_samples =
        samples_state == SAMPLES_WAITING || (samples_state == SAMPLES_UNREADABLE && doc_changed);
    let profile = device_profile(tx, now)?;
    let end = w.end_time.unwrap_or(w.start_time);
    let mut problem = None;
    if samples_state == SAMPLES_UNREADABLE && !try_samples {
        // Still unreadable: keep saying why.
        problem = tx
            .query_row(
                "SELECT problem FROM sync_docs WHERE doc_id = ?1",
                [doc_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
    }
    let mut new_state = samples_state;
    let mut computed: Option<WorkoutSummary> = None;
    if try_samples {
        match open_chunks(tx, key, workout_id, w)? {
            Chunks::Waiting(why) => {
                new_state = SAMPLES_WAITING;
                problem = why;
            }
            Chunks::Unreadable(why) => {
                new_state = SAMPLES_UNREADABLE;
                problem = Some(why);
            }
            Chunks::Ready(chunks) => {
                let mut all = Vec::new();
                for o in chunks {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO sample_chunks
                            (workout_id, channel, seq, t_first, t_last, count, sealed, data, sha256)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?
                    .execute(params![
                        workout_id,
                        o.chunk.channel.index() as i64,
                        i64::try_from(o.seq).unwrap_or(i64::MAX),
                        o.chunk.start_time.0,
                        o.chunk.end_time.0,
                        i64::try_from(o.chunk.count).unwrap_or(i64::MAX),
                        o.sealed,
                        o.data,
                        o.chunk.sha256,
                    ])?;
                    // Kept once: the chunk is now found by its hash among the sample chunks.
                    tx.execute(
                        "DELETE FROM sync_blobs WHERE sha256 = ?1",
                        [&o.chunk.sha256],
                    )?;
                    all.extend(o.samples);
                }
                let (m, report) =
                    metrics::compute(Some(w.sport), profile, &all, &timer_of(w, end), end.0);
                computed = Some(summary_of(w, m, report, profile));
                new_state = SAMPLES_STORED;
            }
        }
    }
    let summary = match computed {
        Some(s) => s,
        None => {
            let stored: Option<String> = tx
                .query_row(
                    "SELECT summary_json FROM workout_docs WHERE workout_id = ?1",
                    [workout_id],
                    |r| r.get(0),
                )
                .optional()?;
            match stored.map(|j| serde_json::from_str::<WorkoutSummary>(&j)) {
                // What was computed from the samples stays; the document's figures go on top.
                Some(Ok(s)) if samples_state == SAMPLES_STORED => {
                    summary_of(w, s.metrics, s.validation, s.profile)
                }
                _ => {
                    let (m, report) =
                        metrics::compute(Some(w.sport), profile, &[], &timer_of(w, end), end.0);
                    summary_of(w, m, report, profile)
                }
            }
        }
    };
    let m = &summary.metrics;
    tx.prepare_cached(
        "INSERT INTO workouts (id, sport, start_time, end_time, timer_s, distance_m, created_at,
            status, elapsed_s, moving_s, calories_kcal, ascent_m, avg_hr, title)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'completed', ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT(id) DO UPDATE SET sport = excluded.sport, start_time = excluded.start_time,
            end_time = excluded.end_time, timer_s = excluded.timer_s,
            distance_m = excluded.distance_m, status = 'completed',
            elapsed_s = excluded.elapsed_s, moving_s = excluded.moving_s,
            calories_kcal = excluded.calories_kcal, ascent_m = excluded.ascent_m,
            avg_hr = excluded.avg_hr, title = excluded.title",
    )?
    .execute(params![
        workout_id,
        m.sport.as_str(),
        summary.start_time.0,
        summary.end_time.0,
        m.timer_s,
        m.distance_m,
        now.0,
        m.elapsed_s,
        m.moving_s,
        m.calories_kcal,
        m.ascent_m,
        m.avg_hr_bpm,
        summary.title,
    ])?;
    tx.prepare_cached(
        "INSERT INTO workout_docs (workout_id, summary_json) VALUES (?1, ?2)
         ON CONFLICT(workout_id) DO UPDATE SET summary_json = excluded.summary_json",
    )?
    .execute(params![workout_id, to_json(&summary)?])?;
    let mut judged_now = judged;
    if new_state == SAMPLES_STORED && !judged {
        if records_allowed(w) {
            store_records(tx, &summary)?;
        }
        judged_now = true;
    }
    tx.execute(
        "INSERT INTO sync_received (workout_id, samples, records_judged) VALUES (?1, ?2, ?3)
         ON CONFLICT(workout_id) DO UPDATE SET samples = excluded.samples,
            records_judged = excluded.records_judged",
        params![workout_id, new_state, judged_now],
    )?;
    let stored_now = new_state == SAMPLES_STORED && samples_state != SAMPLES_STORED;
    Ok(Applied {
        change: if doc_changed || stored_now {
            Change::Updated
        } else {
            Change::None
        },
        problem,
    })
}

/// RULES.md: personal records only from validated data. See the module documentation.
fn records_allowed(w: &WorkoutDoc) -> bool {
    let unpaused = w
        .summary
        .is_some_and(|s| (s.elapsed_s - s.timer_s).abs() <= docs::ELAPSED_TOLERANCE_S);
    w.sport_detected == Some(false)
        && w.validation.rejected == 0
        && w.validation.flagged == 0
        && unpaused
}

/// Applies what is pending: documents stored but not applied at their current heads (received
/// by an older build, refused before, or tracked and filled since), and received workouts whose
/// chunks were still missing.
pub(crate) fn apply_pending(
    tx: &Transaction<'_>,
    now: Timestamp,
    key: Option<&StorageKey>,
) -> Result<Vec<(DocumentId, Applied)>> {
    // Unreadable samples are not retried here: the same bytes and key give the same answer;
    // a change of the document retries them.
    let pending: Vec<(String, Vec<u8>, bool)> = {
        let mut stmt = tx.prepare(
            "SELECT d.doc_id, d.bytes, d.applied IS NOT d.heads FROM sync_docs d
             WHERE d.kind = 'workout'
               AND (d.applied IS NOT d.heads
                    OR (d.problem IS NOT NULL AND NOT EXISTS (SELECT 1 FROM sync_received r
                        WHERE r.workout_id = d.workout_id AND r.samples = ?2))
                    OR EXISTS (SELECT 1 FROM sync_received r
                        WHERE r.workout_id = d.workout_id AND r.samples = ?1))
             ORDER BY d.doc_id",
        )?;
        let rows = stmt.query_map([SAMPLES_WAITING, SAMPLES_UNREADABLE], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    let mut out = Vec::new();
    for (doc_id, bytes, changed) in pending {
        if bytes.is_empty() {
            continue;
        }
        let id: DocumentId = doc_id
            .parse()
            .map_err(|e| Error::Corrupt(format!("document id {doc_id}: {e}")))?;
        let doc = Automerge::load(&bytes)
            .map_err(|e| Error::Corrupt(format!("automerge document {doc_id}: {e}")))?;
        let applied = apply_workout_doc(tx, &id, &doc, now, key, changed)?;
        out.push((id, applied));
    }
    Ok(out)
}

/// Where a workout received from another device stands. Plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedWorkout {
    pub workout_id: String,
    pub doc_id: String,
    /// Every chunk the document references is stored and opened here.
    pub samples_stored: bool,
    /// Why the document or its samples could not be applied, if so.
    pub problem: Option<String>,
}

impl Store {
    /// Applies every workout document not yet reflected in the read models (see the module
    /// documentation); the sync client calls it after fetching blobs. Returns what changed.
    pub fn apply_documents(&self, now: Timestamp) -> Result<Vec<(DocumentId, Applied)>> {
        let key = self.key();
        self.write(|tx| apply_pending(tx, now, key))
    }

    /// The workouts this device holds from other devices' documents, in id order.
    pub fn received_workouts(&self) -> Result<Vec<ReceivedWorkout>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT r.workout_id, d.doc_id, r.samples, d.problem FROM sync_received r
                 JOIN sync_docs d ON d.workout_id = r.workout_id ORDER BY r.workout_id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(ReceivedWorkout {
                    workout_id: r.get(0)?,
                    doc_id: r.get(1)?,
                    samples_stored: r.get::<_, i64>(2)? == SAMPLES_STORED,
                    problem: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<std::result::Result<_, _>>()?)
        })
    }
}
