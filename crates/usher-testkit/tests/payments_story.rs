//! The payments story on both engines: checkout, confirmation (once, whatever the
//! replays), late payments, refunds, the job outbox and idempotency keys.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use usher_core::ids::{BookingId, PaymentId, PerformanceId, UnitId, UserId};
use uuid::Uuid;

use usher_core::lifecycle::{Actor, Outcome, Refusal};
use usher_core::{Booking, BookingStatus, Clock, ManualClock, UnitState};
use usher_store::payments::{EmailKind, JobKind};
use usher_store::{
    CommandOutcome, HoldCommand, IdempotencyStart, InventoryCommand, Job, JobState, PaymentStatus,
    ProviderEvent, Selection, Store,
};
use usher_testkit::fixtures::{performance, reserved, user};
use usher_testkit::invariants::{check_money, check_performance};
use usher_testkit::lifecycle::{self, cancel, fail, money_returned, succeed};
use usher_testkit::on_each_engine;

async fn hold(
    store: &Arc<dyn Store>,
    user_id: UserId,
    performance_id: PerformanceId,
    units: Vec<UnitId>,
    now: DateTime<Utc>,
) -> Booking {
    let hold = HoldCommand {
        booking_id: BookingId::generate(),
        user_id,
        performance_id,
        selection: Selection::Units(units.into_iter().collect()),
        now,
        held_until: now + Duration::minutes(10),
        offer: false,
    };
    let outcome = usher_app::hold::alone(store.as_ref(), &Default::default(), &hold)
        .await
        .unwrap();
    match outcome {
        CommandOutcome::Held(booking) => booking,
        other => panic!("{other:?}"),
    }
}

