//! `pixelpass-bench hls-segment`: what the LL-HLS segmenter costs per
//! stream — CPU per second of media and the memory its window holds.
//!
//! FFmpeg encodes `--seconds` of a 720p30 test picture with a tone (libx264
//! at `--bitrate`, 2 s GOP, AAC) to MPEG-TS first; the hub's chunker cuts it
//! into the chunks a stream's hub fans out (not timed: every viewer kind
//! shares it). Timed: the segmenter's own path, exactly as the HLS service
//! runs it — PES demux, CMAF boxes, parts and segments, the sliding window —
//! on one thread, as fast as it goes, `--laps` times from a fresh state.

use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context};
use pixelpass::egress::hls::segmenter::{Config, Segmenter, TsInput};
use pixelpass::egress::hls::window::Window;
use pixelpass::media::ts::{Chunker, Output};

use crate::output::{say, set_json, step};

#[derive(clap::Args, Debug)]
pub struct HlsSegmentArgs {
    /// One JSON object per lap on stdout; prose goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Seconds of media to encode and segment.
    #[arg(long, default_value_t = 20)]
    pub seconds: u32,
    /// Video bitrate, kbit/s.
    #[arg(long, default_value_t = 4000)]
    pub bitrate: u32,
    /// Times the whole input is segmented (each from a fresh segmenter).
    #[arg(long, default_value_t = 5)]
    pub laps: u32,
}

pub fn run(args: HlsSegmentArgs) -> anyhow::Result<ExitCode> {
    set_json(args.json);
    if !(2..=600).contains(&args.seconds) || !(1..=100).contains(&args.laps) {
        bail!("--seconds: 2 to 600; --laps: 1 to 100");
    }
    let dir = std::env::temp_dir().join(format!("pixelpass-bench-hls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ts = dir.join("in.ts");
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!(
            "testsrc2=size=1280x720:rate=30:duration={}",
            args.seconds
        ))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={}", args.seconds))
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-bf", "0",
        ])
        .arg("-b:v")
        .arg(format!("{}k", args.bitrate))
        .args(["-c:a", "aac", "-b:a", "96k", "-f", "mpegts"])
        .arg(&ts)
        .output()
        .context("cannot run ffmpeg (Debian package ffmpeg)")?;
    if !out.status.success() {
        bail!(
            "ffmpeg could not make the input: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bytes = std::fs::read(&ts).with_context(|| format!("cannot read {}", ts.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut chunker = Chunker::new();
    let mut cut = Vec::new();
    chunker.push(&bytes, &mut cut);
    chunker.flush(&mut cut);
    // A viewer gets the PSI first, then the chunks.
    let mut chunks: Vec<(Vec<u8>, u64)> = Vec::new();
    let mut psi = None;
    for o in cut {
        match o {
            Output::Psi(b) => psi = Some(b.to_vec()),
            Output::Chunk { data, pts, .. } => {
                let mut d = psi.take().unwrap_or_default();
                d.extend_from_slice(&data);
                chunks.push((d, pts.unwrap_or(0)));
            }
        }
    }
    say(format_args!(
        "pixelpass bench hls-segment: {} s of 1280x720 30 fps at {} kbit/s + AAC, {} chunks, {} laps",
        args.seconds,
        args.bitrate,
        chunks.len(),
        args.laps
    ));
    say(format_args!(
        "{:>4} {:>14} {:>16} {:>9} {:>17}",
        "lap", "cpu ms", "core per stream", "parts", "window held MiB"
    ));
    let base_ms: u64 = 1_796_323_582_000;
    let mut per_stream = Vec::new();
    for lap in 1..=args.laps {
        let mut input = TsInput::default();
        let mut seg = Segmenter::new(Config::default());
        let mut window = Window::new(6, 1);
        let (mut outs, mut parts, mut held) = (Vec::new(), 0u64, 0usize);
        let start = Instant::now();
        for (data, pts) in &chunks {
            input.push(data, base_ms + pts / 90, &mut seg, &mut outs);
            for o in outs.drain(..) {
                if matches!(o, pixelpass::egress::hls::segmenter::Output::PartEnd { .. }) {
                    parts += 1;
                }
                window.apply(o);
            }
            held = held.max(window.bytes_held());
        }
        let cpu = start.elapsed().as_secs_f64();
        let core = cpu / f64::from(args.seconds);
        per_stream.push(core);
        step(
            "hls-segment",
            &format!(
                "{lap:>4} {:>14.1} {core:>16.5} {parts:>9} {:>17.2}",
                cpu * 1e3,
                held as f64 / 1048576.0
            ),
            serde_json::json!({"lap": lap, "cpu_s": cpu, "media_s": args.seconds, "core_per_stream": core, "parts": parts, "window_bytes": held}),
        );
    }
    per_stream.sort_by(f64::total_cmp);
    say(format_args!(
        "median: {:.5} core per stream ({:.2} % of one core)",
        per_stream[per_stream.len() / 2],
        per_stream[per_stream.len() / 2] * 100.0
    ));
    Ok(ExitCode::SUCCESS)
}
