//! Fetching one page of a record system's API, with the faults of real servers retried: 5xx,
//! 429 (after its `Retry-After`), timeouts, broken connections and pages cut off, each with
//! exponential backoff and jitter, up to `max_retries`; a 401 fetches a new token once. Every
//! failure is logged with the source, type and URL, never a token.

use super::PullError;
use super::auth::SourceAuth;
use axum::http::{StatusCode, header};
use serde_json::Value;
use std::time::Duration;

/// The first wait between tries; it doubles with every retry (with jitter), up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(200);
const MAX_WAIT: Duration = Duration::from_secs(30);
/// A `Retry-After` longer than this is cut to it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Fetches pages of one source.
pub struct Fetcher {
    pub http: reqwest::Client,
    pub auth: SourceAuth,
    pub source: String,
    pub max_retries: u32,
    pub timeout: Duration,
    /// The most a page may hold, unpacked (`[limits] max_body_bytes`).
    pub max_bytes: usize,
}

/// A page and the retries it took.
pub struct Fetched {
    pub body: Value,
    pub retries: u32,
    /// The source's `Date` header: when it answered, by its own clock.
    pub date: Option<crate::time::Micros>,
}

/// How long to wait before try `attempt` (1, 2, …): doubling, with jitter in [½, 1].
fn backoff(attempt: u32) -> Duration {
    jittered(FIRST_WAIT, MAX_WAIT, attempt)
}

/// `first` doubled per try after the first, at most `max`, times a random factor in [½, 1]
/// (so that many waiting at once do not all come back at once).
pub fn jittered(first: Duration, max: Duration, attempt: u32) -> Duration {
    let full = first
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(max);
    let mut byte = [0u8; 1];
    let jitter = match getrandom::fill(&mut byte) {
        Ok(()) => 0.5 + f64::from(byte[0]) / 510.0,
        Err(_) => 0.75,
    };
    full.mul_f64(jitter)
}

/// `Retry-After` in seconds (an HTTP date counts as a minute: the clocks may differ).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    let wait = match value.trim().parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => Duration::from_secs(60),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

impl Fetcher {
    /// `GET url` as FHIR JSON, retrying what can be retried; a failure comes with the retries
    /// it took. `resource_type` is for the logs.
    /// A try is not made again once `lost` is set (another process took the source over).
    pub async fn get(
        &self,
        url: &str,
        resource_type: &str,
        lost: &std::sync::atomic::AtomicBool,
    ) -> Result<Fetched, (PullError, u32)> {
        let mut retries = 0u32;
        let mut renewed = false;
        loop {
            let (problem, wait) = match self.try_once(url).await {
                Ok((body, date)) => {
                    return Ok(Fetched {
                        body,
                        retries,
                        date,
                    });
                }
                Err(Try::Unauthorized) if !renewed => {
                    // The token expired or was revoked: a new one, at once, once.
                    self.auth.invalidate().await;
                    renewed = true;
                    continue;
                }
                Err(Try::Unauthorized) => (
                    PullError::Auth("the source refused the token (401)".into()),
                    None,
                ),
                Err(Try::Fatal(e)) => {
                    tracing::warn!(source = %self.source, resource_type, url, error = %e, "pull failed");
                    return Err((e, retries));
                }
                Err(Try::Again(e, wait)) => (e, wait),
            };
            if retries >= self.max_retries {
                tracing::warn!(source = %self.source, resource_type, url, retries, error = %problem, "pull failed, retries used up");
                return Err((problem, retries));
            }
            retries += 1;
            let wait = wait.unwrap_or_else(|| backoff(retries));
            tracing::info!(source = %self.source, resource_type, url, retry = retries, wait_ms = wait.as_millis() as u64, error = %problem, "pull retried");
            tokio::time::sleep(wait).await;
            if lost.load(std::sync::atomic::Ordering::Relaxed) {
                return Err((PullError::LeaseLost, retries));
            }
        }
    }

    async fn try_once(&self, url: &str) -> Result<(Value, Option<crate::time::Micros>), Try> {
        let token = self.auth.bearer().await.map_err(|e| match e {
            // A token endpoint that fails is retried like the source itself.
            PullError::Auth(m) => Try::Again(PullError::Auth(m), None),
            other => Try::Again(other, None),
        })?;
        let mut request = self
            .http
            .get(url)
            .timeout(self.timeout)
            .header(header::ACCEPT, "application/fhir+json");
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Try::Again(PullError::Http(without_url(&e)), None))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(Try::Unauthorized);
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let wait = retry_after(&response);
            return Err(Try::Again(PullError::Status(status.as_u16()), wait));
        }
        if !status.is_success() {
            return Err(Try::Fatal(PullError::Status(status.as_u16())));
        }
        let date = response
            .headers()
            .get(header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
            .map(|d| d.timestamp_micros());
        let too_large = || {
            Try::Fatal(PullError::Page(format!(
                "the page is larger than {} bytes ([limits] max_body_bytes)",
                self.max_bytes
            )))
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes as u64)
        {
            return Err(too_large());
        }
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Try::Again(PullError::Http(without_url(&e)), None))?
        {
            if bytes.len() + chunk.len() > self.max_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        // A page cut off in the middle does not parse: fetched again.
        let body = serde_json::from_slice(&bytes)
            .map_err(|e| Try::Again(PullError::Page(format!("not JSON: {e}")), None))?;
        Ok((body, date))
    }
}

/// What one try came to.
enum Try {
    Unauthorized,
    Again(PullError, Option<Duration>),
    Fatal(PullError),
}

/// A reqwest error's text without its URL (a URL could carry what a source put in it).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the body broke off"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stays_under_the_cap() {
        for attempt in 1..12 {
            let full = FIRST_WAIT.saturating_mul(1 << (attempt - 1)).min(MAX_WAIT);
            let w = backoff(attempt);
            assert!(
                w >= full / 2 && w <= full,
                "{attempt}: {w:?} against {full:?}"
            );
        }
        assert!(backoff(40) <= MAX_WAIT);
    }
}
