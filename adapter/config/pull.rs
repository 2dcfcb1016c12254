//! `[sources.pull]`: how sluis polls a record system's FHIR API (contract §2), as written and
//! as checked. Secrets (a client secret) are kept in types that `Debug` never prints.

use super::IsoDuration;
use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[sources.pull]` as written; every key but `base_url` and `resource_types` has a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPull {
    base_url: String,
    resource_types: Vec<String>,
    #[serde(default = "default_interval")]
    interval: String,
    #[serde(default = "default_page_size")]
    page_size: u32,
    /// How far back each poll reaches before the last `meta.lastUpdated` it saw.
    #[serde(default = "default_overlap")]
    overlap: String,
    /// Whether the source sorts by `_lastUpdated` (`_sort=_lastUpdated` is sent).
    #[serde(default = "yes")]
    sort: bool,
    /// Whether deletions are read from `{type}/_history?_since=`.
    #[serde(default)]
    history: bool,
    #[serde(default = "default_retries")]
    max_retries: u32,
    #[serde(default = "default_timeout")]
    timeout: String,
    /// How long a process's claim on pulling this source lasts without renewal (it renews a
    /// third of the way): how soon another process takes over when one dies.
    #[serde(default = "default_lease")]
    lease: String,
    #[serde(default)]
    auth: Option<RawAuth>,
}

fn default_interval() -> String {
    "PT1M".into()
}
fn default_page_size() -> u32 {
    200
}
fn default_overlap() -> String {
    "PT1M".into()
}
fn yes() -> bool {
    true
}
fn default_retries() -> u32 {
    6
}
fn default_timeout() -> String {
    "PT30S".into()
}
fn default_lease() -> String {
    "PT60S".into()
}

/// `auth = { method = "…", … }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    method: String,
    token_url: Option<String>,
    client_id: Option<String>,
    #[serde(default, deserialize_with = "super::optional_string_like")]
    secret: Option<String>,
    key_path: Option<String>,
    kid: Option<String>,
    /// `RS384` (default) or `ES384`.
    alg: Option<String>,
    scope: Option<String>,
}

/// `[sources.writeback]` as written: where approved messages and correction requests go
/// (issue 23); every key but `base_url` has a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWriteback {
    base_url: String,
    #[serde(default = "default_timeout")]
    timeout: String,
    /// The wait before the first retry; it doubles per try, with jitter, up to `max_backoff`.
    #[serde(default = "default_backoff")]
    backoff: String,
    #[serde(default = "default_max_backoff")]
    max_backoff: String,
    /// How long a process's claim on an item lasts: another process delivers it only after.
    #[serde(default = "default_lease")]
    lease: String,
    #[serde(default)]
    auth: Option<RawAuth>,
}

fn default_backoff() -> String {
    "PT5S".into()
}
fn default_max_backoff() -> String {
    "PT15M".into()
}

/// Where a source takes what the portal sends back to the care team.
#[derive(Debug, Clone)]
pub struct Writeback {
    /// Without a trailing slash.
    pub base_url: String,
    pub timeout: Duration,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub lease: Duration,
    pub auth: PullAuth,
}

fn parse_duration(key: &str, text: &str, report: &mut dyn FnMut(&str, String)) -> Duration {
    match text.parse::<IsoDuration>().ok().and_then(|d| d.fixed()) {
        Some(d) => d,
        None => {
            report(
                key,
                format!("`{text}` is not a duration of days, hours, minutes or seconds, e.g. PT1M"),
            );
            Duration::from_secs(60)
        }
    }
}

fn check_base_url(key: &str, url: &str, report: &mut dyn FnMut(&str, String)) {
    if !http_url(url) {
        report(
            &format!("{key}.base_url"),
            format!("`{url}` must start with http:// or https://"),
        );
    } else if credentials_in(url) {
        report(
            &format!("{key}.base_url"),
            "must not hold a user or password: put credentials in `auth`".into(),
        );
    }
}

