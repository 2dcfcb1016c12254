//! The one place that touches fhirbolt: a structural check of an R4 resource.
//!
//! fhirbolt's generated model is large and slow to compile, so it lives in this small crate
//! with a plain interface (JSON in, a message out). Touching the adapter never recompiles it.
//! It checks structure only (known elements, required elements, JSON types); value formats
//! and required code bindings are checked by the adapter from tables generated from the R4
//! definitions. Nothing here is on the serving path: served JSON is the source's own.

/// Checks that `resource` deserializes as an R4 resource in fhirbolt's strict mode.
///
/// Returns fhirbolt's message when it does not. The JSON is taken by value because fhirbolt
/// consumes it; callers that keep the resource pass a clone.
pub fn check_structure(resource: serde_json::Value) -> Result<(), String> {
    fhirbolt::json::from_json_value::<fhirbolt::model::r4::Resource>(resource, None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::check_structure;
    use serde_json::json;

    #[test]
    fn accepts_a_plain_observation() {
        let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "valueQuantity": {"value": 1.50}});
        assert_eq!(check_structure(obs), Ok(()));
    }

    #[test]
    fn rejects_unknown_elements_and_missing_required_ones() {
        let unknown = json!({"resourceType": "Patient", "foo": 1});
        assert!(check_structure(unknown).unwrap_err().contains("foo"));
        let missing = json!({"resourceType": "Observation", "code": {"text": "x"}});
        assert!(check_structure(missing).unwrap_err().contains("status"));
    }

    #[test]
    fn rejects_unknown_resource_types() {
        assert!(check_structure(json!({"resourceType": "Nope"})).is_err());
    }
}
