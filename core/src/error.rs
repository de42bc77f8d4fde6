//! The core's internal error. Rich on purpose; the FFI and HTTP layers map it to their small
//! public errors in one place each.

use std::path::PathBuf;

use crate::workout::WorkoutError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Workout(#[from] WorkoutError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("not a readable FIT file: {0}")]
    Fit(String),
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("database schema version {found} is newer than this build understands ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
