//! The hash chain: each record's hash covers its own fields and the hash of the record before
//! it, so that a record changed, removed or slipped in breaks the chain from there on.
//! `sluis audit verify` walks it from the first record.

use crate::store::Db;
use crate::store::audit::{GENESIS, Stored, after};
use sha2::{Digest, Sha256};

/// The hash of a record: SHA-256 over the hash before it and the record's fields (as a JSON
/// array in a fixed order), in hex.
pub fn hash(r: &Stored) -> String {
    let fields = serde_json::json!([
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

/// Walks the whole chain, a page at a time.
pub async fn verify(db: &Db) -> Result<Verdict, crate::store::Error> {
    let (mut expected_seq, mut prev) = (1i64, GENESIS.to_string());
    let mut count = 0u64;
    loop {
        let page = after(db, expected_seq - 1, 5000).await?;
        if page.is_empty() {
            return Ok(Verdict::Intact(count));
        }
        for r in page {
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
            prev = r.hash;
            expected_seq += 1;
            count += 1;
        }
    }
}
