//! `X-Idempotency-Key` for every mutating endpoint (POST, PUT, PATCH, DELETE under /api/v1).
//!
//! - The key is optional; when present it must be a UUID v4 (else 400).
//! - Keys are scoped to the caller: the bearer token's hash, or "anonymous".
//! - First use: the request runs and its response (any status below 500) is kept for the
//!   idempotency TTL (24 h by default); a repeat with the same body gets that response again,
//!   with the header `Idempotent-Replayed: true`.
//! - The same key with a different method, path or body: 422 `idempotency_key_reused`.
//! - The same key while the first request is still running: 409 `idempotency_in_flight`. A
//!   request that died leaves its claim, which lapses after [`IN_FLIGHT_TIMEOUT_MS`].
//! - A 5xx is not kept: the claim is released so the client can retry with the same key.
//!
//! Stored responses may hold secrets (a sign-in returns a bearer token), so the database never
//! holds them readable: the request is recorded as an HMAC under the server key, and the
//! response is encrypted (AES-256-GCM) under a key derived from the server key and the whole
//! request, body included. A stolen database alone replays nothing and guesses no password.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::db::{col, Tx};
use crate::error::{ApiError, Error, Result};
use crate::state::AppState;

pub const HEADER: &str = "x-idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// A claim older than this is taken to belong to a request that died (RULES.md: locks time out
/// after 30 seconds).
pub const IN_FLIGHT_TIMEOUT_MS: i64 = 30_000;
/// Largest request or response body the layer buffers.
pub const MAX_BODY: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
struct StoredResponse {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// What the layer decided for a request.
#[derive(Debug)]
pub enum Claim {
    /// Run the request; the caller owns the claim.
    Proceed,
    /// Send back this stored response.
    Replay(Response),
}

/// The scope of a key: the hash of the caller's bearer token (equal to the session's stored
/// token hash, so deleting an account finds its records), or `anonymous`.
pub fn scope_of(authorization: Option<&str>) -> String {
    match authorization.map(str::trim) {
        Some(a) => match a.strip_prefix("Bearer ") {
            Some(token) => crypto::sha256_hex(token.trim().as_bytes()),
            None => crypto::sha256_hex(a.as_bytes()),
        },
        None => "anonymous".into(),
    }
}

fn keys(
    state: &AppState,
    scope: &str,
    key: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (String, [u8; 32]) {
    let parts: [&[u8]; 5] = [
        scope.as_bytes(),
        key.as_bytes(),
        method.as_bytes(),
        path.as_bytes(),
        body,
    ];
    let hash = hex::encode(crypto::hmac_parts(&state.secret, "idem-request", &parts));
    let enc = crypto::hmac_parts(&state.secret, "idem-response", &parts);
    (hash, enc)
}

/// Claims `key` for a request or finds what to answer instead. Public for tests that need a
/// request "in flight" without racing two real ones.
pub async fn claim(
    state: &AppState,
    scope: &str,
    key: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Claim> {
    let (hash, enc) = keys(state, scope, key, method, path, body);
    let now = state.now().as_millis();
    let ttl_ms = (state.config.idempotency_ttl_secs as i64).saturating_mul(1000);
    let secret_id = state.secret_id.clone();
    // The common case, a key never seen: one autocommit statement. The primary key on
    // (scope, idem_key) makes it atomic, so two racing requests cannot both insert; whoever
    // loses (and every repeat, expired or abandoned key) takes the transaction below.
    let inserted = sqlx::query(
        "INSERT INTO idempotency_records
           (scope, idem_key, key_id, request_hash, state, created_at, locked_until)
         VALUES ($1, $2, $3, $4, 'in_flight', $5, $6)
         ON CONFLICT (scope, idem_key) DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(&secret_id)
    .bind(&hash)
    .bind(now)
    .bind(now + IN_FLIGHT_TIMEOUT_MS)
    .execute(state.db.pool())
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::Proceed);
    }
    let (scope, key) = (scope.to_string(), key.to_string());
    let found = state
        .db
        .write(move |tx: &mut Tx| {
            let (scope, key, hash, secret_id) =
                (scope.clone(), key.clone(), hash.clone(), secret_id.clone());
            Box::pin(async move {
                let row = sqlx::query(
                    "SELECT key_id, request_hash, state, status, response, created_at, locked_until
                     FROM idempotency_records WHERE scope = $1 AND idem_key = $2",
                )
                .bind(&scope)
                .bind(&key)
                .fetch_optional(&mut **tx)
                .await?;
                if let Some(row) = row {
                    let created: i64 = col(&row, "created_at")?;
                    let key_id: String = col(&row, "key_id")?;
                    let st: String = col(&row, "state")?;
                    let locked_until: i64 = col(&row, "locked_until")?;
                    let expired = now >= created.saturating_add(ttl_ms);
                    let abandoned = st == "in_flight" && now >= locked_until;
                    // A record made under another server key cannot be checked: treat as gone.
                    if !(expired || abandoned || key_id != secret_id) {
                        let stored_hash: String = col(&row, "request_hash")?;
                        if !crypto::ct_eq(stored_hash.as_bytes(), hash.as_bytes()) {
                            return Ok(Err(ApiError::new(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                "idempotency_key_reused",
                                "this idempotency key was used for a different request",
                            )));
                        }
                        if st == "in_flight" {
                            return Ok(Err(ApiError::conflict(
                                "idempotency_in_flight",
                                "a request with this idempotency key is still being processed",
                            )
                            .with_retry_after(1)));
                        }
                        let response: Option<Vec<u8>> = col(&row, "response")?;
                        return Ok(Ok(response));
                    }
                    sqlx::query(
                        "DELETE FROM idempotency_records WHERE scope = $1 AND idem_key = $2",
                    )
                    .bind(&scope)
                    .bind(&key)
                    .execute(&mut **tx)
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO idempotency_records
                       (scope, idem_key, key_id, request_hash, state, created_at, locked_until)
                     VALUES ($1, $2, $3, $4, 'in_flight', $5, $6)",
                )
                .bind(&scope)
                .bind(&key)
                .bind(&secret_id)
                .bind(&hash)
                .bind(now)
                .bind(now + IN_FLIGHT_TIMEOUT_MS)
                .execute(&mut **tx)
                .await?;
                Ok(Ok(None))
            })
        })
        .await?;
    match found.map_err(Error::from)? {
        None => Ok(Claim::Proceed),
        Some(sealed) => {
            let stored: StoredResponse = crypto::open(&enc, &sealed)
                .and_then(|p| serde_json::from_slice(&p).ok())
                .ok_or_else(|| Error::Corrupt("stored idempotent response unreadable".into()))?;
            let mut resp = Response::builder()
                .status(StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK));
            if let Some(ct) = stored.content_type {
                resp = resp.header(header::CONTENT_TYPE, ct);
            }
            let resp = resp
                .header(REPLAYED_HEADER, HeaderValue::from_static("true"))
                .body(Body::from(stored.body))
                .map_err(|_| Error::Corrupt("stored idempotent response unbuildable".into()))?;
            Ok(Claim::Replay(resp))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn complete(
    state: &AppState,
    scope: &str,
    key: &str,
    method: &str,
    path: &str,
    body: &[u8],
    stored: Option<StoredResponse>,
    user_id: Option<String>,
) -> Result<()> {
    match stored {
        None => {
            sqlx::query("DELETE FROM idempotency_records WHERE scope = $1 AND idem_key = $2")
                .bind(scope)
                .bind(key)
                .execute(state.db.pool())
                .await?;
        }
        Some(s) => {
            let (_, enc) = keys(state, scope, key, method, path, body);
            let plain = serde_json::to_vec(&s)
                .map_err(|e| Error::Corrupt(format!("idempotent response: {e}")))?;
            let sealed = crypto::seal(&enc, &plain)?;
            sqlx::query(
                "UPDATE idempotency_records SET state = 'done', status = $1, response = $2,
                   user_id = $3
                 WHERE scope = $4 AND idem_key = $5",
            )
            .bind(i64::from(s.status))
            .bind(sealed)
            .bind(user_id)
            .bind(scope)
            .bind(key)
            .execute(state.db.pool())
            .await?;
        }
    }
    Ok(())
}

/// The user a response belongs to, set by handlers so a GDPR deletion finds its records.
#[derive(Debug, Clone)]
pub struct ResponseOwner(pub String);

/// Deletes stored responses older than the TTL.
pub async fn purge(state: &AppState) -> Result<u64> {
    let ttl_ms = (state.config.idempotency_ttl_secs as i64).saturating_mul(1000);
    let r = sqlx::query("DELETE FROM idempotency_records WHERE created_at <= $1")
        .bind(state.now().as_millis() - ttl_ms)
        .execute(state.db.pool())
        .await?;
    Ok(r.rows_affected())
}

fn is_mutating(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The middleware.
pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Blob uploads are idempotent by content address and may be far larger than MAX_BODY.
    if !is_mutating(req.method()) || req.uri().path().starts_with("/api/v1/blobs/") {
        return next.run(req).await;
    }
    let Some(raw) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let key = match raw
        .to_str()
        .ok()
        .and_then(|s| uuid::Uuid::parse_str(s.trim()).ok())
    {
        Some(u) if u.get_version_num() == 4 => u.hyphenated().to_string(),
        _ => {
            return ApiError::field("X-Idempotency-Key", "must be a UUID version 4").into_response()
        }
    };
    let scope = scope_of(
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let method = req.method().as_str().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let (parts, body) = req.into_parts();
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is too large",
            )
            .into_response()
        }
    };
    match claim(&state, &scope, &key, &method, &path, &body).await {
        Ok(Claim::Replay(resp)) => return resp,
        Ok(Claim::Proceed) => {}
        Err(e) => return e.into_response(),
    }
    let req = Request::from_parts(parts, Body::from(body.clone()));
    let resp = next.run(req).await;
    let (rparts, rbody) = resp.into_parts();
    let rbytes = match to_bytes(rbody, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "response body too large to keep for idempotency");
            let _ = complete(&state, &scope, &key, &method, &path, &body, None, None).await;
            return ApiError::internal().into_response();
        }
    };
    let stored = (!rparts.status.is_server_error()).then(|| StoredResponse {
        status: rparts.status.as_u16(),
        content_type: rparts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: rbytes.to_vec(),
    });
    let owner = rparts
        .extensions
        .get::<ResponseOwner>()
        .map(|o| o.0.clone());
    if let Err(e) = complete(&state, &scope, &key, &method, &path, &body, stored, owner).await {
        // The change itself is committed; only the replay record is missing.
        tracing::error!(error = %e, "could not store the idempotent response");
    }
    Response::from_parts(rparts, Body::from(rbytes))
}
