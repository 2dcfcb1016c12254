//! Checks of FHIR R4 primitive values in JSON: the JSON type each primitive
//! must have and the lexical rules (the regexes of the R4 primitive
//! StructureDefinitions, plus calendar validity of dates), without regexes.

use serde_json::Value;

/// Largest value of `integer`, `unsignedInt` and `positiveInt`.
const INT_MAX: u64 = i32::MAX as u64;

/// FHIR: strings SHALL NOT exceed 1 MB.
const MAX_STRING_BYTES: usize = 1024 * 1024;

/// Checks a JSON value given for a primitive of type `ty` (not `null`).
/// The error message is only built when the value is wrong.
pub(super) fn check(ty: &str, v: &Value) -> Result<(), String> {
    match ty {
        "boolean" => match v {
            Value::Bool(_) => Ok(()),
            _ => Err(wrong_json(ty, "a JSON boolean", v)),
        },
        "integer" | "unsignedInt" | "positiveInt" | "decimal" => match v {
            Value::Number(n) => check_number(ty, n.as_str()),
            _ => Err(wrong_json(ty, "a JSON number", v)),
        },
        _ => match v {
            Value::String(s) => check_string(ty, s),
            _ => Err(wrong_json(ty, "a JSON string", v)),
        },
    }
}

fn wrong_json(ty: &str, want: &str, v: &Value) -> String {
    let got = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    format!("{ty} must be {want}, not {got}")
}

fn check_number(ty: &str, text: &str) -> Result<(), String> {
    let ok = match ty {
        "decimal" => is_decimal(text),
        "integer" => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            let limit = if text.starts_with('-') {
                INT_MAX + 1
            } else {
                INT_MAX
            };
            unsigned_at_most(digits, limit)
        }
        "unsignedInt" => unsigned_at_most(text, INT_MAX),
        _ => unsigned_at_most(text, INT_MAX) && text != "0", // positiveInt
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid {ty} {text}"))
    }
}

/// `0|[1-9][0-9]*` with a value at most `limit`.
fn unsigned_at_most(digits: &str, limit: u64) -> bool {
    let b = digits.as_bytes();
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    if b.len() > 1 && b[0] == b'0' {
        return false;
    }
    digits.parse::<u64>().is_ok_and(|n| n <= limit)
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
fn is_decimal(text: &str) -> bool {
    let mut c = Cursor::new(text);
    c.eat(b'-');
    let int = c.run_of_digits();
    if int == 0 || (int > 1 && text.as_bytes().get(c.i - int) == Some(&b'0')) {
        return false;
    }
    if c.eat(b'.') && c.run_of_digits() == 0 {
        return false;
    }
    if c.eat(b'e') || c.eat(b'E') {
        let _ = c.eat(b'+') || c.eat(b'-');
        if c.run_of_digits() == 0 {
            return false;
        }
    }
    c.done()
}

fn check_string(ty: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("empty string is not allowed ({ty})"));
    }
    if s.len() > MAX_STRING_BYTES {
        return Err(format!("{ty} is longer than 1 MB"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| (*c as u32) < 0x20 && !matches!(c, '\t' | '\r' | '\n'))
    {
        return Err(format!(
            "{ty} contains control character U+{:04X}",
            c as u32
        ));
    }
    let ok = match ty {
        "string" | "markdown" | "xhtml" => true,
        "code" => is_code(s),
        "id" => {
            s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
        "uri" | "url" | "canonical" => !s.bytes().any(is_regex_space),
        "oid" => is_oid(s),
        "uuid" => is_uuid(s),
        "base64Binary" => is_base64(s),
        "date" => is_date(s),
        "dateTime" => is_date_time(s),
        "instant" => is_instant(s),
        "time" => {
            let mut c = Cursor::new(s);
            c.time() && c.done()
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid {ty} {s:?}"))
    }
}

/// `\s` of the R4 regexes (Java): space, tab, LF, VT, FF, CR.
fn is_regex_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `[^\s]+(\s[^\s]+)*`: no leading, trailing or repeated whitespace.
fn is_code(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return false;
    };
    !is_regex_space(*first)
        && !is_regex_space(*last)
        && !b
            .windows(2)
            .any(|w| is_regex_space(w[0]) && is_regex_space(w[1]))
}

/// `urn:oid:[0-2](\.(0|[1-9][0-9]*))+`
fn is_oid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:oid:") else {
        return false;
    };
    let mut arcs = rest.split('.');
    let first_ok = arcs.next().is_some_and(|a| matches!(a, "0" | "1" | "2"));
    let mut n = 0;
    let others_ok = arcs.all(|a| {
        n += 1;
        !a.is_empty()
            && a.bytes().all(|b| b.is_ascii_digit())
            && !(a.len() > 1 && a.starts_with('0'))
    });
    first_ok && others_ok && n > 0
}

