//! `GET /fhir/metadata`: the CapabilityStatement, built from the same tables search uses, so
//! it never promises what is not there.

use crate::app::AppState;
use crate::fhir::definitions::{self, ParamType};
use crate::mapping::sections::Sections;
use crate::search;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

/// Types outside the patient compartment that are served when a visible resource refers to them.
pub const REFERENCED_TYPES: &[&str] = &[
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Medication",
    "HealthcareService",
];

fn type_name(ty: ParamType) -> &'static str {
    match ty {
        ParamType::Number => "number",
        ParamType::Date => "date",
        ParamType::String => "string",
        ParamType::Token => "token",
        ParamType::Reference => "reference",
        ParamType::Composite => "composite",
        ParamType::Quantity => "quantity",
        ParamType::Uri => "uri",
        ParamType::Special => "special",
    }
}

/// The resource types the portal can be served.
pub fn served_types(sections: &Sections) -> Vec<&'static str> {
    let mut types: Vec<&'static str> = definitions::resource_types()
        .filter(|t| *t == "Patient" || sections.maps_type(t) || REFERENCED_TYPES.contains(t))
        .collect();
    types.sort_unstable();
    types
}

/// Builds the CapabilityStatement.
pub fn capability_statement(
    state_name: &str,
    base: &str,
    sections: &Sections,
    date: &str,
) -> Value {
    let resources: Vec<Value> = served_types(sections)
        .into_iter()
        .map(|t| {
            let mut params = vec![
                json!({"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"}),
                json!({"name": "_lastUpdated", "type": "date",
                       "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
                       "documentation": "The moment this version became visible on the portal"}),
            ];
            for s in search::supported_params(t) {
                params.push(json!({"name": s.name, "type": type_name(s.ty)}));
            }
            let includes: Vec<String> = definitions::search_params(t)
                .iter()
                .filter(|p| p.ty == ParamType::Reference)
                .map(|p| format!("{t}:{}", p.name))
                .collect();
            let mut r = json!({
                "type": t,
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "versioning": "versioned",
                "readHistory": false,
                "searchParam": params,
            });
            if !includes.is_empty() {
                r["searchInclude"] = json!(includes);
            }
            if t == "Communication" {
                // A portal user's message to the care team (R15), held for moderation (R20).
                r["interaction"] = json!([{"code": "read"}, {"code": "search-type"}, {"code": "create"}]);
                r["documentation"] = json!(format!(
                    "create: a message of a portal user who may post, held for the care organisation's moderation before anyone else sees it. {}",
                    crate::messages::NOT_URGENT
                ));
            }
            r
        })
        .collect();
    let mut resources = resources;
    resources.push(json!({
        "type": "Consent",
        "documentation": "The holder's grants to network members (read-only, rendered from the portal's links); the people come as RelatedPerson in the same Bundle",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": [{"name": "patient", "type": "reference"}],
    }));
    resources.push(json!({
        "type": "AuditEvent",
        "documentation": "Who saw the client's data (R18), for the portal holder only: answered reads, searches and history, newest first, who as the holder knows them and which types; read by the id the search gives",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": [{"name": "patient", "type": "reference"}],
    }));
    resources.retain(|r| r["type"] != "Task");
    resources.push(json!({
        "type": "Task",
        "documentation": "Correction requests (R14, after the HL7 Patient Corrections guide): create by the portal holder only, code from urn:sluis:request (correction, addition, erasure, transfer), focus the resource concerned, description the text; due within 30 days (restriction.period.end); read and search (patient=, required) by the holder as it progresses: requested, then accepted or rejected with statusReason",
        "interaction": [{"code": "read"}, {"code": "search-type"}, {"code": "create"}],
        "searchParam": [{"name": "patient", "type": "reference"}],
    }));
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": state_name,
        "kind": "instance",
        "software": {"name": "sluis", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "sluis: the care dossier as the portal may show it", "url": format!("{base}/fhir")},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "documentation": "Search results contain only what the portal user may see now: consent, the explanation delay and withdrawals are applied. Sorting: _sort=date, -date, _lastUpdated, -_lastUpdated. _summary=count and _total=none are supported.",
            "security": {
                "extension": [{
                    "url": "http://fhir-registry.smart-platform.org/StructureDefinition/oauth-uris",
                    "extension": [{"url": "token", "valueUri": format!("{base}/auth/token")}]
                }],
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
                "description": "SMART Backend Services: a bearer token from POST /auth/token (client credentials with a signed client assertion; system/ scopes, see /.well-known/smart-configuration), and X-Portal-User naming the person"
            },
            "resource": resources,
            "interaction": [{"code": "history-system"}]
        }]
    })
}

/// `GET /fhir/metadata`.
pub async fn metadata(State(state): State<AppState>) -> Response {
    crate::error::fhir_raw(StatusCode::OK, state.capability.clone())
}
