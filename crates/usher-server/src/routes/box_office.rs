//! The box office: tickets and their QR codes, check-in at the door, the wallet (store
//! credit), and the audit log.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use usher_core::text::Lines;
use usher_core::{BookingStatus, Currency, Cursor, Money, Role};
use usher_store::{AuditEntry, AuditScope, CheckIn, TicketRecord, WalletCredit, WalletEntry};

use crate::extract::{Admin, Caller, Fields, Json, Organizer, RequestId, path_id, query};
use crate::problem::{ApiError, Problem};
use crate::routes::bookings::{ListParams, readable_booking};
use crate::routes::performances::{MoneyView, managed_event};
use crate::state::AppState;
use crate::tickets::{self, Presented};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(booking_tickets))
        .routes(routes!(ticket_qr))
        .routes(routes!(check_in))
        .routes(routes!(my_wallet))
        .routes(routes!(credit_wallet))
        .routes(routes!(admin_audit))
        .routes(routes!(event_audit))
}

// --- tickets ------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TicketView {
    pub unit_id: Uuid,
    /// Shown (or scanned) at the door.
    #[schema(example = "ABCD-EFGH-JKLM-NPQR")]
    pub code: String,
    /// The code as a QR image (SVG).
    pub qr_svg_url: String,
    pub section: Option<String>,
    pub row: Option<String>,
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_type_id: Option<Uuid>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TicketList {
    pub items: Vec<TicketView>,
}

/// A confirmed booking's tickets: one code per unit, with its QR image.
#[utoipa::path(get, path = "/v1/bookings/{id}/tickets", tag = "tickets",
    params(("id" = Uuid, Path, description = "Booking id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tickets", body = TicketList),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking, or not the caller's to see", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The booking is not confirmed (`/problems/booking-not-confirmed`)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn booking_tickets(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<TicketList>, ApiError> {
    let booking = readable_booking(&state, caller, path_id(&id)?).await?;
    let status = booking.status_at(state.clock().now());
    if status != BookingStatus::Confirmed {
        return Err(ApiError::Conflict {
            kind: "booking-not-confirmed",
            detail: format!("this booking is {status}; only a confirmed booking has tickets"),
        });
    }
    let items = booking
        .units
        .into_iter()
        .filter_map(|unit| {
            let serial = unit.ticket?;
            let code = tickets::code(
                state.ticket_secret(),
                serial,
                booking.id.uuid(),
                unit.unit_id.uuid(),
            );
            Some(TicketView {
                unit_id: unit.unit_id.uuid(),
                qr_svg_url: tickets::qr_url(&code),
                code,
                section: unit.section,
                row: unit.row,
                label: unit.label,
                ticket_type_id: unit.ticket_type_id.map(Uuid::from),
            })
        })
        .collect();
    Ok(axum::Json(TicketList { items }))
}

/// The ticket a presented code names, if the code is genuine; `None` for a malformed,
/// unknown or forged code.
async fn genuine_ticket(
    state: &AppState,
    raw: &str,
) -> Result<Option<(Presented, TicketRecord)>, ApiError> {
    let Some(presented) = Presented::parse(raw) else {
        return Ok(None);
    };
    let Some(ticket) = state.store().ticket(presented.serial).await? else {
        return Ok(None);
    };
    if !presented.signs(
        state.ticket_secret(),
        ticket.booking_id.uuid(),
        ticket.unit_id.uuid(),
    ) {
        return Ok(None);
    }
    Ok(Some((presented, ticket)))
}

/// The QR image of a ticket code (anyone holding the code may render it; it says
/// nothing the code does not).
#[utoipa::path(get, path = "/v1/tickets/{code}/qr.svg", tag = "tickets",
    params(("code" = String, Path, description = "Ticket code")),
    responses(
        (status = 200, description = "The QR code", content_type = "image/svg+xml", body = String),
        (status = 404, description = "Not a ticket code of this server", body = Problem, content_type = "application/problem+json"),
    ))]
