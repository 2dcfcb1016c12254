//! The explanation delay (R11, R12): when each version becomes visible on the portal.
//!
//! The release moment is computed at ingest from the embargo rule and the arrival moment and
//! stored with the version; "shown yet?" is then `release_at <= now` on an index, and no
//! background job flips flags. What changes a moment later (a staff release or hold, the
//! holder's waiver, changed rules at a restart) recomputes the moments of the versions not yet
//! shown with the same function, [`schedule`]; what is shown stays shown. This module computes;
//! it never reads the clock or the store (`release::store` does the loading and writing).

pub mod actions;
pub mod explain;
pub mod recompute;

use crate::config::OnUpdate;
use crate::mapping::embargo::Delay;
use crate::mapping::{Facts, Mappings};
use crate::time::{Micros, from_micros, to_micros};

/// What decides one version's release moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionState {
    pub arrived_at: Micros,
    /// The embargo rule's delay for the version's section and facts.
    pub delay: Delay,
    /// The source marked it as explained (`embargo.release_tag`).
    pub tagged: bool,
    /// A deletion or entered-in-error: gone at once.
    pub withdrawn: bool,
    /// The holder chose to see this version's section without delay (waivable rules only).
    pub waived: bool,
    /// The moment stored so far (`None` for a version not stored yet, or not released).
    pub stored: Option<Micros>,
    /// The client it belongs to: a version for another client than the one before starts a
    /// wait of its own (it is a new entry for that client).
    pub client: Option<String>,
}

/// A staff decision about one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// Shown now: the caregiver has explained it.
    Release,
    /// Kept back until the moment, or (`None`) until released.
    Hold { until: Option<Micros> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    pub at: Micros,
    pub kind: ActionKind,
}

impl From<&crate::store::release::ActionRow> for Action {
    fn from(row: &crate::store::release::ActionRow) -> Self {
        Action {
            at: row.at,
            kind: if row.action == "release" {
                ActionKind::Release
            } else {
                ActionKind::Hold { until: row.until }
            },
        }
    }
}

/// The circumstances of a computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub on_update: OnUpdate,
    /// The moment of computing: nothing can become visible before it.
    pub now: Micros,
    /// The first `settled` versions keep their stored moments as they are (at ingest, the
    /// versions already stored; their rules may have been other ones).
    pub settled: usize,
}

/// Where a version belongs and which embargo rule applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub section: Option<String>,
    pub delay: Delay,
    /// A readable description of the rule, stored with the version.
    pub rule: String,
}

/// The section and embargo rule of a resource. A resource no section maps is never served as
/// an entry of its own; outside the patient compartment, a shared reference type is served,
/// without a delay of its own, when a visible resource refers to it, and any other type never.
pub fn place(mappings: &Mappings, facts: &Facts<'_>) -> Placement {
    match mappings.sections.section_of(facts) {
        Some(section) => {
            let applied = mappings.embargo.rule_for(section, facts);
            Placement {
                section: Some(section.to_string()),
                delay: applied.delay,
                rule: applied.description,
            }
        }
        None if crate::fhir::reference::in_compartment(facts.resource_type) => Placement {
            section: None,
            delay: Delay::Never,
            rule: "unmapped: no section rule maps it".into(),
        },
        None if mappings.sections.is_shared(facts.resource_type) => Placement {
            section: None,
            delay: Delay::Immediate,
            rule: "shared: served when a visible resource refers to it".into(),
        },
        None => Placement {
            section: None,
            delay: Delay::Never,
            rule: "unmapped: outside the patient compartment and not a shared type".into(),
        },
    }
}

/// The moment a rule alone would release a version.
fn by_rule(v: &VersionState) -> Option<Micros> {
    match v.delay {
        Delay::Immediate => Some(v.arrived_at),
        Delay::After(d) => Some(to_micros(d.after(from_micros(v.arrived_at)))),
        Delay::Manual | Delay::Never => None,
    }
}

