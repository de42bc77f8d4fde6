//! Interoperability with a live automerge-repo sync server (protocol v1), driven with `samod`,
//! the Rust automerge-repo implementation. Ignored by default: they need a running server. Run
//! them through `sync-server/scripts/interop.sh` (ours, with tokens) or `interop.sh --reference`
//! (the JavaScript reference server), or by hand:
//!
//! ```sh
//! FITEDGE_INTEROP_URL=ws://127.0.0.1:3030 cargo test -p fitedge-tests --test sync_interop -- --ignored samod_basic
//! ```
//!
//! Environment:
//! - `FITEDGE_INTEROP_URL`: the sync endpoint (`ws://host:port/api/v1/sync` for ours).
//! - `FITEDGE_INTEROP_TOKEN`, `FITEDGE_INTEROP_TOKEN_B`: user 1's bearer tokens for clients A and B
//!   (sent as `Authorization: Bearer` on the upgrade); unset means no authentication.
//! - `FITEDGE_INTEROP_TOKEN_OTHER`: user 2's token; when set, user 2 must NOT get user 1's document.
//! - `FITEDGE_INTEROP_TIMEOUT_MS`: bound on each wait (default 15000).
//! - `samod_cross_peer` only (the Node harness and our device client's `device_creates` set these
//!   when they run this test as the middle peer): `FITEDGE_INTEROP_DOC_URL`,
//!   `FITEDGE_INTEROP_EXPECT_KEY` (default `expect`), `FITEDGE_INTEROP_EXPECT`,
//!   `FITEDGE_INTEROP_PEER_KEY` (default `peer`), `FITEDGE_INTEROP_PEER_VALUE`, and optionally
//!   `FITEDGE_INTEROP_DOC_KIND` (the document's `type`).
//! - `samod_creates` only (scenario `samod-device`): `FITEDGE_INTEROP_PEER_CMD`, the command of
//!   the middle peer (our device client's `device_peer` test, `device_interop.rs`); samod writes a
//!   FitEdge workout document, hands the peer its URL with token B, and must see the peer's notes.
//!
//! The samod clients open the WebSocket themselves (tokio-tungstenite, so the upgrade can carry
//! the `Authorization` header) and hand it to samod as a [`Transport`].

mod interop_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT};
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use samod::{
    AutomergeUrl, BackoffConfig, ConnectionId, DialError, Dialer, DialerHandle, DocHandle,
    DocumentId, Repo, Transport,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

use interop_common::{
    bounded, env, nonce, peer_limit, rand_u64, read_string, required, run_peer, wait_bound,
    PeerEnv, PeerTask, Res,
};

/// Opens the WebSocket with tokio-tungstenite, adding `Authorization: Bearer` when a token is set.
#[derive(Debug)]
struct AuthDialer {
    url: samod::Url,
    token: Option<String>,
}

impl Dialer for AuthDialer {
    type Error = tungstenite::Error;

    fn url(&self) -> samod::Url {
        self.url.clone()
    }

    fn connect(&self) -> BoxFuture<'static, Result<Transport, DialError<Self::Error>>> {
        let url = self.url.to_string();
        let token = self.token.clone();
        Box::pin(async move {
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(DialError::PermanentFailure)?;
            if let Some(token) = token {
                let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| {
                    DialError::PermanentFailure(tungstenite::Error::from(
                        tungstenite::http::Error::from(e),
                    ))
                })?;
                request.headers_mut().insert("authorization", value);
            }
            let (ws, _response) = match tokio_tungstenite::connect_async(request).await {
                Ok(ok) => ok,
                // A refused upgrade (401, 403, 404) will not change by retrying.
                Err(e @ tungstenite::Error::Http(_)) => return Err(DialError::PermanentFailure(e)),
                Err(e) => return Err(DialError::transient(e)),
            };
            let (sink, stream) = ws.split();
            let stream = stream
                .filter_map(|msg| async move {
                    match msg {
                        Ok(Message::Binary(bytes)) => Some(Ok(bytes.to_vec())),
                        Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => None,
                        // A close ends the stream; samod sees the connection end.
                        Ok(Message::Close(_)) => None,
                        Ok(Message::Text(text)) => Some(Err(tungstenite::Error::Io(
                            std::io::Error::other(format!("unexpected text frame: {text}")),
                        ))),
                        Err(e) => Some(Err(e)),
                    }
                })
                .boxed();
            let sink = sink.with(|bytes: Vec<u8>| {
                futures::future::ready(Ok::<_, tungstenite::Error>(Message::Binary(bytes.into())))
            });
            Ok(Transport::new(stream, sink))
        })
    }
}

