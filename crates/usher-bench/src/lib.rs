//! `usher bench`: a flash-sale load generator for Usher's own API.
//!
//! It drives a server on this machine (loopback only) with many keep-alive connections,
//! records every request's latency in an HDR histogram, and ends with a summary (a
//! table, or one JSON object with `--json`). Without `--url` it starts a throwaway
//! `usher serve` of its own (an embedded SQLite file in a temporary folder, or
//! `--database-url`), sets up an organizer, an event, a performance and buyers through
//! the API, runs the scenario, checks the invariants of docs/ARCHITECTURE.md through the API (no unit in
//! two live bookings, counts that add up, no oversell) and reports the server's memory.
//! Every run is bounded in requests and in time (`--max-seconds`) and stops by itself.
//!
//! Scenarios:
//! - `hello`: `GET /healthz`, the ceiling of this box and this client;
//! - `rush --kind ga|seat|best`: every request a new one-unit hold on one large
//!   performance (a general-admission type, a named free seat, or best available);
//! - `flash`: `--users` buyers race for `--seats` seats, retrying until they win one or
//!   the performance is sold out;
//! - `login`: `--requests` logins of `--users` accounts; a login told to come back
//!   (503 with `Retry-After`) comes back, as a person would;
//! - `onsale`: `--users` buyers join a performance's waiting room before its sale opens
//!   (`--concurrency` at a time), the sale opens, and each buyer follows its place
//!   until admitted (then holds two seats best-available and pays) or the queue closes.
//!   Reports how fast joiners were told a place, time from the opening to admission,
//!   the rank correlation of arrival and place (fairness: near zero), holds after
//!   admission, and oversell; its `responses` are each buyer's outcome (201 held, 410
//!   closed, 408 still waiting at the deadline) and its latencies those of the buyers'
//!   looks at their place. Buyers' accounts are written straight into the
//!   throwaway server's database and their sessions signed with its token key (ten
//!   thousand sign-ups would measure password hashing, not the queue).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Client, Method, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Opens a database by URL, as the binary does (the bench picks no engine itself).
pub type OpenStore = fn(&str) -> Opening<'_>;
/// The store being opened.
pub type Opening<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = anyhow::Result<Arc<dyn usher_store::Store>>> + Send + 'a>,
>;

mod bare;
mod check;
mod flash;
mod onsale;
mod table;
mod watch;

pub use bare::serve_bare;

use check::check;
use flash::flash;
use onsale::onsale;
use table::print_table;
use watch::watch;

const PASSWORD: &str = "usher-bench-password";
/// The account the bench promotes its organizer with. A server not started by the
/// bench must name it in `USHER_ADMIN_EMAIL` (or have an empty database).
pub const ADMIN_EMAIL: &str = "bench-admin@usher.bench";

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// `hello`, `rush`, `flash`, `login` or `watch`.
    #[arg(value_enum)]
    scenario: Scenario,
    /// A running server to drive (loopback only); default: start a throwaway one.
    #[arg(long, conflicts_with = "database_url")]
    url: Option<String>,
    /// The throwaway server's database (default: a SQLite file in a temporary folder).
    #[arg(long)]
    database_url: Option<String>,
    /// Requests to send (rush, hello, login).
    #[arg(long, default_value_t = 10_000)]
    requests: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Buyers (rush, flash) or accounts (login).
    #[arg(long, default_value_t = 64)]
    users: usize,
    /// Seats on sale (flash).
    #[arg(long, default_value_t = 10)]
    seats: usize,
    /// What each rush hold asks for (rush, watch).
    #[arg(long, value_enum, default_value = "ga")]
    kind: Kind,
    /// WebSocket watchers of the performance while the rush runs (watch).
    #[arg(long, default_value_t = 1_000)]
    watchers: usize,
    /// One JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// `hello` only: drive a bare axum handler (no middleware) instead of Usher, the
    /// ceiling `hello` is compared with.
    #[arg(long, conflicts_with_all = ["url", "database_url"])]
    bare: bool,
    /// The run stops after this long, whatever is left.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Scenario {
    Hello,
    Rush,
    Flash,
    Login,
    /// A rush with `--watchers` live watchers: how long a hold takes to reach them.
    Watch,
    /// A waiting room at the opening of a sale.
    Onsale,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Ga,
    Seat,
    Best,
}

