//! Request bodies: the media type, the size limit and JSON parsing, with OperationOutcomes.
//!
//! Every endpoint that takes a body reads it through [`json_body`], so a wrong content type
//! is a 415, an oversized body a 413 and broken JSON a 400, all with a reason code.

use crate::error::{ApiError, ApiResult, Reason};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;

/// Whether the request says its body is JSON (`application/fhir+json`, `application/json`,
/// with or without parameters). A missing content type is accepted as JSON.
fn is_json(headers: &HeaderMap) -> Result<(), String> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let media = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/fhir+json" | "application/json" | "application/json+fhir" => Ok(()),
        _ => Err(format!(
            "content type `{text}` is not accepted: send application/fhir+json"
        )),
    }
}

/// Reads at most `limit` bytes of body. A body that stops arriving for `server.body_timeout`
/// is a 408; one that breaks off, a 400.
pub async fn read_limited(body: Body, limit: usize) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
        while let Some(c) = cause {
            if c.is::<BodyDeadline>() {
                return ApiError::timeout(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive within server.body_timeout",
                );
            }
            if c.is::<http_body_util::LengthLimitError>() {
                break;
            }
            cause = c.source();
        }
        if cause.is_none() {
            return ApiError::invalid("the request body could not be read to its end");
        }
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::InvalidResource,
            format!("body larger than limits.max_body_bytes ({limit} bytes)"),
        )
    })
}

/// Checks the media type, reads the body within the limit and parses it as JSON.
pub async fn json_body(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Value> {
    let bytes = json_bytes(headers, body, limit).await?;
    if bytes.len() < LARGE {
        return parse_json(&bytes);
    }
    // A Bundle takes milliseconds to parse: off the async threads, so that it does not hold
    // up the requests (and the write transactions) waiting to run on them.
    tokio::task::spawn_blocking(move || parse_json(&bytes))
        .await
        .map_err(|e| ApiError::internal(e.into()))?
}

/// Checks the media type and reads the body within the limit, for JSON parsed by the caller.
pub async fn json_bytes(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Bytes> {
    if let Err(message) = is_json(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reason::InvalidResource,
            message,
        ));
    }
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && length > limit
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::InvalidResource,
            format!("body of {length} bytes is larger than limits.max_body_bytes ({limit})"),
        ));
    }
    read_limited(body, limit).await
}

/// Bodies at least this large are parsed on a blocking thread.
const LARGE: usize = 16 * 1024;

/// Parses JSON, naming line and column of a syntax error.
pub fn parse_json(bytes: &[u8]) -> ApiResult<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "the body is empty: send a FHIR JSON resource",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| malformed(&e))
}

/// The answer to a body that is not JSON, naming where.
pub fn malformed(e: &serde_json::Error) -> ApiError {
    ApiError::invalid(format!(
        "malformed JSON at line {}, column {}: {}",
        e.line(),
        e.column(),
        e
    ))
}

/// A small JSON body, deserialized into `T` (what [`Json`] does).
async fn small_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<T> {
    let value = json_body(headers, body, SMALL).await?;
    serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("invalid body: {e}")))
}

/// A small JSON body of the `/portal` and `/admin` calls, deserialized into `T`: the extractor
/// every handler that takes such a body uses, so that a wrong content type (415), a body over
/// 64 KB (413), broken JSON or a wrong field (400) is an OperationOutcome like every error.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, _: &S) -> ApiResult<Self> {
        let (parts, body) = request.into_parts();
        small_json(&parts.headers, body).await.map(Json)
    }
}

/// [`Json`] for a body that may be left out entirely (then `T::default()`).
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Default> axum::extract::FromRequest<S>
    for OptionalJson<T>
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, _: &S) -> ApiResult<Self> {
        let (parts, body) = request.into_parts();
        let bytes = json_bytes(&parts.headers, body, SMALL).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        let value = parse_json(&bytes)?;
        serde_json::from_value(value)
            .map(OptionalJson)
            .map_err(|e| ApiError::invalid(format!("invalid body: {e}")))
    }
}

/// An optional instant of a body (`"until": "2026-12-01T09:00:00Z"`), as stored.
pub fn instant_field(name: &str, text: Option<&str>) -> ApiResult<Option<crate::time::Micros>> {
    text.map(|t| {
        crate::time::parse_instant(t)
            .map(crate::time::to_micros)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "`{name}` {t} is not an instant such as 2026-12-01T09:00:00Z"
                ))
            })
    })
    .transpose()
}

/// The size limit of the small bodies of `/portal` and `/admin`.
const SMALL: usize = 64 * 1024;

/// The parameters of a small query string; a parameter not in `allowed`, or given twice, is a
/// 400 `unknown-parameter`.
pub fn query_map(
    raw: Option<&str>,
    allowed: &[&str],
) -> ApiResult<std::collections::HashMap<String, String>> {
    let mut out = std::collections::HashMap::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            return Err(ApiError::unknown_parameter(format!(
                "`{k}` is not a parameter here; use {}",
                allowed.join(", ")
            )));
        }
        if out.insert(k.clone().into_owned(), v.into_owned()).is_some() {
            return Err(ApiError::unknown_parameter(format!("`{k}` is given twice")));
        }
    }
    Ok(out)
}

/// The query parameter `key` of [`query_map`] as a whole number above 0, if given; 400
/// naming it otherwise.
pub fn positive_number(
    q: &std::collections::HashMap<String, String>,
    key: &str,
) -> ApiResult<Option<i64>> {
    q.get(key)
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ApiError::invalid(format!("{key}: `{v}` is not a number above 0")))
        })
        .transpose()
}

/// The page size of a list: `_count` of [`query_map`] (a whole number above 0), `default`
/// when absent, at most `max`.
pub fn page_count(
    q: &std::collections::HashMap<String, String>,
    default: i64,
    max: i64,
) -> ApiResult<i64> {
    Ok(positive_number(q, "_count")?.unwrap_or(default).min(max))
}

/// A page read one row past its size (`count + 1` asked for): cut to `count`; the page's last
/// row when more follow (the next page's cursor), `None` when this is the last page.
pub fn cut_page<T>(rows: &mut Vec<T>, count: i64) -> Option<&T> {
    let count = usize::try_from(count).unwrap_or(0);
    if rows.len() <= count {
        return None;
    }
    rows.truncate(count);
    rows.last()
}

/// A request body that fails with [`BodyDeadline`] once `server.body_timeout` has passed since
/// the request arrived, however the bytes trickle in (a byte every few seconds keeps an idle
/// timeout from firing; this does not).
pub struct DeadlineBody {
    inner: Body,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    pub fn new(inner: Body, limit: std::time::Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

/// The error of a body that did not arrive in time.
#[derive(Debug)]
pub struct BodyDeadline;

impl std::fmt::Display for BodyDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive within server.body_timeout")
    }
}

impl std::error::Error for BodyDeadline {}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.deadline.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Some(Err(Box::new(BodyDeadline))));
        }
        std::pin::Pin::new(&mut this.inner)
            .poll_frame(cx)
            .map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
