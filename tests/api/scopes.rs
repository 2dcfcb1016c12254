//! SMART v2 `system/` scopes (issue 22): a token gets what it asks for as far as its client's
//! config allows, and every request is held to what both its token and the config allow now.
//! The adapter's own decision still has the last word: a scope never shows more.

use crate::helpers::*;
use crate::on_both;
use serde_json::{Value, json};

const NARROW: (&str, &str) = ("narrow", "narrow-portal-secret");
const NARROW_PUSH: (&str, &str) = ("narrow-push", "narrow-push-secret-1");

fn clients(portal_scope: &str, push_scope: &str) -> String {
    format!(
        "[[clients]]\nid = \"{}\"\nkind = \"portal\"\nauth = \"client_secret\"\nsecret = \"{}\"\nscope = \"{portal_scope}\"\n\
         [[clients]]\nid = \"{}\"\nkind = \"source\"\nauth = \"client_secret\"\nsecret = \"{}\"\nsource = \"ons\"\nscope = \"{push_scope}\"\n",
        NARROW.0, NARROW.1, NARROW_PUSH.0, NARROW_PUSH.1
    )
}

const CONFIG_SCOPE: &str = "system/Observation.rs system/Patient.r";

/// `POST /auth/token` for `client` asking `scope` (none: `None`): status and body.
async fn ask(app: &TestApp, (id, secret): (&str, &str), scope: Option<&str>) -> (u16, Value) {
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    let r = app
        .http
        .post(app.url("/auth/token"))
        .basic_auth(id, Some(secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn token_for(app: &TestApp, client: (&str, &str), scope: Option<&str>) -> String {
    let (status, body) = ask(app, client, scope).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// Patient p1 with an Observation, shown (past the delay); `user` its holder through the
/// `narrow` portal, with a token of `scope`.
async fn world(app: &TestApp, scope: Option<&str>) -> User {
    app.push_ok(&transaction(&[
        patient("p1"),
        observation("o1", "p1", "29463-7", "2026-02-01T10:00:00Z"),
        json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
               "code": {"text": "something"}}),
    ]))
    .await;
    app.set_clock("2026-04-01T09:00:00Z").await;
    let (status, code) = app
        .admin_post(
            "/admin/activation-codes",
            &json!({"patient": "Patient/p1", "relationship": "self"}),
        )
        .await;
    assert_eq!(status, 201, "{code}");
    let user = User {
        base: app.base.clone(),
        http: app.http.clone(),
        token: token_for(app, NARROW, scope).await,
        id: "u-narrow".into(),
    };
    let (status, body) = user
        .post(
            "/portal/link",
            &json!({"code": code["code"], "birth_date": "1950-01-01"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = user
        .post("/portal/terms", &json!({"version": "2026-01"}))
        .await;
    assert_eq!(status, 200, "{body}");
    user
}

on_both!(
    a_token_gets_what_it_asks_as_far_as_config_allows,
    |b| async move {
        let app = TestApp::spawn_with(b, &clients(CONFIG_SCOPE, "system/*.cud")).await;
        let granted = |body: &Value| body["scope"].as_str().unwrap_or("").to_string();
        // Without a scope: everything the config allows.
        let (status, body) = ask(&app, NARROW, None).await;
        assert_eq!((status, granted(&body)), (200, CONFIG_SCOPE.to_string()));
        // More than allowed: narrowed to what is.
        let (status, body) = ask(&app, NARROW, Some("system/*.rs")).await;
        assert_eq!((status, granted(&body)), (200, CONFIG_SCOPE.to_string()));
        // SMART v1 words mean the same.
        let (status, body) = ask(&app, NARROW, Some("system/Observation.read")).await;
        assert_eq!(
            (status, granted(&body)),
            (200, "system/Observation.rs".into())
        );
        // Less: just that.
        let (status, body) = ask(&app, NARROW, Some("system/Observation.s")).await;
        assert_eq!(
            (status, granted(&body)),
            (200, "system/Observation.s".into())
        );
        // Nothing of it allowed, or not a backend scope at all: 400 invalid_scope.
        for bad in [
            "system/Condition.rs",
            "system/*.cud",
            "user/*.rs",
            "patient/Observation.rs",
            "openid",
            "system/Observation.rs?category=vital-signs",
            "system/Nonsense.rs",
            "system/Observation.sr",
            "",
        ] {
            let (status, body) = ask(&app, NARROW, Some(bad)).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert_eq!(body["resourceType"], "OperationOutcome", "{bad}");
            assert!(body.to_string().contains("invalid_scope"), "{bad}: {body}");
        }
        // The default of a portal without `scope` in config is read and search of everything.
        let (status, body) = ask(&app, PORTAL, None).await;
        assert_eq!(
            (status, granted(&body)),
            (
                200,
                "system/*.rs system/Communication.c system/Task.c".into()
            )
        );
        let (status, body) = ask(&app, SOURCE, None).await;
        assert_eq!((status, granted(&body)), (200, "system/*.cud".into()));
        // A scope in config that is not one is a config error, with its key.
        let problems = sluis::config::Config::from_toml(
            &config_text("sqlite://x.db", &clients("user/*.rs", "system/*.cud")),
            "test.toml",
            std::iter::empty(),
        )
        .unwrap_err()
        .0;
        assert!(
            problems.iter().any(|p| p.key.ends_with(".scope")),
            "{problems:?}"
        );
    }
);

on_both!(
    a_token_reads_only_the_types_its_scope_names,
    |b| async move {
        let app = TestApp::spawn_with(b, &clients(CONFIG_SCOPE, "system/*.cud")).await;
        let user = world(&app, None).await;
        // In scope: read Patient, search and read Observation.
        let (status, body) = user.get("/fhir/Patient/p1").await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = user.get("/fhir/Observation?patient=p1").await;
        assert_eq!((status, body["total"].as_i64()), (200, Some(1)), "{body}");
        let (status, _) = user.get("/fhir/Observation/o1").await;
        assert_eq!(status, 200);
        // Out of scope: another type, search where only read is allowed, and the calls that
        // span types or serve types of their own. 403, saying what scope is needed.
        for path in [
            "/fhir/Condition?patient=p1",
            "/fhir/Condition/c1",
            "/fhir/Patient?_id=p1",
            "/fhir/_history",
            "/fhir/Consent?patient=p1",
            "/fhir/AuditEvent?patient=p1",
            "/fhir/AuditEvent/1",
        ] {
            let r = app
                .http
                .get(app.url(path))
                .bearer_auth(&user.token)
                .header("x-portal-user", &user.id)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{path}");
            let challenge = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            assert!(
                challenge.contains("insufficient_scope"),
                "{path}: {challenge}"
            );
            let body: Value = r.json().await.unwrap();
            assert_eq!(reason(&body), "invalid-token", "{path}: {body}");
            assert!(body.to_string().contains("system/"), "{path}: {body}");
        }
        // _include brings only types the scope may read.
        let (_, body) = user
            .get("/fhir/Observation?patient=p1&_include=Observation:subject")
            .await;
        assert_eq!(body["entry"].as_array().unwrap().len(), 2, "{body}");
        let obs_only = User {
            token: token_for(&app, NARROW, Some("system/Observation.rs")).await,
            ..user.clone()
        };
        let (status, body) = obs_only
            .get("/fhir/Observation?patient=p1&_include=Observation:subject")
            .await;
        assert_eq!(status, 200, "{body}");
        let types: Vec<&str> = body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["resourceType"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Observation"], "{body}");
        // A wide scope reaches them (the decision, not the scope, has the last word there).
        let wide = User {
            token: token_for(&app, PORTAL, None).await,
            ..user.clone()
        };
        assert_eq!(
            wide.get("/fhir/Condition?patient=p1").await.0,
            403,
            "not linked through caren"
        );
    }
);

on_both!(
    a_scope_narrowed_in_config_acts_on_the_tokens_out_there,
    |b| async move {
        let app = TestApp::spawn_with(b, &clients(CONFIG_SCOPE, "system/*.cud")).await;
        let user = world(&app, None).await;
        assert_eq!(user.get("/fhir/Patient/p1").await.0, 200);
        let narrowed = app
            .restart_with(
                &clients("system/Observation.rs", "system/*.cud"),
                "2026-04-01T09:00:00Z",
            )
            .await;
        let again = User {
            base: narrowed.base.clone(),
            ..user.clone()
        };
        assert_eq!(again.get("/fhir/Patient/p1").await.0, 403);
        assert_eq!(again.get("/fhir/Observation/o1").await.0, 200);
    }
);

// A write needs the scope of what it does, however it is sent: creating `c`, changing a
// stored resource `u`, withdrawing (a delete, or status entered-in-error) `d`.
on_both!(a_source_writes_only_what_its_scope_names, |b| async move {
    let app = TestApp::spawn_with(
        b,
        &clients(CONFIG_SCOPE, "system/Patient.cu system/Observation.c"),
    )
    .await;
    let token = token_for(&app, NARROW_PUSH, None).await;
    let send = async |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut r = app
            .http
            .request(method, app.url(path))
            .bearer_auth(&token)
            .header("content-type", "application/fhir+json");
        if let Some(b) = body {
            r = r.body(b.to_string());
        }
        let r = r.send().await.unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let post = |body: Value| send(reqwest::Method::POST, "/ingest/ons", Some(body));
    // A transaction with one entry beyond the scope is refused whole.
    let condition = json!({"resourceType": "Condition", "id": "c1",
        "subject": {"reference": "Patient/p1"}, "code": {"text": "x"}});
    let (status, body) = post(transaction(&[patient("p1"), condition.clone()])).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("system/Condition.c"), "{body}");
    // A batch: each entry on its own.
    let mut batch = transaction(&[patient("p1"), condition]);
    batch["type"] = json!("batch");
    let (status, body) = post(batch).await;
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<&str> = body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    // Created now: nothing of the refused transaction was stored.
    assert!(statuses[0].starts_with("201"), "{body}");
    assert!(statuses[1].starts_with("403"), "{body}");
    // Creating needs c; changing what is stored needs u, however it is sent.
    let obs = observation("o1", "p1", "29463-7", "2026-02-01T10:00:00Z");
    let (status, body) = post(obs.clone()).await;
    assert_eq!(status, 201, "{body}");
    let mut changed = obs.clone();
    changed["valueQuantity"]["value"] = json!(666);
    let (status, body) = send(
        reqwest::Method::PUT,
        "/ingest/ons/Observation/o1",
        Some(changed.clone()),
    )
    .await;
    assert_eq!(status, 403, "PUT over a stored one: {body}");
    assert!(body.to_string().contains("system/Observation.u"), "{body}");
    let (status, body) = post(changed.clone()).await;
    assert_eq!(status, 403, "POST with a stored id: {body}");
    let as_post = |resource: Value, full_url: Option<&str>| {
        let mut entry =
            json!({"resource": resource, "request": {"method": "POST", "url": "Observation"}});
        if let Some(u) = full_url {
            entry["fullUrl"] = json!(u);
        }
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [entry]})
    };
    let (status, body) = post(as_post(changed.clone(), None)).await;
    assert_eq!(status, 403, "a transaction's POST with a stored id: {body}");
    let mut no_id = changed.clone();
    no_id.as_object_mut().unwrap().remove("id");
    let (status, body) = post(as_post(no_id, Some("urn:uuid:o1"))).await;
    assert_ne!(
        status, 200,
        "a POST that lands on o1 by its fullUrl: {body}"
    );
    // Withdrawing needs d: a delete, or a version entered-in-error (new or stored).
    let (status, body) = send(reqwest::Method::DELETE, "/ingest/ons/Observation/o1", None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("system/Observation.d"), "{body}");
    let mut withdrawn = changed.clone();
    withdrawn["status"] = json!("entered-in-error");
    let (status, body) = post(withdrawn).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("system/Observation.d"), "{body}");
    // A new resource is created, whatever its status says: c, not d.
    let mut born_withdrawn = observation("o2", "p1", "29463-7", "2026-02-01T10:00:00Z");
    born_withdrawn["status"] = json!("entered-in-error");
    let (status, body) = post(born_withdrawn).await;
    assert_eq!(status, 201, "{body}");
    let d_only = app
        .restart_with(
            &clients(CONFIG_SCOPE, "system/Observation.d"),
            "2026-03-02T09:00:00Z",
        )
        .await;
    let d_token = token_for(&d_only, NARROW_PUSH, None).await;
    let mut new_one = observation("o3", "p1", "29463-7", "2026-02-01T10:00:00Z");
    new_one["status"] = json!("entered-in-error");
    let r = d_only
        .http
        .put(d_only.url("/ingest/ons/Observation/o3"))
        .bearer_auth(&d_token)
        .json(&new_one)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "d alone creates nothing");
    // Within the scope: changing the stored Patient (u), and o1 is as it was.
    let mut p1 = patient("p1");
    p1["gender"] = json!("male");
    let (status, body) = send(reqwest::Method::PUT, "/ingest/ons/Patient/p1", Some(p1)).await;
    assert_eq!(status, 200, "{body}");
    let unchanged = sluis::store::resources::current(
        &mut app.state.db.begin().await.unwrap(),
        &[("Observation".to_string(), "o1".to_string())],
        sluis::store::Pairs::Kept,
    )
    .await
    .unwrap();
    assert_eq!(unchanged.values().next().map(|h| h.last_version), Some(1));
});

// Acceptance 2 of issue 22 in one place: each kind of token stays on its own side.
on_both!(tokens_stay_on_their_own_side, |b| async move {
    let app = TestApp::spawn(b).await;
    let source = app.token(SOURCE).await;
    let portal = app.token(PORTAL).await;
    let r = app
        .http
        .get(app.url("/fhir/Patient/p1"))
        .bearer_auth(&source)
        .header("x-portal-user", "u1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a source token reads no /fhir");
    let r = app
        .http
        .put(app.url("/ingest/ons/Patient/p1"))
        .bearer_auth(&portal)
        .json(&patient("p1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a portal token cannot ingest");
    let r = app
        .http
        .put(app.url("/ingest/other/Patient/p1"))
        .bearer_auth(&source)
        .json(&patient("p1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a source cannot push to another source");
    let r = app
        .http
        .get(app.url("/admin/sources"))
        .bearer_auth(&portal)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a portal token is no admin token");
});
