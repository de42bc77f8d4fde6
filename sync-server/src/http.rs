//! Conventions shared by every context: the JSON body extractor with field-level errors, the
//! per-address rate limit, and the operational routes (/healthcheck, /metrics).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{client_addr, too_many};
use crate::error::ApiError;
use crate::metrics::Gauges;
use crate::state::AppState;

/// `Json<T>` whose rejections are [`ApiError`]s: a body that is not JSON, or misses a field,
/// gives 400 `validation_failed` with the problem under `details.fields`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidJson<T>(pub T);

impl<S, T> FromRequest<S> for ValidJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ValidJson(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

/// `Query<T>` whose rejections are [`ApiError`]s: a query string that does not parse gives
/// 400 `validation_failed` as JSON, like a bad body (never axum's plain-text rejection).
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ValidQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ValidQuery(v)),
            Err(rej) => Err(ApiError::field("query", rej.body_text())),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    match rej {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        JsonRejection::JsonDataError(e) => {
            // serde's message names the field ("missing field `email`", "... at line 1 column 9").
            ApiError::field("body", e.body_text())
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::field("body", e.body_text()),
        other => ApiError::field("body", other.body_text()),
    }
}

/// Per-address limit for everything under /api/v1.
pub async fn limit_per_address(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let addr = client_addr(&parts);
    if let Err(secs) = state
        .address_limiter
        .check(&format!("addr:{addr}"), state.now())
    {
        return too_many(secs).into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when the database does not answer.
    pub status: String,
    pub database: String,
    pub backend: String,
    pub version: String,
}

/// Health check: answers 200 when the database answers, 503 otherwise.
#[utoipa::path(get, path = "/healthcheck", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn healthcheck(State(state): State<AppState>) -> Response {
    let ok = state.db.ping().await;
    if let Err(e) = &ok {
        tracing::error!(error = %e, "health check: database unavailable");
    }
    let h = Health {
        status: if ok.is_ok() { "ok" } else { "unavailable" }.into(),
        database: if ok.is_ok() { "ok" } else { "unavailable" }.into(),
        backend: state.db.backend().name().into(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let status = if ok.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(h)).into_response()
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let pool = state.db.pool();
    let (pending, age, failing) = match crate::outbox::lag(&state).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "metrics: outbox lag unavailable");
            (-1, -1.0, -1)
        }
    };
    let g = Gauges {
        pool_size: pool.size(),
        pool_idle: pool.num_idle() as u32,
        pool_max: pool.options().get_max_connections(),
        outbox_pending: pending,
        outbox_oldest_age_secs: age,
        outbox_failing: failing,
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&g),
    )
        .into_response()
}

pub fn ops_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthcheck))
        .routes(routes!(metrics))
}
