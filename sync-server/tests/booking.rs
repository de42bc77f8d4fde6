//! Booking rules (issue 8) on SQLite and PostgreSQL, each test on its own throwaway database
//! with a manual clock: hold expiry, priority window, daily limit, refund policy and waitlist
//! promotion are checked just inside and just outside their limits, never by sleeping.
// Tests assert with unwrap/expect: a failure should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::http::StatusCode;
use fitedge_core::time::Timestamp;
use fitedge_server::booking::{self, payment};
use fitedge_server::db::Backend;
use fitedge_server::outbox::{self, Handlers};
use fitedge_server::testing::{TestApp, TestRequest, T0};
use serde_json::{json, Value};

const HOUR: f64 = 3600.0;
const DAY: f64 = 86_400.0;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Backend::Postgres).await } )*
        }
    };
}

conformance!(
    organizers_create_update_and_search_events,
    hold_pay_confirm_with_decline_and_timeout,
    unpaid_hold_expires_at_30_minutes_and_seat_goes_to_waitlist,
    priority_window_for_premium_and_public_opening,
    at_most_two_events_per_user_per_day,
    refund_policy_by_time_before_event,
    waitlist_premium_first_and_promotion_on_capacity_increase,
    organizer_cancellation_refunds_and_notifies_everyone,
    booking_is_idempotent_and_notifications_recorded_once,
    booking_routes_are_in_the_openapi_document,
    a_malformed_query_is_a_json_validation_error,
    deleting_an_account_frees_its_seats_and_forgets_its_bookings,
    a_transaction_running_past_30_seconds_is_rolled_back,
    a_booking_cancelled_while_waiting_for_the_lock_leaks_nothing,
    a_payment_landing_after_confirm_and_cancel_keeps_the_policy_refund,
    a_second_late_payment_does_not_refund_again,
    moving_an_event_to_a_full_day_is_refused,
);

