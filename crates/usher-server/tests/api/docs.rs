use reqwest::StatusCode;
use serde_json::Value;

use usher_testkit::Engine;

use crate::helpers::spawn_app;

/// Every path of ../shared/API.md that exists so far (the live WebSocket and /metrics
/// arrive with their features), and our own additions.
const CONTRACT: &[(&str, &str)] = &[
    ("post", "/v1/auth/signup"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/auth/logout"),
    ("get", "/v1/me"),
    ("patch", "/v1/admin/users/{id}"),
    ("post", "/v1/events"),
    ("get", "/v1/events"),
    ("get", "/v1/events/{id}"),
    ("patch", "/v1/events/{id}"),
    ("post", "/v1/events/{id}/performances"),
    ("get", "/v1/events/{id}/sales"),
    ("get", "/v1/performances/{id}"),
    ("get", "/v1/performances/{id}/seats"),
    ("patch", "/v1/performances/{id}"),
    ("patch", "/v1/performances/{id}/units"),
    ("get", "/v1/performances/{id}/bookings"),
    ("get", "/v1/admin/users"),
    ("post", "/v1/bookings"),
    ("get", "/v1/bookings"),
    ("get", "/v1/bookings/{id}"),
    ("delete", "/v1/bookings/{id}"),
    ("post", "/v1/bookings/{id}/checkout"),
    ("post", "/v1/payments/mock/{payment_id}/complete"),
    ("post", "/v1/webhooks/stripe"),
    ("post", "/v1/refunds"),
    ("get", "/v1/admin/jobs"),
    ("post", "/v1/admin/jobs/{id}/retry"),
    ("get", "/healthz"),
    ("get", "/readyz"),
];

#[tokio::test]
async fn openapi_document_covers_the_contract() {
    let app = spawn_app(Engine::Sqlite).await;
    let response = app.get("/openapi.json", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for (method, path) in CONTRACT {
        assert!(
            doc["paths"][path][method].is_object(),
            "{} {path} is missing from /openapi.json",
            method.to_uppercase()
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["session"]["in"],
        "cookie"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["session"]["name"],
        "usher_access"
    );
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = spawn_app(Engine::Sqlite).await;
    let redirect = app.get("/docs", None).await;
    assert!(redirect.status().is_redirection());
    let page = app.get("/docs/", None).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // The page's assets come from us, not from a CDN: /docs works offline.
    assert!(
        !html.contains("https://"),
        "the docs page loads something remote"
    );
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
    ] {
        let response = app.get(&format!("/docs/{asset}"), None).await;
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
    }
    let initializer = app
        .get("/docs/swagger-initializer.js", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(initializer.contains("/openapi.json"));
}
