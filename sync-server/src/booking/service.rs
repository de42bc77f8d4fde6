//! Booking use cases: each is one `Db::write_locked` transaction (serialised with [`repo::LOCK`]),
//! except payment, whose provider call happens between two transactions.

use std::sync::Arc;

use chrono::NaiveDate;
use serde_json::json;

use super::payment::{self, Charge, ChargeOutcome};
use super::refund::RefundPolicy;
use super::repo::{self, BookingRow, EventRow};
use super::settings;
use crate::auth::{Caller, Permission, Role, Tier};
use crate::db::{Backend, Tx};
use crate::error::{ApiError, Error, Result};
use crate::state::AppState;

/// Validated fields of an event (create, or the result of applying an update).
#[derive(Debug, Clone)]
pub struct EventFields {
    pub title: String,
    pub sport: String,
    pub venue_name: String,
    pub lat_e6: i64,
    pub lon_e6: i64,
    pub starts_at: i64,
    pub ends_at: i64,
    pub capacity: i64,
    pub price_cents: i64,
    pub currency: String,
    pub min_age: i64,
    pub public_opens_at: i64,
    pub priority_opens_at: i64,
    pub refund_policy: RefundPolicy,
}

/// Partner, or administrator with an MFA-verified session.
pub fn require_organizer(caller: &Caller) -> Result<(), ApiError> {
    match caller.role {
        Role::Partner => Ok(()),
        Role::Administrator => caller.require(Permission::AdministerUsers),
        Role::User => Err(ApiError::forbidden(
            "forbidden",
            "organizing events needs the partner or administrator role",
        )),
    }
}

fn require_owner(caller: &Caller, ev: &EventRow) -> Result<(), ApiError> {
    require_organizer(caller)?;
    if caller.role == Role::Administrator || ev.organizer_id == caller.user_id {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "not_organizer",
            "only the event's organizer (or an administrator) may change it",
        ))
    }
}

fn notify_outbox(state: &AppState) {
    state.outbox_notify.notify_one();
}

pub async fn create_event(state: &AppState, caller: &Caller, f: EventFields) -> Result<EventRow> {
    require_organizer(caller)?;
    let now = state.now().as_millis();
    let f = Arc::new(f);
    let organizer = caller.user_id.clone();
    let id = uuid::Uuid::new_v4().to_string();
    let ev = state
        .db
        .write_locked(repo::LOCK, move |tx: &mut Tx| {
            let (f, organizer, id) = (f.clone(), organizer.clone(), id.clone());
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO booking_events (id, organizer_id, title, sport, venue_name, lat_e6,
                       lon_e6, starts_at, ends_at, capacity, price_cents, currency, min_age,
                       public_opens_at, priority_opens_at, refund_policy, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                       $17, $17)",
                )
                .bind(&id)
                .bind(&organizer)
                .bind(&f.title)
                .bind(&f.sport)
                .bind(&f.venue_name)
                .bind(f.lat_e6)
                .bind(f.lon_e6)
                .bind(f.starts_at)
                .bind(f.ends_at)
                .bind(f.capacity)
                .bind(f.price_cents)
                .bind(&f.currency)
                .bind(f.min_age)
                .bind(f.public_opens_at)
                .bind(f.priority_opens_at)
                .bind(serde_json::to_string(&f.refund_policy).unwrap_or_default())
                .bind(now)
                .execute(&mut **tx)
                .await?;
                repo::emit(
                    tx,
                    now,
                    repo::EVENT_CREATED,
                    &id,
                    json!({"event_id": id, "organizer_id": organizer, "title": f.title,
                           "sport": f.sport, "starts_at": f.starts_at, "capacity": f.capacity,
                           "notify": [organizer],
                           "message": format!("your event {} is published", f.title)}),
                )
                .await?;
                repo::load_event(&mut **tx, &id)
                    .await?
                    .ok_or_else(|| Error::Corrupt("event vanished".into()))
            })
        })
        .await?;
    notify_outbox(state);
    Ok(ev)
}

/// Computes the new fields of an event from its current row (validation included).
pub type ApplyUpdate = Arc<dyn Fn(&EventRow) -> Result<EventFields, ApiError> + Send + Sync>;

