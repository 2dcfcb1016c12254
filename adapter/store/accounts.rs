//! Portal accounts: users (per portal vendor), their links to clients, and single-use codes.

use super::db::{Db, Sql, Tx};
use crate::time::Micros;

/// A stored activation or invitation code.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Code {
    pub code_hash: String,
    pub kind: String,
    pub patient_id: String,
    pub relationship: String,
    pub name: Option<String>,
    pub sections: Option<String>,
    pub can_post: i64,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// A new code to store.
#[derive(Debug, Clone)]
pub struct NewCode<'a> {
    pub code_hash: &'a str,
    pub kind: &'a str,
    pub patient_id: &'a str,
    pub relationship: &'a str,
    pub name: Option<&'a str>,
    pub sections: Option<String>,
    pub can_post: bool,
    pub created_by: &'a str,
    pub created_at: Micros,
    pub expires_at: Micros,
}

pub async fn insert_code(db: &Db, c: &NewCode<'_>) -> Result<(), sqlx::Error> {
    let sql = Sql::new(
        "INSERT INTO codes (code_hash, kind, patient_id, relationship, name, sections, can_post, \
         created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .arg(c.code_hash)
    .arg(c.kind)
    .arg(c.patient_id)
    .arg(c.relationship)
    .arg(c.name)
    .arg(c.sections.clone())
    .arg(c.can_post)
    .arg(c.created_by)
    .arg(c.created_at)
    .arg(c.expires_at);
    db.execute(&sql).await.map(|_| ())
}

/// The code with this hash, locked for redemption on PostgreSQL.
pub async fn code_for_update(tx: &mut Tx, code_hash: &str) -> Result<Option<Code>, sqlx::Error> {
    let mut text = "SELECT code_hash, kind, patient_id, relationship, name, sections, can_post, \
                    created_by, created_at, expires_at, used_at FROM codes WHERE code_hash = $1"
        .to_string();
    if tx.engine() == super::db::Engine::Postgres {
        text.push_str(" FOR UPDATE");
    }
    tx.fetch_optional(&Sql::new(text).arg(code_hash)).await
}

pub async fn mark_code_used(
    tx: &mut Tx,
    code_hash: &str,
    user_id: i64,
    now: Micros,
) -> Result<(), sqlx::Error> {
    let sql = Sql::new("UPDATE codes SET used_at = $1, used_by = $2 WHERE code_hash = $3")
        .arg(now)
        .arg(user_id)
        .arg(code_hash);
    tx.execute(&sql).await.map(|_| ())
}

#[derive(sqlx::FromRow)]
struct Id {
    id: i64,
}

/// The user's id, creating the user if needed; `birth_date` is recorded when given.
pub async fn upsert_user(
    tx: &mut Tx,
    client_id: &str,
    external_id: &str,
    birth_date: Option<&str>,
    now: Micros,
) -> Result<i64, sqlx::Error> {
    let sql = Sql::new(
        "INSERT INTO users (client_id, external_id, birth_date, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (client_id, external_id) DO UPDATE SET birth_date = COALESCE(excluded.birth_date, users.birth_date) \
         RETURNING id",
    )
    .arg(client_id)
    .arg(external_id)
    .arg(birth_date)
    .arg(now);
    let row: Option<Id> = tx.fetch_optional(&sql).await?;
    row.map(|r| r.id).ok_or(sqlx::Error::RowNotFound)
}

/// A new link.
#[derive(Debug, Clone)]
pub struct NewLink<'a> {
    pub user_id: i64,
    pub patient_id: &'a str,
    pub role: &'a str,
    pub relationship: &'a str,
    pub name: Option<&'a str>,
    pub sections: Option<String>,
    pub can_post: bool,
    pub now: Micros,
}

pub async fn insert_link(tx: &mut Tx, l: &NewLink<'_>) -> Result<i64, sqlx::Error> {
    let sql = Sql::new(
        "INSERT INTO links (user_id, patient_id, role, relationship, name, sections, can_post, created_at, changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id",
    )
    .arg(l.user_id)
    .arg(l.patient_id)
    .arg(l.role)
    .arg(l.relationship)
    .arg(l.name)
    .arg(l.sections.clone())
    .arg(l.can_post)
    .arg(l.now);
    let row: Option<Id> = tx.fetch_optional(&sql).await?;
    row.map(|r| r.id).ok_or(sqlx::Error::RowNotFound)
}

/// Records acceptance of a terms version, creating the user if needed.
pub async fn accept_terms(
    db: &Db,
    client_id: &str,
    external_id: &str,
    version: &str,
    now: Micros,
) -> Result<(), sqlx::Error> {
    let sql = Sql::new(
        "INSERT INTO users (client_id, external_id, terms_version, terms_accepted_at, created_at) \
         VALUES ($1, $2, $3, $4, $4) ON CONFLICT (client_id, external_id) DO UPDATE \
         SET terms_version = excluded.terms_version, terms_accepted_at = excluded.terms_accepted_at",
    )
    .arg(client_id)
    .arg(external_id)
    .arg(version)
    .arg(now);
    db.execute(&sql).await.map(|_| ())
}

/// Whether a client (a stored, not withdrawn Patient) exists.
pub async fn patient_exists(db: &Db, patient_id: &str) -> Result<bool, sqlx::Error> {
    let sql = Sql::new(
        "SELECT r.id FROM resources r JOIN versions v ON v.resource_id = r.id AND v.version_no = r.last_version \
         WHERE r.type = 'Patient' AND r.fhir_id = $1 AND v.withdrawn = 0",
    )
    .arg(patient_id);
    Ok(db.fetch_optional::<Id>(&sql).await?.is_some())
}
