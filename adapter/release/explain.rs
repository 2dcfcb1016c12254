//! The delay part of `GET /admin/explain`: per version its rule, arrival, release moment and
//! state; the staff actions with who and when; the holder's waiver.

use super::actions::moment;
use crate::app::AppState;
use crate::error::ApiResult;
use crate::store::release as store;
use crate::store::resources::{HIDDEN, WITHDRAWN};
use crate::time::{from_micros, instant, to_micros};
use serde_json::{Value, json};

/// Explains the delay of `type/id` at the adapter's now.
pub async fn delay_part(state: &AppState, ty: &str, id: &str) -> ApiResult<Value> {
    let now = to_micros(state.clock.now());
    let mut tx = state.db.begin().await?;
    let keys = [(ty.to_string(), id.to_string())];
    let actions = store::actions_for(&mut tx, &keys).await?;
    let actions: Vec<Value> = actions
        .get(&keys[0])
        .into_iter()
        .flatten()
        .map(|a| {
            json!({"action": a.action, "until": moment(a.until), "by": a.actor, "at": instant(from_micros(a.at)), "note": a.note})
        })
        .collect();
    let Some(resource_id) = store::resource_id_in(&mut tx, ty, id).await? else {
        return Ok(json!({"stored": false, "now": instant(from_micros(now)), "actions": actions}));
    };
    let versions = store::versions_of(&mut tx, &[resource_id]).await?;
    drop(tx);
    let list = versions.get(&resource_id).cloned().unwrap_or_default();
    let served = list
        .iter()
        .rposition(|v| v.release_at.is_some_and(|r| r <= now))
        .filter(|&i| list[i].withdrawn == 0);
    let newest = list.last();
    let mut next_release = Value::Null;
    let rendered: Vec<Value> = list
        .iter()
        .enumerate()
        .map(|(i, v)| {
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
                next_release = json!({"version": v.version_no, "at": instant(from_micros(r))});
                "waiting"
            } else {
                "held until released"
            };
            json!({
                "version": v.version_no,
                "client": v.patient_id.as_ref().map(|p| format!("Patient/{p}")),
                "section": v.section,
                "rule": v.rule,
                "arrived_at": instant(from_micros(v.arrived_at)),
                "release_at": moment(v.release_at),
                "state": state_of,
            })
        })
        .collect();
    let waiver = match newest.and_then(|v| v.patient_id.clone()) {
        Some(p) if state.config.embargo.client_may_waive => store::current_waiver(&state.db, &p)
            .await?
            .map(|(sections, user, at)| json!({"sections": sections, "by_user": user, "since": instant(from_micros(at))})),
        _ => None,
    };
    Ok(json!({
        "stored": true,
        "now": instant(from_micros(now)),
        "client": newest.and_then(|v| v.patient_id.as_ref()).map(|p| format!("Patient/{p}")),
        "section": newest.and_then(|v| v.section.clone()),
        "rule": newest.map(|v| v.rule.clone()),
        "shown_version": served.map(|i| list[i].version_no),
        "next_release": next_release,
        "versions": rendered,
        "actions": actions,
        "waiver": waiver,
    }))
}
