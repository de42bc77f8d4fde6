//! Booking rows and the transactional steps every use case is made of. Everything here runs
//! inside a `Db::write` transaction opened by `service.rs`, after [`lock`].
//!
//! Seats: `booking_events.seats_taken` counts held + confirmed bookings and only ever changes by
//! one guarded statement, `UPDATE ... SET seats_taken = seats_taken + 1 WHERE seats_taken <
//! capacity` ([`take_seat`]); the CHECK constraint repeats the bound in the schema.

use chrono::DateTime;
use fitedge_core::time::Timestamp;
use serde_json::json;
use sqlx::any::AnyRow;

use super::refund::RefundPolicy;
use crate::db::{col, Backend, Db, Tx};
use crate::error::{Error, Result};
use crate::outbox;

pub const EVENT_CREATED: &str = "booking.event_created";
pub const BOOKING_HELD: &str = "booking.booking_held";
pub const BOOKING_CONFIRMED: &str = "booking.booking_confirmed";
pub const BOOKING_CANCELLED: &str = "booking.booking_cancelled";
pub const WAITLIST_PROMOTED: &str = "booking.waitlist_promoted";
pub const EVENT_CANCELLED: &str = "booking.event_cancelled";
pub const ALL_KINDS: [&str; 6] = [
    EVENT_CREATED,
    BOOKING_HELD,
    BOOKING_CONFIRMED,
    BOOKING_CANCELLED,
    WAITLIST_PROMOTED,
    EVENT_CANCELLED,
];

#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: String,
    pub organizer_id: String,
    pub title: String,
    pub sport: String,
    pub venue_name: String,
    pub lat_e6: i64,
    pub lon_e6: i64,
    pub starts_at: i64,
    pub ends_at: i64,
    pub capacity: i64,
    pub seats_taken: i64,
    pub price_cents: i64,
    pub currency: String,
    pub min_age: i64,
    pub public_opens_at: i64,
    pub priority_opens_at: i64,
    pub refund_policy: RefundPolicy,
    pub status: String,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

pub const EVENT_COLUMNS: &str = "id, organizer_id, title, sport, venue_name, lat_e6, lon_e6, \
    starts_at, ends_at, capacity, seats_taken, price_cents, currency, min_age, public_opens_at, \
    priority_opens_at, refund_policy, status, version, created_at, updated_at";

pub fn event_from_row(r: &AnyRow) -> Result<EventRow> {
    let policy: String = col(r, "refund_policy")?;
    Ok(EventRow {
        id: col(r, "id")?,
        organizer_id: col(r, "organizer_id")?,
        title: col(r, "title")?,
        sport: col(r, "sport")?,
        venue_name: col(r, "venue_name")?,
        lat_e6: col(r, "lat_e6")?,
        lon_e6: col(r, "lon_e6")?,
        starts_at: col(r, "starts_at")?,
        ends_at: col(r, "ends_at")?,
        capacity: col(r, "capacity")?,
        seats_taken: col(r, "seats_taken")?,
        price_cents: col(r, "price_cents")?,
        currency: col(r, "currency")?,
        min_age: col(r, "min_age")?,
        public_opens_at: col(r, "public_opens_at")?,
        priority_opens_at: col(r, "priority_opens_at")?,
        refund_policy: serde_json::from_str(&policy)
            .map_err(|e| Error::Corrupt(format!("refund_policy: {e}")))?,
        status: col(r, "status")?,
        version: col(r, "version")?,
        created_at: col(r, "created_at")?,
        updated_at: col(r, "updated_at")?,
    })
}

#[derive(Debug, Clone)]
pub struct BookingRow {
    pub id: String,
    pub event_id: String,
    pub user_id: String,
    pub status: String,
    pub event_day: String,
    pub amount_cents: i64,
    pub held_at: i64,
    pub hold_expires_at: i64,
    pub confirmed_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub cancel_reason: Option<String>,
    pub payment_ref: Option<String>,
    pub refund_cents: i64,
    pub refund_status: Option<String>,
    pub from_waitlist: bool,
}

