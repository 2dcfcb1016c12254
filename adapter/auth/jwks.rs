//! The JWKS of clients that publish theirs (`jwks_uri`): fetched with reqwest, kept for
//! [`FRESH`], fetched again sooner when an assertion names a `kid` the kept set lacks (a
//! vendor that rotated its key), but not more often than [`REFETCH_AFTER`] (an attacker's
//! made-up `kid`s must not turn the adapter against the vendor's server). When the vendor's
//! server cannot be reached, the keys last fetched serve for up to [`STALE_FOR`].

use crate::clock::Clock;
use jsonwebtoken::jwk::JwkSet;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a fetched set is used without asking again (µs).
const FRESH: i64 = 15 * 60 * 1_000_000;
/// The least time between two fetches of one set (µs).
const REFETCH_AFTER: i64 = 10 * 1_000_000;
/// How long a set is used when fetching it again fails (µs).
const STALE_FOR: i64 = 24 * 3600 * 1_000_000;
/// The largest JWKS read.
const MAX_BYTES: usize = 256 * 1024;

/// The sets fetched, by URI.
pub struct JwksCache {
    http: reqwest::Client,
    sets: Arc<Mutex<HashMap<String, Kept>>>,
    /// Held while a set is fetched in a request: others that have no set to use wait for it.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Kept {
    keys: Option<JwkSet>,
    /// When `keys` were fetched (µs of [`Clock::monotonic_micros`]).
    fetched_at: i64,
    /// When a fetch was last begun, whatever came of it.
    tried_at: i64,
}

