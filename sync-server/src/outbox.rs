//! The transactional outbox: domain events are written in the same transaction as the change
//! that caused them ([`enqueue`]), and a dispatcher in the same process hands them to the
//! handlers subscribed to their kind, at least once. A handler must be idempotent: the
//! dispatcher records each (handler, event) it completed in `outbox_processed` and skips those,
//! but a crash between a handler's effect and that record means the handler sees the event again.
//!
//! Several nodes may dispatch the same event concurrently (at-least-once allows it); contexts
//! whose handlers cost more than a repeat will claim rows with row locks on PostgreSQL later.

use std::collections::{BTreeMap, HashSet};
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

/// Writes an event inside the caller's transaction.
pub async fn enqueue(
    tx: &mut Tx,
    now: Timestamp,
    kind: &str,
    aggregate_id: &str,
    payload: serde_json::Value,
) -> Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO outbox (id, kind, aggregate_id, payload, created_at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
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
///
/// The pass reads which (handler, event) pairs already completed in one query and records what
/// it did (completed pairs, dispatched events, retries) in one transaction at the end, so the
/// bookkeeping costs a few statements per batch rather than three commits per event (the
/// booking benchmark dispatches one event per booking). A crash before that transaction hands
/// the whole batch to the handlers again, which at-least-once delivery already allows.
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
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let payload: String = col(&row, "payload")?;
        events.push(Event {
            id: col(&row, "id")?,
            kind: col(&row, "kind")?,
            aggregate_id: col(&row, "aggregate_id")?,
            payload: serde_json::from_str(&payload)
                .map_err(|e| Error::Corrupt(format!("outbox payload: {e}")))?,
            created_at: Timestamp(col(&row, "created_at")?),
            attempts: col(&row, "attempts")?,
        });
    }
    if events.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let seen = completed(&state.db, &ids).await?;
    let mut pass = Pass::default();
    for event in &events {
        let mut failure: Option<String> = None;
        for h in state.outbox_handlers.for_kind(&event.kind) {
            if seen.contains(&(h.name().to_string(), event.id.clone())) {
                continue;
            }
            match h.handle(&state.db, event).await {
                Ok(()) => pass
                    .completed
                    .push((h.name().to_string(), event.id.clone())),
                Err(e) => {
                    tracing::warn!(handler = h.name(), event_id = %event.id, kind = %event.kind,
                        error = %e, "outbox handler failed; will retry");
                    failure = Some(format!("{}: {e}", h.name()));
                }
            }
        }
        match failure {
            None => pass.dispatched.push(event.id.clone()),
            Some(err) => {
                let attempts = event.attempts + 1;
                let next = now.as_millis() + backoff_ms(attempts);
                pass.retries.push((event.id.clone(), attempts, next, err));
            }
        }
    }
    let done = pass.dispatched.len();
    let at = state.now().as_millis();
    let pass = Arc::new(pass);
    state
        .db
        .write(move |tx: &mut Tx| {
            let pass = pass.clone();
            Box::pin(async move { pass.record(tx, at).await })
        })
        .await?;
    Ok(done)
}

/// Rows per multi-row statement of the pass's bookkeeping (well under both backends' limits on
/// bound parameters).
const ROWS_PER_STATEMENT: usize = 300;

/// The (handler, event id) pairs among `ids` that some handler already completed.
async fn completed(db: &Db, ids: &[&str]) -> Result<HashSet<(String, String)>> {
    let mut seen = HashSet::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT handler, event_id FROM outbox_processed WHERE event_id IN ({})",
            numbered(1, chunk.len())
        );
        let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(*id);
        }
        seen.extend(q.fetch_all(db.pool()).await?);
    }
    Ok(seen)
}

/// `$first, $first+1, ...`: `n` numbered placeholders, for an `IN (...)` list.
fn numbered(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one dispatch pass did, written back in one transaction.
#[derive(Debug, Default)]
struct Pass {
    /// (handler, event id) pairs whose handler succeeded.
    completed: Vec<(String, String)>,
    /// Events every handler of which succeeded.
    dispatched: Vec<String>,
    /// (event id, attempts, next attempt at, error) of events to try again.
    retries: Vec<(String, i64, i64, String)>,
}

impl Pass {
    async fn record(&self, tx: &mut Tx, at: i64) -> Result<()> {
        for chunk in self.completed.chunks(ROWS_PER_STATEMENT) {
            // $1 is the time; each row's handler and event id follow in pairs.
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${}, $1)", 2 + 2 * i, 3 + 2 * i))
                .collect();
            let sql = format!(
                "INSERT INTO outbox_processed (handler, event_id, processed_at) VALUES {}
                 ON CONFLICT DO NOTHING",
                rows.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at);
            for (handler, event) in chunk {
                q = q.bind(handler).bind(event);
            }
            q.execute(&mut **tx).await?;
        }
        for chunk in self.dispatched.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE outbox SET dispatched_at = $1, last_error = NULL WHERE id IN ({})",
                numbered(2, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at);
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(&mut **tx).await?;
        }
        for (id, attempts, next, err) in &self.retries {
            sqlx::query(
                "UPDATE outbox SET attempts = $1, next_attempt_at = $2, last_error = $3
                 WHERE id = $4",
            )
            .bind(attempts)
            .bind(next)
            .bind(err)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
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
    fn numbered_placeholders() {
        assert_eq!(numbered(1, 3), "$1, $2, $3");
        assert_eq!(numbered(2, 1), "$2");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_ms(1), 1000);
        assert_eq!(backoff_ms(2), 2000);
        assert_eq!(backoff_ms(5), 16_000);
        assert_eq!(backoff_ms(50), 256_000);
    }
}
