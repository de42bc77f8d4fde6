//! The public error of the bindings: the few cases an app branches on, each with a message
//! a person can read. Every internal error is mapped here, in this one place; no internal type
//! and no panic crosses the FFI.

use fitedge_core::error::Error as CoreError;
use fitedge_core::WorkoutError;

/// A flat error: each variant carries its human-readable message, which becomes the exception's
/// message in Kotlin, Swift and Python.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum FitEdgeError {
    /// The call does not fit the workout's state (e.g. completing a workout twice, pausing one
    /// that is not running, a workout shorter than one minute).
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// An argument was refused (a bad key length, an impossible profile value, a malformed file).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// No workout, gear or recording with that id.
    #[error("not found: {0}")]
    NotFound(String),
    /// The local database could not be read or written (disk full, corrupt file, wrong key).
    #[error("storage: {0}")]
    Storage(String),
    /// The server could not be reached or the sync round broke off (connection refused, timeout,
    /// "sync protocol: ..."): try again later.
    #[error("network: {0}")]
    Network(String),
    /// The server refused the token (HTTP 401/403): sign in again; retrying will not help.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
}

impl From<WorkoutError> for FitEdgeError {
    fn from(e: WorkoutError) -> Self {
        FitEdgeError::InvalidState(e.to_string())
    }
}

impl From<CoreError> for FitEdgeError {
    fn from(e: CoreError) -> Self {
        let message = e.to_string();
        match e {
            CoreError::Workout(w) => w.into(),
            CoreError::NotFound(_) => FitEdgeError::NotFound(message),
            CoreError::Invalid(_) | CoreError::Format(_) | CoreError::File { .. } => {
                FitEdgeError::InvalidInput(message)
            }
            CoreError::Conflict(_) => FitEdgeError::InvalidState(message),
            CoreError::Database(_)
            | CoreError::Interrupted
            | CoreError::SchemaTooNew { .. }
            | CoreError::Corrupt(_)
            | CoreError::Codec(_)
            | CoreError::Crypto(_)
            | CoreError::WrongKey
            | CoreError::KeyRequired
            | CoreError::Io(_) => FitEdgeError::Storage(message),
        }
    }
}

impl From<fitedge_core::fit::FitError> for FitEdgeError {
    fn from(e: fitedge_core::fit::FitError) -> Self {
        FitEdgeError::InvalidInput(e.to_string())
    }
}
