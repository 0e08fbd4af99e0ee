//! The authorization matrix: every API route (read from the OpenAPI document the router
//! itself generates, so a new route without a row here fails the test) × six callers
//! {anonymous, customer, other customer, organizer, other organizer, admin}, each
//! answered as API.md says: 401 without a token, 403 with a token lacking the role,
//! 404 for what the caller may not see, and, past authorization, the one status the
//! route's own checks give the matrix's request (named per row: 200, 400, 409 or 422;
//! a 5xx never passes).

use reqwest::Method;
use serde_json::{Value, json};

use usher_testkit::on_each_engine;

use crate::helpers::{Session, TestApp, start_checkout};

/// What one caller must get from one route.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Past authorization: the route's own answer, named in its row (never a 5xx).
    Pass,
    /// 401: a token is needed.
    NoToken,
    /// 403: the token lacks the role.
    Role,
    /// 404: the caller may not see the resource.
    Hidden,
}
use Expect::*;

/// A row's status past authorization when no caller gets there.
const NOBODY: u16 = 0;

/// Callers in the order of [`Expect`] rows.
const CALLERS: [&str; 6] = [
    "anonymous",
    "customer",
    "other customer",
    "organizer",
    "other organizer",
    "admin",
];

/// Every route: method, path as the OpenAPI document names it, what each caller gets, in
/// the order of [`CALLERS`], and the one status a caller past authorization gets with
/// the matrix's request (`{}` as the body, the world's resources in the path) —
/// [`NOBODY`] where no caller gets past. "customer" owns the booking; "organizer" owns
/// the event, its performance, and so sees the booking.
const MATRIX: &[(&str, &str, [Expect; 6], u16)] = &[
    ("get", "/healthz", [Pass; 6], 200),
    ("get", "/readyz", [Pass; 6], 200),
    // Accounts. Signing in is for anyone; the body decides.
    ("post", "/v1/auth/signup", [Pass; 6], 422),
    ("post", "/v1/auth/login", [Pass; 6], 422),
    ("post", "/v1/auth/refresh", [Pass; 6], 422),
    (
        "post",
        "/v1/auth/logout",
        [NoToken, Pass, Pass, Pass, Pass, Pass],
        422,
    ),
    (
        "get",
        "/v1/me",
        [NoToken, Pass, Pass, Pass, Pass, Pass],
        200,
    ),
    // Administration.
    (
        "get",
        "/v1/admin/users",
        [NoToken, Role, Role, Role, Role, Pass],
        200,
    ),
    (
        "patch",
        "/v1/admin/users/{id}",
        [NoToken, Role, Role, Role, Role, Pass],
        422,
    ),
    (
        "get",
        "/v1/admin/jobs",
        [NoToken, Role, Role, Role, Role, Pass],
        200,
    ),
    // The job exists but is queued, not dead: only admins get as far as learning
    // there is no dead job of that id.
    (
        "post",
        "/v1/admin/jobs/{id}/retry",
        [NoToken, Role, Role, Role, Role, Hidden],
        NOBODY,
    ),
    // Events: published, so anyone sees it; only its organizer (and admins) change it.
    ("get", "/v1/events", [Pass; 6], 200),
    (
        "post",
        "/v1/events",
        [NoToken, Role, Role, Pass, Pass, Pass],
        422,
    ),
    ("get", "/v1/events/{id}", [Pass; 6], 200),
    (
        "patch",
        "/v1/events/{id}",
        [NoToken, Role, Role, Pass, Hidden, Pass],
        200,
    ),
    (
        "get",
        "/v1/events/{id}/sales",
        [NoToken, Role, Role, Pass, Hidden, Pass],
        200,
    ),
    (
        "post",
        "/v1/events/{id}/performances",
        [NoToken, Role, Role, Pass, Hidden, Pass],
        422,
    ),
    // Performances.
    ("get", "/v1/performances/{id}", [Pass; 6], 200),
    ("get", "/v1/performances/{id}/seats", [Pass; 6], 200),
    // Not a WebSocket upgrade here: 400 for whoever may watch.
    ("get", "/v1/performances/{id}/live", [Pass; 6], 400),
    (
        "patch",
        "/v1/performances/{id}",
        [NoToken, Role, Role, Pass, Hidden, Pass],
        200,
    ),
    (
        "patch",
        "/v1/performances/{id}/units",
        [NoToken, Role, Role, Pass, Hidden, Pass],
        422,
    ),
    (
        "get",
        "/v1/performances/{id}/bookings",
        [NoToken, Role, Role, Pass, Hidden, Pass],
        200,
    ),
    // Bookings: the buyer's; its event's organizer and admins may read it.
    (
        "post",
        "/v1/bookings",
        [NoToken, Pass, Pass, Pass, Pass, Pass],
        422,
    ),
    (
        "get",
        "/v1/bookings",
        [NoToken, Pass, Pass, Pass, Pass, Pass],
        200,
    ),
    (
        "get",
        "/v1/bookings/{id}",
        [NoToken, Pass, Hidden, Pass, Hidden, Pass],
        200,
    ),
    // Cancelling is the buyer's; organizers and admins refund through /v1/refunds.
    (
        "delete",
        "/v1/bookings/{id}",
        [NoToken, Pass, Hidden, Hidden, Hidden, Hidden],
        200,
    ),
    (
        "post",
        "/v1/bookings/{id}/checkout",
        [NoToken, Pass, Hidden, Hidden, Hidden, Hidden],
        409,
    ),
    // Money.
    (
        "post",
        "/v1/payments/mock/{payment_id}/complete",
        [NoToken, Pass, Hidden, Hidden, Hidden, Hidden],
        422,
    ),
    // The booking is named in the body, so `{}` is refused as invalid for any organizer.
    (
        "post",
        "/v1/refunds",
        [NoToken, Role, Role, Pass, Pass, Pass],
        422,
    ),
    // The waiting list: anyone logged in may ask to join (the performance is not sold
    // out: 409); an entry is its owner's.
    (
        "post",
        "/v1/performances/{id}/waitlist",
        [NoToken, Pass, Pass, Pass, Pass, Pass],
        422,
    ),
    (
        "get",
        "/v1/waitlist",
        [NoToken, Pass, Pass, Pass, Pass, Pass],
        200,
    ),
    (
        "delete",
        "/v1/waitlist/{id}",
        [NoToken, Pass, Hidden, Hidden, Hidden, Hidden],
        200,
    ),
    // The waiting room: this performance has none (409); a ticket is its owner's.
    (
        "post",
        "/v1/performances/{id}/queue",
        [NoToken, Pass, Pass, Pass, Pass, Pass],
        409,
    ),
    (
        "get",
        "/v1/queue/{ticket_id}",
        [NoToken, Pass, Hidden, Hidden, Hidden, Hidden],
        200,
    ),
    // Not a WebSocket upgrade here: 400 for anyone.
    ("get", "/v1/queue/{ticket_id}/live", [Pass; 6], 400),
    // The box office. The booking is held, not confirmed: those who may see it learn
    // that it has no tickets yet (409).
    (
        "get",
        "/v1/bookings/{id}/tickets",
        [NoToken, Pass, Hidden, Pass, Hidden, Pass],
        409,
    ),
    // The code is the bearer's: anyone holding a genuine one may render it.
    ("get", "/v1/tickets/{code}/qr.svg", [Pass; 6], 200),
    // The code is in the body, so `{}` is refused as invalid for any organizer.
    (
        "post",
        "/v1/checkins",
        [NoToken, Role, Role, Pass, Pass, Pass],
        422,
    ),
    (
        "get",
        "/v1/wallet",
        [NoToken, Pass, Pass, Pass, Pass, Pass],
        200,
    ),
    (
        "post",
        "/v1/admin/wallets/{user_id}/credit",
        [NoToken, Role, Role, Role, Role, Pass],
        422,
    ),
    (
        "get",
        "/v1/admin/audit",
        [NoToken, Role, Role, Role, Role, Pass],
        200,
    ),
    (
        "get",
        "/v1/events/{id}/audit",
        [NoToken, Role, Role, Pass, Hidden, Pass],
        200,
    ),
    // Stripe's endpoint exists only when Stripe is the provider (here: the mock).
    ("post", "/v1/webhooks/stripe", [Hidden; 6], NOBODY),
];

