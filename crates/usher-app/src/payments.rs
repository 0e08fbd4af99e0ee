//! The booking and payment lifecycle as a use case: checkout, a payment's success,
//! failure or refund, a cancellation or refund, expiry, a cancelled sale.
//!
//! The rules live in the core's [`decide`]; the sequence that surrounds it — record the
//! provider event, lock the booking and its payments, read the facts, decide, apply,
//! queue the outbox jobs — lives here, once, in one transaction opened through the
//! store ([`Store::begin_transition`]). Each engine only says how to do each step in
//! its SQL ([`LifecycleTx`]). The lock order is the one every PostgreSQL statement
//! follows: the booking, then its payments, then its units in id order.

use chrono::{DateTime, Utc};
use usher_core::ids::BookingId;

use usher_core::lifecycle::{
    Decision, Email, Facts, Outcome, Provider, Refusal, Trigger, UnitChange, decide,
};
use usher_core::{Money, UnitState};
use usher_store::box_office::{AuditAction, AuditTarget, WalletEntryKind, WalletMove};
use usher_store::lifecycle::BookingChange;
use usher_store::payments::JobKind;
use usher_store::{
    BookingRef, ChangeSet, LifecycleTx, LiveChange, Store, StoreError, StoreResult,
    TransitionRequest, Transitioned,
};

/// The one way a booking's payment state changes. In one transaction: records the
/// provider event (a replay changes nothing), locks the booking and its payments, lets
/// [`decide`] rule, and applies the decision with its outbox jobs; then publishes the
/// live seat map's moves.
pub async fn transition(
    store: &dyn Store,
    request: TransitionRequest,
) -> StoreResult<Transitioned> {
    let mut tx = store.begin_transition().await?;
    let ran = match run(tx.as_mut(), &request).await {
        Ok(ran) => ran,
        Err(error) => {
            let _ = tx.rollback().await;
            return Err(error);
        }
    };
    if ran.commit {
        tx.commit().await?;
        store.live_bus().publish(ran.live);
    } else {
        tx.rollback().await?;
    }
    Ok(ran.transitioned)
}

/// What [`run`] did, for [`transition`] to finish.
#[derive(Debug)]
struct Ran {
    transitioned: Transitioned,
    /// False when nothing was written, so the engine rolls back and releases its locks
    /// at once.
    commit: bool,
    /// For the live bus, once committed.
    live: Vec<LiveChange>,
}

