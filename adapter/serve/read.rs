//! `GET /fhir/{type}/{id}` and `GET /fhir/{type}?…`: read and search within what the user may
//! see now.

use super::bundle::{Entry, SearchSet, Viewer};
use crate::access::{self, Decision};
use crate::app::AppState;
use crate::auth::{Interaction, PortalUser, Scopes};
use crate::error::{ApiError, ApiResult};
use crate::fhir::definitions;
use crate::fhir::path;
use crate::search::params::{self, Counts, Cursor, Query, SortKey, Total};
use crate::search::sql::{self, Hit};
use crate::time::{instant, to_micros};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use std::collections::BTreeMap;

fn pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn known_type(resource_type: &str) -> ApiResult<()> {
    if definitions::is_resource_type(resource_type) {
        Ok(())
    } else {
        crate::audit::nowhere();
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            crate::error::Reason::NotFound,
            format!("`{resource_type}` is not an R4 resource type"),
        ))
    }
}

/// A search must not find or sort by what the user's role does not get to see (e.g. a member
/// searching Patients by BSN, or Observations by a redacted date): a parameter of any type
/// whose path a redaction rule removes, wholly or in part, for one of the user's roles is
/// refused, so that counts and order tell nothing of the removed values.
fn redacted_params(state: &AppState, q: &Query, decision: &Decision) -> ApiResult<()> {
    let roles: std::collections::BTreeSet<_> = decision.allowed.iter().map(|a| a.role).collect();
    for role in roles {
        let removed = state
            .mappings
            .redaction
            .removed_paths(role, &q.resource_type);
        if removed.is_empty() {
            continue;
        }
        for name in &q.used {
            let Some(def) =
                crate::search::supported_param(&q.resource_type, name).and_then(|s| s.def)
            else {
                continue;
            };
            let touches = def
                .paths
                .iter()
                .any(|p| removed.iter().any(|r| overlaps(p.segments, r)));
            if touches {
                return Err(ApiError::unknown_parameter(format!(
                    "`{name}` is not available to {} users: the element is not shown to them",
                    role.as_str()
                )));
            }
        }
    }
    Ok(())
}

/// Whether a search parameter's path and a removed path share their leading elements (one
/// lies within the other). `effective[x]` is `effective` of any type: `effectiveDateTime`.
fn overlaps(param: &[&str], removed: &[&str]) -> bool {
    param.iter().zip(removed).all(|(p, r)| {
        let base = p.strip_suffix("[x]").unwrap_or(p);
        *r == *p
            || *r == base
            || (p.ends_with("[x]")
                && r.strip_prefix(base)
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase())))
    }) && !param.is_empty()
        && !removed.is_empty()
}

/// Types with routes of their own (`/fhir/AuditEvent`, `/fhir/Consent/{id}`, …): the generic
/// routes reach them only through a name sent encoded (`/fhir/%41uditEvent`), and answer as
/// for a path that is not there, rather than serve them by the rules of stored resources.
fn own_route(resource_type: &str, search: bool) -> ApiResult<()> {
    // `GET /fhir/Communication` is this search, called by its own route.
    let own: &[&str] = if search {
        &["AuditEvent", "Consent", "Task"]
    } else {
        &["AuditEvent", "Consent", "Communication", "Task"]
    };
    if own.contains(&resource_type) {
        crate::audit::nowhere();
        return Err(ApiError::no_endpoint());
    }
    Ok(())
}

/// `GET /fhir/{type}`: [`search`], but not of a type with routes of its own.
pub async fn generic_search(
    state: State<AppState>,
    user: PortalUser,
    Path(resource_type): Path<String>,
    raw: RawQuery,
) -> ApiResult<Response> {
    own_route(&resource_type, true)?;
    search(state, user, Path(resource_type), raw).await
}

