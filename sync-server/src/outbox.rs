//! The transactional outbox: domain events are written in the same transaction as the change
//! that caused them ([`enqueue`]), and a dispatcher in the same process hands them to the
//! handlers subscribed to their kind, at least once. A handler must be idempotent: the
//! dispatcher records each (handler, event) it completed in `outbox_processed` and skips those,
//! but a crash between a handler's effect and that record means the handler sees the event again.
//!
//! Several nodes may dispatch the same event concurrently (at-least-once allows it); contexts
//! whose handlers cost more than a repeat will claim rows with row locks on PostgreSQL later.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fitedge_core::time::Timestamp;
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::watch;

use crate::db::{col, Db, Tx};
use crate::error::{Error, Result};
use crate::state::AppState;

/// A stored domain event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub aggregate_id: String,
    pub payload: serde_json::Value,
    pub created_at: Timestamp,
    pub attempts: i64,
}

/// The head of an insert of one event, for a caller that must fold it into a larger statement
/// (see `booking::repo::hold_if_free`); the payload is JSON text, `next_attempt_at` = `created_at`.
pub const INSERT_INTO: &str =
    "INSERT INTO outbox (id, kind, aggregate_id, payload, created_at, next_attempt_at)";

/// Writes an event inside the caller's transaction.
pub async fn enqueue(
    tx: &mut Tx,
    now: Timestamp,
    kind: &str,
    aggregate_id: &str,
    payload: serde_json::Value,
) -> Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    let sql = format!("{INSERT_INTO} VALUES ($1, $2, $3, $4, $5, $5)");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&id)
        .bind(kind)
        .bind(aggregate_id)
        .bind(payload.to_string())
        .bind(now.as_millis())
        .execute(&mut **tx)
        .await?;
    Ok(id)
}

/// Something that consumes events of some kinds. `handle` may run more than once per event.
pub trait Handler: Send + Sync + fmt::Debug {
    /// Stable name, recorded with each event it completed.
    fn name(&self) -> &str;
    /// Event kinds it wants; `*` for all.
    fn kinds(&self) -> Vec<String>;
    fn handle<'a>(&'a self, db: &'a Db, event: &'a Event) -> BoxFuture<'a, Result<()>>;
}

/// The registered handlers.
#[derive(Debug, Clone, Default)]
pub struct Handlers(Vec<Arc<dyn Handler>>);

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, h: Arc<dyn Handler>) -> Self {
        self.0.push(h);
        self
    }

    fn for_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Arc<dyn Handler>> + 'a {
        self.0
            .iter()
            .filter(move |h| h.kinds().iter().any(|k| k == "*" || k == kind))
    }
}

/// Delay before retry `attempts` (1-based): 1 s doubling to at most 5 minutes.
fn backoff_ms(attempts: i64) -> i64 {
    1000i64
        .saturating_mul(1i64 << attempts.clamp(1, 9).saturating_sub(1))
        .min(300_000)
}

/// Events taken per pass (RULES.md: batches of 1000 messages at most).
pub const BATCH: i64 = 1000;

