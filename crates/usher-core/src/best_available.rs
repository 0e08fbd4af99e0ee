//! Best available: which free seats to offer a buyer who asks for a number of seats
//! rather than naming them.
//!
//! The rules, in order of importance:
//! 1. Never leave a single empty seat between the new hold and a taken seat when another
//!    choice exists (a lone seat there is nearly unsellable).
//! 2. Adjacent seats in one row when possible.
//! 3. Better sections first (the order the organizer listed them), then better rows
//!    (their order), then closest to the centre of the row, then leftmost.
//!
//! When no row has enough adjacent free seats, the best free seats are offered apart.
//!
//! The chooser never needs the whole seat map: a [`House`] is read a section at a time,
//! in row order, free seats only, as far as a choice needs. Since sections and rows
//! come before everything but rule 1, the first row read with a block that strands no
//! seat is the choice, whatever the rows after it hold; only a house where every block
//! would strand a seat (or none is left) is read to its end. What one choice costs
//! depends on the rows it looks at, not on the size of the map.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::{TicketTypeId, UnitId};

/// One seat as the chooser sees it. `seat` is the seat's position in its row; seats
/// whose positions differ by one are neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seat {
    pub unit_id: UnitId,
    pub section: u32,
    pub row: u32,
    pub seat: u32,
    pub free: bool,
}

/// One row of a seat map: where it is, and its first and last seat, taken or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatRow {
    /// The section's price group.
    pub group: TicketTypeId,
    pub section: u32,
    pub row: u32,
    pub first: u32,
    pub last: u32,
}

/// The shape of a performance's seat map: its rows, which never change once the
/// performance exists.
#[derive(Debug, Clone, Default)]
pub struct Geometry {
    /// Sections in order: (section, its price group).
    sections: Vec<(u32, TicketTypeId)>,
    /// (section, row) → (first seat, last seat).
    bounds: HashMap<(u32, u32), (u32, u32)>,
}

impl Geometry {
    pub fn new(rows: impl IntoIterator<Item = SeatRow>) -> Self {
        let mut geometry = Geometry::default();
        for row in rows {
            if !geometry.sections.iter().any(|(s, _)| *s == row.section) {
                geometry.sections.push((row.section, row.group));
            }
            geometry
                .bounds
                .insert((row.section, row.row), (row.first, row.last));
        }
        geometry
            .sections
            .sort_unstable_by_key(|(section, _)| *section);
        geometry
    }

    /// How many rows the map has.
    pub fn rows(&self) -> usize {
        self.bounds.len()
    }
}

/// The free seats to read next: up to `limit` of the section's price group, from row
/// `from_row` on, in row then seat order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub group: TicketTypeId,
    pub from_row: u32,
    pub limit: u32,
}

/// What [`House::choose`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// These seats, now marked taken in the house.
    Seats(Vec<UnitId>),
    /// Not enough free seats in the whole house.
    Unavailable,
    /// The rows read so far cannot decide: read these, [`House::add`] them, ask again.
    Read(Read),
}

/// Free seats read in a first reading; a read that fills this many is followed by
/// another (a row with more free seats than a read's limit is read again with twice it).
const FIRST_READ: u32 = 1024;

/// What a batch of holds has read of one performance's free seats so far, and what it
/// has taken of them.
#[derive(Debug, Clone)]
pub struct House {
    geometry: Arc<Geometry>,
    /// Free seats of every row read to its end, by (section, row), each row's seats in
    /// order.
    rows: BTreeMap<(u32, u32), Vec<(u32, UnitId)>>,
    /// Seats whose holds ran out (free again, though not marked available yet), not yet
    /// in `rows`: they join a row when it has been read.
    expired: Vec<Seat>,
    /// Where the next read starts: (index into the sections, row, limit); `None` once
    /// the whole house is read.
    next: Option<(usize, u32, u32)>,
}

impl House {
    /// A house nothing of which is read yet but `expired`, its seats held past their
    /// time (free, though still marked held).
    pub fn new(geometry: Arc<Geometry>, expired: Vec<Seat>) -> Self {
        Self::reading(geometry, expired, FIRST_READ)
    }

