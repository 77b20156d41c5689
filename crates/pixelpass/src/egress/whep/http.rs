//! The WHEP endpoints, under the stream token like the HTTP-TS path:
//!
//! | request | answer |
//! |---|---|
//! | `POST /{token}/whep` (`application/sdp` offer) | `201`, `Location: /{token}/whep/{id}`, `ETag`, SDP answer, `Link: <…>; rel="ice-server"` |
//! | `PATCH /{token}/whep/{id}` (`application/trickle-ice-sdpfrag`) | `204` (ice-lite: the browser's checks tell us its addresses) |
//! | `PATCH` with `If-Match: "*"` or new ICE credentials (ICE restart) | `422`: POST a new offer instead |
//! | `DELETE /{token}/whep/{id}` | `200`; the viewer slot is free when it returns |
//! | `GET` / `POST /{token}/whep/{id}/layer` | the viewer's layer and link as JSON / its choice (see [`layer`]) |
//! | `OPTIONS` either | `204`, CORS, `Accept-Post` / `Accept-Patch` |
//!
//! Errors: wrong method `405`, wrong content type `415`, unparsable SDP
//! `400`, no H.264 (or no common codec) `422`, unknown resource `404`, ETag
//! mismatch `412`, stream full, capture failed or the engine past
//! `--webrtc-max-load` (see [`super::load`]) `503` + `Retry-After`. A
//! wrong token is the server's plain `404`. Every WHEP answer carries CORS
//! headers, so a player from another origin works.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

use super::{OfferError, Whep, H264_PROFILE_LEVEL_ID};
use crate::egress::http_ts;
use crate::net::signal::{self, content_type_is, error, with_cors};
use crate::registry::{Registry, StreamEntry};
use crate::supervisor::TeardownHook;

/// Offers are a few KiB; anything near this is not a browser's.
const MAX_OFFER: usize = 64 * 1024;
const MAX_PATCH: usize = 16 * 1024;
pub const SDP: &str = "application/sdp";
pub const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

mod layer;

#[derive(Clone)]
struct WhepState {
    registry: Registry,
    whep: Whep,
}

/// The WHEP routes, to merge into the server's router.
pub fn routes(registry: Registry, whep: Whep) -> Router {
    Router::new()
        .route(
            "/{token}/whep",
            post(post_offer)
                .options(options_endpoint)
                .fallback(wrong_method_endpoint),
        )
        .route(
            "/{token}/whep/{resource}",
            delete(delete_resource)
                .patch(patch_resource)
                .options(options_resource)
                .fallback(wrong_method_resource),
        )
        .route(
            "/{token}/whep/{resource}/layer",
            get(layer::get_layer)
                .post(layer::post_layer)
                .options(options_resource),
        )
        .with_state(WhepState { registry, whep })
}

/// The same plain 404 as any unknown path (a wrong token says nothing more).
fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CACHE_CONTROL, "no-store")],
        "not found\n",
    )
        .into_response()
}

fn link_headers(whep: &Whep, resp: &mut Response) {
    for s in whep.ice_servers() {
        if let Ok(v) = HeaderValue::from_str(&s.link_header()) {
            resp.headers_mut().append(header::LINK, v);
        }
    }
}

/// `a=<name>:` of an SDP (fragment), first occurrence.
fn attribute<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("a=")?.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

async fn read_body(body: Body, limit: usize) -> Result<String, Response> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than {} KiB", limit / 1024),
        )
    })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| error(StatusCode::BAD_REQUEST, "the body is not UTF-8 text"))
}

fn offer_error(e: OfferError) -> Response {
    match e {
        OfferError::Malformed(why) => error(StatusCode::BAD_REQUEST, &why),
        OfferError::Unacceptable(why) => error(StatusCode::UNPROCESSABLE_ENTITY, &why),
    }
}