/// What the summary says.
#[derive(Debug, Serialize)]
struct Report {
    scenario: Scenario,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<Kind>,
    requests: u64,
    concurrency: usize,
    wall_s: f64,
    requests_per_s: f64,
    holds: u64,
    holds_per_s: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    responses: BTreeMap<u16, u64>,
    errors: u64,
    oversold: u64,
    invariants_ok: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    invariant_problems: Vec<String>,
    /// The server's largest resident set while the scenario ran (throwaway server only).
    server_rss_mb: Option<f64>,
    /// The server's peak resident set over its whole life, set-up included.
    server_peak_rss_mb: Option<f64>,
    engine: String,
    /// Login: successful logins, their rate, and how often a 503 said "come back".
    #[serde(skip_serializing_if = "Option::is_none")]
    logins: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logins_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    told_to_retry: Option<u64>,
    /// Watch: the watchers, and the delay from a hold's answer to its change reaching
    /// each of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    watch: Option<WatchReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    onsale: Option<OnsaleReport>,
}

#[derive(Debug, Serialize)]
struct OnsaleReport {
    joiners: u64,
    joins_per_s: f64,
    /// From sending the join to the answer with a place in it.
    join_p50_ms: f64,
    join_p99_ms: f64,
    join_max_ms: f64,
    /// Joiners told their place later than one second after joining.
    told_later_than_1s: u64,
    admitted: u64,
    /// From the opening to the buyer seeing itself admitted.
    admission_p50_s: f64,
    admission_p99_s: f64,
    admission_max_s: f64,
    /// Spearman's rank correlation of arrival order and place after the draw.
    fairness_rank_correlation: f64,
    holds_after_admission: u64,
    paid: u64,
    closed: u64,
    /// Still waiting when the run ended.
    waiting_at_end: u64,
}

#[derive(Debug, Serialize)]
struct WatchReport {
    watchers: usize,
    /// Watchers still connected at the end (the server cuts off those too slow).
    connected_at_end: usize,
    /// (hold, watcher) pairs delivered.
    deliveries: u64,
    delivery_p50_ms: f64,
    delivery_p99_ms: f64,
    delivery_max_ms: f64,
}

pub async fn run(args: BenchArgs, open_store: OpenStore) -> anyhow::Result<()> {
    if args.bare && args.scenario != Scenario::Hello {
        bail!("--bare is for `hello` only");
    }
    let server = match &args.url {
        Some(url) => {
            check_loopback(url)?;
            Server::external(url.trim_end_matches('/'))
        }
        None if args.bare => Server::start_bare()?,
        None => Server::start(args.database_url.as_deref())?,
    };
    let client = Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(1))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let bench = Bench {
        client,
        base: server.url.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let outcome = match args.scenario {
        Scenario::Hello => hello(&bench, &args, &server, deadline).await,
        Scenario::Rush => rush(&bench, &args, &server, deadline).await,
        Scenario::Flash => flash(&bench, &args, &server, deadline).await,
        Scenario::Login => login(&bench, &args, &server, deadline).await,
        Scenario::Watch => watch(&bench, &args, &server, deadline).await,
        Scenario::Onsale => onsale(&bench, &args, &server, deadline, open_store).await,
    };
    let report = outcome?;
    server.stop();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    if report.invariants_ok == Some(false) {
        bail!(
            "invariants broken: {}",
            report.invariant_problems.join("; ")
        );
    }
    Ok(())
}

/// Only addresses on this machine are driven.
fn check_loopback(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).context("--url")?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("usher bench drives servers on this machine only (127.0.0.0/8, ::1, localhost)");
    }
    Ok(())
}

/// The hidden subcommand of this binary that runs [`serve_bare`].
pub const BARE_SERVER_COMMAND: &str = "bench-bare-server";

/// The URL a server the bench started prints first (`listening on URL`).
fn listening(mut child: Child) -> anyhow::Result<(Child, String)> {
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().context("server stdout")?),
        &mut line,
    )?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow!("the throwaway server did not start: {line:?}"))?
        .to_owned();
    Ok((child, url))
}

