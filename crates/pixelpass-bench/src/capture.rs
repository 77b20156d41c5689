//! `pixelpass bench capture`: what capturing and encoding cost, per source
//! and size — the host's real producer (source → videorate → convert/scale →
//! encoder → MPEG-TS → hub) with no viewer, audio off.
//!
//! For each source and size: start the producer, let it settle, then measure
//! a window: CPU cores this process used, frames the encoder produced against
//! the frames the rate asks for (the difference is what was dropped), and
//! what videorate did (frames in from the source, repeats on a static or slow
//! screen, drops). Inside the headless session (`PIXELPASS_SESSION_DIR` set)
//! it also reads the CPU of the session's processes: the compositor, portal
//! and PipeWire side of screen capture, and the animated client apart.
//!
//! `--layers 1,2,3` measures each source and size at each layer count
//! (`host --layers`: a tee, then one scale + encode + mux per layer) and
//! says what each step's extra layer cost over the one before.
//!
//! `--headless` runs each size in a fresh headless session of that size
//! (`crates/pixelpass-testkit/session/headless-session.sh`) so the portal captures a screen of
//! exactly that size (no scaling), showing by default the test source's
//! picture (scrolling SMPTE bars), so the encoder has the same work and the
//! difference between the rows is the capture's.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gstreamer as gst;
use gstreamer::prelude::*;

use super::procstat;
use pixelpass::capture::source::SourceKind;
use pixelpass::capture::{self, encoder, EncoderChoice, EncoderKind, GstProducer, PipelineConfig};
use pixelpass::hub::{Hub, HubConfig};

#[derive(clap::Args, Debug, Clone)]
pub struct CaptureArgs {
    /// Sources to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "test,portal")]
    pub sources: Vec<SourceKind>,
    /// Picture sizes, WxH.
    #[arg(long, value_delimiter = ',', default_value = "1280x720,1920x1080")]
    pub sizes: Vec<String>,
    #[arg(long, default_value_t = 30)]
    pub framerate: u32,
    /// Video bitrate, kbit/s.
    #[arg(long, default_value_t = 4000)]
    pub bitrate: u32,
    /// Layer counts to measure each source and size at (`host --layers`),
    /// e.g. `1,2,3`: each step's row says what its extra layer cost.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub layers: Vec<usize>,
    /// The H.264 encoder: x264enc, openh264enc, … or `auto` (host's choice).
    #[arg(long, default_value = "x264enc")]
    pub encoder: String,
    /// Length of each measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds between the first frame and the window.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Run each size in its own headless Wayland session of that size.
    #[arg(long)]
    pub headless: bool,
    /// The session script for `--headless`.
    #[arg(long)]
    pub session_script: Option<PathBuf>,
    /// What the headless session's screen shows: `smpte` (scrolling bars, the
    /// test source's picture, so both encode alike) or `ball`.
    #[arg(long, default_value = "smpte")]
    pub screen: String,
    /// One JSON object per row instead of the table.
    #[arg(long)]
    pub json: bool,
    /// (internal) rows only, no header: the parent prints the table.
    #[arg(long, hide = true)]
    pub rows_only: bool,
}

/// One measured window.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub source: String,
    pub size: String,
    pub fps: u32,
    pub encoder: String,
    /// Encodes of the picture (`host --layers`).
    #[serde(default = "one")]
    pub layers: usize,
    pub seconds: f64,
    /// CPU cores used by this process (capture + convert + encode + mux).
    pub host_cores: f64,
    /// What this step's layers cost over the previous step of the same
    /// source and size (fewer layers), in cores.
    #[serde(default)]
    pub extra_cores: Option<f64>,
    /// Compositor, portal, PipeWire (the session's side of screen capture).
    pub session_cores: Option<f64>,
    /// The animated client drawing the screen.
    pub client_cores: Option<f64>,
    pub expected_frames: u64,
    pub encoded_frames: u64,
    pub dropped_frames: u64,
    /// Frames the source delivered (videorate in).
    pub source_frames: u64,
    /// Frames videorate repeated to keep the rate.
    pub repeated_frames: u64,
    /// Frames videorate dropped (source faster than the rate).
    pub rate_dropped: u64,
    pub error: Option<String>,
}

fn one() -> usize {
    1
}

fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let (w, h) = s.split_once('x').context("a size is WxH, e.g. 1280x720")?;
    let (w, h): (u32, u32) = (w.trim().parse()?, h.trim().parse()?);
    if !(16..=7680).contains(&w) || !(16..=4320).contains(&h) {
        bail!("size {s} out of range");
    }
    Ok((w, h))
}