/// `urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`
fn is_uuid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:uuid:") else {
        return false;
    };
    let groups: [usize; 5] = [8, 4, 4, 4, 12];
    let mut parts = rest.split('-');
    groups.iter().all(|len| {
        parts.next().is_some_and(|p| {
            p.len() == *len
                && p.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    }) && parts.next().is_none()
}

/// `(\s*([0-9a-zA-Z\+/=]){4}\s*)+`, with `=` only as final padding.
fn is_base64(s: &str) -> bool {
    let mut count = 0usize;
    let mut pad = 0usize;
    for b in s.bytes() {
        if is_regex_space(b) {
            if !count.is_multiple_of(4) {
                return false;
            }
        } else if b == b'=' {
            pad += 1;
            count += 1;
        } else if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' {
            if pad > 0 {
                return false;
            }
            count += 1;
        } else {
            return false;
        }
    }
    count > 0 && count.is_multiple_of(4) && pad <= 2
}

/// A date: `YYYY`, `YYYY-MM` or `YYYY-MM-DD` (real calendar dates).
fn is_date(s: &str) -> bool {
    let mut c = Cursor::new(s);
    c.date().is_some() && c.done()
}

/// `date` or `YYYY-MM-DDThh:mm:ss(.f+)?(Z|±hh:mm)`.
fn is_date_time(s: &str) -> bool {
    let mut c = Cursor::new(s);
    match c.date() {
        Some(3) if c.eat(b'T') => c.time() && c.zone() && c.done(),
        Some(_) => c.done(),
        None => false,
    }
}

