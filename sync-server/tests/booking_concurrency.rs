//! Issue 8, "what done means": 1000 distinct users book one event of capacity 100 at the same
//! moment through real HTTP requests against a live server (127.0.0.1), then 200 holders cancel
//! while everyone else retries with the same idempotency keys. On SQLite and on PostgreSQL.
// Tests assert with unwrap/expect: a failure should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// It reports its timings and samples on stderr (shown with --nocapture).
#![allow(clippy::print_stderr)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fitedge_server::booking;
use fitedge_server::crypto::sha256_hex;
use fitedge_server::db::Backend;
use fitedge_server::outbox::Handlers;
use fitedge_server::testing::{TestApp, T0};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Barrier;

const USERS: usize = 1000;
const CAPACITY: i64 = 100;
const CANCELLERS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_1000_users_one_event_capacity_100() {
    run(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_1000_users_one_event_capacity_100() {
    run(Backend::Postgres).await
}

#[derive(Debug, Clone, PartialEq)]
struct Reply {
    status: u16,
    replayed: bool,
    body: String,
}

/// Connections that failed below HTTP (reset, refused) and were tried again with the same key,
/// counted over the whole test binary (both backends' tests may run at once).
static TRANSPORT_RETRIES: AtomicI64 = AtomicI64::new(0);

/// One HTTP/1.1 request on its own connection. A connection that fails below HTTP (on a loaded
/// 2-core machine, 1000 sockets at once on loopback now and then get a reset) is answered with
/// status 0: no answer, which [`until_final`] sends again with the same idempotency key, as a
/// real client does. Whether or not the server saw the first try, the answer is then the same.
async fn http(addr: SocketAddr, method: &str, path: &str, token: &str, key: &str) -> Reply {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         x-idempotency-key: {key}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        conn.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await?;
        std::io::Result::Ok(raw)
    };
    let raw = match exchange.await {
        Ok(raw) => raw,
        Err(_) => {
            TRANSPORT_RETRIES.fetch_add(1, Ordering::SeqCst);
            return Reply {
                status: 0,
                replayed: false,
                body: String::new(),
            };
        }
    };
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let lower = head.to_ascii_lowercase();
    let body = if lower.contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    Reply {
        status,
        replayed: lower.contains("idempotent-replayed: true"),
        body,
    }
}

/// Sends until the answer is not a retryable one (5xx, or 409 while the first try is in flight),
/// always with the same idempotency key; returns the first final answer.
async fn until_final(addr: SocketAddr, method: &str, path: &str, token: &str, key: &str) -> Reply {
    for _ in 0..2000 {
        let r = http(addr, method, path, token, key).await;
        let in_flight = r.status == 409 && r.body.contains("idempotency_in_flight");
        if r.status >= 500 || in_flight || r.status == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        return r;
    }
    panic!("{method} {path}: no final answer after 2000 tries");
}

async fn run(b: Backend) {
    let a = TestApp::build(b, |_| {}, booking::register(Handlers::new()))
        .await
        .unwrap();
    let pool = a.state.db.pool().clone();
    // 1000 users (every 10th premium) plus an organizer, signed in: rows written directly.
    let mut tokens = vec![];
    for i in 0..=USERS {
        let id = uuid::Uuid::new_v4().to_string();
        let tier = if i % 10 == 3 { "premium" } else { "free" };
        let role = if i == USERS { "partner" } else { "user" };
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, display_name, birth_date, role, tier,
               email_verified_at, created_at, updated_at)
             VALUES ($1, $2, 'x', 'Load', '1990-01-01', $3, $4, $5, $5, $5)",
        )
        .bind(&id)
        .bind(format!("u{i}@example.com"))
        .bind(role)
        .bind(tier)
        .bind(T0.as_millis())
        .execute(&pool)
        .await
        .unwrap();
        let token = format!("tok{i}_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(
            "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(&id)
        .bind(sha256_hex(token.as_bytes()))
        .bind(T0.as_millis())
        .bind(T0.as_millis() + 86_400_000)
        .execute(&pool)
        .await
        .unwrap();
        tokens.push((id, token, tier == "premium"));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fitedge_server::serve_on(a.state.clone(), listener, async {
        let _ = stop_rx.await;
    }));
    let org = tokens[USERS].1.clone();
    let create = a
        .call(
            fitedge_server::testing::TestRequest::post("/api/v1/events")
                .token(&org)
                .json(json!({
                    "title": "Sold out in a second", "sport": "running",
                    "venue": {"name": "Stadium", "lat": 48.85, "lon": 2.35},
                    "starts_at": T0.plus_secs(10.0 * 86_400.0).to_rfc3339(),
                    "ends_at": T0.plus_secs(10.0 * 86_400.0 + 7200.0).to_rfc3339(),
                    "capacity": CAPACITY, "price_cents": 1500,
                    "public_opens_at": T0.plus_secs(-60.0).to_rfc3339()
                })),
        )
        .await;
    assert_eq!(create.status.as_u16(), 201, "{}", create.body);
    let event = create.body["id"].as_str().unwrap().to_string();
    let book_path = format!("/api/v1/events/{event}/bookings");

    // A sampler checks the invariant during the run, from the database itself.
    let running = Arc::new(AtomicBool::new(true));
    let max_seen = Arc::new(AtomicI64::new(0));
    let samples = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (pool, event, running, max_seen, samples) = (
            pool.clone(),
            event.clone(),
            running.clone(),
            max_seen.clone(),
            samples.clone(),
        );
        tokio::spawn(async move {
            while running.load(Ordering::SeqCst) {
                let active: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM bookings WHERE event_id = $1
                     AND status IN ('held', 'confirmed')",
                )
                .bind(&event)
                .fetch_one(&pool)
                .await
                .unwrap();
                let taken: i64 =
                    sqlx::query_scalar("SELECT seats_taken FROM booking_events WHERE id = $1")
                        .bind(&event)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                assert!(
                    active <= CAPACITY && taken <= CAPACITY,
                    "{active} / {taken}"
                );
                max_seen.fetch_max(active.max(taken), Ordering::SeqCst);
                samples.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // Phase 1: everyone at once.
    let started = std::time::Instant::now();
    let barrier = Arc::new(Barrier::new(USERS));
    let mut tasks = vec![];
    for (i, (_, token, _)) in tokens.iter().take(USERS).enumerate() {
        let (barrier, token, path) = (barrier.clone(), token.clone(), book_path.clone());
        let key = uuid::Uuid::new_v4().to_string();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let r = until_final(addr, "POST", &path, &token, &key).await;
            (i, key, r)
        }));
    }
    let mut first: Vec<(usize, String, Reply)> = vec![];
    for t in tasks {
        first.push(t.await.unwrap());
    }
    let phase1 = started.elapsed();
    let held: Vec<&(usize, String, Reply)> = first.iter().filter(|r| r.2.status == 201).collect();
    let waitlisted: Vec<&(usize, String, Reply)> =
        first.iter().filter(|r| r.2.status == 202).collect();
    assert_eq!(
        held.len(),
        CAPACITY as usize,
        "exactly as many holds as seats"
    );
    assert_eq!(
        waitlisted.len(),
        USERS - CAPACITY as usize,
        "everyone else waits"
    );
    let held_users: HashSet<usize> = held.iter().map(|r| r.0).collect();
    assert_eq!(held_users.len(), CAPACITY as usize);

    // The waitlist as stored: premium first, then by arrival; positions answered match it.
    let order: Vec<String> = sqlx::query_scalar(
        "SELECT user_id FROM booking_waitlist WHERE event_id = $1 AND status = 'waiting'
         ORDER BY priority, seq",
    )
    .bind(&event)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(order.len(), USERS - CAPACITY as usize);
    let premium_of: HashMap<&str, bool> = tokens.iter().map(|t| (t.0.as_str(), t.2)).collect();
    let first_free = order.iter().position(|u| !premium_of[u.as_str()]).unwrap();
    assert!(
        order[first_free..].iter().all(|u| !premium_of[u.as_str()]),
        "every premium member is ahead of every free one"
    );
    // A free user's answered position can only be at or after its final place's arrival rank
    // among free users plus premium joiners before it; check arrival order among free users.
    let seq_of: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT user_id, seq FROM booking_waitlist WHERE event_id = $1",
    )
    .bind(&event)
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut positions: Vec<(i64, i64, bool)> = waitlisted
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(&r.2.body).unwrap();
            let uid = &tokens[r.0].0;
            (
                seq_of[uid],
                v["waitlist"]["position"].as_i64().unwrap(),
                tokens[r.0].2,
            )
        })
        .collect();
    positions.sort();
    let free: Vec<i64> = positions.iter().filter(|p| !p.2).map(|p| p.1).collect();
    let prem: Vec<i64> = positions.iter().filter(|p| p.2).map(|p| p.1).collect();
    assert!(
        prem.windows(2).all(|w| w[0] < w[1]),
        "premium positions follow arrival"
    );
    assert!(
        free.windows(2).all(|w| w[0] < w[1]),
        "free positions follow arrival"
    );

    // Phase 2: 200 holders cancel (the 100 first holders, then 100 of those promoted in their
    // place), while every one of the 1000 retries its booking with the same key.
    let barrier = Arc::new(Barrier::new(2 + USERS));
    let cancellers = {
        let (barrier, pool, event) = (barrier.clone(), pool.clone(), event.clone());
        let by_user: HashMap<String, String> =
            tokens.iter().map(|t| (t.0.clone(), t.1.clone())).collect();
        tokio::spawn(async move {
            barrier.wait().await;
            let mut done = 0;
            for _wave in 0..2 {
                let holders: Vec<(String, String)> = sqlx::query_as(
                    "SELECT id, user_id FROM bookings WHERE event_id = $1 AND status = 'held'",
                )
                .bind(&event)
                .fetch_all(&pool)
                .await
                .unwrap();
                let mut wave = vec![];
                for (bid, uid) in holders.into_iter().take(CANCELLERS - done) {
                    let token = by_user[&uid].clone();
                    wave.push(tokio::spawn(async move {
                        let key = uuid::Uuid::new_v4().to_string();
                        let path = format!("/api/v1/bookings/{bid}/cancel");
                        let r = until_final(addr, "POST", &path, &token, &key).await;
                        let again = until_final(addr, "POST", &path, &token, &key).await;
                        (r, again)
                    }));
                }
                for c in wave {
                    let (r, again) = c.await.unwrap();
                    assert_eq!(r.status, 200, "{}", r.body);
                    assert!(again.replayed && again.status == r.status && again.body == r.body);
                    done += 1;
                }
            }
            done
        })
    };
    let mut retries = vec![];
    for (i, key, original) in first.clone() {
        let (barrier, token, path) = (barrier.clone(), tokens[i].1.clone(), book_path.clone());
        retries.push(tokio::spawn(async move {
            barrier.wait().await;
            (
                until_final(addr, "POST", &path, &token, &key).await,
                original,
            )
        }));
    }
    barrier.wait().await;
    assert_eq!(cancellers.await.unwrap(), CANCELLERS);
    for t in retries {
        let (replay, original) = t.await.unwrap();
        assert!(
            replay.replayed,
            "a retry with the same key is a replay: {}",
            replay.body
        );
        assert_eq!(replay.status, original.status);
        assert_eq!(
            replay.body, original.body,
            "the original answer, byte for byte"
        );
    }
    running.store(false, Ordering::SeqCst);
    sampler.await.unwrap();

    // After: the seats are full again, given to the first 200 in line, one per user.
    let active: Vec<(String, i64)> = sqlx::query_as(
        "SELECT user_id, from_waitlist FROM bookings WHERE event_id = $1
         AND status IN ('held', 'confirmed')",
    )
    .bind(&event)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(active.len(), CAPACITY as usize);
    let users: HashSet<&String> = active.iter().map(|a| &a.0).collect();
    assert_eq!(users.len(), active.len(), "no user holds two seats");
    let promoted: Vec<String> = sqlx::query_scalar(
        "SELECT user_id FROM bookings WHERE event_id = $1 AND from_waitlist = 1",
    )
    .bind(&event)
    .fetch_all(&pool)
    .await
    .unwrap();
    let promoted: HashSet<String> = promoted.into_iter().collect();
    let expected: HashSet<String> = order.iter().take(CANCELLERS).cloned().collect();
    assert_eq!(promoted.len(), CANCELLERS, "one promotion per cancellation");
    assert!(
        promoted == expected,
        "the first 200 in line (premium first) were promoted; {} differ",
        promoted.difference(&expected).count()
    );
    let now_holding: HashSet<String> = active.iter().map(|a| a.0.clone()).collect();
    let second_hundred: HashSet<String> = order[CAPACITY as usize..CANCELLERS]
        .iter()
        .cloned()
        .collect();
    assert!(
        now_holding == second_hundred,
        "places 101-200 of the line hold the seats"
    );
    let taken: i64 = sqlx::query_scalar("SELECT seats_taken FROM booking_events WHERE id = $1")
        .bind(&event)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(taken, CAPACITY);
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    eprintln!(
        "{}: phase 1 (1000 concurrent bookings) {:.2} s; {} samples, max held+confirmed {}; \
         {} connections in this test binary failed below HTTP and were retried",
        b.name(),
        phase1.as_secs_f64(),
        samples.load(Ordering::SeqCst),
        max_seen.load(Ordering::SeqCst),
        TRANSPORT_RETRIES.load(Ordering::SeqCst)
    );
}
