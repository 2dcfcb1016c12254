//! Ingest: record systems push FHIR R4 in; every version is kept with its release moment.
//!
//! The path of every write, whether pushed over HTTP, imported from files or loaded for the
//! demo: split into entries, check each resource, resolve ids and references as a FHIR server
//! does for a transaction, map to a section, compute the release moment, and store the version
//! with its search values. A transaction is all or nothing; a batch is entry by entry. The
//! same version delivered twice is stored once.

pub mod entries;
pub mod http;
pub mod index;
pub mod prepare;
mod resolve;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult, Detail, Reason};
use crate::mapping::Facts;
use crate::release::{self, Inputs, Prior};
use crate::store::resources::{self, Current, NewVersion};
use crate::time::{Micros, from_micros, instant};
use axum::http::StatusCode;
use entries::{Entry, Mode, Parsed, entry_path};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What happened to one entry.
#[derive(Debug)]
pub struct Outcome {
    pub status: StatusCode,
    /// `Type/id/_history/n`.
    pub location: Option<String>,
    pub version: Option<i64>,
    /// A short explanation for the integration engineer: when it will show, or why not.
    pub note: Option<String>,
    pub error: Option<ApiError>,
}

impl Outcome {
    fn failed(error: ApiError) -> Self {
        Self {
            status: error.status,
            location: None,
            version: None,
            note: None,
            error: Some(error),
        }
    }

    /// The `Bundle.entry.response` of a transaction-response or batch-response.
    pub fn response(&self) -> Value {
        let mut r = json!({"status": status_line(self.status)});
        if let Some(location) = &self.location {
            r["location"] = Value::String(location.clone());
        }
        if let Some(v) = self.version {
            r["etag"] = Value::String(format!("W/\"{v}\""));
        }
        if let Some(e) = &self.error {
            r["outcome"] = e.outcome();
        } else if let Some(note) = &self.note {
            r["outcome"] = json!({"resourceType": "OperationOutcome", "issue": [
                {"severity": "information", "code": "informational", "diagnostics": note}]});
        }
        r
    }
}

fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

/// Ingests what a source sent. `arrived_at` overrides the arrival moment (import, demo).
pub async fn ingest(
    state: &AppState,
    source: &str,
    mode: Mode,
    parsed: Vec<Parsed>,
    arrived_at: Option<Micros>,
) -> ApiResult<Vec<Outcome>> {
    match mode {
        Mode::Transaction | Mode::Single => {
            let broken: Vec<Detail> = parsed
                .iter()
                .filter_map(|p| p.as_ref().err().cloned())
                .collect();
            if !broken.is_empty() {
                return Err(ApiError::invalid(
                    "the transaction was not stored: an entry is not valid",
                )
                .with_details(broken));
            }
            let entries: Vec<Entry> = parsed.into_iter().filter_map(Result::ok).collect();
            write_all(state, source, mode, entries, arrived_at).await
        }
        Mode::Batch => {
            let mut outcomes = Vec::with_capacity(parsed.len());
            for p in parsed {
                let outcome = match p {
                    Err(detail) => Outcome::failed(
                        ApiError::invalid(detail.message.clone()).with_details(vec![detail]),
                    ),
                    Ok(entry) => {
                        match write_all(state, source, mode, vec![entry], arrived_at).await {
                            Ok(mut o) => o
                                .pop()
                                .unwrap_or_else(|| Outcome::failed(ApiError::not_found())),
                            Err(e) if e.status.is_server_error() => return Err(e),
                            Err(e) => Outcome::failed(e),
                        }
                    }
                };
                outcomes.push(outcome);
            }
            Ok(outcomes)
        }
    }
}

/// A resource ready to be written.
struct Ready {
    entry_index: usize,
    resource_type: String,
    id: String,
    /// `None` for a delete.
    body: Option<Value>,
    /// Set when `ifNoneExist` matched: nothing is written.
    matched_existing: bool,
}

