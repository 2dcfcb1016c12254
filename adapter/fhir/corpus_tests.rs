//! Tests of the validator and the path evaluator against the shared corpora
//! (HL7 R4 examples, Nictiz zib2020 examples, Synthea bundles). Each test
//! prints `skipped` and passes when `../shared/corpora` is absent.

use super::definitions::search_param;
use super::path::evaluate;
use super::validate::{Issue, check_resource};
use serde_json::Value;
use std::path::{Path, PathBuf};

const CORPORA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpora");

/// Official HL7 examples that are invalid per the R4 specification, and why.
const KNOWN_INVALID_HL7: &[(&str, &str)] = &[
    (
        "ImplementationGuide-fhir.json",
        "ImplementationGuide.name and .status are 1..1 in R4 and absent",
    ),
    (
        "ig-r4.json",
        "ImplementationGuide.name and .status are 1..1 in R4 and absent",
    ),
    (
        "Questionnaire-qs1.json",
        "display items nested in Questionnaire.item lack linkId, which is 1..1 in R4",
    ),
];

fn corpus(sub: &str) -> Option<PathBuf> {
    let dir = Path::new(CORPORA).join(sub);
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipped: ../shared/corpora not found");
        None
    }
}

/// `(file name, parsed JSON)` of every `.json` file in `dir`, sorted.
fn load_dir(dir: &Path) -> Vec<(String, Value)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(&n)).unwrap();
            let v = serde_json::from_str(&text).unwrap();
            (n, v)
        })
        .collect()
}

fn print_issues(name: &str, issues: &[Issue]) {
    println!("REJECTED {name}: {} issue(s)", issues.len());
    for i in issues.iter().take(10) {
        println!("    {}: {}", i.path, i.message);
    }
}

#[test]
fn nictiz_examples_are_all_accepted() {
    let Some(dir) = corpus("nictiz-zib2020/examples-json") else {
        return;
    };
    let files = load_dir(&dir);
    let mut rejected = 0;
    for (name, v) in &files {
        let issues = check_resource(v);
        if !issues.is_empty() {
            rejected += 1;
            print_issues(name, &issues);
        }
    }
    println!(
        "nictiz: {} files, {} accepted, {rejected} rejected",
        files.len(),
        files.len() - rejected
    );
    assert_eq!(files.len(), 271);
    assert_eq!(rejected, 0);
}

#[test]
fn hl7_examples_are_accepted() {
    let Some(dir) = corpus("hl7-r4-examples/examples") else {
        return;
    };
    let files = load_dir(&dir);
    let (mut total, mut rejected, mut unexplained) = (0, 0, 0);
    let (mut bundles, mut bundles_rejected) = (0, 0);
    for (name, v) in &files {
        let is_bundle = v.get("resourceType").and_then(Value::as_str) == Some("Bundle");
        let issues = check_resource(v);
        if is_bundle || v.get("id").is_none() {
            bundles += 1;
            if !issues.is_empty() {
                bundles_rejected += 1;
                print_issues(&format!("(bundle) {name}"), &issues);
            }
            continue;
        }
        total += 1;
        if !issues.is_empty() {
            rejected += 1;
            print_issues(name, &issues);
            match KNOWN_INVALID_HL7.iter().find(|(f, _)| f == name) {
                Some((_, why)) => println!("    known invalid: {why}"),
                None => unexplained += 1,
            }
        }
    }
    println!(
        "hl7 examples (not Bundle, with id): {total} files, {} accepted, {rejected} rejected \
         ({unexplained} not explained); Bundles (and files without id): {bundles}, {} accepted, \
         {bundles_rejected} rejected",
        total - rejected,
        bundles - bundles_rejected
    );
    assert_eq!(total, 684);
    assert!(rejected * 100 <= total, "more than 1% rejected");
    assert_eq!(unexplained, 0, "rejected examples not in KNOWN_INVALID_HL7");
}

/// Every resource of every Synthea bundle, each as `(bundle file, entry index, resource)`.
fn synthea_resources(dir: &Path) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (name, bundle) in load_dir(dir) {
        out.push((name, bundle));
    }
    out
}

