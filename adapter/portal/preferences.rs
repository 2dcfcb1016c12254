//! The holder's own choice (beyond the seeds): to see chosen sections without the explanation
//! delay, where the organisation allows it (`embargo.client_may_waive`). Only duration rules
//! are waived; `manual` and `never` stay. The choice acts on what is waiting now and on what
//! arrives later, for everyone who may see the section; it is recorded with who and when.

use crate::access::{self};
use crate::app::AppState;
use crate::auth::PortalUser;
use crate::body::Json;
use crate::error::{ApiError, ApiResult, fhir_json};
use crate::release::recompute;
use crate::store::release as store;
use crate::time::{from_micros, instant, to_micros};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeSet;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencesRequest {
    patient: String,
    immediate_sections: Vec<String>,
}

/// The holder's access to `patient`, or why not.
async fn holder_of(state: &AppState, user: &PortalUser, patient: &str) -> ApiResult<(String, i64)> {
    let parsed = crate::search::params::patient_id(patient, "patient");
    if let Ok(p) = &parsed {
        crate::audit::names(p);
    }
    let decision = access::decide_for(state, user).await?;
    let patient =
        parsed.map_err(|_| ApiError::invalid(format!("`{patient}` is not Patient/id")))?;
    access::require_holder(&decision, &patient, "decides this")?;
    Ok((patient, decision.user_id))
}

/// Whether some rule for `section` is a duration (and so can be waived).
fn waivable(state: &AppState, section: &str) -> bool {
    let rules = &state.mappings.embargo;
    rules.default.is_waivable()
        || rules
            .rules
            .iter()
            .any(|r| r.section == section && r.delay.is_waivable())
}

/// `PUT /portal/preferences` `{"patient", "immediate_sections"}`.
pub async fn put(
    State(state): State<AppState>,
    user: PortalUser,
    Json(req): Json<PreferencesRequest>,
) -> ApiResult<Response> {
    let (patient, user_id) = holder_of(&state, &user, &req.patient).await?;
    if !state.config.embargo.client_may_waive {
        return Err(ApiError::conflict(
            "this care organisation does not let clients skip the explanation delay",
        ));
    }
    let names = state.mappings.sections.names();
    let sections: BTreeSet<String> = req.immediate_sections.iter().cloned().collect();
    let unknown: Vec<&String> = sections
        .iter()
        .filter(|s| !names.contains(&s.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::invalid(format!(
            "unknown sections {unknown:?}; sections are {}",
            names.join(", ")
        )));
    }
    let fixed: Vec<&String> = sections.iter().filter(|s| !waivable(&state, s)).collect();
    if !fixed.is_empty() {
        return Err(ApiError::invalid(format!(
            "sections {fixed:?} are shown only after a staff release or never; that cannot be waived"
        )));
    }
    let now = to_micros(state.clock.now());
    let waiting = store::waiting_resources(&state.db, now, Some(&patient)).await?;
    let mut tx = state.db.begin().await?;
    store::insert_waiver(
        &mut tx,
        &patient,
        &crate::access::facts::format_sections(&sections),
        user_id,
        now,
    )
    .await?;
    for chunk in waiting.chunks(500) {
        recompute::resources(&state, &mut tx, chunk, now).await?;
    }
    tx.commit().await?;
    Ok(fhir_json(
        StatusCode::OK,
        &json!({
            "patient": format!("Patient/{patient}"),
            "immediate_sections": sections,
            "since": instant(from_micros(now)),
            "warning": state.config.embargo.waiver_warning,
        }),
    ))
}

/// `GET /portal/preferences?patient=P`.
pub async fn get(
    State(state): State<AppState>,
    user: PortalUser,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = crate::body::query_map(raw.as_deref(), &["patient"])?;
    let patient = params
        .get("patient")
        .ok_or_else(|| ApiError::invalid("name the client: ?patient=Patient/id"))?;
    let (patient, _) = holder_of(&state, &user, patient).await?;
    let current = store::current_waiver(&state.db, &patient).await?;
    let (sections, since) = match current {
        Some((s, _, at)) => (s, Some(instant(from_micros(at)))),
        None => (BTreeSet::new(), None),
    };
    Ok(fhir_json(
        StatusCode::OK,
        &json!({
            "patient": format!("Patient/{patient}"),
            "client_may_waive": state.config.embargo.client_may_waive,
            "immediate_sections": sections,
            "since": since,
            "warning": state.config.embargo.waiver_warning,
        }),
    ))
}
