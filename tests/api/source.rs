//! A record system for the pull tests: a small FHIR server on 127.0.0.1 that keeps every
//! version of its resources, answers `{type}?_lastUpdated=gt…&_sort=_lastUpdated&_count=` with
//! offset paging over the live data (as many servers do), `{type}/_history?_since=`, and a
//! token endpoint, and that can be told to fail: 5xx, 429 with `Retry-After`, slow answers,
//! pages cut off, tokens that expire.

#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the next request to the FHIR API gets instead of its answer.
#[derive(Debug, Clone)]
pub enum Fault {
    Status(u16),
    /// 429 with `Retry-After: n`.
    TooMany(u64),
    /// The answer after this long (longer than the adapter's timeout).
    Slow(Duration),
    /// Half the page, then the connection breaks.
    CutOff,
    /// Half the page as if it were all of it (the JSON ends in the middle).
    Truncated,
    /// Every token issued so far stops working (the answer is 401).
    ExpireTokens,
    /// This body with 200, instead of the page (a source that misbehaves).
    Body(Vec<u8>),
    /// The same with this `Date` header (a source whose clock is off).
    Dated(Vec<u8>, String),
    /// A write is stored, and then answered with this status (an unclear answer).
    AfterStore(u16),
    /// Nothing: the request is answered as usual (to aim the faults after it at later ones).
    Pass,
}

/// What the next request to the token endpoint gets instead of its answer.
#[derive(Debug, Clone)]
pub enum TokenFault {
    /// No answer at all (the connection stays open).
    Hang,
    /// This JSON, with 200; an `access_token` in it is accepted by the API afterwards.
    Answer(Value),
}

/// How the token endpoint checks its callers.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Secret {
        client_id: String,
        secret: String,
    },
    /// A client assertion signed with the key whose public half this is.
    Jwt {
        client_id: String,
        public_pem: Vec<u8>,
        alg: jsonwebtoken::Algorithm,
        kid: String,
    },
}

#[derive(Debug, Clone)]
struct Version {
    at: DateTime<Utc>,
    /// `None`: deleted.
    body: Option<Value>,
}

#[derive(Default)]
struct World {
    resources: BTreeMap<(String, String), Vec<Version>>,
    faults: VecDeque<Fault>,
    /// Every request to the FHIR API answered with this status.
    down: Option<u16>,
    auth: Option<Auth>,
    tokens: HashSet<String>,
    /// Every token ever issued, expired or not.
    issued: Vec<String>,
    token_requests: usize,
    /// Each FHIR request: when it came and its path and query.
    requests: Vec<(Instant, String)>,
    in_flight: usize,
    max_in_flight: usize,
    /// How long each FHIR answer takes.
    delay: Duration,
    /// Next links relative to the base (`Observation?…`) rather than absolute.
    relative_links: bool,
    token_faults: VecDeque<TokenFault>,
    /// Writes (create and update) that reached the API, answered or not.
    writes: usize,
    next_id: usize,
    /// The status the write under way answers after storing (`Fault::AfterStore`).
    after_store: Option<u16>,
}

/// The running record system.
#[derive(Clone)]
pub struct RecordSystem {
    world: Arc<Mutex<World>>,
    /// `http://127.0.0.1:port/fhir`.
    pub base: String,
    pub token_url: String,
}

