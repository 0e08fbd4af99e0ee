//! Performances and their inventory: organizers create them with a seating plan, edit
//! or cancel them, block house seats and read the attendee list and sales; anyone who
//! may see the event reads counts and the seat map.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use usher_core::inventory::{
    PriceInput, RowInput, SeatingInput, SeatsInput, SectionInput, TicketTypeInput,
};
use usher_core::{
    BookingStatus, Counts, Cursor, Event, EventStatus, HoldTtl, MaxPerBooking, Money, PageLimit,
    Performance, PerformanceStatus, SeatingKind, SeatingPlan, Unit, Viewer,
};
use usher_store::{
    CommandOutcome, InventoryCommand, NewPerformance, PerformancePatch, PerformanceSales,
    PerformanceUpdate,
};

use crate::extract::{Caller, Fields, Json, Organizer, RequestId, path_id, unknown_units};
use crate::problem::{ApiError, Problem};
use crate::routes::accounts::BuyerView;
use crate::routes::bookings::BookingView;
use crate::seat_maps;
use crate::state::AppState;

mod editing;
mod sales;
mod units;

pub use editing::{create, one};
pub use sales::{attendees, sales};
pub use units::{seat_map, set_states};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(editing::router())
        .merge(units::router())
        .merge(sales::router())
}

/// An amount of money: integer minor units and an ISO 4217 currency.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MoneyView {
    #[schema(example = 4500)]
    pub amount: i64,
    #[schema(value_type = String, example = "EUR")]
    pub currency: String,
}

