//! The Stripe provider against a local fake of Stripe's API (wiremock).

use chrono::{Duration, Utc};
use secrecy::SecretString;
use uuid::Uuid;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use usher_core::{Currency, Money};
use usher_payments::{
    CheckoutRequest, PaymentProvider, ProviderError, RefundRequest, StripeProvider,
};

fn provider(server: &MockServer) -> StripeProvider {
    StripeProvider::new(
        Some(server.uri()),
        SecretString::from("sk_test_123".to_owned()),
        std::time::Duration::from_secs(10),
    )
    .unwrap()
}

fn request(payment_id: Uuid, booking_id: Uuid) -> CheckoutRequest {
    CheckoutRequest {
        payment_id,
        booking_id,
        amount: Money::new(9000, Currency::parse("EUR").unwrap()),
        description: "Jazz on the Roof — 2 tickets".into(),
        expires_at: Utc::now() + Duration::minutes(31),
        customer_email: "ann@example.com".into(),
        success_url: "http://127.0.0.1:8080/done".into(),
        cancel_url: "http://127.0.0.1:8080/cancel".into(),
    }
}

fn form_field(body: &str, key: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(body).unwrap();
    pairs.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

#[tokio::test]
async fn checkout_session_is_created_with_the_amount_expiry_metadata_and_an_idempotency_key() {
    let server = MockServer::start().await;
    let (payment_id, booking_id) = (Uuid::now_v7(), Uuid::now_v7());
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .and(header("authorization", "Bearer sk_test_123"))
        .and(header("idempotency-key", format!("checkout-{payment_id}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": "cs_test_abc", "url": "https://checkout.stripe.test/c/cs_test_abc", "object": "checkout.session"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let checkout = request(payment_id, booking_id);
    let expires = checkout.expires_at.timestamp().to_string();
    let session = provider(&server).create_checkout(checkout).await.unwrap();
    assert_eq!(session.provider_ref, "cs_test_abc");
    assert_eq!(session.url, "https://checkout.stripe.test/c/cs_test_abc");

    let received = &server.received_requests().await.unwrap()[0];
    let body = String::from_utf8(received.body.clone()).unwrap();
    assert_eq!(form_field(&body, "mode").as_deref(), Some("payment"));
    assert_eq!(
        form_field(&body, "line_items[0][price_data][unit_amount]").as_deref(),
        Some("9000")
    );
    assert_eq!(
        form_field(&body, "line_items[0][price_data][currency]").as_deref(),
        Some("eur")
    );
    assert_eq!(form_field(&body, "expires_at"), Some(expires));
    assert_eq!(
        form_field(&body, "metadata[booking_id]"),
        Some(booking_id.to_string())
    );
    assert_eq!(
        form_field(&body, "metadata[payment_id]"),
        Some(payment_id.to_string())
    );
    assert_eq!(
        form_field(&body, "client_reference_id"),
        Some(booking_id.to_string())
    );
    assert_eq!(
        form_field(&body, "customer_email").as_deref(),
        Some("ann@example.com")
    );
}

#[tokio::test]
async fn stripe_errors_are_told_apart_retryable_or_not() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .and(body_string_contains("unit_amount"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": {"code": "parameter_invalid_integer", "message": "Invalid integer"}
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let stripe = provider(&server);
    let refused = stripe
        .create_checkout(request(Uuid::now_v7(), Uuid::now_v7()))
        .await;
    assert!(
        matches!(refused, Err(ProviderError::Refused(ref why)) if why.contains("Invalid integer")),
        "{refused:?}"
    );
    let unavailable = stripe
        .create_checkout(request(Uuid::now_v7(), Uuid::now_v7()))
        .await;
    assert!(
        matches!(unavailable, Err(ProviderError::Unavailable(_))),
        "{unavailable:?}"
    );
}

#[tokio::test]
async fn refund_names_the_payment_intent_and_is_idempotent() {
    let server = MockServer::start().await;
    let payment_id = Uuid::now_v7();
    Mock::given(method("GET"))
        .and(path("/v1/checkout/sessions/cs_test_abc"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": "cs_test_abc", "url": null, "payment_intent": "pi_123"
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .and(header(
            "idempotency-key",
            format!("refund-{payment_id}").as_str(),
        ))
        .and(body_string_contains("payment_intent=pi_123"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"id": "re_1", "status": "succeeded"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    provider(&server)
        .refund(RefundRequest {
            payment_id,
            amount: Money::new(9000, Currency::parse("EUR").unwrap()),
            provider_payment_ref: None,
            provider_ref: Some("cs_test_abc".into()),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn an_already_refunded_charge_counts_as_refunded() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": {"code": "charge_already_refunded", "message": "Charge has already been refunded."}
        })))
        .mount(&server)
        .await;
    provider(&server)
        .refund(RefundRequest {
            payment_id: Uuid::now_v7(),
            amount: Money::new(100, Currency::parse("EUR").unwrap()),
            provider_payment_ref: Some("pi_1".into()),
            provider_ref: None,
        })
        .await
        .unwrap();
}
