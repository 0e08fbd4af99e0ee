use reqwest::StatusCode;
use serde_json::{Value, json};

use usher_testkit::on_each_engine;

use crate::helpers::{assert_problem, invalid_fields, spawn_app};

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

on_each_engine! {
    async fn organizer_creates_a_draft_with_attributes(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, _) = app.cast().await;
        let response = app
            .post("/v1/events", Some(&organizer.access), json!({
                "title": "  Jazz on the Roof ",
                "description": "Modern jazz\nunder the sky",
                "venue": "Skyline Hall",
                "attributes": {"genre": "jazz", "age_limit": 18, "lineup": ["A", "B"]}
            }))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let event: Value = response.json().await.unwrap();
        assert_eq!(event["title"], "Jazz on the Roof");
        assert_eq!(event["status"], "draft");
        assert_eq!(event["organizer_id"], organizer.id.as_str());
        assert_eq!(event["attributes"]["lineup"][1], "B");
        let mut read: Value = app
            .get(&format!("/v1/events/{}", event["id"].as_str().unwrap()), Some(&organizer.access))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(read["performances"], json!([]));
        read.as_object_mut().unwrap().remove("performances");
        assert_eq!(read, event);
    }

    async fn customers_may_not_create_events_and_anonymous_must_log_in(engine) {
        let app = spawn_app(engine).await;
        let (_, _, customer) = app.cast().await;
        let body = json!({"title": "Nope"});
        assert_problem(app.post("/v1/events", Some(&customer.access), body.clone()).await, StatusCode::FORBIDDEN).await;
        assert_problem(app.post("/v1/events", None, body).await, StatusCode::UNAUTHORIZED).await;
    }

    async fn event_validation_names_fields_and_creates_nothing(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, _) = app.cast().await;
        let response = app
            .post("/v1/events", Some(&organizer.access), json!({
                "title": "", "venue": "v".repeat(201), "attributes": [1, 2]
            }))
            .await;
        assert_eq!(invalid_fields(response).await, ["title", "venue", "attributes"]);
        let unknown = app.post("/v1/events", Some(&organizer.access), json!({"title": "A", "titel": "B"})).await;
        assert_eq!(invalid_fields(unknown).await, ["titel"]);
        let all: Value = app.get("/v1/events", Some(&admin.access)).await.json().await.unwrap();
        assert_eq!(all["items"].as_array().unwrap().len(), 0);
    }

    async fn titles_are_composed_and_reversed_or_invisible_text_is_refused(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, _) = app.cast().await;
        for (title, venue) in [
            ("Concert \u{202E}gpj.exe", "Hall"),
            ("\u{200B}", "Hall"),
            ("\u{2067}Isolated\u{2069}", "Hall"),
            ("Fine", "\u{200B}\u{2060} "),
        ] {
            let response = app
                .post("/v1/events", Some(&organizer.access), json!({"title": title, "description": "d", "venue": venue}))
                .await;
            let field = if title == "Fine" { "venue" } else { "title" };
            assert_eq!(invalid_fields(response).await, [field], "{title:?} / {venue:?}");
        }
        let all: Value = app.get("/v1/events", Some(&admin.access)).await.json().await.unwrap();
        assert_eq!(all["items"].as_array().unwrap().len(), 0, "nothing refused was created");
        // A title typed with a combining accent is stored composed, so search finds it.
        let event = app.create_event(&organizer, "Cafe\u{0301} Concert").await;
        assert_eq!(event["title"], "Caf\u{00E9} Concert");
        let patched = app
            .patch(&format!("/v1/events/{}", event["id"].as_str().unwrap()), Some(&organizer.access), json!({"title": "\u{202D}x"}))
            .await;
        assert_eq!(invalid_fields(patched).await, ["title"]);
    }

    async fn drafts_are_hidden_from_everyone_but_owner_and_admin(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, customer) = app.cast().await;
        let rival = app.organizer("rival@example.com", &admin).await;
        let draft = app.create_event(&organizer, "Secret Gig").await;
        let path = format!("/v1/events/{}", draft["id"].as_str().unwrap());

        assert_eq!(app.get(&path, Some(&organizer.access)).await.status(), StatusCode::OK);
        assert_eq!(app.get(&path, Some(&admin.access)).await.status(), StatusCode::OK);
        assert_problem(app.get(&path, None).await, StatusCode::NOT_FOUND).await;
        assert_problem(app.get(&path, Some(&customer.access)).await, StatusCode::NOT_FOUND).await;
        assert_problem(app.get(&path, Some(&rival.access)).await, StatusCode::NOT_FOUND).await;

        let public: Value = app.get("/v1/events", None).await.json().await.unwrap();
        assert!(ids(&public).is_empty());
        let rivals: Value = app.get("/v1/events", Some(&rival.access)).await.json().await.unwrap();
        assert!(ids(&rivals).is_empty());
        let owners: Value = app.get("/v1/events", Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!(ids(&owners), [draft["id"].as_str().unwrap()]);
    }

    async fn mine_lists_only_the_callers_own_events_drafts_included(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, customer) = app.cast().await;
        let rival = app.organizer("rival@example.com", &admin).await;
        let theirs = app.create_event(&rival, "Their Show").await;
        app.publish(&rival, theirs["id"].as_str().unwrap()).await;
        let draft = app.create_event(&organizer, "My Draft").await;
        let mine: Value = app.get("/v1/events?mine=true", Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!(ids(&mine), [draft["id"].as_str().unwrap()], "not the rival's published show");
        let everyone: Value = app.get("/v1/events", Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!(ids(&everyone).len(), 2);
        let admins: Value = app.get("/v1/events?mine=true", Some(&admin.access)).await.json().await.unwrap();
        assert!(ids(&admins).is_empty());
        assert_problem(app.get("/v1/events?mine=true", None).await, StatusCode::UNAUTHORIZED).await;
        assert_problem(app.get("/v1/events?mine=true", Some(&customer.access)).await, StatusCode::FORBIDDEN).await;
    }

    async fn another_organizer_cannot_change_an_event_and_learns_nothing(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, customer) = app.cast().await;
        let rival = app.organizer("rival@example.com", &admin).await;
        let event = app.create_event(&organizer, "Mine").await;
        let id = event["id"].as_str().unwrap();
        app.publish(&organizer, id).await;
        let path = format!("/v1/events/{id}");

        // Published, so the rival can see it, but changing it answers as if it were absent.
        let by_rival = app.patch(&path, Some(&rival.access), json!({"title": "Hijacked"})).await;
        let missing = app.patch("/v1/events/01900000-0000-7000-8000-000000000000", Some(&rival.access), json!({"title": "x"})).await;
        let by_rival = assert_problem(by_rival, StatusCode::NOT_FOUND).await;
        let missing = assert_problem(missing, StatusCode::NOT_FOUND).await;
        assert_eq!(by_rival, missing);
        assert_problem(app.patch(&path, Some(&customer.access), json!({"title": "x"})).await, StatusCode::FORBIDDEN).await;
        let unchanged: Value = app.get(&path, None).await.json().await.unwrap();
        assert_eq!(unchanged["title"], "Mine");

        let by_admin = app.patch(&path, Some(&admin.access), json!({"venue": "New Hall"})).await;
        assert_eq!(by_admin.status(), StatusCode::OK);
    }

    async fn publishing_makes_an_event_public_and_cancelling_is_final(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let event = app.create_event(&organizer, "Opening Night").await;
        let id = event["id"].as_str().unwrap();
        let path = format!("/v1/events/{id}");
        app.publish(&organizer, id).await;

        let public: Value = app.get("/v1/events", None).await.json().await.unwrap();
        assert_eq!(ids(&public), [id]);
        let seen: Value = app.get(&path, Some(&customer.access)).await.json().await.unwrap();
        assert_eq!(seen["status"], "published");

        let cancel = app.patch(&path, Some(&organizer.access), json!({"status": "cancelled"})).await;
        assert_eq!(cancel.status(), StatusCode::OK);
        let revive = app.patch(&path, Some(&organizer.access), json!({"status": "published"})).await;
        assert_eq!(invalid_fields(revive).await, ["status"]);
        let bad = app.patch(&path, Some(&organizer.access), json!({"status": "sold-out"})).await;
        assert_eq!(invalid_fields(bad).await, ["status"]);
        // Cancelled events stay readable (buyers need to know), but leave the listing.
        let after: Value = app.get(&path, None).await.json().await.unwrap();
        assert_eq!(after["status"], "cancelled");
        let public: Value = app.get("/v1/events", None).await.json().await.unwrap();
        assert!(ids(&public).is_empty());
    }

    async fn patch_changes_only_the_fields_given(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, _) = app.cast().await;
        let event = app.create_event(&organizer, "Before").await;
        let path = format!("/v1/events/{}", event["id"].as_str().unwrap());
        let response = app.patch(&path, Some(&organizer.access), json!({"title": "After", "attributes": {"k": 1}})).await;
        assert_eq!(response.status(), StatusCode::OK);
        let after: Value = response.json().await.unwrap();
        assert_eq!(after["title"], "After");
        assert_eq!(after["venue"], event["venue"]);
        assert_eq!(after["description"], event["description"]);
        assert_eq!(after["attributes"], json!({"k": 1}));
        let empty_title = app.patch(&path, Some(&organizer.access), json!({"title": " "})).await;
        assert_eq!(invalid_fields(empty_title).await, ["title"]);
        let typo = app.patch(&path, Some(&organizer.access), json!({"stauts": "published"})).await;
        assert_eq!(invalid_fields(typo).await, ["stauts"]);
    }

    async fn listing_pages_with_a_cursor_and_searches_titles(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, _) = app.cast().await;
        let mut created = Vec::new();
        for title in ["Jazz One", "Rock Two", "jazz three", "Folk Four", "JAZZ five"] {
            let event = app.create_event(&organizer, title).await;
            let id = event["id"].as_str().unwrap().to_owned();
            app.publish(&organizer, &id).await;
            created.push(id);
        }
        created.reverse();

        let mut seen = Vec::new();
        let mut path = "/v1/events?limit=2".to_string();
        loop {
            let page: Value = app.get(&path, None).await.json().await.unwrap();
            assert!(page["items"].as_array().unwrap().len() <= 2);
            seen.extend(ids(&page));
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("/v1/events?limit=2&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(seen, created);

        let jazz: Value = app.get("/v1/events?q=jAzZ", None).await.json().await.unwrap();
        assert_eq!(ids(&jazz).len(), 3);
        let none: Value = app.get("/v1/events?q=opera", None).await.json().await.unwrap();
        assert!(ids(&none).is_empty());
    }

    async fn bad_listing_parameters_are_422_naming_the_parameter(engine) {
        let app = spawn_app(engine).await;
        assert_eq!(invalid_fields(app.get("/v1/events?limit=0", None).await).await, ["limit"]);
        assert_eq!(invalid_fields(app.get("/v1/events?limit=1000", None).await).await, ["limit"]);
        assert_eq!(invalid_fields(app.get("/v1/events?cursor=forged", None).await).await, ["cursor"]);
        let fields = invalid_fields(app.get("/v1/events?limit=ten", None).await).await;
        assert_eq!(fields, ["query"]);
        let long = format!("/v1/events?q={}", "x".repeat(201));
        assert_eq!(invalid_fields(app.get(&long, None).await).await, ["q"]);
        // NUL would reach PostgreSQL as text it cannot hold.
        assert_eq!(invalid_fields(app.get("/v1/events?q=a%00b", None).await).await, ["q"]);
    }

    async fn an_id_that_is_not_a_uuid_is_simply_not_found(engine) {
        let app = spawn_app(engine).await;
        assert_problem(app.get("/v1/events/not-a-uuid", None).await, StatusCode::NOT_FOUND).await;
    }
}
