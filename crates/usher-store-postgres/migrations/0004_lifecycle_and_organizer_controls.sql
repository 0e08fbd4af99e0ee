-- The booking lifecycle and organizer controls: which payment confirmed a booking,
-- whether checkout already extended its hold, cancelled performances and on-sale
-- times, job leases, one record per kind of email, and user search.

ALTER TABLE performances
    ADD COLUMN status TEXT NOT NULL DEFAULT 'scheduled'
        CHECK (status IN ('scheduled', 'cancelled')),
    ADD COLUMN on_sale_at TIMESTAMPTZ;

-- At most one payment confirms a booking; it is named here.
ALTER TABLE bookings
    ADD COLUMN paid_by UUID,
    ADD COLUMN checkout_started_at TIMESTAMPTZ;

UPDATE bookings b SET paid_by = (
    SELECT p.id FROM payments p
    WHERE p.booking_id = b.id AND p.status IN ('succeeded', 'refund_pending', 'refunded')
    ORDER BY p.updated_at, p.id LIMIT 1)
WHERE b.status IN ('confirmed', 'refunded');

UPDATE bookings b SET checkout_started_at = b.updated_at
WHERE EXISTS (SELECT 1 FROM payments p WHERE p.booking_id = b.id);

-- The attendee list and the cancellation job read bookings per performance.
CREATE INDEX bookings_performance ON bookings (performance_id, status, id);

-- Each claim of a job carries its own lease id; finishing or failing it counts only
-- while that claim is the job's.
ALTER TABLE jobs ADD COLUMN lease UUID;

ALTER TABLE email_deliveries ADD COLUMN kind TEXT NOT NULL DEFAULT 'confirmation';
ALTER TABLE email_deliveries DROP CONSTRAINT email_deliveries_pkey;
ALTER TABLE email_deliveries ADD PRIMARY KEY (booking_id, kind);
ALTER TABLE email_deliveries ALTER COLUMN kind DROP DEFAULT;

-- Email and name folded for search by the application (the same folding on every
-- engine); filled in by `migrate` for accounts created before this column.
ALTER TABLE users ADD COLUMN search TEXT;
