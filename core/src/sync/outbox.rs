//! The offline REST outbox: server commands (kudos, comments, bookings, orders...) queued
//! durably while the device is offline and sent in order once it is online.
//!
//! This module is the queue and its state machine only; it does no I/O. The sender (feature
//! `net`, [`crate::sync::client::outbox_flush`]) asks for the next due command, sends it with
//! `X-Idempotency-Key`, and reports what happened with [`Store::outbox_record`].
//!
//! ```text
//!  enqueue ──> pending ──2xx──────────────────────────────> sent     (status + body kept)
//!                 │  ──other 4xx, 1xx/3xx──────────────────> failed   (status + body kept)
//!                 │  ──network error, 5xx, 408, 429, 409 in flight──> pending, next_attempt_at = now + wait
//!                 │                                          (after MAX_ATTEMPTS: failed)
//! ```
//! The wait is [`Backoff::OUTBOX`]'s ceiling for the attempt (2 s, 4 s, ... one hour), or the
//! server's `Retry-After` (seconds, at most a day) when it gave one. A 409 whose `error` is
//! `idempotency_in_flight` is retried: the server's idempotency layer answers so while the first
//! request with the same key is still in progress, and the retry with the same key then gets the
//! stored response. Any other 409 is the server's final word on a conflict (`event_cancelled`,
//! `already_booked`...): the command fails and keeps the reason for the app to show.
//!
//! Order: commands are sent one at a time in the order they were enqueued. A command waiting for
//! its next attempt holds back the ones behind it (a comment must not overtake the post it
//! replies to); a final failure does not.

use rusqlite::{params, OptionalExtension, Row};

use crate::db::Store;
use crate::error::{Error, Result};
use crate::sync::backoff::Backoff;
use crate::time::Timestamp;

/// Attempts before a retryable failure becomes final.
pub const MAX_ATTEMPTS: u32 = 10;
/// The longest `Retry-After` honoured (seconds); longer values are cut to this.
pub const MAX_RETRY_AFTER_S: u64 = 86_400;
/// Largest JSON body accepted into the queue.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxStatus {
    Pending,
    Sent,
    Failed,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(OutboxStatus::Pending),
            "sent" => Ok(OutboxStatus::Sent),
            "failed" => Ok(OutboxStatus::Failed),
            other => Err(Error::Corrupt(format!("outbox status {other:?}"))),
        }
    }
}

/// One queued command and what became of it. Plain data (FFI-friendly).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxCommand {
    /// Position in the queue (sending order).
    pub seq: i64,
    /// UUID v4 made at enqueue; sent as `X-Idempotency-Key` on every attempt.
    pub idempotency_key: String,
    pub method: String,
    /// Path and query, e.g. `/api/v1/workouts/…/kudos`.
    pub path: String,
    /// JSON text.
    pub body: Option<String>,
    pub created_at: Timestamp,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub status: OutboxStatus,
    pub response_status: Option<u16>,
    pub response_body: Option<String>,
    pub last_error: Option<String>,
}

/// What one attempt to send a command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The server answered.
    Response {
        status: u16,
        body: String,
        /// `Retry-After` in seconds, when the server sent one.
        retry_after_s: Option<u64>,
    },
    /// No answer: connection refused or reset, timeout, DNS.
    Network(String),
}

/// What the state machine makes of an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Sent,
    Failed,
    Retry { at: Timestamp },
}

/// The server's "the first request with this key is still running" answer.
fn in_flight(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .is_ok_and(|v| v["error"] == "idempotency_in_flight")
}

/// The state machine: `attempts` counts this attempt (1 after the first).
pub fn decide(attempts: u32, attempt: &Attempt, now: Timestamp) -> Decision {
    let retry_after = match attempt {
        Attempt::Response { status, .. } if (200..300).contains(status) => return Decision::Sent,
        Attempt::Response {
            status,
            retry_after_s,
            body,
        } if matches!(status, 408 | 429)
            || (500..600).contains(status)
            || (*status == 409 && in_flight(body)) =>
        {
            *retry_after_s
        }
        Attempt::Response { .. } => return Decision::Failed,
        Attempt::Network(_) => None,
    };
    if attempts >= MAX_ATTEMPTS {
        return Decision::Failed;
    }
    let wait_ms = match retry_after {
        Some(s) => s.min(MAX_RETRY_AFTER_S) * 1000,
        None => Backoff::OUTBOX.ceiling_ms(attempts),
    };
    let wait = i64::try_from(wait_ms).unwrap_or(i64::MAX);
    Decision::Retry {
        at: Timestamp(now.0.saturating_add(wait)),
    }
}

