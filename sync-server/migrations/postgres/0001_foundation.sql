-- Identity, idempotency, outbox. Times are integer milliseconds since the Unix epoch (UTC);
-- ids are UUID text. Kept in step with migrations/sqlite/0001_foundation.sql.

CREATE TABLE users (
    id                  TEXT PRIMARY KEY,
    email               TEXT NOT NULL UNIQUE,
    password_hash       TEXT NOT NULL,
    display_name        TEXT NOT NULL,
    birth_date          TEXT NOT NULL,
    role                TEXT NOT NULL DEFAULT 'user',
    tier                TEXT NOT NULL DEFAULT 'free',
    email_verified_at   BIGINT,
    failed_logins       BIGINT NOT NULL DEFAULT 0,
    locked_until        BIGINT,
    totp_secret         TEXT,
    totp_pending_secret TEXT,
    totp_last_step      BIGINT,
    version             BIGINT NOT NULL DEFAULT 1,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    mfa_at       BIGINT,
    ended_at     BIGINT,
    ended_reason TEXT
);
CREATE INDEX sessions_user ON sessions(user_id, created_at);

CREATE TABLE email_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX email_tokens_user ON email_tokens(user_id);

-- No foreign key: the record of an account deletion outlives the account (without its data).
CREATE TABLE audit_events (
    id         TEXT PRIMARY KEY,
    user_id    TEXT,
    kind       TEXT NOT NULL,
    address    TEXT,
    detail     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_events_user ON audit_events(user_id, created_at);

CREATE TABLE idempotency_records (
    scope        TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    state        TEXT NOT NULL,
    status       BIGINT,
    response     BYTEA,
    user_id      TEXT,
    created_at   BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_records_created ON idempotency_records(created_at);
CREATE INDEX idempotency_records_user ON idempotency_records(user_id);

CREATE TABLE outbox (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    aggregate_id    TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    dispatched_at   BIGINT
);
CREATE INDEX outbox_pending ON outbox(dispatched_at, next_attempt_at);

CREATE TABLE outbox_processed (
    handler      TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (handler, event_id)
);
