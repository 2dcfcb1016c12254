//! What data means: the mapping files of `mappings/` (sections, embargo rules).
//!
//! Rules match a resource on its type and optionally its category, code or profile. The facts a
//! rule looks at ([`Facts`]) are computed once at ingest from the resource, so rules never walk
//! JSON themselves. Mappings are loaded from the folder named by `mappings.dir`, or from the
//! defaults built into the binary (the same files as `mappings/` in the repository).

pub mod embargo;
pub mod redaction;
pub mod report;
pub mod sections;

use serde::Deserialize;
use std::path::Path;

/// The shipped `mappings/sections.toml`, used when no mappings folder is configured.
pub const DEFAULT_SECTIONS: &str = include_str!("../../mappings/sections.toml");
/// The shipped `mappings/embargo.toml`, used when no mappings folder is configured.
pub const DEFAULT_EMBARGO: &str = include_str!("../../mappings/embargo.toml");
/// The shipped `mappings/redaction.toml`, used when no mappings folder is configured or the
/// configured one has none.
pub const DEFAULT_REDACTION: &str = include_str!("../../mappings/redaction.toml");

/// What rules know of a resource.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub resource_type: &'a str,
    /// `(system, code)` of the resource's category (search parameter `category`).
    pub category: &'a [(String, String)],
    /// `(system, code)` of its code (parameter `code`, or `type` where the type has no `code`).
    pub code: &'a [(String, String)],
    /// `meta.profile` canonicals.
    pub profile: &'a [String],
}

/// One problem in a mapping file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingProblem {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for MappingProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.key, self.message)
    }
}

/// A string or a list of strings, as rules allow for `type`, `category`, `code` and `profile`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(untagged)]
pub enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn values(&self) -> &[String] {
        match self {
            OneOrMany::None => &[],
            OneOrMany::One(one) => std::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        }
    }
}

/// A token as written in a rule: `system|code`, or `code` for any system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPattern {
    pub system: Option<String>,
    pub code: String,
}

impl TokenPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (system, code) = match text.split_once('|') {
            Some((s, c)) => (Some(s.to_string()), c.to_string()),
            None => (None, text.to_string()),
        };
        if code.is_empty() || system.as_deref() == Some("") {
            return Err(format!("`{text}` is not `system|code` or `code`"));
        }
        Ok(Self { system, code })
    }

    pub fn matches(&self, tokens: &[(String, String)]) -> bool {
        tokens.iter().any(|(system, code)| {
            *code == self.code && self.system.as_ref().is_none_or(|s| s == system)
        })
    }
}

impl std::fmt::Display for TokenPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.system {
            Some(s) => write!(f, "{s}|{}", self.code),
            None => f.write_str(&self.code),
        }
    }
}

/// The part of a rule that says which resources it applies to.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    /// Empty: any type.
    pub types: Vec<String>,
    pub category: Vec<TokenPattern>,
    pub code: Vec<TokenPattern>,
    pub profile: Vec<String>,
}

impl Matcher {
    /// Builds a matcher from a rule's fields, reporting problems under `key`.
    pub fn build(
        types: &OneOrMany,
        category: &OneOrMany,
        code: &OneOrMany,
        profile: &OneOrMany,
        key: &str,
        report: &mut dyn FnMut(String, String),
    ) -> Self {
        let mut tokens = |field: &str, values: &OneOrMany| -> Vec<TokenPattern> {
            values
                .values()
                .iter()
                .filter_map(|v| {
                    TokenPattern::parse(v)
                        .map_err(|m| report(format!("{key}.{field}"), m))
                        .ok()
                })
                .collect()
        };
        let category = tokens("category", category);
        let code = tokens("code", code);
        let mut matcher = Matcher {
            types: types.values().to_vec(),
            category,
            code,
            profile: profile.values().to_vec(),
        };
        matcher.types.retain(|t| {
            let known = crate::fhir::definitions::is_resource_type(t);
            if !known {
                report(
                    format!("{key}.type"),
                    format!("`{t}` is not an R4 resource type"),
                );
            }
            known
        });
        matcher
    }

    pub fn matches(&self, facts: &Facts<'_>) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == facts.resource_type))
            && (self.category.is_empty() || self.category.iter().any(|p| p.matches(facts.category)))
            && (self.code.is_empty() || self.code.iter().any(|p| p.matches(facts.code)))
            && (self.profile.is_empty() || self.profile.iter().any(|p| facts.profile.contains(p)))
    }

    /// A short description for `sluis check` and `/admin/explain`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.types.is_empty() {
            parts.push(self.types.join("|"));
        }
        let join = |v: &[TokenPattern]| {
            v.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        };
        if !self.category.is_empty() {
            parts.push(format!("category {}", join(&self.category)));
        }
        if !self.code.is_empty() {
            parts.push(format!("code {}", join(&self.code)));
        }
        if !self.profile.is_empty() {
            parts.push(format!("profile {}", self.profile.join(" or ")));
        }
        if parts.is_empty() {
            "any resource".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The loaded mappings.
#[derive(Debug, Clone)]
pub struct Mappings {
    pub sections: sections::Sections,
    pub embargo: embargo::EmbargoRules,
    pub redaction: redaction::Redaction,
    /// Both files as read, for noticing that rules changed between starts.
    pub source_text: String,
}

impl Mappings {
    /// Loads `sections.toml`, `embargo.toml` and `redaction.toml` from `dir`, or the built-in
    /// defaults (also for a folder without `redaction.toml`).
    /// `default_delay` is `embargo.default` from the config.
    pub fn load(dir: Option<&Path>, default_delay: &str) -> Result<Self, Vec<MappingProblem>> {
        let builtin_redaction = (
            DEFAULT_REDACTION.to_string(),
            "built-in mappings/redaction.toml".to_string(),
        );
        let (
            sections_text,
            sections_file,
            embargo_text,
            embargo_file,
            (redaction_text, redaction_file),
        ) = match dir {
            None => (
                DEFAULT_SECTIONS.to_string(),
                "built-in mappings/sections.toml".to_string(),
                DEFAULT_EMBARGO.to_string(),
                "built-in mappings/embargo.toml".to_string(),
                builtin_redaction,
            ),
            Some(dir) => {
                let read = |name: &str| {
                    let path = dir.join(name);
                    std::fs::read_to_string(&path)
                        .map(|t| (t, path.display().to_string()))
                        .map_err(|e| MappingProblem {
                            file: path.display().to_string(),
                            key: String::new(),
                            message: format!("cannot read: {e}"),
                        })
                };
                let (s, sf) = read("sections.toml").map_err(|p| vec![p])?;
                let (e, ef) = read("embargo.toml").map_err(|p| vec![p])?;
                let r = if dir.join("redaction.toml").exists() {
                    read("redaction.toml").map_err(|p| vec![p])?
                } else {
                    builtin_redaction
                };
                (s, sf, e, ef, r)
            }
        };
        let mut problems = Vec::new();
        let sections = sections::Sections::parse(&sections_text, &sections_file, &mut problems);
        let embargo = embargo::EmbargoRules::parse(
            &embargo_text,
            &embargo_file,
            default_delay,
            &sections,
            &mut problems,
        );
        let redaction =
            redaction::Redaction::parse(&redaction_text, &redaction_file, &mut problems);
        if problems.is_empty() {
            Ok(Self {
                sections,
                embargo,
                redaction,
                source_text: format!("{sections_text}\n---\n{embargo_text}"),
            })
        } else {
            Err(problems)
        }
    }
}