pub const BOOKING_COLUMNS: &str = "id, event_id, user_id, status, event_day, amount_cents, \
    held_at, hold_expires_at, confirmed_at, cancelled_at, cancel_reason, payment_ref, \
    refund_cents, refund_status, from_waitlist";

pub fn booking_from_row(r: &AnyRow) -> Result<BookingRow> {
    let w: i64 = col(r, "from_waitlist")?;
    Ok(BookingRow {
        id: col(r, "id")?,
        event_id: col(r, "event_id")?,
        user_id: col(r, "user_id")?,
        status: col(r, "status")?,
        event_day: col(r, "event_day")?,
        amount_cents: col(r, "amount_cents")?,
        held_at: col(r, "held_at")?,
        hold_expires_at: col(r, "hold_expires_at")?,
        confirmed_at: col(r, "confirmed_at")?,
        cancelled_at: col(r, "cancelled_at")?,
        cancel_reason: col(r, "cancel_reason")?,
        payment_ref: col(r, "payment_ref")?,
        refund_cents: col(r, "refund_cents")?,
        refund_status: col(r, "refund_status")?,
        from_waitlist: w != 0,
    })
}

/// The UTC calendar day (`YYYY-MM-DD`) of a time: the unit of the daily limit.
pub fn day_of(ms: i64) -> String {
    DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Serialises booking writers on PostgreSQL (SQLite's `BEGIN IMMEDIATE` already does): a table
/// lock taken before the transaction's first query, so the serializable snapshot is taken after
/// the previous writer committed: hot-row writers queue instead of failing with 40001 and
/// retrying. Plain reads (ACCESS SHARE) are not blocked. Given to [`crate::db::Db::write_locked`],
/// which sends it with `BEGIN`.
pub const LOCK: &str = "LOCK TABLE booking_events IN SHARE ROW EXCLUSIVE MODE";

/// [`LOCK`] inside a transaction someone else began (the outbox dispatcher's); it must come
/// before the transaction's first query for the snapshot to be fresh.
pub async fn lock(tx: &mut Tx, backend: Backend) -> Result<()> {
    if backend == Backend::Postgres {
        sqlx::query(LOCK).execute(&mut **tx).await?;
    }
    Ok(())
}

pub async fn load_event<'e, E>(ex: E, id: &str) -> Result<Option<EventRow>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!("SELECT {EVENT_COLUMNS} FROM booking_events WHERE id = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(ex)
        .await?
        .map(|r| event_from_row(&r))
        .transpose()
}

pub async fn load_booking<'e, E>(ex: E, id: &str) -> Result<Option<BookingRow>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!("SELECT {BOOKING_COLUMNS} FROM bookings WHERE id = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(ex)
        .await?
        .map(|r| booking_from_row(&r))
        .transpose()
}

/// The caller's held or confirmed booking of an event.
pub async fn active_booking(tx: &mut Tx, event_id: &str, user_id: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM bookings WHERE event_id = $1 AND user_id = $2
         AND status IN ('held', 'confirmed')",
    )
    .bind(event_id)
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// What a booking request needs to know about the caller and the event, in one round trip
/// (the booking lock is held while it runs, so every statement saved is throughput).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerState {
    /// The caller's held or confirmed booking of the event.
    pub booking: Option<String>,
    /// Whether the caller waits for this event (the entry is read again on that rare path).
    pub waiting: bool,
    /// The caller's held or confirmed bookings of other events on the event's `day`.
    pub on_day: i64,
    /// Whether some hold of the event ran out at `now` and must be expired first.
    pub holds_due: bool,
}

