//! A page a record system answered, as ingest takes it: a `searchset` Bundle's resources (as
//! updates under their own ids), or a `history` Bundle's deletions; the newest
//! `meta.lastUpdated` (or `response.lastModified`) on it, and the link to the next page.

use super::PullError;
use crate::fhir::reference::{is_fhir_id, parse_reference};
use crate::ingest::entries::{Entry, Method};
use crate::time::{Micros, parse_instant, to_micros};
use serde_json::Value;
use std::collections::HashSet;

/// One page, ready for ingest.
pub struct Page {
    pub entries: Vec<Entry>,
    /// The newest moment on the page, as the source wrote it.
    pub newest: Option<Micros>,
    /// The next page's URL, as the source gave it (made absolute against `base`).
    pub next: Option<String>,
}

fn bundle<'a>(body: &'a Value, kind: &str) -> Result<&'a [Value], PullError> {
    if body.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(PullError::Page(format!(
            "the answer is not a {kind} Bundle"
        )));
    }
    Ok(body
        .get("entry")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice))
}

/// The `next` link, made absolute against `base`. One that leads to another scheme, host or
/// port is refused: the source's token would go with it.
fn next_link(body: &Value, base: &str) -> Result<Option<String>, PullError> {
    let Some(url) = body
        .get("link")
        .and_then(Value::as_array)
        .and_then(|links| {
            links
                .iter()
                .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))
        })
        .and_then(|l| l.get("url"))
        .and_then(Value::as_str)
    else {
        return Ok(None);
    };
    // FHIR's relative URLs are relative to the base; one that starts with `/` to the host
    // (`//host/…` names another host, and is refused below).
    let absolute = if url.starts_with("http://") || url.starts_with("https://") {
        url.to_string()
    } else if url.starts_with('/') {
        reqwest::Url::parse(base)
            .and_then(|b| b.join(url))
            .map_or_else(|_| url.to_string(), String::from)
    } else {
        format!("{base}/{url}")
    };
    let origin = |u: &str| reqwest::Url::parse(u).ok().map(|u| u.origin());
    match (origin(&absolute), origin(base)) {
        (Some(next), Some(ours)) if next == ours => Ok(Some(absolute)),
        _ => Err(PullError::Page(format!(
            "the next link leads away from the source ({}): not followed",
            absolute.chars().take(200).collect::<String>()
        ))),
    }
}

fn moment(value: Option<&Value>) -> Option<Micros> {
    value
        .and_then(Value::as_str)
        .and_then(parse_instant)
        .map(to_micros)
}

/// A `searchset` page: the matches of `resource_type` (includes and outcomes are left aside).
pub fn search(body: &Value, resource_type: &str, base: &str) -> Result<Page, PullError> {
    let mut entries = Vec::new();
    let mut newest: Option<Micros> = None;
    for e in bundle(body, "searchset")? {
        let mode = e
            .get("search")
            .and_then(|s| s.get("mode"))
            .and_then(Value::as_str);
        if mode.is_some_and(|m| m != "match") {
            continue;
        }
        let Some(resource) = e.get("resource") else {
            continue;
        };
        if resource.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
            continue;
        }
        let Some(id) = resource
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| is_fhir_id(id))
        else {
            tracing::warn!(
                resource_type,
                "a pulled resource without a valid id is left aside"
            );
            continue;
        };
        if let Some(at) = moment(resource.get("meta").and_then(|m| m.get("lastUpdated"))) {
            newest = Some(newest.map_or(at, |n| n.max(at)));
        }
        entries.push(Entry {
            index: entries.len(),
            full_url: None,
            method: Method::Update,
            target: Some((resource_type.to_string(), id.to_string())),
            if_none_exist: None,
            resource: Some(resource.clone()),
        });
    }
    Ok(Page {
        entries,
        newest,
        next: next_link(body, base)?,
    })
}

