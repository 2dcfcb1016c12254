//! The consent part of `GET /admin/explain`: the same decision the portal gets, for one user
//! and one resource, given the resource's delay part.

use super::{decision, facts};
use crate::app::AppState;
use crate::error::ApiResult;
use crate::release::explain::DelayExplanation;
use serde::Serialize;
use std::collections::BTreeSet;

/// Whether a user may see a resource now, and from when they will.
#[derive(Debug, Clone, Serialize)]
pub struct AccessExplanation {
    pub visible_now: bool,
    /// The reason code that refuses it, or `not-released`.
    pub reason: Option<&'static str>,
    /// Where the decision stopped: `user` (steps 2–5), `client` (6), else the resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// `"all"` or the granted sections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sections: Option<Sections>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_allowed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visible_from: Option<String>,
}

/// The sections of a user's access, as `/admin/explain` writes them.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Sections {
    All(&'static str),
    Only(BTreeSet<String>),
}

impl AccessExplanation {
    fn refused(reason: &'static str, step: &'static str) -> Self {
        Self {
            visible_now: false,
            reason: Some(reason),
            step: Some(step),
            role: None,
            sections: None,
            section_allowed: None,
            visible_from: None,
        }
    }
}

/// Whether `user` of portal vendor `client` may see the resource whose delay part is `delay`.
pub async fn consent_part(
    state: &AppState,
    client: &str,
    user: &str,
    resource_type: &str,
    delay: &DelayExplanation,
) -> ApiResult<AccessExplanation> {
    let (user_facts, links) = facts::user_and_links(&state.db, client, user).await?;
    let patients: Vec<&str> = links
        .iter()
        .filter(|l| !l.ended)
        .map(|l| l.patient_id.as_str())
        .collect();
    let clients = facts::clients(&state.db, &patients).await?;
    let now = state.clock.now();
    let patient = delay
        .client
        .as_deref()
        .and_then(|c| c.strip_prefix("Patient/"));
    let shown = delay.shown_version.is_some();
    let d = match decision::decide(user_facts.as_ref(), &links, &clients, &state.policy(), now) {
        Err(refusal) => return Ok(AccessExplanation::refused(refusal.0.code(), "user")),
        Ok(d) => d,
    };
    if let Some(reason) = patient.and_then(|p| d.refused.get(p)) {
        return Ok(AccessExplanation::refused(reason.code(), "client"));
    }
    let Some(access) = patient.and_then(|p| d.access(p)) else {
        return Ok(AccessExplanation::refused("not-linked", "client"));
    };
    let may = d.may_see(resource_type, patient, delay.section.as_deref());
    Ok(AccessExplanation {
        visible_now: may && shown,
        reason: if !may {
            Some("section-denied")
        } else if !shown {
            Some("not-released")
        } else {
            None
        },
        step: None,
        role: Some(access.role.as_str()),
        sections: Some(match &access.sections {
            decision::SectionSet::All => Sections::All("all"),
            decision::SectionSet::Only(s) => Sections::Only(s.clone()),
        }),
        section_allowed: Some(may),
        visible_from: if may && !shown {
            delay.next_release.as_ref().map(|n| n.at.clone())
        } else {
            None
        },
    })
}
