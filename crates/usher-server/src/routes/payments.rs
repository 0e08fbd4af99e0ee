//! Paying: starting checkout for a hold, the mock provider's "pay" button, Stripe's
//! webhook, and refunds. Whatever the provider, every change ends in
//! `Store::transition`: one transaction that records the provider event, lets the
//! lifecycle rules in `usher_core::lifecycle` decide (confirm, refund this payment,
//! release the units …) and queues the email or refund jobs with it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use usher_core::lifecycle::{Actor, Outcome, Provider, RefundTo, Refusal, Trigger};
use usher_core::{Booking, BookingStatus, PaymentId, Role};
use usher_payments::{CheckoutRequest, CheckoutSession, webhook};
use usher_store::{Audit, BookingRef, Payment, ProviderEvent, TransitionRequest, Transitioned};

use crate::config::PaymentsConfig;
use crate::extract::{Caller, Json, RequestId, parse_json, path_id};
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

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckoutView {
    pub payment_id: Uuid,
    /// `mock`, `stripe` or `wallet`.
    #[schema(value_type = String, example = "mock")]
    pub provider: Provider,
    /// Send the buyer here to pay.
    pub checkout_url: String,
    /// The hold (and the checkout) end then.
    pub expires_at: DateTime<Utc>,
    /// Paid from the wallet: the booking, confirmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub booking: Option<BookingView>,
}

/// How to pay; without a body, through the configured provider.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequestBody {
    /// `wallet` pays at once from the balance in the booking's currency; `provider` (the
    /// default) opens the payment provider's checkout.
    #[schema(example = "wallet")]
    pub method: Option<String>,
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

/// Starts paying for a held booking. The first checkout extends the hold to cover it
/// (at least 15 minutes from now, or the provider's minimum, and never beyond 90 minutes
/// after the hold was taken); a repeat while that payment is open (a second tab, a
/// reload) returns the same payment and the same `expires_at`.
///
/// With `{"method": "wallet"}` the booking is paid at once from the caller's wallet, in
/// the transaction that confirms it (409 `/problems/insufficient-funds` when the balance
/// in the booking's currency does not cover it; nothing is taken then).
#[utoipa::path(post, path = "/v1/bookings/{id}/checkout", tag = "payments",
    params(("id" = Uuid, Path, description = "Booking id")),
    request_body(content = Option<CheckoutRequestBody>, description = "Optional: `{\"method\": \"wallet\"}`", content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Checkout open (or, from the wallet, paid: `booking` is the confirmed booking)", body = CheckoutView),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking among the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The booking is not held, its event or performance is cancelled or has started, or the wallet does not cover it (`/problems/insufficient-funds`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown method", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The payment provider cannot be reached; try again", body = Problem, content_type = "application/problem+json"),
    ))]
async fn checkout(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<CheckoutView>, ApiError> {
    let id = path_id(&id)?;
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(CheckoutRequestBody::default())
    } else {
        parse_json::<CheckoutRequestBody>(&body)
    };
    open_checkout(&state, caller, id, body)
        .await
        .map(axum::Json)
}

/// Opens the provider's checkout for `caller`'s held booking, or pays it from the
/// wallet; the body is judged once the booking is known to be theirs.
pub async fn open_checkout(
    state: &AppState,
    caller: Caller,
    id: Uuid,
    body: Result<CheckoutRequestBody, ApiError>,
) -> Result<CheckoutView, ApiError> {
    let booking = owned_booking(state, caller, id).await?;
    match body?.method.as_deref() {
        None | Some("provider") => {}
        Some("wallet") => return pay_from_wallet(state, booking.id.uuid()).await,
        Some(_) => {
            return Err(ApiError::validation(
                "method",
                "method is \"wallet\" or \"provider\"",
            ));
        }
    }
    let now = state.clock().now();
    let provider = state.payments();
    let window = CHECKOUT_WINDOW.max(provider.min_checkout_window());
    let hold_until = (now + window).min(booking.created_at + MAX_HOLD);
    let done = state
        .transition(TransitionRequest::new(
            BookingRef::Booking(booking.id),
            Trigger::Checkout {
                provider: provider.provider(),
                hold_until,
                new_payment_id: PaymentId::generate(),
            },
            now,
        ))
        .await?;
    let (Outcome::CheckoutOpen { payment_id, reused }, Some(booking), Some(payment)) =
        (done.outcome, done.booking, done.payment)
    else {
        return Err(refused(done.outcome));
    };
    if let (true, Some(url)) = (reused, &payment.checkout_url) {
        return Ok(CheckoutView {
            payment_id: payment_id.uuid(),
            provider: payment.provider.clone(),
            checkout_url: url.clone(),
            expires_at: payment.expires_at,
            booking: None,
        });
    }
    let session = open_session(state, caller.id, &booking, &payment, now).await?;
    state
        .store()
        .attach_checkout(payment_id, &session.provider_ref, &session.url)
        .await?;
    tracing::info!(booking_id = %booking.id, %payment_id, reused, "checkout open");
    Ok(CheckoutView {
        payment_id: payment_id.uuid(),
        provider: payment.provider.clone(),
        checkout_url: session.url,
        expires_at: payment.expires_at,
        booking: None,
    })
}

