//! Sync context (issue 7): the automerge-repo WebSocket endpoint, document storage and access
//! lists, blobs. See README.md ("Sync") and ADR 0009.
//!
//! - [`ws`]: `GET /api/v1/sync`, one task per connection, the server as responder.
//! - [`hub`]: loaded documents with their subscribers, eviction, fan-out on this node.
//! - [`store`]: chunks, compaction, shares, sync states, `NOTIFY` (PostgreSQL).
//! - [`blobs`]: `PUT`/`GET /api/v1/blobs/{sha256}`.
//! - `GET /api/v1/sync/docs`: the documents the caller may see (owned and shared), so a new
//!   device learns which ids to ask for; the protocol itself has no listing.
//! - The share routes below: `GET|PUT /api/v1/sync/docs/{document_id}/shares`,
//!   `DELETE /api/v1/sync/docs/{document_id}/shares/{user_id}` (owner only; 404 for anyone else).

pub mod blobs;
pub mod hub;
pub mod store;
pub mod summary;
pub mod ws;

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use fitedge_core::sync::protocol::DocumentId;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use hub::Hub;
use store::{Access, Share};

use crate::auth::Caller;
use crate::db::Backend;
use crate::error::{ApiError, Error};
use crate::http::ValidJson;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ws::sync_ws))
        .routes(routes!(list_docs))
        .routes(routes!(list_shares, put_share))
        .routes(routes!(delete_share))
        .routes(routes!(blobs::put_blob, blobs::get_blob))
}

fn parse_doc_id(s: &str) -> Result<DocumentId, ApiError> {
    s.parse::<DocumentId>()
        .map_err(|e| ApiError::field("document_id", format!("not an automerge document id: {e}")))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShareAccess {
    Read,
    Write,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// The user to share with (or `email`).
    pub user_id: Option<String>,
    /// The user's email (or `user_id`).
    pub email: Option<String>,
    pub access: ShareAccess,
}

/// One document the caller may see.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocEntry {
    /// The automerge-repo document id (Base58Check, as in `automerge:<id>` URLs).
    pub document_id: String,
    /// `fitedge.profile`, `fitedge.workout` or `untyped`.
    pub kind: String,
    /// `owner`, `write` or `read`.
    pub access: String,
    /// Last change stored, RFC 3339.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// The documents you own or that are shared with you, oldest change first. A device syncs
/// them all; ids it does not hold yet it opens with `request`.
#[utoipa::path(get, path = "/api/v1/sync/docs", tag = "sync", security(("bearer" = [])),
    responses((status = 200, body = Vec<DocEntry>), (status = 401, body = ApiError),
        (status = 429, body = ApiError)))]
pub async fn list_docs(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<DocEntry>>, ApiError> {
    let rows = sqlx::query(
        "SELECT id, kind, 'owner' AS access, updated_at FROM sync_docs WHERE owner_id = $1
         UNION ALL
         SELECT d.id, d.kind, a.access, d.updated_at FROM sync_acl a
           JOIN sync_docs d ON d.id = a.doc_id WHERE a.user_id = $1
         ORDER BY updated_at, id",
    )
    .bind(&caller.user_id)
    .fetch_all(state.db.pool())
    .await
    .map_err(Error::from)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(DocEntry {
            document_id: crate::db::col(r, "id")?,
            kind: crate::db::col(r, "kind")?,
            access: crate::db::col(r, "access")?,
            updated_at: fitedge_core::time::Timestamp(crate::db::col(r, "updated_at")?)
                .to_rfc3339(),
        });
    }
    Ok(axum::Json(out))
}

/// The shares of a document you own.
#[utoipa::path(get, path = "/api/v1/sync/docs/{document_id}/shares", tag = "sync", security(("bearer" = [])),
    params(("document_id" = String, Path)),
    responses((status = 200, body = Vec<Share>), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 404, body = ApiError), (status = 429, body = ApiError)))]
pub async fn list_shares(
    State(state): State<AppState>,
    caller: Caller,
    Path(document_id): Path<String>,
) -> Result<axum::Json<Vec<Share>>, ApiError> {
    let id = parse_doc_id(&document_id)?.to_string();
    store::require_owner(&state, &id, &caller.user_id).await?;
    Ok(axum::Json(store::list_shares(&state, &id).await?))
}

/// Share a document you own with another user, for reading or writing (replaces an earlier
/// share with that user).
#[utoipa::path(put, path = "/api/v1/sync/docs/{document_id}/shares", tag = "sync", security(("bearer" = [])),
    params(("document_id" = String, Path), crate::openapi::IdempotencyKey),
    request_body = ShareRequest,
    responses((status = 200, body = Vec<Share>), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 404, body = ApiError), (status = 429, body = ApiError)))]
