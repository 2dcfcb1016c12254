//! The explanation delay (R11, R12, R14): entries are held back by their rule, released by
//! time or by staff, and withdrawn at once; portals polling `_lastUpdated` miss nothing.

use crate::helpers::*;
use crate::on_both;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn at(text: &str) -> DateTime<Utc> {
    sluis::time::parse_instant(text).unwrap()
}

fn iso(t: DateTime<Utc>) -> String {
    sluis::time::instant(t)
}

fn t0_plus(d: Duration) -> String {
    iso(at(T0) + d)
}

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

on_both!(
    holder_sees_new_observation_after_fourteen_days_and_appointment_at_once,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("o1", "p1", "29463-7", "2026-03-02T08:00:00Z"),
            appointment("a1", "p1", "2026-03-10T10:00:00Z"),
        ]))
        .await;
        let u = app.holder("u1", "p1").await;
        assert_eq!(
            u.get("/fhir/Appointment/a1").await.0,
            200,
            "an appointment shows at once"
        );
        let (status, outcome) = u.get("/fhir/Observation/o1").await;
        assert_eq!(
            (status, reason(&outcome)),
            (404, "not-found"),
            "hidden is 404, like absent"
        );
        let (_, bundle) = u.get("/fhir/Observation?patient=p1").await;
        assert_eq!(bundle["total"], 0);
        assert!(ids(&bundle).is_empty());
        app.set_clock(&t0_plus(Duration::days(14) - Duration::seconds(1)))
            .await;
        let u = app.user("u1").await;
        assert_eq!(
            u.get("/fhir/Observation/o1").await.0,
            404,
            "one second before"
        );
        app.set_clock(&t0_plus(Duration::days(14))).await;
        let (status, obs) = u.get("/fhir/Observation/o1").await;
        assert_eq!(status, 200);
        assert_eq!(obs["meta"]["lastUpdated"], t0_plus(Duration::days(14)));
        let (_, bundle) = u.get("/fhir/Observation?patient=p1&_summary=count").await;
        assert_eq!(bundle["total"], 1);
    }
);

