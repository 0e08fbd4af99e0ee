//! A property-based state-machine test of the booking and payment lifecycle: random
//! sequences of holds, checkouts (two tabs), payments succeeding, failing and refunded
//! in any order and more than once (replayed webhooks, duplicate clicks), store credit,
//! payments from the wallet, buyer cancellations and refunds (to the card or the
//! wallet), organizer refunds, clock moves, sweeps and a cancelled sale run against a
//! store and against a small model of the money rules, said plainly. After every step
//! the two agree on every booking, payment, unit and the wallet's balance, and
//! the invariants of docs/ARCHITECTURE.md hold (the wallet's among them).

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use usher_core::ids::{BookingId, PaymentId, UnitId};

use usher_core::lifecycle::{Actor, PaymentStatus};
use usher_core::{BookingStatus, Clock, Currency, ManualClock, Money, UnitState};
use usher_store::{
    Audit, CommandOutcome, HoldCommand, InventoryCommand, Selection, Store, WalletCredit,
};
use usher_testkit::Engine;
use usher_testkit::fixtures::{performance, reserved, user};
use usher_testkit::invariants::{check_money, check_performance, check_wallet};
use usher_testkit::lifecycle::{
    self, cancel, fail, money_returned, pay_from_wallet, refund_to_wallet, sale_cancelled, succeed,
};

const SEATS: usize = 4;
const TTL_SECONDS: i64 = 600;
/// How far checkout extends a hold (the first time).
const CHECKOUT_MINUTES: i64 = 15;
/// What one seat costs (the fixture's first section), in cents.
const SEAT_PRICE: i64 = 1000;

#[derive(Debug, Clone)]
enum Op {
    Hold(Vec<usize>),
    Checkout(usize),
    /// A payment succeeds; with `Some(n)` it comes as provider event `evt_n` (a small
    /// range, so replays happen).
    Succeed(usize, Option<u8>),
    Fail(usize),
    MoneyReturned(usize),
    /// What the refund worker does: every queued refund goes through.
    RunRefunds,
    CancelByBuyer(usize),
    RefundByOrganizer(usize),
    /// An admin gives the buyer this much store credit.
    Credit(i64),
    PayFromWallet(usize),
    /// The buyer cancels, asking for the money in the wallet.
    RefundToWallet(usize),
    Advance(i64),
    Sweep,
    CancelSale,
}

/// Which booking or payment an op is about, counted back from the newest: mostly one of
/// the last two, so that sequences on one booking (pay, fail, pay again) are common.
fn recent() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0usize..2, 1 => 0usize..16]
}

fn op() -> impl Strategy<Value = Op> {
    // Weighted towards the money path; a cancelled sale ends selling, so it is rare.
    prop_oneof![
        8 => proptest::collection::btree_set(0..SEATS, 1..=2).prop_map(|s| Op::Hold(s.into_iter().collect())),
        16 => recent().prop_map(Op::Checkout),
        20 => (recent(), proptest::option::of(0u8..6)).prop_map(|(p, e)| Op::Succeed(p, e)),
        12 => recent().prop_map(Op::Fail),
        4 => recent().prop_map(Op::MoneyReturned),
        8 => Just(Op::RunRefunds),
        6 => recent().prop_map(Op::CancelByBuyer),
        3 => recent().prop_map(Op::RefundByOrganizer),
        // Credit in steps of half a seat, so that it sometimes covers a booking and
        // sometimes falls short.
        4 => (1i64..=4).prop_map(|halves| Op::Credit(halves * SEAT_PRICE / 2)),
        8 => recent().prop_map(Op::PayFromWallet),
        3 => recent().prop_map(Op::RefundToWallet),
        10 => (0i64..=500).prop_map(Op::Advance),
        4 => Just(Op::Sweep),
        1 => Just(Op::CancelSale),
    ]
}

#[derive(Debug, Clone)]
struct MBooking {
    id: BookingId,
    units: Vec<usize>,
    status: BookingStatus,
    held_until: DateTime<Utc>,
    paid_by: Option<usize>,
    checkout_started: bool,
}

impl MBooking {
    fn status_at(&self, now: DateTime<Utc>) -> BookingStatus {
        if self.status == BookingStatus::Held && self.held_until <= now {
            BookingStatus::Expired
        } else {
            self.status
        }
    }
}

#[derive(Debug, Clone)]
struct MPayment {
    id: PaymentId,
    booking: usize,
    status: PaymentStatus,
    expires_at: DateTime<Utc>,
    amount: i64,
    /// Paid from the wallet: no provider ever reports on it, and its money only ever
    /// goes back to the wallet.
    wallet: bool,
}

