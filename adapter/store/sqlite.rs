//! SQLite by direct calls (rusqlite): a statement runs on the thread that asks for it.
//!
//! A driver that keeps each connection on a thread of its own pays a hand-off between threads
//! for every statement and every row; under load that, not SQLite, was most of the time a
//! portal query or a Bundle took. Here a read runs at once on the caller's thread, on a
//! connection taken from a small stack of idle ones (read-only, WAL). Writes go through one
//! writer connection (SQLite has one writer anyway): a transaction holds it through an async
//! lock, and its statements also run at once, `BEGIN IMMEDIATE` and `COMMIT` included. Only
//! when one of those would wait on another process (`sluis import` writing beside `sluis
//! serve`) does it wait on a blocking thread; checkpoints run on a thread of their own
//! (`checkpoint.rs`). Statements are prepared once per connection and cached by text.
//! Migrations are applied by sqlx (`Db::migrate`), which keeps its own bookkeeping table.

use super::checkpoint::{Checkpointer, Policy};
use super::db::{Arg, Sql};
use super::error::Error;
use rusqlite::{Connection, OpenFlags, Statement};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OwnedMutexGuard;

/// Prepared statements kept per connection. Search builds statements whose text depends on
/// the query's shape (how many clients, sections, values), so a portal's working set is a
/// few dozen texts.
const STATEMENT_CACHE: usize = 256;

/// Statements slower than this are logged as a warning.
const SLOW: Duration = Duration::from_secs(1);

/// An embedded SQLite database: one writer, idle readers.
#[derive(Debug)]
pub struct Sqlite {
    url: String,
    path: PathBuf,
    /// Readers not in use; at most `max_idle` are kept.
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    /// Readers in use now (for the metrics).
    reading: AtomicUsize,
    writer: Arc<tokio::sync::Mutex<Connection>>,
    /// Counts committed writes: whatever was read before a write may be stale after it.
    writes: AtomicU64,
    /// The WAL index (`-shm`), whose header changes with every commit by any process
    /// (e.g. a `sluis import` beside `sluis serve`).
    shm: Option<std::fs::File>,
    /// Copies the log into the database file after commits, off the writer's path.
    checkpointer: Checkpointer,
}

/// The file of a `sqlite://file.db` or `sqlite:file.db` URL (options after `?` are not used).
pub fn file_of(url: &str) -> &str {
    url.trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default()
}

/// How long a statement waits for another process's lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn open(path: &Path, writer: bool) -> Result<Connection, Error> {
    let mode = if writer {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    };
    let conn = Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // A small page cache per reader: the operating system caches the file for all of them,
    // and eight private 32 MB caches would each hold the same pages.
    let cache = if writer { "-16000" } else { "-4000" };
    let mut pragmas = format!(
        "PRAGMA foreign_keys = ON; PRAGMA temp_store = memory; PRAGMA cache_size = {cache};"
    );
    if writer {
        // Checkpoints run on their own thread (`checkpoint.rs`), not in a commit; a log that
        // grew while a long read held it back is cut back to 64 MB once it is reused.
        pragmas.push_str(
            " PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;",
        );
    }
    conn.execute_batch(&pragmas)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

impl Sqlite {
    /// Opens (creating if absent) the database at `url`, in WAL mode.
    pub fn connect(url: &str, max_connections: u32) -> Result<Self, Error> {
        Self::connect_with(url, max_connections, Policy::default())
    }

    /// [`Sqlite::connect`] with checkpoints as `policy` says.
    fn connect_with(url: &str, max_connections: u32, policy: Policy) -> Result<Self, Error> {
        let path = PathBuf::from(file_of(url));
        let writer = open(&path, true)?;
        // A first read opens the WAL index (`-shm`), which SQLite creates lazily.
        writer.query_row("SELECT COUNT(*) FROM sqlite_master", [], |_| Ok(()))?;
        let shm = std::fs::File::open(format!("{}-shm", path.display())).ok();
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        let checkpointer = Checkpointer::start(open(&path, true)?, Arc::downgrade(&writer), policy)
            .map_err(|e| Error::Worker(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self {
            url: url.to_string(),
            path,
            idle: Mutex::new(Vec::new()),
            max_idle: max_connections.max(1) as usize,
            writer,
            writes: AtomicU64::new(0),
            reading: AtomicUsize::new(0),
            shm,
            checkpointer,
        })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's file.
    pub fn file(&self) -> &Path {
        &self.path
    }

    /// `f` on an idle reader (opened if none is idle), on this thread.
    pub fn read<R>(&self, f: impl FnOnce(&Connection) -> Result<R, Error>) -> Result<R, Error> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match idle {
            Some(conn) => conn,
            None => open(&self.path, false)?,
        };
        self.reading.fetch_add(1, Ordering::Relaxed);
        let out = f(&conn);
        self.reading.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(conn);
        }
        out
    }