/// Release moments for all versions of one resource, in version order.
///
/// - A version whose stored moment has passed keeps it: what is shown stays shown.
/// - A withdrawal is released at its arrival; a version under `never` is not released.
/// - A version that is not shown and has a later version is superseded: never shown.
/// - `never` is absolute; otherwise the release tag, or the holder's waiver of a duration
///   rule, releases at arrival, and else the rule decides (`manual`: not by itself).
/// - A new version of a shown resource waits its own delay from its own arrival
///   (`on_update = "delay"`) or shows at once (`"immediate"`). A new version of a resource
///   still waiting waits its own rule counted from the start of that wait (the arrival of the
///   first version not shown), so that updates neither reset the wait nor shorten a stricter
///   rule to a looser earlier one.
/// - Staff: the latest release applies to versions that had arrived by then and ends earlier
///   holds; a hold placed after it applies to every version still waiting, also ones that arrive
///   later, and keeps them back until its moment (never shortening the rule) or until released.
/// - Nothing is released before `ctx.now`, so `_lastUpdated` stays the moment of visibility.
pub fn schedule(
    versions: &[VersionState],
    actions: &[Action],
    ctx: &Context,
) -> Vec<Option<Micros>> {
    let last_release = actions
        .iter()
        .filter(|a| a.kind == ActionKind::Release)
        .map(|a| a.at)
        .max();
    let hold = actions
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::Hold { .. }))
        .filter(|a| last_release.is_none_or(|r| a.at > r))
        .max_by_key(|a| a.at);
    let mut out: Vec<Option<Micros>> = Vec::with_capacity(versions.len());
    // The start of the wait each version is in (its own arrival, or an earlier version's).
    let mut wait_from: Vec<Micros> = Vec::with_capacity(versions.len());
    // A version that arrived before the one before it is a copy of content shown before (a
    // hold's copy): it starts no wait that later versions join.
    let restored = |j: usize| j > 0 && versions[j].arrived_at < versions[j - 1].arrived_at;
    for (i, v) in versions.iter().enumerate() {
        let start = match i.checked_sub(1) {
            Some(prev)
                if !versions[prev].withdrawn
                    && versions[prev].delay != Delay::Never
                    && versions[prev].client == v.client
                    && !restored(prev)
                    && out[prev].is_none_or(|r| r > v.arrived_at) =>
            {
                wait_from[prev]
            }
            _ => v.arrived_at,
        };
        wait_from.push(start);
        if i < ctx.settled || v.stored.is_some_and(|s| s <= ctx.now) {
            out.push(v.stored);
            continue;
        }
        if v.withdrawn {
            out.push(Some(v.arrived_at));
            continue;
        }
        if v.delay == Delay::Never || i + 1 < versions.len() {
            out.push(None);
            continue;
        }
        let mut moment = if v.tagged || (v.waived && v.delay.is_waivable()) {
            Some(v.arrived_at)
        } else {
            by_rule(&VersionState {
                arrived_at: start,
                ..v.clone()
            })
        };
        // The version served when this one arrived, if any.
        let served_then = (0..i)
            .rev()
            .find(|&j| out[j].is_some_and(|r| r <= v.arrived_at));
        let shown_then = served_then.is_some_and(|j| !versions[j].withdrawn);
        if shown_then && ctx.on_update == OnUpdate::Immediate {
            moment = Some(v.arrived_at);
        }
        if let Some(h) = hold {
            if let ActionKind::Hold { until } = h.kind {
                moment = match until {
                    None => None,
                    Some(t) => moment.map(|m| m.max(t)),
                };
            }
        } else if let Some(r) = last_release
            && v.arrived_at <= r
        {
            moment = Some(moment.map_or(r, |m| m.min(r)));
        }
        out.push(moment.map(|m| m.max(ctx.now)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::IsoDuration;

    const DAY: i64 = 86_400_000_000;
    const FOURTEEN: Delay = Delay::After(IsoDuration::days(14));

    fn v(arrived_day: i64, delay: Delay) -> VersionState {
        VersionState {
            arrived_at: arrived_day * DAY,
            delay,
            tagged: false,
            withdrawn: false,
            waived: false,
            stored: None,
            client: None,
        }
    }

    fn ctx(now_day: i64) -> Context {
        Context {
            on_update: OnUpdate::Delay,
            now: now_day * DAY,
            settled: 0,
        }
    }

    fn days(out: Vec<Option<Micros>>) -> Vec<Option<i64>> {
        out.into_iter().map(|m| m.map(|m| m / DAY)).collect()
    }

    #[test]
    fn a_new_entry_waits_its_delay() {
        assert_eq!(
            days(schedule(&[v(100, FOURTEEN)], &[], &ctx(100))),
            [Some(114)]
        );
        assert_eq!(
            days(schedule(&[v(100, Delay::Immediate)], &[], &ctx(100))),
            [Some(100)]
        );
        assert_eq!(
            days(schedule(&[v(100, Delay::Manual)], &[], &ctx(100))),
            [None]
        );
        assert_eq!(
            days(schedule(&[v(100, Delay::Never)], &[], &ctx(100))),
            [None]
        );
    }

    #[test]
    fn withdrawals_tags_and_waivers_release_at_arrival_but_never_is_never() {
        let gone = VersionState {
            withdrawn: true,
            ..v(100, Delay::Never)
        };
        assert_eq!(days(schedule(&[gone], &[], &ctx(100))), [Some(100)]);
        let tagged = VersionState {
            tagged: true,
            ..v(100, FOURTEEN)
        };
        assert_eq!(
            days(schedule(std::slice::from_ref(&tagged), &[], &ctx(100))),
            [Some(100)]
        );
        let never_tagged = VersionState {
            tagged: true,
            ..v(100, Delay::Never)
        };
        assert_eq!(days(schedule(&[never_tagged], &[], &ctx(100))), [None]);
        let waived = |d: Delay| VersionState {
            waived: true,
            ..v(100, d)
        };
        assert_eq!(
            days(schedule(&[waived(FOURTEEN)], &[], &ctx(100))),
            [Some(100)]
        );
        assert_eq!(
            days(schedule(&[waived(Delay::Manual)], &[], &ctx(100))),
            [None],
            "manual is not waivable"
        );
    }

    #[test]
    fn updates_follow_on_update() {
        let shown = VersionState {
            stored: Some(90 * DAY),
            ..v(76, FOURTEEN)
        };
        let out = schedule(&[shown.clone(), v(100, FOURTEEN)], &[], &ctx(100));
        assert_eq!(days(out), [Some(90), Some(114)]);
        let immediate = Context {
            on_update: OnUpdate::Immediate,
            ..ctx(100)
        };
        assert_eq!(
            days(schedule(&[shown, v(100, FOURTEEN)], &[], &immediate)),
            [Some(90), Some(100)]
        );
        let waiting = VersionState {
            stored: Some(105 * DAY),
            ..v(91, FOURTEEN)
        };
        // A new version of a waiting entry: the old one is superseded, the new one waits its
        // own rule from the first arrival.
        assert_eq!(
            days(schedule(
                &[waiting.clone(), v(100, FOURTEEN)],
                &[],
                &ctx(100)
            )),
            [None, Some(105)]
        );
        let ninety = Delay::After(IsoDuration::days(90));
        assert_eq!(
            days(schedule(&[waiting.clone(), v(100, ninety)], &[], &ctx(100))),
            [None, Some(181)],
            "a stricter rule is not shortened to the earlier version's"
        );
        assert_eq!(
            days(schedule(
                &[waiting.clone(), v(100, Delay::Immediate)],
                &[],
                &ctx(100)
            )),
            [None, Some(100)]
        );
        assert_eq!(
            days(schedule(
                &[waiting.clone(), v(100, Delay::Never)],
                &[],
                &ctx(100)
            )),
            [None, None],
            "under never, neither shows"
        );
        // Three versions, the wait counted from the first.
        assert_eq!(
            days(schedule(
                &[waiting.clone(), v(95, FOURTEEN), v(100, FOURTEEN)],
                &[],
                &ctx(100)
            )),
            [None, None, Some(105)]
        );
        // After a hold's copy of shown content (it arrived before the withdrawal), a new version
        // waits its own rule.
        let held = Context {
            settled: 3,
            ..ctx(100)
        };
        let shown = VersionState {
            stored: Some(94 * DAY),
            ..v(80, FOURTEEN)
        };
        let taken_off = VersionState {
            withdrawn: true,
            stored: Some(99 * DAY),
            ..v(99, Delay::Immediate)
        };
        let copy = VersionState {
            stored: None,
            ..v(80, FOURTEEN)
        };
        assert_eq!(
            days(schedule(
                &[shown, taken_off, copy, v(100, FOURTEEN)],
                &[],
                &held
            )),
            [Some(94), Some(99), None, Some(114)]
        );
        // A version for another client starts a wait of its own.
        let moved = VersionState {
            client: Some("other".into()),
            ..v(100, FOURTEEN)
        };
        assert_eq!(
            days(schedule(&[waiting.clone(), moved], &[], &ctx(100))),
            [None, Some(114)]
        );
        // After a withdrawal or a version under never, the wait starts again.
        let gone = VersionState {
            withdrawn: true,
            stored: Some(95 * DAY),
            ..v(95, Delay::Immediate)
        };
        let settled2 = Context {
            settled: 2,
            ..ctx(100)
        };
        assert_eq!(
            days(schedule(
                &[waiting.clone(), gone, v(100, FOURTEEN)],
                &[],
                &settled2
            )),
            [Some(105), Some(95), Some(114)]
        );
        let never = VersionState {
            stored: None,
            ..v(95, Delay::Never)
        };
        assert_eq!(
            days(schedule(
                &[waiting.clone(), never, v(100, FOURTEEN)],
                &[],
                &settled2
            )),
            [Some(105), None, Some(114)]
        );
        // At ingest the stored versions are settled, whatever rule they had.
        let settled = Context {
            settled: 1,
            ..ctx(100)
        };
        let held = VersionState {
            stored: None,
            ..v(91, Delay::Manual)
        };
        assert_eq!(
            days(schedule(&[held, v(100, FOURTEEN)], &[], &settled)),
            [None, Some(105)],
            "a held entry's wait started at its arrival"
        );
    }

    #[test]
    fn staff_release_and_hold() {
        let release = |day: i64| Action {
            at: day * DAY,
            kind: ActionKind::Release,
        };
        let hold = |day: i64, until: Option<i64>| Action {
            at: day * DAY,
            kind: ActionKind::Hold {
                until: until.map(|u| u * DAY),
            },
        };
        // Released on day 103: shown from then.
        assert_eq!(
            days(schedule(&[v(100, FOURTEEN)], &[release(103)], &ctx(103))),
            [Some(103)]
        );
        assert_eq!(
            days(schedule(
                &[v(100, Delay::Manual)],
                &[release(103)],
                &ctx(103)
            )),
            [Some(103)]
        );
        // A release does not reach a version that arrives after it.
        assert_eq!(
            days(schedule(&[v(104, FOURTEEN)], &[release(103)], &ctx(104))),
            [Some(118)]
        );
        // A hold placed before arrival keeps it back; until a moment never shortens the rule.
        assert_eq!(
            days(schedule(
                &[v(100, Delay::Immediate)],
                &[hold(90, None)],
                &ctx(100)
            )),
            [None]
        );
        assert_eq!(
            days(schedule(
                &[v(100, Delay::Immediate)],
                &[hold(90, Some(120))],
                &ctx(100)
            )),
            [Some(120)]
        );
        assert_eq!(
            days(schedule(
                &[v(100, FOURTEEN)],
                &[hold(90, Some(105))],
                &ctx(100)
            )),
            [Some(114)]
        );
        // A release ends the hold.
        assert_eq!(
            days(schedule(
                &[v(100, FOURTEEN)],
                &[hold(90, None), release(101)],
                &ctx(101)
            )),
            [Some(101)]
        );
        // Recomputing never releases in the past.
        assert_eq!(
            days(schedule(&[v(100, FOURTEEN)], &[], &ctx(120))),
            [Some(120)]
        );
    }
}
