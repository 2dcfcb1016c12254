//! `POST /auth/token`: client credentials for a bearer token (contract §3).
//!
//! Clients with `auth = "client_secret"` authenticate with HTTP Basic, clients with
//! `auth = "private_key_jwt"` with a signed client assertion (`assertion.rs`). The token is a JWT
//! signed with the adapter's own key; it names the client and its kind and expires after
//! `auth.token_lifetime`.

use crate::app::AppState;
use crate::config::{ClientAuth, ClientKind};
use crate::error::{ApiError, ApiResult};
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

/// The keys of access tokens: one signs, each verifies the tokens that name its `kid`. From
/// key files (`auth.signing_key`, `auth.previous_signing_keys`), never from the database:
/// whoever can read the database cannot mint a token.
#[derive(Clone)]
pub struct TokenKeys {
    signing: (String, EncodingKey),
    verifying: Vec<(String, DecodingKey)>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

/// Why a bearer token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Signed by a key of ours, but past its `exp`.
    Expired,
    /// Not made by us (or by a key rotated out): a guess, a forgery, or garbage.
    NotOurs,
}

/// The fewest bytes a signing key has (HS256: the hash's length).
const MIN_KEY_BYTES: usize = 32;

impl TokenKeys {
    /// The configured keys; without `auth.signing_key`, a key made now, which only this
    /// process knows (its tokens end with it, and another process refuses them).
    pub fn load(auth: &crate::config::Auth) -> anyhow::Result<Self> {
        let signing = match &auth.signing_key {
            Some(path) => read_key(path)?,
            None => {
                let mut fresh = [0u8; 32];
                getrandom::fill(&mut fresh).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
                tracing::warn!(
                    "auth.signing_key is not set: tokens are signed with a key made at start, \
                     which this process alone knows (set it when several processes serve, or \
                     tokens should outlive a restart)"
                );
                fresh.to_vec()
            }
        };
        let mut verifying = vec![(kid(&signing), DecodingKey::from_secret(&signing))];
        for path in &auth.previous_signing_keys {
            let key = read_key(path)?;
            verifying.push((kid(&key), DecodingKey::from_secret(&key)));
        }
        Ok(Self {
            signing: (kid(&signing), EncodingKey::from_secret(&signing)),
            verifying,
        })
    }

    pub fn issue(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing.0.clone());
        jsonwebtoken::encode(&header, claims, &self.signing.1)
    }

    /// Checks signature (by the key its `kid` names), issuer and expiry against the
    /// adapter's clock (`now`, in seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, Refused> {
        let kid = jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|h| h.kid)
            .ok_or(Refused::NotOurs)?;
        let (_, key) = self
            .verifying
            .iter()
            .find(|(k, _)| *k == kid)
            .ok_or(Refused::NotOurs)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|_| Refused::NotOurs)?
            .claims;
        if claims.exp > now {
            Ok(claims)
        } else {
            Err(Refused::Expired)
        }
    }
}

/// A key file's secret: its bytes, less surrounding white space, at least 32 of them.
pub fn read_key(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| {
        anyhow::anyhow!("cannot read the token signing key {}: {e}", path.display())
    })?;
    let key = bytes.trim_ascii().to_vec();
    if key.len() < MIN_KEY_BYTES {
        anyhow::bail!(
            "the token signing key {} has {} bytes; at least {MIN_KEY_BYTES} (e.g. `openssl rand -base64 48 > {}`)",
            path.display(),
            key.len(),
            path.display()
        );
    }
    Ok(key)
}

/// A key's id: the start of its SHA-256, which names it without giving it away.
fn kid(key: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
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
    request: axum::extract::Request,
) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let address = crate::edge::remote_address(
        &parts.extensions,
        &parts.headers,
        &state.config.server.trusted_proxies,
    )
    .map(|ip| ip.to_string())
    .unwrap_or_default();
    issue(state, address, parts.headers, body)
        .await
        .map_err(|e| match e.status {
            axum::http::StatusCode::UNAUTHORIZED => e.with_challenge(crate::error::BASIC_CHALLENGE),
            _ => e,
        })
}

