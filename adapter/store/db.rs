//! The database handle: SQLite (embedded default) or PostgreSQL (production), one API.
//!
//! SQL is written once with `$1`-style placeholders, which both engines accept, and built with
//! [`Sql`] where it is dynamic. Rows are decoded into plain structs that both engines can fill
//! (`sqlx::FromRow` for PostgreSQL, `serde::Deserialize` by column name for SQLite).
//! PostgreSQL is reached through sqlx's pool; SQLite by direct calls (`store::sqlite`), with
//! all writes through a single connection (SQLite has one writer anyway; this avoids lock
//! upgrades) and reads on read-only connections in WAL mode.

use super::error::Error;
use super::sqlite::{self, Sqlite, SqliteTx};
use serde::de::DeserializeOwned;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{
    Arguments, AssertSqlSafe, ConnectOptions, Connection, FromRow, PgPool, Postgres, Transaction,
};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Which engine a handle talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Vec<u8>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_string))
    }
}

/// SQL text with its arguments; `bind` writes the next `$n` placeholder.
#[derive(Debug, Clone, Default)]
pub struct Sql {
    pub text: String,
    pub args: Vec<Arg>,
    /// PostgreSQL plans it for its values at every run instead of keeping a plan per
    /// connection (see [`push_pairs_in`]).
    pub planned_each_time: bool,
}

impl Sql {
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            args: Vec::new(),
            planned_each_time: false,
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `value`.
    pub fn bind(&mut self, value: impl Into<Arg>) -> &mut Self {
        self.args.push(value.into());
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    /// Appends another statement (e.g. a subquery), renumbering its placeholders after ours.
    pub fn append(&mut self, other: Sql) -> &mut Self {
        let offset = self.args.len();
        let bytes = other.text.as_bytes();
        let mut i = 0;
        let mut last = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                if let Ok(n) = other.text[start..end].parse::<usize>() {
                    self.text.push_str(&other.text[last..i]);
                    self.text.push('$');
                    self.text.push_str(&(n + offset).to_string());
                    last = end;
                    i = end;
                    continue;
                }
            }
            i += 1;
        }
        self.text.push_str(&other.text[last..]);
        self.args.extend(other.args);
        self
    }

    /// Adds an argument for a placeholder already written in the text (`$n` in order).
    pub fn arg(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Appends `$a, $b, …` for each value.
    pub fn bind_list<T: Into<Arg>>(&mut self, values: impl IntoIterator<Item = T>) -> &mut Self {
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(v);
        }
        self
    }

    /// The text for SQLite: `$1, $2, …` used once each and in order become `?`. SQLite looks up
    /// named parameters by a linear search per parameter, which makes a statement with hundreds
    /// of `$n` (a multi-row insert) quadratic to bind; anonymous `?` bind in order for free.
    pub(crate) fn sqlite_text(&self) -> String {
        let bytes = self.text.as_bytes();
        let mut out = String::with_capacity(self.text.len());
        let mut expected = 1usize;
        let mut last = 0;
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                if end > start {
                    if self.text[start..end].parse::<usize>().ok() != Some(expected) {
                        return self.text.clone();
                    }
                    out.push_str(&self.text[last..i]);
                    out.push('?');
                    expected += 1;
                    last = end;
                    i = end;
                    continue;
                }
            }
            i += 1;
        }
        out.push_str(&self.text[last..]);
        out
    }

    fn pg_args(&self) -> Result<PgArguments, sqlx::Error> {
        let mut a = PgArguments::default();
        for arg in &self.args {
            match arg {
                Arg::Int(v) => a.add(*v),
                Arg::Text(v) => a.add(v.clone()),
                Arg::Bytes(v) => a.add(v.clone()),
            }
            .map_err(sqlx::Error::Encode)?;
        }
        Ok(a)
    }
}

/// A row type both engines can decode: by sqlx on PostgreSQL, by its column names (serde)
/// on SQLite.
pub trait Row: DeserializeOwned + for<'r> FromRow<'r, PgRow> + Send + Unpin {}
impl<T> Row for T where T: DeserializeOwned + for<'r> FromRow<'r, PgRow> + Send + Unpin {}

