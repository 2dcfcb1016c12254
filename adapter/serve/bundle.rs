//! Rendering served resources and searchset Bundles.
//!
//! The body is the source's own JSON as stored; only `meta.versionId` and `meta.lastUpdated`
//! are set to describe the version as the portal sees it (lastUpdated: the moment it became
//! visible), and redaction rules for the user's role are applied.

use crate::access::Decision;
use crate::mapping::redaction::Redaction;
use crate::search::params::Query;
use crate::search::sql::Hit;
use crate::time::{from_micros, instant};
use serde_json::{Map, Value, json};

/// Who is served: the decision (for the role) and the redaction rules.
#[derive(Clone, Copy)]
pub struct Viewer<'a> {
    pub decision: &'a Decision,
    pub redaction: &'a Redaction,
}

impl Viewer<'_> {
    /// The served JSON of a hit, redacted for the user's role.
    pub fn render(&self, hit: &Hit) -> Value {
        let mut value = resource(hit);
        if let Some(role) = self.decision.role_for(hit.patient_id.as_deref()) {
            self.redaction.apply(role, &mut value);
        }
        value
    }
}

/// The served JSON of a hit, before redaction.
pub fn resource(hit: &Hit) -> Value {
    let mut value: Value = serde_json::from_str(&hit.body).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        let meta = map
            .entry("meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(meta) = meta {
            meta.insert(
                "versionId".into(),
                Value::String(hit.version_no.to_string()),
            );
            if let Some(at) = hit.release_at {
                meta.insert(
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

/// A `searchset` Bundle.
pub struct SearchSet<'a> {
    pub base: &'a str,
    pub query: &'a Query,
    pub total: Option<i64>,
    pub matches: Vec<Value>,
    pub includes: Vec<Value>,
    pub next_cursor: Option<String>,
    pub now: String,
}

impl SearchSet<'_> {
    pub fn render(self) -> Value {
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
        let entry = |resource: Value, mode: &str| {
            let full_url = format!(
                "{}/fhir/{}/{}",
                self.base,
                resource
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                resource.get("id").and_then(Value::as_str).unwrap_or("")
            );
            json!({"fullUrl": full_url, "resource": resource, "search": {"mode": mode}})
        };
        let mut entries: Vec<Value> = self
            .matches
            .into_iter()
            .map(|r| entry(r, "match"))
            .collect();
        entries.extend(self.includes.into_iter().map(|r| entry(r, "include")));
        let mut bundle = json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "meta": {"lastUpdated": self.now},
        });
        if let Some(total) = self.total {
            bundle["total"] = json!(total);
        }
        bundle["link"] = Value::Array(links);
        if !entries.is_empty() {
            bundle["entry"] = Value::Array(entries);
        }
        bundle
    }
}
