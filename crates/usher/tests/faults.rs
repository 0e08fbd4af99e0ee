//! The database failing under the real binary: PostgreSQL stopped for ten seconds in
//! the middle of a rush, and an SQLite file that can no longer grow (a full disk). While
//! the database is gone every request is answered within 5 s (503 problem+json with
//! `Retry-After` when it needed the database, never a hang or a 500), `/readyz` says
//! 503, the process stays up, and it serves again by itself once the database is back.
//! Every hold it acknowledged is still there afterwards.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use usher_testkit::{PgCluster, scratch_dir};

mod common;

const PASSWORD: &str = "correct horse battery";
const CAPACITY: u64 = 100_000;
const LOADERS: usize = 6;

struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    fn start(database_url: &str, name: &str) -> Self {
        let log = scratch_dir().join(format!("{name}.log"));
        let mut command = common::usher_serve(database_url);
        command
            .env("USHER_RATE_LIMITS", "off")
            .env("USHER_MAIL_DIR", scratch_dir().join(format!("{name}-mail")))
            // A pipe, as under a supervisor: the full-disk test limits the size of the
            // server's files, and its log is not one of them.
            .stderr(std::process::Stdio::piped());
        // A write past the file size limit fails with EFBIG instead of killing the
        // process (the full-disk test lowers the limit while it runs).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("start usher");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let mut file = std::fs::File::create(&log).unwrap();
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut file));
        let base = common::listening(&mut child);
        Self { child, base, log }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
        text
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A published general-admission sale and buyers signed up for it: (performance id,
/// ticket type id, buyer tokens).
async fn a_sale(client: &Client, server: &Server, buyers: usize) -> (String, String, Vec<String>) {
    let sale = common::general_sale(client, &server.base, "Fault Night", CAPACITY).await;
    let mut tokens = Vec::new();
    for i in 0..buyers {
        let response = client
            .post(server.url("/v1/auth/signup"))
            .json(&json!({"email": format!("buyer{i}@example.com"), "password": PASSWORD, "name": "Buyer"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let buyer: Value = response.json().await.unwrap();
        tokens.push(buyer["access_token"].as_str().unwrap().to_owned());
    }
    (sale.performance_id, sale.ticket_type_id, tokens)
}

/// One request of the load, as the client saw it.
#[derive(Debug)]
struct Sample {
    sent: Instant,
    took: Duration,
    /// `None`: no answer at all (the connection failed or the client gave up).
    status: Option<StatusCode>,
    what: &'static str,
    problem_json: bool,
    retry_after: bool,
    /// The booking id of a hold answered 201, and which buyer holds it.
    hold: Option<(String, usize)>,
}

/// A sale with one buyer per loader holding and reading in a loop until stopped, every
/// answer recorded.
struct Rush {
    client: Client,
    performance: String,
    ticket_type: String,
    tokens: Vec<String>,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    loaders: Vec<tokio::task::JoinHandle<()>>,
}

impl Rush {
    async fn start(server: &Server) -> Self {
        let client = Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let (performance, ticket_type, tokens) = a_sale(&client, server, LOADERS).await;
        let mut rush = Self {
            client,
            performance,
            ticket_type,
            tokens,
            stop: Arc::new(AtomicBool::new(false)),
            samples: Arc::new(Mutex::new(Vec::new())),
            loaders: Vec::new(),
        };
        rush.loaders = (0..LOADERS)
            .map(|buyer| rush.buyer(server, buyer))
            .collect();
        rush
    }

    fn hold_body(&self) -> Value {
        json!({"performance_id": self.performance, "ticket_type_id": self.ticket_type, "quantity": 1})
    }

    /// One buyer: a hold, a read of the performance, again, until stopped.
    fn buyer(&self, server: &Server, buyer: usize) -> tokio::task::JoinHandle<()> {
        let client = self.client.clone();
        let holds = server.url("/v1/bookings");
        let read = server.url(&format!("/v1/performances/{}", self.performance));
        let token = self.tokens[buyer].clone();
        let body = self.hold_body();
        let (stop, samples) = (self.stop.clone(), self.samples.clone());
        tokio::spawn(async move {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let (what, request) = if round.is_multiple_of(2) {
                    ("hold", client.post(&holds).bearer_auth(&token).json(&body))
                } else {
                    ("read", client.get(&read))
                };
                let sent = Instant::now();
                let mut sample = Sample {
                    sent,
                    took: Duration::ZERO,
                    status: None,
                    what,
                    problem_json: false,
                    retry_after: false,
                    hold: None,
                };
                if let Ok(response) = request.send().await {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let answer: Value = response.json().await.unwrap_or(Value::Null);
                    sample.status = Some(status);
                    sample.problem_json = headers
                        .get("content-type")
                        .is_some_and(|v| v == "application/problem+json");
                    sample.retry_after = headers.contains_key("retry-after");
                    sample.hold = (status == StatusCode::CREATED)
                        .then(|| (answer["id"].as_str().unwrap_or_default().to_owned(), buyer));
                }
                sample.took = sent.elapsed();
                let failed = sample.status.is_none_or(|s| s.is_server_error());
                samples.lock().await.push(sample);
                if failed {
                    // A buyer's retry pace, not a spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    }

    /// `/readyz`'s status and how long it took to say it.
    async fn readiness(&self, server: &Server) -> (StatusCode, Duration) {
        let sent = Instant::now();
        let response = self.client.get(server.url("/readyz")).send().await.unwrap();
        (response.status(), sent.elapsed())
    }

    /// How long until a hold succeeds again, polling every 100 ms for at most `limit`.
    async fn first_hold(&self, server: &Server, limit: Duration) -> Duration {
        let started = Instant::now();
        let body = self.hold_body();
        loop {
            let response = self
                .client
                .post(server.url("/v1/bookings"))
                .bearer_auth(&self.tokens[0])
                .json(&body)
                .send()
                .await;
            if response.is_ok_and(|r| r.status() == StatusCode::CREATED) {
                return started.elapsed();
            }
            if started.elapsed() > limit {
                let log = server.log();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                panic!("no hold succeeded within {limit:?}; the log ends {tail:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the buyers, then checks the outage from `from` to `until`: it was noticed
    /// (503s), every answer in it came in time and well-formed, no 500 ever, the process
    /// is up without a panic, and every acknowledged hold is kept. Returns what the
    /// buyers saw and the 503s of the outage.
    async fn stop_and_check(
        mut self,
        server: &mut Server,
        from: Instant,
        until: Instant,
    ) -> (Vec<Sample>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for loader in std::mem::take(&mut self.loaders) {
            loader.await.unwrap();
        }
        let samples = std::mem::take(&mut *self.samples.lock().await);
        let unavailable = check_outage_answers(&samples, from, until);
        assert!(unavailable > 0, "the outage was never noticed");
        assert!(
            samples
                .iter()
                .all(|s| s.status != Some(StatusCode::INTERNAL_SERVER_ERROR)),
            "a 500 was answered"
        );
        assert!(server.still_running(), "the server died: {}", server.log());
        assert!(!server.log().contains("panicked"), "{}", server.log());
        self.check_acknowledged_holds(server, &samples).await;
        (samples, unavailable)
    }

    /// Every hold acknowledged with 201 is still held by its buyer, and the counts add up.
    async fn check_acknowledged_holds(&self, server: &Server, samples: &[Sample]) {
        let acknowledged: Vec<&(String, usize)> =
            samples.iter().filter_map(|s| s.hold.as_ref()).collect();
        assert!(!acknowledged.is_empty());
        for (id, buyer) in &acknowledged {
            let response = self
                .client
                .get(server.url(&format!("/v1/bookings/{id}")))
                .bearer_auth(&self.tokens[*buyer])
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "acknowledged hold {id} is gone"
            );
            let booking: Value = response.json().await.unwrap();
            assert_eq!(booking["status"], "held", "{booking}");
        }
        let counts: Value = self
            .client
            .get(server.url(&format!("/v1/performances/{}", self.performance)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let count = |key: &str| counts[key].as_u64().unwrap();
        let (available, held, sold) = (count("available"), count("held"), count("sold"));
        assert_eq!(available + held + sold, CAPACITY, "{counts}");
        // A hold whose commit landed just as the connection died may exist unacknowledged;
        // none acknowledged may be missing.
        assert!(
            held >= acknowledged.len() as u64,
            "{held} held < {} acknowledged",
            acknowledged.len()
        );
    }
}

/// Every answer given while the database was away: within 5 s, and either a success
/// (a read the server had cached) or 503 problem+json with `Retry-After`.
fn check_outage_answers(samples: &[Sample], from: Instant, until: Instant) -> usize {
    let mut unavailable = 0;
    for sample in samples.iter().filter(|s| s.sent >= from && s.sent < until) {
        assert!(
            sample.took < Duration::from_secs(5),
            "a {} answered after {:?}: {sample:?}",
            sample.what,
            sample.took
        );
        let status = sample
            .status
            .unwrap_or_else(|| panic!("no answer: {sample:?}"));
        if status.is_success() {
            continue;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{sample:?}");
        assert!(sample.problem_json && sample.retry_after, "{sample:?}");
        unavailable += 1;
    }
    unavailable
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_ten_seconds_under_load_means_fast_503s_and_recovery_by_itself() {
    let cluster = PgCluster::private("pg-restart");
    let url = cluster.create_database().await;
    let mut server = Server::start(&url, "pg-restart");
    let rush = Rush::start(&server).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let down = Instant::now();
    cluster.stop_for_now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ready, took) = rush.readiness(&server).await;
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    assert!(took < Duration::from_secs(5), "readyz took {took:?}");
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down.elapsed())).await;

    cluster.start_again();
    let back = Instant::now();
    let recovered = rush.first_hold(&server, Duration::from_secs(5)).await;
    assert_eq!(rush.readiness(&server).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Requests sent a moment after the stop (those in flight at the stop may still have
    // finished normally) until it was back.
    let (samples, unavailable) = rush
        .stop_and_check(&mut server, down + Duration::from_millis(200), back)
        .await;
    assert!(
        server.log().contains("database unavailable"),
        "no clear log line"
    );
    eprintln!(
        "postgres down 10 s: {} requests, {unavailable} answered 503, slowest {:?}; serving again {recovered:?} after it was back",
        samples.len(),
        samples.iter().map(|s| s.took).max().unwrap_or_default()
    );
}

/// Caps the size any file of `pid` may grow to (`None`: no cap).
fn file_size_limit(pid: u32, bytes: Option<u64>) {
    let limit = libc::rlimit {
        rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    let done =
        unsafe { libc::prlimit(pid as i32, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) };
    assert_eq!(done, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn database_file(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("usher.db").display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_file_that_cannot_grow_means_503s_a_clear_log_line_and_no_panic() {
    let dir = scratch_dir().join("full-disk");
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = Server::start(&database_file(&dir), "full-disk");
    let rush = Rush::start(&server).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The disk fills up: no file of the server's may grow past 64 KiB (the database and
    // its log are already bigger, so every commit now fails to write).
    let full = Instant::now();
    file_size_limit(server.child.id(), Some(64 * 1024));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let freed = Instant::now();
    file_size_limit(server.child.id(), None);
    let recovered = rush.first_hold(&server, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (samples, unavailable) = rush
        .stop_and_check(&mut server, full + Duration::from_millis(200), freed)
        .await;
    let log = server.log();
    let line = log
        .lines()
        .find(|line| line.contains("database unavailable"))
        .unwrap_or_else(|| panic!("no clear log line in {log}"));
    assert!(line.contains("full") || line.contains("I/O"), "{line}");
    eprintln!(
        "sqlite full for 3 s: {} requests, {unavailable} answered 503; serving again {recovered:?} after space came back",
        samples.len()
    );
}
