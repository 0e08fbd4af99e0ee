//! Stripe Checkout over Stripe's REST API with reqwest: form-encoded requests, a bearer
//! secret key, and an `Idempotency-Key` on every write so a retried request never opens
//! a second session or refunds twice. `STRIPE_API_BASE` points it at a local fake in
//! tests.

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{CheckoutRequest, CheckoutSession, PaymentProvider, ProviderError, RefundRequest};

pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

pub struct StripeProvider {
    client: reqwest::Client,
    api_base: String,
    secret_key: SecretString,
}

#[derive(Debug, Deserialize)]
struct Session {
    id: String,
    url: Option<String>,
    payment_intent: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: StripeError,
}

#[derive(Debug, Deserialize)]
struct StripeError {
    code: Option<String>,
    message: Option<String>,
}

impl StripeProvider {
    /// `timeout` bounds each call to Stripe, connecting included: a Stripe that does
    /// not answer fails the call (503 to the buyer, a retry for a job) instead of
    /// holding a request or a worker.
    pub fn new(
        api_base: Option<String>,
        secret_key: SecretString,
        timeout: std::time::Duration,
    ) -> Result<Self, ProviderError> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|e| ProviderError::Refused(format!("http client: {e}")))?;
        Ok(Self {
            client,
            api_base: api_base
                .unwrap_or_else(|| DEFAULT_API_BASE.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            secret_key,
        })
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ProviderError> {
        let response = request
            .bearer_auth(self.secret_key.expose_secret())
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("stripe unreachable: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<ErrorBody>(&body)
            .map(|b| {
                format!(
                    "{} ({})",
                    b.error.message.unwrap_or_default(),
                    b.error.code.unwrap_or_default()
                )
            })
            .unwrap_or(body);
        if status.is_server_error() || status.as_u16() == 429 {
            Err(ProviderError::Unavailable(format!(
                "stripe answered {status}: {detail}"
            )))
        } else {
            Err(ProviderError::Refused(format!(
                "stripe answered {status}: {detail}"
            )))
        }
    }
}

#[async_trait]
impl PaymentProvider for StripeProvider {
    fn provider(&self) -> usher_core::lifecycle::Provider {
        usher_core::lifecycle::Provider::Stripe
    }

    /// Stripe refuses a Checkout Session that expires sooner than 30 minutes.
    fn min_checkout_window(&self) -> chrono::Duration {
        chrono::Duration::minutes(30)
    }

    async fn create_checkout(
        &self,
        request: CheckoutRequest,
    ) -> Result<CheckoutSession, ProviderError> {
        let booking_id = request.booking_id.to_string();
        let payment_id = request.payment_id.to_string();
        let form: Vec<(&str, String)> = vec![
            ("mode", "payment".into()),
            ("success_url", request.success_url),
            ("cancel_url", request.cancel_url),
            ("client_reference_id", booking_id.clone()),
            ("customer_email", request.customer_email),
            ("expires_at", request.expires_at.timestamp().to_string()),
            ("line_items[0][quantity]", "1".into()),
            (
                "line_items[0][price_data][currency]",
                request.amount.currency.as_str().to_lowercase(),
            ),
            (
                "line_items[0][price_data][unit_amount]",
                request.amount.amount.to_string(),
            ),
            (
                "line_items[0][price_data][product_data][name]",
                request.description,
            ),
            ("metadata[booking_id]", booking_id.clone()),
            ("metadata[payment_id]", payment_id.clone()),
            ("payment_intent_data[metadata][booking_id]", booking_id),
            ("payment_intent_data[metadata][payment_id]", payment_id),
        ];
        let response = self
            .send(
                self.client
                    .post(format!("{}/v1/checkout/sessions", self.api_base))
                    .header(
                        "Idempotency-Key",
                        format!("checkout-{}", request.payment_id),
                    )
                    .form(&form),
            )
            .await?;
        let session: Session = response
            .json()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("unreadable stripe answer: {e}")))?;
        let url = session.url.ok_or_else(|| {
            ProviderError::Refused("stripe returned a session without a url".into())
        })?;
        Ok(CheckoutSession {
            provider_ref: session.id,
            url,
        })
    }

    async fn refund(&self, request: RefundRequest) -> Result<(), ProviderError> {
        let payment_intent = match request.provider_payment_ref {
            Some(intent) => intent,
            None => {
                let session_id = request.provider_ref.ok_or_else(|| {
                    ProviderError::Refused("nothing identifies the payment at stripe".into())
                })?;
                let session: Session = self
                    .send(self.client.get(format!(
                        "{}/v1/checkout/sessions/{session_id}",
                        self.api_base
                    )))
                    .await?
                    .json()
                    .await
                    .map_err(|e| {
                        ProviderError::Unavailable(format!("unreadable stripe answer: {e}"))
                    })?;
                session.payment_intent.ok_or_else(|| {
                    ProviderError::Refused("the checkout session has no payment to refund".into())
                })?
            }
        };
        let form = [
            ("payment_intent", payment_intent),
            ("metadata[payment_id]", request.payment_id.to_string()),
        ];
        match self
            .send(
                self.client
                    .post(format!("{}/v1/refunds", self.api_base))
                    .header("Idempotency-Key", format!("refund-{}", request.payment_id))
                    .form(&form),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Refunded before (by us or in the dashboard): the money is back either way.
            Err(ProviderError::Refused(why)) if why.contains("charge_already_refunded") => Ok(()),
            Err(e) => Err(e),
        }
    }
}
