//! Extractors that turn request headers into a checked caller, or an OperationOutcome.

use crate::app::AppState;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use secrecy::ExposeSecret;

use super::scope::Scopes;
use super::token::{Claims, constant_time_eq};

/// The token of `Authorization: Bearer …` (the scheme in any case, RFC 7235).
fn bearer(parts: &Parts) -> Option<&str> {
    if crate::edge::repeated(&parts.headers, AUTHORIZATION) {
        return None;
    }
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A valid token's claims, and what its scope and the client's config both allow now.
fn claims(parts: &Parts, state: &AppState, kind: &str) -> Result<(Claims, Scopes), ApiError> {
    let token = bearer(parts).ok_or_else(|| ApiError::unauthorized("bearer token missing"))?;
    // Tokens that are not ours count as failed authentication of their address (an expired
    // one of ours does not: portals meet those in the normal run of things).
    let address = remote(parts, state);
    state
        .limits
        .failures
        .check(&state.clock, "bearer", &address)?;
    let claims = match state.tokens.verify(token, state.clock.now().timestamp()) {
        Ok(claims) => claims,
        Err(super::token::Refused::Expired) => {
            return Err(ApiError::unauthorized("token expired: get a new one"));
        }
        Err(super::token::Refused::NotOurs) => {
            state
                .limits
                .failures
                .spend(&state.clock, "bearer", &address);
            return Err(ApiError::unauthorized("token invalid"));
        }
    };
    // A token issued at a moment yet to come (by a process whose clock was pinned ahead,
    // `dev.clock_override`, sharing the key), or living longer than tokens here do, is no
    // token of this adapter's.
    let lifetime = state
        .config
        .auth
        .token_lifetime
        .after(state.clock.now())
        .timestamp()
        - state.clock.now().timestamp();
    if (!state.clock.is_pinned() && claims.iat > state.clock.wall().timestamp() + 60)
        || claims
            .exp
            .checked_sub(claims.iat)
            .is_none_or(|lives| lives > lifetime + 60)
    {
        state
            .limits
            .failures
            .spend(&state.clock, "bearer", &address);
        return Err(ApiError::unauthorized("token invalid"));
    }
    // What the client is comes from config, read again on every request, not from the
    // token: a client removed, disabled or changed in kind is refused with its old tokens.
    let client = state.config.client(&claims.sub);
    let configured = client.map(|c| match c.kind {
        crate::config::ClientKind::Portal => "portal",
        crate::config::ClientKind::Source => "source",
    });
    // And the token was issued to it as what it is now: a kind changed since is refused.
    let (Some(client), true) = (client, configured == Some(kind) && claims.kind == kind) else {
        return Err(ApiError::unauthorized(format!(
            "this call needs a token of a {kind} client"
        )));
    };
    // The token's scope, as far as the config allows it now.
    let scopes = Scopes::parse(&claims.scope)
        .map(|s| s.narrow(&client.scope))
        .unwrap_or_default();
    Ok((claims, scopes))
}

/// A portal vendor (step 1 of contract §5).
#[derive(Debug, Clone)]
pub struct Portal {
    pub client_id: String,
    /// What its token's scope and its config both allow.
    pub scopes: Scopes,
}

impl FromRequestParts<AppState> for Portal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let portal = Portal::unlimited(parts, state)?;
        state
            .limits
            .clients
            .admit(&state.clock, &portal.client_id, "")?;
        Ok(portal)
    }
}

impl Portal {
    /// The portal client of a valid token, before any limit is counted.
    fn unlimited(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let (claims, scopes) = claims(parts, state, "portal")?;
        crate::audit::caller(claims.sub.clone());
        Ok(Portal {
            client_id: claims.sub,
            scopes,
        })
    }
}

/// A person using a portal: the vendor's token and the vendor's id of the person.
#[derive(Debug, Clone)]
pub struct PortalUser {
    pub client_id: String,
    pub external_id: String,
    /// What the vendor's token's scope and config both allow.
    pub scopes: Scopes,
}

impl FromRequestParts<AppState> for PortalUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let portal = Portal::unlimited(parts, state)?;
        let external_id = parts
            .headers
            .get("x-portal-user")
            .filter(|_| !crate::edge::repeated(&parts.headers, "x-portal-user"))
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 256)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "X-Portal-User header missing or sent more than once: name the person using the portal",
                )
            })?;
        crate::audit::note(|n| n.user_id = Some(external_id.to_string()));
        // R16: after the token (a stranger's requests count for no one), before anything else;
        // the user's own limit first, so that one person held back takes nothing of what the
        // vendor's other users may do.
        state
            .limits
            .users
            .admit(&state.clock, &portal.client_id, external_id)?;
        state
            .limits
            .clients
            .admit(&state.clock, &portal.client_id, "")?;
        Ok(PortalUser {
            client_id: portal.client_id,
            external_id: external_id.to_string(),
            scopes: portal.scopes,
        })
    }
}

/// A record system pushing to its source.
#[derive(Debug, Clone)]
pub struct SourceClient {
    pub client_id: String,
    pub source: String,
    /// What its token's scope and its config both allow.
    pub scopes: Scopes,
}

impl FromRequestParts<AppState> for SourceClient {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (claims, scopes) = claims(parts, state, "source")?;
        crate::audit::caller(claims.sub.clone());
        state.limits.clients.admit(&state.clock, &claims.sub, "")?;
        let source = state
            .config
            .client(&claims.sub)
            .and_then(|c| c.source.clone())
            .ok_or_else(|| ApiError::unauthorized("client has no source"))?;
        Ok(SourceClient {
            client_id: claims.sub,
            source,
            scopes,
        })
    }
}

/// Care staff and integration engineers, with one of the admin credentials (`admin.token`,
/// `[[admin.credentials]]`); the audit names the credential.
#[derive(Debug, Clone)]
pub struct Admin {
    pub name: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let address = remote(parts, state);
        state
            .limits
            .failures
            .check(&state.clock, "admin", &address)?;
        let token = bearer(parts).unwrap_or_default();
        // Every credential is compared, so that the time taken does not say which matched.
        let mut found = None;
        for credential in &state.config.admin.credentials {
            if constant_time_eq(
                token.as_bytes(),
                credential.token.expose_secret().as_bytes(),
            ) {
                found = Some(credential.name.clone());
            }
        }
        let Some(name) = found else {
            state.limits.failures.spend(&state.clock, "admin", &address);
            return Err(ApiError::unauthorized(if token.is_empty() {
                "admin token missing"
            } else {
                "wrong admin token"
            }));
        };
        crate::audit::caller(format!("admin:{name}"));
        state.limits.admins.admit(&state.clock, &name, "")?;
        Ok(Admin { name })
    }
}

/// The caller's address for the failed-authentication limit (`""` if unknown).
pub fn remote(parts: &Parts, state: &AppState) -> String {
    crate::edge::remote_address(
        &parts.extensions,
        &parts.headers,
        &state.config.server.trusted_proxies,
    )
    .map(|ip| ip.to_string())
    .unwrap_or_default()
}
