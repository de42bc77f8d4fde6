//! The core's internal error. Rich on purpose; the FFI and HTTP layers map it to their small
//! public errors in one place each.

use std::path::PathBuf;

use crate::codec::CodecError;
use crate::crypto::CryptoError;
use crate::workout::WorkoutError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Workout(#[from] WorkoutError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("not a readable file: {0}")]
    Format(String),
    #[error("database error: {0}")]
    Database(rusqlite::Error),
    #[error("the query was interrupted")]
    Interrupted,
    #[error("database schema version {found} is newer than this build understands ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("the storage key does not match the one this database was created with")]
    WrongKey,
    #[error("health data needs the storage key, and none was given")]
    KeyRequired,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::OperationInterrupted =>
            {
                Error::Interrupted
            }
            _ => Error::Database(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
