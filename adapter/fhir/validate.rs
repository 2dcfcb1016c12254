//! Structural validation of R4 resource JSON against the generated element
//! table: unknown elements, cardinality and array shape, required elements,
//! empty values, JSON types and lexical formats of primitives, and required
//! code bindings, reported with the FHIRPath-style location of each problem.
//!
//! Decisions: `fhir_comments` is rejected (it was dropped from the JSON
//! format in R4 and no R4 example uses it); `_x` twins are reported under the
//! element's own name (`Patient.birthDate.extension[0]`); nested resources
//! (`contained`, `Bundle.entry.resource`, `Parameters.parameter.resource`,
//! any element of type `Resource`) continue the path without their type name
//! (`Bundle.entry[2].resource.status`).

use super::definitions::{E, T, is_primitive, is_resource_type, owner, value_set};
use super::primitive;
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// A problem found in a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// FHIRPath-style location with indexes, e.g.
    /// `Observation.component[1].valueQuantity.value`.
    pub path: String,
    pub message: String,
}

/// At most this many issues are reported per resource.
pub const MAX_ISSUES: usize = 100;

/// Deeper paths are not walked (guards the recursion on hand-built values;
/// serde_json's parser already stops at 128 levels).
const MAX_DEPTH: usize = 512;

/// Validates one resource (and every resource nested in it).
pub fn check_resource(resource: &serde_json::Value) -> Vec<Issue> {
    let mut w = Walker {
        root: "Resource",
        path: Vec::new(),
        issues: Vec::new(),
    };
    w.resource(resource);
    w.issues
}

#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    /// A choice element named by its `[x]` form.
    Choice(&'a str),
    Index(usize),
}

struct Walker<'a> {
    root: &'a str,
    path: Vec<Seg<'a>>,
    issues: Vec<Issue>,
}

impl<'a> Walker<'a> {
    fn full(&self) -> bool {
        self.issues.len() >= MAX_ISSUES
    }

    fn issue(&mut self, message: impl FnOnce() -> String) {
        if self.full() {
            return;
        }
        let mut path = String::from(self.root);
        for seg in &self.path {
            let _ = match seg {
                Seg::Key(k) => write!(path, ".{k}"),
                Seg::Choice(k) => write!(path, ".{k}[x]"),
                Seg::Index(i) => write!(path, "[{i}]"),
            };
        }
        self.issues.push(Issue {
            path,
            message: message(),
        });
    }

    fn at(&mut self, seg: Seg<'a>, message: impl FnOnce() -> String) {
        self.path.push(seg);
        self.issue(message);
        self.path.pop();
    }

    fn resource(&mut self, v: &'a Value) {
        let Some(obj) = v.as_object() else {
            self.issue(|| "a resource must be a JSON object".to_string());
            return;
        };
        let owner = match obj.get("resourceType") {
            None => {
                self.issue(|| "missing resourceType".to_string());
                return;
            }
            Some(Value::String(rt)) => match owner(rt).filter(|_| is_resource_type(rt)) {
                Some(t) => t,
                None => {
                    self.at(Seg::Key("resourceType"), || {
                        format!("unknown resource type {rt:?}")
                    });
                    return;
                }
            },
            Some(_) => {
                self.at(Seg::Key("resourceType"), || {
                    "resourceType must be a string".to_string()
                });
                return;
            }
        };
        if self.path.is_empty() {
            self.root = owner.key();
        }
        self.object(obj, owner, true);
    }

