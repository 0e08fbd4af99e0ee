-- A waiting-list entry's place of arrival in its performance's line, numbered by the
-- join that wrote it on the only writer: joins are numbered in the order they commit,
-- so the position a join is told is the position every later read computes (ordering
-- by the request's clock let a later commit with an earlier clock move ahead of an
-- entry already told its place).
ALTER TABLE waitlist_entries ADD COLUMN line INTEGER NOT NULL DEFAULT 0;
UPDATE waitlist_entries
   SET line = (SELECT o.n
                 FROM (SELECT id, row_number() OVER (PARTITION BY performance_id
                                                     ORDER BY created_at, id) AS n
                         FROM waitlist_entries) o
                WHERE o.id = waitlist_entries.id);
DROP INDEX waitlist_line;
CREATE UNIQUE INDEX waitlist_line ON waitlist_entries (performance_id, line);
-- Those still waiting, in line order (serving and positions read these).
CREATE INDEX waitlist_waiting ON waitlist_entries (performance_id, line) WHERE status = 'waiting';