/// Every (method, path) the router serves under its OpenAPI document.
fn routes() -> Vec<(String, String)> {
    let (_, document) = usher_server::app::api();
    let document = serde_json::to_value(&document).unwrap();
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                routes.push((method.to_owned(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn every_route_has_a_row_and_every_row_a_route() {
    let routes = routes();
    let missing: Vec<String> = routes
        .iter()
        .filter(|(m, p)| !MATRIX.iter().any(|(mm, pp, _, _)| mm == m && pp == p))
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without a row in the authorization matrix: {missing:?}"
    );
    let stale: Vec<String> = MATRIX
        .iter()
        .filter(|(m, p, _, _)| !routes.iter().any(|(mm, pp)| mm == m && pp == p))
        .map(|(m, p, _, _)| format!("{m} {p}"))
        .collect();
    assert!(
        stale.is_empty(),
        "rows for routes that do not exist: {stale:?}"
    );
}

/// The resources the matrix points at.
struct World {
    event: String,
    performance: String,
    booking: String,
    payment: String,
    job: String,
    user: String,
    entry: String,
    ticket: String,
    /// A ticket code of the customer's paid booking.
    code: String,
}

fn fill(path: &str, world: &World) -> String {
    let id = if path.starts_with("/v1/events/") {
        &world.event
    } else if path.starts_with("/v1/performances/") {
        &world.performance
    } else if path.starts_with("/v1/bookings/") {
        &world.booking
    } else if path.starts_with("/v1/admin/users/") {
        &world.user
    } else if path.starts_with("/v1/admin/jobs/") {
        &world.job
    } else if path.starts_with("/v1/waitlist/") {
        &world.entry
    } else {
        ""
    };
    path.replace("{id}", id)
        .replace("{payment_id}", &world.payment)
        .replace("{ticket_id}", &world.ticket)
        .replace("{user_id}", &world.user)
        .replace("{code}", &world.code)
}

on_each_engine! {
    async fn every_route_answers_each_kind_of_caller_as_the_contract_says(engine) {
        let app = crate::helpers::spawn_app(engine).await;
        let (admin, organizer, customer) = app.cast().await;
        let other_customer = app.signup("other@example.com").await;
        let other_organizer = app.organizer("org2@example.com", &admin).await;
        // A booking of the customer's on the organizer's performance, with a checkout,
        // and a second, paid one so that a job exists.
        let (world_booking, world_payment, world_performance, world_event, world_code) = customer_booking(&app, &customer, &organizer).await;
        let jobs: Value = app.get("/v1/admin/jobs?state=queued", Some(&admin.access)).await.json().await.unwrap();
        let world = World {
            event: world_event,
            performance: world_performance,
            booking: world_booking,
            payment: world_payment,
            job: jobs["items"][0]["id"].as_str().expect("a queued job").to_owned(),
            user: other_customer.id.clone(),
            entry: waiting_entry(&app, &customer, &other_customer, &organizer).await,
            ticket: queue_ticket(&app, &customer, &organizer).await,
            code: world_code,
        };
        let callers: [Option<&Session>; 6] = [None, Some(&customer), Some(&other_customer), Some(&organizer), Some(&other_organizer), Some(&admin)];
        // Those who may not change anything go first, so that the owners' changes (a
        // cancelled hold, a refund) come after every refusal was checked.
        let order = [0, 2, 4, 1, 3, 5];
        let mut wrong = Vec::new();
        for (method, path, expected, past) in MATRIX {
            assert_eq!(expected.contains(&Pass), *past != NOBODY, "{method} {path}: a status past authorization for those who get there, and only for them");
            let url = app.url(&fill(path, &world));
            for &who in &order {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let mut request = app.client.request(method.clone(), &url);
                if let Some(session) = callers[who] {
                    request = request.bearer_auth(&session.access);
                }
                if method != Method::GET && method != Method::DELETE {
                    request = request.json(&json!({}));
                }
                let status = request.send().await.unwrap().status();
                let allowed = match expected[who] {
                    Pass => *past,
                    NoToken => 401,
                    Role => 403,
                    Hidden => 404,
                };
                if status.as_u16() != allowed {
                    wrong.push(format!("{method} {path} as {}: {status}, expected {allowed} ({:?})", CALLERS[who], expected[who]));
                }
            }
        }
        assert!(wrong.is_empty(), "{} answers break the contract:\n{}", wrong.len(), wrong.join("\n"));
    }
}

/// The customer's entry on the waiting list of a one-seat performance another holds.
async fn waiting_entry(
    app: &TestApp,
    customer: &Session,
    holder: &Session,
    organizer: &Session,
) -> String {
    let performance = crate::helpers::on_sale(app, organizer, crate::helpers::rows(&[1]), 1).await;
    let held = app
        .post(
            "/v1/bookings",
            Some(&holder.access),
            json!({"performance_id": performance["id"], "quantity": 1, "best_available": true}),
        )
        .await;
    assert_eq!(held.status(), reqwest::StatusCode::CREATED);
    let entry: Value = app
        .post(
            &format!(
                "/v1/performances/{}/waitlist",
                performance["id"].as_str().unwrap()
            ),
            Some(&customer.access),
            json!({"quantity": 1}),
        )
        .await
        .json()
        .await
        .unwrap();
    entry["id"].as_str().unwrap().to_owned()
}

/// The customer's ticket in the queue of a performance with a waiting room.
async fn queue_ticket(app: &TestApp, customer: &Session, organizer: &Session) -> String {
    let performance = crate::helpers::on_sale(app, organizer, crate::helpers::rows(&[1]), 1).await;
    let path = format!("/v1/performances/{}", performance["id"].as_str().unwrap());
    app.patch(
        &path,
        Some(&organizer.access),
        json!({"waiting_room": {"enabled": true}}),
    )
    .await;
    let ticket: Value = app
        .post(&format!("{path}/queue"), Some(&customer.access), json!({}))
        .await
        .json()
        .await
        .unwrap();
    ticket["ticket_id"].as_str().unwrap().to_owned()
}

/// (booking, payment, performance, event, ticket code) of a hold by `customer` on an
/// event of `organizer`'s with a checkout open, plus a second booking paid (so that a
/// confirmation job is queued), whose first ticket's code is the last.
async fn customer_booking(
    app: &TestApp,
    customer: &Session,
    organizer: &Session,
) -> (String, String, String, String, String) {
    let performance = crate::helpers::on_sale(app, organizer, crate::helpers::rows(&[6]), 6).await;
    let ids = crate::helpers::unit_ids(app, performance["id"].as_str().unwrap()).await;
    let mut booked = Vec::new();
    for seats in [&ids[0..2], &ids[2..4]] {
        let booking: Value = app
            .post(
                "/v1/bookings",
                Some(&customer.access),
                json!({"performance_id": performance["id"], "unit_ids": seats}),
            )
            .await
            .json()
            .await
            .unwrap();
        let checkout = start_checkout(app, customer, &booking).await;
        booked.push((booking, checkout));
    }
    let (paid_booking, paid_checkout) = &booked[1];
    let paid: Value = crate::helpers::pay(app, customer, paid_checkout, "succeeded")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(paid["status"], "confirmed", "{paid_booking}");
    let (booking, checkout) = &booked[0];
    (
        booking["id"].as_str().unwrap().to_owned(),
        checkout["payment_id"].as_str().unwrap().to_owned(),
        performance["id"].as_str().unwrap().to_owned(),
        performance["event_id"].as_str().unwrap().to_owned(),
        paid["units"][0]["ticket_code"].as_str().unwrap().to_owned(),
    )
}
