-- Sync (issue 7): automerge documents stored as chunks, their access lists, per-peer sync states,
-- and content-addressed blobs (sample chunks). Times are integer milliseconds UTC. Kept in step
-- with migrations/sqlite/0200_sync.sql (only the binary type differs). See ADR 0009.

-- One row per document; the owner is the user who first sent changes for its id.
CREATE TABLE sync_docs (
    id                  TEXT PRIMARY KEY,        -- automerge-repo document id (Base58Check)
    owner_id            TEXT NOT NULL,
    kind                TEXT NOT NULL,           -- fitedge.profile | fitedge.workout | untyped
    size_bytes          BIGINT NOT NULL DEFAULT 0,
    incremental_count   BIGINT NOT NULL DEFAULT 0,
    -- 1 when the server recomputed a completed workout's summary from its chunks and it
    -- disagreed with the document; NULL when never checked.
    summary_mismatch    BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX sync_docs_owner ON sync_docs (owner_id);

-- A snapshot (automerge save) followed by incremental changes, in seq order.
CREATE TABLE sync_chunks (
    doc_id      TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    kind        TEXT NOT NULL,                   -- snapshot | incremental
    data        BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (doc_id, seq)
);

-- Shares: who besides the owner may read or write a document.
CREATE TABLE sync_acl (
    doc_id      TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    access      TEXT NOT NULL,                   -- read | write
    granted_at  BIGINT NOT NULL,
    PRIMARY KEY (doc_id, user_id)
);
CREATE INDEX sync_acl_user ON sync_acl (user_id);

-- automerge sync state per (user, peer storage id or peer id, document).
CREATE TABLE sync_states (
    user_id     TEXT NOT NULL,
    peer_key    TEXT NOT NULL,
    doc_id      TEXT NOT NULL,
    state       BYTEA NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, peer_key, doc_id)
);
CREATE INDEX sync_states_doc ON sync_states (doc_id);

-- Which blobs a workout document references (its chunks[].sha256), kept on every commit.
CREATE TABLE sync_doc_blobs (
    doc_id      TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    PRIMARY KEY (doc_id, sha256)
);
CREATE INDEX sync_doc_blobs_sha ON sync_doc_blobs (sha256);

-- Content-addressed blobs and who uploaded them.
CREATE TABLE blobs (
    sha256      TEXT PRIMARY KEY,
    data        BYTEA NOT NULL,
    size_bytes  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE blob_uploaders (
    sha256      TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    uploaded_at BIGINT NOT NULL,
    PRIMARY KEY (sha256, user_id)
);
CREATE INDEX blob_uploaders_user ON blob_uploaders (user_id);