/// The event and [`CallerState`] in one statement. `day` is the event's UTC day as the caller
/// last saw it (read before the booking lock, to keep this the only read under it); if the
/// event moved to another day since, the count is taken again for the new day.
pub async fn event_and_caller(
    tx: &mut Tx,
    event_id: &str,
    user_id: &str,
    day: &str,
    now: i64,
) -> Result<Option<(EventRow, CallerState)>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS},
           (SELECT id FROM bookings WHERE event_id = $1 AND user_id = $2
              AND status IN ('held', 'confirmed') LIMIT 1) AS my_booking,
           (SELECT COUNT(*) FROM booking_waitlist WHERE event_id = $1 AND user_id = $2
              AND status = 'waiting') AS my_waiting,
           (SELECT COUNT(*) FROM bookings WHERE user_id = $2 AND event_day = $3
              AND status IN ('held', 'confirmed') AND event_id <> $1) AS my_on_day,
           first_hold_expiry
         FROM booking_events WHERE id = $1"
    );
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(event_id)
        .bind(user_id)
        .bind(day)
        .bind(now)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(None);
    };
    let ev = event_from_row(&row)?;
    let mut state = CallerState {
        booking: col(&row, "my_booking")?,
        waiting: col::<i64>(&row, "my_waiting")? > 0,
        on_day: col(&row, "my_on_day")?,
        holds_due: col::<Option<i64>>(&row, "first_hold_expiry")?.is_some_and(|t| t <= now),
    };
    let actual = day_of(ev.starts_at);
    if actual != day {
        state.on_day = active_on_day(tx, user_id, &actual, event_id).await?;
    }
    Ok(Some((ev, state)))
}

/// Held or confirmed bookings of the user for other events on `day`.
pub async fn active_on_day(
    tx: &mut Tx,
    user_id: &str,
    day: &str,
    except_event: &str,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM bookings WHERE user_id = $1 AND event_day = $2
         AND status IN ('held', 'confirmed') AND event_id <> $3",
    )
    .bind(user_id)
    .bind(day)
    .bind(except_event)
    .fetch_one(&mut **tx)
    .await?)
}

/// How many users with a seat of `event_id` already hold `limit` or more seats of other events
/// on `day`: those the event's move to `day` would put over the daily limit. A hold that ran out
/// at `now` (not yet swept) counts for nobody.
pub async fn participants_at_limit_on(
    tx: &mut Tx,
    event_id: &str,
    day: &str,
    now: i64,
    limit: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM bookings b WHERE b.event_id = $1
           AND (b.status = 'confirmed' OR (b.status = 'held' AND b.hold_expires_at > $3))
           AND (SELECT COUNT(*) FROM bookings o WHERE o.user_id = b.user_id AND o.event_day = $2
                  AND o.event_id <> $1
                  AND (o.status = 'confirmed' OR (o.status = 'held' AND o.hold_expires_at > $3))
               ) >= $4",
    )
    .bind(event_id)
    .bind(day)
    .bind(now)
    .bind(limit)
    .fetch_one(&mut **tx)
    .await?)
}

