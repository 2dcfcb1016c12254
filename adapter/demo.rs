//! `sluis demo`: the adapter on a fresh SQLite file with the demo dossier of
//! `fixtures/demo/`, a linked holder who accepted the terms, and printed instructions.
//!
//! The fixtures are written as if today were their anchor date; every date is shifted by whole
//! days to today so the demo always looks current, and each batch arrives the configured
//! number of days ago, so that older entries are visible and recent ones are still held back.

use crate::app::{AppState, Application};
use crate::auth::PortalUser;
use crate::clock::Clock;
use crate::config::Config;
use crate::ingest::entries;
use crate::time::to_micros;
use anyhow::Context;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The demo's config (`config/demo.toml`).
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    anchor: String,
    source: String,
    batch: Vec<Batch>,
    #[serde(default)]
    user: Vec<DemoUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    file: String,
    arrived_days_ago: i64,
}

/// A portal user the demo links and lets accept the terms.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoUser {
    id: String,
    patient: String,
    relationship: String,
    birth_date: String,
}

fn fixtures_dir() -> PathBuf {
    let local = PathBuf::from("fixtures/demo");
    if local.join("manifest.toml").exists() {
        local
    } else {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/demo"))
    }
}

/// Runs the demo until stopped.
pub async fn run(listen: SocketAddr, database: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", database.display()));
        if file.exists() {
            std::fs::remove_file(&file)
                .with_context(|| format!("cannot remove {}", file.display()))?;
        }
    }
    let mut config = Config::from_toml(DEMO_CONFIG, "config/demo.toml", std::env::vars())
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    config.server.listen = listen;
    config.server.public_base_url = format!("http://{listen}");
    config.database.url = format!("sqlite://{}", database.display()).into();
    if config.mappings.dir.as_ref().is_some_and(|d| !d.exists()) {
        config.mappings.dir = None;
    }
    // Bind first, so that port 0 works and the printed URL is the real one.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    config.server.listen = bound;
    config.server.public_base_url = format!("http://{bound}");
    let state = AppState::new(config, Clock::system()).await?;
    let (loaded, users) = load(&state).await?;
    let app = Application::from_listener(state.clone(), listener);
    print_instructions(&state, loaded, &users);
    app.run_until_stopped().await
}

/// Loads the fixtures; returns the number of resources and the demo users.
async fn load(state: &AppState) -> anyhow::Result<(usize, Vec<(String, String)>)> {
    let dir = fixtures_dir();
    let manifest_path = dir.join("manifest.toml");
    let manifest: Manifest = toml::from_str(
        &std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?,
    )
    .with_context(|| format!("{} is not valid", manifest_path.display()))?;
    let anchor = NaiveDate::parse_from_str(&manifest.anchor, "%Y-%m-%d")
        .with_context(|| format!("anchor `{}` is not a date", manifest.anchor))?;
    let now = state.clock.now();
    let shift = now.date_naive().signed_duration_since(anchor).num_days();
    let mut loaded = 0;
    for batch in &manifest.batch {
        let path = dir.join(&batch.file);
        let mut value: Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", path.display()))?;
        shift_dates(&mut value, shift, None);
        let (mode, parsed) = entries::split(value)
            .map_err(|_| anyhow::anyhow!("{} is not a transaction Bundle", path.display()))?;
        loaded += parsed.len();
        let arrived = now - Duration::days(batch.arrived_days_ago);
        crate::ingest::ingest(
            state,
            &manifest.source,
            mode,
            parsed.into_iter().map(entries::Sent::Read).collect(),
            Some(to_micros(arrived)),
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), crate::cli::describe(&e)))?;
    }
    let mut users = Vec::new();
    for u in &manifest.user {
        link_user(state, u, now).await?;
        users.push((u.id.clone(), u.patient.clone()));
    }
    Ok((loaded, users))
}

