//! `POST /fhir/Communication` (a portal user writes to the care team) and the sender's own
//! view of what became of it, `GET /fhir/Communication/{id}`.

use super::{IDENTIFIER_SYSTEM, NOT_URGENT};
use crate::access::{self, Role};
use crate::app::AppState;
use crate::auth::{Interaction, PortalUser};
use crate::config::Messages;
use crate::error::{ApiError, ApiResult, Detail, Reason, fhir_json};
use crate::store::messages::{self as store, Message};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

/// The elements a message may hold; the adapter sets the rest (id, status, sent, sender,
/// identifier). No `recipient`: the care team routes what reaches it, and a reference a
/// portal user wrote must not make a shared resource visible.
const ALLOWED: [&str; 5] = [
    "resourceType",
    "subject",
    "payload",
    "inResponseTo",
    "topic",
];

/// What may wait for moderation at once (attachments count as base64): per portal user, and
/// per client over all its users (a holder can invite many members who may post): what
/// strangers can make the store hold before the organisation has looked.
const CAPS: store::Caps = store::Caps {
    per_user: 20,
    bytes_per_user: 16 * 1024 * 1024,
    per_client: 100,
    bytes_per_client: 64 * 1024 * 1024,
};

/// Payloads per message at most.
const MAX_PAYLOADS: usize = 10;

/// `POST /fhir/Communication`.
pub async fn post(
    State(state): State<AppState>,
    user: PortalUser,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    user.scopes.require("Communication", Interaction::Create)?;
    let value = crate::body::json_body(&headers, body, state.config.limits.max_body_bytes).await?;
    // The client a message is about is named in its record, whoever sends it.
    let patient = subject(&value);
    if let Ok(p) = &patient {
        crate::audit::names(p);
    }
    let decision = access::decide_for(&state, &user).await?;
    let patient = patient?;
    // A client the user is linked to but may not see now: 403 with the reason; one they are
    // not linked to: the message names a wrong subject.
    access::refuse_named(&decision, [patient.as_str()])?;
    let Some(access) = decision.access(&patient) else {
        return Err(invalid(
            "Communication.subject",
            format!("Patient/{patient} is not a client this user is linked to"),
        ));
    };
    if !(access.can_post || access.role == Role::Holder) {
        return Err(ApiError::forbidden(
            Reason::NoPostRight,
            "this user may not post messages about this client (no right to post)",
        ));
    }
    let details = check(&value, &state.config.messages);
    if !details.is_empty() {
        return Err(ApiError::invalid("the message is not valid").with_details(details));
    }
    let source = crate::store::resources::source_of(&state.db, "Patient", &patient)
        .await?
        .ok_or_else(|| {
            invalid(
                "Communication.subject",
                format!("Patient/{patient} has not arrived from a record system"),
            )
        })?;
    let sender = sender_name(&state, &patient, access.link_id).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let now = state.clock.now();
    // Rebuilt from what was checked, element by element: nothing else of the body is kept
    // (no references the care team did not write, no extensions).
    let mut message = json!({
        "resourceType": "Communication",
        "id": id,
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": id}],
        "status": "preparation",
        "subject": {"reference": format!("Patient/{patient}")},
        "sent": crate::time::instant(now),
        "sender": {"display": format!("{sender} (via the client portal)")},
        "payload": rebuilt_payload(&value["payload"]),
    });
    if let Some(replies) = value.get("inResponseTo").and_then(Value::as_array) {
        message["inResponseTo"] = Value::Array(
            replies
                .iter()
                .map(|r| json!({"reference": r["reference"]}))
                .collect(),
        );
    }
    if let Some(topic) = value.get("topic").and_then(|t| t.get("text")) {
        message["topic"] = json!({"text": topic});
    }
    // The checks ingest makes when it is approved, now: a message taken is one that can be.
    let mut problems = crate::ingest::check::check(&message, "");
    problems.extend(crate::ingest::check::check_structure(
        message.clone(),
        "Communication",
        String::new,
    ));
    if !problems.is_empty() {
        return Err(ApiError::invalid("the message is not valid").with_details(problems));
    }
    let body = message.to_string();
    let key = idempotency_key(&headers)?;
    let kept = store::insert(
        &state.db,
        &Message {
            seq: 0,
            id: id.clone(),
            patient_id: patient,
            client_id: user.client_id.clone(),
            external_id: user.external_id.clone(),
            user_id: decision.user_id,
            source,
            body,
            state: "waiting".into(),
            reason: None,
            decided_by: None,
            decided_at: None,
            created_at: crate::time::to_micros(now),
        },
        key.as_deref(),
        CAPS,
    )
    .await?;
    match kept {
        store::Kept::Kept => {}
        store::Kept::Repeated(earlier) => {
            // The same post again: the same client (which this request was allowed to write
            // about) and the same content. A key used for anything else tells nothing of it.
            if !same_message(&earlier, &message) {
                return Err(key_reused());
            }
            let id = earlier.id.clone();
            crate::audit::note(|n| {
                n.resources = format!("Communication/{id}");
                n.detail = Some(format!(
                    "message {id} sent again (the same Idempotency-Key)"
                ));
            });
            return Ok(answer(&headers, StatusCode::OK, &senders_view(&earlier)));
        }
        store::Kept::Full(why) => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Reason::RateLimited,
                why,
            ));
        }
    }
    crate::audit::note(|n| n.detail = Some(format!("message {id} waiting for moderation")));
    let mut response = answer(&headers, StatusCode::CREATED, &message);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}/fhir/Communication/{id}",
        state.config.server.public_base_url
    )) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// How the care team reads who wrote: the name the link holds, or the relationship.
