//! The inventory part of the storage contract: performances, units, and the commands
//! that change who holds what.

use chrono::{DateTime, Utc};
use usher_core::ids::{BookingId, EventId, PerformanceId, UnitId};
use uuid::Uuid;

use usher_core::inventory::PriceGroupPlan;
use usher_core::{
    BookedUnit, Booking, BookingStatus, Counts, Currency, HoldTtl, MaxPerBooking, Money,
    Performance, PerformanceStatus, SeatingKind, SeatingPlan, Section, TicketType, UnitState, User,
};

use crate::{StoreError, StoreResult, corrupt_value};

#[derive(Debug, Clone)]
pub struct NewPerformance {
    pub event_id: EventId,
    pub starts_at: DateTime<Utc>,
    /// Holds are refused before this moment.
    pub on_sale_at: Option<DateTime<Utc>>,
    pub waiting_room: bool,
    pub hold_ttl: HoldTtl,
    pub max_per_booking: MaxPerBooking,
    pub seating: SeatingPlan,
}

/// Counts of a performance and of each of its sections or ticket types.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PerformanceInventory {
    pub total: Counts,
    /// Keyed by section id (reserved) or ticket type id (general).
    pub parts: Vec<(Uuid, Counts)>,
}

/// What an organizer sees of one performance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerformanceSales {
    pub performance_id: PerformanceId,
    pub starts_at: DateTime<Utc>,
    /// `Cancelled` when the performance or its event is.
    pub status: PerformanceStatus,
    pub counts: Counts,
    /// Sum of the prices of sold units.
    pub revenue: Money,
    pub bookings: BookingCounts,
}

/// Bookings and refunds of one performance: how far a cancellation has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BookingCounts {
    /// Live holds (not past their hold time).
    pub held: u64,
    pub confirmed: u64,
    pub refunded: u64,
    /// Payments whose refund is queued but not yet confirmed by the provider.
    pub refunds_pending: u64,
    /// Payments whose money went back.
    pub refunds_done: u64,
}

/// A partial update of a performance; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct PerformancePatch {
    pub starts_at: Option<DateTime<Utc>>,
    pub hold_ttl: Option<HoldTtl>,
    pub max_per_booking: Option<MaxPerBooking>,
    /// `Some(None)` clears it.
    pub on_sale_at: Option<Option<DateTime<Utc>>>,
    pub waiting_room: Option<bool>,
    /// Only `Cancelled` is a change; cancelling queues the refunds and releases.
    pub status: Option<PerformanceStatus>,
}

/// What a performance patch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PerformanceUpdate {
    Updated(Performance),
    /// A cancelled performance stays as it is.
    AlreadyCancelled,
    NoSuchPerformance,
}

/// Pairs each booking with its buyer (from `buyers`, in any order).
pub fn attendees(bookings: Vec<Booking>, buyers: &[User]) -> StoreResult<Vec<Attendee>> {
    bookings
        .into_iter()
        .map(|booking| {
            let buyer = buyers
                .iter()
                .find(|u| u.id == booking.user_id)
                .cloned()
                .ok_or_else(|| StoreError::Backend(format!("buyer of {} vanished", booking.id)))?;
            Ok(Attendee { booking, buyer })
        })
        .collect()
}

/// What a cancelled sale covers: a whole event, or one performance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleScope {
    Event(Uuid),
    Performance(Uuid),
}

/// A booking on an organizer's attendee list, with its buyer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendee {
    pub booking: Booking,
    pub buyer: User,
}

#[derive(Debug, Clone)]
pub enum InventoryCommand {
    /// Release a held booking's units at once.
    Cancel {
        booking_id: BookingId,
        now: DateTime<Utc>,
    },
    /// Move up to `limit` held bookings past their `held_until` to `expired` and free
    /// the units they still hold. Idempotent; safe from several instances at once.
    Sweep { now: DateTime<Utc>, limit: u32 },
    /// House seats and broken seats: block free units, or make blocked ones available
    /// again. All or nothing: a held or sold unit refuses the whole command.
    SetBlocked {
        performance_id: PerformanceId,
        unit_ids: Vec<UnitId>,
        blocked: bool,
        now: DateTime<Utc>,
        audit: crate::Audit,
    },
}

