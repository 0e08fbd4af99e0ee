//! Organizers' and admins' pages: the sales dashboard, events and their performances
//! (with a seating-plan builder), attendee lists, house seats, users and dead jobs.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use usher_core::Role;

use crate::problem::FieldError;
use crate::routes::accounts::UserView;
use crate::routes::admin::{JobList, JobView, UserPage};
use crate::routes::box_office::{AuditEntryView, AuditPage, WalletEntryView};
use crate::routes::events::{EventDetail, EventPage, EventView};
use crate::routes::performances::{
    AttendeePage, EventSales, PerformanceSalesView, PerformanceView, SeatMap, UnitStatesChanged,
};
use crate::web::api::{Refusal, Visit};
use crate::web::chart::{Bar, BarChart, SalesLine};
use crate::web::seat_map::SeatMapLayout;
use crate::web::{Chrome, CursorQuery, Form, PageError, PageResult, WebState, format, id, page};

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/organizer", get(dashboard))
        .route("/organizer/events", post(create_event))
        .route("/organizer/events/new", get(new_event))
        .route("/organizer/events/{id}", get(edit_event).post(update_event))
        .route("/organizer/events/{id}/status", post(set_status))
        .route(
            "/organizer/events/{id}/performances",
            get(new_performance).post(create_performance),
        )
        .route("/organizer/performances/{id}", get(performance))
        .route("/organizer/performances/{id}/units", post(set_units))
        .route("/admin", get(admin))
        .route("/admin/users/{id}/role", post(set_role))
        .route("/admin/users/{id}/access", post(set_access))
        .route("/admin/jobs/{id}/retry", post(retry_job))
        .route("/admin/users/{id}/credit", post(credit))
        .route("/admin/audit", get(admin_audit))
        .route("/organizer/events/{id}/audit", get(event_audit))
}

/// Organizers and admins only; others are sent to sign in or told they may not.
fn organizer(visit: &Visit) -> Result<(), PageError> {
    match visit.caller {
        None => Err(PageError::sign_in(visit)),
        Some(caller) if caller.role.can_organize() => Ok(()),
        Some(_) => Err(forbidden(
            visit,
            "these pages are for organizers; ask an admin to make your account one",
        )),
    }
}

fn admin_only(visit: &Visit) -> Result<(), PageError> {
    match visit.caller {
        None => Err(PageError::sign_in(visit)),
        Some(caller) if caller.role == Role::Admin => Ok(()),
        Some(_) => Err(forbidden(visit, "this page is for admins")),
    }
}

fn forbidden(visit: &Visit, detail: &str) -> PageError {
    PageError::refused(visit, Refusal::from_status(StatusCode::FORBIDDEN, detail))
}

fn refused(visit: &Visit) -> impl Fn(Refusal) -> PageError + '_ {
    move |r| PageError::refused(visit, r)
}

// ---------------------------------------------------------------- dashboard

struct EventRow {
    id: Uuid,
    title: String,
    status: String,
    performances: Vec<SalesRow>,
}

struct SalesRow {
    id: Uuid,
    when: String,
    status: String,
    sold: u64,
    held: u64,
    available: u64,
    capacity: u64,
    revenue: String,
    checked_in: u64,
    tickets: u64,
}

impl From<&PerformanceSalesView> for SalesRow {
    fn from(p: &PerformanceSalesView) -> Self {
        Self {
            id: p.performance_id,
            when: format::when(&p.starts_at),
            status: p.status.clone(),
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
struct Dashboard {
    chrome: Chrome,
    /// This page is not the newest events.
    earlier: bool,
    next: Option<String>,
    events: Vec<EventRow>,
    sold: u64,
    revenue: Vec<String>,
    chart: BarChart,
}

/// Events per dashboard page: each costs one sales query.
const DASHBOARD_EVENTS: u32 = 20;

async fn dashboard(
    State(web): State<WebState>,
    visit: Visit,
    Query(query): Query<CursorQuery>,
) -> PageResult {
    organizer(&visit)?;
    let mut path = format!("/v1/events?mine=true&limit={DASHBOARD_EVENTS}");
    if let Some(cursor) = &query.cursor {
        path.push_str(&format!("&cursor={}", format::query_value(cursor)));
    }
    let page_of: EventPage = visit.get(&path).await.map_err(refused(&visit))?;
    let mut events = Vec::new();
    let mut bars = Vec::new();
    let mut sold = 0;
    let mut revenue: Vec<(String, i64)> = Vec::new();
    for event in page_of.items {
        let sales: EventSales = visit
            .get(&format!("/v1/events/{}/sales", event.id))
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
            status: event.status,
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

fn truncate(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(chars - 1).collect();
    short.push('…');
    short
}

// ---------------------------------------------------------------- events

#[derive(Template)]
#[template(path = "manage/event.html")]
struct EventForm {
    chrome: Chrome,
    /// None while creating.
    event: Option<EventView>,
    title: String,
    venue: String,
    description: String,
    details: String,
    performances: Vec<SalesRow>,
    /// The latest changes to the event (none while creating).
    audit: Vec<AuditLine>,
    problem: Option<String>,
    errors: Vec<FieldError>,
    notice: Option<String>,
}

impl EventForm {
    fn error_for(&self, field: &str) -> Option<String> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| format::sentence(&e.message))
    }
}

async fn new_event(State(web): State<WebState>, visit: Visit) -> PageResult {
    organizer(&visit)?;
    let view = EventForm {
        chrome: Chrome::of(&visit),
        event: None,
        title: String::new(),
        venue: String::new(),
        description: String::new(),
        details: String::new(),
        performances: vec![],
        audit: vec![],
        problem: None,
        errors: vec![],
        notice: None,
    };
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

/// "genre: jazz" lines become the event's free-form attributes.
fn parse_details(text: &str) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!(
                "line {} of the details has no colon; write them as “name: value”",
                i + 1
            ));
        };
        let key = key.trim().to_lowercase().replace(' ', "_");
        if key.is_empty() {
            return Err(format!("line {} of the details has no name", i + 1));
        }
        map.insert(key, Value::String(value.trim().to_owned()));
    }
    Ok(map)
}