async fn post_offer(
    State(st): State<WhepState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(entry) = st.registry.by_token(&token) else {
        return not_found();
    };
    if !entry.webrtc {
        return error(
            StatusCode::NOT_FOUND,
            "this stream is not offered over WebRTC (webrtc.enabled = false); play /stream.ts instead",
        );
    }
    if let Some(why) = st.whep.load().refusal() {
        if let Some(n) = st.whep.load().count_refusal(Instant::now()) {
            tracing::warn!(stream = %entry.id, refused = n, "WebRTC viewer refused: {why}");
        }
        return with_cors(http_ts::unavailable(why));
    }
    let posted = Instant::now();
    if !content_type_is(&headers, SDP) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be sent as Content-Type: application/sdp",
        );
    }
    let sdp = match read_body(body, MAX_OFFER).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let hub = entry.supervisor.hub().clone();
    let profile = hub.h264_profile().unwrap_or(H264_PROFILE_LEVEL_ID);
    let layers = hub.layer_count();
    let answered = match st.whep.factory().answer(&sdp, posted, profile, layers) {
        Ok(x) => x,
        Err(e) => return offer_error(e),
    };
    let lease = match entry.supervisor.acquire() {
        Ok(lease) => lease,
        Err(full) => return with_cors(http_ts::unavailable(full.to_string())),
    };
    if let Err(e) = lease.ready(http_ts::START_TIMEOUT).await {
        tracing::warn!(stream = %entry.id, "WebRTC viewer refused: {e}");
        return with_cors(http_ts::unavailable(e.to_string()));
    }
    // A published stream's profile is the publisher's, known once it is live.
    let (rtc, answer) = match hub.h264_profile().unwrap_or(H264_PROFILE_LEVEL_ID) {
        p if p == profile => answered,
        p => match st.whep.factory().answer(&sdp, posted, p, layers) {
            Ok(x) => x,
            Err(e) => return offer_error(e),
        },
    };
    register_teardown(&st.whep, &entry);
    let (resource, etag) = match signal::new_resource() {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let stream: Arc<str> = entry.id.as_str().into();
    let ufrag = attribute(&sdp, "ice-ufrag").map(str::to_owned);
    st.whep
        .index()
        .insert(resource.clone(), stream.clone(), etag.clone(), ufrag, lease);
    if !st.whep.add_peer(
        resource.clone(),
        stream,
        entry.supervisor.hub().clone(),
        rtc,
        entry.rtp_pts,
        Instant::now(),
    ) {
        st.whep.index().remove(&resource);
        return with_cors(http_ts::unavailable(
            "the WebRTC engine is not running".into(),
        ));
    }
    tracing::debug!(stream = %entry.id, resource = %crate::token::short(&resource), answer_ms = posted.elapsed().as_millis() as u64, "WHEP offer answered");
    let mut resp = (StatusCode::CREATED, answer).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(v) =
        HeaderValue::from_str(&format!("{}/{token}/whep/{resource}", st.whep.base_path()))
    {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        HeaderName::from_static("accept-patch"),
        HeaderValue::from_static(SDPFRAG),
    );
    link_headers(&st.whep, &mut resp);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "<{}/{token}/whep/{resource}/layer>; rel=\"{}\"",
        st.whep.base_path(),
        layer::REL
    )) {
        resp.headers_mut().append(header::LINK, v);
    }
    with_cors(resp)
}

/// The stream's producer stops for good: its peers close first (idempotent per stream).
fn register_teardown(whep: &Whep, entry: &StreamEntry) {
    let whep = whep.clone();
    let stream: Arc<str> = entry.id.as_str().into();
    let hook: TeardownHook = Arc::new(move || {
        let whep = whep.clone();
        let stream = stream.clone();
        Box::pin(async move { whep.close_all(&stream).await })
    });
    entry.supervisor.on_teardown("whep", hook);
}

async fn patch_resource(
    State(st): State<WhepState>,
    Path((token, resource)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(entry) = st.registry.by_token(&token) else {
        return not_found();
    };
    let Some(res) = st.whep.index().get(&resource, &entry.id) else {
        return error(StatusCode::NOT_FOUND, "no such WHEP session");
    };
    if !content_type_is(&headers, SDPFRAG) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "PATCH takes Content-Type: application/trickle-ice-sdpfrag",
        );
    }
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if if_match == Some("*") {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ICE restart is not supported: POST a new offer",
        );
    }
    if if_match.is_some_and(|m| m != res.etag) {
        return error(
            StatusCode::PRECONDITION_FAILED,
            "the ETag does not match this session",
        );
    }
    let frag = match read_body(body, MAX_PATCH).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if attribute(&frag, "ice-ufrag").is_some_and(|u| Some(u) != res.remote_ufrag.as_deref()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ICE restart is not supported: POST a new offer",
        );
    }
    // Trickled candidates need no action: an ice-lite server learns the
    // browser's addresses from the connectivity checks it receives.
    with_cors(StatusCode::NO_CONTENT.into_response())
}

async fn delete_resource(
    State(st): State<WhepState>,
    Path((token, resource)): Path<(String, String)>,
) -> Response {
    let Some(entry) = st.registry.by_token(&token) else {
        return not_found();
    };
    if !st.whep.index().remove_in(&resource, &entry.id) {
        return error(StatusCode::NOT_FOUND, "no such WHEP session");
    }
    // The lease went with the index entry; the engine closes the connection.
    st.whep.remove_peer(resource.into());
    with_cors(StatusCode::OK.into_response())
}

async fn options_endpoint(State(st): State<WhepState>, Path(token): Path<String>) -> Response {
    if st.registry.by_token(&token).is_none() {
        return not_found();
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        HeaderName::from_static("accept-post"),
        HeaderValue::from_static(SDP),
    );
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    link_headers(&st.whep, &mut resp);
    with_cors(resp)
}

async fn options_resource(
    State(st): State<WhepState>,
    Path((token, _)): Path<(String, String)>,
) -> Response {
    if st.registry.by_token(&token).is_none() {
        return not_found();
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        HeaderName::from_static("accept-patch"),
        HeaderValue::from_static(SDPFRAG),
    );
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    with_cors(resp)
}

fn wrong_method(allow: &'static str) -> Response {
    let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, &format!("use {allow}"));
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

async fn wrong_method_endpoint(State(st): State<WhepState>, Path(token): Path<String>) -> Response {
    match st.registry.by_token(&token) {
        Some(_) => wrong_method("POST, OPTIONS"),
        None => not_found(),
    }
}

async fn wrong_method_resource(
    State(st): State<WhepState>,
    Path((token, _)): Path<(String, String)>,
) -> Response {
    match st.registry.by_token(&token) {
        Some(_) => wrong_method("PATCH, DELETE, OPTIONS"),
        None => not_found(),
    }
}

#[cfg(test)]
mod tests;
