//! The holder's network (R3): invitations for network members, and their grants (sections,
//! right to post), which the holder sees, changes and revokes. A change acts on the very next
//! request: nothing caches a decision. Only the current holder changes grants; when the holder's
//! link ends, the grants stay as they are until a new holder links.

use crate::access::facts::format_sections;
use crate::access::{self, Role, relationships};
use crate::app::AppState;
use crate::auth::PortalUser;
use crate::body::Json;
use crate::error::{ApiError, ApiResult, fhir_json};
use crate::store::accounts::{self, Event, NewCode};
use crate::time::{from_micros, instant, to_micros};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The calling user's holder access to `patient`: `(patient id, holder link id, user id)`.
async fn as_holder(
    state: &AppState,
    user: &PortalUser,
    patient: &str,
) -> ApiResult<(String, i64, i64)> {
    let parsed = crate::search::params::patient_id(patient, "patient");
    if let Ok(p) = &parsed {
        crate::audit::names(p);
    }
    let decision = access::decide_for(state, user).await?;
    let patient =
        parsed.map_err(|_| ApiError::invalid(format!("`{patient}` is not Patient/id")))?;
    let link = access::require_holder(&decision, &patient, "manages the network")?.link_id;
    Ok((patient, link, decision.user_id))
}

fn sections(state: &AppState, requested: &[String]) -> ApiResult<BTreeSet<String>> {
    let names = state.mappings.sections.names();
    let set: BTreeSet<String> = requested.iter().cloned().collect();
    let unknown: Vec<&String> = set
        .iter()
        .filter(|s| !names.contains(&s.as_str()))
        .collect();
    if unknown.is_empty() {
        Ok(set)
    } else {
        Err(ApiError::invalid(format!(
            "unknown sections {unknown:?}; sections are {}",
            names.join(", ")
        )))
    }
}

fn actor(user: &PortalUser) -> String {
    format!("{}/{}", user.client_id, user.external_id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvitationRequest {
    patient: String,
    sections: Vec<String>,
    #[serde(default)]
    can_post: bool,
    name: String,
    relationship: String,
}

/// `POST /portal/invitations`: an invitation code for a network member (holder only).
pub async fn invite(
    State(state): State<AppState>,
    user: PortalUser,
    Json(req): Json<InvitationRequest>,
) -> ApiResult<Response> {
    let (patient, holder_link, user_id) = as_holder(&state, &user, &req.patient).await?;
    let granted = sections(&state, &req.sections)?;
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid(
            "name the person invited, in at most 200 characters",
        ));
    }
    if relationships::coding(&req.relationship).is_none() {
        return Err(ApiError::invalid(format!(
            "relationship `{}` is not a known code; use {}",
            req.relationship,
            relationships::codes()
        )));
    }
    let code = super::codes::new_code()?;
    let now = state.clock.now();
    let expires = state.config.portal.invitation_lifetime.after(now);
    let creator = actor(&user);
    accounts::insert_code(
        &state.db,
        &NewCode {
            code_hash: &super::codes::hash_code(&code),
            kind: "invitation",
            patient_id: &patient,
            relationship: &req.relationship,
            name: Some(name),
            sections: Some(format_sections(&granted)),
            can_post: req.can_post,
            created_by: &creator,
            created_at: to_micros(now),
            expires_at: to_micros(expires),
            invited_by: Some(holder_link),
        },
    )
    .await?;
    let mut tx = state.db.begin().await?;
    accounts::event(
        &mut tx,
        &Event {
            actor: &creator,
            kind: "invitation-created",
            user_id: Some(user_id),
            patient_id: Some(&patient),
            link_id: Some(holder_link),
            detail: Some(format!(
                "{name} ({}): {}",
                req.relationship,
                format_sections(&granted)
            )),
        },
        to_micros(now),
    )
    .await?;
    tx.commit().await?;
    Ok(fhir_json(
        StatusCode::CREATED,
        &json!({
            "code": code,
            "patient": format!("Patient/{patient}"),
            "name": name,
            "relationship": req.relationship,
            "sections": granted,
            "can_post": req.can_post,
            "expires_at": instant(expires),
        }),
    ))
}

