//! Event management and booking (RULES.md, issue 8): organizers publish events; users hold a
//! seat (two-phase: check and hold, then pay and confirm), join a waitlist when the event is
//! full, cancel with a refund by the event's policy. Seats are never oversold: see `repo.rs`
//! (the guarded increment) and docs/adr/0008-booking-consistency-and-policies.md.
//!
//! Layout: `mod.rs` (routes and their JSON), `service.rs` (use cases, one transaction each),
//! `repo.rs` (rows and transactional steps), `payment.rs` (provider trait and the simulated
//! provider), `refund.rs` (policy), `settings.rs`, `consumers.rs` (outbox handlers, sweeper).

pub mod consumers;
pub mod payment;
pub mod refund;
pub mod repo;
pub mod service;
pub mod settings;

use std::sync::Arc;

use axum::extract::{Path, State};

use crate::http::ValidQuery;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fitedge_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::db::col;
use crate::error::{ApiError, Error, FieldErrors};
use crate::http::ValidJson;
use crate::idempotency::ResponseOwner;
use crate::state::AppState;
pub use consumers::{register, run_sweeper};
use refund::RefundPolicy;
use repo::{BookingRow, EventRow};
use service::{BookOutcome, EventFields, PayOutcome};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_event, list_events))
        .routes(routes!(get_event, update_event))
        .routes(routes!(cancel_event))
        .routes(routes!(book_event))
        .routes(routes!(list_my_bookings))
        .routes(routes!(get_booking))
        .routes(routes!(pay_booking))
        .routes(routes!(cancel_booking))
        .routes(routes!(my_waitlist))
        .routes(routes!(my_notifications))
}

