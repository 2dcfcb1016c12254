//! Request limits (R16, `[limits]`): token buckets that hold a minute's worth of requests and
//! refill evenly; a request that finds its bucket empty is answered 429 `rate-limited` with
//! `Retry-After`. [`Limits`] holds one set of buckets per kind of limit: per portal user, per
//! client, per client's token requests, per admin credential, and failed authentication per
//! claimed client and remote address. Time is the clock's real time passing
//! ([`Clock::monotonic_micros`]), so a pinned clock does not freeze the refill.
//!
//! The buckets live in this process. Processes sharing a database know how many of them are
//! alive (`store::processes`, a heartbeat), and each allows its share: a limit over `n` live
//! processes. Behind a balancer that spreads a caller's requests evenly the caller gets the
//! limit in all; one that keeps a caller on one process gives them less, never more.

use crate::clock::Clock;
use crate::error::{ApiError, Reason};
use axum::http::StatusCode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Beyond this many keys kept, buckets that have filled up again are dropped.
const PRUNE_AT: usize = 10_000;

const MINUTE_US: f64 = 60_000_000.0;

/// Every limit of `[limits]`, each with its own buckets.
pub struct Limits {
    pub users: Limiter,
    pub clients: Limiter,
    pub tokens: Limiter,
    pub admins: Limiter,
    pub failures: Limiter,
    /// How many processes share the limits (at least 1).
    processes: Arc<AtomicU32>,
}

impl Limits {
    pub fn new(config: &crate::config::Limits) -> Self {
        let processes = Arc::new(AtomicU32::new(1));
        let limiter = |per_minute: u32, name: &'static str| {
            let mut l = Limiter::new(per_minute, name);
            l.processes = processes.clone();
            l
        };
        Self {
            users: limiter(config.user_requests_per_minute, "user_requests_per_minute"),
            clients: limiter(
                config.client_requests_per_minute,
                "client_requests_per_minute",
            ),
            tokens: limiter(
                config.token_requests_per_minute,
                "token_requests_per_minute",
            ),
            admins: limiter(
                config.admin_requests_per_minute,
                "admin_requests_per_minute",
            ),
            failures: limiter(config.failed_auth_per_minute, "failed_auth_per_minute"),
            processes,
        }
    }

    /// Sets how many live processes share the limits (from the heartbeat).
    pub fn set_processes(&self, n: u32) {
        self.processes.store(n.max(1), Ordering::Relaxed);
    }

    pub fn processes(&self) -> u32 {
        self.processes.load(Ordering::Relaxed).max(1)
    }
}

/// The buckets of one limit, by key (`(client, user)`, `(client, "")`, `(client, address)`).
pub struct Limiter {
    /// The limit over all processes.
    per_minute: f64,
    /// How many live processes share it.
    processes: Arc<AtomicU32>,
    /// Its config key, for the message of a refusal.
    name: &'static str,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    /// By the key's first part, then its second: looked up without allocating.
    by_key: HashMap<String, HashMap<String, Bucket>>,
    /// How many buckets `by_key` holds.
    kept: usize,
    /// Prune when this many are kept: twice what the last pruning kept (at least
    /// [`PRUNE_AT`]), so that many keys active at once do not make every request prune.
    prune_at: usize,
}

struct Bucket {
    /// Requests left.
    left: f64,
    /// When `left` was counted (µs of [`Clock::monotonic_micros`]).
    at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// One, if one is left (a request).
    IfLeft,
    /// None (a look before authenticating).
    Nothing,
    /// One, into debt if none is left (a failure).
    Always,
}

