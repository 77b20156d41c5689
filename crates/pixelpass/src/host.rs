//! `pixelpass host` wired once: the GStreamer producer with its RTP branch,
//! the supervisor and hub, the HTTP server and WHEP — used by the `host`
//! command and by the benchmarks that need a host in their own process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::capture::{self, EncoderChoice, GstProducer, PipelineConfig, RtpOutput};
use crate::egress::publish::{PublishOptions, PublishStatus, Publisher};
use crate::egress::whep::{WebRtcArgs, Whep};
use crate::http::{self, Limits};
use crate::hub::{Hub, HubConfig};
use crate::registry::{Registry, StreamEntry};
use crate::supervisor::{Policy, Supervisor};

/// What a host is started with.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub pipeline: PipelineConfig,
    pub listen: SocketAddr,
    pub webrtc: WebRtcArgs,
    pub policy: Policy,
    /// The secret part of every viewer URL.
    pub token: String,
    /// HTTPS on `listen` when given.
    pub tls: Option<http::Tls>,
    /// `--publish`: send the stream to WHIP relays too (capture then runs
    /// whoever watches locally).
    pub publish: Option<PublishOptions>,
    /// `--record DIR`: write the stream to fragmented MP4 files too
    /// (capture then runs whoever watches).
    pub record: Option<crate::egress::hls::record::RecordOptions>,
    /// The HTTP listener's limits (`--max-connections`, header timeout).
    pub limits: Limits,
}

/// A running host: serving, capture started by the first viewer.
pub struct Host {
    pub http: SocketAddr,
    pub token: String,
    pub encoder: EncoderChoice,
    pub supervisor: Supervisor,
    whep: Whep,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    /// The listener speaks HTTPS.
    pub https: bool,
    publisher: Option<Publisher>,
    recorder: Option<crate::egress::hls::record::Recorder>,
    /// Gives freed heap back once viewers have left ([`crate::heap`]).
    heap_trim: JoinHandle<()>,
}

impl Host {
    /// Check the pipeline can run here, bind the HTTP listener and the WebRTC
    /// socket, and start serving.
    pub async fn start(opts: HostOptions) -> anyhow::Result<Self> {
        capture::init()?;
        let encoder = capture::preflight(&opts.pipeline)?;
        tracing::info!("encoder: {encoder}");
        let layers = opts.pipeline.layers;
        tracing::info!("layers: {}", capture::layers::describe(&opts.pipeline));
        let producer = GstProducer::new(opts.pipeline, encoder).with_rtp(RtpOutput {
            video_pt: opts.webrtc.video_pt,
            audio_pt: opts.webrtc.audio_pt,
        })?;
        let listener = http::bind(opts.listen).await?;
        let local = listener
            .local_addr()
            .context("cannot read the listening address")?;
        let whep = Whep::start(&opts.webrtc).await?;
        let mut policy = opts.policy;
        if opts.publish.is_some() || opts.record.is_some() {
            // The relay does not say who watches: capture runs while publishing.
            policy.on_demand = false;
        }
        let supervisor = Supervisor::spawn(
            policy,
            Hub::with_layers(HubConfig::default(), layers),
            Arc::new(producer),
        );
        let registry = Registry::new();
        registry.insert(StreamEntry::new(
            "host",
            opts.token.clone(),
            supervisor.clone(),
        ));
        let publisher = match opts.publish {
            Some(mut p) => {
                p.producer_pts = (opts.webrtc.video_pt, opts.webrtc.audio_pt);
                match Publisher::start(p, supervisor.hub().clone()) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        whep.shutdown().await;
                        supervisor.shutdown().await;
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        let recorder = match opts.record {
            Some(r) => {
                match crate::egress::hls::record::Recorder::start(r, supervisor.hub().clone()) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        if let Some(p) = publisher {
                            p.stop().await;
                        }
                        whep.shutdown().await;
                        supervisor.shutdown().await;
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        capture::fault::arm_on_sigusr1();
        let (stop, stop_rx) = watch::channel(false);
        let https = opts.tls.is_some();
        let server = tokio::spawn(http::serve_tls(
            listener,
            http::router_with(registry, Some(whep.clone())),
            opts.limits,
            opts.tls,
            stop_rx,
        ));
        let counted = supervisor.clone();
        let heap_trim = crate::heap::spawn(move || counted.status().viewers);
        Ok(Self {
            http: local,
            token: opts.token,
            encoder,
            supervisor,
            whep,
            stop,
            server,
            https,
            publisher,
            recorder,
            heap_trim,
        })
    }

    pub fn hub(&self) -> &Hub {
        self.supervisor.hub()
    }

    /// The one UDP socket of every WebRTC viewer.
    pub fn webrtc_udp(&self) -> SocketAddr {
        self.whep.local_addr()
    }

    /// `/TOKEN/stream.ts`.
    pub fn stream_path(&self) -> String {
        format!("/{}/stream.ts", self.token)
    }

    pub fn whep_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}/{}/whep", self.http, self.token)
    }

    /// `--publish` targets' state, once each first POST was answered or
    /// failed (waiting at most `within`); empty without `--publish`.
    pub async fn publish_status(&self, within: Duration) -> Vec<PublishStatus> {
        match &self.publisher {
            Some(p) => p.first_answers(within).await,
            None => Vec::new(),
        }
    }

    /// Stop accepting, end the publish sessions (DELETE) and close the
    /// WebRTC peers, then stop capture (the error matrix's teardown order),
    /// within `budget`. False when it ran out.
    pub async fn shutdown(self, budget: Duration) -> bool {
        let _ = self.stop.send(true);
        self.heap_trim.abort();
        let stop_all = async {
            if let Some(p) = self.publisher {
                p.stop().await;
            }
            if let Some(r) = self.recorder {
                r.stop().await;
            }
            self.whep.shutdown().await;
            self.supervisor.shutdown().await;
        };
        let done = tokio::time::timeout(budget, stop_all).await.is_ok();
        self.server.abort();
        done
    }
}
