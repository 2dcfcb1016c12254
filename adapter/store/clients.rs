//! What the access decision knows of a client: care episodes and life status (read out of
//! EpisodeOfCare and Patient at ingest, from their newest version) and blocks (R8).

use super::db::Executor as _;
use super::db::{Db, Sql, Tx};
use crate::time::Micros;
use std::collections::HashMap;

/// One EpisodeOfCare as its newest version says.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
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
) -> Result<(), crate::store::Error> {
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
) -> Result<(), crate::store::Error> {
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
pub async fn deceased_at(
    tx: &mut Tx,
    patient_id: &str,
) -> Result<Option<Micros>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
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

pub async fn status(db: &Db, patient_ids: &[&str]) -> Result<Status, crate::store::Error> {
    let mut out = Status::default();
    if patient_ids.is_empty() {
        return Ok(out);
    }
    // One round trip for all three kinds of facts.
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        kind: String,
        patient_id: String,
        status: Option<String>,
        a: Option<i64>,
        b: Option<i64>,
        c: Option<i64>,
        resource_id: Option<i64>,
    }
    let mut sql = Sql::new(
        "SELECT 'episode' AS kind, patient_id, status, start_at AS a, end_at AS b, recorded_at AS c, \
         resource_id FROM care_episodes WHERE patient_id IN (",
    );
    sql.bind_list(patient_ids.iter().copied());
    sql.push(
        ") UNION ALL SELECT 'deceased', patient_id, NULL, deceased_at, NULL, NULL, NULL \
         FROM client_life WHERE patient_id IN (",
    );
    sql.bind_list(patient_ids.iter().copied());
    sql.push(
        ") UNION ALL SELECT 'blocked', patient_id, NULL, blocked_at, NULL, NULL, NULL \
         FROM client_blocks WHERE patient_id IN (",
    );
    sql.bind_list(patient_ids.iter().copied());
    sql.push(")");
    for r in db.fetch_all::<Row>(&sql).await? {
        match r.kind.as_str() {
            "episode" => out
                .episodes
                .entry(r.patient_id.clone())
                .or_default()
                .push(Episode {
                    resource_id: r.resource_id.unwrap_or_default(),
                    patient_id: r.patient_id,
                    status: r.status.unwrap_or_default(),
                    start_at: r.a,
                    end_at: r.b,
                    recorded_at: r.c.unwrap_or_default(),
                }),
            "deceased" => {
                out.deceased.insert(r.patient_id, r.a.unwrap_or_default());
            }
            _ => {
                out.blocked.insert(r.patient_id, r.a.unwrap_or_default());
            }
        }
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
) -> Result<(), crate::store::Error> {
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
pub async fn unblock(db: &Db, patient_id: &str) -> Result<bool, crate::store::Error> {
    Ok(db
        .execute(&Sql::new("DELETE FROM client_blocks WHERE patient_id = $1").arg(patient_id))
        .await?
        > 0)
}

/// Those of `ids` that are clients here (a Patient of the store, current or deleted): for a
/// record that must name every client a request tried.
pub async fn known(db: &Db, ids: &[String]) -> Result<Vec<String>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        id: String,
    }
    let mut out = Vec::new();
    // In parts, well below either engine's limit on bound values.
    for part in ids.chunks(1000) {
        let mut sql =
            Sql::new("SELECT fhir_id AS id FROM resources WHERE type = 'Patient' AND fhir_id IN (");
        sql.bind_list(part.iter().map(String::as_str));
        sql.push(")");
        out.extend(db.fetch_all::<Row>(&sql).await?.into_iter().map(|r| r.id));
    }
    Ok(out)
}
