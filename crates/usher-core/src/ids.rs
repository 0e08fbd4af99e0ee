//! Typed ids: one type per kind of thing, so a ticket type's id cannot be passed where
//! a unit's is expected. Each wraps a UUID (v7, ordered by creation time, for ids Usher
//! makes), reads and writes as that UUID's text in JSON, and converts to and from
//! [`Uuid`] at the edges (paths). With the `sqlx` feature (the engines'), an id binds
//! and reads as the UUID column it is.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh id, later than every id made before it.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub const fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::from_str(s).map(Self)
            }
        }
    )*};
}

ids! {
    /// An account.
    UserId,
    /// An event (a show with one or more performances).
    EventId,
    /// One performance of an event: what is sold.
    PerformanceId,
    /// A seat, or one general-admission ticket, of a performance.
    UnitId,
    /// A general-admission ticket type (its units are interchangeable).
    TicketTypeId,
    /// A booking: a hold, and what it becomes.
    BookingId,
    /// One payment of a booking (card or wallet).
    PaymentId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_and_writes_as_its_uuid() {
        let id = BookingId::generate();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.uuid()));
        assert_eq!(serde_json::from_str::<BookingId>(&json).unwrap(), id);
        assert_eq!(id.to_string().parse::<BookingId>().unwrap(), id);
        assert!(BookingId::generate() > id);
    }
}
