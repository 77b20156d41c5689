//! The layer of one WHEP viewer (the WHEP draft's "layer" extension, in
//! our own small JSON): `GET {resource}/layer` says which layer its video
//! is on, why, and what layers the stream has; `POST {resource}/layer`
//! with `{"layer": "auto"}` or `{"layer": N}` is the player page's quality
//! menu. Same token rules as the resource itself.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{not_found, WhepState};
use crate::egress::whep::{Choice, Mode, PeerView};
use crate::hub::LayerInfo;
use crate::net::signal::{content_type_is, error, with_cors};

/// The link relation the answer's `Link` header names this URL with.
pub const REL: &str = "urn:ietf:params:whep:ext:core:layer";
const MAX_BODY: usize = 1024;

#[derive(Serialize)]
struct LayerState {
    #[serde(flatten)]
    view: PeerView,
    layers: Vec<Option<LayerInfo>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerOrder {
    layer: Wanted,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Wanted {
    Layer(u8),
    Word(String),
}

pub(super) async fn get_layer(
    State(st): State<WhepState>,
    Path((token, resource)): Path<(String, String)>,
) -> Response {
    let Some(entry) = st.registry.by_token(&token) else {
        return not_found();
    };
    let Some(view) = st.whep.peer_view(&resource, &entry.id) else {
        return error(StatusCode::NOT_FOUND, "no such WHEP session");
    };
    let layers = entry
        .supervisor
        .hub()
        .layers()
        .map(|h| h.layer_info())
        .collect();
    let mut resp = axum::Json(LayerState { view, layers }).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    with_cors(resp)
}

pub(super) async fn post_layer(
    State(st): State<WhepState>,
    Path((token, resource)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(entry) = st.registry.by_token(&token) else {
        return not_found();
    };
    if st.whep.peer_view(&resource, &entry.id).is_none() {
        return error(StatusCode::NOT_FOUND, "no such WHEP session");
    }
    if !content_type_is(&headers, "application/json") {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the layer as Content-Type: application/json, e.g. {\"layer\": \"auto\"}",
        );
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is larger than 1 KiB",
        );
    };
    let count = entry.supervisor.hub().layer_count();
    let order: LayerOrder = match serde_json::from_slice(&bytes) {
        Ok(o) => o,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"layer\": \"auto\" or 0..{}}}: {e}", count - 1),
            )
        }
    };
    let mode = match order.layer {
        Wanted::Word(w) if w == "auto" => Mode::Auto,
        Wanted::Layer(l) if usize::from(l) < count => Mode::Pinned(Choice::Layer(l)),
        Wanted::Layer(l) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("this stream has layers 0..{}, not {l}", count - 1),
            )
        }
        Wanted::Word(w) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the layer is \"auto\" or a number, not {w:?}"),
            )
        }
    };
    if count < 2 {
        return error(
            StatusCode::CONFLICT,
            "this stream has one layer: there is nothing to choose",
        );
    }
    st.whep.set_layer(&resource, mode);
    with_cors(StatusCode::NO_CONTENT.into_response())
}