impl RawWriteback {
    /// Checks the values, reporting each problem under `key` (`sources[0].writeback`).
    pub(super) fn check(self, key: &str, report: &mut dyn FnMut(&str, String)) -> Writeback {
        let timeout = parse_duration(&format!("{key}.timeout"), &self.timeout, report);
        let backoff = parse_duration(&format!("{key}.backoff"), &self.backoff, report);
        let max_backoff = parse_duration(&format!("{key}.max_backoff"), &self.max_backoff, report);
        let lease = parse_duration(&format!("{key}.lease"), &self.lease, report);
        if timeout.is_zero() {
            report(&format!("{key}.timeout"), "must be above zero".into());
        }
        if backoff.is_zero() {
            report(&format!("{key}.backoff"), "must be above zero".into());
        }
        if max_backoff < backoff {
            report(
                &format!("{key}.max_backoff"),
                "must not be shorter than `backoff`".into(),
            );
        }
        if lease <= timeout {
            report(
                &format!("{key}.lease"),
                "must be longer than `timeout`: a delivery under way must not be taken over".into(),
            );
        }
        check_base_url(key, &self.base_url, report);
        let auth = match self.auth {
            None => PullAuth::None,
            Some(a) => a.check(&format!("{key}.auth"), report),
        };
        Writeback {
            base_url: self.base_url.trim_end_matches('/').to_string(),
            timeout,
            backoff,
            max_backoff,
            lease,
            auth,
        }
    }
}

/// How a source is polled.
#[derive(Debug, Clone)]
pub struct Pull {
    /// Without a trailing slash.
    pub base_url: String,
    pub resource_types: Vec<String>,
    pub interval: Duration,
    pub page_size: u32,
    pub overlap: Duration,
    pub sort: bool,
    pub history: bool,
    pub max_retries: u32,
    pub timeout: Duration,
    pub lease: Duration,
    pub auth: PullAuth,
}

/// How sluis authenticates to the source.
#[derive(Debug, Clone)]
pub enum PullAuth {
    None,
    /// OAuth2 client credentials with a client secret.
    ClientSecret {
        token_url: String,
        client_id: String,
        secret: SecretString,
        scope: Option<String>,
    },
    /// SMART Backend Services: a JWT signed with our key (`private_key_jwt`).
    PrivateKeyJwt {
        token_url: String,
        client_id: String,
        key_path: PathBuf,
        kid: Option<String>,
        alg: KeyAlg,
        scope: Option<String>,
    },
}

/// The signing algorithm of a client assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlg {
    Rs384,
    Es384,
}

fn http_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}

/// Whether a URL carries a user or password (`https://user:pw@host/…`): they would be printed
/// wherever the URL is (logs, `/admin/sources`); `auth` is the place for credentials.
fn credentials_in(url: &str) -> bool {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?', '#']).next())
        .is_some_and(|authority| authority.contains('@'))
}