fn details_text(attributes: &Value) -> String {
    match attributes {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{}: {s}", k.replace('_', " ")),
                other => format!("{}: {other}", k.replace('_', " ")),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn event_form_from(visit: &Visit, form: &Form, event: Option<EventView>) -> EventForm {
    EventForm {
        chrome: Chrome::of(visit),
        event,
        title: form.text("title"),
        venue: form.text("venue"),
        description: form.text("description"),
        details: form.text("details"),
        performances: vec![],
        audit: vec![],
        problem: None,
        errors: vec![],
        notice: None,
    }
}

fn event_body(form: &Form) -> Result<Value, String> {
    let details = parse_details(&form.text("details"))?;
    Ok(json!({
        "title": form.text("title"),
        "venue": form.text("venue"),
        "description": form.text("description"),
        "attributes": details,
    }))
}

async fn create_event(State(web): State<WebState>, visit: Visit, form: Form) -> PageResult {
    organizer(&visit)?;
    let mut view = event_form_from(&visit, &form, None);
    let body = match event_body(&form) {
        Ok(body) => body,
        Err(problem) => {
            view.problem = Some(format::sentence(&problem));
            return Ok(page(
                &view,
                StatusCode::UNPROCESSABLE_ENTITY,
                web.form_targets,
            ));
        }
    };
    match visit.post::<EventView>("/v1/events", &body).await {
        Ok(event) => {
            Ok(Redirect::to(&format!("/organizer/events/{}?created=1", event.id)).into_response())
        }
        Err(refusal) => {
            let refusal = refusal.for_the_form(&visit)?;
            let status = refusal.status;
            if refusal.problem.errors.is_empty() {
                view.problem = Some(refusal.message());
            }
            view.errors = refusal.problem.errors;
            Ok(page(&view, status, web.form_targets))
        }
    }
}

#[derive(Deserialize)]
struct Notice {
    created: Option<u8>,
    saved: Option<u8>,
}

async fn edit_event(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    Query(notice): Query<Notice>,
) -> PageResult {
    organizer(&visit)?;
    let id = id(&visit, &raw)?;
    let mut view = event_page(&visit, id).await?;
    view.notice = match (notice.created, notice.saved) {
        (Some(_), _) => Some("Created as a draft. Add performances, then publish it.".into()),
        (_, Some(_)) => Some("Saved.".into()),
        _ => None,
    };
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

async fn event_page(visit: &Visit, id: Uuid) -> Result<EventForm, PageError> {
    let detail: EventDetail = visit
        .get(&format!("/v1/events/{id}"))
        .await
        .map_err(refused(visit))?;
    // The sales view answers only to the event's owner (and admins): it is also the
    // check that this organizer may manage the event.
    let sales: EventSales = visit
        .get(&format!("/v1/events/{id}/sales"))
        .await
        .map_err(refused(visit))?;
    let audit: AuditPage = visit
        .get(&format!("/v1/events/{id}/audit?limit={AUDIT_PREVIEW}"))
        .await
        .map_err(refused(visit))?;
    let event = detail.event;
    Ok(EventForm {
        chrome: Chrome::of(visit),
        title: event.title.clone(),
        venue: event.venue.clone(),
        description: event.description.clone(),
        details: details_text(&event.attributes),
        event: Some(event),
        performances: sales.performances.iter().map(SalesRow::from).collect(),
        audit: audit.items.iter().map(AuditLine::from).collect(),
        problem: None,
        errors: vec![],
        notice: None,
    })
}

async fn update_event(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    organizer(&visit)?;
    let id = id(&visit, &raw)?;
    let saved = event_page(&visit, id).await?;
    let mut view = event_form_from(&visit, &form, saved.event);
    view.performances = saved.performances;
    view.audit = saved.audit;
    let body = match event_body(&form) {
        Ok(body) => body,
        Err(problem) => {
            view.problem = Some(format::sentence(&problem));
            return Ok(page(
                &view,
                StatusCode::UNPROCESSABLE_ENTITY,
                web.form_targets,
            ));
        }
    };
    match visit
        .patch::<EventView>(&format!("/v1/events/{id}"), &body)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/organizer/events/{id}?saved=1")).into_response()),
        Err(refusal) => {
            let refusal = refusal.for_the_form(&visit)?;
            let status = refusal.status;
            if refusal.problem.errors.is_empty() {
                view.problem = Some(refusal.message());
            }
            view.errors = refusal.problem.errors;
            Ok(page(&view, status, web.form_targets))
        }
    }
}

/// Publish, unpublish or cancel.
async fn set_status(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    organizer(&visit)?;
    let id = id(&visit, &raw)?;
    let status = form.text("status");
    match visit
        .patch::<EventView>(&format!("/v1/events/{id}"), &json!({ "status": status }))
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/organizer/events/{id}?saved=1")).into_response()),
        Err(refusal) => {
            let refusal = refusal.for_the_form(&visit)?;
            let status = refusal.status;
            let mut view = event_page(&visit, id).await?;
            view.problem = Some(refusal.message());
            Ok(page(&view, status, web.form_targets))
        }
    }
}

// ---------------------------------------------------------------- performances

struct SectionLine {
    name: String,
    price: String,
    rows: String,
    seats: String,
}

struct TicketLine {
    name: String,
    price: String,
    capacity: String,
}

#[derive(Template)]
#[template(path = "manage/performance_form.html")]
struct PerformanceForm {
    chrome: Chrome,
    event_id: Uuid,
    event_title: String,
    starts_at: String,
    on_sale_at: String,
    hold_minutes: String,
    max_per_booking: String,
    kind: String,
    currency: String,
    sections: Vec<SectionLine>,
    ticket_types: Vec<TicketLine>,
    problems: Vec<String>,
}

const CURRENCIES: [&str; 6] = ["EUR", "USD", "GBP", "CHF", "SEK", "JPY"];

impl PerformanceForm {
    fn currencies(&self) -> &'static [&'static str] {
        &CURRENCIES
    }
}

