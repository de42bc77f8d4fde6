-- "Has a hold of this event run out?" is asked by every booking, and answering it by reading the
-- event's held bookings cost one index entry per hold (thousands on a popular event), or a
-- sequential scan when PostgreSQL's statistics lag behind a fast-growing table. The event row,
-- which every booking reads or updates anyway, now keeps a lower bound of its holds' expiry:
-- lowered whenever a hold is made, made exact again whenever expired holds are looked for
-- (a payment or a cancellation leaves it low, which only costs one needless look).
ALTER TABLE booking_events ADD COLUMN first_hold_expiry BIGINT;
UPDATE booking_events SET first_hold_expiry =
    (SELECT MIN(hold_expires_at) FROM bookings
      WHERE bookings.event_id = booking_events.id AND bookings.status = 'held');
-- Expired holds of one event, in expiry order; also serves everything (event_id, status) did.
CREATE INDEX bookings_event_holds ON bookings(event_id, status, hold_expires_at);
DROP INDEX bookings_event;
