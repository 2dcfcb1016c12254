//! Data written by others (`../shared/corpora`): HL7's R4 examples, Synthea patients and the
//! Dutch Nictiz zib examples go in and come out right. Skipped, and said so, without corpora.

use crate::helpers::*;
use crate::on_both;
use serde_json::Value;
use std::path::PathBuf;

pub fn corpora() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpora"));
    if dir.exists() {
        Some(dir)
    } else {
        eprintln!("skipped: ../shared/corpora not found");
        None
    }
}

pub fn json_files(dir: PathBuf) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

// Synthea patients have no EpisodeOfCare (care is assumed) and some died years ago; this test
// is about ingest and paging, so access stays open for them.
const SYNTHEA: &str = "[embargo]\ndefault = \"immediate\"\n[organization]\nterms_version = \"2026-01\"\n\
                       assume_active_care = true\ndeceased_grace = \"P200Y\"\n";

on_both!(
    every_synthea_bundle_ingests_and_pages_exactly,
    |b| async move {
        let Some(dir) = corpora() else { return };
        let app = TestApp::spawn_with(b, SYNTHEA).await;
        let token = app.token(SOURCE).await;
        let files = json_files(dir.join("synthea-r4/smart-generated-sample-data"));
        assert_eq!(files.len(), 31);
        for (n, file) in files.iter().enumerate() {
            let bytes = std::fs::read(file).unwrap();
            let bundle: Value = serde_json::from_slice(&bytes).unwrap();
            let r = app
                .http
                .post(app.url("/ingest/ons"))
                .bearer_auth(&token)
                .header("content-type", "application/fhir+json")
                .body(bytes)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let out: Value = r.json().await.unwrap();
            assert_eq!(status, 200, "{}: {out:#}", file.display());
            let patient = bundle["entry"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["resource"]["resourceType"] == "Patient")
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
                .unwrap();
            let expected: Vec<String> = bundle["entry"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["resource"]["resourceType"] == "Observation")
                .map(|e| format!("Observation/{}", e["resource"]["id"].as_str().unwrap()))
                .collect();
            let holder = app.holder(&format!("holder-{n}"), &patient).await;
            let (status, count) = holder
                .get(&format!(
                    "/fhir/Observation?patient={patient}&_summary=count"
                ))
                .await;
            assert_eq!(status, 200, "{count}");
            assert_eq!(count["total"], expected.len(), "{}", file.display());
            // Paging through all of them returns each exactly once.
            let mut seen = holder
                .all_pages(&format!(
                    "/fhir/Observation?patient={patient}&_count=37&_sort=-date"
                ))
                .await;
            seen.sort();
            let mut want = expected.clone();
            want.sort();
            assert_eq!(seen, want, "{}", file.display());
        }
    }
);

on_both!(hl7_examples_are_accepted_one_by_one, |b| async move {
    let Some(dir) = corpora() else { return };
    let app = TestApp::spawn(b).await;
    let token = app.token(SOURCE).await;
    let mut accepted = 0;
    let mut refused = Vec::new();
    for file in json_files(dir.join("hl7-r4-examples/examples")) {
        let resource: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let (Some(ty), Some(id)) = (resource["resourceType"].as_str(), resource["id"].as_str())
        else {
            continue;
        };
        if ty == "Bundle" {
            continue;
        }
        let r = app
            .http
            .put(app.url(&format!("/ingest/ons/{ty}/{id}")))
            .bearer_auth(&token)
            .json(&resource)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status < 300 {
            accepted += 1;
        } else {
            assert!(status < 500, "{}: {status}", file.display());
            let outcome: Value = r.json().await.unwrap();
            refused.push(format!(
                "{}: {} {}",
                file.file_name().unwrap().to_string_lossy(),
                outcome["issue"][0]["expression"][0].as_str().unwrap_or(""),
                outcome["issue"][0]["diagnostics"].as_str().unwrap_or("")
            ));
        }
    }
    let total = accepted + refused.len();
    eprintln!("HL7 R4 examples: {accepted} of {total} accepted; refused:");
    for r in &refused {
        eprintln!("  {r}");
    }
    assert!(
        accepted * 100 >= total * 99,
        "{accepted} of {total} accepted"
    );
});

on_both!(every_nictiz_zib_example_is_accepted, |b| async move {
    let Some(dir) = corpora() else { return };
    let app = TestApp::spawn(b).await;
    let token = app.token(SOURCE).await;
    let files = json_files(dir.join("nictiz-zib2020/examples-json"));
    assert!(files.len() >= 271);
    for file in files {
        let resource: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let r = app
            .http
            .post(app.url("/ingest/ons"))
            .bearer_auth(&token)
            .json(&resource)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let outcome: Value = r.json().await.unwrap_or_default();
        assert!(status < 300, "{}: {status} {outcome}", file.display());
    }
});
