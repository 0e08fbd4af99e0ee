-- A waiting-list entry's place of arrival in its performance's line, numbered by the
-- join that wrote it while holding the performance's row lock: joins are numbered in
-- the order they commit, so the position a join is told is the position every later
-- read computes (ordering by the request's clock let concurrent joins be told the same
-- place, and a later commit with an earlier clock move ahead of one already told).
ALTER TABLE waitlist_entries ADD COLUMN line BIGINT;
UPDATE waitlist_entries w SET line = o.n
  FROM (SELECT id, row_number() OVER (PARTITION BY performance_id ORDER BY created_at, id) AS n
          FROM waitlist_entries) o
 WHERE o.id = w.id;
ALTER TABLE waitlist_entries ALTER COLUMN line SET NOT NULL;
DROP INDEX waitlist_line;
CREATE UNIQUE INDEX waitlist_line ON waitlist_entries (performance_id, line);
-- Those still waiting, in line order (serving and positions read these).
CREATE INDEX waitlist_waiting ON waitlist_entries (performance_id, line) WHERE status = 'waiting';
