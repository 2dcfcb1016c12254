//! The targets, read off a run's results: for each, what was measured, the limit,
//! whether it was met and by how much it was missed. The targets are set for SQLite on 2
//! cores; on PostgreSQL the same lines are printed for comparison.

use serde_json::{Value, json};

/// One target and how the run did against it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub target: &'static str,
    /// What was measured, in the target's unit.
    pub measured: f64,
    pub limit: f64,
    /// `true` when the measure must be at least the limit (a rate), `false` at most (a cost).
    pub at_least: bool,
    /// What the measure is made of, for the reader.
    pub detail: String,
}

impl Verdict {
    pub fn met(&self) -> bool {
        if self.at_least {
            self.measured >= self.limit
        } else {
            self.measured <= self.limit
        }
    }

    /// How far from the limit, as a fraction of it (0 when met).
    pub fn missed_by(&self) -> f64 {
        if self.met() || self.limit == 0.0 {
            0.0
        } else {
            (self.measured - self.limit).abs() / self.limit
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "target": self.target, "measured": self.measured, "limit": self.limit,
            "at_least": self.at_least, "met": self.met(), "missed_by": self.missed_by(),
            "detail": self.detail,
        })
    }
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// The verdicts a run's results allow (a part the run left out gives none).
pub fn verdicts(r: &Value) -> Vec<Verdict> {
    let mut out = Vec::new();
    for i in r["ingest"].as_array().into_iter().flatten() {
        let (Some(keyed), Some(batched), Some(rate)) = (
            f(&i["ratio_to_keyed_by_value"]),
            f(&i["ratio_to_ceiling"]),
            f(&i["resources_per_s"]),
        ) else {
            continue;
        };
        let target = match i["workers"].as_u64() {
            Some(1) => "ingest, 1 client: ≥ 0.4 × the plain SQLite insert (keyed by value)",
            _ => "ingest, 4 clients: ≥ 0.4 × the plain SQLite insert (keyed by value)",
        };
        out.push(Verdict {
            target,
            measured: keyed,
            limit: 0.4,
            at_least: true,
            detail: format!("{rate:.0} res/s; {batched:.2} × the batched ceiling"),
        });
    }
    let runs: Vec<&Value> = r["search"].as_array().into_iter().flatten().collect();
    let portal: Vec<&Value> = runs
        .iter()
        .copied()
        .filter(|run| {
            !run["name"]
                .as_str()
                .unwrap_or_default()
                .starts_with("heavy client")
        })
        .collect();
    if let Some(worst) = portal.iter().max_by(|a, b| {
        f(&a["p99_ms"])
            .partial_cmp(&f(&b["p99_ms"]))
            .unwrap_or(std::cmp::Ordering::Equal)
    }) && let Some(p99) = f(&worst["p99_ms"])
    {
        let rate = portal
            .iter()
            .filter_map(|run| f(&run["rate"]))
            .fold(0.0, f64::max);
        let errors: u64 = portal.iter().filter_map(|run| run["errors"].as_u64()).sum();
        out.push(Verdict {
            target: "portal search at 1,000 req/s: p99 ≤ 10 ms",
            measured: p99,
            limit: 10.0,
            at_least: false,
            detail: format!(
                "the slowest of {} searches at {rate:.0} req/s: {}; {errors} errors",
                portal.len(),
                worst["name"].as_str().unwrap_or_default()
            ),
        });
    }
    let named = |name: &str| runs.iter().find(|run| run["name"] == name);
    if let (Some(p1), Some(p20)) = (
        named("heavy client, page 1"),
        named("heavy client, page 20"),
    ) && let (Some(a50), Some(b50), Some(a99), Some(b99)) = (
        f(&p1["p50_ms"]),
        f(&p20["p50_ms"]),
        f(&p1["p99_ms"]),
        f(&p20["p99_ms"]),
    ) && a50 > 0.0
        && a99 > 0.0
    {
        let (r50, r99) = (b50 / a50, b99 / a99);
        out.push(Verdict {
            target: "page 20 no slower than 1.2 × page 1",
            measured: r50.max(r99),
            limit: 1.2,
            at_least: false,
            detail: format!(
                "p50 {b50:.2} vs {a50:.2} ms ({r50:.2} ×), p99 {b99:.2} vs {a99:.2} ms ({r99:.2} ×)"
            ),
        });
    }
    let filters: Vec<(&str, &Value)> = ["holder", "member"]
        .into_iter()
        .map(|who| (who, &r["filters"][who]))
        .filter(|(_, v)| v.is_object())
        .collect();
    let worst = |key: &str| {
        filters
            .iter()
            .filter_map(|(who, v)| f(&v[key]).map(|x| (*who, x)))
            .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))
    };
    if let Some((who, cost)) = worst("throughput_cost") {
        out.push(Verdict {
            target: "consent and delay filters: ≤ 10% of throughput",
            measured: cost * 100.0,
            limit: 10.0,
            at_least: false,
            detail: format!("the costlier of holder and member: {who}"),
        });
    }
    if let Some((who, ms)) = worst("p50_cost_ms") {
        out.push(Verdict {
            target: "consent and delay filters: ≤ 1 ms of p50",
            measured: ms,
            limit: 1.0,
            at_least: false,
            detail: format!("the costlier of holder and member: {who}"),
        });
    }
    let memory = &r["memory"];
    if let Some(peak) = f(&memory["peak_rss_mb"]).or(f(&memory["peak_rss_after_ingest_mb"])) {
        out.push(Verdict {
            target: "server resident memory ≤ 150 MB",
            measured: peak,
            limit: 150.0,
            at_least: false,
            detail: "peak (VmHWM) over the run".into(),
        });
    }
    if let Some(ratio) = f(&r["storage"]["ratio_to_raw"]) {
        out.push(Verdict {
            target: "storage ≤ 3 × the raw JSON",
            measured: ratio,
            limit: 3.0,
            at_least: false,
            detail: format!(
                "{:.0} bytes per resource",
                f(&r["storage"]["bytes_per_resource"]).unwrap_or(0.0)
            ),
        });
    }
    out
}

