//! The leaks and races an outside review found (issue 18), one test per class: rights that
//! outlive their reason, side doors around the decision, oracles, rules applied to the wrong
//! version, writes across a boundary, races, and unbounded work.

use crate::helpers::*;
use crate::on_both;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use std::collections::BTreeSet;

fn at(text: &str) -> DateTime<Utc> {
    sluis::time::parse_instant(text).unwrap()
}

fn day(n: i64) -> String {
    sluis::time::instant(at(T0) + Duration::days(n))
}

fn match_ids(bundle: &Value, mode: &str) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == mode)
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        })
        .collect()
}

/// `(method, Type/id)` of every entry of a user's `_history` since `since`.
async fn history(u: &User, since: &str) -> BTreeSet<(String, String)> {
    let (status, bundle) = u.get(&format!("/fhir/_history?_since={since}")).await;
    assert_eq!(status, 200, "{bundle}");
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["request"]["method"].as_str().unwrap().to_string(),
                e["request"]["url"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn entry(method: &str, url: &str) -> (String, String) {
    (method.to_string(), url.to_string())
}

/// A mappings folder with the shipped sections, `embargo` rules before the shipped ones, and
/// `redaction` (or the shipped redaction).
fn mappings_with(app: &TestApp, embargo: &str, redaction: Option<&str>) -> String {
    let extra = app.mappings(embargo);
    let dir = extra
        .trim()
        .strip_prefix("[mappings]\ndir = \"")
        .and_then(|s| s.strip_suffix('"'))
        .unwrap()
        .to_string();
    if let Some(r) = redaction {
        std::fs::write(std::path::Path::new(&dir).join("redaction.toml"), r).unwrap();
    }
    extra
}

async fn active_links(app: &TestApp, patient: &str) -> Vec<Value> {
    let r = app
        .http
        .get(app.url(&format!("/admin/links?patient={patient}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    body["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["ended_at"].is_null())
        .cloned()
        .collect()
}

// 1. A right that outlives its reason: an invitation dies with the holdership that made it.
on_both!(
    invitations_die_with_the_holdership_that_made_them,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[patient("p1"), patient("p2")]))
            .await;
        let all: Vec<&str> = vec![
            "dossier",
            "zorgplan",
            "rapportages",
            "metingen",
            "medicatie",
            "agenda",
            "berichten",
            "documenten",
        ];
        // A first contact holds the portal and invites (with every section).
        let (status, _, first) = app.link_as("first", "p1", "first-contact").await;
        assert_eq!(status, 201);
        let invite = |holder: User, patient: &'static str| {
            let all = all.clone();
            async move {
                let (status, inv) = holder
                    .post(
                        "/portal/invitations",
                        &json!({"patient": format!("Patient/{patient}"), "sections": all, "can_post": true, "name": "Zoon", "relationship": "SONC"}),
                    )
                    .await;
                assert_eq!(status, 201, "{inv}");
                inv["code"].as_str().unwrap().to_string()
            }
        };
        let own = invite(first.clone(), "p1").await;
        let for_other = invite(first.clone(), "p1").await;
        // The holder sees the open invitations with ids.
        let (status, list) = first.get("/portal/invitations?patient=Patient/p1").await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["invitations"].as_array().unwrap().len(), 2, "{list}");
        assert!(list["invitations"][0]["id"].is_string(), "{list}");
        // A curator takes over: the first contact's link ends, and so do their invitations.
        let (status, _, _curator) = app.link_as("curator", "p1", "curator").await;
        assert_eq!(status, 201);
        let (status, out) = first
            .post(
                "/portal/link",
                &json!({"code": own, "birth_date": "1960-01-01"}),
            )
            .await;
        assert_eq!(
            (status, reason(&out)),
            (410, "code-expired"),
            "the former holder redeems their own invitation: {out}"
        );
        let stranger = app.user("stranger").await;
        let (status, out) = stranger
            .post(
                "/portal/link",
                &json!({"code": for_other, "birth_date": "1960-01-01"}),
            )
            .await;
        assert_eq!((status, reason(&out)), (410, "code-expired"), "{out}");
        assert_eq!(first.get("/fhir/Patient/p1").await.0, 403);

        // The same when staff end the holder's link (withdrawn consent, R9).
        let h2 = app.holder("h2", "p2").await;
        let code = invite(h2.clone(), "p2").await;
        let link = active_links(&app, "p2").await[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let r = app
            .http
            .delete(app.url(&format!("/admin/links/{link}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let (status, out) = h2
            .post(
                "/portal/link",
                &json!({"code": code, "birth_date": "1960-01-01"}),
            )
            .await;
        assert_eq!((status, reason(&out)), (410, "code-expired"), "{out}");
        assert_eq!(h2.get("/fhir/Patient/p2").await.0, 403);

        // A holder revokes an open invitation; it cannot be redeemed after.
        let h3 = app.holder("h3", "p2").await;
        let code = invite(h3.clone(), "p2").await;
        let (_, list) = h3.get("/portal/invitations?patient=p2").await;
        let id = list["invitations"][0]["id"].as_str().unwrap().to_string();
        let member = app.member(&h3, "kept", "p2", &["agenda"], false).await;
        assert_eq!(
            member.delete(&format!("/portal/invitations/{id}")).await,
            404,
            "only the holder revokes; to others it is not there"
        );
        assert_eq!(h3.delete(&format!("/portal/invitations/{id}")).await, 204);
        assert_eq!(h3.delete(&format!("/portal/invitations/{id}")).await, 404);
        assert_eq!(h3.delete("/portal/invitations/nope").await, 404);
        let (status, out) = stranger
            .post(
                "/portal/link",
                &json!({"code": code, "birth_date": "1960-01-01"}),
            )
            .await;
        assert_eq!((status, reason(&out)), (410, "code-expired"), "{out}");
        let (_, list) = h3.get("/portal/invitations?patient=p2").await;
        assert_eq!(list["invitations"], json!([]), "{list}");
        // Another client's holder does not see or revoke this client's invitations.
        let code = invite(h3.clone(), "p2").await;
        let _ = code;
        let (_, list) = h3.get("/portal/invitations?patient=p2").await;
        let id = list["invitations"][0]["id"].as_str().unwrap().to_string();
        app.push_ok(&transaction(&[patient("p3")])).await;
        let h4 = app.holder("h4", "p3").await;
        assert_eq!(h4.get("/portal/invitations?patient=p2").await.0, 403);
        assert_eq!(h4.delete(&format!("/portal/invitations/{id}")).await, 404);
    }
);

// 2. A side door: types outside the patient compartment are served only when mappings name
//    them as shared reference types, and `_include` passes the same check as a read.
on_both!(
    non_shared_types_outside_the_compartment_are_never_served,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let task = |id: &str, patient: &str, part_of: Option<&str>| {
            let mut t = json!({"resourceType": "Task", "id": id, "status": "requested", "intent": "order",
                "for": {"reference": format!("Patient/{patient}")}, "description": format!("taak {id}")});
            if let Some(p) = part_of {
                t["partOf"] = json!([{"reference": format!("Task/{p}")}]);
            }
            t
        };
        let mut a1 = appointment("a1", "p1", "2026-03-10T10:00:00Z");
        a1["supportingInformation"] = json!([{"reference": "Task/t1"}]);
        a1["participant"]
            .as_array_mut()
            .unwrap()
            .push(json!({"actor": {"reference": "Practitioner/dr"}, "status": "accepted"}));
        app.push_ok(&transaction(&[
            patient("p1"),
            patient("p2"),
            json!({"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Smit"}]}),
            task("t1", "p1", None),
            task("t2", "p2", None),
            task("t3", "p1", Some("t2")),
            a1,
        ]))
        .await;
        let holder = app.holder("h", "p1").await;
        let member = app.member(&holder, "m", "p1", &["agenda"], false).await;
        for u in [&holder, &member] {
            assert_eq!(u.get("/fhir/Appointment/a1").await.0, 200);
            assert_eq!(
                u.get("/fhir/Practitioner/dr").await.0,
                200,
                "a shared type referred to by a visible resource"
            );
            for t in ["t1", "t2", "t3"] {
                assert_eq!(
                    u.get(&format!("/fhir/Task/{t}")).await.0,
                    404,
                    "Task/{t} is not a shared type"
                );
            }
            let (status, bundle) = u.get("/fhir/Task?_include=Task:part-of").await;
            assert_eq!(status, 200, "{bundle}");
            assert_eq!(bundle["total"], 0, "{bundle}");
            assert!(match_ids(&bundle, "include").is_empty(), "{bundle}");
            let (_, bundle) = u
                .get("/fhir/Appointment?_include=Appointment:supporting-info")
                .await;
            assert_eq!(
                match_ids(&bundle, "include"),
                BTreeSet::new(),
                "an include passes the same check as a read: {bundle}"
            );
            let (_, bundle) = u
                .get("/fhir/Appointment?_include=Appointment:practitioner")
                .await;
            assert_eq!(
                match_ids(&bundle, "include"),
                BTreeSet::from(["Practitioner/dr".to_string()])
            );
        }
    }
);

