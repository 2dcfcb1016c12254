//! Pulling from record systems: each source's cursor per resource type, its counts and last
//! error, and the lease that lets one process at a time pull a source.

use super::db::{Executor, Sql};
use crate::time::Micros;

/// Where a source's poll of one resource type stands.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize, serde::Serialize)]
pub struct PullState {
    pub source: String,
    pub resource_type: String,
    pub cursor_at: Option<i64>,
    pub pending_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub pages: i64,
    pub resources: i64,
    pub retries: i64,
    pub errors: i64,
}

const COLUMNS: &str = "source, resource_type, cursor_at, pending_at, last_success_at, last_error, \
                       last_error_at, pages, resources, retries, errors";

/// The state of every type of `source`, or of every source (`None`).
pub async fn states(
    mut ex: impl Executor,
    source: Option<&str>,
) -> Result<Vec<PullState>, crate::store::Error> {
    let mut sql = Sql::new(format!("SELECT {COLUMNS} FROM pull_state"));
    if let Some(s) = source {
        sql.push(" WHERE source = ").bind(s);
    }
    sql.push(" ORDER BY source, resource_type");
    ex.fetch_all(&sql).await
}

/// What a page taken in moves (in the transaction that stores the page's resources).
#[derive(Debug, Clone, Default)]
pub struct PageTaken<'a> {
    pub source: &'a str,
    /// The process that took the page: it is stored only while this one holds the lease.
    pub holder: &'a str,
    pub resource_type: &'a str,
    /// The cursor moves to this moment (if later than where it stands).
    pub cursor_at: Option<Micros>,
    /// The newest moment seen in the poll under way, kept until the poll ends.
    pub pending_at: Option<Micros>,
    /// The poll ended: the pending moment becomes the cursor.
    pub finished: bool,
    pub resources: i64,
    /// The tries it took beyond the first.
    pub retries: i64,
    pub at: Micros,
}

/// The later of a column and a value, either NULL.
fn later(column: &str, value: &str) -> String {
    format!(
        "CASE WHEN {value} IS NULL THEN {column} WHEN {column} IS NULL OR {value} > {column} \
         THEN {value} ELSE {column} END"
    )
}

/// Records a page taken in.
pub async fn page_taken(
    mut ex: impl Executor,
    p: &PageTaken<'_>,
) -> Result<(), crate::store::Error> {
    // The poll's newest moment so far, and what the cursor moves to.
    let pending = later("pull_state.pending_at", "excluded.pending_at");
    let cursor = if p.finished {
        later(
            &later("pull_state.cursor_at", "excluded.cursor_at"),
            &pending,
        )
    } else {
        later("pull_state.cursor_at", "excluded.cursor_at")
    };
    let pending_after = if p.finished {
        "NULL".to_string()
    } else {
        pending
    };
    let sql = Sql::new(format!(
        "INSERT INTO pull_state (source, resource_type, cursor_at, pending_at, last_success_at, pages, resources, retries) \
         VALUES ($1, $2, $3, $4, $5, 1, $6, $7) ON CONFLICT (source, resource_type) DO UPDATE SET \
         cursor_at = {cursor}, pending_at = {pending_after}, \
         last_success_at = excluded.last_success_at, pages = pull_state.pages + 1, \
         resources = pull_state.resources + excluded.resources, \
         retries = pull_state.retries + excluded.retries"
    ))
    .arg(p.source)
    .arg(p.resource_type)
    .arg(p.cursor_at)
    .arg(p.pending_at)
    .arg(p.at)
    .arg(p.resources)
    .arg(p.retries);
    ex.execute(&sql).await.map(|_| ())
}

/// Records a failure of a source's poll of a type (after its retries) and the retries made.
pub async fn failed(
    mut ex: impl Executor,
    source: &str,
    resource_type: &str,
    message: &str,
    retries: i64,
    at: Micros,
) -> Result<(), crate::store::Error> {
    let sql = Sql::new(
        "INSERT INTO pull_state (source, resource_type, last_error, last_error_at, retries, errors) \
         VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT (source, resource_type) DO UPDATE SET \
         last_error = excluded.last_error, last_error_at = excluded.last_error_at, \
         retries = pull_state.retries + excluded.retries, errors = pull_state.errors + 1",
    )
    .arg(source)
    .arg(resource_type)
    .arg(message)
    .arg(at)
    .arg(retries);
    ex.execute(&sql).await.map(|_| ())
}