    /// [`House::new`] whose first reading takes `first_read` seats.
    fn reading(geometry: Arc<Geometry>, mut expired: Vec<Seat>, first_read: u32) -> Self {
        expired.sort_unstable_by_key(|s| std::cmp::Reverse((s.section, s.row, s.seat)));
        let next = (!geometry.sections.is_empty()).then_some((0, 0, first_read));
        let mut house = House {
            geometry,
            rows: BTreeMap::new(),
            expired,
            next,
        };
        if house.next.is_none() {
            house.read_to((u32::MAX, u32::MAX));
        }
        house
    }

    /// Takes in what `read` returned: the free seats it asked for, in row and seat order.
    pub fn add(&mut self, read: Read, seats: Vec<Seat>) {
        let Some((index, from_row, limit)) = self.next else {
            return;
        };
        let Some(&(section, group)) = self.geometry.sections.get(index) else {
            return;
        };
        if group != read.group || from_row != read.from_row || limit != read.limit {
            return;
        }
        let last_row = seats.last().map(|s| s.row);
        if seats.len() < limit as usize {
            // The section is read to its end.
            self.insert(section, seats);
            self.next = (index + 1 < self.geometry.sections.len()).then_some((index + 1, 0, limit));
            self.read_to((section, u32::MAX));
        } else if seats.first().map(|s| s.row) == last_row {
            // One row has more free seats than the read took: read it again, more at once.
            self.next = Some((index, from_row, limit.saturating_mul(2)));
        } else {
            // Every row before the last one the read reached is read to its end.
            let last_row = last_row.unwrap_or(from_row);
            self.insert(section, seats.into_iter().filter(|s| s.row < last_row));
            self.next = Some((index, last_row, limit));
            self.read_to((section, last_row - 1));
        }
    }

    fn insert(&mut self, section: u32, seats: impl IntoIterator<Item = Seat>) {
        for seat in seats {
            self.rows
                .entry((section, seat.row))
                .or_default()
                .push((seat.seat, seat.unit_id));
        }
    }

    /// Moves the expired seats of rows up to `(section, row)` into their rows.
    fn read_to(&mut self, up_to: (u32, u32)) {
        while let Some(seat) = self.expired.last().copied() {
            if (seat.section, seat.row) > up_to {
                break;
            }
            self.expired.pop();
            let row = self.rows.entry((seat.section, seat.row)).or_default();
            if let Err(at) = row.binary_search_by_key(&seat.seat, |(s, _)| *s) {
                row.insert(at, (seat.seat, seat.unit_id));
            }
        }
    }

    /// The best `quantity` seats, marked taken, or what must be read to know them.
    pub fn choose(&mut self, quantity: usize) -> Choice {
        if quantity == 0 {
            return Choice::Unavailable;
        }
        // The first row's best block that strands a seat: (row, where it starts).
        let mut stranding: Option<((u32, u32), usize)> = None;
        for (&key, free) in &self.rows {
            if free.len() < quantity {
                continue;
            }
            let (first, last) = self
                .geometry
                .bounds
                .get(&key)
                .copied()
                .unwrap_or_else(|| (free[0].0, free[free.len() - 1].0));
            let (clean, strands) = best_blocks(free, first, last, quantity);
            if let Some((_, start)) = clean {
                return Choice::Seats(self.take(key, start, quantity));
            }
            if stranding.is_none() {
                stranding = strands.map(|(_, start)| (key, start));
            }
        }
        if let Some((index, from_row, limit)) = self.next {
            let (_, group) = self.geometry.sections[index];
            return Choice::Read(Read {
                group,
                from_row,
                limit,
            });
        }
        if let Some((key, start)) = stranding {
            return Choice::Seats(self.take(key, start, quantity));
        }
        self.apart(quantity)
    }