async fn new_performance(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
) -> PageResult {
    organizer(&visit)?;
    let id = id(&visit, &raw)?;
    let event = event_page(&visit, id).await?;
    let start = (chrono::Utc::now() + chrono::Duration::days(30))
        .date_naive()
        .and_hms_opt(19, 30, 0)
        .map(|t| t.and_utc())
        .unwrap_or_else(chrono::Utc::now);
    let view = PerformanceForm {
        chrome: Chrome::of(&visit),
        event_id: id,
        event_title: event.title,
        starts_at: format::datetime_local(&start),
        on_sale_at: String::new(),
        hold_minutes: String::new(),
        max_per_booking: String::new(),
        kind: "reserved".into(),
        currency: "EUR".into(),
        sections: vec![
            SectionLine {
                name: "Stalls".into(),
                price: "45.00".into(),
                rows: "8".into(),
                seats: "16".into(),
            },
            SectionLine {
                name: "Balcony".into(),
                price: "30.00".into(),
                rows: "4".into(),
                seats: "12".into(),
            },
            blank_section(),
        ],
        ticket_types: vec![
            TicketLine {
                name: "Standing".into(),
                price: "25.00".into(),
                capacity: "300".into(),
            },
            blank_ticket_type(),
        ],
        problems: vec![],
    };
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

fn blank_section() -> SectionLine {
    SectionLine {
        name: String::new(),
        price: String::new(),
        rows: String::new(),
        seats: String::new(),
    }
}

fn blank_ticket_type() -> TicketLine {
    TicketLine {
        name: String::new(),
        price: String::new(),
        capacity: String::new(),
    }
}

/// The builder's lines as the API's `seating`, or what is wrong with them.
fn seating(form: &Form, kind: &str, currency: &str) -> Result<Value, Vec<String>> {
    let mut problems = Vec::new();
    let price = |text: &str, what: &str, problems: &mut Vec<String>| {
        let amount = format::parse_price(text, currency);
        if amount.is_none() {
            problems.push(format!("{what}: the price should be a number like 45.00."));
        }
        json!({ "amount": amount.unwrap_or(0), "currency": currency })
    };
    let count = |text: &str, what: &str, max: i64, problems: &mut Vec<String>| match text
        .trim()
        .parse::<i64>()
    {
        Ok(n) if (1..=max).contains(&n) => n,
        _ => {
            problems.push(format!("{what}: give a whole number from 1 to {max}."));
            0
        }
    };
    let seating = if kind == "general" {
        let names: Vec<&str> = form.all("tt_name").collect();
        let prices: Vec<&str> = form.all("tt_price").collect();
        let capacities: Vec<&str> = form.all("tt_capacity").collect();
        let mut types = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let (p, c) = (
                prices.get(i).copied().unwrap_or(""),
                capacities.get(i).copied().unwrap_or(""),
            );
            if name.trim().is_empty() && p.trim().is_empty() && c.trim().is_empty() {
                continue;
            }
            let what = format!("Ticket type {}", i + 1);
            types.push(json!({
                "name": name.trim(),
                "price": price(p, &what, &mut problems),
                "capacity": count(c, &format!("{what}, capacity"), 100_000, &mut problems),
            }));
        }
        if types.is_empty() {
            problems.push("Add at least one ticket type.".into());
        }
        json!({ "kind": "general", "ticket_types": types })
    } else {
        let names: Vec<&str> = form.all("section_name").collect();
        let prices: Vec<&str> = form.all("section_price").collect();
        let rows: Vec<&str> = form.all("section_rows").collect();
        let seats: Vec<&str> = form.all("section_seats").collect();
        let mut sections = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let (p, r, s) = (
                prices.get(i).copied().unwrap_or(""),
                rows.get(i).copied().unwrap_or(""),
                seats.get(i).copied().unwrap_or(""),
            );
            if [name, &p, &r, &s].iter().all(|f| f.trim().is_empty()) {
                continue;
            }
            let what = format!("Section {}", i + 1);
            let price = price(p, &what, &mut problems);
            let row_count = count(r, &format!("{what}, rows"), 200, &mut problems);
            let seat_count = count(s, &format!("{what}, seats per row"), 200, &mut problems);
            let rows: Vec<Value> = (0..row_count as usize)
                .map(|r| json!({ "label": format::row_label(r), "seats": seat_count }))
                .collect();
            sections.push(json!({ "name": name.trim(), "price": price, "rows": rows }));
        }
        if sections.is_empty() {
            problems.push("Add at least one section.".into());
        }
        json!({ "kind": "reserved", "sections": sections })
    };
    if problems.is_empty() {
        Ok(seating)
    } else {
        Err(problems)
    }
}