pub(super) async fn sender_name(
    state: &AppState,
    patient: &str,
    link_id: i64,
) -> ApiResult<String> {
    let links = crate::store::accounts::links_of_patient(&state.db, patient).await?;
    Ok(links
        .iter()
        .find(|l| l.id == link_id)
        .map(|l| {
            l.name.clone().unwrap_or_else(|| {
                access::relationships::coding(&l.relationship)
                    .map_or(l.relationship.clone(), |(_, _, display)| {
                        display.to_string()
                    })
            })
        })
        .unwrap_or_default())
}

/// The answer to a post: the stored message (`Prefer: return=minimal`: nothing), or with
/// `Prefer: return=OperationOutcome` an OperationOutcome whose `information` issues say that
/// it waits for moderation and that messages are not for urgent matters (R20); the header
/// `X-Sluis-Notice` says the latter on every answer.
pub(super) fn answer(headers: &HeaderMap, status: StatusCode, message: &Value) -> Response {
    let prefer = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut response = if prefer.contains("return=OperationOutcome") {
        fhir_json(
            status,
            &json!({
                "resourceType": "OperationOutcome",
                "issue": [
                    {"severity": "information", "code": "informational",
                     "diagnostics": "the message waits for the care organisation's moderation before anyone else sees it"},
                    {"severity": "information", "code": "informational", "diagnostics": NOT_URGENT}
                ]
            }),
        )
    } else if prefer.contains("return=minimal") {
        status.into_response()
    } else {
        fhir_json(status, message)
    };
    if let Ok(v) = HeaderValue::from_str(NOT_URGENT) {
        response.headers_mut().insert("x-sluis-notice", v);
    }
    response
}

/// `GET /fhir/Communication/{id}`: the sender sees their own message as it stands (waiting:
/// `preparation`; rejected: `not-done` with the reason); anything else is read as every
/// resource is.
pub async fn read(
    State(state): State<AppState>,
    user: PortalUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    user.scopes.require("Communication", Interaction::Read)?;
    let found = store::get(&state.db, &id).await?;
    // A portal user's message names its client whoever asks (a refused read of it is an
    // attempt on that client's data).
    if let Some(m) = &found {
        crate::audit::names(&m.patient_id);
    }
    let own = found.filter(|m| m.client_id == user.client_id && m.external_id == user.external_id);
    let Some(m) = own else {
        return crate::serve::read::read(State(state), user, Path(("Communication".into(), id)))
            .await;
    };
    // The sender's own message, under the same decision as everything else: a user blocked,
    // or no longer allowed to see the client, sees it no more.
    let decision = access::decide_for(&state, &user).await?;
    if access::require(&decision, &m.patient_id).is_err() {
        return Err(ApiError::not_found());
    }
    crate::audit::note(|n| n.resources = format!("Communication/{id}"));
    Ok(fhir_json(StatusCode::OK, &senders_view(&m)))
}

/// The message as its sender reads it: `preparation` while it waits, `completed` once
/// approved, `not-done` with the organisation's reason when rejected.
fn senders_view(m: &Message) -> Value {
    let mut body: Value = serde_json::from_str(&m.body).unwrap_or(Value::Null);
    match m.state.as_str() {
        "rejected" => {
            body["status"] = json!("not-done");
            body["statusReason"] = json!({"text": m.reason.clone().unwrap_or_default()});
        }
        "approved" => body["status"] = json!("completed"),
        _ => {}
    }
    body
}

