-- Each user's profile document id (ADR 0012: derived from the user id, so anyone who knows a
-- user id can compute it). Reserved here at registration, so the server can refuse any other
-- document created at that id. Users from before this migration are filled in by the server at
-- start (the id is a SHA-256, which SQLite cannot compute in SQL). Kept in step with the other
-- backend's copy.
CREATE TABLE sync_profile_ids (
    doc_id   TEXT PRIMARY KEY,
    user_id  TEXT NOT NULL UNIQUE
);