async fn issue(
    state: AppState,
    address: String,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Response> {
    let body = crate::body::read_limited(body, 64 * 1024).await?;
    let form: TokenRequest = serde_urlencoded_form(&body)?;
    // Failed authentication counts per claimed client and address: checked before the
    // credentials are, so that beyond the limit even right ones wait.
    // Its own key space ("token/…"), apart from the admin's and bearer tokens'.
    let claimed = format!("token/{}", claimed_client(&headers, &form));
    state
        .limits
        .failures
        .check(&state.clock, &claimed, &address)?;
    // A known client's token is taken from its limit before its assertion's jti is spent
    // (so that a 429 never spends one), and given back if it does not authenticate.
    let reserved = claimed
        .strip_prefix("token/")
        .filter(|c| state.config.client(c).is_some())
        .map(str::to_string);
    if let Some(id) = &reserved {
        state.limits.tokens.admit(&state.clock, id, "")?;
    }
    match authenticate(&state, &headers, &form).await {
        Ok(id) => {
            if reserved.as_deref() != Some(id.as_str()) {
                if let Some(other) = &reserved {
                    state.limits.tokens.refund(other, "");
                }
                state.limits.tokens.admit(&state.clock, &id, "")?;
            }
            grant(&state, &id, form)
        }
        Err(e) => {
            if let Some(id) = &reserved {
                state.limits.tokens.refund(id, "");
            }
            // The record of a failed request names the client it claimed to be, so that
            // guessing at one client can be found in the audit.
            if let Some(id) = claimed
                .strip_prefix("token/")
                .filter(|c| state.config.client(c).is_some())
            {
                crate::audit::note(|n| n.client_id = Some(id.to_string()));
            }
            if e.status == axum::http::StatusCode::UNAUTHORIZED {
                state
                    .limits
                    .failures
                    .spend(&state.clock, &claimed, &address);
            }
            Err(e)
        }
    }
}

/// The client a token request says it is, before anything is checked: the form's
/// `client_id`, HTTP Basic's user, or the assertion's `iss` (`""` if none).
fn claimed_client(headers: &HeaderMap, form: &TokenRequest) -> String {
    if let Some(id) = &form.client_id {
        return id.chars().take(256).collect();
    }
    if let Some(assertion) = &form.client_assertion {
        let iss = assertion
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("iss").and_then(|s| s.as_str()).map(str::to_string));
        return iss.unwrap_or_default().chars().take(256).collect();
    }
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(basic)
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|d| d.split_once(':').map(|(id, _)| percent_decode(id)))
        .unwrap_or_default()
        .chars()
        .take(256)
        .collect()
}

/// The client the request proves to be: by its assertion, or by HTTP Basic.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    form: &TokenRequest,
) -> ApiResult<String> {
    if form.grant_type.as_deref() != Some("client_credentials") {
        return Err(ApiError::unauthorized(
            "grant_type must be client_credentials",
        ));
    }
    if form.client_assertion.is_some() || form.client_assertion_type.is_some() {
        // RFC 6749 §2.3: one way of authenticating per request.
        if headers.contains_key(AUTHORIZATION) {
            return Err(ApiError::unauthorized(
                "authenticate with a client assertion or with HTTP Basic, not both",
            ));
        }
        super::assertion::client(
            state,
            form.client_assertion_type.as_deref(),
            form.client_assertion.as_deref(),
            form.client_id.as_deref(),
        )
        .await
    } else {
        basic_client(state, headers, form.client_id.as_deref())
    }
}

