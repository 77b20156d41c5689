//! End-to-end checks of [`ffmpeg_args`] against the real FFmpeg: the argv must not only look
//! right, FFmpeg must accept it and emit exactly what the WebRTC and HTTP sides expect.
//! Skipped (with a note) when `ffmpeg` is not on PATH.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::watch;

use super::child::spawn;
use super::command::{ffmpeg_args, Legs};
use super::legs::RTP_PACKET_SIZE;
use super::ports::bind_pair;
use super::progress::{Progress, ProgressParser};
use crate::config::StreamConfig;

const BOUND: Duration = Duration::from_secs(60);

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Outcome {
    status: ExitStatus,
    video: Vec<Vec<u8>>,
    audio: Vec<Vec<u8>>,
    ts: Vec<u8>,
    log: String,
    blocks: Vec<Progress>,
}

/// Receives datagrams until `stop` fires, then takes whatever is still queued.
async fn collect(socket: UdpSocket, mut stop: watch::Receiver<bool>) -> Vec<Vec<u8>> {
    let socket = tokio::net::UdpSocket::from_std(socket).unwrap();
    let (mut got, mut buf) = (Vec::new(), vec![0u8; 65536]);
    loop {
        tokio::select! {
            r = socket.recv(&mut buf) => got.push(buf[..r.unwrap()].to_vec()),
            _ = stop.changed() => break,
        }
    }
    while let Ok(n) = socket.try_recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

async fn run(cfg: &StreamConfig) -> Outcome {
    let (v, a) = bind_pair(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
    let legs = Legs::for_stream(cfg, v.local_addr().unwrap().port());
    let mut s = spawn(OsStr::new("ffmpeg"), &ffmpeg_args(cfg, &legs), legs.ts).unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let video = tokio::spawn(collect(v, stop_rx.clone()));
    let audio = tokio::spawn(collect(a, stop_rx));
    let mut stdout = s.stdout.take();
    let ts = tokio::spawn(async move {
        let mut ts = Vec::new();
        if let Some(out) = stdout.as_mut() {
            out.read_to_end(&mut ts).await.unwrap();
        }
        ts
    });
    let mut stderr = s.stderr;
    let log = tokio::spawn(async move {
        let mut log = String::new();
        stderr.read_to_string(&mut log).await.unwrap();
        log
    });
    let mut parser = ProgressParser::default();
    let mut blocks = Vec::new();
    let mut lines = BufReader::new(s.progress).lines();
    let status = tokio::time::timeout(BOUND, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            blocks.extend(parser.push_line(&line));
        }
        s.child.wait().await.unwrap()
    })
    .await
    .expect("ffmpeg did not finish in time");
    stop_tx.send(true).unwrap();
    Outcome {
        status,
        video: video.await.unwrap(),
        audio: audio.await.unwrap(),
        ts: ts.await.unwrap(),
        log: log.await.unwrap(),
        blocks,
    }
}

fn stream(input: &str) -> StreamConfig {
    let input: Vec<&str> = input.split(' ').collect();
    serde_json::from_value(serde_json::json!({ "id": "t", "input": input })).unwrap()
}

const VIDEO_2S: &str = "-f lavfi -t 2 -i testsrc2=size=320x240:rate=30";
const AUDIO_2S: &str = "-f lavfi -t 2 -i sine=frequency=440";

fn is_rtcp(d: &[u8]) -> bool {
    d.len() >= 8 && (200..=204).contains(&d[1])
}

/// (payload type, SSRC) of an RTP datagram.
fn rtp_header(d: &[u8]) -> (u8, u32) {
    assert!(
        d.len() >= 12 && d[0] >> 6 == 2,
        "not RTP: {:02x?}",
        &d[..d.len().min(12)]
    );
    (d[1] & 0x7f, u32::from_be_bytes([d[8], d[9], d[10], d[11]]))
}

fn rtcp_ssrc(d: &[u8]) -> u32 {
    u32::from_be_bytes([d[4], d[5], d[6], d[7]])
}

/// Checks one RTP leg and returns (its SSRC, SSRCs of the RTCP that arrived on its port).
fn check_rtp_leg(name: &str, datagrams: &[Vec<u8>], pt: u8) -> (u32, Vec<u32>) {
    let rtp: Vec<&Vec<u8>> = datagrams.iter().filter(|d| !is_rtcp(d)).collect();
    assert!(rtp.len() > 10, "{name}: only {} RTP packets", rtp.len());
    let (_, ssrc) = rtp_header(rtp[0]);
    for d in &rtp {
        assert_eq!(
            rtp_header(d),
            (pt, ssrc),
            "{name}: unexpected payload type or SSRC"
        );
        assert!(
            d.len() <= RTP_PACKET_SIZE as usize,
            "{name}: {}-byte datagram",
            d.len()
        );
    }
    let rtcp = datagrams
        .iter()
        .filter(|d| is_rtcp(d))
        .map(|d| rtcp_ssrc(d))
        .collect();
    (ssrc, rtcp)
}

