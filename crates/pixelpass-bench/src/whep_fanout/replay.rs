//! Recording the real pipeline's RTP, and [`RtpReplay`]: the producer that
//! replays an [`RtpSample`] into the hub in real time, lap after lap.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use super::sample::RtpSample;
use crate::replay::{paced_laps, ReplayRun};
use pixelpass::capture::source::SourceKind;
use pixelpass::capture::{self, GstProducer, PipelineConfig, RtpOutput};
use pixelpass::hub::{Hub, HubConfig, Track};
use pixelpass::supervisor::{BoxFuture, Producer, ProducerError, Run};

/// Record `seconds` of the real pipeline's RTP output.
pub(super) async fn record(bitrate: u32, seconds: u64) -> anyhow::Result<RtpSample> {
    capture::init()?;
    let cfg = PipelineConfig {
        source: SourceKind::Test,
        framerate: 30,
        bitrate_kbps: bitrate,
        width: Some(1280),
        height: Some(720),
        ..PipelineConfig::default()
    };
    let encoder = capture::preflight(&cfg)?;
    let producer = GstProducer::new(cfg, encoder).with_rtp(RtpOutput::default())?;
    let hub = Hub::new(HubConfig::default());
    let mut rx = hub.rtp_receivers();
    let run = producer
        .start(hub.clone())
        .await
        .map_err(|e| anyhow::anyhow!("the pipeline did not start: {e}"))?;
    let mut pkts = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let r = tokio::select! {
            r = rx.video.recv() => r,
            r = rx.audio.recv() => r,
            _ = tokio::time::sleep_until(until) => break,
        };
        match r {
            Ok(p) => pkts.push(p),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                bail!("the recorder fell {n} packets behind")
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
    run.handle.stop().await;
    eprintln!(
        "recorded {seconds} s of {encoder} RTP ({} packets)",
        pkts.len()
    );
    RtpSample::from_recording(&pkts)
}

/// Replays an [`RtpSample`] into the hub in real time (a [`Producer`]).
pub struct RtpReplay {
    pub(super) sample: Arc<RtpSample>,
    pub(super) late_us: Arc<AtomicU64>,
}

impl Producer for RtpReplay {
    fn start(&self, hub: Hub) -> BoxFuture<Result<Run, ProducerError>> {
        let sample = self.sample.clone();
        let late = self.late_us.clone();
        Box::pin(async move {
            // No keyframes on demand: peers start on the cached GOP.
            hub.begin_run(None);
            let stop = Arc::new(AtomicBool::new(false));
            let (failures_tx, failures) = tokio::sync::mpsc::unbounded_channel();
            let flag = stop.clone();
            let thread = std::thread::Builder::new()
                .name("whep-replay".into())
                .spawn(move || {
                    replay(&hub, &sample, &flag, &late);
                    drop(failures_tx);
                })
                .map_err(|e| {
                    ProducerError::start_failed(format!("cannot start the replay thread: {e}"))
                })?;
            Ok(Run {
                encoder: "rtp-replay".into(),
                failures,
                handle: Box::new(ReplayRun {
                    stop,
                    thread: Some(thread),
                }),
            })
        })
    }
}

fn replay(hub: &Hub, sample: &RtpSample, stop: &AtomicBool, late_us: &AtomicU64) {
    let (mut vseq, mut aseq) = (0u16, 0u16);
    paced_laps(
        &sample.packets,
        |p| p.offset,
        sample.period,
        stop,
        |p, lap, now, late| {
            late_us.fetch_max(late, Ordering::Relaxed);
            let seq = match p.track {
                Track::Video => {
                    vseq = vseq.wrapping_add(1);
                    vseq
                }
                Track::Audio => {
                    aseq = aseq.wrapping_add(1);
                    aseq
                }
            };
            let _ = hub.publish_rtp(p.track, &sample.packet(p, lap, seq), now);
        },
    );
}
