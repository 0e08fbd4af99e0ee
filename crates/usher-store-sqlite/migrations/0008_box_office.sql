-- The box office: tickets checked at the door, the wallet (store credit) and the audit log.

-- One ticket per unit of a confirmed booking, numbered when the booking is confirmed.
-- The code a buyer shows is the serial plus a MAC of (serial, booking, unit) under the
-- server's ticket key, so a serial alone admits nobody. A refunded booking's tickets stay
-- (their code now answers "void").
CREATE TABLE tickets (
    serial           INTEGER PRIMARY KEY,
    booking_id       BLOB NOT NULL REFERENCES bookings (id),
    unit_id          BLOB NOT NULL REFERENCES units (id),
    issued_at        TEXT NOT NULL,
    checked_in_at    TEXT,
    checked_in_by    BLOB REFERENCES users (id),
    UNIQUE (booking_id, unit_id)
) STRICT;

-- Bookings confirmed (or since refunded) before tickets were numbered.
INSERT INTO tickets (booking_id, unit_id, issued_at)
SELECT bu.booking_id, bu.unit_id, b.updated_at
FROM booking_units bu JOIN bookings b ON b.id = bu.booking_id
WHERE b.status IN ('confirmed', 'refunded') AND b.paid_by IS NOT NULL
ORDER BY b.updated_at, bu.booking_id, bu.unit_id;

-- A wallet's balance per currency: the sum of its entries, kept beside them so that a
-- payment is one conditional update (`balance >= amount`), never a read-then-write. The
-- CHECK is the last line: no statement can take a balance below zero.
CREATE TABLE wallets (
    user_id    BLOB NOT NULL REFERENCES users (id),
    currency   TEXT NOT NULL,
    balance    INTEGER NOT NULL CHECK (balance >= 0),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (user_id, currency)
) STRICT;

-- The ledger: append-only (the triggers below refuse UPDATE and DELETE).
CREATE TABLE wallet_entries (
    id            BLOB PRIMARY KEY NOT NULL,
    user_id       BLOB NOT NULL REFERENCES users (id),
    currency      TEXT NOT NULL,
    amount        INTEGER NOT NULL,
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
    kind          TEXT NOT NULL CHECK (kind IN ('credit', 'payment', 'refund')),
    reason        TEXT NOT NULL,
    booking_id    BLOB REFERENCES bookings (id),
    payment_id    BLOB,
    actor_id      BLOB REFERENCES users (id),
    created_at    TEXT NOT NULL
) STRICT;

CREATE INDEX wallet_entries_user ON wallet_entries (user_id, id);

CREATE TRIGGER wallet_entries_append_only_update BEFORE UPDATE ON wallet_entries
BEGIN SELECT RAISE(ABORT, 'wallet_entries is append-only'); END;
CREATE TRIGGER wallet_entries_append_only_delete BEFORE DELETE ON wallet_entries
BEGIN SELECT RAISE(ABORT, 'wallet_entries is append-only'); END;

-- Who changed what: every organizer and admin change, refund, cancellation, credit and
-- check-in, written in the transaction of the change itself. Append-only.
CREATE TABLE audit_log (
    id          BLOB PRIMARY KEY NOT NULL,
    at          TEXT NOT NULL,
    actor_id    BLOB REFERENCES users (id),
    action      TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id   BLOB NOT NULL,
    event_id    BLOB REFERENCES events (id),
    request_id  TEXT,
    detail      TEXT NOT NULL
) STRICT;

CREATE INDEX audit_log_event ON audit_log (event_id, id) WHERE event_id IS NOT NULL;

CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
