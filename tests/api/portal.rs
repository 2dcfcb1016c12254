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
    assert_eq!(post(Some(("nobody", "caren-secret-1")), grant).await.0, 401);
    assert_eq!(post(None, grant).await.0, 401);
    assert_eq!(
        post(Some(PORTAL), &[("grant_type", "password")]).await.0,
        401
    );
    let (status, body) = post(Some(PORTAL), grant).await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 900);
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
