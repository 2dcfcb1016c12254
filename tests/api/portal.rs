//! Portal accounts through the real contract: activation codes, linking, terms, and the order
//! in which a request is refused (contract §5).

use crate::helpers::*;
use crate::on_both;
use serde_json::json;

async fn activation(app: &TestApp, patient: &str) -> String {
    let (status, body) = app
        .admin_post(
            "/admin/activation-codes",
            &json!({"patient": patient, "relationship": "self"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["code"].as_str().unwrap().to_string()
}

on_both!(an_activation_code_links_once_and_expires, |b| async move {
    let app = TestApp::spawn(b).await;
    app.push_ok(&transaction(&[patient("p1")])).await;
    let code = activation(&app, "Patient/p1").await;
    let u = app.user("u1").await;
    let (status, linked) = u
        .post(
            "/portal/link",
            &json!({"code": code.to_lowercase(), "birth_date": "1950-01-01"}),
        )
        .await;
    assert_eq!(status, 201, "{linked}");
    assert_eq!(linked["patient"], "Patient/p1");
    assert_eq!(linked["role"], "holder");
    let other = app.user("u2").await;
    let (status, outcome) = other
        .post(
            "/portal/link",
            &json!({"code": code, "birth_date": "1950-01-01"}),
        )
        .await;
    assert_eq!((status, reason(&outcome)), (409, "code-used"));
    let (status, outcome) = other
        .post(
            "/portal/link",
            &json!({"code": "AAAA-BBBB-CCCC-DDDD", "birth_date": "1950-01-01"}),
        )
        .await;
    assert_eq!((status, reason(&outcome)), (400, "code-invalid"));
    let late = activation(&app, "p1").await;
    app.set_clock("2026-04-14T09:00:00Z").await; // six weeks and a day later
    let other = app.user("u2").await;
    let (status, outcome) = other
        .post(
            "/portal/link",
            &json!({"code": late, "birth_date": "1950-01-01"}),
        )
        .await;
    assert_eq!((status, reason(&outcome)), (410, "code-expired"));
});

on_both!(bad_portal_input_is_refused_clearly, |b| async move {
    let app = TestApp::spawn(b).await;
    app.push_ok(&transaction(&[patient("p1")])).await;
    let u = app.user("u1").await;
    let code = activation(&app, "p1").await;
    for body in [
        json!({"code": code}),
        json!({"code": code, "birth_date": "01-01-1950"}),
        json!({"code": code, "birth_date": "2099-01-01"}),
        json!({"code": code, "birth_date": "1950-01-01", "extra": true}),
        json!("just a string"),
    ] {
        let (status, outcome) = u.post("/portal/link", &body).await;
        assert_eq!(status, 400, "{body}: {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
    }
    let (status, outcome) = u
        .post(
            "/portal/link",
            &json!({"code": code, "birth_date": "2015-01-01"}),
        )
        .await;
    assert_eq!((status, reason(&outcome)), (403, "under-age"));
    let (status, outcome) = u
        .post("/portal/terms", &json!({"version": "2025-01"}))
        .await;
    assert_eq!((status, reason(&outcome)), (409, "conflict"));
    let (status, _) = app
        .admin_post(
            "/admin/activation-codes",
            &json!({"patient": "p1", "relationship": "neighbour"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = app
        .admin_post(
            "/admin/activation-codes",
            &json!({"patient": "nobody", "relationship": "self"}),
        )
        .await;
    assert_eq!(status, 404);
    let r = app
        .http
        .post(app.url("/admin/activation-codes"))
        .bearer_auth("wrong")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
});

on_both!(
    requests_are_refused_in_the_contracts_order,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.push_ok(&transaction(&[patient("p1")])).await;
        // 1. No or a wrong token.
        let r = app
            .http
            .get(app.url("/fhir/Patient/p1"))
            .header("x-portal-user", "u1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = app
            .http
            .get(app.url("/fhir/Patient/p1"))
            .bearer_auth("not-a-token")
            .header("x-portal-user", "u1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let source = app.token(SOURCE).await;
        let r = app
            .http
            .get(app.url("/fhir/Patient/p1"))
            .bearer_auth(source)
            .header("x-portal-user", "u1")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            401,
            "a source token does not read the portal API"
        );
        // 2. Not linked.
        let u = app.user("u1").await;
        let (status, outcome) = u.get("/fhir/Patient/p1").await;
        assert_eq!((status, reason(&outcome)), (403, "not-linked"));
        // 5. Terms not accepted.
        let code = activation(&app, "p1").await;
        u.post(
            "/portal/link",
            &json!({"code": code, "birth_date": "1950-01-01"}),
        )
        .await;
        let (status, outcome) = u.get("/fhir/Patient/p1").await;
        assert_eq!((status, reason(&outcome)), (403, "terms-not-accepted"));
        let (status, me) = u.get("/portal/me").await;
        assert_eq!(status, 200);
        assert_eq!(me["terms"]["accepted"], false);
        assert_eq!(me["clients"][0]["access"], "terms-not-accepted");
        u.post("/portal/terms", &json!({"version": "2026-01"}))
            .await;
        let (status, p) = u.get("/fhir/Patient/p1").await;
        assert_eq!(status, 200, "{p}");
        assert_eq!(p["meta"]["versionId"], "1");
        // Expired tokens are refused by the adapter's own clock.
        app.set_clock("2026-03-02T10:00:00Z").await;
        let (status, outcome) = u.get("/fhir/Patient/p1").await;
        assert_eq!((status, reason(&outcome)), (401, "invalid-token"));
    }
);

on_both!(token_endpoint_refuses_bad_clients, |b| async move {
    let app = TestApp::spawn(b).await;
    let post = |auth: Option<(&'static str, &'static str)>,
                form: &'static [(&'static str, &'static str)]| {
        let app = &app;
        async move {
            let mut r = app.http.post(app.url("/auth/token")).form(form);
            if let Some((id, secret)) = auth {
                r = r.basic_auth(id, Some(secret));
            }
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let grant = &[("grant_type", "client_credentials")];
    assert_eq!(post(Some(("caren", "wrong-secret")), grant).await.0, 401);
    assert_eq!(
        post(Some(("nobody", "caren-secret-0001")), grant).await.0,
        401
    );
    assert_eq!(post(None, grant).await.0, 401);
    assert_eq!(
        post(Some(PORTAL), &[("grant_type", "password")]).await.0,
        401
    );
    let (status, body) = post(Some(PORTAL), grant).await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 300);
    let r = app
        .http
        .get(app.url("/no/such/endpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .http
        .delete(app.url("/fhir/metadata"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
});

// R16 (contract: `limits.user_requests_per_minute`): beyond the limit a user gets 429
// `rate-limited` with Retry-After, counted in real time whatever the adapter's clock shows;
// other users are not held up.
on_both!(
    a_user_beyond_the_request_limit_waits_and_no_one_else_does,
    |b| async move {
        let app = TestApp::spawn_with(b, "[limits]\nuser_requests_per_minute = 60\n").await;
        app.push_ok(&transaction(&[patient("p1"), patient("p2")]))
            .await;
        let busy = app.holder("busy", "p1").await;
        let calm = app.holder("calm", "p2").await;
        let get = |u: &User, path: &str| {
            u.http
                .get(format!("{}{path}", u.base))
                .bearer_auth(&u.token)
                .header("x-portal-user", &u.id)
                .send()
        };
        let mut refused = None;
        for i in 0..80 {
            let r = get(&busy, "/fhir/Patient/p1").await.unwrap();
            if r.status() == 429 {
                refused = Some((i, r));
                break;
            }
            assert_eq!(r.status(), 200);
        }
        let (i, r) = refused.expect("no 429 within 80 requests at 60 a minute");
        assert!(
            i >= 50,
            "refused after {i} requests, before the minute's worth"
        );
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
        let outcome: serde_json::Value = r.json().await.unwrap();
        assert_eq!(outcome["issue"][0]["code"], "throttled", "{outcome}");
        assert_eq!(
            outcome["issue"][0]["details"]["coding"][0]["code"], "rate-limited",
            "{outcome}"
        );
        // Someone else is served at once; the same person is again after Retry-After.
        assert_eq!(get(&calm, "/fhir/Patient/p2").await.unwrap().status(), 200);
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
        assert_eq!(get(&busy, "/fhir/Patient/p1").await.unwrap().status(), 200);
        // A request without a valid token counts for no one.
        let stranger = app
            .http
            .get(app.url("/fhir/Patient/p1"))
            .bearer_auth("nonsense")
            .header("x-portal-user", &busy.id)
            .send()
            .await
            .unwrap();
        assert_eq!(stranger.status(), 401);
    }
);

// Found by attacking: a path the framework refuses (not UTF-8) is answered with an
// OperationOutcome like every other refusal, on every router.
on_both!(
    a_path_that_is_not_utf8_gets_an_operation_outcome,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let portal = app.token(PORTAL).await;
        for (path, token) in [
            ("/fhir/Observation/%ff", portal.as_str()),
            ("/fhir/%ff", portal.as_str()),
            ("/ingest/ons/Observation/%ff", "x"),
            ("/admin/patients/%ff/block", ADMIN),
            ("/portal/grants/%ff", portal.as_str()),
        ] {
            let r = app
                .http
                .get(app.url(path))
                .bearer_auth(token)
                .header("x-portal-user", "u1")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            assert!((400..500).contains(&status), "{path}: {status}");
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            assert_eq!(body["resourceType"], "OperationOutcome", "{path}: {status}");
        }
    }
);
