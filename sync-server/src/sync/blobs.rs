//! Blobs: immutable sample chunks, content-addressed by SHA-256, stored in SQL.
//!
//! `PUT /api/v1/blobs/{sha256}` stores the body when its hash matches (422 otherwise, 413 above
//! `blob_max_bytes`); a repeat upload is a no-op that records the uploader. `GET` answers the
//! bytes to an uploader, or to whoever may read a workout document whose `chunks[].sha256` names
//! the blob; everyone else gets 404, as for a blob that does not exist.

use axum::body::{to_bytes, Body};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use fitedge_core::sync::docs::is_sha256_hex;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::crypto;
use crate::db::{col, Tx};
use crate::error::{ApiError, Error};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct BlobStored {
    pub sha256: String,
    pub size_bytes: u64,
    /// false when the blob was already stored (by anyone).
    pub created: bool,
}

fn check_hash(sha256: &str) -> Result<(), ApiError> {
    if is_sha256_hex(sha256) {
        Ok(())
    } else {
        Err(ApiError::field(
            "sha256",
            "must be 64 lowercase hexadecimal digits",
        ))
    }
}

/// Upload a blob (a sample chunk) under its SHA-256. Naturally idempotent: the
/// `X-Idempotency-Key` layer leaves this route alone (the body may be larger than it buffers).
#[utoipa::path(put, path = "/api/v1/blobs/{sha256}", tag = "sync", security(("bearer" = [])),
    params(("sha256" = String, Path, description = "SHA-256 of the body, 64 lowercase hex digits")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = BlobStored), (status = 200, body = BlobStored, description = "already stored"),
        (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 413, body = ApiError), (status = 422, body = ApiError, description = "hash mismatch"),
        (status = 429, body = ApiError)))]
pub async fn put_blob(
    State(state): State<AppState>,
    caller: Caller,
    Path(sha256): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    check_hash(&sha256)?;
    let max = state.config.blob_max_bytes;
    let bytes = to_bytes(body, max).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("blobs are limited to {max} bytes"),
        )
    })?;
    let actual = crypto::sha256_hex(&bytes);
    if actual != sha256 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "hash_mismatch",
            "the body's SHA-256 is not the one in the path",
        )
        .with_details(serde_json::json!({ "expected": sha256, "actual": actual })));
    }
    let now = state.now().as_millis();
    let size = bytes.len();
    let (uid, sha) = (caller.user_id.clone(), sha256.clone());
    let created = state
        .db
        .write(move |tx: &mut Tx| {
            let (uid, sha, data) = (uid.clone(), sha.clone(), bytes.to_vec());
            Box::pin(async move {
                let r = sqlx::query(
                    "INSERT INTO blobs (sha256, data, size_bytes, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (sha256) DO NOTHING",
                )
                .bind(&sha)
                .bind(data)
                .bind(i64::try_from(size).unwrap_or(i64::MAX))
                .bind(now)
                .execute(&mut **tx)
                .await?;
                sqlx::query(
                    "INSERT INTO blob_uploaders (sha256, user_id, uploaded_at) VALUES ($1, $2, $3)
                     ON CONFLICT (sha256, user_id) DO NOTHING",
                )
                .bind(&sha)
                .bind(&uid)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                Ok(r.rows_affected() > 0)
            })
        })
        .await?;
    if created {
        // A completed workout may have been waiting for this chunk.
        if let Err(e) = super::summary::after_blob(&state, &sha256).await {
            tracing::warn!(error = %e, "sync: summary check not started");
        }
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut resp = (
        status,
        axum::Json(BlobStored {
            sha256,
            size_bytes: size as u64,
            created,
        }),
    )
        .into_response();
    resp.extensions_mut()
        .insert(crate::idempotency::ResponseOwner(caller.user_id));
    Ok(resp)
}

/// Download a blob: its uploader, or a reader of a workout document that references it.
#[utoipa::path(get, path = "/api/v1/blobs/{sha256}", tag = "sync", security(("bearer" = [])),
    params(("sha256" = String, Path, description = "SHA-256, 64 lowercase hex digits")),
    responses((status = 200, description = "the bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 404, body = ApiError), (status = 429, body = ApiError)))]
pub async fn get_blob(
    State(state): State<AppState>,
    caller: Caller,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    check_hash(&sha256)?;
    let row = sqlx::query(
        "SELECT b.data FROM blobs b WHERE b.sha256 = $1 AND (
           EXISTS (SELECT 1 FROM blob_uploaders u WHERE u.sha256 = b.sha256 AND u.user_id = $2)
           OR EXISTS (SELECT 1 FROM sync_doc_blobs r JOIN sync_docs d ON d.id = r.doc_id
                      WHERE r.sha256 = b.sha256 AND (d.owner_id = $2 OR EXISTS
                        (SELECT 1 FROM sync_acl a WHERE a.doc_id = d.id AND a.user_id = $2))))",
    )
    .bind(&sha256)
    .bind(&caller.user_id)
    .fetch_optional(state.db.pool())
    .await
    .map_err(Error::from)?
    .ok_or_else(ApiError::not_found)?;
    let data: Vec<u8> = col(&row, "data")?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::ETAG, format!("\"{sha256}\"")),
            (
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable".to_string(),
            ),
        ],
        data,
    )
        .into_response())
}
