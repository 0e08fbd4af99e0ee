//! Running the booking lifecycle ([`usher_core::lifecycle`]) inside one transaction.
//!
//! The rules live in the core's [`decide`]; the sequence that surrounds it — record the
//! provider event, lock the booking and its payments, read the facts, decide, apply,
//! queue the outbox jobs — lives here, once. Each engine only says how to do each step
//! in its SQL ([`LifecycleTx`]) and commits or rolls back. The lock order is the one
//! every PostgreSQL statement here follows: the booking, then its payments, then its
//! units in id order.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use usher_core::lifecycle::{
    Decision, Email, Facts, NewPayment, Outcome, PaymentStatus, Refusal, Trigger, UnitChange,
    WALLET, decide,
};
use usher_core::{Booking, BookingStatus, Money, UnitState};

use crate::box_office::{Audit, AuditEntry, WalletEntryKind, WalletMove, WalletMoved, action};
use crate::live::{ChangeSet, LiveChange};
use crate::payments::{Payment, ProviderEvent, job_kind};
use crate::{StoreError, StoreResult};

/// Which booking a transition is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingRef {
    Booking(Uuid),
    /// The booking this payment is for.
    Payment(Uuid),
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
    pub paid_by: Option<Uuid>,
    pub held_until: Option<DateTime<Utc>>,
    pub checkout_started: bool,
}

