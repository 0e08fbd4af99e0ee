//! The binary killed with SIGKILL and started again on the same database, many times:
//! while it cancels an event with paying buyers (in the end every hold is released,
//! every payment refunded exactly once and every buyer emailed exactly once), and twenty
//! times in a flash sale with buyers holding and paying (after each restart the
//! invariants of DESIGN.md hold and nothing acknowledged is lost; in the end every
//! confirmed booking has exactly one confirmation email, delivered once).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};
use uuid::Uuid;

use usher_core::{BookingStatus, PageLimit};
use usher_store::JobState;
use usher_store::payments::job_kind;
use usher_testkit::{invariants, on_each_engine, scratch_dir};

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
        let sale = common::general_sale(&client, &base, "Doomed Night", 100).await;
        let (admin_token, org_token, event_id) = (sale.admin_token.as_str(), sale.organizer_token.clone(), sale.event_id.clone());
        let performance = json!({"id": sale.performance_id});
        let ticket_type = sale.ticket_type_id.clone();
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

const FLASH_BUYERS: usize = 16;
const KILLS: u64 = 20;
const FLASH_CAPACITY: u32 = 1_500;

/// Every booking ever made on the performance, from the store.
async fn every_booking(store: &dyn usher_store::Store, performance: Uuid) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .attendees(
                performance,
                None,
                chrono::Utc::now(),
                PageLimit::parse(Some(100)).unwrap(),
                after,
            )
            .await
            .unwrap();
        ids.extend(page.items.iter().map(|a| a.booking.id));
        match page.next {
            Some(next) => after = Some(next),
            None => return ids,
        }
    }
}

/// What the buyers were told, across every life of the server.
#[derive(Clone, Default)]
struct Told {
    /// Holds answered 201.
    holds: Vec<Uuid>,
    /// Payments answered 200 with the booking confirmed.
    confirmed: Vec<Uuid>,
}

/// One buyer for one life of the server: hold, pay, again, until the server dies or
/// the sale is over. Bounded: a handful of rounds, each request with a timeout.
async fn buy(
    client: Client,
    base: String,
    token: String,
    performance: String,
    ticket_type: String,
    told: Arc<Mutex<Told>>,
) {
    for _ in 0..4 {
        let Ok(response) = client.post(format!("{base}/v1/bookings")).bearer_auth(&token)
            .json(&json!({"performance_id": performance, "ticket_type_id": ticket_type, "quantity": 1}))
            .send().await else { return };
        if response.status() != reqwest::StatusCode::CREATED {
            return;
        }
        let Ok(booking) = response.json::<Value>().await else {
            return;
        };
        let id: Uuid = booking["id"].as_str().unwrap().parse().unwrap();
        told.lock().unwrap().holds.push(id);
        let Ok(checkout) = client
            .post(format!("{base}/v1/bookings/{id}/checkout"))
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await
        else {
            return;
        };
        let Ok(checkout) = checkout.json::<Value>().await else {
            return;
        };
        let Some(payment) = checkout["payment_id"].as_str() else {
            return;
        };
        let Ok(paid) = client
            .post(format!("{base}/v1/payments/mock/{payment}/complete"))
            .bearer_auth(&token)
            .json(&json!({"outcome": "succeeded"}))
            .send()
            .await
        else {
            return;
        };
        if paid.status() == reqwest::StatusCode::OK
            && let Ok(paid) = paid.json::<Value>().await
            && paid["status"] == "confirmed"
        {
            told.lock().unwrap().confirmed.push(id);
        }
    }
}

/// The invariants of DESIGN.md on the store, and nothing the buyers were told is lost.
async fn check_after_restart(
    store: &dyn usher_store::Store,
    performance: Uuid,
    told: &Told,
    life: u64,
) {
    let all = every_booking(store, performance).await;
    // Invariant 6's first half: the job is written with the confirmation, so every
    // confirmed booking has exactly one, whatever moment the kill came.
    let (jobs, _) = confirmation_jobs(store).await;
    for id in &all {
        let confirmed =
            store.booking(*id).await.unwrap().unwrap().status == BookingStatus::Confirmed;
        assert_eq!(
            jobs.get(id).copied().unwrap_or(0),
            usize::from(confirmed),
            "after kill {life}: confirmation jobs of {id}"
        );
    }
    invariants::check_performance(store, performance, &all, chrono::Utc::now())
        .await
        .unwrap_or_else(|e| panic!("after kill {life}: {e}"));
    invariants::check_money(store, &all)
        .await
        .unwrap_or_else(|e| panic!("after kill {life}: {e}"));
    for id in &told.holds {
        assert!(
            store.booking(*id).await.unwrap().is_some(),
            "after kill {life}: acknowledged hold {id} is gone"
        );
    }
    for id in &told.confirmed {
        let booking = store
            .booking(*id)
            .await
            .unwrap()
            .expect("confirmed booking");
        assert_eq!(
            booking.status,
            BookingStatus::Confirmed,
            "after kill {life}: {id}"
        );
    }
}

