//! What was sent, as a list of entries: a `transaction` or `batch` Bundle split into its
//! entries, or one resource as a single entry. Bundles are read as plain JSON (fhirbolt's
//! typed Bundle rejects ordinary input); each entry's resource is checked on its own later.

use crate::error::Detail;
use crate::fhir::definitions;
use crate::ingest::index::is_fhir_id;
use serde_json::Value;

/// The kind of write an entry asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `POST`: create; the source's id is kept when the resource has one.
    Create,
    /// `PUT Type/id`: create or update under that id.
    Update,
    /// `DELETE Type/id`: withdraw.
    Delete,
}

/// One entry to ingest.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its position in the Bundle (0 for a single resource).
    pub index: usize,
    pub full_url: Option<String>,
    pub method: Method,
    /// `(type, id)` from the request URL (PUT/DELETE) or the resource.
    pub target: Option<(String, String)>,
    pub if_none_exist: Option<String>,
    pub resource: Option<Value>,
}

/// How the entries are to be processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// All or nothing.
    Transaction,
    /// Each entry on its own.
    Batch,
    /// One resource, not in a Bundle.
    Single,
}

/// Where an entry's problems are reported: the FHIRPath of the entry.
pub fn entry_path(mode: Mode, index: usize) -> String {
    match mode {
        Mode::Single => String::new(),
        _ => format!("Bundle.entry[{index}]"),
    }
}

fn detail(path: String, message: impl Into<String>) -> Detail {
    Detail {
        message: message.into(),
        expression: (!path.is_empty()).then_some(path),
    }
}

/// An entry, or why it cannot be read.
pub type Parsed = Result<Entry, Detail>;

/// Splits a pushed body into entries. A Bundle must be a `transaction` or a `batch`; the
/// caller decides what a broken entry means (all or nothing in a transaction).
pub fn split(body: Value) -> Result<(Mode, Vec<Parsed>), Vec<Detail>> {
    let Value::Object(mut map) = body else {
        return Err(vec![detail(String::new(), "the body is not a JSON object")]);
    };
    let Some(resource_type) = map
        .get("resourceType")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(vec![detail(String::new(), "resourceType is missing")]);
    };
    if resource_type != "Bundle" {
        let id = map.get("id").and_then(Value::as_str).map(str::to_string);
        let entry = Entry {
            index: 0,
            full_url: None,
            method: if id.is_some() {
                Method::Update
            } else {
                Method::Create
            },
            target: id.map(|id| (resource_type.clone(), id)),
            if_none_exist: None,
            resource: Some(Value::Object(map)),
        };
        return Ok((Mode::Single, vec![Ok(entry)]));
    }
    let mode = match map.get("type").and_then(Value::as_str) {
        Some("transaction") => Mode::Transaction,
        Some("batch") => Mode::Batch,
        other => {
            return Err(vec![detail(
                "Bundle.type".into(),
                format!(
                    "Bundle.type must be transaction or batch, not {}",
                    other.unwrap_or("missing")
                ),
            )]);
        }
    };
    let entries = match map.remove("entry") {
        None => Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(vec![detail("Bundle.entry".into(), "entry must be a list")]),
    };
    let out = entries
        .into_iter()
        .enumerate()
        .map(|(index, raw)| entry(mode, index, raw))
        .collect();
    Ok((mode, out))
}