pub async fn put_share(
    State(state): State<AppState>,
    caller: Caller,
    Path(document_id): Path<String>,
    ValidJson(req): ValidJson<ShareRequest>,
) -> Result<axum::Json<Vec<Share>>, ApiError> {
    let id = parse_doc_id(&document_id)?.to_string();
    store::require_owner(&state, &id, &caller.user_id).await?;
    let target: Option<String> = match (&req.user_id, &req.email) {
        (Some(u), None) => sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
            .bind(u)
            .fetch_optional(state.db.pool())
            .await
            .map_err(Error::from)?,
        (None, Some(e)) => sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
            .bind(e.trim().to_lowercase())
            .fetch_optional(state.db.pool())
            .await
            .map_err(Error::from)?,
        _ => {
            return Err(ApiError::field(
                "user_id",
                "give exactly one of user_id and email",
            ))
        }
    };
    let target = target
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "user_not_found", "no such user"))?;
    if target == caller.user_id {
        return Err(ApiError::field("user_id", "you own this document already"));
    }
    let access = match req.access {
        ShareAccess::Read => Access::Read,
        ShareAccess::Write => Access::Write,
    };
    // Access is looked up on every incoming message, so a downgrade to read applies at once.
    let email = req.email.as_deref().map(|e| e.trim().to_lowercase());
    store::put_share(&state, &id, &target, email.as_deref(), access).await?;
    Ok(axum::Json(store::list_shares(&state, &id).await?))
}

/// Revoke a share of a document you own. The user's open connections stop receiving it.
#[utoipa::path(delete, path = "/api/v1/sync/docs/{document_id}/shares/{user_id}", tag = "sync", security(("bearer" = [])),
    params(("document_id" = String, Path), ("user_id" = String, Path), crate::openapi::IdempotencyKey),
    responses((status = 204), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 404, body = ApiError), (status = 429, body = ApiError)))]
pub async fn delete_share(
    State(state): State<AppState>,
    caller: Caller,
    Path((document_id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let doc = parse_doc_id(&document_id)?;
    let id = doc.to_string();
    store::require_owner(&state, &id, &caller.user_id).await?;
    if !store::delete_share(&state, &doc, &user_id).await? {
        return Err(ApiError::not_found());
    }
    // This node at once; the others (PostgreSQL) when the revocation's notice reaches them.
    state.sync.revoke(&doc, &user_id);
    Ok(StatusCode::NO_CONTENT)
}

/// Background work of the sync context until `stop`: evicting idle documents, and on
/// PostgreSQL listening for other nodes' changes.
pub async fn run_background(state: AppState, stop: watch::Receiver<bool>) {
    let evictor = tokio::spawn(run_evictor(state.clone(), stop.clone()));
    if state.db.backend() == Backend::Postgres {
        run_listener(state, stop).await;
    }
    let _ = evictor.await;
}

/// The log target of the eviction sweep: `RUST_LOG=fitedge_server::sync::evict=debug` logs every
/// sweep with how many documents left memory and how many are still loaded (the sync benchmark's
/// `--stored` mode reads it).
pub const EVICT_LOG_TARGET: &str = "fitedge_server::sync::evict";

/// Every `sync_evict_every_secs` (real time), evicts the documents idle for `sync_idle_secs` (by
/// the injected clock).
async fn run_evictor(state: AppState, mut stop: watch::Receiver<bool>) {
    let idle_ms =
        i64::try_from(state.config.sync_idle_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let every = Duration::from_secs(state.config.sync_evict_every_secs.max(1));
    loop {
        let evicted = state.sync.evict_idle(state.now().as_millis(), idle_ms);
        tracing::debug!(
            target: EVICT_LOG_TARGET,
            evicted,
            loaded = state.sync.loaded_count(),
            "sync: eviction sweep"
        );
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// `LISTEN fitedge_sync` on a connection of its own (the pool is `Any`); each notification
/// names a document another node (or this one) committed, reloaded if it is loaded here, or a
/// share revoked, whose user's links here stop syncing the document ([`store::Notice`]).
/// Notices sent while the listener was away are lost, so after (re)connecting every loaded
/// document is reloaded and every subscription rechecked ([`Hub::resync_all`]).
async fn run_listener(state: AppState, mut stop: watch::Receiver<bool>) {
    loop {
        let mut listener =
            match sqlx::postgres::PgListener::connect(&state.config.database_url).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "sync: cannot LISTEN; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            };
        if let Err(e) = listener.listen(store::NOTIFY_CHANNEL).await {
            tracing::error!(error = %e, "sync: LISTEN failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                _ = stop.changed() => return,
            }
        }
        // Anything missed while not listening.
        state.sync.resync_all(&state).await;
        loop {
            tokio::select! {
                n = listener.try_recv() => match n {
                    Ok(Some(n)) => match store::Notice::parse(n.payload()) {
                        Some(store::Notice::Changed(id)) => {
                            if let Err(e) = state.sync.reload(&state, &id).await {
                                tracing::warn!(document_id = %id, error = %e, "sync: reload failed");
                            }
                        }
                        Some(store::Notice::Revoked(id, user_id)) => state.sync.revoke(&id, &user_id),
                        None => {}
                    },
                    // The connection was lost; the listener reconnects on the next call.
                    Ok(None) => state.sync.resync_all(&state).await,
                    Err(e) => {
                        tracing::error!(error = %e, "sync: listener failed; reconnecting");
                        break;
                    }
                },
                _ = stop.changed() => return,
            }
        }
    }
}