    /// Connections in use and idle: readers, and the writer.
    pub fn pool_use(&self) -> super::db::PoolUse {
        let idle_readers = self.idle.lock().map_or(0, |i| i.len());
        let writing = usize::from(self.writer.try_lock().is_err());
        super::db::PoolUse {
            in_use: self.reading.load(Ordering::Relaxed) + writing,
            idle: idle_readers + 1 - writing,
            max: self.max_idle + 1,
        }
    }

    /// The writer, once no other transaction holds it.
    pub async fn writer(&self) -> OwnedMutexGuard<Connection> {
        self.writer.clone().lock_owned().await
    }

    /// Notes a committed write.
    pub fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::AcqRel);
        self.checkpointer.poke();
    }

    /// A value that changes with every write committed, by this process or another: this
    /// process's commits and the WAL index header.
    pub fn write_generation(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let shm = self.shm.as_ref()?;
        // The WAL-index header: a change counter, the last frame, checksums and salts.
        let mut header = [0u8; 48];
        shm.read_exact_at(&mut header, 0).ok()?;
        let mut g = self.writes.load(Ordering::Acquire);
        for chunk in header.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            g = (g ^ u64::from_le_bytes(word))
                .wrapping_mul(0x0100_0000_01b3)
                .rotate_left(17);
        }
        Some(g)
    }
}

/// How often SQLite prepared `sql` again when it ran twice on one connection: 0 for a
/// statement whose plan does not depend on its arguments' values. (A bound `LIMIT` does:
/// SQLite then expires the statement at every new binding.)
pub fn prepared_again(conn: &Connection, sql: &Sql) -> Result<u64, Error> {
    let text = sql.sqlite_text();
    for _ in 0..2 {
        let mut stmt = conn.prepare_cached(&text)?;
        bind(&mut stmt, sql)?;
        let mut rows = stmt.raw_query();
        while rows.next()?.is_some() {}
    }
    let stmt = conn.prepare_cached(&text)?;
    Ok(stmt.get_status(rusqlite::StatementStatus::RePrepare) as u64)
}

/// Binds `sql`'s arguments: in order for `?`, by number for `$n`.
fn bind(stmt: &mut Statement<'_>, sql: &Sql) -> Result<(), Error> {
    for i in 1..=stmt.parameter_count() {
        let arg = match stmt.parameter_name(i) {
            None => sql.args.get(i - 1),
            Some(name) => name
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1))
                .and_then(|n| sql.args.get(n)),
        };
        match arg {
            Some(Arg::Int(v)) => stmt.raw_bind_parameter(i, v)?,
            Some(Arg::Text(v)) => stmt.raw_bind_parameter(i, v.as_deref())?,
            Some(Arg::Bytes(v)) => stmt.raw_bind_parameter(i, v.as_slice())?,
            None => return Err(Error::Unbound(i)),
        }
    }
    Ok(())
}

fn logged<R>(text: &str, started: Instant, out: R) -> R {
    let elapsed = started.elapsed();
    if elapsed >= SLOW {
        tracing::warn!(target: "sluis::sql", elapsed_ms = elapsed.as_millis() as u64, statement = text, "slow statement");
    } else {
        tracing::debug!(target: "sluis::sql", elapsed_us = elapsed.as_micros() as u64, statement = text);
    }
    out
}

/// The rows of `sql`, each decoded by its column names.
pub fn fetch_all<T: DeserializeOwned>(conn: &Connection, sql: &Sql) -> Result<Vec<T>, Error> {
    fetch(conn, sql, usize::MAX)
}

