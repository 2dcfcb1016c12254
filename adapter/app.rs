//! Building the application from config: the database, mappings, keys, the routes, and the
//! listeners. `Application::build` binds (port 0 in tests); `run_until_stopped` serves until
//! SIGTERM or Ctrl-C and then drains.

use crate::clock::Clock;
use crate::config::{AdminListen, Config};
use crate::error::{ApiError, ApiResult, Reason};
use crate::mapping::Mappings;
use crate::store::Db;
use crate::{admin, auth, ingest, portal, serve};
use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use secrecy::ExposeSecret;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What every handler shares.
pub struct Inner {
    pub config: Config,
    pub db: Db,
    pub clock: Clock,
    pub mappings: Mappings,
    pub tokens: auth::TokenKeys,
    /// The serialized CapabilityStatement (it depends only on config and mappings).
    pub capability: Vec<u8>,
    /// The access decision's facts, while no write has made them stale.
    pub facts: crate::access::facts::FactsCache,
    /// The request limits of `[limits]` (R16).
    pub limits: auth::Limits,
    /// The sources this process pulls from.
    pub pullers: crate::pull::Pullers,
    /// Delivers approved messages and correction requests to the record systems.
    pub outbox: crate::outbox::Outbox,
    /// When `/metrics` last read its gauges from the store (monotonic µs).
    pub scraped: tokio::sync::Mutex<Option<i64>>,
    /// Writes the audit trail.
    pub auditor: crate::audit::Auditor,
    /// The JWKS of clients that publish theirs (`jwks_uri`).
    pub jwks: auth::jwks::JwksCache,
}