fn grant_json(l: &accounts::LinkRow) -> Value {
    let sections: BTreeSet<String> = l
        .sections
        .as_deref()
        .map(access::facts::parse_sections)
        .unwrap_or_default();
    json!({
        "id": l.id.to_string(),
        "patient": format!("Patient/{}", l.patient_id),
        "name": l.name,
        "relationship": l.relationship,
        "sections": sections,
        "can_post": l.can_post != 0,
        "since": instant(from_micros(l.created_at)),
        "changed_at": instant(from_micros(l.changed_at)),
    })
}

/// The client a holder's query names (`?patient=P`), once the caller is its holder.
async fn held_patient(state: &AppState, user: &PortalUser, raw: Option<&str>) -> ApiResult<String> {
    let q = crate::body::query_map(raw, &["patient"])?;
    let patient = q
        .get("patient")
        .ok_or_else(|| ApiError::invalid("name the client: ?patient=Patient/id"))?;
    Ok(as_holder(state, user, patient).await?.0)
}

/// The open invitations of a client, as the holder sees them.
async fn open_invitations(state: &AppState, patient: &str) -> ApiResult<Vec<Value>> {
    let now = to_micros(state.clock.now());
    Ok(accounts::open_invitations(&state.db, patient, now)
        .await?
        .iter()
        .map(invitation_json)
        .collect())
}

/// `GET /portal/grants?patient=P`: the network members and open invitations (holder only).
pub async fn list(
    State(state): State<AppState>,
    user: PortalUser,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let patient = held_patient(&state, &user, raw.as_deref()).await?;
    let links = accounts::links_of_patient(&state.db, &patient).await?;
    let grants: Vec<Value> = links
        .iter()
        .filter(|l| l.role == Role::Member && l.ended_at.is_none())
        .map(grant_json)
        .collect();
    let invitations = open_invitations(&state, &patient).await?;
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"patient": format!("Patient/{patient}"), "grants": grants, "invitations": invitations}),
    ))
}

fn invitation_json(c: &accounts::Code) -> Value {
    json!({
        "id": c.id,
        "patient": format!("Patient/{}", c.patient_id),
        "name": c.name,
        "relationship": c.relationship,
        "sections": c.sections.as_deref().map(access::facts::parse_sections).unwrap_or_default(),
        "can_post": c.can_post != 0,
        "created_at": instant(from_micros(c.created_at)),
        "expires_at": instant(from_micros(c.expires_at)),
    })
}

/// `GET /portal/invitations?patient=P`: the open invitations of the client (holder only),
/// with their ids. Only invitations made by the current holder are open.
pub async fn invitations(
    State(state): State<AppState>,
    user: PortalUser,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let patient = held_patient(&state, &user, raw.as_deref()).await?;
    let open = open_invitations(&state, &patient).await?;
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"patient": format!("Patient/{patient}"), "invitations": open}),
    ))
}

/// `DELETE /portal/invitations/{id}`: the holder withdraws an open invitation; it can no longer
/// be redeemed. An invitation that is not the caller's to manage, or no longer open, is 404.
pub async fn uninvite(
    State(state): State<AppState>,
    user: PortalUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    // The client whose invitation it is, named whoever asks.
    let code = accounts::code_by_id(&state.db, &id)
        .await?
        .filter(|c| c.kind == "invitation");
    if let Some(c) = &code {
        crate::audit::names(&c.patient_id);
    }
    let decision = access::decide_for(&state, &user).await?;
    let now = to_micros(state.clock.now());
    let code = code.ok_or_else(ApiError::not_found)?;
    let holder = access::holding(&decision, &code.patient_id).ok_or_else(ApiError::not_found)?;
    let open = accounts::open_invitations(&state.db, &code.patient_id, now).await?;
    if !open.iter().any(|c| c.id == code.id) {
        return Err(ApiError::not_found());
    }
    let mut tx = state.db.begin().await?;
    if !accounts::revoke_code(&mut tx, &code.id, now).await? {
        return Err(ApiError::not_found());
    }
    accounts::event(
        &mut tx,
        &Event {
            actor: &actor(&user),
            kind: "invitation-revoked",
            user_id: Some(decision.user_id),
            patient_id: Some(&code.patient_id),
            link_id: Some(holder.link_id),
            detail: code.name.clone(),
        },
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::NO_CONTENT,
    ))
}

