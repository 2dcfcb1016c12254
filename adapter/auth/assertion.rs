//! `private_key_jwt` client authentication (SMART Backend Services): a client proves itself
//! with a JWT it signed (RS384 or ES384, every other `alg` refused) with a key of its JWKS
//! (`jwks_path`, read at every token request, so a key added or withdrawn there counts at
//! once). `iss` and `sub` are the client id, `aud` the token URL, `exp` at most five minutes
//! ahead, and `jti` never seen before: the replay record is in the database, so that several
//! processes share it. Times are the adapter's clock with a minute of skew.

use crate::app::AppState;
use crate::config::{ClientAuth, Jwks};
use crate::error::{ApiError, ApiResult};
use crate::store::Sql;
use crate::store::db::Executor as _;
use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The `client_assertion_type` of a JWT client assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The clock skew allowed either way, in seconds.
const SKEW: i64 = 60;

/// How far ahead an assertion's `exp` may lie, in seconds (SMART: five minutes), with a few
/// seconds for the clocks.
const MAX_AHEAD: i64 = 300 + 10;

/// How long a `jti` is remembered after its `exp`, in seconds: far longer than any process
/// whose clock lags may still accept the assertion.
const REMEMBER: i64 = 24 * 3600;

#[derive(Debug, Deserialize)]
struct Claims {
    exp: i64,
    jti: String,
    #[serde(default)]
    nbf: Option<i64>,
}

