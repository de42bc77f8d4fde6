//! `GET /api/v1/sync`: the automerge-repo v1 WebSocket endpoint. The server is the responder;
//! one task per connection feeds frames to a [`Connection`] and answers what it returns.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use automerge::{sync, Automerge, ReadDoc, SaveOptions};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fitedge_core::sync::docs::{
    profile_document_id, validate_update, Validated, ValidationContext, PROFILE_TYPE, WORKOUT_TYPE,
};
use fitedge_core::sync::protocol::{
    Connection, DocumentId, Event, Message, PeerId, PeerMetadata, ProtocolError,
};

use super::hub::{DocEntry, DocState, Outbound};
use super::store::{self, Access, Commit, NotCommitted};
use crate::auth::Caller;
use crate::error::{ApiError, Error};
use crate::state::AppState;

/// The caller of the upgrade: `Authorization: Bearer ...`, or (browsers cannot set headers on a
/// WebSocket) the `access_token` query parameter.
#[derive(Debug)]
pub struct SyncCaller(pub Caller);

impl FromRequestParts<AppState> for SyncCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            let token = parts.uri.query().and_then(|q| {
                q.split('&').find_map(|kv| {
                    kv.strip_prefix("access_token=")
                        .map(str::to_string)
                        .filter(|t| !t.is_empty())
                })
            });
            if let Some(t) = token {
                if let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}")) {
                    parts.headers.insert(header::AUTHORIZATION, v);
                }
            }
        }
        Caller::from_request_parts(parts, state)
            .await
            .map(SyncCaller)
    }
}

/// Open a sync connection (automerge-repo protocol v1, binary CBOR frames). The bearer token is
/// checked before the upgrade.
#[utoipa::path(get, path = "/api/v1/sync", tag = "sync", security(("bearer" = [])),
    params(("access_token" = Option<String>, Query, description = "bearer token, for clients that cannot set the Authorization header")),
    responses((status = 101, description = "switching to the automerge-repo WebSocket protocol"),
        (status = 401, body = ApiError), (status = 426, body = ApiError, description = "not a WebSocket upgrade"),
        (status = 429, body = ApiError)))]
pub async fn sync_ws(
    State(state): State<AppState>,
    SyncCaller(caller): SyncCaller,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rej) => {
            return ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                format!(
                    "this route is a WebSocket (automerge-repo sync): {}",
                    rej.body_text()
                ),
            )
            .into_response()
        }
    };
    // Up to twice the limit a message is read and refused here; beyond that the WebSocket
    // library stops reading it. Both answer a protocol `error` and close (tested).
    let limit = state.config.sync_max_frame_bytes.max(1024);
    ws.max_message_size(limit.saturating_mul(2))
        .max_frame_size(limit.saturating_mul(2))
        .on_upgrade(move |socket| run(state, caller.user_id, caller.session_id, socket))
}

enum Outcome {
    Send(Vec<Message>),
    /// Answer `error` with this text and close.
    Refuse(String),
    /// Close without a word (the peer left or reported an error).
    Quit,
}

struct Session {
    state: AppState,
    user_id: String,
    conn_id: u64,
    conn: Connection,
    peer_key: Option<String>,
    entries: HashMap<DocumentId, Arc<DocEntry>>,
    restored: HashSet<DocumentId>,
    /// Per document: changes the peer sent on this link that automerge could not apply yet
    /// because their dependencies are missing (its queue), as change chunks. They belong with
    /// this link's sync state: the peer counts them as sent on this link and never sends them
    /// again on it, so dropping them makes the server ask for them forever (issue 7's livelock).
    /// They stay out of the shared document, unchecked, until they apply; then they are
    /// checked with this peer's access like anything else it sends. See [`Session::view`].
    held: HashMap<DocumentId, Vec<u8>>,
}

async fn send(socket: &mut WebSocket, m: &Message) -> bool {
    socket
        .send(WsMessage::Binary(m.encode().into()))
        .await
        .is_ok()
}

async fn refuse(socket: &mut WebSocket, conn: &mut Connection, why: String) {
    tracing::info!(reason = %why, "sync: closing connection with an error");
    let m = conn.error(why);
    let _ = send(socket, &m).await;
    let _ = socket.send(WsMessage::Close(None)).await;
}

