//! What release moments are computed from, and writing them back: earlier versions, staff
//! actions, the holder's waivers.

use super::db::{Arg, Executor, Sql, Tx};
use crate::time::Micros;
use std::collections::{BTreeSet, HashMap};

/// A stored version as the release computation sees it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct StoredVersion {
    pub id: i64,
    pub resource_id: i64,
    pub version_no: i64,
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub resource_type: String,
    pub fhir_id: String,
    pub patient_id: Option<String>,
    pub section: Option<String>,
    pub arrived_at: i64,
    pub release_at: Option<i64>,
    pub rule: String,
    pub withdrawn: i64,
    pub tagged: i64,
}

const COLUMNS: &str = "id, resource_id, version_no, type, fhir_id, patient_id, section, arrived_at, \
                       release_at, rule, withdrawn, tagged";

/// Every version of the given resources, in version order per resource.
pub async fn versions_of(
    mut ex: impl Executor,
    resource_ids: &[i64],
) -> Result<HashMap<i64, Vec<StoredVersion>>, crate::store::Error> {
    let mut out: HashMap<i64, Vec<StoredVersion>> = HashMap::new();
    for chunk in resource_ids.chunks(500) {
        let mut sql = Sql::new(format!(
            "SELECT {COLUMNS} FROM versions WHERE resource_id IN ("
        ));
        sql.bind_list(chunk.iter().copied());
        sql.push(") ORDER BY resource_id, version_no");
        for v in ex.fetch_all::<StoredVersion>(&sql).await? {
            out.entry(v.resource_id).or_default().push(v);
        }
    }
    Ok(out)
}

/// Resources with a version not shown at `now` (waiting, held or manual), optionally of one client.
pub async fn waiting_resources(
    mut ex: impl Executor,
    now: Micros,
    patient_id: Option<&str>,
) -> Result<Vec<i64>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        resource_id: i64,
    }
    let mut sql = Sql::new(
        "SELECT DISTINCT resource_id FROM versions WHERE withdrawn <> 1 AND (release_at IS NULL OR release_at > ",
    );
    sql.bind(now);
    sql.push(")");
    if let Some(p) = patient_id {
        sql.push(" AND patient_id = ");
        sql.bind(p);
    }
    Ok(ex
        .fetch_all::<Row>(&sql)
        .await?
        .into_iter()
        .map(|r| r.resource_id)
        .collect())
}

/// The resource id of `(type, id)`, if stored.
pub async fn resource_id(
    mut ex: impl Executor,
    resource_type: &str,
    fhir_id: &str,
) -> Result<Option<i64>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        id: i64,
    }
    let sql = Sql::new("SELECT id FROM resources WHERE type = $1 AND fhir_id = $2")
        .arg(resource_type)
        .arg(fhir_id);
    Ok(ex.fetch_optional::<Row>(&sql).await?.map(|r| r.id))
}

/// The clients whose dossiers `Type/id` has been in (a resource can move from one client to
/// another), each once, the newest version's first; none if it has not arrived.
pub async fn owners(
    mut ex: impl Executor,
    resource_type: &str,
    fhir_id: &str,
) -> Result<Vec<String>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        patient_id: String,
    }
    let sql = Sql::new(
        "SELECT v.patient_id AS patient_id FROM resources r \
         JOIN versions v ON v.resource_id = r.id \
         WHERE r.type = $1 AND r.fhir_id = $2 AND v.patient_id IS NOT NULL \
         ORDER BY v.id DESC",
    )
    .arg(resource_type)
    .arg(fhir_id);
    let mut owners: Vec<String> = Vec::new();
    for row in ex.fetch_all::<Row>(&sql).await? {
        if !owners.contains(&row.patient_id) {
            owners.push(row.patient_id);
        }
    }
    Ok(owners)
}

/// The clients whose dossiers any of the resources `Type/id` of `ids` has been in, each once
/// (in no set order); none for ids that have not arrived.
pub async fn owners_of(
    db: &crate::store::Db,
    resource_type: &str,
    ids: &[String],
) -> Result<Vec<String>, crate::store::Error> {
    super::patients_in_parts(db, ids, |part| {
        let mut sql = Sql::new(
            "SELECT DISTINCT v.patient_id AS patient_id FROM resources r \
             JOIN versions v ON v.resource_id = r.id \
             WHERE v.patient_id IS NOT NULL AND r.type = $1 AND r.fhir_id IN (",
        )
        .arg(resource_type);
        sql.bind_list(part.iter().map(String::as_str));
        sql.push(")");
        sql
    })
    .await
}

