//! The mpv path of `bench latency`: mpv plays the HTTP-TS stream with the
//! options `pixelpass view` gives it, plus `--vo=image`, which writes every
//! frame mpv displays to a JPEG file as it displays it (no screen needed).
//! A frame's latency is the file's modification time minus the time drawn
//! into it, so it includes the few milliseconds mpv takes to encode and
//! write the JPEG (an upper bound on what a screen would show).
//!
//! mpv plays no audio here (`--no-audio`): it paces video by its audio
//! output even with `--untimed`, so with sound the figure grows by the sound
//! card's buffer, and the null output that stands in for one where there is
//! none was erratic (`--ao=null --ao-null-buffer=0.01 … 0.05` gave p50 76 to
//! 484 ms from one run to the next). `--mpv-arg` adds options, to try others.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{bail, Context};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{Host, LatencyPath, Report};
use pixelpass::view::{player_command, Player};
use pixelpass_testkit::clock::{read_sample, wall_ms, Frame};

/// Options added to `pixelpass view`'s for the measurement.
pub fn measurement_args(dir: &Path) -> Vec<String> {
    vec![
        "--really-quiet".into(),
        "--vo=image".into(),
        "--vo-image-format=jpg".into(),
        format!("--vo-image-outdir={}", dir.display()),
        "--no-audio".into(),
    ]
}

pub async fn measure(host: &Host, seconds: f64, extra: &[String]) -> anyhow::Result<Report> {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("pixelpass-mpv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot make {}", dir.display()))?;
    let result = run(host, seconds, extra, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(host: &Host, seconds: f64, extra: &[String], dir: &Path) -> anyhow::Result<Report> {
    let url = format!("http://{}{}", host.http, host.stream_path());
    let (program, mut args) = player_command(Player::Mpv, &url);
    let url_arg = args.pop().expect("the URL is last");
    args.extend(measurement_args(dir));
    args.extend(extra.iter().cloned());
    args.push(url_arg);
    let (requested, requested_wall) = (Instant::now(), wall_ms());
    let mut child = tokio::process::Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {program} (apt-get install mpv)"))?;
    let first_by = Instant::now() + Duration::from_secs(20);
    while frame_files(dir).is_empty() {
        if Instant::now() > first_by {
            bail!(
                "mpv showed no frame within 20 s ({program} {})",
                args.join(" ")
            );
        }
        if let Some(status) = child.try_wait()? {
            bail!("mpv exited ({status}) before showing a frame");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let _ = child.kill().await;
    let mut files = frame_files(dir);
    // The last file may be half written.
    files.pop();
    let codes = tokio::task::spawn_blocking({
        let dir = dir.to_path_buf();
        let n = files.len();
        move || decode_all(&dir, n)
    })
    .await??;
    let frames: Vec<Frame> = files
        .iter()
        .zip(codes)
        .map(|((_, shown), code)| Frame {
            at: requested + Duration::from_secs_f64(((shown - requested_wall) / 1000.0).max(0.0)),
            wall_ms: *shown,
            code,
        })
        .collect();
    let mut report = Report::from_frames(LatencyPath::Mpv, &frames, requested);
    report.note = Some(format!("mpv {}", args[..args.len() - 1].join(" ")));
    Ok(report)
}

/// The JPEG files mpv wrote so far (it numbers them from 00000001), in
/// order, with their modification times (ms since the Unix epoch).
fn frame_files(dir: &Path) -> Vec<(PathBuf, f64)> {
    let mut v: Vec<(PathBuf, f64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jpg"))
        .filter_map(|e| {
            let t = e
                .metadata()
                .ok()?
                .modified()
                .ok()?
                .duration_since(UNIX_EPOCH)
                .ok()?;
            Some((e.path(), t.as_secs_f64() * 1000.0))
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Decode `n` numbered JPEGs in one pipeline and read their codes.
fn decode_all(
    dir: &Path,
    n: usize,
) -> anyhow::Result<Vec<Result<u64, pixelpass::media::timecode::ReadError>>> {
    pixelpass::capture::init()?;
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("multifilesrc")
        .property(
            "location",
            dir.join("%08d.jpg").to_string_lossy().to_string(),
        )
        .property("index", 1i32)
        .property("stop-index", n as i32)
        .property(
            "caps",
            gst::Caps::builder("image/jpeg")
                .field("framerate", gst::Fraction::new(30, 1))
                .build(),
        )
        .build()?;
    let dec = gst::ElementFactory::make("jpegdec").build()?;
    let sink = gst_app::AppSink::builder().sync(false).build();
    pipeline.add_many([&src, &dec, sink.upcast_ref()])?;
    gst::Element::link_many([&src, &dec, sink.upcast_ref()])?;
    pipeline.set_state(gst::State::Playing)?;
    let mut codes = Vec::with_capacity(n);
    while codes.len() < n {
        match sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
            Some(s) => codes.push(read_sample(&s)),
            None => break,
        }
    }
    pipeline.set_state(gst::State::Null)?;
    if codes.len() < n {
        bail!("decoded {} of mpv's {n} frames", codes.len());
    }
    Ok(codes)
}
