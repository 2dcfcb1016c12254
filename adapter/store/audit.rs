//! The audit log as stored: records appended in one transaction per batch, each chained to the
//! one before it by hash (the chain's head is read and extended under a lock, so that several
//! processes on one PostgreSQL keep one chain), and read back in order to verify the chain.

use super::db::{Arg, Engine, Executor, Sql, Tx, push_values};

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
    /// `X-Trace-Id` (in the hash only when present: records before it hash as they did).
    pub trace_id: Option<String>,
    pub remote: Option<String>,
    pub prev_hash: String,
    pub hash: String,
    /// Per client, the resource types of its data served (kept beside the record, not in its
    /// hash: it repeats what `resources` says, by client).
    #[sqlx(skip)]
    #[serde(skip)]
    pub types: Vec<(String, String)>,
}

const COLUMNS: &str = "seq, at, action, route, method, query, client_id, user_id, patient, \
                       resources, detail, status, reason, request_id, correlation_id, trace_id, remote, prev_hash, hash";

/// The hash the first record chains to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The advisory lock every writer of the log holds on PostgreSQL while it reads and extends
/// the head, so that several processes keep one chain (SQLite has one writer).
const CHAIN_LOCK: &str = "SELECT pg_advisory_xact_lock(7513)";

/// A write transaction that holds the chain's lock from its start (on PostgreSQL the lock is
/// taken in the same round trip as `BEGIN`), for [`head`] and [`append`].
pub async fn begin(db: &crate::store::Db) -> Result<Tx, crate::store::Error> {
    db.begin_with(CHAIN_LOCK).await
}

/// Takes the chain's lock in a transaction begun otherwise (a handler's own write), until it
/// ends; before [`head`].
pub async fn lock(tx: &mut Tx) -> Result<(), crate::store::Error> {
    if tx.engine() == Engine::Postgres {
        tx.execute(&Sql::new(CHAIN_LOCK)).await?;
    }
    Ok(())
}

/// Where the next record goes (the `seq` it follows and the hash it chains to), in a
/// transaction that holds the chain's lock ([`begin`] or [`lock`]): after the head that
/// `audit_head` keeps (a trigger moves it with every append). Should the newest records have
/// been cut off, the next one is numbered and chained after the head all the same, so that
/// `verify` still finds the gap once more is written. Should the head's row be gone, after
/// the last record (`verify` reports the row missing).
pub async fn head(tx: &mut Tx) -> Result<(i64, String), crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Ends {
        kept_seq: Option<i64>,
        kept_hash: Option<String>,
        last_seq: Option<i64>,
        last_hash: Option<String>,
    }
    let ends: Option<Ends> = tx
        .fetch_optional(&Sql::new(
            "SELECT (SELECT seq FROM audit_head WHERE id = 1) AS kept_seq, \
             (SELECT hash FROM audit_head WHERE id = 1) AS kept_hash, \
             (SELECT MAX(seq) FROM audit_log) AS last_seq, \
             (SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1) AS last_hash",
        ))
        .await?;
    let Some(e) = ends else {
        return Ok((0, GENESIS.to_string()));
    };
    Ok(
        match (e.kept_seq.zip(e.kept_hash), e.last_seq.zip(e.last_hash)) {
            (Some((kept, hash)), Some((last, _))) => (kept.max(last), hash),
            (Some(kept), None) => kept,
            (None, Some(last)) => last,
            (None, None) => (0, GENESIS.to_string()),
        },
    )
}

/// The last record appended and its hash, as `audit_head` keeps them (`None`: the row is
/// gone).
pub async fn kept_head(
    mut ex: impl Executor,
) -> Result<Option<(i64, String)>, crate::store::Error> {
    let kept: Option<Head> = ex
        .fetch_optional(&Sql::new("SELECT seq, hash FROM audit_head WHERE id = 1"))
        .await?;
    Ok(kept.map(|h| (h.seq, h.hash)))
}

#[derive(sqlx::FromRow, serde::Deserialize)]
struct Head {
    seq: i64,
    hash: String,
}

