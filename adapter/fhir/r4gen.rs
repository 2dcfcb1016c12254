//! The generator of `r4_tables.rs` (compiled in tests only): reads the
//! hl7.fhir.r4.core 4.0.1 package (StructureDefinitions, SearchParameters,
//! ValueSets, CodeSystems, the patient CompartmentDefinition) and renders the
//! tables. `generated_tables_are_current` compares the rendering with the
//! committed file; `SLUIS_REGENERATE=1` rewrites it instead.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

/// The committed tables, relative to `CARGO_MANIFEST_DIR`. In the scratch
/// crate `src/fhir/r4_tables.rs`; in sluis `adapter/fhir/r4_tables.rs`.
const TABLES_PATH: &str = "adapter/fhir/r4_tables.rs";

/// The core package, relative to `CARGO_MANIFEST_DIR`.
const PACKAGE_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/corpora/fhir-r4-definitions/hl7.fhir.r4.core-4.0.1/package"
);

/// The abstract bases whose elements are stored once and inherited.
const BASES: [&str; 4] = ["DomainResource", "Resource", "BackboneElement", "Element"];

/// An element as collected from a snapshot.
#[derive(Debug, Clone)]
struct ElemB {
    min: u32,
    /// `None` = `*`.
    max: Option<u32>,
    choice: bool,
    types: Vec<String>,
    inner: String,
    binding: String,
}

#[derive(Debug, Default)]
struct OwnerB {
    base: String,
    elems: BTreeMap<String, ElemB>,
}

/// A converted search-parameter path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PathB {
    segments: Vec<String>,
    only_type: Option<String>,
    resolve_is: Option<String>,
}

#[derive(Debug)]
struct ParamB {
    ty: String,
    paths: Vec<PathB>,
    targets: Vec<String>,
}

/// Everything the tables are rendered from, plus generator statistics.
#[derive(Debug, Default)]
struct Model {
    resource_types: BTreeSet<String>,
    owners: BTreeMap<String, OwnerB>,
    value_sets: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    params: BTreeMap<String, BTreeMap<String, ParamB>>,
    compartment: BTreeMap<String, Vec<String>>,
    report: Vec<String>,
    skipped_parts: usize,
    skipped_params: usize,
    unexpanded_bindings: BTreeSet<String>,
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// All package files whose name starts with `prefix`, sorted by name.
fn files(dir: &Path, prefix: &str) -> Result<Vec<Value>, String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(".json") {
            names.push(name);
        }
    }
    names.sort();
    names.iter().map(|n| read_json(&dir.join(n))).collect()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Value-set expansion from the package's ValueSets and CodeSystems.
struct Expander<'a> {
    value_sets: BTreeMap<&'a str, &'a Value>,
    code_systems: BTreeMap<&'a str, &'a Value>,
}

type Expansion = BTreeMap<String, BTreeSet<String>>;

