//! The delay and the consent cost nothing per row: the portal's queries run on indexes,
//! including the release moment (issue 3, acceptance 6). The plans are printed (they are
//! quoted in docs/query-plans.md) and, on SQLite, checked.

use crate::helpers::*;
use crate::on_both;
use serde_json::json;
use sluis::access::{Access, Decision, Role, SectionSet};
use sluis::search::params::{self, Counts};
use sluis::search::sql;
use std::collections::{BTreeMap, BTreeSet};

fn decision(patient: &str, sections: Option<&[&str]>) -> Decision {
    Decision {
        user_id: 1,
        allowed: vec![Access {
            link_id: 1,
            patient_id: patient.into(),
            role: if sections.is_some() {
                Role::Member
            } else {
                Role::Holder
            },
            sections: match sections {
                None => SectionSet::All,
                Some(s) => {
                    SectionSet::Only(s.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>())
                }
            },
            can_post: false,
        }],
        refused: BTreeMap::new(),
    }
}

/// The plan of `statement`, printed under `label` (the test's output shows every plan).
async fn explained(
    db: &sluis::store::Db,
    label: &str,
    statement: &sluis::store::Sql,
) -> Vec<String> {
    let plan = db.explain(statement).await.unwrap();
    eprintln!("-- {label}\n{}", plan.join("\n"));
    plan
}

/// True when a step of the plan scans a table whose alias starts with `alias` (SQLite).
fn scans(plan: &[String], alias: &str) -> bool {
    plan.iter()
        .any(|l| l.trim_start().starts_with(&format!("SCAN {alias}")))
}

