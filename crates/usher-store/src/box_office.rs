//! The box office: tickets checked at the door, the wallet (store credit), and the audit
//! log of who changed what.
//!
//! - A **ticket** is numbered (`serial`) when its booking is confirmed, in the
//!   confirmation's transaction. The code a buyer shows is made by the server from the
//!   serial and a MAC under its ticket key; the store only keeps serials and check-ins.
//! - A **wallet** is an append-only ledger per user and currency. Its balance is kept
//!   beside the entries and moved by one conditional update (`balance + amount >= 0`), so
//!   two payments racing for the same money cannot both take it: never a read-then-write.
//! - The **audit log** is append-only too; each row is written in the transaction of the
//!   change it records.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use usher_core::ids::{BookingId, EventId, PaymentId, PerformanceId, UnitId, UserId};
use uuid::Uuid;

use usher_core::{BookingStatus, Money};

use crate::{StoreError, StoreResult};

/// Who caused a change, where it came from, and a small detail for the audit log. The
/// store adds what it knows itself: the action, the target and its event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Audit {
    /// `None` for the system (a job, a sweeper).
    pub actor_id: Option<UserId>,
    /// The `x-request-id` of the request that caused it.
    pub request_id: Option<String>,
    pub detail: serde_json::Value,
}

impl Audit {
    pub fn by(actor_id: UserId, request_id: Option<String>) -> Self {
        Self {
            actor_id: Some(actor_id),
            request_id,
            detail: serde_json::Value::Object(Default::default()),
        }
    }

    /// A change made by the system itself (a job working through a cancelled sale).
    pub fn system() -> Self {
        Self {
            actor_id: None,
            request_id: None,
            detail: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }

    /// Adds `key: value` to the detail (which becomes an object if it was not one).
    pub fn note(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        if !self.detail.is_object() {
            self.detail = serde_json::Value::Object(Default::default());
        }
        if let Some(map) = self.detail.as_object_mut() {
            map.insert(key.to_owned(), value.into());
        }
        self
    }

    /// The row for `action` on `target`, at `at`.
    pub fn entry(
        &self,
        action: AuditAction,
        target: AuditTarget,
        event_id: Option<EventId>,
        at: DateTime<Utc>,
    ) -> AuditEntry {
        AuditEntry {
            id: Uuid::now_v7(),
            at,
            actor_id: self.actor_id,
            action,
            target,
            event_id,
            request_id: self.request_id.clone(),
            detail: self.detail.clone(),
        }
    }
}

/// The actions the audit log records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AuditAction {
    EventCreated,
    EventUpdated,
    EventPublished,
    EventCancelled,
    PerformanceCreated,
    PerformanceUpdated,
    PerformanceCancelled,
    UnitsBlocked,
    UnitsUnblocked,
    UserRoleChanged,
    UserDisabled,
    UserEnabled,
    JobRetried,
    BookingRefunded,
    BookingCancelled,
    WalletCredited,
    TicketCheckedIn,
    /// An action this version does not know (a newer one wrote it): shown as stored.
    Other(String),
}

impl AuditAction {
    const KNOWN: [AuditAction; 17] = [
        AuditAction::EventCreated,
        AuditAction::EventUpdated,
        AuditAction::EventPublished,
        AuditAction::EventCancelled,
        AuditAction::PerformanceCreated,
        AuditAction::PerformanceUpdated,
        AuditAction::PerformanceCancelled,
        AuditAction::UnitsBlocked,
        AuditAction::UnitsUnblocked,
        AuditAction::UserRoleChanged,
        AuditAction::UserDisabled,
        AuditAction::UserEnabled,
        AuditAction::JobRetried,
        AuditAction::BookingRefunded,
        AuditAction::BookingCancelled,
        AuditAction::WalletCredited,
        AuditAction::TicketCheckedIn,
    ];

    /// As stored and as the API shows it.
    pub fn as_str(&self) -> &str {
        match self {
            AuditAction::EventCreated => "event.created",
            AuditAction::EventUpdated => "event.updated",
            AuditAction::EventPublished => "event.published",
            AuditAction::EventCancelled => "event.cancelled",
            AuditAction::PerformanceCreated => "performance.created",
            AuditAction::PerformanceUpdated => "performance.updated",
            AuditAction::PerformanceCancelled => "performance.cancelled",
            AuditAction::UnitsBlocked => "units.blocked",
            AuditAction::UnitsUnblocked => "units.unblocked",
            AuditAction::UserRoleChanged => "user.role_changed",
            AuditAction::UserDisabled => "user.disabled",
            AuditAction::UserEnabled => "user.enabled",
            AuditAction::JobRetried => "job.retried",
            AuditAction::BookingRefunded => "booking.refunded",
            AuditAction::BookingCancelled => "booking.cancelled",
            AuditAction::WalletCredited => "wallet.credited",
            AuditAction::TicketCheckedIn => "ticket.checked_in",
            AuditAction::Other(raw) => raw,
        }
    }

