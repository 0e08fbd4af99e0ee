//! The inventory part of the storage contract: performances, units, and the commands
//! that change who holds what.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use usher_core::{
    BookedUnit, Booking, BookingStatus, Counts, Currency, HoldTtl, MaxPerBooking, Money,
    SeatingPlan, UnitState,
};

use crate::{StoreError, StoreResult, corrupt_value};

/// The nil UUID, for "no value" in columns compared with `=`.
pub const ZERO_UUID: Uuid = Uuid::nil();

#[derive(Debug, Clone)]
pub struct NewPerformance {
    pub event_id: Uuid,
    pub starts_at: DateTime<Utc>,
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
    pub performance_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub counts: Counts,
    /// Sum of the prices of sold units.
    pub revenue: Money,
}

/// Which units a hold asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Exactly these units (reserved seating).
    Units(Vec<Uuid>),
    /// Any `quantity` free units of one ticket type (general admission).
    General { ticket_type_id: Uuid, quantity: u32 },
    /// The best `quantity` free seats, adjacent when possible (reserved seating).
    BestAvailable { quantity: u32 },
}

#[derive(Debug, Clone)]
pub struct HoldCommand {
    /// Chosen by the caller, so a retried command is recognisable.
    pub booking_id: Uuid,
    pub user_id: Uuid,
    pub performance_id: Uuid,
    pub selection: Selection,
    pub now: DateTime<Utc>,
    pub held_until: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub enum InventoryCommand {
    /// Take units for a new booking, all or nothing.
    Hold(HoldCommand),
    /// Release a held booking's units at once.
    Cancel {
        booking_id: Uuid,
        now: DateTime<Utc>,
    },
    /// Move up to `limit` held bookings past their `held_until` to `expired` and free
    /// the units they still hold. Idempotent; safe from several instances at once.
    Sweep { now: DateTime<Utc>, limit: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    Held(Booking),
    /// Some asked units are taken (or not enough are free); nothing was held.
    Unavailable {
        unit_ids: Vec<Uuid>,
    },
    /// Some asked units do not exist in this performance (or the ticket type does not).
    UnknownUnits {
        unit_ids: Vec<Uuid>,
    },
    Cancelled(Booking),
    /// The booking is not (or no longer) held; it is in this state.
    NotCancellable {
        status: BookingStatus,
    },
    NoSuchBooking,
    Swept {
        expired: Vec<Uuid>,
        released_units: u64,
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
            id: self.id,
            section: self.section,
            row: self.row_label,
            label: self.seat_label,
            ticket_type_id: self.ticket_type_id,
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
}

impl BookingRow {
    /// Assembles the booking from its row and its units (any order; only this
    /// booking's are taken).
    pub fn into_booking(self, units: &[BookedUnitRow]) -> StoreResult<Booking> {
        let currency =
            Currency::parse(&self.currency).map_err(corrupt_value("bookings.currency"))?;
        Ok(Booking {
            id: self.id,
            user_id: self.user_id,
            performance_id: self.performance_id,
            status: BookingStatus::parse(&self.status).map_err(corrupt_value("bookings.status"))?,
            held_until: self.held_until,
            total: Money::new(self.total_amount, currency),
            units: units
                .iter()
                .filter(|u| u.booking_id == self.id)
                .map(|u| BookedUnit {
                    unit_id: u.unit_id,
                    section: u.section.clone(),
                    row: u.row_label.clone(),
                    label: u.seat_label.clone(),
                    ticket_type_id: u.ticket_type_id,
                    price: Money::new(u.price_amount, currency),
                })
                .collect(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Parses a stored currency code.
pub fn stored_currency(raw: &str) -> StoreResult<Currency> {
    Currency::parse(raw).map_err(|e| StoreError::Backend(format!("corrupt currency: {e}")))
}
