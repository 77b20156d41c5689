//! The HTTP MPEG-TS viewer: `200 video/mp2t` and an endless body.
//!
//! The viewer holds a supervisor lease for as long as the body lives, so a
//! closed or timed-out connection (the listener's write timeout) frees its
//! slot. Bytes come from the hub as shared chunks; nothing is copied here,
//! and at most one batch of already-published chunks is held (see
//! [`COALESCE_DELAY`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::time::Instant as TokioInstant;

use super::http_fit::Fit;
use crate::hub::{Hub, Subscriber};
use crate::registry::StreamEntry;
use crate::supervisor::NotReady;

/// How long a viewer waits for capture to start (a portal dialog takes a person).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Retry-After for a full or failed stream, in seconds.
const RETRY_AFTER: &str = "5";

/// Write coalescing. A viewer's cost to the server is per write (syscall,
/// TCP segment, the network path; `pixelpass bench fanout` measured about
/// two thirds of the CPU there at one write per ~17 KiB frame), not per byte.
/// So a viewer holds a chunk up to [`COALESCE_DELAY`] for the next one and
/// sends both in one write, halving writes at 30 frames/s. It holds only
/// when chunks come faster than that (a slower stream is sent as it comes),
/// and never more than [`COALESCE_CHUNKS`] chunks or [`COALESCE_BYTES`].
pub const COALESCE_DELAY: Duration = Duration::from_millis(40);
/// Coalescing trades up to a frame interval of latency for half the writes:
/// worth it for a large audience (CPU-bound), not for a few viewers (who feel
/// latency most). Below this many viewers on the stream, chunks go out at once.
pub const COALESCE_MIN_VIEWERS: usize = 64;
pub const COALESCE_CHUNKS: usize = 2;
pub const COALESCE_BYTES: usize = 64 * 1024;
/// Chunks handed to hyper per write: its write queue holds 16 buffers.
const MAX_BATCH: usize = 16;

fn stream_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
}

pub fn unavailable(reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::RETRY_AFTER, RETRY_AFTER),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!("{reason}\n"),
    )
        .into_response()
}

/// The stream is WebRTC-only (`http_ts = false`).
pub fn disabled() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CACHE_CONTROL, "no-store")],
        "this stream is not offered over HTTP MPEG-TS (http_ts = false); watch it in the browser\n",
    )
        .into_response()
}

/// `HEAD`: the headers a `GET` would get; takes no viewer slot.
pub fn head() -> Response {
    let mut resp = StatusCode::OK.into_response();
    stream_headers(&mut resp);
    resp
}

/// `?layer=`: which layer a viewer asked for. `Ok(None)`: none (automatic:
/// layer 0, moving down when it cannot keep up); an unknown layer is the
/// one-line reason for a `400` ([`bad_layer`]) naming the layers there are.
pub fn parse_layer(raw: Option<&str>, layer_count: usize) -> Result<Option<usize>, String> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    match raw.trim().parse::<usize>() {
        Ok(i) if i < layer_count => Ok(Some(i)),
        _ => {
            let has = match layer_count {
                0 | 1 => "one layer: layer=0".to_owned(),
                n => format!(
                    "layers {}",
                    (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
                ),
            };
            Err(format!("no layer {raw:?}: this stream has {has}"))
        }
    }
}

/// `400` with the reason [`parse_layer`] gave.
pub fn bad_layer(reason: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CACHE_CONTROL, "no-store")],
        format!("{reason}\n"),
    )
        .into_response()
}

/// A viewer of `entry`: on layer `pinned`, or (`None`) on layer 0 moving
/// down when it cannot keep up (see [`super::http_fit`]).
pub async fn get(entry: StreamEntry, pinned: Option<usize>) -> Response {
    let lease = match entry.supervisor.acquire() {
        Ok(lease) => lease,
        Err(full) => return unavailable(full.to_string()),
    };
    if let Err(e) = lease.ready(START_TIMEOUT).await {
        tracing::warn!(stream = %entry.id, "viewer refused: {e}");
        return match e {
            NotReady::StartFailed(_)
            | NotReady::Timeout(_)
            | NotReady::ShuttingDown
            | NotReady::Stopped => unavailable(e.to_string()),
        };
    }
    // The lease lives as long as the body: a closed or timed-out connection frees the slot.
    let stream = entry.supervisor.hub().clone();
    let layer = pinned.unwrap_or(0);
    let Some(hub) = stream.layer(layer) else {
        return unavailable(format!("layer {layer} is gone"));
    };
    let mut viewer = Viewer::new(hub.subscribe(Instant::now()), lease);
    if pinned.is_none() && stream.layer_count() > 1 {
        viewer = viewer.auto_layers(stream, entry.id.to_string());
    }
    // The body ends when the stream is ordered to stop (or fails for good);
    // a crash-restart keeps it: the viewer resumes on the new run's keyframe.
    let status = entry.supervisor.watch_status();
    let out = entry.supervisor.hub().out().clone();
    let stream = futures_util::stream::unfold(
        (viewer, status, out),
        |(mut v, mut status, out)| async move {
            let bytes = tokio::select! {
                b = v.next() => b?,
                _ = stopped(&mut status) => return None,
            };
            out.http_bytes
                .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            Some((Ok::<_, Infallible>(bytes), (v, status, out)))
        },
    );
    let mut resp = Response::new(Body::from_stream(stream));
    stream_headers(&mut resp);
    resp
}