#[test]
fn synthea_resources_are_accepted() {
    let Some(dir) = corpus("synthea-r4/smart-generated-sample-data") else {
        return;
    };
    let (mut resources, mut rejected) = (0, 0);
    let bundles = synthea_resources(&dir);
    for (name, bundle) in &bundles {
        let issues = check_resource(bundle);
        if !issues.is_empty() {
            print_issues(name, &issues);
        }
        assert!(issues.is_empty());
        for (i, e) in bundle["entry"].as_array().unwrap().iter().enumerate() {
            resources += 1;
            let issues = check_resource(&e["resource"]);
            if !issues.is_empty() {
                rejected += 1;
                print_issues(&format!("{name} entry[{i}]"), &issues);
            }
        }
    }
    println!(
        "synthea: {} bundles, {resources} resources, {rejected} rejected",
        bundles.len()
    );
    assert_eq!(rejected, 0);
    assert_eq!(resources, 8494);
}

#[test]
fn evaluate_on_a_synthea_observation() {
    let Some(dir) = corpus("synthea-r4/smart-generated-sample-data") else {
        return;
    };
    let bundles = synthea_resources(&dir);
    let obs = bundles[0].1["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "Observation" && r.get("valueQuantity").is_some())
        .unwrap();
    let eval = |name: &str| {
        let p = search_param("Observation", name).unwrap();
        p.paths
            .iter()
            .flat_map(|pp| evaluate(obs, pp))
            .collect::<Vec<_>>()
    };
    let date = eval("date");
    assert_eq!(date.len(), 1);
    assert_eq!(date[0].ty, "dateTime");
    assert_eq!(date[0].value, &obs["effectiveDateTime"]);
    let code = eval("code");
    assert_eq!(code.len(), 1);
    assert_eq!(code[0].ty, "CodeableConcept");
    assert!(code[0].value["coding"][0]["system"] == "http://loinc.org");
    let category = eval("category");
    assert_eq!(category.len(), obs["category"].as_array().unwrap().len());
    assert!(category.iter().all(|n| n.ty == "CodeableConcept"));
    let subject = eval("subject");
    assert_eq!(subject.len(), 1);
    assert_eq!(subject[0].ty, "Reference");
    // urn:uuid references cannot be told apart: kept for `patient`.
    assert!(
        subject[0].value["reference"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:")
    );
    assert_eq!(eval("patient").len(), 1);
    let vq = eval("value-quantity");
    assert_eq!(vq.len(), 1);
    assert_eq!(vq[0].ty, "Quantity");
    assert_eq!(vq[0].value, &obs["valueQuantity"]);
    assert!(eval("value-concept").is_empty());
}

#[test]
#[ignore = "timing; run with --ignored --nocapture (use --release for real numbers)"]
fn synthea_validation_speed() {
    let Some(dir) = corpus("synthea-r4/smart-generated-sample-data") else {
        return;
    };
    let mut bytes = 0usize;
    let mut bundles = Vec::new();
    for (name, _) in load_dir(&dir) {
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        bytes += text.len();
        bundles.push(serde_json::from_str::<Value>(&text).unwrap());
    }
    let rounds = 3;
    let start = std::time::Instant::now();
    let mut issues = 0;
    for _ in 0..rounds {
        for b in &bundles {
            for e in b["entry"].as_array().unwrap() {
                issues += check_resource(&e["resource"]).len();
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mb = (bytes * rounds) as f64 / (1024.0 * 1024.0);
    println!(
        "validated {mb:.1} MiB of Synthea resources in {secs:.3} s: {:.1} MiB/s ({issues} issues)",
        mb / secs
    );
}

/// Leaves of a JSON tree with their FHIRPath-style paths (`_` stripped).
fn leaves<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k != "resourceType" {
                    leaves(x, format!("{path}.{}", k.trim_start_matches('_')), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                leaves(x, format!("{path}[{i}]"), out);
            }
        }
        Value::Null => {}
        _ => out.push((path, v)),
    }
}

/// Replaces the leaf at JSON-pointer-ish position `n` (in `leaves` order).
fn mutate(v: &mut Value, n: &mut usize, with: &dyn Fn(&Value) -> Value) -> bool {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k != "resourceType" && mutate(x, n, with) {
                    return true;
                }
            }
            false
        }
        Value::Array(a) => a.iter_mut().any(|x| mutate(x, n, with)),
        Value::Null => false,
        _ => {
            if *n == 0 {
                *v = with(v);
                return true;
            }
            *n -= 1;
            false
        }
    }
}

