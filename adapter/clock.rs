//! The one source of "now".
//!
//! Every moment the adapter reasons about (arrival, release, expiry, age, care periods) comes
//! from here, never from the system time directly, so that the two-week explanation delay can be
//! tested by moving this clock. With `dev.clock_override = true`, `PUT /admin/clock` pins it.

use chrono::{DateTime, SubsecRound, Utc};
use std::sync::{Arc, RwLock};

/// The adapter's clock: system time unless pinned (only when `dev.clock_override` is on).
#[derive(Clone, Debug, Default)]
pub struct Clock {
    pinned: Arc<RwLock<Option<DateTime<Utc>>>>,
}

impl Clock {
    /// A clock that follows the system time until it is pinned.
    pub fn system() -> Self {
        Self::default()
    }

    /// The current moment, truncated to microseconds (the precision the store keeps).
    pub fn now(&self) -> DateTime<Utc> {
        let pinned = match self.pinned.read() {
            Ok(guard) => *guard,
            Err(poisoned) => *poisoned.into_inner(),
        };
        pinned.unwrap_or_else(Utc::now).trunc_subsecs(6)
    }

    /// Pins the clock at `moment` (or releases it with `None`).
    pub fn pin(&self, moment: Option<DateTime<Utc>>) {
        let mut guard = match self.pinned.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = moment.map(|m| m.trunc_subsecs(6));
    }

    /// Real time passed, in µs since the first call in this process; never pinned. For rates
    /// (a user's requests per minute), which count time as it passes, whatever moment the
    /// clock shows.
    pub fn monotonic_micros(&self) -> i64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let start = START.get_or_init(std::time::Instant::now);
        i64::try_from(start.elapsed().as_micros()).unwrap_or(i64::MAX)
    }

    /// The system's time, never pinned: for what several processes must agree on (a pull
    /// source's lease expires in wall-clock time, whatever moment a test pinned).
    pub fn wall(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }

    /// Whether the clock is pinned.
    pub fn is_pinned(&self) -> bool {
        match self.pinned.read() {
            Ok(guard) => guard.is_some(),
            Err(poisoned) => poisoned.into_inner().is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_pinned_clock_stays_where_it_was_put() {
        let clock = Clock::system();
        let moment = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        clock.pin(Some(moment));
        assert_eq!(clock.now(), moment);
        assert!(clock.is_pinned());
        clock.pin(None);
        assert!(!clock.is_pinned());
    }
}
