//! The delay part of `GET /admin/explain` (and of the answers of `/admin/release` and
//! `/admin/hold`): per version its client, section, rule, arrival, release moment and state;
//! the staff actions with who and when; the holder's waiver. Read through the pool: explaining
//! never takes the writer.

use crate::app::AppState;
use crate::error::ApiResult;
use crate::store::Pairs;
use crate::store::release as store;
use crate::store::resources::{HIDDEN, WITHDRAWN};
use crate::time::{Micros, from_micros, instant, to_micros};
use serde::Serialize;
use std::collections::BTreeSet;

/// Why a resource is or is not shown now, and from when it will be.
#[derive(Debug, Clone, Serialize)]
pub struct DelayExplanation {
    /// Whether the resource has arrived (a hold can be placed before).
    pub stored: bool,
    pub now: String,
    /// `Patient/id` of the newest version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The version served now, if any.
    pub shown_version: Option<i64>,
    pub next_release: Option<NextRelease>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionExplanation>,
    pub actions: Vec<ActionExplanation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiver: Option<WaiverExplanation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NextRelease {
    pub version: i64,
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionExplanation {
    pub version: i64,
    pub client: Option<String>,
    pub section: Option<String>,
    pub rule: String,
    pub arrived_at: String,
    pub release_at: Option<String>,
    /// `shown`, `superseded`, `waiting`, `held until released`, `never`, `unmapped`, `withdrawn`.
    pub state: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionExplanation {
    pub action: String,
    pub until: Option<String>,
    pub by: String,
    pub at: String,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WaiverExplanation {
    pub sections: BTreeSet<String>,
    pub by_user: i64,
    pub since: String,
}

/// A stored moment as served.
pub fn moment(m: Option<Micros>) -> Option<String> {
    m.map(|m| instant(from_micros(m)))
}

/// Explains the delay of `type/id` at the adapter's now.
pub async fn delay_part(state: &AppState, ty: &str, id: &str) -> ApiResult<DelayExplanation> {
    let now = to_micros(state.clock.now());
    let keys = [(ty.to_string(), id.to_string())];
    let actions: Vec<ActionExplanation> = store::actions_for(&state.db, &keys, Pairs::Kept)
        .await?
        .remove(&keys[0])
        .unwrap_or_default()
        .into_iter()
        .map(|a| ActionExplanation {
            action: a.action,
            until: moment(a.until),
            by: a.actor,
            at: instant(from_micros(a.at)),
            note: a.note,
        })
        .collect();
    let mut out = DelayExplanation {
        stored: false,
        now: instant(from_micros(now)),
        client: None,
        section: None,
        rule: None,
        shown_version: None,
        next_release: None,
        versions: Vec::new(),
        actions,
        waiver: None,
    };
    let Some(resource_id) = store::resource_id(&state.db, ty, id).await? else {
        return Ok(out);
    };
    let list = store::versions_of(&state.db, &[resource_id])
        .await?
        .remove(&resource_id)
        .unwrap_or_default();
    let served = list
        .iter()
        .rposition(|v| v.release_at.is_some_and(|r| r <= now))
        .filter(|&i| list[i].withdrawn == 0);
    for (i, v) in list.iter().enumerate() {
        let state_of = if v.withdrawn == WITHDRAWN {
            "withdrawn"
        } else if Some(i) == served {
            "shown"
        } else if v.withdrawn == HIDDEN {
            if v.rule.starts_with("unmapped") {
                "unmapped"
            } else {
                "never"
            }
        } else if v.release_at.is_some_and(|r| r <= now) || i + 1 < list.len() {
            "superseded"
        } else if let Some(r) = v.release_at {
            out.next_release = Some(NextRelease {
                version: v.version_no,
                at: instant(from_micros(r)),
            });
            "waiting"
        } else {
            "held until released"
        };
        out.versions.push(VersionExplanation {
            version: v.version_no,
            client: v.patient_id.as_ref().map(|p| format!("Patient/{p}")),
            section: v.section.clone(),
            rule: v.rule.clone(),
            arrived_at: instant(from_micros(v.arrived_at)),
            release_at: moment(v.release_at),
            state: state_of,
        });
    }
    let newest = list.last();
    out.stored = true;
    out.client = newest
        .and_then(|v| v.patient_id.as_ref())
        .map(|p| format!("Patient/{p}"));
    out.section = newest.and_then(|v| v.section.clone());
    out.rule = newest.map(|v| v.rule.clone());
    out.shown_version = served.map(|i| list[i].version_no);
    if let Some(p) = newest.and_then(|v| v.patient_id.as_deref())
        && state.config.embargo.client_may_waive
    {
        out.waiver = store::current_waiver(&state.db, p)
            .await?
            .map(|(sections, user, at)| WaiverExplanation {
                sections,
                by_user: user,
                since: instant(from_micros(at)),
            });
    }
    Ok(out)
}