fn query(ty: &str, qs: &str) -> params::Query {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(qs.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    params::parse(
        ty,
        &pairs,
        Counts {
            default: 50,
            max: 500,
        },
    )
    .unwrap()
}

on_both!(portal_queries_run_on_indexes, |b| async move {
    let sqlite = matches!(b, Backend::Sqlite);
    let app = TestApp::spawn(b).await;
    for p in 0..20 {
        let mut resources = vec![patient(&format!("p{p}"))];
        for i in 0..(if p == 0 { 1500 } else { 50 }) {
            let mut o = observation(
                &format!("o{p}-{i}"),
                &format!("p{p}"),
                "29463-7",
                "2026-02-01",
            );
            if i % 2 == 0 {
                o["category"][0]["coding"][0]["code"] = json!("survey");
            }
            resources.push(o);
        }
        app.push_ok(&transaction(&resources)).await;
    }
    let now = sluis::time::to_micros(sluis::time::parse_instant("2026-04-01T00:00:00Z").unwrap());
    let db = &app.state.db;
    let cases = [
        (
            "holder: Observation?patient&category&_count=50",
            query("Observation", "patient=p0&category=vital-signs&_count=50"),
            decision("p0", None),
        ),
        (
            "member: Observation?patient&category&_count=50",
            query("Observation", "patient=p0&category=vital-signs&_count=50"),
            decision("p0", Some(&["metingen", "agenda"])),
        ),
        (
            "holder: Observation?patient&_sort=-date",
            query("Observation", "patient=p0&_sort=-date"),
            decision("p0", None),
        ),
        (
            "holder: Observation?_lastUpdated=gt…",
            query("Observation", "_lastUpdated=gt2026-03-20"),
            decision("p0", None),
        ),
    ];
    for (name, q, d) in cases {
        // Prepared once per connection: nothing in these statements (a bound LIMIT did) makes
        // SQLite prepare them again for every execution.
        for statement in [
            sql::page_sql(&q, sql::Scope::new(&d, &app.state.mappings), now),
            sql::page_with_total_sql(&q, sql::Scope::new(&d, &app.state.mappings), now),
            sql::count_sql(&q, sql::Scope::new(&d, &app.state.mappings), now),
        ] {
            if let Some(n) = db.prepared_again(&statement).await.unwrap() {
                assert_eq!(n, 0, "{name}: prepared again: {}", statement.text);
            }
        }
        let plan = explained(
            db,
            name,
            &sql::page_sql(&q, sql::Scope::new(&d, &app.state.mappings), now),
        )
        .await;
        if sqlite {
            let text = plan.join("\n");
            assert!(
                text.contains("USING INDEX versions_by_patient")
                    || text.contains("USING COVERING INDEX versions_by_patient"),
                "{name}: {text}"
            );
            assert!(
                text.contains("versions_newer"),
                "{name}: the newest-released check uses its index: {text}"
            );
            assert!(
                !text
                    .lines()
                    .any(|l| l.trim_start().starts_with("SCAN v") || l.contains("SCAN n")),
                "{name}: no full scans: {text}"
            );
        }
        let count = explained(
            db,
            &format!("count: {name}"),
            &sql::count_sql(&q, sql::Scope::new(&d, &app.state.mappings), now),
        )
        .await;
        if sqlite {
            assert!(!scans(&count, "v"), "{name}: {count:?}");
            // `total` of a client's query counts on the index alone: it reads no version row.
            if name.contains("patient&category") {
                assert!(
                    count
                        .iter()
                        .any(|l| l.contains("USING COVERING INDEX versions_by_patient ")),
                    "{name}: total reads the versions' rows: {count:?}"
                );
            }
        }
    }
    let history = explained(
        db,
        "_history",
        &sql::history_sql(i64::MIN, None, 51, &decision("p0", None), now),
    )
    .await;
    if sqlite {
        assert!(!scans(&history, "v"), "{history:?}");
    }
});

// A conditional reference by identifier, across all clients, seeks the index of identifiers.
on_both!(
    conditional_lookups_by_identifier_run_on_their_index,
    |b| async move {
        let sqlite = matches!(b, Backend::Sqlite);
        let app = TestApp::spawn(b).await;
        let resources: Vec<_> = (0..200).map(|p| patient(&format!("p{p}"))).collect();
        app.push_ok(&transaction(&resources)).await;
        let q = query(
            "Patient",
            "identifier=http://fhir.nl/fhir/NamingSystem/bsn|999911120",
        );
        let db = &app.state.db;
        let plan = explained(
            db,
            "conditional: Patient?identifier",
            &sql::current_matches_sql("ons", &q, 2),
        )
        .await;
        if sqlite {
            let text = plan.join("\n");
            assert!(text.contains("search_tokens_by_identifier"), "{text}");
            assert!(!scans(&plan, ""), "{text}");
        }
        // Other criteria read the token rows (no index by value), never the versions' rows.
        let other = explained(
            db,
            "conditional: Observation?code",
            &sql::current_matches_sql(
                "ons",
                &query("Observation", "code=http://loinc.org|29463-7"),
                2,
            ),
        )
        .await;
        if sqlite {
            assert!(!scans(&other, "v"), "{other:?}");
        }
    }
);

// Without planner statistics PostgreSQL guesses a client has one row and may probe
// `search_tokens` by code for each row of a page (seconds instead of milliseconds on a loaded
// database). The adapter updates them at start and after `sluis import`.
on_both!(postgres_statistics_are_updated_at_start, |b| async move {
    if matches!(b, Backend::Sqlite) {
        return;
    }
    let app = TestApp::spawn(b).await;
    let mut resources = vec![patient("p0")];
    for i in 0..300 {
        resources.push(observation(&format!("o{i}"), "p0", "29463-7", "2026-02-01"));
    }
    app.push_ok(&transaction(&resources)).await;
    let app = app.restart_with("", "2026-04-01T00:00:00Z").await;
    let stats = app
        .state
        .db
        .fetch_count(&sluis::store::Sql::new(
            "SELECT COUNT(*) AS n FROM pg_stats WHERE schemaname = current_schema() \
             AND tablename IN ('versions', 'search_tokens')",
        ))
        .await
        .unwrap();
    assert!(stats > 0, "no statistics for versions and search_tokens");
});