/// The guarded increment: true when a seat was free and is now taken.
pub async fn take_seat(tx: &mut Tx, event_id: &str, now: i64, hold_ttl_ms: i64) -> Result<bool> {
    // The hold made on this seat expires at now + ttl: lower the event's bound (migration 0101).
    let r = sqlx::query(
        "UPDATE booking_events SET seats_taken = seats_taken + 1, updated_at = $2,
           first_hold_expiry = CASE WHEN first_hold_expiry IS NULL OR first_hold_expiry > $3
                               THEN $3 ELSE first_hold_expiry END
         WHERE id = $1 AND status = 'scheduled' AND seats_taken < capacity",
    )
    .bind(event_id)
    .bind(now)
    .bind(hold_expiry(now, hold_ttl_ms))
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn release_seat(tx: &mut Tx, event_id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE booking_events SET seats_taken = seats_taken - 1, updated_at = $2
         WHERE id = $1 AND seats_taken > 0",
    )
    .bind(event_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn emit(
    tx: &mut Tx,
    now: i64,
    kind: &str,
    aggregate: &str,
    payload: serde_json::Value,
) -> Result<()> {
    outbox::enqueue(tx, Timestamp(now), kind, aggregate, payload).await?;
    Ok(())
}

/// When a hold made at `now` runs out.
fn hold_expiry(now: i64, hold_ttl_ms: i64) -> i64 {
    now.saturating_add(hold_ttl_ms)
}

fn new_hold(
    now: i64,
    ev: &EventRow,
    user_id: &str,
    hold_ttl_ms: i64,
    from_waitlist: bool,
) -> BookingRow {
    BookingRow {
        id: uuid::Uuid::new_v4().to_string(),
        event_id: ev.id.clone(),
        user_id: user_id.to_string(),
        status: "held".into(),
        event_day: day_of(ev.starts_at),
        amount_cents: ev.price_cents,
        held_at: now,
        hold_expires_at: hold_expiry(now, hold_ttl_ms),
        confirmed_at: None,
        cancelled_at: None,
        cancel_reason: None,
        payment_ref: None,
        refund_cents: 0,
        refund_status: None,
        from_waitlist,
    }
}

fn held_payload(b: &BookingRow, ev: &EventRow) -> serde_json::Value {
    json!({
        "booking_id": b.id, "event_id": b.event_id, "user_id": b.user_id,
        "hold_expires_at": b.hold_expires_at, "from_waitlist": b.from_waitlist,
        // A promotion is announced by WaitlistPromoted; a direct hold by this event.
        "notify": if b.from_waitlist { vec![] } else { vec![b.user_id.clone()] },
        "message": format!("a seat at {} is held for you until payment", ev.title),
    })
}

const INSERT_HOLD: &str = "INSERT INTO bookings (id, event_id, user_id, status, event_day,
       amount_cents, held_at, hold_expires_at, from_waitlist)";

/// Inserts a hold on a seat already taken with [`take_seat`].
pub async fn insert_hold(
    tx: &mut Tx,
    now: i64,
    ev: &EventRow,
    user_id: &str,
    hold_ttl_ms: i64,
    from_waitlist: bool,
) -> Result<BookingRow> {
    let b = new_hold(now, ev, user_id, hold_ttl_ms, from_waitlist);
    let sql = format!("{INSERT_HOLD} VALUES ($1, $2, $3, 'held', $4, $5, $6, $7, $8)");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&b.id)
        .bind(&b.event_id)
        .bind(&b.user_id)
        .bind(&b.event_day)
        .bind(b.amount_cents)
        .bind(now)
        .bind(b.hold_expires_at)
        .bind(i64::from(from_waitlist))
        .execute(&mut **tx)
        .await?;
    emit(tx, now, BOOKING_HELD, &b.id, held_payload(&b, ev)).await?;
    Ok(b)
}

/// Takes a seat if one is free and holds it for `user_id` ([`take_seat`], then [`insert_hold`]
/// and BookingHeld); `None` when the event is full.
pub async fn hold_if_free(
    tx: &mut Tx,
    now: i64,
    ev: &EventRow,
    user_id: &str,
    hold_ttl_ms: i64,
) -> Result<Option<BookingRow>> {
    if !take_seat(tx, &ev.id, now, hold_ttl_ms).await? {
        return Ok(None);
    }
    insert_hold(tx, now, ev, user_id, hold_ttl_ms, false)
        .await
        .map(Some)
}

/// PostgreSQL only: the plain hold in one round trip, by the database function
/// `fitedge_book_fast_hold` (migrations/postgres/0101_booking_fast_hold.sql), which takes
/// [`LOCK`], re-checks what the caller could not see from outside the lock, and writes the hold
/// and its BookingHeld event. `ev` is the event as read before the lock, already checked
/// against the caller's tier and age; if it changed since (another version), or anything but a
/// plain hold could apply, nothing is written and `None` says: run the general transaction.
pub async fn fast_hold(
    db: &Db,
    now: i64,
    ev: &EventRow,
    user_id: &str,
    hold_ttl_ms: i64,
    daily_limit: i64,
) -> Result<Option<BookingRow>> {
    let b = new_hold(now, ev, user_id, hold_ttl_ms, false);
    let lock_timeout_ms = i64::try_from(db.tx_timeout().as_millis()).unwrap_or(i64::MAX);
    let held: bool = sqlx::query_scalar(
        "SELECT fitedge_book_fast_hold($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&b.event_id)
    .bind(&b.user_id)
    .bind(&b.event_day)
    .bind(now)
    .bind(daily_limit)
    .bind(ev.version)
    .bind(&b.id)
    .bind(b.amount_cents)
    .bind(b.hold_expires_at)
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(BOOKING_HELD)
    .bind(held_payload(&b, ev).to_string())
    .bind(lock_timeout_ms)
    .fetch_one(db.pool())
    .await?;
    Ok(held.then_some(b))
}

/// Position (1-based) of a waiting entry: premium and pro first, then by arrival.
pub async fn waitlist_position(
    tx: &mut Tx,
    event_id: &str,
    priority: i64,
    seq: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM booking_waitlist WHERE event_id = $1 AND status = 'waiting'
         AND (priority < $2 OR (priority = $2 AND seq <= $3))",
    )
    .bind(event_id)
    .bind(priority)
    .bind(seq)
    .fetch_one(&mut **tx)
    .await?)
}