    pub fn parse(raw: &str) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|action| action.as_str() == raw)
            .unwrap_or_else(|| AuditAction::Other(raw.to_owned()))
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an audit row is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Event(EventId),
    Performance(PerformanceId),
    Booking(BookingId),
    /// An account (its role, its standing, its wallet).
    User(UserId),
    Job(Uuid),
    /// A kind this version does not know (a newer one wrote it).
    Other {
        kind: String,
        id: Uuid,
    },
}

impl AuditTarget {
    /// As stored (`target_kind`) and as the API shows it.
    pub fn kind(&self) -> &str {
        match self {
            AuditTarget::Event(_) => "event",
            AuditTarget::Performance(_) => "performance",
            AuditTarget::Booking(_) => "booking",
            AuditTarget::User(_) => "user",
            AuditTarget::Job(_) => "job",
            AuditTarget::Other { kind, .. } => kind,
        }
    }

    pub fn id(&self) -> Uuid {
        match self {
            AuditTarget::Event(id) => id.uuid(),
            AuditTarget::Performance(id) => id.uuid(),
            AuditTarget::Booking(id) => id.uuid(),
            AuditTarget::User(id) => id.uuid(),
            AuditTarget::Job(id) | AuditTarget::Other { id, .. } => *id,
        }
    }

    pub fn from_stored(kind: &str, id: Uuid) -> Self {
        match kind {
            "event" => AuditTarget::Event(id.into()),
            "performance" => AuditTarget::Performance(id.into()),
            "booking" => AuditTarget::Booking(id.into()),
            "user" => AuditTarget::User(id.into()),
            "job" => AuditTarget::Job(id),
            _ => AuditTarget::Other {
                kind: kind.to_owned(),
                id,
            },
        }
    }
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_id: Option<UserId>,
    pub action: AuditAction,
    pub target: AuditTarget,
    /// The event the change belongs to, for the organizer's view; `None` for changes
    /// outside any event (roles, credits, jobs).
    pub event_id: Option<EventId>,
    pub request_id: Option<String>,
    pub detail: serde_json::Value,
}

/// An `audit_log` row as both engines read it.
#[derive(Debug)]
pub struct AuditRow {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub target_kind: String,
    pub target_id: Uuid,
    pub event_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub detail: String,
}

impl AuditRow {
    pub fn into_entry(self) -> StoreResult<AuditEntry> {
        Ok(AuditEntry {
            id: self.id,
            at: self.at,
            actor_id: self.actor_id.map(Into::into),
            action: AuditAction::parse(&self.action),
            target: AuditTarget::from_stored(&self.target_kind, self.target_id),
            event_id: self.event_id.map(Into::into),
            request_id: self.request_id,
            detail: serde_json::from_str(&self.detail)
                .map_err(|e| StoreError::Backend(format!("corrupt audit_log.detail: {e}")))?,
        })
    }
}

/// Which part of the audit log to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditScope {
    /// Everything (admins).
    All,
    /// One event's changes, its performances', bookings' and tickets' (its organizer).
    Event(Uuid),
}

// --- tickets -----------------------------------------------------------------------

/// A ticket as the door needs to judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketRecord {
    pub serial: i64,
    pub booking_id: BookingId,
    pub unit_id: UnitId,
    pub performance_id: PerformanceId,
    pub event_id: EventId,
    pub organizer_id: UserId,
    /// As stored (a confirmed booking never expires, so this is what a reader sees).
    pub booking_status: BookingStatus,
    pub checked_in_at: Option<DateTime<Utc>>,
}

/// What checking a ticket in needs of the engine, in one transaction
/// (`usher_app::box_office::check_in`).
#[async_trait]
pub trait CheckInTx: crate::Tx {
    /// Holds off a refund of the ticket's booking until this scan is decided.
    async fn hold_booking(&mut self, serial: i64) -> StoreResult<()>;
    /// Checks the ticket in if its booking is confirmed and nobody did before (one
    /// conditional write); `(booking id, unit id)` when it did.
    async fn admit(
        &mut self,
        serial: i64,
        by: UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(BookingId, UnitId)>>;
    /// The ticket with what the door needs to judge it.
    async fn ticket(&mut self, serial: i64) -> StoreResult<Option<TicketRecord>>;
    async fn insert_audit(&mut self, entry: &AuditEntry) -> StoreResult<()>;
}

/// What a scan at the door did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckIn {
    /// Let in now.
    Admitted {
        at: DateTime<Utc>,
    },
    /// Let in before, at this time.
    Already {
        at: DateTime<Utc>,
    },
    /// The booking is not (or no longer) confirmed: refunded.
    Void,
    Unknown,
}

/// Tickets and check-ins of one performance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckInCount {
    pub performance_id: PerformanceId,
    /// Tickets of confirmed bookings.
    pub valid: u64,
    pub checked_in: u64,
}

