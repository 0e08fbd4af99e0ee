-- Best available walks a section's available seats in row and seat order through one
-- index: (group_id, state, row_position, seat_position). It replaces the index on
-- (group_id, state), a prefix of it, so a hold still moves one entry of it.
DROP INDEX units_group_state;
CREATE INDEX units_group_free ON units (group_id, state, row_position, seat_position);
