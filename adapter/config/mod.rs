//! The config file (contract §2): TOML, overridden by `SLUIS__SECTION__KEY` variables, checked
//! as a whole so that every problem is reported with its file and key.
//!
//! Config says who, where and how long; what data means lives in `mappings/` (see `mapping`).
//! Reading happens in three steps: the file becomes a TOML table, environment variables are
//! laid over it, and the result is deserialized into [`RawConfig`] (plain strings and numbers)
//! and then checked into [`Config`], whose values are ready to use.

pub mod pull;

pub use pull::{KeyAlg, Pull, PullAuth, Writeback};

use crate::time::IsoDuration;
use secrecy::SecretString;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// One problem in the configuration: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or environment variable) the value came from.
    pub file: String,
    /// The key, e.g. `embargo.on_update` or `clients[1].secret`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

/// All problems found; the config is used only when there are none.
#[derive(Debug, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub database: Database,
    pub organization: Organization,
    pub embargo: Embargo,
    pub admin: Admin,
    pub dev: Dev,
    pub audit: Audit,
    pub limits: Limits,
    pub auth: Auth,
    pub portal: Portal,
    pub messages: Messages,
    pub mappings: Mappings,
    pub clients: Vec<Client>,
    pub sources: Vec<Source>,
}

/// `[audit]`: how long the audit trail is kept (R18: at least five years), and whether it is
/// written at all (off only to measure what it costs; never in production).
#[derive(Debug, Clone)]
pub struct Audit {
    pub retention: IsoDuration,
    pub enabled: bool,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    /// Without a trailing slash, e.g. `https://sluis.example.org`.
    pub public_base_url: String,
    /// Where `/admin` is served.
    pub admin_listen: AdminListen,
    /// Reverse proxies whose `X-Forwarded-For` names the caller (for the audit and the
    /// failed-authentication limit).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// A connection must send a request's headers within this; else it is closed.
    pub header_timeout: std::time::Duration,
    /// A request's body must arrive within this: else 408.
    pub body_timeout: std::time::Duration,
    /// A request must be answered within this: else 503.
    pub request_timeout: std::time::Duration,
    /// Open connections at most; more wait to be accepted.
    pub max_connections: usize,
}

/// Where `/admin` is served: a listener of its own (default `127.0.0.1:8081`), or, only when
/// configured as `"public"`, the public one too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    Separate(SocketAddr),
    Public,
}

#[derive(Debug, Clone)]
pub struct Database {
    /// May hold a password: a secret, never in `Debug` (`crate::app::redact_url` for messages).
    pub url: SecretString,
    pub max_connections: u32,
    /// PostgreSQL cancels a statement that runs longer (`statement_timeout`).
    pub statement_timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct Organization {
    pub name: String,
    pub terms_version: String,
    pub min_user_age: u32,
    pub care_end_grace: IsoDuration,
    pub deceased_grace: IsoDuration,
    pub assume_active_care: bool,
}

/// What a new version of an already shown resource does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUpdate {
    /// It waits its own delay; the previous version stays shown meanwhile.
    Delay,
    /// It shows at once.
    Immediate,
}

#[derive(Debug, Clone)]
pub struct Embargo {
    pub default: String,
    pub on_update: OnUpdate,
    pub release_tag: (String, String),
    pub client_may_waive: bool,
    pub waiver_warning: String,
}

/// `[admin]`: the credentials of `/admin`.
#[derive(Debug, Clone)]
pub struct Admin {
    /// `admin.token` (named `admin`) and `[[admin.credentials]]`; the audit names who acted.
    pub credentials: Vec<AdminCredential>,
}

#[derive(Debug, Clone)]
pub struct AdminCredential {
    pub name: String,
    pub token: SecretString,
}

