//! `flash`: buyers race for a few seats, retrying until they win one or it is sold out.

use super::*;

pub(super) async fn flash(
    bench: &Bench,
    args: &BenchArgs,
    server: &Server,
    deadline: Instant,
) -> anyhow::Result<Report> {
    let run = run_id();
    let (organizer, event_id) = bench.published_event(&run).await?;
    let performance = bench
        .performance(&organizer, &event_id, Kind::Best, args.seats.max(1))
        .await?;
    let performance_id = performance["id"].as_str().unwrap_or_default().to_owned();
    let users = args.users.max(1);
    let race = Arc::new(Race {
        client: bench.client.clone(),
        base: bench.base.clone(),
        performance_id: performance_id.clone(),
        tokens: bench.accounts(&format!("fan-{run}-"), users).await?,
        winners: std::sync::Mutex::new(HashSet::new()),
        sold_out: Arc::new(AtomicBool::new(false)),
    });
    const ATTEMPTS_PER_BUYER: u64 = 50;
    let budget = users as u64 * ATTEMPTS_PER_BUYER;
    let measured = drive(
        budget,
        args.concurrency.min(users),
        deadline,
        args.json,
        server,
        race.sold_out.clone(),
        {
            let race = race.clone();
            move |i| {
                let race = race.clone();
                async move { race.attempt((i % users as u64) as usize).await }
            }
        },
    )
    .await?;
    let holds = measured.responses.get(&201).copied().unwrap_or(0);
    let mut report = report(Scenario::Flash, None, args, server, measured, holds);
    check(bench, &organizer, &performance_id, holds, &mut report).await?;
    let won = race.winners.lock().map(|w| w.len()).unwrap_or(0);
    let expected = args.seats.min(users);
    if won != expected {
        report.invariant_problems.push(format!(
            "{won} buyers won a seat; {expected} seats were on sale"
        ));
        report.invariants_ok = Some(false);
    }
    Ok(report)
}

/// The buyers racing: each keeps trying for one seat until it has one or none is left;
/// the workers take turns on the buyers still trying.
struct Race {
    client: reqwest::Client,
    base: String,
    performance_id: String,
    tokens: Vec<String>,
    winners: std::sync::Mutex<HashSet<usize>>,
    sold_out: Arc<AtomicBool>,
}

impl Race {
    /// One try by `buyer`: a hold of the best seat, or (when it is done) a cheap look
    /// at the counts instead.
    async fn attempt(&self, buyer: usize) -> anyhow::Result<StatusCode> {
        let (client, base, perf) = (&self.client, &self.base, &self.performance_id);
        let done = self.sold_out.load(Ordering::Relaxed)
            || self
                .winners
                .lock()
                .map(|w| w.contains(&buyer))
                .unwrap_or(true);
        if done {
            return Ok(client
                .get(format!("{base}/v1/performances/{perf}"))
                .send()
                .await?
                .status());
        }
        let status = client
            .post(format!("{base}/v1/bookings"))
            .bearer_auth(&self.tokens[buyer])
            .json(&json!({"performance_id": perf, "quantity": 1, "best_available": true}))
            .send()
            .await?
            .status();
        if status == StatusCode::CREATED {
            if let Ok(mut w) = self.winners.lock() {
                w.insert(buyer);
            }
        } else if status == StatusCode::CONFLICT {
            let counts: Value = client
                .get(format!("{base}/v1/performances/{perf}"))
                .send()
                .await?
                .json()
                .await
                .unwrap_or(Value::Null);
            if counts["available"] == 0 {
                self.sold_out.store(true, Ordering::Relaxed);
            }
        }
        Ok(status)
    }
}
