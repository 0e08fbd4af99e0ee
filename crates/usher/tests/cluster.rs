//! Three `usher serve` processes on one PostgreSQL and one Redis, as deployed: a flash
//! sale sent round-robin through them (clients behind a trusted proxy, limits on),
//! Redis killed in the middle and brought back. Afterwards: the invariants hold,
//! nothing answered 5xx, a watcher on each instance ends with the store's counts, and
//! each instance says Redis is back.

use std::collections::HashMap;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use usher_testkit::redis::RedisServer;
use usher_testkit::{Engine, invariants, scratch_dir};

mod common;

const PASSWORD: &str = "correct horse battery";
const INSTANCES: usize = 3;
const BUYERS: usize = 48;
const SEATS: usize = 30;

struct Instance {
    child: Child,
    base: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(database_url: &str, redis_url: &str, key: &str) -> Instance {
    let mut child = common::usher_serve(database_url)
        .env("REDIS_URL", redis_url)
        .env("USHER_MASTER_KEY", key)
        .env(
            "USHER_JWT_SECRET",
            "a shared signing key for the three instances",
        )
        .env("USHER_TRUSTED_PROXIES", "127.0.0.1")
        .env("USHER_MAIL_DIR", scratch_dir().join("cluster-mail"))
        .spawn()
        .expect("start usher");
    let base = common::listening(&mut child);
    Instance { child, base }
}

/// Sends a request as a client at `ip` behind the trusted proxy; counts any 5xx.
async fn send(
    client: &Client,
    ip: &str,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
    errors: &AtomicUsize,
) -> (StatusCode, Value) {
    let mut request = client.request(method, url).header("x-forwarded-for", ip);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("a response");
    let status = response.status();
    if status.is_server_error() {
        errors.fetch_add(1, Ordering::Relaxed);
    }
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_database_one_redis_that_dies_and_returns() {
    let database_url = Engine::Postgres.fresh_database_url().await;
    let mut redis = RedisServer::start();
    let key = "11".repeat(32);
    let instances: Vec<Instance> = (0..INSTANCES)
        .map(|_| serve(&database_url, &redis.url(), &key))
        .collect();
    let bases: Arc<Vec<String>> = Arc::new(instances.iter().map(|i| i.base.clone()).collect());
    let client = Client::new();
    let errors = Arc::new(AtomicUsize::new(0));
    let post = reqwest::Method::POST;
    let patch = reqwest::Method::PATCH;

    // The organizer's set-up, each step through a different instance.
    let (_, admin) = send(
        &client,
        "10.0.0.1",
        post.clone(),
        format!("{}/v1/auth/signup", bases[0]),
        None,
        Some(json!({"email": "admin@example.com", "password": PASSWORD, "name": "Admin"})),
        &errors,
    )
    .await;
    let (_, organizer) = send(
        &client,
        "10.0.0.2",
        post.clone(),
        format!("{}/v1/auth/signup", bases[1]),
        None,
        Some(json!({"email": "org@example.com", "password": PASSWORD, "name": "Org"})),
        &errors,
    )
    .await;
    let (status, _) = send(
        &client,
        "10.0.0.1",
        patch.clone(),
        format!(
            "{}/v1/admin/users/{}",
            bases[2],
            organizer["user"]["id"].as_str().unwrap()
        ),
        admin["access_token"].as_str(),
        Some(json!({"role": "organizer"})),
        &errors,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, organizer) = send(
        &client,
        "10.0.0.2",
        post.clone(),
        format!("{}/v1/auth/login", bases[0]),
        None,
        Some(json!({"email": "org@example.com", "password": PASSWORD})),
        &errors,
    )
    .await;
    let org = organizer["access_token"].as_str().unwrap().to_owned();
    let (_, event) = send(
        &client,
        "10.0.0.2",
        post.clone(),
        format!("{}/v1/events", bases[1]),
        Some(&org),
        Some(json!({"title": "Flash"})),
        &errors,
    )
    .await;
    let event_id = event["id"].as_str().unwrap().to_owned();
    send(
        &client,
        "10.0.0.2",
        patch,
        format!("{}/v1/events/{event_id}", bases[2]),
        Some(&org),
        Some(json!({"status": "published"})),
        &errors,
    )
    .await;
    let starts = (chrono::Utc::now() + chrono::Duration::days(7)).to_rfc3339();
    let (status, performance) = send(&client, "10.0.0.2", post.clone(), format!("{}/v1/events/{event_id}/performances", bases[0]), Some(&org), Some(json!({
        "starts_at": starts, "max_per_booking": 4,
        "seating": {"kind": "reserved", "sections": [{"name": "Stalls", "price": {"amount": 4500, "currency": "EUR"},
            "rows": [{"label": "A", "seats": 10}, {"label": "B", "seats": 10}, {"label": "C", "seats": 10}]}]}
    })), &errors).await;
    assert_eq!(status, StatusCode::CREATED);
    let performance_id = performance["id"].as_str().unwrap().to_owned();
    let seats: Value = client
        .get(format!(
            "{}/v1/performances/{performance_id}/seats",
            bases[1]
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let units: Arc<Vec<String>> = Arc::new(
        seats["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect(),
    );
    assert_eq!(units.len(), SEATS);

    // A watcher on each instance.
    let mut watchers = Vec::new();
    for base in bases.iter() {
        let url = format!(
            "{}/v1/performances/{performance_id}/live",
            base.replacen("http://", "ws://", 1)
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let first = socket.next().await.unwrap().unwrap();
        assert!(matches!(&first, Message::Text(t) if t.contains("\"snapshot\"")));
        watchers.push(socket);
    }

    // The sale: each buyer signs up, then tries seats until one holds (or all are
    // gone), and pays for what it holds; requests go round-robin over the instances.
    let round = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for buyer in 0..BUYERS {
        let (client, bases, units, errors, round) = (
            client.clone(),
            bases.clone(),
            units.clone(),
            errors.clone(),
            round.clone(),
        );
        let performance_id = performance_id.clone();
        tasks.spawn(async move {
            let ip = format!("10.1.{}.{}", buyer / 200, buyer % 200 + 1);
            let next = || bases[round.fetch_add(1, Ordering::Relaxed) % bases.len()].clone();
            let (status, session) = send(&client, &ip, reqwest::Method::POST, format!("{}/v1/auth/signup", next()), None,
                Some(json!({"email": format!("buyer{buyer}@example.com"), "password": PASSWORD, "name": "Buyer"})), &errors).await;
            assert_eq!(status, StatusCode::CREATED);
            let token = session["access_token"].as_str().unwrap().to_owned();
            let mut bookings = Vec::new();
            for attempt in 0..SEATS {
                let unit = &units[(buyer * 7 + attempt * 11) % SEATS];
                let (status, booking) = send(&client, &ip, reqwest::Method::POST, format!("{}/v1/bookings", next()), Some(&token),
                    Some(json!({"performance_id": performance_id, "unit_ids": [unit]})), &errors).await;
                match status {
                    StatusCode::CREATED => {
                        let id = booking["id"].as_str().unwrap().to_owned();
                        bookings.push(id.clone());
                        let (status, checkout) = send(&client, &ip, reqwest::Method::POST, format!("{}/v1/bookings/{id}/checkout", next()), Some(&token), Some(json!({})), &errors).await;
                        if status == StatusCode::OK && buyer % 2 == 0 {
                            send(&client, &ip, reqwest::Method::POST, format!("{}/v1/payments/mock/{}/complete", next(), checkout["payment_id"].as_str().unwrap()),
                                Some(&token), Some(json!({"outcome": "succeeded"})), &errors).await;
                        }
                        break;
                    }
                    StatusCode::TOO_MANY_REQUESTS => tokio::time::sleep(Duration::from_millis(500)).await,
                    StatusCode::CONFLICT => {}
                    other => panic!("a hold answered {other}: {booking}"),
                }
            }
            bookings
        });
        if buyer == BUYERS / 3 {
            // Redis dies a third of the way in.
            tokio::time::sleep(Duration::from_millis(300)).await;
            redis.kill();
        }
        if buyer == 2 * BUYERS / 3 {
            // ... and comes back a second later, with the sale still going.
            tokio::time::sleep(Duration::from_secs(1)).await;
            redis.resume();
        }
    }
    let mut bookings = Vec::new();
    while let Some(held) = tasks.join_next().await {
        bookings.extend(held.unwrap());
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "no request answered 5xx");
    assert!(
        bookings.len() >= SEATS.min(BUYERS) * 9 / 10,
        "the seats sold: {} of {SEATS}",
        bookings.len()
    );

    // The invariants, through the store itself.
    let store = Engine::Postgres.open(&database_url).await;
    let performance_uuid: uuid::Uuid = performance_id.parse().unwrap();
    let booking_ids: Vec<uuid::Uuid> = bookings.iter().map(|b| b.parse().unwrap()).collect();
    invariants::check_performance(
        store.as_ref(),
        performance_uuid.into(),
        &booking_ids,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    invariants::check_money(store.as_ref(), &booking_ids)
        .await
        .unwrap();

    // Every watcher ends with the store's counts, in seq order without gaps.
    let head = store.live_heads(&[performance_uuid.into()]).await.unwrap()[0].1;
    let now = chrono::Utc::now();
    let inventory = store.inventory(performance_uuid.into(), now).await.unwrap();
    let units = store.units(performance_uuid.into(), now).await.unwrap();
    for (i, socket) in watchers.iter_mut().enumerate() {
        let mut seq = 0;
        let mut states: HashMap<String, String> = HashMap::new();
        let mut last = Value::Null;
        while seq < head {
            let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .unwrap_or_else(|_| panic!("watcher {i} stalled at seq {seq} of {head}"))
                .unwrap()
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            last = serde_json::from_str(&text).unwrap();
            seq += 1;
            assert_eq!(last["seq"], seq, "watcher {i}: in order, without gaps");
            for change in last["changes"].as_array().unwrap() {
                states.insert(
                    change["unit_id"].as_str().unwrap().to_owned(),
                    change["state"].as_str().unwrap().to_owned(),
                );
            }
        }
        assert_eq!(
            (
                last["available"].as_u64(),
                last["held"].as_u64(),
                last["sold"].as_u64()
            ),
            (
                Some(inventory.total.available),
                Some(inventory.total.held),
                Some(inventory.total.sold)
            ),
            "watcher {i}"
        );
        // Seat by seat, what the changes told the watcher is what the store says (a
        // seat never mentioned is still available, as the snapshot showed it).
        assert!(!states.is_empty(), "watcher {i} was told of no seat");
        for unit in &units {
            let told = states
                .get(&unit.id.to_string())
                .map_or("available", String::as_str);
            assert_eq!(told, unit.state.as_str(), "watcher {i}: seat {}", unit.id);
        }
    }

    // Each instance says Redis is back (it retries at most a second apart).
    for base in bases.iter() {
        let mut up = false;
        for _ in 0..50 {
            client
                .get(format!("{base}/v1/events"))
                .header("x-forwarded-for", "10.9.9.9")
                .send()
                .await
                .unwrap();
            let metrics = client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if metrics.lines().any(|l| l == "usher_redis_up 1") {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(up, "{base} went back to Redis");
    }
    drop(instances);
}