/// The clients whose dossiers a resource of `resource_type` with one of these identifiers
/// (`(system, value)`; `None`: any system) has been in, each once. One query per thousand,
/// on the index of identifiers by value (the systems are compared here).
pub async fn owners_by_identifier(
    db: &crate::store::Db,
    resource_type: &str,
    identifiers: &[(Option<String>, String)],
) -> Result<Vec<String>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        system: String,
        code: String,
        patient_id: String,
    }
    let mut owners: Vec<String> = Vec::new();
    for part in identifiers.chunks(1000) {
        let mut sql = Sql::new(
            "SELECT t.system AS system, t.code AS code, v.patient_id AS patient_id \
             FROM search_tokens t JOIN versions v ON v.id = t.version_id \
             WHERE t.param = 'identifier' AND v.type = $1 AND v.patient_id IS NOT NULL \
             AND t.code IN (",
        )
        .arg(resource_type);
        sql.bind_list(part.iter().map(|(_, code)| code.as_str()));
        sql.push(")");
        for row in db.fetch_all::<Row>(&sql).await? {
            let asked = part.iter().any(|(system, code)| {
                *code == row.code && system.as_ref().is_none_or(|s| *s == row.system)
            });
            if asked && !owners.contains(&row.patient_id) {
                owners.push(row.patient_id);
            }
        }
    }
    Ok(owners)
}

/// `(param, system, code)` of the rule-relevant tokens of the given versions.
pub async fn rule_tokens(
    mut ex: impl Executor,
    version_ids: &[i64],
) -> Result<HashMap<i64, Vec<(String, String, String)>>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        version_id: i64,
        param: String,
        system: String,
        code: String,
    }
    let mut out: HashMap<i64, Vec<(String, String, String)>> = HashMap::new();
    for chunk in version_ids.chunks(500) {
        let mut sql = Sql::new(
            "SELECT version_id, param, system, code FROM search_tokens \
             WHERE param IN ('category', 'code', 'type', '_profile') AND version_id IN (",
        );
        sql.bind_list(chunk.iter().copied());
        sql.push(")");
        for r in ex.fetch_all::<Row>(&sql).await? {
            out.entry(r.version_id)
                .or_default()
                .push((r.param, r.system, r.code));
        }
    }
    Ok(out)
}

/// A recorded staff action.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct ActionRow {
    pub resource_type: String,
    pub fhir_id: String,
    pub action: String,
    pub until: Option<i64>,
    pub actor: String,
    pub note: Option<String>,
    pub at: i64,
}

/// Staff actions on the given resources, oldest first; `plan` as
/// [`push_pairs_in`](crate::store::db::push_pairs_in) says (a pulled page: `EachRun`).
pub async fn actions_for(
    mut ex: impl Executor,
    keys: &[(String, String)],
    plan: crate::store::db::Pairs,
) -> Result<HashMap<(String, String), Vec<ActionRow>>, crate::store::Error> {
    let mut out: HashMap<(String, String), Vec<ActionRow>> = HashMap::new();
    // At most as many pairs as PostgreSQL plans as index probes (`resources::current`): an
    // ingest asks this for every resource of a pulled page.
    for chunk in keys.chunks(super::resources::PG_PAIRS) {
        let mut sql = Sql::new(
            "SELECT resource_type, fhir_id, action, until, actor, note, at FROM release_actions \
             WHERE ",
        );
        crate::store::db::push_pairs_in(
            &mut sql,
            ex.engine(),
            plan,
            "resource_type",
            "fhir_id",
            chunk,
        );
        sql.push(" ORDER BY at, id");
        for r in ex.fetch_all::<ActionRow>(&sql).await? {
            out.entry((r.resource_type.clone(), r.fhir_id.clone()))
                .or_default()
                .push(r);
        }
    }
    Ok(out)
}

