//! What was sent, as a list of entries: a `transaction` or `batch` Bundle split into its
//! entries, or one resource as a single entry. Bundles are read as plain JSON (fhirbolt's
//! typed Bundle rejects ordinary input); each entry's resource is checked on its own later.

use crate::body::{malformed, parse_json};
use crate::error::{ApiError, ApiResult, Detail};
use crate::fhir::reference::{is_fhir_id, parse_type_id};
use axum::body::Bytes;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::fmt;
use std::ops::Range;

/// The kind of write an entry asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `POST`: create; the source's id is kept when the resource has one.
    Create,
    /// `PUT Type/id`: create or update under that id.
    Update,
    /// `DELETE Type/id`: withdraw.
    Delete,
}

/// One entry to ingest.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its position in the Bundle (0 for a single resource).
    pub index: usize,
    pub full_url: Option<String>,
    pub method: Method,
    /// `(type, id)` from the request URL (PUT/DELETE) or the resource.
    pub target: Option<(String, String)>,
    pub if_none_exist: Option<String>,
    pub resource: Option<Value>,
}

/// How the entries are to be processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// All or nothing.
    Transaction,
    /// Each entry on its own.
    Batch,
    /// One resource, not in a Bundle.
    Single,
}

/// Where an entry's problems are reported: the FHIRPath of the entry.
pub fn entry_path(mode: Mode, index: usize) -> String {
    match mode {
        Mode::Single => String::new(),
        _ => format!("Bundle.entry[{index}]"),
    }
}

fn detail(path: String, message: impl Into<String>) -> Detail {
    Detail {
        message: message.into(),
        expression: (!path.is_empty()).then_some(path),
    }
}

/// An entry, or why it cannot be read.
pub type Parsed = Result<Entry, Detail>;

/// Splits a pushed body into entries. A Bundle must be a `transaction` or a `batch`; the
/// caller decides what a broken entry means (all or nothing in a transaction).
pub fn split(body: Value) -> Result<(Mode, Vec<Parsed>), Vec<Detail>> {
    let Value::Object(mut map) = body else {
        return Err(vec![detail(String::new(), "the body is not a JSON object")]);
    };
    let Some(resource_type) = map
        .get("resourceType")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(vec![detail(String::new(), "resourceType is missing")]);
    };
    if resource_type != "Bundle" {
        let id = map.get("id").and_then(Value::as_str).map(str::to_string);
        let entry = Entry {
            index: 0,
            full_url: None,
            method: if id.is_some() {
                Method::Update
            } else {
                Method::Create
            },
            target: id.map(|id| (resource_type.clone(), id)),
            if_none_exist: None,
            resource: Some(Value::Object(map)),
        };
        return Ok((Mode::Single, vec![Ok(entry)]));
    }
    let mode = bundle_mode(map.get("type").and_then(Value::as_str))?;
    let entries = match map.remove("entry") {
        None => Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(vec![not_a_list()]),
    };
    let out = entries
        .into_iter()
        .enumerate()
        .map(|(index, raw)| entry(mode, index, raw))
        .collect();
    Ok((mode, out))
}

/// The mode of a Bundle of this `Bundle.type`.
fn bundle_mode(bundle_type: Option<&str>) -> Result<Mode, Vec<Detail>> {
    match bundle_type {
        Some("transaction") => Ok(Mode::Transaction),
        Some("batch") => Ok(Mode::Batch),
        other => Err(vec![detail(
            "Bundle.type".into(),
            format!(
                "Bundle.type must be transaction or batch, not {}",
                other.unwrap_or("missing")
            ),
        )]),
    }
}

fn not_a_list() -> Detail {
    detail("Bundle.entry".into(), "entry must be a list")
}

/// The answer to a body that [`split`] cannot split.
pub fn not_a_push(details: Vec<Detail>) -> ApiError {
    ApiError::invalid("not a transaction or batch Bundle, nor a resource").with_details(details)
}

/// An entry on its way to [`crate::ingest::ingest`]: read already, or its JSON still to be
/// parsed, which ingest does on the cores beside the checks.
#[derive(Debug)]
pub enum Sent {
    Read(Parsed),
    /// `body[range]` is the entry's JSON (valid: the whole body was read through once).
    Json {
        index: usize,
        body: Bytes,
        range: Range<usize>,
    },
}