/// The first row of `sql`, if any.
pub fn fetch_optional<T: DeserializeOwned>(
    conn: &Connection,
    sql: &Sql,
) -> Result<Option<T>, Error> {
    Ok(fetch(conn, sql, 1)?.pop())
}

/// At most `most` rows of `sql`.
fn fetch<T: DeserializeOwned>(conn: &Connection, sql: &Sql, most: usize) -> Result<Vec<T>, Error> {
    let started = Instant::now();
    let text = sql.sqlite_text();
    let mut stmt = conn.prepare_cached(&text)?;
    bind(&mut stmt, sql)?;
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while out.len() < most
        && let Some(row) = rows.next()?
    {
        out.push(serde_rusqlite::from_row_with_columns::<T>(row, &columns)?);
    }
    Ok(logged(&text, started, out))
}

/// Runs a statement that changes data; rows changed.
pub fn execute(conn: &Connection, sql: &Sql) -> Result<u64, Error> {
    let started = Instant::now();
    let text = sql.sqlite_text();
    let mut stmt = conn.prepare_cached(&text)?;
    bind(&mut stmt, sql)?;
    let mut rows = stmt.raw_query();
    while rows.next()?.is_some() {}
    drop(rows);
    Ok(logged(&text, started, conn.changes()))
}

/// `{head} VALUES (?, …) {tail}`, for rows of `n` values.
fn values_text(head: &str, n: usize, tail: &str) -> String {
    let mut text = String::with_capacity(head.len() + tail.len() + 3 * n + 16);
    text.push_str(head);
    text.push_str(" VALUES (");
    for i in 0..n {
        text.push_str(if i == 0 { "?" } else { ", ?" });
    }
    text.push_str(") ");
    text.push_str(tail);
    text
}

/// Binds one row's values to the statement's parameters, in order.
fn bind_row<const N: usize>(stmt: &mut Statement<'_>, row: &[Arg; N]) -> Result<(), Error> {
    for (i, arg) in row.iter().enumerate() {
        match arg {
            Arg::Int(v) => stmt.raw_bind_parameter(i + 1, v)?,
            Arg::Text(v) => stmt.raw_bind_parameter(i + 1, v.as_deref())?,
            Arg::Bytes(v) => stmt.raw_bind_parameter(i + 1, v.as_slice())?,
        }
    }
    Ok(())
}

/// `{head} VALUES (?, …) {tail}` run once per row on one prepared statement; rows changed,
/// and the rows the statement returns (`tail` with `RETURNING`) decoded as `T`.
pub fn insert_each<T: DeserializeOwned, const N: usize>(
    conn: &Connection,
    head: &str,
    rows: &[[Arg; N]],
    tail: &str,
    returning: bool,
) -> Result<(u64, Vec<T>), Error> {
    let started = Instant::now();
    let text = values_text(head, N, tail);
    let mut stmt = conn.prepare_cached(&text)?;
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let (mut changed, mut out) = (0u64, Vec::new());
    for row in rows {
        bind_row(&mut stmt, row)?;
        let mut result = stmt.raw_query();
        while let Some(r) = result.next()? {
            if returning {
                out.push(serde_rusqlite::from_row_with_columns::<T>(r, &columns)?);
            }
        }
        drop(result);
        changed += conn.changes();
    }
    Ok(logged(&text, started, (changed, out)))
}

/// `{head} VALUES (?, …)` run once per row on one prepared statement: the rowid of each
/// inserted row, in order.
pub fn insert_each_ids<const N: usize>(
    conn: &Connection,
    head: &str,
    rows: &[[Arg; N]],
) -> Result<Vec<i64>, Error> {
    let started = Instant::now();
    let text = values_text(head, N, "");
    let mut stmt = conn.prepare_cached(&text)?;
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        bind_row(&mut stmt, row)?;
        stmt.raw_execute()?;
        ids.push(conn.last_insert_rowid());
    }
    Ok(logged(&text, started, ids))
}

/// A write transaction on the writer; dropped without [`SqliteTx::commit`], it rolls back.
pub struct SqliteTx {
    conn: Option<OwnedMutexGuard<Connection>>,
    store: Arc<Sqlite>,
}

