//! The SQLite connection layer: one writer, separate readers, pragmas, migrations, the storage
//! key check, and interrupting long queries.
//!
//! Pragmas, each with its reason:
//! - `journal_mode = WAL`: readers never block the writer, and a crash mid-write leaves the
//!   database intact (the WAL is replayed or discarded on the next open);
//! - `synchronous = FULL`: a committed transaction survives power loss. What the app was told is
//!   saved must not disappear; the cost is one fsync per commit, and the recorder commits about
//!   once a second;
//! - `foreign_keys = ON`: records and gear links cannot outlive their workout;
//! - `cache_size = -1024` (1 MiB per connection): a watch records for a day on little memory, and
//!   the recorder's writes are appends that gain nothing from a bigger cache;
//! - `busy_timeout = 5000`: another process holding the write lock briefly is waited for rather
//!   than reported as an error;
//! - readers: `query_only = ON`, so a read path can never write by mistake.
//!
//! Migrations: `PRAGMA user_version` holds [`SCHEMA_VERSION`]; [`migrate`] walks the ladder one
//! step at a time, each step in its own transaction (SQL, plus a Rust data step where the data
//! changes shape). A database from a newer build is refused, not damaged.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{
    Connection, InterruptHandle, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use crate::crypto::{CryptoError, StorageKey};
use crate::error::{Error, Result};

pub const SCHEMA_VERSION: i64 = 5;

const V1: &str = "CREATE TABLE workouts (
        id TEXT PRIMARY KEY,
        sport TEXT NOT NULL,
        start_time INTEGER NOT NULL,
        end_time INTEGER NOT NULL,
        timer_s REAL NOT NULL,
        distance_m REAL,
        source_file TEXT,
        source_hash TEXT,
        source_session INTEGER,
        summary_json TEXT NOT NULL,
        device_json TEXT,
        created_at INTEGER NOT NULL
     );
     CREATE INDEX workouts_start ON workouts(start_time);
     CREATE INDEX workouts_sport_start ON workouts(sport, start_time);
     CREATE UNIQUE INDEX workouts_source ON workouts(source_hash, source_session);
     CREATE TABLE samples (
        workout_id TEXT NOT NULL REFERENCES workouts(id) ON DELETE CASCADE,
        channel TEXT NOT NULL,
        count INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (workout_id, channel)
     );
     CREATE TABLE personal_records (
        sport TEXT NOT NULL,
        record TEXT NOT NULL,
        value REAL NOT NULL,
        workout_id TEXT NOT NULL REFERENCES workouts(id) ON DELETE CASCADE,
        achieved_at INTEGER NOT NULL,
        previous REAL
     );
     CREATE INDEX personal_records_key ON personal_records(sport, record, achieved_at);";

/// v2: samples become chunks (health channels sealed), workouts gain the columns the read
/// models aggregate and lose their JSON documents to a side table (history queries scan narrow
/// rows), and recordings, profile and gear get tables.
const V2: &str = "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
     CREATE TABLE sample_chunks (
        workout_id TEXT NOT NULL,
        channel INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        t_first INTEGER NOT NULL,
        t_last INTEGER NOT NULL,
        count INTEGER NOT NULL,
        sealed INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (workout_id, channel, seq)
     ) WITHOUT ROWID;
     CREATE TABLE gear (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        service_life_km REAL,
        retired INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
     );
     ALTER TABLE workouts ADD COLUMN status TEXT NOT NULL DEFAULT 'completed';
     ALTER TABLE workouts ADD COLUMN elapsed_s REAL NOT NULL DEFAULT 0;
     ALTER TABLE workouts ADD COLUMN moving_s REAL NOT NULL DEFAULT 0;
     ALTER TABLE workouts ADD COLUMN calories_kcal REAL NOT NULL DEFAULT 0;
     ALTER TABLE workouts ADD COLUMN ascent_m REAL;
     ALTER TABLE workouts ADD COLUMN avg_hr REAL;
     ALTER TABLE workouts ADD COLUMN title TEXT;
     ALTER TABLE workouts ADD COLUMN gear_id TEXT REFERENCES gear(id) ON DELETE SET NULL;
     CREATE INDEX workouts_gear ON workouts(gear_id);
     CREATE TABLE recordings (
        id TEXT PRIMARY KEY,
        sport TEXT,
        profile_json TEXT NOT NULL,
        config_json TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
     );
     CREATE TABLE recording_commands (
        recording_id TEXT NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        command TEXT NOT NULL,
        PRIMARY KEY (recording_id, seq)
     );
     CREATE TABLE profile (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL,
        json TEXT NOT NULL
     );
     CREATE TRIGGER workouts_delete_chunks AFTER DELETE ON workouts BEGIN
        DELETE FROM sample_chunks WHERE workout_id = OLD.id;
     END;
     CREATE TABLE workout_docs (
        workout_id TEXT PRIMARY KEY REFERENCES workouts(id) ON DELETE CASCADE,
        summary_json TEXT NOT NULL,
        device_json TEXT
     );
     INSERT INTO workout_docs (workout_id, summary_json, device_json)
        SELECT id, summary_json, device_json FROM workouts;
     ALTER TABLE workouts DROP COLUMN summary_json;
     ALTER TABLE workouts DROP COLUMN device_json;
     DROP INDEX workouts_start;
     CREATE INDEX workouts_start ON workouts(status, start_time, id);
     CREATE INDEX workouts_status_sport_start ON workouts(status, sport, start_time, id);";