/// Whether the session a sync connection was opened with is still valid: not ended (signed
/// out, revoked, ended by the session limit or a password reset), not expired (by the injected
/// clock), its account not deleted.
async fn session_alive(state: &AppState, session_id: &str) -> crate::error::Result<bool> {
    let row = sqlx::query(
        "SELECT id FROM sessions WHERE id = $1 AND ended_at IS NULL AND expires_at > $2",
    )
    .bind(session_id)
    .bind(state.now().as_millis())
    .fetch_optional(state.db.pool())
    .await?;
    Ok(row.is_some())
}

/// Answers one binary frame; false when the link is done (refused, or the socket is gone).
async fn answer(s: &mut Session, socket: &mut WebSocket, b: &[u8]) -> bool {
    match s.frame(b).await {
        Outcome::Send(ms) => {
            let mut ok = true;
            for m in &ms {
                ok &= send(socket, m).await;
            }
            ok
        }
        Outcome::Refuse(why) => {
            refuse(socket, &mut s.conn, why).await;
            false
        }
        Outcome::Quit => false,
    }
}

async fn run(state: AppState, user_id: String, session_id: String, mut socket: WebSocket) {
    let (conn_id, mut rx) = state.sync.register(&user_id);
    let limit = state.config.sync_max_frame_bytes.max(1024);
    // The token is checked once, on the upgrade; a link can live for hours, so the session is
    // checked again on this period (every node does it for its own links, so this also covers
    // sessions ended through another node).
    let mut recheck = tokio::time::interval(Duration::from_secs(
        state.config.sync_session_check_secs.max(1),
    ));
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    recheck.tick().await; // the first tick is immediate: the upgrade has just checked it
    let mut s = Session {
        conn: Connection::responder(
            PeerId(state.sync.peer_id()),
            Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: false,
            }),
        ),
        state,
        user_id,
        conn_id,
        peer_key: None,
        entries: HashMap::new(),
        restored: HashSet::new(),
        held: HashMap::new(),
    };
    // `--sync-rate-limit`, a bucket per account across its connections, on the injected clock.
    // A frame that finds it empty waits here, and the socket is not read meanwhile: the peer's
    // writes stall and its round slows down (refusing would make a device with many documents
    // reconnect and resend its whole state, again and again). Everything else (changes from
    // other links, a close, the session check) goes on while it waits.
    let mut waiting: Option<(axum::body::Bytes, u64)> = None;
    let mut told = false;
    loop {
        // Re-read in slices, so a clock that jumps ahead (tests, a suspended VM) is noticed soon.
        let retry_in = Duration::from_millis(waiting.as_ref().map_or(0, |w| w.1.min(250)));
        tokio::select! {
            _ = tokio::time::sleep(retry_in), if waiting.is_some() => {
                match s.state.sync_limiter.take(&s.user_id, s.state.now()) {
                    Ok(()) => {
                        if let Some((b, _)) = waiting.take() {
                            if !answer(&mut s, &mut socket, &b).await { break; }
                        }
                    }
                    Err(wait_ms) => {
                        if let Some(w) = waiting.as_mut() { w.1 = wait_ms; }
                    }
                }
            },
            frame = socket.recv(), if waiting.is_none() => match frame {
                None | Some(Ok(WsMessage::Close(_))) => break,
                Some(Err(e)) => {
                    refuse(&mut socket, &mut s.conn, format!("malformed frame: {e}")).await;
                    break;
                }
                Some(Ok(WsMessage::Text(_))) => {
                    refuse(&mut socket, &mut s.conn,
                        "text frames are not part of the protocol: send binary CBOR messages".into()).await;
                    break;
                }
                Some(Ok(WsMessage::Binary(b))) => {
                    if b.len() > limit {
                        refuse(&mut socket, &mut s.conn,
                            format!("message of {} bytes exceeds the limit of {limit}", b.len())).await;
                        break;
                    }
                    match s.state.sync_limiter.take(&s.user_id, s.state.now()) {
                        Ok(()) => {
                            told = false;
                            if !answer(&mut s, &mut socket, &b).await { break; }
                        }
                        Err(wait_ms) => {
                            if !told {
                                tracing::info!(wait_ms,
                                    "sync: an account reached its message rate; reading it slower");
                                told = true;
                            }
                            waiting = Some((b, wait_ms));
                        }
                    }
                }
                Some(Ok(_)) => {} // ping/pong: answered by the library
            },
            out = rx.recv() => match out {
                Some(Outbound::Changed(id)) => match s.changed(&id).await {
                    Outcome::Send(ms) => {
                        let mut ok = true;
                        for m in &ms {
                            ok &= send(&mut socket, m).await;
                        }
                        if !ok { break; }
                    }
                    Outcome::Refuse(why) => {
                        refuse(&mut socket, &mut s.conn, why).await;
                        break;
                    }
                    Outcome::Quit => break,
                },
                Some(Outbound::Unsubscribe(id)) => {
                    s.held.remove(&id);
                    s.forget(&id);
                }
                Some(Outbound::Ephemeral { document_id, session_id, count, data }) => {
                    if let Some(m) = s.relay(document_id, session_id, count, data) {
                        if !send(&mut socket, &m).await { break; }
                    }
                }
                Some(Outbound::Close(why)) => {
                    refuse(&mut socket, &mut s.conn, why).await;
                    break;
                }
                None => break,
            },
            _ = recheck.tick() => match session_alive(&s.state, &session_id).await {
                Ok(true) => {}
                Ok(false) => {
                    refuse(&mut socket, &mut s.conn,
                        "the session ended (signed out, revoked or expired): sign in again".into()).await;
                    break;
                }
                // A database hiccup does not cut a link; the next period checks again.
                Err(e) => tracing::warn!(error = %e, "sync: the session check failed"),
            },
        }
    }
    s.finish().await;
}