/// `GET /fhir/{type}/{id}`: [`read`], but not of a type with routes of its own.
pub async fn generic_read(
    state: State<AppState>,
    user: PortalUser,
    Path((resource_type, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    own_route(&resource_type, false)?;
    read(state, user, Path((resource_type, id))).await
}

/// `GET /fhir/{type}`.
pub async fn search(
    State(state): State<AppState>,
    user: PortalUser,
    Path(resource_type): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    known_type(&resource_type)?;
    user.scopes.require(&resource_type, Interaction::Search)?;
    let decision = access::decide_for(&state, &user).await?;
    let counts = Counts {
        default: state.config.limits.default_count,
        max: state.config.limits.max_count,
    };
    let q = params::parse(&resource_type, &pairs(raw.as_deref()), counts)?;
    access::refuse_named(&decision, q.patients.iter().flatten().map(String::as_str))?;
    redacted_params(&state, &q, &decision)?;
    let scope = sql::Scope::new(&decision, &state.mappings);
    let viewer = Viewer {
        decision: &decision,
        redaction: &state.mappings.redaction,
    };
    let now = state.clock.now();
    let now_micros = to_micros(now);
    let carried = q.cursor.and_then(|c| c.total);
    let first_page = q.cursor.is_none();
    let mut total = None;
    if q.summary_count || (q.total == Total::Accurate && carried.is_none() && !first_page) {
        total = Some(sql::count(&state.db, &q, scope, now_micros).await?);
    } else if q.total == Total::Accurate {
        total = carried;
    }
    let (matches, includes, next_cursor) = if q.summary_count {
        (Vec::new(), Vec::new(), None)
    } else {
        let mut hits = if first_page && q.total == Total::Accurate {
            let (hits, counted) = sql::page_with_total(&state.db, &q, scope, now_micros).await?;
            total = Some(counted);
            hits
        } else {
            sql::page(&state.db, &q, scope, now_micros).await?
        };
        let next = if hits.len() > q.count as usize {
            hits.truncate(q.count as usize);
            hits.last().map(|h| {
                Cursor {
                    key: match q.sort.key {
                        SortKey::LastUpdated => h.release_at.unwrap_or_default(),
                        SortKey::Date => h.sort_date,
                    },
                    version_id: h.id,
                    total,
                }
                .encode()
            })
        } else {
            None
        };
        let matches: Vec<Entry> = hits
            .iter()
            .zip(viewer.texts(&hits))
            .map(|(h, text)| Entry {
                resource_type: h.resource_type.clone(),
                id: h.fhir_id.clone(),
                text,
            })
            .collect();
        let includes = includes(&state, &q, &matches, viewer, &user.scopes, now_micros).await?;
        (matches, includes, next)
    };
    let bundle = SearchSet {
        base: &state.config.server.public_base_url,
        query: &q,
        total,
        matches,
        includes,
        next_cursor,
        now: instant(now),
    }
    .render();
    Ok(crate::error::fhir_raw(StatusCode::OK, bundle.into_bytes()))
}

/// The resources `_include` names, among those the user may see and of types the token's
/// scope may read.
async fn includes(
    state: &AppState,
    q: &Query,
    matches: &[Entry],
    viewer: Viewer<'_>,
    scopes: &Scopes,
    now: i64,
) -> ApiResult<Vec<Entry>> {
    if q.includes.is_empty() {
        return Ok(Vec::new());
    }
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Only the elements the include paths start from are parsed, not the whole resource.
    let firsts: Vec<&str> = q
        .includes
        .iter()
        .flat_map(|i| i.paths.iter())
        .filter_map(|p| p.segments.first().map(|s| s.trim_end_matches("[x]")))
        .collect();
    let parsed: Vec<Value> = matches
        .iter()
        .filter_map(|m| {
            let top: std::collections::HashMap<&str, &serde_json::value::RawValue> =
                serde_json::from_str(&m.text).ok()?;
            let mut partial = serde_json::Map::new();
            partial.insert(
                "resourceType".into(),
                Value::String(m.resource_type.clone()),
            );
            for (key, raw) in top {
                let wanted = firsts.iter().any(|f| {
                    key.strip_prefix(f).is_some_and(|rest| {
                        rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_uppercase())
                    })
                });
                if wanted && let Ok(v) = serde_json::from_str::<Value>(raw.get()) {
                    partial.insert(key.to_string(), v);
                }
            }
            Some(Value::Object(partial))
        })
        .collect();
    for m in &parsed {
        for include in &q.includes {
            for p in include.paths {
                for node in path::evaluate(m, p) {
                    let Some((ty, id)) = node
                        .value
                        .get("reference")
                        .and_then(Value::as_str)
                        .and_then(crate::fhir::reference::parse_reference)
                    else {
                        continue;
                    };
                    if include.target.as_deref().is_some_and(|t| t != ty) {
                        continue;
                    }
                    let ids = wanted.entry(ty.to_string()).or_default();
                    if !ids.iter().any(|x| x == id) {
                        ids.push(id.to_string());
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let already: Vec<(String, String)> = matches
        .iter()
        .map(|m| (m.resource_type.clone(), m.id.clone()))
        .collect();
    for (ty, ids) in wanted {
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| !already.iter().any(|(t, i)| *t == ty && i == id))
            .collect();
        if ids.is_empty() || !scopes.allows(&ty, Interaction::Read) {
            continue;
        }
        let scope = sql::Scope::new(viewer.decision, &state.mappings);
        let hits: Vec<Hit> = sql::included(&state.db, &ty, &ids, scope, now).await?;
        out.extend(hits.iter().zip(viewer.texts(&hits)).map(|(h, text)| Entry {
            resource_type: h.resource_type.clone(),
            id: h.fhir_id.clone(),
            text,
        }));
    }
    Ok(out)
}

/// `GET /fhir/{type}/{id}`.
pub async fn read(
    State(state): State<AppState>,
    user: PortalUser,
    Path((resource_type, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    known_type(&resource_type)?;
    user.scopes.require(&resource_type, Interaction::Read)?;
    if !crate::fhir::reference::is_fhir_id(&id) {
        return Err(ApiError::not_found());
    }
    let decision = access::decide_for(&state, &user).await?;
    let counts = Counts { default: 1, max: 1 };
    let q = params::parse(&resource_type, &[("_id".into(), id)], counts)?;
    let now = to_micros(state.clock.now());
    let hit = sql::page(
        &state.db,
        &q,
        sql::Scope::new(&decision, &state.mappings),
        now,
    )
    .await?
    .into_iter()
    .next()
    .ok_or_else(ApiError::not_found)?;
    let viewer = Viewer {
        decision: &decision,
        redaction: &state.mappings.redaction,
    };
    let mut response = crate::error::fhir_raw(StatusCode::OK, viewer.text(&hit).into_bytes());
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("W/\"{}\"", hit.version_no)) {
        response.headers_mut().insert(axum::http::header::ETAG, v);
    }
    Ok(response)
}
