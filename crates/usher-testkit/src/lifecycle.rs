//! Shorthands for driving the booking lifecycle through the storage contract, as the
//! server does: each is one `Store::transition`.

use chrono::{DateTime, Duration, Utc};
use usher_core::ids::{BookingId, PaymentId};
use uuid::Uuid;

use usher_core::lifecycle::{Actor, Trigger};
use usher_store::{BookingRef, ProviderEvent, Store, TransitionRequest, Transitioned};

/// Checkout with the mock provider, extending the hold to `hold_until` (the first time).
pub async fn checkout(
    store: &dyn Store,
    booking_id: BookingId,
    hold_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Transitioned {
    let trigger = Trigger::Checkout {
        provider: usher_core::lifecycle::Provider::Mock,
        hold_until,
        new_payment_id: PaymentId::generate(),
    };
    run(store, BookingRef::Booking(booking_id), trigger, None, now).await
}

/// The provider reports the payment captured (with this provider event, if any).
pub async fn succeed(
    store: &dyn Store,
    payment_id: Uuid,
    event: Option<ProviderEvent>,
    now: DateTime<Utc>,
) -> Transitioned {
    let trigger = Trigger::PaymentSucceeded {
        payment_id: payment_id.into(),
    };
    run(
        store,
        BookingRef::Payment(payment_id.into()),
        trigger,
        event,
        now,
    )
    .await
}

pub async fn fail(
    store: &dyn Store,
    payment_id: Uuid,
    event: Option<ProviderEvent>,
    now: DateTime<Utc>,
) -> Transitioned {
    let trigger = Trigger::PaymentFailed {
        payment_id: payment_id.into(),
    };
    run(
        store,
        BookingRef::Payment(payment_id.into()),
        trigger,
        event,
        now,
    )
    .await
}

/// The provider reports the money returned.
pub async fn money_returned(
    store: &dyn Store,
    payment_id: Uuid,
    event: Option<ProviderEvent>,
    now: DateTime<Utc>,
) -> Transitioned {
    let trigger = Trigger::PaymentRefunded {
        payment_id: payment_id.into(),
    };
    run(
        store,
        BookingRef::Payment(payment_id.into()),
        trigger,
        event,
        now,
    )
    .await
}

/// A buyer's cancellation or an organizer's refund, with a 24-hour refund cutoff.
pub async fn cancel(
    store: &dyn Store,
    booking_id: BookingId,
    by: Actor,
    now: DateTime<Utc>,
) -> Transitioned {
    let trigger = Trigger::Cancel {
        by,
        refund_cutoff: Duration::hours(24),
        to: usher_core::lifecycle::RefundTo::Origin,
    };
    run(store, BookingRef::Booking(booking_id), trigger, None, now).await
}

/// The buyer pays the whole booking from their wallet.
pub async fn pay_from_wallet(
    store: &dyn Store,
    booking_id: BookingId,
    now: DateTime<Utc>,
) -> Transitioned {
    let trigger = Trigger::PayFromWallet {
        new_payment_id: PaymentId::generate(),
    };
    run(store, BookingRef::Booking(booking_id), trigger, None, now).await
}

/// A buyer's refund to their wallet, whatever paid (with a 24-hour refund cutoff).
pub async fn refund_to_wallet(
    store: &dyn Store,
    booking_id: BookingId,
    now: DateTime<Utc>,
) -> Transitioned {
    let trigger = Trigger::Cancel {
        by: Actor::Buyer,
        refund_cutoff: Duration::hours(24),
        to: usher_core::lifecycle::RefundTo::Wallet,
    };
    run(store, BookingRef::Booking(booking_id), trigger, None, now).await
}

/// The booking's event or performance was cancelled.
pub async fn sale_cancelled(
    store: &dyn Store,
    booking_id: BookingId,
    now: DateTime<Utc>,
) -> Transitioned {
    run(
        store,
        BookingRef::Booking(booking_id),
        Trigger::SaleCancelled,
        None,
        now,
    )
    .await
}

/// A Stripe-like provider event with this id.
pub fn provider_event(id: &str, kind: &str) -> Option<ProviderEvent> {
    Some(ProviderEvent {
        provider: usher_core::lifecycle::Provider::Stripe,
        event_id: id.into(),
        kind: kind.into(),
    })
}

async fn run(
    store: &dyn Store,
    booking: BookingRef,
    trigger: Trigger,
    event: Option<ProviderEvent>,
    now: DateTime<Utc>,
) -> Transitioned {
    let request = TransitionRequest {
        provider_event: event,
        ..TransitionRequest::new(booking, trigger, now)
    };
    usher_app::payments::transition(store, request)
        .await
        .expect("transition")
}
