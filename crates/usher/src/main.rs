//! The `usher` binary: parses flags and environment, sets up logging, opens the store
//! and hands over to the library. Everything else lives in the library crates.

mod seed;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;
use tokio::net::TcpListener;

use usher_core::{Email, HoldTtl, SystemClock};
use usher_server::connections::ConnectionLimits;
use usher_server::rate_limit::TrustedProxies;
use usher_server::{
    Application, MailConfig, MasterKeySource, PaymentsConfig, ServerConfig, master_key,
};
use usher_store::Store;
use usher_store_postgres::PostgresStore;
use usher_store_sqlite::SqliteStore;

#[derive(Parser)]
#[command(name = "usher", version, about = "Event ticketing and booking service")]
// `usher` with no subcommand serves, reading the same flags as `usher serve`.
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations and serve the API (the default).
    Serve(Box<ServeArgs>),
    /// Apply migrations and exit.
    Migrate(DatabaseArgs),
    /// Load demo data (idempotent) and print the demo accounts' credentials.
    Seed(DatabaseArgs),
    /// Drive load at a server on this machine and summarise throughput, latency,
    /// invariants and the server's memory (see BENCHMARKS.md).
    Bench(Box<usher_bench::BenchArgs>),
    /// `usher bench hello --bare` starts this: a bare axum handler to compare with.
    #[command(name = usher_bench::BARE_SERVER_COMMAND, hide = true)]
    BenchBareServer,
}

