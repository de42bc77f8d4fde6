//! SQL storage of sync documents: chunks (a snapshot plus incremental changes, compacted after
//! `sync_compact_after` incrementals), the access list, per-peer sync states. Written in the SQL
//! subset both backends share (ADR 0006); see ADR 0009 for the choices.

use automerge::{Automerge, SaveOptions};
use fitedge_core::sync::protocol::DocumentId;

use crate::db::{col, Backend, Tx};
use crate::error::{ApiError, Error, Result};
use crate::state::AppState;

/// The PostgreSQL channel nodes tell each other about committed changes and revoked shares on.
pub const NOTIFY_CHANNEL: &str = "fitedge_sync";

/// How a revocation notice starts: `revoke <document id> <user id>` (a change notice is the bare
/// document id, which never contains a space; older nodes ignore what does not parse as one).
const REVOKE_PREFIX: &str = "revoke ";

/// A notice on [`NOTIFY_CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A change to the document was committed: reload it.
    Changed(DocumentId),
    /// The user's share of the document was revoked: their links stop syncing it.
    Revoked(DocumentId, String),
}

impl Notice {
    /// Reads a notice's payload; `None` for anything else.
    pub fn parse(payload: &str) -> Option<Notice> {
        match payload.strip_prefix(REVOKE_PREFIX) {
            Some(rest) => {
                let (doc, user) = rest.split_once(' ')?;
                Some(Notice::Revoked(doc.parse().ok()?, user.to_string()))
            }
            None => payload.parse().ok().map(Notice::Changed),
        }
    }

    fn payload(&self) -> String {
        match self {
            Notice::Changed(id) => id.to_string(),
            Notice::Revoked(id, user) => format!("{REVOKE_PREFIX}{id} {user}"),
        }
    }
}

/// Sends `notice` on PostgreSQL, delivered when `tx` commits and never for a rolled-back one;
/// nothing on SQLite (one node).
async fn notify(tx: &mut Tx, backend: Backend, notice: &Notice) -> Result<()> {
    if backend == Backend::Postgres {
        // pg_notify returns void, which the Any driver cannot decode: select a constant instead.
        sqlx::query("SELECT 1 AS sent FROM (SELECT pg_notify($1, $2)) AS n")
            .bind(NOTIFY_CHANNEL)
            .bind(notice.payload())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// What a user may do with a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    Write,
    Owner,
}

impl Access {
    pub fn can_write(self) -> bool {
        self >= Access::Write
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Owner => "owner",
        }
    }
}

/// A document as loaded from SQL.
#[derive(Debug)]
pub struct Loaded {
    pub doc: Automerge,
    pub owner_id: String,
    pub kind: String,
    pub size_bytes: i64,
    /// Highest chunk sequence number read; a reload reads only what came after.
    pub max_seq: i64,
}

/// The caller's access to `id`; `None` both when the document does not exist and when the user
/// may not see it (the two must look the same from outside).
pub async fn access(state: &AppState, id: &DocumentId, user_id: &str) -> Result<Option<Access>> {
    let id = id.to_string();
    let row = sqlx::query(
        "SELECT d.owner_id, a.access FROM sync_docs d
         LEFT JOIN sync_acl a ON a.doc_id = d.id AND a.user_id = $2
         WHERE d.id = $1",
    )
    .bind(&id)
    .bind(user_id)
    .fetch_optional(state.db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let owner: String = col(&row, "owner_id")?;
    if owner == user_id {
        return Ok(Some(Access::Owner));
    }
    let a: Option<String> = col(&row, "access")?;
    Ok(match a.as_deref() {
        Some("write") => Some(Access::Write),
        Some("read") => Some(Access::Read),
        _ => None,
    })
}

/// The owner of `id`, if the document exists.
pub async fn owner_of(state: &AppState, id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT owner_id FROM sync_docs WHERE id = $1")
            .bind(id)
            .fetch_optional(state.db.pool())
            .await?,
    )
}

