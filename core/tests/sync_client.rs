//! The device sync client against an in-process responder: automerge-repo protocol v1 over a
//! WebSocket (tokio-tungstenite + `Connection::responder` + an in-memory document map) and a
//! tiny hyper server for blobs and outbox commands, both on one port as the real server has them.
//! Nothing here depends on `fitedge-server`.
#![cfg(feature = "net")]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automerge::{AutoCommit, Automerge, ChangeHash, ReadDoc, ROOT};
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use fitedge_core::crypto::StorageKey;
use fitedge_core::db::Store;
use fitedge_core::sample::{Reading, Sample};
use fitedge_core::sync::client::{
    outbox_flush, sync_once, sync_with_retry, Sleeper, SyncConfig, SyncError,
};
use fitedge_core::sync::docs::{self, set_text};
use fitedge_core::sync::local::{sha256_hex, LocalKind};
use fitedge_core::sync::outbox::OutboxStatus;
use fitedge_core::sync::protocol::{Connection, DocumentId, Event, Message, PeerId, PeerMetadata};
use fitedge_core::time::{Clock, ManualClock, Timestamp};
use fitedge_core::workout::{Workout, WorkoutConfig, WorkoutId};
use fitedge_core::{Profile, Sport};

const T0: i64 = 1_763_700_000_000;
const TOKEN: &str = "device-token";
/// The user the token belongs to (`GET /api/v1/me`).
const USER: &str = "7d1e2b7a-5c3f-4e8a-9b1d-2f6a0c4e8d10";

// ------------------------------------------------------------------------------- responder

#[derive(Default)]
struct ServerState {
    docs: HashMap<DocumentId, Automerge>,
    blobs: HashMap<String, Vec<u8>>,
    /// Drop the socket (no close frame) once this many frames arrived on one link.
    drop_after_frames: Option<usize>,
    /// Serve these bytes instead of the stored blob.
    corrupt: HashMap<String, Vec<u8>>,
    /// Answers to outbox commands, in order: (status, retry-after, body).
    scripted: VecDeque<(u16, Option<u64>, String)>,
    /// Outbox requests seen: (method, path, idempotency key, body).
    commands: Vec<(String, String, String, String)>,
    ws_links: usize,
    /// After the join, answer nothing but keep the link busy with a ping every 50 ms.
    trickle: bool,
}

type Shared = Arc<Mutex<ServerState>>;

async fn start_server() -> (String, Shared) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state: Shared = Arc::default();
    let s = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 24];
                let n = stream.peek(&mut head).await.unwrap_or(0);
                if head[..n].starts_with(b"GET /api/v1/sync ")
                    || head[..n].starts_with(b"GET /api/v1/sync?")
                {
                    serve_ws(stream, s).await;
                } else {
                    serve_http(stream, s).await;
                }
            });
        }
    });
    (url, state)
}

fn authorized(value: Option<&str>) -> bool {
    value == Some(&format!("Bearer {TOKEN}"))
}

async fn serve_ws(stream: TcpStream, state: Shared) {
    #[allow(clippy::result_large_err)]
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if authorized(auth) {
            Ok(resp)
        } else {
            let mut e = ErrorResponse::new(Some("unauthorized".into()));
            *e.status_mut() = hyper::StatusCode::UNAUTHORIZED;
            Err(e)
        }
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else {
        return;
    };
    let (drop_after, trickle) = {
        let mut st = state.lock().unwrap();
        st.ws_links += 1;
        (st.drop_after_frames, st.trickle)
    };
    let mut conn = Connection::responder(
        PeerId::from("server"),
        Some(PeerMetadata {
            storage_id: Some("server-storage".into()),
            is_ephemeral: false,
        }),
    );
    let mut frames = 0;
    while let Some(Ok(msg)) = ws.next().await {
        let WsMessage::Binary(b) = msg else { continue };
        frames += 1;
        if drop_after.is_some_and(|n| frames > n) {
            return; // the socket is dropped mid-round, no close frame
        }
        let mut out = vec![];
        match conn.receive(&b).unwrap() {
            Event::Joined { reply, .. } if trickle => {
                if ws
                    .send(WsMessage::Binary(reply.encode().into()))
                    .await
                    .is_err()
                {
                    return;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if ws.send(WsMessage::Ping(vec![1].into())).await.is_err() {
                        return;
                    }
                }
            }
            Event::Joined { reply, .. } => out.push(reply),
            Event::Sync {
                document_id,
                message,
                request,
            } => {
                let mut st = state.lock().unwrap();
                if request && !st.docs.contains_key(&document_id) {
                    out.push(conn.doc_unavailable(&document_id).unwrap());
                } else {
                    let doc = st.docs.entry(document_id).or_default();
                    conn.receive_sync(&document_id, doc, message).unwrap();
                    if let Some(m) = conn.generate(&document_id, doc).unwrap() {
                        out.push(m);
                    }
                }
            }
            _ => {}
        }
        for m in out {
            if ws.send(WsMessage::Binary(m.encode().into())).await.is_err() {
                return;
            }
        }
    }
}

