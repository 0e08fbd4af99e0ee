use reqwest::StatusCode;
use serde_json::json;

use usher_testkit::on_each_engine;

use crate::helpers::{PASSWORD, assert_problem, spawn_app, spawn_app_with};

on_each_engine! {
    async fn every_response_has_a_request_id_and_valid_ones_are_echoed(engine) {
        let app = spawn_app(engine).await;
        let generated = app.get("/healthz", None).await;
        let id = generated.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 36, "a UUID: {id}");

        let echoed = app.client.get(app.url("/healthz")).header("x-request-id", "trace-abc_123").send().await.unwrap();
        assert_eq!(echoed.headers()["x-request-id"], "trace-abc_123");

        let hostile = app.client.get(app.url("/healthz")).header("x-request-id", "a b\"c").send().await.unwrap();
        assert_ne!(hostile.headers()["x-request-id"], "a b\"c");

        let error = app.client.get(app.url("/no/such/route")).header("x-request-id", "err-1").send().await.unwrap();
        assert_eq!(error.headers()["x-request-id"], "err-1");
    }

    async fn malformed_json_is_a_400_problem(engine) {
        let app = spawn_app(engine).await;
        let response = app
            .client
            .post(app.url("/v1/auth/signup"))
            .header("content-type", "application/json")
            .body(r#"{"email": "a@example.com", "password": "#)
            .send()
            .await
            .unwrap();
        let body = assert_problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["type"], "/problems/malformed-request");
    }

    async fn an_error_turned_into_a_problem_is_readable_when_gzip_was_asked_for(engine) {
        let app = spawn_app(engine).await;
        let (admin, _, _) = app.cast().await;
        // A query axum's extractor refuses (a field twice) is a plain-text 400 that the
        // compression layer gzips before it becomes a problem document.
        let response = app
            .client
            .get(app.url("/v1/admin/jobs?state=dead&state=done"))
            .bearer_auth(&admin.access)
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let encoding = response.headers().get("content-encoding").cloned();
        let bytes = response.bytes().await.unwrap();
        let readable = match &encoding {
            None => serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(),
            Some(_) => bytes.starts_with(&[0x1f, 0x8b]),
        };
        assert!(readable, "the body does not match its Content-Encoding {encoding:?}: {bytes:?}");
    }

    async fn a_body_that_is_not_json_is_a_415_problem(engine) {
        let app = spawn_app(engine).await;
        let form = app
            .client
            .post(app.url("/v1/auth/signup"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("email=a@example.com")
            .send()
            .await
            .unwrap();
        assert_problem(form, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        let none = app.client.post(app.url("/v1/auth/login")).body("{}").send().await.unwrap();
        assert_problem(none, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }

    async fn an_oversized_body_is_a_413_problem(engine) {
        let app = spawn_app_with(engine, |c| c.max_body_bytes = 1024).await;
        let response = app
            .post("/v1/auth/signup", None, json!({"email": "a@example.com", "password": PASSWORD, "name": "x".repeat(2000)}))
            .await;
        assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    }

    async fn unknown_routes_and_wrong_methods_are_problems(engine) {
        let app = spawn_app(engine).await;
        let missing = assert_problem(app.get("/v2/whatever", None).await, StatusCode::NOT_FOUND).await;
        assert_eq!(missing["type"], "/problems/not-found");
        let wrong = app.client.delete(app.url("/v1/auth/login")).send().await.unwrap();
        assert!(wrong.headers().contains_key("allow"));
        assert_problem(wrong, StatusCode::METHOD_NOT_ALLOWED).await;
    }

    async fn security_headers_are_set(engine) {
        let app = spawn_app(engine).await;
        let response = app.get("/healthz", None).await;
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(headers["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
    }

    async fn cors_allows_only_configured_origins(engine) {
        let app = spawn_app_with(engine, |c| c.cors_origins = vec!["https://shop.example".into()]).await;
        let preflight = |origin: &'static str| {
            app.client
                .request(reqwest::Method::OPTIONS, app.url("/v1/events"))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "authorization,content-type")
                .send()
        };
        let allowed = preflight("https://shop.example").await.unwrap();
        assert_eq!(allowed.headers()["access-control-allow-origin"], "https://shop.example");
        let denied = preflight("https://evil.example").await.unwrap();
        assert!(!denied.headers().contains_key("access-control-allow-origin"));
    }

    async fn health_and_readiness(engine) {
        let app = spawn_app(engine).await;
        let health = app.get("/healthz", None).await;
        assert_eq!(health.status(), StatusCode::OK);
        let ready = app.get("/readyz", None).await;
        assert_eq!(ready.status(), StatusCode::OK);
        let ready: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(ready["status"], "ok");
        assert_eq!(ready["applied_migrations"], ready["known_migrations"]);
    }
}

#[tokio::test]
async fn graceful_shutdown_lets_the_server_stop() {
    let store = usher_testkit::Engine::Sqlite.fresh_store().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // The real clock and the real sweeper: stopping must stop both.
    let clock = std::sync::Arc::new(usher_core::SystemClock);
    let app = usher_server::Application::build(Default::default(), store, clock, listener)
        .await
        .unwrap();
    let addr = app.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let ok = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("server stopped in time")
        .unwrap()
        .unwrap();
    assert!(
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn metrics_are_served_as_prometheus_text() {
    let app = spawn_app(usher_testkit::Engine::Sqlite).await;
    let (_, organizer, customer) = app.cast().await;
    let performance =
        crate::helpers::on_sale(&app, &organizer, crate::helpers::rows(&[2]), 2).await;
    let ids = crate::helpers::unit_ids(&app, performance["id"].as_str().unwrap()).await;
    let body = json!({"performance_id": performance["id"], "unit_ids": [ids[0]]});
    app.post("/v1/bookings", Some(&customer.access), body.clone())
        .await;
    app.post("/v1/bookings", Some(&customer.access), body).await;
    let response = app.get("/metrics", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for needle in [
        "usher_http_requests_total{method=\"POST\",route=\"/v1/bookings\",status=\"201\"}",
        "usher_http_request_duration_seconds_bucket",
        "usher_holds_total{outcome=\"held\"}",
        "usher_holds_total{outcome=\"unavailable\"}",
        "route=\"/v1/performances/{id}/seats\"",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

mod keys {
    use std::sync::Arc;

    use tokio::net::TcpListener;

    use usher_server::{Application, MasterKeySource, ServerConfig};
    use usher_store::Store;
    use usher_testkit::on_each_engine;

    use crate::helpers::spawn_app;

    const SETTINGS: [&str; 3] = ["jwt_secret", "ticket_secret", "idempotency_sealing_secret"];

    async fn build(
        config: ServerConfig,
        store: Arc<dyn Store>,
    ) -> Result<Application, usher_server::BuildError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Application::build(
            config,
            store,
            Arc::new(usher_core::ManualClock::starting_now()),
            listener,
        )
        .await
    }

    on_each_engine! {
        async fn the_servers_keys_are_stored_sealed_under_the_master_key(engine) {
            let app = spawn_app(engine).await;
            for name in SETTINGS {
                let stored = app.store.setting_or_insert(name, "unused").await.unwrap();
                assert!(stored.starts_with("sealed:v1:"), "{name} is stored as {stored}");
            }
            // The same master key opens them again: a restart keeps every session.
            let customer = app.signup("ann@example.com").await;
            let restarted = app.restart().await;
            let me = restarted.get("/v1/me", Some(&customer.access)).await;
            assert_eq!(me.status(), reqwest::StatusCode::OK);
            // Another master key refuses to start, saying why.
            let mut other = app.config.clone();
            other.master_key = MasterKeySource::generate().unwrap();
            let refused = build(other, app.store.clone()).await.err().expect("refused");
            assert!(refused.to_string().contains("another USHER_MASTER_KEY"), "{refused}");
        }

        async fn keys_stored_in_plaintext_are_sealed_in_place_and_kept(engine) {
            let store = engine.fresh_store().await;
            for name in SETTINGS {
                store.setting_or_insert(name, &format!("legacy-{name}-0123456789abcdef0123456789")).await.unwrap();
            }
            let app = build(ServerConfig::default(), store.clone()).await.unwrap();
            assert_eq!(app.state().ticket_secret(), b"legacy-ticket_secret-0123456789abcdef0123456789");
            for name in SETTINGS {
                let stored = store.setting_or_insert(name, "unused").await.unwrap();
                assert!(stored.starts_with("sealed:v1:"), "{name} is stored as {stored}");
            }
        }
    }
}
