//! Sends one outbox item to a record system's FHIR API: a create with `If-None-Exist` on the
//! item's identifier, or an update conditional on it. What the record system answers decides:
//! 200 or 201 is delivered, anything else is tried again. Errors say what happened without
//! tokens or bodies.

use super::Target;
use crate::store::outbox::Item;
use axum::http::{StatusCode, header};

/// An error answer's body read for the log, at most.
const MAX_ERROR_BODY: usize = 2048;

/// The search value of `system|value`, percent-encoded for a URL or header.
fn identifier_query(identifier: &str) -> String {
    format!(
        "identifier={}",
        form_urlencoded::byte_serialize(identifier.as_bytes()).collect::<String>()
    )
}

/// Sends `item` (with `bearer`, the token of the writeback's `auth`); the record system's
/// location for it when accepted, or why not.
pub async fn send(
    target: &Target,
    item: &Item,
    bearer: Option<&str>,
) -> Result<Option<String>, String> {
    let base = &target.writeback.base_url;
    let query = identifier_query(&item.identifier);
    let request = match item.method.as_str() {
        "update" => target
            .http
            .put(format!("{base}/{}?{query}", item.resource_type)),
        _ => target
            .http
            .post(format!("{base}/{}", item.resource_type))
            .header("If-None-Exist", query),
    };
    let mut request = request
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .header(header::ACCEPT, "application/fhir+json")
        .header("Prefer", "return=minimal")
        .body(item.body.clone());
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            format!(
                "no answer within {}s (it may have been stored: the next try cannot duplicate it)",
                target.writeback.timeout.as_secs()
            )
        } else {
            format!("cannot reach the record system: {}", without_url(&e))
        }
    })?;
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .or_else(|| response.headers().get(header::CONTENT_LOCATION))
        .and_then(|v| v.to_str().ok())
        .map(|l| l.chars().take(500).collect::<String>());
    if status == StatusCode::OK || status == StatusCode::CREATED {
        return Ok(location);
    }
    if status == StatusCode::PRECONDITION_FAILED && item.method == "create" {
        // More than one resource has this identifier already: it is there (a copy made
        // outside sluis); sending it again would not change that.
        tracing::warn!(source = %target.source, item = %item.key, "the record system holds this item more than once already");
        return Ok(None);
    }
    if status == StatusCode::UNAUTHORIZED {
        target.auth.invalidate().await;
    }
    let mut text = String::new();
    let mut response = response;
    while text.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(bytes)) => text.push_str(&String::from_utf8_lossy(&bytes)),
            _ => break,
        }
    }
    let diagnostics = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v["issue"][0]["diagnostics"]
                .as_str()
                .map(|d| d.chars().take(300).collect::<String>())
        });
    Err(match diagnostics {
        Some(d) => format!("the record system answered HTTP {}: {d}", status.as_u16()),
        None => format!("the record system answered HTTP {}", status.as_u16()),
    })
}

/// A reqwest error's text without the URL (it could carry a query the log need not hold).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "the writeback URL");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