impl Session {
    fn ctx(&self) -> ValidationContext {
        ValidationContext {
            now: self.state.now(),
        }
    }

    async fn frame(&mut self, bytes: &[u8]) -> Outcome {
        let ev = match self.conn.receive(bytes) {
            Ok(ev) => ev,
            Err(e) => return Outcome::Refuse(e.to_string()),
        };
        match ev {
            Event::Joined {
                peer,
                metadata,
                reply,
            } => {
                self.peer_key = Some(match metadata {
                    Some(PeerMetadata {
                        storage_id: Some(sid),
                        ..
                    }) => format!("storage:{sid}"),
                    _ => format!("peer:{peer}"),
                });
                Outcome::Send(vec![reply])
            }
            Event::Sync {
                document_id,
                message,
                request,
            } => match self.sync(document_id, message, request).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(document_id = %document_id, error = %e, "sync: internal error");
                    Outcome::Refuse(format!(
                        "document {document_id}: the server could not process the message"
                    ))
                }
            },
            Event::RemoteError { message } => {
                tracing::info!(message = %message, "sync: the peer reported an error");
                Outcome::Quit
            }
            Event::Left => Outcome::Quit,
            // Relayed to the document's other subscribers on this node, only from a peer that
            // syncs the document (so it may read it); never stored.
            Event::Ephemeral {
                document_id,
                session_id,
                count,
                data,
            } => {
                if self.entries.contains_key(&document_id) {
                    self.state.sync.ephemeral(
                        &document_id,
                        self.conn_id,
                        &session_id,
                        count,
                        &data,
                    );
                }
                Outcome::Send(vec![])
            }
            // doc-unavailable and unknown types need nothing from us.
            _ => Outcome::Send(vec![]),
        }
    }

    async fn sync(
        &mut self,
        id: DocumentId,
        message: sync::Message,
        request: bool,
    ) -> crate::error::Result<Outcome> {
        let access = store::access(&self.state, &id, &self.user_id).await?;
        let Some(access) = access else {
            self.forget(&id);
            if request {
                return Ok(Outcome::Send(vec![self.doc_unavailable(&id)?]));
            }
            return self.maybe_create(id, message).await;
        };
        let entry = match self.entries.get(&id) {
            Some(e) => e.clone(),
            None => match self.state.sync.open(&self.state, &id, self.conn_id).await? {
                Some(e) => {
                    self.entries.insert(id, e.clone());
                    e
                }
                None => return Ok(Outcome::Send(vec![self.doc_unavailable(&id)?])),
            },
        };
        self.restore(&id).await;
        let mut st = entry.state.lock().await;
        let mut next = match self.view(&id, &mut st, access).await? {
            Ok(next) => next,
            Err(o) => return Ok(o),
        };
        let ctx = self.ctx();
        let limit = self.state.config.sync_max_untyped_bytes;
        let before_heads = st.doc.get_heads();
        let state_before = self.conn.sync_state(&id);
        let mut validated = None;
        let stored = st.size_bytes;
        // `next` is the loaded document plus this link's held changes (still waiting), so the
        // sync state advances against everything this peer sent on this link.
        let r = self
            .conn
            .receive_sync_checked(&id, &mut next, message, |before, after| {
                check(
                    Some(before),
                    after,
                    access,
                    stored,
                    limit,
                    &ctx,
                    &mut validated,
                )
            });
        if let Some(o) = refusal(&id, r) {
            return Ok(o);
        }
        let waiting = waiting_changes(&next);
        if next.get_heads() != before_heads {
            let keep_next = waiting.is_some();
            match self
                .store_changes(&id, &mut st, &mut next, keep_next, validated.as_ref())
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(not)) => {
                    // Nothing was kept: neither may the state claim it.
                    self.reset_state(&id, state_before.as_deref());
                    return Ok(not_committed(&id, &not));
                }
                Err(e) => {
                    // The state must not claim changes the server did not keep: it is saved
                    // when the link ends and restored on the next one.
                    self.reset_state(&id, state_before.as_deref());
                    return Err(e);
                }
            }
        }
        self.reply(&id, &st.doc, &next, waiting)
    }

    /// The document as this link sees it: the loaded one plus the changes this peer sent on
    /// this link that are waiting for their dependencies ([`Session::held`]). When another link
    /// has brought those dependencies meanwhile, the held changes now apply: they are checked
    /// with this peer's access and stored first, exactly as if the peer had just sent them.
    /// `Err(outcome)` when they are refused or the document is gone.
    async fn view(
        &mut self,
        id: &DocumentId,
        st: &mut DocState,
        access: Access,
    ) -> crate::error::Result<Result<Automerge, Outcome>> {
        let mut next = st.doc.clone();
        let Some(held) = self.held.get(id) else {
            return Ok(Ok(next));
        };
        next.load_incremental(held)
            .map_err(|e| Error::Corrupt(format!("held changes of {id}: {e}")))?;
        if next.get_heads() == st.doc.get_heads() {
            return Ok(Ok(next));
        }
        let ctx = self.ctx();
        let limit = self.state.config.sync_max_untyped_bytes;
        let mut validated = None;
        if let Err(why) = check(
            Some(&st.doc),
            &next,
            access,
            st.size_bytes,
            limit,
            &ctx,
            &mut validated,
        ) {
            return Ok(Err(rejected(id, &why)));
        }
        if let Err(not) = self
            .store_changes(id, st, &mut next, true, validated.as_ref())
            .await?
        {
            return Ok(Err(not_committed(id, &not)));
        }
        Ok(Ok(next))
    }

    /// Stores the changes `next` has applied beyond the loaded document (already checked) and
    /// brings the loaded document up to them. Only applied changes enter the shared document:
    /// the ones still waiting stay with the link that sent them. Unless `keep_next` (it holds
    /// such changes, or the caller still needs it), `next` itself becomes the loaded document
    /// and is left empty. `Err`: nothing was stored (the document is gone, or the change names
    /// a blob this user may not name) and the loaded document is untouched.
    async fn store_changes(
        &self,
        id: &DocumentId,
        st: &mut DocState,
        next: &mut Automerge,
        keep_next: bool,
        validated: Option<&Validated>,
    ) -> crate::error::Result<Result<(), NotCommitted>> {
        let before_heads = st.doc.get_heads();
        let incremental = next.save_after(&before_heads);
        let c = Commit {
            id: *id,
            committer: self.user_id.clone(),
            create_owner: None,
            incremental: incremental.clone(),
            kind: kind_name(validated).into(),
            blob_refs: blob_refs(validated),
        };
        let done = match store::commit(&self.state, c).await? {
            Ok(done) => done,
            Err(not) => return Ok(Err(not)),
        };
        if keep_next {
            st.doc
                .load_incremental(&incremental)
                .map_err(|e| Error::Corrupt(format!("committed changes of {id}: {e}")))?;
        } else {
            st.doc = std::mem::take(next);
        }
        st.size_bytes = done.size_bytes;
        st.kind = kind_name(validated).into();
        if done.first_seq == st.max_seq + 1 {
            st.max_seq = done.seq;
        }
        self.state.sync.changed(id, Some(self.conn_id));
        if let Some(Validated::Workout(w)) = validated {
            super::summary::after_commit(&self.state, id, w);
        }
        Ok(Ok(()))
    }

    /// Keeps the changes still waiting (`waiting_changes(next)`) with this link
    /// ([`Session::held`]) and answers: from `next` while some wait, so that the reply's `need`
    /// follows their dependencies (automerge asks for the missing ancestors of what it holds,
    /// not for what it already received); from the loaded document otherwise.
    fn reply(
        &mut self,
        id: &DocumentId,
        loaded: &Automerge,
        next: &Automerge,
        waiting: Option<Vec<u8>>,
    ) -> crate::error::Result<Outcome> {
        let from = match waiting {
            None => {
                self.held.remove(id);
                loaded
            }
            Some(w) => {
                let limit = self.state.config.sync_max_frame_bytes;
                if w.len() > limit {
                    return Ok(Outcome::Refuse(format!(
                        "document {id}: more than {limit} bytes of changes whose dependencies \
                         were never sent"
                    )));
                }
                self.held.insert(*id, w);
                next
            }
        };
        let reply = self.conn.generate(id, from)?;
        Ok(Outcome::Send(reply.into_iter().collect()))
    }

    /// Puts back the encoded sync state of `id` taken before a message was applied (a fresh
    /// state when there was none).
    fn reset_state(&mut self, id: &DocumentId, before: Option<&[u8]>) {
        let fresh;
        let bytes = match before {
            Some(b) => b,
            None => {
                fresh = sync::State::new().encode();
                &fresh
            }
        };
        if let Err(e) = self.conn.restore_sync_state(id, bytes) {
            tracing::warn!(document_id = %id, error = %e, "sync: sync state not reset");
        }
    }

    /// A `sync` for a document the caller cannot see or that does not exist: we hold nothing
    /// of it. The first changes create it, owned by the caller; an id already taken (by a
    /// document this caller may not see) answers `doc-unavailable`.
    async fn maybe_create(
        &mut self,
        id: DocumentId,
        message: sync::Message,
    ) -> crate::error::Result<Outcome> {
        let ctx = self.ctx();
        let limit = self.state.config.sync_max_untyped_bytes;
        let mut doc = Automerge::new();
        if let Some(held) = self.held.get(&id) {
            // Held changes wait for dependencies: on an empty document they still wait.
            doc.load_incremental(held)
                .map_err(|e| Error::Corrupt(format!("held changes of {id}: {e}")))?;
        }
        let mut validated = None;
        let r = self
            .conn
            .receive_sync_checked(&id, &mut doc, message, |_, after| {
                check(None, after, Access::Owner, 0, limit, &ctx, &mut validated)?;
                // One profile per user, at the id every device derives from the user (ADR
                // 0012): a profile made anywhere else would be a second, diverging profile.
                if matches!(validated, Some(Validated::Profile(_)))
                    && id != profile_document_id(&self.user_id)
                {
                    return Err("a profile document must live at the id derived from its \
                                owner (fitedge_core::sync::docs::profile_document_id)"
                        .to_string());
                }
                Ok(())
            });
        if let Some(o) = refusal(&id, r) {
            return Ok(o);
        }
        if doc.get_heads().is_empty() {
            // Nothing applied yet: say so, and the peer sends its changes (or what the held
            // ones depend on).
            let waiting = waiting_changes(&doc);
            return self.reply(&id, &doc, &doc, waiting);
        }
        let c = Commit {
            id,
            committer: self.user_id.clone(),
            create_owner: Some(self.user_id.clone()),
            // Applied changes only: held ones are this link's until they apply and are checked.
            incremental: doc.save_with_options(SaveOptions {
                retain_orphans: false,
                ..SaveOptions::default()
            }),
            kind: kind_name(validated.as_ref()).into(),
            blob_refs: blob_refs(validated.as_ref()),
        };
        match store::commit(&self.state, c).await? {
            Ok(_) => {}
            // Taken, or a user's profile id (reserved at registration, ADR 0012: computable by
            // anyone who knows the user id) that this is not the profile of.
            Err(NotCommitted::Unavailable) => {
                return Ok(Outcome::Send(vec![self.doc_unavailable(&id)?]))
            }
            Err(not) => return Ok(not_committed(&id, &not)),
        }
        tracing::info!(document_id = %id, kind = kind_name(validated.as_ref()), "sync: document created");
        let Some(entry) = self.state.sync.open(&self.state, &id, self.conn_id).await? else {
            return Ok(Outcome::Refuse(format!(
                "document {id}: it no longer exists"
            )));
        };
        self.entries.insert(id, entry.clone());
        self.restored.insert(id);
        if let Some(Validated::Workout(w)) = &validated {
            super::summary::after_commit(&self.state, &id, w);
        }
        match waiting_changes(&doc) {
            Some(w) => {
                self.held.insert(id, w);
            }
            None => {
                self.held.remove(&id);
            }
        }
        let mut st = entry.state.lock().await;
        let next = match self.view(&id, &mut st, Access::Owner).await? {
            Ok(next) => next,
            Err(o) => return Ok(o),
        };
        let waiting = waiting_changes(&next);
        self.reply(&id, &st.doc, &next, waiting)
    }

    fn doc_unavailable(&mut self, id: &DocumentId) -> Result<Message, ProtocolError> {
        self.restored.remove(id);
        self.held.remove(id);
        self.conn.doc_unavailable(id)
    }

    async fn restore(&mut self, id: &DocumentId) {
        if !self.restored.insert(*id) {
            return;
        }
        let Some(key) = &self.peer_key else { return };
        match store::sync_state(&self.state, &self.user_id, key, id).await {
            Ok(Some(bytes)) => {
                if let Err(e) = self.conn.restore_sync_state(id, &bytes) {
                    tracing::warn!(document_id = %id, error = %e, "sync: stored sync state unreadable; starting afresh");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(document_id = %id, error = %e, "sync: sync state not loaded"),
        }
    }

    /// Another connection changed `id`: tell this peer, from this link's view of the document
    /// (held changes that now apply are checked and stored first).
    async fn changed(&mut self, id: &DocumentId) -> Outcome {
        self.changed_inner(id).await.unwrap_or_else(|e| {
            tracing::error!(document_id = %id, error = %e, "sync: internal error");
            Outcome::Refuse(format!(
                "document {id}: the server could not process the change"
            ))
        })
    }

    async fn changed_inner(&mut self, id: &DocumentId) -> crate::error::Result<Outcome> {
        let Some(entry) = self.entries.get(id).cloned() else {
            return Ok(Outcome::Send(vec![]));
        };
        let mut st = entry.state.lock().await;
        if !self.held.contains_key(id) {
            // The common case: nothing held, no copy of the document needed.
            let m = self.conn.generate(id, &st.doc)?;
            return Ok(Outcome::Send(m.into_iter().collect()));
        }
        let Some(access) = store::access(&self.state, id, &self.user_id).await? else {
            self.held.remove(id);
            return Ok(Outcome::Send(vec![]));
        };
        match self.view(id, &mut st, access).await? {
            Ok(next) => {
                let waiting = waiting_changes(&next);
                self.reply(id, &st.doc, &next, waiting)
            }
            Err(o) => Ok(o),
        }
    }

    /// An ephemeral message from another peer, re-addressed from us to this peer.
    fn relay(
        &self,
        document_id: DocumentId,
        session_id: String,
        count: u64,
        data: Vec<u8>,
    ) -> Option<Message> {
        if !self.entries.contains_key(&document_id) {
            return None;
        }
        Some(Message::Ephemeral {
            sender_id: self.conn.local_peer().clone(),
            target_id: self.conn.remote_peer()?.clone(),
            count,
            session_id,
            document_id,
            data,
        })
    }

    fn forget(&mut self, id: &DocumentId) {
        if self.entries.remove(id).is_some() {
            self.state
                .sync
                .unsubscribe(id, self.conn_id, self.state.now().as_millis());
        }
    }

    async fn finish(self) {
        let docs: HashSet<DocumentId> = self.entries.keys().copied().collect();
        if let Some(key) = &self.peer_key {
            let states: Vec<(DocumentId, Vec<u8>)> = docs
                .iter()
                .filter_map(|d| self.conn.sync_state(d).map(|s| (*d, s)))
                .collect();
            if let Err(e) = store::save_sync_states(&self.state, &self.user_id, key, states).await {
                tracing::warn!(error = %e, "sync: sync states not saved");
            }
        }
        self.state
            .sync
            .unregister(self.conn_id, &docs, self.state.now().as_millis());
    }
}

/// `Some(outcome)` when applying the message failed.
fn refusal(id: &DocumentId, r: Result<(), ProtocolError>) -> Option<Outcome> {
    match r {
        Ok(()) => None,
        Err(ProtocolError::Rejected(why)) => Some(rejected(id, &why)),
        Err(e) => Some(Outcome::Refuse(format!("document {id}: {e}"))),
    }
}

/// A change [`store::commit`] refused, for a document the link already syncs.
fn not_committed(id: &DocumentId, not: &NotCommitted) -> Outcome {
    match not {
        NotCommitted::Unavailable => Outcome::Refuse(format!("document {id}: it no longer exists")),
        NotCommitted::BlobRefused(h) => rejected(
            id,
            &format!(
                "chunks name blob {h}, which you have not uploaded and no document you may read \
                 names: upload it first (PUT /api/v1/blobs/{h})"
            ),
        ),
    }
}

fn rejected(id: &DocumentId, why: &str) -> Outcome {
    tracing::info!(document_id = %id, reason = %why, "sync: change refused");
    Outcome::Refuse(format!("document {id}: change refused: {why}"))
}

/// The changes `doc` received but cannot apply yet (automerge's queue: their dependencies are
/// missing), as change chunks `load_incremental` takes back; `None` when there are none.
fn waiting_changes(doc: &Automerge) -> Option<Vec<u8>> {
    // The missing dependencies of an empty queue are none; of a non-empty one, at least one.
    if doc.get_missing_deps(&[]).is_empty() {
        return None;
    }
    // `save` writes the applied document and then appends the queued changes' raw chunks.
    let save = |retain_orphans| {
        doc.save_with_options(SaveOptions {
            deflate: false,
            retain_orphans,
        })
    };
    let applied = save(false);
    let mut all = save(true);
    Some(if all.starts_with(&applied) {
        all.split_off(applied.len())
    } else {
        // Not expected (both encodings come from one state); the whole document loads back
        // just as well, only bigger.
        all
    })
}

/// The check run on a copy before a change is kept: write access, the document's rules
/// ([`validate_update`]), and the size limit of untyped documents.
fn check(
    before: Option<&Automerge>,
    after: &Automerge,
    access: Access,
    stored_size: i64,
    limit: u64,
    ctx: &ValidationContext,
    out: &mut Option<Validated>,
) -> Result<(), String> {
    if !access.can_write() {
        return Err("read-only access: changes are not accepted".into());
    }
    let v = validate_update(before, after, ctx).map_err(|e| e.to_string())?;
    if matches!(v, Validated::Untyped) {
        let added = match before {
            Some(b) => after.save_after(&b.get_heads()).len(),
            None => after.save().len(),
        };
        let total = u64::try_from(stored_size.max(0))
            .unwrap_or(0)
            .saturating_add(added as u64);
        if total > limit {
            return Err(format!(
                "untyped documents are limited to {limit} bytes (this change makes {total})"
            ));
        }
    }
    *out = Some(v);
    Ok(())
}

fn kind_name(v: Option<&Validated>) -> &'static str {
    match v {
        Some(Validated::Profile(_)) => PROFILE_TYPE,
        Some(Validated::Workout(_)) => WORKOUT_TYPE,
        _ => "untyped",
    }
}

fn blob_refs(v: Option<&Validated>) -> Option<Vec<String>> {
    match v {
        Some(Validated::Workout(w)) => Some(w.chunks.iter().map(|c| c.sha256.clone()).collect()),
        _ => None,
    }
}
