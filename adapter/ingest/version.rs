//! The versions an entry makes: the next version number, whether anything changed, the
//! release moment (from `release::schedule`), and the adapter's own withdrawal before a version
//! that takes the resource from where it is shown (another client or section, a `never` rule).

use super::outcome::{Outcome, UNCHANGED};
use super::prepare::Prepared;
use crate::app::AppState;
use crate::mapping::embargo::Delay;
use crate::release::{self, VersionState};
use crate::store::release as store_release;
use crate::store::resources::{self, NewVersion, SearchValues};
use crate::time::{Micros, from_micros, instant};
use axum::http::StatusCode;
use std::collections::HashMap;

/// Where an earlier version is: stored (its id), or among the versions of this write.
#[derive(Debug, Clone, Copy)]
pub(super) enum At {
    Stored(i64),
    Written(usize),
}

/// An earlier version of a resource, as the next one needs it.
pub(super) struct Prior {
    pub at: At,
    version_no: i64,
    arrived_at: Micros,
    release_at: Option<Micros>,
    /// A tombstone.
    withdrawn: bool,
    /// Under a `never` rule or unmapped: never shown.
    hidden: bool,
    patient_id: Option<String>,
    section: Option<String>,
    /// Known for the newest stored version (from `resources`) and for versions of this write.
    pub hash: String,
}

impl Prior {
    pub(super) fn from_stored(v: &store_release::StoredVersion) -> Self {
        Self {
            at: At::Stored(v.id),
            version_no: v.version_no,
            arrived_at: v.arrived_at,
            release_at: v.release_at,
            withdrawn: v.withdrawn == resources::WITHDRAWN,
            hidden: v.withdrawn == resources::HIDDEN,
            patient_id: v.patient_id.clone(),
            section: v.section.clone(),
            hash: String::new(),
        }
    }

    pub(super) fn from_new(v: &NewVersion, index: usize) -> Self {
        Self {
            at: At::Written(index),
            version_no: v.version_no,
            arrived_at: v.arrived_at,
            release_at: v.release_at,
            withdrawn: v.withdrawn,
            hidden: v.hidden,
            patient_id: v.values.patient_id.clone(),
            section: v.section.clone(),
            hash: v.hash.clone(),
        }
    }

    /// Not shown at `now` but due to be: superseded by any newer version.
    pub(super) fn waiting(&self, now: Micros) -> bool {
        !self.withdrawn && !self.hidden && self.release_at.is_some_and(|r| r > now)
    }

    /// What the release computation knows of it (its moment is settled).
    fn state(&self) -> VersionState {
        VersionState {
            arrived_at: self.arrived_at,
            delay: if self.hidden {
                Delay::Never
            } else {
                Delay::Immediate
            },
            tagged: false,
            withdrawn: self.withdrawn,
            waived: false,
            stored: self.release_at,
            client: self.patient_id.clone(),
        }
    }
}

/// What every entry of one write shares.
pub(super) struct Cx<'a> {
    pub state: &'a AppState,
    pub source: &'a str,
    pub actions: &'a HashMap<(String, String), Vec<store_release::ActionRow>>,
    pub waivers: &'a HashMap<String, std::collections::BTreeSet<String>>,
    pub now: Micros,
}

/// The versions an entry makes (none when nothing changed; a tombstone of the adapter's own
/// before the new version when that takes the resource from where it is shown) and its outcome.
pub(super) struct Next {
    pub versions: Vec<NewVersion>,
    pub outcome: Outcome,
}

/// A tombstone at `now` in the client and section of `of`: what was shown there is gone.
fn tombstone(
    cx: &Cx<'_>,
    resource_type: &str,
    id: &str,
    version_no: i64,
    of: &Prior,
    rule: &str,
    synthetic: bool,
) -> NewVersion {
    NewVersion {
        resource_type: resource_type.to_string(),
        fhir_id: id.to_string(),
        source: cx.source.to_string(),
        version_no,
        body: String::new(),
        hash: "deleted".into(),
        values: SearchValues {
            patient_id: of.patient_id.clone(),
            sort_date: i64::MAX,
            ..Default::default()
        },
        section: of.section.clone(),
        arrived_at: cx.now,
        release_at: Some(cx.now),
        rule: rule.to_string(),
        withdrawn: true,
        hidden: false,
        synthetic,
        tagged: false,
        meta: String::new(),
    }
}

