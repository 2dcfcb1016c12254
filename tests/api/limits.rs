//! Request limits (R16, issue 22) on `/auth/token`, `/admin`, `/ingest` and `/fhir`, and the
//! admin side: its own listener, named credentials, no placeholder secrets.

use crate::helpers::*;
use crate::on_both;
use serde_json::{Value, json};

/// A request's status, `Retry-After` and reason.
async fn answer(r: reqwest::RequestBuilder) -> (u16, Option<u64>, String) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, retry, reason(&body).to_string())
}

fn assert_limited((status, retry, reason): (u16, Option<u64>, String), what: &str) {
    assert_eq!(status, 429, "{what}");
    assert!(
        retry.is_some_and(|s| s >= 1),
        "{what}: Retry-After {retry:?}"
    );
    assert_eq!(reason, "rate-limited", "{what}");
}

/// `POST /auth/token` of `client` with HTTP Basic.
fn token_request(app: &TestApp, (id, secret): (&str, &str)) -> reqwest::RequestBuilder {
    app.http
        .post(app.url("/auth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
}

const LOW: &str = "[limits]\nclient_requests_per_minute = 5\ntoken_requests_per_minute = 3\n\
                   admin_requests_per_minute = 4\nfailed_auth_per_minute = 3\n";

on_both!(
    each_limited_route_answers_429_with_retry_after,
    |b| async move {
        let app = TestApp::spawn_with(b, LOW).await;
        let token_request = |client| token_request(&app, client);
        // /auth/token, per client: three tokens a minute.
        let portal = app.token(PORTAL).await;
        let source = app.token(SOURCE).await;
        for _ in 0..2 {
            assert_eq!(answer(token_request(PORTAL)).await.0, 200);
        }
        assert_limited(answer(token_request(PORTAL)).await, "a fourth token");
        // /fhir, per client (all its users together): five requests a minute.
        let read = |user: &str| {
            app.http
                .get(app.url("/fhir/Patient/p1"))
                .bearer_auth(&portal)
                .header("x-portal-user", user)
        };
        for i in 0..5 {
            let (status, _, _) = answer(read(&format!("u{i}"))).await;
            assert_ne!(status, 429, "request {i}");
        }
        assert_limited(
            answer(read("u-new")).await,
            "/fhir beyond the client's limit",
        );
        // /ingest, per client.
        let push = || {
            app.http
                .put(app.url("/ingest/ons/Patient/p1"))
                .bearer_auth(&source)
                .json(&patient("p1"))
        };
        for i in 0..5 {
            let (status, _, _) = answer(push()).await;
            assert!(status == 200 || status == 201, "push {i}: {status}");
        }
        assert_limited(answer(push()).await, "/ingest beyond the client's limit");
        // /admin, per credential.
        let admin = |token: &str| app.http.get(app.url("/admin/sources")).bearer_auth(token);
        for _ in 0..4 {
            assert_eq!(answer(admin(ADMIN)).await.0, 200);
        }
        assert_limited(
            answer(admin(ADMIN)).await,
            "/admin beyond the credential's limit",
        );
    }
);

on_both!(
    failed_authentication_is_limited_per_client_and_address,
    |b| async move {
        let app = TestApp::spawn_with(b, LOW).await;
        let token_request = |client| token_request(&app, client);
        // Wrong secrets for one client: three 401s, then 429, even for the right secret.
        for _ in 0..3 {
            assert_eq!(
                answer(token_request((SOURCE.0, "wrong-secret-guess")))
                    .await
                    .0,
                401
            );
        }
        assert_limited(
            answer(token_request((SOURCE.0, "wrong-secret-guess"))).await,
            "a fourth wrong secret",
        );
        assert_limited(
            answer(token_request(SOURCE)).await,
            "the right secret meanwhile",
        );
        // Another client from the same address is not held up.
        assert_eq!(answer(token_request(PORTAL)).await.0, 200);
        // A wrong client assertion counts for the client it names.
        let forged = "eyJhbGciOiJSUzM4NCJ9.eyJpc3MiOiJ2ZW5kb3IifQ.c2lnbmF0dXJl";
        let assertion = || {
            app.http.post(app.url("/auth/token")).form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", forged),
            ])
        };
        for _ in 0..3 {
            assert_eq!(answer(assertion()).await.0, 401);
        }
        assert_limited(answer(assertion()).await, "a fourth forged assertion");
        // Wrong admin tokens.
        let admin = |token: &str| app.http.get(app.url("/admin/sources")).bearer_auth(token);
        for _ in 0..3 {
            assert_eq!(answer(admin("not-the-admin-token")).await.0, 401);
        }
        assert_limited(
            answer(admin("not-the-admin-token")).await,
            "a fourth wrong admin token",
        );
        assert_limited(
            answer(admin(ADMIN)).await,
            "the right admin token meanwhile",
        );
        // Bearer tokens that are not ours, at /fhir and /ingest alike.
        let fhir = |token: &str| {
            app.http
                .get(app.url("/fhir/Patient/p1"))
                .bearer_auth(token)
                .header("x-portal-user", "u1")
        };
        for _ in 0..2 {
            assert_eq!(answer(fhir("forged.token.here")).await.0, 401);
        }
        let ingest = app
            .http
            .put(app.url("/ingest/ons/Patient/p1"))
            .bearer_auth("forged.token.here")
            .json(&patient("p1"));
        assert_eq!(answer(ingest).await.0, 401);
        assert_limited(
            answer(fhir("forged.token.here")).await,
            "a fourth forged bearer token",
        );
    }
);