/// The server under load: one the bench started (and measures), or one given by URL.
struct Server {
    url: String,
    child: Option<Child>,
    dir: Option<PathBuf>,
    engine: String,
    /// The throwaway server's database and token key (onsale writes its buyers there).
    database_url: Option<String>,
    jwt_secret: Option<String>,
}

impl Server {
    fn external(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            child: None,
            dir: None,
            engine: "external".into(),
            database_url: None,
            jwt_secret: None,
        }
    }

    fn start(database_url: Option<&str>) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("usher-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let database = database_url
            .map(str::to_owned)
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("bench.db").display()));
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| anyhow!("random source: {e}"))?;
        let mut token_key = [0u8; 32];
        getrandom::fill(&mut token_key).map_err(|e| anyhow!("random source: {e}"))?;
        let jwt_secret = hex::encode(token_key);
        let child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .env("USHER_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", &database)
            .env("USHER_MAIL_DIR", dir.join("mail"))
            .env("USHER_MASTER_KEY", hex::encode(key))
            .env("USHER_JWT_SECRET", &jwt_secret)
            .env("USHER_ADMIN_EMAIL", ADMIN_EMAIL)
            // A benchmark is one client hammering from one address: exactly what the
            // limits are for. `--url` servers say for themselves.
            .env("USHER_RATE_LIMITS", "off")
            // Likewise every connection of a benchmark comes from one address.
            .env("USHER_MAX_CONNECTIONS_PER_ADDRESS_PERCENT", "100")
            .env("USHER_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .env_remove("SMTP_URL")
            .env_remove("USHER_PAYMENT_PROVIDER")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the throwaway server")?;
        let (child, url) = listening(child)?;
        let engine = if database.starts_with("sqlite") {
            "sqlite"
        } else {
            "postgres"
        };
        Ok(Self {
            url,
            child: Some(child),
            dir: Some(dir),
            engine: engine.into(),
            database_url: Some(database),
            jwt_secret: Some(jwt_secret),
        })
    }

    /// The bare axum handler (`--bare`), in a process of its own like Usher's.
    fn start_bare() -> anyhow::Result<Self> {
        let child = Command::new(std::env::current_exe()?)
            .arg(BARE_SERVER_COMMAND)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the bare server")?;
        let (child, url) = listening(child)?;
        Ok(Self {
            url,
            child: Some(child),
            dir: None,
            engine: "bare axum".into(),
            database_url: None,
            jwt_secret: None,
        })
    }

    /// The server's resident set now and at its peak, in MiB (`/proc`, Linux).
    fn rss_mb(&self) -> Option<(f64, f64)> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map(|kb| kb / 1024.0)
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

struct Bench {
    client: Client,
    base: String,
}