/// The member link `id`, if the caller is the holder of its client. The caller's own access is
/// decided first (contract §5: the first step that fails answers), so that a grant that exists
/// and one that does not look the same to anyone else.
async fn member_link(
    state: &AppState,
    user: &PortalUser,
    id: &str,
) -> ApiResult<(accounts::LinkRow, i64)> {
    // The client whose link it is (a grant, ended or not, or another role's link), named
    // whoever asks.
    let link = match id.parse::<i64>() {
        Ok(id) => accounts::link(&state.db, id).await?,
        Err(_) => None,
    };
    if let Some(l) = &link {
        crate::audit::names(&l.patient_id);
    }
    let link = link.filter(|l| l.role == Role::Member && l.ended_at.is_none());
    let decision = access::decide_for(state, user).await?;
    let link = link.ok_or_else(ApiError::not_found)?;
    match access::holding(&decision, &link.patient_id) {
        Some(_) => Ok((link, decision.user_id)),
        None => Err(ApiError::not_found()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantChange {
    sections: Option<Vec<String>>,
    can_post: Option<bool>,
}

/// `PATCH /portal/grants/{id}` `{"sections", "can_post"}`.
pub async fn change(
    State(state): State<AppState>,
    user: PortalUser,
    Path(id): Path<String>,
    Json(req): Json<GrantChange>,
) -> ApiResult<Response> {
    let (link, user_id) = member_link(&state, &user, &id).await?;
    let granted = match &req.sections {
        Some(s) => sections(&state, s)?,
        None => link
            .sections
            .as_deref()
            .map(access::facts::parse_sections)
            .unwrap_or_default(),
    };
    let can_post = req.can_post.unwrap_or(link.can_post != 0);
    let now = to_micros(state.clock.now());
    let mut tx = state.db.begin().await?;
    accounts::set_grant(&mut tx, link.id, &format_sections(&granted), can_post, now).await?;
    accounts::event(
        &mut tx,
        &Event {
            actor: &actor(&user),
            kind: "grant-changed",
            user_id: Some(user_id),
            patient_id: Some(&link.patient_id),
            link_id: Some(link.id),
            detail: Some(format!(
                "sections {}; can_post {can_post}",
                format_sections(&granted)
            )),
        },
        now,
    )
    .await?;
    tx.commit().await?;
    let updated = accounts::link(&state.db, link.id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(fhir_json(StatusCode::OK, &grant_json(&updated)))
}

/// `DELETE /portal/grants/{id}`: the holder revokes a member's access, at once (R9).
pub async fn revoke(
    State(state): State<AppState>,
    user: PortalUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (link, user_id) = member_link(&state, &user, &id).await?;
    let now = to_micros(state.clock.now());
    let mut tx = state.db.begin().await?;
    accounts::end_link(&mut tx, link.id, "revoked by the holder", now).await?;
    accounts::event(
        &mut tx,
        &Event {
            actor: &actor(&user),
            kind: "link-ended",
            user_id: Some(user_id),
            patient_id: Some(&link.patient_id),
            link_id: Some(link.id),
            detail: Some("revoked by the holder".into()),
        },
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::NO_CONTENT,
    ))
}
