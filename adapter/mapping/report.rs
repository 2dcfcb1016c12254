//! What `sluis check` tells about the mappings: which rule each type falls under, which
//! patient-compartment types no rule maps, and what is stored but never served.

use super::{Facts, Mappings};
use crate::fhir::definitions;
use crate::store::db::{Db, Sql};
use std::fmt::Write as _;

/// The section and embargo rule of every patient-compartment type, and the unmapped ones.
pub fn coverage(m: &Mappings) -> String {
    let mut mapped = String::new();
    let mut unmapped = Vec::new();
    for ty in definitions::resource_types() {
        if ty != "Patient" && definitions::patient_compartment(ty).is_none() {
            continue;
        }
        let rules: Vec<&super::sections::SectionRule> = m
            .sections
            .rules
            .iter()
            .filter(|r| r.matcher.types.iter().any(|t| t == ty))
            .collect();
        if rules.is_empty() {
            unmapped.push(ty);
            continue;
        }
        for r in rules {
            let narrowed = !(r.matcher.category.is_empty()
                && r.matcher.code.is_empty()
                && r.matcher.profile.is_empty());
            let facts = Facts {
                resource_type: ty,
                ..Default::default()
            };
            let embargo = m.embargo.rule_for(&r.section, &facts);
            let _ = writeln!(
                mapped,
                "  {ty:<26} -> {:<12} {:<40} delay {} ({})",
                r.section,
                if narrowed {
                    r.matcher.describe()
                } else {
                    String::new()
                },
                embargo.delay,
                embargo.name
            );
        }
    }
    let mut out = format!("Mapped resource types (section, narrowing, embargo rule):\n{mapped}");
    let _ = writeln!(
        out,
        "Embargo rules, first match wins (narrowed rules apply to the codes they name):"
    );
    for (i, r) in m.embargo.rules.iter().enumerate() {
        let _ = writeln!(
            out,
            "  rule[{i}]  {:<12} {:<50} -> {}",
            r.section,
            r.matcher.describe(),
            r.delay
        );
    }
    let _ = writeln!(out, "  default  anything else -> {}", m.embargo.default);
    let _ = write!(
        out,
        "Patient-compartment types no rule maps (stored, never served): {}",
        unmapped.join(", ")
    );
    out
}

/// Stored resources that no section rule mapped, per type and code, with counts.
pub async fn stored_unmapped(db: &Db) -> Result<String, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        #[sqlx(rename = "type")]
        #[serde(rename = "type")]
        resource_type: String,
        system: Option<String>,
        code: Option<String>,
        n: i64,
    }
    let sql = Sql::new(
        "SELECT v.type, t.system, t.code, COUNT(DISTINCT v.resource_id) AS n \
         FROM versions v JOIN resources r ON r.id = v.resource_id AND r.last_version = v.version_no \
         LEFT JOIN search_tokens t ON t.version_id = v.id AND t.param IN ('code', 'type') \
         WHERE v.section IS NULL AND v.withdrawn = 0 \
         GROUP BY v.type, t.system, t.code ORDER BY v.type, n DESC LIMIT 200",
    );
    let rows: Vec<Row> = db.fetch_all(&sql).await?;
    if rows.is_empty() {
        return Ok("Stored resources without a section: none".into());
    }
    let mut out =
        String::from("Stored resources without a section (never served), by type and code:\n");
    for r in rows {
        let code = match (&r.system, &r.code) {
            (Some(s), Some(c)) if !s.is_empty() => format!("{s}|{c}"),
            (_, Some(c)) => c.clone(),
            _ => "(no code)".into(),
        };
        let _ = writeln!(out, "  {:<26} {:<50} {}", r.resource_type, code, r.n);
    }
    Ok(out)
}
