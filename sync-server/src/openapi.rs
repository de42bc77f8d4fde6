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
