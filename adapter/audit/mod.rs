//! The audit trail (NEN 7513, R18, R19): a record of every request that touches client data,
//! refusals included, committed before the response is sent. Handlers and extractors add what
//! they know to the request's [`Note`] (who, which client, what was returned); the middleware
//! [`track`] writes the record when the handler is done, through the [`Auditor`], which commits
//! the records of concurrent requests together (group commit). When the record cannot be
//! written the request fails with 503 instead of being answered unlogged.
//!
//! `names` reads which clients a request is about; `chain` hashes and verifies; `journal`
//! keeps records on their way into the tables (SQLite); `prune` removes what is older than
//! the retention period;
//! `view` is the holder's `GET /fhir/AuditEvent`; `store::audit`
//! keeps the rows.

pub mod chain;
pub mod journal;
mod names;
pub mod prune;
pub mod view;

use crate::app::AppState;
use crate::error::{ApiError, Reason};
use crate::store::Db;
use crate::store::audit::Stored;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// What a request's handler and extractors learned, for its record.
#[derive(Debug, Default, Clone)]
pub struct Note {
    /// The caller: a portal vendor, a source client, `admin:{credential}`; on a failed token
    /// request the client it claimed to be.
    pub client_id: Option<String>,
    /// Whether `client_id` was proven (its credential checked and found good).
    pub proven: bool,
    /// The portal user (X-Portal-User) the vendor acts for.
    pub user_id: Option<String>,
    /// The clients (Patient ids) whose data it was, each once.
    pub patients: Vec<String>,
    /// Valid ids a request named beyond the first [`names::MAX_NAMED`] (at most [`names::MAX_OFFERED`],
    /// repeats included): those that are clients are named too when the record is written
    /// ([`track`]).
    pub offered: Vec<String>,
    /// Whether a request named more valid ids than that: it is refused unread.
    pub overflowed: bool,
    /// Per client, the resource types of its data served.
    pub types: Vec<(String, Vec<String>)>,
    /// Every resource the answer held, in its order: `Type/id`, the ids of resources of one
    /// type that follow each other comma-separated (`Observation/a,b Patient/p`).
    pub resources: String,
    /// A batch's counts (ingest): entries and how many were refused.
    pub detail: Option<String>,
    /// What the middleware knows before the handler runs (route, query, ids, address).
    pub draft: Option<Stored>,
    /// Set when the handler wrote the record itself, in its own transaction, with this
    /// status (a pushed transaction: one commit for both).
    pub recorded: Option<i64>,
}

impl Note {
    /// The record as far as the request's draft and this note tell it (status, reason and
    /// hashes are set by whoever writes it).
    fn record(&self) -> Stored {
        self.clone().into_record()
    }

    /// [`Note::record`], taking the note apart.
    fn into_record(self) -> Stored {
        let mut r = self.draft.unwrap_or_default();
        r.client_id = self.client_id;
        r.user_id = self.user_id;
        r.patient = (!self.patients.is_empty()).then(|| self.patients.join(" "));
        r.resources = (!self.resources.is_empty()).then_some(self.resources);
        r.detail = self.detail;
        r.types = self
            .types
            .into_iter()
            .map(|(p, types)| (p, types.join(" ")))
            .collect();
        r
    }
}

tokio::task_local! {
    static NOTE: Arc<Mutex<Note>>;
}

/// Adds to the current request's note (nothing outside a request).
pub fn note(f: impl FnOnce(&mut Note)) {
    let _ = NOTE.try_with(|n| {
        if let Ok(mut n) = n.lock() {
            f(&mut n);
        }
    });
}

/// The caller of the current request, its credential checked and found good.
pub fn caller(client_id: String) {
    note(|n| {
        n.client_id = Some(client_id);
        n.proven = true;
    });
}

/// A resource served to the current request, of `patient`'s dossier (if any).
pub fn served(resource_type: &str, id: &str, patient: Option<&str>) {
    note(|n| n.serve(resource_type, id, patient));
}

/// Resources served to the current request (`(type, id, patient)`, in the answer's order):
/// [`served`] for each, with the note taken once.
pub fn served_all<'a>(hits: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a str>)>) {
    note(|n| {
        for (resource_type, id, patient) in hits {
            n.serve(resource_type, id, patient);
        }
    });
}