/// Reserves `user_id`'s profile document id (ADR 0012) inside the registration transaction, so
/// no other document can be created there.
pub async fn reserve_profile_id(tx: &mut Tx, user_id: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO sync_profile_ids (doc_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(fitedge_core::sync::docs::profile_document_id(user_id).to_string())
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What [`reserve_missing_profile_ids`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    /// Users whose profile id was reserved now (accounts from before the reservation existed).
    pub reserved: usize,
    /// Documents found at a user's profile id that are not that user's profile: made before
    /// the reservation, by another user or as another kind. Logged for the operator; the
    /// server does not delete data on its own.
    pub squatted: Vec<String>,
}

/// Reserves the profile id of every user who has none yet (run at every start; a no-op once
/// all are reserved) and reports documents that already sit at a reserved id as anything other
/// than its user's profile.
pub async fn reserve_missing_profile_ids(db: &crate::db::Db) -> Result<Reserved> {
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM users WHERE id NOT IN (SELECT user_id FROM sync_profile_ids) ORDER BY id",
    )
    .fetch_all(db.pool())
    .await?;
    let mut out = Reserved::default();
    for batch in missing.chunks(500) {
        let batch = batch.to_vec();
        db.write(|tx| {
            let batch = batch.clone();
            Box::pin(async move {
                for user_id in &batch {
                    reserve_profile_id(tx, user_id).await?;
                }
                Ok(())
            })
        })
        .await?;
        out.reserved += batch.len();
    }
    out.squatted = sqlx::query_scalar(
        "SELECT d.id FROM sync_docs d JOIN sync_profile_ids p ON p.doc_id = d.id
         WHERE d.owner_id <> p.user_id OR d.kind <> $1 ORDER BY d.id",
    )
    .bind(fitedge_core::sync::docs::PROFILE_TYPE)
    .fetch_all(db.pool())
    .await?;
    Ok(out)
}

fn apply_chunks(doc: &mut Automerge, chunks: &[(i64, Vec<u8>)]) -> Result<i64> {
    let mut max = 0;
    for (seq, data) in chunks {
        doc.load_incremental(data)
            .map_err(|e| Error::Corrupt(format!("sync chunk {seq}: {e}")))?;
        max = max.max(*seq);
    }
    Ok(max)
}

async fn chunks_after<'e, E>(exec: E, id: &str, after: i64) -> Result<Vec<(i64, Vec<u8>)>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows = sqlx::query(
        "SELECT seq, data FROM sync_chunks WHERE doc_id = $1 AND seq > $2 ORDER BY seq",
    )
    .bind(id)
    .bind(after)
    .fetch_all(exec)
    .await?;
    rows.iter()
        .map(|r| Ok((col::<i64>(r, "seq")?, col::<Vec<u8>>(r, "data")?)))
        .collect()
}

/// Loads a document from its chunks.
pub async fn load(state: &AppState, id: &DocumentId) -> Result<Option<Loaded>> {
    let sid = id.to_string();
    let row = sqlx::query("SELECT owner_id, kind, size_bytes FROM sync_docs WHERE id = $1")
        .bind(&sid)
        .fetch_optional(state.db.pool())
        .await?;
    let Some(row) = row else { return Ok(None) };
    let chunks = chunks_after(state.db.pool(), &sid, 0).await?;
    let mut doc = Automerge::new();
    let max_seq = apply_chunks(&mut doc, &chunks)?;
    Ok(Some(Loaded {
        doc,
        owner_id: col(&row, "owner_id")?,
        kind: col(&row, "kind")?,
        size_bytes: col(&row, "size_bytes")?,
        max_seq,
    }))
}

/// Merges the chunks stored after `after` into `doc` (another node's changes); the new highest
/// sequence number.
pub async fn refresh(
    state: &AppState,
    id: &DocumentId,
    doc: &mut Automerge,
    after: i64,
) -> Result<i64> {
    let chunks = chunks_after(state.db.pool(), &id.to_string(), after).await?;
    let max = apply_chunks(doc, &chunks)?;
    Ok(max.max(after))
}

/// One accepted change to commit.
#[derive(Debug, Clone)]
pub struct Commit {
    pub id: DocumentId,
    /// The user whose link sent the change (checked for the blobs it names).
    pub committer: String,
    /// `Some(user)`: the document is new and `user` owns it (refused if the id is taken).
    pub create_owner: Option<String>,
    /// `doc.save_after(old heads)`.
    pub incremental: Vec<u8>,
    pub kind: String,
    /// For workouts: the blob hashes the document references now.
    pub blob_refs: Option<Vec<String>>,
}

/// What a commit did.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// The incremental chunk's sequence number.
    pub first_seq: i64,
    /// The highest sequence number now stored (the snapshot's after a compaction).
    pub seq: i64,
    pub size_bytes: i64,
    pub compacted: bool,
}