/// Whether a message kept earlier is the one just posted again: the same client and the same
/// content (the parts a post sets; `id`, `sent` and the state are the adapter's).
fn same_message(earlier: &Message, posted: &Value) -> bool {
    let kept: Value = serde_json::from_str(&earlier.body).unwrap_or(Value::Null);
    ["subject", "payload", "inResponseTo", "topic"]
        .iter()
        .all(|k| kept.get(*k) == posted.get(*k))
}

/// 422 for an `Idempotency-Key` the user sent before with another body.
pub(super) fn key_reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        Reason::Conflict,
        "this Idempotency-Key was used before for another request: use a new key for a new request",
    )
}

/// The `Idempotency-Key` header of a post, if sent: a portal's retry with the same key gets
/// what the first post made (200) instead of a second message.
pub(super) fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 200 && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(|k| Some(k.to_string()))
        .ok_or_else(|| {
            ApiError::bad_request(
                Reason::InvalidResource,
                "Idempotency-Key: 1 to 200 visible ASCII characters",
            )
        })
}

/// The payloads as checked: text, or an attachment's type, data and title.
fn rebuilt_payload(payload: &Value) -> Value {
    let items = payload.as_array().cloned().unwrap_or_default();
    Value::Array(
        items
            .iter()
            .map(
                |p| match (p.get("contentString"), p.get("contentAttachment")) {
                    (Some(text), _) => json!({"contentString": text}),
                    (_, Some(a)) => {
                        let mut kept = json!({"contentType": a["contentType"], "data": a["data"]});
                        if let Some(title) = a.get("title").and_then(Value::as_str) {
                            kept["title"] = json!(title);
                        }
                        json!({"contentAttachment": kept})
                    }
                    _ => Value::Null,
                },
            )
            .collect(),
    )
}

pub(super) fn invalid(expression: &str, message: String) -> ApiError {
    ApiError::invalid(message.clone()).with_details(vec![Detail {
        message,
        expression: Some(expression.into()),
    }])
}

/// The client a message is about: `subject` must be `Patient/{id}`.
fn subject(value: &Value) -> ApiResult<String> {
    client_named(value, "Communication", "subject", "message")
}

/// The client a `resource_type` body names in `element` (`Patient/{id}`), `what` it is in
/// words; 400 naming the element otherwise.
pub(super) fn client_named(
    value: &Value,
    resource_type: &str,
    element: &str,
    what: &str,
) -> ApiResult<String> {
    if value.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
        return Err(invalid(
            &format!("{resource_type}.resourceType"),
            format!("the body must be a {resource_type}"),
        ));
    }
    value
        .get(element)
        .and_then(|s| s.get("reference"))
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("Patient/"))
        .filter(|id| crate::fhir::reference::is_fhir_id(id))
        .map(str::to_string)
        .ok_or_else(|| {
            invalid(
                &format!("{resource_type}.{element}"),
                format!("name the client the {what} is about: {element}.reference Patient/{{id}}"),
            )
        })
}

/// Everything wrong with a message, by element.
fn check(value: &Value, limits: &Messages) -> Vec<Detail> {
    let mut details = Vec::new();
    let mut problem = |expression: String, message: String| {
        details.push(Detail {
            message,
            expression: Some(expression),
        });
    };
    if let Some(object) = value.as_object() {
        for key in object.keys().filter(|k| !ALLOWED.contains(&k.as_str())) {
            problem(
                format!("Communication.{key}"),
                format!(
                    "`{key}` is not taken from a portal (it may hold: subject, payload, recipient, inResponseTo, topic)"
                ),
            );
        }
    }
    match value.get("payload").and_then(Value::as_array) {
        None => problem(
            "Communication.payload".into(),
            "a message needs a payload: contentString or contentAttachment".into(),
        ),
        Some(p) if p.is_empty() || p.len() > MAX_PAYLOADS => problem(
            "Communication.payload".into(),
            format!("1 to {MAX_PAYLOADS} payloads"),
        ),
        Some(payloads) => {
            for (i, p) in payloads.iter().enumerate() {
                let at = format!("Communication.payload[{i}]");
                if !only(p, &["contentString", "contentAttachment"]) {
                    problem(
                        at.clone(),
                        "a payload holds contentString or contentAttachment, nothing else".into(),
                    );
                    continue;
                }
                match (p.get("contentString"), p.get("contentAttachment")) {
                    (Some(text), None) => match text.as_str() {
                        Some(t)
                            if !t.trim().is_empty()
                                && t.chars().count() <= limits.max_text_chars => {}
                        _ => problem(
                            format!("{at}.contentString"),
                            format!("text of 1 to {} characters", limits.max_text_chars),
                        ),
                    },
                    (None, Some(attachment)) => {
                        check_attachment(
                            attachment,
                            &format!("{at}.contentAttachment"),
                            limits,
                            &mut problem,
                        );
                    }
                    _ => problem(
                        at,
                        "each payload holds contentString or contentAttachment, one of them".into(),
                    ),
                }
            }
        }
    }
    for (i, r) in value
        .get("inResponseTo")
        .map(|r| r.as_array().cloned().unwrap_or_else(|| vec![Value::Null]))
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let ok = only(r, &["reference"])
            && r.get("reference")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("Communication/"))
                .is_some_and(crate::fhir::reference::is_fhir_id);
        if !ok {
            problem(
                format!("Communication.inResponseTo[{i}]"),
                "a reference Communication/{id}".into(),
            );
        }
    }
    if let Some(topic) = value.get("topic") {
        let ok = only(topic, &["text"])
            && topic
                .get("text")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.trim().is_empty() && t.chars().count() <= 200);
        if !ok {
            problem(
                "Communication.topic".into(),
                "{\"text\": ...}, at most 200 characters".into(),
            );
        }
    }
    details
}