async fn create_performance(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    organizer(&visit)?;
    let id = id(&visit, &raw)?;
    let event = event_page(&visit, id).await?;
    let kind = if form.get("kind") == Some("general") {
        "general"
    } else {
        "reserved"
    };
    let currency = form.text("currency").to_uppercase();
    let mut view = PerformanceForm {
        chrome: Chrome::of(&visit),
        event_id: id,
        event_title: event.title,
        starts_at: form.text("starts_at"),
        on_sale_at: form.text("on_sale_at"),
        hold_minutes: form.text("hold_minutes"),
        max_per_booking: form.text("max_per_booking"),
        kind: kind.into(),
        currency: currency.clone(),
        sections: lines4(
            &form,
            "section_name",
            "section_price",
            "section_rows",
            "section_seats",
        )
        .into_iter()
        .map(|[name, price, rows, seats]| SectionLine {
            name,
            price,
            rows,
            seats,
        })
        .collect(),
        ticket_types: lines4(&form, "tt_name", "tt_price", "tt_capacity", "")
            .into_iter()
            .map(|[name, price, capacity, _]| TicketLine {
                name,
                price,
                capacity,
            })
            .collect(),
        problems: vec![],
    };
    if view.sections.is_empty() {
        view.sections.push(blank_section());
    }
    if view.ticket_types.is_empty() {
        view.ticket_types.push(blank_ticket_type());
    }
    let mut problems = Vec::new();
    let starts_at = format::parse_datetime_local(&view.starts_at);
    if starts_at.is_none() {
        problems.push("Give the date and time the performance starts.".to_owned());
    }
    let on_sale_at = if view.on_sale_at.is_empty() {
        None
    } else {
        let parsed = format::parse_datetime_local(&view.on_sale_at);
        if parsed.is_none() {
            problems.push("The on-sale time is not a date and time.".to_owned());
        }
        parsed
    };
    let mut optional_number = |text: &str, what: &str| -> Option<i64> {
        if text.is_empty() {
            return None;
        }
        let n = text.parse::<i64>().ok();
        if n.is_none() {
            problems.push(format!("{what} should be a whole number."));
        }
        n
    };
    let hold_minutes = optional_number(&view.hold_minutes, "The hold time");
    let max_per_booking = optional_number(&view.max_per_booking, "The most tickets per booking");
    let seating = seating(&form, kind, &currency)
        .map_err(|p| problems.extend(p))
        .ok();
    let (Some(starts_at), Some(seating), true) = (starts_at, seating, problems.is_empty()) else {
        view.problems = problems;
        return Ok(page(
            &view,
            StatusCode::UNPROCESSABLE_ENTITY,
            web.form_targets,
        ));
    };
    let mut body = json!({ "starts_at": starts_at, "seating": seating });
    if let Some(minutes) = hold_minutes {
        body["hold_ttl_seconds"] = json!(minutes.saturating_mul(60));
    }
    if let Some(max) = max_per_booking {
        body["max_per_booking"] = json!(max);
    }
    if let Some(at) = on_sale_at {
        body["on_sale_at"] = json!(at);
    }
    match visit
        .post::<PerformanceView>(&format!("/v1/events/{id}/performances"), &body)
        .await
    {
        Ok(created) => {
            Ok(Redirect::to(&format!("/organizer/performances/{}", created.id)).into_response())
        }
        Err(refusal) => {
            let refusal = refusal.for_the_form(&visit)?;
            view.problems = if refusal.problem.errors.is_empty() {
                vec![refusal.message()]
            } else {
                refusal
                    .problem
                    .errors
                    .iter()
                    .map(|e| format!("{}: {}", plan_field(&e.field), format::sentence(&e.message)))
                    .collect()
            };
            Ok(page(
                &view,
                StatusCode::UNPROCESSABLE_ENTITY,
                web.form_targets,
            ))
        }
    }
}