impl SqliteTx {
    /// Takes the writer and starts an immediate transaction. Only another process's write can
    /// make it wait: it is tried at once on this thread, and waited for off the async threads
    /// only when that is so (a hand-off to a blocking thread and back costs about 0.1 ms on a
    /// 2-vCPU machine, a tenth of a Bundle's statements).
    pub async fn begin(store: Arc<Sqlite>) -> Result<Self, Error> {
        let (conn, result) = on_writer(store.writer().await, "BEGIN IMMEDIATE").await?;
        result?;
        Ok(Self {
            conn: Some(conn),
            store,
        })
    }

    /// `f` on the transaction's connection, on this thread.
    pub fn with<R>(&self, f: impl FnOnce(&Connection) -> Result<R, Error>) -> Result<R, Error> {
        match &self.conn {
            Some(conn) => f(conn),
            None => Err(Error::Worker("the transaction has ended".into())),
        }
    }

    /// Commits. In WAL mode with `synchronous = NORMAL` and checkpoints on their own thread, a
    /// commit appends the transaction's pages to the log without an `fsync` (about 0.3 ms for
    /// a Bundle, less than its statements, which run on this thread too); should it have to
    /// wait for another process, it waits off the async threads.
    pub async fn commit(mut self) -> Result<(), Error> {
        let Some(conn) = self.conn.take() else {
            return Err(Error::Worker("the transaction has ended".into()));
        };
        let (conn, result) = on_writer(conn, "COMMIT").await?;
        // Dropped with `self`: rolled back there if the commit failed.
        self.conn = Some(conn);
        result?;
        self.store.wrote();
        Ok(())
    }
}

/// `sql` on the writer: at once on this thread, or, when another process holds the write
/// lock, on a blocking thread where it may wait for it. The connection comes back with the
/// statement's result.
async fn on_writer(
    conn: OwnedMutexGuard<Connection>,
    sql: &'static str,
) -> Result<(OwnedMutexGuard<Connection>, Result<(), Error>), Error> {
    match at_once(&conn, sql) {
        Ok(true) => Ok((conn, Ok(()))),
        Err(e) => Ok((conn, Err(e))),
        Ok(false) => {
            let (mut back, result) = tokio::task::spawn_blocking(move || {
                let result = conn.execute_batch(sql).map_err(Error::from);
                (Returned(Some(conn)), result)
            })
            .await
            .map_err(|e| Error::Worker(e.to_string()))?;
            let conn = back
                .0
                .take()
                .ok_or_else(|| Error::Worker("the writer did not come back".into()))?;
            Ok((conn, result))
        }
    }
}

/// The writer on its way back from a blocking thread. If the caller is gone by then (its
/// request was dropped while `BEGIN IMMEDIATE` waited for another process), the transaction
/// it began is rolled back here: left open, it would hold the write lock and make every
/// later `BEGIN` of this process fail.
struct Returned(Option<OwnedMutexGuard<Connection>>);

