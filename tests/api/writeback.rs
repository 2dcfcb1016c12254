//! Delivery to the record system (issue 23): an approved message reaches the source's
//! writeback endpoint exactly once, also when the record system fails for a while, answers 500
//! after storing, or the adapter stops in between, and with two processes on one database; a
//! rejected one never does.

use crate::helpers::*;
use crate::on_both;
use crate::source::{Fault, RecordSystem};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Source `ons` writing back to `rs`, with short waits.
pub fn writeback(rs: &RecordSystem) -> String {
    format!(
        "[[sources]]\nid = \"ons\"\n[sources.writeback]\nbase_url = \"{}\"\ntimeout = \"PT2S\"\n\
         backoff = \"PT1S\"\nmax_backoff = \"PT2S\"\nlease = \"PT4S\"\n",
        rs.base
    )
}

fn text(words: &str) -> Value {
    json!({"resourceType": "Communication",
           "subject": {"reference": "Patient/p1"},
           "payload": [{"contentString": words}]})
}

/// Posts a message as `u`; its id.
pub async fn post(u: &User, words: &str) -> String {
    let (status, body) = u.post("/fhir/Communication", &text(words)).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

pub async fn moderate(app: &TestApp, id: &str, verdict: &str) {
    let body = if verdict == "reject" {
        json!({"reason": "niet over de zorg"})
    } else {
        json!({})
    };
    let (status, answer) = app
        .admin_post(&format!("/admin/moderation/{id}/{verdict}"), &body)
        .await;
    assert_eq!(status, 200, "{answer}");
}

/// What `/admin/sources` says of `ons`'s writeback.
pub async fn delivery(app: &TestApp) -> Value {
    let r = app
        .http
        .get(app.url("/admin/sources"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "ons")
        .unwrap()["writeback"]
        .clone()
}

/// Waits until `done` holds (at most `secs`).
pub async fn until(secs: u64, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "waited {secs}s for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn key(id: &str) -> String {
    format!("urn:sluis:message|{id}")
}

on_both!(
    an_approved_message_reaches_the_record_system_once_a_rejected_one_never,
    |b| async move {
        let rs = RecordSystem::start().await;
        let app = TestApp::spawn_with(b, &writeback(&rs)).await;
        app.push_ok(&transaction(&[patient("p1")])).await;
        let holder = app.holder("h", "p1").await;
        let first = post(&holder, "eerste").await;
        let second = post(&holder, "tweede").await;
        let refused = post(&holder, "niet relevant").await;
        // Unavailable twice, then stored but answered 500: retried until it is accepted,
        // and the retry after the unclear answer finds the copy instead of adding one.
        rs.fail_next(&[
            Fault::Status(503),
            Fault::Status(503),
            Fault::AfterStore(500),
        ]);
        moderate(&app, &first, "approve").await;
        moderate(&app, &refused, "reject").await;
        moderate(&app, &second, "approve").await;
        until(30, "both approved messages delivered", async || {
            delivery(&app).await["delivered"] == 2
        })
        .await;
        for id in [&first, &second] {
            let copies = rs.with_identifier("Communication", &key(id));
            assert_eq!(copies.len(), 1, "{id}: {copies:?}");
            let c = &copies[0];
            assert_eq!(c["status"], "completed");
            assert_eq!(c["subject"]["reference"], "Patient/p1");
            assert!(c["meta"].get("tag").is_none(), "no release tag: {c}");
        }
        assert!(
            rs.with_identifier("Communication", &key(&refused))
                .is_empty()
        );
        assert!(rs.requests().len() >= 5, "tries: {}", rs.requests().len());
        // The state is shown: nothing waits, the failures are counted in /metrics.
        let d = delivery(&app).await;
        assert_eq!(
            (d["pending"].as_i64(), d["failing"].as_i64()),
            (Some(0), Some(0)),
            "{d}"
        );
        assert_eq!(d["configured"], true);
        assert!(d["last_delivered"].is_string(), "{d}");
        let metrics = app
            .http
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("sluis_outbox_deliveries_total")
                    && l.contains("outcome=\"failed\"")),
            "{metrics}"
        );
        assert!(
            metrics.contains("sluis_outbox_pending{source=\"ons\"} 0"),
            "{metrics}"
        );
        // Nothing is sent again afterwards.
        let writes = rs.writes();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(rs.writes(), writes);
    }
);

