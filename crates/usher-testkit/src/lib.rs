//! Test support: a throwaway PostgreSQL cluster per test process, a fresh database (or
//! SQLite file) per test, and the list of engines the story tests run against.
//!
//! The cluster is started from the server binaries on PATH (or Debian's
//! `/usr/lib/postgresql/*/bin`) with `initdb --no-sync` and `fsync=off` on a free
//! loopback port, as the `postgres` user when the tests run as root (initdb refuses
//! root), and is stopped and deleted when the test process exits. A missing binary
//! fails the test: `scripts/test` installs PostgreSQL first.

pub mod fixtures;
pub mod invariants;
pub mod lifecycle;
pub mod redis;
pub mod smtp;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use uuid::Uuid;

use usher_app::Holds;
use usher_store::Store;
use usher_store_postgres::PostgresStore;
use usher_store_sqlite::SqliteStore;

/// The engines a test can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    /// A fresh, migrated store of this engine, its own database, for one test.
    pub async fn fresh_store(self) -> Arc<dyn Store> {
        self.fresh_store_with_url().await.0
    }

    /// A fresh, migrated store and the URL of its database (to open it again, as a
    /// restarted instance would).
    pub async fn fresh_store_with_url(self) -> (Arc<dyn Store>, String) {
        let url = self.fresh_database_url().await;
        (self.open(&url).await, url)
    }

    /// Opens (and migrates) the database at `url` with this engine.
    pub async fn open(self, url: &str) -> Arc<dyn Store> {
        let store: Arc<dyn Store> = match self {
            Engine::Sqlite => Arc::new(SqliteStore::connect(url).await.expect("open sqlite")),
            Engine::Postgres => Arc::new(
                PostgresStore::connect_with(url, 8)
                    .await
                    .expect("connect postgres"),
            ),
        };
        store.migrate().await.expect("migrate");
        store
    }

    /// Waits (at most 20 s) until what a killed process left running on the database at
    /// `url` has ended, so that the store reads as the kill left it. On PostgreSQL the
    /// killed process's backends finish the statement they are in (a `COMMIT` still
    /// commits) before they notice the closed socket: the store is settled when no
    /// other session of the database is inside a statement or a transaction. On SQLite
    /// nothing runs without its process.
    pub async fn settled(self, url: &str) {
        use sqlx::Connection;
        if let Engine::Sqlite = self {
            return;
        }
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .expect("connect to see the database settle");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let busy: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()
                    AND state <> 'idle'",
            )
            .fetch_one(&mut conn)
            .await
            .expect("read pg_stat_activity");
            if busy == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{busy} sessions still busy 20 s after the kill"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The URL of a new, empty database of this engine.
    pub async fn fresh_database_url(self) -> String {
        match self {
            Engine::Sqlite => {
                let path = scratch_dir().join(format!("{}.db", Uuid::new_v4().simple()));
                format!("sqlite://{}", path.display())
            }
            Engine::Postgres => cluster().create_database().await,
        }
    }
}

/// A directory for this test process's scratch files, removed at exit.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("usher-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        register_cleanup();
        dir
    })
}

/// A PostgreSQL cluster owned by this test process.
pub struct PgCluster {
    port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

/// The cluster shared by all tests of this process, started on first use.
pub fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| PgCluster::start().unwrap_or_else(|e| panic!("{e}")))
}

impl PgCluster {
    fn start() -> Result<Self, String> {
        Self::start_in(scratch_dir().join("pg"))
    }

    /// A cluster of the calling test's own, in `scratch/NAME`, which it may stop and
    /// start again ([`Self::stop_for_now`], [`Self::start_again`]); stopped and
    /// deleted with the test process (or dropped).
    pub fn private(name: &str) -> Self {
        Self::start_in(scratch_dir().join(name)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn start_in(dir: PathBuf) -> Result<Self, String> {
        let bin = postgres_bin_dir().ok_or_else(|| {
            "PostgreSQL server binaries (initdb, postgres) are not on PATH nor in \
             /usr/lib/postgresql/*/bin; run scripts/test, which installs them"
                .to_string()
        })?;
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let owner = postgres_user_when_root();
        if let Some((uid, gid)) = owner {
            // The scratch dir's parent must be reachable by the postgres user.
            for d in [scratch_dir(), dir.as_path()] {
                std::os::unix::fs::chown(d, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
            }
        }
        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "--no-sync",
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut initdb, owner);
        let out = initdb.output().map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // A free port can be taken by someone else between our probe and the bind; retry.
        let mut last_error = String::new();
        for _ in 0..5 {
            let cluster = PgCluster {
                port: free_port(),
                dir: dir.clone(),
                child: Mutex::new(None),
            };
            match cluster.launch() {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    last_error = e;
                    cluster.stop();
                }
            }
        }
        Err(format!("postgres did not start: {last_error}"))
    }

    /// Starts the postmaster on this cluster's data and port and waits until it answers.
    fn launch(&self) -> Result<(), String> {
        let bin = postgres_bin_dir().ok_or("PostgreSQL server binaries went missing")?;
        let owner = postgres_user_when_root();
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=400"])
            .args(["-c", "listen_addresses=127.0.0.1", "-c"])
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        as_user(&mut postgres, owner);
        let child = postgres.spawn().map_err(|e| format!("postgres: {e}"))?;
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.id() as i32);
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        self.wait_ready()
    }

