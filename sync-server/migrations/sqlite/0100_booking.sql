-- Booking context (issue 8): events, bookings (holds), waitlist, notifications recorded from the
-- outbox. Times are integer milliseconds UTC; coordinates are integer microdegrees; money is
-- integer cents. Kept in step with migrations/postgres/0100_booking.sql.

CREATE TABLE booking_events (
    id                  TEXT PRIMARY KEY,
    organizer_id        TEXT NOT NULL,
    title               TEXT NOT NULL,
    sport               TEXT NOT NULL,
    venue_name          TEXT NOT NULL,
    lat_e6              BIGINT NOT NULL,
    lon_e6              BIGINT NOT NULL,
    starts_at           BIGINT NOT NULL,
    ends_at             BIGINT NOT NULL,
    capacity            BIGINT NOT NULL,
    -- held + confirmed bookings; the guarded UPDATE keeps it <= capacity.
    seats_taken         BIGINT NOT NULL DEFAULT 0,
    price_cents         BIGINT NOT NULL,
    currency            TEXT NOT NULL,
    min_age             BIGINT NOT NULL DEFAULT 0,
    public_opens_at     BIGINT NOT NULL,
    priority_opens_at   BIGINT NOT NULL,
    refund_policy       TEXT NOT NULL,
    status              TEXT NOT NULL DEFAULT 'scheduled',
    waitlist_seq        BIGINT NOT NULL DEFAULT 0,
    version             BIGINT NOT NULL DEFAULT 1,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    CHECK (seats_taken >= 0 AND seats_taken <= capacity)
);
CREATE INDEX booking_events_start ON booking_events(starts_at);
CREATE INDEX booking_events_sport ON booking_events(sport, starts_at);

CREATE TABLE bookings (
    id              TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL REFERENCES booking_events(id),
    user_id         TEXT NOT NULL,
    status          TEXT NOT NULL,
    event_day       TEXT NOT NULL,
    amount_cents    BIGINT NOT NULL,
    held_at         BIGINT NOT NULL,
    hold_expires_at BIGINT NOT NULL,
    confirmed_at    BIGINT,
    cancelled_at    BIGINT,
    cancel_reason   TEXT,
    payment_ref     TEXT,
    refund_cents    BIGINT NOT NULL DEFAULT 0,
    refund_status   TEXT,
    from_waitlist   BIGINT NOT NULL DEFAULT 0
);
-- No user holds two seats of one event.
CREATE UNIQUE INDEX bookings_one_active_per_user
    ON bookings(event_id, user_id) WHERE status IN ('held', 'confirmed');
CREATE INDEX bookings_user_day ON bookings(user_id, event_day);
CREATE INDEX bookings_hold_expiry ON bookings(status, hold_expires_at);
CREATE INDEX bookings_event ON bookings(event_id, status);

CREATE TABLE booking_waitlist (
    id         TEXT PRIMARY KEY,
    event_id   TEXT NOT NULL REFERENCES booking_events(id),
    user_id    TEXT NOT NULL,
    -- 0: premium or pro (ahead), 1: free.
    priority   BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    status     TEXT NOT NULL,
    booking_id TEXT,
    joined_at  BIGINT NOT NULL,
    left_at    BIGINT
);
CREATE UNIQUE INDEX booking_waitlist_one_per_user
    ON booking_waitlist(event_id, user_id) WHERE status = 'waiting';
CREATE INDEX booking_waitlist_order ON booking_waitlist(event_id, status, priority, seq);

CREATE TABLE booking_notifications (
    outbox_event_id TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    booking_id      TEXT,
    message         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (outbox_event_id, user_id)
);
CREATE INDEX booking_notifications_user ON booking_notifications(user_id, created_at);
