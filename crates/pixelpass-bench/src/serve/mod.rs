//! `pixelpass bench serve`: the restream server under load, as deployed.
//!
//! `pixelpass serve --json` (this binary) runs as a child process on
//! loopback; the bench creates `--streams` FFmpeg streams through its JSON
//! API (test pattern + sine, WebRTC only: `http_ts=false`), starts them one
//! after the other, then brings every stream to `--viewers` WHEP peers and
//! measures a window of `--seconds`.
//!
//! - *Join*: per stream, from just before `PUT …/command {"command":"start"}`
//!   to the first complete IDR access unit one [`WhepClient`] (in this
//!   process, POSTing as soon as the PUT is answered) depacketized: the first
//!   WHEP-playable keyframe. Streams start one at a time, so a time holds no
//!   queueing behind the other streams' starts (the encoders already running
//!   do share the CPUs with it).
//! - *Load*: the peers run in a child process (`pixelpass-bench whep-fanout-client`
//!   with one `--url` per stream), so their CPU is not the server's. Nothing
//!   is pinned: 10 encoders, the server and the peers share the 2 CPUs.
//! - *Server CPU*: utime + stime of the `serve` PID only (/proc/PID/stat:
//!   all its threads; the FFmpeg children are separate processes and are
//!   NOT counted; their CPU is printed apart, from their own /proc/PID/stat).
//! - *Delivered*: bytes the peers received on their UDP sockets (SRTP +
//!   SRTCP + STUN) in the window; the server's `bytes_out.whep` (RTP payload
//!   handed to the WebRTC engine, before headers and SRTP) is shown next to it.
//! - *RSS*: VmRSS of the `serve` PID before any stream, with the streams
//!   running and no peer, and with every peer streaming; RSS/peer is the
//!   last difference ÷ peers.
//!
//! At the end the server gets SIGTERM (SIGKILL after 5 s) and every FFmpeg
//! PID seen in the reports is checked: none may survive it.
//!
//! Files: the server child and its JSON API (`server.rs`), one timed start
//! (`join.rs`), the load phases and the window (`measure.rs`), and the
//! numbers and their printed tables (`table.rs`).

mod join;
mod measure;
mod server;
mod source;
mod table;

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;

use super::procstat;
use measure::{measure, pid_rss, pid_ticks};
use server::ServeChild;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeBenchArgs {
    /// One JSON object per step on stdout (the table's figures); prose goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// FFmpeg streams (test pattern + sine each).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub streams: u32,
    /// WHEP peers per stream during the measurement.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub viewers: u32,
    /// Length of the measurement window, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Seconds between "every peer has its first keyframe" and the window.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Picture size of the test pattern, WxH.
    #[arg(long, default_value = "640x360", value_parser = parse_size)]
    pub size: (u32, u32),
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub fps: u32,
    /// Video bitrate, kbit/s.
    #[arg(long, default_value_t = 800)]
    pub bitrate: u32,
    /// x264 preset (`video_options = ["-preset", …]`).
    #[arg(long, default_value = "ultrafast")]
    pub preset: String,
    #[arg(long, default_value_t = 2.0)]
    pub keyframe_interval: f64,
    /// Peers connecting at the same time.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// A stream that is not running, or has no keyframe, after this many seconds fails.
    #[arg(long, default_value_t = 20)]
    pub join_timeout_s: u64,
    /// Seconds measured with the streams running and no peer (server CPU of the ingest alone).
    #[arg(long, default_value_t = 5.0)]
    pub idle_seconds: f64,
    /// Streams published over WHIP instead of FFmpeg streams: each has a
    /// `pixelpass host --source test --publish` child (its CPU is its own,
    /// not the server's), and "join" is publisher start → first WHEP keyframe.
    #[arg(long)]
    pub published: bool,
    /// Each stream's input: `lavfi` (a test pattern FFmpeg makes itself, raw
    /// video: always encoded) or `ts` (live MPEG-TS over loopback UDP, H.264
    /// High without B-frames + AAC, see `source.rs`).
    #[arg(long, default_value = "lavfi", value_parser = ["lavfi", "ts"])]
    pub source: String,
    /// The streams' `video` setting: encode, copy or auto.
    #[arg(long, default_value = "encode", value_parser = ["encode", "copy", "auto"])]
    pub video: String,
    /// `--source ts`: the streams' `-analyzeduration` in ms (FFmpeg's 5 s
    /// when absent; a live MPEG-TS always takes all of it before starting).
    #[arg(long = "analyzeduration-ms")]
    pub analyze_ms: Option<u32>,
    /// The streams' `layers`: 2 and 3 add encodes at half and a quarter of
    /// the size in the same FFmpeg (their CPU is in "ffmpeg s/s").
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=3))]
    pub layers: u32,
}

