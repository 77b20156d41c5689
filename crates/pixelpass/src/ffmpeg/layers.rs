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

use super::command::{h264_args, push, rtp_url, Legs};
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
mod tests {
    use super::*;

    /// `expr:gte(t,n_forced*K)`: the same on every layer (see the module docs).
    fn keyframes(cfg: &StreamConfig) -> String {
        let k = super::super::command::seconds(cfg.keyframe_interval_seconds);
        format!("expr:gte(t,n_forced*{k})")
    }

    fn cfg(extra: &str) -> StreamConfig {
        serde_json::from_str(&format!(
            r#"{{"id":"a","input":["-re","-i","in.ts"],"layers":3{extra}}}"#
        ))
        .unwrap()
    }

    fn legs(rtp: bool, ts: bool, count: usize) -> Legs {
        let mut l = Legs::for_stream(&cfg(""), 40000);
        l.rtp = rtp;
        l.ts = ts;
        l.layer_ports = [50000, 50002];
        l.layer_ports[count.saturating_sub(1).min(2)..].fill(0);
        l
    }

    #[test]
    fn three_layers_split_once_scale_by_halves_and_keep_keyframes_together() {
        let c = cfg("");
        let args = super::super::command::ffmpeg_args(&c, &legs(true, true, 3)).join(" ");
        let graph = "-filter_complex [0:v:0]scale=trunc(iw/4)*2:trunc(ih/4)*2,split=2[pp1][half];\
                     [half]fps='min(15,source_fps)',scale=trunc(iw/4)*2:trunc(ih/4)*2[pp2]";
        assert!(args.contains(graph), "{args}");
        // Layer 0 as before (one encode, tee) and first, then layer 1, then 2.
        let at = |s: &str| args.find(s).unwrap_or_else(|| panic!("{s} in {args}"));
        assert!(at("-b:v 2500k") < at(graph) && at(graph) < at("-b:v 625k"));
        assert!(at("-b:v 625k") < at("-b:v 150k"));
        assert_eq!(args.matches(&keyframes(&c)).count(), 3, "{args}");
        assert_eq!(
            args.matches("-preset veryfast -tune zerolatency").count(),
            3
        );
        assert!(
            args.contains("-map [pp1] -map 0:a:0 -c:v libx264"),
            "{args}"
        );
        assert!(
            args.ends_with(
                "-c:a aac -b:a 128k -ar 48000 -ac 2 -f tee [select=v:f=rtp:payload_type=102]\
             rtp://127.0.0.1:50002?rtcpport=50002&pkt_size=1200|\
             [select=\\'v,a\\':f=mpegts:max_delay=0:flush_packets=1]pipe:5"
            ),
            "{args}"
        );
        assert!(args.contains("rtp://127.0.0.1:50000?rtcpport=50000&pkt_size=1200|[select=\\'v,a\\':f=mpegts:max_delay=0:flush_packets=1]pipe:4"), "{args}");
        // Opus is layer 0's only.
        assert_eq!(args.matches("libopus").count(), 1);
    }

    #[test]
    fn copy_keeps_layer_0_and_encodes_the_others_and_aac_is_copied_where_it_can_be() {
        let c = StreamConfig {
            layers: 2,
            ..cfg(r#","video":"copy""#)
        };
        let l = Legs {
            copy_video: true,
            copy_aac: true,
            ..legs(true, true, 2)
        };
        let args = super::super::command::ffmpeg_args(&c, &l).join(" ");
        assert!(args.contains("-c:v copy -bsf:v h264_mp4toannexb"), "{args}");
        assert!(args.contains("-filter_complex [0:v:0]scale=trunc(iw/4)*2:trunc(ih/4)*2[pp1] -map [pp1] -map 0:a:0 -c:v libx264"), "{args}");
        assert_eq!(args.matches("libx264").count(), 1, "{args}");
        assert!(args.contains("-c:a copy -f tee [select=v:f=rtp"), "{args}");
        assert!(!args.contains("pipe:5"), "{args}");
    }

    #[test]
    fn one_leg_outputs_and_no_audio() {
        let mut c = cfg("");
        c.audio = false;
        let mut l = legs(true, false, 2);
        l.audio = false;
        let rtp_only = super::super::command::ffmpeg_args(&c, &l).join(" ");
        assert!(
            rtp_only.ends_with(
                "-f rtp -payload_type 102 rtp://127.0.0.1:50000?rtcpport=50000&pkt_size=1200"
            ),
            "{rtp_only}"
        );
        assert!(
            !rtp_only.contains("pipe:4") && !rtp_only.contains("0:a:0"),
            "{rtp_only}"
        );
        let ts_only = super::super::command::ffmpeg_args(&cfg(""), &legs(false, true, 2)).join(" ");
        assert!(ts_only.ends_with("-c:a aac -b:a 128k -ar 48000 -ac 2 -f mpegts -muxdelay 0 -muxpreload 0 -flush_packets 1 pipe:4"), "{ts_only}");
        assert!(!ts_only.contains("50000"), "{ts_only}");
        // One layer: nothing added.
        let one = super::super::command::ffmpeg_args(&cfg(""), &legs(true, true, 1)).join(" ");
        assert!(
            !one.contains("filter_complex") && !one.contains("pipe:4"),
            "{one}"
        );
    }

    #[test]
    fn maps_name_the_layers_source_and_nominal_rates_follow_the_config() {
        let mut c = cfg("");
        c.input = ["-i", "a.ts", "-i", "b.wav"].map(String::from).into();
        c.video_map = Some("0:v:1?".into());
        c.audio_map = Some("1:a:0".into());
        let args = super::super::command::ffmpeg_args(&c, &legs(true, true, 2)).join(" ");
        assert!(args.contains("-filter_complex [0:v:1]scale="), "{args}");
        assert!(args.contains("-map [pp1] -map 1:a:0 "), "{args}");
        c.video_bitrate_kbps = 300;
        assert_eq!(nominal(&c, 1).bitrate_kbps, 100);
        assert_eq!((nominal(&c, 2).fps, nominal(&c, 2).bitrate_kbps), (15, 100));
        assert_eq!(nominal(&c, 0).bitrate_kbps, 300);
        let infos = [
            LayerInfo {
                width: 1280,
                height: 720,
                fps: 30,
                bitrate_kbps: 2500,
            },
            nominal(&c, 2),
        ];
        assert_eq!(
            describe(&infos),
            "1280x720@30 2500 kbit/s, size to come@15 100 kbit/s"
        );
    }
}
