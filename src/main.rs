//! The `pixelpass` binary: argument parsing and wiring only; the work lives
//! in the library (crates/pixelpass).

mod banner;
mod docs;
mod host;
mod serve;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use pixelpass::capture::source::SourceKind;
use pixelpass::view;

/// Default HTTP port of `pixelpass host`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8860";

#[derive(Parser, Debug)]
#[command(
    name = "pixelpass",
    version,
    about = "Share a live screen with many viewers at once: browsers over WebRTC (WHEP), players over HTTP MPEG-TS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Share this desktop (or a test pattern) with browsers (WebRTC) and players (HTTP MPEG-TS).
    Host(HostArgs),
    /// Restream server: many named streams, each a supervised FFmpeg process, to browsers (WHEP) and players (HTTP MPEG-TS), managed by a config file and a JSON API.
    Serve(serve::ServeArgs),
    /// Watch a stream in mpv (or ffplay / VLC) with low-latency options.
    View(ViewArgs),
    /// What works on this machine for `host` (capture, audio, encoders, viewers) and how to fix the rest.
    Doctor(DoctorArgs),
    /// Print a shell completion script (bash, zsh, fish): `source <(pixelpass completions bash)`.
    Completions(docs::CompletionsArgs),
    /// Write the man pages into a directory (for packagers; scripts/package.sh).
    #[command(hide = true)]
    Manpages(docs::ManpagesArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ViewArgs {
    /// The stream URL, e.g. http://192.168.1.5:8860/TOKEN/stream.ts
    pub url: String,
    /// Which player to use (default: the first of mpv, ffplay, vlc found on PATH).
    #[arg(long, value_enum)]
    pub player: Option<view::Player>,
}

#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct HostArgs {
    /// What to capture: `auto` picks the desktop when there is one, else the test pattern.
    #[arg(long, value_enum, default_value_t = SourceKind::Auto)]
    pub source: SourceKind,
    /// Share one window instead of a whole monitor (portal source).
    #[arg(long)]
    pub window: bool,
    /// Forget the remembered screen selection and ask again (portal source).
    #[arg(long)]
    pub pick: bool,
    /// The X display to capture (x11 source; default: $DISPLAY).
    #[arg(long, value_name = "DISPLAY")]
    pub display: Option<String>,
    /// Sound to send: `system` (what this machine plays; the test pattern keeps
    /// its tone), `none`, or a PulseAudio source name.
    #[arg(long, default_value = "system", value_name = "system|none|DEVICE")]
    pub audio: pixelpass::capture::source::audio::AudioArg,
    /// Frames per second sent to viewers.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub framerate: u32,
    /// Video bitrate in kbit/s (constant bitrate).
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u32).range(100..=100_000))]
    pub bitrate: u32,
    /// Scale the picture to this width (keeps the source size when absent).
    #[arg(long, value_parser = clap::value_parser!(u32).range(16..=7680))]
    pub width: Option<u32>,
    /// Scale the picture to this height (keeps the source size when absent).
    #[arg(long, value_parser = clap::value_parser!(u32).range(16..=4320))]
    pub height: Option<u32>,
    /// Encodes of the picture (1–3), so viewers on thin links get a lower one:
    /// 1 = the stream as configured; 2 adds half the size at a quarter of the
    /// bitrate; 3 adds a very low one (about 150 kbit/s, a quarter of the size, 10 fps).
    #[arg(long, default_value_t = 2, value_parser = parse_layers, value_name = "1-3")]
    pub layers: usize,
    /// How many viewers may watch at once; one more gets "host is full".
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_viewers: u32,
    /// HTTP address and port to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The secret part of every stream URL (default: a fresh random 128-bit token).
    #[arg(long, env = "PIXELPASS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Seconds capture keeps running after the last viewer leaves (0: stop at once).
    #[arg(long, default_value_t = 5.0)]
    pub linger: f64,
    /// Print one JSON line with the URLs instead of the banner (for scripts).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub webrtc: pixelpass::egress::whep::WebRtcArgs,
    #[command(flatten)]
    pub tls: pixelpass::http::TlsArgs,
    #[command(flatten)]
    pub conn: pixelpass::http::ConnArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
    /// Record the stream to DIR as fragmented MP4 files (playable while
    /// written; a crash loses at most a frame). Capture then runs whoever watches.
    #[arg(long, value_name = "DIR")]
    pub record: Option<std::path::PathBuf>,
    /// Minutes per recording file (a new file starts at the next keyframe).
    #[arg(long, value_name = "MIN", default_value_t = 10.0, requires = "record",
          value_parser = parse_minutes)]
    pub record_minutes: f64,
}

fn parse_minutes(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(m) if (0.05..=1440.0).contains(&m) => Ok(m),
        _ => Err(format!("{s:?}: minutes from 0.05 to 1440")),
    }
}

/// `--publish`: send the stream to a WHIP relay (RFC 9725) too, the way past NAT.
#[derive(Args, Debug, Clone, Default)]
pub struct PublishArgs {
    /// Publish to this WHIP endpoint (e.g. https://relay.example/whip/desk); repeat for several
    /// relays. Capture then runs all the time; local viewers keep working.
    #[arg(long = "publish", value_name = "URL")]
    pub publish: Vec<String>,
    /// The relay's publish secret, sent as `Authorization: Bearer` (never printed).
    #[arg(
        long = "publish-token",
        value_name = "TOKEN",
        env = "PIXELPASS_PUBLISH_TOKEN",
        hide_env_values = true
    )]
    pub publish_token: Option<String>,
    /// Trust this CA (PEM) for https:// relays, besides the system's CAs.
    #[arg(long = "publish-ca", value_name = "PEM", requires = "publish")]
    pub publish_ca: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Documentation goes out as it is, with no logging set up for it.
    if !matches!(cli.command, Command::Completions(_) | Command::Manpages(_)) {
        pixelpass::logging::init();
    }
    if matches!(cli.command, Command::Host(_) | Command::Serve(_)) {
        // Every viewer is a socket: use all the descriptors the system allows.
        pixelpass::http::fds::raise_nofile();
        // Large buffers go back to the system when freed (see heap.rs).
        pixelpass::heap::fix_mmap_threshold();
    }
    let result = match cli.command {
        Command::Host(args) => host::run(args),
        Command::Serve(args) => serve::run(args),
        Command::View(args) => view::run(&args.url, args.player).map(exit_code),
        Command::Doctor(args) => pixelpass::doctor::run(args.json),
        Command::Completions(args) => docs::completions(&args),
        Command::Manpages(args) => docs::manpages(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pixelpass: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--layers`: 1, 2 or 3.
fn parse_layers(s: &str) -> Result<usize, String> {
    let max = pixelpass::hub::MAX_LAYERS;
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a layer count: give 1 (one encode) up to {max} (full, half size, very low)"
        )),
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Resolves on SIGTERM or SIGINT.
async fn wait_for_signal() -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Run `main` on a multi-threaded runtime; blocking tasks left at the end (a
/// pipeline going to NULL) get a short grace period, not forever.
fn block_on(
    main: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pixelpass")
        .build()
        .context("cannot start the async runtime")?;
    let code = rt.block_on(main);
    rt.shutdown_timeout(std::time::Duration::from_millis(300));
    code
}
