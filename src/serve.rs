//! `pixelpass serve`: the restream server. Config file → streams (FFmpeg
//! producers) → one HTTP server (API, metrics, player pages, stream.ts,
//! WHEP) and one WebRTC UDP socket, until SIGINT/SIGTERM; then WebRTC peers
//! close first, then every FFmpeg process group is ended and reaped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use tokio::sync::watch;

use pixelpass::config::ServeConfig;
use pixelpass::egress::whep::{IceServer, WebRtcArgs, Whep};
use pixelpass::http::api::Api;
use pixelpass::http::{self as server};
use pixelpass::registry::Registry;
use pixelpass::restream::Streams;
use pixelpass::whip::{Whip, WhipConfig};
use pixelpass::{net, token};

/// Default HTTP address of `serve`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default WebRTC UDP address of `serve`.
pub const DEFAULT_WEBRTC_UDP: &str = "0.0.0.0:8189";
/// Default UDP address WHIP publishers send to.
pub const DEFAULT_WHIP_UDP: &str = "0.0.0.0:8190";
/// Every FFmpeg gets SIGTERM, then SIGKILL after a second; all in parallel.
const STOP_BUDGET: Duration = Duration::from_secs(4);

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// The config file (TOML): listen address, API token, [[stream]] tables.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP address and port (API, metrics, player pages, stream.ts, WHEP);
    /// overrides `listen` in the config. Default 0.0.0.0:8080.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// UDP address of the ONE socket all WebRTC viewers use; overrides
    /// `webrtc_udp` in the config. Default 0.0.0.0:8189.
    #[arg(long = "webrtc-udp", value_name = "ADDR:PORT")]
    pub webrtc_udp: Option<SocketAddr>,
    /// UDP address WHIP publishers' media comes to (a socket of its own).
    /// Default 0.0.0.0:8190.
    #[arg(long = "whip-udp", value_name = "ADDR:PORT")]
    pub whip_udp: Option<SocketAddr>,
    /// The public base URL of this server when a reverse proxy in front of it
    /// terminates TLS or adds a path (`https://example.org/pixelpass`): the
    /// `Location` and `Link` headers and printed URLs use it. Without it they
    /// use the request's `Host` and this server's own scheme; X-Forwarded-*
    /// headers are never trusted.
    #[arg(long = "public-url", value_name = "URL")]
    pub public_url: Option<String>,
    /// The API's bearer token; overrides `api_token` in the config. Without
    /// either a random one is made and printed.
    #[arg(long, env = "PIXELPASS_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// An address browsers reach this server at that it does not see itself (repeatable).
    #[arg(long = "public-host", value_name = "HOST[:PORT]")]
    pub public_host: Vec<String>,
    /// A STUN/TURN server handed to browsers (repeatable).
    #[arg(long = "ice-server", value_name = "URL", value_parser = IceServer::parse)]
    pub ice_server: Vec<IceServer>,
    /// Seconds a silent WebRTC viewer keeps its slot.
    #[arg(long = "webrtc-timeout", value_name = "SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=30))]
    pub webrtc_timeout: u64,
    /// Refuse new WebRTC viewers (`503` + `Retry-After`) while the engine
    /// is busy this share of the time, in percent; 100: never.
    #[arg(long = "webrtc-max-load", value_name = "PERCENT", default_value_t = pixelpass::egress::whep::DEFAULT_MAX_LOAD, env = pixelpass::egress::whep::MAX_LOAD_ENV, value_parser = clap::value_parser!(u8).range(10..=100))]
    pub webrtc_max_load: u8,
    #[command(flatten)]
    pub tls: pixelpass::http::TlsArgs,
    #[command(flatten)]
    pub conn: pixelpass::http::ConnArgs,
    /// Print one JSON line with the addresses and stream URLs instead of the banner.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => ServeConfig::load(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => ServeConfig::default(),
    };
    let api_token = match args.api_token.clone().or_else(|| config.api_token.clone()) {
        Some(t) if t.len() >= 8 => t,
        Some(_) => anyhow::bail!("the API token must have at least 8 characters"),
        None => token::generate()?,
    };
    super::block_on(serve(args, config, api_token))
}

