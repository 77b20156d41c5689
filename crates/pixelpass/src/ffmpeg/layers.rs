//! Layers 1.. of a stream (`layers = 2 | 3`): the same FFmpeg that makes
//! layer 0 (copied or encoded, see [`super::command`]) also encodes each
//! further layer ONCE from the decoded input, through one `-filter_complex`:
//!
//! - layer 1: half the size, a quarter of `video_bitrate_kbps`;
//! - layer 2: a quarter of the size at [`LOW_FPS`] (or the input's rate when
//!   lower) and [`LOW_KBPS`] — scaled from layer 1's pictures, not the input's.
//!
//! Each is libx264 as layer 0 is encoded (preset, tune, profile, the
//! operator's `video_options`, `-force_key_frames` every
//! `keyframe_interval_seconds`, so the layers' keyframes fall on the same
//! pictures), written to its own video RTP port (`rtcpport` = its port,
//! `pkt_size=1200`) and, with its own copy of the audio (AAC), to an MPEG-TS
//! on a pipe of its own (the child's fd 4, 5: see [`super::child`]) for the
//! layer's HTTP-TS viewers. Opus RTP is layer 0's only: WebRTC viewers take
//! their audio from there whatever their video layer.
//!
//! Why a pipe and not a TS leg over loopback UDP: a pipe cannot lose (a slow
//! reader holds FFmpeg back instead), needs no port nobody else may send to,
//! and reads like layer 0's stdout. Loopback UDP did not lose either when
//! measured (0.9 Mbit/s TS, `pkt_size=1316`, 20 s, 12 794 packets, 0
//! continuity gaps with a 208 KiB or a 1 MiB receive buffer, on a busy
//! 2-core machine): the choice is for the guarantees, not a measured loss.

use super::legs::{h264_args, push, rtp_url, Legs};
use crate::config::StreamConfig;
use crate::hub::LayerInfo;

/// Layer 2's frame rate at most.
pub const LOW_FPS: u32 = 15;
/// Layer 2's bitrate, kbit/s.
pub const LOW_KBPS: u32 = 150;
/// No layer is encoded below this, kbit/s (the config's floor for layer 0).
const MIN_KBPS: u32 = 100;

/// What layer `i` is asked to be before its first SPS says its real size
/// and rate (size 0: not known yet; fps 0: the input's).
pub fn nominal(cfg: &StreamConfig, i: usize) -> LayerInfo {
    let (fps, bitrate_kbps) = match i {
        0 => (0, cfg.video_bitrate_kbps),
        1 => (0, layer1_kbps(cfg)),
        _ => (LOW_FPS, LOW_KBPS.min(layer1_kbps(cfg))),
    };
    LayerInfo {
        width: 0,
        height: 0,
        fps,
        bitrate_kbps,
    }
}

fn layer1_kbps(cfg: &StreamConfig) -> u32 {
    (cfg.video_bitrate_kbps / 4).max(MIN_KBPS)
}

/// The filtergraph label of layer `i`'s pictures.
fn label(i: usize) -> String {
    format!("pp{i}")
}

/// Even sides (4:2:0) at half the size of what comes in.
const HALF: &str = "scale=trunc(iw/4)*2:trunc(ih/4)*2";

/// `-filter_complex` for `extra` layers from the input video `video` (a map
/// specifier: `0:v:0`).
fn filtergraph(video: &str, extra: usize) -> String {
    let video = video.trim_end_matches('?');
    let low = format!("fps='min({LOW_FPS},source_fps)',{HALF}");
    match extra {
        1 => format!("[{video}]{HALF}[{}]", label(1)),
        _ => format!(
            "[{video}]{HALF},split=2[{}][half];[half]{low}[{}]",
            label(1),
            label(2)
        ),
    }
}

/// Append layers 1..'s filtergraph and outputs to `args` (nothing for a one-layer stream).
pub fn append(args: &mut Vec<String>, cfg: &StreamConfig, legs: &Legs) {
    let extra: Vec<(usize, u16)> = legs.extra_layers().collect();
    if extra.is_empty() || !(legs.rtp || legs.ts) {
        return;
    }
    // Several inputs have video_map and audio_map (StreamConfig::validate).
    let video = cfg.video_map.clone().unwrap_or_else(|| "0:v:0".to_owned());
    let audio = legs
        .audio
        .then(|| cfg.audio_map.clone().unwrap_or_else(|| "0:a:0".to_owned()));
    args.extend([
        "-filter_complex".to_owned(),
        filtergraph(&video, extra.len()),
    ]);
    for (i, port) in extra {
        args.extend(["-map".to_owned(), format!("[{}]", label(i))]);
        let ts_audio = legs.ts && audio.is_some();
        if let Some(a) = audio.as_ref().filter(|_| ts_audio) {
            args.extend(["-map".to_owned(), a.clone()]);
        }
        args.extend(h264_args(cfg, nominal(cfg, i).bitrate_kbps));
        if ts_audio && legs.copy_aac {
            push(args, &["-c:a", "copy"]);
        } else if ts_audio {
            push(
                args,
                &["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"],
            );
        }
        let pt = legs.video_pt;
        let pipe = format!("pipe:{}", super::child::EXTRA_TS_FD as usize + i - 1);
        match (legs.rtp, legs.ts) {
            (true, true) => {
                let select = if ts_audio { "select=\\'v,a\\':" } else { "" };
                args.extend([
                    "-f".to_owned(),
                    "tee".to_owned(),
                    format!(
                        "[select=v:f=rtp:payload_type={pt}]{}|[{select}f=mpegts:max_delay=0:flush_packets=1]{pipe}",
                        rtp_url(port)
                    ),
                ]);
            }
            (true, false) => {
                args.extend(["-f", "rtp", "-payload_type"].map(String::from));
                args.extend([pt.to_string(), rtp_url(port)]);
            }
            _ => {
                push(
                    args,
                    &["-f", "mpegts", "-muxdelay", "0", "-muxpreload", "0"],
                );
                args.extend(["-flush_packets".to_owned(), "1".to_owned(), pipe]);
            }
        }
    }
}

/// One line for the log and the banner: `layers: 1280x720@30 2500k, …`.
pub fn describe(infos: &[LayerInfo]) -> String {
    infos
        .iter()
        .map(|l| {
            let size = if l.width > 0 {
                format!("{}x{}", l.width, l.height)
            } else {
                "size to come".to_owned()
            };
            let fps = if l.fps > 0 {
                format!("@{}", l.fps)
            } else {
                String::new()
            };
            format!("{size}{fps} {} kbit/s", l.bitrate_kbps)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[path = "layers/args_tests.rs"]
mod args_tests;
