-- Accounts, refresh tokens, settings and events.
-- Ids are UUIDs stored as 16-byte BLOBs; times are RFC 3339 UTC text written by the
-- application (never SQL defaults, so every row has one format and sorts correctly).

CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE users (
    id            BLOB PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'organizer', 'customer')),
    created_at    TEXT NOT NULL
) STRICT;

CREATE TABLE refresh_tokens (
    id         BLOB PRIMARY KEY NOT NULL,
    family_id  BLOB NOT NULL,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash BLOB NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT,
    revoked_at TEXT
) STRICT;

CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE events (
    id           BLOB PRIMARY KEY NOT NULL,
    organizer_id BLOB NOT NULL REFERENCES users (id),
    title        TEXT NOT NULL,
    title_search TEXT NOT NULL,
    description  TEXT NOT NULL,
    venue        TEXT NOT NULL,
    attributes   TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('draft', 'published', 'cancelled')),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
) STRICT;

CREATE INDEX events_status_id ON events (status, id);
CREATE INDEX events_organizer_id ON events (organizer_id, id);