/// The client id proven by `assertion`, or 401.
pub async fn client(
    state: &AppState,
    assertion_type: Option<&str>,
    assertion: Option<&str>,
    form_client: Option<&str>,
) -> ApiResult<String> {
    if assertion_type != Some(ASSERTION_TYPE) {
        return Err(ApiError::unauthorized(format!(
            "client_assertion_type must be {ASSERTION_TYPE}"
        )));
    }
    let jwt = assertion
        .filter(|a| a.len() <= 16 * 1024)
        .ok_or_else(|| ApiError::unauthorized("client_assertion missing or too long"))?;
    let header = jsonwebtoken::decode_header(jwt)
        .map_err(|_| ApiError::unauthorized("client_assertion is not a signed JWT"))?;
    let alg = match header.alg {
        Algorithm::RS384 | Algorithm::ES384 => header.alg,
        other => {
            return Err(ApiError::unauthorized(format!(
                "client assertions are signed with RS384 or ES384, not {other:?}"
            )));
        }
    };
    // RFC 7515 §4.1.11: extensions it must understand; we understand none.
    if unverified_part(jwt, 0).is_some_and(|h| h.get("crit").is_some()) {
        return Err(ApiError::unauthorized(
            "client_assertion has critical header extensions (crit), which are not supported",
        ));
    }
    // Who it says it is, to find its keys; believed only once the signature is checked.
    let iss = unverified_part(jwt, 1)
        .and_then(|p| p.get("iss").and_then(|i| i.as_str()).map(str::to_string))
        .ok_or_else(|| ApiError::unauthorized("client_assertion has no iss"))?;
    // One answer for an unknown client, a client that does not sign, and a key not found,
    // so that the answers do not tell which clients exist; the log says which.
    let refuse = |why: &str| {
        tracing::info!(client = %iss, why, "client assertion refused");
        ApiError::unauthorized("unknown client, or no key of it signed this client_assertion")
    };
    if form_client.is_some_and(|c| c != iss) {
        return Err(refuse("client_id is not the assertion's iss"));
    }
    let client = state
        .config
        .client(&iss)
        .ok_or_else(|| refuse("no such client"))?;
    let ClientAuth::PrivateKeyJwt { jwks } = &client.auth else {
        return Err(refuse("the client authenticates with a secret"));
    };
    let keys = client_keys(state, &iss, jwks, header.kid.as_deref())
        .await
        .map_err(|_| refuse("the client's keys cannot be read"))?;
    // Signing keys only (a key marked for encryption is not one).
    let signing: Vec<&jsonwebtoken::jwk::Jwk> = keys
        .keys
        .iter()
        .filter(|k| {
            !matches!(
                k.common.public_key_use,
                Some(
                    jsonwebtoken::jwk::PublicKeyUse::Encryption
                        | jsonwebtoken::jwk::PublicKeyUse::Other(_)
                )
            )
        })
        .collect();
    let jwk = match &header.kid {
        Some(kid) => signing
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid.as_str()))
            .copied(),
        None if signing.len() == 1 => signing.first().copied(),
        None => None,
    }
    .ok_or_else(|| refuse("no signing key of the client has the assertion's kid"))?;
    // A key that says what it is for is used for that only.
    if jwk
        .common
        .key_algorithm
        .is_some_and(|a| a.to_string() != format!("{alg:?}"))
    {
        return Err(refuse("the key's alg is not the assertion's"));
    }
    if jwk.common.key_operations.as_ref().is_some_and(|ops| {
        !ops.iter()
            .any(|op| matches!(op, jsonwebtoken::jwk::KeyOperations::Verify))
    }) {
        return Err(refuse("the key's key_ops do not include verify"));
    }
    if let Some(problem) = weak_key(jwk) {
        tracing::warn!(client = %iss, problem, "a client's key is refused");
        return Err(refuse("the key is too weak"));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| refuse("the key cannot be used"))?;
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[iss.as_str()]);
    validation.sub = Some(iss.clone());
    validation.set_audience(&[token_url(state)]);
    validation.validate_exp = false;
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let claims = jsonwebtoken::decode::<Claims>(jwt, &key, &validation)
        .map_err(|e| match kind(&e) {
            // Until the signature holds, the answer is the one for an unknown client: it must
            // not tell which clients exist or which keys they have.
            Some(what) => ApiError::unauthorized(format!(
                "client_assertion refused ({what}): iss, sub and aud (the token URL) must be right"
            )),
            None => refuse("the signature does not verify with the key"),
        })?
        .claims;
    let now = state.clock.now().timestamp();
    if claims.exp <= now - SKEW {
        return Err(ApiError::unauthorized("client_assertion has expired"));
    }
    if claims.exp > now + MAX_AHEAD {
        return Err(ApiError::unauthorized(
            "client_assertion's exp is more than five minutes ahead",
        ));
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + SKEW) {
        return Err(ApiError::unauthorized("client_assertion is not valid yet"));
    }
    if claims.jti.is_empty() || claims.jti.len() > 256 || claims.jti.chars().any(char::is_control) {
        return Err(ApiError::unauthorized(
            "client_assertion needs a jti of 1 to 256 bytes, without control characters",
        ));
    }
    if !first_use(state, &iss, &claims.jti, claims.exp, now).await? {
        return Err(ApiError::unauthorized(
            "client_assertion's jti was used before",
        ));
    }
    Ok(iss)
}

/// The client's public keys: its JWKS file, read now, or its `jwks_uri`, as kept.
async fn client_keys(
    state: &AppState,
    client: &str,
    jwks: &Jwks,
    kid: Option<&str>,
) -> ApiResult<JwkSet> {
    let cannot = || ApiError::unauthorized("the client's keys cannot be read");
    match jwks {
        Jwks::Path(path) => {
            let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                tracing::error!(client, path = %path.display(), error = %e, "cannot read the client's JWKS");
                cannot()
            })?;
            serde_json::from_str(&text).map_err(|e| {
                tracing::error!(client, path = %path.display(), error = %e, "the client's JWKS is not valid");
                cannot()
            })
        }
        Jwks::Uri(uri) => state
            .jwks
            .keys(&state.clock, uri, kid)
            .await
            .map_err(|problem| {
                tracing::error!(client, problem, "cannot get the client's JWKS");
                cannot()
            }),
    }
}

