//! Loads the facts of the access decision for one request from the store.
//!
//! A grant change, block or new terms version must act on the very next request (R3, R7, R5):
//! [`for_user`] reads all of it in one round trip (the user, their links, and the care, life and
//! block status of the clients they are linked to), and [`FactsCache`] keeps what it read only
//! while no write has been committed since (on SQLite; on PostgreSQL it always reads).

use super::decision::{ClientFacts, Episode, LinkFacts, Role, UserFacts};
use crate::store::db::{Db, Sql};
use crate::time::from_micros;
use chrono::NaiveDate;
use std::collections::BTreeMap;

#[derive(sqlx::FromRow, serde::Deserialize)]
struct UserLinkRow {
    user_id: i64,
    birth_date: Option<String>,
    terms_version: Option<String>,
    blocked_at: Option<i64>,
    blocked_until: Option<i64>,
    link_id: Option<i64>,
    patient_id: Option<String>,
    role: Option<String>,
    sections: Option<String>,
    can_post: Option<i64>,
    ended_at: Option<i64>,
    changed_at: Option<i64>,
}

/// The user (if known) and all their links, ended ones included.
pub async fn user_and_links(
    db: &Db,
    client_id: &str,
    external_id: &str,
) -> Result<(Option<UserFacts>, Vec<LinkFacts>), crate::store::Error> {
    let sql = Sql::new(
        "SELECT u.id AS user_id, u.birth_date, u.terms_version, u.blocked_at, u.blocked_until, \
                l.id AS link_id, l.patient_id, l.role, l.sections, l.can_post, l.ended_at, l.changed_at \
         FROM users u LEFT JOIN links l ON l.user_id = u.id \
         WHERE u.client_id = $1 AND u.external_id = $2 ORDER BY l.id",
    )
    .arg(client_id)
    .arg(external_id);
    let rows: Vec<UserLinkRow> = db.fetch_all(&sql).await?;
    let Some(first) = rows.first() else {
        return Ok((None, Vec::new()));
    };
    let user = UserFacts {
        id: first.user_id,
        birth_date: first
            .birth_date
            .as_deref()
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()),
        terms_version: first.terms_version.clone(),
        blocked: first.blocked_at.is_some(),
        blocked_until: first.blocked_until.map(from_micros),
    };
    let links = rows
        .into_iter()
        .filter_map(|r| {
            Some(LinkFacts {
                id: r.link_id?,
                patient_id: r.patient_id?,
                role: Role::parse(r.role.as_deref()?)?,
                sections: r.sections.as_deref().map(parse_sections),
                can_post: r.can_post.unwrap_or(0) != 0,
                ended: r.ended_at.is_some(),
                changed_at: r.changed_at.map(from_micros),
            })
        })
        .collect();
    Ok((Some(user), links))
}

pub use crate::store::accounts::{format_sections, parse_sections};

/// The care, life and block facts of the given clients.
pub async fn clients(
    db: &Db,
    patient_ids: &[&str],
) -> Result<BTreeMap<String, ClientFacts>, crate::store::Error> {
    let mut status = crate::store::clients::status(db, patient_ids).await?;
    Ok(patient_ids
        .iter()
        .map(|p| {
            let episodes = status
                .episodes
                .remove(*p)
                .unwrap_or_default()
                .into_iter()
                .map(|e| Episode {
                    status: e.status,
                    start: e.start_at.map(from_micros),
                    end: e.end_at.map(from_micros),
                    recorded: from_micros(e.recorded_at),
                })
                .collect();
            (
                p.to_string(),
                ClientFacts {
                    blocked: status.blocked.contains_key(*p),
                    episodes,
                    deceased_at: status.deceased.get(*p).copied().map(from_micros),
                },
            )
        })
        .collect())
}

/// One row of [`for_user`]'s query; `kind` says which columns mean what.
#[derive(sqlx::FromRow, serde::Deserialize)]
struct FactRow {
    kind: String,
    id: Option<i64>,
    a: Option<i64>,
    b: Option<i64>,
    c: Option<i64>,
    s1: Option<String>,
    s2: Option<String>,
    s3: Option<String>,
}

/// Everything the decision needs about one portal user, in one query.
pub async fn for_user(
    db: &Db,
    client_id: &str,
    external_id: &str,
) -> Result<
    (
        Option<UserFacts>,
        Vec<LinkFacts>,
        BTreeMap<String, ClientFacts>,
    ),
    crate::store::Error,
