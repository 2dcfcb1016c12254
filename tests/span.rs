//! The request id is carried in the tracing span of the request (issue 19). Its own test
//! binary: it installs the process's tracing subscriber, which other tests must not share.

use axum::Router;
use axum::routing::get;
use tower::ServiceExt;

/// A writer the test reads back.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_request_id_is_in_the_requests_span() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let server = sluis::config::Config::from_toml(
        "[admin]\ntoken = \"a-long-admin-token\"\n",
        "test.toml",
        std::iter::empty(),
    )
    .unwrap()
    .server;
    let app = sluis::edge::layers(
        Router::new().route(
            "/",
            get(|| async {
                tracing::info!("in the handler");
                "ok"
            }),
        ),
        &server,
    );
    let request = axum::http::Request::builder()
        .uri("/")
        .header("x-request-id", "span-id-42")
        .header("x-correlation-id", "corr-7")
        .header("x-trace-id", "trace.7")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "span-id-42");
    let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("in the handler") && logged.contains("request_id=span-id-42"),
        "{logged}"
    );
    // All three trace headers are in the request's log lines (contract §3).
    let line = logged
        .lines()
        .find(|l| l.contains("in the handler"))
        .unwrap();
    assert!(
        line.contains("correlation_id=corr-7") && line.contains("trace_id=trace.7"),
        "{line}"
    );
}
