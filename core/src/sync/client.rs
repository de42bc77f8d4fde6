//! The device's sync client and outbox sender: the only I/O in this crate, behind the cargo
//! feature `net` (tokio, tokio-tungstenite, hyper; `https://` and `wss://` with the feature
//! `net-tls`: rustls, see [`SyncConfig::extra_root_pem`]). Everything it decides with is
//! elsewhere and I/O-free: the protocol state machine ([`crate::sync::protocol`]), the stored
//! documents and sync states ([`crate::sync::local`]), the outbox state machine
//! ([`crate::sync::outbox`]) and the backoff schedule ([`crate::sync::backoff`]).
//!
//! # One round ([`sync_once`])
//! 0. Learn who the user is (`GET /api/v1/me`): the profile document's id derives from the
//!    user id (ADR 0012), and a database that synced as one user refuses to sync as another.
//!    A server without the route (404) is synced without a profile document.
//! 1. Make any missing documents (every stored workout, the user's profile).
//! 2. Upload the chunk blobs local workout documents reference and the server has not
//!    confirmed: `PUT /api/v1/blobs/{sha256}` (200, 201 and 204 count as done and are
//!    remembered per server).
//! 3. Learn the documents the server holds for this user (`GET /api/v1/sync/docs`: owned and
//!    shared) and track the ids this device has never seen, so the round asks for them: the
//!    protocol has no listing, and without this a new phone would never see the watch's
//!    workouts. A server without the route (404: a plain automerge-repo server) is skipped.
//!    Documents the listing marks as shared by another user are remembered as such: they are
//!    kept and synced, but they are not this user's history.
//! 4. Open `ws://host/api/v1/sync` (`wss://` for a TLS address) with
//!    `Authorization: Bearer <token>`, send `join` with this device's stable peer id and
//!    `storageId`, wait for `peer`.
//! 5. For every stored document restore the sync state kept for this server and send the first
//!    message (`request` for a document held only as an id, `sync` otherwise). With the shared
//!    heads restored, an unchanged document costs one small message each way.
//! 6. Apply what arrives; after each message, merge the document into the store, apply a
//!    workout document to the history ([`crate::sync::apply`]) and keep the sync state, in one
//!    transaction (an interrupted round keeps what it got; the next round starts from there).
//!    Documents the server sends unasked are stored too.
//! 7. The round ends when every document is quiet: the server has spoken about it on this link
//!    and the heads we share with it are our heads (or it answered `doc-unavailable`).
//! 8. Download chunk blobs referenced by stored documents and missing here
//!    (`GET /api/v1/blobs/{sha256}`), checking each one's SHA-256 before keeping it.
//! 9. Apply what is still pending: received workouts whose chunks just arrived get their
//!    samples (opened with the storage key the user's devices share), the figures computed from
//!    them and their personal records. Documents refused by validation, and samples that cannot
//!    be opened, are reported in [`SyncReport::errors`].
//!
//! [`sync_with_retry`] repeats a round that failed on the network, waiting
//! [`Backoff::RECONNECT`] with jitter between attempts on an injected [`Sleeper`]; it never
//! retries an authorization failure.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use automerge::{Automerge, ChangeHash};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use crate::db::Store;
use crate::error::Error;
use crate::sync::apply::{Applied, Change};
use crate::sync::backoff::Backoff;
use crate::sync::net::{Connector, Http, ServerAddr, Stream};
use crate::sync::outbox::{Attempt, OutboxStatus};
use crate::sync::protocol::{Connection, DocumentId, Event, Message, PeerId, PeerMetadata};
use crate::time::Clock;

