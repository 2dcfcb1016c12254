//! A lone transaction Bundle, checked and written at the same time.
//!
//! The usual path checks and prepares every entry on the cores, then writes them all: with one
//! record system pushing, the writer waits for the checks and the cores wait for the writer.
//! When no other write is under way and the Bundle needs no lookup (no `ifNoneExist`, no
//! conditional reference), its entries go in parts of [`PART`] through one lane per core
//! (check, ids and references, search values, JSON and hash), and the transaction writes each
//! part as soon as it is ready, while the lanes check the next ones. A problem in any entry
//! still refuses the whole Bundle, with every problem found: the transaction is rolled back
//! and nothing is stored. With other writes under way the usual path is taken, so that the
//! writer is held only while it writes.

use super::entries::{Entry, Mode};
use super::resolve::{self, Targets};
use super::{Outcome, Prepared, begin, check_entry, cores, not_valid, prepare_version};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult, Detail};
use crate::time::Micros;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Entries per part: small enough that the writer starts early, large enough that a part's
/// lookups and statements are not mostly overhead.
pub(super) const PART: usize = 16;

/// Writes under way on one store (both paths), kept in the application's state.
#[derive(Debug, Default)]
pub struct Writes(AtomicUsize);

impl Writes {
    /// A write starts; it counts until the returned value is dropped.
    pub(super) fn start(&self) -> Writing<'_> {
        self.0.fetch_add(1, Ordering::AcqRel);
        Writing(&self.0)
    }
}

/// A write under way.
pub(super) struct Writing<'a>(&'a AtomicUsize);

impl Writing<'_> {
    /// No other write is under way.
    fn alone(&self) -> bool {
        self.0.load(Ordering::Acquire) == 1
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether these entries take this path: a transaction of at least two parts that needs no
/// lookup, written while no other write is under way.
pub(super) fn suits(mode: Mode, entries: &[Entry], writing: &Writing<'_>) -> bool {
    mode == Mode::Transaction
        && entries.len() > PART
        && writing.alone()
        && !resolve::needs_store(entries)
}

/// One entry after its lane.
// Nearly every entry is `Ready`: boxing it would cost an allocation each, to save none.
#[allow(clippy::large_enum_variant)]
enum Checked {
    Ready(Prepared),
    /// Not valid FHIR R4.
    Invalid(Vec<Detail>),
    /// Valid, but a reference names no entry of the Bundle.
    Unresolved(ApiError),
}

fn check_one(
    state: &AppState,
    mode: Mode,
    e: Entry,
    target: (String, String),
    targets: &Targets,
) -> Checked {
    let details = check_entry(mode, &e);
    if !details.is_empty() {
        return Checked::Invalid(details);
    }
    match resolve::resolve_one(mode, e, target, targets) {
        Ok(ready) => Checked::Ready(prepare_version(state, ready)),
        Err(e) => Checked::Unresolved(e),
    }
}

/// Writes a transaction's entries all or nothing, checking later parts while earlier ones
/// are written.
pub(super) async fn write(
    state: &AppState,
    source: &str,
    mode: Mode,
    entries: Vec<Entry>,
    arrived_at: Option<Micros>,
) -> ApiResult<Vec<Outcome>> {
    let started = Instant::now();
    let resources = entries.len();
    // The writer first, while the cores are still free to run `BEGIN` at once.
    let (mut tx, waited) = begin(state).await?;
    let (of, targets) = resolve::targets(&entries);
    let targets = Arc::new(targets);

    // The parts, dealt to the lanes in turn (lane 0 takes parts 0, 2, 4 … on 2 cores), so
    // that they are ready one after another, in order.
    let mut items = entries.into_iter().zip(of);
    let mut parts = Vec::new();
    loop {
        let part: Vec<(Entry, (String, String))> = items.by_ref().take(PART).collect();
        if part.is_empty() {
            break;
        }
        parts.push(part);
    }
    let lanes = cores().min(parts.len()).max(1);
    let mut dealt: Vec<Vec<_>> = (0..lanes).map(|_| Vec::new()).collect();
    let mut ready = Vec::with_capacity(parts.len());
    for (i, part) in parts.into_iter().enumerate() {
        let (send, receive) = oneshot::channel::<Vec<Checked>>();
        dealt[i % lanes].push((part, send));
        ready.push(receive);
    }
    for lane in dealt {
        let state = state.clone();
        let targets = targets.clone();
        // Not awaited: each part is received below; a lane that fails drops its senders.
        drop(tokio::task::spawn_blocking(move || {
            for (part, send) in lane {
                let checked = part
                    .into_iter()
                    .map(|(e, target)| check_one(&state, mode, e, target, &targets))
                    .collect();
                if send.send(checked).is_err() {
                    // The write was given up (refused or cancelled): the rest is not needed.
                    return;
                }
            }
        }));
    }

    let now = arrived_at.unwrap_or_else(|| crate::time::to_micros(state.clock.now()));
    let mut outcomes = Vec::with_capacity(resources);
    let mut details: Vec<Detail> = Vec::new();
    let mut unresolved: Option<ApiError> = None;
    let mut writing = Duration::ZERO;
    for part in ready {
        let checked = part.await.map_err(|e| ApiError::internal(e.into()))?;
        let mut prepared = Vec::with_capacity(checked.len());
        for c in checked {
            match c {
                Checked::Ready(p) => prepared.push(p),
                Checked::Invalid(d) => details.extend(d),
                Checked::Unresolved(e) => {
                    unresolved.get_or_insert(e);
                }
            }
        }
        if details.is_empty() && unresolved.is_none() {
            let began = Instant::now();
            outcomes.extend(super::write_prepared(state, &mut tx, source, prepared, now).await?);
            writing += began.elapsed();
        }
    }
    // Dropped, the transaction rolls back: nothing of a refused Bundle is stored.
    if !details.is_empty() {
        return Err(not_valid(mode, details));
    }
    if let Some(e) = unresolved {
        return Err(e);
    }
    let committing = Instant::now();
    tx.commit().await?;
    let us = |d: Duration| d.as_micros() as u64;
    tracing::debug!(
        target: "sluis::ingest",
        resources,
        writer_wait_us = us(waited),
        write_us = us(writing),
        commit_us = us(committing.elapsed()),
        total_us = us(started.elapsed()),
        "written while checked"
    );
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::entries::Method;
    use serde_json::json;

    fn entries(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                index: i,
                full_url: None,
                method: Method::Update,
                target: Some(("Observation".into(), format!("o{i}"))),
                if_none_exist: None,
                resource: Some(json!({"resourceType": "Observation", "id": format!("o{i}")})),
            })
            .collect()
    }

    #[test]
    fn only_a_lone_transaction_of_parts_without_lookups_is_pipelined() {
        let writes = Writes::default();
        let one = writes.start();
        assert!(suits(Mode::Transaction, &entries(PART + 1), &one));
        assert!(!suits(Mode::Transaction, &entries(PART), &one));
        assert!(!suits(Mode::Batch, &entries(PART + 1), &one));
        let mut lookup = entries(PART + 1);
        lookup[3].method = Method::Create;
        lookup[3].if_none_exist = Some("identifier=x|1".into());
        assert!(!suits(Mode::Transaction, &lookup, &one));
        let other = writes.start();
        assert!(!suits(Mode::Transaction, &entries(PART + 1), &one));
        drop(other);
        assert!(suits(Mode::Transaction, &entries(PART + 1), &one));
    }
}
