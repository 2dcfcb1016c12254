//! The push endpoints for record systems (contract §3): `POST /ingest/{source}`,
//! `PUT` and `DELETE /ingest/{source}/{type}/{id}`, and `POST /ingest/{source}/$notify`.

use super::entries::{self, Entry, Method, Mode, Sent};
use super::{Outcome, ingest, wrong_source};
use crate::app::AppState;
use crate::auth::SourceClient;
use crate::body::{json_body, json_bytes};
use crate::error::{ApiError, ApiResult, fhir_json, fhir_raw};
use crate::fhir::definitions;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

fn check_source(state: &AppState, caller: &SourceClient, source: &str) -> ApiResult<()> {
    if !state.config.has_source(source) {
        return Err(ApiError::not_found());
    }
    if caller.source != source {
        return Err(wrong_source(source));
    }
    Ok(())
}

/// `POST /ingest/{source}`: a transaction, a batch, or one resource.
pub async fn post(
    State(state): State<AppState>,
    caller: SourceClient,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    check_source(&state, &caller, &source)?;
    let bytes = json_bytes(&headers, body, state.config.limits.max_body_bytes).await?;
    // Reading a large body through takes milliseconds: off the async threads then.
    let (mode, sent) = if bytes.len() < LARGE {
        entries::split_json(bytes)?
    } else {
        tokio::task::spawn_blocking(move || entries::split_json(bytes))
            .await
            .map_err(|e| ApiError::internal(e.into()))??
    };
    let outcomes = ingest(&state, &source, mode, sent, None, Some(&caller.scopes)).await?;
    Ok(respond(mode, outcomes))
}

/// `POST /ingest/{source}/$notify`: a subscription notification, or a nudge: pull that source
/// now. Answered 202 at once; whatever the body holds is not read (the pull reads the source).
pub async fn notify(
    State(state): State<AppState>,
    caller: SourceClient,
    Path(source): Path<String>,
) -> ApiResult<Response> {
    check_source(&state, &caller, &source)?;
    if !state.pullers.nudge(&state, &source).await {
        return Err(ApiError::conflict(format!(
            "source `{source}` is not pulled: its config has no [sources.pull]"
        )));
    }
    Ok(crate::error::fhir_json(
        StatusCode::ACCEPTED,
        &serde_json::json!({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational",
                       "diagnostics": format!("a pull of `{source}` is on its way")}]
        }),
    ))
}

/// Bodies at least this large are read through on a blocking thread. A Bundle is only read
/// for its top level there (about 1 ms per MB), but anything else is parsed whole (about 14
/// ms per MB): this bounds how long either holds an async thread, while a Bundle of a few
/// hundred entries still goes without a hand-off.
const LARGE: usize = 256 * 1024;

/// `PUT /ingest/{source}/{type}/{id}`.
pub async fn put(
    State(state): State<AppState>,
    caller: SourceClient,
    Path((source, resource_type, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    check_source(&state, &caller, &source)?;
    let target = target(&resource_type, &id)?;
    let value = json_body(&headers, body, state.config.limits.max_body_bytes).await?;
    let (body_type, body_id) = (
        value.get("resourceType").and_then(Value::as_str),
        value.get("id").and_then(Value::as_str),
    );
    if body_type != Some(resource_type.as_str()) {
        return Err(ApiError::invalid(format!(
            "the url names {resource_type} but the body is {}",
            body_type.unwrap_or("not a resource")
        )));
    }
    if body_id.is_some_and(|b| b != id) {
        return Err(ApiError::invalid(format!(
            "the body's id {} differs from the url's {id}",
            body_id.unwrap_or_default()
        )));
    }
    let entry = Entry {
        index: 0,
        full_url: None,
        method: Method::Update,
        target: Some(target),
        if_none_exist: None,
        resource: Some(value),
    };
    one(&state, &caller, &source, entry).await
}

/// `DELETE /ingest/{source}/{type}/{id}`: withdraws the resource from the portal at once.
pub async fn delete(
    State(state): State<AppState>,
    caller: SourceClient,
    Path((source, resource_type, id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    check_source(&state, &caller, &source)?;
    let entry = Entry {
        index: 0,
        full_url: None,
        method: Method::Delete,
        target: Some(target(&resource_type, &id)?),
        if_none_exist: None,
        resource: None,
    };
    one(&state, &caller, &source, entry).await
}

/// Ingests one entry of a `PUT` or `DELETE`, and answers for it.
async fn one(
    state: &AppState,
    caller: &SourceClient,
    source: &str,
    entry: Entry,
) -> ApiResult<Response> {
    let sent = vec![Sent::Read(Ok(entry))];
    let outcomes = ingest(
        state,
        source,
        Mode::Single,
        sent,
        None,
        Some(&caller.scopes),
    )
    .await?;
    Ok(respond(Mode::Single, outcomes))
}

fn target(resource_type: &str, id: &str) -> ApiResult<(String, String)> {
    if !definitions::is_resource_type(resource_type) {
        return Err(ApiError::invalid(format!(
            "`{resource_type}` is not an R4 resource type"
        )));
    }
    if !crate::fhir::reference::is_fhir_id(id) {
        return Err(ApiError::invalid(format!(
            "`{id}` is not a valid id (1-64 of A-Z a-z 0-9 - .)"
        )));
    }
    Ok((resource_type.to_string(), id.to_string()))
}

/// The answer: a response Bundle, or for one resource its status with an outcome.
fn respond(mode: Mode, mut outcomes: Vec<Outcome>) -> Response {
    match mode {
        Mode::Single => {
            let Some(o) = outcomes.pop() else {
                return ApiError::not_found().into_response();
            };
            if let Some(e) = o.error {
                return e.into_response();
            }
            let body = o.response().get("outcome").cloned().unwrap_or(Value::Null);
            let mut response = if o.status == StatusCode::NO_CONTENT {
                o.status.into_response()
            } else {
                fhir_json(o.status, &body)
            };
            if let Some(location) = o.location
                && let Ok(v) = HeaderValue::from_str(&location)
            {
                response.headers_mut().insert(header::LOCATION, v);
            }
            if let Some(version) = o.version
                && let Ok(v) = HeaderValue::from_str(&format!("W/\"{version}\""))
            {
                response.headers_mut().insert(header::ETAG, v);
            }
            response
        }
        Mode::Transaction | Mode::Batch => {
            let kind = if mode == Mode::Transaction {
                "transaction-response"
            } else {
                "batch-response"
            };
            #[derive(serde::Serialize)]
            struct Bundle<'a> {
                #[serde(rename = "resourceType")]
                resource_type: &'static str,
                #[serde(rename = "type")]
                kind: &'static str,
                entry: Vec<Response<'a>>,
            }
            #[derive(serde::Serialize)]
            struct Response<'a> {
                response: &'a Outcome,
            }
            let bundle = Bundle {
                resource_type: "Bundle",
                kind,
                entry: outcomes
                    .iter()
                    .map(|response| Response { response })
                    .collect(),
            };
            fhir_raw(
                StatusCode::OK,
                serde_json::to_vec(&bundle).unwrap_or_default(),
            )
        }
    }
}