on_both!(manual_and_never_rules_and_staff_release, |b| async move {
    let probe = TestApp::spawn(b.clone()).await;
    let mappings = probe.mappings(
        "[[rule]]\nsection = \"metingen\"\ncode = \"http://loinc.org|2708-6\"\ndelay = \"manual\"\n\
         [[rule]]\nsection = \"metingen\"\ncode = \"http://loinc.org|8867-4\"\ndelay = \"never\"\n",
    );
    let app = probe.restart_with(&mappings, T0).await;
    app.push_ok(&transaction(&[
        patient("p1"),
        observation("manual", "p1", "2708-6", "2026-03-02"),
        observation("never", "p1", "8867-4", "2026-03-02"),
    ]))
    .await;
    app.set_clock(&t0_plus(Duration::days(60))).await;
    let u = app.holder("u1", "p1").await;
    assert_eq!(
        u.get("/fhir/Observation/manual").await.0,
        404,
        "manual waits for staff"
    );
    assert_eq!(u.get("/fhir/Observation/never").await.0, 404);
    let (status, out) = app
        .admin_post(
            "/admin/release",
            &json!({"resource": "Observation/manual", "by": "zr. Visser"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["shown_version"], 1);
    assert_eq!(out["actions"][0]["by"], "zr. Visser");
    let (_, obs) = u.get("/fhir/Observation/manual").await;
    assert_eq!(
        obs["meta"]["lastUpdated"],
        t0_plus(Duration::days(60)),
        "visible from the release"
    );
    let (status, out) = app
        .admin_post("/admin/release", &json!({"resource": "Observation/never"}))
        .await;
    assert_eq!((status, reason(&out)), (409, "conflict"));
    assert_eq!(u.get("/fhir/Observation/never").await.0, 404);
    let (status, _) = app
        .admin_post("/admin/release", &json!({"resource": "Observation/absent"}))
        .await;
    assert_eq!(status, 404, "only a hold can be placed in advance");
    for bad in [
        json!({"resource": "Nope/1"}),
        json!({"resource": "Observation/manual", "until": "x"}),
        json!({}),
    ] {
        let (status, out) = app.admin_post("/admin/release", &bad).await;
        assert_eq!(status, 400, "{bad}: {out}");
    }
});

on_both!(
    holds_keep_back_also_when_placed_before_arrival,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[patient("p1")])).await;
        let (status, out) = app
            .admin_post(
                "/admin/hold",
                &json!({"resource": "Appointment/a1", "by": "dr. Smit", "note": "eerst bespreken"}),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["stored"], false);
        let until = t0_plus(Duration::days(3));
        app.admin_post(
            "/admin/hold",
            &json!({"resource": "Appointment/a2", "until": until}),
        )
        .await;
        app.admin_post(
            "/admin/hold",
            &json!({"resource": "Observation/o1", "until": t0_plus(Duration::days(2))}),
        )
        .await;
        app.push_ok(&transaction(&[
            appointment("a1", "p1", "2026-03-20T10:00:00Z"),
            appointment("a2", "p1", "2026-03-20T11:00:00Z"),
            observation("o1", "p1", "29463-7", "2026-03-02"),
        ]))
        .await;
        let u = app.holder("u1", "p1").await;
        assert_eq!(
            u.get("/fhir/Appointment/a1").await.0,
            404,
            "held until released"
        );
        assert_eq!(
            u.get("/fhir/Appointment/a2").await.0,
            404,
            "held until day 3"
        );
        app.set_clock(&until).await;
        let u = app.user("u1").await;
        assert_eq!(u.get("/fhir/Appointment/a2").await.0, 200);
        assert_eq!(u.get("/fhir/Appointment/a1").await.0, 404);
        assert_eq!(
            u.get("/fhir/Observation/o1").await.0,
            404,
            "a hold never shortens the rule"
        );
        let (_, out) = app
            .admin_post("/admin/release", &json!({"resource": "Appointment/a1"}))
            .await;
        assert_eq!(out["versions"][0]["state"], "shown");
        assert_eq!(u.get("/fhir/Appointment/a1").await.0, 200);
        // The explanation names the rule, the moments and who acted.
        let r = app
            .http
            .get(app.url("/admin/explain?resource=Observation/o1&client=caren&user=u1"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let explain: Value = r.json().await.unwrap();
        assert_eq!(explain["versions"][0]["state"], "waiting", "{explain:#}");
        assert_eq!(explain["next_release"]["at"], t0_plus(Duration::days(14)));
        assert!(
            explain["rule"].as_str().unwrap().contains("P14D"),
            "{explain}"
        );
        assert_eq!(explain["actions"][0]["action"], "hold");
        assert_eq!(explain["access"]["visible_now"], false);
        assert_eq!(
            explain["access"]["visible_from"],
            t0_plus(Duration::days(14))
        );
        let r = app
            .http
            .get(app.url("/admin/explain?resource=Appointment/a1"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let explain: Value = r.json().await.unwrap();
        let actions = explain["actions"].as_array().unwrap();
        assert_eq!(
            (actions[0]["action"].as_str(), actions[0]["by"].as_str()),
            (Some("hold"), Some("dr. Smit"))
        );
        assert_eq!(actions[1]["action"], "release");
        let r = app
            .http
            .get(app.url("/admin/explain?resource=Appointment/a1&foo=1"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }
);

on_both!(
    a_source_marks_an_entry_as_explained_with_the_release_tag,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let mut explained = observation("o1", "p1", "29463-7", "2026-03-02");
        explained["meta"] = json!({"tag": [{"system": "urn:sluis:release", "code": "explained"}]});
        app.push_ok(&transaction(&[
            patient("p1"),
            explained,
            observation("o2", "p1", "29463-7", "2026-03-02"),
        ]))
        .await;
        let u = app.holder("u1", "p1").await;
        assert_eq!(u.get("/fhir/Observation/o1").await.0, 200);
        assert_eq!(u.get("/fhir/Observation/o2").await.0, 404);
    }
);

on_both!(
    a_new_version_waits_its_own_delay_while_the_old_one_stays_shown,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("o1", "p1", "29463-7", "2026-03-02"),
        ]))
        .await;
        app.set_clock(&t0_plus(Duration::days(20))).await;
        let mut v2 = observation("o1", "p1", "29463-7", "2026-03-02");
        v2["valueQuantity"]["value"] = json!(70);
        app.put_resource(&v2).await;
        let u = app.holder("u1", "p1").await;
        let (_, obs) = u.get("/fhir/Observation/o1").await;
        assert_eq!(obs["meta"]["versionId"], "1");
        assert_eq!(obs["meta"]["lastUpdated"], t0_plus(Duration::days(14)));
        app.set_clock(&t0_plus(Duration::days(34))).await;
        let u = app.user("u1").await;
        let (_, obs) = u.get("/fhir/Observation/o1").await;
        assert_eq!(obs["meta"]["versionId"], "2");
        assert_eq!(obs["valueQuantity"]["value"], 70);
        assert_eq!(obs["meta"]["lastUpdated"], t0_plus(Duration::days(34)));
        // A withdrawal is immediate and shows in _history as a DELETE.
        let before = t0_plus(Duration::days(34) + Duration::minutes(1));
        app.set_clock(&t0_plus(Duration::days(35))).await;
        assert_eq!(app.delete_resource("Observation", "o1").await, 204);
        let u = app.user("u1").await;
        assert_eq!(u.get("/fhir/Observation/o1").await.0, 404);
        let (status, history) = u.get(&format!("/fhir/_history?_since={before}")).await;
        assert_eq!(status, 200, "{history}");
        assert_eq!(history["type"], "history");
        let entry = &history["entry"][0];
        assert_eq!(entry["request"]["method"], "DELETE", "{history:#}");
        assert_eq!(entry["request"]["url"], "Observation/o1");
        assert!(entry.get("resource").is_none());
    }
);

