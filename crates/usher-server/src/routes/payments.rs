//! Paying: starting checkout for a hold, the mock provider's "pay" button, Stripe's
//! webhook, and refunds. Whatever the provider, a successful payment ends in
//! `Store::confirm_payment`, one transaction that records the provider event, sells the
//! units and queues the email (or, if the units are gone, queues the refund).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use usher_core::{BookingStatus, Role};
use usher_payments::{CheckoutRequest, webhook};
use usher_store::{CheckoutStart, Confirmation, ProviderEvent, RefundOutcome};

use crate::config::PaymentsConfig;
use crate::extract::{Caller, Json, path_id};
use crate::problem::{ApiError, Problem};
use crate::routes::bookings::{BookingView, owned_booking, readable_booking};
use crate::state::AppState;

/// Starting checkout gives the buyer at least this long to pay …
const CHECKOUT_WINDOW: Duration = Duration::minutes(15);
/// … but a hold never lasts longer than this after it was taken, checkout or not.
pub const MAX_HOLD: Duration = Duration::minutes(90);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(checkout))
        .routes(routes!(complete_mock_payment))
        .routes(routes!(stripe_webhook))
        .routes(routes!(create_refund))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutView {
    pub payment_id: Uuid,
    #[schema(example = "mock")]
    pub provider: String,
    /// Send the buyer here to pay.
    pub checkout_url: String,
    /// The hold (and the checkout) end then.
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MockOutcome {
    /// `succeeded` or `failed`.
    #[schema(example = "succeeded")]
    pub outcome: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequestBody {
    pub booking_id: Uuid,
}

/// Starts paying for a held booking. The hold is extended to cover the checkout (at
/// least 15 minutes from now, or the provider's minimum, and never beyond 90 minutes
/// after it was taken).
#[utoipa::path(post, path = "/v1/bookings/{id}/checkout", tag = "payments",
    params(("id" = Uuid, Path, description = "Booking id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Checkout started", body = CheckoutView),
        (status = 404, description = "No such booking among the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The booking is not held", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The payment provider cannot be reached; try again", body = Problem, content_type = "application/problem+json"),
    ))]
async fn checkout(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<CheckoutView>, ApiError> {
    let booking = owned_booking(&state, caller, path_id(&id)?).await?;
    let now = state.clock().now();
    let provider = state.payments();
    let window = CHECKOUT_WINDOW.max(provider.min_checkout_window());
    let hold_until = (now + window).min(booking.created_at + MAX_HOLD);
    let payment_id = Uuid::now_v7();
    let (booking, payment) = match state
        .store()
        .start_checkout(booking.id, payment_id, provider.name(), hold_until, now)
        .await?
    {
        CheckoutStart::Started { booking, payment } => (booking, payment),
        CheckoutStart::NotHeld(status) => return Err(not_held(status)),
        CheckoutStart::NoSuchBooking => return Err(ApiError::NotFound),
    };
    let user = state
        .store()
        .user(caller.id)
        .await?
        .ok_or(ApiError::Unauthorized("the account no longer exists"))?;
    let performance = state.store().performance(booking.performance_id).await?;
    let event = match &performance {
        Some(p) => state.store().event(p.event_id).await?,
        None => None,
    };
    let title = event.map_or_else(|| "Tickets".to_owned(), |e| e.title.as_str().to_owned());
    let base = state.public_url();
    // No lock is held here: the hold is already extended, and the provider call may take
    // its time.
    let session = provider
        .create_checkout(CheckoutRequest {
            payment_id,
            booking_id: booking.id,
            amount: payment.amount,
            description: format!("{title} — {} ticket(s)", booking.units.len()),
            // Stripe insists on its minimum window; a payment after the hold ends
            // follows the late-payment rule.
            expires_at: booking.held_until.max(now + provider.min_checkout_window()),
            customer_email: user.email.as_str().to_owned(),
            success_url: format!("{base}/v1/bookings/{}", booking.id),
            cancel_url: format!("{base}/v1/bookings/{}", booking.id),
        })
        .await;
    let session = match session {
        Ok(session) => session,
        Err(error) => {
            state.store().fail_payment(payment_id, None, now).await?;
            return Err(ApiError::ServiceUnavailable(format!("checkout: {error}")));
        }
    };
    state
        .store()
        .attach_checkout(payment_id, &session.provider_ref, &session.url)
        .await?;
    tracing::info!(booking_id = %booking.id, payment_id = %payment_id, "checkout started");
    Ok(axum::Json(CheckoutView {
        payment_id,
        provider: provider.name().to_owned(),
        checkout_url: session.url,
        expires_at: booking.held_until,
    }))
}

/// The mock provider's "pay" button: settles a payment as if the provider had called
/// back. Only with `USHER_PAYMENT_PROVIDER=mock`, only by the buyer.
#[utoipa::path(post, path = "/v1/payments/mock/{payment_id}/complete", tag = "payments",
    params(("payment_id" = Uuid, Path, description = "Payment id from checkout")),
    request_body = MockOutcome,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The booking after the payment", body = BookingView),
        (status = 404, description = "No such payment among the caller's, or the mock provider is off", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown outcome", body = Problem, content_type = "application/problem+json"),
    ))]
