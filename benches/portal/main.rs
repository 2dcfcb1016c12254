//! `cargo bench --bench portal`: ingest and consent-filtered search against the machine's own
//! ceilings, measured in the same run. Prints a table and writes JSON
//! (`target/bench/portal-<engine>.json`, or `SLUIS_BENCH_OUT`). PostgreSQL runs too when
//! `SLUIS_TEST_POSTGRES_URL` is set. `SLUIS_BENCH_SCALE=0.1` makes a small, quick run;
//! `cargo test` makes a smoke run (no `--bench`: the smallest data, checked, not written).
//! See docs/performance.md.

/// The server's allocator (adapter/main.rs), so that the ceilings and ingest's steps measured
/// in this process allocate as the server does.
#[cfg(all(feature = "jemalloc", target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod data;
mod growth;
mod load;
mod report;
mod source;
mod targets;

use report::{
    AuditCost, Ceilings, CpuSteps, FilterCost, Filters, Ingest, IngestRun, JsonCeiling, Memory,
    PullRun, Report, SqliteInsert, Storage,
};
use serde_json::{Value, json};
use sluis::access::{Access, Decision, Role, SectionSet};
use sluis::search::params::{self, Counts};
use sluis::search::sql;
use sluis::store::db::Arg;
use sluis::store::db::Executor as _;
use sluis::store::{Db, Sql};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &str = "bench-admin-token";
const NOW: &str = "2026-11-23T09:00:00Z";
const OLD: &str = "2026-09-01T09:00:00Z";
const RECENT: &str = "2026-11-20T09:00:00Z";

struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
    token: String,
    source_token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(dir: &std::path::Path, database: &str) -> Server {
    start_with(dir, database, "").await
}

