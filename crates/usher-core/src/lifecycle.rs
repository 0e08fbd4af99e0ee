//! The booking and payment lifecycle as one pure state machine.
//!
//! Given what is known about a booking (its status, its payments, whether its sale is
//! still open, whether its units can still be had) and something that happened to it
//! (checkout, a payment's success, failure or refund, a cancellation, expiry, the event
//! or performance being cancelled), [`decide`] says what changes and which side effects
//! follow. Nothing here touches a database: the storage engines lock what [`Facts`]
//! describes, call [`decide`], apply the [`Decision`] and commit, in one transaction.
//!
//! The money rules it enforces:
//! - a booking is confirmed by at most one payment (`paid_by`); any other payment that
//!   succeeds for it is refunded and the booking stays as it is;
//! - refunding a payment that did not confirm the booking never touches the booking;
//! - no buyer pays for nothing: a payment that cannot buy its units (they went to
//!   someone else, the sale was cancelled, the performance started) is refunded;
//! - checkout extends the hold once; a repeat while a payment is open returns that
//!   payment;
//! - buyers may refund until a cutoff before the performance; organizers always;
//! - a wallet payment is taken and confirms the booking in one step (the engine refuses
//!   the whole transition when the balance does not cover it); money paid from the
//!   wallet, or asked back to it, returns to the wallet at once, never to a provider.

use std::fmt;

use crate::PaymentId;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::ParseError;
use crate::inventory::BookingStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Checkout opened; no money yet.
    Pending,
    /// The money was captured.
    Succeeded,
    /// The payment failed or its checkout expired; it may still succeed later (some
    /// methods settle asynchronously).
    Failed,
    /// Captured, and a refund is queued.
    RefundPending,
    /// The money went back.
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::RefundPending => "refund_pending",
            PaymentStatus::Refunded => "refunded",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        Ok(match raw {
            "pending" => PaymentStatus::Pending,
            "succeeded" => PaymentStatus::Succeeded,
            "failed" => PaymentStatus::Failed,
            "refund_pending" => PaymentStatus::RefundPending,
            "refunded" => PaymentStatus::Refunded,
            other => return Err(ParseError::new(format!("unknown payment status {other:?}"))),
        })
    }

    /// Whether money was captured by this payment (whatever has happened to it since).
    pub fn captured(self) -> bool {
        matches!(
            self,
            PaymentStatus::Succeeded | PaymentStatus::RefundPending | PaymentStatus::Refunded
        )
    }
}

/// Who took a payment's money: a card provider, or the buyer's wallet (store credit).
/// Stored with each payment; a payment keeps its provider after the configuration
/// changes (a Stripe payment made before switching to the mock is still Stripe's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum Provider {
    /// The built-in stand-in: a page of its own completes the payment.
    Mock,
    Stripe,
    Wallet,
    /// A provider this version does not know (a newer one stored it).
    Other(String),
}

impl Provider {
    /// As stored and as the API shows it.
    pub fn as_str(&self) -> &str {
        match self {
            Provider::Mock => "mock",
            Provider::Stripe => "stripe",
            Provider::Wallet => "wallet",
            Provider::Other(raw) => raw,
        }
    }

    pub fn parse(raw: &str) -> Self {
        match raw {
            "mock" => Provider::Mock,
            "stripe" => Provider::Stripe,
            "wallet" => Provider::Wallet,
            other => Provider::Other(other.to_owned()),
        }
    }
}

impl From<String> for Provider {
    fn from(raw: String) -> Self {
        Provider::parse(&raw)
    }
}

impl From<Provider> for String {
    fn from(provider: Provider) -> Self {
        provider.as_str().to_owned()
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a refund's money goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefundTo {
    /// Back the way it came: the provider for card payments, the wallet for wallet ones.
    #[default]
    Origin,
    /// To the buyer's wallet whatever paid (no provider refund).
    Wallet,
}

/// One payment of the booking, as the lifecycle needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFacts {
    pub id: PaymentId,
    pub status: PaymentStatus,
    pub provider: Provider,
    /// When its checkout closes.
    pub expires_at: DateTime<Utc>,
}

