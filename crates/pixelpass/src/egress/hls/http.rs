//! `GET /{token}/hls/{file}`: the playlist (blocking reload), init segments,
//! parts (a preload-hinted one streamed as it is written) and segments, with
//! the headers that let an ordinary HTTP cache carry them.
//!
//! Caching: parts, segments and init segments never change under their URL
//! (sequence numbers never repeat, see [`super::service`]): `public,
//! max-age=86400, immutable`. A playlist asked with `_HLS_msn`/`_HLS_part` is
//! a URL of its own whose answer holds for good: `max-age=6`. The bare
//! playlist changes every part: `max-age=1`. Every answer has an `ETag` and
//! a `Last-Modified`; `If-None-Match` gets a `304`.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::playlist;
use super::service::{unix_ms, Hls, HlsStream};
use crate::registry::StreamEntry;

/// How long a first request waits for capture to start and the first segment.
const START_WAIT: Duration = Duration::from_secs(60);
const MEDIA_CACHE: &str = "public, max-age=86400, immutable";
const BLOCKING_CACHE: &str = "public, max-age=6";
const PLAYLIST_CACHE: &str = "public, max-age=1";

/// The client address a request came from (the listener puts it in).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// `_HLS_msn`, `_HLS_part` (and `_HLS_skip`, which is not offered and ignored).
#[derive(Debug, Default, serde::Deserialize)]
pub struct Query {
    #[serde(rename = "_HLS_msn")]
    pub msn: Option<String>,
    #[serde(rename = "_HLS_part")]
    pub part: Option<String>,
}

/// What a file name in `/{token}/hls/` names.
#[derive(Debug, PartialEq, Eq)]
pub enum File {
    Playlist,
    Init(u64),
    Segment(u64),
    Part(u64, usize),
}

pub fn parse_file(name: &str) -> Option<File> {
    if name == "index.m3u8" {
        return Some(File::Playlist);
    }
    if let Some(n) = name
        .strip_prefix("init-")
        .and_then(|r| r.strip_suffix(".mp4"))
    {
        return n.parse().ok().map(File::Init);
    }
    if let Some(n) = name
        .strip_prefix("seg-")
        .and_then(|r| r.strip_suffix(".m4s"))
    {
        return n.parse().ok().map(File::Segment);
    }
    let rest = name.strip_prefix("part-")?.strip_suffix(".m4s")?;
    let (msn, part) = rest.split_once('-')?;
    Some(File::Part(msn.parse().ok()?, part.parse().ok()?))
}

