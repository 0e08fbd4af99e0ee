use reqwest::StatusCode;
use serde_json::{Value, json};

use usher_testkit::on_each_engine;

use crate::helpers::{
    assert_problem, held_pair, invalid_fields, on_sale, pay, rows, spawn_app, start_checkout,
    unit_ids,
};

on_each_engine! {
    async fn mock_flow_hold_checkout_pay_confirmed_one_email(engine) {
        let app = spawn_app(engine).await;
        let (organizer, customer, performance, ids, booking) = held_pair(&app).await;
        let checkout = start_checkout(&app, &customer, &booking).await;
        assert_eq!(checkout["provider"], "mock");
        let payment_id = checkout["payment_id"].as_str().unwrap();
        assert_eq!(checkout["checkout_url"], format!("{}/v1/payments/mock/{payment_id}/complete", app.address));
        let expires: chrono::DateTime<chrono::Utc> = checkout["expires_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(expires, app.clock_now() + chrono::Duration::minutes(15), "checkout extends the hold");

        let paid = pay(&app, &customer, &checkout, "succeeded").await;
        assert_eq!(paid.status(), StatusCode::OK);
        let paid: Value = paid.json().await.unwrap();
        assert_eq!(paid["status"], "confirmed");
        let codes: Vec<&str> = paid["units"].as_array().unwrap().iter().map(|u| u["ticket_code"].as_str().unwrap()).collect();
        assert_eq!(codes.len(), 2);
        assert_ne!(codes[0], codes[1]);

        let map: Value = app.get(&format!("/v1/performances/{}/seats", performance["id"].as_str().unwrap()), None).await.json().await.unwrap();
        assert_eq!(map["units"][0]["state"], "sold");
        assert_eq!(map["units"][0]["id"], ids[0].as_str());
        let sales: Value = app.get(&format!("/v1/events/{}/sales", performance["event_id"].as_str().unwrap()), Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!(sales["performances"][0]["sold"], 2);
        assert_eq!(sales["performances"][0]["revenue"], json!({"amount": 9000, "currency": "EUR"}));

        assert!(app.emails().is_empty(), "the email goes out through the outbox");
        app.run_jobs().await;
        app.run_jobs().await;
        let emails = app.emails();
        assert_eq!(emails.len(), 1, "exactly one email");
        let email = &emails[0];
        assert!(email.contains("To: \"Test Person\" <customer@example.com>"), "{email}");
        assert!(email.contains("Subject: Your tickets for On Sale"), "{email}");
        assert!(email.contains("Stalls, row A, seat 1") && email.contains("Stalls, row A, seat 2"), "{email}");
        assert!(email.contains("Total: 90.00 EUR"), "{email}");
        for code in codes {
            assert!(email.contains(code), "ticket code {code} in {email}");
        }

        // Paying again changes nothing; the confirmed booking outlives its hold.
        let again = pay(&app, &customer, &checkout, "succeeded").await;
        assert_eq!(again.status(), StatusCode::OK);
        app.clock.advance(chrono::Duration::hours(3));
        let read: Value = app.get(&format!("/v1/bookings/{}", booking["id"].as_str().unwrap()), Some(&customer.access)).await.json().await.unwrap();
        assert_eq!(read["status"], "confirmed");
        app.run_jobs().await;
        assert_eq!(app.emails().len(), 1);
        let metrics = app.get("/metrics", None).await.text().await.unwrap();
        for needle in [
            "usher_emails_sent_total",
            "usher_jobs_total{kind=\"confirmation_email\",outcome=\"done\"}",
            "usher_payments_total{outcome=\"confirmed\"}",
        ] {
            assert!(metrics.contains(needle), "{needle} missing");
        }
    }

    async fn a_failed_mock_payment_leaves_the_hold_and_sends_nothing(engine) {
        let app = spawn_app(engine).await;
        let (_, customer, _, _, booking) = held_pair(&app).await;
        let checkout = start_checkout(&app, &customer, &booking).await;
        let failed: Value = pay(&app, &customer, &checkout, "failed").await.json().await.unwrap();
        assert_eq!(failed["status"], "held");
        let bad = pay(&app, &customer, &checkout, "maybe").await;
        assert_eq!(invalid_fields(bad).await, ["outcome"]);
        app.run_jobs().await;
        assert!(app.emails().is_empty());
        // A new checkout can still succeed.
        let retry = start_checkout(&app, &customer, &booking).await;
        let paid: Value = pay(&app, &customer, &retry, "succeeded").await.json().await.unwrap();
        assert_eq!(paid["status"], "confirmed");
    }

    async fn checkout_is_for_the_buyers_live_holds_only(engine) {
        let app = spawn_app(engine).await;
        let (_, customer, _, _, booking) = held_pair(&app).await;
        let stranger = app.signup("stranger@example.com").await;
        let path = format!("/v1/bookings/{}/checkout", booking["id"].as_str().unwrap());
        assert_problem(app.post(&path, Some(&stranger.access), json!({})).await, StatusCode::NOT_FOUND).await;
        let checkout = start_checkout(&app, &customer, &booking).await;
        assert_problem(pay(&app, &stranger, &checkout, "succeeded").await, StatusCode::NOT_FOUND).await;
        app.clock.advance(chrono::Duration::minutes(16));
        let late = assert_problem(app.post(&path, Some(&customer.access), json!({})).await, StatusCode::CONFLICT).await;
        assert_eq!(late["type"], "/problems/booking-not-held");
    }

    async fn a_late_payment_is_confirmed_if_the_seats_are_still_free(engine) {
        let app = spawn_app(engine).await;
        let (_, customer, _, _, booking) = held_pair(&app).await;
        let checkout = start_checkout(&app, &customer, &booking).await;
        app.clock.advance(chrono::Duration::minutes(20));
        usher_server::sweeper::sweep_once(app.store.as_ref(), app.clock.as_ref()).await.unwrap();
        let paid: Value = pay(&app, &customer, &checkout, "succeeded").await.json().await.unwrap();
        assert_eq!(paid["status"], "confirmed");
        app.run_jobs().await;
        assert_eq!(app.emails().len(), 1);
    }

    async fn a_late_payment_for_seats_sold_on_is_refunded_and_the_other_buyer_keeps_them(engine) {
        let app = spawn_app(engine).await;
        let (_, customer, performance, ids, booking) = held_pair(&app).await;
        let rival = app.signup("rival@example.com").await;
        let checkout = start_checkout(&app, &customer, &booking).await;
        app.clock.advance(chrono::Duration::minutes(20));
        let rivals: Value = app
            .post("/v1/bookings", Some(&rival.access), json!({"performance_id": performance["id"], "unit_ids": [ids[1]]}))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(rivals["status"], "held");

        let paid: Value = pay(&app, &customer, &checkout, "succeeded").await.json().await.unwrap();
        assert_eq!(paid["status"], "refunded", "not confirmed: the seat is gone");
        assert!(paid["units"][0].get("ticket_code").is_none());
        app.run_jobs().await;
        assert!(app.emails().is_empty(), "no confirmation for a refunded booking");
        let payment = app.store.payment(checkout["payment_id"].as_str().unwrap().parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(payment.status, usher_store::PaymentStatus::Refunded, "the refund job ran");
        let map: Value = app.get(&format!("/v1/performances/{}/seats", performance["id"].as_str().unwrap()), None).await.json().await.unwrap();
        let states: Vec<&str> = map["units"].as_array().unwrap().iter().map(|u| u["state"].as_str().unwrap()).collect();
        assert_eq!(states, ["available", "held", "available", "available"]);
        let read: Value = app.get(&format!("/v1/bookings/{}", rivals["id"].as_str().unwrap()), Some(&rival.access)).await.json().await.unwrap();
        assert_eq!(read["status"], "held");
    }

    async fn money_for_an_event_set_back_to_draft_is_refunded_not_confirmed(engine) {
        let app = spawn_app(engine).await;
        let (organizer, customer, performance, ids, booking) = held_pair(&app).await;
        // A checkout opened while the event was on sale…
        let checkout = start_checkout(&app, &customer, &booking).await;
        let second: Value = app
            .post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "unit_ids": [ids[2]]}))
            .await
            .json()
            .await
            .unwrap();
        let event_path = format!("/v1/events/{}", performance["event_id"].as_str().unwrap());
        let draft = app.patch(&event_path, Some(&organizer.access), json!({"status": "draft"})).await;
        assert_eq!(draft.status(), StatusCode::OK);

        // … is paid after the organizer withdrew the event: refunded, never confirmed.
        let paid = pay(&app, &customer, &checkout, "succeeded").await;
        assert_eq!(paid.status(), StatusCode::OK);
        let paid: Value = paid.json().await.unwrap();
        assert_eq!(paid["status"], "refunded", "{paid}");
        app.run_jobs().await;
        assert!(app.emails().is_empty(), "no confirmation for a withdrawn sale");
        let payment = app.store.payment(checkout["payment_id"].as_str().unwrap().parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(payment.status, usher_store::PaymentStatus::Refunded, "the refund job ran");
        // Nothing new is paid for meanwhile: the other hold cannot start checkout.
        let refused = app
            .post(&format!("/v1/bookings/{}/checkout", second["id"].as_str().unwrap()), Some(&customer.access), json!({}))
            .await;
        let problem = assert_problem(refused, StatusCode::CONFLICT).await;
        assert_eq!(problem["type"], "/problems/not-on-sale");
        // The refunded booking's seats are free again.
        let map: Value = app
            .get(&format!("/v1/performances/{}/seats", performance["id"].as_str().unwrap()), Some(&organizer.access))
            .await
            .json()
            .await
            .unwrap();
        let states: Vec<&str> = map["units"].as_array().unwrap().iter().map(|u| u["state"].as_str().unwrap()).collect();
        assert_eq!(states, ["available", "available", "held", "available"]);
    }

    async fn cancelling_a_confirmed_booking_refunds_it_and_frees_the_seats(engine) {
        let app = spawn_app(engine).await;
        let (_, customer, performance, _, booking) = held_pair(&app).await;
        let checkout = start_checkout(&app, &customer, &booking).await;
        pay(&app, &customer, &checkout, "succeeded").await;
        let path = format!("/v1/bookings/{}", booking["id"].as_str().unwrap());
        let refunded = app.delete(&path, Some(&customer.access)).await;
        assert_eq!(refunded.status(), StatusCode::OK);
        let refunded: Value = refunded.json().await.unwrap();
        assert_eq!(refunded["status"], "refunded");
        let counts: Value = app.get(&format!("/v1/performances/{}", performance["id"].as_str().unwrap()), None).await.json().await.unwrap();
        assert_eq!((counts["available"].as_u64(), counts["sold"].as_u64()), (Some(4), Some(0)));
        app.run_jobs().await;
        let payment = app.store.payment(checkout["payment_id"].as_str().unwrap().parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(payment.status, usher_store::PaymentStatus::Refunded);
        assert_problem(app.delete(&path, Some(&customer.access)).await, StatusCode::CONFLICT).await;
    }

    async fn organizers_and_admins_refund_through_v1_refunds(engine) {
        let app = spawn_app(engine).await;
        let admin = app.signup("admin@example.com").await;
        let organizer = app.organizer("org@example.com", &admin).await;
        let rival = app.organizer("rival@example.com", &admin).await;
        let customer = app.signup("customer@example.com").await;
        let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
        let ids = unit_ids(&app, performance["id"].as_str().unwrap()).await;
        let booking: Value = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "unit_ids": [ids[0]]})).await.json().await.unwrap();
        let body = json!({"booking_id": booking["id"]});
        let not_yet = assert_problem(app.post("/v1/refunds", Some(&organizer.access), body.clone()).await, StatusCode::CONFLICT).await;
        assert_eq!(not_yet["type"], "/problems/booking-not-confirmed");
        let checkout = start_checkout(&app, &customer, &booking).await;
        pay(&app, &customer, &checkout, "succeeded").await;
        assert_problem(app.post("/v1/refunds", Some(&customer.access), body.clone()).await, StatusCode::FORBIDDEN).await;
        assert_problem(app.post("/v1/refunds", Some(&rival.access), body.clone()).await, StatusCode::NOT_FOUND).await;
        let refunded = app.post("/v1/refunds", Some(&organizer.access), body).await;
        assert_eq!(refunded.status(), StatusCode::OK);
        let refunded: Value = refunded.json().await.unwrap();
        assert_eq!(refunded["status"], "refunded");
    }

    async fn a_worker_that_dies_mid_job_loses_nothing(engine) {
        // A worker claims the email job and dies before finishing: after the lease the
        // job is claimed again, and exactly one email goes out.
        let app = spawn_app(engine).await;
        let (_, customer, _, _, booking) = held_pair(&app).await;
        let checkout = start_checkout(&app, &customer, &booking).await;
        pay(&app, &customer, &checkout, "succeeded").await;
        let now = app.clock_now();
        let dead_lease = uuid::Uuid::now_v7();
        let claimed = app.store.claim_jobs(now, now + chrono::Duration::seconds(120), 10, dead_lease).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(app.run_jobs().await, 0, "leased to the dead worker");
        app.clock.advance(chrono::Duration::seconds(121));
        assert_eq!(app.run_jobs().await, 1);
        assert_eq!(app.emails().len(), 1);
        // The first worker comes back to life and reports a failure under its old lease:
        // the outcome of the worker that took over stands.
        let later = app.clock_now();
        assert!(!app.store.fail_job(claimed[0].id, dead_lease, "stale", Some(later), later).await.unwrap());
        assert!(!app.store.finish_job(claimed[0].id, dead_lease, later).await.unwrap());
        let done = app.store.jobs(usher_store::JobState::Done, 10).await.unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].id, claimed[0].id);
        app.clock.advance(chrono::Duration::hours(1));
        assert_eq!(app.run_jobs().await, 0);
        assert_eq!(app.emails().len(), 1);
    }

    async fn jobs_that_keep_failing_die_and_admins_requeue_them(engine) {
        let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let app = crate::helpers::spawn_app_with(engine, |c| {
            c.mail.smtp_url = Some(format!("smtp://127.0.0.1:{closed_port}"));
        })
        .await;
        let (_, customer, _, _, booking) = held_pair(&app).await;
        let checkout = start_checkout(&app, &customer, &booking).await;
        pay(&app, &customer, &checkout, "succeeded").await;
        for _ in 0..8 {
            assert_eq!(app.run_jobs().await, 1);
            app.clock.advance(chrono::Duration::hours(2));
        }
        let admin = app.login("admin@example.com").await;
        let dead: Value = app.get("/v1/admin/jobs?state=dead", Some(&admin.access)).await.json().await.unwrap();
        let items = dead["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["kind"], "confirmation_email");
        assert_eq!(items[0]["attempts"], 8);
        assert!(items[0]["last_error"].as_str().unwrap().len() > 3);
        assert_problem(app.get("/v1/admin/jobs", Some(&customer.access)).await, StatusCode::FORBIDDEN).await;
        assert_eq!(invalid_fields(app.get("/v1/admin/jobs?state=zombie", Some(&admin.access)).await).await, ["state"]);
        let path = format!("/v1/admin/jobs/{}/retry", items[0]["id"].as_str().unwrap());
        assert_eq!(app.post(&path, Some(&admin.access), json!({})).await.status(), StatusCode::NO_CONTENT);
        assert_problem(app.post(&path, Some(&admin.access), json!({})).await, StatusCode::NOT_FOUND).await;
        let queued: Value = app.get("/v1/admin/jobs?state=queued", Some(&admin.access)).await.json().await.unwrap();
        assert_eq!(queued["items"][0]["attempts"], 0);
    }

    async fn idempotency_key_replays_the_first_answer_and_holds_once(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
        let ids = unit_ids(&app, performance["id"].as_str().unwrap()).await;
        let body = json!({"performance_id": performance["id"], "unit_ids": [ids[0]]});
        let send = |key: &'static str, body: Value| {
            app.client.post(app.url("/v1/bookings")).bearer_auth(&customer.access).header("idempotency-key", key).json(&body).send()
        };
        let first = send("k-1", body.clone()).await.unwrap();
        assert_eq!(first.status(), StatusCode::CREATED);
        assert!(first.headers().get("idempotent-replayed").is_none());
        let first_body = first.text().await.unwrap();
        let again = send("k-1", body.clone()).await.unwrap();
        assert_eq!(again.status(), StatusCode::CREATED);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.text().await.unwrap(), first_body);
        let other = send("k-1", json!({"performance_id": performance["id"], "unit_ids": [ids[1]]})).await.unwrap();
        assert_eq!(invalid_fields(other).await, ["Idempotency-Key"]);
        let mine: Value = app.get("/v1/bookings", Some(&customer.access)).await.json().await.unwrap();
        assert_eq!(mine["items"].as_array().unwrap().len(), 1, "one effect");
        // Keys are per caller: another buyer's k-1 is a new request (and loses the seat).
        let other_buyer = app.signup("other@example.com").await;
        let theirs = app.client.post(app.url("/v1/bookings")).bearer_auth(&other_buyer.access).header("idempotency-key", "k-1").json(&body).send().await.unwrap();
        assert_eq!(theirs.status(), StatusCode::CONFLICT);
        assert!(theirs.headers().get("idempotent-replayed").is_none());
        // Bad keys are refused.
        let long = "x".repeat(300);
        let bad = app.client.post(app.url("/v1/bookings")).bearer_auth(&customer.access).header("idempotency-key", long).json(&body).send().await.unwrap();
        assert_eq!(invalid_fields(bad).await, ["Idempotency-Key"]);
    }

    async fn a_key_whose_request_died_answers_409_and_says_so_after_five_minutes(engine) {
        use sha2::Digest;
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, crate::helpers::standing(10), 4).await;
        let body = json!({"performance_id": performance["id"], "ticket_type_id": performance["ticket_types"][0]["id"], "quantity": 1});
        // A request with this key was claimed, then the server died before answering.
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"POST /v1/bookings\n");
        hasher.update(serde_json::to_vec(&body).unwrap());
        let fingerprint = hex::encode(hasher.finalize());
        let claimed = app.store.idempotency_start(&customer.id, "dead", &fingerprint, app.clock_now()).await.unwrap();
        assert_eq!(claimed, usher_store::IdempotencyStart::Started);
        let send = || app.client.post(app.url("/v1/bookings")).bearer_auth(&customer.access).header("idempotency-key", "dead").json(&body).send();
        let busy = assert_problem(send().await.unwrap(), StatusCode::CONFLICT).await;
        assert_eq!(busy["type"], "/problems/idempotency-key-in-use");
        app.clock.advance(chrono::Duration::minutes(6));
        let dead = assert_problem(send().await.unwrap(), StatusCode::CONFLICT).await;
        assert_eq!(dead["type"], "/problems/idempotency-key-abandoned");
        let counts: Value = app.get(&format!("/v1/performances/{}", performance["id"].as_str().unwrap()), None).await.json().await.unwrap();
        assert_eq!(counts["held"], 0, "nothing ran twice, nothing ran at all");
    }

    async fn concurrent_duplicates_with_one_key_take_effect_once(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, crate::helpers::standing(50), 4).await;
        let body = json!({"performance_id": performance["id"], "ticket_type_id": performance["ticket_types"][0]["id"], "quantity": 1});
        let requests: Vec<_> = (0..10)
            .map(|_| {
                let request = app.client.post(app.url("/v1/bookings")).bearer_auth(&customer.access).header("idempotency-key", "same").json(&body);
                tokio::spawn(async move { request.send().await.unwrap().status() })
            })
            .collect();
        let mut statuses = Vec::new();
        for request in requests {
            statuses.push(request.await.unwrap());
        }
        assert!(statuses.iter().all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT), "{statuses:?}");
        let mine: Value = app.get("/v1/bookings", Some(&customer.access)).await.json().await.unwrap();
        assert_eq!(mine["items"].as_array().unwrap().len(), 1, "exactly one hold");
        let counts: Value = app.get(&format!("/v1/performances/{}", performance["id"].as_str().unwrap()), None).await.json().await.unwrap();
        assert_eq!(counts["held"], 1);
    }
}
