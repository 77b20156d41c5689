//! Layers with the real FFmpeg, through the producer a stream runs: each
//! layer's hub gets decodable MPEG-TS at its size with the sound in it, and
//! H.264 RTP that starts keyframes; the hub says what each layer is. Skipped
//! (with a note) without `ffmpeg` and `ffprobe` on PATH.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::report::ProcessState;
use super::FfmpegProducer;
use crate::config::StreamConfig;
use crate::hub::{Hub, LayerInfo, RtpSubscriber, Subscriber};
use crate::restream::hub_config;
use crate::supervisor::Producer;

/// Every wait in here ends by then.
const BOUND: Duration = Duration::from_secs(45);
/// TS bytes per layer that hold a few seconds of each (≥ 2 GOPs of 1 s).
const TS_ENOUGH: usize = 60_000;
/// Keyframes each layer's RTP must start before the run is stopped.
const RTP_KEYS: usize = 3;

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn tools() -> bool {
    let ok = have("ffmpeg") && have("ffprobe");
    if !ok {
        eprintln!("note: ffmpeg or ffprobe not on PATH; skipping the layers test");
    }
    ok
}

fn stream(json: serde_json::Value) -> StreamConfig {
    let cfg: StreamConfig = serde_json::from_value(json).unwrap();
    cfg.validate().unwrap();
    cfg
}

/// What one layer's viewers got.
#[derive(Default)]
struct Got {
    ts: Vec<u8>,
    rtp_keys: usize,
    rtp_packets: usize,
}