struct Client {
    repo: Repo,
    dialer: DialerHandle<tungstenite::Error>,
}

impl Client {
    async fn connect(name: &str, url: &str, token: Option<String>) -> Res<Self> {
        let repo = Repo::build_tokio().load().await;
        let url =
            samod::Url::parse(url).map_err(|e| format!("bad FITEDGE_INTEROP_URL {url}: {e}"))?;
        let backoff = BackoffConfig {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_retries: Some(5),
        };
        let dialer = repo
            .dial(backoff, Arc::new(AuthDialer { url, token }))
            .map_err(|_| format!("{name}: repo stopped"))?;
        let peer = bounded(
            &format!("{name}: handshake (join/peer)"),
            dialer.established(),
        )
        .await?
        .map_err(|e| format!("{name}: could not connect: {e:?}"))?;
        let _ = peer;
        Ok(Self { repo, dialer })
    }

    fn connection(&self, name: &str) -> Res<ConnectionId> {
        self.dialer
            .connection_id()
            .ok_or_else(|| format!("{name}: no connection"))
    }
}

/// Connects a new client and finds a document, retrying while the server answers doc-unavailable
/// (the creator's sync may still be in flight), within the wait bound. Each retry is a new Repo:
/// a Repo that was told "unavailable" may keep that answer for the peer.
async fn find_as_new_client(
    name: &str,
    url: &str,
    token: Option<String>,
    id: &DocumentId,
) -> Res<(Client, DocHandle)> {
    let bound = wait_bound();
    let start = Instant::now();
    let mut attempts = 0;
    while start.elapsed() < bound {
        attempts += 1;
        let client = Client::connect(name, url, token.clone()).await?;
        let left = bound.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, client.repo.find(id.clone())).await {
            Ok(Ok(Some(handle))) => return Ok((client, handle)),
            Ok(Ok(None)) => {}
            Ok(Err(_)) => return Err(format!("{name}: repo stopped")),
            Err(_) => break,
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), client.repo.stop()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "{name}: document {id} still unavailable after {} ms ({attempts} attempts)",
        bound.as_millis()
    ))
}

/// Writes a string field as text, as the JavaScript library does for plain strings.
fn write_string(handle: &DocHandle, key: &str, value: &str) -> Res<()> {
    handle.with_document(|doc| {
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            let text = tx.put_object(ROOT, key, ObjType::Text)?;
            tx.splice_text(&text, 0, 0, value)?;
            Ok(())
        })
        .map(|_| ())
        .map_err(|e| format!("writing {key}: {:?}", e.error))
    })
}

/// Waits until `key` reads `expected` in the handle's document; a failure says what it read.
async fn wait_for(handle: &DocHandle, who: &str, key: &str, expected: &str) -> Res<()> {
    let mut changes = handle.changes();
    let read = |h: &DocHandle| h.with_document(|d| read_string(d, key));
    let waited = bounded(&format!("{who}: {key} = {expected:?}"), async {
        while read(handle).as_deref() != Some(expected) {
            if changes.next().await.is_none() {
                break;
            }
        }
    })
    .await;
    match (waited, read(handle)) {
        (_, Some(v)) if v == expected => Ok(()),
        (Err(e), seen) => Err(format!("{e}; {key} reads {seen:?}")),
        (Ok(()), seen) => Err(format!(
            "{who}: the change stream ended before {key} = {expected:?}; it reads {seen:?}"
        )),
    }
}

