//! Push ingest (contract §3, record systems): transactions, batches, single resources,
//! references, idempotency and bad input.

use crate::helpers::*;
use crate::on_both;
use serde_json::{Value, json};

const IMMEDIATE: &str = "[embargo]\ndefault = \"immediate\"\n";

on_both!(
    a_transaction_resolves_urn_references_and_keeps_source_ids,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0f8e7a52-1a7e-4f1e-9c61-3f1f2b9e0001",
             "resource": {"resourceType": "Patient", "id": "src-p1", "birthDate": "1940-01-01"},
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:0f8e7a52-1a7e-4f1e-9c61-3f1f2b9e0002",
             "resource": {"resourceType": "Observation", "status": "final",
                "code": {"text": "gewicht"}, "subject": {"reference": "urn:uuid:0f8e7a52-1a7e-4f1e-9c61-3f1f2b9e0001"},
                "valueQuantity": {"value": 64.50}},
             "request": {"method": "POST", "url": "Observation"}}
        ]});
        // Sent as text: the decimal is written `64.50` and must stay so.
        let text = bundle
            .to_string()
            .replace("\"value\":64.5}", "\"value\":64.50}");
        assert!(text.contains("64.50"));
        let token = app.token(SOURCE).await;
        let r = app
            .http
            .post(app.url("/ingest/ons"))
            .bearer_auth(token)
            .body(text)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let out: Value = r.json().await.unwrap();
        assert_eq!(out["type"], "transaction-response");
        assert_eq!(out["entry"][0]["response"]["status"], "201 Created");
        assert_eq!(
            out["entry"][0]["response"]["location"],
            "Patient/src-p1/_history/1"
        );
        let location = out["entry"][1]["response"]["location"].as_str().unwrap();
        assert!(
            location.starts_with("Observation/0f8e7a52-1a7e-4f1e-9c61-3f1f2b9e0002/"),
            "{location}"
        );

        let holder = app.holder("u1", "src-p1").await;
        let (status, obs) = holder
            .get("/fhir/Observation/0f8e7a52-1a7e-4f1e-9c61-3f1f2b9e0002")
            .await;
        assert_eq!(status, 200, "{obs}");
        assert_eq!(obs["subject"]["reference"], "Patient/src-p1");
        // The source's own JSON: the decimal keeps its exact form.
        let raw = app
            .http
            .get(app.url("/fhir/Observation/0f8e7a52-1a7e-4f1e-9c61-3f1f2b9e0002"))
            .bearer_auth(&holder.token)
            .header("x-portal-user", "u1")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(raw.contains("\"value\":64.50"), "{raw}");
        assert!(
            raw.starts_with("{\"resourceType\":\"Observation\""),
            "{raw}"
        );
    }
);

on_both!(
    a_transaction_with_one_invalid_entry_stores_nothing,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        let mut bad = observation("o2", "p1", "29463-7", "2026-03-01T08:00:00Z");
        bad["status"] = json!("maybe");
        let (status, outcome) = app
            .push(&transaction(&[
                patient("p1"),
                observation("o1", "p1", "29463-7", "2026-03-01"),
                bad,
            ]))
            .await;
        assert_eq!(status, 400, "{outcome}");
        assert_eq!(reason(&outcome), "invalid-resource");
        let expression = outcome["issue"][0]["expression"][0].as_str().unwrap();
        assert_eq!(expression, "Bundle.entry[2].resource.status");
        // Nothing was stored: the Patient does not exist for an activation code.
        let (status, _) = app
            .admin_post(
                "/admin/activation-codes",
                &json!({"patient": "Patient/p1", "relationship": "self"}),
            )
            .await;
        assert_eq!(status, 404);
    }
);

