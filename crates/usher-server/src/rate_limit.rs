//! Rate limits: GCRA in tiers, shared through Redis when it is configured and up, kept
//! in-process (governor) otherwise — and, when Redis fails, in-process again until it
//! is back: never open, never refusing everyone.
//!
//! | tier     | key                    | applies to              | rate, burst      |
//! |----------|------------------------|-------------------------|------------------|
//! | `ip`     | client IP              | every request           | 50/s, 200        |
//! | `auth`   | client IP + account    | sign-in, sign-up        | 10/min, 10       |
//! | `auth`   | session (token family) | refresh, logout         | 10/min, 10       |
//! | `writes` | user                   | unsafe methods          | 10/s, 40         |
//! | `holds`  | user                   | `POST /v1/bookings`     | 2/s, 10          |
//!
//! The defaults refuse scripts, not people: a buyer retrying a hold every second in a
//! rush stays well inside `holds`, and a page's requests inside `ip`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock as _;
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use usher_core::Email;

use crate::extract::Caller;
use crate::problem::ApiError;
use crate::redis::{COMMAND_DEADLINE, Redis};
use crate::state::AppState;

/// One tier's limit: a token every `emission`, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub name: &'static str,
    pub emission: Duration,
    pub burst: u32,
}

impl Policy {
    /// The window the IETF headers speak of: how long an empty bucket takes to refill.
    fn window_seconds(&self) -> u64 {
        (self.emission * self.burst).as_secs().max(1)
    }
}

/// The tiers, in [`Tier::ALL`] order (their discriminants index the local limiters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Ip = 0,
    Auth = 1,
    Writes = 2,
    Holds = 3,
}

impl Tier {
    const ALL: [Tier; 4] = [Tier::Ip, Tier::Auth, Tier::Writes, Tier::Holds];

    pub fn policy(self) -> Policy {
        match self {
            Tier::Ip => Policy {
                name: "ip",
                emission: Duration::from_millis(20),
                burst: 200,
            },
            Tier::Auth => Policy {
                name: "auth",
                emission: Duration::from_secs(6),
                burst: 10,
            },
            Tier::Writes => Policy {
                name: "writes",
                emission: Duration::from_millis(100),
                burst: 40,
            },
            Tier::Holds => Policy {
                name: "holds",
                emission: Duration::from_millis(500),
                burst: 10,
            },
        }
    }
}

/// What a check came to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Allowed {
        policy: Policy,
        remaining: u32,
        /// Seconds until the bucket is full again.
        reset_seconds: u64,
    },
    Refused {
        policy: Policy,
        retry_after_seconds: u64,
    },
}

type Limiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, ServiceClock, StateInformationMiddleware>;

/// The service's clock as the in-process buckets read it: time since the Unix epoch,
/// never going back (a wall clock stepped backwards holds still until it catches up).
/// A test that moves the service's clock moves the buckets with it; production reads
/// the system clock, as Redis's buckets read Redis's.
#[derive(Clone)]
struct ServiceClock {
    clock: Arc<dyn usher_core::Clock>,
    latest: Arc<std::sync::atomic::AtomicU64>,
}

impl governor::clock::Clock for ServiceClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        use std::sync::atomic::Ordering;
        let now = self.clock.now().timestamp_micros().max(0) as u64;
        let latest = self.latest.fetch_max(now, Ordering::Relaxed).max(now);
        Duration::from_micros(latest)
    }
}

/// GCRA on Redis, atomic: the theoretical arrival time per key, with Redis's own clock
/// so that every instance agrees. Returns {allowed, microseconds (until reset when
/// allowed, until allowed when refused), remaining}.
const GCRA: &str = r"
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission
local allow_at = new_tat - emission * burst
if now < allow_at then
  return {0, allow_at - now, 0}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, new_tat - now, math.floor((now - allow_at) / emission)}
";

pub struct RateLimits {
    /// In-process buckets, one limiter per tier in [`Tier::ALL`] order.
    local: [Limiter; 4],
    clock: ServiceClock,
    redis: Option<Redis>,
    script: redis::Script,
}