/// Writes entries all or nothing.
async fn write_all(
    state: &AppState,
    source: &str,
    mode: Mode,
    entries: Vec<Entry>,
    arrived_at: Option<Micros>,
) -> ApiResult<Vec<Outcome>> {
    // 1. Check every resource (CPU work, off the async threads).
    let checked = tokio::task::spawn_blocking(move || {
        let mut details = Vec::new();
        for e in &entries {
            if let Some(r) = &e.resource {
                let prefix = match mode {
                    Mode::Single => String::new(),
                    _ => format!("{}.resource", entry_path(mode, e.index)),
                };
                details.extend(prepare::check(r, &prefix));
            }
        }
        (entries, details)
    })
    .await;
    let (entries, details) = checked.map_err(|e| ApiError::internal(e.into()))?;
    if !details.is_empty() {
        let message = match mode {
            Mode::Single => "the resource is not valid FHIR R4; nothing was stored",
            _ => "the Bundle was not stored: an entry is not valid FHIR R4",
        };
        return Err(ApiError::invalid(message).with_details(details));
    }

    let mut tx = state.db.begin().await?;
    // 2. Ids, ifNoneExist, and references between entries and to stored resources.
    let ready = resolve::resolve(&mut tx, mode, entries).await?;

    // 3. Map, index and give each version its release moment.
    let now = arrived_at.unwrap_or_else(|| crate::time::to_micros(state.clock.now()));
    let keys: Vec<(String, String)> = ready
        .iter()
        .filter(|r| !r.matched_existing)
        .map(|r| (r.resource_type.clone(), r.id.clone()))
        .collect();
    let mut current = resources::current(&mut tx, &keys, now).await?;
    let mut versions = Vec::new();
    let mut outcomes = Vec::with_capacity(ready.len());
    for r in ready {
        let key = (r.resource_type.clone(), r.id.clone());
        if r.matched_existing {
            outcomes.push(Outcome {
                status: StatusCode::OK,
                location: Some(format!("{}/{}", r.resource_type, r.id)),
                version: None,
                note: Some("ifNoneExist matched a stored resource; nothing written".into()),
                error: None,
            });
            continue;
        }
        let (version, outcome) = next_version(state, source, &r, current.get(&key), now);
        if let Some(v) = &version {
            let shown = v.release_at.is_some_and(|t| t <= now) && !v.withdrawn;
            let first_shown = current.get(&key).and_then(|c| c.first_shown);
            current.insert(
                key,
                Current {
                    id: 0,
                    resource_type: v.resource_type.clone(),
                    fhir_id: v.fhir_id.clone(),
                    last_version: v.version_no,
                    last_hash: v.hash.clone(),
                    patient_id: v.indexed.patient_id.clone(),
                    section: v.section.clone(),
                    release_at: v.release_at,
                    withdrawn: i64::from(v.withdrawn),
                    first_shown: if shown {
                        first_shown.or(Some(now))
                    } else {
                        first_shown
                    },
                },
            );
        }
        versions.extend(version);
        outcomes.push(outcome);
    }
    resources::write(&mut tx, &versions).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// The version an entry makes (none when nothing changed) and its outcome.
fn next_version(
    state: &AppState,
    source: &str,
    r: &Ready,
    current: Option<&Current>,
    now: Micros,
) -> (Option<NewVersion>, Outcome) {
    let location = |v: i64| Some(format!("{}/{}/_history/{v}", r.resource_type, r.id));
    let live = current.filter(|c| c.withdrawn == 0);
    let Some(body) = &r.body else {
        // A delete: a tombstone, unless there is nothing to withdraw.
        let Some(c) = live else {
            return (
                None,
                Outcome {
                    status: StatusCode::NO_CONTENT,
                    location: None,
                    version: current.map(|c| c.last_version),
                    note: Some("nothing to delete".into()),
                    error: None,
                },
            );
        };
        let version_no = c.last_version + 1;
        let version = NewVersion {
            resource_type: r.resource_type.clone(),
            fhir_id: r.id.clone(),
            source: source.to_string(),
            version_no,
            body: String::new(),
            hash: "deleted".into(),
            indexed: index::Indexed {
                patient_id: c.patient_id.clone(),
                sort_date: i64::MAX,
                ..Default::default()
            },
            section: c.section.clone(),
            arrived_at: now,
            release_at: Some(now),
            rule: "withdrawn".into(),
            withdrawn: true,
        };
        return (
            Some(version),
            Outcome {
                status: StatusCode::NO_CONTENT,
                location: location(version_no),
                version: Some(version_no),
                note: Some("withdrawn from the portal".into()),
                error: None,
            },
        );
    };
    let text = serde_json::to_string(body).unwrap_or_default();
    let hash = hex(&Sha256::digest(text.as_bytes()));
    if let Some(c) = current
        && c.last_hash == hash
    {
        return (
            None,
            Outcome {
                status: StatusCode::OK,
                location: location(c.last_version),
                version: Some(c.last_version),
                note: Some("unchanged: this version was already stored".into()),
                error: None,
            },
        );
    }
    let indexed = index::index(&r.resource_type, &r.id, body);
    let category = indexed.tokens_of("category");
    let code = indexed.rule_codes(&r.resource_type);
    let facts = Facts {
        resource_type: &r.resource_type,
        category: &category,
        code: &code,
        profile: &indexed.profiles,
    };
    let section = state
        .mappings
        .sections
        .section_of(&facts)
        .map(str::to_string);
    let (tag_system, tag_code) = &state.config.embargo.release_tag;
    let release_tag = indexed
        .tags
        .iter()
        .any(|(s, c)| s == tag_system && c == tag_code);
    let withdrawn = indexed.entered_in_error;
    let (release_at, rule) = match &section {
        // Never served as an entry of its own; outside the patient compartment it is served
        // when a visible resource refers to it, without a delay of its own.
        None => (Some(now), "unmapped".to_string()),
        Some(s) => {
            let applied = state.mappings.embargo.rule_for(s, &facts);
            let prior = Prior {
                shown: live.is_some_and(|c| c.first_shown.is_some()),
                pending: live
                    .filter(|c| c.release_at.is_none_or(|t| t > now))
                    .map(|c| c.release_at),
            };
            let at = release::release_at(&Inputs {
                arrived_at: now,
                delay: applied.delay,
                on_update: state.config.embargo.on_update,
                withdrawn,
                release_tag,
                prior,
            });
            (at, applied.description)
        }
    };
    let version_no = current.map_or(1, |c| c.last_version + 1);
    let note = match (&section, release_at, withdrawn) {
        (_, _, true) => "entered-in-error: withdrawn from the portal".to_string(),
        (None, _, _) if !crate::search::sql::in_compartment(&r.resource_type) => {
            "stored; served when a resource the user may see refers to it".to_string()
        }
        (None, _, _) => "stored; no section rule maps it, so it is never served".to_string(),
        (Some(s), Some(t), _) if t <= now => format!("section {s}; shown now ({rule})"),
        (Some(s), Some(t), _) => format!(
            "section {s}; shown from {} ({rule})",
            instant(from_micros(t))
        ),
        (Some(s), None, _) => {
            format!("section {s}; held until a staff member releases it ({rule})")
        }
    };
    let status = if live.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let version = NewVersion {
        resource_type: r.resource_type.clone(),
        fhir_id: r.id.clone(),
        source: source.to_string(),
        version_no,
        body: text,
        hash,
        indexed,
        section,
        arrived_at: now,
        release_at,
        rule,
        withdrawn,
    };
    (
        Some(version),
        Outcome {
            status,
            location: location(version_no),
            version: Some(version_no),
            note: Some(note),
            error: None,
        },
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The reason code for a refused source.
pub fn wrong_source(source: &str) -> ApiError {
    ApiError::forbidden(
        Reason::InvalidToken,
        format!("this client may not push to source `{source}`"),
    )
}