/// Applies `apply` to the current fields under the version check; promotes from the waitlist
/// when capacity grew.
pub async fn update_event(
    state: &AppState,
    caller: &Caller,
    id: &str,
    version: i64,
    apply: ApplyUpdate,
) -> Result<EventRow> {
    let now = state.now().as_millis();
    let s = settings::get().clone();
    let caller = Arc::new(caller.clone());
    let id = id.to_string();
    let ev = state
        .db
        .write_locked(repo::LOCK, move |tx: &mut Tx| {
            let (caller, id, apply, s) = (caller.clone(), id.clone(), apply.clone(), s.clone());
            Box::pin(async move {
                let ev = repo::load_event(&mut **tx, &id)
                    .await?
                    .ok_or_else(ApiError::not_found)?;
                require_owner(&caller, &ev)?;
                if ev.status != "scheduled" {
                    return Err(
                        ApiError::conflict("event_cancelled", "the event is cancelled").into(),
                    );
                }
                if ev.version != version {
                    return Err(ApiError::conflict(
                        "version_conflict",
                        "the event changed since you read it; read it again",
                    )
                    .with_details(json!({"current_version": ev.version}))
                    .into());
                }
                let f = apply(&ev)?;
                if f.capacity < ev.seats_taken {
                    return Err(ApiError::conflict(
                        "capacity_below_taken",
                        "capacity cannot go below the seats already held or confirmed",
                    )
                    .with_details(json!({"seats_taken": ev.seats_taken}))
                    .into());
                }
                // RULES: at most `daily_limit` events per user per day. Moving the event to another
                // day moves every seat of it there; refused if that would put anyone over.
                let new_day = repo::day_of(f.starts_at);
                if new_day != repo::day_of(ev.starts_at) {
                    let over =
                        repo::participants_at_limit_on(tx, &id, &new_day, now, s.daily_limit)
                            .await?;
                    if over > 0 {
                        let who = if over == 1 {
                            "participant"
                        } else {
                            "participants"
                        };
                        return Err(ApiError::conflict(
                            "move_exceeds_daily_limit",
                            format!(
                                "moving the event to {new_day} would give {over} {who} more than \
                                 {} events that day (each already holds that many seats there); \
                                 the event was not changed",
                                s.daily_limit
                            ),
                        )
                        .with_details(json!({"day": new_day, "limit": s.daily_limit,
                                             "participants_over_limit": over}))
                        .into());
                    }
                }
                sqlx::query(
                    "UPDATE booking_events SET title = $2, sport = $3, venue_name = $4, lat_e6 = $5,
                       lon_e6 = $6, starts_at = $7, ends_at = $8, capacity = $9, price_cents = $10,
                       currency = $11, min_age = $12, public_opens_at = $13,
                       priority_opens_at = $14, refund_policy = $15, version = version + 1,
                       updated_at = $16
                     WHERE id = $1",
                )
                .bind(&id)
                .bind(&f.title)
                .bind(&f.sport)
                .bind(&f.venue_name)
                .bind(f.lat_e6)
                .bind(f.lon_e6)
                .bind(f.starts_at)
                .bind(f.ends_at)
                .bind(f.capacity)
                .bind(f.price_cents)
                .bind(&f.currency)
                .bind(f.min_age)
                .bind(f.public_opens_at)
                .bind(f.priority_opens_at)
                .bind(serde_json::to_string(&f.refund_policy).unwrap_or_default())
                .bind(now)
                .execute(&mut **tx)
                .await?;
                if f.starts_at != ev.starts_at {
                    sqlx::query("UPDATE bookings SET event_day = $2 WHERE event_id = $1")
                        .bind(&id)
                        .bind(repo::day_of(f.starts_at))
                        .execute(&mut **tx)
                        .await?;
                }
                if f.capacity > ev.capacity {
                    repo::promote(tx, now, &id, s.hold_ttl_ms, s.daily_limit).await?;
                }
                repo::load_event(&mut **tx, &id)
                    .await?
                    .ok_or_else(|| Error::Corrupt("event vanished".into()))
            })
        })
        .await?;
    notify_outbox(state);
    Ok(ev)
}

