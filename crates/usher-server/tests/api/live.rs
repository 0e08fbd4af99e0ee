//! Live seat maps over WebSockets: the snapshot, every kind of change in order, a race
//! watched to its end, a second instance, expiry with nobody asking, and a watcher
//! too slow to read.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use usher_testkit::on_each_engine;

use crate::helpers::*;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn watch(app: &TestApp, performance_id: &str) -> Socket {
    let url = app
        .url(&format!("/v1/performances/{performance_id}/live"))
        .replacen("http://", "ws://", 1);
    let (socket, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    assert_eq!(response.status(), 101);
    socket
}

/// The next text message as JSON (control frames skipped), waiting at most 5 s.
async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a live message within 5 s")
            .expect("the socket is open")
            .expect("a readable message");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

fn states(message: &Value) -> Vec<(String, String)> {
    message["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["unit_id"].as_str().unwrap().to_owned(),
                c["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn hold(app: &TestApp, who: &Session, performance: &Value, ids: &[&String]) -> Value {
    let response = app
        .post(
            "/v1/bookings",
            Some(&who.access),
            json!({"performance_id": performance["id"], "unit_ids": ids}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

on_each_engine! {
    async fn every_change_reaches_watchers_in_order(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[6]), 4).await;
        let id = performance["id"].as_str().unwrap();
        let ids = unit_ids(&app, id).await;
        let mut socket = watch(&app, id).await;

        let snapshot = next(&mut socket).await;
        assert_eq!(snapshot["type"], "snapshot");
        assert_eq!(snapshot["seq"], 0);
        assert_eq!((snapshot["available"].as_u64(), snapshot["held"].as_u64(), snapshot["sold"].as_u64()), (Some(6), Some(0), Some(0)));
        assert_eq!(snapshot["units"].as_array().unwrap().len(), 6);

        // A hold.
        let first = hold(&app, &customer, &performance, &[&ids[0], &ids[1]]).await;
        let held = next(&mut socket).await;
        assert_eq!((held["type"].as_str(), held["seq"].as_i64()), (Some("units"), Some(1)));
        assert_eq!(states(&held), vec![(ids[0].clone(), "held".into()), (ids[1].clone(), "held".into())]);
        assert_eq!((held["available"].as_u64(), held["held"].as_u64()), (Some(4), Some(2)));

        // The buyer lets it go.
        let path = format!("/v1/bookings/{}", first["id"].as_str().unwrap());
        assert_eq!(app.delete(&path, Some(&customer.access)).await.status(), StatusCode::OK);
        let cancelled = next(&mut socket).await;
        assert_eq!(cancelled["seq"], 2);
        assert!(states(&cancelled).iter().all(|(_, s)| s == "available"));

        // A hold that is paid for: held, then sold (checkout changes no unit).
        let second = hold(&app, &customer, &performance, &[&ids[2]]).await;
        assert_eq!(next(&mut socket).await["seq"], 3);
        let checkout = start_checkout(&app, &customer, &second).await;
        assert!(pay(&app, &customer, &checkout, "succeeded").await.status().is_success());
        let sold = next(&mut socket).await;
        assert_eq!(sold["seq"], 4);
        assert_eq!(states(&sold), vec![(ids[2].clone(), "sold".into())]);
        assert_eq!(sold["sold"], 1);

        // The organizer blocks a house seat.
        let units = format!("/v1/performances/{id}/units");
        let blocked = app.patch(&units, Some(&organizer.access), json!({"unit_ids": [ids[5]], "state": "blocked"})).await;
        assert_eq!(blocked.status(), StatusCode::OK);
        let blocked = next(&mut socket).await;
        assert_eq!((blocked["seq"].as_i64(), states(&blocked)), (Some(5), vec![(ids[5].clone(), "blocked".into())]));

        // A hold that runs out, swept.
        hold(&app, &customer, &performance, &[&ids[3]]).await;
        assert_eq!(next(&mut socket).await["seq"], 6);
        app.clock.advance(chrono::Duration::seconds(601));
        usher_server::sweeper::sweep_once(app.store.as_ref(), app.clock.as_ref()).await.unwrap();
        let expired = next(&mut socket).await;
        assert_eq!((expired["seq"].as_i64(), states(&expired)), (Some(7), vec![(ids[3].clone(), "available".into())]));

        // The organizer refunds the sold seat.
        let refund = app.post("/v1/refunds", Some(&organizer.access), json!({"booking_id": second["id"]})).await;
        assert!(refund.status().is_success(), "{}", refund.status());
        let refunded = next(&mut socket).await;
        assert_eq!((refunded["seq"].as_i64(), states(&refunded)), (Some(8), vec![(ids[2].clone(), "available".into())]));
        assert_eq!((refunded["available"].as_u64(), refunded["held"].as_u64(), refunded["sold"].as_u64()), (Some(5), Some(0), Some(0)));

        // A new watcher starts from where the others are.
        let mut late = watch(&app, id).await;
        let snapshot = next(&mut late).await;
        assert_eq!((snapshot["seq"].as_i64(), snapshot["available"].as_u64()), (Some(8), Some(5)));
        let blocked_seat = snapshot["units"].as_array().unwrap().iter().find(|u| u["unit_id"] == ids[5].as_str()).unwrap();
        assert_eq!(blocked_seat["state"], "blocked");
        socket.close(None).await.ok();
    }

    async fn general_admission_watchers_see_ticket_types(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, standing(10), 4).await;
        let id = performance["id"].as_str().unwrap();
        let ticket_type = performance["ticket_types"][0]["id"].clone();
        let mut socket = watch(&app, id).await;
        let snapshot = next(&mut socket).await;
        assert!(snapshot.get("units").is_none());
        assert_eq!(snapshot["ticket_types"], json!([{"id": ticket_type, "available": 10}]));
        let response = app.post("/v1/bookings", Some(&customer.access), json!({"performance_id": id, "ticket_type_id": ticket_type, "quantity": 3})).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let change = next(&mut socket).await;
        assert_eq!(change["seq"], 1);
        assert_eq!(change["changes"].as_array().unwrap().len(), 3);
        assert_eq!(change["ticket_types"], json!([{"id": ticket_type, "available": 7}]));
    }

    async fn watchers_of_a_race_end_with_the_store_counts(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[10, 10, 10]), 4).await;
        let id = performance["id"].as_str().unwrap().to_owned();
        let ids = unit_ids(&app, &id).await;
        let mut watchers = vec![watch(&app, &id).await, watch(&app, &id).await];
        for w in &mut watchers {
            assert_eq!(next(w).await["type"], "snapshot");
        }
        // 80 holds of overlapping pairs race for 30 seats.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..80usize {
            let (url, token, id) = (app.url("/v1/bookings"), customer.access.clone(), id.clone());
            let pair = [ids[i % 30].clone(), ids[(i * 7 + 1) % 30].clone()];
            tasks.spawn(async move {
                let pair: Vec<&String> = if pair[0] == pair[1] { vec![&pair[0]] } else { vec![&pair[0], &pair[1]] };
                reqwest::Client::new().post(url).bearer_auth(token)
                    .json(&json!({"performance_id": id, "unit_ids": pair})).send().await.unwrap().status()
            });
        }
        let mut held = 0;
        while let Some(status) = tasks.join_next().await {
            let status = status.unwrap();
            assert!(status == StatusCode::CREATED || status == StatusCode::CONFLICT, "{status}");
            held += usize::from(status == StatusCode::CREATED);
        }
        assert!(held > 0);
        let inventory = app.store.inventory(id.parse().unwrap(), app.clock_now()).await.unwrap();
        let units = app.store.units(id.parse().unwrap(), app.clock_now()).await.unwrap();
        let head = app.store.live_heads(&[id.parse().unwrap()]).await.unwrap()[0].1;
        for watcher in &mut watchers {
            let mut seen = std::collections::HashMap::new();
            let mut last = Value::Null;
            for seq in 1..=head {
                last = next(watcher).await;
                assert_eq!(last["seq"], seq, "no gaps, no repeats");
                for (unit, state) in states(&last) {
                    seen.insert(unit, state);
                }
            }
            assert_eq!((last["available"].as_u64(), last["held"].as_u64(), last["sold"].as_u64()),
                (Some(inventory.total.available), Some(inventory.total.held), Some(inventory.total.sold)));
            for unit in &units {
                let shown = seen.get(&unit.id.to_string()).map_or("available", String::as_str);
                assert_eq!(shown, unit.state.as_str(), "unit {}", unit.id);
            }
        }
    }

    async fn a_second_instance_relays_changes_made_through_the_first(engine) {
        let app = spawn_app(engine).await;
        let other = app.restart().await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
        let id = performance["id"].as_str().unwrap();
        let ids = unit_ids(&app, id).await;
        let mut socket = watch(&other, id).await;
        assert_eq!(next(&mut socket).await["seq"], 0);
        for (i, unit) in ids.iter().enumerate() {
            hold(&app, &customer, &performance, &[unit]).await;
            let change = next(&mut socket).await;
            assert_eq!(change["seq"], i as i64 + 1);
            assert_eq!(states(&change), vec![(unit.clone(), "held".into())]);
        }
    }

    async fn an_expiry_reaches_watchers_with_nobody_asking(engine) {
        let app = spawn_app_with(engine, |c| c.sweep_interval = Some(Duration::from_millis(500))).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[2]), 4).await;
        let id = performance["id"].as_str().unwrap();
        let ids = unit_ids(&app, id).await;
        let mut socket = watch(&app, id).await;
        next(&mut socket).await;
        hold(&app, &customer, &performance, &[&ids[0]]).await;
        assert_eq!(next(&mut socket).await["seq"], 1);
        // Past the hold's time on the service's clock; nobody reads or writes from here
        // on, so only the sweeper (every 500 ms) can send the change.
        app.clock.advance(chrono::Duration::seconds(601));
        let expired = next(&mut socket).await;
        assert_eq!(states(&expired), vec![(ids[0].clone(), "available".into())]);
    }

    async fn unknown_hidden_or_plain_requests_are_refused(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, _) = app.cast().await;
        let event = app.create_event(&organizer, "Draft").await;
        let draft = app.post(&format!("/v1/events/{}/performances", event["id"].as_str().unwrap()), Some(&organizer.access),
            json!({"starts_at": (app.clock_now() + chrono::Duration::days(7)).to_rfc3339(), "seating": rows(&[2])})).await;
        assert_eq!(draft.status(), StatusCode::CREATED);
        let draft: Value = draft.json().await.unwrap();
        let url = |id: &str| app.url(&format!("/v1/performances/{id}/live")).replacen("http://", "ws://", 1);
        for id in [uuid::Uuid::now_v7().to_string(), "not-an-id".to_owned(), draft["id"].as_str().unwrap().to_owned()] {
            match tokio_tungstenite::connect_async(url(&id)).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
                other => panic!("expected 404 for {id}, got {other:?}"),
            }
        }
        // Its organizer sees the draft, with the token in the query (browsers cannot set
        // headers on a WebSocket).
        let own = format!("{}?access_token={}", url(draft["id"].as_str().unwrap()), organizer.access);
        let (mut socket, _) = tokio_tungstenite::connect_async(own).await.unwrap();
        assert_eq!(next(&mut socket).await["type"], "snapshot");
        let forged = format!("{}?access_token=forged", url(draft["id"].as_str().unwrap()));
        match tokio_tungstenite::connect_async(forged).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("expected 401 for a forged token, got {other:?}"),
        }
        // Not a WebSocket: a problem document.
        let plain = app.get(&format!("/v1/performances/{}/live", draft["id"].as_str().unwrap()), Some(&organizer.access)).await;
        assert!(plain.status().is_client_error());
        assert_eq!(plain.headers()["content-type"], "application/problem+json");
    }
}

