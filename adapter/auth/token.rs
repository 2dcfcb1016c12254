//! `POST /auth/token`: client credentials for a bearer token (contract §3).
//!
//! Clients with `auth = "client_secret"` authenticate with HTTP Basic, clients with
//! `auth = "private_key_jwt"` with a signed client assertion (`assertion.rs`). The token is a JWT
//! signed with the adapter's own key; it names the client and its kind and expires after
//! `auth.token_lifetime`.

use crate::app::AppState;
use crate::config::{ClientAuth, ClientKind};
use crate::error::{ApiError, ApiResult};
use crate::store::db::{Db, Sql};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The client id.
    pub sub: String,
    /// `portal` or `source`.
    pub kind: String,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

const ISSUER: &str = "sluis";

/// The signing key, shared by every process through the database.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    /// Reads the key from the store, creating it the first time.
    pub async fn load_or_create(db: &Db) -> anyhow::Result<Self> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(fresh);
        db.execute(
            &Sql::new(
                "INSERT INTO settings (key, value) VALUES ('token_key', $1) ON CONFLICT (key) DO NOTHING",
            )
            .arg(encoded),
        )
        .await?;
        #[derive(sqlx::FromRow, serde::Deserialize)]
        struct Row {
            value: String,
        }
        let row: Row = db
            .fetch_one(&Sql::new(
                "SELECT value FROM settings WHERE key = 'token_key'",
            ))
            .await?;
        let secret = base64::engine::general_purpose::STANDARD.decode(row.value)?;
        Ok(Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
        })
    }

    pub fn issue(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// Checks signature, issuer and expiry against the adapter's clock (`now`, in seconds).
    pub fn verify(&self, token: &str, now: i64) -> Option<Claims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()?
            .claims;
        (claims.exp > now).then_some(claims)
    }
}

/// The form of a token request.
#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
}

/// `POST /auth/token`; a refused client is told to authenticate with HTTP Basic.
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Response> {
    issue(state, headers, body)
        .await
        .map_err(|e| e.with_challenge(crate::error::BASIC_CHALLENGE))
}

async fn issue(state: AppState, headers: HeaderMap, body: axum::body::Body) -> ApiResult<Response> {
    let body = crate::body::read_limited(body, 64 * 1024).await?;
    let form: TokenRequest = serde_urlencoded_form(&body)?;
    if form.grant_type.as_deref() != Some("client_credentials") {
        return Err(ApiError::unauthorized(
            "grant_type must be client_credentials",
        ));
    }
    let client_id = if form.client_assertion.is_some() || form.client_assertion_type.is_some() {
        super::assertion::client(
            &state,
            form.client_assertion_type.as_deref(),
            form.client_assertion.as_deref(),
            form.client_id.as_deref(),
        )
        .await?
    } else {
        basic_client(&state, &headers, form.client_id.as_deref())?
    };
    let client = state
        .config
        .client(&client_id)
        .ok_or_else(|| ApiError::unauthorized("unknown client or wrong secret"))?;
    let now = state.clock.now();
    let lifetime = state.config.auth.token_lifetime;
    let exp = lifetime.after(now).timestamp();
    let kind = match client.kind {
        ClientKind::Portal => "portal",
        ClientKind::Source => "source",
    };
    let scope = form.scope.unwrap_or_else(|| match client.kind {
        ClientKind::Portal => "user/*.rs".into(),
        ClientKind::Source => "system/*.cud".into(),
    });
    let claims = Claims {
        sub: client.id.clone(),
        kind: kind.into(),
        scope: scope.clone(),
        iat: now.timestamp(),
        exp,
        iss: ISSUER.into(),
    };
    let token = state.tokens.issue(&claims)?;
    let body = serde_json::json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": exp - now.timestamp(),
        "scope": scope,
    });
    Ok((
        [
            (axum::http::header::CACHE_CONTROL, "no-store"),
            (axum::http::header::CONTENT_TYPE, "application/json"),
        ],
        body.to_string(),
    )
        .into_response())
}

/// `GET /.well-known/smart-configuration`: what the token endpoint supports (SMART App
/// Launch 2.x, for backend services).
pub async fn smart_configuration(State(state): State<AppState>) -> Response {
    let body = serde_json::json!({
        "issuer": state.config.server.public_base_url.trim_end_matches('/'),
        "token_endpoint": super::assertion::token_url(&state),
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["client_credentials"],
        "capabilities": ["client-confidential-asymmetric"],
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The client named and proven by HTTP Basic (`client_secret`).
fn basic_client(
    state: &AppState,
    headers: &HeaderMap,
    form_client: Option<&str>,
) -> ApiResult<String> {
    let refuse = || ApiError::unauthorized("unknown client or wrong secret");
    let value = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("client authentication missing: use HTTP Basic"))?;
    let encoded = value
        .strip_prefix("Basic ")
        .ok_or_else(|| ApiError::unauthorized("client authentication must be HTTP Basic"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(refuse)?;
    let (id, secret) = decoded.split_once(':').ok_or_else(refuse)?;
    // RFC 6749 §2.3.1: id and secret are form-urlencoded inside Basic.
    let id = percent_decode(id);
    let secret = percent_decode(secret);
    if form_client.is_some_and(|f| f != id) {
        return Err(refuse());
    }
    let client = state.config.client(&id).ok_or_else(refuse)?;
    match &client.auth {
        ClientAuth::ClientSecret { secret: expected }
            if constant_time_eq(expected.expose_secret().as_bytes(), secret.as_bytes()) =>
        {
            Ok(id)
        }
        _ => Err(refuse()),
    }
}

fn percent_decode(text: &str) -> String {
    form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Compares secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn serde_urlencoded_form(body: &[u8]) -> ApiResult<TokenRequest> {
    let mut form = TokenRequest {
        grant_type: None,
        scope: None,
        client_id: None,
        client_assertion_type: None,
        client_assertion: None,
    };
    for (key, value) in form_urlencoded::parse(body) {
        let value = Some(value.into_owned());
        match key.as_ref() {
            "grant_type" => form.grant_type = value,
            "scope" => form.scope = value,
            "client_id" => form.client_id = value,
            "client_assertion_type" => form.client_assertion_type = value,
            "client_assertion" => form.client_assertion = value,
            _ => {}
        }
    }
    Ok(form)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn tokens_expire_by_the_adapters_clock() {
        let keys = TokenKeys {
            encoding: EncodingKey::from_secret(b"k"),
            decoding: DecodingKey::from_secret(b"k"),
        };
        let claims = Claims {
            sub: "caren".into(),
            kind: "portal".into(),
            scope: "user/*.rs".into(),
            iat: 100,
            exp: 200,
            iss: ISSUER.into(),
        };
        let token = keys.issue(&claims).unwrap();
        assert_eq!(keys.verify(&token, 150), Some(claims));
        assert_eq!(keys.verify(&token, 200), None);
        assert_eq!(keys.verify("garbage", 150), None);
        let other = TokenKeys {
            encoding: EncodingKey::from_secret(b"other"),
            decoding: DecodingKey::from_secret(b"other"),
        };
        assert_eq!(other.verify(&token, 150), None);
    }
}