/// Whether the booking's performance can still be sold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sale {
    Open,
    /// The event or the performance was cancelled.
    Cancelled,
    /// The organizer set the event back to draft: nothing of it is sold until it is
    /// published again, and money that arrives meanwhile goes back.
    Withdrawn,
}

impl Sale {
    /// Why nothing new may be paid for, unless the sale is open.
    fn refusal(self) -> Option<Refusal> {
        match self {
            Sale::Open => None,
            Sale::Cancelled => Some(Refusal::SaleCancelled),
            Sale::Withdrawn => Some(Refusal::SaleWithdrawn),
        }
    }
}

/// Everything [`decide`] looks at, read (and locked) by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// As stored (a held booking past `held_until` is still `Held` here).
    pub status: BookingStatus,
    pub held_until: DateTime<Utc>,
    /// The payment that confirmed the booking, if one did.
    pub paid_by: Option<PaymentId>,
    /// Whether checkout has already extended the hold.
    pub checkout_started: bool,
    pub sale: Sale,
    pub starts_at: DateTime<Utc>,
    /// Whether every unit of the booking is still held by it or free to take again.
    /// Engines compute it (under lock) only for a payment's success.
    pub units_takeable: bool,
    pub payments: Vec<PaymentFacts>,
}

impl Facts {
    /// The status a reader sees at `now`.
    pub fn status_at(&self, now: DateTime<Utc>) -> BookingStatus {
        if self.status == BookingStatus::Held && self.held_until <= now {
            BookingStatus::Expired
        } else {
            self.status
        }
    }

    fn payment(&self, id: PaymentId) -> Option<&PaymentFacts> {
        self.payments.iter().find(|p| p.id == id)
    }
}

/// Who asks for a cancellation or refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The buyer: bound by the refund cutoff.
    Buyer,
    /// The event's organizer or an admin: may refund at any time.
    Organizer,
}

/// What happened to the booking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The buyer starts paying. `hold_until` is how far checkout may extend the hold
    /// (already bounded by the caller); `new_payment_id` is used if a payment is opened.
    Checkout {
        provider: Provider,
        hold_until: DateTime<Utc>,
        new_payment_id: PaymentId,
    },
    PaymentSucceeded {
        payment_id: PaymentId,
    },
    /// The buyer pays the whole booking from their wallet: a payment is opened, taken and
    /// confirms the booking at once (`new_payment_id`).
    PayFromWallet {
        new_payment_id: PaymentId,
    },
    /// The payment failed or its checkout expired.
    PaymentFailed {
        payment_id: PaymentId,
    },
    /// The provider says the money went back (our refund, or one made elsewhere).
    PaymentRefunded {
        payment_id: PaymentId,
    },
    /// `DELETE /v1/bookings/{id}` (buyer) or a refund asked by an organizer or admin.
    Cancel {
        by: Actor,
        refund_cutoff: Duration,
        to: RefundTo,
    },
    /// The hold ran out.
    Expire,
    /// The event or performance was cancelled.
    SaleCancelled,
}

/// What happens to the booking's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitChange {
    Keep,
    /// Held (or re-taken) → sold to this booking.
    Sell,
    /// Whatever the booking still holds or owns goes back on sale.
    Release,
}

/// A side effect queued in the same transaction (the outbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Email {
    Confirmation,
    /// The event or performance was cancelled and the money is on its way back.
    SaleCancelled,
}

/// Why nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Checkout or cancellation of a booking that is not held (in this status).
    NotHeld(BookingStatus),
    /// A refund of a booking that is not confirmed (in this status).
    NotRefundable(BookingStatus),
    /// The event or performance is cancelled.
    SaleCancelled,
    /// The event was set back to draft.
    SaleWithdrawn,
    /// The performance starts within the refund cutoff; only organizers may refund.
    RefundClosed,
    /// The performance has started.
    SaleClosed,
    UnknownPayment,
    NoSuchBooking,
    /// The wallet's balance in the booking's currency does not cover it (decided by the
    /// engine, under the wallet's row lock).
    InsufficientFunds,
}