/// Sets `TCP_NODELAY` on this process's TCP sockets to the database's port.
///
/// sqlx 0.9.0 stopped setting it (its issue 4335, fixed after that release). Without it, a
/// statement whose message goes out in two writes (a multi-row insert of a Bundle, with its
/// hundreds of parameters) waits for the server's delayed acknowledgement: about 40 ms per
/// statement, which made PostgreSQL ingest ten times slower. sqlx gives no access to its
/// socket, so after each new connection the sockets are found by peer port. Remove with the
/// sqlx release that sets the option again.
#[cfg(target_os = "linux")]
fn no_delay_to(port: u16) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(raw) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: the descriptor is only borrowed for the two calls below. Should another
        // thread close it meanwhile, they fail (EBADF, ENOTSOCK) or touch a socket of this same
        // process, where TCP_NODELAY is harmless.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
        let socket = socket2::SockRef::from(&fd);
        let to_db = socket
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a.port() == port);
        if to_db {
            let _ = socket.set_tcp_nodelay(true);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn no_delay_to(_port: u16) {}

/// Connections of the database: in use, idle, and at most.
#[derive(Debug, Clone, Copy)]
pub struct PoolUse {
    pub in_use: usize,
    pub idle: usize,
    pub max: usize,
}

/// The database: SQLite by direct calls, or a PostgreSQL pool.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(Arc<Sqlite>),
    Postgres(PgPool),
}