/// Organizer cancels: every held or confirmed booking is cancelled (paid ones refunded in full
/// through the outbox), the waitlist is closed, everyone involved is notified.
pub async fn cancel_event(state: &AppState, caller: &Caller, id: &str) -> Result<EventRow> {
    let now = state.now().as_millis();
    let caller = Arc::new(caller.clone());
    let id = id.to_string();
    let ev = state
        .db
        .write_locked(repo::LOCK, move |tx: &mut Tx| {
            let (caller, id) = (caller.clone(), id.clone());
            Box::pin(async move {
                let ev = repo::load_event(&mut **tx, &id)
                    .await?
                    .ok_or_else(ApiError::not_found)?;
                require_owner(&caller, &ev)?;
                if ev.status == "cancelled" {
                    return Ok(ev);
                }
                let sql = format!(
                    "SELECT {} FROM bookings WHERE event_id = $1 AND status IN ('held', 'confirmed')
                     ORDER BY held_at, id",
                    repo::BOOKING_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&id)
                    .fetch_all(&mut **tx)
                    .await?;
                let mut notify: Vec<String> = vec![];
                for r in &rows {
                    let b = repo::booking_from_row(r)?;
                    let refund = if b.status == "confirmed" { b.amount_cents } else { 0 };
                    repo::end_booking(tx, now, &b, "cancelled", "event_cancelled", refund, false)
                        .await?;
                    notify.push(b.user_id);
                }
                let waiting: Vec<String> = sqlx::query_scalar(
                    "SELECT user_id FROM booking_waitlist WHERE event_id = $1 AND status = 'waiting'
                     ORDER BY priority, seq",
                )
                .bind(&id)
                .fetch_all(&mut **tx)
                .await?;
                sqlx::query(
                    "UPDATE booking_waitlist SET status = 'cancelled', left_at = $2
                     WHERE event_id = $1 AND status = 'waiting'",
                )
                .bind(&id)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                notify.extend(waiting);
                sqlx::query(
                    "UPDATE booking_events SET status = 'cancelled', version = version + 1,
                       updated_at = $2 WHERE id = $1",
                )
                .bind(&id)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                repo::emit(
                    tx,
                    now,
                    repo::EVENT_CANCELLED,
                    &id,
                    json!({"event_id": id, "bookings_cancelled": rows.len(), "notify": notify,
                           "message": format!("{} is cancelled by its organizer; paid bookings are refunded in full", ev.title)}),
                )
                .await?;
                repo::load_event(&mut **tx, &id)
                    .await?
                    .ok_or_else(|| Error::Corrupt("event vanished".into()))
            })
        })
        .await?;
    notify_outbox(state);
    Ok(ev)
}

/// What a booking request ended as.
#[derive(Debug, Clone)]
pub enum BookOutcome {
    Held(Box<BookingRow>),
    Waitlisted { id: String, position: i64 },
}

fn age_on_day(birth: &str, day_ms: i64) -> Option<i64> {
    let birth = NaiveDate::parse_from_str(birth, "%Y-%m-%d").ok()?;
    let day = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(day_ms)?.date_naive();
    Some(i64::from(crate::identity::age_on(birth, day)))
}

