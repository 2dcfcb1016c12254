//! The outbox (issue 23): what goes back to the record systems, kept until each item is
//! delivered. Items are claimed for a while by one process (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL; SQLite has one writer), so that processes sharing a database do not send the
//! same item at once; the record system's idempotency key covers a claim that ran out.

use super::db::{Db, Engine, Executor, Sql};
use crate::time::Micros;

/// One item to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem<'a> {
    pub key: &'a str,
    pub source: &'a str,
    pub patient_id: &'a str,
    pub resource_type: &'a str,
    /// `system|value`.
    pub identifier: &'a str,
    /// `create` (POST with `If-None-Exist`) or `update` (conditional PUT).
    pub method: &'a str,
    pub body: &'a str,
    pub at: Micros,
}

/// Puts an item in the outbox; an item under the same key gets the new body and is delivered
/// again (a request that was decided), one already there with this body is left alone.
pub async fn put(mut ex: impl Executor, item: &NewItem<'_>) -> Result<(), crate::store::Error> {
    let sql = Sql::new(
        "INSERT INTO outbox (key, source, patient_id, resource_type, identifier, method, body, \
         state, next_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9) \
         ON CONFLICT (key) DO UPDATE SET body = excluded.body, method = excluded.method, \
         version = outbox.version + 1, state = 'pending', next_at = excluded.next_at, \
         attempts = 0, last_error = NULL, last_error_at = NULL, created_at = excluded.created_at \
         WHERE outbox.body <> excluded.body",
    )
    .arg(item.key)
    .arg(item.source)
    .arg(item.patient_id)
    .arg(item.resource_type)
    .arg(item.identifier)
    .arg(item.method)
    .arg(item.body)
    .arg(item.at)
    .arg(item.at);
    ex.execute(&sql).await.map(|_| ())
}

/// An item claimed for delivery.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct Item {
    pub seq: i64,
    pub key: String,
    pub source: String,
    pub resource_type: String,
    pub identifier: String,
    pub method: String,
    pub body: String,
    pub version: i64,
    pub attempts: i64,
}

/// Claims up to `limit` items of `source` that are due, oldest first, for `holder` until
/// `until`. Items another process holds a live claim on are left to it. The deliverer claims
/// one at a time, just before it sends it, so that a claim outlasts its send.
pub async fn claim(
    db: &Db,
    source: &str,
    holder: &str,
    now: Micros,
    until: Micros,
    limit: i64,
) -> Result<Vec<Item>, crate::store::Error> {
    let lock = if db.engine() == Engine::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = Sql::new(format!(
        "UPDATE outbox SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
         WHERE seq IN (SELECT seq FROM outbox WHERE state = 'pending' AND source = $3 \
         AND next_at <= $4 AND (claimed_until IS NULL OR claimed_until < $5) \
         ORDER BY seq LIMIT $6{lock}) \
         RETURNING seq, key, source, resource_type, identifier, method, body, version, attempts"
    ))
    .arg(holder)
    .arg(until)
    .arg(source)
    .arg(now)
    .arg(now)
    .arg(limit);
    let mut tx = db.begin().await?;
    let mut items: Vec<Item> = tx.fetch_all(&sql).await?;
    tx.commit().await?;
    items.sort_by_key(|i| i.seq);
    Ok(items)
}

/// Marks an item delivered and gives up the claim; whether it was marked delivered. An item
/// whose body changed since it was claimed (a request decided meanwhile) stays pending, to be
/// sent again at once; one another process took over is left to it.
pub async fn delivered(
    db: &Db,
    item: &Item,
    holder: &str,
    location: Option<&str>,
    at: Micros,
) -> Result<bool, crate::store::Error> {
    let marked = db
        .execute(
            &Sql::new(
                "UPDATE outbox SET state = 'delivered', delivered_at = $1, location = $2, \
                 claimed_by = NULL, claimed_until = NULL \
                 WHERE seq = $3 AND version = $4 AND claimed_by = $5",
            )
            .arg(at)
            .arg(location)
            .arg(item.seq)
            .arg(item.version)
            .arg(holder),
        )
        .await?;
    if marked == 1 {
        return Ok(true);
    }
    db.execute(
        &Sql::new(
            "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL \
             WHERE seq = $1 AND claimed_by = $2",
        )
        .arg(item.seq)
        .arg(holder),
    )
    .await?;
    Ok(false)
}

