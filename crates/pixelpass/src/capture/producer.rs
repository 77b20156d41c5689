//! [`GstProducer`]: one run = one pipeline feeding the hub.
//!
//! Start: (portal source: get a screencast from the portal first, which may
//! show its dialog), build the graph, spawn the ingest thread and the bus
//! watch, tell the hub a run begins (with the encoder as keyframe source), go
//! to PLAYING, and resolve once the hub has its first chunk — or with the
//! first bus ERROR, or after [`START_TIMEOUT`]. Stop: NULL, then end the
//! ingest and bus threads, then close the portal session; nothing is left
//! running. A run dropped without `stop` (e.g. a cancelled start) is torn
//! down the same way by `Drop` (the portal session then ends with its D-Bus
//! connection).

use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::mpsc;

use super::appsink::{self, SinkCounters};
use super::bus::BusWatch;
use super::encoder::{EncoderChoice, EncoderKeyframes};
use super::error::PipelineError;
use super::graph;
use super::layers;
use super::rtp::{self, RtpOutput, RtpSinks};
use super::PipelineConfig;
use crate::capture::source::portal::{PortalCapture, PortalError, Target, TokenStore};
use crate::capture::source::SourceKind;
use crate::hub::Hub;
use crate::ingest::{self, IngestStats};
use crate::supervisor::{BoxFuture, Producer, ProducerError, Run, RunHandle};

/// How long a start may take until the hub has media.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a start checks whether the hub got its first chunk.
const START_POLL: Duration = Duration::from_millis(5);

/// A look into a run: the pipeline (weakly: it is freed when the run stops)
/// and what the appsink saw.
pub struct RunProbe {
    pub pipeline: glib::WeakRef<gst::Pipeline>,
    pub counters: Arc<SinkCounters>,
}

pub struct GstProducer {
    cfg: PipelineConfig,
    encoder: EncoderChoice,
    rtp: Option<RtpOutput>,
}

impl GstProducer {
    pub fn new(cfg: PipelineConfig, encoder: EncoderChoice) -> Self {
        Self {
            cfg,
            encoder,
            rtp: None,
        }
    }

    /// Also feed the hub's RTP tracks (for WebRTC viewers) from the same
    /// encoder; fails at once when an element of that branch is missing.
    pub fn with_rtp(mut self, out: RtpOutput) -> Result<Self, PipelineError> {
        super::error::check_elements(rtp::ELEMENTS.iter().copied())?;
        self.rtp = Some(out);
        Ok(self)
    }

    pub fn encoder(&self) -> EncoderChoice {
        self.encoder
    }

    /// [`Producer::start`], also handing out a [`RunProbe`] for tests and diagnostics.
    pub fn start_run(
        &self,
        hub: Hub,
    ) -> impl std::future::Future<Output = Result<(Run, RunProbe), ProducerError>> + Send + 'static
    {
        let cfg = self.cfg.clone();
        let choice = self.encoder;
        let rtp_out = self.rtp;
        async move {
            let (fail_tx, mut failures) = mpsc::unbounded_channel();
            let capture = match cfg.source {
                SourceKind::Portal => Some(open_portal(cfg.window, fail_tx.clone()).await?),
                _ => None,
            };
            let stream = capture.as_ref().map(PortalCapture::stream);
            let baseline = hub.stats().chunks;
            let launch_hub = hub.clone();
            let launched = tokio::task::spawn_blocking(move || {
                Running::launch(&cfg, choice, rtp_out, launch_hub, fail_tx, stream)
            })
            .await
            .map_err(|e| ProducerError::start_failed(format!("pipeline start panicked: {e}")));
            let running = match launched {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    close_portal(capture).await;
                    // A failed state change has its reason on the bus: the
                    // watch handled it before `launch` returned.
                    let e = failures.try_recv().unwrap_or_else(|_| e.into());
                    return Err(e.while_starting());
                }
                Err(e) => {
                    close_portal(capture).await;
                    return Err(e);
                }
            };
            let probe = RunProbe {
                pipeline: running.pipeline.downgrade(),
                counters: running.counters.clone(),
            };
            let deadline = tokio::time::Instant::now() + START_TIMEOUT;
            let mut tick = tokio::time::interval(START_POLL);
            let outcome = loop {
                tokio::select! {
                    failure = failures.recv() => {
                        let failure = failure.unwrap_or_else(|| ProducerError::start_failed("the pipeline stopped while starting"));
                        break Err(failure.while_starting());
                    }
                    _ = tick.tick() => {
                        if hub.stats().chunks > baseline {
                            break Ok(());
                        }
                        if tokio::time::Instant::now() >= deadline {
                            break Err(PipelineError::NoMedia(START_TIMEOUT.as_secs()).into());
                        }
                    }
                }
            };
            match outcome {
                Ok(()) => {
                    let handle = GstRunHandle {
                        running: Some(running),
                        capture,
                    };
                    let run = Run {
                        encoder: choice.element.to_owned(),
                        failures,
                        handle: Box::new(handle),
                    };
                    Ok((run, probe))
                }
                Err(e) => {
                    shutdown_blocking(running).await;
                    close_portal(capture).await;
                    Err(e)
                }
            }
        }
    }
}

