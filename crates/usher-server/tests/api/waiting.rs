//! The waiting list of a sold-out performance and the waiting room of an on-sale, over
//! HTTP on both engines: who may join, who is served or admitted in what order, what
//! the others are told, and that the invariants hold under a race.

use std::collections::{HashMap, HashSet};

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use usher_testkit::on_each_engine;

use crate::helpers::{
    Session, TestApp, assert_problem, on_sale, rows, spawn_app, spawn_app_with, standing,
};

async fn hold(app: &TestApp, who: &Session, body: Value) -> reqwest::Response {
    app.post("/v1/bookings", Some(&who.access), body).await
}

async fn join(app: &TestApp, who: &Session, performance: &Value, body: Value) -> reqwest::Response {
    let path = format!(
        "/v1/performances/{}/waitlist",
        performance["id"].as_str().unwrap()
    );
    app.post(&path, Some(&who.access), body).await
}

async fn entries(app: &TestApp, who: &Session) -> Vec<Value> {
    let page: Value = app
        .get("/v1/waitlist", Some(&who.access))
        .await
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

async fn serve(app: &TestApp, performance: &Value) {
    let id = Uuid::parse_str(performance["id"].as_str().unwrap()).unwrap();
    usher_server::waiting::serve(&app.state, id).await;
}

async fn customers(app: &TestApp, n: usize, prefix: &str) -> Vec<Session> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(app.signup(&format!("{prefix}{i}@example.com")).await);
    }
    all
}