impl RecordSystem {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let world: Arc<Mutex<World>> = Arc::default();
        let base = format!("http://{addr}/fhir");
        let app = Router::new()
            .route("/fhir/{type}", get(search).post(create).put(update))
            .route("/fhir/{type}/{id}", axum::routing::put(update_by_id))
            .route("/fhir/{type}/_history", get(history))
            .route("/token", post(token))
            .with_state((world.clone(), base.clone()));
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            world,
            base,
            token_url: format!("http://{addr}/token"),
        }
    }

    /// Stores `resources` (each with its `resourceType` and `id`), all with one `lastUpdated`.
    pub fn put_all(&self, resources: &[Value]) -> DateTime<Utc> {
        self.put_at(resources, now())
    }

    /// Stores `resources` stamped `at`: as a transaction the source committed late shows
    /// up with a moment before ones already served.
    pub fn put_at(&self, resources: &[Value], at: DateTime<Utc>) -> DateTime<Utc> {
        let mut w = self.world.lock().unwrap();
        for r in resources {
            let key = key_of(r);
            w.resources.entry(key).or_default().push(Version {
                at,
                body: Some(r.clone()),
            });
        }
        at
    }

    /// Deletes each `Type/id`, all at one moment.
    pub fn delete_all(&self, refs: &[&str]) {
        let at = now();
        let mut w = self.world.lock().unwrap();
        for r in refs {
            let (ty, id) = r.split_once('/').unwrap();
            w.resources
                .entry((ty.to_string(), id.to_string()))
                .or_default()
                .push(Version { at, body: None });
        }
    }

    /// What the source holds now: `Type/id` → resource.
    pub fn live(&self) -> BTreeMap<String, Value> {
        let w = self.world.lock().unwrap();
        w.resources
            .iter()
            .filter_map(|((ty, id), vs)| {
                vs.last()
                    .and_then(|v| v.body.clone())
                    .map(|b| (format!("{ty}/{id}"), b))
            })
            .collect()
    }

    /// Every `Type/id` the source ever held.
    pub fn ever(&self) -> Vec<String> {
        let w = self.world.lock().unwrap();
        w.resources
            .keys()
            .map(|(ty, id)| format!("{ty}/{id}"))
            .collect()
    }

    pub fn fail_next(&self, faults: &[Fault]) {
        self.world
            .lock()
            .unwrap()
            .faults
            .extend(faults.iter().cloned());
    }

    pub fn fail_token(&self, faults: &[TokenFault]) {
        self.world
            .lock()
            .unwrap()
            .token_faults
            .extend(faults.iter().cloned());
    }

    pub fn set_down(&self, status: Option<u16>) {
        self.world.lock().unwrap().down = status;
    }

    pub fn set_auth(&self, auth: Auth) {
        self.world.lock().unwrap().auth = Some(auth);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.world.lock().unwrap().delay = delay;
    }

    pub fn set_relative_links(&self, on: bool) {
        self.world.lock().unwrap().relative_links = on;
    }

    /// Every token the token endpoint gave out.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.world.lock().unwrap().issued.clone()
    }

    pub fn token_requests(&self) -> usize {
        self.world.lock().unwrap().token_requests
    }

    pub fn requests(&self) -> Vec<(Instant, String)> {
        self.world.lock().unwrap().requests.clone()
    }

    pub fn max_in_flight(&self) -> usize {
        self.world.lock().unwrap().max_in_flight
    }

    /// The live resources of `ty` whose identifier is `system|value`.
    pub fn with_identifier(&self, ty: &str, identifier: &str) -> Vec<Value> {
        let w = self.world.lock().unwrap();
        find(&w, ty, identifier)
            .into_iter()
            .filter_map(|id| {
                w.resources[&(ty.to_string(), id)]
                    .last()
                    .and_then(|v| v.body.clone())
            })
            .collect()
    }

    /// Writes (creates and updates) that reached the API.
    pub fn writes(&self) -> usize {
        self.world.lock().unwrap().writes
    }

    pub fn faults_left(&self) -> usize {
        self.world.lock().unwrap().faults.len()
    }
}

fn now() -> DateTime<Utc> {
    // Milliseconds, as most servers keep them.
    let n = Utc::now();
    DateTime::from_timestamp_millis(n.timestamp_millis()).unwrap()
}

fn key_of(r: &Value) -> (String, String) {
    (
        r["resourceType"].as_str().unwrap().to_string(),
        r["id"].as_str().unwrap().to_string(),
    )
}

fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Sets `meta.versionId` and `meta.lastUpdated`, keeping the rest of `meta`.
fn stamp(resource: &mut Value, version: &str, at: DateTime<Utc>) {
    if !resource["meta"].is_object() {
        resource["meta"] = json!({});
    }
    resource["meta"]["versionId"] = json!(version);
    resource["meta"]["lastUpdated"] = json!(instant(at));
}

type Shared = (Arc<Mutex<World>>, String);

/// Counts the request in, applies a fault or the delay, checks the token; `Err` is the answer.
async fn admit(
    world: &Arc<Mutex<World>>,
    headers: &HeaderMap,
    what: String,
) -> Result<(Guard, Option<bool>), Response> {
    let (fault, delay, down, token_ok) = {
        let mut w = world.lock().unwrap();
        w.requests.push((Instant::now(), what));
        w.in_flight += 1;
        w.max_in_flight = w.max_in_flight.max(w.in_flight);
        let fault = w.faults.pop_front();
        if matches!(fault, Some(Fault::ExpireTokens)) {
            w.tokens.clear();
        }
        if let Some(Fault::AfterStore(status)) = &fault {
            w.after_store = Some(*status);
        }
        let token_ok = match &w.auth {
            None | Some(Auth::None) => true,
            Some(_) => headers
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "))
                .is_some_and(|t| w.tokens.contains(t)),
        };
        (fault, w.delay, w.down, token_ok)
    };
    let guard = Guard(world.clone());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = down {
        return Err(StatusCode::from_u16(status).unwrap().into_response());
    }
    if !token_ok {
        return Err(StatusCode::UNAUTHORIZED.into_response());
    }
    match fault {
        Some(Fault::Status(s)) => Err(StatusCode::from_u16(s).unwrap().into_response()),
        Some(Fault::TooMany(secs)) => Err((
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
        )
            .into_response()),
        Some(Fault::Slow(d)) => {
            tokio::time::sleep(d).await;
            Ok((guard, None))
        }
        Some(Fault::CutOff) => Ok((guard, Some(true))),
        Some(Fault::Truncated) => Ok((guard, Some(false))),
        Some(Fault::ExpireTokens) => Err(StatusCode::UNAUTHORIZED.into_response()),
        Some(Fault::Body(bytes)) => Err((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/fhir+json")],
            bytes,
        )
            .into_response()),
        Some(Fault::AfterStore(_) | Fault::Pass) => Ok((guard, None)),
        Some(Fault::Dated(bytes, date)) => Err((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/fhir+json".to_string()),
                (header::DATE, date),
            ],
            bytes,
        )
            .into_response()),
        None => Ok((guard, None)),
    }
}

/// Counts a request out when dropped.
struct Guard(Arc<Mutex<World>>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut w) = self.0.lock() {
            w.in_flight = w.in_flight.saturating_sub(1);
        }
    }
}

/// The page as an answer, whole or cut off as the fault said.
fn answer(page: Value, cut: Option<bool>) -> Response {
    let bytes = serde_json::to_vec(&page).unwrap();
    let half = bytes[..bytes.len() / 2].to_vec();
    let mut response = match cut {
        None => Response::new(Body::from(bytes)),
        Some(false) => Response::new(Body::from(half)),
        Some(true) => Response::new(Body::new(Broken(Some(half.into())))),
    };
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/fhir+json".parse().unwrap(),
    );
    response
}

/// A body that gives its first half and then breaks, as a connection that drops.
struct Broken(Option<axum::body::Bytes>);

impl http_body::Body for Broken {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(Some(match self.0.take() {
            Some(half) => Ok(http_body::Frame::data(half)),
            None => Err(std::io::Error::other("connection broke")),
        }))
    }
}

