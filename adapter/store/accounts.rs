//! Portal accounts: users (per portal vendor), their links to clients, and single-use codes.

use super::db::Executor as _;
use super::db::{Db, Sql, Tx};
use crate::time::Micros;

/// How a user relates to a client's dossier (ordered from most to least seen).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The portal holder (R1): every section and the holder powers.
    Holder,
    /// A former `self` holder after a legal representative took over: every section, no powers.
    Reader,
    /// A network member (R3): the granted sections only.
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Holder => "holder",
            Role::Reader => "reader",
            Role::Member => "member",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "holder" => Some(Role::Holder),
            "reader" => Some(Role::Reader),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

impl sqlx::Type<sqlx::Postgres> for Role {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <String as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for Role {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Role::parse(text).ok_or_else(|| format!("`{text}` is not a role").into())
    }
}

impl From<Role> for super::db::Arg {
    fn from(role: Role) -> Self {
        super::db::Arg::Text(Some(role.as_str().to_string()))
    }
}

/// Sections as stored: comma-separated.
pub fn parse_sections(text: &str) -> std::collections::BTreeSet<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Sections for storage.
pub fn format_sections(sections: &std::collections::BTreeSet<String>) -> String {
    sections.iter().cloned().collect::<Vec<_>>().join(",")
}

/// A stored activation or invitation code.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct Code {
    /// The public id (never the code or its hash), for listing and revoking.
    pub id: String,
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
    pub invited_by: Option<i64>,
    pub revoked_at: Option<i64>,
}

const CODE_COLUMNS: &str = "id, code_hash, kind, patient_id, relationship, name, sections, can_post, \
                            created_by, created_at, expires_at, used_at, invited_by, revoked_at";

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
    /// For an invitation: the holder's link.
    pub invited_by: Option<i64>,
}

/// Stores a code; returns its public id.
pub async fn insert_code(db: &Db, c: &NewCode<'_>) -> Result<String, crate::store::Error> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let sql = Sql::new(
        "INSERT INTO codes (id, code_hash, kind, patient_id, relationship, name, sections, can_post, \
         created_by, created_at, expires_at, invited_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .arg(id.as_str())
    .arg(c.code_hash)
    .arg(c.kind)
    .arg(c.patient_id)
    .arg(c.relationship)
    .arg(c.name)
    .arg(c.sections.clone())
    .arg(c.can_post)
    .arg(c.created_by)
    .arg(c.created_at)
    .arg(c.expires_at)
    .arg(c.invited_by);
    db.execute(&sql).await?;
    Ok(id)
}

/// The code with this hash (unlocked: to name its client, not to redeem it).
pub async fn code(db: &Db, code_hash: &str) -> Result<Option<Code>, crate::store::Error> {
    db.fetch_optional(
        &Sql::new(format!(
            "SELECT {CODE_COLUMNS} FROM codes WHERE code_hash = $1"
        ))
        .arg(code_hash),
    )
    .await
}

/// The code with this hash, locked for redemption on PostgreSQL.
pub async fn code_for_update(
    tx: &mut Tx,
    code_hash: &str,
) -> Result<Option<Code>, crate::store::Error> {
    let mut text = format!("SELECT {CODE_COLUMNS} FROM codes WHERE code_hash = $1");
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
) -> Result<(), crate::store::Error> {
    let sql = Sql::new("UPDATE codes SET used_at = $1, used_by = $2 WHERE code_hash = $3")
        .arg(now)
        .arg(user_id)
        .arg(code_hash);
    tx.execute(&sql).await.map(|_| ())
}

#[derive(sqlx::FromRow, serde::Deserialize)]
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
) -> Result<i64, crate::store::Error> {
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
    row.map(|r| r.id).ok_or(crate::store::Error::NotFound)
}

/// A new link.
#[derive(Debug, Clone)]
pub struct NewLink<'a> {
    pub user_id: i64,
    pub patient_id: &'a str,
    pub role: Role,
    pub relationship: &'a str,
    pub name: Option<&'a str>,
    pub sections: Option<String>,
    pub can_post: bool,
    pub now: Micros,
    pub invited_by: Option<i64>,
}

pub async fn insert_link(tx: &mut Tx, l: &NewLink<'_>) -> Result<i64, crate::store::Error> {
    let sql = Sql::new(
        "INSERT INTO links (user_id, patient_id, role, relationship, name, sections, can_post, created_at, changed_at, invited_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) RETURNING id",
    )
    .arg(l.user_id)
    .arg(l.patient_id)
    .arg(l.role)
    .arg(l.relationship)
    .arg(l.name)
    .arg(l.sections.clone())
    .arg(l.can_post)
    .arg(l.now)
    .arg(l.invited_by);
    let row: Option<Id> = tx.fetch_optional(&sql).await?;
    row.map(|r| r.id).ok_or(crate::store::Error::NotFound)
}

