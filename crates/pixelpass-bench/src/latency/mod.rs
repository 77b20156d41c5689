//! `pixelpass bench latency`: how old a frame is when a viewer has it.
//!
//! A host runs in this process exactly as `pixelpass host` wires it (the
//! clock source, the GStreamer producer with its RTP branch, the supervisor,
//! the HTTP server, WHEP), capture already running. One viewer then joins on
//! the chosen path and decodes every frame the moment its last byte arrives
//! ([`pixelpass_testkit::clock`]); the time code drawn into the frame when it
//! was produced ([`pixelpass::media::timecode`]) gives its age:
//!
//! - *latency* = wall clock when the frame was decoded − time drawn into it;
//! - *join* = request sent (HTTP `GET` / WHEP `POST`) → first decoded frame;
//! - *unreadable* = decoded frames whose code could not be read, or read
//!   as a time that cannot be right (more than a minute off).
//!
//! Paths: `http` (HTTP MPEG-TS: our TS demuxer + libav's H.264 decoder,
//! [`http`]), `whep` (a str0m WebRTC peer + the same decoder, [`whep`]),
//! `browser` (headless Chromium on the player page, reading each frame at
//! render time; needs root for `unshare --net`, [`browser`]; `browser-hls`:
//! the same page playing LL-HLS in hls.js); `ffmpeg-hls` (ffmpeg reading
//! the LL-HLS playlist, [`ffmpeg_hls`]); `mpv` (mpv
//! with `pixelpass view`'s options, frames written as shown, [`mpv`]); and
//! `hub`, a diagnostic: the TS straight from the hub, before any egress.

pub mod browser;
pub mod ffmpeg_hls;
pub mod http;
pub mod mpv;
pub mod relay;
pub mod whep;

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::host::BenchHost;
use pixelpass::capture::source::SourceKind;
use pixelpass::capture::PipelineConfig;
use pixelpass::egress::publish::PublishOptions;
use pixelpass::supervisor::{Lease, Policy};
use pixelpass_testkit::clock::{Decoder, Frame};
use pixelpass_testkit::Summary;

/// A decoded time more than this far from the decode time is a misread.
pub const PLAUSIBLE_MS: f64 = 60_000.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LatencyPath {
    /// HTTP MPEG-TS, decoded as the bytes arrive.
    Http,
    /// WebRTC over WHEP with a str0m client, decoded as frames complete.
    Whep,
    /// The player page in headless Chromium, read at render time (needs root).
    Browser,
    /// LL-HLS in hls.js (npm) on the player page in headless Chromium, read
    /// at render time (needs root).
    #[value(name = "browser-hls")]
    #[serde(rename = "browser-hls")]
    BrowserHls,
    /// LL-HLS read by ffmpeg (whole segments: it knows no parts).
    #[value(name = "ffmpeg-hls")]
    #[serde(rename = "ffmpeg-hls")]
    FfmpegHls,
    /// Diagnostic: the TS as the hub publishes it (no egress, no TCP): the
    /// producer's share of the HTTP-TS figure.
    Hub,
    /// mpv with `pixelpass view`'s options, each shown frame written to a file.
    Mpv,
    /// WHEP through `pixelpass serve` as a WHIP relay (the host publishes to
    /// it on loopback): the relay hop's cost, next to `whep`.
    Relay,
}

impl LatencyPath {
    pub fn label(self) -> &'static str {
        match self {
            LatencyPath::Http => "http",
            LatencyPath::Whep => "whep",
            LatencyPath::Browser => "browser",
            LatencyPath::BrowserHls => "browser-hls",
            LatencyPath::FfmpegHls => "ffmpeg-hls",
            LatencyPath::Hub => "hub",
            LatencyPath::Mpv => "mpv",
            LatencyPath::Relay => "relay",
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct LatencyArgs {
    /// Which viewer path(s) to measure, e.g. `--path http,whep,browser`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "http,whep")]
    pub path: Vec<LatencyPath>,
    /// Seconds each viewer watches (after its join).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Picture size (the time code needs at least 960×40).
    #[arg(long, default_value = "1280x720", value_parser = parse_resolution)]
    pub resolution: (u32, u32),
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub framerate: u32,
    /// Video bitrate, kbit/s (the host's default).
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u32).range(100..=100_000))]
    pub bitrate: u32,
    /// Stream without audio (shows what waiting for audio costs the TS muxer).
    #[arg(long)]
    pub no_audio: bool,
    /// Print one JSON line per path instead of the table.
    #[arg(long)]
    pub json: bool,
    /// An extra mpv option for `--path mpv` (repeatable), e.g. `--mpv-arg=--no-audio`.
    #[arg(long, allow_hyphen_values = true)]
    pub mpv_arg: Vec<String>,
}