fn parse_addr(s: &str) -> anyhow::Result<SocketAddr> {
    s.parse().with_context(|| format!("bad address {s}"))
}

async fn serve(
    args: ServeArgs,
    config: ServeConfig,
    api_token: String,
) -> anyhow::Result<ExitCode> {
    if pixelpass::doctor::on_path(&["ffmpeg"]).is_none()
        && std::env::var_os("PIXELPASS_FFMPEG").is_none()
    {
        tracing::warn!("ffmpeg not found on PATH: streams cannot start (apt-get install ffmpeg)");
    }
    let listen = match args.listen.or(config.listen) {
        Some(a) => a,
        None => parse_addr(DEFAULT_LISTEN)?,
    };
    let webrtc = WebRtcArgs {
        webrtc_udp: match args.webrtc_udp.or(config.webrtc_udp) {
            Some(a) => a,
            None => parse_addr(DEFAULT_WEBRTC_UDP)?,
        },
        public_host: if args.public_host.is_empty() {
            config.public_host.clone()
        } else {
            args.public_host.clone()
        },
        ice_server: args.ice_server.clone(),
        webrtc_timeout: args.webrtc_timeout,
        webrtc_max_load: args.webrtc_max_load,
        base_path: args
            .public_url
            .as_deref()
            .and_then(|u| u.split_once("://"))
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
            .unwrap_or_default(),
        ..WebRtcArgs::default()
    };
    let tls = args.tls.load()?;
    let https = tls.is_some();
    let listener = server::bind(listen).await?;
    let local = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let whep = Whep::start(&webrtc).await?;
    let public_url = match &args.public_url {
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
            Some(u.trim_end_matches('/').to_owned())
        }
        Some(u) => anyhow::bail!("--public-url {u:?} must start with https:// or http://"),
        None => None,
    };
    let whip = Whip::start(WhipConfig {
        udp: match args.whip_udp {
            Some(a) => a,
            None => parse_addr(DEFAULT_WHIP_UDP)?,
        },
        public_host: webrtc.public_host.clone(),
        timeout: webrtc.peer_timeout(),
        public_url: public_url.clone(),
        https,
    })
    .await?;
    let registry = Registry::new();
    let counted = registry.clone();
    let heap_trim = pixelpass::heap::spawn(move || counted.viewers());
    let streams = Streams::new(registry.clone(), whep.clone(), Some(whip.clone()));
    for s in config.streams.iter().cloned() {
        let id = s.id.clone();
        streams
            .create(s)
            .map_err(|e| anyhow::anyhow!("stream {id:?}: {e}"))?;
    }
    let router = server::serve_router(
        registry,
        whep.clone(),
        Api {
            streams: streams.clone(),
            token: api_token.clone(),
        },
        whip.clone(),
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let server = tokio::spawn(server::serve_tls(
        listener,
        router,
        args.conn.limits(config.max_connections),
        tls,
        shutdown_rx,
    ));
    let udp = (whep.local_addr(), whip.local_addr());
    print_banner(
        &args,
        local,
        https,
        public_url.as_deref(),
        udp,
        &api_token,
        &streams,
    )?;

    let reloads = tokio::spawn(reload_on_hangup(
        args.config.clone(),
        config,
        streams.clone(),
    ));
    super::wait_for_signal().await?;
    reloads.abort();
    heap_trim.abort();
    tracing::info!("stopping");
    let _ = shutdown_tx.send(true);
    if tokio::time::timeout(STOP_BUDGET, streams.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("streams did not stop within {} s", STOP_BUDGET.as_secs());
    }
    server.abort();
    Ok(ExitCode::SUCCESS)
}

/// `SIGHUP` (`systemctl reload`): read the config file again and apply what
/// changed in its streams; a broken file changes nothing and says why
/// (file:line). Server keys (addresses, the API token) need a restart: said.
async fn reload_on_hangup(path: Option<PathBuf>, mut applied: ServeConfig, streams: Streams) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGHUP, so the config cannot be reloaded: {e}");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let Some(path) = &path else {
            tracing::warn!("SIGHUP: there is no --config file to read again");
            continue;
        };
        let fresh = match ServeConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reload refused, the running config stays: {e}");
                continue;
            }
        };
        for (key, changed) in [
            ("listen", fresh.listen != applied.listen),
            ("webrtc_udp", fresh.webrtc_udp != applied.webrtc_udp),
            ("api_token", fresh.api_token != applied.api_token),
            ("public_host", fresh.public_host != applied.public_host),
        ] {
            if changed {
                tracing::warn!("reload: `{key}` changed in {}; it takes effect at the next start of the server", path.display());
            }
        }
        let outcome = streams.reload(&applied.streams, &fresh.streams).await;
        if outcome.failed.is_empty() {
            tracing::info!("reloaded {}: {outcome}", path.display());
        } else {
            tracing::error!("reloaded {} in part: {outcome}", path.display());
        }
        applied = fresh;
    }
}