/// Records acceptance of a terms version, creating the user if needed.
pub async fn accept_terms(
    db: &Db,
    client_id: &str,
    external_id: &str,
    version: &str,
    now: Micros,
) -> Result<(), crate::store::Error> {
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
pub async fn patient_exists(db: &Db, patient_id: &str) -> Result<bool, crate::store::Error> {
    let sql = Sql::new(
        "SELECT r.id FROM resources r JOIN versions v ON v.resource_id = r.id AND v.version_no = r.last_version \
         WHERE r.type = 'Patient' AND r.fhir_id = $1 AND v.withdrawn = 0",
    )
    .arg(patient_id);
    Ok(db.fetch_optional::<Id>(&sql).await?.is_some())
}

/// A link as stored.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct LinkRow {
    pub id: i64,
    pub user_id: i64,
    pub patient_id: String,
    pub role: Role,
    pub relationship: String,
    pub name: Option<String>,
    pub sections: Option<String>,
    pub can_post: i64,
    pub created_at: i64,
    pub changed_at: i64,
    pub ended_at: Option<i64>,
    pub ended_reason: Option<String>,
    pub invited_by: Option<i64>,
}

const LINK_COLUMNS: &str = "id, user_id, patient_id, role, relationship, name, sections, can_post, \
                            created_at, changed_at, ended_at, ended_reason, invited_by";

/// The links of a client that have not ended, locked on PostgreSQL.
pub async fn active_links_for_update(
    tx: &mut Tx,
    patient_id: &str,
) -> Result<Vec<LinkRow>, crate::store::Error> {
    let mut text = format!(
        "SELECT {LINK_COLUMNS} FROM links WHERE patient_id = $1 AND ended_at IS NULL ORDER BY id"
    );
    if tx.engine() == super::db::Engine::Postgres {
        text.push_str(" FOR UPDATE");
    }
    tx.fetch_all(&Sql::new(text).arg(patient_id)).await
}

/// All links of a client, ended ones too, oldest first.
pub async fn links_of_patient(
    db: &Db,
    patient_id: &str,
) -> Result<Vec<LinkRow>, crate::store::Error> {
    db.fetch_all(
        &Sql::new(format!(
            "SELECT {LINK_COLUMNS} FROM links WHERE patient_id = $1 ORDER BY id"
        ))
        .arg(patient_id),
    )
    .await
}

/// One link.
pub async fn link(db: &Db, id: i64) -> Result<Option<LinkRow>, crate::store::Error> {
    db.fetch_optional(&Sql::new(format!("SELECT {LINK_COLUMNS} FROM links WHERE id = $1")).arg(id))
        .await
}

/// The clients of the links with these ids, each once.
pub async fn clients_of_links(db: &Db, ids: &[i64]) -> Result<Vec<String>, crate::store::Error> {
    super::patients_in_parts(db, ids, |part| {
        let mut sql = Sql::new("SELECT DISTINCT patient_id FROM links WHERE id IN (");
        sql.bind_list(part.iter().copied());
        sql.push(")");
        sql
    })
    .await
}

/// Ends a link (it stays on record).
pub async fn end_link(
    tx: &mut Tx,
    id: i64,
    reason: &str,
    now: Micros,
) -> Result<bool, crate::store::Error> {
    let sql = Sql::new(
        "UPDATE links SET ended_at = $1, ended_reason = $2, changed_at = $1 WHERE id = $3 AND ended_at IS NULL",
    )
    .arg(now)
    .arg(reason)
    .arg(id);
    Ok(tx.execute(&sql).await? > 0)
}

/// Changes a link's role (a `self` holder becoming a reader). A reader has no holder powers:
/// it does not post (found by attacking: the right to post of the holder link stayed).
pub async fn set_role(
    tx: &mut Tx,
    id: i64,
    role: Role,
    now: Micros,
) -> Result<(), crate::store::Error> {
    let keeps_post = i64::from(role != Role::Reader);
    let sql = Sql::new(
        "UPDATE links SET role = $1, changed_at = $2, \
         can_post = CASE WHEN $3 = 1 THEN can_post ELSE 0 END WHERE id = $4",
    )
    .arg(role)
    .arg(now)
    .arg(keeps_post)
    .arg(id);
    tx.execute(&sql).await.map(|_| ())
}

/// Changes a member's grant.
pub async fn set_grant(
    tx: &mut Tx,
    id: i64,
    sections: &str,
    can_post: bool,
    now: Micros,
) -> Result<(), crate::store::Error> {
    let sql = Sql::new("UPDATE links SET sections = $1, can_post = $2, changed_at = $3 WHERE id = $4 AND ended_at IS NULL")
        .arg(sections)
        .arg(can_post)
        .arg(now)
        .arg(id);
    tx.execute(&sql).await.map(|_| ())
}