pub fn parse_resolution(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X', '×'])
        .ok_or_else(|| format!("{s:?}: expected WIDTHxHEIGHT"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|&n| (16..=8192).contains(&n))
    };
    match (parse(w), parse(h)) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => Err(format!("{s:?}: expected WIDTHxHEIGHT, each 16 to 8192")),
    }
}

/// One path's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub path: LatencyPath,
    pub frames: usize,
    pub unreadable: usize,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub join_ms: Option<f64>,
    /// What else the path wants said (decoder errors, browser details).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Report {
    /// Summarise decoded frames; `requested` is when the viewer asked to join.
    pub fn from_frames(path: LatencyPath, frames: &[Frame], requested: Instant) -> Self {
        let mut latencies = Vec::with_capacity(frames.len());
        let mut unreadable = 0;
        for f in frames {
            match f.latency_ms() {
                Some(l) if l.abs() <= PLAUSIBLE_MS => latencies.push(l),
                _ => {
                    tracing::debug!(code = ?f.code, "unreadable frame");
                    unreadable += 1
                }
            }
        }
        let s = Summary::of(&latencies);
        Self {
            path,
            frames: frames.len(),
            unreadable,
            p50_ms: s.map(|s| s.p50),
            p95_ms: s.map(|s| s.p95),
            max_ms: s.map(|s| s.max),
            join_ms: frames
                .first()
                .map(|f| f.at.saturating_duration_since(requested).as_secs_f64() * 1000.0),
            note: None,
        }
    }
}

pub fn table_header() -> String {
    format!(
        "{:<11} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "path", "frames", "unreadable", "p50 ms", "p95 ms", "max ms", "join ms"
    )
}

pub fn table_row(r: &Report) -> String {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    format!(
        "{:<11} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8}",
        r.path.label(),
        r.frames,
        r.unreadable,
        ms(r.p50_ms),
        ms(r.p95_ms),
        ms(r.max_ms),
        r.join_ms
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
    )
}

/// The host under test, in this process, capture kept running (a warm
/// host, as when others watch).
pub struct Host {
    pub inner: BenchHost,
    _lease: Lease,
}

impl std::ops::Deref for Host {
    type Target = BenchHost;
    fn deref(&self) -> &BenchHost {
        &self.inner
    }
}

impl Host {
    pub async fn start(
        args: &LatencyArgs,
        publish: Option<PublishOptions>,
    ) -> anyhow::Result<Host> {
        let cfg = PipelineConfig {
            source: SourceKind::Clock,
            framerate: args.framerate,
            bitrate_kbps: args.bitrate,
            width: Some(args.resolution.0),
            height: Some(args.resolution.1),
            audio: !args.no_audio,
            ..PipelineConfig::default()
        };
        let policy = Policy {
            max_viewers: 8,
            linger: Duration::from_secs(3600),
            ..Policy::default()
        };
        let inner =
            super::host::start_publishing(cfg, policy, &pixelpass::token::generate()?, publish)
                .await?;
        let lease = inner
            .supervisor
            .acquire()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        lease
            .ready(Duration::from_secs(30))
            .await
            .context("the clock source did not start")?;
        Ok(Host {
            inner,
            _lease: lease,
        })
    }

    pub async fn shutdown(self) {
        drop(self._lease);
        super::host::stop(self.inner).await;
    }
}

/// A decoder and the frames it has decoded so far.
pub struct Decoding {
    pub decoder: Decoder,
    frames: mpsc::Receiver<Frame>,
}

impl Decoding {
    pub fn start() -> anyhow::Result<Self> {
        let (tx, frames) = mpsc::channel();
        Ok(Self {
            decoder: Decoder::start(tx)?,
            frames,
        })
    }

    /// Everything decoded until now, after letting the last pushed units through.
    pub async fn finish(self, settle: Duration) -> (Vec<Frame>, Option<String>) {
        tokio::time::sleep(settle).await;
        let error = self.decoder.error();
        drop(self.decoder);
        (self.frames.try_iter().collect(), error)
    }
}

