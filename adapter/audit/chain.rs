//! The hash chain: each record's hash covers its own fields and the hash of the record before
//! it, so that a record changed, removed or slipped in breaks the chain from there on.
//! `sluis audit verify` walks it from the first record.

use crate::store::Db;
use crate::store::audit::{GENESIS, Stored, after, anchor, kept_head, patients_between, strays};
use crate::time::IsoDuration;
use sha2::{Digest, Sha256};

/// The hash of a record: SHA-256 over the hash before it and the record's fields (as a JSON
/// array in a fixed order), in hex.
pub fn hash(r: &Stored) -> String {
    let mut types: Vec<&(String, String)> = r.types.iter().collect();
    types.sort();
    let mut h = Sha256::new();
    h.update(r.prev_hash.as_bytes());
    h.update(b"\n");
    // Written straight into the hash: the bytes `serde_json` gives the array.
    if serde_json::to_writer(&mut h, &Fields(r, &types)).is_err() {
        // Serializing strings and numbers into a hash does not fail; were it to, the hash
        // would not match and `verify` would say so.
        return String::new();
    }
    format!("{:x}", h.finalize())
}

/// A record's hashed fields, as one JSON array.
struct Fields<'a>(&'a Stored, &'a [&'a (String, String)]);

impl serde::Serialize for Fields<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let r = self.0;
        // A trace id joins the array only when present, so that records without one (all
        // those written before it was recorded) keep the hash they were given.
        let mut t = s.serialize_tuple(17 + usize::from(r.trace_id.is_some()))?;
        t.serialize_element(self.1)?;
        t.serialize_element(&r.seq)?;
        t.serialize_element(&r.at)?;
        t.serialize_element(&r.action)?;
        t.serialize_element(&r.route)?;
        t.serialize_element(&r.method)?;
        t.serialize_element(&r.query)?;
        t.serialize_element(&r.client_id)?;
        t.serialize_element(&r.user_id)?;
        t.serialize_element(&r.patient)?;
        t.serialize_element(&r.resources)?;
        t.serialize_element(&r.detail)?;
        t.serialize_element(&r.status)?;
        t.serialize_element(&r.reason)?;
        t.serialize_element(&r.request_id)?;
        t.serialize_element(&r.correlation_id)?;
        t.serialize_element(&r.remote)?;
        if let Some(trace) = &r.trace_id {
            t.serialize_element(trace)?;
        }
        t.end()
    }
}

/// What a walk of the chain found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every record is in place: how many.
    Intact(u64),
    /// The first record that does not fit, and why.
    Broken { seq: i64, why: String },
}

/// Checks records in order, each against the one before it.
struct Walk {
    /// The `seq` the next record must have.
    expected: i64,
    /// The hash it must follow; `None` for a walk that starts where the chain was cut.
    prev: Option<String>,
}

impl Walk {
    /// Why `r` does not fit (its clients kept beside it are `kept`), if it does not.
    fn check(&mut self, mut r: Stored, kept: &[&(i64, String, Option<String>)]) -> Option<Verdict> {
        let broken = |seq: i64, why: &str| {
            Some(Verdict::Broken {
                seq,
                why: why.to_string(),
            })
        };
        // The record's clients as kept beside it: exactly those its `patient` names, with
        // the types that are part of its hash.
        let mut named: Vec<&str> = r
            .patient
            .iter()
            .flat_map(|p| p.split(' '))
            .filter(|p| !p.is_empty())
            .collect();
        named.sort_unstable();
        named.dedup();
        if kept.iter().map(|(_, p, _)| p.as_str()).collect::<Vec<_>>() != named {
            return broken(
                r.seq,
                "the clients kept beside it are not the ones it names",
            );
        }
        r.types = kept
            .iter()
            .filter_map(|(_, p, t)| t.clone().map(|t| (p.clone(), t)))
            .collect();
        if r.seq != self.expected {
            return Some(Verdict::Broken {
                seq: self.expected,
                why: format!(
                    "record {} is missing (the next is {})",
                    self.expected, r.seq
                ),
            });
        }
        if self.prev.as_ref().is_some_and(|p| *p != r.prev_hash) {
            return broken(
                r.seq,
                "it does not follow the record before it (one was removed, changed or slipped in)",
            );
        }
        if hash(&r) != r.hash {
            return broken(
                r.seq,
                "its content does not match its hash (it was changed)",
            );
        }
        self.prev = Some(r.hash);
        self.expected += 1;
        None
    }
}