// 3. A side door: a reference inside a field redacted for the user does not open its target.
on_both!(
    a_reference_in_a_redacted_field_does_not_open_its_target,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let mut p1 = patient("p1");
        p1["contact"] = json!([{"name": {"text": "Buurvrouw"}, "organization": {"reference": "Organization/thuiszorg"}}]);
        p1["managingOrganization"] = json!({"reference": "Organization/huis"});
        app.push_ok(&transaction(&[
            json!({"resourceType": "Organization", "id": "thuiszorg", "name": "Thuiszorg West"}),
            json!({"resourceType": "Organization", "id": "huis", "name": "Zorgcentrum"}),
            p1,
        ]))
        .await;
        let holder = app.holder("h", "p1").await;
        let member = app.member(&holder, "m", "p1", &["dossier"], false).await;
        assert_eq!(holder.get("/fhir/Organization/thuiszorg").await.0, 200);
        assert_eq!(member.get("/fhir/Organization/huis").await.0, 200);
        assert_eq!(
            member.get("/fhir/Organization/thuiszorg").await.0,
            404,
            "referred to only from Patient.contact, which members do not get"
        );
        let (_, bundle) = member.get("/fhir/Organization").await;
        assert_eq!(
            match_ids(&bundle, "match"),
            BTreeSet::from(["Organization/huis".to_string()])
        );
        assert_eq!(bundle["total"], 1);
        let (_, bundle) = holder.get("/fhir/Organization").await;
        assert_eq!(bundle["total"], 2);
        let (_, bundle) = member
            .get("/fhir/Patient?_include=Patient:organization")
            .await;
        assert_eq!(
            match_ids(&bundle, "include"),
            BTreeSet::from(["Organization/huis".to_string()])
        );
    }
);

// 4. An oracle: searching or sorting on an element redacted for the role is refused.
on_both!(
    searching_or_sorting_on_a_redacted_element_is_refused,
    |b| async move {
        let probe = TestApp::spawn(b).await;
        let redaction = format!(
            "{}\n[[rule]]\nroles = [\"member\"]\ntype = \"Observation\"\nremove = [\"effectiveDateTime\", \"category\"]\n\
             [[rule]]\nroles = [\"member\"]\ntype = \"Appointment\"\nremove = [\"participant\"]\n",
            sluis::mapping::DEFAULT_REDACTION
        );
        let extra = mappings_with(&probe, "", Some(&redaction));
        let app = probe.restart_with(&extra, T0).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("o1", "p1", "29463-7", "2026-01-15T08:00:00Z"),
        ]))
        .await;
        app.set_clock(&day(15)).await;
        let holder = app.holder("h", "p1").await;
        let member = app
            .member(&holder, "m", "p1", &["metingen", "agenda"], false)
            .await;
        let (_, obs) = member.get("/fhir/Observation/o1").await;
        assert!(obs.get("effectiveDateTime").is_none(), "{obs}");
        for query in [
            "date=lt2026-02-01",
            "date=ge2026-01-01",
            "_sort=date",
            "_sort=-date",
            "category=vital-signs",
        ] {
            let (status, out) = member.get(&format!("/fhir/Observation?{query}")).await;
            assert_eq!(
                (status, reason(&out)),
                (400, "unknown-parameter"),
                "{query}: {out}"
            );
            let (status, out) = holder.get(&format!("/fhir/Observation?{query}")).await;
            assert_eq!(status, 200, "{query}: {out}");
        }
        for query in ["patient=p1", "actor=Patient/p1"] {
            let (status, _) = member.get(&format!("/fhir/Appointment?{query}")).await;
            assert_eq!(
                status, 400,
                "{query}: the reference sits in a removed element"
            );
        }
        let (status, _) = member.get("/fhir/Observation?patient=p1").await;
        assert_eq!(status, 200);
    }
);