/// Who has each seat: nobody, a hold (booking) or a sale (booking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seat {
    Free,
    Held(usize),
    Sold(usize),
}

/// The money rules, as plainly as they can be said.
#[derive(Debug)]
struct Model {
    seats: Vec<Seat>,
    bookings: Vec<MBooking>,
    payments: Vec<MPayment>,
    events: HashSet<u8>,
    sale_cancelled: bool,
    /// The buyer's store credit, in cents.
    balance: i64,
}

impl Model {
    fn seat_free(&self, seat: usize, now: DateTime<Utc>) -> bool {
        match self.seats[seat] {
            Seat::Free => true,
            Seat::Held(b) => self.bookings[b].held_until <= now,
            Seat::Sold(_) => false,
        }
    }

    fn seat_state(&self, seat: usize, now: DateTime<Utc>) -> UnitState {
        match self.seats[seat] {
            Seat::Sold(_) => UnitState::Sold,
            Seat::Held(_) if !self.seat_free(seat, now) => UnitState::Held,
            _ => UnitState::Available,
        }
    }

    fn release(&mut self, b: usize) {
        for seat in self.bookings[b].units.clone() {
            if matches!(self.seats[seat], Seat::Held(x) | Seat::Sold(x) if x == b) {
                self.seats[seat] = Seat::Free;
            }
        }
    }

    /// Every captured payment of the booking is refunded: wallet money (and any money,
    /// when the buyer asks for the wallet) at once to the wallet, card money through a
    /// refund that the provider confirms later.
    fn refund_captured(&mut self, b: usize, to_wallet: bool) {
        for p in &mut self.payments {
            if p.booking == b && p.status == PaymentStatus::Succeeded {
                if p.wallet || to_wallet {
                    p.status = PaymentStatus::Refunded;
                    self.balance += p.amount;
                } else {
                    p.status = PaymentStatus::RefundPending;
                }
            }
        }
    }

    fn total(&self, b: usize) -> i64 {
        self.bookings[b].units.len() as i64 * SEAT_PRICE
    }

    fn succeed(&mut self, p: usize, now: DateTime<Utc>) {
        let status = self.payments[p].status;
        if matches!(
            status,
            PaymentStatus::Succeeded | PaymentStatus::RefundPending | PaymentStatus::Refunded
        ) {
            return;
        }
        let b = self.payments[p].booking;
        let booking = &self.bookings[b];
        if booking.paid_by.is_some() || booking.status == BookingStatus::Confirmed {
            // A second payment: its money goes back, the booking stays as it is.
            self.payments[p].status = PaymentStatus::RefundPending;
            return;
        }
        let units_free = booking
            .units
            .iter()
            .all(|&s| self.seats[s] == Seat::Held(b) || self.seat_free(s, now));
        let sellable = !self.sale_cancelled
            && matches!(booking.status, BookingStatus::Held | BookingStatus::Expired)
            && units_free;
        if sellable {
            for seat in booking.units.clone() {
                self.seats[seat] = Seat::Sold(b);
            }
            self.bookings[b].status = BookingStatus::Confirmed;
            self.bookings[b].paid_by = Some(p);
            self.payments[p].status = PaymentStatus::Succeeded;
        } else {
            self.payments[p].status = PaymentStatus::RefundPending;
            if self.bookings[b].status != BookingStatus::Refunded {
                self.bookings[b].status = BookingStatus::Refunded;
                self.release(b);
            }
        }
    }

    fn money_returned(&mut self, p: usize) {
        if self.payments[p].status == PaymentStatus::Refunded {
            return;
        }
        self.payments[p].status = PaymentStatus::Refunded;
        let b = self.payments[p].booking;
        if self.bookings[b].paid_by == Some(p)
            && self.bookings[b].status == BookingStatus::Confirmed
        {
            self.bookings[b].status = BookingStatus::Refunded;
            self.release(b);
        }
    }
}

