//! Slow and hostile clients, over raw TCP where a well-behaved HTTP client would not do
//! it: half a request head, huge headers, too many connections or requests at once,
//! bodies that never arrive, deeply nested JSON, oversized WebSocket messages. Each is
//! cut off or refused with an answer, and the server keeps serving everyone else.
//! (Transport behaviour, the same whatever the engine: SQLite only.)

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use usher_testkit::Engine;

use crate::helpers::{TestApp, assert_problem, on_sale, rows, spawn_app_with};

fn socket_address(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(socket_address(app)).await.unwrap()
}

/// Everything the server sends until it closes the connection, and how long that took;
/// panics if it is still open after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => panic!(
                "still open after {limit:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

/// One raw GET on a fresh connection; the whole answer (the server closes after it).
async fn raw_get(app: &TestApp, path: &str) -> String {
    let mut stream = connect(app).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: usher\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .0
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

/// Polls `path` on fresh connections until its status line says `status`, or fails with
/// `why` after five seconds; the answer. (The server counts a connection as it accepts
/// it and frees its slot as it closes: both are seen a moment later.)
async fn answered_soon(app: &TestApp, path: &str, status: &str, why: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = raw_get(app, path).await;
        if status_line(&answer).contains(status) {
            return answer;
        }
        assert!(Instant::now() < deadline, "{why}: {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The slot or share a closed connection freed is reused: `path` answers 200 again.
async fn served_again(app: &TestApp, path: &str, why: &str) {
    answered_soon(app, path, "200", why).await;
}

/// Once the server has counted what fills it, `path` is refused with 503; the refusal.
async fn refused_soon(app: &TestApp, path: &str, why: &str) -> String {
    answered_soon(app, path, "503", why).await
}

#[tokio::test]
async fn a_client_stuck_in_the_middle_of_its_headers_is_cut_off() {
    let app = spawn_app_with(Engine::Sqlite, |c| {
        c.connections.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let started = Instant::now();
    // Half a request line and nothing more.
    let mut half_line = connect(&app).await;
    half_line.write_all(b"GET /healthz HT").await.unwrap();
    // A whole request line, some headers, never the blank line.
    let mut half_head = connect(&app).await;
    half_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: usher\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    // Connected, silent.
    let mut silent = connect(&app).await;
    for stream in [&mut half_line, &mut half_head, &mut silent] {
        read_until_closed(stream, Duration::from_secs(5)).await;
    }
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(800),
        "cut off too early: {after:?}"
    );
    // Meanwhile and afterwards everyone else is served.
    assert!(status_line(&raw_get(&app, "/healthz").await).contains("200"));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(Engine::Sqlite, |c| {
        c.connections.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: usher\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(status_line(&answer).contains("200"), "{answer}");
}

#[tokio::test]
async fn headers_over_the_limit_are_refused_with_431() {
    let app = spawn_app_with(Engine::Sqlite, |c| {
        c.connections.max_header_bytes = 8 * 1024
    })
    .await;
    let big = app
        .client
        .get(app.url("/healthz"))
        .header("x-padding", "a".repeat(16 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Too many fields, each small.
    let mut request = String::from("GET /healthz HTTP/1.1\r\nHost: usher\r\n");
    for i in 0..200 {
        request.push_str(&format!("x-field-{i}: {i}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = connect(&app).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(status_line(&answer).contains("431"), "{answer}");
    // A normal request still passes.
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn connections_beyond_the_cap_get_503_with_retry_after_and_the_cap_frees_up() {
    let app = spawn_app_with(Engine::Sqlite, |c| c.connections.max_connections = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&app).await);
    }
    // The server counts each as it accepts it: once it has all four, the next is
    // refused (until then a new connection may still find a slot).
    let answer = refused_soon(&app, "/v1/events", "the fifth connection was served").await;
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1"), "{answer}");
    assert!(lower.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("/problems/busy"), "{answer}");
    // Health and readiness answer even now: a full instance is seen to be alive.
    for path in ["/healthz", "/readyz"] {
        let answer = raw_get(&app, path).await;
        assert!(status_line(&answer).contains("200"), "{path}: {answer}");
    }

    drop(held.pop());
    served_again(&app, "/v1/events", "the freed slot was never reused").await;
}

/// A connection from another loopback address (127.0.0.2 is this machine too).
async fn connect_from(app: &TestApp, source: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket
        .connect(socket_address(app).parse().unwrap())
        .await
        .unwrap()
}

async fn raw_get_on(mut stream: TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: usher\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .0
}

/// Reads one HTTP/1.1 response (head and a `Content-Length` body) off a keep-alive
/// connection; `None` if the server closed it instead.
async fn read_response(stream: &mut TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    while !received.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await {
            Ok(Ok(1)) => received.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&received).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(head)
}

#[tokio::test]
async fn a_handler_that_ignores_the_body_leaves_the_keep_alive_connection_usable() {
    let app = spawn_app_with(Engine::Sqlite, |_| {}).await;
    let admin = app.signup("admin@example.com").await;
    let mut stream = connect(&app).await;
    let body = r#"{"reason": "retry it, whatever it is"}"#;
    // Forty requests on one connection, anonymous (401 before any body is needed) and
    // admin (404: no such job) in turn, each body arriving a little after its head.
    for i in 0..40 {
        let job = uuid::Uuid::new_v4();
        let auth = if i % 2 == 0 {
            String::new()
        } else {
            format!("Authorization: Bearer {}\r\n", admin.access)
        };
        let head = format!(
            "POST /v1/admin/jobs/{job}/retry HTTP/1.1\r\nHost: usher\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        stream.write_all(body.as_bytes()).await.unwrap();
        let answer = read_response(&mut stream)
            .await
            .unwrap_or_else(|| panic!("request {i}: the connection was dropped"));
        let expected = if i % 2 == 0 { "401" } else { "404" };
        assert!(
            status_line(&answer).contains(expected),
            "request {i}: {answer}"
        );
        assert!(
            !answer.to_ascii_lowercase().contains("connection: close"),
            "request {i}: {answer}"
        );
    }
}

#[tokio::test]
async fn a_body_announced_over_the_limit_is_refused_before_it_is_sent() {
    let app = spawn_app_with(Engine::Sqlite, |c| c.max_body_bytes = 1024).await;
    let mut stream = connect(&app).await;
    // Ten megabytes announced, not a byte sent: the answer comes at once, and says the
    // connection ends (the body's bytes would otherwise be read as the next request).
    let head = "POST /v1/events HTTP/1.1\r\nHost: usher\r\nContent-Type: application/json\r\n\
                Content-Length: 10485760\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    // Waiting for the body would run into the request timeout (30 s): well past this.
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(status_line(&answer).contains("413"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(answer.contains("application/problem+json"), "{answer}");
}

/// A client that writes its whole oversized upload before reading (no `Expect:
/// 100-continue`, as Python's urllib does) gets to read the 413, on every try: the
/// server answers at once, then reads and discards what is still arriving before it
/// closes. Closing at once would reset the connection mid-upload, and such a client
/// gives up on the failed write ("broken pipe") without ever reading the answer.
#[tokio::test]
async fn an_upload_sent_whole_over_the_limit_still_reads_its_413() {
    let app = spawn_app_with(Engine::Sqlite, |c| c.max_body_bytes = 64 * 1024).await;
    let body = vec![b' '; 5 * 1024 * 1024];
    for path in ["/v1/auth/signup", "/v1/events"] {
        for attempt in 1..=5 {
            let mut stream = connect(&app).await;
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: usher\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                body.len()
            );
            let sent = async {
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(&body).await
            };
            if let Err(error) = sent.await {
                panic!(
                    "{path}, try {attempt}: the upload broke off ({error}): the server closed without reading it"
                );
            }
            let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(15)).await;
            assert!(
                status_line(&answer).contains("413"),
                "{path}, try {attempt}: {answer:?}"
            );
        }
    }
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let app = spawn_app_with(Engine::Sqlite, |c| {
        c.connections.max_connections = 40;
        c.connections.max_per_address = 10;
    })
    .await;
    // One client opens idle sockets until its address is at its share.
    let mut hog = Vec::new();
    for _ in 0..10 {
        hog.push(connect(&app).await);
    }
    // The server counts each as it accepts it: wait until the hog's next is refused.
    let refused = refused_soon(&app, "/v1/events", "the eleventh connection was served").await;
    assert!(refused.contains("from your address"), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    // Health still answers that address.
    assert!(status_line(&raw_get(&app, "/healthz").await).contains("200"));
    // Everyone else is served: another address gets its answers, many at once.
    let mut others = Vec::new();
    for _ in 0..10 {
        others.push(connect_from(&app, "127.0.0.2").await);
    }
    for stream in others {
        let answer = raw_get_on(stream, "/v1/events").await;
        assert!(status_line(&answer).contains("200"), "{answer}");
    }
    // When the hog lets go, its address is served again.
    drop(hog);
    served_again(
        &app,
        "/v1/events",
        "the hog's address was never served again",
    )
    .await;
}

#[tokio::test]
async fn a_trusted_proxy_carries_many_clients_past_the_per_address_share() {
    let app = spawn_app_with(Engine::Sqlite, |c| {
        c.connections.max_connections = 40;
        c.connections.max_per_address = 2;
        c.trusted_proxies = usher_server::rate_limit::TrustedProxies::parse("127.0.0.1").unwrap();
    })
    .await;
    let held: Vec<_> = futures_util::future::join_all((0..6).map(|_| connect(&app))).await;
    for stream in held {
        let answer = raw_get_on(stream, "/v1/events").await;
        assert!(status_line(&answer).contains("200"), "{answer}");
    }
}

#[tokio::test]
async fn an_open_websocket_keeps_its_connection_slot_until_it_closes() {
    let app = spawn_app_with(Engine::Sqlite, |c| {
        c.connections.max_connections = 2;
        c.connections.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let (_, organizer, _) = app.cast().await;
    let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
    let url = format!(
        "ws://{}/v1/performances/{}/live",
        socket_address(&app),
        performance["id"].as_str().unwrap()
    );
    // Two watchers fill the cap: the upgraded sockets are connections still. (The
    // set-up's idle keep-alive connection holds a slot until the header timeout closes
    // it: the second watcher is turned away until then.)
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut second = loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((socket, _)) => break socket,
            Err(tokio_tungstenite::tungstenite::Error::Http(response))
                if response.status() == StatusCode::SERVICE_UNAVAILABLE =>
            {
                assert!(
                    Instant::now() < deadline,
                    "the idle connection was never closed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("{other}"),
        }
    };
    for socket in [&mut first, &mut second] {
        assert!(
            socket
                .next()
                .await
                .unwrap()
                .unwrap()
                .to_text()
                .unwrap()
                .contains("snapshot")
        );
    }
    let answer = raw_get(&app, "/v1/events").await;
    assert!(status_line(&answer).contains("503"), "{answer}");
    // One watcher leaves; its slot serves the next connection.
    first.close(None).await.unwrap();
    drop(first);
    served_again(
        &app,
        "/v1/events",
        "the closed socket's slot was never freed",
    )
    .await;
}

#[tokio::test]
async fn requests_beyond_the_in_flight_cap_are_shed_and_health_still_answers() {
    let app = spawn_app_with(Engine::Sqlite, |c| {
        c.connections.max_in_flight = 2;
        c.request_timeout = Duration::from_secs(20);
    })
    .await;
    // Two requests whose bodies never come: each holds a place in flight.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"POST /v1/auth/login HTTP/1.1\r\nHost: usher\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Once both have their places, the next request is shed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let shed = loop {
        let response = app.get("/v1/events", None).await;
        if response.status() != StatusCode::OK {
            break response;
        }
        assert!(Instant::now() < deadline, "a third request was never shed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(shed.headers()["retry-after"], "1");
    let body = assert_problem(shed, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["type"], "/problems/busy");
    assert!(
        body["detail"].as_str().unwrap().contains("requests"),
        "{body}"
    );
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);

    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.get("/v1/events", None).await.status() != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "places in flight were never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_body_that_never_arrives_times_out_with_503() {
    let app = spawn_app_with(Engine::Sqlite, |c| {
        c.request_timeout = Duration::from_secs(1)
    })
    .await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"POST /v1/auth/login HTTP/1.1\r\nHost: usher\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\"")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("answered within 5 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&buffer[..n]);
    assert!(status_line(&answer).contains("503"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn deeply_nested_or_huge_json_is_a_400_and_changes_nothing() {
    let app = spawn_app_with(Engine::Sqlite, |_| {}).await;
    let (_, organizer, _) = app.cast().await;
    let mut attributes = json!("leaf");
    for _ in 0..100 {
        attributes = json!({ "a": attributes });
    }
    let deep = app
        .post(
            "/v1/events",
            Some(&organizer.access),
            json!({"title": "Deep", "attributes": attributes}),
        )
        .await;
    let body = assert_problem(deep, StatusCode::BAD_REQUEST).await;
    assert!(
        body["detail"].as_str().unwrap().contains("nested"),
        "{body}"
    );

    let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
    let many: Vec<String> = (0..20_000)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let long = app
        .post(
            "/v1/bookings",
            Some(&organizer.access),
            json!({"performance_id": performance["id"], "unit_ids": many}),
        )
        .await;
    let body = assert_problem(long, StatusCode::BAD_REQUEST).await;
    assert!(
        body["detail"].as_str().unwrap().contains("elements"),
        "{body}"
    );

    let mine: Value = app
        .get("/v1/events?mine=true", Some(&organizer.access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        mine["items"].as_array().unwrap().len(),
        1,
        "only the event on sale: {mine}"
    );
    let seats: Value = app
        .get(
            &format!("/v1/performances/{}", performance["id"].as_str().unwrap()),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seats["held"], 0);
}

#[tokio::test]
async fn an_oversized_websocket_message_closes_that_socket_only() {
    let app = spawn_app_with(Engine::Sqlite, |_| {}).await;
    let (_, organizer, _) = app.cast().await;
    let performance = on_sale(&app, &organizer, rows(&[4]), 4).await;
    let url = format!(
        "ws://{}/v1/performances/{}/live",
        socket_address(&app),
        performance["id"].as_str().unwrap()
    );
    // One 1 MiB message; one message of two 40 KiB fragments; and a frame header that
    // announces 1 MiB and sends nothing after it.
    let one_big = Message::Text("x".repeat(1024 * 1024).into());
    let mut fragments = raw_frame(0x01, &[b'y'; 40 * 1024]);
    fragments.extend(raw_frame(0x80, &[b'y'; 40 * 1024]));
    let announced = vec![0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0];
    for (case, bytes) in [
        ("one message", None),
        ("fragments", Some(fragments)),
        ("announced", Some(announced)),
    ] {
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let snapshot = socket.next().await.unwrap().unwrap();
        assert!(snapshot.to_text().unwrap().contains("snapshot"));
        match bytes {
            None => {
                let _ = socket.send(one_big.clone()).await;
            }
            Some(bytes) => {
                let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = socket.get_mut() else {
                    panic!("plain TCP on loopback")
                };
                tcp.write_all(&bytes).await.unwrap();
            }
        }
        let close = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match socket.next().await {
                    None | Some(Err(_)) => return None,
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await
        .expect("the socket is closed")
        .unwrap_or_else(|| panic!("{case}: the connection dropped without a close frame"));
        assert_eq!(u16::from(close.code), 1009, "{case}: message too big");
        assert!(close.reason.contains("64 KiB"), "{case}: {}", close.reason);
    }
    // Another watcher is unaffected.
    let (mut other, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert!(
        other
            .next()
            .await
            .unwrap()
            .unwrap()
            .to_text()
            .unwrap()
            .contains("snapshot")
    );
}

/// A client's WebSocket frame as raw bytes: `first` is FIN and opcode, the payload
/// masked with a zero key (so it reads as itself).
fn raw_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first, 0x80 | 126];
    frame.extend((payload.len() as u16).to_be_bytes());
    frame.extend([0, 0, 0, 0]);
    frame.extend(payload);
    frame
}
