//! A host in the benchmark's own process, wired as `pixelpass host` wires
//! it: the GStreamer producer with its RTP branch, the supervisor, the HTTP
//! server and WHEP, all on 127.0.0.1 (used by `bench join` and `bench latency`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::egress::whep::{WebRtcArgs, Whep};
use crate::hub::{Hub, HubConfig};
use crate::pipeline::{self, EncoderChoice, GstProducer, PipelineConfig, RtpOutput};
use crate::server::{self, Limits, Registry, StreamEntry};
use crate::supervisor::{Policy, Supervisor};

pub struct BenchHost {
    pub http: SocketAddr,
    pub token: String,
    pub encoder: EncoderChoice,
    pub supervisor: Supervisor,
    whep: Whep,
    stop: watch::Sender<bool>,
}

impl BenchHost {
    /// Start serving (capture starts with the first viewer, as in `host`).
    pub async fn start(cfg: PipelineConfig, policy: Policy, token: &str) -> anyhow::Result<Self> {
        pipeline::init()?;
        let encoder = pipeline::preflight(&cfg)?;
        let producer = GstProducer::new(cfg, encoder).with_rtp(RtpOutput::default())?;
        let webrtc = WebRtcArgs {
            webrtc_udp: "127.0.0.1:0".parse()?,
            ..WebRtcArgs::default()
        };
        let whep = Whep::start(&webrtc).await?;
        let supervisor =
            Supervisor::spawn(policy, Hub::new(HubConfig::default()), Arc::new(producer));
        let registry = Registry::new();
        registry.insert(StreamEntry::new("host", token, supervisor.clone()));
        let listener = server::bind("127.0.0.1:0".parse()?).await?;
        let http = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(server::serve(
            listener,
            server::router_with(registry, Some(whep.clone())),
            Limits::default(),
            stop_rx,
        ));
        Ok(Self {
            http,
            token: token.into(),
            encoder,
            supervisor,
            whep,
            stop,
        })
    }

    pub fn hub(&self) -> &Hub {
        self.supervisor.hub()
    }

    /// `/TOKEN/stream.ts`.
    pub fn stream_path(&self) -> String {
        format!("/{}/stream.ts", self.token)
    }

    pub fn whep_url(&self) -> String {
        format!("http://{}/{}/whep", self.http, self.token)
    }

    /// Close the peers, then stop capture (the host's teardown order).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(3), self.whep.shutdown()).await;
        let _ = tokio::time::timeout(Duration::from_secs(3), self.supervisor.shutdown()).await;
    }
}
