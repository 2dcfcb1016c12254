//! The one error type at the edge: every failure a caller sees is a FHIR `OperationOutcome`
//! with a reason code of contract §4 (`urn:sluis:reason`).
//!
//! Handlers return `Result<_, ApiError>` and use `?`; store and other internal failures become
//! a 500 whose cause is logged, never shown.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The reason codes of contract §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    InvalidToken,
    NotLinked,
    UserBlocked,
    PatientBlocked,
    UnderAge,
    TermsNotAccepted,
    CareEnded,
    Deceased,
    SectionDenied,
    NotHolder,
    NoPostRight,
    CodeInvalid,
    CodeUsed,
    CodeExpired,
    RateLimited,
    UnknownParameter,
    InvalidResource,
    Conflict,
    NotFound,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::InvalidToken => "invalid-token",
            Reason::NotLinked => "not-linked",
            Reason::UserBlocked => "user-blocked",
            Reason::PatientBlocked => "patient-blocked",
            Reason::UnderAge => "under-age",
            Reason::TermsNotAccepted => "terms-not-accepted",
            Reason::CareEnded => "care-ended",
            Reason::Deceased => "deceased",
            Reason::SectionDenied => "section-denied",
            Reason::NotHolder => "not-holder",
            Reason::NoPostRight => "no-post-right",
            Reason::CodeInvalid => "code-invalid",
            Reason::CodeUsed => "code-used",
            Reason::CodeExpired => "code-expired",
            Reason::RateLimited => "rate-limited",
            Reason::UnknownParameter => "unknown-parameter",
            Reason::InvalidResource => "invalid-resource",
            Reason::Conflict => "conflict",
            Reason::NotFound => "not-found",
        }
    }

    /// The FHIR issue type (`OperationOutcome.issue.code`) that goes with the reason.
    pub fn issue_type(self) -> &'static str {
        match self {
            Reason::InvalidToken => "login",
            Reason::NotLinked
            | Reason::UserBlocked
            | Reason::PatientBlocked
            | Reason::UnderAge
            | Reason::TermsNotAccepted
            | Reason::CareEnded
            | Reason::Deceased
            | Reason::SectionDenied
            | Reason::NotHolder
            | Reason::NoPostRight => "forbidden",
            Reason::CodeInvalid | Reason::CodeUsed | Reason::CodeExpired => "business-rule",
            Reason::RateLimited => "throttled",
            Reason::UnknownParameter => "not-supported",
            Reason::InvalidResource => "invalid",
            Reason::Conflict => "conflict",
            Reason::NotFound => "not-found",
        }
    }
}

/// One issue of an outcome, with the element it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub message: String,
    /// FHIRPath of the element, e.g. `Bundle.entry[2].resource.status`.
    pub expression: Option<String>,
}

/// An error as the caller sees it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// `None` only for internal errors, which have no reason code of their own.
    pub reason: Option<Reason>,
    pub message: String,
    pub details: Vec<Detail>,
    pub retry_after: Option<u64>,
    /// The `WWW-Authenticate` challenge of a 401 (default: a bearer token), or of a 403 for
    /// want of scope.
    pub challenge: Option<&'static str>,
    /// The cause of an internal error, logged and never shown.
    pub cause: Option<anyhow::Error>,
}

/// The challenge of a 401 where a bearer token is wanted (RFC 6750).
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"sluis\", error=\"invalid_token\"";
/// The challenge of a 401 at the token endpoint, where clients authenticate with HTTP Basic.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"sluis\"";

impl ApiError {
    pub fn new(status: StatusCode, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            status,
            reason: Some(reason),
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
            challenge: None,
            cause: None,
        }
    }

    /// 404: hidden and absent answer alike.
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            Reason::NotFound,
            "resource not found",
        )
    }

    /// 404 for a path the adapter does not serve.
    pub fn no_endpoint() -> Self {
        Self::new(StatusCode::NOT_FOUND, Reason::NotFound, "no such endpoint")
    }

    /// 503 without a reason code of its own (the adapter cannot serve now; try again).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: None,
            message: message.into(),
            details: Vec::new(),
            retry_after: Some(1),
            challenge: None,
            cause: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, Reason::InvalidToken, message)
    }

    pub fn forbidden(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, reason, message)
    }

    pub fn bad_request(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::bad_request(Reason::InvalidResource, message)
    }

    pub fn unknown_parameter(message: impl Into<String>) -> Self {
        Self::bad_request(Reason::UnknownParameter, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, Reason::Conflict, message)
    }

    /// An internal failure: 500, the cause logged.
    pub fn internal(cause: anyhow::Error) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            reason: None,
            message: "internal error; see the adapter's log".into(),
            details: Vec::new(),
            retry_after: None,
            challenge: None,
            cause: Some(cause),
        }
    }

    /// A request that took too long (`server.body_timeout`, `server.request_timeout`): 408 or
    /// 503, issue type `timeout`, no reason code of contract §4.
    pub fn timeout(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            reason: None,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
            challenge: None,
            cause: None,
        }
    }

    /// The `WWW-Authenticate` challenge this 401 carries.
    pub fn with_challenge(mut self, challenge: &'static str) -> Self {
        self.challenge = Some(challenge);
        self
    }

    pub fn with_details(mut self, details: Vec<Detail>) -> Self {
        self.details = details;
        self
    }

    /// The OperationOutcome body.
    pub fn outcome(&self) -> Value {
        let mut issues = Vec::new();
        let issue_type = match self.reason {
            Some(reason) => reason.issue_type(),
            None if self.cause.is_none() => "timeout",
            None => "exception",
        };
        let mut first = json!({
            "severity": "error",
            "code": issue_type,
            "diagnostics": self.message,
        });
        if let Some(reason) = self.reason {
            first["details"] = json!({
                "coding": [{"system": "urn:sluis:reason", "code": reason.code()}],
                "text": self.message,
            });
        }
        for d in &self.details {
            let mut issue = first.clone();
            issue["diagnostics"] = Value::String(d.message.clone());
            if let Some(e) = &d.expression {
                issue["expression"] = json!([e]);
            }
            issues.push(issue);
        }
        if issues.is_empty() {
            issues.push(first);
        }
        json!({"resourceType": "OperationOutcome", "issue": issues})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl<E: Into<anyhow::Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError::internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            tracing::error!(error = ?cause, "internal error");
        }
        let mut response = fhir_json(self.status, &self.outcome());
        // For the audit record (audit::track).
        if let Some(reason) = self.reason {
            response.extensions_mut().insert(reason);
        }
        if let Some(seconds) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(self.challenge.unwrap_or(BEARER_CHALLENGE)),
            );
        } else if let Some(challenge) = self.challenge {
            // A 403 of a token without the scope (RFC 6750 §3.1 `insufficient_scope`).
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// The FHIR JSON media type, as every response of the adapter carries it.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// An error with its causes, as one line (a store error's own text names only the engine).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A response with a JSON body and the FHIR media type.
pub fn fhir_json(status: StatusCode, body: &Value) -> Response {
    fhir_raw(status, serde_json::to_vec(body).unwrap_or_default())
}

/// A response whose body is already serialized FHIR JSON.
pub fn fhir_raw(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        body,
    )
        .into_response()
}

pub type ApiResult<T> = Result<T, ApiError>;
