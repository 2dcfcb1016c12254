//! FHIR search for portal vendors: parameters, sorting, paging, totals and `_include`, always
//! within what the user may see.

use crate::helpers::*;
use crate::on_both;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const IMMEDIATE: &str = "[embargo]\ndefault = \"immediate\"\n";

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

/// p1 with weights on three days, a temperature, and p2 (another client) with one weight.
async fn world(app: &TestApp) {
    let mut temp = observation("temp", "p1", "8310-5", "2026-02-20T10:00:00Z");
    temp["category"][0]["coding"][0]["code"] = json!("survey");
    app.push_ok(&transaction(&[
        patient("p1"),
        patient("p2"),
        observation("w1", "p1", "29463-7", "2026-02-18T08:00:00Z"),
        observation("w2", "p1", "29463-7", "2026-02-19T08:00:00Z"),
        observation("w3", "p1", "29463-7", "2026-02-20"),
        temp,
        observation("x1", "p2", "29463-7", "2026-02-19T08:00:00Z"),
    ]))
    .await;
}

on_both!(date_prefixes_follow_fhir, |b| async move {
    let app = TestApp::spawn_with(b, IMMEDIATE).await;
    world(&app).await;
    let u = app.holder("u1", "p1").await;
    let cases = [
        ("date=2026-02-19", vec!["w2"]),
        ("date=eq2026-02-19", vec!["w2"]),
        ("date=ne2026-02-19", vec!["temp", "w1", "w3"]),
        ("date=lt2026-02-19", vec!["w1"]),
        ("date=le2026-02-19", vec!["w1", "w2"]),
        ("date=gt2026-02-19", vec!["temp", "w3"]),
        ("date=ge2026-02-19", vec!["temp", "w2", "w3"]),
        ("date=ge2026-02-19&date=lt2026-02-20", vec!["w2"]),
        ("date=2026-02", vec!["temp", "w1", "w2", "w3"]),
        ("date=gt2026-02-20T09:00:00Z", vec!["temp", "w3"]),
        ("date=lt2026-02-20T09:00:00Z", vec!["w1", "w2", "w3"]),
        ("date=2026-02-18,2026-02-20", vec!["temp", "w1", "w3"]),
    ];
    for (query, expected) in cases {
        let (status, bundle) = u
            .get(&format!("/fhir/Observation?patient=p1&{query}"))
            .await;
        assert_eq!(status, 200, "{query}: {bundle}");
        let got: BTreeSet<String> = ids(&bundle).into_iter().collect();
        let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "{query}");
        assert_eq!(bundle["total"], json!(want.len()), "{query}");
    }
});

on_both!(tokens_sort_and_total, |b| async move {
    let app = TestApp::spawn_with(b, IMMEDIATE).await;
    world(&app).await;
    let u = app.holder("u1", "p1").await;
    let (_, bundle) = u
        .get("/fhir/Observation?patient=p1&category=vital-signs&_sort=date")
        .await;
    assert_eq!(ids(&bundle), ["w1", "w2", "w3"]);
    let (_, bundle) = u.get("/fhir/Observation?patient=p1&_sort=-date").await;
    assert_eq!(
        ids(&bundle),
        ["temp", "w3", "w2", "w1"],
        "sorted by the start of each date"
    );
    let (_, bundle) = u
        .get("/fhir/Observation?code=http://loinc.org|8310-5")
        .await;
    assert_eq!(ids(&bundle), ["temp"]);
    let (_, bundle) = u
        .get("/fhir/Observation?code=8310-5,29463-7&_sort=-date&_count=2")
        .await;
    assert_eq!(ids(&bundle), ["temp", "w3"]);
    assert_eq!(bundle["total"], 4, "p2's weight is not counted");
    let (_, bundle) = u
        .get("/fhir/Observation?code=http://snomed.info/sct|29463-7")
        .await;
    assert_eq!(bundle["total"], 0);
    let (_, bundle) = u.get("/fhir/Observation?status=final&_summary=count").await;
    assert_eq!(bundle["total"], 4);
    assert!(bundle.get("entry").is_none());
    let (_, bundle) = u.get("/fhir/Observation?patient=p2").await;
    assert_eq!(
        bundle["total"], 0,
        "another client's data is not there for this user"
    );
    let (_, bundle) = u.get("/fhir/Observation?_id=w1,x1").await;
    assert_eq!(ids(&bundle), ["w1"]);
    assert_eq!(u.get("/fhir/Observation/x1").await.0, 404);
    assert_eq!(u.get("/fhir/Observation/nope").await.0, 404);
});

on_both!(last_updated_is_the_moment_of_visibility, |b| async move {
    let app = TestApp::spawn_with(b, IMMEDIATE).await;
    app.push_ok(&transaction(&[
        patient("p1"),
        observation("a", "p1", "29463-7", "2020-01-01"),
    ]))
    .await;
    app.set_clock("2026-03-05T12:00:00Z").await;
    app.push_ok(&transaction(&[observation(
        "b",
        "p1",
        "29463-7",
        "2020-01-01",
    )]))
    .await;
    let u = app.holder("u1", "p1").await;
    let (_, obs) = u.get("/fhir/Observation/b").await;
    assert_eq!(obs["meta"]["lastUpdated"], "2026-03-05T12:00:00Z");
    assert_eq!(obs["meta"]["versionId"], "1");
    for (query, expected) in [
        ("_lastUpdated=gt2026-03-02T09:00:00Z", vec!["b"]),
        ("_lastUpdated=ge2026-03-02T09:00:00Z", vec!["a", "b"]),
        ("_lastUpdated=lt2026-03-05T12:00:00Z", vec!["a"]),
        ("_lastUpdated=le2026-03-05", vec!["a", "b"]),
        ("_lastUpdated=2026-03-02", vec!["a"]),
        ("_sort=-_lastUpdated", vec!["b", "a"]),
    ] {
        let (status, bundle) = u.get(&format!("/fhir/Observation?{query}")).await;
        assert_eq!(status, 200, "{bundle}");
        assert_eq!(ids(&bundle), expected, "{query}");
    }
});

