//! Rendering served resources and searchset Bundles.
//!
//! The body is the source's own JSON as stored; only `meta.versionId` and `meta.lastUpdated`
//! are set to describe the version as the portal sees it (lastUpdated: the moment it became
//! visible), and redaction rules for the user's role are applied. Bodies are stored without
//! their `meta`, so the common case splices text and never parses the body; only a resource
//! that redaction touches is parsed.

use crate::access::Decision;
use crate::mapping::redaction::Redaction;
use crate::search::params::Query;
use crate::search::sql::Hit;
use crate::time::{from_micros, instant};
use serde_json::{Map, Value, json};
use std::fmt::Write as _;

/// Who is served: the decision (for the role) and the redaction rules.
#[derive(Clone, Copy)]
pub struct Viewer<'a> {
    pub decision: &'a Decision,
    pub redaction: &'a Redaction,
}

impl Viewer<'_> {
    /// The served JSON text of a hit, redacted for the user's role (recorded as served).
    pub fn text(&self, hit: &Hit) -> String {
        crate::audit::served(&hit.resource_type, &hit.fhir_id, hit.patient_id.as_deref());
        self.rendered(hit)
    }

    /// [`Viewer::text`] of each hit, in order.
    pub fn texts(&self, hits: &[Hit]) -> Vec<String> {
        crate::audit::served_all(hits.iter().map(|h| {
            (
                h.resource_type.as_str(),
                h.fhir_id.as_str(),
                h.patient_id.as_deref(),
            )
        }));
        hits.iter().map(|h| self.rendered(h)).collect()
    }

    /// The text of a hit as served, not recorded.
    fn rendered(&self, hit: &Hit) -> String {
        let role = self.decision.role_for(hit.patient_id.as_deref());
        match role {
            Some(role)
                if self
                    .redaction
                    .may_touch(role, &hit.resource_type, &hit.body) =>
            {
                let mut value = resource(hit);
                self.redaction.apply(role, &mut value);
                serde_json::to_string(&value).unwrap_or_default()
            }
            _ => served_text(hit),
        }
    }
}

/// The `meta` members the portal sees: our versionId and lastUpdated, then the source's own.
fn meta_members(hit: &Hit) -> String {
    let mut out = format!("\"versionId\":\"{}\"", hit.version_no);
    if let Some(at) = hit.release_at {
        let _ = write!(out, ",\"lastUpdated\":\"{}\"", instant(from_micros(at)));
    }
    if let Some(stored) = hit.meta.as_deref()
        && stored.len() > 2
    {
        out.push(',');
        out.push_str(&stored[1..stored.len() - 1]);
    }
    out
}

/// The served JSON text of a hit, before redaction.
pub fn served_text(hit: &Hit) -> String {
    if hit.meta.is_none() {
        // Stored before bodies were kept without meta.
        return serde_json::to_string(&resource(hit)).unwrap_or_default();
    }
    let body = hit.body.as_str();
    let meta = meta_members(hit);
    let head = format!(
        "{{\"resourceType\":\"{}\",\"id\":\"{}\"",
        hit.resource_type, hit.fhir_id
    );
    let mut out = String::with_capacity(body.len() + meta.len() + 16);
    match body.strip_prefix(head.as_str()) {
        Some(rest) if rest.starts_with(',') || rest.starts_with('}') => {
            out.push_str(&head);
            let _ = write!(out, ",\"meta\":{{{meta}}}");
            out.push_str(rest);
        }
        _ => {
            let end = body.rfind('}').unwrap_or(body.len());
            out.push_str(&body[..end]);
            let _ = write!(out, ",\"meta\":{{{meta}}}}}");
        }
    }
    out
}

/// The served JSON of a hit as a value, before redaction.
pub fn resource(hit: &Hit) -> Value {
    let mut value: Value = serde_json::from_str(&hit.body).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        let stored: Map<String, Value> = hit
            .meta
            .as_deref()
            .filter(|m| !m.is_empty())
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_default();
        let meta = map
            .entry("meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(meta) = meta {
            for (k, v) in stored {
                meta.insert(k, v);
            }
            meta.shift_insert(
                0,
                "versionId".into(),
                Value::String(hit.version_no.to_string()),
            );
            if let Some(at) = hit.release_at {
                meta.shift_insert(
                    1,
                    "lastUpdated".into(),
                    Value::String(instant(from_micros(at))),
                );
            }
        }
    }
    value
}