impl Expander<'_> {
    fn expand(&self, url: &str, depth: usize) -> Result<Expansion, String> {
        let url = url.split('|').next().unwrap_or(url);
        if depth > 10 {
            return Err(format!("{url}: too deep"));
        }
        let vs = self
            .value_sets
            .get(url)
            .ok_or_else(|| format!("{url}: no ValueSet"))?;
        let compose = vs
            .get("compose")
            .ok_or_else(|| format!("{url}: no compose"))?;
        let mut out = Expansion::new();
        for inc in arr(compose, "include") {
            if inc.get("filter").is_some() {
                return Err(format!("{url}: include with filter"));
            }
            let mut part: Option<Expansion> = None;
            let system = s(inc, "system");
            if !system.is_empty() {
                let mut codes = BTreeSet::new();
                if inc.get("concept").is_some() {
                    for c in arr(inc, "concept") {
                        codes.insert(s(c, "code").to_string());
                    }
                } else {
                    let cs = self
                        .code_systems
                        .get(system)
                        .ok_or_else(|| format!("{url}: code system {system} not in package"))?;
                    if s(cs, "content") != "complete" {
                        return Err(format!("{url}: code system {system} not complete"));
                    }
                    collect_concepts(arr(cs, "concept"), &mut codes);
                }
                part = Some(BTreeMap::from([(system.to_string(), codes)]));
            }
            for sub in arr(inc, "valueSet") {
                let other = self.expand(sub.as_str().unwrap_or(""), depth + 1)?;
                part = Some(match part {
                    None => other,
                    Some(p) => intersect(&p, &other),
                });
            }
            for (sys, codes) in part.unwrap_or_default() {
                out.entry(sys).or_default().extend(codes);
            }
        }
        for exc in arr(compose, "exclude") {
            if exc.get("filter").is_some() || exc.get("valueSet").is_some() {
                return Err(format!("{url}: exclude with filter/valueSet"));
            }
            let system = s(exc, "system");
            if exc.get("concept").is_some() {
                if let Some(codes) = out.get_mut(system) {
                    for c in arr(exc, "concept") {
                        codes.remove(s(c, "code"));
                    }
                }
            } else {
                out.remove(system);
            }
        }
        out.retain(|_, codes| !codes.is_empty());
        Ok(out)
    }
}

fn intersect(a: &Expansion, b: &Expansion) -> Expansion {
    let mut out = Expansion::new();
    for (sys, codes) in a {
        if let Some(other) = b.get(sys) {
            out.insert(sys.clone(), codes.intersection(other).cloned().collect());
        }
    }
    out
}

fn collect_concepts(concepts: &[Value], out: &mut BTreeSet<String>) {
    for c in concepts {
        out.insert(s(c, "code").to_string());
        collect_concepts(arr(c, "concept"), out);
    }
}

/// The FHIR type of a snapshot `type` entry (`System.*` codes are mapped
/// through their `structuredefinition-fhir-type` extension).
fn type_code(t: &Value) -> String {
    let code = s(t, "code");
    if !code.starts_with("http://hl7.org/fhirpath/System.") {
        return code.to_string();
    }
    arr(t, "extension")
        .iter()
        .find(|x| s(x, "url").ends_with("structuredefinition-fhir-type"))
        .map(|x| s(x, "valueUrl").to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "string".to_string())
}