/// Whether a client's `jwks_uri` may be fetched: https, or http on this machine only (where
/// nobody between could swap the keys).
fn jwks_uri_fits(uri: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(uri) else {
        return false;
    };
    match url.scheme() {
        "https" => url.host_str().is_some(),
        "http" => url.host_str().is_some_and(|host| {
            host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
}

/// The fewest characters of a secret of ours (an admin token, a client secret).
pub const MIN_SECRET_CHARS: usize = 16;

/// What makes `secret` unfit: too short, or a placeholder left from an example.
pub fn weak_secret(secret: &str) -> Option<String> {
    let folded: String = secret
        .to_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    const PLACEHOLDERS: [&str; 8] = [
        "changeme",
        "change",
        "placeholder",
        "replaceme",
        "example",
        "yoursecret",
        "yourtoken",
        "xxxxxxxx",
    ];
    if PLACEHOLDERS.iter().any(|p| folded.contains(p)) || secret.contains('…') {
        return Some("is a placeholder: set a secret of your own".into());
    }
    if secret.chars().count() < MIN_SECRET_CHARS {
        return Some(format!(
            "must be at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand -base64 24`)"
        ));
    }
    let mut distinct: Vec<char> = secret.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    let guessable = [
        "password",
        "ssw0rd",
        "ssword",
        "wachtwoord",
        "welkom",
        "zomer",
        "winter",
        "letmein",
        "admin123",
        "qwerty",
        "azerty",
        "asdfgh",
        "qsdfgh",
    ];
    // A run of four or more (abcd, 1234, dcba) anywhere, or a secret that is one half twice.
    let run = folded.as_bytes().windows(4).any(|w| {
        w.windows(2).all(|p| p[1] == p[0].wrapping_add(1))
            || w.windows(2).all(|p| p[1] == p[0].wrapping_sub(1))
    });
    let bytes = secret.as_bytes();
    let halves =
        bytes.len().is_multiple_of(2) && bytes[..bytes.len() / 2] == bytes[bytes.len() / 2..];
    if distinct.len() < 8 || run || halves || guessable.iter().any(|g| folded.contains(g)) {
        return Some(
            "is easy to guess (fewer than 8 different characters, a run such as abcd or 1234, \
             one half twice, or a common password): set a random one (e.g. `openssl rand -base64 24`)"
                .into(),
        );
    }
    None
}

#[derive(Debug, Clone)]
pub struct Dev {
    pub clock_override: bool,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub default_count: u32,
    pub max_count: u32,
    pub user_requests_per_minute: u32,
    /// Requests of one client (`/fhir`, `/portal`, `/ingest`), all its users together.
    pub client_requests_per_minute: u32,
    /// `POST /auth/token` of one client.
    pub token_requests_per_minute: u32,
    /// Requests with one admin credential.
    pub admin_requests_per_minute: u32,
    /// Failed authentications per claimed client and remote address; beyond it even the
    /// right credentials wait.
    pub failed_auth_per_minute: u32,
}

#[derive(Debug, Clone)]
pub struct Auth {
    pub token_lifetime: IsoDuration,
    /// The file of the key that signs access tokens (`None`: a key made at start, known to
    /// this process only).
    pub signing_key: Option<PathBuf>,
    /// Keys that signed before the current one: their tokens are accepted until they expire.
    pub previous_signing_keys: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Portal {
    pub activation_code_lifetime: IsoDuration,
    pub invitation_lifetime: IsoDuration,
}

/// `[messages]`: what a portal user's message may hold (R15).
#[derive(Debug, Clone)]
pub struct Messages {
    /// Characters of text per payload at most.
    pub max_text_chars: usize,
    /// Bytes of one attachment at most (decoded).
    pub max_attachment_bytes: usize,
    /// The content types an attachment may have.
    pub attachment_types: Vec<String>,
    /// How long the organisation has to decide a correction request (R14): at most 30 days.
    pub request_due: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct Mappings {
    /// Folder with `sections.toml` and `embargo.toml`; `None` uses the built-in defaults.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Portal,
    Source,
}

#[derive(Debug, Clone)]
pub enum ClientAuth {
    PrivateKeyJwt { jwks: Jwks },
    ClientSecret { secret: SecretString },
}

/// Where a `private_key_jwt` client's public keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jwks {
    /// A file, read at every token request.
    Path(PathBuf),
    /// The client's own URL (https, or http on loopback), fetched and kept a while.
    Uri(String),
}

#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub kind: ClientKind,
    pub auth: ClientAuth,
    /// With kind `source`: the source it may push to.
    pub source: Option<String>,
    /// `false`: the client gets no token, and the tokens it has are refused from the next
    /// request on (after a restart with the changed config).
    pub enabled: bool,
    /// What it may ever be granted (SMART `system/` scopes; default `system/*.rs system/Communication.c system/Task.c` for a
    /// portal, `system/*.cud` for a source).
    pub scope: crate::auth::Scopes,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub id: String,
    /// `[sources.pull]`: polled by sluis; `None` for a source that pushes.
    pub pull: Option<Pull>,
    /// `[sources.writeback]`: where approved messages and correction requests go; `None`
    /// keeps them in the outbox until it is configured.
    pub writeback: Option<Writeback>,
}

impl Config {
    /// Reads `path`, lays the process environment over it and checks the result.
    pub fn load(path: &Path) -> Result<Config, Problems> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Problems(vec![Problem {
                file: file.clone(),
                key: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::from_toml(&text, &file, std::env::vars())
    }

    /// Parses TOML text named `file`, with `env` laid over it (only `SLUIS__…` names count).
    pub fn from_toml(
        text: &str,
        file: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Problems> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            Problems(vec![Problem {
                file: file.to_string(),
                key: String::new(),
                message: e.to_string().trim().replace('\n', " "),
            }])
        })?;
        let mut root = toml::Value::Table(table);
        let mut origins = Vec::new();
        let mut problems = Vec::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("SLUIS__") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            match apply_override(&mut root, &path, &value) {
                Ok(key) => origins.push((key, name.clone())),
                Err(message) => problems.push(Problem {
                    file: name.clone(),
                    key: path.join("."),
                    message,
                }),
            }
        }
        let origin_of = |key: &str| -> String {
            origins
                .iter()
                .find(|(k, _)| key == k || key.starts_with(&format!("{k}.")))
                .map(|(_, env)| format!("env {env}"))
                .unwrap_or_else(|| file.to_string())
        };
        let raw: RawConfig = match serde_path_to_error::deserialize(root) {
            Ok(raw) => raw,
            Err(e) => {
                let key = e.path().to_string();
                problems.push(Problem {
                    file: origin_of(&key),
                    key: if key == "." { String::new() } else { key },
                    message: e.into_inner().message().trim().to_string(),
                });
                return Err(Problems(problems));
            }
        };
        let config = raw.check(&mut |key: &str, message: String| {
            problems.push(Problem {
                file: origin_of(key),
                key: key.to_string(),
                message,
            })
        });
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(Problems(problems))
        }
    }

    /// The client with this id, if configured.
    /// The enabled client with this id (a disabled one is as unknown).
    pub fn client(&self, id: &str) -> Option<&Client> {
        self.clients.iter().find(|c| c.id == id && c.enabled)
    }

    /// Whether a source with this id is configured.
    pub fn has_source(&self, id: &str) -> bool {
        self.sources.iter().any(|s| s.id == id)
    }
}

/// Sets `path` (e.g. `["clients", "0", "secret"]`) in `table` to `value`, parsed as a TOML
/// value where it is one and the key does not already hold a string. Returns the dotted key.
fn apply_override(root: &mut toml::Value, path: &[String], value: &str) -> Result<String, String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty variable name".into());
    };
    if path.iter().any(|p| p.is_empty()) {
        return Err("empty key segment (three underscores?)".into());
    }
    let mut key = String::new();
    let mut current = root;
    for segment in parents {
        key = join_key(&key, segment);
        current = match current {
            toml::Value::Table(t) => t
                .entry(segment.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new())),
            toml::Value::Array(items) => {
                let index: usize = segment
                    .parse()
                    .map_err(|_| format!("`{segment}` is not an index into the list `{key}`"))?;
                items
                    .get_mut(index)
                    .ok_or_else(|| format!("the list has no entry {index}"))?
            }
            _ => return Err(format!("`{key}` is not a section")),
        };
    }
    key = join_key(&key, last);
    let toml::Value::Table(parent) = current else {
        return Err(format!("`{key}` is not inside a section"));
    };
    let existing_is_string = matches!(parent.get(last), Some(toml::Value::String(_)));
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    let new_value = match parsed {
        Some(v) if !existing_is_string && !matches!(v, toml::Value::Table(_)) => v,
        _ => toml::Value::String(value.to_string()),
    };
    parent.insert(last.clone(), new_value);
    Ok(key)
}

