//! The money path over HTTP: paying twice, paying in two tabs, concurrent completions,
//! refunds and their cutoff, and cancelling an event or a performance — each ends with
//! the booking confirmed (or refunded) and every extra payment refunded exactly once.

use reqwest::StatusCode;
use serde_json::{Value, json};

use usher_core::lifecycle::PaymentStatus;
use usher_store::payments::JobKind;
use usher_store::{JobState, Store};
use usher_testkit::invariants::{check_money, check_performance};
use usher_testkit::on_each_engine;

use crate::helpers::{
    Session, TestApp, assert_problem, held_pair, on_sale, pay, rows, seat_states, spawn_app,
    start_checkout, unit_ids,
};

fn uuid(value: &Value) -> uuid::Uuid {
    uuid::Uuid::parse_str(value.as_str().unwrap()).unwrap()
}

async fn read_booking(app: &TestApp, who: &Session, booking: &Value) -> Value {
    app.get(
        &format!("/v1/bookings/{}", booking["id"].as_str().unwrap()),
        Some(&who.access),
    )
    .await
    .json()
    .await
    .unwrap()
}

/// Every booking ever made on the performance, from the attendee list.
async fn all_bookings(app: &TestApp, organizer: &Session, performance: &Value) -> Vec<uuid::Uuid> {
    let page: Value = app
        .get(
            &format!(
                "/v1/performances/{}/bookings?limit=100",
                performance["id"].as_str().unwrap()
            ),
            Some(&organizer.access),
        )
        .await
        .json()
        .await
        .unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| uuid(&b["id"]))
        .collect()
}

/// the invariants of docs/ARCHITECTURE.md for the performance, its bookings and their payments.
async fn assert_invariants(app: &TestApp, organizer: &Session, performance: &Value) {
    let bookings = all_bookings(app, organizer, performance).await;
    let store: &dyn Store = app.store.as_ref();
    check_performance(
        store,
        (uuid(&performance["id"])).into(),
        &bookings,
        app.clock_now(),
    )
    .await
    .unwrap();
    check_money(store, &bookings).await.unwrap();
}

async fn refund_jobs(app: &TestApp) -> usize {
    let mut count = 0;
    for state in [
        JobState::Queued,
        JobState::Running,
        JobState::Done,
        JobState::Dead,
    ] {
        count += app
            .store
            .jobs(state, 1000)
            .await
            .unwrap()
            .iter()
            .filter(|j| j.kind == JobKind::Refund)
            .count();
    }
    count
}

