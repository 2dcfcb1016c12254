//! Resources and their versions: the current state of a set of resources, and writing new
//! versions with their search values through [`Tx::insert`] (no per-row round trips: multi-row
//! statements on PostgreSQL, one prepared statement per table on SQLite).

use super::db::Executor as _;
use super::db::{Arg, Engine, Sql, Tx};
use crate::time::Micros;
use std::collections::HashMap;

/// The head of a stored resource: what ingest needs before writing a new version.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct Current {
    pub id: i64,
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub resource_type: String,
    pub fhir_id: String,
    /// The source that first sent it: the only one that may change it.
    pub source: String,
    pub last_version: i64,
    pub last_hash: String,
}

/// Rows per multi-row statement; well under both engines' parameter limits.
const CHUNK: usize = 400;

/// The most `(type, id)` pairs one lookup of resources names on PostgreSQL (see
/// [`current`]; `release::actions_for` keeps to it too).
pub const PG_PAIRS: usize = 100;

/// Serializes writers of the same resources on PostgreSQL, for the rest of the transaction:
/// a transaction-scoped advisory lock per `(type, id)`, taken in one order by every writer (so
/// two writers never wait for each other crosswise). Row locks cannot do this for resources
/// not stored yet, which two pushes may both create. SQLite has one writer anyway.
pub async fn lock(tx: &mut Tx, keys: &[(String, String)]) -> Result<(), crate::store::Error> {
    if tx.engine() != Engine::Postgres || keys.is_empty() {
        return Ok(());
    }
    let mut hashes: Vec<i64> = keys
        .iter()
        .map(|(ty, id)| lock_key("resource", &format!("{ty}/{id}")))
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    for chunk in hashes.chunks(CHUNK) {
        let mut sql = Sql::new("SELECT pg_advisory_xact_lock(k) FROM (VALUES ");
        for (i, h) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(CAST(");
            sql.bind(*h);
            sql.push(" AS BIGINT))");
        }
        sql.push(") AS x (k)");
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// A PostgreSQL advisory lock key for `name` in `space` (resources, clients): the first eight
/// bytes of its SHA-256, the same in every process.
pub fn lock_key(space: &str, name: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("sluis:{space}:{name}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_le_bytes(first)
}

/// The head of each stored `(type, id)`, locking the rows on PostgreSQL; `plan` as
/// [`push_pairs_in`](crate::store::db::push_pairs_in) says (a pulled page: `EachRun`).
pub async fn current(
    tx: &mut Tx,
    keys: &[(String, String)],
    plan: crate::store::db::Pairs,
) -> Result<HashMap<(String, String), Current>, crate::store::Error> {
    let mut out = HashMap::new();
    // At most 100 keys a statement on PostgreSQL: a pulled page of 200 named as one row-value
    // list was planned as a scan of the table and took 70 ms on average at scale 1, most of
    // the pull's time.
    let size = if tx.engine() == Engine::Postgres {
        PG_PAIRS
    } else {
        CHUNK
    };
    for chunk in keys.chunks(size) {
        let mut sql = Sql::new(
            "SELECT id, type, fhir_id, source, last_version, last_hash FROM resources WHERE ",
        );
        crate::store::db::push_pairs_in(&mut sql, tx.engine(), plan, "type", "fhir_id", chunk);
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

/// What a version is searched and served by: its client, search values and references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchValues {
    /// The client (Patient id) the resource belongs to, if it is in a patient compartment.
    pub patient_id: Option<String>,
    /// `(param, system, code)`; system is empty where the value has none.
    pub tokens: Vec<(&'static str, String, String)>,
    /// `(param, lo, hi)`.
    pub dates: Vec<(&'static str, i64, i64)>,
    /// `(type, id, element)` of every resource outside the patient compartment it refers to
    /// (Practitioner, Organization, Location, Medication…), with the path of element names the
    /// reference sits in (`contact.organization`; no list indexes, `_` of primitive extensions
    /// dropped): what makes a shared resource visible to a portal user, unless that element is
    /// redacted for the user.
    pub refs: Vec<(String, String, String)>,
    /// The low end of the `date` parameter, `i64::MAX` without one.
    pub sort_date: i64,
}

impl SearchValues {
    /// The `(system, code)` pairs of one token parameter.
    pub fn tokens_of(&self, param: &str) -> Vec<(String, String)> {
        self.tokens
            .iter()
            .filter(|(p, _, _)| *p == param)
            .map(|(_, s, c)| (s.clone(), c.clone()))
            .collect()
    }
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
    pub values: SearchValues,
    pub section: Option<String>,
    pub arrived_at: Micros,
    pub release_at: Option<Micros>,
    pub rule: String,
    /// A tombstone: deleted, entered-in-error, or taken off the portal (see `synthetic`).
    pub withdrawn: bool,
    /// Under a `never` rule (or unmapped): stored, never shown.
    pub hidden: bool,
    /// A tombstone the adapter wrote itself, before a version that moves the resource to
    /// another client or section or that may never be shown: it takes the shown version off
    /// the portal of those who saw it. Not a version the source sent.
    pub synthetic: bool,
    pub tagged: bool,
    /// The resource's `meta` without versionId and lastUpdated (JSON), empty if none.
    pub meta: String,
}

impl NewVersion {
    /// The stored `withdrawn` column: 0 live, 1 a tombstone, 2 hidden by its rule.
    pub fn withdrawn_code(&self) -> i64 {
        if self.withdrawn {
            WITHDRAWN
        } else if self.hidden {
            HIDDEN
        } else {
            0
        }
    }
}

/// `versions.withdrawn` of a tombstone (deleted, entered-in-error, taken off the portal).
pub const WITHDRAWN: i64 = 1;
/// `versions.withdrawn` of a version stored under a `never` rule, or that no rule maps.
pub const HIDDEN: i64 = 2;

/// Takes waiting versions out of the running: a newer version arrived before they were shown,
/// so they never will be (their release moment becomes NULL).
pub async fn supersede(tx: &mut Tx, version_ids: &[i64]) -> Result<(), crate::store::Error> {
    for chunk in version_ids.chunks(CHUNK) {
        let mut sql = Sql::new("UPDATE versions SET release_at = NULL WHERE id IN (");
        sql.bind_list(chunk.iter().copied());
        sql.push(")");
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// Moves stored resources' heads: `[id, last_version, last_hash]` rows. One prepared statement
/// per row on SQLite; one statement per chunk on PostgreSQL (no round trip per row).
async fn update_heads(tx: &mut Tx, rows: &[[Arg; 3]]) -> Result<(), crate::store::Error> {
    match tx.engine() {
        Engine::Sqlite => {
            for [id, version, hash] in rows {
                let sql = Sql::new(
                    "UPDATE resources SET last_version = $1, last_hash = $2 WHERE id = $3",
                )
                .arg(version.clone())
                .arg(hash.clone())
                .arg(id.clone());
                tx.execute(&sql).await?;
            }
        }
        Engine::Postgres => {
            for chunk in rows.chunks(CHUNK) {
                let mut sql = Sql::new(
                    "UPDATE resources SET last_version = u.v, last_hash = u.h FROM (VALUES ",
                );
                for (i, row) in chunk.iter().enumerate() {
                    sql.push(if i > 0 { ", (" } else { "(" });
                    sql.bind_list(row.iter().cloned());
                    sql.push(")");
                }
                sql.push(") AS u (id, v, h) WHERE resources.id = u.id");
                tx.execute(&sql).await?;
            }
        }
    }
    Ok(())
}

/// Writes versions (in order) and moves each resource's head to its last written version.
/// `stored` is [`current`] of these resources, read in this same transaction. Returns the
/// resource ids of `(type, id)`.
pub async fn write(
    tx: &mut Tx,
    versions: &[NewVersion],
    stored: &HashMap<(String, String), Current>,
) -> Result<HashMap<(String, String), i64>, crate::store::Error> {
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
    let head_row = |v: &NewVersion| -> [Arg; 5] {
        [
            v.resource_type.as_str().into(),
            v.fhir_id.as_str().into(),
            v.source.as_str().into(),
            v.version_no.into(),
            v.hash.as_str().into(),
        ]
    };
    const RESOURCES: &str =
        "INSERT INTO resources (type, fhir_id, source, last_version, last_hash)";
    // The writer (SQLite) or the resources' locks (PostgreSQL) are held since `stored` was
    // read: new resources are inserted, stored ones updated by their key (their source stays
    // the one that first sent them).
    let mut resource_ids: HashMap<(String, String), i64> = HashMap::with_capacity(heads.len());
    let mut new: Vec<((String, String), [Arg; 5])> = Vec::new();
    let mut updated: Vec<[Arg; 3]> = Vec::new();
    for v in &heads {
        let key = (v.resource_type.clone(), v.fhir_id.clone());
        match stored.get(&key) {
            None => new.push((key, head_row(v))),
            Some(head) => {
                updated.push([head.id.into(), v.version_no.into(), v.hash.as_str().into()]);
                resource_ids.insert(key, head.id);
            }
        }
    }
    update_heads(tx, &updated).await?;
    let (keys, rows): (Vec<_>, Vec<_>) = new.into_iter().unzip();
    let ids = tx.insert_ids(RESOURCES, &rows).await?;
    resource_ids.extend(keys.into_iter().zip(ids));

    let ids: HashMap<(&str, &str), i64> = resource_ids
        .iter()
        .map(|((t, f), id)| ((t.as_str(), f.as_str()), *id))
        .collect();
    let id_of = |v: &NewVersion| {
        ids.get(&(v.resource_type.as_str(), v.fhir_id.as_str()))
            .copied()
            .ok_or(crate::store::Error::NotFound)
    };
    let mut rows: Vec<[Arg; 15]> = Vec::with_capacity(versions.len());
    let packed = tx.engine() == crate::store::db::Engine::Postgres;
    for v in versions {
        let body = if packed {
            Arg::Bytes(super::bodies::pack(&v.body)?)
        } else {
            v.body.as_str().into()
        };
        rows.push([
            id_of(v)?.into(),
            v.version_no.into(),
            v.resource_type.as_str().into(),
            v.fhir_id.as_str().into(),
            v.source.as_str().into(),
            v.values.patient_id.clone().into(),
            v.section.clone().into(),
            v.arrived_at.into(),
            v.release_at.into(),
            v.rule.as_str().into(),
            v.withdrawn_code().into(),
            v.values.sort_date.into(),
            body,
            v.tagged.into(),
            v.meta.as_str().into(),
        ]);
    }
    const VERSIONS: &str = "INSERT INTO versions (resource_id, version_no, type, fhir_id, source, \
         patient_id, section, arrived_at, release_at, rule, withdrawn, sort_date, body, tagged, meta)";
    let written = tx.insert_ids(VERSIONS, &rows).await?;
    let mut version_ids: HashMap<(i64, i64), i64> = HashMap::with_capacity(versions.len());
    for (v, id) in versions.iter().zip(written) {
        version_ids.insert((id_of(v)?, v.version_no), id);
    }
    drop(rows);

    let mut tokens: Vec<[Arg; 4]> = Vec::new();
    let mut dates: Vec<[Arg; 4]> = Vec::new();
    let mut refs: Vec<[Arg; 5]> = Vec::new();
    for v in versions {
        let resource_id = id_of(v)?;
        let version_id = version_ids
            .get(&(resource_id, v.version_no))
            .copied()
            .ok_or(crate::store::Error::NotFound)?;
        for (param, system, code) in &v.values.tokens {
            tokens.push([
                version_id.into(),
                (*param).into(),
                system.into(),
                code.into(),
            ]);
        }
        for (param, lo, hi) in &v.values.dates {
            dates.push([
                version_id.into(),
                (*param).into(),
                (*lo).into(),
                (*hi).into(),
            ]);
        }
        let client = v.values.patient_id.as_deref().unwrap_or("");
        for (ty, id, element) in &v.values.refs {
            refs.push([
                ty.into(),
                id.into(),
                client.into(),
                version_id.into(),
                element.into(),
            ]);
        }
    }
    const NOTHING: &str = "ON CONFLICT DO NOTHING";
    tx.insert(
        "INSERT INTO search_tokens (version_id, param, system, code)",
        &tokens,
        NOTHING,
    )
    .await?;
    tx.insert(
        "INSERT INTO search_dates (version_id, param, lo, hi)",
        &dates,
        NOTHING,
    )
    .await?;
    tx.insert(
        "INSERT INTO refs (target_type, target_id, patient_id, version_id, element)",
        &refs,
        NOTHING,
    )
    .await?;
    // Earlier versions of updated resources now have a newer one.
    let updated: Vec<(i64, i64)> = heads
        .iter()
        .filter(|v| v.version_no > 1)
        .filter_map(|v| id_of(v).ok().map(|id| (id, v.version_no)))
        .collect();
    match tx.engine() {
        // One prepared statement per resource.
        Engine::Sqlite => {
            for (resource_id, last) in updated {
                let sql = Sql::new(
                    "UPDATE versions SET has_newer = 1 WHERE resource_id = $1 AND version_no < $2 \
                     AND has_newer = 0",
                )
                .arg(resource_id)
                .arg(last);
                tx.execute(&sql).await?;
            }
        }
        Engine::Postgres => {
            for chunk in updated.chunks(CHUNK) {
                let mut sql = Sql::new(
                    "UPDATE versions SET has_newer = 1 WHERE has_newer = 0 AND id IN (SELECT v.id FROM versions v \
                     JOIN resources r ON r.id = v.resource_id WHERE v.version_no < r.last_version AND v.resource_id IN (",
                );
                sql.bind_list(chunk.iter().map(|(id, _)| *id));
                sql.push("))");
                tx.execute(&sql).await?;
            }
        }
    }
    Ok(resource_ids)
}

/// The source that holds a resource (`Type/id`): where what concerns it goes back to (a
/// client's Patient: its messages).
pub async fn source_of(
    db: &super::db::Db,
    resource_type: &str,
    id: &str,
) -> Result<Option<String>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Source {
        source: String,
    }
    let row: Option<Source> = db
        .fetch_optional(
            &Sql::new("SELECT source FROM resources WHERE type = $1 AND fhir_id = $2")
                .arg(resource_type)
                .arg(id),
        )
        .await?;
    Ok(row.map(|r| r.source))
}