fn run(engine: Engine, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let shared = engine.fresh_store().await;
        let clock = ManualClock::starting_now();
        let perf = performance(
            &shared,
            clock.now(),
            reserved(&[("S", &[SEATS as u32])]),
            10,
        )
        .await
        .id;
        let buyer = user(&shared, "buyer@example.com").await;
        let store: &dyn Store = shared.as_ref();
        let holds = usher_testkit::holds(&shared);
        let seat_ids: Vec<UnitId> = store
            .units(perf, clock.now())
            .await
            .unwrap()
            .iter()
            .map(|u| u.id)
            .collect();
        let mut m = Model {
            seats: vec![Seat::Free; SEATS],
            bookings: Vec::new(),
            payments: Vec::new(),
            events: HashSet::new(),
            sale_cancelled: false,
            balance: 0,
        };
        for op in ops {
            let now = clock.now();
            let newest = |i: usize, len: usize| (len > 0).then(|| len - 1 - i % len);
            let pick_booking = |i: usize| newest(i, m.bookings.len());
            // Providers report only on their own payments, never on the wallet's.
            let pick_payment =
                |i: usize| newest(i, m.payments.len()).filter(|&p| !m.payments[p].wallet);
            match op {
                Op::Hold(seats) => {
                    let ids = seats.iter().map(|s| seat_ids[*s]).collect();
                    let outcome = holds
                        .hold(HoldCommand {
                            booking_id: BookingId::generate(),
                            user_id: buyer.into(),
                            performance_id: perf,
                            selection: Selection::Units(ids),
                            now,
                            held_until: now + Duration::seconds(TTL_SECONDS),
                            offer: false,
                        })
                        .await
                        .unwrap();
                    let free = seats.iter().all(|s| m.seat_free(*s, now));
                    match outcome {
                        CommandOutcome::Held(booking) => {
                            prop_assert!(
                                free && !m.sale_cancelled,
                                "store held what the model has taken"
                            );
                            let b = m.bookings.len();
                            for s in &seats {
                                m.seats[*s] = Seat::Held(b);
                            }
                            m.bookings.push(MBooking {
                                id: booking.id,
                                units: seats,
                                status: BookingStatus::Held,
                                held_until: booking.held_until,
                                paid_by: None,
                                checkout_started: false,
                            });
                        }
                        CommandOutcome::NotOnSale => prop_assert!(m.sale_cancelled),
                        other => prop_assert!(
                            !free || m.sale_cancelled,
                            "model would hold; store said {:?}",
                            other
                        ),
                    }
                }
                Op::Checkout(i) => {
                    let Some(b) = pick_booking(i) else { continue };
                    let done = lifecycle::checkout(
                        store,
                        m.bookings[b].id,
                        now + Duration::minutes(CHECKOUT_MINUTES),
                        now,
                    )
                    .await;
                    let booking = &m.bookings[b];
                    let allowed =
                        !m.sale_cancelled && booking.status_at(now) == BookingStatus::Held;
                    prop_assert_eq!(
                        done.payment.is_some(),
                        allowed,
                        "checkout of {:?}: {:?}",
                        booking,
                        done.outcome
                    );
                    let Some(payment) = done.payment else {
                        continue;
                    };
                    let open = m.payments.iter().position(|p| {
                        p.booking == b && p.status == PaymentStatus::Pending && p.expires_at > now
                    });
                    match open {
                        Some(p) => prop_assert_eq!(
                            payment.id,
                            m.payments[p].id,
                            "a repeat returns the open payment"
                        ),
                        None => {
                            let booking = &mut m.bookings[b];
                            if !booking.checkout_started {
                                booking.held_until = booking
                                    .held_until
                                    .max(now + Duration::minutes(CHECKOUT_MINUTES));
                                booking.checkout_started = true;
                            }
                            prop_assert_eq!(payment.expires_at, booking.held_until);
                            let amount = m.total(b);
                            m.payments.push(MPayment {
                                id: payment.id,
                                booking: b,
                                status: PaymentStatus::Pending,
                                expires_at: payment.expires_at,
                                amount,
                                wallet: false,
                            });
                        }
                    }
                }
                Op::Succeed(i, event) => {
                    let Some(p) = pick_payment(i) else { continue };
                    let provider_event = event.and_then(|n| {
                        lifecycle::provider_event(&format!("evt_{n}"), "checkout.session.completed")
                    });
                    succeed(store, m.payments[p].id.uuid(), provider_event, now).await;
                    if event.is_none_or(|n| m.events.insert(n)) {
                        m.succeed(p, now);
                    }
                }
                Op::Fail(i) => {
                    let Some(p) = pick_payment(i) else { continue };
                    fail(store, m.payments[p].id.uuid(), None, now).await;
                    if m.payments[p].status == PaymentStatus::Pending {
                        m.payments[p].status = PaymentStatus::Failed;
                    }
                }
                Op::MoneyReturned(i) => {
                    let Some(p) = pick_payment(i) else { continue };
                    money_returned(store, m.payments[p].id.uuid(), None, now).await;
                    m.money_returned(p);
                }
                Op::RunRefunds => {
                    for p in 0..m.payments.len() {
                        if m.payments[p].status == PaymentStatus::RefundPending {
                            money_returned(store, m.payments[p].id.uuid(), None, now).await;
                            m.money_returned(p);
                        }
                    }
                }
                Op::CancelByBuyer(i) | Op::RefundByOrganizer(i) => {
                    let Some(b) = pick_booking(i) else { continue };
                    let by = if matches!(op, Op::CancelByBuyer(_)) {
                        Actor::Buyer
                    } else {
                        Actor::Organizer
                    };
                    cancel(store, m.bookings[b].id, by, now).await;
                    match (m.bookings[b].status_at(now), by) {
                        (BookingStatus::Held, Actor::Buyer) => {
                            m.bookings[b].status = BookingStatus::Cancelled;
                            m.release(b);
                        }
                        (BookingStatus::Confirmed, _) => {
                            m.bookings[b].status = BookingStatus::Refunded;
                            m.release(b);
                            m.refund_captured(b, false);
                        }
                        _ => {}
                    }
                }
                Op::Credit(amount) => {
                    store
                        .wallet_credit(WalletCredit {
                            user_id: buyer.into(),
                            amount: Money::new(amount, Currency::parse("EUR").unwrap()),
                            reason: "Goodwill".into(),
                            audit: Audit::system(),
                            now,
                        })
                        .await
                        .unwrap();
                    m.balance += amount;
                }
                Op::PayFromWallet(i) => {
                    let Some(b) = pick_booking(i) else { continue };
                    let done = pay_from_wallet(store, m.bookings[b].id, now).await;
                    let booking = &m.bookings[b];
                    let total = m.total(b);
                    let payable = !m.sale_cancelled
                        && booking.status_at(now) == BookingStatus::Held
                        && booking.paid_by.is_none();
                    let paid = payable && m.balance >= total;
                    prop_assert_eq!(
                        done.outcome == usher_core::lifecycle::Outcome::Confirmed,
                        paid,
                        "wallet payment of {:?} with {} in the wallet: {:?}",
                        booking,
                        m.balance,
                        done.outcome
                    );
                    if payable && !paid {
                        prop_assert_eq!(
                            done.outcome,
                            usher_core::lifecycle::Outcome::Refused(
                                usher_core::lifecycle::Refusal::InsufficientFunds
                            )
                        );
                    }
                    if paid {
                        let payment = done.booking.as_ref().and_then(|b| b.paid_by);
                        let Some(payment) = payment else {
                            return Err(TestCaseError::fail("confirmed without paid_by"));
                        };
                        for seat in m.bookings[b].units.clone() {
                            m.seats[seat] = Seat::Sold(b);
                        }
                        m.bookings[b].status = BookingStatus::Confirmed;
                        m.bookings[b].paid_by = Some(m.payments.len());
                        m.payments.push(MPayment {
                            id: payment,
                            booking: b,
                            status: PaymentStatus::Succeeded,
                            expires_at: now,
                            amount: total,
                            wallet: true,
                        });
                        m.balance -= total;
                    }
                }
                Op::RefundToWallet(i) => {
                    let Some(b) = pick_booking(i) else { continue };
                    refund_to_wallet(store, m.bookings[b].id, now).await;
                    match m.bookings[b].status_at(now) {
                        BookingStatus::Held => {
                            m.bookings[b].status = BookingStatus::Cancelled;
                            m.release(b);
                        }
                        BookingStatus::Confirmed => {
                            m.bookings[b].status = BookingStatus::Refunded;
                            m.release(b);
                            m.refund_captured(b, true);
                        }
                        _ => {}
                    }
                }
                Op::Advance(seconds) => clock.advance(Duration::seconds(seconds)),
                Op::Sweep => {
                    usher_app::inventory::execute(
                        store,
                        InventoryCommand::Sweep { now, limit: 1000 },
                    )
                    .await
                    .unwrap();
                    for b in 0..m.bookings.len() {
                        if m.bookings[b].status_at(now) == BookingStatus::Expired
                            && m.bookings[b].status == BookingStatus::Held
                        {
                            m.bookings[b].status = BookingStatus::Expired;
                            m.release(b);
                        }
                    }
                }
                Op::CancelSale => {
                    if !m.sale_cancelled {
                        usher_app::catalog::update_performance(
                            store,
                            perf,
                            usher_store::PerformancePatch {
                                status: Some(usher_core::PerformanceStatus::Cancelled),
                                ..Default::default()
                            },
                            now,
                            &usher_store::Audit::system(),
                        )
                        .await
                        .unwrap();
                        m.sale_cancelled = true;
                    }
                    // What the cancellation job does, booking by booking.
                    for b in 0..m.bookings.len() {
                        sale_cancelled(store, m.bookings[b].id, now).await;
                        match m.bookings[b].status_at(now) {
                            BookingStatus::Held => m.bookings[b].status = BookingStatus::Cancelled,
                            BookingStatus::Expired
                                if m.bookings[b].status == BookingStatus::Held =>
                            {
                                m.bookings[b].status = BookingStatus::Expired
                            }
                            BookingStatus::Confirmed => {
                                m.bookings[b].status = BookingStatus::Refunded;
                                m.refund_captured(b, false);
                            }
                            _ => continue,
                        }
                        m.release(b);
                    }
                }
            }

            // The store and the model agree, and the invariants hold.
            let now = clock.now();
            let units = store.units(perf, now).await.unwrap();
            for (s, unit) in units.iter().enumerate() {
                prop_assert_eq!(unit.state, m.seat_state(s, now), "seat {}", s);
            }
            for booking in &m.bookings {
                let stored = store.booking(booking.id).await.unwrap().unwrap();
                prop_assert_eq!(
                    stored.status_at(now),
                    booking.status_at(now),
                    "booking {:?}",
                    booking
                );
                prop_assert_eq!(stored.paid_by, booking.paid_by.map(|p| m.payments[p].id));
            }
            for payment in &m.payments {
                let stored = store.payment(payment.id).await.unwrap().unwrap();
                prop_assert_eq!(stored.status, payment.status, "payment {:?}", payment);
            }
            let ids: Vec<BookingId> = m.bookings.iter().map(|b| b.id).collect();
            check_performance(store, perf, &ids, now)
                .await
                .map_err(TestCaseError::fail)?;
            check_money(store, &ids)
                .await
                .map_err(TestCaseError::fail)?;
            let balance = store
                .wallet_balances(buyer.into())
                .await
                .unwrap()
                .first()
                .map_or(0, |b| b.amount);
            prop_assert_eq!(balance, m.balance, "the wallet's balance");
            check_wallet(store, buyer.into())
                .await
                .map_err(TestCaseError::fail)?;
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_lifecycle_follows_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(Engine::Sqlite, ops)?;
    }

    #[test]
    fn postgres_lifecycle_follows_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(Engine::Postgres, ops)?;
    }
}