/// Where and as whom to sync. Plain data (FFI-friendly).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// `http://host:port` or `ws://host:port`, optionally with a path prefix; with the cargo
    /// feature `net-tls` also `https://` and `wss://` (port 443 by default), whose certificate
    /// is verified against the host. Without the feature those are a [`SyncError::Config`].
    pub server_url: String,
    /// The session token, sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// Longest wait for the server (connecting, one HTTP request, or the next frame inside a
    /// round) before the round fails with [`SyncError::Network`].
    pub timeout_ms: u64,
    /// Longest a whole round may take. `timeout_ms` catches a silent server; this catches one
    /// that keeps the link busy (pings, a trickle of frames) without ever finishing. The round
    /// then fails with [`SyncError::Network`], keeping what it received (every message is saved
    /// as it arrives), and the next round resumes.
    pub round_timeout_ms: u64,
    /// Trust anchors besides Mozilla's root certificates (which are built in), as PEM: one or
    /// more `-----BEGIN CERTIFICATE-----` blocks, e.g. the CA of a self-hosted server. `None`
    /// (the default) trusts the public CAs only. Text that holds no usable certificate is a
    /// [`SyncError::Config`]. Verification itself can never be turned off. Only used with the
    /// feature `net-tls`.
    pub extra_root_pem: Option<String>,
}

impl SyncConfig {
    pub fn new(server_url: impl Into<String>, token: impl Into<String>) -> Self {
        SyncConfig {
            server_url: server_url.into(),
            token: token.into(),
            timeout_ms: 30_000,
            round_timeout_ms: 15 * 60_000,
            extra_root_pem: None,
        }
    }
}

/// Checks trust anchors given as PEM exactly as a round reads
/// [`SyncConfig::extra_root_pem`], so an app can refuse a bad one when it is set rather than at
/// the next round. [`SyncError::Config`] says what is wrong.
pub fn check_extra_root_pem(pem: &str) -> Result<(), SyncError> {
    crate::sync::net::check_extra_root(pem).map_err(SyncError::Config)
}

/// What a round did. Plain data (FFI-friendly).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Documents this round sent changes of.
    pub docs_sent: u64,
    /// Documents this round received changes of.
    pub docs_received: u64,
    /// Documents the server does not have (or will not share).
    pub docs_unavailable: u64,
    /// Documents the server listed that this device had never seen (now tracked and asked for).
    pub docs_discovered: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    /// WebSocket payload bytes (the CBOR messages).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub blobs_uploaded: u64,
    pub blobs_downloaded: u64,
    /// Workouts recorded on other devices that entered this device's history this round.
    pub workouts_added: u64,
    /// History entries that changed this round (edited elsewhere, samples arrived).
    pub workouts_updated: u64,
    /// History entries removed this round (cancelled or deleted elsewhere).
    pub workouts_removed: u64,
    /// Problems that did not stop the round (a blob the server refused or lacks, a document
    /// refused by validation and not applied, samples that cannot be opened, ...).
    pub errors: Vec<String>,
}

/// Why a round (or an outbox flush) stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// No answer, connection refused or dropped, timeout, a failed TLS handshake (the message
    /// says why, e.g. "invalid peer certificate: UnknownIssuer"): try again later.
    #[error("network: {0}")]
    Network(String),
    /// 401 or 403: the token is missing, expired or revoked. Retrying will not help.
    #[error("unauthorized (HTTP {status})")]
    Unauthorized { status: u16 },
    /// The local database failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The server broke the protocol or reported an error.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The configuration cannot work (bad URL, `https://` in a build without TLS, an extra root
    /// certificate that is not one).
    #[error("configuration: {0}")]
    Config(String),
}

impl SyncError {
    /// Worth retrying after a wait.
    pub fn is_transient(&self) -> bool {
        matches!(self, SyncError::Network(_))
    }
}

impl From<Error> for SyncError {
    fn from(e: Error) -> Self {
        SyncError::Storage(e.to_string())
    }
}

/// Waits; injected so that backoff schedules are tested without sleeping.
pub trait Sleeper: Send + Sync + std::fmt::Debug {
    fn sleep(&self, ms: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// [`Sleeper`] on tokio's timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, ms: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(Duration::from_millis(ms)))
    }
}

/// The server's address and how to reach it (TLS set up with the configured roots); every
/// configuration problem shows here, before any connection is made.
fn connector_of(config: &SyncConfig) -> Result<Connector, SyncError> {
    let addr = ServerAddr::parse(&config.server_url).map_err(SyncError::Config)?;
    Connector::new(addr, config.extra_root_pem.as_deref()).map_err(SyncError::Config)
}

fn http_of(connector: &Connector, config: &SyncConfig) -> Http {
    Http::new(
        connector.clone(),
        config.token.clone(),
        Duration::from_millis(config.timeout_ms),
    )
}

