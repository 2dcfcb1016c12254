//! Checking a resource before anything is stored: the adapter's checks of structure, values
//! and required codes (before ids and references are resolved), and fhirbolt's structural
//! check of the body as it will be stored (after), reported per entry and element.

use crate::error::Detail;
use crate::fhir::validate;
use serde_json::Value;

/// The adapter's own checks of one resource, with paths under `prefix`
/// (e.g. `Bundle.entry[3].resource`).
pub fn check(resource: &Value, prefix: &str) -> Vec<Detail> {
    let resource_type = type_of(resource);
    validate::check_resource(resource)
        .into_iter()
        .map(|issue| Detail {
            expression: Some(place(resource_type, &issue.path, prefix)),
            message: issue.message,
        })
        .collect()
}

/// fhirbolt's structural check of a body that passed [`check`], as it is stored: its
/// references resolved and its `meta` kept apart (which [`check`] has seen). The body is
/// taken by value, as fhirbolt consumes it: ingest serializes the body first and hands it over
/// instead of copying the tree.
///
/// `prefix` is asked for only when there is a problem.
pub fn check_structure(
    body: Value,
    resource_type: &str,
    prefix: impl FnOnce() -> String,
) -> Option<Detail> {
    let message = sluis_r4::check_structure(body).err()?;
    Some(Detail {
        expression: Some(place(resource_type, resource_type, &prefix())),
        message: format!("not a valid R4 {resource_type}: {message}"),
    })
}

fn type_of(resource: &Value) -> &str {
    resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource")
}

/// `path` (which starts with the resource type) under `prefix`.
fn place(resource_type: &str, path: &str, prefix: &str) -> String {
    let rest = path.strip_prefix(resource_type).unwrap_or(path);
    if prefix.is_empty() {
        format!("{resource_type}{rest}")
    } else {
        format!("{prefix}{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn problems_are_placed_under_the_entry() {
        let obs = json!({"resourceType": "Observation", "code": {"text": "x"}});
        let details = check(&obs, "Bundle.entry[3].resource");
        assert_eq!(
            details[0].expression.as_deref(),
            Some("Bundle.entry[3].resource.status")
        );
        let alone = check(&obs, "");
        assert_eq!(alone[0].expression.as_deref(), Some("Observation.status"));
    }

    #[test]
    fn fhirbolt_reports_what_it_refuses_under_the_entry() {
        let unknown = json!({"resourceType": "Patient", "foo": 1});
        let detail = check_structure(unknown, "Patient", || "Bundle.entry[0].resource".into())
            .expect("fhirbolt refuses an unknown element");
        assert_eq!(
            detail.expression.as_deref(),
            Some("Bundle.entry[0].resource")
        );
        assert!(detail.message.starts_with("not a valid R4 Patient: "));
        assert!(detail.message.contains("foo"));
        let fine = json!({"resourceType": "Patient", "gender": "female"});
        assert!(check_structure(fine, "Patient", String::new).is_none());
    }
}