/// v3: sync. Sample chunks become content-addressed (`sha256` of the stored bytes, the blob the
/// server keeps); Automerge documents (one per workout, one profile), each server's sync state
/// per document, the blobs already uploaded to a server, blobs downloaded for documents that
/// came from elsewhere, and the REST outbox. See [`crate::sync::local`] and
/// [`crate::sync::outbox`].
const V3: &str = "ALTER TABLE sample_chunks ADD COLUMN sha256 TEXT;
     CREATE INDEX sample_chunks_sha256 ON sample_chunks(sha256);
     CREATE TABLE sync_docs (
        doc_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('profile', 'workout', 'other')),
        workout_id TEXT UNIQUE,
        bytes BLOB NOT NULL,
        heads TEXT NOT NULL,
        updated_at INTEGER NOT NULL
     );
     CREATE TABLE sync_states (
        server TEXT NOT NULL,
        doc_id TEXT NOT NULL REFERENCES sync_docs(doc_id) ON DELETE CASCADE,
        state BLOB NOT NULL,
        PRIMARY KEY (server, doc_id)
     ) WITHOUT ROWID;
     CREATE TABLE sync_uploaded (
        server TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        PRIMARY KEY (server, sha256)
     ) WITHOUT ROWID;
     CREATE TABLE sync_blobs (
        sha256 TEXT PRIMARY KEY,
        data BLOB NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        idempotency_key TEXT NOT NULL UNIQUE,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        body TEXT,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
        response_status INTEGER,
        response_body TEXT,
        last_error TEXT
     );
     CREATE INDEX outbox_pending ON outbox(status, seq);";

/// v4: workout documents from other devices enter the read models ([`crate::sync::apply`]).
/// Per document: the heads the read models reflect (`applied`), why it is not applied
/// (`problem`), and whether another user shared it (`shared`: not this user's history); per
/// received workout, whether its samples are stored and its records judged. The data step
/// gives the documents of workouts recorded here what another device needs to open them.
const V4: &str = "ALTER TABLE sync_docs ADD COLUMN applied TEXT;
     ALTER TABLE sync_docs ADD COLUMN problem TEXT;
     ALTER TABLE sync_docs ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE sync_received (
        workout_id TEXT PRIMARY KEY REFERENCES workouts(id) ON DELETE CASCADE,
        samples INTEGER NOT NULL DEFAULT 0,
        records_judged INTEGER NOT NULL DEFAULT 0
     ) WITHOUT ROWID;";

/// v5: a recording keeps its rejected-sample counts (per channel and reason), written with each
/// flush. Rejected samples are never stored, so a recording recovered after a crash could not
/// count them from its chunks.
const V5: &str = "ALTER TABLE recordings ADD COLUMN rejected_json TEXT;";

type DataStep = fn(&Transaction<'_>, Option<&StorageKey>) -> Result<()>;

const LADDER: &[(&str, Option<DataStep>)] = &[
    (V1, None),
    (V2, Some(crate::store::migrate_v1_samples)),
    (V3, Some(crate::sync::local::migrate_v3_documents)),
    (V4, Some(crate::sync::local::migrate_v4_documents)),
    (V5, None),
];

/// Applies the ladder up to `target` (tests use a lower target to build old databases).
pub(crate) fn migrate_to(
    conn: &mut Connection,
    key: Option<&StorageKey>,
    target: i64,
) -> Result<()> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, (sql, data)) in LADDER
        .iter()
        .enumerate()
        .skip(found as usize)
        .take((target - found).max(0) as usize)
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        if let Some(step) = data {
            step(&tx, key)?;
        }
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

