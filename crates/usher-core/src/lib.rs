//! Usher's domain core: the values and rules of accounts, events, inventory and the
//! booking and payment lifecycle.
//!
//! Nothing here knows about HTTP or SQL. Values that come from outside are parsed into
//! the newtypes below once, at the boundary; after that their type says they are valid.

pub mod account;
pub mod best_available;
pub mod clock;
pub mod door;
pub mod event;
pub mod hold;
pub mod ids;
pub mod inventory;
pub mod lifecycle;
pub mod money;
pub mod page;
pub mod text;
pub mod waiting_list;
pub mod waiting_room;

pub use account::{AccessRefusal, Email, Password, Role, Standing, User, UserName};
pub use clock::{Clock, ManualClock, SystemClock};
pub use event::{Event, EventAttributes, EventStatus, EventText, EventTitle, Viewer};
pub use ids::{BookingId, EventId, PaymentId, PerformanceId, TicketTypeId, UnitId, UserId};
pub use inventory::{
    BookedUnit, Booking, BookingStatus, Counts, HoldTtl, MaxPerBooking, Performance,
    PerformanceStatus, SeatingKind, SeatingPlan, Section, TicketType, Unit, UnitState,
};
pub use money::{Currency, Money};
pub use page::{Cursor, PageLimit};

/// Why an outside value was refused. The message is written for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// A problem with one field of a larger input, named by its path (`seating.sections[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldIssue {
    pub field: String,
    pub message: String,
}

impl FieldIssue {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
