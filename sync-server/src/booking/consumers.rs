//! Outbox consumers of the booking events, and the hold-expiry sweeper.
//!
//! - [`Notifications`]: records one `booking_notifications` row per user named in an event's
//!   `notify` list (primary key (outbox event, user): a redelivery adds nothing). The
//!   notifications context will deliver them later.
//! - [`Refunds`]: pays the refund of a BookingCancelled with `refund_cents > 0` through the
//!   payment provider (idempotent per booking) and marks it refunded: the compensation of a
//!   cancellation runs after the cancellation committed, at least once.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::payment;
use super::repo;
use super::service;
use super::settings;
use crate::db::Db;
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

/// The booking consumers added to `h`.
pub fn register(h: Handlers) -> Handlers {
    h.with(Arc::new(Notifications)).with(Arc::new(Refunds))
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
