//! The Stripe provider end to end, against a local fake of Stripe's API (wiremock) and
//! webhooks signed the way Stripe signs them.

use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use usher_server::PaymentsConfig;
use usher_testkit::on_each_engine;

use crate::helpers::{
    Session, TestApp, assert_problem, held_pair, on_sale, rows, spawn_app, spawn_app_with,
    start_checkout, unit_ids,
};

const WEBHOOK_SECRET: &str = "whsec_test_usher";

async fn stripe_app(engine: usher_testkit::Engine) -> (TestApp, MockServer) {
    let stripe = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "cs_test_1", "object": "checkout.session", "url": "https://checkout.stripe.test/pay/cs_test_1"
        })))
        .mount(&stripe)
        .await;
    let uri = stripe.uri();
    let app = spawn_app_with(engine, |c| {
        c.payments = PaymentsConfig::Stripe {
            secret_key: SecretString::from("sk_test_usher".to_owned()),
            webhook_secret: SecretString::from(WEBHOOK_SECRET.to_owned()),
            api_base: Some(uri),
        };
    })
    .await;
    (app, stripe)
}

/// A held booking of two seats with checkout started; returns the buyer, booking and checkout.
async fn checked_out(app: &TestApp) -> (Session, Value, Value) {
    let (_, customer, _, _, booking) = held_pair(app).await;
    let checkout = start_checkout(app, &customer, &booking).await;
    (customer, booking, checkout)
}

fn session_event(id: &str, kind: &str, checkout: &Value, booking: &Value) -> Value {
    json!({
        "id": id,
        "object": "event",
        "type": kind,
        "data": {"object": {
            "id": "cs_test_1",
            "object": "checkout.session",
            "payment_status": if kind == "checkout.session.expired" { "unpaid" } else { "paid" },
            "payment_intent": "pi_test_1",
            "metadata": {"booking_id": booking["id"], "payment_id": checkout["payment_id"]}
        }}
    })
}

async fn deliver(app: &TestApp, event: &Value, signature: Option<String>) -> reqwest::Response {
    let body = serde_json::to_vec(event).unwrap();
    let mut request = app
        .client
        .post(app.url("/v1/webhooks/stripe"))
        .header("content-type", "application/json")
        .body(body.clone());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    request.send().await.unwrap()
}

fn sign(app: &TestApp, event: &Value) -> String {
    usher_payments::webhook::sign(
        &serde_json::to_vec(event).unwrap(),
        WEBHOOK_SECRET,
        app.clock_now().timestamp(),
    )
}

async fn booking_status(app: &TestApp, who: &Session, booking: &Value) -> String {
    let read: Value = app
        .get(
            &format!("/v1/bookings/{}", booking["id"].as_str().unwrap()),
            Some(&who.access),
        )
        .await
        .json()
        .await
        .unwrap();
    read["status"].as_str().unwrap().to_owned()
}