/// A query string of `pairs`, encoded.
pub fn query_string(pairs: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// One entry of a searchset: the served text with its type and id.
pub struct Entry {
    pub resource_type: String,
    pub id: String,
    pub text: String,
}

/// A `searchset` Bundle.
pub struct SearchSet<'a> {
    pub base: &'a str,
    pub query: &'a Query,
    pub total: Option<i64>,
    pub matches: Vec<Entry>,
    pub includes: Vec<Entry>,
    pub next_cursor: Option<String>,
    pub now: String,
}

impl SearchSet<'_> {
    /// The Bundle as JSON text; resources are spliced in as served, not re-serialized.
    pub fn render(self) -> String {
        let path = format!("{}/fhir/{}", self.base, self.query.resource_type);
        let mut self_pairs = self.query.echo.clone();
        if let Some(c) = self.query.cursor {
            self_pairs.push(("_cursor".into(), c.encode()));
        }
        let link_url = |pairs: &[(String, String)]| {
            let qs = query_string(pairs);
            if qs.is_empty() {
                path.clone()
            } else {
                format!("{path}?{qs}")
            }
        };
        let mut links = vec![json!({"relation": "self", "url": link_url(&self_pairs)})];
        if let Some(cursor) = self.next_cursor {
            let mut next = self.query.echo.clone();
            next.push(("_cursor".into(), cursor));
            links.push(json!({"relation": "next", "url": link_url(&next)}));
        }
        let size: usize = self
            .matches
            .iter()
            .chain(&self.includes)
            .map(|e| e.text.len() + 160)
            .sum();
        let mut out = String::with_capacity(size + 512);
        let _ = write!(
            out,
            "{{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"meta\":{{\"lastUpdated\":\"{}\"}}",
            self.now
        );
        if let Some(total) = self.total {
            let _ = write!(out, ",\"total\":{total}");
        }
        let _ = write!(out, ",\"link\":{}", Value::Array(links));
        let entries = self
            .matches
            .iter()
            .map(|e| (e, "match"))
            .chain(self.includes.iter().map(|e| (e, "include")));
        let mut first = true;
        for (e, mode) in entries {
            out.push_str(if first { ",\"entry\":[" } else { "," });
            first = false;
            let _ = write!(
                out,
                "{{\"fullUrl\":\"{}/fhir/{}/{}\",\"resource\":{},\"search\":{{\"mode\":\"{mode}\"}}}}",
                self.base, e.resource_type, e.id, e.text
            );
        }
        if !first {
            out.push(']');
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(body: &str, meta: Option<&str>) -> Hit {
        Hit {
            id: 1,
            resource_type: "Observation".into(),
            fhir_id: "o1".into(),
            version_no: 3,
            release_at: Some(0),
            sort_date: 0,
            patient_id: Some("p1".into()),
            section: Some("metingen".into()),
            body: body.into(),
            withdrawn: 0,
            meta: meta.map(str::to_string),
            total: None,
        }
    }

    #[test]
    fn meta_is_spliced_after_the_id_and_keeps_the_sources_members() {
        let h = hit(
            r#"{"resourceType":"Observation","id":"o1","status":"final","valueQuantity":{"value":1.50}}"#,
            Some(r#"{"profile":["http://x"]}"#),
        );
        let text = served_text(&h);
        assert_eq!(
            text,
            r#"{"resourceType":"Observation","id":"o1","meta":{"versionId":"3","lastUpdated":"1970-01-01T00:00:00Z","profile":["http://x"]},"status":"final","valueQuantity":{"value":1.50}}"#
        );
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, resource(&h), "the text and the value agree");
        // A body in another order still gets its meta, at the end.
        let odd = hit(r#"{"id":"o1","resourceType":"Observation"}"#, Some(""));
        let v: Value = serde_json::from_str(&served_text(&odd)).unwrap();
        assert_eq!(v["meta"]["versionId"], "3");
        // A body stored with its meta inside is merged by parsing.
        let legacy = hit(
            r#"{"resourceType":"Observation","id":"o1","meta":{"versionId":"9","tag":[{"code":"x"}]}}"#,
            None,
        );
        let v: Value = serde_json::from_str(&served_text(&legacy)).unwrap();
        assert_eq!(v["meta"]["versionId"], "3");
        assert_eq!(v["meta"]["tag"][0]["code"], "x");
    }
}