/// A watcher that stops reading is cut off once it is a backlog behind, and the feed
/// carries on for everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_too_slow_to_read_is_disconnected() {
    let app = spawn_app_with(usher_testkit::Engine::Sqlite, |c| c.live_backlog = 4).await;
    let (_, organizer, _) = app.cast().await;
    let performance = on_sale(&app, &organizer, rows(&[50; 20]), 4).await;
    let id: uuid::Uuid = performance["id"].as_str().unwrap().parse().unwrap();
    let all: Vec<uuid::Uuid> = unit_ids(&app, &id.to_string())
        .await
        .iter()
        .map(|u| u.parse().unwrap())
        .collect();

    // A client with a tiny receive buffer that reads the snapshot and then stops.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(app.address.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap();
    let url = format!(
        "{}/v1/performances/{id}/live",
        app.address.replacen("http://", "ws://", 1)
    );
    let (mut slow, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    assert_eq!(next(&mut slow).await["type"], "snapshot");
    let mut reader = watch(&app, &id.to_string()).await;
    next(&mut reader).await;

    // Each change moves all 1,000 seats (~60 KB a message): far more than the socket
    // buffers hold, so the server's sends to the slow client stall.
    let changes = 120;
    let keep_reading = tokio::spawn(async move {
        let mut last = 0;
        while last < changes {
            last = next(&mut reader).await["seq"].as_i64().unwrap();
        }
        last
    });
    let slow_disconnects = async || -> u64 {
        let text = app.get("/metrics", None).await.text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("usher_live_slow_disconnects_total "))
            .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
    };
    let before = slow_disconnects().await;
    let writer = {
        let (store, now) = (app.store.clone(), app.clock_now());
        tokio::spawn(async move {
            for i in 0..changes {
                let block = usher_store::InventoryCommand::SetBlocked {
                    performance_id: id.into(),
                    unit_ids: all.clone().into_iter().map(Into::into).collect(),
                    blocked: i % 2 == 0,
                    now,
                    audit: usher_store::Audit::system(),
                };
                let outcome = usher_app::inventory::execute(store.as_ref(), block)
                    .await
                    .unwrap();
                assert!(matches!(
                    outcome,
                    usher_store::CommandOutcome::BlockingChanged { .. }
                ));
            }
        })
    };
    // The server gives up on the slow one (its counter says so; this is the only test
    // with a watcher that stops reading); from then on the watcher reads again, and
    // has a second to take what was in flight and the close saying why.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while slow_disconnects().await <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow watcher was never cut off"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut received = 0;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Text(_))) => received += 1,
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    };
    assert!(
        received < changes,
        "the slow watcher was not buffered without bound"
    );
    let close = close.expect("a close code");
    assert_eq!(close.code, CloseCode::Again, "{}", close.reason);
    writer.await.unwrap();
    assert_eq!(
        keep_reading.await.unwrap(),
        changes,
        "a reader that keeps up sees every change"
    );
}