/// Why [`commit`] stored nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotCommitted {
    /// A new document whose id is taken (or reserved for a profile it is not), or an existing
    /// one that is gone.
    Unavailable,
    /// The change names a blob (`chunks[].sha256`) the document did not name before, and the
    /// committer neither uploaded it nor may read a document that names it (see
    /// `may_name_blob`): a hash alone must not open a blob.
    BlobRefused(String),
}

/// Stores one change in a serializable transaction: the chunk, compaction when due, the blob
/// references, and (PostgreSQL) a `NOTIFY` delivered at commit. Refused, with nothing written:
/// a new document whose id is already taken, or reserved for another user's profile or for its
/// creator's profile alone; a change naming a blob its committer may not name.
pub async fn commit(
    state: &AppState,
    c: Commit,
) -> Result<std::result::Result<Committed, NotCommitted>> {
    let now = state.now().as_millis();
    let compact_after = i64::from(state.config.sync_compact_after.max(1));
    let backend = state.db.backend();
    state
        .db
        .write(move |tx: &mut Tx| {
            let c = c.clone();
            Box::pin(async move { commit_in(tx, &c, now, compact_after, backend).await })
        })
        .await
}

/// Whether `user_id` may name blob `sha256` in document `doc_id`, which does not name it yet:
/// they uploaded it, or they may read another document that names it (and so may read the blob
/// already), or nobody has it or names it yet (a device syncs a workout before uploading its
/// chunks; whoever names a hash first claims it, and anyone else must upload the bytes). One
/// query in the subset both backends share; run inside the commit's transaction.
async fn may_name_blob(tx: &mut Tx, doc_id: &str, sha256: &str, user_id: &str) -> Result<bool> {
    let row = sqlx::query(
        "SELECT 1 AS ok WHERE
           EXISTS (SELECT 1 FROM blob_uploaders u WHERE u.sha256 = $1 AND u.user_id = $2)
           OR EXISTS (SELECT 1 FROM sync_doc_blobs r JOIN sync_docs d ON d.id = r.doc_id
                      WHERE r.sha256 = $1 AND r.doc_id <> $3 AND (d.owner_id = $2 OR EXISTS
                        (SELECT 1 FROM sync_acl a WHERE a.doc_id = d.id AND a.user_id = $2)))
           OR (NOT EXISTS (SELECT 1 FROM blobs b WHERE b.sha256 = $1)
               AND NOT EXISTS (SELECT 1 FROM sync_doc_blobs r
                               WHERE r.sha256 = $1 AND r.doc_id <> $3))",
    )
    .bind(sha256)
    .bind(user_id)
    .bind(doc_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_some())
}

/// The first blob of `c.blob_refs` the document did not name before and the committer may not
/// name; checked before anything is written.
async fn refused_blob(tx: &mut Tx, c: &Commit, id: &str) -> Result<Option<String>> {
    let Some(refs) = &c.blob_refs else {
        return Ok(None);
    };
    if refs.is_empty() {
        return Ok(None);
    }
    // A document being created names nothing yet (if the id is taken, the insert refuses it).
    let named: std::collections::HashSet<String> = if c.create_owner.is_some() {
        std::collections::HashSet::new()
    } else {
        sqlx::query_scalar("SELECT sha256 FROM sync_doc_blobs WHERE doc_id = $1")
            .bind(id)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect()
    };
    for h in refs.iter().filter(|h| !named.contains(*h)) {
        if !may_name_blob(tx, id, h, &c.committer).await? {
            return Ok(Some(h.clone()));
        }
    }
    Ok(None)
}

