//! How a run at a larger scale compares with the reference run at scale 1 of the same engine
//! (`target/bench/portal-<engine>.json`, or `SLUIS_BENCH_REFERENCE`): each figure's growth,
//! and the two growth targets of issue 24 (search p99 at most 1.5 ×, ingest at most 20% slower).

use crate::report::Report;
use crate::targets::Verdict;
use serde_json::Value;

/// One figure at both scales.
struct Figure {
    name: String,
    reference: f64,
    now: f64,
}

/// The figures both runs have, by name: ingest and pull rates, each search's p50 and p99, the
/// filters' cost, storage and memory.
fn figures(r: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let f = |v: &Value, key: &str| v.get(key).and_then(Value::as_f64);
    for i in r["ingest"].as_array().into_iter().flatten() {
        if let (Some(w), Some(rate)) = (f(i, "workers"), f(i, "resources_per_s")) {
            out.push((format!("ingest, {w} client(s), res/s"), rate));
        }
    }
    if let Some(rate) = f(&r["pull"], "resources_per_s") {
        out.push(("pull, res/s".into(), rate));
    }
    for run in r["search"].as_array().into_iter().flatten() {
        let name = run["name"].as_str().unwrap_or("?");
        for q in ["p50_ms", "p99_ms"] {
            if let Some(x) = f(run, q) {
                out.push((format!("{name}, {}", q.replace('_', " ")), x));
            }
        }
    }
    for who in ["holder", "member"] {
        if let Some(x) = f(&r["filters"][who], "throughput_cost") {
            out.push((format!("filters ({who}), % of throughput"), x * 100.0));
        }
    }
    if let Some(x) = f(&r["storage"], "ratio_to_raw") {
        out.push(("storage, × the raw JSON".into(), x));
    }
    if let Some(x) = f(&r["memory"], "peak_rss_mb") {
        out.push(("server peak RSS, MB".into(), x));
    }
    out
}

/// Prints each figure at scale 1 and at `scale` with its growth, and returns the growth
/// targets' verdicts (none when there is no reference to compare with).
pub fn compare(
    engine: &str,
    scale: f64,
    reference: &std::path::Path,
    result: &Report,
) -> Vec<Verdict> {
    let Some(old) = std::fs::read_to_string(reference)
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    else {
        println!(
            "growth: no scale-1 run of {engine} at {} to compare with (run without SLUIS_BENCH_SCALE first)",
            reference.display()
        );
        return Vec::new();
    };
    let Ok(new) = serde_json::to_value(result) else {
        return Vec::new();
    };
    let before = figures(&old);
    let list: Vec<Figure> = figures(&new)
        .into_iter()
        .filter_map(|(name, now)| {
            let reference = before.iter().find(|(n, _)| *n == name)?.1;
            Some(Figure {
                name,
                reference,
                now,
            })
        })
        .collect();
    println!(
        "growth from scale 1 ({}) to scale {scale}, {engine}:",
        reference.display()
    );
    for g in &list {
        let ratio = if g.reference > 0.0 {
            format!("{:.2} ×", g.now / g.reference)
        } else {
            "-".into()
        };
        println!(
            "  {:<45} {:>10.2} {:>10.2} {ratio:>8}",
            g.name, g.reference, g.now
        );
    }
    // The figure of `list` that `keep` selects and that grew most against the limit: the
    // most grown for a cost (`at_least` false), the most fallen for a rate.
    let judge = |keep: &dyn Fn(&Figure) -> bool, target, limit, at_least: bool| {
        let ratio = |g: &Figure| g.now / g.reference;
        let chosen = list.iter().filter(|g| keep(g) && g.reference > 0.0);
        let worst = if at_least {
            chosen.min_by(|a, b| ratio(a).total_cmp(&ratio(b)))
        } else {
            chosen.max_by(|a, b| ratio(a).total_cmp(&ratio(b)))
        }?;
        Some(Verdict {
            target,
            measured: ratio(worst),
            limit,
            at_least,
            detail: format!(
                "the most {}: {} {:.2} → {:.2}",
                if at_least { "fallen" } else { "grown" },
                worst.name,
                worst.reference,
                worst.now
            ),
        })
    };
    // The searches at the targets' rate (the heavy client's pages are judged by their own
    // targets), and ingest.
    [
        judge(
            &|g| g.name.ends_with("p99 ms") && !g.name.starts_with("heavy"),
            "scale 10: search p99 ≤ 1.5 × scale 1's",
            1.5,
            false,
        ),
        judge(
            &|g| g.name.starts_with("ingest"),
            "scale 10: ingest ≥ 0.8 × scale 1's rate",
            0.8,
            true,
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Checks of the comparison on fixed numbers, run by the smoke run (`cargo test`).
pub fn self_test() {
    use crate::load::Run;
    use crate::report::{Ingest, IngestRun};
    let report = |ingest: f64, p99: f64, heavy_p99: f64| Report {
        ingest: vec![Ingest {
            run: IngestRun {
                workers: 4,
                resources_per_s: ingest,
                ..Default::default()
            },
            ..Default::default()
        }],
        search: Some(vec![
            Run {
                name: "portal query, holder".into(),
                p99_ms: p99,
                ..Default::default()
            },
            Run {
                name: "heavy client, page 1".into(),
                p99_ms: heavy_p99,
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("portal-sqlite.json");
    std::fs::write(
        &reference,
        serde_json::to_string(&report(10_000.0, 2.0, 5.0)).unwrap(),
    )
    .unwrap();
    // The heavy client's growth is not the searches'; ingest fell by 30%.
    let v = compare("sqlite", 10.0, &reference, &report(7_000.0, 3.2, 50.0));
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(
        (v[0].measured - 1.6).abs() < 1e-9 && !v[0].met(),
        "{:?}",
        v[0]
    );
    assert!(v[0].detail.contains("holder"), "{:?}", v[0]);
    assert!(
        (v[1].measured - 0.7).abs() < 1e-9 && !v[1].met(),
        "{:?}",
        v[1]
    );
    // No reference, no verdicts.
    let none = compare(
        "sqlite",
        10.0,
        &dir.path().join("absent.json"),
        &report(1.0, 1.0, 1.0),
    );
    assert!(none.is_empty());
}
