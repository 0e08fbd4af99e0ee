//! Builds the whole HTTP application from a configuration, a store and a listener, so
//! that `main` stays thin and tests can run many apps on port 0 at once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::Response;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId as TracedId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use usher_core::Clock;
use usher_payments::{MockProvider, PaymentProvider, StripeProvider};
use usher_store::Store;

use crate::auth::TokenKeys;
use crate::config::{PaymentsConfig, ServerConfig};
use crate::connections::HttpService;
use crate::master_key::Keyring;
use crate::openapi::ApiDoc;
use crate::problem::{ApiError, InternalError, problemize};
use crate::reads::Reads;
use crate::redis::Redis;
use crate::routes;
use crate::sealed::Sealer;
use crate::state::{AppState, Services};
use sha2::Digest;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Where the generated signing key is kept when `USHER_JWT_SECRET` is not set.
const JWT_SECRET_SETTING: &str = "jwt_secret";
/// Where the key that ticket codes are derived from is kept.
const TICKET_SECRET_SETTING: &str = "ticket_secret";
/// Where the key that encrypts stored idempotent answers is kept.
const SEALING_SECRET_SETTING: &str = "idempotency_sealing_secret";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("USHER_JWT_SECRET must be at least 32 bytes long")]
    WeakJwtSecret,
    #[error("invalid CORS origin {0:?}")]
    BadCorsOrigin(String),
    #[error("could not read the listener's address: {0}")]
    Listener(std::io::Error),
    #[error("{0}")]
    Setup(String),
}

/// The secret access tokens are signed with: the configured one (at least 32 bytes),
/// or the one stored for the deployment (racing instances agree on whichever was
/// stored first).
async fn jwt_secret(
    config: &ServerConfig,
    keyring: &Keyring,
    store: &dyn Store,
) -> Result<SecretString, BuildError> {
    match &config.jwt_secret {
        Some(secret) if secrecy::ExposeSecret::expose_secret(secret).len() < 32 => {
            Err(BuildError::WeakJwtSecret)
        }
        Some(secret) => Ok(secret.clone()),
        None => Ok(SecretString::from(
            keyring
                .secret(store, JWT_SECRET_SETTING)
                .await
                .map_err(BuildError::Setup)?,
        )),
    }
}

/// The payment provider the configuration names.
fn payment_provider(
    config: &ServerConfig,
    public_url: &str,
) -> Result<Arc<dyn PaymentProvider>, BuildError> {
    Ok(match &config.payments {
        PaymentsConfig::Mock => Arc::new(MockProvider::new(public_url.to_owned())),
        PaymentsConfig::Stripe {
            secret_key,
            api_base,
            ..
        } => Arc::new(
            StripeProvider::new(
                api_base.clone(),
                secret_key.clone(),
                config.outbound_timeout,
            )
            .map_err(|e| BuildError::Setup(e.to_string()))?,
        ),
    })
}

pub struct Application {
    listener: TcpListener,
    service: HttpService,
    state: AppState,
}

impl Application {
    pub async fn build(
        config: ServerConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        listener: TcpListener,
    ) -> Result<Self, BuildError> {
        Self::build_with_replica(config, store, None, clock, listener).await
    }

    /// [`Self::build`] with a streaming replica of `store` for public reads
    /// (`DATABASE_READ_URL`; see [`crate::reads`]).
    pub async fn build_with_replica(
        config: ServerConfig,
        store: Arc<dyn Store>,
        replica: Option<Arc<dyn Store>>,
        clock: Arc<dyn Clock>,
        listener: TcpListener,
    ) -> Result<Self, BuildError> {
        let keyring = Keyring::new(config.master_key.load().map_err(BuildError::Setup)?);
        let secret = jwt_secret(&config, &keyring, store.as_ref()).await?;
        let cors = cors_layer(&config.cors_origins)?;
        let local = listener.local_addr().map_err(BuildError::Listener)?;
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"))
            .trim_end_matches('/')
            .to_owned();
        let payments = payment_provider(&config, &public_url)?;
        let mailer = usher_mail::from_config(
            config.mail.smtp_url.as_deref(),
            &config.mail.dir,
            &config.mail.from,
            config.outbound_timeout,
        )
        .map_err(|e| BuildError::Setup(e.to_string()))?;
        let ticket_secret = keyring
            .secret(store.as_ref(), TICKET_SECRET_SETTING)
            .await
            .map_err(BuildError::Setup)?
            .into_bytes();
        let sealing_secret = keyring
            .secret(store.as_ref(), SEALING_SECRET_SETTING)
            .await
            .map_err(BuildError::Setup)?;
        let sealer = Sealer::new(sha2::Sha256::digest(sealing_secret.as_bytes()).into());
        let redis = config
            .redis_url
            .as_deref()
            .map(Redis::open)
            .transpose()
            .map_err(BuildError::Setup)?;
        tracing::info!(payments = %payments.provider(), mail = %mailer.describe(), "providers ready");
        let reads = match replica {
            Some(replica) => Reads::with_replica(store.clone(), replica, config.read_max_lag),
            None => Reads::primary(store.clone()),
        };
        let state = AppState::new(
            Services {
                store,
                reads,
                tokens: TokenKeys::new(&secret),
                clock,
                payments,
                mailer,
                public_url,
                ticket_secret,
                sealer,
                redis,
            },
            config,
        );
        let service = service(state.clone(), cors);
        Ok(Self {
            listener,
            service,
            state,
        })
    }

