//! Redaction (`mappings/redaction.toml`): what users in a role are not shown, e.g. the BSN
//! and address of the client to network members, and the private contact details of care staff.
//! Applied to served JSON on the way out; searches on removed elements are refused.

use super::{MappingProblem, OneOrMany};
use crate::access::Role;
use crate::fhir::definitions;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    roles: Vec<String>,
    #[serde(rename = "type")]
    types: OneOrMany,
    remove: Vec<String>,
}

/// One step of a removal path: an element, optionally only the list items whose `key` is `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub only: Option<(String, String)>,
    /// A choice element (`effective[x]`, or `effective` where the type has `effective[x]`):
    /// every `effectiveDateTime`, `effectivePeriod`, … goes.
    pub choice: bool,
}

/// One rule.
#[derive(Debug, Clone)]
pub struct RedactionRule {
    pub roles: Vec<Role>,
    pub types: Vec<String>,
    pub remove: Vec<Vec<Step>>,
}

/// All redaction rules.
#[derive(Debug, Clone, Default)]
pub struct Redaction {
    pub rules: Vec<RedactionRule>,
}

/// Parses `a.b(key=value).c`; dots inside parentheses belong to the value.
pub fn parse_path(text: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name_end, paren) = match rest.find(['.', '(']) {
            Some(i) => (i, rest.as_bytes()[i] == b'('),
            None => (rest.len(), false),
        };
        let written = &rest[..name_end];
        let (name, choice) = match written.strip_suffix("[x]") {
            Some(name) => (name, true),
            None => (written, false),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{text}`: `{written}` is not an element name"));
        }
        let mut only = None;
        rest = &rest[name_end..];
        if paren {
            let close = rest
                .find(')')
                .ok_or_else(|| format!("`{text}`: `(` without `)`"))?;
            let inner = &rest[1..close];
            let (k, v) = inner
                .split_once('=')
                .ok_or_else(|| format!("`{text}`: write `(field=value)`"))?;
            if k.is_empty() || v.is_empty() {
                return Err(format!("`{text}`: write `(field=value)`"));
            }
            only = Some((k.to_string(), v.to_string()));
            rest = &rest[close + 1..];
        }
        steps.push(Step {
            name: name.to_string(),
            only,
            choice,
        });
        if let Some(r) = rest.strip_prefix('.') {
            if r.is_empty() {
                return Err(format!("`{text}` ends with a dot"));
            }
            rest = r;
        } else if !rest.is_empty() {
            return Err(format!("`{text}`: expected `.` after `)`"));
        }
    }
    if steps.is_empty() {
        return Err("an empty path".into());
    }
    Ok(steps)
}

impl Redaction {
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
        let mut rules = Vec::new();
        for (i, raw) in parsed.rule.into_iter().enumerate() {
            let key = format!("rule[{i}]");
            let mut report = |k: &str, m: String| {
                problems.push(MappingProblem {
                    file: file.into(),
                    key: format!("{key}.{k}"),
                    message: m,
                })
            };
            let mut roles = Vec::new();
            for r in &raw.roles {
                match Role::parse(r) {
                    Some(role) => roles.push(role),
                    None => report(
                        "roles",
                        format!("`{r}` is not one of holder, reader, member"),
                    ),
                }
            }
            let types: Vec<String> = raw.types.values().to_vec();
            if types.is_empty() {
                report("type", "a rule names at least one resource type".into());
            }
            for t in &types {
                if !crate::fhir::definitions::is_resource_type(t) {
                    report("type", format!("`{t}` is not an R4 resource type"));
                }
            }
            let mut remove = Vec::new();
            for r in &raw.remove {
                match parse_path(r) {
                    Ok(mut p) => match resolve_elements(&mut p, &types) {
                        Ok(()) => remove.push(p),
                        Err(m) => report("remove", format!("`{r}`: {m}")),
                    },
                    Err(m) => report("remove", m),
                }
            }
            rules.push(RedactionRule {
                roles,
                types,
                remove,
            });
        }
        Self { rules }
    }

    fn applying(&self, role: Role, resource_type: &str) -> impl Iterator<Item = &RedactionRule> {
        self.rules
            .iter()
            .filter(move |r| r.roles.contains(&role) && r.types.iter().any(|t| t == resource_type))
    }

    /// Whether any rule applies to `role` and `resource_type`.
    pub fn touches(&self, role: Role, resource_type: &str) -> bool {
        self.applying(role, resource_type).next().is_some()
    }

    /// Whether `apply` can change a resource of `resource_type` whose stored JSON is `body`:
    /// a rule for the type, or contained resources while the role has any rule.
    pub fn may_touch(&self, role: Role, resource_type: &str, body: &str) -> bool {
        self.touches(role, resource_type)
            || (self.rules.iter().any(|r| r.roles.contains(&role))
                && body.contains("\"contained\""))
    }

    /// Removes what `role` may not see; marks the resource REDACTED if anything went. Where
    /// anything went, the narrative (`text`) goes too (it may say what was removed), and so
    /// do contained resources that nothing left refers to (a contact's RelatedPerson); the
    /// rules apply to contained resources of their types as well.
    pub fn apply(&self, role: Role, resource: &mut Value) {
        if self.redact(role, resource)
            && let Value::Object(map) = resource
        {
            let meta = map.entry("meta").or_insert_with(|| json!({}));
            if let Value::Object(meta) = meta {
                let security = meta.entry("security").or_insert_with(|| json!([]));
                if let Value::Array(list) = security {
                    list.push(json!({
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                        "code": "REDACTED",
                        "display": "redacted"
                    }));
                }
            }
        }
    }

    /// [`Redaction::apply`] without the mark: whether anything was removed.
    fn redact(&self, role: Role, resource: &mut Value) -> bool {
        let Some(ty) = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return false;
        };
        let mut removed = false;
        for rule in self.applying(role, &ty) {
            for path in &rule.remove {
                removed |= remove(resource, path);
            }
        }
        let Value::Object(map) = resource else {
            return removed;
        };
        if let Some(Value::Array(contained)) = map.get_mut("contained") {
            for inner in contained.iter_mut() {
                removed |= self.redact(role, inner);
            }
        }
        if removed {
            map.remove("text");
            drop_unreferenced_contained(map);
        }
        removed
    }

    /// The paths of element names (without their `(field=value)` conditions) that `role` may
    /// lose of `resource_type`: for refusing searches on them and for references inside them.
    /// A conditional removal counts as removing the whole element (the safe side).
    pub fn removed_paths(&self, role: Role, resource_type: &str) -> Vec<Vec<&str>> {
        let mut out: Vec<Vec<&str>> = self
            .applying(role, resource_type)
            .flat_map(|r| {
                r.remove
                    .iter()
                    .map(|p| p.iter().map(|s| s.name.as_str()).collect())
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The removed paths of [`Redaction::removed_paths`] as stored reference paths start:
    /// `(path, open)`, where an `open` path ends in a choice element and so also starts
    /// `valueReference` for `value`.
    pub fn removed_prefixes(&self, role: Role, resource_type: &str) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = self
            .applying(role, resource_type)
            .flat_map(|r| {
                r.remove.iter().map(|p| {
                    let names: Vec<&str> = p.iter().map(|s| s.name.as_str()).collect();
                    (names.join("."), p.last().is_some_and(|s| s.choice))
                })
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The resource types any rule redacts for `role`.
    pub fn types_for(&self, role: Role) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .rules
            .iter()
            .filter(|r| r.roles.contains(&role))
            .flat_map(|r| r.types.iter().map(String::as_str))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Checks a removal path against the R4 definitions of the rule's types: it must name an
/// element of at least one of them; a step that names a choice element (`effective` of an
/// Observation) is marked as such, so that `effectiveDateTime` goes too.
fn resolve_elements(path: &mut [Step], types: &[String]) -> Result<(), String> {
    let known = |names: &[String]| {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        types
            .iter()
            .any(|t| definitions::element_type(t, &names).is_some())
    };
    let mut names: Vec<String> = Vec::with_capacity(path.len());
    for step in path.iter_mut() {
        let choice_name = format!("{}[x]", step.name);
        names.push(choice_name);
        if step.choice || known(&names) {
            step.choice = true;
            continue;
        }
        names.pop();
        names.push(step.name.clone());
        if !known(&names) {
            return Err(format!(
                "`{}` is not an element of {}",
                names.join("."),
                types.join(" or ")
            ));
        }
    }
    Ok(())
}

/// Removes the contained resources that nothing outside them refers to (`#id`), nor any
/// contained resource that is itself referred to.
fn drop_unreferenced_contained(map: &mut serde_json::Map<String, Value>) {
    let Some(Value::Array(contained)) = map.remove("contained") else {
        return;
    };
    let mut wanted: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for v in map.values() {
        local_references(v, &mut wanted);
    }
    let mut kept = vec![false; contained.len()];
    loop {
        let mut grew = false;
        for (i, c) in contained.iter().enumerate() {
            let id = c.get("id").and_then(Value::as_str).unwrap_or("");
            if !kept[i] && wanted.contains(id) {
                kept[i] = true;
                grew = true;
                local_references(c, &mut wanted);
            }
        }
        if !grew {
            break;
        }
    }
    let left: Vec<Value> = contained
        .into_iter()
        .zip(kept)
        .filter_map(|(c, keep)| keep.then_some(c))
        .collect();
    if !left.is_empty() {
        map.insert("contained".into(), Value::Array(left));
    }
}

