-- PostgreSQL only (migrations/postgres/0102_booking_fast_hold.sql: the plain hold as one
-- database function, so the booking lock is not held across client round trips). SQLite runs in
-- the server's process and serialises writers with BEGIN IMMEDIATE, so it has no round trips to
-- save; this file keeps the two directories in step, one version each (ADR 0006).
SELECT 1;
