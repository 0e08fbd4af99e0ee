-- General admission takes the lowest free places of a ticket type: with the position in
-- the index, that is a short index walk, not a sort of every unit of the type per hold.
CREATE INDEX units_group_free ON units (group_id, state, seat_position);
DROP INDEX units_group_state;