    /// Nobody gets adjacent seats: the best free seats one by one, rows in order.
    fn apart(&mut self, quantity: usize) -> Choice {
        if self.rows.values().map(Vec::len).sum::<usize>() < quantity {
            return Choice::Unavailable;
        }
        let mut chosen = Vec::with_capacity(quantity);
        for (key, free) in self.rows.iter_mut() {
            let (first, last) = self
                .geometry
                .bounds
                .get(key)
                .copied()
                .unwrap_or_else(|| (free[0].0, free[free.len() - 1].0));
            let centre2 = u64::from(first) + u64::from(last);
            let mut order: Vec<usize> = (0..free.len()).collect();
            order.sort_by_key(|&i| ((2 * u64::from(free[i].0)).abs_diff(centre2), free[i].0));
            let wanted = quantity - chosen.len();
            let mut taken: Vec<usize> = order.into_iter().take(wanted).collect();
            chosen.extend(taken.iter().map(|&i| free[i].1));
            taken.sort_unstable_by(|a, b| b.cmp(a));
            for i in taken {
                free.remove(i);
            }
            if chosen.len() == quantity {
                break;
            }
        }
        Choice::Seats(chosen)
    }

    fn take(&mut self, key: (u32, u32), start: usize, quantity: usize) -> Vec<UnitId> {
        let Some(free) = self.rows.get_mut(&key) else {
            return Vec::new();
        };
        free.drain(start..start + quantity)
            .map(|(_, id)| id)
            .collect()
    }
}

/// How good a block is within its row; smaller wins: (distance of the block's centre
/// from the row's centre ×2, first seat), and where the block starts in `free`.
type Ranked = ((u64, u32), usize);

/// The row's best block of `quantity` adjacent free seats that strands no seat, and its
/// best block that does.
fn best_blocks(
    free: &[(u32, UnitId)],
    first: u32,
    last: u32,
    quantity: usize,
) -> (Option<Ranked>, Option<Ranked>) {
    // Twice the centre, to stay in integers.
    let centre2 = u64::from(first) + u64::from(last);
    let (mut clean, mut strands): (Option<Ranked>, Option<Ranked>) = (None, None);
    let mut run_start = 0;
    for end in 1..=free.len() {
        let run_goes_on = end < free.len() && free[end].0 == free[end - 1].0 + 1;
        if run_goes_on {
            continue;
        }
        let run = run_start..end;
        run_start = end;
        if run.len() < quantity {
            continue;
        }
        // A lone seat at the end of a row can still go to a single buyer beside the
        // aisle; one between our hold and a taken seat cannot.
        let taken_left = free[run.start].0 > first;
        let taken_right = free[run.end - 1].0 < last;
        for start in run.start..=run.end - quantity {
            let left_gap = start - run.start;
            let right_gap = run.end - start - quantity;
            let stranding = (left_gap == 1 && taken_left) || (right_gap == 1 && taken_right);
            let block_centre2 = u64::from(free[start].0) + u64::from(free[start + quantity - 1].0);
            let ranked = ((block_centre2.abs_diff(centre2), free[start].0), start);
            let best = if stranding { &mut strands } else { &mut clean };
            if best.is_none_or(|(rank, _)| ranked.0 < rank) {
                *best = Some(ranked);
            }
        }
    }
    (clean, strands)
}

/// Picks `quantity` seats from a whole seat map, or `None` when fewer than that are
/// free: [`House`] over a map read at once.
pub fn choose(seats: &[Seat], quantity: usize) -> Option<Vec<UnitId>> {
    choose_reading(seats, &[], quantity, FIRST_READ)
}