on_both!(
    on_update_immediate_shows_new_versions_at_once,
    |b| async move {
        let app = TestApp::spawn_with(b, "[embargo]\non_update = \"immediate\"\n").await;
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("o1", "p1", "29463-7", "2026-03-02"),
        ]))
        .await;
        app.set_clock(&t0_plus(Duration::days(20))).await;
        let mut v2 = observation("o1", "p1", "29463-7", "2026-03-02");
        v2["valueQuantity"]["value"] = json!(70);
        app.put_resource(&v2).await;
        let u = app.holder("u1", "p1").await;
        let (_, obs) = u.get("/fhir/Observation/o1").await;
        assert_eq!(obs["meta"]["versionId"], "2");
    }
);

on_both!(
    a_correction_of_a_waiting_entry_keeps_its_moment_and_the_old_text_never_shows,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("o1", "p1", "29463-7", "2026-03-02"),
        ]))
        .await;
        app.set_clock(&t0_plus(Duration::days(5))).await;
        let mut v2 = observation("o1", "p1", "29463-7", "2026-03-02");
        v2["valueQuantity"]["value"] = json!(70);
        app.put_resource(&v2).await;
        app.set_clock(&t0_plus(Duration::days(14))).await;
        let u = app.holder("u1", "p1").await;
        let (_, obs) = u.get("/fhir/Observation/o1").await;
        assert_eq!(obs["meta"]["versionId"], "2");
        let (_, history) = u.get("/fhir/_history").await;
        assert_eq!(
            history["total"], 2,
            "the Patient and version 2 of o1: {history:#}"
        );
    }
);

on_both!(
    entered_in_error_is_withdrawn_at_once_even_while_waiting,
    |b| async move {
        let app = TestApp::spawn_with(b, "[embargo]\ndefault = \"immediate\"\n").await;
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("o1", "p1", "29463-7", "2026-03-02"),
        ]))
        .await;
        let u = app.holder("u1", "p1").await;
        assert_eq!(u.get("/fhir/Observation/o1").await.0, 200);
        app.set_clock(&t0_plus(Duration::hours(1))).await;
        let mut wrong = observation("o1", "p1", "29463-7", "2026-03-02");
        wrong["status"] = json!("entered-in-error");
        app.put_resource(&wrong).await;
        let u = app.user("u1").await;
        assert_eq!(u.get("/fhir/Observation/o1").await.0, 404);
        let (_, history) = u.get(&format!("/fhir/_history?_since={T0}")).await;
        let entries = history["entry"].as_array().unwrap();
        assert!(
            entries
                .iter()
                .any(|e| e["request"]["method"] == "DELETE"
                    && e["request"]["url"] == "Observation/o1"),
            "{history:#}"
        );
        // Never shown, then withdrawn: nothing to tell (hidden and absent are the same).
        let fresh = app.restart_with("", &t0_plus(Duration::hours(2))).await;
        fresh
            .push_ok(&transaction(&[observation(
                "o2",
                "p1",
                "29463-7",
                "2026-03-02",
            )]))
            .await;
        assert_eq!(fresh.delete_resource("Observation", "o2").await, 204);
        let (_, history) = app
            .user("u1")
            .await
            .get(&format!("/fhir/_history?_since={T0}"))
            .await;
        assert!(
            !history.to_string().contains("Observation/o2"),
            "{history:#}"
        );
        let (status, outcome) = u.get("/fhir/_history?_since=yesterday").await;
        assert_eq!((status, reason(&outcome)), (400, "unknown-parameter"));
        let (status, _) = u.get("/fhir/_history?_type=Observation").await;
        assert_eq!(status, 400);
    }
);