on_each_engine! {
    async fn a_sold_out_performance_serves_its_waiting_list_in_order_a_group_at_once(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[4, 4]), 4).await;
        let [b, c, d] = <[Session; 3]>::try_from(customers(&app, 3, "waiter").await).unwrap();
        // Free seats and nobody waiting: hold them instead.
        let early = join(&app, &b, &performance, json!({"quantity": 2})).await;
        assert_eq!(assert_problem(early, StatusCode::CONFLICT).await["type"], "/problems/not-sold-out");
        // Sold out but for one seat.
        let mut held = Vec::new();
        for quantity in [4, 3] {
            let r = hold(&app, &customer, json!({"performance_id": performance["id"], "quantity": quantity, "best_available": true})).await;
            assert_eq!(r.status(), StatusCode::CREATED);
            held.push(r.json::<Value>().await.unwrap());
        }
        // Bad input changes nothing.
        let bad = join(&app, &b, &performance, json!({"quantity": 9})).await;
        assert_problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await;
        let bad = join(&app, &b, &performance, json!({"quantity": 1, "ticket_type_id": Uuid::now_v7()})).await;
        assert_problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await;
        let anonymous = app.post(&format!("/v1/performances/{}/waitlist", performance["id"].as_str().unwrap()), None, json!({"quantity": 1})).await;
        assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
        // One seat free is no offer for a pair: B waits, first.
        let joined = join(&app, &b, &performance, json!({"quantity": 2})).await;
        assert_eq!(joined.status(), StatusCode::CREATED);
        let b_entry: Value = joined.json().await.unwrap();
        assert_eq!((b_entry["status"].as_str(), b_entry["position"].as_u64(), b_entry["quantity"].as_u64()), (Some("waiting"), Some(1), Some(2)));
        // Joining again is the same entry.
        let again = join(&app, &b, &performance, json!({"quantity": 2})).await;
        assert_eq!(again.status(), StatusCode::OK);
        assert_eq!(again.json::<Value>().await.unwrap()["id"], b_entry["id"]);
        // While B waits, the free seat is the waiting list's: C cannot hold it, C joins.
        let kept = hold(&app, &c, json!({"performance_id": performance["id"], "quantity": 1, "best_available": true})).await;
        assert_problem(kept, StatusCode::CONFLICT).await;
        let c_entry: Value = join(&app, &c, &performance, json!({"quantity": 1})).await.json().await.unwrap();
        assert_eq!(c_entry["position"], 2);
        // Nobody can be served yet but C, who may pass B (a smaller group, once).
        serve(&app, &performance).await;
        let c_now = &entries(&app, &c).await[0];
        assert_eq!(c_now["status"], "offered");
        let b_now = &entries(&app, &b).await[0];
        assert_eq!((b_now["status"].as_str(), b_now["position"].as_u64()), (Some("waiting"), Some(1)));
        // The four-seat hold is cancelled: B gets two seats side by side, as a hold made
        // for them that reads `offer: true`.
        let cancelled = app.delete(&format!("/v1/bookings/{}", held[0]["id"].as_str().unwrap()), Some(&customer.access)).await;
        assert_eq!(cancelled.status(), StatusCode::OK);
        let d_kept = hold(&app, &d, json!({"performance_id": performance["id"], "quantity": 1, "best_available": true})).await;
        assert_problem(d_kept, StatusCode::CONFLICT).await;
        serve(&app, &performance).await;
        let b_now = entries(&app, &b).await.remove(0);
        assert_eq!(b_now["status"], "offered");
        assert!(b_now["position"].is_null());
        let offer: Value = app.get(&format!("/v1/bookings/{}", b_now["booking_id"].as_str().unwrap()), Some(&b.access)).await.json().await.unwrap();
        assert_eq!((offer["status"].as_str(), offer["offer"].as_bool()), (Some("held"), Some(true)));
        let seats: Vec<u64> = offer["units"].as_array().unwrap().iter().map(|u| u["label"].as_str().unwrap().parse().unwrap()).collect();
        assert_eq!(seats.len(), 2);
        assert_eq!(seats[1], seats[0] + 1, "a pair side by side: {seats:?}");
        assert_eq!(offer["expires_at"], b_now["offer_expires_at"]);
        // Each offer is an email.
        app.run_jobs().await;
        let mails = app.emails();
        let offers: Vec<&String> = mails.iter().filter(|m| m.contains("held for you")).collect();
        assert_eq!(offers.len(), 2, "{mails:?}");
        // Nobody waits any more: the two seats left are for anyone.
        let d_hold = hold(&app, &d, json!({"performance_id": performance["id"], "quantity": 2, "best_available": true})).await;
        assert_eq!(d_hold.status(), StatusCode::CREATED);
        // B pays for the offer: booked. C lets it lapse: lapsed.
        let checkout: Value = app.post(&format!("/v1/bookings/{}/checkout", offer["id"].as_str().unwrap()), Some(&b.access), json!({})).await.json().await.unwrap();
        let paid = app.post(&format!("/v1/payments/mock/{}/complete", checkout["payment_id"].as_str().unwrap()), Some(&b.access), json!({"outcome": "succeeded"})).await;
        assert_eq!(paid.status(), StatusCode::OK);
        assert_eq!(entries(&app, &b).await[0]["status"], "booked");
        app.clock.advance(app.config.offer_ttl + chrono::Duration::seconds(1));
        assert_eq!(entries(&app, &c).await[0]["status"], "lapsed");
        // Someone else's entry is not found; leaving twice is fine.
        let foreign = app.delete(&format!("/v1/waitlist/{}", c_entry["id"].as_str().unwrap()), Some(&b.access)).await;
        assert_problem(foreign, StatusCode::NOT_FOUND).await;
    }

    async fn one_buyer_joining_twenty_times_at_once_gets_one_entry_and_one_ticket(engine) {
        let app = std::sync::Arc::new(spawn_app(engine).await);
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[1]), 1).await;
        let holder = app.signup("holder@example.com").await;
        hold(&app, &holder, json!({"performance_id": performance["id"], "quantity": 1, "best_available": true})).await;
        let roomy = on_sale(&app, &organizer, rows(&[1]), 1).await;
        let queue = format!("/v1/performances/{}/queue", roomy["id"].as_str().unwrap());
        app.patch(&format!("/v1/performances/{}", roomy["id"].as_str().unwrap()), Some(&organizer.access), json!({"waiting_room": {"enabled": true}})).await;
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (app, customer, performance, queue) = (app.clone(), customer.clone(), performance.clone(), queue.clone());
            tasks.push(tokio::spawn(async move {
                let r = if i % 2 == 0 {
                    join(&app, &customer, &performance, json!({"quantity": 1})).await
                } else {
                    app.post(&queue, Some(&customer.access), json!({})).await
                };
                let status = r.status();
                let body: Value = r.json().await.unwrap();
                (i % 2, status, body["id"].as_str().or(body["ticket_id"].as_str()).unwrap().to_owned())
            }));
        }
        let mut seen: HashMap<(usize, StatusCode), HashSet<String>> = HashMap::new();
        for task in tasks {
            let (kind, status, id) = task.await.unwrap();
            seen.entry((kind, status)).or_default().insert(id);
        }
        for kind in [0, 1] {
            let created = &seen[&(kind, StatusCode::CREATED)];
            assert_eq!(created.len(), 1, "{seen:?}");
            // Every repeat names the one that was created.
            assert!(seen.get(&(kind, StatusCode::OK)).is_none_or(|again| again == created), "{seen:?}");
            let answers: usize = seen.iter().filter(|((k, _), _)| *k == kind).map(|(_, ids)| ids.len()).sum();
            assert!(answers <= 2, "{seen:?}");
        }
        assert_eq!(entries(&app, &customer).await.len(), 1);
    }

    async fn turning_an_offer_down_passes_it_on_and_the_first_in_line_is_never_starved(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, standing(5), 5).await;
        let ticket_type = performance["ticket_types"][0]["id"].clone();
        let standing_hold = |quantity: u32| json!({"performance_id": performance["id"], "ticket_type_id": ticket_type, "quantity": quantity});
        let mut singles = Vec::new();
        for _ in 0..5 {
            singles.push(hold(&app, &customer, standing_hold(1)).await.json::<Value>().await.unwrap());
        }
        // First in line wants three; four single buyers queue behind.
        let waiters = customers(&app, 5, "line").await;
        let mut ids = Vec::new();
        for (i, who) in waiters.iter().enumerate() {
            let quantity = if i == 0 { 3 } else { 1 };
            let r = join(&app, who, &performance, json!({"quantity": quantity, "ticket_type_id": ticket_type})).await;
            assert_eq!(r.status(), StatusCode::CREATED);
            ids.push(r.json::<Value>().await.unwrap());
        }
        assert_eq!(ids.iter().map(|e| e["position"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        // Seats come back one at a time: three singles pass the head, then no more.
        for single in &singles {
            app.delete(&format!("/v1/bookings/{}", single["id"].as_str().unwrap()), Some(&customer.access)).await;
            serve(&app, &performance).await;
        }
        assert_eq!(statuses(&app, &waiters).await, ["waiting", "offered", "offered", "offered", "waiting"]);
        // Two free units wait for the head; nobody else may take them.
        let sniped = hold(&app, &customer, standing_hold(1)).await;
        assert_problem(sniped, StatusCode::CONFLICT).await;
        // The second turns the offer down: three free, the head is served.
        let left = app.delete(&format!("/v1/waitlist/{}", ids[1]["id"].as_str().unwrap()), Some(&waiters[1].access)).await;
        assert_eq!(left.status(), StatusCode::OK);
        assert_eq!(left.json::<Value>().await.unwrap()["status"], "left");
        serve(&app, &performance).await;
        assert_eq!(statuses(&app, &waiters).await, ["offered", "left", "offered", "offered", "waiting"]);
        let head = entries(&app, &waiters[0]).await.remove(0);
        let offer: Value = app.get(&format!("/v1/bookings/{}", head["booking_id"].as_str().unwrap()), Some(&waiters[0].access)).await.json().await.unwrap();
        assert_eq!(offer["units"].as_array().unwrap().len(), 3);
        // An offer that lapses goes to the next in line.
        app.clock.advance(app.config.offer_ttl + chrono::Duration::seconds(1));
        usher_server::sweeper::sweep_once(app.store.as_ref(), app.clock.as_ref()).await.unwrap();
        serve(&app, &performance).await;
        let last = statuses(&app, &waiters).await;
        assert_eq!(last, ["lapsed", "left", "lapsed", "lapsed", "offered"]);
    }

    async fn thirty_concurrent_joins_are_told_one_to_thirty_and_later_reads_agree(engine) {
        // Thirty buyers join one sold-out performance's waiting list at the same moment:
        // each is told a different place, 1 to 30, and what each was told is what its
        // entry says afterwards (and so who is served first).
        let app = std::sync::Arc::new(spawn_app(engine).await);
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[2]), 4).await;
        let sold_out = hold(&app, &customer, json!({"performance_id": performance["id"], "quantity": 2, "best_available": true})).await;
        assert_eq!(sold_out.status(), StatusCode::CREATED);
        let waiters = customers(&app, 30, "line").await;
        let tasks: Vec<_> = waiters
            .iter()
            .cloned()
            .map(|who| {
                let (app, performance) = (app.clone(), performance.clone());
                tokio::spawn(async move {
                    let r = join(&app, &who, &performance, json!({"quantity": 1})).await;
                    assert_eq!(r.status(), StatusCode::CREATED);
                    let entry: Value = r.json().await.unwrap();
                    (who, entry["position"].as_u64().expect("a place in line"))
                })
            })
            .collect();
        let mut told = Vec::new();
        for task in tasks {
            told.push(task.await.unwrap());
        }
        let mut places: Vec<u64> = told.iter().map(|(_, p)| *p).collect();
        places.sort_unstable();
        assert_eq!(places, (1..=30).collect::<Vec<u64>>(), "each told a different place");
        for (who, place) in &told {
            let entry = entries(&app, who).await.remove(0);
            assert_eq!(entry["position"].as_u64(), Some(*place), "{} was told {place}", who.id);
        }
    }

    async fn thirty_waiters_releases_and_new_buyers_at_once(engine) {
        // The waiting list served by the instance on its own (every 50 ms and on every
        // release) while holders cancel and new buyers try their luck, all at once.
        let app = std::sync::Arc::new(spawn_app_with(engine, |c| c.waiting_interval = Some(std::time::Duration::from_millis(50))).await);
        let (_, organizer, _) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[10, 10, 10]), 4).await;
        let performance_id = performance["id"].as_str().unwrap().to_owned();
        let holders = customers(&app, 10, "holder").await;
        let mut held = Vec::new();
        for who in &holders {
            let r = hold(&app, who, json!({"performance_id": performance_id, "quantity": 3, "best_available": true})).await;
            assert_eq!(r.status(), StatusCode::CREATED);
            held.push((who.clone(), r.json::<Value>().await.unwrap()));
        }
        let waiters = customers(&app, 30, "w").await;
        let mut line = Vec::new();
        for (i, who) in waiters.iter().enumerate() {
            let quantity = 1 + (i % 3) as u64;
            let r = join(&app, who, &performance, json!({"quantity": quantity})).await;
            assert_eq!(r.status(), StatusCode::CREATED);
            line.push((who.clone(), quantity));
        }
        let buyers = customers(&app, 20, "late").await;
        let mut tasks = Vec::new();
        for (who, booking) in held.iter().take(8).cloned() {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let r = app.delete(&format!("/v1/bookings/{}", booking["id"].as_str().unwrap()), Some(&who.access)).await;
                assert_eq!(r.status(), StatusCode::OK);
                None
            }));
        }
        for who in buyers {
            let app = app.clone();
            let performance_id = performance_id.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = None;
                for _ in 0..5 {
                    let r = hold(&app, &who, json!({"performance_id": performance_id, "quantity": 1, "best_available": true})).await;
                    if r.status() == StatusCode::CREATED {
                        got = Some(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                got
            }));
        }
        let mut late_bookings = Vec::new();
        for task in tasks {
            if let Some(id) = task.await.unwrap() {
                late_bookings.push(id);
            }
        }
        // The instance serves what came free on its own: wait until it has (units held
        // beyond the two holds that stand are offers), then finish the walk here so
        // that what is read below does not depend on where its timer is.
        let performance_uuid = Uuid::parse_str(&performance_id).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while app.store.inventory(performance_uuid.into(), app.clock_now()).await.unwrap().total.held <= 2 * 3 {
            assert!(std::time::Instant::now() < deadline, "the instance never served the waiting list");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        serve(&app, &performance).await;
        // What each waiter holds now.
        let mut bookings: Vec<Uuid> = held.iter().map(|(_, b)| Uuid::parse_str(b["id"].as_str().unwrap()).unwrap()).collect();
        bookings.extend(late_bookings.iter().map(|id| Uuid::parse_str(id).unwrap()));
        let mut offered_units = HashSet::new();
        let mut state_of = Vec::new();
        for (who, quantity) in &line {
            let entry = entries(&app, who).await.remove(0);
            let status = entry["status"].as_str().unwrap().to_owned();
            if status == "offered" {
                let booking_id = entry["booking_id"].as_str().unwrap();
                bookings.push(Uuid::parse_str(booking_id).unwrap());
                let offer: Value = app.get(&format!("/v1/bookings/{booking_id}"), Some(&who.access)).await.json().await.unwrap();
                let units = offer["units"].as_array().unwrap();
                assert_eq!(units.len() as u64, *quantity, "a whole group at once");
                for unit in units {
                    assert!(offered_units.insert(unit["id"].as_str().unwrap().to_owned()), "a unit offered twice");
                }
            }
            state_of.push((status, *quantity));
        }
        // 24 seats came back for 60 wanted: offers in order, a later one only when
        // smaller than everyone still waiting before it, never more than three passes.
        let served: u64 = state_of.iter().filter(|(s, _)| s == "offered").map(|(_, q)| q).sum();
        assert!(served > 0 && served <= 24, "{state_of:?}");
        let first_waiting = state_of.iter().position(|(s, _)| s == "waiting").unwrap();
        let passed: Vec<&(String, u64)> = state_of[first_waiting..].iter().filter(|(s, _)| s == "offered").collect();
        assert!(passed.len() <= 3, "the head was passed {} times: {state_of:?}", passed.len());
        for (_, quantity) in &passed {
            assert!(*quantity < state_of[first_waiting].1, "{state_of:?}");
        }
        // People still wait, so no newcomer got anything.
        assert!(late_bookings.is_empty(), "newcomers took units from the waiting list: {late_bookings:?}");
        let now = app.clock_now();
        usher_testkit::invariants::check_performance(app.store.as_ref(), performance_uuid.into(), &bookings, now).await.unwrap();
        let inventory = app.store.inventory(performance_uuid.into(), now).await.unwrap().total;
        assert_eq!(inventory.held, 2 * 3 + served, "two holds stand, the rest went to the waiting list");
        assert_eq!(inventory.available, 24 - served);
    }
}