on_each_engine! {
    async fn paying_twice_in_two_tabs_keeps_the_booking_and_its_seats(engine) {
        // The report: two tabs start checkout, both pay. Both tabs get the same payment,
        // so the second "pay" is the same payment again; the booking stays confirmed.
        let app = spawn_app(engine).await;
        let (organizer, customer, performance, _, booking) = held_pair(&app).await;
        let tab1 = start_checkout(&app, &customer, &booking).await;
        app.clock.advance(chrono::Duration::seconds(20));
        let tab2 = start_checkout(&app, &customer, &booking).await;
        assert_eq!(tab1["payment_id"], tab2["payment_id"], "a repeat returns the open payment");
        assert_eq!(tab1["expires_at"], tab2["expires_at"], "and does not extend the hold again");
        assert_eq!(tab1["checkout_url"], tab2["checkout_url"]);
        for tab in [&tab1, &tab2] {
            let paid: Value = pay(&app, &customer, tab, "succeeded").await.json().await.unwrap();
            assert_eq!(paid["status"], "confirmed");
        }
        for _ in 0..3 {
            app.run_jobs().await;
        }
        app.clock.advance(chrono::Duration::minutes(30));
        app.run_jobs().await;
        assert_eq!(read_booking(&app, &customer, &booking).await["status"], "confirmed");
        assert_eq!(seat_states(&app, performance["id"].as_str().unwrap()).await[..2], ["sold", "sold"]);
        assert_eq!(refund_jobs(&app).await, 0, "nothing to refund");
        assert_eq!(app.emails().len(), 1);
        assert_invariants(&app, &organizer, &performance).await;
    }

    async fn a_second_payment_that_succeeds_is_refunded_once_and_the_booking_stays_confirmed(engine) {
        // Tab 1's payment fails, tab 2 opens a new one and pays; then tab 1's payment
        // settles after all. The second money goes back; the booking is untouched.
        let app = spawn_app(engine).await;
        let (organizer, customer, performance, _, booking) = held_pair(&app).await;
        let tab1 = start_checkout(&app, &customer, &booking).await;
        let failed: Value = pay(&app, &customer, &tab1, "failed").await.json().await.unwrap();
        assert_eq!(failed["status"], "held");
        let tab2 = start_checkout(&app, &customer, &booking).await;
        assert_ne!(tab1["payment_id"], tab2["payment_id"]);
        assert_eq!(tab1["expires_at"], tab2["expires_at"], "the hold is extended once");
        assert_eq!(pay(&app, &customer, &tab2, "succeeded").await.json::<Value>().await.unwrap()["status"], "confirmed");
        let late: Value = pay(&app, &customer, &tab1, "succeeded").await.json().await.unwrap();
        assert_eq!(late["status"], "confirmed", "the booking stays confirmed");
        for _ in 0..3 {
            app.run_jobs().await;
        }
        assert_eq!(read_booking(&app, &customer, &booking).await["status"], "confirmed");
        assert_eq!(seat_states(&app, performance["id"].as_str().unwrap()).await[..2], ["sold", "sold"]);
        let first = app.store.payment((uuid(&tab1["payment_id"])).into()).await.unwrap().unwrap();
        let second = app.store.payment((uuid(&tab2["payment_id"])).into()).await.unwrap().unwrap();
        assert_eq!((first.status, second.status), (PaymentStatus::Refunded, PaymentStatus::Succeeded));
        assert_eq!(refund_jobs(&app).await, 1, "refunded once");
        assert_eq!(app.emails().len(), 1);
        assert_invariants(&app, &organizer, &performance).await;
    }

    async fn twenty_concurrent_completions_of_one_payment_confirm_once(engine) {
        let app = spawn_app(engine).await;
        let (organizer, customer, performance, _, booking) = held_pair(&app).await;
        let checkout = start_checkout(&app, &customer, &booking).await;
        let path = format!("/v1/payments/mock/{}/complete", checkout["payment_id"].as_str().unwrap());
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let request = app.client.post(app.url(&path)).bearer_auth(&customer.access).json(&json!({"outcome": "succeeded"}));
                tokio::spawn(async move { request.send().await.unwrap() })
            })
            .collect();
        for task in tasks {
            let response = task.await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.json::<Value>().await.unwrap()["status"], "confirmed");
        }
        app.run_jobs().await;
        app.run_jobs().await;
        assert_eq!(refund_jobs(&app).await, 0);
        assert_eq!(app.emails().len(), 1, "one confirmation email");
        assert_invariants(&app, &organizer, &performance).await;
    }

    async fn buyers_refund_until_the_cutoff_and_organizers_after_it(engine) {
        let app = spawn_app(engine).await;
        let (organizer, customer, performance, _, booking) = held_pair(&app).await;
        let checkout = start_checkout(&app, &customer, &booking).await;
        pay(&app, &customer, &checkout, "succeeded").await;
        // The performance starts in seven days; buyers may refund until 24 hours before.
        app.clock.advance(chrono::Duration::days(6) + chrono::Duration::hours(1));
        let path = format!("/v1/bookings/{}", booking["id"].as_str().unwrap());
        let closed = assert_problem(app.delete(&path, Some(&customer.access)).await, StatusCode::CONFLICT).await;
        assert_eq!(closed["type"], "/problems/refund-closed");
        assert_eq!(read_booking(&app, &customer, &booking).await["status"], "confirmed");
        let refunded = app.post("/v1/refunds", Some(&organizer.access), json!({"booking_id": booking["id"]})).await;
        assert_eq!(refunded.status(), StatusCode::OK);
        assert_eq!(refunded.json::<Value>().await.unwrap()["status"], "refunded");
        app.run_jobs().await;
        assert_eq!(refund_jobs(&app).await, 1);
        assert_invariants(&app, &organizer, &performance).await;
    }

    async fn cancelling_an_event_releases_holds_refunds_payers_and_emails_them_once(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, _) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[10]), 4).await;
        let ids = unit_ids(&app, performance["id"].as_str().unwrap()).await;
        let mut buyers = Vec::new();
        let mut paid = Vec::new();
        for (i, unit) in ids.iter().take(6).enumerate() {
            let buyer = app.signup(&format!("buyer{i}@example.com")).await;
            let booking: Value = app
                .post("/v1/bookings", Some(&buyer.access), json!({"performance_id": performance["id"], "unit_ids": [unit]}))
                .await
                .json()
                .await
                .unwrap();
            // Four pay; two keep a hold, one of them with checkout open.
            if i < 4 {
                let checkout = start_checkout(&app, &buyer, &booking).await;
                pay(&app, &buyer, &checkout, "succeeded").await;
                paid.push(booking.clone());
            } else if i == 4 {
                start_checkout(&app, &buyer, &booking).await;
            }
            buyers.push((buyer, booking));
        }
        app.run_jobs().await; // the confirmation emails
        assert_eq!(app.emails().len(), 4);
        let event_id = performance["event_id"].as_str().unwrap();
        let cancelled = app.patch(&format!("/v1/events/{event_id}"), Some(&organizer.access), json!({"status": "cancelled"})).await;
        assert_eq!(cancelled.status(), StatusCode::OK);
        // Checkout and payment refuse at once, before the job has run.
        let (late_buyer, late_booking) = &buyers[5];
        let refused = app.post(&format!("/v1/bookings/{}/checkout", late_booking["id"].as_str().unwrap()), Some(&late_buyer.access), json!({})).await;
        assert_eq!(assert_problem(refused, StatusCode::CONFLICT).await["type"], "/problems/sale-cancelled");
        let sales: Value = app.get(&format!("/v1/events/{event_id}/sales"), Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!(sales["performances"][0]["status"], "cancelled");
        assert_eq!(sales["performances"][0]["cancellation_complete"], false);

        for _ in 0..4 {
            app.run_jobs().await;
        }
        for (buyer, booking) in &buyers {
            let status = read_booking(&app, buyer, booking).await["status"].clone();
            let expected = if paid.iter().any(|p| p["id"] == booking["id"]) { "refunded" } else { "cancelled" };
            assert_eq!(status, expected);
        }
        assert!(seat_states(&app, performance["id"].as_str().unwrap()).await.iter().all(|s| s == "available"));
        let sales: Value = app.get(&format!("/v1/events/{event_id}/sales"), Some(&organizer.access)).await.json().await.unwrap();
        let row = &sales["performances"][0];
        assert_eq!(row["cancellation_complete"], true, "{row}");
        assert_eq!((row["bookings"]["refunded"].as_u64(), row["bookings"]["refunds_done"].as_u64()), (Some(4), Some(4)));
        assert_eq!(refund_jobs(&app).await, 4, "one refund per payment");
        let emails = app.emails();
        let cancellations: Vec<_> = emails.iter().filter(|e| e.contains("Subject: Cancelled: On Sale")).collect();
        assert_eq!(cancellations.len(), 4, "each paying buyer told once");
        // Cancelling again changes nothing; nothing more runs.
        app.patch(&format!("/v1/events/{event_id}"), Some(&organizer.access), json!({"status": "cancelled"})).await;
        assert_eq!(app.run_jobs().await, 0);
        assert_eq!(app.emails().len(), 8);
        assert_invariants(&app, &organizer, &performance).await;
    }

    async fn a_payment_landing_after_the_cancellation_is_refunded(engine) {
        let app = spawn_app(engine).await;
        let (organizer, customer, performance, _, booking) = held_pair(&app).await;
        let checkout = start_checkout(&app, &customer, &booking).await;
        let cancelled = app.patch(&format!("/v1/performances/{}", performance["id"].as_str().unwrap()), Some(&organizer.access), json!({"status": "cancelled"})).await;
        assert_eq!(cancelled.status(), StatusCode::OK);
        assert_eq!(cancelled.json::<Value>().await.unwrap()["status"], "cancelled");
        let paid: Value = pay(&app, &customer, &checkout, "succeeded").await.json().await.unwrap();
        assert_eq!(paid["status"], "refunded", "the money goes back");
        for _ in 0..3 {
            app.run_jobs().await;
        }
        assert_eq!(app.store.payment((uuid(&checkout["payment_id"])).into()).await.unwrap().unwrap().status, PaymentStatus::Refunded);
        assert!(seat_states(&app, performance["id"].as_str().unwrap()).await.iter().all(|s| s == "available"));
        let hold = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "quantity": 1, "best_available": true})).await;
        assert_eq!(assert_problem(hold, StatusCode::CONFLICT).await["type"], "/problems/not-on-sale");
        assert_invariants(&app, &organizer, &performance).await;
    }

    async fn a_cancellation_interrupted_halfway_finishes_after_a_restart(engine) {
        // The worker claims the cancellation job and dies after refunding some bookings
        // (each booking is its own transaction). A new instance on the same database
        // takes the job over once the lease runs out and finishes: every booking refunded
        // once, every buyer emailed once.
        let app = spawn_app(engine).await;
        let (_, organizer, _) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[8]), 4).await;
        let ids = unit_ids(&app, performance["id"].as_str().unwrap()).await;
        let mut bookings = Vec::new();
        for (i, unit) in ids.iter().enumerate() {
            let buyer = app.signup(&format!("buyer{i}@example.com")).await;
            let booking: Value = app
                .post("/v1/bookings", Some(&buyer.access), json!({"performance_id": performance["id"], "unit_ids": [unit]}))
                .await
                .json()
                .await
                .unwrap();
            let checkout = start_checkout(&app, &buyer, &booking).await;
            pay(&app, &buyer, &checkout, "succeeded").await;
            bookings.push(uuid(&booking["id"]));
        }
        app.run_jobs().await;
        let event_id = performance["event_id"].as_str().unwrap();
        app.patch(&format!("/v1/events/{event_id}"), Some(&organizer.access), json!({"status": "cancelled"})).await;

        // The dying worker: claims the job, handles three bookings, never reports back.
        let now = app.clock_now();
        let claimed = app.store.claim_jobs(now, now + chrono::Duration::seconds(120), 10, uuid::Uuid::now_v7()).await.unwrap();
        assert_eq!(claimed.iter().map(|j| j.kind.clone()).collect::<Vec<_>>(), [JobKind::CancelSale]);
        for booking in &bookings[..3] {
            usher_testkit::lifecycle::sale_cancelled(app.store.as_ref(), (*booking).into(), now).await;
        }
        // A fresh instance on the same database after the lease has run out.
        let restarted = app.restart().await;
        restarted.clock.advance(chrono::Duration::seconds(121));
        for _ in 0..4 {
            restarted.run_jobs().await;
        }
        let sales: Value = restarted.get(&format!("/v1/events/{event_id}/sales"), Some(&organizer.access)).await.json().await.unwrap();
        let row = &sales["performances"][0];
        assert_eq!(row["cancellation_complete"], true, "{row}");
        assert_eq!(row["bookings"]["refunds_done"], 8);
        assert_eq!(refund_jobs(&restarted).await, 8, "one refund per payment");
        let cancellations = restarted.emails().iter().filter(|e| e.contains("Subject: Cancelled:")).count();
        assert_eq!(cancellations, 8, "each buyer told once");
        assert_eq!(restarted.run_jobs().await, 0);
        assert_invariants(&restarted, &organizer, &performance).await;
    }
}
