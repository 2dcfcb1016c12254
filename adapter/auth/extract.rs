//! Extractors that turn request headers into a checked caller, or an OperationOutcome.

use crate::app::AppState;
use crate::error::{ApiError, Reason};
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use secrecy::ExposeSecret;

use super::token::{Claims, constant_time_eq};

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn claims(parts: &Parts, state: &AppState, kind: &str) -> Result<Claims, ApiError> {
    let token = bearer(parts).ok_or_else(|| ApiError::unauthorized("bearer token missing"))?;
    let claims = state
        .tokens
        .verify(token, state.clock.now().timestamp())
        .ok_or_else(|| ApiError::unauthorized("token invalid or expired"))?;
    // What the client is comes from config, read again on every request, not from the
    // token: a client removed, disabled or changed in kind is refused with its old tokens.
    let configured = state.config.client(&claims.sub).map(|c| match c.kind {
        crate::config::ClientKind::Portal => "portal",
        crate::config::ClientKind::Source => "source",
    });
    // And the token was issued to it as what it is now: a kind changed since is refused.
    if configured != Some(kind) || claims.kind != kind {
        return Err(ApiError::unauthorized(format!(
            "this call needs a token of a {kind} client"
        )));
    }
    Ok(claims)
}

/// A portal vendor (step 1 of contract §5).
#[derive(Debug, Clone)]
pub struct Portal {
    pub client_id: String,
}

impl FromRequestParts<AppState> for Portal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = claims(parts, state, "portal")?;
        crate::audit::note(|n| n.client_id = Some(claims.sub.clone()));
        Ok(Portal {
            client_id: claims.sub,
        })
    }
}

/// A person using a portal: the vendor's token and the vendor's id of the person.
#[derive(Debug, Clone)]
pub struct PortalUser {
    pub client_id: String,
    pub external_id: String,
}

impl FromRequestParts<AppState> for PortalUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let portal = Portal::from_request_parts(parts, state).await?;
        let external_id = parts
            .headers
            .get("x-portal-user")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 256)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "X-Portal-User header missing: name the person using the portal",
                )
            })?;
        crate::audit::note(|n| n.user_id = Some(external_id.to_string()));
        // R16: after the token (a stranger's requests count for no one), before anything else.
        if let Err(seconds) = state
            .limiter
            .admit(&state.clock, &portal.client_id, external_id)
        {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Reason::RateLimited,
                format!(
                    "more than limits.user_requests_per_minute ({}) requests of this user; retry in {seconds} s",
                    state.config.limits.user_requests_per_minute
                ),
            );
            error.retry_after = Some(seconds);
            return Err(error);
        }
        Ok(PortalUser {
            client_id: portal.client_id,
            external_id: external_id.to_string(),
        })
    }
}

/// A record system pushing to its source.
#[derive(Debug, Clone)]
pub struct SourceClient {
    pub client_id: String,
    pub source: String,
}

impl FromRequestParts<AppState> for SourceClient {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = claims(parts, state, "source")?;
        crate::audit::note(|n| n.client_id = Some(claims.sub.clone()));
        let source = state
            .config
            .client(&claims.sub)
            .and_then(|c| c.source.clone())
            .ok_or_else(|| ApiError::unauthorized("client has no source"))?;
        Ok(SourceClient {
            client_id: claims.sub,
            source,
        })
    }
}

/// Care staff and integration engineers, with `admin.token`.
#[derive(Debug, Clone)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        crate::audit::note(|n| n.client_id = Some("admin".into()));
        let token = bearer(parts).ok_or_else(|| ApiError::unauthorized("admin token missing"))?;
        if constant_time_eq(
            token.as_bytes(),
            state.config.admin.token.expose_secret().as_bytes(),
        ) {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized("wrong admin token"))
        }
    }
}
