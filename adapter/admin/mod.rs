//! `/admin`: care staff and integration engineers (bearer `admin.token`): activation codes,
//! blocks and links (`accounts`), how the sources are doing (`sources`), the explanation, and,
//! in development, the clock.

pub mod accounts;
pub mod audit;
pub mod sources;

use crate::app::AppState;
use crate::auth::Admin;
use crate::body::Json;
use crate::error::{ApiError, ApiResult, Reason, fhir_json};
use crate::portal::codes;
use crate::store::accounts::{self as store_accounts, NewCode};
use crate::time::{instant, parse_instant, to_micros};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

/// Relationships an activation code may carry (contract §6).
pub const HOLDER_RELATIONSHIPS: &[&str] =
    &["self", "curator", "mentor", "notarial", "first-contact"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationRequest {
    patient: String,
    relationship: String,
}

/// `POST /admin/activation-codes`: a holder activation code for one client.
pub async fn activation_code(
    State(state): State<AppState>,
    admin: Admin,
    Json(req): Json<ActivationRequest>,
) -> ApiResult<Response> {
    let patient_id = req
        .patient
        .strip_prefix("Patient/")
        .unwrap_or(&req.patient)
        .to_string();
    crate::audit::names(&patient_id);
    if !HOLDER_RELATIONSHIPS.contains(&req.relationship.as_str()) {
        return Err(ApiError::invalid(format!(
            "relationship `{}` is not one of {}",
            req.relationship,
            HOLDER_RELATIONSHIPS.join(", ")
        )));
    }
    if !store_accounts::patient_exists(&state.db, &patient_id).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Reason::NotFound,
            format!("no Patient/{patient_id} has been ingested"),
        ));
    }
    let code = codes::new_code()?;
    let now = state.clock.now();
    let expires = state.config.portal.activation_code_lifetime.after(now);
    let hash = codes::hash_code(&code);
    store_accounts::insert_code(
        &state.db,
        &NewCode {
            code_hash: &hash,
            kind: "activation",
            patient_id: &patient_id,
            relationship: &req.relationship,
            name: None,
            sections: None,
            can_post: true,
            created_by: &admin.name,
            created_at: to_micros(now),
            expires_at: to_micros(expires),
            invited_by: None,
        },
    )
    .await?;
    Ok(fhir_json(
        StatusCode::CREATED,
        &json!({
            "code": code,
            "patient": format!("Patient/{patient_id}"),
            "relationship": req.relationship,
            "expires_at": instant(expires),
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockRequest {
    now: Option<String>,
}

fn clock_enabled(state: &AppState) -> ApiResult<()> {
    if state.config.dev.clock_override {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

/// `GET /admin/clock`.
pub async fn get_clock(State(state): State<AppState>, _admin: Admin) -> ApiResult<Response> {
    clock_enabled(&state)?;
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"now": instant(state.clock.now()), "pinned": state.clock.is_pinned()}),
    ))
}

/// `PUT /admin/clock` `{"now": T}` pins the clock; `{"now": null}` lets it follow the system.
pub async fn put_clock(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<ClockRequest>,
) -> ApiResult<Response> {
    clock_enabled(&state)?;
    let moment = match req.now.as_deref() {
        None => None,
        Some(text) => Some(parse_instant(text).ok_or_else(|| {
            ApiError::invalid(format!(
                "`{text}` is not an instant such as 2026-11-23T10:00:00Z"
            ))
        })?),
    };
    state.clock.pin(moment);
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"now": instant(state.clock.now()), "pinned": state.clock.is_pinned()}),
    ))
}

/// `GET /admin/explain?resource=Type/id[&client=C&user=U]`: why the resource is or is not
/// shown now and from when it will be; with a user, whether that user may see it.
pub async fn explain(
    State(state): State<AppState>,
    _admin: Admin,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> ApiResult<Response> {
    let q = crate::body::query_map(raw.as_deref(), &["resource", "client", "user"])?;
    let resource = q
        .get("resource")
        .ok_or_else(|| ApiError::invalid("name the resource: ?resource=Type/id"))?;
    let (ty, id) = crate::fhir::reference::parse_type_id(resource)
        .ok_or_else(|| ApiError::invalid(format!("`{resource}` is not Type/id")))?;
    crate::audit::about_stored(&state.db, &ty, &id).await?;
    let delay = crate::release::explain::delay_part(&state, &ty, &id).await?;
    let access = match (q.get("client"), q.get("user")) {
        (Some(client), Some(user)) => {
            Some(crate::access::explain::consent_part(&state, client, user, &ty, &delay).await?)
        }
        _ => None,
    };
    let body = Explanation {
        resource: format!("{ty}/{id}"),
        delay,
        access,
    };
    Ok(fhir_json(StatusCode::OK, &serde_json::to_value(&body)?))
}

/// `GET /admin/explain`'s answer: the delay part, and with a user the access part.
#[derive(serde::Serialize)]
struct Explanation {
    resource: String,
    #[serde(flatten)]
    delay: crate::release::explain::DelayExplanation,
    #[serde(skip_serializing_if = "Option::is_none")]
    access: Option<crate::access::explain::AccessExplanation>,
}

/// An optional body naming who acts and why.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ActorBody {
    reason: Option<String>,
    by: Option<String>,
}