/// The shared state, cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Connects, migrates and loads everything the handlers need.
    pub async fn new(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let mappings = Mappings::load(config.mappings.dir.as_deref(), &config.embargo.default)
            .map_err(|problems| {
                anyhow::anyhow!(
                    "mappings are not valid:\n{}",
                    problems
                        .iter()
                        .map(|p| format!("  {p}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?;
        let db = Db::connect_with(
            config.database.url.expose_secret(),
            config.database.max_connections,
            Some(config.database.statement_timeout),
        )
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                redact_url(config.database.url.expose_secret())
            )
        })?;
        db.migrate().await.context("cannot apply migrations")?;
        db.analyze()
            .await
            .context("cannot update the planner's statistics")?;
        let tokens = auth::TokenKeys::load(&config.auth)?;
        for client in &config.clients {
            if let crate::config::ClientAuth::ClientSecret { .. } = client.auth {
                tracing::warn!(
                    client = %client.id,
                    "this client authenticates with a shared secret (auth = \"client_secret\"): \
                     for development; in production use private_key_jwt (docs/api.md)"
                );
            }
        }
        let capability = serde_json::to_vec(&serve::metadata::capability_statement(
            &config.organization.name,
            &config.server.public_base_url,
            &mappings.sections,
            &crate::time::instant(clock.now()),
        ))?;
        let limits = auth::Limits::new(&config.limits);
        let pullers = crate::pull::Pullers::new(&config, &clock)?;
        let outbox = crate::outbox::Outbox::new(&config, &clock)?;
        crate::metrics::handle();
        let auditor = crate::audit::Auditor::start(db.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the audit trail: {e}"))?;
        if !config.audit.enabled {
            tracing::warn!(
                "audit.enabled = false: no audit trail is written (NEN 7513 requires one); \
                 for measuring what it costs only, never in production"
            );
            // The gap is in the chain: the last record before it says auditing stopped.
            auditor
                .write(crate::store::audit::Stored {
                    at: crate::time::to_micros(clock.wall()),
                    action: "audit off".into(),
                    route: "sluis serve".into(),
                    method: "START".into(),
                    detail: Some(
                        "audit.enabled = false: nothing is recorded until a restart with it on"
                            .into(),
                    ),
                    status: 200,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("cannot record that auditing is off: {e}"))?;
        }
        let state = Self(Arc::new(Inner {
            config,
            db,
            clock,
            mappings,
            tokens,
            capability,
            facts: Default::default(),
            limits,
            pullers,
            outbox,
            scraped: Default::default(),
            auditor,
            jwks: auth::jwks::JwksCache::new()?,
        }));
        let completed = crate::messages::moderation::complete_approvals(&state).await?;
        if completed > 0 {
            tracing::info!(completed, "approvals a stop cut short are completed");
        }
        if let Some(n) = crate::release::recompute::after_rule_change(&state).await? {
            tracing::info!(
                rescheduled = n,
                "rules changed since the last start: release moments of waiting entries recomputed"
            );
        }
        Ok(state)
    }
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn not_found() -> ApiError {
    ApiError::no_endpoint()
}

async fn method_not_allowed() -> ApiError {
    crate::audit::nowhere();
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        Reason::NotFound,
        "this endpoint does not take that method",
    )
}

/// `GET /fhir/Communication`: searched as every type is (the route exists for its `POST`).
async fn communications(
    state: axum::extract::State<AppState>,
    user: auth::PortalUser,
    raw: axum::extract::RawQuery,
) -> ApiResult<Response> {
    serve::read::search(
        state,
        user,
        axum::extract::Path("Communication".into()),
        raw,
    )
    .await
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match state.db.is_migrated().await {
        Ok(true) => "ready".into_response(),
        Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, "migrations pending").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response(),
    }
}

fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/auth/token", post(auth::token::token))
        .route(
            "/.well-known/smart-configuration",
            get(auth::token::smart_configuration),
        )
        .route(
            "/fhir/.well-known/smart-configuration",
            get(auth::token::smart_configuration),
        )
        .route("/fhir/metadata", get(serve::metadata::metadata))
        .route("/fhir/_history", get(serve::history::history))
        .route("/fhir/Consent", get(serve::consent::search))
        .route("/fhir/Consent/{id}", get(serve::consent::read))
        .route("/fhir/AuditEvent", get(crate::audit::view::search))
        .route("/fhir/AuditEvent/{id}", get(crate::audit::view::read))
        .route(
            "/fhir/Communication",
            get(communications).post(crate::messages::post::post),
        )
        .route("/fhir/Communication/{id}", get(crate::messages::post::read))
        .route(
            "/fhir/Task",
            get(crate::messages::requests::search).post(crate::messages::requests::post),
        )
        .route("/fhir/Task/{id}", get(crate::messages::requests::read))
        .route("/fhir/{type}", get(serve::read::generic_search))
        .route("/fhir/{type}/{id}", get(serve::read::generic_read))
        .route("/portal/link", post(portal::link))
        .route("/portal/terms", post(portal::terms))
        .route("/portal/me", get(portal::me))
        .route(
            "/portal/invitations",
            get(portal::grants::invitations).post(portal::grants::invite),
        )
        .route(
            "/portal/invitations/{id}",
            axum::routing::delete(portal::grants::uninvite),
        )
        .route("/portal/grants", get(portal::grants::list))
        .route(
            "/portal/grants/{id}",
            axum::routing::patch(portal::grants::change).delete(portal::grants::revoke),
        )
        .route(
            "/portal/preferences",
            get(portal::preferences::get).put(portal::preferences::put),
        )
        .route("/ingest/{source}", post(ingest::http::post))
        .route("/ingest/{source}/$notify", post(ingest::http::notify))
        .route(
            "/ingest/{source}/{type}/{id}",
            put(ingest::http::put).delete(ingest::http::delete),
        )
}

fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/admin/activation-codes", post(admin::activation_code))
        .route("/admin/clock", get(admin::get_clock).put(admin::put_clock))
        .route("/admin/release", post(crate::release::actions::release))
        .route("/admin/hold", post(crate::release::actions::hold))
        .route("/admin/explain", get(admin::explain))
        .route("/admin/sources", get(admin::sources::sources))
        .route("/admin/audit", get(admin::audit::search))
        .route("/admin/audit/exposure", get(admin::audit::exposure))
        .route(
            "/admin/users/{client}/{user}/block",
            post(admin::accounts::block_user),
        )
        .route(
            "/admin/users/{client}/{user}/unblock",
            post(admin::accounts::unblock_user),
        )
        .route(
            "/admin/patients/{id}/block",
            post(admin::accounts::block_patient),
        )
        .route(
            "/admin/patients/{id}/unblock",
            post(admin::accounts::unblock_patient),
        )
        .route("/admin/links", get(admin::accounts::links))
        .route(
            "/admin/moderation",
            get(crate::messages::moderation::waiting),
        )
        .route(
            "/admin/moderation/{id}",
            get(crate::messages::moderation::one),
        )
        .route(
            "/admin/moderation/{id}/approve",
            post(crate::messages::moderation::approve),
        )
        .route(
            "/admin/moderation/{id}/reject",
            post(crate::messages::moderation::reject),
        )
        .route("/admin/requests", get(crate::messages::decide::open))
        .route("/admin/requests/{id}", get(crate::messages::decide::one))
        .route(
            "/admin/requests/{id}/decide",
            post(crate::messages::decide::decide),
        )
        .route(
            "/admin/links/{id}",
            axum::routing::delete(admin::accounts::end_link),
        )
}

fn finish(router: Router<AppState>, state: AppState) -> Router {
    let server = state.config.server.clone();
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::track,
        ))
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .with_state(state);
    crate::edge::layers(router, &server)
}

/// The whole HTTP surface on one router (admin included).
pub fn router(state: AppState) -> Router {
    finish(public_routes().merge(admin_routes()), state)
}

/// A bound, ready-to-run adapter.
pub struct Application {
    state: AppState,
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
}