// ---------------------------------------------------------------------------------------------
// JSON

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Venue {
    pub name: String,
    /// Degrees, -90..=90.
    pub lat: f64,
    /// Degrees, -180..=180.
    pub lon: f64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEventRequest {
    pub title: String,
    /// e.g. `running`, `cycling`, `yoga` (lower case).
    pub sport: String,
    pub venue: Venue,
    #[schema(format = DateTime)]
    pub starts_at: String,
    #[schema(format = DateTime)]
    pub ends_at: String,
    /// Seats, 1..=1,000,000.
    pub capacity: i64,
    /// Price in cents (0: free).
    pub price_cents: i64,
    /// ISO 4217, default EUR.
    pub currency: Option<String>,
    /// Minimum age on the event's day, default 0.
    pub min_age: Option<i64>,
    /// When everyone may book.
    #[schema(format = DateTime)]
    pub public_opens_at: String,
    /// Premium and pro members may book this many hours before public opening (default 24).
    pub priority_window_hours: Option<i64>,
    /// Default: 100 % from 7 days before, 50 % from 24 hours before, nothing later.
    pub refund_policy: Option<RefundPolicy>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEventRequest {
    /// The version read (optimistic locking).
    pub version: i64,
    pub title: Option<String>,
    pub sport: Option<String>,
    pub venue: Option<Venue>,
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    /// Raising it promotes from the waitlist; it cannot go below the seats taken.
    pub capacity: Option<i64>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
    pub min_age: Option<i64>,
    #[schema(format = DateTime)]
    pub public_opens_at: Option<String>,
    pub priority_window_hours: Option<i64>,
    pub refund_policy: Option<RefundPolicy>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub organizer_id: String,
    pub title: String,
    pub sport: String,
    pub venue: Venue,
    #[schema(format = DateTime)]
    pub starts_at: String,
    #[schema(format = DateTime)]
    pub ends_at: String,
    pub capacity: i64,
    /// Held plus confirmed.
    pub seats_taken: i64,
    pub seats_left: i64,
    pub price_cents: i64,
    pub currency: String,
    pub min_age: i64,
    #[schema(format = DateTime)]
    pub public_opens_at: String,
    /// Premium and pro members may book from here.
    #[schema(format = DateTime)]
    pub priority_opens_at: String,
    pub refund_policy: RefundPolicy,
    /// `scheduled` or `cancelled`.
    pub status: String,
    pub version: i64,
    /// People waiting (detail only).
    pub waitlist_length: Option<i64>,
    /// Kilometres from the search point (search with a point only).
    pub distance_km: Option<f64>,
}

fn ts(ms: i64) -> String {
    Timestamp(ms).to_rfc3339()
}

fn event_view(e: &EventRow) -> EventView {
    EventView {
        id: e.id.clone(),
        organizer_id: e.organizer_id.clone(),
        title: e.title.clone(),
        sport: e.sport.clone(),
        venue: Venue {
            name: e.venue_name.clone(),
            lat: e.lat_e6 as f64 / 1e6,
            lon: e.lon_e6 as f64 / 1e6,
        },
        starts_at: ts(e.starts_at),
        ends_at: ts(e.ends_at),
        capacity: e.capacity,
        seats_taken: e.seats_taken,
        seats_left: (e.capacity - e.seats_taken).max(0),
        price_cents: e.price_cents,
        currency: e.currency.clone(),
        min_age: e.min_age,
        public_opens_at: ts(e.public_opens_at),
        priority_opens_at: ts(e.priority_opens_at),
        refund_policy: e.refund_policy.clone(),
        status: e.status.clone(),
        version: e.version,
        waitlist_length: None,
        distance_km: None,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BookingView {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub event_id: String,
    #[schema(format = Uuid)]
    pub user_id: String,
    /// `held`, `confirmed`, `cancelled` or `expired`.
    pub status: String,
    pub amount_cents: i64,
    #[schema(format = DateTime)]
    pub held_at: String,
    /// An unpaid hold is released at this time.
    #[schema(format = DateTime)]
    pub hold_expires_at: String,
    #[schema(format = DateTime)]
    pub confirmed_at: Option<String>,
    #[schema(format = DateTime)]
    pub cancelled_at: Option<String>,
    /// `user_cancelled`, `hold_expired` or `event_cancelled`.
    pub cancel_reason: Option<String>,
    pub refund_cents: i64,
    /// `pending` (paid by the outbox) or `refunded`.
    pub refund_status: Option<String>,
    pub from_waitlist: bool,
}

fn booking_view(b: &BookingRow) -> BookingView {
    BookingView {
        id: b.id.clone(),
        event_id: b.event_id.clone(),
        user_id: b.user_id.clone(),
        status: b.status.clone(),
        amount_cents: b.amount_cents,
        held_at: ts(b.held_at),
        hold_expires_at: ts(b.hold_expires_at),
        confirmed_at: b.confirmed_at.map(ts),
        cancelled_at: b.cancelled_at.map(ts),
        cancel_reason: b.cancel_reason.clone(),
        refund_cents: b.refund_cents,
        refund_status: b.refund_status.clone(),
        from_waitlist: b.from_waitlist,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WaitlistView {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub event_id: String,
    /// `waiting`, `promoted`, `skipped` or `cancelled`.
    pub status: String,
    /// 1-based place in line while waiting (premium and pro ahead of free, then by arrival).
    pub position: Option<i64>,
    /// The hold made when promoted.
    pub booking_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BookResponse {
    /// `held` (201) or `waitlisted` (202).
    pub outcome: String,
    pub booking: Option<BookingView>,
    pub waitlist: Option<WaitlistView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    /// With the simulated provider: `sim_success`, `sim_decline` or `sim_timeout`.
    pub payment_method: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    /// The domain event, e.g. `booking.waitlist_promoted`.
    pub kind: String,
    pub event_id: String,
    pub booking_id: Option<String>,
    pub message: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Events starting at or after this time (default: now).
    pub from: Option<String>,
    /// Events starting before this time.
    pub to: Option<String>,
    pub sport: Option<String>,
    /// Search point latitude (with `lon` and `radius_km`).
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub radius_km: Option<f64>,
    /// 1..=200, default 50.
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Validation

fn push(f: &mut FieldErrors, field: &str, p: impl Into<String>) {
    f.entry(field.into()).or_default().push(p.into());
}

fn parse_time(f: &mut FieldErrors, field: &str, s: &str) -> i64 {
    match Timestamp::parse_rfc3339(s) {
        Some(t) => t.as_millis(),
        None => {
            push(f, field, "must be an RFC 3339 date-time");
            0
        }
    }
}

const MAX_HOURS_WINDOW: i64 = 24 * 30;

/// Checks every field of an event, naming each problem.
fn validate(fe: &mut FieldErrors, e: &EventFields, window_hours: i64) {
    let title = e.title.trim();
    if title.is_empty() || title.chars().count() > 200 {
        push(fe, "title", "must be 1 to 200 characters");
    }
    if e.sport.is_empty()
        || e.sport.len() > 50
        || !e
            .sport
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-')
    {
        push(
            fe,
            "sport",
            "must be 1 to 50 lower-case letters, '-' or '_'",
        );
    }
    if e.venue_name.trim().is_empty() || e.venue_name.chars().count() > 200 {
        push(fe, "venue.name", "must be 1 to 200 characters");
    }
    if !(-90_000_000..=90_000_000).contains(&e.lat_e6) {
        push(fe, "venue.lat", "must be between -90 and 90");
    }
    if !(-180_000_000..=180_000_000).contains(&e.lon_e6) {
        push(fe, "venue.lon", "must be between -180 and 180");
    }
    if e.ends_at <= e.starts_at {
        push(fe, "ends_at", "must be after starts_at");
    }
    if !(1..=1_000_000).contains(&e.capacity) {
        push(fe, "capacity", "must be between 1 and 1000000");
    }
    if !(0..=100_000_000).contains(&e.price_cents) {
        push(fe, "price_cents", "must be between 0 and 100000000");
    }
    if e.currency.len() != 3 || !e.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        push(fe, "currency", "must be a 3-letter ISO 4217 code");
    }
    if !(0..=120).contains(&e.min_age) {
        push(fe, "min_age", "must be between 0 and 120");
    }
    if e.public_opens_at >= e.starts_at {
        push(fe, "public_opens_at", "must be before starts_at");
    }
    if !(0..=MAX_HOURS_WINDOW).contains(&window_hours) {
        push(fe, "priority_window_hours", "must be between 0 and 720");
    }
    for p in e.refund_policy.problems() {
        push(fe, "refund_policy", p);
    }
}

fn coord(v: f64) -> i64 {
    if v.is_finite() {
        (v * 1e6).round() as i64
    } else {
        i64::MAX
    }
}

fn fields_from_create(r: CreateEventRequest) -> Result<EventFields, ApiError> {
    let mut fe = FieldErrors::new();
    let starts_at = parse_time(&mut fe, "starts_at", &r.starts_at);
    let ends_at = parse_time(&mut fe, "ends_at", &r.ends_at);
    let public_opens_at = parse_time(&mut fe, "public_opens_at", &r.public_opens_at);
    let window_hours = r
        .priority_window_hours
        .unwrap_or(settings::get().priority_window_ms / 3_600_000);
    let f = EventFields {
        title: r.title.trim().to_string(),
        sport: r.sport.trim().to_string(),
        venue_name: r.venue.name.trim().to_string(),
        lat_e6: coord(r.venue.lat),
        lon_e6: coord(r.venue.lon),
        starts_at,
        ends_at,
        capacity: r.capacity,
        price_cents: r.price_cents,
        currency: r.currency.unwrap_or_else(|| "EUR".into()),
        min_age: r.min_age.unwrap_or(0),
        public_opens_at,
        priority_opens_at: public_opens_at - window_hours.saturating_mul(3_600_000),
        refund_policy: r.refund_policy.unwrap_or_default(),
    };
    validate(&mut fe, &f, window_hours);
    if fe.is_empty() {
        Ok(f)
    } else {
        Err(ApiError::validation(fe))
    }
}

fn fields_from_update(ev: &EventRow, r: &UpdateEventRequest) -> Result<EventFields, ApiError> {
    let mut fe = FieldErrors::new();
    let t = |fe: &mut FieldErrors, field: &str, v: &Option<String>, old: i64| match v {
        Some(s) => parse_time(fe, field, s),
        None => old,
    };
    let starts_at = t(&mut fe, "starts_at", &r.starts_at, ev.starts_at);
    let ends_at = t(&mut fe, "ends_at", &r.ends_at, ev.ends_at);
    let public_opens_at = t(
        &mut fe,
        "public_opens_at",
        &r.public_opens_at,
        ev.public_opens_at,
    );
    let window_hours = r
        .priority_window_hours
        .unwrap_or((ev.public_opens_at - ev.priority_opens_at) / 3_600_000);
    let f = EventFields {
        title: r
            .title
            .clone()
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| ev.title.clone()),
        sport: r
            .sport
            .clone()
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| ev.sport.clone()),
        venue_name: r
            .venue
            .as_ref()
            .map(|v| v.name.trim().to_string())
            .unwrap_or_else(|| ev.venue_name.clone()),
        lat_e6: r.venue.as_ref().map(|v| coord(v.lat)).unwrap_or(ev.lat_e6),
        lon_e6: r.venue.as_ref().map(|v| coord(v.lon)).unwrap_or(ev.lon_e6),
        starts_at,
        ends_at,
        capacity: r.capacity.unwrap_or(ev.capacity),
        price_cents: r.price_cents.unwrap_or(ev.price_cents),
        currency: r.currency.clone().unwrap_or_else(|| ev.currency.clone()),
        min_age: r.min_age.unwrap_or(ev.min_age),
        public_opens_at,
        priority_opens_at: public_opens_at - window_hours.saturating_mul(3_600_000),
        refund_policy: r
            .refund_policy
            .clone()
            .unwrap_or_else(|| ev.refund_policy.clone()),
    };
    validate(&mut fe, &f, window_hours);
    if fe.is_empty() {
        Ok(f)
    } else {
        Err(ApiError::validation(fe))
    }
}

fn owned(resp: impl IntoResponse, user: &str) -> Response {
    let mut r = resp.into_response();
    r.extensions_mut().insert(ResponseOwner(user.to_string()));
    r
}

// ---------------------------------------------------------------------------------------------
// Events

/// Publish an event (partner, or administrator with MFA). Emits EventCreated.
#[utoipa::path(post, path = "/api/v1/events", tag = "booking", security(("bearer" = [])),
    params(crate::openapi::IdempotencyKey),
    request_body = CreateEventRequest,
    responses((status = 201, body = EventView),
        (status = 400, body = ApiError, description = "validation_failed (details.fields)"),
        (status = 403, body = ApiError, description = "forbidden: not an organizer; mfa_required")))]
pub async fn create_event(
    State(state): State<AppState>,
    caller: Caller,
    ValidJson(req): ValidJson<CreateEventRequest>,
) -> Result<Response, ApiError> {
    service::require_organizer(&caller)?;
    let f = fields_from_create(req)?;
    let ev = service::create_event(&state, &caller, f).await?;
    Ok(owned(
        (StatusCode::CREATED, axum::Json(event_view(&ev))),
        &caller.user_id,
    ))
}

/// Search scheduled events by start time, sport and distance from a point; soonest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "booking",
    params(ListQuery),
    responses((status = 200, body = Vec<EventView>),
        (status = 400, body = ApiError, description = "validation_failed")))]
pub async fn list_events(
    State(state): State<AppState>,
    ValidQuery(q): ValidQuery<ListQuery>,
) -> Result<axum::Json<Vec<EventView>>, ApiError> {
    let mut fe = FieldErrors::new();
    let from = q
        .from
        .as_deref()
        .map(|s| parse_time(&mut fe, "from", s))
        .unwrap_or_else(|| state.now().as_millis());
    let to = q.to.as_deref().map(|s| parse_time(&mut fe, "to", s));
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        push(&mut fe, "limit", "must be between 1 and 200");
    }
    let offset = q.offset.unwrap_or(0);
    if offset < 0 {
        push(&mut fe, "offset", "must not be negative");
    }
    let near = match (q.lat, q.lon, q.radius_km) {
        (None, None, None) => None,
        (Some(lat), Some(lon), Some(r)) => {
            if !(-90.0..=90.0).contains(&lat) {
                push(&mut fe, "lat", "must be between -90 and 90");
            }
            if !(-180.0..=180.0).contains(&lon) {
                push(&mut fe, "lon", "must be between -180 and 180");
            }
            if !(r > 0.0 && r <= 20_000.0) {
                push(&mut fe, "radius_km", "must be above 0 and at most 20000");
            }
            Some((lat, lon, r))
        }
        _ => {
            push(&mut fe, "radius_km", "lat, lon and radius_km go together");
            None
        }
    };
    if !fe.is_empty() {
        return Err(ApiError::validation(fe));
    }
    let mut sql = format!(
        "SELECT {} FROM booking_events WHERE status = 'scheduled' AND starts_at >= $1",
        repo::EVENT_COLUMNS
    );
    let mut n = 1;
    if to.is_some() {
        n += 1;
        sql.push_str(&format!(" AND starts_at < ${n}"));
    }
    if q.sport.is_some() {
        n += 1;
        sql.push_str(&format!(" AND sport = ${n}"));
    }
    let bbox = near.map(|(lat, lon, r)| {
        // A box around the circle (the exact distance is checked below).
        let dlat = r / 111.0;
        let dlon = if lat.abs() > 89.0 {
            180.0
        } else {
            r / (111.0 * lat.to_radians().cos())
        };
        (
            coord(lat - dlat),
            coord(lat + dlat),
            coord(lon - dlon),
            coord(lon + dlon),
        )
    });
    if bbox.is_some() {
        sql.push_str(&format!(
            " AND lat_e6 BETWEEN ${} AND ${} AND lon_e6 BETWEEN ${} AND ${}",
            n + 1,
            n + 2,
            n + 3,
            n + 4
        ));
    }
    sql.push_str(" ORDER BY starts_at, id LIMIT 5000");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(from);
    if let Some(t) = to {
        query = query.bind(t);
    }
    if let Some(s) = &q.sport {
        query = query.bind(s.clone());
    }
    if let Some((a, b, c, d)) = bbox {
        query = query.bind(a).bind(b).bind(c).bind(d);
    }
    let rows = query
        .fetch_all(state.db.pool())
        .await
        .map_err(|e| ApiError::from(Error::from(e)))?;
    let mut out = vec![];
    for r in &rows {
        let e = repo::event_from_row(r)?;
        let mut v = event_view(&e);
        if let Some((lat, lon, radius)) = near {
            let d = haversine_km(lat, lon, v.venue.lat, v.venue.lon);
            if d > radius {
                continue;
            }
            v.distance_km = Some((d * 1000.0).round() / 1000.0);
        }
        out.push(v);
    }
    Ok(axum::Json(
        out.into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .collect(),
    ))
}