/// Breaking leaves of accepted examples is reported at the leaf's path:
/// strings emptied, numbers and booleans given as strings.
#[test]
fn mutations_are_reported_at_the_leaf() {
    let Some(dir) = corpus("hl7-r4-examples/examples") else {
        return;
    };
    let mut tried = 0;
    for (name, v) in load_dir(&dir) {
        if !check_resource(&v).is_empty() {
            continue;
        }
        let rt = v["resourceType"].as_str().unwrap().to_string();
        let mut all = Vec::new();
        leaves(&v, rt, &mut all);
        let step = all.len() / 4 + 1;
        for idx in (0..all.len()).step_by(step) {
            let (path, leaf) = (&all[idx].0, all[idx].1);
            let with = |x: &Value| match x {
                Value::String(_) => Value::String(String::new()),
                other => Value::String(other.to_string()),
            };
            let mut broken = v.clone();
            assert!(mutate(&mut broken, &mut idx.clone(), &with));
            let issues = check_resource(&broken);
            tried += 1;
            assert!(
                issues.iter().any(|i| &i.path == path),
                "{name}: breaking {path} ({leaf}) gave {issues:?}"
            );
        }
    }
    println!("mutations tried: {tried}");
}

/// Values to put in a leaf's place, each with its shape (`sluis_r4::shape`).
fn leaf_values() -> Vec<(Value, Vec<u8>)> {
    use serde_json::json;
    [
        json!(""),
        json!("zz"),
        json!("2026-13-45T99"),
        json!(0),
        json!(2_147_483_647),
        json!(4_294_967_295u64),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(-1),
        json!(i32::MIN),
        json!(i64::MIN),
        json!(0.25),
        json!(12_345.5),
        json!(true),
        json!(false),
    ]
    .into_iter()
    .map(|v| {
        let shape = sluis_r4::shape(&v);
        (v, shape)
    })
    .collect()
}

/// Every leaf of `v` replaced by a value of the same shape from `values`: strings by other
/// strings, numbers by other numbers of their class, booleans flipped; `pick` chooses among
/// those of the same shape. The values of `resourceType` stay.
fn same_shape(v: &Value, values: &[(Value, Vec<u8>)], pick: usize) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let keep = k == "resourceType" || k == "_resourceType";
                    let x = if keep {
                        x.clone()
                    } else {
                        same_shape(x, values, pick)
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| same_shape(x, values, pick)).collect()),
        leaf => {
            let shape = sluis_r4::shape(leaf);
            let alike: Vec<&Value> = values
                .iter()
                .filter(|(c, s)| *s == shape && c != leaf)
                .map(|(c, _)| c)
                .collect();
            if alike.is_empty() {
                leaf.clone()
            } else {
                alike[pick % alike.len()].clone()
            }
        }
    }
}

/// fhirbolt gives resources of the same shape the same verdict, which is what lets
/// `sluis_r4::check_structure` remember verdicts by shape: every resource of the corpora (and
/// each entry of their Bundles), with all its values changed twice within its shape, passes or
/// fails fhirbolt as the resource itself does.
#[test]
fn fhirbolt_gives_every_resource_of_a_shape_the_same_verdict() {
    let dirs = [
        "hl7-r4-examples/examples",
        "nictiz-zib2020/examples-json",
        "synthea-r4/smart-generated-sample-data",
    ];
    let values = leaf_values();
    let mut shapes = std::collections::HashSet::new();
    let (mut resources, mut refused) = (0, 0);
    for sub in dirs {
        let Some(dir) = corpus(sub) else {
            return;
        };
        for (name, file) in load_dir(&dir) {
            // A Bundle's entries are checked one by one, as ingest checks them.
            let entries = file["entry"].as_array();
            let nested = entries.into_iter().flatten();
            let nested = nested.filter_map(|e| e.get("resource")).cloned();
            let whole = entries.is_none().then(|| file.clone());
            for v in whole.into_iter().chain(nested) {
                let verdict = sluis_r4::check_with_fhirbolt(v.clone()).is_ok();
                for pick in [0, 1] {
                    let variant = same_shape(&v, &values, pick);
                    assert_eq!(sluis_r4::shape(&variant), sluis_r4::shape(&v), "{name}");
                    assert_eq!(
                        sluis_r4::check_with_fhirbolt(variant.clone()).is_ok(),
                        verdict,
                        "{name}: {v} against {variant}"
                    );
                }
                resources += 1;
                refused += usize::from(!verdict);
                if sub.starts_with("synthea") {
                    shapes.insert(sluis_r4::shape(&v));
                }
            }
        }
    }
    println!(
        "fhirbolt: {resources} resources, {refused} refused, each in two other values of its \
         shape; the Synthea resources have {} shapes",
        shapes.len()
    );
    assert!(resources > 10_000);
}
