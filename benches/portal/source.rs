//! The record system the pull phase polls: the dataset's resources by type, each with a
//! `meta.lastUpdated` shared by twenty at a time, sorted by (moment, id) and served as
//! `searchset` pages with `next` links that carry the position. It answers nothing until the
//! benchmark opens it, so that the pull is timed from its first request.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::watch;

/// The types in the order the adapter pulls them: what others refer to first.
pub const TYPES: &[&str] = &[
    "Practitioner",
    "Organization",
    "Patient",
    "EpisodeOfCare",
    "Encounter",
    "Observation",
    "Condition",
    "MedicationRequest",
    "Procedure",
    "DocumentReference",
    "Appointment",
    "Communication",
];

struct Held {
    /// Per type: (moment in seconds, id, the resource's JSON), sorted.
    by_type: BTreeMap<String, Vec<(i64, String, Vec<u8>)>>,
    base: String,
    open: watch::Receiver<bool>,
    /// Entries served so far.
    served: Arc<AtomicUsize>,
}

pub struct Source {
    pub base: String,
    open: watch::Sender<bool>,
    served: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Source {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Source {
    /// Lets the adapter's requests through.
    pub fn open(&self) {
        let _ = self.open.send(true);
    }

    /// The entries served so far (a page asked for twice counts twice).
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }
}

const T0: i64 = 1_790_000_000;

fn at(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub async fn start(resource_bytes: &[Vec<u8>]) -> Source {
    let mut by_type: BTreeMap<String, Vec<(i64, String, Vec<u8>)>> = BTreeMap::new();
    for (i, bytes) in resource_bytes.iter().enumerate() {
        let mut v: Value = serde_json::from_slice(bytes).unwrap();
        let moment = T0 + (i / 20) as i64;
        v["meta"] = serde_json::json!({ "lastUpdated": at(moment) });
        let ty = v["resourceType"].as_str().unwrap().to_string();
        let id = v["id"].as_str().unwrap().to_string();
        by_type
            .entry(ty)
            .or_default()
            .push((moment, id, serde_json::to_vec(&v).unwrap()));
    }
    for list in by_type.values_mut() {
        list.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    }
    assert!(
        by_type.keys().all(|t| TYPES.contains(&t.as_str())),
        "every type of the dataset is pulled"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (open, rx) = watch::channel(false);
    let served = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(Held {
        by_type,
        base: base.clone(),
        open: rx,
        served: served.clone(),
    });
    let app = axum::Router::new()
        .route("/{ty}", axum::routing::get(page))
        .with_state(held);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Source {
        base,
        open,
        served,
        task,
    }
}

async fn page(
    State(held): State<Arc<Held>>,
    Path(ty): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let mut open = held.open.clone();
    let _ = open.wait_for(|o| *o).await;
    let empty = Vec::new();
    let list = held.by_type.get(&ty).unwrap_or(&empty);
    let count: usize = params
        .get("_count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(100);
    let start = match (params.get("_after"), params.get("_lastUpdated")) {
        (Some(after), _) => after.parse().unwrap_or(list.len()),
        (None, Some(gt)) => {
            let since = chrono::DateTime::parse_from_rfc3339(gt.trim_start_matches("gt"))
                .map(|t| t.timestamp())
                .unwrap_or(i64::MIN);
            list.partition_point(|(m, _, _)| *m <= since)
        }
        (None, None) => 0,
    }
    .min(list.len());
    let end = (start + count).min(list.len());
    held.served.fetch_add(end - start, Ordering::Relaxed);
    let mut body = Vec::with_capacity(list[start..end].iter().map(|r| r.2.len() + 40).sum());
    body.extend_from_slice(br#"{"resourceType":"Bundle","type":"searchset","link":["#);
    if end < list.len() {
        body.extend_from_slice(
            format!(
                r#"{{"relation":"next","url":"{}/{ty}?_after={end}&_count={count}"}}"#,
                held.base
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(br#"],"entry":["#);
    for (i, (_, _, bytes)) in list[start..end].iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(br#"{"resource":"#);
        body.extend_from_slice(bytes);
        body.extend_from_slice(br#","search":{"mode":"match"}}"#);
    }
    body.extend_from_slice(b"]}");
    ([(header::CONTENT_TYPE, "application/fhir+json")], body).into_response()
}
