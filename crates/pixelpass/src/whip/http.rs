//! The WHIP endpoints (RFC 9725), as OBS and browsers expect them:
//!
//! | request | answer |
//! |---|---|
//! | `POST /whip/{id}` (`Authorization: Bearer <publish_token>`, `application/sdp`) | `201`, `Location: /whip/{id}/{resource}`, `ETag`, SDP answer, `Link: <player page>; rel="alternate"; type="text/html"` |
//! | `PATCH /whip/{id}/{resource}` (trickle) | `204` (ice-lite: the publisher's checks tell us its addresses) |
//! | `DELETE /whip/{id}/{resource}` | `200` once the publisher is gone |
//! | `OPTIONS` either | `204`, CORS, `Accept-Post` |
//!
//! Errors, each with a one-line body: no or wrong bearer `401`, unknown id
//! `404`, a second publisher while one is live `409`, wrong content type
//! `415`, bad SDP `400`, no common codec `422`, wrong method `405`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;

use super::answer::OfferError;
use super::core::NewPublisher;
use super::engine::Cmd;
use super::slot::{Refused, Slot};
use super::Whip;
use crate::net::signal::{self, content_type_is, cors, error};
use crate::token;

const MAX_OFFER: usize = 64 * 1024;
const SDP: &str = "application/sdp";

pub fn routes(whip: Whip) -> Router {
    Router::new()
        .route(
            "/whip/{id}",
            post(post_offer).options(options).fallback(wrong_method),
        )
        .route(
            "/whip/{id}/{resource}",
            delete(delete_resource)
                .patch(patch_resource)
                .options(options_resource)
                .fallback(wrong_method),
        )
        .with_state(whip)
}

fn unauthorized(reason: &str) -> Response {
    let mut resp = error(StatusCode::UNAUTHORIZED, reason);
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"pixelpass WHIP\""),
    );
    resp
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The stream `id` and the caller's right to publish it (the error is the
/// answer to send, built once, on a cold path).
#[allow(clippy::result_large_err)]
fn authorize(whip: &Whip, id: &str, headers: &HeaderMap) -> Result<Arc<Slot>, Response> {
    let slot = whip.slot(id).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            &format!(
                "no published stream {id:?} here (a [[stream]] with publish_token and no input)"
            ),
        )
    })?;
    match bearer(headers) {
        None => Err(unauthorized(
            "publishing needs Authorization: Bearer <the stream's publish_token>",
        )),
        Some(t) if slot.authorizes(t) => Ok(slot),
        Some(_) => Err(unauthorized("the publish token is not this stream's")),
    }
}

/// The base of the URLs handed out: `--public-url`, or this request's host.
fn base_url(whip: &Whip, headers: &HeaderMap) -> String {
    if let Some(u) = &whip.config().public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or("localhost");
    let scheme = if whip.config().https { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// The path part of the base (`/pixelpass` behind a proxy; empty otherwise).
fn base_path(whip: &Whip) -> String {
    whip.config()
        .public_url
        .as_deref()
        .and_then(|u| u.split_once("://").map(|(_, rest)| rest))
        .and_then(|rest| {
            rest.find('/')
                .map(|i| rest[i..].trim_end_matches('/').to_owned())
        })
        .unwrap_or_default()
}

async fn post_offer(
    State(whip): State<Whip>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let posted = Instant::now();
    let slot = match authorize(&whip, &id, &headers) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if !content_type_is(&headers, SDP) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be sent as Content-Type: application/sdp",
        );
    }
    if slot.resource().is_some() {
        return error(
            StatusCode::CONFLICT,
            "someone publishes this stream already; DELETE that session first (or wait for its consent timeout)",
        );
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_OFFER).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the offer is larger than {} KiB", MAX_OFFER / 1024),
        );
    };
    let Ok(sdp) = String::from_utf8(bytes.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "the offer is not UTF-8 text");
    };
    let (rtc, answer, neg) = match whip.answerer().answer(&sdp, posted) {
        Ok(x) => x,
        Err(OfferError::Malformed(why)) => return error(StatusCode::BAD_REQUEST, &why),
        Err(OfferError::Unacceptable(why)) => return error(StatusCode::UNPROCESSABLE_ENTITY, &why),
    };
    let (resource, etag) = match signal::new_resource() {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    if let Err(Refused::Busy) = slot.claim(
        resource.clone(),
        etag.clone(),
        neg.codecs.clone(),
        neg.audio.is_some(),
    ) {
        return error(
            StatusCode::CONFLICT,
            "someone publishes this stream already; DELETE that session first",
        );
    }
    slot.hub().set_h264_profile(Some(neg.h264_profile));
    tracing::info!(stream = %id, codecs = ?neg.codecs, "WHIP publisher offered");
    let new = NewPublisher {
        resource: resource.clone(),
        rtc,
        neg,
        slot: slot.clone(),
    };
    if !whip.send(Cmd::Add(Box::new(new))) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the WHIP engine is shutting down",
        );
    }
    let location = format!("{}/whip/{id}/{resource}", base_path(&whip));
    let page = format!("{}/{}/", base_url(&whip, &headers), slot.viewer_token);
    let mut resp = (StatusCode::CREATED, answer).into_response();
    cors(&mut resp);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    for (name, value) in [
        (header::LOCATION, location),
        (header::ETAG, etag),
        (
            header::LINK,
            format!("<{page}>; rel=\"alternate\"; type=\"text/html\""),
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

/// The resource of `id`'s publisher, if `resource` is it (and any bearer given is right).
#[allow(clippy::result_large_err)]
fn resource_of(
    whip: &Whip,
    id: &str,
    resource: &str,
    headers: &HeaderMap,
) -> Result<Arc<Slot>, Response> {
    let gone = || error(StatusCode::NOT_FOUND, "no such WHIP session (it ended?)");
    let slot = whip.slot(id).ok_or_else(gone)?;
    if let Some(t) = bearer(headers) {
        if !slot.authorizes(t) {
            return Err(unauthorized("the publish token is not this stream's"));
        }
    }
    match slot.resource() {
        Some(r) if token::matches(&r, resource) => Ok(slot),
        _ => Err(gone()),
    }
}

async fn delete_resource(
    State(whip): State<Whip>,
    Path((id, resource)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = resource_of(&whip, &id, &resource, &headers) {
        return resp;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    if whip.send(Cmd::Remove(resource.into(), tx)) {
        let _ = rx.await;
    }
    error(StatusCode::OK, "publisher removed")
}

async fn patch_resource(
    State(whip): State<Whip>,
    Path((id, resource)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let slot = match resource_of(&whip, &id, &resource, &headers) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if let Some(m) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        if m.trim() != "*" && slot.etag_of(&resource).as_deref() != Some(m.trim()) {
            return error(
                StatusCode::PRECONDITION_FAILED,
                "the ETag does not match this session",
            );
        }
    }
    // ice-lite: the publisher's connectivity checks tell us its addresses.
    let mut resp = StatusCode::NO_CONTENT.into_response();
    cors(&mut resp);
    resp
}

async fn options() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    cors(&mut resp);
    resp.headers_mut()
        .insert("accept-post", HeaderValue::from_static(SDP));
    resp
}

async fn options_resource() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    cors(&mut resp);
    resp.headers_mut().insert(
        "accept-patch",
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    resp
}

async fn wrong_method() -> Response {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "WHIP takes POST (publish), PATCH, DELETE and OPTIONS",
    );
    resp.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("POST, PATCH, DELETE, OPTIONS"),
    );
    resp
}
