//! Pulling from record systems (contract §2 `[sources.pull]`, §3 `$notify`): for each source
//! with `[sources.pull]` one loop that, while this process holds the source's lease, polls
//! every configured resource type for what changed since its cursor, and (with `history`) the
//! deletions since then. Each page goes through ingest like a pushed batch, and the cursor
//! moves in the transaction that stores the page.
//!
//! `auth` gets tokens, `fetch` fetches one page with retries, `page` reads a page into ingest
//! entries; this file is the loop: leases, cursors, nudges and stopping.

pub(crate) mod auth;
pub(crate) mod fetch;
mod page;

use crate::app::AppState;
use crate::config::{Config, Pull};
use crate::ingest::pulled;
use crate::store::pull as store;
use crate::time::{Micros, from_micros, instant, to_micros};
use fetch::Fetcher;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Why a poll of a type stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("token: {0}")]
    Auth(String),
    #[error("{0}")]
    Http(String),
    #[error("the source answered HTTP {0}")]
    Status(u16),
    #[error("the page is not usable: {0}")]
    Page(String),
    #[error("storing the page failed: {0}")]
    Store(String),
    #[error("another process took over this source")]
    LeaseLost,
    #[error("stopped")]
    Stopped,
}

/// Whether a source's pull key (with `private_key_jwt`) can be read and used (`sluis check`).
pub fn check_key(auth: &crate::config::PullAuth) -> anyhow::Result<()> {
    auth::signing_key(auth).map(|_| ())
}

/// A source's `Date` further than this from our clock is logged (µs).
const SKEW: Micros = 300_000_000;

/// The most pages one poll of a type reads: a source whose `next` links never end stops here
/// (a sorted source continues from its cursor in the next round).
const MAX_PAGES: usize = 50_000;

/// Nudges start a round no sooner than this after the last one ended.
const MIN_GAP: Duration = Duration::from_millis(500);

/// How often an idle loop looks for nudges from other processes (and whether its interval is up).
const TICK: Duration = Duration::from_millis(500);

/// One source that is pulled.
pub struct Puller {
    pub id: String,
    pub pull: Pull,
    fetcher: Fetcher,
    nudge: Notify,
    /// Polls of all types finished by this process since it started.
    rounds: AtomicU64,
    /// Whether this process holds the lease now.
    holding: AtomicBool,
    /// Set when renewing the lease failed: the round stops at the next page.
    lost: AtomicBool,
}

impl Puller {
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    pub fn holding(&self) -> bool {
        self.holding.load(Ordering::Relaxed)
    }
}

/// Every pulled source of this process.
pub struct Pullers {
    /// This process, as lease holder: a random id per start.
    pub holder: String,
    sources: Vec<Arc<Puller>>,
}

impl std::fmt::Debug for Pullers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pullers")
            .field("holder", &self.holder)
            .field("sources", &self.sources.len())
            .finish()
    }
}

impl Pullers {
    /// A puller per source with `[sources.pull]`. A signing key that cannot be read stops the
    /// start, as any other config error.
    pub fn new(config: &Config, clock: &crate::clock::Clock) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("sluis/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // A redirect could carry the token elsewhere, and an OAuth2 token endpoint must
            // not redirect: both are errors.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut sources = Vec::new();
        for s in &config.sources {
            let Some(pull) = &s.pull else { continue };
            let auth =
                auth::SourceAuth::new(pull.auth.clone(), http.clone(), clock.clone(), pull.timeout)
                    .map_err(|e| anyhow::anyhow!("source `{}`: {e}", s.id))?;
            sources.push(Arc::new(Puller {
                id: s.id.clone(),
                pull: pull.clone(),
                fetcher: Fetcher {
                    http: http.clone(),
                    auth,
                    source: s.id.clone(),
                    max_retries: pull.max_retries,
                    timeout: pull.timeout,
                    max_bytes: config.limits.max_body_bytes,
                },
                nudge: Notify::new(),
                rounds: AtomicU64::new(0),
                holding: AtomicBool::new(false),
                lost: AtomicBool::new(false),
            }));
        }
        Ok(Self {
            holder: uuid::Uuid::new_v4().to_string(),
            sources,
        })
    }

