//! The database: one sqlx `Any` pool over SQLite or PostgreSQL, the migrations of each backend,
//! and the one way to run a write transaction.
//!
//! Queries are written once, in the SQL subset both backends share (see
//! `docs/adr/0006-server-one-sql-subset-over-sqlx-any.md`): `$n` placeholders, `BIGINT`/`TEXT`/binary
//! columns only, times as integer milliseconds, ids as text, `ON CONFLICT` and `RETURNING`.
//! What differs between the backends lives in this file: connection setup, the migration
//! directories, how a serializable transaction begins, and which error codes mean "retry".

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Connection, Executor};

use crate::error::{Error, Result};

/// A write transaction.
pub type Tx = sqlx::Transaction<'static, Any>;
/// What [`Db::write`] runs: a closure that borrows the transaction for one attempt.
pub type TxFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 't>>;

/// Transactions (and the locks they hold) are rolled back after this long (RULES.md: distributed
/// locks and transactions time out after 30 seconds).
pub const TX_TIMEOUT: Duration = Duration::from_secs(30);
/// Serialization failures are retried this many times before the caller gets a 503.
pub const TX_RETRIES: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::Config(
                "the database URL must start with sqlite: or postgres://".into(),
            ))
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The pool and which backend is behind it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    tx_timeout: Duration,
}

/// The URL with any password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}://{}:***{}", &url[..s], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn sqlite_url_with_create(url: &str) -> String {
    if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

impl Db {
    /// Connects (creating the SQLite file if needed) and prepares the connections; does not migrate.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let url = match backend {
            Backend::Sqlite => sqlite_url_with_create(url),
            Backend::Postgres => url.to_string(),
        };
        if backend == Backend::Sqlite {
            // WAL is a property of the file: set once, before the pool opens its connections
            // (switching needs an exclusive lock that busy_timeout cannot wait for).
            let mut conn = sqlx::AnyConnection::connect(&url).await?;
            conn.execute("PRAGMA journal_mode = WAL").await?;
            conn.close().await?;
        }
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                // Readers run in parallel under WAL; writers queue on BEGIN IMMEDIATE.
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // NORMAL is durable under WAL except for the last transactions on power
                        // loss; busy_timeout makes writers queue instead of failing with BUSY.
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(&url).await?;
        Ok(Self {
            pool,
            backend,
            tx_timeout: TX_TIMEOUT,
        })
    }

    /// The same pool with another limit for [`Db::write`] (tests: a stalled transaction is rolled
    /// back without waiting 30 real seconds).
    pub fn with_tx_timeout(mut self, limit: Duration) -> Self {
        self.tx_timeout = limit;
        self
    }

    /// Brings the schema up to date; run at every start.
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How long a write transaction may run before it is rolled back (30 s unless
    /// [`Db::with_tx_timeout`] said otherwise); work done inside the database in one statement
    /// waits for locks at most this long too.
    pub fn tx_timeout(&self) -> Duration {
        self.tx_timeout
    }

    /// `SELECT 1`, for the health check.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn begin_serializable(&self, pg_lock: Option<&'static str>) -> Result<Tx> {
        let stmt = match (self.backend, pg_lock) {
            // Takes the write lock up front: no deadlock on a read-to-write upgrade, and every
            // write transaction is serial, which is serializable.
            (Backend::Sqlite, _) => "BEGIN IMMEDIATE".to_string(),
            (Backend::Postgres, None) => "BEGIN ISOLATION LEVEL SERIALIZABLE".to_string(),
            // One round trip for both; the lock is taken before the first query, so the
            // serializable snapshot comes after the previous holder committed.
            (Backend::Postgres, Some(lock)) => {
                format!("BEGIN ISOLATION LEVEL SERIALIZABLE; {lock}")
            }
        };
        // Cancel safety: a request dropped while this BEGIN is in flight (its client hung up, our
        // timeout) must not leave the pooled connection inside a transaction nobody tracks.
        // sqlx 0.9.0 did on PostgreSQL (transact-rs/sqlx#4393, fixed in 0.9.1, which the
        // workspace requires); the booking test
        // `a_booking_cancelled_while_waiting_for_the_lock_leaks_nothing` holds us to it.
        Ok(self.pool.begin_with(sqlx::AssertSqlSafe(stmt)).await?)
    }

    /// [`Db::write`], with `pg_lock` (a `LOCK TABLE ...` statement) issued on PostgreSQL with
    /// `BEGIN`, before any query. Writers of a hot row then queue on the
    /// lock instead of aborting each other with serialization failures. On SQLite `BEGIN
    /// IMMEDIATE` already serialises every writer, so the lock is not needed there.
    pub async fn write_locked<T, F>(&self, pg_lock: &'static str, f: F) -> Result<T>
    where
        T: Send,
        F: for<'t> FnMut(&'t mut Tx) -> TxFuture<'t, T> + Send,
    {
        self.write_inner(Some(pg_lock), f).await
    }

    /// Runs `f` in a serializable write transaction and commits; retries the whole closure when
    /// the database reports a serialization failure or a deadlock, rolls back after
    /// [`TX_TIMEOUT`] (or the limit given to [`Db::with_tx_timeout`]). `f` must therefore do nothing outside the transaction that cannot be
    /// repeated.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: for<'t> FnMut(&'t mut Tx) -> TxFuture<'t, T> + Send,
    {
        self.write_inner(None, f).await
    }

    async fn write_inner<T, F>(&self, pg_lock: Option<&'static str>, mut f: F) -> Result<T>
    where
        T: Send,
        F: for<'t> FnMut(&'t mut Tx) -> TxFuture<'t, T> + Send,
    {
        let attempt = async {
            let mut retries = 0;
            loop {
                let mut tx = self.begin_serializable(pg_lock).await?;
                let outcome = match f(&mut tx).await {
                    Ok(v) => tx.commit().await.map(|_| v).map_err(Error::from),
                    Err(e) => {
                        // Dropping the transaction rolls it back; be explicit anyway.
                        let _ = tx.rollback().await;
                        Err(e)
                    }
                };
                match outcome {
                    Err(e) if is_retryable(&e) && retries < TX_RETRIES => {
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(2u64 << retries.min(6))).await;
                    }
                    Err(e) if is_retryable(&e) => return Err(Error::TooManyRetries(retries)),
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(self.tx_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout),
        }
    }
}

