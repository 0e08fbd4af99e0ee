-- The waiting list of sold-out performances and the waiting room of on-sales.

-- Buyers of a performance with a waiting room need an admission from its queue.
ALTER TABLE performances ADD COLUMN waiting_room BOOLEAN NOT NULL DEFAULT false;
-- A hold the waiting list made for someone (an offer), not one they took.
ALTER TABLE bookings ADD COLUMN offer BOOLEAN NOT NULL DEFAULT false;

-- One row per person waiting for units of a performance (of one ticket type, for
-- general admission; of any seats, for reserved seating). `offered` names the hold made
-- for them; what became of it (booked, lapsed) is read from that booking.
CREATE TABLE waitlist_entries (
    id             UUID PRIMARY KEY,
    performance_id UUID NOT NULL REFERENCES performances (id),
    user_id        UUID NOT NULL REFERENCES users (id),
    ticket_type_id UUID REFERENCES price_groups (id),
    quantity       INTEGER NOT NULL CHECK (quantity > 0),
    status         TEXT NOT NULL CHECK (status IN ('waiting', 'offered', 'left')),
    -- How often a later, smaller entry was served while this one, first in line,
    -- could not be; at the limit nobody behind it is served until it is.
    passed_over    INTEGER NOT NULL DEFAULT 0,
    booking_id     UUID REFERENCES bookings (id),
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    CHECK (status <> 'offered' OR booking_id IS NOT NULL)
);

CREATE UNIQUE INDEX waitlist_one_waiting ON waitlist_entries (performance_id, user_id)
    WHERE status = 'waiting';
CREATE INDEX waitlist_line ON waitlist_entries (performance_id, created_at, id)
    WHERE status = 'waiting';
CREATE INDEX waitlist_user ON waitlist_entries (user_id, id);
CREATE INDEX waitlist_booking ON waitlist_entries (booking_id) WHERE booking_id IS NOT NULL;

-- The queue in front of a performance with a waiting room. Tickets that join before
-- the opening carry a random draw and no place; at the opening they are numbered in
-- draw order (`seq`), later arrivals get the next numbers. Everyone numbered up to
-- `admitted_through` is admitted.
CREATE TABLE queue_rooms (
    performance_id   UUID PRIMARY KEY REFERENCES performances (id),
    opened_at        TIMESTAMPTZ,
    next_seq         BIGINT NOT NULL DEFAULT 1,
    admitted_through BIGINT NOT NULL DEFAULT 0,
    -- Nothing left to sell (nothing available, nothing held): waiting tickets are closed.
    closed           BOOLEAN NOT NULL DEFAULT false,
    updated_at       TIMESTAMPTZ NOT NULL
);

CREATE TABLE queue_tickets (
    id             UUID PRIMARY KEY,
    performance_id UUID NOT NULL REFERENCES performances (id),
    user_id        UUID NOT NULL REFERENCES users (id),
    draw           BIGINT NOT NULL,
    seq            BIGINT,
    joined_at      TIMESTAMPTZ NOT NULL,
    admitted_at    TIMESTAMPTZ,
    UNIQUE (performance_id, user_id)
);

CREATE INDEX queue_draw ON queue_tickets (performance_id, draw) WHERE seq IS NULL;
CREATE UNIQUE INDEX queue_seq ON queue_tickets (performance_id, seq) WHERE seq IS NOT NULL;