/// What the transition amounted to, for the caller's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Checkout: this payment is open (new, or the one already open: `reused`).
    CheckoutOpen {
        payment_id: PaymentId,
        reused: bool,
    },
    /// The payment confirmed the booking: units sold, email queued.
    Confirmed,
    /// The payment (or the provider event) was handled before; nothing changed.
    Duplicate,
    /// Another payment already confirmed the booking: this one is refunded, the
    /// booking stays as it is.
    ExtraPaymentRefunded,
    /// The payment cannot buy the booking (units gone, sale cancelled or closed, booking
    /// cancelled): it is refunded and the booking reads `refunded`.
    PaymentRefunded,
    /// The payment failed; the hold runs on until it expires.
    PaymentFailed,
    /// The money of a payment came back; `booking_refunded` when it was the payment
    /// that confirmed the booking (a refund made in the provider's dashboard).
    MoneyReturned {
        booking_refunded: bool,
    },
    /// A confirmed booking was refunded: units back on sale, refunds queued.
    Refunded,
    /// A hold was released (cancelled or expired).
    Released,
    /// Nothing to do (already in the state asked for).
    Unchanged,
    Refused(Refusal),
}

/// A payment to open at checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewPayment {
    pub id: PaymentId,
    pub expires_at: DateTime<Utc>,
}

/// Everything an engine applies, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// The booking's new stored status, if it changes.
    pub status: Option<BookingStatus>,
    /// Set when this payment confirms the booking.
    pub paid_by: Option<PaymentId>,
    /// The hold's new end (checkout's extension).
    pub held_until: Option<DateTime<Utc>>,
    /// Checkout extended the hold; it will not extend it again.
    pub checkout_started: bool,
    pub units: UnitChange,
    /// Payments whose status changes: (id, from, to). Engines apply each as a
    /// conditional update on `from`.
    pub payments: Vec<(PaymentId, PaymentStatus, PaymentStatus)>,
    pub new_payment: Option<NewPayment>,
    /// Payments whose refund is queued (each is also moved to `RefundPending`).
    pub refunds: Vec<PaymentId>,
    /// Payments whose money goes back to the buyer's wallet now (each is also moved to
    /// `Refunded`).
    pub wallet_refunds: Vec<PaymentId>,
    /// The new payment ([`Decision::new_payment`]) is taken from the buyer's wallet.
    pub wallet_debit: bool,
    pub emails: Vec<Email>,
}

impl Decision {
    fn just(outcome: Outcome) -> Self {
        Self {
            outcome,
            status: None,
            paid_by: None,
            held_until: None,
            checkout_started: false,
            units: UnitChange::Keep,
            payments: Vec::new(),
            new_payment: None,
            refunds: Vec::new(),
            wallet_refunds: Vec::new(),
            wallet_debit: false,
            emails: Vec::new(),
        }
    }

    fn refused(refusal: Refusal) -> Self {
        Self::just(Outcome::Refused(refusal))
    }

    /// Whether anything is written.
    pub fn changes_anything(&self) -> bool {
        self.status.is_some()
            || self.held_until.is_some()
            || self.checkout_started
            || self.units != UnitChange::Keep
            || !self.payments.is_empty()
            || self.new_payment.is_some()
    }

    fn refund(&mut self, payment: &PaymentFacts, to: RefundTo) {
        if to == RefundTo::Wallet || payment.provider == Provider::Wallet {
            self.payments
                .push((payment.id, payment.status, PaymentStatus::Refunded));
            self.wallet_refunds.push(payment.id);
        } else {
            self.payments
                .push((payment.id, payment.status, PaymentStatus::RefundPending));
            self.refunds.push(payment.id);
        }
    }
}