impl Application {
    /// Builds the state and binds `server.listen`, and `server.admin_listen` unless that is
    /// `"public"`.
    pub async fn build(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let listen = config.server.listen;
        let admin_listen = match config.server.admin_listen {
            crate::config::AdminListen::Separate(a) => Some(a),
            crate::config::AdminListen::Public => None,
        };
        let state = AppState::new(config, clock).await?;
        Self::bind(state, listen, admin_listen).await
    }

    /// Binds an already built state.
    pub async fn bind(
        state: AppState,
        listen: SocketAddr,
        admin_listen: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let admin_listener = match admin_listen {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .with_context(|| format!("cannot listen on {a}"))?,
            ),
            None => None,
        };
        Ok(Self {
            state,
            listener,
            admin_listener,
        })
    }

    /// Serves an already bound listener: `/admin` on it too when `server.admin_listen` is
    /// `"public"`, else not at all.
    pub fn from_listener(state: AppState, listener: TcpListener) -> Self {
        Self {
            state,
            listener,
            admin_listener: None,
        }
    }

    pub fn local_addr(&self) -> ApiResult<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves (and pulls) until SIGTERM or Ctrl-C.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves and pulls until `stop` completes; then lets open requests finish and the
    /// pullers finish their page. Dropping this future stops everything where it is (as a
    /// crash would: a page being stored is rolled back).
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Application {
            state,
            listener,
            admin_listener,
        } = self;
        let state_for_stop = state.clone();
        let (stopping, stopped) = tokio::sync::watch::channel(false);
        let mut pullers = tokio::task::JoinSet::new();
        crate::pull::spawn(&state, &stopped, &mut pullers);
        crate::outbox::spawn(&state, &stopped, &mut pullers);
        pullers.spawn(heartbeat(state.clone(), stopped.clone()));
        let signal = async move {
            stop.await;
            let _ = stopping.send(true);
        };
        let when_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let limits = (
            state.config.server.header_timeout,
            state.config.server.max_connections,
        );
        let serving = async {
            match admin_listener {
                None => {
                    // `/admin` beside the rest only where the config says so.
                    let app = if state.config.server.admin_listen == AdminListen::Public {
                        router(state)
                    } else {
                        finish(public_routes(), state)
                    };
                    serve(listener, app, limits, when_stopped(stopped.clone())).await;
                }
                Some(admin) => {
                    let public = finish(public_routes(), state.clone());
                    let admin_app = finish(admin_routes(), state);
                    tokio::join!(
                        serve(listener, public, limits, when_stopped(stopped.clone())),
                        serve(admin, admin_app, limits, when_stopped(stopped.clone()))
                    );
                }
            }
        };
        tokio::join!(signal, serving);
        while pullers.join_next().await.is_some() {}
        if let Err(e) = state_for_stop.auditor.flush().await {
            tracing::error!(error = %e, "the audit journal keeps records the log did not take; the next start moves them");
        }
        Ok(())
    }
}

/// How often a process says it is alive (`store::processes`), and how long a silent one still
/// counts as alive.
const BEAT: std::time::Duration = std::time::Duration::from_secs(5);
const ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// Says every [`BEAT`] that this process is alive, and shares the request limits among the
/// processes alive; at a stop, takes this process off the list.
async fn heartbeat(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let id = state.pullers.holder.clone();
    while !*stop.borrow() {
        let now = crate::time::to_micros(state.clock.wall());
        let alive_since = now - ALIVE.as_micros() as i64;
        let forget_before = now - 3_600_000_000;
        match crate::store::processes::beat(&state.db, &id, now, alive_since, forget_before).await {
            Ok(n) => state
                .limits
                .set_processes(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => tracing::warn!(error = %e, "cannot write this process's heartbeat"),
        }
        tokio::select! {
            () = tokio::time::sleep(BEAT) => {}
            _ = stop.changed() => {}
        }
    }
    if let Err(e) = crate::store::processes::gone(&state.db, &id).await {
        tracing::warn!(error = %e, "cannot take this process off the list of processes");
    }
}

/// Accepts connections until `shutdown`, then lets the open ones finish. A connection that has
/// not sent a request's headers within `header_timeout` is closed (hyper's timer; axum's own
/// `serve` sets none, so half-sent headers held a connection for as long as the client liked),
/// and at most `max_connections` are open at once (more wait in the listen queue).
async fn serve(
    listener: TcpListener,
    app: Router,
    (header_timeout, max_connections): (std::time::Duration, usize),
    shutdown: impl std::future::Future<Output = ()>,
) {
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections));
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = stream;
        let _ = stream.set_nodelay(true);
        // The peer's address, for the audit record (`ConnectInfo`, as axum's own serve sets it).
        let service = hyper_util::service::TowerToHyperService::new(tower::Layer::layer(
            &axum::Extension(axum::extract::ConnectInfo(peer)),
            app.clone(),
        ));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://sluis:geheim@db/sluis"),
            "postgres://sluis:***@db/sluis"
        );
        assert_eq!(redact_url("sqlite://sluis.db"), "sqlite://sluis.db");
    }
}