/// `seating.sections[1].rows[0].label` → `Section 2, row 1, label`.
fn plan_field(field: &str) -> String {
    let mut words = Vec::new();
    for part in field.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (
                name,
                rest.trim_end_matches(']')
                    .parse::<usize>()
                    .ok()
                    .map(|i| i + 1),
            ),
            None => (part, None),
        };
        let name = match name {
            "seating" => continue,
            "sections" => "Section",
            "rows" => "row",
            "ticket_types" => "Ticket type",
            "starts_at" => "Start",
            "hold_ttl_seconds" => "Hold time",
            "max_per_booking" => "Most tickets per booking",
            other => other,
        };
        words.push(match index {
            Some(i) => format!("{name} {i}"),
            None => name.replace('_', " "),
        });
    }
    format::sentence(&words.join(", "))
        .trim_end_matches('.')
        .to_owned()
}

/// Repeated fields of the builder, line by line, as they were typed.
fn lines4(form: &Form, a: &str, b: &str, c: &str, d: &str) -> Vec<[String; 4]> {
    let cols: [Vec<&str>; 4] = [
        form.all(a).collect(),
        form.all(b).collect(),
        form.all(c).collect(),
        form.all(d).collect(),
    ];
    let n = cols.iter().map(Vec::len).max().unwrap_or(0);
    (0..n)
        .map(|i| [0, 1, 2, 3].map(|k| cols[k].get(i).copied().unwrap_or("").trim().to_owned()))
        .filter(|line: &[String; 4]| line.iter().any(|f| !f.is_empty()))
        .collect()
}

struct AttendeeLine {
    name: String,
    email: String,
    seats: String,
    total: String,
    paid_at: String,
}

#[derive(Template)]
#[template(path = "manage/performance.html")]
struct PerformancePage {
    chrome: Chrome,
    event_id: Uuid,
    event_title: String,
    performance: PerformanceView,
    when: String,
    revenue: String,
    map: Option<SeatMapLayout>,
    line: SalesLine,
    attendees: Vec<AttendeeLine>,
    more_attendees: bool,
    problem: Option<String>,
    notice: Option<String>,
}

#[derive(Deserialize)]
struct UnitsNotice {
    changed: Option<u64>,
}

