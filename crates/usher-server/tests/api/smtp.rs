//! Confirmation emails over a real SMTP server on loopback (aiosmtpd).

use serde_json::Value;

use usher_testkit::on_each_engine;
use usher_testkit::smtp::SmtpServer;

use crate::helpers::{TestApp, held_pair, pay, spawn_app_with, start_checkout};

/// Holds two seats and pays for them with the mock provider.
async fn confirmed_booking(app: &TestApp) -> Value {
    let (_, customer, _, _, booking) = held_pair(app).await;
    let checkout = start_checkout(app, &customer, &booking).await;
    let paid: Value = pay(app, &customer, &checkout, "succeeded")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(paid["status"], "confirmed");
    paid
}

on_each_engine! {
    async fn the_confirmation_is_delivered_over_smtp_once(engine) {
        let smtp = SmtpServer::start();
        let url = smtp.url();
        let app = spawn_app_with(engine, |c| c.mail.smtp_url = Some(url)).await;
        let booking = confirmed_booking(&app).await;
        app.run_jobs().await;
        app.run_jobs().await;
        let messages = smtp.messages();
        assert_eq!(messages.len(), 1, "delivered once");
        let message = &messages[0];
        assert!(message.contains("customer@example.com"), "{message}");
        assert!(message.contains(&format!("Message-ID: <booking-{}@usher>", booking["id"].as_str().unwrap())), "{message}");
        assert!(message.contains(booking["units"][0]["ticket_code"].as_str().unwrap()), "{message}");
        assert!(app.emails().is_empty(), "no .eml files when SMTP is configured");
    }

    async fn smtp_down_means_retry_then_one_delivery_when_it_is_back(engine) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let app = spawn_app_with(engine, |c| c.mail.smtp_url = Some(format!("smtp://127.0.0.1:{port}"))).await;
        confirmed_booking(&app).await;
        // Down: the attempt fails and the job waits for its backoff.
        assert_eq!(app.run_jobs().await, 1);
        assert_eq!(app.run_jobs().await, 0, "not due again yet");
        let admin = app.login("admin@example.com").await;
        let queued: Value = app.get("/v1/admin/jobs?state=queued", Some(&admin.access)).await.json().await.unwrap();
        assert_eq!(queued["items"][0]["attempts"], 1);
        assert!(queued["items"][0]["last_error"].as_str().is_some());

        let smtp = SmtpServer::start_on(port);
        app.clock.advance(chrono::Duration::minutes(5));
        assert_eq!(app.run_jobs().await, 1);
        app.clock.advance(chrono::Duration::hours(2));
        app.run_jobs().await;
        assert_eq!(smtp.messages().len(), 1, "delivered once, never twice");
        let done: Value = app.get("/v1/admin/jobs?state=done", Some(&admin.access)).await.json().await.unwrap();
        assert_eq!(done["items"][0]["attempts"], 2);
    }
}
