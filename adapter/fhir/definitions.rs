//! Hand-written API over the generated R4 tables (`r4_tables.rs`): resource
//! types, search parameters, the patient compartment and the element table
//! (the row types of the generated statics are defined here too).

use super::r4_tables::{OWNERS, PATIENT_COMPARTMENT, RESOURCE_TYPES, SEARCH_PARAMS, VALUE_SETS};

/// Type of a search parameter (`SearchParameter.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

/// A search parameter as it applies to one resource type.
#[derive(Debug)]
pub struct SearchParamDef {
    /// The parameter's `code`, e.g. `"date"`.
    pub name: &'static str,
    pub ty: ParamType,
    /// The expression parts for this resource type that could be turned into
    /// element paths (at least one).
    pub paths: &'static [ParamPath],
    /// `SearchParameter.target` (reference parameters), in definition order.
    pub targets: &'static [&'static str],
}

/// One path of a search parameter, relative to the resource root.
///
/// `segments` are element names as in the snapshots: a choice element is
/// written with its `[x]` (`"effective[x]"`), so it matches every
/// `effective<Type>` key. `segments` is empty only for composite parameters
/// whose expression is the resource itself (e.g. Observation `code-value-quantity`).
#[derive(Debug)]
pub struct ParamPath {
    pub segments: &'static [&'static str],
    /// Restricts the (last) choice segment to one type: from
    /// `(X.value as Quantity)`, `X.value.as(Quantity)` or `.ofType(Quantity)`.
    pub only_type: Option<&'static str>,
    /// From `X.subject.where(resolve() is Patient)`: keep only references to
    /// that resource type.
    pub resolve_is: Option<&'static str>,
}

/// Element row flags (see [`E`]).
pub(super) mod flag {
    /// Optional, at most one.
    pub const O: u8 = 0;
    /// Required (`min >= 1`).
    pub const R: u8 = 1;
    /// Repeating (`max = "*"`): a JSON array.
    pub const M: u8 = 2;
    /// Required and repeating.
    pub const RM: u8 = R | M;
    /// Choice element `name[x]`.
    pub const X: u8 = 4;
    /// Required choice element.
    pub const RX: u8 = R | X;
    /// Prohibited (`max = "0"`).
    pub const Z: u8 = 8;
}

/// One element of a complex type, backbone element or resource:
/// `E(json_name, flags, types, inner, required_value_set)`.
///
/// * `json_name`: the last path segment; for choice elements without `[x]`.
/// * `flags`: [`flag`] bits.
/// * `types`: FHIR type codes (`System.*` codes mapped to their FHIR type;
///   `Resource.id` is typed `id`).
/// * `inner`: for `BackboneElement`/`Element` children and
///   `contentReference`s the owner key of the element's own children
///   (`"Questionnaire.item"`), else `""`.
/// * `required_value_set`: canonical (no version) of a required binding whose
///   codes are in [`VALUE_SETS`], else `""`.
#[derive(Debug)]
pub(super) struct E(
    pub &'static str,
    pub u8,
    pub &'static [&'static str],
    pub &'static str,
    pub &'static str,
);

/// An element owner: `T(key, base_key, elements_sorted_by_name)`. Keys are
/// type names (`"Quantity"`, `"Observation"`) or backbone paths
/// (`"Observation.component"`). Elements inherited from `Element`,
/// `BackboneElement`, `Resource` and `DomainResource` live only in those
/// owners and are found through `base_key` (`""` = no base).
#[derive(Debug)]
pub(super) struct T(pub &'static str, pub &'static str, pub &'static [E]);

/// A value set: canonical and its codes, per code system, sorted.
pub(super) type ValueSetRow = (
    &'static str,
    &'static [(&'static str, &'static [&'static str])],
);

impl E {
    pub(super) fn name(&self) -> &'static str {
        self.0
    }
    pub(super) fn required(&self) -> bool {
        self.1 & flag::R != 0
    }
    pub(super) fn many(&self) -> bool {
        self.1 & flag::M != 0
    }
    pub(super) fn choice(&self) -> bool {
        self.1 & flag::X != 0
    }
    pub(super) fn prohibited(&self) -> bool {
        self.1 & flag::Z != 0
    }
    pub(super) fn types(&self) -> &'static [&'static str] {
        self.2
    }
    pub(super) fn binding(&self) -> &'static str {
        self.4
    }
    /// The owner of this element's children when its type is `ty`
    /// (`None` for primitives and `Resource`).
    pub(super) fn child_owner(&self, ty: &str) -> Option<&'static T> {
        if !self.3.is_empty() {
            owner(self.3)
        } else if is_primitive(ty) || ty == "Resource" {
            None
        } else {
            owner(ty)
        }
    }
    /// For a choice element, the type named by `key` (`"valueQuantity"` ->
    /// `"Quantity"`), if it is one of the allowed types.
    pub(super) fn choice_type(&self, key: &str) -> Option<&'static str> {
        let suffix = key.strip_prefix(self.0)?;
        let mut chars = suffix.chars();
        let first = chars.next()?;
        let rest = chars.as_str();
        self.2.iter().copied().find(|t| {
            let mut tc = t.chars();
            tc.next().is_some_and(|c| c.to_ascii_uppercase() == first) && tc.as_str() == rest
        })
    }
}