fn parse_moment(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn page_links(
    base: &str,
    relative: bool,
    path: &str,
    params: &HashMap<String, String>,
    offset: usize,
    count: usize,
    total: usize,
) -> Vec<Value> {
    let mut links = vec![];
    if offset + count < total {
        let mut query: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| *k != "_offset")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        query.sort();
        query.push(("_offset".into(), (offset + count).to_string()));
        let q: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        let url = if relative {
            format!("{path}?{q}")
        } else {
            format!("{base}/{path}?{q}")
        };
        links.push(json!({"relation": "next", "url": url}));
    }
    links
}

async fn search(
    State((world, base)): State<Shared>,
    Path(ty): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (guard, cut) = match admit(&world, &headers, format!("{ty}?{params:?}")).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let count: usize = params.get("_count").map_or(50, |c| c.parse().unwrap());
    let offset: usize = params.get("_offset").map_or(0, |c| c.parse().unwrap());
    let after = params
        .get("_lastUpdated")
        .map(|v| parse_moment(v.strip_prefix("gt").expect("only gt is asked for")));
    if let Some(identifier) = params.get("identifier") {
        // A lookup by identifier (writeback): the copies with their versions.
        let w = world.lock().unwrap();
        let entries: Vec<Value> = find(&w, &ty, identifier)
            .into_iter()
            .filter_map(|id| {
                w.resources[&(ty.clone(), id)]
                    .last()
                    .and_then(|v| v.body.clone())
            })
            .map(|r| json!({"resource": r}))
            .collect();
        drop(w);
        drop(guard);
        return answer(
            json!({"resourceType": "Bundle", "type": "searchset", "entry": entries}),
            cut,
        );
    }
    let (matches, relative) = {
        let w = world.lock().unwrap();
        let mut matches: Vec<(DateTime<Utc>, String, Value)> = w
            .resources
            .iter()
            .filter(|((t, _), _)| *t == ty)
            .filter_map(|((_, id), vs)| {
                let last = vs.last()?;
                let body = last.body.clone()?;
                Some((last.at, id.clone(), body))
            })
            .filter(|(at, _, _)| after.is_none_or(|a| *at > a))
            .collect();
        if params.contains_key("_sort") {
            matches.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        } else {
            // Unsorted: by id, whatever the moments (the newest may come first).
            matches.sort_by(|a, b| b.1.cmp(&a.1));
        }
        (matches, w.relative_links)
    };
    let total = matches.len();
    let entries: Vec<Value> = matches
        .into_iter()
        .skip(offset)
        .take(count)
        .map(|(at, _, mut body)| {
            stamp(&mut body, "1", at);
            json!({"fullUrl": format!("{base}/{ty}/{}", body["id"].as_str().unwrap()),
                   "resource": body, "search": {"mode": "match"}})
        })
        .collect();
    let page = json!({
        "resourceType": "Bundle", "type": "searchset", "total": total,
        "link": page_links(&base, relative, &ty, &params, offset, count, total),
        "entry": entries,
    });
    let r = answer(page, cut);
    drop(guard);
    r
}