/// A staff action to record.
#[derive(Debug, Clone)]
pub struct NewAction<'a> {
    pub resource_type: &'a str,
    pub fhir_id: &'a str,
    /// `release` or `hold`.
    pub action: &'a str,
    pub until: Option<Micros>,
    pub actor: &'a str,
    pub note: Option<&'a str>,
    pub at: Micros,
}

/// Records a staff action.
pub async fn insert_action(tx: &mut Tx, a: &NewAction<'_>) -> Result<(), crate::store::Error> {
    let sql = Sql::new(
        "INSERT INTO release_actions (resource_type, fhir_id, action, until, actor, note, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .arg(a.resource_type)
    .arg(a.fhir_id)
    .arg(a.action)
    .arg(a.until)
    .arg(a.actor)
    .arg(a.note)
    .arg(a.at);
    tx.execute(&sql).await.map(|_| ())
}

/// The sections each client's holder chose to see without delay (the latest choice), while
/// the one who chose still holds the portal: a waiver dies with the holdership that made it.
pub async fn waivers_for(
    mut ex: impl Executor,
    patient_ids: &[String],
) -> Result<HashMap<String, BTreeSet<String>>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        patient_id: String,
        sections: String,
    }
    let mut out = HashMap::new();
    for chunk in patient_ids.chunks(400) {
        let mut sql =
            Sql::new("SELECT w.patient_id, w.sections FROM waivers w WHERE w.patient_id IN (");
        sql.bind_list(chunk.iter().map(String::as_str));
        sql.push(
            ") AND w.id = (SELECT MAX(x.id) FROM waivers x WHERE x.patient_id = w.patient_id) \
             AND EXISTS (SELECT 1 FROM links h WHERE h.user_id = w.user_id AND h.patient_id = w.patient_id \
             AND h.role = 'holder' AND h.ended_at IS NULL)",
        );
        for r in ex.fetch_all::<Row>(&sql).await? {
            out.insert(r.patient_id, super::accounts::parse_sections(&r.sections));
        }
    }
    Ok(out)
}

/// The latest waiver of one client: sections, who (user id) and when; none once the one who
/// chose no longer holds the portal.
pub async fn current_waiver(
    mut ex: impl Executor,
    patient_id: &str,
) -> Result<Option<(BTreeSet<String>, i64, i64)>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        sections: String,
        user_id: i64,
        made_at: i64,
    }
    let sql = Sql::new(
        "SELECT w.sections, w.user_id, w.made_at FROM waivers w WHERE w.patient_id = $1 \
         AND EXISTS (SELECT 1 FROM links h WHERE h.user_id = w.user_id AND h.patient_id = w.patient_id \
         AND h.role = 'holder' AND h.ended_at IS NULL) \
         AND w.id = (SELECT MAX(x.id) FROM waivers x WHERE x.patient_id = w.patient_id)",
    )
    .arg(patient_id);
    Ok(ex.fetch_optional::<Row>(&sql).await?.map(|r| {
        (
            super::accounts::parse_sections(&r.sections),
            r.user_id,
            r.made_at,
        )
    }))
}

/// Records the holder's choice.
pub async fn insert_waiver(
    tx: &mut Tx,
    patient_id: &str,
    sections: &str,
    user_id: i64,
    at: Micros,
) -> Result<(), crate::store::Error> {
    let sql = Sql::new(
        "INSERT INTO waivers (patient_id, sections, user_id, made_at) VALUES ($1, $2, $3, $4)",
    )
    .arg(patient_id)
    .arg(sections)
    .arg(user_id)
    .arg(at);
    tx.execute(&sql).await.map(|_| ())
}

/// A new release moment, section and rule for a stored version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescheduled {
    pub version_id: i64,
    pub release_at: Option<Micros>,
    pub section: Option<String>,
    pub rule: String,
    /// Under a `never` rule (or unmapped) now.
    pub hidden: bool,
}

