//! The invariants of docs/ARCHITECTURE.md, checked through the API after a run.

use super::*;

/// the invariants of docs/ARCHITECTURE.md through the API: counts add up, no unit in two live
/// bookings, every acknowledged hold is there, nothing oversold.
pub(super) async fn check(
    bench: &Bench,
    organizer: &str,
    performance_id: &str,
    acknowledged: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let counts = bench
        .must(
            Method::GET,
            &format!("/v1/performances/{performance_id}"),
            None,
            None,
        )
        .await?;
    let number = |key: &str| counts[key].as_u64().unwrap_or(0);
    let (capacity, available, held, sold, blocked) = (
        number("capacity"),
        number("available"),
        number("held"),
        number("sold"),
        number("blocked"),
    );
    let mut problems = Vec::new();
    if available + held + sold + blocked != capacity {
        problems.push(format!(
            "counts do not add up: {available} + {held} + {sold} + {blocked} != {capacity}"
        ));
    }
    let mut units = HashSet::new();
    let mut live = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/performances/{performance_id}/bookings?limit=100&cursor={c}"),
            None => format!("/v1/performances/{performance_id}/bookings?limit=100"),
        };
        let page = bench
            .must(Method::GET, &path, Some(organizer), None)
            .await?;
        for booking in page["items"].as_array().into_iter().flatten() {
            if !matches!(booking["status"].as_str(), Some("held" | "confirmed")) {
                continue;
            }
            live += 1;
            for unit in booking["units"].as_array().into_iter().flatten() {
                let id = unit["id"].as_str().unwrap_or_default().to_owned();
                if !units.insert(id.clone()) {
                    problems.push(format!("unit {id} is in two live bookings"));
                }
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    if units.len() as u64 != held + sold {
        problems.push(format!(
            "live bookings hold {} units but the counts say {}",
            units.len(),
            held + sold
        ));
    }
    if live != acknowledged {
        problems.push(format!(
            "{acknowledged} holds were acknowledged but {live} live bookings exist"
        ));
    }
    report.oversold = (units.len() as u64).saturating_sub(capacity);
    report.invariants_ok = Some(problems.is_empty());
    report.invariant_problems = problems;
    Ok(())
}
