//! Errors as clients see them: RFC 9457 `application/problem+json`, mapped from one enum
//! in one place. Internal details never reach the client; they ride on the response as
//! an extension and the trace layer logs them inside the request's span.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use usher_store::StoreError;

pub const PROBLEM_JSON: &str = "application/problem+json";
/// Seconds a client is told to wait after a 503 for an unavailable dependency.
const UNAVAILABLE_RETRY_AFTER: u64 = 1;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// The field's path in the request, e.g. `email` or `seating.sections[0].price`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The problem document (RFC 9457). The web pages show the same document as messages
/// (`web::api::Refusal`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A stable identifier of the kind of problem, e.g. `/problems/validation-error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// On a 409 for a hold: the asked units that are taken. Empty when the server was
    /// choosing (general admission, best available) and too few were free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_unit_ids: Option<Vec<uuid::Uuid>>,
    /// On a 409 `/problems/already-checked-in`: when the ticket was first let in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_in_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed request: {0}")]
    MalformedBody(String),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("authentication required: {0}")]
    Unauthorized(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The performance has a waiting room and the request carries no valid admission.
    #[error("admission required: {0}")]
    AdmissionRequired(String),
    #[error("not found")]
    NotFound,
    #[error("conflict: {detail}")]
    Conflict { kind: &'static str, detail: String },
    #[error("unavailable: {0}")]
    ServiceUnavailable(String),
    /// More work of this kind is waiting than the server takes on: come back later.
    #[error("busy ({what})")]
    Busy {
        retry_after_seconds: u64,
        /// What there is too much of at once, in the client's words ("sign-ins").
        what: &'static str,
    },
    /// A rate limit tier refused the request.
    #[error("rate limited ({tier})")]
    RateLimited {
        tier: &'static str,
        retry_after_seconds: u64,
    },
    /// Some of the asked units are taken (or not enough are free): nothing was held.
    #[error("units unavailable: {detail}")]
    UnitsTaken {
        unit_ids: Vec<uuid::Uuid>,
        detail: String,
    },
    /// The ticket was let in before, at this time.
    #[error("already checked in at {0}")]
    AlreadyCheckedIn(chrono::DateTime<chrono::Utc>),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The internal cause of a 5xx, for the log line of the request.
#[derive(Debug, Clone)]
pub struct InternalError(pub String);

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedBody(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::AdmissionRequired(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. }
            | ApiError::UnitsTaken { .. }
            | ApiError::AlreadyCheckedIn(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::ServiceUnavailable(_) | ApiError::Busy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn problem(&self) -> Problem {
        let status = self.status();
        let (kind, detail, errors) = match self {
            ApiError::MalformedBody(why) => ("malformed-request", why.clone(), vec![]),
            ApiError::UnsupportedMediaType => (
                "unsupported-media-type",
                "send the body as JSON with `Content-Type: application/json`".into(),
                vec![],
            ),
            ApiError::PayloadTooLarge => (
                "payload-too-large",
                "the request body is larger than this server accepts".into(),
                vec![],
            ),
            ApiError::Validation(errors) => (
                "validation-error",
                match errors.as_slice() {
                    [one] => format!("{}: {}", one.field, one.message),
                    _ => format!("{} fields are invalid", errors.len()),
                },
                errors.clone(),
            ),
            ApiError::Unauthorized(why) => ("unauthorized", (*why).into(), vec![]),
            ApiError::Forbidden(why) => ("forbidden", (*why).into(), vec![]),
            ApiError::AdmissionRequired(why) => ("admission-required", why.clone(), vec![]),
            ApiError::NotFound => (
                "not-found",
                "there is nothing here, or you may not see it".into(),
                vec![],
            ),
            ApiError::Conflict { kind, detail } => (*kind, detail.clone(), vec![]),
            ApiError::UnitsTaken { detail, .. } => ("units-unavailable", detail.clone(), vec![]),
            ApiError::AlreadyCheckedIn(at) => (
                "already-checked-in",
                format!("this ticket was checked in at {}", at.to_rfc3339()),
                vec![],
            ),
            ApiError::ServiceUnavailable(_) => (
                "unavailable",
                "the service cannot answer right now; try again shortly".into(),
                vec![],
            ),
            ApiError::Busy {
                retry_after_seconds,
                what,
            } => (
                "busy",
                format!(
                    "too many {what} at once; try again in {retry_after_seconds} s (see Retry-After)"
                ),
                vec![],
            ),
            ApiError::RateLimited {
                tier,
                retry_after_seconds,
            } => (
                "rate-limited",
                format!(
                    "too many requests ({tier} limit); try again in {retry_after_seconds} s (see Retry-After)"
                ),
                vec![],
            ),
            ApiError::Internal(_) => (
                "internal-error",
                "something went wrong on our side; it has been logged".into(),
                vec![],
            ),
        };
        Problem {
            kind: format!("/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail,
            errors,
            unavailable_unit_ids: match self {
                ApiError::UnitsTaken { unit_ids, .. } => Some(unit_ids.clone()),
                _ => None,
            },
            checked_in_at: match self {
                ApiError::AlreadyCheckedIn(at) => Some(*at),
                _ => None,
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::EmailTaken => ApiError::Conflict {
                kind: "email-taken",
                detail: "an account with this email already exists".into(),
            },
            StoreError::IllegalStatusChange { from, to } => {
                ApiError::Validation(vec![FieldError::new(
                    "status",
                    format!("an event that is {from} cannot become {to}"),
                )])
            }
            StoreError::Backend(why) => ApiError::Internal(why),
            unavailable @ (StoreError::Unavailable(_) | StoreError::Conflict(_)) => {
                ApiError::ServiceUnavailable(unavailable.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = problem_response(&self.problem());
        if let ApiError::Unauthorized(_) = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::Busy {
            retry_after_seconds,
            ..
        }
        | ApiError::RateLimited {
            retry_after_seconds,
            ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        }
        if let ApiError::ServiceUnavailable(_) = self {
            // Worth retrying soon: the database restarts, the pool frees up.
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(UNAVAILABLE_RETRY_AFTER),
            );
        }
        if let ApiError::Internal(why) | ApiError::ServiceUnavailable(why) = self {
            response.extensions_mut().insert(InternalError(why));
        }
        response
    }
}

pub fn problem_response(problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

/// Turns any error response that is not already a problem document (an unknown route,
/// a wrong method, a body over the limit, a timeout, a panic) into one, so that clients
/// see a single error format whatever layer answered.
pub fn problemize(response: Response) -> Response {
    let status = response.status();
    // Web pages answer their own errors as pages.
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(PROBLEM_JSON.as_bytes())
                || v.as_bytes().starts_with(b"text/html")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (kind, detail) = match status {
        StatusCode::NOT_FOUND => ("not-found", "there is no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method-not-allowed",
            "this route does not accept that method; see the Allow header",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload-too-large",
            "the request body is larger than this server accepts",
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => (
            "unavailable",
            "the service cannot answer right now; try again shortly",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported-media-type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        s if s.is_server_error() => (
            "internal-error",
            "something went wrong on our side; it has been logged",
        ),
        _ => ("bad-request", "the request could not be understood"),
    };
    let (mut parts, _) = response.into_parts();
    let mut fresh = problem_response(&Problem {
        kind: format!("/problems/{kind}"),
        title: status.canonical_reason().unwrap_or("Error").into(),
        status: status.as_u16(),
        detail: detail.into(),
        errors: vec![],
        unavailable_unit_ids: None,
        checked_in_at: None,
    });
    // Keep the layer's headers (Allow, Retry-After, request id …) but our body and type.
    // The new body is not the old one's encoding: a gzipped 400 replaced by plain JSON
    // that still said `Content-Encoding: gzip` could not be read (found by schemathesis).
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    std::mem::swap(fresh.headers_mut(), &mut parts.headers);
    fresh.extensions_mut().extend(parts.extensions);
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_detail_names_the_field() {
        let problem = ApiError::validation("email", "this is not a valid email address").problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.kind, "/problems/validation-error");
        assert_eq!(problem.detail, "email: this is not a valid email address");
        assert_eq!(problem.errors[0].field, "email");
    }

    #[test]
    fn internal_details_stay_out_of_the_body() {
        let problem = ApiError::Internal("password=hunter2 in connection string".into()).problem();
        assert!(!problem.detail.contains("hunter2"));
        assert_eq!(problem.status, 500);
    }
}
