//! The payments story on both engines: checkout, confirmation (once, whatever the
//! replays), late payments, refunds, the job outbox and idempotency keys.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use usher_core::{Booking, BookingStatus, Clock, ManualClock, UnitState};
use usher_store::payments::job_kind;
use usher_store::{
    CheckoutStart, CommandOutcome, Confirmation, HoldCommand, IdempotencyStart, InventoryCommand,
    JobState, PaymentStatus, ProviderEvent, RefundOutcome, Selection, Store,
};
use usher_testkit::fixtures::{performance, reserved, user};
use usher_testkit::invariants::check_performance;
use usher_testkit::on_each_engine;

async fn hold(
    store: &Arc<dyn Store>,
    user_id: Uuid,
    performance_id: Uuid,
    units: Vec<Uuid>,
    now: DateTime<Utc>,
) -> Booking {
    let outcome = store
        .execute(InventoryCommand::Hold(HoldCommand {
            booking_id: Uuid::now_v7(),
            user_id,
            performance_id,
            selection: Selection::Units(units),
            now,
            held_until: now + Duration::minutes(10),
        }))
        .await
        .unwrap();
    match outcome {
        CommandOutcome::Held(booking) => booking,
        other => panic!("{other:?}"),
    }
}

async fn checkout(
    store: &Arc<dyn Store>,
    booking: &Booking,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Uuid {
    let payment_id = Uuid::now_v7();
    match store
        .start_checkout(booking.id, payment_id, "mock", until, now)
        .await
        .unwrap()
    {
        CheckoutStart::Started { payment, .. } => {
            assert_eq!(payment.status, PaymentStatus::Pending);
            assert_eq!(payment.amount, booking.total);
            payment.id
        }
        other => panic!("{other:?}"),
    }
}

fn event(id: &str) -> Option<ProviderEvent> {
    Some(ProviderEvent {
        provider: "stripe".into(),
        event_id: id.into(),
        kind: "checkout.session.completed".into(),
    })
}

struct Scene {
    store: Arc<dyn Store>,
    clock: ManualClock,
    performance_id: Uuid,
    units: Vec<Uuid>,
    buyer: Uuid,
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
        buyer,
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
        // A later, shorter checkout never shortens the hold.
        checkout(&s.store, &booking, now + Duration::minutes(5), now).await;
        assert_eq!(s.store.booking(booking.id).await.unwrap().unwrap().held_until, now + Duration::minutes(30));
        s.store.attach_checkout(payment_id, "cs_test_1", "https://pay.example/cs_test_1").await.unwrap();
        let by_ref = s.store.payment_by_ref("mock", "cs_test_1").await.unwrap().unwrap();
        assert_eq!(by_ref.id, payment_id);

        let confirmed = s.store.confirm_payment(payment_id, event("evt_1"), Some("pi_1".into()), now).await.unwrap();
        let Confirmation::Confirmed(confirmed) = confirmed else { panic!("{confirmed:?}") };
        assert_eq!(confirmed.status, BookingStatus::Confirmed);
        let units = s.store.units(s.performance_id, now).await.unwrap();
        assert_eq!(units.iter().filter(|u| u.state == UnitState::Sold).count(), 2);
        let payment = s.store.payment(payment_id).await.unwrap().unwrap();
        assert_eq!(payment.status, PaymentStatus::Succeeded);
        assert_eq!(payment.provider_payment_ref.as_deref(), Some("pi_1"));

        // The same event again, or the same payment by another event: nothing changes.
        assert_eq!(s.store.confirm_payment(payment_id, event("evt_1"), None, now).await.unwrap(), Confirmation::AlreadyProcessed);
        assert_eq!(s.store.confirm_payment(payment_id, event("evt_2"), None, now).await.unwrap(), Confirmation::AlreadyProcessed);
        let jobs = s.store.claim_jobs(now, now + Duration::minutes(1), 10).await.unwrap();
        assert_eq!(jobs.len(), 1, "exactly one email job");
        assert_eq!(jobs[0].kind, job_kind::CONFIRMATION_EMAIL);
        assert_eq!(jobs[0].payload["booking_id"], booking.id.to_string());

        // A confirmed booking outlives its hold time.
        s.clock.advance(Duration::hours(2));
        let later = s.clock.now();
        assert_eq!(s.store.booking(booking.id).await.unwrap().unwrap().status_at(later), BookingStatus::Confirmed);
        assert!(matches!(s.store.execute(InventoryCommand::Sweep { now: later, limit: 10 }).await.unwrap(), CommandOutcome::Swept { released_units: 0, .. }));
        check_performance(s.store.as_ref(), s.performance_id, &[booking.id], later).await.unwrap();
    }

    async fn fifty_concurrent_deliveries_of_one_event_confirm_once(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..2].to_vec(), now).await;
        let payment_id = checkout(&s.store, &booking, now + Duration::minutes(30), now).await;
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let store = s.store.clone();
                tokio::spawn(async move { store.confirm_payment(payment_id, event("evt_dup"), None, now).await.unwrap() })
            })
            .collect();
        let mut confirmed = 0;
        for task in tasks {
            match task.await.unwrap() {
                Confirmation::Confirmed(_) => confirmed += 1,
                Confirmation::AlreadyProcessed => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(confirmed, 1);
        assert_eq!(s.store.claim_jobs(now, now + Duration::minutes(1), 100).await.unwrap().len(), 1);
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
        let rivals = hold(&s.store, s.rival, s.performance_id, vec![s.units[1]], later).await;

        let ok = s.store.confirm_payment(lucky_pay, event("evt_lucky"), None, later).await.unwrap();
        assert!(matches!(ok, Confirmation::Confirmed(_)), "{ok:?}");
        let refunded = s.store.confirm_payment(unlucky_pay, event("evt_unlucky"), None, later).await.unwrap();
        let Confirmation::Refunding(refunded) = refunded else { panic!("{refunded:?}") };
        assert_eq!(refunded.status, BookingStatus::Refunded);
        assert_eq!(s.store.payment(unlucky_pay).await.unwrap().unwrap().status, PaymentStatus::RefundPending);
        // The rival keeps the seat.
        assert_eq!(s.store.booking(rivals.id).await.unwrap().unwrap().status_at(later), BookingStatus::Held);
        let jobs = s.store.claim_jobs(later, later + Duration::minutes(1), 10).await.unwrap();
        let mut kinds: Vec<_> = jobs.iter().map(|j| j.kind.as_str()).collect();
        kinds.sort();
        assert_eq!(kinds, [job_kind::CONFIRMATION_EMAIL, job_kind::REFUND]);
        check_performance(s.store.as_ref(), s.performance_id, &[lucky.id, unlucky.id, rivals.id], later).await.unwrap();
    }

    async fn refunding_a_confirmed_booking_returns_its_units_and_queues_the_refund(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..3].to_vec(), now).await;
        let payment_id = checkout(&s.store, &booking, now + Duration::minutes(30), now).await;
        s.store.confirm_payment(payment_id, None, None, now).await.unwrap();
        s.store.claim_jobs(now, now + Duration::minutes(1), 10).await.unwrap();

        let RefundOutcome::Refunding(refunded) = s.store.refund_booking(booking.id, now).await.unwrap() else { panic!() };
        assert_eq!(refunded.status, BookingStatus::Refunded);
        assert_eq!(s.store.inventory(s.performance_id, now).await.unwrap().total.available, 4);
        assert_eq!(s.store.payment(payment_id).await.unwrap().unwrap().status, PaymentStatus::RefundPending);
        let jobs = s.store.claim_jobs(now, now + Duration::minutes(1), 10).await.unwrap();
        assert_eq!(jobs.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>(), [job_kind::REFUND]);
        assert_eq!(s.store.refund_booking(booking.id, now).await.unwrap(), RefundOutcome::NotRefundable(BookingStatus::Refunded));

        assert!(s.store.payment_refunded(payment_id, None, now).await.unwrap());
        assert_eq!(s.store.payment(payment_id).await.unwrap().unwrap().status, PaymentStatus::Refunded);
        assert!(!s.store.payment_refunded(payment_id, None, now).await.unwrap());
    }

    async fn a_refund_made_at_the_provider_ends_the_booking(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..1].to_vec(), now).await;
        let payment_id = checkout(&s.store, &booking, now, now).await;
        s.store.confirm_payment(payment_id, None, None, now).await.unwrap();
        let charge_refunded = Some(ProviderEvent { provider: "stripe".into(), event_id: "evt_r".into(), kind: "charge.refunded".into() });
        assert!(s.store.payment_refunded(payment_id, charge_refunded.clone(), now).await.unwrap());
        assert!(!s.store.payment_refunded(payment_id, charge_refunded, now).await.unwrap(), "replay");
        assert_eq!(s.store.booking(booking.id).await.unwrap().unwrap().status, BookingStatus::Refunded);
        assert_eq!(s.store.inventory(s.performance_id, now).await.unwrap().total.available, 4);
    }

    async fn a_failed_payment_leaves_the_hold_to_run_out(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..1].to_vec(), now).await;
        let payment_id = checkout(&s.store, &booking, now, now).await;
        assert!(s.store.fail_payment(payment_id, event("evt_f"), now).await.unwrap());
        assert!(!s.store.fail_payment(payment_id, event("evt_f"), now).await.unwrap());
        assert_eq!(s.store.payment(payment_id).await.unwrap().unwrap().status, PaymentStatus::Failed);
        assert_eq!(s.store.booking(booking.id).await.unwrap().unwrap().status, BookingStatus::Held);
        // Checkout of an expired or cancelled hold is refused.
        s.clock.advance(Duration::minutes(11));
        let refused = s.store.start_checkout(booking.id, Uuid::now_v7(), "mock", s.clock.now(), s.clock.now()).await.unwrap();
        assert_eq!(refused, CheckoutStart::NotHeld(BookingStatus::Expired));
    }

    async fn jobs_retry_die_and_come_back(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..1].to_vec(), now).await;
        let payment_id = checkout(&s.store, &booking, now, now).await;
        s.store.confirm_payment(payment_id, None, None, now).await.unwrap();
        let job = s.store.claim_jobs(now, now + Duration::seconds(30), 10).await.unwrap().remove(0);
        assert_eq!(job.attempts, 1);
        // Claimed jobs are not handed out again while their lease runs.
        assert!(s.store.claim_jobs(now, now + Duration::seconds(30), 10).await.unwrap().is_empty());
        s.store.fail_job(job.id, "smtp down", Some(now + Duration::seconds(10)), now).await.unwrap();
        assert!(s.store.claim_jobs(now, now + Duration::seconds(30), 10).await.unwrap().is_empty(), "not due yet");
        let again = s.store.claim_jobs(now + Duration::seconds(10), now + Duration::seconds(40), 10).await.unwrap();
        assert_eq!((again.len(), again[0].attempts, again[0].last_error.as_deref()), (1, 2, Some("smtp down")));
        s.store.fail_job(job.id, "still down", None, now).await.unwrap();
        let dead = s.store.jobs(JobState::Dead, 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert!(s.store.requeue_job(job.id, now).await.unwrap());
        assert!(!s.store.requeue_job(job.id, now).await.unwrap(), "only dead jobs requeue");
        let revived = s.store.claim_jobs(now, now + Duration::seconds(30), 10).await.unwrap();
        assert_eq!(revived[0].attempts, 1);
        s.store.finish_job(job.id, now).await.unwrap();
        assert_eq!(s.store.jobs(JobState::Done, 10).await.unwrap().len(), 1);
    }

    async fn a_job_whose_worker_died_is_claimed_again_after_its_lease(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..1].to_vec(), now).await;
        let payment_id = checkout(&s.store, &booking, now, now).await;
        s.store.confirm_payment(payment_id, None, None, now).await.unwrap();
        let claimed = s.store.claim_jobs(now, now + Duration::seconds(30), 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        // The worker dies here: no finish, no fail.
        let after_lease = now + Duration::seconds(31);
        let reclaimed = s.store.claim_jobs(after_lease, after_lease + Duration::seconds(30), 10).await.unwrap();
        assert_eq!(reclaimed.len(), 1);
        assert_eq!((reclaimed[0].id, reclaimed[0].attempts), (claimed[0].id, 2));
    }

    async fn emails_are_recorded_once(engine) {
        let s = scene(engine).await;
        let now = s.clock.now();
        let booking = hold(&s.store, s.buyer, s.performance_id, s.units[..1].to_vec(), now).await;
        assert!(!s.store.email_sent(booking.id).await.unwrap());
        s.store.record_email_sent(booking.id, "<a@usher>", now).await.unwrap();
        s.store.record_email_sent(booking.id, "<b@usher>", now).await.unwrap();
        assert!(s.store.email_sent(booking.id).await.unwrap());
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
        let units: Vec<Uuid> = store.units(perf.id, clock.now()).await.unwrap().into_iter().map(|u| u.id).collect();
        let buyer = user(&store, "buyer@example.com").await;
        let rival = user(&store, "rival@example.com").await;
        let t0 = clock.now();
        let mut bookings = Vec::new();
        let mut payments = Vec::new();
        for pair in units.chunks(2).take(20) {
            let booking = hold(&store, buyer, perf.id, pair.to_vec(), t0).await;
            payments.push(checkout(&store, &booking, t0 + Duration::minutes(15), t0).await);
            bookings.push(booking);
        }
        clock.advance(Duration::minutes(20));
        let now = clock.now();
        let mut tasks = Vec::new();
        for (i, payment_id) in payments.iter().copied().enumerate() {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let event = Some(ProviderEvent { provider: "stripe".into(), event_id: format!("evt_{i}"), kind: "checkout.session.completed".into() });
                store.confirm_payment(payment_id, event, None, now).await.map(|_| None)
            }));
        }
        for _ in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.execute(InventoryCommand::Sweep { now, limit: 5 }).await.map(|_| None)
            }));
        }
        for booking in &bookings {
            let store = store.clone();
            let pair: Vec<Uuid> = booking.units.iter().map(|u| u.unit_id).collect();
            let perf_id = perf.id;
            tasks.push(tokio::spawn(async move {
                let booking_id = Uuid::now_v7();
                let outcome = store
                    .execute(InventoryCommand::Hold(HoldCommand {
                        booking_id,
                        user_id: rival,
                        performance_id: perf_id,
                        selection: Selection::Units(pair),
                        now,
                        held_until: now + Duration::minutes(10),
                    }))
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
        let mut all: Vec<Uuid> = bookings.iter().map(|b| b.id).collect();
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
        let jobs = store.claim_jobs(now, now + Duration::minutes(1), 100).await.unwrap();
        let refunds = jobs.iter().filter(|j| j.kind == job_kind::REFUND).count();
        let emails = jobs.iter().filter(|j| j.kind == job_kind::CONFIRMATION_EMAIL).count();
        assert_eq!((emails, refunds), (confirmed, 20 - confirmed));
    }
}
