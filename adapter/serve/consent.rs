//! `GET /fhir/Consent?patient=P`: the holder's grants to network members as FHIR Consent
//! resources, with the people (holder and members) as RelatedPerson. Rendered from the links
//! on every request, so a change shows at once. The holder (and a reader) see every grant of
//! the client; a network member sees their own.

use super::bundle::query_string;
use crate::access::{self, Role, relationships};
use crate::app::AppState;
use crate::auth::{Interaction, PortalUser};
use crate::error::{ApiError, ApiResult, fhir_json};
use crate::store::accounts::{self, LinkRow};
use crate::time::{from_micros, instant};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

/// The id of the RelatedPerson of a link.
fn person_id(link: i64) -> String {
    format!("sluis-link-{link}")
}

fn relationship(link: &LinkRow) -> Value {
    let code = if link.role == Role::Member {
        link.relationship.as_str()
    } else {
        relationships::holder_code(&link.relationship)
    };
    match relationships::coding(code) {
        Some((system, code, display)) => {
            json!([{"coding": [{"system": system, "code": code, "display": display}]}])
        }
        None => json!([{"text": link.relationship}]),
    }
}

/// The RelatedPerson standing for a person linked to the client.
pub fn related_person(link: &LinkRow) -> Value {
    let mut person = json!({
        "resourceType": "RelatedPerson",
        "id": person_id(link.id),
        "meta": {"lastUpdated": instant(from_micros(link.changed_at))},
        "active": link.ended_at.is_none(),
        "patient": {"reference": format!("Patient/{}", link.patient_id)},
        "relationship": relationship(link),
        "period": {"start": instant(from_micros(link.created_at))},
    });
    if let Some(name) = &link.name {
        person["name"] = json!([{"text": name}]);
    }
    person
}

/// The Consent of one member's grant, given by the holder (or the client).
pub fn consent(grant: &LinkRow, holder: Option<&LinkRow>) -> Value {
    let sections = grant
        .sections
        .as_deref()
        .map(access::facts::parse_sections)
        .unwrap_or_default();
    let mut actions = vec![
        json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"}]}),
    ];
    if grant.can_post != 0 {
        actions.push(json!({"coding": [{"system": "urn:sluis:action", "code": "post", "display": "may post messages"}]}));
    }
    let parts: Vec<Value> = sections
        .iter()
        .map(|s| json!({"type": "permit", "code": [{"coding": [{"system": "urn:sluis:section", "code": s}]}]}))
        .collect();
    let performer = match holder {
        Some(h) if h.relationship != "self" => {
            json!([{"reference": format!("RelatedPerson/{}", person_id(h.id))}])
        }
        _ => json!([{"reference": format!("Patient/{}", grant.patient_id)}]),
    };
    let mut provision = json!({
        "type": "permit",
        "period": {"start": instant(from_micros(grant.created_at))},
        "actor": [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient"}]},
            "reference": {"reference": format!("RelatedPerson/{}", person_id(grant.id))}
        }],
        "action": actions,
    });
    if !parts.is_empty() {
        provision["provision"] = Value::Array(parts);
    }
    json!({
        "resourceType": "Consent",
        "id": format!("grant-{}", grant.id),
        "meta": {"lastUpdated": instant(from_micros(grant.changed_at))},
        "status": if grant.ended_at.is_none() { "active" } else { "inactive" },
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": {"reference": format!("Patient/{}", grant.patient_id)},
        "dateTime": instant(from_micros(grant.created_at)),
        "performer": performer,
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": provision,
    })
}

/// The grants the user may see, with the people they name: `(consents, people)`.
async fn visible(
    state: &AppState,
    user: &PortalUser,
    patient: Option<&str>,
) -> ApiResult<(Vec<Value>, Vec<Value>)> {
    let decision = access::decide_for(state, user).await?;
    access::refuse_named(&decision, patient)?;
    let mut consents = Vec::new();
    let mut people = Vec::new();
    for a in decision
        .allowed
        .iter()
        .filter(|a| patient.is_none_or(|p| p == a.patient_id))
    {
        let links = accounts::links_of_patient(&state.db, &a.patient_id).await?;
        let (holder, grants) = access::visible_grants(a, &links);
        for g in grants {
            consents.push(consent(g, holder));
            people.push(related_person(g));
        }
        if let Some(h) = holder
            && h.relationship != "self"
            && !consents.is_empty()
        {
            people.push(related_person(h));
        }
    }
    Ok((consents, people))
}

/// `GET /fhir/Consent?patient=P`.
pub async fn search(
    State(state): State<AppState>,
    user: PortalUser,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    user.scopes.require("Consent", Interaction::Search)?;
    let q = crate::body::query_map(raw.as_deref(), &["patient", "_include", "_format"])?;
    // The people a grant names come with it anyway; no other include is known here.
    if let Some(include) = q.get("_include")
        && include != "Consent:actor"
    {
        return Err(ApiError::unknown_parameter(format!(
            "_include={include} is not supported on Consent; only Consent:actor (always included)"
        )));
    }
    if let Some(format) = q.get("_format")
        && !matches!(
            format.as_str(),
            "json" | "application/json" | "application/fhir+json"
        )
    {
        return Err(ApiError::unknown_parameter(format!(
            "_format={format} is not supported; this server speaks JSON"
        )));
    }
    let patient = match q.get("patient") {
        Some(p) => Some(crate::search::params::patient_id(p, "patient")?),
        None => None,
    };
    let (consents, mut people) = visible(&state, &user, patient.as_deref()).await?;
    if !user.scopes.allows("RelatedPerson", Interaction::Read) {
        people.clear();
    }
    let base = &state.config.server.public_base_url;
    let entry = |r: &Value, mode: &str| {
        json!({
            "fullUrl": format!("{base}/fhir/{}/{}", r["resourceType"].as_str().unwrap_or(""), r["id"].as_str().unwrap_or("")),
            "resource": r,
            "search": {"mode": mode},
        })
    };
    audited(&consents);
    audited(&people);
    let mut entries: Vec<Value> = consents.iter().map(|c| entry(c, "match")).collect();
    entries.extend(people.iter().map(|p| entry(p, "include")));
    let echo: Vec<(String, String)> = q.into_iter().collect();
    let qs = query_string(&echo);
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "meta": {"lastUpdated": instant(state.clock.now())},
        "total": consents.len(),
        "link": [{"relation": "self", "url": if qs.is_empty() { format!("{base}/fhir/Consent") } else { format!("{base}/fhir/Consent?{qs}") }}],
    });
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    Ok(fhir_json(StatusCode::OK, &bundle))
}

/// `GET /fhir/Consent/{id}`.
pub async fn read(
    State(state): State<AppState>,
    user: PortalUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    user.scopes.require("Consent", Interaction::Read)?;
    let (consents, _) = visible(&state, &user, None).await?;
    let consent = consents
        .into_iter()
        .find(|c| c["id"] == id.as_str())
        .ok_or_else(ApiError::not_found)?;
    audited(std::slice::from_ref(&consent));
    Ok(fhir_json(StatusCode::OK, &consent))
}

/// Puts what an answer shows into its audit record: each resource, with the client it is
/// about (a Consent's and a RelatedPerson's `patient`).
fn audited(resources: &[Value]) {
    crate::audit::served_all(resources.iter().map(|r| {
        (
            r["resourceType"].as_str().unwrap_or_default(),
            r["id"].as_str().unwrap_or_default(),
            r["patient"]["reference"]
                .as_str()
                .and_then(|p| p.strip_prefix("Patient/")),
        )
    }));
}
