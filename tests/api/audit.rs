//! The audit trail (issue 21): a record for every route's requests, refusals included; the
//! hash chain, the database's refusal to change records, and `sluis audit verify`.

use crate::helpers::*;
use crate::on_both;
use serde_json::{Value, json};
use sluis::audit::chain::{Verdict, verify};
use sluis::store::{Db, Sql};

/// Every route of the router with its methods, read from the router's own source, so that a
/// route added later is walked too.
fn routes() -> Vec<(String, Vec<&'static str>)> {
    let text = include_str!("../../adapter/app.rs");
    let mut out = Vec::new();
    for part in text.split(".route(").skip(1) {
        let end = part.find("\n        .route(").unwrap_or(part.len());
        let part = &part[..end];
        let Some(start) = part.find('"') else {
            continue;
        };
        let path = &part[start + 1..];
        let path = &path[..path.find('"').unwrap()];
        let methods: Vec<&'static str> = [
            ("get(", "GET"),
            ("post(", "POST"),
            ("put(", "PUT"),
            ("delete(", "DELETE"),
            ("patch(", "PATCH"),
        ]
        .into_iter()
        .filter(|(f, _)| {
            part.match_indices(f).any(|(i, _)| {
                i == 0
                    || !part.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && part.as_bytes()[i - 1] != b'_'
            })
        })
        .map(|(_, m)| m)
        .collect();
        out.push((path.to_string(), methods));
    }
    out
}

async fn records_in(db: &Db) -> Vec<sluis::store::audit::Stored> {
    sluis::store::audit::after(db, 0, 1_000_000).await.unwrap()
}

/// The app's records, its journal moved into the log first.
async fn records(app: &TestApp) -> Vec<sluis::store::audit::Stored> {
    app.state.auditor.flush().await.unwrap();
    records_in(&app.state.db).await
}

/// `times` reads of `Observation/o1` by a stranger, each refused (401) and recorded (naming
/// no client).
async fn strangers_read(app: &TestApp, times: usize) {
    for _ in 0..times {
        let r = app
            .http
            .get(app.url("/fhir/Observation/o1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
}

/// A config in `dir` for the `sluis audit` commands on the app's database.
fn cli_config(app: &TestApp, dir: &tempfile::TempDir) -> std::path::PathBuf {
    let config = dir.path().join("sluis.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n[admin]\ntoken = \"a-long-admin-token\"\n",
            app.database_url
        ),
    )
    .unwrap();
    config
}

/// The verdict on the app's chain, its journal moved into the log first.
async fn verified(app: &TestApp) -> Verdict {
    app.state.auditor.flush().await.unwrap();
    verify(&app.state.db).await.unwrap()
}

on_both!(
    every_route_writes_a_record_refusals_included,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let routes = routes();
        assert!(routes.len() >= 30, "{routes:?}");
        let unrecorded = [
            "/healthz",
            "/readyz",
            "/metrics",
            "/fhir/metadata",
            "/.well-known/smart-configuration",
            "/fhir/.well-known/smart-configuration",
        ];
        for (n, (route, methods)) in routes.iter().enumerate() {
            assert!(!methods.is_empty(), "{route}");
            let path = route
                .replace("{type}", "Observation")
                .replace("{id}", "x1")
                .replace("{source}", "ons")
                .replace("{client}", "caren")
                .replace("{user}", "u1");
            for method in methods {
                // Without credentials: refused, and recorded.
                let mut r = app
                    .http
                    .request(method.parse().unwrap(), app.url(&path))
                    .header("x-request-id", format!("walk-{method}-{n}"))
                    .header("x-correlation-id", "walk");
                // Every other request carries a trace id: records with and without one chain
                // together.
                if n % 2 == 0 {
                    r = r.header("x-trace-id", format!("trace.{n}"));
                }
                let r = r.send().await.unwrap();
                let status = r.status().as_u16();
                let found = records(&app)
                    .await
                    .into_iter()
                    .find(|rec| rec.route == *route && rec.method == *method);
                if unrecorded.contains(&route.as_str()) {
                    assert!(found.is_none(), "{method} {route} is recorded");
                    continue;
                }
                let rec = found.unwrap_or_else(|| panic!("no record of {method} {route}"));
                assert_eq!(rec.status, i64::from(status), "{method} {route}");
                assert_eq!(
                    rec.request_id.as_deref(),
                    Some(format!("walk-{method}-{n}").as_str())
                );
                assert_eq!(rec.correlation_id.as_deref(), Some("walk"));
                assert_eq!(
                    rec.trace_id,
                    (n % 2 == 0).then(|| format!("trace.{n}")),
                    "{method} {route}: X-Trace-Id goes into the record (contract §3)"
                );
                assert_eq!(rec.remote.as_deref(), Some("127.0.0.1"));
                if status == 401 {
                    assert_eq!(
                        rec.reason.as_deref(),
                        Some("invalid-token"),
                        "{method} {route}"
                    );
                }
            }
        }
        // A path no route has is about no client, whatever its query names.
        let r = app
            .http
            .get(app.url("/fhir-nowhere?patient=p1&subject=p2"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let rec = records(&app)
            .await
            .into_iter()
            .rev()
            .find(|r| r.route == "unmatched")
            .unwrap();
        assert_eq!(rec.patient, None, "{rec:?}");
        // A portal read that succeeds: who, which client, what was returned.
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("o1", "p1", "29463-7", "2025-01-01"),
        ]))
        .await;
        // For below: several resources of another client.
        let mut seen = observation("o3", "p2", "29463-7", "2025-01-03");
        seen["performer"] = serde_json::json!([{"reference": "Practitioner/dr"}]);
        app.push_ok(&transaction(&[
            patient("p2"),
            observation("o2", "p2", "29463-7", "2025-01-02"),
            seen,
            serde_json::json!({"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Arts"}]}),
        ]))
        .await;
        app.set_clock("2027-01-01T00:00:00Z").await;
        let user = app.holder("holder-1", "p1").await;
        let (status, body) = user.get("/fhir/Observation?patient=p1").await;
        assert_eq!(status, 200, "{body}");
        let recs = records(&app).await;
        let rec = recs
            .iter()
            .rev()
            .find(|r| r.route == "/fhir/{type}" && r.status == 200)
            .unwrap();
        assert_eq!(rec.action, "search");
        assert_eq!(rec.client_id.as_deref(), Some(PORTAL.0));
        assert_eq!(rec.user_id.as_deref(), Some("holder-1"));
        assert_eq!(rec.patient.as_deref(), Some("p1"));
        assert_eq!(rec.resources.as_deref(), Some("Observation/o1"));
        assert_eq!(rec.query.as_deref(), Some("patient=p1"));
        assert_eq!(verified(&app).await, Verdict::Intact(recs.len() as u64));
        // Several resources: in the answer's order, those of one type that follow each other
        // as one group (`Type/id,id`), an included one of another type after them.
        let user = app.holder("holder-2", "p2").await;
        let (status, body) = user
            .get("/fhir/Observation?patient=p2&_include=Observation:performer")
            .await;
        assert_eq!(status, 200, "{body}");
        let ids: Vec<String> = body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap(),
                    e["resource"]["id"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(ids.len(), 3, "{body}");
        assert_eq!(ids[2], "Practitioner/dr", "{body}");
        let observations: Vec<&str> = ids[..2]
            .iter()
            .map(|i| i.trim_start_matches("Observation/"))
            .collect();
        let expected = format!("Observation/{} Practitioner/dr", observations.join(","));
        let recs = records(&app).await;
        let rec = recs
            .iter()
            .rev()
            .find(|r| r.route == "/fhir/{type}" && r.status == 200)
            .unwrap();
        assert_eq!(rec.resources.as_deref(), Some(expected.as_str()));
        assert_eq!(verified(&app).await, Verdict::Intact(recs.len() as u64));
    }
);

/// Turns the database's guards off, as someone with direct access could.
async fn unguard(db: &Db) {
    let sql = match db.engine() {
        sluis::store::db::Engine::Sqlite => {
            "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete"
        }
        sluis::store::db::Engine::Postgres => "ALTER TABLE audit_log DISABLE TRIGGER USER",
    };
    for statement in sql.split("; ") {
        db.execute(&Sql::new(statement)).await.unwrap();
    }
}