/// Adds the user to the waitlist; (entry id, position).
pub async fn join_waitlist(
    tx: &mut Tx,
    now: i64,
    event_id: &str,
    user_id: &str,
    priority: i64,
) -> Result<(String, i64)> {
    let seq: i64 = sqlx::query_scalar(
        "UPDATE booking_events SET waitlist_seq = waitlist_seq + 1 WHERE id = $1
         RETURNING waitlist_seq",
    )
    .bind(event_id)
    .fetch_one(&mut **tx)
    .await?;
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO booking_waitlist (id, event_id, user_id, priority, seq, status, joined_at)
         VALUES ($1, $2, $3, $4, $5, 'waiting', $6)",
    )
    .bind(&id)
    .bind(event_id)
    .bind(user_id)
    .bind(priority)
    .bind(seq)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let pos = waitlist_position(tx, event_id, priority, seq).await?;
    Ok((id, pos))
}

/// The caller's waiting entry of an event: (id, position).
pub async fn waiting_entry(
    tx: &mut Tx,
    event_id: &str,
    user_id: &str,
) -> Result<Option<(String, i64)>> {
    let row = sqlx::query(
        "SELECT id, priority, seq FROM booking_waitlist WHERE event_id = $1 AND user_id = $2
         AND status = 'waiting'",
    )
    .bind(event_id)
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        None => Ok(None),
        Some(r) => {
            let id: String = col(&r, "id")?;
            let pos =
                waitlist_position(tx, event_id, col(&r, "priority")?, col(&r, "seq")?).await?;
            Ok(Some((id, pos)))
        }
    }
}

