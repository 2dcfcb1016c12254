//! `/admin/moderation` (R15): the messages waiting for a decision, oldest first; approving one
//! shows it (a Communication of the client's source, released at once in section
//! `berichten`); rejecting one needs a reason, which its sender reads.

use crate::app::AppState;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, fhir_json};
use crate::ingest::entries::{Entry, Method, Mode, Sent};
use crate::store::messages as store;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

const DEFAULT_COUNT: i64 = 50;
const MAX_COUNT: i64 = 500;

/// `GET /admin/moderation[?_count=n][&after=cursor]`: waiting messages, oldest first.
pub async fn waiting(
    State(state): State<AppState>,
    _admin: Admin,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = crate::body::query_map(raw.as_deref(), &["_count", "after"])?;
    let count = match q.get("_count") {
        None => DEFAULT_COUNT,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::invalid(format!("_count: `{v}` is not a number above 0")))?
            .min(MAX_COUNT),
    };
    let after =
        match q.get("after") {
            None => None,
            Some(v) => Some(v.parse::<i64>().map_err(|_| {
                ApiError::invalid("after: take it from the `next` of the last answer")
            })?),
        };
    let mut rows = store::waiting(&state.db, after, count + 1).await?;
    let next = (rows.len() as i64 > count).then(|| {
        rows.truncate(usize::try_from(count).unwrap_or(0));
        rows.last().map(|m| m.seq.to_string()).unwrap_or_default()
    });
    let waiting: Vec<Value> = rows
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "patient": format!("Patient/{}", m.patient_id),
                "client": m.client_id,
                "user": m.external_id,
                "source": m.source,
                "created_at": crate::time::instant(crate::time::from_micros(m.created_at)),
                "communication": serde_json::from_str::<Value>(&m.body).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"waiting": waiting, "next": next}),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

/// `POST /admin/moderation/{id}/approve` (optional `{"by"}`).
pub async fn approve(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    body: Option<Json<Decision>>,
) -> ApiResult<Response> {
    let decision = body.map(|Json(d)| d).unwrap_or_default();
    let by = decision.by.unwrap_or_else(|| admin.name.clone());
    let message = waiting_message(&state, &id).await?;
    let now = crate::time::to_micros(state.clock.now());
    if !store::decide(&state.db, &id, "approved", None, &by, now).await? {
        return Err(already_decided());
    }
    // Shown as the source's own Communication, explained (released) at once.
    let mut shown: Value = serde_json::from_str(&message.body).unwrap_or(Value::Null);
    shown["status"] = json!("completed");
    let (system, code) = &state.config.embargo.release_tag;
    shown["meta"] = json!({"tag": [{"system": system, "code": code}]});
    let entry = Entry {
        index: 0,
        full_url: None,
        method: Method::Update,
        target: Some(("Communication".into(), id.clone())),
        if_none_exist: None,
        resource: Some(shown),
    };
    let stored = crate::ingest::ingest(
        &state,
        &message.source,
        Mode::Single,
        vec![Sent::Read(Ok(entry))],
        None,
        None,
    )
    .await;
    if let Err(e) = stored.and_then(|mut o| match o.pop().and_then(|o| o.error) {
        Some(e) => Err(e),
        None => Ok(()),
    }) {
        store::undecide(&state.db, &id).await?;
        return Err(e);
    }
    crate::audit::note(|n| {
        n.patients = vec![message.patient_id.clone()];
        n.detail = Some(format!("message {id} approved by {by}"));
    });
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"id": id, "state": "approved", "by": by}),
    ))
}

/// `POST /admin/moderation/{id}/reject` `{"reason", "by"?}`.
pub async fn reject(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Json(decision): Json<Decision>,
) -> ApiResult<Response> {
    let reason = decision
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty() && r.chars().count() <= 1000)
        .ok_or_else(|| {
            ApiError::invalid("a rejection needs a reason (R15), in at most 1000 characters")
        })?
        .to_string();
    let by = decision.by.unwrap_or_else(|| admin.name.clone());
    let message = waiting_message(&state, &id).await?;
    let now = crate::time::to_micros(state.clock.now());
    if !store::decide(&state.db, &id, "rejected", Some(&reason), &by, now).await? {
        return Err(already_decided());
    }
    crate::audit::note(|n| {
        n.patients = vec![message.patient_id.clone()];
        n.detail = Some(format!("message {id} rejected by {by}"));
    });
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"id": id, "state": "rejected", "reason": reason, "by": by}),
    ))
}

async fn waiting_message(state: &AppState, id: &str) -> ApiResult<store::Message> {
    let message = store::get(&state.db, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if message.state != "waiting" {
        return Err(already_decided());
    }
    Ok(message)
}

fn already_decided() -> ApiError {
    ApiError::conflict("this message has been decided already")
}