async fn ticket_qr(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let (_, ticket) = genuine_ticket(&state, &code)
        .await?
        .ok_or(ApiError::NotFound)?;
    let canonical = tickets::code(
        state.ticket_secret(),
        ticket.serial,
        ticket.booking_id.uuid(),
        ticket.unit_id.uuid(),
    );
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "private, max-age=86400"),
        ],
        tickets::qr_svg(&canonical),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInRequest {
    /// The ticket code, as printed or scanned (case, dashes and spaces do not matter).
    #[schema(example = "ABCD-EFGH-JKLM-NPQR")]
    pub code: String,
    /// The performance this door admits to. A ticket for another performance is then
    /// refused (409 `/problems/wrong-performance`) and stays unused, so that a scan at
    /// Friday's door cannot burn Saturday's ticket.
    #[serde(default)]
    pub performance_id: Option<Uuid>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckInView {
    pub booking_id: Uuid,
    pub unit_id: Uuid,
    pub performance_id: Uuid,
    pub checked_in_at: DateTime<Utc>,
    /// Where the ticket sits: `Stalls, row A, seat 5`, or the ticket type's name.
    pub place: String,
}

/// Checks a ticket in at the door (the event's organizer or an admin). The first scan
/// lets the ticket in; the same code again is 409 `/problems/already-checked-in` with
/// the first `checked_in_at`; a refunded booking's ticket is 409 `/problems/ticket-void`.
/// A code that is not genuine, or belongs to another organizer's event, is 404. With
/// `performance_id` (the door's performance), a ticket for another performance is 409
/// `/problems/wrong-performance` and is not checked in. Of many scanners racing on one
/// code, exactly one is let in.
#[utoipa::path(post, path = "/v1/checkins", tag = "tickets",
    request_body = CheckInRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Let in", body = CheckInView),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an organizer or admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown or forged code, or another organizer's event", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already checked in (`/problems/already-checked-in`, with `checked_in_at`), void (`/problems/ticket-void`), or for another performance than the door's (`/problems/wrong-performance`)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn check_in(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    // Judged after the caller: no verdict on the body for those without the right.
    body: Result<Json<CheckInRequest>, ApiError>,
) -> Result<axum::Json<CheckInView>, ApiError> {
    let caller = caller.require_organizer()?;
    let Json(body) = body?;
    check_in_ticket(&state, caller, &request, body)
        .await
        .map(axum::Json)
}

/// Lets a ticket in at the door of an event `caller` keeps (see [`check_in`]).
pub async fn check_in_ticket(
    state: &AppState,
    caller: Organizer,
    request: &RequestId,
    body: CheckInRequest,
) -> Result<CheckInView, ApiError> {
    let (presented, ticket) = genuine_ticket(state, &body.code)
        .await?
        .ok_or(ApiError::NotFound)?;
    if caller.role != Role::Admin && ticket.organizer_id != caller.id.into() {
        return Err(ApiError::NotFound);
    }
    if let Some(door) = body.performance_id
        && door != ticket.performance_id.uuid()
    {
        metrics::counter!("usher_checkins_total", "outcome" => "wrong_performance").increment(1);
        let when = match state.store().performance(ticket.performance_id).await? {
            Some(p) => format!(" (it starts {})", p.starts_at.format("%Y-%m-%d %H:%M UTC")),
            None => String::new(),
        };
        return Err(ApiError::Conflict {
            kind: "wrong-performance",
            detail: format!("this ticket is for another performance{when}; it was not checked in"),
        });
    }
    let now = state.clock().now();
    let audit = caller.audit(request);
    let outcome = usher_app::box_office::check_in(
        state.store(),
        presented.serial,
        caller.id.into(),
        now,
        &audit,
    )
    .await?;
    let at = match outcome {
        CheckIn::Admitted { at } => at,
        CheckIn::Already { at } => {
            metrics::counter!("usher_checkins_total", "outcome" => "repeat").increment(1);
            return Err(ApiError::AlreadyCheckedIn(at));
        }
        CheckIn::Void => {
            metrics::counter!("usher_checkins_total", "outcome" => "void").increment(1);
            return Err(ApiError::Conflict {
                kind: "ticket-void",
                detail: "this ticket's booking was refunded; it does not admit".into(),
            });
        }
        CheckIn::Unknown => return Err(ApiError::NotFound),
    };
    metrics::counter!("usher_checkins_total", "outcome" => "admitted").increment(1);
    let place = match state.store().booking(ticket.booking_id).await? {
        Some(booking) => booking
            .units
            .iter()
            .find(|u| u.unit_id == ticket.unit_id)
            .map(tickets::place)
            .unwrap_or_default(),
        None => String::new(),
    };
    tracing::info!(booking_id = %ticket.booking_id, unit_id = %ticket.unit_id, "ticket checked in");
    Ok(CheckInView {
        booking_id: ticket.booking_id.uuid(),
        unit_id: ticket.unit_id.uuid(),
        performance_id: ticket.performance_id.uuid(),
        checked_in_at: at,
        place,
    })
}