// 5. A rule applied to the wrong version: a newer version never shows earlier than its own
//    rule allows, `never` takes the shown version off, and hold works on shown resources.
on_both!(
    a_stricter_rule_on_a_newer_version_is_honoured,
    |b| async move {
        let probe = TestApp::spawn(b).await;
        let extra = probe.mappings(
            "[[rule]]\nsection = \"metingen\"\ncode = \"http://loinc.org|2708-6\"\ndelay = \"P90D\"\n\
             [[rule]]\nsection = \"metingen\"\ncode = \"http://loinc.org|8867-4\"\ndelay = \"never\"\n",
        );
        let app = probe.restart_with(&extra, T0).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("slow", "p1", "29463-7", "2026-03-01"),
            observation("never", "p1", "29463-7", "2026-03-01"),
            observation("held", "p1", "29463-7", "2026-03-01"),
            observation("until", "p1", "29463-7", "2026-03-01"),
        ]))
        .await;
        app.holder("h", "p1").await;
        // A v2 under a 90-day rule, while v1 waits 14 days: counted from the first arrival.
        app.set_clock(&day(2)).await;
        app.push_ok(&transaction(&[observation(
            "slow",
            "p1",
            "2708-6",
            "2026-03-01",
        )]))
        .await;
        for d in [14, 30, 89] {
            app.set_clock(&day(d)).await;
            let holder = app.user("h").await;
            assert_eq!(
                holder.get("/fhir/Observation/slow").await.0,
                404,
                "day {d}: neither v1 nor v2 before day 90"
            );
        }
        app.set_clock(&day(90)).await;
        let holder = app.user("h").await;
        let (status, obs) = holder.get("/fhir/Observation/slow").await;
        assert_eq!(status, 200);
        assert_eq!(obs["code"]["coding"][0]["code"], "2708-6");
        // A v2 under `never` takes the shown v1 off at once.
        app.set_clock(&day(15)).await;
        let holder = app.user("h").await;
        assert_eq!(holder.get("/fhir/Observation/never").await.0, 200);
        app.set_clock(&day(16)).await;
        let holder = app.user("h").await;
        app.push_ok(&transaction(&[observation(
            "never",
            "p1",
            "8867-4",
            "2026-03-01",
        )]))
        .await;
        assert_eq!(holder.get("/fhir/Observation/never").await.0, 404);
        assert!(
            history(&holder, &day(15))
                .await
                .contains(&entry("DELETE", "Observation/never"))
        );
        app.set_clock(&day(120)).await;
        let holder = app.user("h").await;
        assert_eq!(holder.get("/fhir/Observation/never").await.0, 404);
        // A hold on a shown resource takes it off until released.
        app.set_clock(&day(20)).await;
        let holder = app.user("h").await;
        assert_eq!(holder.get("/fhir/Observation/held").await.0, 200);
        let (status, out) = app
            .admin_post("/admin/hold", &json!({"resource": "Observation/held"}))
            .await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(holder.get("/fhir/Observation/held").await.0, 404);
        assert!(
            history(&holder, &day(19))
                .await
                .contains(&entry("DELETE", "Observation/held"))
        );
        let (_, bundle) = holder.get("/fhir/Observation?_summary=count").await;
        let hidden_total = bundle["total"].as_i64().unwrap();
        app.set_clock(&day(25)).await;
        let holder = app.user("h").await;
        let (status, out) = app
            .admin_post("/admin/release", &json!({"resource": "Observation/held"}))
            .await;
        assert_eq!(status, 200, "{out}");
        let (status, obs) = holder.get("/fhir/Observation/held").await;
        assert_eq!(status, 200);
        assert_eq!(
            obs["meta"]["lastUpdated"],
            day(25),
            "shown again from the release"
        );
        let (_, bundle) = holder.get("/fhir/Observation?_summary=count").await;
        assert_eq!(bundle["total"].as_i64().unwrap(), hidden_total + 1);
        // A hold until a moment: back at that moment.
        app.admin_post(
            "/admin/hold",
            &json!({"resource": "Observation/until", "until": day(30)}),
        )
        .await;
        assert_eq!(holder.get("/fhir/Observation/until").await.0, 404);
        app.set_clock(&day(30)).await;
        let holder = app.user("h").await;
        let (status, obs) = holder.get("/fhir/Observation/until").await;
        assert_eq!(status, 200);
        assert_eq!(obs["meta"]["lastUpdated"], day(30));
        assert!(
            history(&holder, &day(29))
                .await
                .contains(&entry("PUT", "Observation/until"))
        );
    }
);

