//! Correction requests from a client (R14), shaped after the HL7 Patient Corrections guide:
//! `POST /fhir/Task` (the holder only) asks to correct, add to, erase or transfer data; the
//! request is due within `[messages] request_due` (at most 30 days), goes to the record system
//! through the outbox, and the holder reads it as it progresses at `GET /fhir/Task?patient=`
//! and `GET /fhir/Task/{id}`. `/admin/requests` (in `decide`) lists and decides them.

use super::REQUEST_SYSTEM;
use super::post::{invalid, sender_name};
use crate::access;
use crate::app::AppState;
use crate::auth::{Interaction, PortalUser};
use crate::error::{ApiError, ApiResult, Detail, Reason, fhir_json};
use crate::store::requests::{self as store, Request};
use crate::time::{from_micros, instant, to_micros};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

/// The kinds of request (`Task.code` in system `urn:sluis:request`).
pub const CODES: &[&str] = &["correction", "addition", "erasure", "transfer"];

/// Kinds that concern one resource, which `focus` must name.
const NEED_FOCUS: &[&str] = &["correction", "erasure"];

/// What a portal may send in a request; everything else is refused by name.
const ALLOWED: &[&str] = &[
    "resourceType",
    "id",
    "status",
    "intent",
    "code",
    "for",
    "focus",
    "description",
];

/// Open requests per user at most (a stranger must not fill the organisation's list).
const MAX_OPEN: i64 = 20;

const DEFAULT_COUNT: i64 = 50;
const MAX_COUNT: i64 = 500;

/// `POST /fhir/Task`.
pub async fn post(
    State(state): State<AppState>,
    user: PortalUser,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    user.scopes.require("Task", Interaction::Create)?;
    let value = crate::body::json_body(&headers, body, state.config.limits.max_body_bytes).await?;
    let patient = patient_of(&value)?;
    crate::audit::note(|n| n.patients.push(patient.clone()));
    let decision = access::decide_for(&state, &user).await?;
    let access = access::require_holder(&decision, &patient, "asks for corrections (R14)")?;
    let details = check(&value, state.config.messages.max_text_chars);
    if !details.is_empty() {
        return Err(ApiError::invalid("the request is not valid").with_details(details));
    }
    let code = value["code"]["coding"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let description = value["description"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_string();
    let focus = value
        .get("focus")
        .and_then(|f| f.get("reference"))
        .and_then(Value::as_str);
    let (source, focus) = match focus {
        Some(reference) => {
            let source = readable_focus(&state, &user, &decision, &patient, reference).await?;
            (source, reference.to_string())
        }
        None => {
            let source = crate::store::resources::source_of(&state.db, "Patient", &patient)
                .await?
                .ok_or_else(|| {
                    invalid(
                        "Task.for",
                        format!("Patient/{patient} has not arrived from a record system"),
                    )
                })?;
            (source, String::new())
        }
    };
    let requester = sender_name(&state, &patient, access.link_id).await?;
    let now = state.clock.now();
    let due = now
        + chrono::TimeDelta::from_std(state.config.messages.request_due)
            .unwrap_or(chrono::TimeDelta::days(30));
    let request = Request {
        seq: 0,
        id: uuid::Uuid::new_v4().to_string(),
        patient_id: patient,
        client_id: user.client_id.clone(),
        external_id: user.external_id.clone(),
        user_id: decision.user_id,
        source,
        code,
        focus,
        description,
        requester,
        state: "requested".into(),
        reason: None,
        decided_by: None,
        decided_at: None,
        created_at: to_micros(now),
        due_at: to_micros(due),
    };
    let delivered = for_record_system(&request).to_string();
    let key = super::post::idempotency_key(&headers)?;
    let kept = store::insert(
        &state.db,
        &request,
        key.as_deref(),
        MAX_OPEN,
        store::Delivery {
            body: &delivered,
            at: to_micros(state.clock.wall()),
        },
    )
    .await?;
    match kept {
        store::Kept::Kept => {}
        store::Kept::Repeated(earlier) => {
            // The same request again (same client, kind, focus and text), else 422: a key
            // used for anything else tells nothing of it.
            let same = earlier.patient_id == request.patient_id
                && earlier.code == request.code
                && earlier.focus == request.focus
                && earlier.description == request.description;
            if !same {
                return Err(super::post::key_reused());
            }
            let id = earlier.id.clone();
            crate::audit::note(|n| {
                n.resources = format!("Task/{id}");
                n.detail = Some(format!(
                    "request {id} sent again (the same Idempotency-Key)"
                ));
            });
            return Ok(fhir_json(StatusCode::OK, &task(&earlier)));
        }
        store::Kept::Full => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Reason::RateLimited,
                format!("{MAX_OPEN} requests of this user wait for a decision already"),
            ));
        }
    }
    state.outbox.nudge();
    let id = request.id.clone();
    crate::audit::note(|n| {
        n.resources = format!("Task/{id}");
        n.detail = Some(format!("request {id} ({}) made", request.code));
    });
    let mut response = fhir_json(StatusCode::CREATED, &task(&request));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}/fhir/Task/{id}",
        state.config.server.public_base_url
    )) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// The source of the resource a request concerns, which must be one of this client's that the
