//! Resources and their versions: the current state of a set of resources, and writing new
//! versions with their search values in a few multi-row statements (no per-row round trips).

use super::db::{Arg, Engine, Sql, Tx};
use crate::ingest::index::Indexed;
use crate::time::Micros;
use std::collections::HashMap;

/// The head of a stored resource: what ingest needs before writing a new version.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Current {
    pub id: i64,
    #[sqlx(rename = "type")]
    pub resource_type: String,
    pub fhir_id: String,
    pub last_version: i64,
    pub last_hash: String,
}

/// Rows per multi-row statement; well under both engines' parameter limits.
const CHUNK: usize = 400;

/// The head of each stored `(type, id)`, locking the rows on PostgreSQL.
pub async fn current(
    tx: &mut Tx,
    keys: &[(String, String)],
) -> Result<HashMap<(String, String), Current>, sqlx::Error> {
    let mut out = HashMap::new();
    for chunk in keys.chunks(CHUNK) {
        let mut sql = Sql::new(
            "SELECT id, type, fhir_id, last_version, last_hash FROM resources WHERE (type, fhir_id) IN (",
        );
        for (i, (ty, id)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(");
            sql.bind(ty.as_str()).push(", ").bind(id.as_str()).push(")");
        }
        sql.push(")");
        if tx.engine() == Engine::Postgres {
            sql.push(" FOR UPDATE");
        }
        let rows: Vec<Current> = tx.fetch_all(&sql).await?;
        for row in rows {
            out.insert((row.resource_type.clone(), row.fhir_id.clone()), row);
        }
    }
    Ok(out)
}

/// One version to write.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub resource_type: String,
    pub fhir_id: String,
    pub source: String,
    pub version_no: i64,
    /// The JSON as stored; empty for a deletion.
    pub body: String,
    pub hash: String,
    pub indexed: Indexed,
    pub section: Option<String>,
    pub arrived_at: Micros,
    pub release_at: Option<Micros>,
    pub rule: String,
    pub withdrawn: bool,
    pub tagged: bool,
    /// The resource's `meta` without versionId and lastUpdated (JSON), empty if none.
    pub meta: String,
}