async fn commit_in(
    tx: &mut Tx,
    c: &Commit,
    now: i64,
    compact_after: i64,
    backend: Backend,
) -> Result<std::result::Result<Committed, NotCommitted>> {
    let id = c.id.to_string();
    if let Some(h) = refused_blob(tx, c, &id).await? {
        return Ok(Err(NotCommitted::BlobRefused(h)));
    }
    let inc_len = i64::try_from(c.incremental.len()).unwrap_or(i64::MAX);
    let row = match &c.create_owner {
        Some(owner) => {
            // A user's profile id (reserved at registration, ADR 0012) holds only that user's
            // profile: for anything else the id counts as taken. Checked in the insert itself,
            // so it is atomic with it and costs no extra round trip to the pool.
            sqlx::query(
                "INSERT INTO sync_docs (id, owner_id, kind, size_bytes, incremental_count,
                                        created_at, updated_at)
                 SELECT $1, $2, $3, $4, 1, $5, $5
                 WHERE NOT EXISTS (SELECT 1 FROM sync_profile_ids r WHERE r.doc_id = $1
                                     AND NOT (r.user_id = $2 AND $3 = $6))
                 ON CONFLICT (id) DO NOTHING
                 RETURNING incremental_count, size_bytes",
            )
            .bind(&id)
            .bind(owner)
            .bind(&c.kind)
            .bind(inc_len)
            .bind(now)
            .bind(fitedge_core::sync::docs::PROFILE_TYPE)
            .fetch_optional(&mut **tx)
            .await?
        }
        None => {
            sqlx::query(
                "UPDATE sync_docs SET kind = $2, size_bytes = size_bytes + $3,
                        incremental_count = incremental_count + 1, updated_at = $4
                 WHERE id = $1 RETURNING incremental_count, size_bytes",
            )
            .bind(&id)
            .bind(&c.kind)
            .bind(inc_len)
            .bind(now)
            .fetch_optional(&mut **tx)
            .await?
        }
    };
    let Some(row) = row else {
        return Ok(Err(NotCommitted::Unavailable));
    };
    let incrementals: i64 = col(&row, "incremental_count")?;
    let mut size: i64 = col(&row, "size_bytes")?;
    let next: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM sync_chunks WHERE doc_id = $1")
            .bind(&id)
            .fetch_one(&mut **tx)
            .await?;
    sqlx::query(
        "INSERT INTO sync_chunks (doc_id, seq, kind, data, created_at)
         VALUES ($1, $2, 'incremental', $3, $4)",
    )
    .bind(&id)
    .bind(next)
    .bind(c.incremental.clone())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let mut seq = next;
    let compacted = incrementals >= compact_after;
    if compacted {
        // Built from what SQL holds (not from this node's memory), so changes another node
        // committed in between are kept.
        let chunks = chunks_after(&mut **tx, &id, 0).await?;
        let mut doc = Automerge::new();
        apply_chunks(&mut doc, &chunks)?;
        // Applied changes only: a change waiting for its dependencies was never checked (older
        // servers could store one at creation); the peer that sent it sends it again when asked.
        let snapshot = doc.save_with_options(SaveOptions {
            retain_orphans: false,
            ..SaveOptions::default()
        });
        size = i64::try_from(snapshot.len()).unwrap_or(i64::MAX);
        seq = next + 1;
        sqlx::query("DELETE FROM sync_chunks WHERE doc_id = $1 AND seq <= $2")
            .bind(&id)
            .bind(next)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO sync_chunks (doc_id, seq, kind, data, created_at)
             VALUES ($1, $2, 'snapshot', $3, $4)",
        )
        .bind(&id)
        .bind(seq)
        .bind(snapshot)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        sqlx::query("UPDATE sync_docs SET incremental_count = 0, size_bytes = $2 WHERE id = $1")
            .bind(&id)
            .bind(size)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(refs) = &c.blob_refs {
        sqlx::query("DELETE FROM sync_doc_blobs WHERE doc_id = $1")
            .bind(&id)
            .execute(&mut **tx)
            .await?;
        for h in refs {
            sqlx::query(
                "INSERT INTO sync_doc_blobs (doc_id, sha256) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&id)
            .bind(h)
            .execute(&mut **tx)
            .await?;
        }
    }
    notify(tx, backend, &Notice::Changed(c.id)).await?;
    Ok(Ok(Committed {
        first_seq: next,
        seq,
        size_bytes: size,
        compacted,
    }))
}

/// The kept sync state of (user, peer, document).
pub async fn sync_state(
    state: &AppState,
    user_id: &str,
    peer_key: &str,
    id: &DocumentId,
) -> Result<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar(
        "SELECT state FROM sync_states WHERE user_id = $1 AND peer_key = $2 AND doc_id = $3",
    )
    .bind(user_id)
    .bind(peer_key)
    .bind(id.to_string())
    .fetch_optional(state.db.pool())
    .await?)
}