impl T {
    pub(super) fn key(&self) -> &'static str {
        self.0
    }
    pub(super) fn base(&self) -> Option<&'static T> {
        if self.1.is_empty() {
            None
        } else {
            owner(self.1)
        }
    }
    /// Finds the element for a JSON key (no leading `_`), following the base
    /// chain. Returns the element and the type the key selects.
    pub(super) fn lookup(&self, key: &str) -> Option<(&'static E, &'static str)> {
        let mut cur = Some(self);
        while let Some(t) = cur {
            if let Ok(i) = t.2.binary_search_by(|e| e.0.cmp(key)) {
                let e = &t.2[i];
                if e.choice() {
                    return None;
                }
                return e.2.first().map(|ty| (e, *ty));
            }
            for e in t.2.iter().filter(|e| e.choice()) {
                if let Some(ty) = e.choice_type(key) {
                    return Some((e, ty));
                }
            }
            cur = t.base();
        }
        None
    }
    /// Finds an element by its declared name (choice elements without `[x]`).
    pub(super) fn element(&self, name: &str) -> Option<&'static E> {
        let mut cur = Some(self);
        while let Some(t) = cur {
            if let Ok(i) = t.2.binary_search_by(|e| e.0.cmp(name)) {
                return Some(&t.2[i]);
            }
            cur = t.base();
        }
        None
    }
    /// All elements including inherited ones.
    pub(super) fn all_elements(&'static self) -> impl Iterator<Item = &'static E> {
        let mut cur = self.base();
        let mut inner = self.2.iter();
        std::iter::from_fn(move || {
            loop {
                if let Some(e) = inner.next() {
                    return Some(e);
                }
                let t = cur?;
                inner = t.2.iter();
                cur = t.base();
            }
        })
    }
}

/// FHIR primitive types are exactly the lower-case type codes in R4.
pub(super) fn is_primitive(ty: &str) -> bool {
    ty.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Element owner by key (type name or backbone path).
///
/// The validator asks for an owner at every complex value and every inherited element, so
/// the 662 owners are found through a hash map built on first use rather than by binary
/// search over their names (which was the largest single item of ingest's checks).
pub(super) fn owner(key: &str) -> Option<&'static T> {
    static BY_KEY: std::sync::LazyLock<rustc_hash::FxHashMap<&'static str, &'static T>> =
        std::sync::LazyLock::new(|| OWNERS.iter().map(|t| (t.0, t)).collect());
    BY_KEY.get(key).copied()
}

/// Codes of a value set with a required binding, per code system.
pub(super) fn value_set(url: &str) -> Option<&'static [(&'static str, &'static [&'static str])]> {
    VALUE_SETS
        .binary_search_by(|v| v.0.cmp(url))
        .ok()
        .map(|i| VALUE_SETS[i].1)
}

/// The static name of a resource type, if `name` is one.
pub(super) fn static_resource_type(name: &str) -> Option<&'static str> {
    RESOURCE_TYPES
        .binary_search(&name)
        .ok()
        .map(|i| RESOURCE_TYPES[i])
}

/// True for the 146 concrete R4 resource types (not `Resource`/`DomainResource`).
pub fn is_resource_type(name: &str) -> bool {
    RESOURCE_TYPES.binary_search(&name).is_ok()
}

/// The 146 concrete R4 resource types, sorted.
pub fn resource_types() -> impl Iterator<Item = &'static str> {
    RESOURCE_TYPES.iter().copied()
}

/// Search parameters defined (by `SearchParameter.base`) for a resource
/// type, sorted by name. Resource-level parameters (`_id`, `_lastUpdated`,
/// `_tag`, ...) are not included.
pub fn search_params(resource_type: &str) -> &'static [SearchParamDef] {
    SEARCH_PARAMS
        .binary_search_by(|(t, _)| (*t).cmp(resource_type))
        .map_or(&[], |i| SEARCH_PARAMS[i].1)
}

/// One search parameter of a resource type.
pub fn search_param(resource_type: &str, name: &str) -> Option<&'static SearchParamDef> {
    let params = search_params(resource_type);
    params
        .binary_search_by(|p| p.name.cmp(name))
        .ok()
        .map(|i| &params[i])
}

/// Parameters linking a resource type to the patient compartment, in the
/// order of `CompartmentDefinition-patient`; `None` if the type is not in
/// the compartment or has no parameters.
pub fn patient_compartment(resource_type: &str) -> Option<&'static [&'static str]> {
    PATIENT_COMPARTMENT
        .binary_search_by(|(t, _)| (*t).cmp(resource_type))
        .ok()
        .map(|i| PATIENT_COMPARTMENT[i].1)
}