fn build() -> Result<Model, String> {
    let dir = Path::new(PACKAGE_DIR);
    let sds = files(dir, "StructureDefinition-")?;
    let vss = files(dir, "ValueSet-")?;
    let css = files(dir, "CodeSystem-")?;
    let sps = files(dir, "SearchParameter-")?;
    let comp = read_json(&dir.join("CompartmentDefinition-patient.json"))?;
    let expander = Expander {
        value_sets: vss.iter().map(|v| (s(v, "url"), v)).collect(),
        code_systems: css.iter().map(|v| (s(v, "url"), v)).collect(),
    };
    let mut m = Model::default();

    for sd in &sds {
        let kind = s(sd, "kind");
        let ty = s(sd, "type");
        let base_type = sd.get("baseDefinition").is_none();
        let special = s(sd, "derivation") == "specialization";
        if !matches!(kind, "complex-type" | "resource") || !(special || base_type) {
            continue;
        }
        if kind == "resource" && sd.get("abstract") != Some(&Value::Bool(true)) {
            m.resource_types.insert(ty.to_string());
        }
        let elements = sd
            .get("snapshot")
            .map(|sn| arr(sn, "element"))
            .ok_or_else(|| format!("{ty}: no snapshot"))?;
        let mut by_path: BTreeMap<&str, &Value> = BTreeMap::new();
        for e in elements {
            by_path.insert(s(e, "path"), e);
        }
        // The root owner exists even if all its elements are inherited.
        m.owners.entry(ty.to_string()).or_default();
        for e in elements {
            let path = s(e, "path");
            let Some((parent, last)) = path.rsplit_once('.') else {
                continue;
            };
            let base_path = e.get("base").map_or("", |b| s(b, "path"));
            let base_root = base_path.split('.').next().unwrap_or("");
            let owner = m.owners.entry(parent.to_string()).or_default();
            if base_root != ty && BASES.contains(&base_root) {
                // Inherited from an abstract base: record the most derived base.
                let rank = |b: &str| BASES.iter().position(|x| *x == b).unwrap_or(BASES.len());
                if owner.base.is_empty() || rank(base_root) < rank(&owner.base) {
                    owner.base = base_root.to_string();
                }
                continue;
            }
            let (name, choice) = match last.strip_suffix("[x]") {
                Some(n) => (n, true),
                None => (last, false),
            };
            let max = match s(e, "max") {
                "*" => None,
                n => Some(n.parse::<u32>().map_err(|_| format!("{path}: bad max"))?),
            };
            let min = e.get("min").and_then(Value::as_u64).unwrap_or(0) as u32;
            let mut types: Vec<String> = arr(e, "type").iter().map(type_code).collect();
            if path == "Resource.id" {
                types = vec!["id".to_string()];
            }
            let content_ref = s(e, "contentReference").trim_start_matches('#').to_string();
            if !content_ref.is_empty() {
                let target = by_path
                    .get(content_ref.as_str())
                    .ok_or_else(|| format!("{path}: contentReference {content_ref} not found"))?;
                types = arr(target, "type").iter().map(type_code).collect();
            }
            let inner = if !content_ref.is_empty() {
                content_ref.clone()
            } else if types.len() == 1 && (types[0] == "BackboneElement" || types[0] == "Element") {
                path.to_string()
            } else {
                String::new()
            };
            if !choice && types.len() != 1 {
                return Err(format!(
                    "{path}: {} types on a non-choice element",
                    types.len()
                ));
            }
            let mut binding = String::new();
            if let Some(b) = e.get("binding")
                && s(b, "strength") == "required"
                && types
                    .iter()
                    .any(|t| matches!(t.as_str(), "code" | "Coding" | "CodeableConcept"))
            {
                let url = s(b, "valueSet");
                let url = url.split('|').next().unwrap_or(url);
                match expander.expand(url, 0) {
                    Ok(exp) if !exp.is_empty() => {
                        m.value_sets.insert(url.to_string(), exp);
                        binding = url.to_string();
                    }
                    Ok(_) => {
                        m.unexpanded_bindings
                            .insert(format!("{url}: empty expansion"));
                    }
                    Err(why) => {
                        m.unexpanded_bindings.insert(why);
                    }
                }
            }
            owner.elems.insert(
                name.to_string(),
                ElemB {
                    min,
                    max,
                    choice,
                    types,
                    inner,
                    binding,
                },
            );
        }
    }
    // Every referenced owner must exist.
    for (key, o) in &m.owners {
        for (name, e) in &o.elems {
            for t in &e.types {
                let known = super::definitions::is_primitive(t)
                    || t == "Resource"
                    || !e.inner.is_empty()
                    || m.owners.contains_key(t);
                if !known {
                    return Err(format!("{key}.{name}: unknown type {t}"));
                }
            }
            if !e.inner.is_empty() && !m.owners.contains_key(&e.inner) {
                return Err(format!("{key}.{name}: unknown inner owner {}", e.inner));
            }
        }
        if !o.base.is_empty() && !m.owners.contains_key(&o.base) {
            return Err(format!("{key}: unknown base {}", o.base));
        }
    }

    search_parameters(&mut m, &sps)?;

    for r in arr(&comp, "resource") {
        let params: Vec<String> = arr(r, "param")
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        if !params.is_empty() {
            m.compartment.insert(s(r, "code").to_string(), params);
        }
    }
    Ok(m)
}

/// One step of a (restricted) FHIRPath expression part.
#[derive(Debug)]
enum Step {
    Name(String),
    As(String),
    ResolveIs(String),
}

