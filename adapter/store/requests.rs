//! Correction requests (issue 23, R14): asked by a client's holder, due within at most 30
//! days, decided once, with a reason when refused.

use super::db::{Db, Executor, Sql};
use crate::time::Micros;

/// One request as kept.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct Request {
    pub seq: i64,
    pub id: String,
    pub patient_id: String,
    pub client_id: String,
    pub external_id: String,
    pub user_id: i64,
    /// The source that holds the resource concerned (or the client's dossier): where the
    /// request is delivered.
    pub source: String,
    pub code: String,
    /// `Type/id`, or empty for a request about the dossier as a whole.
    pub focus: String,
    pub description: String,
    pub requester: String,
    /// `requested`, `accepted` or `rejected`.
    pub state: String,
    pub reason: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub created_at: i64,
    pub due_at: i64,
}

const COLUMNS: &str = "seq, id, patient_id, client_id, external_id, user_id, source, code, focus, \
                       description, requester, state, reason, decided_by, decided_at, created_at, due_at";

/// What goes to the record system with a request (put in the outbox with it).
pub struct Delivery<'a> {
    pub body: &'a str,
    /// The wall clock, as the outbox keeps its times.
    pub at: Micros,
}

/// What became of a request to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    Kept,
    /// The same idempotency key of the same user came before: that request.
    Repeated(Box<Request>),
    /// The user has `max_open` requests open already.
    Full,
}

/// Keeps a new request and puts it in the outbox, in one transaction, unless the user has
/// `max_open` requests open or used `key` before. Requests of one user are counted and
/// written one after the other (the writer on SQLite, an advisory lock on PostgreSQL).
pub async fn insert(
    db: &Db,
    r: &Request,
    key: Option<&str>,
    max_open: i64,
    delivery: Delivery<'_>,
) -> Result<Kept, crate::store::Error> {
    let mut tx = db.begin().await?;
    super::accounts::lock(&mut tx, &[("requests-user", &r.user_id.to_string())]).await?;
    if let Some(key) = key
        && let Some(earlier) = super::messages::posted_before(
            &mut tx,
            "requests",
            COLUMNS,
            &r.client_id,
            &r.external_id,
            key,
        )
        .await?
    {
        return Ok(Kept::Repeated(Box::new(earlier)));
    }
    let open = tx
        .fetch_count(
            &Sql::new(
                "SELECT COUNT(*) AS n FROM requests WHERE user_id = $1 AND state = 'requested'",
            )
            .arg(r.user_id),
        )
        .await?;
    if open >= max_open {
        return Ok(Kept::Full);
    }
    let sql = Sql::new(
        "INSERT INTO requests (id, patient_id, client_id, external_id, user_id, source, code, \
         focus, description, requester, state, created_at, due_at, idempotency_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'requested', $11, $12, $13)",
    )
    .arg(r.id.as_str())
    .arg(r.patient_id.as_str())
    .arg(r.client_id.as_str())
    .arg(r.external_id.as_str())
    .arg(r.user_id)
    .arg(r.source.as_str())
    .arg(r.code.as_str())
    .arg(r.focus.as_str())
    .arg(r.description.as_str())
    .arg(r.requester.as_str())
    .arg(r.created_at)
    .arg(r.due_at)
    .arg(key);
    tx.execute(&sql).await?;
    to_outbox(&mut tx, r, delivery).await?;
    tx.commit().await?;
    Ok(Kept::Kept)
}

async fn to_outbox(
    tx: &mut super::db::Tx,
    r: &Request,
    delivery: Delivery<'_>,
) -> Result<(), crate::store::Error> {
    let key = format!("request:{}", r.id);
    let identifier = format!("{}|{}", crate::messages::REQUEST_SYSTEM, r.id);
    super::outbox::put(
        tx,
        &super::outbox::NewItem {
            key: &key,
            source: &r.source,
            patient_id: &r.patient_id,
            resource_type: "Task",
            identifier: &identifier,
            method: "update",
            body: delivery.body,
            at: delivery.at,
        },
    )
    .await
}

/// The clients of the requests with these ids, each once.
pub async fn clients_of(db: &Db, ids: &[String]) -> Result<Vec<String>, crate::store::Error> {
    super::patients_in_parts(db, ids, |part| {
        let mut sql = Sql::new("SELECT DISTINCT patient_id FROM requests WHERE id IN (");
        sql.bind_list(part.iter().map(String::as_str));
        sql.push(")");
        sql
    })
    .await
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Request>, crate::store::Error> {
    db.fetch_optional(&Sql::new(format!("SELECT {COLUMNS} FROM requests WHERE id = $1")).arg(id))
        .await
}

/// The requests about one client, newest first, before `before` (a `seq`), at most `limit`.
pub async fn of_patient(
    db: &Db,
    patient_id: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Request>, crate::store::Error> {
    db.fetch_all(
        &Sql::new(format!(
            "SELECT {COLUMNS} FROM requests WHERE patient_id = $1 AND seq < $2 \
             ORDER BY seq DESC LIMIT $3"
        ))
        .arg(patient_id)
        .arg(before.unwrap_or(i64::MAX))
        .arg(limit),
    )
    .await
}

/// Requests without a decision, the one due first first (so overdue ones lead), after the
/// keyset `after` (`due_at`, `seq`), at most `limit`.
pub async fn open(
    db: &Db,
    after: Option<(i64, i64)>,
    limit: i64,
) -> Result<Vec<Request>, crate::store::Error> {
    let (due, seq) = after.unwrap_or((i64::MIN, i64::MIN));
    db.fetch_all(
        &Sql::new(format!(
            "SELECT {COLUMNS} FROM requests WHERE state = 'requested' \
             AND (due_at > $1 OR (due_at = $2 AND seq > $3)) ORDER BY due_at, seq LIMIT $4"
        ))
        .arg(due)
        .arg(due)
        .arg(seq)
        .arg(limit),
    )
    .await
}

/// How many requests are past their due moment without a decision.
pub async fn overdue(db: &Db, now: Micros) -> Result<i64, crate::store::Error> {
    db.fetch_count(
        &Sql::new("SELECT COUNT(*) AS n FROM requests WHERE state = 'requested' AND due_at < $1")
            .arg(now),
    )
    .await
}

/// Decides a request once (`accepted` or `rejected`) and puts the decided Task in the outbox,
/// in one transaction; whether it was still open.
pub async fn decide(
    db: &Db,
    decided: &Request,
    delivery: Delivery<'_>,
) -> Result<bool, crate::store::Error> {
    let mut tx = db.begin().await?;
    let changed = tx
        .execute(
            &Sql::new(
                "UPDATE requests SET state = $1, reason = $2, decided_by = $3, decided_at = $4 \
                 WHERE id = $5 AND state = 'requested'",
            )
            .arg(decided.state.as_str())
            .arg(decided.reason.as_deref())
            .arg(decided.decided_by.as_deref())
            .arg(decided.decided_at)
            .arg(decided.id.as_str()),
        )
        .await?;
    if changed != 1 {
        return Ok(false);
    }
    to_outbox(&mut tx, decided, delivery).await?;
    tx.commit().await?;
    Ok(true)
}
