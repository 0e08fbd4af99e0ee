//! The port the booking lifecycle runs on ([`LifecycleTx`]) and its requests. The rules
//! live in the core's `usher_core::lifecycle::decide`; the use case that runs them in
//! one transaction is `usher_app::payments::transition`. The lock order is the one every
//! PostgreSQL statement follows: the booking, then its payments, then its units in id
//! order.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use usher_core::ids::{BookingId, PaymentId, PerformanceId, UnitId};

use usher_core::lifecycle::{Facts, NewPayment, Outcome, PaymentStatus, Trigger};
use usher_core::{Booking, BookingStatus, Money};

use crate::StoreResult;
use crate::box_office::{Audit, AuditEntry, WalletMove, WalletMoved};
use crate::live::{ChangeSet, LiveChange};
use crate::payments::{JobKind, Payment, Provider, ProviderEvent};

/// Which booking a transition is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingRef {
    Booking(BookingId),
    /// The booking this payment is for.
    Payment(PaymentId),
}

#[derive(Debug, Clone)]
pub struct TransitionRequest {
    pub booking: BookingRef,
    pub trigger: Trigger,
    pub now: DateTime<Utc>,
    /// The provider's notification behind it, recorded in the same transaction: a
    /// replay of the same event changes nothing.
    pub provider_event: Option<ProviderEvent>,
    /// The provider's id of the captured payment, kept with a success for refunds.
    pub provider_payment_ref: Option<String>,
    /// Who asked, for the audit log: a change made with this set writes its row
    /// (`booking.refunded`, `booking.cancelled`) in the same transaction.
    pub audit: Option<Audit>,
}

impl TransitionRequest {
    pub fn new(booking: BookingRef, trigger: Trigger, now: DateTime<Utc>) -> Self {
        Self {
            booking,
            trigger,
            now,
            provider_event: None,
            provider_payment_ref: None,
            audit: None,
        }
    }

    pub fn audited(mut self, audit: Audit) -> Self {
        self.audit = Some(audit);
        self
    }
}

/// What a transition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transitioned {
    pub outcome: Outcome,
    /// The booking as it is now; `None` when there is no such booking or payment, or the
    /// provider event was a replay.
    pub booking: Option<Booking>,
    /// At checkout: the open payment.
    pub payment: Option<Payment>,
}

/// The booking's row as a transition changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingChange {
    pub from: BookingStatus,
    pub to: BookingStatus,
    pub paid_by: Option<PaymentId>,
    pub held_until: Option<DateTime<Utc>>,
    pub checkout_started: bool,
}

/// The steps of a transition in one engine's SQL, all inside one open transaction.
#[async_trait]
pub trait LifecycleTx: crate::Tx {
    /// Records a provider event; false when it was recorded before (a replay).
    async fn record_event(
        &mut self,
        event: &ProviderEvent,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    async fn booking_of_payment(&mut self, payment_id: PaymentId)
    -> StoreResult<Option<BookingId>>;
    /// Locks the booking, then its payments, and reads the facts (`units_takeable` is
    /// left false: see [`LifecycleTx::units_takeable`]).
    async fn lock_facts(&mut self, booking_id: BookingId) -> StoreResult<Option<(Facts, Money)>>;
    /// Locks the booking's units (in id order) and says whether each is still held by
    /// it or free to take again.
    async fn units_takeable(
        &mut self,
        booking_id: BookingId,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// A conditional update on `change.from`; false when the row was not in that status.
    async fn update_booking(
        &mut self,
        booking_id: BookingId,
        change: &BookingChange,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// The booking's units follow the hold's new end.
    async fn extend_units(
        &mut self,
        booking_id: BookingId,
        until: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Returns the units sold, as `(performance id, unit id)`.
    async fn sell_units(
        &mut self,
        booking_id: BookingId,
    ) -> StoreResult<Vec<(PerformanceId, UnitId)>>;
    /// Frees what the booking still holds or owns (a unit re-taken by someone else is
    /// left alone). Returns the units freed, as `(performance id, unit id)`.
    async fn release_units(
        &mut self,
        booking_id: BookingId,
    ) -> StoreResult<Vec<(PerformanceId, UnitId)>>;
    /// Numbers and logs the changes for the live feed (see [`crate::live`]).
    async fn record_live(
        &mut self,
        changes: ChangeSet,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<LiveChange>>;
    /// A conditional update on `from`; false when the payment was not in that status.
    async fn set_payment_status(
        &mut self,
        payment_id: PaymentId,
        from: PaymentStatus,
        to: PaymentStatus,
        provider_payment_ref: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    async fn insert_payment(
        &mut self,
        booking_id: BookingId,
        payment: NewPayment,
        provider: &Provider,
        amount: Money,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn enqueue(
        &mut self,
        kind: JobKind,
        payload: serde_json::Value,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn load_booking(&mut self, booking_id: BookingId) -> StoreResult<Booking>;
    async fn load_payment(&mut self, payment_id: PaymentId) -> StoreResult<Payment>;
    /// Numbers a ticket for each unit of the booking (those not numbered yet).
    async fn issue_tickets(&mut self, booking_id: BookingId, now: DateTime<Utc>)
    -> StoreResult<()>;
    /// Moves the wallet's balance by `entry.amount` in one conditional write and appends
    /// the entry. `None` (and nothing written) when the balance would go below zero.
    async fn wallet_move(&mut self, entry: &WalletMove) -> StoreResult<Option<WalletMoved>>;
    /// Appends an audit row; a `booking` target without an event is filed under the
    /// booking's event.
    async fn insert_audit(&mut self, entry: &AuditEntry) -> StoreResult<()>;
}