/// Check, then hold a seat (or join the waitlist), in one transaction.
pub async fn book(state: &AppState, caller: &Caller, event_id: &str) -> Result<BookOutcome> {
    let now = state.now().as_millis();
    let s = settings::get().clone();
    let user = caller.user_id.clone();
    let tier = caller.tier;
    let birth = caller.profile.birth_date.clone();
    let event_id = event_id.to_string();
    // Read before the lock: the fast path needs the event's rules, and the general transaction
    // then reads everything it needs in one query under the lock (event_and_caller).
    let seen = repo::load_event(state.db.pool(), &event_id).await?;
    if let Some(ev) = seen.as_ref() {
        // The plain hold, the case of a popular event opening, in one round trip on
        // PostgreSQL; anything else (and a refusal, for its answer) takes the general path.
        if state.db.backend() == Backend::Postgres && check_can_book(ev, tier, &birth, now).is_ok()
        {
            if let Some(b) =
                repo::fast_hold(&state.db, now, ev, &user, s.hold_ttl_ms, s.daily_limit).await?
            {
                notify_outbox(state);
                return Ok(BookOutcome::Held(Box::new(b)));
            }
        }
    }
    let day_seen = seen.map(|e| repo::day_of(e.starts_at)).unwrap_or_default();
    let out = state
        .db
        .write_locked(repo::LOCK, move |tx: &mut Tx| {
            let (user, birth, event_id, s, day_seen) = (
                user.clone(),
                birth.clone(),
                event_id.clone(),
                s.clone(),
                day_seen.clone(),
            );
            Box::pin(async move {
                let (ev, mine) = repo::event_and_caller(tx, &event_id, &user, &day_seen, now)
                    .await?
                    .ok_or_else(ApiError::not_found)?;
                check_can_book(&ev, tier, &birth, now)?;
                let day = repo::day_of(ev.starts_at);
                if let Some(b) = mine.booking {
                    return Err(ApiError::conflict(
                        "already_booked",
                        "you already hold or have a seat at this event",
                    )
                    .with_details(json!({"booking_id": b}))
                    .into());
                }
                let waiting = if mine.waiting {
                    repo::waiting_entry(tx, &event_id, &user).await?
                } else {
                    None
                };
                if let Some((w, pos)) = waiting {
                    return Err(ApiError::conflict(
                        "already_waitlisted",
                        "you are already on this event's waitlist",
                    )
                    .with_details(json!({"waitlist_id": w, "position": pos}))
                    .into());
                }
                if mine.on_day >= s.daily_limit {
                    return Err(ApiError::conflict(
                        "daily_limit_reached",
                        format!(
                            "at most {} events per day; you already have that many on {day}",
                            s.daily_limit
                        ),
                    )
                    .with_details(json!({"day": day, "limit": s.daily_limit}))
                    .into());
                }
                // Holds that ran out go back first, to whoever waits longest.
                if mine.holds_due {
                    repo::expire_due(tx, now, Some(&event_id), s.hold_ttl_ms, s.daily_limit)
                        .await?;
                }
                if let Some(b) = repo::hold_if_free(tx, now, &ev, &user, s.hold_ttl_ms).await? {
                    return Ok(BookOutcome::Held(Box::new(b)));
                }
                let priority = match tier {
                    Tier::Premium | Tier::Pro => 0,
                    Tier::Free => 1,
                };
                let (id, position) =
                    repo::join_waitlist(tx, now, &event_id, &user, priority).await?;
                Ok(BookOutcome::Waitlisted { id, position })
            })
        })
        .await?;
    notify_outbox(state);
    Ok(out)
}

fn check_can_book(ev: &EventRow, tier: Tier, birth: &str, now: i64) -> Result<(), ApiError> {
    if ev.status != "scheduled" {
        return Err(ApiError::conflict(
            "event_cancelled",
            "the event is cancelled",
        ));
    }
    if now >= ev.starts_at {
        return Err(ApiError::conflict(
            "event_started",
            "the event has already started",
        ));
    }
    let premium = matches!(tier, Tier::Premium | Tier::Pro);
    let opens = if premium {
        ev.priority_opens_at
    } else {
        ev.public_opens_at
    };
    if now < opens {
        let msg = if premium || now < ev.priority_opens_at {
            "booking for this event is not open yet"
        } else {
            "booking is open to premium and pro members only until public opening"
        };
        return Err(ApiError::forbidden("booking_not_open", msg).with_details(json!({
            "opens_at": fitedge_core::time::Timestamp(opens).to_rfc3339(),
            "public_opens_at": fitedge_core::time::Timestamp(ev.public_opens_at).to_rfc3339(),
            "priority_opens_at": fitedge_core::time::Timestamp(ev.priority_opens_at).to_rfc3339(),
        })));
    }
    if ev.min_age > 0 {
        let age = age_on_day(birth, ev.starts_at).unwrap_or(0);
        if age < ev.min_age {
            return Err(ApiError::forbidden(
                "age_restriction",
                format!("this event is for participants aged {} or more", ev.min_age),
            )
            .with_details(json!({"min_age": ev.min_age})));
        }
    }
    Ok(())
}

/// Payment result.
#[derive(Debug, Clone)]
pub enum PayOutcome {
    Confirmed(BookingRow),
}

enum PayCheck {
    Charge(Box<BookingRow>, String),
    AlreadyConfirmed(Box<BookingRow>),
    Expired,
}

