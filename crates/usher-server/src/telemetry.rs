//! Prometheus metrics, served at `/metrics`. The recorder is process-wide (the `metrics`
//! facade has one global), installed on first use; every app in the process renders it.
//!
//! What is counted:
//! - `usher_http_requests_total{method,route,status}` and
//!   `usher_http_request_duration_seconds{method,route}` (route = the matched path
//!   template, so ids do not explode the label space; a method outside HTTP's own is
//!   `OTHER`, for the same reason);
//! - `usher_holds_total{outcome}` (held, unavailable, invalid);
//! - `usher_holds_expired_total`, `usher_units_released_total` (the sweeper);
//! - `usher_payments_total{outcome}` (confirmed, refunding, duplicate, failed);
//! - `usher_jobs_total{kind,outcome}` (done, retry, dead) and `usher_emails_sent_total`.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, header};
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
    let method = method_label(request.method());
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    request_handles().record(method, route, response.status().as_u16(), seconds);
    response
}

/// HTTP's own methods by name; any other is `OTHER`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN
        .iter()
        .find(|(known, _)| known == method)
        .map_or("OTHER", |(_, name)| name)
}

/// The request metrics' handles, registered once per method, route and status. Building
/// the labelled keys and looking them up in the recorder for every request cost five
/// string allocations and two registry lookups per request (issue 24's profile of
/// `GET /healthz`).
#[derive(Default)]
struct RequestHandles(RwLock<HashMap<&'static str, HashMap<String, RouteHandles>>>);

struct RouteHandles {
    duration: metrics::Histogram,
    by_status: HashMap<u16, metrics::Counter>,
}

fn request_handles() -> &'static RequestHandles {
    static HANDLES: OnceLock<RequestHandles> = OnceLock::new();
    HANDLES.get_or_init(RequestHandles::default)
}

impl RequestHandles {
    fn record(&self, method: &'static str, route: &str, status: u16, seconds: f64) {
        if let Ok(known) = self.0.read()
            && let Some(handles) = known.get(method).and_then(|routes| routes.get(route))
            && let Some(counter) = handles.by_status.get(&status)
        {
            counter.increment(1);
            handles.duration.record(seconds);
            return;
        }
        let Ok(mut known) = self.0.write() else {
            return;
        };
        let handles = known
            .entry(method)
            .or_default()
            .entry(route.to_owned())
            .or_insert_with(|| RouteHandles {
                duration: metrics::histogram!(
                    "usher_http_request_duration_seconds",
                    "method" => method,
                    "route" => route.to_owned()
                ),
                by_status: HashMap::new(),
            });
        handles
            .by_status
            .entry(status)
            .or_insert_with(|| {
                metrics::counter!(
                    "usher_http_requests_total",
                    "method" => method,
                    "route" => route.to_owned(),
                    "status" => status.to_string()
                )
            })
            .increment(1);
        handles.duration.record(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_http_s_own_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let invented = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&invented), "OTHER");
    }
}