/// Asks the provider for a checkout session of the payment. No lock is held here: the
/// hold is already extended, and the provider call may take its time. A payment opened
/// by a request that has not reached the provider yet is asked for again under the same
/// id: the provider's idempotency key makes both calls one session. A payment nobody can
/// pay would block the next checkout until it expires, so a refused one is failed.
async fn open_session(
    state: &AppState,
    caller: Uuid,
    booking: &Booking,
    payment: &Payment,
    now: DateTime<Utc>,
) -> Result<CheckoutSession, ApiError> {
    let payment_id = payment.id;
    let provider = state.payments();
    let user = state
        .store()
        .user(caller.into())
        .await?
        .ok_or(ApiError::Unauthorized("the account no longer exists"))?;
    let performance = state.store().performance(booking.performance_id).await?;
    let event = match &performance {
        Some(p) => state.store().event(p.event_id).await?,
        None => None,
    };
    let title = event.map_or_else(|| "Tickets".to_owned(), |e| e.title.as_str().to_owned());
    let base = state.public_url();
    let session = provider
        .create_checkout(CheckoutRequest {
            payment_id: payment_id.uuid(),
            booking_id: booking.id.uuid(),
            amount: payment.amount,
            description: format!("{title} — {} ticket(s)", booking.units.len()),
            // Stripe insists on its minimum window; a payment after the hold ends
            // follows the late-payment rule.
            expires_at: payment
                .expires_at
                .max(payment.created_at + provider.min_checkout_window()),
            customer_email: user.email.as_str().to_owned(),
            success_url: format!("{base}/v1/bookings/{}", booking.id),
            cancel_url: format!("{base}/v1/bookings/{}", booking.id),
        })
        .await;
    let session = match session {
        Ok(session) => session,
        Err(error) => {
            // A payment nobody can pay would block the next checkout until it expires.
            state
                .transition(TransitionRequest::new(
                    BookingRef::Payment(payment_id),
                    Trigger::PaymentFailed { payment_id },
                    now,
                ))
                .await?;
            return Err(ApiError::ServiceUnavailable(format!("checkout: {error}")));
        }
    };
    Ok(session)
}

/// Pays a held booking from the buyer's wallet: debit, payment and confirmation in one
/// transaction.
async fn pay_from_wallet(state: &AppState, booking_id: Uuid) -> Result<CheckoutView, ApiError> {
    let now = state.clock().now();
    let payment_id = Uuid::now_v7();
    let done = state
        .transition(TransitionRequest::new(
            BookingRef::Booking(booking_id.into()),
            Trigger::PayFromWallet {
                new_payment_id: payment_id.into(),
            },
            now,
        ))
        .await?;
    record_payment_outcome(payment_id, &done);
    match (done.outcome, done.booking) {
        (Outcome::Confirmed, Some(booking)) => Ok(CheckoutView {
            payment_id,
            provider: Provider::Wallet,
            checkout_url: format!("{}/bookings", state.public_url()),
            expires_at: now,
            booking: Some(BookingView::new(state, booking, now)),
        }),
        (outcome, _) => Err(refused(outcome)),
    }
}

/// The mock provider's "pay" button: settles a payment as if the provider had called
/// back. Only with `USHER_PAYMENT_PROVIDER=mock`, only by the buyer.
#[utoipa::path(post, path = "/v1/payments/mock/{payment_id}/complete", tag = "payments",
    params(("payment_id" = Uuid, Path, description = "Payment id from checkout")),
    request_body = MockOutcome,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The booking after the payment (a payment that cannot buy it, or comes second, is refunded)", body = BookingView),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payment among the caller's, or the mock provider is off", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown outcome", body = Problem, content_type = "application/problem+json"),
    ))]
async fn complete_mock_payment(
    State(state): State<AppState>,
    caller: Caller,
    Path(payment_id): Path<String>,
    // Judged after the caller: no verdict on the body for those without the right.
    body: Result<Json<MockOutcome>, ApiError>,
) -> Result<axum::Json<BookingView>, ApiError> {
    let payment_id = path_id(&payment_id)?;
    complete_mock(&state, caller, payment_id, body.map(|Json(body)| body))
        .await
        .map(axum::Json)
}

