//! What a page knows about its visitor, and how it acts for them: the same use-case
//! functions the `/v1` handlers call (`crate::routes::*`), called directly with the
//! visitor as the caller. Rules, validation, tenant isolation and the problem sentences
//! are therefore the API's; rate limits are the API's tiers, applied by
//! [`crate::rate_limit::pages`] and, for signing in and up, by [`Visit::limit_auth`].
//! What the API would answer as a problem becomes a message on the page ([`Refusal`]).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};

use crate::extract::{Caller, RequestId};
use crate::problem::{ApiError, Problem};
use crate::rate_limit::{AuthKey, Tier, Verified};
use crate::state::AppState;
use crate::web::session::CsrfToken;
use crate::web::{WebState, format};

/// Who is looking at a page, and what acting for them needs.
#[derive(Clone)]
pub struct Visit {
    pub caller: Option<Caller>,
    pub csrf: String,
    /// The path (and query) of this page, for "log in and come back" (`/` for a form
    /// post).
    pub here: String,
    /// This request's id, for the audit log of what the visitor changes.
    pub request: RequestId,
    /// The visitor's address, as the rate limits see it (behind a trusted proxy: the
    /// address it forwarded for).
    pub ip: IpAddr,
    pub app: AppState,
}

impl FromRequestParts<WebState> for Visit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        web: &WebState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts, &web.app))
    }
}

impl Visit {
    pub fn of(parts: &Parts, app: &AppState) -> Self {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
        Self {
            caller: parts.extensions.get::<Verified>().map(|v| v.0),
            csrf: parts
                .extensions
                .get::<CsrfToken>()
                .map(|t| t.0.clone())
                .unwrap_or_default(),
            // After signing in, a form's address cannot be reopened (it takes POSTs
            // only): such visitors come back to the start instead.
            here: match (&parts.method, parts.uri.path_and_query()) {
                (&Method::GET, Some(path)) => path.as_str().to_owned(),
                _ => "/".to_owned(),
            },
            request: RequestId(
                parts
                    .headers
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            ),
            ip: app.config().trusted_proxies.client_ip(peer, &parts.headers),
            app: app.clone(),
        }
    }

    pub fn is_signed_in(&self) -> bool {
        self.caller.is_some()
    }

    /// The signed-in visitor, refused as the API refuses a request without a token.
    pub fn user(&self) -> Result<Caller, ApiError> {
        self.caller.ok_or(ApiError::Unauthorized(
            "this needs `Authorization: Bearer <access_token>`",
        ))
    }

    /// The `auth` tier for signing in, up or out, keyed as the API keys it: a guess
    /// made through the form and one made through the API share one bucket.
    pub async fn limit_auth(&self, key: AuthKey<'_>) -> Result<(), ApiError> {
        if !self.app.config().rate_limits {
            return Ok(());
        }
        let key = crate::rate_limit::auth_key(&self.app, self.ip, key).await;
        crate::rate_limit::check(self.app.rate_limits(), &[(Tier::Auth, key)]).await
    }
}

/// What went wrong with an action, as a page shows it.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub problem: Problem,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        if let ApiError::Internal(cause) | ApiError::ServiceUnavailable(cause) = &error {
            tracing::error!(%cause, "a page's action failed");
        }
        let problem = error.problem();
        Self {
            status: error.status(),
            problem,
        }
    }
}

impl Refusal {
    pub fn from_status(status: StatusCode, detail: &str) -> Self {
        Self {
            status,
            problem: Problem {
                kind: if status.is_server_error() {
                    "/problems/internal-error"
                } else {
                    "/problems/bad-request"
                }
                .into(),
                title: status.canonical_reason().unwrap_or("Error").into(),
                status: status.as_u16(),
                detail: detail.into(),
                errors: vec![],
                unavailable_unit_ids: None,
                checked_in_at: None,
            },
        }
    }

    /// Whether the page that sent the form shows this again with the message (a
    /// refusal about what was asked), rather than an error page (signed out, not
    /// allowed, gone, or broken on our side).
    fn answers_the_form(&self) -> bool {
        (self.status.is_client_error()
            && !matches!(
                self.status,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
            ))
            || self.status == StatusCode::SERVICE_UNAVAILABLE
    }

    /// This refusal, when the form's page shows it ([`Self::answers_the_form`]); the
    /// error page for any other.
    pub fn for_the_form(self, visit: &Visit) -> Result<Self, super::PageError> {
        if self.answers_the_form() {
            Ok(self)
        } else {
            Err(super::PageError::refused(visit, self))
        }
    }

    /// The problem as one or more sentences a person can act on.
    pub fn message(&self) -> String {
        if self.problem.errors.is_empty() {
            return format::sentence(&self.problem.detail);
        }
        self.problem
            .errors
            .iter()
            .map(|e| format::sentence(&e.message))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