    /// Shuts the server down the way an operator does (fast shutdown: sessions are
    /// cut, data is kept) and waits until it is gone.
    pub fn stop_for_now(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
            forget_running(child.id() as i32);
        }
    }

    /// Starts a stopped cluster again on the same port and data.
    pub fn start_again(&self) {
        self.launch()
            .unwrap_or_else(|e| panic!("postgres did not start again: {e}"));
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
                return Err(format!("postgres exited with {status}: {log}"));
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("no answer within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // SIGQUIT is PostgreSQL's immediate shutdown: fast, and the data is thrown away.
            unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) };
            let _ = child.wait();
            forget_running(child.id() as i32);
        }
    }

    /// A store on database `name` of this replica, as `DATABASE_READ_URL` opens one
    /// (connecting on first use).
    pub fn replica_store(&self, name: &str) -> Arc<dyn Store> {
        Arc::new(PostgresStore::connect_lazy(&self.url_of(name), 4).expect("replica url"))
    }

    /// A streaming replica of this cluster, of the calling test's own in
    /// `scratch/NAME`: copied with `pg_basebackup -R` (which writes its standby
    /// settings), started on a free port, and answering (it replays the primary's log
    /// from then on). Stopped and deleted like [`Self::private`].
    pub fn start_replica(&self, name: &str) -> PgCluster {
        let bin = postgres_bin_dir().expect("PostgreSQL server binaries");
        let dir = scratch_dir().join(name);
        std::fs::create_dir_all(&dir).expect("replica dir");
        let owner = postgres_user_when_root();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown replica dir");
        }
        let mut backup = Command::new(bin.join("pg_basebackup"));
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast", "-D"])
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut backup, owner);
        let out = backup.output().expect("pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let replica = PgCluster {
            port: free_port(),
            dir,
            child: Mutex::new(None),
        };
        replica
            .launch()
            .unwrap_or_else(|e| panic!("the replica did not start: {e}"));
        replica
    }

    /// Runs one statement as the cluster's superuser (`SELECT pg_wal_replay_pause()`).
    pub async fn run_admin(&self, sql: &str) {
        let mut admin = PgConnection::connect(&self.admin_url())
            .await
            .expect("connect as admin");
        admin
            .execute(AssertSqlSafe(sql.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = admin.close().await;
    }

    /// The URL of database `name` on this cluster.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub async fn create_database(&self) -> String {
        let name = format!("usher_{}", Uuid::new_v4().simple());
        // Connecting can race the very first start-up; retry briefly.
        let mut attempts = 0;
        let mut admin = loop {
            match PgConnection::connect(&self.admin_url()).await {
                Ok(conn) => break conn,
                Err(e) if attempts < 50 => {
                    attempts += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("connect to test cluster: {e}"),
            }
        };
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create database");
        let _ = admin.close().await;
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The postmasters' pids, for the exit hook (statics are never dropped).
static RUNNING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn forget_running(pid: i32) {
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|running| *running != pid);
}

fn register_cleanup() {
    extern "C" fn at_exit() {
        let pids = RUNNING
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        for pid in pids.into_iter().filter(|pid| *pid > 0) {
            unsafe { libc::kill(pid, libc::SIGQUIT) };
            // Give the postmaster a moment to go before its directory does.
            for _ in 0..100 {
                if unsafe { libc::kill(pid, 0) } != 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            }
        }
        let dir = std::env::temp_dir().join(format!("usher-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(dir);
    }
    unsafe { libc::atexit(at_exit) };
}

fn postgres_bin_dir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() && dir.join("postgres").is_file() {
                // Debian links a few tools into /usr/bin; the server lives beside the real file.
                let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
                return real.parent().map(Path::to_path_buf);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// When we are root, the uid/gid of the `postgres` user to run the server as.
fn postgres_user_when_root() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&"postgres") && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

fn as_user(command: &mut Command, owner: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("probe a free port")
}

/// Generates one `#[tokio::test]` per engine from one body. The body gets the engine:
///
/// ```ignore
/// on_each_engine! {
///     async fn signup_works(engine) { let store = engine.fresh_store().await; … }
/// }
/// ```
#[macro_export]
macro_rules! on_each_engine {
    ($(async fn $name:ident($engine:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn run($engine: $crate::Engine) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    run($crate::Engine::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    run($crate::Engine::Postgres).await
                }
            }
        )*
    };
}

/// Whether a test whose tool (a browser, schemathesis) is missing must fail rather than
/// skip: `scripts/test` sets `USHER_TESTS_REQUIRE_ALL=1` (unless a person running it
/// opts out, loudly, with `USHER_TESTS_ALLOW_SKIPS=1`), and so does CI. Run by hand with
/// `cargo test`, a missing tool is a printed skip.
pub fn skipping_is_a_failure() -> bool {
    std::env::var("USHER_TESTS_REQUIRE_ALL").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The hold use case on `store`, with its write pipeline (group commit), as the server
/// runs it.
pub fn holds(store: &Arc<dyn Store>) -> Arc<Holds> {
    Arc::new(Holds::start(store.clone(), true))
}
