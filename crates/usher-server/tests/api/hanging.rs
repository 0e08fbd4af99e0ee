//! Outside services that accept a connection and then never answer (a black hole on
//! loopback, silent for a minute): Stripe's API during a checkout and a refund, the
//! SMTP server during a confirmation. Each call ends at the outbound timeout; no
//! database transaction is held meanwhile (other writes go through at once), the
//! request answers 503, and a job retries with backoff until it is parked as dead.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use usher_server::PaymentsConfig;
use usher_testkit::on_each_engine;

use crate::helpers::{
    TestApp, assert_problem, held_pair, pay, spawn_app_with, start_checkout, unit_ids,
};

const TIMEOUT: Duration = Duration::from_secs(2);

/// A server that accepts connections and says nothing, for a minute at most.
struct BlackHole {
    address: String,
    accepted: Arc<AtomicUsize>,
}

impl BlackHole {
    async fn open() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            let mut open = Vec::new();
            let until = tokio::time::Instant::now() + Duration::from_secs(60);
            while let Ok(Ok((stream, _))) = tokio::time::timeout_at(until, listener.accept()).await
            {
                open.push(stream);
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        Self { address, accepted }
    }

    /// Waits (at most 20 s) until someone has connected: a call is in flight.
    async fn called(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.accepted.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "nobody called {}", self.address);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Jobs in `state`, as an admin sees them.
async fn jobs(app: &TestApp, state: &str) -> Vec<Value> {
    let admin = app.login("admin@example.com").await;
    let page: Value = app
        .get(
            &format!("/v1/admin/jobs?state={state}"),
            Some(&admin.access),
        )
        .await
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

/// Runs due jobs again and again, moving the clock past each backoff, until the one
/// job is dead; every round ends within the timeout. Returns its attempts.
async fn run_until_dead(app: &TestApp) -> u64 {
    for _ in 0..20 {
        let started = Instant::now();
        app.run_jobs().await;
        assert!(
            started.elapsed() < TIMEOUT * 3,
            "a job round took {:?}",
            started.elapsed()
        );
        if let Some(dead) = jobs(app, "dead").await.first() {
            assert!(
                dead["last_error"].as_str().is_some_and(|e| !e.is_empty()),
                "{dead}"
            );
            return dead["attempts"].as_u64().unwrap();
        }
        app.clock.advance(chrono::Duration::hours(2));
    }
    panic!("the job never died: {:?}", jobs(app, "queued").await);
}

on_each_engine! {
    async fn a_stripe_that_never_answers_fails_the_checkout_in_time_and_blocks_nothing(engine) {
        let stripe = BlackHole::open().await;
        let app = spawn_app_with(engine, |c| {
            c.payments = PaymentsConfig::Stripe {
                secret_key: SecretString::from("sk_test_usher".to_owned()),
                webhook_secret: SecretString::from("whsec_usher".to_owned()),
                api_base: Some(format!("http://{}", stripe.address)),
            };
            c.outbound_timeout = TIMEOUT;
        })
        .await;
        let (_, customer, performance, ids, booking) = held_pair(&app).await;
        let booking_id = booking["id"].as_str().unwrap().to_owned();
        let checkout = {
            let (client, url, token) = (app.client.clone(), app.url(&format!("/v1/bookings/{booking_id}/checkout")), customer.access.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let response = client.post(url).bearer_auth(token).json(&json!({})).send().await.unwrap();
                (response, started.elapsed())
            })
        };
        // While the checkout waits for Stripe (its call has reached it), others write: a
        // sign-up and a hold on the same performance are answered before the checkout
        // is (nothing is locked across the call).
        stripe.called().await;
        let other = app.signup("other@example.com").await;
        let hold = app
            .post("/v1/bookings", Some(&other.access), json!({"performance_id": performance["id"], "unit_ids": [ids[2]]}))
            .await;
        assert_eq!(hold.status(), StatusCode::CREATED);
        assert!(!checkout.is_finished(), "the writes waited for the checkout's call to Stripe");

        let (response, took) = checkout.await.unwrap();
        assert!(took < TIMEOUT + Duration::from_secs(2), "the checkout took {took:?}");
        assert!(took >= TIMEOUT - Duration::from_millis(200), "{took:?}");
        assert_eq!(response.headers()["retry-after"], "1");
        assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        // Nothing was lost: the hold stands and the buyer may try again.
        let booking: Value = app.get(&format!("/v1/bookings/{booking_id}"), Some(&customer.access)).await.json().await.unwrap();
        assert_eq!(booking["status"], "held", "{booking}");
        let map = unit_ids(&app, performance["id"].as_str().unwrap()).await;
        assert_eq!(map.len(), 4);
    }

    async fn an_smtp_server_that_never_answers_costs_each_attempt_one_timeout_until_the_job_is_dead(engine) {
        let smtp = BlackHole::open().await.address;
        let app = spawn_app_with(engine, |c| {
            c.mail.smtp_url = Some(format!("smtp://{smtp}"));
            c.outbound_timeout = TIMEOUT;
        })
        .await;
        let (_, customer, _, _, booking) = held_pair(&app).await;
        let checkout = start_checkout(&app, &customer, &booking).await;
        let paid: Value = pay(&app, &customer, &checkout, "succeeded").await.json().await.unwrap();
        assert_eq!(paid["status"], "confirmed");
        let attempts = run_until_dead(&app).await;
        let dead = jobs(&app, "dead").await;
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0]["kind"], "confirmation_email");
        assert_eq!(dead[0]["max_attempts"].as_u64(), Some(attempts), "{dead:?}");
        // The booking it was about is untouched.
        let booking: Value = app.get(&format!("/v1/bookings/{}", paid["id"].as_str().unwrap()), Some(&customer.access)).await.json().await.unwrap();
        assert_eq!(booking["status"], "confirmed");
    }

    async fn a_job_attempt_ends_at_its_deadline_whatever_the_outside_timeout(engine) {
        let smtp = BlackHole::open().await.address;
        let app = spawn_app_with(engine, |c| {
            c.mail.smtp_url = Some(format!("smtp://{smtp}"));
            // The mailer would wait a minute; the attempt may take half the 2 s lease.
            c.outbound_timeout = Duration::from_secs(60);
            c.job_lease = chrono::Duration::seconds(2);
        })
        .await;
        let (_, customer, _, _, booking) = held_pair(&app).await;
        let checkout = start_checkout(&app, &customer, &booking).await;
        pay(&app, &customer, &checkout, "succeeded").await;
        let started = Instant::now();
        assert_eq!(app.run_jobs().await, 1);
        assert!(started.elapsed() < Duration::from_secs(3), "the attempt took {:?}", started.elapsed());
        let queued = jobs(&app, "queued").await;
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert!(queued[0]["last_error"].as_str().unwrap().contains("took longer than"), "{queued:?}");
    }
}
