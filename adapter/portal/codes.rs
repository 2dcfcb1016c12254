//! Activation codes (R9): made by staff for one client and one relationship, handed to the
//! holder only, single use, expiring. Only a hash is stored.

use crate::access::relationships::{HolderKind, holder_kind};
use crate::app::AppState;
use crate::auth::PortalUser;
use crate::error::{ApiError, ApiResult, Reason};
use crate::store::accounts::{self, NewLink, Role};
use crate::time::Micros;
use axum::http::StatusCode;
use sha2::{Digest, Sha256};

/// Letters and digits that cannot be mistaken for one another when read aloud or typed.
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// A new random code, e.g. `K7QM-3XHT-PW9D-LR2C`.
pub fn new_code() -> ApiResult<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("no randomness: {e}")))?;
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    Ok(chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-"))
}

/// The stored form of a code: case and separators do not matter when it is typed in.
pub fn hash_code(code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    Sha256::digest(normal.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a redeemed code linked.
pub struct Linked {
    pub link_id: i64,
    pub patient_id: String,
    pub role: Role,
    pub relationship: String,
}

fn conflict(message: &str) -> ApiError {
    ApiError::conflict(message.to_string())
}

/// Redeems `code` for `user` (single use; expired and used codes are refused), applying the
/// holder rules of contract §6: one holder per client; a legal representative takes over (a
/// `self` holder becomes a reader, anyone else's holder link ends); the client takes back from
/// a designated holder; a designated holder (first contact, notarial) takes over from the
/// client (who keeps reading) but not from a legal representative; a network member never
/// becomes holder.
pub async fn redeem(
    state: &AppState,
    user: &PortalUser,
    code: &str,
    birth_date: &str,
    now: Micros,
) -> ApiResult<Linked> {
    let hash = hash_code(code);
    let mut tx = state.db.begin().await?;
    let stored = accounts::code_for_update(&mut tx, &hash)
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(
                Reason::CodeInvalid,
                "this code is not known; check it or ask for a new one",
            )
        })?;
    // The client the code is for, named whether it links or not.
    crate::audit::names(&stored.patient_id);
    if stored.used_at.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            Reason::CodeUsed,
            "this code has already been used; codes work once",
        ));
    }
    if stored.expires_at <= now {
        return Err(ApiError::new(
            StatusCode::GONE,
            Reason::CodeExpired,
            "this code has expired; ask for a new one",
        ));
    }
    if stored.revoked_at.is_some() {
        return Err(ApiError::new(
            StatusCode::GONE,
            Reason::CodeExpired,
            "this invitation was withdrawn by the holder; ask for a new one",
        ));
    }
    accounts::lock_patient(&mut tx, &stored.patient_id).await?;
    let user_id = accounts::upsert_user(
        &mut tx,
        &user.client_id,
        &user.external_id,
        Some(birth_date),
        now,
    )
    .await?;
    let links = accounts::active_links_for_update(&mut tx, &stored.patient_id).await?;
    let own = links.iter().find(|l| l.user_id == user_id);
    let actor = format!("{}/{}", user.client_id, user.external_id);
    let mut events: Vec<(&str, Option<i64>, String)> = Vec::new();
    let role = if stored.kind == "invitation" {
        // An invitation dies with the holdership of the person who made it (R1, R2, R9).
        let inviter_holds = stored
            .invited_by
            .is_some_and(|by| links.iter().any(|l| l.id == by && l.role == Role::Holder));
        if !inviter_holds {
            return Err(ApiError::new(
                StatusCode::GONE,
                Reason::CodeExpired,
                "this invitation ended: the person who made it no longer holds the portal for this client",
            ));
        }
        if own.is_some() {
            return Err(conflict(
                "this portal user is already linked to this client",
            ));
        }
        Role::Member
    } else {
        let kind = holder_kind(&stored.relationship)
            .ok_or_else(|| ApiError::invalid("this activation code has an unknown relationship"))?;
        if let Some(l) = own {
            return Err(conflict(if l.role == Role::Member {
                "a network member cannot become holder; the holder must end the invitation first"
            } else {
                "this portal user is already linked to this client"
            }));
        }
        let holder = links.iter().find(|l| l.role == Role::Holder);
        let mut role = Role::Holder;
        if let Some(h) = holder {
            let current = holder_kind(&h.relationship).unwrap_or(HolderKind::Designated);
            match (kind, current) {
                (HolderKind::Designated, HolderKind::Legal) => {
                    return Err(conflict(
                        "a legal representative holds the portal for this client; only they or a court appointment change that",
                    ));
                }
                (HolderKind::Client, HolderKind::Legal) => role = Role::Reader,
                (HolderKind::Legal | HolderKind::Designated, HolderKind::Client) => {
                    accounts::set_role(&mut tx, h.id, Role::Reader, now).await?;
                    events.push((
                        "holder-became-reader",
                        Some(h.id),
                        format!("replaced by {}", stored.relationship),
                    ));
                }
                _ => {
                    accounts::end_link(
                        &mut tx,
                        h.id,
                        &format!("replaced as holder by {}", stored.relationship),
                        now,
                    )
                    .await?;
                    events.push((
                        "link-ended",
                        Some(h.id),
                        format!("replaced as holder by {}", stored.relationship),
                    ));
                }
            }
        }
        // The client moving to another portal account ends the old `self` reader link.
        if kind == HolderKind::Client {
            for l in links
                .iter()
                .filter(|l| l.relationship == "self" && l.role == Role::Reader)
            {
                accounts::end_link(&mut tx, l.id, "the client linked another account", now).await?;
                events.push((
                    "link-ended",
                    Some(l.id),
                    "the client linked another account".into(),
                ));
            }
        }
        role
    };
    let link_id = accounts::insert_link(
        &mut tx,
        &NewLink {
            user_id,
            patient_id: &stored.patient_id,
            role,
            relationship: &stored.relationship,
            name: stored.name.as_deref(),
            sections: stored.sections.clone(),
            can_post: role != Role::Member || stored.can_post != 0,
            now,
            invited_by: stored.invited_by,
        },
    )
    .await
    .map_err(|e| {
        if e.is_unique_violation() {
            conflict("another code for this client was redeemed at the same moment; try again")
        } else {
            ApiError::from(e)
        }
    })?;
    accounts::mark_code_used(&mut tx, &hash, user_id, now).await?;
    events.push((
        "link-created",
        Some(link_id),
        format!("{} ({})", role.as_str(), stored.relationship),
    ));
    for (kind, link, detail) in events {
        accounts::event(
            &mut tx,
            &accounts::Event {
                actor: &actor,
                kind,
                user_id: Some(user_id),
                patient_id: Some(&stored.patient_id),
                link_id: link,
                detail: Some(detail),
            },
            now,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Linked {
        link_id,
        patient_id: stored.patient_id,
        role,
        relationship: stored.relationship,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_readable_and_typed_forgivingly() {
        let code = new_code().unwrap();
        assert_eq!(code.len(), 19);
        assert_eq!(
            hash_code(&code),
            hash_code(&code.to_lowercase().replace('-', " "))
        );
        assert_ne!(hash_code(&code), hash_code("AAAA-AAAA-AAAA-AAAA"));
    }
}