// --- the wallet --------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalletEntryKind {
    /// Store credit given by an admin.
    Credit,
    /// A booking paid from the wallet (a negative amount).
    Payment,
    /// A booking's money returned to the wallet.
    Refund,
}

impl std::fmt::Display for WalletEntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl WalletEntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WalletEntryKind::Credit => "credit",
            WalletEntryKind::Payment => "payment",
            WalletEntryKind::Refund => "refund",
        }
    }

    pub fn parse(raw: &str) -> StoreResult<Self> {
        Ok(match raw {
            "credit" => WalletEntryKind::Credit,
            "payment" => WalletEntryKind::Payment,
            "refund" => WalletEntryKind::Refund,
            other => {
                return Err(StoreError::Backend(format!(
                    "unknown wallet entry kind {other:?}"
                )));
            }
        })
    }
}

/// A move of money in or out of a wallet, to be written as one ledger entry. The
/// entry's id is given by the engine while it holds the wallet's row, so that the
/// ledger's order (by id) is the order in which the balance moved, whatever the
/// concurrency ([`WalletMoved`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletMove {
    pub user_id: UserId,
    /// Signed: negative takes money out.
    pub amount: Money,
    pub kind: WalletEntryKind,
    pub reason: String,
    pub booking_id: Option<BookingId>,
    pub payment_id: Option<PaymentId>,
    pub actor_id: Option<UserId>,
    pub at: DateTime<Utc>,
}

/// What a wallet move wrote: the entry's id and the balance right after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletMoved {
    pub entry_id: Uuid,
    pub balance: i64,
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletEntry {
    pub id: Uuid,
    pub user_id: UserId,
    pub amount: Money,
    /// The balance in this currency right after the entry.
    pub balance_after: i64,
    pub kind: WalletEntryKind,
    pub reason: String,
    pub booking_id: Option<BookingId>,
    pub payment_id: Option<PaymentId>,
    pub actor_id: Option<UserId>,
    pub at: DateTime<Utc>,
}

/// A `wallet_entries` row as both engines read it.
#[derive(Debug)]
pub struct WalletEntryRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub currency: String,
    pub amount: i64,
    pub balance_after: i64,
    pub kind: String,
    pub reason: String,
    pub booking_id: Option<Uuid>,
    pub payment_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl WalletEntryRow {
    pub fn into_entry(self) -> StoreResult<WalletEntry> {
        Ok(WalletEntry {
            id: self.id,
            user_id: self.user_id.into(),
            amount: Money::new(
                self.amount,
                crate::inventory::stored_currency(&self.currency)?,
            ),
            balance_after: self.balance_after,
            kind: WalletEntryKind::parse(&self.kind)?,
            reason: self.reason,
            booking_id: self.booking_id.map(Into::into),
            payment_id: self.payment_id.map(Into::into),
            actor_id: self.actor_id.map(Into::into),
            at: self.created_at,
        })
    }
}

/// Store credit an admin gives.
#[derive(Debug, Clone, PartialEq)]
pub struct WalletCredit {
    pub user_id: UserId,
    /// Positive.
    pub amount: Money,
    pub reason: String,
    pub audit: Audit,
    pub now: DateTime<Utc>,
}

/// A balance as stored, parsed.
pub fn balance(amount: i64, currency: &str) -> StoreResult<Money> {
    Ok(Money::new(
        amount,
        crate::inventory::stored_currency(currency)?,
    ))
}

/// The balance a move leaves, or `None` when it would go below zero.
pub fn after_move(balance: i64, amount: i64) -> Option<i64> {
    balance.checked_add(amount).filter(|after| *after >= 0)
}

/// The action an event change is logged as.
pub fn event_action(was: usher_core::EventStatus, is: usher_core::EventStatus) -> AuditAction {
    use usher_core::EventStatus;
    match (was, is) {
        (from, EventStatus::Cancelled) if from != EventStatus::Cancelled => {
            AuditAction::EventCancelled
        }
        (from, EventStatus::Published) if from != EventStatus::Published => {
            AuditAction::EventPublished
        }
        _ => AuditAction::EventUpdated,
    }
}

#[cfg(test)]
mod audit_tests {
    use super::*;

    #[test]
    fn actions_and_targets_read_back_as_written_and_unknown_ones_as_stored() {
        for action in AuditAction::KNOWN {
            assert_eq!(AuditAction::parse(action.as_str()), action);
        }
        assert_eq!(AuditAction::parse("seat.renamed").as_str(), "seat.renamed");
        let id = Uuid::now_v7();
        for kind in ["event", "performance", "booking", "user", "job", "wallet"] {
            let target = AuditTarget::from_stored(kind, id);
            assert_eq!((target.kind(), target.id()), (kind, id));
        }
        assert_eq!(
            AuditTarget::from_stored("booking", id),
            AuditTarget::Booking(id.into())
        );
    }
}