// --- the wallet -----------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WalletEntryView {
    pub id: Uuid,
    /// Signed: a payment is negative.
    pub amount: MoneyView,
    /// The balance in this currency right after the entry.
    pub balance_after: MoneyView,
    /// `credit`, `payment` or `refund`.
    #[schema(value_type = String, example = "credit")]
    pub kind: usher_store::WalletEntryKind,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub booking_id: Option<Uuid>,
    pub at: DateTime<Utc>,
}

impl From<WalletEntry> for WalletEntryView {
    fn from(entry: WalletEntry) -> Self {
        Self {
            id: entry.id,
            amount: entry.amount.into(),
            balance_after: Money::new(entry.balance_after, entry.amount.currency).into(),
            kind: entry.kind,
            reason: entry.reason,
            booking_id: entry.booking_id.map(Uuid::from),
            at: entry.at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WalletView {
    /// One per currency the wallet has held.
    pub balances: Vec<MoneyView>,
    /// The ledger, newest first (a page of it).
    pub entries: Vec<WalletEntryView>,
    pub next_cursor: Option<String>,
}

/// The caller's store credit: balances and the ledger (newest first, paginated).
#[utoipa::path(get, path = "/v1/wallet", tag = "wallet",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Balances and entries", body = WalletView),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
async fn my_wallet(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<WalletView>, ApiError> {
    wallet(&state, caller, query(params)?).await.map(axum::Json)
}

/// `caller`'s balances and a page of their ledger, newest first.
pub async fn wallet(
    state: &AppState,
    caller: Caller,
    params: ListParams,
) -> Result<WalletView, ApiError> {
    let (limit, after) = params.page()?;
    let balances = state.store().wallet_balances(caller.id.into()).await?;
    let page = state
        .store()
        .wallet_entries(caller.id.into(), limit, after)
        .await?;
    Ok(WalletView {
        balances: balances.into_iter().map(MoneyView::from).collect(),
        entries: page.items.into_iter().map(WalletEntryView::from).collect(),
        next_cursor: page.next.map(Cursor::encode),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditRequest {
    pub amount: MoneyRequest,
    /// Why, for the buyer and the audit log (1–200 characters).
    #[schema(example = "Goodwill: show started late")]
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyRequest {
    /// Minor units, positive.
    #[schema(example = 2500)]
    pub amount: i64,
    #[schema(example = "EUR")]
    pub currency: String,
}

/// The most one credit may add (ten thousand major units).
const MAX_CREDIT: i64 = 1_000_000;
const REASON_MAX_CHARS: usize = 200;

/// Gives a user store credit (admins). Written with its audit row in one transaction.
#[utoipa::path(post, path = "/v1/admin/wallets/{user_id}/credit", tag = "wallet",
    params(("user_id" = Uuid, Path, description = "User id")),
    request_body = CreditRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Credited", body = WalletEntryView),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad amount, currency or reason", body = Problem, content_type = "application/problem+json"),
    ))]
async fn credit_wallet(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(user_id): Path<String>,
    // Judged after the caller: no verdict on the body for those without the right.
    body: Result<Json<CreditRequest>, ApiError>,
) -> Result<impl IntoResponse, ApiError> {
    let caller = caller.require_admin()?;
    let user_id = path_id(&user_id)?;
    let entry = credit(
        &state,
        caller,
        &request,
        user_id,
        body.map(|Json(body)| body),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(entry)))
}

/// An admin gives a user store credit; the body is judged once the user is known.
pub async fn credit(
    state: &AppState,
    caller: Admin,
    request: &RequestId,
    user_id: Uuid,
    body: Result<CreditRequest, ApiError>,
) -> Result<WalletEntryView, ApiError> {
    let user = state
        .store()
        .user(user_id.into())
        .await?
        .ok_or(ApiError::NotFound)?;
    let body = body?;
    let mut fields = Fields::new();
    if !(1..=MAX_CREDIT).contains(&body.amount.amount) {
        fields.reject(
            "amount.amount",
            format!("a credit is between 1 and {MAX_CREDIT} minor units"),
        );
    }
    let currency = fields.take("amount.currency", Currency::parse(&body.amount.currency));
    let reason = fields.take(
        "reason",
        usher_core::text::required(&body.reason, REASON_MAX_CHARS, Lines::One, "a reason"),
    );
    fields.finish()?;
    let (Some(currency), Some(reason)) = (currency, reason) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    let entry = state
        .store()
        .wallet_credit(WalletCredit {
            user_id: user.id,
            amount: Money::new(body.amount.amount, currency),
            reason,
            audit: caller.audit(request),
            now: state.clock().now(),
        })
        .await?;
    tracing::info!(user_id = %user.id, amount = entry.amount.amount, currency = %entry.amount.currency, "wallet credited");
    Ok(entry.into())
}

// --- the audit log --------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditTarget {
    /// `event`, `performance`, `booking`, `user` or `job`.
    #[schema(example = "booking")]
    pub kind: String,
    pub id: Uuid,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// Who did it; `null` for the system (e.g. the refunds of a cancelled sale).
    pub actor_id: Option<Uuid>,
    /// The actor's name as it reads now; `null` for the system.
    pub actor_name: Option<String>,
    /// e.g. `event.cancelled`, `booking.refunded`, `ticket.checked_in`, `wallet.credited`.
    #[schema(example = "booking.refunded")]
    pub action: String,
    pub target: AuditTarget,
    pub event_id: Option<Uuid>,
    /// The `x-request-id` of the request that made the change.
    pub request_id: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(entry: AuditEntry) -> Self {
        Self {
            id: entry.id,
            at: entry.at,
            actor_id: entry.actor_id.map(Uuid::from),
            actor_name: None,
            action: entry.action.to_string(),
            target: AuditTarget {
                kind: entry.target.kind().to_owned(),
                id: entry.target.id(),
            },
            event_id: entry.event_id.map(Uuid::from),
            request_id: entry.request_id,
            detail: entry.detail,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntryView>,
    pub next_cursor: Option<String>,
}

async fn audit_page(
    state: &AppState,
    scope: AuditScope,
    params: ListParams,
) -> Result<AuditPage, ApiError> {
    let (limit, after) = params.page()?;
    let page = state.store().audit_log(scope, limit, after).await?;
    // A page names a handful of people (the organizer, an admin or two): each is looked
    // up once.
    let mut names: HashMap<Uuid, Option<String>> = HashMap::new();
    let mut items = Vec::with_capacity(page.items.len());
    for entry in page.items {
        let actor = entry.actor_id;
        let mut view = AuditEntryView::from(entry);
        if let Some(id) = actor {
            view.actor_name = match names.entry(id.uuid()) {
                Entry::Occupied(known) => known.get().clone(),
                Entry::Vacant(unknown) => {
                    let user = state.store().user(id).await?;
                    unknown
                        .insert(user.map(|u| u.name.as_str().to_owned()))
                        .clone()
                }
            };
        }
        items.push(view);
    }
    Ok(AuditPage {
        items,
        next_cursor: page.next.map(Cursor::encode),
    })
}

/// Every audited change, newest first (admins).
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of the audit log", body = AuditPage),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
async fn admin_audit(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    let caller = caller.require_admin()?;
    audit_of_all(&state, caller, query(params)?)
        .await
        .map(axum::Json)
}

/// A page of every audited change, for an admin.
pub async fn audit_of_all(
    state: &AppState,
    _admin: Admin,
    params: ListParams,
) -> Result<AuditPage, ApiError> {
    audit_page(state, AuditScope::All, params).await
}

/// One event's audited changes, newest first: the event, its performances, refunds,
/// cancellations and check-ins (its organizer, or an admin).
#[utoipa::path(get, path = "/v1/events/{id}/audit", tag = "events",
    params(("id" = Uuid, Path, description = "Event id"), ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of the event's audit log", body = AuditPage),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an organizer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event among the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
async fn event_audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    let caller = caller.require_organizer()?;
    let id = path_id(&id)?;
    audit_of_event(&state, caller, id, query(params))
        .await
        .map(axum::Json)
}

/// A page of an event's audited changes, for whoever manages it; the parameters are
/// judged once that is known.
pub async fn audit_of_event(
    state: &AppState,
    caller: Organizer,
    event_id: Uuid,
    params: Result<ListParams, ApiError>,
) -> Result<AuditPage, ApiError> {
    let event = managed_event(state, caller, event_id).await?;
    audit_page(state, AuditScope::Event(event.id.uuid()), params?).await
}