on_both!(
    changed_rules_at_restart_reschedule_waiting_entries_only,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("old", "p1", "29463-7", "2026-02-01"),
        ]))
        .await;
        app.set_clock(&t0_plus(Duration::days(15))).await;
        app.push_ok(&transaction(&[observation(
            "new",
            "p1",
            "29463-7",
            "2026-03-16",
        )]))
        .await;
        let u = app.holder("u1", "p1").await;
        assert_eq!(u.get("/fhir/Observation/old").await.0, 200);
        assert_eq!(u.get("/fhir/Observation/new").await.0, 404);
        // The organisation shortens the delay for measurements and restarts two days later.
        let mappings = app.mappings("[[rule]]\nsection = \"metingen\"\ndelay = \"P7D\"\n");
        let restarted = app
            .restart_with(&mappings, &t0_plus(Duration::days(17)))
            .await;
        let u = restarted.user("u1").await;
        assert_eq!(
            u.get("/fhir/Observation/new").await.0,
            404,
            "five days after arrival"
        );
        restarted.set_clock(&t0_plus(Duration::days(22))).await;
        let (_, obs) = restarted
            .user("u1")
            .await
            .get("/fhir/Observation/new")
            .await;
        assert_eq!(
            obs["meta"]["lastUpdated"],
            t0_plus(Duration::days(22)),
            "arrival + 7 days"
        );
        // A stricter rule later does not hide what is shown.
        let manual = app.mappings("[[rule]]\nsection = \"metingen\"\ndelay = \"manual\"\n");
        let again = restarted
            .restart_with(&manual, &t0_plus(Duration::days(23)))
            .await;
        let u = again.user("u1").await;
        assert_eq!(u.get("/fhir/Observation/old").await.0, 200);
        assert_eq!(u.get("/fhir/Observation/new").await.0, 200);
    }
);