impl Sent {
    /// The entry, parsed.
    pub fn read(self, mode: Mode) -> Parsed {
        match self {
            Sent::Read(parsed) => parsed,
            Sent::Json { index, body, range } => {
                let text = body.get(range).unwrap_or_default();
                match serde_json::from_slice::<Value>(text) {
                    Ok(value) => entry(mode, index, value),
                    Err(e) => Err(detail(
                        entry_path(mode, index),
                        format!("malformed JSON: {e}"),
                    )),
                }
            }
        }
    }
}

/// [`split`] of a pushed body, reading only its top level: a Bundle's entries are parsed
/// later, one by one and on every core ([`Sent::read`]). The whole body is still read through
/// once here, so that broken JSON anywhere in it is refused with its line and column before
/// anything else is done. Anything but a Bundle is parsed whole.
pub fn split_json(body: Bytes) -> ApiResult<(Mode, Vec<Sent>)> {
    let whole = |body: &Bytes| -> ApiResult<(Mode, Vec<Sent>)> {
        let (mode, parsed) = split(parse_json(body)?).map_err(not_a_push)?;
        Ok((mode, parsed.into_iter().map(Sent::Read).collect()))
    };
    // serde_json names where the text is not UTF-8; and only an object can be a Bundle.
    let Ok(text) = std::str::from_utf8(&body) else {
        return whole(&body);
    };
    if !text.trim_start().starts_with('{') {
        return whole(&body);
    }
    let outline: Outline = serde_json::from_str(text).map_err(|e| malformed(&e))?;
    if outline.resource_type.as_ref().and_then(Value::as_str) != Some("Bundle") {
        return whole(&body);
    }
    let mode =
        bundle_mode(outline.bundle_type.as_ref().and_then(Value::as_str)).map_err(not_a_push)?;
    let entries = match outline.entry {
        None => Vec::new(),
        Some(Entries::List(entries)) => entries,
        Some(Entries::Other) => return Err(not_a_push(vec![not_a_list()])),
    };
    let base = text.as_ptr() as usize;
    let sent = entries
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            let start = (raw.get().as_ptr() as usize).saturating_sub(base);
            Sent::Json {
                index,
                body: body.clone(),
                range: start..start + raw.get().len(),
            }
        })
        .collect();
    Ok((mode, sent))
}

/// The top level of an object: what [`split_json`] needs, the entries left as text.
#[derive(Default)]
struct Outline<'a> {
    resource_type: Option<Value>,
    bundle_type: Option<Value>,
    entry: Option<Entries<'a>>,
}

/// `Bundle.entry`: a list, each entry as its text, or something else.
enum Entries<'a> {
    List(Vec<&'a RawValue>),
    Other,
}

impl<'de> Deserialize<'de> for Outline<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Outline<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Outline<'de>, A::Error> {
                // As in a parsed object, the last of a repeated name counts.
                let mut out = Outline::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "resourceType" => out.resource_type = Some(map.next_value()?),
                        "type" => out.bundle_type = Some(map.next_value()?),
                        "entry" => out.entry = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(Fields)
    }
}

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entries<'de>, A::Error> {
                let mut entries = Vec::new();
                while let Some(raw) = seq.next_element::<&RawValue>()? {
                    entries.push(raw);
                }
                Ok(Entries::List(entries))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Entries::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Entries<'de>, E> {
                Ok(Entries::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Entries<'de>, E> {
                Ok(Entries::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Entries<'de>, E> {
                Ok(Entries::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Entries<'de>, E> {
                Ok(Entries::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Entries<'de>, E> {
                Ok(Entries::Other)
            }
            fn visit_unit<E>(self) -> Result<Entries<'de>, E> {
                Ok(Entries::Other)
            }
        }
        d.deserialize_any(List)
    }
}

