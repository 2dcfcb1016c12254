//! Embargo rules (`mappings/embargo.toml`): how long a new entry of each section is held back
//! before the portal shows it (R11, R12). A rule names a section, optionally narrowed by type,
//! category or code, and one of `immediate`, an ISO-8601 duration, `manual` (only after a staff
//! release) or `never`. The first matching rule decides; otherwise `embargo.default` applies.
//! Turning a rule into a release moment is `release`'s work, not this module's.

use super::sections::Sections;
use super::{Facts, MappingProblem, Matcher, OneOrMany};
use crate::time::IsoDuration;
use serde::Deserialize;
use std::fmt;

/// How long a rule holds an entry back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    Immediate,
    After(IsoDuration),
    /// Shown only after a staff release.
    Manual,
    /// Never shown.
    Never,
}

impl Delay {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "immediate" => Ok(Delay::Immediate),
            "manual" => Ok(Delay::Manual),
            "never" => Ok(Delay::Never),
            other => match other.parse::<IsoDuration>() {
                Ok(d) if d.is_zero() => Ok(Delay::Immediate),
                Ok(d) => Ok(Delay::After(d)),
                Err(_) => Err(format!(
                    "`{other}` is not \"immediate\", \"manual\", \"never\" or an ISO-8601 duration such as \"P14D\""
                )),
            },
        }
    }

    /// Whether the holder may choose to skip it (durations only).
    pub fn is_waivable(&self) -> bool {
        matches!(self, Delay::After(_))
    }
}

impl fmt::Display for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Delay::Immediate => f.write_str("immediate"),
            Delay::After(d) => write!(f, "{d}"),
            Delay::Manual => f.write_str("manual"),
            Delay::Never => f.write_str("never"),
        }
    }
}

/// Checks a rule value as written in config (`embargo.default`).
pub fn check_rule_text(text: &str) -> Result<(), String> {
    Delay::parse(text).map(|_| ())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    section: String,
    #[serde(default, rename = "type")]
    types: OneOrMany,
    #[serde(default)]
    category: OneOrMany,
    #[serde(default)]
    code: OneOrMany,
    #[serde(default)]
    profile: OneOrMany,
    delay: String,
}

/// One embargo rule.
#[derive(Debug, Clone)]
pub struct EmbargoRule {
    pub section: String,
    pub matcher: Matcher,
    pub delay: Delay,
}

/// The rule that decided, for explanations and for storing with a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `rule[3]` or `default`.
    pub name: String,
    /// A readable description: `"metingen: Observation, code http://loinc.org|29463-7 → P7D"`.
    pub description: String,
    pub delay: Delay,
}

/// All embargo rules, in file order, and the default.
#[derive(Debug, Clone)]
pub struct EmbargoRules {
    pub rules: Vec<EmbargoRule>,
    pub default: Delay,
}

impl EmbargoRules {
    pub fn parse(
        text: &str,
        file: &str,
        default: &str,
        sections: &Sections,
        problems: &mut Vec<MappingProblem>,
    ) -> Self {
        let default = Delay::parse(default).unwrap_or(Delay::After(IsoDuration::days(14)));
        let parsed: File = match toml::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                problems.push(MappingProblem {
                    file: file.into(),
                    key: String::new(),
                    message: e.to_string().trim().replace('\n', " "),
                });
                return Self {
                    rules: Vec::new(),
                    default,
                };
            }
        };
        let names = sections.names();
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
            if !names.contains(&raw.section.as_str()) {
                report(
                    format!("{key}.section"),
                    format!(
                        "`{}` is not a section of sections.toml ({})",
                        raw.section,
                        names.join(", ")
                    ),
                );
            }
            let delay = Delay::parse(&raw.delay).unwrap_or_else(|m| {
                report(format!("{key}.delay"), m);
                default
            });
            let matcher = Matcher::build(
                &raw.types,
                &raw.category,
                &raw.code,
                &raw.profile,
                &key,
                &mut report,
            );
            rules.push(EmbargoRule {
                section: raw.section,
                matcher,
                delay,
            });
        }
        Self { rules, default }
    }

    /// The rule that applies to a resource of `section`.
    pub fn rule_for(&self, section: &str, facts: &Facts<'_>) -> Applied {
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.section == section && rule.matcher.matches(facts) {
                return Applied {
                    name: format!("rule[{i}]"),
                    description: format!(
                        "{}: {} -> {}",
                        rule.section,
                        rule.matcher.describe(),
                        rule.delay
                    ),
                    delay: rule.delay,
                };
            }
        }
        Applied {
            name: "default".into(),
            description: format!("embargo.default -> {}", self.default),
            delay: self.default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{DEFAULT_EMBARGO, DEFAULT_SECTIONS};

    fn defaults() -> (Sections, EmbargoRules) {
        let mut problems = Vec::new();
        let s = Sections::parse(DEFAULT_SECTIONS, "sections.toml", &mut problems);
        let e = EmbargoRules::parse(DEFAULT_EMBARGO, "embargo.toml", "P14D", &s, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        (s, e)
    }

    fn delay(e: &EmbargoRules, section: &str, ty: &str) -> Delay {
        e.rule_for(
            section,
            &Facts {
                resource_type: ty,
                ..Default::default()
            },
        )
        .delay
    }

    #[test]
    fn the_shipped_rules_are_the_contracts() {
        let (_, e) = defaults();
        for (section, ty) in [
            ("dossier", "Patient"),
            ("dossier", "EpisodeOfCare"),
            ("dossier", "CareTeam"),
            ("agenda", "Appointment"),
            ("berichten", "Communication"),
        ] {
            assert_eq!(delay(&e, section, ty), Delay::Immediate, "{ty}");
        }
        let fourteen = Delay::After(IsoDuration::days(14));
        for (section, ty) in [
            ("dossier", "Condition"),
            ("metingen", "Observation"),
            ("rapportages", "DocumentReference"),
            ("zorgplan", "CarePlan"),
            ("medicatie", "MedicationRequest"),
            ("documenten", "DocumentReference"),
        ] {
            assert_eq!(delay(&e, section, ty), fourteen, "{ty}");
        }
    }

    #[test]
    fn values_and_sections_are_checked() {
        assert_eq!(Delay::parse("PT48H").map(|d| d.is_waivable()), Ok(true));
        assert_eq!(Delay::parse("P0D"), Ok(Delay::Immediate));
        assert!(Delay::parse("two weeks").is_err());
        let mut problems = Vec::new();
        let s = Sections::parse(DEFAULT_SECTIONS, "s", &mut problems);
        EmbargoRules::parse(
            "[[rule]]\nsection = \"nope\"\ndelay = \"soon\"\n",
            "e.toml",
            "P14D",
            &s,
            &mut problems,
        );
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["rule[0].section", "rule[0].delay"]);
    }
}
