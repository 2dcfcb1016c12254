//! `GET /metrics`: Prometheus text, through the `metrics` facade and its Prometheus exporter.
//! Counters are counted where things happen (HTTP requests here, ingest outcomes, pulled
//! pages); gauges of what the store holds (held back, released, pull lag, connections) are
//! read from the database when scraped, at most every [`REFRESH`]. Every label comes from
//! config or from a fixed list (route templates, never a path as sent), so a stranger cannot
//! grow the set of series. docs/metrics.md says what each one means.

use crate::app::AppState;
use crate::ingest::Outcome;
use crate::time::to_micros;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;

/// Gauges read from the database are read again at most this often (µs): a scrape cannot be
/// made to scan the store in a loop.
pub const REFRESH: i64 = 10_000_000;

/// Upper bounds of the request-latency buckets, in seconds.
const LATENCY: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use (one per process: every app in it counts
/// into the same one).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets_for_metric(
            Matcher::Full("sluis_http_request_duration_seconds".into()),
            &LATENCY,
        ) {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new(),
        };
        let handle = match builder.install_recorder() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "another metrics recorder is installed; /metrics stays empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        };
        describe();
        handle
    })
}

fn describe() {
    describe_counter!(
        "sluis_http_requests_total",
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        "sluis_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to answer an HTTP request (to its first byte), by route template and method"
    );
    describe_counter!(
        "sluis_ingest_entries_total",
        "Entries taken in, by source, way (push, pull, import) and outcome (created, updated, unchanged, deleted, refused)"
    );
    describe_counter!(
        "sluis_pull_pages_total",
        "Pages pulled and stored, by source and resource type (Type/_history for deletions)"
    );
    describe_counter!(
        "sluis_pull_resources_total",
        "Entries on pulled pages, by source and resource type"
    );
    describe_counter!(
        "sluis_pull_retries_total",
        "Requests to a source tried again (5xx, 429, timeouts, broken pages), by source and resource type"
    );
    describe_counter!(
        "sluis_pull_errors_total",
        "Polls of a resource type that failed after their retries, by source and resource type"
    );
    describe_gauge!(
        "sluis_pull_lag_seconds",
        metrics::Unit::Seconds,
        "Seconds since a page of this source and resource type was last taken in"
    );
    describe_gauge!(
        "sluis_pull_lease_held",
        "1 where this process holds the source's pull lease"
    );
    describe_gauge!(
        "sluis_versions_held_back",
        "Versions waiting for their release moment, held or waiting for a manual release, by source"
    );
    describe_gauge!(
        "sluis_versions_released",
        "Versions whose release moment has passed (shown or shown before), by source"
    );
    describe_counter!(
        "sluis_outbox_deliveries_total",
        "Tries to deliver an outbox item to a record system, by source, type and outcome (delivered, failed)"
    );
    describe_gauge!(
        "sluis_outbox_pending",
        "Outbox items (approved messages, correction requests) not yet taken by the record system, by source"
    );
    describe_gauge!(
        "sluis_outbox_oldest_pending_seconds",
        metrics::Unit::Seconds,
        "Age of the oldest outbox item not yet delivered, by source (0 when none waits)"
    );
    describe_gauge!(
        "sluis_requests_overdue",
        "Correction requests (R14) past their due moment without a decision"
    );
    describe_gauge!(
        "sluis_processes",
        "Processes serving from this database that are alive (heartbeat); each allows its share of the request limits"
    );
    describe_gauge!(
        "sluis_db_connections",
        "Database connections by state (in_use, idle) and the most there may be (max)"
    );
}

/// An outbox item the record system took.
pub fn outbox_delivered(source: &str, resource_type: &str) {
    counter!("sluis_outbox_deliveries_total", "source" => source.to_string(), "resource_type" => resource_type.to_string(), "outcome" => "delivered")
        .increment(1);
}

/// A try to deliver an outbox item that failed (it is tried again).
pub fn outbox_failed(source: &str, resource_type: &str) {
    counter!("sluis_outbox_deliveries_total", "source" => source.to_string(), "resource_type" => resource_type.to_string(), "outcome" => "failed")
        .increment(1);
}

