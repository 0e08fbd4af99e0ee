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
    let tokens = Arc::new(bench.accounts(&format!("fan-{run}-"), users).await?);
    // Each buyer keeps trying for one seat until it has one or none is left; the
    // workers take turns on the buyers still trying.
    let winners = Arc::new(std::sync::Mutex::new(HashSet::<usize>::new()));
    let sold_out = Arc::new(AtomicBool::new(false));
    let (client, base) = (bench.client.clone(), bench.base.clone());
    let perf = performance_id.clone();
    const ATTEMPTS_PER_BUYER: u64 = 50;
    let budget = users as u64 * ATTEMPTS_PER_BUYER;
    let measured =
        drive(
            budget,
            args.concurrency.min(users),
            deadline,
            args.json,
            server,
            sold_out.clone(),
            {
                let (winners, sold_out) = (winners.clone(), sold_out.clone());
                move |i| {
                    let buyer = (i % users as u64) as usize;
                    let (client, base, perf, tokens) =
                        (client.clone(), base.clone(), perf.clone(), tokens.clone());
                    let (winners, sold_out) = (winners.clone(), sold_out.clone());
                    async move {
                        let done = sold_out.load(Ordering::Relaxed)
                            || winners.lock().map(|w| w.contains(&buyer)).unwrap_or(true);
                        if done {
                            // Nothing left to try for: a cheap look at the counts instead.
                            return Ok(client
                                .get(format!("{base}/v1/performances/{perf}"))
                                .send()
                                .await?
                                .status());
                        }
                        let response = client
                    .post(format!("{base}/v1/bookings"))
                    .bearer_auth(&tokens[buyer])
                    .json(&json!({"performance_id": perf, "quantity": 1, "best_available": true}))
                    .send()
                    .await?;
                        let status = response.status();
                        if status == StatusCode::CREATED {
                            if let Ok(mut w) = winners.lock() {
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
                                sold_out.store(true, Ordering::Relaxed);
                            }
                        }
                        Ok(status)
                    }
                }
            },
        )
        .await?;
    let holds = measured.responses.get(&201).copied().unwrap_or(0);
    let mut report = report(Scenario::Flash, None, args, server, measured, holds);
    check(bench, &organizer, &performance_id, holds, &mut report).await?;
    let won = winners.lock().map(|w| w.len()).unwrap_or(0);
    let expected = args.seats.min(users);
    if won != expected {
        report.invariant_problems.push(format!(
            "{won} buyers won a seat; {expected} seats were on sale"
        ));
        report.invariants_ok = Some(false);
    }
    Ok(report)
}
