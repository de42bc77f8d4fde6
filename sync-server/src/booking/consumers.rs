//! Outbox consumers of the booking events, and the hold-expiry sweeper.
//!
//! - [`Notifications`]: records one `booking_notifications` row per user named in an event's
//!   `notify` list (primary key (outbox event, user): a redelivery adds nothing). The
//!   notifications context will deliver them later.
//! - [`Refunds`]: pays the refund of a BookingCancelled with `refund_cents > 0` through the
//!   payment provider (idempotent per booking) and marks it refunded: the compensation of a
//!   cancellation runs after the cancellation committed, at least once.
//! - [`AccountDeleted`]: the booking side of a GDPR account deletion (`identity.account_deleted`):
//!   the user's held and confirmed seats are cancelled (a paid one refunded by the event's
//!   policy, through [`Refunds`]) and go to the waitlist, waiting entries end, notifications
//!   are deleted, and the remaining booking rows are anonymised: an accounting record of a
//!   payment stays (amounts, dates, event), nothing in it leads back to the person.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::payment;
use super::repo;
use super::service;
use super::settings;
use crate::db::{Db, Tx};
use crate::error::{Error, Result};
use crate::outbox::{Event, Handler, Handlers};
use crate::state::AppState;

#[derive(Debug, Default)]
pub struct Notifications;

impl Handler for Notifications {
    fn name(&self) -> &str {
        "booking.notifications"
    }
    fn kinds(&self) -> Vec<String> {
        repo::ALL_KINDS.iter().map(|k| k.to_string()).collect()
    }
    fn handle<'a>(&'a self, db: &'a Db, event: &'a Event) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let users: Vec<String> = event.payload["notify"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let message = event.payload["message"].as_str().unwrap_or_default();
            let event_id = event.payload["event_id"].as_str().unwrap_or_default();
            let booking_id = event.payload["booking_id"].as_str();
            for u in users {
                sqlx::query(
                    "INSERT INTO booking_notifications
                       (outbox_event_id, user_id, kind, event_id, booking_id, message, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(&event.id)
                .bind(&u)
                .bind(&event.kind)
                .bind(event_id)
                .bind(booking_id)
                .bind(message)
                .bind(event.created_at.as_millis())
                .execute(db.pool())
                .await?;
            }
            Ok(())
        })
    }
}

#[derive(Debug, Default)]
pub struct Refunds;

impl Handler for Refunds {
    fn name(&self) -> &str {
        "booking.refunds"
    }
    fn kinds(&self) -> Vec<String> {
        vec![repo::BOOKING_CANCELLED.to_string()]
    }
    fn handle<'a>(&'a self, db: &'a Db, event: &'a Event) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let amount = event.payload["refund_cents"].as_i64().unwrap_or(0);
            let Some(booking) = event.payload["booking_id"].as_str() else {
                return Ok(());
            };
            if amount <= 0 {
                return Ok(());
            }
            payment::provider()
                .refund(booking, amount)
                .await
                .map_err(|e| Error::Task(format!("refund of booking {booking}: {e}")))?;
            sqlx::query(
                "UPDATE bookings SET refund_status = 'refunded' WHERE id = $1
                 AND refund_status = 'pending'",
            )
            .bind(booking)
            .execute(db.pool())
            .await?;
            Ok(())
        })
    }
}

/// The outbox kind identity emits when an account is deleted.
pub const ACCOUNT_DELETED: &str = "identity.account_deleted";

#[derive(Debug, Default)]
pub struct AccountDeleted;

impl Handler for AccountDeleted {
    fn name(&self) -> &str {
        "booking.account_deleted"
    }
    fn kinds(&self) -> Vec<String> {
        vec![ACCOUNT_DELETED.to_string()]
    }
    fn handle<'a>(&'a self, db: &'a Db, event: &'a Event) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let Some(user) = event.payload["user_id"].as_str().map(String::from) else {
                return Err(Error::Task(format!(
                    "{ACCOUNT_DELETED} event {} without a user_id",
                    event.id
                )));
            };
            // The deletion's own time, not the dispatcher's: a redelivery decides the same.
            let now = event.created_at.as_millis();
            let backend = db.backend();
            let s = settings::get().clone();
            let n = db
                .write(move |tx: &mut Tx| {
                    let (user, s) = (user.clone(), s.clone());
                    Box::pin(async move { forget_user(tx, backend, now, &user, &s).await })
                })
                .await?;
            if n > 0 {
                tracing::info!(seats_released = n, "deleted account's bookings cancelled");
            }
            Ok(())
        })
    }
}

/// Cancels, releases and anonymises everything of `user` in one transaction; returns how many
/// seats went back. A second run finds nothing (the rows no longer name the user).
async fn forget_user(
    tx: &mut Tx,
    backend: crate::db::Backend,
    now: i64,
    user: &str,
    s: &settings::Settings,
) -> Result<usize> {
    repo::lock(tx, backend).await?;
    let sql = format!(
        "SELECT {} FROM bookings WHERE user_id = $1 AND status IN ('held', 'confirmed')
         ORDER BY held_at, id",
        repo::BOOKING_COLUMNS
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user)
        .fetch_all(&mut **tx)
        .await?;
    let mut events: Vec<String> = vec![];
    for r in &rows {
        let b = repo::booking_from_row(r)?;
        let ev = repo::load_event(&mut **tx, &b.event_id)
            .await?
            .ok_or_else(|| Error::Corrupt("booking without event".into()))?;
        let refund = if b.status == "confirmed" {
            ev.refund_policy
                .refund_cents(b.amount_cents, ev.starts_at, now)
        } else {
            0
        };
        // Nobody to notify: the account is gone.
        repo::end_booking(tx, now, &b, "cancelled", "account_deleted", refund, false).await?;
        if !events.contains(&b.event_id) {
            events.push(b.event_id.clone());
        }
    }
    sqlx::query(
        "UPDATE booking_waitlist SET status = 'cancelled', left_at = $2
         WHERE user_id = $1 AND status = 'waiting'",
    )
    .bind(user)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let anonymous = format!("deleted:{}", uuid::Uuid::new_v4());
    for sql in [
        "UPDATE bookings SET user_id = $2 WHERE user_id = $1",
        "UPDATE booking_waitlist SET user_id = $2 WHERE user_id = $1",
    ] {
        sqlx::query(sql)
            .bind(user)
            .bind(&anonymous)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("DELETE FROM booking_notifications WHERE user_id = $1")
        .bind(user)
        .execute(&mut **tx)
        .await?;
    for e in events {
        repo::promote(tx, now, &e, s.hold_ttl_ms, s.daily_limit).await?;
    }
    Ok(rows.len())
}

/// The booking consumers added to `h`.
pub fn register(h: Handlers) -> Handlers {
    h.with(Arc::new(Notifications))
        .with(Arc::new(Refunds))
        .with(Arc::new(AccountDeleted))
}

/// Expires holds every `FITEDGE_BOOKING_SWEEP_SECS` until `stop` turns true.
pub async fn run_sweeper(state: AppState, mut stop: watch::Receiver<bool>) {
    loop {
        match service::sweep(&state).await {
            Ok(n) if n > 0 => tracing::info!(expired = n, "unpaid holds expired"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "hold expiry sweep failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(settings::get().sweep_every) => {}
            _ = stop.changed() => return,
        }
    }
}
