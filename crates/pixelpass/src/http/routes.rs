//! URL layout. Every stream URL starts with the stream's token; a wrong
//! token is the same plain 404 as any unknown path.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::egress::hls::{self, ClientAddr, Hls};
use crate::egress::http_ts;
use crate::egress::whep::{self, Whep};
use crate::http::api::{self, Api};
use crate::registry::Registry;
use crate::whip::Whip;

pub fn router(registry: Registry) -> Router {
    router_with(registry, None)
}

/// The routes, plus the WHEP endpoints (`/{token}/whep…`) when `whep` is given.
pub fn router_with(registry: Registry, whep: Option<Whep>) -> Router {
    let hls = Hls::new(hls::HlsConfig::default());
    let base = Router::new()
        .route("/healthz", get(healthz))
        .route("/{token}/", get(player_page))
        .route("/{token}/stream.ts", get(stream_ts).head(stream_ts_head))
        .fallback(not_found)
        .with_state(registry.clone())
        .route(
            "/{token}/hls/{file}",
            get(hls_get).with_state(HlsState {
                registry: registry.clone(),
                hls: hls.clone(),
            }),
        )
        .route(
            "/{token}/status",
            get(status).with_state(StatusState {
                registry: registry.clone(),
                whep: whep.clone(),
                hls,
            }),
        );
    match whep {
        Some(whep) => base.merge(whep::http::routes(registry, whep)),
        None => base,
    }
}

/// `serve`'s whole app: the stream routes with WHEP, the API and metrics
/// (`api`), and WHIP ingest (`whip`).
pub fn serve_router(registry: Registry, whep: Whep, api: Api, whip: Whip) -> Router {
    router_with(registry, Some(whep))
        .merge(api::routes(api))
        .merge(crate::whip::http::routes(whip))
}

pub(crate) async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CACHE_CONTROL, "no-store")],
        "not found\n",
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn player_page(State(registry): State<Registry>, Path(token): Path<String>) -> Response {
    match registry.by_token(&token) {
        Some(_) => crate::http::player::player(),
        None => not_found().await,
    }
}

/// `?layer=N` of `stream.ts`.
#[derive(serde::Deserialize)]
struct StreamQuery {
    layer: Option<String>,
}

async fn stream_ts(
    State(registry): State<Registry>,
    Path(token): Path<String>,
    Query(q): Query<StreamQuery>,
) -> Response {
    match registry.by_token(&token) {
        Some(entry) if entry.http_ts => {
            match http_ts::parse_layer(q.layer.as_deref(), entry.supervisor.hub().layer_count()) {
                Ok(layer) => http_ts::get(entry, layer).await,
                Err(why) => http_ts::bad_layer(why),
            }
        }
        Some(_) => http_ts::disabled(),
        None => not_found().await,
    }
}

async fn stream_ts_head(
    State(registry): State<Registry>,
    Path(token): Path<String>,
    Query(q): Query<StreamQuery>,
) -> Response {
    match registry.by_token(&token) {
        Some(entry) if entry.http_ts => {
            match http_ts::parse_layer(q.layer.as_deref(), entry.supervisor.hub().layer_count()) {
                Ok(_) => http_ts::head(),
                Err(why) => http_ts::bad_layer(why),
            }
        }
        Some(_) => http_ts::disabled(),
        None => not_found().await,
    }
}

#[derive(Clone)]
struct HlsState {
    registry: Registry,
    hls: Hls,
}

/// LL-HLS: the playlist, init segments, parts and segments (see `egress::hls::http`).
async fn hls_get(
    State(st): State<HlsState>,
    Path((token, file)): Path<(String, String)>,
    Query(q): Query<hls::http::Query>,
    client: Option<axum::Extension<ClientAddr>>,
    headers: axum::http::HeaderMap,
) -> Response {
    match st.registry.by_token(&token) {
        Some(entry) => {
            let client = client.map(|c| c.0 .0);
            hls::http::get(st.hls, entry, &file, q, &headers, client).await
        }
        None => not_found().await,
    }
}

#[derive(Clone)]
struct StatusState {
    registry: Registry,
    whep: Option<Whep>,
    hls: Hls,
}

/// The stream's status, its layers and (with WebRTC) each WebRTC viewer's
/// layer, estimate, loss and RTT.
async fn status(State(st): State<StatusState>, Path(token): Path<String>) -> Response {
    match st.registry.by_token(&token) {
        Some(entry) => {
            let mut v = with_layers(&entry);
            if let (Some(whep), Some(obj)) = (&st.whep, v.as_object_mut()) {
                let peers = serde_json::to_value(whep.peer_reports(&entry.id)).unwrap_or_default();
                obj.insert("webrtc_peers".into(), peers);
            }
            if let (Some(report), Some(obj)) = (st.hls.report(&entry.id), v.as_object_mut()) {
                obj.insert(
                    "hls".into(),
                    serde_json::to_value(report).unwrap_or_default(),
                );
            }
            ([(header::CACHE_CONTROL, "no-store")], axum::Json(v)).into_response()
        }
        None => not_found().await,
    }
}

/// The supervisor's status plus `layers`: what each layer is (once its
/// producer said) and how many HTTP-TS viewers read it now.
fn with_layers(entry: &crate::registry::StreamEntry) -> serde_json::Value {
    let mut v = serde_json::to_value(entry.supervisor.status()).unwrap_or_default();
    let layers: Vec<serde_json::Value> = entry
        .supervisor
        .hub()
        .layers()
        .enumerate()
        .map(|(i, hub)| {
            // The LL-HLS segmenter reads layer 0 as a receiver; it is no HTTP-TS viewer.
            let feeders = hub
                .out()
                .hls_feeders
                .load(std::sync::atomic::Ordering::Relaxed);
            let http = hub.receivers().saturating_sub(feeders);
            let mut l = serde_json::json!({ "layer": i, "http_viewers": http });
            if let (Some(info), Some(obj)) = (hub.layer_info(), l.as_object_mut()) {
                if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(info) {
                    obj.extend(fields);
                }
            }
            l
        })
        .collect();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("layers".into(), serde_json::Value::Array(layers));
    }
    v
}
