//! Buyers' pages: browse events, pick seats on a live map (or a quantity of general
//! admission tickets), hold them, pay, and see the bookings with their ticket codes.
//! Also signing up, in and out.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use uuid::Uuid;

use crate::problem::FieldError;
use crate::rate_limit::AuthKey;
use crate::routes::accounts::{self, LoginRequest, Session, SignupRequest};
use crate::routes::bookings::{
    self, BookedUnitView, BookingView, CancelParams, HoldRequest, ListParams,
};
use crate::routes::events::{self, EventView};
use crate::routes::payments::{self, CheckoutRequestBody, MockOutcome};
use crate::routes::performances::{self, PerformanceView};
use crate::routes::{box_office, events::EventDetail};
use crate::web::api::{Refusal, Visit};
use crate::web::seat_map::SeatMapLayout;
use crate::web::session::{REFRESH_COOKIE, clear_session_cookies, cookie, session_cookies};
use crate::web::{
    Chrome, CursorQuery, Form, PageError, PageResult, WebState, format, id, page, safe_next,
};
use usher_core::{BookingStatus, PerformanceStatus, SeatingKind};

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/", get(events))
        .route("/events/{id}", get(event))
        .route("/performances/{id}", get(performance))
        .route("/performances/{id}/hold", post(hold))
        .route("/checkout/{id}", get(checkout))
        .route("/checkout/{id}/pay", post(pay))
        .route("/checkout/{id}/mock", post(mock_pay))
        .route("/checkout/{id}/wallet", post(wallet_pay))
        .route("/wallet", get(wallet))
        .route("/bookings", get(bookings))
        .route("/bookings/{id}/cancel", post(cancel))
        .route("/login", get(login_page).post(login))
        .route("/signup", get(signup_page).post(signup))
        .route("/logout", post(logout))
}

fn ok(web: &WebState, template: &impl Template) -> PageResult {
    Ok(page(template, StatusCode::OK, web.form_targets))
}

// ---------------------------------------------------------------- events

#[derive(Deserialize)]
struct ListQuery {
    q: Option<String>,
    cursor: Option<String>,
}

struct EventCard {
    id: Uuid,
    title: String,
    venue: String,
    summary: String,
    status: String,
}

impl From<EventView> for EventCard {
    fn from(event: EventView) -> Self {
        let mut summary: String = event.description.chars().take(180).collect();
        if event.description.chars().count() > 180 {
            summary.push('…');
        }
        Self {
            id: event.id,
            title: event.title,
            venue: event.venue,
            summary,
            status: event.status.to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    chrome: Chrome,
    q: String,
    events: Vec<EventCard>,
    next: Option<String>,
    problem: Option<String>,
}

async fn events(
    State(web): State<WebState>,
    visit: Visit,
    Query(query): Query<ListQuery>,
) -> PageResult {
    let q = query.q.unwrap_or_default().trim().to_owned();
    let params = events::ListParams {
        q: Some(q.clone()),
        limit: Some(24),
        cursor: query.cursor,
        mine: None,
    };
    let (events, next, problem) = match events::list(&visit.app, visit.caller, params).await {
        Ok(page) => (
            page.items.into_iter().map(EventCard::from).collect(),
            page.next_cursor.map(|c| {
                format!(
                    "/?q={}&cursor={}",
                    format::query_value(&q),
                    format::query_value(&c)
                )
            }),
            None,
        ),
        // A bad search is shown beside the box, not as an error page.
        Err(refused) => (
            vec![],
            None,
            Some(Refusal::from(refused).for_the_form(&visit)?.message()),
        ),
    };
    ok(
        &web,
        &EventsPage {
            chrome: Chrome::of(&visit),
            q,
            events,
            next,
            problem,
        },
    )
}

struct PerformanceLine {
    id: Uuid,
    when: String,
    kind: String,
    available: u64,
    capacity: u64,
}

#[derive(Template)]
#[template(path = "event.html")]
struct EventPageView {
    chrome: Chrome,
    event: EventView,
    details: Vec<(String, String)>,
    performances: Vec<PerformanceLine>,
    can_manage: bool,
}

async fn event(State(web): State<WebState>, visit: Visit, Path(raw): Path<String>) -> PageResult {
    let id = id(&visit, &raw)?;
    let detail: EventDetail = events::detail(&visit.app, visit.caller, id)
        .await
        .map_err(|r| PageError::refused(&visit, r))?;
    let details = match &detail.event.attributes {
        serde_json::Value::Object(map) => map
            .iter()
            .filter_map(|(key, value)| {
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
                    serde_json::Value::Array(items) => items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect::<Vec<_>>()
                        .join(", "),
                    _ => return None,
                };
                Some((key.replace('_', " "), text))
            })
            .collect(),
        _ => vec![],
    };
    let can_manage = visit
        .caller
        .is_some_and(|c| c.role == usher_core::Role::Admin || c.id == detail.event.organizer_id);
    let performances = detail
        .performances
        .iter()
        .map(|p| PerformanceLine {
            id: p.id,
            when: format::when(&p.starts_at),
            kind: kind_name(p.kind).into(),
            available: p.available,
            capacity: p.capacity,
        })
        .collect();
    ok(
        &web,
        &EventPageView {
            chrome: Chrome::of(&visit),
            event: detail.event,
            details,
            performances,
            can_manage,
        },
    )
}

fn kind_name(kind: SeatingKind) -> &'static str {
    if kind == SeatingKind::Reserved {
        "Reserved seating"
    } else {
        "General admission"
    }
}

