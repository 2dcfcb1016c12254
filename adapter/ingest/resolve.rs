//! Ids and references, resolved as a FHIR server does for a transaction: a POST without an id
//! gets one, `ifNoneExist` finds a stored match, `urn:uuid:` references point at the entry
//! they name, and conditional references (`Organization?identifier=…`) at the one resource
//! they match, in the Bundle or in the store.

use super::entries::{Entry, Method, Mode, entry_path};
use super::{Ready, index};
use crate::error::{ApiError, ApiResult, Detail};
use crate::search::params::{self, Counts, Query};
use crate::search::sql;
use crate::store::db::Tx;
use axum::http::StatusCode;
use serde_json::Value;
use std::collections::HashMap;

const COUNTS: Counts = Counts { default: 2, max: 2 };

fn problem(mode: Mode, index: usize, status: StatusCode, message: String) -> ApiError {
    let expression = entry_path(mode, index);
    let reason = if status == StatusCode::PRECONDITION_FAILED {
        crate::error::Reason::Conflict
    } else {
        crate::error::Reason::InvalidResource
    };
    ApiError::new(status, reason, message.clone()).with_details(vec![Detail {
        message,
        expression: (!expression.is_empty()).then_some(expression),
    }])
}

/// Parses `Type?criteria` into a query over the token parameters and `_id`.
fn criteria(resource_type: &str, query: &str) -> Result<Query, String> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.is_empty() {
        return Err("conditional criteria are empty".into());
    }
    let q = params::parse(resource_type, &pairs, COUNTS).map_err(|e| e.message)?;
    if !q.dates.is_empty() || !q.last_updated.is_empty() || !q.patients.is_empty() {
        return Err("conditional criteria may use _id and token parameters (identifier, code, status, …) only".into());
    }
    Ok(q)
}

/// Whether an entry's resource matches token/_id criteria (for matches inside the Bundle).
fn matches_in_bundle(q: &Query, resource_type: &str, id: &str, resource: &Value) -> bool {
    if q.resource_type != resource_type {
        return false;
    }
    if !q.ids.iter().all(|ids| ids.iter().any(|i| i == id)) {
        return false;
    }
    let indexed = index::index(resource_type, id, resource);
    q.tokens.iter().all(|f| {
        f.values.iter().any(|v| {
            indexed.values.tokens.iter().any(|(p, s, c)| {
                *p == f.param
                    && v.code.as_ref().is_none_or(|code| code == c)
                    && v.system.as_ref().is_none_or(|system| system == s)
            })
        })
    })
}

/// Whether resolving these entries reads the store: an `ifNoneExist`, or a conditional
/// reference (`Type?criteria`). Without either, [`resolve`] needs no transaction.
pub(super) fn needs_store(entries: &[Entry]) -> bool {
    entries.iter().any(|e| {
        (e.method == Method::Create && e.if_none_exist.is_some())
            || e.resource.as_ref().is_some_and(has_conditional)
    })
}

/// Whether `found` holds for some `reference` string in `value`; the walk stops at the first.
/// Names are compared as the walk passes them (no map lookup per element: this walk runs
/// over every element of a push, on the request's thread).
fn any_reference(value: &Value, found: &mut impl FnMut(&str) -> bool) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(key, v)| match v {
            Value::String(r) if key == "reference" => found(r),
            _ => any_reference(v, found),
        }),
        Value::Array(items) => items.iter().any(|v| any_reference(v, found)),
        _ => false,
    }
}

fn has_conditional(value: &Value) -> bool {
    any_reference(value, &mut is_conditional)
}

/// The transaction lookups run in; `None` only where [`needs_store`] said none are needed.
fn lookup<'a>(tx: &'a mut Option<&mut Tx>) -> ApiResult<&'a mut Tx> {
    tx.as_deref_mut().ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!(
            "ingest: a lookup was needed without a transaction"
        ))
    })
}