pub fn run(args: LatencyArgs) -> anyhow::Result<ExitCode> {
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        anyhow::bail!("--seconds must be between 0 and 3600");
    }
    let (w, h) = args.resolution;
    let audio = if args.no_audio {
        "no audio"
    } else {
        "with audio"
    };
    if !args.json {
        println!("pixelpass bench latency: clock source {w}x{h} at {} fps, {} kbit/s, {audio}, {} s per path", args.framerate, args.bitrate, args.seconds);
    }
    let mut reports = Vec::new();
    let in_process: Vec<LatencyPath> = args
        .path
        .iter()
        .copied()
        .filter(|p| !matches!(p, LatencyPath::Browser | LatencyPath::BrowserHls))
        .collect();
    if !in_process.is_empty() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let got = rt.block_on(async {
            // The relay path: a `pixelpass serve` child the host publishes to.
            let relay = match in_process.contains(&LatencyPath::Relay) {
                true => Some(relay::Relay::start()?),
                false => None,
            };
            let publish = relay.as_ref().map(|r| {
                let mut p = PublishOptions::new(vec![r.whip_url()], Some(r.secret()), None);
                p.bind = "127.0.0.1:0".parse().expect("a literal address");
                p
            });
            let host = Host::start(&args, publish).await?;
            if !args.json {
                println!("encoder: {}", host.encoder);
            }
            // Let the encoder's rate control settle before the first viewer.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let mut out = Vec::new();
            for (i, path) in in_process.iter().enumerate() {
                if i > 0 {
                    // Past the hub's keyframe rate limit: this viewer's join gets its own fresh keyframe.
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                }
                let r = match path {
                    LatencyPath::Http => http::measure(&host, args.seconds).await,
                    LatencyPath::Whep => {
                        whep::measure(&host.whep_url(), LatencyPath::Whep, args.seconds).await
                    }
                    LatencyPath::Relay => match &relay {
                        Some(r) => {
                            whep::measure(&r.whep_url(), LatencyPath::Relay, args.seconds).await
                        }
                        None => unreachable!("started above"),
                    },
                    LatencyPath::Hub => http::measure_hub(&host, args.seconds).await,
                    LatencyPath::Mpv => mpv::measure(&host, args.seconds, &args.mpv_arg).await,
                    LatencyPath::FfmpegHls => {
                        ffmpeg_hls::measure(&host, args.resolution, args.seconds).await
                    }
                    LatencyPath::Browser | LatencyPath::BrowserHls => {
                        unreachable!("filtered above")
                    }
                };
                out.push(r.with_context(|| format!("{} viewer", path.label()))?);
            }
            host.shutdown().await;
            anyhow::Ok(out)
        });
        rt.shutdown_timeout(Duration::from_millis(500));
        reports.extend(got?);
    }
    for path in [LatencyPath::Browser, LatencyPath::BrowserHls] {
        if args.path.contains(&path) {
            reports.push(browser::measure(&args, path)?);
        }
    }
    // Keep the order asked for.
    reports.sort_by_key(|r| args.path.iter().position(|p| *p == r.path));
    if args.json {
        for r in &reports {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        println!("{}", table_header());
        for r in &reports {
            println!("{}", table_row(r));
        }
        for r in &reports {
            if let Some(note) = &r.note {
                println!("{}: {note}", r.path.label());
            }
        }
    }
    let bad = reports.iter().any(|r| r.frames == 0 || r.unreadable > 0);
    Ok(if bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixelpass::media::timecode::ReadError;

    #[test]
    fn resolutions_parse() {
        assert_eq!(parse_resolution("1280x720"), Ok((1280, 720)));
        assert_eq!(parse_resolution("1920×1080"), Ok((1920, 1080)));
        assert!(parse_resolution("1280").is_err());
        assert!(parse_resolution("0x720").is_err());
    }

    #[test]
    fn a_report_counts_unreadable_and_implausible_frames() {
        let t0 = Instant::now();
        let frame = |after_ms: u64, wall: f64, code: Result<u64, ReadError>| Frame {
            at: t0 + Duration::from_millis(after_ms),
            wall_ms: wall,
            code,
        };
        const T: u64 = 1_763_000_000_000; // November 2025, ms
        let wall = |ms: u64| (T + ms) as f64;
        let frames = vec![
            frame(90, wall(40), Ok(T)),
            frame(123, wall(73), Ok(T + 33)),
            frame(
                156,
                wall(106),
                Err(ReadError::Unclear {
                    bit: 3,
                    means: [128.0, 128.0],
                }),
            ),
            frame(189, wall(139), Ok(T >> 1)), // misread: decades off
            frame(222, wall(172), Ok(T + 100)),
        ];
        let r = Report::from_frames(LatencyPath::Http, &frames, t0);
        assert_eq!((r.frames, r.unreadable), (5, 2));
        assert_eq!((r.p50_ms, r.max_ms), (Some(40.0), Some(72.0)));
        assert_eq!(r.join_ms, Some(90.0));
        let row = table_row(&r);
        assert!(
            row.starts_with("http") && row.contains("40.0") && row.ends_with("90"),
            "{row}"
        );
    }
}
