//! `spawn_app` and small helpers shared by the HTTP tests.

use std::sync::Arc;

use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use usher_core::ManualClock;
use usher_server::{Application, ServerConfig};
use usher_store::Store;
use usher_testkit::Engine;

pub struct TestApp {
    pub engine: Engine,
    /// The database, so that a restarted instance can open it again.
    pub database_url: String,
    pub config: ServerConfig,
    pub state: usher_server::state::AppState,
    pub mail_dir: std::path::PathBuf,
    pub address: String,
    pub client: Client,
    pub store: Arc<dyn Store>,
    /// The app's clock: tests move it instead of sleeping.
    pub clock: Arc<ManualClock>,
    _shutdown: oneshot::Sender<()>,
}

pub async fn spawn_app(engine: Engine) -> TestApp {
    spawn_app_with(engine, |_| {}).await
}

pub async fn spawn_app_with(engine: Engine, configure: impl FnOnce(&mut ServerConfig)) -> TestApp {
    let (store, database_url) = engine.fresh_store_with_url().await;
    let mail_dir =
        usher_testkit::scratch_dir().join(format!("mail-{}", uuid::Uuid::new_v4().simple()));
    let mut config = ServerConfig {
        // Tests sweep and run jobs by hand, after moving the clock.
        sweep_interval: None,
        job_interval: None,
        waiting_interval: None,
        // Races send hundreds of requests from one address; the limits' own tests
        // turn them on.
        rate_limits: false,
        mail: usher_server::MailConfig {
            dir: mail_dir.clone(),
            ..Default::default()
        },
        ..ServerConfig::default()
    };
    configure(&mut config);
    let clock = Arc::new(ManualClock::starting_now());
    start(engine, database_url, config, store, clock, mail_dir).await
}

/// An instance on the PostgreSQL database at `database_url` whose public reads may go
/// to `replica` (`DATABASE_READ_URL`), allowed to lag `max_lag`.
pub async fn spawn_app_with_replica(
    database_url: &str,
    replica: Arc<dyn Store>,
    max_lag: std::time::Duration,
) -> TestApp {
    let store = Engine::Postgres.open(database_url).await;
    let mail_dir =
        usher_testkit::scratch_dir().join(format!("mail-{}", uuid::Uuid::new_v4().simple()));
    let config = ServerConfig {
        sweep_interval: None,
        job_interval: None,
        waiting_interval: None,
        rate_limits: false,
        read_max_lag: max_lag,
        mail: usher_server::MailConfig {
            dir: mail_dir.clone(),
            ..Default::default()
        },
        ..ServerConfig::default()
    };
    let clock = Arc::new(ManualClock::starting_now());
    let engine = Engine::Postgres;
    let url = database_url.to_owned();
    start_with(engine, url, config, store, Some(replica), clock, mail_dir).await
}

async fn start(
    engine: Engine,
    database_url: String,
    config: ServerConfig,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    mail_dir: std::path::PathBuf,
) -> TestApp {
    start_with(engine, database_url, config, store, None, clock, mail_dir).await
}

async fn start_with(
    engine: Engine,
    database_url: String,
    config: ServerConfig,
    store: Arc<dyn Store>,
    replica: Option<Arc<dyn Store>>,
    clock: Arc<ManualClock>,
    mail_dir: std::path::PathBuf,
) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Application::build_with_replica(
        config.clone(),
        store.clone(),
        replica,
        clock.clone(),
        listener,
    )
    .await
    .expect("build app");
    let address = format!("http://{}", app.local_addr().unwrap());
    let state = app.state();
    let (shutdown, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        engine,
        database_url,
        config,
        state,
        mail_dir,
        address,
        client: Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        store,
        clock,
        _shutdown: shutdown,
    }
}

/// A logged-in user as the tests see them.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub role: String,
    pub access: String,
    pub refresh: String,
}

impl Session {
    fn from_body(body: &Value) -> Self {
        Self {
            id: body["user"]["id"].as_str().unwrap().to_owned(),
            role: body["user"]["role"].as_str().unwrap().to_owned(),
            access: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }
}

pub const PASSWORD: &str = "correct horse battery";

impl TestApp {
    /// A second instance on the same database, configuration and mail folder, as after
    /// a crash and restart (its clock starts where this one is). This one keeps running
    /// but, like the tests' instances, never works through jobs on its own.
    pub async fn restart(&self) -> TestApp {
        let store = self.engine.open(&self.database_url).await;
        let clock = Arc::new(ManualClock::new(self.clock_now()));
        start(
            self.engine,
            self.database_url.clone(),
            self.config.clone(),
            store,
            clock,
            self.mail_dir.clone(),
        )
        .await
    }

    /// A second instance on the same database and configuration whose public reads
    /// may go to `replica`, allowed to lag `max_lag`.
    pub async fn sibling_with_replica(
        &self,
        replica: Arc<dyn Store>,
        max_lag: std::time::Duration,
    ) -> TestApp {
        let store = self.engine.open(&self.database_url).await;
        let clock = Arc::new(ManualClock::new(self.clock_now()));
        let config = ServerConfig {
            read_max_lag: max_lag,
            ..self.config.clone()
        };
        let url = self.database_url.clone();
        let mail_dir = self.mail_dir.clone();
        start_with(
            self.engine,
            url,
            config,
            store,
            Some(replica),
            clock,
            mail_dir,
        )
        .await
    }

    /// Runs every due job (emails, refunds) once, as a worker would.
    pub async fn run_jobs(&self) -> usize {
        usher_server::jobs::run_due(&self.state).await
    }

    /// The .eml files written so far.
    pub fn emails(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.mail_dir) else {
            return Vec::new();
        };
        let mut mails: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect();
        mails.sort();
        mails
    }

