//! The organizer's dashboard: their events and each performance's sales.

use super::*;

pub(super) struct EventRow {
    pub(super) id: Uuid,
    pub(super) title: String,
    pub(super) status: String,
    pub(super) performances: Vec<SalesRow>,
}

pub(super) struct SalesRow {
    pub(super) id: Uuid,
    pub(super) when: String,
    pub(super) status: String,
    pub(super) sold: u64,
    pub(super) held: u64,
    pub(super) available: u64,
    pub(super) capacity: u64,
    pub(super) revenue: String,
    pub(super) checked_in: u64,
    pub(super) tickets: u64,
}

impl From<&PerformanceSalesView> for SalesRow {
    fn from(p: &PerformanceSalesView) -> Self {
        Self {
            id: p.performance_id,
            when: format::when(&p.starts_at),
            status: p.status.to_string(),
            sold: p.sold,
            held: p.held,
            available: p.available,
            capacity: p.capacity,
            revenue: format::price(&p.revenue),
            checked_in: p.checked_in,
            tickets: p.tickets,
        }
    }
}

#[derive(Template)]
#[template(path = "manage/dashboard.html")]
pub(super) struct Dashboard {
    pub(super) chrome: Chrome,
    /// This page is not the newest events.
    pub(super) earlier: bool,
    pub(super) next: Option<String>,
    pub(super) events: Vec<EventRow>,
    pub(super) sold: u64,
    pub(super) revenue: Vec<String>,
    pub(super) chart: BarChart,
}

/// Events per dashboard page: each costs one sales query.
pub(super) const DASHBOARD_EVENTS: u32 = 20;

pub(super) async fn dashboard(
    State(web): State<WebState>,
    visit: Visit,
    Query(query): Query<CursorQuery>,
) -> PageResult {
    let caller = organizer(&visit)?;
    let params = routes::events::ListParams {
        mine: Some(true),
        limit: Some(DASHBOARD_EVENTS),
        cursor: query.cursor.clone(),
        q: None,
    };
    let page_of = routes::events::list(&visit.app, Some(*caller), params)
        .await
        .map_err(refused(&visit))?;
    let mut events = Vec::new();
    let mut bars = Vec::new();
    let mut sold = 0;
    let mut revenue: Vec<(String, i64)> = Vec::new();
    for event in page_of.items {
        let sales = routes::performances::sales(&visit.app, caller, event.id)
            .await
            .map_err(refused(&visit))?;
        for p in &sales.performances {
            sold += p.sold;
            match revenue.iter_mut().find(|(c, _)| *c == p.revenue.currency) {
                Some((_, sum)) => *sum += p.revenue.amount,
                None => revenue.push((p.revenue.currency.clone(), p.revenue.amount)),
            }
            bars.push(Bar {
                label: format!(
                    "{} · {}",
                    truncate(&event.title, 14),
                    p.starts_at.format("%-d %b %H:%M")
                ),
                sold: p.sold,
                held: p.held,
                blocked: p.blocked,
                available: p.available,
            });
        }
        events.push(EventRow {
            id: event.id,
            title: event.title,
            status: event.status.to_string(),
            performances: sales.performances.iter().map(SalesRow::from).collect(),
        });
    }
    let view = Dashboard {
        chrome: Chrome::of(&visit),
        earlier: query.cursor.is_some(),
        next: page_of
            .next_cursor
            .map(|c| format!("/organizer?cursor={}", format::query_value(&c))),
        events,
        sold,
        revenue: revenue
            .iter()
            .map(|(currency, amount)| format::money(*amount, currency))
            .collect(),
        chart: BarChart::new(&bars),
    };
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

pub(super) fn truncate(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(chars - 1).collect();
    short.push('…');
    short
}

// ---------------------------------------------------------------- events