impl Bench {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let value = response.json().await.unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// A set-up call that must succeed; a busy answer (password hashing) is retried.
    async fn must(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        for _ in 0..100 {
            let (status, value) = self.call(method.clone(), path, token, body).await?;
            if status == StatusCode::SERVICE_UNAVAILABLE {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if !status.is_success() {
                bail!("{method} {path} answered {status}: {value}");
            }
            return Ok(value);
        }
        bail!("{method} {path} stayed busy")
    }

    /// Signs up (or, if it exists, logs in) and returns the access token.
    async fn account(&self, email: &str) -> anyhow::Result<String> {
        let body = json!({"email": email, "password": PASSWORD, "name": "Bench"});
        for _ in 0..100 {
            let (status, value) = self
                .call(Method::POST, "/v1/auth/signup", None, Some(&body))
                .await?;
            match status {
                StatusCode::CREATED => return token_of(&value),
                StatusCode::SERVICE_UNAVAILABLE => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                StatusCode::CONFLICT => {
                    let login = json!({"email": email, "password": PASSWORD});
                    let value = self
                        .must(Method::POST, "/v1/auth/login", None, Some(&login))
                        .await?;
                    return token_of(&value);
                }
                other => bail!("signup of {email} answered {other}: {value}"),
            }
        }
        bail!("signup of {email} stayed busy")
    }

    /// Many accounts, a few at a time (hashing is bounded on the server).
    async fn accounts(&self, prefix: &str, count: usize) -> anyhow::Result<Vec<String>> {
        let tokens = Arc::new(Mutex::new(vec![String::new(); count]));
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (bench, tokens, next, prefix) = (
                Bench {
                    client: self.client.clone(),
                    base: self.base.clone(),
                },
                tokens.clone(),
                next.clone(),
                prefix.to_owned(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= count {
                        return anyhow::Ok(());
                    }
                    let token = bench.account(&format!("{prefix}{i}@usher.bench")).await?;
                    tokens.lock().await[i] = token;
                }
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(Arc::try_unwrap(tokens)
            .map_err(|_| anyhow!("accounts still shared"))?
            .into_inner())
    }

    /// An organizer and a published event; returns the organizer's token and the event.
    async fn published_event(&self, run: &str) -> anyhow::Result<(String, String)> {
        let admin = self.account(ADMIN_EMAIL).await?;
        let organizer_email = format!("organizer-{run}@usher.bench");
        let organizer = self.account(&organizer_email).await?;
        let me = self
            .must(Method::GET, "/v1/me", Some(&organizer), None)
            .await?;
        let id = me["id"].as_str().unwrap_or_default().to_owned();
        let promoted = self
            .call(
                Method::PATCH,
                &format!("/v1/admin/users/{id}"),
                Some(&admin),
                Some(&json!({"role": "organizer"})),
            )
            .await?;
        if !promoted.0.is_success() {
            bail!(
                "could not promote the bench organizer ({}): start the server with \
                 USHER_ADMIN_EMAIL={ADMIN_EMAIL}, or on an empty database",
                promoted.0
            );
        }
        let login = json!({"email": organizer_email, "password": PASSWORD});
        let organizer = token_of(
            &self
                .must(Method::POST, "/v1/auth/login", None, Some(&login))
                .await?,
        )?;
        let event = self
            .must(
                Method::POST,
                "/v1/events",
                Some(&organizer),
                Some(&json!({"title": format!("Bench {run}"), "venue": "Loopback Hall"})),
            )
            .await?;
        let event_id = event["id"].as_str().unwrap_or_default().to_owned();
        self.must(
            Method::PATCH,
            &format!("/v1/events/{event_id}"),
            Some(&organizer),
            Some(&json!({"status": "published"})),
        )
        .await?;
        Ok((organizer, event_id))
    }

    /// A performance with `capacity` places of this kind; returns it as the API did.
    async fn performance(
        &self,
        organizer: &str,
        event_id: &str,
        kind: Kind,
        capacity: usize,
    ) -> anyhow::Result<Value> {
        let price = json!({"amount": 2500, "currency": "EUR"});
        let seating = match kind {
            Kind::Ga => json!({"kind": "general", "ticket_types": [
                {"name": "Floor", "price": price, "capacity": capacity}
            ]}),
            Kind::Seat | Kind::Best => {
                let rows: Vec<Value> = (0..capacity.div_ceil(1000))
                    .map(|r| {
                        let seats = (capacity - r * 1000).min(1000);
                        json!({"label": format!("R{r}"), "seats": seats})
                    })
                    .collect();
                json!({"kind": "reserved", "sections": [{"name": "Stalls", "price": price, "rows": rows}]})
            }
        };
        let starts = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
        self.must(
            Method::POST,
            &format!("/v1/events/{event_id}/performances"),
            Some(organizer),
            Some(&json!({"starts_at": starts, "hold_ttl_seconds": 3600, "seating": seating})),
        )
        .await
    }
}

fn token_of(session: &Value) -> anyhow::Result<String> {
    session["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no access token in {session}"))
}

/// A short id that keeps this run's accounts apart from earlier runs' on one database.
fn run_id() -> String {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

/// What the workers measured.
struct Measured {
    wall: Duration,
    histogram: Histogram<u64>,
    responses: BTreeMap<u16, u64>,
    errors: u64,
    rss_mb: Option<f64>,
}

/// The server's peak memory (MB) while the scenario runs: sampled every 100 ms until
/// `done` turns true; `None` for a server this process did not start.
fn peak_rss(pid: Option<u32>, done: Arc<AtomicBool>) -> tokio::task::JoinHandle<Option<f64>> {
    tokio::spawn(async move {
        let mut max: Option<f64> = None;
        while let Some(pid) = pid {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                && let Some(kb) = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            {
                max = Some(max.map_or(kb / 1024.0, |m: f64| m.max(kb / 1024.0)));
            }
            if done.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        max
    })
}

/// Sends `requests` requests, `concurrency` at a time; `request(i)` makes the i-th.
/// Stops early at `deadline`, or once `finished` turns true.
async fn drive<F, Fut>(
    requests: u64,
    concurrency: usize,
    deadline: Instant,
    quiet: bool,
    server: &Server,
    finished: Arc<AtomicBool>,
    request: F,
) -> anyhow::Result<Measured>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<StatusCode>> + Send,
{
    let progress = if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(requests).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} requests, {per_sec}, eta {eta}")
                .map_err(|e| anyhow!("{e}"))?,
        )
    };
    let request = Arc::new(request);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let sampling = peak_rss(server.child.as_ref().map(Child::id), done.clone());
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (request, next, progress, finished) = (
            request.clone(),
            next.clone(),
            progress.clone(),
            finished.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut histogram = latencies()?;
            let mut responses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests || Instant::now() > deadline || finished.load(Ordering::Relaxed) {
                    return anyhow::Ok((histogram, responses, errors));
                }
                let sent = Instant::now();
                match request(i).await {
                    Ok(status) => *responses.entry(status.as_u16()).or_default() += 1,
                    Err(_) => errors += 1,
                }
                histogram.saturating_record(sent.elapsed().as_micros() as u64);
                progress.inc(1);
            }
        }));
    }
    let mut histogram = latencies()?;
    let mut responses = BTreeMap::new();
    let mut errors = 0;
    for worker in workers {
        let (h, r, e) = worker.await??;
        histogram.add(h).map_err(|e| anyhow!("{e}"))?;
        for (status, count) in r {
            *responses.entry(status).or_default() += count;
        }
        errors += e;
    }
    let wall = started.elapsed();
    done.store(true, Ordering::Relaxed);
    progress.finish_and_clear();
    let rss_mb = sampling.await.unwrap_or(None);
    Ok(Measured {
        wall,
        histogram,
        responses,
        errors,
        rss_mb,
    })
}

