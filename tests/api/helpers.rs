//! The test harness: the real app on a random port, on SQLite or PostgreSQL, driven over HTTP.

#![allow(dead_code)]

use serde_json::{Value, json};
use sluis::app::{AppState, Application};
use sluis::clock::Clock;
use sluis::config::Config;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const ADMIN: &str = "test-admin-token";
pub const PORTAL: (&str, &str) = ("caren", "caren-secret-0001");
pub const SOURCE: (&str, &str) = ("ons-push", "ons-push-secret-01");
pub const T0: &str = "2026-03-02T09:00:00Z";

/// Which store a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// PostgreSQL when `SLUIS_TEST_POSTGRES_URL` is set.
    pub fn postgres() -> Option<Self> {
        std::env::var("SLUIS_TEST_POSTGRES_URL")
            .ok()
            .map(Backend::Postgres)
    }
}

/// Runs an async test body on SQLite and on PostgreSQL (skipped, and said so, without a URL).
#[macro_export]
macro_rules! on_both {
    ($name:ident, |$b:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $b = $crate::helpers::Backend::Sqlite;
                $body.await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($b) = $crate::helpers::Backend::postgres() else {
                    eprintln!("skipped: SLUIS_TEST_POSTGRES_URL is not set");
                    return;
                };
                $body.await
            }
        }
    };
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// A fresh PostgreSQL schema for one test; schemas of earlier runs that have ended are dropped
/// first.
pub async fn postgres_schema(base: &str) -> String {
    use sqlx::Executor;
    let pool = sqlx::PgPool::connect(base)
        .await
        .expect("postgres reachable");
    let pid = std::process::id();
    CLEANED
        .get_or_init(|| async {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'sluis_t_%'",
            )
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
            for (name,) in rows {
                // Only the schemas of test runs that have ended: another run against the same
                // database at the same time (a second checkout, CI beside a developer) keeps its
                // own. Where `/proc` is missing every other run's schemas are dropped.
                let owner = name
                    .strip_prefix("sluis_t_")
                    .and_then(|rest| rest.split('_').next())
                    .and_then(|p| p.parse::<u32>().ok());
                let running = owner.is_some_and(|p| {
                    p == pid || std::path::Path::new(&format!("/proc/{p}")).exists()
                });
                if !running {
                    let _ = pool
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS {name} CASCADE"
                        )))
                        .await;
                }
            }
        })
        .await;
    let schema = format!("sluis_t_{pid}_{}", COUNTER.fetch_add(1, Ordering::SeqCst));
    pool.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .await
        .expect("create schema");
    pool.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options%5Bsearch_path%5D={schema}")
}

/// The config every test starts from; `extra` is appended (later keys of a section win only
/// if written as separate sections, so tests pass whole sections they change).
pub fn config_text(database_url: &str, extra: &str) -> String {
    // `/admin` on the one listener (a test about the admin listener passes `admin_listen`).
    let server = if extra.contains("[server]") {
        ""
    } else {
        "[server]\nlisten = \"127.0.0.1:0\"\npublic_base_url = \"http://sluis.test\"\nadmin_listen = \"public\"\n"
    };
    let extra = if extra.contains("[server]") && !extra.contains("admin_listen") {
        extra.replacen("[server]\n", "[server]\nadmin_listen = \"public\"\n", 1)
    } else {
        extra.to_string()
    };
    // Tests get many tokens and send many wrong ones from 127.0.0.1; a test about the limits
    // passes its own `[limits]`.
    let limits = if extra.contains("[limits]") {
        ""
    } else {
        "[limits]\ntoken_requests_per_minute = 100000\nfailed_auth_per_minute = 100000\n"
    };
    // One signing key for every test adapter, so that processes on one database accept each
    // other's tokens (a test about keys passes its own `[auth]`).
    let auth = if extra.contains("[auth]") {
        String::new()
    } else {
        format!(
            "[auth]\nsigning_key = \"{}/tests/keys/token-signing.key\"\n",
            env!("CARGO_MANIFEST_DIR")
        )
    };
    // A test that configures source `ons` itself (its writeback) passes the whole block.
    let ons = if extra.contains("[[sources]]\nid = \"ons\"") {
        ""
    } else {
        "[[sources]]\nid = \"ons\"\n"
    };
    let base = format!(
        r#"
{server}
{limits}
[database]
url = "{database_url}"
max_connections = 4

[admin]
token = "{ADMIN}"

[dev]
clock_override = true

{auth}
[[clients]]
id = "{}"
kind = "portal"
auth = "client_secret"
secret = "{}"

[[clients]]
id = "{}"
kind = "source"
auth = "client_secret"
secret = "{}"
source = "ons"

[[clients]]
id = "other-push"
kind = "source"
auth = "client_secret"
secret = "other-push-secret-1"
source = "other"

{ons}
[[sources]]
id = "other"
"#,
        PORTAL.0, PORTAL.1, SOURCE.0, SOURCE.1
    );
    let mut text = base;
    if !extra.contains("[organization]") {
        text.push_str("\n[organization]\nterms_version = \"2026-01\"\nassume_active_care = true\n");
    }
    text.push('\n');
    text.push_str(&extra);
    text
}