// 6. A rule applied to the wrong version: a resource moved to another client leaves the
//    first at once, and the second client's people only see what was theirs.
on_both!(
    a_resource_moved_to_another_client_leaves_the_first_at_once,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            patient("p2"),
            observation("o", "p1", "29463-7", "2026-03-01"),
            appointment("a", "p1", "2026-03-10T10:00:00Z"),
        ]))
        .await;
        app.holder("first", "p1").await;
        app.holder("second", "p2").await;
        app.set_clock(&day(15)).await;
        let first = app.user("first").await;
        assert_eq!(first.get("/fhir/Observation/o").await.0, 200);
        app.set_clock(&day(16)).await;
        let (first, second) = (app.user("first").await, app.user("second").await);
        app.push_ok(&transaction(&[
            observation("o", "p2", "29463-7", "2026-03-01"),
            appointment("a", "p2", "2026-03-11T10:00:00Z"),
        ]))
        .await;
        assert_eq!(
            first.get("/fhir/Observation/o").await.0,
            404,
            "gone at once"
        );
        assert_eq!(first.get("/fhir/Appointment/a").await.0, 404);
        assert_eq!(
            second.get("/fhir/Observation/o").await.0,
            404,
            "the new version waits its own delay"
        );
        let (status, appt) = second.get("/fhir/Appointment/a").await;
        assert_eq!(status, 200);
        assert_eq!(appt["start"], "2026-03-11T10:00:00Z");
        let h = history(&first, &day(15)).await;
        assert!(h.contains(&entry("DELETE", "Observation/o")), "{h:?}");
        assert!(h.contains(&entry("DELETE", "Appointment/a")), "{h:?}");
        let (_, bundle) = first.get("/fhir/Observation?_summary=count").await;
        assert_eq!(bundle["total"], 0);
        app.set_clock(&day(31)).await;
        let (first, second) = (app.user("first").await, app.user("second").await);
        let (status, obs) = second.get("/fhir/Observation/o").await;
        assert_eq!(status, 200);
        assert_eq!(obs["subject"]["reference"], "Patient/p2");
        let h = history(&first, &day(15)).await;
        assert!(
            h.contains(&entry("DELETE", "Observation/o")),
            "still withdrawn for the first client after the new version shows: {h:?}"
        );
        // A later delete withdraws it from the second client, and tells the first nothing new.
        app.set_clock(&day(32)).await;
        let (first, second) = (app.user("first").await, app.user("second").await);
        assert_eq!(app.delete_resource("Observation", "o").await, 204);
        let h = history(&second, &day(31)).await;
        assert!(h.contains(&entry("DELETE", "Observation/o")), "{h:?}");
        let h = history(&first, &day(31)).await;
        assert!(h.is_empty(), "{h:?}");
        // Moved while still waiting: the first client never sees it, the second never sees
        // the first client's version.
        app.push_ok(&transaction(&[observation(
            "w",
            "p1",
            "29463-7",
            "2026-03-01",
        )]))
        .await;
        app.set_clock(&day(33)).await;
        let mut moved = observation("w", "p2", "29463-7", "2026-03-01");
        moved["valueQuantity"]["value"] = json!(70);
        app.push_ok(&transaction(&[moved])).await;
        for d in [46, 47, 60] {
            app.set_clock(&day(d)).await;
            let (first, second) = (app.user("first").await, app.user("second").await);
            assert_eq!(first.get("/fhir/Observation/w").await.0, 404, "day {d}");
            let (status, obs) = second.get("/fhir/Observation/w").await;
            assert_eq!(
                status,
                if d < 47 { 404 } else { 200 },
                "day {d}: a new entry for the second client waits its own 14 days"
            );
            if status == 200 {
                assert_eq!(obs["valueQuantity"]["value"], 70, "day {d}");
            }
        }
        let first = app.user("first").await;
        assert!(history(&first, &day(31)).await.is_empty());
    }
);

// 7. A write across a boundary: one source cannot change another source's resources.
on_both!(
    a_source_cannot_overwrite_or_delete_another_sources_resources,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            episode("eoc", "p1", "active", "2025-01-01", None),
            appointment("a1", "p1", "2026-03-10T10:00:00Z"),
        ]))
        .await;
        let holder = app.holder("h", "p1").await;
        let other = app.token(("other-push", "other-push-secret-1")).await;
        let put = |path: &str, body: Value| {
            app.http
                .put(app.url(path))
                .bearer_auth(&other)
                .json(&body)
                .send()
        };
        let mut changed = appointment("a1", "p1", "2030-01-01T10:00:00Z");
        changed["status"] = json!("cancelled");
        let r = put("/ingest/other/Appointment/a1", changed).await.unwrap();
        assert_eq!(r.status(), 409);
        let body: Value = r.json().await.unwrap();
        assert_eq!(reason(&body), "conflict");
        let text = body.to_string();
        assert!(!text.contains("ons"), "names no internals: {text}");
        let r = put(
            "/ingest/other/EpisodeOfCare/eoc",
            episode("eoc", "p1", "finished", "2025-01-01", Some("2025-02-01")),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 409);
        let r = app
            .http
            .delete(app.url("/ingest/other/Patient/p1"))
            .bearer_auth(&other)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        // A transaction with one foreign entry stores nothing; a batch fails that entry alone.
        let r = app
            .http
            .post(app.url("/ingest/other"))
            .bearer_auth(&other)
            .json(&transaction(&[
                patient("p9"),
                appointment("a1", "p1", "2030-01-01T10:00:00Z"),
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        let mut batch = transaction(&[
            patient("p9"),
            appointment("a1", "p1", "2030-01-01T10:00:00Z"),
        ]);
        batch["type"] = json!("batch");
        let r = app
            .http
            .post(app.url("/ingest/other"))
            .bearer_auth(&other)
            .json(&batch)
            .send()
            .await
            .unwrap();
        let out: Value = r.json().await.unwrap();
        assert_eq!(
            out["entry"][0]["response"]["status"], "201 Created",
            "{out}"
        );
        assert!(
            out["entry"][1]["response"]["status"]
                .as_str()
                .unwrap()
                .starts_with("409"),
            "{out}"
        );
        let (status, appt) = holder.get("/fhir/Appointment/a1").await;
        assert_eq!(status, 200, "still served, unchanged");
        assert_eq!(appt["status"], "booked");
        assert_eq!(appt["meta"]["versionId"], "1");
        assert_eq!(holder.get("/fhir/Patient/p1").await.0, 200);
        // The owner still writes.
        let (status, _) = app
            .put_resource(&appointment("a1", "p1", "2026-03-12T10:00:00Z"))
            .await;
        assert_eq!(status, 200);
    }
);

// 8. A race: parallel pushes of the same new resources store one version per number.
on_both!(
    parallel_pushes_store_one_version_per_number,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[patient("p1")])).await;
        let token = app.token(SOURCE).await;
        let mut tasks = Vec::new();
        // Four writers of each id at the same moment, each on its own connection.
        for k in 0..30 {
            let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(4));
            for round in 0..4 {
                let http = reqwest::Client::new();
                let url = app.url(&format!("/ingest/ons/Appointment/race{k}"));
                let token = token.clone();
                let barrier = barrier.clone();
                let mut body = appointment(&format!("race{k}"), "p1", "2026-03-10T10:00:00Z");
                body["comment"] = json!(format!("round {round}"));
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    http.put(url)
                        .bearer_auth(token)
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                }));
            }
        }
        for t in tasks {
            let status = t.await.unwrap();
            assert!(status == 200 || status == 201, "{status}");
        }
        let holder = app.holder("h", "p1").await;
        let (_, bundle) = holder.get("/fhir/Appointment?_summary=count").await;
        assert_eq!(bundle["total"], 30);
        for k in 0..30 {
            let r = app
                .http
                .get(app.url(&format!("/admin/explain?resource=Appointment/race{k}")))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            let e: Value = r.json().await.unwrap();
            let numbers: Vec<i64> = e["versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["version"].as_i64().unwrap())
                .collect();
            let expected: Vec<i64> = (1..=numbers.len() as i64).collect();
            assert_eq!(numbers, expected, "race{k}: {e}");
            assert!(numbers.len() <= 4, "race{k}: {numbers:?}");
        }
    }
);

