//! The command line (contract §1), run as the real binary.

use crate::helpers::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sluis");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let db = format!("sqlite://{}", dir.join("cli.db").display());
    let path = dir.join("sluis.toml");
    std::fs::write(&path, config_text(&db, extra)).unwrap();
    path
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_a_good_config_and_lists_unmapped_types() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[mappings]\ndir = \"mappings\"\n");
    let (code, out, err) = run(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("config and mappings are valid"), "{out}");
    assert!(
        out.contains("Patient-compartment types no rule maps"),
        "{out}"
    );
    assert!(out.contains("Claim"), "{out}");
    assert!(out.contains("Observation"), "{out}");
    assert!(out.contains("rule[1]  agenda"), "{out}");
    assert!(out.contains("default  anything else -> P14D"), "{out}");
}

/// `sluis check` reads a pulled source's signing key: a missing or wrong key is named.
#[test]
fn check_reads_the_pull_key() {
    let dir = tempfile::tempdir().unwrap();
    let pull = |key: &str, alg: &str| {
        format!(
            "[[sources]]\nid = \"ehr\"\n[sources.pull]\nbase_url = \"https://ehr.test/fhir\"\nresource_types = [\"Patient\"]\n\
             auth = {{ method = \"private_key_jwt\", token_url = \"https://ehr.test/token\", client_id = \"sluis\", key_path = \"{key}\", alg = \"{alg}\" }}\n"
        )
    };
    let good = write_config(dir.path(), &pull("tests/keys/source-es384.pem", "ES384"));
    let (code, out, err) = run(&["check", "--config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    for (key, alg, says) in [
        ("tests/keys/none.pem", "ES384", "cannot read the pull key"),
        (
            "tests/keys/source-es384.pem",
            "RS384",
            "not a PEM key of its alg",
        ),
    ] {
        let bad = write_config(dir.path(), &pull(key, alg));
        let (code, _, err) = run(&["check", "--config", bad.to_str().unwrap()]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("sources[2].pull.auth.key_path"), "{err}");
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn check_names_file_and_key_of_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[embargo]\non_update = \"later\"\n[limits]\nmax_count = 10\ndefault_count = 50\n",
    );
    let (code, _, err) = run(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let file = config.display().to_string();
    assert!(err.contains(&format!("{file}: embargo.on_update")), "{err}");
    assert!(
        err.contains(&format!("{file}: limits.default_count")),
        "{err}"
    );
    let mappings = dir.path().join("mappings");
    std::fs::create_dir(&mappings).unwrap();
    std::fs::write(
        mappings.join("sections.toml"),
        "[[rule]]\nsection = \"x\"\ntype = \"Observaton\"\n",
    )
    .unwrap();
    std::fs::write(
        mappings.join("embargo.toml"),
        "[[rule]]\nsection = \"y\"\ndelay = \"soon\"\n",
    )
    .unwrap();
    let config = write_config(
        dir.path(),
        &format!("[mappings]\ndir = \"{}\"\n", mappings.display()),
    );
    let (code, _, err) = run(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("sections.toml: rule[0].type"), "{err}");
    assert!(err.contains("embargo.toml: rule[0].section"), "{err}");
    assert!(err.contains("embargo.toml: rule[0].delay"), "{err}");
    let (code, _, err) = run(&["check", "--config", "/no/such/file.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/no/such/file.toml"), "{err}");
}

#[test]
fn migrate_and_import_go_through_the_push_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let config = config.to_str().unwrap();
    let (code, out, err) = run(&["migrate", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&[
        "import",
        "--config",
        config,
        "--source",
        "ons",
        "fixtures/demo/01-organisatie.json",
        "fixtures/demo/02-jo-de-vries.json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("02-jo-de-vries.json: 51 entries, 51 stored"),
        "{out}"
    );
    // The total at the end; no progress bar where the output is no terminal.
    assert!(out.contains("\n2/2 files, "), "{out}");
    assert!(!out.contains('\x1b') && !err.contains('\x1b'), "{out}{err}");
    // Again: nothing new is stored.
    let (code, out, _) = run(&[
        "import",
        "--config",
        config,
        "--source",
        "ons",
        "fixtures/demo/02-jo-de-vries.json",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("51 entries, 0 stored"), "{out}");
    // ndjson, and a broken file.
    let nd = dir.path().join("more.ndjson");
    std::fs::write(
        &nd,
        format!(
            "{}\n{}\n",
            patient("p9"),
            observation("o9", "p9", "29463-7", "2026-01-01")
        ),
    )
    .unwrap();
    let (code, out, err) = run(&[
        "import",
        "--config",
        config,
        "--source",
        "ons",
        nd.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 entries, 2 stored"), "{out}");
    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        "{\"resourceType\": \"Patient\", \"birthDate\": \"gisteren\"}",
    )
    .unwrap();
    let (code, _, err) = run(&[
        "import",
        "--config",
        config,
        "--source",
        "ons",
        broken.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("Patient.birthDate"), "{err}");
    let (code, _, err) = run(&[
        "import",
        "--config",
        config,
        "--source",
        "nope",
        nd.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("nope"), "{err}");
}

/// On a terminal (a pseudo-terminal made by `script`) `sluis import` draws its progress line.
#[test]
fn import_shows_its_progress_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` on this machine to make a terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    for i in 0..40 {
        std::fs::write(
            files.join(format!("{i:02}.ndjson")),
            format!(
                "{}\n{}\n",
                patient(&format!("p{i}")),
                observation(&format!("o{i}"), &format!("p{i}"), "29463-7", "2026-01-01")
            ),
        )
        .unwrap();
    }
    let command = format!(
        "{BIN} import --config {} --source ons {}",
        config.display(),
        files.display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // Drawn on the terminal (and cleared), then the total.
    assert!(text.contains('\x1b'), "{text:?}");
    assert!(text.contains("40/40 files, 80 resources, "), "{text}");
}

/// README's first command: the demo serves, and the printed curl lines work as printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_what_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--database",
            db.to_str().unwrap(),
        ])
        .current_dir(ROOT)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines: Vec<String> = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("Stop with Ctrl-C");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    let curls: Vec<&String> = lines
        .iter()
        .filter(|l| l.trim_start().starts_with("curl -s -H"))
        .collect();
    assert!(curls.len() >= 3, "{lines:#?}");
    let http = reqwest::Client::new();
    let token_line = lines.iter().find(|l| l.contains("TOKEN=$(")).unwrap();
    let url_of = |line: &str| line.rsplit('\'').nth(1).unwrap().to_string();
    let auth_url = token_line
        .split_whitespace()
        .find(|w| w.ends_with("/auth/token"))
        .unwrap();
    let r = http
        .post(auth_url)
        .basic_auth("demo-portal", Some("demo-portal-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token: serde_json::Value = r.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap();
    for line in curls {
        let url = url_of(line);
        let r = http
            .get(&url)
            .bearer_auth(token)
            .header("x-portal-user", "demo-jo")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{line}");
        let body: serde_json::Value = r.json().await.unwrap();
        if url.contains("/fhir/Observation") {
            assert!(body["total"].as_u64().unwrap() > 0, "{line}: {body}");
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
}

/// `sluis check` reads each client's JWKS file and names keys too weak to trust, and refuses
/// placeholder secrets (as `serve` does).
#[test]
fn check_refuses_weak_client_keys_and_placeholder_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let client = |jwks: &str| {
        format!(
            "[[clients]]\nid = \"vendor\"\nkind = \"portal\"\nauth = \"private_key_jwt\"\njwks_path = \"{ROOT}/tests/keys/{jwks}\"\n"
        )
    };
    let good = write_config(dir.path(), &client("portal.jwks.json"));
    let (code, out, err) = run(&["check", "--config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let weak = write_config(dir.path(), &client("weak.jwks.json"));
    let (code, out, err) = run(&["check", "--config", weak.to_str().unwrap()]);
    assert_ne!(code, 0);
    let all = format!("{out}{err}");
    assert!(
        all.contains("key weak-rsa1024: an RSA key of about 1024 bits"),
        "{all}"
    );
    assert!(all.contains("key p256: an EC key on P256"), "{all}");
    // Built from the vendor's good key: exponent 3, private material, a kid twice.
    let good_set: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/tests/keys/portal.jwks.json")).unwrap(),
    )
    .unwrap();
    let rsa = good_set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "RSA")
        .unwrap()
        .clone();
    let mut e3 = rsa.clone();
    e3["kid"] = "e3".into();
    e3["e"] = "Aw".into();
    let mut private = rsa.clone();
    private["kid"] = "private".into();
    private["d"] = "AQAB".into();
    let mut twice = rsa.clone();
    twice["kid"] = "twice".into();
    let odd = serde_json::json!({"keys": [e3, private, twice.clone(), twice]});
    std::fs::write(dir.path().join("odd.jwks.json"), odd.to_string()).unwrap();
    let odd_config = write_config(
        dir.path(),
        &format!(
            "[[clients]]\nid = \"vendor\"\nkind = \"portal\"\nauth = \"private_key_jwt\"\njwks_path = \"{}\"\n",
            dir.path().join("odd.jwks.json").display()
        ),
    );
    let (code, out, err) = run(&["check", "--config", odd_config.to_str().unwrap()]);
    assert_ne!(code, 0);
    let all = format!("{out}{err}");
    for says in [
        "key e3: an RSA key whose exponent is not 65537",
        "key 1 holds private key material (d)",
        "the kid `twice` is used twice",
    ] {
        assert!(all.contains(says), "{says}: {all}");
    }
    let placeholder = dir.path().join("placeholder.toml");
    std::fs::write(
        &placeholder,
        std::fs::read_to_string(good)
            .unwrap()
            .replace(ADMIN, "change-me-now"),
    )
    .unwrap();
    for command in ["check", "serve"] {
        let (code, out, err) = run(&[command, "--config", placeholder.to_str().unwrap()]);
        assert_ne!(code, 0, "{command}");
        assert!(
            format!("{out}{err}").contains("admin.token: is a placeholder"),
            "{command}: {out}{err}"
        );
    }
}
