//! `GET /fhir/_history?_since=T`: what became visible, changed or was withdrawn for this user
//! since T, so a portal can keep its cache right (R14). Withdrawn entries come with
//! `request.method = DELETE` and no resource.

use super::bundle::{Viewer, query_string};
use crate::access;
use crate::app::AppState;
use crate::auth::{Interaction, PortalUser};
use crate::error::{ApiError, ApiResult, fhir_json};
use crate::search::dates;
use crate::search::params::Cursor;
use crate::search::sql;
use crate::time::{from_micros, instant, to_micros};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

/// `GET /fhir/_history`.
pub async fn history(
    State(state): State<AppState>,
    user: PortalUser,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    // It lists every type the user may see: a scope of some types does not reach it.
    user.scopes.require_every_type(Interaction::Read)?;
    let decision = access::decide_for(&state, &user).await?;
    let mut since = i64::MIN;
    let mut count = i64::from(state.config.limits.default_count);
    let mut cursor = None;
    let mut echo: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        let (k, v) = (k.into_owned(), v.into_owned());
        match k.as_str() {
            "_since" => {
                // The moment itself: `_since=T` lists what changed after T.
                since = dates::parse(&v).map(|r| r.lo).ok_or_else(|| {
                    ApiError::unknown_parameter(format!(
                        "_since={v} is not an instant such as 2026-11-23T10:00:00Z"
                    ))
                })?;
            }
            "_count" => {
                let n: u32 = v.parse().map_err(|_| {
                    ApiError::unknown_parameter(format!("_count must be a whole number, not `{v}`"))
                })?;
                count = i64::from(n.clamp(1, state.config.limits.max_count));
            }
            "_cursor" => {
                cursor = Some(Cursor::decode(&v).ok_or_else(|| {
                    ApiError::unknown_parameter(
                        "_cursor is not one this server made; follow the `next` link",
                    )
                })?);
                continue;
            }
            "_format"
                if matches!(
                    v.as_str(),
                    "json" | "application/json" | "application/fhir+json"
                ) => {}
            other => {
                return Err(ApiError::unknown_parameter(format!(
                    "`{other}` is not supported on _history; use _since, _count"
                )));
            }
        }
        echo.push((k, v));
    }
    let now = state.clock.now();
    let now_micros = to_micros(now);
    let total = sql::history_count(&state.db, since, &decision, now_micros).await?;
    let mut hits = sql::history(&state.db, since, cursor, count + 1, &decision, now_micros).await?;
    let base = &state.config.server.public_base_url;
    let url = |pairs: &[(String, String)]| {
        let qs = query_string(pairs);
        if qs.is_empty() {
            format!("{base}/fhir/_history")
        } else {
            format!("{base}/fhir/_history?{qs}")
        }
    };
    let mut links = vec![json!({"relation": "self", "url": url(&echo)})];
    if hits.len() as i64 > count {
        hits.truncate(usize::try_from(count).unwrap_or(0));
        if let Some(last) = hits.last() {
            let mut next = echo.clone();
            next.push((
                "_cursor".into(),
                Cursor {
                    key: last.release_at.unwrap_or_default(),
                    version_id: last.id,
                    total: None,
                }
                .encode(),
            ));
            links.push(json!({"relation": "next", "url": url(&next)}));
        }
    }
    let viewer = Viewer {
        decision: &decision,
        redaction: &state.mappings.redaction,
    };
    let entries: Vec<Value> = hits
        .iter()
        .map(|h| {
            let full_url = format!("{base}/fhir/{}/{}", h.resource_type, h.fhir_id);
            let at = h.release_at.map(|r| instant(from_micros(r))).unwrap_or_default();
            if h.withdrawn != 0 {
                json!({
                    "fullUrl": full_url,
                    "request": {"method": "DELETE", "url": format!("{}/{}", h.resource_type, h.fhir_id)},
                    "response": {"status": "204 No Content", "lastModified": at},
                })
            } else {
                json!({
                    "fullUrl": full_url,
                    "resource": serde_json::from_str::<Value>(&viewer.text(h)).unwrap_or(Value::Null),
                    "request": {"method": "PUT", "url": format!("{}/{}", h.resource_type, h.fhir_id)},
                    "response": {"status": "200 OK", "etag": format!("W/\"{}\"", h.version_no), "lastModified": at},
                })
            }
        })
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "history",
        "meta": {"lastUpdated": instant(now)},
        "total": total,
        "link": links,
    });
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    Ok(fhir_json(StatusCode::OK, &bundle))
}
