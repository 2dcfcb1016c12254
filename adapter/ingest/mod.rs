//! Ingest: record systems push FHIR R4 in; every version is kept with its release moment.
//!
//! The path of every write, whether pushed over HTTP, imported from files or loaded for the
//! demo, in stages: `entries` splits what was sent into entries; `check` checks each resource;
//! `resolve` assigns ids and resolves references as a FHIR server does for a transaction;
//! `prepare` serializes, hashes, indexes (`index`) and places each resource (section, embargo
//! rule); `version` decides the versions each entry makes and their release moments; the store
//! writes them; `care` reads the care and life facts the access decision needs; `outcome` is
//! the answer per entry. This file runs the stages in order, the CPU work on every core
//! (`cores`) before the write transaction. A transaction is all or nothing; a batch is entry
//! by entry. The same version delivered twice is stored once.

mod care;
pub mod check;
mod cores;
pub mod entries;
pub mod http;
pub mod index;
pub mod outcome;
mod prepare;
pub mod pulled;
mod resolve;
mod version;

pub use outcome::{Outcome, UNCHANGED};

use crate::app::AppState;
use crate::auth::{Interaction, Scopes};
use crate::error::{ApiError, ApiResult, Detail, Reason};
use crate::store::Pairs;
use crate::store::pull::{self as store_pull, PageTaken};
use crate::store::release as store_release;
use crate::store::resources::{self, NewVersion};
use crate::time::Micros;
use axum::http::StatusCode;
use entries::{Entry, Mode, Sent, entry_path};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use version::{At, Cx, Prior};

/// Ingests what a source sent. `arrived_at` overrides the arrival moment (import, demo).
pub async fn ingest(
    state: &AppState,
    source: &str,
    mode: Mode,
    sent: Vec<Sent>,
    arrived_at: Option<Micros>,
    scopes: Option<&Scopes>,
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
            let sent = read.len();
            let result =
                all_or_nothing(state, source, mode, read, arrived_at, read_in, scopes).await;
            match &result {
                Ok(outcomes) => {
                    crate::metrics::ingested(source, via(arrived_at), outcomes);
                    crate::audit::note(|n| n.detail = Some(crate::audit::batch_detail(outcomes)));
                }
                Err(e) if e.status.is_client_error() => {
                    crate::metrics::refused(source, via(arrived_at), sent);
                }
                Err(_) => {}
            }
            result
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
                        let written = write_all(
                            state,
                            source,
                            mode,
                            vec![entry],
                            arrived_at,
                            read_in,
                            By::Push(scopes),
                        )
                        .await
                        .and_then(Written::stored);
                        match written {
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
            crate::metrics::ingested(source, via(arrived_at), &outcomes);
            crate::audit::note(|n| n.detail = Some(crate::audit::batch_detail(&outcomes)));
            Ok(outcomes)
        }
    }
}

/// What a write is made for: a push (with the token's scopes; none for `sluis import` and the
/// demo), or a page of a pull, written only while this process holds the source's lease.
pub(crate) enum By<'a> {
    Push(Option<&'a Scopes>),
    Pull(&'a PageTaken<'a>),
}

/// The refusal of a version the token's scope does not allow, by what it does: a delete, or
/// an `entered-in-error` version of a stored resource, withdraws (`d`); another version of a
/// resource stored already (or written earlier in the same Bundle) changes it (`u`); any
/// other, an `entered-in-error` one too, creates (`c`).
fn beyond_scope(scopes: &Scopes, p: &prepare::Prepared, exists: bool) -> Option<ApiError> {
    let interaction = match (&p.body, &p.indexed) {
        (None, _) => Interaction::Delete,
        (_, Some(indexed)) if indexed.entered_in_error && exists => Interaction::Delete,
        _ if exists => Interaction::Update,
        _ => Interaction::Create,
    };
    scopes
        .require(&p.resource_type, interaction)
        .err()
        .map(|e| ApiError {
            message: format!("{}/{}: {}", p.resource_type, p.id, e.message),
            ..e
        })
}

/// A transaction or a single resource: stored whole, or refused whole.
async fn all_or_nothing(
    state: &AppState,
    source: &str,
    mode: Mode,
    read: Vec<(entries::Parsed, Vec<Detail>)>,
    arrived_at: Option<Micros>,
    read_in: std::time::Duration,
    scopes: Option<&Scopes>,
) -> ApiResult<Vec<Outcome>> {
    let broken: Vec<Detail> = read
        .iter()
        .filter_map(|(p, _)| p.as_ref().err().cloned())
        .collect();
    if !broken.is_empty() {
        return Err(
            ApiError::invalid("the transaction was not stored: an entry is not valid")
                .with_details(broken),
        );
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
    let outcomes = write_all(
        state,
        source,
        mode,
        entries,
        arrived_at,
        read_in,
        By::Push(scopes),
    )
    .await?
    .stored()?;
    Ok(outcomes)
}

/// How a write came in, for the metrics: pushed over HTTP, or imported (a moment given).
fn via(arrived_at: Option<Micros>) -> &'static str {
    if arrived_at.is_some() {
        "import"
    } else {
        "push"
    }
}

