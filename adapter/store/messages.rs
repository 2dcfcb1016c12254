//! Messages from portal users to the care team (issue 23): kept from the moment they are
//! posted, through moderation, to approval or rejection.

use super::db::{Db, Executor, Sql};
use crate::time::Micros;

/// One message as kept.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// The order messages came in.
    pub seq: i64,
    pub id: String,
    pub patient_id: String,
    pub client_id: String,
    pub external_id: String,
    pub user_id: i64,
    pub source: String,
    pub body: String,
    pub state: String,
    pub reason: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub created_at: i64,
}

const COLUMNS: &str = "seq, id, patient_id, client_id, external_id, user_id, source, body, state, \
                       reason, decided_by, decided_at, created_at";

/// What one user, and all users together about one client, may have waiting for moderation.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub per_user: i64,
    pub bytes_per_user: i64,
    pub per_client: i64,
    pub bytes_per_client: i64,
}

/// What became of a message to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    Kept,
    /// The same idempotency key of the same sender came before: that message.
    Repeated(Box<Message>),
    /// Over a cap: which, in words.
    Full(String),
}

/// Keeps a message just posted, waiting for moderation, unless the sender's or the client's
/// waiting messages would exceed `caps`, or the sender's `key` was used before. Counted and
/// written in one transaction that posts of the same sender or about the same client wait for
/// (the writer on SQLite, advisory locks on PostgreSQL), so that posts sent at once cannot
/// pass a cap together.
pub async fn insert(
    db: &Db,
    m: &Message,
    key: Option<&str>,
    caps: Caps,
) -> Result<Kept, crate::store::Error> {
    let mut tx = db.begin().await?;
    super::accounts::lock(
        &mut tx,
        &[
            ("messages-user", &m.user_id.to_string()),
            ("messages-client", &m.patient_id),
        ],
    )
    .await?;
    if let Some(key) = key
        && let Some(earlier) = posted_before(
            &mut tx,
            "messages",
            COLUMNS,
            &m.client_id,
            &m.external_id,
            key,
        )
        .await?
    {
        return Ok(Kept::Repeated(Box::new(earlier)));
    }
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Count {
        n: i64,
        bytes: Option<i64>,
    }
    let count = |column: &str| {
        Sql::new(format!(
            "SELECT COUNT(*) AS n, CAST(SUM(LENGTH(body)) AS BIGINT) AS bytes FROM messages \
             WHERE {column} = $1 AND state = 'waiting'"
        ))
    };
    let user: Count = tx.fetch_one(&count("user_id").arg(m.user_id)).await?;
    let client: Count = tx
        .fetch_one(&count("patient_id").arg(m.patient_id.as_str()))
        .await?;
    let size = m.body.len() as i64;
    let full = if user.n >= caps.per_user {
        Some(format!(
            "{} messages of this user wait for moderation already",
            caps.per_user
        ))
    } else if user.bytes.unwrap_or(0) + size > caps.bytes_per_user {
        Some(format!(
            "this user's messages waiting for moderation would hold more than {} MB",
            caps.bytes_per_user / 1024 / 1024
        ))
    } else if client.n >= caps.per_client
        || client.bytes.unwrap_or(0) + size > caps.bytes_per_client
    {
        Some("too many messages about this client wait for moderation already".to_string())
    } else {
        None
    };
    if let Some(full) = full {
        return Ok(Kept::Full(full));
    }
    let sql = Sql::new(
        "INSERT INTO messages (id, patient_id, client_id, external_id, user_id, source, body, \
         state, created_at, idempotency_key) VALUES ($1, $2, $3, $4, $5, $6, $7, 'waiting', $8, $9)",
    )
    .arg(m.id.as_str())
    .arg(m.patient_id.as_str())
    .arg(m.client_id.as_str())
    .arg(m.external_id.as_str())
    .arg(m.user_id)
    .arg(m.source.as_str())
    .arg(m.body.as_str())
    .arg(m.created_at)
    .arg(key);
    tx.execute(&sql).await?;
    tx.commit().await?;
    Ok(Kept::Kept)
}

