//! [`Remux`]: HTTP-TS for a stream whose media arrives as RTP (a WHIP
//! publisher): the hub's RTP tracks, converted ONCE per stream into MPEG-TS
//! on the same hub's TS side, so HTTP-TS viewers of a published stream get
//! what they get from the host (keyframe starts, GOP cache, lag skips).
//!
//! The publisher's H.264 is depacketized and muxed as is (any profile, no
//! re-encode); Opus is decoded and encoded once as AAC, with the host's AAC
//! encoder. The graph is in [`graph`]; the hub → appsrc task in [`feed`];
//! the TS leaves through the host's appsink and ingest thread.
//!
//! One remux serves one producer run: start it after `Hub::begin_run`, stop
//! it before the next run begins (a new publisher's SSRC and timestamps
//! start a new remux).

mod feed;
mod graph;

use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::mpsc;

use super::appsink::{self, SinkCounters};
use super::bus::BusWatch;
use super::error::{check_elements, PipelineError};
use crate::hub::Hub;
use crate::ingest::{self, IngestStats};
use crate::supervisor::ProducerError;

pub use graph::{AUDIO_ELEMENTS, JITTER_LATENCY_MS, VIDEO_ELEMENTS};

/// What a remux has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemuxStats {
    /// RTP packets pushed into the graph, per track.
    pub video_packets: u64,
    pub audio_packets: u64,
    /// RTP packets missed because the remux fell behind the hub.
    pub lagged: u64,
    /// RTP packets of another payload type than the track's, left out.
    pub ignored: u64,
    /// MPEG-TS bytes handed to the hub.
    pub ts_bytes: u64,
}

/// A running conversion of one stream's RTP into its TS. Stops its graph,
/// task and threads on [`stop`](Self::stop) or, synchronously, when dropped.
pub struct Remux {
    running: Option<Running>,
    failures: mpsc::UnboundedReceiver<ProducerError>,
    feed: Arc<feed::FeedCounters>,
    sink: Arc<SinkCounters>,
}

impl Remux {
    /// Start converting `hub`'s RTP tracks (H.264 of payload type
    /// `video_pt`; Opus of `audio_pt`, `None`: no audio) into its TS side.
    /// Call from within a tokio runtime (the feed is a task on it); the
    /// graph is built and set playing before this returns (no media wait).
    pub fn start(hub: Hub, video_pt: u8, audio_pt: Option<u8>) -> Result<Self, PipelineError> {
        super::init()?;
        check_elements(VIDEO_ELEMENTS.iter().copied())?;
        if audio_pt.is_some() {
            check_elements(AUDIO_ELEMENTS.iter().copied())?;
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| PipelineError::Thread {
            what: "remux feed",
            message: format!("no tokio runtime to run it on ({e})"),
        })?;
        let g = graph::build_graph(video_pt, audio_pt)?;
        let (fail_tx, failures) = mpsc::unbounded_channel();
        let (tx, rx) = std_mpsc::sync_channel(ingest::CHANNEL_CAPACITY);
        let ingest = ingest::spawn(rx, hub.clone(), "pixelpass-remux-ingest").map_err(|e| {
            PipelineError::Thread {
                what: "remux ingest",
                message: e.to_string(),
            }
        })?;
        let sink = Arc::new(SinkCounters::default());
        appsink::attach(&g.appsink, tx, sink.clone());
        // From here on, `running` owns every thread: an early return tears it all down.
        let mut running = Running {
            pipeline: g.pipeline,
            appsink: g.appsink,
            feed: None,
            bus: None,
            ingest: Some(ingest),
        };
        running.bus = Some(BusWatch::spawn(&running.pipeline, fail_tx)?);
        if let Err(e) = running.pipeline.set_state(gst::State::Playing) {
            running.shutdown();
            return Err(PipelineError::StateChange {
                state: "PLAYING".into(),
                message: e.to_string(),
            });
        }
        // Subscribe only now: packets pushed before PLAYING would get no timestamp.
        let counters = Arc::new(feed::FeedCounters::default());
        let video = feed::Input {
            src: g.video,
            payload_type: video_pt,
        };
        let audio = g
            .audio
            .zip(audio_pt)
            .map(|(src, payload_type)| feed::Input { src, payload_type });
        running.feed = Some(runtime.spawn(feed::run(
            hub.rtp_receivers(),
            video,
            audio,
            counters.clone(),
        )));
        Ok(Self {
            running: Some(running),
            failures,
            feed: counters,
            sink,
        })
    }

    /// Stop the feed, then the graph (off the async threads), then the
    /// ingest thread once it has flushed the last TS into the hub.
    pub async fn stop(mut self) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        if let Some(feed) = running.feed.take() {
            feed.abort();
            // Cancelled is the expected outcome; a panic in the feed is logged.
            if let Err(e) = feed.await {
                if e.is_panic() {
                    tracing::error!("the remux feed panicked");
                }
            }
        }
        if let Err(e) = tokio::task::spawn_blocking(move || running.shutdown()).await {
            tracing::error!("remux shutdown panicked: {e}");
        }
    }

    /// The next runtime failure (a GStreamer ERROR, named by element), for
    /// the caller to report and act on; `None` once the remux is stopped.
    /// Cancel-safe: use it in `select!`.
    pub async fn failure(&mut self) -> Option<ProducerError> {
        self.failures.recv().await
    }

    pub fn stats(&self) -> RemuxStats {
        let f = &self.feed;
        RemuxStats {
            video_packets: f.video_packets.load(Ordering::Relaxed),
            audio_packets: f.audio_packets.load(Ordering::Relaxed),
            lagged: f.lagged.load(Ordering::Relaxed),
            ignored: f.ignored.load(Ordering::Relaxed),
            ts_bytes: self.sink.bytes.load(Ordering::Relaxed),
        }
    }
}

/// Everything one remux holds.
struct Running {
    pipeline: gst::Pipeline,
    appsink: gst_app::AppSink,
    feed: Option<tokio::task::JoinHandle<()>>,
    bus: Option<BusWatch>,
    ingest: Option<JoinHandle<IngestStats>>,
}

impl Running {
    /// Idempotent: NULL, close the ingest channel, end the bus and ingest threads.
    fn shutdown(&mut self) {
        if let Err(e) = self.pipeline.set_state(gst::State::Null) {
            tracing::error!("remux pipeline did not go to NULL: {e}");
        }
        appsink::detach(&self.appsink);
        if let Some(mut bus) = self.bus.take() {
            bus.stop();
        }
        if let Some(ingest) = self.ingest.take() {
            match ingest.join() {
                Ok(stats) => tracing::debug!(
                    bytes = stats.bytes,
                    idle_flushes = stats.idle_flushes,
                    "remux ended"
                ),
                Err(_) => tracing::error!("the remux ingest thread panicked"),
            }
        }
    }
}

/// A remux dropped without `stop` (or a start that failed half-way) is torn
/// down here, synchronously.
impl Drop for Running {
    fn drop(&mut self) {
        if let Some(feed) = self.feed.take() {
            feed.abort();
        }
        if self.ingest.is_some() || self.bus.is_some() {
            self.shutdown();
        }
    }
}

#[cfg(test)]
mod tests;
