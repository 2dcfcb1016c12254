//! Evaluation of search-parameter paths ([`ParamPath`]) on resource JSON:
//! walks the segments with the element table, flattening arrays, expanding
//! choice elements, and typing every node it returns.
//!
//! `resolve_is` decides the referenced type from `Reference.reference`
//! (`Patient/1`, `http://x/fhir/Patient/1`, `Patient/1/_history/2`,
//! conditional `Patient?identifier=..`, or `#id` of a contained resource).
//! When the reference does not name a type (`urn:uuid:..`, `urn:oid:..`, or
//! a Reference with only an identifier) `Reference.type` decides if present;
//! otherwise the node is KEPT: such references cannot be told apart without
//! the surrounding Bundle, and a search index had rather over-match.

use super::definitions::{ParamPath, T, owner, static_resource_type};
use serde_json::Value;

/// A value found by a path, with its FHIR type (`"CodeableConcept"`,
/// `"dateTime"`, `"Reference"`, `"BackboneElement"`, or a resource type for
/// nested resources). Primitive nodes are the JSON primitive itself.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub value: &'a serde_json::Value,
    pub ty: &'static str,
}

/// A node plus the owner of its children (if complex).
struct Walk<'a> {
    value: &'a Value,
    ty: &'static str,
    owner: Option<&'static T>,
}

/// Evaluates `path` from the resource root. Returns nothing for a value
/// without a known `resourceType`.
pub fn evaluate<'a>(resource: &'a serde_json::Value, path: &ParamPath) -> Vec<Node<'a>> {
    let Some(rt) = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .and_then(static_resource_type)
    else {
        return Vec::new();
    };
    let mut cur = vec![Walk {
        value: resource,
        ty: rt,
        owner: owner(rt),
    }];
    let last_choice = path.segments.iter().rposition(|s| s.ends_with("[x]"));
    for (i, seg) in path.segments.iter().enumerate() {
        let mut next = Vec::new();
        let only = if Some(i) == last_choice {
            path.only_type
        } else {
            None
        };
        for w in &cur {
            let (Some(t), Some(obj)) = (w.owner, w.value.as_object()) else {
                continue;
            };
            if let Some(name) = seg.strip_suffix("[x]") {
                let Some(e) = t.element(name).filter(|e| e.choice()) else {
                    continue;
                };
                for (k, v) in obj {
                    if let Some(ty) = e.choice_type(k)
                        && only.is_none_or(|o| o == ty)
                    {
                        push_flat(&mut next, v, ty, e.child_owner(ty));
                    }
                }
            } else if let Some((e, ty)) = t.lookup(seg)
                && let Some(v) = obj.get(*seg)
            {
                push_flat(&mut next, v, ty, e.child_owner(ty));
            }
        }
        cur = next;
    }
    cur.into_iter()
        .filter(|w| match path.resolve_is {
            Some(target) => w.ty == "Reference" && refers_to(resource, w.value, target),
            None => true,
        })
        .map(|w| Node {
            value: w.value,
            ty: w.ty,
        })
        .collect()
}

fn push_flat<'a>(
    out: &mut Vec<Walk<'a>>,
    v: &'a Value,
    ty: &'static str,
    owner: Option<&'static T>,
) {
    let mut one = |v: &'a Value| {
        if v.is_null() {
            return;
        }
        if ty == "Resource" {
            // A nested resource: type it by its own resourceType.
            let rt = v
                .get("resourceType")
                .and_then(Value::as_str)
                .and_then(static_resource_type);
            out.push(Walk {
                value: v,
                ty: rt.unwrap_or("Resource"),
                owner: rt.and_then(super::definitions::owner),
            });
        } else {
            out.push(Walk {
                value: v,
                ty,
                owner,
            });
        }
    };
    match v {
        Value::Array(items) => items.iter().for_each(&mut one),
        _ => one(v),
    }
}

/// Whether a Reference (may) point to a resource of type `target`.
fn refers_to(root: &Value, reference: &Value, target: &str) -> bool {
    let by_ref = reference
        .get("reference")
        .and_then(Value::as_str)
        .and_then(|r| referenced_type(root, r));
    if let Some(ty) = by_ref {
        return ty == target;
    }
    match reference.get("type").and_then(Value::as_str) {
        Some(ty) => ty.rsplit('/').next() == Some(target),
        None => true,
    }
}

