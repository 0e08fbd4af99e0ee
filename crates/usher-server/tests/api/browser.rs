//! The web UI in a real browser: Debian's `chromium`, headless, driven over WebDriver by
//! `chromedriver` (fantoccini), on loopback. Each test starts its own chromedriver on a
//! free port and stops it. On failure the test saves a screenshot and the page source of
//! every browser it drove under `target/browser-failures/`.
//!
//! The store's behaviour is proven on both engines elsewhere; here the subject is the
//! UI, so these run on SQLite only (each browser costs a chromium process).

use std::future::Future;
use std::net::TcpListener as StdListener;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{Value, json};

use usher_testkit::Engine;

use crate::helpers::{
    PASSWORD, TestApp, on_sale, pay, rows, seat_states, spawn_app, start_checkout, unit_ids,
};

/// How long a page may take to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(15);

/// A chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
    profiles: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profiles);
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// The chromium binary itself (Debian's `/usr/bin/chromium` is a wrapper script).
fn chromium() -> Option<PathBuf> {
    let real = PathBuf::from("/usr/lib/chromium/chromium");
    if real.is_file() {
        return Some(real);
    }
    on_path("chromium").or_else(|| on_path("chromium-browser"))
}

impl Driver {
    /// `None` (with a note) when chromium or chromedriver is missing in a hand-run
    /// `cargo test`; under `scripts/test` or CI that fails
    /// ([`usher_testkit::skipping_is_a_failure`]).
    fn start() -> Option<Self> {
        let (Some(driver), Some(_)) = (on_path("chromedriver"), chromium()) else {
            if usher_testkit::skipping_is_a_failure() {
                panic!(
                    "chromium and chromedriver are required here (scripts/test installs them; \
                     USHER_TESTS_ALLOW_SKIPS=1 scripts/test skips on purpose)"
                );
            }
            eprintln!("skipped: chromium/chromedriver not installed (scripts/test installs them)");
            return None;
        };
        let port = StdListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profiles = usher_testkit::scratch_dir()
            .join(format!("chromium-{}", uuid::Uuid::new_v4().simple()));
        Some(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profiles,
        })
    }

    /// A fresh headless browser (its own profile, so its own cookies).
    async fn browser(&self) -> Client {
        let profile = self
            .profiles
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&profile).unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium().unwrap(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--disable-background-networking",
                    "--window-size=1280,1100", format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a chromium session")
    }
}

/// Runs a test's steps; if they fail, keeps what each browser showed.
async fn keeping_evidence(name: &str, browsers: &[&Client], steps: impl Future<Output = ()>) {
    if let Err(panic) = AssertUnwindSafe(steps).catch_unwind().await {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-failures");
        let _ = std::fs::create_dir_all(&dir);
        for (i, browser) in browsers.iter().enumerate() {
            if let Ok(png) = browser.screenshot().await {
                let _ = std::fs::write(dir.join(format!("{name}-{i}.png")), png);
            }
            if let Ok(html) = browser.source().await {
                let _ = std::fs::write(dir.join(format!("{name}-{i}.html")), html);
            }
            if let Ok(url) = browser.current_url().await {
                eprintln!("browser {i} was at {url}");
            }
        }
        eprintln!("screenshots and page sources are in {}", dir.display());
        std::panic::resume_unwind(panic);
    }
}

async fn close(browsers: Vec<Client>) {
    for browser in browsers {
        let _ = browser.close().await;
    }
}

/// Waits until `check` answers `Some`, re-asking every 100 ms.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn path_of(browser: &Client) -> String {
    let url = browser.current_url().await.unwrap();
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

async fn wait_for_path(browser: &Client, prefix: &str) -> String {
    eventually(&format!("a page under {prefix}"), || async {
        let path = path_of(browser).await;
        path.starts_with(prefix).then_some(path)
    })
    .await
}

async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn wait_for_text(browser: &Client, css: &str, needle: &str) -> String {
    eventually(&format!("{css} to say {needle:?}"), || async {
        let element = browser.find(Locator::Css(css)).await.ok()?;
        let text = element.text().await.ok()?;
        text.contains(needle).then_some(text)
    })
    .await
}