impl Limiter {
    pub fn new(per_minute: u32, name: &'static str) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            processes: Arc::new(AtomicU32::new(1)),
            name,
            buckets: Mutex::new(Buckets {
                by_key: HashMap::new(),
                kept: 0,
                prune_at: PRUNE_AT,
            }),
        }
    }

    /// Takes one request of `key` now; 429 when none is left.
    pub fn admit(&self, clock: &Clock, a: &str, b: &str) -> Result<(), ApiError> {
        self.take_at(clock.monotonic_micros(), a, b, Take::IfLeft)
            .map_err(|s| self.refusal(s))
    }

    /// 429 when `key` has nothing left, without taking anything (a failure takes with
    /// [`Limiter::spend`]).
    pub fn check(&self, clock: &Clock, a: &str, b: &str) -> Result<(), ApiError> {
        self.take_at(clock.monotonic_micros(), a, b, Take::Nothing)
            .map_err(|s| self.refusal(s))
    }

    /// Takes one from `key`'s bucket, also when it is empty.
    pub fn spend(&self, clock: &Clock, a: &str, b: &str) {
        let _ = self.take_at(clock.monotonic_micros(), a, b, Take::Always);
    }

    /// Gives back one taken with [`Limiter::admit`] (the request it was taken for did not
    /// count after all).
    pub fn refund(&self, a: &str, b: &str) {
        let mut buckets = match self.buckets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let full = self.share();
        if let Some(bucket) = buckets.by_key.get_mut(a).and_then(|inner| inner.get_mut(b)) {
            bucket.left = (bucket.left + 1.0).min(full);
        }
    }

    /// This process's share of the limit: the limit over the live processes, at least one
    /// request a minute.
    fn share(&self) -> f64 {
        let n = f64::from(self.processes.load(Ordering::Relaxed).max(1));
        (self.per_minute / n).max(1.0)
    }

    fn refusal(&self, seconds: u64) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            Reason::RateLimited,
            match self.processes.load(Ordering::Relaxed) {
                0 | 1 => format!(
                    "more than limits.{} ({}); retry in {seconds} s",
                    self.name, self.per_minute
                ),
                n => format!(
                    "more than limits.{} ({}, shared by {n} processes); retry in {seconds} s",
                    self.name, self.per_minute
                ),
            },
        );
        error.retry_after = Some(seconds);
        error
    }

    /// Counts `key`'s bucket up to now, and takes as `take` says; `Err(seconds)` until one
    /// comes back when none was left.
    fn take_at(&self, now: i64, a: &str, b: &str, take: Take) -> Result<(), u64> {
        let mut buckets = match self.buckets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let full = self.share();
        let per_us = full / MINUTE_US;
        if buckets.kept >= buckets.prune_at {
            let filled = |b: &Bucket| b.left + (now - b.at) as f64 * per_us >= full;
            for inner in buckets.by_key.values_mut() {
                inner.retain(|_, b| !filled(b));
            }
            buckets.by_key.retain(|_, inner| !inner.is_empty());
            buckets.kept = buckets.by_key.values().map(HashMap::len).sum();
            buckets.prune_at = (2 * buckets.kept).max(PRUNE_AT);
        }
        let known = buckets
            .by_key
            .get(a)
            .is_some_and(|inner| inner.contains_key(b));
        if !known {
            // A look at a key never counted finds it full, and keeps nothing.
            if take == Take::Nothing {
                return Ok(());
            }
            buckets.kept += 1;
            buckets.by_key.entry(a.to_string()).or_default().insert(
                b.to_string(),
                Bucket {
                    left: full,
                    at: now,
                },
            );
        }
        let Some(bucket) = buckets.by_key.get_mut(a).and_then(|inner| inner.get_mut(b)) else {
            return Ok(());
        };
        let elapsed = (now - bucket.at).max(0) as f64;
        bucket.left = (bucket.left + elapsed * per_us).min(full);
        bucket.at = bucket.at.max(now);
        if bucket.left >= 1.0 {
            if take != Take::Nothing {
                bucket.left -= 1.0;
            }
            return Ok(());
        }
        if take == Take::Always {
            // A failure while empty pushes the refill further off (at most a minute's worth
            // in debt), so that hammering on does not get through sooner.
            bucket.left = (bucket.left - 1.0).max(-full);
        }
        let wait_us = (1.0 - bucket.left) / per_us;
        Err(((wait_us / 1_000_000.0).ceil() as u64).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    impl Limiter {
        fn take(&self, now: i64, a: &str, b: &str) -> Result<(), u64> {
            self.take_at(now, a, b, Take::IfLeft)
        }
    }

    #[test]
    fn a_minute_of_requests_then_one_per_share_of_the_minute() {
        let limiter = Limiter::new(60, "x");
        for _ in 0..60 {
            assert_eq!(limiter.take(0, "caren", "u1"), Ok(()));
        }
        assert_eq!(limiter.take(0, "caren", "u1"), Err(1));
        // Others are not held up by u1, also not the same id at another portal.
        assert_eq!(limiter.take(0, "caren", "u2"), Ok(()));
        assert_eq!(limiter.take(0, "other", "u1"), Ok(()));
        // One request comes back per second.
        assert_eq!(limiter.take(SECOND / 2, "caren", "u1"), Err(1));
        assert_eq!(limiter.take(SECOND, "caren", "u1"), Ok(()));
        assert_eq!(limiter.take(SECOND, "caren", "u1"), Err(1));
        // A quiet minute fills the bucket, never beyond it.
        let later = 10 * 60 * SECOND;
        for _ in 0..60 {
            assert_eq!(limiter.take(later, "caren", "u1"), Ok(()));
        }
        assert!(limiter.take(later, "caren", "u1").is_err());
    }

    #[test]
    fn retry_after_is_the_time_until_the_next_request_comes_back() {
        let limiter = Limiter::new(2, "x");
        assert!(limiter.take(0, "c", "u").is_ok());
        assert!(limiter.take(0, "c", "u").is_ok());
        assert_eq!(limiter.take(0, "c", "u"), Err(30));
        assert_eq!(limiter.take(20 * SECOND, "c", "u"), Err(10));
        // Time running backwards (it cannot with a monotonic clock) refills nothing, and
        // does not count twice when it runs forward again.
        assert_eq!(limiter.take(-SECOND, "c", "u"), Err(10));
        assert_eq!(limiter.take(20 * SECOND, "c", "u"), Err(10));
        assert!(limiter.take(30 * SECOND, "c", "u").is_ok());
    }

    #[test]
    fn buckets_that_filled_up_again_are_dropped_when_many_are_kept() {
        let limiter = Limiter::new(60, "x");
        for i in 0..PRUNE_AT {
            assert!(limiter.take(0, "c", &i.to_string()).is_ok());
        }
        assert!(limiter.take(2 * 60 * SECOND, "c", "new").is_ok());
        assert_eq!(limiter.buckets.lock().unwrap().kept, 1);
    }

    #[test]
    fn many_users_at_once_do_not_make_every_request_prune() {
        let limiter = Limiter::new(60, "x");
        for i in 0..PRUNE_AT + 10 {
            assert!(limiter.take(0, "c", &i.to_string()).is_ok());
        }
        // All are still busy: none was dropped, and the next pruning waits for twice as many.
        let buckets = limiter.buckets.lock().unwrap();
        assert_eq!(buckets.kept, PRUNE_AT + 10);
        assert_eq!(buckets.prune_at, 2 * PRUNE_AT);
    }

    #[test]
    fn failures_are_counted_and_a_look_takes_nothing() {
        let limiter = Limiter::new(2, "x");
        let look = |now| limiter.take_at(now, "c", "addr", Take::Nothing);
        assert!(look(0).is_ok());
        assert!(look(0).is_ok());
        limiter.take_at(0, "c", "addr", Take::Always).unwrap();
        limiter.take_at(0, "c", "addr", Take::Always).unwrap();
        assert_eq!(look(0), Err(30));
        // Failing on while refused pushes the next try further off, up to a minute's worth.
        for _ in 0..10 {
            let _ = limiter.take_at(0, "c", "addr", Take::Always);
        }
        assert_eq!(look(0), Err(90));
        assert_eq!(look(60 * SECOND), Err(30));
        assert!(look(90 * SECOND).is_ok());
        // Another address is not held up, and a look at it keeps nothing.
        assert!(limiter.take_at(0, "c", "other", Take::Nothing).is_ok());
        assert_eq!(limiter.buckets.lock().unwrap().kept, 1);
    }
}
