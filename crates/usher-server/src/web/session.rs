//! Browser sessions: the API's own tokens kept in cookies, and CSRF protection.
//!
//! The access token (a JWT, 15 minutes) and the refresh token (opaque, rotating) live in
//! `HttpOnly; SameSite=Lax` cookies, so page scripts never see them. A middleware in
//! front of everything (pages and `/v1` alike) turns the access cookie into the
//! `Authorization` header the API expects, and when it has expired trades the refresh
//! cookie for a new pair behind the scenes. The API therefore has one notion of a caller.
//!
//! CSRF: a random token in its own cookie, repeated in every form (`_csrf`) and, for
//! scripts calling `/v1` with cookies, in an `x-csrf-token` header (double submit). A
//! cross-site page can make the browser send our cookies (top-level navigations) but
//! cannot read the token to repeat it. `SameSite=Lax` already keeps the cookies off
//! cross-site POSTs; the token is the second lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;
use tokio::sync::OnceCell;

use crate::auth::{ACCESS_TOKEN_TTL, REFRESH_TOKEN_TTL};
use crate::extract::Caller;
use crate::problem::ApiError;
use crate::rate_limit::Verified;
use crate::routes::accounts::{Session, rotate_session};
use crate::web::WebState;

pub const ACCESS_COOKIE: &str = "usher_access";
pub const REFRESH_COOKIE: &str = "usher_refresh";
pub const CSRF_COOKIE: &str = "usher_csrf";
/// The form field and the header that repeat the CSRF cookie.
pub const CSRF_FIELD: &str = "_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How long a rotated refresh token still yields the pair it was traded for. A page
/// and its live socket (or two tabs) often present the same expired session at once;
/// without this window the second would look like a stolen token and sign the user out.
const ROTATION_GRACE: Duration = Duration::from_secs(20);

/// This request's CSRF token, for forms to repeat.
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

/// Refresh tokens this instance rotated in the last moments, and what they became.
/// Requests presenting the same token at once share one rotation (single flight).
#[derive(Default)]
pub struct RecentRotations {
    map: Mutex<HashMap<String, (Instant, Flight)>>,
}

/// One rotation, awaited by every request that presented the same refresh token.
type Flight = Arc<OnceCell<Option<Session>>>;

impl RecentRotations {
    /// The session this refresh token was (or is now) traded for; `None` when it
    /// names no live session.
    async fn rotate(&self, web: &WebState, refresh_token: &str) -> Option<Session> {
        let flight = {
            let Ok(mut map) = self.map.lock() else {
                return None;
            };
            map.retain(|_, (at, _)| at.elapsed() < ROTATION_GRACE);
            map.entry(refresh_token.to_owned())
                .or_insert_with(|| (Instant::now(), Arc::new(OnceCell::new())))
                .1
                .clone()
        };
        flight
            .get_or_init(|| async {
                rotate_session(&web.app, refresh_token)
                    .await
                    .inspect_err(|error| {
                        tracing::info!(%error, "session cookies no longer valid; cleared");
                    })
                    .ok()
            })
            .await
            .clone()
    }
}

/// The cookies of a request, by name (first one wins).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// A `Set-Cookie` value. `max_age` zero deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    // Names are ours and values are base64url or JWTs: always valid header text.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The cookies that start (or renew) a session.
pub fn session_cookies(access_token: &str, refresh_token: &str, secure: bool) -> [HeaderValue; 2] {
    [
        set_cookie(
            ACCESS_COOKIE,
            access_token,
            ACCESS_TOKEN_TTL.num_seconds(),
            secure,
        ),
        set_cookie(
            REFRESH_COOKIE,
            refresh_token,
            REFRESH_TOKEN_TTL.num_seconds(),
            secure,
        ),
    ]
}

/// The cookies that end a session.
pub fn clear_session_cookies(secure: bool) -> [HeaderValue; 2] {
    [
        set_cookie(ACCESS_COOKIE, "", 0, secure),
        set_cookie(REFRESH_COOKIE, "", 0, secure),
    ]
}