// 9. A race: parallel redeems of activation codes leave one holder per client.
on_both!(parallel_redeems_leave_one_holder, |b| async move {
    let app = TestApp::spawn(b).await;
    let patients: Vec<String> = (0..8).map(|k| format!("r{k}")).collect();
    app.push_ok(&transaction(
        &patients.iter().map(|p| patient(p)).collect::<Vec<_>>(),
    ))
    .await;
    let mut tasks = Vec::new();
    for p in &patients {
        for (k, relationship) in ["curator", "mentor", "first-contact", "notarial"]
            .iter()
            .enumerate()
        {
            let (status, code) = app
                .admin_post(
                    "/admin/activation-codes",
                    &json!({"patient": format!("Patient/{p}"), "relationship": relationship}),
                )
                .await;
            assert_eq!(status, 201);
            let u = app.user(&format!("{p}-{k}")).await;
            tasks.push(tokio::spawn(async move {
                u.post(
                    "/portal/link",
                    &json!({"code": code["code"], "birth_date": "1960-01-01"}),
                )
                .await
                .0
            }));
        }
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!(status == 201 || status == 409, "{status}");
    }
    for p in &patients {
        let holders = active_links(&app, p)
            .await
            .into_iter()
            .filter(|l| l["role"] == "holder")
            .count();
        assert_eq!(holders, 1, "{p}");
    }
});

// 10. A blocked user cannot change account state.
on_both!(a_blocked_user_cannot_change_account_state, |b| async move {
    let app = TestApp::spawn(b).await;
    app.push_ok(&transaction(&[patient("p1"), patient("p2")]))
        .await;
    let holder = app.holder("h", "p1").await;
    let (status, _) = app
        .admin_post(
            "/admin/users/caren/h/block",
            &json!({"reason": "misbruik vermoed"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, code) = app
        .admin_post(
            "/admin/activation-codes",
            &json!({"patient": "Patient/p2", "relationship": "curator"}),
        )
        .await;
    let (status, out) = holder
        .post(
            "/portal/link",
            &json!({"code": code["code"], "birth_date": "1960-01-01"}),
        )
        .await;
    assert_eq!((status, reason(&out)), (403, "user-blocked"), "{out}");
    let (status, out) = holder
        .post("/portal/terms", &json!({"version": "2026-01"}))
        .await;
    assert_eq!((status, reason(&out)), (403, "user-blocked"), "{out}");
    let (status, out) = holder
        .post(
            "/portal/invitations",
            &json!({"patient": "Patient/p1", "sections": ["agenda"], "name": "x", "relationship": "SONC"}),
        )
        .await;
    assert_eq!((status, reason(&out)), (403, "user-blocked"), "{out}");
    assert_eq!(
        holder.get("/portal/invitations?patient=p1").await.0,
        403,
        "listing too"
    );
    let (status, out) = holder.get("/portal/me").await;
    assert_eq!((status, reason(&out)), (403, "user-blocked"), "{out}");
    // The code was not used: someone else can still redeem it.
    let other = app.user("other").await;
    let (status, out) = other
        .post(
            "/portal/link",
            &json!({"code": code["code"], "birth_date": "1960-01-01"}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(active_links(&app, "p2").await.len(), 1);
});

// 11. Unbounded work: many values or parameters get a clear 400, not a 500.
on_both!(
    searches_with_too_many_values_get_a_clear_400,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[patient("p1")])).await;
        let holder = app.holder("h", "p1").await;
        let codes: Vec<String> = (0..1000).map(|k| format!("c{k}")).collect();
        let (status, out) = holder
            .get(&format!("/fhir/Observation?code={}", codes.join(",")))
            .await;
        assert_eq!((status, reason(&out)), (400, "unknown-parameter"), "{out}");
        let repeated: Vec<String> = (0..1000).map(|k| format!("code=c{k}")).collect();
        let (status, out) = holder
            .get(&format!("/fhir/Observation?{}", repeated.join("&")))
            .await;
        assert_eq!((status, reason(&out)), (400, "unknown-parameter"), "{out}");
        let ids: Vec<String> = (0..1000).map(|k| format!("id{k}")).collect();
        let (status, _) = holder
            .get(&format!("/fhir/Observation?_id={}", ids.join(",")))
            .await;
        assert_eq!(status, 400);
        let (status, _) = holder
            .get(&format!("/fhir/Observation?patient={}", ids.join(",")))
            .await;
        assert_eq!(status, 400);
        // Within the limits, a search with many values works.
        let (status, out) = holder
            .get(&format!("/fhir/Observation?code={}", codes[..50].join(",")))
            .await;
        assert_eq!(status, 200, "{out}");
    }
);

// 13. Responses with client data are not cached; 401 says how to authenticate; unknown
//     `_include` values are refused on every search endpoint.
on_both!(
    responses_carry_no_store_and_401_a_challenge,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[patient("p1")])).await;
        let holder = app.holder("h", "p1").await;
        for path in [
            "/fhir/Patient/p1",
            "/fhir/Patient?_id=p1",
            "/fhir/_history",
            "/fhir/Consent?patient=p1",
            "/portal/me",
        ] {
            let r = app
                .http
                .get(app.url(path))
                .bearer_auth(&holder.token)
                .header("x-portal-user", "h")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(
                r.headers()
                    .get("cache-control")
                    .map(|v| v.to_str().unwrap()),
                Some("no-store"),
                "{path}"
            );
        }
        let r = app
            .http
            .get(app.url("/admin/links?patient=p1"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers().get("cache-control").unwrap().to_str().unwrap(),
            "no-store"
        );
        for path in ["/fhir/Patient/p1", "/portal/me", "/admin/links?patient=p1"] {
            let r = app.http.get(app.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 401, "{path}");
            assert!(r.headers().get("x-request-id").is_some(), "{path}");
            let challenge = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            assert!(challenge.starts_with("Bearer"), "{path}: {challenge}");
        }
        let r = app
            .http
            .post(app.url("/auth/token"))
            .basic_auth("caren", Some("wrong"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers().get("www-authenticate").is_some());
        for path in [
            "/fhir/Consent?patient=p1&_include=Consent:nope",
            "/fhir/Consent?_include=Patient:organization",
            "/fhir/Patient?_include=Patient:nope",
            "/fhir/_history?_include=Patient:organization",
        ] {
            let (status, out) = holder.get(path).await;
            assert_eq!(
                (status, reason(&out)),
                (400, "unknown-parameter"),
                "{path}: {out}"
            );
        }
        let (status, _) = holder
            .get("/fhir/Consent?patient=p1&_include=Consent:actor")
            .await;
        assert_eq!(status, 200, "the people are included anyway");
    }
);

