//! The box office over HTTP on both engines: ticket codes and their QR images, check-in
//! at the door (once, and only for the event's organizer), the wallet (paying, refunds
//! to it, a balance that never goes negative under a race), and the audit log.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use usher_testkit::invariants::{check_performance, check_wallet};
use usher_testkit::on_each_engine;

use crate::helpers::{
    Session, TestApp, assert_problem, held_pair, invalid_fields, on_sale, pay, rows, spawn_app,
    start_checkout, unit_ids,
};

async fn confirmed_pair(app: &TestApp) -> (Session, Session, Value, Vec<String>, Value) {
    let (organizer, customer, performance, ids, booking) = held_pair(app).await;
    let checkout = start_checkout(app, &customer, &booking).await;
    let paid: Value = pay(app, &customer, &checkout, "succeeded")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(paid["status"], "confirmed");
    (organizer, customer, performance, ids, paid)
}

async fn tickets(app: &TestApp, who: &Session, booking: &Value) -> Vec<Value> {
    let path = format!("/v1/bookings/{}/tickets", booking["id"].as_str().unwrap());
    let response = app.get(&path, Some(&who.access)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

async fn scan(app: &TestApp, who: &Session, code: &str) -> reqwest::Response {
    app.post("/v1/checkins", Some(&who.access), json!({"code": code}))
        .await
}

async fn credit(app: &TestApp, admin: &Session, user: &Session, amount: i64) {
    let response = app
        .post(
            &format!("/v1/admin/wallets/{}/credit", user.id),
            Some(&admin.access),
            json!({"amount": {"amount": amount, "currency": "EUR"}, "reason": "Goodwill"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

async fn wallet(app: &TestApp, who: &Session) -> Value {
    let response = app.get("/v1/wallet", Some(&who.access)).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn eur(wallet: &Value) -> i64 {
    wallet["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["currency"] == "EUR")
        .map_or(0, |b| b["amount"].as_i64().unwrap())
}

async fn pay_from_wallet(app: &TestApp, who: &Session, booking: &Value) -> reqwest::Response {
    app.post(
        &format!("/v1/bookings/{}/checkout", booking["id"].as_str().unwrap()),
        Some(&who.access),
        json!({"method": "wallet"}),
    )
    .await
}

fn uuid(value: &Value) -> Uuid {
    Uuid::parse_str(value.as_str().unwrap()).unwrap()
}

/// Flips one character of a code's MAC.
fn forge(code: &str) -> String {
    let mut chars: Vec<char> = code.chars().collect();
    let last = chars.len() - 1;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

on_each_engine! {
    async fn a_ticket_admits_once_and_only_at_its_own_events_door(engine) {
        let app = spawn_app(engine).await;
        let (organizer, customer, performance, _, booking) = confirmed_pair(&app).await;
        let admin = app.login("admin@example.com").await;
        let list = tickets(&app, &customer, &booking).await;
        assert_eq!(list.len(), 2);
        let codes: Vec<String> = list.iter().map(|t| t["code"].as_str().unwrap().to_owned()).collect();
        assert_ne!(codes[0], codes[1]);
        // The same codes on the booking, each with its QR image.
        assert_eq!(booking["units"].as_array().unwrap().len(), codes.len());
        for (unit, code) in booking["units"].as_array().unwrap().iter().zip(&codes) {
            assert_eq!(unit["ticket_code"], code.as_str());
            assert_eq!(unit["qr_svg_url"], format!("/v1/tickets/{code}/qr.svg"));
        }
        let qr = app.get(list[0]["qr_svg_url"].as_str().unwrap(), None).await;
        assert_eq!(qr.status(), StatusCode::OK);
        assert_eq!(qr.headers()["content-type"], "image/svg+xml");
        assert!(qr.text().await.unwrap().contains("<svg"));
        let forged = forge(&codes[0]);
        assert_problem(app.get(&format!("/v1/tickets/{forged}/qr.svg"), None).await, StatusCode::NOT_FOUND).await;
        assert_problem(app.get("/v1/tickets/not-a-code/qr.svg", None).await, StatusCode::NOT_FOUND).await;

        // Who may scan: not a customer, not another organizer (to them it does not exist).
        assert_problem(scan(&app, &customer, &codes[0]).await, StatusCode::FORBIDDEN).await;
        let rival = app.organizer("rival@example.com", &admin).await;
        assert_problem(scan(&app, &rival, &codes[0]).await, StatusCode::NOT_FOUND).await;
        assert_problem(scan(&app, &organizer, &forged).await, StatusCode::NOT_FOUND).await;
        assert_problem(scan(&app, &organizer, "AAAA-AAAA-AAAA-AAAA").await, StatusCode::NOT_FOUND).await;
        let bad = app.post("/v1/checkins", Some(&organizer.access), json!({"kode": "x"})).await;
        assert_eq!(invalid_fields(bad).await, ["kode"]);

        // The first scan lets in; typed in lower case without dashes it is the same code.
        let typed = codes[0].to_lowercase().replace('-', " ");
        let first = scan(&app, &organizer, &typed).await;
        assert_eq!(first.status(), StatusCode::OK);
        let first: Value = first.json().await.unwrap();
        assert_eq!(first["booking_id"], booking["id"]);
        assert_eq!(first["performance_id"], performance["id"]);
        assert_eq!(first["unit_id"], list[0]["unit_id"]);
        assert_eq!(first["place"], "Stalls, row A, seat 1");
        let again = assert_problem(scan(&app, &admin, &codes[0]).await, StatusCode::CONFLICT).await;
        assert_eq!(again["type"], "/problems/already-checked-in");
        assert_eq!(
            chrono::DateTime::parse_from_rfc3339(again["checked_in_at"].as_str().unwrap()).unwrap(),
            chrono::DateTime::parse_from_rfc3339(first["checked_in_at"].as_str().unwrap()).unwrap()
        );
        // An admin scans any event's tickets.
        assert_eq!(scan(&app, &admin, &codes[1]).await.status(), StatusCode::OK);

        // A refunded booking's tickets are void (a second booking, not yet scanned).
        let ids = unit_ids(&app, performance["id"].as_str().unwrap()).await;
        let other: Value = app
            .post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "unit_ids": [ids[2]]}))
            .await
            .json()
            .await
            .unwrap();
        let checkout = start_checkout(&app, &customer, &other).await;
        let other: Value = pay(&app, &customer, &checkout, "succeeded").await.json().await.unwrap();
        let void_code = other["units"][0]["ticket_code"].as_str().unwrap().to_owned();
        let refunded = app.post("/v1/refunds", Some(&organizer.access), json!({"booking_id": other["id"]})).await;
        assert_eq!(refunded.status(), StatusCode::OK);
        let refunded: Value = refunded.json().await.unwrap();
        assert!(refunded["units"][0].get("ticket_code").is_none(), "a void ticket is not shown: {refunded}");
        let void = assert_problem(scan(&app, &organizer, &void_code).await, StatusCode::CONFLICT).await;
        assert_eq!(void["type"], "/problems/ticket-void");
        let path = format!("/v1/bookings/{}/tickets", other["id"].as_str().unwrap());
        assert_problem(app.get(&path, Some(&customer.access)).await, StatusCode::CONFLICT).await;

        // The confirmation email carries the codes and their QR images.
        app.run_jobs().await;
        let mail = app
            .emails()
            .into_iter()
            .find(|m| m.contains(&codes[0]))
            .expect("a confirmation with the ticket codes");
        assert!(mail.contains(&codes[1]));
        assert!(mail.contains("image/svg+xml"), "{mail}");
        assert!(mail.contains(&format!("ticket-1-{}.svg", codes[0])), "{mail}");

        // The organizer's audit log has both check-ins and the refund.
        let event_id = performance["event_id"].as_str().unwrap();
        let audit: Value = app.get(&format!("/v1/events/{event_id}/audit"), Some(&organizer.access)).await.json().await.unwrap();
        let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions.iter().filter(|a| **a == "ticket.checked_in").count(), 2, "{actions:?}");
        assert!(actions.contains(&"booking.refunded"), "{actions:?}");
    }

    async fn a_door_refuses_another_performances_ticket_and_leaves_it_unused(engine) {
        let app = spawn_app(engine).await;
        let (organizer, customer, performance, _, booking) = confirmed_pair(&app).await;
        let event_id = performance["event_id"].as_str().unwrap().to_owned();
        // A second night of the same event.
        let second: Value = app
            .post(
                &format!("/v1/events/{event_id}/performances"),
                Some(&organizer.access),
                json!({"starts_at": (app.clock_now() + chrono::Duration::days(8)).to_rfc3339(), "seating": rows(&[2])}),
            )
            .await
            .json()
            .await
            .unwrap();
        let code = tickets(&app, &customer, &booking).await[0]["code"].as_str().unwrap().to_owned();
        let at_the_wrong_door = app
            .post("/v1/checkins", Some(&organizer.access), json!({"code": code, "performance_id": second["id"]}))
            .await;
        let wrong = assert_problem(at_the_wrong_door, StatusCode::CONFLICT).await;
        assert_eq!(wrong["type"], "/problems/wrong-performance");
        assert!(wrong["detail"].as_str().unwrap().contains("another performance"), "{wrong}");
        let bad = app
            .post("/v1/checkins", Some(&organizer.access), json!({"code": code, "performance_id": "friday"}))
            .await;
        assert_eq!(invalid_fields(bad).await, ["performance_id"]);

        // Nothing was used up: the sales view counts two tickets, none in.
        let sales: Value = app.get(&format!("/v1/events/{event_id}/sales"), Some(&organizer.access)).await.json().await.unwrap();
        let first_night = sales["performances"].as_array().unwrap().iter().find(|p| p["performance_id"] == performance["id"]).unwrap().clone();
        assert_eq!((first_night["tickets"].as_u64(), first_night["checked_in"].as_u64()), (Some(2), Some(0)));

        // At the right door it admits, and the count follows.
        let admitted = app
            .post("/v1/checkins", Some(&organizer.access), json!({"code": code, "performance_id": performance["id"]}))
            .await;
        assert_eq!(admitted.status(), StatusCode::OK);
        let sales: Value = app.get(&format!("/v1/events/{event_id}/sales"), Some(&organizer.access)).await.json().await.unwrap();
        let counts: Vec<(u64, u64)> = sales["performances"].as_array().unwrap().iter().map(|p| (p["tickets"].as_u64().unwrap(), p["checked_in"].as_u64().unwrap())).collect();
        assert_eq!(counts, [(2, 1), (0, 0)]);

        // The audit names who scanned.
        let audit: Value = app.get(&format!("/v1/events/{event_id}/audit"), Some(&organizer.access)).await.json().await.unwrap();
        let scan = &audit["items"][0];
        assert_eq!(scan["action"], "ticket.checked_in");
        assert_eq!(scan["actor_name"], "Test Person");
        assert_eq!(scan["target"]["id"], booking["id"]);
    }

    async fn twenty_scanners_on_one_code_let_it_in_once(engine) {
        let app = spawn_app(engine).await;
        let (organizer, customer, _, _, booking) = confirmed_pair(&app).await;
        let code = tickets(&app, &customer, &booking).await[0]["code"].as_str().unwrap().to_owned();
        let scans = (0..20).map(|_| {
            let (app, organizer, code) = (&app, &organizer, &code);
            async move { scan(app, organizer, code).await.status() }
        });
        let statuses = futures_util::future::join_all(scans).await;
        let admitted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        let repeats = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
        assert_eq!((admitted, repeats), (1, 19), "{statuses:?}");
    }

    async fn the_wallet_pays_at_once_and_takes_refunds(engine) {
        let app = spawn_app(engine).await;
        let (organizer, customer, performance, ids, booking) = held_pair(&app).await;
        let admin = app.login("admin@example.com").await;
        // Bad credits change nothing.
        let path = format!("/v1/admin/wallets/{}/credit", customer.id);
        for (body, field) in [
            (json!({"amount": {"amount": -5, "currency": "EUR"}, "reason": "x"}), "amount.amount"),
            (json!({"amount": {"amount": 5, "currency": "euro"}, "reason": "x"}), "amount.currency"),
            (json!({"amount": {"amount": 5, "currency": "ZZZ"}, "reason": "x"}), "amount.currency"),
            (json!({"amount": {"amount": 5, "currency": "XXX"}, "reason": "x"}), "amount.currency"),
            (json!({"amount": {"amount": 5, "currency": "XAU"}, "reason": "x"}), "amount.currency"),
            (json!({"amount": {"amount": 5, "currency": "EUR"}, "reason": "\u{200B}"}), "reason"),
            (json!({"amount": {"amount": 5, "currency": "EUR"}, "reason": " "}), "reason"),
            (json!({"amount": {"amount": 5, "currency": "EUR"}, "reason": "a\nb"}), "reason"),
        ] {
            assert_eq!(invalid_fields(app.post(&path, Some(&admin.access), body).await).await, [field]);
        }
        let good = json!({"amount": {"amount": 10000, "currency": "EUR"}, "reason": "Goodwill"});
        assert_problem(app.post(&path, Some(&customer.access), good.clone()).await, StatusCode::FORBIDDEN).await;
        let nobody = format!("/v1/admin/wallets/{}/credit", Uuid::now_v7());
        assert_problem(app.post(&nobody, Some(&admin.access), good.clone()).await, StatusCode::NOT_FOUND).await;
        assert_eq!(eur(&wallet(&app, &customer).await), 0);

        // Not enough: 409 and nothing taken, the hold still held.
        let short = assert_problem(pay_from_wallet(&app, &customer, &booking).await, StatusCode::CONFLICT).await;
        assert_eq!(short["type"], "/problems/insufficient-funds");
        let unknown = app
            .post(&format!("/v1/bookings/{}/checkout", booking["id"].as_str().unwrap()), Some(&customer.access), json!({"method": "gold"}))
            .await;
        assert_eq!(invalid_fields(unknown).await, ["method"]);

        let credited = app.post(&path, Some(&admin.access), good).await;
        assert_eq!(credited.status(), StatusCode::CREATED);
        let credited: Value = credited.json().await.unwrap();
        assert_eq!((credited["kind"].as_str(), credited["balance_after"]["amount"].as_i64()), (Some("credit"), Some(10000)));

        // Paid from the wallet: confirmed at once, 2 × 45.00 taken.
        let paid = pay_from_wallet(&app, &customer, &booking).await;
        assert_eq!(paid.status(), StatusCode::OK);
        let paid: Value = paid.json().await.unwrap();
        assert_eq!(paid["provider"], "wallet");
        assert_eq!(paid["booking"]["status"], "confirmed");
        assert!(paid["booking"]["units"][0]["ticket_code"].is_string());
        let after = wallet(&app, &customer).await;
        assert_eq!(eur(&after), 1000);
        assert_eq!(after["entries"][0]["kind"], "payment");
        assert_eq!(after["entries"][0]["amount"]["amount"], -9000);
        assert_eq!(after["entries"][0]["booking_id"], booking["id"]);
        // Paying again is refused; nothing more taken.
        assert_problem(pay_from_wallet(&app, &customer, &booking).await, StatusCode::CONFLICT).await;
        assert_eq!(eur(&wallet(&app, &customer).await), 1000);
        assert_eq!(app.run_jobs().await, 1, "the confirmation email");

        // Cancelled, a wallet payment goes back to the wallet (whatever refund_to says).
        let bad = app.delete(&format!("/v1/bookings/{}?refund_to=bank", booking["id"].as_str().unwrap()), Some(&customer.access)).await;
        assert_eq!(invalid_fields(bad).await, ["refund_to"]);
        let refunded = app.delete(&format!("/v1/bookings/{}", booking["id"].as_str().unwrap()), Some(&customer.access)).await;
        assert_eq!(refunded.status(), StatusCode::OK);
        assert_eq!(eur(&wallet(&app, &customer).await), 10000);
        assert_eq!(app.run_jobs().await, 0, "no provider refund for wallet money");

        // A card payment refunded to the wallet on request.
        let held: Value = app
            .post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "unit_ids": [ids[2]]}))
            .await
            .json()
            .await
            .unwrap();
        let checkout = start_checkout(&app, &customer, &held).await;
        assert_eq!(pay(&app, &customer, &checkout, "succeeded").await.status(), StatusCode::OK);
        app.run_jobs().await;
        let to_wallet = app
            .delete(&format!("/v1/bookings/{}?refund_to=wallet", held["id"].as_str().unwrap()), Some(&customer.access))
            .await;
        assert_eq!(to_wallet.status(), StatusCode::OK);
        assert_eq!(eur(&wallet(&app, &customer).await), 14500);
        assert_eq!(app.run_jobs().await, 0, "refunded to the wallet, not the card");
        let payment = app.store.payment((uuid(&checkout["payment_id"])).into()).await.unwrap().unwrap();
        assert_eq!(payment.status, usher_store::PaymentStatus::Refunded);

        // Cancelling the event returns wallet money to the wallet, once.
        let again: Value = app
            .post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "unit_ids": [ids[3]]}))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(pay_from_wallet(&app, &customer, &again).await.status(), StatusCode::OK);
        assert_eq!(eur(&wallet(&app, &customer).await), 10000);
        let event_path = format!("/v1/events/{}", performance["event_id"].as_str().unwrap());
        assert_eq!(app.patch(&event_path, Some(&organizer.access), json!({"status": "cancelled"})).await.status(), StatusCode::OK);
        app.run_jobs().await;
        app.run_jobs().await;
        assert_eq!(eur(&wallet(&app, &customer).await), 14500);
        let reread: Value = app.get(&format!("/v1/bookings/{}", again["id"].as_str().unwrap()), Some(&customer.access)).await.json().await.unwrap();
        assert_eq!(reread["status"], "refunded");
        check_wallet(app.store.as_ref(), (uuid(&json!(customer.id))).into()).await.unwrap();
        // The ledger: credit, payment, refund, refund, payment, refund.
        let kinds: Vec<String> = wallet(&app, &customer).await["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect();
        assert_eq!(kinds, ["refund", "payment", "refund", "refund", "payment", "credit"]);
    }

    async fn concurrent_wallet_payments_take_exactly_what_the_balance_covers(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[10]), 1).await;
        let ids = unit_ids(&app, performance["id"].as_str().unwrap()).await;
        let mut bookings = Vec::new();
        for id in &ids {
            let held: Value = app
                .post("/v1/bookings", Some(&customer.access), json!({"performance_id": performance["id"], "unit_ids": [id]}))
                .await
                .json()
                .await
                .unwrap();
            bookings.push(held);
        }
        // 45.00 each; the balance covers three of the ten.
        credit(&app, &admin, &customer, 3 * 4500 + 100).await;
        let payments = bookings.iter().map(|b| {
            let (app, customer) = (&app, &customer);
            async move { pay_from_wallet(app, customer, b).await.status() }
        });
        let statuses = futures_util::future::join_all(payments).await;
        let paid = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        let refused = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
        assert_eq!((paid, refused), (3, 7), "{statuses:?}");
        assert_eq!(eur(&wallet(&app, &customer).await), 100);
        check_wallet(app.store.as_ref(), (uuid(&json!(customer.id))).into()).await.unwrap();
        let all: Vec<Uuid> = bookings.iter().map(|b| uuid(&b["id"])).collect();
        check_performance(app.store.as_ref(), (uuid(&performance["id"])).into(), &all, app.clock_now()).await.unwrap();
        let mut confirmed = 0;
        for b in &all {
            if app.store.booking((*b).into()).await.unwrap().unwrap().status == usher_core::BookingStatus::Confirmed {
                confirmed += 1;
            }
        }
        assert_eq!(confirmed, 3);
    }

    async fn the_audit_log_records_who_changed_what_and_keeps_tenants_apart(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, customer) = app.cast().await;
        let rival = app.organizer("rival@example.com", &admin).await;
        let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
        let event_id = performance["event_id"].as_str().unwrap().to_owned();
        let rival_event = app.create_event(&rival, "Rival Night").await;
        // A change with our own request id.
        let ids = unit_ids(&app, performance["id"].as_str().unwrap()).await;
        let blocked = app
            .client
            .patch(app.url(&format!("/v1/performances/{}/units", performance["id"].as_str().unwrap())))
            .bearer_auth(&organizer.access)
            .header("x-request-id", "block-42")
            .json(&json!({"unit_ids": [ids[3]], "state": "blocked"}))
            .send()
            .await
            .unwrap();
        assert_eq!(blocked.status(), StatusCode::OK);
        credit(&app, &admin, &customer, 500).await;

        let audit: Value = app.get(&format!("/v1/events/{event_id}/audit"), Some(&organizer.access)).await.json().await.unwrap();
        let items = audit["items"].as_array().unwrap();
        let actions: Vec<&str> = items.iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["units.blocked", "performance.created", "event.published", "event.created"]);
        let block = &items[0];
        assert_eq!(block["actor_id"], organizer.id.as_str());
        assert_eq!(block["request_id"], "block-42");
        assert_eq!(block["target"]["kind"], "performance");
        assert_eq!(block["target"]["id"], performance["id"]);
        assert_eq!(block["detail"]["unit_ids"][0], ids[3].as_str());
        assert!(items.iter().all(|e| e["event_id"] == event_id.as_str()), "only this event: {items:?}");
        assert!(items.iter().all(|e| e["request_id"].is_string()), "every change has its request id");

        // Tenants: the rival sees nothing of it, a customer may not look.
        assert_problem(app.get(&format!("/v1/events/{event_id}/audit"), Some(&rival.access)).await, StatusCode::NOT_FOUND).await;
        assert_problem(app.get(&format!("/v1/events/{event_id}/audit"), Some(&customer.access)).await, StatusCode::FORBIDDEN).await;
        assert_problem(app.get("/v1/admin/audit", Some(&organizer.access)).await, StatusCode::FORBIDDEN).await;
        let theirs: Value = app.get(&format!("/v1/events/{}/audit", rival_event["id"].as_str().unwrap()), Some(&rival.access)).await.json().await.unwrap();
        assert_eq!(theirs["items"].as_array().unwrap().len(), 1);

        // The admin's view has everything, roles and credits too, and pages through it.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/admin/audit?limit=2&cursor={c}"),
                None => "/v1/admin/audit?limit=2".to_owned(),
            };
            let page: Value = app.get(&path, Some(&admin.access)).await.json().await.unwrap();
            seen.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let unique: HashSet<&str> = seen.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(unique.len(), seen.len(), "no entry twice");
        let actions: Vec<&str> = seen.iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions[0], "wallet.credited");
        assert_eq!(seen[0]["target"]["id"], customer.id.as_str());
        assert_eq!(seen[0]["detail"]["amount"], 500);
        assert_eq!(actions.iter().filter(|a| **a == "user.role_changed").count(), 2);
        assert_eq!(actions.iter().filter(|a| **a == "event.created").count(), 2);
        let bad = app.get("/v1/admin/audit?cursor=nope", Some(&admin.access)).await;
        assert_eq!(invalid_fields(bad).await, ["cursor"]);
    }
}