/// Records a failed try: the item is tried again from `next_at`.
pub async fn failed(
    db: &Db,
    item: &Item,
    holder: &str,
    error: &str,
    at: Micros,
    next_at: Micros,
) -> Result<(), crate::store::Error> {
    let sql = Sql::new(
        "UPDATE outbox SET last_error = $1, last_error_at = $2, next_at = $3, \
         claimed_by = NULL, claimed_until = NULL WHERE seq = $4 AND claimed_by = $5",
    )
    .arg(error)
    .arg(at)
    .arg(next_at)
    .arg(item.seq)
    .arg(holder);
    db.execute(&sql).await.map(|_| ())
}

/// Whether an item of `source` is due and free to claim.
pub async fn any_due(db: &Db, source: &str, now: Micros) -> Result<bool, crate::store::Error> {
    let n = db
        .fetch_count(
            &Sql::new(
                "SELECT COUNT(*) AS n FROM (SELECT seq FROM outbox WHERE state = 'pending' \
                 AND source = $1 AND next_at <= $2 AND (claimed_until IS NULL OR claimed_until < $3) \
                 LIMIT 1) due",
            )
            .arg(source)
            .arg(now)
            .arg(now),
        )
        .await?;
    Ok(n > 0)
}

/// Records a failure that kept every due item of `source` from being sent (no token): each
/// shows it and waits until `next_at`.
pub async fn all_failed(
    db: &Db,
    source: &str,
    error: &str,
    at: Micros,
    next_at: Micros,
) -> Result<(), crate::store::Error> {
    let sql = Sql::new(
        "UPDATE outbox SET last_error = $1, last_error_at = $2, next_at = $3 \
         WHERE state = 'pending' AND source = $4 AND next_at <= $5 \
         AND (claimed_until IS NULL OR claimed_until < $6)",
    )
    .arg(error)
    .arg(at)
    .arg(next_at)
    .arg(source)
    .arg(at)
    .arg(at);
    db.execute(&sql).await.map(|_| ())
}

/// Gives back what `holder` claimed and did not finish (at a stop).
pub async fn unclaim(db: &Db, holder: &str) -> Result<(), crate::store::Error> {
    let sql = Sql::new(
        "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL, attempts = attempts - 1 \
         WHERE claimed_by = $1 AND state = 'pending'",
    )
    .arg(holder);
    db.execute(&sql).await.map(|_| ())
}

/// Per source: what waits, what was delivered, and the oldest waiting item.
#[derive(Debug, Clone, Default, sqlx::FromRow, serde::Deserialize)]
pub struct SourceState {
    pub source: String,
    pub pending: i64,
    pub delivered: i64,
    /// Pending items whose last try failed.
    pub failing: i64,
    pub oldest_pending_at: Option<i64>,
    pub last_delivered_at: Option<i64>,
    pub last_error_at: Option<i64>,
}

pub async fn states(db: &Db) -> Result<Vec<SourceState>, crate::store::Error> {
    db.fetch_all(&Sql::new(
        "SELECT source, \
         SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END) AS pending, \
         SUM(CASE WHEN state = 'delivered' THEN 1 ELSE 0 END) AS delivered, \
         SUM(CASE WHEN state = 'pending' AND last_error IS NOT NULL THEN 1 ELSE 0 END) AS failing, \
         MIN(CASE WHEN state = 'pending' THEN created_at END) AS oldest_pending_at, \
         MAX(delivered_at) AS last_delivered_at, \
         MAX(CASE WHEN state = 'pending' THEN last_error_at END) AS last_error_at \
         FROM outbox GROUP BY source ORDER BY source",
    ))
    .await
}

/// The last error of a source's items that still wait.
pub async fn last_error(db: &Db, source: &str) -> Result<Option<String>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        last_error: Option<String>,
    }
    let row: Option<Row> = db
        .fetch_optional(
            &Sql::new(
                "SELECT last_error FROM outbox WHERE source = $1 AND state = 'pending' \
                 AND last_error IS NOT NULL ORDER BY last_error_at DESC LIMIT 1",
            )
            .arg(source),
        )
        .await?;
    Ok(row.and_then(|r| r.last_error))
}

/// Where an item stands, by key (for the sender's and the holder's views).
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct Delivery {
    pub state: String,
    pub delivered_at: Option<i64>,
}

pub async fn delivery(db: &Db, key: &str) -> Result<Option<Delivery>, crate::store::Error> {
    db.fetch_optional(&Sql::new("SELECT state, delivered_at FROM outbox WHERE key = $1").arg(key))
        .await
}