/// Counts the outcomes of one write.
pub fn ingested(source: &str, via: &'static str, outcomes: &[Outcome]) {
    let mut counts: [(&'static str, u64); 5] = [
        ("created", 0),
        ("updated", 0),
        ("unchanged", 0),
        ("deleted", 0),
        ("refused", 0),
    ];
    for o in outcomes {
        let kind = o.kind();
        if let Some(c) = counts.iter_mut().find(|(k, _)| *k == kind) {
            c.1 += 1;
        }
    }
    for (outcome, n) in counts.into_iter().filter(|(_, n)| *n > 0) {
        counter!("sluis_ingest_entries_total", "source" => source.to_string(), "via" => via, "outcome" => outcome)
            .increment(n);
    }
}

/// Counts the entries of a write refused whole (a transaction, or a single resource).
pub fn refused(source: &str, via: &'static str, entries: usize) {
    if entries > 0 {
        counter!("sluis_ingest_entries_total", "source" => source.to_string(), "via" => via, "outcome" => "refused")
            .increment(entries as u64);
    }
}

/// Counts a page pulled and stored.
pub fn page_pulled(source: &str, resource_type: &str, entries: usize, retries: u32) {
    let labels = [
        ("source", source.to_string()),
        ("resource_type", resource_type.to_string()),
    ];
    counter!("sluis_pull_pages_total", &labels).increment(1);
    counter!("sluis_pull_resources_total", &labels).increment(entries as u64);
    if retries > 0 {
        counter!("sluis_pull_retries_total", &labels).increment(u64::from(retries));
    }
}

/// Counts a poll that failed after `retries`.
pub fn pull_failed(source: &str, resource_type: &str, retries: u32) {
    let labels = [
        ("source", source.to_string()),
        ("resource_type", resource_type.to_string()),
    ];
    counter!("sluis_pull_errors_total", &labels).increment(1);
    if retries > 0 {
        counter!("sluis_pull_retries_total", &labels).increment(u64::from(retries));
    }
}

/// Counts every HTTP request by its route's template (`/fhir/{type}/{id}`, never the path as
/// sent), method and status, and times it.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    histogram!("sluis_http_request_duration_seconds", "route" => route.clone(), "method" => method)
        .record(started.elapsed().as_secs_f64());
    counter!("sluis_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Err(e) = refresh(&state).await {
        tracing::warn!(error = %e, "metrics: cannot read the store's gauges");
    }
    let handle = handle();
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// Sets the gauges read from the store, unless they were read less than [`REFRESH`] ago.
async fn refresh(state: &AppState) -> Result<(), crate::store::Error> {
    let pool = state.db.pool_use();
    gauge!("sluis_db_connections", "state" => "in_use").set(pool.in_use as f64);
    gauge!("sluis_db_connections", "state" => "idle").set(pool.idle as f64);
    gauge!("sluis_db_connections", "state" => "max").set(pool.max as f64);
    gauge!("sluis_processes").set(f64::from(state.limits.processes()));
    for p in state.pullers.all() {
        gauge!("sluis_pull_lease_held", "source" => p.id.clone()).set(if p.holding() {
            1.0
        } else {
            0.0
        });
    }
    let mut last = state.scraped.lock().await;
    let now_mono = state.clock.monotonic_micros();
    if last.is_some_and(|at| now_mono - at < REFRESH) {
        return Ok(());
    }
    let wall = to_micros(state.clock.wall());
    for s in crate::store::pull::states(&state.db, None).await? {
        if let Some(at) = s.last_success_at {
            gauge!("sluis_pull_lag_seconds", "source" => s.source, "resource_type" => s.resource_type)
                .set(((wall - at).max(0)) as f64 / 1e6);
        }
    }
    let now = to_micros(state.clock.now());
    for r in crate::store::pull::released(&state.db, now).await? {
        gauge!("sluis_versions_held_back", "source" => r.source.clone()).set(r.held_back as f64);
        gauge!("sluis_versions_released", "source" => r.source).set(r.released as f64);
    }
    for o in crate::store::outbox::states(&state.db).await? {
        gauge!("sluis_outbox_pending", "source" => o.source.clone()).set(o.pending as f64);
        gauge!("sluis_outbox_oldest_pending_seconds", "source" => o.source).set(
            o.oldest_pending_at
                .map_or(0.0, |at| ((wall - at).max(0)) as f64 / 1e6),
        );
    }
    gauge!("sluis_requests_overdue")
        .set(crate::store::requests::overdue(&state.db, now).await? as f64);
    *last = Some(now_mono);
    Ok(())
}
