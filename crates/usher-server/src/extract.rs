//! Request extractors that answer in our problem format: JSON bodies, query strings,
//! ids in paths, and the caller's identity from a bearer token.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use usher_core::{ParseError, Role, Viewer};

use crate::problem::{ApiError, FieldError};
use crate::rate_limit::Verified;
use crate::state::AppState;

/// A JSON body. Unlike axum's own, every failure is a problem document, and a body of the
/// wrong shape names the offending field.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes =
            Bytes::from_request(req, state)
                .await
                .map_err(|rejection: BytesRejection| {
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::PayloadTooLarge
                    } else {
                        ApiError::MalformedBody(rejection.body_text())
                    }
                })?;
        parse_json(&bytes).map(Json)
    }
}

/// Deepest nesting of arrays and objects a request body may have.
pub const MAX_JSON_DEPTH: usize = 32;
/// Most elements in any one array of a request body.
pub const MAX_JSON_ARRAY: usize = 10_000;

/// Deserializes a JSON document: syntax errors are 400, shape errors 422 naming the field.
/// Bodies nested deeper than [`MAX_JSON_DEPTH`] or with an array longer than
/// [`MAX_JSON_ARRAY`] are refused (400) before anything is built from them.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    check_json_bounds(bytes).map_err(ApiError::MalformedBody)?;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => {
            deserializer
                .end()
                .map_err(|e| ApiError::MalformedBody(format!("invalid JSON: {e}")))?;
            Ok(value)
        }
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if inner.is_syntax() || inner.is_eof() || inner.is_io() {
                return Err(ApiError::MalformedBody(format!("invalid JSON: {inner}")));
            }
            Err(ApiError::Validation(vec![shape_error(&path, &inner)]))
        }
    }
}

/// One pass over the raw bytes: nesting depth and array lengths, outside strings. Not a
/// validator (serde is, afterwards); it only bounds the work serde will be asked to do.
fn check_json_bounds(bytes: &[u8]) -> Result<(), String> {
    // Per open container: is it an array, and how many separators it has seen.
    let mut open: Vec<(bool, usize)> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for &byte in bytes {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                open.push((byte == b'[', 0));
                if open.len() > MAX_JSON_DEPTH {
                    return Err(format!(
                        "the body is nested more than {MAX_JSON_DEPTH} levels deep"
                    ));
                }
            }
            b']' | b'}' => {
                open.pop();
            }
            b',' => {
                if let Some((true, separators)) = open.last_mut() {
                    *separators += 1;
                    if *separators >= MAX_JSON_ARRAY {
                        return Err(format!(
                            "an array in the body has more than {MAX_JSON_ARRAY} elements"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// serde says "missing field `email`" at the parent's path; we name the field itself.
fn shape_error(path: &str, error: &serde_json::Error) -> FieldError {
    let message = error.to_string();
    // Drop serde_json's " at line 1 column 42" suffix: the field path says where.
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(head, _)| head)
        .to_string();
    let join = |field: &str| {
        if path == "." || path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        }
    };
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((field, _)) = rest.split_once('`')
    {
        return FieldError::new(join(field), "this field is required");
    }
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, _)) = rest.split_once('`')
    {
        // Here the path already ends with the unknown field.
        let name = if path.ends_with(field) {
            path.to_string()
        } else {
            join(field)
        };
        return FieldError::new(name, format!("unknown field `{field}`"));
    }
    let field = if path == "." {
        String::new()
    } else {
        path.to_string()
    };
    FieldError::new(field, message)
}

/// Collects field errors while parsing a request into domain values, so that one answer
/// lists every invalid field rather than only the first.
#[derive(Default)]
pub struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the value, or records the error under `field`.
    pub fn take<T>(&mut self, field: &str, parsed: Result<T, ParseError>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(error) => {
                self.errors.push(FieldError::new(field, error.0));
                None
            }
        }
    }

    /// Like `take` for a field that may be absent.
    pub fn optional<T, R>(
        &mut self,
        field: &str,
        raw: Option<R>,
        parse: impl FnOnce(R) -> Result<T, ParseError>,
    ) -> Option<Option<T>> {
        match raw {
            None => Some(None),
            Some(raw) => self.take(field, parse(raw)).map(Some),
        }
    }

    pub fn reject(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// A list of ids, each checked (`field[i]` names a bad or repeated one).
    pub fn ids(&mut self, field: &str, raw: &[String]) -> Vec<Uuid> {
        let mut ids = Vec::with_capacity(raw.len());
        for (i, text) in raw.iter().enumerate() {
            match Uuid::try_parse(text) {
                Ok(id) if ids.contains(&id) => {
                    self.reject(&format!("{field}[{i}]"), "this unit is listed twice")
                }
                Ok(id) => ids.push(id),
                Err(_) => self.reject(&format!("{field}[{i}]"), "this is not a valid id"),
            }
        }
        ids
    }

    /// Ok when no field failed.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

/// The answer when some named units are not units of the performance.
pub fn unknown_units(unit_ids: &[usher_core::UnitId]) -> ApiError {
    let list = unit_ids
        .iter()
        .map(usher_core::UnitId::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    ApiError::validation("unit_ids", format!("not units of this performance: {list}"))
}

/// The query string's parameters, or a 422 naming `query` when it does not read.
pub fn query<T>(
    params: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    params
        .map(|axum::extract::Query(params)| params)
        .map_err(|e| ApiError::validation("query", e.body_text()))
}

/// Parses an id from a path segment. Something that is not a UUID names nothing: 404.
pub fn path_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::NotFound)
}

/// The request's `x-request-id` (set or kept by the request-id layer), for the audit log.
#[derive(Debug, Clone, Default)]
pub struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ))
    }
}