/// Settles `caller`'s mock payment as the provider would; the body is judged once the
/// payment is known to be theirs.
pub async fn complete_mock(
    state: &AppState,
    caller: Caller,
    payment_id: Uuid,
    body: Result<MockOutcome, ApiError>,
) -> Result<BookingView, ApiError> {
    if !matches!(state.config().payments, PaymentsConfig::Mock) {
        return Err(ApiError::NotFound);
    }
    let payment = state
        .store()
        .payment(payment_id.into())
        .await?
        .ok_or(ApiError::NotFound)?;
    let booking = state
        .store()
        .booking(payment.booking_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if booking.user_id != caller.id.into() || payment.provider != Provider::Mock {
        return Err(ApiError::NotFound);
    }
    let body = body?;
    let now = state.clock().now();
    let trigger = match body.outcome.as_str() {
        "succeeded" => Trigger::PaymentSucceeded {
            payment_id: payment_id.into(),
        },
        "failed" => Trigger::PaymentFailed {
            payment_id: payment_id.into(),
        },
        _ => {
            return Err(ApiError::validation(
                "outcome",
                "outcome is \"succeeded\" or \"failed\"",
            ));
        }
    };
    let done = state
        .transition(TransitionRequest::new(
            BookingRef::Payment(payment_id.into()),
            trigger,
            now,
        ))
        .await?;
    record_payment_outcome(payment_id, &done);
    let booking = match done.booking {
        Some(booking) => booking,
        None => state
            .store()
            .booking(booking.id)
            .await?
            .ok_or(ApiError::NotFound)?,
    };
    Ok(BookingView::new(state, booking, now))
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
        provider: Provider::Stripe,
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
    let trigger = match event.kind.as_str() {
        "checkout.session.completed" if object["payment_status"] == "paid" => {
            Trigger::PaymentSucceeded {
                payment_id: payment.into(),
            }
        }
        "checkout.session.async_payment_succeeded" => Trigger::PaymentSucceeded {
            payment_id: payment.into(),
        },
        "checkout.session.expired" | "checkout.session.async_payment_failed" => {
            Trigger::PaymentFailed {
                payment_id: payment.into(),
            }
        }
        "charge.refunded" if object["refunded"] == true => Trigger::PaymentRefunded {
            payment_id: payment.into(),
        },
        // A session paid later (bank transfer …) is confirmed by async_payment_succeeded.
        _ => {
            tracing::info!(event_id = %event.id, kind = %event.kind, "stripe event needs no action");
            return Ok(StatusCode::OK);
        }
    };
    let done = state
        .transition(TransitionRequest {
            provider_event: Some(recorded),
            provider_payment_ref: object["payment_intent"].as_str().map(str::to_owned),
            ..TransitionRequest::new(BookingRef::Payment(payment.into()), trigger, now)
        })
        .await?;
    record_payment_outcome(payment, &done);
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
        && state.store().payment(id.into()).await?.is_some()
    {
        return Ok(Some(id));
    }
    for reference in [object["id"].as_str(), object["payment_intent"].as_str()]
        .into_iter()
        .flatten()
    {
        if let Some(payment) = state
            .store()
            .payment_by_ref(&Provider::Stripe, reference)
            .await?
        {
            return Ok(Some(payment.id.uuid()));
        }
    }
    Ok(None)
}

/// Counts and logs what a payment's news did.
fn record_payment_outcome(payment_id: Uuid, done: &Transitioned) {
    let booking_id = done.booking.as_ref().map(|b| b.id);
    let label = match done.outcome {
        Outcome::Confirmed => "confirmed",
        Outcome::ExtraPaymentRefunded => "extra_refunded",
        Outcome::PaymentRefunded => "refunding",
        Outcome::PaymentFailed => "failed",
        Outcome::MoneyReturned { .. } => "money_returned",
        Outcome::Duplicate => "duplicate",
        Outcome::Refused(Refusal::UnknownPayment | Refusal::NoSuchBooking) => "unknown",
        _ => "other",
    };
    metrics::counter!("usher_payments_total", "outcome" => label).increment(1);
    match done.outcome {
        Outcome::Confirmed => {
            tracing::info!(%payment_id, ?booking_id, "payment confirmed the booking")
        }
        Outcome::ExtraPaymentRefunded => tracing::warn!(
            %payment_id, ?booking_id,
            "another payment already confirmed the booking; refunding this one"
        ),
        Outcome::PaymentRefunded => tracing::warn!(
            %payment_id, ?booking_id,
            "payment arrived but cannot buy the booking; refunding"
        ),
        Outcome::MoneyReturned { booking_refunded } => {
            tracing::info!(%payment_id, ?booking_id, booking_refunded, "payment refunded")
        }
        Outcome::Duplicate => tracing::info!(%payment_id, "payment news already handled"),
        outcome => tracing::info!(%payment_id, ?booking_id, ?outcome, "payment news"),
    }
}

/// Refunds a confirmed booking (an admin, or the organizer of its event): its units go
/// back on sale and the money back to the buyer.
#[utoipa::path(post, path = "/v1/refunds", tag = "payments",
    request_body = RefundRequestBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Refund under way; the booking is refunded", body = BookingView),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an organizer or admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking among the caller's events", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The booking is not confirmed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_refund(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    // Judged after the caller: no verdict on the body for those without the right.
    body: Result<Json<RefundRequestBody>, ApiError>,
) -> Result<axum::Json<BookingView>, ApiError> {
    let caller = caller.require_organizer()?;
    let Json(body) = body?;
    let booking = readable_booking(&state, *caller, body.booking_id).await?;
    if booking.user_id == caller.id.into() && caller.role != Role::Admin {
        // An organizer refunding their own purchase goes through DELETE like any buyer.
        return Err(ApiError::Forbidden(
            "refund your own booking by cancelling it",
        ));
    }
    refund(
        &state,
        booking.id.uuid(),
        Actor::Organizer,
        RefundTo::Origin,
        caller.audit(&request),
    )
    .await
    .map(axum::Json)
}

/// Refunds a confirmed booking; shared by `DELETE /v1/bookings/{id}` (the buyer, until
/// the refund cutoff) and `/v1/refunds` (organizers and admins, always).
pub async fn refund(
    state: &AppState,
    booking_id: Uuid,
    by: Actor,
    to: RefundTo,
    audit: Audit,
) -> Result<BookingView, ApiError> {
    let now = state.clock().now();
    let audit = audit.note(
        "by",
        match by {
            Actor::Buyer => "buyer",
            Actor::Organizer => "organizer",
        },
    );
    let done = state
        .transition(
            TransitionRequest::new(
                BookingRef::Booking(booking_id.into()),
                Trigger::Cancel {
                    by,
                    refund_cutoff: state.config().refund_cutoff,
                    to,
                },
                now,
            )
            .audited(audit),
        )
        .await?;
    match (done.outcome, done.booking) {
        (Outcome::Refunded | Outcome::Released, Some(booking)) => {
            tracing::info!(%booking_id, status = %booking.status, "booking cancelled or refunded");
            Ok(BookingView::new(state, booking, now))
        }
        (outcome, _) => Err(refused(outcome)),
    }
}

/// The answer to a transition that changed nothing the caller asked for.
pub fn refused(outcome: Outcome) -> ApiError {
    match outcome {
        Outcome::Refused(Refusal::NoSuchBooking | Refusal::UnknownPayment) => ApiError::NotFound,
        Outcome::Refused(Refusal::NotHeld(status)) => not_held(status),
        Outcome::Refused(Refusal::NotRefundable(status)) => ApiError::Conflict {
            kind: "booking-not-confirmed",
            detail: format!("this booking is {status}; only a confirmed booking is refunded"),
        },
        Outcome::Refused(Refusal::SaleCancelled) => ApiError::Conflict {
            kind: "sale-cancelled",
            detail: "this event or performance is cancelled; nothing more is sold".into(),
        },
        Outcome::Refused(Refusal::SaleWithdrawn) => ApiError::Conflict {
            kind: "not-on-sale",
            detail: "this event is not on sale at the moment; nothing was taken".into(),
        },
        Outcome::Refused(Refusal::SaleClosed) => ApiError::Conflict {
            kind: "not-on-sale",
            detail: "this performance has already started".into(),
        },
        Outcome::Refused(Refusal::RefundClosed) => ApiError::Conflict {
            kind: "refund-closed",
            detail: "refunds close before the performance starts; ask the organizer".into(),
        },
        Outcome::Refused(Refusal::InsufficientFunds) => ApiError::Conflict {
            kind: "insufficient-funds",
            detail: "your wallet's balance in this booking's currency does not cover it; \
                     nothing was taken"
                .into(),
        },
        other => ApiError::Internal(format!("unexpected lifecycle outcome {other:?}")),
    }
}

fn not_held(status: BookingStatus) -> ApiError {
    ApiError::Conflict {
        kind: "booking-not-held",
        detail: format!("this booking is {status}"),
    }
}