const KEY_CHECK_AAD: &[u8] = b"fitedge/key-check/v1";
const KEY_CHECK_PLAIN: &[u8] = b"FitEdge storage key check";

/// Verifies the key against the one the database was created with, or records it.
fn check_key(conn: &Connection, key: &StorageKey) -> Result<()> {
    let stored: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match stored {
        Some(sealed) => match key.open(KEY_CHECK_AAD, &sealed) {
            Ok(p) if p == KEY_CHECK_PLAIN => Ok(()),
            Ok(_) | Err(CryptoError::Authentication) | Err(CryptoError::Truncated) => {
                Err(Error::WrongKey)
            }
            Err(e) => Err(Error::Crypto(e)),
        },
        None => {
            let sealed = key.seal(KEY_CHECK_AAD, KEY_CHECK_PLAIN)?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('key_check', ?1)",
                [sealed],
            )?;
            Ok(())
        }
    }
}

fn configure_writer(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -1024)?;
    conn.busy_timeout(std::time::Duration::from_millis(5000))?;
    Ok(())
}

fn configure_reader(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "query_only", "ON")?;
    conn.busy_timeout(std::time::Duration::from_millis(5000))?;
    Ok(())
}

/// Two readers: the app's UI and a background task can read while the recorder writes.
const READERS: usize = 2;

/// The database: exactly one writer connection and a small pool of readers.
pub struct Store {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    interrupts: Vec<InterruptHandle>,
    next: AtomicUsize,
    key: Option<StorageKey>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("readers", &self.readers.len())
            .field("key", &self.key.is_some())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the connection usable: SQLite rolls back an
    // unfinished transaction when the next one begins.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Opens (creating it and its directory if needed) and migrates the database at `path`.
    /// `key` is the 32-byte storage key for health data; a database that already holds a key
    /// check refuses any other key with [`Error::WrongKey`].
    pub fn open(path: &Path, key: Option<StorageKey>) -> Result<Self> {
        Self::open_at_version(path, key, SCHEMA_VERSION)
    }

    pub(crate) fn open_at_version(
        path: &Path,
        key: Option<StorageKey>,
        version: i64,
    ) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut writer = Connection::open(path)?;
        configure_writer(&writer)?;
        migrate_to(&mut writer, key.as_ref(), version)?;
        if version >= 2 {
            if let Some(k) = &key {
                check_key(&writer, k)?;
            }
        }
        let mut readers = Vec::with_capacity(READERS);
        let mut interrupts = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )?;
            configure_reader(&r)?;
            interrupts.push(r.get_interrupt_handle());
            readers.push(Mutex::new(r));
        }
        Ok(Self {
            writer: Mutex::new(writer),
            readers,
            interrupts,
            next: AtomicUsize::new(0),
            key,
        })
    }

    /// An in-memory database (tests, previews): the writer also serves reads.
    pub fn open_in_memory(key: Option<StorageKey>) -> Result<Self> {
        let mut conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate_to(&mut conn, key.as_ref(), SCHEMA_VERSION)?;
        if let Some(k) = &key {
            check_key(&conn, k)?;
        }
        Ok(Self {
            writer: Mutex::new(conn),
            readers: vec![],
            interrupts: vec![],
            next: AtomicUsize::new(0),
            key,
        })
    }

    pub(crate) fn key(&self) -> Option<&StorageKey> {
        self.key.as_ref()
    }

    /// Runs `f` on a reader connection.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        if self.readers.is_empty() {
            return f(&lock(&self.writer));
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        f(&lock(&self.readers[i]))
    }

    /// Runs `f` in one write transaction (`BEGIN IMMEDIATE`: the write lock is taken up front,
    /// so the transaction cannot fail half-way on a lock upgrade). Commits if `f` succeeds,
    /// rolls back otherwise: nothing is ever half written.
    pub fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Interrupts every query running on a reader now: it returns [`Error::Interrupted`].
    /// For a UI that abandons a long history query.
    pub fn interrupt_reads(&self) {
        for h in &self.interrupts {
            h.interrupt();
        }
    }

    pub fn schema_version(&self) -> Result<i64> {
        Ok(lock(&self.writer).pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// `PRAGMA integrity_check`: "ok" when the file is sound.
    pub fn integrity_check(&self) -> Result<String> {
        Ok(lock(&self.writer).query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    /// Moves the WAL into the main file (for measuring size, or before a backup).
    pub fn checkpoint(&self) -> Result<()> {
        lock(&self.writer).execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }
}
