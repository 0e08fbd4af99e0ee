//! Starting the real binary, shared by the tests that do.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use usher_testkit::scratch_dir;

/// `usher serve` on this database and a free loopback port, in the scratch folder, with
/// JSON logs to nowhere and none of the caller's SMTP or rate-limit settings; add what
/// the test needs, spawn it, then call [`listening`].
pub fn usher_serve(database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_usher"));
    command
        .arg("serve")
        .current_dir(scratch_dir())
        .env("DATABASE_URL", database_url)
        .env("USHER_ADDR", "127.0.0.1:0")
        .env("USHER_LOG_FORMAT", "json")
        .env_remove("SMTP_URL")
        .env_remove("USHER_RATE_LIMITS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

/// The URL a started `usher serve` printed as its first line.
pub fn listening(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("read the first line");
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned()
}

/// What [`general_sale`] set up.
#[allow(dead_code)] // shared by some of the test binaries that include this module
pub struct GeneralSale {
    pub admin_token: String,
    pub organizer_token: String,
    pub event_id: String,
    pub performance_id: String,
    pub ticket_type_id: String,
}

/// Over the API of a fresh server at `base`: the first account (an admin), an organizer
/// it promotes, and that organizer's published event titled `title` with one
/// general-admission performance a week ahead, `capacity` tickets at €25.
#[allow(dead_code)] // shared by some of the test binaries that include this module
pub async fn general_sale(
    client: &reqwest::Client,
    base: &str,
    title: &str,
    capacity: u64,
) -> GeneralSale {
    use serde_json::{Value, json};
    async fn ok(request: reqwest::RequestBuilder) -> Value {
        let response = request.send().await.expect("send");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{status}: {body}");
        body
    }
    let password = "correct horse battery";
    let signup = |email: &str| {
        client
            .post(format!("{base}/v1/auth/signup"))
            .json(&json!({"email": email, "password": password, "name": "Someone"}))
    };
    let admin = ok(signup("admin@example.com")).await;
    let admin_token = admin["access_token"].as_str().unwrap().to_owned();
    let organizer = ok(signup("org@example.com")).await;
    let organizer_id = organizer["user"]["id"].as_str().unwrap();
    ok(client
        .patch(format!("{base}/v1/admin/users/{organizer_id}"))
        .bearer_auth(&admin_token)
        .json(&json!({"role": "organizer"})))
    .await;
    let organizer = ok(client
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": "org@example.com", "password": password})))
    .await;
    let organizer_token = organizer["access_token"].as_str().unwrap().to_owned();
    let event = ok(client
        .post(format!("{base}/v1/events"))
        .bearer_auth(&organizer_token)
        .json(&json!({"title": title})))
    .await;
    let event_id = event["id"].as_str().unwrap().to_owned();
    ok(client
        .patch(format!("{base}/v1/events/{event_id}"))
        .bearer_auth(&organizer_token)
        .json(&json!({"status": "published"})))
    .await;
    let performance = ok(client
        .post(format!("{base}/v1/events/{event_id}/performances"))
        .bearer_auth(&organizer_token)
        .json(&json!({
            "starts_at": (chrono::Utc::now() + chrono::Duration::days(7)).to_rfc3339(),
            "seating": {"kind": "general", "ticket_types": [
                {"name": "Floor", "price": {"amount": 2500, "currency": "EUR"}, "capacity": capacity}
            ]}
        })))
    .await;
    GeneralSale {
        admin_token,
        organizer_token,
        event_id,
        performance_id: performance["id"].as_str().unwrap().to_owned(),
        ticket_type_id: performance["ticket_types"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
    }
}
