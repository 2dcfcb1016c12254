//! Staff decisions about the delay (R11, R12): `POST /admin/release` (the caregiver explained
//! it: show it now) and `POST /admin/hold` (keep it back until a moment, or until released).
//! A hold may be placed before the resource arrives; on a resource already shown it takes it
//! off the portal at once (R14), as a withdrawal in `_history`, until released or until its
//! moment. Every action is recorded with who and when.

use super::recompute;
use crate::app::AppState;
use crate::auth::Admin;
use crate::body::Json;
use crate::error::{ApiError, ApiResult, fhir_json};
use crate::fhir::reference::parse_type_id;
use crate::store::release as store;
use crate::store::resources;
use crate::time::to_micros;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    resource: String,
    /// Who explained it (a staff member's name or id); default the admin credential's name.
    by: Option<String>,
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    resource: String,
    /// Keep back until this moment; `null` or absent: until released.
    until: Option<String>,
    by: Option<String>,
    note: Option<String>,
}

fn target(resource: &str) -> ApiResult<(String, String)> {
    parse_type_id(resource).ok_or_else(|| {
        ApiError::invalid(format!(
            "`{resource}` is not Type/id of an R4 resource type"
        ))
    })
}

/// Who acts: `by` as given, else the admin credential's name (the audit records the
/// credential either way).
fn actor(by: Option<String>, admin: &Admin) -> ApiResult<String> {
    let by = by.unwrap_or_else(|| admin.name.clone());
    if by.trim().is_empty() || by.len() > 200 {
        return Err(ApiError::invalid(
            "`by` must name who acts, in at most 200 characters",
        ));
    }
    Ok(by)
}

/// `POST /admin/release`.
pub async fn release(
    State(state): State<AppState>,
    admin: Admin,
    Json(req): Json<ReleaseRequest>,
) -> ApiResult<Response> {
    let (ty, id) = target(&req.resource)?;
    crate::audit::about_stored(&state.db, &ty, &id).await?;
    let by = actor(req.by, &admin)?;
    let resource_id = store::resource_id(&state.db, &ty, &id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                crate::error::Reason::NotFound,
                format!("{ty}/{id} has not arrived; only a hold can be placed in advance"),
            )
        })?;
    let now = to_micros(state.clock.now());
    let mut tx = state.db.begin().await?;
    resources::lock(&mut tx, &[(ty.clone(), id.clone())]).await?;
    let versions = store::versions_of(&mut tx, &[resource_id]).await?;
    // The newest version the source sent (not a withdrawal): is it under `never`?
    if let Some(v) = versions
        .get(&resource_id)
        .and_then(|v| v.iter().rev().find(|v| v.withdrawn != resources::WITHDRAWN))
    {
        let tokens = store::rule_tokens(&mut tx, &[v.id]).await?;
        let placement =
            recompute::placement_of(&state, v, tokens.get(&v.id).map_or(&[][..], Vec::as_slice));
        if placement.delay == crate::mapping::embargo::Delay::Never {
            return Err(ApiError::conflict(format!(
                "{ty}/{id} falls under a `never` rule ({}) and cannot be released",
                placement.rule
            )));
        }
    }
    store::insert_action(
        &mut tx,
        &store::NewAction {
            resource_type: &ty,
            fhir_id: &id,
            action: "release",
            until: None,
            actor: &by,
            note: req.note.as_deref(),
            at: now,
        },
    )
    .await?;
    recompute::resources(&state, &mut tx, &[resource_id], now).await?;
    tx.commit().await?;
    answer(&state, &ty, &id, "release").await
}

/// `POST /admin/hold`.
pub async fn hold(
    State(state): State<AppState>,
    admin: Admin,
    Json(req): Json<HoldRequest>,
) -> ApiResult<Response> {
    let (ty, id) = target(&req.resource)?;
    crate::audit::about_stored(&state.db, &ty, &id).await?;
    let by = actor(req.by, &admin)?;
    let until = crate::body::instant_field("until", req.until.as_deref())?;
    let now = to_micros(state.clock.now());
    let mut tx = state.db.begin().await?;
    resources::lock(&mut tx, &[(ty.clone(), id.clone())]).await?;
    store::insert_action(
        &mut tx,
        &store::NewAction {
            resource_type: &ty,
            fhir_id: &id,
            action: "hold",
            until,
            actor: &by,
            note: req.note.as_deref(),
            at: now,
        },
    )
    .await?;
    if let Some(resource_id) = store::resource_id(&mut tx, &ty, &id).await? {
        if until.is_none_or(|u| u > now) {
            take_off_if_shown(&mut tx, resource_id, now).await?;
        }
        recompute::resources(&state, &mut tx, &[resource_id], now).await?;
    }
    tx.commit().await?;
    answer(&state, &ty, &id, "hold").await
}

/// A hold on a shown resource: the shown version leaves the portal now (a tombstone), and a
/// copy of the newest version waits for the hold to end.
async fn take_off_if_shown(
    tx: &mut crate::store::db::Tx,
    resource_id: i64,
    now: i64,
) -> ApiResult<()> {
    let versions = store::versions_of(&mut *tx, &[resource_id]).await?;
    let list = versions.get(&resource_id).map_or(&[][..], Vec::as_slice);
    let shown = list
        .iter()
        .rev()
        .find(|v| v.release_at.is_some_and(|r| r <= now))
        .filter(|v| v.withdrawn == 0);
    if let (Some(shown), Some(last)) = (shown, list.last())
        && last.withdrawn == 0
    {
        store::take_off(tx, shown, last, now, "withdrawn: held by staff", true).await?;
    }
    Ok(())
}

/// The answer of a staff action: the resource, the action and the explanation after it.
#[derive(serde::Serialize)]
struct Answer<'a> {
    resource: String,
    action: &'a str,
    #[serde(flatten)]
    delay: super::explain::DelayExplanation,
}

async fn answer(state: &AppState, ty: &str, id: &str, action: &str) -> ApiResult<Response> {
    let delay = super::explain::delay_part(state, ty, id).await?;
    let body = Answer {
        resource: format!("{ty}/{id}"),
        action,
        delay,
    };
    Ok(fhir_json(StatusCode::OK, &serde_json::to_value(&body)?))
}
