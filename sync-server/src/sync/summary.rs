//! The server's check of a completed workout's summary against its sample chunks.
//!
//! When a workout document is committed in the `completed` state, or a blob it references
//! arrives later, and every chunk it references is stored as a blob, the server decodes the
//! chunks with the core's codec and recomputes the figures with the core's metrics
//! ([`fitedge_core::metrics::compute`], the same code the device runs), then records
//! `sync_docs.summary_mismatch` (1 or 0) and logs a warning on a mismatch. The document itself is
//! never changed: the flag is for the anti-cheat and support tooling.
//!
//! What is compared, and its limits:
//! - **distance**: recomputed from the non-health channels that decode (position, speed,
//!   distance), compared with `summary.distanceM` when both exist; mismatch beyond
//!   max([`DISTANCE_TOLERANCE_M`], [`RELATIVE_TOLERANCE`] of the larger).
//! - **duration**: the time span the decoded samples cover must not exceed `summary.elapsedS`
//!   by more than max([`DURATION_TOLERANCE_S`], [`RELATIVE_TOLERANCE`]): samples far outside the
//!   claimed workout mean the summary is wrong. A shorter span is normal (sensors start late).
//! - The document carries no pause log, so the timer is taken as running from `startTime` to
//!   `endTime`; distance covered while paused on the device therefore counts here, which the
//!   relative tolerance absorbs for ordinary pauses.
//! - Health channels (heart rate, RR, SpO2) are sealed on the device with a key the server never
//!   has: such chunks do not decode and are skipped; heart-rate figures are not checked.
//!   Chunks that do not decode for another reason are skipped the same way.

use fitedge_core::codec;
use fitedge_core::metrics::timer::TimerLog;
use fitedge_core::sample::{Channel, Sample};
use fitedge_core::sync::docs::{ValidationContext, WorkoutDoc, WorkoutDocState};
use fitedge_core::sync::protocol::DocumentId;

use super::store;
use crate::db::col;
use crate::error::Result;
use crate::state::AppState;

pub const DISTANCE_TOLERANCE_M: f64 = 100.0;
pub const DURATION_TOLERANCE_S: f64 = 60.0;
pub const RELATIVE_TOLERANCE: f64 = 0.05;

/// After a workout change was committed: check it in the background when it is completed.
pub fn after_commit(state: &AppState, id: &DocumentId, w: &WorkoutDoc) {
    if w.state != WorkoutDocState::Completed || w.chunks.is_empty() {
        return;
    }
    spawn_check(state, *id);
}

/// Checks `id` in the background (errors are logged).
pub fn spawn_check(state: &AppState, id: DocumentId) {
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = check(&state, &id).await {
            tracing::warn!(document_id = %id, error = %e, "sync: summary check failed");
        }
    });
}

/// After a blob arrived: check the completed workouts that reference it.
pub async fn after_blob(state: &AppState, sha256: &str) -> Result<()> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT doc_id FROM sync_doc_blobs WHERE sha256 = $1")
            .bind(sha256)
            .fetch_all(state.db.pool())
            .await?;
    for id in ids.iter().filter_map(|i| i.parse::<DocumentId>().ok()) {
        spawn_check(state, id);
    }
    Ok(())
}

/// What the check found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub mismatch: bool,
    pub recomputed_distance_m: Option<f64>,
    pub samples_span_s: Option<f64>,
}

/// Runs the check on the stored document; `None` when it does not apply yet (not a completed
/// workout, no summary, or a chunk missing).
pub async fn check(state: &AppState, id: &DocumentId) -> Result<Option<Outcome>> {
    let Some(loaded) = store::load(state, id).await? else {
        return Ok(None);
    };
    let ctx = ValidationContext { now: state.now() };
    let Ok(w) = WorkoutDoc::read(&loaded.doc, &ctx) else {
        return Ok(None);
    };
    let (Some(summary), Some(end)) = (w.summary, w.end_time) else {
        return Ok(None);
    };
    if w.state != WorkoutDocState::Completed || w.chunks.is_empty() {
        return Ok(None);
    }
    let mut samples: Vec<Sample> = Vec::new();
    let mut distance_channels = 0;
    for c in &w.chunks {
        let row = sqlx::query("SELECT data FROM blobs WHERE sha256 = $1")
            .bind(&c.sha256)
            .fetch_optional(state.db.pool())
            .await?;
        let Some(row) = row else {
            return Ok(None); // not all chunks uploaded yet
        };
        let data: Vec<u8> = col(&row, "data")?;
        match codec::decode(&data) {
            Ok((channel, s)) => {
                if matches!(
                    channel,
                    Channel::Position | Channel::Speed | Channel::Distance
                ) {
                    distance_channels += 1;
                }
                samples.extend(s);
            }
            Err(e) => {
                // Sealed health channel (no key here) or a damaged chunk: skipped.
                tracing::debug!(document_id = %id, sha256 = %c.sha256, error = %e, "sync: chunk not decodable; skipped");
            }
        }
    }
    let start = w.start_time.as_millis();
    let mut timer = TimerLog::new(start);
    timer.set(end.as_millis(), false);
    let profile = fitedge_core::profile::Profile::default().resolve();
    let (m, _) =
        fitedge_core::metrics::compute(Some(w.sport), profile, &samples, &timer, end.as_millis());
    let recomputed_distance_m = (distance_channels > 0).then_some(m.distance_m).flatten();
    let span = match (
        samples.iter().map(|s| s.t.as_millis()).min(),
        samples.iter().map(|s| s.t.as_millis()).max(),
    ) {
        (Some(a), Some(b)) => Some((b - a) as f64 / 1000.0),
        _ => None,
    };
    let distance_bad = match (recomputed_distance_m, summary.distance_m) {
        (Some(r), Some(d)) => {
            (r - d).abs() > DISTANCE_TOLERANCE_M.max(RELATIVE_TOLERANCE * r.max(d))
        }
        _ => false,
    };
    let duration_bad = span.is_some_and(|s| {
        s - summary.elapsed_s > DURATION_TOLERANCE_S.max(RELATIVE_TOLERANCE * summary.elapsed_s)
    });
    let mismatch = distance_bad || duration_bad;
    if mismatch {
        tracing::warn!(
            document_id = %id,
            summary_distance_m = ?summary.distance_m,
            recomputed_distance_m = ?recomputed_distance_m,
            summary_elapsed_s = summary.elapsed_s,
            samples_span_s = ?span,
            "sync: summary_mismatch: the workout's summary disagrees with its sample chunks"
        );
    }
    sqlx::query("UPDATE sync_docs SET summary_mismatch = $2 WHERE id = $1")
        .bind(id.to_string())
        .bind(i64::from(mismatch))
        .execute(state.db.pool())
        .await?;
    Ok(Some(Outcome {
        mismatch,
        recomputed_distance_m,
        samples_span_s: span,
    }))
}
