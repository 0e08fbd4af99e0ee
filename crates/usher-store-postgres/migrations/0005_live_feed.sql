-- The change feed behind live seat maps: each transaction that changes a performance's
-- units raises its seq by one and logs the change, in that same transaction, and
-- announces it on the usher_live channel when it commits.
CREATE TABLE live_heads (
    performance_id uuid PRIMARY KEY REFERENCES performances (id),
    seq            bigint NOT NULL CHECK (seq > 0)
);

CREATE TABLE live_changes (
    performance_id uuid NOT NULL,
    seq            bigint NOT NULL,
    -- The change as JSON (usher_store::live::LiveChange).
    body           text NOT NULL,
    at             timestamptz NOT NULL,
    PRIMARY KEY (performance_id, seq)
);

CREATE INDEX live_changes_at ON live_changes (at);
