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
    let count = crate::body::page_count(&q, DEFAULT_COUNT, MAX_COUNT)?;
    let after = crate::body::positive_number(&q, "after")?;
    let mut rows = store::waiting(&state.db, after, count + 1).await?;
    let next = crate::body::cut_page(&mut rows, count).map(|m| m.seq.to_string());
    crate::audit::shows(rows.iter().map(|m| m.patient_id.as_str()));
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
                "communication": summary(&m.body),
            })
        })
        .collect();
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"waiting": waiting, "next": next}),
    ))
}

/// A message for the list: attachments by type, title and size, without their data (`GET
/// /admin/moderation/{id}` has it whole).
fn summary(body: &str) -> Value {
    let mut message: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    for p in message["payload"].as_array_mut().into_iter().flatten() {
        if let Some(a) = p.get_mut("contentAttachment")
            && let Some(data) = a.as_object_mut().and_then(|o| o.remove("data"))
        {
            a["size"] = json!(data.as_str().map_or(0, |d| d.len() / 4 * 3));
        }
    }
    message
}

/// `GET /admin/moderation/{id}`: one message, whole, as it stands.
pub async fn one(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let m = store::get(&state.db, &id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    crate::audit::shows([m.patient_id.as_str()]);
    let may_post = m.state == "waiting" && sender_may_post(&state, &m).await?;
    Ok(fhir_json(
        StatusCode::OK,
        &json!({
            "id": m.id,
            "state": m.state,
            "sender_may_post": may_post,
            "reason": m.reason,
            "decided_by": m.decided_by,
            "patient": format!("Patient/{}", m.patient_id),
            "client": m.client_id,
            "user": m.external_id,
            "communication": serde_json::from_str::<Value>(&m.body).unwrap_or(Value::Null),
        }),
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
    // The right to post is the sender's now, not only when they wrote.
    if !sender_may_post(&state, &message).await? {
        return Err(ApiError::conflict(
            "the sender may no longer post about this client (their link, right to post or \
             access ended since): reject the message instead",
        ));
    }
    let now = crate::time::to_micros(state.clock.now());
    // Approving first: a crash between the decision and the message being shown leaves it
    // `approving`, which the next start completes (`complete_approvals`).
    if !store::decide(&state.db, &id, "approving", None, &by, now).await? {
        return Err(already_decided());
    }
    if let Err(e) = show(&state, &message).await {
        store::undecide(&state.db, &id).await?;
        return Err(e);
    }
    store::approved(&state.db, &message, &delivered(&message), wall(&state)).await?;
    state.outbox.nudge();
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

/// Shows an approved message: the source's own Communication, explained (released) at once.
/// Writing the same message again changes nothing (ingest stores a version once).
async fn show(state: &AppState, message: &store::Message) -> ApiResult<()> {
    let mut shown: Value = serde_json::from_str(&message.body).unwrap_or(Value::Null);
    shown["status"] = json!("completed");
    let (system, code) = &state.config.embargo.release_tag;
    shown["meta"] = json!({"tag": [{"system": system, "code": code}]});
    let entry = Entry {
        index: 0,
        full_url: None,
        method: Method::Update,
        target: Some(("Communication".into(), message.id.clone())),
        if_none_exist: None,
        resource: Some(shown),
    };
    let mut outcomes = crate::ingest::ingest(
        state,
        &message.source,
        Mode::Single,
        vec![Sent::Read(Ok(entry))],
        None,
        None,
    )
    .await?;
    match outcomes.pop().and_then(|o| o.error) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The message as the record system gets it: the Communication as shown, without our
/// release tag and id (the record system gives its own; `identifier` is the key it can
/// deduplicate on).
fn delivered(message: &store::Message) -> String {
    let mut body: Value = serde_json::from_str(&message.body).unwrap_or(Value::Null);
    if let Some(o) = body.as_object_mut() {
        o.remove("id");
        o.remove("meta");
        o.insert("status".into(), json!("completed"));
    }
    body.to_string()
}

/// The wall clock, as the outbox keeps its times.
fn wall(state: &AppState) -> crate::time::Micros {
    crate::time::to_micros(state.clock.wall())
}

/// At start: completes approvals a stop cut short (decided, not yet shown).
pub async fn complete_approvals(state: &AppState) -> anyhow::Result<usize> {
    let cut_short = store::approving(&state.db).await?;
    for message in &cut_short {
        match show(state, message).await {
            Ok(()) => {
                store::approved(&state.db, message, &delivered(message), wall(state)).await?;
            }
            Err(e) => {
                tracing::warn!(message = %message.id, error = %e.message, "an approved message cannot be shown; it waits for moderation again");
                store::undecide(&state.db, &message.id).await?;
            }
        }
    }
    Ok(cut_short.len())
}

/// Whether the sender may post about the message's client now: linked, not refused, and the
/// holder or a member with `can_post`.
async fn sender_may_post(state: &AppState, m: &store::Message) -> ApiResult<bool> {
    let set = state
        .facts
        .get(&state.db, &m.client_id, &m.external_id)
        .await?;
    let (facts, links, clients) = &*set;
    let decision = crate::access::decision::decide(
        facts.as_ref(),
        links,
        clients,
        &state.policy(),
        state.clock.now(),
    );
    Ok(decision.ok().is_some_and(|d| {
        d.user_id == m.user_id
            && d.access(&m.patient_id)
                .is_some_and(|a| a.can_post || a.role == crate::access::Role::Holder)
    }))
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