fn unauthorized(status: u16) -> Option<SyncError> {
    matches!(status, 401 | 403).then_some(SyncError::Unauthorized { status })
}

/// One sync round: blobs up, documents both ways, blobs down, within
/// [`SyncConfig::round_timeout_ms`]. See the module documentation.
pub async fn sync_once(
    store: &Store,
    config: &SyncConfig,
    clock: &dyn Clock,
) -> Result<SyncReport, SyncError> {
    let limit = Duration::from_millis(config.round_timeout_ms);
    tokio::time::timeout(limit, round(store, config, clock))
        .await
        .map_err(|_| {
            SyncError::Network(format!(
                "the round did not finish within {limit:?}; what it received is kept and the \
                 next round resumes"
            ))
        })?
}

async fn round(
    store: &Store,
    config: &SyncConfig,
    clock: &dyn Clock,
) -> Result<SyncReport, SyncError> {
    let connector = connector_of(config)?;
    let addr = connector.addr();
    let mut report = SyncReport::default();
    let mut http = http_of(&connector, config);
    learn_user(store, &mut http, clock, &mut report).await?;
    store.ensure_documents(clock.now())?;
    upload_blobs(store, addr, &mut http, &mut report).await?;
    discover_documents(store, &mut http, clock, &mut report).await?;
    let mut applied = AppliedLog::default();
    sync_documents(store, &connector, config, clock, &mut report, &mut applied).await?;
    download_blobs(store, addr, &mut http, &mut report).await?;
    for (id, a) in store.apply_documents(clock.now())? {
        applied.note(id, a);
    }
    applied.report(&mut report);
    Ok(report)
}

/// What applying documents did during a round, the latest outcome per document.
#[derive(Default)]
struct AppliedLog {
    added: HashSet<DocumentId>,
    updated: HashSet<DocumentId>,
    removed: HashSet<DocumentId>,
    problems: HashMap<DocumentId, Option<String>>,
}

impl AppliedLog {
    fn note(&mut self, id: DocumentId, a: Applied) {
        match a.change {
            Change::None => {}
            Change::Added => {
                self.removed.remove(&id);
                self.added.insert(id);
            }
            Change::Updated => {
                if !self.added.contains(&id) {
                    self.updated.insert(id);
                }
            }
            Change::Removed => {
                // Added and removed within one round: never visible.
                if !self.added.remove(&id) {
                    self.removed.insert(id);
                }
                self.updated.remove(&id);
            }
        }
        self.problems.insert(id, a.problem);
    }

    fn report(self, report: &mut SyncReport) {
        report.workouts_added = self.added.len() as u64;
        report.workouts_updated = self.updated.len() as u64;
        report.workouts_removed = self.removed.len() as u64;
        let mut problems: Vec<(DocumentId, String)> = self
            .problems
            .into_iter()
            .filter_map(|(id, p)| p.map(|p| (id, p)))
            .collect();
        problems.sort();
        for (id, p) in problems {
            report.errors.push(format!("document {id}: {p}"));
        }
    }
}

/// Step 0: the user this device syncs as.
async fn learn_user(
    store: &Store,
    http: &mut Http,
    clock: &dyn Clock,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    // Asked every round, not once: a token of another user must be caught before anything of
    // this database is sent.
    let path = "/api/v1/me";
    let resp = http
        .request("GET", path, &[], Vec::new())
        .await
        .map_err(SyncError::Network)?;
    if let Some(e) = unauthorized(resp.status) {
        return Err(e);
    }
    match resp.status {
        200 => {}
        404 => return Ok(()),
        s => {
            report.errors.push(format!("GET {path}: HTTP {s}"));
            return Ok(());
        }
    }
    let me: serde_json::Value = serde_json::from_slice(&resp.body)
        .map_err(|e| SyncError::Protocol(format!("GET {path}: not JSON: {e}")))?;
    let Some(id) = me["id"].as_str() else {
        return Err(SyncError::Protocol(format!("GET {path}: no id in {me}")));
    };
    match store.set_sync_user(id, clock.now()) {
        Ok(_) => Ok(()),
        Err(Error::Conflict(m)) => Err(SyncError::Config(m)),
        Err(e) => Err(e.into()),
    }
}