/// Splits on `|` outside parentheses and quotes.
fn split_top(expr: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    for (i, c) in expr.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            '|' if !quoted && depth == 0 => {
                parts.push(expr[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(expr[start..].trim());
    parts
}

/// Index of the `)` matching the `(` at `open`.
fn matching_paren(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0i32;
    let mut quoted = false;
    for (i, c) in s[open..].char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn parse_part(part: &str) -> Option<Vec<Step>> {
    let part = part.trim();
    if part.starts_with('(') {
        let close = matching_paren(part, 0)?;
        let (path, ty) = part[1..close].rsplit_once(" as ")?;
        let ty = ty.trim();
        if !is_ident(ty) {
            return None;
        }
        let mut steps = parse_chain(path.trim())?;
        steps.push(Step::As(ty.to_string()));
        let rest = &part[close + 1..];
        if !rest.is_empty() {
            steps.extend(parse_chain(rest.strip_prefix('.')?)?);
        }
        Some(steps)
    } else {
        parse_chain(part)
    }
}

/// `name(.name | .as(T) | .ofType(T) | .where(resolve() is T))*`.
fn parse_chain(s: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let mut rest = s;
    loop {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let ident = &rest[..end];
        if !is_ident(ident) {
            return None;
        }
        rest = &rest[end..];
        if rest.starts_with('(') {
            let close = matching_paren(rest, 0)?;
            let args = rest[1..close].trim();
            rest = &rest[close + 1..];
            match ident {
                "as" | "ofType" if is_ident(args) => steps.push(Step::As(args.to_string())),
                "where" => {
                    let t = args.strip_prefix("resolve() is ")?.trim();
                    if !is_ident(t) {
                        return None;
                    }
                    steps.push(Step::ResolveIs(t.to_string()));
                }
                _ => return None,
            }
        } else {
            steps.push(Step::Name(ident.to_string()));
        }
        if rest.is_empty() {
            return Some(steps);
        }
        rest = rest.strip_prefix('.')?;
    }
}

fn find_elem<'m>(m: &'m Model, owner: &str, name: &str) -> Option<&'m ElemB> {
    let mut cur = m.owners.get(owner);
    while let Some(o) = cur {
        if let Some(e) = o.elems.get(name) {
            return Some(e);
        }
        cur = m.owners.get(&o.base);
    }
    None
}

/// Outcome of converting one expression part for one resource type.
enum Conv {
    Path(PathB),
    OtherType,
    Fail(&'static str),
}

fn convert(m: &Model, ty: &str, steps: &[Step]) -> Conv {
    let mut steps = steps;
    match steps.first() {
        Some(Step::Name(n)) if n == ty => steps = &steps[1..],
        Some(Step::Name(n))
            if m.resource_types.contains(n) || n == "Resource" || n == "DomainResource" =>
        {
            return Conv::OtherType;
        }
        Some(Step::Name(_)) => {} // relative to the resource (e.g. `name | alias`)
        _ => return Conv::Fail("does not start with a name"),
    }
    let mut owner: Option<String> = Some(ty.to_string());
    let mut out = PathB {
        segments: Vec::new(),
        only_type: None,
        resolve_is: None,
    };
    let mut pending_choice: Option<&ElemB> = None;
    let mut last: Option<&ElemB> = None;
    let mut choices = 0;
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Name(n) => {
                if pending_choice.is_some() {
                    return Conv::Fail("choice element without a type cast");
                }
                let Some(o) = owner.as_deref() else {
                    return Conv::Fail("child of a primitive");
                };
                let Some(e) = find_elem(m, o, n) else {
                    return Conv::Fail("unknown element");
                };
                if e.choice {
                    out.segments.push(format!("{n}[x]"));
                    choices += 1;
                    pending_choice = Some(e);
                    owner = None;
                } else {
                    out.segments.push(n.clone());
                    owner = child_owner(e, &e.types[0]);
                }
                last = Some(e);
            }
            Step::As(t) => {
                if let Some(e) = pending_choice.take() {
                    if !e.types.contains(t) || out.only_type.is_some() {
                        return Conv::Fail("cast to a type the choice does not allow");
                    }
                    out.only_type = Some(t.clone());
                    owner = child_owner(e, t);
                } else if last.is_none_or(|e| e.types.first() != Some(t)) {
                    return Conv::Fail("cast of a non-choice element");
                }
            }
            Step::ResolveIs(t) => {
                let is_ref = last.is_some_and(|e| e.types.iter().any(|x| x == "Reference"));
                if !is_ref || i + 1 != steps.len() || !m.resource_types.contains(t) {
                    return Conv::Fail("resolve() is not on a final Reference");
                }
                out.resolve_is = Some(t.clone());
            }
        }
    }
    if out.only_type.is_some() && choices > 1 {
        return Conv::Fail("cast with several choice segments");
    }
    Conv::Path(out)
}

fn child_owner(e: &ElemB, ty: &str) -> Option<String> {
    if !e.inner.is_empty() {
        Some(e.inner.clone())
    } else if super::definitions::is_primitive(ty) || ty == "Resource" {
        None
    } else {
        Some(ty.to_string())
    }
}

fn search_parameters(m: &mut Model, sps: &[Value]) -> Result<(), String> {
    let mut report = Vec::new();
    for sp in sps {
        let code = s(sp, "code");
        if s(sp, "id").starts_with("example") {
            // SearchParameter-example*: examples of the resource, not search parameters of R4.
            report.push(format!("example skipped: {}", s(sp, "id")));
            continue;
        }
        let expr = s(sp, "expression");
        let bases: Vec<&str> = arr(sp, "base").iter().filter_map(Value::as_str).collect();
        let targets: Vec<String> = arr(sp, "target")
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        let parts: Vec<(&str, Option<Vec<Step>>)> = split_top(expr)
            .into_iter()
            .map(|p| (p, parse_part(p)))
            .collect();
        for base in bases {
            if !m.resource_types.contains(base) {
                continue; // Resource / DomainResource level: not expanded per type
            }
            let mut paths = Vec::new();
            for (text, steps) in &parts {
                let conv = match steps {
                    Some(steps) => convert(m, base, steps),
                    None if text.starts_with(&format!("{base}."))
                        || text.starts_with(&format!("({base}.")) =>
                    {
                        Conv::Fail("unsupported function or syntax")
                    }
                    None => Conv::OtherType,
                };
                match conv {
                    Conv::Path(p) => {
                        if !paths.contains(&p) {
                            paths.push(p);
                        }
                    }
                    Conv::OtherType => {}
                    Conv::Fail(why) => {
                        m.skipped_parts += 1;
                        report.push(format!("part skipped: {base}.{code}: `{text}` ({why})"));
                    }
                }
            }
            if expr.is_empty() {
                report.push(format!("param skipped: {base}.{code}: no expression"));
                m.skipped_params += 1;
                continue;
            }
            if paths.is_empty() {
                report.push(format!("param skipped: {base}.{code}: no usable path"));
                m.skipped_params += 1;
                continue;
            }
            let by_type = m.params.entry(base.to_string()).or_default();
            if by_type.contains_key(code) {
                report.push(format!("duplicate: {base}.{code} (first definition kept)"));
                continue;
            }
            by_type.insert(
                code.to_string(),
                ParamB {
                    ty: s(sp, "type").to_string(),
                    paths,
                    targets: targets.clone(),
                },
            );
        }
    }
    m.report.extend(report);
    Ok(())
}

fn param_type(t: &str) -> Result<&'static str, String> {
    Ok(match t {
        "number" => "Number",
        "date" => "Date",
        "string" => "String",
        "token" => "Token",
        "reference" => "Reference",
        "composite" => "Composite",
        "quantity" => "Quantity",
        "uri" => "Uri",
        "special" => "Special",
        other => return Err(format!("unknown search parameter type {other}")),
    })
}