/// Sends `head` on a raw connection, then waits for the server's answer or close.
async fn raw_exchange(
    app: &TestApp,
    head: &str,
    wait: std::time::Duration,
) -> (String, std::time::Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the server kept the connection open for {wait:?}"
    );
    (String::from_utf8_lossy(&out).to_string(), started.elapsed())
}

// 12. Unbounded work: slow clients are cut off, with an OperationOutcome where one can be sent.
on_both!(slow_clients_are_cut_off, |b| async move {
    let app = TestApp::spawn_with(
        b,
        "[server]\nlisten = \"127.0.0.1:0\"\npublic_base_url = \"http://sluis.test\"\nheader_timeout = \"PT1S\"\nbody_timeout = \"PT1S\"\nrequest_timeout = \"PT3S\"\n",
    )
    .await;
    let limit = std::time::Duration::from_secs(8);
    // Half-sent headers: the connection is closed.
    let (_, took) = raw_exchange(&app, "GET /healthz HTTP/1.1\r\nHost: x\r\n", limit).await;
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    // A body that never arrives: 408 with an OperationOutcome.
    let token = app.token(SOURCE).await;
    let head = format!(
        "POST /ingest/ons HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/fhir+json\r\nContent-Length: 100\r\n\r\n{{\"resourceType\""
    );
    let (answer, took) = raw_exchange(&app, &head, limit).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("OperationOutcome"), "{answer}");
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    // The same for a portal call's small body.
    let portal = app.token(PORTAL).await;
    let head = format!(
        "POST /portal/terms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {portal}\r\nX-Portal-User: u\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{{"
    );
    let (answer, _) = raw_exchange(&app, &head, limit).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A body trickling in, a byte now and then, is cut off at body_timeout all the same.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = app.base.trim_start_matches("http://").to_string();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while started.elapsed() < std::time::Duration::from_secs(6) {
            if stream.write_all(b"a").await.is_err() {
                break;
            }
            match tokio::time::timeout(std::time::Duration::from_millis(300), stream.read(&mut buf))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let answer = String::from_utf8_lossy(&answer).to_string();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    // Ordinary requests are unaffected.
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
});

// Found by attacking the running adapter: redaction takes the narrative and the contained
// resources that told the same, and applies the rules to contained resources of their types.
on_both!(
    redaction_takes_the_narrative_and_contained_resources_along,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let mut p1 = patient("p1");
        p1["text"] = json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">BSN 999911120, Dorpsstraat 1, 0612345678</div>"});
        p1["address"] = json!([{"line": ["Dorpsstraat 1"], "city": "Utrecht"}]);
        p1["contained"] = json!([
            {"resourceType": "RelatedPerson", "id": "zus", "patient": {"reference": "Patient/p1"},
             "telecom": [{"system": "phone", "value": "0687654321"}]},
            {"resourceType": "Practitioner", "id": "gp", "name": [{"family": "Huisarts"}],
             "telecom": [{"system": "phone", "value": "0301234567", "use": "work"},
                         {"system": "phone", "value": "0611111111", "use": "mobile"}]}
        ]);
        p1["generalPractitioner"] = json!([{"reference": "#gp"}]);
        // The contact's person is contained and referred to from within `contact` only.
        p1["contact"] = json!([{"name": {"text": "Zus"}, "extension": [{"url": "http://example.org/person",
            "valueReference": {"reference": "#zus"}}]}]);
        app.push_ok(&transaction(&[p1])).await;
        let holder = app.holder("h", "p1").await;
        let member = app.member(&holder, "m", "p1", &["agenda"], false).await;
        let (_, full) = holder.get("/fhir/Patient/p1").await;
        assert!(full["text"]["div"].as_str().unwrap().contains("999911120"));
        let (_, seen) = member.get("/fhir/Patient/p1").await;
        let text = seen.to_string();
        for secret in [
            "999911120",
            "Dorpsstraat",
            "0612345678",
            "0611111111",
            "0687654321",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("0301234567"), "work contacts stay: {text}");
        for path in [
            "/fhir/Patient?_id=p1",
            "/fhir/_history",
            "/fhir/Patient?_include=Patient:general-practitioner",
        ] {
            let (_, bundle) = member.get(path).await;
            let text = bundle.to_string();
            assert!(
                !text.contains("999911120") && !text.contains("0611111111"),
                "{path}: {text}"
            );
        }
    }
);

