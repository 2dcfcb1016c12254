//! What `sluis serve` writes to its log while pulling from a source that fails: every failure
//! with the source, the type and the URL, and never a token or a secret. Its own test binary:
//! it runs the real binary with debug logging and reads what it writes.

#[path = "api/source.rs"]
mod source;

use serde_json::json;
use source::{Auth, Fault, RecordSystem};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "pull-secret-that-must-not-be-logged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_failures_are_logged_with_source_type_and_url_and_no_token() {
    let rs = RecordSystem::start().await;
    rs.set_auth(Auth::Secret {
        client_id: "sluis".into(),
        secret: SECRET.into(),
    });
    rs.put_all(&[
        json!({"resourceType": "Patient", "id": "p1", "active": true}),
        json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}}),
    ]);
    rs.fail_next(&[
        Fault::Status(503),
        Fault::ExpireTokens,
        Fault::Status(503),
        Fault::Status(503),
        Fault::Status(503),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"
[database]
url = "sqlite://{}/logs.db"
[admin]
token = "logs-admin-token"
[organization]
terms_version = "2026-01"
[[sources]]
id = "ehr"
[sources.pull]
base_url = "{}"
resource_types = ["Patient", "Observation"]
interval = "PT1H"
max_retries = 1
auth = {{ method = "client_secret", token_url = "{}", client_id = "sluis", secret = "{SECRET}" }}
"#,
        dir.path().display(),
        rs.base,
        rs.token_url
    );
    let path = dir.path().join("sluis.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluis"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read as it is written: a pipe holds 64 KB, and a child that fills it waits for it to be
    // read (with debug logging, before it has pulled).
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut logged = String::new();
        let _ = stderr.read_to_string(&mut logged);
        logged
    });
    // Patient: 503, a retry that meets a 401 (a new token), 503: failed after its retry.
    // Observation: 503, 503: failed after its retry.
    let started = Instant::now();
    while rs.faults_left() > 0 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().unwrap();
    let _ = child.wait();
    let logged = reader.join().unwrap();
    let failures: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("pull retried") || l.contains("pull failed"))
        .collect();
    assert!(failures.len() >= 3, "{logged}");
    for line in &failures {
        assert!(line.contains("source=ehr"), "{line}");
        assert!(line.contains("resource_type="), "{line}");
        assert!(line.contains(&format!("url=\"{}/", rs.base)), "{line}");
    }
    assert!(
        failures.iter().any(|l| l.contains("retries used up")),
        "{logged}"
    );
    let tokens = rs.issued_tokens();
    assert!(tokens.len() >= 2, "a token, and another after the 401");
    for secret in tokens.iter().map(String::as_str).chain([SECRET]) {
        assert!(!logged.contains(secret), "{secret} is in the log");
    }
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("sluis:{SECRET}"));
    assert!(
        !logged.contains(&basic),
        "the Basic credentials are in the log"
    );
}