    fn object(&mut self, obj: &'a Map<String, Value>, owner: &'static T, resource_root: bool) {
        if obj.is_empty() {
            self.issue(|| "empty object".to_string());
            return;
        }
        if self.path.len() > MAX_DEPTH {
            self.issue(|| "nesting too deep to validate".to_string());
            return;
        }
        for (key, val) in obj {
            if self.full() {
                return;
            }
            if resource_root && key == "resourceType" {
                continue;
            }
            let (twin, name) = match key.strip_prefix('_') {
                Some(n) => (true, n),
                None => (false, key.as_str()),
            };
            let Some((el, ty)) = owner.lookup(name) else {
                self.at(Seg::Key(key), || {
                    format!("unknown element {key:?} in {}", owner.key())
                });
                continue;
            };
            if twin && !is_primitive(ty) {
                self.at(Seg::Key(key), || {
                    format!("unknown element {key:?}: '_' is only used with primitive elements")
                });
                continue;
            }
            self.path.push(Seg::Key(name));
            if el.prohibited() {
                self.issue(|| "element is prohibited (max cardinality 0)".to_string());
            } else if twin && ty == "xhtml" {
                self.issue(|| "xhtml (Narrative.div) cannot have id or extensions".to_string());
            } else if twin {
                self.twin(el, val, obj.get(name));
            } else {
                self.value(el, ty, val, obj, name);
            }
            self.path.pop();
        }
        self.required_and_choices(obj, owner);
    }

    /// Missing required elements; several types given for one choice element.
    fn required_and_choices(&mut self, obj: &'a Map<String, Value>, owner: &'static T) {
        for e in owner.all_elements() {
            if e.choice() {
                let mut seen: Option<&str> = None;
                let mut present = false;
                for k in obj.keys() {
                    let k = k.strip_prefix('_').unwrap_or(k);
                    if let Some(t) = e.choice_type(k) {
                        present = true;
                        match seen {
                            None => seen = Some(t),
                            Some(first) if first != t => {
                                self.at(Seg::Choice(e.name()), || {
                                    format!(
                                        "several types given for a choice element ({first}, {t})"
                                    )
                                });
                                break;
                            }
                            Some(_) => {}
                        }
                    }
                }
                if e.required() && !present {
                    self.at(Seg::Choice(e.name()), || {
                        "missing required element".to_string()
                    });
                }
            } else if e.required() && !obj.contains_key(e.name()) {
                let twin_only = is_primitive(e.types().first().copied().unwrap_or(""))
                    && obj.keys().any(|k| k.strip_prefix('_') == Some(e.name()));
                if !twin_only {
                    self.at(Seg::Key(e.name()), || {
                        "missing required element".to_string()
                    });
                }
            }
        }
    }

    /// The value of an element (not its `_` twin); the element is on the path.
    fn value(
        &mut self,
        el: &'static E,
        ty: &'static str,
        val: &'a Value,
        obj: &'a Map<String, Value>,
        name: &str,
    ) {
        match (el.many(), val) {
            (true, Value::Array(items)) => {
                if items.is_empty() {
                    self.issue(|| "empty array".to_string());
                }
                for (i, item) in items.iter().enumerate() {
                    if self.full() {
                        return;
                    }
                    self.path.push(Seg::Index(i));
                    if item.is_null() {
                        let twin = obj.get(&format!("_{name}"));
                        let covered = is_primitive(ty)
                            && twin
                                .and_then(|t| t.as_array())
                                .and_then(|t| t.get(i))
                                .is_some_and(|t| !t.is_null());
                        if !covered {
                            self.issue(|| "null is not allowed here".to_string());
                        }
                    } else {
                        self.single(el, ty, item);
                    }
                    self.path.pop();
                }
            }
            (true, _) => self.issue(|| "must be an array (max cardinality *)".to_string()),
            (false, Value::Array(_)) => {
                self.issue(|| "must not be an array (max cardinality 1)".to_string());
            }
            (false, Value::Null) => self.issue(|| "null is not allowed here".to_string()),
            (false, _) => self.single(el, ty, val),
        }
    }