/// The row of `table` (`messages` or `requests`) that a portal user's earlier post with the
/// same `Idempotency-Key` made, if any.
pub(super) async fn posted_before<T: super::db::Row>(
    tx: &mut super::db::Tx,
    table: &str,
    columns: &str,
    client_id: &str,
    external_id: &str,
    key: &str,
) -> Result<Option<T>, crate::store::Error> {
    tx.fetch_optional(
        &Sql::new(format!(
            "SELECT {columns} FROM {table} WHERE client_id = $1 AND external_id = $2 \
             AND idempotency_key = $3"
        ))
        .arg(client_id)
        .arg(external_id)
        .arg(key),
    )
    .await
}

/// One message by id.
pub async fn get(db: &Db, id: &str) -> Result<Option<Message>, crate::store::Error> {
    db.fetch_optional(&Sql::new(format!("SELECT {COLUMNS} FROM messages WHERE id = $1")).arg(id))
        .await
}

/// The clients of the messages with these ids, each once.
pub async fn clients_of(db: &Db, ids: &[String]) -> Result<Vec<String>, crate::store::Error> {
    super::patients_in_parts(db, ids, |part| {
        let mut sql = Sql::new("SELECT DISTINCT patient_id FROM messages WHERE id IN (");
        sql.bind_list(part.iter().map(String::as_str));
        sql.push(")");
        sql
    })
    .await
}

/// Messages waiting for a decision, oldest first, after `after` (a `seq`), at most `limit`.
pub async fn waiting(
    db: &Db,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<Message>, crate::store::Error> {
    db.fetch_all(
        &Sql::new(format!(
            "SELECT {COLUMNS} FROM messages WHERE state = 'waiting' AND seq > $1 \
             ORDER BY seq LIMIT $2"
        ))
        .arg(after.unwrap_or(0))
        .arg(limit),
    )
    .await
}

/// Decides a waiting message (`approving` or `rejected`); whether it was still waiting (a
/// message is decided once).
pub async fn decide(
    db: &Db,
    id: &str,
    state: &str,
    reason: Option<&str>,
    by: &str,
    at: Micros,
) -> Result<bool, crate::store::Error> {
    let changed = db
        .execute(
            &Sql::new(
                "UPDATE messages SET state = $1, reason = $2, decided_by = $3, decided_at = $4 \
                 WHERE id = $5 AND state = 'waiting'",
            )
            .arg(state)
            .arg(reason)
            .arg(by)
            .arg(at)
            .arg(id),
        )
        .await?;
    Ok(changed == 1)
}

/// Takes a decision back (when what follows it could not be done).
pub async fn undecide(db: &Db, id: &str) -> Result<(), crate::store::Error> {
    db.execute(
        &Sql::new(
            "UPDATE messages SET state = 'waiting', reason = NULL, decided_by = NULL, \
             decided_at = NULL WHERE id = $1",
        )
        .arg(id),
    )
    .await
    .map(|_| ())
}

/// Marks an approval shown and puts the message in the outbox for the record system, in one
/// transaction: an approved message is always on its way.
pub async fn approved(
    db: &Db,
    m: &Message,
    delivered: &str,
    at: Micros,
) -> Result<(), crate::store::Error> {
    let mut tx = db.begin().await?;
    tx.execute(
        &Sql::new("UPDATE messages SET state = 'approved' WHERE id = $1 AND state = 'approving'")
            .arg(m.id.as_str()),
    )
    .await?;
    let key = format!("message:{}", m.id);
    let identifier = format!("{}|{}", crate::messages::IDENTIFIER_SYSTEM, m.id);
    super::outbox::put(
        &mut tx,
        &super::outbox::NewItem {
            key: &key,
            source: &m.source,
            patient_id: &m.patient_id,
            resource_type: "Communication",
            identifier: &identifier,
            method: "create",
            body: delivered,
            at,
        },
    )
    .await?;
    tx.commit().await
}

/// Approvals decided but not yet shown (a stop came between).
pub async fn approving(db: &Db) -> Result<Vec<Message>, crate::store::Error> {
    db.fetch_all(&Sql::new(format!(
        "SELECT {COLUMNS} FROM messages WHERE state = 'approving' ORDER BY seq"
    )))
    .await
}