/// Writes new moments in a few statements.
pub async fn write_rescheduled(
    tx: &mut Tx,
    rows: &[Rescheduled],
) -> Result<(), crate::store::Error> {
    for chunk in rows.chunks(300) {
        let mut sql = Sql::new("WITH u (id, release_at, section, rule, withdrawn) AS (VALUES ");
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(");
            let values: [Arg; 5] = [
                r.version_id.into(),
                r.release_at.into(),
                r.section.clone().into(),
                r.rule.as_str().into(),
                if r.hidden {
                    super::resources::HIDDEN
                } else {
                    0
                }
                .into(),
            ];
            sql.bind_list(values);
            sql.push(")");
        }
        sql.push(
            ") UPDATE versions SET \
             release_at = (SELECT u.release_at FROM u WHERE u.id = versions.id), \
             section = (SELECT u.section FROM u WHERE u.id = versions.id), \
             rule = (SELECT u.rule FROM u WHERE u.id = versions.id), \
             withdrawn = (SELECT u.withdrawn FROM u WHERE u.id = versions.id) \
             WHERE id IN (SELECT u.id FROM u)",
        );
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// Takes the shown version of a resource off the portal at `now` (a hold, R14; rules that
/// now say `never`): a tombstone in the client and section of `shown`, then, with `copy`, a
/// copy of `last` (its body, search values and references, its arrival) as the newest
/// version, not released: `release::recompute` decides when the copy shows.
pub async fn take_off(
    tx: &mut Tx,
    shown: &StoredVersion,
    last: &StoredVersion,
    now: Micros,
    rule: &str,
    copy: bool,
) -> Result<(), crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Id {
        id: i64,
    }
    let columns = "resource_id, version_no, type, fhir_id, source, patient_id, section, arrived_at, \
                   release_at, rule, withdrawn, sort_date, body, tagged, meta, has_newer";
    let tombstone = Sql::new(format!(
        "INSERT INTO versions ({columns}) SELECT resource_id, $1, type, fhir_id, source, patient_id, \
         section, $2, $3, $4, {}, $5, '', 0, '', {} FROM versions WHERE id = $6",
        super::resources::WITHDRAWN,
        i64::from(copy)
    ))
    .arg(last.version_no + 1)
    .arg(now)
    .arg(now)
    .arg(rule)
    .arg(i64::MAX)
    .arg(shown.id);
    tx.execute(&tombstone).await?;
    let mut last_version = last.version_no + 1;
    if !copy {
        let sql = Sql::new(
            "UPDATE versions SET has_newer = 1 WHERE resource_id = $1 AND version_no < $2 AND has_newer = 0",
        )
        .arg(last.resource_id)
        .arg(last_version);
        tx.execute(&sql).await?;
        let sql = Sql::new("UPDATE resources SET last_version = $1 WHERE id = $2")
            .arg(last_version)
            .arg(last.resource_id);
        tx.execute(&sql).await?;
        return Ok(());
    }
    last_version += 1;
    let copy = Sql::new(format!(
        "INSERT INTO versions ({columns}) SELECT resource_id, $1, type, fhir_id, source, patient_id, \
         section, arrived_at, NULL, rule, withdrawn, sort_date, body, tagged, meta, 0 \
         FROM versions WHERE id = $2 RETURNING id"
    ))
    .arg(last_version)
    .arg(last.id);
    let copy: Id = tx
        .fetch_optional(&copy)
        .await?
        .ok_or(crate::store::Error::NotFound)?;
    for (table, values) in [
        ("search_tokens", "param, system, code"),
        ("search_dates", "param, lo, hi"),
        ("refs", "target_type, target_id, patient_id, element"),
    ] {
        let sql = Sql::new(format!(
            "INSERT INTO {table} (version_id, {values}) SELECT $1, {values} FROM {table} WHERE version_id = $2"
        ))
        .arg(copy.id)
        .arg(last.id);
        tx.execute(&sql).await?;
    }
    let sql = Sql::new(
        "UPDATE versions SET has_newer = 1 WHERE resource_id = $1 AND id < $2 AND has_newer = 0",
    )
    .arg(last.resource_id)
    .arg(copy.id);
    tx.execute(&sql).await?;
    let sql = Sql::new("UPDATE resources SET last_version = $1 WHERE id = $2")
        .arg(last_version)
        .arg(last.resource_id);
    tx.execute(&sql).await?;
    Ok(())
}

/// Every stored resource's id (for recomputing after the rules changed).
pub async fn all_resources(mut ex: impl Executor) -> Result<Vec<i64>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        id: i64,
    }
    Ok(ex
        .fetch_all::<Row>(&Sql::new("SELECT id FROM resources ORDER BY id"))
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect())
}