/// Great-circle distance in kilometres.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0088 * a.sqrt().asin()
}

/// One event with seats left and the waitlist length.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "booking",
    params(("id" = String, Path, description = "event id")),
    responses((status = 200, body = EventView), (status = 404, body = ApiError)))]
pub async fn get_event(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<EventView>, ApiError> {
    let e = repo::load_event(state.db.pool(), &id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let waiting: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM booking_waitlist WHERE event_id = $1 AND status = 'waiting'",
    )
    .bind(&id)
    .fetch_one(state.db.pool())
    .await
    .map_err(|e| ApiError::from(Error::from(e)))?;
    let mut v = event_view(&e);
    v.waitlist_length = Some(waiting);
    Ok(axum::Json(v))
}

/// Change an event (its organizer, or an administrator with MFA); `version` must match.
#[utoipa::path(patch, path = "/api/v1/events/{id}", tag = "booking", security(("bearer" = [])),
    params(("id" = String, Path, description = "event id"), crate::openapi::IdempotencyKey),
    request_body = UpdateEventRequest,
    responses((status = 200, body = EventView),
        (status = 400, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "version_conflict, capacity_below_taken, event_cancelled, move_exceeds_daily_limit (a new starts_at on another UTC day would give participants more than 2 events that day; details: day, limit, participants_over_limit)")))]