/// What a staff action or look is about: the resource (in `resources`) and the clients whose
/// dossiers it has been in (named; no types: nothing of the data was served to a portal).
pub fn about(resource_type: &str, id: &str, patients: &[String]) {
    note(|n| n.list(resource_type, id));
    shows(patients.iter().map(String::as_str));
}

/// [`about`] the resource `Type/id` of the store, its clients looked up (every client a
/// version of it named: an answer about it may show each; a resource not (yet) there is
/// named alone).
pub async fn about_stored(
    db: &Db,
    resource_type: &str,
    id: &str,
) -> Result<(), crate::store::Error> {
    let patients = crate::store::release::owners(db, resource_type, id).await?;
    about(resource_type, id, &patients);
    Ok(())
}

/// Names a client the current request is about (a valid id, each once, at most
/// [`names::MAX_NAMED`] of those a request names without serving their data).
pub fn names(patient: &str) {
    note(|n| n.name(patient));
}

/// Names the clients whose data (not theirs alone: a page of several clients' messages) the
/// current request showed, each once.
pub fn shows<'a>(patients: impl IntoIterator<Item = &'a str>) {
    note(|n| {
        for p in patients {
            if !n.patients.iter().any(|q| q == p) {
                n.patients.push(p.to_string());
            }
        }
    });
}

impl Note {
    /// Adds `Type/id` to `resources` (or `,id` after a resource of the same type).
    fn list(&mut self, resource_type: &str, id: &str) {
        let group = self.resources.rfind(' ').map_or(0, |i| i + 1);
        let last = &self.resources.as_bytes()[group..];
        if !last.is_empty()
            && last.starts_with(resource_type.as_bytes())
            && last.get(resource_type.len()) == Some(&b'/')
        {
            self.resources.push(',');
        } else {
            if !self.resources.is_empty() {
                self.resources.push(' ');
            }
            self.resources.push_str(resource_type);
            self.resources.push('/');
        }
        self.resources.push_str(id);
    }

    /// Adds a served resource: to `resources` ([`Note::list`]), and to its client's types.
    pub(crate) fn serve(&mut self, resource_type: &str, id: &str, patient: Option<&str>) {
        self.list(resource_type, id);
        let Some(p) = patient else { return };
        if !self.patients.iter().any(|q| q == p) {
            self.patients.push(p.to_string());
        }
        match self.types.iter_mut().find(|(q, _)| q == p) {
            Some((_, types)) if types.iter().any(|t| t == resource_type) => {}
            Some((_, types)) => types.push(resource_type.to_string()),
            None => self
                .types
                .push((p.to_string(), vec![resource_type.to_string()])),
        }
    }
}

/// The counts of a batch taken in (a push, or a pulled page).
pub fn batch_detail(outcomes: &[crate::ingest::Outcome]) -> String {
    let refused = outcomes.iter().filter(|o| o.error.is_some()).count();
    format!("entries={} refused={refused}", outcomes.len())
}

/// The most characters of a request's method a record keeps (the standard ones have at most
/// 7; a made-up one is cut).
const METHOD_CHARS: usize = 16;

/// The characters of its query kept in the record of a request without a known caller.
const STRANGERS_QUERY: usize = 200;

/// Routes that touch no client data and are not recorded.
const UNRECORDED: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/fhir/metadata",
    "/.well-known/smart-configuration",
    "/fhir/.well-known/smart-configuration",
];

/// The action a route stands for, by its template and method.
pub fn action(route: &str, method: &str) -> &'static str {
    let fhir = route.starts_with("/fhir/");
    match (route, method) {
        ("/auth/token", _) => "token",
        ("/fhir/AuditEvent" | "/fhir/AuditEvent/{id}", _) => "audit view",
        ("/fhir/_history", _) => "history",
        ("/fhir/Communication", "POST") => "message",
        ("/fhir/Task", "POST") => "request",
        (
            "/fhir/{type}/{id}"
            | "/fhir/Consent/{id}"
            | "/fhir/Communication/{id}"
            | "/fhir/Task/{id}",
            _,
        ) => "read",
        _ if fhir => "search",
        _ if route.starts_with("/ingest/") && route.ends_with("$notify") => "notify",
        _ if route.starts_with("/ingest/") => "ingest",
        ("/portal/link", _) => "link",
        ("/portal/terms", _) => "terms",
        _ if route.starts_with("/portal/invitations") => "invite",
        _ if route.starts_with("/portal/grants") && method == "GET" => "grants",
        _ if route.starts_with("/portal/grants") => "grant change",
        _ if route.starts_with("/portal/") => "account",
        ("/admin/release", _) => "release",
        ("/admin/hold", _) => "hold",
        _ if route.starts_with("/admin/moderation/") => "moderation",
        _ if route.starts_with("/admin/requests/") && route.ends_with("/decide") => "decision",
        _ if route.ends_with("/block") || route.ends_with("/unblock") => "block",
        _ if route.starts_with("/admin/") => "admin",
        _ => "other",
    }
}

