//! Moments and durations as the adapter stores and writes them.
//!
//! The store keeps every moment as whole microseconds since the Unix epoch (UTC), the same on
//! SQLite and PostgreSQL and cheap to index. Config and mappings write durations in ISO-8601
//! (`P14D`, `PT48H`, `P1M`); FHIR writes instants in RFC 3339.

use chrono::{DateTime, Months, SecondsFormat, TimeDelta, Utc};
use std::fmt;
use std::str::FromStr;

/// Microseconds since the Unix epoch: the store's representation of a moment.
pub type Micros = i64;

/// A moment as stored.
pub fn to_micros(moment: DateTime<Utc>) -> Micros {
    moment.timestamp_micros()
}

/// A stored moment back as a date-time (out-of-range values clamp to the epoch).
pub fn from_micros(micros: Micros) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// A moment in FHIR `instant` form, e.g. `2026-11-23T10:15:00.123456Z`.
pub fn instant(moment: DateTime<Utc>) -> String {
    moment.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses an RFC 3339 moment with its offset (as FHIR `instant`).
pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|m| m.with_timezone(&Utc))
}

/// An ISO-8601 duration with calendar parts: `P1Y2M10DT2H30M`, `P2W`, `PT48H`, `P0D`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IsoDuration {
    months: u32,
    days: u32,
    seconds: u64,
}

impl IsoDuration {
    /// A duration of whole years.
    pub const fn years(years: u32) -> Self {
        Self {
            months: years * 12,
            days: 0,
            seconds: 0,
        }
    }

    /// A duration of whole days.
    pub const fn days(days: u32) -> Self {
        Self {
            months: 0,
            days,
            seconds: 0,
        }
    }

    /// The duration as a fixed span, for timeouts; `None` with months or years (whose length
    /// depends on the calendar).
    pub fn fixed(&self) -> Option<std::time::Duration> {
        (self.months == 0)
            .then(|| std::time::Duration::from_secs(u64::from(self.days) * 86_400 + self.seconds))
    }

    /// Whether the duration is zero.
    pub fn is_zero(&self) -> bool {
        self.months == 0 && self.days == 0 && self.seconds == 0
    }

    /// `moment` plus this duration (calendar months and days, then seconds); saturates.
    pub fn after(&self, moment: DateTime<Utc>) -> DateTime<Utc> {
        let with_months = moment
            .checked_add_months(Months::new(self.months))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let delta = TimeDelta::try_days(i64::from(self.days))
            .and_then(|d| {
                TimeDelta::try_seconds(i64::try_from(self.seconds).unwrap_or(i64::MAX))
                    .and_then(|s| d.checked_add(&s))
            })
            .unwrap_or(TimeDelta::MAX);
        with_months
            .checked_add_signed(delta)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// `moment` minus this duration; saturates.
    pub fn before(&self, moment: DateTime<Utc>) -> DateTime<Utc> {
        let with_months = moment
            .checked_sub_months(Months::new(self.months))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let delta = TimeDelta::try_days(i64::from(self.days))
            .and_then(|d| {
                TimeDelta::try_seconds(i64::try_from(self.seconds).unwrap_or(i64::MAX))
                    .and_then(|s| d.checked_add(&s))
            })
            .unwrap_or(TimeDelta::MAX);
        with_months
            .checked_sub_signed(delta)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// Why a text is not an ISO-8601 duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an ISO-8601 duration such as P14D, PT48H or P1M")]
pub struct BadDuration(pub String);

impl FromStr for IsoDuration {
    type Err = BadDuration;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadDuration(text.to_string());
        let rest = text.strip_prefix('P').ok_or_else(bad)?;
        if rest.is_empty() {
            return Err(bad());
        }
        let (date_part, time_part) = match rest.split_once('T') {
            Some((d, t)) if !t.is_empty() => (d, Some(t)),
            Some(_) => return Err(bad()),
            None => (rest, None),
        };
        let mut out = IsoDuration::default();
        for (number, unit) in components(date_part).ok_or_else(bad)? {
            let n = u32::try_from(number).map_err(|_| bad())?;
            match unit {
                'Y' => out.months = out.months.saturating_add(n.saturating_mul(12)),
                'M' => out.months = out.months.saturating_add(n),
                'W' => out.days = out.days.saturating_add(n.saturating_mul(7)),
                'D' => out.days = out.days.saturating_add(n),
                _ => return Err(bad()),
            }
        }
        if let Some(time_part) = time_part {
            for (number, unit) in components(time_part).ok_or_else(bad)? {
                let factor = match unit {
                    'H' => 3600,
                    'M' => 60,
                    'S' => 1,
                    _ => return Err(bad()),
                };
                out.seconds = out.seconds.saturating_add(number.saturating_mul(factor));
            }
        }
        Ok(out)
    }
}

/// Splits `10D2W` into (10, 'D'), (2, 'W'); `None` if the text is not number-unit pairs.
fn components(text: &str) -> Option<Vec<(u64, char)>> {
    let mut out = Vec::new();
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
        } else {
            if number.is_empty() {
                return None;
            }
            out.push((number.parse().ok()?, c));
            number.clear();
        }
    }
    number.is_empty().then_some(out)
}

impl fmt::Display for IsoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("P0D");
        }
        f.write_str("P")?;
        match (self.months / 12, self.months % 12) {
            (0, 0) => {}
            (years, 0) => write!(f, "{years}Y")?,
            _ => write!(f, "{}M", self.months)?,
        }
        if self.days > 0 {
            write!(f, "{}D", self.days)?;
        }
        if self.seconds > 0 {
            write!(f, "T{}S", self.seconds)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_the_durations_config_uses() {
        assert_eq!("P14D".parse(), Ok(IsoDuration::days(14)));
        assert_eq!("P2W".parse(), Ok(IsoDuration::days(14)));
        assert_eq!("P0D".parse::<IsoDuration>().map(|d| d.is_zero()), Ok(true));
        let t0 = Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap();
        let d: IsoDuration = "PT48H".parse().unwrap();
        assert_eq!(
            d.after(t0),
            Utc.with_ymd_and_hms(2026, 2, 2, 12, 0, 0).unwrap()
        );
        let m: IsoDuration = "P1M".parse().unwrap();
        assert_eq!(
            m.after(t0),
            Utc.with_ymd_and_hms(2026, 2, 28, 12, 0, 0).unwrap()
        );
        let mixed: IsoDuration = "P1DT1H30M".parse().unwrap();
        assert_eq!(
            mixed.before(t0),
            Utc.with_ymd_and_hms(2026, 1, 30, 10, 30, 0).unwrap()
        );
    }

    #[test]
    fn durations_print_as_written_where_they_can() {
        for (text, printed) in [
            ("P5Y", "P5Y"),
            ("P60M", "P5Y"),
            ("P13M", "P13M"),
            ("P14D", "P14D"),
            ("P1Y2D", "P1Y2D"),
            ("P14M2D", "P14M2D"),
        ] {
            let d: IsoDuration = text.parse().unwrap();
            assert_eq!(d.to_string(), printed, "{text}");
            assert_eq!(printed.parse::<IsoDuration>(), Ok(d));
        }
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in ["", "P", "14D", "P14", "PT", "P1H", "PxD", "P-1D", "P1DT"] {
            assert!(
                bad.parse::<IsoDuration>().is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn micros_round_trip() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
        assert_eq!(from_micros(to_micros(t)), t);
        assert_eq!(instant(t), "2026-11-23T10:00:00Z");
    }
}
