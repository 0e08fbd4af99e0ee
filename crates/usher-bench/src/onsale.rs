//! `onsale`: a waiting room at the opening of a sale (see the crate documentation).

use super::*;

/// One onsale buyer's story.
#[derive(Default, Clone)]
struct Buyer {
    ticket: String,
    admitted_after: Option<Duration>,
    held: bool,
    paid: bool,
    closed: bool,
    /// Place read right after the draw (0: admitted at once).
    place: Option<u64>,
}

pub(super) async fn onsale(
    bench: &Bench,
    args: &BenchArgs,
    server: &Server,
    deadline: Instant,
    open_store: OpenStore,
) -> anyhow::Result<Report> {
    let (Some(database_url), Some(secret)) = (&server.database_url, &server.jwt_secret) else {
        bail!(
            "onsale drives a throwaway server of its own (leave out --url): it writes the buyers' accounts into its database"
        );
    };
    let run = run_id();
    let sale = Sale::set_up(bench, args, &run).await?;
    let users = args.users.max(1);
    let tokens = Arc::new(fans(open_store, database_url, secret, &run, users).await?);
    let buyers = Arc::new(std::sync::Mutex::new(vec![Buyer::default(); users]));
    let crowd = Crowd {
        client: bench.client.clone(),
        base: bench.base.clone(),
        tokens,
        buyers,
    };
    let joined = join_all(&crowd, args, server, deadline, &sale).await?;
    let opening = sale.open(bench).await?;
    let fairness = read_places(&crowd, args).await?;
    let measured = follow_all(&crowd, args, server, deadline, opening, &sale).await?;
    let buyers = crowd
        .buyers
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .clone();
    let holds = buyers.iter().filter(|b| b.held).count() as u64;
    let mut report = report(Scenario::Onsale, None, args, server, measured, holds);
    report.onsale = Some(onsale_report(&joined, &buyers, fairness)?);
    check(
        bench,
        &sale.organizer,
        &sale.performance_id,
        holds,
        &mut report,
    )
    .await?;
    Ok(report)
}

/// The performance on sale behind a waiting room, and who organizes it.
struct Sale {
    organizer: String,
    performance_id: String,
    path: String,
}

impl Sale {
    /// A best-available performance whose sale opens in an hour, behind a waiting room.
    async fn set_up(bench: &Bench, args: &BenchArgs, run: &str) -> anyhow::Result<Self> {
        let (organizer, event_id) = bench.published_event(run).await?;
        let performance = bench
            .performance(&organizer, &event_id, Kind::Best, args.seats.max(1))
            .await?;
        let performance_id = performance["id"].as_str().unwrap_or_default().to_owned();
        let path = format!("/v1/performances/{performance_id}");
        let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        let waiting =
            json!({"on_sale_at": later, "max_per_booking": 2, "waiting_room": {"enabled": true}});
        bench
            .must(Method::PATCH, &path, Some(&organizer), Some(&waiting))
            .await?;
        Ok(Self {
            organizer,
            performance_id,
            path,
        })
    }

    /// Opens the sale a second from now and waits until the gatekeeper has made the
    /// draw (it steps four times a second); the moment of the opening.
    async fn open(&self, bench: &Bench) -> anyhow::Result<Instant> {
        let opens = chrono::Utc::now() + chrono::Duration::seconds(1);
        let body = json!({"on_sale_at": opens.to_rfc3339()});
        bench
            .must(
                Method::PATCH,
                &self.path,
                Some(&self.organizer),
                Some(&body),
            )
            .await?;
        let opening = Instant::now() + Duration::from_secs(1);
        tokio::time::sleep_until(opening.into()).await;
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        Ok(opening)
    }
}

/// The buyers and what they need to reach the server.
#[derive(Clone)]
struct Crowd {
    client: Client,
    base: String,
    tokens: Arc<Vec<String>>,
    buyers: Arc<std::sync::Mutex<Vec<Buyer>>>,
}

impl Crowd {
    fn ticket(&self, i: usize) -> String {
        self.buyers
            .lock()
            .map(|b| b[i].ticket.clone())
            .unwrap_or_default()
    }