// fhirbolt checks each body as it will be stored, after ids and references are resolved: an
// entry only fhirbolt refuses (an `Extension.url` with a `_url` twin) still refuses the whole
// transaction, in the plain path and in the one that looks references up in the store, and
// only its own entry of a batch.
on_both!(
    an_entry_only_fhirbolt_refuses_is_refused_after_its_references_resolve,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        app.push_ok(&transaction(&[patient("p1")])).await;
        let mut bad = observation("o2", "p1", "29463-7", "2026-03-01");
        bad["extension"] = json!([{"url": "http://example.org/x", "_url": {"id": "u"},
            "valueString": "x"}]);
        let by_identifier = "Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|999911120";
        for subject in ["Patient/p1", by_identifier] {
            bad["subject"]["reference"] = json!(subject);
            let (status, outcome) = app
                .push(&transaction(&[
                    observation("o1", "p1", "29463-7", "2026-03-01"),
                    bad.clone(),
                ]))
                .await;
            assert_eq!(status, 400, "{outcome}");
            assert_eq!(reason(&outcome), "invalid-resource");
            assert_eq!(
                outcome["issue"][0]["expression"][0], "Bundle.entry[1].resource",
                "{outcome}"
            );
            let message = outcome["issue"][0]["diagnostics"].as_str().unwrap_or("");
            assert!(message.contains("not a valid R4 Observation"), "{outcome}");
        }
        let holder = app.holder("u1", "p1").await;
        let (status, _) = holder.get("/fhir/Observation/o1").await;
        assert_eq!(
            status, 404,
            "nothing of the refused transactions was stored"
        );

        let mut batch = transaction(&[observation("o1", "p1", "29463-7", "2026-03-01"), bad]);
        batch["type"] = json!("batch");
        let out = app.push_ok(&batch).await;
        assert_eq!(
            out["entry"][0]["response"]["status"], "201 Created",
            "{out}"
        );
        assert_eq!(
            out["entry"][1]["response"]["status"], "400 Bad Request",
            "{out}"
        );
    }
);

on_both!(
    the_same_version_delivered_twice_is_stored_once,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        let bundle = transaction(&[
            patient("p1"),
            observation("o1", "p1", "29463-7", "2026-03-01"),
        ]);
        app.push_ok(&bundle).await;
        let again = app.push_ok(&bundle).await;
        assert_eq!(again["entry"][1]["response"]["status"], "200 OK");
        assert_eq!(
            again["entry"][1]["response"]["location"],
            "Observation/o1/_history/1"
        );
        let mut changed = observation("o1", "p1", "29463-7", "2026-03-01");
        changed["valueQuantity"]["value"] = json!(65.0);
        let (status, _) = app.put_resource(&changed).await;
        assert_eq!(status, 200);
        let holder = app.holder("u1", "p1").await;
        let (_, obs) = holder.get("/fhir/Observation/o1").await;
        assert_eq!(obs["meta"]["versionId"], "2");
    }
);

on_both!(a_batch_answers_each_entry_on_its_own, |b| async move {
    let app = TestApp::spawn_with(b, IMMEDIATE).await;
    let mut bad = observation("o2", "p1", "29463-7", "2026-03-01");
    bad["effectiveDateTime"] = json!("gisteren");
    let mut bundle = transaction(&[
        patient("p1"),
        bad,
        observation("o3", "p1", "29463-7", "2026-03-01"),
    ]);
    bundle["type"] = json!("batch");
    let out = app.push_ok(&bundle).await;
    assert_eq!(out["type"], "batch-response");
    let statuses: Vec<&str> = out["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["201 Created", "400 Bad Request", "201 Created"]);
    assert_eq!(
        out["entry"][1]["response"]["outcome"]["issue"][0]["expression"][0],
        "Bundle.entry[1].resource.effectiveDateTime"
    );
});

on_both!(
    conditional_references_and_if_none_exist_resolve_like_a_fhir_server,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        let org = json!({"resourceType": "Organization", "id": "linde",
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/agb-z", "value": "12345678"}], "name": "De Linde"});
        app.push_ok(&transaction(&[org, patient("p1")])).await;
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:aa000000-0000-4000-8000-000000000001",
             "resource": {"resourceType": "Organization", "name": "Other",
                "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/agb-z", "value": "12345678"}]},
             "request": {"method": "POST", "url": "Organization", "ifNoneExist": "identifier=http://fhir.nl/fhir/NamingSystem/agb-z|12345678"}},
            {"resource": {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|999911120"},
                "performer": [{"reference": "Organization?identifier=http://fhir.nl/fhir/NamingSystem/agb-z|12345678"}]},
             "request": {"method": "PUT", "url": "Observation/o1"}}
        ]});
        let out = app.push_ok(&bundle).await;
        assert_eq!(
            out["entry"][0]["response"]["location"],
            "Organization/linde"
        );
        let holder = app.holder("u1", "p1").await;
        let (status, obs) = holder.get("/fhir/Observation/o1").await;
        assert_eq!(status, 200, "{obs}");
        assert_eq!(obs["subject"]["reference"], "Patient/p1");
        assert_eq!(obs["performer"][0]["reference"], "Organization/linde");

        let unmatched = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|000000000"}},
         "request": {"method": "PUT", "url": "Observation/o2"}}]});
        let (status, outcome) = app.push(&unmatched).await;
        assert_eq!(status, 400, "{outcome}");
        assert_eq!(outcome["issue"][0]["expression"][0], "Bundle.entry[0]");
        let dangling = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "id": "o3", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "urn:uuid:ab000000-0000-4000-8000-000000000009"}},
         "request": {"method": "PUT", "url": "Observation/o3"}}]});
        let (status, _) = app.push(&dangling).await;
        assert_eq!(status, 400);
    }
);