/// The resource type a reference string names, if it names one.
pub(crate) fn referenced_type<'a>(root: &'a Value, r: &'a str) -> Option<&'a str> {
    if let Some(id) = r.strip_prefix('#') {
        return root
            .get("contained")?
            .as_array()?
            .iter()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(id))?
            .get("resourceType")?
            .as_str();
    }
    if r.starts_with("urn:") {
        return None;
    }
    if let Some((before, _)) = r.split_once('?') {
        let ty = before.rsplit('/').next()?;
        return static_resource_type(ty);
    }
    let r = r.split_once("/_history/").map_or(r, |(a, _)| a);
    let mut parts = r.rsplit('/');
    let _id = parts.next()?;
    static_resource_type(parts.next()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::definitions::search_param;
    use serde_json::json;

    fn eval<'a>(r: &'a Value, ty: &str, name: &str) -> Vec<Node<'a>> {
        let p = search_param(ty, name).unwrap();
        p.paths.iter().flat_map(|pp| evaluate(r, pp)).collect()
    }

    #[test]
    fn choice_and_arrays() {
        let o = json!({
            "resourceType": "Observation",
            "status": "final",
            "category": [{"text": "a"}, {"text": "b"}],
            "code": {"text": "c"},
            "effectivePeriod": {"start": "2020"},
            "component": [
                {"code": {"text": "x"}, "valueQuantity": {"value": 1}},
                {"code": {"text": "y"}, "valueString": "s"}
            ]
        });
        let d = eval(&o, "Observation", "date");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].ty, "Period");
        let c = eval(&o, "Observation", "category");
        assert_eq!(c.len(), 2);
        let cc = eval(&o, "Observation", "component-code");
        assert_eq!(cc.len(), 2);
        let cvq = eval(&o, "Observation", "component-value-quantity");
        assert_eq!(cvq.len(), 1);
        assert_eq!(cvq[0].ty, "Quantity");
        let status = eval(&o, "Observation", "status");
        assert_eq!(status[0].ty, "code");
        assert_eq!(status[0].value, "final");
        assert!(eval(&o, "Observation", "value-quantity").is_empty());
        assert!(
            evaluate(
                &json!({"x": 1}),
                &search_param("Observation", "code").unwrap().paths[0]
            )
            .is_empty()
        );
    }

    #[test]
    fn resolve_is_filters_references() {
        let o = json!({
            "resourceType": "Appointment",
            "status": "booked",
            "contained": [{"resourceType": "Patient", "id": "p"}],
            "participant": [
                {"actor": {"reference": "Patient/1"}, "status": "accepted"},
                {"actor": {"reference": "http://x/fhir/Practitioner/2/_history/3"}, "status": "accepted"},
                {"actor": {"reference": "https://x/fhir/Patient/3"}, "status": "accepted"},
                {"actor": {"reference": "#p"}, "status": "accepted"},
                {"actor": {"reference": "urn:uuid:a76d9bbf-f293-4fb7-ad4c-2851cac77162"}, "status": "accepted"},
                {"actor": {"reference": "urn:uuid:b76d9bbf-f293-4fb7-ad4c-2851cac77162", "type": "Location"}, "status": "accepted"},
                {"actor": {"reference": "Patient?identifier=x|1"}, "status": "accepted"},
                {"actor": {"identifier": {"value": "x"}, "type": "Patient"}, "status": "accepted"}
            ]
        });
        let refs: Vec<&str> = eval(&o, "Appointment", "patient")
            .iter()
            .map(|n| {
                n.value
                    .get("reference")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
            })
            .collect();
        assert_eq!(
            refs,
            [
                "Patient/1",
                "https://x/fhir/Patient/3",
                "#p",
                "urn:uuid:a76d9bbf-f293-4fb7-ad4c-2851cac77162",
                "Patient?identifier=x|1",
                "-"
            ]
        );
        let all = eval(&o, "Appointment", "actor");
        assert_eq!(all.len(), 8);
        assert!(all.iter().all(|n| n.ty == "Reference"));
    }

    #[test]
    fn content_reference_and_nested_resources() {
        let q = json!({
            "resourceType": "QuestionnaireResponse",
            "status": "completed",
            "item": [{"linkId": "1", "item": [{"linkId": "1.1", "answer": [{"valueString": "x"}]}]}]
        });
        let p = ParamPath {
            segments: &["item", "item", "answer", "value[x]"],
            only_type: None,
            resolve_is: None,
        };
        let n = evaluate(&q, &p);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].ty, "string");
        assert_eq!(n[0].value, "x");
        let b = json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "Patient", "id": "1"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}}
        ]});
        let p = ParamPath {
            segments: &["entry", "resource"],
            only_type: None,
            resolve_is: None,
        };
        let tys: Vec<&str> = evaluate(&b, &p).iter().map(|n| n.ty).collect();
        assert_eq!(tys, ["Patient", "Observation"]);
        let root = ParamPath {
            segments: &[],
            only_type: None,
            resolve_is: None,
        };
        assert_eq!(evaluate(&b, &root)[0].ty, "Bundle");
    }
}