impl Db {
    /// Connects to `url` (`sqlite://file.db` or `postgres://…`), creating a SQLite file if absent.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, Error> {
        Self::connect_with(url, max_connections, None).await
    }

    /// [`Db::connect`]; on PostgreSQL every statement is cancelled after `statement_timeout`,
    /// so that no query runs unbounded.
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        statement_timeout: Option<Duration>,
    ) -> Result<Self, Error> {
        if url.starts_with("sqlite:") {
            Ok(Db::Sqlite(Arc::new(Sqlite::connect(url, max_connections)?)))
        } else {
            // No JIT compilation: it pays off for long analytic queries, and costs a short
            // query (a count over a heavy client, an `_include`) tens of milliseconds to
            // compile, past the cost estimate where PostgreSQL turns it on by default.
            let mut options = PgConnectOptions::from_str(url)?.options([("jit", "off")]);
            if let Some(t) = statement_timeout {
                options = options.options([("statement_timeout", format!("{}ms", t.as_millis()))]);
            }
            let port = options.get_port();
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(move |_, _| {
                    Box::pin(async move {
                        no_delay_to(port);
                        Ok(())
                    })
                })
                .connect_with(options)
                .await?;
            Ok(Db::Postgres(pool))
        }
    }

    /// The file of a SQLite database (`None` for PostgreSQL and SQLite in memory).
    pub fn sqlite_file(&self) -> Option<&std::path::Path> {
        match self {
            Db::Sqlite(s) => {
                let f = s.file();
                let name = f.to_string_lossy();
                (!name.is_empty() && !name.starts_with(":memory:") && !name.contains("mode=memory"))
                    .then_some(f)
            }
            Db::Postgres(_) => None,
        }
    }

    /// A value that changes with every write committed, by this process or another: this
    /// process's commits and the WAL index header (SQLite). `None` on PostgreSQL, where no
    /// such value is at hand.
    pub fn write_generation(&self) -> Option<u64> {
        match self {
            Db::Sqlite(s) => s.write_generation(),
            Db::Postgres(_) => None,
        }
    }

    /// How many connections are in use and idle (for the metrics).
    pub fn pool_use(&self) -> PoolUse {
        match self {
            Db::Sqlite(s) => s.pool_use(),
            Db::Postgres(pool) => {
                let idle = pool.num_idle();
                PoolUse {
                    in_use: (pool.size() as usize).saturating_sub(idle),
                    idle,
                    max: pool.options().get_max_connections() as usize,
                }
            }
        }
    }

    pub fn engine(&self) -> Engine {
        match self {
            Db::Sqlite(_) => Engine::Sqlite,
            Db::Postgres(_) => Engine::Postgres,
        }
    }

    /// Brings PostgreSQL's planner statistics up to date for the tables searches read.
    ///
    /// Without statistics (a fresh load, or autovacuum turned off) PostgreSQL guesses that a
    /// client has one row and may probe `search_tokens` by code for every row of a page, which
    /// turns a 2 ms portal query into seconds. Run at start and after `sluis import`; between
    /// those, autovacuum keeps them current. SQLite's statements are written to plan well
    /// without statistics (`docs/query-plans.md`), so there this does nothing.
    pub async fn analyze(&self) -> Result<(), Error> {
        match self {
            Db::Sqlite(_) => Ok(()),
            Db::Postgres(pool) => {
                sqlx::query(
                    "ANALYZE resources, versions, search_tokens, search_dates, refs, users, links, care_episodes",
                )
                .execute(pool)
                .await?;
                Ok(())
            }
        }
    }

    /// Applies the engine's migrations (idempotent). On SQLite through a connection of sqlx's
    /// own, which keeps the `_sqlx_migrations` table.
    pub async fn migrate(&self) -> Result<(), Error> {
        match self {
            Db::Sqlite(s) => {
                let options = SqliteConnectOptions::from_str(s.url())?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(10));
                let mut conn = options.connect().await?;
                let result = sqlx::migrate!("adapter/store/migrations/sqlite")
                    .run(&mut conn)
                    .await;
                let _ = conn.close().await;
                Ok(result?)
            }
            Db::Postgres(pool) => Ok(sqlx::migrate!("adapter/store/migrations/postgres")
                .run(pool)
                .await?),
        }
    }

    /// Whether every migration this binary knows has been applied.
    pub async fn is_migrated(&self) -> Result<bool, Error> {
        let expected = match self {
            Db::Sqlite(_) => sqlx::migrate!("adapter/store/migrations/sqlite")
                .iter()
                .count(),
            Db::Postgres(_) => sqlx::migrate!("adapter/store/migrations/postgres")
                .iter()
                .count(),
        };
        let sql = Sql::new("SELECT COUNT(*) AS n FROM _sqlx_migrations WHERE success");
        let n = self.fetch_count(&sql).await?;
        Ok(usize::try_from(n).unwrap_or(0) >= expected)
    }

    /// The number a `SELECT COUNT(*) AS n …` statement gives (through the pool: a read).
    pub async fn fetch_count(&self, sql: &Sql) -> Result<i64, Error> {
        Executor::fetch_count(&mut &*self, sql).await
    }

    /// The rows of a read, on a reader (SQLite) or a pooled connection.
    pub async fn fetch_all<T: Row>(&self, sql: &Sql) -> Result<Vec<T>, Error> {
        Executor::fetch_all(&mut &*self, sql).await
    }

    pub async fn fetch_optional<T: Row>(&self, sql: &Sql) -> Result<Option<T>, Error> {
        Executor::fetch_optional(&mut &*self, sql).await
    }

    pub async fn fetch_one<T: Row>(&self, sql: &Sql) -> Result<T, Error> {
        Executor::fetch_one(&mut &*self, sql).await
    }

    /// Runs a statement that changes data (through the writer on SQLite); rows affected.
    pub async fn execute(&self, sql: &Sql) -> Result<u64, Error> {
        Executor::execute(&mut &*self, sql).await
    }

    /// The engine's query plan of `sql`, one line per step (for docs and tests).
    pub async fn explain(&self, sql: &Sql) -> Result<Vec<String>, Error> {
        #[derive(serde::Deserialize, sqlx::FromRow)]
        struct SqlitePlan {
            detail: String,
        }
        match self {
            Db::Sqlite(_) => {
                let plan = Sql {
                    text: format!("EXPLAIN QUERY PLAN {}", sql.text),
                    args: sql.args.clone(),
                    planned_each_time: false,
                };
                Ok(self
                    .fetch_all::<SqlitePlan>(&plan)
                    .await?
                    .into_iter()
                    .map(|r| r.detail)
                    .collect())
            }
            Db::Postgres(pool) => {
                let plan = Sql {
                    text: format!("EXPLAIN {}", sql.text),
                    args: sql.args.clone(),
                    planned_each_time: false,
                };
                let rows: Vec<(String,)> =
                    sqlx::query_as_with(AssertSqlSafe(plan.text.clone()), plan.pg_args()?)
                        .fetch_all(pool)
                        .await?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }
        }
    }

    /// On SQLite, how often `sql` was prepared again when it ran twice ([`sqlite::prepared_again`]);
    /// `None` on PostgreSQL. For tests: a portal query must be prepared once per connection.
    pub async fn prepared_again(&self, sql: &Sql) -> Result<Option<u64>, Error> {
        match self {
            Db::Sqlite(s) => s.read(|c| sqlite::prepared_again(c, sql)).map(Some),
            Db::Postgres(_) => Ok(None),
        }
    }

    /// Starts a write transaction whose first statement is `first` (on PostgreSQL sent with
    /// `BEGIN` in one round trip, its result unread; on SQLite not run: for a lock SQLite's one
    /// writer already holds).
    pub async fn begin_with(&self, first: &'static str) -> Result<Tx, Error> {
        match self {
            Db::Sqlite(s) => Ok(Tx::Sqlite(SqliteTx::begin(s.clone()).await?)),
            Db::Postgres(pool) => Ok(Tx::Postgres(
                pool.begin_with(AssertSqlSafe(format!("BEGIN; {first}")))
                    .await?,
            )),
        }
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx, Error> {
        match self {
            Db::Sqlite(s) => Ok(Tx::Sqlite(SqliteTx::begin(s.clone()).await?)),
            Db::Postgres(pool) => Ok(Tx::Postgres(pool.begin().await?)),
        }
    }
}

