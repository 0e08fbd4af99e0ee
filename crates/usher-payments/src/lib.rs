//! Payment providers. The server asks a [`PaymentProvider`] for a checkout and, later,
//! for refunds; confirmations come back through the same path whichever provider it is
//! (the mock's "pay" endpoint or Stripe's webhook both end in `Store::confirm_payment`).
//!
//! - [`MockProvider`]: a real, documented provider for demos and local use. Its checkout
//!   URL is Usher's own `POST /v1/payments/mock/{payment_id}/complete`.
//! - [`StripeProvider`]: Stripe Checkout Sessions over Stripe's REST API (form-encoded,
//!   idempotency keys on every write), and [`webhook::verify`] for `Stripe-Signature`.

pub mod mock;
pub mod stripe;
pub mod webhook;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use usher_core::Money;

pub use mock::MockProvider;
pub use stripe::StripeProvider;

/// What the provider needs to open a checkout.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub payment_id: Uuid,
    pub booking_id: Uuid,
    pub amount: Money,
    /// One line the buyer sees, e.g. "Jazz on the Roof — 2 tickets".
    pub description: String,
    /// The checkout closes then; aligned with the hold.
    pub expires_at: DateTime<Utc>,
    pub customer_email: String,
    pub success_url: String,
    pub cancel_url: String,
}

/// The provider's answer: its id of the checkout and where to send the buyer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub provider_ref: String,
    pub url: String,
}

/// What a refund needs to know about the payment.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub payment_id: Uuid,
    pub amount: Money,
    /// The provider's id of the captured payment (a Stripe PaymentIntent).
    pub provider_payment_ref: Option<String>,
    /// The provider's id of the checkout, when the payment id is not known yet.
    pub provider_ref: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached or answered 5xx / 429: try again later.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request; retrying the same request will not help.
    #[error("payment provider refused the request: {0}")]
    Refused(String),
}

#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// Stored with each payment it opens.
    fn provider(&self) -> usher_core::lifecycle::Provider;
    /// The shortest checkout window this provider accepts (Stripe: 30 minutes).
    fn min_checkout_window(&self) -> chrono::Duration;
    async fn create_checkout(
        &self,
        request: CheckoutRequest,
    ) -> Result<CheckoutSession, ProviderError>;
    /// Returns the money. Safe to call again for the same payment.
    async fn refund(&self, request: RefundRequest) -> Result<(), ProviderError>;
}