/// user can read now (under the usual decision and the token's scope). Anything else,
/// whether it exists or not, is the same 400: the answer tells nothing new.
async fn readable_focus(
    state: &AppState,
    user: &PortalUser,
    decision: &access::Decision,
    patient: &str,
    reference: &str,
) -> ApiResult<String> {
    let refused = || {
        invalid(
            "Task.focus",
            format!("{reference} is not a resource of Patient/{patient} this user can read"),
        )
    };
    let (ty, id) = reference.split_once('/').ok_or_else(refused)?;
    if !crate::fhir::definitions::is_resource_type(ty)
        || !crate::fhir::reference::is_fhir_id(id)
        || !user.scopes.allows(ty, Interaction::Read)
    {
        return Err(refused());
    }
    let q = crate::search::params::parse(
        ty,
        &[("_id".into(), id.into())],
        crate::search::params::Counts { default: 1, max: 1 },
    )
    .map_err(|_| refused())?;
    let hit = crate::search::sql::page(
        &state.db,
        &q,
        crate::search::sql::Scope::new(decision, &state.mappings),
        to_micros(state.clock.now()),
    )
    .await?
    .into_iter()
    .next()
    .filter(|h| h.patient_id.as_deref() == Some(patient))
    .ok_or_else(refused)?;
    crate::store::resources::source_of(&state.db, &hit.resource_type, &hit.fhir_id)
        .await?
        .ok_or_else(refused)
}

/// The client a request is about: `for` must be `Patient/{id}`.
fn patient_of(value: &Value) -> ApiResult<String> {
    super::post::client_named(value, "Task", "for", "request")
}

/// Everything wrong with a request, by element.
fn check(value: &Value, max_chars: usize) -> Vec<Detail> {
    let mut details = Vec::new();
    let mut problem = |expression: &str, message: String| {
        details.push(Detail {
            message,
            expression: Some(expression.to_string()),
        });
    };
    if let Some(object) = value.as_object() {
        for key in object.keys().filter(|k| !ALLOWED.contains(&k.as_str())) {
            problem(
                &format!("Task.{key}"),
                format!(
                    "`{key}` is not taken from a portal (a request holds: for, code, focus, description)"
                ),
            );
        }
    }
    if value
        .get("status")
        .is_some_and(|s| s.as_str() != Some("requested"))
    {
        problem("Task.status", "a new request is `requested`".into());
    }
    if value
        .get("intent")
        .is_some_and(|s| s.as_str() != Some("order"))
    {
        problem("Task.intent", "a request is `order`".into());
    }
    let coding = &value["code"]["coding"];
    let code = coding[0]["code"].as_str();
    let sound_code = coding.as_array().is_some_and(|c| c.len() == 1)
        && coding[0]["system"].as_str() == Some(REQUEST_SYSTEM)
        && code.is_some_and(|c| CODES.contains(&c));
    if !sound_code {
        problem(
            "Task.code",
            format!(
                "one coding of system {REQUEST_SYSTEM}: {}",
                CODES.join(", ")
            ),
        );
    }
    match value
        .get("description")
        .and_then(Value::as_str)
        .map(str::trim)
    {
        Some(d) if !d.is_empty() && d.chars().count() <= max_chars => {}
        _ => problem(
            "Task.description",
            format!("say what should change, in 1 to {max_chars} characters"),
        ),
    }
    match value.get("focus") {
        None if code.is_some_and(|c| NEED_FOCUS.contains(&c)) => problem(
            "Task.focus",
            "a correction or erasure names the resource it concerns: focus.reference Type/id"
                .into(),
        ),
        None => {}
        Some(f) => {
            let sound = f.as_object().is_some_and(|o| o.len() == 1)
                && f["reference"].as_str().is_some_and(|r| r.contains('/'));
            if !sound {
                problem(
                    "Task.focus",
                    "a reference to one resource: focus.reference Type/id".into(),
                );
            }
        }
    }
    details
}