pub fn run(args: CaptureArgs) -> anyhow::Result<ExitCode> {
    for s in &args.sizes {
        parse_size(s)?;
    }
    if !(args.seconds > 0.0 && args.seconds <= 600.0) {
        bail!("--seconds must be in (0, 600]");
    }
    if let Some(n) = args
        .layers
        .iter()
        .find(|n| !(1..=pixelpass::hub::MAX_LAYERS).contains(*n))
    {
        bail!(
            "--layers takes counts from 1 to {}, not {n}",
            pixelpass::hub::MAX_LAYERS
        );
    }
    let rows = if args.headless {
        run_in_sessions(&args)?
    } else {
        run_here(&args)?
    };
    if !args.rows_only {
        print_rows(&rows, args.json);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_rows(rows: &[Row], json: bool) {
    if json {
        for r in rows {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        }
        return;
    }
    println!(
        "{:<7} {:<10} {:>4} {:<12} {:>6} {:>10} {:>11} {:>13} {:>12} {:>9} {:>8} {:>8} {:>10} {:>9}",
        "source",
        "size",
        "fps",
        "encoder",
        "layers",
        "host cores",
        "+this layer",
        "session cores",
        "client cores",
        "expected",
        "encoded",
        "dropped",
        "src frames",
        "repeated"
    );
    for r in rows {
        if let Some(e) = &r.error {
            println!("{:<7} {:<10} {:>4} failed: {e}", r.source, r.size, r.fps);
            continue;
        }
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
        println!(
            "{:<7} {:<10} {:>4} {:<12} {:>6} {:>10.2} {:>11} {:>13} {:>12} {:>9} {:>8} {:>8} {:>10} {:>9}",
            r.source,
            r.size,
            r.fps,
            r.encoder,
            r.layers,
            r.host_cores,
            opt(r.extra_cores),
            opt(r.session_cores),
            opt(r.client_cores),
            r.expected_frames,
            r.encoded_frames,
            r.dropped_frames,
            r.source_frames,
            r.repeated_frames
        );
    }
}

/// Each size in its own session: this binary again, inside the script.
fn run_in_sessions(args: &CaptureArgs) -> anyhow::Result<Vec<Row>> {
    let script = args
        .session_script
        .clone()
        .unwrap_or_else(|| pixelpass_testkit::bin::kit_dir().join("session/headless-session.sh"));
    if !script.exists() {
        bail!("{} not found (give --session-script)", script.display());
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut rows = Vec::new();
    for size in &args.sizes {
        let sources: Vec<String> = args.sources.iter().map(|s| s.label().to_owned()).collect();
        let out = Command::new("bash")
            .arg(&script)
            .args([
                "--size",
                size,
                "--fps",
                &args.framerate.to_string(),
                "--pattern",
                &args.screen,
                "--",
            ])
            .arg(&exe)
            .args(["capture", "--rows-only", "--json", "--sizes", size])
            .args(["--sources", &sources.join(",")])
            .args([
                "--layers",
                &args
                    .layers
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ])
            .args([
                "--framerate",
                &args.framerate.to_string(),
                "--bitrate",
                &args.bitrate.to_string(),
            ])
            .args([
                "--encoder",
                &args.encoder,
                "--seconds",
                &args.seconds.to_string(),
                "--warmup",
                &args.warmup.to_string(),
            ])
            .output()
            .context("cannot run the headless session")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let before = rows.len();
        for line in text.lines().filter(|l| l.starts_with('{')) {
            rows.push(serde_json::from_str::<Row>(line).context("a row from the session")?);
        }
        if rows.len() == before {
            bail!(
                "the session at {size} gave no rows ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(rows)
}

fn run_here(args: &CaptureArgs) -> anyhow::Result<Vec<Row>> {
    capture::init()?;
    let choice = match args.encoder.as_str() {
        "auto" => encoder::choose()?,
        name => {
            let kind = EncoderKind::PREFERENCE
                .into_iter()
                .find(|k| k.element() == name)
                .with_context(|| format!("unknown encoder {name}"))?;
            encoder::choose_from(&[kind])?
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for size in &args.sizes {
        let (w, h) = parse_size(size)?;
        for &source in &args.sources {
            let mut before: Option<f64> = None;
            for &layers in &args.layers {
                let mut row = rt.block_on(measure(args, source, w, h, choice, layers));
                if row.error.is_none() {
                    row.extra_cores = before.map(|b| row.host_cores - b);
                    before = Some(row.host_cores);
                }
                if args.rows_only {
                    // Streamed to the parent as they come.
                    println!("{}", serde_json::to_string(&row).unwrap_or_default());
                }
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

/// CPU ticks of the session's processes (our siblings under the session
/// script), split into the animated client and the rest.
fn session_ticks() -> Option<(u64, u64)> {
    std::env::var_os("PIXELPASS_SESSION_DIR")?;
    // SAFETY: getpid/getppid have no memory effects.
    let (me, parent) = unsafe { (libc::getpid(), libc::getppid()) };
    let (mut client, mut rest) = (0u64, 0u64);
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = text.rfind(')') else {
            continue;
        };
        let ppid: i32 = text[close + 1..]
            .split_ascii_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid != parent {
            continue;
        }
        let Some(st) = procstat::parse_stat(&text) else {
            continue;
        };
        let t = st.utime_ticks + st.stime_ticks;
        if st.comm.starts_with("gst-launch") {
            client += t;
        } else {
            rest += t;
        }
    }
    Some((client, rest))
}

async fn measure(
    args: &CaptureArgs,
    source: SourceKind,
    w: u32,
    h: u32,
    choice: EncoderChoice,
    layers: usize,
) -> Row {
    let mut row = Row {
        source: source.label().to_owned(),
        size: format!("{w}x{h}"),
        fps: args.framerate,
        encoder: choice.element.to_owned(),
        layers,
        seconds: args.seconds,
        host_cores: 0.0,
        extra_cores: None,
        session_cores: None,
        client_cores: None,
        expected_frames: 0,
        encoded_frames: 0,
        dropped_frames: 0,
        source_frames: 0,
        repeated_frames: 0,
        rate_dropped: 0,
        error: None,
    };
    let cfg = PipelineConfig {
        source,
        framerate: args.framerate,
        bitrate_kbps: args.bitrate,
        width: Some(w),
        height: Some(h),
        audio: false,
        layers,
        ..PipelineConfig::default()
    };
    let producer = GstProducer::new(cfg, choice);
    let hub = Hub::with_layers(HubConfig::default(), layers);
    let (run, probe) = match tokio::time::timeout(
        Duration::from_secs(30),
        producer.start_run(hub.clone()),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            row.error = Some(e.to_string());
            return row;
        }
        Err(_) => {
            row.error = Some("did not start within 30 s".into());
            return row;
        }
    };
    let encoded = Arc::new(AtomicU64::new(0));
    let rate = probe.pipeline.upgrade().and_then(|p| {
        if let Some(enc) = p.by_name(choice.element) {
            if let Some(pad) = enc.static_pad("src") {
                let n = encoded.clone();
                pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    n.fetch_add(1, Ordering::Relaxed);
                    gst::PadProbeReturn::Ok
                });
            }
        }
        p.by_name("videorate")
    });
    let rate_counts = |r: &Option<gst::Element>| -> (u64, u64, u64) {
        r.as_ref().map_or((0, 0, 0), |r| {
            (
                r.property::<u64>("in"),
                r.property::<u64>("duplicate"),
                r.property::<u64>("drop"),
            )
        })
    };
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;

    let (e0, c0, s0, t0) = (
        encoded.load(Ordering::Relaxed),
        procstat::process_cpu(),
        session_ticks(),
        Instant::now(),
    );
    let r0 = rate_counts(&rate);
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    let (e1, c1, s1, wall) = (
        encoded.load(Ordering::Relaxed),
        procstat::process_cpu(),
        session_ticks(),
        t0.elapsed(),
    );
    let r1 = rate_counts(&rate);
    tokio::time::timeout(Duration::from_secs(10), run.handle.stop())
        .await
        .ok();

    let secs = wall.as_secs_f64();
    if let (Ok(c0), Ok(c1)) = (c0, c1) {
        row.host_cores = c1.since(&c0).total().as_secs_f64() / secs;
    }
    if let (Some((cl0, rs0)), Some((cl1, rs1))) = (s0, s1) {
        let hz = procstat::clock_ticks_per_sec() as f64;
        row.client_cores = Some(cl1.saturating_sub(cl0) as f64 / hz / secs);
        row.session_cores = Some(rs1.saturating_sub(rs0) as f64 / hz / secs);
    }
    row.seconds = (secs * 100.0).round() / 100.0;
    row.expected_frames = (secs * f64::from(args.framerate)).round() as u64;
    row.encoded_frames = e1 - e0;
    row.dropped_frames = row.expected_frames.saturating_sub(row.encoded_frames);
    row.source_frames = r1.0 - r0.0;
    row.repeated_frames = r1.1 - r0.1;
    row.rate_dropped = r1.2 - r0.2;
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1280x720").unwrap(), (1280, 720));
        assert!(parse_size("1280").is_err());
        assert!(parse_size("8x8").is_err());
    }

    #[test]
    fn rows_round_trip_through_json() {
        let r = Row {
            source: "portal".into(),
            size: "1920x1080".into(),
            fps: 30,
            encoder: "x264enc".into(),
            layers: 2,
            seconds: 10.0,
            host_cores: 0.61,
            extra_cores: Some(0.1),
            session_cores: Some(0.2),
            client_cores: None,
            expected_frames: 300,
            encoded_frames: 299,
            dropped_frames: 1,
            source_frames: 280,
            repeated_frames: 20,
            rate_dropped: 0,
            error: None,
        };
        let back: Row = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.encoded_frames, 299);
        assert_eq!(back.session_cores, Some(0.2));
        assert_eq!((back.layers, back.extra_cores), (2, Some(0.1)));
        // A row from before layers reads as one layer.
        let old = r#"{"source":"test","size":"1x1","fps":30,"encoder":"x","seconds":1.0,"host_cores":0.1,"session_cores":null,"client_cores":null,"expected_frames":1,"encoded_frames":1,"dropped_frames":0,"source_frames":1,"repeated_frames":0,"rate_dropped":0,"error":null}"#;
        assert_eq!(serde_json::from_str::<Row>(old).unwrap().layers, 1);
    }
}
