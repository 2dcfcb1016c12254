//! `/admin/requests` (R14): correction requests without a decision, the one due first first
//! (overdue ones lead, flagged); one request whole; and the decision, made once, with a reason
//! when refused. The decided Task goes to the record system through the outbox, and the
//! holder reads it at `GET /fhir/Task/{id}`.

use super::requests::{for_record_system, task};
use crate::app::AppState;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, fhir_json};
use crate::store::requests::{self as store, Request};
use crate::time::{from_micros, instant, to_micros};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

const DEFAULT_COUNT: i64 = 50;
const MAX_COUNT: i64 = 500;

/// The list's cursor: the last row's due moment and seq.
fn cursor(text: &str) -> ApiResult<(i64, i64)> {
    text.split_once('.')
        .and_then(|(d, s)| Some((d.parse().ok()?, s.parse().ok()?)))
        .ok_or_else(|| ApiError::invalid("`after` is the `next` of an earlier page"))
}

fn listed(r: &Request, now: i64) -> Value {
    json!({
        "id": r.id,
        "patient": format!("Patient/{}", r.patient_id),
        "code": r.code,
        "focus": (!r.focus.is_empty()).then(|| r.focus.clone()),
        "description": r.description,
        "requester": r.requester,
        "client": r.client_id,
        "user": r.external_id,
        "source": r.source,
        "state": r.state,
        "created_at": instant(from_micros(r.created_at)),
        "due": instant(from_micros(r.due_at)),
        "overdue": r.state == "requested" && r.due_at < now,
    })
}

/// `GET /admin/requests[?_count=n][&after=cursor]`: open requests, overdue ones first.
pub async fn open(
    State(state): State<AppState>,
    _admin: Admin,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = crate::body::query_map(raw.as_deref(), &["_count", "after"])?;
    let count = crate::body::page_count(&q, DEFAULT_COUNT, MAX_COUNT)?;
    let after = q.get("after").map(|a| cursor(a)).transpose()?;
    let mut rows = store::open(&state.db, after, count + 1).await?;
    let next = crate::body::cut_page(&mut rows, count).map(|r| format!("{}.{}", r.due_at, r.seq));
    crate::audit::shows(rows.iter().map(|r| r.patient_id.as_str()));
    let now = to_micros(state.clock.now());
    let overdue = store::overdue(&state.db, now).await?;
    let requests: Vec<Value> = rows.iter().map(|r| listed(r, now)).collect();
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"requests": requests, "overdue": overdue, "next": next}),
    ))
}

/// `GET /admin/requests/{id}`: one request as it stands, with the Task the holder reads.
pub async fn one(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let r = store::get(&state.db, &id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    crate::audit::shows([r.patient_id.as_str()]);
    let now = to_micros(state.clock.now());
    let mut body = listed(&r, now);
    body["reason"] = json!(r.reason);
    body["decided_by"] = json!(r.decided_by);
    body["decided_at"] = json!(r.decided_at.map(|at| instant(from_micros(at))));
    body["task"] = task(&r);
    let delivery = crate::store::outbox::delivery(&state.db, &format!("request:{id}")).await?;
    body["delivery"] = json!(delivery.map(|d| d.state));
    Ok(fhir_json(StatusCode::OK, &body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    outcome: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

/// `POST /admin/requests/{id}/decide` `{"outcome": "accepted"|"rejected", "reason", "by"?}`.
pub async fn decide(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Json(decision): Json<Decision>,
) -> ApiResult<Response> {
    if !matches!(decision.outcome.as_str(), "accepted" | "rejected") {
        return Err(ApiError::invalid("`outcome` is `accepted` or `rejected`"));
    }
    let reason = decision
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().count() > 1000) {
        return Err(ApiError::invalid("a reason has at most 1000 characters"));
    }
    if decision.outcome == "rejected" && reason.is_none() {
        return Err(ApiError::invalid(
            "a rejection needs a reason (R14): the client reads it",
        ));
    }
    let mut request = store::get(&state.db, &id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if request.state != "requested" {
        return Err(already_decided());
    }
    let now = to_micros(state.clock.now());
    let late = request.due_at < now;
    let by = decision.by.unwrap_or_else(|| admin.name.clone());
    request.state = decision.outcome.clone();
    request.reason = reason.map(str::to_string);
    request.decided_by = Some(by.clone());
    request.decided_at = Some(now);
    let delivered = for_record_system(&request).to_string();
    let decided = store::decide(
        &state.db,
        &request,
        store::Delivery {
            body: &delivered,
            at: to_micros(state.clock.wall()),
        },
    )
    .await?;
    if !decided {
        return Err(already_decided());
    }
    state.outbox.nudge();
    crate::audit::note(|n| {
        n.patients = vec![request.patient_id.clone()];
        n.resources = format!("Task/{id}");
        n.detail = Some(format!(
            "request {id} {} by {by}{}",
            request.state,
            if late { " after its due moment" } else { "" }
        ));
    });
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"id": id, "state": request.state, "reason": request.reason, "by": by, "late": late}),
    ))
}

fn already_decided() -> ApiError {
    ApiError::conflict("this request has been decided already")
}