/// The FHIR status of a request as it stands.
fn status(r: &Request) -> &'static str {
    match r.state.as_str() {
        "accepted" => "accepted",
        "rejected" => "rejected",
        _ => "requested",
    }
}

/// The request as a Task, as its holder reads it.
pub fn task(r: &Request) -> Value {
    let mut t = for_record_system(r);
    t["id"] = json!(r.id);
    t
}

/// The request as a Task, as the record system gets it (its own id is the record system's;
/// the identifier is the key it updates on).
pub fn for_record_system(r: &Request) -> Value {
    let mut t = json!({
        "resourceType": "Task",
        "identifier": [{"system": REQUEST_SYSTEM, "value": r.id}],
        "status": status(r),
        "intent": "order",
        "code": {"coding": [{"system": REQUEST_SYSTEM, "code": r.code}]},
        "description": r.description,
        "for": {"reference": format!("Patient/{}", r.patient_id)},
        "authoredOn": instant(from_micros(r.created_at)),
        "lastModified": instant(from_micros(r.decided_at.unwrap_or(r.created_at))),
        "requester": {"display": format!("{} (via the client portal)", r.requester)},
        "restriction": {"period": {"end": instant(from_micros(r.due_at))}},
    });
    if !r.focus.is_empty() {
        t["focus"] = json!({"reference": r.focus});
    }
    if let Some(reason) = &r.reason {
        t["statusReason"] = json!({"text": reason});
    }
    t
}

/// `GET /fhir/Task?patient=P[&_count=n][&_cursor=c]`: the client's correction requests, newest
/// first; the holder only. Any other query searches the record systems' own Tasks as every
/// type is searched (served only where `sections.toml` maps Task).
pub async fn search(
    state: State<AppState>,
    user: PortalUser,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    const OURS: &[&str] = &["patient", "_count", "_cursor"];
    let keys: Vec<String> = form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect();
    if !keys.iter().any(|k| k == "patient") || !keys.iter().all(|k| OURS.contains(&k.as_str())) {
        return crate::serve::read::search(state, user, Path("Task".into()), RawQuery(raw)).await;
    }
    let State(state) = state;
    user.scopes.require("Task", Interaction::Search)?;
    let q = crate::body::query_map(raw.as_deref(), OURS)?;
    let patient =
        crate::search::params::patient_id(q.get("patient").map_or("", String::as_str), "patient")?;
    let count = crate::body::page_count(&q, DEFAULT_COUNT, MAX_COUNT)?;
    let before = crate::body::positive_number(&q, "_cursor")?;
    let decision = access::decide_for(&state, &user).await?;
    access::require_holder(&decision, &patient, "reads the client's requests (R14)")?;
    let mut rows = store::of_patient(&state.db, &patient, before, count + 1).await?;
    let base = &state.config.server.public_base_url;
    let mut link = vec![
        json!({"relation": "self", "url": format!("{base}/fhir/Task?{}", raw.as_deref().unwrap_or(""))}),
    ];
    if let Some(last) = crate::body::cut_page(&mut rows, count) {
        link.push(json!({"relation": "next", "url": format!(
            "{base}/fhir/Task?patient={patient}&_count={count}&_cursor={}", last.seq
        )}));
    }
    crate::audit::note(|n| {
        n.patients = vec![patient.clone()];
        n.resources = rows
            .iter()
            .map(|r| format!("Task/{}", r.id))
            .collect::<Vec<_>>()
            .join(" ");
    });
    let entries: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "fullUrl": format!("{base}/fhir/Task/{}", r.id),
                "resource": task(r),
                "search": {"mode": "match"},
            })
        })
        .collect();
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"resourceType": "Bundle", "type": "searchset", "link": link, "entry": entries}),
    ))
}

/// `GET /fhir/Task/{id}`: one request, for the holder of its client; 404 to anyone else. An id
/// that is no request is read as every resource is.
pub async fn read(
    State(state): State<AppState>,
    user: PortalUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    user.scopes.require("Task", Interaction::Read)?;
    let Some(request) = store::get(&state.db, &id).await? else {
        return crate::serve::read::read(State(state), user, Path(("Task".into(), id))).await;
    };
    // The client whose request it is, named whoever asks.
    crate::audit::names(&request.patient_id);
    let decision = access::decide_for(&state, &user).await?;
    if access::holding(&decision, &request.patient_id).is_none() {
        return Err(ApiError::not_found());
    }
    crate::audit::note(|n| n.resources = format!("Task/{id}"));
    Ok(fhir_json(StatusCode::OK, &task(&request)))
}