pub async fn update_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ValidJson(req): ValidJson<UpdateEventRequest>,
) -> Result<Response, ApiError> {
    let version = req.version;
    let req = Arc::new(req);
    let ev = service::update_event(
        &state,
        &caller,
        &id,
        version,
        Arc::new(move |ev: &EventRow| fields_from_update(ev, &req)),
    )
    .await?;
    Ok(owned(axum::Json(event_view(&ev)), &caller.user_id))
}

/// Cancel the event: every booking is cancelled, paid ones refunded in full, everyone notified.
#[utoipa::path(post, path = "/api/v1/events/{id}/cancel", tag = "booking", security(("bearer" = [])),
    params(("id" = String, Path, description = "event id"), crate::openapi::IdempotencyKey),
    responses((status = 200, body = EventView), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
pub async fn cancel_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let ev = service::cancel_event(&state, &caller, &id).await?;
    Ok(owned(axum::Json(event_view(&ev)), &caller.user_id))
}

// ---------------------------------------------------------------------------------------------
// Bookings

/// Book a seat: 201 with a hold (pay before `hold_expires_at`), or 202 on the waitlist with a
/// position when the event is full. Refusals say why: `booking_not_open` (with `opens_at`),
/// `age_restriction`, `daily_limit_reached`, `already_booked`, `already_waitlisted`,
/// `event_cancelled`, `event_started`.
#[utoipa::path(post, path = "/api/v1/events/{id}/bookings", tag = "booking", security(("bearer" = [])),
    params(("id" = String, Path, description = "event id"), crate::openapi::IdempotencyKey),
    responses((status = 201, body = BookResponse, description = "held"),
        (status = 202, body = BookResponse, description = "waitlisted"),
        (status = 403, body = ApiError, description = "booking_not_open, age_restriction"),
        (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "daily_limit_reached, already_booked, already_waitlisted, event_cancelled, event_started"),
        (status = 503, body = ApiError, description = "contention or timeout: retry with the same key")))]