on_both!(
    the_holder_may_waive_the_delay_only_where_allowed,
    |b| async move {
        let app = TestApp::spawn(b.clone()).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("o1", "p1", "29463-7", "2026-03-02"),
        ]))
        .await;
        let u = app.holder("u1", "p1").await;
        let (status, outcome) = u
            .put_json(
                "/portal/preferences",
                &json!({"patient": "Patient/p1", "immediate_sections": ["metingen"]}),
            )
            .await;
        assert_eq!(
            (status, reason(&outcome)),
            (409, "conflict"),
            "not allowed by this organisation"
        );

        let mappings = app.mappings("[[rule]]\nsection = \"metingen\"\ncode = \"http://loinc.org|2708-6\"\ndelay = \"manual\"\n");
        let allowed = app
            .restart_with(
                &format!("{mappings}[embargo]\nclient_may_waive = true\n"),
                T0,
            )
            .await;
        allowed
            .push_ok(&transaction(&[observation(
                "manual",
                "p1",
                "2708-6",
                "2026-03-02",
            )]))
            .await;
        let u = allowed.user("u1").await;
        let (status, out) = u
            .put_json(
                "/portal/preferences",
                &json!({"patient": "Patient/p1", "immediate_sections": ["metingen"]}),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        assert!(out["warning"].as_str().unwrap().contains("direct"), "{out}");
        assert_eq!(
            u.get("/fhir/Observation/o1").await.0,
            200,
            "the waiting measurement shows now"
        );
        assert_eq!(
            u.get("/fhir/Observation/manual").await.0,
            404,
            "manual is not waivable"
        );
        allowed
            .push_ok(&transaction(&[observation(
                "o3",
                "p1",
                "29463-7",
                "2026-03-02",
            )]))
            .await;
        assert_eq!(
            u.get("/fhir/Observation/o3").await.0,
            200,
            "and new ones show at once"
        );
        let (_, prefs) = u.get("/portal/preferences?patient=p1").await;
        assert_eq!(prefs["immediate_sections"], json!(["metingen"]));
        assert_eq!(prefs["since"], T0);
        let (status, _) = u
            .put_json(
                "/portal/preferences",
                &json!({"patient": "p1", "immediate_sections": ["nope"]}),
            )
            .await;
        assert_eq!(status, 400);
        let (status, _) = u
            .put_json("/portal/preferences", &json!({"patient": "p1"}))
            .await;
        assert_eq!(status, 400);
        // Back to the delay: what is shown stays, new entries wait again.
        u.put_json(
            "/portal/preferences",
            &json!({"patient": "p1", "immediate_sections": []}),
        )
        .await;
        assert_eq!(u.get("/fhir/Observation/o1").await.0, 200);
        allowed
            .push_ok(&transaction(&[observation(
                "o4",
                "p1",
                "29463-7",
                "2026-03-02",
            )]))
            .await;
        assert_eq!(u.get("/fhir/Observation/o4").await.0, 404);
        let other = allowed.user("stranger").await;
        let (status, outcome) = other
            .put_json(
                "/portal/preferences",
                &json!({"patient": "p1", "immediate_sections": []}),
            )
            .await;
        assert_eq!((status, reason(&outcome)), (403, "not-linked"));
    }
);