// ---------------------------------------------------------------- performance

struct TicketTypeLine {
    id: Uuid,
    name: String,
    price: String,
    available: u64,
    /// Quantities one may pick: 1 ..= min(available, max per booking).
    choices: Vec<u64>,
}

struct PriceLine {
    name: String,
    price: String,
    available: u64,
}

#[derive(Template)]
#[template(path = "performance.html")]
struct PerformancePage {
    chrome: Chrome,
    event_id: Uuid,
    event_title: String,
    venue: String,
    performance: PerformanceView,
    when: String,
    on_sale: Option<String>,
    cancelled: bool,
    map: Option<SeatMapLayout>,
    prices: Vec<PriceLine>,
    ticket_types: Vec<TicketTypeLine>,
    best_choices: Vec<u32>,
    problem: Option<String>,
    /// Holds need an admission from the waiting room.
    waiting_room: bool,
    /// The visitor's admission, carried by the hold forms.
    admission: Option<String>,
    notice: Option<String>,
    /// Nothing free: the waiting list is offered (reserved seating).
    sold_out: bool,
}

#[derive(Deserialize)]
struct PerformanceQuery {
    admission: Option<String>,
    notice: Option<String>,
}

async fn performance(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    Query(query): Query<PerformanceQuery>,
) -> PageResult {
    let id = id(&visit, &raw)?;
    let mut view = performance_page(&visit, id, None).await?;
    view.admission = query.admission.filter(|a| !a.is_empty() && a.len() < 2_048);
    view.notice = query.notice.filter(|n| n.len() < 500);
    ok(&web, &view)
}

async fn performance_page(
    visit: &Visit,
    id: Uuid,
    problem: Option<String>,
) -> Result<PerformancePage, PageError> {
    let refused = |r| PageError::refused(visit, r);
    let (app, caller) = (&visit.app, visit.caller);
    let performance = performances::one(app, caller, id).await.map_err(refused)?;
    let event = events::visible(app, caller, performance.event_id)
        .await
        .map_err(refused)?;
    let map = if performance.kind == SeatingKind::Reserved {
        let seats = performances::seat_map(app, caller, id)
            .await
            .map_err(refused)?;
        Some(SeatMapLayout::new(&seats.units))
    } else {
        None
    };
    let max = u64::from(performance.max_per_booking);
    let ticket_types = performance
        .ticket_types
        .iter()
        .flatten()
        .map(|t| TicketTypeLine {
            id: t.id,
            name: t.name.clone(),
            price: format::price(&t.price),
            available: t.available,
            choices: (1..=t.available.min(max)).collect(),
        })
        .collect();
    let prices = performance
        .sections
        .iter()
        .flatten()
        .map(|s| PriceLine {
            name: s.name.clone(),
            price: format::price(&s.price),
            available: s.available,
        })
        .collect();
    let on_sale = performance
        .on_sale_at
        .filter(|at| *at > chrono::Utc::now())
        .map(|at| format::when(&at));
    Ok(PerformancePage {
        chrome: Chrome::of(visit),
        event_id: event.id,
        event_title: event.title,
        venue: event.venue,
        when: format::when(&performance.starts_at),
        on_sale,
        cancelled: performance.status == PerformanceStatus::Cancelled,
        best_choices: (1..=performance.max_per_booking.min(10)).collect(),
        waiting_room: performance.waiting_room.enabled,
        admission: None,
        notice: None,
        sold_out: performance.available == 0 && performance.status != PerformanceStatus::Cancelled,
        performance,
        map,
        prices,
        ticket_types,
        problem,
    })
}