/// The middleware: runs the handler with a fresh note, then writes the record before the
/// response leaves; 503 if it cannot be written.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    if UNRECORDED.contains(&route.as_str()) || !state.config.audit.enabled {
        return next.run(request).await;
    }
    if state.auditor.refusing() {
        return ApiError::unavailable("the audit record cannot be written; try again later")
            .into_response();
    }
    // This middleware answers at the deadline and records the answer before it leaves.
    if let Some(recorded) = request.extensions().get::<crate::edge::Recorded>() {
        recorded.set();
    }
    // A method is a short word; one of any length is accepted by HTTP, and kept short here.
    let method: String = request
        .method()
        .as_str()
        .chars()
        .take(METHOD_CHARS)
        .collect();
    let query = request.uri().query().map(str::to_string);
    let header = |h: &HeaderMap, name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(200).collect::<String>())
    };
    let remote = crate::edge::remote_address(
        request.extensions(),
        request.headers(),
        &state.config.server.trusted_proxies,
    )
    .map(|ip| ip.to_string());
    // What the request is about, as its path and query say ([`names::Addressed`]).
    let mut named = Note::default();
    let addressed = names::Addressed::read(
        &route,
        &method,
        request.uri().path(),
        query.as_deref(),
        &mut named,
    );
    named.draft = Some(Stored {
        at: crate::time::to_micros(state.clock.wall()),
        action: action(&route, &method).to_string(),
        route,
        method,
        query: query.as_ref().map(|q| q.chars().take(2000).collect()),
        request_id: header(request.headers(), "x-request-id"),
        correlation_id: header(request.headers(), "x-correlation-id"),
        trace_id: header(request.headers(), "x-trace-id"),
        remote,
        ..Default::default()
    });
    // A query that names more clients than a search takes is refused before its handler
    // runs: no client past those looked up for its record is decided on.
    let overflowed = std::mem::take(&mut named.overflowed);
    let note = Arc::new(Mutex::new(named));
    // The request's deadline, a little before the edge's own (`edge::deadline`), so that a
    // request that runs out of time is answered, and recorded, here.
    let limit = state.config.server.request_timeout;
    let response = if overflowed {
        ApiError::unknown_parameter(format!(
            "the query names more than {} clients",
            names::MAX_NAMED + names::MAX_OFFERED
        ))
        .into_response()
    } else {
        match tokio::time::timeout(
            limit.saturating_sub(limit / 20),
            NOTE.scope(note.clone(), next.run(request)),
        )
        .await
        {
            Ok(response) => response,
            Err(_) => ApiError::timeout(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the request was not answered within server.request_timeout",
            )
            .into_response(),
        }
    };
    let mut note = note
        .lock()
        .map(|mut n| std::mem::take(&mut *n))
        .unwrap_or_default();
    if note.recorded == Some(i64::from(response.status().as_u16())) {
        return response;
    }
    addressed
        .name(&mut note, &state.db, response.status())
        .await;
    let proven = note.proven;
    let mut record = note.into_record();
    // A caller no credential vouches for (none sent, or a wrong one: a client only claimed
    // too) keeps its record short: the first 200 characters of its query, so that a
    // stranger's requests cost the trail little, however long they are.
    if !proven
        && let Some(q) = &mut record.query
        && let Some((cut, _)) = q.char_indices().nth(STRANGERS_QUERY)
    {
        q.truncate(cut);
    }
    record.status = i64::from(response.status().as_u16());
    record.reason = response
        .extensions()
        .get::<Reason>()
        .map(|r| r.code().to_string());
    // The id the edge gave the request (a sent one it kept, or one it made).
    if let Some(id) = header(response.headers(), "x-request-id") {
        record.request_id = Some(id);
    }
    match state.auditor.write(record).await {
        Ok(()) => response,
        Err(e) => {
            tracing::error!(error = %e, "cannot write the audit record: the request is refused");
            ApiError::unavailable("the audit record cannot be written; try again later")
                .into_response()
        }
    }
}

