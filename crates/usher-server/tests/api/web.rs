//! The web UI over plain HTTP: pages and their headers, session cookies, CSRF, and the
//! API's problems shown as messages. What needs a browser is in `browser`.

use reqwest::{Method, Response, StatusCode, header};
use serde_json::json;
use usher_testkit::on_each_engine;

use crate::helpers::{
    PASSWORD, Session, TestApp, on_sale, rows, spawn_app, spawn_app_with, standing, unit_ids,
};

/// A browser's cookies, kept by hand (the test client has no cookie store).
#[derive(Default, Clone)]
pub struct Jar {
    cookies: Vec<(String, String)>,
}

/// A CSRF token as the server would mint one (43 base64url characters).
pub const CSRF: &str = "testtesttesttesttesttesttesttesttesttestAAA";

impl Jar {
    /// A browser that has the API session's tokens in its cookies, and a CSRF cookie.
    pub fn signed_in(session: &Session) -> Self {
        let mut jar = Self::default();
        jar.set("usher_access", &session.access);
        jar.set("usher_refresh", &session.refresh);
        jar.set("usher_csrf", CSRF);
        jar
    }

    pub fn anonymous() -> Self {
        let mut jar = Self::default();
        jar.set("usher_csrf", CSRF);
        jar
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.cookies.retain(|(n, _)| n != name);
        if !value.is_empty() {
            self.cookies.push((name.to_owned(), value.to_owned()));
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Takes what the response set (a `Max-Age=0` cookie is deleted).
    pub fn absorb(&mut self, response: &Response) {
        for value in response.headers().get_all(header::SET_COOKIE) {
            let text = value.to_str().unwrap();
            let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.set(name, "");
            } else {
                self.set(name, value);
            }
        }
    }
}

impl TestApp {
    pub async fn page(&self, jar: &mut Jar, path: &str) -> Response {
        let response = self
            .client
            .get(self.url(path))
            .header(header::COOKIE, jar.header())
            .header(header::ACCEPT, "text/html")
            .send()
            .await
            .unwrap();
        jar.absorb(&response);
        response
    }

    /// Posts a form as a browser would (`_csrf` is added when `csrf` is given).
    pub async fn form(
        &self,
        jar: &mut Jar,
        path: &str,
        fields: &[(&str, &str)],
        csrf: Option<&str>,
    ) -> Response {
        let mut pairs: Vec<(&str, &str)> = fields.to_vec();
        if let Some(token) = csrf {
            pairs.push(("_csrf", token));
        }
        let response = self
            .client
            .post(self.url(path))
            .header(header::COOKIE, jar.header())
            .form(&pairs)
            .send()
            .await
            .unwrap();
        jar.absorb(&response);
        response
    }

    async fn api_with_cookies(
        &self,
        jar: &Jar,
        method: Method,
        path: &str,
        csrf: Option<&str>,
        body: serde_json::Value,
    ) -> Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .header(header::COOKIE, jar.header())
            .json(&body);
        if let Some(token) = csrf {
            request = request.header("x-csrf-token", token);
        }
        request.send().await.unwrap()
    }
}

pub fn location(response: &Response) -> String {
    response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub async fn html(response: Response) -> String {
    let kind = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("text/html"), "{kind}");
    response.text().await.unwrap()
}

