//! The per-user request limit (R16, `limits.user_requests_per_minute`): a bucket per portal
//! user (portal vendor and `X-Portal-User`) that holds a minute's worth of requests and
//! refills evenly; a request that finds it empty is answered 429 `rate-limited` with
//! `Retry-After`. Time is the clock's real time passing ([`Clock::monotonic_micros`]), so a
//! pinned clock does not freeze the refill.

use crate::clock::Clock;
use std::collections::HashMap;
use std::sync::Mutex;

/// Beyond this many users kept, buckets that have filled up again are dropped.
const PRUNE_AT: usize = 10_000;

const MINUTE_US: f64 = 60_000_000.0;

/// The buckets of all portal users.
pub struct UserLimiter {
    per_minute: f64,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    by_user: HashMap<(String, String), Bucket>,
    /// Prune when this many are kept: twice what the last pruning kept (at least
    /// [`PRUNE_AT`]), so that many users active at once do not make every request prune.
    prune_at: usize,
}

struct Bucket {
    /// Requests left.
    left: f64,
    /// When `left` was counted (µs of [`Clock::monotonic_micros`]).
    at: i64,
}

impl UserLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            buckets: Mutex::new(Buckets {
                by_user: HashMap::new(),
                prune_at: PRUNE_AT,
            }),
        }
    }

    /// Takes one request of `user` of portal `client` now; `Err(seconds)` to wait when none
    /// is left.
    pub fn admit(&self, clock: &Clock, client: &str, user: &str) -> Result<(), u64> {
        self.admit_at(clock.monotonic_micros(), client, user)
    }

    fn admit_at(&self, now: i64, client: &str, user: &str) -> Result<(), u64> {
        let mut buckets = match self.buckets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let per_us = self.per_minute / MINUTE_US;
        let full = self.per_minute;
        if buckets.by_user.len() >= buckets.prune_at {
            buckets
                .by_user
                .retain(|_, b| b.left + (now - b.at) as f64 * per_us < full);
            buckets.prune_at = (2 * buckets.by_user.len()).max(PRUNE_AT);
        }
        let key = (client.to_string(), user.to_string());
        let bucket = buckets.by_user.entry(key).or_insert(Bucket {
            left: full,
            at: now,
        });
        let elapsed = (now - bucket.at).max(0) as f64;
        bucket.left = (bucket.left + elapsed * per_us).min(full);
        bucket.at = bucket.at.max(now);
        if bucket.left >= 1.0 {
            bucket.left -= 1.0;
            return Ok(());
        }
        let wait_us = (1.0 - bucket.left) / per_us;
        Err(((wait_us / 1_000_000.0).ceil() as u64).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    #[test]
    fn a_minute_of_requests_then_one_per_share_of_the_minute() {
        let limiter = UserLimiter::new(60);
        for _ in 0..60 {
            assert_eq!(limiter.admit_at(0, "caren", "u1"), Ok(()));
        }
        assert_eq!(limiter.admit_at(0, "caren", "u1"), Err(1));
        // Others are not held up by u1, also not the same id at another portal.
        assert_eq!(limiter.admit_at(0, "caren", "u2"), Ok(()));
        assert_eq!(limiter.admit_at(0, "other", "u1"), Ok(()));
        // One request comes back per second.
        assert_eq!(limiter.admit_at(SECOND / 2, "caren", "u1"), Err(1));
        assert_eq!(limiter.admit_at(SECOND, "caren", "u1"), Ok(()));
        assert_eq!(limiter.admit_at(SECOND, "caren", "u1"), Err(1));
        // A quiet minute fills the bucket, never beyond it.
        let later = 10 * 60 * SECOND;
        for _ in 0..60 {
            assert_eq!(limiter.admit_at(later, "caren", "u1"), Ok(()));
        }
        assert!(limiter.admit_at(later, "caren", "u1").is_err());
    }

    #[test]
    fn retry_after_is_the_time_until_the_next_request_comes_back() {
        let limiter = UserLimiter::new(2);
        assert!(limiter.admit_at(0, "c", "u").is_ok());
        assert!(limiter.admit_at(0, "c", "u").is_ok());
        assert_eq!(limiter.admit_at(0, "c", "u"), Err(30));
        assert_eq!(limiter.admit_at(20 * SECOND, "c", "u"), Err(10));
        // Time running backwards (it cannot with a monotonic clock) refills nothing, and
        // does not count twice when it runs forward again.
        assert_eq!(limiter.admit_at(-SECOND, "c", "u"), Err(10));
        assert_eq!(limiter.admit_at(20 * SECOND, "c", "u"), Err(10));
        assert!(limiter.admit_at(30 * SECOND, "c", "u").is_ok());
    }

    #[test]
    fn buckets_that_filled_up_again_are_dropped_when_many_are_kept() {
        let limiter = UserLimiter::new(60);
        for i in 0..PRUNE_AT {
            assert!(limiter.admit_at(0, "c", &i.to_string()).is_ok());
        }
        assert!(limiter.admit_at(2 * 60 * SECOND, "c", "new").is_ok());
        assert_eq!(limiter.buckets.lock().unwrap().by_user.len(), 1);
    }

    #[test]
    fn many_users_at_once_do_not_make_every_request_prune() {
        let limiter = UserLimiter::new(60);
        for i in 0..PRUNE_AT + 10 {
            assert!(limiter.admit_at(0, "c", &i.to_string()).is_ok());
        }
        // All are still busy: none was dropped, and the next pruning waits for twice as many.
        let buckets = limiter.buckets.lock().unwrap();
        assert_eq!(buckets.by_user.len(), PRUNE_AT + 10);
        assert_eq!(buckets.prune_at, 2 * PRUNE_AT);
    }
}