async fn link_user(state: &AppState, u: &DemoUser, now: DateTime<Utc>) -> anyhow::Result<()> {
    let code = crate::portal::codes::new_code().map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let hash = crate::portal::codes::hash_code(&code);
    let expires = state.config.portal.activation_code_lifetime.after(now);
    crate::store::accounts::insert_code(
        &state.db,
        &crate::store::accounts::NewCode {
            code_hash: &hash,
            kind: "activation",
            patient_id: &u.patient,
            relationship: &u.relationship,
            name: None,
            sections: None,
            can_post: true,
            created_by: "demo",
            created_at: to_micros(now),
            expires_at: to_micros(expires),
            invited_by: None,
        },
    )
    .await?;
    let client_id = state
        .config
        .clients
        .iter()
        .find(|c| c.kind == crate::config::ClientKind::Portal)
        .map(|c| c.id.clone())
        .context("the demo config has no portal client")?;
    let user = PortalUser {
        client_id: client_id.clone(),
        external_id: u.id.clone(),
        scopes: Default::default(),
    };
    crate::portal::codes::redeem(state, &user, &code, &u.birth_date, to_micros(now))
        .await
        .map_err(|e| anyhow::anyhow!("demo user {}: {}", u.id, e.message))?;
    crate::store::accounts::accept_terms(
        &state.db,
        &client_id,
        &u.id,
        &state.config.organization.terms_version,
        to_micros(now),
    )
    .await?;
    Ok(())
}

/// Shifts every date, dateTime and instant by `days` (birth dates stay as they are).
pub fn shift_dates(value: &mut Value, days: i64, key: Option<&str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                shift_dates(v, days, Some(k));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| shift_dates(v, days, key)),
        Value::String(s) if key != Some("birthDate") => {
            if let Some(shifted) = shift_one(s, days) {
                *s = shifted;
            }
        }
        _ => {}
    }
}

fn shift_one(text: &str, days: i64) -> Option<String> {
    let b = text.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' || !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() == 10 {
        let d = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        return Some((d + Duration::days(days)).format("%Y-%m-%d").to_string());
    }
    let dt = DateTime::parse_from_rfc3339(text).ok()?;
    let shifted = dt + Duration::days(days);
    Some(shifted.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, text.ends_with('Z')))
}

fn print_instructions(state: &AppState, loaded: usize, users: &[(String, String)]) {
    let base = &state.config.server.public_base_url;
    let portal = state
        .config
        .clients
        .iter()
        .find(|c| c.kind == crate::config::ClientKind::Portal);
    let (client, secret) = match portal.map(|c| (&c.id, &c.auth)) {
        Some((id, crate::config::ClientAuth::ClientSecret { secret })) => {
            (id.clone(), secret.expose_secret().to_string())
        }
        _ => (String::new(), String::new()),
    };
    // The demo prints its own credentials: they are the demo's, not secrets.
    let admin = state
        .config
        .admin
        .credentials
        .first()
        .map(|c| c.token.expose_secret())
        .unwrap_or_default();
    let (user, patient) = users.first().cloned().unwrap_or_default();
    println!(
        "
sluis demo: {org}, {loaded} demo resources loaded (older entries visible, recent ones still held back)

  FHIR API        {base}/fhir  (CapabilityStatement: {base}/fhir/metadata)
  portal client   id {client}, secret {secret}  (HTTP Basic at POST {base}/auth/token)
  portal user     X-Portal-User: {user}  (holder of Patient/{patient}, terms accepted)
  admin token     {admin}  (/admin on {base})
  vendor client   id demo-vendor, private_key_jwt with config/keys/demo-vendor.pem (docs/vendor.md):
                  docs/examples/smart-token.sh demo-vendor config/keys/demo-vendor.pem demo-vendor {base}/auth/token

Try it:

  TOKEN=$(curl -s -u {client}:{secret} -d grant_type=client_credentials {base}/auth/token | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')
  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'X-Portal-User: {user}' '{base}/portal/me'
  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'X-Portal-User: {user}' '{base}/fhir/Patient/{patient}'
  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'X-Portal-User: {user}' '{base}/fhir/Observation?patient={patient}&category=vital-signs&_sort=-date&_count=5'
  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'X-Portal-User: {user}' '{base}/fhir/Appointment?patient={patient}&date=ge{today}'

Stop with Ctrl-C. The database ({db}) is recreated at every start.
",
        org = state.config.organization.name,
        db = state.config.database.url.expose_secret(),
        today = state.clock.now().date_naive(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_move_and_birth_dates_stay() {
        let mut v = json!({"birthDate": "1938-04-02", "effectiveDateTime": "2026-10-28T08:30:00+01:00",
            "period": {"start": "2026-09-01"}, "note": "2026-10-28 is a date in text", "code": "12345"});
        shift_dates(&mut v, 3, None);
        assert_eq!(v["birthDate"], "1938-04-02");
        assert_eq!(v["effectiveDateTime"], "2026-10-31T08:30:00+01:00");
        assert_eq!(v["period"]["start"], "2026-09-04");
        assert_eq!(v["note"], "2026-10-28 is a date in text");
    }
}
