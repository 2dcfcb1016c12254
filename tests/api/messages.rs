//! Messages to the care team (issue 23, in part): who may post, what a message may hold, and
//! moderation: nothing is shown before approval, an approved message is shown in `berichten`
//! to those who may see it, a rejected one only to its sender, with the reason.

use crate::helpers::*;
use crate::on_both;
use serde_json::{Value, json};

fn text(patient: &str, words: &str) -> Value {
    json!({"resourceType": "Communication",
           "subject": {"reference": format!("Patient/{patient}")},
           "payload": [{"contentString": words}]})
}

/// p1 with its holder `h`, a member who may post and read `berichten`, one who may not post;
/// p2 another client.
async fn world(app: &TestApp) -> (User, User, User) {
    app.push_ok(&transaction(&[patient("p1"), patient("p2")]))
        .await;
    let holder = app.holder("h", "p1").await;
    let poster = app
        .member(&holder, "m-post", "p1", &["berichten"], true)
        .await;
    let silent = app
        .member(&holder, "m-silent", "p1", &["metingen"], false)
        .await;
    (holder, poster, silent)
}

async fn post_raw(u: &User, body: &Value, prefer: Option<&str>) -> reqwest::Response {
    let mut r = u
        .http
        .post(format!("{}/fhir/Communication", u.base))
        .bearer_auth(&u.token)
        .header("x-portal-user", &u.id)
        .header("content-type", "application/fhir+json")
        .body(body.to_string());
    if let Some(p) = prefer {
        r = r.header("prefer", p);
    }
    r.send().await.unwrap()
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

on_both!(
    posting_needs_the_right_and_a_sound_message,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let (holder, poster, silent) = world(&app).await;
        // A good message: 201, waiting (preparation), with the R20 notice.
        let r = post_raw(&holder, &text("p1", "Hoe gaat het met mijn moeder?"), None).await;
        assert_eq!(r.status(), 201);
        assert!(
            r.headers()["location"]
                .to_str()
                .unwrap()
                .contains("/fhir/Communication/")
        );
        assert!(
            r.headers()["x-sluis-notice"]
                .to_str()
                .unwrap()
                .contains("spoed")
        );
        let stored: Value = r.json().await.unwrap();
        assert_eq!(stored["status"], "preparation", "{stored}");
        assert_eq!(stored["identifier"][0]["system"], "urn:sluis:message");
        let r = post_raw(
            &poster,
            &text("p1", "Ik kom zondag."),
            Some("return=OperationOutcome"),
        )
        .await;
        assert_eq!(r.status(), 201);
        let outcome: Value = r.json().await.unwrap();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert!(
            outcome
                .to_string()
                .contains("niet bedoeld voor spoedeisende"),
            "{outcome}"
        );
        // Without the right to post: 403 no-post-right.
        let r = post_raw(&silent, &text("p1", "Mag ik iets vragen?"), None).await;
        assert_eq!(r.status(), 403);
        let body: Value = r.json().await.unwrap();
        assert_eq!(reason(&body), "no-post-right");
        // Bad messages: 400 naming the element.
        let big = "A".repeat(8 * 1024 * 1024);
        for (body, named) in [
            (
                json!({"resourceType": "Communication", "payload": [{"contentString": "x"}]}),
                "Communication.subject",
            ),
            (text("p2", "about another client"), "Communication.subject"),
            (
                json!({"resourceType": "Communication", "subject": {"reference": "Patient/p1"}}),
                "Communication.payload",
            ),
            (text("p1", ""), "Communication.payload[0].contentString"),
            (
                json!({"resourceType": "Communication", "subject": {"reference": "Patient/p1"},
                   "payload": [{"contentAttachment": {"contentType": "application/pdf", "data": big}}]}),
                "Communication.payload[0].contentAttachment.data",
            ),
            (
                json!({"resourceType": "Communication", "subject": {"reference": "Patient/p1"},
                   "payload": [{"contentAttachment": {"contentType": "application/x-msdownload", "data": "TVo="}}]}),
                "Communication.payload[0].contentAttachment.contentType",
            ),
            (
                json!({"resourceType": "Communication", "subject": {"reference": "Patient/p1"},
                   "payload": [{"contentString": "x"}], "sender": {"reference": "Practitioner/dr"}}),
                "Communication.sender",
            ),
            (
                json!({"resourceType": "Communication", "subject": {"reference": "Patient/p1"},
                       "payload": [{"contentString": "x"}], "recipient": [{"reference": "Practitioner/pr9"}]}),
                "Communication.recipient",
            ),
            // Found by attacking: nothing nested that was not asked for (a reference in an
            // extension would make a shared resource visible once approved).
            (
                json!({"resourceType": "Communication", "subject": {"reference": "Patient/p1"},
                       "payload": [{"contentString": "x", "extension": [{"url": "http://x/a",
                           "valueReference": {"reference": "Organization/org3"}}]}]}),
                "Communication.payload[0]",
            ),
            (
                json!({"resourceType": "Communication", "subject": {"reference": "Patient/p1"},
                       "payload": [{"contentAttachment": {"contentType": "application/pdf", "data": "TVo=",
                           "url": "http://evil"}}]}),
                "Communication.payload[0].contentAttachment",
            ),
            (
                json!({"resourceType": "Communication", "subject": {"reference": "Patient/p1"},
                       "payload": [{"contentString": "x"}],
                       "topic": {"coding": [{"code": 1e300}]}}),
                "Communication.topic",
            ),
            (
                json!({"resourceType": "Communication", "subject": {"reference": "Patient/p1"},
                       "payload": [{"contentString": "x"}],
                       "inResponseTo": [{"reference": "Communication/c1", "extension": []}]}),
                "Communication.inResponseTo[0]",
            ),
            // What ingest would refuse at approval is refused now: a control character.
            (text("p1", "a\u{0}b"), "Communication.payload[0]"),
            // An attachment over messages.max_attachment_bytes (750000 by default).
            (
                json!({"resourceType": "Communication", "subject": {"reference": "Patient/p1"},
                       "payload": [{"contentAttachment": {"contentType": "application/pdf",
                           "data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![7u8; 800_000])}}]}),
                "Communication.payload[0].contentAttachment.data",
            ),
            (
                json!({"resourceType": "Observation", "subject": {"reference": "Patient/p1"}}),
                "Communication.resourceType",
            ),
        ] {
            let r = post_raw(&holder, &body, None).await;
            let status = r.status().as_u16();
            let outcome: Value = r.json().await.unwrap_or_default();
            assert_eq!(status, 400, "{named}: {outcome}");
            assert!(element(&outcome).contains(named), "{named}: {outcome}");
        }
        // The CapabilityStatement says so too (R20).
        let (_, metadata) = holder.get("/fhir/metadata").await;
        let communication = metadata["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "Communication")
            .unwrap()
            .clone();
        assert!(
            communication.to_string().contains("create"),
            "{communication}"
        );
        assert!(
            communication.to_string().contains("spoed"),
            "{communication}"
        );
    }
);

on_both!(
    moderation_shows_what_it_approves_and_tells_the_sender_why_not,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let (holder, poster, silent) = world(&app).await;
        let id = |r: Value| r["id"].as_str().unwrap().to_string();
        let first = id(post_raw(&poster, &text("p1", "eerste"), None)
            .await
            .json()
            .await
            .unwrap());
        let second = id(post_raw(&poster, &text("p1", "tweede"), None)
            .await
            .json()
            .await
            .unwrap());
        // Waiting, oldest first; nobody else sees them yet, the sender sees their own.
        let r = app
            .http
            .get(app.url("/admin/moderation"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let waiting: Value = r.json().await.unwrap();
        let ids: Vec<&str> = waiting["waiting"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [first.as_str(), second.as_str()]);
        let (_, found) = holder.get("/fhir/Communication?patient=p1").await;
        assert_eq!(found["total"], 0, "{found}");
        let (status, own) = poster.get(&format!("/fhir/Communication/{first}")).await;
        assert_eq!((status, own["status"].as_str()), (200, Some("preparation")));
        assert_eq!(
            holder.get(&format!("/fhir/Communication/{first}")).await.0,
            404
        );
        // Approved: shown at once in berichten, to those who may see it.
        let decide = |path: String, body: Value| {
            let http = app.http.clone();
            let url = app.url(&path);
            async move {
                let r = http
                    .post(url)
                    .bearer_auth(ADMIN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or_default())
            }
        };
        let (status, body) = decide(format!("/admin/moderation/{first}/approve"), json!({})).await;
        assert_eq!(status, 200, "{body}");
        let (_, found) = holder.get("/fhir/Communication?patient=p1").await;
        assert_eq!(found["total"], 1, "{found}");
        assert_eq!(found["entry"][0]["resource"]["status"], "completed");
        let (_, found) = poster.get("/fhir/Communication?patient=p1").await;
        assert_eq!(found["total"], 1, "{found}");
        let (_, found) = silent.get("/fhir/Communication?patient=p1").await;
        assert_eq!(found["total"], 0, "no berichten section: {found}");
        // Decided once.
        let (status, _) = decide(
            format!("/admin/moderation/{first}/reject"),
            json!({"reason": "x"}),
        )
        .await;
        assert_eq!(status, 409);
        // Rejected: a reason is required; the sender reads it, nobody else sees anything.
        let (status, _) = decide(format!("/admin/moderation/{second}/reject"), json!({})).await;
        assert_eq!(status, 400);
        let (status, body) = decide(
            format!("/admin/moderation/{second}/reject"),
            json!({"reason": "bevat persoonsgegevens van een ander"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, own) = poster.get(&format!("/fhir/Communication/{second}")).await;
        assert_eq!(status, 200);
        assert_eq!(own["status"], "not-done");
        assert_eq!(
            own["statusReason"]["text"],
            "bevat persoonsgegevens van een ander"
        );
        assert_eq!(
            holder.get(&format!("/fhir/Communication/{second}")).await.0,
            404
        );
        let (_, found) = holder.get("/fhir/Communication?patient=p1").await;
        assert_eq!(found["total"], 1);
        let (status, _) = decide(
            "/admin/moderation/no-such-message/approve".into(),
            json!({}),
        )
        .await;
        assert_eq!(status, 404);
        // Both workflows are in the audit trail.
        app.state.auditor.flush().await.unwrap();
        let recs = sluis::store::audit::after(&app.state.db, 0, 100_000)
            .await
            .unwrap();
        assert!(
            recs.iter()
                .any(|r| r.action == "message" && r.status == 201)
        );
        assert!(recs.iter().any(|r| r.action == "moderation"
            && r.detail.as_deref().is_some_and(|d| d.contains("approved"))));
        assert!(recs.iter().any(|r| r.action == "moderation"
            && r.detail.as_deref().is_some_and(|d| d.contains("rejected"))));
    }
);

// Found by attacking: the sender's own view follows the decision like everything else, and an
// approval a stop cut short is completed at the next start.
on_both!(
    the_senders_view_follows_the_decision_and_approvals_survive_a_stop,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let (holder, poster, _) = world(&app).await;
        let posted: Value = post_raw(&poster, &text("p1", "vraag"), None)
            .await
            .json()
            .await
            .unwrap();
        let id = posted["id"].as_str().unwrap().to_string();
        assert_eq!(
            poster.get(&format!("/fhir/Communication/{id}")).await.0,
            200
        );
        // Blocked: the message is not shown to its sender either.
        let (status, _) = app
            .admin_post(
                "/admin/users/caren/m-post/block",
                &json!({"reason": "test"}),
            )
            .await;
        assert_eq!(status, 200);
        let (status, _) = poster.get(&format!("/fhir/Communication/{id}")).await;
        assert_eq!(status, 403);
        let (status, _) = app
            .admin_post("/admin/users/caren/m-post/unblock", &json!({}))
            .await;
        assert_eq!(status, 200);
        // Decided (approving) but not shown when the process stopped: the next start shows it.
        assert!(
            sluis::store::messages::decide(&app.state.db, &id, "approving", None, "admin", 0)
                .await
                .unwrap()
        );
        let again = app.restart_with("", T0).await;
        let holder = User {
            base: again.base.clone(),
            ..holder
        };
        let (_, found) = holder.get("/fhir/Communication?patient=p1").await;
        assert_eq!(found["total"], 1, "{found}");
        let m = sluis::store::messages::get(&again.state.db, &id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.state, "approved");
        // The list for moderators names attachments without their data.
        let attached = json!({"resourceType": "Communication", "subject": {"reference": "Patient/p1"},
        "payload": [{"contentAttachment": {"contentType": "application/pdf", "data": "JVBERi0xLjQK", "title": "brief.pdf"}}]});
        let poster = User {
            base: again.base.clone(),
            ..poster
        };
        assert_eq!(post_raw(&poster, &attached, None).await.status(), 201);
        let waiting: Value = again
            .http
            .get(again.url("/admin/moderation"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let listed = &waiting["waiting"][0]["communication"]["payload"][0]["contentAttachment"];
        assert_eq!(listed["title"], "brief.pdf", "{waiting}");
        assert!(listed.get("data").is_none(), "{waiting}");
        let first = waiting["waiting"][0]["id"].as_str().unwrap();
        let whole: Value = again
            .http
            .get(again.url(&format!("/admin/moderation/{first}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            whole["communication"]["payload"][0]["contentAttachment"]["data"],
            "JVBERi0xLjQK"
        );
        // A moderator's look at a message, listed or whole, names its client in the trail.
        for route in ["/admin/moderation", "/admin/moderation/{id}"] {
            let r = last_record(&again, route).await;
            assert_eq!(r.patient.as_deref(), Some("p1"), "{route}");
        }
        // At most 20 of one user wait at once.
        for i in 1..20 {
            let r = post_raw(&poster, &text("p1", &format!("nog een {i}")), None).await;
            assert_eq!(r.status(), 201, "{i}");
        }
        let r = post_raw(&poster, &text("p1", "te veel"), None).await;
        assert_eq!(r.status(), 429);
    }
);

on_both!(
    what_one_user_has_waiting_is_capped_in_bytes,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let (holder, _, _) = world(&app).await;
        use base64::Engine;
        let mut pdf = b"%PDF-1.4\n".to_vec();
        pdf.resize(700_000, b'%');
        let data = base64::engine::general_purpose::STANDARD.encode(pdf);
        let heavy = json!({"resourceType": "Communication",
            "subject": {"reference": "Patient/p1"},
            "payload": (0..10).map(|_| json!({"contentAttachment":
                {"contentType": "application/pdf", "data": data}})).collect::<Vec<_>>()});
        let r = post_raw(&holder, &heavy, None).await;
        assert_eq!(r.status(), 201);
        // A second would make more than 16 MB wait: refused until moderation catches up.
        let r = post_raw(&holder, &heavy, None).await;
        assert_eq!(r.status(), 429);
        let body: Value = r.json().await.unwrap();
        assert!(body.to_string().contains("MB"), "{body}");
        // A short message still fits.
        let r = post_raw(&holder, &text("p1", "kort"), None).await;
        assert_eq!(r.status(), 201);
    }
);

// Found by attacking: caps held only for posts one after the other; a retried post made a
// second message; an approval did not ask whether the sender still may post; an attachment's
// data was not compared with its declared type.
on_both!(
    caps_hold_for_posts_at_once_retries_repeat_and_rights_are_checked_at_approval,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let (holder, poster, _) = world(&app).await;
        // 30 posts at once: 20 kept, the rest 429.
        let mut posts = Vec::new();
        for i in 0..30 {
            let poster = poster.clone();
            posts.push(tokio::spawn(async move {
                post_raw(&poster, &text("p1", &format!("tegelijk {i}")), None)
                    .await
                    .status()
                    .as_u16()
            }));
        }
        let mut statuses = Vec::new();
        for p in posts {
            statuses.push(p.await.unwrap());
        }
        assert_eq!(
            statuses.iter().filter(|s| **s == 201).count(),
            20,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 429).count(),
            10,
            "{statuses:?}"
        );
        // A retry with the same Idempotency-Key gets the first message, not a second.
        let keyed = |key: &'static str| {
            holder
                .http
                .post(format!("{}/fhir/Communication", holder.base))
                .bearer_auth(&holder.token)
                .header("x-portal-user", &holder.id)
                .header("idempotency-key", key)
                .json(&text("p1", "nog eens"))
                .send()
        };
        let first = keyed("retry-1").await.unwrap();
        assert_eq!(first.status(), 201);
        let first: Value = first.json().await.unwrap();
        let again = keyed("retry-1").await.unwrap();
        assert_eq!(again.status(), 200);
        let again: Value = again.json().await.unwrap();
        assert_eq!(first["id"], again["id"]);
        let bad = keyed("met spatie").await.unwrap();
        assert_eq!(bad.status(), 400);
        // The same key with another body (found by attacking: it answered the first message,
        // also one about a client the user may no longer see): 422, telling nothing of it.
        let other = holder
            .http
            .post(format!("{}/fhir/Communication", holder.base))
            .bearer_auth(&holder.token)
            .header("x-portal-user", &holder.id)
            .header("idempotency-key", "retry-1")
            .json(&text("p1", "iets anders"))
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 422);
        let body = other.text().await.unwrap();
        assert!(!body.contains("nog eens"), "{body}");
        // The sender loses the right to post: their waiting message is not approved.
        let (_, grants) = holder.get("/portal/grants?patient=Patient/p1").await;
        let grant = grants
            .as_array()
            .or_else(|| grants["grants"].as_array())
            .unwrap()
            .iter()
            .find(|g| g.to_string().contains("m-post"))
            .unwrap_or_else(|| panic!("{grants}"))
            .clone();
        let waiting: Value = app
            .http
            .get(app.url("/admin/moderation?_count=1"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = waiting["waiting"][0]["id"].as_str().unwrap().to_string();
        assert_eq!(waiting["waiting"][0]["user"], "m-post");
        let (status, body) = holder
            .patch(
                &format!("/portal/grants/{}", grant["id"].as_str().unwrap()),
                &json!({"can_post": false}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = app
            .admin_post(&format!("/admin/moderation/{id}/approve"), &json!({}))
            .await;
        assert_eq!(status, 409, "{body}");
        let (status, _) = app
            .admin_post(
                &format!("/admin/moderation/{id}/reject"),
                &json!({"reason": "afzender mag niet meer posten"}),
            )
            .await;
        assert_eq!(status, 200);
        // An attachment whose data is not what its type says.
        use base64::Engine;
        let html = base64::engine::general_purpose::STANDARD
            .encode("<html><script>alert(1)</script></html>");
        let r = post_raw(
            &holder,
            &json!({"resourceType": "Communication", "subject": {"reference": "Patient/p1"},
                "payload": [{"contentAttachment": {"contentType": "image/png", "data": html}}]}),
            None,
        )
        .await;
        assert_eq!(r.status(), 400);
        let outcome: Value = r.json().await.unwrap();
        assert_eq!(
            element(&outcome),
            "Communication.payload[0].contentAttachment.data"
        );
    }
);
