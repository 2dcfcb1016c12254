//! Pulling from record systems (issue 20): against a FHIR server of the tests' own
//! (`source.rs`) that pages, shares timestamps between many resources and fails when told to.

use crate::helpers::*;
use crate::on_both;
use crate::source::{Auth, Fault, RecordSystem, TokenFault};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A pulled source `id` reading `base`, with the `[sources.pull]` keys `keys` beside the URL.
fn pulled(id: &str, base: &str, keys: &str) -> String {
    format!("\n[[sources]]\nid = \"{id}\"\n[sources.pull]\nbase_url = \"{base}\"\n{keys}\n")
}

/// The source's entry in `GET /admin/sources`.
async fn source_status(app: &TestApp, id: &str) -> Value {
    let r = app
        .http
        .get(app.url("/admin/sources"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in {body}"))
}

/// Waits until this process has finished `rounds` polls of `id` (all types, without error).
async fn wait_rounds(app: &TestApp, id: &str, rounds: u64) -> Value {
    let started = Instant::now();
    loop {
        let s = source_status(app, id).await;
        if s["pull"]["rounds_here"].as_u64().unwrap_or(0) >= rounds {
            return s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no round {rounds} of {id}: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn notify(app: &TestApp, id: &str) -> u16 {
    let token = app.token(SOURCE).await;
    app.http
        .post(app.url(&format!("/ingest/{id}/$notify")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `GET path` without credentials: the status.
async fn get_status(app: &TestApp, path: &str) -> u16 {
    app.http
        .get(app.url(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Admin-side nudge that needs no source client: a pull now, through the puller.
async fn pull_now(app: &TestApp, id: &str) {
    assert!(
        app.state.pullers.nudge(&app.state, id).await,
        "{id} is pulled"
    );
}

#[derive(sqlx::FromRow, serde::Deserialize, Debug)]
struct Stored {
    resource_type: String,
    fhir_id: String,
    withdrawn: i64,
    #[sqlx(try_from = "sluis::store::bodies::Packed")]
    body: String,
    meta: Option<String>,
}

/// Every version stored from `source`: `Type/id` → versions in order.
async fn stored(app: &TestApp, source: &str) -> BTreeMap<String, Vec<Stored>> {
    let sql = sluis::store::Sql::new(
        "SELECT type AS resource_type, fhir_id, withdrawn, body, meta FROM versions \
         WHERE source = $1 ORDER BY type, fhir_id, version_no",
    )
    .arg(source);
    let rows: Vec<Stored> = app.state.db.fetch_all(&sql).await.unwrap();
    let mut out: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    for r in rows {
        out.entry(format!("{}/{}", r.resource_type, r.fhir_id))
            .or_default()
            .push(r);
    }
    out
}

/// The adapter holds exactly what the record system holds: every live resource with its
/// current content, every deleted one withdrawn, nothing else; and no version stored twice.
async fn assert_exact(app: &TestApp, source: &str, rs: &RecordSystem) {
    let live = rs.live();
    let stored = stored(app, source).await;
    let ever: std::collections::BTreeSet<String> = rs.ever().into_iter().collect();
    for key in stored.keys() {
        assert!(ever.contains(key), "{key} stored but never at the source");
    }
    for key in &ever {
        let versions = stored
            .get(key)
            .unwrap_or_else(|| panic!("{key} is at the source but not stored"));
        let last = versions.last().unwrap();
        match live.get(key) {
            Some(body) => {
                assert_ne!(
                    last.withdrawn, 1,
                    "{key} is live at the source but withdrawn"
                );
                // The body is stored without `meta`, which is kept beside it without the
                // source's versionId and lastUpdated.
                let got: Value = serde_json::from_str(&last.body).unwrap();
                let mut want = body.clone();
                let mut meta = want
                    .as_object_mut()
                    .unwrap()
                    .shift_remove("meta")
                    .unwrap_or(json!({}));
                meta.as_object_mut().unwrap().shift_remove("versionId");
                meta.as_object_mut().unwrap().shift_remove("lastUpdated");
                assert_eq!(got, want, "{key}: stored content differs");
                let got_meta: Value = match last.meta.as_deref() {
                    None | Some("") => json!({}),
                    Some(m) => serde_json::from_str(m).unwrap(),
                };
                assert_eq!(got_meta, meta, "{key}: stored meta differs");
            }
            None => assert_eq!(last.withdrawn, 1, "{key} was deleted at the source"),
        }
        // Nothing repeated: consecutive versions with content differ.
        let contents: Vec<(&str, Option<&str>)> = versions
            .iter()
            .filter(|v| v.withdrawn != 1)
            .map(|v| (v.body.as_str(), v.meta.as_deref()))
            .collect();
        for pair in contents.windows(2) {
            assert_ne!(pair[0], pair[1], "{key}: the same version stored twice");
        }
    }
}

fn obs(id: &str, patient: &str, value: i64) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": "2026-02-01T10:00:00Z",
        "valueQuantity": {"value": value, "unit": "/min"}})
}

/// A dossier whose resources share few timestamps: each `put_all` stamps all of its batch
/// with one `lastUpdated`.
fn dossier(rs: &RecordSystem, patients: usize, per_patient: usize) {
    let ps: Vec<Value> = (0..patients).map(|p| patient(&format!("p{p}"))).collect();
    rs.put_all(&ps);
    for batch in 0..3 {
        let os: Vec<Value> = (0..patients)
            .flat_map(|p| {
                (0..per_patient / 3)
                    .map(move |i| obs(&format!("o{p}-{batch}-{i}"), &format!("p{p}"), i as i64))
            })
            .collect();
        rs.put_all(&os);
    }
}

on_both!(
    a_dossier_with_shared_timestamps_arrives_exactly_and_so_do_its_changes,
    |b| async move {
        let rs = RecordSystem::start().await;
        dossier(&rs, 4, 60);
        let app = TestApp::spawn_with(
            b,
            &pulled(
                "ehr",
                &rs.base,
                "resource_types = [\"Patient\", \"Observation\"]\ninterval = \"PT1H\"\npage_size = 7\nhistory = true",
            ),
        )
        .await;
        let status = wait_rounds(&app, "ehr", 1).await;
        assert_exact(&app, "ehr", &rs).await;
        let obs_state = status["types"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["resource_type"] == "Observation")
            .unwrap();
        assert!(
            obs_state["pages"].as_i64().unwrap() >= 240 / 7,
            "{obs_state}"
        );
        assert!(obs_state["cursor"].is_string());

        // New, changed and deleted resources, again many to a timestamp.
        let mut changed: Vec<Value> = (0..4)
            .map(|p| obs(&format!("o{p}-0-1"), &format!("p{p}"), 99))
            .collect();
        changed.extend((0..30).map(|i| obs(&format!("new-{i}"), "p1", i)));
        rs.put_all(&changed);
        rs.delete_all(&["Observation/o2-1-3", "Observation/o3-2-0", "Patient/p3"]);
        assert_eq!(
            notify(&app, "ehr").await,
            403,
            "the push client of another source"
        );
        pull_now(&app, "ehr").await;
        wait_rounds(&app, "ehr", 2).await;
        assert_exact(&app, "ehr", &rs).await;

        // A late commit at the source: more resources with the moment of the last ones taken
        // in (the cursor's own moment). The overlap asks for them again.
        let last = rs.put_all(&[obs("on-time", "p0", 1)]);
        // (Past the source's next whole second: its `Date` does not hold the cursor back.)
        tokio::time::sleep(Duration::from_millis(1100)).await;
        pull_now(&app, "ehr").await;
        wait_rounds(&app, "ehr", 3).await;
        rs.put_at(&[obs("late-0", "p0", 2), obs("late-1", "p1", 3)], last);
        pull_now(&app, "ehr").await;
        wait_rounds(&app, "ehr", 4).await;
        assert_exact(&app, "ehr", &rs).await;

        // A poll that finds nothing new changes nothing.
        let before = stored(&app, "ehr")
            .await
            .values()
            .map(Vec::len)
            .sum::<usize>();
        pull_now(&app, "ehr").await;
        wait_rounds(&app, "ehr", 5).await;
        let after = stored(&app, "ehr")
            .await
            .values()
            .map(Vec::len)
            .sum::<usize>();
        assert_eq!(before, after);
    }
);

on_both!(
    relative_next_links_and_an_unsorted_source_arrive_exactly_through_a_crash,
    |b| async move {
        let rs = RecordSystem::start().await;
        rs.set_relative_links(true);
        dossier(&rs, 3, 30);
        // Newer ones with ids that sort first: an unsorted page may hold the newest moment.
        rs.put_all(
            &(0..20)
                .map(|i| obs(&format!("a-{i}"), "p1", i))
                .collect::<Vec<_>>(),
        );
        rs.set_delay(Duration::from_millis(15));
        let config = pulled(
            "ehr",
            &rs.base,
            "resource_types = [\"Observation\", \"Patient\"]\ninterval = \"PT1H\"\npage_size = 4\nsort = false\nlease = \"PT3S\"",
        );
        let first = TestApp::spawn_with(b, &config).await;
        let started = Instant::now();
        while stored(&first, "ehr").await.len() < 30 {
            assert!(started.elapsed() < Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        first.crash().await;
        assert!(stored(&first, "ehr").await.len() < 113, "crashed mid-way");
        rs.set_delay(Duration::ZERO);
        let app = first.restart_with(&config, T0).await;
        wait_rounds(&app, "ehr", 1).await;
        assert_exact(&app, "ehr", &rs).await;
        assert!(
            rs.requests().iter().all(|(_, r)| !r.contains("_sort")),
            "sort = false sends no _sort"
        );
    }
);

on_both!(
    a_failing_source_recovers_with_the_same_result_and_no_duplicates,
    |b| async move {
        let rs = RecordSystem::start().await;
        rs.set_auth(Auth::Secret {
            client_id: "sluis".into(),
            secret: "s3cret".into(),
        });
        dossier(&rs, 3, 30);
        rs.fail_next(&[
            Fault::Status(503),
            Fault::TooMany(1),
            Fault::Slow(Duration::from_secs(3)),
            Fault::CutOff,
            Fault::Truncated,
            Fault::ExpireTokens,
            Fault::Status(502),
        ]);
        let app = TestApp::spawn_with(
            b,
            &pulled(
                "ehr",
                &rs.base,
                "resource_types = [\"Patient\", \"Observation\"]\ninterval = \"PT1H\"\npage_size = 5\n\
                 timeout = \"PT1S\"\nmax_retries = 8\nhistory = true\n\
                 auth = { method = \"client_secret\", token_url = \"TOKEN\", client_id = \"sluis\", secret = \"s3cret\" }"
                    .replace("TOKEN", &rs.token_url)
                    .as_str(),
            ),
        )
        .await;
        let status = wait_rounds(&app, "ehr", 1).await;
        assert_eq!(rs.faults_left(), 0);
        assert_exact(&app, "ehr", &rs).await;
        let retries: i64 = status["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["retries"].as_i64().unwrap())
            .sum();
        assert!(retries >= 6, "{status:#}");
        assert_eq!(
            rs.token_requests(),
            2,
            "a token, and a new one after the 401"
        );
        // The 429's Retry-After (1 s) was waited for before the next try.
        let requests = rs.requests();
        let gap = requests[2].0 - requests[1].0;
        assert!(gap >= Duration::from_millis(950), "{gap:?}");

        // Changes after the faults, with more faults.
        rs.put_all(&[obs("o0-0-0", "p0", 1234), obs("late", "p2", 5)]);
        rs.delete_all(&["Observation/o1-1-1"]);
        rs.fail_next(&[Fault::CutOff, Fault::Status(500)]);
        pull_now(&app, "ehr").await;
        wait_rounds(&app, "ehr", 2).await;
        assert_exact(&app, "ehr", &rs).await;
    }
);

on_both!(
    a_source_that_stays_down_shows_its_error_and_stops_nothing_else,
    |b| async move {
        let rs = RecordSystem::start().await;
        rs.set_down(Some(503));
        let good = RecordSystem::start().await;
        dossier(&good, 1, 3);
        let app = TestApp::spawn_with(
            b,
            &(pulled(
                "down",
                &rs.base,
                "resource_types = [\"Patient\"]\ninterval = \"PT1H\"\nmax_retries = 1",
            ) + &pulled(
                "up",
                &good.base,
                "resource_types = [\"Patient\", \"Observation\"]\ninterval = \"PT1H\"",
            )),
        )
        .await;
        wait_rounds(&app, "up", 1).await;
        assert_exact(&app, "up", &good).await;
        // The portal API answers meanwhile.
        assert_eq!(get_status(&app, "/fhir/metadata").await, 200);
        let started = Instant::now();
        let down = loop {
            let s = source_status(&app, "down").await;
            if s["types"][0]["last_error"].is_string() {
                break s;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{s:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let t = &down["types"][0];
        assert_eq!(t["resource_type"], "Patient");
        assert!(t["last_error"].as_str().unwrap().contains("503"), "{t}");
        assert!(t["errors"].as_i64().unwrap() >= 1);
        assert!(t["cursor"].is_null());
        assert_eq!(down["pull"]["rounds_here"], 0);
    }
);

/// The error of one type in `/admin/sources`, once there is one.
async fn wait_error(app: &TestApp, id: &str, resource_type: &str) -> String {
    let started = Instant::now();
    loop {
        let s = source_status(app, id).await;
        let error = s["types"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["resource_type"] == resource_type)
            .and_then(|t| t["last_error"].as_str().map(str::to_string));
        if let Some(e) = error {
            return e;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{s:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

on_both!(
    a_misbehaving_source_gets_no_token_elsewhere_and_no_memory,
    |b| async move {
        let rs = RecordSystem::start().await;
        rs.set_auth(Auth::Secret {
            client_id: "sluis".into(),
            secret: "s3cret".into(),
        });
        let elsewhere = RecordSystem::start().await;
        dossier(&rs, 1, 3);
        // A page whose next link leads to another server, where the token would go along.
        let away = json!({"resourceType": "Bundle", "type": "searchset",
            "link": [{"relation": "next", "url": format!("{}/Observation?page=2", elsewhere.base)}],
            "entry": [{"resource": obs("first", "p0", 1), "search": {"mode": "match"}}]});
        // A page larger than `[limits] max_body_bytes`, and one that is no Bundle.
        let mut huge = obs("huge", "p0", 2);
        huge["note"] = json!([{"text": "x".repeat(150_000)}]);
        let huge = json!({"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": huge, "search": {"mode": "match"}}]});
        rs.fail_next(&[Fault::Body(serde_json::to_vec(&away).unwrap())]);
        let app = TestApp::spawn_with(
            b,
            &(pulled(
                "ehr",
                &rs.base,
                &"resource_types = [\"Observation\"]\ninterval = \"PT1H\"\nmax_retries = 1\n\
                 auth = { method = \"client_secret\", token_url = \"TOKEN\", client_id = \"sluis\", secret = \"s3cret\" }"
                    .replace("TOKEN", &rs.token_url),
            ) + "\n[limits]\nmax_body_bytes = 100000\n"),
        )
        .await;
        let error = wait_error(&app, "ehr", "Observation").await;
        assert!(error.contains("leads away from the source"), "{error}");
        assert!(
            elsewhere.requests().is_empty(),
            "nothing was sent elsewhere"
        );
        assert!(!error.contains("s3cret"), "{error}");
        // Nothing of that page is taken in.
        assert!(!stored(&app, "ehr").await.contains_key("Observation/first"));

        rs.fail_next(&[Fault::Body(serde_json::to_vec(&huge).unwrap())]);
        pull_now(&app, "ehr").await;
        let started = Instant::now();
        let error = loop {
            let e = wait_error(&app, "ehr", "Observation").await;
            if e.contains("larger than") {
                break e;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{e}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(error.contains("100000 bytes"), "{error}");
        assert!(!stored(&app, "ehr").await.contains_key("Observation/huge"));

        rs.fail_next(&[Fault::Body(
            br#"{"resourceType": "OperationOutcome"}"#.to_vec(),
        )]);
        pull_now(&app, "ehr").await;
        let started = Instant::now();
        loop {
            let e = wait_error(&app, "ehr", "Observation").await;
            if e.contains("not a searchset Bundle") {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{e}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Once the source behaves, everything arrives.
        pull_now(&app, "ehr").await;
        let started = Instant::now();
        while !stored(&app, "ehr").await.contains_key("Observation/o0-2-0") {
            assert!(started.elapsed() < Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // A resource stamped far in the future does not carry the cursor past what comes next.
        let mut future = obs("future", "p0", 3);
        future["meta"] = json!({"lastUpdated": "2099-01-01T00:00:00Z"});
        let page = json!({"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": future, "search": {"mode": "match"}}]});
        // Its clock says 2100 too.
        rs.fail_next(&[Fault::Dated(
            serde_json::to_vec(&page).unwrap(),
            "Fri, 01 Jan 2100 00:00:00 GMT".into(),
        )]);
        pull_now(&app, "ehr").await;
        let started = Instant::now();
        while !stored(&app, "ehr").await.contains_key("Observation/future") {
            assert!(started.elapsed() < Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cursor = source_status(&app, "ehr").await["types"][0]["cursor"]
            .as_str()
            .unwrap()
            .to_string();
        let now = chrono::Utc::now();
        assert!(
            cursor.as_str() < now.to_rfc3339().as_str(),
            "{cursor}: not past our own clock"
        );
        rs.put_all(&[obs("after-the-future", "p0", 4)]);
        pull_now(&app, "ehr").await;
        let started = Instant::now();
        while !stored(&app, "ehr")
            .await
            .contains_key("Observation/after-the-future")
        {
            assert!(started.elapsed() < Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
);

on_both!(
    a_token_endpoint_that_hangs_or_answers_oddly_does_not_stop_the_pull,
    |b| async move {
        let rs = RecordSystem::start().await;
        rs.set_auth(Auth::Secret {
            client_id: "sluis".into(),
            secret: "s3cret".into(),
        });
        dossier(&rs, 2, 6);
        // The first token request is never answered: it times out like a page and is tried again.
        rs.fail_token(&[TokenFault::Hang]);
        let app = TestApp::spawn_with(
            b,
            &pulled(
                "ehr",
                &rs.base,
                &"resource_types = [\"Patient\", \"Observation\"]\ninterval = \"PT1H\"\ntimeout = \"PT1S\"\nmax_retries = 4\n\
                 auth = { method = \"client_secret\", token_url = \"TOKEN\", client_id = \"sluis\", secret = \"s3cret\" }"
                    .replace("TOKEN", &rs.token_url),
            ),
        )
        .await;
        wait_rounds(&app, "ehr", 1).await;
        assert_exact(&app, "ehr", &rs).await;
        assert!(rs.token_requests() >= 2);
        // Then a token that cannot be a header (refused, not kept), and one that claims to
        // live forever (kept, within reason); the loop lives on.
        rs.fail_token(&[
            TokenFault::Answer(json!({"access_token": "bad\r\nX-Injected: 1", "token_type": "bearer", "expires_in": 3600})),
            TokenFault::Answer(json!({"access_token": "forever", "token_type": "bearer", "expires_in": 18446744073709551615u64})),
        ]);
        rs.fail_next(&[Fault::ExpireTokens]);
        rs.put_all(&[obs("after-the-tokens", "p1", 1)]);
        pull_now(&app, "ehr").await;
        wait_rounds(&app, "ehr", 2).await;
        assert_exact(&app, "ehr", &rs).await;
        rs.put_all(&[obs("still-pulled", "p1", 2)]);
        pull_now(&app, "ehr").await;
        wait_rounds(&app, "ehr", 3).await;
        assert_exact(&app, "ehr", &rs).await;
    }
);

on_both!(a_flood_of_notifications_makes_few_rounds, |b| async move {
    let rs = RecordSystem::start().await;
    dossier(&rs, 1, 3);
    let app = TestApp::spawn_with(
            b,
            &(pulled(
                "flooded",
                &rs.base,
                "resource_types = [\"Patient\"]\ninterval = \"PT1H\"",
            ) + "\n[[clients]]\nid = \"flooder\"\nkind = \"source\"\nauth = \"client_secret\"\nsecret = \"flooder-secret-0001\"\nsource = \"flooded\"\n"),
        )
        .await;
    wait_rounds(&app, "flooded", 1).await;
    let token = app.token(("flooder", "flooder-secret-0001")).await;
    let before = rs.requests().len();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        let r = app
            .http
            .post(app.url("/ingest/flooded/$notify"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let rounds = rs.requests().len() - before;
    assert!(
        (2..=6).contains(&rounds),
        "{rounds} rounds for two seconds of nudges"
    );
});

on_both!(
    a_page_is_stored_only_while_its_process_holds_the_lease,
    |b| async move {
        use sluis::ingest::entries::{Entry, Method};
        use sluis::ingest::pulled::{Taken, take_page};
        use sluis::store::pull as store;
        let app = TestApp::spawn(b).await;
        let mut tx = app.state.db.begin().await.unwrap();
        assert!(
            store::lease(&mut tx, "ons", "the-other", 0, i64::MAX / 2)
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        let page = |id: &str| {
            vec![Entry {
                index: 0,
                full_url: None,
                method: Method::Update,
                target: Some(("Observation".into(), id.into())),
                if_none_exist: None,
                resource: Some(obs(id, "p0", 1)),
            }]
        };
        let taken = |holder: &'static str| store::PageTaken {
            source: "ons",
            holder,
            resource_type: "Observation",
            cursor_at: Some(1_000_000),
            finished: true,
            resources: 1,
            ..Default::default()
        };
        let r = take_page(&app.state, page("mine"), &taken("me"))
            .await
            .unwrap();
        assert!(matches!(r, Taken::LeaseLost), "{r:?}");
        assert!(stored(&app, "ons").await.is_empty());
        assert!(
            store::states(&app.state.db, Some("ons"))
                .await
                .unwrap()
                .is_empty()
        );
        let r = take_page(&app.state, page("theirs"), &taken("the-other"))
            .await
            .unwrap();
        assert!(matches!(r, Taken::Stored(_)), "{r:?}");
        assert!(stored(&app, "ons").await.contains_key("Observation/theirs"));
        let state = store::states(&app.state.db, Some("ons")).await.unwrap();
        assert_eq!(state[0].cursor_at, Some(1_000_000));
    }
);

on_both!(
    stopping_in_the_middle_of_a_pull_loses_and_repeats_nothing,
    |b| async move {
        let rs = RecordSystem::start().await;
        dossier(&rs, 4, 90);
        rs.set_delay(Duration::from_millis(15));
        let config = pulled(
            "ehr",
            &rs.base,
            "resource_types = [\"Patient\", \"Observation\"]\ninterval = \"PT1H\"\npage_size = 6\nlease = \"PT3S\"\nhistory = true",
        );
        let first = TestApp::spawn_with(b, &config).await;
        // Crash somewhere in the middle of the Observations.
        let started = Instant::now();
        loop {
            let s = source_status(&first, "ehr").await;
            let pages: i64 = s["types"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["pages"].as_i64().unwrap())
                .sum();
            if pages >= 12 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{s:#}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        first.crash().await;
        let partial = stored(&first, "ehr").await.len();
        assert!(partial > 0 && partial < 364, "crashed mid-way: {partial}");
        // A change while it is down, then a start (it takes over once the lease expires).
        rs.put_all(&[obs("o0-0-0", "p0", 77)]);
        rs.set_delay(Duration::ZERO);
        let second = first.restart_with(&config, T0).await;
        wait_rounds(&second, "ehr", 1).await;
        assert_exact(&second, "ehr", &rs).await;

        // And a graceful stop in the middle, then a start: the lease is given up at once.
        rs.put_all(
            &(0..60)
                .map(|i| obs(&format!("more-{i}"), "p0", i))
                .collect::<Vec<_>>(),
        );
        rs.set_delay(Duration::from_millis(15));
        pull_now(&second, "ehr").await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        second.stop().await;
        rs.set_delay(Duration::ZERO);
        let third = second.restart_with(&config, T0).await;
        wait_rounds(&third, "ehr", 1).await;
        assert_exact(&third, "ehr", &rs).await;
    }
);

on_both!(
    two_processes_never_pull_one_source_at_once,
    |b| async move {
        let rs = RecordSystem::start().await;
        dossier(&rs, 2, 45);
        rs.set_delay(Duration::from_millis(10));
        let config = pulled(
            "ehr",
            &rs.base,
            "resource_types = [\"Patient\", \"Observation\"]\ninterval = \"PT1H\"\npage_size = 5\nlease = \"PT3S\"",
        );
        let a = TestApp::spawn_with(b, &config).await;
        let b2 = a.restart_with(&config, T0).await;
        // Both are nudged again and again while the pulls run.
        for _ in 0..10 {
            pull_now(&a, "ehr").await;
            pull_now(&b2, "ehr").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (sa, sb) = (
            source_status(&a, "ehr").await,
            source_status(&b2, "ehr").await,
        );
        let holders = [&sa, &sb]
            .iter()
            .filter(|s| s["lease"]["this_process"] == true)
            .count();
        assert_eq!(holders, 1, "{sa:#} {sb:#}");
        assert_eq!(rs.max_in_flight(), 1, "two pulls of one source at once");
        let (holder, other) = if sa["lease"]["this_process"] == true {
            (&a, &b2)
        } else {
            (&b2, &a)
        };
        assert_eq!(
            source_status(other, "ehr").await["pull"]["rounds_here"],
            0,
            "the other process never pulled"
        );
        // The holder stops: the other takes over and pulls what is new.
        holder.stop().await;
        rs.put_all(&[obs("after-stop", "p1", 1)]);
        let started = Instant::now();
        loop {
            let s = source_status(other, "ehr").await;
            if s["lease"]["this_process"] == true && s["pull"]["rounds_here"].as_u64() >= Some(1) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{s:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_exact(other, "ehr", &rs).await;
        assert_eq!(rs.max_in_flight(), 1);
    }
);

on_both!(
    a_notification_leads_to_a_pull_within_a_second,
    |b| async move {
        let rs = RecordSystem::start().await;
        rs.put_all(&[patient("p0")]);
        let app = TestApp::spawn_with(
        b,
        &(pulled(
            "ons-pull",
            &rs.base,
            "resource_types = [\"Patient\", \"Observation\"]\ninterval = \"PT1H\"",
        ) + "\n[[clients]]\nid = \"ehr-notify\"\nkind = \"source\"\nauth = \"client_secret\"\nsecret = \"notify-secret-00001\"\nsource = \"ons-pull\"\n"),
    )
    .await;
        wait_rounds(&app, "ons-pull", 1).await;
        rs.put_all(&[obs("fresh", "p0", 1)]);
        let token = app.token(("ehr-notify", "notify-secret-00001")).await;
        let started = Instant::now();
        let r = app
            .http
            .post(app.url("/ingest/ons-pull/$notify"))
            .bearer_auth(&token)
            .json(&json!({"resourceType": "Bundle", "type": "subscription-notification"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        loop {
            if stored(&app, "ons-pull")
                .await
                .contains_key("Observation/fresh")
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "no pull within a second of $notify"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Refusals: no token, another source's token, a source that is not pulled, no source.
        let r = app
            .http
            .post(app.url("/ingest/ons-pull/$notify"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(notify(&app, "ons-pull").await, 403);
        let (status, body) = {
            let token = app.token(SOURCE).await;
            let r = app
                .http
                .post(app.url("/ingest/ons/$notify"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        };
        assert_eq!(status, 409, "{body}");
        assert_eq!(reason(&body), "conflict");
        let r = app
            .http
            .post(app.url("/ingest/nope/$notify"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
);

on_both!(
    smart_backend_services_keys_sign_the_token_request,
    |b| async move {
        let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
        for (alg, jwt_alg, file) in [
            ("ES384", jsonwebtoken::Algorithm::ES384, "source-es384"),
            ("RS384", jsonwebtoken::Algorithm::RS384, "source-rs384"),
        ] {
            let rs = RecordSystem::start().await;
            rs.set_auth(Auth::Jwt {
                client_id: "sluis-backend".into(),
                public_pem: std::fs::read(format!("{keys}/{file}.pub.pem")).unwrap(),
                alg: jwt_alg,
                kid: "key-1".into(),
            });
            dossier(&rs, 1, 6);
            let app = TestApp::spawn_with(
            b.clone(),
            &pulled(
                "ehr",
                &rs.base,
                &format!(
                    "resource_types = [\"Patient\", \"Observation\"]\ninterval = \"PT1H\"\n\
                     auth = {{ method = \"private_key_jwt\", token_url = \"{}\", client_id = \"sluis-backend\", \
                     key_path = \"{keys}/{file}.pem\", kid = \"key-1\", alg = \"{alg}\", scope = \"system/*.rs\" }}",
                    rs.token_url
                ),
            ),
        )
        .await;
            wait_rounds(&app, "ehr", 1).await;
            assert_exact(&app, "ehr", &rs).await;
            assert_eq!(
                rs.token_requests(),
                1,
                "{alg}: one token for the whole pull"
            );
        }
    }
);

on_both!(
    metrics_parse_as_prometheus_text_and_count_the_pull,
    |b| async move {
        // The counters are the process's: a source of this test alone (per store).
        let metered = match &b {
            Backend::Sqlite => "metered-sqlite",
            Backend::Postgres(_) => "metered-postgres",
        };
        let rs = RecordSystem::start().await;
        dossier(&rs, 2, 9);
        let pusher = format!("{metered}-push");
        let app = TestApp::spawn_with(
            b,
            &(pulled(
                metered,
                &rs.base,
                "resource_types = [\"Patient\", \"Observation\"]\ninterval = \"PT1H\"\npage_size = 4",
            ) + &format!(
                "[[clients]]\nid = \"{pusher}\"\nkind = \"source\"\nauth = \"client_secret\"\nsecret = \"pusher-secret-0001\"\nsource = \"{metered}\"\n"
            )),
        )
        .await;
        wait_rounds(&app, metered, 1).await;
        // Pushed too: a transaction refused whole (two entries), a batch with one refused.
        let token = app.token((&pusher, "pusher-secret-0001")).await;
        let bad = json!({"resourceType": "Observation", "id": "bad", "status": "gisteren",
            "code": {"text": "x"}});
        for (kind, want) in [("transaction", 400), ("batch", 200)] {
            let bundle = json!({"resourceType": "Bundle", "type": kind, "entry": [
                {"resource": obs("pushed", "p0", 1), "request": {"method": "PUT", "url": "Observation/pushed"}},
                {"resource": bad, "request": {"method": "PUT", "url": "Observation/bad"}}]});
            let r = app
                .http
                .post(app.url(&format!("/ingest/{metered}")))
                .bearer_auth(&token)
                .json(&bundle)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), want, "{kind}");
        }
        assert_eq!(get_status(&app, "/fhir/metadata").await, 200);
        let r = app.http.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = r.text().await.unwrap();
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("Prometheus text");
        let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
            scrape
                .samples
                .iter()
                .filter(|s| s.metric == name)
                .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => 0.0,
                })
                .sum()
        };
        let obs = [("source", metered), ("resource_type", "Observation")];
        assert_eq!(
            value("sluis_pull_pages_total", &obs),
            5.0,
            "18 / 4 → 5 pages"
        );
        assert_eq!(value("sluis_pull_resources_total", &obs), 18.0);
        assert_eq!(
            value(
                "sluis_ingest_entries_total",
                &[("source", metered), ("via", "pull"), ("outcome", "created")]
            ),
            20.0
        );
        let pushed = |outcome| {
            value(
                "sluis_ingest_entries_total",
                &[("source", metered), ("via", "push"), ("outcome", outcome)],
            )
        };
        assert_eq!(pushed("refused"), 3.0);
        assert_eq!(pushed("created"), 1.0);
        assert_eq!(
            value("sluis_versions_held_back", &[("source", metered)]),
            19.0
        );
        assert_eq!(
            value("sluis_versions_released", &[("source", metered)]),
            2.0
        );
        assert_eq!(value("sluis_pull_lease_held", &[("source", metered)]), 1.0);
        assert!(value("sluis_pull_lag_seconds", &obs) >= 0.0);
        assert!(
            value(
                "sluis_http_requests_total",
                &[
                    ("route", "/fhir/metadata"),
                    ("method", "GET"),
                    ("status", "200")
                ]
            ) >= 1.0
        );
        assert!(value("sluis_db_connections", &[("state", "max")]) >= 1.0);
        // Latency histograms, by route template.
        assert!(
            scrape
                .samples
                .iter()
                .any(|s| s.metric == "sluis_http_request_duration_seconds"
                    && s.labels.get("route") == Some("/fhir/metadata"))
        );
        // A path as sent never becomes a label.
        get_status(&app, "/fhir/Observation/some-id-nobody-has").await;
        get_status(&app, "/no/such/path/at-all").await;
        let r = app.http.get(app.url("/metrics")).send().await.unwrap();
        let text = r.text().await.unwrap();
        assert!(!text.contains("some-id-nobody-has") && !text.contains("at-all"));
        assert!(text.contains("route=\"/fhir/{type}/{id}\""));
        assert!(text.contains("route=\"unmatched\""));
    }
);

/// Synthea's patients as a record system holds them: each Bundle's resources with their
/// `urn:uuid:` references resolved to `Type/id`, as a FHIR server stores a transaction.
fn synthea_resources(file: &std::path::Path) -> Vec<Value> {
    let bundle: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let entries = bundle["entry"].as_array().unwrap();
    let by_url: BTreeMap<String, String> = entries
        .iter()
        .filter_map(|e| {
            let r = &e["resource"];
            Some((
                e["fullUrl"].as_str()?.to_string(),
                format!("{}/{}", r["resourceType"].as_str()?, r["id"].as_str()?),
            ))
        })
        .collect();
    fn resolve(v: &mut Value, by_url: &BTreeMap<String, String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    match v {
                        Value::String(s) if k == "reference" => {
                            if let Some(r) = by_url.get(s.as_str()) {
                                *s = r.clone();
                            }
                        }
                        _ => resolve(v, by_url),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| resolve(i, by_url)),
            _ => {}
        }
    }
    entries
        .iter()
        .map(|e| {
            let mut r = e["resource"].clone();
            resolve(&mut r, &by_url);
            r
        })
        .collect()
}

on_both!(the_synthea_corpus_pulled_arrives_exactly, |b| async move {
    let Some(dir) = crate::corpus::corpora() else {
        return;
    };
    let files = crate::corpus::json_files(dir.join("synthea-r4/smart-generated-sample-data"));
    let rs = RecordSystem::start().await;
    let mut types = std::collections::BTreeSet::new();
    // Half now, half for the next poll.
    let (first, second) = files.split_at(files.len() / 2);
    for file in first {
        let resources = synthea_resources(file);
        types.extend(
            resources
                .iter()
                .map(|r| r["resourceType"].as_str().unwrap().to_string()),
        );
        rs.put_all(&resources);
    }
    for file in second {
        types.extend(
            synthea_resources(file)
                .iter()
                .map(|r| r["resourceType"].as_str().unwrap().to_string()),
        );
    }
    let list = types
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let app = TestApp::spawn_with(
        b,
        &pulled(
            "synthea",
            &rs.base,
            &format!(
                "resource_types = [{list}]\ninterval = \"PT1H\"\npage_size = 250\nhistory = true"
            ),
        ),
    )
    .await;
    wait_rounds(&app, "synthea", 1).await;
    assert_exact(&app, "synthea", &rs).await;
    for file in second {
        rs.put_all(&synthea_resources(file));
    }
    // Changed and deleted in the first half.
    let some = synthea_resources(&first[0]);
    let mut changed = some[1].clone();
    changed["meta"] = json!({"tag": [{"system": "urn:test", "code": "changed"}]});
    rs.put_all(&[changed]);
    rs.delete_all(&[&format!(
        "{}/{}",
        some[2]["resourceType"].as_str().unwrap(),
        some[2]["id"].as_str().unwrap()
    )]);
    pull_now(&app, "synthea").await;
    wait_rounds(&app, "synthea", 2).await;
    assert_exact(&app, "synthea", &rs).await;
    let total: usize = stored(&app, "synthea").await.len();
    eprintln!("Synthea pulled: {total} resources of {} types", types.len());
});
