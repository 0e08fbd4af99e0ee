-- The booking lifecycle and organizer controls: which payment confirmed a booking,
-- whether checkout already extended its hold, cancelled performances and on-sale
-- times, job leases, one record per kind of email, and user search.

ALTER TABLE performances ADD COLUMN status TEXT NOT NULL DEFAULT 'scheduled'
    CHECK (status IN ('scheduled', 'cancelled'));
ALTER TABLE performances ADD COLUMN on_sale_at TEXT;

-- At most one payment confirms a booking; it is named here.
ALTER TABLE bookings ADD COLUMN paid_by BLOB;
ALTER TABLE bookings ADD COLUMN checkout_started_at TEXT;

UPDATE bookings SET paid_by = (
    SELECT p.id FROM payments p
    WHERE p.booking_id = bookings.id AND p.status IN ('succeeded', 'refund_pending', 'refunded')
    ORDER BY p.updated_at, p.id LIMIT 1)
WHERE status IN ('confirmed', 'refunded');

UPDATE bookings SET checkout_started_at = updated_at
WHERE EXISTS (SELECT 1 FROM payments p WHERE p.booking_id = bookings.id);

-- The attendee list and the cancellation job read bookings per performance.
CREATE INDEX bookings_performance ON bookings (performance_id, status, id);

-- Each claim of a job carries its own lease id; finishing or failing it counts only
-- while that claim is the job's.
ALTER TABLE jobs ADD COLUMN lease BLOB;

CREATE TABLE email_deliveries_by_kind (
    booking_id BLOB NOT NULL REFERENCES bookings (id),
    kind       TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sent_at    TEXT NOT NULL,
    PRIMARY KEY (booking_id, kind)
) STRICT;
INSERT INTO email_deliveries_by_kind (booking_id, kind, message_id, sent_at)
    SELECT booking_id, 'confirmation', message_id, sent_at FROM email_deliveries;
DROP TABLE email_deliveries;
ALTER TABLE email_deliveries_by_kind RENAME TO email_deliveries;

-- Email and name folded for search by the application (the same folding on every
-- engine); filled in by `migrate` for accounts created before this column.
ALTER TABLE users ADD COLUMN search TEXT;