on_each_engine! {
    async fn pages_are_html_with_strict_security_headers(engine) {
        let app = spawn_app(engine).await;
        for path in ["/", "/login", "/signup"] {
            let mut jar = Jar::default();
            let response = app.page(&mut jar, path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let headers = response.headers();
            let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("script-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe-inline"), "no inline script or style: {csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
            let cookie = headers[header::SET_COOKIE].to_str().unwrap();
            assert!(cookie.starts_with("usher_csrf="), "{cookie}");
            assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
            let body = html(response).await;
            // The form repeats the cookie's token.
            assert!(body.contains(jar.get("usher_csrf").unwrap()));
            assert!(!body.contains("<script>"), "no inline script");
        }
        // The one script and stylesheet come from the binary.
        for (path, kind) in [("/static/app.js", "text/javascript"), ("/static/app.css", "text/css"), ("/static/icon.svg", "image/svg+xml")] {
            let response = app.get(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind));
        }
        // API calls without cookies get no cookie.
        let response = app.get("/v1/events", None).await;
        assert!(response.headers().get(header::SET_COOKIE).is_none());
    }

    async fn every_form_post_without_its_csrf_token_is_refused_and_changes_nothing(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, customer) = app.cast().await;
        let event = app.create_event(&organizer, "Draft Show").await;
        let event_id = event["id"].as_str().unwrap().to_owned();
        let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
        let performance_id = performance["id"].as_str().unwrap().to_owned();
        let units = unit_ids(&app, &performance_id).await;
        let any = uuid::Uuid::now_v7().to_string();
        let posts = [
            ("/login".to_owned(), vec![("email", "customer@example.com"), ("password", PASSWORD)]),
            ("/signup".to_owned(), vec![("email", "new@example.com"), ("password", PASSWORD), ("name", "New")]),
            ("/logout".to_owned(), vec![]),
            (format!("/performances/{performance_id}/hold"), vec![("mode", "seats"), ("unit_ids", units[0].as_str())]),
            (format!("/checkout/{any}/pay"), vec![]),
            (format!("/checkout/{any}/mock"), vec![("payment_id", any.as_str()), ("outcome", "succeeded")]),
            (format!("/bookings/{any}/cancel"), vec![]),
            ("/organizer/events".to_owned(), vec![("title", "Sneaky")]),
            (format!("/organizer/events/{event_id}"), vec![("title", "Renamed")]),
            (format!("/organizer/events/{event_id}/status"), vec![("status", "published")]),
            (format!("/organizer/events/{event_id}/performances"), vec![("starts_at", "2030-01-01T20:00")]),
            (format!("/organizer/performances/{performance_id}/units"), vec![("unit_ids", units[1].as_str()), ("state", "blocked")]),
            (format!("/admin/users/{}/role", customer.id), vec![("role", "admin")]),
            (format!("/admin/users/{}/access", customer.id), vec![("disabled", "true")]),
            (format!("/admin/jobs/{any}/retry"), vec![]),
        ];
        for (who, session) in [("customer", &customer), ("organizer", &organizer), ("admin", &admin)] {
            for (path, fields) in &posts {
                for csrf in [None, Some("wrong-token-wrong-token-wrong-token-wrong-t")] {
                    let mut jar = Jar::signed_in(session);
                    let response = app.form(&mut jar, path, fields, csrf).await;
                    assert_eq!(response.status(), StatusCode::FORBIDDEN, "{who} POST {path} with {csrf:?}");
                    let body = html(response).await;
                    assert!(body.contains("That form was refused"), "{path}");
                }
            }
        }
        // Nothing changed.
        let seats = app.get(&format!("/v1/performances/{performance_id}/seats"), None).await;
        let seats: serde_json::Value = seats.json().await.unwrap();
        assert!(seats["units"].as_array().unwrap().iter().all(|u| u["state"] == "available"));
        let event: serde_json::Value = app.get(&format!("/v1/events/{event_id}"), Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!((event["title"].as_str(), event["status"].as_str()), (Some("Draft Show"), Some("draft")));
        let me: serde_json::Value = app.get("/v1/me", Some(&customer.access)).await.json().await.unwrap();
        assert_eq!(me["role"], "customer");
        let nobody = app.post("/v1/auth/login", None, json!({"email": "new@example.com", "password": PASSWORD})).await;
        assert_eq!(nobody.status(), StatusCode::UNAUTHORIZED);
        // Still signed in: the refused logout revoked nothing.
        let refreshed = app.post("/v1/auth/refresh", None, json!({"refresh_token": customer.refresh})).await;
        assert_eq!(refreshed.status(), StatusCode::OK);
    }

    async fn signing_in_sets_http_only_cookies_that_the_api_accepts_with_a_csrf_header(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, _) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
        let units = unit_ids(&app, performance["id"].as_str().unwrap()).await;
        let mut jar = Jar::default();
        app.page(&mut jar, "/login").await;
        let csrf = jar.get("usher_csrf").unwrap().to_owned();
        let response = app
            .form(&mut jar, "/login", &[("email", "customer@example.com"), ("password", PASSWORD), ("next", "/bookings")], Some(&csrf))
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/bookings");
        let set: Vec<_> = response.headers().get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        for name in ["usher_access=", "usher_refresh="] {
            let cookie = set.iter().find(|c| c.starts_with(name)).unwrap_or_else(|| panic!("{name} in {set:?}"));
            assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"), "{cookie}");
        }
        // The API knows the caller from the cookies.
        let me = app.api_with_cookies(&jar, Method::GET, "/v1/me", None, json!(null)).await;
        assert_eq!(me.status(), StatusCode::OK);
        // A write with cookies must repeat the CSRF token.
        let hold = json!({"performance_id": performance["id"], "unit_ids": [units[0]]});
        let refused = app.api_with_cookies(&jar, Method::POST, "/v1/bookings", None, hold.clone()).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let wrong = app.api_with_cookies(&jar, Method::POST, "/v1/bookings", Some("x"), hold.clone()).await;
        assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
        let held = app.api_with_cookies(&jar, Method::POST, "/v1/bookings", Some(&csrf), hold).await;
        assert_eq!(held.status(), StatusCode::CREATED);
        // An open redirect is not followed.
        let mut jar = Jar::anonymous();
        let response = app
            .form(&mut jar, "/login", &[("email", "customer@example.com"), ("password", PASSWORD), ("next", "//evil.example/")], Some(CSRF))
            .await;
        assert_eq!(location(&response), "/");
    }

    async fn an_expired_access_cookie_is_renewed_from_the_refresh_cookie(engine) {
        let app = spawn_app(engine).await;
        let customer = app.signup("ann@example.com").await;
        let mut jar = Jar::signed_in(&customer);
        // The browser dropped the access cookie (it lives 15 minutes).
        jar.set("usher_access", "");
        let mut second = jar.clone();
        // A page and another tab at the same moment, with the same refresh cookie.
        let (a, b) = tokio::join!(app.page(&mut jar, "/bookings"), app.page(&mut second, "/bookings"));
        for response in [a, b] {
            assert_eq!(response.status(), StatusCode::OK, "signed in, not sent to log in");
            assert!(html(response).await.contains("Log out"));
        }
        assert_ne!(jar.get("usher_refresh"), Some(customer.refresh.as_str()), "rotated");
        assert_eq!(jar.get("usher_refresh"), second.get("usher_refresh"), "both got the same new pair");
        // The family was not revoked: the new pair keeps working.
        jar.set("usher_access", "");
        let response = app.page(&mut jar, "/bookings").await;
        assert_eq!(response.status(), StatusCode::OK);
        // A refresh cookie that names nothing signs the browser out and clears it.
        let mut stale = Jar::anonymous();
        stale.set("usher_refresh", "not-a-token");
        let response = app.page(&mut stale, "/bookings").await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/login?next=%2Fbookings");
        assert_eq!(stale.get("usher_refresh"), None);
    }

    async fn logging_out_revokes_the_session_and_clears_the_cookies(engine) {
        let app = spawn_app(engine).await;
        let customer = app.signup("ann@example.com").await;
        let mut jar = Jar::signed_in(&customer);
        let response = app.form(&mut jar, "/logout", &[], Some(CSRF)).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!((jar.get("usher_access"), jar.get("usher_refresh")), (None, None));
        let reuse = app.post("/v1/auth/refresh", None, json!({"refresh_token": customer.refresh})).await;
        assert_eq!(reuse.status(), StatusCode::UNAUTHORIZED);
    }

    async fn problems_become_readable_pages_never_json(engine) {
        let app = spawn_app(engine).await;
        let mut jar = Jar::anonymous();
        let response = app.page(&mut jar, &format!("/events/{}", uuid::Uuid::now_v7())).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = html(response).await;
        assert!(body.contains("Not found") && !body.contains("\"type\""), "{body}");
        let response = app.page(&mut jar, "/no/such/page").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        html(response).await;
        // API clients still get problem documents.
        let response = app.get("/no/such/page", None).await;
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        // Wrong credentials: the login page again, with the API's message.
        app.signup("ann@example.com").await;
        let response = app
            .form(&mut jar, "/login", &[("email", "ann@example.com"), ("password", "not the password")], Some(CSRF))
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(html(response).await.contains("The email or the password is wrong."));
        // A weak password is named beside its field, and what was typed is kept.
        let response = app
            .form(&mut jar, "/signup", &[("email", "bo@example.com"), ("password", "short"), ("name", "Bo")], Some(CSRF))
            .await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = html(response).await;
        assert!(body.contains("id=\"password-error\""), "{body}");
        assert!(body.contains("value=\"bo@example.com\""));
    }

    async fn a_seat_taken_meanwhile_comes_back_as_a_message_on_the_fresh_map(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let rival = app.signup("rival@example.com").await;
        let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
        let performance_id = performance["id"].as_str().unwrap();
        let units = unit_ids(&app, performance_id).await;
        let response = app
            .post("/v1/bookings", Some(&rival.access), json!({"performance_id": performance_id, "unit_ids": [units[1]]}))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let mut jar = Jar::signed_in(&customer);
        let picked = format!("{},{}", units[0], units[1]);
        let response = app
            .form(&mut jar, &format!("/performances/{performance_id}/hold"), &[("mode", "seats"), ("unit_ids", &picked)], Some(CSRF))
            .await;
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let body = html(response).await;
        assert!(body.contains("Stalls A2 was just taken by someone else"), "{body}");
        assert!(body.contains("class=\"seat held\" cx"), "the map shows it held");
        // Nothing was held for the customer.
        let mine: serde_json::Value = app.get("/v1/bookings", Some(&customer.access)).await.json().await.unwrap();
        assert!(mine["items"].as_array().unwrap().is_empty());
        // The free seat alone goes through to checkout.
        let response = app
            .form(&mut jar, &format!("/performances/{performance_id}/hold"), &[("mode", "seats"), ("unit_ids", &units[0])], Some(CSRF))
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert!(location(&response).starts_with("/checkout/"));
    }

    async fn pages_ask_for_the_right_role_and_hide_other_tenants(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, customer) = app.cast().await;
        let other = app.organizer("other@example.com", &admin).await;
        let theirs = app.create_event(&other, "Theirs").await;
        // Published, so it is in the public list, but not on anyone else's dashboard.
        app.publish(&other, theirs["id"].as_str().unwrap()).await;
        let mut anonymous = Jar::anonymous();
        let response = app.page(&mut anonymous, "/organizer").await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/login?next=%2Forganizer");
        // A form posted by someone signed out leads to the login page, then home (the
        // form's own address takes only POSTs).
        let any = uuid::Uuid::now_v7();
        let response = app.form(&mut anonymous, &format!("/checkout/{any}/pay"), &[], Some(CSRF)).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/login?next=%2F");
        let mut jar = Jar::signed_in(&customer);
        assert_eq!(app.page(&mut jar, "/organizer").await.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.page(&mut jar, "/admin").await.status(), StatusCode::FORBIDDEN);
        let mut jar = Jar::signed_in(&organizer);
        assert_eq!(app.page(&mut jar, "/organizer").await.status(), StatusCode::OK);
        assert_eq!(app.page(&mut jar, "/admin").await.status(), StatusCode::FORBIDDEN);
        let page = app.page(&mut jar, &format!("/organizer/events/{}", theirs["id"].as_str().unwrap())).await;
        assert_eq!(page.status(), StatusCode::NOT_FOUND, "another organizer's event does not exist for them");
        let dashboard = html(app.page(&mut jar, "/organizer").await).await;
        assert!(!dashboard.contains("Theirs"));
        let mut jar = Jar::signed_in(&admin);
        let body = html(app.page(&mut jar, "/admin").await).await;
        assert!(body.contains("customer@example.com") && body.contains("Dead jobs"));
    }

    async fn an_organizer_builds_a_plan_from_the_form_and_blocks_house_seats(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, _) = app.cast().await;
        let mut jar = Jar::signed_in(&organizer);
        let response = app
            .form(&mut jar, "/organizer/events", &[("title", "Form Show"), ("venue", "Hall"), ("description", "From the form"), ("details", "genre: jazz")], Some(CSRF))
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let event_path = location(&response);
        let event_id = event_path.trim_start_matches("/organizer/events/").split('?').next().unwrap().to_owned();
        // A bad line is named and nothing is created.
        let bad = app
            .form(&mut jar, &format!("/organizer/events/{event_id}/performances"), &[
                ("starts_at", "2030-05-01T20:00"), ("kind", "reserved"), ("currency", "EUR"),
                ("section_name", "Stalls"), ("section_price", "cheap"), ("section_rows", "2"), ("section_seats", "3"),
            ], Some(CSRF))
            .await;
        assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(html(bad).await.contains("Section 1: the price should be a number like 45.00."));
        let response = app
            .form(&mut jar, &format!("/organizer/events/{event_id}/performances"), &[
                ("starts_at", "2030-05-01T20:00"), ("kind", "reserved"), ("currency", "EUR"), ("max_per_booking", "6"),
                ("section_name", "Stalls"), ("section_price", "45.50"), ("section_rows", "2"), ("section_seats", "3"),
                ("section_name", "Balcony"), ("section_price", "20"), ("section_rows", "1"), ("section_seats", "4"),
                ("section_name", ""), ("section_price", ""), ("section_rows", ""), ("section_seats", ""),
            ], Some(CSRF))
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let performance_id = location(&response).trim_start_matches("/organizer/performances/").to_owned();
        let performance: serde_json::Value = app.get(&format!("/v1/performances/{performance_id}"), Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!((performance["capacity"].as_u64(), performance["max_per_booking"].as_u64()), (Some(10), Some(6)));
        assert_eq!(performance["starts_at"], "2030-05-01T20:00:00Z");
        let seats: serde_json::Value = app.get(&format!("/v1/performances/{performance_id}/seats"), Some(&organizer.access)).await.json().await.unwrap();
        let units = seats["units"].as_array().unwrap();
        assert_eq!((units[0]["section"].as_str(), units[0]["row"].as_str(), units[0]["label"].as_str()), (Some("Stalls"), Some("A"), Some("1")));
        assert_eq!(units[0]["price"], json!({"amount": 4550, "currency": "EUR"}));
        assert_eq!(units[3]["row"], "B");
        // Two house seats off sale.
        let picked = format!("{},{}", units[0]["id"].as_str().unwrap(), units[1]["id"].as_str().unwrap());
        let response = app
            .form(&mut jar, &format!("/organizer/performances/{performance_id}/units"), &[("unit_ids", &picked), ("state", "blocked")], Some(CSRF))
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert!(location(&response).ends_with("?changed=2"));
        let performance: serde_json::Value = app.get(&format!("/v1/performances/{performance_id}"), Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!(performance["blocked"], 2);
        // Publishing from the event page.
        let response = app.form(&mut jar, &format!("/organizer/events/{event_id}/status"), &[("status", "published")], Some(CSRF)).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let public = html(app.page(&mut Jar::anonymous(), &format!("/events/{event_id}")).await).await;
        assert!(public.contains("Form Show") && public.contains("genre"));
    }

    async fn general_admission_and_best_available_are_held_from_their_forms(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let ga = on_sale(&app, &organizer, standing(5), 4).await;
        let ga_id = ga["id"].as_str().unwrap();
        let ticket_type = ga["ticket_types"][0]["id"].as_str().unwrap();
        let mut jar = Jar::signed_in(&customer);
        let body = html(app.page(&mut jar, &format!("/performances/{ga_id}")).await).await;
        assert!(body.contains(&format!("name=\"ticket_type_id\" value=\"{ticket_type}\"")));
        let response = app
            .form(&mut jar, &format!("/performances/{ga_id}/hold"), &[("mode", "ga"), ("ticket_type_id", ticket_type), ("quantity", "3")], Some(CSRF))
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let checkout = location(&response);
        let page = html(app.page(&mut jar, &checkout).await).await;
        assert_eq!(page.matches("<td>Standing</td>").count(), 3, "{page}");
        assert!(page.contains("€60.00") && page.contains("data-countdown="));
        // More than are left: the API's reason on the page, nothing held.
        let response = app
            .form(&mut jar, &format!("/performances/{ga_id}/hold"), &[("mode", "ga"), ("ticket_type_id", ticket_type), ("quantity", "3")], Some(CSRF))
            .await;
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert!(html(response).await.contains("role=\"alert\""));
        let performance: serde_json::Value = app.get(&format!("/v1/performances/{ga_id}"), None).await.json().await.unwrap();
        assert_eq!((performance["held"].as_u64(), performance["available"].as_u64()), (Some(3), Some(2)));
        // Best available picks adjacent seats.
        let seated = on_sale(&app, &organizer, rows(&[6]), 4).await;
        let seated_id = seated["id"].as_str().unwrap();
        let response = app
            .form(&mut jar, &format!("/performances/{seated_id}/hold"), &[("mode", "best"), ("quantity", "2")], Some(CSRF))
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let page = html(app.page(&mut jar, &location(&response)).await).await;
        assert_eq!(page.matches("Stalls, row A, seat").count(), 2, "{page}");
        // Releasing from the checkout page puts them back.
        let booking = location(&response).trim_start_matches("/checkout/").to_owned();
        let released = app.form(&mut jar, &format!("/bookings/{booking}/cancel"), &[], Some(CSRF)).await;
        assert_eq!(released.status(), StatusCode::SEE_OTHER);
        let performance: serde_json::Value = app.get(&format!("/v1/performances/{seated_id}"), None).await.json().await.unwrap();
        assert_eq!(performance["available"], 6);
    }

    async fn a_sold_out_page_offers_the_waiting_list_and_a_waiting_room_admits_from_its_queue_page(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let seated = on_sale(&app, &organizer, rows(&[2]), 2).await;
        let seated_id = seated["id"].as_str().unwrap();
        let holder = app.signup("holder@example.com").await;
        app.post("/v1/bookings", Some(&holder.access), serde_json::json!({"performance_id": seated_id, "quantity": 2, "best_available": true})).await;
        // Sold out: the page offers the waiting list; joining lands on the list.
        let mut jar = Jar::signed_in(&customer);
        let page = html(app.page(&mut jar, &format!("/performances/{seated_id}")).await).await;
        assert!(page.contains("Join the waiting list"), "{page}");
        let joined = app.form(&mut jar, &format!("/performances/{seated_id}/waitlist"), &[("quantity", "2")], Some(CSRF)).await;
        assert_eq!((joined.status(), location(&joined).as_str()), (StatusCode::SEE_OTHER, "/waitlist?joined=1"));
        let list = html(app.page(&mut jar, "/waitlist?joined=1").await).await;
        assert!(list.contains("Number <b>1</b> in line") && list.contains("badge waiting"), "{list}");
        // Places come back: the list says they are held, with the way to pay.
        let bookings: serde_json::Value = app.get("/v1/bookings", Some(&holder.access)).await.json().await.unwrap();
        app.delete(&format!("/v1/bookings/{}", bookings["items"][0]["id"].as_str().unwrap()), Some(&holder.access)).await;
        usher_server::waiting::serve(&app.state, uuid::Uuid::parse_str(seated_id).unwrap()).await;
        let list = html(app.page(&mut jar, "/waitlist").await).await;
        assert!(list.contains("Places are held for you") && list.contains("/checkout/"), "{list}");
        let entry = list.split("/waitlist/").nth(1).unwrap().split('/').next().unwrap().to_owned();
        let left = app.form(&mut jar, &format!("/waitlist/{entry}/leave"), &[], Some(CSRF)).await;
        assert_eq!(location(&left), "/waitlist?left=1");
        // A waiting room: the page sends buyers to the queue; the queue page shows the
        // place, then the way in with the admission the hold form carries.
        let roomy = on_sale(&app, &organizer, standing(4), 2).await;
        let roomy_id = roomy["id"].as_str().unwrap();
        app.patch(&format!("/v1/performances/{roomy_id}"), Some(&organizer.access), serde_json::json!({"waiting_room": {"enabled": true}})).await;
        let page = html(app.page(&mut jar, &format!("/performances/{roomy_id}")).await).await;
        assert!(page.contains("Join the queue"), "{page}");
        let queued = app.form(&mut jar, &format!("/performances/{roomy_id}/queue"), &[], Some(CSRF)).await;
        let queue_path = location(&queued);
        assert!(queue_path.starts_with("/queue/"), "{queue_path}");
        let waiting = html(app.page(&mut jar, &queue_path).await).await;
        assert!(waiting.contains("data-queue-position>1<"), "{waiting}");
        usher_server::waiting::step_rooms(&app.state).await;
        let admitted = html(app.page(&mut jar, &queue_path).await).await;
        let go = admitted.split("data-queue-go href=\"").nth(1).unwrap().split('"').next().unwrap().replace("&#x3d;", "=");
        assert!(go.contains("?admission="), "{admitted}");
        let chooser = html(app.page(&mut jar, &go).await).await;
        let token = chooser.split("name=\"admission\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        let ticket_type = roomy["ticket_types"][0]["id"].as_str().unwrap();
        let held = app.form(&mut jar, &format!("/performances/{roomy_id}/hold"), &[("mode", "ga"), ("ticket_type_id", ticket_type), ("quantity", "2"), ("admission", &token)], Some(CSRF)).await;
        assert_eq!(held.status(), StatusCode::SEE_OTHER, "{}", html(held).await);
        // Without the admission, the page says why.
        let refused = app.form(&mut jar, &format!("/performances/{roomy_id}/hold"), &[("mode", "ga"), ("ticket_type_id", ticket_type), ("quantity", "1")], Some(CSRF)).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }

    async fn the_dashboard_pages_through_an_organizers_events(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, _) = app.cast().await;
        for i in 0..21 {
            app.create_event(&organizer, &format!("Show {i:02}")).await;
        }
        let mut jar = Jar::signed_in(&organizer);
        let first = html(app.page(&mut jar, "/organizer").await).await;
        assert!(first.contains("Show 20") && !first.contains("Show 00"), "newest twenty first");
        let start = first.find("href=\"/organizer?cursor=").expect("a link to older events") + 6;
        let next = first[start..].split('"').next().unwrap().replace("&amp;", "&");
        let second = html(app.page(&mut jar, &next).await).await;
        assert!(second.contains("Show 00") && !second.contains("Show 20"), "{next}");
        assert!(!second.contains("href=\"/organizer?cursor="), "no more pages");
    }

    async fn a_declined_payment_keeps_the_hold_and_a_paid_booking_is_refunded_from_my_bookings(engine) {
        let app = spawn_app(engine).await;
        let (_, organizer, customer) = app.cast().await;
        let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
        let performance_id = performance["id"].as_str().unwrap();
        let units = unit_ids(&app, performance_id).await;
        let mut jar = Jar::signed_in(&customer);
        // Signed out, the hold form leads to the login page and back to the map.
        let mut anonymous = Jar::anonymous();
        let response = app
            .form(&mut anonymous, &format!("/performances/{performance_id}/hold"), &[("mode", "seats"), ("unit_ids", &units[0])], Some(CSRF))
            .await;
        assert_eq!(location(&response), format!("/login?next=%2Fperformances%2F{performance_id}"));
        let response = app
            .form(&mut jar, &format!("/performances/{performance_id}/hold"), &[("mode", "seats"), ("unit_ids", &units[0])], Some(CSRF))
            .await;
        let checkout = location(&response);
        let booking = checkout.trim_start_matches("/checkout/").to_owned();
        let response = app.form(&mut jar, &format!("{checkout}/pay"), &[], Some(CSRF)).await;
        let mock = location(&response);
        assert!(mock.starts_with(&format!("{checkout}?payment=")), "{mock}");
        let payment = mock.split("payment=").nth(1).unwrap().to_owned();
        let page = html(app.page(&mut jar, &mock).await).await;
        assert!(page.contains("id=\"mock-pay\""));
        // Declined: back to checkout with a message, the seat still held.
        let response = app
            .form(&mut jar, &format!("{checkout}/mock"), &[("payment_id", &payment), ("outcome", "failed")], Some(CSRF))
            .await;
        assert_eq!(location(&response), format!("{checkout}?declined=1"));
        let page = html(app.page(&mut jar, &location(&response)).await).await;
        assert!(page.contains("The payment was declined"), "{page}");
        let held: serde_json::Value = app.get(&format!("/v1/bookings/{booking}"), Some(&customer.access)).await.json().await.unwrap();
        assert_eq!(held["status"], "held");
        // Paid on the second try.
        let response = app.form(&mut jar, &format!("{checkout}/pay"), &[], Some(CSRF)).await;
        let payment = location(&response).split("payment=").nth(1).unwrap().to_owned();
        let response = app
            .form(&mut jar, &format!("{checkout}/mock"), &[("payment_id", &payment), ("outcome", "succeeded")], Some(CSRF))
            .await;
        assert_eq!(location(&response), format!("/bookings?confirmed={booking}"));
        let page = html(app.page(&mut jar, &location(&response)).await).await;
        assert!(page.contains("Refund this booking") && page.contains("ticket-code"));
        // Refunded from the bookings page: the seat is free again.
        let response = app.form(&mut jar, &format!("/bookings/{booking}/cancel"), &[], Some(CSRF)).await;
        assert_eq!(location(&response), format!("/bookings?cancelled={booking}"));
        let done: serde_json::Value = app.get(&format!("/v1/bookings/{booking}"), Some(&customer.access)).await.json().await.unwrap();
        assert_eq!(done["status"], "refunded");
        let performance: serde_json::Value = app.get(&format!("/v1/performances/{performance_id}"), None).await.json().await.unwrap();
        assert_eq!(performance["available"], 4);
        // A refunded booking cannot be refunded again: the page says why (409).
        let again = app.form(&mut jar, &format!("/bookings/{booking}/cancel"), &[], Some(CSRF)).await;
        assert_eq!(again.status(), StatusCode::CONFLICT);
        assert!(html(again).await.contains("role=\"alert\""));
    }

    async fn admins_change_roles_and_organizers_edit_events_from_the_pages(engine) {
        let app = spawn_app(engine).await;
        let (admin, organizer, customer) = app.cast().await;
        let mut jar = Jar::signed_in(&admin);
        let response = app.form(&mut jar, &format!("/admin/users/{}/role", customer.id), &[("role", "organizer")], Some(CSRF)).await;
        assert_eq!(location(&response), "/admin?done=role");
        let fresh = app.login("customer@example.com").await;
        assert_eq!(fresh.role, "organizer");
        // An unknown role is named on the page and changes nothing.
        let response = app.form(&mut jar, &format!("/admin/users/{}/role", customer.id), &[("role", "king")], Some(CSRF)).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(html(response).await.contains("role=\"alert\""));
        assert_eq!(app.login("customer@example.com").await.role, "organizer");
        // Disabling from the page signs the account out at once; enabling lets it back.
        let before = app.login("customer@example.com").await;
        let response = app.form(&mut jar, &format!("/admin/users/{}/access", customer.id), &[("disabled", "true")], Some(CSRF)).await;
        assert_eq!(location(&response), "/admin?done=disabled");
        assert_eq!(app.get("/v1/me", Some(&before.access)).await.status(), StatusCode::UNAUTHORIZED);
        let listed = app.page(&mut jar, "/admin").await;
        assert!(html(listed).await.contains("disabled</span>"));
        let response = app.form(&mut jar, &format!("/admin/users/{}/access", customer.id), &[("disabled", "false")], Some(CSRF)).await;
        assert_eq!(location(&response), "/admin?done=enabled");
        assert_eq!(app.login("customer@example.com").await.role, "organizer");
        // Editing an event: saved fields, and a bad title kept with its message.
        let event = app.create_event(&organizer, "Old Title").await;
        let event_id = event["id"].as_str().unwrap();
        let mut jar = Jar::signed_in(&organizer);
        let fields = [("title", "New Title"), ("venue", "New Hall"), ("description", "Changed"), ("details", "genre: folk")];
        let response = app.form(&mut jar, &format!("/organizer/events/{event_id}"), &fields, Some(CSRF)).await;
        assert_eq!(location(&response), format!("/organizer/events/{event_id}?saved=1"));
        let saved: serde_json::Value = app.get(&format!("/v1/events/{event_id}"), Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!((saved["title"].as_str(), saved["venue"].as_str()), (Some("New Title"), Some("New Hall")));
        assert_eq!(saved["attributes"], json!({"genre": "folk"}));
        let response = app.form(&mut jar, &format!("/organizer/events/{event_id}"), &[("title", "  "), ("venue", "Elsewhere")], Some(CSRF)).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = html(response).await;
        assert!(body.contains("id=\"title-error\"") && body.contains("value=\"Elsewhere\""), "{body}");
        let unchanged: serde_json::Value = app.get(&format!("/v1/events/{event_id}"), Some(&organizer.access)).await.json().await.unwrap();
        assert_eq!(unchanged["venue"], "New Hall");
    }

    async fn https_deployments_get_secure_cookies_and_stripe_may_receive_the_pay_form(engine) {
        let app = spawn_app_with(engine, |c| {
            c.public_url = Some("https://tickets.example".into());
            c.payments = usher_server::PaymentsConfig::Stripe {
                secret_key: secrecy::SecretString::from("sk_test_usher".to_owned()),
                webhook_secret: secrecy::SecretString::from("whsec_test".to_owned()),
                api_base: Some("http://127.0.0.1:9".into()),
            };
        })
        .await;
        let mut jar = Jar::default();
        let response = app.page(&mut jar, "/").await;
        let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
        assert!(cookie.contains("; Secure"), "{cookie}");
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("form-action 'self' https://checkout.stripe.com;"), "{csp}");
        app.signup("ann@example.com").await;
        let mut jar = Jar::anonymous();
        let response = app.form(&mut jar, "/login", &[("email", "ann@example.com"), ("password", PASSWORD)], Some(CSRF)).await;
        for value in response.headers().get_all(header::SET_COOKIE) {
            assert!(value.to_str().unwrap().contains("; Secure"), "{value:?}");
        }
    }
}