    pub fn get(&self, source: &str) -> Option<&Arc<Puller>> {
        self.sources.iter().find(|p| p.id == source)
    }

    pub fn all(&self) -> &[Arc<Puller>] {
        &self.sources
    }

    /// Asks for a pull of `source` now: at once when this process holds its lease, else
    /// through the database, where the holder looks every half second.
    pub async fn nudge(&self, state: &AppState, source: &str) -> bool {
        let Some(p) = self.get(source) else {
            return false;
        };
        p.nudge.notify_one();
        if !p.holding() {
            let at = to_micros(state.clock.wall());
            if let Err(e) = store::nudge(&state.db, source, at).await {
                tracing::warn!(source, error = %e, "cannot pass the nudge on to the holder");
            }
        }
        true
    }
}

/// The loops of every pulled source, until `stop` turns true. They run in `tasks`, so that
/// dropping it (a crash, in tests) stops them wherever they are.
pub fn spawn(state: &AppState, stop: &watch::Receiver<bool>, tasks: &mut tokio::task::JoinSet<()>) {
    for p in state.pullers.all() {
        tasks.spawn(run(state.clone(), p.clone(), stop.clone()));
    }
}

/// How often a lease is renewed by its holder, and tried for by the others: a third of its
/// length (`[sources.pull] lease`).
fn renew_every(p: &Puller) -> Duration {
    p.pull.lease / 3
}

async fn take_lease(state: &AppState, p: &Puller) -> Result<bool, crate::store::Error> {
    let now = to_micros(state.clock.wall());
    let until = now + p.pull.lease.as_micros() as i64;
    let mut tx = state.db.begin().await?;
    let held = store::lease(&mut tx, &p.id, &state.pullers.holder, now, until).await?;
    tx.commit().await?;
    Ok(held)
}

/// One source's loop: poll when the interval is up or when nudged, while holding the lease;
/// renew the lease (or try for it) a third of the way through it.
async fn run(state: AppState, p: Arc<Puller>, mut stop: watch::Receiver<bool>) {
    let mut due = true;
    let mut last_nudge: Option<Micros> = None;
    let mut last_round = tokio::time::Instant::now();
    let mut tried: Option<tokio::time::Instant> = None;
    let mut ended: Option<tokio::time::Instant> = None;
    while !*stop.borrow() {
        if due || tried.is_none_or(|t| t.elapsed() >= renew_every(&p)) {
            let held = match take_lease(&state, &p).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(source = %p.id, error = %e, "cannot take or renew the pull lease");
                    false
                }
            };
            tried = Some(tokio::time::Instant::now());
            if held != p.holding() {
                tracing::info!(source = %p.id, held, "pull lease");
                // Taken over: pull at once (the one before may have stopped mid-way).
                due |= held;
            }
            p.holding.store(held, Ordering::Relaxed);
        }
        if due && !p.holding() {
            // Another process pulls: it is tried for again a third of a lease on.
            last_round = tokio::time::Instant::now();
        }
        if due && p.holding() {
            p.lost.store(false, Ordering::Relaxed);
            last_round = tokio::time::Instant::now();
            if with_heartbeat(&state, &p, guarded_round(&state, &p, &stop)).await {
                p.rounds.fetch_add(1, Ordering::Relaxed);
            }
            ended = Some(tokio::time::Instant::now());
            tried = Some(tokio::time::Instant::now());
        }
        due = false;
        tokio::select! {
            () = p.nudge.notified() => {
                // Nudges come as often as a source likes: rounds at most every MIN_GAP.
                if let Some(since) = ended.map(|e| e.elapsed()) && since < MIN_GAP {
                    tokio::time::sleep(MIN_GAP - since).await;
                }
                due = true;
            }
            () = tokio::time::sleep(TICK) => {
                if last_round.elapsed() >= p.pull.interval {
                    due = true;
                } else if p.holding() {
                    // A nudge that reached another process.
                    match store::nudged(&state.db, &p.id, &state.pullers.holder).await {
                        Ok(n) if n.is_some() && n != last_nudge => {
                            due = true;
                            last_nudge = n;
                        }
                        _ => {}
                    }
                }
            }
            _ = stop.changed() => {}
        }
    }
    if p.holding() {
        if let Err(e) = store::release_lease(&state.db, &p.id, &state.pullers.holder).await {
            tracing::warn!(source = %p.id, error = %e, "cannot give up the pull lease");
        }
        p.holding.store(false, Ordering::Relaxed);
    }
}