/// PostgreSQL 40001 (serialization_failure) and 40P01 (deadlock); SQLite BUSY/LOCKED.
pub fn is_retryable(e: &Error) -> bool {
    let Error::Db(sqlx::Error::Database(d)) = e else {
        return false;
    };
    matches!(
        d.code().as_deref(),
        Some("40001") | Some("40P01") | Some("5") | Some("6") | Some("517") | Some("261")
    )
}

/// A unique constraint was violated (both backends).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.is_unique_violation()
                || matches!(
                    d.code().as_deref(),
                    Some("23505") | Some("2067") | Some("1555")
                )
        }
        _ => false,
    }
}

/// Reads a column, turning a type mismatch into [`Error::Corrupt`].
pub fn col<'r, T>(row: &'r AnyRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    use sqlx::Row;
    row.try_get(name)
        .map_err(|e| Error::Corrupt(format!("column {name}: {e}")))
}

/// A row as a JSON object (for exports): integers, reals and text as they are, bytes as hex,
/// NULL as null, column names as keys.
pub fn row_to_json(row: &AnyRow) -> serde_json::Value {
    use sqlx::{Column, Row};
    let mut m = serde_json::Map::new();
    for (i, c) in row.columns().iter().enumerate() {
        let v = if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
            v.map(serde_json::Value::from)
        } else if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
            v.map(serde_json::Value::from)
        } else if let Ok(v) = row.try_get::<Option<String>, _>(i) {
            v.map(serde_json::Value::from)
        } else if let Ok(v) = row.try_get::<Option<Vec<u8>>, _>(i) {
            v.map(|b| serde_json::Value::from(hex::encode(b)))
        } else {
            None
        };
        m.insert(c.name().to_string(), v.unwrap_or(serde_json::Value::Null));
    }
    serde_json::Value::Object(m)
}

/// Parses a stored enum-like text column.
pub fn parse_col<T: FromStr>(row: &AnyRow, name: &str) -> Result<T> {
    let s: String = col(row, name)?;
    s.parse()
        .map_err(|_| Error::Corrupt(format!("column {name}: unexpected value {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
    }

    #[test]
    fn sqlite_urls_create_the_file_unless_told_otherwise() {
        assert_eq!(
            sqlite_url_with_create("sqlite://a.db"),
            "sqlite://a.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url_with_create("sqlite://a.db?mode=ro"),
            "sqlite://a.db?mode=ro"
        );
    }
}
