//! The box office's pages over plain HTTP, on both engines: QR tickets on my bookings,
//! the wallet (credit from the admin page, paying at checkout, refunds to it), the door
//! page, and the audit pages. The door's code field keeping the focus needs a browser:
//! that is in `browser`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use usher_testkit::on_each_engine;

use crate::helpers::{TestApp, held_pair, pay, rows, spawn_app, start_checkout};
use crate::web::{CSRF, Jar, html, location};

async fn balance(app: &TestApp, access: &str) -> i64 {
    let wallet: Value = app
        .get("/v1/wallet", Some(access))
        .await
        .json()
        .await
        .unwrap();
    wallet["balances"][0]["amount"].as_i64().unwrap_or(0)
}

on_each_engine! {
    async fn a_buyer_pays_from_store_credit_sees_qr_tickets_and_refunds_to_the_wallet(engine) {
        let app = spawn_app(engine).await;
        let (_, customer, _, _, booking) = held_pair(&app).await;
        let admin = app.login("admin@example.com").await;
        let booking_id = booking["id"].as_str().unwrap();
        let mut admin_jar = Jar::signed_in(&admin);
        let credit_path = format!("/admin/users/{}/credit", customer.id);

        // A credit the form cannot read, or the API refuses, is said on the page; nothing moves.
        let response = app.form(&mut admin_jar, &credit_path, &[("amount", "lots"), ("currency", "EUR"), ("reason", "Goodwill")], Some(CSRF)).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(html(response).await.contains("a number like 25.00"));
        let response = app.form(&mut admin_jar, &credit_path, &[("amount", "10.00"), ("currency", "EUR"), ("reason", "")], Some(CSRF)).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(balance(&app, &customer.access).await, 0);

        // A little credit: checkout says it is not enough and offers no wallet button.
        let response = app.form(&mut admin_jar, &credit_path, &[("amount", "50"), ("currency", "EUR"), ("reason", "Goodwill: late start")], Some(CSRF)).await;
        assert_eq!(location(&response), "/admin?done=credit");
        let mut jar = Jar::signed_in(&customer);
        let page = html(app.page(&mut jar, &format!("/checkout/{booking_id}")).await).await;
        assert!(page.contains("€50.00, not enough"), "{page}");
        assert!(!page.contains("id=\"wallet-pay\""));

        // Enough: paid at once from the wallet, tickets with QR codes on my bookings.
        app.form(&mut admin_jar, &credit_path, &[("amount", "50"), ("currency", "EUR"), ("reason", "Top-up")], Some(CSRF)).await;
        let page = html(app.page(&mut jar, &format!("/checkout/{booking_id}")).await).await;
        assert!(page.contains("id=\"wallet-pay\"") && page.contains("Pay €90.00 from my wallet"), "{page}");
        let response = app.form(&mut jar, &format!("/checkout/{booking_id}/wallet"), &[], Some(CSRF)).await;
        assert_eq!(location(&response), format!("/bookings?confirmed={booking_id}"));
        assert_eq!(balance(&app, &customer.access).await, 1000);
        let paid: Value = app.get(&format!("/v1/bookings/{booking_id}"), Some(&customer.access)).await.json().await.unwrap();
        assert_eq!(paid["status"], "confirmed");
        let page = html(app.page(&mut jar, &location(&response)).await).await;
        let codes: Vec<String> = paid["units"].as_array().unwrap().iter().map(|u| u["ticket_code"].as_str().unwrap().to_owned()).collect();
        assert!(!codes.is_empty(), "a confirmed booking has its codes");
        for code in &codes {
            assert!(page.contains(&format!("<img src=\"/v1/tickets/{code}/qr.svg\"")), "{page}");
            assert_eq!(page.matches(&format!(">{code}<")).count(), 1, "each code shown once, beside its QR: {page}");
        }
        // Paying again from the page is refused with a message; nothing more taken.
        let again = app.form(&mut jar, &format!("/checkout/{booking_id}/wallet"), &[], Some(CSRF)).await;
        assert_eq!(again.status(), StatusCode::CONFLICT);
        assert!(html(again).await.contains("role=\"alert\""));
        assert_eq!(balance(&app, &customer.access).await, 1000);

        // The wallet page: balance and the ledger, newest first.
        let page = html(app.page(&mut jar, "/wallet").await).await;
        assert!(page.contains("data-balance>€10.00<"), "{page}");
        let payment = page.find("data-kind=\"payment\"").expect("the payment");
        let credit = page.find("data-kind=\"credit\"").expect("the credits");
        assert!(payment < credit, "newest first");
        assert!(page.contains("Goodwill: late start"));

        // Refunded to the wallet from my bookings.
        let response = app.form(&mut jar, &format!("/bookings/{booking_id}/cancel"), &[("refund_to", "wallet")], Some(CSRF)).await;
        assert_eq!(location(&response), format!("/bookings?cancelled={booking_id}"));
        assert_eq!(balance(&app, &customer.access).await, 10000);
        // The refunded booking's codes are void: my bookings no longer shows them.
        let page = html(app.page(&mut jar, &location(&response)).await).await;
        assert!(page.contains(&format!("id=\"booking-{booking_id}\"")), "{page}");
        for code in &codes {
            assert!(!page.contains(code.as_str()), "a void code on the page: {page}");
        }
        let page = html(app.page(&mut jar, "/wallet").await).await;
        assert!(page.contains("data-balance>€100.00<") && page.contains("data-kind=\"refund\""), "{page}");

        // Signed out, the wallet asks to sign in first.
        let response = app.page(&mut Jar::anonymous(), "/wallet").await;
        assert_eq!(location(&response), "/login?next=%2Fwallet");
    }

    async fn the_door_page_admits_once_and_names_every_other_verdict(engine) {
        let app = spawn_app(engine).await;
        let (organizer, customer, performance, _, booking) = held_pair(&app).await;
        let checkout = start_checkout(&app, &customer, &booking).await;
        let paid: Value = pay(&app, &customer, &checkout, "succeeded").await.json().await.unwrap();
        let code = paid["units"][0]["ticket_code"].as_str().unwrap().to_owned();
        let performance_id = performance["id"].as_str().unwrap();
        let event_id = performance["event_id"].as_str().unwrap();
        let door = format!("/organizer/performances/{performance_id}/door");
        let mut jar = Jar::signed_in(&organizer);

        let page = html(app.page(&mut jar, &door).await).await;
        assert!(page.contains("data-door-count>0 / 2<") && page.contains("autofocus data-keep-focus"), "{page}");
        // Scanned as a scanner types it: lower case, no dashes.
        let typed = code.to_lowercase().replace('-', "");
        let response = app.form(&mut jar, &door, &[("code", &typed)], Some(CSRF)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let page = html(response).await;
        assert!(page.contains("data-verdict=\"admitted\"") && page.contains("Stalls, row A, seat 1"), "{page}");
        assert!(page.contains("data-door-count>1 / 2<"), "{page}");
        let response = app.form(&mut jar, &door, &[("code", &code)], Some(CSRF)).await;
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let page = html(response).await;
        assert!(page.contains("data-verdict=\"repeat\"") && page.contains("was checked in at"), "{page}");
        let response = app.form(&mut jar, &door, &[("code", "AAAA-BBBB-CCCC-DDDD")], Some(CSRF)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(html(response).await.contains("data-verdict=\"unknown\""));
        let response = app.form(&mut jar, &door, &[("code", " ")], Some(CSRF)).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(html(response).await.contains("No code"));

        // Another night's door refuses the second ticket and leaves it unused.
        let second: Value = app
            .post(&format!("/v1/events/{event_id}/performances"), Some(&organizer.access),
                json!({"starts_at": (app.clock_now() + chrono::Duration::days(9)).to_rfc3339(), "seating": rows(&[2])}))
            .await
            .json()
            .await
            .unwrap();
        let other_door = format!("/organizer/performances/{}/door", second["id"].as_str().unwrap());
        let other_code = paid["units"][1]["ticket_code"].as_str().unwrap();
        let response = app.form(&mut jar, &other_door, &[("code", other_code)], Some(CSRF)).await;
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert!(html(response).await.contains("data-verdict=\"wrong\""));

        // The dashboard and the event page count who is in; the audit pages show the scan.
        let page = html(app.page(&mut jar, "/organizer").await).await;
        assert!(page.contains(&format!("data-checked-in=\"{performance_id}\">1 / 2")), "{page}");
        assert!(page.contains(&format!("href=\"{door}\"")));
        let page = html(app.page(&mut jar, &format!("/organizer/events/{event_id}")).await).await;
        assert!(page.contains("Ticket checked in") && page.contains("Full audit log"), "{page}");
        let page = html(app.page(&mut jar, &format!("/organizer/events/{event_id}/audit")).await).await;
        assert!(page.contains("Ticket checked in") && page.contains("Performance created"), "{page}");
        let admin = app.login("admin@example.com").await;
        let mut admin_jar = Jar::signed_in(&admin);
        let page = html(app.page(&mut admin_jar, "/admin/audit").await).await;
        assert!(page.contains("User role changed") && page.contains("Ticket checked in"), "{page}");
        let page = html(app.page(&mut admin_jar, "/admin").await).await;
        assert!(page.contains("Latest changes") && page.contains("Give store credit"));

        // Only the event's organizer (and admins) keep its door, or read its audit.
        let mut buyer_jar = Jar::signed_in(&customer);
        assert_eq!(app.page(&mut buyer_jar, &door).await.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.page(&mut buyer_jar, &format!("/organizer/events/{event_id}/audit")).await.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.page(&mut buyer_jar, "/admin/audit").await.status(), StatusCode::FORBIDDEN);
        let rival = app.organizer("rival@example.com", &admin).await;
        let mut rival_jar = Jar::signed_in(&rival);
        assert_eq!(app.page(&mut rival_jar, &door).await.status(), StatusCode::NOT_FOUND);
        let scan = app.form(&mut rival_jar, &door, &[("code", other_code)], Some(CSRF)).await;
        assert_eq!(scan.status(), StatusCode::NOT_FOUND);
        assert_eq!(app.page(&mut rival_jar, &format!("/organizer/events/{event_id}/audit")).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(app.page(&mut admin_jar, &door).await.status(), StatusCode::OK);
        let sales: Value = app.get(&format!("/v1/events/{event_id}/sales"), Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!(sales["performances"][0]["checked_in"], 1, "refusals checked nothing in");
    }
}