/// Appends records whose `seq` and hashes are set (after [`head`], in the same transaction).
pub async fn append(tx: &mut Tx, records: &[Stored]) -> Result<(), crate::store::Error> {
    // `trace_id` is named only when a record of the batch has one (most have none): a
    // parameter less per row, and a log of the version before it can still be appended to.
    let traced = records.iter().any(|r| r.trace_id.is_some());
    let about: Vec<[Arg; 3]> = records
        .iter()
        .flat_map(|r| {
            let mut patients: Vec<&str> = r
                .patient
                .iter()
                .flat_map(|p| p.split(' '))
                .filter(|p| !p.is_empty())
                .collect();
            patients.sort_unstable();
            patients.dedup();
            patients.into_iter().map(|p| {
                let types = r.types.iter().find(|(q, _)| q == p).map(|(_, t)| t.clone());
                [r.seq.into(), p.into(), types.into()]
            })
        })
        .collect();
    let patients = "INSERT INTO audit_patients (seq, patient, types)";
    if traced {
        let log = format!("INSERT INTO audit_log ({COLUMNS})");
        insert(tx, &log, &rows::<19>(records), patients, &about).await
    } else {
        let log = format!(
            "INSERT INTO audit_log ({})",
            COLUMNS.replace(" trace_id,", "")
        );
        insert(tx, &log, &rows::<18>(records), patients, &about).await
    }
}

/// The log's rows, in the order of [`COLUMNS`]: 19 values with `trace_id`, 18 without it.
fn rows<const N: usize>(records: &[Stored]) -> Vec<[Arg; N]> {
    records
        .iter()
        .map(|r| {
            let mut values = [
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
            ]
            .into_iter()
            .chain((N == 19).then(|| r.trace_id.clone().into()))
            .chain([
                r.remote.clone().into(),
                r.prev_hash.as_str().into(),
                r.hash.as_str().into(),
            ]);
            std::array::from_fn(|_| values.next().unwrap_or(Arg::Int(None)))
        })
        .collect()
}

/// Inserts the log's rows and the client rows beside them.
async fn insert<const N: usize>(
    tx: &mut Tx,
    log: &str,
    rows: &[[Arg; N]],
    patients: &str,
    about: &[[Arg; 3]],
) -> Result<(), crate::store::Error> {
    if tx.engine() == Engine::Postgres
        && !about.is_empty()
        && rows.len() * N + about.len() * 3 <= PARAMETERS
    {
        // One statement for both tables: a round trip less for every batch.
        let mut sql = Sql::new("WITH log AS (");
        push_values(&mut sql, log, rows);
        sql.push(") ");
        push_values(&mut sql, patients, about);
        tx.execute(&sql).await?;
        return Ok(());
    }
    tx.insert(log, rows, "").await?;
    if !about.is_empty() {
        tx.insert(patients, about, "").await?;
    }
    Ok(())
}

/// The most parameters of the one statement [`append`] sends on PostgreSQL.
const PARAMETERS: usize = 8000;

/// What `/admin/audit` asks for; every part optional.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub patient: Option<String>,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    /// From and to (µs, inclusive).
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// `Some(true)`: answered below 400; `Some(false)`: refused or failed.
    pub success: Option<bool>,
    /// Records after this `seq` (keyset paging).
    pub after: i64,
    pub limit: i64,
}

