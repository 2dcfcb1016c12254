//! Clients as config says they are (issue 22, in part): a client disabled, removed or changed
//! in kind is refused with the tokens it already has, from the first request after a restart.

use crate::helpers::*;
use crate::on_both;

const OTHER: (&str, &str) = ("other-portal", "other-portal-secret");

/// The status of a portal read with `token` (past the token, a stranger's Patient is 403 or
/// 404; a refused token 401).
async fn read_with(app: &TestApp, token: &str) -> u16 {
    app.http
        .get(app.url("/fhir/Patient/p1"))
        .bearer_auth(token)
        .header("x-portal-user", "u1")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn other(extra: &str) -> String {
    format!(
        "[[clients]]\nid = \"{}\"\nkind = \"portal\"\nauth = \"client_secret\"\nsecret = \"{}\"\n{extra}",
        OTHER.0, OTHER.1
    )
}

on_both!(
    a_client_disabled_or_removed_in_config_is_refused_with_its_old_token,
    |b| async move {
        let app = TestApp::spawn_with(b, &other("")).await;
        let token = app.token(OTHER).await;
        // Known, so past the token (a stranger's Patient is 403 or 404, not 401).
        assert_ne!(read_with(&app, &token).await, 401);
        let token_request = async |app: &TestApp| {
            app.http
                .post(app.url("/auth/token"))
                .basic_auth(OTHER.0, Some(OTHER.1))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        };
        let disabled = app.restart_with(&other("enabled = false\n"), T0).await;
        assert_eq!(read_with(&disabled, &token).await, 401);
        assert_eq!(token_request(&disabled).await, 401);
        let removed = app.restart_with("", T0).await;
        assert_eq!(read_with(&removed, &token).await, 401);
        // Its kind changed to source: a portal token no longer reads /fhir.
        let source = app
            .restart_with(
                &format!(
                    "[[clients]]\nid = \"{}\"\nkind = \"source\"\nauth = \"client_secret\"\nsecret = \"{}\"\nsource = \"ons\"\n",
                    OTHER.0, OTHER.1
                ),
                T0,
            )
            .await;
        assert_eq!(read_with(&source, &token).await, 401);
        // Nor does it push as the source its client now is: it was issued to a portal.
        let r = source
            .http
            .post(source.url("/ingest/ons"))
            .bearer_auth(&token)
            .header("content-type", "application/fhir+json")
            .body(r#"{"resourceType": "Patient", "id": "p-kind"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        // Enabled again, the same token works.
        let again = app.restart_with(&other("enabled = true\n"), T0).await;
        assert_ne!(read_with(&again, &token).await, 401);
    }
);

/// SMART Backend Services: a vendor proves itself with a JWT signed by a key of its JWKS.
pub mod private_key_jwt {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};

    const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
    const AUD: &str = "http://sluis.test/auth/token";
    const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

    pub fn vendor() -> String {
        format!(
            "[[clients]]\nid = \"vendor\"\nkind = \"portal\"\nauth = \"private_key_jwt\"\njwks_path = \"{KEYS}/portal.jwks.json\"\n"
        )
    }

    /// The adapter's clock in these tests, in seconds.
    fn t0() -> i64 {
        chrono::DateTime::parse_from_rfc3339(T0)
            .unwrap()
            .timestamp()
    }

    /// An assertion signed with `key` (a file in tests/keys) under `kid`, with `claims` over
    /// the good ones.
    pub fn assertion(alg: Algorithm, key: &str, kid: &str, claims: Value) -> String {
        let mut body = json!({
            "iss": "vendor",
            "sub": "vendor",
            "aud": AUD,
            "exp": t0() + 240,
            "iat": t0(),
            "jti": format!("jti-{}", uuid::Uuid::new_v4()),
        });
        for (k, v) in claims.as_object().unwrap() {
            body[k] = v.clone();
        }
        let pem = std::fs::read(format!("{KEYS}/{key}.pem")).unwrap();
        let key = match alg {
            Algorithm::RS384 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, &body, &key).unwrap()
    }

    /// `POST /auth/token` with a client assertion: status and body.
    pub async fn request(app: &TestApp, assertion: &str) -> (u16, Value) {
        let r = app
            .http
            .post(app.url("/auth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", assertion),
                ("scope", "system/*.rs"),
            ])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    fn refused(what: &str, (status, body): (u16, Value)) {
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["resourceType"], "OperationOutcome", "{what}: {body}");
    }

    on_both!(
        a_good_assertion_gets_a_token_and_every_bad_one_401,
        |b| async move {
            let app = TestApp::spawn_with(b, &vendor()).await;
            for (alg, key) in [
                (Algorithm::RS384, "portal-rs384"),
                (Algorithm::ES384, "portal-es384"),
            ] {
                let good = assertion(alg, key, key, json!({}));
                let (status, body) = request(&app, &good).await;
                assert_eq!(status, 200, "{key}: {body}");
                let token = body["access_token"].as_str().unwrap();
                assert_ne!(
                    read_with(&app, token).await,
                    401,
                    "{key}: the token reads /fhir"
                );
                // The same assertion again: a replay.
                refused("replayed", request(&app, &good).await);
            }
            let rs =
                |claims: Value| assertion(Algorithm::RS384, "portal-rs384", "portal-rs384", claims);
            refused(
                "expired",
                request(&app, &rs(json!({"exp": t0() - 120}))).await,
            );
            refused(
                "far future",
                request(&app, &rs(json!({"exp": t0() + 3600}))).await,
            );
            refused(
                "wrong aud",
                request(&app, &rs(json!({"aud": "https://elsewhere/token"}))).await,
            );
            refused(
                "sub not iss",
                request(&app, &rs(json!({"sub": "someone"}))).await,
            );
            refused("no jti", request(&app, &rs(json!({"jti": ""}))).await);
            refused(
                "unknown client",
                request(&app, &rs(json!({"iss": "nobody", "sub": "nobody"}))).await,
            );
            refused(
                "a client_secret client",
                request(&app, &rs(json!({"iss": PORTAL.0, "sub": PORTAL.0}))).await,
            );
            // A key the vendor never registered, under its kid and under another.
            refused(
                "foreign key",
                request(
                    &app,
                    &assertion(Algorithm::RS384, "foreign-rs384", "portal-rs384", json!({})),
                )
                .await,
            );
            refused(
                "unknown kid",
                request(
                    &app,
                    &assertion(
                        Algorithm::ES384,
                        "foreign-es384",
                        "foreign-es384",
                        json!({}),
                    ),
                )
                .await,
            );
            // alg none, and HS256 keyed with what an attacker can read (the public key).
            let claims = json!({"iss": "vendor", "sub": "vendor", "aud": AUD, "exp": t0() + 240, "jti": "none-1"});
            let b64 = |v: &Value| {
                use base64::Engine as _;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
            };
            let none = format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": "portal-rs384"})),
                b64(&claims)
            );
            refused("alg none", request(&app, &none).await);
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("portal-rs384".into());
            let jwks = std::fs::read(format!("{KEYS}/portal.jwks.json")).unwrap();
            let hs =
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&jwks)).unwrap();
            refused("HS256", request(&app, &hs).await);
            refused("garbage", request(&app, "not-a-jwt").await);
            // The wrong assertion type.
            let r = app
                .http
                .post(app.url("/auth/token"))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", "urn:something:else"),
                    ("client_assertion", rs(json!({})).as_str()),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
        }
    );

    // What an attack round on the token endpoint found, each refused now.
    on_both!(the_edges_of_an_assertion_are_refused, |b| async move {
        let enc = format!(
            "[[clients]]\nid = \"venc\"\nkind = \"portal\"\nauth = \"private_key_jwt\"\njwks_path = \"{KEYS}/portal-enc.jwks.json\"\n"
        );
        let app = TestApp::spawn_with(b, &format!("{}{enc}", vendor())).await;
        let rs =
            |claims: Value| assertion(Algorithm::RS384, "portal-rs384", "portal-rs384", claims);
        // A jti with a control character (PostgreSQL cannot store NUL).
        refused(
            "NUL in jti",
            request(&app, &rs(json!({"jti": "a\u{0}b"}))).await,
        );
        // exp more than five minutes (and a few seconds) ahead.
        refused(
            "exp six minutes ahead",
            request(&app, &rs(json!({"exp": t0() + 360}))).await,
        );
        assert_eq!(request(&app, &rs(json!({"exp": t0() + 300}))).await.0, 200);
        // A key its JWKS marks for encryption does not sign.
        refused(
            "an encryption key",
            request(&app, &rs(json!({"iss": "venc", "sub": "venc"}))).await,
        );
        // Critical header extensions.
        let pem = std::fs::read(format!("{KEYS}/portal-rs384.pem")).unwrap();
        let header = json!({"alg": "RS384", "kid": "portal-rs384", "crit": ["foo"], "foo": 1});
        let body = json!({"iss": "vendor", "sub": "vendor", "aud": AUD, "exp": t0() + 240, "jti": "crit-1"});
        let b64 = |v: &Value| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let signing_input = format!("{}.{}", b64(&header), b64(&body));
        let signature = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &EncodingKey::from_rsa_pem(&pem).unwrap(),
            Algorithm::RS384,
        )
        .unwrap();
        refused(
            "crit",
            request(&app, &format!("{signing_input}.{signature}")).await,
        );
        // Two ways of authenticating at once, and a parameter given twice.
        let good = rs(json!({}));
        let r = app
            .http
            .post(app.url("/auth/token"))
            .basic_auth(PORTAL.0, Some(PORTAL.1))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", good.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "Basic and an assertion");
        let r = app
            .http
            .post(app.url("/auth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", "garbage"),
                ("client_assertion", good.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "client_assertion twice");
        // A replay after another request moved past the assertion's expiry: the jti is
        // remembered far longer than a lagging clock could accept it.
        let once = rs(json!({"exp": t0() + 10}));
        assert_eq!(request(&app, &once).await.0, 200);
        app.set_clock("2026-03-02T09:02:00Z").await;
        assert_eq!(request(&app, &rs(json!({"exp": t0() + 200}))).await.0, 200);
        app.set_clock(T0).await;
        refused("replay after a purge", request(&app, &once).await);
        // The token's record names the client it was issued to.
        app.state.auditor.flush().await.unwrap();
        let recs = sluis::store::audit::after(&app.state.db, 0, 100_000)
            .await
            .unwrap();
        assert!(
            recs.iter().any(|r| r.action == "token"
                && r.status == 200
                && r.client_id.as_deref() == Some("vendor")),
            "{recs:?}"
        );
    });

    // Found by attacking: a key that says what it is for is used for that only, and the
    // answers before a signature holds do not tell known clients from unknown ones.
    on_both!(
        a_keys_alg_and_key_ops_bind_it_and_refusals_tell_nothing,
        |b| async move {
            let dir = tempfile::tempdir().unwrap();
            let jwks: Value = serde_json::from_str(
                &std::fs::read_to_string(format!("{KEYS}/portal.jwks.json")).unwrap(),
            )
            .unwrap();
            let mut clients = String::new();
            for (id, member, value) in [
                ("v-alg", "alg", json!("RS256")),
                ("v-ops", "key_ops", json!(["encrypt"])),
                ("v-verify", "key_ops", json!(["verify"])),
            ] {
                let mut set = jwks.clone();
                for key in set["keys"].as_array_mut().unwrap() {
                    key[member] = value.clone();
                }
                let path = dir.path().join(format!("{id}.json"));
                std::fs::write(&path, set.to_string()).unwrap();
                clients.push_str(&format!(
                    "[[clients]]\nid = \"{id}\"\nkind = \"portal\"\nauth = \"private_key_jwt\"\njwks_path = \"{}\"\n",
                    path.display()
                ));
            }
            let app = TestApp::spawn_with(b, &format!("{}{clients}", vendor())).await;
            let signed_as = |id: &str, key: &str| {
                assertion(
                    Algorithm::RS384,
                    key,
                    "portal-rs384",
                    json!({"iss": id, "sub": id}),
                )
            };
            refused(
                "alg RS256",
                request(&app, &signed_as("v-alg", "portal-rs384")).await,
            );
            refused(
                "key_ops encrypt",
                request(&app, &signed_as("v-ops", "portal-rs384")).await,
            );
            assert_eq!(
                request(&app, &signed_as("v-verify", "portal-rs384"))
                    .await
                    .0,
                200
            );
            // A foreign key under a known client's kid, and an unknown client: one answer.
            let known = request(&app, &signed_as("vendor", "foreign-rs384")).await.1;
            let unknown = request(&app, &signed_as("nobody", "foreign-rs384")).await.1;
            assert_eq!(
                known["issue"][0]["diagnostics"],
                unknown["issue"][0]["diagnostics"]
            );
        }
    );

    /// A vendor's JWKS endpoint serving `portal.jwks.json` (or 503 once told to fail),
    /// counting requests.
    async fn jwks_server() -> (
        String,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        use std::sync::atomic::Ordering;
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, d) = (hits.clone(), down.clone());
        let jwks = std::fs::read_to_string(format!("{KEYS}/portal.jwks.json")).unwrap();
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (h, d, jwks) = (h.clone(), d.clone(), jwks.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    if d.load(Ordering::SeqCst) {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new())
                    } else {
                        (axum::http::StatusCode::OK, jwks)
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/.well-known/jwks.json"), hits, down)
    }

    on_both!(
        a_vendor_that_publishes_its_keys_is_fetched_once_and_kept,
        |b| async move {
            use std::sync::atomic::Ordering;
            let (uri, hits, down) = jwks_server().await;
            let app = TestApp::spawn_with(
                b,
                &format!(
                    "[[clients]]\nid = \"vendor\"\nkind = \"portal\"\nauth = \"private_key_jwt\"\njwks_uri = \"{uri}\"\n"
                ),
            )
            .await;
            for (alg, key) in [
                (Algorithm::RS384, "portal-rs384"),
                (Algorithm::ES384, "portal-es384"),
            ] {
                let (status, body) = request(&app, &assertion(alg, key, key, json!({}))).await;
                assert_eq!(status, 200, "{key}: {body}");
            }
            assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once, then kept");
            // The vendor's server down: the keys kept still serve.
            down.store(true, Ordering::SeqCst);
            let good = assertion(Algorithm::RS384, "portal-rs384", "portal-rs384", json!({}));
            assert_eq!(request(&app, &good).await.0, 200);
            // A key it never published is refused as ever.
            refused(
                "foreign key",
                request(
                    &app,
                    &assertion(Algorithm::RS384, "foreign-rs384", "portal-rs384", json!({})),
                )
                .await,
            );
            // A vendor whose server never answered: refused, 401 with an OperationOutcome.
            let never = TestApp::spawn_with(
                Backend::Sqlite,
                "[[clients]]\nid = \"vendor\"\nkind = \"portal\"\nauth = \"private_key_jwt\"\njwks_uri = \"http://127.0.0.1:9/jwks\"\n",
            )
            .await;
            let unreachable = request(&never, &good).await;
            refused("keys unreachable", unreachable.clone());
            // Told apart from an unknown client by nothing.
            let unknown = request(
                &never,
                &assertion(
                    Algorithm::RS384,
                    "portal-rs384",
                    "portal-rs384",
                    json!({"iss": "nobody", "sub": "nobody"}),
                ),
            )
            .await;
            assert_eq!(
                unreachable.1["issue"][0]["diagnostics"],
                unknown.1["issue"][0]["diagnostics"]
            );
        }
    );

    #[test]
    fn a_jwks_uri_must_be_https_and_alone() {
        let load = |client: &str| {
            sluis::config::Config::from_toml(
                &config_text(
                    "sqlite://x.db",
                    &format!(
                        "[[clients]]\nid = \"v\"\nkind = \"portal\"\nauth = \"private_key_jwt\"\n{client}"
                    ),
                ),
                "test.toml",
                std::iter::empty(),
            )
        };
        assert!(load("jwks_uri = \"https://vendor.example/jwks.json\"\n").is_ok());
        assert!(load("jwks_uri = \"http://localhost:8000/jwks.json\"\n").is_ok());
        for bad in [
            "jwks_uri = \"http://vendor.example/jwks.json\"\n",
            "jwks_uri = \"ftp://vendor.example/jwks.json\"\n",
            "jwks_uri = \"not a url\"\n",
            "jwks_uri = \"https://v.example/j\"\njwks_path = \"x.json\"\n",
            "",
        ] {
            let problems = load(bad).unwrap_err().0;
            assert!(
                problems
                    .iter()
                    .any(|p| p.key.starts_with("clients[3].jwks")),
                "{bad}: {problems:?}"
            );
        }
    }

    on_both!(
        an_assertion_used_by_one_process_is_refused_by_another,
        |b| async move {
            let app = TestApp::spawn_with(b, &vendor()).await;
            let other = app.restart_with(&vendor(), T0).await;
            let good = assertion(Algorithm::ES384, "portal-es384", "portal-es384", json!({}));
            assert_eq!(request(&app, &good).await.0, 200);
            refused("replayed in another process", request(&other, &good).await);
        }
    );
}

