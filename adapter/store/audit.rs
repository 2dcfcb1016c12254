//! The audit log as stored: records appended in one transaction per batch, each chained to the
//! one before it by hash (the chain's head is read and extended under a lock, so that several
//! processes on one PostgreSQL keep one chain), and read back in order to verify the chain.

use super::db::{Arg, Engine, Executor, Sql, Tx};

/// One record as stored.
#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow, serde::Deserialize, serde::Serialize)]
pub struct Stored {
    pub seq: i64,
    pub at: i64,
    pub action: String,
    pub route: String,
    pub method: String,
    pub query: Option<String>,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    pub patient: Option<String>,
    pub resources: Option<String>,
    pub detail: Option<String>,
    pub status: i64,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    pub remote: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

const COLUMNS: &str = "seq, at, action, route, method, query, client_id, user_id, patient, \
                       resources, detail, status, reason, request_id, correlation_id, remote, prev_hash, hash";

/// The hash the first record chains to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain's head (its last `seq` and hash), locked until `tx` ends: on PostgreSQL by an
/// advisory lock that every writer of the log takes first; SQLite has one writer.
pub async fn head(tx: &mut Tx) -> Result<(i64, String), crate::store::Error> {
    if tx.engine() == Engine::Postgres {
        tx.execute(&Sql::new("SELECT pg_advisory_xact_lock(7513)"))
            .await?;
    }
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Head {
        seq: i64,
        hash: String,
    }
    let head: Option<Head> = tx
        .fetch_optional(&Sql::new(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
        ))
        .await?;
    Ok(head.map_or((0, GENESIS.to_string()), |h| (h.seq, h.hash)))
}

/// Appends records whose `seq` and hashes are set (after [`head`], in the same transaction).
pub async fn append(tx: &mut Tx, records: &[Stored]) -> Result<(), crate::store::Error> {
    let rows: Vec<[Arg; 18]> = records
        .iter()
        .map(|r| {
            [
                r.seq.into(),
                r.at.into(),
                r.action.as_str().into(),
                r.route.as_str().into(),
                r.method.as_str().into(),
                r.query.clone().into(),
                r.client_id.clone().into(),
                r.user_id.clone().into(),
                r.patient.clone().into(),
                r.resources.clone().into(),
                r.detail.clone().into(),
                r.status.into(),
                r.reason.clone().into(),
                r.request_id.clone().into(),
                r.correlation_id.clone().into(),
                r.remote.clone().into(),
                r.prev_hash.as_str().into(),
                r.hash.as_str().into(),
            ]
        })
        .collect();
    tx.insert(&format!("INSERT INTO audit_log ({COLUMNS})"), &rows, "")
        .await?;
    Ok(())
}

/// Up to `limit` records after `after`, in the chain's order.
pub async fn after(
    mut ex: impl Executor,
    after: i64,
    limit: i64,
) -> Result<Vec<Stored>, crate::store::Error> {
    let sql = Sql::new(format!(
        "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
    ))
    .arg(after)
    .arg(limit);
    ex.fetch_all(&sql).await
}