    /// The state handlers share; tests use it to run jobs by hand.
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    pub fn local_addr(&self) -> Result<SocketAddr, BuildError> {
        self.listener.local_addr().map_err(BuildError::Listener)
    }

    /// Serves (and sweeps expired holds) until `shutdown` resolves, then lets requests
    /// in flight finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let sweeper = self.state.config().sweep_interval.map(|interval| {
            tokio::spawn(crate::sweeper::run(
                self.state.store_arc(),
                self.state.clock_arc(),
                interval,
                stopped.clone(),
            ))
        });
        let workers = self.state.config().job_interval.map(|interval| {
            tokio::spawn(crate::jobs::run(
                self.state.clone(),
                interval,
                stopped.clone(),
            ))
        });
        let waiting = self.state.config().waiting_interval.map(|interval| {
            tokio::spawn(crate::waiting::run(
                self.state.clone(),
                interval,
                stopped.clone(),
            ))
        });
        let live = tokio::spawn(crate::live::run(
            self.state.live().clone(),
            self.state.redis().cloned(),
            stopped.clone(),
        ));
        let forgetting = tokio::spawn(crate::seat_maps::forget_changed(
            self.state.clone(),
            stopped.clone(),
        ));
        let accounts = tokio::spawn(crate::access::follow(self.state.clone(), stopped.clone()));
        let tidy = tokio::spawn(crate::rate_limit::tidy_every_minute(
            self.state.rate_limits_arc(),
            stopped.clone(),
        ));
        let served = crate::connections::serve(
            self.listener,
            self.service,
            self.state.config().connections.clone(),
            self.state.config().trusted_proxies.clone(),
            stopped.clone(),
        )
        .await;
        if let Some(sweeper) = sweeper {
            let _ = sweeper.await;
        }
        if let Some(workers) = workers {
            let _ = workers.await;
        }
        if let Some(waiting) = waiting {
            let _ = waiting.await;
        }
        let _ = live.await;
        let _ = forgetting.await;
        let _ = tidy.await;
        let _ = accounts.await;
        served
    }
}

/// The API routes and their OpenAPI document, before any middleware.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::accounts::router())
        .merge(routes::events::router())
        .merge(routes::performances::router())
        .merge(routes::live::router())
        .merge(routes::bookings::router())
        .merge(routes::waiting::router())
        .merge(routes::payments::router())
        .merge(routes::box_office::router())
        .merge(routes::admin::router())
        .merge(routes::ops::router())
        .split_for_parts();
    let mut openapi = openapi;
    crate::openapi::document_common_answers(&mut openapi);
    (router, openapi)
}

/// The whole HTTP service: the routes (API, pages, docs, metrics) inside the
/// middleware every request passes.
fn service(state: AppState, cors: CorsLayer) -> HttpService {
    with_middleware(routes(&state), state.config(), cors)
}

/// Every route: the API (with its rate limits and idempotency keys), the pages, the
/// docs and the metrics, behind the session layer.
fn routes(state: &AppState) -> Router {
    let config = state.config();
    let (api, openapi) = api();
    crate::telemetry::handle();
    let api = api
        .with_state(state.clone())
        // Inside the trace span and request id, outside the handlers.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::idempotency::layer,
        ));
    // Before idempotency: a refused request is not a use of its key. Off, the layer is
    // not there at all (benchmarks measure the server, not a pass-through).
    let api = if config.rate_limits {
        api.layer(middleware::from_fn_with_state(
            state.clone(),
            crate::rate_limit::layer,
        ))
    } else {
        api
    };
    // The pages call the API's functions directly, as the visitor, with the same
    // limits (`rate_limit::pages`).
    let web = crate::web::WebState::new(state.clone());
    api.route("/metrics", axum::routing::get(crate::telemetry::render))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .merge(crate::web::router(web.clone()))
        // Per route, so that the matched path template is known.
        .route_layer(middleware::from_fn(crate::telemetry::track))
        // Session cookies become the caller before any route (pages and API) runs.
        .layer(middleware::from_fn_with_state(
            web,
            crate::web::session::layer,
        ))
}