/// The ids of `#id` references in `value`.
fn local_references(value: &Value, out: &mut std::collections::BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("reference", Value::String(r)) => {
                        if let Some(id) = r.strip_prefix('#') {
                            out.insert(id.to_string());
                        }
                    }
                    _ => local_references(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| local_references(v, out)),
        _ => {}
    }
}

/// Removes `path` from `value`; whether anything was removed.
fn remove(value: &mut Value, path: &[Step]) -> bool {
    let Some((step, rest)) = path.split_first() else {
        return false;
    };
    match value {
        Value::Array(items) => items.iter_mut().fold(false, |acc, v| remove(v, path) | acc),
        Value::Object(map) => {
            if !rest.is_empty() {
                return map.get_mut(&step.name).is_some_and(|v| {
                    let mut hit = false;
                    match v {
                        Value::Array(items) => {
                            for item in items.iter_mut().filter(|i| matches(i, &step.only)) {
                                hit |= remove(item, rest);
                            }
                        }
                        other if matches(other, &step.only) => hit = remove(other, rest),
                        _ => {}
                    }
                    hit
                });
            }
            // The element's keys: the name, or every type of a choice element; each with its
            // `_` twin (a primitive's id and extensions), also where only the twin is there.
            let keys: Vec<String> = map
                .keys()
                .filter(|k| {
                    let k = k.strip_prefix('_').unwrap_or(k);
                    k == step.name
                        || (step.choice
                            && k.strip_prefix(step.name.as_str()).is_some_and(|rest| {
                                rest.starts_with(|c: char| c.is_ascii_uppercase())
                            }))
                })
                .cloned()
                .collect();
            let mut hit = false;
            for key in keys {
                let twin = key.starts_with('_');
                match (&step.only, map.get_mut(&key)) {
                    (_, None) => {}
                    (None, Some(_)) => {
                        map.remove(&key);
                        hit = true;
                    }
                    // A conditional removal looks at the element itself, not its twin.
                    (Some(_), Some(_)) if twin => {}
                    (Some(_), Some(Value::Array(items))) => {
                        let before = items.len();
                        items.retain(|i| !matches(i, &step.only));
                        hit |= items.len() != before;
                        if items.is_empty() {
                            map.remove(&key);
                        }
                    }
                    (Some(_), Some(single)) => {
                        if matches(single, &step.only) {
                            map.remove(&key);
                            hit = true;
                        }
                    }
                }
            }
            hit
        }
        _ => false,
    }
}