/// The versions an entry makes, after `prior` (stored and earlier in this write).
pub(super) fn next_version(cx: &Cx<'_>, p: Prepared, prior: &[Prior]) -> Next {
    let Prepared {
        resource_type,
        id,
        body,
        indexed,
        placement,
        tagged,
        ..
    } = p;
    let now = cx.now;
    let location = |v: i64| Some(format!("{resource_type}/{id}/_history/{v}"));
    let last = prior.last();
    let live = last.filter(|l| !l.withdrawn);
    let mut version_no = last.map_or(1, |l| l.version_no + 1);
    // The version the portal shows now, if it is shown (not a tombstone).
    let shown = prior
        .iter()
        .rev()
        .find(|v| v.release_at.is_some_and(|r| r <= now))
        .filter(|v| !v.withdrawn && !v.hidden);
    let (Some((text, hash, meta)), Some(indexed), Some(placement)) = (body, indexed, placement)
    else {
        // A delete: a tombstone, unless there is nothing to withdraw.
        let Some(l) = live else {
            return Next {
                versions: Vec::new(),
                outcome: Outcome {
                    status: StatusCode::NO_CONTENT,
                    location: None,
                    version: last.map(|l| l.version_no),
                    note: Some("nothing to delete".into()),
                    error: None,
                },
            };
        };
        let version = tombstone(cx, &resource_type, &id, version_no, l, "withdrawn", false);
        return Next {
            versions: vec![version],
            outcome: Outcome {
                status: StatusCode::NO_CONTENT,
                location: location(version_no),
                version: Some(version_no),
                note: Some("withdrawn from the portal".into()),
                error: None,
            },
        };
    };
    if let Some(l) = last
        && l.hash == hash
        && !hash.is_empty()
    {
        return Next {
            versions: Vec::new(),
            outcome: Outcome {
                status: StatusCode::OK,
                location: location(l.version_no),
                version: Some(l.version_no),
                note: Some(UNCHANGED.into()),
                error: None,
            },
        };
    }
    let withdrawn = indexed.entered_in_error;
    let hidden = !withdrawn && placement.delay == Delay::Never;
    let waived = match (&indexed.values.patient_id, &placement.section) {
        (Some(patient), Some(section)) => {
            cx.waivers.get(patient).is_some_and(|w| w.contains(section))
        }
        _ => false,
    };
    let mut states: Vec<VersionState> = prior.iter().map(Prior::state).collect();
    let mut versions = Vec::with_capacity(2);
    // What is shown leaves at once where this version takes the resource to another client
    // or section, or where this version may never be shown (contract §2, §3).
    let moved = shown.filter(|s| {
        s.patient_id != indexed.values.patient_id || s.section != placement.section || hidden
    });
    if let Some(s) = moved {
        let why = if s.patient_id != indexed.values.patient_id {
            "withdrawn: moved to another client"
        } else if s.section != placement.section {
            "withdrawn: moved to another section"
        } else {
            "withdrawn: a newer version is never shown"
        };
        let t = tombstone(cx, &resource_type, &id, version_no, s, why, true);
        states.push(Prior::from_new(&t, 0).state());
        versions.push(t);
        version_no += 1;
    }
    states.push(VersionState {
        arrived_at: now,
        delay: placement.delay,
        tagged,
        withdrawn,
        waived,
        stored: None,
        client: indexed.values.patient_id.clone(),
    });
    let staff: Vec<release::Action> = cx
        .actions
        .get(&(resource_type.clone(), id.clone()))
        .map(|rows| rows.iter().map(release::Action::from).collect())
        .unwrap_or_default();
    let ctx = release::Context {
        on_update: cx.state.config.embargo.on_update,
        now,
        settled: states.len() - 1,
    };
    let release_at = release::schedule(&states, &staff, &ctx).pop().flatten();
    let rule = if withdrawn {
        "entered-in-error".to_string()
    } else {
        placement.rule.clone()
    };
    let mut note = match (&placement.section, release_at, withdrawn) {
        (_, _, true) => "entered-in-error: withdrawn from the portal".to_string(),
        (None, _, _) if placement.delay != Delay::Never => {
            "stored; served when a resource the user may see refers to it".to_string()
        }
        (None, _, _) => format!("stored; never served ({rule})"),
        (Some(s), Some(t), _) if t <= now => format!("section {s}; shown now ({rule})"),
        (Some(s), Some(t), _) => format!(
            "section {s}; shown from {} ({rule})",
            instant(from_micros(t))
        ),
        (Some(s), None, _) if placement.delay == Delay::Never => {
            format!("section {s}; never shown ({rule})")
        }
        (Some(s), None, _) => {
            format!("section {s}; held until a staff member releases it ({rule})")
        }
    };
    if let Some(t) = versions.first() {
        note = format!(
            "the version shown before was taken off the portal at once ({}); {note}",
            t.rule.trim_start_matches("withdrawn: ")
        );
    }
    let status = if live.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = location(version_no);
    versions.push(NewVersion {
        resource_type,
        fhir_id: id,
        source: cx.source.to_string(),
        version_no,
        body: text,
        hash,
        values: indexed.values,
        section: placement.section,
        arrived_at: now,
        release_at,
        rule,
        withdrawn,
        hidden,
        synthetic: false,
        tagged,
        meta,
    });
    Next {
        versions,
        outcome: Outcome {
            status,
            location,
            version: Some(version_no),
            note: Some(note),
            error: None,
        },
    }
}
