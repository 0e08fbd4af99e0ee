-- Performances, their sections / ticket types, units (one row per sellable place) and
-- bookings. A unit is free when it is available, or held by a hold whose held_until has
-- passed: holds expire lazily, and the sweeper tidies up after them.

CREATE TABLE performances (
    id               UUID PRIMARY KEY,
    event_id         UUID NOT NULL REFERENCES events (id),
    starts_at        TIMESTAMPTZ NOT NULL,
    hold_ttl_seconds INTEGER NOT NULL,
    max_per_booking  INTEGER NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('reserved', 'general')),
    currency         TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL
);

CREATE INDEX performances_event ON performances (event_id, starts_at);

-- Sections (reserved seating) and ticket types (general admission): priced groups of
-- units, in the organizer's order.
CREATE TABLE price_groups (
    id             UUID PRIMARY KEY,
    performance_id UUID NOT NULL REFERENCES performances (id),
    position       INTEGER NOT NULL,
    name           TEXT NOT NULL,
    price_amount   BIGINT NOT NULL CHECK (price_amount >= 0),
    capacity       INTEGER NOT NULL
);

CREATE INDEX price_groups_performance ON price_groups (performance_id, position);

CREATE TABLE units (
    id              UUID PRIMARY KEY,
    performance_id  UUID NOT NULL REFERENCES performances (id),
    group_id        UUID NOT NULL REFERENCES price_groups (id),
    group_position  INTEGER NOT NULL,
    row_position    INTEGER NOT NULL,
    seat_position   INTEGER NOT NULL,
    row_label       TEXT,
    seat_label      TEXT,
    price_amount    BIGINT NOT NULL CHECK (price_amount >= 0),
    state           TEXT NOT NULL CHECK (state IN ('available', 'held', 'sold', 'blocked')),
    booking_id      UUID,
    held_until      TIMESTAMPTZ,
    -- A held or sold unit names its booking; a held one also its deadline.
    CHECK ((state IN ('held', 'sold')) = (booking_id IS NOT NULL)),
    CHECK ((state = 'held') = (held_until IS NOT NULL))
);

CREATE INDEX units_seat_map ON units (performance_id, group_position, row_position, seat_position);
CREATE INDEX units_group_state ON units (group_id, state);
CREATE INDEX units_booking ON units (booking_id) WHERE booking_id IS NOT NULL;

CREATE TABLE bookings (
    id             UUID PRIMARY KEY,
    user_id        UUID NOT NULL REFERENCES users (id),
    performance_id UUID NOT NULL REFERENCES performances (id),
    status         TEXT NOT NULL
                   CHECK (status IN ('held', 'confirmed', 'expired', 'cancelled', 'refunded')),
    held_until     TIMESTAMPTZ NOT NULL,
    total_amount   BIGINT NOT NULL,
    currency       TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);

CREATE INDEX bookings_user ON bookings (user_id, id);
CREATE INDEX bookings_held ON bookings (held_until) WHERE status = 'held';

-- Which units a booking took, at which price. Kept after the units are released, so a
-- cancelled or expired booking still shows what it was.
CREATE TABLE booking_units (
    booking_id   UUID NOT NULL REFERENCES bookings (id),
    unit_id      UUID NOT NULL REFERENCES units (id),
    price_amount BIGINT NOT NULL,
    PRIMARY KEY (booking_id, unit_id)
);