/// Opens checkout; returns the open payment's id.
async fn checkout(
    store: &Arc<dyn Store>,
    booking: &Booking,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> PaymentId {
    let done = lifecycle::checkout(store.as_ref(), booking.id, until, now).await;
    let payment = done.payment.unwrap_or_else(|| panic!("{:?}", done.outcome));
    assert_eq!(payment.status, PaymentStatus::Pending);
    assert_eq!(payment.amount, booking.total);
    payment.id
}

fn event(id: &str) -> Option<ProviderEvent> {
    lifecycle::provider_event(id, "checkout.session.completed")
}

/// Claims every due job under a fresh lease.
async fn claim(
    store: &Arc<dyn Store>,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
) -> Vec<Job> {
    store
        .claim_jobs(now, lease_until, limit, Uuid::now_v7())
        .await
        .unwrap()
}

struct Scene {
    store: Arc<dyn Store>,
    clock: ManualClock,
    performance_id: PerformanceId,
    units: Vec<UnitId>,
    buyer: UserId,
    rival: Uuid,
}

async fn scene(engine: usher_testkit::Engine) -> Scene {
    let store = engine.fresh_store().await;
    let clock = ManualClock::starting_now();
    let perf = performance(&store, clock.now(), reserved(&[("S", &[4])]), 10).await;
    let units = store
        .units(perf.id, clock.now())
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    let buyer = user(&store, "buyer@example.com").await;
    let rival = user(&store, "rival@example.com").await;
    Scene {
        store,
        clock,
        performance_id: perf.id,
        units,
        buyer: buyer.into(),
        rival,
    }
}

on_each_engine! {
    async fn checkout_extends_the_hold_and_confirmation_sells_the_units_once(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..2].to_vec(), now).await;
        let payment_id = checkout(&s.store, &booking, now + Duration::minutes(30), now).await;
        let extended = s.store.booking(booking.id).await.unwrap().unwrap();
        assert_eq!(extended.held_until, now + Duration::minutes(30));
        // A second checkout while the payment is open is the same payment, same end.
        assert_eq!(checkout(&s.store, &booking, now + Duration::minutes(45), now).await, payment_id);
        assert_eq!(s.store.booking(booking.id).await.unwrap().unwrap().held_until, now + Duration::minutes(30));
        assert_eq!(s.store.payments_of_booking(booking.id).await.unwrap().len(), 1);
        s.store.attach_checkout(payment_id, "cs_test_1", "https://pay.example/cs_test_1").await.unwrap();
        let by_ref = s.store.payment_by_ref(&usher_core::lifecycle::Provider::Mock, "cs_test_1").await.unwrap().unwrap();
        assert_eq!(by_ref.id, payment_id);

        let confirmed = usher_app::payments::transition(s.store.as_ref(), usher_store::TransitionRequest {
            provider_event: event("evt_1"),
            provider_payment_ref: Some("pi_1".into()),
            ..usher_store::TransitionRequest::new(
                usher_store::BookingRef::Payment(payment_id),
                usher_core::lifecycle::Trigger::PaymentSucceeded { payment_id },
                now,
            )
        }).await.unwrap();
        assert_eq!(confirmed.outcome, Outcome::Confirmed);
        let confirmed = confirmed.booking.unwrap();
        assert_eq!(confirmed.status, BookingStatus::Confirmed);
        assert_eq!(confirmed.paid_by, Some(Into::into(payment_id)));
        let units = s.store.units(s.performance_id, now).await.unwrap();
        assert_eq!(units.iter().filter(|u| u.state == UnitState::Sold).count(), 2);
        let payment = s.store.payment(payment_id).await.unwrap().unwrap();
        assert_eq!(payment.status, PaymentStatus::Succeeded);
        assert_eq!(payment.provider_payment_ref.as_deref(), Some("pi_1"));

        // The same event again, or the same payment by another event: nothing changes.
        assert_eq!(succeed(s.store.as_ref(), payment_id.uuid(), event("evt_1"), now).await.outcome, Outcome::Duplicate);
        assert_eq!(succeed(s.store.as_ref(), payment_id.uuid(), event("evt_2"), now).await.outcome, Outcome::Duplicate);
        let jobs = claim(&s.store, now, now + Duration::minutes(1), 10).await;
        assert_eq!(jobs.len(), 1, "exactly one email job");
        assert_eq!(jobs[0].kind, JobKind::ConfirmationEmail);
        assert_eq!(jobs[0].payload["booking_id"], booking.id.to_string());

        // A confirmed booking outlives its hold time.
        s.clock.advance(Duration::hours(2));
        let later = s.clock.now();
        assert_eq!(s.store.booking(booking.id).await.unwrap().unwrap().status_at(later), BookingStatus::Confirmed);
        assert!(matches!(usher_app::inventory::execute(s.store.as_ref(), InventoryCommand::Sweep { now: later, limit: 10 }).await.unwrap(), CommandOutcome::Swept { released_units: 0, .. }));
        check_performance(s.store.as_ref(), s.performance_id, &[booking.id], later).await.unwrap();
        check_money(s.store.as_ref(), &[booking.id]).await.unwrap();
    }

    async fn fifty_concurrent_deliveries_of_one_event_confirm_once(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..2].to_vec(), now).await;
        let payment_id = checkout(&s.store, &booking, now + Duration::minutes(30), now).await;
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let store = s.store.clone();
                tokio::spawn(async move { succeed(store.as_ref(), payment_id.uuid(), event("evt_dup"), now).await.outcome })
            })
            .collect();
        let mut confirmed = 0;
        for task in tasks {
            match task.await.unwrap() {
                Outcome::Confirmed => confirmed += 1,
                Outcome::Duplicate => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(confirmed, 1);
        assert_eq!(claim(&s.store, now, now + Duration::minutes(1), 100).await.len(), 1);
    }

    async fn twenty_concurrent_completions_without_event_ids_confirm_once(engine) {
        // The mock's pay button clicked twenty times at once: no provider event id to
        // deduplicate on, so the conditional update on the payment decides.
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..2].to_vec(), now).await;
        let payment_id = checkout(&s.store, &booking, now + Duration::minutes(30), now).await;
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = s.store.clone();
                tokio::spawn(async move { succeed(store.as_ref(), payment_id.uuid(), None, now).await.outcome })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Confirmed).count(), 1, "{outcomes:?}");
        assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Duplicate).count(), 19, "{outcomes:?}");
        let jobs = claim(&s.store, now, now + Duration::minutes(1), 100).await;
        assert_eq!(jobs.iter().map(|j| j.kind.clone()).collect::<Vec<_>>(), [JobKind::ConfirmationEmail]);
        check_money(s.store.as_ref(), &[booking.id]).await.unwrap();
    }

    async fn a_second_paid_payment_is_refunded_and_the_booking_stays_confirmed(engine) {
        // Two tabs: the first payment failed at the provider and a second opened; then the
        // first one settles after all, after the second has confirmed the booking.
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..2].to_vec(), now).await;
        let first = checkout(&s.store, &booking, now + Duration::minutes(15), now).await;
        assert_eq!(fail(s.store.as_ref(), first.uuid(), None, now).await.outcome, Outcome::PaymentFailed);
        let second = checkout(&s.store, &booking, now + Duration::minutes(30), now).await;
        assert_ne!(first, second);
        // The hold was extended once: the second checkout lives within it.
        assert_eq!(s.store.booking(booking.id).await.unwrap().unwrap().held_until, now + Duration::minutes(15));
        assert_eq!(succeed(s.store.as_ref(), second.uuid(), None, now).await.outcome, Outcome::Confirmed);
        let extra = succeed(s.store.as_ref(), first.uuid(), None, now).await;
        assert_eq!(extra.outcome, Outcome::ExtraPaymentRefunded);
        let after = extra.booking.unwrap();
        assert_eq!((after.status, after.paid_by), (BookingStatus::Confirmed, Some(second)));
        assert_eq!(s.store.payment(first).await.unwrap().unwrap().status, PaymentStatus::RefundPending);
        // The extra payment's refund goes through: the booking is untouched.
        let returned = money_returned(s.store.as_ref(), first.uuid(), None, now).await;
        assert_eq!(returned.outcome, Outcome::MoneyReturned { booking_refunded: false });
        let booking_now = s.store.booking(booking.id).await.unwrap().unwrap();
        assert_eq!(booking_now.status, BookingStatus::Confirmed);
        assert_eq!(s.store.units(s.performance_id, now).await.unwrap().iter().filter(|u| u.state == UnitState::Sold).count(), 2);
        let jobs = claim(&s.store, now, now + Duration::minutes(1), 100).await;
        let mut kinds: Vec<_> = jobs.iter().map(|j| j.kind.as_str()).collect();
        kinds.sort();
        assert_eq!(kinds, [JobKind::ConfirmationEmail.as_str(), JobKind::Refund.as_str()], "one email, one refund");
        check_money(s.store.as_ref(), &[booking.id]).await.unwrap();
        check_performance(s.store.as_ref(), s.performance_id, &[booking.id], now).await.unwrap();
    }

    async fn a_late_payment_retakes_free_seats_and_refunds_when_they_are_gone(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let lucky = hold(&s.store, s.buyer, s.performance_id, vec![s.units[0]], now).await;
        let unlucky = hold(&s.store, s.buyer, s.performance_id, vec![s.units[1]], now).await;
        let lucky_pay = checkout(&s.store, &lucky, now, now).await;
        let unlucky_pay = checkout(&s.store, &unlucky, now, now).await;

        s.clock.advance(Duration::minutes(11));
        let later = s.clock.now();
        // The rival takes the unlucky buyer's seat after the hold expired.
        let rivals = hold(&s.store, s.rival.into(), s.performance_id, vec![s.units[1]], later).await;

        let ok = succeed(s.store.as_ref(), lucky_pay.uuid(), event("evt_lucky"), later).await;
        assert_eq!(ok.outcome, Outcome::Confirmed);
        let refunded = succeed(s.store.as_ref(), unlucky_pay.uuid(), event("evt_unlucky"), later).await;
        assert_eq!(refunded.outcome, Outcome::PaymentRefunded);
        assert_eq!(refunded.booking.unwrap().status, BookingStatus::Refunded);
        assert_eq!(s.store.payment(unlucky_pay).await.unwrap().unwrap().status, PaymentStatus::RefundPending);
        // The rival keeps the seat.
        assert_eq!(s.store.booking(rivals.id).await.unwrap().unwrap().status_at(later), BookingStatus::Held);
        let jobs = claim(&s.store, later, later + Duration::minutes(1), 10).await;
        let mut kinds: Vec<_> = jobs.iter().map(|j| j.kind.as_str()).collect();
        kinds.sort();
        assert_eq!(kinds, [JobKind::ConfirmationEmail.as_str(), JobKind::Refund.as_str()]);
        check_performance(s.store.as_ref(), s.performance_id, &[lucky.id, unlucky.id, rivals.id], later).await.unwrap();
        check_money(s.store.as_ref(), &[lucky.id, unlucky.id, rivals.id]).await.unwrap();
    }

    async fn refunding_a_confirmed_booking_returns_its_units_and_queues_the_refund(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..3].to_vec(), now).await;
        let payment_id = checkout(&s.store, &booking, now + Duration::minutes(30), now).await;
        succeed(s.store.as_ref(), payment_id.uuid(), None, now).await;
        claim(&s.store, now, now + Duration::minutes(1), 10).await;

        let refunded = cancel(s.store.as_ref(), booking.id, Actor::Buyer, now).await;
        assert_eq!(refunded.outcome, Outcome::Refunded);
        assert_eq!(refunded.booking.unwrap().status, BookingStatus::Refunded);
        assert_eq!(s.store.inventory(s.performance_id, now).await.unwrap().total.available, 4);
        assert_eq!(s.store.payment(payment_id).await.unwrap().unwrap().status, PaymentStatus::RefundPending);
        let jobs = claim(&s.store, now, now + Duration::minutes(1), 10).await;
        assert_eq!(jobs.iter().map(|j| j.kind.clone()).collect::<Vec<_>>(), [JobKind::Refund]);
        assert_eq!(
            cancel(s.store.as_ref(), booking.id, Actor::Organizer, now).await.outcome,
            Outcome::Refused(Refusal::NotRefundable(BookingStatus::Refunded))
        );

        assert_eq!(money_returned(s.store.as_ref(), payment_id.uuid(), None, now).await.outcome, Outcome::MoneyReturned { booking_refunded: false });
        assert_eq!(s.store.payment(payment_id).await.unwrap().unwrap().status, PaymentStatus::Refunded);
        assert_eq!(money_returned(s.store.as_ref(), payment_id.uuid(), None, now).await.outcome, Outcome::Duplicate);
        check_money(s.store.as_ref(), &[booking.id]).await.unwrap();
    }

    async fn buyers_refund_until_the_cutoff_and_organizers_after_it(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..1].to_vec(), now).await;
        let payment_id = checkout(&s.store, &booking, now + Duration::minutes(30), now).await;
        succeed(s.store.as_ref(), payment_id.uuid(), None, now).await;
        // The performance starts in 7 days; the cutoff is 24 hours before.
        let late = now + Duration::days(6) + Duration::hours(1);
        assert_eq!(cancel(s.store.as_ref(), booking.id, Actor::Buyer, late).await.outcome, Outcome::Refused(Refusal::RefundClosed));
        assert_eq!(s.store.booking(booking.id).await.unwrap().unwrap().status, BookingStatus::Confirmed);
        assert_eq!(cancel(s.store.as_ref(), booking.id, Actor::Organizer, late).await.outcome, Outcome::Refunded);
        check_money(s.store.as_ref(), &[booking.id]).await.unwrap();
    }

    async fn a_refund_made_at_the_provider_ends_the_booking(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..1].to_vec(), now).await;
        let payment_id = checkout(&s.store, &booking, now, now).await;
        succeed(s.store.as_ref(), payment_id.uuid(), None, now).await;
        let charge_refunded = lifecycle::provider_event("evt_r", "charge.refunded");
        assert_eq!(money_returned(s.store.as_ref(), payment_id.uuid(), charge_refunded.clone(), now).await.outcome, Outcome::MoneyReturned { booking_refunded: true });
        assert_eq!(money_returned(s.store.as_ref(), payment_id.uuid(), charge_refunded, now).await.outcome, Outcome::Duplicate, "replay");
        assert_eq!(s.store.booking(booking.id).await.unwrap().unwrap().status, BookingStatus::Refunded);
        assert_eq!(s.store.inventory(s.performance_id, now).await.unwrap().total.available, 4);
    }

    async fn a_failed_payment_leaves_the_hold_to_run_out(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..1].to_vec(), now).await;
        let payment_id = checkout(&s.store, &booking, now, now).await;
        assert_eq!(fail(s.store.as_ref(), payment_id.uuid(), event("evt_f"), now).await.outcome, Outcome::PaymentFailed);
        assert_eq!(fail(s.store.as_ref(), payment_id.uuid(), event("evt_f"), now).await.outcome, Outcome::Duplicate);
        assert_eq!(s.store.payment(payment_id).await.unwrap().unwrap().status, PaymentStatus::Failed);
        assert_eq!(s.store.booking(booking.id).await.unwrap().unwrap().status, BookingStatus::Held);
        // Checkout of an expired or cancelled hold is refused.
        s.clock.advance(Duration::minutes(11));
        let refused = lifecycle::checkout(s.store.as_ref(), booking.id, s.clock.now(), s.clock.now()).await;
        assert_eq!(refused.outcome, Outcome::Refused(Refusal::NotHeld(BookingStatus::Expired)));
    }

    async fn jobs_retry_die_and_come_back(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..1].to_vec(), now).await;
        let payment_id = checkout(&s.store, &booking, now, now).await;
        succeed(s.store.as_ref(), payment_id.uuid(), None, now).await;
        let job = claim(&s.store, now, now + Duration::seconds(30), 10).await.remove(0);
        assert_eq!(job.attempts, 1);
        // Claimed jobs are not handed out again while their lease runs.
        assert!(claim(&s.store, now, now + Duration::seconds(30), 10).await.is_empty());
        assert!(s.store.fail_job(job.id, job.lease.unwrap(), "smtp down", Some(now + Duration::seconds(10)), now).await.unwrap());
        assert!(claim(&s.store, now, now + Duration::seconds(30), 10).await.is_empty(), "not due yet");
        let again = claim(&s.store, now + Duration::seconds(10), now + Duration::seconds(40), 10).await;
        assert_eq!((again.len(), again[0].attempts, again[0].last_error.as_deref()), (1, 2, Some("smtp down")));
        // The first claim's lease is no longer the job's.
        assert!(!s.store.fail_job(job.id, job.lease.unwrap(), "stale", None, now).await.unwrap());
        assert!(s.store.fail_job(job.id, again[0].lease.unwrap(), "still down", None, now).await.unwrap());
        let dead = s.store.jobs(JobState::Dead, 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert!(s.store.requeue_job(job.id, now, &usher_store::Audit::system()).await.unwrap());
        assert!(!s.store.requeue_job(job.id, now, &usher_store::Audit::system()).await.unwrap(), "only dead jobs requeue");
        let revived = claim(&s.store, now, now + Duration::seconds(30), 10).await;
        assert_eq!(revived[0].attempts, 1);
        assert!(s.store.finish_job(job.id, revived[0].lease.unwrap(), now).await.unwrap());
        assert_eq!(s.store.jobs(JobState::Done, 10).await.unwrap().len(), 1);
    }

    async fn a_job_whose_worker_died_is_claimed_again_after_its_lease(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..1].to_vec(), now).await;
        let payment_id = checkout(&s.store, &booking, now, now).await;
        succeed(s.store.as_ref(), payment_id.uuid(), None, now).await;
        let claimed = claim(&s.store, now, now + Duration::seconds(30), 10).await;
        assert_eq!(claimed.len(), 1);
        // The worker dies here: no finish, no fail.
        let after_lease = now + Duration::seconds(31);
        let reclaimed = claim(&s.store, after_lease, after_lease + Duration::seconds(30), 10).await;
        assert_eq!(reclaimed.len(), 1);
        assert_eq!((reclaimed[0].id, reclaimed[0].attempts), (claimed[0].id, 2));
    }

    async fn emails_are_recorded_once(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..1].to_vec(), now).await;
        assert!(!s.store.email_sent(booking.id, EmailKind::Confirmation).await.unwrap());
        s.store.record_email_sent(booking.id, EmailKind::Confirmation, "<a@usher>", now).await.unwrap();
        s.store.record_email_sent(booking.id, EmailKind::Confirmation, "<b@usher>", now).await.unwrap();
        assert!(s.store.email_sent(booking.id, EmailKind::Confirmation).await.unwrap());
        // Each kind of email is its own record.
        assert!(!s.store.email_sent(booking.id, EmailKind::Cancellation).await.unwrap());
    }

    async fn idempotency_keys_replay_refuse_and_expire(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let store = &s.store;
        assert_eq!(store.idempotency_start("u1", "k1", "fp", now).await.unwrap(), IdempotencyStart::Started);
        assert_eq!(store.idempotency_start("u1", "k1", "fp", now).await.unwrap(), IdempotencyStart::InFlight { since: now });
        assert_eq!(store.idempotency_start("u1", "k1", "other", now).await.unwrap(), IdempotencyStart::Mismatch);
        assert_eq!(store.idempotency_start("u2", "k1", "fp", now).await.unwrap(), IdempotencyStart::Started, "keys are per caller");
        store.idempotency_complete("u1", "k1", 201, Some("application/json"), b"{\"id\":1}").await.unwrap();
        assert_eq!(
            store.idempotency_start("u1", "k1", "fp", now).await.unwrap(),
            IdempotencyStart::Replay { status: 201, content_type: Some("application/json".into()), body: b"{\"id\":1}".to_vec() }
        );
        store.idempotency_abandon("u2", "k1").await.unwrap();
        assert_eq!(store.idempotency_start("u2", "k1", "fp", now).await.unwrap(), IdempotencyStart::Started);
        assert_eq!(store.idempotency_purge(now + Duration::hours(24)).await.unwrap(), 2);
        assert_eq!(store.idempotency_start("u1", "k1", "fp", now).await.unwrap(), IdempotencyStart::Started);
    }

    async fn concurrent_requests_with_one_key_start_once(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = s.store.clone();
                tokio::spawn(async move { store.idempotency_start("u", "same", "fp", now).await.unwrap() })
            })
            .collect();
        let mut started = 0;
        for task in tasks {
            match task.await.unwrap() {
                IdempotencyStart::Started => started += 1,
                IdempotencyStart::InFlight { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(started, 1);
    }

    async fn race_late_payments_sweepers_and_rival_holds_keep_every_invariant(engine) {
        // 20 holds of two seats expire with checkout open; then, all at once: their 20
        // late payments arrive, 4 sweepers run, and 20 rivals try to hold the same pairs.
        // Afterwards every paid booking is confirmed with its seats sold to it, or refunded
        // with a refund queued; no seat is in two live bookings; counts add up.
        let store = engine.fresh_store().await;
        let clock = ManualClock::starting_now();
        let perf = performance(&store, clock.now(), reserved(&[("S", &[10; 4])]), 10).await;
        let units: Vec<UnitId> = store.units(perf.id, clock.now()).await.unwrap().into_iter().map(|u| u.id).collect();
        let buyer = user(&store, "buyer@example.com").await;
        let rival = user(&store, "rival@example.com").await;
        let t0 = clock.now();
        let mut bookings = Vec::new();
        let mut payments = Vec::new();
        for pair in units.chunks(2).take(20) {
            let booking = hold(&store, buyer.into(), perf.id, pair.to_vec(), t0).await;
            payments.push(checkout(&store, &booking, t0 + Duration::minutes(15), t0).await);
            bookings.push(booking);
        }
        clock.advance(Duration::minutes(20));
        let now = clock.now();
        let mut tasks = Vec::new();
        for (i, payment_id) in payments.iter().copied().enumerate() {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let event = Some(ProviderEvent { provider: usher_core::lifecycle::Provider::Stripe, event_id: format!("evt_{i}"), kind: "checkout.session.completed".into() });
                succeed(store.as_ref(), payment_id.uuid(), event, now).await;
                Ok(None)
            }));
        }
        for _ in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                usher_app::inventory::execute(store.as_ref(), InventoryCommand::Sweep { now, limit: 5 }).await.map(|_| None)
            }));
        }
        let holds = usher_testkit::holds(&store);
        for booking in &bookings {
            let holds = holds.clone();
            let pair: Vec<UnitId> = booking.units.iter().map(|u| u.unit_id).collect();
            let perf_id = perf.id;
            tasks.push(tokio::spawn(async move {
                let booking_id = BookingId::generate();
                let outcome = holds
                    .hold(HoldCommand {
                        booking_id,
                        user_id: rival.into(),
                        performance_id: perf_id,
                        selection: Selection::Units(pair),
                        now,
                        held_until: now + Duration::minutes(10),
                        offer: false,
                    })
                    .await?;
                Ok(matches!(outcome, CommandOutcome::Held(_)).then_some(booking_id))
            }));
        }
        let mut rivals = Vec::new();
        for task in tasks {
            if let Some(id) = task.await.unwrap().unwrap() {
                rivals.push(id);
            }
        }
        let mut all: Vec<BookingId> = bookings.iter().map(|b| b.id).collect();
        all.extend(&rivals);
        check_performance(store.as_ref(), perf.id, &all, now).await.unwrap();
        let mut confirmed = 0;
        for (booking, payment_id) in bookings.iter().zip(&payments) {
            let booking = store.booking(booking.id).await.unwrap().unwrap();
            let payment = store.payment(*payment_id).await.unwrap().unwrap();
            match booking.status {
                BookingStatus::Confirmed => {
                    confirmed += 1;
                    assert_eq!(payment.status, PaymentStatus::Succeeded);
                }
                BookingStatus::Refunded => assert_eq!(payment.status, PaymentStatus::RefundPending),
                other => panic!("a paid booking is {other}"),
            }
        }
        // Each pair went either to its payer or to its rival, never both, never neither.
        assert_eq!(confirmed + rivals.len(), 20, "confirmed {confirmed}, rivals {}", rivals.len());
        check_money(store.as_ref(), &all).await.unwrap();
        let jobs = claim(&store, now, now + Duration::minutes(1), 100).await;
        let refunds = jobs.iter().filter(|j| j.kind == JobKind::Refund).count();
        let emails = jobs.iter().filter(|j| j.kind == JobKind::ConfirmationEmail).count();
        assert_eq!((emails, refunds), (confirmed, 20 - confirmed));
    }
}
