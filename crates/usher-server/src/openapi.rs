//! The OpenAPI document's frame: title, security scheme and tags. Paths and schemas are
//! collected from the handlers' `#[utoipa::path]` attributes by `utoipa-axum`.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Usher",
        description = "Event ticketing and booking: events, performances, seat holds, payments.\n\n\
            Errors are `application/problem+json` (RFC 9457). Authenticate with \
            `Authorization: Bearer <access_token>` from `/v1/auth/login` or `/v1/auth/signup`, \
            or with the web UI's session cookies (`usher_access`, renewed from `usher_refresh`); \
            an unsafe request made with cookies must repeat the page's CSRF token (`<meta \
            name=\"csrf-token\">`, the value of the HttpOnly `usher_csrf` cookie) in an \
            `x-csrf-token` header (403 otherwise).\n\n\
            Every unsafe POST accepts an `Idempotency-Key` header (per caller, kept 24 h): a \
            repeat returns the first answer with `Idempotent-Replayed: true`.\n\n\
            Rate limits (GCRA, per IP, per IP and account on `/v1/auth/*`, per user on writes \
            and on holds): a refusal is 429 `/problems/rate-limited` with `Retry-After`; limited \
            answers carry `RateLimit-Policy` and `RateLimit`.\n\n\
            Live availability: `GET /v1/performances/{id}/live` is a WebSocket (see that path).",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "accounts", description = "Signup, login, tokens, roles"),
        (name = "events", description = "Events and their status"),
        (name = "performances", description = "Performances, seat maps, counts and sales"),
        (name = "bookings", description = "Holds and bookings"),
        (name = "payments", description = "Checkout, payment providers, webhooks and refunds"),
        (name = "tickets", description = "Ticket codes, their QR images, and check-in at the door"),
        (name = "wallet", description = "Store credit: balances, the ledger, admin credits"),
        (name = "admin", description = "Operating the job outbox, and the audit log"),
        (name = "operations", description = "Health and readiness"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        // The web UI's session: the same access token, in an HttpOnly cookie.
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "usher_access",
                "The web UI's session cookie; unsafe requests also need `x-csrf-token`",
            ))),
        );
    }
}

/// Adds the answers any route may give to every operation that does not list them
/// itself, so the document names every status the server sends (checked by fuzzing it
/// with schemathesis): 429 (rate limits, everywhere), 503 (too busy, or the database is
/// away; not `/healthz`), 401 (a bad token, on every `/v1` route, public ones too), and
/// for a request body 400 (not JSON), 413 (too large), 415 (not `application/json`) and
/// 422 (invalid), and 400 (unreadable) and 422 (invalid) for query parameters.
pub fn document_common_answers(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    for (path, item) in openapi.paths.paths.iter_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            let has_body = operation.request_body.is_some();
            let has_query = operation.parameters.iter().flatten().any(|p| {
                matches!(p, utoipa::openapi::RefOr::T(p) if p.parameter_in == ParameterIn::Query)
            });
            let mut common = vec![("429", "Rate limited; see Retry-After")];
            if path != "/healthz" {
                common.push((
                    "503",
                    "Too busy (too many requests or connections at once) or the database is \
                     unavailable; see Retry-After",
                ));
            }
            if path.starts_with("/v1/") {
                common.push(("401", "The access token is missing, invalid or expired"));
            }
            if has_body {
                common.push((
                    "400",
                    "The body is not well-formed JSON, or nested too deeply",
                ));
                common.push(("413", "The body is larger than the server accepts"));
                common.push(("415", "The body is not `application/json`"));
            } else if has_query {
                common.push(("400", "The query string cannot be read (a parameter twice)"));
            }
            if has_body || has_query {
                common.push(("422", "Invalid fields, named in `errors`"));
            }
            for (status, description) in common {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| documented_problem(description));
            }
        }
    }
}

fn documented_problem(
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::response::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            crate::problem::PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
        .into()
}