/// `YYYY-MM-DDThh:mm:ss(.f+)?(Z|±hh:mm)`: seconds and zone required.
fn is_instant(s: &str) -> bool {
    let mut c = Cursor::new(s);
    c.date() == Some(3) && c.eat(b'T') && c.time() && c.zone() && c.done()
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A byte cursor for the hand-written date/time grammars.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor {
            b: s.as_bytes(),
            i: 0,
        }
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn run_of_digits(&mut self) -> usize {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - start
    }
    /// Exactly `n` digits as a number.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let d = self.b.get(self.i..self.i + n)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(d.iter().fold(0, |acc, x| acc * 10 + u32::from(x - b'0')))
    }
    /// Parses a date and returns how many parts it had (1..=3).
    fn date(&mut self) -> Option<u8> {
        let year = self.digits(4).filter(|y| *y > 0)?;
        if !self.eat(b'-') {
            return Some(1);
        }
        let month = self.digits(2).filter(|m| (1..=12).contains(m))?;
        if !self.eat(b'-') {
            return Some(2);
        }
        self.digits(2)
            .filter(|d| *d >= 1 && *d <= days_in_month(year, month))?;
        Some(3)
    }
    /// `hh:mm:ss(.f+)?`
    fn time(&mut self) -> bool {
        let ok = self.digits(2).is_some_and(|h| h <= 23)
            && self.eat(b':')
            && self.digits(2).is_some_and(|m| m <= 59)
            && self.eat(b':')
            && self.digits(2).is_some_and(|s| s <= 60);
        ok && (!self.eat(b'.') || self.run_of_digits() > 0)
    }
    /// `Z|(+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)`
    fn zone(&mut self) -> bool {
        if self.eat(b'Z') {
            return true;
        }
        if !(self.eat(b'+') || self.eat(b'-')) {
            return false;
        }
        let (Some(h), true, Some(m)) = (self.digits(2), self.eat(b':'), self.digits(2)) else {
            return false;
        };
        (h <= 13 && m <= 59) || (h == 14 && m == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(ty: &str, v: Value) -> bool {
        check(ty, &v).is_ok()
    }

    #[test]
    fn dates() {
        assert!(ok("date", json!("2021")));
        assert!(ok("date", json!("2021-02")));
        assert!(ok("date", json!("2020-02-29")));
        assert!(!ok("date", json!("2021-02-29")));
        assert!(!ok("date", json!("2021-02-30")));
        assert!(!ok("date", json!("1900-02-29")));
        assert!(ok("date", json!("2000-02-29")));
        assert!(!ok("date", json!("0000")));
        assert!(!ok("date", json!("2021-13")));
        assert!(!ok("date", json!("not-a-date")));
        assert!(!ok("date", json!("2021-01-01T10:00:00Z")));
        assert!(ok("dateTime", json!("2021-01-01T10:00:00Z")));
        assert!(ok("dateTime", json!("2021-01-01T10:00:00.123+14:00")));
        assert!(!ok("dateTime", json!("2021-01-01T10:00:00+14:01")));
        assert!(!ok("dateTime", json!("2021-01-01T10:00Z")));
        assert!(!ok("dateTime", json!("2021-01-01T10:00:00")));
        assert!(!ok("dateTime", json!("2021-01T10:00:00Z")));
        assert!(ok("dateTime", json!("2021-01")));
        assert!(ok("instant", json!("2015-02-07T13:28:17.239+02:00")));
        assert!(!ok("instant", json!("2015-02-07T13:28:17")));
        assert!(!ok("instant", json!("2015-02-07")));
        assert!(ok("time", json!("23:59:60.5")));
        assert!(!ok("time", json!("24:00:00")));
        assert!(!ok("time", json!("10:00")));
    }

    #[test]
    fn numbers() {
        let n = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert!(ok("decimal", n("1.50")));
        assert!(ok("decimal", n("-0.5e-3")));
        assert!(!ok("decimal", json!("1.5")));
        assert!(ok("integer", n("-2147483648")));
        assert!(!ok("integer", n("2147483648")));
        assert!(!ok("integer", n("1.0")));
        assert!(ok("unsignedInt", n("0")));
        assert!(!ok("unsignedInt", n("-1")));
        assert!(!ok("positiveInt", n("0")));
        assert!(ok("positiveInt", n("2147483647")));
        assert!(!ok("boolean", json!("true")));
        assert!(ok("boolean", json!(false)));
    }

    #[test]
    fn strings() {
        assert!(!ok("string", json!("")));
        assert!(ok("string", json!("  x\ty\r\n")));
        assert!(!ok("string", json!("a\u{0007}b")));
        assert!(ok("code", json!("a b")));
        assert!(!ok("code", json!(" a")));
        assert!(!ok("code", json!("a  b")));
        assert!(!ok("code", json!("a ")));
        assert!(ok("id", json!("a-B.9")));
        assert!(!ok("id", json!("a_b")));
        assert!(!ok("id", json!("x".repeat(65))));
        assert!(ok("uri", json!("http://x/y")));
        assert!(!ok("uri", json!("http://x/ y")));
        assert!(ok("oid", json!("urn:oid:2.16.840.1.113883")));
        assert!(!ok("oid", json!("urn:oid:3.1")));
        assert!(!ok("oid", json!("urn:oid:2")));
        assert!(ok(
            "uuid",
            json!("urn:uuid:a76d9bbf-f293-4fb7-ad4c-2851cac77162")
        ));
        assert!(!ok(
            "uuid",
            json!("urn:uuid:A76D9BBF-f293-4fb7-ad4c-2851cac77162")
        ));
        assert!(ok("base64Binary", json!("aGVsbG8=")));
        assert!(ok("base64Binary", json!("aGVs bG8h")));
        assert!(!ok("base64Binary", json!("aGVsbG8")));
        assert!(!ok("base64Binary", json!("aG=sbG8h")));
    }
}
