//! Three layers from one real pipeline (test source, the host's encoder):
//! each layer's TS decodes at its size with the same PIDs, each layer's RTP
//! has keyframes on a shared timestamp base, and a keyframe asked of layer 1
//! comes on layer 1 (not on layer 0). Counted in frames, never timed.

use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::TryRecvError;

use super::tests::{ffmpeg_decode_errors, ffprobe_streams, temp_ts};
use super::*;
use crate::hub::{Hub, HubConfig, RtpPkt, Subscriber};

/// What one layer delivered so far.
#[derive(Default)]
struct Got {
    ts: Vec<u8>,
    /// RTP video frames (marker bits) and keyframe starts, in order.
    frames: u64,
    keyframes: u64,
    last_timestamp: Option<u32>,
}

fn drain_rtp(
    rx: &mut tokio::sync::broadcast::Receiver<RtpPkt>,
    got: &mut Got,
    on_key: &mut Vec<u64>,
) {
    loop {
        match rx.try_recv() {
            Ok(p) => {
                if p.key {
                    got.keyframes += 1;
                    on_key.push(got.frames);
                }
                if p.marker {
                    got.frames += 1;
                }
                got.last_timestamp = Some(p.timestamp);
            }
            Err(TryRecvError::Lagged(_)) => {}
            Err(TryRecvError::Empty | TryRecvError::Closed) => return,
        }
    }
}

