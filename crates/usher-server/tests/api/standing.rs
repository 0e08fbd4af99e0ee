//! Every request is authorized against the account and session as they are now, not
//! against what the access token said when it was issued: demotions, disabled accounts,
//! logouts and revoked sessions take effect on the next request, on every instance.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use usher_testkit::{Engine, on_each_engine};

use crate::helpers::{PASSWORD, Session, TestApp, assert_problem, spawn_app};

async fn set(app: &TestApp, admin: &Session, user: &Session, body: Value) -> Value {
    let response = app
        .patch(
            &format!("/v1/admin/users/{}", user.id),
            Some(&admin.access),
            body,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn role_of(app: &TestApp, token: &str) -> Value {
    let me = app.get("/v1/me", Some(token)).await;
    assert_eq!(me.status(), StatusCode::OK);
    me.json::<Value>().await.unwrap()["role"].clone()
}

on_each_engine! {
    async fn a_demoted_admin_is_refused_admin_work_on_the_next_request(engine) {
        let app = spawn_app(engine).await;
        let root = app.signup("root@example.com").await;
        let x = app.signup("x@example.com").await;
        let puppet = app.signup("puppet@example.com").await;
        set(&app, &root, &x, json!({"role": "admin"})).await;
        let x = app.login("x@example.com").await;
        // Admin work with X's token works while X is admin (and fills any cache).
        assert_eq!(app.get("/v1/admin/users", Some(&x.access)).await.status(), StatusCode::OK);

        set(&app, &root, &x, json!({"role": "customer"})).await;

        // The same, unexpired token now acts as the customer X is.
        assert_eq!(role_of(&app, &x.access).await, "customer");
        let promote = app.patch(&format!("/v1/admin/users/{}", puppet.id), Some(&x.access), json!({"role": "admin"})).await;
        assert_problem(promote, StatusCode::FORBIDDEN).await;
        let demote = app.patch(&format!("/v1/admin/users/{}", root.id), Some(&x.access), json!({"role": "customer"})).await;
        assert_problem(demote, StatusCode::FORBIDDEN).await;
        let credit = app
            .post(&format!("/v1/admin/wallets/{}/credit", x.id), Some(&x.access),
                  json!({"amount": {"amount": 99_900, "currency": "EUR"}, "reason": "mine"}))
            .await;
        assert_problem(credit, StatusCode::FORBIDDEN).await;
        assert_problem(app.get("/v1/admin/users", Some(&x.access)).await, StatusCode::FORBIDDEN).await;
        // Nothing the refused requests asked for happened.
        assert_eq!(app.login("puppet@example.com").await.role, "customer");
        assert_eq!(role_of(&app, &root.access).await, "admin");
        let wallet: Value = app.get("/v1/wallet", Some(&x.access)).await.json().await.unwrap();
        assert_eq!(wallet["balances"], json!([]));
    }

    async fn a_demoted_organizer_can_no_longer_create_edit_or_read_sales(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, _) = app.cast().await;
        let event = app.create_event(&organizer, "Before the demotion").await;
        let event_path = format!("/v1/events/{}", event["id"].as_str().unwrap());
        assert_eq!(app.get(&format!("{event_path}/sales"), Some(&organizer.access)).await.status(), StatusCode::OK);

        set(&app, &admin, &organizer, json!({"role": "customer"})).await;

        let create = app
            .post("/v1/events", Some(&organizer.access), json!({"title": "After", "description": "d", "venue": "v"}))
            .await;
        assert_problem(create, StatusCode::FORBIDDEN).await;
        let edit = app.patch(&event_path, Some(&organizer.access), json!({"title": "Renamed"})).await;
        assert_problem(edit, StatusCode::FORBIDDEN).await;
        let sales = app.get(&format!("{event_path}/sales"), Some(&organizer.access)).await;
        assert_problem(sales, StatusCode::FORBIDDEN).await;
        let unchanged: Value = app.get(&event_path, Some(&admin.access)).await.json().await.unwrap();
        assert_eq!(unchanged["title"], "Before the demotion");
    }

    async fn logout_ends_the_access_token_with_its_session(engine) {
        let app = spawn_app(engine).await;
        app.signup("first@example.com").await;
        let ann = app.signup("ann@example.com").await;
        let laptop = app.login("ann@example.com").await;
        assert_eq!(app.get("/v1/me", Some(&ann.access)).await.status(), StatusCode::OK);
        let out = app.post("/v1/auth/logout", Some(&ann.access), json!({"refresh_token": ann.refresh})).await;
        assert_eq!(out.status(), StatusCode::NO_CONTENT);
        let after = assert_problem(app.get("/v1/me", Some(&ann.access)).await, StatusCode::UNAUTHORIZED).await;
        assert!(after["detail"].as_str().unwrap().contains("session has ended"), "{after}");
        let refresh = app.post("/v1/auth/refresh", None, json!({"refresh_token": ann.refresh})).await;
        assert_problem(refresh, StatusCode::UNAUTHORIZED).await;
        // The other session of the same account goes on.
        assert_eq!(app.get("/v1/me", Some(&laptop.access)).await.status(), StatusCode::OK);
        // Logging out a lost phone from the laptop ends the phone's session only.
        let phone = app.login("ann@example.com").await;
        let out = app.post("/v1/auth/logout", Some(&laptop.access), json!({"refresh_token": phone.refresh})).await;
        assert_eq!(out.status(), StatusCode::NO_CONTENT);
        assert_problem(app.get("/v1/me", Some(&phone.access)).await, StatusCode::UNAUTHORIZED).await;
        assert_eq!(app.get("/v1/me", Some(&laptop.access)).await.status(), StatusCode::OK);
        // An unknown refresh token ends nothing (and is no error).
        let unknown = app.post("/v1/auth/logout", Some(&laptop.access), json!({"refresh_token": "made-up"})).await;
        assert_eq!(unknown.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.get("/v1/me", Some(&laptop.access)).await.status(), StatusCode::OK);
    }

    async fn a_replayed_refresh_token_ends_the_access_tokens_of_its_session(engine) {
        let app = spawn_app(engine).await;
        let ann = app.signup("ann@example.com").await;
        let rotated = app.post("/v1/auth/refresh", None, json!({"refresh_token": ann.refresh})).await;
        assert_eq!(rotated.status(), StatusCode::OK);
        let rotated: Value = rotated.json().await.unwrap();
        let current = rotated["access_token"].as_str().unwrap();
        assert_eq!(app.get("/v1/me", Some(current)).await.status(), StatusCode::OK);
        // Somebody replays the first refresh token: the whole session is revoked, and
        // with it the access tokens issued in it, old and new.
        let replay = app.post("/v1/auth/refresh", None, json!({"refresh_token": ann.refresh})).await;
        assert_problem(replay, StatusCode::UNAUTHORIZED).await;
        assert_problem(app.get("/v1/me", Some(current)).await, StatusCode::UNAUTHORIZED).await;
        assert_problem(app.get("/v1/me", Some(&ann.access)).await, StatusCode::UNAUTHORIZED).await;
    }

    async fn a_disabled_account_is_refused_everywhere_until_enabled(engine) {
        let app = spawn_app(engine).await;
        let admin = app.signup("admin@example.com").await;
        let ann = app.signup("ann@example.com").await;
        assert_eq!(app.get("/v1/me", Some(&ann.access)).await.status(), StatusCode::OK);

        let disabled = set(&app, &admin, &ann, json!({"disabled": true})).await;
        assert_eq!(disabled["disabled"], true);
        let me = assert_problem(app.get("/v1/me", Some(&ann.access)).await, StatusCode::UNAUTHORIZED).await;
        assert!(me["detail"].as_str().unwrap().contains("disabled"), "{me}");
        let refresh = app.post("/v1/auth/refresh", None, json!({"refresh_token": ann.refresh})).await;
        assert_problem(refresh, StatusCode::UNAUTHORIZED).await;
        // The right password learns that the account is disabled; a wrong one learns
        // nothing more than for any account.
        let login = app.post("/v1/auth/login", None, json!({"email": "ann@example.com", "password": PASSWORD})).await;
        assert_problem(login, StatusCode::FORBIDDEN).await;
        let wrong = app.post("/v1/auth/login", None, json!({"email": "ann@example.com", "password": "not the password"})).await;
        assert_problem(wrong, StatusCode::UNAUTHORIZED).await;
        // Admins cannot disable themselves; the change is in the audit log.
        let own = app.patch(&format!("/v1/admin/users/{}", admin.id), Some(&admin.access), json!({"disabled": true})).await;
        assert_problem(own, StatusCode::CONFLICT).await;
        let audit: Value = app.get("/v1/admin/audit", Some(&admin.access)).await.json().await.unwrap();
        assert!(audit["items"].as_array().unwrap().iter().any(|e| e["action"] == "user.disabled"), "{audit}");
        let nothing = app.patch(&format!("/v1/admin/users/{}", ann.id), Some(&admin.access), json!({})).await;
        assert_problem(nothing, StatusCode::UNPROCESSABLE_ENTITY).await;

        let enabled = set(&app, &admin, &ann, json!({"disabled": false})).await;
        assert_eq!(enabled["disabled"], false);
        // Both at once, in one change: an organizer, disabled; then enabled again.
        let both = set(&app, &admin, &ann, json!({"role": "organizer", "disabled": true})).await;
        assert_eq!((both["role"].as_str(), both["disabled"].as_bool()), (Some("organizer"), Some(true)));
        let bad = app
            .patch(&format!("/v1/admin/users/{}", ann.id), Some(&admin.access), json!({"role": "root", "disabled": false}))
            .await;
        assert_problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await;
        let still: Value = app.get("/v1/admin/users?q=ann%40", Some(&admin.access)).await.json().await.unwrap();
        assert_eq!(still["items"][0]["disabled"], true, "a refused change changes nothing");
        let enabled = set(&app, &admin, &ann, json!({"disabled": false})).await;
        assert_eq!((enabled["role"].as_str(), enabled["disabled"].as_bool()), (Some("organizer"), Some(false)));
        // Old sessions stay ended; a fresh sign-in works.
        assert_problem(app.get("/v1/me", Some(&ann.access)).await, StatusCode::UNAUTHORIZED).await;
        let again = app.login("ann@example.com").await;
        assert_eq!(app.get("/v1/me", Some(&again.access)).await.status(), StatusCode::OK);
    }
}

/// Two instances on one PostgreSQL database: a demotion through one reaches the other
/// through the database's notifications, well before the other's memory of the answer
/// runs out ([`usher_server::access::REMEMBERED_FOR`]). (SQLite runs one instance.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demotion_on_one_instance_is_refused_at_once_on_another() {
    let one = spawn_app(Engine::Postgres).await;
    let two = one.restart().await;
    let root = one.signup("root@example.com").await;
    let x = one.signup("x@example.com").await;
    set(&one, &root, &x, json!({"role": "admin"})).await;
    let x = one.login("x@example.com").await;
    // Instance two remembers that X is admin.
    assert_eq!(
        two.get("/v1/admin/users", Some(&x.access)).await.status(),
        StatusCode::OK
    );
    let demoted_at = Instant::now();
    set(&one, &root, &x, json!({"role": "customer"})).await;
    refused_soon(
        &two,
        "/v1/admin/users",
        &x.access,
        StatusCode::FORBIDDEN,
        demoted_at,
    )
    .await;
    // The same for a logout.
    let out = one
        .post(
            "/v1/auth/logout",
            Some(&x.access),
            json!({"refresh_token": x.refresh}),
        )
        .await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    refused_soon(
        &two,
        "/v1/me",
        &x.access,
        StatusCode::UNAUTHORIZED,
        Instant::now(),
    )
    .await;
}

/// Polls `path` with `token` on `app` until it answers `refused`, allowing only 200
/// meanwhile, and fails unless that happens within half of how long an instance
/// remembers an answer after `since`: only the notification can be that quick.
async fn refused_soon(app: &TestApp, path: &str, token: &str, refused: StatusCode, since: Instant) {
    let deadline = since + usher_server::access::REMEMBERED_FOR / 2;
    loop {
        let status = app.get(path, Some(token)).await.status();
        if status == refused {
            return;
        }
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            Instant::now() < deadline,
            "{path}: the other instance still took the token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