pub async fn book_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let out = service::book(&state, &caller, &id).await?;
    let resp = match out {
        BookOutcome::Held(b) => (
            StatusCode::CREATED,
            axum::Json(BookResponse {
                outcome: "held".into(),
                booking: Some(booking_view(&b)),
                waitlist: None,
            }),
        ),
        BookOutcome::Waitlisted { id: w, position } => (
            StatusCode::ACCEPTED,
            axum::Json(BookResponse {
                outcome: "waitlisted".into(),
                booking: None,
                waitlist: Some(WaitlistView {
                    id: w,
                    event_id: id,
                    status: "waiting".into(),
                    position: Some(position),
                    booking_id: None,
                }),
            }),
        ),
    };
    Ok(owned(resp, &caller.user_id))
}

/// The caller's bookings, newest first.
#[utoipa::path(get, path = "/api/v1/bookings", tag = "booking", security(("bearer" = [])),
    responses((status = 200, body = Vec<BookingView>)))]
pub async fn list_my_bookings(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<BookingView>>, ApiError> {
    let sql = format!(
        "SELECT {} FROM bookings WHERE user_id = $1 ORDER BY held_at DESC, id LIMIT 500",
        repo::BOOKING_COLUMNS
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&caller.user_id)
        .fetch_all(state.db.pool())
        .await
        .map_err(|e| ApiError::from(Error::from(e)))?;
    let mut out = vec![];
    for r in &rows {
        out.push(booking_view(&repo::booking_from_row(r)?));
    }
    Ok(axum::Json(out))
}

/// One of the caller's bookings (another user's is 404).
#[utoipa::path(get, path = "/api/v1/bookings/{id}", tag = "booking", security(("bearer" = [])),
    params(("id" = String, Path, description = "booking id")),
    responses((status = 200, body = BookingView), (status = 404, body = ApiError)))]