// Found by attacking: rules changed to `never` take what is shown off at the next start.
on_both!(
    rules_changed_to_never_take_the_shown_version_off,
    |b| async move {
        let probe = TestApp::spawn(b).await;
        let before = probe.mappings("");
        let app = probe.restart_with(&before, T0).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("shown", "p1", "2708-6", "2026-03-01"),
            observation("newer", "p1", "29463-7", "2026-03-01"),
            observation("kept", "p1", "29463-7", "2026-03-01"),
        ]))
        .await;
        app.holder("h", "p1").await;
        app.set_clock(&day(15)).await;
        app.push_ok(&transaction(&[observation(
            "newer",
            "p1",
            "2708-6",
            "2026-03-01",
        )]))
        .await;
        let holder = app.user("h").await;
        for id in ["shown", "newer", "kept"] {
            assert_eq!(
                holder.get(&format!("/fhir/Observation/{id}")).await.0,
                200,
                "{id}"
            );
        }
        let after = probe.mappings(
            "[[rule]]\nsection = \"metingen\"\ncode = \"http://loinc.org|2708-6\"\ndelay = \"never\"\n",
        );
        let restarted = app.restart_with(&after, &day(16)).await;
        let holder = restarted.user("h").await;
        assert_eq!(holder.get("/fhir/Observation/shown").await.0, 404);
        assert_eq!(
            holder.get("/fhir/Observation/newer").await.0,
            404,
            "its newest version is under never now"
        );
        assert_eq!(holder.get("/fhir/Observation/kept").await.0, 200);
        let h = history(&holder, &day(15)).await;
        assert!(h.contains(&entry("DELETE", "Observation/shown")), "{h:?}");
        assert!(h.contains(&entry("DELETE", "Observation/newer")), "{h:?}");
        let (status, out) = restarted
            .admin_post("/admin/release", &json!({"resource": "Observation/shown"}))
            .await;
        assert_eq!((status, reason(&out)), (409, "conflict"));
    }
);

// Found by attacking: parallel holds and releases of one resource on PostgreSQL used two
// connections each and starved the pool; every one is answered now.
on_both!(parallel_holds_and_releases_all_answer, |b| async move {
    let app = TestApp::spawn(b).await;
    app.push_ok(&transaction(&[
        patient("p1"),
        appointment("a", "p1", "2026-03-10T10:00:00Z"),
    ]))
    .await;
    let mut tasks = Vec::new();
    for k in 0..16 {
        let (http, url) = (
            app.http.clone(),
            app.url(if k % 3 == 0 {
                "/admin/release"
            } else {
                "/admin/hold"
            }),
        );
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(ADMIN)
                .json(&json!({"resource": "Appointment/a"}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let r = app
        .http
        .get(app.url("/admin/explain?resource=Appointment/a"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let e: Value = r.json().await.unwrap();
    let numbers: Vec<i64> = e["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=numbers.len() as i64).collect::<Vec<_>>());
});

// Found by attacking: one source could find another source's resources through
// `ifNoneExist` or a conditional reference; lookups stay within the source.
on_both!(
    a_source_learns_nothing_of_another_sources_resources,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[patient("p1")])).await;
        let other = app.token(("other-push", "other-push-secret-1")).await;
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0b1e2f7a-0000-4000-8000-000000000001",
             "resource": {"resourceType": "Patient", "name": [{"family": "Probe"}],
                          "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999911120"}]},
             "request": {"method": "POST", "url": "Patient",
                         "ifNoneExist": "identifier=http://fhir.nl/fhir/NamingSystem/bsn|999911120"}}]});
        let r = app
            .http
            .post(app.url("/ingest/other"))
            .bearer_auth(&other)
            .json(&bundle)
            .send()
            .await
            .unwrap();
        let out: Value = r.json().await.unwrap();
        assert_eq!(
            out["entry"][0]["response"]["status"], "201 Created",
            "{out}"
        );
        assert!(!out.to_string().contains("Patient/p1"), "{out}");
        let conditional = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Appointment", "id": "x", "status": "booked",
                "start": "2026-03-10T10:00:00Z", "end": "2026-03-10T11:00:00Z",
                "participant": [{"actor": {"reference": "Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|999911120"}, "status": "accepted"}]},
             "request": {"method": "PUT", "url": "Appointment/x"}}]});
        let r = app
            .http
            .post(app.url("/ingest/other"))
            .bearer_auth(&other)
            .json(&conditional)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let out: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{out}");
        assert!(
            !out.to_string().contains("Patient/p1"),
            "resolved within its own source: {out}"
        );
    }
);