async fn fill(browser: &Client, css: &str, value: &str) {
    let field = browser.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn seat(browser: &Client, unit: &str) -> fantoccini::elements::Element {
    browser
        .find(Locator::Css(&format!("circle[data-unit=\"{unit}\"]")))
        .await
        .unwrap()
}

async fn seat_state(browser: &Client, unit: &str) -> String {
    seat(browser, unit)
        .await
        .attr("data-state")
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn picked(browser: &Client) -> String {
    browser
        .find(Locator::Css("[data-picked-input]"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn log_in(browser: &Client, app: &TestApp, email: &str, next: &str) {
    browser
        .goto(&app.url(&format!("/login?next={}", next.replace('/', "%2F"))))
        .await
        .unwrap();
    fill(browser, "#email", email).await;
    fill(browser, "#password", PASSWORD).await;
    click(browser, "form.stack button[type=submit]").await;
    wait_for_path(browser, next).await;
}

/// Opens a performance page and waits for its live feed to connect.
async fn open_performance(browser: &Client, app: &TestApp, performance_id: &str) {
    browser
        .goto(&app.url(&format!("/performances/{performance_id}")))
        .await
        .unwrap();
    wait_for_text(browser, "[data-live-status]", "Live").await;
}

#[tokio::test]
async fn a_buyer_signs_up_picks_two_seats_pays_and_sees_the_tickets() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let app = spawn_app(Engine::Sqlite).await;
    let (_, organizer, _) = app.cast().await;
    let performance = on_sale(&app, &organizer, rows(&[6, 6]), 4).await;
    let performance_id = performance["id"].as_str().unwrap().to_owned();
    let units = unit_ids(&app, &performance_id).await;
    let browser = driver.browser().await;
    keeping_evidence("buyer", &[&browser], async {
        browser.goto(&app.url("/signup")).await.unwrap();
        fill(&browser, "#name", "Browser Buyer").await;
        fill(&browser, "#email", "browser@example.com").await;
        fill(&browser, "#password", PASSWORD).await;
        click(&browser, "form.stack button[type=submit]").await;
        eventually("signed in", || async {
            (path_of(&browser).await == "/").then_some(())
        })
        .await;
        assert!(text_of(&browser, "header nav").await.contains("Log out"));

        open_performance(&browser, &app, &performance_id).await;
        // One seat with the mouse, the next with the keyboard.
        seat(&browser, &units[2]).await.click().await.unwrap();
        browser
            .active_element()
            .await
            .unwrap()
            .send_keys(&(Key::Right + " "))
            .await
            .unwrap();
        assert_eq!(picked(&browser).await, format!("{},{}", units[2], units[3]));
        let selection = text_of(&browser, "[data-selection]").await;
        assert!(
            selection.starts_with("2 seats: Stalls A3, Stalls A4"),
            "{selection}"
        );
        assert_eq!(
            seat(&browser, &units[3])
                .await
                .attr("aria-checked")
                .await
                .unwrap()
                .as_deref(),
            Some("true")
        );
        click(&browser, "[data-pick-submit]").await;
        wait_for_path(&browser, "/checkout/").await;
        // The countdown runs.
        eventually("the countdown", || async {
            let left = text_of(&browser, "[data-countdown-left]").await;
            left.contains(':').then_some(())
        })
        .await;
        click(&browser, "#pay").await;
        wait_for_path(&browser, "/checkout/").await;
        eventually("the mock provider's page", || async {
            path_of(&browser).await.contains("?payment=").then_some(())
        })
        .await;
        click(&browser, "#mock-pay").await;
        wait_for_path(&browser, "/bookings?confirmed=").await;
        let booking = text_of(&browser, "article.booking.highlight").await;
        assert!(booking.contains("Stalls, row A, seat 3"), "{booking}");
        assert!(booking.to_lowercase().contains("confirmed"), "{booking}");
        let codes = browser
            .find_all(Locator::Css("article.booking.highlight .ticket-code"))
            .await
            .unwrap();
        assert_eq!(codes.len(), 2, "a ticket code per seat");
        for code in codes {
            assert!(code.text().await.unwrap().len() >= 10);
        }
        // Each code beside its QR image, which the browser loads (lazily: scrolled to) and draws.
        eventually("both QR images drawn", || async {
            let drawn = browser
                .execute(
                    "const imgs = [...document.querySelectorAll('article.booking.highlight .qr-ticket img')];\
                     imgs.forEach(img => img.scrollIntoView());\
                     return imgs.filter(img => img.complete && img.naturalWidth > 0).length",
                    vec![],
                )
                .await
                .unwrap();
            (drawn.as_u64() == Some(2)).then_some(())
        })
        .await;
        // At a phone's width nothing spills sideways.
        browser.set_window_size(390, 844).await.unwrap();
        for path in ["/", &format!("/performances/{performance_id}"), "/bookings"] {
            browser.goto(&app.url(path)).await.unwrap();
            let fits = browser
                .execute(
                    "return document.documentElement.scrollWidth <= window.innerWidth",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(fits, json!(true), "{path} is wider than a phone");
        }
    })
    .await;
    let states = seat_states(&app, &performance_id).await;
    assert_eq!((states[2].as_str(), states[3].as_str()), ("sold", "sold"));
    assert_eq!(states.iter().filter(|s| *s == "sold").count(), 2);
    close(vec![browser]).await;
}

#[tokio::test]
async fn two_browsers_race_for_a_seat_and_the_loser_sees_it_taken_live() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let app = spawn_app(Engine::Sqlite).await;
    let (_, organizer, _) = app.cast().await;
    app.signup("ada@example.com").await;
    app.signup("bob@example.com").await;
    let performance = on_sale(&app, &organizer, rows(&[8]), 4).await;
    let performance_id = performance["id"].as_str().unwrap().to_owned();
    let units = unit_ids(&app, &performance_id).await;
    let ada = driver.browser().await;
    let bob = driver.browser().await;
    keeping_evidence("race", &[&ada, &bob], async {
        let path = format!("/performances/{performance_id}");
        tokio::join!(
            log_in(&ada, &app, "ada@example.com", &path),
            log_in(&bob, &app, "bob@example.com", &path),
        );
        tokio::join!(
            open_performance(&ada, &app, &performance_id),
            open_performance(&bob, &app, &performance_id),
        );
        // Bob's page must not reload: a marker set now has to survive.
        bob.execute("document.body.dataset.marker = 'kept'", vec![])
            .await
            .unwrap();

        // Both want seat 1; Ada holds it first. Bob's map turns it held, live.
        seat(&bob, &units[0]).await.click().await.unwrap();
        assert_eq!(picked(&bob).await, units[0]);
        seat(&ada, &units[0]).await.click().await.unwrap();
        click(&ada, "[data-pick-submit]").await;
        wait_for_path(&ada, "/checkout/").await;
        eventually("seat 1 held on Bob's map", || async {
            (seat_state(&bob, &units[0]).await == "held").then_some(())
        })
        .await;
        assert_eq!(
            picked(&bob).await,
            "",
            "the taken seat left Bob's selection"
        );
        let notice = wait_for_text(&bob, "[data-taken-notice]", "was just taken").await;
        assert!(notice.contains("Stalls A1"), "{notice}");
        let class = seat(&bob, &units[0])
            .await
            .attr("class")
            .await
            .unwrap()
            .unwrap_or_default();
        assert!(class.contains("held"), "{class}");
        let marker = bob
            .execute("return document.body.dataset.marker", vec![])
            .await
            .unwrap();
        assert_eq!(marker, json!("kept"), "Bob's page was not reloaded");

        // Then both click "hold" on seat 2 at the same moment: exactly one gets it. The
        // other either posted too and got the 409 page, or was quicker to hear the news
        // than to click: the live map dropped the seat and disabled the button first.
        open_performance(&ada, &app, &performance_id).await;
        seat(&ada, &units[1]).await.click().await.unwrap();
        seat(&bob, &units[1]).await.click().await.unwrap();
        let (a, b) = (
            ada.find(Locator::Css("[data-pick-submit]")).await.unwrap(),
            bob.find(Locator::Css("[data-pick-submit]")).await.unwrap(),
        );
        let (clicked_a, clicked_b) = tokio::join!(a.click(), b.click());
        clicked_a.unwrap();
        clicked_b.unwrap();
        let mut winners = 0;
        for browser in [&ada, &bob] {
            let won = eventually("the hold's answer", || async {
                if path_of(browser).await.starts_with("/checkout/") {
                    return Some(true);
                }
                for css in ["#problem", "[data-taken-notice]"] {
                    if let Ok(element) = browser.find(Locator::Css(css)).await
                        && let Ok(text) = element.text().await
                        && text.contains("Stalls A2 was just taken")
                    {
                        return Some(false);
                    }
                }
                None
            })
            .await;
            if won {
                winners += 1;
            } else {
                // The loser's page (live, or the 409 page it may be loading) shows the
                // seat taken.
                eventually("seat 2 held on the loser's map", || async {
                    let css = format!("circle[data-unit=\"{}\"]", units[1]);
                    let element = browser.find(Locator::Css(&css)).await.ok()?;
                    let state = element.attr("data-state").await.ok()??;
                    (state == "held").then_some(())
                })
                .await;
            }
        }
        assert_eq!(winners, 1, "exactly one browser got seat 2");
    })
    .await;
    let states = seat_states(&app, &performance_id).await;
    assert_eq!((states[0].as_str(), states[1].as_str()), ("held", "held"));
    assert!(states[2..].iter().all(|s| s == "available"), "{states:?}");
    close(vec![ada, bob]).await;
}

#[tokio::test]
async fn an_organizer_builds_and_publishes_an_event_and_sees_a_sale_on_the_dashboard() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let app = spawn_app(Engine::Sqlite).await;
    let (_, _, customer) = app.cast().await;
    let browser = driver.browser().await;
    keeping_evidence("organizer", &[&browser], async {
        log_in(&browser, &app, "org@example.com", "/organizer").await;
        click(&browser, "a[href=\"/organizer/events/new\"]").await;
        fill(&browser, "#title", "Browser Gala").await;
        fill(&browser, "#venue", "Loopback Hall").await;
        fill(&browser, "#description", "Made in a headless browser.").await;
        click(&browser, "form.stack button[type=submit]").await;
        // (Not just any /organizer/events/ path: the form's own page is one too.)
        let path = eventually("the new event's page", || async {
            let path = path_of(&browser).await;
            path.ends_with("?created=1").then_some(path)
        })
        .await;
        let event_id = path
            .trim_start_matches("/organizer/events/")
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        click(
            &browser,
            &format!("a[href=\"/organizer/events/{event_id}/performances\"]"),
        )
        .await;
        wait_for_path(
            &browser,
            &format!("/organizer/events/{event_id}/performances"),
        )
        .await;
        // The plan: Stalls 2 × 4 and Balcony 1 × 6 (typed over the suggestions), and a
        // line added with the builder's button: Box 1 × 2.
        let line = |field: &str, i: usize| {
            format!("tbody[data-lines] tr:nth-child({i}) input[name={field}]")
        };
        for (i, values) in [
            (1, ["Stalls", "45", "2", "4"]),
            (2, ["Balcony", "30", "1", "6"]),
        ] {
            for (field, value) in [
                "section_name",
                "section_price",
                "section_rows",
                "section_seats",
            ]
            .iter()
            .zip(values)
            {
                fill(&browser, &line(field, i), value).await;
            }
        }
        click(
            &browser,
            "fieldset[data-kind-panel=reserved] [data-add-line]",
        )
        .await;
        for (field, value) in [
            "section_name",
            "section_price",
            "section_rows",
            "section_seats",
        ]
        .iter()
        .zip(["Box", "80", "1", "2"])
        {
            fill(&browser, &line(field, 4), value).await;
        }
        click(&browser, "#create-performance").await;
        let path = wait_for_path(&browser, "/organizer/performances/").await;
        let performance_id = path.trim_start_matches("/organizer/performances/");
        assert!(text_of(&browser, "main").await.contains("No sales yet"));
        browser
            .goto(&app.url(&format!("/organizer/events/{event_id}")))
            .await
            .unwrap();
        click(&browser, "#publish").await;
        wait_for_text(&browser, "main", "On sale.").await;

        // A buyer pays for one seat (through the API).
        let units = unit_ids(&app, performance_id).await;
        assert_eq!(units.len(), 16);
        let held = app
            .post(
                "/v1/bookings",
                Some(&customer.access),
                json!({"performance_id": performance_id, "unit_ids": [units[0]]}),
            )
            .await;
        assert_eq!(held.status(), reqwest::StatusCode::CREATED);
        let booking: Value = held.json().await.unwrap();
        let checkout = start_checkout(&app, &customer, &booking).await;
        assert_eq!(
            pay(&app, &customer, &checkout, "succeeded").await.status(),
            reqwest::StatusCode::OK
        );

        browser.goto(&app.url("/organizer")).await.unwrap();
        let sold = text_of(&browser, &format!("[data-sold=\"{performance_id}\"]")).await;
        assert_eq!(sold, "1 / 16");
        assert_eq!(text_of(&browser, "[data-stat=sold]").await, "1");
        assert_eq!(text_of(&browser, "[data-stat=revenue]").await, "€45.00");
        // The chart has a bar for it.
        let bars = browser
            .find_all(Locator::Css(".chart rect.bar-sold"))
            .await
            .unwrap();
        assert_eq!(bars.len(), 1);
    })
    .await;
    close(vec![browser]).await;
}

#[tokio::test]
async fn a_form_posted_without_its_csrf_token_is_refused_in_the_browser() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let app = spawn_app(Engine::Sqlite).await;
    app.signup("ann@example.com").await;
    let browser = driver.browser().await;
    keeping_evidence("csrf", &[&browser], async {
        browser.goto(&app.url("/login")).await.unwrap();
        browser
            .execute(
                "document.querySelector('input[name=_csrf]').remove()",
                vec![],
            )
            .await
            .unwrap();
        fill(&browser, "#email", "ann@example.com").await;
        fill(&browser, "#password", PASSWORD).await;
        click(&browser, "form.stack button[type=submit]").await;
        wait_for_text(&browser, "main h1", "That form was refused").await;
        assert!(
            text_of(&browser, "header nav").await.contains("Log in"),
            "not signed in"
        );
        // With the token (a fresh page) the same form works.
        log_in(&browser, &app, "ann@example.com", "/bookings").await;
    })
    .await;
    close(vec![browser]).await;
}

/// The id of the element that has the focus.
async fn focused_id(browser: &Client) -> String {
    browser
        .active_element()
        .await
        .unwrap()
        .attr("id")
        .await
        .unwrap()
        .unwrap_or_default()
}

#[tokio::test]
async fn the_door_keeps_its_code_field_focused_so_a_scanner_checks_in_ticket_after_ticket() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let app = spawn_app(Engine::Sqlite).await;
    let (_, organizer, customer) = app.cast().await;
    let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
    let performance_id = performance["id"].as_str().unwrap().to_owned();
    let units = unit_ids(&app, &performance_id).await;
    let booking: Value = app
        .post(
            "/v1/bookings",
            Some(&customer.access),
            json!({"performance_id": performance_id, "unit_ids": [units[0], units[1]]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let checkout = start_checkout(&app, &customer, &booking).await;
    let paid: Value = pay(&app, &customer, &checkout, "succeeded")
        .await
        .json()
        .await
        .unwrap();
    let codes: Vec<String> = paid["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["ticket_code"].as_str().unwrap().to_owned())
        .collect();
    let browser = driver.browser().await;
    keeping_evidence("door", &[&browser], async {
        let door = format!("/organizer/performances/{performance_id}/door");
        log_in(&browser, &app, "org@example.com", &door).await;
        // A scanner types into whatever has the focus, then presses Enter.
        let scan = |code: String| {
            let browser = &browser;
            async move {
                assert_eq!(focused_id(browser).await, "code", "the field has the focus");
                browser
                    .active_element()
                    .await
                    .unwrap()
                    .send_keys(&format!("{code}{}", Key::Enter))
                    .await
                    .unwrap();
            }
        };
        scan(codes[0].clone()).await;
        wait_for_text(&browser, "[data-verdict]", "Admit").await;
        assert!(
            text_of(&browser, "[data-verdict]")
                .await
                .contains("Stalls, row A, seat 1")
        );
        assert_eq!(text_of(&browser, "[data-door-count]").await, "1 / 2");
        // A click elsewhere on the page does not strand the scanner.
        click(&browser, "[data-verdict]").await;
        eventually("the focus back in the field", || async {
            (focused_id(&browser).await == "code").then_some(())
        })
        .await;
        scan(codes[0].clone()).await;
        wait_for_text(&browser, "[data-verdict]", "Already in").await;
        scan(codes[1].to_lowercase()).await;
        wait_for_text(&browser, "[data-verdict]", "Admit").await;
        assert_eq!(text_of(&browser, "[data-door-count]").await, "2 / 2");
    })
    .await;
    close(vec![browser]).await;
}

/// Not a test: makes the README's screenshots (`scripts/screenshots`).
#[tokio::test]
#[ignore = "run by scripts/screenshots"]
async fn readme_screenshots() {
    let driver = Driver::start().expect("chromium and chromedriver");
    let app = spawn_app(Engine::Sqlite).await;
    let (_, organizer, customer) = app.cast().await;
    let seating = json!({"kind": "reserved", "sections": [
        {"name": "Stalls", "price": {"amount": 5500, "currency": "EUR"},
         "rows": (0..8).map(|r| json!({"label": ((b'A' + r) as char).to_string(), "seats": 18 - (r as i64 % 2) * 2})).collect::<Vec<_>>()},
        {"name": "Balcony", "price": {"amount": 3500, "currency": "EUR"},
         "rows": (0..4).map(|r| json!({"label": ((b'A' + r) as char).to_string(), "seats": 20})).collect::<Vec<_>>()},
    ]});
    let performance = on_sale(&app, &organizer, seating, 8).await;
    let performance_id = performance["id"].as_str().unwrap().to_owned();
    let renamed = app
        .patch(
            &format!("/v1/events/{}", performance["event_id"].as_str().unwrap()),
            Some(&organizer.access),
            json!({"title": "Jazz on the Roof", "venue": "Skyline Hall, Berlin"}),
        )
        .await;
    assert_eq!(renamed.status(), reqwest::StatusCode::OK);
    let units = unit_ids(&app, &performance_id).await;
    // Some sold, some held, so the map shows every state.
    for chunk in [
        &units[3..7],
        &units[40..44],
        &units[60..63],
        &units[120..126],
    ] {
        let held = app
            .post(
                "/v1/bookings",
                Some(&customer.access),
                json!({"performance_id": performance_id, "unit_ids": chunk}),
            )
            .await;
        let booking: Value = held.json().await.unwrap();
        let checkout = start_checkout(&app, &customer, &booking).await;
        pay(&app, &customer, &checkout, "succeeded").await;
    }
    app.post(
        "/v1/bookings",
        Some(&customer.access),
        json!({"performance_id": performance_id, "unit_ids": &units[20..23]}),
    )
    .await;
    let browser = driver.browser().await;
    log_in(&browser, &app, "org@example.com", "/organizer").await;
    open_performance(&browser, &app, &performance_id).await;
    for unit in &units[80..82] {
        seat(&browser, unit).await.click().await.unwrap();
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("seat-map.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();
    browser.goto(&app.url("/organizer")).await.unwrap();
    std::fs::write(
        out.join("organizer-dashboard.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();
    // The door, just after a scan.
    let bookings: Value = app
        .get("/v1/bookings", Some(&customer.access))
        .await
        .json()
        .await
        .unwrap();
    let booking_id = bookings["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["status"] == "confirmed")
        .and_then(|b| b["id"].as_str())
        .unwrap();
    let tickets: Value = app
        .get(
            &format!("/v1/bookings/{booking_id}/tickets"),
            Some(&customer.access),
        )
        .await
        .json()
        .await
        .unwrap();
    browser
        .goto(&app.url(&format!("/organizer/performances/{performance_id}/door")))
        .await
        .unwrap();
    let code = tickets["items"][0]["code"].as_str().unwrap();
    browser
        .active_element()
        .await
        .unwrap()
        .send_keys(&format!("{code}{}", Key::Enter))
        .await
        .unwrap();
    wait_for_text(&browser, "[data-verdict]", "Admit").await;
    std::fs::write(out.join("door.png"), browser.screenshot().await.unwrap()).unwrap();
    // The buyer's tickets.
    let buyer = driver.browser().await;
    log_in(&buyer, &app, "customer@example.com", "/bookings").await;
    buyer
        .execute(
            "document.querySelector('article.booking .tickets').closest('article').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    std::fs::write(out.join("tickets.png"), buyer.screenshot().await.unwrap()).unwrap();
    close(vec![buyer]).await;
    println!("wrote {}", out.display());
    close(vec![browser]).await;
}