/// Decides what `trigger` does to the booking described by `facts` at `now`.
pub fn decide(facts: &Facts, trigger: &Trigger, now: DateTime<Utc>) -> Decision {
    match trigger {
        Trigger::Checkout {
            provider,
            hold_until,
            new_payment_id,
        } => checkout(facts, provider, *hold_until, *new_payment_id, now),
        Trigger::PaymentSucceeded { payment_id } => payment_succeeded(facts, *payment_id, now),
        Trigger::PayFromWallet { new_payment_id } => pay_from_wallet(facts, *new_payment_id, now),
        Trigger::PaymentFailed { payment_id } => match facts.payment(*payment_id) {
            None => Decision::refused(Refusal::UnknownPayment),
            Some(p) if p.status == PaymentStatus::Pending => Decision {
                payments: vec![(p.id, p.status, PaymentStatus::Failed)],
                ..Decision::just(Outcome::PaymentFailed)
            },
            Some(_) => Decision::just(Outcome::Duplicate),
        },
        Trigger::PaymentRefunded { payment_id } => match facts.payment(*payment_id) {
            None => Decision::refused(Refusal::UnknownPayment),
            Some(p) if p.status == PaymentStatus::Refunded => Decision::just(Outcome::Duplicate),
            Some(p) => {
                // Only the payment that confirmed the booking takes the booking with it
                // (a refund made in the provider's dashboard). Refunding an extra
                // payment never touches the booking.
                let ends_booking =
                    facts.paid_by == Some(p.id) && facts.status == BookingStatus::Confirmed;
                let mut decision = Decision::just(Outcome::MoneyReturned {
                    booking_refunded: ends_booking,
                });
                decision
                    .payments
                    .push((p.id, p.status, PaymentStatus::Refunded));
                if ends_booking {
                    decision.status = Some(BookingStatus::Refunded);
                    decision.units = UnitChange::Release;
                }
                decision
            }
        },
        Trigger::Cancel {
            by,
            refund_cutoff,
            to,
        } => cancel(facts, *by, *refund_cutoff, *to, now),
        Trigger::Expire => match facts.status_at(now) {
            BookingStatus::Expired if facts.status == BookingStatus::Held => Decision {
                status: Some(BookingStatus::Expired),
                units: UnitChange::Release,
                ..Decision::just(Outcome::Released)
            },
            _ => Decision::just(Outcome::Unchanged),
        },
        Trigger::SaleCancelled => match facts.status_at(now) {
            BookingStatus::Held => Decision {
                status: Some(BookingStatus::Cancelled),
                units: UnitChange::Release,
                ..Decision::just(Outcome::Released)
            },
            BookingStatus::Expired if facts.status == BookingStatus::Held => Decision {
                status: Some(BookingStatus::Expired),
                units: UnitChange::Release,
                ..Decision::just(Outcome::Released)
            },
            BookingStatus::Confirmed => {
                let mut decision = refund_booking(facts, RefundTo::Origin);
                decision.emails.push(Email::SaleCancelled);
                decision
            }
            _ => Decision::just(Outcome::Unchanged),
        },
    }
}

fn checkout(
    facts: &Facts,
    provider: &Provider,
    hold_until: DateTime<Utc>,
    new_payment_id: PaymentId,
    now: DateTime<Utc>,
) -> Decision {
    if let Some(refusal) = facts.sale.refusal() {
        return Decision::refused(refusal);
    }
    let status = facts.status_at(now);
    if status != BookingStatus::Held {
        return Decision::refused(Refusal::NotHeld(status));
    }
    if facts.starts_at <= now {
        return Decision::refused(Refusal::SaleClosed);
    }
    // A second tab, a reload, a retry: the payment already open is the answer.
    if let Some(open) = facts.payments.iter().find(|p| {
        p.status == PaymentStatus::Pending && p.provider == *provider && p.expires_at > now
    }) {
        return Decision::just(Outcome::CheckoutOpen {
            payment_id: open.id,
            reused: true,
        });
    }
    // The hold is extended once; later checkouts (after a failed payment) live within
    // what is left of it.
    let held_until = if facts.checkout_started {
        facts.held_until
    } else {
        facts.held_until.max(hold_until)
    };
    Decision {
        held_until: (held_until != facts.held_until).then_some(held_until),
        checkout_started: !facts.checkout_started,
        new_payment: Some(NewPayment {
            id: new_payment_id,
            expires_at: held_until,
        }),
        ..Decision::just(Outcome::CheckoutOpen {
            payment_id: new_payment_id,
            reused: false,
        })
    }
}

