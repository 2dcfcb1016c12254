//! The portal vendor's guide (`docs/vendor.md`) works as written: its scripts, run against the
//! demo config, make a key and get a token that reads the portal API. They need bash, openssl,
//! curl (and xxd to make a key); where one is missing the test says it was skipped.

use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn have(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools
        .iter()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .collect();
    if !missing.is_empty() {
        eprintln!("skipped: {missing:?} not installed");
    }
    missing.is_empty()
}

/// The demo config (`config/demo.toml`) on a free port and a fresh database, with `extra`
/// appended; its base URL.
async fn demo(dir: &std::path::Path, extra: &str) -> (String, tokio::task::JoinHandle<()>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let text = std::fs::read_to_string(format!("{ROOT}/config/demo.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace(
            "sqlite://sluis-demo.db",
            &format!("sqlite://{}/demo.db", dir.display()),
        );
    let config = sluis::config::Config::from_toml(
        &format!("{text}\n{extra}"),
        "config/demo.toml",
        std::iter::empty(),
    )
    .unwrap_or_else(|p| panic!("{p}"));
    let app = sluis::app::Application::build(config, sluis::clock::Clock::system())
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = app.run_until(std::future::pending()).await;
    });
    (base, task)
}

/// Runs `docs/examples/smart-token.sh` and returns the access token it printed.
fn smart_token(client: &str, key: &str, kid: &str, token_url: &str) -> String {
    let out = Command::new("bash")
        .arg(format!("{ROOT}/docs/examples/smart-token.sh"))
        .args([client, key, kid, token_url])
        .current_dir(ROOT)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(body["token_type"], "bearer", "{body}");
    assert_eq!(body["scope"], "system/*.rs", "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

async fn me(base: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/portal/me"))
        .bearer_auth(token)
        .header("x-portal-user", "vendor-user-1")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_script_gets_a_token_from_the_demo() {
    if !have(&["bash", "openssl", "curl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (base, task) = demo(dir.path(), "").await;
    let token_url = format!("{base}/auth/token");
    let token = smart_token(
        "demo-vendor",
        "config/keys/demo-vendor.pem",
        "demo-vendor",
        &token_url,
    );
    assert_eq!(me(&base, &token).await, 200);
    // The guide's other half: a key of one's own, registered as a JWKS.
    if have(&["xxd"]) {
        let keys = dir.path().join("keys");
        let out = Command::new("bash")
            .arg(format!("{ROOT}/docs/examples/make-key.sh"))
            .args(["acme-2026", keys.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        task.abort();
        let (base, task) = demo(
            dir.path(),
            &format!(
                "[[clients]]\nid = \"acme\"\nkind = \"portal\"\nauth = \"private_key_jwt\"\njwks_path = \"{}\"\n",
                keys.join("acme-2026.jwks.json").display()
            ),
        )
        .await;
        let token = smart_token(
            "acme",
            keys.join("acme-2026.pem").to_str().unwrap(),
            "acme-2026",
            &format!("{base}/auth/token"),
        );
        assert_eq!(me(&base, &token).await, 200);
        task.abort();
    } else {
        task.abort();
    }
}