/// Holds what the buyer picked, then on to checkout. If any of it was just taken, the
/// page comes back with a message and the map as it is now.
async fn hold(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    let id = id(&visit, &raw)?;
    if !visit.is_signed_in() {
        return Err(PageError::sign_in_then(
            &visit,
            &format!("/performances/{id}"),
        ));
    }
    let picked = form.text("unit_ids");
    let quantity = || Some(form.text("quantity").parse::<i64>().unwrap_or(0));
    let mut body = HoldRequest {
        performance_id: id.to_string(),
        unit_ids: None,
        ticket_type_id: None,
        quantity: None,
        best_available: None,
    };
    match form.get("mode") {
        Some("seats") => {
            let unit_ids: Vec<String> = picked
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if unit_ids.is_empty() {
                let view = performance_page(
                    &visit,
                    id,
                    Some("Pick at least one seat on the map first.".into()),
                )
                .await?;
                return Ok(page(
                    &view,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    web.form_targets,
                ));
            }
            body.unit_ids = Some(unit_ids);
        }
        Some("best") => {
            body.quantity = quantity();
            body.best_available = Some(true);
        }
        _ => {
            body.ticket_type_id = Some(form.text("ticket_type_id"));
            body.quantity = quantity();
        }
    }
    let admission = form.get("admission").filter(|a| !a.is_empty());
    let caller = visit.user().map_err(|r| PageError::refused(&visit, r))?;
    match bookings::hold(&visit.app, caller, admission, body).await {
        Ok(booking) => Ok(Redirect::to(&format!("/checkout/{}", booking.id)).into_response()),
        Err(refused) => {
            let refusal = Refusal::from(refused).for_the_form(&visit)?;
            let status = refusal.status;
            let mut view = performance_page(&visit, id, None).await?;
            view.problem = Some(hold_refusal_message(&refusal, view.map.as_ref()));
            view.admission = admission.map(str::to_owned);
            Ok(page(&view, status, web.form_targets))
        }
    }
}

fn hold_refusal_message(refusal: &Refusal, map: Option<&SeatMapLayout>) -> String {
    let taken = refusal
        .problem
        .unavailable_unit_ids
        .as_deref()
        .unwrap_or_default();
    if refusal.status == StatusCode::CONFLICT && !taken.is_empty() {
        let names: Vec<String> = taken
            .iter()
            .map(|unit| {
                let id = unit.to_string();
                map.and_then(|m| m.seats.iter().find(|s| s.id == id))
                    .map_or_else(|| "a seat".to_owned(), |s| s.short.clone())
            })
            .collect();
        let (verb, it) = if names.len() == 1 {
            ("was", "it")
        } else {
            ("were", "them")
        };
        return format!(
            "Sorry — {} {verb} just taken by someone else, so nothing was held. \
             The map shows what is free now; pick again without {it}.",
            names.join(", ")
        );
    }
    refusal.message()
}

// ---------------------------------------------------------------- checkout

#[derive(Deserialize)]
struct CheckoutQuery {
    payment: Option<Uuid>,
    declined: Option<u8>,
}

struct UnitLine {
    name: String,
    price: String,
    code: Option<String>,
    /// The code's QR image.
    qr: Option<String>,
}