/// Waits until the server has acknowledged everything we have of this document.
async fn flushed(client: &Client, handle: &DocHandle, who: &str) -> Res<()> {
    let conn = client.connection(who)?;
    bounded(
        &format!("{who}: server acknowledges our changes"),
        handle.they_have_our_changes(conn),
    )
    .await
}

async fn basic() -> Res<()> {
    let url = required("FITEDGE_INTEROP_URL")?;
    let token_a = env("FITEDGE_INTEROP_TOKEN");
    let token_b = env("FITEDGE_INTEROP_TOKEN_B").or_else(|| token_a.clone());
    let a = Client::connect("A", &url, token_a).await?;

    let value_a = format!("a-{}", nonce());
    let value_b = format!("b-{}", nonce());
    let ha = a
        .repo
        .create(Automerge::new())
        .await
        .map_err(|_| "A: repo stopped".to_owned())?;
    write_string(&ha, "title", "samod interop")?;
    write_string(&ha, "a", &value_a)?;
    flushed(&a, &ha, "A").await?;

    let (b, hb) = find_as_new_client("B", &url, token_b, ha.document_id()).await?;
    wait_for(&hb, "B", "a", &value_a).await?;
    write_string(&hb, "b", &value_b)?;
    wait_for(&ha, "A", "b", &value_b).await?;

    if let Some(other) = env("FITEDGE_INTEROP_TOKEN_OTHER") {
        let o = Client::connect("other user", &url, Some(other)).await?;
        match bounded("other user: find", o.repo.find(ha.document_id().clone())).await? {
            Ok(None) => {}
            Ok(Some(h)) => {
                let got = h.with_document(|d| read_string(d, "a"));
                return Err(format!("another user got user 1's document (a = {got:?})"));
            }
            Err(_) => return Err("other user: repo stopped".to_owned()),
        }
        bounded("stop", o.repo.stop()).await?;
    }
    bounded("stop A", a.repo.stop()).await?;
    bounded("stop B", b.repo.stop()).await?;
    Ok(())
}

/// The middle peer of a scenario another implementation drives (see [`PeerEnv`]): find the
/// document, check the expected field, write ours, wait until the server has it.
async fn cross_peer() -> Res<()> {
    let url = required("FITEDGE_INTEROP_URL")?;
    let task = PeerEnv::read()?;
    let doc_url: AutomergeUrl = task
        .doc_url
        .parse()
        .map_err(|e| format!("FITEDGE_INTEROP_DOC_URL {}: {e:?}", task.doc_url))?;
    let (peer, handle) = find_as_new_client(
        "samod peer",
        &url,
        env("FITEDGE_INTEROP_TOKEN"),
        doc_url.document_id(),
    )
    .await?;
    wait_for(&handle, "samod peer", &task.expect_key, &task.expect).await?;
    if let Some(kind) = &task.doc_kind {
        let ty = handle.with_document(|d| read_string(d, "type"));
        if ty.as_deref() != Some(kind.as_str()) {
            return Err(format!(
                "samod peer: expected a {kind} document; type reads {ty:?}"
            ));
        }
    }
    write_string(&handle, &task.peer_key, &task.peer_value)?;
    flushed(&peer, &handle, "samod peer").await?;
    bounded("stop", peer.repo.stop()).await?;
    Ok(())
}

