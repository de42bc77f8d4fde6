-- Identity hardening (ADR 0013). Kept in step with
-- migrations/sqlite/0002_identity_sealed_totp_and_unknown_lockout.sql.

-- TOTP secrets are sealed at rest from this version on: totp_secret and totp_pending_secret hold
-- 'v1:' + hex(nonce || ciphertext || tag), and this column names the key that sealed the row's
-- values ('dev' for the public development key, else a hash of the key). Rows written before
-- this migration hold plain hex and NULL here; the server seals them on their next use (or at
-- start) once FITEDGE_SECRET_KEY is set: SQL cannot encrypt, so this file leaves them as they are.
ALTER TABLE users ADD COLUMN totp_key_id TEXT;

-- Failed sign-ins for addresses without an account, counted and locked like an account's
-- (users.failed_logins, users.locked_until), so that the answers (401, then 423 with
-- Retry-After) do not tell which addresses are registered. Keyed by an HMAC of the normalised
-- address under the server key: the address itself is not stored.
CREATE TABLE login_failures (
    email_hmac   TEXT PRIMARY KEY,
    failed       BIGINT NOT NULL,
    locked_until BIGINT,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX login_failures_updated ON login_failures(updated_at);