#[derive(Args, Clone)]
struct DatabaseArgs {
    /// `sqlite://PATH` (created when missing) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://usher.db")]
    database_url: String,
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Listen address; port 0 picks a free port.
    #[arg(long, env = "USHER_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    #[command(flatten)]
    database: DatabaseArgs,
    /// `postgres://…` of a streaming replica of `DATABASE_URL`: public reads (event
    /// lists, events, seat maps) go there while it keeps up; everything else to the
    /// primary.
    #[arg(long, env = "DATABASE_READ_URL", hide_env_values = true)]
    database_read_url: Option<String>,
    /// How far behind the primary the replica may be, in milliseconds, and still take
    /// public reads; further behind, or down, it is skipped until it catches up.
    #[arg(long, env = "USHER_READ_MAX_LAG_MS", default_value_t = 1000)]
    read_max_lag_ms: u64,
    /// Signing key for access tokens (at least 32 bytes). Generated on first start and
    /// kept in the database when unset.
    #[arg(long, env = "USHER_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// `on`: holds are batched into group commits; `off`: one transaction per hold (to
    /// measure the difference).
    #[arg(long, env = "USHER_GROUP_COMMIT", default_value = "on")]
    group_commit: Switch,
    /// Seals the keys Usher keeps in its database: 64 hex characters (32 random bytes),
    /// the same for every instance. Unset: a key file (see `--master-key-file`).
    #[arg(long, env = "USHER_MASTER_KEY", hide_env_values = true)]
    master_key: Option<String>,
    /// The master key's file when `USHER_MASTER_KEY` is unset; created with mode 0600 if
    /// missing. Default: beside the SQLite database (`usher.db.key`), or
    /// `usher-master.key` in the working directory on PostgreSQL.
    #[arg(long, env = "USHER_MASTER_KEY_FILE")]
    master_key_file: Option<std::path::PathBuf>,
    /// This account is admin; otherwise the first account on an empty database is.
    #[arg(long, env = "USHER_ADMIN_EMAIL")]
    admin_email: Option<String>,
    /// Comma-separated origins allowed to call the API from browsers (CORS).
    #[arg(long, env = "USHER_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
    /// Password hashes computed at once (default: one per core).
    #[arg(long, env = "USHER_PASSWORD_WORKERS")]
    password_workers: Option<usize>,
    /// Password hashes that may wait for a worker (default: 8 per worker); beyond,
    /// sign-ins answer 503 with Retry-After.
    #[arg(long, env = "USHER_PASSWORD_QUEUE")]
    password_queue: Option<usize>,
    /// A performance's seat map is rebuilt at most this often, in milliseconds (readers in
    /// between share it; 0 rebuilds for every request).
    #[arg(long, env = "USHER_SEAT_MAP_MAX_AGE_MS", default_value_t = 1000)]
    seat_map_max_age_ms: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "USHER_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Requests still running after this many seconds answer 503.
    #[arg(long, env = "USHER_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    request_timeout_seconds: u64,
    /// A client must send a whole request head within this many seconds of the server
    /// waiting for it (idle keep-alive connections close after it too).
    #[arg(long, env = "USHER_HEADER_TIMEOUT_SECONDS", default_value_t = 20)]
    header_timeout_seconds: u64,
    /// Largest request line plus headers, in bytes (beyond: 431).
    #[arg(long, env = "USHER_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    max_header_bytes: usize,
    /// Connections served at once, WebSockets included; beyond, 503 with Retry-After
    /// (default: from the open-file limit, at most 10000).
    #[arg(long, env = "USHER_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// The share of those connections (percent) one client address may hold at once, so
    /// that one client cannot lock everyone out; trusted proxies are exempt.
    #[arg(long, env = "USHER_MAX_CONNECTIONS_PER_ADDRESS_PERCENT", default_value_t = usher_server::connections::DEFAULT_PER_ADDRESS_PERCENT)]
    max_connections_per_address_percent: usize,
    /// Requests in flight at once; beyond, 503 with Retry-After at once.
    #[arg(long, env = "USHER_MAX_IN_FLIGHT", default_value_t = usher_server::connections::DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// Longest wait, in seconds, for Stripe's API or the SMTP server per call; a
    /// checkout then answers 503 and a job retries later.
    #[arg(long, env = "USHER_OUTBOUND_TIMEOUT_SECONDS", default_value_t = 10)]
    outbound_timeout_seconds: u64,
    /// Default hold time, in seconds, of performances created without one (30–3600).
    #[arg(long, env = "USHER_HOLD_TTL_SECONDS", default_value_t = 600)]
    hold_ttl_seconds: i64,
    /// Buyers may refund a confirmed booking until this many hours before the
    /// performance starts; organizers and admins always.
    #[arg(long, env = "USHER_REFUND_CUTOFF_HOURS", default_value_t = 24)]
    refund_cutoff_hours: u32,
    /// How long a waiting-list offer (units held for the next in line) lasts, in seconds.
    #[arg(long, env = "USHER_OFFER_TTL_SECONDS", default_value_t = 1800)]
    offer_ttl_seconds: u32,
    /// How long an admission from a waiting room lets its buyer hold, in seconds.
    #[arg(long, env = "USHER_ADMISSION_TTL_SECONDS", default_value_t = 600)]
    admission_ttl_seconds: u32,
    /// How often this instance sweeps expired holds, in seconds (expiries reach live
    /// seat maps within this plus a second of their deadline).
    #[arg(long, env = "USHER_SWEEP_INTERVAL_SECONDS", default_value_t = 1)]
    sweep_interval_seconds: u64,
    /// `redis://…`: rate limits and live updates shared across instances through Redis
    /// (unset: in-process). If Redis fails, both fall back until it is back.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// `on` or `off` (benchmarks): rate limits in tiers per IP, sign-in, user and hold.
    #[arg(long, env = "USHER_RATE_LIMITS", default_value = "on")]
    rate_limits: Switch,
    /// Comma-separated proxies (IPs or CIDR networks) whose `X-Forwarded-For` names the
    /// client, for rate limits per IP behind a load balancer.
    #[arg(long, env = "USHER_TRUSTED_PROXIES", default_value = "")]
    trusted_proxies: String,
    /// How long, in seconds, a claimed job (email, refund, cancellation) stays with its
    /// worker before another instance may take it over because the first died.
    #[arg(long, env = "USHER_JOB_LEASE_SECONDS", default_value_t = 120)]
    job_lease_seconds: u32,
    /// Where buyers reach this service, for links in checkout and email
    /// (default `http://<listen address>`).
    #[arg(long, env = "USHER_PUBLIC_URL")]
    public_url: Option<String>,
    /// `mock` (pay with `POST /v1/payments/mock/{id}/complete`) or `stripe`.
    #[arg(long, env = "USHER_PAYMENT_PROVIDER", default_value = "mock")]
    payment_provider: PaymentProvider,
    /// Stripe secret API key (`sk_test_…` / `sk_live_…`).
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    stripe_secret_key: Option<String>,
    /// Signing secret of the Stripe webhook endpoint (`whsec_…`).
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    stripe_webhook_secret: Option<String>,
    /// Stripe's API base URL; tests point it at a local fake.
    #[arg(long, env = "STRIPE_API_BASE")]
    stripe_api_base: Option<String>,
    /// `smtp://host:port` (or `smtps://user:pass@host`); unset writes .eml files.
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// Folder for .eml files when `SMTP_URL` is unset.
    #[arg(long, env = "USHER_MAIL_DIR", default_value = "mail")]
    mail_dir: std::path::PathBuf,
    /// Sender of Usher's emails.
    #[arg(
        long,
        env = "USHER_MAIL_FROM",
        default_value = "Usher <tickets@usher.example>"
    )]
    mail_from: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
