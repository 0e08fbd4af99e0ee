//! The binary as a user runs it: `usher serve` on port 0, `usher migrate`, `usher seed`.

use std::process::{Child, Command};
use std::time::Duration;

use usher_testkit::{on_each_engine, scratch_dir};

mod common;

fn usher() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_usher"));
    command
        .current_dir(scratch_dir())
        .env_remove("DATABASE_URL")
        .env_remove("USHER_ADDR")
        .env("USHER_LOG_FORMAT", "json");
    command
}

/// Starts `usher serve` and returns it with the URL it printed.
fn serve(database_url: &str) -> (Child, String) {
    let mut child = common::usher_serve(database_url)
        .spawn()
        .expect("start usher");
    let url = common::listening(&mut child);
    (child, url)
}

fn terminate(mut child: Child) -> std::process::ExitStatus {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("usher did not stop within 5 s of SIGTERM");
}

on_each_engine! {
    async fn serve_prints_its_url_answers_and_stops_on_sigterm(engine) {
        let url = engine.fresh_database_url().await;
        let (child, base) = serve(&url);
        let health = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(health.status(), 200);
        let status = terminate(child);
        assert!(status.success(), "{status}");
        // The master key file: beside the SQLite file, or in the working directory.
        let key_file = match url.strip_prefix("sqlite://") {
            Some(path) => std::path::PathBuf::from(format!("{path}.key")),
            None => scratch_dir().join("usher-master.key"),
        };
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).expect("key file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key_file.display());
    }

    async fn migrate_then_seed_twice_is_idempotent(engine) {
        let url = engine.fresh_database_url().await;
        let migrate = usher().arg("migrate").env("DATABASE_URL", &url).output().unwrap();
        assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
        assert!(String::from_utf8_lossy(&migrate.stdout).contains("migrations applied"));

        for _ in 0..2 {
            let seed = usher().arg("seed").env("DATABASE_URL", &url).output().unwrap();
            assert!(seed.status.success(), "{}", String::from_utf8_lossy(&seed.stderr));
            let printed = String::from_utf8_lossy(&seed.stdout);
            assert!(printed.contains("organizer@usher.example"), "{printed}");
            assert!(printed.contains("usher-demo-organizer"), "{printed}");
        }

        // The demo organizer can log in, and the demo events exist once each.
        let (child, base) = serve(&url);
        let client = reqwest::Client::new();
        let login = client
            .post(format!("{base}/v1/auth/login"))
            .json(&serde_json::json!({"email": "organizer@usher.example", "password": "usher-demo-organizer"}))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 200);
        let login: serde_json::Value = login.json().await.unwrap();
        assert_eq!(login["user"]["role"], "organizer");
        let events: serde_json::Value = client.get(format!("{base}/v1/events")).send().await.unwrap().json().await.unwrap();
        let events = events["items"].as_array().unwrap();
        assert_eq!(events.len(), 2);
        // Each demo event has two performances (one reserved, one general admission
        // event), however often seed ran.
        let mut kinds = Vec::new();
        for event in events {
            let detail: serde_json::Value = client
                .get(format!("{base}/v1/events/{}", event["id"].as_str().unwrap()))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let performances = detail["performances"].as_array().unwrap();
            assert_eq!(performances.len(), 2);
            kinds.push(performances[0]["kind"].as_str().unwrap().to_owned());
        }
        kinds.sort();
        assert_eq!(kinds, ["general", "reserved"]);
        // The demo customer's store credit, given once.
        let customer: serde_json::Value = client
            .post(format!("{base}/v1/auth/login"))
            .json(&serde_json::json!({"email": "customer@usher.example", "password": "usher-demo-customer"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let wallet: serde_json::Value = client
            .get(format!("{base}/v1/wallet"))
            .bearer_auth(customer["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(wallet["balances"], serde_json::json!([{"amount": 5000, "currency": "EUR"}]));
        assert!(terminate(child).success());
    }
}

#[test]
fn a_database_url_of_an_unknown_kind_is_refused_clearly() {
    let output = usher()
        .arg("migrate")
        .env("DATABASE_URL", "mysql://localhost/usher")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sqlite://") && stderr.contains("postgres://"),
        "{stderr}"
    );
}

#[test]
fn a_short_jwt_secret_is_refused_at_start() {
    let output = usher()
        .arg("serve")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/short.db", scratch_dir().display()),
        )
        .env("USHER_ADDR", "127.0.0.1:0")
        .env("USHER_JWT_SECRET", "too-short")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("32 bytes"));
}

#[test]
fn stripe_without_its_keys_is_refused_at_start() {
    let output = usher()
        .arg("serve")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/stripe.db", scratch_dir().display()),
        )
        .env("USHER_ADDR", "127.0.0.1:0")
        .env("USHER_PAYMENT_PROVIDER", "stripe")
        .env_remove("STRIPE_SECRET_KEY")
        .env_remove("STRIPE_WEBHOOK_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("STRIPE_SECRET_KEY"));
}

/// `usher bench` end to end, small: its own throwaway server, each scenario, the JSON
/// summary with the promised fields, and the invariants checked.
#[test]
fn bench_runs_each_scenario_against_its_own_server_and_reports_json() {
    for args in [
        &["hello", "--requests", "200"][..],
        &["hello", "--bare", "--requests", "200"],
        &["rush", "--kind", "ga", "--requests", "150", "--users", "4"],
        &[
            "rush",
            "--kind",
            "seat",
            "--requests",
            "150",
            "--users",
            "4",
        ],
        &["rush", "--kind", "best", "--requests", "60", "--users", "4"],
        &["flash", "--users", "12", "--seats", "3"],
        &["login", "--requests", "12", "--users", "3"],
        &["onsale", "--users", "30", "--seats", "6"],
    ] {
        let output = usher()
            .arg("bench")
            .args(args)
            .args(["--concurrency", "8", "--json"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        for field in [
            "scenario",
            "requests",
            "wall_s",
            "requests_per_s",
            "holds_per_s",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "max_ms",
            "responses",
            "errors",
            "oversold",
            "invariants_ok",
            "server_rss_mb",
        ] {
            assert!(
                report.get(field).is_some(),
                "{args:?}: no {field} in {report}"
            );
        }
        assert_eq!(report["errors"], 0, "{report}");
        assert_eq!(report["oversold"], 0, "{report}");
        if args[0] == "hello" {
            assert_eq!(report["responses"]["200"], 200, "{report}");
            let bare = args.contains(&"--bare");
            assert_eq!(report["engine"] == "bare axum", bare, "{report}");
        }
        if args[0] != "hello" {
            assert_eq!(report["invariants_ok"], true, "{report}");
        }
        if args[0] == "rush" {
            assert_eq!(
                report["responses"]["201"], report["requests"],
                "every rush hold succeeds: {report}"
            );
        }
        if args[0] == "flash" {
            assert_eq!(
                report["holds"], 3,
                "exactly the seats on sale are won: {report}"
            );
        }
        if args[0] == "onsale" {
            let onsale = &report["onsale"];
            // Every joiner was told a place. (How soon is the benchmark's to report, in
            // BENCHMARKS.md, not this test's to time on a shared box.)
            assert_eq!(onsale["joiners"], 30, "{report}");
            // Six seats, two per buyer: three admitted, held and paid; the rest closed.
            assert_eq!(
                (onsale["paid"].as_u64(), onsale["closed"].as_u64()),
                (Some(3), Some(27)),
                "{report}"
            );
        }
    }
}

#[test]
fn serve_refuses_a_read_url_that_is_not_a_postgres_replica_and_creates_nothing() {
    let dir = scratch_dir().join(format!("read-url-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let database = dir.join("usher.db");
    for (primary, replica) in [
        (
            format!("sqlite://{}", database.display()),
            "sqlite:///tmp/replica.db".to_owned(),
        ),
        (
            format!("sqlite://{}", database.display()),
            "postgres://127.0.0.1:1/usher".to_owned(),
        ),
        (
            "postgres://127.0.0.1:1/usher".to_owned(),
            "redis://127.0.0.1:1".to_owned(),
        ),
    ] {
        let output = usher()
            .arg("serve")
            .env("DATABASE_URL", &primary)
            .env("DATABASE_READ_URL", &replica)
            .env("USHER_ADDR", "127.0.0.1:0")
            .env("USHER_MASTER_KEY_FILE", dir.join("key"))
            .output()
            .unwrap();
        assert!(!output.status.success(), "{primary} + {replica}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(
                "DATABASE_READ_URL must be a postgres:// replica of a postgres:// DATABASE_URL"
            ),
            "{stderr}"
        );
    }
    assert!(!database.exists(), "the primary was opened");
}

#[test]
fn bench_refuses_to_drive_anything_but_this_machine() {
    let output = usher()
        .args(["bench", "hello", "--url", "http://192.0.2.1:8080"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("this machine only"));
}