async fn history(
    State((world, base)): State<Shared>,
    Path(ty): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (guard, cut) = match admit(&world, &headers, format!("{ty}/_history?{params:?}")).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let count: usize = params.get("_count").map_or(50, |c| c.parse().unwrap());
    let offset: usize = params.get("_offset").map_or(0, |c| c.parse().unwrap());
    let since = params.get("_since").map(|v| parse_moment(v));
    let (mut all, relative) = {
        let w = world.lock().unwrap();
        let mut all: Vec<(DateTime<Utc>, String, usize, Option<Value>)> = vec![];
        for ((t, id), vs) in &w.resources {
            if *t != ty {
                continue;
            }
            for (n, v) in vs.iter().enumerate() {
                if since.is_none_or(|s| v.at >= s) {
                    all.push((v.at, id.clone(), n + 1, v.body.clone()));
                }
            }
        }
        (all, w.relative_links)
    };
    // Newest first.
    all.sort_by(|a, b| (b.0, b.2, &b.1).cmp(&(a.0, a.2, &a.1)));
    let total = all.len();
    let entries: Vec<Value> = all
        .into_iter()
        .skip(offset)
        .take(count)
        .map(|(at, id, n, body)| match body {
            Some(mut b) => {
                stamp(&mut b, &n.to_string(), at);
                json!({"fullUrl": format!("{base}/{ty}/{id}"), "resource": b,
                       "request": {"method": "PUT", "url": format!("{ty}/{id}")},
                       "response": {"status": "200", "lastModified": instant(at)}})
            }
            None => json!({"request": {"method": "DELETE", "url": format!("{ty}/{id}")},
                           "response": {"status": "204", "lastModified": instant(at)}}),
        })
        .collect();
    let path = format!("{ty}/_history");
    let page = json!({
        "resourceType": "Bundle", "type": "history", "total": total,
        "link": page_links(&base, relative, &path, &params, offset, count, total),
        "entry": entries,
    });
    let r = answer(page, cut);
    drop(guard);
    r
}

async fn token(
    State((world, _)): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let fault = {
        let mut w = world.lock().unwrap();
        w.token_requests += 1;
        w.token_faults.pop_front()
    };
    match fault {
        Some(TokenFault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Some(TokenFault::Answer(body)) => {
            if let Some(t) = body["access_token"].as_str() {
                world.lock().unwrap().tokens.insert(t.to_string());
            }
            return axum::Json(body).into_response();
        }
        None => {}
    }
    let mut w = world.lock().unwrap();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    let ok = match w.auth.clone().unwrap_or(Auth::None) {
        Auth::None => true,
        Auth::Secret { client_id, secret } => {
            use base64::Engine;
            let expected =
                base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));
            headers
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                == Some(format!("Basic {expected}").as_str())
        }
        Auth::Jwt {
            client_id,
            public_pem,
            alg,
            kid,
        } => {
            let assertion = form.get("client_assertion").cloned().unwrap_or_default();
            let key = match alg {
                jsonwebtoken::Algorithm::ES384 => {
                    jsonwebtoken::DecodingKey::from_ec_pem(&public_pem).unwrap()
                }
                _ => jsonwebtoken::DecodingKey::from_rsa_pem(&public_pem).unwrap(),
            };
            let mut validation = jsonwebtoken::Validation::new(alg);
            validation.set_audience(&[format!(
                "http://{}/token",
                headers[header::HOST].to_str().unwrap()
            )]);
            validation.set_issuer(&[client_id.as_str()]);
            let header_ok = jsonwebtoken::decode_header(&assertion)
                .is_ok_and(|h| h.kid.as_deref() == Some(kid.as_str()));
            form.get("client_assertion_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                && header_ok
                && jsonwebtoken::decode::<Value>(&assertion, &key, &validation)
                    .is_ok_and(|t| t.claims["sub"] == client_id.as_str())
        }
    };
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let t = uuid::Uuid::new_v4().to_string();
    w.tokens.insert(t.clone());
    w.issued.push(t.clone());
    axum::Json(json!({"access_token": t, "token_type": "bearer", "expires_in": 300}))
        .into_response()
}

/// The ids of live resources of `ty` with identifier `system|value`.
fn find(w: &World, ty: &str, identifier: &str) -> Vec<String> {
    let (system, value) = identifier.split_once('|').unwrap_or(("", identifier));
    w.resources
        .iter()
        .filter(|((t, _), _)| t == ty)
        .filter(|(_, vs)| {
            vs.last()
                .and_then(|v| v.body.as_ref())
                .and_then(|b| b["identifier"].as_array())
                .is_some_and(|ids| {
                    ids.iter()
                        .any(|i| i["system"] == system && i["value"] == value)
                })
        })
        .map(|((_, id), _)| id.clone())
        .collect()
}