/// The current request reached no handler of its route (a method it does not take, a type
/// the route does not serve): it is about no client, whatever it named.
pub fn nowhere() {
    note(|n| {
        n.patients.clear();
        n.types.clear();
    });
}

/// Why a record was not written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct AuditError(String);

struct Pending {
    record: Stored,
    done: oneshot::Sender<Result<(), AuditError>>,
}

/// Writes records: on a SQLite file through the [`journal`], else straight into the tables,
/// the records of concurrent requests in one transaction.
pub struct Auditor {
    writer: Writer,
}

enum Writer {
    Direct(mpsc::Sender<Pending>),
    Journal(Arc<journal::Journal>),
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auditor")
    }
}

/// The most records one transaction takes.
const BATCH: usize = 256;

/// How often the writer yields to the request tasks before it commits a batch.
const LINGER: u32 = 64;

impl Auditor {
    /// Starts the writer: the journal of a SQLite file (moving what stopped processes left in
    /// it first), else the group commit.
    pub async fn start(db: Db) -> Result<Self, AuditError> {
        let writer = match db.sqlite_file().map(std::path::Path::to_path_buf) {
            Some(file) => Writer::Journal(journal::Journal::start(db, &file).await?),
            None => Writer::Direct(Self::direct(db)),
        };
        Ok(Self { writer })
    }

