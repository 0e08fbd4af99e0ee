//! `Idempotency-Key` on unsafe POSTs (all but webhooks, which carry event ids).
//! The first request with a key runs and its answer is
//! stored in the main database (the key, a fingerprint of the request, the status and
//! body), scoped to the caller and kept 24 hours:
//!
//! - same key, same request → the stored answer again, with `Idempotent-Replayed: true`;
//! - same key, another request → 422;
//! - same key while the first is still running → 409;
//! - 429 and 5xx answers are not stored, so a retry after them runs again.
//!
//! The key is claimed (`in_flight`) before the handler runs and completed after, so two
//! concurrent duplicates never both take effect. If the process dies between the two,
//! the key stays in flight until it expires: a retry gets 409 rather than a second
//! effect — the safe side for money and seats. After five minutes that 409 says so
//! (`idempotency-key-abandoned`), so the client knows to check and use a new key.
//!
//! Keys are scoped to the caller. A caller without a token (signup, login, refresh) has
//! nothing that tells people apart but the request itself, so an anonymous key is scoped
//! to the request's fingerprint: two people using the same key never collide, and only
//! someone who sends the very same body (the same password, the same refresh token) can
//! get the stored answer back. The price: an anonymous key reused with another body runs
//! as a new request instead of answering 422.
//!
//! Stored answers are encrypted ([`crate::sealed`]): a signup's or a refresh's answer
//! carries tokens, and refresh tokens are otherwise kept only as hashes. Replaying a
//! refresh is what makes a retried refresh safe: without it, presenting the old token
//! again would look like theft and sign the user out.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use usher_store::IdempotencyStart;

use crate::problem::ApiError;
use crate::state::AppState;

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// How long keys are kept.
pub const RETENTION: chrono::Duration = chrono::Duration::hours(24);
const MAX_KEY_LEN: usize = 255;
/// A key still in flight after this long belongs to a request that died: far longer than
/// any request may run (the request timeout is 30 s by default).
pub const ABANDONED_AFTER: chrono::Duration = chrono::Duration::minutes(5);

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Webhooks carry their own event ids; the provider knows nothing of our keys.
    let keyed =
        request.method() == Method::POST && !request.uri().path().starts_with("/v1/webhooks/");
    let Some(key) = request.headers().get(&HEADER).cloned().filter(|_| keyed) else {
        return next.run(request).await;
    };
    let Some(key) = valid_key(&key) else {
        return ApiError::validation(
            "Idempotency-Key",
            format!("an idempotency key is 1 to {MAX_KEY_LEN} visible ASCII characters"),
        )
        .into_response();
    };
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, state.config().max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let keyed = Keyed::new(&state, &parts, &bytes, key);
    let now = state.clock().now();
    let started = state
        .store()
        .idempotency_start(&keyed.scope, &keyed.key, &keyed.fingerprint, now)
        .await;
    match started {
        Err(error) => {
            ApiError::ServiceUnavailable(format!("idempotency key: {error}")).into_response()
        }
        Ok(IdempotencyStart::InFlight { since }) if now - since > ABANDONED_AFTER => {
            ApiError::Conflict {
                kind: "idempotency-key-abandoned",
                detail: "the first request with this Idempotency-Key never finished (the server \
                         stopped or the request timed out), so whether it took effect is unknown; \
                         check its result (for example your bookings), then use a new key"
                    .into(),
            }
            .into_response()
        }
        Ok(IdempotencyStart::InFlight { .. }) => ApiError::Conflict {
            kind: "idempotency-key-in-use",
            detail: "a request with this Idempotency-Key is still being processed; retry shortly"
                .into(),
        }
        .into_response(),
        Ok(IdempotencyStart::Mismatch) => {
            ApiError::Validation(vec![crate::problem::FieldError::new(
                "Idempotency-Key",
                "this key was used with a different request; use a new key for a new request",
            )])
            .into_response()
        }
        Ok(IdempotencyStart::Replay {
            status,
            content_type,
            body,
        }) => keyed.replay(&state, status, content_type, &body),
        Ok(IdempotencyStart::Started) => {
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            keyed.keep(&state, response).await
        }
    }
}

/// The key as sent, if it is 1 to [`MAX_KEY_LEN`] visible ASCII characters.
fn valid_key(key: &HeaderValue) -> Option<String> {
    let key = key.to_str().ok()?;
    let valid =
        !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic());
    valid.then(|| key.to_owned())
}

/// A request's key, scoped to its caller, with the fingerprint of what it asks.
struct Keyed {
    key: String,
    /// Keys are per caller: the same key from two people are two keys (see the module
    /// comment for callers without a token).
    scope: String,
    fingerprint: String,
}

impl Keyed {
    fn new(
        state: &AppState,
        parts: &axum::http::request::Parts,
        bytes: &[u8],
        key: String,
    ) -> Self {
        let caller = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            // Only the scope of the key: the handler authorizes the caller.
            .and_then(|token| state.tokens().verify_access(token.trim()).ok());
        let mut hasher = Sha256::new();
        hasher.update(parts.method.as_str().as_bytes());
        hasher.update(b" ");
        hasher.update(parts.uri.to_string().as_bytes());
        hasher.update(b"\n");
        hasher.update(bytes);
        let fingerprint = hex::encode(hasher.finalize());
        let scope = match caller {
            Some(caller) => caller.user_id.to_string(),
            None => format!("anonymous:{fingerprint}"),
        };
        Self {
            key,
            scope,
            fingerprint,
        }
    }

    /// Binds a stored answer to its caller and key.
    fn context(&self) -> String {
        format!("{}\0{}", self.scope, self.key)
    }

    /// The answer stored for this key, again.
    fn replay(
        &self,
        state: &AppState,
        status: u16,
        content_type: Option<String>,
        sealed: &[u8],
    ) -> Response {
        let body = match state.sealer().open(sealed, self.context().as_bytes()) {
            Ok(body) => body,
            Err(error) => {
                return ApiError::Internal(format!("stored answer unreadable: {error}"))
                    .into_response();
            }
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        if let Some(content_type) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
        response
    }

    /// Keeps the handler's answer for replays (sealed), or forgets the key when the
    /// answer is not one to keep (429, 5xx): a retry then runs again.
    async fn keep(&self, state: &AppState, response: Response) -> Response {
        let store = state.store();
        let (parts, body) = response.into_parts();
        let bytes = match to_bytes(body, usize::MAX).await {
            Ok(bytes) => bytes,
            Err(error) => {
                let _ = store.idempotency_abandon(&self.scope, &self.key).await;
                return ApiError::Internal(format!("reading the response: {error}"))
                    .into_response();
            }
        };
        let status = parts.status;
        let outcome = if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            store.idempotency_abandon(&self.scope, &self.key).await
        } else {
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            match state.sealer().seal(&bytes, self.context().as_bytes()) {
                Ok(sealed) => {
                    store
                        .idempotency_complete(
                            &self.scope,
                            &self.key,
                            status.as_u16(),
                            content_type,
                            &sealed,
                        )
                        .await
                }
                Err(error) => Err(usher_store::StoreError::Backend(error)),
            }
        };
        if let Err(error) = outcome {
            tracing::error!(%error, "storing the idempotent response failed; the key stays in flight");
        }
        Response::from_parts(parts, Body::from(bytes))
    }
}