async fn serve_http(stream: TcpStream, state: Shared) {
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let state = state.clone();
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let key = req
                .headers()
                .get("x-idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
            let mut resp = hyper::Response::builder();
            let (status, out) = if !authorized(auth.as_deref()) {
                (401, Vec::new())
            } else if method == "GET" && path == "/api/v1/me" {
                (
                    200,
                    serde_json::to_vec(&serde_json::json!({"id": USER})).unwrap(),
                )
            } else if method == "GET" && path == "/api/v1/sync/docs" {
                // The server's listing: every document it holds (one user here).
                let st = state.lock().unwrap();
                let mut ids: Vec<String> = st.docs.keys().map(|id| id.to_string()).collect();
                ids.sort();
                let list: Vec<serde_json::Value> = ids
                    .into_iter()
                    .map(
                        |id| serde_json::json!({"document_id": id, "kind": "?", "access": "owner"}),
                    )
                    .collect();
                (200, serde_json::to_vec(&list).unwrap())
            } else if let Some(sha) = path.strip_prefix("/api/v1/blobs/") {
                let mut st = state.lock().unwrap();
                match method.as_str() {
                    "PUT" if sha256_hex(&body) == sha => {
                        st.blobs.insert(sha.to_string(), body);
                        (201, Vec::new())
                    }
                    "PUT" => (400, b"hash mismatch".to_vec()),
                    _ => match st.corrupt.get(sha).or_else(|| st.blobs.get(sha)) {
                        Some(b) => (200, b.clone()),
                        None => (404, Vec::new()),
                    },
                }
            } else {
                let mut st = state.lock().unwrap();
                st.commands.push((
                    method,
                    path,
                    key,
                    String::from_utf8_lossy(&body).into_owned(),
                ));
                let (status, retry, body) =
                    st.scripted.pop_front().unwrap_or((201, None, "{}".into()));
                if let Some(r) = retry {
                    resp = resp.header("retry-after", r.to_string());
                }
                (status, body.into_bytes())
            };
            Ok::<_, std::convert::Infallible>(
                resp.status(status)
                    .body(Full::new(Bytes::from(out)))
                    .unwrap(),
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

// --------------------------------------------------------------------------------- helpers

fn key() -> StorageKey {
    StorageKey::new(&[7u8; 32]).unwrap()
}

fn device() -> Store {
    Store::open_in_memory(Some(key())).unwrap()
}

fn config(url: &str) -> SyncConfig {
    SyncConfig {
        timeout_ms: 5_000,
        ..SyncConfig::new(url, TOKEN)
    }
}

/// Stores a finished workout of `minutes` (heart rate and power every second); returns its id.
fn record_workout(store: &Store, start_ms: i64, minutes: i64) -> String {
    let mut w = Workout::new(
        WorkoutId::random(),
        Some(Sport::Cycling),
        Profile::default().resolve(),
        WorkoutConfig::import(),
    );
    w.start(Timestamp(start_ms)).unwrap();
    for i in 0..minutes * 60 {
        let t = Timestamp(start_ms + i * 1000);
        w.record(Sample::new(t, Reading::HeartRate { bpm: 130.0 }))
            .unwrap();
        w.record(Sample::new(
            t,
            Reading::Power {
                w: 180.0 + (i % 13) as f64,
            },
        ))
        .unwrap();
    }
    let s = w
        .complete(Timestamp(start_ms + minutes * 60_000))
        .unwrap()
        .clone();
    store
        .save_workout(&s, &w.take_samples(), Timestamp(start_ms))
        .unwrap();
    s.id.0
}

fn heads(store: &Store, id: &DocumentId) -> Vec<ChangeHash> {
    store.load_document(id).unwrap().get_heads()
}

fn text(doc: &Automerge, key: &str) -> String {
    let (_, obj) = doc.get(ROOT, key).unwrap().unwrap();
    doc.text(&obj).unwrap()
}

fn now() -> ManualClock {
    ManualClock::new(Timestamp(T0 + 86_400_000))
}

// ----------------------------------------------------------------------------------- tests

#[tokio::test]
async fn two_devices_edit_one_workout_offline_and_converge() {
    let (url, server) = start_server().await;
    let clock = now();
    let a = device();
    let workout = record_workout(&a, T0, 3);
    let doc_id = a.workout_document_id(&workout).unwrap();
    a.set_workout_text(
        &workout,
        Some("Morning ride"),
        Some("Legs good."),
        clock.now(),
    )
    .unwrap();

    // A publishes: the workout and profile documents, and the chunks the workout references.
    let ra = sync_once(&a, &config(&url), &clock).await.unwrap();
    println!("A first round: {ra:?}");
    assert_eq!(ra.docs_sent, 2, "workout + profile");
    let shas = docs::WorkoutDoc::read(
        &a.load_document(&doc_id).unwrap(),
        &docs::ValidationContext { now: clock.now() },
    )
    .unwrap()
    .chunks
    .into_iter()
    .map(|c| c.sha256)
    .collect::<Vec<_>>();
    assert_eq!(shas.len(), 2, "one heart-rate chunk, one power chunk");
    assert_eq!(ra.blobs_uploaded, 2);
    for sha in &shas {
        assert_eq!(
            server.lock().unwrap().blobs.get(sha).map(|b| sha256_hex(b)),
            Some(sha.clone())
        );
    }
    // Uploaded blobs are remembered: the next round uploads nothing.
    assert_eq!(
        sync_once(&a, &config(&url), &clock)
            .await
            .unwrap()
            .blobs_uploaded,
        0
    );

    // B learns the documents' ids from the server's listing and fetches them; one chunk is
    // served corrupted and must be refused.
    let b = device();
    server
        .lock()
        .unwrap()
        .corrupt
        .insert(shas[0].clone(), b"not the chunk".to_vec());
    let rb = sync_once(&b, &config(&url), &clock).await.unwrap();
    // The profile document is the user's one, whose id B derived itself.
    assert_eq!(rb.docs_discovered, 1, "A's workout: {rb:?}");
    println!("B first round: {rb:?}");
    // Neither device has profile values: both made the identical profile document.
    assert_eq!(rb.docs_received, 1, "A's workout");
    assert_eq!(rb.blobs_downloaded, 1);
    assert_eq!(rb.errors.len(), 1, "{:?}", rb.errors);
    assert!(b.blob(&shas[0]).unwrap().is_none());
    server.lock().unwrap().corrupt.clear();
    let rb2 = sync_once(&b, &config(&url), &clock).await.unwrap();
    assert_eq!((rb2.blobs_downloaded, rb2.errors.len()), (1, 0));
    assert_eq!(b.blob(&shas[0]).unwrap(), a.blob(&shas[0]).unwrap());
    assert_eq!(heads(&a, &doc_id), heads(&b, &doc_id));
    let listed = b.documents().unwrap();
    assert_eq!(
        listed.len(),
        2,
        "the workout document and the user's profile"
    );
    let w = listed
        .iter()
        .find(|d| d.kind == LocalKind::Workout)
        .unwrap();
    assert_eq!(w.workout_id.as_deref(), Some(workout.as_str()));

    // Both edit title and notes while offline.
    a.set_workout_text(
        &workout,
        Some("Morning ride by the lake"),
        Some("Legs good. Hydrated well."),
        clock.now(),
    )
    .unwrap();
    b.set_workout_text(
        &workout,
        Some("Easy Morning ride"),
        Some("Cold start. Legs good."),
        clock.now(),
    )
    .unwrap();
    assert_ne!(heads(&a, &doc_id), heads(&b, &doc_id));

    sync_once(&a, &config(&url), &clock).await.unwrap();
    sync_once(&b, &config(&url), &clock).await.unwrap();
    sync_once(&a, &config(&url), &clock).await.unwrap();

    let (da, db) = (
        a.load_document(&doc_id).unwrap(),
        b.load_document(&doc_id).unwrap(),
    );
    let server_heads = server.lock().unwrap().docs[&doc_id].get_heads();
    assert_eq!(da.get_heads(), db.get_heads());
    assert_eq!(da.get_heads(), server_heads);
    assert_eq!(text(&da, "title"), "Easy Morning ride by the lake");
    assert_eq!(text(&da, "notes"), "Cold start. Legs good. Hydrated well.");
    assert_eq!(text(&da, "title"), text(&db, "title"));
    assert_eq!(text(&da, "notes"), text(&db, "notes"));
    // The read model follows the document.
    let summary = a.summary(&workout).unwrap();
    assert_eq!(
        summary.title.as_deref(),
        Some("Easy Morning ride by the lake")
    );
    assert_eq!(
        summary.notes.as_deref(),
        Some("Cold start. Legs good. Hydrated well.")
    );
}

#[tokio::test]
async fn an_interrupted_round_resumes_and_converges() {
    let (url, server) = start_server().await;
    let clock = now();
    let a = device();
    let ids: Vec<String> = (0..20)
        .map(|i| record_workout(&a, T0 + i * 3_600_000, 2))
        .collect();
    sync_once(&a, &config(&url), &clock).await.unwrap();

    // Another device renames every workout on the server; A writes notes offline.
    {
        let mut st = server.lock().unwrap();
        for (n, doc) in st.docs.values_mut().enumerate() {
            if docs::kind_of(doc).unwrap().0 != docs::DocKind::Workout {
                continue;
            }
            let mut ac = AutoCommit::load(&doc.save()).unwrap();
            set_text(&mut ac, "title", &format!("renamed {n}")).unwrap();
            *doc = ac.document().clone();
        }
    }
    for id in &ids {
        a.set_workout_text(id, None, Some("offline note"), clock.now())
            .unwrap();
    }

    // The link drops after join + 10 messages.
    server.lock().unwrap().drop_after_frames = Some(11);
    let err = sync_once(&a, &config(&url), &clock).await.unwrap_err();
    assert!(matches!(err, SyncError::Network(_)), "{err:?}");
    let renamed = ids
        .iter()
        .filter(|id| {
            a.summary(id)
                .unwrap()
                .title
                .is_some_and(|t| t.starts_with("renamed"))
        })
        .count();
    println!("after the interrupted round, {renamed} of 20 renames had arrived and were kept");
    assert!(renamed < 20);

    server.lock().unwrap().drop_after_frames = None;
    let r = sync_once(&a, &config(&url), &clock).await.unwrap();
    println!("resumed round: {r:?}");
    // What the interrupted round got was kept: the resumed round fetched only the rest.
    assert_eq!(renamed as u64 + r.docs_received, 20);
    let st = server.lock().unwrap();
    for id in &ids {
        let doc_id = a.workout_document_id(id).unwrap();
        let mine = a.load_document(&doc_id).unwrap();
        assert_eq!(mine.get_heads(), st.docs[&doc_id].get_heads());
        assert!(text(&mine, "title").starts_with("renamed"));
        assert_eq!(text(&mine, "notes"), "offline note");
        assert_eq!(text(&st.docs[&doc_id], "notes"), "offline note");
    }
    assert_eq!(st.ws_links, 3);
}

#[tokio::test]
async fn a_reconnect_with_1000_unchanged_documents_sends_little() {
    let (url, _server) = start_server().await;
    let clock = now();
    let a = device();
    for i in 0..1000_u32 {
        let id = DocumentId::random();
        let mut doc = docs::new_workout(
            None,
            uuid::Uuid::from_bytes(*id.as_bytes()),
            Sport::Running,
            Timestamp(T0 + i64::from(i) * 60_000),
        )
        .unwrap();
        set_text(&mut doc, "title", &format!("Run {i}")).unwrap();
        a.save_document(&id, doc.document(), clock.now()).unwrap();
    }
    let first = sync_once(&a, &config(&url), &clock).await.unwrap();
    // Every document's sync state is kept for this server, holding the heads now shared.
    let server_key = url.trim_start_matches("http://");
    for d in a.documents().unwrap() {
        let id: DocumentId = d.doc_id.parse().unwrap();
        let kept = a
            .sync_state(server_key, &id)
            .unwrap()
            .expect("sync state kept");
        let shared = automerge::sync::State::decode(&kept).unwrap().shared_heads;
        assert_eq!(shared, heads(&a, &id));
    }
    let again = sync_once(&a, &config(&url), &clock).await.unwrap();
    let docs = a.documents().unwrap().len() as u64;
    println!(
        "{docs} documents: first round sent {} bytes in {} messages, received {}; \
         reconnect sent {} bytes in {} messages ({:.1} bytes per document), received {}",
        first.bytes_sent,
        first.messages_sent,
        first.bytes_received,
        again.bytes_sent,
        again.messages_sent,
        again.bytes_sent as f64 / docs as f64,
        again.bytes_received
    );
    assert_eq!(docs, 1001, "1,000 workouts and the profile");
    assert_eq!((again.docs_sent, again.docs_received), (0, 0));
    // One `join` and exactly one message per document: nothing is resent.
    assert_eq!(again.messages_sent, 1 + docs);
    // Bound: per document one `sync` envelope (measured below: type, our peer id, the
    // server's, a documentId) around an automerge sync message that carries no change: our one
    // head (32 bytes), an empty `need`, one `have` holding the restored shared head (32 bytes)
    // and an empty bloom filter, and length prefixes: about 75 bytes; 100 allowed. The `join`
    // is under 200 bytes.
    let envelope = Message::Sync {
        sender_id: PeerId(a.sync_identity().unwrap().0),
        target_id: PeerId::from("server"),
        document_id: DocumentId::random(),
        data: vec![],
    }
    .encode()
    .len() as u64;
    println!("bound: {envelope} bytes of envelope + 100 per document");
    assert!(
        again.bytes_sent <= 200 + docs * (envelope + 100),
        "{} bytes",
        again.bytes_sent
    );
    assert!(again.bytes_sent * 2 < first.bytes_sent);
}

/// A server that keeps the link busy without ever finishing the round is caught by the
/// round's own deadline, not only a silent one by the per-frame timeout.
#[tokio::test]
async fn a_round_that_never_finishes_ends_at_its_deadline() {
    let (url, state) = start_server().await;
    state.lock().unwrap().trickle = true;
    let store = device();
    record_workout(&store, T0, 2);
    let config = SyncConfig {
        timeout_ms: 500,
        round_timeout_ms: 1_500,
        ..config(&url)
    };
    let clock = now();
    let r = tokio::time::timeout(Duration::from_secs(20), sync_once(&store, &config, &clock))
        .await
        .expect("the round hung past its deadline");
    match r {
        Err(SyncError::Network(m)) => assert!(m.contains("did not finish within"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unauthorized_is_reported_and_never_retried() {
    let (url, _server) = start_server().await;
    let clock = now();
    let a = device();
    record_workout(&a, T0, 2);
    let bad = SyncConfig {
        token: "expired".into(),
        ..config(&url)
    };
    let sleeper = RecordingSleeper::new(&clock);
    let err = sync_with_retry(&a, &bad, &clock, &sleeper, &mut || 0.5, 5)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SyncError::Unauthorized { status: 401 }),
        "{err:?}"
    );
    assert!(sleeper.slept.lock().unwrap().is_empty());
    // A device with nothing to upload is refused as early (asking who the user is).
    let b = device();
    let err = sync_once(&b, &bad, &clock).await.unwrap_err();
    assert!(
        matches!(err, SyncError::Unauthorized { status: 401 }),
        "{err:?}"
    );
}

#[derive(Debug)]
struct RecordingSleeper<'a> {
    clock: &'a ManualClock,
    slept: Mutex<Vec<u64>>,
}

impl<'a> RecordingSleeper<'a> {
    fn new(clock: &'a ManualClock) -> Self {
        RecordingSleeper {
            clock,
            slept: Mutex::default(),
        }
    }
}

impl Sleeper for RecordingSleeper<'_> {
    fn sleep(&self, ms: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.slept.lock().unwrap().push(ms);
        self.clock.advance_secs(ms as f64 / 1000.0);
        Box::pin(async {})
    }
}

#[tokio::test]
async fn reconnects_back_off_with_jitter_on_the_injected_clock() {
    // A port nobody listens on: every round fails on the network at once.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let clock = now();
    let start = clock.now();
    let a = device();
    let sleeper = RecordingSleeper::new(&clock);
    let mut fractions = [0.0, 1.0, 0.5, 0.25, 0.0, 1.0].into_iter();
    let err = sync_with_retry(
        &a,
        &config(&format!("http://127.0.0.1:{port}")),
        &clock,
        &sleeper,
        &mut || fractions.next().unwrap(),
        6,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SyncError::Network(_)), "{err:?}");
    // Ceilings 0.5, 1, 2, 4, 8 s; each wait is half its ceiling plus the jitter's share of the
    // other half. Six attempts, five waits.
    let slept = sleeper.slept.lock().unwrap().clone();
    assert_eq!(slept, [250, 1_000, 1_500, 2_500, 4_000]);
    assert_eq!(clock.now().0 - start.0, 9_250);
}

#[tokio::test]
async fn the_outbox_is_sent_in_order_with_its_idempotency_key() {
    let (url, server) = start_server().await;
    let clock = now();
    let a = device();
    let kudos = a
        .outbox_enqueue(
            "POST",
            "/api/v1/kudos",
            Some("{\"workout\":\"w1\"}"),
            clock.now(),
        )
        .unwrap();
    let comment = a
        .outbox_enqueue(
            "POST",
            "/api/v1/comments",
            Some("{\"text\":\"\"}"),
            clock.now(),
        )
        .unwrap();
    server.lock().unwrap().scripted = VecDeque::from([
        (503, Some(7), "busy".to_string()),
        (201, None, "{\"id\":1}".to_string()),
        (422, None, "{\"error\":\"empty comment\"}".to_string()),
    ]);
    let r = outbox_flush(&a, &config(&url), &clock).await.unwrap();
    assert_eq!((r.sent, r.failed, r.pending), (0, 0, 2), "503: both wait");
    clock.advance_secs(6.999);
    let r = outbox_flush(&a, &config(&url), &clock).await.unwrap();
    assert_eq!(
        (r.sent, r.failed, r.pending),
        (0, 0, 2),
        "Retry-After: 7 not yet over"
    );
    clock.advance_secs(0.001);
    let r = outbox_flush(&a, &config(&url), &clock).await.unwrap();
    assert_eq!((r.sent, r.failed, r.pending), (1, 1, 0));
    let seen = server.lock().unwrap().commands.clone();
    let keys: Vec<&str> = seen.iter().map(|c| c.2.as_str()).collect();
    assert_eq!(
        keys,
        [
            kudos.idempotency_key.as_str(),
            kudos.idempotency_key.as_str(),
            comment.idempotency_key.as_str()
        ]
    );
    assert_eq!(seen[0].3, "{\"workout\":\"w1\"}");
    let listed = a.outbox_list().unwrap();
    assert_eq!(listed[0].status, OutboxStatus::Sent);
    assert_eq!(listed[0].attempts, 2);
    assert_eq!(listed[1].status, OutboxStatus::Failed);
    assert_eq!(
        listed[1].response_body.as_deref(),
        Some("{\"error\":\"empty comment\"}")
    );
}

// ------------------------------------------------------- received workouts and the profile

/// What `list` shows of every workout, in order.
fn listed(store: &Store) -> Vec<fitedge_core::store::WorkoutListItem> {
    store
        .list(&fitedge_core::store::ListFilter::default(), 100, None)
        .unwrap()
        .items
}

#[tokio::test]
async fn a_workout_recorded_on_one_device_enters_the_others_history() {
    let (url, _server) = start_server().await;
    let clock = now();
    let (a, b) = (device(), device());
    let workout = record_workout(&a, T0, 3);
    a.set_workout_text(&workout, Some("Hill repeats"), Some("Windy."), clock.now())
        .unwrap();
    sync_once(&a, &config(&url), &clock).await.unwrap();
    let rb = sync_once(&b, &config(&url), &clock).await.unwrap();
    println!("B's first round: {rb:?}");
    assert_eq!(rb.errors, Vec::<String>::new());
    assert_eq!(
        (rb.workouts_added, rb.workouts_updated, rb.workouts_removed),
        (1, 0, 0)
    );

    // `list` on B shows A's workout with A's figures, through B's own read model.
    let (la, lb) = (listed(&a), listed(&b));
    assert_eq!(lb.len(), 1);
    assert_eq!(la, lb);
    assert_eq!(lb[0].title.as_deref(), Some("Hill repeats"));
    // `summary`: the document's figures as A computed them, and the heart-rate figures the
    // document does not carry (zones, TRIMP) computed on B from the sealed chunks it opened.
    let (sa, sb) = (a.summary(&workout).unwrap(), b.summary(&workout).unwrap());
    println!(
        "A: avg HR {:?}, zones {:?}, TRIMP {:?}; B: avg HR {:?}, zones {:?}, TRIMP {:?}",
        sa.metrics.avg_hr_bpm,
        sa.metrics.hr_zones,
        sa.metrics.trimp,
        sb.metrics.avg_hr_bpm,
        sb.metrics.hr_zones,
        sb.metrics.trimp
    );
    assert_eq!(sb.notes.as_deref(), Some("Windy."));
    assert_eq!(
        (
            sb.start_time,
            sb.end_time,
            sb.samples,
            sb.rejected,
            sb.flagged
        ),
        (
            sa.start_time,
            sa.end_time,
            sa.samples,
            sa.rejected,
            sa.flagged
        )
    );
    let (ma, mb) = (&sa.metrics, &sb.metrics);
    assert_eq!(
        (
            ma.sport,
            ma.elapsed_s,
            ma.timer_s,
            ma.moving_s,
            ma.calories_kcal
        ),
        (
            mb.sport,
            mb.elapsed_s,
            mb.timer_s,
            mb.moving_s,
            mb.calories_kcal
        )
    );
    assert_eq!(
        (ma.avg_hr_bpm, ma.max_hr_bpm, ma.avg_power_w, ma.max_power_w),
        (mb.avg_hr_bpm, mb.max_hr_bpm, mb.avg_power_w, mb.max_power_w)
    );
    assert!(
        mb.hr_zones.is_some(),
        "computed from the opened heart-rate chunk"
    );
    assert_eq!(ma.hr_zones, mb.hr_zones);
    assert_eq!(ma.trimp, mb.trimp);
    assert_eq!(ma.normalized_power_w, mb.normalized_power_w);
    assert_eq!(ma.best_powers, mb.best_powers);
    // The samples themselves, heart rate included, open on B with the shared key.
    let hr = |s: &Store| {
        s.samples_of(&workout, &[fitedge_core::Channel::HeartRate])
            .unwrap()
    };
    assert_eq!(hr(&b).len(), 180);
    assert_eq!(hr(&a), hr(&b));
    assert_eq!(a.samples(&workout).unwrap(), b.samples(&workout).unwrap());
    let received = b.received_workouts().unwrap();
    assert_eq!(received.len(), 1);
    assert!(received[0].samples_stored && received[0].problem.is_none());
    // Personal records: the chosen sport, every channel clean, no pause: judged on B too.
    let records = |s: &Store| {
        let mut r: Vec<(String, f64)> = s
            .personal_records()
            .unwrap()
            .into_iter()
            .map(|r| (r.record, r.value))
            .collect();
        r.sort_by(|x, y| x.0.cmp(&y.0));
        r
    };
    assert!(!records(&b).is_empty());
    assert_eq!(records(&a), records(&b));

    // Idempotent: more rounds, and the same document saved again, change nothing.
    for _ in 0..2 {
        let r = sync_once(&b, &config(&url), &clock).await.unwrap();
        assert_eq!(
            (r.workouts_added, r.workouts_updated, r.docs_received),
            (0, 0, 0),
            "{r:?}"
        );
    }
    let doc_id = b.workout_document_id(&workout).unwrap();
    let copy = Automerge::load(&a.load_document(&doc_id).unwrap().save()).unwrap();
    b.save_document(&doc_id, &copy, clock.now()).unwrap();
    assert_eq!(b.apply_documents(clock.now()).unwrap(), vec![]);
    assert_eq!(listed(&b), lb);
    assert_eq!(b.workout_count().unwrap(), 1);
    assert_eq!(b.summary(&workout).unwrap(), sb);
    assert_eq!(records(&b), records(&a));
    assert_eq!(
        b.samples(&workout).unwrap().len(),
        a.samples(&workout).unwrap().len()
    );
}

#[tokio::test]
async fn edits_and_deletions_on_one_device_update_the_others_history() {
    let (url, _server) = start_server().await;
    let clock = now();
    let (a, b) = (device(), device());
    let workout = record_workout(&a, T0, 2);
    sync_once(&a, &config(&url), &clock).await.unwrap();
    sync_once(&b, &config(&url), &clock).await.unwrap();
    assert_eq!(listed(&b)[0].title, None);

    // Edited on A: B's entry follows, and only that entry moves.
    a.set_workout_text(&workout, Some("Recovery spin"), Some("Easy."), clock.now())
        .unwrap();
    sync_once(&a, &config(&url), &clock).await.unwrap();
    let r = sync_once(&b, &config(&url), &clock).await.unwrap();
    assert_eq!(
        (r.workouts_added, r.workouts_updated, r.workouts_removed),
        (0, 1, 0),
        "{r:?}"
    );
    assert_eq!(listed(&b)[0].title.as_deref(), Some("Recovery spin"));
    assert_eq!(b.summary(&workout).unwrap().notes.as_deref(), Some("Easy."));
    assert_eq!(listed(&a), listed(&b));

    // Edited on B (a workout it did not record): A's own entry follows.
    b.set_workout_text(&workout, Some("Recovery spin, flat"), None, clock.now())
        .unwrap();
    sync_once(&b, &config(&url), &clock).await.unwrap();
    sync_once(&a, &config(&url), &clock).await.unwrap();
    assert_eq!(listed(&a)[0].title.as_deref(), Some("Recovery spin, flat"));
    assert_eq!(listed(&a), listed(&b));

    // Deleted on B: gone from A too, with its records, and a later round does not bring it
    // back.
    assert!(!a.personal_records().unwrap().is_empty());
    b.delete_workout(&workout).unwrap();
    sync_once(&b, &config(&url), &clock).await.unwrap();
    let r = sync_once(&a, &config(&url), &clock).await.unwrap();
    assert_eq!(r.workouts_removed, 1, "{r:?}");
    assert!(listed(&a).is_empty());
    assert!(a.personal_records().unwrap().is_empty());
    assert!(a.samples(&workout).is_err());
    for d in [&a, &b] {
        sync_once(d, &config(&url), &clock).await.unwrap();
        assert!(listed(d).is_empty());
    }
}

/// Deleting a workout cancels its document; importing the same file again (the same workout
/// id) must bring the document back, or the other devices would never see the workout again
/// and the next sync could remove it here too.
#[tokio::test]
async fn a_workout_stored_again_after_deletion_comes_back_on_the_other_devices() {
    let (url, _server) = start_server().await;
    let clock = now();
    let (a, b) = (device(), device());
    let workout = record_workout(&a, T0, 2);
    let summary = a.summary(&workout).unwrap();
    let samples = a.samples(&workout).unwrap();
    sync_once(&a, &config(&url), &clock).await.unwrap();
    sync_once(&b, &config(&url), &clock).await.unwrap();
    assert_eq!(listed(&b).len(), 1);

    // A title given before the deletion does not come back with the re-import.
    a.set_workout_text(&workout, Some("Old title"), None, clock.now())
        .unwrap();
    a.delete_workout(&workout).unwrap();
    sync_once(&a, &config(&url), &clock).await.unwrap();
    sync_once(&b, &config(&url), &clock).await.unwrap();
    assert!(listed(&b).is_empty());

    // Stored again on A (a re-import gives the same id).
    a.save_workout(&summary, &samples, clock.now()).unwrap();
    for _ in 0..2 {
        sync_once(&a, &config(&url), &clock).await.unwrap();
        assert_eq!(listed(&a).len(), 1, "a sync must not remove it again");
    }
    let r = sync_once(&b, &config(&url), &clock).await.unwrap();
    assert_eq!(r.workouts_added, 1, "{r:?}");
    assert_eq!(listed(&a), listed(&b));
    assert_eq!(listed(&b)[0].title, None);
    assert_eq!(b.samples(&workout).unwrap().len(), samples.len());
}

#[tokio::test]
async fn a_workout_document_that_fails_validation_is_reported_and_not_applied() {
    let (url, server) = start_server().await;
    let clock = now();
    let b = device();
    // Another client's workout of 30 s, "completed": the rules do not record it.
    let id = DocumentId::random();
    let mut doc = docs::new_workout(
        None,
        uuid::Uuid::from_bytes(*id.as_bytes()),
        Sport::Running,
        Timestamp(T0),
    )
    .unwrap();
    docs::complete_workout(
        &mut doc,
        Timestamp(T0 + 30_000),
        &docs::DocSummary {
            elapsed_s: 30.0,
            timer_s: 30.0,
            moving_s: 30.0,
            calories_kcal: 5.0,
            ..docs::DocSummary::default()
        },
        docs::DocValidationCounts::default(),
    )
    .unwrap();
    doc.commit();
    server
        .lock()
        .unwrap()
        .docs
        .insert(id, doc.document().clone());

    let r = sync_once(&b, &config(&url), &clock).await.unwrap();
    println!("{r:?}");
    assert_eq!(r.workouts_added, 0);
    assert!(listed(&b).is_empty());
    let line = r
        .errors
        .iter()
        .find(|e| e.contains(&id.to_string()))
        .expect("the refusal is reported");
    assert!(line.contains("at least one minute"), "{line}");
    let info = b
        .documents()
        .unwrap()
        .into_iter()
        .find(|d| d.doc_id == id.to_string())
        .unwrap();
    assert!(info.problem.unwrap().contains("not applied"));
    // The document itself is kept (it is the user's; a fix made elsewhere will arrive).
    assert_eq!(
        b.load_document(&id).unwrap().get_heads(),
        doc.document().get_heads()
    );
}

#[tokio::test]
async fn a_device_with_another_storage_key_lists_the_workout_and_says_why_it_has_no_samples() {
    let (url, _server) = start_server().await;
    let clock = now();
    let a = device();
    let other = Store::open_in_memory(Some(StorageKey::new(&[9u8; 32]).unwrap())).unwrap();
    let workout = record_workout(&a, T0, 2);
    sync_once(&a, &config(&url), &clock).await.unwrap();
    let r = sync_once(&other, &config(&url), &clock).await.unwrap();
    println!("{r:?}");
    assert_eq!(r.workouts_added, 1);
    assert_eq!(listed(&other), listed(&a), "the document's figures");
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("does not open with this device's storage key")),
        "{:?}",
        r.errors
    );
    assert!(other.samples(&workout).unwrap().is_empty());
    assert!(other.personal_records().unwrap().is_empty());
    let received = other.received_workouts().unwrap();
    assert!(!received[0].samples_stored);
    assert!(received[0].problem.is_some());
    // Said once, not every round.
    let again = sync_once(&other, &config(&url), &clock).await.unwrap();
    assert_eq!(again.errors, Vec::<String>::new());
}