/// `640x360` → (640, 360): even sides (4:2:0) from 16 to 7680.
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?}: expected WxH, e.g. 640x360"))?;
    let side = |v: &str| -> Result<u32, String> {
        let n: u32 = v
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {v:?} is not a number"))?;
        if !(16..=7680).contains(&n) || !n.is_multiple_of(2) {
            return Err(format!("{s:?}: sides must be even, 16..=7680"));
        }
        Ok(n)
    };
    Ok((side(w)?, side(h)?))
}

/// The publish secret of stream `i` (`--published`).
pub fn publish_token(i: u32) -> String {
    format!("bench-serve-publish-secret-s{i:03}")
}

/// The API body creating stream `i`; `ts_port`: its live TS input (`--source ts`).
pub fn stream_config(i: u32, a: &ServeBenchArgs, ts_port: Option<u16>) -> serde_json::Value {
    if a.published {
        return serde_json::json!({
            "id": stream_id(i),
            "token": stream_token(i),
            "publish_token": publish_token(i),
            "http_ts": false,
            "max_viewers": (a.viewers + 8).max(1000),
        });
    }
    let (w, h) = a.size;
    let input = match ts_port {
        Some(port) => source::TsSources::input(port, a.analyze_ms),
        None => serde_json::json!([
            "-re",
            "-f",
            "lavfi",
            "-i",
            format!("testsrc2=size={w}x{h}:rate={}", a.fps),
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
        ]),
    };
    let mut body = serde_json::json!({
        "id": stream_id(i),
        "token": stream_token(i),
        "input": input,
        "layers": a.layers,
        "video": a.video,
        "autostart": false,
        "http_ts": false,
        "video_bitrate_kbps": a.bitrate,
        "keyframe_interval_seconds": a.keyframe_interval,
        "video_options": ["-preset", a.preset],
        "max_viewers": (a.viewers + 8).max(1000),
    });
    if ts_port.is_none() && a.layers > 1 {
        // Two lavfi inputs: the layers need to be told which video and sound.
        body["video_map"] = "0:v:0".into();
        body["audio_map"] = "1:a:0".into();
    }
    body
}

fn stream_id(i: u32) -> String {
    format!("s{i}")
}

fn stream_token(i: u32) -> String {
    // As long as a random token (22 characters), so the server does not warn about it.
    format!("bench-serve-token-s{i:03}")
}