fn report(
    scenario: Scenario,
    kind: Option<Kind>,
    args: &BenchArgs,
    server: &Server,
    measured: Measured,
    holds: u64,
) -> Report {
    let ms = |q: f64| measured.histogram.value_at_quantile(q) as f64 / 1000.0;
    let secs = measured.wall.as_secs_f64().max(1e-9);
    let sent: u64 = measured.responses.values().sum::<u64>() + measured.errors;
    Report {
        scenario,
        kind,
        requests: sent,
        concurrency: args.concurrency,
        wall_s: secs,
        requests_per_s: sent as f64 / secs,
        holds,
        holds_per_s: holds as f64 / secs,
        p50_ms: ms(0.50),
        p90_ms: ms(0.90),
        p99_ms: ms(0.99),
        max_ms: measured.histogram.max() as f64 / 1000.0,
        responses: measured.responses,
        errors: measured.errors,
        oversold: 0,
        invariants_ok: None,
        invariant_problems: Vec::new(),
        server_rss_mb: measured.rss_mb,
        server_peak_rss_mb: server.rss_mb().map(|(_, peak)| peak),
        engine: server.engine.clone(),
        logins: None,
        logins_per_s: None,
        told_to_retry: None,
        watch: None,
        onsale: None,
    }
}

async fn hello(
    bench: &Bench,
    args: &BenchArgs,
    server: &Server,
    deadline: Instant,
) -> anyhow::Result<Report> {
    let (client, url) = (bench.client.clone(), format!("{}/healthz", bench.base));
    let measured = drive(
        args.requests,
        args.concurrency,
        deadline,
        args.json,
        server,
        Arc::default(),
        move |_| {
            let request = client.get(&url);
            async move { Ok(request.send().await?.status()) }
        },
    )
    .await?;
    Ok(report(Scenario::Hello, None, args, server, measured, 0))
}

