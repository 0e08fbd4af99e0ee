//! The mock provider: no money moves. Checkout sends the buyer to Usher's own
//! `POST /v1/payments/mock/{payment_id}/complete`, which settles the payment through the
//! same confirmation path a real provider's webhook takes.

use async_trait::async_trait;

use crate::{CheckoutRequest, CheckoutSession, PaymentProvider, ProviderError, RefundRequest};

pub struct MockProvider {
    public_url: String,
}

impl MockProvider {
    /// `public_url` is where buyers reach this Usher, e.g. `http://127.0.0.1:8080`.
    pub fn new(public_url: impl Into<String>) -> Self {
        Self {
            public_url: public_url.into().trim_end_matches('/').to_owned(),
        }
    }
}

#[async_trait]
impl PaymentProvider for MockProvider {
    fn provider(&self) -> usher_core::lifecycle::Provider {
        usher_core::lifecycle::Provider::Mock
    }

    fn min_checkout_window(&self) -> chrono::Duration {
        chrono::Duration::zero()
    }

    async fn create_checkout(
        &self,
        request: CheckoutRequest,
    ) -> Result<CheckoutSession, ProviderError> {
        Ok(CheckoutSession {
            provider_ref: format!("mock_{}", request.payment_id.simple()),
            url: format!(
                "{}/v1/payments/mock/{}/complete",
                self.public_url, request.payment_id
            ),
        })
    }

    async fn refund(&self, request: RefundRequest) -> Result<(), ProviderError> {
        tracing::info!(payment_id = %request.payment_id, "mock refund: nothing to return");
        Ok(())
    }
}
