-- Payments, provider events (webhook idempotency), the job outbox, idempotency keys
-- and the record of confirmation emails sent.

CREATE TABLE payments (
    id                   UUID PRIMARY KEY,
    booking_id           UUID NOT NULL REFERENCES bookings (id),
    provider             TEXT NOT NULL,
    provider_ref         TEXT,
    provider_payment_ref TEXT,
    status               TEXT NOT NULL
                         CHECK (status IN ('pending', 'succeeded', 'failed', 'refund_pending', 'refunded')),
    amount               BIGINT NOT NULL,
    currency             TEXT NOT NULL,
    checkout_url         TEXT,
    expires_at           TIMESTAMPTZ NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);

CREATE INDEX payments_booking ON payments (booking_id);
CREATE UNIQUE INDEX payments_provider_ref ON payments (provider, provider_ref) WHERE provider_ref IS NOT NULL;

CREATE TABLE provider_events (
    provider    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (provider, event_id)
);

CREATE TABLE jobs (
    id           UUID PRIMARY KEY,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'dead')),
    attempts     INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    run_at       TIMESTAMPTZ NOT NULL,
    locked_until TIMESTAMPTZ,
    last_error   TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

CREATE INDEX jobs_due ON jobs (state, run_at);

CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
    status       INTEGER,
    content_type TEXT,
    body         BYTEA,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

CREATE TABLE email_deliveries (
    booking_id UUID PRIMARY KEY REFERENCES bookings (id),
    message_id TEXT NOT NULL,
    sent_at    TIMESTAMPTZ NOT NULL
);
