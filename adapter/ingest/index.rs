//! What ingest reads out of a resource to store, map and search it: the client it belongs to,
//! search values of the indexed parameters, the references it makes, and the facts mapping rules
//! look at. Computed once per version and written beside it; nothing is extracted at search time.

use crate::fhir::definitions::{self, ParamType};
use crate::fhir::path::{self, Node};
use crate::fhir::reference::{in_compartment, parse_reference};
use crate::search::dates::{self, OPEN_HI, OPEN_LO, Range};
use crate::search::{self, DATE_PARAMS, TOKEN_PARAMS};
use crate::store::resources::SearchValues;
use serde_json::Value;

/// The facts of one resource version: what the store keeps to search and serve it (`values`),
/// and what mapping rules and the delay look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Indexed {
    pub values: SearchValues,
    pub profiles: Vec<String>,
    /// Status `entered-in-error` (also as verificationStatus): withdrawn from the portal.
    pub entered_in_error: bool,
    /// `meta.tag` codes as `(system, code)`.
    pub tags: Vec<(String, String)>,
}

impl Indexed {
    /// The `(system, code)` pairs of one token parameter.
    pub fn tokens_of(&self, param: &str) -> Vec<(String, String)> {
        self.values.tokens_of(param)
    }

    /// The codes rules match as "code": the `code` parameter, else `type`.
    pub fn rule_codes(&self, resource_type: &str) -> Vec<(String, String)> {
        if definitions::search_param(resource_type, "code").is_some() {
            self.tokens_of("code")
        } else {
            self.tokens_of("type")
        }
    }
}

