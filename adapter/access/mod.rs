//! Who may see what, now: links, holders, grants, care and life status, terms and blocks.
//!
//! The decision is one pure function ([`decision::decide`]) of facts and the clock; the same
//! function answers `/fhir`, `/portal` and `/admin/explain`. [`facts`] loads the facts for one
//! request (never cached, so a change acts on the very next request). This module never builds
//! responses and never filters resources in memory: `search::sql` turns the decision into SQL.

pub mod decision;
pub mod explain;
pub mod facts;
pub mod relationships;

pub use decision::{Access, Decision, Policy, Role, SectionSet};

use crate::app::AppState;
use crate::auth::PortalUser;
use crate::error::{ApiError, ApiResult};

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