async fn performance(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    Query(notice): Query<UnitsNotice>,
) -> PageResult {
    organizer(&visit)?;
    let id = id(&visit, &raw)?;
    let mut view = performance_page(&visit, id).await?;
    view.notice = notice
        .changed
        .map(|n| format!("{n} seat{} changed.", if n == 1 { "" } else { "s" }));
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

async fn performance_page(visit: &Visit, id: Uuid) -> Result<PerformancePage, PageError> {
    let performance: PerformanceView = visit
        .get(&format!("/v1/performances/{id}"))
        .await
        .map_err(refused(visit))?;
    let event: EventView = visit
        .get(&format!("/v1/events/{}", performance.event_id))
        .await
        .map_err(refused(visit))?;
    let sales: EventSales = visit
        .get(&format!("/v1/events/{}/sales", event.id))
        .await
        .map_err(refused(visit))?;
    let revenue = sales
        .performances
        .iter()
        .find(|p| p.performance_id == id)
        .map(|p| format::price(&p.revenue))
        .unwrap_or_default();
    let attendees: AttendeePage = visit
        .get(&format!(
            "/v1/performances/{id}/bookings?status=confirmed&limit=100"
        ))
        .await
        .map_err(refused(visit))?;
    let map = if performance.kind == "reserved" {
        let seats: SeatMap = visit
            .get(&format!("/v1/performances/{id}/seats"))
            .await
            .map_err(refused(visit))?;
        Some(SeatMapLayout::new(&seats.units))
    } else {
        None
    };
    let names: std::collections::HashMap<Uuid, String> = performance
        .ticket_types
        .iter()
        .flatten()
        .map(|t| (t.id, t.name.clone()))
        .collect();
    let line = SalesLine::new(
        attendees
            .items
            .iter()
            .map(|a| (a.booking.updated_at, a.booking.units.len() as u64))
            .collect(),
    );
    let attendee_lines = attendees
        .items
        .iter()
        .map(|a| AttendeeLine {
            name: a.buyer.name.clone(),
            email: a.buyer.email.clone(),
            seats: a
                .booking
                .units
                .iter()
                .map(|u| match (&u.section, &u.row, &u.label) {
                    (Some(s), Some(r), Some(l)) => format::seat_short(s, r, l),
                    _ => u
                        .ticket_type_id
                        .and_then(|t| names.get(&t).cloned())
                        .unwrap_or_else(|| "Admission".into()),
                })
                .collect::<Vec<_>>()
                .join(", "),
            total: format::price(&a.booking.total),
            paid_at: format::when(&a.booking.updated_at),
        })
        .collect();
    Ok(PerformancePage {
        chrome: Chrome::of(visit),
        event_id: event.id,
        event_title: event.title,
        when: format::when(&performance.starts_at),
        performance,
        revenue,
        map,
        line,
        attendees: attendee_lines,
        more_attendees: attendees.next_cursor.is_some(),
        problem: None,
        notice: None,
    })
}

/// House seats: block or free the picked seats.
async fn set_units(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    organizer(&visit)?;
    let id = id(&visit, &raw)?;
    let picked = form.text("unit_ids");
    let unit_ids: Vec<&str> = picked
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let state = if form.get("state") == Some("available") {
        "available"
    } else {
        "blocked"
    };
    let result = if unit_ids.is_empty() {
        Err(None)
    } else {
        visit
            .patch::<UnitStatesChanged>(
                &format!("/v1/performances/{id}/units"),
                &json!({ "unit_ids": unit_ids, "state": state }),
            )
            .await
            .map_err(Some)
    };
    match result {
        Ok(changed) => Ok(Redirect::to(&format!(
            "/organizer/performances/{id}?changed={}",
            changed.changed
        ))
        .into_response()),
        Err(refusal) => {
            let (status, problem) = match refusal {
                None => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Pick the seats on the map first.".to_owned(),
                ),
                Some(r) if r.status == StatusCode::CONFLICT => (
                    r.status,
                    "Some of those seats are held or sold, so nothing was changed. Pick only free (or blocked) seats.".to_owned(),
                ),
                Some(r) => {
                    let r = r.for_the_form(&visit)?;
                    (r.status, r.message())
                }
            };
            let mut view = performance_page(&visit, id).await?;
            view.problem = Some(problem);
            Ok(page(&view, status, web.form_targets))
        }
    }
}

// ---------------------------------------------------------------- admin

#[derive(Template)]
#[template(path = "manage/admin.html")]
struct AdminPage {
    chrome: Chrome,
    q: String,
    users: Vec<UserView>,
    more_users: bool,
    jobs: Vec<JobView>,
    audit: Vec<AuditLine>,
    me: Uuid,
    notice: Option<String>,
    problem: Option<String>,
}

impl AdminPage {
    fn roles(&self) -> [&'static str; 3] {
        ["customer", "organizer", "admin"]
    }

    fn currencies(&self) -> &'static [&'static str] {
        &CURRENCIES
    }
}

#[derive(Deserialize)]
struct AdminQuery {
    q: Option<String>,
    done: Option<String>,
}