impl RateLimits {
    pub fn new(clock: Arc<dyn usher_core::Clock>, redis: Option<Redis>) -> Self {
        let clock = ServiceClock {
            clock,
            latest: Arc::default(),
        };
        let local = Tier::ALL.map(|tier| {
            let policy = tier.policy();
            let burst = NonZeroU32::new(policy.burst).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::with_period(policy.emission)
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                .allow_burst(burst);
            let limiter: Limiter =
                RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone());
            limiter
        });
        Self {
            local,
            clock,
            redis,
            script: redis::Script::new(GCRA),
        }
    }

    /// Takes one token from `tier`'s bucket for `key`.
    pub async fn check(&self, tier: Tier, key: &str) -> Verdict {
        if let Some(redis) = &self.redis
            && let Some(verdict) = self.check_redis(redis, tier, key).await
        {
            return verdict;
        }
        self.check_local(tier, key)
    }

    async fn check_redis(&self, redis: &Redis, tier: Tier, key: &str) -> Option<Verdict> {
        let mut connection = redis.connection().await?;
        let policy = tier.policy();
        let mut invocation = self.script.key(format!("usher:rl:{}:{key}", policy.name));
        invocation
            .arg(policy.emission.as_micros() as u64)
            .arg(policy.burst);
        let answer = tokio::time::timeout(
            COMMAND_DEADLINE,
            invocation.invoke_async::<(i64, i64, i64)>(&mut connection),
        )
        .await;
        let (allowed, micros, remaining) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                redis.mark_down(&error.to_string());
                metrics::counter!("usher_rate_limit_fallbacks_total").increment(1);
                return None;
            }
            Err(_) => {
                redis.mark_down("a rate limit check timed out");
                metrics::counter!("usher_rate_limit_fallbacks_total").increment(1);
                return None;
            }
        };
        let seconds = (micros.max(0) as u64).div_ceil(1_000_000).max(1);
        Some(if allowed == 1 {
            Verdict::Allowed {
                policy,
                remaining: remaining.max(0) as u32,
                reset_seconds: seconds,
            }
        } else {
            Verdict::Refused {
                policy,
                retry_after_seconds: seconds,
            }
        })
    }

    fn check_local(&self, tier: Tier, key: &str) -> Verdict {
        let policy = tier.policy();
        match self.local[tier as usize].check_key(&key.to_owned()) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let used = policy.burst.saturating_sub(remaining);
                Verdict::Allowed {
                    policy,
                    remaining,
                    reset_seconds: (policy.emission * used).as_secs().max(1),
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Verdict::Refused {
                    policy,
                    retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
                }
            }
        }
    }

    /// Forgets in-process buckets that are full again (run now and then).
    pub fn tidy(&self) {
        for limiter in &self.local {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// Which proxies' `X-Forwarded-For` is believed (`USHER_TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8, 127.0.0.1, ::1` style lists.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (ip, bits) = match item.split_once('/') {
                Some((ip, bits)) => (ip, Some(bits)),
                None => (item, None),
            };
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or network"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(bits) => bits
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("{item:?} has a bad prefix length"))?,
                None => max,
            };
            nets.push((ip, bits));
        }
        Ok(Self(nets))
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|(net, bits)| match (net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*bits)).unwrap_or(0);
                u32::from(*net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*bits)).unwrap_or(0);
                u128::from(*net) & mask == u128::from(ip) & mask
            }
            _ => false,
        })
    }

    /// The client's address: the peer, or — when the peer is a trusted proxy — the
    /// nearest address in `X-Forwarded-For` that is not one.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !self.contains(*ip))
            .unwrap_or(peer)
    }
}

/// The middleware (installed only when limits are on): the tiers that apply to this
/// request, most general first.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = state.rate_limits();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let ip = state
        .config()
        .trusted_proxies
        .client_ip(peer, request.headers());
    let path = request.uri().path().to_owned();
    let unsafe_method = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    // Authorized once here (account and session as they are now); the handler's
    // `Caller` extractor reuses it. A refused token is left for the handler to answer.
    let mut request = request;
    let mut user = request.extensions().get::<Verified>().map(|v| v.0);
    if unsafe_method && user.is_none() {
        let token = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(token) = token
            && let Ok(caller) = state.authorize(token.trim()).await
        {
            request.extensions_mut().insert(Verified(caller));
            user = Some(caller);
        }
    }
    let user = user.map(|caller| caller.id);

    let mut checks: Vec<(Tier, String)> = vec![(Tier::Ip, ip.to_string())];
    if unsafe_method && path.starts_with("/v1/auth/") {
        let Ok((key, rebuilt)) = auth_key_of_body(&state, ip, &path, request).await else {
            return ApiError::PayloadTooLarge.into_response();
        };
        request = rebuilt;
        checks.push((Tier::Auth, key));
    }
    if let (true, Some(user)) = (unsafe_method, user) {
        checks.push((Tier::Writes, user.to_string()));
        if *request.method() == Method::POST && path == "/v1/bookings" {
            checks.push((Tier::Holds, user.to_string()));
        }
    }

    let (tightest, policies) = match enforce(limits, &checks).await {
        Ok(passed) => passed,
        Err((policy, retry_after_seconds)) => {
            let mut response = ApiError::RateLimited {
                tier: policy.name,
                retry_after_seconds,
            }
            .into_response();
            let headers = response.headers_mut();
            set_policy(headers, &[policy]);
            set_header(
                headers,
                "ratelimit",
                format!("\"{}\";r=0;t={retry_after_seconds}", policy.name),
            );
            return response;
        }
    };
    let mut response = next.run(request).await;
    if let Some((policy, remaining, reset)) = tightest {
        let headers = response.headers_mut();
        set_policy(headers, &policies);
        set_header(
            headers,
            "ratelimit",
            format!("\"{}\";r={remaining};t={reset}", policy.name),
        );
    }
    response
}