/// Keeps the sync states of a link that ends.
pub async fn save_sync_states(
    state: &AppState,
    user_id: &str,
    peer_key: &str,
    states: Vec<(DocumentId, Vec<u8>)>,
) -> Result<()> {
    if states.is_empty() {
        return Ok(());
    }
    let now = state.now().as_millis();
    let (user_id, peer_key) = (user_id.to_string(), peer_key.to_string());
    state
        .db
        .write(move |tx: &mut Tx| {
            let (states, user_id, peer_key) = (states.clone(), user_id.clone(), peer_key.clone());
            Box::pin(async move {
                for (id, s) in states {
                    sqlx::query(
                        "INSERT INTO sync_states (user_id, peer_key, doc_id, state, updated_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (user_id, peer_key, doc_id)
                         DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                    )
                    .bind(&user_id)
                    .bind(&peer_key)
                    .bind(id.to_string())
                    .bind(s)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            })
        })
        .await
}

/// Shares `id` with `user_id` (`read` or `write`); the caller checked ownership. `email` is the
/// address the owner gave, when they shared by email (kept when they later share by id: they
/// knew it already).
pub async fn put_share(
    state: &AppState,
    id: &str,
    user_id: &str,
    email: Option<&str>,
    access: Access,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sync_acl (doc_id, user_id, access, granted_at, email) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (doc_id, user_id) DO UPDATE SET access = excluded.access,
                                                    granted_at = excluded.granted_at,
                                                    email = COALESCE(excluded.email, sync_acl.email)",
    )
    .bind(id)
    .bind(user_id)
    .bind(access.as_str())
    .bind(state.now().as_millis())
    .bind(email)
    .execute(state.db.pool())
    .await?;
    Ok(())
}

/// Revokes a share; whether there was one. On PostgreSQL the revocation is announced on
/// [`NOTIFY_CHANNEL`] at commit, so every node stops the user's links syncing the document
/// ([`super::Hub::revoke`]); the caller tells this node's hub itself (SQLite has no notices).
pub async fn delete_share(state: &AppState, id: &DocumentId, user_id: &str) -> Result<bool> {
    let backend = state.db.backend();
    let (id, user_id) = (*id, user_id.to_string());
    state
        .db
        .write(move |tx: &mut Tx| {
            let user_id = user_id.clone();
            Box::pin(async move {
                let r = sqlx::query("DELETE FROM sync_acl WHERE doc_id = $1 AND user_id = $2")
                    .bind(id.to_string())
                    .bind(&user_id)
                    .execute(&mut **tx)
                    .await?;
                let revoked = r.rows_affected() > 0;
                if revoked {
                    notify(tx, backend, &Notice::Revoked(id, user_id)).await?;
                }
                Ok(revoked)
            })
        })
        .await
}

/// One share of a document.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Share {
    pub user_id: String,
    /// The address you shared it with; null when you shared by user id (the account's address
    /// is not disclosed).
    pub email: Option<String>,
    /// `read` or `write`.
    pub access: String,
    pub granted_at: String,
}

pub async fn list_shares(state: &AppState, id: &str) -> Result<Vec<Share>> {
    let rows = sqlx::query(
        "SELECT user_id, email, access, granted_at FROM sync_acl
         WHERE doc_id = $1 ORDER BY granted_at, user_id",
    )
    .bind(id)
    .fetch_all(state.db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Share {
                user_id: col(r, "user_id")?,
                email: col(r, "email")?,
                access: col(r, "access")?,
                granted_at: fitedge_core::time::Timestamp(col(r, "granted_at")?).to_rfc3339(),
            })
        })
        .collect()
}