/// One dispatch pass over the events due at the clock's now; returns how many were fully
/// dispatched. Public so tests can drive the outbox deterministically.
pub async fn dispatch_once(state: &AppState) -> Result<usize> {
    let now = state.now();
    let rows = sqlx::query(
        "SELECT id, kind, aggregate_id, payload, created_at, attempts FROM outbox
         WHERE dispatched_at IS NULL AND next_attempt_at <= $1 ORDER BY seq LIMIT $2",
    )
    .bind(now.as_millis())
    .bind(BATCH)
    .fetch_all(state.db.pool())
    .await?;
    let mut done = 0;
    for row in rows {
        let payload: String = col(&row, "payload")?;
        let event = Event {
            id: col(&row, "id")?,
            kind: col(&row, "kind")?,
            aggregate_id: col(&row, "aggregate_id")?,
            payload: serde_json::from_str(&payload)
                .map_err(|e| Error::Corrupt(format!("outbox payload: {e}")))?,
            created_at: Timestamp(col(&row, "created_at")?),
            attempts: col(&row, "attempts")?,
        };
        let mut failure: Option<String> = None;
        for h in state.outbox_handlers.for_kind(&event.kind) {
            let seen: Option<i64> = sqlx::query_scalar(
                "SELECT processed_at FROM outbox_processed WHERE handler = $1 AND event_id = $2",
            )
            .bind(h.name())
            .bind(&event.id)
            .fetch_optional(state.db.pool())
            .await?;
            if seen.is_some() {
                continue;
            }
            match h.handle(&state.db, &event).await {
                Ok(()) => {
                    sqlx::query(
                        "INSERT INTO outbox_processed (handler, event_id, processed_at)
                         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    )
                    .bind(h.name())
                    .bind(&event.id)
                    .bind(state.now().as_millis())
                    .execute(state.db.pool())
                    .await?;
                }
                Err(e) => {
                    tracing::warn!(handler = h.name(), event_id = %event.id, kind = %event.kind,
                        error = %e, "outbox handler failed; will retry");
                    failure = Some(format!("{}: {e}", h.name()));
                }
            }
        }
        match failure {
            None => {
                sqlx::query(
                    "UPDATE outbox SET dispatched_at = $1, last_error = NULL WHERE id = $2",
                )
                .bind(state.now().as_millis())
                .bind(&event.id)
                .execute(state.db.pool())
                .await?;
                done += 1;
            }
            Some(err) => {
                let attempts = event.attempts + 1;
                sqlx::query(
                    "UPDATE outbox SET attempts = $1, next_attempt_at = $2, last_error = $3
                     WHERE id = $4",
                )
                .bind(attempts)
                .bind(now.as_millis() + backoff_ms(attempts))
                .bind(err)
                .bind(&event.id)
                .execute(state.db.pool())
                .await?;
            }
        }
    }
    Ok(done)
}

/// Dispatched events older than this are deleted (RULES.md keeps analytics elsewhere).
const KEEP_DISPATCHED_MS: i64 = 7 * 24 * 3_600_000;

/// Deletes dispatched events older than a week and their processed marks.
pub async fn purge(state: &AppState) -> Result<()> {
    let cutoff = state.now().as_millis() - KEEP_DISPATCHED_MS;
    sqlx::query(
        "DELETE FROM outbox_processed WHERE event_id IN
         (SELECT id FROM outbox WHERE dispatched_at IS NOT NULL AND dispatched_at < $1)",
    )
    .bind(cutoff)
    .execute(state.db.pool())
    .await?;
    sqlx::query("DELETE FROM outbox WHERE dispatched_at IS NOT NULL AND dispatched_at < $1")
        .bind(cutoff)
        .execute(state.db.pool())
        .await?;
    Ok(())
}

/// Lag figures for /metrics: pending count, age of the oldest pending event, failing count.
pub async fn lag(state: &AppState) -> Result<(i64, f64, i64)> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(created_at) AS oldest,
                SUM(CASE WHEN attempts > 0 THEN 1 ELSE 0 END) AS failing
         FROM outbox WHERE dispatched_at IS NULL",
    )
    .fetch_one(state.db.pool())
    .await?;
    let n: i64 = col(&row, "n")?;
    let oldest: Option<i64> = col(&row, "oldest")?;
    let failing: Option<i64> = col(&row, "failing")?;
    let age = oldest
        .map(|o| (state.now().as_millis() - o).max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    Ok((n, age, failing.unwrap_or(0)))
}

/// Runs the dispatcher until `shutdown` turns true: wakes when a transaction wrote events, and
/// at least every second (retries, other nodes' events).
pub async fn run_dispatcher(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut passes: u64 = 0;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if let Err(e) = dispatch_once(&state).await {
            tracing::error!(error = %e, "outbox dispatch pass failed");
        }
        passes += 1;
        if passes.is_multiple_of(3600) {
            if let Err(e) = purge(&state).await {
                tracing::error!(error = %e, "outbox purge failed");
            }
        }
        tokio::select! {
            _ = state.outbox_notify.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => {}
        }
    }
    // One last pass so events of requests that finished during shutdown go out.
    if let Err(e) = dispatch_once(&state).await {
        tracing::error!(error = %e, "final outbox dispatch pass failed");
    }
}

/// Handler kinds and names registered, for the docs and tests.
pub fn describe(handlers: &Handlers) -> BTreeMap<String, Vec<String>> {
    handlers
        .0
        .iter()
        .map(|h| (h.name().to_string(), h.kinds()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_ms(1), 1000);
        assert_eq!(backoff_ms(2), 2000);
        assert_eq!(backoff_ms(5), 16_000);
        assert_eq!(backoff_ms(50), 256_000);
    }
}