fn pay_from_wallet(facts: &Facts, new_payment_id: PaymentId, now: DateTime<Utc>) -> Decision {
    if let Some(refusal) = facts.sale.refusal() {
        return Decision::refused(refusal);
    }
    let status = facts.status_at(now);
    if status != BookingStatus::Held || facts.paid_by.is_some() {
        return Decision::refused(Refusal::NotHeld(status));
    }
    if facts.starts_at <= now {
        return Decision::refused(Refusal::SaleClosed);
    }
    if !facts.units_takeable {
        // A live hold owns its units; this would be a broken invariant, not a race.
        return Decision::refused(Refusal::NotHeld(BookingStatus::Expired));
    }
    Decision {
        status: Some(BookingStatus::Confirmed),
        paid_by: Some(new_payment_id),
        units: UnitChange::Sell,
        new_payment: Some(NewPayment {
            id: new_payment_id,
            expires_at: now,
        }),
        payments: vec![(
            new_payment_id,
            PaymentStatus::Pending,
            PaymentStatus::Succeeded,
        )],
        wallet_debit: true,
        emails: vec![Email::Confirmation],
        ..Decision::just(Outcome::Confirmed)
    }
}

fn payment_succeeded(facts: &Facts, payment_id: PaymentId, now: DateTime<Utc>) -> Decision {
    let Some(payment) = facts.payment(payment_id) else {
        return Decision::refused(Refusal::UnknownPayment);
    };
    if payment.status.captured() {
        return Decision::just(Outcome::Duplicate);
    }
    // Another payment confirmed the booking first (a second tab, a late webhook): give
    // this money back and leave the booking alone.
    if facts.paid_by.is_some() || facts.status == BookingStatus::Confirmed {
        let mut decision = Decision::just(Outcome::ExtraPaymentRefunded);
        decision.refund(payment, RefundTo::Origin);
        return decision;
    }
    let sellable = facts.sale == Sale::Open
        && facts.starts_at > now
        && matches!(facts.status, BookingStatus::Held | BookingStatus::Expired)
        && facts.units_takeable;
    if sellable {
        return Decision {
            status: Some(BookingStatus::Confirmed),
            paid_by: Some(payment.id),
            units: UnitChange::Sell,
            payments: vec![(payment.id, payment.status, PaymentStatus::Succeeded)],
            emails: vec![Email::Confirmation],
            ..Decision::just(Outcome::Confirmed)
        };
    }
    // The money came but cannot buy the booking: the units went to someone else after
    // the hold expired, the sale was cancelled or has closed, or the buyer cancelled.
    let mut decision = Decision::just(Outcome::PaymentRefunded);
    decision.refund(payment, RefundTo::Origin);
    if facts.status != BookingStatus::Refunded {
        decision.status = Some(BookingStatus::Refunded);
        decision.units = UnitChange::Release;
    }
    decision
}

fn cancel(
    facts: &Facts,
    by: Actor,
    refund_cutoff: Duration,
    to: RefundTo,
    now: DateTime<Utc>,
) -> Decision {
    match facts.status_at(now) {
        BookingStatus::Held if by == Actor::Buyer => Decision {
            status: Some(BookingStatus::Cancelled),
            units: UnitChange::Release,
            ..Decision::just(Outcome::Released)
        },
        BookingStatus::Confirmed => {
            if by == Actor::Buyer && now > facts.starts_at - refund_cutoff {
                return Decision::refused(Refusal::RefundClosed);
            }
            refund_booking(facts, to)
        }
        status if by == Actor::Buyer => Decision::refused(Refusal::NotHeld(status)),
        status => Decision::refused(Refusal::NotRefundable(status)),
    }
}