/// The sequence of the original report, kept as a fixed case: one payment fails, a
/// second confirms, the first settles after all and its refund goes through.
#[test]
fn a_second_payment_and_its_refund_leave_the_booking_confirmed() {
    let ops = vec![
        Op::Hold(vec![0, 1]),
        Op::Checkout(0),
        Op::Fail(0),
        Op::Checkout(0),
        Op::Succeed(0, None),
        Op::Succeed(1, Some(1)),
        Op::Succeed(1, Some(1)),
        Op::RunRefunds,
        Op::Advance(3600),
        Op::Sweep,
    ];
    for engine in [Engine::Sqlite, Engine::Postgres] {
        run(engine, ops.clone()).unwrap();
    }
}

/// Store credit that falls short, then covers; a card checkout left open meanwhile
/// whose payment lands after the wallet paid (refunded, the booking stays confirmed);
/// the wallet payment returned to the wallet by a cancelled sale.
#[test]
fn a_wallet_payment_beats_an_open_card_checkout_and_comes_back_when_the_sale_is_off() {
    let ops = vec![
        Op::Hold(vec![0, 1]),
        Op::Checkout(0),
        Op::Credit(1500),
        Op::PayFromWallet(0),
        Op::Credit(500),
        Op::PayFromWallet(0),
        // The card payment (the newest payment is the wallet's).
        Op::Succeed(1, None),
        Op::RunRefunds,
        Op::Hold(vec![2]),
        Op::Checkout(0),
        Op::Succeed(0, None),
        Op::RefundToWallet(0),
        Op::CancelSale,
    ];
    for engine in [Engine::Sqlite, Engine::Postgres] {
        run(engine, ops.clone()).unwrap();
    }
}

/// A payment arriving after its hold ran out and its seat went to someone else is
/// refunded; the other buyer keeps the seat. Then the sale is cancelled under both.
#[test]
fn a_late_payment_for_a_seat_sold_on_is_refunded() {
    let ops = vec![
        Op::Hold(vec![0]),
        Op::Checkout(0),
        Op::Advance(500),
        Op::Advance(500),
        Op::Hold(vec![0, 2]),
        Op::Succeed(0, Some(3)),
        Op::Checkout(0),
        Op::Succeed(0, None),
        Op::RunRefunds,
        Op::CancelSale,
        Op::RunRefunds,
    ];
    for engine in [Engine::Sqlite, Engine::Postgres] {
        run(engine, ops.clone()).unwrap();
    }
}