/// The steps of a transition in one engine's SQL, all inside one open transaction.
#[async_trait]
pub trait LifecycleTx: Send {
    /// Records a provider event; false when it was recorded before (a replay).
    async fn record_event(
        &mut self,
        event: &ProviderEvent,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    async fn booking_of_payment(&mut self, payment_id: Uuid) -> StoreResult<Option<Uuid>>;
    /// Locks the booking, then its payments, and reads the facts (`units_takeable` is
    /// left false: see [`LifecycleTx::units_takeable`]).
    async fn lock_facts(&mut self, booking_id: Uuid) -> StoreResult<Option<(Facts, Money)>>;
    /// Locks the booking's units (in id order) and says whether each is still held by
    /// it or free to take again.
    async fn units_takeable(&mut self, booking_id: Uuid, now: DateTime<Utc>) -> StoreResult<bool>;
    /// A conditional update on `change.from`; false when the row was not in that status.
    async fn update_booking(
        &mut self,
        booking_id: Uuid,
        change: &BookingChange,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// The booking's units follow the hold's new end.
    async fn extend_units(&mut self, booking_id: Uuid, until: DateTime<Utc>) -> StoreResult<()>;
    /// Returns the units sold, as `(performance id, unit id)`.
    async fn sell_units(&mut self, booking_id: Uuid) -> StoreResult<Vec<(Uuid, Uuid)>>;
    /// Frees what the booking still holds or owns (a unit re-taken by someone else is
    /// left alone). Returns the units freed, as `(performance id, unit id)`.
    async fn release_units(&mut self, booking_id: Uuid) -> StoreResult<Vec<(Uuid, Uuid)>>;
    /// Numbers and logs the changes for the live feed (see [`crate::live`]).
    async fn record_live(
        &mut self,
        changes: ChangeSet,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<LiveChange>>;
    /// A conditional update on `from`; false when the payment was not in that status.
    async fn set_payment_status(
        &mut self,
        payment_id: Uuid,
        from: PaymentStatus,
        to: PaymentStatus,
        provider_payment_ref: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    async fn insert_payment(
        &mut self,
        booking_id: Uuid,
        payment: NewPayment,
        provider: &str,
        amount: Money,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn enqueue(
        &mut self,
        kind: &str,
        payload: serde_json::Value,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn load_booking(&mut self, booking_id: Uuid) -> StoreResult<Booking>;
    async fn load_payment(&mut self, payment_id: Uuid) -> StoreResult<Payment>;
    /// Numbers a ticket for each unit of the booking (those not numbered yet).
    async fn issue_tickets(&mut self, booking_id: Uuid, now: DateTime<Utc>) -> StoreResult<()>;
    /// Moves the wallet's balance by `entry.amount` in one conditional write and appends
    /// the entry. `None` (and nothing written) when the balance would go below zero.
    async fn wallet_move(&mut self, entry: &WalletMove) -> StoreResult<Option<WalletMoved>>;
    /// Appends an audit row; a `booking` target without an event is filed under the
    /// booking's event.
    async fn insert_audit(&mut self, entry: &AuditEntry) -> StoreResult<()>;
}

/// What [`run_transition`] did, for the engine to finish.
#[derive(Debug)]
pub struct Ran {
    pub transitioned: Transitioned,
    /// False when nothing was written, so the engine rolls back and releases its locks
    /// at once.
    pub commit: bool,
    /// For the live bus, once committed.
    pub live: Vec<LiveChange>,
}

/// Runs one transition inside the engine's open transaction.
pub async fn run_transition(
    tx: &mut dyn LifecycleTx,
    request: &TransitionRequest,
) -> StoreResult<Ran> {
    let now = request.now;
    let nothing = |outcome, commit| Ran {
        transitioned: Transitioned {
            outcome,
            booking: None,
            payment: None,
        },
        commit,
        live: Vec::new(),
    };
    if let Some(event) = &request.provider_event
        && !tx.record_event(event, now).await?
    {
        return Ok(nothing(Outcome::Duplicate, false));
    }
    // From here on, a recorded provider event must be committed even if nothing else
    // changes, so that its replay is recognised.
    let recorded = request.provider_event.is_some();
    let booking_id = match request.booking {
        BookingRef::Booking(id) => id,
        BookingRef::Payment(payment_id) => match tx.booking_of_payment(payment_id).await? {
            Some(id) => id,
            None => {
                return Ok(nothing(Outcome::Refused(Refusal::UnknownPayment), recorded));
            }
        },
    };
    let Some((mut facts, total)) = tx.lock_facts(booking_id).await? else {
        return Ok(nothing(Outcome::Refused(Refusal::NoSuchBooking), recorded));
    };
    if matches!(
        request.trigger,
        Trigger::PaymentSucceeded { .. } | Trigger::PayFromWallet { .. }
    ) {
        facts.units_takeable = tx.units_takeable(booking_id, now).await?;
    }
    let decision = decide(&facts, &request.trigger, now);
    // The wallet pays first: when it cannot, nothing else is written.
    if decision.wallet_debit
        && let Some(payment) = decision.new_payment
    {
        let buyer = tx.load_booking(booking_id).await?.user_id;
        let debit = WalletMove {
            user_id: buyer,
            amount: Money::new(-total.amount, total.currency),
            kind: WalletEntryKind::Payment,
            reason: "Paid for a booking".into(),
            booking_id: Some(booking_id),
            payment_id: Some(payment.id),
            actor_id: Some(buyer),
            at: now,
        };
        if tx.wallet_move(&debit).await?.is_none() {
            return Ok(nothing(
                Outcome::Refused(Refusal::InsufficientFunds),
                recorded,
            ));
        }
    }
    let moved = apply(tx, booking_id, &facts, &decision, total, request).await?;
    let live = if moved.is_empty() {
        Vec::new()
    } else {
        tx.record_live(moved, now).await?
    };
    let booking = tx.load_booking(booking_id).await?;
    let payment = match decision.outcome {
        Outcome::CheckoutOpen { payment_id, .. } => Some(tx.load_payment(payment_id).await?),
        _ => None,
    };
    let commit = recorded || decision.changes_anything();
    if let Some(audit) = &request.audit
        && decision.changes_anything()
    {
        let action = match decision.outcome {
            Outcome::Refunded | Outcome::PaymentRefunded | Outcome::MoneyReturned { .. } => {
                Some(action::BOOKING_REFUNDED)
            }
            Outcome::Released => Some(action::BOOKING_CANCELLED),
            _ => None,
        };
        if let Some(action) = action {
            let audit = audit
                .clone()
                .note("from", facts.status.as_str())
                .note("to", booking.status.as_str())
                .note("refunded_to_wallet", !decision.wallet_refunds.is_empty());
            tx.insert_audit(&audit.entry(action, ("booking", booking_id), None, now))
                .await?;
        }
    }
    Ok(Ran {
        transitioned: Transitioned {
            outcome: decision.outcome,
            booking: Some(booking),
            payment,
        },
        commit,
        live,
    })
}

async fn apply(
    tx: &mut dyn LifecycleTx,
    booking_id: Uuid,
    facts: &Facts,
    decision: &Decision,
    total: Money,
    request: &TransitionRequest,
) -> StoreResult<ChangeSet> {
    let now = request.now;
    let change = BookingChange {
        from: facts.status,
        to: decision.status.unwrap_or(facts.status),
        paid_by: decision.paid_by,
        held_until: decision.held_until,
        checkout_started: decision.checkout_started,
    };
    if (change.to != change.from
        || change.paid_by.is_some()
        || change.held_until.is_some()
        || change.checkout_started)
        && !tx.update_booking(booking_id, &change, now).await?
    {
        // The booking row is locked: this cannot happen unless the lock order is broken.
        return Err(StoreError::Backend(format!(
            "booking {booking_id} left {} underneath a locked transition",
            facts.status
        )));
    }
    if let Some(until) = decision.held_until {
        tx.extend_units(booking_id, until).await?;
    }
    let mut moved = ChangeSet::new();
    match decision.units {
        UnitChange::Keep => {}
        UnitChange::Sell => {
            moved.extend(UnitState::Sold, tx.sell_units(booking_id).await?);
            tx.issue_tickets(booking_id, now).await?;
        }
        UnitChange::Release => {
            moved.extend(UnitState::Available, tx.release_units(booking_id).await?);
        }
    }
    match (decision.new_payment, &request.trigger) {
        (Some(payment), Trigger::Checkout { provider, .. }) => {
            tx.insert_payment(booking_id, payment, provider, total, now)
                .await?;
        }
        (Some(payment), Trigger::PayFromWallet { .. }) => {
            tx.insert_payment(booking_id, payment, WALLET, total, now)
                .await?;
        }
        _ => {}
    }
    for &(payment_id, from, to) in &decision.payments {
        // The provider's id of the capture is kept from the moment money arrives.
        let reference = (!from.captured() && to.captured())
            .then_some(request.provider_payment_ref.as_deref())
            .flatten();
        if !tx
            .set_payment_status(payment_id, from, to, reference, now)
            .await?
        {
            return Err(StoreError::Backend(format!(
                "payment {payment_id} left {} underneath a locked transition",
                from.as_str()
            )));
        }
    }
    if !decision.wallet_refunds.is_empty() {
        let buyer = tx.load_booking(booking_id).await?.user_id;
        for &payment_id in &decision.wallet_refunds {
            let payment = tx.load_payment(payment_id).await?;
            let credit = WalletMove {
                user_id: buyer,
                amount: payment.amount,
                kind: WalletEntryKind::Refund,
                reason: "Refund of a booking".into(),
                booking_id: Some(booking_id),
                payment_id: Some(payment_id),
                actor_id: request.audit.as_ref().and_then(|a| a.actor_id),
                at: now,
            };
            if tx.wallet_move(&credit).await?.is_none() {
                return Err(StoreError::Backend(format!(
                    "a refund of {payment_id} to the wallet was refused"
                )));
            }
        }
    }
    for payment_id in &decision.refunds {
        tx.enqueue(
            job_kind::REFUND,
            serde_json::json!({ "payment_id": payment_id }),
            now,
        )
        .await?;
    }
    for email in &decision.emails {
        let kind = match email {
            Email::Confirmation => job_kind::CONFIRMATION_EMAIL,
            Email::SaleCancelled => job_kind::CANCELLATION_EMAIL,
        };
        tx.enqueue(kind, serde_json::json!({ "booking_id": booking_id }), now)
            .await?;
    }
    Ok(moved)
}