on_both!(a_delivery_survives_a_crash_and_a_restart, |b| async move {
    let rs = RecordSystem::start().await;
    let extra = writeback(&rs);
    let app = TestApp::spawn_with(b, &extra).await;
    app.push_ok(&transaction(&[patient("p1")])).await;
    let holder = app.holder("h", "p1").await;
    let failed = post(&holder, "terwijl het dossier plat ligt").await;
    let hanging = post(&holder, "terwijl het dossier traag is").await;
    // Down: the message waits in the outbox, with the error shown.
    rs.set_down(Some(503));
    moderate(&app, &failed, "approve").await;
    until(10, "a failed try recorded", async || {
        delivery(&app).await["failing"] == 1
    })
    .await;
    let d = delivery(&app).await;
    assert!(d["last_error"].as_str().unwrap().contains("503"), "{d}");
    // Up but slow: the next message is taken and under way when the adapter crashes.
    rs.set_down(None);
    rs.set_delay(Duration::from_millis(1500));
    moderate(&app, &hanging, "approve").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    app.crash().await;
    rs.set_delay(Duration::ZERO);
    rs.fail_next(&[Fault::AfterStore(500)]);
    // A new process on the same database delivers both, once each.
    let again = app.restart_with(&extra, T0).await;
    until(30, "both delivered after the restart", async || {
        delivery(&again).await["delivered"] == 2
    })
    .await;
    for id in [&failed, &hanging] {
        assert_eq!(
            rs.with_identifier("Communication", &key(id)).len(),
            1,
            "{id}"
        );
    }
    again.stop().await;
});

/// `sluis serve` as a process of its own on `database_url`, with `extra` config; it is killed
/// when dropped.
pub struct Process {
    child: std::process::Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    pub async fn start(database_url: &str, extra: &str) -> Self {
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
                database_url,
                &format!(
                    "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_base_url = \"http://sluis.test\"\n{extra}"
                ),
            ),
        )
        .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_sluis"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        until(30, "the second process is ready", async || {
            http.get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        Self {
            child,
            base,
            _dir: dir,
        }
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.admin(reqwest::Method::POST, path, body).await
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: &Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

on_both!(two_processes_deliver_each_message_once, |b| async move {
    let rs = RecordSystem::start().await;
    let extra = writeback(&rs);
    let one = TestApp::spawn_with(b, &extra).await;
    // The other is the real binary, in a process of its own, on the same database.
    let two = Process::start(&one.database_url, &extra).await;
    one.push_ok(&transaction(&[patient("p1")])).await;
    let holder = one.holder("h", "p1").await;
    // Found by attacking: a process sent what it had claimed one after the other, for
    // longer than its claim lasted, and the other process took the rest over meanwhile.
    // With a slow record system the messages take longer to send than a claim lasts
    // (PT4S): each is still sent once.
    rs.set_delay(Duration::from_millis(400));
    let mut ids = Vec::new();
    for round in 0..2 {
        let mut batch = Vec::new();
        for i in 0..10 {
            batch.push(post(&holder, &format!("bericht {round}-{i}")).await);
        }
        // Approved through both processes, so both find work at once.
        for (i, id) in batch.iter().enumerate() {
            if i % 2 == 0 {
                moderate(&one, id, "approve").await;
            } else {
                let (status, body) = two
                    .admin_post(&format!("/admin/moderation/{id}/approve"), &json!({}))
                    .await;
                assert_eq!(status, 200, "{body}");
            }
        }
        ids.extend(batch);
    }
    until(60, "every message delivered", async || {
        delivery(&one).await["delivered"] == ids.len()
    })
    .await;
    for id in &ids {
        assert_eq!(
            rs.with_identifier("Communication", &key(id)).len(),
            1,
            "{id}"
        );
    }
    // Each stored by one send: no process sent what the other had claimed.
    assert_eq!(rs.writes(), ids.len());
    drop(two);
});

#[tokio::test]
async fn writeback_config_is_checked() {
    let problems = sluis::config::Config::from_toml(
        &config_text(
            "sqlite://x.db",
            "[[sources]]\nid = \"ons\"\n[sources.writeback]\nbase_url = \"ftp://user:pw@ehr\"\n\
             timeout = \"PT30S\"\nlease = \"PT10S\"\nbackoff = \"PT0S\"\nmax_backoff = \"soon\"\n",
        ),
        "test.toml",
        std::iter::empty(),
    )
    .unwrap_err()
    .to_string();
    for key in [
        "sources[1].writeback.base_url",
        "sources[1].writeback.lease",
        "sources[1].writeback.backoff",
        "sources[1].writeback.max_backoff",
    ] {
        assert!(problems.contains(key), "{key}: {problems}");
    }
}