impl From<Money> for MoneyView {
    fn from(money: Money) -> Self {
        Self {
            amount: money.amount,
            currency: money.currency.as_str().to_owned(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceRequest {
    pub amount: i64,
    pub currency: String,
}

impl PriceRequest {
    fn into_input(self) -> PriceInput {
        PriceInput {
            amount: self.amount,
            currency: self.currency,
        }
    }
}

/// A row's seats: a count (labelled 1..n) or the labels in order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SeatsRequest {
    Count(i64),
    Labels(Vec<String>),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RowRequest {
    #[schema(example = "A")]
    pub label: String,
    #[schema(example = 20)]
    pub seats: SeatsRequest,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SectionRequest {
    #[schema(example = "Stalls")]
    pub name: String,
    pub price: PriceRequest,
    pub rows: Vec<RowRequest>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketTypeRequest {
    #[schema(example = "Standing")]
    pub name: String,
    pub price: PriceRequest,
    #[schema(example = 500)]
    pub capacity: i64,
}

/// Reserved seating (sections of rows of seats) or general admission (ticket types).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SeatingRequest {
    Reserved {
        sections: Vec<SectionRequest>,
    },
    General {
        ticket_types: Vec<TicketTypeRequest>,
    },
}

impl SeatingRequest {
    fn into_input(self) -> SeatingInput {
        match self {
            SeatingRequest::Reserved { sections } => SeatingInput::Reserved {
                sections: sections
                    .into_iter()
                    .map(|s| SectionInput {
                        name: s.name,
                        price: s.price.into_input(),
                        rows: s
                            .rows
                            .into_iter()
                            .map(|r| RowInput {
                                label: r.label,
                                seats: match r.seats {
                                    SeatsRequest::Count(n) => SeatsInput::Count(n),
                                    SeatsRequest::Labels(labels) => SeatsInput::Labels(labels),
                                },
                            })
                            .collect(),
                    })
                    .collect(),
            },
            SeatingRequest::General { ticket_types } => SeatingInput::General {
                ticket_types: ticket_types
                    .into_iter()
                    .map(|t| TicketTypeInput {
                        name: t.name,
                        price: t.price.into_input(),
                        capacity: t.capacity,
                    })
                    .collect(),
            },
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePerformanceRequest {
    /// When the performance starts (RFC 3339); must be in the future.
    pub starts_at: DateTime<Utc>,
    /// How long a hold lasts, 30–3600 s (default: the server's `USHER_HOLD_TTL_SECONDS`).
    pub hold_ttl_seconds: Option<i64>,
    /// Most units one booking may take, 1–100 (default 10).
    pub max_per_booking: Option<i64>,
    /// Holds are refused (409 `not-on-sale`) before this moment; before `starts_at`.
    pub on_sale_at: Option<DateTime<Utc>>,
    /// `{enabled: true}`: buyers queue in a waiting room and hold only once admitted.
    pub waiting_room: Option<WaitingRoomSetting>,
    pub seating: SeatingRequest,
}

/// Whether buyers queue in a waiting room (`POST /v1/performances/{id}/queue`) and need
/// an admission (`Usher-Admission` header) to hold.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitingRoomSetting {
    pub enabled: bool,
}

/// Fields left out stay as they are; `on_sale_at: null` removes the on-sale time.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePerformanceRequest {
    /// A new start (RFC 3339), in the future.
    pub starts_at: Option<DateTime<Utc>>,
    /// Hold time of holds taken from now on, 30–3600 s.
    pub hold_ttl_seconds: Option<i64>,
    /// 1–100; applies to holds taken from now on.
    pub max_per_booking: Option<i64>,
    /// When holds open (before `starts_at`); it can be moved until it passes (422
    /// after), and `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub on_sale_at: Option<Option<DateTime<Utc>>>,
    /// Turns the waiting room on or off.
    pub waiting_room: Option<WaitingRoomSetting>,
    /// Only `cancelled`: final; every hold is released, every confirmed booking refunded
    /// and its buyer emailed.
    #[schema(example = "cancelled")]
    pub status: Option<String>,
}

/// A field that is present (even as `null`) is `Some`; one left out stays `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitStatesRequest {
    /// Units of this performance (at most 10,000).
    pub unit_ids: Vec<String>,
    /// `blocked` (house seats, broken seats) or `available`.
    #[schema(example = "blocked")]
    pub state: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UnitStatesChanged {
    /// How many units changed state (units already in that state are not counted).
    pub changed: u64,
}

/// A booking on the attendee list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttendeeView {
    #[serde(flatten)]
    pub booking: BookingView,
    pub buyer: BuyerView,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttendeePage {
    pub items: Vec<AttendeeView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttendeeParams {
    /// Only bookings reading this status: held, confirmed, expired, cancelled, refunded.
    pub status: Option<String>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The most units one block/unblock request may name.
const MAX_UNITS_PER_CHANGE: usize = 10_000;

/// A section (reserved seating) or a ticket type (general admission) with its counts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PriceGroupView {
    pub id: Uuid,
    pub name: String,
    pub price: MoneyView,
    pub capacity: u64,
    pub available: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PerformanceView {
    pub id: Uuid,
    pub event_id: Uuid,
    pub starts_at: DateTime<Utc>,
    #[schema(value_type = String, example = "reserved")]
    pub kind: SeatingKind,
    /// `scheduled` or `cancelled` (also when its event is cancelled).
    #[schema(value_type = String, example = "scheduled")]
    pub status: PerformanceStatus,
    /// Holds are refused before this moment.
    pub on_sale_at: Option<DateTime<Utc>>,
    pub waiting_room: WaitingRoomSetting,
    pub currency: String,
    pub capacity: u64,
    /// Free to hold now (expired holds count as free).
    pub available: u64,
    pub held: u64,
    pub sold: u64,
    pub blocked: u64,
    pub hold_ttl_seconds: u32,
    pub max_per_booking: u32,
    /// General admission only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_types: Option<Vec<PriceGroupView>>,
    /// Reserved seating only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sections: Option<Vec<PriceGroupView>>,
    pub created_at: DateTime<Utc>,
}

/// A performance as an event lists it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PerformanceSummary {
    pub id: Uuid,
    pub starts_at: DateTime<Utc>,
    #[schema(value_type = String, example = "reserved")]
    pub kind: SeatingKind,
    pub capacity: u64,
    pub available: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UnitView {
    pub id: Uuid,
    pub section: Option<String>,
    pub row: Option<String>,
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_type: Option<Uuid>,
    pub price: MoneyView,
    /// `available`, `held`, `sold` or `blocked`; an expired hold reads `available`.
    #[schema(value_type = String, example = "available")]
    pub state: usher_core::UnitState,
}

impl From<Unit> for UnitView {
    fn from(unit: Unit) -> Self {
        Self {
            id: unit.id.uuid(),
            section: unit.section,
            row: unit.row,
            label: unit.label,
            ticket_type: unit.ticket_type_id.map(Uuid::from),
            price: unit.price.into(),
            state: unit.state,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SeatMap {
    pub performance_id: Uuid,
    pub units: Vec<UnitView>,
}

/// Bookings and refunds of a performance; after a cancellation, its progress.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BookingCountsView {
    /// Live holds.
    pub held: u64,
    pub confirmed: u64,
    pub refunded: u64,
    /// Payments whose refund is queued and not yet confirmed by the provider.
    pub refunds_pending: u64,
    /// Payments whose money went back.
    pub refunds_done: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PerformanceSalesView {
    pub performance_id: Uuid,
    pub starts_at: DateTime<Utc>,
    /// `scheduled` or `cancelled` (also when the event is cancelled).
    #[schema(value_type = String, example = "scheduled")]
    pub status: PerformanceStatus,
    pub bookings: BookingCountsView,
    /// Only when cancelled: true once every hold is released, every confirmed booking
    /// refunded and every refund confirmed by the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancellation_complete: Option<bool>,
    pub capacity: u64,
    pub available: u64,
    pub held: u64,
    pub sold: u64,
    pub blocked: u64,
    /// What the sold units were sold for.
    pub revenue: MoneyView,
    /// Tickets of confirmed bookings (one per unit sold).
    pub tickets: u64,
    /// Of those, how many were checked in at the door.
    pub checked_in: u64,
}

impl From<PerformanceSales> for PerformanceSalesView {
    fn from(sales: PerformanceSales) -> Self {
        let b = sales.bookings;
        let cancelled = sales.status == PerformanceStatus::Cancelled;
        Self {
            performance_id: sales.performance_id.uuid(),
            starts_at: sales.starts_at,
            status: sales.status,
            bookings: BookingCountsView {
                held: b.held,
                confirmed: b.confirmed,
                refunded: b.refunded,
                refunds_pending: b.refunds_pending,
                refunds_done: b.refunds_done,
            },
            cancellation_complete: cancelled
                .then_some(b.held == 0 && b.confirmed == 0 && b.refunds_pending == 0),
            capacity: sales.counts.capacity,
            available: sales.counts.available,
            held: sales.counts.held,
            sold: sales.counts.sold,
            blocked: sales.counts.blocked,
            revenue: sales.revenue.into(),
            tickets: 0,
            checked_in: 0,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventSales {
    pub event_id: Uuid,
    pub performances: Vec<PerformanceSalesView>,
}

/// The event if the caller manages it; 404 otherwise, whether or not it exists.
pub async fn managed_event(
    state: &AppState,
    caller: Organizer,
    id: Uuid,
) -> Result<Event, ApiError> {
    let event = state
        .store()
        .event(id.into())
        .await?
        .ok_or(ApiError::NotFound)?;
    if caller.viewer().manages(&event) {
        Ok(event)
    } else {
        Err(ApiError::NotFound)
    }
}

/// The performance and its event if the caller manages the event; 404 otherwise,
/// whether or not it exists.
pub async fn managed_performance(
    state: &AppState,
    caller: Organizer,
    id: Uuid,
) -> Result<(Performance, Event), ApiError> {
    let (performance, event) = visible_performance(state, Some(*caller), id).await?;
    if caller.viewer().manages(&event) {
        Ok((performance, event))
    } else {
        Err(ApiError::NotFound)
    }
}

/// The performance and its event for the hot paths (holds, seat maps): from the
/// instance's one-second cache when there, else as any read. A hold's transaction
/// checks again that the performance is on sale.
pub async fn hot_performance(
    state: &AppState,
    caller: Option<Caller>,
    performance_id: Uuid,
) -> Result<(Performance, Event), ApiError> {
    if let Some((performance, event)) = state.performances().get(performance_id)
        && caller
            .map_or(Viewer::Anonymous, Caller::viewer)
            .sees(&event)
    {
        return Ok((performance, event));
    }
    let (performance, event) = visible_performance(state, caller, performance_id).await?;
    state.performances().put(performance.clone(), event.clone());
    Ok((performance, event))
}

/// The performance and its event if the caller may see the event; 404 otherwise.
pub async fn visible_performance(
    state: &AppState,
    caller: Option<Caller>,
    id: Uuid,
) -> Result<(Performance, Event), ApiError> {
    let performance = state
        .store()
        .performance(id.into())
        .await?
        .ok_or(ApiError::NotFound)?;
    let event = state
        .store()
        .event(performance.event_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let viewer = caller.map_or(Viewer::Anonymous, Caller::viewer);
    if viewer.sees(&event) {
        Ok((performance, event))
    } else {
        Err(ApiError::NotFound)
    }
}

async fn performance_view(
    state: &AppState,
    performance: Performance,
    event_status: EventStatus,
) -> Result<PerformanceView, ApiError> {
    let inventory = state
        .store()
        .inventory(performance.id, state.clock().now())
        .await?;
    Ok(performance_view_of(performance, event_status, &inventory))
}

/// The performance as the API shows it, with these counts.
fn performance_view_of(
    performance: Performance,
    event_status: EventStatus,
    inventory: &usher_store::PerformanceInventory,
) -> PerformanceView {
    let status = if event_status == EventStatus::Cancelled {
        PerformanceStatus::Cancelled
    } else {
        performance.status
    };
    let view = |id: Uuid, name: &str, price: Money| {
        let counts = inventory
            .parts
            .iter()
            .find(|(part, _)| *part == id)
            .map_or_else(Counts::default, |(_, c)| *c);
        PriceGroupView {
            id,
            name: name.to_owned(),
            price: price.into(),
            capacity: counts.capacity,
            available: counts.available,
        }
    };
    let total = inventory.total;
    let (ticket_types, sections) = match performance.kind {
        SeatingKind::General => (
            Some(
                performance
                    .ticket_types
                    .iter()
                    .map(|t| view(t.id.uuid(), &t.name, t.price))
                    .collect(),
            ),
            None,
        ),
        SeatingKind::Reserved => (
            None,
            Some(
                performance
                    .sections
                    .iter()
                    .map(|s| view(s.id, &s.name, s.price))
                    .collect(),
            ),
        ),
    };
    PerformanceView {
        id: performance.id.uuid(),
        event_id: performance.event_id.uuid(),
        starts_at: performance.starts_at,
        kind: performance.kind,
        status,
        on_sale_at: performance.on_sale_at,
        waiting_room: WaitingRoomSetting {
            enabled: performance.waiting_room,
        },
        currency: performance.currency.as_str().into(),
        capacity: total.capacity,
        available: total.available,
        held: total.held,
        sold: total.sold,
        blocked: total.blocked,
        hold_ttl_seconds: performance.hold_ttl.seconds(),
        max_per_booking: performance.max_per_booking.get(),
        ticket_types,
        sections,
        created_at: performance.created_at,
    }
}
