//! The server's configuration, as the binary hands it over (flags and environment are
//! the binary's business; tests build this directly).

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use usher_core::{Email, HoldTtl};

use crate::master_key::MasterKeySource;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Signing key for access tokens; when `None`, one is generated on first start and
    /// kept in the database (sealed under the master key) so that restarts and other
    /// instances share it.
    pub jwt_secret: Option<SecretString>,
    /// Seals the keys Usher keeps in its database ([`crate::master_key`]).
    pub master_key: MasterKeySource,
    /// This account is admin; when `None`, the first account created is.
    pub admin_email: Option<Email>,
    /// Origins allowed to call the API from a browser (CORS). Empty: same-origin only.
    pub cors_origins: Vec<String>,
    /// Password hashes computed at once (each takes ~20 ms of a core and 19 MiB).
    pub password_workers: usize,
    /// Password hashes that may wait for a worker; beyond, sign-ins answer 503 busy.
    pub password_queue: usize,
    /// A seat map is rebuilt at most this often per performance (zero: every request).
    pub seat_map_max_age: Duration,
    /// How far behind its primary a read replica may be and still take public reads
    /// (`USHER_READ_MAX_LAG_MS`).
    pub read_max_lag: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// A request still running after this answers 503.
    pub request_timeout: Duration,
    /// Connections and requests in flight at once, header timeout and size
    /// ([`crate::connections`]).
    pub connections: crate::connections::ConnectionLimits,
    /// Longest wait for an outside service (Stripe's API, the SMTP server) per call.
    pub outbound_timeout: Duration,
    /// Hold time of performances created without one.
    pub default_hold_ttl: HoldTtl,
    /// Buyers may refund a confirmed booking until this long before the performance
    /// starts; organizers and admins always.
    pub refund_cutoff: chrono::Duration,
    /// How long a waiting-list offer (a hold made for someone) lasts.
    pub offer_ttl: chrono::Duration,
    /// How long an admission from a waiting room lets its buyer hold.
    pub admission_ttl: chrono::Duration,
    /// How often this instance steps its waiting rooms and serves waiting lists (`None`:
    /// never; tests that drive them by hand).
    pub waiting_interval: Option<Duration>,
    /// How often this instance sweeps expired holds (`None`: never, for tests that
    /// sweep by hand).
    pub sweep_interval: Option<Duration>,
    /// How often this instance looks for due jobs (`None`: never; tests run them by hand).
    pub job_interval: Option<Duration>,
    /// How long a claimed job is its worker's before another may take it over (the
    /// worker died). Longer than any job runs.
    pub job_lease: chrono::Duration,
    /// Where buyers reach this service (links in checkout and emails). Defaults to
    /// `http://<listen address>`.
    pub public_url: Option<String>,
    pub payments: PaymentsConfig,
    pub mail: MailConfig,
    /// Live messages a watcher may fall behind by before it is disconnected.
    pub live_backlog: usize,
    /// `redis://…`: rate limits and the live feed's fan-out shared through Redis.
    pub redis_url: Option<String>,
    /// Rate limits on (`USHER_RATE_LIMITS`); off for benchmarks.
    pub rate_limits: bool,
    /// Proxies whose `X-Forwarded-For` names the client (`USHER_TRUSTED_PROXIES`).
    pub trusted_proxies: crate::rate_limit::TrustedProxies,
    /// Holds go through the write pipeline (group commit); off, each hold is a
    /// transaction of its own (`USHER_GROUP_COMMIT=off`, to measure the difference).
    pub group_commit: bool,
}

/// Which payment provider takes the money.
#[derive(Clone, Debug, Default)]
pub enum PaymentsConfig {
    /// Local, documented stand-in: `POST /v1/payments/mock/{id}/complete` pays.
    #[default]
    Mock,
    Stripe {
        secret_key: SecretString,
        webhook_secret: SecretString,
        /// Stripe's API unless set (tests point it at a local fake).
        api_base: Option<String>,
    },
}

#[derive(Clone, Debug)]
pub struct MailConfig {
    /// `smtp://host:port`; when unset, mail is written as .eml files to `dir`.
    pub smtp_url: Option<String>,
    pub dir: PathBuf,
    pub from: String,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            dir: PathBuf::from("mail"),
            from: "Usher <tickets@usher.example>".into(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            // The binary always names one; a default configuration (tests, throwaway
            // servers) gets a key of its own, kept with the configuration.
            master_key: MasterKeySource::generate().expect("the system's random source"),
            admin_email: None,
            cors_origins: Vec::new(),
            password_workers: default_password_workers(),
            password_queue: 8 * default_password_workers(),
            // Tests read seat maps right after changing them; a server says otherwise.
            seat_map_max_age: Duration::ZERO,
            read_max_lag: Duration::from_secs(1),
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            connections: crate::connections::ConnectionLimits::default(),
            outbound_timeout: Duration::from_secs(10),
            default_hold_ttl: HoldTtl::default(),
            refund_cutoff: chrono::Duration::hours(24),
            offer_ttl: chrono::Duration::minutes(30),
            admission_ttl: chrono::Duration::minutes(10),
            waiting_interval: Some(Duration::from_millis(250)),
            // Expiries reach live seat maps within two seconds of their deadline.
            sweep_interval: Some(Duration::from_secs(1)),
            job_interval: Some(Duration::from_secs(1)),
            job_lease: chrono::Duration::seconds(120),
            public_url: None,
            payments: PaymentsConfig::default(),
            mail: MailConfig::default(),
            live_backlog: DEFAULT_LIVE_BACKLOG,
            redis_url: None,
            rate_limits: true,
            trusted_proxies: crate::rate_limit::TrustedProxies::default(),
            group_commit: true,
        }
    }
}

/// Live messages a watcher may fall behind by: at one change per hold batch, several
/// seconds of a rush.
pub const DEFAULT_LIVE_BACKLOG: usize = 512;

/// One password hash at a time per core.
pub fn default_password_workers() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}