// An expired token of ours is no guess: portals meet them in the normal run of things, and
// they do not count as failed authentication.
on_both!(expired_tokens_do_not_count_as_failures, |b| async move {
    let app = TestApp::spawn_with(b, "[limits]\nfailed_auth_per_minute = 2\n").await;
    let token = app.token(PORTAL).await;
    app.set_clock("2026-03-02T10:00:00Z").await;
    for i in 0..5 {
        let (status, _, _) = answer(
            app.http
                .get(app.url("/fhir/Patient/p1"))
                .bearer_auth(&token)
                .header("x-portal-user", "u1"),
        )
        .await;
        assert_eq!(status, 401, "expired token, request {i}");
    }
});

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

on_both!(admin_is_served_only_on_its_own_listener, |b| async move {
    let port = free_port();
    let app = TestApp::spawn_with(
        b,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npublic_base_url = \"http://sluis.test\"\nadmin_listen = \"127.0.0.1:{port}\"\n"
        ),
    )
    .await;
    let get = |base: String| {
        let http = app.http.clone();
        async move {
            http.get(format!("{base}/admin/sources"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        get(app.base.clone()).await,
        404,
        "not on the public listener"
    );
    assert_eq!(get(format!("http://127.0.0.1:{port}")).await, 200);
    // And the public routes are not on the admin listener.
    let r = app
        .http
        .get(format!("http://127.0.0.1:{port}/fhir/metadata"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
});

#[test]
fn admin_listens_on_loopback_unless_told_otherwise() {
    use sluis::config::{AdminListen, Config};
    let load = |server: &str| {
        Config::from_toml(
            &format!("[server]\n{server}\n[admin]\ntoken = \"{ADMIN}\"\n"),
            "test.toml",
            std::iter::empty(),
        )
    };
    let config = load("").unwrap();
    assert_eq!(
        config.server.admin_listen,
        AdminListen::Separate("127.0.0.1:8081".parse().unwrap())
    );
    assert_eq!(
        load("admin_listen = \"public\"")
            .unwrap()
            .server
            .admin_listen,
        AdminListen::Public
    );
    for bad in [
        "admin_listen = \"everywhere\"",
        "listen = \"127.0.0.1:9000\"\nadmin_listen = \"127.0.0.1:9000\"",
        "trusted_proxies = [\"proxy.local\"]",
    ] {
        let problems = load(bad).unwrap_err().0;
        assert!(
            problems[0].key.starts_with("server."),
            "{bad}: {problems:?}"
        );
    }
}

on_both!(
    named_admin_credentials_are_named_in_the_audit,
    |b| async move {
        const JANSEN: &str = "jansen-admin-token-1";
        let app = TestApp::spawn_with(
            b,
            &format!(
                "[[admin.credentials]]\nname = \"m.jansen\"\ntoken = \"{JANSEN}\"\n\
             [[admin.credentials]]\nname = \"koppeling-ons\"\ntoken = \"koppeling-admin-token\"\n"
            ),
        )
        .await;
        app.push_ok(&transaction(&[patient("p1")])).await;
        let r = app
            .http
            .post(app.url("/admin/patients/p1/block"))
            .bearer_auth(JANSEN)
            .json(&json!({"reason": "op verzoek"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // The legacy admin.token still works, as the credential `admin`.
        let r = app
            .http
            .get(app.url("/admin/audit?client=admin:m.jansen"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let text = body.to_string();
        assert!(text.contains("/admin/patients/{id}/block"), "{text}");
        assert!(
            !text.contains("/admin/audit"),
            "only m.jansen's records: {text}"
        );
        let r = app
            .http
            .get(app.url("/admin/audit?client=admin:admin"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        assert!(body.to_string().contains("/admin/audit"), "{body}");
    }
);

#[test]
fn placeholder_short_and_shared_secrets_are_refused() {
    use sluis::config::Config;
    let load = |admin: &str, client_secret: &str| {
        Config::from_toml(
            &format!(
                "{admin}\n[[sources]]\nid = \"ons\"\n[[clients]]\nid = \"c\"\nkind = \"source\"\nauth = \"client_secret\"\nsecret = \"{client_secret}\"\nsource = \"ons\"\n"
            ),
            "test.toml",
            std::iter::empty(),
        )
    };
    let good = "a-client-secret-of-its-own";
    assert!(load("[admin]\ntoken = \"an-admin-token-of-its-own\"", good).is_ok());
    for (admin, secret, key) in [
        ("[admin]\ntoken = \"change-me-now\"", good, "admin.token"),
        (
            "[admin]\ntoken = \"CHANGE_ME_PLEASE_NOW\"",
            good,
            "admin.token",
        ),
        ("[admin]\ntoken = \"short-token\"", good, "admin.token"),
        (
            "[admin]\ntoken = \"aaaaaaaaaaaaaaaaaaaa\"",
            good,
            "admin.token",
        ),
        (
            "[admin]\ntoken = \"your-token-goes-here\"",
            good,
            "admin.token",
        ),
        ("", good, "admin.token"),
        (
            "[admin]\ntoken = \"an-admin-token-of-its-own\"",
            "change-me-too",
            "clients[0].secret",
        ),
        (
            "[admin]\ntoken = \"an-admin-token-of-its-own\"",
            "12345678",
            "clients[0].secret",
        ),
        (
            "[admin]\ntoken = \"an-admin-token-of-its-own\"",
            "passwordpassword",
            "clients[0].secret",
        ),
        (
            "[admin]\ntoken = \"an-admin-token-of-its-own\"",
            "abababababababab",
            "clients[0].secret",
        ),
        (
            "[admin]\ntoken = \"an-admin-token-of-its-own\"",
            "1234567890123456",
            "clients[0].secret",
        ),
        (
            "[admin]\ntoken = \"an-admin-token-of-its-own\"",
            "abcdefghabcdefgh",
            "clients[0].secret",
        ),
        (
            "[admin]\ntoken = \"an-admin-token-of-its-own\"",
            "abcdefghijklmnop",
            "clients[0].secret",
        ),
        (
            "[admin]\ntoken = \"an-admin-token-of-its-own\"",
            "Welkom01Welkom01",
            "clients[0].secret",
        ),
        (
            "[admin]\ntoken = \"an-admin-token-of-its-own\"",
            "Zomer2024Zomer2024",
            "clients[0].secret",
        ),
        (
            "[admin]\ntoken = \"an-admin-token-of-its-own\"",
            "P@ssw0rd!2024abc",
            "clients[0].secret",
        ),
        (
            "[admin]\ntoken = \"an-admin-token-of-its-own\"",
            "azertyuiopqsdfgh",
            "clients[0].secret",
        ),
        (
            "[admin]\ntoken = \"an-admin-token-of-its-own\"",
            "an-admin-token-of-its-own",
            "clients[0].secret",
        ),
        (
            "[admin]\ntoken = \"an-admin-token-of-its-own\"\n[[admin.credentials]]\nname = \"x\"\ntoken = \"an-admin-token-of-its-own\"",
            good,
            "admin.credentials[0].token",
        ),
        (
            "[admin]\ntoken = \"an-admin-token-of-its-own\"\n[[admin.credentials]]\nname = \"no spaces\"\ntoken = \"another-admin-token-1\"",
            good,
            "admin.credentials[0].name",
        ),
    ] {
        let problems = load(admin, secret).unwrap_err().0;
        assert!(
            problems.iter().any(|p| p.key == key),
            "{admin} / {secret}: {problems:?}"
        );
    }
}

// Behind a trusted reverse proxy, the caller is the address it appends to X-Forwarded-For;
// from anyone else the header is not believed.
on_both!(
    failures_count_per_forwarded_address_only_from_a_trusted_proxy,
    |b| async move {
        let wrong = |app: &TestApp, from: &str| {
            app.http
                .get(app.url("/admin/sources"))
                .bearer_auth("not-the-admin-token")
                .header("x-forwarded-for", from)
        };
        let proxied = TestApp::spawn_with(
        b.clone(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npublic_base_url = \"http://sluis.test\"\ntrusted_proxies = [\"127.0.0.1\"]\n{LOW}"
        ),
    )
    .await;
        for _ in 0..3 {
            assert_eq!(answer(wrong(&proxied, "198.51.100.1")).await.0, 401);
        }
        assert_limited(
            answer(wrong(&proxied, "198.51.100.1")).await,
            "the same caller",
        );
        assert_eq!(
            answer(wrong(&proxied, "6.6.6.6, 198.51.100.2")).await.0,
            401
        );
        // The audit names the caller, not the proxy.
        let r = proxied
            .http
            .get(proxied.url("/admin/audit?outcome=failure"))
            .bearer_auth(ADMIN)
            .header("x-forwarded-for", "198.51.100.3")
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        assert!(body.to_string().contains("198.51.100.2"), "{body}");
        // Not trusted: the header changes nothing.
        let direct = TestApp::spawn_with(b, LOW).await;
        for i in 0..3 {
            assert_eq!(
                answer(wrong(&direct, &format!("198.51.100.{i}"))).await.0,
                401
            );
        }
        assert_limited(
            answer(wrong(&direct, "198.51.100.9")).await,
            "a forged header",
        );
    }
);

#[test]
fn client_ids_are_plain_and_secrets_are_not_shared() {
    use sluis::config::Config;
    let load = |clients: &str| {
        Config::from_toml(
            &format!("[admin]\ntoken = \"an-admin-token-of-its-own\"\n{clients}"),
            "test.toml",
            std::iter::empty(),
        )
    };
    let client = |id: &str, secret: &str| {
        format!(
            "[[clients]]\nid = \"{id}\"\nkind = \"portal\"\nauth = \"client_secret\"\nsecret = \"{secret}\"\n"
        )
    };
    assert!(load(&client("caren.nl", "a-client-secret-of-its-own")).is_ok());
    for (clients, key) in [
        (
            client("admin", "a-client-secret-of-its-own"),
            "clients[0].id",
        ),
        (
            client("admin:m.jansen", "a-client-secret-of-its-own"),
            "clients[0].id",
        ),
        (
            client(" x y ", "a-client-secret-of-its-own"),
            "clients[0].id",
        ),
        (client("..", "a-client-secret-of-its-own"), "clients[0].id"),
        (
            client("a", "a-client-secret-of-its-own") + &client("b", "a-client-secret-of-its-own"),
            "clients[1].secret",
        ),
    ] {
        let problems = load(&clients).unwrap_err().0;
        assert!(
            problems.iter().any(|p| p.key == key),
            "{clients}: {problems:?}"
        );
    }
}

// Found by attacking: each kind of failure counts in its own bucket, and one person held back
// takes nothing of the rest of the vendor's budget.
on_both!(limits_do_not_spill_over, |b| async move {
    let app = TestApp::spawn_with(
        b,
        "[limits]\nfailed_auth_per_minute = 3\nuser_requests_per_minute = 2\nclient_requests_per_minute = 7\n",
    )
    .await;
    // Failed token requests claiming `admin`, or claiming nothing, lock neither /admin nor
    // bearer tokens.
    for _ in 0..5 {
        let r = app
            .http
            .post(app.url("/auth/token"))
            .basic_auth("admin", Some("guess-guess-guess"))
            .form(&[("grant_type", "client_credentials")]);
        let _ = answer(r).await;
        let r = app
            .http
            .post(app.url("/auth/token"))
            .form(&[("grant_type", "client_credentials")]);
        let _ = answer(r).await;
    }
    let admin = app.http.get(app.url("/admin/sources")).bearer_auth(ADMIN);
    assert_eq!(answer(admin).await.0, 200);
    let token = app.token(PORTAL).await;
    let read = |user: &str| {
        app.http
            .get(app.url("/portal/me"))
            .bearer_auth(&token)
            .header("x-portal-user", user)
    };
    assert_eq!(answer(read("u-other")).await.0, 200);
    // One user's flood: refused by the user's limit, it leaves the client's budget alone.
    for _ in 0..20 {
        let _ = answer(read("u-flood")).await;
    }
    for i in 0..4 {
        let (status, _, _) = answer(read(&format!("u-{i}"))).await;
        assert_eq!(status, 200, "another user, request {i}");
    }
});

// Found by attacking: an assertion refused for the client's token limit is not spent; it
// works once the limit lets it.
on_both!(
    a_token_request_over_the_limit_keeps_its_assertion,
    |b| async move {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
        let app = TestApp::spawn_with(
        b,
        &format!(
            "[limits]\ntoken_requests_per_minute = 20\n[[clients]]\nid = \"vendor\"\nkind = \"portal\"\nauth = \"private_key_jwt\"\njwks_path = \"{keys}/portal.jwks.json\"\n"
        ),
    )
    .await;
        let t0 = chrono::DateTime::parse_from_rfc3339(T0)
            .unwrap()
            .timestamp();
        let pem = std::fs::read(format!("{keys}/portal-rs384.pem")).unwrap();
        let sign = |jti: &str| {
            let mut header = Header::new(Algorithm::RS384);
            header.kid = Some("portal-rs384".into());
            jsonwebtoken::encode(
                &header,
                &json!({"iss": "vendor", "sub": "vendor", "aud": "http://sluis.test/auth/token",
                    "exp": t0 + 240, "jti": jti}),
                &EncodingKey::from_rsa_pem(&pem).unwrap(),
            )
            .unwrap()
        };
        let request = |assertion: String| {
            app.http.post(app.url("/auth/token")).form(&[
                ("grant_type", "client_credentials".to_string()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ),
                ("client_assertion", assertion),
            ])
        };
        for i in 0..20 {
            assert_eq!(answer(request(sign(&format!("first-{i}")))).await.0, 200);
        }
        let (status, retry, _) = answer(request(sign("second"))).await;
        assert_eq!(status, 429);
        tokio::time::sleep(std::time::Duration::from_secs(retry.unwrap())).await;
        assert_eq!(
            answer(request(sign("second"))).await.0,
            200,
            "not spent by the 429"
        );
    }
);