/// A `units` row joined with what the seat map shows.
#[derive(Debug)]
pub struct UnitRow {
    pub id: Uuid,
    pub section: Option<String>,
    pub row_label: Option<String>,
    pub seat_label: Option<String>,
    pub ticket_type_id: Option<Uuid>,
    pub price_amount: i64,
    pub state: String,
    pub held_until: Option<DateTime<Utc>>,
}

impl UnitRow {
    pub fn into_unit(
        self,
        currency: Currency,
        now: DateTime<Utc>,
    ) -> StoreResult<usher_core::Unit> {
        let state = UnitState::parse(&self.state).map_err(corrupt_value("units.state"))?;
        Ok(usher_core::Unit {
            id: self.id.into(),
            section: self.section,
            row: self.row_label,
            label: self.seat_label,
            ticket_type_id: self.ticket_type_id.map(Into::into),
            price: Money::new(self.price_amount, currency),
            state: state.effective(self.held_until, now),
        })
    }
}

#[derive(Debug)]
pub struct BookingRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub performance_id: Uuid,
    pub status: String,
    pub held_until: DateTime<Utc>,
    pub total_amount: i64,
    pub currency: String,
    pub paid_by: Option<Uuid>,
    pub offer: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct BookedUnitRow {
    pub booking_id: Uuid,
    pub unit_id: Uuid,
    pub section: Option<String>,
    pub row_label: Option<String>,
    pub seat_label: Option<String>,
    pub ticket_type_id: Option<Uuid>,
    pub price_amount: i64,
    pub ticket_serial: Option<i64>,
}

