//! Rate limits (in-process and shared through a real Redis) and the live feed's fan-out
//! through Redis, including Redis dying and coming back.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use usher_testkit::on_each_engine;
use usher_testkit::redis::RedisServer;

use crate::helpers::*;
use crate::web::{CSRF, Jar, html};

/// A hold request that the handler refuses cheaply (no such performance): what counts
/// here is only whether the limit let it through — [`THROUGH`] if it did, 429 if not.
async fn hold_attempt(app: &TestApp, who: &Session) -> reqwest::Response {
    app.post(
        "/v1/bookings",
        Some(&who.access),
        json!({"performance_id": uuid::Uuid::now_v7(), "unit_ids": [uuid::Uuid::now_v7()]}),
    )
    .await
}

/// What [`hold_attempt`] answers when the limit lets it through: the handler's 422 (the
/// performance the body names does not exist).
const THROUGH: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;

/// After a full burst of holds through another instance since `started`, holds through
/// `app` are refused as soon as Redis's clock (which these tests cannot move) has not
/// refilled a token: at most one through per 500 ms since `started`, then a 429. An
/// instance with a bucket of its own would let ten through at once.
async fn refused_after_refills(app: &TestApp, who: &Session, started: Instant) {
    let mut through = 0u128;
    for _ in 0..100 {
        match hold_attempt(app, who).await.status() {
            StatusCode::TOO_MANY_REQUESTS => return,
            THROUGH => through += 1,
            other => panic!("{other}"),
        }
        let refilled = started.elapsed().as_millis() / 500 + 1;
        assert!(
            through <= refilled,
            "{through} through after {:?}: the bucket is not shared",
            started.elapsed()
        );
    }
    panic!("never refused in 100 holds ({through} through): the bucket is not shared");
}