enum PaymentProvider {
    Mock,
    Stripe,
}

#[derive(Args)]
struct LogArgs {
    /// `json` (default when stderr is not a terminal) or `text`.
    #[arg(long, env = "USHER_LOG_FORMAT", global = true)]
    log_format: Option<LogFormat>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

/// Every watcher of a live seat map is an open socket: the soft limit on open files
/// (often 1,024) is raised to the hard one, as a server (and a load generator) needs.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::warn!("could not raise the open files limit");
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log.log_format);
    raise_open_files_limit();
    match cli.command.unwrap_or(Command::Serve(Box::new(cli.serve))) {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(args) => {
            let store = open_store(&args.database_url).await?;
            store.migrate().await.context("applying migrations")?;
            let readiness = store.readiness().await?;
            println!(
                "migrations applied: {} of {} ({})",
                readiness.applied_migrations,
                readiness.known_migrations,
                store.engine()
            );
            Ok(())
        }
        Command::Bench(args) => usher_bench::run(*args, open_for_bench).await,
        Command::BenchBareServer => usher_bench::serve_bare().await,
        Command::Seed(args) => {
            let store = open_store(&args.database_url).await?;
            store.migrate().await.context("applying migrations")?;
            seed::run(store.as_ref()).await
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (addr, database_url) = (args.addr, args.database.database_url.clone());
    let read_url = args.database_read_url.clone();
    let config = server_config(args)?;
    // Judged (and its pool made, connecting on first use) before the primary is
    // opened: a wrong DATABASE_READ_URL changes nothing.
    let replica = match read_url.filter(|url| !url.is_empty()) {
        Some(url) => Some(open_replica(&database_url, &url)?),
        None => None,
    };
    let store = open_store(&database_url).await?;
    store.migrate().await.context("applying migrations")?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let app = Application::build_with_replica(
        config,
        store.clone(),
        replica,
        Arc::new(SystemClock),
        listener,
    )
    .await?;
    let addr = app.local_addr()?;
    tracing::info!(%addr, database = store.engine(), "usher is serving");
    // The one line on stdout that scripts and tests wait for.
    println!("listening on http://{addr}");
    app.run_until(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The server's configuration from the command line and the environment.
fn server_config(args: ServeArgs) -> anyhow::Result<ServerConfig> {
    let admin_email = args
        .admin_email
        .as_deref()
        .map(Email::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("USHER_ADMIN_EMAIL: {e}"))?;
    let default_hold_ttl = HoldTtl::parse(args.hold_ttl_seconds)
        .map_err(|e| anyhow::anyhow!("USHER_HOLD_TTL_SECONDS: {e}"))?;
    if args.sweep_interval_seconds == 0 {
        bail!("USHER_SWEEP_INTERVAL_SECONDS must be at least 1");
    }
    let trusted_proxies = TrustedProxies::parse(&args.trusted_proxies)
        .map_err(|e| anyhow::anyhow!("USHER_TRUSTED_PROXIES: {e}"))?;
    let payments = payments_config(&args)?;
    let password_workers = args
        .password_workers
        .unwrap_or_else(usher_server::config::default_password_workers);
    let master_key = match (args.master_key, args.master_key_file) {
        (Some(key), _) => MasterKeySource::Key(SecretString::from(key)),
        (None, Some(path)) => MasterKeySource::File(path),
        (None, None) => {
            MasterKeySource::File(master_key::default_key_file(&args.database.database_url))
        }
    };
    let max_connections = args
        .max_connections
        .unwrap_or_else(usher_server::connections::default_max_connections)
        .max(1);
    Ok(ServerConfig {
        jwt_secret: args.jwt_secret.map(SecretString::from),
        master_key,
        admin_email,
        cors_origins: args
            .cors_origins
            .into_iter()
            .filter(|o| !o.is_empty())
            .collect(),
        password_workers: password_workers.max(1),
        password_queue: args.password_queue.unwrap_or(8 * password_workers),
        seat_map_max_age: Duration::from_millis(args.seat_map_max_age_ms),
        read_max_lag: Duration::from_millis(args.read_max_lag_ms),
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_secs(args.request_timeout_seconds),
        connections: ConnectionLimits {
            max_connections,
            header_read_timeout: Duration::from_secs(args.header_timeout_seconds.max(1)),
            max_header_bytes: args.max_header_bytes.max(1024),
            max_in_flight: args.max_in_flight.max(1),
            max_per_address: usher_server::connections::per_address(
                max_connections,
                args.max_connections_per_address_percent,
            ),
        },
        outbound_timeout: Duration::from_secs(args.outbound_timeout_seconds.max(1)),
        default_hold_ttl,
        refund_cutoff: chrono::Duration::hours(i64::from(args.refund_cutoff_hours)),
        offer_ttl: chrono::Duration::seconds(i64::from(args.offer_ttl_seconds.max(30))),
        admission_ttl: chrono::Duration::seconds(i64::from(args.admission_ttl_seconds.max(30))),
        waiting_interval: Some(Duration::from_millis(250)),
        sweep_interval: Some(Duration::from_secs(args.sweep_interval_seconds)),
        job_interval: Some(Duration::from_secs(1)),
        job_lease: chrono::Duration::seconds(i64::from(args.job_lease_seconds.max(1))),
        public_url: args.public_url,
        payments,
        mail: MailConfig {
            smtp_url: args.smtp_url.filter(|u| !u.is_empty()),
            dir: args.mail_dir,
            from: args.mail_from,
        },
        live_backlog: usher_server::config::DEFAULT_LIVE_BACKLOG,
        redis_url: args.redis_url.filter(|u| !u.is_empty()),
        rate_limits: matches!(args.rate_limits, Switch::On),
        trusted_proxies,
        group_commit: matches!(args.group_commit, Switch::On),
    })
}

/// The payment provider the flags name, with its keys.
fn payments_config(args: &ServeArgs) -> anyhow::Result<PaymentsConfig> {
    Ok(match args.payment_provider {
        PaymentProvider::Mock => PaymentsConfig::Mock,
        PaymentProvider::Stripe => {
            let (Some(secret_key), Some(webhook_secret)) = (
                args.stripe_secret_key.clone(),
                args.stripe_webhook_secret.clone(),
            ) else {
                bail!(
                    "USHER_PAYMENT_PROVIDER=stripe needs STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET"
                );
            };
            PaymentsConfig::Stripe {
                secret_key: SecretString::from(secret_key),
                webhook_secret: SecretString::from(webhook_secret),
                api_base: args.stripe_api_base.clone(),
            }
        }
    })
}

pub(crate) async fn open_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    tracing::info!(database = %redact(url), "opening database");
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(
            SqliteStore::connect(url)
                .await
                .with_context(|| format!("opening {}", redact(url)))?,
        )
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(
            PostgresStore::connect_with(url, 16)
                .await
                .with_context(|| format!("connecting to {}", redact(url)))?,
        )
    } else {
        bail!("DATABASE_URL must start with sqlite:// or postgres://");
    };
    Ok(store)
}

/// The read replica named by `DATABASE_READ_URL`: PostgreSQL beside a PostgreSQL
/// primary. Opened lazily, so a replica that is down at start is only skipped.
fn open_replica(primary: &str, url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let postgres = |u: &str| u.starts_with("postgres://") || u.starts_with("postgresql://");
    if !postgres(url) || !postgres(primary) {
        bail!("DATABASE_READ_URL must be a postgres:// replica of a postgres:// DATABASE_URL");
    }
    tracing::info!(database = %redact(url), "public reads may go to a read replica");
    let replica = PostgresStore::connect_lazy(url, 8)
        .with_context(|| format!("DATABASE_READ_URL {}", redact(url)))?;
    Ok(Arc::new(replica))
}

/// How `usher bench` opens its throwaway server's database (to write buyers into it).
fn open_for_bench(url: &str) -> usher_bench::Opening<'_> {
    Box::pin(open_store(url))
}

/// The URL without its password, for logs and error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

fn init_logging(format: Option<LogFormat>) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    // Logs go to stderr: stdout carries only the `listening on` line and command output.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_password_is_redacted() {
        assert_eq!(
            redact("postgres://usher:s3cret@db:5432/usher"),
            "postgres://usher:***@db:5432/usher"
        );
        assert_eq!(redact("sqlite://usher.db"), "sqlite://usher.db");
        assert_eq!(
            redact("postgres://usher@db/usher"),
            "postgres://usher@db/usher"
        );
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