fn check_ts(ts: &[u8]) {
    assert!(ts.len() >= 188 * 10, "only {} bytes of MPEG-TS", ts.len());
    assert_eq!(ts.len() % 188, 0);
    assert!(ts.chunks(188).all(|p| p[0] == 0x47), "lost MPEG-TS sync");
}

/// Codec names ffprobe sees in `ts`, or None without ffprobe.
fn probe(ts: &[u8], name: &str) -> Option<Vec<String>> {
    if !have("ffprobe") {
        eprintln!("note: ffprobe not on PATH; skipping the codec check");
        return None;
    }
    let path =
        std::env::temp_dir().join(format!("pixelpass-test-{}-{name}.ts", std::process::id()));
    std::fs::write(&path, ts).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "json",
        ])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    // JSON, because the csv form also lists each stream again under its MPEG-TS program.
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let streams = json["streams"].as_array().unwrap();
    Some(
        streams
            .iter()
            .map(|s| s["codec_name"].as_str().unwrap().to_string())
            .collect(),
    )
}

fn check_progress(o: &Outcome) {
    let last = o.blocks.last().expect("no -progress blocks");
    assert!(last.ended, "last block should be progress=end");
    assert_eq!(last.frame, 60);
    assert!(last.out_time_s > 1.9, "{last:?}");
}

#[tokio::test]
async fn all_legs_with_real_ffmpeg() {
    if !have("ffmpeg") {
        eprintln!("note: ffmpeg not on PATH; skipping the real FFmpeg test");
        return;
    }
    // Two inputs, no maps: one output per leg (default stream selection).
    all_legs(&stream(&format!("{VIDEO_2S} {AUDIO_2S}"))).await;
}

#[tokio::test]
async fn all_legs_from_one_encode_through_tee() {
    if !have("ffmpeg") {
        eprintln!("note: ffmpeg not on PATH; skipping the real FFmpeg test");
        return;
    }
    let mut cfg = stream(&format!("{VIDEO_2S} {AUDIO_2S}"));
    cfg.video_map = Some("0:v:0".into());
    cfg.audio_map = Some("1:a:0".into());
    let args = super::command::ffmpeg_args(&cfg, &super::command::Legs::for_stream(&cfg, 1));
    assert_eq!(args.iter().filter(|a| *a == "libx264").count(), 1);
    all_legs(&cfg).await;
}

async fn all_legs(cfg: &StreamConfig) {
    let o = run(cfg).await;
    assert!(o.status.success(), "ffmpeg failed: {}", o.log);
    let (video_ssrc, rtcp_on_video) = check_rtp_leg("video", &o.video, 102);
    let (audio_ssrc, rtcp_on_audio) = check_rtp_leg("audio", &o.audio, 111);
    assert_ne!(video_ssrc, audio_ssrc);
    // rtcpport= keeps each leg's RTCP on its own port: the video SR arrives on V, never V+1.
    assert!(
        rtcp_on_video.contains(&video_ssrc),
        "no video RTCP on V: {rtcp_on_video:?}"
    );
    assert!(
        rtcp_on_video.iter().all(|s| *s == video_ssrc),
        "{rtcp_on_video:?}"
    );
    assert!(
        rtcp_on_audio.iter().all(|s| *s == audio_ssrc),
        "foreign RTCP on V+1: {rtcp_on_audio:?}"
    );
    eprintln!(
        "video: {} datagrams, RTCP {rtcp_on_video:?} (SSRC {video_ssrc}); audio: {} datagrams, RTCP {rtcp_on_audio:?} (SSRC {audio_ssrc}); ts {} bytes",
        o.video.len(), o.audio.len(), o.ts.len()
    );
    check_ts(&o.ts);
    if let Some(codecs) = probe(&o.ts, "all") {
        assert_eq!(codecs, ["h264", "aac"]);
    }
    check_progress(&o);
}

#[tokio::test]
async fn silent_input_with_audio_false() {
    if !have("ffmpeg") {
        eprintln!("note: ffmpeg not on PATH; skipping the real FFmpeg test");
        return;
    }
    let mut cfg = stream(VIDEO_2S);
    cfg.audio = false;
    let o = run(&cfg).await;
    assert!(o.status.success(), "ffmpeg failed: {}", o.log);
    check_rtp_leg("video", &o.video, 102);
    assert!(o.audio.is_empty(), "{} datagrams on V+1", o.audio.len());
    check_ts(&o.ts);
    if let Some(codecs) = probe(&o.ts, "silent") {
        assert_eq!(codecs, ["h264"]);
    }
    check_progress(&o);
}

#[tokio::test]
async fn rtp_only_with_http_ts_false() {
    if !have("ffmpeg") {
        eprintln!("note: ffmpeg not on PATH; skipping the real FFmpeg test");
        return;
    }
    let mut cfg = stream(&format!("{VIDEO_2S} {AUDIO_2S}"));
    cfg.http_ts = false;
    let o = run(&cfg).await;
    assert!(o.status.success(), "ffmpeg failed: {}", o.log);
    check_rtp_leg("video", &o.video, 102);
    check_rtp_leg("audio", &o.audio, 111);
    assert!(o.ts.is_empty());
    check_progress(&o);
}