const COLUMNS: &str = "seq, idempotency_key, method, path, body, created_at, attempts,
    next_attempt_at, status, response_status, response_body, last_error";

fn from_row(r: &Row<'_>) -> rusqlite::Result<(OutboxCommand, String)> {
    let status: String = r.get(8)?;
    Ok((
        OutboxCommand {
            seq: r.get(0)?,
            idempotency_key: r.get(1)?,
            method: r.get(2)?,
            path: r.get(3)?,
            body: r.get(4)?,
            created_at: Timestamp(r.get(5)?),
            attempts: r.get(6)?,
            next_attempt_at: Timestamp(r.get(7)?),
            status: OutboxStatus::Pending,
            response_status: r.get(9)?,
            response_body: r.get(10)?,
            last_error: r.get(11)?,
        },
        status,
    ))
}

fn finish(row: (OutboxCommand, String)) -> Result<OutboxCommand> {
    let (mut c, status) = row;
    c.status = OutboxStatus::parse(&status)?;
    Ok(c)
}

fn get(conn: &rusqlite::Connection, seq: i64) -> Result<OutboxCommand> {
    let row = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM outbox WHERE seq = ?1"),
            [seq],
            from_row,
        )
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("outbox command {seq}")))?;
    finish(row)
}

impl Store {
    /// Queues a command. `method` is POST, PUT, PATCH or DELETE; `path` starts with `/`;
    /// `body` is JSON text. The idempotency key is made here, once.
    pub fn outbox_enqueue(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        now: Timestamp,
    ) -> Result<OutboxCommand> {
        let method = method.to_ascii_uppercase();
        if !matches!(method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE") {
            return Err(Error::Invalid(format!("outbox method {method:?}")));
        }
        if !path.starts_with('/') || path.starts_with("//") || path.chars().any(char::is_control) {
            return Err(Error::Invalid(format!("outbox path {path:?}")));
        }
        if let Some(b) = body {
            if b.len() > MAX_BODY_BYTES {
                return Err(Error::Invalid(format!(
                    "outbox body of {} bytes (at most {MAX_BODY_BYTES})",
                    b.len()
                )));
            }
            serde_json::from_str::<serde_json::Value>(b)
                .map_err(|e| Error::Invalid(format!("outbox body is not JSON: {e}")))?;
        }
        let key = uuid::Uuid::new_v4().to_string();
        let seq = self.write(|tx| {
            tx.execute(
                "INSERT INTO outbox (idempotency_key, method, path, body, created_at, attempts,
                    next_attempt_at, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?5, 'pending')",
                params![key, method, path, body, now.0],
            )?;
            Ok(tx.last_insert_rowid())
        })?;
        self.read(|c| get(c, seq))
    }

    /// Every command, in queue order, with its outcome so far.
    pub fn outbox_list(&self) -> Result<Vec<OutboxCommand>> {
        let rows = self.read(|c| {
            let mut stmt =
                c.prepare_cached(&format!("SELECT {COLUMNS} FROM outbox ORDER BY seq"))?;
            let rows = stmt.query_map([], from_row)?;
            Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter().map(finish).collect()
    }

    /// The command to send now, if any: the first pending one, when its time has come. `None`
    /// when the queue is empty or its head must wait (see the module documentation).
    pub fn outbox_next_due(&self, now: Timestamp) -> Result<Option<OutboxCommand>> {
        let head = self.read(|c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM outbox WHERE status = 'pending' ORDER BY seq LIMIT 1"
                ),
                [],
                from_row,
            )
            .optional()?)
        })?;
        match head.map(finish).transpose()? {
            Some(c) if c.next_attempt_at <= now => Ok(Some(c)),
            _ => Ok(None),
        }
    }

    /// Records one attempt to send command `seq` and moves it along the state machine, in one
    /// transaction. A command that is no longer pending is left as it is (a late duplicate
    /// report changes nothing).
    pub fn outbox_record(
        &self,
        seq: i64,
        attempt: &Attempt,
        now: Timestamp,
    ) -> Result<OutboxCommand> {
        self.write(|tx| {
            let c = get(tx, seq)?;
            if c.status != OutboxStatus::Pending {
                return Ok(c);
            }
            let attempts = c.attempts.saturating_add(1);
            let decision = decide(attempts, attempt, now);
            let (status, next) = match decision {
                Decision::Sent => (OutboxStatus::Sent, c.next_attempt_at),
                Decision::Failed => (OutboxStatus::Failed, c.next_attempt_at),
                Decision::Retry { at } => (OutboxStatus::Pending, at),
            };
            let (code, body, error) = match attempt {
                Attempt::Response { status, body, .. } => {
                    let error =
                        (!matches!(decision, Decision::Sent)).then(|| format!("HTTP {status}"));
                    (Some(*status), Some(body.clone()), error)
                }
                Attempt::Network(e) => {
                    (c.response_status, c.response_body.clone(), Some(e.clone()))
                }
            };
            tx.execute(
                "UPDATE outbox SET attempts = ?1, next_attempt_at = ?2, status = ?3,
                    response_status = ?4, response_body = ?5, last_error = ?6
                 WHERE seq = ?7",
                params![attempts, next.0, status.as_str(), code, body, error, seq],
            )?;
            get(tx, seq)
        })
    }

    /// Pending commands.
    pub fn outbox_pending(&self) -> Result<usize> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM outbox WHERE status = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )?)
        })
        .map(|n| usize::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Clock, ManualClock};

    const T0: i64 = 1_763_700_000_000;

    fn in_flight_409() -> Attempt {
        Attempt::Response {
            status: 409,
            body: r#"{"error":"idempotency_in_flight","message":"still running"}"#.into(),
            retry_after_s: None,
        }
    }

    fn response(status: u16) -> Attempt {
        Attempt::Response {
            status,
            body: format!("{{\"status\":{status}}}"),
            retry_after_s: None,
        }
    }

    #[test]
    fn each_backoff_limit_is_held_to_the_millisecond_then_the_command_fails() {
        let store = Store::open_in_memory(None).unwrap();
        let clock = ManualClock::new(Timestamp(T0));
        let c = store
            .outbox_enqueue(
                "post",
                "/api/v1/kudos",
                Some("{\"to\":\"w1\"}"),
                clock.now(),
            )
            .unwrap();
        assert_eq!(c.method, "POST");
        assert_eq!(
            uuid::Uuid::parse_str(&c.idempotency_key)
                .unwrap()
                .get_version_num(),
            4
        );
        assert_eq!(
            store.outbox_next_due(clock.now()).unwrap().unwrap().seq,
            c.seq
        );
        let expected_waits_s = [2, 4, 8, 16, 32, 64, 128, 256, 512];
        for (i, wait_s) in expected_waits_s.iter().enumerate() {
            let attempt = if i % 2 == 0 {
                Attempt::Network("connection refused".into())
            } else {
                response(503)
            };
            let after = store.outbox_record(c.seq, &attempt, clock.now()).unwrap();
            assert_eq!(after.status, OutboxStatus::Pending);
            assert_eq!(after.attempts, i as u32 + 1);
            // Just inside the limit: not yet.
            clock.advance_secs(f64::from(*wait_s) - 0.001);
            assert_eq!(
                store.outbox_next_due(clock.now()).unwrap(),
                None,
                "attempt {i}"
            );
            // At the limit: due.
            clock.advance_secs(0.001);
            assert_eq!(
                store.outbox_next_due(clock.now()).unwrap().unwrap().seq,
                c.seq
            );
        }
        // The tenth failure is final; its last error is kept.
        let last = store
            .outbox_record(c.seq, &response(502), clock.now())
            .unwrap();
        assert_eq!(last.status, OutboxStatus::Failed);
        assert_eq!(last.attempts, MAX_ATTEMPTS);
        assert_eq!(last.response_status, Some(502));
        assert_eq!(store.outbox_next_due(Timestamp(i64::MAX)).unwrap(), None);
    }

    #[test]
    fn the_backoff_is_capped_at_an_hour() {
        assert_eq!(
            decide(9, &Attempt::Network("x".into()), Timestamp(0)),
            Decision::Retry {
                at: Timestamp(512_000)
            }
        );
        // Beyond the cap the ceiling stays at one hour (decide is pure; MAX_ATTEMPTS aside).
        assert_eq!(Backoff::OUTBOX.ceiling_ms(13), 3_600_000);
        assert_eq!(Backoff::OUTBOX.ceiling_ms(12), 3_600_000);
        assert_eq!(Backoff::OUTBOX.ceiling_ms(11), 2_048_000);
    }

    #[test]
    fn retry_after_is_honoured_and_bounded() {
        let store = Store::open_in_memory(None).unwrap();
        let clock = ManualClock::new(Timestamp(T0));
        let c = store
            .outbox_enqueue("PUT", "/api/v1/x", None, clock.now())
            .unwrap();
        let busy = Attempt::Response {
            status: 429,
            body: "slow down".into(),
            retry_after_s: Some(120),
        };
        store.outbox_record(c.seq, &busy, clock.now()).unwrap();
        clock.advance_secs(119.999);
        assert!(store.outbox_next_due(clock.now()).unwrap().is_none());
        clock.advance_secs(0.001);
        assert!(store.outbox_next_due(clock.now()).unwrap().is_some());
        let absurd = Attempt::Response {
            status: 503,
            body: String::new(),
            retry_after_s: Some(u64::MAX),
        };
        let after = store.outbox_record(c.seq, &absurd, clock.now()).unwrap();
        assert_eq!(
            after.next_attempt_at.0 - clock.now().0,
            i64::try_from(MAX_RETRY_AFTER_S * 1000).unwrap()
        );
    }

    #[test]
    fn final_failures_keep_their_body_and_do_not_block_the_queue() {
        let store = Store::open_in_memory(None).unwrap();
        let now = Timestamp(T0);
        let a = store.outbox_enqueue("POST", "/a", Some("{}"), now).unwrap();
        let b = store.outbox_enqueue("POST", "/b", Some("[]"), now).unwrap();
        assert_ne!(a.idempotency_key, b.idempotency_key);
        // In order: b waits for a.
        assert_eq!(store.outbox_next_due(now).unwrap().unwrap().seq, a.seq);
        let refused = Attempt::Response {
            status: 422,
            body: "{\"error\":\"comment too long\"}".into(),
            retry_after_s: None,
        };
        let a2 = store.outbox_record(a.seq, &refused, now).unwrap();
        assert_eq!(a2.status, OutboxStatus::Failed);
        assert_eq!(
            a2.response_body.as_deref(),
            Some("{\"error\":\"comment too long\"}")
        );
        assert_eq!(store.outbox_next_due(now).unwrap().unwrap().seq, b.seq);
        // A retryable failure of the head holds back what follows.
        let c = store.outbox_enqueue("DELETE", "/c", None, now).unwrap();
        store.outbox_record(b.seq, &in_flight_409(), now).unwrap();
        assert_eq!(store.outbox_next_due(now).unwrap(), None);
        let b2 = store
            .outbox_record(b.seq, &response(201), Timestamp(T0 + 2_000))
            .unwrap();
        assert_eq!(
            (b2.status, b2.response_status),
            (OutboxStatus::Sent, Some(201))
        );
        assert_eq!(store.outbox_next_due(now).unwrap().unwrap().seq, c.seq);
        // A late report for a finished command changes nothing.
        assert_eq!(store.outbox_record(b.seq, &response(500), now).unwrap(), b2);
        let listed = store.outbox_list().unwrap();
        assert_eq!(
            listed.iter().map(|c| c.status).collect::<Vec<_>>(),
            [
                OutboxStatus::Failed,
                OutboxStatus::Sent,
                OutboxStatus::Pending
            ]
        );
        assert_eq!(store.outbox_pending().unwrap(), 1);
    }

    #[test]
    fn which_statuses_are_final() {
        let now = Timestamp(0);
        for s in [200, 201, 204] {
            assert_eq!(decide(1, &response(s), now), Decision::Sent);
        }
        for s in [400, 401, 403, 404, 409, 410, 422, 301, 100] {
            assert_eq!(decide(1, &response(s), now), Decision::Failed, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 599] {
            assert!(
                matches!(decide(1, &response(s), now), Decision::Retry { .. }),
                "{s}"
            );
        }
        // A 409 is retried only when the same key is still running on the server.
        assert!(matches!(
            decide(1, &in_flight_409(), now),
            Decision::Retry { .. }
        ));
    }

    #[test]
    fn bad_commands_are_refused_at_enqueue() {
        let store = Store::open_in_memory(None).unwrap();
        let now = Timestamp(T0);
        for (m, p, b) in [
            ("GET", "/a", None),
            ("POST", "a", None),
            ("POST", "//evil.example/a", None),
            ("POST", "/a\r\nX: y", None),
            ("POST", "/a", Some("{not json")),
        ] {
            assert!(
                matches!(store.outbox_enqueue(m, p, b, now), Err(Error::Invalid(_))),
                "{m} {p}"
            );
        }
        assert!(store.outbox_list().unwrap().is_empty());
    }
}