async fn admin(
    State(web): State<WebState>,
    visit: Visit,
    Query(query): Query<AdminQuery>,
) -> PageResult {
    admin_only(&visit)?;
    let notice = match query.done.as_deref() {
        Some("role") => Some("Role changed. It applies from the user's next request.".to_owned()),
        Some("disabled") => Some(
            "Disabled: every session of the account ended, and it cannot sign in until enabled."
                .to_owned(),
        ),
        Some("enabled") => Some("Enabled: the account can sign in again.".to_owned()),
        Some("retry") => Some("The job is queued again.".to_owned()),
        Some("credit") => Some("Credited. The user sees it in their wallet now.".to_owned()),
        _ => None,
    };
    let view = admin_page(&visit, query.q.unwrap_or_default(), notice, None).await?;
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

async fn admin_page(
    visit: &Visit,
    q: String,
    notice: Option<String>,
    problem: Option<String>,
) -> Result<AdminPage, PageError> {
    let q = q.trim().to_owned();
    let encoded = format::query_value(&q);
    let users: UserPage = visit
        .get(&format!("/v1/admin/users?limit=50&q={encoded}"))
        .await
        .map_err(refused(visit))?;
    let jobs: JobList = visit
        .get("/v1/admin/jobs?state=dead")
        .await
        .map_err(refused(visit))?;
    let audit: AuditPage = visit
        .get(&format!("/v1/admin/audit?limit={AUDIT_PREVIEW}"))
        .await
        .map_err(refused(visit))?;
    Ok(AdminPage {
        chrome: Chrome::of(visit),
        q,
        more_users: users.next_cursor.is_some(),
        users: users.items,
        jobs: jobs.items,
        audit: audit.items.iter().map(AuditLine::from).collect(),
        me: visit.caller.map(|c| c.id).unwrap_or_default(),
        notice,
        problem,
    })
}

async fn set_role(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    let change = json!({ "role": form.text("role") });
    change_user(&web, &visit, &raw, change, "role").await
}

/// Disables an account (every session ends at once) or enables it again.
async fn set_access(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    let disabled = form.text("disabled") == "true";
    let done = if disabled { "disabled" } else { "enabled" };
    change_user(&web, &visit, &raw, json!({ "disabled": disabled }), done).await
}

/// An admin's change to an account through `PATCH /v1/admin/users/{id}`: back to the
/// admin page saying `done`, or the page again with the API's refusal.
async fn change_user(
    web: &WebState,
    visit: &Visit,
    raw: &str,
    change: serde_json::Value,
    done: &str,
) -> PageResult {
    admin_only(visit)?;
    let id = id(visit, raw)?;
    match visit
        .patch::<UserView>(&format!("/v1/admin/users/{id}"), &change)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/admin?done={done}")).into_response()),
        Err(refusal) => {
            let refusal = refusal.for_the_form(visit)?;
            let status = refusal.status;
            let view = admin_page(visit, String::new(), None, Some(refusal.message())).await?;
            Ok(page(&view, status, web.form_targets))
        }
    }
}

async fn retry_job(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    _form: Form,
) -> PageResult {
    admin_only(&visit)?;
    let id = id(&visit, &raw)?;
    match visit
        .post_empty(&format!("/v1/admin/jobs/{id}/retry"), &json!({}))
        .await
    {
        Ok(_) => Ok(Redirect::to("/admin?done=retry").into_response()),
        Err(refusal) => {
            let refusal = refusal.for_the_form(&visit)?;
            let status = refusal.status;
            let view = admin_page(&visit, String::new(), None, Some(refusal.message())).await?;
            Ok(page(&view, status, web.form_targets))
        }
    }
}

/// Store credit given from a user's row.
async fn credit(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    admin_only(&visit)?;
    let id = id(&visit, &raw)?;
    let currency = form.text("currency").to_uppercase();
    let result = match format::parse_price(&form.text("amount"), &currency) {
        None => Err(Refusal::from_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the amount should be a number like 25.00",
        )),
        Some(amount) => visit
            .post::<WalletEntryView>(
                &format!("/v1/admin/wallets/{id}/credit"),
                &json!({
                    "amount": { "amount": amount, "currency": currency },
                    "reason": form.text("reason"),
                }),
            )
            .await
            .map(|_| ()),
    };
    match result {
        Ok(()) => Ok(Redirect::to("/admin?done=credit").into_response()),
        Err(refusal) => {
            let refusal = refusal.for_the_form(&visit)?;
            let status = refusal.status;
            let view = admin_page(&visit, String::new(), None, Some(refusal.message())).await?;
            Ok(page(&view, status, web.form_targets))
        }
    }
}

// ---------------------------------------------------------------- the audit log

/// Entries shown on the admin page and an event's page; the rest is a click away.
const AUDIT_PREVIEW: u32 = 10;

/// One audit entry as a page shows it.
struct AuditLine {
    at: String,
    who: String,
    action: String,
    target: String,
    detail: String,
    request_id: String,
}

impl From<&AuditEntryView> for AuditLine {
    fn from(entry: &AuditEntryView) -> Self {
        let action = entry.action.replace(['.', '_'], " ");
        Self {
            at: entry.at.format("%Y-%m-%d %H:%M:%S").to_string(),
            who: match (&entry.actor_name, entry.actor_id) {
                (Some(name), _) => name.clone(),
                (None, Some(id)) => format!("user {}", &id.to_string()[..8]),
                (None, None) => "system".to_owned(),
            },
            action: format::sentence(&action).trim_end_matches('.').to_owned(),
            target: format!(
                "{} {}",
                entry.target.kind,
                &entry.target.id.to_string()[..8]
            ),
            detail: detail_text(&entry.detail),
            request_id: entry.request_id.clone().unwrap_or_default(),
        }
    }
}