on_each_engine! {
    async fn checkout_opens_a_stripe_session_and_a_signed_webhook_confirms(engine) {
        let (app, stripe) = stripe_app(engine).await;
        let (customer, booking, checkout) = checked_out(&app).await;
        assert_eq!(checkout["provider"], "stripe");
        assert_eq!(checkout["checkout_url"], "https://checkout.stripe.test/pay/cs_test_1");
        let expires: chrono::DateTime<chrono::Utc> = checkout["expires_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(expires, app.clock_now() + chrono::Duration::minutes(30), "Stripe's minimum window");

        let sent = &stripe.received_requests().await.unwrap()[0];
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&sent.body).unwrap();
        let field = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(field("metadata[payment_id]").as_deref(), checkout["payment_id"].as_str());
        assert_eq!(field("metadata[booking_id]").as_deref(), booking["id"].as_str());
        assert_eq!(field("line_items[0][price_data][unit_amount]").as_deref(), Some("9000"));
        assert_eq!(field("expires_at"), Some(expires.timestamp().to_string()));
        assert_eq!(sent.headers["authorization"], "Bearer sk_test_usher");

        let event = session_event("evt_1", "checkout.session.completed", &checkout, &booking);
        let response = deliver(&app, &event, Some(sign(&app, &event))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(booking_status(&app, &customer, &booking).await, "confirmed");
        app.run_jobs().await;
        assert_eq!(app.emails().len(), 1);
    }

    async fn fifty_concurrent_deliveries_of_one_event_confirm_once_and_email_once(engine) {
        let (app, _stripe) = stripe_app(engine).await;
        let (customer, booking, checkout) = checked_out(&app).await;
        let event = session_event("evt_dup", "checkout.session.completed", &checkout, &booking);
        let body = serde_json::to_vec(&event).unwrap();
        let signature = sign(&app, &event);
        let deliveries: Vec<_> = (0..50)
            .map(|_| {
                let request = app
                    .client
                    .post(app.url("/v1/webhooks/stripe"))
                    .header("content-type", "application/json")
                    .header("stripe-signature", signature.clone())
                    .body(body.clone());
                tokio::spawn(async move { request.send().await.unwrap().status() })
            })
            .collect();
        for delivery in deliveries {
            assert_eq!(delivery.await.unwrap(), StatusCode::OK);
        }
        assert_eq!(booking_status(&app, &customer, &booking).await, "confirmed");
        app.run_jobs().await;
        app.run_jobs().await;
        assert_eq!(app.emails().len(), 1, "one email for fifty deliveries");
    }

    async fn bad_missing_or_stale_signatures_are_400_and_change_nothing(engine) {
        let (app, _stripe) = stripe_app(engine).await;
        let (customer, booking, checkout) = checked_out(&app).await;
        let event = session_event("evt_bad", "checkout.session.completed", &checkout, &booking);
        let body = serde_json::to_vec(&event).unwrap();
        let now = app.clock_now().timestamp();
        let cases = [
            None,
            Some("t=1,v1=deadbeef".to_owned()),
            Some(usher_payments::webhook::sign(&body, "whsec_wrong", now)),
            Some(usher_payments::webhook::sign(&body, WEBHOOK_SECRET, now - 301)),
            Some(usher_payments::webhook::sign(b"{\"other\":1}", WEBHOOK_SECRET, now)),
        ];
        for signature in cases {
            assert_problem(deliver(&app, &event, signature).await, StatusCode::BAD_REQUEST).await;
        }
        assert_eq!(booking_status(&app, &customer, &booking).await, "held");
        // The same event, properly signed, still works: nothing was recorded before.
        assert_eq!(deliver(&app, &event, Some(sign(&app, &event))).await.status(), StatusCode::OK);
        assert_eq!(booking_status(&app, &customer, &booking).await, "confirmed");
    }

    async fn expired_sessions_fail_the_payment_and_async_success_confirms(engine) {
        let (app, _stripe) = stripe_app(engine).await;
        let (customer, booking, checkout) = checked_out(&app).await;
        let expired = session_event("evt_exp", "checkout.session.expired", &checkout, &booking);
        assert_eq!(deliver(&app, &expired, Some(sign(&app, &expired))).await.status(), StatusCode::OK);
        let payment = app.store.payment(checkout["payment_id"].as_str().unwrap().parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(payment.status, usher_store::PaymentStatus::Failed);
        assert_eq!(booking_status(&app, &customer, &booking).await, "held");
        let late = session_event("evt_async", "checkout.session.async_payment_succeeded", &checkout, &booking);
        assert_eq!(deliver(&app, &late, Some(sign(&app, &late))).await.status(), StatusCode::OK);
        assert_eq!(booking_status(&app, &customer, &booking).await, "confirmed");
        // Unknown kinds and unknown payments are acknowledged and ignored.
        let other = json!({"id": "evt_x", "type": "customer.created", "data": {"object": {"id": "cus_1"}}});
        assert_eq!(deliver(&app, &other, Some(sign(&app, &other))).await.status(), StatusCode::OK);
    }

    async fn cancelling_a_stripe_booking_refunds_at_stripe(engine) {
        let (app, stripe) = stripe_app(engine).await;
        Mock::given(method("POST"))
            .and(path("/v1/refunds"))
            .and(body_string_contains("payment_intent=pi_test_1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "re_1", "status": "succeeded"})))
            .expect(1)
            .mount(&stripe)
            .await;
        let (customer, booking, checkout) = checked_out(&app).await;
        let paid = session_event("evt_paid", "checkout.session.completed", &checkout, &booking);
        deliver(&app, &paid, Some(sign(&app, &paid))).await;
        let refunded = app.delete(&format!("/v1/bookings/{}", booking["id"].as_str().unwrap()), Some(&customer.access)).await;
        assert_eq!(refunded.status(), StatusCode::OK);
        app.run_jobs().await;
        let payment = app.store.payment(checkout["payment_id"].as_str().unwrap().parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(payment.status, usher_store::PaymentStatus::Refunded);
        // Stripe then reports the refund; that changes nothing more.
        let report = json!({"id": "evt_ref", "type": "charge.refunded", "data": {"object": {
            "id": "ch_1", "object": "charge", "refunded": true, "payment_intent": "pi_test_1"}}});
        assert_eq!(deliver(&app, &report, Some(sign(&app, &report))).await.status(), StatusCode::OK);
        assert_eq!(booking_status(&app, &customer, &booking).await, "refunded");
    }

    async fn a_refund_made_in_stripes_dashboard_ends_the_booking(engine) {
        let (app, _stripe) = stripe_app(engine).await;
        let (customer, booking, checkout) = checked_out(&app).await;
        let paid = session_event("evt_paid2", "checkout.session.completed", &checkout, &booking);
        deliver(&app, &paid, Some(sign(&app, &paid))).await;
        let report = json!({"id": "evt_dash", "type": "charge.refunded", "data": {"object": {
            "id": "ch_2", "object": "charge", "refunded": true, "payment_intent": "pi_test_1"}}});
        assert_eq!(deliver(&app, &report, Some(sign(&app, &report))).await.status(), StatusCode::OK);
        assert_eq!(booking_status(&app, &customer, &booking).await, "refunded");
    }

    async fn stripe_down_at_checkout_is_503_and_a_retry_with_the_same_key_runs_again(engine) {
        let stripe = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/checkout/sessions"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(1)
            .mount(&stripe)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/checkout/sessions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "cs_test_2", "url": "https://checkout.stripe.test/pay/cs_test_2"})))
            .mount(&stripe)
            .await;
        let uri = stripe.uri();
        let app = spawn_app_with(engine, |c| {
            c.payments = PaymentsConfig::Stripe {
                secret_key: SecretString::from("sk_test_usher".to_owned()),
                webhook_secret: SecretString::from(WEBHOOK_SECRET.to_owned()),
                api_base: Some(uri),
            };
        })
        .await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
        let ids = unit_ids(&app, performance["id"].as_str().unwrap()).await;
        let booking: Value = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "unit_ids": [ids[0]]})).await.json().await.unwrap();
        let url = app.url(&format!("/v1/bookings/{}/checkout", booking["id"].as_str().unwrap()));
        let attempt = || app.client.post(&url).bearer_auth(&customer.access).header("idempotency-key", "pay-1").json(&json!({})).send();
        assert_problem(attempt().await.unwrap(), StatusCode::SERVICE_UNAVAILABLE).await;
        let retry = attempt().await.unwrap();
        assert_eq!(retry.status(), StatusCode::OK, "5xx answers are not stored");
        assert!(retry.headers().get("idempotent-replayed").is_none());
        let replay = attempt().await.unwrap();
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
    }

    async fn each_provider_answers_only_its_own_endpoints(engine) {
        let (stripe_app, _stripe) = stripe_app(engine).await;
        let (customer, _, checkout) = checked_out(&stripe_app).await;
        let mock_pay = stripe_app
            .post(&format!("/v1/payments/mock/{}/complete", checkout["payment_id"].as_str().unwrap()), Some(&customer.access), json!({"outcome": "succeeded"}))
            .await;
        assert_problem(mock_pay, StatusCode::NOT_FOUND).await;
        let mock_app = spawn_app(engine).await;
        let event = json!({"id": "evt", "type": "x", "data": {"object": {}}});
        assert_problem(deliver(&mock_app, &event, Some("t=1,v1=00".into())).await, StatusCode::NOT_FOUND).await;
    }

    async fn a_webhook_arriving_with_the_redirect_confirms_once_and_refunds_nothing(engine) {
        // The buyer returns from Stripe (the redirect reads the booking) while Stripe sends
        // both "completed" and "async payment succeeded" for the same session, each twice.
        let (app, _stripe) = stripe_app(engine).await;
        let (customer, booking, checkout) = checked_out(&app).await;
        let events = [
            session_event("evt_done", "checkout.session.completed", &checkout, &booking),
            session_event("evt_async", "checkout.session.async_payment_succeeded", &checkout, &booking),
        ];
        let mut deliveries = Vec::new();
        for event in events.iter().chain(events.iter()) {
            let body = serde_json::to_vec(event).unwrap();
            let request = app
                .client
                .post(app.url("/v1/webhooks/stripe"))
                .header("content-type", "application/json")
                .header("stripe-signature", sign(&app, event))
                .body(body);
            deliveries.push(tokio::spawn(async move { request.send().await.unwrap().status() }));
        }
        let redirect = booking_status(&app, &customer, &booking).await;
        assert!(redirect == "held" || redirect == "confirmed", "{redirect}");
        for delivery in deliveries {
            assert_eq!(delivery.await.unwrap(), StatusCode::OK);
        }
        app.run_jobs().await;
        app.run_jobs().await;
        assert_eq!(booking_status(&app, &customer, &booking).await, "confirmed");
        let payment = uuid::Uuid::parse_str(checkout["payment_id"].as_str().unwrap()).unwrap();
        assert_eq!(app.store.payment(payment.into()).await.unwrap().unwrap().status, usher_store::PaymentStatus::Succeeded);
        let done = app.store.jobs(usher_store::JobState::Done, 100).await.unwrap();
        assert!(done.iter().all(|j| j.kind != usher_store::JobKind::Refund), "nothing refunded");
        assert_eq!(app.emails().len(), 1);
    }
}