/// Open invitations of a client: not used, not revoked, not expired, and made by the one who
/// holds the portal now (an invitation dies with the holdership that made it).
pub async fn open_invitations(
    db: &Db,
    patient_id: &str,
    now: Micros,
) -> Result<Vec<Code>, crate::store::Error> {
    let columns = CODE_COLUMNS
        .split(", ")
        .map(|c| format!("c.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    db.fetch_all(
        &Sql::new(format!(
            "SELECT {columns} FROM codes c JOIN links h ON h.id = c.invited_by \
             WHERE c.patient_id = $1 AND c.kind = 'invitation' AND c.used_at IS NULL \
             AND c.revoked_at IS NULL AND c.expires_at > $2 \
             AND h.patient_id = c.patient_id AND h.role = 'holder' AND h.ended_at IS NULL \
             ORDER BY c.created_at, c.id"
        ))
        .arg(patient_id)
        .arg(now),
    )
    .await
}

/// The code with this public id.
pub async fn code_by_id(db: &Db, id: &str) -> Result<Option<Code>, crate::store::Error> {
    db.fetch_optional(&Sql::new(format!("SELECT {CODE_COLUMNS} FROM codes WHERE id = $1")).arg(id))
        .await
}

/// Revokes an unused code; false if it was used or revoked meanwhile.
pub async fn revoke_code(tx: &mut Tx, id: &str, now: Micros) -> Result<bool, crate::store::Error> {
    let sql = Sql::new(
        "UPDATE codes SET revoked_at = $1 WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL",
    )
    .arg(now)
    .arg(id);
    Ok(tx.execute(&sql).await? > 0)
}

/// Serializes the changes to one client's links on PostgreSQL for the rest of the transaction
/// (two codes redeemed at once for one client must see each other's holder). SQLite has one
/// writer anyway. The database also keeps one holder per client (`links_one_holder`).
pub async fn lock_patient(tx: &mut Tx, patient_id: &str) -> Result<(), crate::store::Error> {
    lock(tx, &[("links", patient_id)]).await
}

/// Takes PostgreSQL advisory locks on `keys` (`(space, name)`, in the order given: callers
/// keep one order) for the rest of the transaction; SQLite's one writer serializes anyway.
pub async fn lock(tx: &mut Tx, keys: &[(&str, &str)]) -> Result<(), crate::store::Error> {
    if tx.engine() != super::db::Engine::Postgres {
        return Ok(());
    }
    for (space, name) in keys {
        let key = super::resources::lock_key(space, name);
        tx.execute(&Sql::new("SELECT pg_advisory_xact_lock($1)").arg(key))
            .await?;
    }
    Ok(())
}

/// Blocks a portal user (R7), also temporarily; false if the user is unknown.
pub async fn block_user(
    db: &Db,
    client_id: &str,
    external_id: &str,
    reason: &str,
    until: Option<Micros>,
    actor: &str,
    now: Micros,
) -> Result<Option<i64>, crate::store::Error> {
    let sql = Sql::new(
        "UPDATE users SET blocked_at = $1, blocked_reason = $2, blocked_until = $3, blocked_by = $4 \
         WHERE client_id = $5 AND external_id = $6 RETURNING id",
    )
    .arg(now)
    .arg(reason)
    .arg(until)
    .arg(actor)
    .arg(client_id)
    .arg(external_id);
    let mut tx = db.begin().await?;
    let row: Option<Id> = tx.fetch_optional(&sql).await?;
    tx.commit().await?;
    Ok(row.map(|r| r.id))
}

/// Lifts a user's block; the user's id if the user is known.
pub async fn unblock_user(
    db: &Db,
    client_id: &str,
    external_id: &str,
) -> Result<Option<i64>, crate::store::Error> {
    let sql = Sql::new(
        "UPDATE users SET blocked_at = NULL, blocked_reason = NULL, blocked_until = NULL, blocked_by = NULL \
         WHERE client_id = $1 AND external_id = $2 RETURNING id",
    )
    .arg(client_id)
    .arg(external_id);
    let mut tx = db.begin().await?;
    let row: Option<Id> = tx.fetch_optional(&sql).await?;
    tx.commit().await?;
    Ok(row.map(|r| r.id))
}

/// A change to portal accounts, kept for the record.
#[derive(Debug, Clone, Default)]
pub struct Event<'a> {
    pub actor: &'a str,
    pub kind: &'a str,
    pub user_id: Option<i64>,
    pub patient_id: Option<&'a str>,
    pub link_id: Option<i64>,
    pub detail: Option<String>,
}

pub async fn event(tx: &mut Tx, e: &Event<'_>, now: Micros) -> Result<(), crate::store::Error> {
    let sql = Sql::new(
        "INSERT INTO account_events (at, actor, kind, user_id, patient_id, link_id, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .arg(now)
    .arg(e.actor)
    .arg(e.kind)
    .arg(e.user_id)
    .arg(e.patient_id)
    .arg(e.link_id)
    .arg(e.detail.clone());
    tx.execute(&sql).await.map(|_| ())
}

/// The user id of `(client_id, external_id)`.
pub async fn user_id(
    db: &Db,
    client_id: &str,
    external_id: &str,
) -> Result<Option<i64>, crate::store::Error> {
    let sql = Sql::new("SELECT id FROM users WHERE client_id = $1 AND external_id = $2")
        .arg(client_id)
        .arg(external_id);
    Ok(db.fetch_optional::<Id>(&sql).await?.map(|r| r.id))
}