/// The token for `client_id`, proven.
fn grant(state: &AppState, client_id: &str, form: TokenRequest) -> ApiResult<Response> {
    let client = state
        .config
        .client(client_id)
        .ok_or_else(|| ApiError::unauthorized("unknown client or wrong secret"))?;
    crate::audit::caller(client.id.clone());
    let now = state.clock.now();
    let lifetime = state.config.auth.token_lifetime;
    let exp = lifetime.after(now).timestamp();
    let kind = match client.kind {
        ClientKind::Portal => "portal",
        ClientKind::Source => "source",
    };
    // What it asks for, as far as its config allows; without a `scope`, all its config allows.
    let scope = match form.scope.as_deref() {
        None => client.scope.clone(),
        Some(asked) => {
            let asked = super::Scopes::parse(asked).map_err(invalid_scope)?;
            let granted = asked.narrow(&client.scope);
            if granted.is_empty() {
                return Err(invalid_scope(format!(
                    "none of the scope asked for is allowed to this client (it may have: {})",
                    client.scope
                )));
            }
            granted
        }
    }
    .to_string();
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

/// RFC 6749 §5.2 `invalid_scope`: 400, saying what is wrong.
fn invalid_scope(problem: String) -> ApiError {
    ApiError::bad_request(
        crate::error::Reason::InvalidToken,
        format!("invalid_scope: {problem}"),
    )
}

/// `GET /.well-known/smart-configuration`: what the token endpoint supports (SMART App
/// Launch 2.x, for backend services).
pub async fn smart_configuration(State(state): State<AppState>) -> Response {
    let body = serde_json::json!({
        "token_endpoint": super::assertion::token_url(&state),
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.rs", "system/*.cud", "system/*.read", "system/*.write"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The credentials of `Authorization: Basic …` (the scheme in any case, RFC 7235).
fn basic(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("basic").then_some(credentials)
}

/// The client named and proven by HTTP Basic (`client_secret`).
fn basic_client(
    state: &AppState,
    headers: &HeaderMap,
    form_client: Option<&str>,
) -> ApiResult<String> {
    let refuse = || ApiError::unauthorized("unknown client or wrong secret");
    if crate::edge::repeated(headers, AUTHORIZATION) {
        return Err(ApiError::unauthorized(
            "Authorization sent more than once: send one",
        ));
    }
    let value = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("client authentication missing: use HTTP Basic"))?;
    let encoded = basic(value)
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
        let slot = match key.as_ref() {
            "grant_type" => &mut form.grant_type,
            "scope" => &mut form.scope,
            "client_id" => &mut form.client_id,
            "client_assertion_type" => &mut form.client_assertion_type,
            "client_assertion" => &mut form.client_assertion,
            _ => continue,
        };
        // RFC 6749 §3.2: a parameter at most once (what a proxy reads is what we read).
        if slot.is_some() {
            return Err(ApiError::unauthorized(format!(
                "the parameter {key} is given more than once"
            )));
        }
        *slot = Some(value.into_owned());
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

    fn keys(signing: &[u8], previous: &[&[u8]]) -> TokenKeys {
        let mut verifying = vec![(kid(signing), DecodingKey::from_secret(signing))];
        for p in previous {
            verifying.push((kid(p), DecodingKey::from_secret(p)));
        }
        TokenKeys {
            signing: (kid(signing), EncodingKey::from_secret(signing)),
            verifying,
        }
    }

    #[test]
    fn tokens_expire_by_the_adapters_clock_and_need_a_known_key() {
        let claims = Claims {
            sub: "caren".into(),
            kind: "portal".into(),
            scope: "user/*.rs".into(),
            iat: 100,
            exp: 200,
            iss: ISSUER.into(),
        };
        let old = keys(b"k-one", &[]);
        let token = old.issue(&claims).unwrap();
        assert_eq!(old.verify(&token, 150), Ok(claims.clone()));
        assert_eq!(old.verify(&token, 200), Err(Refused::Expired));
        assert_eq!(old.verify("garbage", 150), Err(Refused::NotOurs));
        // Rotated: the new key signs, the old one still verifies; then it is gone.
        let rotated = keys(b"k-two", &[b"k-one"]);
        assert_eq!(rotated.verify(&token, 150), Ok(claims.clone()));
        let new_token = rotated.issue(&claims).unwrap();
        assert_ne!(
            jsonwebtoken::decode_header(&new_token).unwrap().kid,
            jsonwebtoken::decode_header(&token).unwrap().kid
        );
        assert_eq!(
            keys(b"k-two", &[]).verify(&token, 150),
            Err(Refused::NotOurs)
        );
        // A token whose kid names a key but whose signature is another's.
        let mut forged = Header::new(Algorithm::HS256);
        forged.kid = Some(kid(b"k-one"));
        let forged =
            jsonwebtoken::encode(&forged, &claims, &EncodingKey::from_secret(b"x")).unwrap();
        assert_eq!(old.verify(&forged, 150), Err(Refused::NotOurs));
    }
}
