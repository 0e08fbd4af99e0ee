-- Accounts, refresh tokens, settings and events.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id            UUID PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'organizer', 'customer')),
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE refresh_tokens (
    id         UUID PRIMARY KEY,
    family_id  UUID NOT NULL,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash BYTEA NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);

CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE events (
    id           UUID PRIMARY KEY,
    organizer_id UUID NOT NULL REFERENCES users (id),
    title        TEXT NOT NULL,
    title_search TEXT NOT NULL,
    description  TEXT NOT NULL,
    venue        TEXT NOT NULL,
    attributes   JSONB NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('draft', 'published', 'cancelled')),
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

CREATE INDEX events_status_id ON events (status, id);
CREATE INDEX events_organizer_id ON events (organizer_id, id);
