//! The `ffmpeg-hls` path of `bench latency`: ffmpeg reads the stream's
//! LL-HLS playlist as a player would (`-live_start_index -1`: from the last
//! segment) and writes each decoded frame's luma to its stdout; the time
//! code is read from each frame the moment it arrives. ffmpeg's HLS demuxer
//! takes whole segments (it does not know parts or blocking reload), so
//! this is HLS as a segment-based client sees it.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncReadExt;

use super::{Host, LatencyPath, Report};
use pixelpass::media::timecode;
use pixelpass_testkit::clock::{wall_ms, Frame};

pub async fn measure(host: &Host, (w, h): (u32, u32), seconds: f64) -> anyhow::Result<Report> {
    let url = format!("http://{}/{}/hls/index.m3u8", host.http, host.token);
    let requested = Instant::now();
    let mut child = tokio::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-hide_banner",
            "-v",
            "error",
            "-live_start_index",
            "-1",
            "-i",
        ])
        .arg(&url)
        .args(["-an", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run ffmpeg (scripts/setup.sh installs it)")?;
    let mut out = child.stdout.take().context("ffmpeg's stdout")?;
    let (w, h) = (w as usize, h as usize);
    let mut buf = vec![0u8; w * h];
    let mut frames = Vec::new();
    let mut until = Instant::now() + Duration::from_secs(30);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, out.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => break,
        }
        if frames.is_empty() {
            // Joined: watch for `seconds` from here.
            until = Instant::now() + Duration::from_secs_f64(seconds);
        }
        frames.push(Frame {
            at: Instant::now(),
            wall_ms: wall_ms(),
            code: timecode::read(&buf, w, w, h),
        });
    }
    let _ = child.start_kill();
    let stderr = match child.stderr.take() {
        Some(mut e) => {
            let mut s = String::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), e.read_to_string(&mut s)).await;
            s
        }
        None => String::new(),
    };
    let _ = child.wait().await;
    let mut r = Report::from_frames(LatencyPath::FfmpegHls, &frames, requested);
    let errors = stderr.trim();
    r.note = Some(if errors.is_empty() {
        "ffmpeg reads whole segments (no parts): from the last one listed".to_owned()
    } else {
        format!(
            "ffmpeg: {}",
            errors.lines().take(3).collect::<Vec<_>>().join(" | ")
        )
    });
    Ok(r)
}