#[derive(Template)]
#[template(path = "checkout.html")]
struct CheckoutPage {
    chrome: Chrome,
    booking: BookingView,
    event_title: String,
    when: String,
    units: Vec<UnitLine>,
    total: String,
    expires_at: String,
    /// Shown with the mock provider: the "payment page" it stands for.
    mock_payment: Option<Uuid>,
    /// The buyer's store credit in the booking's currency, when they have any.
    wallet: Option<WalletOffer>,
    problem: Option<String>,
}

/// What the wallet can do for this checkout.
struct WalletOffer {
    balance: String,
    covers: bool,
}

async fn checkout(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    Query(query): Query<CheckoutQuery>,
) -> PageResult {
    let id = id(&visit, &raw)?;
    if !visit.is_signed_in() {
        return Err(PageError::sign_in(&visit));
    }
    let problem = query
        .declined
        .map(|_| "The payment was declined. Your seats are still held: try again before the time runs out.".to_owned());
    let view = checkout_page(&visit, id, query.payment, problem).await?;
    ok(&web, &view)
}

async fn checkout_page(
    visit: &Visit,
    id: Uuid,
    mock_payment: Option<Uuid>,
    problem: Option<String>,
) -> Result<CheckoutPage, PageError> {
    let refused = |r| PageError::refused(visit, r);
    let caller = visit.user().map_err(refused)?;
    let booking = bookings::one(&visit.app, caller, id)
        .await
        .map_err(refused)?;
    let mut context = Context::default();
    let (title, when, names) = context.describe(visit, booking.performance_id).await;
    let wallet = if booking.status == BookingStatus::Held {
        let wallet = box_office::wallet(&visit.app, caller, ListParams::after(1, None))
            .await
            .map_err(refused)?;
        wallet
            .balances
            .iter()
            .find(|b| b.currency == booking.total.currency && b.amount > 0)
            .map(|b| WalletOffer {
                balance: format::price(b),
                covers: b.amount >= booking.total.amount,
            })
    } else {
        None
    };
    Ok(CheckoutPage {
        chrome: Chrome::of(visit),
        event_title: title,
        when,
        units: unit_lines(&booking.units, &names),
        total: format::price(&booking.total),
        expires_at: booking.expires_at.to_rfc3339(),
        mock_payment: mock_payment.filter(|_| booking.status == BookingStatus::Held),
        wallet,
        booking,
        problem,
    })
}

/// The checkout page again with what the API said, for a refusal the page answers.
async fn checkout_again(
    web: &WebState,
    visit: &Visit,
    id: Uuid,
    refusal: impl Into<Refusal>,
) -> PageResult {
    let refusal = refusal.into().for_the_form(visit)?;
    let view = checkout_page(visit, id, None, Some(refusal.message())).await?;
    Ok(page(&view, refusal.status, web.form_targets))
}

/// Starts the payment: the mock provider's stand-in page, or the provider's own.
async fn pay(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    _form: Form,
) -> PageResult {
    let id = id(&visit, &raw)?;
    let caller = visit.user().map_err(|r| PageError::refused(&visit, r))?;
    let body = Ok(CheckoutRequestBody::default());
    match payments::open_checkout(&visit.app, caller, id, body).await {
        Ok(checkout) if checkout.provider == usher_core::lifecycle::Provider::Mock => Ok(
            Redirect::to(&format!("/checkout/{id}?payment={}", checkout.payment_id))
                .into_response(),
        ),
        Ok(checkout) => Ok(Redirect::to(&checkout.checkout_url).into_response()),
        Err(refusal) => checkout_again(&web, &visit, id, refusal).await,
    }
}

/// Pays at once from the buyer's store credit.
async fn wallet_pay(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    _form: Form,
) -> PageResult {
    let id = id(&visit, &raw)?;
    let caller = visit.user().map_err(|r| PageError::refused(&visit, r))?;
    let body = Ok(CheckoutRequestBody {
        method: Some("wallet".into()),
    });
    match payments::open_checkout(&visit.app, caller, id, body).await {
        Ok(_) => Ok(Redirect::to(&format!("/bookings?confirmed={id}")).into_response()),
        Err(refusal) => checkout_again(&web, &visit, id, refusal).await,
    }
}