/// A confirmed booking is refunded: units back on sale, every captured payment that
/// still holds money refunded (`to` the wallet, or the way it came).
fn refund_booking(facts: &Facts, to: RefundTo) -> Decision {
    let mut decision = Decision {
        status: Some(BookingStatus::Refunded),
        units: UnitChange::Release,
        ..Decision::just(Outcome::Refunded)
    };
    for payment in &facts.payments {
        if payment.status == PaymentStatus::Succeeded {
            decision.refund(payment, to);
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: u128) -> PaymentId {
        PaymentId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn a_provider_reads_and_writes_as_its_name_and_an_unknown_one_as_stored() {
        for (provider, name) in [
            (Provider::Mock, "mock"),
            (Provider::Stripe, "stripe"),
            (Provider::Wallet, "wallet"),
            (Provider::Other("adyen".into()), "adyen"),
        ] {
            assert_eq!(Provider::parse(name), provider);
            assert_eq!(
                serde_json::to_string(&provider).unwrap(),
                format!("\"{name}\"")
            );
        }
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_900_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    fn pay(id: u128, status: PaymentStatus) -> PaymentFacts {
        PaymentFacts {
            id: pid(id),
            status,
            provider: Provider::Mock,
            expires_at: at(30),
        }
    }

    fn held() -> Facts {
        Facts {
            status: BookingStatus::Held,
            held_until: at(10),
            paid_by: None,
            checkout_started: false,
            sale: Sale::Open,
            starts_at: at(60 * 24 * 7),
            units_takeable: true,
            payments: Vec::new(),
        }
    }

    fn checkout_trigger(id: u128) -> Trigger {
        Trigger::Checkout {
            provider: Provider::Mock,
            hold_until: at(15),
            new_payment_id: pid(id),
        }
    }

    fn succeeded(id: u128) -> Trigger {
        Trigger::PaymentSucceeded {
            payment_id: pid(id),
        }
    }

    #[test]
    fn checkout_extends_once_and_a_repeat_returns_the_open_payment() {
        let first = decide(&held(), &checkout_trigger(1), at(0));
        assert_eq!(first.held_until, Some(at(15)));
        assert!(first.checkout_started);
        assert_eq!(
            first.new_payment,
            Some(NewPayment {
                id: pid(1),
                expires_at: at(15)
            })
        );
        let mut facts = held();
        facts.held_until = at(15);
        facts.checkout_started = true;
        facts.payments.push(PaymentFacts {
            expires_at: at(15),
            ..pay(1, PaymentStatus::Pending)
        });
        let again = decide(&facts, &checkout_trigger(2), at(1));
        assert_eq!(
            again.outcome,
            Outcome::CheckoutOpen {
                payment_id: pid(1),
                reused: true
            }
        );
        assert!(!again.changes_anything());
        // After a failed payment a new one opens, without extending the hold again.
        facts.payments[0].status = PaymentStatus::Failed;
        let retry = decide(&facts, &checkout_trigger(3), at(5));
        assert_eq!(retry.held_until, None);
        assert_eq!(retry.new_payment.unwrap().expires_at, at(15));
    }

    #[test]
    fn money_for_a_withdrawn_sale_is_refunded_and_nothing_new_is_paid_for() {
        let mut facts = held();
        facts.sale = Sale::Withdrawn;
        assert_eq!(
            decide(&facts, &checkout_trigger(2), at(1)).outcome,
            Outcome::Refused(Refusal::SaleWithdrawn)
        );
        assert_eq!(
            decide(
                &facts,
                &Trigger::PayFromWallet {
                    new_payment_id: pid(3)
                },
                at(1)
            )
            .outcome,
            Outcome::Refused(Refusal::SaleWithdrawn)
        );
        // A checkout opened while the event was published pays after it went back to
        // draft: the money goes back, the units with it, the booking is never confirmed.
        facts.payments.push(pay(1, PaymentStatus::Pending));
        let paid = decide(&facts, &succeeded(1), at(2));
        assert_eq!(paid.outcome, Outcome::PaymentRefunded);
        assert_eq!(paid.status, Some(BookingStatus::Refunded));
        assert_eq!(paid.units, UnitChange::Release);
        assert!(paid.emails.is_empty());
    }

    #[test]
    fn checkout_is_refused_when_not_held_cancelled_or_started() {
        let mut facts = held();
        assert_eq!(
            decide(&facts, &checkout_trigger(1), at(10)).outcome,
            Outcome::Refused(Refusal::NotHeld(BookingStatus::Expired))
        );
        facts.sale = Sale::Cancelled;
        assert_eq!(
            decide(&facts, &checkout_trigger(1), at(0)).outcome,
            Outcome::Refused(Refusal::SaleCancelled)
        );
    }

    #[test]
    fn one_payment_confirms_and_a_second_is_refunded_without_touching_the_booking() {
        let mut facts = held();
        facts.payments = vec![
            pay(1, PaymentStatus::Pending),
            pay(2, PaymentStatus::Pending),
        ];
        let first = decide(&facts, &succeeded(1), at(1));
        assert_eq!(first.outcome, Outcome::Confirmed);
        assert_eq!(first.paid_by, Some(pid(1)));
        assert_eq!(first.units, UnitChange::Sell);
        assert_eq!(first.emails, [Email::Confirmation]);

        facts.status = BookingStatus::Confirmed;
        facts.paid_by = Some(pid(1));
        facts.payments[0].status = PaymentStatus::Succeeded;
        let second = decide(&facts, &succeeded(2), at(2));
        assert_eq!(second.outcome, Outcome::ExtraPaymentRefunded);
        assert_eq!(second.status, None);
        assert_eq!(second.units, UnitChange::Keep);
        assert_eq!(second.refunds, [pid(2)]);

        // The extra payment's refund arriving leaves the booking confirmed.
        facts.payments[1].status = PaymentStatus::RefundPending;
        let returned = decide(
            &facts,
            &Trigger::PaymentRefunded { payment_id: pid(2) },
            at(3),
        );
        assert_eq!(
            returned.outcome,
            Outcome::MoneyReturned {
                booking_refunded: false
            }
        );
        assert_eq!(returned.status, None);
        assert_eq!(returned.units, UnitChange::Keep);
        // The same success again is a duplicate.
        assert_eq!(
            decide(&facts, &succeeded(1), at(3)).outcome,
            Outcome::Duplicate
        );
    }

    #[test]
    fn a_late_payment_retakes_free_units_or_is_refunded() {
        let mut facts = held();
        facts.status = BookingStatus::Expired;
        facts.payments = vec![pay(1, PaymentStatus::Pending)];
        assert_eq!(
            decide(&facts, &succeeded(1), at(20)).outcome,
            Outcome::Confirmed
        );
        facts.units_takeable = false;
        let refunded = decide(&facts, &succeeded(1), at(20));
        assert_eq!(refunded.outcome, Outcome::PaymentRefunded);
        assert_eq!(refunded.status, Some(BookingStatus::Refunded));
        assert_eq!(refunded.refunds, [pid(1)]);
        facts.units_takeable = true;
        facts.sale = Sale::Cancelled;
        assert_eq!(
            decide(&facts, &succeeded(1), at(20)).outcome,
            Outcome::PaymentRefunded
        );
    }

    #[test]
    fn buyers_refund_until_the_cutoff_organizers_always() {
        let mut facts = held();
        facts.status = BookingStatus::Confirmed;
        facts.paid_by = Some(pid(1));
        facts.payments = vec![pay(1, PaymentStatus::Succeeded)];
        facts.starts_at = at(60 * 30);
        let cutoff = Duration::hours(24);
        let buyer = Trigger::Cancel {
            by: Actor::Buyer,
            refund_cutoff: cutoff,
            to: RefundTo::Origin,
        };
        let organizer = Trigger::Cancel {
            by: Actor::Organizer,
            refund_cutoff: cutoff,
            to: RefundTo::Origin,
        };
        let early = decide(&facts, &buyer, at(0));
        assert_eq!(early.outcome, Outcome::Refunded);
        assert_eq!(early.refunds, [pid(1)]);
        assert_eq!(
            decide(&facts, &buyer, at(60 * 7)).outcome,
            Outcome::Refused(Refusal::RefundClosed)
        );
        assert_eq!(
            decide(&facts, &organizer, at(60 * 40)).outcome,
            Outcome::Refunded
        );
    }

    #[test]
    fn an_expired_hold_is_released_once_and_nothing_else_expires() {
        let expired = decide(&held(), &Trigger::Expire, at(10));
        assert_eq!(expired.outcome, Outcome::Released);
        assert_eq!(expired.status, Some(BookingStatus::Expired));
        assert_eq!(expired.units, UnitChange::Release);
        assert_eq!(
            decide(&held(), &Trigger::Expire, at(9)).outcome,
            Outcome::Unchanged,
            "still inside its hold"
        );
        let mut confirmed = held();
        confirmed.status = BookingStatus::Confirmed;
        assert_eq!(
            decide(&confirmed, &Trigger::Expire, at(60)).outcome,
            Outcome::Unchanged
        );
    }

    #[test]
    fn cancelling_the_sale_releases_holds_and_refunds_confirmed_bookings_with_an_email() {
        let facts = held();
        let released = decide(&facts, &Trigger::SaleCancelled, at(0));
        assert_eq!(released.status, Some(BookingStatus::Cancelled));
        assert_eq!(released.units, UnitChange::Release);
        let mut confirmed = held();
        confirmed.status = BookingStatus::Confirmed;
        confirmed.paid_by = Some(pid(1));
        confirmed.payments = vec![pay(1, PaymentStatus::Succeeded)];
        let refunded = decide(&confirmed, &Trigger::SaleCancelled, at(0));
        assert_eq!(refunded.outcome, Outcome::Refunded);
        assert_eq!(refunded.emails, [Email::SaleCancelled]);
        confirmed.status = BookingStatus::Refunded;
        assert_eq!(
            decide(&confirmed, &Trigger::SaleCancelled, at(0)).outcome,
            Outcome::Unchanged
        );
    }

    #[test]
    fn a_wallet_payment_confirms_at_once_and_wallet_money_returns_to_the_wallet() {
        let paid = decide(
            &held(),
            &Trigger::PayFromWallet {
                new_payment_id: pid(7),
            },
            at(1),
        );
        assert_eq!(paid.outcome, Outcome::Confirmed);
        assert!(paid.wallet_debit);
        assert_eq!(paid.paid_by, Some(pid(7)));
        assert_eq!(paid.units, UnitChange::Sell);
        assert_eq!(
            paid.payments,
            [(pid(7), PaymentStatus::Pending, PaymentStatus::Succeeded)]
        );
        // Not on a hold that ran out, nor twice.
        let wallet = Trigger::PayFromWallet {
            new_payment_id: pid(8),
        };
        assert_eq!(
            decide(&held(), &wallet, at(10)).outcome,
            Outcome::Refused(Refusal::NotHeld(BookingStatus::Expired))
        );
        let mut confirmed = held();
        confirmed.status = BookingStatus::Confirmed;
        confirmed.paid_by = Some(pid(7));
        confirmed.payments = vec![PaymentFacts {
            provider: Provider::Wallet,
            ..pay(7, PaymentStatus::Succeeded)
        }];
        assert_eq!(
            decide(&confirmed, &wallet, at(2)).outcome,
            Outcome::Refused(Refusal::NotHeld(BookingStatus::Confirmed))
        );
        // A wallet payment goes back to the wallet, at once, even when the sale is called off.
        let cancelled = decide(&confirmed, &Trigger::SaleCancelled, at(3));
        assert_eq!(cancelled.wallet_refunds, [pid(7)]);
        assert!(cancelled.refunds.is_empty());
        assert_eq!(
            cancelled.payments,
            [(pid(7), PaymentStatus::Succeeded, PaymentStatus::Refunded)]
        );
        // A card payment asked back to the wallet does not go to the provider.
        confirmed.payments = vec![pay(7, PaymentStatus::Succeeded)];
        let to_wallet = decide(
            &confirmed,
            &Trigger::Cancel {
                by: Actor::Buyer,
                refund_cutoff: Duration::hours(24),
                to: RefundTo::Wallet,
            },
            at(3),
        );
        assert_eq!(to_wallet.outcome, Outcome::Refunded);
        assert_eq!(to_wallet.wallet_refunds, [pid(7)]);
        assert!(to_wallet.refunds.is_empty());
    }
}