#[tokio::test]
async fn two_devices_make_their_profiles_offline_and_end_with_one() {
    let (url, server) = start_server().await;
    let clock = now();
    let (a, b) = (device(), device());
    // Offline, before either ever synced, each sets up the athlete's profile.
    use fitedge_core::gear::AthleteProfile;
    a.update_profile(
        0,
        &AthleteProfile {
            weight_kg: Some(70.0),
            hr_max_bpm: Some(188),
            ..AthleteProfile::default()
        },
    )
    .unwrap();
    b.update_profile(
        0,
        &AthleteProfile {
            weight_kg: Some(72.0),
            ftp_w: Some(250),
            ..AthleteProfile::default()
        },
    )
    .unwrap();
    record_workout(&a, T0, 2);
    // Without knowing the user, a device makes no profile document at all.
    for d in [&a, &b] {
        d.ensure_documents(clock.now()).unwrap();
        assert!(d
            .documents()
            .unwrap()
            .iter()
            .all(|d| d.kind != LocalKind::Profile));
    }

    sync_once(&a, &config(&url), &clock).await.unwrap();
    sync_once(&b, &config(&url), &clock).await.unwrap();
    sync_once(&a, &config(&url), &clock).await.unwrap();

    let profile_id = docs::profile_document_id(USER);
    let profiles = |s: &Store| -> Vec<String> {
        s.documents()
            .unwrap()
            .into_iter()
            .filter(|d| d.kind == LocalKind::Profile)
            .map(|d| d.doc_id)
            .collect()
    };
    assert_eq!(profiles(&a), vec![profile_id.to_string()]);
    assert_eq!(profiles(&b), vec![profile_id.to_string()]);
    assert_eq!(a.profile_document_id().unwrap(), Some(profile_id));
    let st = server.lock().unwrap();
    let on_server: Vec<&DocumentId> = st
        .docs
        .iter()
        .filter(|(_, d)| docs::kind_of(*d).unwrap().0 == docs::DocKind::Profile)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(on_server, vec![&profile_id]);
    let (pa, pb) = (
        a.load_document(&profile_id).unwrap(),
        b.load_document(&profile_id).unwrap(),
    );
    assert_eq!(pa.get_heads(), pb.get_heads());
    assert_eq!(pa.get_heads(), st.docs[&profile_id].get_heads());
    // Both devices' values merged field by field: B's FTP, A's maximum heart rate, and one
    // weight (the two devices set it concurrently; both show the same one).
    let ctx = docs::ValidationContext { now: clock.now() };
    let p = docs::ProfileDoc::read(&pa, &ctx).unwrap();
    println!("merged physiology: {:?}", p.physiology);
    assert_eq!(p.physiology.ftp_w, Some(250.0));
    assert_eq!(p.physiology.hr_max_bpm, Some(188.0));
    assert!([Some(70.0), Some(72.0)].contains(&p.physiology.weight_kg));
    assert_eq!(docs::ProfileDoc::read(&pb, &ctx).unwrap(), p);
}

#[tokio::test]
async fn a_database_that_synced_as_one_user_refuses_another() {
    let (url, _server) = start_server().await;
    let clock = now();
    let a = device();
    a.set_sync_user("someone-else", clock.now()).unwrap();
    let err = sync_once(&a, &config(&url), &clock).await.unwrap_err();
    assert!(
        matches!(&err, SyncError::Config(m) if m.contains("someone-else") && m.contains(USER)),
        "{err:?}"
    );
    assert!(a
        .documents()
        .unwrap()
        .iter()
        .all(|d| d.heads.is_empty() || {
            // Nothing was sent: no sync state was kept for any document.
            let id: DocumentId = d.doc_id.parse().unwrap();
            a.sync_state(url.trim_start_matches("http://"), &id)
                .unwrap()
                .is_none()
        }));
}

// ------------------------------------------------------------------------------------- TLS

/// The same responder behind a TLS listener (`https://`, `wss://`): tests/sync_client/tls.rs.
#[cfg(feature = "net-tls")]
#[path = "sync_client/tls.rs"]
mod tls;