/// Runs statements, on the pool or in a transaction alike: a store function that reads takes
/// `impl Executor` and is called with `&state.db` (a read never takes SQLite's writer nor opens
/// a transaction) or with `&mut tx` (inside a write, on its connection).
pub trait Executor: Send {
    /// The engine the statements run on.
    fn engine(&self) -> Engine;

    fn fetch_all<T: Row>(
        &mut self,
        sql: &Sql,
    ) -> impl std::future::Future<Output = Result<Vec<T>, Error>> + Send;

    fn fetch_optional<T: Row>(
        &mut self,
        sql: &Sql,
    ) -> impl std::future::Future<Output = Result<Option<T>, Error>> + Send;

    /// Runs a statement that changes data (through the writer on SQLite); rows affected.
    fn execute(
        &mut self,
        sql: &Sql,
    ) -> impl std::future::Future<Output = Result<u64, Error>> + Send;

    fn fetch_one<T: Row>(
        &mut self,
        sql: &Sql,
    ) -> impl std::future::Future<Output = Result<T, Error>> + Send {
        async move { self.fetch_optional(sql).await?.ok_or(Error::NotFound) }
    }

    /// The number a `SELECT COUNT(*) AS n …` statement gives.
    fn fetch_count(
        &mut self,
        sql: &Sql,
    ) -> impl std::future::Future<Output = Result<i64, Error>> + Send {
        async move { Ok(self.fetch_one::<Count>(sql).await?.n) }
    }
}

/// A statement on PostgreSQL through any of sqlx's executors (the pool, a transaction).
async fn pg_fetch_all<'e, T: Row>(
    ex: impl sqlx::PgExecutor<'e>,
    sql: &Sql,
) -> Result<Vec<T>, Error> {
    Ok(
        sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql.text.clone()), sql.pg_args()?)
            .persistent(!sql.planned_each_time)
            .fetch_all(ex)
            .await?,
    )
}

async fn pg_fetch_optional<'e, T: Row>(
    ex: impl sqlx::PgExecutor<'e>,
    sql: &Sql,
) -> Result<Option<T>, Error> {
    Ok(
        sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql.text.clone()), sql.pg_args()?)
            .persistent(!sql.planned_each_time)
            .fetch_optional(ex)
            .await?,
    )
}

async fn pg_execute<'e>(ex: impl sqlx::PgExecutor<'e>, sql: &Sql) -> Result<u64, Error> {
    Ok(
        sqlx::query_with(AssertSqlSafe(sql.text.clone()), sql.pg_args()?)
            .persistent(!sql.planned_each_time)
            .execute(ex)
            .await?
            .rows_affected(),
    )
}

impl Executor for &Db {
    fn engine(&self) -> Engine {
        Db::engine(self)
    }

    async fn fetch_all<T: Row>(&mut self, sql: &Sql) -> Result<Vec<T>, Error> {
        match self {
            Db::Sqlite(s) => s.read(|c| sqlite::fetch_all(c, sql)),
            Db::Postgres(pool) => pg_fetch_all(pool, sql).await,
        }
    }

