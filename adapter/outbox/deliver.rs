//! Sends one outbox item to a record system's FHIR API. What the record system answers
//! decides: accepted is delivered, anything else is tried again. Errors say what happened
//! without tokens or bodies.
//!
//! - A message (`create`): `POST {type}` with `If-None-Exist: identifier=…`, so that a retry
//!   after an unclear answer finds the copy instead of adding one.
//! - A request (`update`, its body changes when it is decided): the record system's copy is
//!   looked up by identifier; none: created as a message is (a create that finds one made
//!   meanwhile is tried again, now as an update); one: `PUT {type}/{id}` with `If-Match` on the
//!   version just read. So a send that the record system applies late (after sluis stopped
//!   waiting for it) cannot overwrite a newer body sent since: its version no longer matches.

use super::Target;
use crate::store::outbox::Item;
use axum::http::{StatusCode, header};
use serde_json::Value;

/// An error answer's body read for the log, at most.
const MAX_ERROR_BODY: usize = 2048;

/// A search answer read, at most.
const MAX_SEARCH_BODY: usize = 4 * 1024 * 1024;

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
    let ty = &item.resource_type;
    let query = identifier_query(&item.identifier);
    let authorized = |r: reqwest::RequestBuilder| match bearer {
        Some(token) => r.bearer_auth(token),
        None => r,
    };
    let existing = if item.method == "update" {
        find(
            target,
            &authorized(target.http.get(format!("{base}/{ty}?{query}"))),
            item,
        )
        .await?
    } else {
        None
    };
    let request = match &existing {
        Some((id, version)) => {
            let mut body: Value =
                serde_json::from_str(&item.body).map_err(|e| format!("the item's body: {e}"))?;
            body["id"] = Value::String(id.clone());
            let mut put = target
                .http
                .put(format!("{base}/{ty}/{id}"))
                .body(body.to_string());
            if let Some(v) = version {
                put = put.header(header::IF_MATCH, format!("W/\"{v}\""));
            }
            put
        }
        None => target
            .http
            .post(format!("{base}/{ty}"))
            .header("If-None-Exist", query)
            .body(item.body.clone()),
    };
    let request = authorized(request)
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .header(header::ACCEPT, "application/fhir+json")
        .header("Prefer", "return=minimal");
    let response = request.send().await.map_err(|e| unreachable(target, &e))?;
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .or_else(|| response.headers().get(header::CONTENT_LOCATION))
        .and_then(|v| v.to_str().ok())
        .map(|l| l.chars().take(500).collect::<String>());
    let created_meanwhile =
        item.method == "update" && existing.is_none() && status == StatusCode::OK;
    if created_meanwhile {
        // The conditional create found a copy made since the lookup (an earlier send the
        // record system applied late): not this body. The next try updates it.
        return Err(
            "the record system's copy appeared while this one was sent; it is updated next".into(),
        );
    }
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
    Err(refusal(response).await)
}

/// The record system's copy of an update item, by identifier: its id and version, or `None`.
async fn find(
    target: &Target,
    request: &reqwest::RequestBuilder,
    item: &Item,
) -> Result<Option<(String, Option<String>)>, String> {
    let request = request
        .try_clone()
        .ok_or("cannot make the lookup request")?
        .header(header::ACCEPT, "application/fhir+json");
    let mut response = request.send().await.map_err(|e| unreachable(target, &e))?;
    if !response.status().is_success() {
        if response.status() == StatusCode::UNAUTHORIZED {
            target.auth.invalidate().await;
        }
        return Err(format!("looking it up: {}", refusal(response).await));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| unreachable(target, &e))?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_SEARCH_BODY {
            return Err("looking it up: the answer is too large".into());
        }
    }
    let bundle: Value =
        serde_json::from_slice(&bytes).map_err(|_| "looking it up: the answer is not JSON")?;
    let found: Vec<&Value> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == item.resource_type.as_str())
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => {
            let id = one["id"]
                .as_str()
                .filter(|id| crate::fhir::reference::is_fhir_id(id))
                .ok_or("looking it up: the copy found has no usable id")?;
            let version = one["meta"]["versionId"].as_str().map(str::to_string);
            Ok(Some((id.to_string(), version)))
        }
        _ => Err("the record system holds this item more than once; it is not changed".into()),
    }
}

fn unreachable(target: &Target, e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!(
            "no answer within {}s (it may have been stored: the next try cannot duplicate it)",
            target.writeback.timeout.as_secs()
        )
    } else {
        format!("cannot reach the record system: {}", without_url(e))
    }
}

/// What a refusing answer says: its status and the first diagnostics of its OperationOutcome.
async fn refusal(mut response: reqwest::Response) -> String {
    let status = response.status();
    let mut text = String::new();
    while text.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(bytes)) => text.push_str(&String::from_utf8_lossy(&bytes)),
            _ => break,
        }
    }
    let diagnostics = serde_json::from_str::<Value>(&text).ok().and_then(|v| {
        v["issue"][0]["diagnostics"]
            .as_str()
            .map(|d| d.chars().take(300).collect::<String>())
    });
    match diagnostics {
        Some(d) => format!("the record system answered HTTP {}: {d}", status.as_u16()),
        None => format!("the record system answered HTTP {}", status.as_u16()),
    }
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