/// Reads the indexed facts of a resource whose references are already resolved.
pub fn index(resource_type: &str, id: &str, resource: &Value) -> Indexed {
    let mut out = SearchValues {
        sort_date: i64::MAX,
        ..Default::default()
    };
    for supported in search::supported_params(resource_type) {
        let Some(def) = supported.def else { continue };
        match def.ty {
            ParamType::Token if TOKEN_PARAMS.contains(&def.name) => {
                for p in def.paths {
                    for node in path::evaluate(resource, p) {
                        push_tokens(&mut out.tokens, def.name, &node);
                    }
                }
            }
            ParamType::Date if DATE_PARAMS.contains(&def.name) => {
                for p in def.paths {
                    for node in path::evaluate(resource, p) {
                        if let Some(range) = date_range(&node) {
                            out.dates.push((def.name, range.lo, range.hi));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let meta = resource.get("meta");
    for profile in meta
        .and_then(|m| m.get("profile"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        out.tokens
            .push(("_profile", String::new(), profile.to_string()));
    }
    out.tokens.sort();
    out.tokens.dedup();
    out.dates.sort();
    out.dates.dedup();
    out.sort_date = out
        .dates
        .iter()
        .filter(|(p, _, _)| *p == "date")
        .map(|(_, lo, _)| *lo)
        .min()
        .unwrap_or(i64::MAX);
    out.patient_id = owner(resource_type, id, resource);
    collect_refs(resource, &mut out.refs, &mut String::new());
    out.refs.retain(|(ty, _, _)| !in_compartment(ty));
    out.refs.sort();
    out.refs.dedup();
    let profiles = meta
        .and_then(|m| m.get("profile"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let tags = meta
        .and_then(|m| m.get("tag"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some((
                        t.get("system")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        t.get("code")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Indexed {
        values: out,
        profiles,
        entered_in_error: is_entered_in_error(resource),
        tags,
    }
}

fn push_tokens(
    out: &mut Vec<(&'static str, String, String)>,
    param: &'static str,
    node: &Node<'_>,
) {
    let v = node.value;
    let text = |key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    match node.ty {
        "CodeableConcept" => {
            for coding in v
                .get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(code) = coding.get("code").and_then(Value::as_str) {
                    let system = coding.get("system").and_then(Value::as_str).unwrap_or("");
                    out.push((param, system.to_string(), code.to_string()));
                }
            }
        }
        "Coding" => {
            if let Some(code) = v.get("code").and_then(Value::as_str) {
                out.push((param, text("system"), code.to_string()));
            }
        }
        "Identifier" => {
            if let Some(value) = v.get("value").and_then(Value::as_str) {
                out.push((param, text("system"), value.to_string()));
            }
        }
        "ContactPoint" => {
            if let Some(value) = v.get("value").and_then(Value::as_str) {
                out.push((param, String::new(), value.to_string()));
            }
        }
        _ => match v {
            Value::String(s) => out.push((param, String::new(), s.clone())),
            Value::Bool(b) => out.push((param, String::new(), b.to_string())),
            _ => {}
        },
    }
}

/// The range of a date-like node: date, dateTime, instant, Period or Timing.
fn date_range(node: &Node<'_>) -> Option<Range> {
    let v = node.value;
    match node.ty {
        "date" | "dateTime" | "instant" => dates::parse(v.as_str()?),
        "Period" => {
            let start = v
                .get("start")
                .and_then(Value::as_str)
                .and_then(dates::parse);
            let end = v.get("end").and_then(Value::as_str).and_then(dates::parse);
            if start.is_none() && end.is_none() {
                return None;
            }
            Some(Range {
                lo: start.map_or(OPEN_LO, |r| r.lo),
                hi: end.map_or(OPEN_HI, |r| r.hi),
            })
        }
        "Timing" => {
            let events = v
                .get("event")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str().and_then(dates::parse));
            let bounds = v
                .get("repeat")
                .and_then(|r| r.get("boundsPeriod"))
                .map(|p| Node {
                    value: p,
                    ty: "Period",
                })
                .and_then(|n| date_range(&n));
            events.chain(bounds).reduce(|a, b| Range {
                lo: a.lo.min(b.lo),
                hi: a.hi.max(b.hi),
            })
        }
        _ => None,
    }
}

/// The client a resource belongs to: itself for a Patient; otherwise the first Patient that
/// its patient-compartment parameters name, in the order of the R4 CompartmentDefinition.
fn owner(resource_type: &str, id: &str, resource: &Value) -> Option<String> {
    if resource_type == "Patient" {
        return Some(id.to_string());
    }
    let params = definitions::patient_compartment(resource_type)?;
    for name in params {
        let Some(def) = definitions::search_param(resource_type, name) else {
            continue;
        };
        for p in def.paths {
            for node in path::evaluate(resource, p) {
                let reference = node.value.get("reference").and_then(Value::as_str);
                if let Some((ty, target)) = reference.and_then(parse_reference)
                    && ty == "Patient"
                {
                    return Some(target.to_string());
                }
            }
        }
    }
    None
}

/// Every literal reference in the resource (contained resources' references included), with
/// the path of element names it sits in; `path` is the path so far (one buffer for the walk).
fn collect_refs(value: &Value, out: &mut Vec<(String, String, String)>, path: &mut String) {
    match value {
        Value::Object(map) => {
            if !path.is_empty()
                && let Some(Value::String(r)) = map.get("reference")
                && let Some((ty, id)) = parse_reference(r)
            {
                out.push((ty.to_string(), id.to_string(), path.clone()));
            }
            for (key, v) in map {
                if key == "reference" || !(v.is_object() || v.is_array()) {
                    continue;
                }
                let len = path.len();
                if len > 0 {
                    path.push('.');
                }
                path.push_str(key.strip_prefix('_').unwrap_or(key));
                collect_refs(v, out, path);
                path.truncate(len);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out, path)),
        _ => {}
    }
}

fn is_entered_in_error(resource: &Value) -> bool {
    if resource.get("status").and_then(Value::as_str) == Some("entered-in-error") {
        return true;
    }
    resource
        .get("verificationStatus")
        .and_then(|v| v.get("coding"))
        .and_then(Value::as_array)
        .is_some_and(|codings| {
            codings
                .iter()
                .any(|c| c.get("code").and_then(Value::as_str) == Some("entered-in-error"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_observation_gives_its_client_codes_dates_and_references() {
        let obs = json!({
            "resourceType": "Observation", "id": "o1", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": "Patient/p1"},
            "encounter": {"reference": "Encounter/e1"},
            "performer": [{"reference": "Practitioner/dr"}, {"reference": "Organization/org"}],
            "hasMember": [{"reference": "Observation/o2"}],
            "effectiveDateTime": "2026-11-20T08:00:00+01:00",
            "valueQuantity": {"value": 64.50, "unit": "kg"}
        });
        let ix = index("Observation", "o1", &obs);
        assert_eq!(ix.values.patient_id.as_deref(), Some("p1"));
        assert!(
            ix.values
                .tokens
                .contains(&("code", "http://loinc.org".into(), "29463-7".into()))
        );
        assert!(
            ix.values
                .tokens
                .contains(&("status", String::new(), "final".into()))
        );
        assert_eq!(ix.tokens_of("category")[0].1, "vital-signs");
        assert_eq!(ix.values.dates.len(), 1);
        assert_eq!(ix.values.sort_date, ix.values.dates[0].1);
        // Only references to resources outside the patient compartment are kept: the
        // Patient, the Encounter and the other Observation are never looked up by them.
        assert_eq!(
            ix.values.refs,
            vec![
                ("Organization".into(), "org".into(), "performer".into()),
                ("Practitioner".into(), "dr".into(), "performer".into())
            ]
        );
        let p = json!({"resourceType": "Patient", "id": "p1",
            "contact": [{"organization": {"reference": "Organization/o"}}],
            "_birthDate": {"extension": [{"url": "x", "valueReference": {"reference": "Location/l"}}]},
            "managingOrganization": {"reference": "Organization/o"}});
        assert_eq!(
            index("Patient", "p1", &p).values.refs,
            vec![
                (
                    "Location".into(),
                    "l".into(),
                    "birthDate.extension.valueReference".into()
                ),
                (
                    "Organization".into(),
                    "o".into(),
                    "contact.organization".into()
                ),
                (
                    "Organization".into(),
                    "o".into(),
                    "managingOrganization".into()
                ),
            ]
        );
        assert!(!ix.entered_in_error);
    }

    #[test]
    fn entered_in_error_is_seen_in_status_and_verification_status() {
        let cond = json!({"resourceType": "Condition", "verificationStatus": {"coding": [{"code": "entered-in-error"}]}});
        assert!(is_entered_in_error(&cond));
    }
}