fn flags(e: &ElemB) -> &'static str {
    if e.max == Some(0) {
        return "Z";
    }
    match (e.min > 0, e.max.is_none(), e.choice) {
        (false, false, false) => "O",
        (true, false, false) => "R",
        (false, true, false) => "M",
        (true, true, false) => "RM",
        (false, _, true) => "X",
        (true, _, true) => "RX",
    }
}

fn str_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("&[{}]", inner.join(", "))
}

fn opt(v: &Option<String>) -> String {
    match v {
        Some(x) => format!("Some({x:?})"),
        None => "None".to_string(),
    }
}

fn render(m: &Model) -> Result<String, String> {
    let mut o = String::new();
    let w = |o: &mut String, s: &str| o.push_str(s);
    w(
        &mut o,
        "// @generated by fhir/r4gen.rs from hl7.fhir.r4.core 4.0.1; do not edit\n\
         //! Tables generated from the FHIR R4 core package: resource types, the\n\
         //! element table (snapshots), required-binding value sets, search\n\
         //! parameters and the patient compartment. Regenerate with\n\
         //! `SLUIS_REGENERATE=1 cargo test generated_tables_are_current`.\n\n\
         use super::definitions::{E, T, ValueSetRow};\n\
         use super::definitions::{ParamPath as P, ParamType as Y, SearchParamDef as S};\n\n",
    );
    let used: BTreeSet<&str> = m
        .owners
        .values()
        .flat_map(|ow| ow.elems.values())
        .map(flags)
        .collect();
    let used: Vec<&str> = used.into_iter().collect();
    let _ = writeln!(
        o,
        "use super::definitions::flag::{{{}}};\n",
        used.join(", ")
    );
    let _ = writeln!(
        o,
        "/// The {} concrete resource types.",
        m.resource_types.len()
    );
    let rts: Vec<String> = m.resource_types.iter().cloned().collect();
    let _ = writeln!(
        o,
        "#[rustfmt::skip]\npub(super) static RESOURCE_TYPES: &[&str] = {};\n",
        str_list(&rts)
    );

    let _ = writeln!(
        o,
        "/// Element owners (types and backbone paths), sorted by key."
    );
    o.push_str("#[rustfmt::skip]\npub(super) static OWNERS: &[T] = &[\n");
    for (key, owner) in &m.owners {
        let _ = writeln!(o, "T({key:?}, {:?}, &[", owner.base);
        for (name, e) in &owner.elems {
            let _ = writeln!(
                o,
                "E({name:?}, {}, {}, {:?}, {:?}),",
                flags(e),
                str_list(&e.types),
                e.inner,
                e.binding
            );
        }
        o.push_str("]),\n");
    }
    o.push_str("];\n\n");

    let _ = writeln!(
        o,
        "/// Expanded value sets of required bindings: url, [(system, codes)]."
    );
    o.push_str("#[rustfmt::skip]\npub(super) static VALUE_SETS: &[ValueSetRow] = &[\n");
    for (url, systems) in &m.value_sets {
        let _ = write!(o, "({url:?}, &[");
        for (i, (sys, codes)) in systems.iter().enumerate() {
            let codes: Vec<String> = codes.iter().cloned().collect();
            let sep = if i > 0 { ", " } else { "" };
            let _ = write!(o, "{sep}({sys:?}, {})", str_list(&codes));
        }
        o.push_str("]),\n");
    }
    o.push_str("];\n\n");

    let _ = writeln!(
        o,
        "/// Search parameters per resource type, sorted by type and name."
    );
    o.push_str("#[rustfmt::skip]\npub(super) static SEARCH_PARAMS: &[(&str, &[S])] = &[\n");
    for (ty, params) in &m.params {
        let _ = writeln!(o, "({ty:?}, &[");
        for (name, p) in params {
            let paths: Vec<String> = p
                .paths
                .iter()
                .map(|pp| {
                    format!(
                        "P {{ segments: {}, only_type: {}, resolve_is: {} }}",
                        str_list(&pp.segments),
                        opt(&pp.only_type),
                        opt(&pp.resolve_is)
                    )
                })
                .collect();
            let _ = writeln!(
                o,
                "S {{ name: {name:?}, ty: Y::{}, paths: &[{}], targets: {} }},",
                param_type(&p.ty)?,
                paths.join(", "),
                str_list(&p.targets)
            );
        }
        o.push_str("]),\n");
    }
    o.push_str("];\n\n");

    let _ = writeln!(
        o,
        "/// CompartmentDefinition-patient: type -> params (definition order)."
    );
    o.push_str(
        "#[rustfmt::skip]\npub(super) static PATIENT_COMPARTMENT: &[(&str, &[&str])] = &[\n",
    );
    for (ty, params) in &m.compartment {
        let _ = writeln!(o, "({ty:?}, {}),", str_list(params));
    }
    o.push_str("];\n");
    Ok(o)
}