/// [`choose`] with `expired` seats (free, still marked held) beside `seats`, read
/// `first_read` seats at a time.
fn choose_reading(
    seats: &[Seat],
    expired: &[Seat],
    quantity: usize,
    first_read: u32,
) -> Option<Vec<UnitId>> {
    let geometry = geometry_of(seats);
    let mut house = House::reading(Arc::new(geometry), expired.to_vec(), first_read);
    let mut free: Vec<Seat> = seats.iter().filter(|s| s.free).copied().collect();
    free.sort_unstable_by_key(|s| (s.section, s.row, s.seat));
    loop {
        match house.choose(quantity) {
            Choice::Seats(ids) => return Some(ids),
            Choice::Unavailable => return None,
            Choice::Read(read) => {
                let (section, _) = house.geometry.sections[house.next.map_or(0, |n| n.0)];
                let page = free
                    .iter()
                    .filter(|s| s.section == section && s.row >= read.from_row)
                    .take(read.limit as usize)
                    .copied()
                    .collect();
                house.add(read, page);
            }
        }
    }
}

/// The shape of a whole seat map, its sections all of one (nil) price group.
fn geometry_of(seats: &[Seat]) -> Geometry {
    let group = TicketTypeId::from_uuid(uuid::Uuid::nil());
    let mut bounds: BTreeMap<(u32, u32), (u32, u32)> = BTreeMap::new();
    for s in seats {
        let entry = bounds.entry((s.section, s.row)).or_insert((s.seat, s.seat));
        entry.0 = entry.0.min(s.seat);
        entry.1 = entry.1.max(s.seat);
    }
    Geometry::new(
        bounds
            .into_iter()
            .map(|((section, row), (first, last))| SeatRow {
                group,
                section,
                row,
                first,
                last,
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A house from a picture: one string per row, `.` free, `x` taken; rows of one
    /// section, in order. Returns the seats and a function naming a unit "row:seat".
    fn house(sections: &[&[&str]]) -> (Vec<Seat>, impl Fn(&UnitId) -> String + use<>) {
        let mut seats = Vec::new();
        let mut names = std::collections::HashMap::new();
        for (si, rows) in sections.iter().enumerate() {
            for (ri, row) in rows.iter().enumerate() {
                for (k, c) in row.chars().enumerate() {
                    let id = UnitId::generate();
                    names.insert(id, format!("{si}{}{k}", (b'A' + ri as u8) as char));
                    seats.push(Seat {
                        unit_id: id,
                        section: si as u32,
                        row: ri as u32,
                        seat: k as u32,
                        free: c == '.',
                    });
                }
            }
        }
        (seats, move |id: &UnitId| names[id].clone())
    }

    fn pick(sections: &[&[&str]], quantity: usize) -> Option<Vec<String>> {
        let (seats, name) = house(sections);
        choose(&seats, quantity).map(|ids| ids.iter().map(&name).collect())
    }

    #[test]
    fn picks_adjacent_seats_in_the_centre_of_the_best_row() {
        assert_eq!(
            pick(&[&["..........", ".........."]], 2).unwrap(),
            ["0A4", "0A5"]
        );
        assert_eq!(pick(&[&["........."]], 3).unwrap(), ["0A3", "0A4", "0A5"]);
    }

    #[test]
    fn prefers_an_earlier_section_and_row() {
        assert_eq!(
            pick(&[&["xxxx", "x..x"], &["...."]], 2).unwrap(),
            ["0B1", "0B2"]
        );
        assert_eq!(
            pick(&[&["xxxx", "x.xx"], &["...."]], 2).unwrap(),
            ["1A1", "1A2"]
        );
    }

    #[test]
    fn never_strands_a_single_seat_next_to_a_taken_one_when_it_can_avoid_it() {
        // Centre-most pair would be seats 3-4 of "x......x"? Run is 1..=6; a pair at
        // 2-3 strands seat 1. The chooser takes 1-2 or 5-6 instead, or 3-4 (gaps of 2).
        let chosen = pick(&[&["x......x"]], 2).unwrap();
        assert_eq!(chosen, ["0A3", "0A4"]);
        // Three free between taken seats, asking two: any pair strands one. With a
        // stranding-free choice in a worse row, the worse row wins.
        assert_eq!(pick(&[&["x...x", "......"]], 2).unwrap(), ["0B2", "0B3"]);
        // With no stranding-free choice anywhere, it still sells adjacent seats.
        assert_eq!(pick(&[&["x...x"]], 2).unwrap().len(), 2);
    }

    #[test]
    fn a_lone_seat_at_the_row_end_is_not_stranded() {
        assert_eq!(pick(&[&["...."]], 2).unwrap(), ["0A1", "0A2"]);
    }

    #[test]
    fn stranding_check_applies_to_both_sides() {
        // Run of 4 asking 2: positions 0-1 (right gap 2) or 2-3 (left gap 2) are fine;
        // 1-2 strands on both sides.
        let chosen = pick(&[&["x....x"]], 2).unwrap();
        assert!(
            chosen == ["0A1", "0A2"] || chosen == ["0A3", "0A4"],
            "{chosen:?}"
        );
    }

    #[test]
    fn splits_only_when_no_row_has_enough_adjacent_seats() {
        let chosen = pick(&[&[".x.x", "x.x."]], 3).unwrap();
        assert_eq!(chosen.len(), 3);
        assert!(
            chosen.iter().take(2).all(|s| s.starts_with("0A")),
            "{chosen:?}"
        );
    }

    #[test]
    fn reads_no_further_than_the_first_row_with_a_block_that_strands_nothing() {
        let rows: Vec<String> = (0..50).map(|_| ".".repeat(40)).collect();
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        let (seats, name) = house(&[&rows]);
        let geometry = geometry_of(&seats);
        let mut house = House::reading(Arc::new(geometry), Vec::new(), 64);
        let mut reads = 0;
        let chosen = loop {
            match house.choose(2) {
                Choice::Seats(ids) => break ids,
                Choice::Unavailable => panic!("unavailable"),
                Choice::Read(read) => {
                    reads += 1;
                    let page = free_page(&seats, 0, read);
                    house.add(read, page);
                }
            }
        };
        assert_eq!(reads, 1, "the first 64 seats cover row A to its end");
        assert_eq!(
            chosen.iter().map(&name).collect::<Vec<_>>(),
            ["0A19", "0A20"]
        );
        // The next choice comes from what was read, beside the first.
        assert!(matches!(house.choose(2), Choice::Seats(_)));
    }

    #[test]
    fn a_row_with_more_free_seats_than_a_read_is_read_again_with_more() {
        let (seats, name) = house(&[&[&".".repeat(100), "....."]]);
        let chosen = choose_reading(&seats, &[], 4, 8).unwrap();
        assert_eq!(
            chosen.iter().map(&name).collect::<Vec<_>>(),
            ["0A48", "0A49", "0A50", "0A51"]
        );
    }

    #[test]
    fn seats_whose_holds_ran_out_are_free() {
        // Row A is all held, its middle pair's hold has run out: that pair is best.
        let (seats, name) = house(&[&["xxxxxx", "......"]]);
        let expired: Vec<Seat> = seats
            .iter()
            .filter(|s| s.row == 0 && (s.seat == 2 || s.seat == 3))
            .map(|s| Seat { free: true, ..*s })
            .collect();
        let chosen = choose_reading(&seats, &expired, 2, 2).unwrap();
        assert_eq!(chosen.iter().map(&name).collect::<Vec<_>>(), ["0A2", "0A3"]);
    }

    fn free_page(seats: &[Seat], section: u32, read: Read) -> Vec<Seat> {
        let mut free: Vec<Seat> = seats
            .iter()
            .filter(|s| s.free && s.section == section && s.row >= read.from_row)
            .copied()
            .collect();
        free.sort_unstable_by_key(|s| (s.row, s.seat));
        free.truncate(read.limit as usize);
        free
    }

    /// The chooser as it was before it read by rows: the whole map at once, every
    /// block of every row ranked. What the house chooses, read a few seats at a time,
    /// must be the same seats.
    fn whole_map_choice(seats: &[Seat], quantity: usize) -> Option<Vec<UnitId>> {
        type Rank = (bool, u32, u32, u64, u32);
        if quantity == 0 || seats.iter().filter(|s| s.free).count() < quantity {
            return None;
        }
        let mut rows: BTreeMap<(u32, u32), Vec<Seat>> = BTreeMap::new();
        for seat in seats {
            rows.entry((seat.section, seat.row))
                .or_default()
                .push(*seat);
        }
        let mut best: Option<(Rank, Vec<UnitId>)> = None;
        for ((section, row), mut row_seats) in rows.clone() {
            row_seats.sort_by_key(|s| s.seat);
            let (first, last) = (row_seats[0], row_seats[row_seats.len() - 1]);
            let centre2 = u64::from(first.seat) + u64::from(last.seat);
            let mut runs: Vec<Vec<Seat>> = vec![];
            let mut current: Vec<Seat> = vec![];
            for seat in &row_seats {
                let continues = current
                    .last()
                    .is_some_and(|prev| seat.free && seat.seat == prev.seat + 1);
                if !continues && !current.is_empty() {
                    runs.push(std::mem::take(&mut current));
                }
                if seat.free {
                    current.push(*seat);
                }
            }
            if !current.is_empty() {
                runs.push(current);
            }
            for run in runs.into_iter().filter(|r| r.len() >= quantity) {
                for start in 0..=run.len() - quantity {
                    let block = &run[start..start + quantity];
                    let taken_left = run[0].seat > first.seat;
                    let taken_right = run[run.len() - 1].seat < last.seat;
                    let strands = (start == 1 && taken_left)
                        || (run.len() - start - quantity == 1 && taken_right);
                    let c2 = u64::from(block[0].seat) + u64::from(block[quantity - 1].seat);
                    let key = (strands, section, row, c2.abs_diff(centre2), block[0].seat);
                    if best.as_ref().is_none_or(|(k, _)| key < *k) {
                        best = Some((key, block.iter().map(|s| s.unit_id).collect()));
                    }
                }
            }
        }
        if let Some((_, ids)) = best {
            return Some(ids);
        }
        let mut free: Vec<(Rank, UnitId)> = vec![];
        for ((section, row), row_seats) in rows {
            let lo = row_seats.iter().map(|s| s.seat).min().unwrap_or(0);
            let hi = row_seats.iter().map(|s| s.seat).max().unwrap_or(0);
            let centre2 = u64::from(lo) + u64::from(hi);
            for s in row_seats.iter().filter(|s| s.free) {
                let d = (2 * u64::from(s.seat)).abs_diff(centre2);
                free.push(((false, section, row, d, s.seat), s.unit_id));
            }
        }
        free.sort_by_key(|(rank, _)| *rank);
        Some(free.into_iter().take(quantity).map(|(_, id)| id).collect())
    }

    proptest::proptest! {
        #[test]
        fn reading_by_rows_chooses_what_the_whole_map_would(
            sections in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(0u8..4, 1..12), 1..5),
                1..4,
            ),
            quantity in 1usize..5,
            first_read in 1u32..20,
        ) {
            // 0 taken, 1 expired (free), 2 and 3 free.
            let mut seats = Vec::new();
            let mut expired = Vec::new();
            for (si, rows) in sections.iter().enumerate() {
                for (ri, row) in rows.iter().enumerate() {
                    for (k, &state) in row.iter().enumerate() {
                        let seat = Seat {
                            unit_id: UnitId::generate(),
                            section: si as u32,
                            row: ri as u32,
                            seat: k as u32,
                            free: state >= 2,
                        };
                        seats.push(seat);
                        if state == 1 {
                            expired.push(Seat { free: true, ..seat });
                        }
                    }
                }
            }
            let whole: Vec<Seat> = seats
                .iter()
                .map(|s| Seat { free: s.free || expired.iter().any(|e| e.unit_id == s.unit_id), ..*s })
                .collect();
            proptest::prop_assert_eq!(
                choose_reading(&seats, &expired, quantity, first_read),
                whole_map_choice(&whole, quantity)
            );
        }
    }

    #[test]
    fn none_when_not_enough_free_seats() {
        assert!(pick(&[&["x.x"]], 2).is_none());
        assert!(pick(&[&["..."]], 0).is_none());
    }
}