/// The records that match, in the chain's order.
pub async fn search(mut ex: impl Executor, f: &Filter) -> Result<Vec<Stored>, crate::store::Error> {
    let columns: String = COLUMNS
        .split(", ")
        .map(|c| format!("a.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut sql = Sql::new(format!("SELECT {columns} FROM audit_log a"));
    if let Some(p) = &f.patient {
        sql.push(" JOIN audit_patients ap ON ap.seq = a.seq AND ap.patient = ")
            .bind(p.as_str());
    }
    sql.push(" WHERE a.seq > ").bind(f.after);
    filters(&mut sql, f);
    sql.push(" ORDER BY a.seq LIMIT ").bind(f.limit);
    ex.fetch_all(&sql).await
}

fn filters(sql: &mut Sql, f: &Filter) {
    if let Some(c) = &f.client_id {
        sql.push(" AND a.client_id = ").bind(c.as_str());
    }
    if let Some(u) = &f.user_id {
        sql.push(" AND a.user_id = ").bind(u.as_str());
    }
    if let Some(from) = f.from {
        sql.push(" AND a.at >= ").bind(from);
    }
    if let Some(to) = f.to {
        sql.push(" AND a.at <= ").bind(to);
    }
    match f.success {
        Some(true) => {
            sql.push(" AND a.status < 400");
        }
        Some(false) => {
            sql.push(" AND a.status >= 400");
        }
        None => {}
    }
}

/// Whose data a portal client (or one of its users) saw in a period (R19): per client, the
/// answered requests that served its data, and the first and last of them.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Deserialize, serde::Serialize)]
pub struct Exposure {
    pub patient: String,
    pub requests: i64,
    pub first_at: i64,
    pub last_at: i64,
}

pub async fn exposure(
    mut ex: impl Executor,
    f: &Filter,
) -> Result<Vec<Exposure>, crate::store::Error> {
    let mut sql = Sql::new(
        "SELECT ap.patient AS patient, COUNT(*) AS requests, MIN(a.at) AS first_at, \
         MAX(a.at) AS last_at FROM audit_patients ap JOIN audit_log a ON a.seq = ap.seq \
         WHERE ap.types IS NOT NULL",
    );
    filters(
        &mut sql,
        &Filter {
            success: Some(true),
            ..f.clone()
        },
    );
    sql.push(" GROUP BY ap.patient ORDER BY ap.patient");
    ex.fetch_all(&sql).await
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

/// A record of a client's data being seen, as the client's holder is shown it: when, how, by
/// whom as the holder knows them (the name and relationship of their link), which types.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct Seen {
    pub seq: i64,
    pub at: i64,
    pub action: String,
    pub client_id: Option<String>,
    pub types: Option<String>,
    pub name: Option<String>,
    pub relationship: Option<String>,
}

/// The records the holder is shown: answered reads, searches and history that served the
/// client's (`$1`) data, with who did it as the holder knows them.
const SEEN: &str = "SELECT a.seq AS seq, a.at AS at, a.action AS action, a.client_id AS client_id, \
     ap.types AS types, l.name AS name, l.relationship AS relationship \
     FROM audit_patients ap JOIN audit_log a ON a.seq = ap.seq \
     LEFT JOIN users u ON u.client_id = a.client_id AND u.external_id = a.user_id \
     LEFT JOIN links l ON l.id = (SELECT MAX(l2.id) FROM links l2 \
         WHERE l2.user_id = u.id AND l2.patient_id = ap.patient) \
     WHERE ap.patient = $1 AND a.status < 400 \
       AND a.action IN ('read', 'search', 'history') AND ap.types IS NOT NULL";

/// Who saw `patient`'s data, newest first, before `before` (a `seq`).
pub async fn seen(
    mut ex: impl Executor,
    patient: &str,
    before: i64,
    limit: i64,
) -> Result<Vec<Seen>, crate::store::Error> {
    let sql = Sql::new(format!(
        "{SEEN} AND ap.seq < $2 ORDER BY ap.seq DESC LIMIT $3"
    ))
    .arg(patient)
    .arg(before)
    .arg(limit);
    ex.fetch_all(&sql).await
}

/// Record `seq` as [`seen`] lists it for `patient`, if it is one of those.
pub async fn seen_one(
    mut ex: impl Executor,
    patient: &str,
    seq: i64,
) -> Result<Option<Seen>, crate::store::Error> {
    let sql = Sql::new(format!("{SEEN} AND ap.seq = $2"))
        .arg(patient)
        .arg(seq);
    ex.fetch_optional(&sql).await
}

/// The `audit_patients` rows of records `from..=to`: (seq, patient, types), in order.
pub async fn patients_between(
    mut ex: impl Executor,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, String, Option<String>)>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        seq: i64,
        patient: String,
        types: Option<String>,
    }
    let sql = Sql::new(
        "SELECT seq, patient, types FROM audit_patients WHERE seq >= $1 AND seq <= $2 \
         ORDER BY seq, patient",
    )
    .arg(from)
    .arg(to);
    let rows: Vec<Row> = ex.fetch_all(&sql).await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.seq, r.patient, r.types))
        .collect())
}

