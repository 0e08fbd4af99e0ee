//! The web UI: server-rendered pages (askama templates, checked at compile time) for
//! buyers, organizers and admins, served by the same binary on the same port, plus one
//! small script and one stylesheet. Nothing is fetched from elsewhere: it works offline.
//!
//! Pages hold no booking rules of their own: they call the same functions the `/v1`
//! handlers call, as the visitor ([`api::Visit`]), and render what those answer. What
//! lives here is presentation: layout of seat maps and charts, forms and their CSRF
//! tokens, and the session cookies.

pub mod api;
mod assets;
mod buyer;
mod chart;
mod door;
mod format;
mod manage;
mod seat_map;
pub mod session;
mod waiting;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::problem::FieldError;
use crate::state::AppState;
use api::{Refusal, Visit};
use session::{CSRF_FIELD, CsrfToken, RecentRotations, csrf_matches};

/// What page handlers share. One `Arc`: the session layer clones it for every request,
/// API calls included.
#[derive(Clone)]
pub struct WebState(Arc<WebShared>);

impl std::ops::Deref for WebState {
    type Target = WebShared;

    fn deref(&self) -> &WebShared {
        &self.0
    }
}

pub struct WebShared {
    pub app: AppState,
    pub rotations: RecentRotations,
    /// `Secure` on cookies when the public URL is https.
    pub secure_cookies: bool,
    /// Extra origins forms may post to (Stripe's hosted checkout).
    pub form_targets: &'static str,
}

impl WebState {
    pub fn new(app: AppState) -> Self {
        let secure_cookies = app.public_url().starts_with("https://");
        let form_targets = if app.payments().provider() == usher_core::lifecycle::Provider::Stripe {
            " https://checkout.stripe.com"
        } else {
            ""
        };
        Self(Arc::new(WebShared {
            app,
            rotations: RecentRotations::default(),
            secure_cookies,
            form_targets,
        }))
    }
}

/// The page routes (everything outside `/v1`, `/docs` and the operations endpoints).
pub fn router(web: WebState) -> Router {
    let pages = Router::new()
        .merge(buyer::router())
        .merge(manage::router())
        .merge(door::router())
        .merge(waiting::router())
        .fallback(not_found);
    // The API's tiers, for the same actions; off, not there at all (as on the API).
    let pages = if web.app.config().rate_limits {
        pages.layer(axum::middleware::from_fn_with_state(
            web.clone(),
            crate::rate_limit::pages,
        ))
    } else {
        pages
    };
    pages.merge(assets::router()).with_state(web)
}

