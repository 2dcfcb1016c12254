//! The hash chain: each record's hash covers its own fields and the hash of the record before
//! it, so that a record changed, removed or slipped in breaks the chain from there on.
//! `sluis audit verify` walks it from the first record.

use crate::store::Db;
use crate::store::audit::{GENESIS, Stored, after, anchor, patients_between, strays};
use sha2::{Digest, Sha256};

/// The hash of a record: SHA-256 over the hash before it and the record's fields (as a JSON
/// array in a fixed order), in hex.
pub fn hash(r: &Stored) -> String {
    let mut types = r.types.clone();
    types.sort();
    let fields = serde_json::json!([
        types,
        r.seq,
        r.at,
        r.action,
        r.route,
        r.method,
        r.query,
        r.client_id,
        r.user_id,
        r.patient,
        r.resources,
        r.detail,
        r.status,
        r.reason,
        r.request_id,
        r.correlation_id,
        r.remote,
    ]);
    let mut h = Sha256::new();
    h.update(r.prev_hash.as_bytes());
    h.update(b"\n");
    h.update(fields.to_string().as_bytes());
    format!("{:x}", h.finalize())
}

/// What a walk of the chain found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every record is in place: how many.
    Intact(u64),
    /// The first record that does not fit, and why.
    Broken { seq: i64, why: String },
}

/// Walks the whole chain, a page at a time: from the first record, or after a prune from the
/// record after its anchor, which a `prune` record further on must vouch for.
pub async fn verify(db: &Db) -> Result<Verdict, crate::store::Error> {
    let anchor = anchor(db).await?;
    let (mut expected_seq, mut prev) = match &anchor {
        Some(a) => (a.upto + 1, a.hash.clone()),
        None => (1i64, GENESIS.to_string()),
    };
    let vouching = anchor.as_ref().map(super::prune::vouching);
    let mut vouched = anchor.is_none();
    let mut count = 0u64;
    let stray = strays(db).await?;
    if stray > 0 {
        return Ok(Verdict::Broken {
            seq: 0,
            why: format!(
                "{stray} rows stand outside the chain (numbered below 1, or of no record)"
            ),
        });
    }
    loop {
        let page = after(db, expected_seq - 1, 5000).await?;
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            if let (false, Some(a)) = (vouched, &anchor) {
                return Ok(Verdict::Broken {
                    seq: a.upto + 1,
                    why: format!(
                        "the chain starts after record {}, but no prune up to it is recorded",
                        a.upto
                    ),
                });
            }
            return Ok(Verdict::Intact(count));
        };
        let rows = patients_between(db, first.seq, last.seq).await?;
        for mut r in page {
            // The record's clients as kept beside it: exactly those its `patient` names,
            // with the types that are part of its hash.
            let kept: Vec<&(i64, String, Option<String>)> =
                rows.iter().filter(|(seq, _, _)| *seq == r.seq).collect();
            let mut named: Vec<&str> = r
                .patient
                .iter()
                .flat_map(|p| p.split(' '))
                .filter(|p| !p.is_empty())
                .collect();
            named.sort_unstable();
            named.dedup();
            if kept.iter().map(|(_, p, _)| p.as_str()).collect::<Vec<_>>() != named {
                return Ok(Verdict::Broken {
                    seq: r.seq,
                    why: "the clients kept beside it are not the ones it names".into(),
                });
            }
            r.types = kept
                .iter()
                .filter_map(|(_, p, t)| t.clone().map(|t| (p.clone(), t)))
                .collect();
            if r.seq != expected_seq {
                return Ok(Verdict::Broken {
                    seq: expected_seq,
                    why: format!("record {expected_seq} is missing (the next is {})", r.seq),
                });
            }
            if r.prev_hash != prev {
                return Ok(Verdict::Broken {
                    seq: r.seq,
                    why: "it does not follow the record before it (one was removed, changed or slipped in)".into(),
                });
            }
            if hash(&r) != r.hash {
                return Ok(Verdict::Broken {
                    seq: r.seq,
                    why: "its content does not match its hash (it was changed)".into(),
                });
            }
            if r.action == "prune" && r.detail.is_some() && r.detail == vouching {
                vouched = true;
            }
            prev = r.hash;
            expected_seq += 1;
            count += 1;
        }
    }
}