// Only identifiers have an index by value; other criteria of `ifNoneExist` and conditional
// references resolve the same, from the token rows.
on_both!(
    conditional_criteria_other_than_identifiers_resolve_too,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        app.push_ok(&transaction(&[
            patient("p1"),
            patient("p2"),
            observation("weight", "p1", "29463-7", "2026-02-01"),
            observation("height", "p2", "8302-2", "2026-02-01"),
        ]))
        .await;
        let post = |criteria: &str| {
            let mut new = observation("", "p1", "29463-7", "2026-02-01");
            new.as_object_mut().unwrap().remove("id");
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": new,
                 "request": {"method": "POST", "url": "Observation", "ifNoneExist": criteria}}]})
        };
        for (criteria, location) in [
            ("code=http://loinc.org|29463-7", "Observation/weight"),
            ("code=29463-7&status=final", "Observation/weight"),
            ("code=http://loinc.org|8302-2", "Observation/height"),
        ] {
            let out = app.push_ok(&post(criteria)).await;
            assert_eq!(
                out["entry"][0]["response"]["location"], location,
                "{criteria}: {out}"
            );
        }
        let (status, outcome) = app.push(&post("status=final")).await;
        assert_eq!(status, 412, "{outcome}");
        let reference = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Observation", "id": "o9", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient/p2"},
                "derivedFrom": [{"reference": "Observation?code=http://loinc.org|8302-2"}]},
             "request": {"method": "PUT", "url": "Observation/o9"}}]});
        app.push_ok(&reference).await;
        let holder = app.holder("u2", "p2").await;
        let (status, obs) = holder.get("/fhir/Observation/o9").await;
        assert_eq!(status, 200, "{obs}");
        assert_eq!(obs["derivedFrom"][0]["reference"], "Observation/height");
    }
);

