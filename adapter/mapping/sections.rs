//! Portal sections (`mappings/sections.toml`): which resources belong to which part of the
//! portal. The first rule that matches decides; a resource that no rule matches is stored but
//! never served (default deny), and `sluis check` lists such types. The file also names the
//! shared reference types: types outside the patient compartment (Practitioner,
//! Organization, …) that are served when a resource the user may see refers to them; every
//! other type outside the compartment is never served.

use super::{Facts, MappingProblem, Matcher, OneOrMany};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Shared reference types; absent: [`DEFAULT_SHARED`].
    shared: Option<Vec<String>>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

/// The shared reference types when `sections.toml` names none (contract §2).
pub const DEFAULT_SHARED: &[&str] = &[
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Medication",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    section: String,
    #[serde(rename = "type")]
    types: OneOrMany,
    #[serde(default)]
    category: OneOrMany,
    #[serde(default)]
    code: OneOrMany,
    #[serde(default)]
    profile: OneOrMany,
}

/// One rule: resources matching `matcher` belong to `section`.
#[derive(Debug, Clone)]
pub struct SectionRule {
    pub section: String,
    pub matcher: Matcher,
}

/// The section rules, in file order, and the shared reference types.
#[derive(Debug, Clone, Default)]
pub struct Sections {
    pub rules: Vec<SectionRule>,
    /// Types outside the patient compartment served when a visible resource refers to them.
    pub shared: Vec<String>,
}

impl Sections {
    /// Parses the file text; problems are added to `problems` with `file` and key.
    pub fn parse(text: &str, file: &str, problems: &mut Vec<MappingProblem>) -> Self {
        let parsed: File = match toml::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                problems.push(MappingProblem {
                    file: file.into(),
                    key: String::new(),
                    message: e.to_string().trim().replace('\n', " "),
                });
                return Self::default();
            }
        };
        let mut shared = Vec::new();
        let named = parsed
            .shared
            .unwrap_or_else(|| DEFAULT_SHARED.iter().map(|s| s.to_string()).collect());
        for (i, ty) in named.into_iter().enumerate() {
            let in_compartment =
                ty == "Patient" || crate::fhir::definitions::patient_compartment(&ty).is_some();
            if !crate::fhir::definitions::is_resource_type(&ty) {
                problems.push(MappingProblem {
                    file: file.into(),
                    key: format!("shared[{i}]"),
                    message: format!("`{ty}` is not an R4 resource type"),
                });
            } else if in_compartment {
                problems.push(MappingProblem {
                    file: file.into(),
                    key: format!("shared[{i}]"),
                    message: format!(
                        "`{ty}` is in the patient compartment: it follows the sections, map it with a [[rule]]"
                    ),
                });
            } else if !shared.contains(&ty) {
                shared.push(ty);
            }
        }
        let mut rules = Vec::new();
        for (i, raw) in parsed.rule.into_iter().enumerate() {
            let key = format!("rule[{i}]");
            let mut report = |k: String, m: String| {
                problems.push(MappingProblem {
                    file: file.into(),
                    key: k,
                    message: m,
                })
            };
            if !is_section_name(&raw.section) {
                report(
                    format!("{key}.section"),
                    format!("`{}` must be lowercase letters, digits or '-'", raw.section),
                );
            }
            if raw.types.values().is_empty() {
                report(
                    format!("{key}.type"),
                    "a rule names at least one resource type".into(),
                );
            }
            let matcher = Matcher::build(
                &raw.types,
                &raw.category,
                &raw.code,
                &raw.profile,
                &key,
                &mut report,
            );
            rules.push(SectionRule {
                section: raw.section,
                matcher,
            });
        }
        Self { rules, shared }
    }

    /// Whether `resource_type` is a shared reference type.
    pub fn is_shared(&self, resource_type: &str) -> bool {
        self.shared.iter().any(|t| t == resource_type)
    }

    /// The section of a resource, if any rule maps it.
    pub fn section_of(&self, facts: &Facts<'_>) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| r.matcher.matches(facts))
            .map(|r| r.section.as_str())
    }

    /// Every section name, in the order of first use.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for r in &self.rules {
            if !names.contains(&r.section.as_str()) {
                names.push(&r.section);
            }
        }
        names
    }

    /// Whether some rule can map resources of this type.
    pub fn maps_type(&self, resource_type: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.matcher.types.iter().any(|t| t == resource_type))
    }
}