/// The adapter with `extra` at the end of its config (after the source `ecd`).
async fn start_with(dir: &std::path::Path, database: &str, extra: &str) -> Server {
    let port = free_port();
    let conns: u32 = std::env::var("SLUIS_BENCH_CONNECTIONS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(8);
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_base_url = "http://127.0.0.1:{port}"
admin_listen = "public"
[database]
url = "{database}"
max_connections = {conns}
[organization]
terms_version = "2026-01"
[admin]
token = "{ADMIN}"
[dev]
clock_override = true
[limits]
max_count = 500
# The benchmark measures the adapter, not the request limits (R16).
user_requests_per_minute = 100000000
client_requests_per_minute = 100000000
token_requests_per_minute = 100000000
admin_requests_per_minute = 100000000
[[clients]]
id = "portal"
kind = "portal"
auth = "client_secret"
secret = "portal-secret-0001"
[[clients]]
id = "ecd"
kind = "source"
auth = "client_secret"
secret = "ecd-secret-000001"
source = "ecd"
[[sources]]
id = "ecd"
{extra}
"#
    );
    let path = dir.join(format!("bench-{port}.toml"));
    std::fs::write(&path, config).unwrap();
    // SLUIS_BENCH_SERVER: another build of the server, to compare two builds on the same data.
    let server =
        std::env::var("SLUIS_BENCH_SERVER").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sluis").into());
    let child = Command::new(server)
        .args(["serve", "--config", path.to_str().unwrap()])
        .env(
            "RUST_LOG",
            std::env::var("SLUIS_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sluis");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    for _ in 0..300 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut server = Server {
        child,
        base,
        http,
        token: String::new(),
        source_token: String::new(),
    };
    server.set_clock(NOW).await;
    server.token = server.token_of("portal", "portal-secret-0001").await;
    server.source_token = server.token_of("ecd", "ecd-secret-000001").await;
    server
}

impl Server {
    async fn token_of(&self, id: &str, secret: &str) -> String {
        let r = self
            .http
            .post(format!("{}/auth/token", self.base))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn set_clock(&self, now: &str) {
        let r = self
            .http
            .put(format!("{}/admin/clock", self.base))
            .bearer_auth(ADMIN)
            .json(&json!({"now": now}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    async fn push(&self, body: Vec<u8>) -> bool {
        let r = self
            .http
            .post(format!("{}/ingest/ecd", self.base))
            .bearer_auth(&self.source_token)
            .header("content-type", "application/fhir+json")
            .body(body)
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
            Ok(r) => {
                eprintln!(
                    "push failed: {} {}",
                    r.status(),
                    r.text()
                        .await
                        .unwrap_or_default()
                        .chars()
                        .take(400)
                        .collect::<String>()
                );
                false
            }
            Err(e) => {
                eprintln!("push failed: {e}");
                false
            }
        }
    }

    async fn get(&self, url: &str, user: &str) -> Value {
        self.http
            .get(url)
            .bearer_auth(&self.token)
            .header("x-portal-user", user)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null)
    }

    fn rss_mb(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Pushes every Bundle with `workers` concurrent clients: old ones first, then recent ones.
async fn ingest(server: &Server, dataset: &data::Dataset, workers: usize) -> IngestRun {
    server.set_clock(OLD).await;
    assert!(server.push(dataset.shared.clone()).await);
    let mut phases: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    for c in &dataset.clients {
        for (b, recent) in c.bundles.iter().zip(&c.recent) {
            phases[usize::from(*recent)].push(b.clone());
        }
    }
    let bundles = phases[0].len() + phases[1].len();
    let bytes: usize = phases.iter().flatten().map(Vec::len).sum();
    let mut latencies = Vec::new();
    let cpu_before = load::process_cpu_secs(server.child.id());
    let started = Instant::now();
    for (phase, list) in phases.into_iter().enumerate() {
        server
            .set_clock(if phase == 0 { OLD } else { RECENT })
            .await;
        let queue = Arc::new(std::sync::Mutex::new(list));
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let queue = queue.clone();
            let (http, base, token) = (
                server.http.clone(),
                server.base.clone(),
                server.source_token.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let Some(body) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let t = Instant::now();
                    let r = http
                        .post(format!("{base}/ingest/ecd"))
                        .bearer_auth(&token)
                        .header("content-type", "application/fhir+json")
                        .body(body)
                        .send()
                        .await;
                    let ok = matches!(&r, Ok(r) if r.status().is_success());
                    if let Ok(r) = r {
                        let _ = r.bytes().await;
                    }
                    assert!(ok, "a push failed");
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                lat
            }));
        }
        for t in tasks {
            latencies.extend(t.await.unwrap());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_before
        .zip(load::process_cpu_secs(server.child.id()))
        .map_or(0.0, |(a, b)| b - a);
    server.set_clock(NOW).await;
    latencies.sort_by(f64::total_cmp);
    let resources = dataset.resources - 55;
    IngestRun {
        workers,
        bundles,
        resources,
        seconds: secs,
        resources_per_s: resources as f64 / secs,
        mb_per_s: bytes as f64 / 1e6 / secs,
        bundle_p50_ms: percentile(&latencies, 0.5),
        bundle_p99_ms: percentile(&latencies, 0.99),
        server_cpu_us_per_resource: cpu * 1e6 / resources as f64,
    }
}

/// Pulls the whole dataset from a record system into an empty database: from the source's
/// first request until the adapter's first round over every type has ended.
async fn pull(dir: &std::path::Path, database: &str, dataset: &data::Dataset) -> PullRun {
    let source = source::start(&dataset.resource_bytes).await;
    let types: Vec<String> = source::TYPES.iter().map(|t| format!("\"{t}\"")).collect();
    let page_size = 200;
    let server = start_with(
        dir,
        database,
        &format!(
            "[sources.pull]\nbase_url = \"{}\"\nresource_types = [{}]\ninterval = \"PT1H\"\npage_size = {page_size}",
            source.base,
            types.join(", ")
        ),
    )
    .await;
    let cpu_before = load::process_cpu_secs(server.child.id());
    let started = Instant::now();
    source.open();
    let stored = loop {
        // Asked of the adapter only once the source has served everything: `/admin/sources`
        // counts every version per source, a scan that polled every 20 ms took a core from
        // the pull on PostgreSQL at scale 10.
        if source.served() < dataset.resources {
            assert!(
                started.elapsed() < Duration::from_secs(1800),
                "the pull ends: {} of {} served",
                source.served(),
                dataset.resources
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let v = server
            .http
            .get(format!("{}/admin/sources", server.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        let ecd = &v["sources"][0];
        if ecd["pull"]["rounds_here"].as_u64().unwrap_or(0) >= 1 {
            let types = ecd["types"].as_array().cloned().unwrap_or_default();
            assert!(
                types.iter().all(|t| t["last_error"].is_null()),
                "the pull went without errors: {types:?}"
            );
            let stored = types
                .iter()
                .map(|t| t["resources"].as_u64().unwrap_or(0) as usize)
                .sum::<usize>();
            assert_eq!(
                stored, dataset.resources,
                "the pull took in every resource: {ecd:#}"
            );
            break stored;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "the pull ends: {ecd}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_before
        .zip(load::process_cpu_secs(server.child.id()))
        .map_or(0.0, |(a, b)| b - a);
    PullRun {
        resources: stored,
        page_size,
        seconds: secs,
        resources_per_s: stored as f64 / secs,
        server_cpu_us_per_resource: cpu * 1e6 / stored.max(1) as f64,
        ratio_to_push: 0.0,
    }
}

/// JSON parse and serialize of the same resources, single-threaded.
fn json_ceiling(dataset: &data::Dataset) -> JsonCeiling {
    let t = Instant::now();
    let values: Vec<Value> = dataset
        .resource_bytes
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    let parse = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut out = 0usize;
    for v in &values {
        out += serde_json::to_vec(v).unwrap().len();
    }
    let serialize = t.elapsed().as_secs_f64();
    let mb = dataset.bytes as f64 / 1e6;
    JsonCeiling {
        parse_mb_per_s: mb / parse,
        parse_resources_per_s: values.len() as f64 / parse,
        serialize_mb_per_s: out as f64 / 1e6 / serialize,
        serialize_resources_per_s: values.len() as f64 / serialize,
    }
}

/// The CPU of ingest's own steps per resource, one thread, over the same resources (the
/// faster of two passes each): what the adapter's checks, fhirbolt's and the search values
/// cost, so that a change to one of them can be measured without the noise of a push.
fn cpu_steps(dataset: &data::Dataset) -> CpuSteps {
    let values: Vec<Value> = dataset
        .resource_bytes
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    let n = values.len() as f64;
    let per_resource = |f: &dyn Fn(&Value) -> usize| -> f64 {
        let mut best = f64::MAX;
        for _ in 0..2 {
            let t = Instant::now();
            let mut sink = 0usize;
            for v in &values {
                sink = sink.wrapping_add(f(v));
            }
            std::hint::black_box(sink);
            best = best.min(t.elapsed().as_secs_f64());
        }
        best * 1e6 / n
    };
    let checks = per_resource(&|v| sluis::fhir::validate::check_resource(v).len());
    let copy = per_resource(&|v| usize::from(v.clone().is_object()));
    // fhirbolt consumes the tree it checks; ingest hands it the body once it is serialized.
    // Once by fhirbolt itself, and once as ingest checks: by the shapes fhirbolt has passed.
    let consumed = |check: fn(Value) -> Result<(), String>| {
        let mut best = f64::MAX;
        for _ in 0..2 {
            let copies = values.clone();
            let t = Instant::now();
            let passed = copies.into_iter().map(check).filter(Result::is_ok).count();
            std::hint::black_box(passed);
            best = best.min(t.elapsed().as_secs_f64() * 1e6 / n);
        }
        best
    };
    let fhirbolt = consumed(sluis_r4::check_with_fhirbolt);
    let remembered = consumed(sluis_r4::check_structure);
    let index = per_resource(&|v| {
        let ty = v["resourceType"].as_str().unwrap_or_default();
        let id = v["id"].as_str().unwrap_or_default();
        sluis::ingest::index::index(ty, id, v).values.tokens.len()
    });
    CpuSteps {
        checks_us: checks,
        fhirbolt_us: fhirbolt,
        fhirbolt_remembered_us: remembered,
        copy_us: copy,
        index_us: index,
    }
}

/// One resource as the ceiling inserts it: type, id, index keys `(param, value)`, body.
type CeilingRow = (String, String, Vec<(String, String)>, String);

/// A plain SQLite insert of the same bytes and the same number of index rows, in the same
/// batches, through the same driver: the ceiling ingest is measured against. The database
/// and the rows are kept, so that the keyed-by-value insert can be measured again later in
/// the run ([`Ceiling::keyed_again`]).
async fn sqlite_ceiling(
    dir: &std::path::Path,
    dataset: &data::Dataset,
    batch: usize,
) -> (SqliteInsert, Ceiling) {
    let url = format!("sqlite://{}", dir.join("ceiling.db").display());
    let db = Db::connect(&url, 1).await.unwrap();
    db.execute(&Sql::new("CREATE TABLE raw (id INTEGER PRIMARY KEY, type TEXT NOT NULL, rid TEXT NOT NULL, body TEXT NOT NULL)")).await.unwrap();
    db.execute(&Sql::new("CREATE TABLE idx (rowref INTEGER NOT NULL, k TEXT NOT NULL, v TEXT NOT NULL, PRIMARY KEY (rowref, k, v)) WITHOUT ROWID")).await.unwrap();
    // The index rows ingest makes for each resource: tokens, dates and references.
    let rows: Vec<CeilingRow> = dataset
        .resource_bytes
        .iter()
        .map(|b| {
            let v: Value = serde_json::from_slice(b).unwrap();
            let ty = v["resourceType"].as_str().unwrap().to_string();
            let id = v["id"].as_str().unwrap().to_string();
            let ix = sluis::ingest::index::index(&ty, &id, &v);
            let mut keys: Vec<(String, String)> = ix
                .values
                .tokens
                .iter()
                .map(|(p, s, c)| (p.to_string(), format!("{s}|{c}")))
                .collect();
            keys.extend(
                ix.values
                    .dates
                    .iter()
                    .map(|(p, lo, hi)| (p.to_string(), format!("{lo}-{hi}"))),
            );
            keys.extend(
                ix.values
                    .refs
                    .iter()
                    .map(|(t, i, e)| ("ref".to_string(), format!("{t}/{i} {e}"))),
            );
            keys.sort();
            keys.dedup();
            (ty, id, keys, String::from_utf8(b.clone()).unwrap())
        })
        .collect();
    let index_rows: usize = rows.iter().map(|r| r.2.len()).sum();
    let started = Instant::now();
    let mut next_id: i64 = 1;
    for chunk in rows.chunks(batch) {
        let mut tx = db.begin().await.unwrap();
        let mut insert = Sql::new("INSERT INTO raw (id, type, rid, body) VALUES ");
        let mut idx_rows: Vec<(i64, &str, &str)> = Vec::new();
        for (i, (ty, id, keys, body)) in chunk.iter().enumerate() {
            if i > 0 {
                insert.push(", ");
            }
            insert
                .push("(")
                .bind(next_id)
                .push(", ")
                .bind(ty.as_str())
                .push(", ")
                .bind(id.as_str())
                .push(", ")
                .bind(body.as_str())
                .push(")");
            for (k, v) in keys {
                idx_rows.push((next_id, k, v));
            }
            next_id += 1;
        }
        tx.execute(&insert).await.unwrap();
        for part in idx_rows.chunks(400) {
            let mut sql = Sql::new("INSERT INTO idx (rowref, k, v) VALUES ");
            for (i, (r, k, v)) in part.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .bind(*r)
                    .push(", ")
                    .bind(*k)
                    .push(", ")
                    .bind(*v)
                    .push(")");
            }
            tx.execute(&sql).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    // The same again row by row (one prepared statement per table, run once per row, a
    // transaction per batch), as a plain insert loop writes it and as ingest does on SQLite.
    db.execute(&Sql::new("DELETE FROM raw")).await.unwrap();
    db.execute(&Sql::new("DELETE FROM idx")).await.unwrap();
    let row_secs = row_by_row(&db, &rows, batch, "idx").await;
    // And with the index rows in a B-tree keyed by their value, as an index that is searched
    // has them: inserts land all over the tree instead of at its end.
    db.execute(&Sql::new("DELETE FROM raw")).await.unwrap();
    db.execute(&Sql::new("CREATE TABLE idx_by_value (rowref INTEGER NOT NULL, k TEXT NOT NULL, v TEXT NOT NULL, PRIMARY KEY (k, v, rowref)) WITHOUT ROWID")).await.unwrap();
    let keyed_secs = row_by_row(&db, &rows, batch, "idx_by_value").await;
    let insert = SqliteInsert {
        keyed_by_value_resources_per_s: rows.len() as f64 / keyed_secs,
        row_by_row_resources_per_s: rows.len() as f64 / row_secs,
        row_by_row_mb_per_s: dataset.bytes as f64 / 1e6 / row_secs,
        resources_per_s: rows.len() as f64 / secs,
        mb_per_s: dataset.bytes as f64 / 1e6 / secs,
        index_rows_per_resource: index_rows as f64 / rows.len() as f64,
        seconds: secs,
    };
    (insert, Ceiling { db, rows, batch })
}

/// The keyed-by-value ceiling's database and rows, to measure it again.
struct Ceiling {
    db: Db,
    rows: Vec<CeilingRow>,
    batch: usize,
}

impl Ceiling {
    /// The keyed-by-value insert once more, on the same database emptied: resources/s. The
    /// machine's speed drifts within minutes (this ceiling read 45,000 and 60,000 res/s in
    /// two runs ten minutes apart), so the ratio to one reading before a push would move with
    /// it; a reading on either side of the one-client push brackets it.
    async fn keyed_again(&self) -> f64 {
        self.db.execute(&Sql::new("DELETE FROM raw")).await.unwrap();
        self.db
            .execute(&Sql::new("DELETE FROM idx_by_value"))
            .await
            .unwrap();
        let secs = row_by_row(&self.db, &self.rows, self.batch, "idx_by_value").await;
        self.rows.len() as f64 / secs
    }
}

/// The rows inserted one prepared statement per row, a transaction per `batch` resources,
/// the index rows into `idx_table`; seconds taken.
async fn row_by_row(db: &Db, rows: &[CeilingRow], batch: usize, idx_table: &str) -> f64 {
    let started = Instant::now();
    let mut next_id: i64 = 1;
    for chunk in rows.chunks(batch) {
        let mut tx = db.begin().await.unwrap();
        let mut raw: Vec<[Arg; 4]> = Vec::with_capacity(chunk.len());
        let mut idx: Vec<[Arg; 3]> = Vec::new();
        for (ty, id, keys, body) in chunk {
            raw.push([next_id.into(), ty.into(), id.into(), body.into()]);
            for (k, v) in keys {
                idx.push([next_id.into(), k.into(), v.into()]);
            }
            next_id += 1;
        }
        tx.insert("INSERT INTO raw (id, type, rid, body)", &raw, "")
            .await
            .unwrap();
        tx.insert(&format!("INSERT INTO {idx_table} (rowref, k, v)"), &idx, "")
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// Links a holder to every client and a member to some; terms accepted.
async fn link_users(server: &Server, dataset: &data::Dataset) {
    let http = &server.http;
    let tasks: Vec<_> = dataset
        .clients
        .iter()
        .map(|c| {
            let (id, has_member) = (c.id.clone(), c.has_member);
            let (base, token, http) = (server.base.clone(), server.token.clone(), http.clone());
            async move {
                // Every step must succeed: a user left unlinked would turn the searches into
                // errors (at scale 10 the admin limit once did).
                let ok = |r: reqwest::Response| {
                    let status = r.status();
                    assert!(status.is_success(), "linking the benchmark's users: {status}");
                    r
                };
                let code: Value = ok(http.post(format!("{base}/admin/activation-codes")).bearer_auth(ADMIN)
                    .json(&json!({"patient": id, "relationship": "self"})).send().await.unwrap()).json().await.unwrap();
                let holder = format!("h-{id}");
                let post = async |path: &str, user: &str, body: Value| {
                    ok(http.post(format!("{base}{path}")).bearer_auth(&token).header("x-portal-user", user.to_string()).json(&body).send().await.unwrap())
                };
                post("/portal/link", &holder, json!({"code": code["code"], "birth_date": "1960-01-01"})).await;
                post("/portal/terms", &holder, json!({"version": "2026-01"})).await;
                if has_member {
                    let inv: Value = post("/portal/invitations", &holder, json!({"patient": id, "sections": ["metingen", "agenda"], "name": "Dochter", "relationship": "DAUC"}))
                        .await.json().await.unwrap();
                    let member = format!("m-{id}");
                    post("/portal/link", &member, json!({"code": inv["code"], "birth_date": "1965-01-01"})).await;
                    post("/portal/terms", &member, json!({"version": "2026-01"})).await;
                }
            }
        })
        .collect();
    let mut pending = tasks.into_iter();
    loop {
        let batch: Vec<_> = pending.by_ref().take(16).map(tokio::spawn).collect();
        if batch.is_empty() {
            break;
        }
        for h in batch {
            h.await.unwrap();
        }
    }
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")
        .map(|l| l["url"].as_str().unwrap().to_string())
}

/// The portal's queries at fixed rates.
/// The portal's searches at `rate`, and with `heavy` the heavy client's pages at a twentieth
/// of it.
async fn search(
    server: &Server,
    dataset: &data::Dataset,
    rate: f64,
    secs: u64,
    heavy: bool,
) -> Vec<load::Run> {
    let base = server.base.clone();
    let regular: Vec<String> = dataset
        .clients
        .iter()
        .skip(1)
        .map(|c| c.id.clone())
        .collect();
    let members: Vec<String> = dataset
        .clients
        .iter()
        .filter(|c| c.has_member)
        .map(|c| c.id.clone())
        .collect();
    let d = Duration::from_secs(secs);
    let mut runs = Vec::new();
    // Warm up.
    for c in regular.iter().take(50) {
        server
            .get(
                &format!("{base}/fhir/Observation?patient={c}&category=vital-signs&_count=50"),
                &format!("h-{c}"),
            )
            .await;
    }
    let portal = |who: char, ids: Vec<String>, extra: &'static str| {
        let base = base.clone();
        move |i: u64| {
            let c = &ids[(i as usize * 7919) % ids.len()];
            (
                format!(
                    "{base}/fhir/Observation?patient={c}&category=vital-signs&_count=50{extra}"
                ),
                format!("{who}-{c}"),
            )
        }
    };
    runs.push(
        load::fixed_rate(
            "portal query, holder",
            &server.http,
            &server.token,
            rate,
            d,
            Some(server.child.id()),
            portal('h', regular.clone(), ""),
        )
        .await,
    );
    runs.push(
        load::fixed_rate(
            "portal query, member",
            &server.http,
            &server.token,
            rate,
            d,
            Some(server.child.id()),
            portal('m', members.clone(), ""),
        )
        .await,
    );
    // Next pages: page 2 of each client.
    let mut page2 = Vec::new();
    for c in regular.iter().take(200) {
        let b = server
            .get(
                &format!("{base}/fhir/Observation?patient={c}&category=vital-signs&_count=20"),
                &format!("h-{c}"),
            )
            .await;
        if let Some(n) = next_link(&b) {
            page2.push((n, format!("h-{c}")));
        }
    }
    runs.push(
        load::fixed_rate(
            "next page",
            &server.http,
            &server.token,
            rate,
            d,
            Some(server.child.id()),
            |i| page2[(i as usize) % page2.len()].clone(),
        )
        .await,
    );
    let poll = {
        let (base, ids) = (base.clone(), regular.clone());
        move |i: u64| {
            let c = &ids[(i as usize * 7919) % ids.len()];
            (
                format!("{base}/fhir/Observation?_lastUpdated=gt2026-11-19T00:00:00Z&_count=50"),
                format!("h-{c}"),
            )
        }
    };
    runs.push(
        load::fixed_rate(
            "_lastUpdated poll",
            &server.http,
            &server.token,
            rate,
            d,
            Some(server.child.id()),
            poll,
        )
        .await,
    );
    runs.push(
        load::fixed_rate(
            "_include performer",
            &server.http,
            &server.token,
            rate,
            d,
            Some(server.child.id()),
            portal('h', regular.clone(), "&_include=Observation:performer"),
        )
        .await,
    );
    if !heavy {
        return runs;
    }
    // The heavy client: page 1 and page 20.
    let heavy = "h-heavy".to_string();
    let first = format!("{base}/fhir/Observation?patient=heavy&_count=50");
    let mut url = first.clone();
    for _ in 0..19 {
        let b = server.get(&url, &heavy).await;
        url = next_link(&b).expect("heavy client has 20 pages");
    }
    // The heavy client's first page counts 20,000 entries for `total`; a portal pages through it
    // now and then, not a thousand times a second.
    let heavy_rate = rate / 20.0;
    let (f, h) = (first.clone(), heavy.clone());
    runs.push(
        load::fixed_rate(
            "heavy client, page 1",
            &server.http,
            &server.token,
            heavy_rate,
            d,
            Some(server.child.id()),
            move |_| (f.clone(), h.clone()),
        )
        .await,
    );
    let (p20, h) = (url.clone(), heavy.clone());
    runs.push(
        load::fixed_rate(
            "heavy client, page 20",
            &server.http,
            &server.token,
            heavy_rate,
            d,
            Some(server.child.id()),
            move |_| (p20.clone(), h.clone()),
        )
        .await,
    );
    runs
}

/// Clients of the closed loop that compares auditing on and off: enough that both keep this
/// machine's cores busy (eight left a fifth of them idle with auditing on PostgreSQL).
const AUDIT_CLIENTS: usize = 64;

/// Auditing on against off (issue 21): the holder's portal query in a closed loop of `clients`,
/// as fast as the server answers, by fresh servers alternating on, off, on, off, on, off (three
/// readings each, compared by their medians: the machine's speed drifts by more than the
/// target's 10% from one reading to the next), on the same database; `secs` per reading.
/// Each reading also says how many of the machine's cores were busy: throughput is compared
/// where both sides use the whole machine (with few clients, a server that waits for a commit
/// before it answers leaves cores idle, and the loop measures that wait, not what it can do).
async fn audit_cost(
    dir: &std::path::Path,
    database: &str,
    dataset: &data::Dataset,
    secs: u64,
    clients: usize,
) -> AuditCost {
    let ids: Arc<Vec<String>> = Arc::new(
        dataset
            .clients
            .iter()
            .skip(1)
            .map(|c| c.id.clone())
            .collect(),
    );
    let reading = async |server: &Server| -> [f64; 4] {
        let (http, base, token) = (
            server.http.clone(),
            server.base.clone(),
            server.token.clone(),
        );
        let ids = ids.clone();
        let pid = server.child.id();
        let cpu = load::process_cpu_secs(pid);
        let machine = load::machine_jiffies();
        let (per_s, _, p99) = load::closed_loop(clients, Duration::from_secs(secs), move |i| {
            let c = ids[(i as usize * 7919) % ids.len()].clone();
            let (http, base, token) = (http.clone(), base.clone(), token.clone());
            async move {
                http.get(format!(
                    "{base}/fhir/Observation?patient={c}&category=vital-signs&_count=50"
                ))
                .bearer_auth(&token)
                .header("x-portal-user", format!("h-{c}"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        let cpu_us = match (cpu, load::process_cpu_secs(pid)) {
            (Some(a), Some(b)) if per_s > 0.0 => (b - a) * 1e6 / (per_s * secs as f64),
            _ => 0.0,
        };
        let busy = load::busy_cores(machine, load::machine_jiffies());
        [per_s, p99, cpu_us, busy]
    };
    let (mut ons, mut offs) = (Vec::new(), Vec::new());
    for round in 0..6 {
        let audited = round % 2 == 0;
        let extra = if audited {
            ""
        } else {
            "[audit]\nenabled = false\n"
        };
        let server = start_with(dir, database, extra).await;
        let r = reading(&server).await;
        if audited { ons.push(r) } else { offs.push(r) }
    }
    let median = |v: &[[f64; 4]], k: usize| {
        let mut x: Vec<f64> = v.iter().map(|r| r[k]).collect();
        x.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        (x[(x.len() - 1) / 2] + x[x.len() / 2]) / 2.0
    };
    let (on_rate, off_rate) = (median(&ons, 0), median(&offs, 0));
    AuditCost {
        clients,
        on_per_s: ons.iter().map(|r| r[0]).collect(),
        off_per_s: offs.iter().map(|r| r[0]).collect(),
        on_p99_ms: median(&ons, 1),
        off_p99_ms: median(&offs, 1),
        on_cpu_us: median(&ons, 2),
        off_cpu_us: median(&offs, 2),
        on_busy_cores: median(&ons, 3),
        off_busy_cores: median(&offs, 3),
        throughput_cost: if off_rate > 0.0 {
            1.0 - on_rate / off_rate
        } else {
            0.0
        },
    }
}

/// The cost of the consent and delay filters: the same portal query as SQL with the decision
/// pushed in, against the same criteria for a user who sees everything and nothing embargoed.
async fn filter_cost(db: Db, dataset: &data::Dataset, secs: u64) -> Filters {
    let ids: Vec<String> = dataset
        .clients
        .iter()
        .skip(1)
        .map(|c| c.id.clone())
        .collect();
    let ids = Arc::new(ids);
    let now = sluis::time::to_micros(sluis::time::parse_instant(NOW).unwrap());
    let mappings = Arc::new(sluis::mapping::Mappings::load(None, "P14D").unwrap());
    let query = |c: &str| {
        let pairs = vec![
            ("patient".to_string(), c.to_string()),
            ("category".to_string(), "vital-signs".to_string()),
            ("_count".to_string(), "50".to_string()),
        ];
        params::parse(
            "Observation",
            &pairs,
            Counts {
                default: 50,
                max: 500,
            },
        )
        .unwrap()
    };
    let decision = |c: &str, member: bool| Decision {
        user_id: 1,
        allowed: vec![Access {
            link_id: 1,
            patient_id: c.to_string(),
            role: if member { Role::Member } else { Role::Holder },
            sections: if member {
                SectionSet::Only(["metingen".to_string(), "agenda".to_string()].into())
            } else {
                SectionSet::All
            },
            can_post: false,
        }],
        refused: BTreeMap::new(),
    };
    let unfiltered = |q: &params::Query| {
        let mut s = Sql::new(
            "SELECT v.id, v.type, v.fhir_id, v.version_no, v.release_at, v.sort_date, v.patient_id, v.section, v.body, v.withdrawn, v.meta FROM versions v WHERE ",
        );
        sql::criteria(&mut s, "v", q);
        s.push(" ORDER BY v.release_at ASC, v.id ASC LIMIT 51");
        let mut c = Sql::new("SELECT COUNT(*) AS n FROM versions v WHERE ");
        sql::criteria(&mut c, "v", q);
        (s, c)
    };
    // Filtered and unfiltered take turns in slices (ABBA), after a warm-up of both, so that
    // neither is favoured by warm caches or by the machine's drift.
    let run = |filtered: bool, member: bool, d: Duration| {
        let (db, ids, mappings) = (db.clone(), ids.clone(), mappings.clone());
        load::closed_loop(4, d, move |i| {
            let (db, ids, mappings) = (db.clone(), ids.clone(), mappings.clone());
            async move {
                let c = &ids[(i as usize * 7919) % ids.len()];
                let q = query(c);
                if filtered {
                    let dec = decision(c, member);
                    let scope = sql::Scope::new(&dec, &mappings);
                    let a = db
                        .fetch_all::<sql::Hit>(&sql::page_sql(&q, scope, now))
                        .await
                        .is_ok();
                    let b = db
                        .fetch_count(&sql::count_sql(&q, scope, now))
                        .await
                        .is_ok();
                    a && b
                } else {
                    let (p, c) = unfiltered(&q);
                    db.fetch_all::<sql::Hit>(&p).await.is_ok() && db.fetch_count(&c).await.is_ok()
                }
            }
        })
    };
    // SLUIS_BENCH_SQL=1: the statements compared and their plans on this database.
    if std::env::var("SLUIS_BENCH_SQL").is_ok() {
        let c = &ids[0];
        let (p, n) = unfiltered(&query(c));
        let mut statements = vec![("unfiltered page", p), ("unfiltered total", n)];
        for (who, member) in [("holder", false), ("member", true)] {
            let (q, d) = (query(c), decision(c, member));
            let scope = sql::Scope::new(&d, &mappings);
            statements.push((who, sql::page_sql(&q, scope, now)));
            statements.push((who, sql::count_sql(&q, scope, now)));
        }
        for (name, statement) in statements {
            let plan = db.explain(&statement).await.unwrap_or_default();
            eprintln!("-- {name}\n{}\n{}", statement.text, plan.join("\n"));
        }
        // One at a time, per client: what each statement costs without concurrency.
        for (who, member) in [("unfiltered", false), ("holder", false), ("member", true)] {
            for round in 0..2 {
                let started = Instant::now();
                for c in ids.iter().take(400) {
                    let q = query(c);
                    if who == "unfiltered" {
                        let (p, n) = unfiltered(&q);
                        db.fetch_all::<sql::Hit>(&p).await.unwrap();
                        db.fetch_count(&n).await.unwrap();
                    } else {
                        let d = decision(c, member);
                        let scope = sql::Scope::new(&d, &mappings);
                        db.fetch_all::<sql::Hit>(&sql::page_sql(&q, scope, now))
                            .await
                            .unwrap();
                        db.fetch_count(&sql::count_sql(&q, scope, now))
                            .await
                            .unwrap();
                    }
                }
                eprintln!(
                    "SEQ {who} round {round}: {:.3} ms per page + total",
                    started.elapsed().as_secs_f64() * 1000.0 / 400.0
                );
            }
        }
    }
    // Sixteen slices in pairs (filtered then plain, then plain then filtered, …): each pair
    // ran side by side, so the ratio within a pair holds even when the machine's speed drifts
    // between pairs; the cost is the median over the pairs, so one slice that a neighbour on
    // the machine slowed down does not decide it.
    let slice = Duration::from_secs_f64(secs as f64 / 8.0);
    let cost = async |member: bool| -> FilterCost {
        run(true, member, Duration::from_secs(1)).await;
        run(false, member, Duration::from_secs(1)).await;
        let (mut filtered, mut plain) = (Vec::new(), Vec::new());
        for pair in 0..8 {
            let first_filtered = pair % 2 == 0;
            for turn in [first_filtered, !first_filtered] {
                let r = run(turn, member, slice).await;
                if turn {
                    filtered.push(r);
                } else {
                    plain.push(r);
                }
            }
        }
        let mut ratios: Vec<f64> = filtered
            .iter()
            .zip(&plain)
            .map(|(f, p)| f.0 / p.0)
            .collect();
        ratios.sort_by(f64::total_cmp);
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            percentile(&v, 0.5)
        };
        let summary = |runs: &[(f64, f64, f64)]| {
            let per_s: Vec<f64> = runs.iter().map(|r| r.0).collect();
            let p50: Vec<f64> = runs.iter().map(|r| r.1).collect();
            let p99: Vec<f64> = runs.iter().map(|r| r.2).collect();
            (median(&per_s), median(&p50), median(&p99))
        };
        let filtered_slices: Vec<f64> = filtered.iter().map(|r| r.0).collect();
        let plain_slices: Vec<f64> = plain.iter().map(|r| r.0).collect();
        let (filtered, plain) = (summary(&filtered), summary(&plain));
        FilterCost {
            filtered_per_s: filtered.0,
            filtered_p50_ms: filtered.1,
            filtered_p99_ms: filtered.2,
            unfiltered_per_s: plain.0,
            unfiltered_p50_ms: plain.1,
            unfiltered_p99_ms: plain.2,
            throughput_cost: 1.0 - median(&ratios),
            p50_cost_ms: filtered.1 - plain.1,
            pair_cost_range: [1.0 - ratios[ratios.len() - 1], 1.0 - ratios[0]],
            filtered_slices_per_s: filtered_slices,
            unfiltered_slices_per_s: plain_slices,
        }
    };
    Filters {
        holder: cost(false).await,
        member: cost(true).await,
    }
}

async fn storage(db: &Db, file: Option<&std::path::Path>, dataset: &data::Dataset) -> Storage {
    let bytes = match (db, file) {
        (Db::Sqlite { .. }, Some(f)) => {
            let _ = db
                .execute(&Sql::new("PRAGMA wal_checkpoint(TRUNCATE)"))
                .await;
            std::fs::metadata(f).map(|m| m.len()).unwrap_or(0) as f64
        }
        _ => {
            #[derive(sqlx::FromRow, serde::Deserialize)]
            struct S {
                n: i64,
            }
            let s: S = db.fetch_one(&Sql::new("SELECT (SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r')::bigint AS n")).await.unwrap();
            s.n as f64
        }
    };
    Storage {
        bytes,
        raw_json_bytes: dataset.bytes,
        ratio_to_raw: bytes / dataset.bytes as f64,
        bytes_per_resource: bytes / dataset.resources as f64,
    }
}

fn print_table(engine: &str, r: &Report) {
    println!("\n== sluis benchmark, {engine} ==");
    let c = &r.ceilings;
    println!(
        "ceilings: JSON parse {:.0} MB/s ({:.0} res/s), serialize {:.0} MB/s; plain SQLite insert {:.0} res/s ({:.1} MB/s) batched, {:.0} res/s row by row, {:.0} res/s with the index rows keyed by value ({:.1} index rows/resource)",
        c.json.parse_mb_per_s,
        c.json.parse_resources_per_s,
        c.json.serialize_mb_per_s,
        c.sqlite_insert.resources_per_s,
        c.sqlite_insert.mb_per_s,
        c.sqlite_insert.row_by_row_resources_per_s,
        c.sqlite_insert.keyed_by_value_resources_per_s,
        c.sqlite_insert.index_rows_per_resource
    );
    println!(
        "ingest's steps, one thread: the adapter's checks {:.1} µs/resource, fhirbolt's {:.1}, or {:.1} for a shape it has passed (a copy of the tree {:.1}), search values {:.1}",
        c.steps.checks_us,
        c.steps.fhirbolt_us,
        c.steps.fhirbolt_remembered_us,
        c.steps.copy_us,
        c.steps.index_us
    );
    for i in &r.ingest {
        println!(
            "ingest, {} client(s): {:.0} res/s, {:.1} MB/s, bundle p50 {:.1} ms p99 {:.1} ms; {:.2}x the batched SQLite ceiling, {:.2}x row by row, {:.2}x keyed by value ({:.0} and {:.0} res/s around the one-client push); server CPU {:.0} µs/resource",
            i.run.workers,
            i.run.resources_per_s,
            i.run.mb_per_s,
            i.run.bundle_p50_ms,
            i.run.bundle_p99_ms,
            i.ratio_to_ceiling,
            i.ratio_to_row_by_row,
            i.ratio_to_keyed_by_value,
            i.keyed_by_value_readings[0],
            i.keyed_by_value_readings[1],
            i.run.server_cpu_us_per_resource
        );
    }
    if let Some(p) = &r.pull {
        println!(
            "pull, pages of {}: {} resources in {:.1} s, {:.0} res/s, {:.2}x the one-client push; server CPU {:.0} µs/resource",
            p.page_size,
            p.resources,
            p.seconds,
            p.resources_per_s,
            p.ratio_to_push,
            p.server_cpu_us_per_resource
        );
    }
    let s = &r.storage;
    println!(
        "storage: {:.0} bytes/resource, {:.2}x the raw JSON",
        s.bytes_per_resource, s.ratio_to_raw
    );
    // `SLUIS_BENCH_ONLY` runs leave out what they did not measure.
    if let Some(runs) = &r.search {
        println!(
            "{:<37} {:>7} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>6}",
            "search",
            "rate/s",
            "done/s",
            "errors",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "cpu µs/req",
            "db µs/req",
            "cores"
        );
        for run in runs.iter().chain(r.search_half_rate.iter().flatten()) {
            // The errors unpadded, as the table has always printed them.
            println!(
                "{:<37} {:>7.0} {:>8.0} {} {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>10.0} {:>10.0} {:>6.2}",
                run.name,
                run.rate,
                run.achieved,
                run.errors,
                run.p50_ms,
                run.p95_ms,
                run.p99_ms,
                run.max_ms,
                run.server_cpu_us,
                run.database_cpu_us,
                // The server's and the database's CPU at this rate, in cores.
                (run.server_cpu_us + run.database_cpu_us) * run.achieved / 1e6
            );
        }
    }
    for a in r.audit.iter().chain(&r.audit_few) {
        println!(
            "auditing on vs off, the holder's query in a closed loop of {}: {:?} vs {:?} queries/s ({:.1}% cost), p99 {:.2} vs {:.2} ms, CPU {:.0} vs {:.0} µs/query, machine {:.2} vs {:.2} cores busy",
            a.clients,
            a.on_per_s.iter().map(|x| x.round()).collect::<Vec<_>>(),
            a.off_per_s.iter().map(|x| x.round()).collect::<Vec<_>>(),
            a.throughput_cost * 100.0,
            a.on_p99_ms,
            a.off_p99_ms,
            a.on_cpu_us,
            a.off_cpu_us,
            a.on_busy_cores,
            a.off_busy_cores
        );
    }
    for (who, f) in r.filters.iter().flat_map(Filters::roles) {
        println!(
            "filters ({who}): {:.0} vs {:.0} queries/s unfiltered ({:.1}% cost, pairs {:.1}% to {:.1}%), p50 {:.2} vs {:.2} ms (+{:.2} ms)",
            f.filtered_per_s,
            f.unfiltered_per_s,
            f.throughput_cost * 100.0,
            f.pair_cost_range[0] * 100.0,
            f.pair_cost_range[1] * 100.0,
            f.filtered_p50_ms,
            f.unfiltered_p50_ms,
            f.p50_cost_ms
        );
    }
    let m = &r.memory;
    if let Some(peak) = m.peak_rss_mb {
        println!("memory: server peak RSS {peak:.0} MB");
    } else {
        println!(
            "memory: server peak RSS {:.0} MB (ingest)",
            m.peak_rss_after_ingest_mb
        );
    }
}

async fn run_engine(
    engine: &str,
    dir: &std::path::Path,
    dataset: &data::Dataset,
    (ceilings, ceiling): (&Ceilings, &Ceiling),
    scale: f64,
    smoke: bool,
) -> Report {
    let database = async |name: &str| -> (String, Option<std::path::PathBuf>) {
        match engine {
            "sqlite" => {
                let f = dir.join(format!("{name}.db"));
                (format!("sqlite://{}", f.display()), Some(f))
            }
            _ => (postgres_schema(name).await, None),
        }
    };
    let only = std::env::var("SLUIS_BENCH_ONLY").unwrap_or_default();
    // The keyed-by-value ceiling on either side of the one-client push: SQLite's run follows
    // the ceilings straight away; a later engine's measures it afresh.
    let before = match engine {
        "sqlite" => ceilings.sqlite_insert.keyed_by_value_resources_per_s,
        _ => ceiling.keyed_again().await,
    };
    let mut runs = Vec::new();
    // `SLUIS_BENCH_ONLY=audit`: the four clients' ingest, then auditing on against off.
    let audit_only = only == "audit";
    // One client, into its own database.
    let (url1, _) = database("ingest1").await;
    if only != "filters" && !audit_only {
        let s = start(dir, &url1).await;
        runs.push(ingest(&s, dataset, 1).await);
    }
    let after = if only == "filters" || audit_only {
        before
    } else {
        ceiling.keyed_again().await
    };
    // The same dataset pulled from a record system, into its own database.
    let pulled = if only == "filters" || audit_only {
        None
    } else {
        let (url, _) = database("pull").await;
        let mut run = pull(dir, &url, dataset).await;
        if let Some(one) = runs.iter().find(|r| r.workers == 1) {
            run.ratio_to_push = run.resources_per_s / one.resources_per_s;
        }
        Some(run)
    };
    // Four clients; this database serves the searches.
    let (url4, file) = database("ingest4").await;
    let server = start(dir, &url4).await;
    runs.push(ingest(&server, dataset, 4).await);
    let ingests: Vec<Ingest> = runs
        .into_iter()
        .map(|run| Ingest::against(run, &ceilings.sqlite_insert, [before, after]))
        .collect();
    let (_, peak_after_ingest) = server.rss_mb();
    // Storage of the resources, after ingest: the searches that follow add audit records
    // (about 900 bytes per request), which are the audit trail's, not the dossier's.
    let stored = {
        let db = Db::connect(&url4, 1).await.unwrap();
        storage(&db, file.as_deref(), dataset).await
    };
    if only == "ingest" {
        return Report {
            engine: engine.to_string(),
            ceilings: ceilings.clone(),
            ingest: ingests,
            pull: pulled,
            search: None,
            search_half_rate: None,
            filters: None,
            audit: None,
            audit_few: None,
            storage: stored,
            memory: Memory {
                rss_mb: None,
                peak_rss_mb: None,
                peak_rss_after_ingest_mb: peak_after_ingest,
            },
            targets: Vec::new(),
        };
    }
    link_users(&server, dataset).await;
    // What autovacuum does after a load, done now: planner statistics (a freshly loaded
    // database has none) and the visibility map, without which an index-only scan reads the
    // table's row of every entry it counts. A server with autovacuum off (as CI's PostgreSQL
    // is) would otherwise measure a state no production database stays in. Nothing on SQLite.
    let stats = Db::connect(&url4, 1).await.unwrap();
    if engine == "postgres" {
        stats.execute(&Sql::new("VACUUM (ANALYZE)")).await.unwrap();
        // And the load's dirty buffers written out now, not by a timed checkpoint in the
        // middle of the measurements (at scale 10 about 2 GB of them).
        stats.execute(&Sql::new("CHECKPOINT")).await.unwrap();
    }
    stats.analyze().await.unwrap();
    drop(stats);
    if let Some(secs) = std::env::var("SLUIS_BENCH_PAUSE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        println!(
            "paused {secs} s: {} token {} users h-<client>, m-<client>",
            server.base, server.token
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    // A smoke run (`cargo test`, a debug server) only has to show that everything still runs.
    // 1,000 requests/s (the targets' rate) from scale 1 up; a small run, less.
    let rate = if smoke {
        50.0
    } else {
        1000.0 * scale.clamp(0.2, 1.0)
    };
    let secs = match (smoke, scale < 1.0) {
        (true, _) => 1,
        (false, true) => 2,
        (false, false) => 5,
    };
    let runs = if only == "filters" || audit_only {
        Vec::new()
    } else {
        search(&server, dataset, rate, secs, true).await
    };
    // Where the adapter, PostgreSQL and the load share two cores, the same searches at half
    // the rate: about what a machine with twice the cores gives at the full rate.
    let half_rate = if engine == "postgres" && !smoke && only.is_empty() {
        let mut half = search(&server, dataset, rate / 2.0, secs, false).await;
        for run in &mut half {
            run.name = format!("{}, half rate", run.name);
        }
        Some(half)
    } else {
        None
    };
    let (rss, peak) = server.rss_mb();
    let db = Db::connect(&url4, 4).await.unwrap();
    let filters = if audit_only {
        None
    } else {
        Some(filter_cost(db.clone(), dataset, secs).await)
    };
    drop(db);
    let audit = if only == "filters" {
        None
    } else {
        // `SLUIS_BENCH_AUDIT_SECS`: longer readings (to profile one).
        let secs = std::env::var("SLUIS_BENCH_AUDIT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if smoke { 1 } else { 3 });
        drop(server);
        // Enough clients to keep both sides busy, then the eight of earlier runs.
        let saturated = audit_cost(dir, &url4, dataset, secs, AUDIT_CLIENTS).await;
        let few = audit_cost(dir, &url4, dataset, secs, 8).await;
        Some((saturated, few))
    };
    let storage = stored;
    Report {
        engine: engine.to_string(),
        ceilings: ceilings.clone(),
        ingest: ingests,
        pull: pulled,
        search: Some(runs),
        search_half_rate: half_rate,
        filters,
        audit: audit.as_ref().map(|a| a.0.clone()),
        audit_few: audit.map(|a| a.1),
        storage,
        memory: Memory {
            rss_mb: Some(rss),
            peak_rss_mb: Some(peak),
            peak_rss_after_ingest_mb: peak_after_ingest,
        },
        targets: Vec::new(),
    }
}

/// What a smoke run must show: every part ran, every request was answered without error,
/// and what was pushed was stored.
fn smoke_checks(engine: &str, dataset: &data::Dataset, r: &Report) {
    assert_eq!(r.ingest.len(), 2, "{engine}: both ingests ran");
    for i in &r.ingest {
        assert_eq!(i.run.resources, dataset.resources - 55, "{engine}: {i:?}");
        assert!(i.run.resources_per_s > 0.0, "{engine}: {i:?}");
    }
    let pull = r.pull.as_ref().expect("the pull ran");
    assert_eq!(pull.resources, dataset.resources, "{engine}: {pull:?}");
    let runs = r.search.as_deref().unwrap_or_default();
    assert_eq!(runs.len(), 7, "{engine}: every search ran");
    for run in runs {
        assert_eq!(run.errors, 0, "{engine}: {run:?}");
        assert!(run.requests > 0, "{engine}: {run:?}");
    }
    assert!(
        r.filters.is_some(),
        "{engine}: the filter comparison ran for the holder and the member"
    );
    assert!(
        r.storage.bytes_per_resource > 0.0,
        "{engine}: {:?}",
        r.storage
    );
    let audit = r.audit.as_ref().expect("auditing on and off was compared");
    assert_eq!(
        (audit.on_per_s.len(), audit.off_per_s.len()),
        (3, 3),
        "{engine}: {audit:?}"
    );
    assert!(
        audit
            .on_per_s
            .iter()
            .chain(&audit.off_per_s)
            .all(|x| *x > 0.0),
        "{engine}: {audit:?}"
    );
    // Every target is judged (whether a debug build meets them does not matter).
    // PostgreSQL has its own ingest rate besides.
    let judged = if engine == "postgres" { 12 } else { 11 };
    assert_eq!(r.targets.len(), judged, "{engine}: {:#?}", r.targets);
    targets::self_test();
    growth::self_test();
    println!("smoke run on {engine}: every part ran (numbers of a debug build, not kept)");
}

async fn postgres_schema(name: &str) -> String {
    use sqlx::{Connection, Executor};
    let base = std::env::var("SLUIS_TEST_POSTGRES_URL").unwrap();
    let schema = format!("sluis_bench_{name}");
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to SLUIS_TEST_POSTGRES_URL");
    // Each phase starts with what the one before it wrote flushed (a checkpoint), so that
    // no phase measures the flush of another's load: the pull, once it took 13 s instead of
    // 43, had its checkpoint fall into the four clients' ingest that follows it.
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; CHECKPOINT;"
    )))
    .await
    .expect("prepare the benchmark's schema");
    let _ = conn.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options%5Bsearch_path%5D={schema}")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Probe mode: the load generator alone against a running adapter, to compare with wrk.
    if let (Ok(url), Ok(token), Ok(user)) = (
        std::env::var("SLUIS_BENCH_TARGET"),
        std::env::var("SLUIS_BENCH_TOKEN"),
        std::env::var("SLUIS_BENCH_USER"),
    ) {
        let rate: f64 = std::env::var("SLUIS_BENCH_RATE")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(200.0);
        let http = reqwest::Client::new();
        let run = load::fixed_rate(
            "probe",
            &http,
            &token,
            rate,
            Duration::from_secs(5),
            None,
            |_| (url.clone(), user.clone()),
        )
        .await;
        println!("{}", serde_json::to_string(&run).unwrap());
        return;
    }
    // `cargo test` runs this binary without `--bench`: a smoke run on the smallest data set,
    // against the debug build of the server, so that the test suite fails when the benchmark
    // breaks. Its numbers mean nothing and are not written where a real run writes them.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let scale: f64 = match smoke {
        true => 0.0,
        false => std::env::var("SLUIS_BENCH_SCALE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1.0),
    };
    let clients = ((500.0 * scale) as usize).max(20);
    // The heavy client is the largest dossier a portal pages through; a larger organisation
    // has more clients, not a larger largest dossier, so it stops growing at scale 1.
    let heavy = ((20_000.0 * scale.min(1.0)) as usize).max(1200);
    let started = Instant::now();
    let dataset = data::generate(42, clients, heavy, 100);
    println!(
        "dataset: {} clients, {} resources, {:.1} MB of JSON, heavy client {} Observations, {} Bundles (generated in {:.1} s)",
        dataset.clients.len(),
        dataset.resources,
        dataset.bytes as f64 / 1e6,
        dataset.clients[0].observations,
        dataset
            .clients
            .iter()
            .map(|c| c.bundles.len())
            .sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().unwrap();
    let json = json_ceiling(&dataset);
    let steps = cpu_steps(&dataset);
    let (sqlite_insert, ceiling) = sqlite_ceiling(dir.path(), &dataset, 100).await;
    let ceilings_secs = started.elapsed().as_secs_f64();
    let ceilings = Ceilings {
        json,
        steps,
        sqlite_insert,
    };
    let mut engines = vec!["sqlite"];
    if std::env::var("SLUIS_TEST_POSTGRES_URL").is_ok() {
        engines.push("postgres");
    }
    // `SLUIS_BENCH_ENGINES=postgres`: one engine only (the ceilings are measured all the same).
    if let Ok(only) = std::env::var("SLUIS_BENCH_ENGINES") {
        engines.retain(|e| only.split(',').any(|o| o.trim() == *e));
    }
    let out_dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench"));
    let _ = std::fs::create_dir_all(&out_dir);
    for engine in engines {
        let engine_started = Instant::now();
        let mut result = run_engine(
            engine,
            dir.path(),
            &dataset,
            (&ceilings, &ceiling),
            scale,
            smoke,
        )
        .await;
        print_table(engine, &result);
        result.targets = targets::verdicts(&result);
        targets::print(engine, smoke, &result.targets);
        if smoke {
            smoke_checks(engine, &dataset, &result);
            continue;
        }
        println!(
            "{engine}: {:.0} s (the data set and the ceilings: {:.0} s more)",
            engine_started.elapsed().as_secs_f64(),
            ceilings_secs
        );
        // Scale 1 is the reference a larger run is compared with; a run of one part
        // (`SLUIS_BENCH_ONLY`) is written beside it, never over it.
        let part = match std::env::var("SLUIS_BENCH_ONLY") {
            Ok(only) if !only.is_empty() => format!("-{only}"),
            _ => String::new(),
        };
        let name = if scale == 1.0 {
            format!("portal-{engine}{part}.json")
        } else {
            format!("portal-{engine}-scale{scale}{part}.json")
        };
        let path = std::env::var("SLUIS_BENCH_OUT")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| out_dir.join(name));
        if scale > 1.0 {
            let reference = std::env::var("SLUIS_BENCH_REFERENCE")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|_| out_dir.join(format!("portal-{engine}.json")));
            let grown = growth::compare(engine, scale, &reference, &result);
            targets::print(engine, smoke, &grown);
            result.targets.extend(grown);
        }
        std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
        println!("written: {}", path.display());
    }
    println!("total {:.0} s", started.elapsed().as_secs_f64());
}