/// Runs `round`, renewing the lease meanwhile; whether the round ended well.
async fn with_heartbeat(
    state: &AppState,
    p: &Puller,
    round: impl std::future::Future<Output = bool>,
) -> bool {
    tokio::pin!(round);
    let every = renew_every(p);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            done = &mut round => return done,
            _ = tick.tick() => {
                if !matches!(take_lease(state, p).await, Ok(true)) {
                    tracing::warn!(source = %p.id, "lost the pull lease; stopping after this page");
                    p.lost.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// `round` in a task of its own, so that a panic in it (a bug) ends that round and not the
/// source's loop. Dropping this future (a stop, or a crash in tests) aborts the task.
async fn guarded_round(state: &AppState, p: &Arc<Puller>, stop: &watch::Receiver<bool>) -> bool {
    struct AbortOnDrop(tokio::task::JoinHandle<bool>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let (state, inner, stop) = (state.clone(), p.clone(), stop.clone());
    let mut task = AbortOnDrop(tokio::spawn(
        async move { round(&state, &inner, &stop).await },
    ));
    match (&mut task.0).await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(source = %p.id, error = %e, "a pull round ended unexpectedly; the next starts at the interval");
            false
        }
    }
}

/// One poll of every type (then their deletions); whether all of it went well.
async fn round(state: &AppState, p: &Puller, stop: &watch::Receiver<bool>) -> bool {
    let mut ok = true;
    let mut started = Vec::new();
    for ty in &p.pull.resource_types {
        match poll(state, p, ty, Kind::Search, stop).await {
            Ok(s) => started.push((ty, s)),
            Err(PullError::Stopped | PullError::LeaseLost) => return false,
            Err(_) => ok = false,
        }
    }
    if p.pull.history {
        for (ty, search_started) in started {
            match poll(state, p, ty, Kind::History(search_started), stop).await {
                Ok(_) => {}
                Err(PullError::Stopped | PullError::LeaseLost) => return false,
                Err(_) => ok = false,
            }
        }
    }
    ok
}

/// What a poll reads.
#[derive(Clone, Copy)]
enum Kind {
    /// `{type}?_lastUpdated=gt…`: what is new or changed.
    Search,
    /// `{type}/_history?_since=…`: what was deleted; with the moment the type's search began
    /// (where the deletions are read from the first time).
    History(Option<Micros>),
}

/// A URL as remembered by a poll (a hash: a source's URLs may be long).
fn url_hash(url: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<rustc_hash::FxHasher>::default().hash_one(url)
}

/// The first URL of a poll.
fn first_url(pull: &Pull, resource_type: &str, since: Option<Micros>, kind: Kind) -> String {
    let base = &pull.base_url;
    let count = pull.page_size;
    let at = |m: Micros| instant(from_micros(m));
    match kind {
        Kind::Search => {
            let mut url = format!("{base}/{resource_type}?_count={count}");
            if let Some(s) = since {
                url.push_str(&format!("&_lastUpdated=gt{}", at(s)));
            }
            if pull.sort {
                url.push_str("&_sort=_lastUpdated");
            }
            url
        }
        Kind::History(_) => {
            let since = since
                .map(|s| format!("&_since={}", at(s)))
                .unwrap_or_default();
            format!("{base}/{resource_type}/_history?_count={count}{since}")
        }
    }
}

/// Polls one type (or its deletions) from its cursor to the last page. Answers the moment
/// the source gave for its first page (its `Date`), where the deletions start the first time.
async fn poll(
    state: &AppState,
    p: &Puller,
    resource_type: &str,
    kind: Kind,
    stop: &watch::Receiver<bool>,
) -> Result<Option<Micros>, PullError> {
    let key = match kind {
        Kind::Search => resource_type.to_string(),
        Kind::History(_) => format!("{resource_type}/_history"),
    };
    let result = poll_pages(state, p, resource_type, &key, kind, stop).await;
    if let Err((e, retries)) = &result
        && !matches!(e, PullError::Stopped | PullError::LeaseLost)
    {
        crate::metrics::pull_failed(&p.id, &key, *retries);
        let at = to_micros(state.clock.wall());
        let message = e.to_string();
        if let Err(se) =
            store::failed(&state.db, &p.id, &key, &message, i64::from(*retries), at).await
        {
            tracing::warn!(source = %p.id, resource_type = %key, error = %se, "cannot record a pull failure");
        }
    }
    result.map_err(|(e, _)| e)
}

async fn poll_pages(
    state: &AppState,
    p: &Puller,
    resource_type: &str,
    key: &str,
    kind: Kind,
    stop: &watch::Receiver<bool>,
) -> Result<Option<Micros>, (PullError, u32)> {
    let store_error = |e: crate::store::Error| (PullError::Store(e.to_string()), 0);
    let current = store::states(&state.db, Some(&p.id))
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|s| s.resource_type == key);
    let cursor = current.as_ref().and_then(|s| s.cursor_at);
    let overlap = p.pull.overlap.as_micros() as i64;
    if let (Kind::History(search_started), None) = (kind, cursor) {
        // The first time: deletions count from when the type's first search began (what was
        // deleted before that was never taken in).
        let Some(start) = search_started else {
            return Ok(None);
        };
        let taken = store::PageTaken {
            source: &p.id,
            holder: &state.pullers.holder,
            resource_type: key,
            cursor_at: Some(start),
            pending_at: None,
            finished: true,
            resources: 0,
            retries: 0,
            at: to_micros(state.clock.wall()),
        };
        store::page_taken(&state.db, &taken)
            .await
            .map_err(store_error)?;
        return Ok(None);
    }
    let since = cursor.map(|c| c - overlap);
    let mut url = first_url(&p.pull, resource_type, since, kind);
    let mut visited: HashSet<u64> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut started: Option<Micros> = None;
    loop {
        if *stop.borrow() {
            return Err((PullError::Stopped, 0));
        }
        if p.lost.load(Ordering::Relaxed) {
            return Err((PullError::LeaseLost, 0));
        }
        if !visited.insert(url_hash(&url)) {
            return Err((
                PullError::Page(format!(
                    "the next link leads back to a page already read: {url}"
                )),
                0,
            ));
        }
        if visited.len() > MAX_PAGES {
            return Err((
                PullError::Page(format!(
                    "more than {MAX_PAGES} pages in one poll; the rest waits for the next round"
                )),
                0,
            ));
        }
        let mut stop_rx = stop.clone();
        let fetched = tokio::select! {
            f = p.fetcher.get(&url, key, &p.lost) => f,
            _ = stop_rx.changed() => return Err((PullError::Stopped, 0)),
        };
        let fetched = match fetched {
            Ok(f) => f,
            Err((e, r)) => return Err((e, r)),
        };
        started = started
            .or(fetched.date)
            .or_else(|| Some(to_micros(state.clock.wall())));
        let parsed = match kind {
            Kind::Search => page::search(&fetched.body, resource_type, &p.pull.base_url),
            Kind::History(_) => {
                page::history(&fetched.body, resource_type, &p.pull.base_url, &mut seen)
            }
        };
        let page = match parsed {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(source = %p.id, resource_type = %key, url = %url, error = %e, "pull failed");
                return Err((e, fetched.retries));
            }
        };
        // The cursor goes no further than the source's "now" (its `Date`) nor ours: carried
        // into the future it would skip every change stamped before it. What this leaves out
        // (a source whose clock runs ahead) is asked for again next time, and known then.
        let wall = to_micros(state.clock.wall());
        let newest = page
            .newest
            .map(|n| n.min(wall).min(fetched.date.unwrap_or(wall)));
        if let Some(date) = fetched.date
            && (date - wall).abs() > SKEW
            && visited.len() == 1
        {
            tracing::warn!(source = %p.id, resource_type = %key, source_date = %instant(from_micros(date)), "the source's clock differs from ours by more than five minutes");
        }
        let finished = page.next.is_none();
        // A sorted source's pages come oldest first: each page moves the cursor. Otherwise
        // (and for history, newest first) the cursor moves only when the poll is complete.
        let in_order = matches!(kind, Kind::Search) && p.pull.sort;
        let taken = store::PageTaken {
            source: &p.id,
            holder: &state.pullers.holder,
            resource_type: key,
            cursor_at: if in_order { newest } else { None },
            pending_at: if in_order { None } else { newest },
            finished,
            resources: page.entries.len() as i64,
            retries: i64::from(fetched.retries),
            at: to_micros(state.clock.wall()),
        };
        let count = page.entries.len();
        let outcomes = match pulled::take_page(state, page.entries, &taken).await {
            Ok(pulled::Taken::Stored(o)) => o,
            Ok(pulled::Taken::LeaseLost) => return Err((PullError::LeaseLost, 0)),
            Err(e) => {
                // The cause, for the admin's eyes (`/admin/sources`) and the log.
                let message = e
                    .cause
                    .as_ref()
                    .map_or(e.message.clone(), |c| format!("{c:#}"));
                tracing::warn!(source = %p.id, resource_type = %key, url = %url, error = %message, "cannot store a pulled page");
                return Err((PullError::Store(message), fetched.retries));
            }
        };
        crate::metrics::page_pulled(&p.id, key, count, fetched.retries);
        // The page in the audit trail, as a batch (a failure to write it is logged: the page
        // is stored, and no one was shown anything).
        let record = crate::store::audit::Stored {
            at: to_micros(state.clock.wall()),
            action: "pull".into(),
            route: key.to_string(),
            method: "GET".into(),
            query: Some(url.chars().take(2000).collect()),
            client_id: Some(p.id.clone()),
            detail: Some(crate::audit::batch_detail(&outcomes)),
            status: 200,
            ..Default::default()
        };
        if state.config.audit.enabled
            && let Err(e) = state.auditor.write(record).await
        {
            tracing::error!(source = %p.id, resource_type = %key, error = %e, "cannot write the audit record of a pulled page");
        }
        tracing::debug!(source = %p.id, resource_type = %key, resources = count, refused = outcomes.iter().filter(|o| o.error.is_some()).count(), "page taken in");
        match page.next {
            Some(next) => url = next,
            None => return Ok(started),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_urls_ask_from_the_cursor_minus_the_overlap() {
        let pull = Pull {
            base_url: "https://ehr.test/fhir".into(),
            resource_types: vec!["Observation".into()],
            interval: Duration::from_secs(60),
            page_size: 50,
            overlap: Duration::from_secs(60),
            sort: true,
            history: true,
            max_retries: 3,
            timeout: Duration::from_secs(5),
            lease: Duration::from_secs(60),
            auth: crate::config::PullAuth::None,
        };
        let at = to_micros(crate::time::parse_instant("2026-01-01T10:00:00Z").unwrap());
        assert_eq!(
            first_url(&pull, "Observation", Some(at), Kind::Search),
            "https://ehr.test/fhir/Observation?_count=50&_lastUpdated=gt2026-01-01T10:00:00Z&_sort=_lastUpdated"
        );
        assert_eq!(
            first_url(&pull, "Observation", None, Kind::Search),
            "https://ehr.test/fhir/Observation?_count=50&_sort=_lastUpdated"
        );
        assert_eq!(
            first_url(&pull, "Observation", Some(at), Kind::History(None)),
            "https://ehr.test/fhir/Observation/_history?_count=50&_since=2026-01-01T10:00:00Z"
        );
    }
}
