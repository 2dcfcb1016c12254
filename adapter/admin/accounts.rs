//! Staff decisions about access: blocking a portal user (R7, also temporarily), blocking all
//! access to a client (R8), ending one person's link (R9), and seeing a client's links.

use super::ActorBody;
use crate::app::AppState;
use crate::auth::Admin;
use crate::body::{Json, OptionalJson};
use crate::error::{ApiError, ApiResult, Reason, fhir_json};
use crate::store::{accounts, clients};
use crate::time::{from_micros, instant, to_micros};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    reason: String,
    /// A temporary block ends by itself at this moment.
    until: Option<String>,
    by: Option<String>,
}

fn not_found(what: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, Reason::NotFound, what)
}

async fn record(
    state: &AppState,
    actor: &str,
    kind: &str,
    user_id: Option<i64>,
    patient: Option<&str>,
    link: Option<i64>,
    detail: Option<String>,
) -> ApiResult<()> {
    let mut tx = state.db.begin().await?;
    accounts::event(
        &mut tx,
        &accounts::Event {
            actor,
            kind,
            user_id,
            patient_id: patient,
            link_id: link,
            detail,
        },
        to_micros(state.clock.now()),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Names in the request's audit record the portal user a staff action is about.
fn note_user(client: &str, user: &str) {
    let cut = |s: &str| s.chars().take(200).collect::<String>();
    let detail = format!("portal user {} of {}", cut(user), cut(client));
    crate::audit::note(|n| n.detail = Some(detail));
}

/// `POST /admin/users/{client}/{user}/block` `{"reason", "until"?}`; `{client}` is the portal
/// vendor's client id, `{user}` its id of the person.
pub async fn block_user(
    State(state): State<AppState>,
    admin: Admin,
    Path((client, user)): Path<(String, String)>,
    Json(req): Json<BlockRequest>,
) -> ApiResult<Response> {
    note_user(&client, &user);
    if req.reason.trim().is_empty() {
        return Err(ApiError::invalid("a block needs a reason (R7)"));
    }
    let until = crate::body::instant_field("until", req.until.as_deref())?;
    let by = req.by.unwrap_or_else(|| admin.name.clone());
    let now = to_micros(state.clock.now());
    let user_id = accounts::block_user(&state.db, &client, &user, &req.reason, until, &by, now)
        .await?
        .ok_or_else(|| not_found(format!("no portal user {user} of client {client}")))?;
    record(
        &state,
        &by,
        "user-blocked",
        Some(user_id),
        None,
        None,
        Some(req.reason.clone()),
    )
    .await?;
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"client": client, "user": user, "blocked": true, "reason": req.reason,
                "until": until.map(|u| instant(from_micros(u)))}),
    ))
}

/// `POST /admin/users/{client}/{user}/unblock`.
pub async fn unblock_user(
    State(state): State<AppState>,
    admin: Admin,
    Path((client, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    note_user(&client, &user);
    let user_id = accounts::unblock_user(&state.db, &client, &user)
        .await?
        .ok_or_else(|| not_found(format!("no portal user {user} of client {client}")))?;
    record(
        &state,
        &admin.name,
        "user-unblocked",
        Some(user_id),
        None,
        None,
        None,
    )
    .await?;
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"client": client, "user": user, "blocked": false}),
    ))
}

/// `POST /admin/patients/{id}/block` `{"reason"?, "by"?}`: no portal access to this client's
/// data at all (R8), until unblocked.
pub async fn block_patient(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<ActorBody>,
) -> ApiResult<Response> {
    crate::audit::names(&id);
    if !accounts::patient_exists(&state.db, &id).await? {
        return Err(not_found(format!("no Patient/{id} has been ingested")));
    }
    let by = req.by.unwrap_or_else(|| admin.name.clone());
    clients::block(
        &state.db,
        &id,
        req.reason.as_deref(),
        &by,
        to_micros(state.clock.now()),
    )
    .await?;
    record(
        &state,
        &by,
        "patient-blocked",
        None,
        Some(&id),
        None,
        req.reason.clone(),
    )
    .await?;
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"patient": format!("Patient/{id}"), "blocked": true}),
    ))
}

/// `POST /admin/patients/{id}/unblock`.
pub async fn unblock_patient(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    crate::audit::names(&id);
    if !clients::unblock(&state.db, &id).await? {
        return Err(not_found(format!("Patient/{id} is not blocked")));
    }
    record(
        &state,
        &admin.name,
        "patient-unblocked",
        None,
        Some(&id),
        None,
        None,
    )
    .await?;
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"patient": format!("Patient/{id}"), "blocked": false}),
    ))
}

/// `DELETE /admin/links/{id}` (optional body `{"reason", "by"}`): ends one person's link, e.g.
/// when consent is withdrawn (R9); at once.
pub async fn end_link(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<ActorBody>,
) -> ApiResult<Response> {
    let id: i64 = id.parse().map_err(|_| not_found(format!("no link {id}")))?;
    let link = accounts::link(&state.db, id).await?;
    if let Some(l) = &link {
        crate::audit::names(&l.patient_id);
    }
    let link = link
        .filter(|l| l.ended_at.is_none())
        .ok_or_else(|| not_found(format!("no active link {id}")))?;
    let reason = req
        .reason
        .unwrap_or_else(|| "ended by the care organisation".into());
    let by = req.by.unwrap_or_else(|| admin.name.clone());
    let now = to_micros(state.clock.now());
    let mut tx = state.db.begin().await?;
    accounts::end_link(&mut tx, id, &reason, now).await?;
    accounts::event(
        &mut tx,
        &accounts::Event {
            actor: &by,
            kind: "link-ended",
            user_id: Some(link.user_id),
            patient_id: Some(&link.patient_id),
            link_id: Some(id),
            detail: Some(reason),
        },
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::NO_CONTENT,
    ))
}

/// `GET /admin/links?patient=P`: every link of a client, ended ones too.
pub async fn links(
    State(state): State<AppState>,
    _admin: Admin,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = crate::body::query_map(raw.as_deref(), &["patient"])?;
    let patient = q
        .get("patient")
        .ok_or_else(|| ApiError::invalid("name the client: ?patient=Patient/id"))?;
    let patient = patient.strip_prefix("Patient/").unwrap_or(patient);
    let rows = accounts::links_of_patient(&state.db, patient).await?;
    let links: Vec<Value> = rows
        .iter()
        .map(|l| {
            json!({
                "id": l.id.to_string(),
                "user_id": l.user_id,
                "role": l.role,
                "relationship": l.relationship,
                "name": l.name,
                "sections": l.sections.as_deref().map_or(json!("all"), |s| json!(crate::access::facts::parse_sections(s))),
                "can_post": l.can_post != 0,
                "created_at": instant(from_micros(l.created_at)),
                "ended_at": l.ended_at.map(|e| instant(from_micros(e))),
                "ended_reason": l.ended_reason,
            })
        })
        .collect();
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"patient": format!("Patient/{patient}"), "links": links}),
    ))
}
