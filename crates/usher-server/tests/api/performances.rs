use reqwest::StatusCode;
use serde_json::{Value, json};

use usher_testkit::on_each_engine;

use crate::helpers::{
    TestApp, assert_problem, invalid_fields, on_sale, rows, spawn_app, standing, unit_ids,
};

/// Posts a performance for this event and returns the answer.
async fn post_performance(
    app: &TestApp,
    token: &str,
    event_id: &str,
    body: Value,
) -> reqwest::Response {
    app.post(
        &format!("/v1/events/{event_id}/performances"),
        Some(token),
        body,
    )
    .await
}

fn future(app: &TestApp) -> String {
    (app.clock_now() + chrono::Duration::days(30)).to_rfc3339()
}

on_each_engine! {
    async fn organizer_adds_a_reserved_performance_with_counted_and_labelled_rows(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, _) = app.cast().await;
        let event = app.create_event(&organizer, "Concert").await;
        let event_id = event["id"].as_str().unwrap();
        let response = post_performance(&app, &organizer.access, event_id, json!({
            "starts_at": future(&app),
            "seating": {"kind": "reserved", "sections": [
                {"name": "Stalls", "price": {"amount": 4500, "currency": "EUR"},
                 "rows": [{"label": "A", "seats": 10}, {"label": "B", "seats": ["101", "102", "103"]}]},
                {"name": "Balcony", "price": {"amount": 2500, "currency": "EUR"},
                 "rows": [{"label": "A", "seats": 5}]}
            ]}
        })).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let performance: Value = response.json().await.unwrap();
        assert_eq!(performance["kind"], "reserved");
        assert_eq!(performance["capacity"], 18);
        assert_eq!(performance["available"], 18);
        assert_eq!(performance["held"], 0);
        assert_eq!(performance["sold"], 0);
        assert_eq!(performance["hold_ttl_seconds"], 600);
        assert_eq!(performance["max_per_booking"], 10);
        assert_eq!(performance["sections"][0]["name"], "Stalls");
        assert_eq!(performance["sections"][0]["capacity"], 13);
        assert_eq!(performance["sections"][1]["price"], json!({"amount": 2500, "currency": "EUR"}));
        assert!(performance.get("ticket_types").is_none());

        let id = performance["id"].as_str().unwrap();
        let map: Value = app.get(&format!("/v1/performances/{id}/seats"), Some(&organizer.access)).await.json().await.unwrap();
        let units = map["units"].as_array().unwrap();
        assert_eq!(units.len(), 18);
        assert_eq!((units[10]["row"].as_str(), units[10]["label"].as_str()), (Some("B"), Some("101")));
        assert_eq!(units[17]["section"], "Balcony");
        assert!(units.iter().all(|u| u["state"] == "available"));

        let detail: Value = app.get(&format!("/v1/events/{event_id}"), Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!(detail["performances"][0]["id"], id);
        assert_eq!(detail["performances"][0]["available"], 18);
    }

    async fn organizer_adds_general_admission_and_several_showtimes(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, _) = app.cast().await;
        let event = app.create_event(&organizer, "Film").await;
        let event_id = event["id"].as_str().unwrap();
        for days in [3, 1, 2] {
            let response = post_performance(&app, &organizer.access, event_id, json!({
                "starts_at": (app.clock_now() + chrono::Duration::days(days)).to_rfc3339(),
                "hold_ttl_seconds": 120,
                "max_per_booking": 6,
                "seating": {"kind": "general", "ticket_types": [
                    {"name": "Adult", "price": {"amount": 1200, "currency": "GBP"}, "capacity": 80},
                    {"name": "Child", "price": {"amount": 800, "currency": "GBP"}, "capacity": 20}
                ]}
            })).await;
            assert_eq!(response.status(), StatusCode::CREATED);
            let performance: Value = response.json().await.unwrap();
            assert_eq!(performance["ticket_types"][1]["available"], 20);
            assert_eq!(performance["hold_ttl_seconds"], 120);
            assert_eq!(performance["currency"], "GBP");
        }
        let detail: Value = app.get(&format!("/v1/events/{event_id}"), Some(&organizer.access)).await.json().await.unwrap();
        let starts: Vec<&str> = detail["performances"].as_array().unwrap().iter().map(|p| p["starts_at"].as_str().unwrap()).collect();
        let mut sorted = starts.clone();
        sorted.sort();
        assert_eq!(starts, sorted, "soonest first");
        assert_eq!(starts.len(), 3);
    }

    async fn every_bad_plan_is_422_naming_the_field_and_creates_nothing(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, _) = app.cast().await;
        let event = app.create_event(&organizer, "Strict").await;
        let event_id = event["id"].as_str().unwrap();
        let eur = |amount: i64| json!({"amount": amount, "currency": "EUR"});
        let cases = [
            (json!({"kind": "reserved", "sections": [{"name": "S", "price": eur(100), "rows": [{"label": "A", "seats": ["1", "2", "1"]}]}]}),
             "seating.sections[0].rows[0].seats[2]"),
            (json!({"kind": "reserved", "sections": []}), "seating.sections"),
            (json!({"kind": "reserved", "sections": [{"name": "S", "price": eur(100), "rows": []}]}), "seating.sections[0].rows"),
            (json!({"kind": "reserved", "sections": [{"name": "S", "price": eur(-1), "rows": [{"label": "A", "seats": 2}]}]}),
             "seating.sections[0].price"),
            (json!({"kind": "reserved", "sections": [{"name": "S", "price": eur(100), "rows": [{"label": "A", "seats": 0}]}]}),
             "seating.sections[0].rows[0].seats"),
            (json!({"kind": "general", "ticket_types": [{"name": "GA", "price": eur(100), "capacity": 0}]}),
             "seating.ticket_types[0].capacity"),
            (json!({"kind": "general", "ticket_types": [{"name": "GA", "price": eur(100), "capacity": 10_000_000}]}),
             "seating.ticket_types[0].capacity"),
            (json!({"kind": "general", "ticket_types": [
                {"name": "A", "price": eur(100), "capacity": 150_000},
                {"name": "B", "price": eur(100), "capacity": 150_000}]}), "seating"),
            (json!({"kind": "general", "ticket_types": [
                {"name": "A", "price": eur(100), "capacity": 1},
                {"name": "B", "price": {"amount": 100, "currency": "USD"}, "capacity": 1}]}),
             "seating.ticket_types[1].price.currency"),
            // Three capitals are not yet a currency; a name of nothing visible is no name.
            (json!({"kind": "general", "ticket_types": [{"name": "GA", "price": {"amount": 100, "currency": "ZZZ"}, "capacity": 1}]}),
             "seating.ticket_types[0].price"),
            (json!({"kind": "general", "ticket_types": [{"name": "GA", "price": {"amount": 100, "currency": "XTS"}, "capacity": 1}]}),
             "seating.ticket_types[0].price"),
            (json!({"kind": "general", "ticket_types": [{"name": "\u{200B}\u{200B}", "price": eur(100), "capacity": 1}]}),
             "seating.ticket_types[0].name"),
            (json!({"kind": "reserved", "sections": [{"name": "S", "price": eur(100), "rows": [{"label": "\u{202E}A", "seats": 2}]}]}),
             "seating.sections[0].rows[0].label"),
        ];
        for (seating, field) in cases {
            let response = post_performance(&app, &organizer.access, event_id, json!({"starts_at": future(&app), "seating": seating})).await;
            assert_eq!(invalid_fields(response).await, [field], "{seating}");
        }
        let past = post_performance(&app, &organizer.access, event_id, json!({
            "starts_at": (app.clock_now() - chrono::Duration::hours(1)).to_rfc3339(),
            "seating": standing(10)
        })).await;
        assert_eq!(invalid_fields(past).await, ["starts_at"]);
        let ttl = post_performance(&app, &organizer.access, event_id, json!({
            "starts_at": future(&app), "hold_ttl_seconds": 5, "max_per_booking": 0, "seating": standing(10)
        })).await;
        assert_eq!(invalid_fields(ttl).await, ["hold_ttl_seconds", "max_per_booking"]);
        let kind = post_performance(&app, &organizer.access, event_id, json!({
            "starts_at": future(&app), "seating": {"kind": "standing-room"}
        })).await;
        assert_eq!(invalid_fields(kind).await, ["seating.kind"]);

        let detail: Value = app.get(&format!("/v1/events/{event_id}"), Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!(detail["performances"], json!([]), "nothing was created");
    }

    async fn only_the_events_organizer_or_an_admin_adds_performances(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, customer) = app.cast().await;
        let rival = app.organizer("rival@example.com", &admin).await;
        let event = app.create_event(&organizer, "Mine").await;
        let event_id = event["id"].as_str().unwrap();
        let body = json!({"starts_at": future(&app), "seating": standing(10)});
        assert_problem(post_performance(&app, &rival.access, event_id, body.clone()).await, StatusCode::NOT_FOUND).await;
        assert_problem(post_performance(&app, &customer.access, event_id, body.clone()).await, StatusCode::FORBIDDEN).await;
        let by_admin = post_performance(&app, &admin.access, event_id, body).await;
        assert_eq!(by_admin.status(), StatusCode::CREATED);
    }

    async fn a_drafts_performances_are_hidden_from_the_public(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let event = app.create_event(&organizer, "Secret").await;
        let event_id = event["id"].as_str().unwrap();
        let created: Value = post_performance(&app, &organizer.access, event_id, json!({"starts_at": future(&app), "seating": standing(10)}))
            .await
            .json()
            .await
            .unwrap();
        let id = created["id"].as_str().unwrap();
        for path in [format!("/v1/performances/{id}"), format!("/v1/performances/{id}/seats")] {
            assert_problem(app.get(&path, None).await, StatusCode::NOT_FOUND).await;
            assert_problem(app.get(&path, Some(&customer.access)).await, StatusCode::NOT_FOUND).await;
            assert_eq!(app.get(&path, Some(&organizer.access)).await.status(), StatusCode::OK);
        }
        assert_problem(app.get("/v1/performances/not-an-id", None).await, StatusCode::NOT_FOUND).await;
    }

    async fn organizers_see_sales_of_their_own_events_only(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, customer) = app.cast().await;
        let rival = app.organizer("rival@example.com", &admin).await;
        let performance = on_sale(&app, &organizer, rows(&[10]), 10).await;
        let ids = unit_ids(&app, performance["id"].as_str().unwrap()).await;
        let hold = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "unit_ids": [ids[0], ids[1]]})).await;
        assert_eq!(hold.status(), StatusCode::CREATED);

        let path = format!("/v1/events/{}/sales", performance["event_id"].as_str().unwrap());
        let sales: Value = app.get(&path, Some(&organizer.access)).await.json().await.unwrap();
        let row = &sales["performances"][0];
        assert_eq!((row["capacity"].as_u64(), row["available"].as_u64(), row["held"].as_u64(), row["sold"].as_u64()), (Some(10), Some(8), Some(2), Some(0)));
        assert_eq!(row["revenue"], json!({"amount": 0, "currency": "EUR"}));
        assert_problem(app.get(&path, Some(&rival.access)).await, StatusCode::NOT_FOUND).await;
        assert_problem(app.get(&path, Some(&customer.access)).await, StatusCode::FORBIDDEN).await;
        assert_eq!(app.get(&path, Some(&admin.access)).await.status(), StatusCode::OK);
    }

    async fn seat_maps_carry_an_etag_answer_304_and_are_kept_until_they_change(engine) {
        let app = crate::helpers::spawn_app_with(engine, |c| {
            c.seat_map_max_age = std::time::Duration::from_secs(60);
        })
        .await;
        let (_, organizer, customer) = app.cast().await;
        let performance = crate::helpers::on_sale(&app, &organizer, crate::helpers::rows(&[30]), 4).await;
        let path = format!("/v1/performances/{}/seats", performance["id"].as_str().unwrap());
        let first = app.get(&path, None).await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()["cache-control"], "no-cache");
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
        let map: Value = first.json().await.unwrap();
        let seat = map["units"][0]["id"].clone();
        // A client that has this version is told so, without a body.
        let again = app.client.get(app.url(&path)).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert!(again.bytes().await.unwrap().is_empty());
        // Unchanged, it is the same map …
        assert_eq!(app.get(&path, None).await.headers()["etag"], etag.as_str());
        // … until the live feed says a unit changed, well within the max age.
        let held = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "unit_ids": [seat]})).await;
        assert_eq!(held.status(), StatusCode::CREATED);
        let started = std::time::Instant::now();
        while app.get(&path, None).await.headers()["etag"] == etag.as_str() {
            assert!(started.elapsed() < std::time::Duration::from_secs(3), "the map was not dropped");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // … and big maps go out compressed to clients that ask.
        let zipped = app.client.get(app.url(&path)).header("accept-encoding", "gzip").send().await.unwrap();
        assert_eq!(zipped.headers()["content-encoding"], "gzip");
    }

    async fn without_a_max_age_every_read_sees_the_change(engine) {
        // The default of these tests (and USHER_SEAT_MAP_MAX_AGE_MS=0): a new ETag as soon
        // as the map changes.
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = crate::helpers::on_sale(&app, &organizer, crate::helpers::rows(&[3]), 4).await;
        let path = format!("/v1/performances/{}/seats", performance["id"].as_str().unwrap());
        let before = app.get(&path, None).await;
        let etag = before.headers()["etag"].to_str().unwrap().to_owned();
        let map: Value = before.json().await.unwrap();
        app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "unit_ids": [map["units"][0]["id"]]})).await;
        let after = app.client.get(app.url(&path)).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(after.status(), StatusCode::OK);
        assert_ne!(after.headers()["etag"], etag.as_str());
    }
}