    /// One (non-null) item of an element.
    fn single(&mut self, el: &'static E, ty: &'static str, val: &'a Value) {
        if is_primitive(ty) {
            if let Err(msg) = primitive::check(ty, val) {
                self.issue(|| msg);
            } else if ty == "code"
                && !el.binding().is_empty()
                && let Some(code) = val.as_str()
            {
                self.code_in(el.binding(), None, code);
            }
        } else if ty == "Resource" {
            self.resource(val);
        } else {
            let Some(obj) = val.as_object() else {
                self.issue(|| format!("{ty} must be a JSON object"));
                return;
            };
            let Some(child) = el.child_owner(ty) else {
                return;
            };
            self.object(obj, child, false);
            if !el.binding().is_empty() {
                match ty {
                    "Coding" => self.coding(el.binding(), obj),
                    "CodeableConcept" => {
                        if let Some(Value::Array(codings)) = obj.get("coding") {
                            self.path.push(Seg::Key("coding"));
                            for (i, c) in codings.iter().enumerate() {
                                if let Some(c) = c.as_object() {
                                    self.path.push(Seg::Index(i));
                                    self.coding(el.binding(), c);
                                    self.path.pop();
                                }
                            }
                            self.path.pop();
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// A Coding under a required binding: checked when its system is one of
    /// the value set's code systems.
    fn coding(&mut self, vs: &'static str, c: &'a Map<String, Value>) {
        if let (Some(Value::String(system)), Some(Value::String(code))) =
            (c.get("system"), c.get("code"))
        {
            let in_vs = value_set(vs).is_some_and(|v| v.iter().any(|(s, _)| s == system));
            if in_vs {
                self.path.push(Seg::Key("code"));
                self.code_in(vs, Some(system), code);
                self.path.pop();
            }
        }
    }

    fn code_in(&mut self, vs: &'static str, system: Option<&str>, code: &str) {
        let Some(systems) = value_set(vs) else {
            return;
        };
        let found = systems
            .iter()
            .filter(|(s, _)| system.is_none_or(|x| x == *s))
            .any(|(_, codes)| codes.binary_search(&code).is_ok());
        if !found {
            self.issue(|| format!("code {code:?} is not in the required value set {vs}"));
        }
    }

    /// The `_x` twin of a primitive element; `value` is the primitive's own value.
    fn twin(&mut self, el: &'static E, val: &'a Value, value: Option<&'a Value>) {
        let Some(element) = owner("Element") else {
            return;
        };
        match (el.many(), val) {
            (true, Value::Array(items)) => {
                let values = value.and_then(Value::as_array);
                if items.is_empty() {
                    self.issue(|| "empty array".to_string());
                }
                if let Some(values) = values
                    && values.len() != items.len()
                {
                    self.issue(|| {
                        format!(
                            "the '_' array has {} items but the value array has {}",
                            items.len(),
                            values.len()
                        )
                    });
                }
                for (i, item) in items.iter().enumerate() {
                    if self.full() {
                        return;
                    }
                    self.path.push(Seg::Index(i));
                    match item {
                        Value::Null => {
                            let covered =
                                values.and_then(|v| v.get(i)).is_some_and(|v| !v.is_null());
                            if !covered {
                                self.issue(|| "null is not allowed here".to_string());
                            }
                        }
                        Value::Object(o) => self.object(o, element, false),
                        _ => {
                            self.issue(|| "primitive extensions must be a JSON object".to_string())
                        }
                    }
                    self.path.pop();
                }
            }
            (true, _) => self.issue(|| "must be an array (max cardinality *)".to_string()),
            (false, Value::Object(o)) => self.object(o, element, false),
            (false, _) => {
                self.issue(|| "primitive extensions must be a JSON object".to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn issues(v: Value) -> Vec<(String, String)> {
        check_resource(&v)
            .into_iter()
            .map(|i| (i.path, i.message))
            .collect()
    }

    /// Paths of all issues.
    fn paths(v: Value) -> Vec<String> {
        issues(v).into_iter().map(|(p, _)| p).collect()
    }

    fn obs() -> Value {
        json!({
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
            "valueQuantity": {"value": 1.50, "unit": "cm"}
        })
    }

    #[test]
    fn valid_resources_pass() {
        assert_eq!(issues(obs()), vec![]);
        let p = json!({
            "resourceType": "Patient",
            "id": "p1",
            "gender": "female",
            "birthDate": "2020-02-29",
            "_birthDate": {"extension": [{"url": "http://x/ext", "valueDateTime": "2020-02-29T10:00:00+01:00"}]},
            "name": [{"given": ["A", null], "_given": [null, {"extension": [{"url": "http://x/e", "valueString": "B"}]}]}],
            "deceasedBoolean": false
        });
        assert_eq!(issues(p), vec![]);
    }

    #[test]
    fn bad_dates() {
        let p = json!({"resourceType": "Patient", "birthDate": "not-a-date"});
        assert_eq!(paths(p), ["Patient.birthDate"]);
        let p = json!({"resourceType": "Patient", "birthDate": "2021-02-30"});
        let got = issues(p);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "Patient.birthDate");
        assert!(got[0].1.contains("2021-02-30"), "{got:?}");
        let o = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "issued": "2021-01-01T10:00:00"});
        assert_eq!(paths(o), ["Observation.issued"]);
    }

    #[test]
    fn bad_code_in_required_binding() {
        let p = json!({"resourceType": "Patient", "gender": "banana"});
        let got = issues(p);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "Patient.gender");
        assert!(got[0].1.contains("administrative-gender"), "{got:?}");
        // A coding of the bound system inside a CodeableConcept.
        let mut o = obs();
        o["dataAbsentReason"] = json!({"coding": [{"system": "http://x", "code": "y"}]});
        assert_eq!(issues(o), vec![]);
        let r = json!({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/1"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "nope"}]}});
        assert_eq!(
            paths(r),
            ["AllergyIntolerance.clinicalStatus.coding[0].code"]
        );
    }

    #[test]
    fn unknown_element_is_named() {
        let mut o = obs();
        o["component"] = json!([{"code": {"text": "a"}, "valueQuantity": {"value": 1, "foo": 2}}]);
        let got = issues(o);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "Observation.component[0].valueQuantity.foo");
        assert!(got[0].1.contains("unknown element"));
        let p = json!({"resourceType": "Patient", "fhir_comments": ["x"], "_gender": {"foo": 1}, "_name": {}});
        assert_eq!(
            paths(p),
            [
                "Patient.fhir_comments",
                "Patient.gender.foo",
                "Patient._name"
            ]
        );
    }

    #[test]
    fn array_shapes() {
        let p = json!({"resourceType": "Patient", "gender": ["male"]});
        assert_eq!(paths(p), ["Patient.gender"]);
        let p = json!({"resourceType": "Patient", "name": {"family": "X"}});
        assert_eq!(paths(p), ["Patient.name"]);
        let p = json!({"resourceType": "Patient", "name": []});
        assert_eq!(paths(p), ["Patient.name"]);
        let p = json!({"resourceType": "Patient", "name": [{"given": ["a", null]}]});
        assert_eq!(paths(p), ["Patient.name[0].given[1]"]);
        let p = json!({"resourceType": "Patient", "name": [{"given": ["a"], "_given": [null, {"id": "x"}]}]});
        assert_eq!(paths(p), ["Patient.name[0].given"]);
    }

    #[test]
    fn wrong_json_types() {
        let p = json!({"resourceType": "Patient", "active": "true"});
        let got = issues(p);
        assert_eq!(got[0].0, "Patient.active");
        assert!(got[0].1.contains("boolean"), "{got:?}");
        let mut o = obs();
        o["valueQuantity"]["value"] = json!("1.5");
        let got = issues(o);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "Observation.valueQuantity.value");
        assert!(got[0].1.contains("number"), "{got:?}");
        let p = json!({"resourceType": "Patient", "multipleBirthInteger": 1.5});
        assert_eq!(paths(p), ["Patient.multipleBirthInteger"]);
        let p = json!({"resourceType": "Patient", "photo": [{"size": -1}]});
        assert_eq!(paths(p), ["Patient.photo[0].size"]);
    }

    #[test]
    fn required_elements() {
        let o = json!({"resourceType": "Observation", "code": {"text": "x"}});
        assert_eq!(paths(o), ["Observation.status"]);
        let o = json!({"resourceType": "Observation", "_status": {"extension": [{"url": "http://x", "valueString": "y"}]}});
        assert_eq!(paths(o), ["Observation.code"]);
        let p = json!({"resourceType": "Patient", "extension": [{"valueString": "x"}]});
        assert_eq!(paths(p), ["Patient.extension[0].url"]);
        let q = json!({"resourceType": "Questionnaire", "status": "draft",
            "item": [{"linkId": "1", "type": "choice", "enableWhen": [{"question": "x", "operator": "exists"}]}]});
        assert_eq!(paths(q), ["Questionnaire.item[0].enableWhen[0].answer[x]"]);
    }

    #[test]
    fn empty_and_null_values() {
        let p = json!({"resourceType": "Patient", "name": [{"family": ""}]});
        let got = issues(p);
        assert_eq!(got[0].0, "Patient.name[0].family");
        assert!(got[0].1.contains("empty"));
        let p = json!({"resourceType": "Patient", "maritalStatus": {}});
        assert_eq!(paths(p), ["Patient.maritalStatus"]);
        let p = json!({"resourceType": "Patient", "gender": null});
        assert_eq!(paths(p), ["Patient.gender"]);
    }

    #[test]
    fn ids_and_resource_types() {
        let p = json!({"resourceType": "Patient", "id": "a_b c"});
        assert_eq!(paths(p), ["Patient.id"]);
        assert_eq!(
            paths(json!({"resourceType": "Banana"})),
            ["Resource.resourceType"]
        );
        assert_eq!(paths(json!({"id": "x"})), ["Resource"]);
        assert_eq!(paths(json!([1])), ["Resource"]);
        assert_eq!(
            paths(json!({"resourceType": "DomainResource"})),
            ["Resource.resourceType"]
        );
        assert_eq!(issues(json!({"resourceType": "Patient"})), vec![]);
    }

    #[test]
    fn choice_types() {
        let mut o = obs();
        o["valueString"] = json!("x");
        assert_eq!(paths(o), ["Observation.value[x]"]);
        let mut o = obs();
        o["valueFoo"] = json!("x");
        assert_eq!(paths(o), ["Observation.valueFoo"]);
        let mut o = obs();
        o["value"] = json!("x");
        assert_eq!(paths(o), ["Observation.value"]);
    }

    #[test]
    fn nested_resources() {
        let mut bad = obs();
        bad["valueQuantity"]["value"] = json!("x");
        let mut p = json!({"resourceType": "Patient", "contained": [bad.clone()]});
        assert_eq!(
            paths(p.clone()),
            ["Patient.contained[0].valueQuantity.value"]
        );
        p["contained"][0]["resourceType"] = json!("Nope");
        assert_eq!(paths(p), ["Patient.contained[0].resourceType"]);
        let b = json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": obs()}, {"fullUrl": "urn:uuid:a76d9bbf-f293-4fb7-ad4c-2851cac77162"}, {"resource": bad}
        ]});
        assert_eq!(paths(b), ["Bundle.entry[2].resource.valueQuantity.value"]);
        let params = json!({"resourceType": "Parameters", "parameter": [{"name": "x", "resource": {"resourceType": "Patient", "active": 1}}]});
        assert_eq!(paths(params), ["Parameters.parameter[0].resource.active"]);
    }

    #[test]
    fn issues_are_capped() {
        let names: Vec<Value> = (0..300).map(|_| json!({"family": ""})).collect();
        let p = json!({"resourceType": "Patient", "name": names});
        assert_eq!(check_resource(&p).len(), MAX_ISSUES);
    }
}
