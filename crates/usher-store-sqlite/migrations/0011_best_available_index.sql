-- Best available walks a section's available seats in row and seat order, and general
-- admission a ticket type's in position order (its units are all in row 0), through
-- one index: (group_id, state, row_position, seat_position). It replaces the index that
-- served general admission alone, so a hold still moves one entry of it.
DROP INDEX units_group_free;
CREATE INDEX units_group_free ON units (group_id, state, row_position, seat_position);
