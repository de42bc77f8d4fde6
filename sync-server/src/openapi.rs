//! The OpenAPI 3 document, generated from the handlers' annotations (utoipa): every route a
//! context registers through its `OpenApiRouter` is in it.

use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};

use crate::error::ApiError;

/// The idempotency header every mutating endpoint accepts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// A UUID v4. A repeat within 24 hours gets the stored response; the same key with another
    /// body is 422; while the first request runs, 409.
    #[serde(rename = "X-Idempotency-Key")]
    #[param(format = Uuid, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$")]
    pub key: Option<String>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("opaque token from POST /api/v1/auth/login"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "FitEdge server API",
        version = "1",
        description = "Errors are JSON {error, message, code, details} with the matching status."
    ),
    components(schemas(ApiError)),
    modifiers(&BearerAuth),
    tags(
        (name = "identity", description = "accounts, sessions, MFA, GDPR"),
        (name = "administration", description = "administrator-only reads (MFA required)"),
        (name = "health", description = "health-data scope (MFA required)"),
        (name = "booking", description = "events, seats, waitlist, refunds"),
        (name = "sync", description = "automerge-repo WebSocket sync, document shares, blobs"),
        (name = "operations", description = "health check, metrics, this document")
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document", body = Object)))]
pub async fn openapi_json(
    axum::Extension(doc): axum::Extension<std::sync::Arc<String>>,
) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.as_str().to_owned(),
    )
}

/// The responses the shared layers can give, added to every operation they wrap, so the
/// document states them once instead of each handler repeating them: 429 (rate limits) on
/// /api/v1; 401 where a bearer token is required; 400, 409 and 422 (idempotency key) on
/// mutating methods; 400, 413 and 415 (JSON body) where there is a request body.
pub fn add_convention_responses(doc: &mut serde_json::Value) {
    let error = |description: &str| {
        serde_json::json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}
        })
    };
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let mutating = matches!(method.as_str(), "post" | "put" | "patch" | "delete");
            let has_body = op.get("requestBody").is_some();
            let secured = op.get("security").is_some();
            let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                continue;
            };
            let mut add = |code: &str, description: &str| {
                responses
                    .entry(code.to_string())
                    .or_insert_with(|| error(description));
            };
            if path.starts_with("/api/v1/") {
                add("429", "rate_limited (Retry-After)");
            }
            if secured {
                add(
                    "401",
                    "unauthorized: missing, invalid, ended or expired token",
                );
            }
            if mutating && path.starts_with("/api/v1/") {
                add("400", "validation_failed");
                add("409", "idempotency_in_flight");
                add("422", "idempotency_key_reused");
            }
            if has_body {
                add("400", "validation_failed");
                add("413", "payload_too_large");
                add("415", "unsupported_media_type");
            }
        }
    }
}