fn plain(status: StatusCode, cache: &'static str, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

fn unavailable(why: String) -> Response {
    let mut r = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "no-store",
        format!("{why}\n"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn gone(what: &str) -> Response {
    plain(
        StatusCode::NOT_FOUND,
        "no-store",
        format!("{what} is not in the live window (too old, or never made); reload the playlist\n"),
    )
}

pub async fn get(
    hls: Hls,
    entry: StreamEntry,
    file: &str,
    q: Query,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Response {
    let Some(file) = parse_file(file) else {
        return plain(StatusCode::NOT_FOUND, "no-store", "not found\n".into());
    };
    let s = hls.stream(&entry);
    // Without a client address (an in-process call) all such requests are one client.
    let client = client.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if let Err(full) = s.visit(client) {
        tracing::warn!(stream = %entry.id, "HLS client refused: {full}");
        return unavailable(full);
    }
    match file {
        File::Playlist => playlist(&s, q, headers).await,
        File::Init(n) => {
            s.requests.init.fetch_add(1, Ordering::Relaxed);
            let bytes = s.lock().window.init(n).cloned();
            match bytes {
                Some(b) => {
                    s.served_bytes(b.len());
                    media(b, format!("i{n}"), unix_ms() / 1000, headers)
                }
                None => gone("this init segment"),
            }
        }
        File::Segment(msn) => {
            s.requests.segment.fetch_add(1, Ordering::Relaxed);
            let found = s
                .lock()
                .window
                .segment_mut(msn)
                .filter(|seg| seg.complete)
                .map(|seg| {
                    seg.served += 1;
                    (seg.bytes(), seg.pdt_ms / 1000)
                });
            match found {
                Some((b, at)) => {
                    s.served_bytes(b.len());
                    media(b, format!("s{msn}"), at, headers)
                }
                None => gone("this segment"),
            }
        }
        File::Part(msn, k) => part(s, msn, k, headers).await,
    }
}

/// An immutable media response (or its `304`).
fn media(bytes: Bytes, tag: String, modified_secs: u64, headers: &HeaderMap) -> Response {
    let etag = format!("\"{tag}\"");
    let mut r = if_none_match(headers, &etag).unwrap_or_else(|| bytes.into_response());
    media_headers(r.headers_mut(), &etag, modified_secs);
    r
}

fn media_headers(h: &mut HeaderMap, etag: &str, modified_secs: u64) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(MEDIA_CACHE));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&playlist::http_date(modified_secs)) {
        h.insert(header::LAST_MODIFIED, v);
    }
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> Option<Response> {
    let inm = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    inm.split(',')
        .any(|t| t.trim() == etag || t.trim() == "*")
        .then(|| StatusCode::NOT_MODIFIED.into_response())
}

async fn playlist(s: &Arc<HlsStream>, q: Query, headers: &HeaderMap) -> Response {
    let timing = s.cfg.timing();
    let blocking = q.msn.is_some();
    let (msn, part) = match (
        q.msn.as_deref().map(str::parse::<u64>),
        q.part.as_deref().map(str::parse::<usize>),
    ) {
        (None, Some(_)) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "no-store",
                "_HLS_part needs _HLS_msn\n".into(),
            )
        }
        (Some(Err(_)), _) | (_, Some(Err(_))) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "no-store",
                "_HLS_msn and _HLS_part are whole numbers\n".into(),
            )
        }
        (Some(Ok(m)), p) => (Some(m), p.and_then(Result::ok)),
        (None, None) => (None, None),
    };
    let ready = if let Some(msn) = msn {
        s.requests.blocking_playlist.fetch_add(1, Ordering::Relaxed);
        if let Some(why) = too_far(&s.lock().window, msn, part) {
            return plain(StatusCode::BAD_REQUEST, "no-store", why);
        }
        // The spec's bound: three target durations, then 503.
        let limit = Duration::from_secs(3 * timing.target_duration);
        s.wait_for(limit, |w| w.has(msn, part)).await
    } else {
        s.requests.playlist.fetch_add(1, Ordering::Relaxed);
        // A player needs one whole segment to start; the first request also waits for capture.
        s.wait_for(START_WAIT, |w| w.segments.iter().any(|seg| seg.complete))
            .await
    };
    if !ready {
        return unavailable(match msn {
            Some(m) => format!(
                "part {} of segment {m} did not come in time",
                part.unwrap_or(0)
            ),
            None => "the stream has no segment yet (capture did not start in time)".into(),
        });
    }
    let text = playlist::render(&s.lock().window, timing);
    let etag = format!("\"p{:016x}\"", fnv(text.as_bytes()));
    let mut r = if_none_match(headers, &etag).unwrap_or_else(|| text.into_response());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.apple.mpegurl"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if blocking {
            BLOCKING_CACHE
        } else {
            PLAYLIST_CACHE
        }),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&playlist::http_date(unix_ms() / 1000)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    r
}

/// The spec's "too far ahead": an `_HLS_msn` more than two segments past the
/// last, or an `_HLS_part` more than three parts past the last part.
pub fn too_far(w: &super::window::Window, msn: u64, part: Option<usize>) -> Option<String> {
    let last = w.segments.back()?;
    let complete = last.complete_parts();
    let beyond = if msn > last.msn + 2 {
        true
    } else if msn == last.msn {
        part.is_some_and(|p| p > complete + 2)
    } else if msn > last.msn {
        // Parts of a segment not yet begun: those still in the next three parts.
        let ahead = (msn - last.msn) as usize;
        part.is_some_and(|p| p.saturating_add(ahead) > 3)
    } else {
        false
    };
    beyond.then(|| {
        format!(
            "_HLS_msn={msn} _HLS_part={} is too far ahead of the playlist (last segment {}, {complete} parts)\n",
            part.map_or("-".into(), |p| p.to_string()),
            last.msn
        )
    })
}