/// Confirmation email jobs per booking, whatever their state.
async fn confirmation_jobs(store: &dyn usher_store::Store) -> (HashMap<Uuid, usize>, usize) {
    // The running server moves jobs between states while we read them one state at a
    // time: a job is counted once, in the last state it was seen in.
    let mut jobs: HashMap<Uuid, (Uuid, JobState)> = HashMap::new();
    for state in [
        JobState::Queued,
        JobState::Running,
        JobState::Done,
        JobState::Dead,
    ] {
        for job in store.jobs(state, 10_000).await.unwrap() {
            if job.kind == job_kind::CONFIRMATION_EMAIL {
                let booking: Uuid = job.payload["booking_id"].as_str().unwrap().parse().unwrap();
                jobs.insert(job.id, (booking, state));
            }
        }
    }
    let mut per_booking = HashMap::new();
    for (booking, _) in jobs.values() {
        *per_booking.entry(*booking).or_insert(0) += 1;
    }
    let unfinished = jobs
        .values()
        .filter(|(_, state)| *state != JobState::Done)
        .count();
    (per_booking, unfinished)
}

on_each_engine! {
    async fn killing_the_server_twenty_times_in_a_flash_sale_loses_no_hold_no_payment_and_no_email(engine) {
        let url = engine.fresh_database_url().await;
        let store = engine.open(&url).await;
        let mail_dir = scratch_dir().join(format!("flash-mail-{engine:?}"));
        let (mut child, mut base) = serve(&url, &mail_dir);
        let client = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let sale = common::general_sale(&client, &base, "Flash Night", u64::from(FLASH_CAPACITY)).await;
        let performance_id = sale.performance_id.clone();
        let ticket_type = sale.ticket_type_id.clone();
        let mut tokens = Vec::new();
        for i in 0..FLASH_BUYERS {
            tokens.push(signup(&client, &base, &format!("flash{i}@example.com")).await["access_token"].as_str().unwrap().to_owned());
        }

        let told = Arc::new(Mutex::new(Told::default()));
        let started = Instant::now();
        let mut lives_with_buyers_in_flight = 0;
        for life in 1..=KILLS {
            let buyers: Vec<_> = tokens.iter().map(|token| tokio::spawn(buy(
                client.clone(), base.clone(), token.clone(), performance_id.clone(), ticket_type.clone(), told.clone(),
            ))).collect();
            // A different moment of the sale each time, from 80 to 640 ms in.
            tokio::time::sleep(Duration::from_millis(80 + (life * 173) % 560)).await;
            if buyers.iter().any(|b| !b.is_finished()) {
                lives_with_buyers_in_flight += 1;
            }
            kill(child);
            for buyer in buyers {
                buyer.await.unwrap();
            }
            (child, base) = serve(&url, &mail_dir);
            let snapshot = told.lock().unwrap().clone();
            check_after_restart(store.as_ref(), performance_id.parse().unwrap(), &snapshot, life).await;
        }
        let killed_for = started.elapsed();

        // The last life sends what the others left: one confirmation per confirmed
        // booking, delivered once.
        let all = every_booking(store.as_ref(), performance_id.parse().unwrap()).await;
        let mut confirmed = Vec::new();
        for id in &all {
            if store.booking(*id).await.unwrap().unwrap().status == BookingStatus::Confirmed {
                confirmed.push(*id);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, unfinished) = confirmation_jobs(store.as_ref()).await;
            let sent = emails(&mail_dir, "Subject: Your tickets for Flash Night");
            if (unfinished == 0 && sent >= confirmed.len()) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (per_booking, unfinished) = confirmation_jobs(store.as_ref()).await;
        assert_eq!(unfinished, 0, "confirmation emails left unsent");
        for id in &confirmed {
            assert_eq!(per_booking.get(id), Some(&1), "confirmed booking {id}: one confirmation job");
        }
        assert_eq!(per_booking.len(), confirmed.len(), "a confirmation job without a confirmed booking");
        // Delivery is at least once per job; a kill between writing the file and marking
        // the job done repeats it, and the idempotency key (the booking) keeps it one.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(emails(&mail_dir, "Subject: Your tickets for Flash Night"), confirmed.len(), "one email per confirmed booking");
        let told = told.lock().unwrap().clone();
        assert!(lives_with_buyers_in_flight >= KILLS * 3 / 4, "killed mid-sale only {lives_with_buyers_in_flight} times");
        eprintln!(
            "{engine:?}: {KILLS} kills ({lives_with_buyers_in_flight} with buyers in flight) in {killed_for:?}; {} holds and {} confirmations acknowledged, {} bookings, {} confirmed, all kept",
            told.holds.len(), told.confirmed.len(), all.len(), confirmed.len()
        );
        kill(child);
    }
}