pub fn run(args: ServeBenchArgs) -> anyhow::Result<ExitCode> {
    crate::output::set_json(args.json);
    if !(args.seconds > 0.0 && args.warmup >= 0.0 && args.idle_seconds >= 0.0) {
        bail!("--seconds must be positive, --warmup and --idle-seconds not negative");
    }
    let _ = procstat::raise_nofile_limit();
    let n = args.streams;
    let (w, h) = args.size;
    say!(
        "bench serve: {n} streams × {} WHEP peers; testsrc2 {w}x{h}@{} + sine, x264 {} {} kbit/s, GOP {} s; WebRTC only (http_ts=false); {} CPUs, nothing pinned",
        args.viewers, args.fps, args.preset, args.bitrate, args.keyframe_interval, procstat::online_cpus()
    );
    let sources = match args.source.as_str() {
        "ts" => Some(source::TsSources::start(&args)?),
        _ => None,
    };
    let ts_ports = sources.as_ref().map(|s| s.ports.clone());
    say!(
        "input: {}; video = \"{}\", layers = {}",
        if ts_ports.is_some() {
            "live MPEG-TS over loopback UDP (H.264 High, no B-frames, + AAC)"
        } else {
            "lavfi test pattern"
        },
        args.video,
        args.layers
    );
    let exe = pixelpass_testkit::pixelpass_bin()?;
    let mut server = ServeChild::start(&exe)?;
    say!(
        "server: pid {} on {} (log {})",
        server.pid,
        server.base,
        server.log.display()
    );
    std::thread::sleep(Duration::from_millis(500));
    let rss_base = pid_rss(server.pid).unwrap_or(0);
    let mut ffmpeg_pids = BTreeSet::new();
    let r = measure(
        &mut server,
        &exe,
        &args,
        ts_ports.as_deref(),
        rss_base,
        &mut ffmpeg_pids,
    );
    drop(sources);
    // Whatever happened: stop the server and check its FFmpegs are gone.
    if let Ok(reports) = (0..n)
        .map(|i| server.report(&stream_id(i)))
        .collect::<anyhow::Result<Vec<_>>>()
    {
        ffmpeg_pids.extend(reports.iter().filter_map(|r| r.pid));
    }
    let problems = server.log_problems();
    let stopped = server.stop();
    std::thread::sleep(Duration::from_millis(200));
    let left: Vec<u32> = ffmpeg_pids
        .iter()
        .copied()
        .filter(|&p| {
            pid_ticks(p).is_some_and(|(_, _, comm, state)| comm.contains("ffmpeg") && state != 'Z')
        })
        .collect();
    if let Some((how, took)) = stopped {
        say!("server stop: {how}, {:.0} ms", took.as_secs_f64() * 1000.0);
    }
    say!(
        "ffmpeg left behind: {} (of {} FFmpeg PIDs seen{})",
        left.len(),
        ffmpeg_pids.len(),
        if left.is_empty() {
            String::new()
        } else {
            format!(": {left:?}")
        }
    );
    for p in &left {
        // Started by our server: ours to end, by PID.
        // SAFETY: a signal to one PID just checked to be an FFmpeg of ours.
        unsafe {
            libc::kill(*p as libc::pid_t, libc::SIGKILL);
        }
    }
    if !problems.is_empty() {
        say!(
            "server log: {} WARN/ERROR lines; the first ones:",
            problems.len()
        );
        for l in problems.iter().take(8) {
            say!("  {l}");
        }
    }
    let summary = r?;
    say!("{summary}");
    Ok(if left.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeBenchArgs,
    }

    fn defaults() -> ServeBenchArgs {
        Cli::parse_from(["x"]).args
    }

    #[test]
    fn sizes_parse_and_odd_ones_are_refused() {
        assert_eq!(parse_size("640x360"), Ok((640, 360)));
        assert_eq!(parse_size("426X240"), Ok((426, 240)));
        assert!(parse_size("641x360").is_err());
        assert!(parse_size("640").is_err());
        assert!(parse_size("0x0").is_err());
        assert!(parse_size("axb").is_err());
    }

    #[test]
    fn the_stream_body_is_a_valid_webrtc_only_stream() {
        let a = ServeBenchArgs {
            size: (426, 240),
            ..defaults()
        };
        assert_eq!((a.streams, a.viewers, a.bitrate), (10, 20, 800));
        let v = stream_config(3, &a, None);
        let c: pixelpass::config::stream::StreamConfig = serde_json::from_value(v).unwrap();
        c.validate().unwrap();
        assert_eq!(c.id, "s3");
        assert_eq!(c.token.as_deref(), Some("bench-serve-token-s003"));
        assert!(!c.http_ts && !c.autostart && c.webrtc.enabled);
        assert!(c
            .input
            .contains(&"testsrc2=size=426x240:rate=30".to_owned()));
        assert_eq!(c.video_options, ["-preset", "ultrafast"]);
        assert!(c.max_viewers >= 28);
        assert_eq!(c.video, pixelpass::config::VideoMode::Encode);
        let copy = ServeBenchArgs {
            video: "copy".into(),
            ..defaults()
        };
        let c: pixelpass::config::stream::StreamConfig =
            serde_json::from_value(stream_config(0, &copy, Some(5004))).unwrap();
        c.validate().unwrap();
        assert_eq!(c.video, pixelpass::config::VideoMode::Copy);
        assert!(c
            .input
            .iter()
            .any(|a| a.starts_with("udp://127.0.0.1:5004?")));
        let layered = ServeBenchArgs {
            layers: 3,
            ..defaults()
        };
        let c: pixelpass::config::stream::StreamConfig =
            serde_json::from_value(stream_config(0, &layered, None)).unwrap();
        c.validate().unwrap();
        assert_eq!(c.layers, 3);
        assert_eq!(c.audio_map.as_deref(), Some("1:a:0"));
    }
}
