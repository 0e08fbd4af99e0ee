-- The change feed behind live seat maps: each transaction that changes a performance's
-- units raises its seq by one and logs the change, in that same transaction.
CREATE TABLE live_heads (
    performance_id BLOB PRIMARY KEY NOT NULL REFERENCES performances (id),
    seq            INTEGER NOT NULL CHECK (seq > 0)
) STRICT;

CREATE TABLE live_changes (
    performance_id BLOB NOT NULL,
    seq            INTEGER NOT NULL,
    -- The change as JSON (usher_store::live::LiveChange).
    body           TEXT NOT NULL,
    at             TEXT NOT NULL,
    PRIMARY KEY (performance_id, seq)
) STRICT, WITHOUT ROWID;

CREATE INDEX live_changes_at ON live_changes (at);
