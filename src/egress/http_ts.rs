//! The HTTP MPEG-TS viewer: `200 video/mp2t` and an endless body.
//!
//! The viewer holds a supervisor lease for as long as the body lives, so a
//! closed or timed-out connection (the listener's write timeout) frees its
//! slot. Bytes come from the hub as shared chunks; nothing is buffered here.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::server::StreamEntry;
use crate::supervisor::NotReady;

/// How long a viewer waits for capture to start (a portal dialog takes a person).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Retry-After for a full or failed stream, in seconds.
const RETRY_AFTER: &str = "5";

fn stream_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
}

pub fn unavailable(reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, RETRY_AFTER), (header::CACHE_CONTROL, "no-store")],
        format!("{reason}\n"),
    )
        .into_response()
}

/// `HEAD`: the headers a `GET` would get; takes no viewer slot.
pub fn head() -> Response {
    let mut resp = StatusCode::OK.into_response();
    stream_headers(&mut resp);
    resp
}

pub async fn get(entry: StreamEntry) -> Response {
    let lease = match entry.supervisor.acquire() {
        Ok(lease) => lease,
        Err(full) => return unavailable(full.to_string()),
    };
    if let Err(e) = lease.ready(START_TIMEOUT).await {
        tracing::warn!(stream = %entry.id, "viewer refused: {e}");
        return match e {
            NotReady::StartFailed(_) | NotReady::Timeout(_) | NotReady::ShuttingDown => unavailable(e.to_string()),
        };
    }
    let sub = entry.supervisor.hub().subscribe(Instant::now());
    let stream = futures_util::stream::unfold((sub, lease), |(mut sub, lease)| async move {
        let bytes = sub.next().await?;
        Some((Ok::<_, Infallible>(bytes), (sub, lease)))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    stream_headers(&mut resp);
    resp
}