/// The mock provider's "pay" and "decline" buttons.
async fn mock_pay(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    let id = id(&visit, &raw)?;
    let payment =
        Uuid::try_parse(&form.text("payment_id")).map_err(|_| PageError::not_found(&visit))?;
    let outcome = if form.get("outcome") == Some("failed") {
        "failed"
    } else {
        "succeeded"
    };
    let caller = visit.user().map_err(|r| PageError::refused(&visit, r))?;
    let body = Ok(MockOutcome {
        outcome: outcome.into(),
    });
    match payments::complete_mock(&visit.app, caller, payment, body).await {
        Ok(booking) if booking.status == BookingStatus::Confirmed => {
            Ok(Redirect::to(&format!("/bookings?confirmed={id}")).into_response())
        }
        Ok(_) => Ok(Redirect::to(&format!("/checkout/{id}?declined=1")).into_response()),
        Err(refusal) => checkout_again(&web, &visit, id, refusal).await,
    }
}

// ---------------------------------------------------------------- my bookings

struct BookingCard {
    id: Uuid,
    status: String,
    event_title: String,
    when: String,
    performance_id: Uuid,
    units: Vec<UnitLine>,
    total: String,
    highlight: bool,
}

#[derive(Template)]
#[template(path = "bookings.html")]
struct BookingsPage {
    chrome: Chrome,
    bookings: Vec<BookingCard>,
    next: Option<String>,
    notice: Option<String>,
    problem: Option<String>,
}

#[derive(Deserialize)]
struct BookingsQuery {
    confirmed: Option<Uuid>,
    cancelled: Option<Uuid>,
    cursor: Option<String>,
}

async fn bookings(
    State(web): State<WebState>,
    visit: Visit,
    Query(query): Query<BookingsQuery>,
) -> PageResult {
    let view = bookings_page(&visit, query, None).await?;
    ok(&web, &view)
}

async fn bookings_page(
    visit: &Visit,
    query: BookingsQuery,
    problem: Option<String>,
) -> Result<BookingsPage, PageError> {
    let Some(caller) = visit.caller else {
        return Err(PageError::sign_in(visit));
    };
    let list = bookings::list(
        &visit.app,
        caller,
        ListParams::after(20, query.cursor.clone()),
    )
    .await
    .map_err(|r| PageError::refused(visit, r))?;
    let mut context = Context::default();
    let mut cards = Vec::with_capacity(list.items.len());
    for booking in list.items {
        let (title, when, names) = context.describe(visit, booking.performance_id).await;
        cards.push(BookingCard {
            id: booking.id,
            highlight: Some(booking.id) == query.confirmed,
            status: booking.status.to_string(),
            event_title: title,
            when,
            performance_id: booking.performance_id,
            units: unit_lines(&booking.units, &names),
            total: format::price(&booking.total),
        });
    }
    let notice = match (query.confirmed, query.cancelled) {
        (Some(_), _) => Some(
            "Paid — your booking is confirmed. Your tickets are below, and on their way by email."
                .to_owned(),
        ),
        (_, Some(_)) => Some("Done. The seats are released.".to_owned()),
        _ => None,
    };
    Ok(BookingsPage {
        chrome: Chrome::of(visit),
        bookings: cards,
        next: list
            .next_cursor
            .map(|c| format!("/bookings?cursor={}", format::query_value(&c))),
        notice,
        problem,
    })
}

/// A held booking released, or a confirmed one refunded.
async fn cancel(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    let id = id(&visit, &raw)?;
    let params = CancelParams {
        refund_to: (form.get("refund_to") == Some("wallet")).then(|| "wallet".to_owned()),
    };
    let caller = visit.user().map_err(|r| PageError::refused(&visit, r))?;
    match bookings::cancel(&visit.app, caller, &visit.request, id, Ok(params)).await {
        Ok(_) => Ok(Redirect::to(&format!("/bookings?cancelled={id}")).into_response()),
        Err(refused) => {
            let refusal = Refusal::from(refused).for_the_form(&visit)?;
            let status = refusal.status;
            let view = bookings_page(
                &visit,
                BookingsQuery {
                    confirmed: None,
                    cancelled: None,
                    cursor: None,
                },
                Some(refusal.message()),
            )
            .await?;
            Ok(page(&view, status, web.form_targets))
        }
    }
}

