//! Delivering the outbox to the record systems (issue 23; R14, R15, R17): approved messages and
//! correction requests go to their source's `[sources.writeback]` until it accepts them.
//!
//! Exactly once in the record system: every item carries an identifier the record system
//! deduplicates on. A message is created with `If-None-Exist: identifier=…` (FHIR conditional
//! create); a request is looked up by identifier and created so, or updated with `If-Match` on
//! the version read (`deliver`). A retry after an unclear answer (a timeout, a 500 after
//! storing) finds what is there instead of adding it twice. Each item is claimed by one
//! process for a while (`store::outbox::claim`), tried again with backoff and jitter until it
//! is accepted, and marked delivered only in the database: a stop or crash at any point leaves
//! it to be tried again.
//!
//! `deliver` sends one item; this file is the loop per source.

mod deliver;

use crate::app::AppState;
use crate::config::{Config, Writeback};
use crate::pull::auth::SourceAuth;
use crate::store::outbox as store;
use crate::time::to_micros;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How often an idle loop looks for items that came due (or were put in by another process).
const TICK: Duration = Duration::from_secs(1);

/// One source's writeback endpoint.
pub struct Target {
    pub source: String,
    pub writeback: Writeback,
    http: reqwest::Client,
    auth: SourceAuth,
    /// Token requests that failed in a row (for their backoff).
    token_failures: AtomicU32,
}

/// The delivery side of the outbox, per process.
pub struct Outbox {
    /// This process, as claimer of items: a random id per start.
    pub holder: String,
    targets: Vec<Arc<Target>>,
    nudge: Arc<Notify>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("holder", &self.holder)
            .field("targets", &self.targets.len())
            .finish()
    }
}

