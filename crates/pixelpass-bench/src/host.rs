//! A host in the benchmark's own process ([`pixelpass::host`], wired as
//! `pixelpass host` wires it), all on 127.0.0.1 (used by `join` and `latency`).

use std::time::Duration;

use pixelpass::capture::PipelineConfig;
use pixelpass::egress::publish::PublishOptions;
use pixelpass::egress::whep::WebRtcArgs;
use pixelpass::host::{Host, HostOptions};
use pixelpass::supervisor::Policy;

pub type BenchHost = Host;

/// Start serving on loopback (capture starts with the first viewer, as in `host`).
pub async fn start(cfg: PipelineConfig, policy: Policy, token: &str) -> anyhow::Result<Host> {
    start_publishing(cfg, policy, token, None).await
}

/// [`start`], also publishing to WHIP endpoints (`host --publish`).
pub async fn start_publishing(
    cfg: PipelineConfig,
    policy: Policy,
    token: &str,
    publish: Option<PublishOptions>,
) -> anyhow::Result<Host> {
    Host::start(HostOptions {
        pipeline: cfg,
        listen: "127.0.0.1:0".parse()?,
        webrtc: WebRtcArgs {
            webrtc_udp: "127.0.0.1:0".parse()?,
            ..WebRtcArgs::default()
        },
        policy,
        token: token.into(),
        tls: None,
        publish,
        record: None,
        limits: pixelpass::http::Limits::default(),
    })
    .await
}

/// Close the peers, then stop capture (the host's teardown order).
pub async fn stop(host: Host) {
    if !host.shutdown(Duration::from_secs(6)).await {
        tracing::warn!("the benchmark's host did not stop within 6 s");
    }
}