pub async fn pay(
    state: &AppState,
    caller: &Caller,
    booking_id: &str,
    method: &str,
) -> Result<PayOutcome> {
    let s = settings::get().clone();
    let user = caller.user_id.clone();
    let id = booking_id.to_string();
    let now = state.now().as_millis();
    let check = {
        let (user, id, s) = (user.clone(), id.clone(), s.clone());
        state
            .db
            .write_locked(repo::LOCK, move |tx: &mut Tx| {
                let (user, id, s) = (user.clone(), id.clone(), s.clone());
                Box::pin(async move {
                    let b = owned_booking(tx, &id, &user).await?;
                    if b.status == "confirmed" {
                        return Ok(PayCheck::AlreadyConfirmed(Box::new(b)));
                    }
                    if b.status != "held" {
                        return Err(not_held(&b).into());
                    }
                    if now >= b.hold_expires_at {
                        repo::end_booking(tx, now, &b, "expired", "hold_expired", 0, true).await?;
                        repo::promote(tx, now, &b.event_id, s.hold_ttl_ms, s.daily_limit).await?;
                        return Ok(PayCheck::Expired);
                    }
                    let currency: String =
                        sqlx::query_scalar("SELECT currency FROM booking_events WHERE id = $1")
                            .bind(&b.event_id)
                            .fetch_one(&mut **tx)
                            .await?;
                    Ok(PayCheck::Charge(Box::new(b), currency))
                })
            })
            .await?
    };
    let (b, currency) = match check {
        PayCheck::AlreadyConfirmed(b) => return Ok(PayOutcome::Confirmed(*b)),
        PayCheck::Expired => {
            notify_outbox(state);
            return Err(hold_expired().into());
        }
        PayCheck::Charge(b, c) => (*b, c),
    };
    let payment_ref = if b.amount_cents == 0 {
        "free".to_string()
    } else {
        let charge = Charge {
            booking_id: b.id.clone(),
            user_id: user.clone(),
            amount_cents: b.amount_cents,
            currency,
            method: method.to_string(),
        };
        let provider = payment::provider();
        let outcome = tokio::time::timeout(s.payment_timeout, provider.charge(&charge))
            .await
            .unwrap_or(ChargeOutcome::Timeout);
        match outcome {
            ChargeOutcome::Approved { payment_ref } => payment_ref,
            ChargeOutcome::Declined { reason } => {
                return Err(ApiError::new(
                    axum::http::StatusCode::PAYMENT_REQUIRED,
                    "payment_declined",
                    format!("the payment was declined: {reason}; the seat stays held until the hold expires"),
                )
                .with_details(json!({"hold_expires_at": fitedge_core::time::Timestamp(b.hold_expires_at).to_rfc3339()}))
                .into())
            }
            ChargeOutcome::Timeout => {
                return Err(ApiError::new(
                    axum::http::StatusCode::GATEWAY_TIMEOUT,
                    "payment_timeout",
                    "the payment provider did not answer in time; retry (you will not be charged twice)",
                )
                .with_retry_after(1)
                .into())
            }
        }
    };
    // Second transaction: confirm if the hold is still ours; else refund what was just charged.
    let now = state.now().as_millis();
    let out = state
        .db
        .write_locked(repo::LOCK, move |tx: &mut Tx| {
            let (user, id, s, payment_ref) = (user.clone(), id.clone(), s.clone(), payment_ref.clone());
            Box::pin(async move {
                let b = owned_booking(tx, &id, &user).await?;
                if b.status == "confirmed" {
                    return Ok(Ok(b));
                }
                if b.status == "held" && now < b.hold_expires_at {
                    sqlx::query(
                        "UPDATE bookings SET status = 'confirmed', confirmed_at = $2, payment_ref = $3
                         WHERE id = $1",
                    )
                    .bind(&id)
                    .bind(now)
                    .bind(&payment_ref)
                    .execute(&mut **tx)
                    .await?;
                    repo::emit(
                        tx,
                        now,
                        repo::BOOKING_CONFIRMED,
                        &id,
                        json!({"booking_id": id, "event_id": b.event_id, "user_id": user,
                               "amount_cents": b.amount_cents, "notify": [user],
                               "message": "your booking is confirmed"}),
                    )
                    .await?;
                    let b = repo::load_booking(&mut **tx, &id)
                        .await?
                        .ok_or_else(|| Error::Corrupt("booking vanished".into()))?;
                    return Ok(Ok(b));
                }
                // Charged, but the booking is no longer a live hold. The provider charges a
                // booking once (its id is the idempotency key, payment.rs), so this charge is the
                // booking's only one. If the booking was confirmed at some point, or already
                // carries a payment (a late payment refunded before this one), that charge was
                // already accounted for by whatever ended the booking (the refund policy, an
                // event cancellation, the earlier late payment's full refund): leave it alone.
                if b.confirmed_at.is_some() || b.payment_ref.is_some() || b.refund_cents > 0 {
                    if b.payment_ref.as_deref().is_some_and(|r| r != payment_ref) {
                        tracing::error!(booking = %id, stored = ?b.payment_ref, late = %payment_ref,
                            "the payment provider returned a second, different charge for one booking; it is not refunded automatically");
                    }
                    return Ok(Err(if b.confirmed_at.is_some() {
                        not_held(&b)
                    } else {
                        hold_expired()
                    }));
                }
                // Nothing was paid for it yet (it expired or was cancelled while held): this
                // charge confirmed nothing, give it all back.
                sqlx::query("UPDATE bookings SET payment_ref = $2 WHERE id = $1")
                    .bind(&id)
                    .bind(&payment_ref)
                    .execute(&mut **tx)
                    .await?;
                if b.status == "held" {
                    repo::end_booking(tx, now, &b, "expired", "hold_expired", b.amount_cents, true).await?;
                    repo::promote(tx, now, &b.event_id, s.hold_ttl_ms, s.daily_limit).await?;
                } else if b.amount_cents > 0 {
                    sqlx::query(
                        "UPDATE bookings SET refund_cents = amount_cents, refund_status = 'pending'
                         WHERE id = $1",
                    )
                    .bind(&id)
                    .execute(&mut **tx)
                    .await?;
                    repo::emit(
                        tx,
                        now,
                        repo::BOOKING_CANCELLED,
                        &id,
                        json!({"booking_id": id, "event_id": b.event_id, "user_id": user,
                               "reason": "paid_after_cancellation", "refund_cents": b.amount_cents,
                               "notify": [user], "message": "your payment arrived after the booking ended and is refunded"}),
                    )
                    .await?;
                }
                Ok(Err(hold_expired()))
            })
        })
        .await?;
    notify_outbox(state);
    match out {
        Ok(b) => Ok(PayOutcome::Confirmed(b)),
        Err(e) => Err(e.into()),
    }
}

