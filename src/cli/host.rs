//! `pixelpass host`: wire source → pipeline → hub → HTTP, with the supervisor beside it.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use super::{banner, HostArgs};
use crate::egress::whep::Whep;
use crate::hub::{Hub, HubConfig};
use crate::pipeline::{self, GstProducer, PipelineConfig, RtpOutput};
use crate::server::{self, Limits, Registry, StreamEntry};
use crate::supervisor::{Policy, Supervisor};
use crate::{source, token};

/// SIGINT/SIGTERM must end the process within 2 s; the producer gets this long to stop.
const STOP_BUDGET: Duration = Duration::from_millis(1500);

pub fn run(args: HostArgs) -> anyhow::Result<ExitCode> {
    if !(args.linger.is_finite() && args.linger >= 0.0 && args.linger <= 86_400.0) {
        anyhow::bail!(
            "--linger must be between 0 and 86400 seconds, not {}",
            args.linger
        );
    }
    let token = match &args.token {
        Some(t) => {
            token::validate(t).map_err(|e| anyhow::anyhow!("--token / PIXELPASS_TOKEN: {e}"))?;
            t.clone()
        }
        None => token::generate()?,
    };
    super::block_on(host(args, token))
}

async fn host(args: HostArgs, token: String) -> anyhow::Result<ExitCode> {
    pipeline::init()?;
    let (source, notice) = source::resolve(args.source, args.display.as_deref()).await;
    if let Some(notice) = &notice {
        eprintln!("pixelpass: {notice}");
    }
    if args.pick {
        let target = if args.window {
            source::portal::Target::Window
        } else {
            source::portal::Target::Monitor
        };
        if let Some(store) = source::portal::TokenStore::for_target(target) {
            store.clear();
        }
    }
    let (audio, audio_source) = args.audio.split();
    let cfg = PipelineConfig {
        source,
        window: args.window,
        display: args.display.clone(),
        framerate: args.framerate,
        bitrate_kbps: args.bitrate,
        width: args.width,
        height: args.height,
        audio,
        audio_source,
    };
    let encoder = pipeline::preflight(&cfg)?;
    tracing::info!("encoder: {encoder}");

    let producer = GstProducer::new(cfg, encoder).with_rtp(RtpOutput {
        video_pt: args.webrtc.video_pt,
        audio_pt: args.webrtc.audio_pt,
    })?;

    let listener = server::bind(args.listen).await?;
    let local = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let whep = Whep::start(&args.webrtc).await?;

    let policy = Policy {
        max_viewers: args.max_viewers as usize,
        linger: Duration::from_secs_f64(args.linger),
        ..Policy::default()
    };
    let hub = Hub::new(HubConfig::default());
    let supervisor = Supervisor::spawn(policy, hub, Arc::new(producer));
    let registry = Registry::new();
    registry.insert(StreamEntry::new("host", token.clone(), supervisor.clone()));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let server = tokio::spawn(server::serve(
        listener,
        server::router_with(registry, Some(whep.clone())),
        Limits::default(),
        shutdown_rx,
    ));

    let info = banner::Info {
        local,
        token: &token,
        source: source_label(source),
        encoder: encoder.to_string(),
        encoder_element: encoder.element,
        max_viewers: args.max_viewers,
        linger: args.linger,
        webrtc_udp: whep.local_addr(),
    };
    if args.json {
        banner::print_json(&info)?;
    } else {
        banner::print_human(&info);
    }

    super::wait_for_signal().await?;
    tracing::info!("stopping");
    let _ = shutdown_tx.send(true);
    let stop_all = async {
        // Peers first, then the producer (the error matrix's teardown order).
        whep.shutdown().await;
        supervisor.shutdown().await;
    };
    if tokio::time::timeout(STOP_BUDGET, stop_all).await.is_err() {
        tracing::warn!(
            "capture did not stop within {} ms; exiting anyway",
            STOP_BUDGET.as_millis()
        );
    }
    server.abort();
    Ok(ExitCode::SUCCESS)
}

fn source_label(kind: source::SourceKind) -> &'static str {
    match kind {
        source::SourceKind::Test => "test pattern",
        source::SourceKind::Portal => "desktop (screen-cast portal)",
        source::SourceKind::X11 => "X11 display",
        source::SourceKind::Clock => "clock (test pattern stamped with the time)",
        source::SourceKind::Auto => "auto",
    }
}
