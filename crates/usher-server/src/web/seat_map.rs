//! Lays a performance's seats out as an SVG: sections one under another, their rows
//! centred under the stage, seats in the order the organizer defined them. The page's
//! script then colours seats live and lets people pick them with mouse or keyboard.

use std::collections::HashMap;

use crate::routes::performances::UnitView;
use crate::web::format;

/// Distance between seat centres.
const PITCH: u32 = 24;
pub const RADIUS: u32 = 9;
/// Room on the left for row labels.
const GUTTER: u32 = 40;
const STAGE_HEIGHT: u32 = 56;
const SECTION_TITLE: u32 = 30;
const SECTION_GAP: u32 = 18;

/// A section's rows in plan order, each with its seats.
type Rows<'a> = Vec<(String, Vec<&'a UnitView>)>;

pub struct Seat {
    pub id: String,
    pub cx: u32,
    pub cy: u32,
    pub state: String,
    /// Row index over the whole map (for keyboard moves between rows).
    pub row_index: usize,
    pub price_amount: i64,
    /// What a screen reader says: "Stalls, row A, seat 3, €45.00".
    pub name: String,
    /// Short form for messages: "Stalls A3".
    pub short: String,
}

pub struct RowLabel {
    pub x: u32,
    pub y: u32,
    pub text: String,
}

pub struct SectionTitle {
    pub x: u32,
    pub y: u32,
    pub text: String,
}

pub struct SeatMapLayout {
    pub width: u32,
    pub height: u32,
    pub stage_x: u32,
    pub stage_width: u32,
    pub seats: Vec<Seat>,
    pub rows: Vec<RowLabel>,
    pub sections: Vec<SectionTitle>,
}

impl SeatMapLayout {
    pub fn radius(&self) -> u32 {
        RADIUS
    }

    pub fn new(units: &[UnitView]) -> Self {
        // Sections and their rows in the order they first appear (the plan's order).
        let mut sections: Vec<(String, Rows)> = Vec::new();
        let mut section_at: HashMap<String, usize> = HashMap::new();
        for unit in units {
            let section = unit.section.clone().unwrap_or_default();
            let row = unit.row.clone().unwrap_or_default();
            let s = *section_at.entry(section.clone()).or_insert_with(|| {
                sections.push((section.clone(), Vec::new()));
                sections.len() - 1
            });
            let rows = &mut sections[s].1;
            match rows.iter_mut().find(|(label, _)| *label == row) {
                Some((_, seats)) => seats.push(unit),
                None => rows.push((row, vec![unit])),
            }
        }
        let widest = sections
            .iter()
            .flat_map(|(_, rows)| rows.iter().map(|(_, seats)| seats.len()))
            .max()
            .unwrap_or(1) as u32;
        let width = GUTTER * 2 + widest * PITCH;
        let mut layout = SeatMapLayout {
            width,
            height: 0,
            stage_x: GUTTER + PITCH,
            stage_width: width.saturating_sub(2 * (GUTTER + PITCH)).max(PITCH * 2),
            seats: Vec::with_capacity(units.len()),
            rows: Vec::new(),
            sections: Vec::new(),
        };
        let mut y = STAGE_HEIGHT;
        let mut row_index = 0;
        for (name, rows) in &sections {
            y += SECTION_TITLE;
            layout.sections.push(SectionTitle {
                x: width / 2,
                y: y - 10,
                text: name.clone(),
            });
            for (row, seats) in rows {
                let cy = y + PITCH / 2;
                layout.rows.push(RowLabel {
                    x: GUTTER / 2,
                    y: cy + 4,
                    text: row.clone(),
                });
                let offset = (widest - seats.len() as u32) * PITCH / 2;
                for (i, unit) in seats.iter().enumerate() {
                    let label = unit.label.clone().unwrap_or_default();
                    let price = format::price(&unit.price);
                    layout.seats.push(Seat {
                        id: unit.id.to_string(),
                        cx: GUTTER + offset + i as u32 * PITCH + PITCH / 2,
                        cy,
                        state: unit.state.to_string(),
                        row_index,
                        price_amount: unit.price.amount,
                        name: format!("{name}, row {row}, seat {label}, {price}"),
                        short: format::seat_short(name, row, &label),
                    });
                }
                y += PITCH;
                row_index += 1;
            }
            y += SECTION_GAP;
        }
        layout.height = y;
        layout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::performances::MoneyView;
    use uuid::Uuid;

    fn unit(section: &str, row: &str, label: &str, state: &str) -> UnitView {
        UnitView {
            id: Uuid::now_v7(),
            section: Some(section.into()),
            row: Some(row.into()),
            label: Some(label.into()),
            ticket_type: None,
            price: MoneyView {
                amount: 4500,
                currency: "EUR".into(),
            },
            state: usher_core::UnitState::parse(state).unwrap(),
        }
    }

    #[test]
    fn rows_are_centred_and_sections_stacked_in_plan_order() {
        let units = vec![
            unit("Stalls", "A", "1", "available"),
            unit("Stalls", "A", "2", "sold"),
            unit("Stalls", "A", "3", "available"),
            unit("Stalls", "B", "1", "held"),
            unit("Circle", "A", "1", "blocked"),
        ];
        let layout = SeatMapLayout::new(&units);
        assert_eq!(layout.seats.len(), 5);
        assert_eq!(
            layout
                .sections
                .iter()
                .map(|s| s.text.as_str())
                .collect::<Vec<_>>(),
            ["Stalls", "Circle"]
        );
        assert_eq!(layout.rows.len(), 3);
        // Row B's single seat sits under row A's middle seat.
        assert_eq!(layout.seats[3].cx, layout.seats[1].cx);
        assert!(layout.seats[3].cy > layout.seats[0].cy);
        // Circle comes below Stalls.
        assert!(layout.seats[4].cy > layout.seats[3].cy);
        assert_eq!(layout.seats[1].state, "sold");
        assert_eq!(layout.seats[0].name, "Stalls, row A, seat 1, €45.00");
        assert_eq!(layout.seats[3].row_index, 1);
        assert!(layout.height > layout.seats[4].cy);
    }
}