/// Walks records from `walk.expected` on, a page at a time, up to `last` (inclusive);
/// `visit` sees each record that fits. The first break, if any.
async fn walk(
    db: &Db,
    walk: &mut Walk,
    last: i64,
    mut visit: impl FnMut(&Stored),
) -> Result<Option<Verdict>, crate::store::Error> {
    loop {
        let from = walk.expected - 1;
        let mut page = match after(db, from, 5000).await {
            Ok(page) => page,
            Err(e) => return mistyped_or(db, from, e).await,
        };
        page.retain(|r| r.seq <= last);
        let (Some(first), Some(end)) = (page.first(), page.last()) else {
            return Ok(None);
        };
        let rows = match patients_between(db, first.seq, end.seq).await {
            Ok(rows) => rows,
            Err(e) => return mistyped_or(db, from, e).await,
        };
        for r in page {
            let kept: Vec<&(i64, String, Option<String>)> =
                rows.iter().filter(|(seq, _, _)| *seq == r.seq).collect();
            let seen = r.clone();
            if let Some(v) = walk.check(r, &kept) {
                return Ok(Some(v));
            }
            visit(&seen);
        }
    }
}

/// A page that cannot be read: the first record a value of the wrong kind made unreadable,
/// named as broken; else the error as it came.
async fn mistyped_or(
    db: &Db,
    after: i64,
    e: crate::store::Error,
) -> Result<Option<Verdict>, crate::store::Error> {
    match crate::store::audit::mistyped(db, after).await? {
        Some(seq) => Ok(Some(Verdict::Broken {
            seq,
            why: "a field holds a value of the wrong kind (changed outside the adapter)".into(),
        })),
        None => Err(e),
    }
}

/// Walks the whole chain, a page at a time: from the first record, or after a prune from the
/// record after its anchor, which a `prune` record further on must vouch for. Records a prune
/// cut short left at or below the anchor must still lead up to it.
pub async fn verify(db: &Db) -> Result<Verdict, crate::store::Error> {
    let stray = strays(db).await?;
    if stray > 0 {
        return Ok(Verdict::Broken {
            seq: 0,
            why: format!(
                "{stray} rows stand outside the chain (numbered below 1, or of no record)"
            ),
        });
    }
    // The head as kept before the walk: every record up to it was committed by then.
    let head = kept_head(db).await?;
    let anchor = anchor(db).await?;
    if let Some(a) = &anchor
        && let Some(first) = after(db, 0, 1).await?.first()
        && first.seq <= a.upto
    {
        let mut left = Walk {
            expected: first.seq,
            prev: None,
        };
        if let Some(v) = walk(db, &mut left, a.upto, |_| {}).await? {
            return Ok(v);
        }
        if left.expected != a.upto + 1 || left.prev.as_deref() != Some(a.hash.as_str()) {
            return Ok(Verdict::Broken {
                seq: left.expected.min(a.upto),
                why: "the records left below the chain's anchor do not lead up to it".into(),
            });
        }
    }
    let mut chain = match &anchor {
        Some(a) => Walk {
            expected: a.upto + 1,
            prev: Some(a.hash.clone()),
        },
        None => Walk {
            expected: 1,
            prev: Some(GENESIS.to_string()),
        },
    };
    let start = chain.expected;
    // The prune record that vouches for the anchor: it names it, was made when the anchor
    // was, not in the future, and removed nothing younger than five years then (R18).
    let vouching = anchor.as_ref().map(super::prune::vouching);
    let mut vouched: Option<Result<(), String>> = anchor.is_none().then_some(Ok(()));
    let mut replaced = false;
    let now = crate::time::to_micros(crate::clock::Clock::system().wall());
    if let Some(v) = walk(db, &mut chain, i64::MAX, |r| {
        if head
            .as_ref()
            .is_some_and(|(seq, hash)| r.seq == *seq && r.hash != *hash)
        {
            replaced = true;
        }
        if let (Some(a), Some(detail)) = (&anchor, &vouching)
            && r.action == "prune"
            && r.detail.as_ref() == Some(detail)
        {
            let five_years_before = crate::time::to_micros(
                IsoDuration::years(5).before(crate::time::from_micros(r.at)),
            );
            vouched = Some(if r.at != a.at {
                Err(format!(
                    "the prune record {} was not made when the anchor was",
                    r.seq
                ))
            } else if r.at > now + 300_000_000 {
                Err(format!("the prune record {} is dated in the future", r.seq))
            } else if a.before > five_years_before {
                Err(format!(
                    "the prune record {} removed records younger than five years",
                    r.seq
                ))
            } else {
                Ok(())
            });
        }
    })
    .await?
    {
        return Ok(v);
    }
    if let Some(v) = end_of_log(db, head, chain.expected - 1, replaced).await? {
        return Ok(v);
    }
    let count = u64::try_from(chain.expected - start).unwrap_or(0);
    match (vouched, &anchor) {
        (Some(Ok(())), _) | (_, None) => Ok(Verdict::Intact(count)),
        (Some(Err(why)), Some(a)) => Ok(Verdict::Broken {
            seq: a.upto + 1,
            why: format!("the chain starts after record {}, but {why}", a.upto),
        }),
        (None, Some(a)) => Ok(Verdict::Broken {
            seq: a.upto + 1,
            why: format!(
                "the chain starts after record {}, but no prune up to it is recorded",
                a.upto
            ),
        }),
    }
}

