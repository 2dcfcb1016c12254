//! Ingest: record systems push FHIR R4 in; every version is kept with its release moment.
//!
//! The path of every write, whether pushed over HTTP, imported from files or loaded for the
//! demo: split into entries, check each resource, resolve ids and references as a FHIR server
//! does for a transaction, map to a section, compute the release moment, and store the version
//! with its search values. A transaction is all or nothing; a batch is entry by entry. The
//! same version delivered twice is stored once.

mod cores;
pub mod entries;
pub mod http;
pub mod index;
pub mod prepare;
mod resolve;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult, Detail, Reason};
use crate::mapping::Facts;
use crate::mapping::embargo::Delay;
use crate::release::{self, Placement, VersionState};
use crate::store::release as store_release;
use crate::store::resources::{self, NewVersion};
use crate::time::{Micros, from_micros, instant};
use axum::http::StatusCode;
use entries::{Entry, Mode, Sent, entry_path};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

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
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// `Bundle.entry.response`, serialized straight from the outcome (a Bundle of a thousand
/// entries is written without building a JSON tree first).
impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("status", &status_line(self.status))?;
        if let Some(location) = &self.location {
            m.serialize_entry("location", location)?;
        }
        if let Some(v) = self.version {
            m.serialize_entry("etag", &format!("W/\"{v}\""))?;
        }
        if let Some(e) = &self.error {
            m.serialize_entry("outcome", &e.outcome())?;
        } else if let Some(note) = &self.note {
            m.serialize_entry(
                "outcome",
                &Informational {
                    resource_type: "OperationOutcome",
                    issue: [Issue {
                        severity: "information",
                        code: "informational",
                        diagnostics: note,
                    }],
                },
            )?;
        }
        m.end()
    }
}

#[derive(serde::Serialize)]
struct Informational<'a> {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    issue: [Issue<'a>; 1],
}