/// Run `cfg` through [`FfmpegProducer`] until every layer has [`TS_ENOUGH`]
/// bytes of TS and [`RTP_KEYS`] keyframes on RTP (or [`BOUND`] passes), then
/// stop it (FFmpeg reaped). Returns per layer what came, the hub and the state.
async fn run(cfg: StreamConfig) -> (Vec<Got>, Hub, Arc<ProcessState>) {
    let n = cfg.layers as usize;
    let hub = Hub::with_layers(hub_config(&cfg), n);
    let now = Instant::now();
    let mut ts: Vec<Subscriber> = hub.layers().map(|l| l.subscribe(now)).collect();
    let mut rtp: Vec<RtpSubscriber> = hub.layers().map(|l| l.rtp_receivers()).collect();
    let state = Arc::new(ProcessState::default());
    let producer = FfmpegProducer::new(cfg, state.clone());
    let started = tokio::time::timeout(BOUND, producer.start(hub.clone()))
        .await
        .expect("the run started in time");
    let run = started.unwrap_or_else(|e| panic!("the run failed: {e}\n{:?}", state.log()));
    let mut got: Vec<Got> = (0..n).map(|_| Got::default()).collect();
    let deadline = tokio::time::Instant::now() + BOUND;
    let done = |got: &[Got]| {
        got.iter()
            .all(|g| g.ts.len() >= TS_ENOUGH && g.rtp_keys >= RTP_KEYS)
    };
    // Bounded: by the deadline, and by one step per received item.
    for _ in 0..1_000_000 {
        if done(&got) || tokio::time::Instant::now() >= deadline {
            break;
        }
        let mut progressed = false;
        for (i, g) in got.iter_mut().enumerate() {
            let mut chunks = Vec::new();
            ts[i].drain_into(Instant::now(), &mut chunks, 4096);
            for b in &chunks {
                g.ts.extend_from_slice(b);
                progressed = true;
            }
            while let Ok(p) = rtp[i].video.try_recv() {
                g.rtp_packets += 1;
                g.rtp_keys += usize::from(p.key);
                progressed = true;
            }
        }
        if !progressed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for (i, g) in got.iter().enumerate() {
        eprintln!(
            "layer {i}: {} bytes of TS, {} RTP packets, {} keyframes, {:?}",
            g.ts.len(),
            g.rtp_packets,
            g.rtp_keys,
            hub.layer(i).and_then(|l| l.layer_info())
        );
    }
    run.handle.stop().await;
    assert!(state.pid().is_none(), "FFmpeg was reaped");
    (got, hub, state)
}

/// (codec, width, height, frame rate) of each stream ffprobe finds in `ts`.
fn probe(ts: &[u8], name: &str) -> Vec<(String, u64, u64, String)> {
    // The tests run at once in one process: each file a name of its own (a
    // shared one let one test probe, or delete, the other's).
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "pixelpass-layers-{}-{n}-{name}.ts",
        std::process::id()
    ));
    std::fs::write(&path, ts).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries"])
        .arg("stream=codec_name,width,height,avg_frame_rate")
        .args(["-of", "json"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_name"].as_str().unwrap_or_default().to_owned(),
                s["width"].as_u64().unwrap_or(0),
                s["height"].as_u64().unwrap_or(0),
                s["avg_frame_rate"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn check_layer(g: &Got, i: usize, size: (u64, u64), fps: &str) {
    assert!(
        g.ts.len() >= TS_ENOUGH && g.rtp_keys >= RTP_KEYS,
        "layer {i}: {} bytes of TS, {} RTP packets, {} keyframes",
        g.ts.len(),
        g.rtp_packets,
        g.rtp_keys
    );
    assert!(
        g.ts.chunks(188).all(|p| p[0] == 0x47),
        "layer {i}: TS sync lost"
    );
    let streams = probe(&g.ts, &format!("l{i}"));
    let video = ("h264".to_owned(), size.0, size.1, fps.to_owned());
    assert_eq!(streams.first(), Some(&video), "layer {i}: {streams:?}");
    assert_eq!(
        streams.get(1).map(|s| s.0.as_str()),
        Some("aac"),
        "layer {i}: no sound in its TS: {streams:?}"
    );
}

#[tokio::test]
async fn three_layers_each_get_their_size_their_keyframes_and_the_sound() {
    if !tools() {
        return;
    }
    let cfg = stream(serde_json::json!({
        "id": "layers3",
        "input": ["-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
                  "-f", "lavfi", "-i", "sine=frequency=440"],
        "video_map": "0:v:0", "audio_map": "1:a:0",
        "video": "encode", "layers": 3, "keyframe_interval_seconds": 1,
        "video_bitrate_kbps": 1200, "video_options": ["-preset", "ultrafast"],
    }));
    let (got, hub, state) = run(cfg).await;
    check_layer(&got[0], 0, (640, 360), "30/1");
    check_layer(&got[1], 1, (320, 180), "30/1");
    check_layer(&got[2], 2, (160, 90), "15/1");
    let info: Vec<Option<LayerInfo>> = hub.layers().map(|l| l.layer_info()).collect();
    let want = |width, height, fps, bitrate_kbps| {
        Some(LayerInfo {
            width,
            height,
            fps,
            bitrate_kbps,
        })
    };
    assert_eq!(
        info,
        [
            want(640, 360, 30, 1200),
            want(320, 180, 30, 300),
            want(160, 90, 15, 150)
        ]
    );
    // Layers 1.. count their own RTP; WebRTC's sound is layer 0's alone.
    let report = state.report(0);
    assert_eq!(report.layer_rtp.len(), 2);
    assert!(
        report.layer_rtp.iter().all(|l| l.video_packets > 0),
        "{:?}",
        report.layer_rtp
    );
    assert!(report.rtp.audio_packets > 0);
    assert_eq!(report.command.iter().filter(|a| *a == "libx264").count(), 3);
    assert_eq!(report.command.iter().filter(|a| *a == "libopus").count(), 1);
}

/// An H.264 (High, no B-frames) + AAC file to copy from, 3 s, 1 s GOP.
fn h264_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("pixelpass-layers-src-{}.ts", std::process::id()));
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440", "-t", "3"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "0",
            "-g",
            "25",
        ])
        .args(["-c:a", "aac", "-f", "mpegts"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

#[tokio::test]
async fn copy_keeps_layer_0_as_it_comes_and_encodes_layer_1() {
    if !tools() {
        return;
    }
    let src = h264_file();
    let cfg = stream(serde_json::json!({
        "id": "copy2",
        "input": ["-re", "-stream_loop", "-1", "-i", src.to_string_lossy()],
        "video": "copy", "layers": 2, "keyframe_interval_seconds": 1,
        "video_options": ["-preset", "ultrafast"],
    }));
    let (got, hub, state) = run(cfg).await;
    let _ = std::fs::remove_file(&src);
    check_layer(&got[0], 0, (640, 360), "25/1");
    check_layer(&got[1], 1, (320, 180), "25/1");
    let report = state.report(0);
    let cmd = report.command.join(" ");
    assert!(
        cmd.contains("-c:v copy") && cmd.matches("libx264").count() == 1,
        "{cmd}"
    );
    assert_eq!(report.video.map(|v| v.mode), Some("copy"));
    assert_eq!(
        hub.layer(1)
            .and_then(|l| l.layer_info())
            .map(|l| (l.width, l.height)),
        Some((320, 180))
    );
}