impl Drop for Returned {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take()
            && !conn.is_autocommit()
        {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
}

/// Runs `sql` on this thread without waiting for another process's lock: `false` when it
/// would have had to wait (nothing was done), to be run again where waiting is allowed.
fn at_once(conn: &Connection, sql: &str) -> Result<bool, Error> {
    conn.busy_timeout(Duration::ZERO)?;
    let result = conn.execute_batch(sql);
    conn.busy_timeout(BUSY_TIMEOUT)?;
    match result {
        Ok(()) => Ok(true),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.is_autocommit()
        {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
}

/// Runs one statement outside a transaction on the writer (off the async threads: it may
/// wait for another process, or checkpoint).
pub async fn execute_alone(store: &Arc<Sqlite>, sql: &Sql) -> Result<u64, Error> {
    let conn = store.writer().await;
    let sql = sql.clone();
    let n = tokio::task::spawn_blocking(move || execute(&conn, &sql))
        .await
        .map_err(|e| Error::Worker(e.to_string()))??;
    store.wrote();
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}", dir.path().join("t.db").display())
    }

    /// A store in `dir` with an empty table `t (a INTEGER)`.
    async fn with_table_t(dir: &tempfile::TempDir) -> Arc<Sqlite> {
        let store = Arc::new(Sqlite::connect(&url(dir), 2).unwrap());
        execute_alone(&store, &Sql::new("CREATE TABLE t (a INTEGER)"))
            .await
            .unwrap();
        store
    }

    /// Another process's write transaction on `store`'s file, held for `held`, then committed
    /// (on a thread of its own: join it).
    fn another_writer(store: &Sqlite, held: Duration) -> std::thread::JoinHandle<()> {
        let other = open(&store.path, true).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(held);
            other.execute_batch("COMMIT").unwrap();
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_waits_for_another_process_and_then_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_table_t(&dir).await;
        let held = Duration::from_millis(300);
        let ends = another_writer(&store, held);
        let started = Instant::now();
        let tx = SqliteTx::begin(store.clone()).await.unwrap();
        assert!(started.elapsed() >= held, "it waited for the other writer");
        tx.with(|c| execute(c, &Sql::new("INSERT INTO t VALUES ($1)").arg(1)))
            .unwrap();
        tx.commit().await.unwrap();
        ends.join().unwrap();
        // Without another writer it starts at once, and its statements wait again as before.
        let tx = SqliteTx::begin(store.clone()).await.unwrap();
        tx.with(|c| execute(c, &Sql::new("INSERT INTO t VALUES ($1)").arg(2)))
            .unwrap();
        tx.commit().await.unwrap();
        let n: i64 = open(&store.path, false)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        let writer = store.writer().await;
        let timeout: i64 = writer
            .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .unwrap();
        assert_eq!(timeout, BUSY_TIMEOUT.as_millis() as i64);
    }

    /// A write dropped while it waits for another process's lock (its client went away)
    /// leaves no transaction open behind it: the next write of this process goes through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_dropped_while_it_waits_leaves_the_writer_usable() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_table_t(&dir).await;
        let ends = another_writer(&store, Duration::from_millis(300));
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), SqliteTx::begin(store.clone())).await;
        assert!(waiting.is_err(), "it was still waiting when dropped");
        ends.join().unwrap();
        let tx = tokio::time::timeout(Duration::from_secs(5), SqliteTx::begin(store.clone()))
            .await
            .expect("the writer came back")
            .unwrap();
        tx.with(|c| execute(c, &Sql::new("INSERT INTO t VALUES ($1)").arg(1)))
            .unwrap();
        tx.commit().await.unwrap();
        let other = open(&store.path, true).unwrap();
        other.execute_batch("BEGIN IMMEDIATE; COMMIT").unwrap();
    }

    #[tokio::test]
    async fn write_generation_changes_with_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Sqlite::connect(&url(&dir), 2).unwrap());
        let g0 = store.write_generation().expect("the WAL index is open");
        assert_eq!(store.write_generation(), Some(g0), "stable without writes");
        execute_alone(&store, &Sql::new("CREATE TABLE t (a INTEGER)"))
            .await
            .unwrap();
        let g1 = store.write_generation().unwrap();
        assert_ne!(g0, g1);
        let tx = SqliteTx::begin(store.clone()).await.unwrap();
        tx.with(|c| execute(c, &Sql::new("INSERT INTO t VALUES ($1)").arg(1)))
            .unwrap();
        tx.commit().await.unwrap();
        assert_ne!(store.write_generation(), Some(g1));
        // Another connection's commit (as another process's would) changes it too.
        let g2 = store.write_generation().unwrap();
        let other = open(&store.path, true).unwrap();
        other.execute_batch("INSERT INTO t VALUES (2)").unwrap();
        assert_ne!(store.write_generation(), Some(g2));
    }

    #[test]
    fn inserted_rows_report_their_keys_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db"), true).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT NOT NULL UNIQUE)")
            .unwrap();
        conn.execute_batch("INSERT INTO t (id, a) VALUES (41, 'first')")
            .unwrap();
        let rows: Vec<[Arg; 1]> = ["x", "y", "z"].map(|a| [a.into()]).to_vec();
        let ids = insert_each_ids(&conn, "INSERT INTO t (a)", &rows).unwrap();
        assert_eq!(ids, [42, 43, 44]);
        let stored: Vec<(i64, String)> = conn
            .prepare("SELECT id, a FROM t WHERE id > 41 ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            stored,
            [(42, "x".into()), (43, "y".into()), (44, "z".into())]
        );
        // A row that cannot be inserted is an error, not a key of an earlier row.
        let rows: Vec<[Arg; 1]> = ["w", "x"].map(|a| [a.into()]).to_vec();
        assert!(insert_each_ids(&conn, "INSERT INTO t (a)", &rows).is_err());
    }

    #[tokio::test]
    async fn a_dropped_transaction_rolls_back_and_frees_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_table_t(&dir).await;
        {
            let tx = SqliteTx::begin(store.clone()).await.unwrap();
            tx.with(|c| execute(c, &Sql::new("INSERT INTO t VALUES (1)")))
                .unwrap();
        }
        let tx = SqliteTx::begin(store.clone()).await.unwrap();
        tx.commit().await.unwrap();
        #[derive(serde::Deserialize)]
        struct N {
            n: i64,
        }
        let n: Vec<N> = store
            .read(|c| fetch_all(c, &Sql::new("SELECT COUNT(*) AS n FROM t")))
            .unwrap();
        assert_eq!(n[0].n, 0);
    }

    #[test]
    fn placeholders_bind_by_number_and_unbound_ones_are_an_error() {
        let conn = Connection::open_in_memory().unwrap();
        #[derive(serde::Deserialize)]
        struct Row {
            a: i64,
            b: String,
            c: Option<String>,
        }
        // `$2` before `$1`, and `$1` twice: bound by number, not by position.
        let sql = Sql::new("SELECT $2 + $1 AS a, $3 AS b, $1 || 'x' AS c")
            .arg(1)
            .arg(2)
            .arg("three");
        let rows: Vec<Row> = fetch_all(&conn, &sql).unwrap();
        assert_eq!((rows[0].a, rows[0].b.as_str()), (3, "three"));
        assert_eq!(rows[0].c.as_deref(), Some("1x"));
        let missing = Sql::new("SELECT $1 AS a");
        assert!(matches!(
            fetch_all::<Row>(&conn, &missing),
            Err(Error::Unbound(1))
        ));
    }

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    /// A store whose table `t` takes blobs, checkpointed as `policy` says.
    async fn blob_store(dir: &tempfile::TempDir, policy: Policy) -> Arc<Sqlite> {
        let store = Arc::new(Sqlite::connect_with(&url(dir), 2, policy).unwrap());
        execute_alone(&store, &Sql::new("CREATE TABLE t (b BLOB)"))
            .await
            .unwrap();
        store
    }

    /// A transaction of `pages` pages of new rows.
    async fn write_pages(store: &Arc<Sqlite>, pages: usize) {
        let tx = SqliteTx::begin(store.clone()).await.unwrap();
        tx.with(|c| {
            let sql = Sql::new("INSERT INTO t (b) VALUES (randomblob(3900))");
            for _ in 0..pages {
                execute(c, &sql)?;
            }
            Ok(())
        })
        .unwrap();
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn commits_leave_checkpoints_to_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy {
            pause: Duration::from_millis(5),
            hold_frames: 1_000_000,
        };
        let store = blob_store(&dir, policy).await;
        let auto: i64 = store
            .writer()
            .await
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0, "the writer's commits do not checkpoint");
        write_pages(&store, 1500).await;
        // SQLite's own threshold is 1000 pages; the thread copies them into the file.
        let file = store.path.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        while file_len(&file) < 1500 * 3900 {
            assert!(Instant::now() < deadline, "no checkpoint after the commit");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn the_log_is_reused_under_writes_that_never_pause() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy {
            pause: Duration::from_millis(1),
            hold_frames: 200,
        };
        let store = blob_store(&dir, policy).await;
        // 12,000 pages back to back: without a held checkpoint the log would keep them all.
        // With it, the log holds what is written while a checkpoint or two run (their fsyncs
        // take milliseconds to tens of them), far less than half.
        for _ in 0..600 {
            write_pages(&store, 20).await;
        }
        let wal = PathBuf::from(format!("{}-wal", store.path.display()));
        let frames = file_len(&wal) / 4096;
        assert!(
            frames < 6000,
            "the log grew to {frames} pages instead of being reused"
        );
    }

    #[test]
    fn a_reader_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::connect(&url(&dir), 1).unwrap();
        let result = store.read(|c| execute(c, &Sql::new("CREATE TABLE t (a INTEGER)")));
        assert!(result.is_err(), "readers are opened read-only");
    }
}
