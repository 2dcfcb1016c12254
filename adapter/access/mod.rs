//! Who may see what, now: links, holders, grants, care and life status, terms and blocks.
//!
//! The decision is one pure function ([`decision::decide`]) of facts and the clock; the same
//! function answers `/fhir`, `/portal` and `/admin/explain`. [`facts`] loads the facts for one
//! request (cached only while nothing was written since, so a change acts on the very next
//! request). Every refusal of a request is decided here: [`require`], [`require_holder`],
//! [`holding`], [`refuse_named`], [`require_not_blocked`], and which grants a user sees
//! ([`visible_grants`]). This module never builds responses and never filters resources in
//! memory: `search::sql` turns the decision into SQL.

pub mod decision;
pub mod explain;
pub mod facts;
pub mod relationships;

pub use decision::{Access, Decision, Policy, Role, SectionSet};

use crate::app::AppState;
use crate::auth::PortalUser;
use crate::error::{ApiError, ApiResult, Reason};
use crate::store::accounts::LinkRow;

impl AppState {
    /// The policy of contract §5 from the organisation's config.
    pub fn policy(&self) -> Policy {
        let o = &self.config.organization;
        Policy {
            terms_version: o.terms_version.clone(),
            min_user_age: o.min_user_age,
            care_end_grace: o.care_end_grace,
            deceased_grace: o.deceased_grace,
            assume_active_care: o.assume_active_care,
        }
    }
}

/// Step 6 for one client the request names: the user's access to it; 403 with the reason when
/// access to it ended or is blocked, 403 `not-linked` when the user is not linked to it.
pub fn require<'a>(decision: &'a Decision, patient: &str) -> ApiResult<&'a Access> {
    refuse_named(decision, [patient])?;
    decision.access(patient).ok_or_else(|| {
        ApiError::forbidden(
            Reason::NotLinked,
            format!("not linked to Patient/{patient}"),
        )
    })
}

/// [`require`], and the user holds the portal for the client (R1, R3): 403 `not-holder`
/// otherwise, `doing` saying what only the holder does.
pub fn require_holder<'a>(
    decision: &'a Decision,
    patient: &str,
    doing: &str,
) -> ApiResult<&'a Access> {
    let access = require(decision, patient)?;
    if access.role == Role::Holder {
        Ok(access)
    } else {
        Err(ApiError::forbidden(
            Reason::NotHolder,
            format!("only the portal holder {doing}"),
        ))
    }
}

/// The user's holder access to `patient`, if they hold its portal now; for calls that answer
/// "not there" (404) rather than "not yours" to anyone else.
pub fn holding<'a>(decision: &'a Decision, patient: &str) -> Option<&'a Access> {
    decision.access(patient).filter(|a| a.role == Role::Holder)
}

/// Refuses a request that names a client the user is linked to but may not see now (§5.6):
/// 403 with the reason (blocked, care ended, deceased).
pub fn refuse_named<'a>(
    decision: &Decision,
    patients: impl IntoIterator<Item = &'a str>,
) -> ApiResult<()> {
    for id in patients {
        if let Some(reason) = decision.refused.get(id) {
            return Err(ApiError::forbidden(
                *reason,
                format!("access to Patient/{id} has ended or is blocked"),
            ));
        }
    }
    Ok(())
}

/// Which of a client's links the user with `access` may see as grants: the holder and a reader
/// every member's, a member only their own. With the client's active holder link, if any.
pub fn visible_grants<'a>(
    access: &Access,
    links: &'a [LinkRow],
) -> (Option<&'a LinkRow>, Vec<&'a LinkRow>) {
    let holder = links
        .iter()
        .find(|l| l.role == Role::Holder && l.ended_at.is_none());
    let grants = links
        .iter()
        .filter(|l| {
            l.role == Role::Member
                && l.ended_at.is_none()
                && (access.role != Role::Member || l.id == access.link_id)
        })
        .collect();
    (holder, grants)
}

/// The part of the decision about the user alone (step 3), for the `/portal` calls a user
/// makes before being linked or accepting terms (`/portal/link`, `/portal/terms`): a blocked
/// user changes no account state.
pub async fn require_not_blocked(state: &AppState, user: &PortalUser) -> ApiResult<()> {
    let set = state
        .facts
        .get(&state.db, &user.client_id, &user.external_id)
        .await?;
    match &set.0 {
        Some(facts) if decision::is_blocked(facts, state.clock.now()) => Err(ApiError::forbidden(
            crate::error::Reason::UserBlocked,
            "this portal user is blocked by the care organisation",
        )),
        _ => Ok(()),
    }
}

/// Steps 2–6 for the calling portal user, from fresh facts; a refusal is a 403 with its reason.
pub async fn decide_for(state: &AppState, user: &PortalUser) -> ApiResult<Decision> {
    let set = state
        .facts
        .get(&state.db, &user.client_id, &user.external_id)
        .await?;
    let (facts, links, clients) = &*set;
    decision::decide(
        facts.as_ref(),
        links,
        clients,
        &state.policy(),
        state.clock.now(),
    )
    .map_err(|refusal| {
        let message = match refusal.0 {
            crate::error::Reason::NotLinked => "this portal user is not linked to any client",
            crate::error::Reason::UserBlocked => {
                "this portal user is blocked by the care organisation"
            }
            crate::error::Reason::UnderAge => "portal users must be at least the minimum age",
            crate::error::Reason::TermsNotAccepted => {
                "the current terms of use must be accepted first"
            }
            _ => "access refused",
        };
        ApiError::forbidden(refusal.0, message)
    })
}