on_each_engine! {
    async fn a_script_is_refused_and_told_when_to_come_back(engine) {
        let app = spawn_app_with(engine, |c| c.rate_limits = true).await;
        let (_, _, customer) = app.cast().await;
        let other = app.signup("other@example.com").await;
        let first = hold_attempt(&app, &customer).await;
        assert_eq!(first.status(), THROUGH);
        let policy = first.headers()["ratelimit-policy"].to_str().unwrap().to_owned();
        assert!(policy.contains("\"holds\";q=10;w=5"), "{policy}");
        assert!(first.headers().contains_key("ratelimit"));
        for _ in 1..10 {
            assert_eq!(hold_attempt(&app, &customer).await.status(), THROUGH);
        }
        let refused = hold_attempt(&app, &customer).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=5).contains(&retry_after), "{retry_after}");
        assert_eq!(refused.headers()["ratelimit"], "\"holds\";r=0;t=1");
        let problem = assert_problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
        assert_eq!(problem["type"], "/problems/rate-limited");
        // Somebody else is not held back by it, and reading is not a hold.
        assert_eq!(hold_attempt(&app, &other).await.status(), THROUGH);
        assert_eq!(app.get("/v1/events", Some(&customer.access)).await.status(), StatusCode::OK);
    }

    async fn guessing_one_accounts_password_is_limited_per_account(engine) {
        let app = spawn_app_with(engine, |c| c.rate_limits = true).await;
        // The sign-up is the first of the account's ten.
        app.signup("target@example.com").await;
        let guess = |email: &'static str| app.post("/v1/auth/login", None, json!({"email": email, "password": "wrong guess!"}));
        for _ in 0..9 {
            assert_eq!(guess("target@example.com").await.status(), StatusCode::UNAUTHORIZED);
        }
        let refused = guess("TARGET@example.com").await;
        assert_problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
        // Another account from the same address still gets its answer.
        assert_eq!(guess("someone@example.com").await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn padding_or_capitals_do_not_open_a_fresh_bucket_for_an_account(engine) {
        let app = spawn_app_with(engine, |c| c.rate_limits = true).await;
        app.signup("bf2@example.com").await;
        let guess = |email: String, password: &'static str| {
            app.post("/v1/auth/login", None, json!({"email": email, "password": password}))
        };
        for _ in 0..9 {
            assert_eq!(guess("bf2@example.com".into(), "wrong guess!").await.status(), StatusCode::UNAUTHORIZED);
        }
        // The account's bucket is empty: every way of writing its address meets it,
        // the right password included.
        for padded in ["  bf2@example.com", "bf2@example.com  ", "\tBF2@Example.com ", "bf2@example.com"] {
            let refused = guess(padded.into(), "wrong guess!").await;
            assert_problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
        }
        let right = guess("  bf2@example.com  ".into(), crate::helpers::PASSWORD).await;
        assert_problem(right, StatusCode::TOO_MANY_REQUESTS).await;
    }

    async fn the_pages_take_from_the_same_buckets_as_the_api(engine) {
        let app = spawn_app_with(engine, |c| c.rate_limits = true).await;
        let (_, _, customer) = app.cast().await;
        // The sign-up is the first of the account's ten; four guesses through the API
        // and five through the sign-in form are the rest.
        app.signup("paged@example.com").await;
        for _ in 0..4 {
            let guess = app.post("/v1/auth/login", None, json!({"email": "paged@example.com", "password": "wrong guess!"}));
            assert_eq!(guess.await.status(), StatusCode::UNAUTHORIZED);
        }
        let mut jar = Jar::anonymous();
        let fields = [("email", " Paged@Example.com"), ("password", "wrong guess!")];
        for _ in 0..5 {
            let response = app.form(&mut jar, "/login", &fields, Some(CSRF)).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        // The bucket is empty for the form, with a page that says so, and for the API.
        let response = app.form(&mut jar, "/login", &fields, Some(CSRF)).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let body = html(response).await;
        assert!(body.contains("Too many requests (auth limit)"), "{body}");
        let right = app.post("/v1/auth/login", None, json!({"email": "paged@example.com", "password": PASSWORD}));
        assert_problem(right.await, StatusCode::TOO_MANY_REQUESTS).await;
        // Signing up through the form is limited per account the same way.
        let fields = [("email", "paged@example.com"), ("name", "Paige"), ("password", PASSWORD)];
        let response = app.form(&mut jar, "/signup", &fields, Some(CSRF)).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);

        // A buyer's ten holds through the API leave none for the hold form; reading
        // pages is not a hold.
        for _ in 0..10 {
            assert_eq!(hold_attempt(&app, &customer).await.status(), THROUGH);
        }
        let mut jar = Jar::signed_in(&customer);
        let hold = format!("/performances/{}/hold", uuid::Uuid::now_v7());
        let fields = [("mode", "seats"), ("unit_ids", "x")];
        let response = app.form(&mut jar, &hold, &fields, Some(CSRF)).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(html(response).await.contains("Slow down"));
        assert_eq!(app.page(&mut jar, "/bookings").await.status(), StatusCode::OK);
        assert_eq!(hold_attempt(&app, &customer).await.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    async fn people_behind_one_address_each_refresh_their_own_session(engine) {
        let app = spawn_app_with(engine, |c| c.rate_limits = true).await;
        let mut people = Vec::new();
        for i in 0..15 {
            people.push(app.signup(&format!("nat{i}@example.com")).await);
        }
        // Fifteen people behind one NAT refresh, twice each: nobody is refused, since
        // each session has a limit of its own.
        for person in &mut people {
            for _ in 0..2 {
                let response = app.post("/v1/auth/refresh", None, json!({"refresh_token": person.refresh})).await;
                assert_eq!(response.status(), StatusCode::OK);
                let body: serde_json::Value = response.json().await.unwrap();
                person.refresh = body["refresh_token"].as_str().unwrap().to_owned();
                person.access = body["access_token"].as_str().unwrap().to_owned();
            }
        }
        for person in &people {
            let out = app.post("/v1/auth/logout", Some(&person.access), json!({"refresh_token": person.refresh})).await;
            assert_eq!(out.status(), StatusCode::NO_CONTENT);
        }
        // One session hammering refresh is still limited: its own bucket runs dry.
        let script = app.login("nat0@example.com").await;
        let mut token = script.refresh.clone();
        let mut refused = 0;
        for _ in 0..12 {
            let response = app.post("/v1/auth/refresh", None, json!({"refresh_token": token})).await;
            match response.status() {
                StatusCode::OK => {
                    let body: serde_json::Value = response.json().await.unwrap();
                    token = body["refresh_token"].as_str().unwrap().to_owned();
                }
                StatusCode::TOO_MANY_REQUESTS => refused += 1,
                other => panic!("{other}"),
            }
        }
        assert!(refused >= 1, "a session refreshing 12 times a minute was never limited");
    }

    async fn the_limits_read_bodies_and_tokens_without_changing_the_answers(engine) {
        let app = spawn_app_with(engine, |c| { c.rate_limits = true; c.max_body_bytes = 1024; }).await;
        // A sign-in body over the limit is 413, as without limits.
        let huge = json!({"email": "a@example.com", "password": "x".repeat(4096)});
        assert_problem(app.post("/v1/auth/login", None, huge).await, StatusCode::PAYLOAD_TOO_LARGE).await;
        // A bad token on a write is still the handler's 401; a good one still works.
        let (_, _, customer) = app.cast().await;
        let bad = app.post("/v1/bookings", Some("not-a-token"), json!({})).await;
        assert_problem(bad, StatusCode::UNAUTHORIZED).await;
        assert_eq!(hold_attempt(&app, &customer).await.status(), THROUGH);
    }

    async fn limits_are_shared_through_redis_and_survive_it_dying(engine) {
        let mut redis = RedisServer::start();
        let url = redis.url();
        let app = spawn_app_with(engine, |c| { c.rate_limits = true; c.redis_url = Some(url); }).await;
        let other = app.restart().await;
        let (_, _, customer) = app.cast().await;
        // Ten through one instance, then the other refuses: the bucket is shared.
        let started = Instant::now();
        for _ in 0..10 {
            assert_eq!(hold_attempt(&app, &customer).await.status(), THROUGH);
        }
        refused_after_refills(&other, &customer, started).await;

        // Redis dies: requests go on, limited in-process, never a 5xx.
        redis.kill();
        let someone = app.signup("someone@example.com").await;
        let mut statuses = Vec::new();
        for _ in 0..12 {
            statuses.push(hold_attempt(&app, &someone).await.status());
        }
        // The first go through; then the in-process limit refuses; nothing else (no 5xx).
        assert_eq!(statuses[0], THROUGH, "{statuses:?}");
        assert!(statuses.iter().all(|s| [THROUGH, StatusCode::TOO_MANY_REQUESTS].contains(s)), "{statuses:?}");
        assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "still limited in-process: {statuses:?}");
        assert!(!app.state.redis().unwrap().is_up());
        // (`usher_redis_up` says so too; metrics are per process, shared by these tests'
        // instances, so it is not asserted here.)

        // Redis is back: within a couple of seconds the limits are shared again.
        redis.resume();
        let back = Instant::now();
        let fresh = app.signup("fresh@example.com").await;
        while !app.state.redis().unwrap().is_up() {
            assert!(back.elapsed() < Duration::from_secs(10), "the link did not come back");
            let _ = app.get("/v1/events", None).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        while !other.state.redis().unwrap().is_up() {
            assert!(back.elapsed() < Duration::from_secs(10), "the other link did not come back");
            let _ = other.get("/v1/events", None).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let started = Instant::now();
        for _ in 0..10 {
            assert_eq!(hold_attempt(&other, &fresh).await.status(), THROUGH);
        }
        refused_after_refills(&app, &fresh, started).await;
    }

    async fn live_changes_fan_out_through_redis_and_without_it(engine) {
        let mut redis = RedisServer::start();
        let url = redis.url();
        let app = spawn_app_with(engine, |c| c.redis_url = Some(url)).await;
        let other = app.restart().await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[6]), 4).await;
        let id = performance["id"].as_str().unwrap();
        let ids = unit_ids(&app, id).await;
        let ws = other.url(&format!("/v1/performances/{id}/live")).replacen("http://", "ws://", 1);
        let (mut socket, _) = tokio_tungstenite::connect_async(ws).await.unwrap();
        let mut next = async || loop {
            let message = tokio::time::timeout(Duration::from_secs(5), socket.next()).await
                .expect("a message within 5 s").unwrap().unwrap();
            if let Message::Text(text) = message {
                return serde_json::from_str::<serde_json::Value>(&text).unwrap();
            }
        };
        assert_eq!(next().await["seq"], 0);
        let hold = |unit: &String| app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": id, "unit_ids": [unit]}));
        let mut seq = 0;
        for (i, unit) in ids.iter().enumerate() {
            if i == 2 {
                redis.kill();
            }
            if i == 4 {
                redis.resume();
            }
            assert_eq!(hold(unit).await.status(), StatusCode::CREATED, "holds never depend on Redis");
            seq += 1;
            let change = next().await;
            assert_eq!(change["seq"], seq);
            assert_eq!(change["changes"][0]["unit_id"], unit.as_str());
        }
    }
}
