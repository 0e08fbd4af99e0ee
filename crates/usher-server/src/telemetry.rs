//! Prometheus metrics, served at `/metrics`. The recorder is process-wide (the `metrics`
//! facade has one global), installed on first use; every app in the process renders it.
//!
//! What is counted:
//! - `usher_http_requests_total{method,route,status}` and
//!   `usher_http_request_duration_seconds{method,route}` (route = the matched path
//!   template, so ids do not explode the label space);
//! - `usher_holds_total{outcome}` (held, unavailable, invalid);
//! - `usher_holds_expired_total`, `usher_units_released_total` (the sweeper);
//! - `usher_payments_total{outcome}` (confirmed, refunding, duplicate, failed);
//! - `usher_jobs_total{kind,outcome}` (done, retry, dead) and `usher_emails_sent_total`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's recorder, installed on first call.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("usher_http_request_duration_seconds".into()),
                LATENCY_BUCKETS,
            )
            .map(|builder| builder.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Fails only if another recorder is installed already (then ours records
        // nothing, and /metrics shows what little it has).
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn render() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle().render(),
    )
        .into_response()
}

/// Counts every request and its latency by method, route template and status.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("usher_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("usher_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
