//! The one place that touches fhirbolt: a structural check of an R4 resource.
//!
//! fhirbolt's generated model is large and slow to compile, so it lives in this small crate
//! with a plain interface (JSON in, a message out). Touching the adapter never recompiles it.
//! It checks structure only (known elements, required elements, JSON types); value formats
//! and required code bindings are checked by the adapter from tables generated from the R4
//! definitions. Nothing here is on the serving path: served JSON is the source's own.
//!
//! fhirbolt's verdict is remembered by the resource's shape ([`shape`]): a record system
//! sends the same kinds of resources, built by the same code, thousands of times, and fhirbolt
//! is the costliest step of a push. A resource whose shape has passed before passes without
//! fhirbolt; every other resource, and every one that fails, goes through fhirbolt itself.

mod shape;

pub use shape::shape;

use rustc_hash::FxHashSet;
use std::sync::{LazyLock, RwLock};

/// At most this many shapes are remembered (a few hundred bytes each); when they are full
/// the memory starts again empty.
const REMEMBERED: usize = 4096;

/// The shapes fhirbolt has passed.
static PASSED: LazyLock<RwLock<FxHashSet<Box<[u8]>>>> = LazyLock::new(Default::default);

/// Checks that `resource` deserializes as an R4 resource in fhirbolt's strict mode, or has
/// the shape of one that did.
///
/// Returns fhirbolt's message when it does not. The JSON is taken by value because fhirbolt
/// consumes it; callers that keep the resource pass a clone.
pub fn check_structure(resource: serde_json::Value) -> Result<(), String> {
    let shape = shape(&resource);
    let known = PASSED
        .read()
        .map(|passed| passed.contains(shape.as_slice()))
        .unwrap_or(false);
    if known {
        return Ok(());
    }
    check_with_fhirbolt(resource)?;
    if let Ok(mut passed) = PASSED.write() {
        if passed.len() >= REMEMBERED {
            passed.clear();
        }
        passed.insert(shape.into_boxed_slice());
    }
    Ok(())
}

/// [`check_structure`] by fhirbolt itself, remembering nothing.
pub fn check_with_fhirbolt(resource: serde_json::Value) -> Result<(), String> {
    fhirbolt::json::from_json_value::<fhirbolt::model::r4::Resource>(resource, None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::{check_structure, check_with_fhirbolt};
    use serde_json::{Value, json};

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

    /// Pairs of resources of which fhirbolt passes the first and refuses the second, although
    /// they differ only in a value: the second must be refused after the first has passed.
    fn passed_then_refused() -> Vec<(Value, Value)> {
        let patient = |active: Value| json!({"resourceType": "Patient", "active": active});
        let births = |n: Value| json!({"resourceType": "Patient", "multipleBirthInteger": n});
        // Attachment.size is an unsignedInt.
        let size = |n: Value| {
            json!({"resourceType": "DocumentReference", "status": "current",
                "content": [{"attachment": {"size": n}}]})
        };
        let contained = |ty: &str| {
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "contained": [{"resourceType": ty, "gender": "male"}]})
        };
        vec![
            // A boolean written as a string is read by fhirbolt when it says true or false.
            (patient(json!("true")), patient(json!("yes"))),
            (patient(json!("false")), patient(json!("True"))),
            (patient(json!(true)), patient(json!(1))),
            // So is an integer written as a string.
            (births(json!("2")), births(json!("2.5"))),
            (births(json!("2")), births(json!("99999999999"))),
            (births(json!("-2")), births(json!("two"))),
            (births(json!(2)), births(json!(2.5))),
            (births(json!(2)), births(json!("2.5"))),
            // An integer must fit its element's type: i32 here, u32 for Attachment.size.
            (
                births(json!(2_147_483_647)),
                births(json!(2_147_483_648u64)),
            ),
            (
                births(json!(-2_147_483_648i64)),
                births(json!(-2_147_483_649i64)),
            ),
            (size(json!(5)), size(json!(-5))),
            (size(json!(4_294_967_295u64)), size(json!(4_294_967_296u64))),
            (size(json!(5)), size(json!(5.0))),
            (size(json!("5")), size(json!("-5"))),
            // The type of a contained resource is in its value.
            (contained("Patient"), contained("Device")),
        ]
    }

    #[test]
    fn a_remembered_shape_never_passes_what_fhirbolt_refuses() {
        for (passes, refused) in passed_then_refused() {
            assert_eq!(check_with_fhirbolt(passes.clone()), Ok(()), "{passes}");
            assert!(check_with_fhirbolt(refused.clone()).is_err(), "{refused}");
            assert_eq!(check_structure(passes.clone()), Ok(()), "{passes}");
            assert_eq!(check_structure(passes), Ok(()));
            assert!(check_structure(refused.clone()).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_refused_resource_is_refused_every_time_with_fhirbolts_message() {
        let unknown = json!({"resourceType": "Patient", "bar": true});
        let first = check_structure(unknown.clone()).unwrap_err();
        assert_eq!(check_structure(unknown.clone()).unwrap_err(), first);
        assert_eq!(check_with_fhirbolt(unknown).unwrap_err(), first);
    }
}
