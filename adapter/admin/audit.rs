//! `GET /admin/audit` (the audit trail with filters, R18) and `GET /admin/audit/exposure`
//! (for a portal client or one of its users and a period: whose data they saw, R19).

use crate::app::AppState;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, fhir_json};
use crate::store::audit::{self as store, Filter};
use crate::time::{from_micros, instant, parse_instant, to_micros};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::HashMap;

const DEFAULT_COUNT: i64 = 100;
const MAX_COUNT: i64 = 1000;

fn moment(q: &HashMap<String, String>, key: &str) -> ApiResult<Option<i64>> {
    q.get(key)
        .map(|t| {
            parse_instant(t).map(to_micros).ok_or_else(|| {
                ApiError::invalid(format!(
                    "{key}: `{t}` is not an instant such as 2026-12-01T00:00:00Z"
                ))
            })
        })
        .transpose()
}

fn filter(q: &HashMap<String, String>) -> ApiResult<Filter> {
    let success = match q.get("outcome").map(String::as_str) {
        None => None,
        Some("success") => Some(true),
        Some("failure") => Some(false),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "outcome: `{other}` is not `success` or `failure`"
            )));
        }
    };
    let number = |key: &str, default: i64| -> ApiResult<i64> {
        q.get(key).map_or(Ok(default), |v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::invalid(format!("{key}: `{v}` is not a number")))
        })
    };
    Ok(Filter {
        patient: q.get("patient").cloned(),
        client_id: q.get("client").cloned(),
        user_id: q.get("user").cloned(),
        from: moment(q, "from")?,
        to: moment(q, "to")?,
        success,
        after: number("after", 0)?,
        limit: number("_count", DEFAULT_COUNT)?.clamp(1, MAX_COUNT),
    })
}

/// `GET /admin/audit?patient=&user=&client=&from=&to=&outcome=&after=&_count=`: oldest
/// first; `next` continues after the last record of a full page.
pub async fn search(
    State(state): State<AppState>,
    _admin: Admin,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = crate::body::query_map(
        raw.as_deref(),
        &[
            "patient", "user", "client", "from", "to", "outcome", "after", "_count",
        ],
    )?;
    let f = filter(&q)?;
    crate::audit::flushed(&state).await?;
    let records = store::search(&state.db, &f).await?;
    let next = (records.len() as i64 == f.limit)
        .then(|| records.last().map(|r| r.seq))
        .flatten()
        .map(|last| {
            let mut pairs: Vec<(String, String)> = q
                .iter()
                .filter(|(k, _)| *k != "after")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            pairs.sort();
            pairs.push(("after".into(), last.to_string()));
            format!(
                "/admin/audit?{}",
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish()
            )
        });
    let records: Vec<Value> = records
        .into_iter()
        .map(|r| {
            let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
            v["at"] = json!(instant(from_micros(r.at)));
            v
        })
        .collect();
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"records": records, "next": next}),
    ))
}

/// `GET /admin/audit/exposure?client=&user=&from=&to=`: per client (Patient) whose data the
/// portal client (or its user) was served in the period, the requests and the first and last.
pub async fn exposure(
    State(state): State<AppState>,
    _admin: Admin,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = crate::body::query_map(raw.as_deref(), &["client", "user", "from", "to"])?;
    if !q.contains_key("client") {
        return Err(ApiError::invalid(
            "name the portal client: ?client=… (and optionally &user=… for one of its users)",
        ));
    }
    let f = filter(&q)?;
    crate::audit::flushed(&state).await?;
    let rows = store::exposure(&state.db, &f).await?;
    let patients: Vec<Value> = rows
        .into_iter()
        .map(|e| {
            json!({
                "patient": e.patient,
                "requests": e.requests,
                "first": instant(from_micros(e.first_at)),
                "last": instant(from_micros(e.last_at)),
            })
        })
        .collect();
    Ok(fhir_json(
        StatusCode::OK,
        &json!({
            "client": q.get("client"),
            "user": q.get("user"),
            "from": q.get("from"),
            "to": q.get("to"),
            "patients": patients,
        }),
    ))
}