/// A FitEdge workout document (schema version 2, completed, 30 minutes ending an hour ago)
/// written with automerge's own API, as a third-party Rust client would: text for strings,
/// integers for times and counts, floats for measures.
fn workout_document(title: &str) -> Res<Automerge> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| format!("clock: {e}"))?
        .as_millis();
    let start = i64::try_from(now_ms).map_err(|e| format!("clock: {e}"))? - 5_400_000;
    let (a, b) = (rand_u64(), rand_u64());
    let id = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    );
    let mut doc = Automerge::new();
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        tx.put(ROOT, "type", "fitedge.workout")?;
        tx.put(ROOT, "schemaVersion", 2_i64)?;
        tx.put(ROOT, "id", id.as_str())?;
        tx.put(ROOT, "sport", "running")?;
        tx.put(ROOT, "state", "completed")?;
        let t = tx.put_object(ROOT, "title", ObjType::Text)?;
        tx.splice_text(&t, 0, 0, title)?;
        tx.put_object(ROOT, "notes", ObjType::Text)?;
        tx.put(ROOT, "startTime", start)?;
        tx.put(ROOT, "endTime", start + 1_800_000)?;
        let s = tx.put_object(ROOT, "summary", ObjType::Map)?;
        for (k, v) in [
            ("elapsedS", 1800.0),
            ("timerS", 1800.0),
            ("movingS", 1750.0),
            ("caloriesKcal", 320.0),
            ("distanceM", 5000.5),
        ] {
            tx.put(&s, k, v)?;
        }
        tx.put_object(ROOT, "laps", ObjType::List)?;
        let v = tx.put_object(ROOT, "validation", ObjType::Map)?;
        for k in ["samples", "rejected", "flagged"] {
            tx.put(&v, k, 0_i64)?;
        }
        tx.put_object(ROOT, "chunks", ObjType::List)?;
        Ok(())
    })
    .map_err(|e| format!("writing the workout document: {:?}", e.error))?;
    Ok(doc)
}

/// samod creates a workout document and runs `FITEDGE_INTEROP_PEER_CMD` (our device client,
/// `device_interop.rs` `device_peer`) on it with user 1's other session: the peer must find it
/// through the server's listing, read its title and write its notes; samod must see the notes.
async fn creates() -> Res<()> {
    let url = required("FITEDGE_INTEROP_URL")?;
    let peer_cmd = required("FITEDGE_INTEROP_PEER_CMD")?;
    let token = env("FITEDGE_INTEROP_TOKEN");
    let token_b = env("FITEDGE_INTEROP_TOKEN_B")
        .or_else(|| token.clone())
        .unwrap_or_default();
    let a = Client::connect("samod", &url, token).await?;
    let title = format!("from-samod-{}", nonce());
    let value = format!("from-peer-{}", nonce());
    let handle = a
        .repo
        .create(workout_document(&title)?)
        .await
        .map_err(|_| "samod: repo stopped".to_owned())?;
    flushed(&a, &handle, "samod").await?;
    let doc_url = handle.url().to_string();
    let peer_out = run_peer(
        &peer_cmd,
        &PeerTask {
            token: &token_b,
            doc_url: &doc_url,
            doc_kind: "fitedge.workout",
            expect_key: "title",
            expect: &title,
            peer_key: "notes",
            peer_value: &value,
        },
        peer_limit(),
    )
    .await
    .map_err(|e| format!("samod: the peer failed on {doc_url}: {e}"))?;
    #[allow(clippy::print_stderr)]
    {
        eprintln!("---- peer stdout (tail) ----\n{peer_out}");
    }
    wait_for(&handle, "samod", "notes", &value).await?;
    bounded("stop", a.repo.stop()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a live sync server: sync-server/scripts/interop.sh"]
async fn samod_basic() -> Res<()> {
    basic().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as the middle peer by interop.mjs --scenario cross and by device_interop.rs"]
async fn samod_cross_peer() -> Res<()> {
    cross_peer().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by sync-server/scripts/interop.sh with FITEDGE_INTEROP_PEER_CMD (scenario samod-device)"]
async fn samod_creates() -> Res<()> {
    creates().await
}
