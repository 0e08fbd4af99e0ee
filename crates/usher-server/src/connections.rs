//! The listening socket: every TCP connection served by hyper's HTTP/1.1 with the
//! limits that keep slow or hostile clients from holding the server.
//!
//! - A client that has not sent a whole request head within `header_read_timeout` is
//!   cut off (idle keep-alive connections included), so half a request line cannot
//!   hold a socket open.
//! - Request heads over `max_header_bytes` or with too many fields answer 431.
//! - At most `max_connections` are served at once (a WebSocket counts as long as it is
//!   open). Beyond, a connection is answered 503 with `Retry-After` and closed — a small
//!   number of such answers at a time, and past that a new connection is closed at once:
//!   load is shed, never queued without bound.
//! - The same for requests in flight across all connections (`max_in_flight`).
//! - At most `max_per_address` connections from one client address (a fraction of
//!   `max_connections`), so that one client cannot take every connection and lock
//!   everyone else out. Trusted proxies (`USHER_TRUSTED_PROXIES`) carry many clients
//!   and are exempt.
//! - `/healthz` and `/readyz` always answer, even on a connection being turned away, so
//!   that a full instance can still be seen to be alive.
//! - A connection the server ends while the client may still be sending (an upload over
//!   the limit) is closed lingering ([`crate::lingering`]), so that the client reads
//!   the 413 instead of a reset.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

use crate::lingering::Lingering;
use crate::problem::ApiError;
use crate::rate_limit::TrustedProxies;

/// What the connections serve: every route inside its middleware, as one service.
pub type HttpService = tower::util::BoxCloneSyncService<Request, Response, Infallible>;

/// Connections answered 503 at once when the server is full; past this a new
/// connection is closed without an answer.
const SHED_AT_ONCE: usize = 256;
/// How long a connection that is being turned away may take to send its request.
const SHED_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Header fields in one request, at most.
const MAX_HEADERS: usize = 100;
/// How long shutting down waits for open connections to finish their requests.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Connections served at once (WebSockets included).
    pub max_connections: usize,
    /// Time a connection has to send a whole request head, counted from when the server
    /// starts waiting for it (so it is also the keep-alive idle timeout).
    pub header_read_timeout: Duration,
    /// Largest request line plus headers, in bytes.
    pub max_header_bytes: usize,
    /// Requests in flight across all connections; beyond, 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// Connections from one client address at once (trusted proxies exempt).
    pub max_per_address: usize,
}

/// The share of all connections one address may hold, by default.
pub const DEFAULT_PER_ADDRESS_PERCENT: usize = 25;

/// `percent` of `max_connections`, at least one.
pub fn per_address(max_connections: usize, percent: usize) -> usize {
    (max_connections.saturating_mul(percent.min(100)) / 100).max(1)
}

/// Requests in flight at once: far above what a rush needs to keep the write pipeline
/// full (a few hundred), far below what exhausts memory.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;

impl Default for ConnectionLimits {
    fn default() -> Self {
        let max_connections = default_max_connections();
        Self {
            max_connections,
            header_read_timeout: Duration::from_secs(20),
            max_header_bytes: 32 * 1024,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_per_address: per_address(max_connections, DEFAULT_PER_ADDRESS_PERCENT),
        }
    }
}

/// Open files allowed to this process, less room for the database, logs and mail: a
/// connection the process cannot open a descriptor for is worse than a 503.
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur as usize
    } else {
        1024
    };
    soft.saturating_sub(256 + SHED_AT_ONCE).clamp(64, 10_000)
}

/// Kept with every request of a connection (and by a WebSocket it upgrades to), so the
/// connection's slot (and its address's) is free only when all of them are gone.
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<(OwnedSemaphorePermit, Option<AddressSlot>)>);