// Found by attacking: a waiver dies with the holdership of the one who chose it.
on_both!(
    a_waiver_dies_with_the_holdership_that_made_it,
    |b| async move {
        let probe = TestApp::spawn(b).await;
        let app = probe
            .restart_with("[embargo]\nclient_may_waive = true\n", T0)
            .await;
        app.push_ok(&transaction(&[patient("p1")])).await;
        let client = app.holder("self", "p1").await;
        let (status, out) = client
            .put_json(
                "/portal/preferences",
                &json!({"patient": "Patient/p1", "immediate_sections": ["metingen"]}),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        app.push_ok(&transaction(&[observation(
            "before",
            "p1",
            "29463-7",
            "2026-03-01",
        )]))
        .await;
        assert_eq!(client.get("/fhir/Observation/before").await.0, 200);
        let (status, _, curator) = app.link_as("curator", "p1", "curator").await;
        assert_eq!(status, 201);
        app.push_ok(&transaction(&[observation(
            "after",
            "p1",
            "29463-7",
            "2026-03-01",
        )]))
        .await;
        assert_eq!(
            curator.get("/fhir/Observation/after").await.0,
            404,
            "the former holder's choice no longer waives the delay"
        );
        let (_, prefs) = curator.get("/portal/preferences?patient=p1").await;
        assert_eq!(prefs["immediate_sections"], json!([]), "{prefs}");
    }
);

// Found by a second attack: a reference from inside a contained resource opens nothing for a
// role that has redaction rules (the contained resource may be dropped or redacted itself).
on_both!(
    references_from_contained_resources_open_nothing_for_redacted_roles,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let mut p1 = patient("p1");
        p1["contained"] = json!([
            {"resourceType": "Organization", "id": "co", "name": "Buurtzorg", "partOf": {"reference": "Organization/secret"}},
            {"resourceType": "Practitioner", "id": "gp", "name": [{"family": "Huisarts"}],
             "address": [{"use": "home", "city": "Utrecht", "extension": [{"url": "http://example.org/praktijk",
                 "valueReference": {"reference": "Organization/home"}}]}]}
        ]);
        p1["contact"] =
            json!([{"name": {"text": "Buurvrouw"}, "organization": {"reference": "#co"}}]);
        p1["generalPractitioner"] = json!([{"reference": "#gp"}]);
        app.push_ok(&transaction(&[
            json!({"resourceType": "Organization", "id": "secret", "name": "Kliniek"}),
            json!({"resourceType": "Organization", "id": "home", "name": "Thuispraktijk"}),
            p1,
        ]))
        .await;
        let holder = app.holder("h", "p1").await;
        let member = app.member(&holder, "m", "p1", &["dossier"], false).await;
        for org in ["secret", "home"] {
            assert_eq!(
                holder.get(&format!("/fhir/Organization/{org}")).await.0,
                200
            );
            assert_eq!(
                member.get(&format!("/fhir/Organization/{org}")).await.0,
                404,
                "Organization/{org}"
            );
        }
        let (_, bundle) = member.get("/fhir/Organization").await;
        assert_eq!(bundle["total"], 0, "{bundle}");
    }
);

// Found by a second attack: a version that arrives while a shown entry is held waits its own
// delay; the hold's copy of the shown content starts no wait it could join.
on_both!(
    a_version_arriving_during_a_hold_waits_its_own_delay,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("ho", "p1", "29463-7", "2026-03-01"),
        ]))
        .await;
        app.holder("h", "p1").await;
        app.set_clock(&day(15)).await;
        let (status, out) = app
            .admin_post(
                "/admin/hold",
                &json!({"resource": "Observation/ho", "until": day(16)}),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        app.set_clock(&sluis::time::instant(at(&day(15)) + Duration::hours(3)))
            .await;
        let mut changed = observation("ho", "p1", "29463-7", "2026-03-01");
        changed["valueQuantity"]["value"] = json!(99);
        app.push_ok(&transaction(&[changed])).await;
        for (d, status) in [(16, 404), (28, 404), (30, 200)] {
            app.set_clock(&day(d)).await;
            let holder = app.user("h").await;
            let (got, obs) = holder.get("/fhir/Observation/ho").await;
            assert_eq!(got, status, "day {d}: {obs}");
            if got == 200 {
                assert_eq!(obs["valueQuantity"]["value"], 99);
            }
        }
    }
);

// Found by a second attack: rules changed at a restart that put a shown entry in another
// section take it from those who saw it there.
on_both!(
    rules_that_move_a_shown_entry_to_another_section_take_it_off,
    |b| async move {
        let probe = TestApp::spawn(b).await;
        let before = probe.mappings("");
        let app = probe.restart_with(&before, T0).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("moved", "p1", "2708-6", "2026-03-01"),
            observation("kept", "p1", "29463-7", "2026-03-01"),
        ]))
        .await;
        let holder = app.holder("h", "p1").await;
        app.member(&holder, "m", "p1", &["metingen"], false).await;
        app.set_clock(&day(15)).await;
        let member = app.user("m").await;
        assert_eq!(member.get("/fhir/Observation/moved").await.0, 200);
        // The same sections, with one code of Observations placed in `rapportages`.
        let dir = probe._dir_path().join("sections-moved");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("sections.toml"),
            sluis::mapping::DEFAULT_SECTIONS.replacen(
                "\n[[rule]]",
                "\n[[rule]]\nsection = \"rapportages\"\ntype = \"Observation\"\ncode = \"http://loinc.org|2708-6\"\n\n[[rule]]",
                1,
            ),
        )
        .unwrap();
        std::fs::write(dir.join("embargo.toml"), sluis::mapping::DEFAULT_EMBARGO).unwrap();
        let restarted = app
            .restart_with(
                &format!("[mappings]\ndir = \"{}\"\n", dir.display()),
                &day(16),
            )
            .await;
        let member = restarted.user("m").await;
        assert_eq!(member.get("/fhir/Observation/moved").await.0, 404);
        assert_eq!(member.get("/fhir/Observation/kept").await.0, 200);
        let h = history(&member, &day(15)).await;
        assert!(h.contains(&entry("DELETE", "Observation/moved")), "{h:?}");
        let holder = restarted.user("h").await;
        assert_eq!(
            holder.get("/fhir/Observation/moved").await.0,
            200,
            "shown again at once, in its new section"
        );
    }
);

// Found by a second attack: a grant's id tells nothing to someone who may not manage it; the
// caller's own refusal comes first.
on_both!(grant_ids_tell_nothing_to_others, |b| async move {
    let app = TestApp::spawn(b).await;
    app.push_ok(&transaction(&[patient("p1")])).await;
    let holder = app.holder("h", "p1").await;
    app.member(&holder, "m", "p1", &["agenda"], false).await;
    let (_, grants) = holder.get("/portal/grants?patient=p1").await;
    let live = grants["grants"][0]["id"].as_str().unwrap().to_string();
    let stranger = app.user("stranger").await;
    for id in [live.as_str(), "999999"] {
        let (status, out) = stranger
            .patch(&format!("/portal/grants/{id}"), &json!({"can_post": true}))
            .await;
        assert_eq!((status, reason(&out)), (403, "not-linked"), "{id}: {out}");
        assert_eq!(
            stranger.delete(&format!("/portal/grants/{id}")).await,
            403,
            "{id}"
        );
    }
});