/// The verdicts as the table prints them.
pub fn print(engine: &str, smoke: bool, verdicts: &[Verdict]) {
    let note = match (smoke, engine) {
        (true, _) => " (a smoke run: a debug build on the smallest data, so they mean nothing)",
        (false, "sqlite") => "",
        (false, _) => " (the targets are set for SQLite; for comparison)",
    };
    println!("targets{note}:");
    for v in verdicts {
        let verdict = if v.met() {
            "met".to_string()
        } else {
            format!("MISSED by {:.0}%", v.missed_by() * 100.0)
        };
        println!(
            "  {:<70} {:>9.2} (limit {}) {verdict}: {}",
            v.target, v.measured, v.limit, v.detail
        );
    }
}

/// Checks of the verdicts on fixed numbers, run by the smoke run (`cargo test`; the bench
/// binary has no test harness of its own).
pub fn self_test() {
    every_target_is_judged_from_a_full_run();
    a_part_left_out_gives_no_verdict();
}

fn run(name: &str, rate: f64, p50: f64, p99: f64) -> Value {
    json!({"name": name, "rate": rate, "p50_ms": p50, "p99_ms": p99, "errors": 0})
}

fn every_target_is_judged_from_a_full_run() {
    let r = json!({
        "ingest": [
            {"workers": 1, "resources_per_s": 20000.0, "ratio_to_ceiling": 0.15, "ratio_to_keyed_by_value": 0.38},
            {"workers": 4, "resources_per_s": 32000.0, "ratio_to_ceiling": 0.25, "ratio_to_keyed_by_value": 0.57},
        ],
        "search": [
            run("portal query, holder", 1000.0, 1.0, 2.1),
            run("portal query, member", 1000.0, 1.1, 2.7),
            run("heavy client, page 1", 50.0, 3.5, 4.9),
            run("heavy client, page 20", 50.0, 1.8, 6.0),
        ],
        "filters": {
            "holder": {"throughput_cost": 0.024, "p50_cost_ms": 0.01},
            "member": {"throughput_cost": 0.068, "p50_cost_ms": 0.02},
        },
        "storage": {"ratio_to_raw": 2.4, "bytes_per_resource": 1415.0},
        "memory": {"peak_rss_mb": 74.0},
    });
    let v = verdicts(&r);
    assert_eq!(v.len(), 8, "{v:#?}");
    let by = |t: &str| v.iter().find(|x| x.target.starts_with(t)).unwrap();
    let one = by("ingest, 1 client");
    assert!(!one.met());
    assert!((one.missed_by() - 0.05).abs() < 1e-9);
    assert!(by("ingest, 4 clients").met());
    let search = by("portal search");
    assert_eq!(search.measured, 2.7);
    assert!(search.detail.contains("member"), "{}", search.detail);
    // The heavy client's pages are judged against each other, not by the portal's limit.
    let pages = by("page 20");
    assert!((pages.measured - 6.0 / 4.9).abs() < 1e-9);
    assert!(!pages.met());
    let filters = by("consent and delay filters: ≤ 10%");
    assert!((filters.measured - 6.8).abs() < 1e-9 && filters.met());
    assert!(by("server resident").met() && by("storage").met());
}

fn a_part_left_out_gives_no_verdict() {
    let r = json!({"ingest": [{"workers": 1, "resources_per_s": 1.0}], "storage": {}});
    assert!(verdicts(&r).is_empty());
}