/// Connections open per client address.
#[derive(Default)]
struct Addresses {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its address; uncounted when dropped.
struct AddressSlot {
    addresses: Arc<Addresses>,
    ip: IpAddr,
}

impl Addresses {
    /// Counts one more connection from `ip`, unless it already has `max`.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut open = self.open.lock().ok()?;
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            addresses: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.addresses.open.lock()
            && let Some(count) = open.get_mut(&self.ip)
        {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Why a connection is turned away.
#[derive(Debug, Clone, Copy)]
enum Full {
    /// Every connection slot is taken.
    Server,
    /// Its address holds its share of them.
    Address,
}

impl Full {
    /// The metric's label (`usher_shed_total{what=…}`).
    fn label(self) -> &'static str {
        match self {
            Full::Server => "connection",
            Full::Address => "address",
        }
    }

    /// What the 503 says there are too many of.
    fn what(self) -> &'static str {
        match self {
            Full::Server => "connections",
            Full::Address => "connections from your address",
        }
    }
}

/// Serves `service` on `listener` until `stopped` turns true, then stops accepting and
/// lets open connections finish their requests (for at most [`DRAIN_DEADLINE`]).
pub async fn serve(
    listener: TcpListener,
    service: HttpService,
    limits: ConnectionLimits,
    proxies: TrustedProxies,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let turning_away = Arc::new(Semaphore::new(SHED_AT_ONCE));
    let addresses = Arc::new(Addresses::default());
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    pause_after(&error).await;
                    continue;
                }
            },
            _ = until_true(&mut stopped) => break,
        };
        // Small answers (a hold, a 409) should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        // Its address's share first (trusted proxies carry many clients), then the cap.
        let slot = if proxies.contains(remote.ip()) {
            Ok(None)
        } else {
            addresses
                .take(remote.ip(), limits.max_per_address)
                .map(Some)
                .ok_or(Full::Address)
        }
        .and_then(|address| {
            let slot = open.clone().try_acquire_owned().map_err(|_| Full::Server)?;
            Ok((slot, address))
        });
        let full = match slot {
            Ok(slot) => {
                tokio::spawn(connection(
                    stream,
                    remote,
                    service.clone(),
                    limits.clone(),
                    ConnectionSlot(Arc::new(slot)),
                    in_flight.clone(),
                    stopped.clone(),
                ));
                continue;
            }
            Err(full) => full,
        };
        if let Ok(slot) = turning_away.clone().try_acquire_owned() {
            metrics::counter!("usher_shed_total", "what" => full.label()).increment(1);
            tokio::spawn(turn_away(stream, remote, service.clone(), full, slot));
            continue;
        }
        // Too many being turned away already: closed without an answer.
        metrics::counter!("usher_shed_total", "what" => "connection_closed").increment(1);
        drop(stream);
    }
    // Every slot back means every connection (and WebSocket) has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_DEADLINE, open.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = limits.max_connections - open.available_permits(),
            "connections still open after the drain deadline; closing them"
        );
    }
    Ok(())
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    service: HttpService,
    limits: ConnectionLimits,
    slot: ConnectionSlot,
    in_flight: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
) {
    // The socket keeps the connection's slot until it is really closed (after a
    // lingering close, see `crate::lingering`).
    let stream = Lingering::new(stream, slot.clone());
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        // Requests in flight across all connections, at most `max_in_flight`; beyond,
        // 503 with `Retry-After` at once (queueing would only make every request late).
        // Health and metrics always answer, so an overloaded instance can be seen.
        // Checked here rather than as router middleware: a middleware layer cost ~8 %
        // of the requests a core serves (measured with `usher bench hello`).
        let place = if matches!(request.uri().path(), "/healthz" | "/metrics") {
            Ok(None)
        } else {
            in_flight.clone().try_acquire_owned().map(Some)
        };
        request.extensions_mut().insert(ConnectInfo(remote));
        request.extensions_mut().insert(slot.clone());
        let service = service.clone();
        async move {
            let Ok(_place) = place else {
                metrics::counter!("usher_shed_total", "what" => "request").increment(1);
                return Ok(busy("requests"));
            };
            service.oneshot(request.map(Body::new)).await
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(MAX_HEADERS);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => log_end(result),
        _ = until_true(&mut stopped) => {
            // Finish the request in flight, then close.
            connection.as_mut().graceful_shutdown();
            log_end(connection.await);
        }
    }
}

/// Reads the request (briefly) and answers 503 with `Retry-After`, then closes; health
/// and readiness are answered as usual, so that a full instance is still seen alive.
async fn turn_away(
    stream: TcpStream,
    remote: SocketAddr,
    service: HttpService,
    full: Full,
    _slot: OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let service = service.clone();
        async move {
            let mut response = if matches!(request.uri().path(), "/healthz" | "/readyz") {
                request.extensions_mut().insert(ConnectInfo(remote));
                match service.oneshot(request.map(Body::new)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            } else {
                ApiError::Busy {
                    retry_after_seconds: 1,
                    what: full.what(),
                }
                .into_response()
            };
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(SHED_HEADER_TIMEOUT)
        .keep_alive(false);
    let answered = builder.serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(SHED_HEADER_TIMEOUT * 2, answered).await;
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        if error.is_timeout() {
            metrics::counter!("usher_connections_timed_out_total").increment(1);
        }
        tracing::debug!(%error, "connection ended");
    }
}

/// Accept failed: out of file descriptors (wait for some to close) or the one
/// connection was already gone (carry on).
async fn pause_after(error: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::warn!(%error, "accepting a connection failed; pausing");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn until_true(flag: &mut watch::Receiver<bool>) {
    while !*flag.borrow_and_update() {
        if flag.changed().await.is_err() {
            return;
        }
    }
}

/// 503 `/problems/busy` with `Retry-After: 1` and a request id of its own (it never
/// reaches the layers that give one), for load the server sheds.
fn busy(what: &'static str) -> Response {
    let mut response = ApiError::Busy {
        retry_after_seconds: 1,
        what,
    }
    .into_response();
    if let Ok(id) = header::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}

/// Middleware: reads a request's whole body (up to `limit` bytes) before any handler
/// runs, so every response leaves the connection ready for the next request. A handler
/// that answers without reading the body (a 401, a 404 for an unknown job) would
/// otherwise leave unread bytes that make hyper drop a keep-alive connection after the
/// response, without having said `Connection: close`, and the client's next request on
/// it fails. A body over `limit`, or one that breaks off, is answered (413, 400) with
/// `Connection: close`, since its rest is still unread.
pub async fn whole_body(
    axum::extract::State(limit): axum::extract::State<usize>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    if !has_body {
        return next.run(request).await;
    }
    // A body announced as too large is refused before a byte of it is read.
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
    let refused = if announced.is_some_and(|length| length > limit as u64) {
        ApiError::PayloadTooLarge
    } else {
        let (parts, body) = request.into_parts();
        match axum::body::to_bytes(body, limit).await {
            Ok(bytes) => {
                return next
                    .run(Request::from_parts(parts, Body::from(bytes)))
                    .await;
            }
            Err(error)
                if std::error::Error::source(&error)
                    .is_some_and(|source| source.is::<http_body_util::LengthLimitError>()) =>
            {
                ApiError::PayloadTooLarge
            }
            Err(_) => ApiError::MalformedBody("the request body broke off".into()),
        }
    };
    let mut response = refused.into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}