/// The GDPR export of a user's sync data: documents owned (with their automerge bytes, hex),
/// shares granted and received, blobs uploaded.
pub async fn export_user(state: &AppState, user_id: &str) -> Result<serde_json::Value> {
    let pool = state.db.pool();
    let docs = sqlx::query(
        "SELECT id, kind, size_bytes, summary_mismatch, created_at, updated_at FROM sync_docs
         WHERE owner_id = $1 ORDER BY created_at, id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    let mut documents = Vec::new();
    for r in &docs {
        let id: String = col(r, "id")?;
        let chunks = chunks_after(pool, &id, 0).await?;
        let mut doc = Automerge::new();
        apply_chunks(&mut doc, &chunks)?;
        let mismatch: Option<i64> = col(r, "summary_mismatch")?;
        documents.push(serde_json::json!({
            "id": id,
            "kind": col::<String>(r, "kind")?,
            "size_bytes": col::<i64>(r, "size_bytes")?,
            "summary_mismatch": mismatch.map(|m| m != 0),
            "created_at": fitedge_core::time::Timestamp(col(r, "created_at")?).to_rfc3339(),
            "updated_at": fitedge_core::time::Timestamp(col(r, "updated_at")?).to_rfc3339(),
            "automerge_hex": hex::encode(doc.save()),
        }));
    }
    let granted = sqlx::query(
        "SELECT a.doc_id, a.user_id, a.access FROM sync_acl a JOIN sync_docs d ON d.id = a.doc_id
         WHERE d.owner_id = $1 ORDER BY a.doc_id, a.user_id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(serde_json::json!({
            "document_id": col::<String>(r, "doc_id")?,
            "user_id": col::<String>(r, "user_id")?,
            "access": col::<String>(r, "access")?,
        }))
    })
    .collect::<Result<Vec<_>>>()?;
    let received =
        sqlx::query("SELECT doc_id, access FROM sync_acl WHERE user_id = $1 ORDER BY doc_id")
            .bind(user_id)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| {
                Ok(serde_json::json!({
                    "document_id": col::<String>(r, "doc_id")?,
                    "access": col::<String>(r, "access")?,
                }))
            })
            .collect::<Result<Vec<_>>>()?;
    let blobs = sqlx::query(
        "SELECT u.sha256, b.size_bytes, u.uploaded_at FROM blob_uploaders u
         JOIN blobs b ON b.sha256 = u.sha256 WHERE u.user_id = $1 ORDER BY u.uploaded_at, u.sha256",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        let sha: String = col(r, "sha256")?;
        Ok(serde_json::json!({
            "download": format!("/api/v1/blobs/{sha}"),
            "sha256": sha,
            "size_bytes": col::<i64>(r, "size_bytes")?,
            "uploaded_at": fitedge_core::time::Timestamp(col(r, "uploaded_at")?).to_rfc3339(),
        }))
    })
    .collect::<Result<Vec<_>>>()?;
    Ok(serde_json::json!({
        "documents": documents,
        "shares_granted": granted,
        "shares_received": received,
        "blobs": blobs,
    }))
}

/// Removes a user's sync data inside the account-deletion transaction: documents they own (with
/// chunks, shares, sync states, blob references), shares they received, their sync states, their
/// blob uploads, blobs nobody else uploaded, and their profile id reservation.
pub async fn delete_user(tx: &mut Tx, user_id: &str) -> Result<()> {
    for sql in [
        "DELETE FROM sync_chunks WHERE doc_id IN (SELECT id FROM sync_docs WHERE owner_id = $1)",
        "DELETE FROM sync_acl WHERE doc_id IN (SELECT id FROM sync_docs WHERE owner_id = $1)",
        "DELETE FROM sync_states WHERE doc_id IN (SELECT id FROM sync_docs WHERE owner_id = $1)",
        "DELETE FROM sync_doc_blobs WHERE doc_id IN (SELECT id FROM sync_docs WHERE owner_id = $1)",
        "DELETE FROM sync_docs WHERE owner_id = $1",
        "DELETE FROM sync_acl WHERE user_id = $1",
        "DELETE FROM sync_states WHERE user_id = $1",
        "DELETE FROM blob_uploaders WHERE user_id = $1",
        "DELETE FROM sync_profile_ids WHERE user_id = $1",
    ] {
        sqlx::query(sql).bind(user_id).execute(&mut **tx).await?;
    }
    sqlx::query("DELETE FROM blobs WHERE sha256 NOT IN (SELECT sha256 FROM blob_uploaders)")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Every stored document id, in order (operators, the demo's server view).
pub async fn all_ids(state: &AppState) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT id FROM sync_docs ORDER BY id")
        .fetch_all(state.db.pool())
        .await?)
}

/// The ids of the documents a user owns (to drop them from memory after deletion).
pub async fn owned_ids(state: &AppState, user_id: &str) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM sync_docs WHERE owner_id = $1")
            .bind(user_id)
            .fetch_all(state.db.pool())
            .await?,
    )
}

/// 404 for anyone but the owner (existence is not revealed).
pub async fn require_owner(state: &AppState, id: &str, user_id: &str) -> Result<(), ApiError> {
    match owner_of(state, id).await? {
        Some(o) if o == user_id => Ok(()),
        _ => Err(ApiError::not_found()),
    }
}