    fn update(&self, i: usize, change: impl FnOnce(&mut Buyer)) {
        if let Ok(mut buyers) = self.buyers.lock() {
            change(&mut buyers[i]);
        }
    }

    /// Buyer `i`'s look at its place in the queue.
    async fn look(&self, i: usize, ticket: &str) -> anyhow::Result<Value> {
        let read = self
            .client
            .get(format!("{}/v1/queue/{ticket}", self.base))
            .bearer_auth(&self.tokens[i])
            .send()
            .await?;
        Ok(read.json().await.unwrap_or(Value::Null))
    }
}

/// Everyone joins before the opening; buyer i is the i-th to be sent.
async fn join_all(
    crowd: &Crowd,
    args: &BenchArgs,
    server: &Server,
    deadline: Instant,
    sale: &Sale,
) -> anyhow::Result<Measured> {
    let queue = format!("{}{}/queue", crowd.base, sale.path);
    let users = crowd.tokens.len() as u64;
    let crowd = crowd.clone();
    let join = move |i: u64| {
        let (crowd, url) = (crowd.clone(), queue.clone());
        async move {
            let i = i as usize;
            let response = crowd
                .client
                .post(url)
                .bearer_auth(&crowd.tokens[i])
                .send()
                .await?;
            let status = response.status();
            let ticket: Value = response.json().await.unwrap_or(Value::Null);
            if let Some(id) = ticket["ticket_id"].as_str() {
                crowd.update(i, |b| b.ticket = id.to_owned());
            }
            Ok(status)
        }
    };
    drive(
        users,
        args.concurrency,
        deadline,
        args.json,
        server,
        Arc::default(),
        join,
    )
    .await
}

/// Everyone's place read once, right after the draw; the rank correlation of arrival
/// and place (fairness: near zero).
async fn read_places(crowd: &Crowd, args: &BenchArgs) -> anyhow::Result<f64> {
    let readers = futures_util::stream::iter(0..crowd.tokens.len())
        .map(|i| {
            let crowd = crowd.clone();
            async move {
                let read = crowd.look(i, &crowd.ticket(i)).await.ok()?;
                let place = match read["state"] == "admitted" {
                    true => 0,
                    false => read["position"].as_u64()?,
                };
                crowd.update(i, |b| b.place = Some(place));
                Some(())
            }
        })
        .buffer_unordered(args.concurrency.max(1));
    readers.collect::<Vec<_>>().await;
    let places: Vec<f64> = crowd
        .buyers
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .iter()
        .map(|b| b.place.map_or(f64::MAX, |p| p as f64))
        .collect();
    Ok(spearman(&places))
}

/// What every follower shares.
struct Following {
    crowd: Crowd,
    performance_id: String,
    /// `--concurrency` requests in flight at most.
    gate: Arc<tokio::sync::Semaphore>,
    /// The latency of the buyers' looks at their place (most of this phase's requests).
    looks: Arc<std::sync::Mutex<Histogram<u64>>>,
    deadline: Instant,
    opening: Instant,
}

/// Every buyer follows its place at once (each coming back as its wait says), until
/// admitted (then holds two and pays) or closed.
async fn follow_all(
    crowd: &Crowd,
    args: &BenchArgs,
    server: &Server,
    deadline: Instant,
    opening: Instant,
    sale: &Sale,
) -> anyhow::Result<Measured> {
    let following = Arc::new(Following {
        crowd: crowd.clone(),
        performance_id: sale.performance_id.clone(),
        gate: Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1))),
        looks: Arc::new(std::sync::Mutex::new(latencies()?)),
        deadline,
        opening,
    });
    let started = Instant::now();
    let followers: Vec<_> = (0..crowd.tokens.len())
        .map(|i| tokio::spawn(follow_buyer(following.clone(), i)))
        .collect();
    let mut responses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors = 0;
    for follower in followers {
        match follower.await? {
            Ok(status) => *responses.entry(status.as_u16()).or_default() += 1,
            Err(_) => errors += 1,
        }
    }
    let histogram = following
        .looks
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .clone();
    Ok(Measured {
        wall: started.elapsed(),
        histogram,
        responses,
        errors,
        rss_mb: server.rss_mb().map(|(now, _)| now),
    })
}