#[derive(Serialize)]
struct Banner<'a> {
    listen: String,
    api: String,
    api_token: &'a str,
    webrtc_udp: String,
    whip_udp: String,
    streams: Vec<BannerStream>,
}

#[derive(Serialize)]
struct BannerStream {
    id: String,
    state: pixelpass::supervisor::State,
    player: String,
    stream_ts: Option<String>,
    whep: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    whip: Option<String>,
    /// Where FFmpeg listens for an RTMP/SRT publisher.
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    /// Layer 0 first; sizes `null` until the stream has run.
    layers: Vec<pixelpass::restream::LayerView>,
}

fn print_banner(
    args: &ServeArgs,
    local: SocketAddr,
    https: bool,
    public_url: Option<&str>,
    (udp, whip_udp): (SocketAddr, SocketAddr),
    api_token: &str,
    streams: &Streams,
) -> anyhow::Result<()> {
    let ip = net::reachable_addrs(local)
        .into_iter()
        .next()
        .unwrap_or(local.ip());
    let base = match public_url {
        Some(u) => u.to_owned(),
        None => net::http_base(ip, local.port(), https),
    };
    let list: Vec<BannerStream> = streams
        .list()
        .into_iter()
        .map(|v| BannerStream {
            id: v.id,
            state: v.state,
            player: format!("{base}{}", v.urls.player),
            stream_ts: v.urls.stream_ts.map(|u| format!("{base}{u}")),
            whep: v.urls.whep.map(|u| format!("{base}{u}")),
            whip: v.urls.whip.map(|u| format!("{base}{u}")),
            listen: v.urls.listen,
            layers: v.layers,
        })
        .collect();
    let banner = Banner {
        listen: local.to_string(),
        api: format!("{base}/api/v1"),
        api_token,
        webrtc_udp: udp.to_string(),
        whip_udp: whip_udp.to_string(),
        streams: list,
    };
    if args.json {
        println!("{}", serde_json::to_string(&banner)?);
        return Ok(());
    }
    println!(
        "pixelpass serve on {} (WebRTC UDP {}, WHIP publishers' UDP {})",
        banner.listen, banner.webrtc_udp, banner.whip_udp
    );
    println!(
        "  API      {}  (Authorization: Bearer {})",
        banner.api, banner.api_token
    );
    println!("  metrics  {base}/metrics");
    if banner.streams.is_empty() {
        println!("  no streams yet: add one with a [[stream]] table in --config, or");
        println!(
            "    curl -H 'Authorization: Bearer {}' -d '{{\"id\":\"demo\",\"autostart\":true,\"input\":[\"-re\",\"-f\",\"lavfi\",\"-i\",\"testsrc2=size=1280x720:rate=30\",\"-f\",\"lavfi\",\"-i\",\"sine\"]}}' {}/streams",
            banner.api_token, banner.api
        );
    }
    for s in &banner.streams {
        println!("  stream {:?} ({})", s.id, s.state);
        println!("    browser  {}", s.player);
        if let Some(u) = &s.stream_ts {
            println!("    players  {u}");
        }
        if s.layers.len() > 1 {
            let said: Vec<String> = s.layers.iter().map(|l| l.describe()).collect();
            println!("    layers   {}", said.join(", "));
        }
        if let Some(u) = &s.whip {
            println!("    publish  {u}  (WHIP: Authorization: Bearer <its publish_token>)");
        }
        if let Some(u) = &s.listen {
            println!("    publish  {u}  (FFmpeg listens: push RTMP or SRT to the URL in the stream's input)");
        }
    }
    Ok(())
}
