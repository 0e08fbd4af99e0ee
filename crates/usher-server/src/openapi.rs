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
        (name = "admin", description = "Operating the job outbox"),
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