/// Resolves ids and references of all entries; nothing is written here. `tx` may be `None`
/// when [`needs_store`] is false.
pub(super) async fn resolve(
    mut tx: Option<&mut Tx>,
    source: &str,
    mode: Mode,
    entries: Vec<Entry>,
) -> ApiResult<Vec<Ready>> {
    let mut ready = Vec::with_capacity(entries.len());
    let mut by_url: HashMap<String, String> = HashMap::new();
    for e in entries {
        let (resource_type, id) = match e.target.clone() {
            Some(t) => t,
            None => {
                let ty = e
                    .resource
                    .as_ref()
                    .and_then(|r| r.get("resourceType"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                (ty, uuid::Uuid::new_v4().to_string())
            }
        };
        let mut matched_existing = false;
        let mut id = id;
        if e.method == Method::Create
            && let Some(query) = &e.if_none_exist
        {
            let query = query.split_once('?').map_or(query.as_str(), |(_, q)| q);
            let q = criteria(&resource_type, query).map_err(|m| {
                problem(
                    mode,
                    e.index,
                    StatusCode::BAD_REQUEST,
                    format!("ifNoneExist: {m}"),
                )
            })?;
            let found = sql::current_matches(lookup(&mut tx)?, source, &q, 2).await?;
            match found.as_slice() {
                [] => {}
                [one] => {
                    id = one.clone();
                    matched_existing = true;
                }
                _ => {
                    return Err(problem(
                        mode,
                        e.index,
                        StatusCode::PRECONDITION_FAILED,
                        format!("ifNoneExist `{query}` matches more than one {resource_type}"),
                    ));
                }
            }
        }
        if let Some(url) = &e.full_url {
            by_url.insert(url.clone(), format!("{resource_type}/{id}"));
        }
        let mut body = e.resource;
        if let Some(Value::Object(map)) = &mut body
            && map.get("id").and_then(Value::as_str) != Some(id.as_str())
        {
            // Right after resourceType, where FHIR JSON writers put it.
            map.shift_remove("id");
            map.shift_insert(1.min(map.len()), "id".into(), Value::String(id.clone()));
        }
        ready.push((
            e.index,
            Ready {
                entry_index: e.index,
                resource_type,
                id,
                body: if e.method == Method::Delete {
                    None
                } else {
                    body
                },
                matched_existing,
            },
        ));
    }

    // References: first collect what needs a lookup, then rewrite.
    let mut conditional: HashMap<String, Option<String>> = HashMap::new();
    for (_, r) in &ready {
        if let Some(body) = &r.body {
            collect_conditional(body, &mut conditional);
        }
    }
    for (reference, resolved) in conditional.iter_mut() {
        let index = ready
            .iter()
            .find(|(_, r)| r.body.as_ref().is_some_and(|b| mentions(b, reference)))
            .map_or(0, |(i, _)| *i);
        let Some((ty, query)) = reference.split_once('?') else {
            continue;
        };
        if !crate::fhir::definitions::is_resource_type(ty) {
            return Err(problem(
                mode,
                index,
                StatusCode::BAD_REQUEST,
                format!("reference `{reference}`: {ty} is not a resource type"),
            ));
        }
        let q = criteria(ty, query).map_err(|m| {
            problem(
                mode,
                index,
                StatusCode::BAD_REQUEST,
                format!("reference `{reference}`: {m}"),
            )
        })?;
        let mut found: Vec<String> = ready
            .iter()
            .filter(|(_, r)| {
                r.body
                    .as_ref()
                    .is_some_and(|b| matches_in_bundle(&q, &r.resource_type, &r.id, b))
            })
            .map(|(_, r)| r.id.clone())
            .collect();
        for id in sql::current_matches(lookup(&mut tx)?, source, &q, 2).await? {
            if !found.contains(&id) {
                found.push(id);
            }
        }
        match found.as_slice() {
            [one] => *resolved = Some(format!("{ty}/{one}")),
            [] => {
                return Err(problem(
                    mode,
                    index,
                    StatusCode::BAD_REQUEST,
                    format!("conditional reference `{reference}` matches no resource"),
                ));
            }
            _ => {
                return Err(problem(
                    mode,
                    index,
                    StatusCode::PRECONDITION_FAILED,
                    format!("conditional reference `{reference}` matches more than one resource"),
                ));
            }
        }
    }
    let mut out = Vec::with_capacity(ready.len());
    for (index, mut r) in ready {
        if let Some(body) = &mut r.body {
            rewrite(body, &by_url, &conditional).map_err(|reference| {
                problem(
                    mode,
                    index,
                    StatusCode::BAD_REQUEST,
                    format!("reference `{reference}` names no entry of this Bundle"),
                )
            })?;
        }
        debug_assert_eq!(index, r.entry_index);
        out.push(r);
    }
    Ok(out)
}

fn collect_conditional(value: &Value, out: &mut HashMap<String, Option<String>>) {
    any_reference(value, &mut |r| {
        if is_conditional(r) {
            out.entry(r.to_string()).or_insert(None);
        }
        false
    });
}

/// `Type?criteria` (the criteria may hold URLs; the part before `?` may not).
fn is_conditional(reference: &str) -> bool {
    match reference.split_once('?') {
        Some((ty, _)) => !ty.is_empty() && ty.bytes().all(|b| b.is_ascii_alphabetic()),
        None => false,
    }
}

fn mentions(value: &Value, reference: &str) -> bool {
    any_reference(value, &mut |r| r == reference)
}

/// Replaces references to entries (by fullUrl) and conditional references; an unresolved
/// `urn:` reference is an error (returned as the reference text).
fn rewrite(
    value: &mut Value,
    by_url: &HashMap<String, String>,
    conditional: &HashMap<String, Option<String>>,
) -> Result<(), String> {
    match value {
        Value::Object(map) => map.iter_mut().try_for_each(|(key, v)| match v {
            Value::String(r) if key == "reference" => {
                if let Some(target) = by_url.get(r.as_str()) {
                    *r = target.clone();
                } else if let Some(Some(target)) = conditional.get(r.as_str()) {
                    *r = target.clone();
                } else if r.starts_with("urn:uuid:") || r.starts_with("urn:oid:") {
                    return Err(r.clone());
                }
                Ok(())
            }
            _ => rewrite(v, by_url, conditional),
        }),
        Value::Array(items) => items
            .iter_mut()
            .try_for_each(|v| rewrite(v, by_url, conditional)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_rewritten_and_unknown_urns_refused() {
        let by_url = HashMap::from([("urn:uuid:1".to_string(), "Patient/p1".to_string())]);
        let conditional = HashMap::from([(
            "Organization?identifier=x|1".to_string(),
            Some("Organization/o1".to_string()),
        )]);
        let mut obs = json!({"subject": {"reference": "urn:uuid:1"},
            "performer": [{"reference": "Organization?identifier=x|1"}, {"reference": "Practitioner/d"}]});
        rewrite(&mut obs, &by_url, &conditional).unwrap();
        assert_eq!(obs["subject"]["reference"], "Patient/p1");
        assert_eq!(obs["performer"][0]["reference"], "Organization/o1");
        assert_eq!(obs["performer"][1]["reference"], "Practitioner/d");
        let mut bad = json!({"subject": {"reference": "urn:uuid:2"}});
        assert_eq!(
            rewrite(&mut bad, &by_url, &conditional),
            Err("urn:uuid:2".into())
        );
        assert!(is_conditional("Patient?identifier=http://x.org/bsn|1"));
        assert!(!is_conditional("http://x.org/fhir/Patient?x=1"));
        assert!(!is_conditional("#contained"));
    }

    #[test]
    fn only_ifnoneexist_and_conditional_references_need_the_store() {
        let entry = |method, if_none_exist: Option<&str>, resource: Value| Entry {
            index: 0,
            full_url: Some("urn:uuid:1".into()),
            method,
            target: None,
            if_none_exist: if_none_exist.map(str::to_string),
            resource: Some(resource),
        };
        let plain = json!({"resourceType": "Observation",
            "subject": {"reference": "urn:uuid:2"}, "performer": [{"reference": "Practitioner/d"}]});
        assert!(!needs_store(&[entry(Method::Create, None, plain.clone())]));
        assert!(needs_store(&[
            entry(Method::Update, None, plain.clone()),
            entry(Method::Create, Some("identifier=x|1"), plain.clone()),
        ]));
        let nested = json!({"resourceType": "Observation", "performer": [
            {"reference": "Practitioner/d"}, {"reference": "Organization?identifier=x|1"}]});
        assert!(needs_store(&[entry(Method::Update, None, nested)]));
    }
}