    /// Starts the group commit's writer (it ends when the last sender is dropped).
    fn direct(db: Db) -> mpsc::Sender<Pending> {
        let (queue, mut rx) = mpsc::channel::<Pending>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                // Before committing, let the tasks that are running now finish their requests
                // (each yield lets them run): under load the batch grows, and a commit's cost
                // (its log pages) is shared by more records; idle, it costs microseconds.
                for round in 0..=LINGER {
                    if round > 0 {
                        if batch.len() >= BATCH {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(p) => batch.push(p),
                            Err(_) => break,
                        }
                    }
                }
                let mut records: Vec<Stored> = batch.iter().map(|p| p.record.clone()).collect();
                match write_batch(&db, &mut records).await {
                    Ok(()) => {
                        for p in batch {
                            let _ = p.done.send(Ok(()));
                        }
                    }
                    // One record that cannot be written must not cost the others theirs.
                    Err(e) if batch.len() > 1 => {
                        tracing::warn!(error = %e, records = batch.len(), "an audit batch failed; writing its records one by one");
                        for p in batch {
                            let mut one = vec![p.record];
                            let result = write_batch(&db, &mut one)
                                .await
                                .map_err(|e| AuditError(crate::error::with_causes(&e)));
                            let _ = p.done.send(result);
                        }
                    }
                    Err(e) => {
                        for p in batch {
                            let _ = p.done.send(Err(AuditError(crate::error::with_causes(&e))));
                        }
                    }
                }
            }
        });
        queue
    }

    /// Writes one record; returns once it is committed (to the journal or the tables).
    pub async fn write(&self, record: Stored) -> Result<(), AuditError> {
        let queue = match &self.writer {
            Writer::Journal(j) => return j.append(record),
            Writer::Direct(queue) => queue,
        };
        let (done, answer) = oneshot::channel();
        queue
            .send(Pending { record, done })
            .await
            .map_err(|_| AuditError("the audit writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| AuditError("the audit writer has stopped".into()))?
    }
}

impl Auditor {
    /// Moves what the journal holds into the tables, so that a read of them sees every record
    /// this process wrote (nothing to do without a journal).
    pub async fn flush(&self) -> Result<(), AuditError> {
        match &self.writer {
            // On a task of its own: a request dropped meanwhile (its client went away) does
            // not cut a move short.
            Writer::Journal(j) => {
                let j = j.clone();
                tokio::spawn(async move { j.flush().await })
                    .await
                    .map_err(|e| AuditError(format!("the audit journal's move failed: {e}")))?
            }
            Writer::Direct(_) => Ok(()),
        }
    }

    /// Whether a request would be refused for want of its record (the journal's moves fail):
    /// it is then refused before its handler changes anything.
    pub fn refusing(&self) -> bool {
        match &self.writer {
            Writer::Journal(j) => j.failing(),
            Writer::Direct(_) => false,
        }
    }
}

/// [`Auditor::flush`] before a handler reads the log (503 if it cannot be done).
pub async fn flushed(state: &AppState) -> Result<(), ApiError> {
    state.auditor.flush().await.map_err(|e| {
        tracing::error!(error = %e, "cannot move audit records into the log");
        ApiError::unavailable("the audit log cannot be read now; try again later")
    })
}

/// Appends the current request's record inside `tx` (the handler's own write transaction),
/// with `status` and `detail`; whether there was a request to record. The caller marks the
/// note with [`recorded`] once `tx` has committed.
pub async fn append_in(
    tx: &mut crate::store::db::Tx,
    status: i64,
    detail: String,
) -> Result<bool, crate::store::Error> {
    let Ok(Some(mut record)) = NOTE.try_with(|n| {
        n.lock()
            .ok()
            .and_then(|n| n.draft.is_some().then(|| n.record()))
    }) else {
        return Ok(false);
    };
    record.status = status;
    record.detail = Some(detail);
    crate::store::audit::lock(tx).await?;
    chain_in(tx, std::slice::from_mut(&mut record)).await?;
    Ok(true)
}

/// Marks the current request as recorded with `status` (after [`append_in`]'s commit).
pub fn recorded(status: i64) {
    note(|n| n.recorded = Some(status));
}

/// Chains `records` to the head of the log and appends them, in one transaction.
async fn write_batch(db: &Db, records: &mut [Stored]) -> Result<(), crate::store::Error> {
    let mut tx = crate::store::audit::begin(db).await?;
    chain_in(&mut tx, records).await?;
    tx.commit().await?;
    Ok(())
}

/// Chains `records` to the head of the log and appends them in `tx`, which holds the chain's
/// lock ([`crate::store::audit::begin`] or [`crate::store::audit::lock`]).
pub(crate) async fn chain_in(
    tx: &mut crate::store::db::Tx,
    records: &mut [Stored],
) -> Result<(), crate::store::Error> {
    let (mut seq, mut prev) = crate::store::audit::head(tx).await?;
    for r in records.iter_mut() {
        seq += 1;
        r.seq = seq;
        r.prev_hash = prev;
        r.hash = chain::hash(r);
        prev = r.hash.clone();
    }
    crate::store::audit::append(tx, records).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_served_one_after_another_of_one_type_are_one_group_in_order() {
        let mut n = Note::default();
        n.serve("Observation", "o1", Some("p1"));
        n.serve("Observation", "o2", Some("p1"));
        n.serve("Practitioner", "dr", None);
        n.serve("Observation", "o3", Some("p2"));
        n.serve("Obs", "x", Some("p2"));
        n.serve("Observation", "o4", Some("p1"));
        assert_eq!(
            n.resources,
            "Observation/o1,o2 Practitioner/dr Observation/o3 Obs/x Observation/o4"
        );
        assert_eq!(n.patients, vec!["p1", "p2"]);
        assert_eq!(
            n.types,
            vec![
                ("p1".to_string(), vec!["Observation".to_string()]),
                (
                    "p2".to_string(),
                    vec!["Observation".to_string(), "Obs".to_string()]
                ),
            ]
        );
        // After a list a handler set itself, by its last group.
        let mut n = Note {
            resources: "Task/t1 Communication/c1".into(),
            ..Default::default()
        };
        n.serve("Task", "t2", None);
        n.serve("Communication", "c2", None);
        assert_eq!(
            n.resources,
            "Task/t1 Communication/c1 Task/t2 Communication/c2"
        );
        let mut n = Note {
            resources: "Task/t1".into(),
            ..Default::default()
        };
        n.serve("Task", "t2", None);
        assert_eq!(n.resources, "Task/t1,t2");
        assert_eq!(n.into_record().resources.as_deref(), Some("Task/t1,t2"));
    }
}