/// Declared type of the element at `path` below a resource type or complex
/// datatype. Choice elements can be named by a concrete key
/// (`["valueQuantity"]` -> `"Quantity"`) or by `"value[x]"` (answers `"*"`).
/// Backbone elements answer `"BackboneElement"` (or `"Element"`).
pub fn element_type(resource_type_or_datatype: &str, path: &[&str]) -> Option<&'static str> {
    let mut cur = owner(resource_type_or_datatype)?;
    let mut ty = None;
    for (i, seg) in path.iter().enumerate() {
        let (e, t) = match seg.strip_suffix("[x]") {
            Some(name) => {
                let e = cur.element(name).filter(|e| e.choice())?;
                (e, "*")
            }
            None => cur.lookup(seg)?,
        };
        ty = Some(t);
        if i + 1 < path.len() {
            cur = e.child_owner(t)?;
        }
    }
    ty
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_type_list() {
        assert_eq!(resource_types().count(), 146);
        assert!(is_resource_type("Observation"));
        assert!(is_resource_type("Patient"));
        assert!(!is_resource_type("Resource"));
        assert!(!is_resource_type("DomainResource"));
        assert!(!is_resource_type("Quantity"));
        assert!(
            resource_types()
                .zip(resource_types().skip(1))
                .all(|(a, b)| a < b)
        );
    }

    #[test]
    fn search_parameters() {
        let date = search_param("Observation", "date").unwrap();
        assert_eq!(date.ty, ParamType::Date);
        assert_eq!(date.paths.len(), 1);
        assert_eq!(date.paths[0].segments, ["effective[x]"]);
        assert_eq!(date.paths[0].only_type, None);

        let patient = search_param("Observation", "patient").unwrap();
        assert_eq!(patient.ty, ParamType::Reference);
        assert_eq!(patient.paths.len(), 1);
        assert_eq!(patient.paths[0].segments, ["subject"]);
        assert_eq!(patient.paths[0].resolve_is, Some("Patient"));
        assert!(patient.targets.contains(&"Patient"));

        let code = search_param("Observation", "code").unwrap();
        assert_eq!(code.ty, ParamType::Token);
        assert_eq!(code.paths[0].segments, ["code"]);

        let vq = search_param("Observation", "value-quantity").unwrap();
        assert_eq!(vq.paths[0].segments, ["value[x]"]);
        assert_eq!(vq.paths[0].only_type, Some("Quantity"));

        let cvq = search_param("Observation", "component-value-quantity").unwrap();
        assert_eq!(cvq.paths[0].segments, ["component", "value[x]"]);

        let doc_type = search_param("DocumentReference", "type").unwrap();
        assert_eq!(doc_type.ty, ParamType::Token);
        assert_eq!(doc_type.paths[0].segments, ["type"]);

        let ident = search_param("Patient", "identifier").unwrap();
        assert_eq!(ident.paths[0].segments, ["identifier"]);

        // Multi-resource clinical-date, as it applies to Condition.
        let onset = search_param("Condition", "recorded-date").unwrap();
        assert_eq!(onset.paths[0].segments, ["recordedDate"]);
        let appt = search_param("Appointment", "patient").unwrap();
        assert_eq!(appt.paths[0].segments, ["participant", "actor"]);

        // Resource-level parameters are not expanded per type.
        assert!(search_param("Patient", "_id").is_none());
        assert!(search_param("Patient", "_lastUpdated").is_none());
        assert!(search_param("Nope", "code").is_none());
        for ty in resource_types() {
            let ps = search_params(ty);
            assert!(ps.windows(2).all(|w| w[0].name < w[1].name), "{ty}");
            assert!(ps.iter().all(|p| !p.paths.is_empty()));
        }
    }

    #[test]
    fn compartment() {
        assert_eq!(
            patient_compartment("Observation"),
            Some(&["subject", "performer"][..])
        );
        assert_eq!(patient_compartment("Patient"), Some(&["link"][..]));
        assert_eq!(patient_compartment("Encounter"), Some(&["patient"][..]));
        assert_eq!(patient_compartment("Practitioner"), None);
        assert_eq!(patient_compartment("Nope"), None);
    }

    #[test]
    fn element_types() {
        assert_eq!(
            element_type("Observation", &["code"]),
            Some("CodeableConcept")
        );
        assert_eq!(
            element_type("Observation", &["valueQuantity"]),
            Some("Quantity")
        );
        assert_eq!(
            element_type("Observation", &["valueQuantity", "value"]),
            Some("decimal")
        );
        assert_eq!(element_type("Observation", &["value[x]"]), Some("*"));
        assert_eq!(
            element_type("Observation", &["component", "code"]),
            Some("CodeableConcept")
        );
        assert_eq!(
            element_type("Observation", &["component"]),
            Some("BackboneElement")
        );
        assert_eq!(element_type("Observation", &["id"]), Some("id"));
        assert_eq!(element_type("Observation", &["text", "div"]), Some("xhtml"));
        assert_eq!(
            element_type("Questionnaire", &["item", "item", "linkId"]),
            Some("string")
        );
        assert_eq!(
            element_type("Timing", &["repeat", "boundsPeriod"]),
            Some("Period")
        );
        assert_eq!(element_type("Patient", &["nope"]), None);
        assert_eq!(element_type("Observation", &["value"]), None);
    }
}
