//! FHIR date values as ranges of microseconds, for indexing and for search prefixes.
//!
//! Every date, dateTime or instant stands for a range by its precision: `2026` is the whole
//! year, `2026-11-23` the day, `2026-11-23T10:00:00+01:00` that second. Values without a time
//! zone are read as UTC (documented in docs/api.md). Ranges are half-open: `[lo, hi)`.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// A half-open range of microseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub lo: i64,
    pub hi: i64,
}

pub const OPEN_LO: i64 = i64::MIN;
pub const OPEN_HI: i64 = i64::MAX;

fn micros(dt: NaiveDateTime) -> i64 {
    Utc.from_utc_datetime(&dt).timestamp_micros()
}

fn day_start(date: NaiveDate) -> NaiveDateTime {
    date.and_hms_opt(0, 0, 0).unwrap_or_default()
}

/// The range a FHIR date, dateTime or instant stands for.
pub fn parse(text: &str) -> Option<Range> {
    let text = text.trim();
    match text.len() {
        4 => {
            let year: i32 = text.parse().ok()?;
            let lo = NaiveDate::from_ymd_opt(year, 1, 1)?;
            let hi = NaiveDate::from_ymd_opt(year + 1, 1, 1)?;
            Some(Range {
                lo: micros(day_start(lo)),
                hi: micros(day_start(hi)),
            })
        }
        7 => {
            let lo = NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").ok()?;
            let hi = if lo.month() == 12 {
                NaiveDate::from_ymd_opt(lo.year() + 1, 1, 1)?
            } else {
                NaiveDate::from_ymd_opt(lo.year(), lo.month() + 1, 1)?
            };
            Some(Range {
                lo: micros(day_start(lo)),
                hi: micros(day_start(hi)),
            })
        }
        10 => {
            let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
            let lo = micros(day_start(day));
            Some(Range {
                lo,
                hi: lo + 86_400_000_000,
            })
        }
        _ => parse_date_time(text),
    }
}

/// A dateTime with a time: with an offset or `Z`; without one it is read as UTC.
fn parse_date_time(text: &str) -> Option<Range> {
    let fraction_digits = text
        .split_once('.')
        .map(|(_, f)| f.bytes().take_while(u8::is_ascii_digit).count())
        .unwrap_or(0);
    let moment: DateTime<Utc> = if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        dt.with_timezone(&Utc)
    } else {
        // FHIR search values may also omit seconds or the zone.
        let formats = [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M",
        ];
        let naive = formats
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())?;
        if text.len() == 16 {
            let lo = micros(naive);
            return Some(Range {
                lo,
                hi: lo + 60_000_000,
            });
        }
        Utc.from_utc_datetime(&naive)
    };
    let lo = moment.timestamp_micros();
    // The width of the last written digit: a second, a tenth, … down to a microsecond.
    let width = 10_i64.pow(6_u32.saturating_sub(u32::try_from(fraction_digits).unwrap_or(6)));
    Some(Range { lo, hi: lo + width })
}

/// A search comparison (contract: eq, lt, le, gt, ge; also ne, sa, eb).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Sa,
    Eb,
}

/// Splits a date search value into its prefix and the date.
pub fn split_prefix(value: &str) -> (Prefix, &str) {
    let prefixes = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("lt", Prefix::Lt),
        ("le", Prefix::Le),
        ("gt", Prefix::Gt),
        ("ge", Prefix::Ge),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
    ];
    for (text, prefix) in prefixes {
        if let Some(rest) = value.strip_prefix(text) {
            return (prefix, rest);
        }
    }
    (Prefix::Eq, value)
}

/// Whether a stored range matches `prefix search` (FHIR R4 search, §3.1.1.4 prefixes):
/// the same test the SQL of `search::sql` performs, kept here for the unit tests.
pub fn matches(prefix: Prefix, search: Range, target: Range) -> bool {
    let eq = search.lo <= target.lo && target.hi <= search.hi;
    match prefix {
        Prefix::Eq => eq,
        Prefix::Ne => !eq,
        Prefix::Gt => target.hi > search.hi,
        Prefix::Lt => target.lo < search.lo,
        Prefix::Ge => target.hi > search.hi || eq,
        Prefix::Le => target.lo < search.lo || eq,
        Prefix::Sa => target.lo >= search.hi,
        Prefix::Eb => target.hi <= search.lo,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_gives_the_range() {
        let day = parse("2026-11-23").unwrap();
        assert_eq!(day.hi - day.lo, 86_400_000_000);
        let year = parse("2024").unwrap();
        assert_eq!(year.hi - year.lo, 366 * 86_400_000_000);
        let month = parse("2026-12").unwrap();
        assert_eq!(month.hi - month.lo, 31 * 86_400_000_000);
        let second = parse("2026-11-23T10:00:00+01:00").unwrap();
        assert_eq!(second.hi - second.lo, 1_000_000);
        assert_eq!(second.lo, parse("2026-11-23T09:00:00Z").unwrap().lo);
        assert!(parse("2026-02-30").is_none());
        let micro = parse("2026-11-23T10:00:00.123456Z").unwrap();
        assert_eq!(micro.hi - micro.lo, 1);
        let milli = parse("2026-11-23T10:00:00.123Z").unwrap();
        assert_eq!(milli.hi - milli.lo, 1_000);
        assert!(parse("yesterday").is_none());
    }

    #[test]
    fn prefixes_follow_the_fhir_rules() {
        let day = parse("2026-11-23").unwrap();
        let morning = parse("2026-11-23T08:00:00Z").unwrap();
        let before = parse("2026-11-22T23:00:00Z").unwrap();
        let after = parse("2026-11-24T01:00:00Z").unwrap();
        assert!(matches(Prefix::Eq, day, morning));
        assert!(!matches(Prefix::Eq, day, before));
        assert!(matches(Prefix::Ne, day, before));
        assert!(matches(Prefix::Lt, day, before) && !matches(Prefix::Lt, day, morning));
        assert!(matches(Prefix::Le, day, morning) && matches(Prefix::Le, day, before));
        assert!(matches(Prefix::Gt, day, after) && !matches(Prefix::Gt, day, morning));
        assert!(matches(Prefix::Ge, day, after) && matches(Prefix::Ge, day, morning));
        assert!(!matches(Prefix::Ge, day, before));
        assert!(matches(Prefix::Sa, day, after) && matches(Prefix::Eb, day, before));
        assert_eq!(split_prefix("ge2026"), (Prefix::Ge, "2026"));
        assert_eq!(split_prefix("2026"), (Prefix::Eq, "2026"));
    }
}
