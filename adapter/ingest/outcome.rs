//! What ingest answers per entry: the status, the version written and when it will show, as
//! the `response` of a transaction-response or batch-response entry.

use crate::error::ApiError;
use axum::http::StatusCode;
use serde_json::Value;

/// What happened to one entry.
#[derive(Debug)]
pub struct Outcome {
    pub status: StatusCode,
    /// `Type/id/_history/n`.
    pub location: Option<String>,
    pub version: Option<i64>,
    /// A short explanation for the integration engineer: when it will show, or why not.
    pub note: Option<String>,
    pub error: Option<ApiError>,
}

impl Outcome {
    pub fn failed(error: ApiError) -> Self {
        Self {
            status: error.status,
            location: None,
            version: None,
            note: None,
            error: Some(error),
        }
    }

    /// What the entry came to, in a word (a metric's label): `created`, `updated`,
    /// `unchanged`, `deleted` or `refused`.
    pub fn kind(&self) -> &'static str {
        if self.error.is_some() {
            "refused"
        } else if self.status == StatusCode::CREATED {
            "created"
        } else if self.status == StatusCode::NO_CONTENT {
            if self.location.is_some() {
                "deleted"
            } else {
                "unchanged"
            }
        } else if self.note.as_deref() == Some(UNCHANGED) || self.version.is_none() {
            "unchanged"
        } else {
            "updated"
        }
    }

    /// The `Bundle.entry.response` of a transaction-response or batch-response.
    pub fn response(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// `Bundle.entry.response`, serialized straight from the outcome (a Bundle of a thousand
/// entries is written without building a JSON tree first).
impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("status", &status_line(self.status))?;
        if let Some(location) = &self.location {
            m.serialize_entry("location", location)?;
        }
        if let Some(v) = self.version {
            m.serialize_entry("etag", &format!("W/\"{v}\""))?;
        }
        if let Some(e) = &self.error {
            m.serialize_entry("outcome", &e.outcome())?;
        } else if let Some(note) = &self.note {
            m.serialize_entry(
                "outcome",
                &Informational {
                    resource_type: "OperationOutcome",
                    issue: [Issue {
                        severity: "information",
                        code: "informational",
                        diagnostics: note,
                    }],
                },
            )?;
        }
        m.end()
    }
}

#[derive(serde::Serialize)]
struct Informational<'a> {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    issue: [Issue<'a>; 1],
}

#[derive(serde::Serialize)]
struct Issue<'a> {
    severity: &'static str,
    code: &'static str,
    diagnostics: &'a str,
}

fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

/// The note of a delivery that changed nothing.
pub const UNCHANGED: &str = "unchanged: this version was already stored";
