//! The pages are a client of the API: every read and write goes through the same
//! `/v1` handlers a script would call, in-process (no socket), as the visitor. Rules,
//! validation, tenant isolation, rate limits and idempotency are therefore the API's,
//! and what the API answers as a problem becomes a message on the page.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::ServiceExt;

use crate::extract::Caller;
use crate::problem::{PROBLEM_JSON, Problem};
use crate::rate_limit::Verified;
use crate::web::session::CsrfToken;
use crate::web::{WebState, format};

/// Responses larger than this from the API are refused (the largest page, a seat map
/// of a big house, is a few MB).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Who is looking at a page, and what the API needs to act for them.
#[derive(Clone)]
pub struct Visit {
    pub caller: Option<Caller>,
    pub csrf: String,
    /// The path (and query) of this page, for "log in and come back" (`/` for a form
    /// post).
    pub here: String,
    authorization: Option<HeaderValue>,
    connect_info: Option<ConnectInfo<SocketAddr>>,
    forwarded_for: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    api: Router,
}

impl FromRequestParts<WebState> for Visit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        web: &WebState,
    ) -> Result<Self, Self::Rejection> {
        let caller = parts.extensions.get::<Verified>().map(|v| v.0);
        let csrf = parts
            .extensions
            .get::<CsrfToken>()
            .map(|t| t.0.clone())
            .unwrap_or_default();
        Ok(Self {
            caller,
            csrf,
            // After signing in, a form's address cannot be reopened (it takes POSTs
            // only): such visitors come back to the start instead.
            here: match (&parts.method, parts.uri.path_and_query()) {
                (&Method::GET, Some(path)) => path.as_str().to_owned(),
                _ => "/".to_owned(),
            },
            authorization: caller.and_then(|_| parts.headers.get(header::AUTHORIZATION).cloned()),
            connect_info: parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned(),
            forwarded_for: parts
                .headers
                .get(HeaderName::from_static("x-forwarded-for"))
                .cloned(),
            request_id: parts
                .headers
                .get(HeaderName::from_static("x-request-id"))
                .cloned(),
            api: web.api.clone(),
        })
    }
}

/// What went wrong with an API call, as a page shows it.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub problem: Problem,
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

impl Visit {
    pub fn is_signed_in(&self) -> bool {
        self.caller.is_some()
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Refusal> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, Refusal> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// A hold on a performance with a waiting room: with the visitor's admission.
    pub async fn post_admitted<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        admission: Option<&str>,
    ) -> Result<T, Refusal> {
        self.call_with(Method::POST, path, Some(body), admission)
            .await
    }

    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, Refusal> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, Refusal> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    /// A write whose answer has no body worth reading (204).
    pub async fn post_empty(&self, path: &str, body: &impl Serialize) -> Result<(), Refusal> {
        self.call::<serde::de::IgnoredAny>(Method::POST, path, Some(body))
            .await
            .map(|_| ())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, Refusal> {
        self.call_with(method, path, body, None).await
    }

    async fn call_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        admission: Option<&str>,
    ) -> Result<T, Refusal> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(admission) = admission {
            request = request.header(crate::routes::bookings::ADMISSION_HEADER, admission);
        }
        if let Some(value) = &self.authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        if let Some(value) = &self.forwarded_for {
            request = request.header("x-forwarded-for", value);
        }
        if let Some(value) = &self.request_id {
            request = request.header("x-request-id", value);
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(body).map_err(|e| {
                    Refusal::from_status(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
                })?)
            }
            None => Body::empty(),
        };
        let mut request = request
            .body(body)
            .map_err(|e| Refusal::from_status(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
        // The rate limits see the visitor's address, as they would on the API.
        if let Some(info) = self.connect_info {
            request.extensions_mut().insert(info);
        }
        // The session layer verified the token already; the API's extractors reuse that.
        if let Some(caller) = self.caller {
            request.extensions_mut().insert(Verified(caller));
        }
        let response = match self.api.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let is_problem = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
        let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| Refusal::from_status(StatusCode::BAD_GATEWAY, &e.to_string()))?;
        if status.is_success() {
            let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            return serde_json::from_slice(bytes).map_err(|e| {
                tracing::error!(error = %e, %status, "the API's answer did not read back");
                Refusal::from_status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "something went wrong on our side; it has been logged",
                )
            });
        }
        if is_problem && let Ok(problem) = serde_json::from_slice::<Problem>(&bytes) {
            return Err(Refusal { status, problem });
        }
        Err(Refusal::from_status(
            status,
            "something went wrong on our side; it has been logged",
        ))
    }
}