fn is_section_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::DEFAULT_SECTIONS;

    fn defaults() -> Sections {
        let mut problems = Vec::new();
        let s = Sections::parse(DEFAULT_SECTIONS, "sections.toml", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        s
    }

    fn section(s: &Sections, ty: &str, code: &[(&str, &str)]) -> Option<String> {
        let code: Vec<(String, String)> = code
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        s.section_of(&Facts {
            resource_type: ty,
            code: &code,
            ..Default::default()
        })
        .map(str::to_string)
    }

    #[test]
    fn the_shipped_mapping_is_the_contracts() {
        let s = defaults();
        assert_eq!(
            s.names(),
            [
                "dossier",
                "zorgplan",
                "rapportages",
                "metingen",
                "medicatie",
                "agenda",
                "berichten",
                "documenten"
            ]
        );
        assert_eq!(section(&s, "Patient", &[]).as_deref(), Some("dossier"));
        assert_eq!(section(&s, "Flag", &[]).as_deref(), Some("dossier"));
        assert_eq!(section(&s, "Goal", &[]).as_deref(), Some("zorgplan"));
        assert_eq!(
            section(&s, "DocumentReference", &[("http://loinc.org", "11506-3")]).as_deref(),
            Some("rapportages")
        );
        assert_eq!(
            section(&s, "DocumentReference", &[("http://loinc.org", "34133-9")]).as_deref(),
            Some("documenten")
        );
        assert_eq!(
            section(&s, "Composition", &[]).as_deref(),
            Some("rapportages")
        );
        assert_eq!(
            section(&s, "DiagnosticReport", &[]).as_deref(),
            Some("metingen")
        );
        assert_eq!(
            section(&s, "MedicationDispense", &[]).as_deref(),
            Some("medicatie")
        );
        assert_eq!(section(&s, "Appointment", &[]).as_deref(), Some("agenda"));
        assert_eq!(
            section(&s, "Communication", &[]).as_deref(),
            Some("berichten")
        );
        assert_eq!(section(&s, "Claim", &[]), None);
        assert_eq!(section(&s, "Practitioner", &[]), None);
    }

    #[test]
    fn bad_rules_are_reported_with_their_key() {
        let mut problems = Vec::new();
        Sections::parse(
            "[[rule]]\nsection = \"Bad Name\"\ntype = \"Observaton\"\ncode = \"|x\"\n",
            "s.toml",
            &mut problems,
        );
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["rule[0].section", "rule[0].code", "rule[0].type"]);
        let mut problems = Vec::new();
        Sections::parse("[[rule]]\nsection = \"a\"\n", "s.toml", &mut problems);
        assert_eq!(problems.len(), 1, "missing type: {problems:?}");
        let mut problems = Vec::new();
        Sections::parse(
            "shared = [\"Organization\", \"Observation\", \"Nope\"]\n",
            "s.toml",
            &mut problems,
        );
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["shared[1]", "shared[2]"], "{problems:?}");
    }

    #[test]
    fn shared_types_are_the_contracts_by_default_and_may_be_named() {
        let s = defaults();
        assert_eq!(s.shared, DEFAULT_SHARED);
        assert!(s.is_shared("Organization") && !s.is_shared("Task"));
        let mut problems = Vec::new();
        let only = Sections::parse("shared = [\"Location\"]\n", "s.toml", &mut problems);
        assert!(problems.is_empty());
        assert!(only.is_shared("Location") && !only.is_shared("Practitioner"));
    }
}
