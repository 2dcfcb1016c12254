//! What the access decision knows of a client: care episodes and life status (read out of
//! EpisodeOfCare and Patient at ingest, from their newest version) and blocks (R8).

use super::db::{Db, Sql, Tx};
use crate::time::Micros;
use std::collections::HashMap;

/// One EpisodeOfCare as its newest version says.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Episode {
    pub resource_id: i64,
    pub patient_id: String,
    pub status: String,
    pub start_at: Option<i64>,
    pub end_at: Option<i64>,
    pub recorded_at: i64,
}

/// Replaces the episode of `resource_id` (`None`: it was withdrawn or has no client).
pub async fn set_episode(
    tx: &mut Tx,
    resource_id: i64,
    episode: Option<&Episode>,
) -> Result<(), sqlx::Error> {
    tx.execute(&Sql::new("DELETE FROM care_episodes WHERE resource_id = $1").arg(resource_id))
        .await?;
    if let Some(e) = episode {
        let sql = Sql::new(
            "INSERT INTO care_episodes (resource_id, patient_id, status, start_at, end_at, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .arg(resource_id)
        .arg(e.patient_id.as_str())
        .arg(e.status.as_str())
        .arg(e.start_at)
        .arg(e.end_at)
        .arg(e.recorded_at);
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// Records the moment of death of a client, or that there is none.
pub async fn set_deceased(
    tx: &mut Tx,
    patient_id: &str,
    deceased_at: Option<Micros>,
) -> Result<(), sqlx::Error> {
    match deceased_at {
        None => tx
            .execute(&Sql::new("DELETE FROM client_life WHERE patient_id = $1").arg(patient_id))
            .await
            .map(|_| ()),
        Some(at) => tx
            .execute(
                &Sql::new(
                    "INSERT INTO client_life (patient_id, deceased_at) VALUES ($1, $2) \
                     ON CONFLICT (patient_id) DO UPDATE SET deceased_at = excluded.deceased_at",
                )
                .arg(patient_id)
                .arg(at),
            )
            .await
            .map(|_| ()),
    }
}

/// The recorded moment of death of a client, if any.
pub async fn deceased_at(tx: &mut Tx, patient_id: &str) -> Result<Option<Micros>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        deceased_at: i64,
    }
    let row: Option<Row> = tx
        .fetch_optional(
            &Sql::new("SELECT deceased_at FROM client_life WHERE patient_id = $1").arg(patient_id),
        )
        .await?;
    Ok(row.map(|r| r.deceased_at))
}

/// Everything the decision needs of these clients, in three indexed lookups.
#[derive(Debug, Default)]
pub struct Status {
    pub episodes: HashMap<String, Vec<Episode>>,
    pub deceased: HashMap<String, Micros>,
    pub blocked: HashMap<String, Micros>,
}

pub async fn status(db: &Db, patient_ids: &[&str]) -> Result<Status, sqlx::Error> {
    let mut out = Status::default();
    if patient_ids.is_empty() {
        return Ok(out);
    }
    let list = |prefix: &str| {
        let mut sql = Sql::new(prefix);
        sql.bind_list(patient_ids.iter().copied());
        sql.push(")");
        sql
    };
    let episodes: Vec<Episode> = db
        .fetch_all(&list(
            "SELECT resource_id, patient_id, status, start_at, end_at, recorded_at FROM care_episodes WHERE patient_id IN (",
        ))
        .await?;
    for e in episodes {
        out.episodes
            .entry(e.patient_id.clone())
            .or_default()
            .push(e);
    }
    #[derive(sqlx::FromRow)]
    struct Life {
        patient_id: String,
        deceased_at: i64,
    }
    for l in db
        .fetch_all::<Life>(&list(
            "SELECT patient_id, deceased_at FROM client_life WHERE patient_id IN (",
        ))
        .await?
    {
        out.deceased.insert(l.patient_id, l.deceased_at);
    }
    #[derive(sqlx::FromRow)]
    struct Block {
        patient_id: String,
        blocked_at: i64,
    }
    for b in db
        .fetch_all::<Block>(&list(
            "SELECT patient_id, blocked_at FROM client_blocks WHERE patient_id IN (",
        ))
        .await?
    {
        out.blocked.insert(b.patient_id, b.blocked_at);
    }
    Ok(out)
}

/// Blocks all portal access to a client (R8); blocking twice keeps the first block.
pub async fn block(
    db: &Db,
    patient_id: &str,
    reason: Option<&str>,
    actor: &str,
    now: Micros,
) -> Result<(), sqlx::Error> {
    let sql = Sql::new(
        "INSERT INTO client_blocks (patient_id, blocked_at, reason, actor) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (patient_id) DO NOTHING",
    )
    .arg(patient_id)
    .arg(now)
    .arg(reason)
    .arg(actor);
    db.execute(&sql).await.map(|_| ())
}

/// Lifts a client block; whether there was one.
pub async fn unblock(db: &Db, patient_id: &str) -> Result<bool, sqlx::Error> {
    Ok(db
        .execute(&Sql::new("DELETE FROM client_blocks WHERE patient_id = $1").arg(patient_id))
        .await?
        > 0)
}
