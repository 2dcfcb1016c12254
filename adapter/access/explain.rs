//! The consent part of `GET /admin/explain`: the same decision the portal gets, for one user
//! and one resource.

use super::{decision, facts};
use crate::app::AppState;
use crate::error::ApiResult;
use serde_json::{Value, json};

/// Whether `user` of portal vendor `client` may see the resource whose delay part is `delay`.
pub async fn consent_part(
    state: &AppState,
    client: &str,
    user: &str,
    resource_type: &str,
    delay: &Value,
) -> ApiResult<Value> {
    let (user_facts, links) = facts::user_and_links(&state.db, client, user).await?;
    let patients: Vec<&str> = links
        .iter()
        .filter(|l| !l.ended)
        .map(|l| l.patient_id.as_str())
        .collect();
    let clients = facts::clients(&state.db, &patients).await?;
    let now = state.clock.now();
    let patient = delay["client"]
        .as_str()
        .and_then(|c| c.strip_prefix("Patient/"));
    let section = delay["section"].as_str();
    let shown = !delay["shown_version"].is_null();
    Ok(
        match decision::decide(user_facts.as_ref(), &links, &clients, &state.policy(), now) {
            Err(refusal) => {
                json!({"visible_now": false, "reason": refusal.0.code(), "step": "user"})
            }
            Ok(d) => {
                if let Some(reason) = patient.and_then(|p| d.refused.get(p)) {
                    json!({"visible_now": false, "reason": reason.code(), "step": "client"})
                } else {
                    match patient.and_then(|p| d.access(p)) {
                        None => {
                            json!({"visible_now": false, "reason": "not-linked", "step": "client"})
                        }
                        Some(access) => {
                            let sections = match &access.sections {
                                decision::SectionSet::All => json!("all"),
                                decision::SectionSet::Only(s) => json!(s),
                            };
                            let may = d.may_see(resource_type, patient, section);
                            json!({
                                "role": access.role.as_str(),
                                "sections": sections,
                                "section_allowed": may,
                                "visible_now": may && shown,
                                "reason": if !may { Some("section-denied") } else if !shown { Some("not-released") } else { None },
                                "visible_from": if may && !shown { delay["next_release"]["at"].clone() } else { Value::Null },
                            })
                        }
                    }
                }
            }
        },
    )
}
