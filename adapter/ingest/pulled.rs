//! A page pulled from a record system, taken in as a pushed batch is: each resource checked
//! on its own (one that is not valid R4 is left aside, logged with its source, type and id),
//! the rest written in one transaction together with the source's cursor, so that a stop
//! between pages loses nothing and no page is half taken. A resource that another source
//! owns is left aside too (contract §3), as is everything while another process holds the
//! source's lease.

use super::entries::{Entry, Mode};
use super::{By, Outcome, Written, check, cores, not_valid, write_all};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::store::pull::{self as store, PageTaken};
use std::time::Instant;

/// What became of a page.
#[derive(Debug)]
pub enum Taken {
    /// Stored, with the cursor: what happened to each entry (in no fixed order).
    Stored(Vec<Outcome>),
    /// Another process holds the source's lease: nothing was stored.
    LeaseLost,
}

/// Takes in one page of `taken.source`.
pub async fn take_page(
    state: &AppState,
    entries: Vec<Entry>,
    taken: &PageTaken<'_>,
) -> ApiResult<Taken> {
    let started = Instant::now();
    let checked = cores::each(entries, |e: Entry| {
        let problems = check(Mode::Batch, &e);
        (e, problems)
    })
    .await?;
    let read_in = started.elapsed();
    let mut outcomes = Vec::new();
    let mut valid = Vec::with_capacity(checked.len());
    for (entry, problems) in checked {
        if problems.is_empty() {
            valid.push(entry);
            continue;
        }
        let (ty, id) = entry.target.clone().unwrap_or_default();
        tracing::warn!(
            source = taken.source,
            resource_type = %ty,
            id = %id,
            problem = %problems[0].message,
            "a pulled resource is not valid R4; left aside"
        );
        outcomes.push(Outcome::failed(
            ApiError::invalid(not_valid(Mode::Batch)).with_details(problems),
        ));
    }
    // Kept for the rare page that one entry spoils as a whole (a conditional reference that
    // matches nothing): then it is taken entry by entry.
    let copy = valid.clone();
    match write_all(
        state,
        taken.source,
        Mode::Batch,
        valid,
        None,
        read_in,
        By::Pull(taken),
    )
    .await
    {
        Ok(Written::Stored(o)) => outcomes.extend(o),
        Ok(Written::LeaseLost) => return Ok(Taken::LeaseLost),
        Err(e) if e.status.is_client_error() => {
            for entry in copy {
                match write_all(
                    state,
                    taken.source,
                    Mode::Batch,
                    vec![entry],
                    None,
                    read_in,
                    By::Push(None),
                )
                .await
                {
                    Ok(Written::Stored(o)) => outcomes.extend(o),
                    Ok(Written::LeaseLost) => return Ok(Taken::LeaseLost),
                    Err(e) if e.status.is_client_error() => outcomes.push(Outcome::failed(e)),
                    Err(e) => return Err(e),
                }
            }
            let mut tx = state.db.begin().await?;
            if !store::holds(&mut tx, taken.source, taken.holder).await? {
                return Ok(Taken::LeaseLost);
            }
            store::page_taken(&mut tx, taken).await?;
            tx.commit().await?;
        }
        Err(e) => return Err(e),
    }
    for o in outcomes.iter().filter(|o| o.error.is_some()) {
        if let Some(e) = &o.error {
            tracing::warn!(source = taken.source, resource_type = taken.resource_type, error = %e.message, "a pulled resource was not taken in");
        }
    }
    crate::metrics::ingested(taken.source, "pull", &outcomes);
    Ok(Taken::Stored(outcomes))
}