impl RawPull {
    /// Checks the values, reporting each problem under `key` (`sources[0].pull`).
    pub(super) fn check(self, key: &str, report: &mut dyn FnMut(&str, String)) -> Pull {
        let mut duration = |name: &str, text: &str| -> Duration {
            match text.parse::<IsoDuration>().ok().and_then(|d| d.fixed()) {
                Some(d) => d,
                None => {
                    report(
                        &format!("{key}.{name}"),
                        format!(
                            "`{text}` is not a duration of days, hours, minutes or seconds, e.g. PT1M"
                        ),
                    );
                    Duration::from_secs(60)
                }
            }
        };
        let interval = duration("interval", &self.interval);
        let overlap = duration("overlap", &self.overlap);
        let timeout = duration("timeout", &self.timeout);
        let lease = duration("lease", &self.lease);
        if interval.is_zero() {
            report(&format!("{key}.interval"), "must be above zero".into());
        }
        if overlap.is_zero() {
            report(
                &format!("{key}.overlap"),
                "must be above zero: resources that share the cursor's moment would be lost".into(),
            );
        }
        if lease < Duration::from_secs(3) {
            report(&format!("{key}.lease"), "must be at least PT3S".into());
        }
        if timeout.is_zero() {
            report(&format!("{key}.timeout"), "must be above zero".into());
        }
        check_base_url(key, &self.base_url, report);
        if self.resource_types.is_empty() {
            report(
                &format!("{key}.resource_types"),
                "name at least one resource type to pull".into(),
            );
        }
        for (i, t) in self.resource_types.iter().enumerate() {
            if !crate::fhir::definitions::is_resource_type(t) {
                report(
                    &format!("{key}.resource_types[{i}]"),
                    format!("`{t}` is not an R4 resource type"),
                );
            }
        }
        if !(1..=1000).contains(&self.page_size) {
            report(
                &format!("{key}.page_size"),
                format!("{} is not from 1 to 1000", self.page_size),
            );
        }
        if self.max_retries > 30 {
            report(
                &format!("{key}.max_retries"),
                format!("{} is more than 30", self.max_retries),
            );
        }
        let auth = match self.auth {
            None => PullAuth::None,
            Some(a) => a.check(&format!("{key}.auth"), report),
        };
        Pull {
            base_url: self.base_url.trim_end_matches('/').to_string(),
            resource_types: self.resource_types,
            interval,
            page_size: self.page_size.clamp(1, 1000),
            overlap,
            sort: self.sort,
            history: self.history,
            max_retries: self.max_retries.min(30),
            timeout,
            lease,
            auth,
        }
    }
}

fn check_token_url(key: &str, url: &str, report: &mut dyn FnMut(&str, String)) {
    if url.is_empty() {
        return;
    }
    if !http_url(url) {
        report(
            &format!("{key}.token_url"),
            format!("`{url}` must start with http:// or https://"),
        );
    } else if credentials_in(url) {
        report(
            &format!("{key}.token_url"),
            "must not hold a user or password".into(),
        );
    }
}

impl RawAuth {
    fn check(self, key: &str, report: &mut dyn FnMut(&str, String)) -> PullAuth {
        let mut required = |name: &str, value: Option<String>| -> String {
            match value {
                Some(v) if !v.trim().is_empty() => v,
                _ => {
                    report(
                        &format!("{key}.{name}"),
                        format!("required with method = \"{}\"", self.method),
                    );
                    String::new()
                }
            }
        };
        match self.method.as_str() {
            "none" => PullAuth::None,
            "client_secret" => {
                let token_url = required("token_url", self.token_url);
                let client_id = required("client_id", self.client_id);
                let secret = required("secret", self.secret);
                check_token_url(key, &token_url, report);
                PullAuth::ClientSecret {
                    token_url,
                    client_id,
                    secret: SecretString::from(secret),
                    scope: self.scope,
                }
            }
            "private_key_jwt" => {
                let token_url = required("token_url", self.token_url);
                let client_id = required("client_id", self.client_id);
                let key_path = PathBuf::from(required("key_path", self.key_path));
                check_token_url(key, &token_url, report);
                let alg = match self.alg.as_deref() {
                    None | Some("RS384") => KeyAlg::Rs384,
                    Some("ES384") => KeyAlg::Es384,
                    Some(other) => {
                        report(
                            &format!("{key}.alg"),
                            format!("`{other}` is not RS384 or ES384 (SMART Backend Services)"),
                        );
                        KeyAlg::Rs384
                    }
                };
                PullAuth::PrivateKeyJwt {
                    token_url,
                    client_id,
                    key_path,
                    kid: self.kid,
                    alg,
                    scope: self.scope,
                }
            }
            other => {
                report(
                    &format!("{key}.method"),
                    format!(
                        "`{other}` is not one of \"private_key_jwt\", \"client_secret\", \"none\""
                    ),
                );
                PullAuth::None
            }
        }
    }
}