fn join_key(prefix: &str, segment: &str) -> String {
    if prefix.is_empty() {
        segment.to_string()
    } else if segment.chars().all(|c| c.is_ascii_digit()) {
        format!("{prefix}[{segment}]")
    } else {
        format!("{prefix}.{segment}")
    }
}

/// The config as written: every section optional, every key with its documented default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    server: RawServer,
    database: RawDatabase,
    organization: RawOrganization,
    embargo: RawEmbargo,
    admin: RawAdmin,
    dev: RawDev,
    audit: RawAudit,
    limits: RawLimits,
    auth: RawAuth,
    portal: RawPortal,
    messages: RawMessages,
    mappings: RawMappings,
    clients: Vec<RawClient>,
    sources: Vec<RawSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    public_base_url: Option<String>,
    admin_listen: Option<String>,
    trusted_proxies: Vec<String>,
    header_timeout: String,
    body_timeout: String,
    request_timeout: String,
    max_connections: u32,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_base_url: None,
            admin_listen: None,
            trusted_proxies: Vec::new(),
            header_timeout: "PT10S".into(),
            body_timeout: "PT60S".into(),
            request_timeout: "PT120S".into(),
            max_connections: 4096,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDatabase {
    url: String,
    max_connections: u32,
    statement_timeout: String,
}