/// Runs one transition inside the open transaction.
async fn run(tx: &mut dyn LifecycleTx, request: &TransitionRequest) -> StoreResult<Ran> {
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
    let Some(booking_id) = booking_of(tx, request.booking).await? else {
        return Ok(nothing(Outcome::Refused(Refusal::UnknownPayment), recorded));
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
    if !wallet_pays(tx, booking_id, &decision, total, now).await? {
        return Ok(nothing(
            Outcome::Refused(Refusal::InsufficientFunds),
            recorded,
        ));
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
    audit_transition(tx, request, &facts, &decision, &booking).await?;
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

/// The booking a request is about; `None` for a payment nobody knows.
async fn booking_of(
    tx: &mut dyn LifecycleTx,
    reference: BookingRef,
) -> StoreResult<Option<BookingId>> {
    match reference {
        BookingRef::Booking(id) => Ok(Some(id)),
        BookingRef::Payment(payment_id) => tx.booking_of_payment(payment_id).await,
    }
}

/// When the decision has the wallet pay, debits it (one conditional write); false when
/// the balance cannot cover the booking (nothing written).
async fn wallet_pays(
    tx: &mut dyn LifecycleTx,
    booking_id: BookingId,
    decision: &Decision,
    total: Money,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let (true, Some(payment)) = (decision.wallet_debit, decision.new_payment) else {
        return Ok(true);
    };
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
    Ok(tx.wallet_move(&debit).await?.is_some())
}

/// The audit row of a refund or a cancellation someone asked for.
async fn audit_transition(
    tx: &mut dyn LifecycleTx,
    request: &TransitionRequest,
    facts: &Facts,
    decision: &Decision,
    booking: &usher_core::Booking,
) -> StoreResult<()> {
    let action = match decision.outcome {
        Outcome::Refunded | Outcome::PaymentRefunded | Outcome::MoneyReturned { .. } => {
            AuditAction::BookingRefunded
        }
        Outcome::Released => AuditAction::BookingCancelled,
        _ => return Ok(()),
    };
    let (Some(audit), true) = (&request.audit, decision.changes_anything()) else {
        return Ok(());
    };
    let audit = audit
        .clone()
        .note("from", facts.status.as_str())
        .note("to", booking.status.as_str())
        .note("refunded_to_wallet", !decision.wallet_refunds.is_empty());
    let entry = audit.entry(action, AuditTarget::Booking(booking.id), None, request.now);
    tx.insert_audit(&entry).await
}

/// Applies the decision: the booking, its units, its payments, the wallet's refunds
/// and the outbox's jobs. The units moved, for the live seat maps.
async fn apply(
    tx: &mut dyn LifecycleTx,
    booking_id: BookingId,
    facts: &Facts,
    decision: &Decision,
    total: Money,
    request: &TransitionRequest,
) -> StoreResult<ChangeSet> {
    change_booking(tx, booking_id, facts, decision, request.now).await?;
    let moved = move_units(tx, booking_id, decision, request.now).await?;
    record_payments(tx, booking_id, decision, total, request).await?;
    refund_to_wallet(tx, booking_id, decision, request).await?;
    queue_jobs(tx, booking_id, decision, request.now).await?;
    Ok(moved)
}

/// The booking's new status, payer, hold time or checkout mark (the row is locked, so
/// the conditional write must take).
async fn change_booking(
    tx: &mut dyn LifecycleTx,
    booking_id: BookingId,
    facts: &Facts,
    decision: &Decision,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let change = BookingChange {
        from: facts.status,
        to: decision.status.unwrap_or(facts.status),
        paid_by: decision.paid_by,
        held_until: decision.held_until,
        checkout_started: decision.checkout_started,
    };
    let changes = change.to != change.from
        || change.paid_by.is_some()
        || change.held_until.is_some()
        || change.checkout_started;
    if changes && !tx.update_booking(booking_id, &change, now).await? {
        // The booking row is locked: this cannot happen unless the lock order is broken.
        return Err(StoreError::Backend(format!(
            "booking {booking_id} left {} underneath a locked transition",
            facts.status
        )));
    }
    if let Some(until) = decision.held_until {
        tx.extend_units(booking_id, until).await?;
    }
    Ok(())
}

/// Sells the booking's units (and numbers their tickets) or releases them.
async fn move_units(
    tx: &mut dyn LifecycleTx,
    booking_id: BookingId,
    decision: &Decision,
    now: DateTime<Utc>,
) -> StoreResult<ChangeSet> {
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
    Ok(moved)
}

/// A new payment (a checkout, or the wallet's), and every payment's new status.
async fn record_payments(
    tx: &mut dyn LifecycleTx,
    booking_id: BookingId,
    decision: &Decision,
    total: Money,
    request: &TransitionRequest,
) -> StoreResult<()> {
    let now = request.now;
    let provider = match &request.trigger {
        Trigger::Checkout { provider, .. } => Some(provider),
        Trigger::PayFromWallet { .. } => Some(&Provider::Wallet),
        _ => None,
    };
    if let (Some(payment), Some(provider)) = (decision.new_payment, provider) {
        tx.insert_payment(booking_id, payment, provider, total, now)
            .await?;
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
    Ok(())
}

/// Payments the decision refunds to the buyer's wallet, credited at once.
async fn refund_to_wallet(
    tx: &mut dyn LifecycleTx,
    booking_id: BookingId,
    decision: &Decision,
    request: &TransitionRequest,
) -> StoreResult<()> {
    if decision.wallet_refunds.is_empty() {
        return Ok(());
    }
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
            at: request.now,
        };
        if tx.wallet_move(&credit).await?.is_none() {
            return Err(StoreError::Backend(format!(
                "a refund of {payment_id} to the wallet was refused"
            )));
        }
    }
    Ok(())
}

/// The outbox's jobs: refunds at the provider, and the buyer's emails.
async fn queue_jobs(
    tx: &mut dyn LifecycleTx,
    booking_id: BookingId,
    decision: &Decision,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    for payment_id in &decision.refunds {
        let job = serde_json::json!({ "payment_id": payment_id });
        tx.enqueue(JobKind::Refund, job, now).await?;
    }
    for email in &decision.emails {
        let kind = match email {
            Email::Confirmation => JobKind::ConfirmationEmail,
            Email::SaleCancelled => JobKind::CancellationEmail,
        };
        tx.enqueue(kind, serde_json::json!({ "booking_id": booking_id }), now)
            .await?;
    }
    Ok(())
}