async fn complete_mock_payment(
    State(state): State<AppState>,
    caller: Caller,
    Path(payment_id): Path<String>,
    Json(body): Json<MockOutcome>,
) -> Result<axum::Json<BookingView>, ApiError> {
    if !matches!(state.config().payments, PaymentsConfig::Mock) {
        return Err(ApiError::NotFound);
    }
    let payment_id = path_id(&payment_id)?;
    let payment = state
        .store()
        .payment(payment_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let booking = state
        .store()
        .booking(payment.booking_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if booking.user_id != caller.id || payment.provider != "mock" {
        return Err(ApiError::NotFound);
    }
    let now = state.clock().now();
    match body.outcome.as_str() {
        "succeeded" => {
            log_confirmation(
                payment_id,
                &state
                    .store()
                    .confirm_payment(payment_id, None, None, now)
                    .await?,
            );
        }
        "failed" => {
            state.store().fail_payment(payment_id, None, now).await?;
            metrics::counter!("usher_payments_total", "outcome" => "failed").increment(1);
        }
        _ => {
            return Err(ApiError::validation(
                "outcome",
                "outcome is \"succeeded\" or \"failed\"",
            ));
        }
    }
    let booking = state
        .store()
        .booking(booking.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(axum::Json(BookingView::new(&state, booking, now)))
}

#[derive(Debug, Deserialize)]
struct StripeEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: StripeEventData,
}

#[derive(Debug, Deserialize)]
struct StripeEventData {
    object: serde_json::Value,
}

/// Stripe's webhook. The raw body is checked against `Stripe-Signature`; each event is
/// recorded by id in the transaction of its effect, so a replay answers 200 and changes
/// nothing.
#[utoipa::path(post, path = "/v1/webhooks/stripe", tag = "payments",
    request_body(content = String, description = "Stripe event, raw JSON", content_type = "application/json"),
    responses(
        (status = 200, description = "Handled, or already handled"),
        (status = 400, description = "Missing, bad or stale signature; nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Stripe is not the configured provider", body = Problem, content_type = "application/problem+json"),
    ))]
async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let PaymentsConfig::Stripe { webhook_secret, .. } = &state.config().payments else {
        return Err(ApiError::NotFound);
    };
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::MalformedBody("the Stripe-Signature header is missing".into()))?;
    let now = state.clock().now();
    webhook::verify(
        &body,
        signature,
        secrecy::ExposeSecret::expose_secret(webhook_secret),
        now.timestamp(),
    )
    .map_err(|e| ApiError::MalformedBody(e.to_string()))?;
    let event: StripeEvent = serde_json::from_slice(&body)
        .map_err(|e| ApiError::MalformedBody(format!("not a Stripe event: {e}")))?;
    let object = &event.data.object;
    let recorded = ProviderEvent {
        provider: "stripe".into(),
        event_id: event.id.clone(),
        kind: event.kind.clone(),
    };
    let payment = match find_payment(&state, object).await? {
        Some(payment) => payment,
        None => {
            // Not ours (another integration on the same account) or unknown: say so to
            // Stripe once, without making it retry forever.
            tracing::warn!(event_id = %event.id, kind = %event.kind, "stripe event for no known payment");
            return Ok(StatusCode::OK);
        }
    };
    let intent = object["payment_intent"].as_str().map(str::to_owned);
    match event.kind.as_str() {
        "checkout.session.completed" if object["payment_status"] == "paid" => {
            let outcome = state
                .store()
                .confirm_payment(payment, Some(recorded), intent, now)
                .await?;
            log_confirmation(payment, &outcome);
        }
        "checkout.session.async_payment_succeeded" => {
            let outcome = state
                .store()
                .confirm_payment(payment, Some(recorded), intent, now)
                .await?;
            log_confirmation(payment, &outcome);
        }
        "checkout.session.expired" | "checkout.session.async_payment_failed" => {
            if state
                .store()
                .fail_payment(payment, Some(recorded), now)
                .await?
            {
                metrics::counter!("usher_payments_total", "outcome" => "failed").increment(1);
            }
        }
        "charge.refunded" if object["refunded"] == true => {
            state
                .store()
                .payment_refunded(payment, Some(recorded), now)
                .await?;
        }
        // A session paid later (bank transfer …) is confirmed by async_payment_succeeded.
        _ => {
            tracing::info!(event_id = %event.id, kind = %event.kind, "stripe event needs no action")
        }
    }
    Ok(StatusCode::OK)
}