fn package_present() -> bool {
    if Path::new(PACKAGE_DIR).is_dir() {
        true
    } else {
        println!("skipped: ../shared/corpora not found");
        false
    }
}

#[test]
fn generated_tables_are_current() {
    if !package_present() {
        return;
    }
    let model = build().unwrap();
    let text = render(&model).unwrap();
    let target = format!("{}/{}", env!("CARGO_MANIFEST_DIR"), TABLES_PATH);
    if std::env::var("SLUIS_REGENERATE").as_deref() == Ok("1") {
        std::fs::write(&target, &text).unwrap();
        println!("wrote {target} ({} bytes)", text.len());
        return;
    }
    let committed = std::fs::read_to_string(&target).unwrap_or_default();
    assert!(
        committed == text,
        "{target} is stale: run `SLUIS_REGENERATE=1 cargo test generated_tables_are_current`"
    );
}

#[test]
fn generator_report() {
    if !package_present() {
        return;
    }
    let m = build().unwrap();
    for line in &m.report {
        println!("{line}");
    }
    for why in &m.unexpanded_bindings {
        println!("required binding not checked: {why}");
    }
    let params: usize = m.params.values().map(BTreeMap::len).sum();
    let paths: usize = m
        .params
        .values()
        .flat_map(|p| p.values())
        .map(|p| p.paths.len())
        .sum();
    println!(
        "resource types: {}, owners: {}, elements: {}, value sets: {} ({} codes)",
        m.resource_types.len(),
        m.owners.len(),
        m.owners.values().map(|o| o.elems.len()).sum::<usize>(),
        m.value_sets.len(),
        m.value_sets
            .values()
            .flat_map(|v| v.values())
            .map(BTreeSet::len)
            .sum::<usize>(),
    );
    println!(
        "search params: {params} (type, param) pairs with {paths} paths; \
         skipped expression parts: {}; (type, param) pairs left out: {}; \
         required bindings not checked: {}",
        m.skipped_parts,
        m.skipped_params,
        m.unexpanded_bindings.len()
    );
    assert_eq!(m.resource_types.len(), 146);
}

#[test]
fn expression_parser() {
    let p = parse_part("(Observation.value as CodeableConcept).text").unwrap();
    assert_eq!(p.len(), 4);
    assert!(parse_part("Patient.extension('x')").is_none());
    assert!(parse_part("Bundle.entry[0].resource").is_none());
    assert!(matches!(
        parse_part("Account.subject.where(resolve() is Patient)").unwrap().as_slice(),
        [Step::Name(_), Step::Name(_), Step::ResolveIs(t)] if t == "Patient"
    ));
    assert_eq!(split_top("A.b | (A.c as X) | A.where(x='|')").len(), 3);
}
