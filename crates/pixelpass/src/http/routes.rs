//! URL layout. Every stream URL starts with the stream's token; a wrong
//! token is the same plain 404 as any unknown path.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::egress::http_ts;
use crate::egress::whep::{self, Whep};
use crate::registry::Registry;

pub fn router(registry: Registry) -> Router {
    router_with(registry, None)
}

/// The routes, plus the WHEP endpoints (`/{token}/whep…`) when `whep` is given.
pub fn router_with(registry: Registry, whep: Option<Whep>) -> Router {
    let base = Router::new()
        .route("/healthz", get(healthz))
        .route("/{token}/", get(player_page))
        .route("/{token}/stream.ts", get(stream_ts).head(stream_ts_head))
        .route("/{token}/status", get(status))
        .fallback(not_found)
        .with_state(registry.clone());
    match whep {
        Some(whep) => base.merge(whep::http::routes(registry, whep)),
        None => base,
    }
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

async fn stream_ts(State(registry): State<Registry>, Path(token): Path<String>) -> Response {
    match registry.by_token(&token) {
        Some(entry) if entry.http_ts => http_ts::get(entry).await,
        Some(_) => http_ts::disabled(),
        None => not_found().await,
    }
}

async fn stream_ts_head(State(registry): State<Registry>, Path(token): Path<String>) -> Response {
    match registry.by_token(&token) {
        Some(entry) if entry.http_ts => http_ts::head(),
        Some(_) => http_ts::disabled(),
        None => not_found().await,
    }
}

async fn status(State(registry): State<Registry>, Path(token): Path<String>) -> Response {
    match registry.by_token(&token) {
        Some(entry) => (
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(entry.supervisor.status()),
        )
            .into_response(),
        None => not_found().await,
    }
}