> {
    let sql = Sql::new(
        "WITH u AS (SELECT id, birth_date, terms_version, blocked_at, blocked_until FROM users \
                    WHERE client_id = $1 AND external_id = $2), \
              l AS (SELECT l.id, l.patient_id, l.role, l.sections, l.can_post, l.ended_at, l.changed_at \
                    FROM links l JOIN u ON l.user_id = u.id), \
              p AS (SELECT DISTINCT patient_id FROM l WHERE ended_at IS NULL) \
         SELECT 'user' AS kind, id, blocked_at AS a, blocked_until AS b, CAST(NULL AS BIGINT) AS c, \
                birth_date AS s1, terms_version AS s2, CAST(NULL AS TEXT) AS s3 FROM u \
         UNION ALL SELECT 'link', id, can_post, ended_at, changed_at, patient_id, role, sections FROM l \
         UNION ALL SELECT 'episode', e.resource_id, e.start_at, e.end_at, e.recorded_at, e.patient_id, e.status, NULL \
                   FROM care_episodes e WHERE e.patient_id IN (SELECT patient_id FROM p) \
         UNION ALL SELECT 'deceased', NULL, d.deceased_at, NULL, NULL, d.patient_id, NULL, NULL \
                   FROM client_life d WHERE d.patient_id IN (SELECT patient_id FROM p) \
         UNION ALL SELECT 'blocked', NULL, k.blocked_at, NULL, NULL, k.patient_id, NULL, NULL \
                   FROM client_blocks k WHERE k.patient_id IN (SELECT patient_id FROM p)",
    )
    .arg(client_id)
    .arg(external_id);
    let rows: Vec<FactRow> = db.fetch_all(&sql).await?;
    let mut user = None;
    let mut links = Vec::new();
    let mut clients: BTreeMap<String, ClientFacts> = BTreeMap::new();
    for r in rows {
        match r.kind.as_str() {
            "user" => {
                user = Some(UserFacts {
                    id: r.id.unwrap_or_default(),
                    birth_date: r
                        .s1
                        .as_deref()
                        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()),
                    terms_version: r.s2,
                    blocked: r.a.is_some(),
                    blocked_until: r.b.map(from_micros),
                })
            }
            "link" => {
                if let (Some(id), Some(patient_id), Some(role)) =
                    (r.id, r.s1, r.s2.as_deref().and_then(Role::parse))
                {
                    links.push(LinkFacts {
                        id,
                        patient_id,
                        role,
                        sections: r.s3.as_deref().map(parse_sections),
                        can_post: r.a.unwrap_or(0) != 0,
                        ended: r.b.is_some(),
                        changed_at: r.c.map(from_micros),
                    });
                }
            }
            kind => {
                let Some(patient) = r.s1 else { continue };
                let facts = clients.entry(patient).or_default();
                match kind {
                    "episode" => facts.episodes.push(Episode {
                        status: r.s2.unwrap_or_default(),
                        start: r.a.map(from_micros),
                        end: r.b.map(from_micros),
                        recorded: from_micros(r.c.unwrap_or_default()),
                    }),
                    "deceased" => facts.deceased_at = r.a.map(from_micros),
                    _ => facts.blocked = true,
                }
            }
        }
    }
    links.sort_by_key(|l| l.id);
    Ok((user, links, clients))
}

/// The facts of one user, as [`for_user`] reads them.
pub type UserFactsSet = (
    Option<UserFacts>,
    Vec<LinkFacts>,
    BTreeMap<String, ClientFacts>,
);

/// Facts read since the last write, so that a user's requests do not read them again.
///
/// Exact, not a time-based cache: an entry is used while no write has been committed since it
/// was read (`Db::write_generation`), or, after commits, while the store's count of changes to
/// the facts (`facts_version`, bumped by triggers in the changing transaction) is what it was
/// when they were read. So a grant change, block or new episode acts on the next request, also
/// when another process (`sluis import`, a second `serve`) wrote it, while the audit trail's
/// commits (one per request) cost no re-read. On SQLite only, where every commit changes the
/// WAL index header; on PostgreSQL facts are always read fresh. The decision itself is always
/// made anew (it depends on the moment).
///
/// The facts version is read once per write generation, whoever asks first: under load the
/// audit trail commits about once per few requests, and each read of it is a read transaction
/// of its own.
#[derive(Default)]
pub struct FactsCache {
    entries: std::sync::Mutex<std::collections::HashMap<UserKey, CachedFacts>>,
    /// A write generation and the facts version read after it was seen.
    version: std::sync::Mutex<Option<(u64, i64)>>,
}

/// `(portal client, portal user)`.
type UserKey = (String, String);
/// The write generation last seen, the facts version they were read at, and the facts.
type CachedFacts = (u64, i64, std::sync::Arc<UserFactsSet>);

const CACHE_LIMIT: usize = 20_000;

impl FactsCache {
    /// The facts of `(client_id, external_id)`, from the cache when still exact.
    pub async fn get(
        &self,
        db: &Db,
        client_id: &str,
        external_id: &str,
    ) -> Result<std::sync::Arc<UserFactsSet>, crate::store::Error> {
        let Some(generation) = db.write_generation() else {
            return Ok(std::sync::Arc::new(
                for_user(db, client_id, external_id).await?,
            ));
        };
        let key = (client_id.to_string(), external_id.to_string());
        let cached = match self.entries.lock() {
            Ok(entries) => entries.get(&key).cloned(),
            Err(_) => None,
        };
        if let Some((g, _, facts)) = &cached
            && *g == generation
        {
            return Ok(facts.clone());
        }
        // Something was committed: the facts still hold if none of them changed. The version
        // is read before the facts, so facts changed in between are read again next time;
        // and after the generation was seen, so a version known for this generation is never
        // older than what was committed by then.
        let known = match self.version.lock() {
            Ok(v) => v.filter(|(g, _)| *g == generation).map(|(_, n)| n),
            Err(_) => None,
        };
        let version = match known {
            Some(n) => n,
            None => {
                let n = db
                    .fetch_count(&crate::store::Sql::new(
                        "SELECT n FROM facts_version WHERE id = 1",
                    ))
                    .await?;
                if let Ok(mut v) = self.version.lock() {
                    *v = Some((generation, n));
                }
                n
            }
        };
        let facts = match cached {
            Some((_, v, facts)) if v == version => facts,
            _ => std::sync::Arc::new(for_user(db, client_id, external_id).await?),
        };
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_LIMIT {
                entries.clear();
            }
            entries.insert(key, (generation, version, facts.clone()));
        }
        Ok(facts)
    }
}