/// An entry's detail in one short line: `changed: 2, unit ids: 2 items`.
fn detail_text(detail: &Value) -> String {
    const MAX_CHARS: usize = 160;
    let Value::Object(map) = detail else {
        return String::new();
    };
    let text = map
        .iter()
        .map(|(key, value)| {
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Array(items) if items.len() == 1 => match &items[0] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
                Value::Array(items) => format!("{} items", items.len()),
                other => other.to_string(),
            };
            format!("{}: {value}", key.replace('_', " "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    truncate(&text, MAX_CHARS)
}

#[derive(Template)]
#[template(path = "manage/audit.html")]
struct AuditLogPage {
    chrome: Chrome,
    /// The event, for an organizer's view of one event; none for the whole log.
    event: Option<(Uuid, String)>,
    audit: Vec<AuditLine>,
    earlier: bool,
    next: Option<String>,
}

async fn admin_audit(
    State(web): State<WebState>,
    visit: Visit,
    Query(query): Query<CursorQuery>,
) -> PageResult {
    admin_only(&visit)?;
    let view = audit_log_page(&visit, "/v1/admin/audit", "/admin/audit", None, query).await?;
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

async fn event_audit(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    Query(query): Query<CursorQuery>,
) -> PageResult {
    organizer(&visit)?;
    let id = id(&visit, &raw)?;
    let event: EventView = visit
        .get(&format!("/v1/events/{id}"))
        .await
        .map_err(refused(&visit))?;
    let view = audit_log_page(
        &visit,
        &format!("/v1/events/{id}/audit"),
        &format!("/organizer/events/{id}/audit"),
        Some((id, event.title)),
        query,
    )
    .await?;
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

async fn audit_log_page(
    visit: &Visit,
    api_path: &str,
    page_path: &str,
    event: Option<(Uuid, String)>,
    query: CursorQuery,
) -> Result<AuditLogPage, PageError> {
    let mut path = format!("{api_path}?limit=50");
    if let Some(cursor) = &query.cursor {
        path.push_str(&format!("&cursor={}", format::query_value(cursor)));
    }
    let log: AuditPage = visit.get(&path).await.map_err(refused(visit))?;
    Ok(AuditLogPage {
        chrome: Chrome::of(visit),
        event,
        audit: log.items.iter().map(AuditLine::from).collect(),
        earlier: query.cursor.is_some(),
        next: log
            .next_cursor
            .map(|c| format!("{page_path}?cursor={}", format::query_value(&c))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_lines_become_attributes_and_back() {
        let map = parse_details("Genre: jazz\n\n age limit : 18+ ").unwrap();
        assert_eq!(map["genre"], "jazz");
        assert_eq!(map["age_limit"], "18+");
        assert_eq!(
            details_text(&Value::Object(map)),
            "age limit: 18+\ngenre: jazz"
        );
        assert!(parse_details("no colon here").is_err());
    }

    #[test]
    fn the_builder_makes_rows_of_seats_per_section() {
        let form = Form::from_pairs(&[
            ("section_name", "Stalls"),
            ("section_price", "45"),
            ("section_rows", "3"),
            ("section_seats", "10"),
            ("section_name", ""),
            ("section_price", ""),
            ("section_rows", ""),
            ("section_seats", ""),
        ]);
        let seating = seating(&form, "reserved", "EUR").unwrap();
        let sections = seating["sections"].as_array().unwrap();
        assert_eq!(sections.len(), 1, "blank lines are skipped");
        assert_eq!(
            sections[0]["price"],
            json!({"amount": 4500, "currency": "EUR"})
        );
        let rows = sections[0]["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2], json!({"label": "C", "seats": 10}));
    }

    #[test]
    fn the_builder_names_each_bad_line() {
        let form = Form::from_pairs(&[
            ("tt_name", "Standing"),
            ("tt_price", "twenty"),
            ("tt_capacity", "0"),
        ]);
        let problems = seating(&form, "general", "EUR").unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("Ticket type 1"));
        let empty = Form::from_pairs(&[]);
        assert_eq!(
            seating(&empty, "reserved", "EUR").unwrap_err(),
            ["Add at least one section."]
        );
    }

    #[test]
    fn plan_fields_read_as_words() {
        assert_eq!(
            plan_field("seating.sections[1].rows[0].label"),
            "Section 2, row 1, label"
        );
        assert_eq!(plan_field("starts_at"), "Start");
    }
}
