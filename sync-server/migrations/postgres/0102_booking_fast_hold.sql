-- The common case of a booking on PostgreSQL in one round trip: take the booking lock, check
-- that nothing stands in the way of a plain hold, take a seat, insert the hold and its
-- BookingHeld outbox event, all inside the database. The lock is then held for the function's
-- own few statements and the commit, instead of for several client round trips (the booking
-- benchmark: one contended event is as fast as its lock is short).
--
-- It only ever does the plain hold. Whenever anything else could apply (the event changed since
-- the caller read it, is no longer scheduled or is full; the user already holds a seat, waits,
-- or would reach the daily limit; a hold of the event ran out and must go back to the waitlist
-- first) it returns false having written nothing, and the server runs its general booking
-- transaction, which gives the right answer and message. The server checked the event's
-- booking rules (window, tier, age) against the event as it read it; the UPDATE's WHERE makes
-- sure the event is still that version (every organizer change bumps it).
--
-- Called as an autocommit statement under READ COMMITTED: every statement after the LOCK
-- takes a fresh snapshot, so it sees everything the previous lock holder committed. The lock is
-- the one every booking writer takes (sync-server/src/booking/repo.rs, LOCK). lock_timeout
-- bounds the wait like the server's transaction limit.
CREATE FUNCTION fitedge_book_fast_hold(
    p_event           TEXT,
    p_user            TEXT,
    p_day             TEXT,
    p_now             BIGINT,
    p_daily_limit     BIGINT,
    p_version         BIGINT,
    p_booking_id      TEXT,
    p_amount_cents    BIGINT,
    p_hold_expires_at BIGINT,
    p_outbox_id       TEXT,
    p_outbox_kind     TEXT,
    p_payload         TEXT,
    p_lock_timeout_ms BIGINT
) RETURNS BOOLEAN LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
    LOCK TABLE booking_events IN SHARE ROW EXCLUSIVE MODE;
    IF EXISTS (SELECT 1 FROM bookings WHERE event_id = p_event AND user_id = p_user
                 AND status IN ('held', 'confirmed'))
       OR EXISTS (SELECT 1 FROM booking_waitlist WHERE event_id = p_event AND user_id = p_user
                 AND status = 'waiting')

       OR (SELECT COUNT(*) FROM bookings WHERE user_id = p_user AND event_day = p_day
                 AND status IN ('held', 'confirmed') AND event_id <> p_event) >= p_daily_limit
    THEN
        RETURN false;
    END IF;
    -- first_hold_expiry (migration 0101): no hold of the event may have run out.
    UPDATE booking_events SET seats_taken = seats_taken + 1, updated_at = p_now,
           first_hold_expiry = LEAST(first_hold_expiry, p_hold_expires_at)
     WHERE id = p_event AND status = 'scheduled' AND seats_taken < capacity
       AND version = p_version
       AND (first_hold_expiry IS NULL OR first_hold_expiry > p_now);
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO bookings (id, event_id, user_id, status, event_day, amount_cents, held_at,
                          hold_expires_at, from_waitlist)
    VALUES (p_booking_id, p_event, p_user, 'held', p_day, p_amount_cents, p_now,
            p_hold_expires_at, 0);
    INSERT INTO outbox (id, kind, aggregate_id, payload, created_at, next_attempt_at)
    VALUES (p_outbox_id, p_outbox_kind, p_booking_id, p_payload, p_now, p_now);
    RETURN true;
END
$$;
