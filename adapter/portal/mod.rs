//! `/portal`: portal accounts as the person using the portal sees them: linking with a code,
//! accepting the terms, and what they are linked to.

pub mod codes;
pub mod grants;
pub mod preferences;

use crate::access::{decision, facts};
use crate::app::AppState;
use crate::auth::PortalUser;
use crate::body::Json;
use crate::error::{ApiError, ApiResult, Reason, fhir_json};
use crate::store::accounts;
use crate::time::{instant, to_micros};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    code: String,
    birth_date: String,
}

/// `POST /portal/link`: redeems an activation code and links this user to the client.
pub async fn link(
    State(state): State<AppState>,
    user: PortalUser,
    Json(req): Json<LinkRequest>,
) -> ApiResult<Response> {
    // The client the code is for is named before any refusal (a blocked or under-age user's
    // attempt is one on that client too); [`codes::redeem`] decides on the code.
    if let Some(code) = accounts::code(&state.db, &codes::hash_code(&req.code)).await? {
        crate::audit::names(&code.patient_id);
    }
    crate::access::require_not_blocked(&state, &user).await?;
    let birth_date = NaiveDate::parse_from_str(req.birth_date.trim(), "%Y-%m-%d")
        .map_err(|_| ApiError::invalid("birth_date must be a date written YYYY-MM-DD"))?;
    let now = state.clock.now();
    if birth_date > now.date_naive() {
        return Err(ApiError::invalid("birth_date lies in the future"));
    }
    if !decision::old_enough(
        Some(birth_date),
        state.config.organization.min_user_age,
        now,
    ) {
        return Err(ApiError::forbidden(
            Reason::UnderAge,
            format!(
                "portal users must be at least {} years old",
                state.config.organization.min_user_age
            ),
        ));
    }
    let linked = codes::redeem(
        &state,
        &user,
        &req.code,
        &birth_date.to_string(),
        to_micros(now),
    )
    .await?;
    let (user_facts, _) =
        facts::user_and_links(&state.db, &user.client_id, &user.external_id).await?;
    let terms_accepted = user_facts
        .and_then(|u| u.terms_version)
        .is_some_and(|v| v == state.config.organization.terms_version);
    Ok(fhir_json(
        StatusCode::CREATED,
        &json!({
            "link": linked.link_id.to_string(),
            "patient": format!("Patient/{}", linked.patient_id),
            "role": linked.role,
            "relationship": linked.relationship,
            "terms_accepted": terms_accepted,
            "terms_version": state.config.organization.terms_version,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermsRequest {
    version: String,
}

/// `POST /portal/terms`: accepts the current terms version (R5).
pub async fn terms(
    State(state): State<AppState>,
    user: PortalUser,
    Json(req): Json<TermsRequest>,
) -> ApiResult<Response> {
    crate::access::require_not_blocked(&state, &user).await?;
    let current = &state.config.organization.terms_version;
    if &req.version != current {
        return Err(ApiError::conflict(format!(
            "terms version {} is not the current one; accept version {current}",
            req.version
        )));
    }
    let now = state.clock.now();
    accounts::accept_terms(
        &state.db,
        &user.client_id,
        &user.external_id,
        current,
        to_micros(now),
    )
    .await?;
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"terms_version": current, "accepted_at": instant(now)}),
    ))
}

/// `GET /portal/me`: the clients this user is linked to, and whether they may see them now.
pub async fn me(State(state): State<AppState>, user: PortalUser) -> ApiResult<Response> {
    crate::access::require_not_blocked(&state, &user).await?;
    let (user_facts, links) =
        facts::user_and_links(&state.db, &user.client_id, &user.external_id).await?;
    let policy = state.policy();
    let current_terms = &policy.terms_version;
    let accepted = user_facts.as_ref().and_then(|u| u.terms_version.clone());
    let patients: Vec<&str> = links
        .iter()
        .filter(|l| !l.ended)
        .map(|l| l.patient_id.as_str())
        .collect();
    let clients_facts = facts::clients(&state.db, &patients).await?;
    let outcome = decision::decide(
        user_facts.as_ref(),
        &links,
        &clients_facts,
        &policy,
        state.clock.now(),
    );
    let clients: Vec<serde_json::Value> = links
        .iter()
        .filter(|l| !l.ended)
        .map(|l| {
            let status = match &outcome {
                Err(refusal) => refusal.0.code(),
                Ok(d) => d.refused.get(&l.patient_id).map_or("ok", |r| r.code()),
            };
            json!({
                "link": l.id.to_string(),
                "patient": format!("Patient/{}", l.patient_id),
                "role": l.role.as_str(),
                "sections": match &l.sections {
                    None => json!("all"),
                    Some(s) => json!(s),
                },
                "can_post": l.can_post || l.role == crate::store::accounts::Role::Holder,
                "access": status,
                "grants_changed_at": l.changed_at.map(instant),
            })
        })
        .collect();
    let grants_changed_at = links.iter().filter_map(|l| l.changed_at).max().map(instant);
    Ok(fhir_json(
        StatusCode::OK,
        &json!({
            "user": user.external_id,
            "terms": {
                "current_version": current_terms,
                "accepted_version": accepted,
                "accepted": accepted.as_deref() == Some(current_terms.as_str()),
            },
            "clients": clients,
            "grants_changed_at": grants_changed_at,
        }),
    ))
}