fn entry(mode: Mode, index: usize, raw: Value) -> Result<Entry, Detail> {
    let path = entry_path(mode, index);
    let Value::Object(mut e) = raw else {
        return Err(detail(path, "entry is not an object"));
    };
    let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_string);
    let request = e.get("request").cloned().unwrap_or(Value::Null);
    let method_text = request.get("method").and_then(Value::as_str);
    let method = match method_text {
        Some("POST") => Method::Create,
        Some("PUT") => Method::Update,
        Some("DELETE") => Method::Delete,
        Some(other) => {
            return Err(detail(
                format!("{path}.request.method"),
                format!("method {other} is not accepted at ingest; use POST, PUT or DELETE"),
            ));
        }
        None => {
            return Err(detail(
                format!("{path}.request.method"),
                "request.method is missing",
            ));
        }
    };
    let url = request.get("url").and_then(Value::as_str).unwrap_or("");
    let resource = e.remove("resource");
    if method != Method::Delete && !matches!(resource, Some(Value::Object(_))) {
        return Err(detail(
            format!("{path}.resource"),
            "a POST or PUT entry needs a resource",
        ));
    }
    let resource_type = resource
        .as_ref()
        .and_then(|r| r.get("resourceType"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let target = match method {
        Method::Create => {
            let ty = resource_type.clone().unwrap_or_default();
            if !url.is_empty() && url != ty {
                return Err(detail(
                    format!("{path}.request.url"),
                    format!("POST url `{url}` does not name the resource's type {ty}"),
                ));
            }
            let id = resource
                .as_ref()
                .and_then(|r| r.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    full_url
                        .as_deref()
                        .and_then(|u| u.strip_prefix("urn:uuid:"))
                        .filter(|u| is_fhir_id(u))
                        .map(str::to_string)
                });
            id.map(|id| (ty, id))
        }
        Method::Update | Method::Delete => {
            let (ty, id) = parse_type_id(url).ok_or_else(|| {
                detail(
                    format!("{path}.request.url"),
                    format!(
                        "`{url}` is not Type/id (conditional updates and deletes are not supported)"
                    ),
                )
            })?;
            if method == Method::Update {
                if resource_type.as_deref() != Some(ty.as_str()) {
                    return Err(detail(
                        format!("{path}.request.url"),
                        format!(
                            "url names {ty} but the resource is {}",
                            resource_type.unwrap_or_default()
                        ),
                    ));
                }
                let rid = resource
                    .as_ref()
                    .and_then(|r| r.get("id"))
                    .and_then(Value::as_str);
                if rid.is_some_and(|r| r != id) {
                    return Err(detail(
                        format!("{path}.resource.id"),
                        format!(
                            "resource id {} differs from the url's {id}",
                            rid.unwrap_or_default()
                        ),
                    ));
                }
            }
            Some((ty, id))
        }
    };
    let if_none_exist = request
        .get("ifNoneExist")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Entry {
        index,
        full_url,
        method,
        target,
        if_none_exist,
        resource,
    })
}

/// `Type/id` with a known type and a valid id.
pub fn parse_type_id(url: &str) -> Option<(String, String)> {
    let (ty, id) = url.trim_start_matches('/').split_once('/')?;
    (definitions::is_resource_type(ty) && is_fhir_id(id)).then(|| (ty.to_string(), id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_transaction_splits_into_entries() {
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:6d4c0f4e-0000-4000-8000-000000000001",
             "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "id": "o1"}, "request": {"method": "PUT", "url": "Observation/o1"}},
            {"request": {"method": "DELETE", "url": "Observation/o2"}}
        ]});
        let (mode, entries) = split(bundle).unwrap();
        let entries: Vec<Entry> = entries.into_iter().map(Result::unwrap).collect();
        assert_eq!(mode, Mode::Transaction);
        assert_eq!(
            entries[0].target,
            Some((
                "Patient".into(),
                "6d4c0f4e-0000-4000-8000-000000000001".into()
            ))
        );
        assert_eq!(entries[1].method, Method::Update);
        assert_eq!(entries[2].target, Some(("Observation".into(), "o2".into())));
    }

    #[test]
    fn broken_entries_are_named() {
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "GET", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "id": "a"}, "request": {"method": "PUT", "url": "Patient/b"}},
            {"request": {"method": "PUT", "url": "Patient/c"}},
            {"resource": {"resourceType": "Patient"}, "request": {"method": "PUT", "url": "Patient?identifier=x"}},
            "nonsense"
        ]});
        let (_, parsed) = split(bundle).unwrap();
        let paths: Vec<_> = parsed
            .into_iter()
            .map(|p| p.unwrap_err().expression.unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "Bundle.entry[0].request.method",
                "Bundle.entry[1].resource.id",
                "Bundle.entry[2].resource",
                "Bundle.entry[3].request.url",
                "Bundle.entry[4]",
            ]
        );
        assert!(split(json!({"resourceType": "Bundle", "type": "collection"})).is_err());
        assert!(split(json!([1, 2])).is_err());
    }
}