fn matches(item: &Value, only: &Option<(String, String)>) -> bool {
    match only {
        None => true,
        Some((k, v)) => item.get(k).and_then(Value::as_str) == Some(v.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::DEFAULT_REDACTION;

    fn defaults() -> Redaction {
        let mut problems = Vec::new();
        let r = Redaction::parse(DEFAULT_REDACTION, "redaction.toml", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        r
    }

    #[test]
    fn members_do_not_see_the_bsn_address_or_phone() {
        let mut p = json!({"resourceType": "Patient", "id": "p1",
            "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999911120"},
                           {"system": "urn:oid:2.16.840.1.113883.2.4.3.11.999.7.6", "value": "cl-1"}],
            "name": [{"text": "Jo"}], "telecom": [{"system": "phone", "value": "06"}],
            "address": [{"city": "Utrecht"}], "birthDate": "1938-03-14"});
        let holder_view = {
            let mut h = p.clone();
            defaults().apply(Role::Holder, &mut h);
            h
        };
        assert_eq!(holder_view["identifier"].as_array().unwrap().len(), 2);
        defaults().apply(Role::Member, &mut p);
        assert_eq!(p["identifier"].as_array().unwrap().len(), 1);
        assert!(p.get("telecom").is_none() && p.get("address").is_none());
        assert_eq!(p["name"][0]["text"], "Jo");
        assert_eq!(p["meta"]["security"][0]["code"], "REDACTED");
    }

    #[test]
    fn the_narrative_and_contained_resources_go_with_what_they_tell() {
        let mut p = json!({"resourceType": "Patient", "id": "p1",
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">BSN 999911120, Dorpsstraat 1</div>"},
            "contained": [
                {"resourceType": "RelatedPerson", "id": "zus", "patient": {"reference": "Patient/p1"},
                 "telecom": [{"system": "phone", "value": "06"}]},
                {"resourceType": "Practitioner", "id": "gp", "telecom": [
                    {"system": "phone", "value": "030", "use": "work"}, {"system": "phone", "value": "06", "use": "mobile"}],
                 "address": [{"use": "home", "city": "Utrecht"}]},
                {"resourceType": "Organization", "id": "org", "name": "via gp", "partOf": {"reference": "#zus"}}
            ],
            "generalPractitioner": [{"reference": "#gp"}],
            "contact": [{"relationship": [{"text": "zus"}], "organization": {"reference": "#zus"}}],
            "address": [{"city": "Utrecht"}]});
        let holder = {
            let mut h = p.clone();
            defaults().apply(Role::Holder, &mut h);
            h
        };
        assert_eq!(holder["contained"].as_array().unwrap().len(), 3);
        assert!(holder.get("text").is_some());
        defaults().apply(Role::Member, &mut p);
        assert!(p.get("text").is_none(), "{p}");
        let contained = p["contained"].as_array().unwrap();
        assert_eq!(contained.len(), 1, "only what is still referred to: {p}");
        assert_eq!(contained[0]["id"], "gp");
        assert_eq!(
            contained[0]["telecom"],
            json!([{"system": "phone", "value": "030", "use": "work"}]),
            "the rules for a type apply to contained ones"
        );
        assert!(contained[0].get("address").is_none());
        // An Observation with a contained Practitioner: the Practitioner's rule applies.
        let mut o = json!({"resourceType": "Observation", "contained": [{"resourceType": "Practitioner", "id": "x",
            "telecom": [{"system": "phone", "value": "06", "use": "home"}]}], "performer": [{"reference": "#x"}]});
        assert!(defaults().may_touch(Role::Member, "Observation", &o.to_string()));
        defaults().apply(Role::Member, &mut o);
        assert!(o["contained"][0].get("telecom").is_none(), "{o}");
        assert_eq!(o["meta"]["security"][0]["code"], "REDACTED");
    }

    #[test]
    fn choice_elements_and_lone_twins_go_whole() {
        let mut problems = Vec::new();
        let r = Redaction::parse(
            "[[rule]]\nroles = [\"member\"]\ntype = \"Observation\"\nremove = [\"effective\", \"value[x]\"]\n\
             [[rule]]\nroles = [\"member\"]\ntype = \"Patient\"\nremove = [\"birthDate\", \"deceased\"]\n",
            "r.toml",
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let mut o = json!({"resourceType": "Observation", "effectiveDateTime": "2026-01-01",
            "_effectiveDateTime": {"extension": []}, "valueQuantity": {"value": 1}, "status": "final"});
        r.apply(Role::Member, &mut o);
        assert_eq!(o.get("status"), Some(&json!("final")));
        for gone in ["effectiveDateTime", "_effectiveDateTime", "valueQuantity"] {
            assert!(o.get(gone).is_none(), "{gone}: {o}");
        }
        let mut p = json!({"resourceType": "Patient", "_birthDate": {"extension": [{"url": "x", "valueDate": "1931-02-03"}]},
            "deceasedBoolean": true});
        r.apply(Role::Member, &mut p);
        assert!(
            p.get("_birthDate").is_none() && p.get("deceasedBoolean").is_none(),
            "{p}"
        );
        assert_eq!(p["meta"]["security"][0]["code"], "REDACTED");
        // A path that names no element of the rule's types is reported.
        let mut problems = Vec::new();
        Redaction::parse(
            "[[rule]]\nroles = [\"member\"]\ntype = \"Patient\"\nremove = [\"adress\", \"contact.telekom\"]\n",
            "r.toml",
            &mut problems,
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn practitioners_keep_their_work_contacts() {
        let mut dr = json!({"resourceType": "Practitioner", "telecom": [
            {"system": "phone", "value": "030", "use": "work"}, {"system": "phone", "value": "06", "use": "mobile"}]});
        defaults().apply(Role::Member, &mut dr);
        assert_eq!(
            dr["telecom"],
            json!([{"system": "phone", "value": "030", "use": "work"}])
        );
    }

    #[test]
    fn paths_parse_and_bad_ones_are_reported() {
        assert_eq!(parse_path("contact.telecom").unwrap().len(), 2);
        let p = parse_path("identifier(system=http://x.org/a.b)").unwrap();
        assert_eq!(
            p[0].only,
            Some(("system".into(), "http://x.org/a.b".into()))
        );
        for bad in ["", "a..b", "a(b)", "a(=x)", "a.", "a(x=1)b", "a b"] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
        let mut problems = Vec::new();
        Redaction::parse(
            "[[rule]]\nroles = [\"guest\"]\ntype = \"Patiënt\"\nremove = [\"a..b\"]\n",
            "r.toml",
            &mut problems,
        );
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["rule[0].roles", "rule[0].type", "rule[0].remove"]);
    }
}