fn hold_expired() -> ApiError {
    ApiError::conflict(
        "hold_expired",
        "the hold expired before payment and the seat was released; any charge is refunded",
    )
}

fn not_held(b: &BookingRow) -> ApiError {
    ApiError::conflict("booking_not_held", format!("the booking is {}", b.status))
        .with_details(json!({"status": b.status}))
}

async fn owned_booking(tx: &mut Tx, id: &str, user: &str) -> Result<BookingRow> {
    match repo::load_booking(&mut **tx, id).await? {
        Some(b) if b.user_id == user => Ok(b),
        _ => Err(ApiError::not_found().into()),
    }
}

/// The user cancels a held or confirmed booking; a paid one is refunded per the event's policy.
pub async fn cancel_booking(
    state: &AppState,
    caller: &Caller,
    booking_id: &str,
) -> Result<BookingRow> {
    let now = state.now().as_millis();
    let s = settings::get().clone();
    let user = caller.user_id.clone();
    let id = booking_id.to_string();
    let b = state
        .db
        .write_locked(repo::LOCK, move |tx: &mut Tx| {
            let (user, id, s) = (user.clone(), id.clone(), s.clone());
            Box::pin(async move {
                let b = owned_booking(tx, &id, &user).await?;
                if b.status != "held" && b.status != "confirmed" {
                    return Err(not_held(&b).into());
                }
                let ev = repo::load_event(&mut **tx, &b.event_id)
                    .await?
                    .ok_or_else(|| Error::Corrupt("booking without event".into()))?;
                let refund = if b.status == "confirmed" {
                    ev.refund_policy
                        .refund_cents(b.amount_cents, ev.starts_at, now)
                } else {
                    0
                };
                repo::end_booking(tx, now, &b, "cancelled", "user_cancelled", refund, true).await?;
                repo::promote(tx, now, &b.event_id, s.hold_ttl_ms, s.daily_limit).await?;
                repo::load_booking(&mut **tx, &id)
                    .await?
                    .ok_or_else(|| Error::Corrupt("booking vanished".into()))
            })
        })
        .await?;
    notify_outbox(state);
    Ok(b)
}

/// One sweep: expires every hold whose time is up and promotes from the waitlists.
pub async fn sweep(state: &AppState) -> Result<usize> {
    let now = state.now().as_millis();
    let s = settings::get().clone();
    let n = state
        .db
        .write_locked(repo::LOCK, move |tx: &mut Tx| {
            let s = s.clone();
            Box::pin(
                async move { repo::expire_due(tx, now, None, s.hold_ttl_ms, s.daily_limit).await },
            )
        })
        .await?;
    if n > 0 {
        notify_outbox(state);
    }
    Ok(n)
}
