//! Organizer and admin controls: editing and cancelling a performance, house seats,
//! the attendee list and the admin's user list — each with its 401/403/404 answers
//! and tenant isolation (another organizer sees nothing).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use usher_testkit::on_each_engine;

use crate::helpers::{
    TestApp, assert_problem, held_pair, invalid_fields, on_sale, pay, rows, spawn_app,
    start_checkout,
};

/// Every new route answers 401 without a token, 403 to a customer and 404 to another
/// organizer.
async fn assert_guarded(app: &TestApp, method: Method, path: &str, body: Option<Value>) {
    let admin = app.login("admin@example.com").await;
    let stranger = app.organizer("stranger@example.com", &admin).await;
    let customer = app.login("customer@example.com").await;
    let anonymous = app.send(method.clone(), path, None, body.clone()).await;
    assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
    let customer = app
        .send(method.clone(), path, Some(&customer.access), body.clone())
        .await;
    assert_problem(customer, StatusCode::FORBIDDEN).await;
    let other = app.send(method, path, Some(&stranger.access), body).await;
    assert_problem(other, StatusCode::NOT_FOUND).await;
}

on_each_engine! {
    async fn organizers_edit_their_performances_and_only_theirs(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
        let path = format!("/v1/performances/{}", performance["id"].as_str().unwrap());
        let starts = app.clock_now() + chrono::Duration::days(10);
        let on_sale_at = app.clock_now() + chrono::Duration::hours(2);
        let edited = app.patch(&path, Some(&organizer.access), json!({
            "starts_at": starts.to_rfc3339(), "hold_ttl_seconds": 120, "max_per_booking": 2,
            "on_sale_at": on_sale_at.to_rfc3339(),
        })).await;
        assert_eq!(edited.status(), StatusCode::OK);
        let edited: Value = edited.json().await.unwrap();
        assert_eq!((edited["hold_ttl_seconds"].as_u64(), edited["max_per_booking"].as_u64()), (Some(120), Some(2)));
        assert_eq!(edited["starts_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap(), starts);
        assert_eq!(edited["status"], "scheduled");
        // Before the sale opens, holds are refused.
        let early = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "quantity": 1, "best_available": true})).await;
        assert_eq!(assert_problem(early, StatusCode::CONFLICT).await["type"], "/problems/not-on-sale");
        app.clock.advance(chrono::Duration::hours(3));
        let open = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "quantity": 2, "best_available": true})).await;
        assert_eq!(open.status(), StatusCode::CREATED);
        // `null` clears the on-sale time; bad fields are named and change nothing.
        let cleared: Value = app.patch(&path, Some(&admin.access), json!({"on_sale_at": null})).await.json().await.unwrap();
        assert!(cleared["on_sale_at"].is_null());
        let bad = app.patch(&path, Some(&organizer.access), json!({
            "starts_at": "2001-01-01T00:00:00Z", "hold_ttl_seconds": 5, "max_per_booking": 0, "status": "draft"
        })).await;
        let mut fields = invalid_fields(bad).await;
        fields.sort();
        assert_eq!(fields, ["hold_ttl_seconds", "max_per_booking", "starts_at", "status"]);
        let unchanged: Value = app.get(&path, None).await.json().await.unwrap();
        assert_eq!(unchanged["hold_ttl_seconds"], 120);
        assert_guarded(&app, Method::PATCH, &path, Some(json!({"max_per_booking": 3}))).await;
        // Cancelled is final.
        let cancelled: Value = app.patch(&path, Some(&organizer.access), json!({"status": "cancelled"})).await.json().await.unwrap();
        assert_eq!(cancelled["status"], "cancelled");
        let again = app.patch(&path, Some(&organizer.access), json!({"max_per_booking": 3})).await;
        assert_eq!(assert_problem(again, StatusCode::CONFLICT).await["type"], "/problems/sale-cancelled");
        let missing = app.patch(&format!("/v1/performances/{}", uuid::Uuid::now_v7()), Some(&admin.access), json!({})).await;
        assert_problem(missing, StatusCode::NOT_FOUND).await;
    }

    async fn a_performance_edit_reaches_the_next_hold_at_once(engine) {
        // The hold path keeps performances for a second; an edit made here forgets them.
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[6]), 4).await;
        let hold = |quantity: u32| app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "quantity": quantity, "best_available": true}));
        assert_eq!(hold(2).await.status(), StatusCode::CREATED, "this hold caches the performance");
        let path = format!("/v1/performances/{}", performance["id"].as_str().unwrap());
        let edited = app.patch(&path, Some(&organizer.access), json!({"max_per_booking": 1})).await;
        assert_eq!(edited.status(), StatusCode::OK);
        assert_eq!(invalid_fields(hold(2).await).await, ["quantity"]);
    }

    async fn house_seats_are_blocked_and_unblocked_all_or_nothing(engine) {
        let app = spawn_app(engine).await;
        let (organizer, customer, performance, ids, _booking) = held_pair(&app).await;
        let path = format!("/v1/performances/{}/units", performance["id"].as_str().unwrap());
        // Seats 1 and 2 are held by the customer: asking for 2 and 3 changes nothing.
        let taken = app.patch(&path, Some(&organizer.access), json!({"unit_ids": [ids[1], ids[2]], "state": "blocked"})).await;
        let problem = assert_problem(taken, StatusCode::CONFLICT).await;
        assert_eq!(problem["unavailable_unit_ids"], json!([ids[1]]));
        let map: Value = app.get(&format!("/v1/performances/{}/seats", performance["id"].as_str().unwrap()), None).await.json().await.unwrap();
        assert_eq!(map["units"][2]["state"], "available", "nothing changed");

        let blocked: Value = app.patch(&path, Some(&organizer.access), json!({"unit_ids": [ids[2], ids[3]], "state": "blocked"})).await.json().await.unwrap();
        assert_eq!(blocked["changed"], 2);
        let again: Value = app.patch(&path, Some(&organizer.access), json!({"unit_ids": [ids[2]], "state": "blocked"})).await.json().await.unwrap();
        assert_eq!(again["changed"], 0, "already blocked");
        let perf: Value = app.get(&format!("/v1/performances/{}", performance["id"].as_str().unwrap()), None).await.json().await.unwrap();
        assert_eq!((perf["blocked"].as_u64(), perf["available"].as_u64()), (Some(2), Some(0)));
        // A blocked seat cannot be held.
        let hold = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "unit_ids": [ids[3]]})).await;
        assert_problem(hold, StatusCode::CONFLICT).await;
        let unblocked: Value = app.patch(&path, Some(&organizer.access), json!({"unit_ids": [ids[3]], "state": "available"})).await.json().await.unwrap();
        assert_eq!(unblocked["changed"], 1);
        let hold = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "unit_ids": [ids[3]]})).await;
        assert_eq!(hold.status(), StatusCode::CREATED);

        let bad = app.patch(&path, Some(&organizer.access), json!({"unit_ids": ["nope", ids[2], ids[2]], "state": "gone"})).await;
        let mut fields = invalid_fields(bad).await;
        fields.sort();
        assert_eq!(fields, ["state", "unit_ids[0]", "unit_ids[2]"]);
        let foreign = app.patch(&path, Some(&organizer.access), json!({"unit_ids": [uuid::Uuid::now_v7()], "state": "blocked"})).await;
        assert_eq!(invalid_fields(foreign).await, ["unit_ids"]);
        assert_guarded(&app, Method::PATCH, &path, Some(json!({"unit_ids": [ids[2]], "state": "available"}))).await;
    }

    async fn the_attendee_list_shows_buyers_to_the_organizer_only(engine) {
        let app = spawn_app(engine).await;
        let (organizer, customer, performance, ids, booking) = held_pair(&app).await;
        let checkout = start_checkout(&app, &customer, &booking).await;
        pay(&app, &customer, &checkout, "succeeded").await;
        let second: Value = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "unit_ids": [ids[2]]})).await.json().await.unwrap();
        let path = format!("/v1/performances/{}/bookings", performance["id"].as_str().unwrap());
        let all: Value = app.get(&path, Some(&organizer.access)).await.json().await.unwrap();
        let items = all["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["id"], second["id"], "newest first");
        assert_eq!(items[1]["buyer"], json!({"id": customer.id, "email": "customer@example.com", "name": "Test Person"}));
        let confirmed: Value = app.get(&format!("{path}?status=confirmed"), Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!(confirmed["items"].as_array().unwrap().len(), 1);
        assert_eq!(confirmed["items"][0]["id"], booking["id"]);
        // A hold past its time reads expired, in the filter too.
        app.clock.advance(chrono::Duration::minutes(11));
        let expired: Value = app.get(&format!("{path}?status=expired"), Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!(expired["items"][0]["id"], second["id"]);
        let held: Value = app.get(&format!("{path}?status=held"), Some(&organizer.access)).await.json().await.unwrap();
        assert!(held["items"].as_array().unwrap().is_empty());
        let page: Value = app.get(&format!("{path}?limit=1"), Some(&organizer.access)).await.json().await.unwrap();
        let cursor = page["next_cursor"].as_str().unwrap();
        let rest: Value = app.get(&format!("{path}?limit=1&cursor={cursor}"), Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!(rest["items"][0]["id"], booking["id"]);
        assert!(rest["next_cursor"].is_null());
        let bad = app.get(&format!("{path}?status=lost&limit=0"), Some(&organizer.access)).await;
        let mut fields = invalid_fields(bad).await;
        fields.sort();
        assert_eq!(fields, ["limit", "status"]);
        assert_guarded(&app, Method::GET, &path, None).await;
    }

    async fn admins_list_and_search_users(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, customer) = app.cast().await;
        app.signup("zoë.müller@example.com").await;
        let all: Value = app.get("/v1/admin/users", Some(&admin.access)).await.json().await.unwrap();
        let emails: Vec<&str> = all["items"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
        assert_eq!(emails, ["zoë.müller@example.com", "customer@example.com", "org@example.com", "admin@example.com"]);
        assert_eq!(all["items"][2]["role"], "organizer");
        // Case-insensitive, beyond ASCII, the same on both engines.
        let found: Value = app.get("/v1/admin/users?q=M%C3%9CLLER", Some(&admin.access)).await.json().await.unwrap();
        assert_eq!(found["items"].as_array().unwrap().len(), 1);
        let found: Value = app.get("/v1/admin/users?q=CUSTOMER", Some(&admin.access)).await.json().await.unwrap();
        assert_eq!(found["items"][0]["id"], customer.id);
        let none: Value = app.get("/v1/admin/users?q=%25", Some(&admin.access)).await.json().await.unwrap();
        assert!(none["items"].as_array().unwrap().is_empty(), "wildcards are literal");
        let page: Value = app.get("/v1/admin/users?limit=3", Some(&admin.access)).await.json().await.unwrap();
        let cursor = page["next_cursor"].as_str().unwrap();
        let rest: Value = app.get(&format!("/v1/admin/users?limit=3&cursor={cursor}"), Some(&admin.access)).await.json().await.unwrap();
        assert_eq!(rest["items"][0]["email"], "admin@example.com");
        assert_problem(app.get("/v1/admin/users", None).await, StatusCode::UNAUTHORIZED).await;
        assert_problem(app.get("/v1/admin/users", Some(&organizer.access)).await, StatusCode::FORBIDDEN).await;
        assert_problem(app.get("/v1/admin/users", Some(&customer.access)).await, StatusCode::FORBIDDEN).await;
        let bad = app.get("/v1/admin/users?limit=500&cursor=zzz", Some(&admin.access)).await;
        let mut fields = invalid_fields(bad).await;
        fields.sort();
        assert_eq!(fields, ["cursor", "limit"]);
    }
}