/// Event titles, dates and ticket-type names of performances (of bookings, of waiting-list
/// entries), each performance looked up once.
#[derive(Default)]
pub(super) struct Context {
    performances: HashMap<Uuid, (String, String, HashMap<Uuid, String>)>,
}

impl Context {
    pub(super) async fn describe(
        &mut self,
        visit: &Visit,
        performance_id: Uuid,
    ) -> (String, String, HashMap<Uuid, String>) {
        if let Some(known) = self.performances.get(&performance_id) {
            return known.clone();
        }
        let (app, caller) = (&visit.app, visit.caller);
        let found = match performances::one(app, caller, performance_id).await {
            Ok(performance) => {
                let title = events::visible(app, caller, performance.event_id)
                    .await
                    .map(|e| e.title)
                    .unwrap_or_else(|_| "An event".to_owned());
                let names = performance
                    .ticket_types
                    .iter()
                    .flatten()
                    .map(|t| (t.id, t.name.clone()))
                    .collect();
                (title, format::when(&performance.starts_at), names)
            }
            // A performance one can no longer see (its event was withdrawn).
            Err(_) => ("An event".to_owned(), String::new(), HashMap::new()),
        };
        self.performances.insert(performance_id, found.clone());
        found
    }
}

fn unit_lines(units: &[BookedUnitView], ticket_types: &HashMap<Uuid, String>) -> Vec<UnitLine> {
    units
        .iter()
        .map(|unit| UnitLine {
            name: match (&unit.section, &unit.row, &unit.label) {
                (Some(section), Some(row), Some(label)) => {
                    format!("{section}, row {row}, seat {label}")
                }
                _ => unit
                    .ticket_type_id
                    .and_then(|t| ticket_types.get(&t).cloned())
                    .unwrap_or_else(|| "Admission".to_owned()),
            },
            price: format::price(&unit.price),
            code: unit.ticket_code.clone(),
            qr: unit.qr_svg_url.clone(),
        })
        .collect()
}

// ---------------------------------------------------------------- the wallet

struct LedgerLine {
    at: String,
    kind: String,
    reason: String,
    amount: String,
    credit: bool,
    balance_after: String,
    booking_id: Option<Uuid>,
}

#[derive(Template)]
#[template(path = "wallet.html")]
struct WalletPage {
    chrome: Chrome,
    balances: Vec<String>,
    entries: Vec<LedgerLine>,
    earlier: bool,
    next: Option<String>,
}

/// The buyer's store credit: balances and the ledger, newest first.
async fn wallet(
    State(web): State<WebState>,
    visit: Visit,
    Query(query): Query<CursorQuery>,
) -> PageResult {
    let Some(caller) = visit.caller else {
        return Err(PageError::sign_in(&visit));
    };
    let params = ListParams::after(25, query.cursor.clone());
    let wallet = box_office::wallet(&visit.app, caller, params)
        .await
        .map_err(|r| PageError::refused(&visit, r))?;
    let view = WalletPage {
        chrome: Chrome::of(&visit),
        balances: wallet.balances.iter().map(format::price).collect(),
        entries: wallet
            .entries
            .into_iter()
            .map(|e| LedgerLine {
                at: e.at.format("%Y-%m-%d %H:%M UTC").to_string(),
                kind: e.kind.to_string(),
                reason: e.reason,
                credit: e.amount.amount > 0,
                amount: format::price(&e.amount),
                balance_after: format::price(&e.balance_after),
                booking_id: e.booking_id,
            })
            .collect(),
        earlier: query.cursor.is_some(),
        next: wallet
            .next_cursor
            .map(|c| format!("/wallet?cursor={}", format::query_value(&c))),
    };
    ok(&web, &view)
}

// ---------------------------------------------------------------- accounts

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    next: String,
    email: String,
    problem: Option<String>,
}

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    chrome: Chrome,
    next: String,
    email: String,
    name: String,
    problem: Option<String>,
    errors: Vec<FieldError>,
}

impl SignupPage {
    fn error_for(&self, field: &str) -> Option<String> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| format::sentence(&e.message))
    }
}