on_both!(bad_input_gets_a_clear_4xx_never_a_500, |b| async move {
    let app = TestApp::spawn_with(b, "[limits]\nmax_body_bytes = 2048\n").await;
    let token = app.token(SOURCE).await;
    let send = |body: String, content_type: &'static str| {
        let app = &app;
        let token = token.clone();
        async move {
            let r = app
                .http
                .post(app.url("/ingest/ons"))
                .bearer_auth(token)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let outcome: Value = r.json().await.unwrap_or(Value::Null);
            (status, outcome)
        }
    };
    let cases: Vec<(String, &str, u16)> = vec![
        (
            "{\"resourceType\": \"Patient\",".into(),
            "application/fhir+json",
            400,
        ),
        ("".into(), "application/fhir+json", 400),
        ("[1,2,3]".into(), "application/fhir+json", 400),
        (
            "{\"resourceType\": \"Patiënt\", \"id\": \"x\"}".into(),
            "application/fhir+json",
            400,
        ),
        ("{\"id\": \"x\"}".into(), "application/fhir+json", 400),
        (
            "<Patient xmlns=\"http://hl7.org/fhir\"/>".into(),
            "application/fhir+xml",
            415,
        ),
        (
            format!(
                "{{\"resourceType\": \"Patient\", \"id\": \"x\", \"name\": [{{\"text\": \"{}\"}}]}}",
                "a".repeat(4000)
            ),
            "application/fhir+json",
            413,
        ),
        (
            "{\"resourceType\": \"Bundle\", \"type\": \"collection\"}".into(),
            "application/fhir+json",
            400,
        ),
        (
            "{\"resourceType\": \"Bundle\", \"type\": \"transaction\", \"entry\": {}}".into(),
            "application/fhir+json",
            400,
        ),
        // A Bundle's entries are parsed one by one, after the body was read through once.
        (
            "{\"resourceType\": \"Bundle\", \"type\": \"transaction\", \"entry\": [\n{\"request\": {\"method\": \"DELETE\", \"url\": \"Patient/x\"}},\n{\"resource\": ]}".into(),
            "application/fhir+json",
            400,
        ),
        (
            "{\"resourceType\": \"Bundle\", \"type\": \"batch\", \"entry\": \"x\"}".into(),
            "application/fhir+json",
            400,
        ),
        (
            "{\"resourceType\": \"Bundle\", \"type\": \"transaction\", \"entry\": [1, \"x\", null]}".into(),
            "application/fhir+json",
            400,
        ),
        (
            format!(
                "{{\"resourceType\": \"Bundle\", \"type\": \"transaction\", \"entry\": [{{\"request\": {{\"method\": \"PUT\", \"url\": \"Patient/x\"}}, \"resource\": {{\"resourceType\": \"Patient\", \"id\": \"x\", \"extension\": {}{}}}}}]}}",
                "[".repeat(300),
                "]".repeat(300)
            ),
            "application/fhir+json",
            400,
        ),
        (
            "{\"resourceType\": \"Patient\", \"id\": \"x\", \"birthDate\": \"1940-02-30\"}".into(),
            "application/fhir+json",
            400,
        ),
        (
            "{\"resourceType\": \"Patient\", \"id\": \"x\", \"gender\": \"banana\"}".into(),
            "application/json",
            400,
        ),
        (
            "{\"resourceType\": \"Patient\", \"id\": \"x\", \"unknownElement\": 1}".into(),
            "application/fhir+json",
            400,
        ),
    ];
    for (body, content_type, expected) in cases {
        let (status, outcome) = send(body.clone(), content_type).await;
        assert_eq!(status, expected, "{body:.80} -> {outcome}");
        if body.contains("\"resource\": ]") {
            assert!(
                outcome
                    .to_string()
                    .contains("malformed JSON at line 3, column 14"),
                "where the JSON breaks: {outcome}"
            );
        }
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{body:.80}");
        assert!(
            !reason(&outcome).is_empty(),
            "{body:.80} has a reason: {outcome}"
        );
    }
    // Wrong source, unknown source, no token.
    let r = app
        .http
        .post(app.url("/ingest/other"))
        .bearer_auth(&token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .http
        .post(app.url("/ingest/nope"))
        .bearer_auth(&token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .http
        .post(app.url("/ingest/ons"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let portal = app.token(PORTAL).await;
    let r = app
        .http
        .post(app.url("/ingest/ons"))
        .bearer_auth(portal)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a portal token cannot push");
    // PUT with a mismatching id or type, bad ids.
    let (status, _) = app
        .http
        .put(app.url("/ingest/ons/Patient/a"))
        .bearer_auth(&token)
        .json(&patient("b"))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 400);
    let r = app
        .http
        .put(app.url("/ingest/ons/Patient/bad%20id"))
        .bearer_auth(&token)
        .json(&patient("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .http
        .delete(app.url("/ingest/ons/Nope/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
});

on_both!(a_delete_withdraws_at_once, |b| async move {
    let app = TestApp::spawn_with(b, IMMEDIATE).await;
    app.push_ok(&transaction(&[
        patient("p1"),
        observation("o1", "p1", "29463-7", "2026-03-01"),
    ]))
    .await;
    let holder = app.holder("u1", "p1").await;
    assert_eq!(holder.get("/fhir/Observation/o1").await.0, 200);
    assert_eq!(app.delete_resource("Observation", "o1").await, 204);
    assert_eq!(holder.get("/fhir/Observation/o1").await.0, 404);
    assert_eq!(
        app.delete_resource("Observation", "o1").await,
        204,
        "deleting twice is harmless"
    );
    let mut eie = observation("o2", "p1", "29463-7", "2026-03-01");
    app.put_resource(&eie).await;
    assert_eq!(holder.get("/fhir/Observation/o2").await.0, 200);
    eie["status"] = json!("entered-in-error");
    app.put_resource(&eie).await;
    assert_eq!(holder.get("/fhir/Observation/o2").await.0, 404);
});

/// A transaction of `n` entries: Patient `patient` (fullUrl `urn:uuid:…01`) and Observations
/// `o1…` that refer to it by that urn; `o5` comes twice, at entries 5 and 50 (when `n` > 50).
fn large_transaction(n: usize, patient_id: &str) -> Value {
    let url = "urn:uuid:6c1d1c4e-0000-4000-8000-000000000001";
    let mut entries = vec![json!({"fullUrl": url, "resource": patient(patient_id),
        "request": {"method": "PUT", "url": format!("Patient/{patient_id}")}})];
    for i in 1..n {
        let id = if i == 50 {
            "o5".to_string()
        } else {
            format!("o{i}")
        };
        let mut o = observation(
            &id,
            patient_id,
            "29463-7",
            &format!("2026-03-01T08:{i:02}:00Z"),
        );
        o["subject"]["reference"] = json!(url);
        entries.push(json!({"resource": o, "request": {"method": "PUT", "url": format!("Observation/{id}")}}));
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

// A Bundle larger than a part of the checks on the cores (ingest/mod.rs splits it in one part
// per core), with the same resource twice and references across parts: what it stores and
// answers, and that a problem in a late entry leaves nothing stored.
on_both!(
    a_large_transaction_resolves_across_parts_and_stays_all_or_nothing,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        let out = app.push_ok(&large_transaction(60, "p1")).await;
        let entries = out["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 60);
        assert_eq!(entries[0]["response"]["status"], "201 Created");
        assert_eq!(entries[0]["response"]["location"], "Patient/p1/_history/1");
        assert_eq!(
            entries[5]["response"]["location"],
            "Observation/o5/_history/1"
        );
        // The second o5 is a second version, in the same transaction.
        assert_eq!(entries[50]["response"]["status"], "200 OK");
        assert_eq!(
            entries[50]["response"]["location"],
            "Observation/o5/_history/2"
        );
        assert_eq!(
            entries[59]["response"]["location"],
            "Observation/o59/_history/1"
        );
        let holder = app.holder("u1", "p1").await;
        let (status, o5) = holder.get("/fhir/Observation/o5").await;
        assert_eq!(status, 200, "{o5}");
        assert_eq!(o5["meta"]["versionId"], "2");
        assert_eq!(o5["subject"]["reference"], "Patient/p1");
        let (_, page) = holder.get("/fhir/Observation?patient=p1&_count=100").await;
        assert_eq!(page["entry"].as_array().map(Vec::len), Some(58), "{page}");

        // The same again, unchanged: every entry answers that nothing changed.
        let again = app.push_ok(&large_transaction(60, "p1")).await;
        assert_eq!(again["entry"][59]["response"]["status"], "200 OK");
        assert_eq!(
            again["entry"][59]["response"]["location"],
            "Observation/o59/_history/1"
        );

        // Refused for a late entry: nothing of it is stored (a new client p2, a changed o1).
        let mut bad = large_transaction(60, "p2");
        bad["entry"][1]["resource"]["valueQuantity"]["value"] = json!(70.0);
        bad["entry"][55]["resource"]["status"] = json!("maybe");
        let (status, outcome) = app.push(&bad).await;
        assert_eq!(status, 400, "{outcome}");
        assert_eq!(reason(&outcome), "invalid-resource");
        assert_eq!(
            outcome["issue"][0]["expression"][0],
            "Bundle.entry[55].resource.status"
        );
        // A reference to no entry of the Bundle, in a late part.
        let mut unresolved = large_transaction(60, "p2");
        unresolved["entry"][1]["resource"]["valueQuantity"]["value"] = json!(70.0);
        unresolved["entry"][40]["resource"]["subject"]["reference"] =
            json!("urn:uuid:6c1d1c4e-0000-4000-8000-0000000000ff");
        let (status, outcome) = app.push(&unresolved).await;
        assert_eq!(status, 400, "{outcome}");
        let text = outcome.to_string();
        assert!(text.contains("names no entry of this Bundle"), "{text}");
        assert!(text.contains("Bundle.entry[40]"), "{text}");
        // Both: the invalid entry is reported (every entry is checked before references).
        unresolved["entry"][50]["resource"]["status"] = json!("maybe");
        let (status, outcome) = app.push(&unresolved).await;
        assert_eq!(status, 400, "{outcome}");
        assert_eq!(
            outcome["issue"][0]["expression"][0],
            "Bundle.entry[50].resource.status"
        );
        let (_, o1) = holder.get("/fhir/Observation/o1").await;
        assert_eq!(o1["meta"]["versionId"], "1", "{o1}");
        assert_eq!(o1["valueQuantity"]["value"], json!(64.50));
        let (status, _) = app
            .admin_post(
                "/admin/activation-codes",
                &json!({"patient": "Patient/p2", "relationship": "self"}),
            )
            .await;
        assert_eq!(status, 404);
    }
);

on_both!(
    a_bundle_of_more_resources_than_one_lookup_names_updates_every_one,
    |b| async move {
        // The stored heads are looked up in chunks (100 pairs a statement on PostgreSQL):
        // every resource of a larger Bundle must still be found as stored, not created again.
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        let bundle = |when: &str| {
            let mut resources = vec![patient("p1")];
            for i in 0..250 {
                resources.push(observation(&format!("o{i}"), "p1", "8867-4", when));
            }
            transaction(&resources)
        };
        app.push_ok(&bundle("2026-03-01T10:00:00Z")).await;
        let out = app.push_ok(&bundle("2026-03-02T10:00:00Z")).await;
        let entries = out["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 251);
        for (i, e) in entries.iter().enumerate().skip(1) {
            assert_eq!(
                e["response"]["location"],
                format!("Observation/o{}/_history/2", i - 1),
                "{e}"
            );
        }
    }
);

// A version's body: compressed on PostgreSQL (the column is bytes, the body a zstd frame, a
// fraction of the JSON), the JSON itself on SQLite; a body PostgreSQL kept before bodies were
// compressed (its UTF-8, as migration 0020 left it) is served as before.
on_both!(
    a_body_is_kept_compressed_on_postgres_and_an_older_one_is_still_served,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        let mut obs = observation("o1", "p1", "29463-7", "2026-03-01T08:00:00Z");
        obs["note"] =
            json!([{"text": "gewogen na het ontbijt, zonder schoenen; gewogen na het ontbijt"}]);
        let (status, outcome) = app.push(&transaction(&[patient("p1"), obs])).await;
        assert_eq!(status, 200, "{outcome}");
        let holder = app.holder("u1", "p1").await;
        let (status, served) = holder.get("/fhir/Observation/o1").await;
        assert_eq!(status, 200, "{served}");

        #[derive(sqlx::FromRow, serde::Deserialize)]
        struct Kept {
            n: i64,
            first: i64,
        }
        let postgres = app.state.db.engine() == sluis::store::db::Engine::Postgres;
        let sql = if postgres {
            "SELECT CAST(octet_length(body) AS BIGINT) AS n, CAST(get_byte(body, 0) AS BIGINT) AS first \
             FROM versions WHERE type = 'Observation' AND fhir_id = 'o1'"
        } else {
            "SELECT length(body) AS n, unicode(body) AS first FROM versions \
             WHERE type = 'Observation' AND fhir_id = 'o1'"
        };
        let kept = || async {
            app.state
                .db
                .fetch_one::<Kept>(&sluis::store::Sql::new(sql))
                .await
                .unwrap()
        };
        let kept_first = kept().await;
        let json_len = serde_json::to_string(&served).unwrap().len() as i64;
        if postgres {
            assert_eq!(kept_first.first, 0x28, "a zstd frame");
            assert!(
                kept_first.n * 2 < json_len,
                "{} bytes kept of {json_len}",
                kept_first.n
            );
        } else {
            assert_eq!(kept_first.first, i64::from(b'{'), "the JSON as text");
            assert!(
                kept_first.n > json_len / 2,
                "{} of {json_len}",
                kept_first.n
            );
            return;
        }

        // As migration 0020 left a body written before it: its UTF-8, uncompressed.
        #[derive(sqlx::FromRow, serde::Deserialize)]
        struct Body {
            #[sqlx(try_from = "sluis::store::bodies::Packed")]
            body: String,
        }
        let body: Body = app
            .state
            .db
            .fetch_one(&sluis::store::Sql::new(
                "SELECT body FROM versions WHERE type = 'Observation' AND fhir_id = 'o1'",
            ))
            .await
            .unwrap();
        assert!(body.body.contains("zonder schoenen"), "{}", body.body);
        app.state
            .db
            .execute(
                &sluis::store::Sql::new(
                    "UPDATE versions SET body = convert_to($1, 'UTF8') \
                     WHERE type = 'Observation' AND fhir_id = 'o1'",
                )
                .arg(body.body.as_str()),
            )
            .await
            .unwrap();
        assert_eq!(kept().await.first, i64::from(b'{'));
        let (status, again) = holder.get("/fhir/Observation/o1").await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again, served);
        let (status, page) = holder.get("/fhir/Observation?patient=p1").await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["entry"][0]["resource"], served);
    }
);