on_both!(
    paging_has_no_duplicates_or_gaps_when_timestamps_are_shared,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        let mut resources = vec![patient("p1")];
        for i in 0..137 {
            // Every resource arrives at the same moment; many share the same effective time too.
            resources.push(observation(
                &format!("o{i:03}"),
                "p1",
                "29463-7",
                &format!("2026-02-{:02}", 1 + i % 3),
            ));
        }
        app.push_ok(&transaction(&resources)).await;
        let u = app.holder("u1", "p1").await;
        for sort in ["", "&_sort=date", "&_sort=-date", "&_sort=-_lastUpdated"] {
            let seen = u
                .all_pages(&format!("/fhir/Observation?patient=p1&_count=10{sort}"))
                .await;
            assert_eq!(seen.len(), 137, "{sort}");
            let unique: BTreeSet<&String> = seen.iter().collect();
            assert_eq!(unique.len(), 137, "{sort}: no duplicates");
        }
        let (_, first) = u.get("/fhir/Observation?patient=p1&_count=10").await;
        assert_eq!(first["total"], 137);
        assert_eq!(first["link"][0]["relation"], "self");
        assert!(
            first["link"][1]["url"]
                .as_str()
                .unwrap()
                .starts_with("http://sluis.test/fhir/Observation?")
        );
    }
);

on_both!(include_returns_only_what_the_user_may_see, |b| async move {
    let app = TestApp::spawn_with(b, IMMEDIATE).await;
    let dr = json!({"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Visser"}]});
    let hidden =
        json!({"resourceType": "Practitioner", "id": "hidden", "name": [{"family": "Bakker"}]});
    let enc = json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/p1"}});
    let mut o = observation("o1", "p1", "29463-7", "2026-02-01");
    o["performer"] = json!([{"reference": "Practitioner/dr"}]);
    o["encounter"] = json!({"reference": "Encounter/e1"});
    let mut other = observation("x1", "p2", "29463-7", "2026-02-01");
    other["performer"] = json!([{"reference": "Practitioner/hidden"}]);
    app.push_ok(&transaction(&[
        patient("p1"),
        patient("p2"),
        dr,
        hidden,
        enc,
        o,
        other,
    ]))
    .await;
    let u = app.holder("u1", "p1").await;
    let (status, bundle) = u
        .get("/fhir/Observation?patient=p1&_include=Observation:performer&_include=Observation:subject&_include=Observation:encounter")
        .await;
    assert_eq!(status, 200, "{bundle}");
    let included: BTreeSet<String> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        included,
        BTreeSet::from([
            "Practitioner/dr".to_string(),
            "Patient/p1".to_string(),
            "Encounter/e1".to_string()
        ])
    );
    assert_eq!(bundle["total"], 1, "includes are not counted");
    // Practitioners are served only when something the user may see refers to them.
    assert_eq!(u.get("/fhir/Practitioner/dr").await.0, 200);
    assert_eq!(u.get("/fhir/Practitioner/hidden").await.0, 404);
    let (_, practitioners) = u.get("/fhir/Practitioner").await;
    assert_eq!(practitioners["total"], 1);
});

on_both!(
    unsupported_parameters_are_refused_not_ignored,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        world(&app).await;
        let u = app.holder("u1", "p1").await;
        for query in [
            "foo=bar",
            "code:text=gewicht",
            "value-quantity=gt60",
            "_sort=code",
            "_summary=true",
            "_elements=id",
            "date=someday",
            "_include=Observation:foo",
        ] {
            let (status, outcome) = u.get(&format!("/fhir/Observation?{query}")).await;
            assert_eq!(status, 400, "{query}");
            assert_eq!(reason(&outcome), "unknown-parameter", "{query}");
        }
        let (status, outcome) = u.get("/fhir/Nope?x=1").await;
        assert_eq!(status, 404, "{outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
    }
);

on_both!(metadata_lists_what_is_really_supported, |b| async move {
    let app = TestApp::spawn(b).await;
    app.push_ok(&transaction(&[patient("p1")])).await;
    let r = app
        .http
        .get(app.url("/fhir/metadata"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/fhir+json; charset=utf-8"
    );
    let cs: Value = r.json().await.unwrap();
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    let obs = resources
        .iter()
        .find(|r| r["type"] == "Observation")
        .unwrap();
    let params: BTreeSet<&str> = obs["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "_id",
        "_lastUpdated",
        "patient",
        "subject",
        "category",
        "code",
        "date",
        "status",
    ] {
        assert!(params.contains(p), "{p}");
    }
    assert!(
        !resources.iter().any(|r| r["type"] == "Claim"),
        "unmapped types are not promised"
    );
    // Every promised parameter is accepted by search.
    let u = app.holder("u1", "p1").await;
    for r in resources {
        for p in r["searchParam"].as_array().unwrap() {
            let name = p["name"].as_str().unwrap();
            let value = match p["type"].as_str().unwrap() {
                "date" => "ge2020-01-01",
                "reference" => "Patient/x",
                _ => "x",
            };
            let (status, outcome) = u
                .get(&format!(
                    "/fhir/{}?{name}={value}",
                    r["type"].as_str().unwrap()
                ))
                .await;
            assert_ne!(status, 400, "{}?{name}: {outcome}", r["type"]);
        }
    }
});