async fn login(
    bench: &Bench,
    args: &BenchArgs,
    server: &Server,
    deadline: Instant,
) -> anyhow::Result<Report> {
    let run = run_id();
    let users = args.users.max(1);
    bench.accounts(&format!("login-{run}-"), users).await?;
    let (client, url) = (
        bench.client.clone(),
        format!("{}/v1/auth/login", bench.base),
    );
    let told_to_wait = Arc::new(AtomicU64::new(0));
    let waits = told_to_wait.clone();
    // Each login is one person: told to come back (503 with Retry-After), they do, as a
    // browser would; the latency is what that person waits in all.
    let measured = drive(
        args.requests,
        args.concurrency,
        deadline,
        args.json,
        server,
        Arc::default(),
        move |i| {
            let email = format!("login-{run}-{}@usher.bench", i % users as u64);
            let (client, url, waits) = (client.clone(), url.clone(), waits.clone());
            async move {
                for _ in 0..60 {
                    let response = client
                        .post(&url)
                        .json(&json!({"email": email, "password": PASSWORD}))
                        .send()
                        .await?;
                    if response.status() != StatusCode::SERVICE_UNAVAILABLE {
                        return Ok(response.status());
                    }
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or_else(|| anyhow!("503 without Retry-After"))?;
                    waits.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(retry_after)).await;
                }
                Ok(StatusCode::SERVICE_UNAVAILABLE)
            }
        },
    )
    .await?;
    let logins = measured.responses.get(&200).copied().unwrap_or(0);
    let mut report = report(Scenario::Login, None, args, server, measured, 0);
    report.logins = Some(logins);
    report.logins_per_s = Some(logins as f64 / report.wall_s);
    report.told_to_retry = Some(told_to_wait.load(Ordering::Relaxed));
    // Every answer is a login or a "come back" with Retry-After.
    let unexpected: u64 = report
        .responses
        .iter()
        .filter(|(status, _)| !matches!(**status, 200 | 503))
        .map(|(_, count)| count)
        .sum();
    report.invariants_ok = Some(unexpected == 0 && report.errors == 0);
    if unexpected > 0 {
        report
            .invariant_problems
            .push(format!("{unexpected} answers were neither 200 nor 503"));
    }
    Ok(report)
}

async fn rush(
    bench: &Bench,
    args: &BenchArgs,
    server: &Server,
    deadline: Instant,
) -> anyhow::Result<Report> {
    let run = run_id();
    let capacity = args.requests as usize;
    let (organizer, event_id) = bench.published_event(&run).await?;
    let performance = bench
        .performance(&organizer, &event_id, args.kind, capacity)
        .await?;
    let performance_id = performance["id"].as_str().unwrap_or_default().to_owned();
    let ticket_type = performance["ticket_types"][0]["id"].clone();
    let seats: Vec<String> = if args.kind == Kind::Seat {
        let map = bench
            .must(
                Method::GET,
                &format!("/v1/performances/{performance_id}/seats"),
                None,
                None,
            )
            .await?;
        map["units"]
            .as_array()
            .map(|units| {
                units
                    .iter()
                    .filter_map(|u| u["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let tokens = bench
        .accounts(&format!("buyer-{run}-"), args.users.max(1))
        .await?;
    let (client, url, kind) = (
        bench.client.clone(),
        format!("{}/v1/bookings", bench.base),
        args.kind,
    );
    let (tokens, seats) = (Arc::new(tokens), Arc::new(seats));
    let perf = performance_id.clone();
    let measured = drive(args.requests, args.concurrency, deadline, args.json, server, Arc::default(), move |i| {
        let body = match kind {
            Kind::Ga => json!({"performance_id": perf, "ticket_type_id": ticket_type, "quantity": 1}),
            Kind::Seat => json!({"performance_id": perf, "unit_ids": [seats[i as usize % seats.len().max(1)]]}),
            Kind::Best => json!({"performance_id": perf, "quantity": 1, "best_available": true}),
        };
        let request = client
            .post(&url)
            .bearer_auth(&tokens[i as usize % tokens.len()])
            .json(&body);
        async move { Ok(request.send().await?.status()) }
    })
    .await?;
    let holds = measured.responses.get(&201).copied().unwrap_or(0);
    let mut report = report(
        Scenario::Rush,
        Some(args.kind),
        args,
        server,
        measured,
        holds,
    );
    check(bench, &organizer, &performance_id, holds, &mut report).await?;
    Ok(report)
}

/// An empty histogram of microseconds, up to a minute.
fn latencies() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| anyhow!("{e}"))
}

/// When each unit's hold was answered, for matching the watchers' deliveries.
type Answered = Arc<std::sync::RwLock<HashMap<String, Instant>>>;