impl Outbox {
    /// A target per source with `[sources.writeback]`. A signing key that cannot be read stops
    /// the start, as any other config error.
    pub fn new(config: &Config, clock: &crate::clock::Clock) -> anyhow::Result<Self> {
        let mut targets = Vec::new();
        for s in &config.sources {
            let Some(writeback) = &s.writeback else {
                continue;
            };
            let http = reqwest::Client::builder()
                .user_agent(concat!("sluis/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(10))
                .timeout(writeback.timeout)
                // A redirect could carry the token and the message elsewhere.
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            let auth = SourceAuth::new(
                writeback.auth.clone(),
                http.clone(),
                clock.clone(),
                writeback.timeout,
            )
            .map_err(|e| anyhow::anyhow!("source `{}` writeback: {e}", s.id))?;
            targets.push(Arc::new(Target {
                source: s.id.clone(),
                writeback: writeback.clone(),
                http,
                auth,
                token_failures: AtomicU32::new(0),
            }));
        }
        Ok(Self {
            holder: uuid::Uuid::new_v4().to_string(),
            targets,
            nudge: Arc::new(Notify::new()),
        })
    }

    /// Something was put in: deliver now rather than at the next tick.
    pub fn nudge(&self) {
        self.nudge.notify_waiters();
    }

    pub fn target(&self, source: &str) -> Option<&Arc<Target>> {
        self.targets.iter().find(|t| t.source == source)
    }
}

/// A loop per source with a writeback endpoint, until `stop` turns true. They run in
/// `tasks`, so that dropping it (a crash, in tests) stops them wherever they are.
pub fn spawn(state: &AppState, stop: &watch::Receiver<bool>, tasks: &mut tokio::task::JoinSet<()>) {
    for t in &state.outbox.targets {
        tasks.spawn(run(state.clone(), t.clone(), stop.clone()));
    }
}

async fn run(state: AppState, target: Arc<Target>, mut stop: watch::Receiver<bool>) {
    let nudge = state.outbox.nudge.clone();
    while !*stop.borrow() {
        // Registered before the round, so that a nudge during it is not missed.
        let nudged = nudge.notified();
        tokio::pin!(nudged);
        nudged.as_mut().enable();
        // A stop lets the item under way finish (each send is bounded by `timeout`).
        drain(&state, &target, &stop).await;
        tokio::select! {
            () = nudged => {}
            () = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => {}
        }
    }
    // What this process claimed and did not finish is for the others at once.
    if let Err(e) = store::unclaim(&state.db, &state.outbox.holder).await {
        tracing::warn!(source = %target.source, error = %e, "cannot give back outbox claims");
    }
}

/// Delivers every item of the source that is due, one at a time, oldest first. Each item is
/// claimed just before it is sent, with a token already in hand, so that the send (bounded by
/// `timeout`) ends before the claim (`lease`, longer than `timeout`) runs out: no other process
/// sends it meanwhile, and what is sent is the item's body as it stood when it was claimed.
async fn drain(state: &AppState, target: &Target, stop: &watch::Receiver<bool>) {
    while !*stop.borrow() {
        // Anything to send? Only then a token (fetching one can take up to `timeout`).
        let now = to_micros(state.clock.wall());
        match store::any_due(&state.db, &target.source, now).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(source = %target.source, error = %e, "cannot read the outbox");
                return;
            }
        }
        let bearer = match target.auth.bearer().await {
            Ok(b) => {
                target.token_failures.store(0, Ordering::Relaxed);
                b
            }
            Err(e) => {
                // Shown on every item it holds up, which wait with backoff as a failed send.
                let failures = target.token_failures.fetch_add(1, Ordering::Relaxed) + 1;
                let wait = crate::pull::fetch::jittered(
                    target.writeback.backoff,
                    target.writeback.max_backoff,
                    failures,
                );
                let error = format!("no token for the writeback endpoint: {e}");
                tracing::warn!(source = %target.source, retry_in_ms = wait.as_millis() as u64, error = %error, "items wait");
                let at = to_micros(state.clock.wall());
                if let Err(e) = store::all_failed(
                    &state.db,
                    &target.source,
                    &error,
                    at,
                    at + wait.as_micros() as i64,
                )
                .await
                {
                    tracing::warn!(source = %target.source, error = %e, "cannot record a token failure");
                }
                return;
            }
        };
        let now = to_micros(state.clock.wall());
        let until = now + target.writeback.lease.as_micros() as i64;
        let item = match store::claim(
            &state.db,
            &target.source,
            &state.outbox.holder,
            now,
            until,
            1,
        )
        .await
        {
            Ok(mut items) => match items.pop() {
                Some(item) => item,
                None => return,
            },
            Err(e) => {
                tracing::warn!(source = %target.source, error = %e, "cannot read the outbox");
                return;
            }
        };
        let result = deliver::send(target, &item, bearer.as_deref()).await;
        let at = to_micros(state.clock.wall());
        let recorded = match &result {
            Ok(location) => {
                store::delivered(
                    &state.db,
                    &item,
                    &state.outbox.holder,
                    location.as_deref(),
                    at,
                )
                .await
                .map(|marked| {
                    // Counted where the database says so: a body that changed meanwhile
                    // is sent again, and that send is the delivery.
                    if marked {
                        crate::metrics::outbox_delivered(&target.source, &item.resource_type);
                    }
                })
            }
            Err(error) => {
                crate::metrics::outbox_failed(&target.source, &item.resource_type);
                let attempt = u32::try_from(item.attempts).unwrap_or(u32::MAX);
                let wait = crate::pull::fetch::jittered(
                    target.writeback.backoff,
                    target.writeback.max_backoff,
                    attempt,
                );
                tracing::warn!(
                    source = %target.source,
                    item = %item.key,
                    attempt,
                    retry_in_ms = wait.as_millis() as u64,
                    error = %error,
                    "the record system did not take an outbox item; it is tried again"
                );
                store::failed(
                    &state.db,
                    &item,
                    &state.outbox.holder,
                    error,
                    at,
                    at + wait.as_micros() as i64,
                )
                .await
            }
        };
        if let Err(e) = recorded {
            // The claim runs out and the item is tried again: the record system's
            // idempotency key keeps that from making a second copy.
            tracing::warn!(source = %target.source, item = %item.key, error = %e, "cannot record an outbox delivery");
        }
    }
}