/// One buyer's wait: looks at its place until admitted (then buys) or closed; its
/// outcome as a status (201 held, 410 closed, 408 still waiting at the deadline).
async fn follow_buyer(following: Arc<Following>, i: usize) -> anyhow::Result<StatusCode> {
    let crowd = &following.crowd;
    let ticket = crowd.ticket(i);
    loop {
        if Instant::now() > following.deadline {
            return Ok(StatusCode::REQUEST_TIMEOUT);
        }
        let permit = following.gate.clone().acquire_owned().await?;
        let sent = Instant::now();
        let read = crowd.look(i, &ticket).await?;
        if let Ok(mut looks) = following.looks.lock() {
            looks.saturating_record(sent.elapsed().as_micros() as u64);
        }
        match read["state"].as_str() {
            Some("admitted") => {
                let admission = read["admission_token"].as_str().unwrap_or_default();
                let seen = following.opening.elapsed();
                let (status, paid) = buy(crowd, i, &following.performance_id, admission).await?;
                crowd.update(i, |b| {
                    b.admitted_after = Some(seen);
                    b.held = status == StatusCode::CREATED;
                    b.paid = paid;
                });
                return Ok(status);
            }
            Some("closed") => {
                crowd.update(i, |b| b.closed = true);
                return Ok(StatusCode::GONE);
            }
            _ => {
                drop(permit);
                // Come back in half the time the queue says is left: a second at most,
                // a quarter at least.
                let eta = read["eta_seconds"].as_f64().unwrap_or(1.0);
                tokio::time::sleep(Duration::from_secs_f64((eta / 2.0).clamp(0.25, 1.0))).await;
            }
        }
    }
}