on_each_engine! {
    async fn a_cached_seat_map_is_dropped_when_the_feed_says_it_changed(engine) {
        // Kept for a minute unless the feed says otherwise; another instance makes the
        // change (on SQLite, this instance: there is no second SQLite instance in a
        // deployment).
        let app = spawn_app_with(engine, |c| c.seat_map_max_age = Duration::from_secs(60)).await;
        let writer = match engine {
            usher_testkit::Engine::Postgres => Some(app.restart().await),
            usher_testkit::Engine::Sqlite => None,
        };
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[3]), 4).await;
        let id = performance["id"].as_str().unwrap();
        let ids = unit_ids(&app, id).await;
        hold(writer.as_ref().unwrap_or(&app), &customer, &performance, &[&ids[0]]).await;
        let started = std::time::Instant::now();
        loop {
            let map: Value = app.get(&format!("/v1/performances/{id}/seats"), None).await.json().await.unwrap();
            if map["units"][0]["state"] == "held" {
                break;
            }
            // Well inside the minute the map would otherwise be kept.
            assert!(started.elapsed() < Duration::from_secs(20), "the cached map was not dropped");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A watcher whose instance missed changes that the log no longer has (purged) is told
/// to reconnect, and starts again from a snapshot that has them. SQLite only: there the
/// second instance hears of the first's changes only by looking at the heads, so the
/// purge reliably comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_behind_what_the_log_keeps_is_told_to_reconnect() {
    let app = spawn_app(usher_testkit::Engine::Sqlite).await;
    let other = app.restart().await;
    let (_, organizer, customer) = app.cast().await;
    let performance = on_sale(&app, &organizer, rows(&[2]), 4).await;
    let id = performance["id"].as_str().unwrap();
    let ids = unit_ids(&app, id).await;
    let mut socket = watch(&other, id).await;
    assert_eq!(next(&mut socket).await["seq"], 0);
    hold(&app, &customer, &performance, &[&ids[0]]).await;
    app.store
        .live_purge(app.clock_now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close code"),
            Some(Ok(Message::Text(text))) => panic!("a change the log no longer has: {text}"),
            Some(Ok(_)) => {}
            other => panic!("the socket ended without a close: {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::Restart);
    let mut again = watch(&other, id).await;
    let snapshot = next(&mut again).await;
    assert_eq!(
        (snapshot["seq"].as_i64(), snapshot["held"].as_u64()),
        (Some(1), Some(1))
    );
}