/// Whether `value` is an object with no other members than `members`.
fn only(value: &Value, members: &[&str]) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.keys().all(|k| members.contains(&k.as_str())))
}

/// Whether the data starts as files of its declared type do, for the types whose start is
/// known: a message must not carry, say, an HTML page declared as an image to readers and the
/// record system. Other types configured in `messages.attachment_types` are taken as declared.
fn content_matches(content_type: &str, data: &[u8]) -> bool {
    let magic: &[&[u8]] = match content_type {
        "application/pdf" => &[b"%PDF-"],
        "image/png" => &[b"\x89PNG\r\n\x1a\n"],
        "image/jpeg" => &[b"\xFF\xD8\xFF"],
        "image/gif" => &[b"GIF87a", b"GIF89a"],
        "image/webp" => {
            return data.starts_with(b"RIFF") && data.get(8..12) == Some(b"WEBP".as_slice());
        }
        "image/tiff" => &[b"II*\0", b"MM\0*"],
        _ => return true,
    };
    magic.iter().any(|m| data.starts_with(m))
}

fn check_attachment(
    attachment: &Value,
    at: &str,
    limits: &Messages,
    problem: &mut impl FnMut(String, String),
) {
    if !only(attachment, &["contentType", "data", "title"]) {
        problem(
            at.to_string(),
            "an attachment holds contentType, data and title, nothing else".into(),
        );
        return;
    }
    if attachment
        .get("title")
        .is_some_and(|t| t.as_str().is_none_or(|t| t.chars().count() > 200))
    {
        problem(
            format!("{at}.title"),
            "text of at most 200 characters".into(),
        );
    }
    let content_type = attachment.get("contentType").and_then(Value::as_str);
    if !content_type.is_some_and(|c| limits.attachment_types.iter().any(|t| t == c)) {
        problem(
            format!("{at}.contentType"),
            format!(
                "one of {} (messages.attachment_types)",
                limits.attachment_types.join(", ")
            ),
        );
    }
    if attachment.get("url").is_some() {
        problem(
            format!("{at}.url"),
            "an attachment is sent whole, in data, not as a link".into(),
        );
    }
    let data = attachment.get("data").and_then(Value::as_str).unwrap_or("");
    // Four characters of base64 hold three bytes: too large is known before decoding.
    if data.len() / 4 * 3 > limits.max_attachment_bytes + 3 {
        problem(
            format!("{at}.data"),
            format!(
                "larger than messages.max_attachment_bytes ({} bytes)",
                limits.max_attachment_bytes
            ),
        );
        return;
    }
    match base64::engine::general_purpose::STANDARD.decode(data) {
        Ok(bytes) if bytes.is_empty() => {
            problem(format!("{at}.data"), "the attachment is empty".into())
        }
        Ok(bytes) if bytes.len() > limits.max_attachment_bytes => problem(
            format!("{at}.data"),
            format!(
                "larger than messages.max_attachment_bytes ({} bytes)",
                limits.max_attachment_bytes
            ),
        ),
        Ok(bytes) if !content_matches(content_type.unwrap_or(""), &bytes) => problem(
            format!("{at}.data"),
            format!(
                "the data is not a {} file (its first bytes say otherwise)",
                content_type.unwrap_or("")
            ),
        ),
        Ok(_) => {}
        Err(_) => problem(format!("{at}.data"), "not base64".into()),
    }
}
