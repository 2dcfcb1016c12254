//! The processes serving from one database (issue 24): a heartbeat per process, so that each
//! knows how many are alive (the request limits are shared among them).

use super::db::{Db, Executor, Sql};
use crate::time::Micros;

/// Records that `id` is alive at `now`, forgets processes silent since `forget_before`, and
/// counts those seen since `alive_since` (this one included).
pub async fn beat(
    db: &Db,
    id: &str,
    now: Micros,
    alive_since: Micros,
    forget_before: Micros,
) -> Result<i64, crate::store::Error> {
    let mut tx = db.begin().await?;
    tx.execute(
        &Sql::new(
            "INSERT INTO processes (id, seen_at) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
        )
        .arg(id)
        .arg(now),
    )
    .await?;
    tx.execute(&Sql::new("DELETE FROM processes WHERE seen_at < $1").arg(forget_before))
        .await?;
    let n = tx
        .fetch_count(
            &Sql::new("SELECT COUNT(*) AS n FROM processes WHERE seen_at >= $1").arg(alive_since),
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// Takes `id` off the list (at a stop), so that the others take its share at once.
pub async fn gone(db: &Db, id: &str) -> Result<(), crate::store::Error> {
    db.execute(&Sql::new("DELETE FROM processes WHERE id = $1").arg(id))
        .await
        .map(|_| ())
}