/// The first record after `after` that a value of the wrong kind makes unreadable (a number
/// where text belongs, text or bytes where a number does), in its row or in a client row
/// beside it. Only SQLite stores such a value (a column's type there is a preference), and
/// only someone with direct access writes one; on PostgreSQL, `None`.
pub async fn mistyped(
    mut ex: impl Executor,
    after: i64,
) -> Result<Option<i64>, crate::store::Error> {
    if ex.engine() == Engine::Postgres {
        return Ok(None);
    }
    let texts = [
        "query",
        "client_id",
        "user_id",
        "patient",
        "resources",
        "detail",
        "reason",
        "request_id",
        "correlation_id",
        "trace_id",
        "remote",
    ]
    .map(|c| format!(" OR typeof({c}) NOT IN ('text', 'null')"))
    .concat();
    let sql = Sql::new(format!(
        "SELECT MIN(seq) AS n FROM (\
         SELECT MIN(seq) AS seq FROM audit_log WHERE seq > $1 AND (typeof(at) <> 'integer' \
         OR typeof(status) <> 'integer' OR typeof(action) <> 'text' OR typeof(route) <> 'text' \
         OR typeof(method) <> 'text' OR typeof(prev_hash) <> 'text' OR typeof(hash) <> 'text'{texts}) \
         UNION ALL SELECT MIN(seq) FROM audit_patients WHERE seq > $2 AND (typeof(seq) <> 'integer' \
         OR typeof(patient) <> 'text' OR typeof(types) NOT IN ('text', 'null'))) AS m"
    ))
    .arg(after)
    .arg(after);
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct First {
        n: Option<i64>,
    }
    let first: Option<First> = ex.fetch_optional(&sql).await?;
    Ok(first.and_then(|f| f.n))
}

/// Rows that no chain walk from 1 reaches: records numbered below 1, and client rows of no
/// record.
pub async fn strays(mut ex: impl Executor) -> Result<i64, crate::store::Error> {
    let sql = Sql::new(
        "SELECT (SELECT COUNT(*) FROM audit_log WHERE seq < 1) \
         + (SELECT COUNT(*) FROM audit_patients ap WHERE NOT EXISTS \
             (SELECT 1 FROM audit_log a WHERE a.seq = ap.seq)) AS n",
    );
    ex.fetch_count(&sql).await
}

/// Where the chain starts after a prune: the last record removed and its hash.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Deserialize)]
pub struct Anchor {
    pub upto: i64,
    pub hash: String,
    /// The records removed were all older than this (µs).
    pub before: i64,
    /// When the prune ran (µs).
    pub at: i64,
}

/// The latest anchor, if the chain was ever pruned.
pub async fn anchor(mut ex: impl Executor) -> Result<Option<Anchor>, crate::store::Error> {
    ex.fetch_optional(&Sql::new(
        "SELECT upto, hash, before, at FROM audit_anchors ORDER BY upto DESC LIMIT 1",
    ))
    .await
}

/// The last record that a prune of what is older than `before` (µs) removes, with its hash:
/// the one before the first record that is not older (every record up to it is).
pub async fn prunable(
    tx: &mut Tx,
    before: i64,
) -> Result<Option<(i64, String)>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Last {
        seq: i64,
        hash: String,
    }
    let young: Option<Last> = tx
        .fetch_optional(
            &Sql::new("SELECT seq, hash FROM audit_log WHERE at >= $1 ORDER BY seq LIMIT 1")
                .arg(before),
        )
        .await?;
    let last: Option<Last> = match young {
        Some(y) => {
            tx.fetch_optional(
                &Sql::new("SELECT seq, hash FROM audit_log WHERE seq = $1").arg(y.seq - 1),
            )
            .await?
        }
        None => {
            tx.fetch_optional(&Sql::new(
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            ))
            .await?
        }
    };
    Ok(last.map(|l| (l.seq, l.hash)))
}