on_both!(
    the_database_refuses_changes_and_verify_names_the_first_tampered_record,
    |b| async move {
        for tampering in [
            "update", "delete", "insert", "rehash", "stray", "client", "orphan", "mistyped",
        ] {
            // Only SQLite stores a value of another kind than its column's.
            if tampering == "mistyped" && !matches!(b, Backend::Sqlite) {
                continue;
            }
            let app = TestApp::spawn(b.clone()).await;
            for i in 0..6 {
                let r = app
                    .http
                    .get(app.url(&format!("/fhir/Observation/o{i}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 401);
            }
            app.state.auditor.flush().await.unwrap();
            let db = &app.state.db;
            assert_eq!(verify(db).await.unwrap(), Verdict::Intact(6));
            // The guards: no update, no delete.
            assert!(
                db.execute(&Sql::new("UPDATE audit_log SET status = 200 WHERE seq = 3"))
                    .await
                    .is_err()
            );
            assert!(
                db.execute(&Sql::new("DELETE FROM audit_log WHERE seq = 3"))
                    .await
                    .is_err()
            );
            if db.engine() == sluis::store::db::Engine::Postgres {
                assert!(db.execute(&Sql::new("TRUNCATE audit_log")).await.is_err());
            }
            // A client row of no record is refused (SQLite: the foreign key; PostgreSQL: the
            // check over a statement's rows); with that guard off it stands outside the chain.
            if tampering == "orphan" {
                let orphan = "INSERT INTO audit_patients (seq, patient, types) VALUES (99, 'p9', 'Observation')";
                assert!(db.execute(&Sql::new(orphan)).await.is_err());
                if db.engine() == sluis::store::db::Engine::Postgres {
                    db.execute(&Sql::new(
                        "ALTER TABLE audit_patients DISABLE TRIGGER audit_patients_no_insert_below",
                    ))
                    .await
                    .unwrap();
                    db.execute(&Sql::new(orphan)).await.unwrap();
                    match verify(db).await.unwrap() {
                        Verdict::Broken { seq, why } => {
                            assert_eq!(seq, 0, "{why}");
                            assert!(why.contains("outside the chain"), "{why}");
                        }
                        v => panic!("{tampering}: {v:?}"),
                    }
                }
                continue;
            }
            // A row numbered below 1 is refused; with that guard off it stands outside the
            // chain. A client added to a record needs no guard off.
            if tampering == "stray" || tampering == "client" {
                if tampering == "stray" {
                    let stray = "INSERT INTO audit_log (seq, at, action, route, method, status, prev_hash, hash) \
                         SELECT -1, at, 'read', route, method, 200, prev_hash, hash FROM audit_log WHERE seq = 1";
                    assert!(db.execute(&Sql::new(stray)).await.is_err());
                    let below = match db.engine() {
                        sluis::store::db::Engine::Sqlite => {
                            "DROP TRIGGER audit_log_no_insert_below"
                        }
                        sluis::store::db::Engine::Postgres => {
                            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_insert_below"
                        }
                    };
                    db.execute(&Sql::new(below)).await.unwrap();
                }
                let sql = if tampering == "stray" {
                    "INSERT INTO audit_log (seq, at, action, route, method, status, prev_hash, hash) \
                     SELECT -1, at, 'read', route, method, 200, prev_hash, hash FROM audit_log WHERE seq = 1"
                } else {
                    "INSERT INTO audit_patients (seq, patient, types) VALUES (3, 'p9', 'Observation')"
                };
                db.execute(&Sql::new(sql)).await.unwrap();
                match verify(db).await.unwrap() {
                    Verdict::Broken { seq, .. } => {
                        assert_eq!(seq, if tampering == "stray" { 0 } else { 3 }, "{tampering}");
                    }
                    v => panic!("{tampering}: {v:?}"),
                }
                continue;
            }
            unguard(db).await;
            if tampering == "rehash" {
                // Record 3 changed with a hash made to fit, and record 4 pointed at it: the
                // hash of 4 covers the hash it follows, so 4 no longer fits.
                let mut r = records_in(db).await.remove(2);
                r.status = 200;
                r.hash = sluis::audit::chain::hash(&r);
                db.execute(
                    &Sql::new("UPDATE audit_log SET status = 200, hash = $1 WHERE seq = 3")
                        .arg(r.hash.as_str()),
                )
                .await
                .unwrap();
                db.execute(
                    &Sql::new("UPDATE audit_log SET prev_hash = $1 WHERE seq = 4")
                        .arg(r.hash.as_str()),
                )
                .await
                .unwrap();
                match verify(db).await.unwrap() {
                    Verdict::Broken { seq, .. } => assert_eq!(seq, 4),
                    v => panic!("{tampering}: {v:?}"),
                }
                continue;
            }
            let (sql, seq) = match tampering {
                "update" => ("UPDATE audit_log SET status = 200 WHERE seq = 3", 3),
                // Text where a number belongs: the record cannot be read as one, and is named.
                "mistyped" => ("UPDATE audit_log SET at = 'soon' WHERE seq = 3", 3),
                "delete" => ("DELETE FROM audit_log WHERE seq = 4", 4),
                _ => (
                    "INSERT INTO audit_log (seq, at, action, route, method, status, prev_hash, hash) \
                     SELECT 7, at, action, route, method, 200, hash, 'forged' FROM audit_log WHERE seq = 6",
                    7,
                ),
            };
            db.execute(&Sql::new(sql)).await.unwrap();
            match verify(db).await.unwrap() {
                Verdict::Broken { seq: found, .. } => assert_eq!(found, seq, "{tampering}"),
                v => panic!("{tampering}: {v:?}"),
            }
        }
    }
);

/// The record a forger would append after `last`: chained to it, its hash made to fit.
fn forged_after(last: &sluis::store::audit::Stored) -> sluis::store::audit::Stored {
    let mut r = sluis::store::audit::Stored {
        seq: last.seq + 1,
        at: last.at,
        action: "read".into(),
        route: last.route.clone(),
        method: last.method.clone(),
        status: 200,
        prev_hash: last.hash.clone(),
        ..Default::default()
    };
    r.hash = sluis::audit::chain::hash(&r);
    r
}

/// Appends `r` (its fields as [`forged_after`] sets them) straight into the table (the
/// head's trigger follows it, as it follows any append).
async fn slip_in(db: &Db, r: &sluis::store::audit::Stored) -> Result<u64, sluis::store::Error> {
    db.execute(
        &Sql::new(
            "INSERT INTO audit_log (seq, at, action, route, method, status, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .arg(r.seq)
        .arg(r.at)
        .arg(r.action.as_str())
        .arg(r.route.as_str())
        .arg(r.method.as_str())
        .arg(r.status)
        .arg(r.prev_hash.as_str())
        .arg(r.hash.as_str()),
    )
    .await
}

on_both!(
    the_log_keeps_its_head_so_an_end_cut_off_or_replaced_is_found,
    |b| async move {
        for tampering in ["cut", "replaced", "head", "unfollowed"] {
            let app = TestApp::spawn(b.clone()).await;
            strangers_read(&app, 6).await;
            app.state.auditor.flush().await.unwrap();
            let db = &app.state.db;
            let recs = records_in(db).await;
            assert_eq!(recs.len(), 6);
            let last = recs.last().unwrap().clone();
            assert_eq!(
                sluis::store::audit::kept_head(db).await.unwrap(),
                Some((6, last.hash.clone())),
                "the head follows every append"
            );
            assert_eq!(verify(db).await.unwrap(), Verdict::Intact(6));
            // The head moves only forward and stays.
            for refused in [
                "UPDATE audit_head SET seq = 5",
                "UPDATE audit_head SET seq = 6, hash = 'other'",
                "DELETE FROM audit_head",
            ] {
                assert!(db.execute(&Sql::new(refused)).await.is_err(), "{refused}");
            }
            if db.engine() == sluis::store::db::Engine::Postgres {
                assert!(db.execute(&Sql::new("TRUNCATE audit_head")).await.is_err());
            }
            let (expected, words) = match tampering {
                // The newest record removed, the guards off: the chain alone still fits.
                "cut" => {
                    unguard(db).await;
                    db.execute(&Sql::new("DELETE FROM audit_log WHERE seq = 6"))
                        .await
                        .unwrap();
                    (6, "were removed")
                }
                // The newest record put back with other content and a hash made to fit.
                "replaced" => {
                    unguard(db).await;
                    db.execute(&Sql::new("DELETE FROM audit_log WHERE seq = 6"))
                        .await
                        .unwrap();
                    slip_in(db, &forged_after(&recs[4])).await.unwrap();
                    (6, "head names")
                }
                // The head left behind (its trigger dropped), a record appended past it.
                "unfollowed" => {
                    let drop = match db.engine() {
                        sluis::store::db::Engine::Sqlite => "DROP TRIGGER audit_head_follows",
                        sluis::store::db::Engine::Postgres => {
                            "DROP TRIGGER audit_head_follows ON audit_log"
                        }
                    };
                    db.execute(&Sql::new(drop)).await.unwrap();
                    slip_in(db, &forged_after(&last)).await.unwrap();
                    (7, "slipped in")
                }
                // The head itself removed, its guard dropped first.
                _ => {
                    let drop = match db.engine() {
                        sluis::store::db::Engine::Sqlite => "DROP TRIGGER audit_head_no_delete",
                        sluis::store::db::Engine::Postgres => {
                            "ALTER TABLE audit_head DISABLE TRIGGER USER"
                        }
                    };
                    db.execute(&Sql::new(drop)).await.unwrap();
                    db.execute(&Sql::new("DELETE FROM audit_head"))
                        .await
                        .unwrap();
                    (0, "audit_head")
                }
            };
            match verify(db).await.unwrap() {
                Verdict::Broken { seq, why } => {
                    assert_eq!(seq, expected, "{tampering}: {why}");
                    assert!(why.contains(words), "{tampering}: {why}");
                }
                v => panic!("{tampering}: {v:?}"),
            }
            // The adapter goes on recording after any of them; the verdict stays.
            strangers_read(&app, 1).await;
            app.state.auditor.flush().await.unwrap();
            assert!(
                matches!(verify(db).await.unwrap(), Verdict::Broken { .. }),
                "{tampering}"
            );
        }
    }
);

/// `sluis audit verify` on the command line: exit 0 on an intact chain, 1 naming the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_verifies_the_chain() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    strangers_read(&app, 3).await;
    app.state.auditor.flush().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(&app, &dir);
    let run = || audit_cli(&config, &["verify"]);
    let (code, out, err) = run();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("intact: 3 records"), "{out}");
    // Exported as NDJSON, whole or by period.
    let export = |extra: &[&str]| {
        let args: Vec<&str> = std::iter::once("export")
            .chain(extra.iter().copied())
            .collect();
        audit_cli(&config, &args)
    };
    let (code, out, err) = export(&[]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[2]["route"], "/fhir/{type}/{id}");
    assert!(lines[1]["hash"].as_str().unwrap().len() == 64);
    assert_eq!(export(&["--to", "2000-01-01T00:00:00Z"]).1, "");
    let (code, _, err) = export(&["--from", "yesterday"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--from"), "{err}");
    unguard(&app.state.db).await;
    app.state
        .db
        .execute(&Sql::new(
            "UPDATE audit_log SET user_id = 'someone' WHERE seq = 2",
        ))
        .await
        .unwrap();
    let (code, _, err) = run();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("broken at record 2"), "{err}");
}

/// A statement that makes every insert into the audit log fail, and the one that undoes it.
fn audit_breaker(db: &Db) -> (&'static str, &'static str) {
    match db.engine() {
        sluis::store::db::Engine::Sqlite => (
            "CREATE TRIGGER audit_log_broken BEFORE INSERT ON audit_log \
             BEGIN SELECT RAISE(ABORT, 'disk full'); END",
            "DROP TRIGGER audit_log_broken",
        ),
        sluis::store::db::Engine::Postgres => (
            "CREATE TRIGGER audit_log_broken BEFORE INSERT ON audit_log \
             FOR EACH ROW EXECUTE FUNCTION audit_log_refuse()",
            "DROP TRIGGER audit_log_broken ON audit_log",
        ),
    }
}

on_both!(
    a_request_whose_record_cannot_be_written_is_refused_with_503,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let source = app.token(SOURCE).await;
        let (break_it, mend_it) = audit_breaker(&app.state.db);
        app.state.db.execute(&Sql::new(break_it)).await.unwrap();
        // With a journal (a SQLite file), a record waits in it until it is moved: the request
        // before the first move that fails is answered, and its record is kept.
        let journal = app.state.db.sqlite_file().is_some();
        if journal {
            strangers_read(&app, 1).await;
            assert!(app.state.auditor.flush().await.is_err());
        }
        let r = app
            .http
            .get(app.url("/fhir/Patient/p1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["resourceType"], "OperationOutcome");
        let (status, _) = app
            .admin_post(
                "/admin/activation-codes",
                &serde_json::json!({"patient": "Patient/p1", "relationship": "self"}),
            )
            .await;
        assert_eq!(status, 503, "an admin action is not done unlogged either");
        // Nor is a push: refused, and nothing of it stored.
        let r = app
            .http
            .post(app.url("/ingest/ons"))
            .bearer_auth(&source)
            .header("content-type", "application/fhir+json")
            .body(transaction(&[patient("unlogged")]).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let stored = app
            .state
            .db
            .fetch_count(&Sql::new(
                "SELECT COUNT(*) AS n FROM resources WHERE fhir_id = 'unlogged'",
            ))
            .await
            .unwrap();
        assert_eq!(stored, 0, "a push refused for its record changed nothing");
        // What is not recorded still answers.
        let r = app.http.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        app.state.db.execute(&Sql::new(mend_it)).await.unwrap();
        // Once a move succeeds (the journal tries again every 100 ms), requests are answered.
        let started = std::time::Instant::now();
        loop {
            let r = app
                .http
                .get(app.url("/fhir/Patient/p1"))
                .send()
                .await
                .unwrap();
            if r.status() == 401 {
                break;
            }
            assert_eq!(r.status(), 503);
            assert!(started.elapsed() < std::time::Duration::from_secs(10));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Nothing answered is missing from the chain.
        let answered = if journal { 3 } else { 2 };
        assert_eq!(verified(&app).await, Verdict::Intact(answered));
    }
);

on_both!(
    kill_9_during_a_load_of_reads_loses_no_record_of_an_answered_request,
    |b| async move {
        // The database, migrated, then the real binary on it.
        let first = TestApp::spawn(b).await;
        let url = first.database_url.clone();
        first.stop().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sluis.toml");
        std::fs::write(
            &config,
            config_text(
                &url,
                &format!("[server]\nlisten = \"127.0.0.1:{port}\"\npublic_base_url = \"http://sluis.test\"\n"),
            ),
        )
        .unwrap();
        let serve = || {
            std::process::Command::new(env!("CARGO_BIN_EXE_sluis"))
                .args(["serve", "--config", config.to_str().unwrap()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let ready = |http: reqwest::Client, base: String| async move {
            let started = std::time::Instant::now();
            while !http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                assert!(started.elapsed() < std::time::Duration::from_secs(30));
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        let mut child = serve();
        ready(http.clone(), base.clone()).await;
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut load = Vec::new();
        for w in 0..8 {
            let (http, base, answered) = (http.clone(), base.clone(), answered.clone());
            load.push(tokio::spawn(async move {
                for i in 0.. {
                    let r = http
                        .get(format!("{base}/fhir/Observation?patient=p{w}-{i}"))
                        .header("x-portal-user", "reader")
                        .send()
                        .await;
                    // An answer counts once its whole body is in.
                    let Ok(r) = r else { break };
                    if r.bytes().await.is_err() {
                        break;
                    }
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        for t in load {
            let _ = t.await;
        }
        let answered = answered.load(std::sync::atomic::Ordering::SeqCst);
        assert!(answered > 50, "a load: {answered}");
        // Restarted, the adapter first moves what the killed process left in its journal.
        let mut again = serve();
        ready(http.clone(), base.clone()).await;
        again.kill().unwrap();
        let _ = again.wait();
        let db = Db::connect(&url, 1).await.unwrap();
        let recorded = records_in(&db)
            .await
            .iter()
            .filter(|r| r.route == "/fhir/{type}")
            .count() as u64;
        assert!(
            recorded >= answered,
            "{answered} answers, {recorded} records"
        );
        assert!(matches!(verify(&db).await.unwrap(), Verdict::Intact(_)));
    }
);

on_both!(
    the_admin_filters_the_trail_and_reports_exposure,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            patient("p2"),
            observation("o1", "p1", "29463-7", "2025-01-01"),
            observation("o2", "p2", "29463-7", "2025-01-01"),
        ]))
        .await;
        app.set_clock("2027-01-01T00:00:00Z").await;
        let h1 = app.holder("h1", "p1").await;
        let h2 = app.holder("h2", "p2").await;
        for _ in 0..2 {
            assert_eq!(h1.get("/fhir/Observation?patient=p1").await.0, 200);
        }
        assert_eq!(h2.get("/fhir/Observation?patient=p2").await.0, 200);
        // A stranger tries p2: refused, and recorded as about p2.
        let stranger = app.user("stranger").await;
        let (status, body) = stranger.get("/fhir/Observation?patient=p2").await;
        assert_eq!(status, 403, "{body}");
        let get = |path: String| {
            let app = &app;
            async move {
                let r = app
                    .http
                    .get(app.url(&path))
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (
                    status,
                    r.json::<serde_json::Value>().await.unwrap_or_default(),
                )
            }
        };
        let (status, body) = get("/admin/audit?patient=p2".into()).await;
        assert_eq!(status, 200, "{body}");
        let recs = body["records"].as_array().unwrap();
        let statuses: Vec<i64> = recs
            .iter()
            .filter(|r| r["route"] == "/fhir/{type}")
            .map(|r| r["status"].as_i64().unwrap())
            .collect();
        assert_eq!(statuses, [200, 403], "{body:#}");
        let (_, body) = get("/admin/audit?patient=p2&outcome=failure".into()).await;
        let recs = body["records"].as_array().unwrap();
        assert_eq!(recs.len(), 1, "{body:#}");
        assert_eq!(recs[0]["user_id"], "stranger");
        assert_eq!(recs[0]["reason"], "not-linked");
        let (_, body) = get(format!(
            "/admin/audit?client={}&user=h1&outcome=success",
            PORTAL.0
        ))
        .await;
        let recs = body["records"].as_array().unwrap();
        assert!(
            recs.iter()
                .all(|r| r["user_id"] == "h1" && r["status"].as_i64().unwrap() < 400)
        );
        assert_eq!(
            recs.iter().filter(|r| r["route"] == "/fhir/{type}").count(),
            2,
            "{body:#}"
        );
        // A period before anything happened holds nothing.
        let (_, body) = get("/admin/audit?to=2000-01-01T00:00:00Z".into()).await;
        assert_eq!(body["records"].as_array().unwrap().len(), 0);
        // Paged: the pages put together are the whole.
        let (_, all) = get("/admin/audit?_count=1000".into()).await;
        let all: Vec<i64> = all["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["seq"].as_i64().unwrap())
            .collect();
        let mut paged = Vec::new();
        let mut next = Some("/admin/audit?_count=3".to_string());
        while let Some(url) = next {
            let (status, body) = get(url).await;
            assert_eq!(status, 200);
            paged.extend(
                body["records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["seq"].as_i64().unwrap()),
            );
            next = body["next"].as_str().map(str::to_string);
        }
        // (The paging requests are recorded too: only those before it are compared.)
        assert_eq!(&paged[..all.len()], &all[..]);
        // Naming a client whose data is not served is no exposure.
        assert_eq!(h1.get("/fhir/Observation?patient=p2").await.0, 200);
        // Exposure: whose data the vendor's user, and the vendor, saw.
        let (status, body) =
            get(format!("/admin/audit/exposure?client={}&user=h1", PORTAL.0)).await;
        assert_eq!(status, 200, "{body}");
        let patients = body["patients"].as_array().unwrap();
        assert_eq!(patients.len(), 1, "{body:#}");
        assert_eq!(patients[0]["patient"], "p1");
        assert!(patients[0]["requests"].as_i64().unwrap() >= 2);
        let (_, body) = get(format!("/admin/audit/exposure?client={}", PORTAL.0)).await;
        let seen: Vec<&str> = body["patients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["patient"].as_str().unwrap())
            .collect();
        assert_eq!(seen, ["p1", "p2"]);
        // Bad questions, and no token.
        for bad in [
            "/admin/audit?from=yesterday",
            "/admin/audit?outcome=maybe",
            "/admin/audit?_count=-1",
            "/admin/audit?color=red",
            "/admin/audit/exposure?user=h1",
        ] {
            let (status, body) = get(bad.into()).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert_eq!(body["resourceType"], "OperationOutcome");
        }
        let r = app.http.get(app.url("/admin/audit")).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
);

on_both!(
    the_holder_sees_who_looked_and_a_member_cannot,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            patient("p2"),
            observation("o1", "p1", "29463-7", "2025-01-01"),
            observation("o2", "p2", "29463-7", "2025-01-01"),
            appointment("a2", "p2", "2026-06-01T10:00:00Z"),
        ]))
        .await;
        app.set_clock("2027-01-01T00:00:00Z").await;
        let holder = app.holder("h1", "p1").await;
        let member = app.member(&holder, "m1", "p1", &["metingen"], false).await;
        // The member is also the holder of p2, and reads both clients in one search.
        let (status, code) = app
            .admin_post(
                "/admin/activation-codes",
                &serde_json::json!({"patient": "Patient/p2", "relationship": "self"}),
            )
            .await;
        assert_eq!(status, 201);
        let (status, body) = member
            .post(
                "/portal/link",
                &serde_json::json!({"code": code["code"], "birth_date": "1970-01-01"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(member.get("/fhir/Observation").await.0, 200);
        assert_eq!(member.get("/fhir/Appointment?patient=p2").await.0, 200);
        assert_eq!(holder.get("/fhir/Observation/o1").await.0, 200);

        let (status, body) = holder.get("/fhir/AuditEvent?patient=p1").await;
        assert_eq!(status, 200, "{body}");
        let events: Vec<&serde_json::Value> = body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .collect();
        assert_eq!(events.len(), 2, "{body:#}");
        // Newest first: the holder's own read, then the member's search.
        assert_eq!(events[0]["resourceType"], "AuditEvent");
        assert_eq!(events[0]["subtype"][0]["code"], "read");
        assert_eq!(
            events[0]["agent"][0]["who"]["display"],
            "the client themself"
        );
        assert_eq!(events[1]["subtype"][0]["code"], "search-type");
        assert_eq!(events[1]["agent"][0]["who"]["display"], "Member m1 (DAUC)");
        assert_eq!(events[1]["entity"][0]["what"]["reference"], "Patient/p1");
        assert_eq!(events[1]["entity"][0]["description"], "seen: Observation");
        // Nothing of the other client, of the vendor's user ids or of the queries.
        let text = body.to_string();
        for hidden in ["p2", "Appointment", "m1\"", "h1", PORTAL.0, "patient="] {
            assert!(
                !text.contains(hidden)
                    || hidden == "patient=" && text.matches("patient=").count() == 1,
                "{hidden} in {text}"
            );
        }
        // Paged.
        let (_, page) = holder.get("/fhir/AuditEvent?patient=p1&_count=1").await;
        assert_eq!(page["entry"].as_array().unwrap().len(), 1);
        let next = page["link"][1]["url"]
            .as_str()
            .unwrap()
            .replace("http://sluis.test", "");
        let (_, page2) = holder.get(&next).await;
        assert_eq!(page2["entry"][0]["resource"]["id"], events[1]["id"]);
        // Each event is read at its fullUrl, as the search shows it.
        for (entry, event) in body["entry"].as_array().unwrap().iter().zip(&events) {
            let url = entry["fullUrl"].as_str().unwrap();
            let path = url.replace("http://sluis.test", "");
            assert_eq!(
                path,
                format!("/fhir/AuditEvent/{}", event["id"].as_str().unwrap())
            );
            let (status, read) = holder.get(&path).await;
            assert_eq!(status, 200, "{read}");
            assert_eq!(&read, *event);
        }
        // The member holds p2 and searched both: the event they read is about p2 alone; the
        // holder's own read of p1 is not theirs to read (404, as for an id not there).
        let (status, read) = member
            .get(&format!(
                "/fhir/AuditEvent/{}",
                events[1]["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["entity"][0]["what"]["reference"], "Patient/p2");
        assert!(!read.to_string().contains("p1"), "{read}");
        let (status, read) = member
            .get(&format!(
                "/fhir/AuditEvent/{}",
                events[0]["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(status, 404, "{read}");
        assert_eq!(
            read["issue"][0]["details"]["coding"][0]["code"],
            "not-found"
        );
        for bad in [
            "0",
            "-1",
            "01",
            "+1",
            "1e3",
            "abc",
            "99999999999999999999",
            "9223372036854775807",
        ] {
            let (status, body) = holder.get(&format!("/fhir/AuditEvent/{bad}")).await;
            assert_eq!(status, 404, "{bad}: {body}");
        }
        // A refused request that names p1 is in the trail, not in the holder's view.
        assert_eq!(member.get("/fhir/AuditEvent?patient=p1").await.0, 403);
        let refused = records(&app)
            .await
            .into_iter()
            .rev()
            .find(|r| r.status == 403 && r.patient.as_deref() == Some("p1"))
            .unwrap();
        assert_eq!(
            holder
                .get(&format!("/fhir/AuditEvent/{}", refused.seq))
                .await
                .0,
            404
        );
        // A read of an event is itself recorded: the event it showed and its client, not the
        // clients its query names (a read's path says what it is about).
        let id = events[0]["id"].as_str().unwrap();
        let (status, _) = holder
            .get(&format!(
                "/fhir/AuditEvent/{id}?patient=p2&subject=Patient/p3"
            ))
            .await;
        assert_eq!(status, 200);
        let shown = records(&app)
            .await
            .into_iter()
            .rev()
            .find(|r| r.route == "/fhir/AuditEvent/{id}" && r.status == 200)
            .unwrap();
        assert_eq!(shown.action, "audit view");
        assert_eq!(shown.patient.as_deref(), Some("p1"), "{shown:?}");
        assert_eq!(shown.resources, Some(format!("AuditEvent/{id}")));
        // A type with routes of its own, its name sent encoded, reaches the generic routes:
        // they answer as for a path that is not there. The record names no client from the
        // query; a read of one event names the clients it is about (a refused read).
        for (who, path, named) in [
            (&member, "/fhir/%41uditEvent?patient=p1".to_string(), None),
            (&holder, format!("/fhir/%41uditEvent/{id}"), Some("p1")),
            (&member, "/fhir/%43onsent?patient=p1".to_string(), None),
            (&holder, "/fhir/%54ask?patient=p1".to_string(), None),
        ] {
            let (status, body) = who.get(&path).await;
            assert_eq!(status, 404, "{path}: {body}");
            let rec = records(&app).await.pop().unwrap();
            assert_eq!(rec.status, 404, "{path}");
            assert_eq!(rec.patient.as_deref(), named, "{path}: {rec:?}");
        }
        // A method a route does not take, and a type that is not one, name no client from
        // their query either, credentials or not; a client's own path names that client (an
        // attempt on its data).
        for (method, path, named) in [
            (
                "PUT",
                format!("/fhir/AuditEvent/{id}?patient=p2"),
                Some("p1"),
            ),
            ("GET", "/ingest/ons?patient=p1,p2".to_string(), None),
            (
                "DELETE",
                "/fhir/Patient/p1?patient=p2".to_string(),
                Some("p1"),
            ),
            ("GET", "/fhir/Nothing?patient=p1".to_string(), None),
            ("GET", "/fhir/Nothing/x1?subject=p1".to_string(), None),
        ] {
            for token in [None, Some(&holder.token)] {
                let mut r = app
                    .http
                    .request(method.parse().unwrap(), app.url(&path))
                    .header("x-portal-user", &holder.id);
                if let Some(t) = token {
                    r = r.bearer_auth(t);
                }
                let status = r.send().await.unwrap().status().as_u16();
                assert!(
                    [401, 404, 405].contains(&status),
                    "{method} {path}: {status}"
                );
                let rec = records(&app).await.pop().unwrap();
                assert_eq!(rec.status, i64::from(status), "{method} {path}");
                assert_eq!(rec.patient.as_deref(), named, "{method} {path}: {rec:?}");
            }
        }
        // A member cannot read it; nor can anyone without a link; nor bad questions.
        let (status, body) = member.get("/fhir/AuditEvent?patient=p1").await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(
            body["issue"][0]["details"]["coding"][0]["code"],
            "not-holder"
        );
        let stranger = app.user("stranger").await;
        assert_eq!(stranger.get("/fhir/AuditEvent?patient=p1").await.0, 403);
        for bad in [
            "/fhir/AuditEvent",
            "/fhir/AuditEvent?patient=p1&_count=0",
            "/fhir/AuditEvent?patient=p1&date=2026",
        ] {
            assert_eq!(holder.get(bad).await.0, 400, "{bad}");
        }
        // What the holder is shown is part of the chain: a changed type is found.
        assert!(matches!(verified(&app).await, Verdict::Intact(_)));
        let guard_off = match app.state.db.engine() {
            sluis::store::db::Engine::Sqlite => "DROP TRIGGER audit_patients_no_update",
            sluis::store::db::Engine::Postgres => "ALTER TABLE audit_patients DISABLE TRIGGER USER",
        };
        app.state.db.execute(&Sql::new(guard_off)).await.unwrap();
        app.state
            .db
            .execute(&Sql::new("UPDATE audit_patients SET types = 'Condition' WHERE patient = 'p1' AND types IS NOT NULL"))
            .await
            .unwrap();
        assert!(matches!(verified(&app).await, Verdict::Broken { .. }));
    }
);

on_both!(two_processes_keep_one_chain, |b| async move {
    // Two processes on one database write one chain (on SQLite each through its journal).
    let first = TestApp::spawn(b).await;
    let second = first.restart_with("", T0).await;
    let mut load = Vec::new();
    for app in [&first, &second] {
        for w in 0..4 {
            let (http, url) = (app.http.clone(), app.url(&format!("/fhir/Patient/w{w}")));
            load.push(tokio::spawn(async move {
                for _ in 0..40 {
                    http.get(&url).send().await.unwrap();
                }
            }));
        }
    }
    for t in load {
        t.await.unwrap();
    }
    second.state.auditor.flush().await.unwrap();
    assert_eq!(verified(&first).await, Verdict::Intact(320));
});

on_both!(
    what_a_query_names_cannot_break_or_swell_the_trail,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[patient("p1"), patient("p2"), patient("p3")]))
            .await;
        let before = records(&app).await.len();
        // Ids with spaces, lists, repeats, and many of them: each request still answered (and
        // recorded), naming only clients there are (no credential vouches for the caller).
        let many: String = (0..200).map(|i| format!("patient=x{i:05}&")).collect();
        let mut load = Vec::new();
        for path in [
            "/fhir/Patient/p1?patient=p1%20p1".to_string(),
            "/fhir/Observation?subject=p1,p2&patient=Patient/p3&patient=p3".to_string(),
            format!("/fhir/Observation?{many}"),
            "/fhir/Patient/p1".to_string(),
        ] {
            for _ in 0..5 {
                let (http, url) = (app.http.clone(), app.url(&path));
                load.push(tokio::spawn(async move {
                    http.get(url).send().await.unwrap().status().as_u16()
                }));
            }
        }
        for t in load {
            assert_eq!(t.await.unwrap(), 401);
        }
        let recs = records(&app).await.split_off(before);
        assert_eq!(recs.len(), 20);
        assert!(
            recs.iter()
                .filter(|r| r
                    .query
                    .as_deref()
                    .is_some_and(|q| q.starts_with("patient=x")))
                .all(|r| r.patient.is_none())
        );
        for r in &recs {
            let named: Vec<&str> = r
                .patient
                .as_deref()
                .unwrap_or("")
                .split(' ')
                .filter(|p| !p.is_empty())
                .collect();
            assert!(named.len() <= 5, "{named:?}");
            assert!(named.iter().all(|p| !p.contains(',')), "{named:?}");
        }
        // A list names each of its clients; a Patient read names the one it asked for.
        assert!(
            recs.iter()
                .any(|r| r.patient.as_deref() == Some("p1 p2 p3"))
        );
        assert!(recs.iter().any(|r| r.route == "/fhir/{type}/{id}"
            && r.query.is_none()
            && r.patient.as_deref() == Some("p1")));
        // A caller no credential vouches for keeps its query's record short; a known one gets
        // the first 2,000 characters.
        for r in &recs {
            let kept = r.query.as_deref().map_or(0, |q| q.chars().count());
            assert!(kept <= 200, "{kept} characters kept of a stranger's query");
        }
        assert!(
            recs.iter()
                .any(|r| r.query.as_deref().is_some_and(|q| q.len() == 200))
        );
        let r = app
            .http
            .get(app.url(&format!("/admin/audit?{many}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let recs = records(&app).await;
        let known = recs.last().unwrap();
        assert!(
            known
                .client_id
                .as_deref()
                .is_some_and(|c| c.starts_with("admin"))
        );
        assert_eq!(known.query.as_deref().map(str::len), Some(2_000));
        // No admin credential, or a wrong one: a stranger, not `admin`, with 200 characters;
        // a wrong secret for a client that exists names the client it claimed, and vouches
        // for nothing either.
        let admin = app.url(&format!("/admin/audit?{many}"));
        let r = app.http.get(&admin).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let r = app
            .http
            .get(&admin)
            .bearer_auth("not-the-admin-token-at-all")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = app
            .http
            .post(app.url(&format!("/auth/token?{many}")))
            .basic_auth(PORTAL.0, Some("a-wrong-secret-for-it"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let recs = records(&app).await;
        let strangers = &recs[recs.len() - 3..];
        for r in &strangers[..2] {
            assert_eq!(r.client_id, None, "{r:?}");
            assert_eq!(r.query.as_deref().map(str::len), Some(200), "{r:?}");
        }
        assert_eq!(strangers[2].client_id.as_deref(), Some(PORTAL.0));
        assert_eq!(strangers[2].query.as_deref().map(str::len), Some(200));
        assert_eq!(verified(&app).await, Verdict::Intact(24 + before as u64));
    }
);

on_both!(
    a_request_that_runs_out_of_time_is_answered_and_recorded_as_such,
    |b| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let app = TestApp::spawn_with(
            b,
            "[server]\nlisten = \"127.0.0.1:0\"\npublic_base_url = \"http://sluis.test\"\nbody_timeout = \"PT10S\"\nrequest_timeout = \"PT1S\"\n",
        )
        .await;
        let portal = app.token(PORTAL).await;
        let addr = app.base.trim_start_matches("http://").to_string();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!(
                "POST /portal/terms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {portal}\r\nX-Portal-User: slow\r\nX-Request-Id: slow-1\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{{"
            ).as_bytes())
            .await
            .unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
            .await
            .unwrap()
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]).to_string();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        let rec = records(&app)
            .await
            .into_iter()
            .find(|r| r.request_id.as_deref() == Some("slow-1"))
            .expect("the request that ran out of time is recorded");
        assert_eq!(rec.status, 503);
        assert_eq!(rec.route, "/portal/terms");
        assert_eq!(rec.user_id.as_deref(), Some("slow"));
    }
);

on_both!(
    a_pushed_transaction_is_recorded_once_in_its_own_commit,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("o1", "p1", "29463-7", "2025-01-01"),
        ]))
        .await;
        let mut bad = observation("o2", "p1", "29463-7", "2025-01-01");
        bad["status"] = serde_json::json!("gisteren");
        let (status, _) = app.push(&transaction(&[bad])).await;
        assert_eq!(status, 400);
        let pushes: Vec<_> = records(&app)
            .await
            .into_iter()
            .filter(|r| r.route == "/ingest/{source}")
            .collect();
        assert_eq!(pushes.len(), 2, "{pushes:#?}");
        assert_eq!(pushes[0].status, 200);
        assert_eq!(pushes[0].action, "ingest");
        assert_eq!(pushes[0].detail.as_deref(), Some("entries=2 refused=0"));
        assert_eq!(pushes[0].client_id.as_deref(), Some(SOURCE.0));
        assert!(pushes[0].request_id.is_some() && pushes[0].remote.is_some());
        assert_eq!(pushes[1].status, 400);
        assert_eq!(pushes[1].reason.as_deref(), Some("invalid-resource"));
        assert!(matches!(verified(&app).await, Verdict::Intact(_)));
    }
);

/// Runs `sluis audit <args> --config <config>`: exit code, stdout, stderr.
fn audit_cli(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluis"))
        .arg("audit")
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

on_both!(
    prune_removes_what_is_older_than_the_retention_and_the_rest_still_verifies,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let db = &app.state.db;
        // Five records from six years ago, as a process then wrote them, about client p1.
        let auditor = sluis::audit::Auditor::start(db.clone()).await.unwrap();
        let old = chrono::Utc::now() - chrono::Duration::days(6 * 366);
        for i in 0..5 {
            auditor
                .write(sluis::store::audit::Stored {
                    at: old.timestamp_micros() + i,
                    action: "read".into(),
                    route: "/fhir/{type}/{id}".into(),
                    method: "GET".into(),
                    client_id: Some("portal".into()),
                    patient: Some("p1".into()),
                    resources: Some(format!("Observation/o{i}")),
                    status: 200,
                    types: vec![("p1".into(), "Observation".into())],
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        auditor.flush().await.unwrap();
        // And three of today.
        strangers_read(&app, 3).await;
        app.state.auditor.flush().await.unwrap();
        assert_eq!(verify(db).await.unwrap(), Verdict::Intact(8));
        // A prune cut short: its anchor (after record 3) and record are written, its records
        // not yet removed. What is left below the anchor still leads up to it.
        let third = records_in(db).await.remove(2);
        let cut = sluis::store::audit::Anchor {
            upto: 3,
            hash: third.hash.clone(),
            before: third.at + 1,
            at: chrono::Utc::now().timestamp_micros(),
        };
        let mut tx = sluis::store::audit::begin(db).await.unwrap();
        let (head, prev) = sluis::store::audit::head(&mut tx).await.unwrap();
        sluis::store::audit::add_anchor(&mut tx, &cut)
            .await
            .unwrap();
        let mut record = sluis::store::audit::Stored {
            seq: head + 1,
            at: cut.at,
            action: "prune".into(),
            route: "sluis audit prune".into(),
            method: "CLI".into(),
            detail: Some(sluis::audit::prune::vouching(&cut)),
            status: 200,
            prev_hash: prev,
            ..Default::default()
        };
        record.hash = sluis::audit::chain::hash(&record);
        sluis::store::audit::append(&mut tx, std::slice::from_ref(&record))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(verify(db).await.unwrap(), Verdict::Intact(6));
        // Nothing above an anchor is removed without a prune.
        assert!(
            db.execute(&Sql::new("DELETE FROM audit_log WHERE seq = 4"))
                .await
                .is_err()
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sluis.toml");
        std::fs::write(&config, config_text(&app.database_url, "")).unwrap();
        // Records younger than the retention period stay, whatever --before says.
        let a_year_ago = (chrono::Utc::now() - chrono::Duration::days(366))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let (code, out, err) = audit_cli(&config, &["prune", "--before", &a_year_ago]);
        assert_eq!(code, Some(1), "{out}{err}");
        assert!(err.contains("retention period (P5Y)"), "{err}");
        let (code, _, err) = audit_cli(&config, &["prune", "--before", "last year"]);
        assert_eq!(code, Some(1));
        assert!(err.contains("--before"), "{err}");
        assert_eq!(verify(db).await.unwrap(), Verdict::Intact(6));

        let (code, out, err) = audit_cli(&config, &["prune"]);
        assert_eq!(code, Some(0), "{out}{err}");
        assert!(
            out.contains("removed 5 records") && out.contains("goes on from record 6"),
            "{out}"
        );
        let left = records_in(db).await;
        assert_eq!(
            left.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [6, 7, 8, 9, 10],
            "{left:?}"
        );
        let prune = &left[4];
        assert_eq!(prune.action, "prune");
        assert!(
            prune.detail.as_deref().unwrap().starts_with("upto=5 "),
            "{prune:?}"
        );
        assert_eq!(
            db.fetch_count(&Sql::new("SELECT COUNT(*) AS n FROM audit_patients"))
                .await
                .unwrap(),
            0
        );
        assert_eq!(verify(db).await.unwrap(), Verdict::Intact(5));
        let (code, out, _) = audit_cli(&config, &["verify"]);
        assert_eq!(code, Some(0));
        assert!(out.contains("intact: 5 records, from record 6"), "{out}");
        // Again: nothing more is old enough; no second prune is recorded.
        let (code, out, err) = audit_cli(&config, &["prune"]);
        assert_eq!(code, Some(0), "{out}{err}");
        assert!(out.contains("removed 0 records"), "{out}");
        assert_eq!(verify(db).await.unwrap(), Verdict::Intact(5));
        // What is left is still guarded; anchors too.
        for sql in [
            "DELETE FROM audit_log WHERE seq = 6",
            "UPDATE audit_log SET status = 200 WHERE seq = 7",
            "DELETE FROM audit_anchors",
            "UPDATE audit_anchors SET upto = 7",
        ] {
            assert!(db.execute(&Sql::new(sql)).await.is_err(), "{sql}");
        }
        // Nothing is slipped in where the chain was cut; and what is, verify names.
        for sql in [
            "INSERT INTO audit_log (seq, at, action, route, method, status, prev_hash, hash) \
             SELECT 3, at, action, route, method, status, prev_hash, hash FROM audit_log WHERE seq = 6",
            "INSERT INTO audit_patients (seq, patient, types) VALUES (3, 'p9', 'Observation')",
        ] {
            assert!(db.execute(&Sql::new(sql)).await.is_err(), "{sql}");
        }
        let below = match db.engine() {
            sluis::store::db::Engine::Sqlite => "DROP TRIGGER audit_log_no_insert_below",
            sluis::store::db::Engine::Postgres => {
                "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_insert_below"
            }
        };
        db.execute(&Sql::new(below)).await.unwrap();
        db.execute(&Sql::new(
            "INSERT INTO audit_log (seq, at, action, route, method, patient, status, prev_hash, hash) \
             SELECT 3, at, action, route, method, NULL, status, prev_hash, hash FROM audit_log WHERE seq = 6",
        ))
        .await
        .unwrap();
        match verify(db).await.unwrap() {
            Verdict::Broken { seq, why } => assert!(seq <= 5, "{seq} {why}"),
            v => panic!("a row below the anchor: {v:?}"),
        }
        db.execute(&Sql::new("DELETE FROM audit_log WHERE seq = 3"))
            .await
            .unwrap();
        assert_eq!(verify(db).await.unwrap(), Verdict::Intact(5));
        // An anchor slipped in (so that more can be removed) is one no prune vouches for.
        db.execute(&Sql::new(
            "INSERT INTO audit_anchors (upto, hash, before, at) \
             SELECT seq, hash, at, at FROM audit_log WHERE seq = 7",
        ))
        .await
        .unwrap();
        db.execute(&Sql::new("DELETE FROM audit_log WHERE seq <= 7"))
            .await
            .unwrap();
        match verify(db).await.unwrap() {
            Verdict::Broken { seq, why } => {
                assert_eq!(seq, 8, "{why}");
                assert!(why.contains("no prune"), "{why}");
            }
            v => panic!("{v:?}"),
        }
        // Nor does a prune record forged at the chain's end (no hash before it recomputed):
        // the anchor removed records younger than five years.
        let anchor = sluis::store::audit::anchor(db).await.unwrap().unwrap();
        let last = records_in(db).await.pop().unwrap();
        let mut forged = sluis::store::audit::Stored {
            seq: last.seq + 1,
            at: anchor.at,
            action: "prune".into(),
            route: "sluis audit prune".into(),
            method: "CLI".into(),
            detail: Some(sluis::audit::prune::vouching(&anchor)),
            status: 200,
            prev_hash: last.hash.clone(),
            ..Default::default()
        };
        forged.hash = sluis::audit::chain::hash(&forged);
        let mut tx = db.begin().await.unwrap();
        sluis::store::audit::append(&mut tx, std::slice::from_ref(&forged))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        match verify(db).await.unwrap() {
            Verdict::Broken { seq, why } => {
                assert_eq!(seq, 8, "{why}");
                assert!(why.contains("younger than five years"), "{why}");
            }
            v => panic!("{v:?}"),
        }
        // A retention whose months and days fall short of five years from some days of the
        // calendar is refused with the config (from others it is as long as `P5Y`).
        std::fs::write(
            &config,
            config_text(&app.database_url, "[audit]\nretention = \"P4Y11M30D\"\n"),
        )
        .unwrap();
        let (code, out, err) = audit_cli(&config, &["prune"]);
        assert_ne!(code, Some(0), "{out}{err}");
        assert!(err.contains("audit.retention"), "{err}");
        // And `--before` younger than five years is refused whatever the retention.
        std::fs::write(&config, config_text(&app.database_url, "")).unwrap();
        let almost = (chrono::Utc::now() - chrono::Duration::days(5 * 365))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let (code, out, err) = audit_cli(&config, &["prune", "--before", &almost]);
        assert_eq!(code, Some(1), "{out}{err}");
        assert!(err.contains("must be kept"), "{err}");
    }
);

/// `[audit] enabled = false` (for measuring what the trail costs) writes no record of a
/// request, a refusal or a push; only that it is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditing_off_writes_no_record() {
    let app = TestApp::spawn_with(Backend::Sqlite, "[audit]\nenabled = false\n").await;
    let r = app
        .http
        .get(app.url("/fhir/Patient/p1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.push_ok(&transaction(&[patient("p1")])).await;
    let user = app.holder("holder-1", "p1").await;
    let (status, body) = user.get("/fhir/Patient/p1").await;
    assert_eq!(status, 200, "{body}");
    // Only that auditing was off, written at the start, so the gap shows in the chain.
    let recs = records(&app).await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].action, "audit off");
    assert_eq!(verified(&app).await, Verdict::Intact(1));
    // `sluis check` refuses such a config.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluis.toml");
    std::fs::write(
        &config,
        config_text(&app.database_url, "[audit]\nenabled = false\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluis"))
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("audit.enabled = false"), "{err}");
}

/// A journal line as a process writes it (`audit/journal.rs`).
fn journal_line(route: &str, patient: &str) -> String {
    let record = sluis::store::audit::Stored {
        at: 1_700_000_000_000_000,
        action: "read".into(),
        route: route.into(),
        method: "GET".into(),
        client_id: Some("portal".into()),
        patient: Some(patient.into()),
        status: 200,
        ..Default::default()
    };
    format!(
        "{}\n",
        serde_json::json!({"record": record, "types": [[patient, "Observation"]]})
    )
}

/// What stopped processes leave in a SQLite file's journal is moved at the next start: once,
/// whole lines only, and a file whose middle is damaged is kept aside for the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_left_by_a_stopped_process_is_moved_once_at_the_next_start() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    strangers_read(&app, 2).await;
    app.state.auditor.flush().await.unwrap();
    let dir = sluis::audit::journal::dir_of(std::path::Path::new(sluis::store::sqlite::file_of(
        &app.database_url,
    )));
    assert!(dir.is_dir(), "{}", dir.display());
    // A process killed with two records in its file and a third half written.
    let cut = journal_line("/fhir/{type}/{id}", "p9");
    std::fs::write(
        dir.join("dead-0.ndjson"),
        format!(
            "{}{}{}",
            journal_line("/fhir/{type}", "p7"),
            journal_line("/fhir/{type}", "p8"),
            &cut[..cut.len() / 2]
        ),
    )
    .unwrap();
    // One killed after its move committed and before it removed the file.
    std::fs::write(
        dir.join("moved-0.ndjson"),
        journal_line("/fhir/{type}", "twice"),
    )
    .unwrap();
    app.state
        .db
        .execute(&Sql::new(
            "INSERT INTO audit_journal (file) VALUES ('moved-0.ndjson')",
        ))
        .await
        .unwrap();
    // One whose middle line was damaged.
    std::fs::write(
        dir.join("damaged-0.ndjson"),
        format!(
            "{}{{\"record\": garbage\n{}",
            journal_line("/fhir/{type}", "p5"),
            journal_line("/fhir/{type}", "p6"),
        ),
    )
    .unwrap();
    // A line whose kept types name other clients, or one client twice.
    let mut crafted: serde_json::Value =
        serde_json::from_str(&journal_line("/fhir/{type}", "p3")).unwrap();
    crafted["types"] = serde_json::json!([
        ["p3", "Observation"],
        ["p3", "Condition"],
        ["zz", "Patient"]
    ]);
    std::fs::write(dir.join("crafted-0.ndjson"), format!("{crafted}\n")).unwrap();
    // What is not a plain file of its own is left alone: a pipe (reading it would block), a
    // link to another file (moved twice), a second name of one.
    assert!(
        std::process::Command::new("mkfifo")
            .arg(dir.join("pipe-0.ndjson"))
            .status()
            .unwrap()
            .success()
    );
    std::os::unix::fs::symlink(dir.join("dead-0.ndjson"), dir.join("link-0.ndjson")).unwrap();
    std::fs::write(
        dir.join("twin-0.ndjson"),
        journal_line("/fhir/{type}", "p4"),
    )
    .unwrap();
    std::fs::hard_link(dir.join("twin-0.ndjson"), dir.join("twin-1.ndjson")).unwrap();
    // A file another process is making now, and one a crash left half made.
    let making = std::fs::File::create(dir.join("live-0.new")).unwrap();
    making.try_lock().unwrap();
    std::fs::write(dir.join("crashed-0.new"), "").unwrap();
    // The processes that wrote them were of this database: their prefixes are registered.
    app.state
        .db
        .execute(&Sql::new(
            "INSERT INTO audit_writers (prefix, at) VALUES ('dead', 0), ('moved', 0), \
             ('damaged', 0), ('crafted', 0), ('pipe', 0), ('link', 0), ('twin', 0)",
        ))
        .await
        .unwrap();
    // One no process of it wrote, put there by someone who can write to the directory: a
    // backdated read by another vendor.
    std::fs::write(
        dir.join("planted-0.ndjson"),
        journal_line("/fhir/{type}", "p2"),
    )
    .unwrap();
    let again = app.restart_with("", T0).await;
    let recs = records(&again).await;
    let about: Vec<&str> = recs.iter().filter_map(|r| r.patient.as_deref()).collect();
    for p in ["p3", "p5", "p6", "p7", "p8"] {
        assert_eq!(
            about.iter().filter(|a| **a == p).count(),
            1,
            "{p}: {about:?}"
        );
    }
    assert!(
        !about.contains(&"p9"),
        "a half-written line is not a record"
    );
    assert!(!about.contains(&"twice"), "a moved file is not moved again");
    assert!(
        !about.contains(&"p4"),
        "a file with two names is left to the operator"
    );
    assert_eq!(recs.len(), 7, "{recs:?}");
    assert_eq!(verified(&again).await, Verdict::Intact(7));
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(left.contains(&"damaged-0.bad".to_string()), "{left:?}");
    assert!(!about.contains(&"p2"), "a planted file is not taken");
    assert!(left.contains(&"planted-0.foreign".to_string()), "{left:?}");
    assert!(left.contains(&"live-0.new".to_string()), "{left:?}");
    for kept in [
        "pipe-0.ndjson",
        "link-0.ndjson",
        "twin-0.ndjson",
        "twin-1.ndjson",
    ] {
        assert!(left.contains(&kept.to_string()), "{kept}: {left:?}");
    }
    for gone in [
        "dead-0.ndjson",
        "moved-0.ndjson",
        "damaged-0.ndjson",
        "crashed-0.new",
    ] {
        assert!(!left.contains(&gone.to_string()), "{gone}: {left:?}");
    }
    let marks = again
        .state
        .db
        .fetch_count(&Sql::new("SELECT COUNT(*) AS n FROM audit_journal"))
        .await
        .unwrap();
    assert_eq!(marks, 0, "the names of removed files are forgotten");
    drop(making);
    // Files a version before registration left are taken once, by the first recovery after
    // the migration (which marks them with the empty prefix); a planted one after that is not.
    again
        .state
        .db
        .execute(&Sql::new(
            "INSERT INTO audit_writers (prefix, at) VALUES ('', 0)",
        ))
        .await
        .unwrap();
    std::fs::write(
        dir.join("older-0.ndjson"),
        journal_line("/fhir/{type}", "older"),
    )
    .unwrap();
    let third = again.restart_with("", T0).await;
    std::fs::write(
        dir.join("later-0.ndjson"),
        journal_line("/fhir/{type}", "newer"),
    )
    .unwrap();
    let moved = sluis::audit::journal::recover(&third.state.db, &dir)
        .await
        .unwrap();
    assert_eq!(moved, 0);
    let recs = records(&third).await;
    let about: Vec<&str> = recs.iter().filter_map(|r| r.patient.as_deref()).collect();
    assert_eq!(
        about.iter().filter(|a| **a == "older").count(),
        1,
        "{about:?}"
    );
    assert!(!about.contains(&"newer"), "{about:?}");
    assert!(dir.join("later-0.foreign").exists());
    assert_eq!(verified(&third).await, Verdict::Intact(recs.len() as u64));
}

/// A running process's journal is its own: `sluis audit verify` beside it does not take the
/// records it has not moved yet, and they reach the log once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_process_keeps_its_journal_from_the_audit_commands() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(&app, &dir);
    for round in 0..3 {
        strangers_read(&app, 5).await;
        let (code, out, err) = audit_cli(&config, &["verify"]);
        assert_eq!(code, Some(0), "{round}: {out}{err}");
    }
    assert_eq!(verified(&app).await, Verdict::Intact(15));
}

on_both!(
    a_log_written_before_the_head_was_kept_gets_it_when_migrated,
    |b| async move {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        let (url, head_migration) = match &b {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("sluis.db").display()),
                20,
            ),
            Backend::Postgres(base) => (postgres_schema(base).await, 21),
        };
        // A database of the version before: every migration up to the head's, and a log.
        let db = Db::connect(&url, 2).await.unwrap();
        match &db {
            Db::Sqlite(_) => {
                use sqlx::ConnectOptions;
                let mut conn =
                    <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
                        .unwrap()
                        .create_if_missing(true)
                        .connect()
                        .await
                        .unwrap();
                sqlx::migrate!("adapter/store/migrations/sqlite")
                    .run_to(head_migration - 1, &mut conn)
                    .await
                    .unwrap();
            }
            Db::Postgres(pool) => sqlx::migrate!("adapter/store/migrations/postgres")
                .run_to(head_migration - 1, pool)
                .await
                .unwrap(),
        }
        let mut prev = sluis::store::audit::GENESIS.to_string();
        let old: Vec<sluis::store::audit::Stored> = (1..=5)
            .map(|seq| {
                let mut r = sluis::store::audit::Stored {
                    seq,
                    at: seq * 1_000,
                    action: "read".into(),
                    route: "/fhir/{type}/{id}".into(),
                    method: "GET".into(),
                    patient: Some("p1".into()),
                    resources: Some(format!("Observation/o{seq}")),
                    status: 200,
                    prev_hash: prev.clone(),
                    ..Default::default()
                };
                r.hash = sluis::audit::chain::hash(&r);
                prev = r.hash.clone();
                r
            })
            .collect();
        let mut tx = sluis::store::audit::begin(&db).await.unwrap();
        sluis::store::audit::append(&mut tx, &old).await.unwrap();
        tx.commit().await.unwrap();
        drop(db);
        // Upgraded: the head is the last record; the adapter goes on after it.
        let app = TestApp::spawn_on(url, dir.clone()).await;
        assert_eq!(
            sluis::store::audit::kept_head(&app.state.db).await.unwrap(),
            Some((5, prev.clone()))
        );
        strangers_read(&app, 2).await;
        let recs = records(&app).await;
        assert_eq!(recs.len(), 7);
        assert_eq!(
            recs[5].prev_hash, prev,
            "the first new record chains to the old log"
        );
        assert_eq!(
            sluis::store::audit::kept_head(&app.state.db).await.unwrap(),
            Some((7, recs[6].hash.clone()))
        );
        assert_eq!(verified(&app).await, Verdict::Intact(7));
    }
);

on_both!(
    staff_actions_name_the_client_and_resource_they_touch,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("o1", "p1", "29463-7", "2025-01-01"),
        ]))
        .await;
        let h1 = app.holder("h1", "p1").await;
        let act = |method: &str, path: String, body: Option<serde_json::Value>| {
            let app = &app;
            let method: reqwest::Method = method.parse().unwrap();
            async move {
                let mut r = app
                    .http
                    .request(method, app.url(&path))
                    .bearer_auth(ADMIN)
                    .header("x-trace-id", "staff.1");
                if let Some(body) = body {
                    r = r.json(&body);
                }
                let r = r.send().await.unwrap();
                let status = r.status().as_u16();
                (
                    status,
                    r.json::<serde_json::Value>().await.unwrap_or_default(),
                )
            }
        };
        let o1 = Some(serde_json::json!({"resource": "Observation/o1"}));
        assert_eq!(
            act("POST", "/admin/release".into(), o1.clone()).await.0,
            200
        );
        assert_eq!(act("POST", "/admin/hold".into(), o1).await.0, 200);
        let later = Some(serde_json::json!({"resource": "Observation/later"}));
        assert_eq!(act("POST", "/admin/hold".into(), later).await.0, 200);
        let explain = "/admin/explain?resource=Observation/o1".to_string();
        assert_eq!(act("GET", explain, None).await.0, 200);
        // A resource that moved to another client: a look at it names both (its answer shows
        // the versions of each).
        app.push_ok(&transaction(&[
            patient("p2"),
            observation("moved", "p2", "29463-7", "2025-01-01"),
        ]))
        .await;
        app.push_ok(&transaction(&[observation(
            "moved",
            "p1",
            "29463-7",
            "2025-01-01",
        )]))
        .await;
        let explain = "/admin/explain?resource=Observation/moved".to_string();
        assert_eq!(act("GET", explain, None).await.0, 200);
        for path in ["/admin/patients/p1/block", "/admin/patients/p1/unblock"] {
            let (status, body) = act("POST", path.into(), None).await;
            assert_eq!(status, 200, "{path}: {body}");
        }
        let user = format!("/admin/users/{}/h1", PORTAL.0);
        let reason = Some(serde_json::json!({"reason": "a test"}));
        assert_eq!(act("POST", format!("{user}/block"), reason).await.0, 200);
        assert_eq!(act("POST", format!("{user}/unblock"), None).await.0, 200);
        // Staff actions are not looks at the client's data for the holder's view.
        let (status, view) = h1.get("/fhir/AuditEvent?patient=p1").await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(view["entry"].as_array().map_or(0, Vec::len), 0, "{view:#}");
        let (_, links) = act("GET", "/admin/links?patient=p1".into(), None).await;
        let link = links["links"][0]["id"].as_str().unwrap().to_string();
        assert_eq!(
            act("DELETE", format!("/admin/links/{link}"), None).await.0,
            204
        );

        // Each is found by the client it touched, with the resource it was about.
        let (status, body) = act("GET", "/admin/audit?patient=p1&_count=1000".into(), None).await;
        assert_eq!(status, 200, "{body}");
        let recs = body["records"].as_array().unwrap();
        let staff: Vec<(&str, &str)> = recs
            .iter()
            .filter(|r| {
                r["client_id"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("admin"))
            })
            .map(|r| {
                (
                    r["route"].as_str().unwrap(),
                    r["resources"].as_str().unwrap_or(""),
                )
            })
            .collect();
        for expected in [
            ("/admin/activation-codes", ""),
            ("/admin/release", "Observation/o1"),
            ("/admin/hold", "Observation/o1"),
            ("/admin/explain", "Observation/o1"),
            ("/admin/patients/{id}/block", ""),
            ("/admin/patients/{id}/unblock", ""),
            ("/admin/links", ""),
            ("/admin/links/{id}", ""),
        ] {
            assert!(staff.contains(&expected), "{expected:?} in {staff:?}");
        }
        let release = recs
            .iter()
            .find(|r| r["route"] == "/admin/release")
            .unwrap();
        assert_eq!(release["trace_id"], "staff.1", "{release:#}");
        // A hold placed before the resource arrived names the resource, and no client.
        let recs = records(&app).await;
        let early = recs
            .iter()
            .find(|r| r.resources.as_deref() == Some("Observation/later"))
            .unwrap();
        assert_eq!(early.route, "/admin/hold");
        assert_eq!(early.patient, None);
        let moved = recs
            .iter()
            .find(|r| r.resources.as_deref() == Some("Observation/moved"))
            .unwrap();
        assert_eq!(moved.patient.as_deref(), Some("p1 p2"), "the newest first");
        // A block of a portal user names the user.
        for route in [
            "/admin/users/{client}/{user}/block",
            "/admin/users/{client}/{user}/unblock",
        ] {
            let r = recs.iter().find(|r| r.route == route).unwrap();
            assert_eq!(
                r.detail.as_deref(),
                Some(format!("portal user h1 of {}", PORTAL.0).as_str()),
                "{route}"
            );
        }
        assert_eq!(verified(&app).await, Verdict::Intact(recs.len() as u64));
    }
);

on_both!(
    a_record_names_the_clients_as_the_search_reads_them,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("o1", "p1", "29463-7", "2025-01-01"),
            json!({"resourceType": "Communication", "id": "c1", "status": "completed",
                   "subject": {"reference": "Patient/p1"}, "sent": "2025-01-01T10:00:00Z",
                   "payload": [{"contentString": "Uitleg"}]}),
        ]))
        .await;
        app.set_clock("2027-01-01T00:00:00Z").await;
        let holder = app.holder("h1", "p1").await;
        let member = app.member(&holder, "m1", "p1", &["metingen"], false).await;
        let stranger = app.user("stranger").await;
        let newest = async || records(&app).await.pop().unwrap();
        // A GET as a portal user, or without any credential.
        let status_as = async |who: Option<&User>, path: &str| -> u16 {
            match who {
                Some(u) => u.get(path).await.0,
                None => app
                    .http
                    .get(app.url(path))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            }
        };
        // Every form the search takes a client in, by a stranger, without credentials and by
        // the holder: each names p1.
        for path in [
            "/fhir/Observation?patient=http://elsewhere.test/fhir/Patient/p1",
            "/fhir/Observation?patient:Patient=p1",
            "/fhir/Observation?subject:Patient=Patient/p1",
            "/fhir/%4Fbservation?patient=p1",
            "/fhir/Patient?_id=p1",
            "/fhir/%50atient/p1",
            "/fhir/Patient/%70%31",
        ] {
            for who in [Some(&stranger), None, Some(&holder)] {
                let status = status_as(who, path).await;
                let rec = newest().await;
                assert_eq!(rec.status, i64::from(status), "{path}");
                assert_eq!(
                    rec.patient.as_deref(),
                    Some("p1"),
                    "{path} ({status}): {rec:?}"
                );
            }
        }
        // Made-up ids in front do not hide a client: past the first five, every id that is a
        // client (a Patient here) is named too; the made-up ones are not. A caller without
        // a credential names only clients there are.
        let real = |who: Option<&User>, named: &str| -> Option<String> {
            let words: Vec<&str> = named
                .split(' ')
                .filter(|w| who.is_some() || ["p1", "p2"].contains(w))
                .collect();
            (!words.is_empty()).then(|| words.join(" "))
        };
        let fakes: Vec<String> = (0..40).map(|i| format!("x{i}")).collect();
        let five = fakes[..5].join(" ");
        app.push_ok(&transaction(&[patient("p2")])).await; // p2: no one linked
        for (path, named) in [
            (
                format!("/fhir/Observation?patient={},p1", fakes.join(",")),
                format!("{five} p1"),
            ),
            (
                format!(
                    "/fhir/Observation?patient={}&subject=Patient/p1,p2",
                    fakes.join(",")
                ),
                format!("{five} p1 p2"),
            ),
            (
                format!("/fhir/Observation?patient={},p1", fakes[..5].join(",")),
                format!("{five} p1"),
            ),
            (
                format!("/fhir/Observation?patient={}", fakes.join(",")),
                five.clone(),
            ),
        ] {
            for who in [Some(&stranger), None, Some(&holder)] {
                status_as(who, &path).await;
                let rec = newest().await;
                assert_eq!(rec.patient, real(who, &named), "{path}: {rec:?}");
            }
        }
        // As many ids as a search takes are looked up; a query that names more is refused
        // before its handler runs.
        let many: Vec<String> = (0..3000).map(|i| format!("x{i}")).collect();
        let path = format!("/fhir/Observation?patient={},p1", many.join(","));
        assert_eq!(stranger.get(&path).await.0, 403);
        let rec = newest().await;
        assert_eq!(rec.patient, Some(format!("{five} p1")), "{rec:?}");
        let more: Vec<String> = (3000..3006).map(|i| format!("x{i}")).collect();
        let path = format!(
            "/fhir/Observation?patient={}&patient={},p1",
            many.join(","),
            more.join(",")
        );
        for who in [Some(&stranger), Some(&holder), None] {
            let (status, body) = match who {
                Some(u) => u.get(&path).await,
                None => {
                    let r = app.http.get(app.url(&path)).send().await.unwrap();
                    (r.status().as_u16(), r.json().await.unwrap())
                }
            };
            assert_eq!(status, 400, "{body}");
            assert_eq!(
                body["issue"][0]["details"]["coding"][0]["code"],
                "unknown-parameter"
            );
            // Refused before its credential is looked at: only clients there are are named.
            let rec = newest().await;
            assert_eq!((rec.status, rec.patient), (400, None));
        }
        let r = app
            .http
            .get(app.url("/admin/audit?patient=p2&outcome=failure&_count=1000"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = r.json().await.unwrap();
        let found = body["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["user_id"] == "stranger")
            .count();
        assert_eq!(found, 1, "{body:#}");

        // A HEAD runs the search as a GET does, and names what it names.
        for who in [Some(&stranger), None, Some(&holder)] {
            let mut r = app
                .http
                .head(app.url("/fhir/Observation?patient=x1,x2,x3,x4,x5,p1"));
            if let Some(u) = who {
                r = r.bearer_auth(&u.token).header("x-portal-user", &u.id);
            }
            let status = r.send().await.unwrap().status().as_u16();
            let rec = newest().await;
            assert_eq!(
                (rec.method.as_str(), rec.status),
                ("HEAD", i64::from(status))
            );
            assert_eq!(rec.patient, real(who, "x1 x2 x3 x4 x5 p1"), "{rec:?}");
        }
        // A refused read of one resource is an attempt on its client; a resource that is not
        // there names no one.
        for path in [
            "/fhir/Observation/o1",
            "/fhir/%4Fbservation/o1",
            "/fhir/Communication/c1",
            "/fhir/Observation/nope",
        ] {
            for who in [Some(&stranger), None] {
                let status = status_as(who, path).await;
                assert!(status >= 400, "{path}: {status}");
                let rec = newest().await;
                let owner = (!path.ends_with("nope")).then(|| "p1".to_string());
                assert_eq!(rec.patient, owner, "{path}: {rec:?}");
            }
        }
        // The client a request's body or the object it addresses belongs to is named, the
        // refused request's too.
        // An id as the portal API gives it (a string, or a number).
        let id_of = |v: &Value| match v {
            Value::String(id) => id.clone(),
            id => id.to_string(),
        };
        let (_, grants) = holder.get("/portal/grants?patient=p1").await;
        let grant = id_of(&grants["grants"][0]["id"]);
        assert_ne!(grant, "null", "{grants}");
        let (status, invitation) = holder
            .post(
                "/portal/invitations",
                &json!({"patient": "Patient/p1", "sections": ["metingen"], "name": "Jo",
                        "relationship": "SIS"}),
            )
            .await;
        assert_eq!(status, 201, "{invitation}");
        assert_eq!(newest().await.patient.as_deref(), Some("p1"));
        let (_, open) = holder.get("/portal/invitations?patient=p1").await;
        let invitation = id_of(&open["invitations"][0]["id"]);
        assert_ne!(invitation, "null", "{open}");
        let (status, task) = holder
            .post(
                "/fhir/Task",
                &json!({"resourceType": "Task", "status": "requested", "intent": "order",
                        "for": {"reference": "Patient/p1"},
                        "code": {"coding": [{"system": "urn:sluis:request", "code": "addition"}]},
                        "description": "graag aanvullen"}),
            )
            .await;
        assert_eq!(status, 201, "{task}");
        let task = task["id"].as_str().unwrap().to_string();
        let attempts: Vec<(&str, String, Option<Value>)> = vec![
            ("GET", format!("/fhir/Task/{task}"), None),
            (
                "POST",
                "/portal/invitations".into(),
                Some(
                    json!({"patient": "p1", "sections": ["metingen"], "name": "X",
                            "relationship": "SIS"}),
                ),
            ),
            (
                "PUT",
                "/portal/preferences".into(),
                Some(json!({"patient": "p1", "immediate_sections": []})),
            ),
            (
                "POST",
                "/fhir/Communication".into(),
                Some(
                    json!({"resourceType": "Communication", "status": "completed",
                            "subject": {"reference": "Patient/p1"},
                            "payload": [{"contentString": "hallo"}]}),
                ),
            ),
            (
                "PATCH",
                format!("/portal/grants/{grant}"),
                Some(json!({"can_post": true})),
            ),
            ("DELETE", format!("/portal/grants/{grant}"), None),
            ("DELETE", format!("/portal/invitations/{invitation}"), None),
        ];
        for (method, path, body) in &attempts {
            let mut r = app
                .http
                .request(method.parse().unwrap(), app.url(path))
                .bearer_auth(&stranger.token)
                .header("x-portal-user", &stranger.id);
            if let Some(b) = body {
                r = r.json(b);
            }
            let status = r.send().await.unwrap().status().as_u16();
            assert!(status >= 400, "{method} {path}: {status}");
            let rec = newest().await;
            assert_eq!(
                rec.patient.as_deref(),
                Some("p1"),
                "{method} {path}: {rec:?}"
            );
        }
        // A message a user sent, and an audit event, name their client when another reads
        // them and is refused.
        let (status, message) = holder
            .post(
                "/fhir/Communication",
                &json!({"resourceType": "Communication",
                        "subject": {"reference": "Patient/p1"},
                        "payload": [{"contentString": "hallo"}]}),
            )
            .await;
        assert_eq!(status, 201, "{message}");
        let message = message["id"].as_str().unwrap().to_string();
        let looked = records(&app)
            .await
            .into_iter()
            .rfind(|r| r.status == 200 && r.action == "read" && r.patient.as_deref() == Some("p1"))
            .unwrap()
            .seq;
        for path in [
            format!("/fhir/Communication/{message}"),
            format!("/fhir/AuditEvent/{looked}"),
        ] {
            for who in [Some(&stranger), Some(&member)] {
                let status = status_as(who, &path).await;
                assert!(status >= 400, "{path}: {status}");
                let rec = newest().await;
                assert_eq!(rec.patient.as_deref(), Some("p1"), "{path}: {rec:?}");
            }
        }
        // A redeemed code names its client.
        let linking: Vec<_> = records(&app)
            .await
            .into_iter()
            .filter(|r| r.route == "/portal/link")
            .collect();
        assert!(!linking.is_empty());
        assert!(
            linking.iter().all(|r| r.patient.as_deref() == Some("p1")),
            "{linking:?}"
        );
        // A write's query is not what it is about.
        for path in ["/fhir/Task?subject=p1", "/fhir/Communication?patient=p1"] {
            let r = app
                .http
                .post(app.url(path))
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
            assert_eq!(newest().await.patient, None, "POST {path}");
        }
        // A Consent read and search name the client and what they showed.
        let (status, bundle) = member.get("/fhir/Consent?patient=p1").await;
        assert_eq!(status, 200, "{bundle}");
        let id = bundle["entry"][0]["resource"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let rec = newest().await;
        assert_eq!(rec.patient.as_deref(), Some("p1"));
        assert!(
            rec.resources
                .as_deref()
                .is_some_and(|r| r.starts_with(&format!("Consent/{id}"))),
            "{rec:?}"
        );
        assert_eq!(member.get(&format!("/fhir/Consent/{id}")).await.0, 200);
        let rec = newest().await;
        assert_eq!(rec.patient.as_deref(), Some("p1"));
        assert_eq!(rec.resources, Some(format!("Consent/{id}")));

        // The portal's own objects, read by id and refused, name their client: a grant's
        // Consent and RelatedPerson, a message and a request read without a credential. One
        // that is not there names no one.
        let (_, me) = holder.get("/portal/me").await;
        let holder_link = me["clients"][0]["link"].as_str().unwrap().to_string();
        for (path, owner) in [
            (format!("/fhir/Consent/grant-{grant}"), Some("p1")),
            (
                format!("/fhir/RelatedPerson/sluis-link-{grant}"),
                Some("p1"),
            ),
            (
                format!("/fhir/RelatedPerson/sluis-link-{holder_link}"),
                Some("p1"),
            ),
            (format!("/fhir/Communication/{message}"), Some("p1")),
            (format!("/fhir/Task/{task}"), Some("p1")),
            ("/fhir/Consent/grant-987654".to_string(), None),
            ("/fhir/Consent/grant-x".to_string(), None),
            ("/fhir/RelatedPerson/sluis-link-987654".to_string(), None),
        ] {
            for who in [Some(&stranger), None] {
                let status = status_as(who, &path).await;
                assert!(status >= 400, "{path}: {status}");
                let rec = newest().await;
                assert_eq!(rec.patient.as_deref(), owner, "{path}: {rec:?}");
            }
        }
        // Refused before any handler (no credential, a method the route does not take, a body
        // that does not parse): what the path addresses names its client all the same.
        let odd = reqwest::Method::from_bytes("Z".repeat(5000).as_bytes()).unwrap();
        let attempts: Vec<(reqwest::Method, String, Option<&str>)> = vec![
            (
                reqwest::Method::GET,
                format!("/fhir/AuditEvent/{looked}"),
                None,
            ),
            (
                reqwest::Method::DELETE,
                format!("/fhir/AuditEvent/{looked}"),
                None,
            ),
            (
                reqwest::Method::GET,
                format!("/fhir/%41uditEvent/{looked}"),
                None,
            ),
            (
                reqwest::Method::DELETE,
                format!("/portal/grants/{grant}"),
                None,
            ),
            (
                reqwest::Method::PUT,
                format!("/portal/grants/{grant}"),
                None,
            ),
            (
                reqwest::Method::PATCH,
                format!("/portal/grants/{grant}"),
                Some("{nope"),
            ),
            (
                reqwest::Method::PATCH,
                format!("/portal/grants/{holder_link}"),
                Some("{\"can_post\":\"yes\"}"),
            ),
            (
                reqwest::Method::DELETE,
                format!("/portal/invitations/{invitation}"),
                None,
            ),
            (
                reqwest::Method::GET,
                format!("/portal/invitations/{invitation}"),
                None,
            ),
            (
                reqwest::Method::DELETE,
                "/ingest/ons/Observation/o1".to_string(),
                None,
            ),
            (
                reqwest::Method::PUT,
                "/ingest/ons/Patient/p1".to_string(),
                Some("{}"),
            ),
            (
                reqwest::Method::GET,
                "/ingest/ons/Observation/o1".to_string(),
                None,
            ),
            (odd.clone(), "/fhir/Patient/p1".to_string(), None),
        ];
        for (method, path, body) in &attempts {
            for who in [Some(&stranger), None] {
                let mut r = app.http.request(method.clone(), app.url(path));
                if let Some(u) = who {
                    r = r.bearer_auth(&u.token).header("x-portal-user", &u.id);
                }
                if let Some(b) = body {
                    r = r
                        .header("content-type", "application/json")
                        .body(b.to_string());
                }
                let status = r.send().await.unwrap().status().as_u16();
                assert!(status >= 400, "{path}: {status}");
                let rec = newest().await;
                assert_eq!(rec.status, i64::from(status));
                assert_eq!(
                    rec.patient.as_deref(),
                    Some("p1"),
                    "{path} ({status}): {rec:?}"
                );
                // A made-up method of any length is kept short.
                assert!(rec.method.len() <= 16, "{}", rec.method.len());
            }
        }
        for path in [
            "/fhir/AuditEvent/987654321",
            "/fhir/AuditEvent/0",
            "/portal/grants/987654",
            "/portal/invitations/nope",
            "/ingest/ons/Observation/nope",
            "/ingest/ons/Nothing/o1",
        ] {
            let status = status_as(None, path).await;
            assert!(status >= 400, "{path}: {status}");
            assert_eq!(newest().await.patient, None, "{path}");
        }

        // A search by `_id` names the clients of the resources it asked for, found or not:
        // another client's holder gets an empty page, a stranger a refusal.
        let other = app.holder("h2", "p2").await;
        let mut p3 = patient("p3");
        p3["identifier"][0]["value"] = json!("999900003");
        app.push_ok(&transaction(&[p3])).await;
        let (_, consents) = holder.get("/fhir/Consent?patient=p1").await;
        assert!(
            consents
                .to_string()
                .contains(&format!("sluis-link-{grant}"))
        );
        let by_link = format!("/fhir/RelatedPerson?_id=sluis-link-{grant}");
        let by_message = format!("/fhir/Communication?_id=x1,{message}");
        let by_request = format!("/fhir/Task?_id=x1,{task}");
        for (path, owner) in [
            (
                "/fhir/Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|999900003",
                Some("p3"),
            ),
            ("/fhir/Patient?identifier=x,999900003", Some("p3")),
            ("/fhir/Patient?identifier=http://elders|999900003", None),
            ("/fhir/Patient?identifier=999900004", None),
            (by_link.as_str(), Some("p1")),
            (by_message.as_str(), Some("p1")),
            (by_request.as_str(), Some("p1")),
            ("/fhir/Observation?_id=o1", Some("p1")),
            ("/fhir/Observation?_id=nope,o1&_count=5", Some("p1")),
            ("/fhir/Communication?_id=c1", Some("p1")),
            ("/fhir/%43ommunication?_id=c1", Some("p1")),
            ("/fhir/Observation?_id=nope", None),
            ("/fhir/Practitioner?_id=o1", None),
        ] {
            for who in [Some(&other), Some(&stranger), None] {
                let status = status_as(who, path).await;
                let rec = newest().await;
                assert_eq!(rec.status, i64::from(status));
                let named: Option<String> = rec.patient.clone().map(|p| {
                    p.split(' ')
                        .filter(|c| *c != "p2")
                        .collect::<Vec<_>>()
                        .join(" ")
                });
                assert_eq!(
                    named.as_deref().filter(|p| !p.is_empty()),
                    owner,
                    "{path} ({status}): {rec:?}"
                );
            }
        }

        // As many ids as a search takes are looked up; more are refused unread.
        let ids = |n: usize| {
            (0..n)
                .map(|i| format!("x{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let path = format!("/fhir/Observation?_id={}&_id=o1", ids(2999));
        assert_eq!(status_as(None, &path).await, 401);
        assert_eq!(newest().await.patient.as_deref(), Some("p1"));
        let path = format!("/fhir/Observation?_id={}&_id=o1", ids(3000));
        assert_eq!(status_as(None, &path).await, 400);
        // A path past a resource's that no route has names the resource's client.
        for path in [
            "/fhir/Patient/p1/_history",
            "/fhir/Observation/o1/_history/1",
            "/fhir/Observation/o1/",
            "/fhir/Observation/o1/$everything",
        ] {
            for who in [Some(&stranger), None] {
                assert_eq!(status_as(who, path).await, 404, "{path}");
                assert_eq!(newest().await.patient.as_deref(), Some("p1"), "{path}");
            }
        }
        assert_eq!(
            status_as(None, "/fhir/Observation/nope/_history").await,
            404
        );
        assert_eq!(newest().await.patient, None);
        // Ids the portal writes in one form name no one in another.
        for path in [
            format!("/fhir/Consent/grant-0{grant}"),
            format!("/fhir/RelatedPerson/sluis-link-0{grant}"),
            format!("/fhir/AuditEvent/0{looked}"),
        ] {
            status_as(None, &path).await;
            assert_eq!(newest().await.patient, None, "{path}");
        }

        // A method the route does not take, on a client's own path: the client is named.
        for path in [
            "/fhir/Patient/p1".to_string(),
            format!("/fhir/Task/{task}"),
            "/fhir/Observation/o1".to_string(),
        ] {
            for who in [&stranger, &holder] {
                let r = app
                    .http
                    .put(app.url(&path))
                    .bearer_auth(&who.token)
                    .header("x-portal-user", &who.id)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 405, "PUT {path}");
                let rec = newest().await;
                assert_eq!(rec.patient.as_deref(), Some("p1"), "PUT {path}: {rec:?}");
            }
        }
        let r = app
            .http
            .put(app.url("/fhir/Patient/x9"))
            .bearer_auth(&stranger.token)
            .header("x-portal-user", &stranger.id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
        assert_eq!(newest().await.patient, None, "a made-up client");
        // Another role's link addressed as a grant names its client.
        let r = app
            .http
            .delete(app.url(&format!("/portal/grants/{holder_link}")))
            .bearer_auth(&stranger.token)
            .header("x-portal-user", &stranger.id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "the stranger is linked to no one");
        assert_eq!(newest().await.patient.as_deref(), Some("p1"));
        // A code refused for the user's age names its client all the same.
        let (status, code) = app
            .admin_post(
                "/admin/activation-codes",
                &json!({"patient": "Patient/p1", "relationship": "self"}),
            )
            .await;
        assert_eq!(status, 201, "{code}");
        let young = app.user("young").await;
        let (status, body) = young
            .post(
                "/portal/link",
                &json!({"code": code["code"], "birth_date": "2020-01-01"}),
            )
            .await;
        assert_eq!(status, 403, "{body}");
        let rec = newest().await;
        assert_eq!(
            (rec.reason.as_deref(), rec.patient.as_deref()),
            (Some("under-age"), Some("p1")),
            "{rec:?}"
        );
        // And one refused because the user is blocked.
        let (status, body) = app
            .admin_post(
                &format!("/admin/users/{}/{}/block", PORTAL.0, member.id),
                &json!({"reason": "onderzoek"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = member
            .post(
                "/portal/link",
                &json!({"code": code["code"], "birth_date": "1950-01-01"}),
            )
            .await;
        assert_eq!(status, 403, "{body}");
        let rec = newest().await;
        assert_eq!(
            (rec.reason.as_deref(), rec.patient.as_deref()),
            (Some("user-blocked"), Some("p1")),
            "{rec:?}"
        );
        assert!(matches!(verified(&app).await, Verdict::Intact(_)));
    }
);