fn drain_ts(sub: &mut Subscriber, got: &mut Got) {
    let mut out = Vec::new();
    sub.drain_into(Instant::now(), &mut out, usize::MAX);
    for b in out {
        got.ts.extend_from_slice(&b);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_layers_decode_at_their_sizes_and_take_keyframe_requests_each() {
    let cfg = PipelineConfig {
        source: SourceKind::Test,
        framerate: 30,
        bitrate_kbps: 1000,
        width: Some(640),
        height: Some(360),
        audio: true,
        layers: 3,
        ..PipelineConfig::default()
    };
    let choice = preflight(&cfg).expect("preflight");
    let producer = GstProducer::new(cfg.clone(), choice)
        .with_rtp(RtpOutput::default())
        .expect("the RTP branch's elements");
    let hub = Hub::with_layers(HubConfig::default(), 3);
    let layers: Vec<Hub> = hub.layers().collect();
    let mut ts: Vec<Subscriber> = layers.iter().map(|l| l.subscribe(Instant::now())).collect();
    let mut rtp: Vec<_> = layers.iter().map(Hub::rtp_receivers).collect();
    let (run, _probe) =
        tokio::time::timeout(Duration::from_secs(20), producer.start_run(hub.clone()))
            .await
            .expect("starts in time")
            .expect("starts");
    let mut got: Vec<Got> = (0..3).map(|_| Got::default()).collect();
    let mut keys: Vec<Vec<u64>> = vec![Vec::new(); 3];
    let poll = |ts: &mut Vec<Subscriber>,
                rtp: &mut Vec<crate::hub::RtpSubscriber>,
                got: &mut Vec<Got>,
                keys: &mut Vec<Vec<u64>>| {
        for i in 0..3 {
            drain_ts(&mut ts[i], &mut got[i]);
            drain_rtp(&mut rtp[i].video, &mut got[i], &mut keys[i]);
        }
    };
    // 1. Until every layer has 40 RTP frames (layer 2 runs at 10 fps: ~4 s).
    //    Bounded by a hang guard only; a slow machine just takes longer.
    let guard = Instant::now() + Duration::from_secs(60);
    while got.iter().any(|g| g.frames < 40) {
        assert!(
            Instant::now() < guard,
            "frames so far: {:?}",
            got.iter().map(|g| g.frames).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        poll(&mut ts, &mut rtp, &mut got, &mut keys);
    }
    for (i, g) in got.iter().enumerate() {
        assert!(
            g.keyframes >= 1,
            "layer {i} RTP has no keyframe in {} frames",
            g.frames
        );
    }
    // One timestamp base: sampled together, the layers' RTP clocks are
    // within a second (random offsets would be ~2^31 apart).
    let t0 = got[0].last_timestamp.expect("layer 0 RTP");
    for (i, g) in got.iter().enumerate().skip(1) {
        let t = g.last_timestamp.expect("layer RTP");
        let apart = t.wrapping_sub(t0).min(t0.wrapping_sub(t));
        assert!(
            apart < 90_000,
            "layer {i}'s RTP timestamps are {apart} ticks from layer 0's"
        );
    }

    // 2. A keyframe asked of layer 1, well inside a GOP of both layers (the
    //    encoders' GOPs of 60 frames need not be aligned): 20–40 frames
    //    after layer 1's last keyframe, and at most 44 after layer 0's, so
    //    neither has a natural one due within the 15 frames looked at.
    let since = |g: &Got, k: &[u64]| g.frames - k.last().copied().unwrap_or(0);
    while !((20..40).contains(&since(&got[1], &keys[1])) && since(&got[0], &keys[0]) <= 44) {
        assert!(
            Instant::now() < guard,
            "no window to ask in: layer 1 at {}, layer 0 at {} frames",
            got[1].frames,
            got[0].frames
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        poll(&mut ts, &mut rtp, &mut got, &mut keys);
    }
    let (asked_1, asked_0) = (got[1].frames, got[0].frames);
    let (keys_1, keys_0) = (keys[1].len(), keys[0].len());
    layers[1].request_keyframe(Instant::now());
    while got[1].frames < asked_1 + 15 || got[0].frames < asked_0 + 15 {
        assert!(Instant::now() < guard, "stalled after the keyframe request");
        tokio::time::sleep(Duration::from_millis(10)).await;
        poll(&mut ts, &mut rtp, &mut got, &mut keys);
    }
    let new_1: Vec<u64> = keys[1][keys_1..]
        .iter()
        .filter(|&&f| f <= asked_1 + 15)
        .copied()
        .collect();
    let new_0: Vec<u64> = keys[0][keys_0..]
        .iter()
        .filter(|&&f| f <= asked_0 + 15)
        .copied()
        .collect();
    assert!(!new_1.is_empty(), "no layer-1 keyframe within 15 frames of the request (asked at frame {asked_1}; keyframes at {:?})", keys[1]);
    assert!(
        new_0.is_empty(),
        "layer 0 made a keyframe too (at {new_0:?}): the request went to the wrong encoder"
    );
    tokio::time::timeout(Duration::from_secs(5), run.handle.stop())
        .await
        .expect("stops");

    // 3. Each layer's TS: its size, the shared PIDs, no decoder complaint.
    let want = [(640, 360), (320, 180), (160, 90)];
    for (i, g) in got.iter().enumerate() {
        let path = temp_ts(&format!("layer{i}"), &g.ts);
        let streams = ffprobe_streams(&path);
        let video = streams
            .iter()
            .find(|s| s["codec_type"] == "video")
            .unwrap_or_else(|| panic!("layer {i}: no video in {streams:?}"));
        assert_eq!(
            (video["width"].as_u64(), video["height"].as_u64()),
            (Some(want[i].0), Some(want[i].1)),
            "layer {i}"
        );
        assert_eq!(video["id"], "0x41", "layer {i}'s video PID");
        let audio = streams.iter().find(|s| s["codec_type"] == "audio");
        assert_eq!(
            audio.map(|a| a["id"].clone()),
            Some("0x42".into()),
            "layer {i} carries the AAC"
        );
        let errors = ffmpeg_decode_errors(&path);
        assert!(errors.trim().is_empty(), "layer {i}: ffmpeg: {errors}");
        let _ = std::fs::remove_file(&path);
    }
    assert_eq!(
        hub.layer(2)
            .and_then(|h| h.layer_info())
            .map(|i| (i.width, i.height, i.fps)),
        Some((160, 90, 10))
    );
}