/// Signed in: the session's tokens go into cookies, and on to `next`.
fn signed_in(web: &WebState, tokens: &Session, next: &str) -> Response {
    let mut response = Redirect::to(next).into_response();
    for value in session_cookies(
        &tokens.access_token,
        &tokens.refresh_token,
        web.secure_cookies,
    ) {
        response
            .headers_mut()
            .append(axum::http::header::SET_COOKIE, value);
    }
    response
}

async fn login_page(
    State(web): State<WebState>,
    visit: Visit,
    Query(query): Query<NextQuery>,
) -> PageResult {
    ok(
        &web,
        &LoginPage {
            chrome: Chrome::of(&visit),
            next: safe_next(query.next.as_deref()),
            email: String::new(),
            problem: None,
        },
    )
}

async fn login(State(web): State<WebState>, visit: Visit, form: Form) -> PageResult {
    let next = safe_next(form.get("next"));
    let email = form.text("email");
    let body = LoginRequest {
        email: email.clone(),
        password: form.get("password").unwrap_or("").to_owned(),
    };
    let signed = match visit.limit_auth(AuthKey::Account(&email)).await {
        Ok(()) => accounts::sign_in(&visit.app, body).await,
        Err(limited) => Err(limited),
    };
    match signed.map_err(Refusal::from) {
        Ok(tokens) => Ok(signed_in(&web, &tokens, &next)),
        Err(refusal)
            if refusal.status.is_client_error()
                || refusal.status == StatusCode::SERVICE_UNAVAILABLE =>
        {
            let status = refusal.status;
            let view = LoginPage {
                chrome: Chrome::of(&visit),
                next,
                email,
                problem: Some(refusal.message()),
            };
            Ok(page(&view, status, web.form_targets))
        }
        // Wrong credentials (401) are the form's to say; anything else is an error page.
        Err(refusal) => Err(PageError::refused(&visit, refusal)),
    }
}

async fn signup_page(
    State(web): State<WebState>,
    visit: Visit,
    Query(query): Query<NextQuery>,
) -> PageResult {
    ok(
        &web,
        &SignupPage {
            chrome: Chrome::of(&visit),
            next: safe_next(query.next.as_deref()),
            email: String::new(),
            name: String::new(),
            problem: None,
            errors: vec![],
        },
    )
}

async fn signup(State(web): State<WebState>, visit: Visit, form: Form) -> PageResult {
    let next = safe_next(form.get("next"));
    let (email, name) = (form.text("email"), form.text("name"));
    let body = SignupRequest {
        email: email.clone(),
        name: name.clone(),
        password: form.get("password").unwrap_or("").to_owned(),
    };
    let created = match visit.limit_auth(AuthKey::Account(&email)).await {
        Ok(()) => accounts::create_account(&visit.app, body).await,
        Err(limited) => Err(limited),
    };
    match created.map_err(Refusal::from) {
        Ok(tokens) => Ok(signed_in(&web, &tokens, &next)),
        Err(refusal)
            if refusal.status.is_client_error()
                || refusal.status == StatusCode::SERVICE_UNAVAILABLE =>
        {
            let status = refusal.status;
            let view = SignupPage {
                chrome: Chrome::of(&visit),
                next,
                email,
                name,
                problem: refusal.problem.errors.is_empty().then(|| refusal.message()),
                errors: refusal.problem.errors,
            };
            Ok(page(&view, status, web.form_targets))
        }
        // Wrong credentials (401) are the form's to say; anything else is an error page.
        Err(refusal) => Err(PageError::refused(&visit, refusal)),
    }
}

async fn logout(
    State(web): State<WebState>,
    visit: Visit,
    headers: HeaderMap,
    _form: Form,
) -> Response {
    if let Some(refresh) = cookie(&headers, REFRESH_COOKIE)
        && visit.is_signed_in()
    {
        let ended = match visit.limit_auth(AuthKey::Session(refresh)).await {
            Ok(()) => accounts::sign_out(&visit.app, refresh).await,
            Err(limited) => Err(limited),
        };
        if let Err(refused) = ended {
            tracing::warn!(status = %refused.status(), "logout could not revoke the session");
        }
    }
    let mut response = Redirect::to("/").into_response();
    for value in clear_session_cookies(web.secure_cookies) {
        response
            .headers_mut()
            .append(axum::http::header::SET_COOKIE, value);
    }
    response
}
