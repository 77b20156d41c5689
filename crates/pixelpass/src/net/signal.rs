//! What the WebRTC signalling endpoints (WHEP viewers, WHIP publishers)
//! answer alike: CORS on every answer, errors as one line of text, the
//! content-type check, a new resource's random id and ETag.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// CORS headers, so a player or publisher page of another origin works;
/// never cached.
pub(crate) fn cors(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, PATCH, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, If-Match, Authorization"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Post, Accept-Patch, Retry-After"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub(crate) fn with_cors(mut resp: Response) -> Response {
    cors(&mut resp);
    resp
}

/// An error with its one-line reason as the body.
pub(crate) fn error(status: StatusCode, reason: &str) -> Response {
    with_cors(
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{reason}\n"),
        )
            .into_response(),
    )
}

/// The request's `Content-Type` is `want` (parameters ignored).
pub(crate) fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// The OS random source failed: a `500` that says so.
#[derive(Debug)]
pub(crate) struct NoRandom;

impl IntoResponse for NoRandom {
    fn into_response(self) -> Response {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the OS random source",
        )
    }
}

/// A new WHEP/WHIP resource: its id and its ETag, both from the OS random source.
pub(crate) fn new_resource() -> Result<(std::sync::Arc<str>, String), NoRandom> {
    let (Ok(resource), Ok(etag)) = (crate::token::generate(), crate::token::generate()) else {
        return Err(NoRandom);
    };
    Ok((resource.into(), format!("\"{}\"", &etag[..16])))
}
