//! Pruning (`sluis audit prune`): removes the records older than the retention period while
//! the rest of the chain still verifies. Under the chain's lock it sets an anchor (the last
//! record removed and its hash, which the first remaining record chains to) and appends a
//! `prune` record that names the anchor, so that the chain itself vouches for where it now
//! starts; then it removes the records up to the anchor a chunk at a time, outside the lock,
//! so that requests keep being recorded meanwhile. A prune cut short is finished by the next.

use super::chain;
use crate::store::Db;
use crate::store::audit::{self as store, Anchor, Stored};

/// What a prune did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// The last record removed (the chain goes on from the next), if any ever was.
    pub upto: Option<i64>,
    /// Records removed by this run.
    pub removed: u64,
}

/// The detail of the `prune` record that vouches for `a`.
pub fn vouching(a: &Anchor) -> String {
    format!("upto={} hash={} before={}", a.upto, a.hash, a.before)
}

/// Records removed per transaction.
const CHUNK: i64 = 10_000;

/// Removes every record older than `before` (µs), as a record made at `now` (µs) says.
pub async fn prune(db: &Db, before: i64, now: i64) -> Result<Pruned, crate::store::Error> {
    let mut tx = store::begin(db).await?;
    let (head, prev) = store::head(&mut tx).await?;
    let latest = store::anchor(&mut tx).await?;
    let upto = match store::prunable(&mut tx, before).await? {
        Some((upto, hash)) if latest.as_ref().is_none_or(|a| upto > a.upto) => {
            let anchor = Anchor {
                upto,
                hash,
                before,
                at: now,
            };
            store::add_anchor(&mut tx, &anchor).await?;
            let mut record = Stored {
                seq: head + 1,
                at: now,
                action: "prune".into(),
                route: "sluis audit prune".into(),
                method: "CLI".into(),
                detail: Some(vouching(&anchor)),
                status: 200,
                prev_hash: prev,
                ..Default::default()
            };
            record.hash = chain::hash(&record);
            store::append(&mut tx, std::slice::from_ref(&record)).await?;
            tx.commit().await?;
            Some(upto)
        }
        _ => {
            drop(tx);
            latest.map(|a| a.upto)
        }
    };
    let mut removed = 0;
    if let Some(upto) = upto {
        loop {
            let n = store::remove_upto(db, upto, CHUNK).await?;
            if n == 0 {
                break;
            }
            removed += n;
        }
    }
    Ok(Pruned { upto, removed })
}