/// The payment an event's object points at: our id in its metadata, else the
/// session or payment-intent id we stored.
async fn find_payment(
    state: &AppState,
    object: &serde_json::Value,
) -> Result<Option<Uuid>, ApiError> {
    if let Some(id) = object["metadata"]["payment_id"]
        .as_str()
        .and_then(|s| Uuid::try_parse(s).ok())
        && state.store().payment(id).await?.is_some()
    {
        return Ok(Some(id));
    }
    for reference in [object["id"].as_str(), object["payment_intent"].as_str()]
        .into_iter()
        .flatten()
    {
        if let Some(payment) = state.store().payment_by_ref("stripe", reference).await? {
            return Ok(Some(payment.id));
        }
    }
    Ok(None)
}

fn log_confirmation(payment_id: Uuid, outcome: &Confirmation) {
    let label = match outcome {
        Confirmation::Confirmed(_) => "confirmed",
        Confirmation::Refunding(_) => "refunding",
        Confirmation::AlreadyProcessed => "duplicate",
        Confirmation::UnknownPayment => "unknown",
    };
    metrics::counter!("usher_payments_total", "outcome" => label).increment(1);
    match outcome {
        Confirmation::Confirmed(booking) => {
            tracing::info!(%payment_id, booking_id = %booking.id, "payment confirmed the booking")
        }
        Confirmation::Refunding(booking) => tracing::warn!(
            %payment_id, booking_id = %booking.id,
            "payment arrived but the units are gone; refunding"
        ),
        Confirmation::AlreadyProcessed => tracing::info!(%payment_id, "payment already processed"),
        Confirmation::UnknownPayment => {
            tracing::warn!(%payment_id, "confirmation for an unknown payment")
        }
    }
}

/// Refunds a confirmed booking (an admin, or the organizer of its event): its units go
/// back on sale and the money back to the buyer.
#[utoipa::path(post, path = "/v1/refunds", tag = "payments",
    request_body = RefundRequestBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Refund under way; the booking is refunded", body = BookingView),
        (status = 403, description = "Not an organizer or admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking among the caller's events", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The booking is not confirmed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_refund(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<RefundRequestBody>,
) -> Result<axum::Json<BookingView>, ApiError> {
    let caller = caller.require_organizer()?;
    let booking = readable_booking(&state, caller, body.booking_id).await?;
    if booking.user_id == caller.id && caller.role != Role::Admin {
        // An organizer refunding their own purchase goes through DELETE like any buyer.
        return Err(ApiError::Forbidden(
            "refund your own booking by cancelling it",
        ));
    }
    refund(&state, booking.id).await
}

/// Refunds a confirmed booking; shared by `DELETE /v1/bookings/{id}` and `/v1/refunds`.
pub async fn refund(
    state: &AppState,
    booking_id: Uuid,
) -> Result<axum::Json<BookingView>, ApiError> {
    let now = state.clock().now();
    match state.store().refund_booking(booking_id, now).await? {
        RefundOutcome::Refunding(booking) => {
            tracing::info!(%booking_id, "booking refunded; refund queued");
            Ok(axum::Json(BookingView::new(state, booking, now)))
        }
        RefundOutcome::NotRefundable(status) => Err(not_held(status)),
        RefundOutcome::NoSuchBooking => Err(ApiError::NotFound),
    }
}

fn not_held(status: BookingStatus) -> ApiError {
    ApiError::Conflict {
        kind: "booking-not-held",
        detail: format!("this booking is {status}"),
    }
}