/// What the token endpoint supports, for a vendor's SMART client library.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smart_configuration_says_what_is_supported() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let r = app
        .http
        .get(app.url("/.well-known/smart-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["token_endpoint"], "http://sluis.test/auth/token");
    assert!(body.get("issuer").is_none(), "{body}");
    // Also under the FHIR base, where SMART clients look.
    let r = app
        .http
        .get(app.url("/fhir/.well-known/smart-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        body["token_endpoint_auth_signing_alg_values_supported"],
        serde_json::json!(["RS384", "ES384"])
    );
    assert!(
        body["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("private_key_jwt"))
    );
    assert!(
        body["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("system/*.rs"))
    );
    // The CapabilityStatement names the token endpoint too (SMART's oauth-uris).
    let metadata: serde_json::Value = app
        .http
        .get(app.url("/fhir/metadata"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let security = &metadata["rest"][0]["security"];
    assert_eq!(
        security["extension"][0]["extension"][0]["valueUri"], "http://sluis.test/auth/token",
        "{security}"
    );
}

// Access tokens are signed with a key from a file, never from the database; a rotation
// keeps the previous key's tokens valid until it is taken out of config.
on_both!(
    a_rotated_signing_key_still_verifies_until_it_is_taken_out,
    |b| async move {
        let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
        let auth = |signing: &str, previous: &[&str]| {
            let previous: Vec<String> =
                previous.iter().map(|p| format!("\"{keys}/{p}\"")).collect();
            format!(
                "[auth]\nsigning_key = \"{keys}/{signing}\"\nprevious_signing_keys = [{}]\n",
                previous.join(", ")
            )
        };
        let app = TestApp::spawn_with(b, &auth("token-signing.key", &[])).await;
        let old = app.token(PORTAL).await;
        assert_ne!(read_with(&app, &old).await, 401);
        // The database holds no key to mint tokens with.
        assert_eq!(
            app.state
                .db
                .fetch_count(&sluis::store::Sql::new(
                    "SELECT COUNT(*) AS n FROM settings WHERE key = 'token_key'"
                ))
                .await
                .unwrap(),
            0
        );
        // Rotated: the next key signs; the old one's tokens hold within their lifetime.
        let rotated = app
            .restart_with(&auth("token-signing-next.key", &["token-signing.key"]), T0)
            .await;
        assert_ne!(read_with(&rotated, &old).await, 401);
        let new = rotated.token(PORTAL).await;
        assert_ne!(read_with(&rotated, &new).await, 401);
        // The old key taken out: its tokens are refused, the new key's are not.
        let after = app
            .restart_with(&auth("token-signing-next.key", &[]), T0)
            .await;
        assert_eq!(read_with(&after, &old).await, 401);
        assert_ne!(read_with(&after, &new).await, 401);
        // Past its lifetime a token is refused whatever key signed it.
        after.set_clock("2026-03-02T10:00:00Z").await;
        assert_eq!(read_with(&after, &new).await, 401);
    }
);

/// A signing key that cannot be read or is too short stops the start.
#[test]
fn a_short_or_missing_signing_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "too-short").unwrap();
    for path in [short, dir.path().join("absent.key")] {
        let auth = sluis::config::Auth {
            token_lifetime: "PT5M".parse().unwrap(),
            signing_key: Some(path.clone()),
            previous_signing_keys: Vec::new(),
        };
        let e = sluis::auth::TokenKeys::load(&auth).unwrap_err().to_string();
        assert!(e.contains("signing key"), "{path:?}: {e}");
    }
}

// Found by attacking: a token minted under a clock pinned ahead (dev.clock_override), by a
// process sharing the signing key, is no token to a process that follows the real time.
on_both!(
    a_token_from_a_pinned_future_is_refused_by_real_time,
    |b| async move {
        let app = TestApp::spawn(b).await;
        app.set_clock("2099-01-01T00:00:00Z").await;
        let future = app.token(PORTAL).await;
        let real = app.restart_with("", T0).await;
        let r = real
            .http
            .put(real.url("/admin/clock"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({"now": null}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(read_with(&real, &future).await, 401);
        let now = real.token(PORTAL).await;
        assert_ne!(read_with(&real, &now).await, 401);
        // Signed with the key itself: a lifetime so long that its length overflows.
        let kid = jsonwebtoken::decode_header(&now).unwrap().kid;
        let key = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/keys/token-signing.key"
        ))
        .unwrap();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = kid;
        let forever = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"sub": PORTAL.0, "kind": "portal", "scope": "system/*.rs",
                                "iss": "sluis", "iat": i64::MIN, "exp": i64::MAX}),
            &jsonwebtoken::EncodingKey::from_secret(key.trim_ascii()),
        )
        .unwrap();
        assert_eq!(read_with(&real, &forever).await, 401);
    }
);

on_both!(
    a_credential_or_person_sent_twice_is_refused,
    |b| async move {
        let app = TestApp::spawn(b).await;
        let token = app.token(PORTAL).await;
        let read = |headers: Vec<(&'static str, String)>| {
            let app = &app;
            async move {
                let mut r = app.http.get(app.url("/fhir/Patient/p1"));
                for (k, v) in headers {
                    r = r.header(k, v);
                }
                r.send().await.unwrap().status().as_u16()
            }
        };
        let bearer = format!("Bearer {token}");
        // Once each: past the credential (a stranger's Patient is 403 or 404).
        let once = vec![
            ("authorization", bearer.clone()),
            ("x-portal-user", "u1".to_string()),
        ];
        assert_ne!(read(once).await, 401);
        // Two people, or two credentials (a proxy in front may have checked the other one).
        let two_people = vec![
            ("authorization", bearer.clone()),
            ("x-portal-user", "u1".to_string()),
            ("x-portal-user", "u2".to_string()),
        ];
        assert_eq!(read(two_people).await, 401);
        let two_credentials = vec![
            ("authorization", bearer.clone()),
            ("authorization", bearer.clone()),
            ("x-portal-user", "u1".to_string()),
        ];
        assert_eq!(read(two_credentials).await, 401);
        let r = app
            .http
            .post(app.url("/auth/token"))
            .basic_auth(PORTAL.0, Some(PORTAL.1))
            .header("authorization", bearer)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
);