/// Found by schemathesis: a query string that does not parse must give the JSON error of
/// every other validation failure, not a plain-text rejection.
async fn a_malformed_query_is_a_json_validation_error(b: Backend) {
    let a = app(b).await;
    let r = a
        .call(TestRequest::get(
            "/api/v1/events?radius_km=null&radius_km=null",
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "validation_failed", "{}", r.body);
    assert!(
        r.body["details"]["fields"]["query"][0].is_string(),
        "{}",
        r.body
    );
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn at(secs_from_t0: f64) -> String {
    T0.plus_secs(secs_from_t0).to_rfc3339()
}

async fn app(b: Backend) -> TestApp {
    TestApp::build(b, |_| {}, booking::register(Handlers::new()))
        .await
        .expect("test app")
}

/// A signed-in user with a role and tier; (user id, token).
async fn user(a: &TestApp, name: &str, role: &str, tier: &str) -> (String, String) {
    a.user_with(&format!("{name}@example.com"), role, tier)
        .await
        .unwrap()
}

fn event_body(capacity: i64, starts_in_secs: f64, public_opens_in_secs: f64) -> Value {
    json!({
        "title": "Harbour 10k", "sport": "running",
        "venue": {"name": "Harbour", "lat": 59.9139, "lon": 10.7522},
        "starts_at": at(starts_in_secs), "ends_at": at(starts_in_secs + 2.0 * HOUR),
        "capacity": capacity, "price_cents": 2000, "currency": "EUR",
        "public_opens_at": at(public_opens_in_secs)
    })
}

async fn create(a: &TestApp, token: &str, body: Value) -> Value {
    let r = a
        .call(TestRequest::post("/api/v1/events").token(token).json(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

async fn book(a: &TestApp, token: &str, event: &str) -> (StatusCode, Value) {
    let r = a
        .call(
            TestRequest::post(&format!("/api/v1/events/{event}/bookings"))
                .token(token)
                .idempotency_key(&key()),
        )
        .await;
    (r.status, r.body)
}

async fn pay(a: &TestApp, token: &str, booking: &str, method: &str) -> (StatusCode, Value) {
    let r = a
        .call(
            TestRequest::post(&format!("/api/v1/bookings/{booking}/pay"))
                .token(token)
                .json(json!({"payment_method": method})),
        )
        .await;
    (r.status, r.body)
}

async fn cancel(a: &TestApp, token: &str, booking: &str) -> (StatusCode, Value) {
    let r = a
        .call(TestRequest::post(&format!("/api/v1/bookings/{booking}/cancel")).token(token))
        .await;
    (r.status, r.body)
}

async fn detail(a: &TestApp, event: &str) -> Value {
    a.call(TestRequest::get(&format!("/api/v1/events/{event}")))
        .await
        .body
}

async fn notifications(a: &TestApp, token: &str) -> Vec<Value> {
    let r = a
        .call(TestRequest::get("/api/v1/me/booking-notifications").token(token))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    r.body.as_array().unwrap().clone()
}

/// How many BookingCancelled events the booking produced.
async fn cancelled_events(a: &TestApp, booking: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE kind = $1 AND aggregate_id = $2")
        .bind(booking::repo::BOOKING_CANCELLED)
        .bind(booking)
        .fetch_one(a.state.db.pool())
        .await
        .unwrap()
}

async fn booking_row(a: &TestApp, token: &str, booking: &str) -> Value {
    let r = a
        .call(TestRequest::get(&format!("/api/v1/bookings/{booking}")).token(token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

async fn drain_outbox(a: &TestApp) {
    for _ in 0..10 {
        outbox::dispatch_once(&a.state).await.unwrap();
    }
}

async fn organizers_create_update_and_search_events(b: Backend) {
    let a = app(b).await;
    let (_, plain) = user(&a, "plain", "user", "free").await;
    let (_, org) = user(&a, "org", "partner", "free").await;
    let (_, other) = user(&a, "other", "partner", "free").await;
    let (_, admin) = user(&a, "admin", "administrator", "free").await;
    let r = a
        .call(
            TestRequest::post("/api/v1/events")
                .token(&plain)
                .json(event_body(10, DAY, -HOUR)),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = a
        .call(
            TestRequest::post("/api/v1/events")
                .token(&admin)
                .json(event_body(10, DAY, -HOUR)),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "administrators need MFA");
    assert_eq!(r.body["error"], "mfa_enrollment_required");
    let mut bad = event_body(0, DAY, 2.0 * DAY);
    bad["venue"]["lat"] = json!(91.0);
    bad["sport"] = json!("Running!");
    let r = a
        .call(TestRequest::post("/api/v1/events").token(&org).json(bad))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    for f in ["capacity", "venue.lat", "sport", "public_opens_at"] {
        assert!(r.body["details"]["fields"][f].is_array(), "{f}: {}", r.body);
    }
    let e1 = create(&a, &org, event_body(10, DAY, -HOUR)).await;
    assert_eq!(e1["seats_left"], 10);
    assert_eq!(e1["priority_opens_at"], at(-HOUR - DAY));
    assert_eq!(e1["refund_policy"]["tiers"][0]["percent"], 100);
    let mut cyc = event_body(5, 3.0 * DAY, -HOUR);
    cyc["sport"] = json!("cycling");
    cyc["venue"] = json!({"name": "Bergen", "lat": 60.3913, "lon": 5.3221}); // ~305 km from Oslo
    let e2 = create(&a, &other, cyc).await;
    let e3 = create(&a, &org, event_body(5, 10.0 * DAY, -HOUR)).await;

    let list = |q: String| {
        let a = &a;
        async move {
            let r = a
                .call(TestRequest::get(&format!("/api/v1/events{q}")))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            r.body
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let id = |e: &Value| e["id"].as_str().unwrap().to_string();
    assert_eq!(list(String::new()).await, vec![id(&e1), id(&e2), id(&e3)]);
    assert_eq!(
        list(format!("?from={}&to={}", at(2.0 * DAY), at(4.0 * DAY))).await,
        vec![id(&e2)]
    );
    assert_eq!(list("?sport=running".into()).await, vec![id(&e1), id(&e3)]);
    // Oslo centre: Bergen is ~305 km away.
    assert_eq!(
        list("?lat=59.91&lon=10.75&radius_km=300".into()).await,
        vec![id(&e1), id(&e3)]
    );
    assert_eq!(
        list("?lat=59.91&lon=10.75&radius_km=310".into())
            .await
            .len(),
        3
    );
    let r = a.call(TestRequest::get("/api/v1/events?lat=1")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let path = format!("/api/v1/events/{}", id(&e1));
    let r = a
        .call(
            TestRequest::patch(&path)
                .token(&other)
                .json(json!({"version": 1, "capacity": 20})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "not the organizer");
    let r = a
        .call(
            TestRequest::patch(&path)
                .token(&org)
                .json(json!({"version": 1, "capacity": 20, "title": "Harbour 10k II"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["seats_left"], 20);
    let r = a
        .call(
            TestRequest::patch(&path)
                .token(&org)
                .json(json!({"version": 1, "capacity": 30})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["error"], "version_conflict");
    let (_, u) = user(&a, "u1", "user", "free").await;
    assert_eq!(book(&a, &u, &id(&e1)).await.0, StatusCode::CREATED);
    let r = a
        .call(
            TestRequest::patch(&path)
                .token(&org)
                .json(json!({"version": 2, "capacity": 0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let d = detail(&a, &id(&e1)).await;
    assert_eq!(d["seats_taken"], 1);
    assert_eq!(d["seats_left"], 19);
    assert_eq!(d["waitlist_length"], 0);
    assert_eq!(
        a.call(TestRequest::get("/api/v1/events/nope")).await.status,
        StatusCode::NOT_FOUND
    );
}

async fn hold_pay_confirm_with_decline_and_timeout(b: Backend) {
    let a = app(b).await;
    let (_, org) = user(&a, "org", "partner", "free").await;
    let (_, u) = user(&a, "u", "user", "free").await;
    let (_, thief) = user(&a, "thief", "user", "free").await;
    let e = create(&a, &org, event_body(3, 10.0 * DAY, -HOUR)).await;
    let (s, r) = book(&a, &u, e["id"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["outcome"], "held");
    assert_eq!(r["booking"]["hold_expires_at"], at(30.0 * 60.0));
    let bid = r["booking"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        detail(&a, e["id"].as_str().unwrap()).await["seats_left"],
        2,
        "held at once"
    );
    let (s, r) = pay(&a, &thief, &bid, "sim_success").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another user's booking: {r}");
    let (s, r) = pay(&a, &u, &bid, "sim_decline").await;
    assert_eq!(s, StatusCode::PAYMENT_REQUIRED, "{r}");
    assert_eq!(r["error"], "payment_declined");
    let (s, r) = pay(&a, &u, &bid, "sim_timeout").await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{r}");
    assert_eq!(r["error"], "payment_timeout");
    assert_eq!(
        payment::simulated().charged(&bid),
        None,
        "nothing charged yet"
    );
    let (s, r) = pay(&a, &u, &bid, "sim_success").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "confirmed");
    let (s, r) = pay(&a, &u, &bid, "sim_success").await;
    assert_eq!(
        s,
        StatusCode::OK,
        "paying again answers the confirmed booking: {r}"
    );
    assert_eq!(
        payment::simulated().charged(&bid),
        Some(2000),
        "charged once"
    );
    let r = a
        .call(TestRequest::get(&format!("/api/v1/bookings/{bid}")).token(&u))
        .await;
    assert_eq!(r.body["status"], "confirmed");
    drain_outbox(&a).await;
    let kinds: Vec<String> = notifications(&a, &u)
        .await
        .iter()
        .map(|n| n["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(
        kinds.contains(&"booking.booking_held".to_string()),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"booking.booking_confirmed".to_string()),
        "{kinds:?}"
    );
    assert_eq!(
        notifications(&a, &org).await[0]["kind"],
        "booking.event_created"
    );
}

async fn unpaid_hold_expires_at_30_minutes_and_seat_goes_to_waitlist(b: Backend) {
    let a = app(b).await;
    let (_, org) = user(&a, "org", "partner", "free").await;
    let (_, holder) = user(&a, "holder", "user", "free").await;
    let (waiter_id, waiter) = user(&a, "waiter", "user", "free").await;
    let e = create(&a, &org, event_body(1, 10.0 * DAY, -HOUR)).await;
    let eid = e["id"].as_str().unwrap();
    let (s, r) = book(&a, &holder, eid).await;
    assert_eq!(s, StatusCode::CREATED);
    let hold = r["booking"]["id"].as_str().unwrap().to_string();
    let (s, r) = book(&a, &waiter, eid).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["waitlist"]["position"], 1);
    // One millisecond before 30 minutes: nothing expires.
    a.clock.advance_secs(30.0 * 60.0 - 0.001);
    assert_eq!(booking::service::sweep(&a.state).await.unwrap(), 0);
    assert_eq!(detail(&a, eid).await["seats_left"], 0);
    // At 30 minutes: the hold expires and the first in line gets a hold.
    a.clock.advance_secs(0.001);
    assert_eq!(booking::service::sweep(&a.state).await.unwrap(), 1);
    let r = a
        .call(TestRequest::get(&format!("/api/v1/bookings/{hold}")).token(&holder))
        .await;
    assert_eq!(r.body["status"], "expired");
    assert_eq!(r.body["cancel_reason"], "hold_expired");
    let (s, r) = pay(&a, &holder, &hold, "sim_success").await;
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    let mine = a
        .call(TestRequest::get("/api/v1/bookings").token(&waiter))
        .await;
    let promoted = &mine.body[0];
    assert_eq!(promoted["status"], "held");
    assert_eq!(promoted["from_waitlist"], true);
    assert_eq!(promoted["user_id"], waiter_id.as_str());
    assert_eq!(detail(&a, eid).await["seats_left"], 0);
    drain_outbox(&a).await;
    let n = notifications(&a, &waiter).await;
    assert!(
        n.iter().any(|n| n["kind"] == "booking.waitlist_promoted"),
        "{n:?}"
    );
    let n = notifications(&a, &holder).await;
    assert!(
        n.iter().any(|n| n["kind"] == "booking.booking_cancelled"),
        "{n:?}"
    );

    // Paying at the expiry instant is refused even before a sweep ran (checked lazily).
    let pbid = promoted["id"].as_str().unwrap().to_string();
    a.clock.advance_secs(30.0 * 60.0);
    let (s, r) = pay(&a, &waiter, &pbid, "sim_success").await;
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    assert_eq!(r["error"], "hold_expired");
    assert_eq!(detail(&a, eid).await["seats_left"], 1, "the seat came back");
}

async fn priority_window_for_premium_and_public_opening(b: Backend) {
    let a = app(b).await;
    let (_, org) = user(&a, "org", "partner", "free").await;
    let (_, prem) = user(&a, "prem", "user", "premium").await;
    let (_, pro) = user(&a, "pro", "user", "pro").await;
    let (_, free) = user(&a, "free", "user", "free").await;
    // Public opening in 2 days; the priority window opens 24 hours earlier.
    let e = create(&a, &org, event_body(10, 10.0 * DAY, 2.0 * DAY)).await;
    let eid = e["id"].as_str().unwrap();
    a.clock.set(T0.plus_secs(DAY - 0.001));
    let (s, r) = book(&a, &prem, eid).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{r}");
    assert_eq!(r["error"], "booking_not_open");
    assert_eq!(r["details"]["opens_at"], at(DAY));
    a.clock.set(T0.plus_secs(DAY));
    assert_eq!(book(&a, &prem, eid).await.0, StatusCode::CREATED);
    assert_eq!(book(&a, &pro, eid).await.0, StatusCode::CREATED);
    a.clock.set(T0.plus_secs(2.0 * DAY - 0.001));
    let (s, r) = book(&a, &free, eid).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{r}");
    assert_eq!(r["details"]["opens_at"], at(2.0 * DAY));
    a.clock.set(T0.plus_secs(2.0 * DAY));
    assert_eq!(book(&a, &free, eid).await.0, StatusCode::CREATED);
    // Minimum age: 18 on the event's day.
    let (_, teen) = user(&a, "teen", "user", "free").await;
    sqlx::query("UPDATE users SET birth_date = '2007-06-26' WHERE email = 'teen@example.com'")
        .execute(a.state.db.pool())
        .await
        .unwrap();
    let mut adult = event_body(10, 10.0 * DAY, -HOUR); // 2025-06-25
    adult["min_age"] = json!(18);
    let e2 = create(&a, &org, adult).await;
    let (s, r) = book(&a, &teen, e2["id"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "17 on 2025-06-25: {r}");
    assert_eq!(r["error"], "age_restriction");
    sqlx::query("UPDATE users SET birth_date = '2007-06-25' WHERE email = 'teen@example.com'")
        .execute(a.state.db.pool())
        .await
        .unwrap();
    assert_eq!(
        book(&a, &teen, e2["id"].as_str().unwrap()).await.0,
        StatusCode::CREATED
    );
}

async fn at_most_two_events_per_user_per_day(b: Backend) {
    let a = app(b).await;
    let (_, org) = user(&a, "org", "partner", "free").await;
    let (_, u) = user(&a, "u", "user", "free").await;
    // Three events on 2025-06-20 (morning, noon, evening UTC) and one on the 21st.
    let day5 = 5.0 * DAY - 12.0 * HOUR; // 2025-06-20T00:00Z
    let mut ids = vec![];
    for start in [
        day5 + 6.0 * HOUR,
        day5 + 12.0 * HOUR,
        day5 + 23.0 * HOUR,
        day5 + 24.0 * HOUR,
    ] {
        ids.push(
            create(&a, &org, event_body(5, start, -HOUR)).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (_, h1) = book(&a, &u, &ids[0]).await;
    assert_eq!(book(&a, &u, &ids[1]).await.0, StatusCode::CREATED);
    let (s, r) = book(&a, &u, &ids[2]).await;
    assert_eq!(s, StatusCode::CONFLICT, "third on the same day: {r}");
    assert_eq!(r["error"], "daily_limit_reached");
    assert_eq!(r["details"]["day"], "2025-06-20");
    assert_eq!(
        book(&a, &u, &ids[3]).await.0,
        StatusCode::CREATED,
        "next day"
    );
    let (s, r) = book(&a, &u, &ids[1]).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(r["error"], "already_booked", "one seat per user per event");
    cancel(&a, &u, h1["booking"]["id"].as_str().unwrap()).await;
    assert_eq!(
        book(&a, &u, &ids[2]).await.0,
        StatusCode::CREATED,
        "after a cancellation"
    );
}

async fn refund_policy_by_time_before_event(b: Backend) {
    let a = app(b).await;
    let (_, org) = user(&a, "org", "partner", "free").await;
    let e = create(&a, &org, event_body(10, 10.0 * DAY, -HOUR)).await;
    let eid = e["id"].as_str().unwrap().to_string();
    let mut custom = event_body(10, 10.0 * DAY, -HOUR);
    custom["refund_policy"] = json!({"tiers": [{"min_hours_before": 2, "percent": 80}]});
    let c = create(&a, &org, custom).await;
    let cid = c["id"].as_str().unwrap().to_string();
    let mut paid = vec![];
    for i in 0..6 {
        let (_, t) = user(&a, &format!("r{i}"), "user", "free").await;
        let ev = if i < 4 { &eid } else { &cid };
        let (_, r) = book(&a, &t, ev).await;
        let bid = r["booking"]["id"].as_str().unwrap().to_string();
        assert_eq!(pay(&a, &t, &bid, "sim_success").await.0, StatusCode::OK);
        paid.push((format!("r{i}@example.com"), bid));
    }
    let start = T0.plus_secs(10.0 * DAY);
    let cancel_at = |secs_before: f64| Timestamp(start.as_millis() - (secs_before * 1000.0) as i64);
    // Default policy: >= 7 days 100 %, >= 24 h 50 %, less 0 %; held (unpaid): nothing to refund.
    let cases = [
        (7.0 * DAY, 2000),
        (7.0 * DAY - 0.001, 1000),
        (DAY, 1000),
        (DAY - 0.001, 0),
        (2.0 * HOUR, 1600),
        (2.0 * HOUR - 0.001, 0),
    ];
    for ((email, bid), (before, refund)) in paid.iter().zip(cases) {
        a.clock.set(cancel_at(before));
        // Sessions last 7 days: sign in again at the new time.
        let t = a.token(email).await.unwrap();
        let (s, r) = cancel(&a, &t, bid).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(r["refund_cents"], refund, "{before} s before");
        assert_eq!(r["status"], "cancelled");
    }
    drain_outbox(&a).await;
    for ((email, bid), (_, refund)) in paid.iter().zip(cases) {
        let t = a.token(email).await.unwrap();
        let r = a
            .call(TestRequest::get(&format!("/api/v1/bookings/{bid}")).token(&t))
            .await;
        if refund > 0 {
            assert_eq!(r.body["refund_status"], "refunded", "{}", r.body);
            assert_eq!(payment::simulated().refunded(bid), Some(refund));
        } else {
            assert_eq!(r.body["refund_status"], Value::Null);
            assert_eq!(payment::simulated().refunded(bid), None);
        }
    }
    let t = a.token(&paid[0].0).await.unwrap();
    let (s, _) = cancel(&a, &t, &paid[0].1).await;
    assert_eq!(s, StatusCode::CONFLICT, "cancelled once");
}

async fn waitlist_premium_first_and_promotion_on_capacity_increase(b: Backend) {
    let a = app(b).await;
    let (_, org) = user(&a, "org", "partner", "free").await;
    let (_, first) = user(&a, "first", "user", "free").await;
    let (f1_id, f1) = user(&a, "f1", "user", "free").await;
    let (f2_id, f2) = user(&a, "f2", "user", "free").await;
    let (p1_id, p1) = user(&a, "p1", "user", "premium").await;
    let e = create(&a, &org, event_body(1, 10.0 * DAY, -HOUR)).await;
    let eid = e["id"].as_str().unwrap();
    assert_eq!(book(&a, &first, eid).await.0, StatusCode::CREATED);
    assert_eq!(book(&a, &f1, eid).await.1["waitlist"]["position"], 1);
    assert_eq!(book(&a, &f2, eid).await.1["waitlist"]["position"], 2);
    let (s, r) = book(&a, &p1, eid).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(r["waitlist"]["position"], 1, "premium goes ahead of free");
    let r = a
        .call(TestRequest::get("/api/v1/me/waitlist").token(&f2))
        .await;
    assert_eq!(r.body[0]["position"], 3);
    let (s, r) = book(&a, &f2, eid).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(r["error"], "already_waitlisted");
    assert_eq!(detail(&a, eid).await["waitlist_length"], 3);
    let held_by = |a: &TestApp| {
        let pool = a.state.db.pool().clone();
        let eid = eid.to_string();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT user_id FROM bookings WHERE event_id = $1 AND status = 'held'
                 AND from_waitlist = 1 ORDER BY held_at, user_id",
            )
            .bind(eid)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let path = format!("/api/v1/events/{eid}");
    let r = a
        .call(
            TestRequest::patch(&path)
                .token(&org)
                .json(json!({"version": 1, "capacity": 2})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(held_by(&a).await, vec![p1_id.clone()]);
    a.clock.advance_secs(1.0);
    let r = a
        .call(
            TestRequest::patch(&path)
                .token(&org)
                .json(json!({"version": 2, "capacity": 4})),
        )
        .await;
    assert_eq!(r.body["seats_left"], 0, "{}", r.body);
    let got = held_by(&a).await;
    assert_eq!(got[0], p1_id);
    assert_eq!(got[1..].to_vec(), {
        let mut v = vec![f1_id.clone(), f2_id.clone()];
        v.sort();
        v
    });
    let r = a
        .call(TestRequest::get("/api/v1/me/waitlist").token(&f1))
        .await;
    assert_eq!(r.body[0]["status"], "promoted");
    assert_eq!(r.body[0]["position"], Value::Null);
    assert!(r.body[0]["booking_id"].is_string());
}

async fn organizer_cancellation_refunds_and_notifies_everyone(b: Backend) {
    let a = app(b).await;
    let (_, org) = user(&a, "org", "partner", "free").await;
    let (_, other) = user(&a, "other", "partner", "free").await;
    let (_, paid) = user(&a, "paid", "user", "free").await;
    let (_, held) = user(&a, "held", "user", "free").await;
    let (_, waiting) = user(&a, "waiting", "user", "free").await;
    let e = create(&a, &org, event_body(2, 3.0 * HOUR, -HOUR)).await;
    let eid = e["id"].as_str().unwrap();
    let (_, r) = book(&a, &paid, eid).await;
    let paid_b = r["booking"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        pay(&a, &paid, &paid_b, "sim_success").await.0,
        StatusCode::OK
    );
    let (_, r) = book(&a, &held, eid).await;
    let held_b = r["booking"]["id"].as_str().unwrap().to_string();
    assert_eq!(book(&a, &waiting, eid).await.0, StatusCode::ACCEPTED);
    let cancel_path = format!("/api/v1/events/{eid}/cancel");
    let r = a.call(TestRequest::post(&cancel_path).token(&other)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = a.call(TestRequest::post(&cancel_path).token(&org)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "cancelled");
    let (s, r) = book(&a, &paid, eid).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(r["error"], "event_cancelled");
    drain_outbox(&a).await;
    for (t, bid, refund) in [(&paid, &paid_b, 2000), (&held, &held_b, 0)] {
        let r = a
            .call(TestRequest::get(&format!("/api/v1/bookings/{bid}")).token(t))
            .await;
        assert_eq!(r.body["status"], "cancelled");
        assert_eq!(r.body["cancel_reason"], "event_cancelled");
        assert_eq!(
            r.body["refund_cents"], refund,
            "full refund even 3 h before"
        );
    }
    assert_eq!(payment::simulated().refunded(&paid_b), Some(2000));
    for t in [&paid, &held, &waiting] {
        let n = notifications(&a, t).await;
        assert!(
            n.iter().any(|n| n["kind"] == "booking.event_cancelled"),
            "{n:?}"
        );
    }
    let r = a
        .call(TestRequest::get("/api/v1/me/waitlist").token(&waiting))
        .await;
    assert_eq!(r.body[0]["status"], "cancelled");
    let (pending, _, _) = outbox::lag(&a.state).await.unwrap();
    assert_eq!(pending, 0);
}

async fn booking_is_idempotent_and_notifications_recorded_once(b: Backend) {
    let a = app(b).await;
    let (_, org) = user(&a, "org", "partner", "free").await;
    let (_, u) = user(&a, "u", "user", "free").await;
    let e = create(&a, &org, event_body(5, 10.0 * DAY, -HOUR)).await;
    let k = key();
    let req = TestRequest::post(&format!(
        "/api/v1/events/{}/bookings",
        e["id"].as_str().unwrap()
    ))
    .token(&u)
    .idempotency_key(&k);
    let r1 = a.call(req.clone()).await;
    assert_eq!(r1.status, StatusCode::CREATED);
    let r2 = a.call(req).await;
    assert_eq!(r2.status, StatusCode::CREATED);
    assert_eq!(r2.header("idempotent-replayed"), Some("true"));
    assert_eq!(r1.body, r2.body, "the replay is the original answer");
    assert_eq!(
        detail(&a, e["id"].as_str().unwrap()).await["seats_taken"],
        1
    );
    drain_outbox(&a).await;
    let before = notifications(&a, &u).await.len();
    assert_eq!(before, 1);
    // Redelivery of every event (as after a crash): the handler adds nothing.
    sqlx::query("UPDATE outbox SET dispatched_at = NULL")
        .execute(a.state.db.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM outbox_processed")
        .execute(a.state.db.pool())
        .await
        .unwrap();
    drain_outbox(&a).await;
    assert_eq!(notifications(&a, &u).await.len(), before);
}

async fn booking_routes_are_in_the_openapi_document(b: Backend) {
    let a = app(b).await;
    let r = a.call(TestRequest::get("/api/v1/openapi.json")).await;
    let paths = r.body["paths"].as_object().unwrap();
    for (p, m) in [
        ("/api/v1/events", "post"),
        ("/api/v1/events", "get"),
        ("/api/v1/events/{id}", "get"),
        ("/api/v1/events/{id}", "patch"),
        ("/api/v1/events/{id}/cancel", "post"),
        ("/api/v1/events/{id}/bookings", "post"),
        ("/api/v1/bookings", "get"),
        ("/api/v1/bookings/{id}", "get"),
        ("/api/v1/bookings/{id}/pay", "post"),
        ("/api/v1/bookings/{id}/cancel", "post"),
        ("/api/v1/me/waitlist", "get"),
        ("/api/v1/me/booking-notifications", "get"),
    ] {
        assert!(
            paths.get(p).and_then(|x| x.get(m)).is_some(),
            "{m} {p} missing"
        );
    }
}

/// GDPR: the deleted user's paid seat is cancelled, refunded by the policy and goes to the first
/// in line; their waiting entry ends; nothing left in the booking tables names them; the export
/// before deletion held their booking data; a redelivery of the event changes nothing.
async fn deleting_an_account_frees_its_seats_and_forgets_its_bookings(b: Backend) {
    let a = app(b).await;
    let (_, org) = user(&a, "org", "partner", "free").await;
    let (gone_id, gone) = user(&a, "gone", "user", "free").await;
    let (_, next) = user(&a, "next", "user", "free").await;
    let (_, other) = user(&a, "other", "user", "free").await;
    let e1 = create(&a, &org, event_body(1, 10.0 * DAY, -HOUR)).await;
    let e2 = create(&a, &org, event_body(1, 10.0 * DAY, -HOUR)).await;
    let (e1, e2) = (e1["id"].as_str().unwrap(), e2["id"].as_str().unwrap());
    let (s, r) = book(&a, &gone, e1).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let gone_booking = r["booking"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        pay(&a, &gone, &gone_booking, "sim_success").await.0,
        StatusCode::OK
    );
    assert_eq!(
        book(&a, &next, e1).await.0,
        StatusCode::ACCEPTED,
        "waitlisted"
    );
    assert_eq!(book(&a, &other, e2).await.0, StatusCode::CREATED);
    assert_eq!(
        book(&a, &gone, e2).await.0,
        StatusCode::ACCEPTED,
        "waitlisted"
    );
    drain_outbox(&a).await;
    assert!(!notifications(&a, &gone).await.is_empty());

    let r = a
        .call(TestRequest::get("/api/v1/me/export").token(&gone))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["booking"]["bookings"][0]["id"],
        gone_booking.as_str(),
        "{}",
        r.body
    );
    assert_eq!(r.body["booking"]["waitlist"].as_array().unwrap().len(), 1);
    assert!(!r.body["booking"]["notifications"]
        .as_array()
        .unwrap()
        .is_empty());

    let r = a.delete_account(&gone).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    drain_outbox(&a).await;

    let pool = a.state.db.pool();
    for table in ["bookings", "booking_waitlist", "booking_notifications"] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE user_id = $1"
        )))
        .bind(&gone_id)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(n, 0, "{table} still names the deleted user");
    }
    let (status, reason, refund): (String, String, i64) =
        sqlx::query_as("SELECT status, cancel_reason, refund_cents FROM bookings WHERE id = $1")
            .bind(&gone_booking)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("cancelled", "account_deleted")
    );
    assert!(refund > 0, "paid 10 days ahead: refunded");
    assert_eq!(payment::simulated().refunded(&gone_booking), Some(refund));
    // The seat went to the first in line.
    assert_eq!(detail(&a, e1).await["seats_taken"], 1);
    let r = a
        .call(TestRequest::get("/api/v1/bookings").token(&next))
        .await;
    assert_eq!(r.body[0]["status"], "held", "{}", r.body);
    assert!(notifications(&a, &next)
        .await
        .iter()
        .any(|n| n["kind"] == "booking.waitlist_promoted"));
    // e2's line is empty now: other keeps the seat, nobody is promoted behind them.
    assert_eq!(detail(&a, e2).await["seats_taken"], 1);

    // Redelivery (as after a crash): nothing more is cancelled or promoted.
    sqlx::query("UPDATE outbox SET dispatched_at = NULL")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM outbox_processed")
        .execute(pool)
        .await
        .unwrap();
    drain_outbox(&a).await;
    let r = a
        .call(TestRequest::get("/api/v1/bookings").token(&next))
        .await;
    assert_eq!(r.body[0]["status"], "held");
    assert_eq!(detail(&a, e1).await["seats_taken"], 1);
}

/// RULES: a booking transaction running longer than 30 seconds is rolled back. The limit is
/// injected (300 ms here, so the test does not wait 30 real seconds): the transaction writes,
/// then stalls past the limit; the caller gets a timeout, the write is gone, and the database
/// serves the next transaction. The production limit is checked to be the rule's 30 s.
async fn a_transaction_running_past_30_seconds_is_rolled_back(b: Backend) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    assert_eq!(fitedge_server::db::TX_TIMEOUT, Duration::from_secs(30));
    let a = app(b).await;
    let limit = Duration::from_millis(300);
    let db = a.state.db.clone().with_tx_timeout(limit);
    let wrote = std::sync::Arc::new(AtomicBool::new(false));
    let flag = wrote.clone();
    let r = db
        .write(move |tx| {
            let flag = flag.clone();
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO booking_notifications
                       (outbox_event_id, user_id, kind, event_id, message, created_at)
                     VALUES ('stalled', 'u', 'k', 'e', 'm', 0)",
                )
                .execute(&mut **tx)
                .await?;
                flag.store(true, Ordering::SeqCst);
                tokio::time::sleep(limit * 4).await;
                Ok(())
            })
        })
        .await;
    assert!(
        wrote.load(Ordering::SeqCst),
        "the write ran before the stall"
    );
    assert!(
        matches!(r, Err(fitedge_server::Error::Timeout)),
        "expected a timeout, got {r:?}"
    );
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM booking_notifications WHERE outbox_event_id = 'stalled'",
    )
    .fetch_one(a.state.db.pool())
    .await
    .unwrap();
    assert_eq!(n, 0, "the stalled transaction's write was rolled back");
    // Within the limit the same write commits.
    db.write(|tx| {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO booking_notifications
                   (outbox_event_id, user_id, kind, event_id, message, created_at)
                 VALUES ('quick', 'u', 'k', 'e', 'm', 0)",
            )
            .execute(&mut **tx)
            .await?;
            Ok(())
        })
    })
    .await
    .unwrap();
    let (_, org) = user(&a, "org", "partner", "free").await;
    create(&a, &org, event_body(1, 10.0 * DAY, -HOUR)).await;
}

/// A booking request whose client hangs up while it waits for the booking lock (its future is
/// dropped inside `BEGIN`) must leave nothing behind. sqlx 0.9.0 alone returns that connection
/// to the pool inside an untracked transaction that then holds the lock, and swallows every
/// later autocommit write made on it (transact-rs/sqlx#4393; it stalled the booking benchmark).
async fn a_booking_cancelled_while_waiting_for_the_lock_leaks_nothing(b: Backend) {
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::Notify;
    let a = app(b).await;
    let db = a.state.db.clone();
    let insert = |tag: &'static str| {
        format!(
            "INSERT INTO booking_notifications
               (outbox_event_id, user_id, kind, event_id, message, created_at)
             VALUES ('{tag}', 'u', 'k', 'e', 'm', 0)"
        )
    };
    // A holds the booking lock until told to finish.
    let (holding, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let holder = {
        let (db, holding, release, sql) =
            (db.clone(), holding.clone(), release.clone(), insert("a"));
        tokio::spawn(async move {
            db.write_locked(booking::repo::LOCK, move |tx| {
                let (holding, release, sql) = (holding.clone(), release.clone(), sql.clone());
                Box::pin(async move {
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut **tx)
                        .await?;
                    holding.notify_one();
                    release.notified().await;
                    Ok(())
                })
            })
            .await
        })
    };
    holding.notified().await;
    // B waits behind A and is dropped while waiting, as a request is when its client leaves.
    let sql_b = insert("b");
    let waited = tokio::time::timeout(
        Duration::from_millis(300),
        db.write_locked(booking::repo::LOCK, move |tx| {
            let sql = sql_b.clone();
            Box::pin(async move {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            })
        }),
    )
    .await;
    assert!(waited.is_err(), "B should still be waiting for the lock");
    release.notify_one();
    holder.await.unwrap().unwrap();
    // Let B's BEGIN finish on the database side (it gets the lock once A commits).
    tokio::time::sleep(Duration::from_millis(500)).await;
    if b == Backend::Postgres {
        let stuck: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()
             AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(a.state.db.pool())
        .await
        .unwrap();
        assert_eq!(
            stuck, 0,
            "a pooled connection was left inside a transaction"
        );
    }
    // Every later write, locked or not, commits promptly and is seen by everyone.
    for i in 0..40 {
        let sql = format!(
            "INSERT INTO booking_notifications
               (outbox_event_id, user_id, kind, event_id, message, created_at)
             VALUES ('after-{i}', 'u', 'k', 'e', 'm', 0)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(a.state.db.pool())
            .await
            .unwrap();
    }
    let sql_c = insert("c");
    tokio::time::timeout(
        Duration::from_secs(5),
        db.write_locked(booking::repo::LOCK, move |tx| {
            let sql = sql_c.clone();
            Box::pin(async move {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            })
        }),
    )
    .await
    .expect("the booking lock is free again")
    .unwrap();
    let tags: Vec<String> = sqlx::query_scalar(
        "SELECT outbox_event_id FROM booking_notifications ORDER BY outbox_event_id",
    )
    .fetch_all(a.state.db.pool())
    .await
    .unwrap();
    assert_eq!(tags.len(), 42, "{tags:?}");
    assert!(tags.contains(&"a".to_string()) && tags.contains(&"c".to_string()));
    assert!(
        !tags.contains(&"b".to_string()),
        "B was cancelled before it ran"
    );
}

/// PostgreSQL's one-round-trip hold (`repo::fast_hold`, the database function of migration
/// 0101) must take the plain case and decline, writing nothing, everything else; the general
/// transaction then answers. The rule tests above pass either way (a fast path that always
/// declined would hide behind the general one), so this one looks at the fast path itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fast_hold_takes_the_plain_case_and_declines_the_rest() {
    use fitedge_server::booking::repo;
    let a = app(Backend::Postgres).await;
    let db = &a.state.db;
    let pool = db.pool();
    let (_, org) = user(&a, "org", "partner", "free").await;
    let ev = create(&a, &org, event_body(2, 10.0 * DAY, -HOUR)).await;
    let id = ev["id"].as_str().unwrap();
    let (u1, _) = user(&a, "u1", "user", "free").await;
    let (u2, _) = user(&a, "u2", "user", "free").await;
    let (u3, _) = user(&a, "u3", "user", "free").await;
    let now = a.state.now().as_millis();
    let ttl = 30 * 60_000;
    let seen = repo::load_event(pool, id).await.unwrap().unwrap();
    let counts = || async {
        let seats: i64 = sqlx::query_scalar("SELECT seats_taken FROM booking_events WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE kind = $1")
            .bind(repo::BOOKING_HELD)
            .fetch_one(pool)
            .await
            .unwrap();
        (seats, held)
    };

    let b1 = repo::fast_hold(db, now, &seen, &u1, ttl, 2).await.unwrap();
    let b1 = b1.expect("a free seat, a new user: the fast path holds it");
    assert_eq!((b1.status.as_str(), b1.event_id.as_str()), ("held", id));
    let stored: String = sqlx::query_scalar("SELECT status FROM bookings WHERE id = $1")
        .bind(&b1.id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(stored, "held");
    assert_eq!(
        counts().await,
        (1, 1),
        "one seat taken, one BookingHeld event"
    );

    // Declined, nothing written: the same user again; a due hold; an event changed since read.
    assert!(repo::fast_hold(db, now, &seen, &u1, ttl, 2)
        .await
        .unwrap()
        .is_none());
    let after_expiry = b1.hold_expires_at;
    assert!(repo::fast_hold(db, after_expiry, &seen, &u2, ttl, 2)
        .await
        .unwrap()
        .is_none());
    assert!(repo::fast_hold(db, after_expiry - 1, &seen, &u2, ttl, 2)
        .await
        .unwrap()
        .is_some());
    assert_eq!(counts().await, (2, 2));
    assert!(
        repo::fast_hold(db, now, &seen, &u3, ttl, 2)
            .await
            .unwrap()
            .is_none(),
        "full"
    );
    sqlx::query("UPDATE booking_events SET capacity = 3, version = version + 1 WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    assert!(
        repo::fast_hold(db, now, &seen, &u3, ttl, 2)
            .await
            .unwrap()
            .is_none(),
        "the event changed since it was read"
    );
    let fresh = repo::load_event(pool, id).await.unwrap().unwrap();
    assert!(
        repo::fast_hold(db, now, &fresh, &u3, ttl, 0)
            .await
            .unwrap()
            .is_none(),
        "the daily limit (0 here) is reached"
    );
    assert_eq!(
        counts().await,
        (2, 2),
        "nothing was written by a declined call"
    );
    assert!(repo::fast_hold(db, now, &fresh, &u3, ttl, 2)
        .await
        .unwrap()
        .is_some());
    assert_eq!(counts().await, (3, 3));

    // Every hold is paid: the event's expiry bound stays where the first hold put it, so once
    // that time passes the fast path declines; one look for expired holds (the general path's)
    // finds none, makes the bound exact, and the fast path takes bookings again.
    sqlx::query("UPDATE bookings SET status = 'confirmed' WHERE event_id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE booking_events SET capacity = 4, version = version + 1 WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    let later = after_expiry + 1;
    let fresh = repo::load_event(pool, id).await.unwrap().unwrap();
    let (u4, _) = user(&a, "u4", "user", "free").await;
    assert!(
        repo::fast_hold(db, later, &fresh, &u4, ttl, 2)
            .await
            .unwrap()
            .is_none(),
        "the bound says a hold may have run out"
    );
    let event = id.to_string();
    let expired = db
        .write(move |tx| {
            let event = event.clone();
            Box::pin(async move { repo::expire_due(tx, later, Some(&event), ttl, 2).await })
        })
        .await
        .unwrap();
    assert_eq!(expired, 0, "every hold was paid");
    let bound = || async {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT first_hold_expiry FROM booking_events WHERE id = $1",
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    assert_eq!(bound().await, None, "no hold left: no bound");
    assert!(repo::fast_hold(db, later, &fresh, &u4, ttl, 2)
        .await
        .unwrap()
        .is_some());
    assert_eq!(bound().await, Some(later + ttl), "the new hold's expiry");
}

/// Two payments of one held booking race (the client retried with a new idempotency key). The
/// first confirms the booking; the user cancels two days before the event (50 % tier); only then
/// does the second payment's charge come back from the provider. The provider charges a booking
/// once, so that charge is the one that confirmed the booking and the cancellation already
/// decided its refund: it must stay 50 %, with one BookingCancelled, refunded once.
async fn a_payment_landing_after_confirm_and_cancel_keeps_the_policy_refund(b: Backend) {
    let a = app(b).await;
    let (_, org) = user(&a, "org", "partner", "free").await;
    let (_, u) = user(&a, "u", "user", "free").await;
    let e = create(&a, &org, event_body(3, 2.0 * DAY, -HOUR)).await;
    let (s, r) = book(&a, &u, e["id"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let bid = r["booking"]["id"].as_str().unwrap().to_string();
    let gate = payment::simulated().pause_next_charge(&bid);
    let late = pay(&a, &u, &bid, "sim_success");
    let meanwhile = async {
        gate.arrived().await;
        let (s, r) = pay(&a, &u, &bid, "sim_success").await;
        assert_eq!(s, StatusCode::OK, "the other payment confirms: {r}");
        assert_eq!(r["status"], "confirmed");
        let (s, r) = cancel(&a, &u, &bid).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(r["refund_cents"], 1000, "50 % two days before the start");
        gate.release();
    };
    let ((s, r), ()) = tokio::join!(late, meanwhile);
    let row = booking_row(&a, &u, &bid).await;
    assert_eq!(row["status"], "cancelled", "{row}");
    assert_eq!(
        row["refund_cents"], 1000,
        "the late answer of the same charge leaves the policy refund alone: {row}"
    );
    assert_eq!(row["refund_status"], "pending", "{row}");
    assert_eq!(cancelled_events(&a, &bid).await, 1, "one BookingCancelled");
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    assert_eq!(r["error"], "booking_not_held", "{r}");
    assert_eq!(r["details"]["status"], "cancelled", "{r}");
    drain_outbox(&a).await;
    assert_eq!(
        payment::simulated().charged(&bid),
        Some(2000),
        "charged once"
    );
    assert_eq!(payment::simulated().refunded(&bid), Some(1000));
    let row = booking_row(&a, &u, &bid).await;
    assert_eq!(
        (row["refund_cents"].clone(), row["refund_status"].clone()),
        (json!(1000), json!("refunded")),
        "{row}"
    );
    let kinds: Vec<Value> = notifications(&a, &u)
        .await
        .iter()
        .map(|n| n["kind"].clone())
        .filter(|k| k == "booking.booking_cancelled")
        .collect();
    assert_eq!(kinds.len(), 1, "told about one refund");
}

/// Two payments of one held booking both reach the provider; the hold runs out before either
/// charge comes back. The first to come back finds the hold expired: the charge is refunded in
/// full, and the refund is paid. The second is the same charge (one per booking): it must not
/// ask for the refund again (a second BookingCancelled, the paid refund marked pending again).
async fn a_second_late_payment_does_not_refund_again(b: Backend) {
    use futures::future::Either;
    let a = app(b).await;
    let (_, org) = user(&a, "org", "partner", "free").await;
    let (_, u) = user(&a, "u", "user", "free").await;
    let e = create(&a, &org, event_body(3, 10.0 * DAY, -HOUR)).await;
    let (_, r) = book(&a, &u, e["id"].as_str().unwrap()).await;
    let bid = r["booking"]["id"].as_str().unwrap().to_string();
    let g1 = payment::simulated().pause_next_charge(&bid);
    let g2 = payment::simulated().pause_next_charge(&bid);
    let p1 = Box::pin(pay(&a, &u, &bid, "sim_success"));
    let p2 = Box::pin(pay(&a, &u, &bid, "sim_success"));
    let (mut p1, mut p2) = (p1, p2);
    let both_in = async {
        g1.arrived().await;
        g2.arrived().await;
    };
    tokio::select! {
        _ = both_in => {}
        r = &mut p1 => panic!("a payment finished before both were charged: {r:?}"),
        r = &mut p2 => panic!("a payment finished before both were charged: {r:?}"),
    }
    a.clock.advance_secs(31.0 * 60.0);
    g1.release();
    let ((s, r), rest) = match futures::future::select(p1, p2).await {
        Either::Left((first, rest)) | Either::Right((first, rest)) => (first, rest),
    };
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    assert_eq!(r["error"], "hold_expired");
    drain_outbox(&a).await;
    let row = booking_row(&a, &u, &bid).await;
    assert_eq!(row["status"], "expired", "{row}");
    assert_eq!(
        (row["refund_cents"].clone(), row["refund_status"].clone()),
        (json!(2000), json!("refunded")),
        "{row}"
    );
    g2.release();
    let (s, r) = rest.await;
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    assert_eq!(r["error"], "hold_expired");
    let row = booking_row(&a, &u, &bid).await;
    assert_eq!(
        (row["refund_cents"].clone(), row["refund_status"].clone()),
        (json!(2000), json!("refunded")),
        "the refund already paid stays paid: {row}"
    );
    assert_eq!(cancelled_events(&a, &bid).await, 1, "one BookingCancelled");
    drain_outbox(&a).await;
    assert_eq!(payment::simulated().charged(&bid), Some(2000));
    assert_eq!(payment::simulated().refunded(&bid), Some(2000));
}

/// RULES: at most 2 events per user per day, also when an organizer moves an event to another
/// day. A user holds seats at two events on the 20th and at X on the 21st; X cannot move to the
/// 20th (that user would have 3), the refusal says how many participants are in the way and
/// changes nothing. Once that user cancels one, the move goes through and counts on the new day.
async fn moving_an_event_to_a_full_day_is_refused(b: Backend) {
    let a = app(b).await;
    let (_, org) = user(&a, "org", "partner", "free").await;
    let (_, u) = user(&a, "u", "user", "free").await;
    let (_, v) = user(&a, "v", "user", "free").await;
    let day5 = 5.0 * DAY - 12.0 * HOUR; // 2025-06-20T00:00Z
    let mut ids = vec![];
    for start in [day5 + 6.0 * HOUR, day5 + 12.0 * HOUR, day5 + 33.0 * HOUR] {
        ids.push(
            create(&a, &org, event_body(5, start, -HOUR)).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (ev_a, ev_b, ev_x) = (&ids[0], &ids[1], &ids[2]);
    let (_, held_b) = book(&a, &u, ev_b).await;
    for (t, e) in [(&u, ev_a), (&u, ev_x), (&v, ev_a), (&v, ev_x)] {
        assert_eq!(book(&a, t, e).await.0, StatusCode::CREATED);
    }
    let path = format!("/api/v1/events/{ev_x}");
    let move_x = |version: i64| {
        TestRequest::patch(&path).token(&org).json(json!({
            "version": version,
            "starts_at": at(day5 + 18.0 * HOUR), "ends_at": at(day5 + 20.0 * HOUR)
        }))
    };
    let r = a.call(move_x(1)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["error"], "move_exceeds_daily_limit", "{}", r.body);
    assert_eq!(r.body["details"]["participants_over_limit"], 1, "u, not v");
    assert_eq!(r.body["details"]["day"], "2025-06-20");
    assert_eq!(r.body["details"]["limit"], 2);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("1 participant"),
        "{}",
        r.body
    );
    let d = detail(&a, ev_x).await;
    assert_eq!(d["version"], 1, "nothing changed: {d}");
    assert_eq!(d["starts_at"], at(day5 + 33.0 * HOUR));
    // Moving it within its own day, or to a day with room, is no concern of the limit.
    let r = a
        .call(TestRequest::patch(&path).token(&org).json(json!({
            "version": 1,
            "starts_at": at(day5 + 34.0 * HOUR), "ends_at": at(day5 + 36.0 * HOUR)
        })))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (s, r) = cancel(&a, &u, held_b["booking"]["id"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let r = a.call(move_x(2)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["starts_at"], at(day5 + 18.0 * HOUR));
    // X now counts on the 20th: u has A and X there, so B is refused.
    let (s, r) = book(&a, &u, ev_b).await;
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    assert_eq!(r["error"], "daily_limit_reached");
}
