//! The summary table printed after a run (`--json` prints the report instead).

use super::*;

pub(super) fn print_table(report: &Report) {
    let rows = rows(report);
    let rows: Vec<_> = rows.into_iter().filter(|(k, _)| !k.is_empty()).collect();
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("{key:<width$}  {value}");
    }
}

/// The table's rows: what each figure is, and the figure (an empty name: no row).
fn rows(report: &Report) -> Vec<(&'static str, String)> {
    let name = match report.kind {
        Some(kind) => format!("{:?} --kind {:?}", report.scenario, kind).to_lowercase(),
        None => format!("{:?}", report.scenario).to_lowercase(),
    };
    vec![
        ("scenario", name),
        ("engine", report.engine.clone()),
        ("requests", report.requests.to_string()),
        ("concurrency", report.concurrency.to_string()),
        ("wall", format!("{:.2} s", report.wall_s)),
        ("requests/s", format!("{:.0}", report.requests_per_s)),
        match report.logins {
            Some(logins) => (
                "logins/s",
                format!(
                    "{:.0} ({logins} logins, {} times told to retry)",
                    report.logins_per_s.unwrap_or(0.0),
                    report.told_to_retry.unwrap_or(0)
                ),
            ),
            None => (
                "holds/s",
                format!("{:.0} ({} holds)", report.holds_per_s, report.holds),
            ),
        },
        (
            "latency p50 / p90 / p99 / max",
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1} ms",
                report.p50_ms, report.p90_ms, report.p99_ms, report.max_ms
            ),
        ),
        match &report.watch {
            Some(w) => (
                "delivery to watchers p50 / p99 / max",
                format!(
                    "{:.1} / {:.1} / {:.1} ms ({} deliveries to {} watchers, {} connected at the end)",
                    w.delivery_p50_ms,
                    w.delivery_p99_ms,
                    w.delivery_max_ms,
                    w.deliveries,
                    w.watchers,
                    w.connected_at_end
                ),
            ),
            None => ("", String::new()),
        },
        (
            "responses",
            report
                .responses
                .iter()
                .map(|(s, c)| format!("{s}: {c}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("transport errors", report.errors.to_string()),
        ("oversold", report.oversold.to_string()),
        (
            "invariants",
            match report.invariants_ok {
                Some(true) => "ok".into(),
                Some(false) => format!("BROKEN: {}", report.invariant_problems.join("; ")),
                None => "not checked".into(),
            },
        ),
        (
            "server RSS (run / peak)",
            match (report.server_rss_mb, report.server_peak_rss_mb) {
                (Some(run), Some(peak)) => format!("{run:.0} / {peak:.0} MiB"),
                _ => "unknown (external server)".into(),
            },
        ),
    ]
}