/// Whether `holder` holds the lease on `source`, read in the transaction that stores a page.
/// On PostgreSQL the row is locked for share until that transaction ends, so that another
/// process cannot take the lease over while the page is being stored.
pub async fn holds(
    tx: &mut super::db::Tx,
    source: &str,
    holder: &str,
) -> Result<bool, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        holder: String,
    }
    let mut text = "SELECT holder FROM pull_leases WHERE source = $1 AND holder = $2".to_string();
    if tx.engine() == super::db::Engine::Postgres {
        text.push_str(" FOR SHARE");
    }
    let sql = Sql::new(text).arg(source).arg(holder);
    let row: Option<Row> = tx.fetch_optional(&sql).await?;
    Ok(row.is_some_and(|r| r.holder == holder))
}

/// Takes or keeps the lease on `source` for `holder` until `until`; whether `holder` has it. A
/// lease held by another process is taken only once it has expired (its holder died or
/// stopped renewing): the database decides, so two processes never both hold it.
pub async fn lease(
    mut ex: impl Executor,
    source: &str,
    holder: &str,
    now: Micros,
    until: Micros,
) -> Result<bool, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        holder: String,
    }
    let sql = Sql::new(
        "INSERT INTO pull_leases (source, holder, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (source) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE pull_leases.holder = excluded.holder OR pull_leases.expires_at < $4 RETURNING holder",
    )
    .arg(source)
    .arg(holder)
    .arg(until)
    .arg(now);
    let row: Option<Row> = ex.fetch_optional(&sql).await?;
    Ok(row.is_some_and(|r| r.holder == holder))
}

/// Gives up the lease (at a stop), so another process need not wait for it to expire.
pub async fn release_lease(
    mut ex: impl Executor,
    source: &str,
    holder: &str,
) -> Result<(), crate::store::Error> {
    let sql = Sql::new("DELETE FROM pull_leases WHERE source = $1 AND holder = $2")
        .arg(source)
        .arg(holder);
    ex.execute(&sql).await.map(|_| ())
}

/// Asks the process that holds `source`'s lease, whichever it is, to pull now.
pub async fn nudge(
    mut ex: impl Executor,
    source: &str,
    at: Micros,
) -> Result<(), crate::store::Error> {
    let sql = Sql::new("UPDATE pull_leases SET nudged_at = $1 WHERE source = $2")
        .arg(at)
        .arg(source);
    ex.execute(&sql).await.map(|_| ())
}

/// The last nudge of `source` while `holder` holds its lease.
pub async fn nudged(
    mut ex: impl Executor,
    source: &str,
    holder: &str,
) -> Result<Option<Micros>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        nudged_at: Option<i64>,
    }
    let sql = Sql::new("SELECT nudged_at FROM pull_leases WHERE source = $1 AND holder = $2")
        .arg(source)
        .arg(holder);
    let row: Option<Row> = ex.fetch_optional(&sql).await?;
    Ok(row.and_then(|r| r.nudged_at))
}

/// Who holds each source's lease, and until when.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct Lease {
    pub source: String,
    pub holder: String,
    pub expires_at: i64,
}

pub async fn leases(mut ex: impl Executor) -> Result<Vec<Lease>, crate::store::Error> {
    ex.fetch_all(&Sql::new(
        "SELECT source, holder, expires_at FROM pull_leases ORDER BY source",
    ))
    .await
}

/// Per source: versions held back (waiting, held or manual) and released (shown or shown
/// before), as of `now`.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct Released {
    pub source: String,
    pub held_back: i64,
    pub released: i64,
}

pub async fn released(
    mut ex: impl Executor,
    now: Micros,
) -> Result<Vec<Released>, crate::store::Error> {
    let sql = Sql::new(
        "SELECT source, \
         SUM(CASE WHEN withdrawn = 0 AND (release_at IS NULL OR release_at > $1) THEN 1 ELSE 0 END) AS held_back, \
         SUM(CASE WHEN withdrawn = 0 AND release_at <= $2 THEN 1 ELSE 0 END) AS released \
         FROM versions GROUP BY source ORDER BY source",
    )
    .arg(now)
    .arg(now);
    ex.fetch_all(&sql).await
}
