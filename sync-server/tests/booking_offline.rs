//! Booking while offline (issue 8): a booking the app queued in the device outbox (core's REST
//! outbox, the same one the FFI exposes) is delivered when the device is back online, with the
//! idempotency key it got when it was queued, and ends held, waitlisted or refused with a reason
//! the app can show. On SQLite and PostgreSQL, against a live server over its socket.
// Tests assert with unwrap/expect: a failure should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::http::StatusCode;
use fitedge_core::crypto::StorageKey;
use fitedge_core::db::Store;
use fitedge_core::sync::client::{outbox_flush, SyncConfig};
use fitedge_core::sync::outbox::OutboxStatus;
use fitedge_core::time::{Clock, ManualClock};
use fitedge_server::booking;
use fitedge_server::db::Backend;
use fitedge_server::outbox::Handlers;
use fitedge_server::testing::{TestApp, TestRequest, T0};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_offline_booking_is_delivered_later() {
    an_offline_booking_is_delivered_later(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_offline_booking_is_delivered_later() {
    an_offline_booking_is_delivered_later(Backend::Postgres).await;
}

async fn user(a: &TestApp, name: &str, role: &str) -> String {
    a.user_with(&format!("{name}@example.com"), role, "free")
        .await
        .unwrap()
        .1
}

async fn event(a: &TestApp, org: &str, capacity: i64) -> String {
    let at = |s: f64| T0.plus_secs(s).to_rfc3339();
    let r = a
        .call(TestRequest::post("/api/v1/events").token(org).json(json!({
            "title": "Harbour 10k", "sport": "running",
            "venue": {"name": "Harbour", "lat": 59.9139, "lon": 10.7522},
            "starts_at": at(10.0 * 86_400.0), "ends_at": at(10.0 * 86_400.0 + 7200.0),
            "capacity": capacity, "price_cents": 2000, "currency": "EUR",
            "public_opens_at": at(-3600.0)
        })))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn an_offline_booking_is_delivered_later(b: Backend) {
    let a = TestApp::build(b, |_| {}, booking::register(Handlers::new()))
        .await
        .expect("test app");
    let addr = a.listen().await.unwrap();
    let org = user(&a, "org", "partner").await;
    let athlete = user(&a, "athlete", "user").await;
    let quicker = user(&a, "quicker", "user").await;
    let full = event(&a, &org, 1).await;
    let open = event(&a, &org, 5).await;
    let cancelled = event(&a, &org, 5).await;

    // Offline: the athlete's phone queues three bookings.
    let tmp = tempfile::tempdir().unwrap();
    let phone = Store::open(
        &tmp.path().join("phone.db"),
        Some(StorageKey::new(&[7; 32]).unwrap()),
    )
    .unwrap();
    let clock = ManualClock::new(T0);
    for e in [&full, &open, &cancelled] {
        phone
            .outbox_enqueue(
                "POST",
                &format!("/api/v1/events/{e}/bookings"),
                None,
                clock.now(),
            )
            .unwrap();
    }
    let offline = SyncConfig {
        timeout_ms: 2_000,
        ..SyncConfig::new("http://127.0.0.1:9", athlete.clone())
    };
    let _ = outbox_flush(&phone, &offline, &clock).await;
    let queued = phone.outbox_list().unwrap();
    assert_eq!(queued.len(), 3);
    assert!(
        queued.iter().all(|c| c.status == OutboxStatus::Pending),
        "{queued:?}"
    );
    let keys: Vec<String> = queued.iter().map(|c| c.idempotency_key.clone()).collect();

    // Meanwhile, someone else takes the last seat of the first event, and the organizer
    // cancels the third.
    let r = a
        .call(
            TestRequest::post(&format!("/api/v1/events/{full}/bookings"))
                .token(&quicker)
                .idempotency_key(&uuid::Uuid::new_v4().to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = a
        .call(TestRequest::post(&format!("/api/v1/events/{cancelled}/cancel")).token(&org))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Online again, after the retry wait: delivered in order with the keys made offline.
    clock.advance_secs(3600.0);
    let online = SyncConfig::new(format!("http://{addr}"), athlete.clone());
    let report = outbox_flush(&phone, &online, &clock).await.unwrap();
    assert_eq!(
        (report.sent, report.failed, report.pending),
        (2, 1, 0),
        "{report:?}"
    );
    let done = phone.outbox_list().unwrap();
    let body = |i: usize| -> Value {
        serde_json::from_str(done[i].response_body.as_deref().unwrap()).unwrap()
    };
    assert_eq!(
        done.iter()
            .map(|c| c.idempotency_key.clone())
            .collect::<Vec<_>>(),
        keys
    );
    // Full: waitlisted, with its position.
    assert_eq!(done[0].status, OutboxStatus::Sent);
    assert_eq!(done[0].response_status, Some(202), "{:?}", done[0]);
    assert_eq!(body(0)["outcome"], "waitlisted", "{}", body(0));
    assert_eq!(body(0)["waitlist"]["position"], 1, "{}", body(0));
    // Open: held.
    assert_eq!(done[1].status, OutboxStatus::Sent);
    assert_eq!(done[1].response_status, Some(201), "{:?}", done[1]);
    assert_eq!(body(1)["outcome"], "held", "{}", body(1));
    assert_eq!(body(1)["booking"]["status"], "held", "{}", body(1));
    // Cancelled: refused, with a reason the app can show.
    assert_eq!(done[2].status, OutboxStatus::Failed);
    assert_eq!(done[2].response_status, Some(409), "{:?}", done[2]);
    assert_eq!(body(2)["error"], "event_cancelled", "{}", body(2));
    assert!(body(2)["message"].as_str().is_some_and(|m| !m.is_empty()));

    // The server stored each booking under the phone's key: replaying one (a response lost on
    // the way back) answers the original.
    let r = a
        .call(
            TestRequest::post(&format!("/api/v1/events/{open}/bookings"))
                .token(&athlete)
                .idempotency_key(&keys[1]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    assert_eq!(r.body, body(1));
}