impl JwksCache {
    pub fn new() -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("sluis/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            sets: Arc::new(Mutex::new(HashMap::new())),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The keys at `uri` for an assertion that names `kid`: the kept set if fresh and holding
    /// `kid`; a stale one that holds it at once, fetched again meanwhile; else fetched now.
    /// At most one fetch begins per [`REFETCH_AFTER`], whatever is asked. `Err` with what went
    /// wrong when there is no set to use.
    pub async fn keys(
        &self,
        clock: &Clock,
        uri: &str,
        kid: Option<&str>,
    ) -> Result<JwkSet, String> {
        self.keys_at(clock.monotonic_micros(), uri, kid).await
    }

    async fn keys_at(&self, now: i64, uri: &str, kid: Option<&str>) -> Result<JwkSet, String> {
        let holds = |set: &JwkSet| kid.is_none_or(|k| set.find(k).is_some());
        let kept = lock(&self.sets).get(uri).cloned();
        let usable = kept
            .as_ref()
            .and_then(|k| k.keys.clone().filter(|_| now - k.fetched_at < STALE_FOR));
        if let Some(k) = &kept {
            let fresh = now - k.fetched_at < FRESH;
            let may_try = now - k.tried_at >= REFETCH_AFTER;
            if !may_try && usable.is_none() {
                // A fetch under way (or one that failed moments ago): wait for it, then take
                // what it left.
                let _ = tokio::time::timeout(Duration::from_secs(6), self.fetching.lock()).await;
                return lock(&self.sets)
                    .get(uri)
                    .and_then(|k| k.keys.clone())
                    .ok_or_else(|| {
                        "the client's JWKS could not be fetched (tried moments ago)".into()
                    });
            }
            if !may_try || (fresh && usable.as_ref().is_some_and(holds)) {
                return usable.ok_or_else(|| {
                    "the client's JWKS could not be fetched (tried moments ago)".into()
                });
            }
            if let Some(set) = usable.clone().filter(holds) {
                // Stale but holding the key: answered now, fetched again meanwhile.
                self.begin(uri, now);
                let (http, sets, uri) = (self.http.clone(), self.sets.clone(), uri.to_string());
                tokio::spawn(async move {
                    if let Ok(set) = fetch(&http, &uri).await.inspect_err(|problem| {
                        tracing::warn!(uri, problem = %problem, "cannot fetch a client's JWKS");
                    }) {
                        store(&sets, &uri, set, now);
                    }
                });
                return Ok(set);
            }
        }
        let _fetching = self.fetching.lock().await;
        self.begin(uri, now);
        match fetch(&self.http, uri).await {
            Ok(set) => {
                store(&self.sets, uri, set.clone(), now);
                Ok(set)
            }
            Err(problem) => {
                tracing::warn!(uri, problem = %problem, "cannot fetch a client's JWKS");
                usable.ok_or(problem)
            }
        }
    }

    /// Marks a fetch of `uri` begun now (requests meanwhile do not begin another).
    fn begin(&self, uri: &str, now: i64) {
        lock(&self.sets)
            .entry(uri.to_string())
            .and_modify(|k| k.tried_at = now)
            .or_insert(Kept {
                keys: None,
                fetched_at: i64::MIN / 2,
                tried_at: now,
            });
    }
}

fn store(sets: &Mutex<HashMap<String, Kept>>, uri: &str, set: JwkSet, now: i64) {
    lock(sets).insert(
        uri.to_string(),
        Kept {
            keys: Some(set),
            fetched_at: now,
            tried_at: now,
        },
    );
}

fn lock(sets: &Mutex<HashMap<String, Kept>>) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
    match sets.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

async fn fetch(http: &reqwest::Client, uri: &str) -> Result<JwkSet, String> {
    let mut response = http
        .get(uri)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("cannot reach {uri}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{uri} answered {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading {uri}: {e}"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BYTES {
            return Err(format!("{uri} sent more than {MAX_BYTES} bytes"));
        }
    }
    serde_json::from_slice(&body).map_err(|e| format!("{uri} is not a JWKS: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SECOND: i64 = 1_000_000;

    /// A vendor's JWKS endpoint: serves `body` with `status`, counts requests.
    struct Vendor {
        uri: String,
        hits: Arc<AtomicUsize>,
        answer: Arc<Mutex<(u16, String)>>,
    }

    async fn vendor(kids: &[&str]) -> Vendor {
        let hits = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new((200, set(kids))));
        let (h, a) = (hits.clone(), answer.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (h, a) = (h.clone(), a.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = a.lock().unwrap().clone();
                    (axum::http::StatusCode::from_u16(status).unwrap(), body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Vendor {
            uri: format!("http://{addr}/jwks"),
            hits,
            answer,
        }
    }

    fn set(kids: &[&str]) -> String {
        let keys: Vec<serde_json::Value> = kids
            .iter()
            .map(|kid| {
                serde_json::json!({"kty": "EC", "crv": "P-384", "kid": kid,
                    "x": "iA7lWQLzVrKGEFjfGMfMHfTEZ2KnLiKU7JuNT3E7ygsfE7ygsfE7ygsfE7ygsfE7",
                    "y": "bsMbE8jjkHnq1yMvW7GmA4tjQ5T9mMlqZ0TjB8C1nTj4uMlqZ0TjB8C1nTj4uMlq"})
            })
            .collect();
        serde_json::json!({"keys": keys}).to_string()
    }

    fn kids(set: &JwkSet) -> Vec<String> {
        set.keys
            .iter()
            .filter_map(|k| k.common.key_id.clone())
            .collect()
    }

    #[tokio::test]
    async fn a_set_is_kept_fetched_again_for_a_new_kid_and_used_stale_when_the_vendor_is_down() {
        let v = vendor(&["k1"]).await;
        let cache = JwksCache::new().unwrap();
        let hits = || v.hits.load(Ordering::SeqCst);
        assert_eq!(
            kids(&cache.keys_at(0, &v.uri, Some("k1")).await.unwrap()),
            ["k1"]
        );
        assert_eq!(hits(), 1);
        // Kept: the same kid, or none, asks nothing.
        cache.keys_at(SECOND, &v.uri, Some("k1")).await.unwrap();
        cache.keys_at(SECOND, &v.uri, None).await.unwrap();
        assert_eq!(hits(), 1);
        // The vendor rotates; an unknown kid within ten seconds of the last fetch does not
        // make another (a stranger's made-up kids must not hammer the vendor).
        *v.answer.lock().unwrap() = (200, set(&["k1", "k2"]));
        let early = cache.keys_at(5 * SECOND, &v.uri, Some("k2")).await.unwrap();
        assert_eq!(kids(&early), ["k1"]);
        assert_eq!(hits(), 1);
        // After that, it does.
        let later = cache
            .keys_at(11 * SECOND, &v.uri, Some("k2"))
            .await
            .unwrap();
        assert_eq!(kids(&later), ["k1", "k2"]);
        assert_eq!(hits(), 2);
        // A made-up kid: at most one fetch per ten seconds however often it is named.
        for t in 12..20 {
            let _ = cache.keys_at(t * SECOND, &v.uri, Some("made-up")).await;
        }
        assert_eq!(hits(), 2);
        // Past FRESH a set that holds the key answers at once and is fetched again meanwhile;
        // when the vendor is down, it serves for STALE_FOR, then nothing does.
        *v.answer.lock().unwrap() = (503, "down".into());
        let stale = cache
            .keys_at(11 * SECOND + FRESH, &v.uri, Some("k1"))
            .await
            .unwrap();
        assert_eq!(kids(&stale), ["k1", "k2"]);
        for _ in 0..100 {
            if hits() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(hits(), 3);
        // However many ask meanwhile, for any kid, no other fetch begins within ten seconds.
        for t in 1..10 {
            let now = 11 * SECOND + FRESH + t * SECOND;
            assert!(cache.keys_at(now, &v.uri, Some("k1")).await.is_ok());
            let _ = cache.keys_at(now, &v.uri, Some("made-up")).await;
        }
        assert_eq!(hits(), 3);
        let gone = cache
            .keys_at(11 * SECOND + STALE_FOR, &v.uri, Some("k1"))
            .await;
        assert!(gone.unwrap_err().contains("503"));
        // Garbage is no set, and an unreachable vendor says so.
        *v.answer.lock().unwrap() = (200, "{not json".into());
        let fresh_cache = JwksCache::new().unwrap();
        assert!(
            fresh_cache
                .keys_at(0, &v.uri, None)
                .await
                .unwrap_err()
                .contains("not a JWKS")
        );
        // Many at once with no set yet: one fetch, and every one of them answered from it.
        *v.answer.lock().unwrap() = (200, set(&["k1"]));
        let many = Arc::new(JwksCache::new().unwrap());
        let before = hits();
        let mut all = Vec::new();
        for _ in 0..8 {
            let (many, uri) = (many.clone(), v.uri.clone());
            all.push(tokio::spawn(async move {
                many.keys_at(0, &uri, Some("k1")).await
            }));
        }
        for one in all {
            assert!(one.await.unwrap().is_ok());
        }
        assert_eq!(hits() - before, 1);
        *v.answer.lock().unwrap() = (200, "x".repeat(MAX_BYTES + 10));
        assert!(
            JwksCache::new()
                .unwrap()
                .keys_at(0, &v.uri, None)
                .await
                .unwrap_err()
                .contains("more than")
        );
    }
}