/// A `history` page (newest first): for each resource the first entry seen decides, and only
/// a deletion becomes an entry (what exists comes by search). `seen` carries over pages.
pub fn history(
    body: &Value,
    resource_type: &str,
    base: &str,
    seen: &mut HashSet<String>,
) -> Result<Page, PullError> {
    let mut entries = Vec::new();
    let mut newest: Option<Micros> = None;
    for e in bundle(body, "history")? {
        let request = e.get("request");
        let method = request
            .and_then(|r| r.get("method"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let url = request
            .and_then(|r| r.get("url"))
            .and_then(Value::as_str)
            .or_else(|| e.get("fullUrl").and_then(Value::as_str));
        let id = url
            .and_then(parse_reference)
            .filter(|(ty, _)| *ty == resource_type)
            .map(|(_, id)| id.to_string())
            .or_else(|| {
                e.get("resource")
                    .and_then(|r| r.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        let Some(id) = id.filter(|id| is_fhir_id(id)) else {
            continue;
        };
        let at = moment(e.get("response").and_then(|r| r.get("lastModified"))).or_else(|| {
            moment(
                e.get("resource")
                    .and_then(|r| r.get("meta"))
                    .and_then(|m| m.get("lastUpdated")),
            )
        });
        if let Some(at) = at {
            newest = Some(newest.map_or(at, |n| n.max(at)));
        }
        if !seen.insert(id.clone()) || method != "DELETE" {
            continue;
        }
        entries.push(Entry {
            index: entries.len(),
            full_url: None,
            method: Method::Delete,
            target: Some((resource_type.to_string(), id)),
            if_none_exist: None,
            resource: None,
        });
    }
    Ok(Page {
        entries,
        newest,
        next: next_link(body, base)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_searchset_gives_its_matches_the_newest_moment_and_the_next_link() {
        let body = json!({"resourceType": "Bundle", "type": "searchset",
        "link": [{"relation": "self", "url": "x"}, {"relation": "next", "url": "Observation?page=2"}],
        "entry": [
            {"resource": {"resourceType": "Observation", "id": "o1", "meta": {"lastUpdated": "2026-01-01T10:00:00Z"}}, "search": {"mode": "match"}},
            {"resource": {"resourceType": "Observation", "id": "o2", "meta": {"lastUpdated": "2026-01-02T10:00:00+01:00"}}},
            {"resource": {"resourceType": "Patient", "id": "p1"}, "search": {"mode": "include"}},
            {"resource": {"resourceType": "Observation", "id": "bad id"}},
            {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}}
        ]});
        let page = search(&body, "Observation", "https://ehr.test/fhir").unwrap();
        let ids: Vec<&str> = page
            .entries
            .iter()
            .map(|e| e.target.as_ref().unwrap().1.as_str())
            .collect();
        assert_eq!(ids, ["o1", "o2"]);
        assert_eq!(
            page.newest,
            Some(to_micros(parse_instant("2026-01-02T09:00:00Z").unwrap()))
        );
        assert_eq!(
            page.next.as_deref(),
            Some("https://ehr.test/fhir/Observation?page=2")
        );
        assert!(
            search(
                &json!({"resourceType": "OperationOutcome"}),
                "Observation",
                "b"
            )
            .is_err()
        );
    }

    #[test]
    fn a_next_link_to_another_origin_is_refused() {
        let page = |url: &str| {
            json!({"resourceType": "Bundle", "type": "searchset",
                "link": [{"relation": "next", "url": url}], "entry": []})
        };
        let base = "https://ehr.test/fhir";
        for bad in [
            "https://attacker.test/fhir/Observation?page=2",
            "http://ehr.test/fhir/Observation?page=2",
            "https://ehr.test:8443/fhir/Observation?page=2",
            "https://ehr.test.attacker.test/x",
            "https://ehr.test@attacker.test/x",
        ] {
            assert!(
                matches!(
                    search(&page(bad), "Observation", base),
                    Err(PullError::Page(_))
                ),
                "{bad}"
            );
        }
        for good in [
            "https://ehr.test/fhir?_getpages=abc&_offset=10",
            "https://EHR.test:443/fhir/Observation?page=2",
        ] {
            assert!(
                search(&page(good), "Observation", base)
                    .unwrap()
                    .next
                    .is_some(),
                "{good}"
            );
        }
        // Relative: to the base, or with a leading `/` to the host; `//host` is another host.
        let next = |url: &str| search(&page(url), "Observation", base).map(|p| p.next);
        assert_eq!(
            next("Observation?page=2").unwrap().as_deref(),
            Some("https://ehr.test/fhir/Observation?page=2")
        );
        assert_eq!(
            next("/api/fhir/Observation?page=2").unwrap().as_deref(),
            Some("https://ehr.test/api/fhir/Observation?page=2")
        );
        assert!(next("//attacker.test/x").is_err());
    }

    #[test]
    fn history_takes_only_deletions_that_are_the_newest_word() {
        let body = json!({"resourceType": "Bundle", "type": "history", "entry": [
            {"request": {"method": "PUT", "url": "Observation/o1"}, "response": {"lastModified": "2026-01-03T00:00:00Z"}},
            {"request": {"method": "DELETE", "url": "Observation/o1"}, "response": {"lastModified": "2026-01-02T00:00:00Z"}},
            {"request": {"method": "DELETE", "url": "Observation/o2/_history/3"}, "response": {"lastModified": "2026-01-01T00:00:00Z"}}
        ]});
        let mut seen = HashSet::new();
        let page = history(&body, "Observation", "b", &mut seen).unwrap();
        assert_eq!(page.entries.len(), 1);
        assert_eq!(page.entries[0].target.as_ref().unwrap().1, "o2");
        assert_eq!(page.entries[0].method, Method::Delete);
        assert_eq!(
            page.newest,
            Some(to_micros(parse_instant("2026-01-03T00:00:00Z").unwrap()))
        );
    }
}