/// A part: whole when it is; a preload-hinted one (begun or about to begin)
/// streamed chunk by chunk as the segmenter writes it.
async fn part(s: Arc<HlsStream>, msn: u64, k: usize, headers: &HeaderMap) -> Response {
    s.requests.part.fetch_add(1, Ordering::Relaxed);
    let limit = Duration::from_secs(3 * s.cfg.timing().target_duration);
    // Wait until it begins, or cannot any more (its segment ended before it).
    let exists = |w: &super::window::Window| {
        w.segment(msn)
            .is_some_and(|seg| seg.parts.len() > k || seg.complete)
            || w.segments.front().is_some_and(|f| f.msn > msn)
            || w.segments
                .back()
                .is_some_and(|l| l.msn > msn.saturating_add(1))
    };
    let near = s
        .lock()
        .window
        .next_part()
        .is_some_and(|(m, p)| (msn, k) >= (m, p) && msn <= m.saturating_add(1));
    if near && !s.wait_for(limit, exists).await {
        return unavailable(format!("part {k} of segment {msn} did not come in time"));
    }
    let whole = {
        let mut st = s.lock();
        match st
            .window
            .segment_mut(msn)
            .and_then(|seg| seg.parts.get_mut(k))
        {
            None => return gone("this part"),
            Some(p) => {
                p.served += 1;
                p.complete.then(|| (p.bytes(), p.independent))
            }
        }
    };
    let etag = format!("\"p{msn}-{k}\"");
    let modified = unix_ms() / 1000;
    if let Some((bytes, _)) = whole {
        s.served_bytes(bytes.len());
        return media(bytes, format!("p{msn}-{k}"), modified, headers);
    }
    // Still being written: what is there now, then each chunk as it comes.
    let rx = s.changes();
    let body = futures_util::stream::unfold(
        (s, rx, 0usize, false),
        move |(s, mut rx, sent, done)| async move {
            if done {
                return None;
            }
            loop {
                let (fresh, complete) = {
                    let st = s.lock();
                    match st.window.segment(msn).and_then(|seg| seg.parts.get(k)) {
                        None => (Vec::new(), true), // left the window: end the body
                        Some(p) => (p.chunks[sent.min(p.chunks.len())..].to_vec(), p.complete),
                    }
                };
                if !fresh.is_empty() {
                    let n = fresh.len();
                    let bytes = Bytes::from(fresh.concat());
                    s.served_bytes(bytes.len());
                    return Some((Ok::<_, Infallible>(bytes), (s, rx, sent + n, complete)));
                }
                if complete {
                    return None;
                }
                if tokio::time::timeout(limit, rx.changed())
                    .await
                    .map_or(true, |r| r.is_err())
                {
                    return None;
                }
            }
        },
    );
    let mut r = Response::new(Body::from_stream(body));
    media_headers(r.headers_mut(), &etag, modified);
    r
}

/// FNV-1a: a playlist's ETag.
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_far_ahead_is_the_specs_distance_and_never_overflows() {
        use crate::egress::hls::segmenter::Output;
        let mut w = super::super::window::Window::new(6, 100);
        assert_eq!(
            too_far(&w, u64::MAX, Some(usize::MAX)),
            None,
            "nothing to compare with yet"
        );
        for part in 0..3 {
            w.apply(Output::Chunk {
                bytes: Bytes::from_static(b"c"),
                part: true,
                segment: part == 0,
                key: part == 0,
                media_ms: 0.0,
                wall_ms: 0,
                timeline: 0,
                duration_ms: 200.0,
            });
            w.apply(Output::PartEnd { segment: false });
        }
        // Last segment 100 with 3 whole parts (0, 1, 2).
        assert!(too_far(&w, 100, Some(4)).is_none());
        assert!(too_far(&w, 100, Some(6)).is_some());
        assert!(too_far(&w, 101, Some(0)).is_none());
        assert!(too_far(&w, 102, None).is_none());
        assert!(too_far(&w, 103, None).is_some());
        assert!(too_far(&w, u64::MAX, Some(usize::MAX)).is_some());
        assert!(too_far(&w, 101, Some(usize::MAX)).is_some());
        assert!(
            too_far(&w, 0, Some(usize::MAX)).is_none(),
            "old: answered at once"
        );
    }

    #[test]
    fn file_names() {
        assert_eq!(parse_file("index.m3u8"), Some(File::Playlist));
        assert_eq!(parse_file("init-17.mp4"), Some(File::Init(17)));
        assert_eq!(parse_file("seg-9.m4s"), Some(File::Segment(9)));
        assert_eq!(parse_file("part-9-3.m4s"), Some(File::Part(9, 3)));
        for bad in [
            "seg-x.m4s",
            "part-1.m4s",
            "part-1-2-3.m4s",
            "index.m3u",
            "../etc",
        ] {
            assert_eq!(parse_file(bad), None, "{bad}");
        }
    }
}