/// What makes a public key too weak to trust: RSA under 2048 bits, EC on another curve than
/// P-384 (ES384's).
pub fn weak_key(jwk: &jsonwebtoken::jwk::Jwk) -> Option<String> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(rsa.n.trim_end_matches('='))
                .unwrap_or_default();
            let significant = bytes.iter().skip_while(|b| **b == 0).count();
            let e = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(rsa.e.trim_end_matches('='))
                .unwrap_or_default();
            let e = e.iter().skip_while(|b| **b == 0).collect::<Vec<_>>();
            let e_small = e.len() < 3 || (e.len() == 3 && (*e[0], *e[1], *e[2]) < (1, 0, 1));
            if significant == 0 || bytes.last().is_some_and(|b| b % 2 == 0) {
                Some("an RSA key whose modulus is not valid".into())
            } else if significant * 8 < 2048 {
                Some(format!(
                    "an RSA key of about {} bits; at least 2048",
                    significant * 8
                ))
            } else if e_small || e.last().is_some_and(|b| *b % 2 == 0) {
                Some("an RSA key whose exponent is not 65537 or another odd one as large".into())
            } else {
                None
            }
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P384 => None,
        AlgorithmParameters::EllipticCurve(ec) => {
            Some(format!("an EC key on {:?}; ES384 needs P-384", ec.curve))
        }
        _ => Some("neither an RSA nor an EC key".into()),
    }
}

/// The token URL, which an assertion's `aud` must name.
pub fn token_url(state: &AppState) -> String {
    format!(
        "{}/auth/token",
        state.config.server.public_base_url.trim_end_matches('/')
    )
}

/// Part `n` of a JWT (0 the header, 1 the payload) as JSON, unchecked.
fn unverified_part(jwt: &str, n: usize) -> Option<serde_json::Value> {
    let part = jwt.split('.').nth(n)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What is wrong with an assertion whose signature verified; `None` when it did not (or
/// could not be checked).
fn kind(e: &jsonwebtoken::errors::Error) -> Option<&'static str> {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidIssuer => Some("wrong iss"),
        ErrorKind::InvalidSubject => Some("wrong sub"),
        ErrorKind::InvalidAudience => Some("wrong aud"),
        ErrorKind::MissingRequiredClaim(_) => Some("a claim is missing"),
        _ => None,
    }
}

/// Records `jti` of `client` until `exp` (and forgets expired ones); whether it is new.
async fn first_use(
    state: &AppState,
    client: &str,
    jti: &str,
    exp: i64,
    now: i64,
) -> ApiResult<bool> {
    let mut tx = state.db.begin().await?;
    tx.execute(&Sql::new("DELETE FROM assertion_jtis WHERE expires_at < $1").arg(now - REMEMBER))
        .await?;
    let inserted = tx
        .execute(
            &Sql::new(
                "INSERT INTO assertion_jtis (client_id, jti, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (client_id, jti) DO NOTHING",
            )
            .arg(client)
            .arg(jti)
            .arg(exp),
        )
        .await?;
    tx.commit().await?;
    Ok(inserted == 1)
}

#[cfg(test)]
mod tests {
    use super::weak_key;

    fn keys(file: &str) -> Vec<jsonwebtoken::jwk::Jwk> {
        let path = format!("{}/tests/keys/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap();
        serde_json::from_str::<jsonwebtoken::jwk::JwkSet>(&text)
            .unwrap()
            .keys
    }

    #[test]
    fn rsa_under_2048_bits_and_curves_other_than_p384_are_weak() {
        for key in keys("portal.jwks.json") {
            assert_eq!(weak_key(&key), None, "{:?}", key.common.key_id);
        }
        let weak: Vec<String> = keys("weak.jwks.json")
            .iter()
            .map(|k| weak_key(k).unwrap())
            .collect();
        assert_eq!(
            weak,
            [
                "an RSA key of about 1024 bits; at least 2048",
                "an EC key on P256; ES384 needs P-384"
            ]
        );
    }
}