/// [`sync_once`], repeated after network failures: at most `max_attempts` rounds, waiting
/// [`Backoff::RECONNECT`]`.delay_ms(n, jitter())` after the n-th failure. `jitter` returns a
/// fraction in 0..=1 (use [`random_jitter`] in the app, a fixed sequence in tests).
pub async fn sync_with_retry(
    store: &Store,
    config: &SyncConfig,
    clock: &dyn Clock,
    sleeper: &dyn Sleeper,
    jitter: &mut (dyn FnMut() -> f64 + Send),
    max_attempts: u32,
) -> Result<SyncReport, SyncError> {
    let mut failures = 0_u32;
    loop {
        match sync_once(store, config, clock).await {
            Ok(r) => return Ok(r),
            Err(e) if e.is_transient() && failures.saturating_add(1) < max_attempts => {
                failures += 1;
                sleeper
                    .sleep(Backoff::RECONNECT.delay_ms(failures, jitter()))
                    .await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A uniformly random jitter fraction in 0..1 (from the OS generator, through `uuid`, which the
/// crate already uses for ids).
pub fn random_jitter() -> f64 {
    let b = uuid::Uuid::new_v4().into_bytes();
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[..8]);
    // 53 random bits make every f64 in 0..1 with a 2^-53 step.
    #[allow(clippy::cast_precision_loss)]
    let f = (u64::from_le_bytes(x) >> 11) as f64;
    f / (1_u64 << 53) as f64
}

async fn upload_blobs(
    store: &Store,
    addr: &ServerAddr,
    http: &mut Http,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let server = addr.key();
    for sha in store.blobs_to_upload(&server)? {
        let Some(data) = store.blob(&sha)? else {
            continue;
        };
        let path = format!("/api/v1/blobs/{sha}");
        let resp = http
            .request(
                "PUT",
                &path,
                &[("content-type", "application/octet-stream")],
                data,
            )
            .await
            .map_err(SyncError::Network)?;
        if let Some(e) = unauthorized(resp.status) {
            return Err(e);
        }
        if matches!(resp.status, 200 | 201 | 204) {
            store.mark_uploaded(&server, &sha)?;
            report.blobs_uploaded += 1;
        } else {
            report
                .errors
                .push(format!("PUT {path}: HTTP {}", resp.status));
        }
    }
    Ok(())
}

async fn discover_documents(
    store: &Store,
    http: &mut Http,
    clock: &dyn Clock,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let path = "/api/v1/sync/docs";
    let resp = http
        .request("GET", path, &[], Vec::new())
        .await
        .map_err(SyncError::Network)?;
    if let Some(e) = unauthorized(resp.status) {
        return Err(e);
    }
    match resp.status {
        200 => {}
        404 => return Ok(()),
        s => {
            report.errors.push(format!("GET {path}: HTTP {s}"));
            return Ok(());
        }
    }
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&resp.body)
        .map_err(|e| SyncError::Protocol(format!("GET {path}: not a JSON array: {e}")))?;
    let known: HashSet<String> = store.documents()?.into_iter().map(|d| d.doc_id).collect();
    for entry in listed {
        let Some(id) = entry["document_id"].as_str() else {
            report
                .errors
                .push(format!("GET {path}: an entry without document_id: {entry}"));
            continue;
        };
        let doc_id = match id.parse::<DocumentId>() {
            Ok(d) => d,
            Err(e) => {
                report
                    .errors
                    .push(format!("GET {path}: bad document id {id:?}: {e}"));
                continue;
            }
        };
        if !known.contains(id) {
            store.track_document(&doc_id, clock.now())?;
            report.docs_discovered += 1;
        }
        // Without `access` (an older server) a listed document counts as the user's own.
        let shared = entry["access"].as_str().is_some_and(|a| a != "owner");
        store.set_document_shared(&doc_id, shared)?;
    }
    Ok(())
}

async fn download_blobs(
    store: &Store,
    addr: &ServerAddr,
    http: &mut Http,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let server = addr.key();
    for sha in store.blobs_missing()? {
        let path = format!("/api/v1/blobs/{sha}");
        let resp = http
            .request("GET", &path, &[], Vec::new())
            .await
            .map_err(SyncError::Network)?;
        if let Some(e) = unauthorized(resp.status) {
            return Err(e);
        }
        if resp.status != 200 {
            report
                .errors
                .push(format!("GET {path}: HTTP {}", resp.status));
            continue;
        }
        match store.put_blob(&sha, &resp.body) {
            Ok(()) => {
                // The server has it: never upload it back.
                store.mark_uploaded(&server, &sha)?;
                report.blobs_downloaded += 1;
            }
            // A blob that does not hash to its name is refused and reported, never kept.
            Err(Error::Corrupt(m)) => report.errors.push(m),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Documents opened at once and not yet answered (see `sync_documents`).
const WINDOW: usize = 64;

/// One document during a round.
struct Live {
    doc: Automerge,
    /// The server has spoken about it on this link.
    heard: bool,
    done: bool,
    /// The sync state last kept in the store (to skip writing it unchanged).
    saved_state: Option<Vec<u8>>,
}

/// The WebSocket over the same kind of connection as the HTTP requests (TLS when asked for).
type Ws = tokio_tungstenite::WebSocketStream<Stream>;

struct Link {
    ws: Ws,
    timeout: Duration,
}

impl Link {
    async fn send(&mut self, m: &Message, report: &mut SyncReport) -> Result<(), SyncError> {
        let bytes = m.encode();
        report.bytes_sent += bytes.len() as u64;
        report.messages_sent += 1;
        tokio::time::timeout(self.timeout, self.ws.send(WsMessage::Binary(bytes.into())))
            .await
            .map_err(|_| SyncError::Network("sending timed out".into()))?
            .map_err(|e| SyncError::Network(format!("send: {e}")))
    }

    /// The next binary frame.
    async fn next(&mut self, report: &mut SyncReport) -> Result<Vec<u8>, SyncError> {
        loop {
            let frame = tokio::time::timeout(self.timeout, self.ws.next())
                .await
                .map_err(|_| SyncError::Network(format!("no frame within {:?}", self.timeout)))?;
            match frame {
                None => return Err(SyncError::Network("the server closed the link".into())),
                Some(Err(e)) => return Err(SyncError::Network(format!("receive: {e}"))),
                Some(Ok(WsMessage::Binary(b))) => {
                    report.bytes_received += b.len() as u64;
                    report.messages_received += 1;
                    return Ok(b.to_vec());
                }
                Some(Ok(WsMessage::Close(_))) => {
                    return Err(SyncError::Network("the server closed the link".into()))
                }
                // Pings are answered by tungstenite; text frames are not part of the protocol.
                Some(Ok(_)) => {}
            }
        }
    }
}

async fn connect(connector: &Connector, config: &SyncConfig) -> Result<Ws, SyncError> {
    let mut req = connector
        .addr()
        .ws_url()
        .into_client_request()
        .map_err(|e| SyncError::Config(e.to_string()))?;
    let auth = format!("Bearer {}", config.token)
        .parse()
        .map_err(|_| SyncError::Config("the token is not a valid header value".into()))?;
    req.headers_mut().insert("authorization", auth);
    let timeout = Duration::from_millis(config.timeout_ms);
    // TCP, TLS when the address asks for it (the same connector as the HTTP requests), then the
    // upgrade; all of it within the timeout.
    let open = async {
        let stream = connector.connect().await.map_err(SyncError::Network)?;
        match tokio_tungstenite::client_async(req, stream).await {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                Err(unauthorized(status).unwrap_or_else(|| {
                    SyncError::Protocol(format!("the WebSocket upgrade was answered HTTP {status}"))
                }))
            }
            Err(e) => Err(SyncError::Network(format!("WebSocket: {e}"))),
        }
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| SyncError::Network(format!("no WebSocket within {timeout:?}")))?
}

fn is_done(conn: &Connection, id: &DocumentId, live: &Live) -> bool {
    if !live.heard {
        return false;
    }
    let shared = conn
        .sync_state(id)
        .and_then(|s| automerge::sync::State::decode(&s).ok())
        .map(|s| s.shared_heads)
        .unwrap_or_default();
    sorted(shared) == sorted(live.doc.get_heads())
}

fn sorted(mut h: Vec<ChangeHash>) -> Vec<ChangeHash> {
    h.sort();
    h
}

fn carries_changes(m: &Message) -> bool {
    match m {
        Message::Sync { data, .. } | Message::Request { data, .. } => {
            automerge::sync::Message::decode(data).is_ok_and(|m| !m.changes.is_empty())
        }
        _ => false,
    }
}

async fn sync_documents(
    store: &Store,
    connector: &Connector,
    config: &SyncConfig,
    clock: &dyn Clock,
    report: &mut SyncReport,
    applied: &mut AppliedLog,
) -> Result<(), SyncError> {
    let server = connector.addr().key();
    let (peer_id, storage_id) = store.sync_identity()?;
    let ws = connect(connector, config).await?;
    let mut link = Link {
        ws,
        timeout: Duration::from_millis(config.timeout_ms),
    };
    let (mut conn, join) = Connection::initiator(
        PeerId(peer_id),
        Some(PeerMetadata {
            storage_id: Some(storage_id),
            is_ephemeral: false,
        }),
    );
    link.send(&join, report).await?;
    let frame = link.next(report).await?;
    match conn.receive(&frame) {
        Ok(Event::Ready { .. }) => {}
        Ok(Event::RemoteError { message }) => return Err(SyncError::Protocol(message)),
        Ok(other) => return Err(SyncError::Protocol(format!("expected peer, got {other:?}"))),
        Err(e) => return Err(SyncError::Protocol(e.to_string())),
    }

    let mut live: HashMap<DocumentId, Live> = HashMap::new();
    let mut sent_changes: HashSet<DocumentId> = HashSet::new();
    let mut received_changes: HashSet<DocumentId> = HashSet::new();
    let mut queue = store
        .documents()?
        .into_iter()
        .map(|info| {
            info.doc_id
                .parse::<DocumentId>()
                .map_err(|e| SyncError::Storage(format!("stored document id: {e}")))
        })
        .collect::<Result<VecDeque<_>, _>>()?;
    // Documents not done yet (opened or not), and opened ones the server has not answered.
    let mut pending = queue.len();
    let mut waiting = 0_usize;
    loop {
        // Open documents while fewer than WINDOW await their first answer: the server's replies
        // are read as they come, so neither side's socket buffer fills up with unread frames.
        while waiting < WINDOW {
            let Some(id) = queue.pop_front() else { break };
            let doc = store.load_document(&id)?;
            let saved_state = store.sync_state(&server, &id)?;
            if let Some(s) = &saved_state {
                // A state that no longer decodes is dropped: the document syncs from scratch.
                if conn.restore_sync_state(&id, s).is_err() {
                    report
                        .errors
                        .push(format!("sync state of {id} unreadable; reset"));
                }
            }
            let first = conn
                .generate(&id, &doc)
                .map_err(|e| SyncError::Protocol(e.to_string()))?;
            let opened = first.is_some();
            if let Some(m) = first {
                if carries_changes(&m) {
                    sent_changes.insert(id);
                }
                link.send(&m, report).await?;
                waiting += 1;
            } else {
                // Nothing to say (automerge always speaks first on a new link; defensive).
                pending -= 1;
            }
            live.insert(
                id,
                Live {
                    doc,
                    heard: false,
                    done: !opened,
                    saved_state,
                },
            );
        }
        if pending == 0 {
            break;
        }
        let frame = link.next(report).await?;
        let event = match conn.receive(&frame) {
            Ok(e) => e,
            Err(e) => {
                let _ = link.send(&conn.error(e.to_string()), report).await;
                return Err(SyncError::Protocol(e.to_string()));
            }
        };
        match event {
            Event::Sync {
                document_id,
                message,
                ..
            } => {
                if let Entry::Vacant(slot) = live.entry(document_id) {
                    // A document the server offers before we opened it, or unasked: keep it
                    // too, starting from what is stored (if anything).
                    let queued = queue.len();
                    queue.retain(|q| *q != document_id);
                    if queue.len() == queued {
                        pending += 1;
                    }
                    let doc = match store.load_document(&document_id) {
                        Ok(d) => d,
                        Err(Error::NotFound(_)) => Automerge::new(),
                        Err(e) => return Err(e.into()),
                    };
                    slot.insert(Live {
                        doc,
                        heard: true,
                        done: false,
                        saved_state: None,
                    });
                }
                let Some(entry) = live.get_mut(&document_id) else {
                    continue;
                };
                if !entry.heard {
                    waiting -= 1;
                }
                let before = entry.doc.get_heads();
                conn.receive_sync(&document_id, &mut entry.doc, message)
                    .map_err(|e| SyncError::Protocol(e.to_string()))?;
                entry.heard = true;
                let changed = entry.doc.get_heads() != before;
                if changed {
                    received_changes.insert(document_id);
                }
                let state = conn.sync_state(&document_id);
                if changed || state != entry.saved_state {
                    let (_, outcome) = store.save_synced_applied(
                        &server,
                        &document_id,
                        &entry.doc,
                        state.as_deref(),
                        clock.now(),
                    )?;
                    if let Some(a) = outcome {
                        applied.note(document_id, a);
                    }
                    entry.saved_state = state;
                }
                if let Some(m) = conn
                    .generate(&document_id, &entry.doc)
                    .map_err(|e| SyncError::Protocol(e.to_string()))?
                {
                    if carries_changes(&m) {
                        sent_changes.insert(document_id);
                    }
                    link.send(&m, report).await?;
                }
                if !entry.done && is_done(&conn, &document_id, entry) {
                    entry.done = true;
                    pending -= 1;
                }
            }
            Event::DocUnavailable { document_id } => {
                if let Some(entry) = live.get_mut(&document_id) {
                    if !entry.heard {
                        entry.heard = true;
                        waiting -= 1;
                    }
                    if !entry.done {
                        entry.done = true;
                        pending -= 1;
                        report.docs_unavailable += 1;
                    }
                }
            }
            Event::RemoteError { message } => return Err(SyncError::Protocol(message)),
            Event::Left => return Err(SyncError::Network("the server left".into())),
            Event::Joined { .. } | Event::Ready { .. } => {
                return Err(SyncError::Protocol("a second handshake".into()))
            }
            Event::Ephemeral { .. } | Event::Ignored { .. } => {}
        }
    }
    report.docs_sent = sent_changes.len() as u64;
    report.docs_received = received_changes.len() as u64;
    // Best effort: the round's work is already stored.
    let _ = link.ws.close(None).await;
    Ok(())
}

/// What [`outbox_flush`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxFlushReport {
    pub sent: u64,
    pub failed: u64,
    /// Commands still pending after this flush (waiting for their next attempt).
    pub pending: u64,
}

/// Sends the due outbox commands in order, each with `X-Idempotency-Key`, recording every
/// outcome. Stops at the first command that must wait. A 401/403 stops the flush without
/// counting an attempt (the command stays as it was).
pub async fn outbox_flush(
    store: &Store,
    config: &SyncConfig,
    clock: &dyn Clock,
) -> Result<OutboxFlushReport, SyncError> {
    let connector = connector_of(config)?;
    let mut http = http_of(&connector, config);
    let mut out = OutboxFlushReport::default();
    while let Some(cmd) = store.outbox_next_due(clock.now())? {
        let mut headers = vec![("x-idempotency-key", cmd.idempotency_key.as_str())];
        if cmd.body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let body = cmd.body.clone().unwrap_or_default().into_bytes();
        let attempt = match http.request(&cmd.method, &cmd.path, &headers, body).await {
            Ok(r) => {
                if let Some(e) = unauthorized(r.status) {
                    return Err(e);
                }
                Attempt::Response {
                    status: r.status,
                    body: String::from_utf8_lossy(&r.body).into_owned(),
                    retry_after_s: r.retry_after_s,
                }
            }
            Err(e) => Attempt::Network(e),
        };
        let after = store.outbox_record(cmd.seq, &attempt, clock.now())?;
        match after.status {
            OutboxStatus::Sent => out.sent += 1,
            OutboxStatus::Failed => out.failed += 1,
            OutboxStatus::Pending => break,
        }
    }
    out.pending = store.outbox_pending()? as u64;
    Ok(out)
}
