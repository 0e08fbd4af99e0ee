//! `watch`: a rush with live watchers, and how long each hold takes to reach them.

use super::*;

pub(super) async fn watch(
    bench: &Bench,
    args: &BenchArgs,
    server: &Server,
    deadline: Instant,
) -> anyhow::Result<Report> {
    let run = run_id();
    let (organizer, event_id) = bench.published_event(&run).await?;
    let performance = bench
        .performance(&organizer, &event_id, Kind::Ga, args.requests as usize)
        .await?;
    let performance_id = performance["id"].as_str().unwrap_or_default().to_owned();
    let ticket_type = performance["ticket_types"][0]["id"].clone();
    let tokens = Arc::new(
        bench
            .accounts(&format!("buyer-{run}-"), args.users.max(1))
            .await?,
    );

    // The watchers connect first, a few hundred at a time.
    let answered: Answered = Arc::default();
    let rush_over = Arc::new(AtomicBool::new(false));
    let live = format!(
        "{}/v1/performances/{performance_id}/live",
        bench.base.replacen("http://", "ws://", 1)
    );
    let connected = connect_watchers(&live, args.watchers).await?;
    let mut watchers = tokio::task::JoinSet::new();
    for socket in connected {
        let (answered, rush_over) = (answered.clone(), rush_over.clone());
        watchers.spawn(follow(socket, answered, rush_over));
    }

    let (client, url) = (bench.client.clone(), format!("{}/v1/bookings", bench.base));
    let answers = answered.clone();
    let measured = drive(args.requests, args.concurrency, deadline, args.json, server, Arc::default(), move |i| {
        let body = json!({"performance_id": performance_id, "ticket_type_id": ticket_type, "quantity": 1});
        let request = client.post(&url).bearer_auth(&tokens[i as usize % tokens.len()]).json(&body);
        let answers = answers.clone();
        async move {
            let response = request.send().await?;
            let status = response.status();
            let at = Instant::now();
            if status == StatusCode::CREATED {
                let booking: Value = response.json().await?;
                if let (Ok(mut answered), Some(units)) = (answers.write(), booking["units"].as_array()) {
                    for unit in units {
                        if let Some(id) = unit["id"].as_str() {
                            answered.insert(id.to_owned(), at);
                        }
                    }
                }
            }
            Ok(status)
        }
    })
    .await?;
    rush_over.store(true, Ordering::Relaxed);

    let mut delays = latencies()?;
    let mut connected_at_end = 0;
    while let Some(followed) = watchers.join_next().await {
        let (histogram, still_connected) = followed??;
        delays.add(histogram).map_err(|e| anyhow!("{e}"))?;
        connected_at_end += usize::from(still_connected);
    }
    let holds = measured.responses.get(&201).copied().unwrap_or(0);
    let mut report = report(
        Scenario::Watch,
        Some(Kind::Ga),
        args,
        server,
        measured,
        holds,
    );
    watch_report(&mut report, args.watchers, holds, &delays, connected_at_end);
    Ok(report)
}

/// `watchers` live connections, each past its snapshot, a few hundred connecting at a
/// time.
async fn connect_watchers(
    live: &str,
    watchers: usize,
) -> anyhow::Result<
    Vec<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
> {
    let mut connected = Vec::new();
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..watchers {
        if connecting.len() >= 200
            && let Some(socket) = connecting.join_next().await
        {
            connected.push(socket??);
        }
        let live = live.to_owned();
        connecting.spawn(async move {
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(16 * 1024)
                .write_buffer_size(0);
            let (mut socket, _) =
                tokio_tungstenite::connect_async_with_config(live, Some(config), true).await?;
            // The snapshot.
            socket
                .next()
                .await
                .ok_or_else(|| anyhow!("closed before the snapshot"))??;
            anyhow::Ok(socket)
        });
    }
    while let Some(socket) = connecting.join_next().await {
        connected.push(socket??);
    }
    Ok(connected)
}

/// The deliveries' figures, and whether every hold reached every watcher still there.
fn watch_report(
    report: &mut Report,
    watchers: usize,
    holds: u64,
    delays: &Histogram<u64>,
    connected_at_end: usize,
) {
    let ms = |q: f64| delays.value_at_quantile(q) as f64 / 1000.0;
    report.watch = Some(WatchReport {
        watchers,
        connected_at_end,
        deliveries: delays.len(),
        delivery_p50_ms: ms(0.50),
        delivery_p99_ms: ms(0.99),
        delivery_max_ms: delays.max() as f64 / 1000.0,
    });
    let expected = holds * watchers as u64;
    report.invariants_ok = Some(delays.len() == expected && connected_at_end == watchers);
    if delays.len() != expected {
        report.invariant_problems.push(format!(
            "{} of {expected} deliveries (holds x watchers) arrived",
            delays.len()
        ));
    }
}

/// One watcher: the delay from each hold's answer to its change arriving here. Runs
/// until the rush is over and nothing has arrived for two seconds. Returns the delays
/// and whether the socket was still open.
async fn follow(
    mut socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    answered: Answered,
    rush_over: Arc<AtomicBool>,
) -> anyhow::Result<(Histogram<u64>, bool)> {
    use tokio_tungstenite::tungstenite::Message;
    let mut delays = latencies()?;
    // Changes that arrived before their hold's answer: matched at the end, as zero.
    let mut early: Vec<String> = Vec::new();
    let open = loop {
        let message = match tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
            Err(_) if rush_over.load(Ordering::Relaxed) => break true,
            Err(_) => continue,
            Ok(None | Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => break false,
            Ok(Some(Ok(message))) => message,
        };
        let Message::Text(text) = message else {
            continue;
        };
        let at = Instant::now();
        let Ok(change) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let Some(changes) = change["changes"].as_array() else {
            continue;
        };
        let answered = answered.read().map_err(|_| anyhow!("poisoned"))?;
        for unit in changes.iter().filter(|c| c["state"] == "held") {
            let Some(id) = unit["unit_id"].as_str() else {
                continue;
            };
            match answered.get(id) {
                Some(when) => delays.saturating_record(
                    at.saturating_duration_since(*when).as_micros().max(1) as u64,
                ),
                None => early.push(id.to_owned()),
            }
        }
    };
    let answered = answered.read().map_err(|_| anyhow!("poisoned"))?;
    for id in early {
        if answered.contains_key(&id) {
            delays.saturating_record(1);
        }
    }
    Ok((delays, open))
}