#[derive(serde::Serialize)]
struct Issue<'a> {
    severity: &'static str,
    code: &'static str,
    diagnostics: &'a str,
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
    sent: Vec<Sent>,
    arrived_at: Option<Micros>,
) -> ApiResult<Vec<Outcome>> {
    // 1. Every entry parsed (where it came as text) and its resource checked: CPU work, on
    //    every core.
    let started = Instant::now();
    let read = cores::each(sent, move |s: Sent| {
        let parsed = s.read(mode);
        let details = match &parsed {
            Ok(e) => check(mode, e),
            Err(_) => Vec::new(),
        };
        (parsed, details)
    })
    .await?;
    let read_in = started.elapsed();
    match mode {
        Mode::Transaction | Mode::Single => {
            let broken: Vec<Detail> = read
                .iter()
                .filter_map(|(p, _)| p.as_ref().err().cloned())
                .collect();
            if !broken.is_empty() {
                return Err(ApiError::invalid(
                    "the transaction was not stored: an entry is not valid",
                )
                .with_details(broken));
            }
            let mut entries = Vec::with_capacity(read.len());
            let mut details = Vec::new();
            for (p, d) in read {
                entries.extend(p.ok());
                details.extend(d);
            }
            if !details.is_empty() {
                return Err(ApiError::invalid(not_valid(mode)).with_details(details));
            }
            write_all(state, source, mode, entries, arrived_at, read_in).await
        }
        Mode::Batch => {
            let mut outcomes = Vec::with_capacity(read.len());
            for (p, details) in read {
                let outcome = match p {
                    Err(detail) => Outcome::failed(
                        ApiError::invalid(detail.message.clone()).with_details(vec![detail]),
                    ),
                    Ok(_) if !details.is_empty() => {
                        Outcome::failed(ApiError::invalid(not_valid(mode)).with_details(details))
                    }
                    Ok(entry) => {
                        match write_all(state, source, mode, vec![entry], arrived_at, read_in).await
                        {
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

/// The problems of an entry's resource (FHIRPaths from the Bundle's root).
fn check(mode: Mode, e: &Entry) -> Vec<Detail> {
    match &e.resource {
        Some(r) => {
            let prefix = match mode {
                Mode::Single => String::new(),
                _ => format!("{}.resource", entry_path(mode, e.index)),
            };
            prepare::check(r, &prefix)
        }
        None => Vec::new(),
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

/// Writes checked entries all or nothing. `read_in`: how long reading and checking them took.
async fn write_all(
    state: &AppState,
    source: &str,
    mode: Mode,
    entries: Vec<Entry>,
    arrived_at: Option<Micros>,
    read_in: Duration,
) -> ApiResult<Vec<Outcome>> {
    let started = Instant::now();
    let resources = entries.len();
    // 2. Ids and references, then what is stored of each resource: its JSON, hash, search
    //    values and release rule (CPU work). Without ifNoneExist or conditional references no
    //    lookup is needed and all of it happens before the write transaction starts, so that
    //    concurrent pushes hold the writer only for the statements; otherwise the lookups run
    //    in the transaction that writes, so that what they found still holds.
    let (mut tx, prepared, waited) = if resolve::needs_store(&entries) {
        let (mut tx, waited) = begin(state).await?;
        let ready = resolve::resolve(Some(&mut tx), source, mode, entries).await?;
        let prepared = prepare_all(state, mode, ready).await?;
        (tx, prepared, waited)
    } else {
        let ready = resolve::resolve(None, source, mode, entries).await?;
        let prepared = prepare_all(state, mode, ready).await?;
        let (tx, waited) = begin(state).await?;
        (tx, prepared, waited)
    };
    let began_at = started.elapsed();

    // 3. What is stored of these resources already, and what decides their release.
    let now = arrived_at.unwrap_or_else(|| crate::time::to_micros(state.clock.now()));
    let keys: Vec<(String, String)> = prepared
        .iter()
        .filter(|p| !p.matched_existing)
        .map(|p| (p.resource_type.clone(), p.id.clone()))
        .collect();
    resources::lock(&mut tx, &keys).await?;
    let heads = resources::current(&mut tx, &keys).await?;
    // A resource belongs to the source that first sent it (contract §3): another source's
    // write or delete is refused, naming nothing of the owner.
    if let Some(foreign) = keys
        .iter()
        .find(|k| heads.get(*k).is_some_and(|h| h.source != source))
    {
        return Err(ApiError::conflict(format!(
            "{}/{} was sent by another source; a source changes only its own resources (sources need disjoint ids)",
            foreign.0, foreign.1
        )));
    }
    let resource_ids: Vec<i64> = heads.values().map(|c| c.id).collect();
    let history = store_release::versions_of(&mut tx, &resource_ids).await?;
    let actions = store_release::actions_for(&mut tx, &keys).await?;
    let waivers = if state.config.embargo.client_may_waive {
        let mut patients: Vec<String> = prepared
            .iter()
            .filter_map(|p| p.indexed.as_ref().and_then(|i| i.patient_id.clone()))
            .collect();
        patients.sort_unstable();
        patients.dedup();
        store_release::waivers_for(&mut tx, &patients).await?
    } else {
        Default::default()
    };
    let cx = Cx {
        state,
        source,
        actions: &actions,
        waivers: &waivers,
        now,
    };

    // 4. The new versions, each with its release moment.
    let mut versions: Vec<NewVersion> = Vec::new();
    // Where in `versions` each resource's versions of this same Bundle are.
    let mut written: HashMap<(String, String), Vec<usize>> = HashMap::new();
    // Stored versions that were waiting and are superseded by a version of this write.
    let mut superseded: Vec<i64> = Vec::new();
    let mut outcomes = Vec::with_capacity(prepared.len());
    for p in prepared {
        let key = (p.resource_type.clone(), p.id.clone());
        if p.matched_existing {
            outcomes.push(Outcome {
                status: StatusCode::OK,
                location: Some(format!("{}/{}", p.resource_type, p.id)),
                version: None,
                note: Some("ifNoneExist matched a stored resource; nothing written".into()),
                error: None,
            });
            continue;
        }
        // Versions written earlier in this same Bundle count as stored.
        let mut prior: Vec<Prior> = heads
            .get(&key)
            .and_then(|c| history.get(&c.id))
            .map(|vs| vs.iter().map(Prior::from_stored).collect())
            .unwrap_or_default();
        if let (Some(head), Some(last)) = (heads.get(&key), prior.last_mut()) {
            last.hash = head.last_hash.clone();
        }
        prior.extend(
            written
                .get(&key)
                .into_iter()
                .flatten()
                .map(|&i| Prior::from_new(&versions[i], i)),
        );
        let next = next_version(&cx, p, &prior);
        if !next.versions.is_empty() {
            for waiting in prior.iter().filter(|v| v.waiting(now)) {
                match waiting.at {
                    At::Stored(id) => superseded.push(id),
                    At::Written(i) => versions[i].release_at = None,
                }
            }
        }
        for version in next.versions {
            written.entry(key.clone()).or_default().push(versions.len());
            versions.push(version);
        }
        outcomes.push(next.outcome);
    }
    let ids = resources::write(&mut tx, &versions, &heads).await?;
    resources::supersede(&mut tx, &superseded).await?;
    client_facts(&mut tx, &versions, &ids).await?;
    let written_at = started.elapsed();
    tx.commit().await?;
    let us = |d: Duration| d.as_micros() as u64;
    tracing::debug!(
        target: "sluis::ingest",
        resources,
        read_us = us(read_in),
        prepare_us = us(began_at.saturating_sub(waited)),
        writer_wait_us = us(waited),
        write_us = us(written_at.saturating_sub(began_at)),
        commit_us = us(started.elapsed().saturating_sub(written_at)),
        "written"
    );
    Ok(outcomes)
}

/// The write transaction, and how long it took to get the writer.
async fn begin(state: &AppState) -> ApiResult<(crate::store::db::Tx, Duration)> {
    let asked = Instant::now();
    let tx = state.db.begin().await?;
    Ok((tx, asked.elapsed()))
}

/// [`prepare_version`] of every resource, off the async threads; all or nothing.
async fn prepare_all(state: &AppState, mode: Mode, ready: Vec<Ready>) -> ApiResult<Vec<Prepared>> {
    let state = state.clone();
    let results = cores::each(ready, move |r| prepare_version(&state, mode, r)).await?;
    let mut prepared = Vec::with_capacity(results.len());
    let mut details = Vec::new();
    for result in results {
        match result {
            Ok(p) => prepared.push(p),
            Err(detail) => details.push(detail),
        }
    }
    if details.is_empty() {
        Ok(prepared)
    } else {
        Err(ApiError::invalid(not_valid(mode)).with_details(details))
    }
}

/// The message of a write refused because a resource is not valid R4.
fn not_valid(mode: Mode) -> &'static str {
    match mode {
        Mode::Single => "the resource is not valid FHIR R4; nothing was stored",
        _ => "the Bundle was not stored: an entry is not valid FHIR R4",
    }
}

/// Care episodes and death, from the newest versions of EpisodeOfCare and Patient (R6).
async fn client_facts(
    tx: &mut crate::store::db::Tx,
    versions: &[NewVersion],
    ids: &std::collections::HashMap<(String, String), i64>,
) -> Result<(), crate::store::Error> {
    use crate::search::dates::{OPEN_HI, OPEN_LO};
    use crate::store::clients;
    // The adapter's own tombstones stand before a version of the same write, which decides.
    for v in versions.iter().filter(|v| !v.synthetic) {
        match v.resource_type.as_str() {
            "EpisodeOfCare" => {
                let Some(&resource_id) = ids.get(&(v.resource_type.clone(), v.fhir_id.clone()))
                else {
                    continue;
                };
                let episode = match (&v.indexed.patient_id, v.withdrawn) {
                    (Some(patient), false) => {
                        let status = v
                            .indexed
                            .tokens_of("status")
                            .first()
                            .map(|(_, c)| c.clone());
                        let period = v.indexed.dates.iter().find(|(p, _, _)| *p == "date");
                        status.map(|status| clients::Episode {
                            resource_id,
                            patient_id: patient.clone(),
                            status,
                            start_at: period.map(|(_, lo, _)| *lo).filter(|lo| *lo != OPEN_LO),
                            end_at: period.map(|(_, _, hi)| *hi).filter(|hi| *hi != OPEN_HI),
                            recorded_at: v.arrived_at,
                        })
                    }
                    _ => None,
                };
                clients::set_episode(tx, resource_id, episode.as_ref()).await?;
            }
            "Patient" => {
                let body: serde_json::Value = if v.withdrawn {
                    serde_json::Value::Null
                } else {
                    serde_json::from_str(&v.body).unwrap_or_default()
                };
                let deceased = if let Some(at) = body
                    .get("deceasedDateTime")
                    .and_then(serde_json::Value::as_str)
                    .and_then(crate::search::dates::parse)
                {
                    Some(at.lo)
                } else if body
                    .get("deceasedBoolean")
                    .and_then(serde_json::Value::as_bool)
                    == Some(true)
                {
                    // Known since this version arrived, unless known before.
                    Some(
                        clients::deceased_at(tx, &v.fhir_id)
                            .await?
                            .unwrap_or(v.arrived_at),
                    )
                } else {
                    None
                };
                clients::set_deceased(tx, &v.fhir_id, deceased).await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Where an earlier version is: stored (its id), or among the versions of this write.
#[derive(Debug, Clone, Copy)]
enum At {
    Stored(i64),
    Written(usize),
}

/// An earlier version of a resource, as the next one needs it.
struct Prior {
    at: At,
    version_no: i64,
    arrived_at: Micros,
    release_at: Option<Micros>,
    /// A tombstone.
    withdrawn: bool,
    /// Under a `never` rule or unmapped: never shown.
    hidden: bool,
    patient_id: Option<String>,
    section: Option<String>,
    /// Known for the newest stored version (from `resources`) and for versions of this write.
    hash: String,
}

impl Prior {
    fn from_stored(v: &store_release::StoredVersion) -> Self {
        Self {
            at: At::Stored(v.id),
            version_no: v.version_no,
            arrived_at: v.arrived_at,
            release_at: v.release_at,
            withdrawn: v.withdrawn == resources::WITHDRAWN,
            hidden: v.withdrawn == resources::HIDDEN,
            patient_id: v.patient_id.clone(),
            section: v.section.clone(),
            hash: String::new(),
        }
    }

    fn from_new(v: &NewVersion, index: usize) -> Self {
        Self {
            at: At::Written(index),
            version_no: v.version_no,
            arrived_at: v.arrived_at,
            release_at: v.release_at,
            withdrawn: v.withdrawn,
            hidden: v.hidden,
            patient_id: v.indexed.patient_id.clone(),
            section: v.section.clone(),
            hash: v.hash.clone(),
        }
    }

    /// Not shown at `now` but due to be: superseded by any newer version.
    fn waiting(&self, now: Micros) -> bool {
        !self.withdrawn && !self.hidden && self.release_at.is_some_and(|r| r > now)
    }

    /// What the release computation knows of it (its moment is settled).
    fn state(&self) -> VersionState {
        VersionState {
            arrived_at: self.arrived_at,
            delay: if self.hidden {
                Delay::Never
            } else {
                Delay::Immediate
            },
            tagged: false,
            withdrawn: self.withdrawn,
            waived: false,
            stored: self.release_at,
            client: self.patient_id.clone(),
        }
    }
}

/// A resource with what was read out of it (nothing for a delete).
struct Prepared {
    resource_type: String,
    id: String,
    matched_existing: bool,
    /// `(body, hash, meta)`; `None` for a delete.
    body: Option<(String, String, String)>,
    indexed: Option<index::Indexed>,
    placement: Option<Placement>,
    tagged: bool,
}

/// Serializes, hashes, indexes and places one resource, and has fhirbolt check its body.
fn prepare_version(state: &AppState, mode: Mode, r: Ready) -> Result<Prepared, Detail> {
    let Some(mut body) = r.body.filter(|_| !r.matched_existing) else {
        return Ok(Prepared {
            resource_type: r.resource_type,
            id: r.id,
            matched_existing: r.matched_existing,
            body: None,
            indexed: None,
            placement: None,
            tagged: false,
        });
    };
    let indexed = index::index(&r.resource_type, &r.id, &body);
    // The body is stored without `meta`, which is kept beside it, so that serving can put in
    // the portal's versionId and lastUpdated without parsing the body again.
    let meta = match body.as_object_mut().and_then(|m| m.shift_remove("meta")) {
        Some(serde_json::Value::Object(mut m)) => {
            m.shift_remove("versionId");
            m.shift_remove("lastUpdated");
            m.shift_remove("_versionId");
            m.shift_remove("_lastUpdated");
            if m.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&m).unwrap_or_default()
            }
        }
        _ => String::new(),
    };
    let text = serde_json::to_string(&body).unwrap_or_default();
    // fhirbolt consumes the tree: it gets the body itself, now that it is serialized.
    let prefix = || match mode {
        Mode::Single => String::new(),
        _ => format!("{}.resource", entry_path(mode, r.entry_index)),
    };
    if let Some(problem) = prepare::check_structure(body, &r.resource_type, prefix) {
        return Err(problem);
    }
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    hasher.update([0u8]);
    hasher.update(meta.as_bytes());
    let hash = hex(&hasher.finalize());
    let category = indexed.tokens_of("category");
    let code = indexed.rule_codes(&r.resource_type);
    let facts = Facts {
        resource_type: &r.resource_type,
        category: &category,
        code: &code,
        profile: &indexed.profiles,
    };
    let placement = release::place(&state.mappings, &facts);
    let (tag_system, tag_code) = &state.config.embargo.release_tag;
    let tagged = indexed
        .tags
        .iter()
        .any(|(s, c)| s == tag_system && c == tag_code);
    Ok(Prepared {
        resource_type: r.resource_type,
        id: r.id,
        matched_existing: false,
        body: Some((text, hash, meta)),
        indexed: Some(indexed),
        placement: Some(placement),
        tagged,
    })
}

/// What every entry of one write shares.
struct Cx<'a> {
    state: &'a AppState,
    source: &'a str,
    actions: &'a HashMap<(String, String), Vec<store_release::ActionRow>>,
    waivers: &'a HashMap<String, std::collections::BTreeSet<String>>,
    now: Micros,
}

/// The versions an entry makes (none when nothing changed; a tombstone of the adapter's own
/// before the new version when that takes the resource from where it is shown) and its outcome.
struct Next {
    versions: Vec<NewVersion>,
    outcome: Outcome,
}

/// A tombstone at `now` in the client and section of `of`: what was shown there is gone.
fn tombstone(
    cx: &Cx<'_>,
    resource_type: &str,
    id: &str,
    version_no: i64,
    of: &Prior,
    rule: &str,
    synthetic: bool,
) -> NewVersion {
    NewVersion {
        resource_type: resource_type.to_string(),
        fhir_id: id.to_string(),
        source: cx.source.to_string(),
        version_no,
        body: String::new(),
        hash: "deleted".into(),
        indexed: index::Indexed {
            patient_id: of.patient_id.clone(),
            sort_date: i64::MAX,
            ..Default::default()
        },
        section: of.section.clone(),
        arrived_at: cx.now,
        release_at: Some(cx.now),
        rule: rule.to_string(),
        withdrawn: true,
        hidden: false,
        synthetic,
        tagged: false,
        meta: String::new(),
    }
}

/// The versions an entry makes, after `prior` (stored and earlier in this write).
fn next_version(cx: &Cx<'_>, p: Prepared, prior: &[Prior]) -> Next {
    let Prepared {
        resource_type,
        id,
        body,
        indexed,
        placement,
        tagged,
        ..
    } = p;
    let now = cx.now;
    let location = |v: i64| Some(format!("{resource_type}/{id}/_history/{v}"));
    let last = prior.last();
    let live = last.filter(|l| !l.withdrawn);
    let mut version_no = last.map_or(1, |l| l.version_no + 1);
    // The version the portal shows now, if it is shown (not a tombstone).
    let shown = prior
        .iter()
        .rev()
        .find(|v| v.release_at.is_some_and(|r| r <= now))
        .filter(|v| !v.withdrawn && !v.hidden);
    let (Some((text, hash, meta)), Some(indexed), Some(placement)) = (body, indexed, placement)
    else {
        // A delete: a tombstone, unless there is nothing to withdraw.
        let Some(l) = live else {
            return Next {
                versions: Vec::new(),
                outcome: Outcome {
                    status: StatusCode::NO_CONTENT,
                    location: None,
                    version: last.map(|l| l.version_no),
                    note: Some("nothing to delete".into()),
                    error: None,
                },
            };
        };
        let version = tombstone(cx, &resource_type, &id, version_no, l, "withdrawn", false);
        return Next {
            versions: vec![version],
            outcome: Outcome {
                status: StatusCode::NO_CONTENT,
                location: location(version_no),
                version: Some(version_no),
                note: Some("withdrawn from the portal".into()),
                error: None,
            },
        };
    };
    if let Some(l) = last
        && l.hash == hash
        && !hash.is_empty()
    {
        return Next {
            versions: Vec::new(),
            outcome: Outcome {
                status: StatusCode::OK,
                location: location(l.version_no),
                version: Some(l.version_no),
                note: Some(UNCHANGED.into()),
                error: None,
            },
        };
    }
    let withdrawn = indexed.entered_in_error;
    let hidden = !withdrawn && placement.delay == Delay::Never;
    let waived = match (&indexed.patient_id, &placement.section) {
        (Some(patient), Some(section)) => {
            cx.waivers.get(patient).is_some_and(|w| w.contains(section))
        }
        _ => false,
    };
    let mut states: Vec<VersionState> = prior.iter().map(Prior::state).collect();
    let mut versions = Vec::with_capacity(2);
    // What is shown leaves at once where this version takes the resource to another client
    // or section, or where this version may never be shown (contract §2, §3).
    let moved = shown
        .filter(|s| s.patient_id != indexed.patient_id || s.section != placement.section || hidden);
    if let Some(s) = moved {
        let why = if s.patient_id != indexed.patient_id {
            "withdrawn: moved to another client"
        } else if s.section != placement.section {
            "withdrawn: moved to another section"
        } else {
            "withdrawn: a newer version is never shown"
        };
        let t = tombstone(cx, &resource_type, &id, version_no, s, why, true);
        states.push(Prior::from_new(&t, 0).state());
        versions.push(t);
        version_no += 1;
    }
    states.push(VersionState {
        arrived_at: now,
        delay: placement.delay,
        tagged,
        withdrawn,
        waived,
        stored: None,
        client: indexed.patient_id.clone(),
    });
    let staff: Vec<release::Action> = cx
        .actions
        .get(&(resource_type.clone(), id.clone()))
        .map(|rows| rows.iter().map(store_release::ActionRow::action).collect())
        .unwrap_or_default();
    let ctx = release::Context {
        on_update: cx.state.config.embargo.on_update,
        now,
        settled: states.len() - 1,
    };
    let release_at = release::schedule(&states, &staff, &ctx).pop().flatten();
    let rule = if withdrawn {
        "entered-in-error".to_string()
    } else {
        placement.rule.clone()
    };
    let mut note = match (&placement.section, release_at, withdrawn) {
        (_, _, true) => "entered-in-error: withdrawn from the portal".to_string(),
        (None, _, _) if placement.delay != Delay::Never => {
            "stored; served when a resource the user may see refers to it".to_string()
        }
        (None, _, _) => format!("stored; never served ({rule})"),
        (Some(s), Some(t), _) if t <= now => format!("section {s}; shown now ({rule})"),
        (Some(s), Some(t), _) => format!(
            "section {s}; shown from {} ({rule})",
            instant(from_micros(t))
        ),
        (Some(s), None, _) if placement.delay == Delay::Never => {
            format!("section {s}; never shown ({rule})")
        }
        (Some(s), None, _) => {
            format!("section {s}; held until a staff member releases it ({rule})")
        }
    };
    if let Some(t) = versions.first() {
        note = format!(
            "the version shown before was taken off the portal at once ({}); {note}",
            t.rule.trim_start_matches("withdrawn: ")
        );
    }
    let status = if live.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = location(version_no);
    versions.push(NewVersion {
        resource_type,
        fhir_id: id,
        source: cx.source.to_string(),
        version_no,
        body: text,
        hash,
        indexed,
        section: placement.section,
        arrived_at: now,
        release_at,
        rule,
        withdrawn,
        hidden,
        synthetic: false,
        tagged,
        meta,
    });
    Next {
        versions,
        outcome: Outcome {
            status,
            location,
            version: Some(version_no),
            note: Some(note),
            error: None,
        },
    }
}

/// The note of a delivery that changed nothing.
pub const UNCHANGED: &str = "unchanged: this version was already stored";

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The reason code for a refused source.
pub fn wrong_source(source: &str) -> ApiError {
    ApiError::forbidden(
        Reason::InvalidToken,
        format!("this client may not push to source `{source}`"),
    )
}