/// Whether the walk, which ended at record `last`, ended where the log's head says: the head
/// kept before the walk (`before`) must be among the records walked, with its hash (else the
/// end of the log was cut off or `replaced`), and the head kept after it must not be behind
/// the last record walked (else records were slipped in at the end).
async fn end_of_log(
    db: &Db,
    before: Option<(i64, String)>,
    last: i64,
    replaced: bool,
) -> Result<Option<Verdict>, crate::store::Error> {
    let Some((seq, _)) = before else {
        return Ok(Some(Verdict::Broken {
            seq: 0,
            why: "the log's head (table audit_head) was removed: an end cut off would not show"
                .into(),
        }));
    };
    if last < seq {
        return Ok(Some(Verdict::Broken {
            seq: last + 1,
            why: format!(
                "the log ends at record {last}, but its head says record {seq} was written: the records after {last} were removed"
            ),
        }));
    }
    if replaced {
        return Ok(Some(Verdict::Broken {
            seq,
            why: "it is not the record the log's head names (the end of the log was replaced)"
                .into(),
        }));
    }
    match kept_head(db).await? {
        Some((now, _)) if now >= last => Ok(None),
        Some((now, _)) => Ok(Some(Verdict::Broken {
            seq: now + 1,
            why: format!(
                "the log's head says record {now} is the last written, but the log goes on to {last} (records were slipped in at the end)"
            ),
        })),
        None => Ok(Some(Verdict::Broken {
            seq: 0,
            why: "the log's head (table audit_head) was removed during the check".into(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash as it was first written (a JSON value built, then printed): records chained
    /// then must verify now.
    fn hash_as_first_written(r: &Stored) -> String {
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

    #[test]
    fn the_hash_is_the_one_first_written() {
        let mut r = Stored {
            seq: 42,
            at: -1_700_000_000_123_456,
            action: "search".into(),
            route: "/fhir/{type}".into(),
            method: "GET".into(),
            query: Some("patient=p1&code=\"x\"\\\u{7}é😀\u{2028}".into()),
            client_id: Some("portal".into()),
            patient: Some("p2 p1".into()),
            resources: Some("Observation/o1 Patient/p1".into()),
            status: 200,
            prev_hash: GENESIS.into(),
            types: vec![
                ("p2".into(), "Observation".into()),
                ("p1".into(), "Patient Observation".into()),
            ],
            ..Default::default()
        };
        assert_eq!(hash(&r), hash_as_first_written(&r));
        r.types.clear();
        r.query = None;
        r.reason = Some("consent".into());
        r.status = 403;
        assert_eq!(hash(&r), hash_as_first_written(&r));
        let empty = Stored::default();
        assert_eq!(hash(&empty), hash_as_first_written(&empty));
    }

    #[test]
    fn a_trace_id_is_hashed_when_present_and_absent_changes_nothing() {
        let mut r = Stored {
            seq: 7,
            action: "read".into(),
            request_id: Some("req-1".into()),
            prev_hash: GENESIS.into(),
            ..Default::default()
        };
        let without = hash(&r);
        assert_eq!(without, hash_as_first_written(&r));
        r.trace_id = Some("trace.1".into());
        let with = hash(&r);
        assert_ne!(with, without, "the trace id is covered by the hash");
        r.trace_id = Some("trace.2".into());
        assert_ne!(hash(&r), with, "a changed trace id breaks the hash");
        r.trace_id = Some(String::new());
        assert_ne!(
            hash(&r),
            without,
            "an empty trace id is not the same as none"
        );
    }
}