impl Producer for GstProducer {
    fn start(&self, hub: Hub) -> BoxFuture<Result<Run, ProducerError>> {
        let fut = self.start_run(hub);
        Box::pin(async move { fut.await.map(|(run, _)| run) })
    }
}

/// A screencast from the portal (a dialog unless a saved selection is
/// restored), as a start error the waiting viewer can read.
async fn open_portal(
    window: bool,
    failures: mpsc::UnboundedSender<ProducerError>,
) -> Result<PortalCapture, ProducerError> {
    let target = if window {
        Target::Window
    } else {
        Target::Monitor
    };
    let store = TokenStore::for_target(target);
    if store.is_none() {
        tracing::warn!("no XDG_STATE_HOME or HOME: the screen selection cannot be remembered");
    }
    let mut capture = PortalCapture::open(target, store.as_ref())
        .await
        .map_err(|e| match e {
            PortalError::Cancelled => ProducerError::cancelled(e.to_string()),
            e => ProducerError::start_failed(e.to_string()),
        })?;
    capture
        .on_closed(store, move || {
            let _ = failures.send(ProducerError::cancelled(
                "the desktop ended the screen share; the next start asks again",
            ));
        })
        .await;
    Ok(capture)
}

async fn close_portal(capture: Option<PortalCapture>) {
    if let Some(c) = capture {
        c.close().await;
    }
}

struct GstRunHandle {
    running: Option<Running>,
    /// The portal's session and PipeWire fd, kept until the pipeline stopped.
    capture: Option<PortalCapture>,
}

impl RunHandle for GstRunHandle {
    fn stop(mut self: Box<Self>) -> BoxFuture<()> {
        let running = self.running.take();
        let capture = self.capture.take();
        Box::pin(async move {
            if let Some(running) = running {
                shutdown_blocking(running).await;
            }
            // The pipeline no longer reads the fd: end the screencast.
            close_portal(capture).await;
        })
    }
}

/// Tear down off the async threads (going to NULL can block briefly).
async fn shutdown_blocking(mut running: Running) {
    if let Err(e) = tokio::task::spawn_blocking(move || running.shutdown()).await {
        tracing::error!("pipeline shutdown panicked: {e}");
    }
}

/// Everything one run holds.
struct Running {
    pipeline: gst::Pipeline,
    /// The TS appsink of each layer, 0 first.
    appsinks: Vec<gst_app::AppSink>,
    rtp: Option<RtpSinks>,
    /// One ingest thread per layer (each feeds its layer hub).
    ingest: Vec<JoinHandle<IngestStats>>,
    bus: Option<BusWatch>,
    /// What layer 0's appsink saw.
    counters: Arc<SinkCounters>,
    started: Instant,
}

