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
    let mut out = Vec::new();
    // The searches at the targets' rate (the heavy client's pages are judged by their own
    // targets): the one whose p99 grew most.
    if let Some(worst) = list
        .iter()
        .filter(|g| g.name.ends_with("p99 ms") && !g.name.starts_with("heavy") && g.reference > 0.0)
        .max_by(|a, b| (a.now / a.reference).total_cmp(&(b.now / b.reference)))
    {
        out.push(Verdict {
            target: "scale 10: search p99 ≤ 1.5 × scale 1's",
            measured: worst.now / worst.reference,
            limit: 1.5,
            at_least: false,
            detail: format!(
                "the most grown: {} {:.2} → {:.2}",
                worst.name, worst.reference, worst.now
            ),
        });
    }
    if let Some(worst) = list
        .iter()
        .filter(|g| g.name.starts_with("ingest") && g.reference > 0.0)
        .min_by(|a, b| (a.now / a.reference).total_cmp(&(b.now / b.reference)))
    {
        out.push(Verdict {
            target: "scale 10: ingest ≥ 0.8 × scale 1's rate",
            measured: worst.now / worst.reference,
            limit: 0.8,
            at_least: true,
            detail: format!(
                "the most fallen: {} {:.0} → {:.0}",
                worst.name, worst.reference, worst.now
            ),
        });
    }
    out
}