    async fn fetch_optional<T: Row>(&mut self, sql: &Sql) -> Result<Option<T>, Error> {
        match self {
            Db::Sqlite(s) => s.read(|c| sqlite::fetch_optional(c, sql)),
            Db::Postgres(pool) => pg_fetch_optional(pool, sql).await,
        }
    }

    async fn execute(&mut self, sql: &Sql) -> Result<u64, Error> {
        match self {
            Db::Sqlite(s) => sqlite::execute_alone(s, sql).await,
            Db::Postgres(pool) => pg_execute(pool, sql).await,
        }
    }
}

impl Executor for Tx {
    fn engine(&self) -> Engine {
        Tx::engine(self)
    }

    async fn fetch_all<T: Row>(&mut self, sql: &Sql) -> Result<Vec<T>, Error> {
        match self {
            Tx::Sqlite(tx) => tx.with(|c| sqlite::fetch_all(c, sql)),
            Tx::Postgres(tx) => pg_fetch_all(&mut **tx, sql).await,
        }
    }

    async fn fetch_optional<T: Row>(&mut self, sql: &Sql) -> Result<Option<T>, Error> {
        match self {
            Tx::Sqlite(tx) => tx.with(|c| sqlite::fetch_optional(c, sql)),
            Tx::Postgres(tx) => pg_fetch_optional(&mut **tx, sql).await,
        }
    }

    async fn execute(&mut self, sql: &Sql) -> Result<u64, Error> {
        match self {
            Tx::Sqlite(tx) => tx.with(|c| sqlite::execute(c, sql)),
            Tx::Postgres(tx) => pg_execute(&mut **tx, sql).await,
        }
    }
}

impl<E: Executor> Executor for &mut E {
    fn engine(&self) -> Engine {
        (**self).engine()
    }

    async fn fetch_all<T: Row>(&mut self, sql: &Sql) -> Result<Vec<T>, Error> {
        (**self).fetch_all(sql).await
    }

    async fn fetch_optional<T: Row>(&mut self, sql: &Sql) -> Result<Option<T>, Error> {
        (**self).fetch_optional(sql).await
    }

    async fn execute(&mut self, sql: &Sql) -> Result<u64, Error> {
        (**self).execute(sql).await
    }
}

/// Parameters per multi-row statement on PostgreSQL; well under its limit of 65,535.
const PARAMETERS: usize = 1600;

/// `{head} VALUES (…), (…) {tail}` statements of at most [`PARAMETERS`] placeholders.
fn multi_row<const N: usize>(head: &str, rows: &[[Arg; N]], tail: &str) -> Vec<Sql> {
    rows.chunks((PARAMETERS / N.max(1)).max(1))
        .map(|chunk| {
            let mut sql = Sql::new("");
            push_values(&mut sql, head, chunk);
            sql.push(" ").push(tail);
            sql
        })
        .collect()
}

/// Appends `{head} VALUES (…), (…)` with `rows` bound (one statement, however many rows: the
/// caller keeps to PostgreSQL's 65,535 placeholders).
pub fn push_values<const N: usize>(sql: &mut Sql, head: &str, rows: &[[Arg; N]]) {
    sql.push(head).push(" VALUES ");
    for (i, row) in rows.iter().enumerate() {
        sql.push(if i > 0 { ", (" } else { "(" });
        sql.bind_list(row.iter().cloned());
        sql.push(")");
    }
}

/// How PostgreSQL plans a lookup of `(type, id)` pairs ([`push_pairs_in`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairs {
    /// One row-value list, a statement each connection prepares once and keeps. For lookups
    /// whose keys are of mixed types and whose table does not grow from empty under the same
    /// statement: a pushed Bundle, a staff action, the release job.
    Kept,
    /// Per type, planned for its values at every run. For a pulled page, whose one statement
    /// text (100 Observations) repeats while the table grows from empty.
    EachRun,
}