on_each_engine! {
    async fn a_waiting_room_draws_at_the_opening_and_admits_at_the_pace_of_the_sale(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[10]), 2).await;
        let path = format!("/v1/performances/{}", performance["id"].as_str().unwrap());
        let opens = app.clock_now() + chrono::Duration::hours(1);
        let edited = app.patch(&path, Some(&organizer.access), json!({"on_sale_at": opens.to_rfc3339(), "waiting_room": {"enabled": true}})).await;
        assert_eq!(edited.status(), StatusCode::OK);
        assert_eq!(edited.json::<Value>().await.unwrap()["waiting_room"]["enabled"], true);
        let queue = format!("{path}/queue");
        // Thirty join before the opening; each is told a place in the draw so far.
        let crowd = customers(&app, 30, "fan").await;
        let mut tickets = Vec::new();
        for who in &crowd {
            let r = app.post(&queue, Some(&who.access), json!({})).await;
            assert_eq!(r.status(), StatusCode::CREATED);
            let ticket: Value = r.json().await.unwrap();
            assert_eq!(ticket["state"], "waiting");
            assert!(ticket["position"].as_u64().unwrap() >= 1);
            assert!(ticket["eta_seconds"].as_u64().unwrap() > 3_000, "{ticket}");
            tickets.push(ticket);
        }
        let again = app.post(&queue, Some(&crowd[0].access), json!({})).await;
        assert_eq!(again.status(), StatusCode::OK);
        assert_eq!(again.json::<Value>().await.unwrap()["ticket_id"], tickets[0]["ticket_id"]);
        // The sale is not open: holds are refused as before.
        let early = hold(&app, &crowd[0], json!({"performance_id": performance["id"], "quantity": 1, "best_available": true})).await;
        assert_eq!(assert_problem(early, StatusCode::CONFLICT).await["type"], "/problems/not-on-sale");
        // The on-sale time can move until it passes.
        let moved = app.patch(&path, Some(&organizer.access), json!({"on_sale_at": opens.to_rfc3339()})).await;
        assert_eq!(moved.status(), StatusCode::OK);
        app.clock.advance(chrono::Duration::hours(1));
        let too_late = app.patch(&path, Some(&organizer.access), json!({"on_sale_at": (opens + chrono::Duration::hours(1)).to_rfc3339()})).await;
        assert_problem(too_late, StatusCode::UNPROCESSABLE_ENTITY).await;
        // The opening: the draw numbers everyone; ten seats, two each: five admitted.
        usher_server::waiting::step_rooms(&app.state).await;
        let mut by_position = HashMap::new();
        let mut admitted = Vec::new();
        for (who, ticket) in crowd.iter().zip(&tickets) {
            let now: Value = app.get(&format!("/v1/queue/{}", ticket["ticket_id"].as_str().unwrap()), Some(&who.access)).await.json().await.unwrap();
            match now["state"].as_str().unwrap() {
                "admitted" => admitted.push((who.clone(), now)),
                "waiting" => {
                    assert!(now["admission_token"].is_null());
                    assert!(by_position.insert(now["position"].as_u64().unwrap(), who.id.clone()).is_none(), "two in one place");
                }
                other => panic!("{other}"),
            }
        }
        assert_eq!(admitted.len(), 5);
        let mut places: Vec<u64> = by_position.keys().copied().collect();
        places.sort();
        assert_eq!(places, (1..=25).collect::<Vec<_>>());
        // Without an admission (or with someone else's): 403.
        let body = json!({"performance_id": performance["id"], "quantity": 2, "best_available": true});
        let none = hold(&app, &customer, body.clone()).await;
        assert_eq!(assert_problem(none, StatusCode::FORBIDDEN).await["type"], "/problems/admission-required");
        let token = admitted[0].1["admission_token"].as_str().unwrap().to_owned();
        let borrowed = app.client.post(app.url("/v1/bookings")).bearer_auth(&customer.access).header("Usher-Admission", &token).json(&body).send().await.unwrap();
        assert_eq!(assert_problem(borrowed, StatusCode::FORBIDDEN).await["type"], "/problems/admission-required");
        let forged = app.client.post(app.url("/v1/bookings")).bearer_auth(&admitted[0].0.access).header("Usher-Admission", format!("{token}x")).json(&body).send().await.unwrap();
        assert_problem(forged, StatusCode::FORBIDDEN).await;
        // The five admitted hold two each: sold out but for live holds.
        let mut holds = Vec::new();
        for (who, ticket) in &admitted {
            let r = app.client.post(app.url("/v1/bookings")).bearer_auth(&who.access)
                .header("Usher-Admission", ticket["admission_token"].as_str().unwrap()).json(&body).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            holds.push((who.clone(), r.json::<Value>().await.unwrap()));
        }
        // A late arrival queues behind everyone.
        let late = app.signup("late@example.com").await;
        let late_ticket: Value = app.post(&queue, Some(&late.access), json!({})).await.json().await.unwrap();
        assert_eq!(late_ticket["position"], 26);
        // Nothing free: nobody more is admitted; a restart loses no one's place.
        usher_server::waiting::step_rooms(&app.state).await;
        let restarted = app.restart().await;
        let first = by_position[&1].clone();
        let (who, ticket) = crowd.iter().zip(&tickets).find(|(w, _)| w.id == first).unwrap();
        let read: Value = restarted.get(&format!("/v1/queue/{}", ticket["ticket_id"].as_str().unwrap()), Some(&who.access)).await.json().await.unwrap();
        assert_eq!((read["state"].as_str(), read["position"].as_u64()), (Some("waiting"), Some(1)));
        // A hold runs out: its two seats admit the next one.
        app.delete(&format!("/v1/bookings/{}", holds[0].1["id"].as_str().unwrap()), Some(&holds[0].0.access)).await;
        usher_server::waiting::step_rooms(&app.state).await;
        let read: Value = app.get(&format!("/v1/queue/{}", ticket["ticket_id"].as_str().unwrap()), Some(&who.access)).await.json().await.unwrap();
        assert_eq!(read["state"], "admitted");
        assert!(read["admission_token"].is_string());
        // Everything sold: the rest of the queue is closed.
        for (who, booking) in holds.iter().skip(1) {
            let checkout: Value = app.post(&format!("/v1/bookings/{}/checkout", booking["id"].as_str().unwrap()), Some(&who.access), json!({})).await.json().await.unwrap();
            app.post(&format!("/v1/payments/mock/{}/complete", checkout["payment_id"].as_str().unwrap()), Some(&who.access), json!({"outcome": "succeeded"})).await;
        }
        let r = app.client.post(app.url("/v1/bookings")).bearer_auth(&who.access)
            .header("Usher-Admission", read["admission_token"].as_str().unwrap()).json(&body).send().await.unwrap();
        let last: Value = r.json().await.unwrap();
        let checkout: Value = app.post(&format!("/v1/bookings/{}/checkout", last["id"].as_str().unwrap()), Some(&who.access), json!({})).await.json().await.unwrap();
        app.post(&format!("/v1/payments/mock/{}/complete", checkout["payment_id"].as_str().unwrap()), Some(&who.access), json!({"outcome": "succeeded"})).await;
        usher_server::waiting::step_rooms(&app.state).await;
        let closed: Value = app.get(&format!("/v1/queue/{}", late_ticket["ticket_id"].as_str().unwrap()), Some(&late.access)).await.json().await.unwrap();
        assert_eq!(closed["state"], "closed");
        // Tickets are their holders' own.
        let foreign = app.get(&format!("/v1/queue/{}", late_ticket["ticket_id"].as_str().unwrap()), Some(&customer.access)).await;
        assert_problem(foreign, StatusCode::NOT_FOUND).await;
        // A performance without a waiting room has no queue.
        let plain = on_sale(&app, &organizer, rows(&[2]), 2).await;
        let r = app.post(&format!("/v1/performances/{}/queue", plain["id"].as_str().unwrap()), Some(&customer.access), json!({})).await;
        assert_eq!(assert_problem(r, StatusCode::CONFLICT).await["type"], "/problems/no-waiting-room");
    }

    async fn the_queue_socket_tells_the_place_then_the_admission_which_expires(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[10]), 2).await;
        let path = format!("/v1/performances/{}", performance["id"].as_str().unwrap());
        let opens = app.clock_now() + chrono::Duration::hours(1);
        app.patch(&path, Some(&organizer.access), json!({"on_sale_at": opens.to_rfc3339(), "waiting_room": {"enabled": true}})).await;
        let ticket: Value = app.post(&format!("{path}/queue"), Some(&customer.access), json!({})).await.json().await.unwrap();
        let live = |token: Option<&str>| {
            let mut url = app.url(&format!("/v1/queue/{}/live", ticket["ticket_id"].as_str().unwrap())).replacen("http://", "ws://", 1);
            if let Some(token) = token {
                url.push_str(&format!("?access_token={token}"));
            }
            tokio_tungstenite::connect_async(url)
        };
        // Only its holder may follow a ticket.
        assert!(live(None).await.is_err());
        let stranger = app.signup("stranger@example.com").await;
        assert!(live(Some(&stranger.access)).await.is_err());
        let (mut socket, _) = live(Some(&customer.access)).await.unwrap();
        let first = next_text(&mut socket).await;
        assert_eq!((first["state"].as_str(), first["position"].as_u64()), (Some("waiting"), Some(1)));
        assert!(first["admission_token"].is_null());
        // The opening admits them: the socket says so, with the admission.
        app.clock.advance(chrono::Duration::hours(1));
        usher_server::waiting::step_rooms(&app.state).await;
        let admitted = next_text(&mut socket).await;
        assert_eq!(admitted["state"], "admitted");
        let token = admitted["admission_token"].as_str().unwrap().to_owned();
        let body = json!({"performance_id": performance["id"], "quantity": 1, "best_available": true});
        let held_with = |token: String| {
            app.client.post(app.url("/v1/bookings")).bearer_auth(&customer.access).header("Usher-Admission", token).json(&body).send()
        };
        assert_eq!(held_with(token.clone()).await.unwrap().status(), StatusCode::CREATED);
        // An admission lasts its time, then holds with it are refused.
        app.clock.advance(app.config.admission_ttl + chrono::Duration::seconds(1));
        let late = held_with(token).await.unwrap();
        assert_eq!(assert_problem(late, StatusCode::FORBIDDEN).await["type"], "/problems/admission-required");
    }

    async fn arriving_early_gives_no_edge(engine) {
        // Across many openings, where someone arrived says nothing of where the draw put
        // them: the rank correlation of arrival and place averages out near zero.
        let app = spawn_app(engine).await;
        let (_, organizer, _) = app.cast().await;
        let crowd = customers(&app, 40, "early").await;
        let mut correlations = Vec::new();
        for _ in 0..12 {
            let performance = on_sale(&app, &organizer, rows(&[1]), 1).await;
            let path = format!("/v1/performances/{}", performance["id"].as_str().unwrap());
            let opens = app.clock_now() + chrono::Duration::minutes(5);
            app.patch(&path, Some(&organizer.access), json!({"on_sale_at": opens.to_rfc3339(), "waiting_room": {"enabled": true}})).await;
            let mut tickets = Vec::new();
            for who in &crowd {
                let ticket: Value = app.post(&format!("{path}/queue"), Some(&who.access), json!({})).await.json().await.unwrap();
                tickets.push(ticket);
            }
            app.clock.advance(chrono::Duration::minutes(5));
            usher_server::waiting::step_rooms(&app.state).await;
            let mut places = Vec::new();
            for (who, ticket) in crowd.iter().zip(&tickets) {
                let now: Value = app.get(&format!("/v1/queue/{}", ticket["ticket_id"].as_str().unwrap()), Some(&who.access)).await.json().await.unwrap();
                places.push(if now["state"] == "admitted" { 0.0 } else { now["position"].as_f64().unwrap() });
            }
            correlations.push(spearman(&places));
        }
        let mean = correlations.iter().sum::<f64>() / correlations.len() as f64;
        // Under no relation each is ~N(0, 1/39); the mean of twelve ~N(0, 0.046²).
        assert!(mean.abs() < 0.2, "arrival and place are related: {correlations:?}");
        assert!(correlations.iter().any(|r| *r > 0.0) && correlations.iter().any(|r| *r < 0.0), "{correlations:?}");
    }
}

/// The next text message of a socket as JSON, waiting at most 5 s.
async fn next_text(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next())
            .await
            .expect("a message within 5 s")
            .expect("the socket is open")
            .expect("a readable message");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Each one's entry status, in their order.
async fn statuses(app: &TestApp, who: &[Session]) -> Vec<String> {
    let mut all = Vec::new();
    for one in who {
        all.push(
            entries(app, one).await[0]["status"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    all
}

/// Spearman's rank correlation between arrival (the index) and `places`.
fn spearman(places: &[f64]) -> f64 {
    let n = places.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| places[*a].total_cmp(&places[*b]));
    let mut rank = vec![0.0; n];
    for (r, i) in order.into_iter().enumerate() {
        rank[i] = r as f64;
    }
    let mean = (n as f64 - 1.0) / 2.0;
    let (mut num, mut den_a, mut den_b) = (0.0, 0.0, 0.0);
    for (i, r) in rank.iter().enumerate() {
        let (a, b) = (i as f64 - mean, r - mean);
        num += a * b;
        den_a += a * a;
        den_b += b * b;
    }
    num / (den_a.sqrt() * den_b.sqrt())
}
