//! Tokens for a record system's API, through the `oauth2` crate with our own `reqwest` client:
//! SMART Backend Services (`private_key_jwt`: a JWT signed with the configured key, RS384 or
//! ES384), a client secret, or none. A token is kept until shortly before it expires and fetched
//! again when the source answers 401.

use super::PullError;
use crate::clock::Clock;
use crate::config::{KeyAlg, PullAuth};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
use secrecy::ExposeSecret;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// A token is fetched again this long before it expires.
const MARGIN: Duration = Duration::from_secs(30);
/// How long a token without `expires_in` is kept.
const UNSTATED: Duration = Duration::from_secs(300);
/// The longest a token is kept, whatever `expires_in` says.
const LONGEST: Duration = Duration::from_secs(24 * 3600);

/// How sluis gets a bearer token for one source.
pub struct SourceAuth {
    method: PullAuth,
    http: reqwest::Client,
    clock: Clock,
    /// The token endpoint's answer is waited for this long (`[sources.pull] timeout`).
    timeout: Duration,
    /// The signing key of a client assertion (read at start: a missing key is a start error).
    key: Option<(EncodingKey, Algorithm)>,
    token: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for SourceAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceAuth(..)")
    }
}

/// The most a token endpoint's answer may hold.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// The key that signs client assertions, read and parsed (`None` for other methods).
pub fn signing_key(method: &PullAuth) -> anyhow::Result<Option<(EncodingKey, Algorithm)>> {
    let PullAuth::PrivateKeyJwt { key_path, alg, .. } = method else {
        return Ok(None);
    };
    let pem = std::fs::read(key_path)
        .map_err(|e| anyhow::anyhow!("cannot read the pull key {}: {e}", key_path.display()))?;
    let parsed = match alg {
        KeyAlg::Rs384 => EncodingKey::from_rsa_pem(&pem).map(|k| (k, Algorithm::RS384)),
        KeyAlg::Es384 => EncodingKey::from_ec_pem(&pem).map(|k| (k, Algorithm::ES384)),
    };
    let key = parsed.map_err(|e| {
        anyhow::anyhow!(
            "the pull key {} is not a PEM key of its alg: {e}",
            key_path.display()
        )
    })?;
    Ok(Some(key))
}

/// The claims of a client assertion (RFC 7523, SMART Backend Services).
#[derive(serde::Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    exp: i64,
    iat: i64,
}

impl SourceAuth {
    /// Reads the signing key where one is configured.
    pub fn new(
        method: PullAuth,
        http: reqwest::Client,
        clock: Clock,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let key = signing_key(&method)?;
        Ok(Self {
            method,
            http,
            clock,
            timeout,
            key,
            token: Mutex::new(None),
        })
    }

    /// The bearer token to send, if the source wants one.
    pub async fn bearer(&self) -> Result<Option<String>, PullError> {
        if matches!(self.method, PullAuth::None) {
            return Ok(None);
        }
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() + MARGIN < *until
        {
            return Ok(Some(token.clone()));
        }
        let (token, lifetime) = self.fetch().await?;
        // A token that cannot travel in a header would fail every request without a 401
        // that renews it: refused here.
        if axum::http::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
            return Err(PullError::Auth(
                "the token endpoint answered a token that is not a valid header value".into(),
            ));
        }
        let until = Instant::now() + lifetime.min(LONGEST);
        *cached = Some((token.clone(), until));
        Ok(Some(token))
    }

    /// Forgets the token (the source answered 401: it expired or was revoked).
    pub async fn invalidate(&self) {
        *self.token.lock().await = None;
    }

    async fn fetch(&self) -> Result<(String, Duration), PullError> {
        let timeout = self.timeout;
        let http = |request: oauth2::HttpRequest| {
            let client = self.http.clone();
            async move {
                let mut request =
                    reqwest::Request::try_from(request).map_err(std::io::Error::other)?;
                // Until the whole answer is read, as for a page.
                *request.timeout_mut() = Some(timeout);
                let mut response = client
                    .execute(request)
                    .await
                    .map_err(std::io::Error::other)?;
                let mut out = axum::http::Response::builder().status(response.status());
                for (name, value) in response.headers() {
                    out = out.header(name, value);
                }
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(std::io::Error::other)? {
                    if body.len() + chunk.len() > MAX_TOKEN_RESPONSE {
                        return Err(std::io::Error::other(format!(
                            "the answer is larger than {MAX_TOKEN_RESPONSE} bytes"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok::<_, std::io::Error>(out.body(body).unwrap_or_default())
            }
        };
        let failed =
            |e: String| PullError::Auth(format!("the token endpoint refused or failed: {e}"));
        let response = match &self.method {
            PullAuth::None => return Err(PullError::Auth("no token needed".into())),
            PullAuth::ClientSecret {
                token_url,
                client_id,
                secret,
                scope,
            } => {
                let client = BasicClient::new(ClientId::new(client_id.clone()))
                    .set_client_secret(ClientSecret::new(secret.expose_secret().to_string()))
                    .set_token_uri(
                        TokenUrl::new(token_url.clone()).map_err(|e| failed(e.to_string()))?,
                    );
                let mut request = client.exchange_client_credentials();
                if let Some(s) = scope {
                    request = request.add_scope(Scope::new(s.clone()));
                }
                request
                    .request_async(&http)
                    .await
                    .map_err(|e| failed(crate::error::with_causes(&e)))?
            }
            PullAuth::PrivateKeyJwt {
                token_url,
                client_id,
                kid,
                scope,
                ..
            } => {
                let (key, alg) = self
                    .key
                    .as_ref()
                    .ok_or_else(|| PullError::Auth("no signing key".into()))?;
                let now = self.clock.wall().timestamp();
                let claims = Assertion {
                    iss: client_id,
                    sub: client_id,
                    aud: token_url,
                    jti: uuid::Uuid::new_v4().to_string(),
                    exp: now + 300,
                    iat: now,
                };
                let mut header = Header::new(*alg);
                header.kid = kid.clone();
                let assertion = jsonwebtoken::encode(&header, &claims, key).map_err(|e| {
                    PullError::Auth(format!("cannot sign the client assertion: {e}"))
                })?;
                let client = BasicClient::new(ClientId::new(client_id.clone()))
                    .set_auth_type(AuthType::RequestBody)
                    .set_token_uri(
                        TokenUrl::new(token_url.clone()).map_err(|e| failed(e.to_string()))?,
                    );
                let mut request = client
                    .exchange_client_credentials()
                    .add_extra_param(
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    )
                    .add_extra_param("client_assertion", assertion);
                if let Some(s) = scope {
                    request = request.add_scope(Scope::new(s.clone()));
                }
                request
                    .request_async(&http)
                    .await
                    .map_err(|e| failed(crate::error::with_causes(&e)))?
            }
        };
        Ok((
            response.access_token().secret().clone(),
            response.expires_in().unwrap_or(UNSTATED),
        ))
    }
}
