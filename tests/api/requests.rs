//! Correction requests (issue 23, R14): the holder only asks; what a request may hold; due
//! within 30 days at most; overdue ones listed first; decided once, a rejection with its
//! reason, which the holder reads; delivered to the record system; in the audit trail.

use crate::helpers::*;
use crate::on_both;
use crate::source::RecordSystem;
use crate::writeback::{until, writeback};
use serde_json::{Value, json};

fn ask(code: &str, focus: Option<&str>, words: &str) -> Value {
    let mut t = json!({"resourceType": "Task", "status": "requested", "intent": "order",
        "for": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "urn:sluis:request", "code": code}]},
        "description": words});
    if let Some(f) = focus {
        t["focus"] = json!({"reference": f});
    }
    t
}

fn element(outcome: &Value) -> String {
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["expression"][0].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn admin_get(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .http
        .get(app.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

on_both!(
    only_the_holder_asks_and_a_request_names_what_it_is_about,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            patient("p2"),
            appointment("a1", "p1", "2026-03-10T10:00:00Z"),
            appointment("a2", "p2", "2026-03-10T10:00:00Z"),
            // Held back by the explanation delay: not readable yet.
            observation("o1", "p1", "8867-4", "2026-03-01T10:00:00Z"),
        ]))
        .await;
        let holder = app.holder("h", "p1").await;
        let other = app.holder("h2", "p2").await;
        let member = app
            .member(&holder, "m", "p1", &["agenda", "berichten"], true)
            .await;
        // A member, even one who may post, is not the holder.
        let (status, body) = member
            .post(
                "/fhir/Task",
                &ask("correction", Some("Appointment/a1"), "x"),
            )
            .await;
        assert_eq!((status, reason(&body)), (403, "not-holder"), "{body}");
        // Not linked at all.
        let (status, body) = other.post("/fhir/Task", &ask("addition", None, "x")).await;
        assert_eq!((status, reason(&body)), (403, "not-linked"), "{body}");
        // Bad requests name their element.
        let mut bad = ask("correction", Some("Appointment/a1"), "x");
        bad["code"]["coding"][0]["system"] = json!("http://example.org");
        for (body, at) in [
            (bad, "Task.code"),
            (ask("herschrijven", None, "x"), "Task.code"),
            (
                ask("correction", Some("Appointment/a1"), "  "),
                "Task.description",
            ),
            (ask("correction", None, "x"), "Task.focus"),
            (
                ask("correction", Some("Appointment/a1"), &"x".repeat(10_001)),
                "Task.description",
            ),
            (
                {
                    let mut t = ask("addition", None, "x");
                    t["owner"] = json!({"reference": "Organization/o"});
                    t
                },
                "Task.owner",
            ),
            (
                {
                    let mut t = ask("addition", None, "x");
                    t["for"] = json!({"reference": "Group/g"});
                    t
                },
                "Task.for",
            ),
        ] {
            let (status, outcome) = holder.post("/fhir/Task", &body).await;
            assert_eq!(status, 400, "{body}: {outcome}");
            assert!(element(&outcome).contains(at), "{at}: {outcome}");
        }
        // The resource concerned must be one of this client's the holder can read now: another
        // client's, one held back and one that does not exist are refused alike.
        let mut refusals = Vec::new();
        for focus in [
            "Appointment/a2",
            "Observation/o1",
            "Observation/none",
            "Nonsense/x",
        ] {
            let (status, outcome) = holder
                .post("/fhir/Task", &ask("erasure", Some(focus), "weg ermee"))
                .await;
            assert_eq!(status, 400, "{focus}: {outcome}");
            assert_eq!(element(&outcome), "Task.focus");
            refusals.push(
                outcome["issue"][0]["diagnostics"]
                    .as_str()
                    .unwrap()
                    .replace(focus, "…"),
            );
        }
        refusals.dedup();
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        // A sound one: 201, requested, due 30 days on.
        let (status, task) = holder
            .post(
                "/fhir/Task",
                &ask("correction", Some("Appointment/a1"), "de tijd klopt niet"),
            )
            .await;
        assert_eq!(status, 201, "{task}");
        assert_eq!(task["status"], "requested");
        assert_eq!(task["restriction"]["period"]["end"], "2026-04-01T09:00:00Z");
        assert_eq!(task["focus"]["reference"], "Appointment/a1");
        let id = task["id"].as_str().unwrap().to_string();
        // The holder reads it; nobody else does.
        let (status, found) = holder.get("/fhir/Task?patient=p1").await;
        assert_eq!(status, 200);
        assert_eq!(found["entry"].as_array().unwrap().len(), 1, "{found}");
        let (status, body) = member.get("/fhir/Task?patient=p1").await;
        assert_eq!((status, reason(&body)), (403, "not-holder"));
        assert_eq!(member.get(&format!("/fhir/Task/{id}")).await.0, 404);
        assert_eq!(other.get(&format!("/fhir/Task/{id}")).await.0, 404);
        assert_eq!(holder.get(&format!("/fhir/Task/{id}")).await.0, 200);
        // Without `patient`: the record systems' own Tasks, which the shipped mappings do not
        // serve.
        let (status, found) = holder.get("/fhir/Task").await;
        assert_eq!((status, &found["total"]), (200, &json!(0)), "{found}");
        let (status, _) = holder.get("/fhir/Task?patient=Group/x").await;
        assert_eq!(status, 400);
        let (status, _) = holder.get("/fhir/Task?patient=p1&_count=0").await;
        assert_eq!(status, 400);
        // A retry with the same Idempotency-Key gets the first request, not a second.
        let keyed = async || {
            let r = holder
                .http
                .post(format!("{}/fhir/Task", holder.base))
                .bearer_auth(&holder.token)
                .header("x-portal-user", &holder.id)
                .header("idempotency-key", "vraag-1")
                .json(&ask("addition", None, "graag mijn allergie erbij"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        };
        let (first, task) = keyed().await;
        let (again, same) = keyed().await;
        assert_eq!((first, again), (201, 200));
        assert_eq!(task["id"], same["id"]);
        let (_, found) = holder.get("/fhir/Task?patient=p1").await;
        assert_eq!(found["entry"].as_array().unwrap().len(), 2, "{found}");
    }
);

on_both!(
    deadlines_and_reasons_are_kept_and_the_holder_reads_the_decision,
    |b| async move {
        let rs = RecordSystem::start().await;
        let app = TestApp::spawn_with(b, &writeback(&rs)).await;
        app.push_ok(&transaction(&[patient("p1")])).await;
        let holder = app.holder("h", "p1").await;
        let asked = async |holder: &User, words: &str| {
            let (status, task) = holder
                .post("/fhir/Task", &ask("addition", None, words))
                .await;
            assert_eq!(status, 201, "{task}");
            task["id"].as_str().unwrap().to_string()
        };
        let early = asked(&holder, "eerste").await;
        let second = asked(&holder, "tweede").await;
        // Tokens are for the time the clock says: a new one after each move.
        app.set_clock("2026-03-25T09:00:00Z").await;
        let late = asked(&app.user("h").await, "later").await;
        // A month on: the first two are overdue and lead the list.
        app.set_clock("2026-04-02T09:00:00Z").await;
        let holder = app.user("h").await;
        let (status, list) = admin_get(&app, "/admin/requests?_count=2").await;
        assert_eq!(status, 200, "{list}");
        let listed: Vec<(&str, bool)> = list["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].as_str().unwrap(), r["overdue"].as_bool().unwrap()))
            .collect();
        assert_eq!(listed, [(early.as_str(), true), (second.as_str(), true)]);
        // A list of requests names their client in the trail; so does a look at one.
        assert_eq!(
            admin_get(&app, &format!("/admin/requests/{early}")).await.0,
            200
        );
        for route in ["/admin/requests", "/admin/requests/{id}"] {
            let r = last_record(&app, route).await;
            assert_eq!(r.patient.as_deref(), Some("p1"), "{route}");
        }
        assert_eq!(list["overdue"], 2);
        let (_, rest) = admin_get(
            &app,
            &format!("/admin/requests?after={}", list["next"].as_str().unwrap()),
        )
        .await;
        assert_eq!(rest["requests"][0]["id"], late.as_str());
        assert_eq!(rest["requests"][0]["overdue"], false);
        // A rejection needs a reason; a decision is made once; it may be late, and says so.
        let decide = async |id: &str, body: Value| {
            app.admin_post(&format!("/admin/requests/{id}/decide"), &body)
                .await
        };
        let (status, _) = decide(&early, json!({"outcome": "rejected"})).await;
        assert_eq!(status, 400);
        let (status, _) = decide(&early, json!({"outcome": "rejected", "reason": "   "})).await;
        assert_eq!(status, 400);
        let (status, _) = decide(&early, json!({"outcome": "maybe"})).await;
        assert_eq!(status, 400);
        let (status, body) = decide(
            &early,
            json!({"outcome": "rejected", "reason": "dit staat al in het dossier"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["late"], true);
        let (status, _) = decide(&early, json!({"outcome": "accepted"})).await;
        assert_eq!(status, 409);
        let (status, _) = decide(&second, json!({"outcome": "accepted"})).await;
        assert_eq!(status, 200);
        assert_eq!(
            decide("no-such-request", json!({"outcome": "accepted"}))
                .await
                .0,
            404
        );
        // The holder reads each decision.
        let (_, task) = holder.get(&format!("/fhir/Task/{early}")).await;
        assert_eq!(task["status"], "rejected");
        assert_eq!(task["statusReason"]["text"], "dit staat al in het dossier");
        let (_, task) = holder.get(&format!("/fhir/Task/{second}")).await;
        assert_eq!(task["status"], "accepted");
        let (_, list) = admin_get(&app, "/admin/requests").await;
        assert_eq!(list["overdue"], 0);
        assert_eq!(list["requests"].as_array().unwrap().len(), 1);
        // The record system gets each request once, as decided.
        // (Each of the three waited for: the outbox sends them in its own time.)
        until(30, "requests delivered as decided", async || {
            rs.with_identifier("Task", &format!("urn:sluis:request|{early}"))
                .first()
                .is_some_and(|t| t["status"] == "rejected")
                && [&second, &late].iter().all(|id| {
                    !rs.with_identifier("Task", &format!("urn:sluis:request|{id}"))
                        .is_empty()
                })
        })
        .await;
        for id in [&early, &second, &late] {
            assert_eq!(
                rs.with_identifier("Task", &format!("urn:sluis:request|{id}"))
                    .len(),
                1
            );
        }
        // Both workflows are in the audit trail.
        app.state.auditor.flush().await.unwrap();
        let recs = sluis::store::audit::after(&app.state.db, 0, 100_000)
            .await
            .unwrap();
        assert!(
            recs.iter()
                .any(|r| r.action == "request" && r.status == 201)
        );
        assert!(recs.iter().any(|r| r.action == "decision"
            && r.detail.as_deref().is_some_and(|d| d.contains("rejected"))));
    }
);

#[tokio::test]
async fn a_request_is_due_within_thirty_days_at_most() {
    for (due, ok) in [
        ("P30D", true),
        ("P10D", true),
        ("P31D", false),
        ("P1M", false),
    ] {
        let result = sluis::config::Config::from_toml(
            &config_text(
                "sqlite://x.db",
                &format!("[messages]\nrequest_due = \"{due}\"\n"),
            ),
            "test.toml",
            std::iter::empty(),
        );
        assert_eq!(result.is_ok(), ok, "{due}");
        if let Err(p) = result {
            assert!(p.to_string().contains("messages.request_due"), "{p}");
        }
    }
}
