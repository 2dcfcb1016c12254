//! `GET /admin/sources`: how each source is doing. Per source whether it is pulled, who holds
//! its lease, and its versions held back and released; per pulled resource type the cursor,
//! the last success and error, the lag, and the pages, resources and retries so far; and the
//! outbox's delivery to its writeback endpoint (waiting, delivered, failing, the last error).

use crate::app::AppState;
use crate::auth::Admin;
use crate::error::{ApiResult, fhir_json};
use crate::store::pull as store;
use crate::time::{from_micros, instant, to_micros};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

/// `GET /admin/sources`.
pub async fn sources(State(state): State<AppState>, _admin: Admin) -> ApiResult<Response> {
    // Rounds are counted before the store is read: a round shown as finished has its pages in
    // what is read below (read the other way round, a round ending in between would show as
    // finished without its last pages).
    let rounds: Vec<(String, u64)> = state
        .pullers
        .all()
        .iter()
        .map(|p| (p.id.clone(), p.rounds()))
        .collect();
    let states = store::states(&state.db, None).await?;
    let leases = store::leases(&state.db).await?;
    let released = store::released(&state.db, to_micros(state.clock.now())).await?;
    let outbox = crate::store::outbox::states(&state.db).await?;
    let wall = to_micros(state.clock.wall());
    let at = |m: Option<i64>| m.map(|m| instant(from_micros(m)));
    let mut out = Vec::new();
    for source in &state.config.sources {
        let puller = state.pullers.get(&source.id);
        let types: Vec<Value> = states
            .iter()
            .filter(|s| s.source == source.id)
            .map(|s| {
                json!({
                    "resource_type": s.resource_type,
                    "cursor": at(s.cursor_at),
                    "last_success": at(s.last_success_at),
                    "last_error": s.last_error,
                    "last_error_at": at(s.last_error_at),
                    "lag_seconds": s.last_success_at.map(|t| (wall - t).max(0) / 1_000_000),
                    "pages": s.pages,
                    "resources": s.resources,
                    "retries": s.retries,
                    "errors": s.errors,
                })
            })
            .collect();
        let lease = leases.iter().find(|l| l.source == source.id).map(|l| {
            json!({
                "holder": l.holder,
                "this_process": l.holder == state.pullers.holder,
                "expires_at": instant(from_micros(l.expires_at)),
            })
        });
        let counts = released.iter().find(|r| r.source == source.id);
        let delivery = outbox
            .iter()
            .find(|o| o.source == source.id)
            .cloned()
            .unwrap_or_default();
        let last_error = if delivery.failing > 0 {
            crate::store::outbox::last_error(&state.db, &source.id).await?
        } else {
            None
        };
        let writeback = json!({
            "base_url": source.writeback.as_ref().map(|w| w.base_url.clone()),
            "configured": source.writeback.is_some(),
            "pending": delivery.pending,
            "delivered": delivery.delivered,
            "failing": delivery.failing,
            "oldest_pending_seconds": delivery.oldest_pending_at.map(|t| (wall - t).max(0) / 1_000_000),
            "last_delivered": at(delivery.last_delivered_at),
            "last_error": last_error,
            "last_error_at": at(delivery.last_error_at),
        });
        out.push(json!({
            "id": source.id,
            "pull": puller.map(|p| json!({
                "base_url": p.pull.base_url,
                "resource_types": p.pull.resource_types,
                "interval_seconds": p.pull.interval.as_secs(),
                "history": p.pull.history,
                "rounds_here": rounds.iter().find(|(id, _)| *id == p.id).map_or(0, |r| r.1),
            })),
            "lease": lease,
            "held_back": counts.map_or(0, |c| c.held_back),
            "released": counts.map_or(0, |c| c.released),
            "types": types,
            "writeback": writeback,
        }));
    }
    Ok(fhir_json(StatusCode::OK, &json!({ "sources": out })))
}