/// The authenticated caller, from `Authorization: Bearer <access token>`, with the role
/// the account has now ([`crate::access`]), not the one it had at sign-in.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub id: Uuid,
    pub role: Role,
    /// The session (refresh-token family) the access token belongs to.
    pub session_id: Uuid,
}

impl Caller {
    pub fn viewer(self) -> Viewer {
        Viewer::new(self.id.into(), self.role)
    }

    /// This caller, known to organize (an organizer or an admin); 403 otherwise.
    pub fn require_organizer(self) -> Result<Organizer, ApiError> {
        if self.role.can_organize() {
            Ok(Organizer(self))
        } else {
            Err(ApiError::Forbidden(
                "only organizers and admins may do this",
            ))
        }
    }

    /// The audit log's record of this caller making a change in this request.
    pub fn audit(self, request: &RequestId) -> usher_store::Audit {
        usher_store::Audit::by(self.id.into(), request.0.clone())
    }

    /// This caller, known to be an admin; 403 otherwise.
    pub fn require_admin(self) -> Result<Admin, ApiError> {
        if self.role == Role::Admin {
            Ok(Admin(self))
        } else {
            Err(ApiError::Forbidden("only admins may do this"))
        }
    }
}

/// A caller checked to organize ([`Caller::require_organizer`]). Functions that need
/// one take it, so the check is made once, where the request is read (a route, a
/// page), and cannot be forgotten.
#[derive(Debug, Clone, Copy)]
pub struct Organizer(Caller);

/// A caller checked to be an admin ([`Caller::require_admin`]).
#[derive(Debug, Clone, Copy)]
pub struct Admin(Caller);

impl std::ops::Deref for Organizer {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl std::ops::Deref for Admin {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.0
    }
}

fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not valid text"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(ApiError::Unauthorized(
            "use `Authorization: Bearer <access_token>`",
        )),
    }
}

impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(Verified(caller)) = parts.extensions.get() {
            return Ok(*caller);
        }
        let state = AppState::from_ref(state);
        let token = bearer(parts)?.ok_or(ApiError::Unauthorized(
            "this needs `Authorization: Bearer <access_token>`",
        ))?;
        let caller = state.authorize(token).await?;
        parts.extensions.insert(Verified(caller));
        Ok(caller)
    }
}

/// A caller who may be anonymous; a token that is present but bad is still a 401.
impl<S> OptionalFromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        if let Some(Verified(caller)) = parts.extensions.get() {
            return Ok(Some(*caller));
        }
        let state = AppState::from_ref(state);
        let Some(token) = bearer(parts)? else {
            return Ok(None);
        };
        let caller = state.authorize(token).await?;
        parts.extensions.insert(Verified(caller));
        Ok(Some(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        email: String,
        nested: Option<Nested>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Nested {
        count: u32,
    }

    fn field_of(result: Result<Body, ApiError>) -> (String, String) {
        match result {
            Err(ApiError::Validation(errors)) => {
                (errors[0].field.clone(), errors[0].message.clone())
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn missing_field_is_named() {
        assert_eq!(field_of(parse_json(br#"{}"#)).0, "email",);
    }

    #[test]
    fn wrong_type_in_nested_field_is_named_by_path() {
        let (field, message) = field_of(parse_json(br#"{"email":"a","nested":{"count":"x"}}"#));
        assert_eq!(field, "nested.count");
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn unknown_field_is_refused() {
        assert_eq!(
            field_of(parse_json(br#"{"email":"a","emial":"b"}"#)).0,
            "emial"
        );
    }

    #[test]
    fn deep_nesting_and_long_arrays_are_refused_before_parsing() {
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        let error = parse_json::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert!(
            matches!(&error, ApiError::MalformedBody(why) if why.contains("nested")),
            "{error:?}"
        );
        let just_deep_enough = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert!(parse_json::<serde_json::Value>(just_deep_enough.as_bytes()).is_ok());
        // Brackets inside strings (escaped quotes included) are text, not nesting.
        let text = format!(r#"{{"a": "{}\"{}"}}"#, "[".repeat(100), "{".repeat(100));
        assert!(parse_json::<serde_json::Value>(text.as_bytes()).is_ok());

        let long = format!("[{}]", vec!["1"; MAX_JSON_ARRAY + 1].join(","));
        let error = parse_json::<serde_json::Value>(long.as_bytes()).unwrap_err();
        assert!(
            matches!(&error, ApiError::MalformedBody(why) if why.contains("elements")),
            "{error:?}"
        );
        let full = format!("[{}]", vec!["1"; MAX_JSON_ARRAY].join(","));
        assert!(parse_json::<serde_json::Value>(full.as_bytes()).is_ok());
        // Many small arrays are fine; the limit is per array.
        let many = format!("[{}]", vec!["[1,2]"; 5_000].join(","));
        assert!(parse_json::<serde_json::Value>(many.as_bytes()).is_ok());
    }

    #[test]
    fn syntax_errors_are_malformed() {
        assert!(matches!(
            parse_json::<Body>(br#"{"email": "#),
            Err(ApiError::MalformedBody(_))
        ));
        assert!(matches!(
            parse_json::<Body>(br#"{"email": "a"} trailing"#),
            Err(ApiError::MalformedBody(_))
        ));
    }
}