/// The middleware every request passes, around `app`, boxed once.
fn with_middleware(app: Router, config: &ServerConfig, cors: CorsLayer) -> HttpService {
    // Every request passes these, listed from the outermost to the innermost (closest
    // to the routes). Composed once around the whole router rather than with
    // `Router::layer` (which boxes each layer again and clones every box per request):
    // that cost `GET /healthz` half of its rate (BENCHMARKS.md).
    let service = ServiceBuilder::new()
        // One body type for the connection.
        .map_response(|response: axum::http::Response<_>| response.map(Body::new))
        // Only well-formed incoming request ids are kept; others are replaced, so a
        // client cannot inject odd bytes into our logs.
        .map_request(drop_invalid_request_id)
        .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIds::new()))
        // The span opens after the id is known, so every log line of the request has it.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(request_finished)
                .on_failure(()),
        )
        // Outside the problem mapper, so error responses carry the id as well.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        // Browsers are told to be strict, and any error response that is not yet a
        // problem document becomes one. (The layers below answer bodies of their own
        // types: one `Body` from here out.)
        .map_response(|response: axum::http::Response<_>| {
            problemize(security_headers(response.map(Body::new)))
        })
        .layer(cors)
        // gzip for clients that ask (seat maps of big houses are large JSON).
        .layer(CompressionLayer::new())
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                use axum::response::IntoResponse;
                ApiError::Internal("handler panicked".into()).into_response()
            },
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
        // Every body read whole before a handler runs (over the limit: 413), inside the
        // timeout so that a body that never arrives is still a 503: a handler that
        // ignores it must not leave the keep-alive connection with unread bytes.
        .layer(middleware::from_fn_with_state(
            config.max_body_bytes,
            crate::connections::whole_body,
        ))
        // The extractors' own limit, set to ours: without it axum's 2 MB default would
        // refuse bodies that `whole_body` (above) let in under a larger configured limit.
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .service(app);
    HttpService::new(service)
}

/// Ids for requests that arrive without one: UUID-shaped (version 8, "custom"), a
/// random half drawn once per process and a counter, so unique across instances and
/// restarts without reading the kernel's random source for every request (a random
/// v4 per request was a `getrandom` system call each, ~2 % of `GET /healthz`).
#[derive(Clone)]
struct RequestIds {
    instance: u64,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        let mut instance = [0u8; 8];
        // Without a random source the ids are still unique within this process.
        let _ = getrandom::fill(&mut instance);
        Self {
            instance: u64::from_le_bytes(instance),
            next: Arc::default(),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<TracedId> {
        let count = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bits = (u128::from(self.instance) << 64) | u128::from(count);
        // Version 8 in bits 76..80, the RFC 9562 variant (0b10) in bits 62..64.
        let bits = (bits & !(0xF << 76) & !(0b11 << 62)) | (0x8 << 76) | (0b10 << 62);
        let mut text = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::from_u128(bits)
            .hyphenated()
            .encode_lower(&mut text);
        HeaderValue::from_str(id).ok().map(TracedId::new)
    }
}

/// A span per request with its id, method and path.
fn request_span(request: &Request) -> Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        request_id,
        method = %request.method(),
        path = %request.uri().path(),
    )
}

/// One line when a request ends, with the cause when it failed inside.
fn request_finished<B>(response: &axum::http::Response<B>, latency: Duration, _span: &Span) {
    let status = response.status().as_u16();
    let latency_ms = latency.as_secs_f64() * 1000.0;
    match response.extensions().get::<InternalError>() {
        Some(InternalError(cause)) => {
            tracing::error!(status, latency_ms, cause = %cause, "request failed")
        }
        None => tracing::info!(status, latency_ms, "request finished"),
    }
}

fn drop_invalid_request_id(mut request: Request) -> Request {
    let valid = request.headers().get(REQUEST_ID).is_none_or(|v| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 128
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    });
    if !valid {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// Headers that tell browsers to be strict with what we serve. A handler that needs
/// something else sets its own value first.
fn security_headers(mut response: Response) -> Response {
    // The CSP allows inline styles and data: images because the bundled Swagger UI
    // uses them; scripts only ever come from this origin.
    const HEADERS: [(HeaderName, &str); 5] = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
             base-uri 'none'; form-action 'self'",
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    let headers = response.headers_mut();
    for (name, value) in HEADERS {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

fn cors_layer(origins: &[String]) -> Result<CorsLayer, BuildError> {
    let origins = origins
        .iter()
        .map(|o| HeaderValue::from_str(o).map_err(|_| BuildError::BadCorsOrigin(o.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            REQUEST_ID,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            REQUEST_ID,
            header::RETRY_AFTER,
            HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(Duration::from_secs(600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_shaped_unique_and_of_this_instance() {
        let mut ids = RequestIds::new();
        let request = axum::http::Request::new(());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1_000 {
            let id = ids.make_request_id(&request).unwrap();
            let text = id.header_value().to_str().unwrap().to_owned();
            let parsed = uuid::Uuid::parse_str(&text).unwrap();
            assert_eq!(parsed.get_version_num(), 8, "{text}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{text}");
            assert!(seen.insert(text));
        }
        // Another instance (process) draws another random half.
        let mut other = RequestIds::new();
        let theirs = other.make_request_id(&request).unwrap();
        assert!(!seen.contains(theirs.header_value().to_str().unwrap()));
    }
}
