//! The binary killed with SIGKILL while it cancels an event with paying buyers, then
//! started again on the same database, several times: in the end every hold is
//! released, every payment refunded exactly once and every buyer emailed exactly once.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};

use usher_testkit::{on_each_engine, scratch_dir};

mod common;

const PASSWORD: &str = "correct horse battery";
const BUYERS: usize = 24;

/// Starts `usher serve` on this database and mail folder; returns it and its URL.
fn serve(database_url: &str, mail_dir: &Path) -> (Child, String) {
    let mut child = common::usher_serve(database_url)
        .env("USHER_MAIL_DIR", mail_dir)
        // Jobs claimed by a killed instance are taken over after 3 s, not 2 minutes.
        .env("USHER_JOB_LEASE_SECONDS", "3")
        // Two dozen buyers from one address in a burst: not what this test is about.
        .env("USHER_RATE_LIMITS", "off")
        .env_remove("USHER_MASTER_KEY")
        .spawn()
        .expect("start usher");
    let url = common::listening(&mut child);
    (child, url)
}

fn kill(mut child: Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
}

async fn call(
    client: &Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap_or(Value::Null)
}

async fn signup(client: &Client, base: &str, email: &str) -> Value {
    call(
        client,
        reqwest::Method::POST,
        format!("{base}/v1/auth/signup"),
        None,
        Some(json!({"email": email, "password": PASSWORD, "name": "Buyer"})),
    )
    .await
}

fn emails(dir: &PathBuf, subject: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                // Delivered mail only: a kill between writing and renaming leaves a
                // hidden `.tmp`, which no reader of the folder takes for a message.
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .filter(|e| {
                    std::fs::read_to_string(e.path()).is_ok_and(|text| text.contains(subject))
                })
                .count()
        })
        .unwrap_or(0)
}

on_each_engine! {
    async fn killing_the_server_while_it_cancels_an_event_loses_and_repeats_nothing(engine) {
        let url = engine.fresh_database_url().await;
        let mail_dir = scratch_dir().join(format!("crash-mail-{engine:?}"));
        let (child, base) = serve(&url, &mail_dir);
        let client = Client::new();
        let post = reqwest::Method::POST;
        // An admin, an organizer, an event with one performance, and buyers who pay.
        let admin = signup(&client, &base, "admin@example.com").await;
        let organizer = signup(&client, &base, "org@example.com").await;
        let admin_token = admin["access_token"].as_str().unwrap();
        call(&client, reqwest::Method::PATCH, format!("{base}/v1/admin/users/{}", organizer["user"]["id"].as_str().unwrap()), Some(admin_token), Some(json!({"role": "organizer"}))).await;
        let organizer = call(&client, post.clone(), format!("{base}/v1/auth/login"), None, Some(json!({"email": "org@example.com", "password": PASSWORD}))).await;
        let org_token = organizer["access_token"].as_str().unwrap().to_owned();
        let event = call(&client, post.clone(), format!("{base}/v1/events"), Some(&org_token), Some(json!({"title": "Doomed Night"}))).await;
        let event_id = event["id"].as_str().unwrap().to_owned();
        call(&client, reqwest::Method::PATCH, format!("{base}/v1/events/{event_id}"), Some(&org_token), Some(json!({"status": "published"}))).await;
        let starts = (chrono::Utc::now() + chrono::Duration::days(7)).to_rfc3339();
        let performance = call(&client, post.clone(), format!("{base}/v1/events/{event_id}/performances"), Some(&org_token), Some(json!({
            "starts_at": starts,
            "seating": {"kind": "general", "ticket_types": [{"name": "Floor", "price": {"amount": 2500, "currency": "EUR"}, "capacity": 100}]}
        }))).await;
        let ticket_type = performance["ticket_types"][0]["id"].as_str().unwrap().to_owned();
        for i in 0..BUYERS {
            let buyer = signup(&client, &base, &format!("buyer{i}@example.com")).await;
            let token = buyer["access_token"].as_str().unwrap().to_owned();
            let booking = call(&client, post.clone(), format!("{base}/v1/bookings"), Some(&token), Some(json!({
                "performance_id": performance["id"], "ticket_type_id": ticket_type, "quantity": 2
            }))).await;
            // Every third buyer only holds; the others pay.
            if i % 3 != 0 {
                let checkout = call(&client, post.clone(), format!("{base}/v1/bookings/{}/checkout", booking["id"].as_str().unwrap()), Some(&token), Some(json!({}))).await;
                let paid = call(&client, post.clone(), format!("{base}/v1/payments/mock/{}/complete", checkout["payment_id"].as_str().unwrap()), Some(&token), Some(json!({"outcome": "succeeded"}))).await;
                assert_eq!(paid["status"], "confirmed");
            }
        }
        let paying = BUYERS - BUYERS.div_ceil(3);
        call(&client, reqwest::Method::PATCH, format!("{base}/v1/events/{event_id}"), Some(&org_token), Some(json!({"status": "cancelled"}))).await;

        // Kill it at different moments of the work, restarting each time.
        let mut child = child;
        let mut base = base;
        for delay_ms in [300u64, 60, 120, 250, 1_300] {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            kill(child);
            (child, base) = serve(&url, &mail_dir);
        }
        // The last instance finishes the work.
        let deadline = Instant::now() + Duration::from_secs(60);
        let sales = loop {
            let sales = call(&client, reqwest::Method::GET, format!("{base}/v1/events/{event_id}/sales"), Some(&org_token), None).await;
            let done = sales["performances"][0]["cancellation_complete"] == true
                && emails(&mail_dir, "Subject: Cancelled: Doomed Night") >= paying;
            if done || Instant::now() > deadline {
                break sales;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let row = &sales["performances"][0];
        assert_eq!(row["cancellation_complete"], true, "{row}");
        assert_eq!((row["available"].as_u64(), row["held"].as_u64(), row["sold"].as_u64()), (Some(100), Some(0), Some(0)), "{row}");
        assert_eq!(row["bookings"]["refunds_done"].as_u64(), Some(paying as u64), "{row}");
        // Exactly once: one refund job per payment, one cancellation email per buyer.
        let done = call(&client, reqwest::Method::GET, format!("{base}/v1/admin/jobs?state=done"), Some(admin_token), None).await;
        let refunds = done["items"].as_array().unwrap().iter().filter(|j| j["kind"] == "refund").count();
        assert_eq!(refunds, paying, "one refund per payment");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(emails(&mail_dir, "Subject: Cancelled: Doomed Night"), paying, "one email per buyer");
        // A confirmation email not yet sent when the event was cancelled is not sent:
        // "your tickets" for a refunded booking would be wrong.
        assert!(emails(&mail_dir, "Subject: Your tickets for Doomed Night") <= paying);
        kill(child);
    }
}
