//! `pixelpass host`: the arguments checked, the source resolved, the host
//! started ([`pixelpass::host`]), the banner printed; then wait for a signal.

use std::process::ExitCode;
use std::time::Duration;

use super::{banner, HostArgs};
use pixelpass::capture::{self, source, PipelineConfig};
use pixelpass::egress::hls::record::RecordOptions;
use pixelpass::egress::publish::PublishOptions;
use pixelpass::host::{Host, HostOptions};
use pixelpass::supervisor::Policy;
use pixelpass::token;

/// SIGINT/SIGTERM must end the process within 2 s; the producer gets this long to stop.
const STOP_BUDGET: Duration = Duration::from_millis(1500);
/// The banner waits this long at most for the relays' first answers (their player pages).
const PUBLISH_BANNER_WAIT: Duration = Duration::from_secs(5);

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
    let tls = args.tls.load()?;
    capture::init()?;
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
    let pipeline = PipelineConfig {
        source,
        window: args.window,
        display: args.display.clone(),
        framerate: args.framerate,
        bitrate_kbps: args.bitrate,
        width: args.width,
        height: args.height,
        audio,
        audio_source,
        layers: args.layers,
    };
    let layers = capture::layers::describe(&pipeline);
    let host = Host::start(HostOptions {
        pipeline,
        listen: args.listen,
        webrtc: args.webrtc.clone(),
        policy: Policy {
            max_viewers: args.max_viewers as usize,
            linger: Duration::from_secs_f64(args.linger),
            ..Policy::default()
        },
        token: token.clone(),
        tls,
        publish: publish_options(&args),
        record: args.record.clone().map(|dir| RecordOptions {
            dir,
            file_length: Duration::from_secs_f64(args.record_minutes * 60.0),
            name: "host".into(),
            keep: Default::default(),
        }),
        limits: args.conn.limits(None),
    })
    .await?;
    let published = host.publish_status(PUBLISH_BANNER_WAIT).await;

    let info = banner::Info {
        local: host.http,
        token: &token,
        source: source_label(source),
        encoder: host.encoder.to_string(),
        encoder_element: host.encoder.element,
        layers: &layers,
        max_viewers: args.max_viewers,
        linger: args.linger,
        webrtc_udp: host.webrtc_udp(),
        https: host.https,
        publish: &published,
    };
    if args.json {
        banner::print_json(&info)?;
    } else {
        banner::print_human(&info);
    }

    super::wait_for_signal().await?;
    tracing::info!("stopping");
    if !host.shutdown(STOP_BUDGET).await {
        tracing::warn!(
            "capture did not stop within {} ms; exiting anyway",
            STOP_BUDGET.as_millis()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `--publish` given: the relays, the token (never printed) and the CA.
fn publish_options(args: &HostArgs) -> Option<PublishOptions> {
    let p = &args.publish;
    if p.publish.is_empty() {
        return None;
    }
    Some(PublishOptions::new(
        p.publish.clone(),
        p.publish_token.clone().filter(|t| !t.is_empty()),
        p.publish_ca.clone(),
    ))
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
