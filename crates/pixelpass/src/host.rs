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
}

impl Host {
    /// Check the pipeline can run here, bind the HTTP listener and the WebRTC
    /// socket, and start serving.
    pub async fn start(opts: HostOptions) -> anyhow::Result<Self> {
        capture::init()?;
        let encoder = capture::preflight(&opts.pipeline)?;
        tracing::info!("encoder: {encoder}");
        let producer = GstProducer::new(opts.pipeline, encoder).with_rtp(RtpOutput {
            video_pt: opts.webrtc.video_pt,
            audio_pt: opts.webrtc.audio_pt,
        })?;
        let listener = http::bind(opts.listen).await?;
        let local = listener
            .local_addr()
            .context("cannot read the listening address")?;
        let whep = Whep::start(&opts.webrtc).await?;
        let supervisor = Supervisor::spawn(
            opts.policy,
            Hub::new(HubConfig::default()),
            Arc::new(producer),
        );
        let registry = Registry::new();
        registry.insert(StreamEntry::new(
            "host",
            opts.token.clone(),
            supervisor.clone(),
        ));
        let (stop, stop_rx) = watch::channel(false);
        let https = opts.tls.is_some();
        let server = tokio::spawn(http::serve_tls(
            listener,
            http::router_with(registry, Some(whep.clone())),
            Limits::default(),
            opts.tls,
            stop_rx,
        ));
        Ok(Self {
            http: local,
            token: opts.token,
            encoder,
            supervisor,
            whep,
            stop,
            server,
            https,
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

    /// Stop accepting, close the WebRTC peers, then stop capture (the error
    /// matrix's teardown order), within `budget`. False when it ran out.
    pub async fn shutdown(self, budget: Duration) -> bool {
        let _ = self.stop.send(true);
        let stop_all = async {
            self.whep.shutdown().await;
            self.supervisor.shutdown().await;
        };
        let done = tokio::time::timeout(budget, stop_all).await.is_ok();
        self.server.abort();
        done
    }
}
