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

/// Keeps a message just posted, waiting for moderation.
pub async fn insert(db: &Db, m: &Message) -> Result<(), crate::store::Error> {
    let sql = Sql::new(
        "INSERT INTO messages (id, patient_id, client_id, external_id, user_id, source, body, \
         state, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'waiting', $8)",
    )
    .arg(m.id.as_str())
    .arg(m.patient_id.as_str())
    .arg(m.client_id.as_str())
    .arg(m.external_id.as_str())
    .arg(m.user_id)
    .arg(m.source.as_str())
    .arg(m.body.as_str())
    .arg(m.created_at);
    db.execute(&sql).await.map(|_| ())
}

/// One message by id.
pub async fn get(db: &Db, id: &str) -> Result<Option<Message>, crate::store::Error> {
    db.fetch_optional(&Sql::new(format!("SELECT {COLUMNS} FROM messages WHERE id = $1")).arg(id))
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

/// The source that sent a client's Patient resource: where messages about them go.
pub async fn source_of_patient(
    db: &Db,
    patient_id: &str,
) -> Result<Option<String>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Source {
        source: String,
    }
    let row: Option<Source> = db
        .fetch_optional(
            &Sql::new("SELECT source FROM resources WHERE type = 'Patient' AND fhir_id = $1")
                .arg(patient_id),
        )
        .await?;
    Ok(row.map(|r| r.source))
}

/// How many messages of a portal user wait for moderation, and their size in bytes.
pub async fn waiting_of(db: &Db, user_id: i64) -> Result<(i64, i64), crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Count {
        n: i64,
        bytes: Option<i64>,
    }
    let row: Option<Count> = db
        .fetch_optional(
            &Sql::new(
                "SELECT COUNT(*) AS n, CAST(SUM(LENGTH(body)) AS BIGINT) AS bytes FROM messages \
                 WHERE user_id = $1 AND state = 'waiting'",
            )
            .arg(user_id),
        )
        .await?;
    Ok(row.map_or((0, 0), |r| (r.n, r.bytes.unwrap_or(0))))
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