impl Running {
    fn launch(
        cfg: &PipelineConfig,
        choice: EncoderChoice,
        rtp_out: Option<RtpOutput>,
        hub: Hub,
        failures: mpsc::UnboundedSender<ProducerError>,
        portal: Option<crate::capture::source::portal::PortalStream>,
    ) -> Result<Self, PipelineError> {
        let graph = graph::build_graph(cfg, choice, rtp_out, portal)?;
        if let Some(enc) = graph.encoders.first() {
            super::fault::set_encoder(enc);
        }
        let keyframes = graph
            .encoders
            .iter()
            .map(EncoderKeyframes::new)
            .collect::<Result<Vec<_>, _>>()?;
        let counters = Arc::new(SinkCounters::default());
        // From here on, `running` owns every thread: an early return tears it all down.
        let mut running = Running {
            pipeline: graph.pipeline,
            appsinks: Vec::new(),
            rtp: None,
            ingest: Vec::new(),
            bus: None,
            counters: counters.clone(),
            started: Instant::now(),
        };
        for (i, sink) in graph.appsinks.into_iter().enumerate() {
            let layer = hub.layer(i).ok_or_else(|| {
                PipelineError::Config(format!(
                    "the graph has layer {i} but the stream's hub has {} layer(s)",
                    hub.layer_count()
                ))
            })?;
            let (tx, rx) = std_mpsc::sync_channel(ingest::CHANNEL_CAPACITY);
            let name = match i {
                0 => "pixelpass-ingest".to_owned(),
                i => format!("pixelpass-ingest-l{i}"),
            };
            let thread = ingest::spawn(rx, layer, &name).map_err(|e| PipelineError::Thread {
                what: "ingest",
                message: e.to_string(),
            })?;
            running.ingest.push(thread);
            let sink_counters = if i == 0 {
                counters.clone()
            } else {
                Arc::new(SinkCounters::default())
            };
            appsink::attach(&sink, tx, sink_counters);
            running.appsinks.push(sink);
        }
        if let Some(sinks) = &graph.rtp {
            rtp::attach(sinks, &hub);
        }
        running.rtp = graph.rtp;
        layers::report_layer_info(&graph.chains, &hub);
        running.bus = Some(BusWatch::spawn(&running.pipeline, failures)?);
        // Layer 0 begins the run for every layer; layers 1.. then get their own encoder.
        let mut keyframes = keyframes.into_iter();
        hub.begin_run(keyframes.next().map(EncoderKeyframes::into_source));
        for (i, kf) in keyframes.enumerate() {
            if let Some(layer) = hub.layer(i + 1) {
                layer.set_keyframe_source(Some(kf.into_source()));
            }
        }
        if let Err(e) = running.pipeline.set_state(gst::State::Playing) {
            running.shutdown();
            return Err(PipelineError::StateChange {
                state: "PLAYING".into(),
                message: e.to_string(),
            });
        }
        Ok(running)
    }

    /// Idempotent: NULL, close the ingest channels, end the threads.
    fn shutdown(&mut self) {
        if let Err(e) = self.pipeline.set_state(gst::State::Null) {
            tracing::error!("pipeline did not go to NULL: {e}");
        }
        // The pipeline is stopped: no streaming thread is in the callback.
        for sink in &self.appsinks {
            appsink::detach(sink);
        }
        if let Some(sinks) = &self.rtp {
            rtp::detach(sinks);
        }
        if let Some(mut bus) = self.bus.take() {
            bus.stop();
        }
        for (i, ingest) in self.ingest.drain(..).enumerate() {
            match ingest.join() {
                Ok(stats) if i == 0 => {
                    let c = &self.counters;
                    tracing::debug!(
                        secs = self.started.elapsed().as_secs_f32(),
                        samples = c.samples.load(Ordering::Relaxed),
                        buffers = c.buffers.load(Ordering::Relaxed),
                        lists = c.lists.load(Ordering::Relaxed),
                        bytes = stats.bytes,
                        idle_flushes = stats.idle_flushes,
                        "pipeline run ended"
                    );
                }
                Ok(stats) => tracing::debug!(layer = i, bytes = stats.bytes, "layer ended"),
                Err(_) => tracing::error!(layer = i, "an ingest thread panicked"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.ingest.is_empty() || self.bus.is_some() {
            self.shutdown();
        }
    }
}