fn entry(mode: Mode, index: usize, raw: Value) -> Result<Entry, Detail> {
    let path = entry_path(mode, index);
    let Value::Object(mut e) = raw else {
        return Err(detail(path, "entry is not an object"));
    };
    let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_string);
    let request = e.get("request").cloned().unwrap_or(Value::Null);
    let method_text = request.get("method").and_then(Value::as_str);
    let method = match method_text {
        Some("POST") => Method::Create,
        Some("PUT") => Method::Update,
        Some("DELETE") => Method::Delete,
        Some(other) => {
            return Err(detail(
                format!("{path}.request.method"),
                format!("method {other} is not accepted at ingest; use POST, PUT or DELETE"),
            ));
        }
        None => {
            return Err(detail(
                format!("{path}.request.method"),
                "request.method is missing",
            ));
        }
    };
    let url = request.get("url").and_then(Value::as_str).unwrap_or("");
    let resource = e.remove("resource");
    if method != Method::Delete && !matches!(resource, Some(Value::Object(_))) {
        return Err(detail(
            format!("{path}.resource"),
            "a POST or PUT entry needs a resource",
        ));
    }
    let resource_type = resource
        .as_ref()
        .and_then(|r| r.get("resourceType"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let target = match method {
        Method::Create => {
            let ty = resource_type.clone().unwrap_or_default();
            if !url.is_empty() && url != ty {
                return Err(detail(
                    format!("{path}.request.url"),
                    format!("POST url `{url}` does not name the resource's type {ty}"),
                ));
            }
            let id = resource
                .as_ref()
                .and_then(|r| r.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    full_url
                        .as_deref()
                        .and_then(|u| u.strip_prefix("urn:uuid:"))
                        .filter(|u| is_fhir_id(u))
                        .map(str::to_string)
                });
            id.map(|id| (ty, id))
        }
        Method::Update | Method::Delete => {
            let (ty, id) = parse_type_id(url).ok_or_else(|| {
                detail(
                    format!("{path}.request.url"),
                    format!(
                        "`{url}` is not Type/id (conditional updates and deletes are not supported)"
                    ),
                )
            })?;
            if method == Method::Update {
                if resource_type.as_deref() != Some(ty.as_str()) {
                    return Err(detail(
                        format!("{path}.request.url"),
                        format!(
                            "url names {ty} but the resource is {}",
                            resource_type.unwrap_or_default()
                        ),
                    ));
                }
                let rid = resource
                    .as_ref()
                    .and_then(|r| r.get("id"))
                    .and_then(Value::as_str);
                if rid.is_some_and(|r| r != id) {
                    return Err(detail(
                        format!("{path}.resource.id"),
                        format!(
                            "resource id {} differs from the url's {id}",
                            rid.unwrap_or_default()
                        ),
                    ));
                }
            }
            Some((ty, id))
        }
    };
    let if_none_exist = request
        .get("ifNoneExist")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Entry {
        index,
        full_url,
        method,
        target,
        if_none_exist,
        resource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_transaction_splits_into_entries() {
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:6d4c0f4e-0000-4000-8000-000000000001",
             "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "id": "o1"}, "request": {"method": "PUT", "url": "Observation/o1"}},
            {"request": {"method": "DELETE", "url": "Observation/o2"}}
        ]});
        let (mode, entries) = split(bundle).unwrap();
        let entries: Vec<Entry> = entries.into_iter().map(Result::unwrap).collect();
        assert_eq!(mode, Mode::Transaction);
        assert_eq!(
            entries[0].target,
            Some((
                "Patient".into(),
                "6d4c0f4e-0000-4000-8000-000000000001".into()
            ))
        );
        assert_eq!(entries[1].method, Method::Update);
        assert_eq!(entries[2].target, Some(("Observation".into(), "o2".into())));
    }

    #[test]
    fn broken_entries_are_named() {
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "GET", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "id": "a"}, "request": {"method": "PUT", "url": "Patient/b"}},
            {"request": {"method": "PUT", "url": "Patient/c"}},
            {"resource": {"resourceType": "Patient"}, "request": {"method": "PUT", "url": "Patient?identifier=x"}},
            "nonsense"
        ]});
        let (_, parsed) = split(bundle).unwrap();
        let paths: Vec<_> = parsed
            .into_iter()
            .map(|p| p.unwrap_err().expression.unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "Bundle.entry[0].request.method",
                "Bundle.entry[1].resource.id",
                "Bundle.entry[2].resource",
                "Bundle.entry[3].request.url",
                "Bundle.entry[4]",
            ]
        );
        assert!(split(json!({"resourceType": "Bundle", "type": "collection"})).is_err());
        assert!(split(json!([1, 2])).is_err());
    }

    /// `split_json` of `body` as the entries it reads, next to `split` of the parsed body.
    fn both(body: &str) -> (String, String) {
        let new = match split_json(Bytes::from(body.to_string())) {
            Ok((mode, sent)) => {
                let read: Vec<Parsed> = sent.into_iter().map(|s| s.read(mode)).collect();
                format!("{mode:?} {read:?}")
            }
            Err(e) => format!("{} {}", e.status, e.outcome()),
        };
        let old = match parse_json(body.as_bytes()) {
            Ok(value) => match split(value) {
                Ok((mode, parsed)) => format!("{mode:?} {parsed:?}"),
                Err(details) => {
                    let e = not_a_push(details);
                    format!("{} {}", e.status, e.outcome())
                }
            },
            Err(e) => format!("{} {}", e.status, e.outcome()),
        };
        (new, old)
    }

    #[test]
    fn reading_the_top_level_first_splits_as_parsing_the_whole_body() {
        let entry = r#"{"fullUrl": "urn:uuid:6d4c0f4e-0000-4000-8000-000000000001",
            "resource": {"resourceType": "Observation", "valueQuantity": {"value": 1.50}},
            "request": {"method": "POST", "url": "Observation"}}"#;
        let bodies = [
            format!(r#"{{"resourceType": "Bundle", "type": "transaction", "entry": [{entry}, {entry}]}}"#),
            format!(r#"  {{"entry": [{entry}], "type": "batch", "id": "b", "resourceType": "Bundle"}}"#),
            // The last of a repeated name counts.
            format!(r#"{{"resourceType": "Bundle", "type": "collection", "type": "batch", "entry": [], "entry": [{entry}]}}"#),
            r#"{"resourceType": "Bundle", "type": "transaction"}"#.into(),
            r#"{"resourceType": "Bundle", "type": "transaction", "entry": []}"#.into(),
            r#"{"resourceType": "Bundle", "type": "transaction", "entry": ["nonsense", 1, null, {}]}"#.into(),
            r#"{"resourceType": "Bundle", "type": "searchset", "entry": []}"#.into(),
            r#"{"resourceType": "Bundle", "entry": []}"#.into(),
            r#"{"resourceType": "Bundle", "type": 7, "entry": []}"#.into(),
            r#"{"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"}"#.into(),
            r#"{"resourceType": ["Bundle"], "type": "transaction"}"#.into(),
            r#"{"id": "p1"}"#.into(),
            r#"{}"#.into(),
        ];
        for body in &bodies {
            let (new, old) = both(body);
            assert_eq!(new, old, "{body}");
        }
        let (new, _) = both(&bodies[0]);
        assert!(new.starts_with("Transaction [Ok("), "{new}");
        assert!(new.contains(r#"Number(1.50)"#), "{new}");
    }

    #[test]
    fn a_bundle_that_cannot_be_split_is_refused_as_before() {
        for entry in [r#"{"a": 1}"#, r#""x""#, "7", "-1.5e3", "true", "null"] {
            let body =
                format!(r#"{{"resourceType": "Bundle", "type": "transaction", "entry": {entry}}}"#);
            let (new, old) = both(&body);
            assert_eq!(new, old, "{body}");
            assert!(new.contains("entry must be a list"), "{new}");
        }
        for body in [
            "",
            "   ",
            "[1, 2]",
            "\"Bundle\"",
            "12",
            "null",
            r#"{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": }]}"#,
            r#"{"resourceType": "Bundle", "type": "transaction", "entry": [{}], }"#,
            r#"{"resourceType": "Bundle", "type": "transaction", "entry": [{}]} trailing"#,
            r#"{"resourceType": "Bundle", "type": "transaction", "entry": [{"x": "\q"}]}"#,
            r#"{"resourceType": "Bundle", "type": "transaction", "entry": [{"x": "unterminated}]}"#,
            "{\"resourceType\": \"Bundle\",\n \"type\": \"transaction\",\n \"entry\": [{\"x\": 1,,}]}",
        ] {
            let (new, old) = both(body);
            assert_eq!(new, old, "{body}");
            assert!(new.starts_with("400"), "{new}");
        }
    }

    #[test]
    fn text_that_is_not_utf8_or_nested_too_deep_is_refused() {
        let mut body =
            br#"{"resourceType": "Bundle", "type": "transaction", "entry": [{"x": ""#.to_vec();
        body.extend([0xff, 0xfe]);
        body.extend(br#""}]}"#);
        let e = split_json(Bytes::from(body)).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.message.contains("malformed JSON at line 1"),
            "{}",
            e.message
        );

        // Deeper than serde_json's limit, inside an entry: the whole body was refused, now
        // the entry is, by name (which refuses a transaction whole).
        let deep = format!(
            r#"{{"resourceType": "Bundle", "type": "transaction", "entry": [{{"resource": {}1{}}}]}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let (new, old) = both(&deep);
        assert!(
            old.starts_with("400") && old.contains("recursion limit"),
            "{old}"
        );
        assert!(new.starts_with("Transaction [Err("), "{new}");
        assert!(
            new.contains("recursion limit") && new.contains("Bundle.entry[0]"),
            "{new}"
        );
    }
}
