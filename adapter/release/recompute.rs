//! Computing release moments again for versions not yet shown: after a staff release or hold,
//! a change of the holder's waiver, or a restart with changed rules. Shown versions keep their
//! moments; but where the rules now put the shown version, or the newest version, under
//! `never`, or the shown version in another section, the shown version is taken off the portal
//! at once (a withdrawal, as ingest does for an arriving version that does so): `never` is
//! absolute, and people never see a version in a section it no longer belongs to.

use super::{Action, Context, VersionState, place, schedule};
use crate::app::AppState;
use crate::fhir::definitions;
use crate::mapping::Facts;
use crate::mapping::embargo::Delay;
use crate::store::Pairs;
use crate::store::db::{Sql, Tx};
use crate::store::release::{self as store, Rescheduled};
use crate::store::resources::{HIDDEN, WITHDRAWN};
use crate::time::Micros;
use sha2::{Digest, Sha256};

/// Recomputes the versions of `resource_ids` that are not shown at `now`; returns how many
/// versions got a new moment, section or rule.
pub async fn resources(
    state: &AppState,
    tx: &mut Tx,
    resource_ids: &[i64],
    now: Micros,
) -> Result<usize, crate::store::Error> {
    let mut versions = store::versions_of(&mut *tx, resource_ids).await?;
    if tx.engine() == crate::store::db::Engine::Postgres {
        // Serialized with ingest of the same resources, then read again under the lock.
        let keys: Vec<(String, String)> = versions
            .values()
            .filter_map(|vs| vs.first())
            .map(|v| (v.resource_type.clone(), v.fhir_id.clone()))
            .collect();
        crate::store::resources::lock(tx, &keys).await?;
        versions = store::versions_of(&mut *tx, resource_ids).await?;
    }
    if take_off_changed(state, tx, &versions, now).await? {
        versions = store::versions_of(&mut *tx, resource_ids).await?;
    }
    let waiting: Vec<i64> = versions
        .values()
        .flatten()
        .filter(|v| v.withdrawn != WITHDRAWN && v.release_at.is_none_or(|r| r > now))
        .map(|v| v.id)
        .collect();
    if waiting.is_empty() {
        return Ok(0);
    }
    let tokens = store::rule_tokens(&mut *tx, &waiting).await?;
    let keys: Vec<(String, String)> = versions
        .values()
        .filter_map(|vs| vs.first())
        .map(|v| (v.resource_type.clone(), v.fhir_id.clone()))
        .collect();
    let actions = store::actions_for(&mut *tx, &keys, Pairs::Kept).await?;
    let patients: Vec<String> = versions
        .values()
        .flatten()
        .filter_map(|v| v.patient_id.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let waivers = if state.config.embargo.client_may_waive {
        store::waivers_for(&mut *tx, &patients).await?
    } else {
        Default::default()
    };
    let mut changed = Vec::new();
    for list in versions.values() {
        let mut states = Vec::with_capacity(list.len());
        let mut placements = Vec::with_capacity(list.len());
        for v in list {
            let is_waiting = waiting.contains(&v.id);
            let placement = if is_waiting {
                Some(placement_of(
                    state,
                    v,
                    tokens.get(&v.id).map_or(&[][..], Vec::as_slice),
                ))
            } else {
                None
            };
            let section = placement
                .as_ref()
                .map_or(v.section.clone(), |p| p.section.clone());
            let waived = match (&v.patient_id, &section) {
                (Some(p), Some(s)) => waivers.get(p).is_some_and(|w| w.contains(s)),
                _ => false,
            };
            let delay = match &placement {
                Some(p) => p.delay,
                None if v.withdrawn == HIDDEN => Delay::Never,
                None => Delay::Immediate,
            };
            states.push(VersionState {
                arrived_at: v.arrived_at,
                delay,
                tagged: v.tagged != 0,
                withdrawn: v.withdrawn == WITHDRAWN,
                waived,
                stored: v.release_at,
                client: v.patient_id.clone(),
            });
            placements.push(placement);
        }
        let staff: Vec<Action> = list
            .first()
            .and_then(|v| actions.get(&(v.resource_type.clone(), v.fhir_id.clone())))
            .map(|rows| rows.iter().map(Action::from).collect())
            .unwrap_or_default();
        let ctx = Context {
            on_update: state.config.embargo.on_update,
            now,
            settled: 0,
        };
        let moments = schedule(&states, &staff, &ctx);
        for ((v, placement), moment) in list.iter().zip(placements).zip(moments) {
            let Some(placement) = placement else { continue };
            let hidden = placement.delay == Delay::Never;
            if moment != v.release_at
                || placement.section != v.section
                || placement.rule != v.rule
                || hidden != (v.withdrawn == HIDDEN)
            {
                changed.push(Rescheduled {
                    version_id: v.id,
                    release_at: moment,
                    section: placement.section,
                    rule: placement.rule,
                    hidden,
                });
            }
        }
    }
    store::write_rescheduled(tx, &changed).await?;
    Ok(changed.len())
}

/// Takes shown versions off the portal where the current rules put them, or the newest
/// version of their resource, under `never`, or put the shown version in another section (its
/// people saw it there); whether any was. A reclassified version comes back at once as a copy
/// in its new section (its content was explained already); a newer version still to show keeps
/// coming the same way.
async fn take_off_changed(
    state: &AppState,
    tx: &mut Tx,
    versions: &std::collections::HashMap<i64, Vec<store::StoredVersion>>,
    now: Micros,
) -> Result<bool, crate::store::Error> {
    let shown: Vec<(&store::StoredVersion, &store::StoredVersion)> = versions
        .values()
        .filter_map(|list| {
            let shown = list
                .iter()
                .rev()
                .find(|v| v.release_at.is_some_and(|r| r <= now))
                .filter(|v| v.withdrawn == 0)?;
            Some((shown, list.last()?))
        })
        .collect();
    if shown.is_empty() {
        return Ok(false);
    }
    let ids: Vec<i64> = shown.iter().flat_map(|(s, l)| [s.id, l.id]).collect();
    let tokens = store::rule_tokens(&mut *tx, &ids).await?;
    let placed = |v: &store::StoredVersion| {
        placement_of(state, v, tokens.get(&v.id).map_or(&[][..], Vec::as_slice))
    };
    let mut any = false;
    for (s, last) in shown {
        let (now_s, now_last) = (placed(s), placed(last));
        let never = now_s.delay == Delay::Never || now_last.delay == Delay::Never;
        let moved = now_s.section != s.section;
        if !never && !moved {
            continue;
        }
        let (rule, copy) = if never {
            (
                "withdrawn: the rules now say never",
                last.id != s.id && last.withdrawn == 0 && now_last.delay != Delay::Never,
            )
        } else {
            ("withdrawn: the rules now place it in another section", true)
        };
        store::take_off(tx, s, last, now, rule, copy).await?;
        any = true;
    }
    Ok(any)
}

/// The section and rule of a stored version under the current mappings, from its stored
/// rule-relevant tokens (`store::rule_tokens`).
pub fn placement_of(
    state: &AppState,
    v: &store::StoredVersion,
    tokens: &[(String, String, String)],
) -> super::Placement {
    let of = |param: &str| -> Vec<(String, String)> {
        tokens
            .iter()
            .filter(|(p, _, _)| p == param)
            .map(|(_, s, c)| (s.clone(), c.clone()))
            .collect()
    };
    let category = of("category");
    let code = if definitions::search_param(&v.resource_type, "code").is_some() {
        of("code")
    } else {
        of("type")
    };
    let profile: Vec<String> = of("_profile").into_iter().map(|(_, c)| c).collect();
    let facts = Facts {
        resource_type: &v.resource_type,
        category: &category,
        code: &code,
        profile: &profile,
    };
    place(&state.mappings, &facts)
}

/// A fingerprint of everything the release moments of stored versions depend on.
pub fn rules_fingerprint(state: &AppState) -> String {
    let mut h = Sha256::new();
    h.update(state.mappings.source_text.as_bytes());
    h.update(state.config.embargo.default.as_bytes());
    h.update(format!("{:?}", state.config.embargo.on_update).as_bytes());
    h.update(format!("{:?}", state.config.embargo.release_tag).as_bytes());
    h.update([u8::from(state.config.embargo.client_may_waive)]);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// At start: when the rules changed since the last start, recomputes every version not shown
/// yet. Returns the number of versions rescheduled: `None` when the rules are unchanged, and
/// on a first start that found nothing to reschedule (a new database has no rules to compare
/// with; one written before the rules were recorded may hold versions to reschedule).
pub async fn after_rule_change(state: &AppState) -> anyhow::Result<Option<usize>> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        value: String,
    }
    let fingerprint = rules_fingerprint(state);
    let stored: Option<Row> = state
        .db
        .fetch_optional(&Sql::new(
            "SELECT value FROM settings WHERE key = 'rules_fingerprint'",
        ))
        .await?;
    if stored.as_ref().is_some_and(|r| r.value == fingerprint) {
        return Ok(None);
    }
    let now = crate::time::to_micros(state.clock.now());
    // Every resource: a shown version may now fall under `never`.
    let all = store::all_resources(&state.db).await?;
    let mut total = 0;
    for chunk in all.chunks(500) {
        let mut tx = state.db.begin().await?;
        total += resources(state, &mut tx, chunk, now).await?;
        tx.commit().await?;
    }
    state
        .db
        .execute(
            &Sql::new(
                "INSERT INTO settings (key, value) VALUES ('rules_fingerprint', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .arg(fingerprint),
        )
        .await?;
    Ok((stored.is_some() || total > 0).then_some(total))
}