/// Records the anchor of a prune (in the transaction that records the prune in the chain).
pub async fn add_anchor(tx: &mut Tx, a: &Anchor) -> Result<(), crate::store::Error> {
    tx.insert(
        "INSERT INTO audit_anchors (upto, hash, before, at)",
        &[[
            a.upto.into(),
            a.hash.as_str().into(),
            a.before.into(),
            a.at.into(),
        ]],
        "",
    )
    .await?;
    Ok(())
}

/// Removes up to `chunk` of the oldest records at or below `upto` (an anchor's), with their
/// client rows, in one transaction; how many records went.
pub async fn remove_upto(
    db: &super::Db,
    upto: i64,
    chunk: i64,
) -> Result<u64, crate::store::Error> {
    let mut tx = db.begin().await?;
    let first = tx
        .fetch_count(&Sql::new(
            "SELECT COALESCE(MIN(seq), 0) AS n FROM audit_log",
        ))
        .await?;
    if first < 1 || first > upto {
        return Ok(0);
    }
    let end = upto.min(first.saturating_add(chunk - 1));
    tx.execute(
        &Sql::new("DELETE FROM audit_patients WHERE seq >= $1 AND seq <= $2")
            .arg(first)
            .arg(end),
    )
    .await?;
    let n = tx
        .execute(
            &Sql::new("DELETE FROM audit_log WHERE seq >= $1 AND seq <= $2")
                .arg(first)
                .arg(end),
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// Names a journal file whose records `tx` moves into the log (`audit/journal.rs`).
pub async fn mark_moved(tx: &mut Tx, file: &str) -> Result<(), crate::store::Error> {
    let mut sql = Sql::new("INSERT INTO audit_journal (file) VALUES (");
    sql.bind(file).push(") ON CONFLICT (file) DO NOTHING");
    tx.execute(&sql).await?;
    Ok(())
}

/// Registers a process's journal prefix (`audit_writers`), before it writes a file.
pub async fn register_writer(
    db: &crate::store::Db,
    prefix: &str,
    at: i64,
) -> Result<(), crate::store::Error> {
    let mut sql = Sql::new("INSERT INTO audit_writers (prefix, at) VALUES (");
    sql.bind(prefix)
        .push(", ")
        .bind(at)
        .push(") ON CONFLICT (prefix) DO NOTHING");
    db.execute(&sql).await?;
    Ok(())
}

/// The journal prefixes of this database's processes (the empty one: files of versions
/// before registration are still to be taken).
pub async fn writers(ex: impl Executor) -> Result<Vec<String>, crate::store::Error> {
    names(ex, "SELECT prefix AS name FROM audit_writers").await
}

/// Ends the taking of files that versions before registration left.
pub async fn end_unregistered(db: &crate::store::Db) -> Result<(), crate::store::Error> {
    db.execute(&Sql::new("DELETE FROM audit_writers WHERE prefix = ''"))
        .await?;
    Ok(())
}

/// Forgets a journal file that is gone.
pub async fn forget_moved(mut ex: impl Executor, file: &str) -> Result<(), crate::store::Error> {
    let mut sql = Sql::new("DELETE FROM audit_journal WHERE file = ");
    sql.bind(file);
    ex.execute(&sql).await?;
    Ok(())
}

/// The journal files whose records were moved.
pub async fn moved(ex: impl Executor) -> Result<Vec<String>, crate::store::Error> {
    names(ex, "SELECT file AS name FROM audit_journal").await
}

/// The `name` column of every row `select` gives.
async fn names(mut ex: impl Executor, select: &str) -> Result<Vec<String>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        name: String,
    }
    let rows: Vec<Row> = ex.fetch_all(&Sql::new(select)).await?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}