/// Resolves once the stream's order is "stop".
async fn stopped(status: &mut tokio::sync::watch::Receiver<crate::supervisor::Status>) {
    loop {
        if !status.borrow_and_update().enabled() {
            return;
        }
        if status.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// One viewer's body: chunks from the hub, coalesced into fewer writes.
/// `G` is what the body keeps alive with it (the supervisor lease).
struct Viewer<G> {
    sub: Subscriber,
    _guard: G,
    /// Chunks decided to go out together; handed to hyper back to back, so
    /// they leave in one vectored write.
    batch: VecDeque<Bytes>,
    /// Chunks being gathered (kept to reuse its allocation).
    held: Vec<Bytes>,
    closed: bool,
    last_arrival: Option<TokioInstant>,
    /// Time between the last two chunk arrivals.
    last_gap: Duration,
    /// Coalesce only while at least this many viewers share the stream.
    coalesce_from: usize,
    /// Automatic layers: where it is and when to move down.
    auto: Option<AutoLayer>,
}

/// A viewer on automatic layers.
struct AutoLayer {
    /// The stream (layer 0), for its other layers.
    stream: Hub,
    /// The layer it reads now.
    layer: usize,
    fit: Fit,
    /// The stream's name, for the log.
    id: String,
}

impl<G> Viewer<G> {
    fn new(sub: Subscriber, guard: G) -> Self {
        Self {
            sub,
            _guard: guard,
            batch: VecDeque::new(),
            held: Vec::new(),
            closed: false,
            last_arrival: None,
            last_gap: Duration::MAX,
            coalesce_from: COALESCE_MIN_VIEWERS,
            auto: None,
        }
    }

    /// Start on layer 0 of `stream` and move down when it cannot keep up.
    fn auto_layers(mut self, stream: Hub, id: String) -> Self {
        self.auto = Some(AutoLayer {
            stream,
            layer: 0,
            fit: Fit::new(),
            id,
        });
        self
    }

    /// After a batch: is this viewer keeping up? If not, move it to the next
    /// lower layer, where it starts on that layer's next keyframe (its PSI
    /// first): the chunks already taken go out, the next come from there.
    fn check_fit(&mut self, now: Instant) {
        let Some(auto) = &mut self.auto else {
            return;
        };
        let Some(why) = auto
            .fit
            .observe(now, self.sub.behind(), self.sub.stats().lag_skips)
        else {
            return;
        };
        let Some(lower) = auto.stream.layer(auto.layer + 1) else {
            // The lowest layer: it skips GOPs from here on, as any slow viewer.
            tracing::info!(stream = %auto.id, layer = auto.layer, "HTTP viewer cannot keep up with the lowest layer ({why}): it skips to keyframes");
            self.auto = None;
            return;
        };
        auto.layer += 1;
        auto.fit.moved(now);
        let what = lower
            .layer_info()
            .map(|i| format!(" ({}×{}, {} kbit/s)", i.width, i.height, i.bitrate_kbps))
            .unwrap_or_default();
        tracing::info!(stream = %auto.id, "HTTP viewer moved to layer {}{what}: {why}", auto.layer);
        let after = self.sub.last_pts();
        self.sub = lower.subscribe_next_keyframe(now, after);
    }

    #[cfg(test)]
    fn coalescing_from(mut self, viewers: usize) -> Self {
        self.coalesce_from = viewers;
        self
    }

    async fn next(&mut self) -> Option<Bytes> {
        if self.batch.is_empty() && !self.closed {
            self.fill().await;
        }
        self.batch.pop_front()
    }

    fn arrived(&mut self, now: TokioInstant) {
        if let Some(last) = self.last_arrival {
            self.last_gap = now.saturating_duration_since(last);
        }
        self.last_arrival = Some(now);
    }

    /// Wait for the next chunk, then maybe a little for more (see [`COALESCE_DELAY`]).
    async fn fill(&mut self) {
        let Some(first) = self.sub.next().await else {
            self.closed = true;
            return;
        };
        // tokio's clock (the same as std's unless a test paused it).
        let start = TokioInstant::now();
        self.arrived(start);
        let mut held = std::mem::take(&mut self.held);
        held.push(first);
        self.sub.drain_into(start.into_std(), &mut held, MAX_BATCH);
        let deadline = start + COALESCE_DELAY;
        loop {
            let bytes: usize = held.iter().map(Bytes::len).sum();
            let hold = held.len() < COALESCE_CHUNKS
                && bytes < COALESCE_BYTES
                && self.last_gap < COALESCE_DELAY
                && self.sub.audience() >= self.coalesce_from;
            if !hold {
                break;
            }
            match tokio::time::timeout_at(deadline, self.sub.next()).await {
                Ok(Some(b)) => {
                    let now = TokioInstant::now();
                    self.arrived(now);
                    held.push(b);
                    self.sub.drain_into(now.into_std(), &mut held, MAX_BATCH);
                }
                Ok(None) => {
                    self.closed = true;
                    break;
                }
                // Nothing more came in time: send what is held.
                Err(_) => break,
            }
        }
        self.batch.extend(held.drain(..));
        self.held = held;
        self.check_fit(TokioInstant::now().into_std());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Hub, HubConfig};

    fn hub_with_keyframe() -> Hub {
        let hub = Hub::new(HubConfig::default());
        hub.begin_run(None);
        hub.set_psi(Bytes::from_static(b"PSI"));
        hub.publish(
            Bytes::from_static(b"K0"),
            true,
            TokioInstant::now().into_std(),
        );
        hub
    }

    /// Publish `n` small chunks, one every `every`.
    fn publish_every(hub: &Hub, every: Duration, n: usize) {
        let hub = hub.clone();
        tokio::spawn(async move {
            for i in 0..n {
                tokio::time::sleep(every).await;
                hub.publish(
                    Bytes::from(format!("P{i}")),
                    false,
                    TokioInstant::now().into_std(),
                );
            }
        });
    }

    /// (ms since `t0` when the batch was ready, its chunks).
    async fn batch(v: &mut Viewer<()>, t0: TokioInstant) -> (u128, Vec<Bytes>) {
        v.fill().await;
        (t0.elapsed().as_millis(), v.batch.drain(..).collect())
    }

    #[tokio::test(start_paused = true)]
    async fn at_30_frames_per_second_two_chunks_share_a_write() {
        let hub = hub_with_keyframe();
        let t0 = TokioInstant::now();
        let mut v = Viewer::new(hub.subscribe(t0.into_std()), ()).coalescing_from(1);
        // The join goes out at once: PSI + the cached GOP in one write.
        assert_eq!(
            batch(&mut v, t0).await,
            (
                0,
                vec![Bytes::from_static(b"PSI"), Bytes::from_static(b"K0")]
            )
        );
        publish_every(&hub, Duration::from_millis(33), 7);
        // Then pairs: P0 (33 ms) waits for P1 (66 ms), and so on.
        let (at, b) = batch(&mut v, t0).await;
        assert_eq!((at, b.len()), (66, 2));
        let (at, b) = batch(&mut v, t0).await;
        assert_eq!((at, b.len()), (132, 2));
        let (at, b) = batch(&mut v, t0).await;
        assert_eq!((at, b.len()), (198, 2));
        assert_eq!(
            b,
            vec![Bytes::from_static(b"P4"), Bytes::from_static(b"P5")]
        );
        // The last chunk has no partner: it goes after COALESCE_DELAY, not later.
        let (at, b) = batch(&mut v, t0).await;
        assert_eq!((at, b.len()), (231 + COALESCE_DELAY.as_millis(), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_audience_gets_every_chunk_at_once() {
        let hub = hub_with_keyframe();
        let t0 = TokioInstant::now();
        // The default gate: one viewer is far below COALESCE_MIN_VIEWERS.
        let mut v = Viewer::new(hub.subscribe(t0.into_std()), ());
        batch(&mut v, t0).await;
        publish_every(&hub, Duration::from_millis(33), 3);
        for k in 1..=3u128 {
            let (at, b) = batch(&mut v, t0).await;
            assert_eq!(
                (at, b.len()),
                (33 * k, 1),
                "no added latency for a few viewers"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_stream_is_sent_as_it_comes() {
        let hub = hub_with_keyframe();
        let t0 = TokioInstant::now();
        let mut v = Viewer::new(hub.subscribe(t0.into_std()), ()).coalescing_from(1);
        batch(&mut v, t0).await;
        publish_every(&hub, Duration::from_millis(100), 3);
        for k in 1..=3u128 {
            let (at, b) = batch(&mut v, t0).await;
            assert_eq!(
                (at, b.len()),
                (100 * k, 1),
                "no hold when chunks are {COALESCE_DELAY:?}+ apart"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn big_chunks_are_not_held() {
        let hub = hub_with_keyframe();
        let t0 = TokioInstant::now();
        let mut v = Viewer::new(hub.subscribe(t0.into_std()), ()).coalescing_from(1);
        batch(&mut v, t0).await;
        let h = hub.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                h.publish(
                    Bytes::from(vec![0x47; COALESCE_BYTES]),
                    false,
                    TokioInstant::now().into_std(),
                );
            }
        });
        for k in 1..=3u128 {
            let (at, b) = batch(&mut v, t0).await;
            assert_eq!((at, b.len()), (10 * k, 1));
        }
    }
}