/// Gives free seats to the first in line, one hold each, while seats and eligible entries
/// last. Entries that can no longer book (already 2 events that day, already holding a seat)
/// are skipped. Returns how many were promoted.
pub async fn promote(
    tx: &mut Tx,
    now: i64,
    event_id: &str,
    hold_ttl_ms: i64,
    daily_limit: i64,
) -> Result<usize> {
    let mut promoted = 0;
    loop {
        let Some(ev) = load_event(&mut **tx, event_id).await? else {
            return Ok(promoted);
        };
        if ev.status != "scheduled" || now >= ev.starts_at || ev.seats_taken >= ev.capacity {
            return Ok(promoted);
        }
        let Some(row) = sqlx::query(
            "SELECT id, user_id FROM booking_waitlist WHERE event_id = $1 AND status = 'waiting'
             ORDER BY priority, seq LIMIT 1",
        )
        .bind(event_id)
        .fetch_optional(&mut **tx)
        .await?
        else {
            return Ok(promoted);
        };
        let entry: String = col(&row, "id")?;
        let user: String = col(&row, "user_id")?;
        let eligible = active_booking(tx, event_id, &user).await?.is_none()
            && active_on_day(tx, &user, &day_of(ev.starts_at), event_id).await? < daily_limit;
        if !eligible {
            sqlx::query(
                "UPDATE booking_waitlist SET status = 'skipped', left_at = $2 WHERE id = $1",
            )
            .bind(&entry)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            continue;
        }
        if !take_seat(tx, event_id, now, hold_ttl_ms).await? {
            return Ok(promoted);
        }
        let b = insert_hold(tx, now, &ev, &user, hold_ttl_ms, true).await?;
        sqlx::query(
            "UPDATE booking_waitlist SET status = 'promoted', booking_id = $2, left_at = $3
             WHERE id = $1",
        )
        .bind(&entry)
        .bind(&b.id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        emit(
            tx,
            now,
            WAITLIST_PROMOTED,
            &b.id,
            json!({
                "booking_id": b.id, "event_id": event_id, "user_id": user,
                "waitlist_id": entry, "hold_expires_at": b.hold_expires_at,
                "notify": [user],
                "message": format!("a seat at {} freed up and is held for you: pay before it expires", ev.title),
            }),
        )
        .await?;
        promoted += 1;
    }
}

/// Marks a held or confirmed booking cancelled (or expired), frees its seat and emits
/// BookingCancelled; the refund (if any) is paid by the outbox handler.
pub async fn end_booking(
    tx: &mut Tx,
    now: i64,
    b: &BookingRow,
    status: &str,
    reason: &str,
    refund_cents: i64,
    notify: bool,
) -> Result<()> {
    let refund_status = (refund_cents > 0).then_some("pending");
    let r = sqlx::query(
        "UPDATE bookings SET status = $2, cancelled_at = $3, cancel_reason = $4,
           refund_cents = $5, refund_status = $6
         WHERE id = $1 AND status IN ('held', 'confirmed')",
    )
    .bind(&b.id)
    .bind(status)
    .bind(now)
    .bind(reason)
    .bind(refund_cents)
    .bind(refund_status)
    .execute(&mut **tx)
    .await?;
    if r.rows_affected() != 1 {
        return Ok(());
    }
    release_seat(tx, &b.event_id, now).await?;
    emit(
        tx,
        now,
        BOOKING_CANCELLED,
        &b.id,
        json!({
            "booking_id": b.id, "event_id": b.event_id, "user_id": b.user_id,
            "reason": reason, "refund_cents": refund_cents,
            "notify": if notify { vec![b.user_id.clone()] } else { vec![] },
            "message": match reason {
                "hold_expired" => "your unpaid hold expired and the seat was released".to_string(),
                _ => format!("your booking was cancelled; refund: {refund_cents} cents"),
            },
        }),
    )
    .await?;
    Ok(())
}

/// Expires holds whose time is up (of one event, or all), then promotes from the waitlists of
/// the events that got seats back. Returns how many holds expired.
pub async fn expire_due(
    tx: &mut Tx,
    now: i64,
    event_id: Option<&str>,
    hold_ttl_ms: i64,
    daily_limit: i64,
) -> Result<usize> {
    let sql = format!(
        "SELECT {BOOKING_COLUMNS} FROM bookings WHERE status = 'held' AND hold_expires_at <= $1
         {} ORDER BY hold_expires_at LIMIT 1000",
        if event_id.is_some() {
            "AND event_id = $2"
        } else {
            ""
        }
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
    if let Some(e) = event_id {
        q = q.bind(e.to_string());
    }
    let rows = q.fetch_all(&mut **tx).await?;
    let mut events: Vec<String> = vec![];
    for r in &rows {
        let b = booking_from_row(r)?;
        end_booking(tx, now, &b, "expired", "hold_expired", 0, true).await?;
        if !events.contains(&b.event_id) {
            events.push(b.event_id.clone());
        }
    }
    for e in events {
        promote(tx, now, &e, hold_ttl_ms, daily_limit).await?;
    }
    // Make the bound of every event it may have concerned exact again, so that a bound left low
    // by a payment or a cancellation does not send every later booking here.
    let sql = format!(
        "UPDATE booking_events SET first_hold_expiry =
           (SELECT MIN(hold_expires_at) FROM bookings
             WHERE bookings.event_id = booking_events.id AND bookings.status = 'held')
         WHERE first_hold_expiry <= $1 {}",
        if event_id.is_some() {
            "AND id = $2"
        } else {
            ""
        }
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
    if let Some(e) = event_id {
        q = q.bind(e.to_string());
    }
    q.execute(&mut **tx).await?;
    Ok(rows.len())
}
