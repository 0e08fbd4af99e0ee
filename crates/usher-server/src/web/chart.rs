//! Sales charts drawn on the server as SVG: no chart library, no script.

use chrono::{DateTime, Utc};

/// One stacked bar: sold, held, blocked and available out of capacity.
pub struct Bar {
    pub label: String,
    pub sold: u64,
    pub held: u64,
    pub blocked: u64,
    pub available: u64,
}

pub struct Segment {
    pub x: f64,
    pub width: f64,
    pub class: &'static str,
    pub title: String,
}

pub struct BarRow {
    pub y: u32,
    pub label: String,
    pub figure: String,
    pub segments: Vec<Segment>,
}

pub struct BarChart {
    pub width: u32,
    pub height: u32,
    pub track_x: u32,
    pub track_width: u32,
    pub rows: Vec<BarRow>,
}

const BAR_HEIGHT: u32 = 22;
const BAR_GAP: u32 = 14;
const LABEL_WIDTH: u32 = 210;
const TRACK_WIDTH: u32 = 420;
const FIGURE_WIDTH: u32 = 110;

impl BarChart {
    pub fn new(bars: &[Bar]) -> Self {
        let rows = bars
            .iter()
            .enumerate()
            .map(|(i, bar)| {
                let capacity = (bar.sold + bar.held + bar.blocked + bar.available).max(1) as f64;
                let mut x = f64::from(LABEL_WIDTH);
                let mut segments = Vec::new();
                for (count, class, name) in [
                    (bar.sold, "bar-sold", "sold"),
                    (bar.held, "bar-held", "held"),
                    (bar.blocked, "bar-blocked", "blocked"),
                    (bar.available, "bar-available", "available"),
                ] {
                    if count == 0 {
                        continue;
                    }
                    let width = count as f64 / capacity * f64::from(TRACK_WIDTH);
                    segments.push(Segment {
                        x,
                        width,
                        class,
                        title: format!("{count} {name}"),
                    });
                    x += width;
                }
                BarRow {
                    y: i as u32 * (BAR_HEIGHT + BAR_GAP) + 8,
                    label: bar.label.clone(),
                    figure: format!("{} / {}", bar.sold, capacity as u64),
                    segments,
                }
            })
            .collect::<Vec<_>>();
        Self {
            width: LABEL_WIDTH + TRACK_WIDTH + FIGURE_WIDTH,
            height: (rows.len() as u32).max(1) * (BAR_HEIGHT + BAR_GAP) + 8,
            track_x: LABEL_WIDTH,
            track_width: TRACK_WIDTH,
            rows,
        }
    }

    pub fn bar_height(&self) -> u32 {
        BAR_HEIGHT
    }
}

/// Tickets sold over time, as a step line.
pub struct SalesLine {
    pub width: u32,
    pub height: u32,
    /// SVG path data; empty when nothing has sold.
    pub path: String,
    pub total: u64,
    pub first: String,
    pub last: String,
}

const LINE_WIDTH: u32 = 640;
const LINE_HEIGHT: u32 = 180;
const PAD: f64 = 24.0;

impl SalesLine {
    /// `sales`: when each confirmed booking was paid and how many tickets it had.
    pub fn new(mut sales: Vec<(DateTime<Utc>, u64)>) -> Self {
        sales.sort_by_key(|(at, _)| *at);
        let total: u64 = sales.iter().map(|(_, n)| n).sum();
        let (Some((start, _)), Some((end, _))) = (sales.first(), sales.last()) else {
            return Self {
                width: LINE_WIDTH,
                height: LINE_HEIGHT,
                path: String::new(),
                total: 0,
                first: String::new(),
                last: String::new(),
            };
        };
        let span = (*end - *start).num_seconds().max(1) as f64;
        let plot_w = f64::from(LINE_WIDTH) - 2.0 * PAD;
        let plot_h = f64::from(LINE_HEIGHT) - 2.0 * PAD;
        let x = |at: &DateTime<Utc>| PAD + (*at - *start).num_seconds() as f64 / span * plot_w;
        let y = |n: u64| f64::from(LINE_HEIGHT) - PAD - n as f64 / total.max(1) as f64 * plot_h;
        let mut path = format!("M{:.1} {:.1}", PAD, y(0));
        let mut running = 0;
        for (at, n) in &sales {
            let px = x(at);
            path.push_str(&format!(" H{px:.1}"));
            running += n;
            path.push_str(&format!(" V{:.1}", y(running)));
        }
        path.push_str(&format!(" H{:.1}", PAD + plot_w));
        Self {
            width: LINE_WIDTH,
            height: LINE_HEIGHT,
            path,
            total,
            first: start.format("%-d %b %H:%M").to_string(),
            last: end.format("%-d %b %H:%M").to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_split_capacity_in_proportion() {
        let chart = BarChart::new(&[Bar {
            label: "Fri".into(),
            sold: 25,
            held: 25,
            blocked: 0,
            available: 50,
        }]);
        let row = &chart.rows[0];
        assert_eq!(row.segments.len(), 3, "no segment for zero blocked");
        assert!((row.segments[0].width - f64::from(TRACK_WIDTH) / 4.0).abs() < 1e-9);
        assert!((row.segments[2].width - f64::from(TRACK_WIDTH) / 2.0).abs() < 1e-9);
        assert_eq!(row.figure, "25 / 100");
    }

    #[test]
    fn the_sales_line_climbs_to_the_total() {
        let t = Utc::now();
        let line = SalesLine::new(vec![(t + chrono::Duration::hours(1), 3), (t, 2)]);
        assert_eq!(line.total, 5);
        assert!(line.path.starts_with("M24.0 156.0"));
        assert!(line.path.contains("V24.0"), "{}", line.path);
        assert!(SalesLine::new(vec![]).path.is_empty());
    }
}