/// Writes versions (in order) and moves each resource's head to its last written version.
/// Returns the resource ids of `(type, id)`.
pub async fn write(
    tx: &mut Tx,
    versions: &[NewVersion],
) -> Result<HashMap<(String, String), i64>, sqlx::Error> {
    if versions.is_empty() {
        return Ok(HashMap::new());
    }
    // The head of each resource: its last version in this write.
    let mut heads: Vec<&NewVersion> = Vec::new();
    let mut position: HashMap<(&str, &str), usize> = HashMap::new();
    for v in versions {
        let key = (v.resource_type.as_str(), v.fhir_id.as_str());
        match position.get(&key) {
            Some(&i) => heads[i] = v,
            None => {
                position.insert(key, heads.len());
                heads.push(v);
            }
        }
    }
    let mut resource_ids: HashMap<(String, String), i64> = HashMap::new();
    for chunk in heads.chunks(CHUNK) {
        let mut sql = Sql::new(
            "INSERT INTO resources (type, fhir_id, source, last_version, last_hash) VALUES ",
        );
        for (i, v) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(");
            sql.bind(v.resource_type.as_str()).push(", ");
            sql.bind(v.fhir_id.as_str()).push(", ");
            sql.bind(v.source.as_str()).push(", ");
            sql.bind(v.version_no).push(", ");
            sql.bind(v.hash.as_str()).push(")");
        }
        sql.push(
            " ON CONFLICT (type, fhir_id) DO UPDATE SET source = excluded.source, \
             last_version = excluded.last_version, last_hash = excluded.last_hash \
             RETURNING id, type, fhir_id",
        );
        #[derive(sqlx::FromRow)]
        struct Row {
            id: i64,
            #[sqlx(rename = "type")]
            resource_type: String,
            fhir_id: String,
        }
        let rows: Vec<Row> = tx.fetch_all(&sql).await?;
        for r in rows {
            resource_ids.insert((r.resource_type, r.fhir_id), r.id);
        }
    }

    let ids: HashMap<(&str, &str), i64> = resource_ids
        .iter()
        .map(|((t, f), id)| ((t.as_str(), f.as_str()), *id))
        .collect();
    let id_of = |v: &NewVersion| {
        ids.get(&(v.resource_type.as_str(), v.fhir_id.as_str()))
            .copied()
            .ok_or(sqlx::Error::RowNotFound)
    };
    let mut version_ids: HashMap<(i64, i64), i64> = HashMap::new();
    for chunk in versions.chunks(CHUNK) {
        let mut sql = Sql::new(
            "INSERT INTO versions (resource_id, version_no, type, fhir_id, source, patient_id, section, \
             arrived_at, release_at, rule, withdrawn, sort_date, body, tagged, meta) VALUES ",
        );
        for (i, v) in chunk.iter().enumerate() {
            let resource_id = id_of(v)?;
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(");
            let values: [Arg; 15] = [
                resource_id.into(),
                v.version_no.into(),
                v.resource_type.as_str().into(),
                v.fhir_id.as_str().into(),
                v.source.as_str().into(),
                v.indexed.patient_id.clone().into(),
                v.section.clone().into(),
                v.arrived_at.into(),
                v.release_at.into(),
                v.rule.as_str().into(),
                v.withdrawn.into(),
                v.indexed.sort_date.into(),
                v.body.as_str().into(),
                v.tagged.into(),
                v.meta.as_str().into(),
            ];
            sql.bind_list(values);
            sql.push(")");
        }
        sql.push(" RETURNING id, resource_id, version_no");
        #[derive(sqlx::FromRow)]
        struct Row {
            id: i64,
            resource_id: i64,
            version_no: i64,
        }
        let rows: Vec<Row> = tx.fetch_all(&sql).await?;
        for r in rows {
            version_ids.insert((r.resource_id, r.version_no), r.id);
        }
    }

    let mut tokens: Vec<[Arg; 4]> = Vec::new();
    let mut dates: Vec<[Arg; 4]> = Vec::new();
    let mut refs: Vec<[Arg; 3]> = Vec::new();
    for v in versions {
        let resource_id = id_of(v)?;
        let version_id = version_ids
            .get(&(resource_id, v.version_no))
            .copied()
            .ok_or(sqlx::Error::RowNotFound)?;
        for (param, system, code) in &v.indexed.tokens {
            tokens.push([
                version_id.into(),
                (*param).into(),
                system.into(),
                code.into(),
            ]);
        }
        for (param, lo, hi) in &v.indexed.dates {
            dates.push([
                version_id.into(),
                (*param).into(),
                (*lo).into(),
                (*hi).into(),
            ]);
        }
        for (ty, id) in &v.indexed.refs {
            refs.push([ty.into(), id.into(), version_id.into()]);
        }
    }
    insert_rows(
        tx,
        "search_tokens (version_id, param, system, code)",
        tokens,
    )
    .await?;
    insert_rows(tx, "search_dates (version_id, param, lo, hi)", dates).await?;
    // Earlier versions of updated resources now have a newer one.
    let updated: Vec<i64> = heads
        .iter()
        .filter(|v| v.version_no > 1)
        .filter_map(|v| id_of(v).ok())
        .collect();
    for chunk in updated.chunks(CHUNK) {
        let mut sql = Sql::new(
            "UPDATE versions SET has_newer = 1 WHERE has_newer = 0 AND id IN (SELECT v.id FROM versions v \
             JOIN resources r ON r.id = v.resource_id WHERE v.version_no < r.last_version AND v.resource_id IN (",
        );
        sql.bind_list(chunk.iter().copied());
        sql.push("))");
        tx.execute(&sql).await?;
    }
    insert_rows(tx, "refs (target_type, target_id, version_id)", refs).await?;
    Ok(resource_ids)
}

async fn insert_rows<const N: usize>(
    tx: &mut Tx,
    table: &str,
    rows: Vec<[Arg; N]>,
) -> Result<(), sqlx::Error> {
    let per_chunk = (CHUNK * 4 / N).max(1);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut sql = Sql::new(format!("INSERT INTO {table} VALUES "));
        for (i, row) in rows.by_ref().take(per_chunk).enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(");
            sql.bind_list(row);
            sql.push(")");
        }
        sql.push(" ON CONFLICT DO NOTHING");
        tx.execute(&sql).await?;
    }
    Ok(())
}
