//! Activation codes (R9): made by staff for one client and one relationship, handed to the
//! holder only, single use, expiring. Only a hash is stored.

use crate::app::AppState;
use crate::auth::PortalUser;
use crate::error::{ApiError, ApiResult, Reason};
use crate::store::accounts::{self, NewLink};
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
    pub role: &'static str,
    pub relationship: String,
}

/// Redeems `code` for `user` (single use; expired and used codes are refused).
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
            "this code has expired; ask the care organisation for a new one",
        ));
    }
    let user_id = accounts::upsert_user(
        &mut tx,
        &user.client_id,
        &user.external_id,
        Some(birth_date),
        now,
    )
    .await?;
    let role = match stored.kind.as_str() {
        "invitation" => "member",
        _ => "holder",
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
            can_post: stored.can_post != 0,
            now,
        },
    )
    .await?;
    accounts::mark_code_used(&mut tx, &hash, user_id, now).await?;
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