/// Browsers get a page; API clients the usual problem document.
async fn not_found(visit: Visit, headers: axum::http::HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if wants_html && !visit.here.starts_with("/v1/") {
        PageError::not_found(&visit).into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

/// The navigation every page shows, from who is visiting.
pub struct Chrome {
    pub signed_in: bool,
    pub organizer: bool,
    pub admin: bool,
    pub csrf: String,
    pub here: String,
    pub asset_version: &'static str,
}

impl Chrome {
    pub fn of(visit: &Visit) -> Self {
        let role = visit.caller.map(|c| c.role);
        Self {
            signed_in: visit.caller.is_some(),
            organizer: role.is_some_and(|r| r.can_organize()),
            admin: role == Some(usher_core::Role::Admin),
            csrf: visit.csrf.clone(),
            here: visit.here.clone(),
            asset_version: assets::version(),
        }
    }
}

/// A rendered page with the headers every page carries.
pub fn page(template: &impl Template, status: StatusCode, form_targets: &str) -> Response {
    match template.render() {
        Ok(html) => {
            let mut response = (status, html).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            // Pages show personal data and differ per visitor: never cached.
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            // Stricter than the API's: no inline script or style at all.
            let csp = format!(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 connect-src 'self'; form-action 'self'{form_targets}; frame-ancestors 'none'; \
                 base-uri 'none'"
            );
            if let Ok(value) = HeaderValue::from_str(&csp) {
                headers.insert(header::CONTENT_SECURITY_POLICY, value);
            }
            response
        }
        Err(error) => {
            tracing::error!(%error, "a page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                "<!doctype html><title>Error</title><p>Something went wrong on our side; it has been logged.</p>",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    title: String,
    detail: String,
    errors: Vec<FieldError>,
}

/// A page that could not be shown: a readable message, never a JSON dump.
pub struct PageError(Box<Failure>);

struct Failure {
    chrome: Chrome,
    kind: PageErrorKind,
}

enum PageErrorKind {
    Refused(Refusal),
    SignIn,
}

impl PageError {
    pub fn refused(visit: &Visit, refusal: impl Into<Refusal>) -> Self {
        let refusal = refusal.into();
        let kind = if refusal.status == StatusCode::UNAUTHORIZED {
            PageErrorKind::SignIn
        } else {
            PageErrorKind::Refused(refusal)
        };
        Self(Box::new(Failure {
            chrome: Chrome::of(visit),
            kind,
        }))
    }

    /// The visitor must sign in first, then comes back here.
    pub fn sign_in(visit: &Visit) -> Self {
        Self(Box::new(Failure {
            chrome: Chrome::of(visit),
            kind: PageErrorKind::SignIn,
        }))
    }

    /// Sign in, then come back to `path` (not the form's own address).
    pub fn sign_in_then(visit: &Visit, path: &str) -> Self {
        let mut chrome = Chrome::of(visit);
        chrome.here = path.to_owned();
        Self(Box::new(Failure {
            chrome,
            kind: PageErrorKind::SignIn,
        }))
    }

    pub fn not_found(visit: &Visit) -> Self {
        Self::refused(
            visit,
            Refusal {
                status: StatusCode::NOT_FOUND,
                problem: crate::problem::Problem {
                    kind: "/problems/not-found".into(),
                    title: "Not Found".into(),
                    status: 404,
                    detail: "there is no such page, or it is not yours to see".into(),
                    errors: vec![],
                    unavailable_unit_ids: None,
                    checked_in_at: None,
                },
            },
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let Failure { chrome, kind } = *self.0;
        match kind {
            PageErrorKind::SignIn => sign_in_redirect(&chrome.here),
            PageErrorKind::Refused(refusal) => {
                let title = match refusal.status {
                    StatusCode::NOT_FOUND => "Not found".to_owned(),
                    StatusCode::FORBIDDEN => "Not allowed".to_owned(),
                    StatusCode::TOO_MANY_REQUESTS => "Slow down".to_owned(),
                    _ => refusal.problem.title.clone(),
                };
                page(
                    &ErrorPage {
                        chrome,
                        title,
                        detail: format::sentence(&refusal.problem.detail),
                        errors: refusal.problem.errors,
                    },
                    refusal.status,
                    "",
                )
            }
        }
    }
}

/// What a page handler answers.
pub type PageResult = Result<Response, PageError>;

/// A paged list's query: where the previous page ended.
#[derive(serde::Deserialize)]
pub struct CursorQuery {
    pub cursor: Option<String>,
}

/// An id in a page's path: anything that is not a UUID names nothing.
pub fn id(visit: &Visit, raw: &str) -> Result<uuid::Uuid, PageError> {
    uuid::Uuid::try_parse(raw).map_err(|_| PageError::not_found(visit))
}

/// To the login page, coming back to `here` afterwards.
pub fn sign_in_redirect(here: &str) -> Response {
    Redirect::to(&format!("/login?next={}", format::query_value(here))).into_response()
}

/// Only local paths are followed after signing in (no open redirects).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && !path.chars().any(char::is_control) =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// A posted form whose CSRF token was checked. Every page form posts through this.
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A field's trimmed value, empty when absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or("").trim().to_owned()
    }

    pub fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.pairs
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    #[cfg(test)]
    fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self {
            pairs: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "refused_form.html")]
struct RefusedForm {
    chrome: Chrome,
}

impl FromRequest<WebState> for Form {
    type Rejection = Response;

    async fn from_request(request: Request, web: &WebState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let visit = match <Visit as FromRequestParts<WebState>>::from_request_parts(&mut parts, web)
            .await
        {
            Ok(visit) => visit,
            Err(never) => match never {},
        };
        let csrf = parts.extensions.get::<CsrfToken>().cloned();
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let refuse = |status: StatusCode, detail: &str| {
            PageError::refused(&visit, Refusal::from_status(status, detail)).into_response()
        };
        if !is_form {
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "forms are sent as application/x-www-form-urlencoded",
            ));
        }
        let request = Request::from_parts(parts, body);
        let bytes = Bytes::from_request(request, web)
            .await
            .map_err(|rejection| {
                refuse(
                    rejection.status(),
                    "the form could not be read; it may be too large",
                )
            })?;
        let pairs: Vec<(String, String)> = form_urlencoded::parse(&bytes).into_owned().collect();
        let sent = pairs
            .iter()
            .find(|(key, _)| key == CSRF_FIELD)
            .map(|(_, value)| value.as_str());
        match csrf {
            Some(token) if csrf_matches(&token, sent) => Ok(Form { pairs }),
            _ => {
                tracing::warn!("a form arrived without its CSRF token; refused");
                Err(page(
                    &RefusedForm {
                        chrome: Chrome::of(&visit),
                    },
                    StatusCode::FORBIDDEN,
                    "",
                ))
            }
        }
    }
}