on_both!(
    the_record_systems_copy_coming_back_is_shown_once,
    |b| async move {
        let rs = RecordSystem::start().await;
        let app = TestApp::spawn_with(b, &writeback(&rs)).await;
        app.push_ok(&transaction(&[patient("p1")])).await;
        let holder = app.holder("h", "p1").await;
        let id = post(&holder, "komt terug").await;
        moderate(&app, &id, "approve").await;
        until(30, "delivered", async || {
            delivery(&app).await["delivered"] == 1
        })
        .await;
        let (_, found) = holder.get("/fhir/Communication?patient=p1").await;
        assert_eq!(entry_ids(&found), vec![id.as_str()], "{found}");
        let mut copy = rs.with_identifier("Communication", &key(&id)).remove(0);
        copy["meta"] = json!({"tag": [{"system": "urn:sluis:release", "code": "explained"}]});
        let copy_id = copy["id"].as_str().unwrap().to_string();
        // Another source sending a copy does not take the message away.
        let mut forged = copy.clone();
        forged["id"] = json!("forged-copy");
        let token = app.token(("other-push", "other-push-secret-1")).await;
        let r = app
            .http
            .post(app.url("/ingest/other"))
            .bearer_auth(token)
            .json(&transaction(&[forged]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (_, found) = holder.get("/fhir/Communication?patient=p1").await;
        assert!(entry_ids(&found).contains(&id), "{found}");
        // A copy from the right source about another client withdraws nothing (found by
        // attacking).
        app.push_ok(&transaction(&[patient("p2")])).await;
        let mut elsewhere = copy.clone();
        elsewhere["id"] = json!("copy-about-p2");
        elsewhere["subject"] = json!({"reference": "Patient/p2"});
        app.push_ok(&transaction(&[elsewhere])).await;
        let (_, found) = holder.get("/fhir/Communication?patient=p1").await;
        assert!(entry_ids(&found).contains(&id), "{found}");
        // The record system's own copy (pushed here; pulled alike), twice: the message is
        // shown once, as the record system keeps it.
        for _ in 0..2 {
            app.push_ok(&transaction(&[copy.clone()])).await;
        }
        let (_, found) = holder.get("/fhir/Communication?patient=p1").await;
        let shown = entry_ids(&found);
        assert!(
            shown.contains(&copy_id) && !shown.contains(&id),
            "{shown:?}"
        );
        // A reply of the care team points at it.
        let reply = json!({"resourceType": "Communication", "id": "reply-1", "status": "completed",
            "meta": {"tag": [{"system": "urn:sluis:release", "code": "explained"}]},
            "subject": {"reference": "Patient/p1"},
            "inResponseTo": [{"reference": format!("Communication/{copy_id}")}],
            "payload": [{"contentString": "Dank voor uw bericht."}]});
        app.push_ok(&transaction(&[reply])).await;
        let (_, found) = holder.get("/fhir/Communication/reply-1").await;
        assert_eq!(
            found["inResponseTo"][0]["reference"],
            format!("Communication/{copy_id}")
        );
        // The sender still reads their own message.
        let (status, own) = holder.get(&format!("/fhir/Communication/{id}")).await;
        assert_eq!(
            (status, &own["status"]),
            (200, &json!("completed")),
            "{own}"
        );
    }
);

on_both!(
    a_body_changed_while_it_was_sent_is_sent_again,
    |b| async move {
        use sluis::store::outbox;
        let app = TestApp::spawn(b).await;
        let db = &app.state.db;
        let item = |body: &'static str| outbox::NewItem {
            key: "request:r1",
            source: "ons",
            patient_id: "p1",
            resource_type: "Task",
            identifier: "urn:sluis:request|r1",
            method: "update",
            body,
            at: 1,
        };
        outbox::put(db, &item("{\"status\":\"requested\"}"))
            .await
            .unwrap();
        let claimed = outbox::claim(db, "ons", "me", 10, 1_000_000, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        // Another process cannot take it while the claim lasts.
        assert!(
            outbox::claim(db, "ons", "other", 20, 1_000_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Decided while the first body was under way: the new body is sent, at once.
        outbox::put(db, &item("{\"status\":\"rejected\"}"))
            .await
            .unwrap();
        assert!(
            !outbox::delivered(db, &claimed[0], "me", None, 30)
                .await
                .unwrap(),
            "the older body does not count as delivered"
        );
        let again = outbox::claim(db, "ons", "other", 40, 1_000_000, 10)
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert!(again[0].body.contains("rejected"));
        assert!(
            outbox::delivered(db, &again[0], "other", None, 50)
                .await
                .unwrap()
        );
        assert_eq!(
            outbox::delivery(db, "request:r1")
                .await
                .unwrap()
                .unwrap()
                .state,
            "delivered"
        );
        // The same body again changes nothing.
        outbox::put(db, &item("{\"status\":\"rejected\"}"))
            .await
            .unwrap();
        assert_eq!(
            outbox::delivery(db, "request:r1")
                .await
                .unwrap()
                .unwrap()
                .state,
            "delivered"
        );
        // A claim that ran out is taken over.
        outbox::put(
            db,
            &outbox::NewItem {
                key: "message:m1",
                identifier: "urn:sluis:message|m1",
                ..item("{}")
            },
        )
        .await
        .unwrap();
        assert_eq!(
            outbox::claim(db, "ons", "me", 60, 100, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            outbox::claim(db, "ons", "other", 101, 1_000, 10)
                .await
                .unwrap()
                .len(),
            1
        );
    }
);

// Found by attacking: a send the record system applied after sluis had stopped waiting for it
// overwrote the decision sent since.
on_both!(
    a_send_applied_late_does_not_overwrite_the_decision,
    |b| async move {
        let rs = RecordSystem::start().await;
        let app = TestApp::spawn_with(b, &writeback(&rs)).await;
        app.push_ok(&transaction(&[patient("p1")])).await;
        let holder = app.holder("h", "p1").await;
        // The request's first send: the lookup is answered at once, the create only after
        // sluis gave up waiting (3 s, its timeout is 2 s), and then stored.
        rs.fail_next(&[Fault::Pass, Fault::Slow(Duration::from_secs(3))]);
        let (status, task) = holder
            .post(
                "/fhir/Task",
                &json!({"resourceType": "Task", "for": {"reference": "Patient/p1"},
                    "code": {"coding": [{"system": "urn:sluis:request", "code": "addition"}]},
                    "description": "graag de allergie erbij"}),
            )
            .await;
        assert_eq!(status, 201, "{task}");
        let id = task["id"].as_str().unwrap().to_string();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, body) = app
            .admin_post(
                &format!("/admin/requests/{id}/decide"),
                &json!({"outcome": "rejected", "reason": "staat er al in"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let identifier = format!("urn:sluis:request|{id}");
        until(30, "the decision delivered", async || {
            rs.with_identifier("Task", &identifier)
                .first()
                .is_some_and(|t| t["status"] == "rejected")
        })
        .await;
        // The late create has landed by now, and changed nothing.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let copies = rs.with_identifier("Task", &identifier);
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_eq!(
            copies[0]["status"],
            "rejected",
            "{:?}",
            rs.history_of("Task", &identifier)
        );
        let (_, one) = {
            let r = app
                .http
                .get(app.url(&format!("/admin/requests/{id}")))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        };
        assert_eq!(one["delivery"], "delivered", "{one}");
    }
);

// Found by attacking: a token endpoint that failed was asked every second, also with nothing
// to send, and the items it held up showed no error.
on_both!(
    a_failing_token_endpoint_shows_and_is_asked_with_backoff_only_when_something_waits,
    |b| async move {
        use crate::source::Auth;
        let rs = RecordSystem::start().await;
        rs.set_auth(Auth::Secret {
            client_id: "sluis".into(),
            secret: "the-right-secret-42".into(),
        });
        let extra = format!(
            "{}auth = {{ method = \"client_secret\", token_url = \"{}\", client_id = \"sluis\", secret = \"not-the-secret-17\" }}\n",
            writeback(&rs),
            rs.token_url
        );
        let app = TestApp::spawn_with(b, &extra).await;
        app.push_ok(&transaction(&[patient("p1")])).await;
        let holder = app.holder("h", "p1").await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            rs.token_requests(),
            0,
            "nothing to send, no token asked for"
        );
        let id = post(&holder, "met een fout token").await;
        moderate(&app, &id, "approve").await;
        until(10, "the failure shown", async || {
            delivery(&app).await["failing"] == 1
        })
        .await;
        let d = delivery(&app).await;
        assert!(d["last_error"].as_str().unwrap().contains("token"), "{d}");
        // With backoff (1 s doubling to 2 s): a few tries in 4 s, not one a second or more.
        let before = rs.token_requests();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let tries = rs.token_requests() - before;
        assert!((1..=4).contains(&tries), "{tries} token requests in 4 s");
        // The endpoint takes the secret again: the message goes.
        rs.set_auth(Auth::Secret {
            client_id: "sluis".into(),
            secret: "not-the-secret-17".into(),
        });
        until(15, "delivered once the token comes", async || {
            delivery(&app).await["delivered"] == 1
        })
        .await;
        assert_eq!(rs.with_identifier("Communication", &key(&id)).len(), 1);
    }
);
