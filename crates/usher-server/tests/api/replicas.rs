//! Public reads from a streaming replica (`DATABASE_READ_URL`): a real replica made
//! with `pg_basebackup -R` from a cluster of this test's own; paused, lagging and
//! stopped while the instances answer.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use usher_testkit::PgCluster;

use crate::helpers::*;

/// Titles of the published events an anonymous visitor sees.
async fn public_titles(app: &TestApp) -> Vec<String> {
    let response = app.get("/v1/events?limit=100", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits (at most 20 s) until `check` holds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_reads_go_to_the_replica_and_skip_it_when_it_lags_or_stops() {
    let primary = PgCluster::private("replicated-primary");
    let url = primary.create_database().await;
    let name = url.rsplit('/').next().unwrap().to_owned();
    // The schema first, so the copy starts with it.
    drop(usher_testkit::Engine::Postgres.open(&url).await);
    let replica = primary.start_replica("replicated-standby");
    let patient =
        spawn_app_with_replica(&url, replica.replica_store(&name), Duration::from_secs(60)).await;
    let (_, organizer, customer) = patient.cast().await;
    let performance = on_sale(&patient, &organizer, rows(&[4]), 4).await;
    let performance_id = performance["id"].as_str().unwrap().to_owned();
    eventually("the replica takes public reads", async || {
        patient.state.reads().on_replica() && public_titles(&patient).await == ["On Sale"]
    })
    .await;

    // Replay paused: the replica stands still while the primary moves on.
    replica.run_admin("SELECT pg_wal_replay_pause()").await;
    let late = patient.create_event(&organizer, "Late").await;
    let late_id = late["id"].as_str().unwrap();
    patient.publish(&organizer, late_id).await;
    // Within the allowed lag, visitors read the replica: not there yet.
    assert!(patient.state.reads().on_replica());
    assert_eq!(public_titles(&patient).await, ["On Sale"]);
    let detail = patient.get(&format!("/v1/events/{late_id}"), None).await;
    assert_eq!(detail.status(), StatusCode::NOT_FOUND);
    // Its organizer reads the primary: their own change shows at once.
    let mine = patient
        .get("/v1/events?mine=true", Some(&organizer.access))
        .await;
    let mine: Value = mine.json().await.unwrap();
    assert_eq!(mine["items"].as_array().unwrap().len(), 2);
    let own = patient
        .get(&format!("/v1/events/{late_id}"), Some(&organizer.access))
        .await;
    assert_eq!(own.status(), StatusCode::OK);
    // Writes go to the primary whatever the replica does.
    let ids = unit_ids(&patient, &performance_id).await;
    let hold = patient
        .post(
            "/v1/bookings",
            Some(&customer.access),
            json!({"performance_id": performance_id, "unit_ids": [ids[0]]}),
        )
        .await;
    assert_eq!(hold.status(), StatusCode::CREATED);
    // The performance's counts: a visitor reads the replica (from before the hold), its
    // organizer the primary.
    let available = async |token: Option<&str>| -> u64 {
        let response = patient
            .get(&format!("/v1/performances/{performance_id}"), token)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let view: Value = response.json().await.unwrap();
        view["available"].as_u64().unwrap()
    };
    assert_eq!(available(None).await, 4);
    assert_eq!(available(Some(&organizer.access)).await, 3);

    // An instance that allows less lag skips the same replica and reads the primary.
    let strict = patient
        .sibling_with_replica(replica.replica_store(&name), Duration::from_millis(300))
        .await;
    eventually("the lagging replica is skipped", async || {
        let mut titles = public_titles(&strict).await;
        titles.sort();
        titles == ["Late", "On Sale"]
    })
    .await;
    assert!(!strict.state.reads().on_replica());

    // Replay resumed: the replica catches up and takes the strict instance's reads too.
    replica.run_admin("SELECT pg_wal_replay_resume()").await;
    eventually("the replica catches up", async || {
        strict.state.reads().on_replica() && public_titles(&patient).await.len() == 2
    })
    .await;

    // The replica stopped mid-run: visitors keep getting answers, from the primary.
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = {
        let (address, client) = (patient.address.clone(), patient.client.clone());
        let (stopped, reads) = (stopped.clone(), reads.clone());
        let paths = [
            "/v1/events".to_owned(),
            format!("/v1/events/{late_id}"),
            format!("/v1/performances/{performance_id}/seats"),
        ];
        tokio::spawn(async move {
            // (path, whether the replica had been stopped before the read, status)
            let mut answers = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while answers.iter().filter(|(_, after, _)| *after).count() < 30
                && Instant::now() < deadline
            {
                for path in &paths {
                    let after = stopped.load(std::sync::atomic::Ordering::SeqCst);
                    let response = client.get(format!("{address}{path}")).send().await.unwrap();
                    answers.push((path.clone(), after, response.status()));
                    reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            answers
        })
    };
    eventually("visitors read while the replica runs", async || {
        reads.load(std::sync::atomic::Ordering::SeqCst) >= 15
    })
    .await;
    replica.stop_for_now();
    stopped.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers = reader.await.unwrap();
    let after = answers.iter().filter(|(_, after, _)| *after).count();
    assert!(answers.len() - after >= 15 && after >= 30, "{answers:?}");
    for (path, _, status) in answers {
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    eventually("the stopped replica is skipped", async || {
        !patient.state.reads().on_replica()
    })
    .await;
    let mut titles = public_titles(&patient).await;
    titles.sort();
    assert_eq!(titles, ["Late", "On Sale"]);
    let seats = patient
        .get(&format!("/v1/performances/{performance_id}/seats"), None)
        .await;
    assert_eq!(seats.status(), StatusCode::OK);
    let second = patient
        .post(
            "/v1/bookings",
            Some(&customer.access),
            json!({"performance_id": performance_id, "unit_ids": [ids[1]]}),
        )
        .await;
    assert_eq!(second.status(), StatusCode::CREATED);
}
