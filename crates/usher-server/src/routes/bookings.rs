//! Bookings: holding units (explicit seats, a general-admission quantity, or best
//! available), reading them, and cancelling a hold. Every change goes through the
//! store's single command entry point.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use usher_core::lifecycle::{Actor, RefundTo};
use usher_core::{
    Booking, BookingId, BookingStatus, Cursor, Event, EventStatus, PageLimit, Performance,
    PerformanceStatus, Role, SeatingKind,
};
use usher_store::{CommandOutcome, HoldCommand, InventoryCommand, Selection};

use crate::extract::{Caller, Fields, Json, RequestId, path_id, query, unknown_units};
use crate::problem::{ApiError, Problem};
use crate::routes::performances::{MoneyView, hot_performance};
use crate::state::AppState;

/// The header that carries an admission from a performance's waiting room.
pub const ADMISSION_HEADER: &str = "usher-admission";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_booking, list_bookings))
        .routes(routes!(get_booking, cancel_booking))
}

/// What to hold: `unit_ids` (reserved seats), or `ticket_type_id` with `quantity`
/// (general admission), or `quantity` with `best_available: true` (reserved; the server
/// picks adjacent seats when it can).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    pub performance_id: String,
    pub unit_ids: Option<Vec<String>>,
    pub ticket_type_id: Option<String>,
    pub quantity: Option<i64>,
    pub best_available: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BookedUnitView {
    pub id: Uuid,
    pub section: Option<String>,
    pub row: Option<String>,
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_type_id: Option<Uuid>,
    pub price: MoneyView,
    /// Shown at the door; present while the booking is confirmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_code: Option<String>,
    /// The ticket code as a QR image (SVG), with the code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr_svg_url: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BookingView {
    pub id: Uuid,
    /// `held`, `confirmed`, `expired`, `cancelled` or `refunded`. A hold past
    /// `expires_at` reads `expired`.
    #[schema(value_type = String, example = "held")]
    pub status: BookingStatus,
    pub performance_id: Uuid,
    pub units: Vec<BookedUnitView>,
    pub total: MoneyView,
    /// When the hold ends if not paid for.
    pub expires_at: DateTime<Utc>,
    /// Made for the buyer by the waiting list, not taken by them.
    pub offer: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl BookingView {
    pub fn new(state: &AppState, booking: Booking, now: DateTime<Utc>) -> Self {
        let status = booking.status_at(now);
        let booking_id = booking.id;
        let code = |serial: Option<i64>, unit_id| {
            serial
                .filter(|_| status == BookingStatus::Confirmed)
                .map(|serial| {
                    crate::tickets::code(state.ticket_secret(), serial, booking_id.uuid(), unit_id)
                })
        };
        Self {
            id: booking.id.uuid(),
            status,
            performance_id: booking.performance_id.uuid(),
            units: booking
                .units
                .into_iter()
                .map(|u| {
                    let ticket_code = code(u.ticket, u.unit_id.uuid());
                    BookedUnitView {
                        qr_svg_url: ticket_code.as_deref().map(crate::tickets::qr_url),
                        ticket_code,
                        id: u.unit_id.uuid(),
                        section: u.section,
                        row: u.row,
                        label: u.label,
                        ticket_type_id: u.ticket_type_id.map(Uuid::from),
                        price: u.price.into(),
                    }
                })
                .collect(),
            total: booking.total.into(),
            expires_at: booking.held_until,
            offer: booking.offer,
            created_at: booking.created_at,
            updated_at: booking.updated_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BookingPage {
    pub items: Vec<BookingView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1–100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListParams {
    /// The page of `limit` after `cursor` (none: the first).
    pub fn after(limit: u32, cursor: Option<String>) -> Self {
        Self {
            limit: Some(limit),
            cursor,
        }
    }

    /// The page a list asks for, or what is wrong with it (422, naming the field).
    pub fn page(&self) -> Result<(PageLimit, Option<Cursor>), ApiError> {
        let params = self;
        let mut fields = Fields::new();
        let limit = fields.take("limit", PageLimit::parse(params.limit));
        let after = fields.optional("cursor", params.cursor.as_deref(), Cursor::parse);
        fields.finish()?;
        let (Some(limit), Some(after)) = (limit, after) else {
            return Err(ApiError::Internal("validated fields missing".into()));
        };
        Ok((limit, after))
    }
}

/// Holds units for the caller, all or nothing. The price comes from the server.
#[utoipa::path(post, path = "/v1/bookings", tag = "bookings",
    params(("Usher-Admission" = Option<String>, Header, description = "The admission from the performance's waiting room (`GET /v1/queue/{ticket_id}`), required when it has one")),
    request_body = HoldRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Held", body = BookingView),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The performance sells through a waiting room and the request has no valid admission (`Usher-Admission` header): `/problems/admission-required`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Some asked units are taken (listed in `unavailable_unit_ids`), kept for the waiting list, or not enough are free; nothing is held. Also: the performance is not on sale", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad input, unknown units, or more than `max_per_booking`", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_booking(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    Json(body): Json<HoldRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let admission = headers.get(ADMISSION_HEADER).and_then(|v| v.to_str().ok());
    let booking = hold(&state, caller, admission, body).await?;
    Ok((StatusCode::CREATED, axum::Json(booking)))
}

/// Holds what `body` asks for `caller`, with the waiting room's `admission` when the
/// performance has one.
pub async fn hold(
    state: &AppState,
    caller: Caller,
    admission: Option<&str>,
    body: HoldRequest,
) -> Result<BookingView, ApiError> {
    let now = state.clock().now();
    let performance_id = Uuid::try_parse(&body.performance_id)
        .map_err(|_| ApiError::validation("performance_id", "this is not a valid id"))?;
    // A performance the caller may not see is, to them, no performance at all.
    let (performance, event) = hot_performance(state, Some(caller), performance_id)
        .await
        .map_err(|e| match e {
            ApiError::NotFound => {
                ApiError::validation("performance_id", "there is no such performance")
            }
            other => other,
        })?;

    let selection = selection(&performance, body)?;
    on_sale(&event, &performance, now)?;
    admitted(state, admission, caller.id, &performance, now)?;
    let outcome = state
        .holds()
        .hold(HoldCommand {
            booking_id: BookingId::generate(),
            user_id: caller.id.into(),
            performance_id: performance.id,
            selection,
            now,
            held_until: now + performance.hold_ttl.duration(),
            offer: false,
        })
        .await?;
    hold_answer(state, outcome, now)
}

/// What the body asks to hold, checked against the performance; every field's
/// problem at once.
fn selection(performance: &Performance, body: HoldRequest) -> Result<Selection, ApiError> {
    let mut fields = Fields::new();
    let max = performance.max_per_booking.get();
    let quantity = body.quantity.map(|q| {
        if q < 1 || q > i64::from(max) {
            fields.reject(
                "quantity",
                format!("quantity is between 1 and {max} for this performance"),
            );
            0
        } else {
            q as u32
        }
    });
    let selection = match (
        body.unit_ids,
        body.ticket_type_id,
        body.best_available.unwrap_or(false),
    ) {
        (Some(ids), None, false) if body.quantity.is_none() => {
            if performance.kind != SeatingKind::Reserved {
                fields.reject("unit_ids", "this performance is general admission: ask for a ticket_type_id and a quantity");
            }
            if ids.is_empty() {
                fields.reject("unit_ids", "name at least one unit");
            } else if ids.len() > max as usize {
                fields.reject(
                    "unit_ids",
                    format!("at most {max} units per booking for this performance"),
                );
            }
            let parsed = fields.ids("unit_ids", &ids);
            Some(Selection::Units(
                parsed.into_iter().map(Into::into).collect(),
            ))
        }
        (None, Some(raw), false) => {
            if performance.kind != SeatingKind::General {
                fields.reject(
                    "ticket_type_id",
                    "this performance has reserved seating: ask for unit_ids or best_available",
                );
            }
            let ticket_type_id = Uuid::try_parse(&raw).ok();
            if ticket_type_id.is_none() {
                fields.reject("ticket_type_id", "this is not a valid id");
            }
            if quantity.is_none() {
                fields.reject("quantity", "a quantity is required with ticket_type_id");
            }
            ticket_type_id
                .zip(quantity)
                .map(|(ticket_type_id, quantity)| Selection::General {
                    ticket_type_id: ticket_type_id.into(),
                    quantity,
                })
        }
        (None, None, true) => {
            if performance.kind != SeatingKind::Reserved {
                fields.reject("best_available", "best available is for reserved seating; ask for a ticket_type_id and a quantity");
            }
            if quantity.is_none() {
                fields.reject("quantity", "a quantity is required with best_available");
            }
            quantity.map(|quantity| Selection::BestAvailable { quantity })
        }
        _ => {
            fields.reject(
                "unit_ids",
                "give unit_ids, or ticket_type_id with quantity, or quantity with best_available: true",
            );
            None
        }
    };
    fields.finish()?;
    selection.ok_or_else(|| ApiError::Internal("validated selection missing".into()))
}

/// Holds are taken only while the event is published, the performance scheduled, not
/// started, and past its on-sale time.
fn on_sale(event: &Event, performance: &Performance, now: DateTime<Utc>) -> Result<(), ApiError> {
    if event.status != EventStatus::Published {
        return Err(not_on_sale(format!(
            "this event is {}; it is not on sale",
            event.status
        )));
    }
    if performance.status == PerformanceStatus::Cancelled {
        return Err(not_on_sale("this performance is cancelled".into()));
    }
    if performance.starts_at <= now {
        return Err(not_on_sale("this performance has already started".into()));
    }
    if let Some(on_sale_at) = performance.on_sale_at
        && on_sale_at > now
    {
        return Err(not_on_sale(format!(
            "this performance goes on sale at {}",
            on_sale_at.to_rfc3339()
        )));
    }

    Ok(())
}

/// A performance behind a waiting room takes holds only with an admission of its own.
fn admitted(
    state: &AppState,
    admission: Option<&str>,
    caller: Uuid,
    performance: &Performance,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    if performance.waiting_room {
        let token = admission.ok_or_else(|| {
            ApiError::AdmissionRequired(
                "this performance sells through a waiting room: join its queue \
                     (POST /v1/performances/{id}/queue) and hold with the admission it gives \
                     (header Usher-Admission)"
                    .into(),
            )
        })?;
        state
            .tokens()
            .verify_admission(token, caller, performance.id.uuid(), now)
            .map_err(|why| ApiError::AdmissionRequired(why.into()))?;
    }

    Ok(())
}

/// The hold's answer: 201 with the booking, or why nothing was held.
fn hold_answer(
    state: &AppState,
    outcome: CommandOutcome,
    now: DateTime<Utc>,
) -> Result<BookingView, ApiError> {
    match outcome {
        CommandOutcome::Held(booking) => {
            metrics::counter!("usher_holds_total", "outcome" => "held").increment(1);
            tracing::info!(booking_id = %booking.id, units = booking.units.len(), "units held");
            Ok(BookingView::new(state, booking, now))
        }
        CommandOutcome::Unavailable { unit_ids } => {
            metrics::counter!("usher_holds_total", "outcome" => "unavailable").increment(1);
            Err(ApiError::UnitsTaken {
                detail: if unit_ids.is_empty() {
                    "not enough places are free for this request; nothing was held".into()
                } else {
                    format!(
                        "{} of the asked units are taken; nothing was held",
                        unit_ids.len()
                    )
                },
                unit_ids: unit_ids.into_iter().map(Uuid::from).collect(),
            })
        }
        // The sale was cancelled (or closed) between our look and the hold.
        CommandOutcome::NotOnSale => Err(not_on_sale(
            "this performance is not on sale right now".into(),
        )),
        CommandOutcome::UnknownUnits { unit_ids } => {
            metrics::counter!("usher_holds_total", "outcome" => "invalid").increment(1);
            Err(unknown_units(&unit_ids))
        }
        CommandOutcome::UnknownTicketType { .. } => {
            metrics::counter!("usher_holds_total", "outcome" => "invalid").increment(1);
            Err(ApiError::validation(
                "ticket_type_id",
                "this performance has no such ticket type",
            ))
        }
        other => Err(ApiError::Internal(format!(
            "unexpected hold outcome {other:?}"
        ))),
    }
}

fn not_on_sale(detail: String) -> ApiError {
    ApiError::Conflict {
        kind: "not-on-sale",
        detail,
    }
}

/// The caller's bookings, newest first.
#[utoipa::path(get, path = "/v1/bookings", tag = "bookings",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of bookings", body = BookingPage),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_bookings(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<BookingPage>, ApiError> {
    list(&state, caller, query(params)?).await.map(axum::Json)
}

/// A page of `caller`'s bookings, newest first.
pub async fn list(
    state: &AppState,
    caller: Caller,
    params: ListParams,
) -> Result<BookingPage, ApiError> {
    let (limit, after) = params.page()?;
    let page = state
        .store()
        .bookings_of_user(caller.id.into(), limit, after)
        .await?;
    let now = state.clock().now();
    Ok(BookingPage {
        items: page
            .items
            .into_iter()
            .map(|b| BookingView::new(state, b, now))
            .collect(),
        next_cursor: page.next.map(Cursor::encode),
    })
}

/// One booking: its buyer, an admin, or the event's organizer may read it.
#[utoipa::path(get, path = "/v1/bookings/{id}", tag = "bookings",
    params(("id" = Uuid, Path, description = "Booking id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The booking", body = BookingView),
        (status = 404, description = "No such booking, or not the caller's to see", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_booking(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<BookingView>, ApiError> {
    one(&state, caller, path_id(&id)?).await.map(axum::Json)
}

/// One booking `caller` may read (theirs; an organizer's event's; any, for admins).
pub async fn one(state: &AppState, caller: Caller, id: Uuid) -> Result<BookingView, ApiError> {
    let booking = readable_booking(state, caller, id).await?;
    Ok(BookingView::new(state, booking, state.clock().now()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CancelParams {
    /// `wallet`: a confirmed booking's money goes to the caller's wallet (store credit)
    /// instead of back through the payment provider. Wallet payments always return to
    /// the wallet.
    pub refund_to: Option<String>,
}

/// Cancels the caller's booking: a hold is released at once; a confirmed booking is
/// refunded through the payment provider (or to the wallet: `?refund_to=wallet`) and its
/// units go back on sale, until `USHER_REFUND_CUTOFF_HOURS` before the performance (then
/// 409 `refund-closed`).
#[utoipa::path(delete, path = "/v1/bookings/{id}", tag = "bookings",
    params(("id" = Uuid, Path, description = "Booking id"), CancelParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled (was held) or refunded (was confirmed)", body = BookingView),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking among the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The booking is not held or confirmed (expired, cancelled …), or refunds have closed (`/problems/refund-closed`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown `refund_to`", body = Problem, content_type = "application/problem+json"),
    ))]
async fn cancel_booking(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
    params: Result<Query<CancelParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<BookingView>, ApiError> {
    let id = path_id(&id)?;
    cancel(&state, caller, &request, id, query(params))
        .await
        .map(axum::Json)
}

/// Releases `caller`'s held booking, or refunds a confirmed one; the parameters are
/// judged once the booking is known to be theirs.
pub async fn cancel(
    state: &AppState,
    caller: Caller,
    request: &RequestId,
    id: Uuid,
    params: Result<CancelParams, ApiError>,
) -> Result<BookingView, ApiError> {
    let booking = owned_booking(state, caller, id).await?;
    let params = params?;
    let to = match params.refund_to.as_deref() {
        None | Some("original") => RefundTo::Origin,
        Some("wallet") => RefundTo::Wallet,
        Some(_) => {
            return Err(ApiError::validation(
                "refund_to",
                "refund_to is \"wallet\" or \"original\"",
            ));
        }
    };
    let id = booking.id;
    let now = state.clock().now();
    let refund = || async move {
        crate::routes::payments::refund(state, id.uuid(), Actor::Buyer, to, caller.audit(request))
            .await
    };
    if booking.status_at(now) == BookingStatus::Confirmed {
        return refund().await;
    }
    match usher_app::inventory::execute(
        state.store(),
        InventoryCommand::Cancel {
            booking_id: id,
            now,
        },
    )
    .await?
    {
        CommandOutcome::Cancelled(booking) => {
            tracing::info!(booking_id = %booking.id, "hold cancelled");
            Ok(BookingView::new(state, booking, now))
        }
        // Confirmed between our read and the cancel: refund instead.
        CommandOutcome::NotCancellable {
            status: BookingStatus::Confirmed,
        } => refund().await,
        CommandOutcome::NotCancellable { status } => Err(ApiError::Conflict {
            kind: "booking-not-held",
            detail: format!("this booking is {status}; it cannot be cancelled"),
        }),
        CommandOutcome::NoSuchBooking => Err(ApiError::NotFound),
        other => Err(ApiError::Internal(format!(
            "unexpected cancel outcome {other:?}"
        ))),
    }
}

/// The booking if the caller bought it; 404 otherwise.
pub async fn owned_booking(
    state: &AppState,
    caller: Caller,
    id: Uuid,
) -> Result<Booking, ApiError> {
    let booking = state
        .store()
        .booking(id.into())
        .await?
        .ok_or(ApiError::NotFound)?;
    if booking.user_id == caller.id.into() {
        Ok(booking)
    } else {
        Err(ApiError::NotFound)
    }
}

/// The booking if the caller is its buyer, an admin, or the organizer of its event.
pub async fn readable_booking(
    state: &AppState,
    caller: Caller,
    id: Uuid,
) -> Result<Booking, ApiError> {
    let booking = state
        .store()
        .booking(id.into())
        .await?
        .ok_or(ApiError::NotFound)?;
    if booking.user_id == caller.id.into() || caller.role == Role::Admin {
        return Ok(booking);
    }
    if caller.role == Role::Organizer {
        let performance = state.store().performance(booking.performance_id).await?;
        if let Some(performance) = performance {
            let event = state.store().event(performance.event_id).await?;
            if event.is_some_and(|e| e.organizer_id == caller.id.into()) {
                return Ok(booking);
            }
        }
    }
    Err(ApiError::NotFound)
}
