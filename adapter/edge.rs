//! What every request passes through at the edge, before and after its handler: a request id
//! (taken from `X-Request-Id` when the caller sent a sound one, else made) that the response
//! echoes and the request's tracing span carries, with `X-Correlation-Id` and `X-Trace-Id`
//! (contract §3); the body deadline (408) and the request deadline (503), both answered with
//! an OperationOutcome; and `Cache-Control: no-store` on every answer.

use crate::config::Server;
use crate::error::ApiError;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use std::time::Duration;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Headers taken from the request and echoed when present (Koppeltaal 2.0).
const ECHOED: [HeaderName; 2] = [
    HeaderName::from_static("x-correlation-id"),
    HeaderName::from_static("x-trace-id"),
];

/// The caller's address: the connection's peer; when the peer is one of
/// `server.trusted_proxies`, the nearest address in `X-Forwarded-For` that is not one of them
/// (what a proxy appends is to be believed, what the caller wrote there is not).
pub fn remote_address(
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
    trusted: &[std::net::IpAddr],
) -> Option<std::net::IpAddr> {
    let peer = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?
        .0
        .ip();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<std::net::IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => nearest = ip,
            Ok(ip) => return Some(ip),
            // Not an address: what lies beyond it cannot be believed.
            Err(_) => return Some(nearest),
        }
    }
    Some(nearest)
}

/// A refusal made by the framework rather than the adapter (a path segment that is not
/// UTF-8, say) comes as plain text: it becomes an OperationOutcome like every other, with the
/// same status and the framework's words.
async fn plain_rejection(response: Response) -> Response {
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/plain"));
    if !response.status().is_client_error() || !plain {
        return response;
    }
    let status = response.status();
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let reason = if status == StatusCode::NOT_FOUND {
        crate::error::Reason::NotFound
    } else {
        crate::error::Reason::InvalidResource
    };
    ApiError::new(status, reason, text).into_response()
}

/// The layers around `router`, outermost last.
pub fn layers(router: Router, server: &Server) -> Router {
    let (request_timeout, body_timeout) = (server.request_timeout, server.body_timeout);
    router
        .layer(middleware::map_response(plain_rejection))
        .layer(middleware::from_fn(move |req, next| {
            deadline(request_timeout, req, next)
        }))
        .layer(middleware::map_request(
            move |request: Request| async move {
                request
                    .map(|b| axum::body::Body::new(crate::body::DeadlineBody::new(b, body_timeout)))
            },
        ))
        .layer(middleware::map_response(no_store))
        .layer(middleware::from_fn(echo))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let id = request
                    .extensions()
                    .get::<RequestId>()
                    .and_then(|id| id.header_value().to_str().ok())
                    .unwrap_or("");
                let span = tracing::info_span!(
                    "request",
                    request_id = %id,
                    correlation_id = tracing::field::Empty,
                    trace_id = tracing::field::Empty,
                    method = %request.method(),
                    path = %request.uri().path(),
                );
                // Sent ones only, and only sound ones (`drop_unsound_ids` ran first).
                for (field, name) in [("correlation_id", &ECHOED[0]), ("trace_id", &ECHOED[1])] {
                    if let Some(v) = request.headers().get(name).and_then(|v| v.to_str().ok()) {
                        span.record(field, tracing::field::display(v));
                    }
                }
                span
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::map_request(drop_unsound_ids))
}

/// Whether the request sent header `name` more than once (then it names no one id, credential
/// or person: a proxy in front may have read the other one).
pub fn repeated(
    headers: &axum::http::HeaderMap,
    name: impl axum::http::header::AsHeaderName,
) -> bool {
    headers.get_all(name).iter().nth(1).is_some()
}