/// The running app and an HTTP client for it.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub database_url: String,
    _dir: std::sync::Arc<tempfile::TempDir>,
    stopper: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<anyhow::Result<()>>>>,
}

pub struct Options {
    pub extra: String,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, "").await
    }

    /// Starts the app on a database made beforehand (`dir` holds it, if it is a file).
    pub async fn spawn_on(url: String, dir: std::sync::Arc<tempfile::TempDir>) -> Self {
        Self::start(url, dir, "", T0).await
    }

    /// Starts the app with config sections `extra` added; the clock is pinned at [`T0`].
    pub async fn spawn_with(backend: Backend, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match &backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("sluis.db").display()),
            Backend::Postgres(base) => postgres_schema(base).await,
        };
        Self::start(url, std::sync::Arc::new(dir), extra, T0).await
    }

    /// A second process on the same database with another config (as after a restart), its
    /// clock pinned at `now`.
    pub async fn restart_with(&self, extra: &str, now: &str) -> Self {
        Self::start(self.database_url.clone(), self._dir.clone(), extra, now).await
    }

    /// A folder for mappings of this test: the shipped sections, and the rules `embargo` before
    /// the shipped embargo rules.
    pub fn mappings(&self, embargo: &str) -> String {
        let dir = self._dir.path().join(format!(
            "mappings-{}",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sections.toml"), sluis::mapping::DEFAULT_SECTIONS).unwrap();
        std::fs::write(
            dir.join("embargo.toml"),
            format!("{embargo}\n{}", sluis::mapping::DEFAULT_EMBARGO),
        )
        .unwrap();
        format!("[mappings]\ndir = \"{}\"\n", dir.display())
    }

    async fn start(
        url: String,
        dir: std::sync::Arc<tempfile::TempDir>,
        extra: &str,
        now: &str,
    ) -> Self {
        let text = config_text(&url, extra);
        let config = Config::from_toml(&text, "test.toml", std::iter::empty())
            .unwrap_or_else(|p| panic!("test config: {p}"));
        let clock = Clock::system();
        clock.pin(sluis::time::parse_instant(now));
        let app = Application::build(config, clock).await.expect("app builds");
        let addr = app.local_addr().expect("bound");
        let state = app.state();
        let (stopper, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            state,
            database_url: url,
            _dir: dir,
            stopper: std::sync::Mutex::new(Some(stopper)),
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Stops the app as SIGTERM does: open requests and pages under way finish, leases are
    /// given up.
    pub async fn stop(&self) {
        if let Some(s) = self.stopper.lock().unwrap().take() {
            let _ = s.send(());
        }
        let task = self.task.lock().unwrap().take();
        if let Some(t) = task {
            t.await.expect("app task").expect("app ran");
        }
    }

    /// Stops the app where it is, as a crash would (its pulls and their transactions dropped).
    pub async fn crash(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }

    /// The test's own folder (for mappings it writes itself).
    pub fn _dir_path(&self) -> std::path::PathBuf {
        self._dir.path().to_path_buf()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn token(&self, (id, secret): (&str, &str)) -> String {
        let r = self
            .http
            .post(self.url("/auth/token"))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "token for {id}");
        let body: Value = r.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Moves the adapter's clock.
    pub async fn set_clock(&self, now: &str) {
        let r = self
            .http
            .put(self.url("/admin/clock"))
            .bearer_auth(ADMIN)
            .json(&json!({"now": now}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// Pushes a body to `/ingest/ons`; returns status and JSON.
    pub async fn push(&self, body: &Value) -> (u16, Value) {
        let token = self.token(SOURCE).await;
        let r = self
            .http
            .post(self.url("/ingest/ons"))
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Pushes and expects success.
    pub async fn push_ok(&self, body: &Value) -> Value {
        let (status, out) = self.push(body).await;
        assert!(status < 300, "push failed: {status} {out:#}");
        out
    }

    pub async fn put_resource(&self, resource: &Value) -> (u16, Value) {
        let token = self.token(SOURCE).await;
        let path = format!(
            "/ingest/ons/{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let r = self
            .http
            .put(self.url(&path))
            .bearer_auth(token)
            .json(resource)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete_resource(&self, ty: &str, id: &str) -> u16 {
        let token = self.token(SOURCE).await;
        self.http
            .delete(self.url(&format!("/ingest/ons/{ty}/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(ADMIN)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A portal user linked as holder (`self`) to `patient`, terms accepted.
    pub async fn holder(&self, user: &str, patient: &str) -> User {
        let (status, code) = self
            .admin_post(
                "/admin/activation-codes",
                &json!({"patient": format!("Patient/{patient}"), "relationship": "self"}),
            )
            .await;
        assert_eq!(status, 201, "{code}");
        let u = self.user(user).await;
        let (status, body) = u
            .post(
                "/portal/link",
                &json!({"code": code["code"], "birth_date": "1950-01-01"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = u
            .post("/portal/terms", &json!({"version": "2026-01"}))
            .await;
        assert_eq!(status, 200, "{body}");
        u
    }

    /// A portal user (nothing set up).
    pub async fn user(&self, user: &str) -> User {
        User {
            base: self.base.clone(),
            http: self.http.clone(),
            token: self.token(PORTAL).await,
            id: user.to_string(),
        }
    }
}

/// A person using the portal.
#[derive(Clone)]
pub struct User {
    pub base: String,
    pub http: reqwest::Client,
    pub token: String,
    pub id: String,
}

impl User {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let r = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .header("x-portal-user", &self.id)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("x-portal-user", &self.id)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("x-portal-user", &self.id)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Follows `next` links from a search; returns every entry's `Type/id` of mode match.
    pub async fn all_pages(&self, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        let public = "http://sluis.test";
        while let Some(url) = next.take() {
            let url = url.replacen(public, &self.base, 1);
            let (status, bundle) = self.get(&url).await;
            assert_eq!(status, 200, "{bundle}");
            for e in bundle["entry"].as_array().into_iter().flatten() {
                if e["search"]["mode"] == "match" {
                    out.push(format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap(),
                        e["resource"]["id"].as_str().unwrap()
                    ));
                }
            }
            next = bundle["link"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["relation"] == "next")
                .map(|l| l["url"].as_str().unwrap().to_string());
        }
        out
    }
}

/// The reason code of an OperationOutcome.
/// The ids of a Bundle's entries, in order.
pub fn entry_ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

pub fn reason(outcome: &Value) -> &str {
    outcome["issue"][0]["details"]["coding"][0]["code"]
        .as_str()
        .unwrap_or("")
}

/// A transaction Bundle of PUT entries.
pub fn transaction(resources: &[Value]) -> Value {
    let entries: Vec<Value> = resources
        .iter()
        .map(|r| {
            json!({
                "resource": r,
                "request": {"method": "PUT", "url": format!("{}/{}", r["resourceType"].as_str().unwrap(), r["id"].as_str().unwrap())}
            })
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

pub fn patient(id: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"family": "Jansen", "given": ["Hendrik"]}],
        "birthDate": "1942-05-01",
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999911120"}]})
}

pub fn observation(id: &str, patient: &str, code: &str, when: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": when,
        "valueQuantity": {"value": 64.50, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}})
}

pub fn appointment(id: &str, patient: &str, start: &str) -> Value {
    json!({"resourceType": "Appointment", "id": id, "status": "booked", "start": start,
        "end": start,
        "participant": [{"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"}]})
}

impl TestApp {
    /// A holder code for `patient` with `relationship`, redeemed by `user` (terms accepted).
    pub async fn link_as(
        &self,
        user: &str,
        patient: &str,
        relationship: &str,
    ) -> (u16, Value, User) {
        let (status, code) = self
            .admin_post(
                "/admin/activation-codes",
                &json!({"patient": format!("Patient/{patient}"), "relationship": relationship}),
            )
            .await;
        assert_eq!(status, 201, "{code}");
        let u = self.user(user).await;
        let (status, body) = u
            .post(
                "/portal/link",
                &json!({"code": code["code"], "birth_date": "1960-01-01"}),
            )
            .await;
        u.post("/portal/terms", &json!({"version": "2026-01"}))
            .await;
        (status, body, u)
    }

    /// A network member invited by `holder` with `sections`, linked and terms accepted.
    pub async fn member(
        &self,
        holder: &User,
        user: &str,
        patient: &str,
        sections: &[&str],
        can_post: bool,
    ) -> User {
        let (status, inv) = holder
            .post(
                "/portal/invitations",
                &json!({"patient": format!("Patient/{patient}"), "sections": sections, "can_post": can_post,
                        "name": format!("Member {user}"), "relationship": "DAUC"}),
            )
            .await;
        assert_eq!(status, 201, "{inv}");
        let u = self.user(user).await;
        let (status, body) = u
            .post(
                "/portal/link",
                &json!({"code": inv["code"], "birth_date": "1970-01-01"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["role"], "member");
        u.post("/portal/terms", &json!({"version": "2026-01"}))
            .await;
        u
    }
}

impl User {
    pub async fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .patch(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("x-portal-user", &self.id)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> u16 {
        self.http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("x-portal-user", &self.id)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

pub fn episode(id: &str, patient: &str, status: &str, start: &str, end: Option<&str>) -> Value {
    let mut period = json!({"start": start});
    if let Some(e) = end {
        period["end"] = json!(e);
    }
    json!({"resourceType": "EpisodeOfCare", "id": id, "status": status,
        "patient": {"reference": format!("Patient/{patient}")}, "period": period})
}

/// The newest audit record of `route`, the app's journal moved into the log first.
pub async fn last_record(app: &TestApp, route: &str) -> sluis::store::audit::Stored {
    app.state.auditor.flush().await.unwrap();
    sluis::store::audit::after(&app.state.db, 0, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .find(|r| r.route == route)
        .unwrap_or_else(|| panic!("no record of {route}"))
}
