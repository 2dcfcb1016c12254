//! Preparing a checked resource for the store: its JSON as stored (with `meta` kept apart), its
//! hash (idempotency), its search values and references, its section and embargo rule, and
//! fhirbolt's verdict on the body as stored. CPU work, done on every core before the write
//! transaction.

use super::entries::{Mode, entry_path};
use super::{Ready, check, index, not_valid};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult, Detail};
use crate::mapping::Facts;
use crate::release::{self, Placement};
use sha2::{Digest, Sha256};

/// A resource with what was read out of it (nothing for a delete).
pub(super) struct Prepared {
    pub resource_type: String,
    pub id: String,
    pub matched_existing: bool,
    /// `(body, hash, meta)`; `None` for a delete.
    pub body: Option<(String, String, String)>,
    pub indexed: Option<index::Indexed>,
    pub placement: Option<Placement>,
    pub tagged: bool,
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
    if let Some(problem) = check::check_structure(body, &r.resource_type, prefix) {
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

/// [`prepare_version`] of every resource, off the async threads; all or nothing.
pub(super) async fn prepare_all(
    state: &AppState,
    mode: Mode,
    ready: Vec<Ready>,
) -> ApiResult<Vec<Prepared>> {
    let state = state.clone();
    let results = super::cores::each(ready, move |r| prepare_version(&state, mode, r)).await?;
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

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}