/// Whether an id the caller sent may be taken: 1 to 128 of letters, digits and `-_.:`.
fn sound(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Ids a caller sent that are no fit for logs and echoes are dropped (a new request id is made).
async fn drop_unsound_ids(mut request: Request) -> Request {
    for name in std::iter::once(REQUEST_ID).chain(ECHOED) {
        if repeated(request.headers(), &name)
            || request.headers().get(&name).is_some_and(|v| !sound(v))
        {
            request.headers_mut().remove(&name);
        }
    }
    request
}

/// `X-Correlation-Id` and `X-Trace-Id`, echoed (and recorded with the request).
async fn echo(request: Request, next: Next) -> Response {
    let taken: Vec<(HeaderName, HeaderValue)> = ECHOED
        .iter()
        .filter_map(|name| Some((name.clone(), request.headers().get(name)?.clone())))
        .collect();
    for (name, value) in &taken {
        tracing::debug!(header = %name, value = ?value, "taken from the request");
    }
    let mut response = next.run(request).await;
    response.headers_mut().extend(taken);
    response
}

/// Every answer may hold client data, or tell whether some exists: no cache keeps it.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Set by the audit middleware (`audit::track`) on a request it records: it answers such a
/// request within the deadline itself and records that answer before it leaves, so the edge
/// waits for the record rather than answering past it.
#[derive(Debug, Clone, Default)]
pub struct Recorded(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Recorded {
    /// The request is recorded: its deadline is the audit middleware's.
    pub fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A request not answered within `server.request_timeout` gets a 503 OperationOutcome; the
/// handler is dropped (a write in progress rolls back). A request the audit trail records was
/// answered at the deadline by the audit middleware, whose record is being written: that
/// gets up to another `request_timeout` before the edge answers in its place.
async fn deadline(limit: Duration, mut request: Request, next: Next) -> Response {
    let recorded = Recorded::default();
    request.extensions_mut().insert(recorded.clone());
    let run = next.run(request);
    tokio::pin!(run);
    let late = || {
        ApiError::timeout(
            StatusCode::SERVICE_UNAVAILABLE,
            "the request was not answered within server.request_timeout",
        )
        .into_response()
    };
    match tokio::time::timeout(limit, &mut run).await {
        Ok(response) => response,
        Err(_) if recorded.is_set() => tokio::time::timeout(limit, run)
            .await
            .unwrap_or_else(|_| late()),
        Err(_) => late(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    fn server() -> Server {
        crate::config::Config::from_toml(
            "[admin]\ntoken = \"a-long-admin-token\"\n",
            "test.toml",
            std::iter::empty(),
        )
        .unwrap()
        .server
    }

    async fn call(headers: &[(&str, &str)]) -> Response {
        let app = layers(
            Router::new().route(
                "/",
                get(|| async {
                    tracing::info!("in the handler");
                    "ok"
                }),
            ),
            &server(),
        );
        let mut request = Request::builder().uri("/");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        app.oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn every_response_carries_a_request_id_and_echoes_the_callers_ids() {
        let r = call(&[
            ("x-request-id", "abc-123"),
            ("x-correlation-id", "corr-1"),
            ("x-trace-id", "trace.1"),
        ])
        .await;
        assert_eq!(r.headers()["x-request-id"], "abc-123");
        assert_eq!(r.headers()["x-correlation-id"], "corr-1");
        assert_eq!(r.headers()["x-trace-id"], "trace.1");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let made = call(&[]).await;
        let id = made.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 36, "{id}");
        assert!(made.headers().get("x-correlation-id").is_none());
        let unsound = call(&[("x-request-id", "a b\\c"), ("x-trace-id", "<script>")]).await;
        assert_ne!(unsound.headers()["x-request-id"], "a b\\c");
        assert!(unsound.headers().get("x-trace-id").is_none());
        let twice = call(&[
            ("x-request-id", "one"),
            ("x-request-id", "two"),
            ("x-trace-id", "t1"),
            ("x-trace-id", "t2"),
            ("x-correlation-id", "c1"),
        ])
        .await;
        let id = twice.headers()["x-request-id"].to_str().unwrap();
        assert!(id != "one" && id != "two", "{id}");
        assert!(twice.headers().get("x-trace-id").is_none());
        assert_eq!(twice.headers()["x-correlation-id"], "c1");
    }
}
