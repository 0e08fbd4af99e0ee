//! Performances: the seating-plan builder, the performance page with its attendees,
//! and house seats.

use super::*;

pub(super) struct SectionLine {
    pub(super) name: String,
    pub(super) price: String,
    pub(super) rows: String,
    pub(super) seats: String,
}

pub(super) struct TicketLine {
    pub(super) name: String,
    pub(super) price: String,
    pub(super) capacity: String,
}

#[derive(Template)]
#[template(path = "manage/performance_form.html")]
pub(super) struct PerformanceForm {
    pub(super) chrome: Chrome,
    pub(super) event_id: Uuid,
    pub(super) event_title: String,
    pub(super) starts_at: String,
    pub(super) on_sale_at: String,
    pub(super) hold_minutes: String,
    pub(super) max_per_booking: String,
    pub(super) kind: String,
    pub(super) currency: String,
    pub(super) sections: Vec<SectionLine>,
    pub(super) ticket_types: Vec<TicketLine>,
    pub(super) problems: Vec<String>,
}

pub(super) const CURRENCIES: [&str; 6] = ["EUR", "USD", "GBP", "CHF", "SEK", "JPY"];

impl PerformanceForm {
    fn currencies(&self) -> &'static [&'static str] {
        &CURRENCIES
    }
}

pub(super) async fn new_performance(
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

pub(super) fn blank_section() -> SectionLine {
    SectionLine {
        name: String::new(),
        price: String::new(),
        rows: String::new(),
        seats: String::new(),
    }
}

pub(super) fn blank_ticket_type() -> TicketLine {
    TicketLine {
        name: String::new(),
        price: String::new(),
        capacity: String::new(),
    }
}

/// The builder's lines as the API's `seating`, or what is wrong with them.
pub(super) fn seating(
    form: &Form,
    kind: &str,
    currency: &str,
) -> Result<SeatingRequest, Vec<String>> {
    let mut lines = Lines {
        currency,
        problems: Vec::new(),
    };
    let seating = if kind == "general" {
        lines.general(form)
    } else {
        lines.reserved(form)
    };
    if lines.problems.is_empty() {
        Ok(seating)
    } else {
        Err(lines.problems)
    }
}

/// Reads the builder's lines, collecting what is wrong with each in words.
struct Lines<'a> {
    currency: &'a str,
    problems: Vec<String>,
}

impl Lines<'_> {
    fn price(&mut self, text: &str, what: &str) -> PriceRequest {
        let amount = format::parse_price(text, self.currency);
        if amount.is_none() {
            self.problems
                .push(format!("{what}: the price should be a number like 45.00."));
        }
        PriceRequest {
            amount: amount.unwrap_or(0),
            currency: self.currency.to_owned(),
        }
    }

    fn count(&mut self, text: &str, what: &str, max: i64) -> i64 {
        match text.trim().parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                self.problems
                    .push(format!("{what}: give a whole number from 1 to {max}."));
                0
            }
        }
    }

    fn general(&mut self, form: &Form) -> SeatingRequest {
        let mut types = Vec::new();
        for (i, [name, price, capacity, _]) in
            numbered(form, "tt_name", "tt_price", "tt_capacity", "")
        {
            let what = format!("Ticket type {}", i + 1);
            types.push(TicketTypeRequest {
                name,
                price: self.price(&price, &what),
                capacity: self.count(&capacity, &format!("{what}, capacity"), 100_000),
            });
        }
        if types.is_empty() {
            self.problems.push("Add at least one ticket type.".into());
        }
        SeatingRequest::General {
            ticket_types: types,
        }
    }

    fn reserved(&mut self, form: &Form) -> SeatingRequest {
        let mut sections = Vec::new();
        let lines = numbered(
            form,
            "section_name",
            "section_price",
            "section_rows",
            "section_seats",
        );
        for (i, [name, price, rows, seats]) in lines {
            let what = format!("Section {}", i + 1);
            let price = self.price(&price, &what);
            let row_count = self.count(&rows, &format!("{what}, rows"), 200);
            let seat_count = self.count(&seats, &format!("{what}, seats per row"), 200);
            let rows = (0..row_count as usize)
                .map(|r| RowRequest {
                    label: format::row_label(r),
                    seats: SeatsRequest::Count(seat_count),
                })
                .collect();
            sections.push(SectionRequest { name, price, rows });
        }
        if sections.is_empty() {
            self.problems.push("Add at least one section.".into());
        }
        SeatingRequest::Reserved { sections }
    }
}