/// Appends a test that `(type_column, id_column)` is one of `keys`. SQLite always gets the
/// pairs as one row-value list; PostgreSQL gets what `plan` says.
///
/// Why two ways on PostgreSQL: a connection keeps a generic plan for a statement it ran five
/// times, made from the table's size then. A pull repeats one statement text (pages of 100
/// Observations); without statistics (a new database, or a load autovacuum has not analysed
/// yet) the plan made while the table was small read every Observation's index entry (the
/// ids as a filter, not as index keys) and stayed while the table grew: at 800,000 resources,
/// 400 ms a lookup and the pull at a third of its rate. Named per type and planned for its
/// values (about 0.1 ms, but a parse and a describe too) it takes 1.6 ms. A pushed Bundle's
/// lookup kept its row-value plan well, and planning it at every run made four clients'
/// pushes about 18% slower, so pushes keep the prepared row-value statement.
pub fn push_pairs_in(
    sql: &mut Sql,
    engine: Engine,
    plan: Pairs,
    type_column: &str,
    id_column: &str,
    keys: &[(String, String)],
) {
    if keys.is_empty() {
        sql.push("1 = 0");
        return;
    }
    if engine == Engine::Sqlite || plan == Pairs::Kept {
        sql.push(&format!("({type_column}, {id_column}) IN ("));
        for (i, (ty, id)) in keys.iter().enumerate() {
            sql.push(if i > 0 { ", (" } else { "(" });
            sql.bind(ty.as_str()).push(", ").bind(id.as_str()).push(")");
        }
        sql.push(")");
        return;
    }
    sql.planned_each_time = true;
    let mut by_type: Vec<(&str, Vec<&str>)> = Vec::new();
    for (ty, id) in keys {
        match by_type.iter_mut().find(|(t, _)| t == ty) {
            Some((_, ids)) => ids.push(id),
            None => by_type.push((ty, vec![id])),
        }
    }
    sql.push("(");
    for (i, (ty, ids)) in by_type.into_iter().enumerate() {
        sql.push(if i > 0 { " OR (" } else { "(" });
        sql.push(type_column).push(" = ");
        sql.bind(ty);
        sql.push(" AND ").push(id_column).push(" IN (");
        sql.bind_list(ids);
        sql.push("))");
    }
    sql.push(")");
}

#[derive(serde::Deserialize, sqlx::FromRow)]
struct Count {
    n: i64,
}

/// A write transaction; dropped without `commit`, it rolls back.
pub enum Tx {
    Sqlite(SqliteTx),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub fn engine(&self) -> Engine {
        match self {
            Tx::Sqlite(_) => Engine::Sqlite,
            Tx::Postgres(_) => Engine::Postgres,
        }
    }

    /// Inserts `rows` as `{head} VALUES (…) {tail}`; rows changed. On SQLite one prepared
    /// statement runs per row (no statement text to build or parse per call); on PostgreSQL
    /// multi-row statements carry the rows in a few round trips.
    pub async fn insert<const N: usize>(
        &mut self,
        head: &str,
        rows: &[[Arg; N]],
        tail: &str,
    ) -> Result<u64, Error> {
        match self {
            Tx::Sqlite(tx) => Ok(tx
                .with(|c| sqlite::insert_each::<Count, N>(c, head, rows, tail, false))?
                .0),
            Tx::Postgres(_) => {
                let mut n = 0;
                for sql in multi_row(head, rows, tail) {
                    n += self.execute(&sql).await?;
                }
                Ok(n)
            }
        }
    }