/// An admitted buyer holds two seats best-available and pays; the hold's status and
/// whether the payment went through.
async fn buy(
    crowd: &Crowd,
    i: usize,
    performance_id: &str,
    admission: &str,
) -> anyhow::Result<(StatusCode, bool)> {
    let (client, base, token) = (&crowd.client, &crowd.base, &crowd.tokens[i]);
    let held = client
        .post(format!("{base}/v1/bookings"))
        .bearer_auth(token)
        .header("Usher-Admission", admission)
        .json(&json!({"performance_id": performance_id, "quantity": 2, "best_available": true}))
        .send()
        .await?;
    let status = held.status();
    let booking: Value = held.json().await.unwrap_or(Value::Null);
    if status != StatusCode::CREATED {
        return Ok((status, false));
    }
    let booking_id = booking["id"].as_str().unwrap_or_default();
    let checkout: Value = client
        .post(format!("{base}/v1/bookings/{booking_id}/checkout"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await
        .unwrap_or(Value::Null);
    let payment_id = checkout["payment_id"].as_str().unwrap_or_default();
    let done = client
        .post(format!("{base}/v1/payments/mock/{payment_id}/complete"))
        .bearer_auth(token)
        .json(&json!({"outcome": "succeeded"}))
        .send()
        .await?;
    Ok((status, done.status().is_success()))
}

/// The waiting room's figures: joins, admissions, fairness, outcomes.
fn onsale_report(
    joined: &Measured,
    buyers: &[Buyer],
    fairness: f64,
) -> anyhow::Result<OnsaleReport> {
    let join_ms = |q: f64| joined.histogram.value_at_quantile(q) as f64 / 1000.0;
    let joiners = joined.responses.get(&201).copied().unwrap_or(0);
    let mut admissions = latencies()?;
    for after in buyers.iter().filter_map(|b| b.admitted_after) {
        admissions.saturating_record(after.as_micros() as u64);
    }
    let count = |f: &dyn Fn(&Buyer) -> bool| buyers.iter().filter(|b| f(b)).count() as u64;
    let secs = |q: f64| admissions.value_at_quantile(q) as f64 / 1_000_000.0;
    Ok(OnsaleReport {
        joiners,
        joins_per_s: joiners as f64 / joined.wall.as_secs_f64().max(1e-9),
        join_p50_ms: join_ms(0.5),
        join_p99_ms: join_ms(0.99),
        join_max_ms: joined.histogram.max() as f64 / 1000.0,
        told_later_than_1s: joined.histogram.count_between(1_000_000, u64::MAX),
        admitted: count(&|b| b.admitted_after.is_some()),
        admission_p50_s: secs(0.5),
        admission_p99_s: secs(0.99),
        admission_max_s: admissions.max() as f64 / 1_000_000.0,
        fairness_rank_correlation: fairness,
        holds_after_admission: count(&|b| b.held),
        paid: count(&|b| b.paid),
        closed: count(&|b| b.closed),
        waiting_at_end: count(&|b| b.admitted_after.is_none() && !b.closed),
    })
}

/// `users` buyers written straight into the database, each with a session of its own
/// (as a sign-in would open: requests are authorized against it), and their access
/// tokens signed with the throwaway server's key, in buyer order.
async fn fans(
    open_store: OpenStore,
    database_url: &str,
    secret: &str,
    run: &str,
    users: usize,
) -> anyhow::Result<Vec<String>> {
    let store = open_store(database_url).await?;
    let keys = usher_server::auth::TokenKeys::new(&secrecy::SecretString::from(secret.to_owned()));
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (store, next, run) = (store.clone(), next.clone(), run.to_owned());
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= users {
                    return anyhow::Ok(ids);
                }
                let user = store
                    .create_user(usher_store::NewUser {
                        email: usher_core::Email::parse(&format!("fan-{run}-{i}@usher.bench"))
                            .map_err(|e| anyhow!("{e}"))?,
                        name: usher_core::UserName::parse("Bench fan")
                            .map_err(|e| anyhow!("{e}"))?,
                        // Never logs in: its session is opened here.
                        password_hash: "!".into(),
                        role: usher_core::Role::Customer,
                        first_account_is_admin: false,
                    })
                    .await?;
                let session_id = uuid::Uuid::now_v7();
                store
                    .insert_refresh_token(usher_store::NewRefreshToken {
                        id: uuid::Uuid::now_v7(),
                        family_id: session_id,
                        user_id: user.id,
                        token_hash: usher_server::auth::RefreshToken::generate()
                            .map_err(|e| anyhow!("{e}"))?
                            .hash,
                        expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
                    })
                    .await?;
                ids.push((i, user.id, session_id));
            }
        }));
    }
    let mut tokens = vec![String::new(); users];
    for writer in writers {
        for (i, id, session_id) in writer.await?? {
            tokens[i] = keys
                .issue_access(id.uuid(), session_id, chrono::Utc::now())
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    Ok(tokens)
}

/// Spearman's rank correlation of the index (arrival) and `places` (ties share ranks).
fn spearman(places: &[f64]) -> f64 {
    let n = places.len();
    if n < 2 {
        return 0.0;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| places[*a].total_cmp(&places[*b]));
    let mut rank = vec![0.0; n];
    let mut start = 0;
    while start < n {
        let mut end = start;
        while end + 1 < n && places[order[end + 1]] == places[order[start]] {
            end += 1;
        }
        let shared = (start + end) as f64 / 2.0;
        for &i in &order[start..=end] {
            rank[i] = shared;
        }
        start = end + 1;
    }
    let mean_rank = rank.iter().sum::<f64>() / n as f64;
    let mean_index = (n as f64 - 1.0) / 2.0;
    let (mut num, mut den_a, mut den_b) = (0.0, 0.0, 0.0);
    for (i, r) in rank.iter().enumerate() {
        let (a, b) = (i as f64 - mean_index, r - mean_rank);
        num += a * b;
        den_a += a * a;
        den_b += b * b;
    }
    if den_b == 0.0 {
        return 0.0;
    }
    num / (den_a.sqrt() * den_b.sqrt())
}