/// `identifier=system|value` from a query string (percent-encoded or not).
fn identifier_of(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "identifier")
        .map(|(_, v)| v.into_owned())
}

/// Stores `body` as `ty/id` (a new id when `None`); the answer, or the status a fault set.
fn store_write(
    w: &mut World,
    base: &str,
    ty: &str,
    id: Option<String>,
    mut body: Value,
) -> Response {
    let created = id.is_none();
    let id = id.unwrap_or_else(|| {
        w.next_id += 1;
        format!("rs-{}", w.next_id)
    });
    body["id"] = json!(id);
    let at = now();
    let versions = w.resources.entry((ty.to_string(), id.clone())).or_default();
    stamp(&mut body, &(versions.len() + 1).to_string(), at);
    versions.push(Version {
        at,
        body: Some(body),
    });
    if let Some(status) = w.after_store.take() {
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        status,
        [(header::LOCATION, format!("{base}/{ty}/{id}/_history/1"))],
    )
        .into_response()
}

/// `POST /fhir/{type}`, honouring `If-None-Exist: identifier=…` (a conditional create).
async fn create(
    State((world, base)): State<Shared>,
    Path(ty): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (guard, _) = match admit(&world, &headers, format!("POST {ty}")).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let mut w = world.lock().unwrap();
    w.writes += 1;
    let Ok(resource) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if let Some(condition) = headers.get("if-none-exist").and_then(|v| v.to_str().ok()) {
        let identifier = identifier_of(condition).unwrap();
        let found = find(&w, &ty, &identifier);
        match found.len() {
            0 => {}
            1 => {
                w.after_store = None;
                return (
                    StatusCode::OK,
                    [(
                        header::LOCATION,
                        format!("{base}/{ty}/{}/_history/1", found[0]),
                    )],
                )
                    .into_response();
            }
            _ => return StatusCode::PRECONDITION_FAILED.into_response(),
        }
    }
    let r = store_write(&mut w, &base, &ty, None, resource);
    drop(w);
    drop(guard);
    r
}

/// `PUT /fhir/{type}?identifier=…` (a conditional update: creates when none matches).
async fn update(
    State((world, base)): State<Shared>,
    Path(ty): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (guard, _) = match admit(&world, &headers, format!("PUT {ty}")).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let mut w = world.lock().unwrap();
    w.writes += 1;
    let Ok(resource) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(identifier) = query.as_deref().and_then(identifier_of) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let found = find(&w, &ty, &identifier);
    if found.len() > 1 {
        return StatusCode::PRECONDITION_FAILED.into_response();
    }
    let r = store_write(&mut w, &base, &ty, found.into_iter().next(), resource);
    drop(w);
    drop(guard);
    r
}

/// `PUT /fhir/{type}/{id}`, honouring `If-Match: W/"n"` (412 when the version moved on).
async fn update_by_id(
    State((world, base)): State<Shared>,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (guard, _) = match admit(&world, &headers, format!("PUT {ty}/{id}")).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let mut w = world.lock().unwrap();
    w.writes += 1;
    let Ok(resource) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let current = w
        .resources
        .get(&(ty.clone(), id.clone()))
        .map_or(0, Vec::len);
    if let Some(wanted) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
        && wanted != format!("W/\"{current}\"")
    {
        w.after_store = None;
        return StatusCode::PRECONDITION_FAILED.into_response();
    }
    let r = store_write(&mut w, &base, &ty, Some(id), resource);
    drop(w);
    drop(guard);
    r
}

impl RecordSystem {
    /// Every version of the resources of `ty` with identifier `system|value`, oldest first.
    pub fn history_of(&self, ty: &str, identifier: &str) -> Vec<Value> {
        let w = self.world.lock().unwrap();
        find(&w, ty, identifier)
            .into_iter()
            .flat_map(|id| {
                w.resources[&(ty.to_string(), id)]
                    .iter()
                    .filter_map(|v| v.body.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}