/// The same tiers for the pages (installed only when limits are on): every page asks
/// the `ip` tier; a signed-in visitor's form posts the `writes` tier, and a hold form
/// the `holds` tier too, keyed as the API keys them, so that a buyer's page and script
/// share one bucket. Signing in, up and out ask the `auth` tier in their handlers
/// ([`crate::web::api::Visit::limit_auth`]), which read the account from the form.
pub async fn pages(
    State(web): State<crate::web::WebState>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let visit = crate::web::api::Visit::of(&parts, &web.app);
    let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let mut checks: Vec<(Tier, String)> = vec![(Tier::Ip, visit.ip.to_string())];
    if let (true, Some(user)) = (unsafe_method, visit.caller) {
        checks.push((Tier::Writes, user.id.to_string()));
        let path = parts.uri.path();
        if path.starts_with("/performances/") && path.ends_with("/hold") {
            checks.push((Tier::Holds, user.id.to_string()));
        }
    }
    if let Err(refused) = check(web.app.rate_limits(), &checks).await {
        let refusal = crate::web::api::Refusal::from(refused);
        return crate::web::PageError::refused(&visit, refusal).into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Takes a token from each tier in turn: the tier that refuses, as the API answers it.
pub async fn check(limits: &RateLimits, checks: &[(Tier, String)]) -> Result<(), ApiError> {
    enforce(limits, checks)
        .await
        .map(|_| ())
        .map_err(|(policy, retry_after_seconds)| ApiError::RateLimited {
            tier: policy.name,
            retry_after_seconds,
        })
}

/// The tightest limit this request passes (policy, what remains, seconds to reset) and
/// every policy it passed; or the first it does not, with the seconds until it would.
async fn enforce(
    limits: &RateLimits,
    checks: &[(Tier, String)],
) -> Result<(Option<(Policy, u32, u64)>, Vec<Policy>), (Policy, u64)> {
    let mut tightest: Option<(Policy, u32, u64)> = None;
    let mut policies = Vec::new();
    for (tier, key) in checks {
        match limits.check(*tier, key).await {
            Verdict::Allowed {
                policy,
                remaining,
                reset_seconds,
            } => {
                policies.push(policy);
                let ratio = |p: &Policy, r: u32| f64::from(r) / f64::from(p.burst);
                if tightest.is_none_or(|(p, r, _)| ratio(&policy, remaining) < ratio(&p, r)) {
                    tightest = Some((policy, remaining, reset_seconds));
                }
            }
            Verdict::Refused {
                policy,
                retry_after_seconds,
            } => {
                metrics::counter!("usher_rate_limited_total", "tier" => policy.name).increment(1);
                return Err((policy, retry_after_seconds));
            }
        }
    }
    Ok((tightest, policies))
}

fn set_policy(headers: &mut HeaderMap, policies: &[Policy]) {
    let value = policies
        .iter()
        .map(|p| format!("\"{}\";q={};w={}", p.name, p.burst, p.window_seconds()))
        .collect::<Vec<_>>()
        .join(", ");
    set_header(headers, "ratelimit-policy", value);
}

fn set_header(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

/// What an `auth` tier check is keyed on.
pub enum AuthKey<'a> {
    /// Sign-in and sign-up: the account the request names (as typed).
    Account(&'a str),
    /// Refresh and logout: the session the refresh token belongs to.
    Session(&'a str),
}

/// The `auth` tier's key:
/// - sign-in and sign-up: the client IP and the account, normalised exactly as the
///   handler looks the account up ([`Email::normalise`]), so padding or capitals do not
///   make a fresh bucket;
/// - refresh and logout: the session (token family) the refresh token belongs to, so
///   people behind one address (a NAT, a proxy) do not share one limit; an unknown token
///   falls back to the client IP.
pub async fn auth_key(state: &AppState, ip: IpAddr, of: AuthKey<'_>) -> String {
    match of {
        AuthKey::Account(email) => format!("{ip}|{}", Email::normalise(email)),
        AuthKey::Session(token) => {
            let session = state
                .store()
                .session_of_refresh_token(&crate::auth::hash_refresh_token(token))
                .await
                .ok()
                .flatten();
            match session {
                Some(session) => format!("session|{session}"),
                None => format!("{ip}|no-session"),
            }
        }
    }
}

/// The `auth` tier's key for an API request, from its body (handed on untouched).
/// `Err` when the body is over the size limit.
async fn auth_key_of_body(
    state: &AppState,
    ip: IpAddr,
    path: &str,
    request: Request,
) -> Result<(String, Request), ()> {
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, state.config().max_body_bytes)
        .await
        .map_err(|_| ())?;
    let field = |name: &str| {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get(name)?.as_str().map(str::to_owned))
    };
    let key = if matches!(path, "/v1/auth/refresh" | "/v1/auth/logout") {
        match field("refresh_token") {
            Some(token) => auth_key(state, ip, AuthKey::Session(&token)).await,
            None => format!("{ip}|no-session"),
        }
    } else {
        let account = field("email").unwrap_or_default();
        auth_key(state, ip, AuthKey::Account(&account)).await
    };
    Ok((key, Request::from_parts(parts, Body::from(bytes))))
}

/// A caller whose access token this middleware already verified.
#[derive(Debug, Clone, Copy)]
pub struct Verified(pub Caller);

/// Keeps the in-process buckets small: every minute, forget full ones.
pub async fn tidy_every_minute(
    limits: Arc<RateLimits>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = ticks.tick() => limits.tidy(),
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, ::1").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9, 10.1.2.3"),
        );
        let from_proxy = proxies.client_ip("10.9.9.9".parse().unwrap(), &headers);
        assert_eq!(from_proxy, "203.0.113.9".parse::<IpAddr>().unwrap());
        let direct = proxies.client_ip("198.51.100.7".parse().unwrap(), &headers);
        assert_eq!(direct, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("nonsense").is_err());
    }

    #[test]
    fn the_in_process_buckets_follow_the_service_clock_and_never_run_backwards() {
        let start = chrono::Utc::now();
        let clock = Arc::new(usher_core::ManualClock::new(start));
        let limits = RateLimits::new(clock.clone(), None);
        let allowed = |limits: &RateLimits| {
            matches!(
                limits.check_local(Tier::Holds, "buyer"),
                Verdict::Allowed { .. }
            )
        };
        // However long these take in real time, a frozen clock refills nothing.
        for _ in 0..Tier::Holds.policy().burst {
            assert!(allowed(&limits));
        }
        std::thread::sleep(Duration::from_millis(600));
        assert!(matches!(
            limits.check_local(Tier::Holds, "buyer"),
            Verdict::Refused {
                retry_after_seconds: 1,
                ..
            }
        ));
        // Half a second on the service's clock refills one token.
        clock.advance(chrono::Duration::milliseconds(500));
        assert!(allowed(&limits));
        assert!(!allowed(&limits));
        // A clock set back does not hand out tokens: the buckets hold still until it
        // has caught up again.
        let stepped = Arc::new(usher_core::ManualClock::new(start));
        let limits = RateLimits::new(stepped.clone(), None);
        for _ in 0..Tier::Holds.policy().burst {
            assert!(allowed(&limits));
        }
        stepped.advance(chrono::Duration::hours(-1));
        assert!(!allowed(&limits));
        stepped.advance(chrono::Duration::hours(1) + chrono::Duration::milliseconds(500));
        assert!(allowed(&limits));
    }

    #[test]
    fn a_burst_is_refused_per_key_while_a_hold_a_second_stays_within_the_rate() {
        let limits = RateLimits::new(Arc::new(usher_core::SystemClock), None);
        let policy = Tier::Holds.policy();
        for _ in 0..policy.burst {
            assert!(matches!(
                limits.check_local(Tier::Holds, "script"),
                Verdict::Allowed { .. }
            ));
        }
        assert!(matches!(
            limits.check_local(Tier::Holds, "script"),
            Verdict::Refused { .. }
        ));
        assert!(matches!(
            limits.check_local(Tier::Holds, "person"),
            Verdict::Allowed { .. }
        ));
        // A hold a second refills faster than it drains.
        assert!(policy.emission < Duration::from_secs(1));
    }
}