fn new_csrf_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("random source failed: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn plausible_csrf(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `sent` repeats this request's CSRF token (in constant time).
pub fn csrf_matches(expected: &CsrfToken, sent: Option<&str>) -> bool {
    !expected.0.is_empty()
        && sent.is_some_and(|sent| bool::from(sent.as_bytes().ct_eq(expected.0.as_bytes())))
}

/// Cookie → caller, renewing the session when its access token has run out.
pub async fn layer(State(web): State<WebState>, mut request: Request, next: Next) -> Response {
    let secure = web.secure_cookies;
    let mut set: Vec<HeaderValue> = Vec::new();
    let path = request.uri().path();
    let is_page = !(path.starts_with("/v1/")
        || path.starts_with("/static/")
        || path.starts_with("/docs")
        || matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json"));
    // API clients without cookies (scripts, load tests) pass straight through.
    if !is_page && !request.headers().contains_key(header::COOKIE) {
        return next.run(request).await;
    }

    let csrf = match cookie(request.headers(), CSRF_COOKIE).filter(|t| plausible_csrf(t)) {
        Some(token) => token.to_owned(),
        // Only pages hand out a token: an API call has no form to put it in.
        None if !is_page => String::new(),
        None => match new_csrf_token() {
            Ok(token) => {
                // A browser-session cookie: it lives as long as the browser does.
                let text = format!(
                    "{CSRF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax{}",
                    if secure { "; Secure" } else { "" }
                );
                if let Ok(value) = HeaderValue::from_str(&text) {
                    set.push(value);
                }
                token
            }
            Err(error) => return error.into_response(),
        },
    };
    let csrf = CsrfToken(csrf);

    // An explicit bearer token wins: API clients never depend on cookies.
    if !request.headers().contains_key(header::AUTHORIZATION) {
        let caller = session_caller(&web, request.headers(), &mut set, secure).await;
        if let Some((caller, token)) = caller {
            let unsafe_method = !matches!(
                *request.method(),
                Method::GET | Method::HEAD | Method::OPTIONS
            );
            // Pages check their forms' tokens themselves; API calls made with cookies
            // must repeat the token in a header.
            if unsafe_method && request.uri().path().starts_with("/v1/") {
                let sent = request
                    .headers()
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok());
                if !csrf_matches(&csrf, sent) {
                    let mut response = ApiError::Forbidden(
                        "a request made with session cookies must repeat the CSRF token in `x-csrf-token`",
                    )
                    .into_response();
                    append(&mut response, set);
                    return response;
                }
            }
            if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
                request.headers_mut().insert(header::AUTHORIZATION, value);
                request.extensions_mut().insert(Verified(caller));
            }
        }
    }
    request.extensions_mut().insert(csrf);
    let mut response = next.run(request).await;
    append(&mut response, set);
    response
}

fn append(response: &mut Response, cookies: Vec<HeaderValue>) {
    for value in cookies {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The caller named by the session cookies, renewing them when needed. Cookies that
/// name nobody any more are cleared.
async fn session_caller(
    web: &WebState,
    headers: &HeaderMap,
    set: &mut Vec<HeaderValue>,
    secure: bool,
) -> Option<(Caller, String)> {
    // An access token refused for any reason (expired, or its session or account no
    // longer stands) falls back to the refresh cookie, which fails too when the session
    // was ended: the cookies are then cleared.
    if let Some(token) = cookie(headers, ACCESS_COOKIE)
        && let Ok(caller) = web.app.authorize(token).await
    {
        return Some((caller, token.to_owned()));
    }
    let refresh = cookie(headers, REFRESH_COOKIE)?;
    match web.rotations.rotate(web, refresh).await {
        Some(session) => {
            let caller = web.app.authorize(&session.access_token).await.ok()?;
            set.extend(session_cookies(
                &session.access_token,
                &session.refresh_token,
                secure,
            ));
            Some((caller, session.access_token))
        }
        None => {
            set.extend(clear_session_cookies(secure));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; usher_csrf=abc; usher_access="),
        );
        assert_eq!(cookie(&headers, "usher_csrf"), Some("abc"));
        assert_eq!(cookie(&headers, "a"), Some("1"));
        assert_eq!(cookie(&headers, "usher_access"), None);
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn csrf_tokens_are_random_and_compared_whole() {
        let a = new_csrf_token().unwrap();
        let b = new_csrf_token().unwrap();
        assert_ne!(a, b);
        assert!(plausible_csrf(&a));
        let token = CsrfToken(a.clone());
        assert!(csrf_matches(&token, Some(&a)));
        assert!(!csrf_matches(&token, Some(&b)));
        assert!(!csrf_matches(&token, Some(&a[..42])));
        assert!(!csrf_matches(&token, None));
    }

    #[test]
    fn session_cookies_are_http_only_and_lax() {
        let value = set_cookie(ACCESS_COOKIE, "t", 900, true);
        let text = value.to_str().unwrap();
        assert!(text.contains("HttpOnly") && text.contains("SameSite=Lax"));
        assert!(text.contains("Secure") && text.contains("Max-Age=900"));
    }
}
