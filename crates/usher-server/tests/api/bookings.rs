use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};
use usher_core::ids::PerformanceId;
use uuid::Uuid;

use usher_testkit::invariants::check_performance;
use usher_testkit::on_each_engine;

use crate::helpers::{
    assert_problem, invalid_fields, on_sale, rows, spawn_app, standing, unit_ids,
};

fn str_ids(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn booked_ids(booking: &Value) -> Vec<String> {
    booking["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

on_each_engine! {
    async fn holding_seats_returns_the_booking_priced_by_the_server(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[10]), 10).await;
        let id = performance["id"].as_str().unwrap();
        let ids = unit_ids(&app, id).await;
        let response = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": id, "unit_ids": [ids[4], ids[5]]})).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let booking: Value = response.json().await.unwrap();
        assert_eq!(booking["status"], "held");
        assert_eq!(booking["performance_id"], id);
        assert_eq!(booked_ids(&booking), [ids[4].clone(), ids[5].clone()]);
        assert_eq!(booking["units"][0]["label"], "5");
        assert_eq!(booking["total"], json!({"amount": 9000, "currency": "EUR"}));
        let expires: chrono::DateTime<chrono::Utc> = booking["expires_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(expires, app.clock_now() + chrono::Duration::seconds(600));

        let counts: Value = app.get(&format!("/v1/performances/{id}"), None).await.json().await.unwrap();
        assert_eq!((counts["available"].as_u64(), counts["held"].as_u64()), (Some(8), Some(2)));
        let map: Value = app.get(&format!("/v1/performances/{id}/seats"), None).await.json().await.unwrap();
        assert_eq!(map["units"][4]["state"], "held");
        assert_eq!(map["units"][3]["state"], "available");
    }

    async fn a_hold_with_a_taken_seat_is_409_listing_it_and_holds_nothing(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let other = app.signup("other@example.com").await;
        let performance = on_sale(&app, &organizer, rows(&[10]), 10).await;
        let id = performance["id"].as_str().unwrap();
        let ids = unit_ids(&app, id).await;
        let first = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": id, "unit_ids": [ids[3]]})).await;
        assert_eq!(first.status(), StatusCode::CREATED);
        let second = app.post("/v1/bookings", Some(&other.access), json!({"performance_id": id, "unit_ids": [ids[2], ids[3], ids[4]]})).await;
        let problem = assert_problem(second, StatusCode::CONFLICT).await;
        assert_eq!(problem["type"], "/problems/units-unavailable");
        assert_eq!(str_ids(&problem["unavailable_unit_ids"]), [ids[3].clone()]);
        let counts: Value = app.get(&format!("/v1/performances/{id}"), None).await.json().await.unwrap();
        assert_eq!(counts["held"], 1, "seats 3 and 5 were not kept");
        let mine: Value = app.get("/v1/bookings", Some(&other.access)).await.json().await.unwrap();
        assert_eq!(mine["items"], json!([]));
    }

    async fn general_admission_and_best_available_holds(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let ga = on_sale(&app, &organizer, standing(5), 4).await;
        let ticket_type = ga["ticket_types"][0]["id"].as_str().unwrap();
        let hold = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": ga["id"], "ticket_type_id": ticket_type, "quantity": 3})).await;
        assert_eq!(hold.status(), StatusCode::CREATED);
        let hold: Value = hold.json().await.unwrap();
        assert_eq!(hold["units"].as_array().unwrap().len(), 3);
        assert_eq!(hold["total"]["amount"], 6000);
        let sold_out = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": ga["id"], "ticket_type_id": ticket_type, "quantity": 3})).await;
        let problem = assert_problem(sold_out, StatusCode::CONFLICT).await;
        assert_eq!(problem["unavailable_unit_ids"], json!([]));

        let seated = on_sale(&app, &organizer, rows(&[8, 8]), 10).await;
        let best = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": seated["id"], "quantity": 4, "best_available": true})).await;
        assert_eq!(best.status(), StatusCode::CREATED);
        let best: Value = best.json().await.unwrap();
        let labels: Vec<String> = best["units"].as_array().unwrap().iter().map(|u| format!("{}{}", u["row"].as_str().unwrap(), u["label"].as_str().unwrap())).collect();
        assert_eq!(labels, ["A3", "A4", "A5", "A6"]);
    }

    async fn bad_hold_requests_are_422_and_hold_nothing(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let seated = on_sale(&app, &organizer, rows(&[10]), 3).await;
        let ga = on_sale(&app, &organizer, standing(10), 3).await;
        let sid = seated["id"].as_str().unwrap();
        let ids = unit_ids(&app, sid).await;
        let ga_ids = unit_ids(&app, ga["id"].as_str().unwrap()).await;
        let ticket_type = ga["ticket_types"][0]["id"].as_str().unwrap();
        let token = Some(customer.access.as_str());
        let cases = [
            (json!({"performance_id": sid, "unit_ids": [ids[0], ids[1], ids[2], ids[3]]}), vec!["unit_ids"]),
            (json!({"performance_id": sid, "unit_ids": []}), vec!["unit_ids"]),
            (json!({"performance_id": sid, "unit_ids": [ids[0], ids[0]]}), vec!["unit_ids[1]"]),
            (json!({"performance_id": sid, "unit_ids": ["nope"]}), vec!["unit_ids[0]"]),
            (json!({"performance_id": sid, "unit_ids": [ga_ids[0]]}), vec!["unit_ids"]),
            (json!({"performance_id": sid, "quantity": 2}), vec!["unit_ids"]),
            (json!({"performance_id": sid, "quantity": 4, "best_available": true}), vec!["quantity"]),
            (json!({"performance_id": sid, "ticket_type_id": ticket_type, "quantity": 1}), vec!["ticket_type_id"]),
            (json!({"performance_id": ga["id"], "ticket_type_id": ticket_type, "quantity": 0}), vec!["quantity"]),
            (json!({"performance_id": ga["id"], "ticket_type_id": ticket_type}), vec!["quantity"]),
            (json!({"performance_id": ga["id"], "ticket_type_id": Uuid::now_v7(), "quantity": 1}), vec!["ticket_type_id"]),
            (json!({"performance_id": ga["id"], "unit_ids": [ga_ids[0]]}), vec!["unit_ids"]),
            (json!({"performance_id": ga["id"], "quantity": 1, "best_available": true}), vec!["best_available"]),
            (json!({"performance_id": "nope", "unit_ids": [ids[0]]}), vec!["performance_id"]),
            (json!({"performance_id": Uuid::now_v7(), "unit_ids": [ids[0]]}), vec!["performance_id"]),
            (json!({"unit_ids": [ids[0]]}), vec!["performance_id"]),
            (json!({"performance_id": sid, "unit_ids": [ids[0]], "price": 1}), vec!["price"]),
        ];
        for (body, fields) in cases {
            let response = app.post("/v1/bookings", token, body.clone()).await;
            assert_eq!(invalid_fields(response).await, fields, "{body}");
        }
        for performance in [&seated, &ga] {
            let counts: Value = app.get(&format!("/v1/performances/{}", performance["id"].as_str().unwrap()), None).await.json().await.unwrap();
            assert_eq!(counts["held"], 0);
        }
        let anonymous = app.post("/v1/bookings", None, json!({"performance_id": sid, "unit_ids": [ids[0]]})).await;
        assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
    }

    async fn holds_need_a_published_event_and_a_future_performance(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, standing(10), 4).await;
        let event_path = format!("/v1/events/{}", performance["event_id"].as_str().unwrap());
        let body = json!({"performance_id": performance["id"], "ticket_type_id": performance["ticket_types"][0]["id"], "quantity": 1});

        let draft = app.patch(&event_path, Some(&organizer.access), json!({"status": "draft"})).await;
        assert_eq!(draft.status(), StatusCode::OK);
        // Hidden from the public: as if it did not exist.
        assert_eq!(invalid_fields(app.post("/v1/bookings", Some(&customer.access), body.clone()).await).await, ["performance_id"]);
        // Its organizer sees it, but it is not on sale.
        let own = assert_problem(app.post("/v1/bookings", Some(&organizer.access), body.clone()).await, StatusCode::CONFLICT).await;
        assert_eq!(own["type"], "/problems/not-on-sale");

        app.patch(&event_path, Some(&organizer.access), json!({"status": "cancelled"})).await;
        let cancelled = assert_problem(app.post("/v1/bookings", Some(&customer.access), body.clone()).await, StatusCode::CONFLICT).await;
        assert_eq!(cancelled["type"], "/problems/not-on-sale");

        let later = on_sale(&app, &organizer, standing(10), 4).await;
        app.clock.advance(chrono::Duration::days(8));
        let started = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": later["id"], "ticket_type_id": later["ticket_types"][0]["id"], "quantity": 1})).await;
        assert_problem(started, StatusCode::CONFLICT).await;
    }

    async fn a_booking_is_visible_to_its_buyer_admins_and_the_events_organizer_only(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, customer) = app.cast().await;
        let rival = app.organizer("rival@example.com", &admin).await;
        let stranger = app.signup("stranger@example.com").await;
        let performance = on_sale(&app, &organizer, standing(10), 4).await;
        let booking: Value = app
            .post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "ticket_type_id": performance["ticket_types"][0]["id"], "quantity": 2}))
            .await
            .json()
            .await
            .unwrap();
        let path = format!("/v1/bookings/{}", booking["id"].as_str().unwrap());
        for who in [&customer, &admin, &organizer] {
            let read = app.get(&path, Some(&who.access)).await;
            assert_eq!(read.status(), StatusCode::OK);
        }
        for who in [&rival, &stranger] {
            assert_problem(app.get(&path, Some(&who.access)).await, StatusCode::NOT_FOUND).await;
        }
        assert_problem(app.get(&path, None).await, StatusCode::UNAUTHORIZED).await;
        // Only the buyer cancels.
        assert_problem(app.delete(&path, Some(&stranger.access)).await, StatusCode::NOT_FOUND).await;
    }

    async fn my_bookings_are_mine_only_newest_first_in_pages(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let other = app.signup("other@example.com").await;
        let performance = on_sale(&app, &organizer, standing(20), 4).await;
        let body = json!({"performance_id": performance["id"], "ticket_type_id": performance["ticket_types"][0]["id"], "quantity": 1});
        let mut mine = Vec::new();
        for _ in 0..5 {
            let b: Value = app.post("/v1/bookings", Some(&customer.access), body.clone()).await.json().await.unwrap();
            mine.push(b["id"].as_str().unwrap().to_owned());
        }
        app.post("/v1/bookings", Some(&other.access), body).await;
        mine.reverse();
        let mut seen = Vec::new();
        let mut path = "/v1/bookings?limit=2".to_string();
        loop {
            let page: Value = app.get(&path, Some(&customer.access)).await.json().await.unwrap();
            seen.extend(page["items"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap().to_owned()));
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("/v1/bookings?limit=2&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(seen, mine);
        assert_eq!(invalid_fields(app.get("/v1/bookings?limit=0", Some(&customer.access)).await).await, ["limit"]);
    }

    async fn cancelling_a_hold_frees_its_seats_at_once_and_only_once(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
        let id = performance["id"].as_str().unwrap();
        let ids = unit_ids(&app, id).await;
        let booking: Value = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": id, "unit_ids": ids})).await.json().await.unwrap();
        let path = format!("/v1/bookings/{}", booking["id"].as_str().unwrap());
        let cancelled = app.delete(&path, Some(&customer.access)).await;
        assert_eq!(cancelled.status(), StatusCode::OK);
        let cancelled: Value = cancelled.json().await.unwrap();
        assert_eq!(cancelled["status"], "cancelled");
        let counts: Value = app.get(&format!("/v1/performances/{id}"), None).await.json().await.unwrap();
        assert_eq!(counts["available"], 4);
        let again = assert_problem(app.delete(&path, Some(&customer.access)).await, StatusCode::CONFLICT).await;
        assert_eq!(again["type"], "/problems/booking-not-held");
    }

    async fn an_expired_hold_reads_expired_and_its_seats_sell_again_before_and_after_the_sweep(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let other = app.signup("other@example.com").await;
        let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
        let id = performance["id"].as_str().unwrap();
        let ids = unit_ids(&app, id).await;
        let booking: Value = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": id, "unit_ids": [ids[0], ids[1]]})).await.json().await.unwrap();
        let path = format!("/v1/bookings/{}", booking["id"].as_str().unwrap());

        app.clock.advance(chrono::Duration::seconds(600));
        let read: Value = app.get(&path, Some(&customer.access)).await.json().await.unwrap();
        assert_eq!(read["status"], "expired");
        let counts: Value = app.get(&format!("/v1/performances/{id}"), None).await.json().await.unwrap();
        assert_eq!((counts["available"].as_u64(), counts["held"].as_u64()), (Some(4), Some(0)));
        let retake = app.post("/v1/bookings", Some(&other.access), json!({"performance_id": id, "unit_ids": [ids[0]]})).await;
        assert_eq!(retake.status(), StatusCode::CREATED);
        assert_problem(app.delete(&path, Some(&customer.access)).await, StatusCode::CONFLICT).await;

        let swept = usher_server::sweeper::sweep_once(app.store.as_ref(), app.clock.as_ref()).await.unwrap();
        assert_eq!(swept, 1);
        assert_eq!(usher_server::sweeper::sweep_once(app.store.as_ref(), app.clock.as_ref()).await.unwrap(), 0);
        let read: Value = app.get(&path, Some(&customer.access)).await.json().await.unwrap();
        assert_eq!(read["status"], "expired");
        let after = app.post("/v1/bookings", Some(&other.access), json!({"performance_id": id, "unit_ids": [ids[1]]})).await;
        assert_eq!(after.status(), StatusCode::CREATED);
        let map: Value = app.get(&format!("/v1/performances/{id}/seats"), None).await.json().await.unwrap();
        let states: Vec<&str> = map["units"].as_array().unwrap().iter().map(|u| u["state"].as_str().unwrap()).collect();
        assert_eq!(states, ["held", "held", "available", "available"]);
    }

    async fn race_300_concurrent_http_holds_for_60_seats(engine) {
        // 300 requests from 10 buyers race over HTTP for 60 seats in 6 rows, asking for
        // 1–3 overlapping seats each. Winners get exactly their seats, losers get 409
        // and hold nothing, and the performance's invariants hold afterwards.
        let app = spawn_app(engine).await;
        let (_, organizer, _) = app.cast().await;
        let mut buyers = Vec::new();
        for i in 0..10 {
            buyers.push(app.signup(&format!("buyer{i}@example.com")).await);
        }
        let performance = on_sale(&app, &organizer, rows(&[10; 6]), 10).await;
        let id = performance["id"].as_str().unwrap().to_owned();
        let ids = unit_ids(&app, &id).await;
        let requests: Vec<_> = (0..300usize)
            .map(|i| {
                let n = 1 + i % 3;
                let x = (i * 37) % 60;
                let start = x - x % 10 + (x % 10).min(10 - n);
                let asked: Vec<String> = ids[start..start + n].to_vec();
                let token = buyers[i % 10].access.clone();
                let request = app
                    .client
                    .post(app.url("/v1/bookings"))
                    .bearer_auth(token)
                    .json(&json!({"performance_id": id, "unit_ids": asked}));
                tokio::spawn(async move {
                    let response = request.send().await.unwrap();
                    let status = response.status();
                    let body: Value = response.json().await.unwrap();
                    (asked, status, body)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut held = HashSet::new();
        let mut said_taken = HashSet::new();
        for request in requests {
            let (asked, status, body) = request.await.unwrap();
            match status {
                StatusCode::CREATED => {
                    assert_eq!(booked_ids(&body), asked);
                    for unit in &asked {
                        assert!(held.insert(unit.clone()), "seat {unit} sold twice");
                    }
                    winners.push(body["id"].as_str().unwrap().parse::<Uuid>().unwrap());
                }
                StatusCode::CONFLICT => {
                    let taken = str_ids(&body["unavailable_unit_ids"]);
                    assert!(!taken.is_empty() && taken.iter().all(|t| asked.contains(t)));
                    said_taken.extend(taken);
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
        // The house nearly sells out: a server answering 409 to everyone fails here.
        // (Every seat is asked for by some request; a few may stay free when each of
        // their askers lost another seat of its request.)
        assert!(winners.len() >= 20, "only {} winners", winners.len());
        assert!(held.len() >= 45, "only {} of 60 seats held", held.len());
        // A seat a loser was told is taken is held by a winner (nothing is released here).
        for seat in &said_taken {
            assert!(held.contains(seat), "seat {seat} was refused as taken but nobody holds it");
        }
        let counts: Value = app.get(&format!("/v1/performances/{id}"), None).await.json().await.unwrap();
        assert_eq!(counts["held"].as_u64(), Some(held.len() as u64), "losers hold nothing");
        let performance_id: PerformanceId = id.parse().unwrap();
        check_performance(app.store.as_ref(), performance_id, &winners, app.clock_now()).await.unwrap();
    }
}
