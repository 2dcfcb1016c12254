//! Checking a resource before anything is stored: fhirbolt's structural check and the
//! adapter's checks of values and required codes, reported per entry and element.

use crate::error::Detail;
use crate::fhir::validate;
use serde_json::Value;

/// The problems of one resource, with paths under `prefix` (e.g. `Bundle.entry[3].resource`).
pub fn check(resource: &Value, prefix: &str) -> Vec<Detail> {
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource");
    let place = |path: &str| -> String {
        let rest = path.strip_prefix(resource_type).unwrap_or(path);
        if prefix.is_empty() {
            format!("{resource_type}{rest}")
        } else {
            format!("{prefix}{rest}")
        }
    };
    let mut details: Vec<Detail> = validate::check_resource(resource)
        .into_iter()
        .map(|issue| Detail {
            expression: Some(place(&issue.path)),
            message: issue.message,
        })
        .collect();
    if details.is_empty()
        && let Err(message) = sluis_r4::check_structure(resource.clone())
    {
        details.push(Detail {
            expression: Some(place(resource_type)),
            message: format!("not a valid R4 {resource_type}: {message}"),
        });
    }
    details
}
