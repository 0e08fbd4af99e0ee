use reqwest::StatusCode;
use serde_json::json;

use usher_core::Email;
use usher_testkit::on_each_engine;

use crate::helpers::{PASSWORD, assert_problem, invalid_fields, spawn_app, spawn_app_with};

on_each_engine! {
    async fn signup_returns_the_user_and_a_token_pair(engine) {
        let app = spawn_app(engine).await;
        let response = app
            .post("/v1/auth/signup", None, json!({"email": " Ann@Example.COM ", "password": PASSWORD, "name": "Ann"}))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["user"]["email"], "ann@example.com");
        assert_eq!(body["user"]["name"], "Ann");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 900);
        assert!(body["access_token"].as_str().unwrap().len() > 20);
        assert!(body["refresh_token"].as_str().unwrap().len() > 20);
        // The password is stored as an argon2id hash, never as given.
        let stored = app
            .store
            .credentials_by_email(&Email::parse("ann@example.com").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(stored.password_hash.starts_with("$argon2id$"));
        assert!(!stored.password_hash.contains(PASSWORD));
    }

    async fn first_account_is_admin_and_the_next_a_customer(engine) {
        let app = spawn_app(engine).await;
        assert_eq!(app.signup("first@example.com").await.role, "admin");
        assert_eq!(app.signup("second@example.com").await.role, "customer");
    }

    async fn configured_admin_email_is_admin_and_first_account_is_not(engine) {
        let app = spawn_app_with(engine, |c| {
            c.admin_email = Some(Email::parse("boss@example.com").unwrap());
        })
        .await;
        assert_eq!(app.signup("first@example.com").await.role, "customer");
        assert_eq!(app.signup("Boss@Example.com").await.role, "admin");
    }

    async fn signup_with_a_taken_email_is_409_whatever_its_case(engine) {
        let app = spawn_app(engine).await;
        app.signup("ann@example.com").await;
        let response = app
            .post("/v1/auth/signup", None, json!({"email": "ANN@example.com", "password": PASSWORD, "name": "Ann"}))
            .await;
        let body = assert_problem(response, StatusCode::CONFLICT).await;
        assert_eq!(body["type"], "/problems/email-taken");
    }

    async fn a_look_alike_of_an_existing_address_is_taken(engine) {
        let app = spawn_app(engine).await;
        let admin = app.signup("admin@example.com").await;
        app.signup("anna@example.com").await;
        // Cyrillic а (U+0430) for the Latin a, and the same with a decomposed ë.
        for look_alike in ["\u{0430}nna@example.com", "ann\u{0430}@EXAMPLE.com"] {
            let response = app
                .post("/v1/auth/signup", None, json!({"email": look_alike, "password": PASSWORD, "name": "Mallory"}))
                .await;
            let body = assert_problem(response, StatusCode::CONFLICT).await;
            assert_eq!(body["type"], "/problems/email-taken");
        }
        app.signup("zo\u{00EB}@example.com").await;
        let decomposed = app
            .post("/v1/auth/signup", None, json!({"email": "zoe\u{0308}@example.com", "password": PASSWORD, "name": "Z"}))
            .await;
        assert_problem(decomposed, StatusCode::CONFLICT).await;
        // The decomposed spelling signs in to the one account.
        app.login("ZOE\u{0308}@example.com").await;
        let users: serde_json::Value = app.get("/v1/admin/users", Some(&admin.access)).await.json().await.unwrap();
        assert_eq!(users["items"].as_array().unwrap().len(), 3, "{users}");
        // Names are text like titles: no overrides, something visible.
        let name = app
            .post("/v1/auth/signup", None, json!({"email": "bob@example.com", "password": PASSWORD, "name": "\u{202E}nimda"}))
            .await;
        assert_eq!(invalid_fields(name).await, ["name"]);
    }

    async fn signup_validation_names_each_bad_field_and_creates_nothing(engine) {
        let app = spawn_app(engine).await;
        let response = app
            .post("/v1/auth/signup", None, json!({"email": "nope", "password": "short", "name": " "}))
            .await;
        assert_eq!(invalid_fields(response).await, ["email", "password", "name"]);
        let missing = app.post("/v1/auth/signup", None, json!({"email": "a@example.com", "name": "A"})).await;
        assert_eq!(invalid_fields(missing).await, ["password"]);
        let wrong_type = app
            .post("/v1/auth/signup", None, json!({"email": "a@example.com", "password": 1234567890, "name": "A"}))
            .await;
        assert_eq!(invalid_fields(wrong_type).await, ["password"]);
        assert!(app.store.credentials_by_email(&Email::parse("a@example.com").unwrap()).await.unwrap().is_none());
        // Nothing was created, so the next account is still the first.
        assert_eq!(app.signup("a@example.com").await.role, "admin");
    }

    async fn login_answers_the_same_for_unknown_email_and_wrong_password(engine) {
        let app = spawn_app(engine).await;
        app.signup("ann@example.com").await;
        let ok = app.post("/v1/auth/login", None, json!({"email": "ANN@example.com", "password": PASSWORD})).await;
        assert_eq!(ok.status(), StatusCode::OK);

        let wrong = app.post("/v1/auth/login", None, json!({"email": "ann@example.com", "password": "wrong password!"})).await;
        let unknown = app.post("/v1/auth/login", None, json!({"email": "bob@example.com", "password": PASSWORD})).await;
        let malformed = app.post("/v1/auth/login", None, json!({"email": "bob", "password": PASSWORD})).await;
        let wrong = assert_problem(wrong, StatusCode::UNAUTHORIZED).await;
        let unknown = assert_problem(unknown, StatusCode::UNAUTHORIZED).await;
        let malformed = assert_problem(malformed, StatusCode::UNAUTHORIZED).await;
        assert_eq!(wrong, unknown);
        assert_eq!(wrong, malformed);
    }

    async fn me_needs_a_valid_token(engine) {
        let app = spawn_app(engine).await;
        let ann = app.signup("ann@example.com").await;
        let me = app.get("/v1/me", Some(&ann.access)).await;
        assert_eq!(me.status(), StatusCode::OK);
        let me: serde_json::Value = me.json().await.unwrap();
        assert_eq!(me["id"], ann.id.as_str());
        assert_eq!(me["email"], "ann@example.com");
        assert_eq!(me["role"], "admin");

        let anonymous = app.get("/v1/me", None).await;
        assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
        assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
        assert_problem(app.get("/v1/me", Some("garbage")).await, StatusCode::UNAUTHORIZED).await;
        let basic = app.client.get(app.url("/v1/me")).header("authorization", "Basic YTpi").send().await.unwrap();
        assert_problem(basic, StatusCode::UNAUTHORIZED).await;
        // A token signed by another server (another secret) is refused.
        let other = spawn_app(engine).await;
        let stranger = other.signup("ann@example.com").await;
        assert_problem(app.get("/v1/me", Some(&stranger.access)).await, StatusCode::UNAUTHORIZED).await;
    }

    async fn refresh_rotates_and_the_old_token_dies(engine) {
        let app = spawn_app(engine).await;
        let ann = app.signup("ann@example.com").await;
        let first = app.post("/v1/auth/refresh", None, json!({"refresh_token": ann.refresh})).await;
        assert_eq!(first.status(), StatusCode::OK);
        let first: serde_json::Value = first.json().await.unwrap();
        let new_refresh = first["refresh_token"].as_str().unwrap();
        assert_ne!(new_refresh, ann.refresh);
        let me = app.get("/v1/me", first["access_token"].as_str()).await;
        assert_eq!(me.status(), StatusCode::OK);

        let second = app.post("/v1/auth/refresh", None, json!({"refresh_token": new_refresh})).await;
        assert_eq!(second.status(), StatusCode::OK);
    }

    async fn reusing_a_rotated_refresh_token_revokes_the_whole_family(engine) {
        let app = spawn_app(engine).await;
        let ann = app.signup("ann@example.com").await;
        let other_device = app.login("ann@example.com").await;
        let rotated = app.post("/v1/auth/refresh", None, json!({"refresh_token": ann.refresh})).await;
        let rotated: serde_json::Value = rotated.json().await.unwrap();
        let current = rotated["refresh_token"].as_str().unwrap().to_owned();

        // The thief replays the old token: refused, and the family dies.
        let replay = app.post("/v1/auth/refresh", None, json!({"refresh_token": ann.refresh})).await;
        assert_problem(replay, StatusCode::UNAUTHORIZED).await;
        let legit = app.post("/v1/auth/refresh", None, json!({"refresh_token": current})).await;
        assert_problem(legit, StatusCode::UNAUTHORIZED).await;

        // Another login (another family) is untouched.
        let other = app.post("/v1/auth/refresh", None, json!({"refresh_token": other_device.refresh})).await;
        assert_eq!(other.status(), StatusCode::OK);
    }

    async fn a_refresh_retried_with_its_idempotency_key_replays_instead_of_signing_out(engine) {
        // The first answer is lost; the client retries with the same key. Without the
        // replay the old token would be presented twice, which looks like theft.
        let app = spawn_app(engine).await;
        let ann = app.signup("ann@example.com").await;
        let refresh = || {
            app.client
                .post(app.url("/v1/auth/refresh"))
                .header("idempotency-key", "refresh-1")
                .json(&json!({"refresh_token": ann.refresh}))
                .send()
        };
        let first: serde_json::Value = refresh().await.unwrap().json().await.unwrap();
        let retry = refresh().await.unwrap();
        assert_eq!(retry.status(), StatusCode::OK);
        assert_eq!(retry.headers()["idempotent-replayed"], "true");
        let retry: serde_json::Value = retry.json().await.unwrap();
        assert_eq!(retry["refresh_token"], first["refresh_token"]);
        let next = app.post("/v1/auth/refresh", None, json!({"refresh_token": retry["refresh_token"]})).await;
        assert_eq!(next.status(), StatusCode::OK, "the session is still alive");
    }

    async fn signup_with_an_idempotency_key_replays_the_first_answer(engine) {
        let app = spawn_app(engine).await;
        let signup = || {
            app.client
                .post(app.url("/v1/auth/signup"))
                .header("idempotency-key", "signup-1")
                .json(&json!({"email": "ann@example.com", "password": PASSWORD, "name": "Ann"}))
                .send()
        };
        let first = signup().await.unwrap();
        assert_eq!(first.status(), StatusCode::CREATED);
        let first = first.text().await.unwrap();
        let again = signup().await.unwrap();
        assert_eq!(again.status(), StatusCode::CREATED);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.text().await.unwrap(), first);
    }

    async fn anonymous_idempotency_keys_of_two_people_do_not_collide(engine) {
        // Two people sign up with the same (badly chosen) key: each gets their own account
        // and tokens, never the other's stored answer.
        let app = spawn_app(engine).await;
        let signup = |email: &'static str| {
            app.client
                .post(app.url("/v1/auth/signup"))
                .header("idempotency-key", "1")
                .json(&json!({"email": email, "password": PASSWORD, "name": "Someone"}))
                .send()
        };
        let ann = signup("ann@example.com").await.unwrap();
        let bob = signup("bob@example.com").await.unwrap();
        assert_eq!((ann.status(), bob.status()), (StatusCode::CREATED, StatusCode::CREATED));
        assert!(bob.headers().get("idempotent-replayed").is_none());
        let ann: serde_json::Value = ann.json().await.unwrap();
        let bob: serde_json::Value = bob.json().await.unwrap();
        assert_eq!(bob["user"]["email"], "bob@example.com");
        assert_ne!(ann["access_token"], bob["access_token"]);
        // The same login with the same key replays; a login with another body runs anew.
        let login = |email: &'static str| {
            app.client
                .post(app.url("/v1/auth/login"))
                .header("idempotency-key", "login")
                .json(&json!({"email": email, "password": PASSWORD}))
                .send()
        };
        assert_eq!(login("ann@example.com").await.unwrap().status(), StatusCode::OK);
        let replay = login("ann@example.com").await.unwrap();
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        let other: serde_json::Value = login("bob@example.com").await.unwrap().json().await.unwrap();
        assert_eq!(other["user"]["email"], "bob@example.com");
    }

    async fn a_login_rush_beyond_the_hashing_queue_is_told_to_come_back(engine) {
        // One hash at a time and one waiting: of twelve logins at once, those beyond get
        // 503 /problems/busy with Retry-After, the rest log in; none waits without bound.
        let app = spawn_app_with(engine, |c| {
            c.password_workers = 1;
            c.password_queue = 1;
        })
        .await;
        app.signup("ann@example.com").await;
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let request = app.client.post(app.url("/v1/auth/login")).json(&json!({"email": "ann@example.com", "password": PASSWORD}));
                tokio::spawn(async move { request.send().await.unwrap() })
            })
            .collect();
        let (mut ok, mut busy) = (0, 0);
        for task in tasks {
            let response = task.await.unwrap();
            match response.status() {
                StatusCode::OK => ok += 1,
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert_eq!(response.headers()["retry-after"], "1");
                    let problem = assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
                    assert_eq!(problem["type"], "/problems/busy");
                    busy += 1;
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert!(ok >= 2 && busy >= 1, "{ok} logged in, {busy} told to come back");
    }

    async fn unknown_refresh_token_is_401(engine) {
        let app = spawn_app(engine).await;
        let response = app.post("/v1/auth/refresh", None, json!({"refresh_token": "made-up"})).await;
        assert_problem(response, StatusCode::UNAUTHORIZED).await;
        let missing = app.post("/v1/auth/refresh", None, json!({})).await;
        assert_eq!(invalid_fields(missing).await, ["refresh_token"]);
    }

    async fn logout_ends_the_session(engine) {
        let app = spawn_app(engine).await;
        let ann = app.signup("ann@example.com").await;
        let anonymous = app.post("/v1/auth/logout", None, json!({"refresh_token": ann.refresh})).await;
        assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
        let response = app.post("/v1/auth/logout", Some(&ann.access), json!({"refresh_token": ann.refresh})).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let refresh = app.post("/v1/auth/refresh", None, json!({"refresh_token": ann.refresh})).await;
        assert_problem(refresh, StatusCode::UNAUTHORIZED).await;
    }

    async fn admin_promotes_users_and_others_may_not(engine) {
        let app = spawn_app(engine).await;
        let admin = app.signup("admin@example.com").await;
        let bob = app.signup("bob@example.com").await;
        let path = format!("/v1/admin/users/{}", bob.id);

        let by_customer = app.patch(&path, Some(&bob.access), json!({"role": "admin"})).await;
        assert_problem(by_customer, StatusCode::FORBIDDEN).await;
        let anonymous = app.patch(&path, None, json!({"role": "admin"})).await;
        assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
        let bad_role = app.patch(&path, Some(&admin.access), json!({"role": "root"})).await;
        assert_eq!(invalid_fields(bad_role).await, ["role"]);
        let nobody = app
            .patch("/v1/admin/users/01900000-0000-7000-8000-000000000000", Some(&admin.access), json!({"role": "organizer"}))
            .await;
        assert_problem(nobody, StatusCode::NOT_FOUND).await;
        let own = app.patch(&format!("/v1/admin/users/{}", admin.id), Some(&admin.access), json!({"role": "customer"})).await;
        assert_problem(own, StatusCode::CONFLICT).await;

        let promoted = app.patch(&path, Some(&admin.access), json!({"role": "organizer"})).await;
        assert_eq!(promoted.status(), StatusCode::OK);
        let promoted: serde_json::Value = promoted.json().await.unwrap();
        assert_eq!(promoted["role"], "organizer");
        // The new role is in the next token.
        assert_eq!(app.login("bob@example.com").await.role, "organizer");
    }
}