pub async fn get_booking(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<BookingView>, ApiError> {
    match repo::load_booking(state.db.pool(), &id).await? {
        Some(b) if b.user_id == caller.user_id => Ok(axum::Json(booking_view(&b))),
        _ => Err(ApiError::not_found()),
    }
}

/// Pay a held booking through the payment provider; confirms it. Declined: 402, the hold
/// stays. Provider timeout: 504, retry (the provider charges a booking at most once).
#[utoipa::path(post, path = "/api/v1/bookings/{id}/pay", tag = "booking", security(("bearer" = [])),
    params(("id" = String, Path, description = "booking id"), crate::openapi::IdempotencyKey),
    request_body = PayRequest,
    responses((status = 200, body = BookingView, description = "confirmed"),
        (status = 402, body = ApiError, description = "payment_declined"),
        (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "hold_expired, booking_not_held"),
        (status = 504, body = ApiError, description = "payment_timeout")))]
pub async fn pay_booking(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ValidJson(req): ValidJson<PayRequest>,
) -> Result<Response, ApiError> {
    if req.payment_method.is_empty() || req.payment_method.len() > 200 {
        return Err(ApiError::field(
            "payment_method",
            "must be 1 to 200 characters",
        ));
    }
    let PayOutcome::Confirmed(b) = service::pay(&state, &caller, &id, &req.payment_method).await?;
    Ok(owned(axum::Json(booking_view(&b)), &caller.user_id))
}