/// What a write came to.
pub(crate) enum Written {
    Stored(Vec<Outcome>),
    /// A pulled page, and another process holds the source's lease: nothing was written.
    LeaseLost,
}

impl Written {
    /// The outcomes of a write that was not a pulled page.
    fn stored(self) -> ApiResult<Vec<Outcome>> {
        match self {
            Written::Stored(o) => Ok(o),
            Written::LeaseLost => Err(ApiError::internal(anyhow::anyhow!(
                "ingest: a pushed write asked about a pull lease"
            ))),
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
            check::check(r, &prefix)
        }
        None => Vec::new(),
    }
}

/// A resource ready to be written.
pub(crate) struct Ready {
    pub entry_index: usize,
    pub resource_type: String,
    pub id: String,
    /// `None` for a delete.
    pub body: Option<Value>,
    /// Set when `ifNoneExist` matched: nothing is written.
    pub matched_existing: bool,
}

/// Writes checked entries all or nothing. `read_in`: how long reading and checking them took.
/// A pulled page (`pulled`) is written only while this process holds the source's lease, its
/// cursor in the same transaction; resources of another source in it are left aside.
async fn write_all(
    state: &AppState,
    source: &str,
    mode: Mode,
    entries: Vec<Entry>,
    arrived_at: Option<Micros>,
    read_in: Duration,
    by: By<'_>,
) -> ApiResult<Written> {
    let (pulled, scopes) = match by {
        By::Push(scopes) => (None, scopes),
        By::Pull(taken) => (Some(taken), None),
    };
    let started = Instant::now();
    let resources = entries.len();
    let echoes = echoes(&entries);
    // 2. Ids and references, then what is stored of each resource: its JSON, hash, search
    //    values and release rule (CPU work). Without ifNoneExist or conditional references no
    //    lookup is needed and all of it happens before the write transaction starts, so that
    //    concurrent pushes hold the writer only for the statements; otherwise the lookups run
    //    in the transaction that writes, so that what they found still holds.
    let (mut tx, prepared, waited) = if resolve::needs_store(&entries) {
        let (mut tx, waited) = begin(state).await?;
        let ready = resolve::resolve(Some(&mut tx), source, mode, entries).await?;
        let prepared = prepare::prepare_all(state, mode, ready).await?;
        (tx, prepared, waited)
    } else {
        let ready = resolve::resolve(None, source, mode, entries).await?;
        let prepared = prepare::prepare_all(state, mode, ready).await?;
        let (tx, waited) = begin(state).await?;
        (tx, prepared, waited)
    };
    let began_at = started.elapsed();

    // 3. What is stored of these resources already, and what decides their release.
    let now = arrived_at.unwrap_or_else(|| crate::time::to_micros(state.clock.now()));
    if let Some(taken) = pulled
        && !store_pull::holds(&mut tx, taken.source, taken.holder).await?
    {
        return Ok(Written::LeaseLost);
    }
    let mut keys: Vec<(String, String)> = prepared
        .iter()
        .filter(|p| !p.matched_existing)
        .map(|p| (p.resource_type.clone(), p.id.clone()))
        .collect();
    resources::lock(&mut tx, &keys).await?;
    // A pulled page's lookups repeat one statement while the table grows: planned per run.
    let plan = if pulled.is_some() {
        Pairs::EachRun
    } else {
        Pairs::Kept
    };
    let heads = resources::current(&mut tx, &keys, plan).await?;
    // A resource belongs to the source that first sent it (contract §3): another source's
    // write or delete is refused, naming nothing of the owner. A pulled page leaves such a
    // resource aside and takes the rest.
    let foreign = |k: &(String, String)| heads.get(k).is_some_and(|h| h.source != source);
    let mut outcomes = Vec::with_capacity(prepared.len());
    let mut prepared = prepared;
    if pulled.is_some() && keys.iter().any(foreign) {
        prepared.retain(|p| {
            let key = (p.resource_type.clone(), p.id.clone());
            if foreign(&key) {
                outcomes.push(Outcome::failed(ApiError::conflict(format!(
                    "{}/{} was sent by another source; left aside",
                    key.0, key.1
                ))));
                return false;
            }
            true
        });
        keys.retain(|k| !foreign(k));
    }
    if let Some(foreign) = keys.iter().find(|k| foreign(k)) {
        return Err(ApiError::conflict(format!(
            "{}/{} was sent by another source; a source changes only its own resources (sources need disjoint ids)",
            foreign.0, foreign.1
        )));
    }
    let resource_ids: Vec<i64> = heads.values().map(|c| c.id).collect();
    let history = store_release::versions_of(&mut tx, &resource_ids).await?;
    let actions = store_release::actions_for(&mut tx, &keys, plan).await?;
    let waivers = if state.config.embargo.client_may_waive {
        let mut patients: Vec<String> = prepared
            .iter()
            .filter_map(|p| p.indexed.as_ref().and_then(|i| i.values.patient_id.clone()))
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
        if let Some(refusal) = scopes.and_then(|s| {
            beyond_scope(
                s,
                &p,
                heads.contains_key(&key) || written.contains_key(&key),
            )
        }) {
            return Err(refusal);
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
        let next = version::next_version(&cx, p, &prior);
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
    care::client_facts(&mut tx, &versions, &ids).await?;
    if let Some(taken) = pulled {
        store_pull::page_taken(&mut tx, taken).await?;
    }
    // A pushed transaction's audit record goes in the same commit (answered 200 when it
    // commits): one write transaction per push, not two.
    let audited = mode == Mode::Transaction
        && pulled.is_none()
        && arrived_at.is_none()
        && crate::audit::append_in(&mut tx, 200, crate::audit::batch_detail(&outcomes)).await?;
    let written_at = started.elapsed();
    tx.commit().await?;
    if audited {
        crate::audit::recorded(200);
    }
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
    for (id, message, subject) in echoes {
        let key = ("Communication".to_string(), id);
        let ours =
            written.contains_key(&key) || heads.get(&key).is_some_and(|h| h.source == source);
        if ours {
            withdraw_shown_copy(state, source, &message, &subject).await;
        }
    }
    Ok(Written::Stored(outcomes))
}

/// Communications that carry the identifier of a portal message under an id of their own:
/// the record system's copy of a message sluis delivered, coming back (its id, the message's,
/// and its subject reference).
fn echoes(entries: &[Entry]) -> Vec<(String, String, String)> {
    entries
        .iter()
        .filter_map(|e| {
            let r = e.resource.as_ref()?;
            if r.get("resourceType")?.as_str()? != "Communication" {
                return None;
            }
            let id = e
                .target
                .as_ref()
                .map(|(_, id)| id.as_str())
                .or_else(|| r.get("id").and_then(serde_json::Value::as_str))?;
            let message = r
                .get("identifier")?
                .as_array()?
                .iter()
                .find(|i| i["system"] == crate::messages::IDENTIFIER_SYSTEM)?["value"]
                .as_str()?;
            let subject = r.get("subject")?.get("reference")?.as_str()?;
            (message != id).then(|| (id.to_string(), message.to_string(), subject.to_string()))
        })
        .collect()
}

/// The record system's copy of an approved message has arrived from the source the message
/// went to, about the same client: the copy sluis showed at approval is withdrawn, so that the message is shown once
/// (as the record system keeps it, where the care team's replies point). The sender's own view
/// of the message stays. A failure leaves both shown and is logged; the next time the copy
/// comes it is tried again.
async fn withdraw_shown_copy(state: &AppState, source: &str, message: &str, subject: &str) {
    let approved = match crate::store::messages::get(&state.db, message).await {
        Ok(Some(m)) => {
            m.state == "approved"
                && m.source == source
                && subject == format!("Patient/{}", m.patient_id)
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(message, error = %e, "cannot look up a message whose copy came back");
            false
        }
    };
    if !approved {
        return;
    }
    let entry = Entry {
        index: 0,
        full_url: None,
        method: entries::Method::Delete,
        target: Some(("Communication".into(), message.to_string())),
        if_none_exist: None,
        resource: None,
    };
    let withdrawn = Box::pin(write_all(
        state,
        source,
        Mode::Single,
        vec![entry],
        None,
        Duration::ZERO,
        By::Push(None),
    ))
    .await;
    if let Err(e) = withdrawn.and_then(Written::stored) {
        tracing::warn!(message, error = %e.message, "cannot withdraw the shown copy of a message the record system sent back");
    }
}

/// The write transaction, and how long it took to get the writer.
async fn begin(state: &AppState) -> ApiResult<(crate::store::db::Tx, Duration)> {
    let asked = Instant::now();
    let tx = state.db.begin().await?;
    Ok((tx, asked.elapsed()))
}

/// The message of a write refused because a resource is not valid R4.
pub(crate) fn not_valid(mode: Mode) -> &'static str {
    match mode {
        Mode::Single => "the resource is not valid FHIR R4; nothing was stored",
        _ => "the Bundle was not stored: an entry is not valid FHIR R4",
    }
}

/// The reason code for a refused source.
pub fn wrong_source(source: &str) -> ApiError {
    ApiError::forbidden(
        Reason::InvalidToken,
        format!("this client may not push to source `{source}`"),
    )
}