/// The builder's repeated fields, line by line with the line's place in the form
/// (blank lines skipped, so that a problem names the line as the organizer sees it).
fn numbered(form: &Form, a: &str, b: &str, c: &str, d: &str) -> Vec<(usize, [String; 4])> {
    let cols: [Vec<&str>; 4] = [
        form.all(a).collect(),
        form.all(b).collect(),
        form.all(c).collect(),
        form.all(d).collect(),
    ];
    let n = cols.iter().map(Vec::len).max().unwrap_or(0);
    (0..n)
        .map(|i| {
            (
                i,
                [0, 1, 2, 3].map(|k| cols[k].get(i).copied().unwrap_or("").trim().to_owned()),
            )
        })
        .filter(|(_, line)| line.iter().any(|f| !f.is_empty()))
        .collect()
}

pub(super) async fn create_performance(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    let caller = organizer(&visit)?;
    let id = id(&visit, &raw)?;
    let event = event_page(&visit, id).await?;
    let kind = if form.get("kind") == Some("general") {
        "general"
    } else {
        "reserved"
    };
    let mut view = performance_form(&visit, &form, id, event.title, kind);
    let body = match request_of(&view, &form, kind) {
        Ok(body) => body,
        Err(problems) => {
            view.problems = problems;
            return Ok(page(
                &view,
                StatusCode::UNPROCESSABLE_ENTITY,
                web.form_targets,
            ));
        }
    };
    let created =
        routes::performances::create(&visit.app, caller, &visit.request, id, Ok(body)).await;
    match created {
        Ok(created) => {
            Ok(Redirect::to(&format!("/organizer/performances/{}", created.id)).into_response())
        }
        Err(refused) => {
            let refusal = Refusal::from(refused).for_the_form(&visit)?;
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

/// The form as sent, with one blank line of each kind to fill in when there is none.
fn performance_form(
    visit: &Visit,
    form: &Form,
    event_id: Uuid,
    event_title: String,
    kind: &str,
) -> PerformanceForm {
    let currency = form.text("currency").to_uppercase();
    let mut view = PerformanceForm {
        chrome: Chrome::of(visit),
        event_id,
        event_title,
        starts_at: form.text("starts_at"),
        on_sale_at: form.text("on_sale_at"),
        hold_minutes: form.text("hold_minutes"),
        max_per_booking: form.text("max_per_booking"),
        kind: kind.into(),
        currency: currency.clone(),
        sections: lines4(
            form,
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
        ticket_types: lines4(form, "tt_name", "tt_price", "tt_capacity", "")
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
    if view.sections.is_empty() {
        view.sections.push(blank_section());
    }
    if view.ticket_types.is_empty() {
        view.ticket_types.push(blank_ticket_type());
    }
    view
}

/// The API request the form asks for, or every problem with it, in words.
fn request_of(
    view: &PerformanceForm,
    form: &Form,
    kind: &str,
) -> Result<CreatePerformanceRequest, Vec<String>> {
    let currency = view.currency.clone();
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
    let seating = seating(form, kind, &currency)
        .map_err(|p| problems.extend(p))
        .ok();
    let (Some(starts_at), Some(seating), true) = (starts_at, seating, problems.is_empty()) else {
        return Err(problems);
    };
    Ok(CreatePerformanceRequest {
        starts_at,
        hold_ttl_seconds: hold_minutes.map(|minutes| minutes.saturating_mul(60)),
        max_per_booking,
        on_sale_at,
        waiting_room: None,
        seating,
    })
}

/// `seating.sections[1].rows[0].label` → `Section 2, row 1, label`.
pub(super) fn plan_field(field: &str) -> String {
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
pub(super) fn lines4(form: &Form, a: &str, b: &str, c: &str, d: &str) -> Vec<[String; 4]> {
    numbered(form, a, b, c, d)
        .into_iter()
        .map(|(_, line)| line)
        .collect()
}

pub(super) struct AttendeeLine {
    pub(super) name: String,
    pub(super) email: String,
    pub(super) seats: String,
    pub(super) total: String,
    pub(super) paid_at: String,
}

#[derive(Template)]
#[template(path = "manage/performance.html")]
pub(super) struct PerformancePage {
    pub(super) chrome: Chrome,
    pub(super) event_id: Uuid,
    pub(super) event_title: String,
    pub(super) performance: PerformanceView,
    pub(super) when: String,
    pub(super) revenue: String,
    pub(super) map: Option<SeatMapLayout>,
    pub(super) line: SalesLine,
    pub(super) attendees: Vec<AttendeeLine>,
    pub(super) more_attendees: bool,
    pub(super) problem: Option<String>,
    pub(super) notice: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct UnitsNotice {
    pub(super) changed: Option<u64>,
}

pub(super) async fn performance(
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

pub(super) async fn performance_page(
    visit: &Visit,
    id: Uuid,
) -> Result<PerformancePage, PageError> {
    let caller = organizer(visit)?;
    let app = &visit.app;
    let performance = routes::performances::one(app, Some(*caller), id)
        .await
        .map_err(refused(visit))?;
    let event = routes::events::visible(app, Some(*caller), performance.event_id)
        .await
        .map_err(refused(visit))?;
    let sales = routes::performances::sales(app, caller, event.id)
        .await
        .map_err(refused(visit))?;
    let revenue = sales
        .performances
        .iter()
        .find(|p| p.performance_id == id)
        .map(|p| format::price(&p.revenue))
        .unwrap_or_default();
    let confirmed = AttendeeParams {
        status: Some("confirmed".into()),
        limit: Some(100),
        cursor: None,
    };
    let attendees = routes::performances::attendees(app, caller, id, Ok(confirmed))
        .await
        .map_err(refused(visit))?;
    let map = if performance.kind == usher_core::SeatingKind::Reserved {
        let seats = routes::performances::seat_map(app, Some(*caller), id)
            .await
            .map_err(refused(visit))?;
        Some(SeatMapLayout::new(&seats.units))
    } else {
        None
    };
    let line = SalesLine::new(
        attendees
            .items
            .iter()
            .map(|a| (a.booking.updated_at, a.booking.units.len() as u64))
            .collect(),
    );
    let attendee_lines = attendee_lines(&performance, &attendees);
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

/// The attendee list: who, what they hold (seats, or the ticket type's name), what
/// they paid and when.
fn attendee_lines(
    performance: &PerformanceView,
    attendees: &routes::performances::AttendeePage,
) -> Vec<AttendeeLine> {
    let names: std::collections::HashMap<Uuid, String> = performance
        .ticket_types
        .iter()
        .flatten()
        .map(|t| (t.id, t.name.clone()))
        .collect();
    attendees
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
        .collect()
}

/// House seats: block or free the picked seats.
pub(super) async fn set_units(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    let caller = organizer(&visit)?;
    let id = id(&visit, &raw)?;
    let picked = form.text("unit_ids");
    let unit_ids: Vec<String> = picked
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let state = if form.get("state") == Some("available") {
        "available"
    } else {
        "blocked"
    };
    let result = if unit_ids.is_empty() {
        Err(None)
    } else {
        let body = UnitStatesRequest {
            unit_ids,
            state: state.to_owned(),
        };
        routes::performances::set_states(&visit.app, caller, &visit.request, id, Ok(body))
            .await
            .map_err(|refused| Some(Refusal::from(refused)))
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
