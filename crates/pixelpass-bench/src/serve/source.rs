//! `--source ts`: each stream's input is a live MPEG-TS over loopback UDP,
//! as a camera or an encoder in the field sends it: H.264 High without
//! B-frames + AAC, encoded ONCE into a sample before the run (`--size`,
//! `--fps`, `--bitrate`, x264 veryfast, a keyframe every
//! `--keyframe-interval`), then replayed in real time by one `ffmpeg -c copy`
//! per stream (a few % of a core each, not counted as the server's or the
//! stream's FFmpeg). So `--video copy` and `--video encode` see the same input.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use super::ServeBenchArgs;
use crate::replay::{ffmpeg_ts_with, TsSpec};

/// Seconds of sample (looped).
const SAMPLE_SECONDS: u32 = 10;

/// The replaying children and the sample file; both go when this is dropped.
pub struct TsSources {
    children: Vec<Child>,
    file: PathBuf,
    /// The UDP port of stream `i` is `ports[i]`.
    pub ports: Vec<u16>,
}

impl TsSources {
    pub fn start(args: &ServeBenchArgs) -> anyhow::Result<TsSources> {
        let spec = TsSpec {
            size: args.size,
            fps: args.fps,
            bitrate_kbps: args.bitrate,
            preset: "veryfast".into(),
            keyint: ((args.keyframe_interval * f64::from(args.fps)).round() as u32).max(1),
            profile: Some("high".into()),
        };
        let data = ffmpeg_ts_with(&spec, SAMPLE_SECONDS, Duration::from_secs(300))
            .context("cannot encode the TS sample")?;
        let file =
            std::env::temp_dir().join(format!("pixelpass-bench-src-{}.ts", std::process::id()));
        std::fs::write(&file, data).with_context(|| format!("cannot write {}", file.display()))?;
        let mut sources = TsSources {
            children: Vec::new(),
            file,
            ports: Vec::new(),
        };
        for _ in 0..args.streams {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let child = Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
                .args(["-stream_loop", "-1", "-i"])
                .arg(&sources.file)
                .args(["-c", "copy", "-f", "mpegts"])
                .arg(format!("udp://127.0.0.1:{port}?pkt_size=1316"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot run ffmpeg for a TS source")?;
            sources.children.push(child);
            sources.ports.push(port);
        }
        Ok(sources)
    }

    /// The `input` of a stream reading port `port`; `analyze_ms`: the
    /// operator's `-analyzeduration` (FFmpeg's 5 s when absent).
    pub fn input(port: u16, analyze_ms: Option<u32>) -> serde_json::Value {
        let mut input: Vec<String> = Vec::new();
        if let Some(ms) = analyze_ms {
            input.extend([
                "-analyzeduration".into(),
                (u64::from(ms) * 1000).to_string(),
            ]);
        }
        input.extend([
            "-f".into(),
            "mpegts".into(),
            "-i".into(),
            format!("udp://127.0.0.1:{port}?overrun_nonfatal=1&fifo_size=50000"),
        ]);
        serde_json::json!(input)
    }
}

impl Drop for TsSources {
    fn drop(&mut self) {
        for c in &mut self.children {
            // Our own children: ended by their handles, then reaped.
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.file);
    }
}