impl Default for RawDatabase {
    fn default() -> Self {
        Self {
            url: "sqlite://sluis.db".into(),
            max_connections: 8,
            statement_timeout: "PT60S".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOrganization {
    name: String,
    terms_version: String,
    min_user_age: u32,
    care_end_grace: String,
    deceased_grace: String,
    assume_active_care: bool,
}

impl Default for RawOrganization {
    fn default() -> Self {
        Self {
            name: "Zorgcentrum Voorbeeld".into(),
            terms_version: "1".into(),
            min_user_age: 16,
            care_end_grace: "P0D".into(),
            deceased_grace: "P0D".into(),
            assume_active_care: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTag {
    system: String,
    code: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEmbargo {
    default: String,
    on_update: String,
    release_tag: RawTag,
    client_may_waive: bool,
    waiver_warning: String,
}

impl Default for RawEmbargo {
    fn default() -> Self {
        Self {
            default: "P14D".into(),
            on_update: "delay".into(),
            release_tag: RawTag {
                system: "urn:sluis:release".into(),
                code: "explained".into(),
            },
            client_may_waive: false,
            waiver_warning:
                "U kiest ervoor nieuwe gegevens direct te zien, voordat uw zorgverlener \
                 ze met u heeft kunnen bespreken. Sommige uitslagen of verslagen kunnen zonder \
                 toelichting onrustig maken."
                    .into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    #[serde(deserialize_with = "optional_string_like")]
    token: Option<String>,
    credentials: Vec<RawAdminCredential>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdminCredential {
    name: String,
    #[serde(deserialize_with = "string_like")]
    token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAudit {
    retention: String,
    enabled: bool,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            retention: "P5Y".into(),
            enabled: true,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDev {
    clock_override: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_body_bytes: u64,
    default_count: u32,
    max_count: u32,
    user_requests_per_minute: u32,
    client_requests_per_minute: u32,
    token_requests_per_minute: u32,
    admin_requests_per_minute: u32,
    failed_auth_per_minute: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 * 1024 * 1024,
            default_count: 50,
            max_count: 500,
            user_requests_per_minute: 600,
            client_requests_per_minute: 60_000,
            token_requests_per_minute: 60,
            admin_requests_per_minute: 600,
            failed_auth_per_minute: 10,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    token_lifetime: String,
    signing_key: Option<String>,
    previous_signing_keys: Vec<String>,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            token_lifetime: "PT5M".into(),
            signing_key: None,
            previous_signing_keys: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPortal {
    activation_code_lifetime: String,
    invitation_lifetime: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMessages {
    max_text_chars: u32,
    max_attachment_bytes: u64,
    attachment_types: Vec<String>,
    request_due: String,
}

impl Default for RawMessages {
    fn default() -> Self {
        Self {
            max_text_chars: 10_000,
            max_attachment_bytes: 750_000,
            attachment_types: vec![
                "application/pdf".into(),
                "image/jpeg".into(),
                "image/png".into(),
            ],
            request_due: "P30D".into(),
        }
    }
}

impl Default for RawPortal {
    fn default() -> Self {
        Self {
            activation_code_lifetime: "P6W".into(),
            invitation_lifetime: "P6W".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMappings {
    dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    id: String,
    kind: String,
    auth: String,
    #[serde(default)]
    jwks_path: Option<String>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default, deserialize_with = "optional_string_like")]
    secret: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default = "enabled")]
    enabled: bool,
    #[serde(default)]
    scope: Option<String>,
}

fn enabled() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct RawSource {
    id: String,
    #[serde(default)]
    pull: Option<pull::RawPull>,
    #[serde(default)]
    writeback: Option<pull::RawWriteback>,
}

/// A string, also when an environment override made it look like a number.
fn string_like<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum S {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(match S::deserialize(d)? {
        S::Text(s) => s,
        S::Int(i) => i.to_string(),
        S::Float(f) => f.to_string(),
        S::Bool(b) => b.to_string(),
    })
}

fn optional_string_like<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    string_like(d).map(Some)
}

impl RawConfig {
    /// Checks every value, reporting each problem through `report(key, message)`.
    fn check(self, report: &mut dyn FnMut(&str, String)) -> Config {
        let duration = |key: &str, text: &str, report: &mut dyn FnMut(&str, String)| {
            text.parse::<IsoDuration>().unwrap_or_else(|e| {
                report(key, e.to_string());
                IsoDuration::default()
            })
        };
        let timeout = |key: &str, text: &str, report: &mut dyn FnMut(&str, String)| {
            let fallback = std::time::Duration::from_secs(60);
            match text.parse::<IsoDuration>() {
                Ok(d) => match d.fixed() {
                    Some(t) if !t.is_zero() => t,
                    _ => {
                        report(
                            key,
                            format!(
                                "`{text}` must be a duration of days, hours, minutes or seconds above zero, e.g. PT30S"
                            ),
                        );
                        fallback
                    }
                },
                Err(e) => {
                    report(key, e.to_string());
                    fallback
                }
            }
        };
        let addr = |key: &str, text: &str, report: &mut dyn FnMut(&str, String)| {
            text.parse::<SocketAddr>().map_err(|_| {
                report(
                    key,
                    format!("`{text}` is not a socket address such as 127.0.0.1:8080"),
                )
            })
        };

        let listen = addr("server.listen", &self.server.listen, report)
            .unwrap_or_else(|()| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let admin_listen = match self.server.admin_listen.as_deref() {
            None => AdminListen::Separate(SocketAddr::from(([127, 0, 0, 1], 8081))),
            Some("public") => AdminListen::Public,
            Some(a) => addr("server.admin_listen", a, report)
                .map(AdminListen::Separate)
                .unwrap_or(AdminListen::Public),
        };
        if admin_listen == AdminListen::Separate(listen) {
            report(
                "server.admin_listen",
                "is server.listen: give /admin an address of its own, or \"public\" to serve it there"
                    .into(),
            );
        }
        let mut trusted_proxies = Vec::new();
        for (i, text) in self.server.trusted_proxies.iter().enumerate() {
            match text.parse::<std::net::IpAddr>() {
                Ok(ip) => trusted_proxies.push(ip),
                Err(_) => report(
                    &format!("server.trusted_proxies[{i}]"),
                    format!("`{text}` is not an IP address such as 10.0.0.2"),
                ),
            }
        }
        let public_base_url = self
            .server
            .public_base_url
            .unwrap_or_else(|| format!("http://{listen}"));
        if !(public_base_url.starts_with("http://") || public_base_url.starts_with("https://")) {
            report(
                "server.public_base_url",
                format!("`{public_base_url}` must start with http:// or https://"),
            );
        }
        let public_base_url = public_base_url.trim_end_matches('/').to_string();

        let url = self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            report(
                "database.url",
                format!("`{url}` must start with sqlite: or postgres://"),
            );
        } else if url.starts_with("sqlite:") {
            // The adapter opens several connections to one file; options are not read.
            let file = crate::store::sqlite::file_of(&url);
            if file.is_empty() || file == ":memory:" || url.contains('?') {
                report(
                    "database.url",
                    format!(
                        "`{url}` must name a database file, without options (e.g. sqlite://sluis.db)"
                    ),
                );
            }
        }
        if self.server.max_connections == 0 {
            report("server.max_connections", "must be at least 1".into());
        }
        if self.database.max_connections == 0 {
            report("database.max_connections", "must be at least 1".into());
        }

        let o = self.organization;
        if o.terms_version.trim().is_empty() {
            report("organization.terms_version", "must not be empty".into());
        }
        let organization = Organization {
            name: o.name,
            terms_version: o.terms_version,
            min_user_age: o.min_user_age,
            care_end_grace: duration("organization.care_end_grace", &o.care_end_grace, report),
            deceased_grace: duration("organization.deceased_grace", &o.deceased_grace, report),
            assume_active_care: o.assume_active_care,
        };

        let e = self.embargo;
        let on_update = match e.on_update.as_str() {
            "delay" => OnUpdate::Delay,
            "immediate" => OnUpdate::Immediate,
            other => {
                report(
                    "embargo.on_update",
                    format!("`{other}` is not one of \"delay\", \"immediate\""),
                );
                OnUpdate::Delay
            }
        };
        if let Err(message) = crate::mapping::embargo::check_rule_text(&e.default) {
            report("embargo.default", message);
        }
        let embargo = Embargo {
            default: e.default,
            on_update,
            release_tag: (e.release_tag.system, e.release_tag.code),
            client_may_waive: e.client_may_waive,
            waiver_warning: e.waiver_warning,
        };

        // `admin.token` is the credential named `admin`; `[[admin.credentials]]` name more.
        let mut admins: Vec<AdminCredential> = Vec::new();
        if let Some(token) = self.admin.token {
            if let Some(problem) = weak_secret(&token) {
                report(
                    "admin.token",
                    format!("{problem} (use SLUIS__ADMIN__TOKEN)"),
                );
            }
            admins.push(AdminCredential {
                name: "admin".into(),
                token: SecretString::from(token),
            });
        }
        for (i, c) in self.admin.credentials.into_iter().enumerate() {
            let key = |k: &str| format!("admin.credentials[{i}].{k}");
            if !is_source_id(&c.name.replace('.', "_")) {
                report(
                    &key("name"),
                    format!("`{}` must be 1-64 letters, digits, '.', '-' or '_'", c.name),
                );
            }
            if admins.iter().any(|a| a.name == c.name) {
                report(&key("name"), format!("`{}` is used twice", c.name));
            }
            if let Some(problem) = weak_secret(&c.token) {
                report(
                    &key("token"),
                    format!("{problem} (use SLUIS__ADMIN__CREDENTIALS__{i}__TOKEN)"),
                );
            }
            if admins
                .iter()
                .any(|a| secrecy::ExposeSecret::expose_secret(&a.token) == c.token.as_str())
            {
                report(
                    &key("token"),
                    "is another credential's token: each must be its own".into(),
                );
            }
            admins.push(AdminCredential {
                name: c.name,
                token: SecretString::from(c.token),
            });
        }
        if admins.is_empty() {
            report(
                "admin.token",
                "must be set, or [[admin.credentials]] given (use SLUIS__ADMIN__TOKEN)".into(),
            );
        }

        let l = self.limits;
        if l.max_body_bytes < 1024 {
            report("limits.max_body_bytes", "must be at least 1024".into());
        }
        if l.default_count == 0 || l.default_count > l.max_count {
            report(
                "limits.default_count",
                format!("must be between 1 and limits.max_count ({})", l.max_count),
            );
        }
        for (key, value) in [
            ("user_requests_per_minute", l.user_requests_per_minute),
            ("client_requests_per_minute", l.client_requests_per_minute),
            ("token_requests_per_minute", l.token_requests_per_minute),
            ("admin_requests_per_minute", l.admin_requests_per_minute),
            ("failed_auth_per_minute", l.failed_auth_per_minute),
        ] {
            if value == 0 {
                report(&format!("limits.{key}"), "must be at least 1".into());
            }
        }

        let mut clients = Vec::new();
        for (i, c) in self.clients.into_iter().enumerate() {
            let key = |k: &str| format!("clients[{i}].{k}");
            // Ids name clients in the audit and the limits: plain, and never `admin` (the
            // audit's name for staff).
            if !is_source_id(&c.id.replace('.', "_"))
                || !c.id.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            {
                report(
                    &key("id"),
                    format!("`{}` must be 1-64 letters, digits, '.', '-' or '_'", c.id),
                );
            } else if c.id.eq_ignore_ascii_case("admin") {
                report(&key("id"), "`admin` is reserved for staff".into());
            }
            if clients.iter().any(|x: &Client| x.id == c.id) {
                report(&key("id"), format!("`{}` is used twice", c.id));
            }
            let kind = match c.kind.as_str() {
                "portal" => ClientKind::Portal,
                "source" => ClientKind::Source,
                other => {
                    report(
                        &key("kind"),
                        format!("`{other}` is not one of \"portal\", \"source\""),
                    );
                    ClientKind::Portal
                }
            };
            let jwks = match (c.jwks_path, c.jwks_uri) {
                (Some(path), None) => Some(Jwks::Path(PathBuf::from(path))),
                (None, Some(uri)) => {
                    if !jwks_uri_fits(&uri) {
                        report(
                            &key("jwks_uri"),
                            format!(
                                "`{uri}` must be an https:// URL (http:// only to 127.0.0.1, ::1 or localhost)"
                            ),
                        );
                    }
                    Some(Jwks::Uri(uri))
                }
                (Some(_), Some(_)) => {
                    report(
                        &key("jwks_uri"),
                        "give jwks_path or jwks_uri, not both".into(),
                    );
                    None
                }
                (None, None) => None,
            };
            let auth = match (c.auth.as_str(), jwks, c.secret) {
                ("private_key_jwt", Some(jwks), _) => ClientAuth::PrivateKeyJwt { jwks },
                ("private_key_jwt", None, _) => {
                    report(
                        &key("jwks_path"),
                        "jwks_path or jwks_uri is required with auth = \"private_key_jwt\"".into(),
                    );
                    ClientAuth::ClientSecret {
                        secret: SecretString::from(""),
                    }
                }
                ("client_secret", _, Some(secret)) if weak_secret(&secret).is_none() => {
                    ClientAuth::ClientSecret {
                        secret: SecretString::from(secret),
                    }
                }
                ("client_secret", _, secret) => {
                    let problem = secret
                        .as_deref()
                        .and_then(weak_secret)
                        .unwrap_or_else(|| "required with auth = \"client_secret\"".into());
                    report(
                        &key("secret"),
                        format!("{problem} (use SLUIS__CLIENTS__{i}__SECRET)"),
                    );
                    ClientAuth::ClientSecret {
                        secret: SecretString::from(""),
                    }
                }
                (other, _, _) => {
                    report(
                        &key("auth"),
                        format!("`{other}` is not one of \"private_key_jwt\", \"client_secret\""),
                    );
                    ClientAuth::ClientSecret {
                        secret: SecretString::from(""),
                    }
                }
            };
            match (kind, &c.source) {
                (ClientKind::Source, None) => {
                    report(&key("source"), "required with kind = \"source\"".into())
                }
                (ClientKind::Source, Some(s)) if !self.sources.iter().any(|x| &x.id == s) => {
                    report(&key("source"), format!("no [[sources]] entry has id `{s}`"))
                }
                (ClientKind::Portal, Some(_)) => report(
                    &key("source"),
                    "only clients of kind \"source\" have a source".into(),
                ),
                _ => {}
            }
            let scope = c.scope.unwrap_or_else(|| {
                match kind {
                    ClientKind::Portal => "system/*.rs system/Communication.c system/Task.c",
                    ClientKind::Source => "system/*.cud",
                }
                .into()
            });
            let scope = crate::auth::Scopes::parse(&scope).unwrap_or_else(|problem| {
                report(&key("scope"), problem);
                crate::auth::Scopes::default()
            });
            if let ClientAuth::ClientSecret { secret } = &auth {
                let secret = secrecy::ExposeSecret::expose_secret(secret);
                let shared = !secret.is_empty()
                    && (admins
                        .iter()
                        .any(|a| secrecy::ExposeSecret::expose_secret(&a.token) == secret)
                        || clients.iter().any(|x: &Client| {
                            matches!(&x.auth, ClientAuth::ClientSecret { secret: other }
                                if secrecy::ExposeSecret::expose_secret(other) == secret)
                        }));
                if shared {
                    report(
                        &key("secret"),
                        "is another client's secret or an admin token: each must be its own".into(),
                    );
                }
            }
            clients.push(Client {
                id: c.id,
                kind,
                auth,
                source: c.source,
                enabled: c.enabled,
                scope,
            });
        }
        let mut sources: Vec<Source> = Vec::new();
        for (i, s) in self.sources.into_iter().enumerate() {
            if !is_source_id(&s.id) {
                report(
                    &format!("sources[{i}].id"),
                    format!("`{}` must be letters, digits, '-' or '_'", s.id),
                );
            }
            if sources.iter().any(|x| x.id == s.id) {
                report(
                    &format!("sources[{i}].id"),
                    format!("`{}` is used twice", s.id),
                );
            }
            let pull = s
                .pull
                .map(|p| p.check(&format!("sources[{i}].pull"), report));
            let writeback = s
                .writeback
                .map(|w| w.check(&format!("sources[{i}].writeback"), report));
            sources.push(Source {
                id: s.id.clone(),
                pull,
                writeback,
            });
        }

        Config {
            server: Server {
                listen,
                public_base_url,
                admin_listen,
                trusted_proxies,
                header_timeout: timeout(
                    "server.header_timeout",
                    &self.server.header_timeout,
                    report,
                ),
                body_timeout: timeout("server.body_timeout", &self.server.body_timeout, report),
                request_timeout: timeout(
                    "server.request_timeout",
                    &self.server.request_timeout,
                    report,
                ),
                max_connections: self.server.max_connections.max(1) as usize,
            },
            database: Database {
                url: SecretString::from(url),
                max_connections: self.database.max_connections.max(1),
                statement_timeout: timeout(
                    "database.statement_timeout",
                    &self.database.statement_timeout,
                    report,
                ),
            },
            organization,
            embargo,
            admin: Admin {
                credentials: admins,
            },
            dev: Dev {
                clock_override: self.dev.clock_override,
            },
            audit: Audit {
                retention: {
                    let retention = duration("audit.retention", &self.audit.retention, report);
                    // Five years from any moment: from every day of a four-year cycle (month
                    // ends and leap days make `P4Y11M30D` as long from some days, shorter
                    // from others).
                    let cycle_start =
                        chrono::DateTime::from_timestamp(946_684_800, 0).unwrap_or_default();
                    let short = (0..1461).any(|day| {
                        let start = cycle_start + chrono::TimeDelta::days(day);
                        retention.after(start) < IsoDuration::years(5).after(start)
                    });
                    if short {
                        report(
                            "audit.retention",
                            format!(
                                "`{}` is less than five years (NEN 7513, R18): at least P5Y",
                                self.audit.retention
                            ),
                        );
                    }
                    retention
                },
                enabled: self.audit.enabled,
            },
            limits: Limits {
                max_body_bytes: usize::try_from(l.max_body_bytes).unwrap_or(usize::MAX),
                default_count: l.default_count,
                max_count: l.max_count,
                user_requests_per_minute: l.user_requests_per_minute,
                client_requests_per_minute: l.client_requests_per_minute,
                token_requests_per_minute: l.token_requests_per_minute,
                admin_requests_per_minute: l.admin_requests_per_minute,
                failed_auth_per_minute: l.failed_auth_per_minute,
            },
            auth: Auth {
                token_lifetime: duration("auth.token_lifetime", &self.auth.token_lifetime, report),
                signing_key: self.auth.signing_key.map(PathBuf::from),
                previous_signing_keys: self
                    .auth
                    .previous_signing_keys
                    .into_iter()
                    .map(PathBuf::from)
                    .collect(),
            },
            portal: Portal {
                activation_code_lifetime: duration(
                    "portal.activation_code_lifetime",
                    &self.portal.activation_code_lifetime,
                    report,
                ),
                invitation_lifetime: duration(
                    "portal.invitation_lifetime",
                    &self.portal.invitation_lifetime,
                    report,
                ),
            },
            messages: {
                let m = self.messages;
                if m.max_text_chars == 0 {
                    report("messages.max_text_chars", "must be at least 1".into());
                }
                // An attachment is stored as base64 text, which the store keeps up to 1 MB.
                if m.max_attachment_bytes > 786_000 {
                    report(
                        "messages.max_attachment_bytes",
                        "at most 786000 (1 MB of base64, what a stored value may hold)".into(),
                    );
                }
                const MONTH: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);
                let request_due = match m
                    .request_due
                    .parse::<IsoDuration>()
                    .ok()
                    .and_then(|d| d.fixed())
                {
                    Some(d) if !d.is_zero() && d <= MONTH => d,
                    Some(d) if d > MONTH => {
                        report(
                            "messages.request_due",
                            format!(
                                "`{}` is more than P30D: R14 gives the organisation at most 30 days",
                                m.request_due
                            ),
                        );
                        MONTH
                    }
                    _ => {
                        report(
                            "messages.request_due",
                            format!(
                                "`{}` is not a duration in days or hours from PT1H to P30D (months are refused: they are not all 30 days)",
                                m.request_due
                            ),
                        );
                        MONTH
                    }
                };
                Messages {
                    request_due,
                    max_text_chars: m.max_text_chars as usize,
                    max_attachment_bytes: usize::try_from(m.max_attachment_bytes)
                        .unwrap_or(usize::MAX),
                    attachment_types: m.attachment_types,
                }
            },
            mappings: Mappings {
                dir: self.mappings.dir.map(PathBuf::from),
            },
            clients,
            sources,
        }
    }
}

/// Source ids appear in URLs (`/ingest/{source}`): keep them plain.
pub fn is_source_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[admin]
token = "a-long-admin-token"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, Problems> {
        Config::from_toml(
            text,
            "test.toml",
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_fill_what_is_not_written() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.limits.max_count, 500);
        assert_eq!(c.embargo.on_update, OnUpdate::Delay);
        assert_eq!(c.server.public_base_url, "http://127.0.0.1:8080");
    }

    #[test]
    fn every_problem_is_named_with_file_and_key() {
        let text = r#"
[admin]
token = "short"
[embargo]
on_update = "later"
[organization]
care_end_grace = "seven days"
[[clients]]
id = "caren"
kind = "portal"
auth = "client_secret"
"#;
        let problems = load(text, &[]).unwrap_err().0;
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"admin.token"), "{keys:?}");
        assert!(keys.contains(&"embargo.on_update"), "{keys:?}");
        assert!(keys.contains(&"organization.care_end_grace"), "{keys:?}");
        assert!(keys.contains(&"clients[0].secret"), "{keys:?}");
        assert!(problems.iter().all(|p| p.file == "test.toml"));
    }

    #[test]
    fn access_tokens_are_short_lived_by_default() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(
            c.auth.token_lifetime.fixed(),
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(c.auth.signing_key, None);
        assert!(c.clients.iter().all(|c| c.enabled));
    }

    #[test]
    fn audit_retention_is_at_least_five_years() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.audit.retention, IsoDuration::years(5));
        for good in ["P5Y", "P10Y", "P60M", "P1827D"] {
            let text = format!("{MINIMAL}[audit]\nretention = \"{good}\"\n");
            assert!(load(&text, &[]).is_ok(), "{good}");
        }
        for bad in [
            "P4Y",
            "P59M",
            "P1000D",
            "PT1H",
            "forever",
            "P4Y11M30D",
            "P1826D",
        ] {
            let text = format!("{MINIMAL}[audit]\nretention = \"{bad}\"\n");
            let problems = load(&text, &[]).unwrap_err().0;
            assert_eq!(problems[0].key, "audit.retention", "{bad}: {problems:?}");
        }
    }

    #[test]
    fn bad_pull_values_are_each_named() {
        let text = format!(
            r#"{MINIMAL}
[[sources]]
id = "ehr"
[sources.pull]
base_url = "ftp://ehr.test/fhir"
resource_types = ["Observation", "Obsrvation"]
interval = "PT0S"
page_size = 0
overlap = "PT0S"
timeout = "soon"
lease = "PT1S"
max_retries = 99
auth = {{ method = "private_key_jwt", token_url = "ehr.test/token", alg = "HS256" }}
"#
        );
        let problems = load(&text, &[]).unwrap_err().0;
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "sources[0].pull.base_url",
            "sources[0].pull.resource_types[1]",
            "sources[0].pull.interval",
            "sources[0].pull.page_size",
            "sources[0].pull.overlap",
            "sources[0].pull.timeout",
            "sources[0].pull.lease",
            "sources[0].pull.max_retries",
            "sources[0].pull.auth.token_url",
            "sources[0].pull.auth.client_id",
            "sources[0].pull.auth.key_path",
            "sources[0].pull.auth.alg",
        ] {
            assert!(keys.contains(&key), "{key} not in {keys:?}");
        }
        for (auth, key) in [
            (r#"{ method = "password" }"#, "sources[0].pull.auth.method"),
            (
                r#"{ method = "client_secret", token_url = "https://u:pw@t", client_id = "c", secret = "s" }"#,
                "sources[0].pull.auth.token_url",
            ),
            (
                r#"{ method = "client_secret", token_url = "https://t", client_id = "c" }"#,
                "sources[0].pull.auth.secret",
            ),
        ] {
            let text = format!(
                "{MINIMAL}[[sources]]\nid = \"ehr\"\n[sources.pull]\nbase_url = \"https://ehr.test\"\nresource_types = [\"Patient\"]\nauth = {auth}\n"
            );
            let problems = load(&text, &[]).unwrap_err().0;
            assert_eq!(problems[0].key, key, "{problems:?}");
        }
        // Credentials in the URL, unknown keys and no types at all.
        let text = format!(
            "{MINIMAL}[[sources]]\nid = \"ehr\"\n[sources.pull]\nbase_url = \"https://u:PW@ehr.test/fhir\"\nresource_types = [\"Patient\"]\n"
        );
        let problems = load(&text, &[]).unwrap_err().0;
        assert_eq!(problems[0].key, "sources[0].pull.base_url");
        assert!(!problems[0].message.contains("PW"), "{problems:?}");
        let text = format!(
            "{MINIMAL}[[sources]]\nid = \"ehr\"\n[sources.pull]\nbase_url = \"https://ehr.test\"\nresource_types = []\n"
        );
        let problems = load(&text, &[]).unwrap_err().0;
        assert_eq!(problems[0].key, "sources[0].pull.resource_types");
        let text = format!(
            "{MINIMAL}[[sources]]\nid = \"ehr\"\n[sources.pull]\nbase_url = \"https://ehr.test\"\nresource_types = [\"Patient\"]\nintervall = \"PT1M\"\n"
        );
        let problems = load(&text, &[]).unwrap_err().0;
        assert!(problems[0].message.contains("intervall"), "{problems:?}");
    }

    #[test]
    fn the_examples_pull_block_loads_when_uncommented() {
        const EXAMPLE: &str = include_str!("../../config/example.toml");
        let start = EXAMPLE.find("# [sources.pull]").unwrap();
        let end = EXAMPLE.find("# [sources.writeback]").unwrap();
        let block: String = EXAMPLE[start..end]
            .lines()
            .filter(|l| !l.starts_with("#  "))
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        let text = format!("{MINIMAL}[[sources]]\nid = \"ons\"\n{block}");
        let c = load(&text, &[("SLUIS__SOURCES__0__PULL__INTERVAL", "PT5M")])
            .unwrap_or_else(|p| panic!("{p}\n{text}"));
        let pull = c.sources[0].pull.as_ref().unwrap();
        assert_eq!(pull.base_url, "https://ehr.example.org/fhir");
        assert_eq!(pull.interval, std::time::Duration::from_secs(300));
        assert_eq!(pull.page_size, 200);
        assert!(pull.sort && !pull.history);
        assert!(matches!(
            &pull.auth,
            PullAuth::PrivateKeyJwt { alg: KeyAlg::Rs384, kid: Some(k), .. } if k == "sluis-2026"
        ));
        // The client secret from the environment, into the inline table.
        let text = format!(
            "{MINIMAL}[[sources]]\nid = \"ons\"\n[sources.pull]\nbase_url = \"https://ehr.test\"\nresource_types = [\"Patient\"]\nauth = {{ method = \"client_secret\", token_url = \"https://t\", client_id = \"c\" }}\n"
        );
        let c = load(
            &text,
            &[("SLUIS__SOURCES__0__PULL__AUTH__SECRET", "s3cret-from-env")],
        )
        .unwrap_or_else(|p| panic!("{p}"));
        use secrecy::ExposeSecret;
        assert!(matches!(
            &c.sources[0].pull.as_ref().unwrap().auth,
            PullAuth::ClientSecret { secret, .. } if secret.expose_secret() == "s3cret-from-env"
        ));
    }

    #[test]
    fn a_sqlite_url_must_name_a_file_without_options() {
        for url in [
            "sqlite::memory:",
            "sqlite://",
            "sqlite://sluis.db?mode=ro",
            "mysql://x",
        ] {
            let text = format!("{MINIMAL}[database]\nurl = \"{url}\"\n");
            let problems = load(&text, &[]).unwrap_err().0;
            assert_eq!(problems[0].key, "database.url", "{url}: {problems:?}");
        }
        for url in [
            "sqlite://sluis.db",
            "sqlite:data/sluis.db",
            "sqlite:///var/lib/sluis.db",
        ] {
            let text = format!("{MINIMAL}[database]\nurl = \"{url}\"\n");
            assert!(load(&text, &[]).is_ok(), "{url}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_their_place() {
        let problems = load("[limits]\nmax_cuont = 3\n", &[]).unwrap_err().0;
        assert_eq!(problems[0].key, "limits.max_cuont");
        assert!(
            problems[0].message.contains("unknown field"),
            "{problems:?}"
        );
    }

    #[test]
    fn environment_overrides_win_and_are_named_as_origin() {
        let text = r#"
[admin]
token = "a-long-admin-token"
[[sources]]
id = "ons"
[[clients]]
id = "ons-push"
kind = "source"
auth = "client_secret"
source = "ons"
"#;
        let c = load(
            text,
            &[
                ("SLUIS__LIMITS__MAX_COUNT", "100"),
                ("SLUIS__CLIENTS__0__SECRET", "a-secret-from-the-env"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.limits.max_count, 100);
        match &c.clients[0].auth {
            ClientAuth::ClientSecret { secret } => {
                assert_eq!(
                    secrecy::ExposeSecret::expose_secret(secret),
                    "a-secret-from-the-env"
                )
            }
            other => panic!("{other:?}"),
        }
        let problems = load(MINIMAL, &[("SLUIS__EMBARGO__ON_UPDATE", "soon")])
            .unwrap_err()
            .0;
        assert_eq!(problems[0].file, "env SLUIS__EMBARGO__ON_UPDATE");
        assert_eq!(problems[0].key, "embargo.on_update");
    }

    #[test]
    fn broken_toml_is_reported_with_the_file() {
        let problems = load("[admin\ntoken=", &[]).unwrap_err().0;
        assert_eq!(problems[0].file, "test.toml");
    }
}

#[cfg(test)]
mod example {
    use super::*;

    const EXAMPLE: &str = include_str!("../../config/example.toml");

    /// The example's secrets are placeholders: an operator sets them from the environment.
    fn secrets() -> impl Iterator<Item = (String, String)> {
        [
            ("SLUIS__ADMIN__TOKEN", "an-admin-token-of-our-own"),
            ("SLUIS__CLIENTS__0__SECRET", "a-portal-secret-of-its-own"),
            ("SLUIS__CLIENTS__1__SECRET", "a-source-secret-of-its-own"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
    }

    #[test]
    fn the_examples_placeholder_secrets_are_refused() {
        let problems = Config::from_toml(EXAMPLE, "config/example.toml", std::iter::empty())
            .unwrap_err()
            .0;
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["admin.token", "clients[0].secret", "clients[1].secret"],
            "{problems:?}"
        );
        assert!(problems.iter().all(|p| p.message.contains("placeholder")));
    }

    #[test]
    fn the_example_loads_and_documents_every_key() {
        let config = Config::from_toml(EXAMPLE, "config/example.toml", secrets())
            .unwrap_or_else(|p| panic!("{p}"));
        assert_eq!(config.clients.len(), 2);
        let keys = [
            "listen",
            "public_base_url",
            "admin_listen",
            "header_timeout",
            "body_timeout",
            "request_timeout",
            "url",
            "max_connections",
            "statement_timeout",
            "name",
            "terms_version",
            "min_user_age",
            "care_end_grace",
            "deceased_grace",
            "assume_active_care",
            "default",
            "on_update",
            "release_tag",
            "client_may_waive",
            "waiver_warning",
            "token",
            "clock_override",
            "max_body_bytes",
            "default_count",
            "max_count",
            "trusted_proxies",
            "user_requests_per_minute",
            "client_requests_per_minute",
            "token_requests_per_minute",
            "admin_requests_per_minute",
            "failed_auth_per_minute",
            "token_lifetime",
            "signing_key",
            "previous_signing_keys",
            "activation_code_lifetime",
            "invitation_lifetime",
            "max_text_chars",
            "max_attachment_bytes",
            "attachment_types",
            "dir",
            "id",
            "kind",
            "auth",
            "secret",
            "jwks_path",
            "jwks_uri",
            "source",
            "retention",
            "base_url",
            "resource_types",
            "interval",
            "page_size",
            "overlap",
            "sort",
            "history",
            "max_retries",
            "timeout",
            "lease",
            "method",
            "token_url",
            "client_id",
            "key_path",
            "kid",
            "alg",
            "scope",
        ];
        for key in keys {
            assert!(
                EXAMPLE.contains(&format!("{key} =")),
                "config/example.toml does not document `{key}`"
            );
        }
    }

    #[test]
    fn debug_of_the_config_prints_no_secret() {
        let config = Config::from_toml(
            EXAMPLE,
            "config/example.toml",
            [
                ("SLUIS__ADMIN__TOKEN", "admin-token-sesame"),
                (
                    "SLUIS__DATABASE__URL",
                    "postgres://sluis:db-password-sesame@db/sluis",
                ),
                ("SLUIS__CLIENTS__0__SECRET", "another-secret-sesame"),
                ("SLUIS__CLIENTS__1__SECRET", "client-secret-sesame"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap_or_else(|p| panic!("{p}"));
        use secrecy::ExposeSecret;
        assert_eq!(
            config.admin.credentials[0].token.expose_secret(),
            "admin-token-sesame"
        );
        assert!(
            config
                .database
                .url
                .expose_secret()
                .contains("db-password-sesame")
        );
        assert!(matches!(&config.clients[1].auth,
            ClientAuth::ClientSecret { secret } if secret.expose_secret() == "client-secret-sesame"));
        let printed = format!("{config:?} {config:#?}");
        assert!(printed.contains("public_base_url"), "{printed}");
        for secret in [
            "admin-token-sesame",
            "db-password-sesame",
            "client-secret-sesame",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
    }

    #[test]
    fn the_demo_config_loads() {
        Config::from_toml(
            crate::demo::DEMO_CONFIG,
            "config/demo.toml",
            std::iter::empty(),
        )
        .unwrap_or_else(|p| panic!("{p}"));
    }
}