    pub fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use usher_core::Clock;
        self.clock.now()
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Response {
        self.send(Method::DELETE, path, token, None).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request")
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.send(Method::POST, path, token, Some(body)).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.send(Method::GET, path, token, None).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.send(Method::PATCH, path, token, Some(body)).await
    }

    pub async fn signup(&self, email: &str) -> Session {
        let response = self
            .post(
                "/v1/auth/signup",
                None,
                json!({"email": email, "password": PASSWORD, "name": "Test Person"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        Session::from_body(&response.json().await.unwrap())
    }

    pub async fn login(&self, email: &str) -> Session {
        let response = self
            .post(
                "/v1/auth/login",
                None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        Session::from_body(&response.json().await.unwrap())
    }

    /// The first account (admin), an organizer and a customer.
    pub async fn cast(&self) -> (Session, Session, Session) {
        let admin = self.signup("admin@example.com").await;
        let organizer = self.organizer("org@example.com", &admin).await;
        let customer = self.signup("customer@example.com").await;
        (admin, organizer, customer)
    }

    /// Signs up and promotes to organizer, returning a session whose token has the role.
    pub async fn organizer(&self, email: &str, admin: &Session) -> Session {
        let user = self.signup(email).await;
        let response = self
            .patch(
                &format!("/v1/admin/users/{}", user.id),
                Some(&admin.access),
                json!({"role": "organizer"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        self.login(email).await
    }

    pub async fn create_event(&self, organizer: &Session, title: &str) -> Value {
        let response = self
            .post(
                "/v1/events",
                Some(&organizer.access),
                json!({"title": title, "description": "d", "venue": "v"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    pub async fn publish(&self, organizer: &Session, event_id: &str) {
        let response = self
            .patch(
                &format!("/v1/events/{event_id}"),
                Some(&organizer.access),
                json!({"status": "published"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// A published event of `organizer` with one performance from this seating plan
/// (`seating` as the API takes it); returns the performance as the API answered.
pub async fn on_sale(
    app: &TestApp,
    organizer: &Session,
    seating: Value,
    max_per_booking: u32,
) -> Value {
    let event = app.create_event(organizer, "On Sale").await;
    let event_id = event["id"].as_str().unwrap();
    app.publish(organizer, event_id).await;
    let response = app
        .post(
            &format!("/v1/events/{event_id}/performances"),
            Some(&organizer.access),
            json!({
                "starts_at": (app.clock_now() + chrono::Duration::days(7)).to_rfc3339(),
                "max_per_booking": max_per_booking,
                "seating": seating,
            }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

/// The cast, a published performance of four seats, and a hold of the first two by the
/// customer: (organizer, customer, performance, unit ids, booking).
pub async fn held_pair(app: &TestApp) -> (Session, Session, Value, Vec<String>, Value) {
    let (_, organizer, customer) = app.cast().await;
    let performance = on_sale(app, &organizer, rows(&[4]), 4).await;
    let ids = unit_ids(app, performance["id"].as_str().unwrap()).await;
    let response = app
        .post(
            "/v1/bookings",
            Some(&customer.access),
            json!({"performance_id": performance["id"], "unit_ids": [ids[0], ids[1]]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let booking = response.json().await.unwrap();
    (organizer, customer, performance, ids, booking)
}

/// Starts checkout for the booking as `who`; returns the checkout answer.
pub async fn start_checkout(app: &TestApp, who: &Session, booking: &Value) -> Value {
    let response = app
        .post(
            &format!("/v1/bookings/{}/checkout", booking["id"].as_str().unwrap()),
            Some(&who.access),
            json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// The mock provider's pay button.
pub async fn pay(app: &TestApp, who: &Session, checkout: &Value, outcome: &str) -> Response {
    app.post(
        &format!(
            "/v1/payments/mock/{}/complete",
            checkout["payment_id"].as_str().unwrap()
        ),
        Some(&who.access),
        json!({"outcome": outcome}),
    )
    .await
}

/// Rows of `seats` seats in one section priced 45.00 EUR.
pub fn rows(seats: &[u32]) -> Value {
    let rows: Vec<Value> = seats
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"label": ((b'A' + i as u8) as char).to_string(), "seats": n}))
        .collect();
    json!({"kind": "reserved", "sections": [{"name": "Stalls", "price": {"amount": 4500, "currency": "EUR"}, "rows": rows}]})
}

/// One general-admission ticket type priced 20.00 EUR.
pub fn standing(capacity: u32) -> Value {
    json!({"kind": "general", "ticket_types": [{"name": "Standing", "price": {"amount": 2000, "currency": "EUR"}, "capacity": capacity}]})
}

/// The seat map's unit ids, in order.
pub async fn unit_ids(app: &TestApp, performance_id: &str) -> Vec<String> {
    seat_map_column(app, performance_id, "id").await
}

/// The seat map's unit states (`available`, `held` …), in order.
pub async fn seat_states(app: &TestApp, performance_id: &str) -> Vec<String> {
    seat_map_column(app, performance_id, "state").await
}

async fn seat_map_column(app: &TestApp, performance_id: &str, field: &str) -> Vec<String> {
    let map: Value = app
        .get(&format!("/v1/performances/{performance_id}/seats"), None)
        .await
        .json()
        .await
        .unwrap();
    map["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u[field].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts a problem+json answer with this status and returns its body.
pub async fn assert_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "wrong status");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    for key in ["type", "title", "detail"] {
        assert!(body[key].is_string(), "problem lacks {key}: {body}");
    }
    body
}

/// The fields named in a validation problem.
pub async fn invalid_fields(response: Response) -> Vec<String> {
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["type"], "/problems/validation-error");
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
            e["field"].as_str().unwrap().to_owned()
        })
        .collect()
}