impl BookingRow {
    /// Assembles the booking from its row and its units (any order; only this
    /// booking's are taken).
    pub fn into_booking(self, units: &[BookedUnitRow]) -> StoreResult<Booking> {
        let currency =
            Currency::from_stored(&self.currency).map_err(corrupt_value("bookings.currency"))?;
        Ok(Booking {
            id: self.id.into(),
            user_id: self.user_id.into(),
            performance_id: self.performance_id.into(),
            status: BookingStatus::parse(&self.status).map_err(corrupt_value("bookings.status"))?,
            held_until: self.held_until,
            total: Money::new(self.total_amount, currency),
            units: units
                .iter()
                .filter(|u| u.booking_id == self.id)
                .map(|u| BookedUnit {
                    unit_id: u.unit_id.into(),
                    section: u.section.clone(),
                    row: u.row_label.clone(),
                    label: u.seat_label.clone(),
                    ticket_type_id: u.ticket_type_id.map(Into::into),
                    price: Money::new(u.price_amount, currency),
                    ticket: u.ticket_serial,
                })
                .collect(),
            paid_by: self.paid_by.map(Into::into),
            offer: self.offer,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Parses a stored currency code.
pub fn stored_currency(raw: &str) -> StoreResult<Currency> {
    Currency::from_stored(raw).map_err(|e| StoreError::Backend(format!("corrupt currency: {e}")))
}

/// A `performances` row as both engines read it.
#[derive(Debug)]
pub struct PerformanceRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub hold_ttl_seconds: i64,
    pub max_per_booking: i64,
    pub kind: String,
    pub currency: String,
    pub status: String,
    pub on_sale_at: Option<DateTime<Utc>>,
    pub waiting_room: bool,
    pub created_at: DateTime<Utc>,
}

/// A `price_groups` row (a section or a ticket type).
#[derive(Debug)]
pub struct PriceGroupRow {
    pub id: Uuid,
    pub performance_id: Uuid,
    pub name: String,
    pub price_amount: i64,
    pub capacity: i64,
}

/// Performances from their rows and their price groups (in position order).
pub fn assemble_performances(
    rows: Vec<PerformanceRow>,
    groups: &[PriceGroupRow],
) -> StoreResult<Vec<Performance>> {
    rows.into_iter()
        .map(|row| {
            let kind = SeatingKind::parse(&row.kind).map_err(corrupt_value("performances.kind"))?;
            let currency = stored_currency(&row.currency)?;
            let mut sections = Vec::new();
            let mut ticket_types = Vec::new();
            for g in groups.iter().filter(|g| g.performance_id == row.id) {
                let price = Money::new(g.price_amount, currency);
                match kind {
                    SeatingKind::Reserved => sections.push(Section {
                        id: g.id,
                        name: g.name.clone(),
                        price,
                    }),
                    SeatingKind::General => ticket_types.push(TicketType {
                        id: g.id.into(),
                        name: g.name.clone(),
                        price,
                        capacity: g.capacity as u32,
                    }),
                }
            }
            Ok(Performance {
                id: row.id.into(),
                event_id: row.event_id.into(),
                starts_at: row.starts_at,
                status: PerformanceStatus::parse(&row.status)
                    .map_err(corrupt_value("performances.status"))?,
                on_sale_at: row.on_sale_at,
                waiting_room: row.waiting_room,
                hold_ttl: HoldTtl::parse(row.hold_ttl_seconds)
                    .map_err(corrupt_value("performances.hold_ttl_seconds"))?,
                max_per_booking: MaxPerBooking::parse(row.max_per_booking)
                    .map_err(corrupt_value("performances.max_per_booking"))?,
                kind,
                currency,
                sections,
                ticket_types,
                created_at: row.created_at,
            })
        })
        .collect()
}

/// Counts of one price group, as both engines compute them.
#[derive(Debug)]
pub struct CountRow {
    pub group_id: Uuid,
    pub capacity: i64,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    pub blocked: i64,
}

impl PerformanceInventory {
    /// The per-group counts and their sum.
    pub fn from_rows(rows: Vec<CountRow>) -> Self {
        let mut inventory = PerformanceInventory::default();
        for row in rows {
            let counts = Counts {
                capacity: row.capacity as u64,
                available: row.available as u64,
                held: row.held as u64,
                sold: row.sold as u64,
                blocked: row.blocked as u64,
            };
            inventory.total.capacity += counts.capacity;
            inventory.total.available += counts.available;
            inventory.total.held += counts.held;
            inventory.total.sold += counts.sold;
            inventory.total.blocked += counts.blocked;
            inventory.parts.push((row.group_id, counts));
        }
        inventory
    }
}

/// One performance's sales, as both engines compute them.
#[derive(Debug)]
pub struct SalesRow {
    pub id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub currency: String,
    /// The performance's status, or `cancelled` when its event is.
    pub status: String,
    pub capacity: i64,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    pub blocked: i64,
    pub revenue: i64,
}

impl SalesRow {
    pub fn into_sales(self, bookings: BookingCounts) -> StoreResult<PerformanceSales> {
        Ok(PerformanceSales {
            performance_id: self.id.into(),
            starts_at: self.starts_at,
            status: PerformanceStatus::parse(&self.status)
                .map_err(corrupt_value("performances.status"))?,
            bookings,
            counts: Counts {
                capacity: self.capacity as u64,
                available: self.available as u64,
                held: self.held as u64,
                sold: self.sold as u64,
                blocked: self.blocked as u64,
            },
            revenue: Money::new(self.revenue, stored_currency(&self.currency)?),
        })
    }
}

/// Booking and refund counts of one performance, as both engines compute them.
#[derive(Debug)]
pub struct BookingCountRow {
    pub performance_id: Uuid,
    pub held: i64,
    pub confirmed: i64,
    pub refunded: i64,
    pub refunds_pending: i64,
    pub refunds_done: i64,
}

impl BookingCountRow {
    /// The counts of `performance_id` among `rows` (zero when it has no bookings).
    pub fn counts_of(rows: &[BookingCountRow], performance_id: PerformanceId) -> BookingCounts {
        rows.iter()
            .find(|r| r.performance_id == performance_id.uuid())
            .map_or_else(BookingCounts::default, |r| BookingCounts {
                held: r.held as u64,
                confirmed: r.confirmed as u64,
                refunded: r.refunded as u64,
                refunds_pending: r.refunds_pending as u64,
                refunds_done: r.refunds_done as u64,
            })
    }
}

pub use usher_core::hold::{CommandOutcome, HeldUnit, HoldCommand, HoldFacts, Selection};

/// The units that are someone's at `now` (sold, or held by a hold that has not run out),
/// from what an engine read back: (id, stored state, `held_until`).
pub fn taken_units<'a>(
    units: impl IntoIterator<Item = (Uuid, &'a str, Option<DateTime<Utc>>)>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Uuid>> {
    let mut taken = Vec::new();
    for (id, state, held_until) in units {
        if stored_state(state)?.taken(held_until, now) {
            taken.push(id);
        }
    }
    Ok(taken)
}

/// Whether `booking` may have every one of these units at `now` (a payment arriving for
/// it), from what an engine read back: (stored state, holder, `held_until`).
pub fn all_takeable_by<'a>(
    units: impl IntoIterator<Item = (&'a str, Option<Uuid>, Option<DateTime<Utc>>)>,
    booking: BookingId,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    for (state, holder, held_until) in units {
        if !stored_state(state)?.takeable_by(holder.map(Into::into), held_until, booking, now) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn stored_state(raw: &str) -> StoreResult<UnitState> {
    UnitState::parse(raw).map_err(crate::corrupt_value("units.state"))
}

/// The performance as created: scheduled, with its sections or ticket types.
pub fn created_performance(
    id: Uuid,
    new: &NewPerformance,
    groups: (Vec<Section>, Vec<TicketType>),
    now: DateTime<Utc>,
) -> Performance {
    let (sections, ticket_types) = groups;
    Performance {
        id: id.into(),
        event_id: new.event_id,
        starts_at: new.starts_at,
        status: PerformanceStatus::Scheduled,
        on_sale_at: new.on_sale_at,
        waiting_room: new.waiting_room,
        hold_ttl: new.hold_ttl,
        max_per_booking: new.max_per_booking,
        kind: new.seating.kind(),
        currency: new.seating.currency,
        sections,
        ticket_types,
        created_at: now,
    }
}

/// The audit row of a created performance.
pub fn performance_created(
    audit: &crate::Audit,
    new: &NewPerformance,
    id: Uuid,
    now: DateTime<Utc>,
) -> crate::AuditEntry {
    audit
        .clone()
        .note("starts_at", new.starts_at.to_rfc3339())
        .note("kind", new.seating.kind().as_str())
        .note("capacity", new.seating.units().len())
        .entry(
            crate::box_office::AuditAction::PerformanceCreated,
            crate::box_office::AuditTarget::Performance(id.into()),
            Some(new.event_id),
            now,
        )
}

/// Records a created price group as the section or ticket type it is.
pub fn push_group(
    sections: &mut Vec<Section>,
    ticket_types: &mut Vec<TicketType>,
    kind: SeatingKind,
    id: Uuid,
    group: &PriceGroupPlan<'_>,
) {
    let name = group.name.to_owned();
    match kind {
        SeatingKind::Reserved => sections.push(Section {
            id,
            name,
            price: group.price,
        }),
        SeatingKind::General => ticket_types.push(TicketType {
            id: id.into(),
            name,
            price: group.price,
            capacity: group.capacity,
        }),
    }
}
