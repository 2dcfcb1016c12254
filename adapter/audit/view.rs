//! `GET /fhir/AuditEvent?patient=P`: the client's right to see who looked (Wabvpz art. 15e,
//! R18), for the holder only. Each answered read, search or history that served the client's
//! data becomes an AuditEvent shaped after the IHE Basic Audit Log Patterns: when, what kind
//! of access, who (by the name and relationship the holder knows them by, or "staff of the care
//! organisation"), and which types of the client's data. Nothing of other clients, of the
//! portal vendor's systems (user ids, addresses) or of the query is shown.
//!
//! `GET /fhir/AuditEvent/{id}` reads one of them (the search's `fullUrl`): for the holder of
//! a client the record is about, 404 to anyone else, as for an id that is not there.

use crate::access;
use crate::app::AppState;
use crate::auth::{Interaction, PortalUser};
use crate::error::{ApiError, ApiResult, fhir_json};
use crate::store::audit::{Seen, patients_between, seen, seen_one};
use crate::time::{from_micros, instant};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

const DEFAULT_COUNT: i64 = 50;
const MAX_COUNT: i64 = 500;

/// `GET /fhir/AuditEvent?patient=P[&_count=n][&_cursor=c]`, newest first.
pub async fn search(
    State(state): State<AppState>,
    user: PortalUser,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    user.scopes.require("AuditEvent", Interaction::Search)?;
    let q = crate::body::query_map(raw.as_deref(), &["patient", "_count", "_cursor"])?;
    let patient = q
        .get("patient")
        .ok_or_else(|| ApiError::invalid("name the client: ?patient=Patient/id"))?;
    let patient = crate::search::params::patient_id(patient, "patient")?;
    let decision = access::decide_for(&state, &user).await?;
    access::require_holder(&decision, &patient, "sees who looked at the dossier")?;
    let count = crate::body::page_count(&q, DEFAULT_COUNT, MAX_COUNT)?;
    let before = crate::body::positive_number(&q, "_cursor")?.unwrap_or(i64::MAX);
    crate::audit::flushed(&state).await?;
    let rows = seen(&state.db, &patient, before, count).await?;
    let base = &state.config.server.public_base_url;
    let organization = &state.config.organization.name;
    let mut links = vec![
        json!({"relation": "self", "url": format!("{base}/fhir/AuditEvent?patient={patient}&_count={count}")}),
    ];
    if rows.len() as i64 == count
        && let Some(last) = rows.last()
    {
        links.push(json!({"relation": "next", "url": format!("{base}/fhir/AuditEvent?patient={patient}&_count={count}&_cursor={}", last.seq)}));
    }
    let entries: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "fullUrl": format!("{base}/fhir/AuditEvent/{}", r.seq),
                "resource": event(r, &patient, organization),
                "search": {"mode": "match"},
            })
        })
        .collect();
    Ok(fhir_json(
        StatusCode::OK,
        &json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "link": links,
            "entry": entries,
        }),
    ))
}

/// `GET /fhir/AuditEvent/{id}`: the event as the search shows it, for the holder of a client
/// it is about (the first such client, when it is about several the user holds).
pub async fn read(
    State(state): State<AppState>,
    user: PortalUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    user.scopes.require("AuditEvent", Interaction::Read)?;
    // The id as the search gives it: a positive number in its plain form.
    let seq = id
        .parse::<i64>()
        .ok()
        .filter(|s| *s > 0 && s.to_string() == id)
        .ok_or_else(ApiError::not_found)?;
    crate::audit::flushed(&state).await?;
    let clients = patients_between(&state.db, seq, seq).await?;
    // A refused read names the clients the event is about: an attempt on their trail.
    let refused = |e: ApiError| {
        crate::audit::shows(clients.iter().map(|(_, p, _)| p.as_str()));
        e
    };
    let decision = access::decide_for(&state, &user).await.map_err(refused)?;
    for (_, patient, _) in &clients {
        let patient = patient.clone();
        if access::holding(&decision, &patient).is_none() {
            continue;
        }
        if let Some(row) = seen_one(&state.db, &patient, seq).await? {
            crate::audit::about("AuditEvent", &id, std::slice::from_ref(&patient));
            return Ok(fhir_json(
                StatusCode::OK,
                &event(&row, &patient, &state.config.organization.name),
            ));
        }
    }
    Err(refused(ApiError::not_found()))
}

/// Who, as the holder knows them.
fn who(r: &Seen) -> String {
    match (r.client_id.as_deref(), &r.name, &r.relationship) {
        (Some(c), _, _) if c == "admin" || c.starts_with("admin:") => {
            "a staff member of the care organisation".into()
        }
        (_, Some(name), Some(rel)) => format!("{name} ({})", relationship_text(rel)),
        (_, None, Some(rel)) => relationship_text(rel).to_string(),
        (_, Some(name), None) => name.clone(),
        _ => "someone through the portal who is no longer linked".into(),
    }
}

fn relationship_text(code: &str) -> &str {
    match code {
        "self" => "the client themself",
        "curator" => "curator",
        "mentor" => "mentor",
        "notarial" => "notarial representative",
        "first-contact" => "first contact",
        other => other,
    }
}

fn event(r: &Seen, patient: &str, organization: &str) -> Value {
    let (subtype, display) = match r.action.as_str() {
        "read" => ("read", "read"),
        "history" => ("history-system", "history"),
        _ => ("search-type", "search"),
    };
    let types = r.types.as_deref().unwrap_or("");
    json!({
        "resourceType": "AuditEvent",
        "id": r.seq.to_string(),
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": subtype, "display": display}],
        "action": "E",
        "recorded": instant(from_micros(r.at)),
        "outcome": "0",
        "agent": [{"who": {"display": who(r)}, "requestor": true}],
        "source": {"observer": {"display": organization}},
        "entity": [{
            "what": {"reference": format!("Patient/{patient}")},
            "description": format!("seen: {}", types.replace(' ', ", ")),
        }],
    })
}