    /// [`Tx::insert`] of new rows into a table with a generated `id`: each row's id, in the
    /// order of `rows`. On SQLite as SQLite reports each insert's key (without `RETURNING`,
    /// which runs the statement into a temporary table first); on PostgreSQL by multi-row
    /// statements that insert in the rows' order and return the ids in ascending order (one
    /// statement draws its ids from the sequence in the order it inserts).
    pub async fn insert_ids<const N: usize>(
        &mut self,
        head: &str,
        rows: &[[Arg; N]],
    ) -> Result<Vec<i64>, Error> {
        #[derive(sqlx::FromRow, serde::Deserialize)]
        struct Id {
            id: i64,
        }
        match self {
            Tx::Sqlite(tx) => tx.with(|c| sqlite::insert_each_ids::<N>(c, head, rows)),
            Tx::Postgres(_) => {
                let (table, columns) = head
                    .strip_prefix("INSERT INTO ")
                    .and_then(|rest| rest.split_once('('))
                    .and_then(|(t, c)| Some((t.trim(), c.strip_suffix(')')?)))
                    .ok_or(Error::Unsupported(
                        "insert_ids: head is not INSERT INTO t (…)",
                    ))?;
                let mut out = Vec::with_capacity(rows.len());
                for (k, chunk) in rows.chunks((PARAMETERS / (N + 1)).max(1)).enumerate() {
                    let mut sql = Sql::new(format!("WITH v (o, {columns}) AS (VALUES "));
                    for (i, row) in chunk.iter().enumerate() {
                        sql.push(if i > 0 { ", (" } else { "(" });
                        sql.bind((k * PARAMETERS + i) as i64);
                        for value in row {
                            sql.push(", ").bind(value.clone());
                        }
                        sql.push(")");
                    }
                    sql.push(&format!(
                        "), ins AS (INSERT INTO {table} ({columns}) SELECT {columns} FROM v ORDER BY o RETURNING id) \
                         SELECT id FROM ins ORDER BY id"
                    ));
                    out.extend(self.fetch_all::<Id>(&sql).await?.into_iter().map(|r| r.id));
                }
                if out.len() != rows.len() {
                    return Err(Error::NotFound);
                }
                Ok(out)
            }
        }
    }

    pub async fn commit(self) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => Ok(tx.commit().await?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pulled_page_is_named_per_type_on_postgres_and_everything_else_as_rows() {
        let keys: Vec<(String, String)> = [
            ("Observation", "o1"),
            ("Patient", "p1"),
            ("Observation", "o2"),
        ]
        .iter()
        .map(|(t, i)| (t.to_string(), i.to_string()))
        .collect();
        let mut pg = Sql::new("");
        push_pairs_in(
            &mut pg,
            Engine::Postgres,
            Pairs::EachRun,
            "type",
            "fhir_id",
            &keys,
        );
        assert_eq!(
            pg.text,
            "((type = $1 AND fhir_id IN ($2, $3)) OR (type = $4 AND fhir_id IN ($5)))"
        );
        assert_eq!(
            pg.args,
            ["Observation", "o1", "o2", "Patient", "p1"]
                .map(Arg::from)
                .to_vec()
        );
        assert!(pg.planned_each_time, "a plan per run, for the values");
        let rows = "(type, fhir_id) IN (($1, $2), ($3, $4), ($5, $6))";
        for (engine, plan) in [
            (Engine::Sqlite, Pairs::EachRun),
            (Engine::Sqlite, Pairs::Kept),
            (Engine::Postgres, Pairs::Kept),
        ] {
            let mut kept = Sql::new("");
            push_pairs_in(&mut kept, engine, plan, "type", "fhir_id", &keys);
            assert_eq!(kept.text, rows, "{engine:?} {plan:?}");
            assert!(
                !kept.planned_each_time,
                "{engine:?} {plan:?}: prepared once"
            );
        }
        let mut none = Sql::new("");
        push_pairs_in(
            &mut none,
            Engine::Postgres,
            Pairs::EachRun,
            "type",
            "fhir_id",
            &[],
        );
        assert_eq!(none.text, "1 = 0");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sockets_to_the_database_port_get_no_delay() {
        let db = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to_db = std::net::TcpStream::connect(db.local_addr().unwrap()).unwrap();
        let to_other = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!to_db.nodelay().unwrap() && !to_other.nodelay().unwrap());
        no_delay_to(db.local_addr().unwrap().port());
        assert!(to_db.nodelay().unwrap());
        assert!(!to_other.nodelay().unwrap(), "only sockets to the database");
    }

    #[test]
    fn sequential_placeholders_become_anonymous_on_sqlite() {
        let mut sql = Sql::new("SELECT a FROM t WHERE a = ");
        sql.bind(1)
            .push(" AND b IN (")
            .bind_list(["x", "y"])
            .push(")");
        assert_eq!(
            sql.sqlite_text(),
            "SELECT a FROM t WHERE a = ? AND b IN (?, ?)"
        );
        let reused = Sql::new("UPDATE t SET a = $1, b = $1 WHERE c = $2");
        assert_eq!(
            reused.sqlite_text(),
            reused.text,
            "a reused number stays named"
        );
        let unordered = Sql::new("SELECT $2, $1");
        assert_eq!(unordered.sqlite_text(), unordered.text);
    }
}