/// Cancel a held or confirmed booking; a paid one is refunded by the event's refund policy
/// (the refund is paid through the outbox). The seat goes to the first on the waitlist.
#[utoipa::path(post, path = "/api/v1/bookings/{id}/cancel", tag = "booking", security(("bearer" = [])),
    params(("id" = String, Path, description = "booking id"), crate::openapi::IdempotencyKey),
    responses((status = 200, body = BookingView), (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "booking_not_held")))]
pub async fn cancel_booking(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let b = service::cancel_booking(&state, &caller, &id).await?;
    Ok(owned(axum::Json(booking_view(&b)), &caller.user_id))
}

/// The caller's waitlist entries with their current positions.
#[utoipa::path(get, path = "/api/v1/me/waitlist", tag = "booking", security(("bearer" = [])),
    responses((status = 200, body = Vec<WaitlistView>)))]
pub async fn my_waitlist(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<WaitlistView>>, ApiError> {
    let rows = sqlx::query(
        "SELECT w.id, w.event_id, w.status, w.booking_id,
           CASE WHEN w.status = 'waiting' THEN
             (SELECT COUNT(*) FROM booking_waitlist o WHERE o.event_id = w.event_id
              AND o.status = 'waiting'
              AND (o.priority < w.priority OR (o.priority = w.priority AND o.seq <= w.seq)))
           ELSE NULL END AS position
         FROM booking_waitlist w WHERE w.user_id = $1 ORDER BY w.joined_at DESC, w.id LIMIT 500",
    )
    .bind(&caller.user_id)
    .fetch_all(state.db.pool())
    .await
    .map_err(|e| ApiError::from(Error::from(e)))?;
    let mut out = vec![];
    for r in &rows {
        out.push(WaitlistView {
            id: col(r, "id")?,
            event_id: col(r, "event_id")?,
            status: col(r, "status")?,
            position: col(r, "position")?,
            booking_id: col(r, "booking_id")?,
        });
    }
    Ok(axum::Json(out))
}

/// Booking notifications recorded for the caller (held, confirmed, cancelled, promoted, event
/// cancelled), newest first; the notifications context will deliver them.
#[utoipa::path(get, path = "/api/v1/me/booking-notifications", tag = "booking", security(("bearer" = [])),
    responses((status = 200, body = Vec<NotificationView>)))]
pub async fn my_notifications(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<NotificationView>>, ApiError> {
    let rows = sqlx::query(
        "SELECT kind, event_id, booking_id, message, created_at FROM booking_notifications
         WHERE user_id = $1 ORDER BY created_at DESC, outbox_event_id LIMIT 500",
    )
    .bind(&caller.user_id)
    .fetch_all(state.db.pool())
    .await
    .map_err(|e| ApiError::from(Error::from(e)))?;
    let mut out = vec![];
    for r in &rows {
        out.push(NotificationView {
            kind: col(r, "kind")?,
            event_id: col(r, "event_id")?,
            booking_id: col(r, "booking_id")?,
            message: col(r, "message")?,
            created_at: ts(col(r, "created_at")?),
        });
    }
    Ok(axum::Json(out))
}

/// The booking part of a user's GDPR export: every booking, waitlist entry and notification
/// row of the user, and the events they organize, unpaged.
pub async fn export_of(db: &crate::db::Db, user_id: &str) -> Result<serde_json::Value, Error> {
    let mut out = serde_json::Map::new();
    for (key, sql) in [
        (
            "bookings",
            format!(
                "SELECT {} FROM bookings WHERE user_id = $1 ORDER BY held_at, id",
                repo::BOOKING_COLUMNS
            ),
        ),
        (
            "waitlist",
            "SELECT id, event_id, status, booking_id, joined_at, left_at FROM booking_waitlist
             WHERE user_id = $1 ORDER BY joined_at, id"
                .to_string(),
        ),
        (
            "notifications",
            "SELECT kind, event_id, booking_id, message, created_at FROM booking_notifications
             WHERE user_id = $1 ORDER BY created_at, outbox_event_id"
                .to_string(),
        ),
        (
            "events_organized",
            "SELECT id, title, status, starts_at FROM booking_events WHERE organizer_id = $1
             ORDER BY starts_at, id"
                .to_string(),
        ),
    ] {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_all(db.pool())
            .await?;
        let list: Vec<serde_json::Value> = rows.iter().map(crate::db::row_to_json).collect();
        out.insert(key.to_string(), serde_json::Value::Array(list));
    }
    Ok(serde_json::Value::Object(out))
}
