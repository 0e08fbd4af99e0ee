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

use std::collections::BTreeMap;

use crate::UnitId;

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

/// How good a block of seats is; smaller wins: (strands a seat, section, row, distance
/// of the block's centre from the row's centre ×2, first seat).
type Rank = (bool, u32, u32, u64, u32);

/// Picks `quantity` seats, or `None` when fewer than that are free.
pub fn choose(seats: &[Seat], quantity: usize) -> Option<Vec<UnitId>> {
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
    for ((section, row), mut row_seats) in rows {
        row_seats.sort_by_key(|s| s.seat);
        let (Some(first), Some(last)) = (row_seats.first(), row_seats.last()) else {
            continue;
        };
        // Twice the centre, to stay in integers.
        let centre2 = u64::from(first.seat) + u64::from(last.seat);
        for run in free_runs(&row_seats) {
            if run.len() < quantity {
                continue;
            }
            for start in 0..=run.len() - quantity {
                let block = &run[start..start + quantity];
                let left_gap = start;
                let right_gap = run.len() - start - quantity;
                // A lone seat at the end of a row can still go to a single buyer
                // beside the aisle; one between our hold and a taken seat cannot.
                let taken_left = run[0].seat > first.seat;
                let taken_right = run[run.len() - 1].seat < last.seat;
                let strands = (left_gap == 1 && taken_left) || (right_gap == 1 && taken_right);
                let block_centre2 = u64::from(block[0].seat) + u64::from(block[quantity - 1].seat);
                let key = (
                    strands,
                    section,
                    row,
                    block_centre2.abs_diff(centre2),
                    block[0].seat,
                );
                if best.as_ref().is_none_or(|(k, _)| key < *k) {
                    best = Some((key, block.iter().map(|s| s.unit_id).collect()));
                }
            }
        }
    }
    if let Some((_, ids)) = best {
        return Some(ids);
    }
    // Nobody gets adjacent seats: offer the best free seats one by one.
    let mut free: Vec<&Seat> = seats.iter().filter(|s| s.free).collect();
    let centre = row_centres(seats);
    free.sort_by_key(|s| {
        let centre2 = centre.get(&(s.section, s.row)).copied().unwrap_or(0);
        (
            s.section,
            s.row,
            (2 * u64::from(s.seat)).abs_diff(centre2),
            s.seat,
        )
    });
    Some(free.into_iter().take(quantity).map(|s| s.unit_id).collect())
}

/// Maximal runs of free seats that are neighbours.
fn free_runs(row: &[Seat]) -> Vec<Vec<Seat>> {
    let mut runs: Vec<Vec<Seat>> = Vec::new();
    let mut current: Vec<Seat> = Vec::new();
    for seat in row {
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
    runs
}

fn row_centres(seats: &[Seat]) -> BTreeMap<(u32, u32), u64> {
    let mut bounds: BTreeMap<(u32, u32), (u32, u32)> = BTreeMap::new();
    for s in seats {
        let entry = bounds.entry((s.section, s.row)).or_insert((s.seat, s.seat));
        entry.0 = entry.0.min(s.seat);
        entry.1 = entry.1.max(s.seat);
    }
    bounds
        .into_iter()
        .map(|(k, (lo, hi))| (k, u64::from(lo) + u64::from(hi)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A house from a picture: one string per row, `.` free, `x` taken; rows of one
    /// section, in order. Returns the seats and a function naming a unit "row:seat".
    fn house(sections: &[&[&str]]) -> (Vec<Seat>, impl Fn(&UnitId) -> String) {
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
    fn none_when_not_enough_free_seats() {
        assert!(pick(&[&["x.x"]], 2).is_none());
        assert!(pick(&[&["..."]], 0).is_none());
    }
}
