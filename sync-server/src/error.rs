//! Two error layers.
//!
//! [`Error`] is the rich internal error every module returns. [`ApiError`] is the one public HTTP
//! error: `{"error", "message", "code", "details"}` with the matching status. The mapping from one
//! to the other lives here and only here: internal errors (database, hashing, I/O) become a generic
//! 500 whose cause is logged inside the request span and never sent to the client.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The internal error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("password hashing: {0}")]
    Hash(String),
    #[error("crypto: {0}")]
    Crypto(&'static str),
    #[error("configuration: {0}")]
    Config(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("mail: {0}")]
    Mail(String),
    #[error("data in the database is not what the schema promises: {0}")]
    Corrupt(String),
    #[error("transaction gave up after {0} serialization retries")]
    TooManyRetries(u32),
    #[error("transaction timed out")]
    Timeout,
    #[error("background task: {0}")]
    Task(String),
    /// The sync protocol state machine refused an operation (a bug on our side when it
    /// reaches a handler: the peer's own mistakes are answered before this).
    #[error("sync protocol: {0}")]
    Protocol(#[from] fitedge_core::sync::protocol::ProtocolError),
    /// A client-facing outcome raised deep inside a transaction; passes through unchanged.
    #[error("{0:?}")]
    Api(Box<ApiError>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(Box::new(e))
    }
}

/// Field-level details of a validation failure: field name to a list of problems.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// The public HTTP error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiError {
    /// Machine-readable kind, e.g. `validation_failed`, `unauthorized`, `not_found`.
    pub error: &'static str,
    /// Human-readable explanation; never contains internal details.
    pub message: String,
    /// The HTTP status code, repeated.
    pub code: u16,
    /// Extra structured information (field errors, retry delay, ...); `{}` when none.
    #[schema(value_type = Object)]
    pub details: Box<serde_json::Value>,
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            error,
            message: message.into(),
            code: status.as_u16(),
            details: Box::new(serde_json::json!({})),
            retry_after_secs: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Box::new(details);
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        let secs = secs.max(1);
        self.retry_after_secs = Some(secs);
        if let serde_json::Value::Object(m) = &mut *self.details {
            m.insert("retry_after_secs".into(), secs.into());
        }
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn validation(fields: FieldErrors) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "the request is not valid",
        )
        .with_details(serde_json::json!({ "fields": fields }))
    }

    pub fn field(field: &str, problem: impl Into<String>) -> Self {
        let mut f = FieldErrors::new();
        f.insert(field.to_string(), vec![problem.into()]);
        Self::validation(f)
    }

    pub fn bad_request(error: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(error: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, error, message)
    }

    /// Also what a caller gets for another user's object: existence is not revealed.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn conflict(error: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, error, message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "something went wrong on our side; it has been logged",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = self.retry_after_secs;
        let mut resp = (status, axum::Json(self)).into_response();
        if let Some(secs) = retry {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fitedge\""),
            );
        }
        resp
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Api(api) => *api,
            Error::Timeout => {
                tracing::error!(error = %e, "request failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    "the operation took too long and was rolled back; try again",
                )
                .with_retry_after(1)
            }
            Error::TooManyRetries(_) => {
                tracing::warn!(error = %e, "request failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "contention",
                    "too many concurrent changes; try again",
                )
                .with_retry_after(1)
            }
            other => {
                // Logged inside the request span (trace and correlation ids attached).
                tracing::error!(error = %other, "internal error");
                Self::internal()
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}
