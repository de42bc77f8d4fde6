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
//! - `samod_cross_peer` only (the Node harness sets these when it runs this test as the middle
//!   peer): `FITEDGE_INTEROP_DOC_URL`, `FITEDGE_INTEROP_EXPECT`, `FITEDGE_INTEROP_PEER_VALUE`.
//!
//! The samod clients open the WebSocket themselves (tokio-tungstenite, so the upgrade can carry
//! the `Authorization` header) and hand it to samod as a [`Transport`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ReadDoc, Value, ROOT};
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use samod::{
    AutomergeUrl, BackoffConfig, ConnectionId, DialError, Dialer, DialerHandle, DocHandle,
    DocumentId, Repo, Transport,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

type Res<T> = Result<T, String>;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required(name: &str) -> Res<String> {
    env(name).ok_or_else(|| {
        format!("{name} is not set: run through sync-server/scripts/interop.sh (see this file's header)")
    })
}

fn wait_bound() -> Duration {
    let ms = env("FITEDGE_INTEROP_TIMEOUT_MS")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(15_000);
    Duration::from_millis(ms)
}

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> Res<T> {
    let bound = wait_bound();
    tokio::time::timeout(bound, fut)
        .await
        .map_err(|_| format!("timed out after {} ms: {what}", bound.as_millis()))
}

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

/// A string field whether written as text (the JavaScript default) or as a scalar string.
fn read_string(doc: &Automerge, key: &str) -> Option<String> {
    match doc.get(ROOT, key).ok()?? {
        (Value::Scalar(s), _) => s.as_str().map(str::to_owned),
        (Value::Object(ObjType::Text), id) => doc.text(&id).ok(),
        _ => None,
    }
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

/// Waits until `key` reads `expected` in the handle's document.
async fn wait_for(handle: &DocHandle, who: &str, key: &str, expected: &str) -> Res<()> {
    let mut changes = handle.changes();
    let seen =
        |h: &DocHandle| h.with_document(|d| read_string(d, key)).as_deref() == Some(expected);
    bounded(&format!("{who}: {key} = {expected:?}"), async {
        while !seen(handle) {
            if changes.next().await.is_none() {
                break;
            }
        }
    })
    .await?;
    if seen(handle) {
        Ok(())
    } else {
        Err(format!(
            "{who}: the change stream ended before {key} = {expected:?}"
        ))
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

fn nonce() -> String {
    format!("{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
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

async fn cross_peer() -> Res<()> {
    let url = required("FITEDGE_INTEROP_URL")?;
    let doc_url = required("FITEDGE_INTEROP_DOC_URL")?;
    let expect = required("FITEDGE_INTEROP_EXPECT")?;
    let value = required("FITEDGE_INTEROP_PEER_VALUE")?;
    let doc_url: AutomergeUrl = doc_url
        .parse()
        .map_err(|e| format!("FITEDGE_INTEROP_DOC_URL {doc_url}: {e:?}"))?;
    let (peer, handle) = find_as_new_client(
        "samod peer",
        &url,
        env("FITEDGE_INTEROP_TOKEN"),
        doc_url.document_id(),
    )
    .await?;
    wait_for(&handle, "samod peer", "expect", &expect).await?;
    write_string(&handle, "peer", &value)?;
    flushed(&peer, &handle, "samod peer").await?;
    bounded("stop", peer.repo.stop()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a live sync server: sync-server/scripts/interop.sh"]
async fn samod_basic() -> Res<()> {
    basic().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the Node harness (interop.mjs --scenario cross) as the middle peer"]
async fn samod_cross_peer() -> Res<()> {
    cross_peer().await
}
