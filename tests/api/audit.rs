//! The audit trail (issue 21): a record for every route's requests, refusals included; the
//! hash chain, the database's refusal to change records, and `sluis audit verify`.

use crate::helpers::*;
use crate::on_both;
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

async fn records(db: &Db) -> Vec<sluis::store::audit::Stored> {
    sluis::store::audit::after(db, 0, 1_000_000).await.unwrap()
}

on_both!(
    every_route_writes_a_record_refusals_included,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let routes = routes();
        assert!(routes.len() >= 30, "{routes:?}");
        let unrecorded = ["/healthz", "/readyz", "/metrics", "/fhir/metadata"];
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
                let r = app
                    .http
                    .request(method.parse().unwrap(), app.url(&path))
                    .header("x-request-id", format!("walk-{method}-{n}"))
                    .header("x-correlation-id", "walk")
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let found = records(&app.state.db)
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
        // A portal read that succeeds: who, which client, what was returned.
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("o1", "p1", "29463-7", "2025-01-01"),
        ]))
        .await;
        app.set_clock("2027-01-01T00:00:00Z").await;
        let user = app.holder("holder-1", "p1").await;
        let (status, body) = user.get("/fhir/Observation?patient=p1").await;
        assert_eq!(status, 200, "{body}");
        let recs = records(&app.state.db).await;
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
        assert_eq!(
            verify(&app.state.db).await.unwrap(),
            Verdict::Intact(recs.len() as u64)
        );
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
        for tampering in ["update", "delete", "insert", "rehash"] {
            let app = TestApp::spawn(b.clone()).await;
            for i in 0..6 {
                let r = app
                    .http
                    .get(app.url(&format!("/fhir/Patient/p{i}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 401);
            }
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
            unguard(db).await;
            if tampering == "rehash" {
                // Record 3 changed with a hash made to fit, and record 4 pointed at it: the
                // hash of 4 covers the hash it follows, so 4 no longer fits.
                let mut r = records(db).await.remove(2);
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

/// `sluis audit verify` on the command line: exit 0 on an intact chain, 1 naming the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_verifies_the_chain() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for _ in 0..3 {
        app.http
            .get(app.url("/fhir/Patient/p1"))
            .send()
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluis.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n[admin]\ntoken = \"a-long-admin-token\"\n",
            app.database_url
        ),
    )
    .unwrap();
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluis"))
            .args(["audit", "verify", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("intact: 3 records"), "{out}");
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
        let (break_it, mend_it) = audit_breaker(&app.state.db);
        app.state.db.execute(&Sql::new(break_it)).await.unwrap();
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
        // What is not recorded still answers.
        let r = app.http.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        app.state.db.execute(&Sql::new(mend_it)).await.unwrap();
        let r = app
            .http
            .get(app.url("/fhir/Patient/p1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(verify(&app.state.db).await.unwrap(), Verdict::Intact(1));
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
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluis"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
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
        let db = Db::connect(&url, 1).await.unwrap();
        let recorded = records(&db)
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