// Acceptance: a portal polling `_lastUpdated=gt<previous poll>` every hour for 30 days sees
// every version exactly when it becomes visible, and nothing earlier.
on_both!(
    hourly_polling_for_thirty_days_misses_nothing_and_sees_nothing_early,
    |b| async move {
        let probe = TestApp::spawn(b.clone()).await;
        let mappings = probe.mappings(
        "[[rule]]\nsection = \"metingen\"\ncode = \"http://loinc.org|8310-5\"\ndelay = \"PT48H\"\n\
         [[rule]]\nsection = \"metingen\"\ncode = \"http://loinc.org|2708-6\"\ndelay = \"manual\"\n",
    );
        // Thirty days of hourly polls take seconds here: past the real-time request limit.
        let config = format!(
            "{mappings}\n[limits]\nuser_requests_per_minute = 100000\ntoken_requests_per_minute = 100000\nadmin_requests_per_minute = 100000\nclient_requests_per_minute = 1000000\n"
        );
        let app = probe.restart_with(&config, T0).await;
        app.push_ok(&transaction(&[patient("p1")])).await;
        let u = app.holder("poller", "p1").await;
        let start = at(T0);
        let hour = Duration::hours(1);
        // What arrives when (hour, minute), and when each version must become visible.
        let mut expected: BTreeMap<(String, String), DateTime<Utc>> = BTreeMap::new();
        let mut plan: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
        for h in (3..700).step_by(41) {
            let arrive = start + Duration::hours(h) + Duration::minutes(17);
            let w = observation(&format!("w{h}"), "p1", "29463-7", "2026-03-02");
            let t = observation(&format!("t{h}"), "p1", "8310-5", "2026-03-02");
            let a = appointment(&format!("a{h}"), "p1", "2026-04-01T10:00:00Z");
            expected.insert((format!("w{h}"), "1".into()), arrive + Duration::days(14));
            expected.insert((format!("t{h}"), "1".into()), arrive + Duration::hours(48));
            expected.insert((format!("a{h}"), "1".into()), arrive);
            plan.entry(h).or_default().extend([w, t, a]);
        }
        // A correction of a shown weight, waiting its own delay.
        let mut w3v2 = observation("w3", "p1", "29463-7", "2026-03-02");
        w3v2["valueQuantity"]["value"] = json!(66);
        plan.entry(400).or_default().push(w3v2);
        expected.insert(
            ("w3".into(), "2".into()),
            start + Duration::hours(400) + Duration::minutes(17) + Duration::days(14),
        );
        // A manual one, released by staff at hour 300 (+17 minutes).
        plan.entry(10)
            .or_default()
            .push(observation("m1", "p1", "2708-6", "2026-03-02"));
        let released = start + Duration::hours(300) + Duration::minutes(17);
        expected.insert(("m1".into(), "1".into()), released);

        let end = start + Duration::days(30);
        let mut seen: BTreeMap<(String, String), DateTime<Utc>> = BTreeMap::new();
        let mut previous = start;
        let mut h = 0;
        while start + hour * (h + 1) <= end {
            let arrive = start + hour * h + Duration::minutes(17);
            if let Some(resources) = plan.get(&i64::from(h)) {
                app.set_clock(&iso(arrive)).await;
                app.push_ok(&transaction(resources)).await;
            }
            if start + hour * h + Duration::minutes(17) == released {
                app.set_clock(&iso(released)).await;
                app.admin_post("/admin/release", &json!({"resource": "Observation/m1"}))
                    .await;
            }
            let poll = start + hour * (h + 1);
            app.set_clock(&iso(poll)).await;
            let u = app.user(&u.id).await;
            for ty in ["Observation", "Appointment"] {
                let url = format!("/fhir/{ty}?_lastUpdated=gt{}&_count=500", iso(previous));
                let (status, bundle) = u.get(&url).await;
                assert_eq!(status, 200, "{bundle}");
                for e in bundle["entry"].as_array().into_iter().flatten() {
                    let r = &e["resource"];
                    let key = (
                        r["id"].as_str().unwrap().to_string(),
                        r["meta"]["versionId"].as_str().unwrap().to_string(),
                    );
                    let last_updated = at(r["meta"]["lastUpdated"].as_str().unwrap());
                    assert!(
                        last_updated > previous && last_updated <= poll,
                        "{key:?} at {last_updated} outside ({previous}, {poll}]"
                    );
                    let want = expected
                        .get(&key)
                        .unwrap_or_else(|| panic!("unexpected {key:?}"));
                    assert_eq!(
                        last_updated, *want,
                        "{key:?} became visible at the wrong moment"
                    );
                    assert!(
                        seen.insert(key.clone(), poll).is_none(),
                        "{key:?} seen twice"
                    );
                }
            }
            previous = poll;
            h += 1;
        }
        for (key, want) in &expected {
            if *want <= end {
                let got = seen
                    .get(key)
                    .unwrap_or_else(|| panic!("{key:?} (visible {want}) never seen"));
                assert!(
                    *got >= *want && *got - *want < hour,
                    "{key:?} seen at {got}, visible at {want}"
                );
            } else {
                assert!(!seen.contains_key(key), "{key:?} seen before {want}");
            }
        }
        assert!(seen.len() > 40, "{}", seen.len());
    }
);

// The start that logs "rules changed since the last start" does so only when they did, or
// when a database from before the rules were recorded held entries to reschedule: not on the
// first start of a new database (`sluis demo`'s first line).
on_both!(
    a_first_start_reports_no_rule_change_unless_entries_were_rescheduled,
    |b| async move {
        use sluis::release::recompute::after_rule_change;
        let app = TestApp::spawn(b).await;
        assert_eq!(after_rule_change(&app.state).await.unwrap(), None);
        let forget = sluis::store::Sql::new("DELETE FROM settings WHERE key = 'rules_fingerprint'");
        app.state.db.execute(&forget).await.unwrap();
        assert_eq!(
            after_rule_change(&app.state).await.unwrap(),
            None,
            "first start"
        );
        // Entries still waiting (the default delay), rescheduled by a start with a shorter
        // delay for measurements.
        app.push_ok(&transaction(&[
            patient("p1"),
            observation("o1", "p1", "29463-7", "2026-03-01"),
        ]))
        .await;
        let mappings = app.mappings("[[rule]]\nsection = \"metingen\"\ndelay = \"P7D\"\n");
        let shorter = app.restart_with(&mappings, T0).await;
        assert_eq!(after_rule_change(&shorter.state).await.unwrap(), None);
        // Back to the first rules, in a database that has lost them: reported.
        app.state.db.execute(&forget).await.unwrap();
        let rescheduled = after_rule_change(&app.state).await.unwrap();
        assert_eq!(rescheduled, Some(1), "the Observation");
        assert_eq!(after_rule_change(&app.state).await.unwrap(), None);
    }
);
